"""Which kernel functions a hook can reach, and why a name cannot be probed.

fentry/fexit need the function in kernel BTF and in ftrace's
available_filter_functions; kprobes need a text symbol in kallsyms (a
notrace function still takes a kprobe); the syscall fallback needs the
syscalls:sys_enter_X/sys_exit_X tracepoints.  Messages name the closest
existing functions, since a typo and an inlined function look alike from
here: neither has a symbol.
"""

import difflib
import fnmatch
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
        clones = sorted(s for s in syms if (m := _CLONE.match(s)) and m.group("base") == name)
        if clones:
            return NotFound(f"find {name}: the compiler inlined or specialized it; what remains is "
                            f"{', '.join(clones[:4])}", hint=f"probe {clones[0]} (kprobes only)")
        return NotFound(f"find {name}: no such kernel function — it does not exist or is inlined into every "
                        f"caller (inlined functions have no symbol){self._closest(name, self.candidates(hook))}")

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
