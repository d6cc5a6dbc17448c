#!/usr/bin/env python3
"""Run the privileged pytest suite inside each stock Debian kernel.

The host kernel lacks kprobes and refuses fentry, so `make vmtest` boots the
stock 6.1 and 6.12 kernels from /boot with virtme-ng (software emulation: no
KVM here) and runs the same suite there.  The guest sees the host's files;
the repo and /tmp are guest-only writable overlays, and this run's directory
under tests/vm/logs/ (also reachable as logs/latest) is the one directory
shared read-write: a console log and a JUnit XML per kernel.

    .venv/bin/python tests/vm/run.py [--tests PATH ...] [--host-junit XML]
"""
import argparse
import codecs
import fcntl
import glob
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
LOGS = REPO / "tests" / "vm" / "logs"
KERNEL_GLOBS = ("/boot/vmlinuz-6.1.*-amd64", "/boot/vmlinuz-6.12.*-amd64")
# Backend names as tests' parametrize ids: the three main ones, then the
# tools' other backends (tcpstates' tp_btf, funclatency's syscalls, trace's ftrace).
BACKENDS = ("fentry", "kprobe", "tracepoint", "tp_btf", "syscalls", "ftrace")
TAIL = 60       # lines of output shown per failure
MACHINE_LOCK = "/run/lock/kprobekit-vmtest.lock"
KEEP_RUNS = 10  # run directories kept under tests/vm/logs/
EXIT_MEANING = {1: "tests failed", 2: "pytest was interrupted", 3: "pytest internal error",
                4: "pytest usage error", 5: "pytest ran no tests",
                255: "the VM died before the command ended (boot failure, panic)"}
LIVE = set()    # vng processes to kill if we are stopped
# Both kernels at once: two boots side by side are slower (4 emulated CPUs on
# 2 cores), but the long test phases overlap, which wins for the real suite.
JOBS = 2
# The whole suite took 19 min per kernel under emulation, both VMs running
# (176 tests, Nov 2026); the timeout only catches a hung VM.
TIMEOUT = 45 * 60


def say(msg):
    sys.stdout.write(msg + "\n")  # one write: lines from the VM threads stay whole
    sys.stdout.flush()


def version_key(path):
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path)]


def find_kernels():
    """Newest match of each glob; a missing kernel fails the run, never skips."""
    kernels = []
    for pattern in KERNEL_GLOBS:
        found = sorted(glob.glob(pattern), key=version_key)
        if not found:
            sys.exit(f"vmtest: no kernel matches {pattern} (make deps installs it)")
        kernels.append(found[-1])
    return kernels


def open_run_dir():
    """Waits out any other vmtest run, then makes this run's log directory.

    Runs never share files, and never overlap either: two matrices on two
    cores make every emulated CPU crawl and the timeouts fire.
    """
    LOGS.mkdir(parents=True, exist_ok=True)
    # One lock for the machine, not per checkout: matrices from two clones overlap just as badly.
    os.makedirs(os.path.dirname(MACHINE_LOCK), exist_ok=True)
    lock = open(MACHINE_LOCK, "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        say("vmtest: waiting for another vmtest run to finish")
        fcntl.flock(lock, fcntl.LOCK_EX)
    old = sorted(p for p in LOGS.iterdir()
                 if re.fullmatch(r"\d{8}-\d{6}-\d+", p.name) and not p.is_symlink())
    for path in old[:-(KEEP_RUNS - 1)]:
        shutil.rmtree(path)
    run_dir = LOGS / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    run_dir.mkdir()
    latest = LOGS / ".latest.tmp"
    latest.unlink(missing_ok=True)
    latest.symlink_to(run_dir.name)
    os.replace(latest, LOGS / "latest")
    return lock, run_dir


def guest_command(release, tests, run_dir):
    # Tests marked unit need no kernel: the host run covers them, and under
    # emulation each costs seconds of interpreter start-up.
    pytest = [str(VENV_BIN / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not unit and not host"]
    # The VM harness is not part of the suite, unless asked for explicitly.
    vm_dir = REPO / "tests" / "vm"
    if not any(vm_dir in [p, *p.parents] for p in (REPO / t for t in tests)):
        pytest.append(f"--ignore={vm_dir}")
    pytest += [*tests, f"--junitxml={run_dir / release}.xml"]
    return shlex.join(["sh", str(REPO / "tests" / "vm" / "guest.sh"), *pytest])


def vng_command(kernel, release, tests, cpus, run_dir):
    return [
        # --verbose: the kernel's console goes to the log too, so a panic or a
        # WARN during the suite is there to read.
        str(VENV_BIN / "vng"), "--verbose", "--disable-kvm",
        "--force-9p",  # virtiofs wants the Rust virtiofsd, which bookworm lacks
        "-m", "2G", "-p", str(cpus), "-r", kernel,
        "--cwd", str(REPO),
        "--overlay-rwdir", str(REPO),  # writable in the guest, untouched on the host
        "--rwdir", str(run_dir),       # mounted over it: results reach the host
        "--exec", guest_command(release, tests, run_dir),
    ]


def copy_output(src, dst, start):
    """VM console to its log as it comes (pytest's dots end no line), each
    line stamped with seconds since launch: a hung VM's log shows where."""
    decode = codecs.getincrementaldecoder("utf-8")(errors="replace").decode
    line_start = True
    while chunk := os.read(src.fileno(), 65536):
        for piece in decode(chunk).splitlines(keepends=True):
            if line_start:
                dst.write(f"[{time.monotonic() - start:6.1f}] ")
            dst.write(piece)
            line_start = piece.endswith("\n")
        dst.flush()


def boot(kernel, run_dir, tests, cpus, timeout):
    """Boot one kernel and run the suite; returns the run's facts."""
    release = Path(kernel).name.removeprefix("vmlinuz-")
    xml, log = run_dir / f"{release}.xml", run_dir / f"{release}.log"
    cmd = vng_command(kernel, release, tests, cpus, run_dir)
    # vng runs virtme-run and friends through PATH.
    env = dict(os.environ, PATH=f"{VENV_BIN}:{os.environ.get('PATH', '')}")
    say(f"vmtest: booting {release} (log: {log.relative_to(REPO)})")
    start = time.monotonic()
    with open(log, "w") as out:
        out.write(f"$ {shlex.join(cmd)}\n")
        out.flush()
        # A pipe, not the file itself: qemu reopens /proc/self/fd/1 and /2
        # for the guest's stdout and stderr, and each reopening of a regular
        # file writes from offset 0 over the others.
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
        LIVE.add(proc)
        copier = threading.Thread(target=copy_output, args=(proc.stdout, out, start))
        copier.start()
        try:
            rc, timed_out = proc.wait(timeout=timeout), False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # vng and the qemu it started
            rc, timed_out = proc.wait(), True
        LIVE.discard(proc)
        copier.join()
    elapsed = time.monotonic() - start
    say(f"vmtest: {release} done in {elapsed:.0f} s, exit {rc}"
        f"{' (TIMED OUT)' if timed_out else ''}")
    return dict(name=release, rc=rc, timed_out=timed_out, elapsed=elapsed,
                xml=xml, log=log, **read_junit(xml))


def read_junit(path):
    """Counts, exercised backends and failure texts from a JUnit file."""
    if not path.exists():
        return dict(counts=None, backends=set(), failures=[])
    counts = dict(passed=0, failed=0, skipped=0)
    backends, failures = set(), []
    for case in ET.parse(path).iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        bad = [c for c in case if c.tag in ("failure", "error")]
        if bad:
            counts["failed"] += 1
            failures.append((name, "\n".join(f"{c.get('message', '')}\n{c.text or ''}"
                                             for c in bad)))
        elif case.find("skipped") is not None:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
            # Backend tests carry the backend as a parametrize id: [kprobe], [tracepoint-4].
            for ids in re.findall(r"\[([^\]]*)\]", case.get("name", "")):
                backends.update(b for b in ids.split("-") if b in BACKENDS)
    return dict(counts=counts, backends=backends, failures=failures)


def tail(text, n=TAIL):
    lines = text.rstrip().splitlines()
    return "\n".join((["..."] if len(lines) > n else []) + lines[-n:])


def verdict(r):
    """Why one VM run failed, or None if it passed."""
    if r["timed_out"]:
        return f"timed out after {r['elapsed']:.0f} s"
    if r["rc"] != 0:
        return f"exit {r['rc']}: {EXIT_MEANING.get(r['rc'], 'see the log')}"
    if r["counts"] is None:
        return "no JUnit XML"
    if r["failures"]:
        return "test failures"
    return None


def report(runs):
    """Print what failed, then the table; returns True if every VM run passed."""
    ok = True
    for r in runs:
        if r.get("host"):
            continue
        why = verdict(r)
        if why is None:
            continue
        ok = False
        print(f"\n===== {r['name']}: FAILED ({why}) =====")
        for name, text in r["failures"]:
            print(f"--- {name}\n{tail(text)}")
        if not r["failures"]:  # nothing in the XML: the console says why
            print(f"--- last lines of {r['log'].relative_to(REPO)}\n"
                  f"{tail(r['log'].read_text(errors='replace'))}")

    print(f"\n{'kernel':<28} {'passed':>6} {'failed':>6} {'skipped':>7}  {'time':>5}  backends exercised")
    for r in runs:
        c = r["counts"] or {}
        secs = f"{r['elapsed']:.0f}s" if "elapsed" in r else "-"
        print(f"{r['name']:<28} {c.get('passed', '-'):>6} {c.get('failed', '-'):>6} "
              f"{c.get('skipped', '-'):>7}  {secs:>5}  "
              f"{', '.join(b for b in BACKENDS if b in r['backends']) or '-'}")
    return ok


def stop(signum, _frame):
    """Ctrl-C or make's SIGTERM: the VMs are in their own sessions, so end them here."""
    for proc in list(LIVE):
        os.killpg(proc.pid, signal.SIGKILL)
    sys.exit(128 + signum)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tests", nargs="+", default=["tests"],
                    help="pytest paths, relative to the repo (default: tests, without tests/vm)")
    ap.add_argument("--host-junit", type=Path,
                    help="JUnit XML of the host run, added to the summary")
    ap.add_argument("--jobs", type=int, default=JOBS,
                    help=f"VMs booted at once (default {JOBS})")
    ap.add_argument("--cpus", type=int, default=2, help="vCPUs per VM (default 2, as the host)")
    ap.add_argument("--timeout", type=int, default=TIMEOUT,
                    help=f"seconds per VM (default {TIMEOUT})")
    args = ap.parse_args()

    if not (VENV_BIN / "vng").exists():
        sys.exit("vmtest: .venv/bin/vng missing: run `make venv` (pip install virtme-ng)")
    kernels = find_kernels()
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    _lock, run_dir = open_run_dir()

    start = time.monotonic()
    pool = ThreadPoolExecutor(max_workers=args.jobs)
    try:
        runs = list(pool.map(lambda k: boot(k, run_dir, args.tests, args.cpus, args.timeout),
                             kernels))
    finally:
        pool.shutdown(cancel_futures=True)  # after stop(): boot no kernel still queued
    say(f"vmtest: {len(runs)} kernels in {time.monotonic() - start:.0f} s, "
        f"logs in {run_dir.relative_to(REPO)}")

    if args.host_junit:
        if not args.host_junit.exists():
            sys.exit(f"vmtest: --host-junit {args.host_junit}: no such file")
        runs.insert(0, dict(name=f"host {os.uname().release}", host=True,
                            **read_junit(args.host_junit)))
    return 0 if report(runs) else 1


if __name__ == "__main__":
    sys.exit(main())
