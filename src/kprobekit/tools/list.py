"""list: what can be probed here: kernel functions (BTF, kallsyms, available_filter_functions) and tracepoints.

A pattern with ':' or '/' selects tracepoints (CATEGORY:NAME), otherwise
functions.  A name that matches nothing is explained: typo (closest names),
inlined, compiler clone or notrace.
"""

import fnmatch
import json
import sys

from .. import features, kernel
from ..cli import output
from ..cli.runner import command_parser, run_command
from ..errors import NotFound
from ..symbols import Functions

EXAMPLES = """examples:
  kprobekit list 'tcp_v4_*'                 # functions, with the hooks that reach them
  kprobekit list 'sock:*' --fields          # tracepoints and their fields
  kprobekit list --json syscalls:sys_enter_bind
  kprobekit list inet_relase                # not there: says why, names the closest"""


def parser():
    p = command_parser("list", "List kernel functions and tracepoints that can be probed.", EXAMPLES)
    p.add_argument("pattern", nargs="?", default="*", help="glob; with ':' or '/' it selects tracepoints")
    p.add_argument("-t", "--tracepoints", action="store_true", help="list tracepoints (default: by pattern)")
    p.add_argument("-F", "--fields", action="store_true", help="show each tracepoint's fields")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    return p


def body(args, stopped):
    pattern = args.pattern.replace("/", ":")
    if args.tracepoints or ":" in pattern:
        return _tracepoints(args, pattern if ":" in pattern else f"*:{pattern}")
    return _functions(args, pattern)


def _tracepoints(args, pattern):
    names = fnmatch.filter(kernel.tracepoints(), pattern)
    if not names:
        raise NotFound(f"list {pattern}: no tracepoint matches", hint="`kprobekit list -t` shows them all")
    lines = []
    for name in names:
        cat, event = name.split(":", 1)
        fields = [f for f in kernel.tracepoint_fields(cat, event) or () if not f.name.startswith("common_")]
        if args.json:
            lines.append(json.dumps({"tracepoint": name, "fields": [
                {"name": f.name, "type": f.c_type, "offset": f.offset, "size": f.size, "signed": f.signed}
                for f in fields]}))
        elif args.fields:
            lines.append(name)
            lines.extend(f"    {f.c_type} {f.name};  (offset {f.offset}, size {f.size})" for f in fields)
        else:
            lines.append(name)
    output.emit("\n".join(lines) + "\n")
    return 0


def _functions(args, pattern):
    funcs = Functions()
    btf = funcs.btf_functions()
    syms = funcs.kallsyms()
    ftrace = funcs.ftrace()
    have_fentry, have_kprobe = features.have("fentry"), features.have("kprobe")
    names = sorted(set(fnmatch.filter(btf, pattern)) | set(fnmatch.filter(syms, pattern)))
    if not names:
        if any(c in pattern for c in "*?["):
            raise NotFound(f"list {pattern}: no kernel function matches")
        raise funcs.why_not(pattern, "kprobe")
    lines = []
    for name in names:
        fentry = name in btf and (ftrace is None or name in ftrace)
        kprobe = name in syms
        if args.json:
            lines.append(json.dumps({"function": name, "btf": name in btf,
                                     "ftrace": None if ftrace is None else name in ftrace,
                                     "fentry": fentry and have_fentry, "kprobe": kprobe and have_kprobe}))
        else:
            hooks = [h for h, ok in (("fentry", fentry and have_fentry), ("kprobe", kprobe and have_kprobe)) if ok]
            why = ""
            if not hooks:
                why = _why(name, name in btf, fentry, kprobe, have_fentry, have_kprobe)
            lines.append(f"{name:<40} {' '.join(hooks) or '-':<14} {why}".rstrip())
    output.emit("\n".join(lines) + "\n")
    if not args.json:
        notes = []
        if not have_kprobe:
            notes.append(f"no kprobes here ({features.probe('kprobe').reason})")
        if not have_fentry:
            notes.append(f"no fentry here ({features.probe('fentry').reason})")
        if ftrace is None:
            notes.append("available_filter_functions is not readable: notrace functions cannot be told apart")
        if notes:
            print("kprobekit list: " + "; ".join(notes) +
                  " — tracepoints (`kprobekit list -t`) and syscalls (funclatency's fallback) still work",
                  file=sys.stderr)
    return 0


def _why(name, in_btf, fentry, kprobe, have_fentry, have_kprobe):
    reasons = []
    if not have_fentry and not have_kprobe:
        reasons.append("this kernel has neither kprobes nor fentry")
    if not kprobe:
        reasons.append("no text symbol for kprobes")
    if not fentry:
        reasons.append("notrace: no fentry" if in_btf else "not in BTF: no fentry")
    return "; ".join(reasons)


def main(argv):
    return run_command("list", parser(), argv, body)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
