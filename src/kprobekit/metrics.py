"""Prometheus metric families read from BPF maps at scrape time.

BPF programs aggregate in the kernel (bpf/include/kk_metrics.bpf.h): a
counter is a hash map key -> count, a histogram is an array of log2 buckets
(bucket i holds the values whose bit length is i, as histogram.bucket_of()).
Here those maps become prometheus_client metric families; nothing else
about Prometheus is known to the rest of kprobekit.
"""

import ipaddress

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from .btf import Errno

NS_PER_S = 1e9


def log2_buckets(slots, lo=10, hi=36, scale=NS_PER_S):
    """Cumulative Prometheus buckets from log2 slot counts ({slot: count} or a list).

    The bucket bounds are fixed (2^lo .. 2^hi in the value's unit, divided
    by `scale`), so that every scrape has the same series: a value of bit
    length i is at most 2^i - 1, so it is counted under le=2^i.
    """
    counts = slots if isinstance(slots, dict) else dict(enumerate(slots))
    out, total = [], 0
    for i in range(0, hi + 1):
        total += counts.get(i, 0)
        if i >= lo:
            out.append((_le(2 ** i / scale), total))
    total += sum(c for s, c in counts.items() if s > hi)
    out.append(("+Inf", total))
    return out


def _le(v):
    return repr(float(v))


def histogram(name, doc, slots, sum_value, labels=None, **bounds):
    """One histogram family; `slots` log2 counts, `sum_value` already in the exposed unit."""
    labels = labels or {}
    fam = HistogramMetricFamily(name, doc, labels=list(labels))
    fam.add_metric(list(labels.values()), log2_buckets(slots, **bounds), sum_value)
    return fam


def label_value(v):
    """A decoded map-key field as a label: errno names, addresses, strings, numbers."""
    if isinstance(v, Errno):
        return v.name or "0"
    if isinstance(v, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return str(v)
    if isinstance(v, (bytes, bytearray)):
        return v.hex()
    if isinstance(v, list):
        return ",".join(str(x) for x in v)
    return str(v)


def total(value):
    """A map value as one number: per-CPU values are added up."""
    return sum(value) if isinstance(value, list) else value


def map_counter(m, name, doc, kind="counter"):
    """A user's hash map as a counter (or gauge): the key struct's members are the labels."""
    kc, _ = m._codec()
    names = list(kc.layout.record._fields) if kc.layout else ["key"]
    fam = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(name, doc, labels=names)
    for key, value in m.items():
        if kc.layout:
            vals = [label_value(getattr(key, f)) for f in names]
        else:
            vals = [label_value(key)]
        fam.add_metric(vals, total(value))
    return fam


def map_histogram(m, name, doc, unit_scale=1.0):
    """A user's log2 array (slot -> count) as a histogram; values' unit / unit_scale = the exposed unit.

    The sum is estimated from the buckets' midpoints (the map holds no sum).
    """
    slots = {}
    for key, value in m.items():
        slots[int(key)] = total(value)
    est = sum(c * (((1 << s) >> 1) + (1 << s) - 1) / 2 for s, c in slots.items()) / unit_scale
    # one bucket per array entry, so the series stay the same from scrape to scrape
    return histogram(name, doc, slots, est, lo=0, hi=min(max(m.max_entries - 1, 1), 64), scale=unit_scale)
