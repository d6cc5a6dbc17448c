"""kprobekit solisten on the running kernel: exact events for listen() calls this test makes."""

import os
import socket

import pytest

from conftest import backend_params, cli, in_netns, kernel
from kprobekit.tools.solisten import TOOL

MY_COMM = open("/proc/self/comm").read().strip()
MY_NETNS = os.stat("/proc/self/ns/net").st_ino
KEYS = ("pid", "comm", "netns", "proto", "backlog", "addr", "port", "ret")


def pick(events):
    return [{k: e[k] for k in KEYS} for e in events]


def mine(**kw):
    return dict({"pid": os.getpid(), "comm": MY_COMM, "netns": MY_NETNS, "ret": 0}, **kw)


@pytest.mark.parametrize("backend", backend_params(TOOL))
def test_ipv4_ipv6_and_autobind(run_tool, backend):
    tool = run_tool("solisten", "--json", "--backend", backend, "-p", str(os.getpid()))
    assert f"using {backend} backend" in tool.backend_line
    s4 = socket.socket(socket.AF_INET)
    s4.bind(("127.0.0.1", 0))
    s4.listen(7)
    s6 = socket.socket(socket.AF_INET6)
    s6.bind(("::1", 0))
    s6.listen(9)
    auto = socket.socket(socket.AF_INET)   # never bound: listen() picks the port
    auto.listen(3)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with pytest.raises(OSError):
        udp.listen(1)                      # not TCP: not reported
    events, err, rc = tool.stop()
    assert rc == 0, err
    assert pick(events) == [
        mine(proto="TCPv4", backlog=7, addr="127.0.0.1", port=s4.getsockname()[1]),
        mine(proto="TCPv6", backlog=9, addr="::1", port=s6.getsockname()[1]),
        mine(proto="TCPv4", backlog=3, addr="0.0.0.0", port=auto.getsockname()[1]),
    ]
    for s in (s4, s6, auto, udp):
        s.close()


@pytest.mark.parametrize("backend", backend_params(TOOL))
def test_failed_listen_only_with_x(run_tool, backend):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    results = {}
    for flags in ((), ("-x",)):
        tool = run_tool("solisten", "--json", "--backend", backend, "-p", str(os.getpid()), *flags)
        c = socket.create_connection(("127.0.0.1", port), timeout=5)
        with pytest.raises(OSError):
            c.listen(5)                    # connected: inet_listen says EINVAL
        events, err, rc = tool.stop()
        results[flags] = (pick(events), c.getsockname()[1])
        c.close()
    assert results[()][0] == []
    got, cport = results[("-x",)]
    assert got == [mine(proto="TCPv4", backlog=5, addr="127.0.0.1", port=cport, ret=-22)]
    srv.close()


@pytest.mark.parametrize("backend", backend_params(TOOL))
def test_netns_reported_and_filtered(run_tool, backend, netns):
    name, inode = netns
    child = in_netns(name, "import socket,sys; sys.stdin.readline(); s=socket.socket(socket.AF_INET6); "
                           "s.bind(('::1', 0)); s.listen(11); print(s.getsockname()[1], flush=True); "
                           "sys.stdin.readline()")
    try:
        tool = run_tool("solisten", "--json", "--backend", backend, "--netns", str(inode))
        own = socket.socket()
        own.bind(("127.0.0.1", 0))
        own.listen(2)                      # our namespace: filtered out in the kernel
        child.stdin.write("go\n")
        child.stdin.flush()
        port = int(child.stdout.readline())
        events, err, rc = tool.stop()
        child.stdin.write("done\n")
        child.stdin.flush()
        child.wait(timeout=30)
    finally:
        child.kill()
        child.wait()
    assert pick(events) == [{"pid": child.pid, "comm": MY_COMM, "netns": inode, "proto": "TCPv6",
                             "backlog": 11, "addr": "::1", "port": port, "ret": 0}]
    own.close()


@kernel
def test_port_filter_in_kernel(run_tool):
    a, b = socket.socket(), socket.socket()
    for s in (a, b):
        s.bind(("127.0.0.1", 0))
    tool = run_tool("solisten", "--json", "-p", str(os.getpid()), "-P", str(b.getsockname()[1]))
    a.listen(1)
    b.listen(1)
    events, err, rc = tool.stop()
    assert [e["port"] for e in events] == [b.getsockname()[1]]
    a.close()
    b.close()


@kernel
def test_text_columns(run_tool):
    tool = run_tool("solisten", "-p", str(os.getpid()))
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(4)
    tool.stop()
    lines = tool.stdout.splitlines()
    assert lines[0].split() == ["PID", "COMM", "NETNS", "PROTO", "BACKLOG", "ADDR", "PORT"]
    assert lines[1].split() == [str(os.getpid()), MY_COMM, str(MY_NETNS), "TCPv4", "4", "127.0.0.1",
                                str(s.getsockname()[1])]
    assert lines[0].index("ADDR") == lines[1].index("127.0.0.1")
    s.close()


@pytest.mark.unit
def test_bad_arguments_one_line_exit_2():
    for argv in (["-n", "abc"], ["-n", "0"], ["--netns", "-1"], ["-P", "0"], ["-p", "x"],
                 ["--backend", "nope"], ["--bogus"]):
        rc, out, err = cli("solisten", *argv)
        assert rc == 2, (argv, err)
        assert len(err.strip().splitlines()) == 1, (argv, err)
        assert "Traceback" not in err and err.startswith("kprobekit solisten: ")
