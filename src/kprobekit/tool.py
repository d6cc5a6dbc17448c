"""What a tool declares: its backends, options and columns.  The runner
(cli/runner.py) does everything else.

A tool module is one `TOOL = Tool(...)` and whatever small formatting
functions its columns need; its BPF side is bpf/<name>.bpf.c.
"""


class Backend:
    """One way to hook the kernel: which programs to load and which features they need.

    `unknown` names record fields this backend cannot know; they print as
    '-' and as JSON null, never as a wrong value.
    """

    def __init__(self, name, programs, needs, unknown=(), note=""):
        self.name = name
        self.programs = tuple(programs)
        self.needs = tuple(needs)
        self.unknown = frozenset(unknown)
        self.note = note


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

    `when` names an option that turns the column on; `json` is the key in
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
    def __init__(self, name, summary, *, backends, columns, options=(), json_fields=(),
                 bpf=None, description="", examples="", pid_filter=True):
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

    def backend(self, name):
        for b in self.backends:
            if b.name == name:
                return b
        return None


# Declarations several tools share.

def elapsed(rec, run):
    """Seconds since the run's first event, from the record's ts_ns."""
    return run.elapsed(rec.ts_ns)


TIMESTAMP = Flag("-t", "--timestamp", help="include a TIME(s) column")
TIME_COLUMN = Column("TIME(s)", 9, elapsed, when="timestamp", fmt="{:<9.3f}")
IPV4_ONLY = Flag("-4", "--ipv4", help="trace IPv4 only", rodata=("filter_family", 2), exclusive="family")
IPV6_ONLY = Flag("-6", "--ipv6", help="trace IPv6 only", rodata=("filter_family", 10), exclusive="family")
