"""kprobekit tcptop: the exact bytes of a connection this test makes, per process and direction."""

import os
import socket

import pytest

from conftest import backend_params, cli, requires
from kprobekit.tools.tcptop import TOOL

MY_COMM = open("/proc/self/comm").read().strip()
SENT, ANSWERED = 100000, 333


def exchange(family, host):
    srv = socket.socket(family)
    srv.bind((host, 0))
    srv.listen(1)
    c = socket.create_connection(srv.getsockname()[:2], timeout=5)
    a, _ = srv.accept()
    c.sendall(b"x" * SENT)
    got = 0
    while got < SENT:
        got += len(a.recv(SENT))
    a.sendall(b"y" * ANSWERED)
    got = 0
    while got < ANSWERED:
        got += len(c.recv(ANSWERED))
    ports = srv.getsockname()[1], c.getsockname()[1]
    for s in (c, a, srv):
        s.close()
    return ports


def per_connection(recs):
    """Rows of every interval added up per (lport, rport)."""
    out = {}
    for r in recs:
        k = (r["lport"], r["rport"])
        tx, rx = out.get(k, (0, 0))
        out[k] = (tx + r["tx_bytes"], rx + r["rx_bytes"])
        assert (r["pid"], r["comm"]) == (os.getpid(), MY_COMM)
    return out


@pytest.mark.parametrize("backend", backend_params(TOOL))
@pytest.mark.parametrize("family,host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")],
                         ids=["ipv4", "ipv6"])
def test_exact_bytes(run_tool, backend, family, host):
    tool = run_tool("tcptop", "--json", "--backend", backend, "-p", str(os.getpid()), "0.5")
    sport, cport = exchange(family, host)
    recs, err, rc = tool.stop(settle=1.2)
    assert rc == 0, err
    ip = 6 if family == socket.AF_INET6 else 4
    assert all((r["ip"], r["laddr"], r["raddr"]) == (ip, host, host) for r in recs)
    assert per_connection(recs) == {(cport, sport): (SENT, ANSWERED), (sport, cport): (ANSWERED, SENT)}


@requires("tracepoint", "sock_length")
def test_port_filter_and_count(run_tool):
    tool = run_tool("tcptop", "--json", "-p", str(os.getpid()), "-D", "1", "0.3")
    exchange(socket.AF_INET, "127.0.0.1")
    recs, err, rc = tool.stop(settle=0.5)
    assert recs == []
    # two tables, then exit on its own
    rc, out, err = cli("tcptop", "-C", "-S", "0.2", "2")
    assert rc == 0, err
    assert out.count("PID     COMM") == 2 and "loadavg" not in out and "\033[" not in out


@requires("tracepoint", "sock_length")
def test_text_table(run_tool):
    tool = run_tool("tcptop", "-C", "-p", str(os.getpid()), "0.3")
    sport, cport = exchange(socket.AF_INET, "127.0.0.1")
    _, err, rc = tool.stop(settle=0.8)
    assert rc == 0, err
    rows = [ln.split() for ln in tool.stdout.splitlines() if ln.startswith(str(os.getpid()))]
    assert sorted(rows) == sorted([
        [str(os.getpid()), MY_COMM, f"127.0.0.1:{cport}", f"127.0.0.1:{sport}", "0", str(SENT // 1024)],
        [str(os.getpid()), MY_COMM, f"127.0.0.1:{sport}", f"127.0.0.1:{cport}", str(SENT // 1024), "0"]])
    assert "loadavg:" in tool.stdout


@pytest.mark.unit
def test_bad_arguments_one_line_exit_2():
    for argv in (["0"], ["1", "0"], ["x"], ["-L", "0"]):
        rc, out, err = cli("tcptop", *argv)
        assert rc == 2, (argv, err)
        assert len(err.strip().splitlines()) == 1 and err.startswith("kprobekit tcptop: "), err


@requires("tracepoint", "sock_length", "kprobe")
def test_backends_agree(run_tool):
    tools = [run_tool("tcptop", "--json", "--backend", b, "-p", str(os.getpid()), "0.5") for b in ("tracepoint", "kprobe")]
    exchange(socket.AF_INET6, "::1")
    tp, kp = [per_connection(t.stop(settle=1.2)[0]) for t in tools]
    assert tp == kp and len(tp) == 2
