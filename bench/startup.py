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


def one_run(peer, cold=False):
    """(seconds to loaded or None, VmHWM KiB, ru_maxrss KiB, error) of one start."""
    if peer.kprobekit:
        if cold:
            shutil.rmtree(common.FEATURES_CACHE, ignore_errors=True)
        elif not os.path.exists(os.path.join(common.FEATURES_CACHE, "features")):
            common.Started(peer).stop()     # another process dropped the cache: warm it, untimed
    s = common.Started(peer)
    hwm = None
    if s.loaded_s is not None:
        time.sleep(0.2)      # what the tool allocates right after it is ready counts too
        hwm = s.vm_hwm_kib()
    _, rss = s.stop()
    return s.loaded_s, hwm, rss, s.error


def summary(samples):
    times = [t for t, _, _, _ in samples if t is not None]
    hwm = [h for t, h, _, _ in samples if t is not None and h]
    rss = [r for t, _, r, _ in samples if t is not None]
    errors = [e for t, _, _, e in samples if t is None]
    return {"runs": len(times), "loaded_ms": [round(t * 1000, 1) for t in times],
            "median_ms": round(common.median(times) * 1000, 1) if times else None,
            "min_ms": round(min(times) * 1000, 1) if times else None,
            "vm_hwm_mib": round(common.median(hwm) / 1024, 1) if hwm else None,
            "ru_maxrss_mib": round(common.median(rss) / 1024, 1) if rss else None,
            "error": errors[0] if errors else None}


def run_interleaved(peers, runs):
    """Every peer once per round, `runs` rounds, after one untimed start each (bytecode, page cache)."""
    samples = {p.name: [] for p in peers}
    failed = set()
    for p in peers:
        common.Started(p).stop()
    for _ in range(runs):
        for p in peers:
            if p.name in failed:
                continue
            sample = one_run(p)
            samples[p.name].append(sample)
            if sample[0] is None:
                failed.add(p.name)     # a peer that cannot load here fails the same way every time
    return {name: summary(v) for name, v in samples.items()}


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
        p = subprocess.run([common.PYTHON, "-IS", os.path.join(common.BENCH, "phases.py"), repr(t0), common.SRC],
                           capture_output=True, text=True, check=True, env=common.CHILD_ENV)
        if i:       # the first run writes bytecode caches and the minimised BTF (cold runs removed it)
            samples.append(json.loads(p.stdout))
    return {k: round(common.median([s[k] for s in samples]), 1) for k in samples[0]}


def import_costs(runs, top=14):
    """-X importtime of the tcpconnect command's imports: the least of `runs` runs per module
    (import work is pure CPU: the least is the one least disturbed by other load)."""
    per = {}
    for _ in range(runs):
        # as /usr/local/bin/kprobekit starts (python -IS, kprobekit put on sys.path by name)
        err = subprocess.run([common.PYTHON, "-IS", "-X", "importtime", "-c",
                              f"import sys; sys.path.insert(0, {common.SRC!r}); import kprobekit.cli.main; "
                              "import kprobekit.tools.tcpconnect"],
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


TOOLS = ("tcpconnect", "tcpstates", "tcplife")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", "--runs", type=int, default=15)
    ap.add_argument("--cold-runs", type=int, default=3)
    args = ap.parse_args(argv)
    load_before = common.load_avg()
    results = {"peers": {}, "what": {}}
    peers = []
    for peer in common.peers(TOOLS):
        if "--buffer" in peer.argv:
            continue        # the transport matters for throughput (overhead.py), not for start-up
        if not peer.available():
            results["peers"][peer.name] = {"error": f"{peer.argv[0]} not installed — make bench-deps"}
            continue
        peers.append(peer)
        results["what"][peer.name] = peer.note
    results["peers"].update(run_interleaved(peers, args.runs))
    rows = []
    for peer in peers:
        r = results["peers"][peer.name]
        rows.append([peer.name, "warm" if peer.kprobekit else "", r["runs"], r["median_ms"], r["min_ms"],
                     r["vm_hwm_mib"], r["error"] or ""])
        if peer.kprobekit and len(peer.argv) == 2 and args.cold_runs:
            c = summary([one_run(peer, cold=True) for _ in range(args.cold_runs)])
            results["peers"][peer.name + " (cold cache)"] = c
            rows.append([peer.name, "cold", c["runs"], c["median_ms"], c["min_ms"], c["vm_hwm_mib"],
                         c["error"] or ""])
    results["targets"] = targets(results["peers"])
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
    common.print_table("start-up against the targets (medians of the interleaved warm runs)",
                       ["tool", "kprobekit ms", "libbpf-tools ms", "ratio (<= 2.5)", "bpftrace ms", "met"],
                       [[t, v["kprobekit_ms"], v["libbpf_tools_ms"], v["ratio"], v["bpftrace_ms"],
                         {True: "yes", False: "NO", None: "-"}[v["met"]]] for t, v in results["targets"].items()])
    print(f"\nload average before/after: {load_before[0]:.2f} / {results['load_avg'][1][0]:.2f}")
    return results


def targets(peers):
    """Per tool: kprobekit's median against 2.5x libbpf-tools' and against bpftrace's one-liner."""
    bpftrace = (peers.get("bpftrace one-liner") or {}).get("median_ms")
    out = {}
    for tool in TOOLS:
        kk = (peers.get(f"kprobekit {tool}") or {}).get("median_ms")
        c = (peers.get(f"libbpf-tools {tool}") or {}).get("median_ms")
        ratio = round(kk / c, 2) if kk and c else None
        met = None if kk is None or (c is None and bpftrace is None) else \
            (ratio is None or ratio <= 2.5) and (bpftrace is None or kk <= bpftrace)
        out[tool] = {"kprobekit_ms": kk, "libbpf_tools_ms": c, "ratio": ratio, "bpftrace_ms": bpftrace, "met": met}
    return out


if __name__ == "__main__":
    main()
