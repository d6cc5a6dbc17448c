"""The batch reader of events.RingBuffer over a ring laid out as the kernel lays it, records that
wrap around its end included (no kernel: the ring's memory is a bytearray)."""

import mmap
import struct
from functools import partial

import pytest

from kprobekit import events

pytestmark = pytest.mark.unit


class _Layout:
    """Enough of btf.Layout: a 20-byte record of (u64 seq, u32 a, u64 b) packed."""
    format = "=QIQ"
    struct = struct.Struct(format)
    size = struct.size
    record = tuple


def ring_with(records, start, size=4096):
    """A RingBuffer whose consumer and producer positions are `start` and the end of `records`,
    written as the kernel writes them: 8-byte header, data, padded to 8, wrapping at `size`,
    the data pages mapped twice in a row."""
    layout = _Layout()
    page = mmap.PAGESIZE
    rb = events.RingBuffer.__new__(events.RingBuffer)
    rb.layout, rb._lost_counter = layout, None
    ring = events._Ring.__new__(events._Ring)
    ring.size, ring.mask, ring.page = size, size - 1, page
    rb._rings = [ring]
    rb.rec_size, rb._stride = layout.size, 8 + ((layout.size + 7) & ~7)
    rb._run = struct.Struct("=8x" + layout.format.lstrip("=") + f"{rb._stride - 8 - layout.size}x")
    rb._new = partial(tuple.__new__, tuple)
    buf = bytearray(size)
    pos = start
    for rec in records:
        blob = struct.pack("=I4x", layout.size) + layout.struct.pack(*rec)
        blob += bytes(rb._stride - len(blob))
        for i, b in enumerate(blob):
            buf[(pos + i) % size] = b
        pos += len(blob)
    data = bytearray(page + 2 * size)
    data[page:page + size] = buf
    data[page + size:] = buf
    struct.pack_into("=Q", data, 0, pos)
    ring.prod, ring.data = data, memoryview(data)
    ring.cons = bytearray(struct.pack("=Q", start))
    return rb, pos


@pytest.mark.parametrize("start", [0, 4096 - 24, 4096 - 16, 4096 - 8, 4096 * 3 - 56])
def test_records_across_the_end_of_the_ring(start):
    recs = [(i, 0xA0000000 + i, 0xB000000000000000 + i) for i in range(100)]
    rb, end = ring_with(recs, start)
    assert rb.read_raw() == recs
    assert struct.unpack_from("=Q", rb._rings[0].cons)[0] == end
    assert rb.read_raw() == []
