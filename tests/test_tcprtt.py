"""kprobekit tcprtt: histograms of the round trips this test makes on loopback."""

import socket

import pytest

from conftest import backend_params, cli, requires
from kprobekit.tools.tcprtt import TOOL

ROUNDS = 30


def ping_pong(family, host, rounds=ROUNDS):
    """`rounds` request/response pairs; returns (server port, client port)."""
    srv = socket.socket(family)
    srv.bind((host, 0))
    srv.listen(1)
    c = socket.create_connection(srv.getsockname()[:2], timeout=5)
    a, _ = srv.accept()
    for _ in range(rounds):
        c.sendall(b"q")
        assert a.recv(1) == b"q"
        a.sendall(b"r")
        assert c.recv(1) == b"r"
    ports = srv.getsockname()[1], c.getsockname()[1]
    for s in (c, a, srv):
        s.close()
    return ports


def total(rec):
    return sum(b["count"] for b in rec["buckets"])


@pytest.mark.parametrize("backend", backend_params(TOOL))
def test_local_port_histogram(run_tool, backend):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    # -L: the server's side (requests arrive on its local port); -P: the client's side
    tools = [run_tool("tcprtt", "--json", "--backend", backend, *argv)
             for argv in (["-L", str(port)], ["-P", str(port)], ["-P", "1"], ["-b", "127.0.0.2"])]
    c = socket.create_connection(("127.0.0.1", port), timeout=5)
    a, _ = srv.accept()
    for _ in range(ROUNDS):
        c.sendall(b"q")
        assert a.recv(1) == b"q"
        a.sendall(b"r")
        assert c.recv(1) == b"r"
    server, client, none, other = [t.stop()[0] for t in tools]
    for s in (c, a, srv):
        s.close()
    assert none == [] and other == []
    for recs in (server, client):
        assert [r["unit"] for r in recs] == ["usecs"]
        # each side received ROUNDS one-byte segments on the established connection, and an ACK
        # of its own when its delayed-ACK timer fires before the answer (a slow machine)
        assert ROUNDS <= total(recs[0]) <= 2 * ROUNDS, recs


@requires("tracepoint")
def test_by_local_address_and_ms(run_tool):
    tool = run_tool("tcprtt", "--json", "-B")
    ms = run_tool("tcprtt", "--json", "-m", "-a", "::1")
    ping_pong(socket.AF_INET, "127.0.0.1")
    ping_pong(socket.AF_INET6, "::1")
    recs, err, rc = tool.stop()
    assert rc == 0, err
    by = {r["laddr"]: total(r) for r in recs}
    assert by["127.0.0.1"] >= 2 * ROUNDS and by["::1"] >= 2 * ROUNDS
    recs, err, rc = ms.stop()
    # (which bucket is timing: loopback is well under 1 ms here, not under emulation)
    assert [r["unit"] for r in recs] == ["msecs"] and total(recs[0]) >= 2 * ROUNDS


@requires("tracepoint")
def test_interval_text(run_tool):
    tool = run_tool("tcprtt", "-i", "0.5", "-b", "::1")
    ping_pong(socket.AF_INET6, "::1")
    _, err, rc = tool.stop(settle=1.2)
    assert rc == 0, err
    out = tool.stdout
    # a histogram for the interval with our traffic, "no samples" for the quiet ones
    assert "usecs" in out and ": count     distribution" in out
    assert "no samples" in out


@pytest.mark.unit
def test_bad_arguments_one_line_exit_2():
    for argv in (["-a", "1.2.3"], ["-i", "0"], ["-B", "--byraddr"], ["-P", "0"]):
        rc, out, err = cli("tcprtt", *argv)
        assert rc == 2, (argv, err)
        assert len(err.strip().splitlines()) == 1 and err.startswith("kprobekit tcprtt: "), err


@requires("tracepoint", "kprobe")
def test_backends_agree(run_tool):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    tools = [run_tool("tcprtt", "--json", "--backend", b, "-L", str(port)) for b in ("tracepoint", "kprobe")]
    c = socket.create_connection(("127.0.0.1", port), timeout=5)
    a, _ = srv.accept()
    for _ in range(ROUNDS):
        c.sendall(b"q")
        assert a.recv(1) == b"q"
        a.sendall(b"r")
        assert c.recv(1) == b"r"
    tp, kp = [t.stop()[0] for t in tools]
    for s in (c, a, srv):
        s.close()
    # the same samples: tcp_probe fires at the start of tcp_rcv_established
    assert tp == kp and total(tp[0]) >= ROUNDS
