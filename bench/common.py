"""Shared by the benchmarks: where things are, the peers, running a tracer until it is loaded, tables.

Every figure is measured, never asserted: the benchmarks report, the tests test.
"""

import os
import re
import select
import signal
import statistics
import subprocess
import sys
import threading
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
SRC = os.path.join(ROOT, "src")
BUILD = os.path.join(BENCH, "build")
RESULTS = os.path.join(BENCH, "results")
STORM = os.path.join(BUILD, "storm")
EVENTS_OBJ = os.path.join(BUILD, "events.bpf.o")
# The installed entry point is what a user runs; the venv's interpreter, never a pyenv shim.
PYTHON = os.path.join(ROOT, ".venv", "bin", "python")
KPROBEKIT = "/usr/local/bin/kprobekit" if os.path.exists("/usr/local/bin/kprobekit") \
    else os.path.join(ROOT, ".venv", "bin", "kprobekit")
# another checkout's entry point (e.g. a worktree's .venv/bin/kprobekit), to measure it unmerged
KPROBEKIT = os.environ.get("KPROBEKIT_BIN", KPROBEKIT)
FEATURES_CACHE = "/run/kprobekit"
# Tools run with a user's environment: no PYTHONDONTWRITEBYTECODE (which would make
# every start compile kprobekit from source) nor PYTHONUNBUFFERED from whoever runs us.
CHILD_ENV = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}

# bpftrace's equivalent of tcpconnect's tracepoint backend: a handshake that ends
# SYN_SENT (2) -> ESTABLISHED (1).  BEGIN runs once every probe is attached.
BPFTRACE_TCPCONNECT = ('BEGIN { printf("ready\\n"); } '
                       'tracepoint:sock:inet_sock_set_state '
                       '/args->protocol == 6 && args->oldstate == 2 && args->newstate == 1/ '
                       '{ printf("%d %s %d\\n", pid, comm, args->dport); }')


def kprobekit_commands():
    out = subprocess.run([KPROBEKIT, "--help"], capture_output=True, text=True, env=CHILD_ENV).stdout
    return set(re.findall(r"^  (\S+)", out, re.M))


class Peer:
    """A tracer to benchmark: argv, and what it prints once it is attached."""

    def __init__(self, name, argv, ready, note="", kprobekit=False):
        self.name, self.argv, self.ready, self.note, self.kprobekit = name, argv, ready, note, kprobekit

    def available(self):
        return os.path.exists(self.argv[0])


def peers(tools=("tcpconnect", "tcpstates")):
    """The peers present on this machine, in table order."""
    kk = kprobekit_commands()
    out = []
    for tool in tools:
        if tool in kk:
            # The runner prints "kprobekit: using X backend" to stderr after attach and
            # after opening the ring buffer, then the column header to stdout: the later
            # of the two is "loaded".
            out.append(Peer(f"kprobekit {tool}", [KPROBEKIT, tool],
                            [("stderr", "kprobekit: using "), ("stdout", "")],
                            "stderr 'using ... backend' line, then stdout header", kprobekit=True))
    if "exporter" in kk:
        # every network tool's hooks at once, counting in maps: no event reaches user space
        out.append(Peer("kprobekit exporter (counts in maps)", [KPROBEKIT, "exporter", "--listen", "127.0.0.1:0"],
                        [("stderr", "kprobekit: serving ")], "stderr 'serving' line (after every object is "
                        "attached)", kprobekit=True))
    for tool in tools:
        if tool in kk:
            # through a perf buffer, the transport libbpf-tools' tcpstates and bpftrace use
            out.append(Peer(f"kprobekit {tool} --buffer perf", [KPROBEKIT, tool, "--buffer", "perf"],
                            [("stderr", "kprobekit: using "), ("stdout", "")],
                            f"as kprobekit {tool}", kprobekit=True))
    for tool in tools:
        # libbpf-tools prints its header after load, attach and opening its perf buffer.
        out.append(Peer(f"libbpf-tools {tool}", [f"/usr/sbin/{tool}"], [("stdout", "")],
                        "stdout header (after attach)"))
    out.append(Peer("bpftrace one-liner", ["/usr/bin/bpftrace", "-e", BPFTRACE_TCPCONNECT],
                    [("stdout", "ready")], "BEGIN probe's 'ready' (fires after all probes attach)"))
    out.append(Peer("bcc tcpconnect-bpfcc", ["/usr/sbin/tcpconnect-bpfcc"], [("stdout", "PID")],
                    "stdout header (after the compile and attach)"))
    return out


class Started:
    """A tracer started and run until it is loaded, or until it failed.

    stdout is a pseudo-terminal (tty=True), as for a user at a terminal, so that
    C tools line-buffer their output; otherwise a pipe.  Once loaded, a thread
    drains and discards what the tracer prints.
    """

    def __init__(self, peer, timeout=60.0, tty=True, argv_prefix=()):
        self.peer = peer
        if tty:
            out_r, out_w = os.openpty()
        else:
            out_r, out_w = os.pipe()
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen([*argv_prefix, *peer.argv], stdout=out_w, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, env=CHILD_ENV)
        os.close(out_w)
        self.lines = {"stdout": [], "stderr": []}
        self.loaded_s = None
        self.error = None
        pending = list(peer.ready)
        self._fds = fds = {out_r: "stdout", self.proc.stderr.fileno(): "stderr"}
        bufs = {"stdout": b"", "stderr": b""}
        deadline = self.t0 + timeout
        while pending and fds:
            r, _, _ = select.select(list(fds), [], [], max(0.0, deadline - time.monotonic()))
            now = time.monotonic()
            if not r:
                self.error = f"not loaded after {timeout:.0f} s"
                break
            for fd in r:
                name = fds[fd]
                chunk = _read(fd)
                if not chunk:
                    del fds[fd]
                    continue
                bufs[name] += chunk
                *full, bufs[name] = bufs[name].split(b"\n")
                for line in full:
                    text = line.decode(errors="replace").rstrip("\r")
                    self.lines[name].append(text)
                    pending = [(s, p) for s, p in pending if not (s == name and text.startswith(p))]
                if not pending:
                    self.loaded_s = now - self.t0
        if self.loaded_s is None and self.error is None:
            self.proc.wait(timeout=30)
            err = [ln for ln in self.lines["stderr"] + [bufs["stderr"].decode(errors="replace")]
                   if ln.strip() and not ln.startswith("  ")]
            self.error = f"exit {self.proc.returncode} after {time.monotonic() - self.t0:.2f} s: " \
                         + (err[-1].strip() if err else "no output")
        self._out_r = out_r
        self.stdout_lines = 0
        self.stdout_tail = self.stderr_tail = b""
        self._drain = threading.Thread(target=self._discard, daemon=True)
        self._drain.start()

    def _discard(self):
        """Drains both pipes; counts stdout's lines and keeps the tails (bench/loss.py reads them)."""
        fds = list(self._fds)
        while fds:
            r, _, _ = select.select(fds, [], [])
            for fd in r:
                chunk = _read(fd)
                if not chunk:
                    fds.remove(fd)
                    continue
                if fd == self._out_r:
                    self.stdout_lines += chunk.count(b"\n")
                    self.stdout_tail = (self.stdout_tail + chunk)[-512:]
                else:
                    self.stderr_tail = (self.stderr_tail + chunk)[-65536:]

    def vm_hwm_kib(self):
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1])
        except OSError:
            return None

    def cpu_s(self):
        """User + system CPU time so far, from /proc (clock ticks)."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self, timeout=20.0):
        """SIGINT, as a user's Ctrl-C; returns (exit code, ru_maxrss KiB)."""
        if self.proc.returncode is not None:
            return self.proc.returncode, None     # failed before it loaded, already reaped
        self.proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout
        while True:
            pid, status, ru = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                self.proc.returncode = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                self.proc.kill()
                pid, status, ru = os.wait4(self.proc.pid, 0)
                self.proc.returncode = os.waitstatus_to_exitcode(status)
                break
            time.sleep(0.01)
        self._drain.join(timeout=5)
        os.close(self._out_r)
        self.proc.stderr.close()
        return self.proc.returncode, ru.ru_maxrss


def _read(fd):
    try:
        return os.read(fd, 65536)
    except OSError:     # EIO: a pseudo-terminal whose other end is closed
        return b""


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def load_avg():
    return os.getloadavg()


def print_table(title, headers, rows, out=sys.stdout):
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    print(f"\n{title}", file=out)
    for j, r in enumerate(cells):
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip(),
              file=out)
        if j == 0:
            print("  ".join("-" * w for w in widths), file=out)


def need_build():
    missing = [p for p in (STORM, EVENTS_OBJ) if not os.path.exists(p)]
    if missing:
        sys.exit(f"bench: missing {', '.join(missing)} — run `make bench-build`")
