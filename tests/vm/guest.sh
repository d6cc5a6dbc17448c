#!/bin/sh
# Runs as init's command inside a virtme-ng guest: give the suite the kernel
# interfaces a normal host has, then exec the command given (pytest).
# virtme-ng already mounts some of these; each step is a no-op when done.
set -e

mnt() {  # mnt FSTYPE DIR
    mountpoint -q "$2" || mount -t "$1" "$1" "$2"
}
mnt tracefs /sys/kernel/tracing
mnt debugfs /sys/kernel/debug || true  # optional: older tools look here
mnt securityfs /sys/kernel/security
mnt bpf /sys/fs/bpf                # virtme-ng leaves it unmounted
ip link set lo up

# The guest's / is the host's, read-only over 9p.  virtme-ng lays a guest-only
# overlay on /tmp (run.py asks for one on the repo too); fall back to a tmpfs
# if that ever changes.  A fresh TMPDIR: the host's own /tmp shows through.
if ! touch /tmp/.vm-writable 2>/dev/null; then
    mount -t tmpfs tmpfs /tmp
fi
TMPDIR=$(mktemp -d /tmp/kprobekit-vm.XXXXXX)
export TMPDIR

echo "vm: $(uname -r), $(nproc) cpus, up $(cut -d" " -f1 /proc/uptime) s, TMPDIR=$TMPDIR"
exec "$@"
