"""kprobekit progtrace: exact invocation counts of a BPF program the test loads and triggers.

The target is tests/bpf/sockfilter.bpf.c, a socket filter on the test's own
UDP socket: it runs once per datagram that socket receives, and nowhere else.
"""

import os
import socket

import pytest

from conftest import cli, requires
from kprobekit import features, progs
from kprobekit.object import Object

TARGET = os.path.join(os.path.dirname(__file__), "bpf", "sockfilter.bpf.o")
SO_ATTACH_BPF = 50


@pytest.fixture
def sockfilter():
    obj = Object.open(TARGET)
    obj.load()
    prog = obj.program("kk_sockfilter")
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setsockopt(socket.SOL_SOCKET, SO_ATTACH_BPF, prog.fd)
    yield rx, progs.id_of(prog.fd)
    rx.close()
    obj.close()


def send(rx, sizes):
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for n in sizes:
        tx.sendto(b"x" * n, rx.getsockname())
        assert len(rx.recv(4096)) == n
    tx.close()


@requires("fentry", "fexit")
@pytest.mark.parametrize("by", ["id", "name"])
def test_counts_invocations_and_return_values(run_tool, sockfilter, by):
    rx, prog_id = sockfilter
    tool = run_tool("progtrace", "--json", str(prog_id) if by == "id" else "kk_sockfilter")
    assert f"BPF program {prog_id} kk_sockfilter (socket_filter)" in tool.backend_line
    sizes = [10, 10, 10, 20, 30]
    send(rx, sizes)
    recs, err, rc = tool.stop()
    assert rc == 0, err
    summary = recs[-1]
    assert (summary["prog_id"], summary["prog_name"], summary["calls"]) == (prog_id, "kk_sockfilter", 5)
    assert sum(b["count"] for b in summary["buckets"]) == 5
    # the filter returns skb->len: the payload plus a fixed header length
    rets = {r["ret"]: r["count"] for r in summary["returns"]}
    assert sorted(rets.values()) == [1, 1, 3]
    assert len({ret - size for ret, size in zip(sorted(rets), [10, 20, 30])}) == 1


def test_unknown_program():
    if os.geteuid() != 0:
        pytest.skip("needs root")
    rc, out, err = cli("progtrace", "name no_such_prog_xyz")
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "no loaded BPF program" in err


@pytest.mark.skipif(features.have("fentry"), reason="the kernel has fentry")
def test_without_fentry_says_so(sockfilter):
    rx, prog_id = sockfilter
    rc, out, err = cli("progtrace", str(prog_id))
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "fentry unavailable" in err and "Traceback" not in err
