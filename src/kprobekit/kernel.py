"""The running kernel as seen through its filesystems: tracefs, securityfs,
capabilities, kprobe_events housekeeping.  Mounts what is missing when root."""

import os

# Plain strings, not pathlib: pathlib costs ~10 ms of imports at every start.
TRACEFS_PATHS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
SECURITYFS = "/sys/kernel/security"
KPROBE_PMU = "/sys/bus/event_source/devices/kprobe"
BTF_VMLINUX = "/sys/kernel/btf/vmlinux"

# include/uapi/linux/capability.h
CAPS = {21: "CAP_SYS_ADMIN", 38: "CAP_PERFMON", 39: "CAP_BPF"}


def _mount(fstype, target):
    """mount(2) through libc: no mount(8) process on the start-up path."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p] * 4 + [ctypes.c_ulong, ctypes.c_void_p]
    return libc.mount(b"nodev", target.encode(), fstype.encode(), 0, None) == 0


def tracefs(mount=True):
    """The tracefs mount point, mounting it at /sys/kernel/tracing when root and absent; else None."""
    for p in TRACEFS_PATHS:
        if os.path.isdir(p + "/events"):
            return p
    p = TRACEFS_PATHS[0]
    if mount and os.geteuid() == 0 and os.path.isdir(p):
        if _mount("tracefs", p) and os.path.isdir(p + "/events"):
            return p
    return None


def lockdown():
    """'none', 'integrity' or 'confidentiality'; 'unknown' if securityfs cannot be read."""
    f = SECURITYFS + "/lockdown"
    if not os.path.exists(f) and os.geteuid() == 0 and os.path.isdir(SECURITYFS):
        _mount("securityfs", SECURITYFS)
    try:
        with open(f) as fh:
            text = fh.read()
    except OSError:
        # securityfs readable but no lockdown file: kernel without the lockdown LSM
        return "none" if os.path.exists(SECURITYFS + "/lsm") else "unknown"
    # the active mode is bracketed: "none [integrity] confidentiality"
    if "[" in text:
        return text.split("[", 1)[1].split("]", 1)[0]
    return "unknown"


def capabilities():
    """The BPF-relevant effective capabilities this process holds."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                eff = int(line.split()[1], 16)
                return [name for bit, name in sorted(CAPS.items()) if eff >> bit & 1]
    return []


def kprobe_events():
    """tracefs's kprobe_events file, or None on a kernel without kprobes (or without tracefs)."""
    t = tracefs()
    if t and os.path.exists(t + "/kprobe_events"):
        return t + "/kprobe_events"
    return None


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_kprobes():
    """Removes kprobe_events entries left by a kprobekit process that died without cleaning up.

    Ours are libbpf's legacy ones (libbpf_<pid>_...) and the ftrace backend's
    (kprobekit_<pid>_...); an entry is stale when its pid is gone.  Returns the
    names removed.
    """
    path = kprobe_events()
    if path is None:
        return []
    removed = []
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    for line in lines:
        # "p:kprobes/libbpf_1234_tcp_v4_connect_0x0_0 tcp_v4_connect"
        head = line.split(None, 1)[0] if line.strip() else ""
        event = head.split(":", 1)[-1]
        name = event.rsplit("/", 1)[-1]
        for prefix in ("libbpf_", "kprobekit_"):
            if name.startswith(prefix):
                pid = name[len(prefix):].split("_", 1)[0]
                if pid.isdigit() and not _pid_alive(int(pid)):
                    try:
                        with open(path, "a") as f:
                            f.write(f"-:{event}\n")
                        removed.append(event)
                    except OSError:
                        pass
    return removed
