"""The ftrace backend of `trace`: kprobes through tracefs, no BPF at all.

Probes are written to kprobe_events as kprobekit/kprobekit_<pid>_<n> and
enabled in a tracefs instance of our own (instances/kprobekit_<pid>_kprobes),
whose trace_pipe only we read; other tracers and the global buffer are left
alone.  close() disables, removes the instance and then exactly our probes.
A process killed before that leaves them behind: the next run's
kernel.remove_stale_kprobes() removes entries and instances whose pid is dead.
"""

import errno
import os
import re
import select

from . import kernel
from .errors import KprobekitError, NotSupported, PermissionDenied, ROOT_HINT

GROUP = "kprobekit"
_COMM = "__kk_comm"
# "  python3-1234    [001] d..1.  5.123: kprobekit_99_0: (inet_bind+0x0/0x90) port=0x1f90"
# stack entries (options/stacktrace, sym-offset): "<stack trace>", then a line per frame:
# " => __sys_bind+0xe9/0x110", " => nf_hook_slow+0x44/0xb0 [nf_tables]", " => 0xffffffffc0a01234"
_FRAME = re.compile(r"^ => (?P<func>[^\s+]+)(?:\+(?P<off>0x[0-9a-fA-F]+)/0x[0-9a-fA-F]+)?(?:\s+\[(?P<mod>[^\]]+)\])?")
_LINE = re.compile(r"^\s*(?P<comm>.*?)-(?P<tid>\d+)\s+(?:\(\s*[-\d]+\)\s+)?\[(?P<cpu>\d+)\]\s+(?P<flags>\S+\s+)?"
                   r"(?P<ts>\d+\.\d+):\s+(?P<event>[\w]+):\s+\((?P<where>[^)]*)\)\s?(?P<args>.*)$")


class KprobeEvents:
    def __init__(self):
        self.path = kernel.kprobe_events()
        if self.path is None:
            raise NotSupported("use ftrace backend: no kprobe_events in tracefs (kernel built without "
                               "CONFIG_KPROBE_EVENTS)", feature="kprobe",
                               hint="use t:CATEGORY/NAME tracepoint specs with the BPF backend")
        self.tracefs = kernel.tracefs()
        self.pid = os.getpid()
        self.instance = f"{self.tracefs}/instances/kprobekit_{self.pid}_kprobes"
        self.names = []         # our events, in probe order
        self._pipe = None
        self._partial = b""
        self._tgid = {}
        self.stacks = False     # each hit followed by its kernel stack (trace -K)
        self._held = None       # the last hit, while its stack may still be on its way

    def add(self, probe, filter_text=""):
        """Defines a probe; returns its event name."""
        name = f"kprobekit_{self.pid}_{len(self.names)}"
        where = probe.target + (f"+{probe.offset}" if probe.offset else "")
        # our own $comm, last: the line's task name is "<...>" until ftrace has saved the task's cmdline
        args = " ".join([f"{f.name}={f.kernel_syntax()}" for f in probe.fetches] + [f"{_COMM}=$comm"])
        line = f"{probe.kind}:{GROUP}/{name} {where} {args}".rstrip()
        self._write(self.path, line + "\n", f"define {probe.event}", append=True, spec=line)
        self.names.append(name)
        self._filters = getattr(self, "_filters", {})
        self._filters[name] = filter_text
        return name

    def start(self, pids=None, stacks=False):
        """Creates our instance, limits it to `pids` (a process's threads, and what they fork), enables.
        stacks: ftrace writes each hit's kernel stack after it, symbolized by the kernel itself."""
        try:
            os.mkdir(self.instance)
        except FileExistsError:
            pass
        except OSError as e:
            raise _error(e, "create tracefs instance") from None
        if stacks:
            self._write(f"{self.instance}/options/sym-offset", "1\n", "show symbol offsets")
            self._write(f"{self.instance}/options/stacktrace", "1\n", "record kernel stacks")
            self.stacks = True
        if pids:
            try:    # threads and children started later; older kernels lack the option
                self._write(f"{self.instance}/options/event-fork", "1\n", "follow forks")
            except KprobekitError:
                pass
            self._write(f"{self.instance}/set_event_pid", " ".join(map(str, pids)) + "\n", "set event pids")
        for name in self.names:
            d = f"{self.instance}/events/{GROUP}/{name}"
            if self._filters.get(name):
                self._write(f"{d}/filter", self._filters[name] + "\n", f"set filter of {name}")
            self._write(f"{d}/enable", "1\n", f"enable {name}")
        self._pipe = os.open(f"{self.instance}/trace_pipe", os.O_RDONLY | os.O_NONBLOCK)

    def fileno(self):
        return self._pipe

    def poll(self, timeout_ms, final=False):
        """[(event name, comm, tid, tgid, ts, where, args text, stack)] that arrived; stack is a
        stacks.Stack with start(stacks=True), else None.

        Reads before waiting: trace_pipe's poll may wake only once the buffer
        is buffer_percent full (newer kernels), a read returns what is there.
        With stacks, a hit whose stack entry has not been read yet waits for
        the next poll (or `final`)."""
        data = self._read()
        if not data and timeout_ms > 0:
            select.select([self._pipe], [], [], timeout_ms / 1000)
            data = self._read()
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        out = []
        held = self._held
        for raw in lines:
            line = raw.decode(errors="replace")
            if self.stacks and held is not None:
                if line.startswith(" => "):
                    if held[-1] is not None:
                        held[-1].append(_frame(line))
                    continue
                if line.rstrip().endswith(": <stack trace>"):
                    from .stacks import Stack
                    held[-1] = Stack()
                    continue
            hit = parse_line(line, self.names)
            if hit:
                if held is not None:
                    out.append(self._release(held))
                event, comm, tid, ts, where, args = hit
                held = [event, comm, tid, self.tgid(tid), ts, where, args, None]
        # a hit's stack entry follows it in the ring: one that has frames is whole
        if held is not None and (not self.stacks or final or not data or held[-1]):
            out.append(self._release(held))
            held = None
        self._held = held
        return out

    def _release(self, hit):
        if self.stacks and hit[-1] is None:
            from .stacks import Stack
            hit[-1] = Stack(missing="ftrace recorded no stack for this hit")
        return tuple(hit)

    def _read(self):
        chunks = []
        while True:
            try:
                chunk = os.read(self._pipe, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def tgid(self, tid):
        """trace_pipe names the thread; the process is read from /proc (the thread itself if it is gone)."""
        pid = self._tgid.get(tid)
        if pid is None:
            pid = tid
            try:
                with open(f"/proc/{tid}/status") as f:
                    for line in f:
                        if line.startswith("Tgid:"):
                            pid = int(line.split()[1])
                            break
            except OSError:
                pass
            self._tgid[tid] = pid
        return pid

    def close(self):
        if self._pipe is not None:
            os.close(self._pipe)
            self._pipe = None
        if os.path.isdir(self.instance):
            for name in self.names:
                try:
                    self._write(f"{self.instance}/events/{GROUP}/{name}/enable", "0\n", "disable")
                except KprobekitError:
                    pass
            try:
                os.rmdir(self.instance)
            except OSError:
                pass
        for name in self.names:
            try:
                self._write(self.path, f"-:{GROUP}/{name}\n", f"remove {name}", append=True)
            except KprobekitError:
                pass
        self.names = []

    def _write(self, path, text, what, append=False, spec=None):
        try:
            kernel.write_tracefs(path, text, append)
        except OSError as e:
            raise _error(e, what, spec, self.tracefs) from None


def _error(e, what, spec=None, tracefs=None):
    if e.errno in (errno.EPERM, errno.EACCES):
        return PermissionDenied(f"{what}: {os.strerror(e.errno)}", errno=e.errno, hint=ROOT_HINT)
    why = os.strerror(e.errno)
    if spec and tracefs:
        # the kernel explains a rejected probe in error_log, with its own caret
        try:
            with open(f"{tracefs}/error_log") as f:
                log = f.read().strip().splitlines()
            if log:
                why = " ".join(ln.strip() for ln in log[-3:])
        except OSError:
            pass
    return KprobekitError(f"{what}: the kernel refused {spec!r}: {why}" if spec else f"{what}: {why}",
                          errno=e.errno)


def _frame(line):
    from .stacks import Frame
    m = _FRAME.match(line)
    if m is None or m.group("func").startswith("0x"):      # an address ftrace could not name
        text = m.group("func") if m else line[4:].strip()
        try:
            return Frame(int(text, 16))
        except ValueError:
            return Frame(None, text)
    return Frame(None, m.group("func"), int(m.group("off") or "0", 16), m.group("mod"))


def parse_line(line, names):
    """(event, comm, tid, ts, where, args text) of a trace_pipe line of one of our events, else None."""
    m = _LINE.match(line)
    if not m or m.group("event") not in names:
        return None
    args, comm = m.group("args"), m.group("comm").strip()
    cut = args.rfind(f"{_COMM}=")
    if cut >= 0:
        args, comm = args[:cut].rstrip(), args[cut:].split("=", 1)[1].strip().strip('"')
    return m.group("event"), comm, int(m.group("tid")), float(m.group("ts")), m.group("where"), args


def parse_args(probe, text):
    """{name: value} from the 'name=value ...' tail of a trace_pipe line, in the probe's fetch order."""
    out = {}
    fetches = probe.fetches
    pos = 0
    for i, f in enumerate(fetches):
        key = f"{f.name}="
        start = text.find(key, pos)
        if start < 0:
            out[f.name] = None
            continue
        vstart = start + len(key)
        if i + 1 < len(fetches):
            end = text.find(f" {fetches[i + 1].name}=", vstart)
            end = len(text) if end < 0 else end
        else:
            end = len(text)
        raw = text[vstart:end]
        pos = end
        if f.is_string:
            out[f.name] = raw[1:-1] if raw.startswith('"') and raw.endswith('"') else raw
        else:
            try:
                v = int(raw, 0)
            except ValueError:
                out[f.name] = raw
                continue
            from .probespec import convert_int
            out[f.name] = convert_int(f.type[0], f.type[1], v & ((1 << 64) - 1))
    return out
