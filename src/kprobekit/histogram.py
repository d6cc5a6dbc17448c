"""Histograms as bcc prints them: log2 or linear buckets, a count and a bar of stars.

Buckets come as a list (index -> count) or a dict; a log2 bucket index is
what BPF computes as the value's bit length (`bucket_of`): 0 for 0, 1 for
1, 2 for 2..3, 3 for 4..7, ...  These functions only format; reading the
counts out of a map is the caller's business (a dict from Map.items() fits).
"""

import sys

BAR_WIDTH = 40


def bucket_of(value):
    """The log2 bucket index of a non-negative value, as the BPF side computes it."""
    return int(value).bit_length()


def _as_dict(buckets):
    if isinstance(buckets, dict):
        return {int(k): int(v) for k, v in buckets.items() if v}
    return {i: int(v) for i, v in enumerate(buckets) if v}


def _bar(count, peak, width=BAR_WIDTH):
    n = int(width * count / peak) if peak else 0
    return "*" * n


def format_log2(buckets, unit="value"):
    """The lines of a log2 histogram; [] when every bucket is empty."""
    counts = _as_dict(buckets)
    if not counts:
        return []
    # bucket 0 holds only the value 0: shown with bucket 1 as "0 -> 1", as bcc does
    if 0 in counts:
        counts[1] = counts.get(1, 0) + counts.pop(0)
    last = max(counts)
    first = 1
    peak = max(counts.values())
    wide = last > 32    # ranges past 2^32 need wider columns
    lw = 20 if wide else 10
    lines = [f"{'':>{lw - 5}}{unit:<{lw + 9}} : count     distribution"]
    for i in range(first, last + 1):
        low, high = (1 << i) >> 1, (1 << i) - 1
        if low == high:
            low -= 1
        c = counts.get(i, 0)
        lines.append(f"{low:>{lw}} -> {high:<{lw}} : {c:<8} |{_bar(c, peak):<{BAR_WIDTH}}|")
    return lines


def format_linear(buckets, unit="value", step=1, base=0):
    """The lines of a linear histogram: bucket i holds values base + i*step .. base + (i+1)*step - 1."""
    counts = _as_dict(buckets)
    if not counts:
        return []
    peak = max(counts.values())
    lines = [f"{unit:>15} : count     distribution"]
    for i in range(min(counts), max(counts) + 1):
        low = base + i * step
        label = f"{low}" if step == 1 else f"{low} -> {low + step - 1}"
        c = counts.get(i, 0)
        lines.append(f"{label:>15} : {c:<8} |{_bar(c, peak):<{BAR_WIDTH}}|")
    return lines


def print_log2(buckets, unit="value", file=None):
    lines = format_log2(buckets, unit)
    if lines:
        print("\n".join(lines), file=file or sys.stdout)


def print_linear(buckets, unit="value", step=1, base=0, file=None):
    lines = format_linear(buckets, unit, step, base)
    if lines:
        print("\n".join(lines), file=file or sys.stdout)


class MapHistograms:
    """Log2 histograms a BPF program keeps in a map keyed by (group..., slot).

    `group(key)` names the histogram a key belongs to (an address, a
    function; None for one histogram).  `take()` returns what arrived since
    the previous take(), as differences of cumulative counts: clearing the
    map instead would lose the samples that land between the read and the
    clear.  Per-CPU values are summed.
    """

    def __init__(self, hist_map, group=lambda key: None):
        self._map = hist_map
        self._group = group
        self._before = {}

    def read(self):
        """{group: {slot: count}} since attach."""
        out = {}
        for key, value in self._map.items():
            n = sum(value) if isinstance(value, list) else value
            slots = out.setdefault(self._group(key), {})
            slots[key.slot] = slots.get(key.slot, 0) + n
        return out

    def take(self):
        now = self.read()
        diff = {}
        for g, slots in now.items():
            old = self._before.get(g, {})
            d = {s: c - old.get(s, 0) for s, c in slots.items() if c != old.get(s, 0)}
            if d:
                diff[g] = d
        self._before = now
        return diff


def log2_json(slots):
    """A histogram's buckets as JSON-ready dicts: low, high (inclusive) and count."""
    return [{"low": (1 << s) >> 1, "high": (1 << s) - 1, "count": c} for s, c in sorted(slots.items()) if c]
