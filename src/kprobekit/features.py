"""What this kernel allows, asked the only reliable way: load a tiny program
and attach it for real.  Every tool asks here before choosing a backend;
nothing else in kprobekit decides "supported".

Answers are cached for the life of the process and, for the answers that
cannot change until reboot, in /run/kprobekit keyed by boot id, so a tool's
start-up does not pay for probing each time.
"""

import os

from . import kernel
from .errors import ROOT_HINT

# Hook names, in the order `kprobekit features` prints them.
HOOKS = ("btf", "kprobe", "kretprobe", "fentry", "fexit", "tracepoint", "tp_btf", "raw_tp",
         "ringbuf", "perfbuf", "tracefs")
# Fixed for a boot: safe to keep on disk.  tracefs (mountable) is not.
# Answered by looking at files any user may read; the rest load programs, which needs privileges.
_UNPRIVILEGED = {"btf", "tracefs"}
_PER_BOOT = {"btf", "kprobe", "kretprobe", "fentry", "fexit", "tracepoint", "tp_btf", "raw_tp",
             "ringbuf", "perfbuf"}
# A function present and traceable on every kernel kprobekit supports.
PROBE_TARGET = "vfs_read"
CACHE_DIR = "/run/kprobekit"
# Lines: boot key, euid, then "name<TAB>0|1<TAB>reason" — plain text, so no json import at start-up.
CACHE_FILE = CACHE_DIR + "/features"


class Feature:
    """ok is True or False, or None when this process cannot tell (no privileges to probe)."""
    __slots__ = ("name", "ok", "reason")

    def __init__(self, name, ok, reason=""):
        self.name, self.ok, self.reason = name, ok, reason

    def __bool__(self):
        return bool(self.ok)

    def __repr__(self):
        return f"Feature({self.name}={self.ok}{', ' + self.reason if self.reason else ''})"


_cache = {}
_disk = None


def probe(name):
    """The Feature for a hook name in HOOKS; probed once per process (or per boot)."""
    f = _cache.get(name)
    if f is None:
        if name not in _PROBES:
            raise ValueError(f"unknown feature {name!r}")
        f = _from_disk(name)
        if f is None and name not in _UNPRIVILEGED and not kernel.privileged():
            # every probe would fail with EPERM, which says nothing about the kernel
            f = Feature(name, None, f"cannot tell: probing needs privileges — {ROOT_HINT}")
        if f is None:
            f = _PROBES[name]()
            _to_disk(f)
        _cache[name] = f
    return f


def have(name):
    return bool(probe(name).ok)


def report():
    """Everything, as `kprobekit features --json` prints it."""
    out = {name: probe(name).ok for name in HOOKS}
    out["lockdown"] = kernel.lockdown()
    out["capabilities"] = kernel.capabilities()
    return out


def reasons():
    """{name: why not} for every hook not available, and "lockdown" when it cannot be read."""
    out = {name: probe(name).reason for name in HOOKS if probe(name).reason}
    if kernel.lockdown() == "unknown":
        out["lockdown"] = kernel.why_not("securityfs") or "securityfs has no lockdown file"
    return out


def forget():
    """Drops every cached answer (tests; a kernel module loaded since)."""
    global _disk
    _cache.clear()
    _disk = {}
    try:
        os.unlink(CACHE_FILE)
    except OSError:
        pass


# --- the disk cache ---

def _load_disk():
    global _disk
    if _disk is None:
        _disk = {}
        try:
            with open(CACHE_FILE) as f:
                lines = f.read().split("\n")
        except OSError:
            return _disk
        if lines[:2] == [kernel.boot_key(), str(os.geteuid())]:
            for line in lines[2:]:
                parts = line.split("\t", 2)
                if len(parts) == 3:
                    _disk[parts[0]] = (parts[1] == "1", parts[2])
    return _disk


def _from_disk(name):
    if name not in _PER_BOOT:
        return None
    v = _load_disk().get(name)
    return Feature(name, v[0], v[1]) if v else None


def _to_disk(f):
    if f.name not in _PER_BOOT:
        return
    disk = _load_disk()
    disk[f.name] = (f.ok, f.reason)
    try:
        os.makedirs(CACHE_DIR, mode=0o755, exist_ok=True)
        tmp = f"{CACHE_FILE}.{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(f"{kernel.boot_key()}\n{os.geteuid()}\n")
            for name, (ok, reason) in disk.items():
                f.write(f"{name}\t{int(ok)}\t{reason}\n")
        os.replace(tmp, CACHE_FILE)
    except OSError:
        pass    # not root, or /run read-only: the in-process cache still holds


# --- the probes ---

# Probe objects that attached stay open until release(): detaching a
# tracepoint waits for an RCU grace period (~50-80 ms), which belongs at exit,
# not on a tool's start-up path.
_held = []


def _load_and_attach(prog_name, attach, target=None):
    """Loads one program of features.bpf.o and attaches it; (ok, reason)."""
    from .errors import KprobekitError
    from .object import Object
    obj = None
    try:
        obj = Object.open("features")
        obj.set_autoload([prog_name])
        prog = obj.program(prog_name)
        if target:
            prog.set_attach_target(target)
        obj.load()
        attach(prog)
    except KprobekitError as e:
        if obj:
            obj.close()
        cause = os.strerror(e.errno) if e.errno else e.args[0]
        return False, f"the kernel refused a test program ({prog_name}): {cause}"
    _held.append(obj)
    return True, ""


def release():
    """Detaches the probes still held; also done at exit by object.close_all()."""
    while _held:
        _held.pop().close()


def _btf():
    if os.path.exists(kernel.BTF_VMLINUX):
        return Feature("btf", True)
    return Feature("btf", False, "no /sys/kernel/btf/vmlinux: kernel built without CONFIG_DEBUG_INFO_BTF")


def _kprobe_kind(name, retprobe):
    def run():
        if not os.path.exists(kernel.KPROBE_PMU) and kernel.kprobe_events() is None:
            return Feature(name, False, "kernel built without CONFIG_KPROBES (no kprobe PMU, no kprobe_events)")
        prog = "probe_kretprobe" if retprobe else "probe_kprobe"
        return Feature(name, *_load_and_attach(prog, lambda p: p.attach_kprobe(PROBE_TARGET, retprobe)))
    return run


def _trampoline(name):
    def run():
        if not probe("btf"):
            return Feature(name, False, "needs kernel BTF")
        return Feature(name, *_load_and_attach(f"probe_{name}", lambda p: p.attach_trace(), PROBE_TARGET))
    return run


def _tracepoint():
    if kernel.tracefs() is None:
        return Feature("tracepoint", False, "needs tracefs: " + kernel.why_not("tracefs"))
    return Feature("tracepoint", *_load_and_attach("probe_tracepoint", lambda p: p.attach()))


def _tp_btf():
    if not probe("btf"):
        return Feature("tp_btf", False, "needs kernel BTF")
    return Feature("tp_btf", *_load_and_attach("probe_tp_btf", lambda p: p.attach_trace()))


def _raw_tp():
    return Feature("raw_tp", *_load_and_attach("probe_raw_tp", lambda p: p.attach()))


def _map_type(name, map_type, since):
    def run():
        from ._libbpf import lib
        if lib.libbpf_probe_bpf_map_type(map_type, None) == 1:
            return Feature(name, True)
        return Feature(name, False, f"map type not supported (requires Linux >= {since})")
    return run


def _tracefs():
    if kernel.tracefs() is not None:
        return Feature("tracefs", True)
    return Feature("tracefs", False, kernel.why_not("tracefs"))


# --- kernel facts a backend needs besides its hook (not in HOOKS: `kprobekit features` lists hooks) ---

def _skb_drop_reason():
    """skb:kfree_skb carries the drop reason (Linux 5.17)."""
    fields = kernel.tracepoint_fields("skb", "kfree_skb")
    if fields is None:
        return Feature("skb_drop_reason", False, "no skb:kfree_skb tracepoint")
    if not any(f.name == "reason" for f in fields):
        return Feature("skb_drop_reason", False, "skb:kfree_skb has no drop reason (requires Linux >= 5.17)")
    return Feature("skb_drop_reason", True)


def _sock_length():
    """sock:sock_send_length and sock:sock_recv_length (Linux 6.5)."""
    if all(kernel.tracepoint_fields("sock", n) is not None for n in ("sock_send_length", "sock_recv_length")):
        return Feature("sock_length", True)
    return Feature("sock_length", False, "no sock:sock_send_length/sock_recv_length tracepoints "
                                         "(requires Linux >= 6.5)")


_PROBES = {
    "skb_drop_reason": _skb_drop_reason,
    "sock_length": _sock_length,
    "btf": _btf,
    "kprobe": _kprobe_kind("kprobe", False),
    "kretprobe": _kprobe_kind("kretprobe", True),
    "fentry": _trampoline("fentry"),
    "fexit": _trampoline("fexit"),
    "tracepoint": _tracepoint,
    "tp_btf": _tp_btf,
    "raw_tp": _raw_tp,
    "ringbuf": _map_type("ringbuf", 27, "5.8"),
    "perfbuf": _map_type("perfbuf", 4, "4.3"),
    "tracefs": _tracefs,
}
