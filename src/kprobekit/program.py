"""A BPF program inside an object: choose whether it loads, where it attaches."""

import ctypes

from . import _libbpf
from ._libbpf import lib
from .errors import AttachError
from .link import Link


class Program:
    def __init__(self, ptr, obj):
        self._ptr = ptr
        self.object = obj
        self.name = lib.bpf_program__name(ptr).decode()
        self.section = lib.bpf_program__section_name(ptr).decode()

    def __repr__(self):
        return f"<Program {self.name} SEC({self.section!r})>"

    @property
    def autoload(self):
        return bool(lib.bpf_program__autoload(self._ptr))

    @autoload.setter
    def autoload(self, on):
        _libbpf.check_int(lib.bpf_program__set_autoload(self._ptr, bool(on)),
                          f"set autoload of {self.name}")

    @property
    def fd(self):
        return lib.bpf_program__fd(self._ptr)

    @property
    def kind(self):
        """The section's hook kind: 'kprobe', 'fentry', 'tracepoint', ... ('?' dropped)."""
        return self.section.lstrip("?").split("/", 1)[0].split(".", 1)[0]

    def set_attach_target(self, func, target_fd=0):
        """fentry/fexit target, before load: a kernel function, or a function of BPF program target_fd."""
        _libbpf.check_int(lib.bpf_program__set_attach_target(self._ptr, target_fd, func.encode()),
                          f"set attach target of {self.name} to {func}")

    def _link(self, ptr, target):
        if not ptr:
            err = _libbpf.errno_of()
            raise AttachError.from_errno(err, f"attach {self.name} to {target}", _libbpf.take_log())
        link = Link(ptr, self.name, target)
        self.object._links.append(link)
        return link

    def attach(self):
        """Attaches where the section name says (kprobe/FUNC, tracepoint/CAT/NAME, fentry/FUNC, ...)."""
        return self._link(lib.bpf_program__attach(self._ptr), self.section.lstrip("?"))

    def attach_kprobe(self, func, retprobe=False, cookie=None, offset=0):
        """cookie: a number the program reads with bpf_get_attach_cookie() (one program, many targets);
        offset: bytes into the function (kprobes only)."""
        kind = "kretprobe" if retprobe else "kprobe"
        if cookie is None and not offset:
            ptr = lib.bpf_program__attach_kprobe(self._ptr, retprobe, func.encode())
        else:
            opts = _libbpf.kprobe_opts(sz=ctypes.sizeof(_libbpf.kprobe_opts), bpf_cookie=cookie or 0,
                                       offset=offset, retprobe=retprobe)
            ptr = lib.bpf_program__attach_kprobe_opts(self._ptr, func.encode(), ctypes.byref(opts))
        return self._link(ptr, f"{kind} {func}" + (f"+{offset:#x}" if offset else ""))

    def attach_tracepoint(self, category, name, cookie=None):
        if cookie is None:
            ptr = lib.bpf_program__attach_tracepoint(self._ptr, category.encode(), name.encode())
        else:
            opts = _libbpf.tracepoint_opts(sz=ctypes.sizeof(_libbpf.tracepoint_opts), bpf_cookie=cookie)
            ptr = lib.bpf_program__attach_tracepoint_opts(self._ptr, category.encode(), name.encode(),
                                                          ctypes.byref(opts))
        return self._link(ptr, f"tracepoint {category}:{name}")

    def attach_raw_tracepoint(self, name):
        return self._link(lib.bpf_program__attach_raw_tracepoint(self._ptr, name.encode()),
                          f"raw tracepoint {name}")

    def attach_trace(self):
        """fentry/fexit/tp_btf to the target chosen at load."""
        return self._link(lib.bpf_program__attach_trace(self._ptr), self.section.lstrip("?"))

    def attach_uprobe(self, binary, offset=0, pid=-1, retprobe=False, symbol=None):
        """At binary+offset, or at a function (symbol, plus offset) libbpf finds in the ELF symbols."""
        if symbol is None:
            return self._link(lib.bpf_program__attach_uprobe(self._ptr, retprobe, pid, str(binary).encode(),
                                                             offset), f"uprobe {binary}+{offset:#x}")
        opts = _libbpf.uprobe_opts(sz=ctypes.sizeof(_libbpf.uprobe_opts), retprobe=retprobe,
                                   func_name=symbol.encode())
        ptr = lib.bpf_program__attach_uprobe_opts(self._ptr, pid, str(binary).encode(), offset, ctypes.byref(opts))
        return self._link(ptr, f"uprobe {binary}:{symbol}" + (f"+{offset:#x}" if offset else ""))

