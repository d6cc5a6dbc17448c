"""BPF maps as Python mappings, and an object's global variables.

Keys and values are decoded by their BTF type: integers as int, char[] as
str (set from str or bytes, NUL-padded), structs as records (see
btf.Layout), anything else as bytes; globals decode the same way.  Per-CPU
values come back as a list, one per possible CPU; `Map.sum(key)` adds them up.
"""

import ctypes
import struct

from . import _libbpf
from ._libbpf import PERCPU_MAP_TYPES, lib
from .btf import (KIND_ARRAY, KIND_ENUM, KIND_INT, KIND_PTR, KIND_STRUCT, KIND_UNION, chars_to_str,
                  is_char_array, str_to_chars)
from .errors import KprobekitError, NotFound, UsageError

_INT_FMT = {1: "B", 2: "H", 4: "I", 8: "Q"}


class _Codec:
    """Packs and unpacks one key or value type, chosen from BTF when there is one."""

    def __init__(self, btf, type_id, size):
        self.size = size
        self.layout = None
        self.fmt = None
        self.chars = False
        if btf is not None and type_id:
            t, _ = btf.resolve(type_id)
            if t.kind in (KIND_INT, KIND_ENUM, KIND_PTR) and size in _INT_FMT:
                signed = t.kind == KIND_INT and bool(t.int_info()[0] & 1)
                self.fmt = "=" + (_INT_FMT[size].lower() if signed else _INT_FMT[size])
            elif t.kind in (KIND_STRUCT, KIND_UNION):
                self.layout = btf.layout(type_id)
            else:
                self.chars = is_char_array(btf, t)
        elif size in _INT_FMT:
            self.fmt = "=" + _INT_FMT[size]

    def pack(self, v):
        if self.chars:
            return str_to_chars(v, self.size, "map key/value")
        if isinstance(v, (bytes, bytearray)):
            if len(v) != self.size:
                raise UsageError(f"pack map key/value: {len(v)} bytes given, {self.size} expected")
            return bytes(v)
        if self.fmt:
            return struct.pack(self.fmt, v)
        if self.layout and isinstance(v, tuple):
            return self.layout.pack(v)
        raise UsageError(f"pack map key/value: cannot pack {type(v).__name__}; give bytes")

    def unpack(self, raw):
        if self.fmt:
            return struct.unpack(self.fmt, raw)[0]
        if self.layout:
            return self.layout.record(self.layout.struct.unpack(raw))
        if self.chars:
            return chars_to_str(raw)
        return raw


class Map:
    def __init__(self, ptr, obj):
        self._ptr = ptr
        self.object = obj
        self.name = lib.bpf_map__name(ptr).decode()
        self._codecs = None
        self._taken = {}        # what the previous take() read

    def __repr__(self):
        return f"<Map {self.name} type={self.type}>"

    @property
    def fd(self):
        return lib.bpf_map__fd(self._ptr)

    @property
    def type(self):
        return lib.bpf_map__type(self._ptr)

    @property
    def key_size(self):
        return lib.bpf_map__key_size(self._ptr)

    @property
    def value_size(self):
        return lib.bpf_map__value_size(self._ptr)

    @property
    def max_entries(self):
        return lib.bpf_map__max_entries(self._ptr)

    def resize(self, max_entries):
        """Before load: change max_entries (bytes, for a ring buffer)."""
        _libbpf.check_int(lib.bpf_map__set_max_entries(self._ptr, max_entries), f"resize map {self.name}")

    def retype(self, map_type, key_size=None, value_size=None, max_entries=None):
        """Before load: change the map's type (a ring buffer becomes a perf event array)."""
        what = f"change map {self.name}"
        _libbpf.check_int(lib.bpf_map__set_type(self._ptr, map_type), what)
        if key_size is not None:
            _libbpf.check_int(lib.bpf_map__set_key_size(self._ptr, key_size), what)
        if value_size is not None:
            _libbpf.check_int(lib.bpf_map__set_value_size(self._ptr, value_size), what)
        if max_entries is not None:
            _libbpf.check_int(lib.bpf_map__set_max_entries(self._ptr, max_entries), what)

    def reuse(self, other):
        """Before load: share another loaded object's map (several objects, one ring buffer)."""
        self.reuse_fd(other.fd)

    def reuse_fd(self, fd):
        """Before load: use the map fd refers to (libbpf takes its own copy of fd)."""
        _libbpf.check_int(lib.bpf_map__reuse_fd(self._ptr, fd), f"share map {self.name}")

    @property
    def value_type_id(self):
        return lib.bpf_map__btf_value_type_id(self._ptr)

    # --- mapping interface, after load ---

    def _codec(self):
        if self._codecs is None:
            btf = self.object.btf
            self._percpu = self.type in PERCPU_MAP_TYPES
            self._ncpu = lib.libbpf_num_possible_cpus() if self._percpu else 1
            # per-CPU values are laid out 8-byte aligned, one slot per possible CPU
            self._slot = (self.value_size + 7) & ~7 if self._percpu else self.value_size
            self._codecs = (_Codec(btf, lib.bpf_map__btf_key_type_id(self._ptr), self.key_size),
                            _Codec(btf, self.value_type_id, self.value_size))
        return self._codecs

    def _fd(self):
        fd = self.fd
        if fd < 0:
            raise KprobekitError(f"use map {self.name}: the object is not loaded")
        return fd

    def lookup(self, key):
        kc, vc = self._codec()
        kbuf = ctypes.create_string_buffer(kc.pack(key), kc.size)
        vbuf = ctypes.create_string_buffer(self._slot * self._ncpu)
        if lib.bpf_map_lookup_elem(self._fd(), kbuf, vbuf) < 0:
            return None
        raw = vbuf.raw
        if self._percpu:
            return [vc.unpack(raw[i * self._slot:i * self._slot + vc.size]) for i in range(self._ncpu)]
        return vc.unpack(raw)

    def __getitem__(self, key):
        v = self.lookup(key)
        if v is None:
            raise KeyError(key)
        return v

    def get(self, key, default=None):
        v = self.lookup(key)
        return default if v is None else v

    def __setitem__(self, key, value):
        kc, vc = self._codec()
        if self._percpu:
            vals = value if isinstance(value, (list, tuple)) else [value] * self._ncpu
            raw = b"".join(vc.pack(v).ljust(self._slot, b"\0") for v in vals)
        else:
            raw = vc.pack(value)
        _libbpf.check_int(lib.bpf_map_update_elem(self._fd(), kc.pack(key), raw, 0),
                          f"update map {self.name}")

    def __delitem__(self, key):
        kc, _ = self._codec()
        if lib.bpf_map_delete_elem(self._fd(), kc.pack(key)) < 0:
            raise KeyError(key)

    def _raw_keys(self):
        kc, _ = self._codec()
        fd = self._fd()
        cur = None
        nxt = ctypes.create_string_buffer(kc.size)
        while lib.bpf_map_get_next_key(fd, cur, nxt) == 0:
            cur = ctypes.create_string_buffer(nxt.raw, kc.size)
            yield nxt.raw

    def __iter__(self):
        kc, _ = self._codec()
        return (kc.unpack(k) for k in list(self._raw_keys()))

    def keys(self):
        return list(self)

    def items(self):
        kc, _ = self._codec()
        out = []
        for k in list(self._raw_keys()):
            v = self.lookup(k)
            if v is not None:
                out.append((kc.unpack(k), v))
        return out

    def values(self):
        return [v for _, v in self.items()]

    def __len__(self):
        return sum(1 for _ in self._raw_keys())

    def __contains__(self, key):
        return self.lookup(key) is not None

    def clear(self):
        """Deletes every key.  Not a reset of counters: an increment landing between a read and this
        is lost, and the program re-creates keys as they are hit; take() loses nothing."""
        fd = self._fd()
        for k in list(self._raw_keys()):
            lib.bpf_map_delete_elem(fd, k)

    def take(self):
        """{key: value} of what each counter gained since the previous take() (the first: since load);
        keys that gained nothing are left out.

        Read-and-reset without the reset: the map is never cleared, so an increment the kernel makes
        while this reads is in the next take(), never lost.  Values must be counters: integers,
        structs of integers, or per-CPU lists of either (differences are per CPU)."""
        _, vc = self._codec()
        if not (vc.fmt or vc.layout and all(f.fmt in _COUNTER_FMTS for f in vc.layout.fields)):
            raise UsageError(f"take from map {self.name}: its values are not integers or structs of integers")
        now = dict(self.items())
        before, self._taken = self._taken, now
        out = {}
        for key, value in now.items():
            gain = _minus(value, before.get(key))
            if not _is_zero(gain):
                out[key] = gain
        return out

    def sum(self, key):
        """A per-CPU integer value summed over CPUs."""
        v = self[key]
        return sum(v) if isinstance(v, list) else v


_COUNTER_FMTS = frozenset("bBhHiIqQ")


def _minus(new, old):
    """new - old for a counter value: an int, a record of ints, or a per-CPU list of either."""
    if isinstance(new, list):
        return [_minus(n, o) for n, o in zip(new, old or [None] * len(new))]
    if old is None:
        return new
    if isinstance(new, tuple):      # a record holds its raw values: integers here
        return type(new)(a - b for a, b in zip(new, old))
    return new - old


def _is_zero(value):
    if isinstance(value, list):
        return all(_is_zero(v) for v in value)
    return not any(value) if isinstance(value, tuple) else value == 0


class Globals:
    """A global-data section (.rodata, .bss, .data) by variable name.

    Before load, writes set the initial value (.rodata is frozen by load);
    after load, reads see the live value through libbpf's mmap of the map.
    """

    def __init__(self, obj, section):
        self._obj = obj
        self._section = section
        ptr = lib.bpf_object__find_map_by_name(obj._ptr, section.encode())
        if not ptr:
            raise NotFound(f"find {section} of {obj.name}: the object has no such section")
        self._map = ptr
        self._vars = obj.btf.datasec(section)

    def __contains__(self, name):
        return name in self._vars

    def __iter__(self):
        return iter(self._vars)

    def _view(self, name):
        """A writable view of the variable's bytes, and its BTF type.

        Before load that is libbpf's initial-value buffer.  After load, libbpf
        1.1 does not remap that buffer onto the kernel map (only its skeleton
        loader does), so the section is read from the map and written back.
        """
        try:
            off, size, type_id = self._vars[name]
        except KeyError:
            raise NotFound(f"find {name} in {self._section}: no such variable "
                           f"(has: {', '.join(sorted(n for n in self._vars if '.' not in n)) or 'none'})") from None
        fd = lib.bpf_map__fd(self._map)
        if fd >= 0:
            buf = ctypes.create_string_buffer(lib.bpf_map__value_size(self._map))
            key = ctypes.c_uint32(0)
            _libbpf.check_int(lib.bpf_map_lookup_elem(fd, ctypes.byref(key), buf), f"read {self._section}")
            return _Section(fd, buf, off, size), type_id
        n = ctypes.c_size_t()
        base = lib.bpf_map__initial_value(self._map, ctypes.byref(n))
        if not base:
            raise KprobekitError(f"read {self._section}: not memory-mapped by libbpf")
        return (ctypes.c_char * size).from_address(base + off), type_id

    def _elem(self, type_id, size):
        """(struct format of one element, count)."""
        btf = self._obj.btf
        t, _ = btf.resolve(type_id)
        if t.kind == KIND_ARRAY:
            elem, n = t.array_info()
            esize = btf.size(elem)
            return _signed_fmt(btf, elem, esize), n
        return _signed_fmt(btf, type_id, size), 1

    def _chars(self, type_id):
        btf = self._obj.btf
        return is_char_array(btf, btf.resolve(type_id)[0])

    def __getitem__(self, name):
        view, type_id = self._view(name)
        if self._chars(type_id):
            return chars_to_str(bytes(view))
        fmt, n = self._elem(type_id, len(view))
        if fmt is None:
            return bytes(view)
        vals = struct.unpack(f"={n}{fmt}", bytes(view))
        return vals[0] if n == 1 and not self._is_array(type_id) else list(vals)

    def __setitem__(self, name, value):
        view, type_id = self._view(name)
        if self._chars(type_id):
            view[:] = str_to_chars(value, len(view), name)
            return
        fmt, n = self._elem(type_id, len(view))
        if fmt is None:
            view[:] = bytes(value).ljust(len(view), b"\0")
            return
        vals = list(value) if isinstance(value, (list, tuple)) else [value]
        if len(vals) > n:
            raise UsageError(f"set {name}: at most {n} values")
        try:
            view[:] = struct.pack(f"={n}{fmt}", *(vals + [0] * (n - len(vals))))
        except struct.error as e:
            raise UsageError(f"set {name}: {value!r} does not fit ({e})") from None

    def _is_array(self, type_id):
        return self._obj.btf.resolve(type_id)[0].kind == KIND_ARRAY


class _Section:
    """One variable of a loaded global-data map; assigning a slice writes the section back."""

    def __init__(self, fd, buf, off, size):
        self._fd, self._buf, self._off, self._size = fd, buf, off, size

    def __len__(self):
        return self._size

    def __bytes__(self):
        return self._buf.raw[self._off:self._off + self._size]

    def __setitem__(self, sl, data):
        ctypes.memmove(ctypes.addressof(self._buf) + self._off, bytes(data), self._size)
        key = ctypes.c_uint32(0)
        _libbpf.check_int(lib.bpf_map_update_elem(self._fd, ctypes.byref(key), self._buf, 0),
                          "write global data")


def _signed_fmt(btf, type_id, size):
    t, _ = btf.resolve(type_id)
    if t.kind == KIND_INT and size in _INT_FMT:
        if t.int_info()[0] & 4:     # BTF_INT_BOOL
            return "?"
        return _INT_FMT[size].lower() if t.int_info()[0] & 1 else _INT_FMT[size]
    if t.kind in (KIND_ENUM, KIND_PTR) and size in _INT_FMT:
        return _INT_FMT[size]
    return None
