"""tcpdrop: TCP packets the kernel drops, with the reason and the kernel stack.  BPF side: bpf/tcpdrop.bpf.c."""

from ..btf import kernel_enum
from ..cli.runner import port_list
from ..errors import bad_argument
from ..tcp import endpoint, flag_names, state_of
from ..tool import IPV4_ONLY, IPV6_ONLY, Backend, Column, Option, Tool, elapsed, wall_time

_PREFIXES = ("SKB_DROP_REASON_", "SKB_")


def _short(name):
    """SKB_DROP_REASON_NO_SOCKET -> NO_SOCKET (and SKB_DROP_REASON_SKB_CSUM -> SKB_CSUM)."""
    for p in _PREFIXES:
        if name.startswith(p):
            return name[len(p):]
    return name


def reasons():
    """{value: 'NO_SOCKET', ...} as this kernel numbers them (enum skb_drop_reason in its BTF)."""
    return {value: _short(name) for name, value in kernel_enum("skb_drop_reason").items()}


def reason_arg(text):
    want = _short(text.upper())
    known = reasons()
    for value, name in known.items():
        if name in (want, text.upper()) and value:
            return value
    if not known:
        raise bad_argument("filter by drop reason: this kernel's BTF has no enum skb_drop_reason")
    near = sorted(n for n in known.values() if want[:3] in n)[:6]
    raise bad_argument(f"unknown drop reason {text!r}" + (f"; close: {', '.join(near)}" if near else ""))


def _reason(rec, run):
    if not rec.reason:
        return None
    if not hasattr(run, "reasons"):
        run.reasons = reasons()
    return run.reasons.get(rec.reason, str(rec.reason))


def _flags(rec, run):
    return f"({flag_names(rec.tcpflags)})"


TOOL = Tool(
    "tcpdrop",
    "Trace TCP packets the kernel drops, with the reason and the kernel stack.",
    description="Trace TCP packets the kernel drops: addresses, ports and flags from the packet, the state of\n"
                "the socket it was dropped for ('-': none, e.g. NO_SOCKET), the drop reason as this kernel\n"
                "names it (enum skb_drop_reason), and the kernel stack of the drop.\n"
                "PID/COMM: the task the kernel was running (received packets: often not their owner).",
    backends=[
        Backend("tracepoint", ["tp_kfree_skb"], needs=["tracepoint", "skb_drop_reason"],
                note="skb:kfree_skb with its drop reason (Linux 5.17+)"),
        Backend("kprobe", [("kprobe_sk_skb_reason_drop", "kprobe_kfree_skb_reason", "kprobe_tcp_drop")],
                needs=["kprobe"], note="kprobe on sk_skb_reason_drop (6.10+), kfree_skb_reason (5.17+) or "
                                       "tcp_drop (older kernels: no reason)"),
    ],
    options=[
        IPV4_ONLY,
        IPV6_ONLY,
        Option("-P", "--port", type=port_list, rodata="filter_ports", metavar="PORT[,PORT...]",
               help="packets from or to these ports (filtered in the kernel)"),
        Option("--reason", type=reason_arg, rodata="filter_reason", metavar="NAME",
               help="this drop reason only, e.g. NO_SOCKET, TCP_CSUM (names: this kernel's enum skb_drop_reason)"),
    ],
    columns=[
        Column("TIME", 8, wall_time),
        Column("PID", 7, "pid"),
        Column("COMM", 16, "comm"),
        Column("IP", 2, "ip"),
        Column("SADDR:SPORT", 22, endpoint("saddr", "sport")),
        Column(">", 1, lambda rec, run: ">"),
        Column("DADDR:DPORT", 22, endpoint("daddr", "dport")),
        Column("STATE", 11, state_of),
        Column("(FLAGS)", 9, _flags),
        Column("REASON", 20, _reason),
    ],
    json_fields=["pid", "comm", "ip", "saddr", "sport", "daddr", "dport", ("state", state_of),
                 ("flags", lambda rec, run: flag_names(rec.tcpflags)), ("reason", _reason), ("time_s", elapsed)],
    pid_filter=False,
    kernel_stack="kstack",
    examples="""examples:
  kprobekit tcpdrop                     # every TCP drop, with its stack
  kprobekit tcpdrop --reason NO_SOCKET  # packets to ports nobody listens on
  kprobekit tcpdrop -4 -P 443 --json""",
)
