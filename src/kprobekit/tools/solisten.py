"""solisten: listen() on TCP sockets, with network namespace and backlog.  BPF side: bpf/solisten.bpf.c."""

from ..cli.runner import netns_arg, port_list
from ..tool import TIMESTAMP, TIME_COLUMN, Backend, Column, Flag, Option, Tool, elapsed



def _proto(rec, run):
    return f"TCPv{rec.ip}"


def _ret(rec, run):
    return rec.ret.name or "0"


TOOL = Tool(
    "solisten",
    "Trace listen() on TCP sockets (IPv4 and IPv6).",
    backends=[
        Backend("fentry", ["fexit_listen"], needs=["fexit"], note="fexit on inet_listen"),
        Backend("kprobe", ["kprobe_listen", "kretprobe_listen"], needs=["kprobe", "kretprobe"],
                note="kprobe+kretprobe on inet_listen"),
        Backend("tracepoint", ["tp_enter_listen", "tp_exit_listen"], needs=["tracepoint"],
                note="syscalls:sys_enter_listen/sys_exit_listen, the fd resolved to its socket "
                     "in the caller's fd table; every column known (listen via io_uring is not seen)"),
    ],
    options=[
        TIMESTAMP,
        Option("-n", "--netns", type=netns_arg, rodata="filter_netns", metavar="ID",
               help="trace this network namespace only (inode number; filtered in the kernel)"),
        Option("-P", "--port", type=port_list, rodata="filter_ports", metavar="PORT[,PORT...]",
               help="local ports to trace (filtered in the kernel)"),
        Flag("-x", "--failed", help="also report failed listen() calls, with a RET column",
             rodata=("report_failed", True)),
    ],
    columns=[
        TIME_COLUMN,
        Column("PID", 7, "pid"),
        Column("COMM", 16, "comm"),
        Column("NETNS", 10, "netns"),
        Column("PROTO", 5, _proto),
        Column("BACKLOG", 7, "backlog"),
        Column("ADDR", 39, "addr"),
        Column("PORT", 5, "port"),
        Column("RET", 12, _ret, when="failed"),
    ],
    json_fields=["pid", "comm", "netns", ("proto", _proto), "backlog", "addr", "port", "ret",
                 ("time_s", elapsed)],
    examples="""examples:
  kprobekit solisten                     # all listen() calls
  kprobekit solisten -n 4026531840       # in this network namespace only
  kprobekit solisten -P 80,443 -x --json""",
)
