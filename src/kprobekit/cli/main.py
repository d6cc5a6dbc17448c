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
    "tcpdrop": ("kprobekit.tools.tcpdrop", "trace TCP packets the kernel drops: reason and kernel stack"),
    "tcpretrans": ("kprobekit.tools.tcpretrans", "trace retransmitted TCP segments (-c: count per connection)"),
    "tcprtt": ("kprobekit.tools.tcprtt", "summarize TCP round-trip times as histograms"),
    "tcptop": ("kprobekit.tools.tcptop", "TCP connections by bytes sent and received, per interval"),
    "funclatency": ("kprobekit.tools.funclatency", "time kernel functions (log2 histogram, per call)"),
    "trace": ("kprobekit.tools.trace", "trace functions and tracepoints with fetched arguments"),
    "list": ("kprobekit.tools.list", "list probeable kernel functions and tracepoints (and why not)"),
    "progtrace": ("kprobekit.tools.progtrace", "trace a loaded BPF program: calls/s, duration, return values"),
    "exporter": ("kprobekit.tools.exporter", "serve Prometheus metrics counted in the kernel (TCP, bind, listen)"),
    "features": ("kprobekit.cli.features", "show which BPF features this kernel has"),
}


# Tools streaming events from the object of their name: its kernel-side set-up (BTF, ring
# buffer) starts on a thread while the tool is imported (kprobekit/early.py).
EARLY_START = {"tcpconnect", "solisten", "bindsnoop", "tcpaccept", "tcpstates", "tcplife", "tcpdrop",
               "tcpretrans"}


def usage(out):
    print("usage: kprobekit COMMAND [options]   (kprobekit COMMAND --help for its options)\n", file=out)
    print("commands:", file=out)
    for name, (_, summary) in COMMANDS.items():
        print(f"  {name:<14} {summary}", file=out)


def _check_stdio():
    """A closed stdin or stderr becomes /dev/null, so that no BPF file descriptor takes its number and
    errors have somewhere to go; a closed stdout is an error (the output would vanish).  -> message or None."""
    import os
    for fd in (0, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
            if fd == 2:
                sys.stderr = open(2, "w", closefd=False)
    try:
        os.fstat(1)
    except OSError:
        os.dup2(0, 1)    # keep fd 1 taken; nothing is written to it
        sys.stdout = None
        return "standard output is closed — redirect it (e.g. > FILE or > /dev/null) instead of closing it"
    return None


def main(argv=None):
    """The command; its exit code (0 also after Ctrl-C, 2 for every error)."""
    try:
        problem = _check_stdio()
        argv = sys.argv[1:] if argv is None else argv
        if problem:
            print(f"kprobekit: {problem}", file=sys.stderr)
            return 2
        try:
            code = _dispatch(argv)
        except SystemExit as e:     # argparse's --help
            code = e.code if isinstance(e.code, int) else int(e.code is not None)
        except OSError as e:
            if e.errno not in _WRITE_ERRORS:
                raise
            code = _write_failed(argv, e)
        return _flushed(code, argv)
    except KeyboardInterrupt:
        # Ctrl-C before a tool's own handler is in place (while importing): nothing is loaded yet
        return 0


def _flushed(code, argv):
    """Flushes what print() left in sys.stdout (--help, tables); a write error is one line and exit 2."""
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
    except BrokenPipeError:
        pass
    except OSError as e:
        return _write_failed(argv, e)
    return code


# errno values of a failed write(2) to stdout that argparse's or print()'s output can meet
_WRITE_ERRORS = {28, 5, 27, 122, 9}   # ENOSPC, EIO, EFBIG, EDQUOT, EBADF


def _write_failed(argv, e):
    import os
    name = f"kprobekit {argv[0]}" if argv and argv[0] in COMMANDS else "kprobekit"
    print(f"{name}: write output: {os.strerror(e.errno)}", file=sys.stderr)
    sys.stdout = None    # Python would try the flush again at exit, and print a traceback
    return 2


def _dispatch(argv):
    if not argv or argv[0] in ("-h", "--help", "help"):
        usage(sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"kprobekit: unknown command {name!r} — commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    if name in EARLY_START and not {"-h", "--help"} & set(rest):
        from .. import early, events
        early.start_tool(name, events.TOOL_RING_BYTES)
    module = importlib.import_module(COMMANDS[name][0])
    tool = getattr(module, "TOOL", None)
    if tool is not None:
        from .runner import run
        return run(tool, rest)
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())
