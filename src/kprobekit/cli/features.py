"""`kprobekit features`: what this kernel allows, as every tool sees it."""

import argparse
import json
import sys

from .. import features


def main(argv):
    p = argparse.ArgumentParser(prog="kprobekit features",
                                description="Probe the running kernel's BPF features, as the tools do.")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    features.forget()     # always a fresh answer here
    report = features.report()
    reasons = features.reasons()
    features.release()
    if args.json:
        print(json.dumps(report))
        return 0
    for name in features.HOOKS:
        ok = report[name]
        print(f"{name:<11} {'yes' if ok else 'no ':<4} {reasons.get(name, '')}".rstrip())
    print(f"{'lockdown':<11} {report['lockdown']}")
    print(f"{'caps':<11} {' '.join(report['capabilities']) or '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
