"""cli/args.py's own reading of plain command lines gives what argparse gives, for every tool.

argparse stays the definition: for each tool and many command lines, read_plain() must either
answer exactly as the tool's argparse parser does or step aside (None) — and it must answer
itself for the plain forms, or start-up would pay for argparse after all.
"""

import importlib
import os
import subprocess
import sys

import pytest

from kprobekit import errors
from kprobekit.cli import args, runner
from kprobekit.cli.main import COMMANDS

pytestmark = pytest.mark.unit


def _tools():
    out = []
    for name, (module, _) in COMMANDS.items():
        tool = getattr(importlib.import_module(module), "TOOL", None)
        if tool is not None:
            out.append(tool)
    return out


TOOLS = _tools()
# values tried for an option, the first its type accepts is used
CANDIDATES = ["80,443", str(os.getpid()), "1", "4026531840", "/sys/fs/cgroup", "127.0.0.1", "tcp"]


def _argparse(tool, argv):
    try:
        return vars(runner.build_parser(tool).parse_args(argv))
    except (errors.UsageError, SystemExit) as e:
        return type(e)


def _sample_value(tool, flag):
    for v in CANDIDATES:
        if isinstance(_argparse(tool, [flag, v]), dict):
            return v
    return None


def _command_lines(tool):
    """Plain ones (read_plain must answer) and others (it may step aside)."""
    plain, other = [[]], [["-h"], ["--help"], ["--js"], ["--json=1"], ["--"], ["-v", "--", "x"],
                          ["--backend", "nope"], ["--buffer"], ["-p", "abc"], ["-p", "-1"], ["-p=1"],
                          ["--pid", "0"], ["positional"], ["-vj"], ["--no-such-flag"]]
    for names, kw, group in runner.arguments(tool):
        if not names[0].startswith("-"):
            continue
        action = kw.get("action")
        if action in ("store_true", "store_const"):
            plain += [[n] for n in names]
            other.append([names[0] + "x"])
        else:
            value = kw["choices"][-1] if "choices" in kw else _sample_value(tool, names[0])
            if value is None:
                continue
            for n in names:
                plain.append([n, value])
                plain.append([f"{n}={value}"] if n.startswith("--") else [n + value])
            other += [[names[0]], [names[0], "-v"], [names[0], "not a value"]]
    flags = [ln for ln in plain if len(ln) == 1 and not any(c in ln[0] for c in "=")]
    plain += [a + b for a, b in zip(flags, flags[1:])]          # pairs of flags
    plain.append([x for ln in plain[1:4] for x in ln])
    return plain, other


@pytest.mark.parametrize("tool", TOOLS, ids=lambda t: t.name)
def test_plain_command_lines_read_as_argparse_reads_them(tool):
    plain, other = _command_lines(tool)
    answered = 0
    for argv in plain + other:
        expected = _argparse(tool, argv)
        got = args.read_plain(runner.arguments(tool), argv)
        if got is not None:
            answered += 1
            assert vars(got) == expected, argv
        elif argv in plain and isinstance(expected, dict) and not _exclusive_pair(tool, argv):
            pytest.fail(f"{tool.name} {argv}: plain, yet read by argparse")
    assert answered >= len(plain) // 2


def _exclusive_pair(tool, argv):
    groups = {n: g for names, _, g in runner.arguments(tool) for n in names if g}
    seen = {groups[a] for a in argv if a in groups}
    return len(seen) < len([a for a in argv if a in groups])


@pytest.mark.parametrize("argv", [["-4", "-6"], ["-h"], ["--js"], ["-p", "abc"], ["--backend", "nope"]])
def test_what_it_does_not_read_argparse_answers(argv):
    tool = next(t for t in TOOLS if t.name == "tcpconnect")
    assert args.read_plain(runner.arguments(tool), argv) is None


def test_start_up_imports_no_argparse():
    """The plain path of a tool's start leaves out argparse, re, enum and json (cli/args.py)."""
    import kprobekit
    src = os.path.dirname(os.path.dirname(kprobekit.__file__))
    code = (f"import sys; sys.path.insert(0, {src!r}); "
            "from kprobekit.cli import output, runner; from kprobekit.tools.tcpstates import TOOL; "
            "runner.parse_args(TOOL, ['-L', '80', '--json']); "
            "print(' '.join(m for m in ('argparse', 're', 'enum', 'json', 'signal') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == []
