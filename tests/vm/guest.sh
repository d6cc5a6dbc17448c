#!/bin/sh
# Runs as init's command inside a virtme-ng guest: the state of a just-booted
# machine, then exec the command given (pytest).
set -e

# virtme-ng's init mounts tracefs, debugfs and securityfs; a freshly booted
# Debian has none of them, and kprobekit must mount what it needs itself.
# Unmount them so that the whole suite starts from that state.
for m in /sys/kernel/debug/tracing /sys/kernel/tracing /sys/kernel/debug /sys/kernel/security; do
    while mountpoint -q "$m"; do umount "$m"; done
done
if grep -Eq ' - (tracefs|debugfs|securityfs) ' /proc/self/mountinfo; then
    echo "vm: could not unmount tracefs/debugfs/securityfs" >&2
    exit 1
fi
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
