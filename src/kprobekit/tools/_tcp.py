"""What the TCP state tools (tcpstates, tcplife) share on the Python side."""

# include/net/tcp_states.h
STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
          6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING",
          12: "NEW_SYN_RECV"}


def state_name(value):
    return STATES.get(value, str(value))


# pid 0 in these tools' events means "owner unknown" (see bpf/include/kk_tcp_state.bpf.h)
def owner_pid(rec, run):
    return rec.pid or None


def owner_comm(rec, run):
    return rec.comm if rec.pid else None


OWNER_HELP = """\
PID/COMM: the task that owns the socket, known from its connect(), listen() or close().
Transitions the kernel makes on its own (the server side of a handshake, the peer's FIN or
RST, timers) are attributed to that task, and print '-' (JSON null) for a socket no task
has acted on since tracing began (e.g. an accepted socket before its close())."""
