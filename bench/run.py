"""`make bench`: every benchmark, one table each, and bench/results/latest.json.

Other work on this 2-core machine skews timings: each benchmark records the
load average around it, and the figures are medians (or per CPU second).
"""

import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import decode  # noqa: E402
import exit as exit_bench  # noqa: E402
import loss  # noqa: E402
import overhead  # noqa: E402
import sinks  # noqa: E402
import soak  # noqa: E402
import startup  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer runs, for trying the benchmarks out")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: run as root (the benchmarks load BPF programs)")
    common.need_build()
    q = args.quick
    res = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "kernel": platform.release(),
           "cpus": os.cpu_count(), "python": sys.version.split()[0]}
    print("== start-up ==")
    res["startup"] = startup.main(["-n", "5" if q else "15", "--cold-runs", "1" if q else "3"])
    print("\n== decode ==")
    res["decode"] = decode.main(["--seconds", "1" if q else "3"])
    print("\n== output path ==")
    res["sinks"] = sinks.main([])
    print("\n== overhead ==")
    res["overhead"] = overhead.main(["-r", "2" if q else "7"])
    print("\n== exit with many hooks ==")
    res["exit"] = exit_bench.main(["-r", "1" if q else "3"])
    print("\n== printed and lost on a connect storm ==")
    res["loss"] = loss.main(["-r", "2" if q else "5"])
    print("\n== steady state ==")
    res["soak"] = soak.main(["--minutes", "1" if q else "10"])
    os.makedirs(common.RESULTS, exist_ok=True)
    path = os.path.join(common.RESULTS, "latest.json")
    with open(path, "w") as f:
        json.dump(res, f, indent=1)
    print(f"\nwrote {os.path.relpath(path)}")


if __name__ == "__main__":
    main()
