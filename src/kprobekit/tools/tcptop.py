"""tcptop: TCP connections by bytes sent and received per interval.  BPF side: bpf/tcptop.bpf.c."""

import json
import os
import time

from ..cli.runner import seconds_arg, whole_number
from ..errors import bad_argument
from ..tcp import LOCAL_PORTS, REMOTE_PORTS, endpoint
from ..tool import IPV4_ONLY, IPV6_ONLY, Backend, Flag, Option, Tool


def _count(text):
    if whole_number(text, "count") == 0:
        raise bad_argument(f"invalid count {text!r}: must be a positive number")
    return int(text)


def _since(run, totals):
    """{connection key: (tx, rx)} moved since the previous call (differences of the kernel's running totals)."""
    now = {k: (v.tx, v.rx) for k, v in totals.items()}
    before = getattr(run, "before", {})
    run.before = now
    out = {}
    for k, (tx, rx) in now.items():
        otx, orx = before.get(k, (0, 0))
        if (tx, rx) != (otx, orx):
            # an entry the LRU map evicted and made again starts from zero
            out[k] = (tx - otx, rx - orx) if tx >= otx and rx >= orx else (tx, rx)
    return out


def _report(obj, run, final):
    args = run.args
    rows = sorted(_since(run, obj.map("totals")).items(), key=lambda kv: -(kv[1][0] + kv[1][1]))
    stamp = time.strftime("%H:%M:%S")
    if args.json:
        return "".join(json.dumps({"time": stamp, "pid": k.pid, "comm": k.comm, "ip": k.flow.ip,
                                   "laddr": str(k.flow.laddr), "lport": k.flow.lport, "raddr": str(k.flow.raddr),
                                   "rport": k.flow.rport, "rx_bytes": rx, "tx_bytes": tx}) + "\n"
                       for k, (tx, rx) in rows)
    if final and not rows:
        return ""
    lines = []
    if not args.noclear and os.isatty(1):
        lines.append("\033[H\033[J")
    if not args.nosummary:
        with open("/proc/loadavg") as f:
            lines.append(f"{stamp} loadavg: {f.read().strip()}\n")
    lines.append(f"{'PID':<7} {'COMM':<16} {'LADDR':<26} {'RADDR':<26} {'RX_KB':>6} {'TX_KB':>6}")
    local, remote = endpoint("laddr", "lport"), endpoint("raddr", "rport")
    for k, (tx, rx) in rows:
        lines.append(f"{k.pid:<7} {k.comm:<16} {local(k.flow, run):<26} {remote(k.flow, run):<26} "
                     f"{rx // 1024:>6} {tx // 1024:>6}")
    return "\n".join(lines) + "\n\n"


TOOL = Tool(
    "tcptop",
    "Show TCP connections by bytes sent and received, per interval.",
    description="Show TCP connections by bytes sent (TX) and received (RX) in each interval, per process;\n"
                "summed in the kernel.  Refreshed in place on a terminal (-C: one table after another).",
    backends=[
        Backend("tracepoint", ["tp_send", "tp_recv"], needs=["tracepoint", "sock_length"],
                note="sock:sock_send_length and sock:sock_recv_length (Linux 6.5+)"),
        Backend("kprobe", ["kprobe_sendmsg", "kprobe_cleanup_rbuf"], needs=["kprobe"],
                note="kprobes on tcp_sendmsg and tcp_cleanup_rbuf"),
    ],
    options=[
        Option("interval", nargs="?", type=seconds_arg, default=1.0, help="seconds between tables (default 1)"),
        Option("intervals", nargs="?", type=_count, metavar="count", help="number of tables, then exit"),
        Flag("-C", "--noclear", help="do not clear the screen between tables"),
        Flag("-S", "--nosummary", help="no load average line"),
        IPV4_ONLY,
        IPV6_ONLY,
        LOCAL_PORTS,
        REMOTE_PORTS,
    ],
    columns=[],
    periodic=True,
    report=_report,
    examples="""examples:
  kprobekit tcptop                  # every second, refreshed in place
  kprobekit tcptop -C 5 10          # ten tables, 5 s apart, one after another
  kprobekit tcptop -p 181 --json""",
)
