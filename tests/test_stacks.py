"""Kernel stacks (kprobekit.stacks) and `trace -K`: real drops and connects this test makes."""

import json
import os
import socket
import subprocess
import sys

import pytest

from conftest import requires
from kprobekit.btf import kernel_enum
from kprobekit.stacks import KernelSymbols

ME = str(os.getpid())
# numbered differently across kernels (2 on 6.1, 3 on 6.12): read from the kernel's BTF
NO_SOCKET = kernel_enum("skb_drop_reason").get("SKB_DROP_REASON_NO_SOCKET", -1)


def refused(family, host):
    """A connect to a closed port: its SYN is dropped by tcp_v4_rcv/tcp_v6_rcv (NO_SOCKET)."""
    s = socket.socket(family)
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    c = socket.socket(family)
    with pytest.raises(ConnectionRefusedError):
        c.connect((host, port))
    c.close()


def functions(stack):
    return [f["function"] for f in stack]


@requires("tracepoint")
@pytest.mark.parametrize("family,host,rcv", [(socket.AF_INET, "127.0.0.1", "tcp_v4_rcv"),
                                             (socket.AF_INET6, "::1", "tcp_v6_rcv")], ids=["ipv4", "ipv6"])
def test_trace_kernel_stack_of_a_drop_json(run_tool, family, host, rcv):
    # -p: the SYN is processed in our task's softirq
    tool = run_tool("trace", "-K", "--json", "-p", ME, "t:skb/kfree_skb reason", "--filter", f"reason == {NO_SOCKET}")
    refused(family, host)
    recs, err, rc = tool.stop()
    assert rc == 0, err
    assert recs, err
    for r in recs:
        assert rcv in functions(r["stack"]), r["stack"]
        for f in r["stack"]:
            assert f["addr"].startswith("0xffff") and f["function"] and f["offset"] >= 0
    # the frames above the drop lead back to our connect()
    assert "__sys_connect" in functions(recs[0]["stack"])


@requires("tracepoint")
def test_trace_kernel_stack_text(run_tool):
    tool = run_tool("trace", "-K", "-p", ME, "t:skb/kfree_skb reason", "--filter", f"reason == {NO_SOCKET}")
    refused(socket.AF_INET, "127.0.0.1")
    _, err, rc = tool.stop()
    assert rc == 0, err
    lines = tool.stdout.splitlines()
    assert lines[1].split()[3:] == ["skb:kfree_skb:", f"reason={NO_SOCKET}"]
    frames = []
    for line in lines[2:]:
        if not line.startswith("        "):
            break
        frames.append(line.strip())
    assert any(f.startswith("tcp_v4_rcv+0x") for f in frames), lines


@requires("kprobe")
@pytest.mark.parametrize("backend", ["bpf", "ftrace"])
def test_trace_kernel_stack_kprobe(run_tool, backend):
    """BPF's stack map named from kallsyms, or ftrace's own stacktrace option: the same call chain."""
    tool = run_tool("trace", "-K", "--json", "--backend", backend, "-p", ME, "p:tcp_v4_connect")
    refused(socket.AF_INET, "127.0.0.1")
    recs, err, rc = tool.stop()
    assert rc == 0, err
    assert len(recs) == 1
    # a kprobe's stack starts in the probed function's caller chain
    assert "__sys_connect" in functions(recs[0]["stack"]), recs[0]["stack"]
    assert all(f["function"] and f["offset"] >= 0 for f in recs[0]["stack"]), recs[0]["stack"]


@requires("kprobe")
def test_trace_kernel_stack_ftrace_text(run_tool):
    tool = run_tool("trace", "-K", "--backend", "ftrace", "-p", ME, "p:tcp_v4_connect")
    refused(socket.AF_INET, "127.0.0.1")
    _, err, rc = tool.stop()
    assert rc == 0, err
    lines = tool.stdout.splitlines()
    assert "tcp_v4_connect" in lines[1], lines
    frames = [line.strip() for line in lines[2:] if line.startswith("        ")]
    assert any(f.startswith("__sys_connect+0x") for f in frames), lines


@requires("tracepoint")
def test_trace_without_k_has_no_stack(run_tool):
    tool = run_tool("trace", "--json", "-p", ME, "t:skb/kfree_skb reason", "--filter", f"reason == {NO_SOCKET}")
    refused(socket.AF_INET, "127.0.0.1")
    recs, err, rc = tool.stop()
    assert recs and all("stack" not in r for r in recs)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to read kernel addresses")
def test_symbols_name_real_addresses():
    syms = KernelSymbols()
    assert syms.hidden is None
    addr = next(int(line.split()[0], 16) for line in open("/proc/kallsyms")
                if line.split()[2:3] == ["tcp_v4_rcv"])
    assert syms.lookup(addr) == ("tcp_v4_rcv", 0, None)
    assert syms.lookup(addr + 5) == ("tcp_v4_rcv", 5, None)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges")
def test_symbols_hidden_from_an_unprivileged_reader_are_said():
    with open("/proc/sys/kernel/kptr_restrict") as f:
        kptr = int(f.read())
    with open("/proc/sys/kernel/perf_event_paranoid") as f:
        paranoid = int(f.read())
    if kptr == 0 and paranoid <= 1:
        pytest.skip("kernel.kptr_restrict=0 and perf_event_paranoid<=1: kallsyms shows addresses to everyone")
    code = ("import os; os.setgid(65534); os.setuid(65534)\n"
            "from kprobekit.stacks import KernelSymbols\n"
            "s = KernelSymbols(); print(s.lookup(0xffffffff81000000)); print(s.hidden)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    assert p.returncode == 0, p.stderr
    none, reason = p.stdout.splitlines()
    assert none == "None"
    assert "/proc/kallsyms hides kernel addresses" in reason and f"kernel.kptr_restrict={kptr}" in reason
    assert "run as root" in reason


def hidden_from(argv):
    """argv run as root without CAP_SYSLOG (setpriv): kallsyms then shows it zeros unless everyone may see them."""
    with open("/proc/sys/kernel/kptr_restrict") as f:
        kptr = int(f.read())
    with open("/proc/sys/kernel/perf_event_paranoid") as f:
        paranoid = int(f.read())
    if kptr == 0 and paranoid <= 1:
        pytest.skip("kernel.kptr_restrict=0 and perf_event_paranoid<=1: kallsyms shows addresses to everyone")
    return ["setpriv", "--bounding-set", "-syslog", sys.executable, "-m", "kprobekit.cli.main", *argv]


@requires("tracepoint")
@pytest.mark.parametrize("tool", ["trace", "tcpdrop"])
def test_hidden_addresses_are_said_not_printed_as_zeros(tool):
    import signal
    import time
    from kprobekit import features
    if tool == "tcpdrop" and not features.have("skb_drop_reason"):
        pytest.skip(f"skb_drop_reason: {features.probe('skb_drop_reason').reason}")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    argv = (["trace", "-K", "--json", "-p", ME, "t:skb/kfree_skb reason", "--filter", f"reason == {NO_SOCKET}"]
            if tool == "trace" else ["tcpdrop", "--json", "-P", str(port)])
    p = subprocess.Popen(hidden_from(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        err = ""
        while "kprobekit: using" not in err and time.monotonic() < deadline and p.poll() is None:
            err += p.stderr.readline()
        c = socket.socket()
        with pytest.raises(ConnectionRefusedError):
            c.connect(("127.0.0.1", port))
        c.close()
        time.sleep(0.5)
        p.send_signal(signal.SIGINT)
        out, rest = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    err += rest
    assert p.returncode == 0, err
    assert ("kprobekit: kernel stacks as bare addresses: /proc/kallsyms hides kernel addresses from this process"
            in err), err
    recs = [json.loads(line) for line in out.splitlines()]
    frames = [f for r in recs for f in r["stack"]]
    assert frames and all(f["function"] is None and int(f["addr"], 16) > 0 for f in frames)


def _pipe_events(chunks):
    """A KprobeEvents reading `chunks` (one per poll) from a pipe as if it were its trace_pipe."""
    from kprobekit import ftrace
    kp = ftrace.KprobeEvents.__new__(ftrace.KprobeEvents)
    r, w = os.pipe()
    os.set_blocking(r, False)
    kp._pipe, kp._partial, kp._tgid, kp._held, kp.stacks = r, b"", {}, None, True
    kp.names = ["kprobekit_1_0"]
    kp.tgid = lambda tid: tid
    return kp, w


@pytest.mark.unit
def test_ftrace_stack_lines_follow_their_hit_across_reads():
    hit = "  python3-1234 [001] d..1. 5.100000: kprobekit_1_0: (tcp_v4_connect+0x0/0x4e0) __kk_comm=\"python3\"\n"
    stack = ("  python3-1234 [001] d..1. 5.100001: <stack trace>\n"
             " => __sys_connect+0xb2/0xe0\n => __x64_sys_connect+0x18/0x20 [kmod]\n => 0xffffffffc0a01234\n")
    kp, w = _pipe_events([])
    os.write(w, hit.encode())
    assert kp.poll(0) == []                     # its stack may still come
    os.write(w, stack.encode() + hit.encode())
    first = kp.poll(0)
    assert [h[:3] for h in first] == [("kprobekit_1_0", "python3", 1234)]
    frames = first[0][-1]
    assert [(f.function, f.offset, f.module) for f in frames] == [
        ("__sys_connect", 0xb2, None), ("__x64_sys_connect", 0x18, "kmod"), (None, 0, None)]
    assert frames[2].addr == 0xffffffffc0a01234
    assert frames.as_json()[0] == {"addr": None, "function": "__sys_connect", "offset": 0xb2, "module": None}
    last = kp.poll(0)                           # nothing new: the held hit goes out, stack unknown
    assert len(last) == 1 and last[0][-1].missing
    os.close(w)
    os.close(kp._pipe)
