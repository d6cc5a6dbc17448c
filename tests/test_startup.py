"""What a tool's start-up relies on: the minimised kernel BTF (minbtf) and the work begun early (early).

Speed itself is measured by `make bench`; these check that the shortcuts give the same answers.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import requires
from kprobekit import kernel, minbtf
from kprobekit.object import object_path


def _connect_and_accept(port):
    with socket.create_connection(("127.0.0.1", port)) as c:
        return c.getsockname()[1]


@requires("tracepoint")
def test_tcpstates_loads_against_its_minimised_btf_alone(run_tool):
    """With the file made, the tracepoint backend never reads /sys/kernel/btf/vmlinux, and the fields its
    CO-RE relocations read still come out right (exact pid and ports of the test's own connection)."""
    if not shutil.which("strace") or not shutil.which("bpftool"):
        pytest.skip("needs strace and bpftool (make setup installs bpftool)")
    btf = minbtf.make(object_path("tcpstates"))
    assert btf and os.path.getsize(btf) < 64 << 10
    log = f"/tmp/kprobekit-test-strace.{os.getpid()}"
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        tool = run_tool("tcpstates", "--json", "-D", str(port), "--backend", "tracepoint",
                        prefix=("strace", "-f", "-qq", "-e", "trace=openat", "-o", log))
        with open(f"/proc/{tool.proc.pid}/task/{tool.proc.pid}/children") as f:
            traced = int(f.read().split()[0])       # signals go to it: strace passes on none
        try:
            sport = _connect_and_accept(port)
            server.accept()[0].close()
            time.sleep(0.5)
            os.kill(traced, signal.SIGINT)
            out, err = tool.proc.communicate(timeout=60)
        finally:
            try:
                os.kill(traced, signal.SIGKILL)
            except ProcessLookupError:
                pass
        rc = tool.proc.returncode
        recs = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    with open(log) as f:
        opened = f.read()
    os.unlink(log)
    assert rc == 0, err
    assert "/sys/kernel/btf/vmlinux" not in opened
    assert btf in opened
    mine = [(r["pid"], r["lport"], r["rport"], r["oldstate"], r["newstate"]) for r in recs
            if r["lport"] == sport]
    # (CLOSE -> SYN_SENT comes before the local port is chosen)
    assert mine[0] == (os.getpid(), sport, port, "SYN_SENT", "ESTABLISHED"), recs
    assert (os.getpid(), sport, port, "ESTABLISHED", "FIN_WAIT1") in mine


@requires("tracepoint")
def test_the_first_run_leaves_the_minimised_btf_for_the_next(run_tool):
    path = object_path("tcplife")
    made = minbtf.cached(path)
    if made:
        os.unlink(made)
    if not shutil.which("bpftool"):
        pytest.skip("no bpftool: no minimised BTF, objects load as before")
    tool = run_tool("tcplife", "--json")
    _, err, rc = tool.stop(settle=0.1)
    assert rc == 0, err
    assert minbtf.cached(path)


def test_the_cache_is_per_boot_kernel_and_object(tmp_path):
    obj = tmp_path / "tool.bpf.o"
    shutil.copy(object_path("tcpstates"), obj)
    first = minbtf._cache_path(str(obj))
    boot, release = kernel.boot_key().split(" ", 1)
    assert boot in first and release in first
    os.utime(obj, ns=(0, 1))       # a rebuilt object is another file
    assert minbtf._cache_path(str(obj)) != first


def test_a_cache_file_others_could_write_is_not_used(tmp_path):
    obj = tmp_path / "tool.bpf.o"
    shutil.copy(object_path("tcpstates"), obj)
    path = minbtf._cache_path(str(obj))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        with open(path, "wb") as f:
            f.write(b"not BTF")
        os.chmod(path, 0o666)
        assert minbtf.cached(str(obj)) is None
        os.chmod(path, 0o644)
        assert minbtf.cached(str(obj)) == path
    finally:
        os.unlink(path)


@requires("ringbuf")
def test_the_ring_buffer_made_early_is_the_tools(run_tool):
    """cli.main starts the 8 MiB ring on a thread; the running tool's events map is that size."""
    tool = run_tool("tcpstates", "--json")
    try:
        sizes = []
        for fd in os.listdir(f"/proc/{tool.proc.pid}/fdinfo"):
            try:
                with open(f"/proc/{tool.proc.pid}/fdinfo/{fd}") as f:
                    info = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
            except OSError:
                continue
            if info.get("map_type", "").strip() == "27":        # BPF_MAP_TYPE_RINGBUF
                sizes.append((info["map_id"].strip(), int(info["max_entries"])))
        # the events ring (libbpf's fd and the reader's two mappings' fds refer to it) and the spare
        assert sorted(size for _, size in set(sizes)) == [64 << 10, 8 << 20]
    finally:
        _, err, rc = tool.stop(settle=0)
    assert rc == 0, err


@requires("tracepoint")
def test_a_usage_error_ends_at_once_while_early_work_runs():
    p = subprocess.run([__import__("sys").executable, "-m", "kprobekit.cli.main", "tcpstates", "-4", "-6"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [
        "kprobekit tcpstates: argument -6/--ipv6: not allowed with argument -4/--ipv4 — see --help"]
