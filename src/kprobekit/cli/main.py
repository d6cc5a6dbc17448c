"""The `kprobekit` command: dispatches to a tool, importing only that tool."""

import importlib
import sys

# name -> (module, one-line summary).  Summaries live here so that `kprobekit --help`
# need not import every tool.
COMMANDS = {
    "tcpconnect": ("kprobekit.tools.tcpconnect", "trace active TCP connections"),
    "solisten": ("kprobekit.tools.solisten", "trace listen() on TCP sockets"),
    "bindsnoop": ("kprobekit.tools.bindsnoop", "trace bind() on IPv4/IPv6 sockets"),
    "tcpaccept": ("kprobekit.tools.tcpaccept", "trace passive TCP connections (accept)"),
    "tcpstates": ("kprobekit.tools.tcpstates", "trace TCP state changes"),
    "tcplife": ("kprobekit.tools.tcplife", "trace TCP sessions with duration and bytes"),
    "funclatency": ("kprobekit.tools.funclatency", "time kernel functions (log2 histogram, per call)"),
    "trace": ("kprobekit.tools.trace", "trace functions and tracepoints with fetched arguments"),
    "list": ("kprobekit.tools.list", "list probeable kernel functions and tracepoints (and why not)"),
    "progtrace": ("kprobekit.tools.progtrace", "trace a loaded BPF program: calls/s, duration, return values"),
    "exporter": ("kprobekit.tools.exporter", "serve Prometheus metrics counted in the kernel (TCP, bind, listen)"),
    "features": ("kprobekit.cli.features", "show which BPF features this kernel has"),
}


def usage(out):
    print("usage: kprobekit COMMAND [options]   (kprobekit COMMAND --help for its options)\n", file=out)
    print("commands:", file=out)
    for name, (_, summary) in COMMANDS.items():
        print(f"  {name:<14} {summary}", file=out)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        usage(sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"kprobekit: unknown command {name!r} — commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    tool = getattr(module, "TOOL", None)
    if tool is not None:
        from .runner import run
        return run(tool, rest)
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())
