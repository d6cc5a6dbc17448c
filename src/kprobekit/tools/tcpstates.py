"""tcpstates: TCP state changes with the time spent in each state.  BPF side: bpf/tcpstates.bpf.c."""

from ..tool import IPV4_ONLY, IPV6_ONLY, TIMESTAMP, TIME_COLUMN, Backend, Column, Tool, elapsed
from ..tcp import LOCAL_PORTS, OWNER_HELP, REMOTE_PORTS, owner_comm, owner_pid, state_name


def _skaddr(rec, run):
    return f"{rec.skaddr:x}"


def _delta_ms(rec, run):
    return rec.delta_ns / 1e6


TOOL = Tool(
    "tcpstates",
    "Trace TCP state changes, with the time spent in the previous state.",
    description="Trace TCP state changes, with the time spent in the previous state (MS; 0 when the\n"
                "socket was not seen entering it).\n\n" + OWNER_HELP + "\n-p PID selects by that owner.",
    backends=[
        # the plain tracepoint first, as libbpf-tools: its fields are all the tool needs, and it
        # loads without the kernel's whole BTF (minbtf)
        Backend("tracepoint", ["tp_set_state"], needs=["tracepoint"], note="sock:inet_sock_set_state"),
        Backend("tp_btf", ["btf_set_state"], needs=["tp_btf"],
                note="tp_btf on inet_sock_set_state (typed struct sock *)"),
    ],
    options=[
        TIMESTAMP,
        IPV4_ONLY,
        IPV6_ONLY,
        LOCAL_PORTS,
        REMOTE_PORTS,
    ],
    columns=[
        TIME_COLUMN,
        Column("SKADDR", 16, _skaddr),
        Column("PID", 7, owner_pid),
        Column("COMM", 16, owner_comm),
        Column("LADDR", 16, "laddr"),
        Column("LPORT", 5, "lport"),
        Column("RADDR", 16, "raddr"),
        Column("RPORT", 5, "rport"),
        Column("OLDSTATE", 11, lambda rec, run: state_name(rec.oldstate)),
        Column("->", 2, lambda rec, run: "->"),
        Column("NEWSTATE", 11, lambda rec, run: state_name(rec.newstate)),
        Column("MS", 9, _delta_ms, fmt="{:<9.3f}"),
    ],
    json_fields=[("skaddr", _skaddr), ("pid", owner_pid), ("comm", owner_comm), "ip", "laddr", "lport",
                 "raddr", "rport", ("oldstate", lambda rec, run: state_name(rec.oldstate)),
                 ("newstate", lambda rec, run: state_name(rec.newstate)), ("delta_ms", _delta_ms),
                 ("time_s", elapsed)],
    examples="""examples:
  kprobekit tcpstates               # all TCP state changes
  kprobekit tcpstates -L 80 -4      # local port 80, IPv4
  kprobekit tcpstates -D 443 --json""",
)
