"""One exception hierarchy.  Messages read "verb object: cause — what to do".

`log` keeps libbpf's own lines for --verbose; the message itself never
contains them.
"""

import errno as _errno
import os


def bad_argument(message):
    """What an argparse type function raises for an unusable value; argparse says `message`.
    (argparse is imported only then: start-up does without it, see cli/args.py.)"""
    import argparse
    return argparse.ArgumentTypeError(message)


class KprobekitError(Exception):
    """Base of every error kprobekit raises on purpose."""

    def __init__(self, message, *, errno=0, log=(), hint=""):
        super().__init__(message)
        self.errno = errno
        self.log = list(log)
        self.hint = hint

    def __str__(self):
        msg = self.args[0]
        return f"{msg} — {self.hint}" if self.hint else msg

    @classmethod
    def from_errno(cls, err, what, log=()):
        cause = os.strerror(err) if err else "failed"
        if cls is KprobekitError and err in (_errno.EPERM, _errno.EACCES):
            return PermissionDenied(f"{what}: {cause}", errno=err, log=log, hint=ROOT_HINT)
        return cls(f"{what}: {cause}", errno=err, log=log)


class UsageError(KprobekitError):
    """A bad command-line argument or API argument."""


class MissingDependency(KprobekitError):
    """A library or tool kprobekit needs is not installed."""


class PermissionDenied(KprobekitError):
    """Missing root, CAP_BPF/CAP_PERFMON/CAP_SYS_ADMIN, or refused by lockdown."""


class NotSupported(KprobekitError):
    """The running kernel lacks a feature; `feature` names it as features.py does."""

    def __init__(self, message, *, feature="", **kw):
        super().__init__(message, **kw)
        self.feature = feature


class VerifierError(KprobekitError):
    """The kernel's verifier rejected a program; `log` holds its output."""


class CompileError(KprobekitError):
    """clang rejected a BPF C program; the message ends with clang's own."""

    def __init__(self, message, *, clang_output="", **kw):
        super().__init__(message, **kw)
        self.clang_output = clang_output

    def __str__(self):
        lines = self.clang_output.rstrip().splitlines()
        shown = lines[:20] + ([f"... ({len(lines) - 20} more lines)"] if len(lines) > 20 else [])
        return "\n".join([super().__str__()] + ["  " + ln for ln in shown])


class AttachError(KprobekitError):
    """A program loaded but could not be attached to its target."""


class NotFound(KprobekitError):
    """A named program, map, function or tracepoint does not exist."""


ROOT_HINT = "run as root (or with CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN)"
