"""kprobekit tcpstates on the running kernel: the exact state sequence of connections this test makes."""

import os
import socket

import pytest

from conftest import backend_params, cli, kernel
from kprobekit.tools.tcpstates import TOOL

MY_COMM = open("/proc/self/comm").read().strip()


def session(family, host):
    """A listener, one connection, client closes first, server reads EOF then closes.

    Returns (listener port, client port, server-side port) — the sockets are closed."""
    srv = socket.socket(family)
    srv.bind((host, 0))
    srv.listen(4)
    lport = srv.getsockname()[1]
    c = socket.create_connection((host, lport), timeout=5)
    a, _ = srv.accept()
    cport = c.getsockname()[1]
    c.sendall(b"hello")
    assert a.recv(5) == b"hello"
    c.close()
    assert a.recv(1) == b""               # the FIN arrived: the server is in CLOSE_WAIT
    a.close()
    srv.close()
    return lport, cport


def by_socket(events):
    out = {}
    for e in events:
        out.setdefault(e["skaddr"], []).append(e)
    return list(out.values())


@pytest.mark.parametrize("backend", backend_params(TOOL))
@pytest.mark.parametrize("family,host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")],
                         ids=["ipv4", "ipv6"])
def test_connection_lifecycle(run_tool, backend, family, host):
    tool = run_tool("tcpstates", "--json", "--backend", backend, "-p", str(os.getpid()))
    assert f"using {backend} backend" in tool.backend_line
    lport, cport = session(family, host)
    events, err, rc = tool.stop()
    assert rc == 0, err
    ip = 6 if family == socket.AF_INET6 else 4
    anyaddr = "::" if ip == 6 else "0.0.0.0"
    for e in events:
        assert (e["pid"], e["comm"], e["ip"], e["laddr"]) == (os.getpid(), MY_COMM, ip, host)
        assert e["delta_ms"] >= 0
    listener, client, server = by_socket(events)
    steps = lambda evs: [(e["oldstate"], e["newstate"]) for e in evs]
    ends = lambda evs: {(e["lport"], e["raddr"], e["rport"]) for e in evs}
    assert steps(listener) == [("CLOSE", "LISTEN"), ("LISTEN", "CLOSE")]
    assert ends(listener) == {(lport, anyaddr, 0)}
    assert steps(client) == [("CLOSE", "SYN_SENT"), ("SYN_SENT", "ESTABLISHED"),
                             ("ESTABLISHED", "FIN_WAIT1"), ("FIN_WAIT1", "FIN_WAIT2"),
                             ("FIN_WAIT2", "CLOSE")]
    # the source port is picked after the SYN_SENT transition
    assert ends(client[:1]) == {(0, host, lport)} and ends(client[1:]) == {(cport, host, lport)}
    assert client[0]["delta_ms"] == 0
    # the accepted socket: its handshake and the peer's FIN happened before any task of ours
    # touched it, so with -p only its close() and what follows are ours
    assert steps(server) == [("CLOSE_WAIT", "LAST_ACK"), ("LAST_ACK", "CLOSE")]
    assert ends(server) == {(lport, host, cport)}


@kernel
def test_unknown_owner_is_null_and_port_filters(run_tool):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    lport = srv.getsockname()[1]
    tool = run_tool("tcpstates", "--json", "-4", "-L", str(lport))
    c = socket.create_connection(("127.0.0.1", lport), timeout=5)
    a, _ = srv.accept()
    c6 = socket.socket(socket.AF_INET6)    # other family, other port: filtered out
    c6.bind(("::1", 0))
    c6.listen(1)
    events, err, rc = tool.stop()
    # only the accepted socket has local port lport; no task of ours acted on it yet
    assert [(e["oldstate"], e["newstate"], e["pid"], e["comm"]) for e in events] == [
        ("LISTEN", "SYN_RECV", None, None), ("SYN_RECV", "ESTABLISHED", None, None)]
    # 6.1 and 6.12 enter SYN_RECV (inet_csk_clone_lock) before setting the remote port; 6.18 after
    assert events[0]["rport"] in (0, c.getsockname()[1])
    assert events[1]["rport"] == c.getsockname()[1]
    tool = run_tool("tcpstates", "--json", "-p", str(os.getpid()), "-D", str(lport))
    c.close()
    events, err, rc = tool.stop()
    assert {e["rport"] for e in events} == {lport} and events[0]["newstate"] == "FIN_WAIT1"
    for s in (a, srv, c6):
        s.close()


@kernel
def test_text_columns(run_tool):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    tool = run_tool("tcpstates", "-p", str(os.getpid()))
    srv.listen(1)
    tool.stop()
    lines = tool.stdout.splitlines()
    assert lines[0].split() == ["SKADDR", "PID", "COMM", "LADDR", "LPORT", "RADDR", "RPORT",
                                "OLDSTATE", "->", "NEWSTATE", "MS"]
    f = lines[1].split()
    assert f[1:] == [str(os.getpid()), MY_COMM, "127.0.0.1", str(srv.getsockname()[1]), "0.0.0.0", "0",
                     "CLOSE", "->", "LISTEN", "0.000"]
    assert lines[0].index("NEWSTATE") == lines[1].index("LISTEN")
    srv.close()


@pytest.mark.unit
def test_bad_arguments_one_line_exit_2():
    for argv in (["-L", "0"], ["-D", "x"], ["-p", "x"], ["--backend", "kprobe"], ["--bogus"]):
        rc, out, err = cli("tcpstates", *argv)
        assert rc == 2, (argv, err)
        assert len(err.strip().splitlines()) == 1, (argv, err)
        assert "Traceback" not in err and err.startswith("kprobekit tcpstates: ")
