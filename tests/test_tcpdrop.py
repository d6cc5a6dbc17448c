"""kprobekit tcpdrop: drops this test causes — a connect to a closed port is dropped as NO_SOCKET."""

import socket

import pytest

from conftest import backend_params, cli, requires
from kprobekit.tools.tcpdrop import TOOL

KEYS = ("ip", "saddr", "sport", "daddr", "dport", "state", "flags", "reason")


def closed_port(family, host):
    s = socket.socket(family)
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def refused(family, host, port):
    """connect() to a closed port; returns the client's port.  Its SYN is dropped (NO_SOCKET) and answered by RST."""
    c = socket.socket(family)
    c.bind((host, 0))
    sport = c.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        c.connect((host, port))
    c.close()
    return sport


def functions(stack):
    return [f["function"] for f in stack]


@pytest.mark.parametrize("backend", backend_params(TOOL))
@pytest.mark.parametrize("family,host,rcv", [(socket.AF_INET, "127.0.0.1", "tcp_v4_rcv"),
                                             (socket.AF_INET6, "::1", "tcp_v6_rcv")], ids=["ipv4", "ipv6"])
def test_refused_connect_is_a_no_socket_drop(run_tool, backend, family, host, rcv):
    port = closed_port(family, host)
    tool = run_tool("tcpdrop", "--json", "--backend", backend, "-P", str(port))
    assert f"using {backend} backend" in tool.backend_line
    sport = refused(family, host, port)
    recs, err, rc = tool.stop()
    assert rc == 0, err
    ip = 6 if family == socket.AF_INET6 else 4
    assert [{k: r[k] for k in KEYS} for r in recs] == [
        {"ip": ip, "saddr": host, "sport": sport, "daddr": host, "dport": port, "state": None, "flags": "SYN",
         "reason": "NO_SOCKET"}]
    stack = recs[0]["stack"]
    assert rcv in functions(stack), stack
    assert all(f["function"] and f["offset"] >= 0 for f in stack)


@requires("tracepoint", "skb_drop_reason")
def test_reason_and_family_filters(run_tool):
    port = closed_port(socket.AF_INET, "127.0.0.1")
    no_socket = run_tool("tcpdrop", "--json", "-P", str(port), "--reason", "no_socket")
    csum = run_tool("tcpdrop", "--json", "-P", str(port), "--reason", "SKB_DROP_REASON_TCP_CSUM")
    v6only = run_tool("tcpdrop", "--json", "-P", str(port), "-6")
    sport = refused(socket.AF_INET, "127.0.0.1", port)
    got = [t.stop()[0] for t in (no_socket, csum, v6only)]
    assert [[(r["sport"], r["reason"]) for r in recs] for recs in got] == [[(sport, "NO_SOCKET")], [], []]


@requires("tracepoint", "skb_drop_reason")
def test_text_columns_and_stack(run_tool):
    port = closed_port(socket.AF_INET, "127.0.0.1")
    tool = run_tool("tcpdrop", "-P", str(port))
    sport = refused(socket.AF_INET, "127.0.0.1", port)
    _, err, rc = tool.stop()
    assert rc == 0, err
    lines = tool.stdout.splitlines()
    assert lines[0].split() == ["TIME", "PID", "COMM", "IP", "SADDR:SPORT", ">", "DADDR:DPORT", "STATE", "(FLAGS)",
                                "REASON"]
    f = lines[1].split()
    assert f[3:] == ["4", f"127.0.0.1:{sport}", ">", f"127.0.0.1:{port}", "-", "(SYN)", "NO_SOCKET"]
    stack = [ln.strip() for ln in lines[2:]]
    assert all(ln.startswith(" ") for ln in lines[2:]) and any(s.startswith("tcp_v4_rcv+0x") for s in stack)


@requires("tracepoint", "skb_drop_reason", "kprobe")
def test_backends_agree(run_tool):
    port = closed_port(socket.AF_INET6, "::1")
    tools = [run_tool("tcpdrop", "--json", "--backend", b, "-P", str(port)) for b in ("tracepoint", "kprobe")]
    refused(socket.AF_INET6, "::1", port)
    tp, kp = [t.stop()[0] for t in tools]
    assert len(tp) == 1 and [{k: r[k] for k in KEYS} for r in kp] == [{k: r[k] for k in KEYS} for r in tp]
    # the stacks may differ above the drop (tracepoint vs. probed function), not from tcp_v6_rcv down
    below = lambda stack: functions(stack)[functions(stack).index("tcp_v6_rcv"):]
    assert below(tp[0]["stack"]) == below(kp[0]["stack"])


@pytest.mark.unit
def test_unknown_reason_one_line_exit_2():
    rc, out, err = cli("tcpdrop", "--reason", "NO_SUCH_REASON")
    assert rc == 2
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("kprobekit tcpdrop: argument --reason: unknown drop reason 'NO_SUCH_REASON'")


@requires("btf")
def test_reason_names_come_from_the_kernels_btf():
    from kprobekit.btf import kernel_enum
    from kprobekit.tools.tcpdrop import reason_arg, reasons
    enum = kernel_enum("skb_drop_reason")
    names = reasons()
    assert names[enum["SKB_DROP_REASON_NO_SOCKET"]] == "NO_SOCKET"
    for text in ("NO_SOCKET", "no_socket", "SKB_DROP_REASON_NO_SOCKET"):
        assert reason_arg(text) == enum["SKB_DROP_REASON_NO_SOCKET"]
    if "SKB_DROP_REASON_SKB_CSUM" in enum:      # a reason whose own name starts with SKB_
        assert names[enum["SKB_DROP_REASON_SKB_CSUM"]] == "SKB_CSUM" == names[reason_arg("skb_csum")]
