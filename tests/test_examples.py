"""examples/ (the seeds rewritten with kprobekit) run for real: each is started, the test makes
the syscalls the example reports, and the lines about this process are asserted exactly."""

import os
import select
import signal
import socket
import subprocess
import time

import pytest

from conftest import requires
from kprobekit import features

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
MY_COMM = open("/proc/self/comm").read().strip()
# What examples/README.md says to run them with: Debian's python3, which `make setup` lets import kprobekit.
PYTHON = "/usr/bin/python3"
NO_KPROBES = pytest.mark.skipif(features.have("kprobe"), reason="kprobes exist here: "
                                "the example runs instead (see the requires('kprobe') tests)")


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    d = tmp_path_factory.getbasetemp() / "kprobekit-cache"
    d.mkdir(mode=0o755, exist_ok=True)
    monkeypatch.setenv("KPROBEKIT_CACHE", str(d))


class Example:
    """examples/NAME.py running; ready once it printed its header (it is attached by then)."""

    def __init__(self, name, *args, timeout=240):
        self.proc = subprocess.Popen([PYTHON, os.path.join(EXAMPLES, name), *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if select.select([self.proc.stdout], [], [], 0.2)[0]:
                self.header = self.proc.stdout.readline()
                if self.header:
                    return
            if self.proc.poll() is not None:
                break
        self.proc.kill()
        out, err = self.proc.communicate()
        raise AssertionError(f"{name} not ready (exit {self.proc.returncode}):\n{err}")

    def stop(self, settle=0.5):
        """(stdout lines after the header, stderr, exit code) after Ctrl-C."""
        time.sleep(settle)
        self.proc.send_signal(signal.SIGINT)
        out, err = self.proc.communicate(timeout=120)
        return out.splitlines(), err, self.proc.returncode


@pytest.fixture
def example():
    started = []

    def start(*argv, **kw):
        started.append(Example(*argv, **kw))
        return started[-1]

    yield start
    for ex in started:
        if ex.proc.poll() is None:
            ex.proc.kill()
            ex.proc.communicate()


def run_to_end(name, timeout=240):
    p = subprocess.run([PYTHON, os.path.join(EXAMPLES, name)], capture_output=True, text=True,
                       timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def fork_and_reap():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)


# --- 003 hello world ---

@pytest.mark.parametrize("hook", [pytest.param("kprobe", marks=requires("kprobe"), id="kprobe"),
                                  pytest.param("tracepoint", marks=requires("tracepoint"), id="tracepoint")])
def test_hello_world(example, hook):
    ex = example("hello_world.py", hook)
    assert ex.header.split() == ["TASK", "PID", "MESSAGE"]
    fork_and_reap()
    lines, err, rc = ex.stop()
    assert rc == 0, err
    mine = [ln for ln in lines if ln[17:24].strip() == str(os.getpid())]
    assert mine and all(ln == f"{MY_COMM:<16} {os.getpid():<7} Hello, World!" for ln in mine)


@requires("tracepoint")
def test_hello_world_says_which_hook(example):
    ex = example("hello_world.py")
    _, err, rc = ex.stop(settle=0)
    assert rc == 0
    if features.have("kprobe"):
        assert err == ""
    else:
        assert err == (f"hello_world: kprobes unavailable ({features.probe('kprobe').reason}); "
                       "using tracepoint syscalls:sys_enter_clone\n")


# --- 004 listen events ---

@pytest.mark.parametrize("hook", [pytest.param("kprobe", marks=requires("kprobe"), id="kprobe"),
                                  pytest.param("tracepoint", marks=requires("tracepoint"), id="tracepoint")])
def test_listen_events(example, hook):
    ex = example("listen_events.py", hook)
    assert ex.header.split() == ["PID", "COMM", "LADDR", "LPORT", "NETNS", "BACKLOG"]
    s4 = socket.socket(socket.AF_INET)
    s4.bind(("127.0.0.1", 0))
    s4.listen(7)
    s6 = socket.socket(socket.AF_INET6)
    s6.bind(("::1", 0))
    s6.listen(3)
    lines, err, rc = ex.stop()
    assert rc == 0, err
    netns = os.stat("/proc/self/ns/net").st_ino
    mine = [ln.split() for ln in lines if ln.split()[0] == str(os.getpid())]
    assert mine == [[str(os.getpid()), MY_COMM, "127.0.0.1", str(s4.getsockname()[1]), str(netns), "7"],
                    [str(os.getpid()), MY_COMM, "::1", str(s6.getsockname()[1]), str(netns), "3"]]
    s4.close()
    s6.close()


# --- 000 tcp4connect ---

@requires("kprobe", "kretprobe")
def test_tcp4connect(example):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    port = srv.getsockname()[1]
    ex = example("tcp4connect.py")
    assert ex.header.split() == ["PID", "COMM", "SADDR", "DADDR", "DPORT"]
    socket.create_connection(("127.0.0.1", port), timeout=10).close()
    lines, err, rc = ex.stop()
    assert rc == 0, err
    mine = [ln.split() for ln in lines if ln.split()[0] == str(os.getpid())]
    assert mine == [[str(os.getpid()), MY_COMM[:12], "127.0.0.1", "127.0.0.1", str(port)]]
    srv.close()


@NO_KPROBES
@pytest.mark.parametrize("name,program,section", [
    ("tcp4connect", "trace_connect_entry", "kprobe/tcp_v4_connect"),
    ("inet_bind_release", "handler_pre", "kprobe/inet_bind")])
def test_kprobe_examples_say_why_they_cannot_run(name, program, section):
    rc, out, err = run_to_end(f"{name}.py")
    assert rc == 2 and out == ""
    assert err == (f'{name}: load {name}: program {program} needs kprobes (SEC("{section}")): '
                   f"{features.probe('kprobe').reason} — choose another hook with programs=[...] "
                   "(see kprobekit.features)\n")


# --- 002 inet_bind kprobe, inet_release kretprobe ---

@requires("kprobe", "kretprobe")
def test_inet_bind_release(example):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    ex = example("inet_bind_release.py")
    s = socket.socket()
    s.bind(("127.0.0.1", port))
    s.close()
    lines, err, rc = ex.stop()
    assert rc == 0, err
    pid = str(os.getpid())
    mine = [ln[25:] for ln in lines if ln[17:24].strip() == pid]
    assert mine[0] == f"inet_bind name:{MY_COMM} pid:{pid} socket bind port={port}"
    assert len(mine) == 2 and mine[1].startswith("inet_release returned 0 and took ")
    took = int(mine[1].split("took ")[1].split(" ns")[0])
    assert took > 0 and mine[1].endswith(" ns to execute")
    # the histogram printed on Ctrl-C counts at least our inet_release
    hist = lines[lines.index(next(ln for ln in lines if "nsecs" in ln and "distribution" in ln)) + 1:]
    counts = {ln.split(":")[0].strip(): int(ln.split(":")[1].split("|")[0]) for ln in hist if "->" in ln}
    low = 1 << (took.bit_length() - 1)
    assert counts[f"{low} -> {2 * low - 1}"] >= 1


# --- the tool docs/library.md builds ---

@requires("tracepoint")
def test_opensnoop_from_the_docs(example, tmp_path):
    ex = example("opensnoop.py", "-p", str(os.getpid()))
    assert ex.header.split() == ["PID", "COMM", "PATH"]
    path = tmp_path / "opened-by-the-test"
    for _ in range(2):
        with open(path, "w"):
            pass
    lines, err, rc = ex.stop()
    assert rc == 0, err
    events = [ln.split(None, 2) for ln in lines[:-1]]
    assert all(e[:2] == [str(os.getpid()), MY_COMM] for e in events)
    assert [e[2] for e in events].count(str(path)) == 2
    assert lines[-1] == f"opens by pid: {os.getpid()}={len(events)}"
