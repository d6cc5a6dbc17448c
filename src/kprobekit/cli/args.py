"""Command lines: argparse defines them; a small reader takes the plain ones without importing it.

argparse, with the re, enum and gettext modules it pulls in, is ~5 ms of a ~35 ms start-up on a
slow machine, more than any other step that is ours.  Most runs are plain: known flags spelt in
full, values that pass their type.  `parse()` reads those itself and gives the same namespace
argparse would; for anything else (--help, a mistake, an abbreviation, positional arguments,
`--`, a value starting with "-") it lets argparse parse, so help and error messages are
argparse's.  tests/test_args.py checks both give the same answers.

An argument is (flags, argparse keywords, exclusive group or None), as Tool options declare them.
"""

import os
import sys
from types import SimpleNamespace

from .. import errors

_VALUE_ACTIONS = (None, "store")
_KNOWN_ACTIONS = _VALUE_ACTIONS + ("store_true", "store_const")


def parse(arguments, argv, parser):
    """The namespace for argv: read here when plain, else by parser() (an argparse parser)."""
    ns = read_plain(arguments, argv)
    return ns if ns is not None else parser().parse_args(argv)


def read_plain(arguments, argv):
    """argparse's namespace for argv, or None where argparse must answer."""
    flags, values, groups = {}, {}, {}
    for names, kw, group in arguments:
        action = kw.get("action")
        if action not in _KNOWN_ACTIONS or kw.get("required"):
            return None
        if not names[0].startswith("-"):            # positional
            if kw.get("nargs") not in ("?", "*"):
                return None                         # required: argparse says it is missing
            dest = names[0]
            if kw.get("nargs") == "*" and kw.get("default") is None:
                values[dest] = []
                continue
        else:
            dest = kw.get("dest") or _dest(names)
            for name in names:
                flags[name] = (dest, kw, group)
        default = kw.get("default", False if action == "store_true" else None)
        if isinstance(default, str) and kw.get("type") and action in _VALUE_ACTIONS:
            try:
                default = kw["type"](default)       # argparse converts string defaults too
            except Exception:
                return None
        values[dest] = default
    i = 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("-") or token in ("-", "--"):
            return None                             # positional arguments and `--`
        if token.startswith("--"):
            name, eq, value = token.partition("=")
        else:
            name, value = token[:2], token[2:]
            eq = bool(value)
        if name not in flags:                       # --help, unknown, abbreviated, -x=...
            return None
        dest, kw, group = flags[name]
        action = kw.get("action")
        if action in _VALUE_ACTIONS:
            if kw.get("nargs") is not None:
                return None
            if not eq:
                i += 1
                if i == len(argv) or argv[i].startswith("-"):
                    return None
                value = argv[i]
            try:
                value = kw["type"](value) if kw.get("type") else value
            except Exception:
                return None                         # argparse words the error
            if "choices" in kw and value not in kw["choices"]:
                return None
        elif eq:
            return None                             # a flag given a value
        else:
            value = True if action == "store_true" else kw.get("const")
        if group is not None and groups.setdefault(group, dest) != dest:
            return None                             # "not allowed with": argparse says so
        values[dest] = value
        i += 1
    return SimpleNamespace(**values)


def _dest(names):
    longs = [n for n in names if n.startswith("--")]
    return (longs or names)[0].lstrip("-").replace("-", "_")


def help_formatter(prog):
    """argparse's formatter, given its width so that argparse does not import shutil (~2 ms)."""
    import argparse
    try:
        width = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        try:
            width = os.get_terminal_size(sys.stderr.fileno()).columns
        except OSError:
            width = 80
    return argparse.RawDescriptionHelpFormatter(prog, width=max(width - 2, 40))


def new_parser(**kw):
    """An argparse parser whose errors are errors.UsageError (one line, exit code 2)."""
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message):
            raise errors.UsageError(f"{message} — see --help")

    kw.setdefault("formatter_class", help_formatter)
    return Parser(**kw)


def build(arguments, **kw):
    """The argparse parser of these arguments."""
    p = new_parser(**kw)
    groups = {}
    for names, opts, group in arguments:
        where = p
        if group:       # e.g. -4 and -6: one of them, or neither
            where = groups.get(group) or groups.setdefault(group, p.add_mutually_exclusive_group())
        where.add_argument(*names, **opts)
    return p
