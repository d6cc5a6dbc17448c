"""bindsnoop: bind() on IPv4/IPv6 sockets, TCP and UDP, with errors.  BPF side: bpf/bindsnoop.bpf.c."""

from ..cli.runner import port_list
from ..tool import TIMESTAMP, TIME_COLUMN, Backend, Column, Flag, Option, Tool, elapsed

_PROTOS = {1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPv6", 132: "SCTP", 136: "UDPLITE", 262: "MPTCP"}



def _proto(rec, run):
    return _PROTOS.get(rec.proto, str(rec.proto))


def _opts(rec, run):
    # bcc's bindsnoop letters: IP_FREEBIND, IP_TRANSPARENT, IP_BIND_ADDRESS_NO_PORT, SO_REUSEADDR, SO_REUSEPORT
    return "".join(c if rec.opts & (1 << i) else "." for i, c in enumerate("FTNRr"))


def _ret(rec, run):
    return int(rec.ret)


def _errno(rec, run):
    return rec.ret.name


TOOL = Tool(
    "bindsnoop",
    "Trace bind() on IPv4 and IPv6 sockets (TCP, UDP, ...), failed ones with their errno.",
    backends=[
        Backend("fentry", ["fexit_v4", "fexit_v6"], needs=["fexit"], note="fexit on inet_bind/inet6_bind"),
        Backend("kprobe", ["kprobe_v4", "kretprobe_v4", "kprobe_v6", "kretprobe_v6"],
                needs=["kprobe", "kretprobe"], note="kprobe+kretprobe on inet_bind/inet6_bind"),
        Backend("tracepoint", ["tp_enter_bind", "tp_exit_bind"], needs=["tracepoint"],
                note="syscalls:sys_enter_bind/sys_exit_bind, the address read from the caller's memory "
                     "and the fd resolved to its socket; every column known, and binds that fail before "
                     "inet_bind (e.g. EINVAL for a short address) are seen too"),
    ],
    options=[
        TIMESTAMP,
        Flag("-U", "--print-uid", help="include a UID column"),
        Flag("-E", "--errors-only", help="report failed binds only", rodata=("errors_only", True)),
        Option("-P", "--port", type=port_list, rodata="filter_ports", metavar="PORT[,PORT...]",
               help="ports to trace (filtered in the kernel)"),
    ],
    description="Trace bind() on IPv4 and IPv6 sockets (TCP, UDP, ...), failed ones with their errno.\n\n"
                "RET is 0 or the errno name.  PORT/ADDR: where the socket got bound (the port the kernel\n"
                "picked for port 0), or for a failed bind the address that was asked for.\n"
                "OPTS: socket options set before bind(): F IP_FREEBIND, T IP_TRANSPARENT,\n"
                "N IP_BIND_ADDRESS_NO_PORT, R SO_REUSEADDR, r SO_REUSEPORT.  IF: SO_BINDTODEVICE ifindex.",
    columns=[
        TIME_COLUMN,
        Column("UID", 6, "uid", when="print_uid"),
        Column("PID", 7, "pid"),
        Column("COMM", 16, "comm"),
        Column("RET", 10, lambda rec, run: rec.ret.name or "0"),
        Column("PROTO", 5, _proto),
        Column("OPTS", 5, _opts),
        Column("IF", 3, "bound_if"),
        Column("PORT", 5, "port"),
        Column("ADDR", 39, "addr"),
    ],
    json_fields=["pid", "tid", "uid", "comm", ("ret", _ret), ("errno", _errno), ("proto", _proto),
                 "addr", "port", ("opts", _opts), "bound_if", ("time_s", elapsed)],
    examples="""examples:
  kprobekit bindsnoop               # all binds
  kprobekit bindsnoop -E            # failed binds only
  kprobekit bindsnoop -P 80,443 -U --json""",
)
