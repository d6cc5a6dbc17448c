"""progtrace: fentry/fexit on a loaded BPF program: calls per second, duration histogram, return values.

Reuses bpf/funclatency.bpf.c's fentry backend, with the attach target set to
the program's function (bpf_program__set_attach_target with the target's fd).
"""

import json
import sys
import time

from .. import features
from ..cli import output
from ..cli.runner import check_privileges, command_parser, run_command, seconds_arg
from ..errors import NotSupported
from ..histogram import format_log2
from ..object import Object
from ..progs import find

EXAMPLES = """examples:
  kprobekit progtrace 42                # by id, as `bpftool prog` shows it
  kprobekit progtrace name xdp_prog -i 1
  kprobekit progtrace --json kk_sockfilter"""


def parser():
    p = command_parser("progtrace", "Trace a loaded BPF program: calls/s, duration, return values.", EXAMPLES)
    p.add_argument("prog", nargs="+", metavar="PROG", help="ID, 'id ID', NAME or 'name NAME'")
    p.add_argument("-i", "--interval", type=seconds_arg, metavar="SECONDS", help="print calls/s every SECONDS")
    p.add_argument("--json", action="store_true", help="JSON lines")
    return p


def body(args, stopped):
    check_privileges()
    target = find(" ".join(args.prog))
    try:
        for feat in ("fentry", "fexit"):
            if not features.have(feat):
                raise NotSupported(f"trace BPF program {target.id} {target.func_name}: {feat} unavailable: "
                                   f"{features.probe(feat).reason}", feature=feat,
                                   hint="progtrace needs fentry/fexit (Linux >= 5.5 with BTF)")
        obj = Object.open("funclatency")
        progs = ("fentry_entry", "fexit_return")
        obj.set_autoload(progs)
        obj.rodata["count_rets"] = True
        for name in progs:
            obj.program(name).set_attach_target(target.func_name, target.fd)
        obj.load()
        for name in progs:
            obj.program(name).attach_trace()
        print(f"kprobekit: using fentry backend; tracing BPF program {target.id} {target.func_name} "
              f"({target.type})", file=sys.stderr, flush=True)
        start = last = time.monotonic()
        last_calls = 0
        while not stopped():
            time.sleep(0.1)
            now = time.monotonic()
            if args.interval and now - last >= args.interval:
                calls = _stats(obj)[0]
                _rate(args, target, calls - last_calls, now - last)
                last, last_calls = now, calls
        _summary(args, target, obj, time.monotonic() - start)
    finally:
        target.close()
    return 0


def _stats(obj):
    per_cpu = obj.map("stats").get(0) or []
    return sum(s.count for s in per_cpu), sum(s.total_ns for s in per_cpu)


def _rate(args, target, calls, seconds):
    rate = calls / seconds if seconds else 0.0
    if args.json:
        output.emit(json.dumps({"prog_id": target.id, "prog_name": target.func_name, "calls": calls,
                                "calls_per_s": round(rate, 3)}) + "\n")
    else:
        output.emit(f"{time.strftime('%H:%M:%S')} {target.func_name}: {calls} calls, {rate:.1f} calls/s\n")


def _summary(args, target, obj, seconds):
    calls, total = _stats(obj)
    slots = {k.slot: sum(v) for k, v in obj.map("hist").items()}
    rets = sorted((k.ret, sum(v)) for k, v in obj.map("rets").items())
    if args.json:
        output.emit(json.dumps({
            "prog_id": target.id, "prog_name": target.func_name, "prog_type": target.type, "calls": calls,
            "calls_per_s": round(calls / seconds, 3) if seconds else 0.0, "total_ns": total,
            "buckets": [{"low": (1 << s) >> 1, "high": (1 << s) - 1, "count": c} for s, c in sorted(slots.items())],
            "returns": [{"ret": r, "count": c} for r, c in rets]}) + "\n")
        return
    lines = [f"\nBPF program {target.id} {target.func_name} ({target.type}): {calls} calls in {seconds:.1f} s, "
             f"{calls / seconds if seconds else 0:.1f} calls/s, avg {total / calls if calls else 0:.0f} ns"]
    lines.extend(format_log2(slots, "nsecs"))
    if rets:
        lines.append(f"\n{'RETURN':>20} : count")
        lines.extend(f"{r:>20} : {c}" for r, c in rets)
    output.emit("\n".join(lines) + "\n")


def main(argv):
    return run_command("progtrace", parser(), argv, body)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
