"""Runs a declared Tool: options -> backend choice -> load -> attach -> stream -> clean exit.

Every failure a user can cause or meet ends here as one line on stderr and
exit code 2; libbpf's log appears only with --verbose.
"""

import _signal as signal     # not `signal`: its enum import costs start-up time (cli/__init__.py)
import os
import sys

from .. import _libbpf, errors, events, features, kernel, minbtf
from ..object import Object, resolve
from . import args as args_, output

EXIT_OK, EXIT_ERROR = 0, 2

# How each hook is called in "X unavailable" messages.
_FEATURE_WORDS = {"kprobe": "kprobes", "kretprobe": "kretprobes", "tracepoint": "tracepoints"}


class _StopFlag:
    """Set by SIGINT/SIGTERM.  A flag, not an exception: an exception raised
    mid-write would cut a JSON line in half.  The loop sees it within one
    poll timeout."""
    stop = False

    def __call__(self, signum, frame):
        self.stop = True


# Argument types every command shares: numbers as a user writes them (ASCII digits only, not
# Python's int() with its underscores, signs, spaces and other scripts' digits).

def whole_number(text, what):
    """A non-negative decimal integer written with ASCII digits, else an argparse error naming `what`."""
    if not (text.isascii() and text.isdigit()):
        raise errors.bad_argument(f"invalid {what} {text!r}: not a number")
    return int(text)


MAX_SECONDS = 86400


def seconds_arg(text):
    """An interval: a positive, finite number of seconds, at most a day."""
    try:
        v = float(text)
    except ValueError:
        raise errors.bad_argument(f"invalid interval {text!r}: not a number of seconds") from None
    if not 0 < v <= MAX_SECONDS:      # also false for nan
        raise errors.bad_argument(f"invalid interval {text!r}: must be more than 0 and at most "
                                  f"{MAX_SECONDS} seconds")
    return v


def pid_arg(text):
    pid = whole_number(text, "PID")
    if pid <= 0:
        raise errors.bad_argument(f"invalid PID {pid}: must be positive")
    if not os.path.exists(f"/proc/{pid}"):
        raise errors.bad_argument(f"no process with PID {pid}")
    return pid


MAX_PORTS = 16     # KK_MAX_PORTS in bpf/include/kprobekit.bpf.h: the filter arrays' size


def port_list(text):
    ports = []
    for part in text.split(","):
        port = whole_number(part, "port")
        if not 1 <= port <= 65535:
            raise errors.bad_argument(f"invalid port {port}: must be 1-65535")
        ports.append(port)
    if len(ports) > MAX_PORTS:
        raise errors.bad_argument(f"at most {MAX_PORTS} ports")
    return ports


def netns_arg(text):
    """A network namespace by inode number (`ls -L -i /proc/PID/ns/net`, `lsns -t net`)."""
    inode = whole_number(text, "network namespace inode")
    if not 0 < inode < 2**32:
        raise errors.bad_argument(f"invalid network namespace {inode}: inode numbers are 1-4294967295")
    return inode


def cgroup_arg(path):
    """A cgroup v2 directory -> its id (the inode number, what bpf_get_current_cgroup_id() returns)."""
    if not os.path.isdir(path):
        raise errors.bad_argument(f"invalid cgroup {path!r}: not a directory")
    if not os.path.exists(os.path.join(path, "cgroup.controllers")):
        raise errors.bad_argument(f"invalid cgroup {path!r}: not in a cgroup v2 hierarchy "
                                  "(see `mount -t cgroup2`)")
    return os.stat(path).st_ino


def uid_arg(text):
    uid = whole_number(text, "UID")
    if not 0 <= uid < 2**32 - 1:
        raise errors.bad_argument(f"invalid UID {uid}")
    return uid


def arguments(tool):
    """Every argument of the tool's command line, as cli/args.py takes them."""
    out = []
    if tool.pid_filter:
        out.append((("-p", "--pid"), {"type": pid_arg, "help": "trace this process only (filtered in the kernel)"},
                    None))
    out += [(opt.flags, opt.kw, opt.exclusive) for opt in tool.options]
    names = ", ".join(b.name for b in tool.backends)
    out += [
        (("--json",), {"action": "store_true", "help": "one JSON object per line"}, None),
        (("--backend",), {"default": "auto", "choices": ["auto"] + [b.name for b in tool.backends],
                          "help": f"kernel hook to use (default: the best this kernel allows, in order: {names})"},
         None),
        (("--buffer",), {"default": "auto", "choices": ["auto", "ring", "perf"],
                         "help": "event transport (default: ring buffer where the kernel has one)"}, None),
        (("-v", "--verbose"), {"action": "store_true", "help": "show libbpf's log and error details"}, None),
    ]
    return out


def build_parser(tool):
    """The tool's argparse parser: what --help shows and what words the errors."""
    epilog = tool.examples
    backend_notes = [f"  {b.name}: {b.note}" for b in tool.backends if b.note]
    if backend_notes:
        epilog = "backends:\n" + "\n".join(backend_notes) + ("\n\n" + tool.examples if tool.examples else "")
    return args_.build(arguments(tool), prog=f"kprobekit {tool.name}",
                       description=tool.description or tool.summary, epilog=epilog)


def parse_args(tool, argv):
    return args_.parse(arguments(tool), argv, lambda: build_parser(tool))


def _missing(backend):
    """[(feature, reason)] the backend needs and this kernel lacks."""
    return [(n, features.probe(n).reason) for n in backend.needs if not features.have(n)]


def _unavailable(missing):
    return "; ".join(f"{_FEATURE_WORDS.get(n, n)} unavailable: {r}" for n, r in missing)


def choose_backend(tool, wanted):
    """The backend to run and the line that says why."""
    if wanted != "auto":
        b = tool.backend(wanted)
        missing = _missing(b)
        if missing:
            raise errors.NotSupported(f"use {b.name} backend: {_unavailable(missing[:1])}",
                                      feature=missing[0][0], hint="try --backend auto")
        return b, f"using {b.name} backend (forced)"
    skipped = []
    for b in tool.backends:
        missing = _missing(b)
        if not missing:
            why = f" ({'; '.join(skipped)})" if skipped else ""
            return b, f"using {b.name} backend{why}"
        skipped.append(_unavailable(missing[:1]))
    raise errors.NotSupported(f"run {tool.name}: no backend works on this kernel ({'; '.join(skipped)})")


def check_privileges():
    kernel.require_bpf_privileges("load BPF programs")


class Run:
    """One run of a tool, as its columns see it: options, backend, first timestamp."""

    def __init__(self, tool, args, backend, layout=None):
        self.tool, self.args, self.backend = tool, args, backend
        self.layout = layout    # the event struct's btf.Layout: lets the sinks read raw fields
        self._t0 = None

    def elapsed(self, ts_ns):
        """Seconds since the first event, for TIME(s) columns."""
        if self._t0 is None:
            self._t0 = ts_ns
        return (ts_ns - self._t0) / 1e9


def setup(tool, args):
    """Opens, configures, loads and attaches the tool's object; returns (obj, backend, message)."""
    check_privileges()
    if not features.have("btf"):
        raise errors.NotSupported(f"run {tool.name}: {features.probe('btf').reason}",
                                  feature="btf", hint="use a kernel with CONFIG_DEBUG_INFO_BTF=y")
    backend, message = choose_backend(tool, args.backend)
    if tool.check:
        tool.check(args, backend)
    if any(n in ("kprobe", "kretprobe") for n in backend.needs):
        kernel.remove_stale_kprobes()
    use_perf = args.buffer == "perf" or (args.buffer == "auto" and not features.have("ringbuf"))
    if args.buffer == "ring" and not features.have("ringbuf"):
        raise errors.NotSupported(f"use ring buffer: {features.probe('ringbuf').reason}",
                                  feature="ringbuf", hint="use --buffer perf")
    path = resolve(tool.bpf)
    obj = Object(path, kernel_btf=minbtf.cached(path))
    try:
        obj.set_autoload(backend.program_names(obj))
        if tool.pid_filter and args.pid:
            obj.rodata["filter_pid"] = args.pid
        for opt in tool.options:
            opt.apply(args, obj.rodata)
        # periodic tools count in maps and send no events: no room for bursts needed
        events.prepare(obj, use_perf, None if tool.periodic else events.TOOL_RING_BYTES)
        obj.load()
        obj.attach()
    except BaseException:
        obj.close()
        raise
    return obj, backend, message


def run(tool, argv):
    args = None
    try:
        args = parse_args(tool, argv)
        _libbpf.set_verbose(args.verbose)
        return _trace(tool, args)
    except errors.KprobekitError as e:
        _report(tool.name, e, args is not None and args.verbose)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_OK


def _report(name, e, verbose):
    if verbose and e.log:
        for line in e.log:
            print(f"libbpf: {line}", file=sys.stderr)
    print(f"kprobekit {name}: {e}", file=sys.stderr)


def pump(stream, write, stopped):
    """Polls stream into write(records) until stopped() and drains what is left; returns the events
    lost.  Records left when stdout stalls on a stop are counted as not written (output.report_lost)."""
    try:
        while not stopped():
            recs = stream.poll(250)
            if recs:
                write(recs)
        # what arrived between the last poll and the signal
        recs = stream.poll(0)
        if recs:
            write(recs)
    except output.Stalled:
        for _ in range(1000):
            recs = stream.poll(0)
            if not recs:
                break
            output.stdout.unwritten += len(recs)
    return stream.lost


def _trace(tool, args):
    # Signals stop the loop the same way; cleanup is in the finally clause.
    flag = _StopFlag()
    signal.signal(signal.SIGTERM, flag)
    signal.signal(signal.SIGINT, flag)
    output.stdout.stop = lambda: flag.stop
    obj = stream = None
    lost = 0
    try:
        obj, backend, message = setup(tool, args)
        if tool.periodic:
            return _periodic(tool, args, obj, backend, message, flag)
        stream = events.open_stream(obj)
        print(f"kprobekit: {message}", file=sys.stderr, flush=True)
        run_ = Run(tool, args, backend, stream.layout)
        if tool.kernel_stack:
            _open_stacks(run_, obj)
        sink = output.JsonSink(tool, run_) if args.json else output.TextSink(tool, run_)
        sink.start()
        lost = pump(stream, sink.write, lambda: flag.stop)
        if tool.report:
            output.emit(tool.report(obj, run_, True))
    except (BrokenPipeError, output.Stalled):
        # the reader went away (e.g. `| head`), or stopped reading before the header: stop quietly
        sys.stdout = None
    finally:
        # Ignore further signals while detaching, so a second Ctrl-C cannot leave half of it behind.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if stream is not None:
            stream.close()
        if obj is not None:
            obj.close()
            if obj.kernel_btf is None:
                minbtf.make(obj.path)     # the next run's start-up skips most of the kernel's BTF
        features.release()
    output.report_lost(lost, args.json)
    return EXIT_OK


def _periodic(tool, args, obj, backend, message, flag):
    """The loop of tools that keep counts in maps (tcprtt, tcptop): a report per interval and at exit."""
    import time
    print(f"kprobekit: {message}", file=sys.stderr, flush=True)
    run_ = Run(tool, args, backend)
    interval = getattr(args, "interval", None)
    limit = getattr(args, "intervals", None)
    due = time.monotonic() + interval if interval else None
    reports = 0
    while not flag.stop:
        time.sleep(0.25 if due is None else max(0.0, min(0.25, due - time.monotonic())))
        if due is not None and time.monotonic() >= due:
            output.emit(tool.report(obj, run_, False))
            reports += 1
            due += interval
            if limit and reports >= limit:
                return EXIT_OK
    output.emit(tool.report(obj, run_, True))
    return EXIT_OK


def _open_stacks(run_, obj):
    from .. import stacks
    run_.stacks = stacks.KernelStacks(obj)
    if run_.stacks.symbols.hidden:
        print(f"kprobekit: kernel stacks as bare addresses: {run_.stacks.symbols.hidden}", file=sys.stderr)


def command_parser(name, description, examples=""):
    """An argparse parser for a command that is not a declared Tool, with the common flags."""
    p = args_.new_parser(prog=f"kprobekit {name}", description=description, epilog=examples)
    p.add_argument("-v", "--verbose", action="store_true", help="show libbpf's log and error details")
    return p


def run_command(name, parser, argv, body):
    """Runs body(args, stop) for commands with their own loop (funclatency, trace, ...).

    `stop()` is true once SIGINT/SIGTERM arrived.  Errors become one line and
    exit code 2, as for tools; every object still open is closed on the way out.
    """
    from .. import object as object_
    args = None
    flag = _StopFlag()
    try:
        args = parser.parse_args(argv)
        _libbpf.set_verbose(getattr(args, "verbose", False))
        signal.signal(signal.SIGTERM, flag)
        signal.signal(signal.SIGINT, flag)
        output.stdout.stop = lambda: flag.stop
        return body(args, lambda: flag.stop) or EXIT_OK
    except errors.KprobekitError as e:
        _report(name, e, args is not None and getattr(args, "verbose", False))
        return EXIT_ERROR
    except (BrokenPipeError, output.Stalled):
        sys.stdout = None
        return EXIT_OK
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        object_.close_all()
        features.release()
