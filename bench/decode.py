"""How many events per second Python can decode, and what ctypes vs cffi cost.

live:   bench/bpf/events.bpf.o turns every getppid() of bench/build/storm
        into a ring buffer record (tcpconnect's record layout); storm makes
        them as fast as it can on the other core.  Each reader runs for a few
        seconds and we count records decoded per second of this thread's CPU
        time (time.thread_time), which the other load on the machine barely
        affects.  Readers:
          batch       kprobekit.events.RingBuffer.poll(): read_raw() + record
                      construction, as the CLI runner uses it
          ctypes cb   libbpf ring_buffer__new/__poll with a ctypes callback per
                      record (string_at + unpack + record)
          cffi cb     the same through cffi (ABI mode) and ffi.buffer
micro:  a synthetic ring buffer of N committed records in memory, decoded by
        read_raw()'s fast path vs struct.unpack_from per record vs
        ctypes.Structure.from_buffer_copy per record: the decode ceiling.
ffi:    import/binding time and per-call/per-callback overhead of ctypes vs cffi.
"""

import argparse
import ctypes
import os
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from kprobekit import events  # noqa: E402
from kprobekit._libbpf import lib, ring_sample_fn_t  # noqa: E402
from kprobekit.object import Object  # noqa: E402

DEFAULT_RING = 256 << 10     # what the tools use (kprobekit.bpf.h)
BIG_RING = 8 << 20


# --- live: a real BPF program feeding a real ring buffer ---

def _storm(seconds):
    return subprocess.Popen([common.STORM, "getppid", str(10**10), str(seconds)],
                            stdout=subprocess.PIPE, text=True)


def _batch_reader(obj, layout):
    stream = events.open_stream(obj, layout)
    return stream.poll, stream.close


def _batch_reader_nogc(obj, layout):
    """As _batch_reader, with the cyclic GC off while a batch is decoded (a proposal, not the
    library's behaviour): records are GC-tracked tuples, and a batch of thousands of them
    triggers collections that traverse every record still alive."""
    import gc
    stream = events.open_stream(obj, layout)

    def poll(timeout_ms):
        gc.disable()
        try:
            return stream.poll(timeout_ms)
        finally:
            gc.enable()
    return poll, stream.close


def _ctypes_reader(obj, layout):
    size, unpack, new = layout.size, layout.struct.unpack, layout.record
    out = []
    append = out.append
    string_at = ctypes.string_at

    @ring_sample_fn_t
    def on_sample(ctx, data, n):
        append(tuple.__new__(new, unpack(string_at(data, size))))
        return 0

    rb = lib.ring_buffer__new(obj.map("events").fd, on_sample, None, None)
    assert rb, "ring_buffer__new failed"

    def poll(timeout_ms):
        lib.ring_buffer__poll(rb, timeout_ms)
        recs = out[:]
        del out[:]
        return recs
    return poll, lambda: (lib.ring_buffer__free(rb), on_sample)


def _cffi_reader(obj, layout):
    from cffi import FFI
    ffi = FFI()
    ffi.cdef("""
        typedef int (*ring_buffer_sample_fn)(void *ctx, void *data, size_t size);
        struct ring_buffer;
        struct ring_buffer *ring_buffer__new(int map_fd, ring_buffer_sample_fn sample_cb, void *ctx,
                                             const void *opts);
        int ring_buffer__poll(struct ring_buffer *rb, int timeout_ms);
        void ring_buffer__free(struct ring_buffer *rb);
    """)
    so = ffi.dlopen("libbpf.so.1")
    size, unpack_from, new = layout.size, layout.struct.unpack_from, layout.record
    out = []
    append = out.append
    buffer = ffi.buffer

    @ffi.callback("ring_buffer_sample_fn")
    def on_sample(ctx, data, n):
        append(tuple.__new__(new, unpack_from(buffer(data, size))))
        return 0

    rb = so.ring_buffer__new(obj.map("events").fd, on_sample, ffi.NULL, ffi.NULL)
    assert rb != ffi.NULL, "ring_buffer__new failed"

    def poll(timeout_ms):
        so.ring_buffer__poll(rb, timeout_ms)
        recs = out[:]
        del out[:]
        return recs
    return poll, lambda: (so.ring_buffer__free(rb), on_sample)


READERS = {"batch (kprobekit RingBuffer)": _batch_reader,
           "batch, GC off during poll": _batch_reader_nogc,
           "ctypes callback per record": _ctypes_reader,
           "cffi callback per record": _cffi_reader}


def live(seconds):
    common.need_build()
    out = {}
    for ring_bytes, readers in ((DEFAULT_RING, READERS),
                                (BIG_RING, {k: READERS[k] for k in list(READERS)[:2]})):
        obj = Object.open(common.EVENTS_OBJ)
        try:
            events.prepare(obj, use_perfbuf=False, ring_bytes=ring_bytes)
            obj.load()
            obj.attach()
            layout = events.event_layout(obj)
            for name, make in readers.items():
                out[f"{name}, {ring_bytes >> 10} KiB ring"] = _live_one(obj, layout, make, seconds)
        finally:
            obj.close()
    return out


def _live_one(obj, layout, make, seconds):
    poll, close = make(obj, layout)
    poll(0)                     # what an earlier reader left behind
    lost0 = obj.bss["kk_lost"]
    storm = _storm(seconds)
    n = batches = 0
    cpu0, wall0 = time.thread_time(), time.monotonic()
    while storm.poll() is None:
        got = len(poll(100))
        n += got
        batches += bool(got)
    n += len(poll(0))
    cpu, wall = time.thread_time() - cpu0, time.monotonic() - wall0
    made = int(storm.stdout.read().split()[0])
    close()
    return {"records": n, "cpu_s": round(cpu, 3), "wall_s": round(wall, 3),
            "per_cpu_s": round(n / cpu) if cpu else None,
            "ns_per_record": round(cpu / n * 1e9) if n else None,
            "records_per_poll": round(n / batches) if batches else None,
            "generated": made, "lost_in_kernel": obj.bss["kk_lost"] - lost0}


# --- micro: the decode ceiling, no kernel involved ---

def _layout():
    obj = Object.open("tcpconnect")
    try:
        return events.event_layout(obj)
    finally:
        obj.close()


def _fake_ring(layout, n):
    """A RingBuffer over bytearrays holding n committed records: read_raw() runs unchanged."""
    import mmap
    rb = events.RingBuffer.__new__(events.RingBuffer)
    stride = 8 + ((layout.size + 7) & ~7)
    size = 1 << (n * stride - 1).bit_length()
    page = mmap.PAGESIZE
    rb.layout, rb._lost_counter = layout, None
    ring = events._Ring.__new__(events._Ring)
    ring.size, ring.mask, ring.page = size, size - 1, page
    rb._rings = [ring]
    rb.rec_size, rb._stride = layout.size, stride
    rb._run = struct.Struct("=8x" + layout.format.lstrip("=") + f"{stride - 8 - layout.size}x")
    from functools import partial
    rb._new = partial(tuple.__new__, layout.record)
    data = bytearray(page + 2 * size)
    rec = layout.struct.pack(*[_sample_value(f) for f in layout.fields])
    for i in range(n):
        off = page + i * stride
        struct.pack_into("=I", data, off, layout.size)
        data[off + 8:off + 8 + layout.size] = rec
    struct.pack_into("=Q", data, 0, n * stride)
    ring.prod, ring.data, ring.cons = data, memoryview(data), bytearray(8)
    return rb, data, stride


def _sample_value(field):
    """A plausible value for one field of a tcpconnect-like record: 127.0.0.1, IPv4, 'storm'."""
    if field.c_type == "kk_addr_t":
        return bytes([127, 0, 0, 1]) + bytes(12)
    if field.name == "ip":
        return 4
    if field.name == "comm":
        return b"storm"
    if field.fmt.endswith("s"):
        return bytes(field.size)
    return {1: 42, 2: 4242}.get(field.size, 424242)


def _ctypes_struct(layout):
    fields = [(f.name, ctypes.c_char * f.size) if f.fmt.endswith("s") else
              (f.name, {"B": ctypes.c_uint8, "H": ctypes.c_uint16, "I": ctypes.c_uint32,
                        "Q": ctypes.c_uint64, "b": ctypes.c_int8, "h": ctypes.c_int16,
                        "i": ctypes.c_int32, "q": ctypes.c_int64}[f.fmt])
              for f in layout.fields]
    return type("event", (ctypes.Structure,), {"_fields_": fields})


def micro(n, repeat=7):
    layout = _layout()
    rb, data, stride = _fake_ring(layout, n)
    view = memoryview(data)
    page, size, unpack_from, new = rb._rings[0].page, layout.size, layout.struct.unpack_from, layout.record
    cstruct = _ctypes_struct(layout)
    assert ctypes.sizeof(cstruct) >= layout.size

    def fast_path():
        rb._rings[0].cons = bytearray(8)
        return list(map(rb._new, rb.read_raw()))

    def per_record_unpack():
        out, off, end = [], page, page + n * stride
        u32 = struct.Struct("=I").unpack_from
        while off < end:
            if u32(view, off)[0] == size:
                out.append(tuple.__new__(new, unpack_from(view, off + 8)))
            off += stride
        return out

    def per_record_ctypes():
        out, off, end = [], page, page + n * stride
        u32 = struct.Struct("=I").unpack_from
        copy = cstruct.from_buffer_copy
        while off < end:
            if u32(view, off)[0] == size:
                out.append(copy(view, off + 8))
            off += stride
        return out

    def iter_unpack_only():
        return list(rb._run.iter_unpack(view[page:page + n * stride]))

    import gc
    out = {}
    for name, fn in (("read_raw fast path + records (as poll)", fast_path),
                     ("struct.unpack_from per record + records", per_record_unpack),
                     ("ctypes from_buffer_copy per record", per_record_ctypes),
                     ("struct.iter_unpack alone (ceiling)", iter_unpack_only)):
        row = {"records": n}
        for gc_on in (True, False):
            best = None
            for _ in range(repeat):
                gc.collect()
                if not gc_on:
                    gc.disable()
                t = time.thread_time()
                got = fn()
                t = time.thread_time() - t
                gc.enable()
                assert len(got) == n, (name, len(got))
                del got
                best = t if best is None else min(best, t)
            key = "" if gc_on else "_gc_off"
            row["per_cpu_s" + key] = round(n / best)
            row["ns_per_record" + key] = round(best / n * 1e9)
        out[name] = row
    return out


# --- ffi: ctypes vs cffi themselves ---

def _cdef_from_protos():
    """_libbpf's prototypes as C declarations, so cffi binds exactly what ctypes binds."""
    from kprobekit import _libbpf
    c = ctypes
    names = {c.c_int: "int", c.c_uint: "unsigned int", c.c_uint32: "uint32_t", c.c_uint64: "uint64_t",
             c.c_long: "long", c.c_size_t: "size_t", c.c_bool: "_Bool", c.c_char_p: "char *",
             c.c_void_p: "void *", None: "void"}
    fn_types = {_libbpf.print_fn_t: "void *", _libbpf.perf_sample_fn_t: "void *",
                _libbpf.perf_lost_fn_t: "void *", _libbpf.ring_sample_fn_t: "void *"}

    def cname(t):
        if t in names:
            return names[t]
        if t in fn_types:
            return fn_types[t]
        return "void *"         # POINTER(...) types
    return "\n".join(f"{cname(r)} {n}({', '.join(cname(a) for a in args) or 'void'});"
                     for n, r, args in _libbpf._PROTOS)


_IMPORT_SNIPPETS = {
    "import ctypes": "import ctypes",
    "import cffi; FFI()": "import cffi; cffi.FFI()",
    "ctypes: bind libbpf (kprobekit._libbpf)": "import kprobekit._libbpf",
    "cffi ABI mode: cdef + dlopen libbpf (same prototypes)":
        "import cffi, bench_cdef; f = cffi.FFI(); f.cdef(bench_cdef.CDEF); f.dlopen('libbpf.so.1')",
}


def import_times(runs=9):
    """ms added to `python -c pass` by each snippet, median of fresh interpreters."""
    cdef_dir = os.path.join(common.BUILD, "cdef")
    os.makedirs(cdef_dir, exist_ok=True)
    with open(os.path.join(cdef_dir, "bench_cdef.py"), "w") as f:
        f.write(f"CDEF = {_cdef_from_protos()!r}\n")
    env = dict(common.CHILD_ENV, PYTHONPATH=cdef_dir)
    out = {}
    for label, code in _IMPORT_SNIPPETS.items():
        ts = []
        for _ in range(runs):
            p = subprocess.run([common.PYTHON, "-c",
                                f"import time; t = time.perf_counter(); {code}; print(time.perf_counter() - t)"],
                               capture_output=True, text=True, env=env, check=True)
            ts.append(float(p.stdout))
        out[label] = round(common.median(ts) * 1000, 2)
    return out


def call_costs(n=300_000):
    """ns per call out to C, and per callback from C (qsort's comparator), ctypes vs cffi."""
    from cffi import FFI
    ffi = FFI()
    ffi.cdef("int abs(int); void qsort(void *, size_t, size_t, int (*)(const void *, const void *));")
    cl = ffi.dlopen(None)
    libc = ctypes.CDLL(None)
    libc.abs.argtypes, libc.abs.restype = [ctypes.c_int], ctypes.c_int

    def per_call(fn):
        t = time.thread_time()
        for i in range(n):
            fn(-5)
        return (time.thread_time() - t) / n * 1e9

    out = {"call out: ctypes (argtypes set)": per_call(libc.abs),
           "call out: cffi ABI mode": per_call(cl.abs)}
    m = 20_000
    import random
    values = list(range(m))
    random.Random(1).shuffle(values)

    calls = [0]
    cmp_t = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int))

    @cmp_t
    def cmp_ctypes(a, b):
        calls[0] += 1
        return a[0] - b[0]
    arr = (ctypes.c_int * m)(*values)
    t = time.thread_time()
    libc.qsort(arr, m, 4, cmp_ctypes)
    out["callback: ctypes CFUNCTYPE"] = (time.thread_time() - t) / calls[0] * 1e9

    calls[0] = 0

    @ffi.callback("int(const void *, const void *)")
    def cmp_cffi(a, b):
        calls[0] += 1
        return ffi.cast("int *", a)[0] - ffi.cast("int *", b)[0]
    carr = ffi.new("int[]", values)
    t = time.thread_time()
    cl.qsort(carr, m, 4, cmp_cffi)
    out["callback: cffi ffi.callback"] = (time.thread_time() - t) / calls[0] * 1e9
    return {k: round(v) for k, v in out.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="per live reader")
    ap.add_argument("--records", type=int, nargs="+", default=[2978, 100_000],
                    help="micro benchmark buffer sizes (2978: a full 256 KiB ring)")
    args = ap.parse_args(argv)
    load_before = common.load_avg()
    res = {"live": live(args.seconds), "micro": {n: micro(n) for n in args.records},
           "import_ms": import_times(), "call_ns": call_costs()}
    res["load_avg"] = [load_before, common.load_avg()]
    common.print_table("live ring buffer, records decoded per second of reader CPU time",
                       ["reader", "records", "CPU s", "records/CPU-s", "ns/record", "records/poll",
                        "lost in kernel"],
                       [[k, v["records"], v["cpu_s"], f"{v['per_cpu_s']:,}", v["ns_per_record"],
                         v["records_per_poll"], v["lost_in_kernel"]] for k, v in res["live"].items()])
    common.print_table("synthetic buffer of N records, best of 7 (no kernel)",
                       ["decoder", "N", "records/CPU-s", "ns/record", "GC off: records/CPU-s", "ns/record"],
                       [[k, n, f"{v['per_cpu_s']:,}", v["ns_per_record"], f"{v['per_cpu_s_gc_off']:,}",
                         v["ns_per_record_gc_off"]] for n, m in res["micro"].items() for k, v in m.items()])
    common.print_table("ctypes vs cffi: time added to interpreter start (median of 9)", ["what", "ms"],
                       list(res["import_ms"].items()))
    common.print_table("ctypes vs cffi: per call", ["what", "ns"], list(res["call_ns"].items()))
    print(f"\nload average before/after: {load_before[0]:.2f} / {res['load_avg'][1][0]:.2f}")
    return res


if __name__ == "__main__":
    main()
