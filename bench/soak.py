"""Steady state: kprobekit tcpstates under a steady stream of TCP state changes for minutes.

A paced loop of loopback connects (about 1,250 a second: ~10,000 state changes a second) runs
beside `kprobekit tcpstates`, whose output is drained and counted.  Its RSS is sampled every
10 s; after the first minute it must stay flat, and it must lose nothing.
"""

import argparse
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from loss import lost_of  # noqa: E402


def paced_connects(rate, stop, counter):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(256)
        addr = server.getsockname()
        t0 = time.monotonic()
        while not stop.is_set():
            due = int((time.monotonic() - t0) * rate)
            while counter[0] < due and not stop.is_set():
                with socket.create_connection(addr):
                    pass
                server.accept()[0].close()
                counter[0] += 1
            time.sleep(0.005)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--rate", type=int, default=1250, help="connects per second")
    args = ap.parse_args(argv)
    peer = common.Peer("kprobekit tcpstates", [common.KPROBEKIT, "tcpstates"],
                       [("stderr", "kprobekit: using "), ("stdout", "")])
    s = common.Started(peer, tty=False)
    if s.loaded_s is None:
        print(f"soak: {s.error}")
        return {"error": s.error}
    stop, counter = threading.Event(), [0]
    t = threading.Thread(target=paced_connects, args=(args.rate, stop, counter), daemon=True)
    start = time.monotonic()
    t.start()
    samples = []
    try:
        while time.monotonic() - start < args.minutes * 60:
            time.sleep(10)
            samples.append((time.monotonic() - start, rss_kib(s.proc.pid)))
    finally:
        stop.set()
        t.join()
        time.sleep(1)
        s.stop()
    after = [kib for ts, kib in samples if ts >= 60] or [kib for _, kib in samples]
    res = {"minutes": args.minutes, "connects": counter[0], "lines": s.stdout_lines,
           "lost": lost_of("kprobekit", s), "rss_kib": samples,
           "rss_spread_after_1min_kib": max(after) - min(after)}
    common.print_table(f"soak: kprobekit tcpstates, {args.minutes:g} min at {args.rate:,} connects/s",
                       ["connects", "lines", "lost", "RSS at 1 min (MiB)", "RSS spread after 1 min (KiB)"],
                       [[f"{counter[0]:,}", f"{s.stdout_lines:,}", res["lost"],
                         f"{after[0] / 1024:.1f}", res["rss_spread_after_1min_kib"]]])
    return res


if __name__ == "__main__":
    main()
