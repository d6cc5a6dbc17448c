"""A tool's slow kernel-side steps, started while Python is still importing the tool.

Of a tool's start-up, ~10 ms can be libbpf parsing the kernel's BTF (for CO-RE when no minimised
BTF is cached, see minbtf; for fentry/tp_btf targets always) and ~2 ms the kernel allocating an
8 MiB ring buffer.  Neither depends on the command line, and ctypes lets go of the GIL while
libbpf works, so `start()` runs them on two threads: on other CPUs they overlap the imports,
argument parsing and backend choice that follow.  `Object` and `events.prepare()` take what is
ready (`take_object()`, `take_ring()`), waiting for the threads first; nothing here decides
anything.

The BTF is parsed into the object itself: libbpf keeps the kernel's BTF per object and loads it
at most once, and bpf_program__set_attach_target() on a BTF-attached program (tp_btf, fentry,
fexit, lsm) loads it then — given the target the program's section names, the same answer
bpf_object__load() would find.
"""

import _thread     # not threading: it imports functools and collections (~1 ms)
import os
import sys

from . import minbtf
from ._libbpf import MAP_RINGBUF, _on_libbpf_print, lib, open_options, print_fn_t

# Section prefixes whose programs attach by a kernel BTF id ("?" marks one not loaded by default).
_BTF_ATTACHED = ("tp_btf/", "fentry/", "fexit/", "fmod_ret/", "lsm/")

_work = None      # the one pending start: what start() was given, what its threads made, their locks


def start_tool(name, ring_bytes):
    """start() for the packaged object of a tool (object.object_path(), without importing object),
    with the minimised kernel BTF made for it when there is one (minbtf)."""
    path = os.path.join(os.path.dirname(__file__), "objects", f"{name}.bpf.o")
    start(path, ring_bytes, minbtf.cached(path))


def start(path, ring_bytes=0, kernel_btf=None):
    """Opens the object at path (with kernel_btf for CO-RE, see Object) and, without kernel_btf,
    loads the kernel's BTF into it; and creates a ring buffer of ring_bytes (0: none); each on a
    thread of its own."""
    global _work
    work = _work = {"path": path, "kernel_btf": kernel_btf, "ring_bytes": ring_bytes, "ptr": None,
                    "ring_fd": -1,
                    "object_done": _thread.allocate_lock(), "ring_done": _thread.allocate_lock()}
    # A thread back from libbpf waits for the GIL until the importing main thread lets go of it,
    # after sys.getswitchinterval() (5 ms by default): a short interval until the work is taken.
    work["interval"] = sys.getswitchinterval()
    sys.setswitchinterval(0.0002)
    work["object_done"].acquire()
    _thread.start_new_thread(_open, (work,))
    if ring_bytes:
        work["ring_done"].acquire()
        _thread.start_new_thread(_create_ring, (work,))


def _open(work):
    # libbpf's messages reach Python through a callback that needs the GIL, held by the importing
    # main thread: dozens of debug lines, each a wait.  Silent meanwhile; a failure here is met
    # again, with its messages, when the caller opens or loads the object itself.
    try:
        lib.libbpf_set_print(print_fn_t())      # NULL: no messages
        ptr = lib.bpf_object__open_file(work["path"].encode(), open_options(work["kernel_btf"]))
        if ptr:
            work["ptr"] = ptr
            if not work["kernel_btf"]:      # with it, only fentry/tp_btf programs need the kernel's
                _load_kernel_btf(ptr)
    finally:
        lib.libbpf_set_print(_on_libbpf_print)
        work["object_done"].release()


def _create_ring(work):
    try:
        # fails without privileges: the runner's own check says so in words
        work["ring_fd"] = lib.bpf_map_create(MAP_RINGBUF, b"events", 0, 0, work["ring_bytes"], None)
    finally:
        work["ring_done"].release()


def _wait(work, name):
    work[name].acquire()
    work[name].release()
    if not (work["object_done"].locked() or work["ring_done"].locked()):
        sys.setswitchinterval(work["interval"])


def _load_kernel_btf(ptr):
    prog = None
    while True:
        prog = lib.bpf_object__next_program(ptr, prog)
        if not prog:
            return
        section = (lib.bpf_program__section_name(prog) or b"").decode().lstrip("?")
        if section.startswith(_BTF_ATTACHED):
            # a target this kernel lacks fails after the BTF is loaded, which is all that is wanted
            lib.bpf_program__set_attach_target(prog, 0, section.split("/", 1)[1].encode())
            return


def take_object(path, kernel_btf=None):
    """The libbpf object opened for path and kernel_btf, or None: the caller then opens it."""
    work = _work
    if work is None or work["path"] != path or work["kernel_btf"] != kernel_btf:
        return None
    _wait(work, "object_done")
    ptr, work["ptr"] = work["ptr"], None
    return ptr


def take_ring(ring_bytes):
    """The fd of a ring buffer map of ring_bytes created early, or -1.  The caller closes it."""
    global _work
    work = _work
    if work is None:
        return -1
    _wait(work, "ring_done")
    _work = None
    fd = work["ring_fd"]
    if fd >= 0 and work["ring_bytes"] != ring_bytes:
        os.close(fd)
        fd = -1
    return fd
