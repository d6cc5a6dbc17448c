"""Event streams from a BPF ring buffer or perf buffer, one interface for both.

`poll(timeout_ms)` returns a list of decoded records (see btf.Layout);
`lost` counts records that never reached user space.

The ring buffer is read in batches straight from its memory mapping rather
than through a ctypes callback per record: libbpf 1.1 has no batch API, and
a callback per record tops out near 1 M records/s here, while unpacking a
run of equal-size records with one struct.iter_unpack goes several times
faster (bench/decode.py).  The perf buffer, for kernels without ring
buffers, goes through libbpf's perf_buffer.
"""

import ctypes
import gc
import mmap
import os
import select
import struct
import time

from . import _libbpf, early
from ._libbpf import MAP_PERF_EVENT_ARRAY, MAP_RINGBUF, lib
from .errors import NotFound

# include/uapi/linux/bpf.h: ring buffer record header flags
_BUSY = 1 << 31
_DISCARD = 1 << 30
_HDR = 8
_u32 = struct.Struct("=I")
_u64 = struct.Struct("=Q")


class _Ring:
    """One BPF ring buffer's memory, mapped as kernel/bpf/ringbuf.c lays it out: a writable consumer
    page, then the producer page and the data pages, the data mapped twice in a row so that a record
    that wraps is still contiguous."""

    def __init__(self, ring_map):
        self.fd = ring_map.fd
        self.size = ring_map.max_entries
        self.mask = self.size - 1
        self.page = page = mmap.PAGESIZE
        self.cons = mmap.mmap(self.fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self.prod = mmap.mmap(self.fd, page + 2 * self.size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        self.data = memoryview(self.prod)

    def pending(self):
        return _u64.unpack_from(self.prod, 0)[0] != _u64.unpack_from(self.cons, 0)[0]

    def read(self, out, size, stride, run, unpack_one, unpack_joined):
        """Appends everything committed so far to out, as plain tuples in field order."""
        cons = _u64.unpack_from(self.cons, 0)[0]
        prod = _u64.unpack_from(self.prod, 0)[0]
        data, page, mask = self.data, self.page, self.mask
        # The second mapping of the data is never read: each of its pages read once would stay in
        # this process's RSS, which would creep by up to the ring's size over a long run.
        end = page + self.size
        while cons < prod:
            off = page + (cons & mask)
            n = min((prod - cons) // stride, (end - off) // stride)
            if n:
                # Fast path: a run of committed records of the event's size.
                heads = data[off:off + n * stride].cast("I")[::stride // 4].tolist()
                if heads.count(size) != n:
                    n = next(i for i, h in enumerate(heads) if h != size)
                if n:
                    out.extend(run.iter_unpack(data[off:off + n * stride]))
                    cons += n * stride
                    continue
            head = _u32.unpack_from(data, off)[0]
            if head & _BUSY:
                break           # reserved, not yet committed: records after it wait
            length = head & ~(_BUSY | _DISCARD)
            if not head & _DISCARD and length >= size:
                start = off + _HDR
                if start + size <= end:
                    out.append(unpack_one(data, start))
                else:           # a record that wraps: its two parts from the first mapping
                    first = data[start:end].tobytes() if start < end else b""
                    rest = size - len(first)
                    from_ = page + max(0, start - end)
                    out.append(unpack_joined(first + data[from_:from_ + rest].tobytes()))
            cons += (_HDR + length + 7) & ~7
        _u64.pack_into(self.cons, 0, cons)

    def close(self):
        self.data.release()
        self.prod.close()
        self.cons.close()


class RingBuffer:
    """The events of a ring buffer map, and of its spare (kk_spare in kprobekit.bpf.h: a second ring,
    with a lock of its own, for the rare record the first one's lock keeps refusing)."""

    # After a wake-up, the reader lets a burst gather this long before reading it.  The kernel
    # wakes the reader whenever it has caught up, so under a storm it would wake for nearly every
    # record, and each wake-up (two context switches, a poll, a small write downstream) costs more
    # than formatting the record; the wait bounds wake-ups to about a thousand a second, at the
    # price of a millisecond of latency.  0 reads at once.
    gather_s = 0.001

    def __init__(self, events_map, layout, lost_counter=None, spare_map=None):
        self.layout = layout
        self._lost_counter = lost_counter
        self._rings = [_Ring(events_map)]
        if spare_map is not None and spare_map.type == MAP_RINGBUF:
            self._rings.append(_Ring(spare_map))
        self._epoll = select.epoll()
        for ring in self._rings:
            self._epoll.register(ring.fd, select.EPOLLIN)
        self.rec_size = layout.size
        self._stride = _HDR + ((layout.size + 7) & ~7)
        # one record with its header, as struct.iter_unpack sees a run of them
        self._run = struct.Struct("=8x" + layout.format.lstrip("=") + f"{self._stride - _HDR - layout.size}x")
        self._new = layout.record       # a tuple subclass: record(values)

    def fileno(self):
        return self._epoll.fileno()

    @property
    def lost(self):
        return self._lost_counter() if self._lost_counter else 0

    def _pending(self):
        return any(ring.pending() for ring in self._rings)

    def poll(self, timeout_ms=-1):
        if not self._pending():
            try:
                woken = self._epoll.poll(timeout_ms / 1000 if timeout_ms >= 0 else -1)
            except InterruptedError:
                woken = False
            if woken and self.gather_s:
                time.sleep(self.gather_s)
        # Millions of fresh tuples would trigger generation-0 collections that
        # find nothing to free; decoding a batch without them is ~1.5x faster.
        gc_on = gc.isenabled()
        gc.disable()
        try:
            return list(map(self._new, self.read_raw()))
        finally:
            if gc_on:
                gc.enable()

    def read_raw(self):
        """Everything committed so far, as plain tuples in field order."""
        out = []
        for ring in self._rings:
            ring.read(out, self.rec_size, self._stride, self._run, self.layout.struct.unpack_from,
                      self.layout.struct.unpack)
        return out

    def close(self):
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None
            for ring in self._rings:
                ring.close()


class PerfBuffer:
    def __init__(self, events_map, layout, pages=64, lost_counter=None):
        self.layout = layout
        self._lost_counter = lost_counter     # the BPF side's count (kk_submit), when it keeps one
        self._pending = []
        self._lost = 0
        unpack = layout.struct.unpack_from
        size = layout.size
        pending = self._pending

        def on_sample(ctx, cpu, data, n):
            if n >= size:
                pending.append(unpack(ctypes.string_at(data, size)))

        def on_lost(ctx, cpu, count):
            self._lost += count

        # keep the callbacks alive as long as libbpf may call them
        self._cbs = (_libbpf.perf_sample_fn_t(on_sample), _libbpf.perf_lost_fn_t(on_lost))
        self._ptr = _libbpf.check_ptr(
            lib.perf_buffer__new(events_map.fd, pages, self._cbs[0], self._cbs[1], None, None),
            "open perf buffer")
        self._new = layout.record

    def fileno(self):
        return lib.perf_buffer__epoll_fd(self._ptr)

    @property
    def lost(self):
        # not both: they count the same drops, and the kernel's count comes late or never
        return self._lost_counter() if self._lost_counter else self._lost

    def read_raw(self):
        lib.perf_buffer__consume(self._ptr)
        out = self._pending[:]
        del self._pending[:]
        return out

    def poll(self, timeout_ms=-1):
        if not self._pending:
            lib.perf_buffer__poll(self._ptr, timeout_ms)
        return list(map(self._new, self.read_raw()))

    def close(self):
        if self._ptr:
            lib.perf_buffer__free(self._ptr)
            self._ptr = None


# The tools' ring buffer: 8 MiB, about 80,000 events of ~100 bytes — a burst such as 10,000
# loopback connects (8 state changes each) fits whole while the reader prints at its own pace.
# Memory is cheap next to a lost event; the pages are the kernel's, taken at load.
TOOL_RING_BYTES = 8 << 20


def prepare(obj, use_perfbuf, ring_bytes=None):
    """Before load: configure the object's `events` map for a ring buffer or a perf buffer."""
    events = obj.map("events")
    if "kk_perfbuf" in obj.rodata:
        obj.rodata["kk_perfbuf"] = use_perfbuf
    early_ring = early.take_ring(0 if use_perfbuf else ring_bytes)
    if use_perfbuf:
        # the spare ring too: a kernel without ring buffers cannot make one, even unused
        for m in (events, obj.maps.get("kk_spare")):
            if m is not None:
                m.retype(MAP_PERF_EVENT_ARRAY, key_size=4, value_size=4,
                         max_entries=lib.libbpf_num_possible_cpus())
    elif early_ring >= 0:
        try:
            events.reuse_fd(early_ring)     # the one kprobekit.early made while Python imported
        finally:
            os.close(early_ring)
    elif ring_bytes:
        events.resize(ring_bytes)


def open_stream(obj, layout=None):
    """After load: the reader for the object's `events` map, losses counted."""
    events = obj.map("events")
    if layout is None:
        layout = event_layout(obj)
    if events.type == MAP_RINGBUF:
        return RingBuffer(events, layout, _bss_counter(obj, "kk_lost"), obj.maps.get("kk_spare"))
    return PerfBuffer(events, layout, lost_counter=_bss_counter(obj, "kk_lost"))


def event_layout(obj):
    """The event struct declared with KK_EVENTS() in the object's C source."""
    return obj.btf.layout(obj.map("kk_scratch").value_type_id)


def _bss_counter(obj, name):
    """A reader of a .bss counter, or None when the object has none."""
    try:
        bss = obj.bss
    except NotFound:
        return None
    return (lambda: bss[name]) if name in bss else None
