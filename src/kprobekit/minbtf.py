"""The kernel's BTF cut down to what one object's CO-RE relocations read, cached until reboot.

libbpf parses the kernel's whole BTF (~5 MiB, ~10 ms here) to relocate an object's field
accesses; `bpftool gen min_core_btf` (BTFgen) keeps only the types those relocations touch, a
few KiB, with the same answers.  Given as the object's btf_custom_path, a program that attaches
without BTF (tracepoint, kprobe, raw_tp) loads with no parse of the kernel's BTF at all; one that
attaches by BTF id (fentry, tp_btf) still needs it for its target, so gains only the faster
relocation.

The file is made by the first run of a tool after a boot, at its exit (bpftool takes ~30 ms),
and kept in /run/kprobekit, named after the object's size and modification time (a rebuilt
object gets its own) and after the boot and kernel release (a /run shared with another kernel,
as a VM's view of its host's, gives that kernel none of this one's).  Without
bpftool there is no file and objects load as before.
"""

import os

from . import kernel

DIR = "/run/kprobekit/btf"
_VMLINUX = "/sys/kernel/btf/vmlinux"


def _cache_path(obj_path):
    key = kernel.boot_key()
    try:
        st = os.stat(obj_path)
    except OSError:
        return None
    if key is None:
        return None
    boot, release = key.split(" ", 1)
    name = os.path.basename(obj_path).split(".", 1)[0]
    return os.path.join(DIR, f"{name}-{st.st_size}-{st.st_mtime_ns}-{release}-{boot}.btf")


def cached(obj_path):
    """The minimised BTF made for this object since boot, or None."""
    path = _cache_path(obj_path)
    try:
        st = os.stat(path) if path else None
    except OSError:
        return None
    # only root writes /run; still, never read one another user could have written
    if st is None or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        return None
    return path


def make(obj_path):
    """Writes the minimised BTF for this object if it is missing; quietly nothing when it cannot
    (no bpftool, not root, no kernel BTF).  Returns its path or None."""
    import shutil
    import subprocess
    path, found = _cache_path(obj_path), cached(obj_path)
    if path is None or found:
        return found
    bpftool = shutil.which("bpftool") or next(
        (p for p in ("/usr/sbin/bpftool", "/sbin/bpftool") if os.access(p, os.X_OK)), None)
    if bpftool is None or not os.path.exists(_VMLINUX):
        return None
    tmp = f"{path}.{os.getpid()}"
    try:
        os.makedirs(DIR, mode=0o755, exist_ok=True)
        done = subprocess.run([bpftool, "gen", "min_core_btf", _VMLINUX, tmp, obj_path],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=10)
        if done.returncode != 0:
            return None
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        return path
    except (OSError, subprocess.SubprocessError):
        return None
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass
