"""BPF programs already loaded in the kernel: found by id or name, described by bpf_prog_info.

The info struct's layout is read from kernel BTF (struct bpf_prog_info), so
kprobekit needs no copy of it.  A program's full function name (the info's
name is cut at 15 characters) comes from its own BTF, through func_info.
"""

import ctypes
import os
import struct

from . import _libbpf
from ._libbpf import lib
from .btf import BTF, KIND_STRUCT
from .errors import KprobekitError, NotFound, UsageError

PROG_TYPES = {1: "socket_filter", 2: "kprobe", 3: "sched_cls", 4: "sched_act", 5: "tracepoint", 6: "xdp",
              7: "perf_event", 8: "cgroup_skb", 17: "raw_tracepoint", 26: "tracing", 29: "lsm", 31: "syscall"}


class LoadedProgram:
    def __init__(self, fd, info, func_name):
        self.fd = fd
        self.id = info.id
        self.name = info.name
        self.type = PROG_TYPES.get(info.type, str(info.type))
        self.func_name = func_name      # what fentry/fexit attach to
        self.run_cnt = getattr(info, "run_cnt", 0)

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __repr__(self):
        return f"<LoadedProgram id={self.id} {self.type} {self.func_name}>"


def _info(fd, vmlinux, extra=None):
    layout = vmlinux.layout(vmlinux.find("bpf_prog_info", KIND_STRUCT))
    buf = ctypes.create_string_buffer(layout.size)
    offs = {f.name: f.offset for f in layout.fields}
    for name, value in (extra or {}).items():
        fmt = "=Q" if name == "func_info" else "=I"
        struct.pack_into(fmt, buf, offs[name], value)
    n = ctypes.c_uint32(layout.size)
    _libbpf.check_int(lib.bpf_obj_get_info_by_fd(fd, buf, ctypes.byref(n)), "read BPF program info")
    return layout.record(layout.struct.unpack(buf.raw))


def _func_name(fd, info, vmlinux):
    if not info.btf_id or not info.nr_func_info:
        return None
    rec = ctypes.create_string_buffer(8 * info.nr_func_info)
    _info(fd, vmlinux, {"nr_func_info": info.nr_func_info, "func_info_rec_size": 8,
                        "func_info": ctypes.addressof(rec)})
    type_id = int.from_bytes(rec.raw[4:8], "little")     # struct bpf_func_info {insn_off, type_id}, main first
    ptr = lib.btf__load_from_kernel_by_id(info.btf_id)
    if not ptr:
        return None
    btf = BTF(ptr, owned=True)
    try:
        return btf.type(type_id).name or None
    finally:
        btf.close()


def id_of(fd):
    """The kernel's id of a program we hold an fd of."""
    with BTF.vmlinux() as vmlinux:
        return _info(fd, vmlinux).id


def all_ids():
    ids, cur, nxt = [], 0, ctypes.c_uint32()
    while lib.bpf_prog_get_next_id(cur, ctypes.byref(nxt)) == 0:
        cur = nxt.value
        ids.append(cur)
    return ids


def find(spec):
    """A loaded program by 'ID', 'id ID', 'name NAME' or 'NAME' (bpftool's words); the caller closes it."""
    words = spec.split()
    if len(words) == 2 and words[0] in ("id", "name"):
        kind, value = words
    elif len(words) == 1:
        kind, value = ("id" if words[0].isdigit() else "name"), words[0]
    else:
        raise UsageError(f"find program {spec!r}: give ID, 'id ID', NAME or 'name NAME'")
    if kind == "id" and not (value.isascii() and value.isdigit() and 0 < int(value) < 2**32):
        raise UsageError(f"find program {spec!r}: a program id is a number 1-4294967295 (`bpftool prog` lists them)")
    with BTF.vmlinux() as vmlinux:
        ids = [int(value)] if kind == "id" else all_ids()
        matches = []
        for pid in ids:
            fd = lib.bpf_prog_get_fd_by_id(pid)
            if fd < 0:
                if kind == "id":
                    raise NotFound(f"find program id {pid}: no such BPF program loaded",
                                   hint="`bpftool prog` lists them")
                continue
            try:
                info = _info(fd, vmlinux)
                func = _func_name(fd, info, vmlinux) if kind == "id" or value.startswith(info.name) else None
            except KprobekitError:
                os.close(fd)
                raise
            if kind == "id" or func == value or (func is None and info.name == value[:15]):
                matches.append(LoadedProgram(fd, info, func or info.name))
            else:
                os.close(fd)
    if not matches:
        raise NotFound(f"find program {value!r}: no loaded BPF program has that name",
                       hint="`bpftool prog` lists them; give its id")
    if len(matches) > 1:
        ids = ", ".join(str(m.id) for m in matches)
        for m in matches:
            m.close()
        raise UsageError(f"find program {value!r}: {len(matches)} programs have that name (ids {ids}) — give an id")
    return matches[0]
