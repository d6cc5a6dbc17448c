"""Compiles a user's BPF C at run time with clang, once: objects are cached.

The cache key is a hash of the source, its path (relative #includes depend
on it), the compiler flags, the kernel release and the include directories.
Next to each object a list of every file clang read (from its -MD depfile)
with size and mtime is kept; a cached object counts only while all of them
are unchanged, so editing an included header recompiles.  A warm start
therefore never runs clang: it hashes the source and stats a few files.

Include path, first match wins:
  1. bpf/include of a source checkout (when kprobekit runs from one), so an
     edited kprobekit.bpf.h is what gets compiled;
  2. the package's own include/ — vmlinux.h, kprobekit.bpf.h and libbpf's
     bpf_*.h, copied there by `make bpf` and shipped as package data, so an
     installed kprobekit needs neither the source tree nor libbpf-dev;
  3. clang's defaults (/usr/include, where libbpf-dev puts <bpf/...>).

C given as text is compiled from NAME.bpf.c in its cache directory, so
clang and the verifier count lines from the start of the string; when the
calling Python file holds the text verbatim (a raw string), TextOrigin turns
"NAME.bpf.c:LINE" in their messages into that file and line.  Only messages
are rewritten, not the object: moving the string in its file recompiles
nothing.
"""

import os
import sys

from .errors import CompileError, MissingDependency, PermissionDenied, UsageError

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
PACKAGE_INCLUDE = os.path.join(PACKAGE_DIR, "include")
CHECKOUT_INCLUDE = os.path.normpath(os.path.join(PACKAGE_DIR, "..", "..", "bpf", "include"))
# Bump when the way objects are built changes, so old cache entries are not used.
_FORMAT = "1"
_ARCH = {"x86_64": "x86", "aarch64": "arm64", "s390x": "s390", "ppc64le": "powerpc",
         "riscv64": "riscv"}

# How many times this process ran clang (tests check a warm start runs it zero times).
compiles = 0


def include_dirs():
    dirs = []
    if os.path.exists(os.path.join(CHECKOUT_INCLUDE, "kprobekit.bpf.h")):
        dirs.append(CHECKOUT_INCLUDE)
    if os.path.isdir(PACKAGE_INCLUDE):
        dirs.append(PACKAGE_INCLUDE)
    return dirs


def default_cflags():
    arch = _ARCH.get(os.uname().machine, os.uname().machine)
    return ["-target", "bpf", f"-D__TARGET_ARCH_{arch}", "-g", "-O2"]


def cache_dir():
    """$KPROBEKIT_CACHE, else /var/cache/kprobekit for root, else ~/.cache/kprobekit."""
    d = os.environ.get("KPROBEKIT_CACHE")
    if d:
        return d
    if os.geteuid() == 0:
        return "/var/cache/kprobekit"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "kprobekit")


def _safe_dir(d):
    """Creates the cache directory; refuses one another user could write (we load what is in it)."""
    try:
        os.makedirs(d, mode=0o755, exist_ok=True)
        st = os.stat(d)
    except OSError as e:
        raise PermissionDenied(f"create cache directory {d}: {e.strerror}",
                               hint="set KPROBEKIT_CACHE to a writable directory") from None
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise PermissionDenied(f"use cache directory {d}: writable by other users",
                               hint=f"chmod go-w {d}, or set KPROBEKIT_CACHE")
    return d


def find_clang():
    """$KPROBEKIT_CLANG, $CLANG, or clang (or clang-NN) on PATH."""
    for env in ("KPROBEKIT_CLANG", "CLANG"):
        if os.environ.get(env):
            return os.environ[env]
    names = ["clang"] + [f"clang-{v}" for v in range(20, 10, -1)]
    for name in names:
        for d in os.environ.get("PATH", "/usr/bin").split(os.pathsep):
            p = os.path.join(d, name)
            if os.access(p, os.X_OK):
                return p
    return None


def _key(source, src_path, cflags, includes):
    # _blake2 is built into the interpreter; hashlib would first load OpenSSL (~5 ms at start-up)
    try:
        from _blake2 import blake2b
    except ImportError:
        from hashlib import blake2b
    h = blake2b(digest_size=16)
    for part in (_FORMAT, src_path or "", "\0".join(cflags), os.uname().release, "\0".join(includes)):
        h.update(part.encode() + b"\0")
    h.update(source)
    return h.hexdigest()


def _deps_fresh(deps_file):
    """True when every file clang read for this object is as it was."""
    try:
        with open(deps_file) as f:
            lines = f.read().splitlines()
    except OSError:
        return False
    for line in lines:
        size, mtime, path = line.split(" ", 2)
        try:
            st = os.stat(path)
        except OSError:
            return False
        if st.st_size != int(size) or st.st_mtime_ns != int(mtime):
            return False
    return bool(lines)


def _read_depfile(path):
    """The prerequisites of a make-style depfile ("obj: a.c b.h \\\n c.h")."""
    with open(path) as f:
        text = f.read().replace("\\\n", " ")
    deps = text.split(":", 1)[1].split() if ":" in text else []
    return [d for d in deps if d != "\\"]


def compile(text=None, *, src_file=None, name="bpf", cflags=(), cache=None):
    """The path of a compiled object for BPF C given as text or as a file, and whether clang ran now.

    Returns (path, compiled).  Raises CompileError with clang's message,
    MissingDependency when clang is not installed.
    """
    global compiles
    if not name.replace("_", "").replace("-", "").isalnum():
        raise UsageError(f"compile {name!r}: a name is letters, digits, '_' and '-'")
    if (text is None) == (src_file is None):
        raise UsageError("compile BPF program: give either text or src_file")
    origin = None
    if src_file is not None:
        src_path = os.path.abspath(str(src_file))
        try:
            with open(src_path, "rb") as f:
                source = f.read()
        except OSError as e:
            raise UsageError(f"read {src_file}: {e.strerror}") from None
        name = os.path.basename(src_path).split(".", 1)[0]
        user_includes = [os.path.dirname(src_path)]
    else:
        source = text.encode()
        src_path = None
        user_includes = []
        origin = TextOrigin(name, text)
    includes = user_includes + include_dirs()
    flags = default_cflags() + [f"-I{d}" for d in includes] + list(cflags)
    # one directory per key: <cache>/<key>/NAME.bpf.o, so messages say "NAME.bpf.c:LINE"
    d = os.path.join(_safe_dir(cache or cache_dir()), _key(source, src_path, flags, includes))
    obj = os.path.join(d, name + ".bpf.o")
    deps_file = os.path.join(d, "deps")
    if os.path.exists(obj) and _deps_fresh(deps_file):
        return obj, False

    import subprocess      # only on a cache miss: not on the warm start path
    clang = find_clang()
    if clang is None:
        raise MissingDependency(f"compile {name}: clang not found",
                                hint="apt-get install clang, or load a prebuilt object with BPF(obj_file=...)")
    os.makedirs(d, exist_ok=True)
    try:
        if src_path is None:
            # The text becomes a real file: the verifier's source lines come from it.
            src_path = os.path.join(d, name + ".bpf.c")
            _write_atomic(src_path, source)
        tmp = f"{obj}.{os.getpid()}.tmp"
        depfile = f"{deps_file}.{os.getpid()}.d"
        argv = [clang, *flags, "-MD", "-MF", depfile, "-c", os.path.basename(src_path), "-o", tmp]
        try:
            p = subprocess.run(argv, cwd=os.path.dirname(src_path), capture_output=True, text=True)
        except OSError as e:
            raise MissingDependency(f"compile {name}: cannot run {clang}: {e.strerror}",
                                    hint="install clang or set KPROBEKIT_CLANG") from None
        compiles += 1
        output = origin.rewrite(p.stderr) if origin else p.stderr
        if p.returncode != 0:
            raise CompileError(f"compile {name}: clang failed", clang_output=output, log=output.splitlines())
        if output.strip():
            sys.stderr.write(output)      # warnings: shown once, when compiled
        _strip_dwarf(clang, tmp)
        deps = [os.path.join(os.path.dirname(src_path), x) for x in _read_depfile(depfile)]
        lines = []
        for dep in deps:
            st = os.stat(dep)
            lines.append(f"{st.st_size} {st.st_mtime_ns} {os.path.abspath(dep)}")
        _unlink(depfile)
        os.replace(tmp, obj)
        _write_atomic(deps_file, ("\n".join(lines) + "\n").encode())
    except BaseException:
        # nothing half-made stays in the cache: no object, no directory of a failed compile
        import shutil
        shutil.rmtree(d, ignore_errors=True)
        raise
    return obj, True


class TextOrigin:
    """Where C given as text sits in the Python file that passed it, to name that file and line in messages.

    The file is the innermost caller outside kprobekit; it is read, and the text
    looked for, only when a message is rewritten (a failure), never on a warm start."""

    def __init__(self, name, text):
        self.name, self.text = name, text
        f = sys._getframe(1)
        while f is not None and f.f_globals.get("__name__", "").partition(".")[0] == "kprobekit":
            f = f.f_back
        self.py_file = f.f_code.co_filename if f is not None else None
        self._first = False     # not looked for yet

    def first_line(self):
        """The line of py_file where the text's first line is, when the file holds the text verbatim; else None."""
        if self._first is False:
            self._first = None
            try:
                with open(self.py_file, encoding="utf-8") as f:
                    src = f.read()
            except (OSError, TypeError, ValueError):
                return None
            pos = src.find(self.text)
            if pos >= 0 and src.find(self.text, pos + 1) < 0:      # one place only, or we cannot say which
                self._first = src.count("\n", 0, pos) + 1
        return self._first

    def rewrite(self, message):
        """message with NAME.bpf.c:LINE (counted in the text) as FILE.py:LINE."""
        marker = f"{self.name}.bpf.c:"
        if marker not in message or self.first_line() is None:
            return message
        import re
        base, py = self.first_line() - 1, os.path.basename(self.py_file)
        return re.sub(rf"(?<![\w/.-]){re.escape(marker)}(\d+)", lambda m: f"{py}:{base + int(m.group(1))}",
                      message)


def _strip_dwarf(clang, path):
    """Drops DWARF, keeps .BTF and .BTF.ext (CO-RE relocations, line info): faster to open.

    Optional: without llvm-strip the object is only bigger."""
    import subprocess
    d = os.path.dirname(os.path.realpath(clang))
    suffix = os.path.basename(clang)[len("clang"):]
    for cand in (os.path.join(d, "llvm-strip" + suffix), os.path.join(d, "llvm-strip")):
        if os.access(cand, os.X_OK):
            subprocess.run([cand, "-g", path], capture_output=True)
            return


def _write_atomic(path, data):
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _unlink(*paths):
    for p in paths:
        try:
            os.unlink(p)
        except OSError:
            pass
