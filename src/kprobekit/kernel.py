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


# Why the last look for tracefs / securityfs failed, one line each, for `kprobekit features`.
_why_not = {}


_boot_key = []     # read once: a process lives within one boot


def boot_key():
    """This boot of this kernel ("BOOT-ID RELEASE"), or None: what caches of kernel facts are keyed by
    (a shared /run, e.g. a VM's view of its host's, must not hand one kernel's answers to another)."""
    if not _boot_key:
        try:
            with open("/proc/sys/kernel/random/boot_id") as f:
                _boot_key.append(f"{f.read().strip()} {os.uname().release}")
        except OSError:
            _boot_key.append(None)
    return _boot_key[0]


def why_not(fstype):
    """The one-line reason the filesystem is unusable ("" if it is usable or was never asked for)."""
    return _why_not.get(fstype, "")


def _mount(fstype, target):
    """mount(2) through libc: no mount(8) process on the start-up path.  Records why it failed."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    # int mount(const char *source, const char *target, const char *fstype, unsigned long flags, const void *data)
    libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_void_p]
    libc.mount.restype = ctypes.c_int
    if libc.mount(fstype.encode(), target.encode(), fstype.encode(), 0, None) == 0:
        return True
    err = ctypes.get_errno()
    _why_not[fstype] = f"{fstype} is not mounted and mounting it at {target} failed: {os.strerror(err)}"
    return False


def privileged():
    """True when this process may load BPF tracing programs: root, CAP_SYS_ADMIN, or CAP_BPF with CAP_PERFMON."""
    caps = capabilities()
    return "CAP_SYS_ADMIN" in caps or {"CAP_BPF", "CAP_PERFMON"} <= set(caps)


def _not_mounted(fstype, target):
    """Mounts fstype at target when root; else records why not.  True when it is there now."""
    if not os.path.isdir(target):
        _why_not[fstype] = f"{fstype} is not mounted and {target} does not exist (kernel without {fstype}?)"
        return False
    if "CAP_SYS_ADMIN" not in capabilities():
        _why_not[fstype] = f"{fstype} is not mounted at {target}: mounting it needs root"
        return False
    return _mount(fstype, target)


def tracefs(mount=True):
    """The tracefs mount point, mounting it at /sys/kernel/tracing when root and absent; else None
    (why_not("tracefs") says why)."""
    for p in TRACEFS_PATHS:
        if os.path.isdir(p + "/events"):
            _why_not.pop("tracefs", None)
            return p
    p = TRACEFS_PATHS[0]
    if _is_mountpoint(p) and not os.access(p, os.R_OK | os.X_OK):
        _why_not["tracefs"] = f"tracefs at {p} is readable by root only: run as root"
        return None
    if not mount:
        _why_not["tracefs"] = f"tracefs is not mounted at {p}"
        return None
    if _not_mounted("tracefs", p) and os.path.isdir(p + "/events"):
        _why_not.pop("tracefs", None)
        return p
    return None


def _is_mountpoint(path):
    """Whether path is mounted on, without needing to read inside it (os.path.ismount would)."""
    try:
        with open("/proc/self/mountinfo") as f:
            return any(line.split()[4] == path for line in f)
    except OSError:
        return False


def lockdown():
    """'none', 'integrity' or 'confidentiality'; 'unknown' if securityfs cannot be read
    (why_not("securityfs") says why)."""
    f = SECURITYFS + "/lockdown"
    if not os.path.exists(f) and not _is_mountpoint(SECURITYFS):
        _not_mounted("securityfs", SECURITYFS)
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


def require_bpf_privileges(what):
    """PermissionDenied for `what` without CAP_SYS_ADMIN, or CAP_BPF with CAP_PERFMON (Linux >= 5.8):
    what loading tracing programs takes."""
    if not privileged():
        from .errors import ROOT_HINT, PermissionDenied
        raise PermissionDenied(f"{what}: missing privileges", hint=ROOT_HINT)


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


def write_tracefs(path, text, append=False):
    """One write(2) to a tracefs file.

    Not open(path, "a"): Python seeks to the end of a file opened for
    appending, and tracefs's seq files (kprobe_events) refuse SEEK_END with
    EINVAL.  And kprobe_events must never be opened with O_TRUNC unless all
    probes are to go: append=True adds to it.
    """
    fd = os.open(path, os.O_WRONLY | (os.O_APPEND if append else os.O_TRUNC))
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def remove_stale_instances():
    """Removes tracefs instances kprobekit_<pid>_* of dead processes (an instance holding a probe
    enabled would keep the probe from being removed)."""
    t = tracefs(mount=False)
    removed = []
    if t is None or not os.path.isdir(t + "/instances"):
        return removed
    for name in os.listdir(t + "/instances"):
        pid = name[len("kprobekit_"):].split("_", 1)[0]
        if name.startswith("kprobekit_") and pid.isdigit() and not _pid_alive(int(pid)):
            try:
                os.rmdir(f"{t}/instances/{name}")
                removed.append(f"instances/{name}")
            except OSError:
                pass
    return removed


def remove_stale_kprobes():
    """Removes kprobe_events entries left by a kprobekit process that died without cleaning up.

    Ours are libbpf's legacy ones (libbpf_<pid>_...) and the ftrace backend's
    (kprobekit_<pid>_...); an entry is stale when its pid is gone.  Returns the
    names removed.
    """
    removed = remove_stale_instances()
    path = kprobe_events()
    if path is None:
        return removed
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
                        write_tracefs(path, f"-:{event}\n", append=True)
                        removed.append(event)
                    except OSError:
                        pass
    return removed


# --- what can be probed ---

def kallsyms_functions():
    """Names of the kernel's text symbols (vmlinux and loaded modules), from /proc/kallsyms."""
    names = set()
    try:
        with open("/proc/kallsyms") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[1] in "tT":
                    names.add(parts[2])
    except OSError:
        pass
    return names


def filter_functions():
    """Functions ftrace (and so fentry) can hook: available_filter_functions, or None when unreadable."""
    t = tracefs()
    if t is None:
        return None
    try:
        with open(t + "/available_filter_functions") as f:
            # "tcp_v4_connect" or "nf_hook [nf_tables]"
            return {line.split(None, 1)[0] for line in f if line.strip()}
    except OSError:
        return None


def tracepoints():
    """["category:name", ...] of every tracepoint tracefs knows."""
    t = tracefs()
    out = []
    if t is None:
        return out
    events = t + "/events"
    for cat in sorted(os.listdir(events)):
        d = f"{events}/{cat}"
        if not os.path.isdir(d):
            continue
        out.extend(f"{cat}:{name}" for name in sorted(os.listdir(d))
                   if os.path.exists(f"{d}/{name}/format"))
    return out


class TracepointField:
    __slots__ = ("name", "c_type", "offset", "size", "signed", "array", "data_loc")

    def __init__(self, name, c_type, offset, size, signed):
        self.name, self.c_type, self.offset, self.size, self.signed = name, c_type, offset, size, signed
        # "char comm[16]" -> array; "__data_loc char[] name" -> a (u16 offset, u16 length) to dynamic data
        self.data_loc = c_type.startswith("__data_loc")
        self.array = "[" in c_type and not self.data_loc

    @property
    def is_string(self):
        return (self.array or self.data_loc) and "char" in self.c_type

    def __repr__(self):
        return f"TracepointField({self.name!r}, {self.c_type!r}, offset={self.offset}, size={self.size})"


def tracepoint_fields(category, name):
    """The record layout of a tracepoint, from tracefs events/CAT/NAME/format; None if no such tracepoint.

    Lines look like "\tfield:unsigned short family;\toffset:16;\tsize:2;\tsigned:0;"."""
    t = tracefs()
    if t is None:
        return None
    try:
        with open(f"{t}/events/{category}/{name}/format") as f:
            text = f.read()
    except (FileNotFoundError, NotADirectoryError):
        return None
    fields = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("field:"):
            continue
        parts = dict(p.strip().split(":", 1) for p in line.split(";") if ":" in p)
        decl = parts["field"].strip()
        base = decl.split("[", 1)[0].strip()
        fname = base.split()[-1].lstrip("*")
        c_type = decl[:decl.rindex(fname)].strip() + decl[decl.rindex(fname) + len(fname):]
        fields.append(TracepointField(fname, c_type.strip(), int(parts["offset"]), int(parts["size"]),
                                      parts.get("signed", "0").strip() == "1"))
    return fields


def syscall_tracepoint(name):
    """The syscall a function name stands for, when syscalls:sys_enter_X and sys_exit_X exist: 'bind' for
    'bind', 'sys_bind' or '__x64_sys_bind'; else None."""
    t = tracefs()
    if t is None:
        return None
    base = name
    for prefix in ("__x64_sys_", "__ia32_sys_", "__arm64_sys_", "__se_sys_", "__do_sys_", "ksys_", "sys_"):
        if base.startswith(prefix):
            base = base[len(prefix):]
            break
    d = f"{t}/events/syscalls"
    if os.path.isdir(f"{d}/sys_enter_{base}") and os.path.isdir(f"{d}/sys_exit_{base}"):
        return base
    return None


def syscall_numbers():
    """{syscall name: number} for this architecture's 64-bit syscalls, from the table `make bpf`
    generates from the uapi headers (objects/syscalls.txt: the machine, then "name number" lines)."""
    from .errors import NotSupported
    path = os.path.join(os.path.dirname(__file__), "objects", "syscalls.txt")
    try:
        with open(path) as f:
            machine, *lines = f.read().split("\n")
    except OSError:
        raise NotSupported(f"read syscall numbers: {path} is missing", hint="run make bpf") from None
    if machine != os.uname().machine:
        raise NotSupported(f"read syscall numbers: the table is for {machine}, this is {os.uname().machine}",
                           hint="rebuild kprobekit on this architecture (make bpf)")
    return {name: int(nr) for name, nr in (ln.split() for ln in lines if ln)}


_syscall_numbers = None
# syscalls:sys_enter_NAME events are named after SYSCALL_DEFINE(NAME); a few numbers are not
SYSCALL_ALIASES = {"umount": "umount2"}


def syscall_number(name):
    """The 64-bit number of the syscall whose trace events are sys_enter_NAME; None when the
    table does not know it (a syscall newer than the headers kprobekit was built with)."""
    global _syscall_numbers
    if _syscall_numbers is None:
        _syscall_numbers = syscall_numbers()
    for candidate in (name, SYSCALL_ALIASES.get(name),
                      name[3:] if name.startswith("new") else None,    # newstat -> stat
                      name[:-2] if name.endswith("64") else None):     # sendfile64 -> sendfile
        if candidate in _syscall_numbers:
            return _syscall_numbers[candidate]
    return None


def syscall_names():
    t = tracefs()
    d = f"{t}/events/syscalls" if t else None
    if not d or not os.path.isdir(d):
        return []
    return sorted(n[len("sys_enter_"):] for n in os.listdir(d) if n.startswith("sys_enter_"))
