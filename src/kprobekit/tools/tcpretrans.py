"""tcpretrans: retransmitted TCP segments (-l: and tail loss probes).  BPF side: bpf/tcpretrans.bpf.c."""

from ..errors import NotSupported
from ..tcp import LOCAL_PORTS, REMOTE_PORTS, endpoint, flow_counts, state_of
from ..tool import IPV4_ONLY, IPV6_ONLY, Backend, Column, Flag, Tool, elapsed, wall_time

_TYPES = {1: "R>", 2: "L>"}


def _check(args, backend):
    if args.lossprobe and backend.name != "kprobe":
        raise NotSupported(f"trace tail loss probes (-l) with the {backend.name} backend: "
                           "tcp_send_loss_probe has no tracepoint", feature="kprobe",
                           hint="use a kernel with kprobes, or drop -l")


def _report(obj, run, final):
    return flow_counts(obj.map("counts"), "RETRANSMITS", run.args.json) if run.args.count else ""


TOOL = Tool(
    "tcpretrans",
    "Trace retransmitted TCP segments.",
    description="Trace retransmitted TCP segments: T is R> for a retransmit, L> for a tail loss probe (-l).\n"
                "PID is the task the kernel was running (often 0: retransmits are sent from timers).\n"
                "-c counts per connection in the kernel instead, printed at Ctrl-C.",
    backends=[
        Backend("tracepoint", ["tp_retransmit"], needs=["tracepoint"], note="tcp:tcp_retransmit_skb"),
        Backend("kprobe", ["kprobe_retransmit", "kprobe_tlp"], needs=["kprobe"],
                note="kprobes on tcp_retransmit_skb and tcp_send_loss_probe (-l)"),
    ],
    options=[
        Flag("-l", "--lossprobe", help="also trace tail loss probes (kprobe backend)", rodata=("trace_tlp", True)),
        Flag("-c", "--count", help="count retransmits per connection, print at Ctrl-C", rodata=("count_mode", True)),
        IPV4_ONLY,
        IPV6_ONLY,
        LOCAL_PORTS,
        REMOTE_PORTS,
    ],
    columns=[
        Column("TIME", 8, wall_time, when="!count"),
        Column("PID", 7, "pid", when="!count"),
        Column("IP", 2, "ip", when="!count"),
        Column("LADDR:LPORT", 22, endpoint("laddr", "lport"), when="!count"),
        Column("T>", 2, lambda rec, run: _TYPES.get(rec.type, "?"), when="!count"),
        Column("RADDR:RPORT", 22, endpoint("raddr", "rport"), when="!count"),
        Column("STATE", 11, state_of, when="!count"),
    ],
    json_fields=["pid", "ip", "laddr", "lport", "raddr", "rport", ("state", state_of),
                 ("type", lambda rec, run: "TLP" if rec.type == 2 else "RETRANS"), ("time_s", elapsed)],
    pid_filter=False,
    check=_check,
    report=_report,
    examples="""examples:
  kprobekit tcpretrans              # retransmits as they happen
  kprobekit tcpretrans -l           # and tail loss probes
  kprobekit tcpretrans -c -D 443    # count per connection to port 443, print at Ctrl-C""",
)
