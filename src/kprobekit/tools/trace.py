"""trace: probes written as kernel kprobe_events specs, BTF names or tracepoints; one line per hit.

Backends: bpf (bpf/trace.bpf.c: generic programs driven by fetch plans in a
map) and ftrace (kprobe_events + trace_pipe, see ftrace.py).  Specs are
parsed and checked against the kernel (probespec.py) before anything loads.
"""

import json
import sys

from .. import events, features, kernel, probespec, stacks
from ..cli import output
from ..cli.runner import check_privileges, command_parser, pid_arg, pump, run_command
from ..errors import NotSupported, UsageError
from ..object import Object
from ..symbols import Functions

EXAMPLES = """examples:
  kprobekit trace 'p:inet_bind port=+2($arg2):be16'
  kprobekit trace 'p:inet_listen port=sock->sk->__sk_common.skc_num backlog'
  kprobekit trace 'r:inet_bind ret=$retval:s32' --filter 'ret != 0'
  kprobekit trace 't:sock/inet_sock_set_state sport dport newstate' --filter 'newstate == 10'
  kprobekit trace -K 't:skb/kfree_skb reason'        # with the kernel stack of each hit
  kprobekit trace --backend ftrace 'p:do_sys_openat2 file=+0($arg2):ustring'"""


def parser():
    p = command_parser("trace", "Trace kernel functions and tracepoints, fetching arguments by spec.", EXAMPLES)
    p.add_argument("specs", nargs="+", metavar="SPEC",
                   help="p[:[GRP/]EVENT] SYM[+OFFS] [FETCHARG...] | r[:...] SYM [FETCHARG...] | "
                        "t:CATEGORY/NAME [FIELD...]")
    p.add_argument("--filter", default="", metavar="EXPR",
                   help="FIELD OP NUMBER [&& ...], OP one of == != < <= > >= & (applied in the kernel)")
    p.add_argument("-p", "--pid", type=pid_arg, help="this process only")
    p.add_argument("-K", "--kernel-stack", action="store_true",
                   help="print the kernel stack under each hit (JSON: \"stack\", a list of frames)")
    p.add_argument("--json", action="store_true", help="one JSON object per hit")
    p.add_argument("--backend", default="auto", choices=["auto", "bpf", "ftrace"],
                   help="bpf (default): generic BPF programs; ftrace: kprobe_events and trace_pipe, no BPF")
    p.add_argument("--buffer", default="auto", choices=["auto", "ring", "perf"], help="BPF event transport")
    return p


def _need(probes, backend):
    """Raises the error that teaches when the kernel lacks the hooks the probes need."""
    kinds = {p.kind for p in probes}
    if backend == "ftrace":
        if "t" in kinds:
            raise UsageError("use ftrace backend: t: tracepoint specs need the bpf backend",
                             hint="drop --backend ftrace")
        return
    if kinds & {"p", "r"}:
        for feat in (["kprobe"] if "p" in kinds else []) + (["kretprobe"] if "r" in kinds else []):
            if not features.have(feat):
                func = next(p.target for p in probes if p.kind in "pr")
                raise NotSupported(
                    f"probe {func}: this kernel has no kprobes ({features.probe(feat).reason})",
                    feature=feat,
                    hint="trace tracepoints instead (t:CATEGORY/NAME, see `kprobekit list 'sock:*'`), "
                         "or time syscalls with `kprobekit funclatency SYSCALL` (syscall tracepoints)")
    if "t" in kinds and not features.have("tracepoint"):
        raise NotSupported(f"attach tracepoints: {features.probe('tracepoint').reason}", feature="tracepoint")


def compile_specs(args):
    funcs = Functions()
    ctx = probespec.Context(funcs)
    probes = [probespec.parse(spec, i, ctx) for i, spec in enumerate(args.specs)]
    if len(probes) > probespec.MAX_PROBES:
        raise UsageError(f"trace: at most {probespec.MAX_PROBES} specs")
    probespec.parse_filter(args.filter, probes)
    regs = ctx.regs if any(p.kind != "t" for p in probes) else {}
    return probes, regs


def body(args, stopped):
    check_privileges()
    probes, regs = compile_specs(args)
    backend = "bpf" if args.backend == "auto" else args.backend
    _need(probes, backend)
    sink = _Sink(args)
    if backend == "ftrace":
        return _run_ftrace(args, probes, sink, stopped)
    return _run_bpf(args, probes, regs, sink, stopped)


def load_bpf(probes, regs, pid=None, use_perf=False, configure=None, after_load=None, kernel_stack=False):
    """Loads trace.bpf.o with the probes' plans and attaches it; `configure(obj)` runs before load
    (the exporter's metrics mode), `after_load(obj)` before attach."""
    if any(p.kind != "t" for p in probes):
        kernel.remove_stale_kprobes()
    obj = Object.open("trace")
    kinds = {p.kind for p in probes}
    obj.set_autoload([name for kind, name in (("p", "kprobe_fetch"), ("r", "kretprobe_fetch"),
                                              ("t", "tracepoint_raw")) if kind in kinds])
    if pid:
        obj.rodata["filter_pid"] = pid
    obj.rodata["want_kstack"] = kernel_stack
    stacks.prepare(obj, kernel_stack)
    if configure:
        configure(obj)
    else:
        events.prepare(obj, use_perf, events.TOOL_RING_BYTES)
    obj.load()
    plans = obj.map("plans")
    for p in probes:
        plans[p.index] = probespec.plan_bytes(p, regs, plans.value_size)
    if after_load:
        after_load(obj)
    for p in probes:
        if p.kind == "t":
            obj.program("tracepoint_raw").attach_tracepoint(*p.target, cookie=p.index)
        else:
            prog = obj.program("kretprobe_fetch" if p.kind == "r" else "kprobe_fetch")
            prog.attach_kprobe(p.target, p.kind == "r", cookie=p.index, offset=p.offset)
    return obj


def _run_bpf(args, probes, regs, sink, stopped):
    use_perf = args.buffer == "perf" or (args.buffer == "auto" and not features.have("ringbuf"))
    obj = load_bpf(probes, regs, args.pid, use_perf, kernel_stack=args.kernel_stack)
    stream = events.open_stream(obj)
    data_index = stream.layout.record._fields.index("data")
    kstacks = None
    if args.kernel_stack:
        kstacks = stacks.KernelStacks(obj)
        if kstacks.symbols.hidden:
            print(f"kprobekit: kernel stacks as bare addresses: {kstacks.symbols.hidden}", file=sys.stderr)
    print("kprobekit: using bpf backend", file=sys.stderr, flush=True)
    sink.start(probes)
    try:
        lost = pump(stream, lambda recs: _emit_bpf(sink, probes, recs, data_index, kstacks), stopped)
    finally:
        stream.close()
    output.report_lost(lost, args.json)
    return 0


def _emit_bpf(sink, probes, recs, data_index, kstacks):
    if not recs:
        return
    hits = []
    for r in recs:
        p = probes[r.probe]
        data = tuple.__getitem__(r, data_index)
        hits.append((p, r.pid, r.tid, r.comm, {f.name: f.decode(data) for f in p.fetches},
                     kstacks.get(r.kstack) if kstacks else None))
    sink.write(hits)


def _run_ftrace(args, probes, sink, stopped):
    from ..ftrace import KprobeEvents, parse_args
    kernel.remove_stale_kprobes()
    kp = KprobeEvents()
    try:
        by_name = {}
        for p in probes:
            by_name[kp.add(p, probespec.ftrace_filter(p))] = p
        pids = None
        if args.pid:
            import os
            pids = [int(t) for t in os.listdir(f"/proc/{args.pid}/task")]
        kp.start(pids, stacks=args.kernel_stack)
        print("kprobekit: using ftrace backend", file=sys.stderr, flush=True)
        sink.start(probes)
        while True:
            last = stopped()
            hits = []
            for event, comm, tid, tgid, ts, where, text, stack in kp.poll(0 if last else 250, final=last):
                if args.pid and tgid != args.pid:
                    continue
                p = by_name[event]
                hits.append((p, tgid, tid, comm, parse_args(p, text), stack))
            if hits:
                sink.write(hits)
            if last:
                break
    finally:
        kp.close()
    return 0


class _Sink:
    def __init__(self, args):
        self.json = args.json

    def start(self, probes):
        if not self.json:
            output.emit(f"{'PID':<7} {'TID':<7} {'COMM':<16} EVENT\n")

    def write(self, hits):
        lines = []
        for p, pid, tid, comm, values, stack in hits:
            if self.json:
                rec = {"event": p.event, "pid": pid, "tid": tid, "comm": comm,
                       "args": {k: output.jsonable(v) for k, v in values.items()}}
                if stack is not None:
                    rec["stack"] = stack.as_json()
                lines.append(json.dumps(rec))
            else:
                fields = " ".join(f"{k}={json.dumps(v) if isinstance(v, str) and not v.startswith('0x') else v}"
                                  for k, v in values.items())
                lines.append(f"{pid:<7} {tid:<7} {comm:<16} {p.event}: {fields}".rstrip())
                if stack is not None:
                    lines.extend(stack.text_lines())
        output.emit("\n".join(lines) + "\n")


def main(argv):
    return run_command("trace", parser(), argv, body)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
