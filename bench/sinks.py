"""Records -> each tool's text and --json lines: how many lines per CPU second the output path makes.

No kernel events: records of the tool's own event struct (layout from its object's BTF) with the
values of a loopback storm, formatted in batches of 1000 and written to /dev/null, as the runner
does.  This is the rate a tool can print at before its ring buffer starts to fill.
"""

import argparse
import importlib.util
import os
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402,F401  (puts src/ on sys.path)

from kprobekit import events  # noqa: E402
from kprobekit.cli import output, runner  # noqa: E402
from kprobekit.object import Object  # noqa: E402

TOOLS = ("tcpstates", "tcplife", "tcpconnect")


def _value(field, i):
    """A storm-like value: 127.0.0.1, IPv4, comm 'storm', ports and states that vary."""
    if field.c_type == "kk_addr_t":
        return bytes([127, 0, 0, 1]) + bytes(12)
    if field.name in ("ip", "family"):
        return 4
    if field.name == "comm":
        return b"storm"
    if field.name in ("oldstate", "newstate"):
        return 1 + i % 11
    if field.name in ("lport", "sport", "rport", "dport"):
        return 30000 + i % 20000
    if field.fmt.endswith("s"):
        return bytes(field.size)
    return {1: 1, 2: 4242}.get(field.size, 424242 + i)


def records(tool_name, n):
    obj = Object.open(tool_name)
    try:
        layout = events.event_layout(obj)
    finally:
        obj.close()
    new = layout.record
    return layout, [tuple.__new__(new, layout.struct.unpack(layout.struct.pack(*[_value(f, i) for f in layout.fields])))
            for i in range(n)]


def measure(tool_name, argv, n=20_000, repeat=3, sink_class=None):
    """Best lines per CPU second over `repeat` runs."""
    tool = importlib.import_module(f"kprobekit.tools.{tool_name}").TOOL
    layout, recs = records(tool_name, n)
    args = runner.build_parser(tool).parse_args(argv)
    run = runner.Run(tool, args, tool.backends[-1], layout)
    sink = (sink_class or (output.JsonSink if args.json else output.TextSink))(tool, run)
    best = None
    for _ in range(repeat):
        t = time.thread_time()
        for i in range(0, n, 1000):
            sink.write(recs[i:i + 1000])
        t = time.thread_time() - t
        best = t if best is None else min(best, t)
    return round(n / best)


class OrjsonSink:
    """--json lines made by orjson instead: a dict per record of the values JsonSink writes (the
    same _Compiler expressions), dumped by orjson.dumps and written as bytes.  Here to measure
    whether the library beats JsonSink's compiled line; not used by kprobekit."""

    def __init__(self, tool, run):
        import orjson
        comp = output._Compiler(run)
        comp.env.update(_dumps=orjson.dumps, _jsonable=output.jsonable)
        items = []
        for f in tool.json_fields:
            key, field = (f, f) if isinstance(f, str) else f
            expr, maybe_none, is_str = comp.value(field)
            plain_int = (not maybe_none and isinstance(field, str) and field in comp.fields
                         and comp.fields[field].fmt[-1] != "s")
            items.append(f"{key!r}: {expr if is_str or plain_int else f'_jsonable({expr})'}")
        self._batch = comp.compile("_dumps({" + ", ".join(items) + "})", [])

    def write(self, recs):
        output.stdout.write(b"\n".join(self._batch(recs)) + b"\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=20_000)
    args = ap.parse_args(argv)
    saved, null = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    res = {}
    have_orjson = importlib.util.find_spec("orjson") is not None
    try:
        sys.stdout.flush()
        os.dup2(null, 1)
        for name in TOOLS:
            res[name] = {"text": measure(name, [], args.n), "json": measure(name, ["--json"], args.n)}
            res[name]["json_orjson"] = (measure(name, ["--json"], args.n, sink_class=OrjsonSink)
                                        if have_orjson else None)     # make bench-deps installs it
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)
    common.print_table("output path: lines per CPU second (records -> lines -> /dev/null, batches of 1000)",
                       ["tool", "text lines/s", "--json lines/s", "--json by orjson (dict per record)"],
                       [[name, f"{r['text']:,}", f"{r['json']:,}",
                         f"{r['json_orjson']:,}" if r["json_orjson"] is not None else "orjson not installed"]
                        for name, r in res.items()])
    return res


if __name__ == "__main__":
    main()
