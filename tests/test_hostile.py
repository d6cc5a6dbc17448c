"""Hostile but fair use: a reader that stops reading, many hooks, early Ctrl-C, odd inputs.

Every case ends with one clear line and exit code 2 (or a quiet 0), never a traceback, and a
signal always ends a tool promptly with everything detached and the loss reported.  Time bounds
here are loose (a loaded machine must not fail them); the real figures are in `make bench`.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import bpf_ids, cli, requires

KPROBEKIT = [sys.executable, "-m", "kprobekit.cli.main"]


def connect_storm(n):
    """n loopback connects, accepted and closed: ~5 TCP state changes each."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(128)
        addr = server.getsockname()
        for _ in range(n):
            with socket.create_connection(addr):
                pass
            server.accept()[0].close()


def wait_ready(proc, timeout=60):
    """Reads stderr up to the 'using ... backend' line; the lines read."""
    lines = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("kprobekit: using "):
            return lines
    raise AssertionError(f"not ready: {''.join(lines)}")


def assert_detached(before):
    for _ in range(50):
        progs, links = bpf_ids()
        if not (progs - before[0]) and not (links - before[1]):
            return
        time.sleep(0.1)
    raise AssertionError(f"left loaded: programs {progs - before[0]}, links {links - before[1]}")


# --- a reader that never reads ---

@pytest.mark.host      # user-space behaviour; a storm under the VMs' emulation takes minutes
@requires("tracepoint")
@pytest.mark.parametrize("argv", [["tcpstates", "--json"], ["tcpstates"],
                                  ["trace", "--json", "t:sock/inet_sock_set_state newstate"]],
                         ids=["tcpstates-json", "tcpstates-text", "trace-json"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_stalled_reader_does_not_stop_a_signal(argv, sig):
    before = bpf_ids()
    r, w = os.pipe()        # the test never reads r: the pipe fills, and the tool's writes block
    proc = subprocess.Popen(KPROBEKIT + argv, stdout=w, stderr=subprocess.PIPE, text=True)
    os.close(w)
    try:
        wait_ready(proc)
        connect_storm(1500)      # far more output than a 64 KiB pipe holds
        t0 = time.monotonic()
        proc.send_signal(sig)
        err = proc.communicate(timeout=30)[1]
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(r)
    assert proc.returncode == 0, err
    assert took < 5, f"exit took {took:.1f} s"
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("kprobekit: lost ") and "read but not written: stdout was not being read" in last, err
    assert int(last.split()[2]) > 0
    assert_detached(before)


# --- many hooks ---

@requires("tracepoint")
def test_funclatency_with_many_syscalls_exits_promptly():
    # the syscalls backend on every kernel: the one this host has, and the one with a hook per syscall before
    # s* alone is 69 syscalls on 6.1
    proc = subprocess.Popen(KPROBEKIT + ["funclatency", "--backend", "syscalls", "s*", "g*"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    ready = "".join(wait_ready(proc))
    n = int(ready.split("timing ")[1].split()[0])
    assert n >= 70, ready
    for _ in range(10):
        socket.socket().close()     # socket(2): one of them
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    took = time.monotonic() - t0
    assert proc.returncode == 0, err
    assert took < 5, f"{n} syscalls: exit took {took:.1f} s"
    assert "Function = " in out


# --- Ctrl-C at any moment ---

@pytest.mark.host      # under emulation the interpreter alone takes longer than every delay here
@requires("tracepoint")
@pytest.mark.parametrize("delay", [0.005, 0.02, 0.04, 0.08, 0.15])
def test_early_ctrl_c_is_quiet(delay):
    """Ctrl-C while the command is still importing, or loading, ends it quietly.  The interpreter's
    own start (before any kprobekit code) is CPython's: the process starts with SIGINT ignored, as
    in a background job, so a signal that early is dropped and a second one, later, ends the run."""
    before = bpf_ids()
    proc = subprocess.Popen(KPROBEKIT + ["tcpstates"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=2)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert_detached(before)


# --- inputs ---

@pytest.mark.unit
@pytest.mark.parametrize("argv,message", [
    (["trace", "p:inet_bind port=+2($arg2):be16", "--filter", "port == 70000"],
     "port is u16 in network byte order: compare it with 0..65535"),
    (["trace", "p:inet_bind port=+2($arg2):be16", "--filter", "port == -1"],
     "port is u16 in network byte order: compare it with 0..65535"),
    (["trace", "p:inet_bind port=+2($arg2):be16", "--filter", "port != 0x1ffff"],
     "port is u16 in network byte order: compare it with 0..65535"),
    (["trace", "p:inet_bind port=+2($arg2):u16", "--filter", "port == 18446744073709591118"],
     "port is u16: compare it with 0..65535"),
    (["progtrace", "id abc"], "a program id is a number"),
    (["progtrace", "id", "1.5"], "a program id is a number"),
    (["progtrace", "-i", "0", "1"], "invalid interval '0'"),
    (["progtrace", "-i", "nan", "1"], "invalid interval 'nan'"),
    (["funclatency", "-i", "nan", "bind"], "invalid interval 'nan'"),
    (["funclatency", "-i", "1e308", "bind"], "invalid interval '1e308'"),
    (["tcpconnect", "-4", "-6"], "argument -6/--ipv6: not allowed with argument -4/--ipv4"),
    (["tcpstates", "-6", "-4"], "argument -4/--ipv4: not allowed with argument -6/--ipv6"),
    (["tcplife", "-4", "-6"], "not allowed with argument"),
    (["tcpaccept", "-4", "-6"], "not allowed with argument"),
    (["tcpconnect", "-P", "1_000"], "invalid port '1_000': not a number"),
    (["tcpconnect", "-P", "\u0663"], "not a number"),
    (["tcpconnect", "-P", " 80"], "not a number"),
    (["tcpconnect", "-p", "+1"], "invalid PID '+1': not a number"),
    (["tcpconnect", "-u", "0x10"], "invalid UID '0x10': not a number"),
], ids=lambda v: v if isinstance(v, str) and len(v) < 30 else None)
def test_bad_input_is_one_line(argv, message):
    rc, out, err = cli(*argv)
    assert rc == 2, err
    assert "Traceback" not in err
    first = err.splitlines()[0]
    assert first.startswith(f"kprobekit {argv[0]}: ") and message in err, err


# --- the lost count in every tool's JSON ---

@pytest.mark.host      # a 6,000-connect storm: minutes under the VMs' emulation
@requires("tracepoint")
@pytest.mark.parametrize("argv", [["trace", "--json", "t:sock/inet_sock_set_state newstate"],
                                  ["funclatency", "--per-call", "--json", "close"]],
                         ids=["trace", "funclatency-per-call"])
def test_json_ends_with_lost_line(argv):
    argv = argv + ["--buffer", "perf"]      # fills with fewer events than the 8 MiB ring buffer
    proc = subprocess.Popen(KPROBEKIT + argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_ready(proc)
    proc.send_signal(signal.SIGSTOP)        # a reader that is not reading: the kernel's buffer overflows
    connect_storm(6000)
    proc.send_signal(signal.SIGCONT)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    last = json.loads(out.strip().splitlines()[-1])
    assert list(last) == ["lost"] and last["lost"] > 0, err
    assert "kprobekit: lost" not in err
