"""The public API (kprobekit.BPF and friends) on the real kernel: a user's program compiled from a
string, its events, maps, bpf_printk lines and histograms asserted exactly; the compile cache;
errors a person can read."""

import ctypes
import os
import re
import signal
import struct
import subprocess
import sys
import time

import pytest

from conftest import bpf_ids, kernel, requires
from kprobekit import BPF, compiler, errors, features

MY_COMM = open("/proc/self/comm").read().strip()

# Every event of this program is a kill() made by this test process (target_pid).
KILLS = r"""
#include "kprobekit.bpf.h"

const volatile __u32 target_pid = 0;

struct event {
	__u32 pid;
	__s32 sig;
	__u32 target;
	char comm[TASK_COMM_LEN];
};
KK_EVENTS(struct event)

struct kill_evt {
	__u64 target;
	__u32 sig;
};
KK_RECORD(struct kill_evt);

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} out SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_kill")
int on_kill(struct trace_event_raw_sys_enter *ctx)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	__u32 sig = ctx->args[1];
	__u64 one = 1, *n;
	struct kill_evt k = {};
	struct event *e;

	if (pid != target_pid)
		return 0;
	n = bpf_map_lookup_elem(&counts, &sig);
	if (n)
		__sync_fetch_and_add(n, 1);
	else
		bpf_map_update_elem(&counts, &sig, &one, BPF_ANY);
	k.target = ctx->args[0];
	k.sig = sig;
	bpf_perf_event_output(ctx, &out, BPF_F_CURRENT_CPU, &k, sizeof(k));
	bpf_printk("kill token %d sig %d", pid, sig);
	e = kk_reserve();
	if (!e)
		return 0;
	e->pid = pid;
	e->sig = sig;
	e->target = ctx->args[0];
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	kk_submit(ctx, e);
	return 0;
}
"""

tracepoints = requires("tracepoint")


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Compiled objects go to a cache of this test session, never to the system's."""
    d = tmp_path_factory.getbasetemp() / "kprobekit-cache"
    d.mkdir(mode=0o755, exist_ok=True)
    monkeypatch.setenv("KPROBEKIT_CACHE", str(d))
    return d


def collect(stream, n, timeout=20):
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got.extend(stream.poll(0.5))
    return got


def our_ids(b):
    """(program ids, link ids) of a BPF's loaded programs and links, to check they go away."""
    from kprobekit._libbpf import lib
    ids = []
    for fds in ([p.fd for p in b.programs.values() if p.fd >= 0], [ln.fd for ln in b.links]):
        out = set()
        for fd in fds:
            info, n = ctypes.create_string_buffer(256), ctypes.c_uint32(256)
            assert lib.bpf_obj_get_info_by_fd(fd, info, ctypes.byref(n)) == 0
            out.add(struct.unpack_from("=I", info, 4)[0])     # bpf_prog_info/bpf_link_info: type, id
        ids.append(out)
    return tuple(ids)


def assert_gone(ids):
    progs, links = bpf_ids()
    assert not ids[0] & progs and not ids[1] & links, "programs or links outlived close()"


def kill_self(*sigs):
    for sig in sigs:
        os.kill(os.getpid(), sig)


@pytest.mark.unit
def test_import_is_lazy():
    code = ("import sys, kprobekit; kprobekit.__version__; "
            "print(sorted(m for m in ('ctypes', 'json', 'subprocess', 'hashlib', 'kprobekit.bpf') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@tracepoints
@pytest.mark.parametrize("buffer", ["ring", "perf"])
def test_string_program_events_maps_exact(buffer):
    if buffer == "ring" and not features.have("ringbuf"):
        pytest.skip(f"ringbuf: {features.probe('ringbuf').reason}")
    pid = os.getpid()
    with BPF(text=KILLS, name="kills", rodata={"target_pid": pid}, buffer=buffer) as b:
        stream = b.events()
        assert stream.fields == ["pid", "sig", "target", "comm"]
        # a user-named perf map and struct: a perf buffer sees only what comes after it is opened
        out = b.events("out", struct="kill_evt")
        kill_self(0, signal.SIGWINCH, 0)
        got = collect(stream, 3)
        assert [(e.pid, e.sig, e.target, e.comm) for e in got] == [
            (pid, 0, pid, MY_COMM), (pid, signal.SIGWINCH, pid, MY_COMM), (pid, 0, pid, MY_COMM)]
        assert dict(b["counts"].items()) == {0: 2, signal.SIGWINCH: 1}
        assert b["counts"][0] == 2 and 1 not in b["counts"]
        assert stream.lost == 0
        ids = our_ids(b)
        assert [(k.target, k.sig) for k in collect(out, 3)] == [(pid, 0), (pid, signal.SIGWINCH), (pid, 0)]
    assert_gone(ids)


@pytest.mark.host      # user-space behaviour, clang-heavy: minutes under the VMs' emulation
@tracepoints
def test_second_start_does_not_compile(private_cache, tmp_path):
    src = tmp_path / "counter.bpf.c"
    hdr = tmp_path / "counter.h"
    hdr.write_text("#define STEP 1\n")
    src.write_text(KILLS.replace('#include "kprobekit.bpf.h"', '#include "kprobekit.bpf.h"\n#include "counter.h"'))
    before = compiler.compiles
    with BPF(src_file=src) as b:
        assert b.compiled and b.name == "counter"
        path, mtime = b.path, os.stat(b.path).st_mtime_ns
    assert compiler.compiles == before + 1
    with BPF(src_file=src) as b:
        assert not b.compiled and b.path == path
    assert compiler.compiles == before + 1, "clang ran although the object was cached"
    assert os.stat(path).st_mtime_ns == mtime
    # an edited header (not the .c file) is seen through clang's dependency list
    time.sleep(0.01)
    hdr.write_text("#define STEP 2\n")
    with BPF(src_file=src) as b:
        assert b.compiled
    assert compiler.compiles == before + 2
    # a different kernel release or flags is another cache entry
    with BPF(src_file=src, cflags=["-DKK_TEST_EXTRA=1"]) as b:
        assert b.compiled and b.path != path


@tracepoints
def test_prebuilt_object_and_explicit_attach():
    text = KILLS.replace('SEC("tracepoint/syscalls/sys_enter_kill")', 'SEC("tracepoint")')
    path, _ = compiler.compile(text, name="explicit")
    pid = os.getpid()
    with BPF(obj_file=path, rodata={"target_pid": pid}) as b:
        assert b.links == []        # no target in the section: nothing attached by itself
        kill_self(0)
        link = b.attach_tracepoint("on_kill", "syscalls:sys_enter_kill")
        assert b.links == [link]
        kill_self(signal.SIGWINCH)
        assert [e.sig for e in collect(b.events(), 1)] == [signal.SIGWINCH]


@tracepoints
def test_trace_pipe_lines_of_our_printk():
    pid = os.getpid()
    with BPF(text=KILLS, name="printk", rodata={"target_pid": pid}) as b:
        pipe = b.trace_pipe()
        assert pipe.instance and os.path.isdir(pipe.instance)
        kill_self(0, signal.SIGWINCH)
        lines, deadline = [], time.monotonic() + 20
        while len(lines) < 2 and time.monotonic() < deadline:
            lines += [ln for ln in pipe.poll(0.5) if ln.msg.startswith(f"kill token {pid} ")]
        instance = pipe.instance
    assert [(ln.pid, ln.task, ln.msg) for ln in lines] == [
        (pid, MY_COMM, f"kill token {pid} sig 0"), (pid, MY_COMM, f"kill token {pid} sig {int(signal.SIGWINCH)}")]
    assert not os.path.exists(instance), "the tracefs instance outlived close()"


WRITES = r"""
#include "kprobekit.bpf.h"

const volatile __u32 target_pid = 0;
const volatile int target_fd = -1;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} dist SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_write")
int on_write(struct trace_event_raw_sys_enter *ctx)
{
	__u64 *slot, count = ctx->args[2];
	__u32 bucket = 0;

	if (bpf_get_current_pid_tgid() >> 32 != target_pid || (int)ctx->args[0] != target_fd)
		return 0;
	while (count && bucket < 63) {		/* bit length: 0, 1, 2-3, 4-7, ... */
		count >>= 1;
		bucket++;
	}
	slot = bpf_map_lookup_elem(&dist, &bucket);
	if (slot)
		__sync_fetch_and_add(slot, 1);
	return 0;
}
"""


@tracepoints
def test_log2_histogram_from_a_map(capsys):
    with open(os.devnull, "wb", buffering=0) as null:
        with BPF(text=WRITES, name="writes", rodata={"target_pid": os.getpid(), "target_fd": null.fileno()}) as b:
            for size in (1, 3, 3, 100, 5000):
                null.write(b"x" * size)
            assert b.histogram("dist") == {1: 1, 2: 2, 7: 1, 13: 1}
            b.print_log2_hist("dist", "bytes")
    out = capsys.readouterr().out.splitlines()
    assert "bytes" in out[0] and "distribution" in out[0]
    rows = {ln.split(":")[0].strip(): int(ln.split(":")[1].split("|")[0]) for ln in out[1:]}
    assert rows["2 -> 3"] == 2 and rows["64 -> 127"] == 1 and rows["4096 -> 8191"] == 1
    assert rows["8 -> 15"] == 0 and len(rows) == 13


BAD_POINTER = r"""
#include "kprobekit.bpf.h"

SEC("tracepoint/syscalls/sys_enter_kill")
int bad(struct trace_event_raw_sys_enter *ctx)
{
	int *p = (int *)(long)ctx->args[0];

	return *p + 1;	/* no bpf_probe_read: the verifier says no */
}
"""


@tracepoints
def test_verifier_error_shows_source_line_and_reason():
    with pytest.raises(errors.VerifierError) as exc:
        BPF(text=BAD_POINTER, name="badptr")
    e = exc.value
    first, *tail = str(e).splitlines()
    assert first.startswith("load badptr: program 'bad' rejected by the verifier")
    assert e.program == "bad" and e.source_line == "return *p + 1;\t/* no bpf_probe_read: the verifier says no */"
    assert first.endswith(e.source_line)
    assert any("invalid mem access" in ln for ln in tail) and 1 <= len(tail) <= 3
    if e.location:      # Linux >= 6.4 names the file and line: this file's, where the string has it
        line = line_of(BAD_POINTER) + 8
        assert e.location == f"test_library.py:{line}" and f"at test_library.py:{line}:" in first


def line_of(text):
    """The line of this file where a string constant's first line is."""
    with open(__file__) as f:
        src = f.read()
    return src[:src.index(text)].count("\n") + 1


TYPO_C = r"""
#include "kprobekit.bpf.h"

int f(void) { return undefined_thing; }
"""


@pytest.mark.unit
def test_compile_errors_name_the_python_line_and_leave_no_cache_entry(private_cache):
    before = set(os.listdir(private_cache))
    with pytest.raises(errors.CompileError) as exc:
        compiler.compile(TYPO_C, name="typo2")
    line = line_of(TYPO_C) + 3
    assert f"test_library.py:{line}:22: error: use of undeclared identifier 'undefined_thing'" in str(exc.value)
    assert set(os.listdir(private_cache)) == before, "a failed compile left its directory in the cache"


@pytest.mark.unit
def test_compile_error_shows_clangs_message():
    # a string this file does not hold verbatim (escapes): lines counted in the C text
    with pytest.raises(errors.CompileError) as exc:
        compiler.compile('#include "kprobekit.bpf.h"\nint f(void) { return undefined_thing; }\n', name="typo")
    text = str(exc.value)
    assert text.splitlines()[0] == "compile typo: clang failed"
    assert "typo.bpf.c:2:22: error: use of undeclared identifier 'undefined_thing'" in text


@pytest.mark.unit
def test_missing_clang_says_what_to_do(monkeypatch, private_cache):
    monkeypatch.setenv("KPROBEKIT_CLANG", "/nonexistent/clang")
    before = set(os.listdir(private_cache))
    with pytest.raises(errors.MissingDependency) as exc:
        compiler.compile("int x;  /* never compiled before */ int y;", name="noclang")
    assert "compile noclang: cannot run /nonexistent/clang" in str(exc.value)
    assert set(os.listdir(private_cache)) == before


@pytest.mark.host      # user-space behaviour, clang-heavy: minutes under the VMs' emulation
@tracepoints
def test_missing_names_list_what_exists():
    with BPF(text=KILLS, name="names", load=False) as b:
        with pytest.raises(errors.NotFound, match=r"find target_tid in .rodata: no such variable \(has: filter_pid, kk_perfbuf, target_pid\)"):
            b.rodata["target_tid"] = 1
        b.load()
        with pytest.raises(errors.NotFound, match=r"find map 'count' in names: no such map \(has: counts, "
                                                  r"events, kk_scratch, kk_spare, out\)"):
            b["count"]
        with pytest.raises(errors.NotFound, match=r"find struct 'kill_event' in names: no such type "
                                                  r"\(structs: .*\bkill_evt\b"):
            b.events("out", struct="kill_event")
        with pytest.raises(errors.UsageError, match=r"which record type\? pass struct="):
            b.events("out")
    with pytest.raises(errors.NotFound, match=r"find program 'onkill' in names2: no such program \(has: on_kill\)"):
        BPF(text=KILLS, name="names2", programs=["onkill"])


KPROBE = r"""
#include "kprobekit.bpf.h"

__u64 calls = 0;

SEC("kprobe/vfs_read")
int BPF_KPROBE(on_vfs_read)
{
	__sync_fetch_and_add(&calls, 1);
	return 0;
}
"""


@kernel
def test_missing_hook_is_refused_before_load_with_the_reason():
    if features.have("kprobe"):
        with BPF(text=KPROBE, name="kp") as b:
            os.read(os.open("/proc/self/comm", os.O_RDONLY), 64)
            assert b.bss["calls"] > 0
        return
    with pytest.raises(errors.NotSupported) as exc:
        BPF(text=KPROBE, name="kp")
    assert str(exc.value).startswith(f'load kp: program on_vfs_read needs kprobes (SEC("kprobe/vfs_read")): '
                                     f'{features.probe("kprobe").reason}')
    assert exc.value.feature == "kprobe"


UPROBE = r"""
#include "kprobekit.bpf.h"

const volatile __u32 target_pid = 0;
__u64 calls = 0;

__u64 auto_calls = 0;

SEC("uprobe")
int on_getppid(void *ctx)
{
	if (bpf_get_current_pid_tgid() >> 32 == target_pid)
		__sync_fetch_and_add(&calls, 1);
	return 0;
}

SEC("uprobe/LIBC:getppid")
int on_getppid_auto(void *ctx)
{
	if (bpf_get_current_pid_tgid() >> 32 == target_pid)
		__sync_fetch_and_add(&auto_calls, 1);
	return 0;
}
"""


def libc_path():
    with open("/proc/self/maps") as f:
        for line in f:
            if "/libc.so" in line or "/libc-" in line:
                return line.split()[-1]
    pytest.skip("no libc mapped")


@kernel
def test_uprobe_by_symbol_and_no_leaks():
    libc = libc_path()
    with BPF(text=UPROBE.replace("LIBC", libc), name="up", rodata={"target_pid": os.getpid()}) as b:
        assert [ln.target for ln in b.links] == [f"uprobe/{libc}:getppid"]     # from the section name
        link = b.attach_uprobe("on_getppid", libc, "getppid")
        ids = our_ids(b)
        assert len(ids[0]) == 2 and len(ids[1]) == 2
        assert "getppid" in link.target
        for _ in range(3):
            os.getppid()
        assert b.bss["calls"] == 3 and b.bss["auto_calls"] == 3
    assert_gone(ids)


@pytest.mark.unit
def test_trace_line_formats():
    from kprobekit.tracepipe import parse
    new = parse("     kworker/u8:2-123     [001] d..31  4035.551830: bpf_trace_printk: Hello, World!")
    assert (new.task, new.pid, new.cpu, new.flags, new.ts, new.msg) == \
        ("kworker/u8:2", 123, 1, "d..31", 4035.551830, "Hello, World!")
    # trace_printk before 5.9 ("0:"), a task name with a dash and a space, the record-tgid column
    old = parse("  my-tool x-77 (     70) [000] .... 577529.457750: 0: a: b")
    assert (old.task, old.pid, old.cpu, old.msg) == ("my-tool x", 77, 0, "a: b")
    assert parse("# tracer: nop") is None


@requires("tracefs")
def test_trace_pipe_instance_of_a_dead_process_is_removed():
    from kprobekit import kernel
    from kprobekit.tracepipe import TracePipe
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = f"{kernel.tracefs()}/instances/kprobekit_{dead.pid}_1"
    if not os.path.isdir(f"{kernel.tracefs()}/events/bpf_trace"):
        pytest.skip("no bpf_trace_printk trace event: the global trace_pipe is used")
    os.mkdir(stale)
    with TracePipe() as pipe:
        assert not os.path.exists(stale)
        assert os.path.basename(pipe.instance).startswith(f"kprobekit_{os.getpid()}_")


@pytest.mark.host      # user-space behaviour, clang-heavy: minutes under the VMs' emulation
@tracepoints
def test_wrong_sections_are_named_with_close_matches():
    typo = KILLS.replace('SEC("tracepoint/syscalls/sys_enter_kill")', 'SEC("tracepont/syscalls/sys_enter_kill")')
    with pytest.raises(errors.UsageError, match=r'^load typo: program on_kill has an unknown section '
                                                r'SEC\("tracepont/syscalls/sys_enter_kill"\) \(did you mean tracepoint/'):
        BPF(text=typo, name="typo")
    nope = KILLS.replace("sys_enter_kill", "sys_enter_kil")
    with pytest.raises(errors.NotFound, match=r"^attach on_kill of nope to tracepoint syscalls:sys_enter_kil: "
                                              r"no such tracepoint \(did you mean sys_enter_kill"):
        BPF(text=nope, name="nope")


HELPERS = r"""
#include "kprobekit.bpf.h"

const volatile __u32 target_pid = 0;
const volatile int target_fd = -1;

struct stats {
	__u64 count;
	__u64 sum;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 128);
	__type(key, __u32);
	__type(value, __u64);
} hist SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 128);
	__type(key, __u32);
	__type(value, struct stats);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} small SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_write")
int on_write(struct trace_event_raw_sys_enter *ctx)
{
	struct stats zero = {}, *st;
	__u64 count = ctx->args[2];
	__u32 bucket = kk_log2l(count);

	if (bpf_get_current_pid_tgid() >> 32 != target_pid || (int)ctx->args[0] != target_fd)
		return 0;
	kk_increment(&hist, &bucket, 1);
	kk_increment(&small, &bucket, 3);	/* room for the first bucket only: the rest is dropped */
	st = kk_lookup_or_init(&stats, &bucket, &zero);
	if (st) {
		__sync_fetch_and_add(&st->count, 1);
		__sync_fetch_and_add(&st->sum, count);
	}
	return 0;
}
"""


@tracepoints
def test_header_helpers_log2_and_lookup_or_init():
    from kprobekit.histogram import bucket_of
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    values = [5, 0, 1, 2, 3, 4, 7, 8, 255, 256, 2**32 - 1, 2**32, 2**40 + 5, 2**63, 2**64 - 1, 3]
    fd = os.open(os.devnull, os.O_WRONLY)
    try:
        with BPF(text=HELPERS, name="helpers", rodata={"target_pid": os.getpid(), "target_fd": fd}) as b:
            for v in values:
                # the tracepoint sees the count as given, before write() checks it (no buffer: /dev/null)
                libc.syscall(1, fd, None, ctypes.c_uint64(v))
            expected = {}
            for v in values:
                expected[bucket_of(v)] = expected.get(bucket_of(v), 0) + 1
            assert dict(b["hist"].items()) == expected
            assert expected[0] == 1 and expected[64] == 2 and expected[33] == 1
            assert dict(b["small"].items()) == {3: 3 * expected[3]}      # 5, 4 and 7: the first bucket seen
            sums = {}
            for v in values:
                sums[bucket_of(v)] = sums.get(bucket_of(v), 0) + v
            assert {k: (s.count, s.sum) for k, s in b["stats"].items()} == \
                {k: (n, sums[k] & (2**64 - 1)) for k, n in expected.items()}
    finally:
        os.close(fd)


CHARS = r"""
#include "kprobekit.bpf.h"

const volatile char target_comm[TASK_COMM_LEN] = {};
char last_comm[TASK_COMM_LEN] = {};

struct task_key {
	__u32 pid;
	char comm[TASK_COMM_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, char[TASK_COMM_LEN]);
	__type(value, __u64);
} by_comm SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, struct task_key);
	__type(value, char[TASK_COMM_LEN]);
} by_task SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_kill")
int on_kill(struct trace_event_raw_sys_enter *ctx)
{
	struct task_key k = { .pid = bpf_get_current_pid_tgid() >> 32 };

	bpf_get_current_comm(k.comm, sizeof(k.comm));
	for (int i = 0; i < TASK_COMM_LEN; i++) {
		if (k.comm[i] != target_comm[i])
			return 0;
		if (!k.comm[i])
			break;
	}
	kk_increment(&by_comm, k.comm, 1);
	bpf_map_update_elem(&by_task, &k, k.comm, BPF_ANY);
	__builtin_memcpy(last_comm, k.comm, sizeof(last_comm));
	return 0;
}
"""


@pytest.mark.host      # user-space behaviour, clang-heavy: minutes under the VMs' emulation
@tracepoints
def test_char_arrays_are_str_in_keys_values_structs_and_globals():
    pid = os.getpid()
    with BPF(text=CHARS, name="chars", rodata={"target_comm": MY_COMM}) as b:
        assert b.rodata["target_comm"] == MY_COMM
        kill_self(0, 0)
        by_comm, by_task = b["by_comm"], b["by_task"]
        assert dict(by_comm.items()) == {MY_COMM: 2}
        assert by_comm[MY_COMM] == 2 and by_comm[MY_COMM.encode()] == 2 and "nobody" not in by_comm
        by_comm["other"] = 7                     # a str key, NUL-padded
        by_comm[b"x" * 16] = 1                   # a full-length one needs no NUL
        assert by_comm[b"other"] == 7 and sorted(by_comm.keys()) == sorted([MY_COMM, "other", "x" * 16])
        with pytest.raises(errors.UsageError, match=r"is 17 bytes, longer than char\[16\]"):
            by_comm["y" * 17] = 1
        (key, value), = by_task.items()
        assert (key.pid, key.comm, value) == (pid, MY_COMM, MY_COMM)
        assert by_task[(pid, MY_COMM)] == MY_COMM and by_task[key] == MY_COMM
        by_task[(1, "init")] = "systemd"
        assert by_task[(1, b"init")] == "systemd"
        with pytest.raises(errors.UsageError, match=r"pack struct task_key: 1 values given, 2 members"):
            by_task[(1,)]
        assert b.bss["last_comm"] == MY_COMM
        b.bss["last_comm"] = "reset"
        assert b.bss["last_comm"] == "reset"


def _without_capabilities():
    """In the child before exec: an empty bounding set, so even uid 0 execs with no capabilities."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in range(64):
        libc.prctl(24, cap, 0, 0, 0)      # PR_CAPBSET_DROP; EINVAL past the last capability


@pytest.mark.host      # user-space behaviour, clang-heavy: minutes under the VMs' emulation
@kernel
@pytest.mark.parametrize("cache", ["unwritable", "writable"])
def test_privileges_are_checked_before_compiling(tmp_path, cache):
    d = "/proc/kprobekit-cache" if cache == "unwritable" else str(tmp_path / "cache")
    code = ("import sys\nfrom kprobekit import BPF, compiler, errors\n"
            "print(open('/proc/self/status').read().split('CapEff:')[1].split()[0])\n"
            "try:\n    BPF(text=sys.argv[1], name='noprivs')\n"
            "except errors.KprobekitError as e:\n    print(type(e).__name__, e, compiler.compiles)\n")
    p = subprocess.run([sys.executable, "-c", code, KILLS], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "KPROBEKIT_CACHE": d}, preexec_fn=_without_capabilities)
    caps, line = p.stdout.splitlines()
    assert int(caps, 16) == 0, p.stderr
    assert line == f"PermissionDenied load noprivs: missing privileges — {errors.ROOT_HINT} 0"
    if cache == "writable":
        assert not os.path.exists(d), "the cache was used before privileges were checked"


# One object for every misspelled target: "?" sections load only when asked for (one compile).
TYPOS = r"""
#include "kprobekit.bpf.h"

SEC("?tp_btf/sched_proces_exec")
int BPF_PROG(tp_btf_typo) { return 0; }

SEC("?raw_tp/sched_proces_exec")
int raw_tp_typo(void *ctx) { return 0; }

SEC("?fentry/vfs_raed")
int BPF_PROG(fentry_typo) { return 0; }

SEC("?fexit/vfs_raed")
int BPF_PROG(fexit_typo) { return 0; }

SEC("?kprobe/vfs_raed")
int kprobe_typo(void *ctx) { return 0; }

SEC("?ksyscall/getppidd")
int ksyscall_typo(void *ctx) { return 0; }

SEC("?uprobe/LIBC:getppidd")
int uprobe_typo(void *ctx) { return 0; }

SEC("?uprobe//no/such/libc.so:getppid")
int uprobe_file_typo(void *ctx) { return 0; }

SEC("?uprobe")
int manual_uprobe(void *ctx) { return 0; }

SEC("?raw_tp")
int manual_raw_tp(void *ctx) { return 0; }
"""


@pytest.mark.parametrize("prog,message", [
    pytest.param("tp_btf_typo", r"tp_btf sched_proces_exec: no such tracepoint \(did you mean "
                 r"sched_process_exec\b", marks=requires("tp_btf"), id="tp_btf"),
    pytest.param("raw_tp_typo", r"raw_tp sched_proces_exec: no such tracepoint \(did you mean "
                 r"sched_process_exec\b", marks=requires("raw_tp"), id="raw_tp"),
    pytest.param("fentry_typo", r"fentry vfs_raed: no such kernel function \(did you mean vfs_read\b",
                 marks=requires("fentry"), id="fentry"),
    pytest.param("fexit_typo", r"fexit vfs_raed: no such kernel function \(did you mean vfs_read\b",
                 marks=requires("fexit"), id="fexit"),
    pytest.param("kprobe_typo", r"kprobe vfs_raed: no such kernel function \(did you mean vfs_read\b",
                 marks=requires("kprobe"), id="kprobe"),
    pytest.param("ksyscall_typo", r"ksyscall getppidd: no such syscall \(did you mean getppid\b",
                 marks=requires("kprobe"), id="ksyscall"),
    pytest.param("uprobe_typo", r"uprobe LIBC:getppidd: no function getppidd in LIBC \(did you mean "
                 r"getppid\b.* — list them: nm -D --defined-only LIBC$", marks=kernel, id="uprobe"),
    pytest.param("uprobe_file_typo", r"uprobe /no/such/libc.so:getppid: no such file /no/such/libc.so — ",
                 marks=kernel, id="uprobe-file"),
])
def test_misspelled_hook_targets_get_close_matches(prog, message):
    libc = libc_path()
    with pytest.raises(errors.NotFound) as exc:
        BPF(text=TYPOS.replace("LIBC", libc), name="typos", programs=[prog])
    expected = f"^attach {prog} of typos to " + message.replace("LIBC", re.escape(libc))
    assert re.match(expected, str(exc.value)), str(exc.value)
    assert exc.value.log, "libbpf's own lines stay in e.log"


@kernel
def test_misspelled_targets_of_explicit_attach_get_close_matches():
    libc = libc_path()
    with BPF(text=TYPOS.replace("LIBC", libc), name="typos", programs=["manual_uprobe", "manual_raw_tp"]) as b:
        with pytest.raises(errors.NotFound, match=rf"^attach manual_uprobe of typos to uprobe {re.escape(libc)}:"
                                                  r"getppidd: no function getppidd in .* \(did you mean getppid\b"):
            b.attach_uprobe("manual_uprobe", libc, "getppidd")
        if features.have("raw_tp"):
            with pytest.raises(errors.NotFound, match=r"^attach manual_raw_tp of typos to raw_tp sched_proces_exec: "
                                                      r"no such tracepoint \(did you mean sched_process_exec\b"):
                b.attach_raw_tracepoint("manual_raw_tp", "sched_proces_exec")
        assert b.links == []


@pytest.mark.host      # user-space behaviour, clang-heavy: minutes under the VMs' emulation
@tracepoints
def test_take_reads_and_resets_without_losing_counts(capsys):
    import threading
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(os.devnull, os.O_WRONLY)
    try:
        with BPF(text=HELPERS, name="helpers", rodata={"target_pid": os.getpid(), "target_fd": fd}) as b:
            hist, stats = b["hist"], b["stats"]
            for v in (1, 2, 3):
                libc.syscall(1, fd, None, ctypes.c_uint64(v))
            assert hist.take() == {1: 1, 2: 2} == dict(hist.items())
            assert hist.take() == {}
            libc.syscall(1, fd, None, ctypes.c_uint64(3))
            assert hist.take() == {2: 1} and dict(hist.items()) == {1: 1, 2: 3}
            assert {k: tuple(s) for k, s in stats.take().items()} == {1: (1, 1), 2: (3, 8)}
            libc.syscall(1, fd, None, ctypes.c_uint64(2))
            taken = stats.take()
            assert list(taken) == [2] and (taken[2].count, taken[2].sum) == (1, 2)
            libc.syscall(1, fd, None, ctypes.c_uint64(1))
            assert b.histogram("hist", take=True) == {1: 1, 2: 1} and b.histogram("hist") == {1: 2, 2: 4}
            b.print_log2_hist("hist", "bytes", take=True)
            assert capsys.readouterr().out == ""         # nothing new: nothing printed
            # a writer racing the reader: every write is in exactly one take()
            n, total, done = 1000, 0, threading.Event()

            def writer():
                for _ in range(n):
                    libc.syscall(1, fd, None, ctypes.c_uint64(4))
                done.set()
            t = threading.Thread(target=writer)
            t.start()
            while not done.is_set():
                total += hist.take().get(3, 0)
            t.join()
            total += hist.take().get(3, 0)
            assert total == n
    finally:
        os.close(fd)
    with BPF(text=CHARS, name="chars", rodata={"target_comm": MY_COMM}) as b:
        with pytest.raises(errors.UsageError, match=r"take from map by_task: its values are not integers"):
            b["by_task"].take()


# docs/library.md, "Typed arguments: tp_btf and fentry"
EXECS = r"""
#include "kprobekit.bpf.h"

struct event {
	__u32 pid;
	__u32 ppid;
	char comm[TASK_COMM_LEN];
	char filename[128];
};
KK_EVENTS(struct event)

SEC("tp_btf/sched_process_exec")
int BPF_PROG(on_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct event *e = kk_reserve();

	if (!e)
		return 0;
	e->pid = p->tgid;			/* typed pointers: plain C, checked by the verifier */
	e->ppid = p->real_parent->tgid;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), bprm->filename);
	kk_submit(ctx, e);
	return 0;
}
"""


@requires("tp_btf")
def test_tp_btf_program_of_the_docs():
    with BPF(text=EXECS, name="execs") as b:
        child = subprocess.run(["/bin/sh", "-c", "echo $$; exec /bin/true"], capture_output=True, text=True)
        pid, got, deadline = int(child.stdout), [], time.monotonic() + 20
        while len(got) < 2 and time.monotonic() < deadline:
            got += [e for e in b.events().poll(0.5) if e.pid == pid]
    assert [(e.ppid, e.comm, e.filename) for e in got] == [(os.getpid(), "sh", "/bin/sh"),
                                                            (os.getpid(), "true", "/bin/true")]
