"""What the TCP tools share on the Python side: state and flag names, the
socket owner columns, -L/-D port options, and ADDR:PORT columns.

Their BPF side shares bpf/include/kk_tcp_state.bpf.h (state transitions and
owners) and kk_tcp.bpf.h (addresses and ports of a socket or a packet).
"""

from .cli.runner import port_list
from .errors import bad_argument
from .tool import Option

# include/net/tcp_states.h
STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
          6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING",
          12: "NEW_SYN_RECV"}

# include/net/tcp.h TCPHDR_*, in the order of the header's flag bits
FLAGS = ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR")


def state_name(value):
    """'ESTABLISHED' for 1; None for 0 (no socket)."""
    if not value:
        return None
    return STATES.get(value, str(value))


def flag_names(bits):
    """'SYN|ACK' for 0x12."""
    return "|".join(n for i, n in enumerate(FLAGS) if bits >> i & 1) or "-"


# pid 0 in the state tools' events means "owner unknown" (see bpf/include/kk_tcp_state.bpf.h)
def owner_pid(rec, run):
    return rec.pid or None


def owner_comm(rec, run):
    return rec.comm if rec.pid else None


OWNER_HELP = """\
PID/COMM: the task that owns the socket, known from its connect(), listen() or close().
Transitions the kernel makes on its own (the server side of a handshake, the peer's FIN or
RST, timers) are attributed to that task, and print '-' (JSON null) for a socket no task
has acted on since tracing began (e.g. an accepted socket before its close())."""

LOCAL_PORTS = Option("-L", "--localport", type=port_list, rodata="filter_lports", metavar="PORT[,PORT...]",
                     help="local ports to trace (filtered in the kernel)")
REMOTE_PORTS = Option("-D", "--remoteport", type=port_list, rodata="filter_rports", metavar="PORT[,PORT...]",
                      help="remote ports to trace (filtered in the kernel)")


def address_arg(text):
    """An address for a BPF filter (argparse type): 16 bytes, IPv4 as IPv4-mapped IPv6 (::ffff:a.b.c.d)."""
    import ipaddress
    try:
        a = ipaddress.ip_address(text)
    except ValueError:
        raise bad_argument(f"invalid address {text!r}") from None
    if a.version == 4:
        a = ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + a.packed)
    return list(a.packed)


def endpoint(addr, port):
    """A record's address and port attributes as one ADDR:PORT column value ([v6]:port)."""
    def get(rec, run):
        a = getattr(rec, addr)
        return f"[{a}]:{getattr(rec, port)}" if a.version == 6 else f"{a}:{getattr(rec, port)}"
    return get


def state_of(rec, run):
    """The record's `state` member by name; None (printed '-') when there was no socket."""
    return state_name(rec.state)


def flow_counts(counts, what, as_json):
    """A map of kk_flow -> count as bcc's counting modes print it, most first: text or JSON lines."""
    import json
    rows = sorted(counts.items(), key=lambda kv: -kv[1])
    if as_json:
        return "".join(json.dumps({"ip": k.ip, "laddr": str(k.laddr), "lport": k.lport, "raddr": str(k.raddr),
                                   "rport": k.rport, what.lower(): n}) + "\n" for k, n in rows)
    lines = [f"{'LADDR:LPORT':<26} {'RADDR:RPORT':<26} {what}"]
    for k, n in rows:
        lines.append(f"{endpoint('laddr', 'lport')(k, None):<22} <-> {endpoint('raddr', 'rport')(k, None):<26} {n}")
    return "\n".join(lines) + "\n"
