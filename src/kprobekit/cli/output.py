"""Text columns and JSON lines for a Tool's records."""

import json
import os
import sys


def emit(text):
    """Writes all of text to stdout, straight to fd 1.

    sys.stdout loses the rest of a large write interrupted by a signal
    whose handler returns (seen on CPython 3.11: a pipe reader that is slow
    when Ctrl-C arrives); os.write returns the partial count and we go on.
    """
    sys.stdout.flush()
    view = memoryview(text.encode())
    while view:
        view = view[os.write(1, view):]


def _getter(field, run):
    if callable(field):
        return lambda rec: field(rec, run)
    return lambda rec: getattr(rec, field)


def jsonable(v):
    """ipaddress objects and other non-JSON values as strings; int subclasses (Errno) as ints."""
    if v is None or type(v) in (bool, int, float, str):
        return v
    if isinstance(v, int):
        return int(v)
    if isinstance(v, list):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    return str(v)


def _shown(col, args):
    """A column's `when`: an option that shows it, or "!option" that hides it."""
    if col.when is None:
        return True
    if col.when.startswith("!"):
        return not getattr(args, col.when[1:], False)
    return bool(getattr(args, col.when, False))


def _stack_getter(tool, run):
    """rec -> its kernel stack (stacks.Stack), for tools that declare one."""
    if not tool.kernel_stack:
        return None
    field = tool.kernel_stack
    return lambda rec: run.stacks.get(getattr(rec, field))


class TextSink:
    def __init__(self, tool, run):
        args = run.args
        self.cols = [c for c in tool.columns if _shown(c, args)]
        unknown = run.backend.unknown
        self.plan = []     # (getter, format, what to print for an unknown value)
        for c in self.cols:
            pad = ("{!s:>%d}" if c.right else "{!s:<%d}") % c.width
            get = (lambda rec: None) if c.field in unknown else _getter(c.field, run)
            self.plan.append((get, c.fmt or pad, pad.format("-")))
        self.stack = _stack_getter(tool, run)

    def start(self):
        if not self.cols:
            return
        hdr = " ".join(("{:>%d}" if c.right else "{:<%d}") % c.width for c in self.cols)
        print(hdr.format(*(c.header for c in self.cols)).rstrip(), flush=True)

    def write(self, recs):
        out = []
        plan = self.plan
        for rec in recs:
            parts = []
            for get, fmt, dash in plan:
                v = get(rec)
                parts.append(dash if v is None else fmt.format(v))
            out.append(" ".join(parts).rstrip())
            if self.stack:
                out.extend(self.stack(rec).text_lines())
        emit("\n".join(out) + "\n")

    def finish(self, lost):
        pass


class JsonSink:
    def __init__(self, tool, run):
        unknown = run.backend.unknown
        self.fields = []
        for f in tool.json_fields:
            key, field = (f, f) if isinstance(f, str) else f
            get = (lambda rec: None) if (isinstance(field, str) and field in unknown) else _getter(field, run)
            self.fields.append((key, get))
        stack = _stack_getter(tool, run)
        if stack:
            self.fields.append(("stack", lambda rec: stack(rec).as_json()))

    def start(self):
        pass

    def write(self, recs):
        dumps = json.dumps
        fields = self.fields
        lines = [dumps({k: jsonable(get(rec)) for k, get in fields}) for rec in recs]
        emit("\n".join(lines) + "\n")

    def finish(self, lost):
        if lost:
            emit(json.dumps({"lost": lost}) + "\n")
