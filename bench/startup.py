"""Time from exec to "loaded", and peak RSS, for kprobekit's tools and their peers.

"Loaded" is the moment the tool shows it is attached (what each peer prints is
in common.peers()).  The clock starts just before fork+exec in this process.
Peak RSS is VmHWM read from /proc just before the SIGINT that stops the tool
(ru_maxrss after exit is kept in the JSON too).  kprobekit runs with its
features cache warm (/run/kprobekit/features.json present) and, separately,
cold (removed before each run).

Also measures where kprobekit's start-up goes (phases, below) by running
bench/phases.py in a fresh interpreter.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def run_peer(peer, runs, cold=False):
    times, hwm, maxrss, errors = [], [], [], []
    if not cold:
        # untimed: writes Python's bytecode caches, fills the page cache
        common.Started(peer).stop()
    for _ in range(runs):
        if peer.kprobekit:
            if cold:
                shutil.rmtree(common.FEATURES_CACHE, ignore_errors=True)
            elif not os.path.exists(os.path.join(common.FEATURES_CACHE, "features.json")):
                # another process dropped the cache: warm it again, untimed
                w = common.Started(peer)
                w.stop()
        s = common.Started(peer)
        if s.loaded_s is not None:
            time.sleep(0.2)      # what the tool allocates right after it is ready counts too
            hwm.append(s.vm_hwm_kib())
        code, rss = s.stop()
        if s.loaded_s is None:
            errors.append(s.error)
            break               # a peer that cannot load here fails the same way every time
        times.append(s.loaded_s)
        maxrss.append(rss)
    return {"runs": len(times), "loaded_ms": [round(t * 1000, 1) for t in times],
            "median_ms": round(common.median(times) * 1000, 1) if times else None,
            "min_ms": round(min(times) * 1000, 1) if times else None,
            "vm_hwm_mib": round(common.median(hwm) / 1024, 1) if hwm else None,
            "ru_maxrss_mib": round(common.median(maxrss) / 1024, 1) if maxrss else None,
            "error": errors[0] if errors else None}


def interpreter_baseline(runs):
    """A bare `python -c pass` (with site) and `python -S -c pass`, exec to exit."""
    out = {}
    for label, argv in (("python -c pass", [common.PYTHON, "-c", "pass"]),
                        ("python -I -S -c pass", [common.PYTHON, "-I", "-S", "-c", "pass"])):
        ts = []
        for _ in range(runs):
            t0 = time.monotonic()
            subprocess.run(argv, check=True, env=common.CHILD_ENV)
            ts.append(time.monotonic() - t0)
        out[label] = round(common.median(ts) * 1000, 1)
    return out


def phases(runs):
    """Median of each kprobekit start-up phase, ms since exec (bench/phases.py)."""
    samples = []
    for i in range(runs + 1):
        t0 = time.monotonic()
        p = subprocess.run([common.PYTHON, os.path.join(common.BENCH, "phases.py"), repr(t0)],
                           capture_output=True, text=True, check=True, env=common.CHILD_ENV)
        if i:       # the first run writes bytecode caches
            samples.append(json.loads(p.stdout))
    return {k: round(common.median([s[k] for s in samples]), 1) for k in samples[0]}


def import_costs(runs, top=14):
    """-X importtime of the tcpconnect command's imports: the least of `runs` runs per module
    (import work is pure CPU: the least is the one least disturbed by other load)."""
    per = {}
    for _ in range(runs):
        err = subprocess.run([common.PYTHON, "-X", "importtime", "-c",
                              "import re; import kprobekit.cli.main; import kprobekit.tools.tcpconnect"],
                             capture_output=True, text=True, env=common.CHILD_ENV, check=True).stderr
        for line in err.splitlines():
            if not line.startswith("import time:") or "|" not in line or "self" in line:
                continue
            own, cum, name = line[len("import time:"):].split("|")
            own_us, cum_us = int(own), int(cum)
            key = name.rstrip()
            prev = per.get(key)
            per[key] = (own_us, cum_us) if prev is None else (min(prev[0], own_us), min(prev[1], cum_us))
    rows = sorted(per.items(), key=lambda kv: -kv[1][1])[:top]
    return {name: {"self_ms": round(o / 1000, 2), "cumulative_ms": round(c / 1000, 2)} for name, (o, c) in rows}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", "--runs", type=int, default=15)
    ap.add_argument("--cold-runs", type=int, default=3)
    args = ap.parse_args(argv)
    load_before = common.load_avg()
    results = {"peers": {}, "what": {}}
    rows = []
    for peer in common.peers():
        if "--buffer" in peer.argv:
            continue        # the transport matters for throughput (overhead.py), not for start-up
        if not peer.available():
            results["peers"][peer.name] = {"error": f"{peer.argv[0]} not installed — make bench-deps"}
            continue
        r = run_peer(peer, args.runs)
        results["peers"][peer.name] = r
        results["what"][peer.name] = peer.note
        rows.append([peer.name, "warm" if peer.kprobekit else "", r["runs"], r["median_ms"], r["min_ms"],
                     r["vm_hwm_mib"], r["error"] or ""])
        if peer.kprobekit and len(peer.argv) == 2:
            c = run_peer(peer, args.cold_runs, cold=True)
            results["peers"][peer.name + " (cold cache)"] = c
            rows.append([peer.name, "cold", c["runs"], c["median_ms"], c["min_ms"], c["vm_hwm_mib"],
                         c["error"] or ""])
    results["interpreter_ms"] = interpreter_baseline(args.runs)
    results["phases_ms"] = phases(max(5, args.runs // 2))
    results["imports_ms"] = import_costs(args.runs)
    results["load_avg"] = [load_before, common.load_avg()]
    common.print_table("start-up: exec -> loaded (median), peak RSS (VmHWM)",
                       ["tool", "cache", "runs", "median ms", "min ms", "VmHWM MiB", "error"], rows)
    common.print_table("interpreter alone, exec -> exit (median)", ["command", "ms"],
                       list(results["interpreter_ms"].items()))
    common.print_table("kprobekit tcpconnect start-up phases, ms since exec (median; warm features cache)",
                       ["phase ends", "ms"], list(results["phases_ms"].items()))
    common.print_table("imports of `kprobekit tcpconnect`, -X importtime (least of the runs)",
                       ["module (indent = imported by the line above)", "self ms", "cumulative ms"],
                       [[k, v["self_ms"], v["cumulative_ms"]] for k, v in results["imports_ms"].items()])
    print(f"\nload average before/after: {load_before[0]:.2f} / {results['load_avg'][1][0]:.2f}")
    return results


if __name__ == "__main__":
    main()
