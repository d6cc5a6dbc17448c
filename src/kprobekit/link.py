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
