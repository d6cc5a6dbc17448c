"""bpf_printk() output, read from trace_pipe.

bpf_printk writes the bpf_trace:bpf_trace_printk trace event.  Reading the
global trace_pipe would consume it: two readers (two tools, or a test and a
tool) would steal each other's lines.  So, where the kernel has that event,
this module creates a tracefs instance of its own (instances/kprobekit_<pid>_<n>),
enables the event there and reads that instance's trace_pipe; closing removes
the instance, and instances of processes that died without closing are
removed on the next open.  Without the event the global trace_pipe is read.

The kernel does not record which BPF program printed a line: every
bpf_printk on the system arrives here.  Filter on `pid`, `task` or the text.
"""

import os
import select

from . import kernel
from .errors import NotSupported

_EVENT = "events/bpf_trace/bpf_trace_printk"
_PREFIX = "kprobekit_"
_instances = 0


class TraceLine(tuple):
    """One bpf_printk line: task, pid, cpu, flags, ts (seconds), msg; `raw` is the line as the kernel wrote it."""
    __slots__ = ()
    _fields = ("task", "pid", "cpu", "flags", "ts", "msg", "raw")

    task = property(lambda self: self[0])
    pid = property(lambda self: self[1])
    cpu = property(lambda self: self[2])
    flags = property(lambda self: self[3])
    ts = property(lambda self: self[4])
    msg = property(lambda self: self[5])
    raw = property(lambda self: self[6])

    def __repr__(self):
        return f"TraceLine(task={self.task!r}, pid={self.pid}, cpu={self.cpu}, ts={self.ts}, msg={self.msg!r})"


def parse(line):
    """A TraceLine from "  task-pid  [cpu] flags  ts: bpf_trace_printk: msg"; None for other lines.

    The task name may hold spaces and dashes; the pid is after the last dash
    before the CPU column.  Some kernels add a "(tgid)" column.
    """
    lb = line.find(" [")
    colon = line.find(": ", lb)
    if lb < 0 or colon < 0:
        return None
    who = line[:lb].strip()
    if who.endswith(")") and "(" in who:           # "task-123 (  100)"
        who = who[:who.rindex("(")].rstrip()
    task, _, pid = who.rpartition("-")
    rest = line[lb + 2:colon].split()
    try:
        cpu = int(rest[0].rstrip("]"))
        ts = float(rest[-1])
        pid = int(pid)
    except (ValueError, IndexError):
        return None
    if task == "<...>":
        task = _comm_of(pid)
    flags = rest[1] if len(rest) > 2 else ""
    msg = line[colon + 2:]
    # "bpf_trace_printk: msg" (the trace event), or "0: msg" (trace_printk before 5.9)
    tag, sep, after = msg.partition(": ")
    if sep and (tag == "bpf_trace_printk" or tag.isdigit()):
        msg = after
    return TraceLine((task, pid, cpu, flags, ts, msg, line))


def _comm_of(pid):
    """"<...>" means the kernel's pid->comm cache (saved_cmdlines) has no entry yet; ask /proc."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().rstrip("\n")
    except OSError:
        return "<...>"


WAKE_SECONDS = 0.25     # how long a Ctrl-C can wait to be noticed by an iterating reader


class TracePipe:
    """A non-blocking reader of bpf_printk lines; `poll(timeout)` returns the lines that arrived."""

    def __init__(self, *, instance=True):
        global _instances
        base = kernel.tracefs()
        if base is None:
            raise NotSupported("open trace_pipe: tracefs is not mounted and cannot be (not root?)",
                               feature="tracefs")
        self.instance = None
        if instance and os.path.isdir(f"{base}/{_EVENT}") and os.path.isdir(f"{base}/instances"):
            remove_stale_instances(base)
            _instances += 1
            self.instance = f"{base}/instances/{_PREFIX}{os.getpid()}_{_instances}"
            os.mkdir(self.instance)
            with open(f"{self.instance}/{_EVENT}/enable", "w") as f:
                f.write("1")
            path = f"{self.instance}/trace_pipe"
        else:
            path = f"{base}/trace_pipe"
        self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        self._partial = b""

    def fileno(self):
        return self._fd

    def read(self):
        """The complete lines available now, without waiting."""
        chunks = [self._partial]
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                break
            if not data:
                break
            chunks.append(data)
        data = b"".join(chunks)
        data, _, self._partial = data.rpartition(b"\n")
        out = []
        for raw in data.decode(errors="replace").splitlines():
            rec = parse(raw)
            if rec is not None:
                out.append(rec)
        return out

    def poll(self, timeout=None):
        """Lines that arrive within timeout seconds (None: wait for at least one)."""
        lines = self.read()
        if lines:
            return lines
        try:
            select.select([self._fd], [], [], timeout)
        except InterruptedError:
            pass
        return self.read()

    def __iter__(self):
        # Never an unbounded wait: a signal landing between Python's check for
        # pending signals and the select() itself would go unhandled until a
        # line arrived — Ctrl-C seemed ignored.
        while True:
            yield from self.poll(WAKE_SECONDS)

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            if self.instance:
                _remove_instance(self.instance)
                self.instance = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _remove_instance(path):
    try:
        with open(f"{path}/{_EVENT}/enable", "w") as f:
            f.write("0")
        os.rmdir(path)
    except OSError:
        pass


def remove_stale_instances(base=None):
    """Removes kprobekit_<pid>_<n> instances whose process is gone; returns their names."""
    base = base or kernel.tracefs()
    removed = []
    try:
        names = os.listdir(f"{base}/instances")
    except (OSError, TypeError):
        return removed
    for name in names:
        if not name.startswith(_PREFIX):
            continue
        pid = name[len(_PREFIX):].split("_", 1)[0]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            _remove_instance(f"{base}/instances/{name}")
            removed.append(name)
    return removed
