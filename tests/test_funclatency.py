"""kprobekit funclatency on the running kernel: exact call counts for calls this test makes."""

import os
import re
import signal
import socket
import time

import pytest

from conftest import backend_params, cli, kernel
from kprobekit import features
from kprobekit.tools.funclatency import BACKENDS

MY_COMM = open("/proc/self/comm").read().strip()


def bind_n(n):
    """n successful binds and one that fails with EINVAL (socket already bound)."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    with pytest.raises(OSError):
        socks[0].bind(("127.0.0.1", 0))
    for s in socks:
        s.close()


@pytest.mark.parametrize("backend", backend_params(BACKENDS))
def test_histogram_counts_a_syscall(run_tool, backend):
    tool = run_tool("funclatency", "--json", "--backend", backend, "-p", str(os.getpid()), "bind")
    bind_n(5)
    recs, err, rc = tool.stop()
    assert rc == 0, err
    assert len(recs) == 1, recs
    rec = recs[0]
    assert rec["func"].endswith("bind") and rec["unit"] == "nsecs"
    assert rec["count"] == 6
    assert sum(b["count"] for b in rec["buckets"]) == 6
    assert all(b["low"] <= b["high"] for b in rec["buckets"])
    assert rec["total_ns"] > 0


@pytest.mark.parametrize("backend", backend_params(BACKENDS))
def test_per_call_return_values(run_tool, backend):
    tool = run_tool("funclatency", "--json", "--per-call", "--backend", backend, "-p", str(os.getpid()), "bind")
    bind_n(3)
    recs, err, rc = tool.stop()
    assert rc == 0, err
    assert [r["ret"] for r in recs] == [0, 0, 0, -22]
    for r in recs:
        assert r["pid"] == os.getpid() and r["comm"] == MY_COMM and r["func"].endswith("bind")
        assert r["duration_ns"] > 0
        assert set(r) == {"func", "pid", "tid", "comm", "ret", "duration_ns"}


def stop_text(tool):
    time.sleep(0.5)
    tool.proc.send_signal(signal.SIGINT)
    out, err = tool.proc.communicate(timeout=60)
    assert tool.proc.returncode == 0, err
    return out.splitlines()


@kernel
def test_text_histogram(run_tool):
    tool = run_tool("funclatency", "-u", "-p", str(os.getpid()), "bind")
    bind_n(2)
    lines = stop_text(tool)
    assert lines[1].endswith("bind")
    assert lines[2].split() == ["usecs", ":", "count", "distribution"]
    assert sum(int(ln.split(":")[1].split("|")[0]) for ln in lines if "->" in ln) == 3
    assert lines[-1].startswith("avg = ") and lines[-1].endswith("count: 3")


@pytest.mark.parametrize("backend", backend_params(BACKENDS, ["fentry", "kprobe"]))
def test_inet_release_counts_closed_sockets(run_tool, backend):
    tool = run_tool("funclatency", "--json", "--backend", backend, "-p", str(os.getpid()), "inet_release")
    for _ in range(7):
        socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
    socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).close()   # unix_release: not counted
    recs, err, rc = tool.stop()
    assert rc == 0, err
    assert [(r["func"], r["count"]) for r in recs] == [("inet_release", 7)]


@pytest.mark.parametrize("backend", backend_params(BACKENDS, ["fentry", "kprobe"]))
def test_inet_release_per_call_like_the_seed(run_tool, backend):
    tool = run_tool("funclatency", "--per-call", "--backend", backend, "-p", str(os.getpid()), "inet_release")
    socket.socket().close()
    socket.socket().close()
    lines = stop_text(tool)
    assert lines[0].split() == ["PID", "COMM", "CALL"]
    assert len(lines) == 3
    for ln in lines[1:]:
        pid, comm, rest = ln.split(None, 2)
        assert (int(pid), comm) == (os.getpid(), MY_COMM)
        assert re.fullmatch(r"inet_release returned 0 and took \d+ ns", rest), ln


@pytest.mark.parametrize("backend", backend_params(BACKENDS, ["fentry", "kprobe"]))
def test_glob_several_functions(run_tool, backend):
    tool = run_tool("funclatency", "--json", "--backend", backend, "-p", str(os.getpid()), "inet_rel*",
                    "inet6_release")
    socket.socket(socket.AF_INET).close()
    socket.socket(socket.AF_INET6).close()
    socket.socket(socket.AF_INET6).close()
    recs, err, rc = tool.stop()
    assert rc == 0, err
    # inet6_release calls inet_release: 1 + 2
    assert {r["func"]: r["count"] for r in recs} == {"inet_release": 3, "inet6_release": 2}


def test_unknown_syscall_names_the_closest():
    rc, out, err = cli("funclatency", "--backend", "syscalls", "bnid")
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "closest: bind" in err and "Traceback" not in err


@pytest.mark.skipif(not features.have("kprobe") or not features.have("kretprobe"), reason="kprobe: needs kprobes")
def test_unknown_function_names_the_closest():
    rc, out, err = cli("funclatency", "--backend", "kprobe", "inet_relase")
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "inet_release" in err.split("closest:")[1]


@pytest.mark.skipif(features.have("kprobe") or features.have("fentry"), reason="the kernel has kprobes or fentry")
def test_no_kprobes_points_to_tracepoints_and_syscalls():
    rc, out, err = cli("funclatency", "inet_release")
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "no kprobes" in err and "t:CATEGORY/NAME" in err and "syscall" in err


@pytest.mark.unit
def test_bad_arguments():
    for argv in (["-i", "0", "bind"], ["-u", "-m", "bind"], [], ["-p", "x", "bind"]):
        rc, out, err = cli("funclatency", *argv)
        assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (argv, err)


@kernel
def test_interval_output_adds_up(run_tool):
    tool = run_tool("funclatency", "--json", "-i", "0.3", "-p", str(os.getpid()), "bind")
    bind_n(4)
    recs, err, rc = tool.stop(settle=1.0)
    assert rc == 0, err
    assert recs and all(r["func"].endswith("bind") for r in recs)
    assert sum(r["count"] for r in recs) == 5
