#!/usr/bin/python3
"""Seed 000: trace IPv4 TCP connects (kprobe + kretprobe on tcp_v4_connect, a hash map between them).

The bcc original parsed bpf_trace_printk text; here the kretprobe sends a
struct, decoded from the object's BTF.  Needs kprobes.

    /usr/bin/python3 examples/tcp4connect.py    (as root)
"""
import os

from kprobekit import BPF, run

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tcp4connect.bpf.c")


def main():
    with BPF(src_file=SOURCE) as b:
        print(f"{'PID':<6} {'COMM':<12} {'SADDR':<16} {'DADDR':<16} DPORT", flush=True)
        for e in b.events():
            print(f"{e.pid:<6} {e.comm:<12.12} {str(e.saddr):<16} {str(e.daddr):<16} {e.dport}", flush=True)


if __name__ == "__main__":
    run(main)
