"""A program attached to a hook.  Closing it detaches; closing twice is harmless."""

from ._libbpf import lib


class Link:
    def __init__(self, ptr, program, target):
        self._ptr = ptr
        self.program = program
        self.target = target    # what it is attached to, for messages

    @property
    def fd(self):
        return lib.bpf_link__fd(self._ptr) if self._ptr else -1

    def close(self):
        if self._ptr:
            lib.bpf_link__destroy(self._ptr)
            self._ptr = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<Link {self.program} -> {self.target}>"


# Detaching a perf-event link (tracepoint, kprobe) or a trampoline (fentry) waits for an RCU
# grace period inside the kernel: ~50-80 ms each, one after the other.  Destroyed from several
# threads at once (ctypes releases the GIL), the waits overlap: 256 links go in about the time
# of a few, not in 20 s.
PARALLEL_FROM = 4
THREADS = 32


def close_all(links):
    """Closes every link, in parallel when there are many."""
    links = [ln for ln in links if ln._ptr]
    if len(links) < PARALLEL_FROM:
        for ln in links:
            ln.close()
        return
    import threading
    groups = [links[i::THREADS] for i in range(min(THREADS, len(links)))]

    def close_group(group):
        for ln in group:
            ln.close()

    threads = [threading.Thread(target=close_group, args=(g,)) for g in groups]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
