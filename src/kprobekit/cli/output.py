"""Text columns and JSON lines for a Tool's records."""

import os
import sys

from ..errors import KprobekitError

# A write of at most this many bytes to a pipe that poll() calls writable never blocks (POSIX's
# atomic pipe writes): what lets a tool notice Ctrl-C while its reader has stopped reading.
PIPE_BUF = 4096
# How long one wait for a slow reader lasts before the stop flag is looked at again.
STALL_CHECK_MS = 200


class OutputError(KprobekitError):
    """Standard output cannot be written (disk full, I/O error, closed)."""


class Stalled(Exception):
    """A stop was asked for while the reader of stdout was not reading: the rest was given up."""


class _Stdout:
    """fd 1 as the tools write it: whole lines, and never stuck past a stop request."""

    def __init__(self):
        self.stop = None        # callable, true once SIGINT/SIGTERM arrived (set by the runner)
        self.unwritten = 0      # lines given up on (Stalled)
        self._poll = None       # a poll object on fd 1, or False for a regular file (never blocks)

    def _waits(self):
        if self._poll is None:
            import stat
            try:
                regular = stat.S_ISREG(os.fstat(1).st_mode)
            except OSError as e:
                raise OutputError(f"write output: {os.strerror(e.errno)} (is stdout closed?)", errno=e.errno)
            if regular:
                self._poll = False
            else:
                import select
                self._poll = select.poll()
                self._poll.register(1, select.POLLOUT)
        return self._poll

    def write(self, data):
        poll = self._waits()
        done, end = 0, len(data)
        while done < end:
            if poll:
                while not poll.poll(STALL_CHECK_MS):
                    if self.stop is not None and self.stop():
                        self.unwritten += data.count(b"\n", done)
                        raise Stalled()
                # up to PIPE_BUF bytes, ending at a line's end where one fits
                cut = min(end, done + PIPE_BUF)
                if cut < end:
                    nl = data.rfind(b"\n", done, cut)
                    cut = nl + 1 if nl >= 0 else cut
            else:
                cut = end
            done += os.write(1, data[done:cut])


stdout = _Stdout()


def emit(text):
    """Writes all of text to stdout, straight to fd 1.

    Not sys.stdout: it loses the rest of a large write interrupted by a
    signal whose handler returns (seen on CPython 3.11), and it would block
    in write(2) with no way to notice Ctrl-C.  A reader that went away raises
    BrokenPipeError (a quiet exit); any other write error is an OutputError.
    """
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
        stdout.write(text.encode())
    except BrokenPipeError:
        raise
    except OSError as e:
        raise OutputError(f"write output: {os.strerror(e.errno)}", errno=e.errno) from None


def report_lost(lost, as_json):
    """Says how many events were lost: a final {"lost": N} JSON line when writing JSON and stdout takes
    it, and on stderr otherwise — also for the lines given up on because stdout was not being read."""
    unwritten = stdout.unwritten
    total = lost + unwritten
    if not total:
        return
    if as_json and not unwritten:
        try:
            emit(f'{{"lost": {total}}}\n')
            return
        except (Stalled, BrokenPipeError, OutputError):
            pass
    why = f" ({unwritten} read but not written: stdout was not being read)" if unwritten else ""
    print(f"kprobekit: lost {total} events{why}", file=sys.stderr)


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


# --- formatters compiled once per run ---
#
# A line is one f-string over the raw record tuple, built from the columns (or JSON keys) the run
# prints and compiled when the sink is made: no per-column loop, no attribute lookups for plain
# fields, and the few distinct strings (comm, addresses) converted once and cached.  bench/sinks.py
# measures it.

_CACHE_MAX = 4096


def _cached(convert):
    """convert(raw) memoized: a storm repeats a handful of comms and addresses."""
    cache = {}

    def get(raw, *extra):
        key = (raw, *extra) if extra else raw
        v = cache.get(key)
        if v is None:
            if len(cache) >= _CACHE_MAX:
                cache.clear()
            v = cache[key] = convert(raw, *extra)
        return v
    return get


def _json_value_writer():
    """value -> its text as json.dumps writes it inside an object.  (json is imported here, for
    --json only: with the re module it loads, it is ~2 ms of start-up.)"""
    import json
    escaped, dumps = json.encoder.encode_basestring_ascii, json.dumps

    def json_value(v):
        t = type(v)
        if t is int:
            return int.__repr__(v)
        if t is str:
            return escaped(v)
        if v is None:
            return "null"
        if t is float and v - v == 0:      # finite: json.dumps writes NaN/Infinity otherwise
            return float.__repr__(v)
        if t is bool:
            return "true" if v else "false"
        return dumps(jsonable(v))
    return json_value


class _Compiler:
    """Turns columns/keys into expressions over `r` (the record) and compiles a batch function."""

    def __init__(self, run):
        from .. import btf
        self.run = run
        self.unknown = run.backend.unknown if run.backend is not None else frozenset()
        layout = getattr(run, "layout", None)
        self.fields = {f.name: f for f in layout.fields} if layout is not None else {}
        self.env = {"run": run}
        self._str_conv = btf._to_str
        self._addr_conv = btf._to_addr
        self.n = 0

    def name(self, obj):
        self.n += 1
        key = f"_{self.n}"
        self.env[key] = obj
        return key

    def value(self, field):
        """(expression, may be None, is str)."""
        if isinstance(field, str) and field in self.unknown:
            return "None", True, False
        if callable(field):
            return f"{self.name(field)}(r, run)", True, False
        f = self.fields.get(field)
        if f is None:
            return f"r.{field}", True, False
        raw = f"r[{f.index}]"
        if f.convert is None:
            return raw, False, False
        if f.convert is self._str_conv:
            return f"{self.name(_cached(lambda b: b.split(bytes(1), 1)[0].decode(errors='replace')))}({raw})", \
                False, True
        if f.convert is self._addr_conv:
            ip = f"r[{self.fields['ip'].index}]" if "ip" in self.fields else "6"
            conv = _cached(lambda b, v: str(self._addr_conv(_IP(v), b)))
            return f"{self.name(conv)}({raw}, {ip})", False, True
        return f"{self.name(f.convert)}(r, {raw})", True, False

    def compile(self, line_expr, prelude):
        src = ("def batch(recs):\n    out = []\n    add = out.append\n    for r in recs:\n" +
               "".join(f"        {p}\n" for p in prelude) +
               f"        add({line_expr})\n    return out\n")
        exec(compile(src, "<kprobekit output>", "exec"), self.env)
        return self.env["batch"]


class _IP:
    """Just enough of a record for btf._to_addr: its ip family."""
    __slots__ = ("ip",)

    def __init__(self, ip):
        self.ip = ip


def _spec(c):
    """The column's format spec, as in an f-string: "!s:<16", ":<9.3f"."""
    if c.fmt:
        return c.fmt[1:-1]
    return f"!s:{'>' if c.right else '<'}{c.width}"


class TextSink:
    def __init__(self, tool, run):
        args = run.args
        self.cols = [c for c in tool.columns if _shown(c, args)]
        self.stack = _stack_getter(tool, run)
        comp = _Compiler(run)
        pieces, prelude = [], []
        for i, c in enumerate(self.cols):
            expr, maybe_none, _ = comp.value(c.field)
            spec = _spec(c)
            if maybe_none:
                dash = (("{!s:>%d}" if c.right else "{!s:<%d}") % c.width).format("-")
                prelude.append(f"v{i} = {expr}")
                pieces.append(f"{{{comp.name(dash)} if v{i} is None else f'{{v{i}{spec}}}'}}")
            else:
                pieces.append(f"{{{expr}{spec}}}")
        self._batch = comp.compile('f"' + " ".join(pieces) + '".rstrip()', prelude)

    def start(self):
        if not self.cols:
            return
        hdr = " ".join(("{:>%d}" if c.right else "{:<%d}") % c.width for c in self.cols)
        emit(hdr.format(*(c.header for c in self.cols)).rstrip() + "\n")

    def write(self, recs):
        lines = self._batch(recs)
        if self.stack:      # each line followed by its stack's frames
            lines = [ln for rec, line in zip(recs, lines) for ln in [line, *self.stack(rec).text_lines()]]
        emit("\n".join(lines) + "\n")


class JsonSink:
    def __init__(self, tool, run):
        comp = _Compiler(run)
        json_value = _json_value_writer()
        comp.env.update(_json=json_value, _jstr=_cached(json_value))
        pieces = []
        json_fields = list(tool.json_fields)
        stack = _stack_getter(tool, run)
        if stack:
            json_fields.append(("stack", lambda rec, run: stack(rec).as_json()))
        for f in json_fields:
            key, field = (f, f) if isinstance(f, str) else f
            expr, maybe_none, is_str = comp.value(field)
            if is_str:
                value = f"_jstr({expr})"
            elif not maybe_none and isinstance(field, str) and comp.fields.get(field) is not None:
                value = f"int.__repr__({expr})" if comp.fields[field].fmt[-1] != "s" else f"_json({expr})"
            else:
                value = f"_json({expr})"
            pieces.append(f"{json_value(key)}: {{{value}}}")
        line = "{{" + ", ".join(pieces) + "}}"
        self._batch = comp.compile("f" + repr(line), [])

    def start(self):
        pass

    def write(self, recs):
        emit("\n".join(self._batch(recs)) + "\n")
