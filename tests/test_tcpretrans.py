"""kprobekit tcpretrans: retransmits this test causes in a network namespace it creates.

SYNs: a listener with backlog 0 and syncookies off drops the SYNs of the
connects its full accept queue cannot take, and their senders retransmit
them (SYN_SENT).  Data: `tc netem loss 100%` on the namespace's loopback
(where the kernel has sch_netem) makes an established connection
retransmit, and send tail loss probes first.
"""

import subprocess
import time

import pytest

from conftest import backend_params, cli, requires
from kprobekit.tools.tcpretrans import TOOL

SYN_FLOOD = """
import socket, sys, time
family, host = (socket.AF_INET6, "::1") if sys.argv[-1] == "6" else (socket.AF_INET, "127.0.0.1")
srv = socket.socket(family); srv.bind((host, 0)); srv.listen(0)
cs = []
for i in range(4):
    c = socket.socket(family); c.setblocking(False)
    try:
        c.connect((host, srv.getsockname()[1]))
    except BlockingIOError:
        pass
    cs.append(c)
print(srv.getsockname()[1], *[c.getsockname()[1] for c in cs], flush=True)
sys.stdin.readline()
"""

LOSSY = """
import socket, sys, time
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
c = socket.create_connection(srv.getsockname()); a, _ = srv.accept()
print(srv.getsockname()[1], c.getsockname()[1], flush=True)
sys.stdin.readline()            # the test turns loss on
c.send(b"x" * 1000)
print("sent", flush=True)
sys.stdin.readline()
"""


def start_in(ns, code, *argv):
    p = subprocess.Popen(["ip", "netns", "exec", ns, "python3", "-c", code, *argv],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    return p, [int(x) for x in p.stdout.readline().split()]


def syn_retransmits(netns, run_tool, *argv, ip="4", wait=2.5):
    ns, _ = netns
    subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-q", "net.ipv4.tcp_syncookies=0"], check=True)
    tool = run_tool("tcpretrans", *argv)
    p, (port, *clients) = start_in(ns, SYN_FLOOD, ip)
    try:
        # the first SYN retransmit comes after the initial RTO (1 s), the next 2 s later
        recs, err, rc = tool.stop(settle=wait)
    finally:
        p.communicate("\n", timeout=10)
    assert rc == 0, err
    syn_retransmits.tool = tool
    return recs, port, clients


@pytest.mark.parametrize("backend", backend_params(TOOL))
def test_syn_retransmits(netns, run_tool, backend):
    recs, port, clients = syn_retransmits(netns, run_tool, "--json", "--backend", backend)
    mine = [r for r in recs if r["rport"] == port]
    lports = {r["lport"] for r in mine}
    # one connect fits the accept queue; the others' SYNs go unanswered
    assert lports <= set(clients) and len(lports) >= 2, recs
    for r in mine:
        assert (r["ip"], r["laddr"], r["raddr"], r["state"], r["type"]) == \
            (4, "127.0.0.1", "127.0.0.1", "SYN_SENT", "RETRANS")


@requires("tracepoint")
def test_syn_retransmits_ipv6_and_port_filter(netns, run_tool):
    recs, port, clients = syn_retransmits(netns, run_tool, "--json", "-6", ip="6")
    mine = [r for r in recs if r["rport"] == port]
    assert len({r["lport"] for r in mine}) >= 2
    assert all((r["ip"], r["laddr"], r["raddr"]) == (6, "::1", "::1") for r in mine)
    # -4 filters them all out, in the kernel
    recs, port, _ = syn_retransmits(netns, run_tool, "--json", "-4", ip="6")
    assert [r for r in recs if r["rport"] == port] == []


@pytest.mark.parametrize("backend", backend_params(TOOL))
def test_count_mode(netns, run_tool, backend):
    recs, port, clients = syn_retransmits(netns, run_tool, "--json", "-c", "--backend", backend)
    rows = [r for r in recs if r["rport"] == port]
    assert len(rows) >= 2 and {r["lport"] for r in rows} <= set(clients)
    for r in rows:
        assert (r["ip"], r["laddr"], r["raddr"]) == (4, "127.0.0.1", "127.0.0.1")
        assert r["retransmits"] >= 1
    # no per-event lines in counting mode
    assert all("retransmits" in r for r in recs)


@requires("tracepoint")
def test_text_columns(netns, run_tool):
    _, port, clients = syn_retransmits(netns, run_tool)
    lines = syn_retransmits.tool.stdout.splitlines()
    assert lines[0].split() == ["TIME", "PID", "IP", "LADDR:LPORT", "T>", "RADDR:RPORT", "STATE"]
    mine = [ln.split() for ln in lines[1:] if f" 127.0.0.1:{port} " in ln + " "]
    assert mine
    for f in mine:
        assert len(f) == 7 and f[0].count(":") == 2
        assert f[2:] == ["4", f[3], "R>", f"127.0.0.1:{port}", "SYN_SENT"] and int(f[3].split(":")[1]) in clients
    _, port, clients = syn_retransmits(netns, run_tool, "-c")
    lines = syn_retransmits.tool.stdout.splitlines()
    assert lines[0].split() == ["LADDR:LPORT", "RADDR:RPORT", "RETRANSMITS"]
    rows = [ln.split() for ln in lines[1:] if f"127.0.0.1:{port} " in ln]
    assert len(rows) >= 2 and all(r[1] == "<->" and int(r[3]) >= 1 for r in rows)


def lossy_connection(netns):
    ns, _ = netns
    p, (port, cport) = start_in(ns, LOSSY)
    tc = subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "lo", "root", "netem",
                         "loss", "100%"], capture_output=True, text=True)
    if tc.returncode:
        p.communicate("\n\n", timeout=10)
        pytest.skip(f"tc netem unavailable: {tc.stderr.strip()}")
    return p, port, cport


@pytest.mark.parametrize("backend", backend_params(TOOL))
def test_data_retransmits_under_netem_loss(netns, run_tool, backend):
    tool = run_tool("tcpretrans", "--json", "--backend", backend)
    p, port, cport = lossy_connection(netns)
    try:
        p.stdin.write("\n")
        p.stdin.flush()
        assert p.stdout.readline() == "sent\n"
        recs, err, rc = tool.stop(settle=1.5)       # RTO: 200 ms, then doubling
    finally:
        p.communicate("\n", timeout=10)
    mine = [r for r in recs if (r["lport"], r["rport"]) == (cport, port)]
    assert mine, recs
    assert all((r["state"], r["type"]) == ("ESTABLISHED", "RETRANS") for r in mine)


@requires("kprobe")
def test_tail_loss_probe(netns, run_tool):
    tool = run_tool("tcpretrans", "--json", "-l", "--backend", "kprobe")
    p, port, cport = lossy_connection(netns)
    try:
        p.stdin.write("\n")
        p.stdin.flush()
        assert p.stdout.readline() == "sent\n"
        recs, err, rc = tool.stop(settle=1.5)
    finally:
        p.communicate("\n", timeout=10)
    types = [r["type"] for r in recs if (r["lport"], r["rport"]) == (cport, port)]
    # the probe goes out before the retransmission timer fires
    assert types[0] == "TLP" and "RETRANS" in types, types


@requires("tracepoint")
def test_lossprobe_needs_kprobes_on_the_tracepoint_backend():
    rc, out, err = cli("tcpretrans", "-l", "--backend", "tracepoint")
    assert rc == 2
    assert err.strip() == ("kprobekit tcpretrans: trace tail loss probes (-l) with the tracepoint backend: "
                           "tcp_send_loss_probe has no tracepoint — use a kernel with kprobes, or drop -l")


@pytest.mark.unit
def test_bad_arguments_one_line_exit_2():
    for argv in (["-L", "0"], ["-D", "x"], ["-p", "1"], ["--backend", "fentry"]):
        rc, out, err = cli("tcpretrans", *argv)
        assert rc == 2, (argv, err)
        assert len(err.strip().splitlines()) == 1 and err.startswith("kprobekit tcpretrans: ")


@requires("tracepoint", "kprobe")
def test_backends_agree(netns, run_tool):
    ns, _ = netns
    subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-q", "net.ipv4.tcp_syncookies=0"], check=True)
    tools = [run_tool("tcpretrans", "--json", "--backend", b) for b in ("tracepoint", "kprobe")]
    p, (port, *clients) = start_in(ns, SYN_FLOOD, "4")
    time.sleep(2.5)
    p.communicate("\n", timeout=10)     # its sockets close: no retransmits after this
    tp, kp = [t.stop()[0] for t in tools]
    key = lambda recs: sorted((r["lport"], r["rport"], r["state"], r["type"]) for r in recs if r["rport"] == port)
    assert key(tp) and key(tp) == key(kp)
