#!/usr/bin/env python3
"""Start-up of programs written against the library API, with a warm compile cache.

Measures, for each example, the wall time from spawning the interpreter to
the example's header line — printed once its BPF programs are loaded and
attached and its output stream is open, i.e. when it is tracing.  Exit time
is not counted.  The first run of each (cold: clang compiles) is reported
apart.  Not a test: timings on a shared machine are noisy.

    sudo .venv/bin/python bench/library_start.py [-n RUNS]
"""
import argparse
import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (example, arguments): hooks forced to tracepoints, which every kernel here has
CASES = [("hello_world.py", ["tracepoint"]), ("listen_events.py", ["tracepoint"])]
TARGET_MS = 150


def start_ms(script, args, env):
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, os.path.join(ROOT, "examples", script), *args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    ready = None
    while p.poll() is None:
        if select.select([p.stdout], [], [], 1)[0]:
            if p.stdout.readline():
                ready = (time.perf_counter() - t0) * 1000
            break
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    if ready is None:
        sys.exit(f"{script} did not start: {err.decode()}")
    return ready


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", "--runs", type=int, default=20)
    args = ap.parse_args()
    cache = tempfile.mkdtemp(prefix="kprobekit-bench-")
    env = dict(os.environ, KPROBEKIT_CACHE=cache)
    print(f"python {sys.version.split()[0]}, kernel {os.uname().release}, {args.runs} warm runs each")
    worst = 0.0
    for script, cargs in CASES:
        cold = start_ms(script, cargs, env)
        warm = [start_ms(script, cargs, env) for _ in range(args.runs)]
        med = statistics.median(warm)
        worst = max(worst, med)
        print(f"{script:<18} cold (compiles) {cold:7.1f} ms   warm: median {med:6.1f} ms, "
              f"min {min(warm):6.1f}, max {max(warm):6.1f}")
    subprocess.run(["rm", "-rf", cache])
    verdict = "under" if worst < TARGET_MS else "OVER"
    print(f"warm start, slowest median: {worst:.1f} ms — {verdict} the {TARGET_MS} ms target")
    return 0 if worst < TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
