"""kprobekit tcpaccept on the running kernel: exact events for connections this test accepts."""

import os
import socket
import threading

import pytest

from conftest import backend_params, cli, kernel
from kprobekit.tools.tcpaccept import TOOL

MY_COMM = open("/proc/self/comm").read().strip()
KEYS = ("pid", "tid", "comm", "ip", "raddr", "rport", "laddr", "lport")


def listener(family, host):
    srv = socket.socket(family)
    srv.bind((host, 0))
    srv.listen(8)
    return srv


def accept_one(srv, host):
    """Connects to srv and accepts: (client's port, server's port)."""
    c = socket.create_connection((host, srv.getsockname()[1]), timeout=5)
    conn, _ = srv.accept()
    ports = c.getsockname()[1], srv.getsockname()[1]
    conn.close()
    c.close()
    return ports


@pytest.mark.parametrize("backend", backend_params(TOOL))
def test_ipv4_ipv6(run_tool, backend):
    srv4 = listener(socket.AF_INET, "127.0.0.1")
    srv6 = listener(socket.AF_INET6, "::1")
    tool = run_tool("tcpaccept", "--json", "--backend", backend, "-p", str(os.getpid()))
    assert f"using {backend} backend" in tool.backend_line
    c4, l4 = accept_one(srv4, "127.0.0.1")
    c6, l6 = accept_one(srv6, "::1")
    events, err, rc = tool.stop()
    assert rc == 0, err
    me = {"pid": os.getpid(), "tid": threading.get_native_id(), "comm": MY_COMM}
    assert [{k: e[k] for k in KEYS} for e in events] == [
        dict(me, ip=4, raddr="127.0.0.1", rport=c4, laddr="127.0.0.1", lport=l4),
        dict(me, ip=6, raddr="::1", rport=c6, laddr="::1", lport=l6),
    ]
    srv4.close()
    srv6.close()


@kernel
def test_port_and_family_filters(run_tool):
    a = listener(socket.AF_INET, "127.0.0.1")
    b = listener(socket.AF_INET, "127.0.0.1")
    b6 = listener(socket.AF_INET6, "::1")
    tool = run_tool("tcpaccept", "--json", "-p", str(os.getpid()), "-4",
                    "-P", f"{b.getsockname()[1]},{b6.getsockname()[1]}")
    accept_one(a, "127.0.0.1")
    cport, lport = accept_one(b, "127.0.0.1")
    accept_one(b6, "::1")
    events, err, rc = tool.stop()
    assert [(e["rport"], e["lport"]) for e in events] == [(cport, lport)]
    for s in (a, b, b6):
        s.close()


@kernel
def test_text_columns(run_tool):
    srv = listener(socket.AF_INET, "127.0.0.1")
    tool = run_tool("tcpaccept", "-p", str(os.getpid()))
    cport, lport = accept_one(srv, "127.0.0.1")
    tool.stop()
    lines = tool.stdout.splitlines()
    assert lines[0].split() == ["PID", "COMM", "IP", "RADDR", "RPORT", "LADDR", "LPORT"]
    assert lines[1].split() == [str(os.getpid()), MY_COMM, "4", "127.0.0.1", str(cport), "127.0.0.1",
                                str(lport)]
    assert lines[0].index("LADDR") == lines[1].rindex("127.0.0.1")
    srv.close()


@pytest.mark.unit
def test_bad_arguments_one_line_exit_2():
    for argv in (["-P", "0"], ["-P", "65536"], ["-p", "0"], ["--backend", "fentry2"], ["--bogus"]):
        rc, out, err = cli("tcpaccept", *argv)
        assert rc == 2, (argv, err)
        assert len(err.strip().splitlines()) == 1, (argv, err)
        assert "Traceback" not in err and err.startswith("kprobekit tcpaccept: ")
