"""Which kernel functions a hook can reach, and why a name cannot be probed.

fentry/fexit need the function in kernel BTF and in ftrace's
available_filter_functions; kprobes need a text symbol in kallsyms (a
notrace function still takes a kprobe); the syscall fallback needs the
syscalls:sys_enter_X/sys_exit_X tracepoints.  Messages name the closest
existing functions, since a typo and an inlined function look alike from
here: neither has a symbol.

`missing_target` does the same for the target of any section a program
can have (SEC("tp_btf/NAME"), SEC("uprobe/BINARY:FUNC"), ...): the library
asks it after a load or attach failed, so that a misspelled name gets
"no such …, did you mean …" rather than libbpf's errno.
"""

import difflib
import fnmatch
import os
import re

from . import kernel
from .errors import NotFound, NotSupported, UsageError

MAX_MATCHES = 256
# GCC's clones of a partly inlined or specialized function: tcp_rcv.isra.0, foo.constprop.0, bar.part.0
_CLONE = re.compile(r"^(?P<base>[^.]+)\.(isra|constprop|part|cold|lto_priv)\b")


class Functions:
    """Lazy views of the kernel's function lists; one instance per command run."""

    def __init__(self):
        self._btf = None
        self._kallsyms = None
        self._ftrace = False     # not read yet (None: unreadable)

    @property
    def btf(self):
        if self._btf is None:
            from .btf import BTF
            self._btf = BTF.vmlinux()
        return self._btf

    def btf_functions(self):
        return self.btf.functions()

    def kallsyms(self):
        if self._kallsyms is None:
            self._kallsyms = kernel.kallsyms_functions()
        return self._kallsyms

    def ftrace(self):
        """available_filter_functions as a set, or None when the kernel does not let us read it."""
        if self._ftrace is False:
            self._ftrace = kernel.filter_functions()
        return self._ftrace

    def candidates(self, hook):
        if hook == "fentry":
            names = self.btf_functions().keys()
            ft = self.ftrace()
            return set(names) & ft if ft is not None else set(names)
        if hook == "kprobe":
            return self.kallsyms()
        if hook == "syscall":
            return set(kernel.syscall_names())
        raise ValueError(hook)

    def expand(self, patterns, hook):
        """Names (globs allowed) -> [function names] a hook can attach to; raises with the reason otherwise."""
        out = []
        for pat in patterns:
            if any(c in pat for c in "*?["):
                names = sorted(fnmatch.filter(self.candidates(hook), pat))
                if not names:
                    raise NotFound(f"match {pat!r}: no {_WHAT[hook]} matches",
                                   hint="`kprobekit list PATTERN` shows what exists")
                if len(names) > MAX_MATCHES:
                    raise UsageError(f"match {pat!r}: {len(names)} functions match, at most {MAX_MATCHES}",
                                     hint="narrow the pattern")
                out.extend(n for n in names if n not in out)
            else:
                name = self.resolve(pat, hook)
                if name not in out:
                    out.append(name)
        return out

    def resolve(self, name, hook):
        """The function a hook attaches to for `name` (a syscall name maps to its __x64_sys_ function)."""
        if hook == "syscall":
            base = kernel.syscall_tracepoint(name)
            if base is None:
                raise NotFound(f"time {name}: not a syscall with syscalls:sys_enter_{name} and sys_exit_{name} "
                               f"tracepoints{self._closest(name, set(kernel.syscall_names()))}")
            return base
        if name in self.candidates(hook):
            return name
        for syscall_fn in (f"__x64_sys_{name}", f"__x64_{name}", f"__arm64_sys_{name}"):
            if syscall_fn in self.candidates(hook):
                return syscall_fn
        raise self.why_not(name, hook)

    def why_not(self, name, hook):
        """The error that explains why `name` cannot be probed by `hook`."""
        syms = self.kallsyms()
        if name in syms:
            if hook == "fentry":
                if name not in self.btf_functions():
                    return NotSupported(f"attach fentry to {name}: not in kernel BTF (assembly, or a module "
                                        f"without BTF)", hint="use --backend kprobe")
                return NotSupported(f"attach fentry to {name}: it is notrace (not in available_filter_functions)",
                                    hint="fentry needs an ftrace-able function; a kprobe can still reach it "
                                         "(--backend kprobe)")
            return NotSupported(f"probe {name}: refused for this hook")
        clones = self.clones(name)
        if clones:
            return NotFound(f"find {name}: the compiler inlined or specialized it; what remains is "
                            f"{', '.join(clones[:4])}", hint=f"probe {clones[0]} (kprobes only)")
        return NotFound(f"find {name}: no such kernel function — it does not exist or is inlined into every "
                        f"caller (inlined functions have no symbol){self._closest(name, self.candidates(hook))}")

    def clones(self, name):
        """What remains of a function the compiler inlined or specialized: name.isra.0, name.constprop.0, ..."""
        return sorted(s for s in self.kallsyms() if (m := _CLONE.match(s)) and m.group("base") == name)

    @staticmethod
    def _closest(name, names):
        # a cheap first cut: difflib over 100k kallsyms names takes seconds
        near = [n for n in names if n[:1] == name[:1] and abs(len(n) - len(name)) <= 3]
        close = difflib.get_close_matches(name, near, n=5, cutoff=0.75)
        return f"; closest: {', '.join(close)}" if close else ""

    def close(self):
        if self._btf is not None:
            self._btf.close()
            self._btf = None


_WHAT = {"fentry": "function in kernel BTF", "kprobe": "kernel function (kallsyms)", "syscall": "syscall"}


def did_you_mean(word, names, suffix=""):
    """" (did you mean a or b?)" naming the names closest to word, or ""."""
    if len(names) > 2000:
        # a cheap first cut: difflib over 100k kallsyms names takes seconds
        names = [n for n in names if n[:1] == word[:1] and abs(len(n) - len(word)) <= 3]
    close = difflib.get_close_matches(word, names, n=3)
    return f" (did you mean {' or '.join(c + suffix for c in close)}?)" if close else ""


def missing_target(kind, target):
    """(cause, hint) when the target of a `kind/target` hook does not exist, naming what comes close;
    None when it exists or cannot be checked (the failure then has another cause, which the caller keeps).

    kind is a section kind (kprobe, fentry, tp_btf, uprobe, ...); target what follows the slash, or
    for tracepoints also CATEGORY:NAME."""
    check = _CHECKS.get(_SAME_TARGETS.get(kind, kind))
    if check is None:
        return None
    funcs = Functions()
    try:
        return check(funcs, target)
    finally:
        funcs.close()


def _kernel_function(funcs, target, in_btf=False):
    name = target.split("+", 1)[0]      # kprobe/FUNC+OFFSET
    names = funcs.btf_functions() if in_btf else funcs.kallsyms()
    if name in names:
        return None
    if in_btf and name in funcs.kallsyms():
        return ("not in kernel BTF (assembly, or a module without BTF)",
                "use a kprobe, which needs only the symbol")
    clones = funcs.clones(name)
    if clones:
        return (f"the compiler inlined or specialized it; what remains is {', '.join(clones[:4])}",
                f"a kprobe on {clones[0]} reaches it")
    return (f"no such kernel function{did_you_mean(name, list(names))}",
            "`kprobekit list GLOB` shows what exists; an inlined function has no symbol")


def _syscall(funcs, name):
    prefix = _SYSCALL_PREFIX.get(os.uname().machine, "sys_")
    syms = funcs.kallsyms()
    if f"{prefix}{name}" in syms or f"sys_{name}" in syms:
        return None
    names = [s[len(prefix):] for s in syms if s.startswith(prefix)] or kernel.syscall_names()
    return f"no such syscall{did_you_mean(name, names)}", "`ls /sys/kernel/tracing/events/syscalls` lists them"


def _lsm(funcs, name):
    hooks = [f[len("bpf_lsm_"):] for f in funcs.btf_functions() if f.startswith("bpf_lsm_")]
    if not hooks or name in hooks:
        return None
    return f"no such LSM hook{did_you_mean(name, hooks)}", "the hooks are the kernel's bpf_lsm_* functions"


def _tracepoint(funcs, target):
    category, _, name = target.replace(":", "/").partition("/")
    base = kernel.tracefs()
    if base is None or os.path.isdir(f"{base}/events/{category}/{name}"):
        return None
    if not os.path.isdir(f"{base}/events/{category}"):
        cats = sorted(os.listdir(f"{base}/events"))
        return f"no tracepoint category {category!r}{did_you_mean(category, cats)}", f"see {base}/available_events"
    names = sorted(os.listdir(f"{base}/events/{category}"))
    return f"no such tracepoint{did_you_mean(name, names)}", f"list them: ls {base}/events/{category}"


def _raw_tracepoint(funcs, name):
    """raw_tp and tp_btf take a tracepoint's name without its category; libbpf looks for the
    btf_trace_NAME typedef (tp_btf) or asks the kernel (raw_tp), which also knows modules' ones."""
    from .btf import KIND_TYPEDEF
    names = {n[len("btf_trace_"):] for n in funcs.btf.names(KIND_TYPEDEF) if n.startswith("btf_trace_")}
    base = kernel.tracefs()
    if base is not None:
        for cat in os.listdir(f"{base}/events"):
            if os.path.isdir(f"{base}/events/{cat}"):
                names.update(os.listdir(f"{base}/events/{cat}"))
    if name in names:
        return None
    return (f"no such tracepoint{did_you_mean(name, sorted(names))}",
            "`kprobekit list -t` lists them as CATEGORY:NAME; this hook takes the NAME")


def _uprobe(funcs, target):
    binary, _, func = target.partition(":")     # libbpf: BINARY:FUNC[+OFFSET]
    path = find_binary(binary)
    if path is None:
        if "/" in binary:
            where = ""
        elif ".so" in binary:
            where = " (searched LD_LIBRARY_PATH and the library directories)"
        else:
            where = " (searched PATH)"
        return f"no such file {binary}{where}", "give the path of an executable or a shared library"
    func = func.split("+", 1)[0]
    names = elf_functions(path) if func else None
    if names is None or func in names:
        return None
    return (f"no function {func} in {path}{did_you_mean(func, sorted(names))}",
            f"list them: nm -D --defined-only {path}")


# section kinds that take the same kind of target
_SAME_TARGETS = {"kretprobe": "kprobe", "fexit": "fentry", "fmod_ret": "fentry", "kretsyscall": "ksyscall",
                 "tp": "tracepoint", "raw_tracepoint": "raw_tp", "tp_btf": "raw_tp", "uretprobe": "uprobe"}
_CHECKS = {"kprobe": _kernel_function, "fentry": lambda f, t: _kernel_function(f, t, in_btf=True),
           "ksyscall": _syscall, "lsm": _lsm, "tracepoint": _tracepoint, "raw_tp": _raw_tracepoint,
           "uprobe": _uprobe}
# what libbpf puts before a syscall's name for ksyscall/NAME
_SYSCALL_PREFIX = {"x86_64": "__x64_sys_", "aarch64": "__arm64_sys_", "s390x": "__s390x_sys_",
                   "riscv64": "__riscv_sys_"}


def find_binary(name):
    """The file a uprobe target names: a path as given; a bare library name (libc.so.6) in
    LD_LIBRARY_PATH and the library directories; a bare program name in PATH.  None if absent."""
    if "/" in name:
        return name if os.path.isfile(name) else None
    if ".so" in name:
        triplet = f"{os.uname().machine}-linux-gnu"
        dirs = os.environ.get("LD_LIBRARY_PATH", "").split(":") + [
            f"/usr/lib/{triplet}", f"/lib/{triplet}", "/usr/lib64", "/usr/lib", "/lib64", "/lib"]
    else:
        dirs = os.environ.get("PATH", "").split(":")
    for d in dirs:
        if d and os.path.isfile(os.path.join(d, name)):
            return os.path.join(d, name)
    return None


def elf_functions(path):
    """Names of the functions an ELF file defines (.symtab and .dynsym, STT_FUNC and STT_GNU_IFUNC),
    as libbpf finds a uprobe's function; None when the file is not a 64-bit little-endian ELF."""
    import mmap
    import struct
    try:
        with open(path, "rb") as f:
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):
        return None
    with data:
        if data[:6] != b"\x7fELF\x02\x01":
            return None
        shoff, = struct.unpack_from("<Q", data, 0x28)
        shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
        # (type, offset, size, link, entsize) of each section
        sections = [struct.unpack_from("<4xI16xQQI12xQ", data, shoff + i * shentsize) for i in range(shnum)]
        names = set()
        for stype, off, size, link, entsize in sections:
            if stype not in (2, 11) or not entsize:      # SHT_SYMTAB, SHT_DYNSYM
                continue
            strtab = sections[link][1]
            for i in range(size // entsize):
                name, info, shndx = struct.unpack_from("<IB1xH", data, off + i * entsize)
                if info & 0xF in (2, 10) and shndx and name:     # STT_FUNC, STT_GNU_IFUNC; defined here
                    start = strtab + name
                    names.add(data[start:data.find(b"\0", start)].decode(errors="replace"))
        return names
