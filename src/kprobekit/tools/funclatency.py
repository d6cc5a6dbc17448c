"""funclatency: how long kernel functions take, as a log2 histogram or one line per call.

BPF side: bpf/funclatency.bpf.c.  Functions are chosen at run time, so the
programs are attached here rather than by section name.
"""

import fnmatch
import json
import sys
import time

from .. import events, features, kernel
from ..btf import KIND_INT, KIND_PTR
from ..cli import output
from ..cli.runner import (check_privileges, choose_backend, command_parser, pid_arg, pump, run_command,
                          seconds_arg)
from ..errors import NotSupported
from ..histogram import format_log2
from ..object import Object
from ..symbols import Functions
from ..tool import Backend, Tool

BACKENDS = Tool(
    "funclatency", "Time kernel functions.", columns=(),
    backends=[
        Backend("fentry", ["fentry_entry", "fexit_return"], needs=["fentry", "fexit"],
                note="fentry+fexit, one object per function"),
        Backend("kprobe", ["kprobe_entry", "kretprobe_return"], needs=["kprobe", "kretprobe"],
                note="kprobe+kretprobe"),
        Backend("syscalls", ["sys_entry", "sys_return", "sys_entry_one", "sys_return_one"], needs=["tracepoint"],
                note="raw_syscalls:sys_enter/sys_exit, two hooks for any number of syscalls; "
                     "syscall names only (bind, openat, ...)"),
    ])
HOOK = {"fentry": "fentry", "kprobe": "kprobe", "syscalls": "syscall"}
UNITS = {"nsecs": 1, "usecs": 1000, "msecs": 1000000}
SHARED_MAPS = ("events", "kk_scratch", "starts", "hist", "stats")

EXAMPLES = """examples:
  kprobekit funclatency inet_release            # histogram of inet_release's duration, ns
  kprobekit funclatency -u 'tcp_v4_*'           # every matching function, in microseconds
  kprobekit funclatency --per-call -p 181 inet_release
  kprobekit funclatency -i 5 bind               # a syscall: works without kprobes too"""


def parser():
    p = command_parser("funclatency", "Time kernel functions: log2 histogram of their duration.", EXAMPLES)
    p.add_argument("functions", nargs="+", metavar="FUNC", help="kernel function, glob ('tcp_v4_*') or syscall")
    unit = p.add_mutually_exclusive_group()
    unit.add_argument("-u", "--microseconds", dest="unit", action="store_const", const="usecs",
                      help="histogram in microseconds")
    unit.add_argument("-m", "--milliseconds", dest="unit", action="store_const", const="msecs",
                      help="histogram in milliseconds")
    p.add_argument("-p", "--pid", type=pid_arg, help="time calls of this process only (filtered in the kernel)")
    p.add_argument("-i", "--interval", type=seconds_arg, help="print the histograms of each SECONDS interval")
    p.add_argument("--per-call", action="store_true",
                   help="one line per call: function, return value, duration in ns")
    p.add_argument("--json", action="store_true", help="JSON lines (per call, or one per function and interval)")
    p.add_argument("--backend", default="auto", choices=["auto"] + [b.name for b in BACKENDS.backends])
    p.add_argument("--buffer", default="auto", choices=["auto", "ring", "perf"], help="per-call event transport")
    return p


def pick_backend(args, funcs):
    """The backend to use: as for tools, from features, except that the syscall fallback only takes syscalls."""
    if args.backend != "auto":
        return choose_backend(BACKENDS, args.backend)
    if features.have("fentry") and features.have("fexit"):
        return choose_backend(BACKENDS, "fentry")[0], "using fentry backend"
    if features.have("kprobe") and features.have("kretprobe"):
        return choose_backend(BACKENDS, "kprobe")[0], "using kprobe backend (fentry unavailable)"
    syscalls = kernel.syscall_names()
    not_syscalls = [f for f in args.functions
                    if kernel.syscall_tracepoint(f) is None and not fnmatch.filter(syscalls, f)]
    if not_syscalls or not features.have("tracepoint"):
        raise NotSupported(
            f"time {not_syscalls[0] if not_syscalls else args.functions[0]}: this kernel has no kprobes "
            f"({features.probe('kprobe').reason}) and refuses fentry ({features.probe('fentry').reason})",
            feature="kprobe",
            hint="only syscalls can be timed here, through syscalls:sys_enter_X/sys_exit_X "
                 "(e.g. `funclatency bind`); for other events use `kprobekit trace t:CATEGORY/NAME`")
    return BACKENDS.backend("syscalls"), "using syscalls backend (no kprobes, no fentry)"


def ret_decoder(funcs, backend, names):
    """Per function: how to show its raw 64-bit return value (from its BTF return type)."""
    out = []
    for name in names:
        conv = int
        if backend.name == "syscalls":
            conv = _signed(8)
        else:
            try:
                _, ret_id = funcs.btf.func_proto(name)
                t, _ = funcs.btf.resolve(ret_id)
                if not ret_id:
                    conv = lambda v: None        # noqa: E731 - void
                elif t.kind == KIND_INT:
                    conv = _signed(t.size) if t.int_info()[0] & 1 else _unsigned(t.size)
                elif t.kind == KIND_PTR:
                    conv = hex
            except Exception:       # not in BTF (kprobe on a module or clone): raw value
                conv = _signed(8)
        out.append(conv)
    return out


def _signed(size):
    bits = size * 8
    return lambda v: ((v & ((1 << bits) - 1)) ^ (1 << (bits - 1))) - (1 << (bits - 1))


def _unsigned(size):
    return lambda v: v & ((1 << (size * 8)) - 1)


def load(args, backend, names):
    """Opens, loads and attaches; returns the object whose maps hold the results."""
    use_perf = args.buffer == "perf" or (args.buffer == "auto" and not features.have("ringbuf"))
    unit = UNITS[args.unit or "nsecs"]

    def configure(obj, func_id=0):
        obj.set_autoload(backend.programs)
        if args.pid:
            obj.rodata["filter_pid"] = args.pid
        obj.rodata["unit_ns"] = unit
        obj.rodata["per_call"] = bool(args.per_call)
        obj.rodata["func_id"] = func_id
        events.prepare(obj, use_perf, events.TOOL_RING_BYTES)

    if backend.name == "fentry":
        # the attach target is part of the loaded program: one object per function, maps shared
        first = None
        for i, name in enumerate(names):
            obj = Object.open("funclatency")
            configure(obj, i)
            for prog in backend.programs:
                obj.program(prog).set_attach_target(name)
            if first is not None:
                for m in SHARED_MAPS:
                    obj.map(m).reuse(first.map(m))
            obj.load()
            for prog in backend.programs:
                obj.program(prog).attach_trace()
            first = first or obj
        return first
    obj = Object.open("funclatency")
    configure(obj)
    obj.load()
    entry, ret = (obj.program(p) for p in backend.programs[:2])
    if backend.name == "syscalls":
        # two hooks for all the syscalls with a known number (which ones: in a map), one pair each for the rest
        funcs = obj.map("syscall_funcs")
        one_entry, one_ret = obj.program("sys_entry_one"), obj.program("sys_return_one")
        for i, name in enumerate(names):
            nr = kernel.syscall_number(name)
            if nr is not None:
                funcs[nr] = i + 1
            else:
                one_entry.attach_tracepoint("syscalls", f"sys_enter_{name}", cookie=i)
                one_ret.attach_tracepoint("syscalls", f"sys_exit_{name}", cookie=i)
        entry.attach()
        ret.attach()
        return obj
    for i, name in enumerate(names):
        entry.attach_kprobe(name, False, cookie=i)
        ret.attach_kprobe(name, True, cookie=i)
    return obj


def read_hist(obj, names, cumulative=False):
    """{function index: ({slot: count}, calls, total ns)} of the calls since the previous read (the first:
    since attach), or since attach when cumulative (Prometheus counters).  Map.take, not clearing the
    maps, which would lose calls ending in between."""
    hist, stats = obj.map("hist"), obj.map("stats")
    out = {}
    for key, per_cpu in (dict(hist.items()) if cumulative else hist.take()).items():
        out.setdefault(key.func, {})[key.slot] = sum(per_cpu)
    stats = dict(stats.items()) if cumulative else stats.take()
    result = {}
    for i in range(len(names)):
        st = stats.get(i, [])
        calls = sum(s.count for s in st)
        if calls or i in out:
            result[i] = (out.get(i, {}), calls, sum(s.total_ns for s in st))
    return result


def print_hists(args, names, result, unit):
    if args.json:
        for i, (slots, calls, total) in sorted(result.items()):
            buckets = [{"low": (1 << s) >> 1, "high": (1 << s) - 1, "count": c} for s, c in sorted(slots.items())]
            output.emit(json.dumps({"func": names[i], "unit": unit, "count": calls, "total_ns": total,
                                    "buckets": buckets}) + "\n")
        return
    lines = []
    for i, (slots, calls, total) in sorted(result.items()):
        lines.append(f"\nFunction = {names[i]}")
        lines.extend(format_log2(slots, unit))
        avg = total / calls / UNITS[unit] if calls else 0
        lines.append(f"\navg = {avg:.0f} {unit}, total: {total / UNITS[unit]:.0f} {unit}, count: {calls}")
    if not result:
        lines.append("no calls")
    output.emit("\n".join(lines) + "\n")


def body(args, stopped):
    check_privileges()
    funcs = Functions()
    backend, message = pick_backend(args, funcs)
    names = funcs.expand(args.functions, HOOK[backend.name])
    if backend.name == "kprobe":
        kernel.remove_stale_kprobes()
    decoders = ret_decoder(funcs, backend, names)
    obj = load(args, backend, names)
    funcs.close()
    unit = args.unit or "nsecs"
    stream = events.open_stream(obj) if args.per_call else None
    what = names[0] if len(names) == 1 else f"{len(names)} functions"
    print(f"kprobekit: using {backend.name} backend{message[len('using ' + backend.name + ' backend'):]}; "
          f"timing {what}", file=sys.stderr, flush=True)
    if args.per_call and not args.json:
        output.emit(f"{'PID':<7} {'COMM':<16} CALL\n")
    next_report = time.monotonic() + args.interval if args.interval else None
    try:
        if stream is not None:
            lost = pump(stream, lambda recs: _per_call(args, names, decoders, recs), stopped)
            output.report_lost(lost, args.json)
            return 0
        while not stopped():
            time.sleep(0.25)
            if next_report and time.monotonic() >= next_report:
                result = read_hist(obj, names)
                if not args.json:
                    output.emit(f"\n{time.strftime('%H:%M:%S')}\n")
                print_hists(args, names, result, unit)
                next_report += args.interval
        else:
            # with -i, what arrived since the last interval
            final = read_hist(obj, names)
            if final or not args.interval:
                print_hists(args, names, final, unit)
    finally:
        if stream is not None:
            stream.close()
    return 0


def _per_call(args, names, decoders, recs):
    if not recs:
        return
    lines = []
    for r in recs:
        func = names[r.func]
        ret = decoders[r.func](r.ret & 0xFFFFFFFFFFFFFFFF)
        if args.json:
            lines.append(json.dumps({"func": func, "pid": r.pid, "tid": r.tid, "comm": r.comm, "ret": ret,
                                     "duration_ns": r.duration_ns}))
        else:
            returned = f" returned {ret}" if ret is not None else " returned"
            lines.append(f"{r.pid:<7} {r.comm:<16} {func}{returned} and took {r.duration_ns} ns")
    output.emit("\n".join(lines) + "\n")


def main(argv):
    return run_command("funclatency", parser(), argv, body)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
