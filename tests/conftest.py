"""Shared test machinery: feature-based skips, running tools, counting our kernel objects.

The same suite runs on the host and, unchanged, inside each VM kernel
(tests/vm/run.py).  A test skips only with the reason features.py gives.
"""

import json
import os
import select
import signal
import subprocess
import sys
import time

import pytest

from kprobekit import features

IS_ROOT = os.geteuid() == 0


def requires(*names):
    """Marks a test as needing these features; skipped with features.py's reason where missing."""
    if not IS_ROOT:
        return pytest.mark.skip(reason="needs root to load BPF programs")
    missing = [n for n in names if not features.have(n)]
    if missing:
        n = missing[0]
        return pytest.mark.skip(reason=f"{n}: {features.probe(n).reason}")
    return pytest.mark.kernel


def backend_params(tool, names=None):
    """pytest params, one per backend of a tool, id = backend name, skipped where unsupported."""
    out = []
    for b in tool.backends:
        if names and b.name not in names:
            continue
        out.append(pytest.param(b.name, marks=requires(*b.needs), id=b.name))
    return out


kernel = requires()     # a test that loads BPF programs into the running kernel


class Tool:
    """A running `kprobekit TOOL --json ...`: started, ready once it says which backend it uses."""

    def __init__(self, *argv, ready_timeout=60, prefix=(), stdout=subprocess.PIPE):
        self.argv = [*prefix, sys.executable, "-m", "kprobekit.cli.main", *argv]
        self.proc = subprocess.Popen(self.argv, stdout=stdout, stderr=subprocess.PIPE, text=True)
        self.stderr_lines = []
        deadline = time.monotonic() + ready_timeout
        while True:
            line = self._stderr_line(deadline)
            if line is None:
                out, err = self.proc.communicate(timeout=30)
                raise AssertionError(f"{' '.join(argv)} exited {self.proc.returncode} before ready:\n"
                                     + "".join(self.stderr_lines) + err)
            self.stderr_lines.append(line)
            if line.startswith("kprobekit: using "):
                self.backend_line = line.strip()
                return

    def _stderr_line(self, deadline):
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.proc.stderr], [], [], 0.2)
            if r:
                line = self.proc.stderr.readline()
                return line or None
            if self.proc.poll() is not None:
                return None
        raise AssertionError(f"{self.argv} not ready in time; stderr so far: {''.join(self.stderr_lines)}")

    def stop(self, sig=signal.SIGINT, settle=0.5):
        """Lets in-flight events arrive, signals, and returns (JSON records, stderr, exit code)."""
        time.sleep(settle)
        self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=60)
        self.stdout = out
        self.stderr = "".join(self.stderr_lines) + err
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")], self.stderr, \
            self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture
def run_tool():
    started = []

    def start(*argv, **kw):
        t = Tool(*argv, **kw)
        started.append(t)
        return t

    yield start
    for t in started:
        t.kill()


def cli(*argv, timeout=120, prefix=()):
    """Runs `kprobekit ARGV` to completion: (exit code, stdout, stderr)."""
    p = subprocess.run([*prefix, sys.executable, "-m", "kprobekit.cli.main", *argv],
                       capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


# A just-booted machine, in a private mount namespace: no tracefs, debugfs or securityfs mounted
# (the script fails with 99 if any is left) and an empty /run/kprobekit (features' disk cache).
_JUST_BOOTED = """
for m in /sys/kernel/debug/tracing /sys/kernel/tracing /sys/kernel/debug /sys/kernel/security; do
    while grep -q " $m " /proc/self/mountinfo; do umount "$m" || exit 98; done
done
if grep -Eq ' - (tracefs|debugfs|securityfs) ' /proc/self/mountinfo; then exit 99; fi
mkdir -p /run/kprobekit && mount -t tmpfs tmpfs /run/kprobekit || exit 97
exec "$@"
"""
JUST_BOOTED = ("unshare", "--mount", "--propagation", "private", "--", "sh", "-c", _JUST_BOOTED, "sh")


def bpf_ids():
    """(program ids, link ids) loaded in the kernel now."""
    import ctypes
    from kprobekit._libbpf import lib
    out = []
    for get_next in (lib.bpf_prog_get_next_id, lib.bpf_link_get_next_id):
        ids, cur, nxt = set(), 0, ctypes.c_uint32()
        while get_next(cur, ctypes.byref(nxt)) == 0:
            cur = nxt.value
            ids.add(cur)
        out.append(ids)
    return tuple(out)


def kprobe_events_text():
    from kprobekit import kernel
    path = kernel.kprobe_events()
    if path is None:
        return ""
    with open(path) as f:
        return f.read()


@pytest.fixture
def netns():
    """A fresh network namespace with loopback up: (name, inode); deleted after the test."""
    name = f"kk-test-{os.getpid()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name, os.stat(f"/run/netns/{name}").st_ino
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


def in_netns(name, code):
    """A Python child running `code` inside network namespace `name` (stdin/stdout pipes, text)."""
    return subprocess.Popen(["ip", "netns", "exec", name, sys.executable, "-c", code],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
