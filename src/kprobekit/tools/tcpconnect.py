"""tcpconnect: active TCP connections (connect()), IPv4 and IPv6.  BPF side: bpf/tcpconnect.bpf.c."""

from ..cli.runner import cgroup_arg, netns_arg, port_list, uid_arg
from ..tool import IPV4_ONLY, IPV6_ONLY, TIMESTAMP, TIME_COLUMN, Backend, Column, Flag, Option, Tool, elapsed



def _ret(rec, run):
    return int(rec.ret) if rec.outcome_known else None


def _errno(rec, run):
    return rec.ret.name if rec.outcome_known else None


def _ret_text(rec, run):
    return (rec.ret.name or "0") if rec.outcome_known else None


def _lat_us(rec, run):
    return rec.lat_ns / 1e3 if run.args.lat and rec.lat_ns else None


def _lat_ms(rec, run):
    return rec.lat_ns / 1e6 if rec.lat_ns else None


TOOL = Tool(
    "tcpconnect",
    "Trace active TCP connections (connect()).",
    description="Trace active TCP connections (connect()).\n\n"
                "--lat adds the handshake's latency (SYN_SENT -> ESTABLISHED, like tcpconnlat); -x adds\n"
                "the connects that failed before sending a SYN (fentry and kprobe backends) and a RET\n"
                "column: 0, the errno of a failed connect (ECONNREFUSED, ETIMEDOUT, ENETUNREACH, ...), or\n"
                "'-' (JSON null) while unknown: the fentry and kprobe backends report a connect when its\n"
                "SYN is sent, unless --lat or -x makes them wait for the handshake's end.",
    backends=[
        Backend("fentry", ["fexit_v4", "fexit_v6", "tp_handshake_end"], needs=["fexit", "tracepoint"],
                note="fexit on tcp_v4_connect/tcp_v6_connect; with --lat/-x also sock:inet_sock_set_state "
                     "for the handshake's end"),
        Backend("kprobe", ["kprobe_v4", "kretprobe_v4", "kprobe_v6", "kretprobe_v6", "tp_handshake_end"],
                needs=["kprobe", "kretprobe", "tracepoint"],
                note="kprobe+kretprobe on tcp_v4_connect/tcp_v6_connect; with --lat/-x also "
                     "sock:inet_sock_set_state for the handshake's end"),
        Backend("tracepoint", ["tp_set_state"], needs=["tracepoint"],
                note="sock:inet_sock_set_state; a connect is reported when its handshake ends "
                     "(established, refused or timed out); connects failing before a SYN is sent "
                     "(no route, no free port) are not seen, and -x shows those failing after "
                     "SYN_SENT with RET '-'"),
    ],
    options=[
        TIMESTAMP,
        Flag("-U", "--print-uid", help="include a UID column"),
        Flag("-L", "--lport", help="include an LPORT column"),
        IPV4_ONLY,
        IPV6_ONLY,
        Option("-P", "--port", type=port_list, rodata="filter_ports", metavar="PORT[,PORT...]",
               help="destination ports to trace (filtered in the kernel)"),
        Option("-u", "--uid", type=uid_arg, rodata="filter_uid", help="trace this UID only"),
        Flag("--lat", help="report at the handshake's end, with a LAT(ms) column (JSON lat_us)",
             rodata=("report_at_end", True)),
        Option("-x", "--failed", action="store_true", rodata=("report_failed", True),
               help="also report connects that failed before sending a SYN; add a RET column"),
        Option("--netns", type=netns_arg, rodata="filter_netns", metavar="ID",
               help="trace this network namespace only (inode number; filtered in the kernel)"),
        Option("--cgroup", type=cgroup_arg, rodata="filter_cgroup", metavar="PATH",
               help="trace tasks in this cgroup v2 only (filtered in the kernel)"),
    ],
    columns=[
        TIME_COLUMN,
        Column("UID", 6, "uid", when="print_uid"),
        Column("PID", 7, "pid"),
        Column("COMM", 16, "comm"),
        Column("IP", 2, "ip"),
        Column("SADDR", 16, "saddr"),
        Column("LPORT", 6, "sport", when="lport"),
        Column("DADDR", 16, "daddr"),
        Column("DPORT", 6, "dport"),
        Column("LAT(ms)", 8, _lat_ms, when="lat", fmt="{:<8.3f}"),
        Column("RET", 12, _ret_text, when="failed"),
    ],
    json_fields=["pid", "tid", "uid", "comm", "ip", "saddr", "daddr", "sport", "dport",
                 ("ret", _ret), ("errno", _errno), ("lat_us", _lat_us), ("time_s", elapsed)],
    examples="""examples:
  kprobekit tcpconnect              # all connects
  kprobekit tcpconnect -t -U -L     # with time, UID and local port
  kprobekit tcpconnect --lat -x     # latency and failures
  kprobekit tcpconnect --cgroup /sys/fs/cgroup/system.slice/ssh.service
  kprobekit tcpconnect -p 181 -P 80,443 --json""",
)
