"""The one place that touches libbpf: ctypes prototypes, the log hook, errno.

Everything here is private.  Callers get `lib` (the bound library) and
`check_ptr`/`check_int`, which turn libbpf's NULL/-errno returns into
kprobekit errors carrying libbpf's own log lines.

Why ctypes and not cffi: see docs/design.md (ctypes is in the standard
library, imports in ~2 ms, and the per-event path does not call through it).
"""

import ctypes
import os
from ctypes import (CFUNCTYPE, POINTER, c_bool, c_char_p, c_int, c_long, c_size_t,
                    c_uint32, c_uint64, c_void_p)

from . import errors

# enum bpf_map_type / bpf_prog_type / btf kinds, as far as kprobekit uses them
MAP_HASH, MAP_ARRAY, MAP_PERCPU_HASH, MAP_PERCPU_ARRAY = 1, 2, 5, 6
MAP_PERF_EVENT_ARRAY = 4
MAP_LRU_HASH, MAP_LRU_PERCPU_HASH = 9, 10
MAP_RINGBUF = 27
PERCPU_MAP_TYPES = frozenset({MAP_PERCPU_HASH, MAP_PERCPU_ARRAY, MAP_LRU_PERCPU_HASH})

PROG_KPROBE, PROG_TRACEPOINT, PROG_RAW_TRACEPOINT, PROG_TRACING = 2, 5, 17, 26

LIBBPF_WARN, LIBBPF_INFO, LIBBPF_DEBUG = 0, 1, 2

_opaque = c_void_p
print_fn_t = CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)
perf_sample_fn_t = CFUNCTYPE(None, c_void_p, c_int, c_void_p, c_uint32)
perf_lost_fn_t = CFUNCTYPE(None, c_void_p, c_int, c_uint64)
ring_sample_fn_t = CFUNCTYPE(c_int, c_void_p, c_void_p, c_size_t)


class object_open_opts(ctypes.Structure):
    # struct bpf_object_open_opts, libbpf 1.1, up to btf_custom_path (sz tells libbpf where it ends)
    _fields_ = [("sz", c_size_t), ("object_name", c_char_p), ("relaxed_maps", c_bool),
                ("pin_root_path", c_char_p), ("_attach_prog_fd", c_uint32), ("kconfig", c_char_p),
                ("btf_custom_path", c_char_p)]


def open_options(kernel_btf):
    """bpf_object_open_opts with kernel_btf as the BTF for CO-RE relocations, or None (defaults)."""
    if not kernel_btf:
        return None
    return object_open_opts(sz=ctypes.sizeof(object_open_opts), btf_custom_path=kernel_btf.encode())


class kprobe_opts(ctypes.Structure):
    # struct bpf_kprobe_opts, libbpf 1.1
    _fields_ = [("sz", c_size_t), ("bpf_cookie", c_uint64), ("offset", c_size_t), ("retprobe", c_bool)]


class tracepoint_opts(ctypes.Structure):
    # struct bpf_tracepoint_opts
    _fields_ = [("sz", c_size_t), ("bpf_cookie", c_uint64)]


class uprobe_opts(ctypes.Structure):
    # struct bpf_uprobe_opts, libbpf 1.1
    _fields_ = [("sz", c_size_t), ("ref_ctr_offset", c_size_t), ("bpf_cookie", c_uint64),
                ("retprobe", c_bool), ("func_name", c_char_p)]


class btf_type(ctypes.Structure):
    # include/uapi/linux/btf.h: the union of size/type is one __u32
    _fields_ = [("name_off", c_uint32), ("info", c_uint32), ("size_or_type", c_uint32)]


# (name, restype, argtypes)
_PROTOS = [
    ("libbpf_set_print", c_void_p, [print_fn_t]),
    ("libbpf_strerror", c_int, [c_int, c_char_p, c_size_t]),
    ("libbpf_probe_bpf_map_type", c_int, [c_int, c_void_p]),
    ("libbpf_probe_bpf_prog_type", c_int, [c_int, c_void_p]),
    ("libbpf_num_possible_cpus", c_int, []),
    # object
    ("bpf_object__open_file", _opaque, [c_char_p, POINTER(object_open_opts)]),
    ("bpf_object__load", c_int, [_opaque]),
    ("bpf_object__close", None, [_opaque]),
    ("bpf_object__btf", _opaque, [_opaque]),
    ("bpf_object__find_program_by_name", _opaque, [_opaque, c_char_p]),
    ("bpf_object__next_program", _opaque, [_opaque, _opaque]),
    ("bpf_object__find_map_by_name", _opaque, [_opaque, c_char_p]),
    ("bpf_object__next_map", _opaque, [_opaque, _opaque]),
    # program
    ("bpf_program__name", c_char_p, [_opaque]),
    ("bpf_program__section_name", c_char_p, [_opaque]),
    ("bpf_program__set_autoload", c_int, [_opaque, c_bool]),
    ("bpf_program__autoload", c_bool, [_opaque]),
    ("bpf_program__set_attach_target", c_int, [_opaque, c_int, c_char_p]),
    ("bpf_program__fd", c_int, [_opaque]),
    ("bpf_program__type", c_int, [_opaque]),
    ("bpf_program__attach", _opaque, [_opaque]),
    ("bpf_program__attach_kprobe", _opaque, [_opaque, c_bool, c_char_p]),
    ("bpf_program__attach_tracepoint", _opaque, [_opaque, c_char_p, c_char_p]),
    ("bpf_program__attach_kprobe_opts", _opaque, [_opaque, c_char_p, c_void_p]),
    ("bpf_program__attach_tracepoint_opts", _opaque, [_opaque, c_char_p, c_char_p, c_void_p]),
    ("bpf_program__attach_raw_tracepoint", _opaque, [_opaque, c_char_p]),
    ("bpf_program__attach_trace", _opaque, [_opaque]),
    ("bpf_program__attach_uprobe", _opaque, [_opaque, c_bool, c_int, c_char_p, c_size_t]),
    ("bpf_program__attach_uprobe_opts", _opaque, [_opaque, c_int, c_char_p, c_size_t, c_void_p]),
    ("bpf_link__destroy", c_int, [_opaque]),
    ("bpf_link__fd", c_int, [_opaque]),
    # map
    ("bpf_map__name", c_char_p, [_opaque]),
    ("bpf_map__fd", c_int, [_opaque]),
    ("bpf_map__type", c_int, [_opaque]),
    ("bpf_map__set_type", c_int, [_opaque, c_int]),
    ("bpf_map__key_size", c_uint32, [_opaque]),
    ("bpf_map__set_key_size", c_int, [_opaque, c_uint32]),
    ("bpf_map__value_size", c_uint32, [_opaque]),
    ("bpf_map__set_value_size", c_int, [_opaque, c_uint32]),
    ("bpf_map__max_entries", c_uint32, [_opaque]),
    ("bpf_map__set_max_entries", c_int, [_opaque, c_uint32]),
    ("bpf_map__btf_key_type_id", c_uint32, [_opaque]),
    ("bpf_map__btf_value_type_id", c_uint32, [_opaque]),
    ("bpf_map__initial_value", c_void_p, [_opaque, POINTER(c_size_t)]),
    ("bpf_map__reuse_fd", c_int, [_opaque, c_int]),
    ("bpf_map_create", c_int, [c_int, c_char_p, c_uint32, c_uint32, c_uint32, c_void_p]),
    ("bpf_map_lookup_elem", c_int, [c_int, c_void_p, c_void_p]),
    ("bpf_map_update_elem", c_int, [c_int, c_void_p, c_void_p, c_uint64]),
    ("bpf_map_delete_elem", c_int, [c_int, c_void_p]),
    ("bpf_map_get_next_key", c_int, [c_int, c_void_p, c_void_p]),
    # buffers
    ("perf_buffer__new", _opaque, [c_int, c_size_t, perf_sample_fn_t, perf_lost_fn_t, c_void_p, c_void_p]),
    ("perf_buffer__poll", c_int, [_opaque, c_int]),
    ("perf_buffer__epoll_fd", c_int, [_opaque]),
    ("perf_buffer__consume", c_int, [_opaque]),
    ("perf_buffer__free", None, [_opaque]),
    ("ring_buffer__new", _opaque, [c_int, ring_sample_fn_t, c_void_p, c_void_p]),
    ("ring_buffer__poll", c_int, [_opaque, c_int]),
    ("ring_buffer__consume", c_int, [_opaque]),
    ("ring_buffer__free", None, [_opaque]),
    # btf
    ("btf__load_vmlinux_btf", _opaque, []),
    ("btf__load_from_kernel_by_id", _opaque, [c_uint32]),
    ("btf__parse", _opaque, [c_char_p, c_void_p]),
    ("btf__free", None, [_opaque]),
    ("btf__type_cnt", c_uint32, [_opaque]),
    ("btf__type_by_id", POINTER(btf_type), [_opaque, c_uint32]),
    ("btf__name_by_offset", c_char_p, [_opaque, c_uint32]),
    ("btf__find_by_name_kind", c_int, [_opaque, c_char_p, c_uint32]),
    ("btf__resolve_size", c_long, [_opaque, c_uint32]),
    ("btf__resolve_type", c_int, [_opaque, c_uint32]),
    # ids, for progtrace and leak checks
    ("bpf_prog_get_next_id", c_int, [c_uint32, POINTER(c_uint32)]),
    ("bpf_link_get_next_id", c_int, [c_uint32, POINTER(c_uint32)]),
    ("bpf_prog_get_fd_by_id", c_int, [c_uint32]),
    ("bpf_obj_get_info_by_fd", c_int, [c_int, c_void_p, POINTER(c_uint32)]),
]


class _Lib:
    """libbpf's functions, each given its prototype from _PROTOS on first use (all of them at
    import took ~1 ms of every start-up, for the dozen a run calls)."""

    def __init__(self):
        try:
            self._so = ctypes.CDLL("libbpf.so.1", use_errno=True)
        except OSError as e:
            raise errors.MissingDependency(
                "load libbpf: libbpf.so.1 not found — install it: apt-get install libbpf1") from e
        self._protos = {name: (restype, argtypes) for name, restype, argtypes in _PROTOS}

    def __getattr__(self, name):
        try:
            restype, argtypes = self._protos[name]
        except KeyError:
            raise AttributeError(f"libbpf function {name} has no prototype in _PROTOS") from None
        fn = getattr(self._so, name)
        fn.restype = restype
        fn.argtypes = argtypes
        setattr(self, name, fn)     # found directly from now on
        return fn


lib = _Lib()

# libbpf's messages go to this log, never to the terminal; --verbose shows them.
log_lines = []
_libc = ctypes.CDLL(None)
_libc.vsnprintf.argtypes = [c_char_p, c_size_t, c_char_p, c_void_p]
_fmt_buf = ctypes.create_string_buffer(4096)
# x86-64 SysV: a va_list is a pointer to one 24-byte __va_list_tag, and va_copy is a
# copy of that struct.  With a copy, a message longer than _fmt_buf (a verifier log
# comes as one message) is formatted again at full length instead of losing its tail,
# where the verifier's reason is.
_VA_TAG_SIZE = 24 if os.uname().machine == "x86_64" else 0
_va_copy = ctypes.create_string_buffer(max(_VA_TAG_SIZE, 1))


@print_fn_t
def _on_libbpf_print(level, fmt, va_list):
    if _VA_TAG_SIZE:
        ctypes.memmove(_va_copy, va_list, _VA_TAG_SIZE)
    n = _libc.vsnprintf(_fmt_buf, len(_fmt_buf), fmt, va_list)
    buf = _fmt_buf
    if n >= len(_fmt_buf) and _VA_TAG_SIZE:
        buf = ctypes.create_string_buffer(n + 1)
        _libc.vsnprintf(buf, n + 1, fmt, _va_copy)
    if n > 0:
        line = buf.value.decode(errors="replace").rstrip("\n")
        if level != LIBBPF_DEBUG or _debug:
            log_lines.append(line)
            if _echo:
                os.write(2, b"libbpf: " + line.encode() + b"\n")
    return 0


_debug = False
_echo = False
lib.libbpf_set_print(_on_libbpf_print)


def set_verbose(echo: bool, debug: bool = False):
    """Echo libbpf's log to stderr as it arrives (--verbose); debug adds libbpf's debug level."""
    global _echo, _debug
    _echo, _debug = echo, debug


def take_log():
    """Returns and clears the libbpf lines logged since the last call."""
    lines = log_lines[:]
    del log_lines[:]
    return lines


def errno_of(ret=None):
    """libbpf 1.x returns -errno (ints) or NULL with errno set (pointers)."""
    if ret is not None and ret < 0:
        return -ret
    return ctypes.get_errno() or 0


def check_ptr(ptr, what, exc=errors.KprobekitError):
    if ptr:
        return ptr
    raise exc.from_errno(errno_of(), what, take_log())


def check_int(ret, what, exc=errors.KprobekitError):
    if ret >= 0:
        return ret
    raise exc.from_errno(errno_of(ret), what, take_log())
