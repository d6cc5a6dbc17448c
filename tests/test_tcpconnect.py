"""kprobekit tcpconnect on the running kernel: exact events for connects this test makes."""

import ipaddress
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import backend_params, bpf_ids, cli, in_netns, kernel, kprobe_events_text, requires
from kprobekit.tools.tcpconnect import TOOL

MY_COMM = open("/proc/self/comm").read().strip()


def listener(family):
    host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.bind((host, 0))
    srv.listen(16)
    return srv, host, srv.getsockname()[1]


def connect(family, host, port):
    """Connects and returns the client's source port."""
    c = socket.create_connection((host, port), timeout=5)
    sport = c.getsockname()[1]
    c.close()
    return sport


def connect_v4_mapped(port):
    c = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    c.connect(("::ffff:127.0.0.1", port))
    sport = c.getsockname()[1]
    c.close()
    return sport


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def mine(events):
    return [e for e in events if e["pid"] == os.getpid()]


@pytest.mark.parametrize("backend", backend_params(TOOL))
def test_ipv4_ipv6_and_refused(run_tool, backend):
    srv4, h4, p4 = listener(socket.AF_INET)
    srv6, h6, p6 = listener(socket.AF_INET6)
    refused = closed_port()
    tool = run_tool("tcpconnect", "--json", "--backend", backend, "-p", str(os.getpid()))
    assert f"using {backend} backend" in tool.backend_line
    sport4 = connect(socket.AF_INET, h4, p4)
    sport6 = connect(socket.AF_INET6, h6, p6)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", refused), timeout=5)
    sport_mapped = connect_v4_mapped(p4)
    events, err, rc = tool.stop()
    assert rc == 0, err
    tid = threading.get_native_id()
    common = {"pid": os.getpid(), "tid": tid, "uid": os.getuid(), "comm": MY_COMM}
    got = [{k: e[k] for k in ("pid", "tid", "uid", "comm", "ip", "saddr", "daddr", "sport", "dport")}
           for e in events]
    assert got[0] == dict(common, ip=4, saddr="127.0.0.1", daddr="127.0.0.1", sport=sport4, dport=p4)
    assert got[1] == dict(common, ip=6, saddr="::1", daddr="::1", sport=sport6, dport=p6)
    assert got[2]["dport"] == refused and got[2]["daddr"] == "127.0.0.1" and got[2]["sport"] > 0
    assert {k: got[2][k] for k in common} == common
    # an IPv6 socket reaching an IPv4 listener: reported once, as the IPv6 connect it is
    mapped = str(ipaddress.IPv6Address("::ffff:127.0.0.1"))  # spelled as this Python spells it
    assert got[3] == dict(common, ip=6, saddr=mapped, daddr=mapped, sport=sport_mapped, dport=p4)
    assert len(events) == 4
    srv4.close()
    srv6.close()


@pytest.mark.parametrize("_", [pytest.param("fentry-kprobe-tracepoint", id="fentry-kprobe-tracepoint",
                                              marks=requires("fexit", "kprobe", "kretprobe", "tracepoint"))])
def test_backends_agree(run_tool, _):
    """The same connects, seen at once through every backend, give the same events."""
    srv4, h4, p4 = listener(socket.AF_INET)
    srv6, h6, p6 = listener(socket.AF_INET6)
    refused = closed_port()
    tools = {b.name: run_tool("tcpconnect", "--json", "--backend", b.name, "-p", str(os.getpid()))
             for b in TOOL.backends}
    connect(socket.AF_INET, h4, p4)
    connect(socket.AF_INET6, h6, p6)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", refused), timeout=5)
    connect_v4_mapped(p4)
    keys = ("pid", "tid", "uid", "comm", "ip", "saddr", "daddr", "sport", "dport")
    seen = {name: [{k: e[k] for k in keys} for e in t.stop()[0]] for name, t in tools.items()}
    assert len(seen["tracepoint"]) == 4
    assert seen["fentry"] == seen["kprobe"] == seen["tracepoint"]
    srv4.close()
    srv6.close()


@kernel
def test_port_filter_in_kernel(run_tool):
    srv_a, host, port_a = listener(socket.AF_INET)
    srv_b, _, port_b = listener(socket.AF_INET)
    tool = run_tool("tcpconnect", "--json", "-p", str(os.getpid()), "-P", f"{port_b},9")
    connect(socket.AF_INET, host, port_a)
    sport_b = connect(socket.AF_INET, host, port_b)
    events, err, rc = tool.stop()
    assert [(e["sport"], e["dport"]) for e in events] == [(sport_b, port_b)]
    srv_a.close()
    srv_b.close()


@kernel
@pytest.mark.parametrize("flag,want", [("-4", 4), ("-6", 6)])
def test_family_filter(run_tool, flag, want):
    srv4, h4, p4 = listener(socket.AF_INET)
    srv6, h6, p6 = listener(socket.AF_INET6)
    tool = run_tool("tcpconnect", "--json", flag, "-p", str(os.getpid()))
    connect(socket.AF_INET, h4, p4)
    connect(socket.AF_INET6, h6, p6)
    events, err, rc = tool.stop()
    assert [e["ip"] for e in events] == [want]
    srv4.close()
    srv6.close()


@kernel
def test_pid_filter_in_kernel(run_tool):
    srv, host, port = listener(socket.AF_INET)
    # A child that connects when told to; the test process connects too and must not be reported.
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import socket,sys; sys.stdin.readline(); "
         f"c=socket.create_connection(('{host}', {port})); print(c.getsockname()[1], flush=True)"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        tool = run_tool("tcpconnect", "--json", "-p", str(child.pid))
        connect(socket.AF_INET, host, port)
        child.stdin.write("go\n")
        child.stdin.flush()
        child_sport = int(child.stdout.readline())
        child.wait(timeout=10)
        events, err, rc = tool.stop()
    finally:
        child.kill()
    assert [(e["pid"], e["sport"], e["dport"]) for e in events] == [(child.pid, child_sport, port)]
    srv.close()


@kernel
def test_perf_buffer_transport(run_tool):
    srv, host, port = listener(socket.AF_INET)
    tool = run_tool("tcpconnect", "--json", "--buffer", "perf", "-p", str(os.getpid()))
    sport = connect(socket.AF_INET, host, port)
    events, err, rc = tool.stop()
    assert [(e["sport"], e["dport"], e["comm"]) for e in events] == [(sport, port, MY_COMM)]
    srv.close()


@kernel
def test_text_columns(run_tool):
    srv, host, port = listener(socket.AF_INET)
    t = run_tool("tcpconnect", "-t", "-U", "-L", "-p", str(os.getpid()))
    sport = connect(socket.AF_INET, host, port)
    time.sleep(0.5)
    t.proc.send_signal(signal.SIGINT)
    out, _ = t.proc.communicate(timeout=30)
    lines = out.splitlines()
    assert lines[0].split() == ["TIME(s)", "UID", "PID", "COMM", "IP", "SADDR", "LPORT", "DADDR", "DPORT"]
    assert lines[1].split()[1:] == [str(os.getuid()), str(os.getpid()), MY_COMM, "4", "127.0.0.1",
                                    str(sport), "127.0.0.1", str(port)]
    srv.close()


@pytest.mark.host      # 12,000 connects: minutes under the VMs' emulation
@kernel
def test_lost_events_are_counted(run_tool):
    """A stopped reader, a full buffer: every connect is either reported or counted lost.  The
    perf buffer (64 pages per CPU) fills with fewer connects than the tools' 8 MiB ring buffer."""
    srv, host, port = listener(socket.AF_INET)
    tool = run_tool("tcpconnect", "--json", "--buffer", "perf", "-p", str(os.getpid()))
    tool.proc.send_signal(signal.SIGSTOP)
    n = 12000     # 88-byte records: more than 64 pages per CPU (2 CPUs here) hold
    for _ in range(n):
        c = socket.create_connection((host, port))
        c.close()
        srv.accept()[0].close()
    tool.proc.send_signal(signal.SIGCONT)
    events, err, rc = tool.stop(settle=1.0)
    lost = [e["lost"] for e in events if "lost" in e]
    reported = [e for e in events if "lost" not in e]
    assert lost and lost[0] > 0
    assert len(reported) + lost[0] == n
    srv.close()


@kernel
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=["TERM", "INT", "KILL"])
def test_nothing_left_behind(run_tool, sig):
    before_progs, before_links = bpf_ids()
    kprobes_before = kprobe_events_text()
    tool = run_tool("tcpconnect", "--json")
    during_progs, during_links = bpf_ids()
    ours = (during_progs - before_progs, during_links - before_links)
    assert ours[0], "the tool loaded no program?"
    tool.proc.send_signal(sig)
    tool.proc.communicate(timeout=60)
    # program freeing after the last fd closes is deferred (RCU); give it a moment
    for _ in range(50):
        after_progs, after_links = bpf_ids()
        if not (ours[0] & after_progs or ours[1] & after_links):
            break
        time.sleep(0.1)
    assert not ours[0] & after_progs
    assert not ours[1] & after_links
    if sig == signal.SIGKILL:
        # the next run removes whatever kprobe_events entries the killed one left
        run_tool("tcpconnect", "--json").stop()
    assert kprobe_events_text() == kprobes_before


@pytest.mark.unit
def test_bad_arguments_one_line_exit_2():
    for argv in (["-p", "abc"], ["-p", "-4"], ["-p", "999999999"], ["-P", "0"], ["-P", "http"],
                 ["-u", "x"], ["--backend", "nope"], ["--bogus"]):
        rc, out, err = cli("tcpconnect", *argv)
        assert rc == 2, (argv, err)
        assert len(err.strip().splitlines()) == 1, (argv, err)
        assert "Traceback" not in err and err.startswith("kprobekit tcpconnect: ")


@pytest.mark.unit
def test_unknown_command():
    rc, out, err = cli("nosuchtool")
    assert rc == 2 and "unknown command" in err and len(err.strip().splitlines()) == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_not_root_is_one_line():
    p = subprocess.run([sys.executable, "-m", "kprobekit.cli.main", "tcpconnect"],
                       capture_output=True, text=True, user=65534, group=65534, timeout=60,
                       env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    assert p.returncode == 2, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "run as root" in p.stderr, p.stderr


def test_unavailable_backend_is_one_line():
    from kprobekit import features
    for b in TOOL.backends:
        if not all(features.have(n) for n in b.needs):
            rc, out, err = cli("tcpconnect", "--backend", b.name)
            assert rc == 2 and len(err.strip().splitlines()) == 1, err
            assert "unavailable" in err and "Traceback" not in err


# --- --lat, -x, --netns, --cgroup ---

LAT_KEYS = ("pid", "comm", "ip", "daddr", "dport", "ret", "errno")


@pytest.mark.parametrize("backend", backend_params(TOOL))
def test_latency_and_failures(run_tool, backend):
    srv4, h4, p4 = listener(socket.AF_INET)
    srv6, h6, p6 = listener(socket.AF_INET6)
    refused = closed_port()
    tool = run_tool("tcpconnect", "--json", "--backend", backend, "-p", str(os.getpid()), "--lat", "-x")
    sport4 = connect(socket.AF_INET, h4, p4)
    sport6 = connect(socket.AF_INET6, h6, p6)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", refused), timeout=5)
    # failures inside tcp_v{4,6}_connect, before any SYN: no route to a multicast group,
    # a link-local address without an interface
    with pytest.raises(OSError) as unreach:
        socket.socket().connect(("224.0.0.1", 9))
    assert unreach.value.errno == 101
    with pytest.raises(OSError) as inval:
        socket.socket(socket.AF_INET6).connect(("fe80::1", 9))
    assert inval.value.errno == 22
    events, err, rc = tool.stop()
    assert rc == 0, err
    me = {"pid": os.getpid(), "comm": MY_COMM}
    got = [{k: e[k] for k in LAT_KEYS} for e in events]
    want = [dict(me, ip=4, daddr=h4, dport=p4, ret=0, errno=None),
            dict(me, ip=6, daddr=h6, dport=p6, ret=0, errno=None),
            dict(me, ip=4, daddr="127.0.0.1", dport=refused, ret=-111, errno="ECONNREFUSED")]
    if backend != "tracepoint":     # the tracepoint never sees a connect that sent no SYN
        want += [dict(me, ip=4, daddr="224.0.0.1", dport=9, ret=-101, errno="ENETUNREACH"),
                 dict(me, ip=6, daddr="fe80::1", dport=9, ret=-22, errno="EINVAL")]
    assert got == want
    assert [e["sport"] for e in events[:2]] == [sport4, sport6]
    assert events[0]["lat_us"] > 0 and events[1]["lat_us"] > 0
    assert all(e["lat_us"] is None for e in events[2:])
    srv4.close()
    srv6.close()


@pytest.mark.parametrize("backend", backend_params(TOOL))
def test_without_lat_or_x(run_tool, backend):
    """Default: no latency; a connect reported at its SYN has no known outcome yet."""
    srv, host, port = listener(socket.AF_INET)
    tool = run_tool("tcpconnect", "--json", "--backend", backend, "-p", str(os.getpid()))
    connect(socket.AF_INET, host, port)
    with pytest.raises(OSError):
        socket.socket().connect(("224.0.0.1", 9))     # failed before a SYN: only with -x
    events, err, rc = tool.stop()
    assert [(e["dport"], e["lat_us"]) for e in events] == [(port, None)]
    known = backend == "tracepoint"
    assert (events[0]["ret"], events[0]["errno"]) == ((0, None) if known else (None, None))
    srv.close()


@kernel
def test_lat_and_ret_text_columns(run_tool):
    srv, host, port = listener(socket.AF_INET)
    refused = closed_port()
    t = run_tool("tcpconnect", "--lat", "-x", "-p", str(os.getpid()))
    connect(socket.AF_INET, host, port)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", refused), timeout=5)
    t.stop()
    lines = t.stdout.splitlines()
    assert lines[0].split() == ["PID", "COMM", "IP", "SADDR", "DADDR", "DPORT", "LAT(ms)", "RET"]
    ok, bad = lines[1].split(), lines[2].split()
    assert ok[:6] == [str(os.getpid()), MY_COMM, "4", "127.0.0.1", "127.0.0.1", str(port)]
    assert float(ok[6]) > 0 and ok[7] == "0"
    assert bad[5:] == [str(refused), "-", "ECONNREFUSED"]
    assert lines[0].index("RET") == lines[2].index("ECONNREFUSED")
    srv.close()


@kernel
def test_netns_filter(run_tool, netns):
    name, inode = netns
    srv, host, port = listener(socket.AF_INET)
    child = in_netns(name, "import socket,sys; s=socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1); "
                           "sys.stdin.readline(); c=socket.create_connection(s.getsockname()); "
                           "print(c.getsockname()[1], s.getsockname()[1], flush=True)")
    try:
        tool = run_tool("tcpconnect", "--json", "--netns", str(inode))
        connect(socket.AF_INET, host, port)          # our namespace: filtered out
        child.stdin.write("go\n")
        child.stdin.flush()
        sport, dport = map(int, child.stdout.readline().split())
        child.wait(timeout=30)
        events, err, rc = tool.stop()
    finally:
        child.kill()
        child.wait()
    assert [(e["pid"], e["sport"], e["dport"]) for e in events] == [(child.pid, sport, dport)]
    srv.close()


def _cgroup2_root():
    with open("/proc/self/mounts") as f:
        for line in f:
            dev, path, fstype = line.split()[:3]
            if fstype == "cgroup2":
                return path
    return None


@kernel
@pytest.mark.skipif(_cgroup2_root() is None, reason="no cgroup v2 hierarchy mounted")
def test_cgroup_filter(run_tool):
    cg = os.path.join(_cgroup2_root(), f"kk-test-{os.getpid()}")
    os.mkdir(cg)
    srv, host, port = listener(socket.AF_INET)
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import socket,sys; sys.stdin.readline(); "
         f"c=socket.create_connection(('{host}', {port})); print(c.getsockname()[1], flush=True)"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        with open(os.path.join(cg, "cgroup.procs"), "w") as f:
            f.write(str(child.pid))
        tool = run_tool("tcpconnect", "--json", "--cgroup", cg)
        connect(socket.AF_INET, host, port)          # not in the cgroup: filtered out
        child.stdin.write("go\n")
        child.stdin.flush()
        child_sport = int(child.stdout.readline())
        child.wait(timeout=30)
        events, err, rc = tool.stop()
    finally:
        child.kill()
        child.wait()
        os.rmdir(cg)
    assert [(e["pid"], e["sport"], e["dport"]) for e in events] == [(child.pid, child_sport, port)]
    srv.close()


@pytest.mark.unit
def test_new_options_bad_arguments_one_line_exit_2():
    for argv in (["--netns", "x"], ["--netns", "0"], ["--cgroup", "/nonexistent"], ["--cgroup", "/tmp"],
                 ["--lat", "1"], ["-x", "-x", "bogus"]):
        rc, out, err = cli("tcpconnect", *argv)
        assert rc == 2, (argv, err)
        assert len(err.strip().splitlines()) == 1, (argv, err)
        assert "Traceback" not in err and err.startswith("kprobekit tcpconnect: ")
