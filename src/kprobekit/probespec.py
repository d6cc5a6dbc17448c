"""Probe specs for `kprobekit trace`: parsed, checked against the kernel, compiled to fetch plans.

Syntax, as the kernel's kprobe_events (Documentation/trace/kprobetrace.rst):
    p[:[GRP/]EVENT] SYM[+OFFS] [FETCHARG...]     r[:[GRP/]EVENT] SYM [FETCHARG...]
    FETCHARG = [NAME=]FETCH[:TYPE]
    FETCH    = %REG | $argN | $retval | $comm | $stack | $stackN | +|-OFFS(FETCH)
             | BTF name: a parameter (or $argN, $retval) followed by ->member and .member
    TYPE     = u8..u64 s8..s64 x8..x64 string ustring, plus kprobekit's be16/be32 (network order)
and tracepoints:  t:CATEGORY/NAME [[NAME=]FIELD...]

A compiled fetch is (register, offset chain, size, kind): the BPF backend
runs it in a generic program, the ftrace backend writes it back in the
kernel's syntax (`+14(+24(%di)):u16`), so both read the same bytes.
"""

import ipaddress
import re
import struct

from . import kernel
from .btf import KIND_ARRAY, KIND_ENUM, KIND_ENUM64, KIND_INT, KIND_PTR, KIND_STRUCT, KIND_UNION, INT_SIGNED
from .errors import NotFound, NotSupported, UsageError

# Sizes shared with bpf/trace.bpf.c
MAX_PROBES, MAX_FETCH, MAX_DEREF, MAX_FILTER = 64, 8, 4, 4
DATA_MAX, STR_MAX = 512, 128
SRC_REG, SRC_COMM = 0, 1
FETCH_INT, FETCH_STR, FETCH_USTR = 0, 1, 2
FILTER_OPS = {"==": 0, "!=": 1, "<": 2, "<=": 3, ">": 4, ">=": 5, "&": 6}
_FETCH = struct.Struct("=BBBBHH4i")
_FILTER = struct.Struct("=HBBB3xq")
_PLAN_HEAD = struct.Struct("=IIII")

# x86-64 calling convention: $argN lives in these pt_regs members
ARG_REGS = ("di", "si", "dx", "cx", "r8", "r9")
_TYPE = re.compile(r"^(?:(?P<k>[usx])(?P<bits>8|16|32|64)|(?P<str>string|ustring)|be(?P<be>16|32))$")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class SpecError(UsageError):
    """A bad spec: the message shows it with a caret under the bad part."""

    def __init__(self, spec, start, end, why):
        caret = " " * start + "^" * max(1, end - start)
        super().__init__(f"parse probe spec: {why}\n    {spec}\n    {caret}")
        self.spec, self.start, self.end = spec, start, end


class Fetch:
    """One value to fetch: where it starts, the offsets to follow, how to decode it."""

    def __init__(self, name, text, span):
        self.name, self.text, self.span = name, text, span
        self.src = "reg"        # reg | comm | field (tracepoints)
        self.reg = None         # pt_regs member name
        self.offs = []          # deref chain, innermost first
        self.type = None        # ("u"|"s"|"x"|"be", bytes) or ("string",) or ("ustring",)
        self.field = None       # kernel.TracepointField for t: specs
        self.dst = 0            # where BPF stores it in event.data

    @property
    def is_string(self):
        return self.type[0] in ("string", "ustring")

    def decode(self, data):
        """The value from an event's data bytes."""
        if self.field is not None:
            return decode_field(self.field, data)
        if self.is_string:
            return data[self.dst:self.dst + STR_MAX].split(b"\0", 1)[0].decode(errors="replace")
        kind, size = self.type
        raw = int.from_bytes(data[self.dst:self.dst + size], "little")
        return convert_int(kind, size, raw)

    def kernel_syntax(self):
        """The fetch as kprobe_events writes it."""
        if self.src == "comm":
            return "$comm"
        s = f"%{self.reg}"
        offs = self.offs or ([0] if self.is_string else [])
        for o in offs:
            s = f"{'+' if o >= 0 else '-'}{abs(o)}({s})"
        kind = self.type[0]
        if kind in ("string", "ustring"):
            return f"{s}:{kind}"
        size = self.type[1]
        return f"{s}:{'u' if kind == 'be' else kind}{size * 8}"


def convert_int(kind, size, raw):
    bits = size * 8
    raw &= (1 << bits) - 1
    if kind == "s":
        return raw - (1 << bits) if raw >> (bits - 1) else raw
    if kind == "x":
        return hex(raw)
    if kind == "be":
        return int.from_bytes(raw.to_bytes(size, "little"), "big")
    return raw


class Probe:
    def __init__(self, kind, text, index):
        self.kind = kind            # p | r | t
        self.text = text
        self.index = index
        self.event = None           # display name
        self.target = None          # function, or (category, name)
        self.offset = 0
        self.fetches = []
        self.filters = []           # (Fetch, op, value) after compile_filter
        self.raw_size = 0

    def field(self, name):
        for f in self.fetches:
            if f.name == name:
                return f
        return None


# --- parsing ---

def _tokens(spec):
    return [(m.group(), m.start()) for m in re.finditer(r"\S+", spec)]


def parse(spec, index, ctx):
    """A Probe from one spec string; ctx gives BTF, pt_regs offsets and tracepoint formats."""
    toks = _tokens(spec)
    if not toks:
        raise SpecError(spec, 0, 1, "empty spec")
    head, hpos = toks[0]
    m = re.fullmatch(r"(?P<k>[prt])(?::(?:(?P<grp>[A-Za-z_][\w]*)/)?(?P<ev>[A-Za-z_][\w]*))?(?P<rest>.*)", head)
    if not m or (m.group("k") != "t" and m.group("rest")) or not head[0] in "prt":
        raise SpecError(spec, hpos, hpos + len(head),
                        "a spec starts with p (kprobe), r (return probe) or t:CATEGORY/NAME (tracepoint)")
    kind = m.group("k")
    probe = Probe(kind, spec, index)
    if kind == "t":
        return _parse_tracepoint(spec, toks, probe, ctx)
    # "p:inet_bind ARGS" (the function where the kernel's syntax puts an event name) is accepted too
    # when the next word is not a function
    if m.group("ev") and not m.group("grp") and (len(toks) < 2 or not ctx.is_function(toks[1][0].split("+")[0])):
        toks.insert(1, (m.group("ev"), hpos + 2))
    if len(toks) < 2:
        raise SpecError(spec, len(spec), len(spec) + 1, "missing the function to probe")
    sym, spos = toks[1]
    sm = re.fullmatch(r"(?P<sym>[A-Za-z_][\w.]*)(?:\+(?P<off>0x[0-9a-fA-F]+|\d+))?", sym)
    if not sm:
        raise SpecError(spec, spos, spos + len(sym), "expected SYMBOL or SYMBOL+OFFSET")
    if sm.group("off") and kind == "r":
        raise SpecError(spec, spos, spos + len(sym), "a return probe takes no offset")
    try:
        probe.target = ctx.functions.resolve(sm.group("sym"), "kprobe")
    except (NotFound, NotSupported) as e:
        raise SpecError(spec, spos, spos + len(sm.group("sym")), str(e)) from None
    probe.offset = int(sm.group("off"), 0) if sm.group("off") else 0
    probe.event = m.group("ev") if toks[1][1] != hpos + 2 and m.group("ev") else f"{kind}_{probe.target}_{probe.offset}"
    params = ctx.params(probe.target)     # None when not in BTF
    for n, (tok, pos) in enumerate(toks[2:], 1):
        probe.fetches.append(_parse_fetcharg(spec, tok, pos, n, probe, params, ctx))
    _check_fetch_count(spec, probe)
    return probe


def _check_fetch_count(spec, probe):
    if len(probe.fetches) > MAX_FETCH:
        f = probe.fetches[MAX_FETCH]
        raise SpecError(spec, f.span[0], f.span[1], f"at most {MAX_FETCH} fetch arguments per probe")
    names = set()
    for f in probe.fetches:
        if f.name in names:
            raise SpecError(spec, f.span[0], f.span[1], f"two fetch arguments named {f.name!r}")
        names.add(f.name)


def _parse_fetcharg(spec, tok, pos, n, probe, params, ctx):
    name, expr, epos = None, tok, pos
    nm = re.match(r"([A-Za-z_]\w*)=", tok)
    if nm:
        name, expr, epos = nm.group(1), tok[nm.end():], pos + nm.end()
    typ = None
    if ":" in expr:
        expr, _, tname = expr.rpartition(":")
        tpos = epos + len(expr) + 1
        tm = _TYPE.match(tname)
        if not tm:
            raise SpecError(spec, tpos, tpos + len(tname),
                            f"unknown type {tname!r} (u8..u64, s8..s64, x8..x64, string, ustring, be16, be32)")
        typ = ((tm.group("str"),) if tm.group("str") else
               ("be", int(tm.group("be")) // 8) if tm.group("be") else (tm.group("k"), int(tm.group("bits")) // 8))
    if not expr:
        raise SpecError(spec, epos, epos + 1, "empty fetch argument")
    f = Fetch(name, tok, (pos, pos + len(tok)))
    btf_type = _parse_expr(spec, expr, epos, f, probe, params, ctx)
    if f.src == "comm":
        if typ not in (None, ("string",)):
            raise SpecError(spec, pos, pos + len(tok), "$comm is a string")
        typ = ("string",)
    if typ is None:
        typ = ctx.type_of(btf_type) if btf_type else ("x", 8)
        if typ is None:
            raise SpecError(spec, epos, epos + len(expr),
                            f"cannot fetch a {ctx.btf.type_name(btf_type)} as a whole: name one of its members")
    elif typ[0] in ("string", "ustring") and btf_type is not None and _is_char_ptr(ctx, btf_type) and f.offs:
        f.offs.append(0)    # a char * member: follow the pointer to the string
    f.type = typ
    if f.name is None:
        f.name = _default_name(expr, n)
    return f


def _default_name(expr, n):
    m = re.search(r"[A-Za-z_]\w*$", expr)
    if m and not expr.startswith(("$", "%", "+", "-")):
        return m.group()
    if expr in ("$retval", "$comm"):
        return expr[1:]
    return f"arg{n}"


def _is_char_ptr(ctx, type_id):
    t, _ = ctx.btf.resolve(type_id)
    if t.kind != KIND_PTR:
        return False
    et, _ = ctx.btf.resolve(t.ref)
    return et.kind == KIND_INT and et.size == 1


def _parse_expr(spec, expr, pos, f, probe, params, ctx):
    """Fills f's source and offsets; returns the BTF type id of the value when known, else None."""
    dm = re.fullmatch(r"([+-]?)(0x[0-9a-fA-F]+|\d+)\((.*)\)", expr)
    if dm:
        inner_pos = pos + expr.index("(") + 1
        _parse_expr(spec, dm.group(3), inner_pos, f, probe, params, ctx)
        if f.src == "comm":
            raise SpecError(spec, inner_pos, inner_pos + len(dm.group(3)), "$comm cannot be dereferenced")
        off = int(dm.group(2), 0) * (-1 if dm.group(1) == "-" else 1)
        f.offs.append(off)
        if len(f.offs) > MAX_DEREF:
            raise SpecError(spec, pos, pos + len(expr), f"at most {MAX_DEREF} dereferences")
        return None
    if expr.startswith("%"):
        reg = expr[1:]
        reg = {"rax": "ax", "rbx": "bx", "rcx": "cx", "rdx": "dx", "rsi": "si", "rdi": "di",
               "rbp": "bp", "rsp": "sp", "rip": "ip"}.get(reg, reg)
        if reg not in ctx.regs:
            raise SpecError(spec, pos, pos + len(expr),
                            f"unknown register {expr!r} (x86-64: {', '.join('%' + r for r in ctx.regs)})")
        f.reg = reg
        return None
    if expr == "$comm":
        f.src = "comm"
        return None
    if expr == "$stack":
        f.reg = "sp"
        return None
    sm = re.fullmatch(r"\$stack(\d+)", expr)
    if sm:
        if probe.kind == "r":
            raise SpecError(spec, pos, pos + len(expr), "$stackN is for p: probes")
        f.reg, f.offs = "sp", [8 * int(sm.group(1))]
        return None
    # $argN, $retval or a parameter name, maybe followed by ->member / .member
    m = re.match(r"\$arg(\d+)|\$retval|[A-Za-z_]\w*", expr)
    if not m:
        raise SpecError(spec, pos, pos + len(expr),
                        "expected %REG, $argN, $retval, $comm, $stackN, +OFFS(FETCH) or a parameter name")
    head = m.group()
    type_id = None
    if head == "$retval":
        if probe.kind != "r":
            raise SpecError(spec, pos, pos + len(head), "$retval exists only in r: (return) probes")
        f.reg = "ax"
        type_id = params[1] if params else None
    elif head.startswith("$arg"):
        n = int(m.group(1))
        if probe.kind == "r":
            raise SpecError(spec, pos, pos + len(head), "$argN is for p: probes (at a return, arguments are gone)")
        if not 1 <= n <= len(ARG_REGS):
            raise SpecError(spec, pos, pos + len(head),
                            f"{head}: arguments count from $arg1, and only $arg1..$arg{len(ARG_REGS)} are in registers")
        f.reg = ARG_REGS[n - 1]
        if params and n <= len(params[0]):
            type_id = params[0][n - 1][1]
    else:
        if params is None:
            raise SpecError(spec, pos, pos + len(head),
                            f"{head!r}: {probe.target} is not in kernel BTF, so its parameters have no names")
        names = [p[0] for p in params[0]]
        if head not in names:
            raise SpecError(spec, pos, pos + len(head),
                            f"{probe.target} has no parameter {head!r} (has: {', '.join(names) or 'none'})")
        if probe.kind == "r":
            raise SpecError(spec, pos, pos + len(head), "parameters are for p: probes (at a return they are gone)")
        i = names.index(head)
        if i >= len(ARG_REGS):
            raise SpecError(spec, pos, pos + len(head), f"{head} is passed on the stack, not in a register")
        f.reg, type_id = ARG_REGS[i], params[0][i][1]
    rest, rpos = expr[m.end():], pos + m.end()
    while rest:
        am = re.match(r"(->|\.)([A-Za-z_]\w*)", rest)
        if not am:
            raise SpecError(spec, rpos, rpos + len(rest), "expected ->member or .member")
        op, member = am.groups()
        if type_id is None:
            raise SpecError(spec, rpos, rpos + am.end(), "no BTF type here to take a member of")
        t, _ = ctx.btf.resolve(type_id)
        if op == "->":
            if t.kind != KIND_PTR:
                raise SpecError(spec, rpos, rpos + 2, f"'->' on a {ctx.btf.type_name(type_id)}, not a pointer")
            struct_id = t.ref
            new_level = True
        else:
            if t.kind not in (KIND_STRUCT, KIND_UNION) or not f.offs:
                raise SpecError(spec, rpos, rpos + 1, f"'.' on a {ctx.btf.type_name(type_id)}: use '->' on pointers")
            struct_id = type_id
            new_level = False
        try:
            type_id, off = ctx.btf.member(struct_id, member)
        except NotFound:
            close = _closest(member, ctx.btf.member_names(struct_id))
            raise SpecError(spec, rpos + len(op), rpos + am.end(),
                            f"{ctx.btf.type_name(struct_id)} has no member {member!r}{close}") from None
        if new_level:
            if len(f.offs) >= MAX_DEREF:
                raise SpecError(spec, rpos, rpos + am.end(), f"at most {MAX_DEREF} dereferences")
            f.offs.append(off)
        else:
            f.offs[-1] += off
        rest, rpos = rest[am.end():], rpos + am.end()
    return type_id


def _closest(name, names):
    import difflib
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    return f"; closest: {', '.join(close)}" if close else ""


def _parse_tracepoint(spec, toks, probe, ctx):
    head, hpos = toks[0]
    m = re.fullmatch(r"t:(?P<cat>\w+)[/:](?P<name>\w+)", head)
    if not m:
        raise SpecError(spec, hpos, hpos + len(head), "expected t:CATEGORY/NAME")
    cat, name = m.group("cat"), m.group("name")
    fields = ctx.tracepoint(cat, name)
    if fields is None:
        close = _closest(f"{cat}:{name}", ctx.tracepoint_names())
        raise SpecError(spec, hpos + 2, hpos + len(head), f"no tracepoint {cat}:{name}{close}")
    probe.target = (cat, name)
    probe.event = f"{cat}:{name}"
    by_name = {fl.name: fl for fl in fields}
    probe.raw_size = max((fl.offset + fl.size for fl in fields), default=0)
    wanted = toks[1:] or [(fl.name, None) for fl in fields if not fl.name.startswith("common_")]
    for tok, pos in wanted:
        alias, fname = (tok.split("=", 1) if "=" in tok else (tok, tok))
        fl = by_name.get(fname)
        if fl is None:
            p = pos + len(tok) - len(fname)
            names = [n for n in by_name if not n.startswith("common_")]
            raise SpecError(spec, p, p + len(fname),
                            f"{cat}:{name} has no field {fname!r} (has: {', '.join(names)})")
        f = Fetch(alias, tok, (pos, pos + len(tok)) if pos is not None else (0, 0))
        f.src, f.field, f.dst = "field", fl, fl.offset
        f.type = ("string",) if fl.is_string else (("s" if fl.signed else "u"), fl.size)
        probe.fetches.append(f)
    return probe


def decode_field(fl, data):
    """A tracepoint field from the raw record: ints, strings, addresses, pointers in hex."""
    raw = data[fl.offset:fl.offset + fl.size]
    if fl.data_loc:
        loc = int.from_bytes(raw[:4], "little")
        off, length = loc & 0xFFFF, loc >> 16
        return data[off:off + length].split(b"\0", 1)[0].decode(errors="replace")
    if fl.is_string:
        return raw.split(b"\0", 1)[0].decode(errors="replace")
    if fl.array:
        if fl.size == 4 and "8" in fl.c_type:
            return str(ipaddress.IPv4Address(raw))
        if fl.size == 16 and "8" in fl.c_type:
            return str(ipaddress.IPv6Address(raw))
        return raw.hex()
    v = int.from_bytes(raw, "little", signed=fl.signed)
    if "*" in fl.c_type:
        return hex(v & ((1 << (8 * fl.size)) - 1))
    return v


# --- filters ---

def parse_filter(text, probes):
    """'port == 8080 && ret < 0' -> per probe [(fetch, op, value)]; each term must name a field of every probe."""
    terms = [t.strip() for t in text.split("&&")] if text else []
    if len(terms) > MAX_FILTER:
        raise UsageError(f"parse filter {text!r}: at most {MAX_FILTER} terms joined by &&")
    pos = 0
    for term in terms:
        start = text.index(term, pos)
        pos = start + len(term)
        m = re.fullmatch(r"([A-Za-z_]\w*)\s*(==|!=|<=|>=|<|>|&)\s*(-?(?:0x[0-9a-fA-F]+|\d+))", term)
        if not m:
            raise SpecError(text, start, start + len(term),
                            "a filter term is FIELD OP NUMBER (OP: == != < <= > >= &), terms joined by &&")
        name, op, value = m.group(1), m.group(2), int(m.group(3), 0)
        for p in probes:
            f = p.field(name)
            if f is None:
                raise SpecError(text, start, start + len(name),
                                f"{p.event} has no field {name!r} (has: {', '.join(x.name for x in p.fetches)})")
            if f.is_string:
                raise SpecError(text, start, start + len(term), f"{name} is a string: filters compare numbers")
            lo, hi = _int_range(f.type)
            if not lo <= value <= hi:
                vstart = start + m.start(3)
                raise SpecError(text, vstart, vstart + len(m.group(3)),
                                f"{name} is {_type_name(f.type)}: compare it with {lo}..{hi}")
            if f.type[0] == "be":
                if op not in ("==", "!="):
                    raise SpecError(text, start, start + len(term),
                                    f"{name} is in network byte order: only == and != compare it")
                value = int.from_bytes(value.to_bytes(f.type[1], "big"), "little")
            p.filters.append((f, op, value))


def _int_range(type_):
    """(lowest, highest) value of a fetch type (kind, size in bytes)."""
    kind, size = type_
    bits = size * 8
    if kind == "s":
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _type_name(type_):
    kind, size = type_
    return f"{'u' if kind in ('x', 'be') else kind}{size * 8}" + (" in network byte order" if kind == "be" else "")


def ftrace_filter(probe):
    return " && ".join(f"{f.name} {op} {value}" for f, op, value in probe.filters)


# --- BPF plans ---

def layout(probe):
    """Assigns each fetch its place in event.data (kprobes; tracepoints keep the record's offsets)."""
    if probe.kind == "t":
        return
    pos = 0
    for f in probe.fetches:
        f.dst = pos
        pos += STR_MAX if f.is_string else 8
    if pos > DATA_MAX:
        raise UsageError(f"compile {probe.event}: the fetched values need {pos} bytes, at most {DATA_MAX} "
                         f"(a string takes {STR_MAX})")


def plan_bytes(probe, regs, value_size):
    """The `struct plan` of bpf/trace.bpf.c for a probe."""
    layout(probe)
    out = bytearray(_PLAN_HEAD.pack(len(probe.fetches) if probe.kind != "t" else 0, len(probe.filters),
                                    min(probe.raw_size, DATA_MAX), 0))
    fetches = probe.fetches if probe.kind != "t" else []
    for i in range(MAX_FETCH):
        if i < len(fetches):
            f = fetches[i]
            kind = {"string": FETCH_STR, "ustring": FETCH_USTR}.get(f.type[0], FETCH_INT)
            size = 0 if f.is_string else f.type[1]
            offs = (f.offs + [0] * MAX_DEREF)[:MAX_DEREF]
            out += _FETCH.pack(SRC_COMM if f.src == "comm" else SRC_REG, kind, size, len(f.offs),
                               regs.get(f.reg, 0) if f.reg else 0, f.dst, *offs)
        else:
            out += bytes(_FETCH.size)
    for i in range(MAX_FILTER):
        if i < len(probe.filters):
            f, op, value = probe.filters[i]
            signed = f.type[0] == "s"
            size = f.type[1]
            if signed:
                value = max(-(1 << 63), min(value, (1 << 63) - 1))
            else:
                value = value & ((1 << 64) - 1)
                value = value - (1 << 64) if value >> 63 else value
            out += _FILTER.pack(f.dst, size, FILTER_OPS[op], signed, value)
        else:
            out += bytes(_FILTER.size)
    if len(out) != value_size:
        raise UsageError(f"compile {probe.event}: plan is {len(out)} bytes, the object expects {value_size} "
                         f"— kprobekit and its objects disagree: run `make bpf`")
    return bytes(out)


# --- the kernel, as parsing needs it ---

class Context:
    """BTF, pt_regs layout and tracepoint formats, loaded on first use."""

    def __init__(self, functions):
        self.functions = functions     # symbols.Functions
        self._regs = None
        self._tp_names = None

    @property
    def btf(self):
        return self.functions.btf

    @property
    def regs(self):
        """pt_regs member -> u64 word index, from kernel BTF."""
        if self._regs is None:
            sid = self.btf.find("pt_regs", KIND_STRUCT)
            self._regs = {name: bit_off // 64 for name, _, bit_off, _ in self.btf.type(sid).members(self.btf)
                          if name}
        return self._regs

    def is_function(self, name):
        return name in self.functions.kallsyms() or name in self.functions.btf_functions()

    def params(self, func):
        try:
            return self.btf.func_proto(func)
        except NotFound:
            return None

    def type_of(self, type_id):
        """The fetch type for a BTF type: ints by size and sign, __be16/__be32, char arrays as strings."""
        t, typedefs = self.btf.resolve(type_id)
        if any(td in ("__be16", "__be32") for td in typedefs):
            return ("be", t.size)
        if t.kind == KIND_INT:
            return ("s" if t.int_info()[0] & INT_SIGNED else "u", t.size)
        if t.kind in (KIND_ENUM, KIND_ENUM64):
            return ("s", t.size)
        if t.kind == KIND_PTR:
            return ("x", 8)
        if t.kind == KIND_ARRAY:
            et, _ = self.btf.resolve(t.array_info()[0])
            if et.kind == KIND_INT and et.size == 1:
                return ("string",)
        return None

    def tracepoint(self, cat, name):
        return kernel.tracepoint_fields(cat, name)

    def tracepoint_names(self):
        if self._tp_names is None:
            self._tp_names = kernel.tracepoints()
        return self._tp_names
