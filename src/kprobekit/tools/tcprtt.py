"""tcprtt: TCP smoothed round-trip times as in-kernel log2 histograms.  BPF side: bpf/tcprtt.bpf.c."""

import json

from ..cli.runner import port_list, seconds_arg
from ..histogram import MapHistograms, format_log2, log2_json
from ..tcp import LOCAL_PORTS, address_arg
from ..tool import IPV4_ONLY, IPV6_ONLY, Backend, Flag, Option, Tool


def _report(obj, run, final):
    args = run.args
    if not hasattr(run, "hists"):
        run.hists = MapHistograms(obj.map("hist"), lambda key: str(key.addr) if args.byladdr or args.byraddr else None)
    unit = "msecs" if args.milliseconds else "usecs"
    side = "laddr" if args.byladdr else "raddr"
    groups = sorted(run.hists.take().items(), key=lambda kv: kv[0] or "")
    if args.json:
        return "".join(json.dumps({**({side: g} if g else {}), "unit": unit, "count": sum(slots.values()),
                                   "buckets": log2_json(slots)}) + "\n" for g, slots in groups)
    lines = []
    for g, slots in groups:
        if g:
            lines.append(f"\n{'Local' if args.byladdr else 'Remote'} Address = {g}")
        lines.extend(format_log2(slots, unit))
    if not groups:
        lines.append("no samples")
    return "\n".join(lines) + "\n"


def _check(args, backend):
    if args.byladdr and args.byraddr:
        from ..errors import UsageError
        raise UsageError("use -B or --byraddr: one histogram key at a time")


TOOL = Tool(
    "tcprtt",
    "Summarize TCP smoothed round-trip times as histograms.",
    description="Summarize TCP smoothed round-trip times (srtt) as a log2 histogram, kept in the kernel:\n"
                "one sample per segment received on an established connection.  Printed at Ctrl-C,\n"
                "or every -i SECONDS.",
    backends=[
        Backend("tracepoint", ["tp_probe"], needs=["tracepoint"], note="tcp:tcp_probe"),
        Backend("kprobe", ["kprobe_rcv_established"], needs=["kprobe"], note="kprobe on tcp_rcv_established"),
    ],
    options=[
        Option("-i", "--interval", type=seconds_arg, metavar="SECONDS", help="print a histogram every SECONDS"),
        Flag("-m", "--milliseconds", help="milliseconds instead of microseconds", rodata=("in_ms", True)),
        IPV4_ONLY,
        IPV6_ONLY,
        LOCAL_PORTS,
        Option("-P", "--remoteport", type=port_list, rodata="filter_rports", metavar="PORT[,PORT...]",
               help="remote ports to trace (filtered in the kernel)"),
        Option("-a", "--laddr", type=address_arg, rodata="filter_laddr", metavar="ADDR", help="this local address only"),
        Option("-b", "--raddr", type=address_arg, rodata="filter_raddr", metavar="ADDR", help="this remote address only"),
        Flag("-B", "--byladdr", help="one histogram per local address", rodata=("by_addr", 1)),
        Flag("--byraddr", help="one histogram per remote address", rodata=("by_addr", 2)),
    ],
    columns=[],
    pid_filter=False,
    periodic=True,
    check=_check,
    report=_report,
    examples="""examples:
  kprobekit tcprtt                  # one histogram, printed at Ctrl-C
  kprobekit tcprtt -i 1 -m          # every second, in milliseconds
  kprobekit tcprtt -P 443 --byraddr # connections to port 443, per remote address""",
)
