"""Kernel stacks: ids from a BPF stack-trace map, named from /proc/kallsyms.

The BPF side (bpf/include/kk_stack.bpf.h) stores `kk_kernel_stack(ctx)` in an
event's kk_stack_t member; `KernelStacks(obj).frames(id)` reads that stack's
addresses from the `kk_stacks` map and names each one `function+offset`,
with the module for module code.  Stacks are cached by id (the map keeps one
copy of each distinct stack, so ids repeat) and the symbol table is read once
per process.

/proc/kallsyms shows every address as 0 to a reader the kernel does not
trust with them (kernel.kptr_restrict, kernel.perf_event_paranoid,
CAP_SYSLOG: kallsyms_show_value() in kernel/ksyms_common.c).  The stack
addresses BPF collects are real either way; they are then shown as bare
hex, and `KernelSymbols.hidden` says why, once, instead of naming every
frame after address 0.
"""

import bisect
import errno as _errno
import struct

KALLSYMS = "/proc/kallsyms"
MAP_NAME = "kk_stacks"
DEPTH = 127             # KK_STACK_DEPTH in kk_stack.bpf.h
DEFAULT_ENTRIES = 1024  # distinct stacks kept per run


# "ffffffff81a2b3c0 T tcp_v4_rcv" or "ffffffffc0201000 t nft_do_chain\t[nf_tables]": text symbols only
_TEXT_SYMBOL = r"^([0-9a-f]+) [tTwW] (\S+)(?:\t\[(\S+)\])?$"


class KernelSymbols:
    """The kernel's text symbols, sorted by address, for address -> function+offset.

    Addresses stay the fixed-width hex strings kallsyms prints: they sort and
    bisect like the numbers, without converting 100k of them.
    """

    def __init__(self, path=KALLSYMS):
        import re
        with open(path) as f:
            text = f.read()
        rows = re.findall(_TEXT_SYMBOL, text, re.M)
        rows.sort()
        self._addrs = [r[0] for r in rows]
        self._names = [r[1] for r in rows]
        self._mods = [r[2] or None for r in rows]
        self._width = len(self._addrs[0]) if rows else 16
        self._all_zero = not rows or int(self._addrs[-1], 16) == 0
        self.names = set(self._names)

    @property
    def hidden(self):
        """None when addresses can be named; else why /proc/kallsyms hides them (one line, with the fix)."""
        return hidden_reason() if self._all_zero else None

    def lookup(self, addr):
        """(function, offset, module or None), or None when addr is below every symbol or they are hidden."""
        if self._all_zero:
            return None
        i = bisect.bisect_right(self._addrs, f"{addr:0{self._width}x}") - 1
        if i < 0:
            return None
        return self._names[i], addr - int(self._addrs[i], 16), self._mods[i]


def hidden_reason():
    def sysctl(name):
        try:
            with open(f"/proc/sys/kernel/{name}") as f:
                return int(f.read())
        except (OSError, ValueError):
            return None
    kptr, paranoid = sysctl("kptr_restrict"), sysctl("perf_event_paranoid")
    if kptr is not None and kptr >= 2:
        return (f"/proc/kallsyms hides kernel addresses from everyone (kernel.kptr_restrict={kptr}) — "
                "`sysctl kernel.kptr_restrict=1` and run as root to name the frames")
    return (f"/proc/kallsyms hides kernel addresses from this process (kernel.kptr_restrict={kptr}, "
            f"kernel.perf_event_paranoid={paranoid}, no CAP_SYSLOG) — run as root with CAP_SYSLOG to name the frames")


_symbols = None


def kernel_symbols():
    """The process's KernelSymbols, read on first use."""
    global _symbols
    if _symbols is None:
        _symbols = KernelSymbols()
    return _symbols


class Frame:
    __slots__ = ("addr", "function", "offset", "module")

    def __init__(self, addr, function=None, offset=0, module=None):
        self.addr, self.function, self.offset, self.module = addr, function, offset, module

    def __str__(self):
        if self.function is None:
            return f"{self.addr:#x}"
        return f"{self.function}+{self.offset:#x}" + (f" [{self.module}]" if self.module else "")

    def __repr__(self):
        return f"Frame({self})"

    def as_json(self):
        # addr is None for frames the kernel named itself (trace's ftrace backend)
        return {"addr": None if self.addr is None else f"{self.addr:#x}", "function": self.function,
                "offset": self.offset if self.function else None, "module": self.module}


class Stack(list):
    """The frames of one kernel stack, innermost first; `missing` says why a stack has none."""

    def __init__(self, frames=(), missing=None):
        super().__init__(frames)
        self.missing = missing

    def text_lines(self, indent="        "):
        if self.missing:
            return [f"{indent}[kernel stack unavailable: {self.missing}]"]
        return [f"{indent}{f}" for f in self]

    def as_json(self):
        return None if self.missing else [f.as_json() for f in self]


def prepare(obj, enabled=True, entries=DEFAULT_ENTRIES):
    """Before load: size the object's stack map (1 entry when stacks are off: the kernel allocates it up front)."""
    obj.map(MAP_NAME).resize(entries if enabled else 1)


class KernelStacks:
    """Stack ids of a loaded object's kk_stacks map -> Stack."""

    def __init__(self, obj, symbols=None):
        self._map = obj.map(MAP_NAME)
        self._symbols = symbols
        self._cache = {}
        self._unpack = struct.Struct(f"={DEPTH}Q").unpack

    @property
    def symbols(self):
        if self._symbols is None:
            self._symbols = kernel_symbols()
        return self._symbols

    def get(self, stack_id):
        stack = self._cache.get(stack_id)
        if stack is None:
            stack = self._cache[stack_id] = self._read(stack_id)
        return stack

    def _read(self, stack_id):
        if stack_id < 0:
            err = -stack_id
            why = ("stack map full or hash collision (EEXIST)" if err == _errno.EEXIST
                   else f"bpf_get_stackid failed: {_errno.errorcode.get(err, err)}")
            return Stack(missing=why)
        raw = self._map.lookup(stack_id)
        if raw is None:
            return Stack(missing=f"stack id {stack_id} not in the map")
        syms = self.symbols
        frames = []
        for addr in self._unpack(raw[:DEPTH * 8]):
            if not addr:
                break
            hit = syms.lookup(addr)
            frames.append(Frame(addr, *hit) if hit else Frame(addr))
        return Stack(frames)
