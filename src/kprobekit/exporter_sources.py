"""What the exporter's config file adds, loaded into the kernel: each kind reuses a tool's object.

  [[function]]  funclatency.bpf.o (its per-function log2 histogram and call statistics)
  [[count]]     trace.bpf.o in metrics mode: hits counted by probe and label values
  [[object]]    the user's own object; its maps read as counters, gauges or histograms

Everything the file names is checked (specs parsed, functions resolved,
maps found and of a usable type) before anything is loaded; a problem is
reported at the line that caused it (exporter_config.located).
"""

import argparse
import mmap
import struct

from . import events, features, kernel, metrics, probespec
from ._libbpf import (MAP_ARRAY, MAP_HASH, MAP_LRU_HASH, MAP_LRU_PERCPU_HASH, MAP_PERCPU_ARRAY,
                      MAP_PERCPU_HASH)
from .errors import KprobekitError
from .exporter_config import LABEL_MAX, MAX_LABELS, located
from .object import Object

LABEL_INT, LABEL_BYTES, LABEL_STR = 0, 1, 2      # enum label_kind, bpf/trace.bpf.c
_LABEL = struct.Struct("=HBB")
HASH_TYPES = {MAP_HASH, MAP_LRU_HASH, MAP_PERCPU_HASH, MAP_LRU_PERCPU_HASH}
ARRAY_TYPES = {MAP_ARRAY, MAP_PERCPU_ARRAY}


def load(cfg, args):
    """[Source] for everything the config adds (tools.exporter.Source)."""
    steps = []
    if cfg.functions:
        steps.append(_functions(cfg))
    if cfg.counts:
        steps.append(_counts(cfg))
    for o in cfg.objects:
        steps.append(_user_object(cfg, o))
    # every check passed: now load, in the file's order
    return [start() for start in steps]


def _source(*a):
    from .tools.exporter import Source
    return Source(*a)


def _ring_only(obj):
    """Metrics mode: no events are sent, so the smallest ring buffer (or a perf array) will do."""
    events.prepare(obj, not features.have("ringbuf"), ring_bytes=mmap.PAGESIZE)


# --- [[function]]: funclatency's object ---

def _functions(cfg):
    from .symbols import Functions
    from .tools import funclatency
    funcs = Functions()
    ns = argparse.Namespace(functions=[n for n, _ in cfg.functions], backend="auto", buffer="auto",
                            unit=None, pid=None, per_call=False)
    try:
        backend, _ = funclatency.pick_backend(ns, funcs)
    except KprobekitError as e:
        raise located(cfg, cfg.functions[0][1], e) from None
    hook = funclatency.HOOK[backend.name]
    names, labels = [], []
    for name, line in cfg.functions:
        try:
            expanded = funcs.expand([name], hook)
        except KprobekitError as e:
            raise located(cfg, line, e) from None
        glob = any(c in name for c in "*?[")
        for n in expanded:
            if n not in names:
                names.append(n)
                labels.append(n if glob else name)
    funcs.close()

    def start():
        if backend.name == "kprobe":
            kernel.remove_stale_kprobes()
        ns.buffer = "perf" if not features.have("ringbuf") else "auto"
        obj = funclatency.load(ns, backend, names)

        def collect():
            result = funclatency.read_hist(obj, names, cumulative=True)
            fam = metrics.HistogramMetricFamily("kprobekit_function_latency_seconds",
                                                "Duration of kernel functions (config [[function]]).",
                                                labels=["function"])
            for i, label in enumerate(labels):
                slots, calls, total_ns = result.get(i, ({}, 0, 0))
                fam.add_metric([label], metrics.log2_buckets(slots, lo=7, hi=34), total_ns / metrics.NS_PER_S)
            return [fam]
        return _source("funclatency", backend.name, [obj], collect)
    return start


# --- [[count]]: trace's object in metrics mode ---

def _counts(cfg):
    from .symbols import Functions
    from .tools import trace
    funcs = Functions()
    ctx = probespec.Context(funcs)
    probes, label_fetches = [], []
    if len(cfg.counts) > probespec.MAX_PROBES:
        raise cfg.error(cfg.counts[probespec.MAX_PROBES]["line"], f"at most {probespec.MAX_PROBES} [[count]] tables")
    for i, c in enumerate(cfg.counts):
        try:
            p = probespec.parse(c["spec"], i, ctx)
        except KprobekitError as e:
            raise located(cfg, c["spec_line"], e) from None
        try:
            probespec.parse_filter(c["filter"], [p])
        except KprobekitError as e:
            raise located(cfg, c["filter_line"], e) from None
        fetches = []
        for name in c["labels"]:
            f = p.field(name)
            if f is None:
                raise cfg.error(c["spec_line"], f"label {name!r} is not a field the spec fetches "
                                f"(it fetches: {', '.join(x.name for x in p.fetches) or 'nothing'})")
            if f.field is not None and f.field.data_loc:
                raise cfg.error(c["spec_line"], f"label {name!r} is a variable-length string (__data_loc): "
                                "not usable as a label")
            fetches.append(f)
        try:
            trace._need([p], "bpf")
        except KprobekitError as e:
            raise located(cfg, c["spec_line"], e) from None
        # the kernel keeps one copy of a program per tracepoint: a second attach fails with EEXIST
        same = next((cfg.counts[q.index]["spec_line"] for q in probes if p.kind == "t" and q.target == p.target),
                    None)
        if same is not None:
            raise cfg.error(c["spec_line"], f"tracepoint {p.event} is already counted on line {same}: one "
                            "[[count]] per tracepoint (give that one more labels instead)")
        probes.append(p)
        label_fetches.append(fetches)
    regs = ctx.regs if any(p.kind != "t" for p in probes) else {}

    def configure(obj):
        obj.rodata["kk_metrics"] = True
        _ring_only(obj)

    def after_load(obj):
        plans = obj.map("label_plans")
        for p, fetches in zip(probes, label_fetches):
            plans[p.index] = _label_plan(fetches, plans.value_size)

    def start():
        obj = trace.load_bpf(probes, regs, configure=configure, after_load=after_load)
        funcs.close()
        counts = obj.map("counts")

        def collect():
            fams = [metrics.CounterMetricFamily(c["name"], c["help"] or f"Hits of {c['spec']}"
                                                + (f" where {c['filter']}" if c["filter"] else "")
                                                + " (config [[count]]).", labels=c["labels"])
                    for c in cfg.counts]
            seen = set()
            for key, n in counts.items():
                if key.probe >= len(probes):
                    continue
                fams[key.probe].add_metric(_label_values(label_fetches[key.probe], key.value), n)
                seen.add(key.probe)
            for i, c in enumerate(cfg.counts):
                if i not in seen and not c["labels"]:
                    fams[i].add_metric([], 0)
            return fams
        return _source("trace", "bpf", [obj], collect)
    return start


def _label_plan(fetches, value_size):
    out = bytearray(struct.pack("=I", len(fetches)))
    for i in range(MAX_LABELS):
        if i >= len(fetches):
            out += bytes(_LABEL.size)
            continue
        f = fetches[i]
        fl = f.field
        if f.is_string:
            out += _LABEL.pack(f.dst, LABEL_MAX, LABEL_STR)
        elif fl is not None and (fl.array or fl.size not in (1, 2, 4, 8)):
            out += _LABEL.pack(f.dst, min(fl.size, LABEL_MAX), LABEL_BYTES)
        else:
            out += _LABEL.pack(f.dst, f.type[1], LABEL_INT)
    if len(out) != value_size:
        raise KprobekitError(f"compile label plan: {len(out)} bytes, the object expects {value_size} "
                             "— kprobekit and its objects disagree: run `make bpf`")
    return bytes(out)


def _label_values(fetches, raw):
    """The labels of a count key: each value placed where the fetch decodes it from, then decoded."""
    out = []
    for i, f in enumerate(fetches):
        data = bytearray(probespec.DATA_MAX + probespec.STR_MAX)
        data[f.dst:f.dst + LABEL_MAX] = raw[i * LABEL_MAX:(i + 1) * LABEL_MAX]
        out.append(metrics.label_value(f.decode(bytes(data))))
    return out


# --- [[object]]: the user's own ---

def _user_object(cfg, o):
    import os
    if not os.path.isfile(o["path"]):
        raise cfg.error(o["line"], f"object {o['path']!r}: no such file")
    try:
        obj = Object(o["path"])
    except KprobekitError as e:
        raise located(cfg, o["line"], e) from None
    for name, value in o["rodata"].items():
        try:
            obj.rodata[name] = value
        except KprobekitError as e:
            raise located(cfg, o["line"], e) from None
    for m in o["metrics"]:
        try:
            mp = obj.map(m["map"])
        except KprobekitError as e:
            raise located(cfg, m["line"], e) from None
        if m["type"] == "histogram":
            if mp.type not in ARRAY_TYPES or mp.key_size != 4 or mp.value_size != 8:
                raise cfg.error(m["line"], f"map {m['map']!r}: a histogram needs a log2 array "
                                "(BPF_MAP_TYPE_ARRAY or PERCPU_ARRAY, __u32 slot -> __u64 count)")
        elif mp.type not in HASH_TYPES | ARRAY_TYPES or mp.value_size != 8:
            raise cfg.error(m["line"], f"map {m['map']!r}: a {m['type']} needs a hash or array map "
                            "with __u64 values")

    def start():
        try:
            obj.load()
            obj.attach()
        except KprobekitError as e:
            raise located(cfg, o["line"], e) from None

        def collect():
            out = []
            for m in o["metrics"]:
                mp = obj.map(m["map"])
                doc = m["help"] or f"Map {m['map']} of {o['path']} (config [[object]])."
                if m["type"] == "histogram":
                    out.append(metrics.map_histogram(mp, m["name"], doc, m["scale"]))
                else:
                    out.append(metrics.map_counter(mp, m["name"], doc, m["type"]))
            return out
        return _source(obj.name, "object", [obj], collect)
    return start
