"""How long a tool holding many hooks takes to exit after Ctrl-C: funclatency on many syscalls.

Every hook detached costs the kernel an RCU grace period, serialized; funclatency's syscalls
backend holds two hooks for all syscalls with a known number (raw_syscalls), plus a pair for each
syscall newer than its number table.
"""

import argparse
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

PATTERNS = ("s*", "[a-r]*")


def one(pattern):
    p = subprocess.Popen([common.KPROBEKIT, "funclatency", pattern], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, env=common.CHILD_ENV)
    line = p.stderr.readline()
    if not line.startswith("kprobekit: using "):
        p.kill()
        return None, line.strip() or p.stderr.read().strip()
    n = int(line.split("timing ")[1].split()[0]) if "timing " in line else 1
    time.sleep(1)
    t = time.monotonic()
    p.send_signal(signal.SIGINT)
    p.communicate(timeout=120)
    return (n, (time.monotonic() - t) * 1000), None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-r", "--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    res, rows = {}, []
    for pattern in PATTERNS:
        runs, err = [], None
        for _ in range(args.repeat):
            r, err = one(pattern)
            if r is None:
                break
            runs.append(r)
        if not runs:
            res[pattern] = {"error": err}
            rows.append([pattern, "", "", err])
            continue
        ms = common.median([m for _, m in runs])
        res[pattern] = {"functions": runs[0][0], "exit_ms": round(ms)}
        rows.append([pattern, runs[0][0], f"{ms:,.0f}", ""])
    common.print_table(f"funclatency: Ctrl-C -> exit (median of {args.repeat})",
                       ["pattern", "syscalls", "exit ms", "error"], rows)
    return res


if __name__ == "__main__":
    main()
