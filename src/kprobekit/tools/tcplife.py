"""tcplife: TCP sessions with duration and bytes, reported at close.  BPF side: bpf/tcplife.bpf.c."""

from ..tool import IPV4_ONLY, IPV6_ONLY, TIMESTAMP, TIME_COLUMN, Backend, Column, Tool, elapsed
from ..tcp import LOCAL_PORTS, OWNER_HELP, REMOTE_PORTS, owner_comm, owner_pid


def _span_ms(rec, run):
    return rec.span_ns / 1e6


TOOL = Tool(
    "tcplife",
    "Trace TCP sessions: duration and bytes, reported when they close.",
    description="Trace TCP sessions: duration and bytes, reported when they close.\n\n"
                "TX: bytes the peer acknowledged, RX: bytes received: the kernel's tcp_sock.bytes_acked\n"
                "and bytes_received (as bcc's tcplife), which also count the SYN and FIN each side sent\n"
                "(their sequence numbers): at most 2 more than the data.  Sessions opened before\n"
                "tracing began are not reported.\n\n" + OWNER_HELP + "\n-p PID selects by that owner.",
    backends=[
        # the plain tracepoint first, as in tcpstates
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
        Column("PID", 7, owner_pid),
        Column("COMM", 16, owner_comm),
        Column("LADDR", 16, "laddr"),
        Column("LPORT", 5, "lport"),
        Column("RADDR", 16, "raddr"),
        Column("RPORT", 5, "rport"),
        Column("TX_KB", 6, lambda rec, run: rec.tx_bytes // 1024, right=True),
        Column("RX_KB", 6, lambda rec, run: rec.rx_bytes // 1024, right=True),
        Column("MS", 9, _span_ms, fmt="{:>9.2f}", right=True),
    ],
    json_fields=[("pid", owner_pid), ("comm", owner_comm), "ip", "laddr", "lport", "raddr", "rport",
                 "tx_bytes", "rx_bytes", ("span_ms", _span_ms), ("time_s", elapsed)],
    examples="""examples:
  kprobekit tcplife                 # all TCP sessions
  kprobekit tcplife -L 80 -t        # local port 80, with time
  kprobekit tcplife -p 181 --json""",
)
