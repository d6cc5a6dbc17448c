"""A BPF object file: open -> configure (.rodata, autoload, map sizes) -> load -> attach -> close.

Closing destroys every link and the object, so nothing stays in the kernel;
`with Object.open(...)` does it on any exit, and the CLI runner also on
SIGINT/SIGTERM.
"""

import os

from . import _libbpf, early, link
from ._libbpf import lib
from .btf import BTF
from .errors import KprobekitError, NotFound, PermissionDenied, VerifierError, ROOT_HINT
from .maps import Globals, Map
from .program import Program

OBJECTS_DIR = os.path.join(os.path.dirname(__file__), "objects")

# Objects still open, so that an interpreter exit without close() detaches them too.
_open_objects = set()


def resolve(name_or_path):
    """The path of a packaged object by name ('tcpconnect'), or the path given."""
    p = str(name_or_path)
    return p if p.endswith(".o") or os.sep in p else object_path(p)


def object_path(name):
    """The packaged object for a tool or probe name, e.g. 'tcpconnect'."""
    return os.path.join(OBJECTS_DIR, f"{name}.bpf.o")


class Object:
    def __init__(self, path, kernel_btf=None):
        """kernel_btf: a BTF file for CO-RE relocations instead of the kernel's own (minbtf)."""
        self.path = str(path)
        self.name = os.path.basename(self.path).split(".", 1)[0]
        if not os.path.exists(self.path):
            raise NotFound(f"open {self.path}: no such BPF object — run `make bpf`")
        self.kernel_btf = kernel_btf
        self._ptr = early.take_object(self.path, kernel_btf) or _libbpf.check_ptr(
            lib.bpf_object__open_file(self.path.encode(), _libbpf.open_options(kernel_btf)),
            f"open BPF object {self.path}")
        self._links = []
        self._loaded = False
        self.programs = {}
        p = None
        while True:
            p = lib.bpf_object__next_program(self._ptr, p)
            if not p:
                break
            prog = Program(p, self)
            self.programs[prog.name] = prog
        self.maps = {}
        m = None
        while True:
            m = lib.bpf_object__next_map(self._ptr, m)
            if not m:
                break
            mp = Map(m, self)
            self.maps[mp.name] = mp
        self.btf = BTF(lib.bpf_object__btf(self._ptr))
        self._globals = {}
        _open_objects.add(self)

    @classmethod
    def open(cls, name_or_path, kernel_btf=None):
        """A packaged object by name ('tcpconnect') or any .bpf.o by path."""
        return cls(resolve(name_or_path), kernel_btf)

    def __repr__(self):
        return f"<Object {self.name} {'loaded' if self._loaded else 'opened'}>"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def program(self, name):
        try:
            return self.programs[name]
        except KeyError:
            raise NotFound(f"find program {name!r} in {self.name}: no such program "
                           f"(has: {', '.join(sorted(self.programs))})") from None

    def map(self, name):
        try:
            return self.maps[name]
        except KeyError:
            raise NotFound(f"find map {name!r} in {self.name}: no such map "
                           f"(has: {', '.join(sorted(n for n in self.maps if not n.startswith('.') and '.' not in n))})") from None

    def globals(self, section):
        g = self._globals.get(section)
        if g is None:
            g = self._globals[section] = Globals(self, section)
        return g

    @property
    def rodata(self):
        """`const volatile` globals: set before load (filters, switches)."""
        return self.globals(".rodata")

    @property
    def bss(self):
        """Zero-initialised globals: counters the programs update, read after load."""
        return self.globals(".bss")

    def set_autoload(self, names):
        """Loads exactly the named programs."""
        wanted = set(names)
        missing = wanted - self.programs.keys()
        if missing:
            self.program(sorted(missing)[0])     # raises NotFound listing what exists
        for name, prog in self.programs.items():
            prog.autoload = name in wanted

    def load(self):
        _libbpf.take_log()
        ret = lib.bpf_object__load(self._ptr)
        if ret < 0:
            raise load_error(self.name, _libbpf.errno_of(ret), _libbpf.take_log())
        self._loaded = True
        return self

    def attach(self):
        """Attaches every loaded program where its section name says; returns the links."""
        return [p.attach() for p in self.programs.values() if p.fd >= 0]

    @property
    def links(self):
        return list(self._links)

    def close(self):
        link.close_all(self._links)
        self._links.clear()
        if self._ptr:
            lib.bpf_object__close(self._ptr)
            self._ptr = None
        _open_objects.discard(self)


def load_error(name, err, log):
    """The most useful error for a failed bpf_object__load, from errno and libbpf's log."""
    text = "\n".join(log)
    what = f"load {name}"
    if "BEGIN PROG LOAD LOG" in text:
        head, rest = text.split("BEGIN PROG LOAD LOG", 1)
        prog = head.rsplit("prog '", 1)[1].split("'", 1)[0] if "prog '" in head else ""
        verifier = rest.split("END PROG LOAD LOG", 1)[0]
        lines = [ln.rstrip() for ln in verifier.splitlines() if ln.strip() and not ln.startswith("--")]
        if err in (1, 13) and not lines:
            return PermissionDenied(f"{what}: {os.strerror(err)}", errno=err, log=log, hint=ROOT_HINT)
        return verifier_error(what, prog, err, lines, log)
    if err in (1, 13):
        return PermissionDenied(f"{what}: {os.strerror(err)}", errno=err, log=log, hint=ROOT_HINT)
    return KprobekitError.from_errno(err, what, log)


def verifier_error(what, prog, err, lines, log):
    """A VerifierError whose message names the program, the C source line and the verifier's last words.

    With BTF line info (clang -g) the verifier prints the C line before the
    instructions it checks, as "; <source>" (Linux >= 6.4 adds " @ file:line").
    """
    end = len(lines)
    # the statistics lines after the verdict say nothing about the cause
    while end > 1 and lines[end - 1].startswith(("processed ", "verification time", "stack depth")):
        end -= 1
    # the source line is in the message's first line; the tail keeps instructions and the verdict
    tail = [ln for ln in lines[:end] if not ln.startswith(";")][-3:] or [os.strerror(err)]
    source = next((ln[1:].strip() for ln in reversed(lines[:end]) if ln.startswith(";")), "")
    where = ""
    if " @ " in source:
        source, where = source.rsplit(" @ ", 1)
    prog_part = f"program '{prog}' " if prog else ""
    at = f" at {where}" if where else ""
    head = f"{what}: {prog_part}rejected by the verifier{at}" + (f": {source}" if source else "")
    e = VerifierError("\n".join([head] + ["  " + ln for ln in tail]), errno=err, log=log)
    e.program, e.source_line, e.location, e.verifier_tail = prog, source, where, tail
    return e


def close_all():
    objs = list(_open_objects)
    # every object's links at once: their detach waits overlap (link.close_all)
    link.close_all([ln for obj in objs for ln in obj._links])
    for obj in objs:
        obj.close()
