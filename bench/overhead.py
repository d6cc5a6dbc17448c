"""Tracing overhead on a loopback connect storm: no tracer vs each tracer attached.

bench/build/storm does N connect/accept/close cycles on 127.0.0.1 (bounded
in count and in time) and reports its own wall time.  Each repetition runs
every configuration once, in turn, so slow drifts in the machine's load hit
all of them alike; the figure is the median over repetitions.  Tracers print
into a pipe that is drained and discarded (libbpf-tools line-buffered by
stdbuf -oL, so that its header shows it is attached).  The tracer's own CPU
time during the storm is reported too: on 2 cores it mostly runs beside the
storm rather than in its way.
"""

import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def storm(n, limit_s=20):
    p = subprocess.run([common.STORM, "connect", str(n), str(limit_s)], capture_output=True, text=True,
                       check=True)
    count, ns = map(int, p.stdout.split())
    return count, ns


BPF_STATS = "/proc/sys/kernel/bpf_stats_enabled"


def bpf_run_ns(pid):
    """Sum of run_time_ns over the BPF programs process pid holds (needs bpf_stats_enabled)."""
    total = 0
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                text = f.read()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("run_time_ns:"):
                total += int(line.split()[1])
    return total


def bpf_cost(peer, n):
    """ns of BPF program run time per connect cycle, from the kernel's own bpf_stats."""
    prefix = ("stdbuf", "-oL") if peer.name.startswith("libbpf-tools") else ()
    s = common.Started(peer, tty=False, argv_prefix=prefix)
    if s.loaded_s is None:
        return None
    try:
        before = bpf_run_ns(s.proc.pid)
        count, _ = storm(n)
        return (bpf_run_ns(s.proc.pid) - before) / count
    finally:
        s.stop()


def one(peer, n):
    """(ns per connect cycle, tracer CPU ms per 1000 cycles) with peer attached, or peer=None."""
    if peer is None:
        count, ns = storm(n)
        return ns / count, None, None
    prefix = ("stdbuf", "-oL") if peer.name.startswith("libbpf-tools") else ()
    s = common.Started(peer, tty=False, argv_prefix=prefix)
    if s.loaded_s is None:
        return None, None, s.error
    try:
        time.sleep(0.2)
        cpu0 = s.cpu_s()
        count, ns = storm(n)
        time.sleep(0.3)     # let it drain what the storm produced
        cpu = s.cpu_s() - cpu0
    finally:
        s.stop()
    return ns / count, cpu * 1000 / count * 1000, None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", "--connects", type=int, default=20_000)
    ap.add_argument("-r", "--repeat", type=int, default=7)
    args = ap.parse_args(argv)
    common.need_build()
    load_before = common.load_avg()
    configs = [("no tracer", None)] + [(p.name, p) for p in common.peers() if p.available()
                                       and not p.name.startswith("bcc")]
    samples = {name: [] for name, _ in configs}
    cpu = {name: [] for name, _ in configs}
    errors = {}
    storm(1000)         # warm up: first connects pay for page faults and slab growth
    for _ in range(args.repeat):
        for name, peer in configs:
            if name in errors:
                continue
            ns, cpu_ms, err = one(peer, args.connects)
            if err:
                errors[name] = err
                continue
            samples[name].append(ns)
            cpu[name].append(cpu_ms)
    # A separate pass with the kernel's BPF run-time accounting on (it adds two clock
    # reads per program run, so it stays off while the storm is timed).
    with open(BPF_STATS) as f:
        stats_was = f.read().strip()
    bpf_ns = {}
    try:
        with open(BPF_STATS, "w") as f:
            f.write("1")
        for name, peer in configs:
            if peer is not None and name not in errors:
                bpf_ns[name] = [bpf_cost(peer, args.connects) for _ in range(3)]
    finally:
        with open(BPF_STATS, "w") as f:
            f.write(stats_was)
    base = common.median(samples["no tracer"])
    res = {"connects_per_run": args.connects, "repeat": args.repeat, "configs": {}}
    rows = []
    for name, _ in configs:
        med = common.median(samples[name])
        r = {"ns_per_connect": [round(x) for x in samples[name]],
             "median_ns": round(med) if med else None,
             "overhead_pct": round((med / base - 1) * 100, 1) if med and name != "no tracer" else None,
             "tracer_cpu_ms_per_1000": round(common.median(cpu[name]), 2) if cpu[name] and cpu[name][0]
             is not None else None,
             "bpf_ns_per_cycle": round(common.median(bpf_ns[name])) if bpf_ns.get(name) else None,
             "error": errors.get(name)}
        res["configs"][name] = r
        rows.append([name, r["median_ns"], f"{r['overhead_pct']:+.1f}" if r["overhead_pct"] is not None else "",
                     r["bpf_ns_per_cycle"], r["tracer_cpu_ms_per_1000"], r["error"] or ""])
    res["load_avg"] = [load_before, common.load_avg()]
    common.print_table(f"connect storm: {args.connects:,} loopback connect/accept/close cycles, "
                       f"median of {args.repeat}",
                       ["tracer", "ns/cycle", "overhead %", "BPF ns/cycle", "tracer CPU ms/1000 cycles", "error"], rows)
    print(f"\nload average before/after: {load_before[0]:.2f} / {res['load_avg'][1][0]:.2f}")
    return res


if __name__ == "__main__":
    main()
