"""BTF, read through libbpf: struct layouts become Python record decoders.

The C struct in a .bpf.c file is the only definition of an event.  `Layout`
turns its BTF into a `struct.Struct` format plus a record class whose
attributes convert on access: kk_addr_t -> ipaddress, char[] -> str,
kk_errno_t -> Errno (an int that knows its name).
"""

import ctypes
import errno as _errno
import struct
from operator import itemgetter

from ._libbpf import btf_type, lib
from .errors import NotFound, UsageError

# include/uapi/linux/btf.h
KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM = 1, 2, 3, 4, 5, 6
KIND_FWD, KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT = 7, 8, 9, 10, 11
KIND_FUNC, KIND_FUNC_PROTO, KIND_VAR, KIND_DATASEC, KIND_FLOAT = 12, 13, 14, 15, 16
KIND_DECL_TAG, KIND_TYPE_TAG, KIND_ENUM64 = 17, 18, 19
_MODIFIERS = {KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG}
INT_SIGNED, INT_CHAR, INT_BOOL = 1, 2, 4

_INT_FMT = {(1, False): "B", (1, True): "b", (2, False): "H", (2, True): "h",
            (4, False): "I", (4, True): "i", (8, False): "Q", (8, True): "q"}


class Type:
    """One BTF type, decoded from libbpf's `struct btf_type` and what follows it."""
    __slots__ = ("id", "kind", "name", "vlen", "kind_flag", "size", "ref", "_extra")

    def __init__(self, btf, type_id):
        t = lib.btf__type_by_id(btf.ptr, type_id)
        if not t:
            raise NotFound(f"read BTF type {type_id}: no such type")
        c = t.contents
        self.id = type_id
        self.kind = (c.info >> 24) & 0x1F
        self.vlen = c.info & 0xFFFF
        self.kind_flag = bool(c.info >> 31)
        self.name = btf.name(c.name_off)
        # size for INT/STRUCT/UNION/ENUM/DATASEC, referenced type id for the rest
        self.size = self.ref = c.size_or_type
        self._extra = ctypes.addressof(c) + ctypes.sizeof(btf_type)

    def words(self, n):
        return (ctypes.c_uint32 * n).from_address(self._extra)

    def int_info(self):
        """(encoding, bit offset, bits) of a KIND_INT."""
        v = self.words(1)[0]
        return (v >> 24) & 0x0F, (v >> 16) & 0xFF, v & 0xFF

    def array_info(self):
        """(element type id, element count) of a KIND_ARRAY."""
        w = self.words(3)
        return w[0], w[2]

    def members(self, btf):
        """[(name, type id, bit offset, bitfield size)] of a STRUCT/UNION."""
        w = self.words(3 * self.vlen)
        out = []
        for i in range(self.vlen):
            off = w[3 * i + 2]
            bits = off >> 24 if self.kind_flag else 0
            out.append((btf.name(w[3 * i]), w[3 * i + 1], off & 0xFFFFFF if self.kind_flag else off, bits))
        return out

    def secinfo(self):
        """[(var type id, offset, size)] of a DATASEC."""
        w = self.words(3 * self.vlen)
        return [(w[3 * i], w[3 * i + 1], w[3 * i + 2]) for i in range(self.vlen)]

    def params(self, btf):
        """[(name, type id)] of a FUNC_PROTO."""
        w = self.words(2 * self.vlen)
        return [(btf.name(w[2 * i]), w[2 * i + 1]) for i in range(self.vlen)]

    def enumerators(self, btf):
        """{name: value} of an ENUM."""
        w = self.words(2 * self.vlen)
        return {btf.name(w[2 * i]): ctypes.c_int32(w[2 * i + 1]).value for i in range(self.vlen)}


class BTF:
    """A `struct btf *`: borrowed from an object, or owned (vmlinux) and freed on close."""

    def __init__(self, ptr, owned=False):
        self.ptr = ptr
        self._owned = owned
        self._cache = {}

    @classmethod
    def vmlinux(cls):
        from ._libbpf import check_ptr
        from .errors import NotSupported
        return cls(check_ptr(lib.btf__load_vmlinux_btf(), "load kernel BTF", NotSupported), owned=True)

    @classmethod
    def from_file(cls, path):
        from ._libbpf import check_ptr
        return cls(check_ptr(lib.btf__parse(str(path).encode(), None), f"read BTF of {path}"), owned=True)

    def close(self):
        if self._owned and self.ptr:
            lib.btf__free(self.ptr)
        self.ptr = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def name(self, off):
        s = lib.btf__name_by_offset(self.ptr, off)
        return s.decode() if s else ""

    def type(self, type_id):
        t = self._cache.get(type_id)
        if t is None:
            t = self._cache[type_id] = Type(self, type_id)
        return t

    def find(self, name, kind):
        tid = lib.btf__find_by_name_kind(self.ptr, name.encode(), kind)
        if tid < 0:
            raise NotFound(f"find BTF type {name!r}: not in this BTF")
        return tid

    def size(self, type_id):
        return lib.btf__resolve_size(self.ptr, type_id)

    def skip_mods(self, type_id):
        """Follows const/volatile/restrict/type-tag; stops at typedefs (their names matter)."""
        t = self.type(type_id)
        while t.kind in _MODIFIERS:
            t = self.type(t.ref)
        return t

    def resolve(self, type_id):
        """Follows modifiers and typedefs to the underlying type; returns (type, typedef names seen)."""
        names = []
        t = self.type(type_id)
        while t.kind in _MODIFIERS or t.kind == KIND_TYPEDEF:
            if t.kind == KIND_TYPEDEF:
                names.append(t.name)
            t = self.type(t.ref)
        return t, names

    def datasec(self, section):
        """{variable name: (offset, size, type id)} of a data section such as '.rodata'."""
        t = self.type(self.find(section, KIND_DATASEC))
        out = {}
        for var_id, off, size in t.secinfo():
            var = self.type(var_id)
            out[var.name] = (off, size, var.ref)
        return out

    def layout(self, type_id):
        return Layout(self, type_id)

    # --- functions and members, for probes on any kernel function ---

    def names(self, kind):
        """{name: type id} of every type of one kind, e.g. KIND_TYPEDEF."""
        key = ("names", kind)
        if key not in self._cache:
            out = {}
            by_id = lib.btf__type_by_id
            for tid in range(1, lib.btf__type_cnt(self.ptr)):
                c = by_id(self.ptr, tid).contents
                if (c.info >> 24) & 0x1F == kind:
                    out[self.name(c.name_off)] = tid
            self._cache[key] = out
        return self._cache[key]

    def functions(self):
        """{name: FUNC type id} of every function this BTF describes (kernel BTF: the non-inlined ones)."""
        return self.names(KIND_FUNC)

    def func_proto(self, name):
        """([(param name, type id)], return type id) of a kernel function; NotFound if BTF lacks it."""
        tid = self.functions().get(name)
        if tid is None:
            raise NotFound(f"find function {name!r}: not in kernel BTF")
        proto = self.type(self.type(tid).ref)
        return proto.params(self), proto.ref

    def member(self, type_id, name):
        """(member type id, byte offset) of a struct/union member, looking inside anonymous members."""
        t, _ = self.resolve(type_id)
        if t.kind not in (KIND_STRUCT, KIND_UNION):
            raise NotFound(f"find member {name!r}: {self.type_name(type_id)} is not a struct or union")
        for mname, mtype, bit_off, bits in t.members(self):
            if mname == name:
                if bits or bit_off % 8:
                    raise NotFound(f"read member {name!r}: it is a bitfield")
                return mtype, bit_off // 8
            if not mname:
                try:
                    inner, off = self.member(mtype, name)
                    return inner, bit_off // 8 + off
                except NotFound:
                    pass
        raise NotFound(f"find member {name!r}: {self.type_name(type_id)} has no such member")

    def member_names(self, type_id):
        t, _ = self.resolve(type_id)
        if t.kind not in (KIND_STRUCT, KIND_UNION):
            return []
        out = []
        for mname, mtype, _, _ in t.members(self):
            out.extend([mname] if mname else self.member_names(mtype))
        return out

    def type_name(self, type_id):
        """C spelling of a type, e.g. 'struct sock *', '__be16', 'char[16]'."""
        t = self.type(type_id)
        if t.kind == KIND_PTR:
            return self.type_name(t.ref) + " *" if t.ref else "void *"
        if t.kind in _MODIFIERS:
            return self.type_name(t.ref)
        if t.kind == KIND_ARRAY:
            elem, n = t.array_info()
            return f"{self.type_name(elem)}[{n}]"
        prefix = {KIND_STRUCT: "struct ", KIND_UNION: "union ", KIND_ENUM: "enum ", KIND_ENUM64: "enum "}
        return prefix.get(t.kind, "") + (t.name or "void" if type_id else "void")


class Errno(int):
    """0 or a negative errno; `.name` is e.g. 'EADDRINUSE', or None for 0."""
    __slots__ = ()

    @property
    def name(self):
        return _errno.errorcode.get(-self, str(-self)) if self < 0 else None


def is_char_array(btf, t):
    """True for a (resolved) char[N]: decoded to str and encoded from str everywhere (events, map keys
    and values, struct members, globals); unsigned char and __u8 arrays stay lists of numbers."""
    if t.kind != KIND_ARRAY:
        return False
    et, _ = btf.resolve(t.array_info()[0])
    return et.kind == KIND_INT and bool(et.int_info()[0] & INT_CHAR or et.name == "char")


def chars_to_str(raw):
    """A char[] as str: up to the first NUL (all of it when there is none)."""
    return raw.split(b"\0", 1)[0].decode(errors="replace")


def str_to_chars(value, size, what="value"):
    """The bytes of a char[size] from a str or bytes: NUL-padded; longer than size is refused."""
    raw = value.encode() if isinstance(value, str) else bytes(value)
    if len(raw) > size:
        raise UsageError(f"pack {what}: {value!r} is {len(raw)} bytes, longer than char[{size}]")
    return raw.ljust(size, b"\0")


def _to_str(rec, raw):
    return chars_to_str(raw)


def _to_addr(rec, raw):
    import ipaddress
    if getattr(rec, "ip", 6) == 4:
        return ipaddress.IPv4Address(raw[:4])
    return ipaddress.IPv6Address(raw)


def _to_errno(rec, raw):
    return Errno(raw)


def _to_bool(rec, raw):
    return bool(raw)


# typedef name -> converter; checked before the plain C type
_BY_TYPEDEF = {"kk_addr_t": _to_addr, "kk_errno_t": _to_errno}


class Field:
    __slots__ = ("name", "offset", "size", "fmt", "convert", "index", "c_type")

    def __init__(self, name, offset, size, fmt, convert, c_type):
        self.name, self.offset, self.size, self.fmt = name, offset, size, fmt
        self.convert, self.c_type, self.index = convert, c_type, -1

    def __repr__(self):
        return f"Field({self.name!r}, offset={self.offset}, size={self.size}, fmt={self.fmt!r})"


class Layout:
    """A struct's fields, its `struct` format and a record class built from them."""

    def __init__(self, btf, type_id):
        t, _ = btf.resolve(type_id)
        if t.kind not in (KIND_STRUCT, KIND_UNION):
            raise NotFound(f"decode BTF type {t.name or type_id}: not a struct")
        self.name = t.name
        self.size = t.size
        self.fields = []
        fmt, pos = ["="], 0
        for name, mtype, bit_off, bits in t.members(btf):
            if bits or bit_off % 8 or not name:
                continue    # bitfields and anonymous members are not decoded
            off = bit_off // 8
            field = self._field(btf, name, mtype, off)
            if off > pos:
                fmt.append(f"{off - pos}x")
            elif off < pos:
                continue    # a union's overlapping member
            field.index = len(self.fields)
            fmt.append(field.fmt)
            self.fields.append(field)
            pos = off + field.size
        if self.size > pos:
            fmt.append(f"{self.size - pos}x")
        self.format = "".join(fmt)
        self.struct = struct.Struct(self.format)
        self.record = _record_class(self.name or "record", self.fields)

    def pack(self, values):
        """The bytes of a record given as a tuple: one read back, or plain values in member order, with
        str (or shorter bytes) for char[] members."""
        if len(values) != len(self.fields):
            raise UsageError(f"pack struct {self.name}: {len(values)} values given, {len(self.fields)} "
                             f"members ({', '.join(f.name for f in self.fields)})")
        if not isinstance(values, self.record):
            values = [str_to_chars(v, f.size, f"{self.name}.{f.name}") if f.convert is _to_str else v
                      for f, v in zip(self.fields, values)]
        try:
            return self.struct.pack(*values)
        except struct.error as e:
            raise UsageError(f"pack struct {self.name}: {e}") from None

    @staticmethod
    def _field(btf, name, type_id, off):
        size = btf.size(type_id)
        t, typedefs = btf.resolve(type_id)
        c_type = typedefs[0] if typedefs else (t.name or _kind_name(t.kind))
        for td in typedefs:
            if td in _BY_TYPEDEF:
                fmt = f"{size}s" if t.kind == KIND_ARRAY else _int_fmt(btf, t, size)
                return Field(name, off, size, fmt, _BY_TYPEDEF[td], td)
        if t.kind == KIND_INT:
            enc = t.int_info()[0]
            conv = _to_bool if enc & INT_BOOL else None
            return Field(name, off, size, _int_fmt(btf, t, size), conv, c_type)
        if t.kind in (KIND_ENUM, KIND_ENUM64):
            return Field(name, off, size, _INT_FMT[(size, False)], None, c_type)
        if t.kind == KIND_PTR:
            return Field(name, off, size, "Q" if size == 8 else "I", None, c_type)
        if t.kind == KIND_ARRAY:
            elem, n = t.array_info()
            et, _ = btf.resolve(elem)
            if is_char_array(btf, t):
                return Field(name, off, size, f"{size}s", _to_str, "char[]")
            esize = btf.size(elem)
            if et.kind == KIND_INT and (esize, False) in _INT_FMT:
                efmt = _int_fmt(btf, et, esize)
                unpack = struct.Struct(f"={n}{efmt}").unpack
                return Field(name, off, size, f"{size}s", lambda rec, raw: list(unpack(raw)), c_type)
        if t.kind == KIND_STRUCT and t.name:
            # a named nested struct (e.g. struct kk_flow in a map key) decodes to its own record
            sub = btf.layout(t.id)
            return Field(name, off, size, f"{size}s", lambda rec, raw: sub.record(sub.struct.unpack(raw)), c_type)
        # unions, anonymous structs, floats: raw bytes
        return Field(name, off, size, f"{size}s", None, c_type)


def _int_fmt(btf, t, size):
    signed = t.kind == KIND_INT and bool(t.int_info()[0] & INT_SIGNED)
    return _INT_FMT.get((size, signed), f"{size}s")


def _kind_name(kind):
    return {KIND_PTR: "pointer", KIND_STRUCT: "struct", KIND_UNION: "union",
            KIND_ARRAY: "array", KIND_FLOAT: "float"}.get(kind, "type")


def _record_class(name, fields):
    """A tuple subclass: raw values in order, attributes that convert on access."""
    ns = {"__slots__": (), "_fields": tuple(f.name for f in fields)}
    for f in fields:
        get = itemgetter(f.index)
        if f.convert is None:
            ns[f.name] = property(get)
        else:
            ns[f.name] = property(lambda self, _g=get, _c=f.convert: _c(self, _g(self)))
    ns["_asdict"] = lambda self: {k: getattr(self, k) for k in self._fields}
    ns["__repr__"] = lambda self: f"{name}({', '.join(f'{k}={getattr(self, k)!r}' for k in self._fields)})"
    return type(name, (tuple,), ns)


_kernel_enums = {}


def kernel_enum(name):
    """{enumerator: value} of `enum NAME` in the running kernel's BTF, {} when it has none.

    For values the kernel numbers differently across versions (enum
    skb_drop_reason), read from the kernel rather than copied into code.
    """
    if name not in _kernel_enums:
        with BTF.vmlinux() as btf:
            try:
                t = btf.type(btf.find(name, KIND_ENUM))
                _kernel_enums[name] = t.enumerators(btf)
            except NotFound:
                _kernel_enums[name] = {}
    return _kernel_enums[name]
