"""tcpconnect: active TCP connections (connect()), IPv4 and IPv6.  BPF side: bpf/tcpconnect.bpf.c."""

from ..cli.runner import port_list, uid_arg
from ..tool import Backend, Column, Flag, Option, Tool


def _time(rec, run):
    return run.elapsed(rec.ts_ns)


TOOL = Tool(
    "tcpconnect",
    "Trace active TCP connections (connect()).",
    backends=[
        Backend("fentry", ["fexit_v4", "fexit_v6"], needs=["fexit"],
                note="fexit on tcp_v4_connect/tcp_v6_connect"),
        Backend("kprobe", ["kprobe_v4", "kretprobe_v4", "kprobe_v6", "kretprobe_v6"],
                needs=["kprobe", "kretprobe"], note="kprobe+kretprobe on tcp_v4_connect/tcp_v6_connect"),
        Backend("tracepoint", ["tp_set_state"], needs=["tracepoint"],
                note="sock:inet_sock_set_state; a connect is reported when its handshake ends "
                     "(established, refused or timed out)"),
    ],
    options=[
        Flag("-t", "--timestamp", help="include a TIME(s) column"),
        Flag("-U", "--print-uid", help="include a UID column"),
        Flag("-L", "--lport", help="include an LPORT column"),
        Flag("-4", "--ipv4", help="trace IPv4 only", rodata=("filter_family", 2)),
        Flag("-6", "--ipv6", help="trace IPv6 only", rodata=("filter_family", 10)),
        Option("-P", "--port", type=port_list, rodata="filter_ports", metavar="PORT[,PORT...]",
               help="destination ports to trace (filtered in the kernel)"),
        Option("-u", "--uid", type=uid_arg, rodata="filter_uid", help="trace this UID only"),
    ],
    columns=[
        Column("TIME(s)", 9, _time, when="timestamp", fmt="{:<9.3f}"),
        Column("UID", 6, "uid", when="print_uid"),
        Column("PID", 7, "pid"),
        Column("COMM", 16, "comm"),
        Column("IP", 2, "ip"),
        Column("SADDR", 16, "saddr"),
        Column("LPORT", 6, "sport", when="lport"),
        Column("DADDR", 16, "daddr"),
        Column("DPORT", 6, "dport"),
    ],
    json_fields=["pid", "tid", "uid", "comm", "ip", "saddr", "daddr", "sport", "dport",
                 ("time_s", _time)],
    examples="""examples:
  kprobekit tcpconnect              # all connects
  kprobekit tcpconnect -t -U -L     # with time, UID and local port
  kprobekit tcpconnect -p 181 -P 80,443 --json""",
)
