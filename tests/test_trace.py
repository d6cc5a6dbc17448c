"""kprobekit trace: tracepoint specs on the host, kprobe specs (both backends) where the kernel has kprobes."""

import os
import re
import signal
import socket
import time

import pytest

from conftest import cli, kprobe_events_text, requires
from kprobekit import features, kernel

MY_COMM = open("/proc/self/comm").read().strip()
ME = str(os.getpid())
kprobes = requires("kprobe", "kretprobe")
BACKENDS = [pytest.param("bpf", marks=kprobes, id="bpf"),
            pytest.param("ftrace", marks=kprobes, id="ftrace")]


def mine(recs):
    assert all(r["pid"] == os.getpid() for r in recs), recs
    return recs


# --- tracepoints (the host has them) ---

@requires("tracepoint")
def test_tracepoint_listen_and_connect(run_tool):
    tool = run_tool("trace", "--json", "-p", ME, "t:sock/inet_sock_set_state sport dport newstate protocol saddr",
                    "--filter", "newstate == 10 && protocol == 6")
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    c = socket.create_connection(("127.0.0.1", port))
    recs, err, rc = tool.stop()
    c.close()
    srv.close()
    assert rc == 0, err
    assert [(r["event"], r["comm"], r["args"]) for r in mine(recs)] == [
        ("sock:inet_sock_set_state", MY_COMM,
         {"sport": port, "dport": 0, "newstate": 10, "protocol": 6, "saddr": "127.0.0.1"})]


@requires("tracepoint")
def test_tracepoint_syscall_fields_and_two_specs(run_tool):
    tool = run_tool("trace", "--json", "-p", ME, "t:syscalls/sys_enter_bind fd len=addrlen",
                    "t:syscalls/sys_exit_bind ret")
    socks = [socket.socket(socket.AF_INET), socket.socket(socket.AF_INET6)]
    socks[0].bind(("127.0.0.1", 0))
    socks[1].bind(("::1", 0))
    with pytest.raises(OSError):
        socks[0].bind(("127.0.0.1", 0))
    recs, err, rc = tool.stop()
    assert rc == 0, err
    got = [(r["event"], r["args"]) for r in mine(recs)]
    fd4, fd6 = socks[0].fileno(), socks[1].fileno()
    assert got == [("syscalls:sys_enter_bind", {"fd": fd4, "len": 16}), ("syscalls:sys_exit_bind", {"ret": 0}),
                   ("syscalls:sys_enter_bind", {"fd": fd6, "len": 28}), ("syscalls:sys_exit_bind", {"ret": 0}),
                   ("syscalls:sys_enter_bind", {"fd": fd4, "len": 16}), ("syscalls:sys_exit_bind", {"ret": -22})]
    for s in socks:
        s.close()


@requires("tracepoint")
def test_tracepoint_text_line(run_tool):
    tool = run_tool("trace", "-p", ME, "t:syscalls/sys_enter_bind fd")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    time.sleep(0.5)
    tool.proc.send_signal(signal.SIGINT)
    out, err = tool.proc.communicate(timeout=60)
    lines = out.splitlines()
    assert lines[0].split() == ["PID", "TID", "COMM", "EVENT"]
    assert lines[1].split() == [ME, str(__import__("threading").get_native_id()), MY_COMM,
                                "syscalls:sys_enter_bind:", f"fd={s.fileno()}"]
    s.close()


# --- errors that teach ---

def one_error(argv):
    rc, out, err = cli("trace", *argv)
    assert rc == 2 and "Traceback" not in err, err
    assert err.startswith("kprobekit trace: ")
    return err


def test_bad_spec_shows_a_caret():
    err = one_error(["p:inet_bind port=+2($arg0):u16"])
    msg, spec, caret = err.rstrip("\n").splitlines()
    assert "$arg0" in msg and "$arg1" in msg
    assert spec.strip() == "p:inet_bind port=+2($arg0):u16"
    assert spec[caret.index("^"):caret.rindex("^") + 1] == "$arg0"


def test_bad_type_and_unknown_field_carets():
    err = one_error(["p:inet_bind x=+2($arg2):u17"])
    _, spec, caret = err.rstrip("\n").splitlines()
    assert spec[caret.index("^"):caret.rindex("^") + 1] == "u17"
    err = one_error(["t:sock/inet_sock_set_state sprt"])
    msg, spec, caret = err.rstrip("\n").splitlines()
    assert "sport" in msg and spec[caret.index("^"):caret.rindex("^") + 1] == "sprt"


def test_unknown_function_and_member_name_the_closest():
    msg = one_error(["p:inet_relase"]).splitlines()[0]
    assert "closest: inet_release" in msg
    msg = one_error(["p:inet_bind uaddr->sa_famly"]).splitlines()[0]
    assert "closest: sa_family" in msg
    msg = one_error(["t:sock/inet_sock_set_stat"]).splitlines()[0]
    assert "sock:inet_sock_set_state" in msg


def test_bad_filter():
    one_error(["t:syscalls/sys_enter_bind fd", "--filter", "fd = 3"])
    msg = one_error(["t:syscalls/sys_enter_bind fd", "--filter", "nope == 3"]).splitlines()[0]
    assert "no field 'nope'" in msg


@pytest.mark.skipif(features.have("kprobe"), reason="the kernel has kprobes")
def test_kprobe_spec_without_kprobes_points_to_tracepoints():
    err = one_error(["p:inet_bind port=+2($arg2):u16"])
    assert len(err.strip().splitlines()) == 1
    assert "no kprobes" in err and "t:CATEGORY/NAME" in err and "funclatency" in err


@pytest.mark.skipif(kernel.kprobe_events() is not None, reason="kprobe_events exists")
def test_ftrace_backend_refuses_without_kprobe_events():
    err = one_error(["--backend", "ftrace", "p:inet_bind"])
    assert len(err.strip().splitlines()) == 1 and "kprobe_events" in err


def test_btf_names_compile_to_kernel_syntax():
    from kprobekit import probespec
    from kprobekit.symbols import Functions
    ctx = probespec.Context(Functions())
    p = probespec.parse("p:inet_listen port=sock->sk->__sk_common.skc_num backlog", 0, ctx)
    port, backlog = p.fetches
    assert re.fullmatch(r"\+\d+\(\+\d+\(%di\)\):u16", port.kernel_syntax())
    assert backlog.kernel_syntax() == "%si:s32"
    p = probespec.parse("p:tcp_close dport=sk->__sk_common.skc_dport", 0, ctx)
    assert p.fetches[0].type == ("be", 2)
    p = probespec.parse("r:inet_bind $retval", 0, ctx)
    assert (p.fetches[0].name, p.fetches[0].kernel_syntax()) == ("retval", "%ax:s32")


# --- kprobes: both backends, same answers ---

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def bind_pair(port):
    """A bind to `port`, and a second bind to it that fails (EADDRINUSE)."""
    a = socket.socket()
    a.bind(("127.0.0.1", port))
    b = socket.socket()
    with pytest.raises(OSError):
        b.bind(("127.0.0.1", port))
    a.close()
    b.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_inet_bind_port_raw_and_network_order(run_tool, backend):
    port = free_port()
    tool = run_tool("trace", "--json", "--backend", backend, "-p", ME,
                    "p:inet_bind port=+2($arg2):u16 hport=+2($arg2):be16 fam=uaddr->sa_family $comm")
    bind_pair(port)
    recs, err, rc = tool.stop()
    assert rc == 0, err
    want = {"port": socket.htons(port), "hport": port, "fam": socket.AF_INET, "comm": MY_COMM}
    assert [r["args"] for r in mine(recs)] == [want, want]
    assert {r["event"] for r in recs} == {"p_inet_bind_0"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_return_values(run_tool, backend):
    port = free_port()
    tool = run_tool("trace", "--json", "--backend", backend, "-p", ME, "r:inet_bind ret=$retval")
    bind_pair(port)
    recs, err, rc = tool.stop()
    assert rc == 0, err
    assert [r["args"]["ret"] for r in mine(recs)] == [0, -98]


@pytest.mark.parametrize("backend", BACKENDS)
def test_btf_names_and_network_order_filter(run_tool, backend):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    tool = run_tool("trace", "--json", "--backend", backend, "-p", ME,
                    "p:tcp_close dport=sk->__sk_common.skc_dport", "--filter", f"dport == {port}")
    srv.listen(7)
    c = socket.create_connection(("127.0.0.1", port))
    c.close()
    recs, err, rc = tool.stop()
    srv.close()
    assert rc == 0, err
    assert [(r["event"], r["args"]) for r in mine(recs)] == [("p_tcp_close_0", {"dport": port})]


@pytest.mark.parametrize("backend", BACKENDS)
def test_btf_names_through_two_pointers(run_tool, backend):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    tool = run_tool("trace", "--json", "--backend", backend, "-p", ME,
                    "p:inet_listen lport=sock->sk->__sk_common.skc_num backlog")
    srv.listen(7)
    recs, err, rc = tool.stop()
    srv.close()
    assert [r["args"] for r in mine(recs)] == [{"lport": port, "backlog": 7}]


@kprobes
def test_ftrace_leaves_kprobe_events_as_found_also_after_kill(run_tool):
    before = kprobe_events_text()
    spec = "p:inet_bind port=+2($arg2):be16"
    tool = run_tool("trace", "--json", "--backend", "ftrace", spec)
    assert f"kprobekit_{tool.proc.pid}_0" in kprobe_events_text()
    tool.stop()
    assert kprobe_events_text() == before
    killed = run_tool("trace", "--json", "--backend", "ftrace", spec)
    killed.proc.kill()
    killed.proc.communicate()
    assert f"kprobekit_{killed.proc.pid}_0" in kprobe_events_text()
    port = free_port()
    again = run_tool("trace", "--json", "--backend", "ftrace", "-p", ME, spec)
    assert f"kprobekit_{killed.proc.pid}_" not in kprobe_events_text()
    bind_pair(port)
    recs, err, rc = again.stop()
    assert [r["args"]["port"] for r in recs] == [port, port]
    assert kprobe_events_text() == before
    instances = os.listdir(kernel.tracefs() + "/instances")
    assert not [i for i in instances if i.startswith((f"kprobekit_{killed.proc.pid}_", f"kprobekit_{again.proc.pid}_"))]


def test_ftrace_lines_parse_to_the_probe_values():
    from kprobekit import ftrace, probespec
    from kprobekit.symbols import Functions
    ctx = probespec.Context(Functions())
    p = probespec.parse('p:inet_bind port=+2($arg2):u16 hport=+2($arg2):be16 $comm', 0, ctx)
    line = ('           <...>-4321    [001] d..1.  5123.456789: kprobekit_99_0: (inet_bind+0x4/0x90) '
            'port=47635 hport=37818 comm="a b" __kk_comm="python3"')
    event, comm, tid, ts, where, args = ftrace.parse_line(line, ["kprobekit_99_0"])
    assert (event, comm, tid, where) == ("kprobekit_99_0", "python3", 4321, "inet_bind+0x4/0x90")
    assert ftrace.parse_args(p, args) == {"port": 47635, "hport": 47763, "comm": "a b"}
    r = probespec.parse("r:inet_bind ret=$retval", 0, ctx)
    line = ' python3-4321 [000] ..... 1.5: kprobekit_99_1: (__sys_bind+0xe8/0x100 <- inet_bind) ret=-98 __kk_comm="x"'
    assert ftrace.parse_args(r, ftrace.parse_line(line, ["kprobekit_99_1"])[5]) == {"ret": -98}
    assert ftrace.parse_line(line, ["kprobekit_98_1"]) is None


def test_bpf_plan_and_decoding():
    from kprobekit import probespec
    from kprobekit.symbols import Functions
    ctx = probespec.Context(Functions())
    p = probespec.parse("p:inet_bind port=+2($arg2):u16 hport=+2($arg2):be16 n=%dx:s32 $comm", 0, ctx)
    raw = probespec.plan_bytes(p, ctx.regs, 272)
    nfetch, nfilter, _, _ = probespec._PLAN_HEAD.unpack_from(raw)
    assert (nfetch, nfilter) == (4, 0)
    src, kind, size, nderef, reg, dst, *offs = probespec._FETCH.unpack_from(raw, probespec._PLAN_HEAD.size)
    assert (src, kind, size, nderef, reg, dst, offs) == (0, 0, 2, 1, ctx.regs["si"], 0, [2, 0, 0, 0])
    data = bytearray(640)
    data[0:8] = (0x3930).to_bytes(8, "little")     # port 12345 in network order, read as a little-endian u16
    data[8:16] = (0x3930).to_bytes(8, "little")
    data[16:24] = (-98 & (2**64 - 1)).to_bytes(8, "little")
    data[24:24 + 8] = b"python3\0"
    assert {f.name: f.decode(bytes(data)) for f in p.fetches} == \
        {"port": 0x3930, "hport": 12345, "n": -98, "comm": "python3"}
