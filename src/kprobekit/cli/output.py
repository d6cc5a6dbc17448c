"""Text columns and JSON lines for a Tool's records."""

import json
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
            emit(json.dumps({"lost": total}) + "\n")
            return
        except (Stalled, BrokenPipeError, OutputError):
            pass
    why = f" ({unwritten} read but not written: stdout was not being read)" if unwritten else ""
    print(f"kprobekit: lost {total} events{why}", file=sys.stderr)


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
    return str(v)


class TextSink:
    def __init__(self, tool, run):
        args = run.args
        self.cols = [c for c in tool.columns if c.when is None or getattr(args, c.when, False)]
        unknown = run.backend.unknown
        self.plan = []     # (getter, format, what to print for an unknown value)
        for c in self.cols:
            pad = ("{!s:>%d}" if c.right else "{!s:<%d}") % c.width
            get = (lambda rec: None) if c.field in unknown else _getter(c.field, run)
            self.plan.append((get, c.fmt or pad, pad.format("-")))

    def start(self):
        hdr = " ".join(("{:>%d}" if c.right else "{:<%d}") % c.width for c in self.cols)
        emit(hdr.format(*(c.header for c in self.cols)).rstrip() + "\n")

    def write(self, recs):
        out = []
        plan = self.plan
        for rec in recs:
            parts = []
            for get, fmt, dash in plan:
                v = get(rec)
                parts.append(dash if v is None else fmt.format(v))
            out.append(" ".join(parts).rstrip())
        emit("\n".join(out) + "\n")


class JsonSink:
    def __init__(self, tool, run):
        unknown = run.backend.unknown
        self.fields = []
        for f in tool.json_fields:
            key, field = (f, f) if isinstance(f, str) else f
            get = (lambda rec: None) if (isinstance(field, str) and field in unknown) else _getter(field, run)
            self.fields.append((key, get))

    def start(self):
        pass

    def write(self, recs):
        dumps = json.dumps
        fields = self.fields
        lines = [dumps({k: jsonable(get(rec)) for k, get in fields}) for rec in recs]
        emit("\n".join(lines) + "\n")
