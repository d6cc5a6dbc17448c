"""Events printed and lost on a loopback connect storm: kprobekit's tools next to libbpf-tools'.

Each repetition runs, in turn: the storm alone, then each tracer attached while the same storm
runs (its stdout a pipe drained by the benchmark, counting lines).  After the storm the tracer
gets time to print what it holds, then Ctrl-C.  Reported per tracer: the storm's connect rate as a
fraction of the untraced rate, lines printed and events the tracer says it lost (medians), so a
tool that keeps up by slowing the storm and one that drops events show as what they are.
"""

import argparse
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from overhead import storm  # noqa: E402

TOOLS = ("tcpstates", "tcplife", "tcpconnect")


def tracers(tools):
    out = []
    for tool in tools:
        out.append((f"kprobekit {tool}", [common.KPROBEKIT, tool], ()))
        out.append((f"kprobekit {tool} --json", [common.KPROBEKIT, tool, "--json"], ()))
        if os.path.exists(f"/usr/sbin/{tool}"):
            out.append((f"libbpf-tools {tool}", [f"/usr/sbin/{tool}"], ("stdbuf", "-oL")))
    return out


def lost_of(name, s):
    """Events the tracer itself says it lost."""
    err = s.stderr_tail.decode(errors="replace")
    if name.startswith("kprobekit"):
        tail = s.stdout_tail.decode(errors="replace").strip().splitlines()
        if tail and tail[-1].startswith('{"lost"'):
            return json.loads(tail[-1])["lost"]
        m = re.search(r"kprobekit: lost (\d+) events", err)
        return int(m.group(1)) if m else 0
    # libbpf-tools: "lost N events on CPU #C" per perf-buffer report
    return sum(int(n) for n in re.findall(r"[Ll]ost (\d+) events", err))


def one(name, argv, prefix, n):
    ready = [("stderr", "kprobekit: using ")] if name.startswith("kprobekit") else [("stdout", "")]
    if name.startswith("kprobekit") and "--json" not in argv:
        ready.append(("stdout", ""))
    s = common.Started(common.Peer(name, argv, ready), tty=False, argv_prefix=prefix)
    if s.loaded_s is None:
        return {"error": s.error}
    try:
        time.sleep(0.2)
        header = s.stdout_lines
        count, ns = storm(n)
        last, still = -1, time.monotonic()
        while time.monotonic() - still < 1.0:       # until it has printed what it holds
            if s.stdout_lines != last:
                last, still = s.stdout_lines, time.monotonic()
            time.sleep(0.1)
    finally:
        s.stop()
    lines = s.stdout_lines - header
    lost = lost_of(name, s)
    if name.startswith("kprobekit") and "--json" in argv and lost:
        lines -= 1          # the {"lost": N} line
    return {"ns_per_connect": ns / count, "lines": lines, "lost": lost}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", "--connects", type=int, default=20_000)
    ap.add_argument("-r", "--repeat", type=int, default=5)
    ap.add_argument("--tools", nargs="*", default=list(TOOLS))
    args = ap.parse_args(argv)
    common.need_build()
    configs = tracers(args.tools)
    base, runs = [], {name: [] for name, _, _ in configs}
    storm(1000)
    load_before = common.load_avg()
    for _ in range(args.repeat):
        base.append(storm(args.connects)[1] / args.connects)
        for name, cmd, prefix in configs:
            runs[name].append(one(name, cmd, prefix, args.connects))
    b = common.median(base)
    res = {"connects": args.connects, "repeat": args.repeat, "untraced_ns_per_connect": round(b), "tracers": {}}
    rows = []
    for name, _, _ in configs:
        ok = [r for r in runs[name] if "error" not in r]
        if not ok:
            res["tracers"][name] = {"error": runs[name][0]["error"]}
            rows.append([name, "", "", "", "", runs[name][0]["error"]])
            continue
        ratio = b / common.median([r["ns_per_connect"] for r in ok])
        lines = [r["lines"] for r in ok]
        lost = [r["lost"] for r in ok]
        res["tracers"][name] = {"rate_ratio": round(ratio, 2), "lines": lines, "lost": lost}
        rows.append([name, f"{ratio:.2f}", f"{min(lines):,}-{max(lines):,}", f"{min(lost):,}-{max(lost):,}",
                     f"{common.median(lines):,.0f}", ""])
    res["targets"] = targets(res["tracers"], args.tools)
    res["load_avg"] = [load_before, common.load_avg()]
    common.print_table(f"connect storm of {args.connects:,} loopback connects ({args.repeat} runs): "
                       "what each tracer printed and lost",
                       ["tracer", "rate vs untraced", "lines (min-max)", "lost (min-max)", "lines (median)",
                        "error"], rows)
    common.print_table("against libbpf-tools: lost no more (worst run) and rate at least its - 0.02",
                       ["kprobekit", "lost (max)", "libbpf-tools lost (max)", "rate", "libbpf-tools rate", "met"],
                       [[k, v["lost"], v["peer_lost"], v["rate"], v["peer_rate"],
                         {True: "yes", False: "NO", None: "-"}[v["met"]]] for k, v in res["targets"].items()])
    return res


def targets(tracers, tools):
    out = {}
    for tool in tools:
        peer = tracers.get(f"libbpf-tools {tool}") or {}
        for name in (f"kprobekit {tool}", f"kprobekit {tool} --json"):
            kk = tracers.get(name) or {}
            if "lost" not in kk:
                continue
            met = None
            if "lost" in peer:
                met = max(kk["lost"]) <= max(peer["lost"]) and kk["rate_ratio"] >= peer["rate_ratio"] - 0.02
            out[name] = {"lost": max(kk["lost"]), "peer_lost": max(peer["lost"]) if "lost" in peer else None,
                         "rate": kk["rate_ratio"], "peer_rate": peer.get("rate_ratio"), "met": met}
    return out


if __name__ == "__main__":
    main()
