"""kprobekit bindsnoop on the running kernel: exact events for bind() calls this test makes."""

import os
import socket
import subprocess
import sys

import pytest

from conftest import backend_params, cli, kernel
from kprobekit.tools.bindsnoop import TOOL

MY_COMM = open("/proc/self/comm").read().strip()
KEYS = ("pid", "comm", "ret", "errno", "proto", "addr", "port", "opts", "bound_if")
IP_FREEBIND = 15


def pick(events):
    return [{k: e[k] for k in KEYS} for e in events]


def mine(**kw):
    return dict({"pid": os.getpid(), "comm": MY_COMM, "ret": 0, "errno": None, "opts": ".....",
                 "bound_if": 0}, **kw)


@pytest.mark.parametrize("backend", backend_params(TOOL))
def test_tcp_udp_ipv4_ipv6_and_eaddrinuse(run_tool, backend):
    tool = run_tool("bindsnoop", "--json", "--backend", backend, "-p", str(os.getpid()))
    assert f"using {backend} backend" in tool.backend_line
    tcp4 = socket.socket(socket.AF_INET)
    tcp4.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp4.bind(("127.0.0.1", 0))            # port 0: the kernel's pick is reported
    tcp4.listen(1)
    port4 = tcp4.getsockname()[1]
    clash = socket.socket(socket.AF_INET)
    with pytest.raises(OSError) as exc:
        clash.bind(("127.0.0.1", port4))
    assert exc.value.errno == 98
    udp6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    udp6.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
    udp6.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"lo")
    udp6.bind(("::1", 0))
    tcp6 = socket.socket(socket.AF_INET6)
    tcp6.bind(("::", 0))
    events, err, rc = tool.stop()
    assert rc == 0, err
    assert pick(events) == [
        mine(proto="TCP", addr="127.0.0.1", port=port4, opts="...R."),
        mine(proto="TCP", addr="127.0.0.1", port=port4, ret=-98, errno="EADDRINUSE"),
        mine(proto="UDP", addr="::1", port=udp6.getsockname()[1], opts="F....",
             bound_if=socket.if_nametoindex("lo")),
        mine(proto="TCP", addr="::", port=tcp6.getsockname()[1]),
    ]
    for s in (tcp4, clash, udp6, tcp6):
        s.close()


def _privileged_port():
    with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
        start = int(f.read())
    if start <= 1:
        pytest.skip("net.ipv4.ip_unprivileged_port_start allows every port to every user")
    return start - 1


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
@pytest.mark.parametrize("backend", backend_params(TOOL))
def test_eacces_for_unprivileged_user(run_tool, backend):
    port = _privileged_port()
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import socket,sys; sys.stdin.readline(); s=socket.socket()\n"
         f"try: s.bind(('127.0.0.1', {port}))\n"
         "except OSError as e: print(e.errno, flush=True)"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, user=65534, group=65534,
        env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    try:
        tool = run_tool("bindsnoop", "--json", "--backend", backend, "-p", str(child.pid))
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "13"
        child.wait(timeout=30)
        events, err, rc = tool.stop()
    finally:
        child.kill()
        child.wait()
    assert pick(events) == [{"pid": child.pid, "comm": MY_COMM, "ret": -13, "errno": "EACCES",
                             "proto": "TCP", "addr": "127.0.0.1", "port": port, "opts": ".....",
                             "bound_if": 0}]


@kernel
def test_errors_only_and_port_filter(run_tool):
    a, b = socket.socket(), socket.socket()
    a.bind(("127.0.0.1", 0))
    port = a.getsockname()[1]
    tool = run_tool("bindsnoop", "--json", "-p", str(os.getpid()), "-E", "-P", str(port))
    ok = socket.socket()
    ok.bind(("127.0.0.1", 0))              # succeeds: not an error
    with pytest.raises(OSError):
        b.bind(("127.0.0.1", port))
    other = socket.socket()
    other.bind(("127.0.0.1", 0))
    with pytest.raises(OSError):
        socket.socket().bind(("127.0.0.1", other.getsockname()[1]))   # fails, other port
    events, err, rc = tool.stop()
    assert [(e["port"], e["errno"]) for e in events] == [(port, "EADDRINUSE")]
    for s in (a, b, ok, other):
        s.close()


@kernel
def test_text_columns(run_tool):
    tool = run_tool("bindsnoop", "-p", str(os.getpid()))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    tool.stop()
    lines = tool.stdout.splitlines()
    assert lines[0].split() == ["PID", "COMM", "RET", "PROTO", "OPTS", "IF", "PORT", "ADDR"]
    assert lines[1].split() == [str(os.getpid()), MY_COMM, "0", "UDP", ".....", "0",
                                str(s.getsockname()[1]), "127.0.0.1"]
    assert lines[0].index("ADDR") == lines[1].index("127.0.0.1")
    s.close()


@pytest.mark.unit
def test_bad_arguments_one_line_exit_2():
    for argv in (["-P", "0"], ["-P", "80,x"], ["-p", "x"], ["--backend", "nope"], ["-E", "1"], ["--bogus"]):
        rc, out, err = cli("bindsnoop", *argv)
        assert rc == 2, (argv, err)
        assert len(err.strip().splitlines()) == 1, (argv, err)
        assert "Traceback" not in err and err.startswith("kprobekit bindsnoop: ")
