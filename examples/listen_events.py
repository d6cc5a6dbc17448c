#!/usr/bin/python3
"""Seed 004: an event for each listen() — address, port, network namespace, backlog.

The bcc original declared the struct twice, in C and again as a ctypes class;
here it is defined once, in listen_events.bpf.c, and sent through a perf
buffer named as in the seed.  Without kprobes the sock:inet_sock_set_state
tracepoint stands in for the kprobe on inet_listen.

    /usr/bin/python3 examples/listen_events.py [kprobe|tracepoint]    (as root)
"""
import os
import sys

from kprobekit import BPF, features, run

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "listen_events.bpf.c")


def main(hook="auto"):
    if hook == "auto":
        hook = "kprobe" if features.have("kprobe") else "tracepoint"
        if hook == "tracepoint":
            print(f"listen_events: kprobes unavailable ({features.probe('kprobe').reason}); "
                  "using tracepoint sock:inet_sock_set_state", file=sys.stderr)
    with BPF(src_file=SOURCE, programs=[f"{hook}_inet_listen"]) as b:
        events = b.events("listen_evt", struct="listen_evt_t")
        print(f"{'PID':<7} {'COMM':<16} {'LADDR':<39} {'LPORT':<6} {'NETNS':<11} BACKLOG", flush=True)
        for e in events:
            print(f"{e.pid:<7} {e.comm:<16} {str(e.laddr):<39} {e.lport:<6} {e.netns:<11} {e.backlog}",
                  flush=True)


if __name__ == "__main__":
    run(main, *sys.argv[1:])
