"""A long-running user of the library leaks nothing: a thousand open -> load -> attach -> read ->
close cycles leave the process's file descriptors and memory where they were.  (The 10-minute
tool soak is a benchmark: make bench.)"""

import gc
import os

import pytest

from conftest import requires
from test_library import collect, kill_self
from kprobekit import BPF, kernel

CYCLES = 1000

# raw_tp rather than a tracepoint: detaching a perf-event tracepoint waits for an RCU grace period,
# which would make this test a thousand grace periods long.
KILLS = r"""
#include "kprobekit.bpf.h"

const volatile __u32 target_pid = 0;
const volatile long kill_nr = 0;

struct event {
	__u32 pid;
	__s32 sig;
};
KK_EVENTS(struct event)

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

SEC("raw_tp/sys_enter")
int BPF_PROG(on_enter, struct pt_regs *regs, long id)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32, zero = 0;
	__u64 one = 1, *n;
	struct event *e;

	if (id != kill_nr || pid != target_pid)
		return 0;
	n = bpf_map_lookup_elem(&counts, &zero);
	if (n)
		*n += 1;
	else
		bpf_map_update_elem(&counts, &zero, &one, BPF_NOEXIST);
	e = kk_reserve();
	if (!e)
		return 0;
	e->pid = pid;
	e->sig = (int)PT_REGS_PARM2_CORE_SYSCALL(regs);
	kk_submit(ctx, e);
	return 0;
}
"""


def fds():
    return sorted(os.listdir("/proc/self/fd"))


def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])


def cycle(buffer):
    rodata = {"target_pid": os.getpid(), "kill_nr": kernel.syscall_number("kill")}
    with BPF(text=KILLS, name="kills", rodata=rodata, buffer=buffer) as b:
        stream = b.events()
        kill_self(0)
        got = collect(stream, 1)
        assert [(e.pid, e.sig) for e in got] == [(os.getpid(), 0)]
        assert b["counts"][0] == 1


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    d = tmp_path_factory.getbasetemp() / "kprobekit-cache"
    d.mkdir(mode=0o755, exist_ok=True)
    monkeypatch.setenv("KPROBEKIT_CACHE", str(d))


@pytest.mark.host      # a thousand loads take minutes under the VMs' emulation
@requires("raw_tp")
@pytest.mark.parametrize("buffer,cycles", [("ring", CYCLES), ("perf", CYCLES // 5)], ids=["ring", "perf"])
def test_a_thousand_cycles_leak_no_fd_and_no_memory(buffer, cycles):
    for _ in range(50):         # warm up: caches, allocator arenas, the compile cache
        cycle(buffer)
    gc.collect()
    fds_before, rss_before = fds(), rss_kib()
    for _ in range(cycles):
        cycle(buffer)
    gc.collect()
    assert fds() == fds_before
    grown = rss_kib() - rss_before
    # a leak of a kilobyte per cycle (a libbpf object, a ring buffer mapping) would show here
    limit = max(512, cycles // 2)
    assert grown < limit, f"RSS grew {grown} KiB over {cycles} cycles"
