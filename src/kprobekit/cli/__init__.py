"""The kprobekit command (the library never imports this package).

A Ctrl-C that arrives while Python is still importing a command ends it as a
later one does: quietly, exit 0.  Each command installs its own handler once
it runs; this one only covers the imports before that.
"""
import _signal     # not `signal`: its enum import costs start-up time


def _quiet_exit(signum, frame):
    raise SystemExit(0)


_signal.signal(_signal.SIGINT, _quiet_exit)
