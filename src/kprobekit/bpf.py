"""The API for writing one's own tools: `BPF` and `run`.

    from kprobekit import BPF, run

    def main():
        with BPF(src_file="hello.bpf.c") as b:      # compile (cached), load, attach
            for line in b.trace_pipe():
                print(line.pid, line.msg)

    run(main)

`BPF` compiles C source with clang (once: objects are cached, see
compiler.py) or opens a prebuilt .bpf.o, sets `.rodata` constants, loads,
and attaches every program whose section names its hook.  Then it hands
out maps (Python mappings), event streams decoded from BTF, bpf_printk
lines and histograms.  Everything it created is released by close(), which
`with` calls.
"""

from __future__ import annotations     # annotations stay text: no `typing` import (~15 ms) at start-up

import errno
import os
import sys

from . import events as _events
from . import features, kernel
from ._libbpf import MAP_PERF_EVENT_ARRAY, MAP_RINGBUF, lib
from .btf import KIND_STRUCT, KIND_TYPEDEF, KIND_UNION
from .errors import AttachError, KprobekitError, NotFound, NotSupported, UsageError, VerifierError
from .object import Object

# section kind -> the feature (features.HOOKS) it needs; sections not listed are not checked
_NEEDS = {"kprobe": "kprobe", "ksyscall": "kprobe", "kretprobe": "kretprobe", "kretsyscall": "kretprobe",
          "fentry": "fentry", "fmod_ret": "fentry", "fexit": "fexit", "tracepoint": "tracepoint",
          "tp": "tracepoint", "tp_btf": "tp_btf", "raw_tp": "raw_tp", "raw_tracepoint": "raw_tp"}
# section kinds libbpf can attach from the section name alone, when a target follows the slash
_AUTO_ATTACH = set(_NEEDS) | {"uprobe", "uretprobe", "usdt", "lsm", "iter"}
# section kinds whose target libbpf looks up in kernel BTF when loading
_BTF_TARGETS = {"fentry", "fexit", "fmod_ret", "tp_btf", "lsm"}
_WORDS = {"kprobe": "kprobes", "kretprobe": "kretprobes", "tracepoint": "tracepoints",
          "fentry": "fentry", "fexit": "fexit"}


class BPF:
    """One BPF program file, compiled or prebuilt, loaded and attached.

    Exactly one of `text` (C source), `src_file` (a .bpf.c file) or
    `obj_file` (a compiled .bpf.o) says what to load.

    rodata      values for `const volatile` globals, set before load
    programs    load only these programs (by function name); default: every
                program whose section is not "?"-prefixed
    autoattach  attach each loaded program where its section says
                (kprobe/FUNC, tracepoint/CAT/NAME, fentry/FUNC, uprobe/PATH:FUNC ...)
    buffer      "auto", "ring" or "perf": transport of the `events` map when
                the program uses KK_EVENTS() from kprobekit.bpf.h
    load        False stops after open: set b.rodata, then call b.load()
    """

    def __init__(self, text: str | None = None, *, src_file: str | os.PathLike | None = None,
                 obj_file: str | os.PathLike | None = None, name: str | None = None,
                 rodata: dict[str, object] | None = None, programs: list[str] | None = None,
                 autoattach: bool = True, buffer: str = "auto", cflags: list[str] | tuple = (),
                 cache_dir: str | os.PathLike | None = None, load: bool = True):
        if sum(x is not None for x in (text, src_file, obj_file)) != 1:
            raise UsageError("create BPF: give exactly one of text=, src_file= or obj_file=")
        if buffer not in ("auto", "ring", "perf"):
            raise UsageError(f"create BPF: buffer must be 'auto', 'ring' or 'perf', not {buffer!r}")
        if load:
            # first: without privileges, compiling (half a second) or a cache directory error would
            # only delay or hide the real problem
            file = src_file if src_file is not None else obj_file
            what = name or (os.path.basename(os.fspath(file)).split(".", 1)[0] if file is not None else "bpf")
            kernel.require_bpf_privileges(f"load {what}")
        self.compiled = False   # True when this start ran clang (a cache miss)
        self._origin = None     # where text= sits in the caller's Python file, for verifier messages
        if obj_file is not None:
            path = os.fspath(obj_file)
        else:
            from .compiler import TextOrigin, compile
            if text is not None:
                self._origin = TextOrigin(name or "bpf", text)
            path, self.compiled = compile(text, src_file=src_file, name=name or "bpf", cflags=cflags,
                                          cache=os.fspath(cache_dir) if cache_dir else None)
        self.path = path
        self.object = Object(path)
        if name or text is not None:
            self.object.name = name or "bpf"
        self.name = self.object.name
        self.autoattach = autoattach
        self._buffer = buffer
        self._streams = {}
        self._trace = None
        try:
            if programs is not None:
                self.object.set_autoload(programs)
            for var, value in (rodata or {}).items():
                self.object.rodata[var] = value
            if load:
                self.load()
        except BaseException:
            self.close()
            raise

    def __repr__(self):
        return f"<BPF {self.name} {self.path}>"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- configure, load, attach ---

    @property
    def rodata(self):
        """`const volatile` globals by name: set before load()."""
        return self.object.rodata

    @property
    def bss(self):
        """Zero-initialised globals by name: live values after load."""
        return self.object.bss

    @property
    def programs(self):
        return self.object.programs

    def program(self, name: str):
        return self.object.program(name)

    def load(self) -> BPF:
        # before asking features: without privileges every probe fails, and would blame the kernel
        kernel.require_bpf_privileges(f"load {self.name}")
        wanted = [p for p in self.object.programs.values() if p.autoload]
        self._check_sections(wanted)
        self._check_hooks(wanted)
        obj = self.object
        if "events" in obj.maps and "kk_scratch" in obj.maps:
            if self._buffer == "ring" and not features.have("ringbuf"):
                raise NotSupported(f"load {self.name}: ring buffer unavailable: {features.probe('ringbuf').reason}",
                                   feature="ringbuf", hint="use buffer='perf' (or 'auto')")
            use_perf = self._buffer == "perf" or (self._buffer == "auto" and not features.have("ringbuf"))
            _events.prepare(obj, use_perf)
        try:
            obj.load()
        except VerifierError as e:
            if self._origin is not None and e.location:     # "bpf.bpf.c:9" -> "tool.py:41"
                e.args = (self._origin.rewrite(e.args[0]),)
                e.location = self._origin.rewrite(e.location)
            raise
        except KprobekitError as e:
            # libbpf resolves fentry/FUNC, tp_btf/NAME and lsm/HOOK in kernel BTF at load: ESRCH when absent
            if e.errno == errno.ESRCH:
                for prog in wanted:
                    if prog.kind in _BTF_TARGETS and "/" in prog.section:
                        missing = self._missing(prog.name, prog.kind, _target(prog.section), e)
                        if missing is not None:
                            raise missing from None
            raise
        if self.autoattach:
            for prog in obj.programs.values():
                if prog.fd >= 0 and _auto_attachable(prog.section):
                    self._attach(prog, prog.kind, _target(prog.section), prog.attach)
        return self

    def _check_sections(self, progs):
        """Names what is wrong with a section before libbpf's "missing BPF prog type" or ENOENT."""
        for prog in progs:
            section = prog.section.lstrip("?")
            if lib.bpf_program__type(prog._ptr) == 0:      # BPF_PROG_TYPE_UNSPEC: libbpf knows no such kind
                kind = section.split("/", 1)[0]
                from .symbols import did_you_mean
                raise UsageError(f"load {self.name}: program {prog.name} has an unknown section "
                                 f"SEC(\"{section}\"){did_you_mean(kind, _KNOWN_KINDS, '/')}",
                                 hint="known: " + ", ".join(f"{k}/" for k in _KNOWN_KINDS))
            if prog.kind in ("tracepoint", "tp") and self.autoattach and section.count("/") == 2:
                # cheap enough for every load, and it spares loading programs that cannot attach
                base, target = kernel.tracefs(), _target(section)
                if base is not None and not os.path.isdir(f"{base}/events/{target}"):
                    missing = self._missing(prog.name, "tracepoint", target)
                    if missing is not None:
                        raise missing

    def _check_hooks(self, progs):
        """Refuses, before load, a program whose hook this kernel lacks, with the reason features.py found."""
        for prog in progs:
            feature = _NEEDS.get(prog.kind)
            if feature and not features.have(feature):
                raise NotSupported(
                    f"load {self.name}: program {prog.name} needs {_WORDS.get(feature, feature)} "
                    f"(SEC(\"{prog.section.lstrip('?')}\")): {features.probe(feature).reason}",
                    feature=feature, hint="choose another hook with programs=[...] (see kprobekit.features)")

    def _attach(self, prog, kind, target, attach, *args):
        """attach(*args), with a failure for want of the target turned into "no such …, did you mean …"."""
        try:
            return attach(*args)
        except AttachError as e:
            missing = self._missing(prog.name, kind, target, e)
            if missing is None:
                raise
            raise missing from None

    def _missing(self, prog_name, kind, target, error=None):
        """NotFound naming what comes close, when a hook's target does not exist; None when it does."""
        from .symbols import missing_target
        found = missing_target(kind, target)
        if found is None:
            return None
        shown = target.replace("/", ":", 1) if kind in ("tracepoint", "tp") else target
        return NotFound(f"attach {prog_name} of {self.name} to {kind} {shown}: {found[0]}", hint=found[1],
                        errno=error.errno if error else 0, log=error.log if error else ())

    def attach_kprobe(self, program: str, function: str, *, retprobe: bool = False):
        """Attaches a kprobe (or kretprobe) program to a kernel function; returns the Link."""
        prog = self._loaded(program)
        kind = "kretprobe" if retprobe else "kprobe"
        self._need(kind, prog)
        return self._attach(prog, kind, function, prog.attach_kprobe, function, retprobe)

    def attach_kretprobe(self, program: str, function: str):
        return self.attach_kprobe(program, function, retprobe=True)

    def attach_tracepoint(self, program: str, tracepoint: str):
        """tracepoint: "category:name" (or "category/name"), e.g. "syscalls:sys_enter_openat"."""
        prog = self._loaded(program)
        self._need("tracepoint", prog)
        category, sep, name = tracepoint.replace("/", ":").partition(":")
        if not sep:
            raise UsageError(f"attach {program}: tracepoint {tracepoint!r} is not CATEGORY:NAME")
        return self._attach(prog, "tracepoint", f"{category}/{name}", prog.attach_tracepoint, category, name)

    def attach_raw_tracepoint(self, program: str, tracepoint: str):
        prog = self._loaded(program)
        self._need("raw_tp", prog)
        return self._attach(prog, "raw_tp", tracepoint, prog.attach_raw_tracepoint, tracepoint)

    def attach_uprobe(self, program: str, binary: str | os.PathLike, symbol: str | None = None, *,
                      offset: int = 0, pid: int = -1, retprobe: bool = False):
        """Attaches to a function (symbol, plus offset) or an address (offset) of an executable or library."""
        prog = self._loaded(program)
        binary = os.fspath(binary)
        return self._attach(prog, "uretprobe" if retprobe else "uprobe", f"{binary}:{symbol}" if symbol else binary,
                            prog.attach_uprobe, binary, offset, pid, retprobe, symbol)

    def _loaded(self, name):
        prog = self.object.program(name)
        if prog.fd < 0:
            raise UsageError(f"attach {name}: program not loaded — list it in programs=[...], "
                             f"or drop the '?' from its SEC()")
        return prog

    def _need(self, feature, prog):
        if not features.have(feature):
            raise NotSupported(f"attach {prog.name}: {_WORDS.get(feature, feature)} unavailable: "
                               f"{features.probe(feature).reason}", feature=feature)

    @property
    def links(self):
        return self.object.links

    # --- maps ---

    @property
    def maps(self):
        """The program's own maps by name (not libbpf's .rodata/.bss/... sections)."""
        return {n: m for n, m in self.object.maps.items() if not n.startswith(".") and "." not in n}

    def map(self, name: str):
        return self.object.map(name)

    def __getitem__(self, name: str):
        return self.object.map(name)

    def __contains__(self, name: str):
        return name in self.object.maps

    # --- output ---

    def events(self, name: str = "events", *, struct: str | None = None) -> EventStream:
        """A stream of records from a ring buffer or perf buffer map, decoded by the struct's BTF.

        `struct` names the record type (a struct or typedef in the program);
        without it the type declared with KK_EVENTS() is used.  Returns the
        same stream when asked twice.
        """
        stream = self._streams.get(name)
        if stream is None:
            m = self.object.map(name)
            layout = self._layout(name, struct)
            if m.type == MAP_RINGBUF:
                lost = spare = None
                if name == "events":
                    lost = _events._bss_counter(self.object, "kk_lost")
                    spare = self.object.maps.get("kk_spare")
                reader = _events.RingBuffer(m, layout, lost, spare)
            elif m.type == MAP_PERF_EVENT_ARRAY:
                reader = _events.PerfBuffer(m, layout)
            else:
                raise UsageError(f"read events from map {name}: it is neither a ring buffer nor a perf "
                                 f"event array (map type {m.type})")
            stream = self._streams[name] = EventStream(reader)
        return stream

    def _layout(self, map_name, struct):
        btf = self.object.btf
        if struct is None:
            if "kk_scratch" in self.object.maps and map_name == "events":
                return _events.event_layout(self.object)
            raise UsageError(f"read events from map {map_name}: which record type? pass struct='NAME' "
                             f"(structs in {self.name}: {_struct_names(btf)})")
        for kind in (KIND_STRUCT, KIND_UNION, KIND_TYPEDEF):
            tid = lib.btf__find_by_name_kind(btf.ptr, struct.encode(), kind)
            if tid > 0:
                return btf.layout(tid)
        raise NotFound(f"find struct {struct!r} in {self.name}: no such type "
                       f"(structs: {_struct_names(btf)})",
                       hint=f"a type used only by local variables is not in BTF: add KK_RECORD({struct}) "
                            f"after its definition")

    def trace_pipe(self):
        """bpf_printk lines (TraceLine: task, pid, cpu, flags, ts, msg), read from a trace_pipe of our own."""
        if self._trace is None:
            from .tracepipe import TracePipe
            self._trace = TracePipe()
        return self._trace

    def trace_print(self, file=None):
        """Prints bpf_printk lines as "TASK PID MESSAGE" until interrupted."""
        out = file or sys.stdout
        for line in self.trace_pipe():
            print(f"{line.task:<16} {line.pid:<7} {line.msg}", file=out, flush=True)

    def histogram(self, map_name: str, *, take: bool = False):
        """{bucket: count} of a map whose keys are bucket numbers (per-CPU values summed, empty buckets left out).

        take: only what arrived since the previous take (Map.take): one interval's histogram."""
        m = self.object.map(map_name)
        out = {}
        for key, value in m.take().items() if take else m.items():
            if not isinstance(key, int):
                raise UsageError(f"read histogram {map_name}: keys must be integers (bucket numbers)")
            count = sum(value) if isinstance(value, list) else value
            if count:       # an array map has every bucket, most of them empty
                out[key] = count
        return out

    def print_log2_hist(self, map_name: str, unit: str = "value", *, take: bool = False, file=None):
        """Prints a map of log2 buckets (kk_log2l: the bit length of the value) as bcc does."""
        from .histogram import print_log2
        print_log2(self.histogram(map_name, take=take), unit, file=file)

    def print_linear_hist(self, map_name: str, unit: str = "value", *, step: int = 1, base: int = 0,
                          take: bool = False, file=None):
        from .histogram import print_linear
        print_linear(self.histogram(map_name, take=take), unit, step=step, base=base, file=file)

    def close(self):
        for stream in self._streams.values():
            stream.close()
        self._streams.clear()
        if self._trace is not None:
            self._trace.close()
            self._trace = None
        if getattr(self, "object", None) is not None:
            self.object.close()
        features.release()


class EventStream:
    """Decoded records from a ring or perf buffer: `poll(timeout)`, or iterate (blocks until interrupted)."""

    def __init__(self, reader):
        self._reader = reader
        self.layout = reader.layout

    @property
    def fields(self):
        return [f.name for f in self.layout.fields]

    @property
    def lost(self) -> int:
        """Records that never reached user space (buffer full)."""
        return self._reader.lost

    def fileno(self):
        return self._reader.fileno()

    def poll(self, timeout: float | None = None) -> list:
        """The records that arrived within timeout seconds (None: wait until some do)."""
        return self._reader.poll(-1 if timeout is None else int(timeout * 1000))

    def __iter__(self):
        while True:
            # bounded: see tracepipe.TracePipe.__iter__ (a signal just before the wait)
            yield from self._reader.poll(250)

    def close(self):
        self._reader.close()


def run(main, *args) -> NoReturn:  # noqa: F821
    """Runs a tool's main(): a KprobekitError becomes one message on stderr and exit code 2;
    Ctrl-C and SIGTERM end it cleanly (`with` blocks close) with exit code 0."""
    import signal

    def on_signal(signum, frame):
        raise KeyboardInterrupt
    # SIGINT too: a process started with SIGINT ignored (a background job of a
    # non-interactive shell) would otherwise never see Ctrl-C.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    prog = os.path.basename(sys.argv[0] or "kprobekit").rsplit(".py", 1)[0]
    try:
        rc = main(*args)
    except KeyboardInterrupt:
        rc = 0
    except KprobekitError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        rc = 2
    except BrokenPipeError:
        sys.stdout = None
        rc = 0
    sys.exit(rc or 0)


# what libbpf 1.1 recognizes before the slash, for tracing (the rest exist, but are not tracing)
_KNOWN_KINDS = ("kprobe", "kretprobe", "ksyscall", "kretsyscall", "uprobe", "uretprobe", "usdt",
                "tracepoint", "tp", "raw_tracepoint", "raw_tp", "tp_btf", "fentry", "fexit", "fmod_ret",
                "lsm", "iter", "perf_event", "xdp", "tc", "cgroup_skb", "socket", "sk_msg", "struct_ops")


def _target(section):
    """What a section names after its kind: "syscalls/sys_enter_kill" of "tracepoint/syscalls/sys_enter_kill"."""
    return section.lstrip("?").partition("/")[2]


def _auto_attachable(section):
    kind, _, target = section.lstrip("?").partition("/")
    return kind.split(".", 1)[0] in _AUTO_ATTACH and bool(target)


def _struct_names(btf, limit=15):
    from .btf import KIND_STRUCT as S
    names = []
    for tid in range(1, lib.btf__type_cnt(btf.ptr)):
        t = btf.type(tid)
        if t.kind == S and t.name and not t.name.startswith(("__", "trace_event_raw_", "bpf_")):
            names.append(t.name)
    names = sorted(set(names))
    shown = ", ".join(names[:limit])
    return (shown + f", ... ({len(names) - limit} more)") if len(names) > limit else (shown or "none")
