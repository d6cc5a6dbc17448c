"""What a tool declares: its backends, options and columns.  The runner
(cli/runner.py) does everything else.

A tool module is one `TOOL = Tool(...)` and whatever small formatting
functions its columns need; its BPF side is bpf/<name>.bpf.c.
"""


class Backend:
    """One way to hook the kernel: which programs to load and which features they need.

    A `programs` entry may be a tuple of alternatives: kprobes on functions
    that the kernel renamed or split across versions, e.g.
    ("kprobe_sk_skb_reason_drop", "kprobe_kfree_skb_reason"); the first whose
    section's function is in kallsyms loads.  `unknown` names record fields
    this backend cannot know; they print as '-' and as JSON null, never as a
    wrong value.
    """

    def __init__(self, name, programs, needs, unknown=(), note=""):
        self.name = name
        self.programs = tuple(programs)
        self.needs = tuple(needs)
        self.unknown = frozenset(unknown)
        self.note = note

    def program_names(self, obj):
        """The programs to load from obj, alternatives resolved against this kernel's functions."""
        out = []
        for p in self.programs:
            if isinstance(p, str):
                out.append(p)
                continue
            from . import stacks
            names = stacks.kernel_symbols().names
            target = lambda prog: obj.program(prog).section.rsplit("/", 1)[-1]
            found = next((prog for prog in p if target(prog) in names), None)
            if found is None:
                from .errors import NotFound
                raise NotFound(f"use {self.name} backend: none of {', '.join(target(prog) for prog in p)} "
                               "is a function of this kernel", hint="try --backend auto")
            out.append(found)
        return out


class Option:
    """A command-line option; `apply(args, rodata)` writes it into the BPF object before load.

    `rodata` is either a variable name (the option's value is written as is)
    or a (name, value) pair written when a flag is given.
    """

    def __init__(self, *flags, rodata=None, exclusive=None, **argparse_kw):
        self.flags = flags
        self.rodata = rodata
        self.exclusive = exclusive      # options with the same name here cannot be given together
        self.kw = argparse_kw

    @property
    def dest(self):
        if "dest" in self.kw:
            return self.kw["dest"]
        longs = [f for f in self.flags if f.startswith("--")]
        return (longs or self.flags)[0].lstrip("-").replace("-", "_")

    def apply(self, args, rodata):
        value = getattr(args, self.dest, None)
        if self.rodata is None or value in (None, False, [], ()):
            return
        if isinstance(self.rodata, tuple):
            name, value = self.rodata
        else:
            name = self.rodata
        rodata[name] = value


def Flag(*flags, help, rodata=None, exclusive=None):
    return Option(*flags, action="store_true", help=help, rodata=rodata, exclusive=exclusive)


class Column:
    """A text column: header, width, and the record attribute (or function of record, run) shown.

    `when` names an option that turns the column on ("!option": off); `json` is the key in
    --json output (None: not in JSON).
    """

    def __init__(self, header, width, field, *, when=None, json=None, fmt=None, right=False):
        self.header = header
        self.width = width
        self.field = field
        self.when = when
        self.json = json
        self.fmt = fmt
        self.right = right


class Tool:
    """`kernel_stack`: the record's kk_stack_t member, printed under each line (JSON "stack").
    `check(args, backend)`: raises when options ask what the chosen backend cannot do.
    `report(obj, run, final)`: text or JSON lines printed at exit (counts kept in maps).
    `periodic`: the tool sends no events; report() runs every `args.interval`
    seconds (if set), `args.intervals` times at most, and at exit."""

    def __init__(self, name, summary, *, backends, columns, options=(), json_fields=(),
                 bpf=None, description="", examples="", pid_filter=True, kernel_stack=None,
                 check=None, report=None, periodic=False):
        self.name = name
        self.summary = summary
        self.description = description
        self.examples = examples
        self.bpf = bpf or name
        self.backends = tuple(backends)
        self.columns = tuple(columns)
        self.options = tuple(options)
        # JSON keys: record attributes, or (key, function of record) pairs
        self.json_fields = tuple(json_fields)
        self.pid_filter = pid_filter
        self.kernel_stack = kernel_stack
        self.check = check
        self.report = report
        self.periodic = periodic

    def backend(self, name):
        for b in self.backends:
            if b.name == name:
                return b
        return None


# Declarations several tools share.

def elapsed(rec, run):
    """Seconds since the run's first event, from the record's ts_ns."""
    return run.elapsed(rec.ts_ns)


def wall_time(rec, run):
    """The record's ts_ns (CLOCK_MONOTONIC, bpf_ktime_get_ns) as local wall-clock HH:MM:SS."""
    import time
    offset = time.time() - time.clock_gettime(time.CLOCK_MONOTONIC)
    return time.strftime("%H:%M:%S", time.localtime(rec.ts_ns / 1e9 + offset))


TIMESTAMP = Flag("-t", "--timestamp", help="include a TIME(s) column")
TIME_COLUMN = Column("TIME(s)", 9, elapsed, when="timestamp", fmt="{:<9.3f}")
IPV4_ONLY = Flag("-4", "--ipv4", help="trace IPv4 only", rodata=("filter_family", 2), exclusive="family")
IPV6_ONLY = Flag("-6", "--ipv6", help="trace IPv6 only", rodata=("filter_family", 10), exclusive="family")
