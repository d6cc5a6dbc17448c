"""kprobekit tcplife on the running kernel: exact sessions (ports, bytes, owner) this test makes."""

import os
import socket

import pytest

from conftest import backend_params, cli, kernel
from kprobekit.tools.tcplife import TOOL

MY_COMM = open("/proc/self/comm").read().strip()
KEYS = ("pid", "comm", "ip", "laddr", "lport", "raddr", "rport", "tx_bytes", "rx_bytes")
SENT, ANSWERED = 1000, 333


@pytest.mark.parametrize("backend", backend_params(TOOL))
@pytest.mark.parametrize("family,host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")],
                         ids=["ipv4", "ipv6"])
def test_session_bytes_and_owner(run_tool, backend, family, host):
    tool = run_tool("tcplife", "--json", "--backend", backend, "-p", str(os.getpid()))
    assert f"using {backend} backend" in tool.backend_line
    srv = socket.socket(family)
    srv.bind((host, 0))
    srv.listen(4)
    sport = srv.getsockname()[1]
    c = socket.create_connection((host, sport), timeout=5)
    cport = c.getsockname()[1]
    a, _ = srv.accept()
    c.sendall(b"x" * SENT)
    got = b""
    while len(got) < SENT:
        got += a.recv(SENT)
    a.sendall(b"y" * ANSWERED)
    got = b""
    while len(got) < ANSWERED:
        got += c.recv(ANSWERED)
    c.close()
    assert a.recv(1) == b""               # the client's FIN arrived
    a.close()
    srv.close()
    events, err, rc = tool.stop()
    assert rc == 0, err
    ip = 6 if family == socket.AF_INET6 else 4
    me = {"pid": os.getpid(), "comm": MY_COMM, "ip": ip, "laddr": host, "raddr": host}
    # bytes_acked/bytes_received count the SYN the client sent and each side's FIN
    assert sorted(({k: e[k] for k in KEYS} for e in events), key=lambda e: e["lport"] != cport) == [
        dict(me, lport=cport, rport=sport, tx_bytes=SENT + 2, rx_bytes=ANSWERED + 1),
        dict(me, lport=sport, rport=cport, tx_bytes=ANSWERED + 1, rx_bytes=SENT + 1),
    ]
    assert all(e["span_ms"] > 0 for e in events)


@kernel
def test_refused_connect_and_port_filters(run_tool):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    closed = s.getsockname()[1]
    s.close()
    other = socket.socket()
    other.bind(("127.0.0.1", 0))
    other.listen(1)
    tool = run_tool("tcplife", "--json", "-p", str(os.getpid()), "-D", str(closed), "-4")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", closed), timeout=5)
    c = socket.create_connection(("127.0.0.1", other.getsockname()[1]), timeout=5)
    c.close()                              # other remote port: filtered out
    events, err, rc = tool.stop()
    assert [(e["rport"], e["tx_bytes"], e["rx_bytes"], e["pid"]) for e in events] == [
        (closed, 0, 0, os.getpid())]
    assert events[0]["lport"] > 0
    other.close()


@kernel
def test_text_columns(run_tool):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    tool = run_tool("tcplife", "-p", str(os.getpid()), "-L", str(srv.getsockname()[1]))
    c = socket.create_connection(srv.getsockname(), timeout=5)
    a, _ = srv.accept()
    a.sendall(b"z" * 5000)
    got = 0
    while got < 5000:
        got += len(c.recv(5000))
    cport = c.getsockname()[1]
    c.close()
    a.recv(1)
    a.close()
    tool.stop()
    lines = tool.stdout.splitlines()
    assert lines[0].split() == ["PID", "COMM", "LADDR", "LPORT", "RADDR", "RPORT", "TX_KB", "RX_KB", "MS"]
    f = lines[1].split()
    # the server's socket: 5000 bytes + FIN sent (4 KiB), 1 (the client's FIN) received
    assert f[:8] == [str(os.getpid()), MY_COMM, "127.0.0.1", str(srv.getsockname()[1]), "127.0.0.1",
                     str(cport), "4", "0"]
    assert float(f[8]) > 0
    # right-aligned numbers end under their headers
    assert lines[1][:lines[0].index("RX_KB") + len("RX_KB")].endswith(" 0")
    srv.close()


@pytest.mark.unit
def test_bad_arguments_one_line_exit_2():
    for argv in (["-L", "0"], ["-D", "1,2,x"], ["-p", "-1"], ["--backend", "fentry"], ["--bogus"]):
        rc, out, err = cli("tcplife", *argv)
        assert rc == 2, (argv, err)
        assert len(err.strip().splitlines()) == 1, (argv, err)
        assert "Traceback" not in err and err.startswith("kprobekit tcplife: ")
