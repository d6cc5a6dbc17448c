"""tcpaccept: passive TCP connections, as accept() returns them.  BPF side: bpf/tcpaccept.bpf.c."""

from ..cli.runner import port_list
from ..tool import IPV4_ONLY, IPV6_ONLY, TIMESTAMP, TIME_COLUMN, Backend, Column, Flag, Option, Tool, elapsed



TOOL = Tool(
    "tcpaccept",
    "Trace passive TCP connections (accept()).",
    backends=[
        Backend("fentry", ["fexit_accept"], needs=["fexit"], note="fexit on inet_csk_accept"),
        Backend("kprobe", ["kretprobe_accept"], needs=["kretprobe"], note="kretprobe on inet_csk_accept"),
        Backend("tracepoint", ["tp_exit_accept4", "tp_exit_accept"], needs=["tracepoint"],
                note="syscalls:sys_exit_accept4/sys_exit_accept, the new fd resolved to its socket; "
                     "every column known (accepts via io_uring or in the kernel are not seen)"),
    ],
    options=[
        TIMESTAMP,
        Flag("-U", "--print-uid", help="include a UID column"),
        IPV4_ONLY,
        IPV6_ONLY,
        Option("-P", "--port", type=port_list, rodata="filter_ports", metavar="PORT[,PORT...]",
               help="local ports to trace (filtered in the kernel)"),
    ],
    columns=[
        TIME_COLUMN,
        Column("UID", 6, "uid", when="print_uid"),
        Column("PID", 7, "pid"),
        Column("COMM", 16, "comm"),
        Column("IP", 2, "ip"),
        Column("RADDR", 16, "raddr"),
        Column("RPORT", 5, "rport"),
        Column("LADDR", 16, "laddr"),
        Column("LPORT", 5, "lport"),
    ],
    json_fields=["pid", "tid", "uid", "comm", "ip", "raddr", "rport", "laddr", "lport", ("time_s", elapsed)],
    examples="""examples:
  kprobekit tcpaccept               # all accepted connections
  kprobekit tcpaccept -t -P 80,443  # on these local ports, with time
  kprobekit tcpaccept -p 181 --json""",
)
