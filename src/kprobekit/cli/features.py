"""`kprobekit features`: what this kernel allows, as every tool sees it."""

import json
import sys

from .. import features
from .runner import command_parser, run_command


def _show(args, stop):
    features.forget()     # always a fresh answer here
    report = features.report()
    reasons = features.reasons()
    if args.json:
        print(json.dumps(report))
        return 0
    for name in features.HOOKS:
        answer = {True: "yes", False: "no", None: "?"}[report[name]]
        print(f"{name:<11} {answer:<4} {reasons.get(name, '')}".rstrip())
    print(f"{'lockdown':<11} {report['lockdown']:<4} {reasons.get('lockdown', '')}".rstrip())
    print(f"{'caps':<11} {' '.join(report['capabilities']) or '-'}")
    return 0


def main(argv):
    p = command_parser("features", "Probe the running kernel's BPF features, as the tools do.")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return run_command("features", p, argv, _show)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
