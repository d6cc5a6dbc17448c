/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Shared by every kprobekit BPF program: event output (ring buffer, or perf
 * buffer on kernels without one), loss accounting, and the typedefs that tell
 * the Python side how to decode a field.
 *
 * Python reads each event's layout from this object's BTF, so the C struct is
 * the only definition of an event.  The decoder chooses a converter by the
 * member's typedef name (kk_addr_t, kk_errno_t, ...) or, for char arrays, by
 * type alone — keep these names stable.
 */
#ifndef KPROBEKIT_BPF_H
#define KPROBEKIT_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>

#define AF_INET		2
#define AF_INET6	10
#define TASK_COMM_LEN	16

/* An IPv4 (first 4 bytes) or IPv6 address; the record's `ip` member (4 or 6) says which. */
typedef __u8 kk_addr_t[16];
/* 0 or a negative errno; decoded to the errno's name. */
typedef __s32 kk_errno_t;

/* Set by user space before load; the verifier sees them as constants and drops dead branches. */
const volatile bool kk_perfbuf = false;	/* true on kernels without BPF ring buffers */
const volatile __u32 filter_pid = 0;	/* 0: any process (tgid) */

/* Events that could not be handed to user space; read by user space from .bss. */
__u64 kk_lost = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);	/* user space resizes, or turns it into a perf array */
} events SEC(".maps");

/*
 * A record the events ring's lock keeps refusing goes to this second ring,
 * which has a lock of its own; user space reads both.  Since 6.15 a ring's lock
 * is a "resilient" spinlock that refuses rather than deadlock, and some kernels
 * (paravirtualised guests, before the rqspinlock fixes of early 2026) refuse
 * now and then under contention with no deadlock and the ring nearly empty: a
 * few events per 100,000 on a 2-CPU loopback storm here, most taken by the
 * second try, some refused 64 times in a row.  Each ring is tried
 * KK_RING_TRIES times; both full is the loss the caller counts.
 */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);		/* a perf array too on kernels without ring buffers */
} kk_spare SEC(".maps");

#define KK_RING_TRIES 8

/*
 * Each try returns at once on success: 6.1's verifier loses track of a
 * reservation carried around a loop in a variable ("Unreleased reference").
 */
static __always_inline void *kk_ringbuf_reserve(__u64 size)
{
	void *e;

	for (int i = 0; i < KK_RING_TRIES; i++) {
		e = bpf_ringbuf_reserve(&events, size, 0);
		if (e)
			return e;
	}
	for (int i = 0; i < KK_RING_TRIES; i++) {
		e = bpf_ringbuf_reserve(&kk_spare, size, 0);
		if (e)
			return e;
	}
	return 0;
}

/* bpf_ringbuf_output() to the events ring, else the spare; 0 or a negative error. */
static __always_inline long kk_ringbuf_output(void *data, __u64 size)
{
	for (int i = 0; i < KK_RING_TRIES; i++)
		if (!bpf_ringbuf_output(&events, data, size, 0))
			return 0;
	for (int i = 0; i < KK_RING_TRIES; i++)
		if (!bpf_ringbuf_output(&kk_spare, data, size, 0))
			return 0;
	return -1;
}

/*
 * KK_EVENTS(struct event) declares the tool's event type.  The per-CPU scratch
 * slot it defines is where perf-buffer mode builds the record, and its value
 * type is how user space finds the event's BTF.
 */
#define KK_EVENTS(event_t)								\
struct {									\
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);				\
	__uint(max_entries, 1);							\
	__type(key, __u32);							\
	__type(value, event_t);							\
} kk_scratch SEC(".maps");							\
									\
static __always_inline event_t *kk_reserve(void)					\
{									\
	__u32 zero = 0;							\
	event_t *e;							\
									\
	if (kk_perfbuf)							\
		return bpf_map_lookup_elem(&kk_scratch, &zero);		\
	e = kk_ringbuf_reserve(sizeof(event_t));			\
	if (!e)								\
		__sync_fetch_and_add(&kk_lost, 1);			\
	return e;							\
}									\
									\
/* Counted here for the perf buffer too: the kernel reports its own count of	\
 * a full perf buffer only with the next event that fits, so a burst's loss	\
 * at the end of a run would never be told. */					\
static __always_inline void kk_submit(void *ctx, event_t *e)			\
{									\
	if (kk_perfbuf) {						\
		if (bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU,	\
					  e, sizeof(event_t)) < 0)		\
			__sync_fetch_and_add(&kk_lost, 1);		\
	} else								\
		bpf_ringbuf_submit(e, 0);				\
}

/*
 * KK_RECORD(struct foo) puts a type into the object's BTF so that user space
 * can decode records of it (BPF(...).events(MAP, struct="foo")).  A type used
 * only by local variables is not in BTF; a global pointer to it is enough.
 */
#define KK_RECORD(type) __attribute__((unused)) type *___KK_CAT(kk_record_, __LINE__)
#define ___KK_CAT(a, b) ___KK_CAT2(a, b)
#define ___KK_CAT2(a, b) a##b

/*
 * The log2 bucket of v: its bit length — 0 for 0, 1 for 1, 2 for 2..3, 3 for
 * 4..7, ..., 64 for 2^63 and above — as kprobekit.histogram.bucket_of()
 * computes it, and what print_log2() prints ("0 -> 1" is buckets 0 and 1).
 * bcc's bpf_log2l() is the same except that it puts 0 in bucket 1.
 * Branch-free, so it costs the verifier a few instructions and no loop.
 */
static __always_inline __u32 kk_log2l(__u64 v)
{
	__u32 r, shift;

	if (!v)
		return 0;
	r = (v > 0xFFFFFFFFULL) << 5; v >>= r;
	shift = (v > 0xFFFF) << 4; v >>= shift; r |= shift;
	shift = (v > 0xFF) << 3; v >>= shift; r |= shift;
	shift = (v > 0xF) << 2; v >>= shift; r |= shift;
	shift = (v > 0x3) << 1; v >>= shift; r |= shift;
	return (r | (__u32)(v >> 1)) + 1;
}

#define KK_EEXIST 17

/*
 * The value of key in map, inserted as *init first when absent; NULL when the
 * map is full (or key is out of an array's range).  Two CPUs racing to insert
 * the same key both get the one entry: BPF_NOEXIST lets only the first in.
 */
static __always_inline void *kk_lookup_or_init(void *map, const void *key, const void *init)
{
	void *value = bpf_map_lookup_elem(map, key);
	long err;

	if (value)
		return value;
	err = bpf_map_update_elem(map, key, init, BPF_NOEXIST);
	if (err && err != -KK_EEXIST)
		return NULL;
	return bpf_map_lookup_elem(map, key);
}

/* Adds n to the __u64 value of key (0 when absent), atomically; bcc's map.increment(key, n). */
static __always_inline void kk_increment(void *map, const void *key, __u64 n)
{
	__u64 zero = 0, *value = kk_lookup_or_init(map, key, &zero);

	if (value)
		__sync_fetch_and_add(value, n);
}

/* Port filters: `const volatile __u16 NAME[KK_MAX_PORTS]` set from user space, 0-terminated; empty lets all through. */
#define KK_MAX_PORTS 16

static __always_inline bool kk_port_in(const volatile __u16 *ports, __u16 port)
{
	if (!ports[0])
		return true;
	for (int i = 0; i < KK_MAX_PORTS && ports[i]; i++)
		if (ports[i] == port)
			return true;
	return false;
}

/* A task as events report it; kept in a map when the report comes later than the deed. */
struct kk_task {
	__u32 pid;	/* tgid */
	__u32 tid;
	__u32 uid;
	char comm[TASK_COMM_LEN];
};

static __always_inline void kk_task_now(struct kk_task *t)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	t->pid = pid_tgid >> 32;
	t->tid = (__u32)pid_tgid;
	t->uid = (__u32)bpf_get_current_uid_gid();
	bpf_get_current_comm(t->comm, sizeof(t->comm));
}

/* Copies a kk_task into an event's pid, tid, uid and comm members. */
#define KK_SET_TASK(e, t)						\
	do {								\
		(e)->pid = (t)->pid;					\
		(e)->tid = (t)->tid;					\
		(e)->uid = (t)->uid;					\
		__builtin_memcpy((e)->comm, (t)->comm, sizeof((e)->comm)); \
	} while (0)

static __always_inline bool kk_pid_wanted(__u32 tgid)
{
	return !filter_pid || filter_pid == tgid;
}

static __always_inline __u16 kk_sock_family(const struct sock *sk)
{
	return BPF_CORE_READ(sk, __sk_common.skc_family);
}

/* Copies a socket's local and remote addresses into an event's kk_addr_t members. */
static __always_inline void kk_read_sock_addrs(const struct sock *sk, __u16 family,
					       __u8 *saddr, __u8 *daddr)
{
	if (family == AF_INET6) {
		bpf_core_read(saddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(daddr, 16, &sk->__sk_common.skc_v6_daddr);
	} else {
		bpf_core_read(saddr, 4, &sk->__sk_common.skc_rcv_saddr);
		bpf_core_read(daddr, 4, &sk->__sk_common.skc_daddr);
	}
}

/* The socket's network namespace, as its inode number (what `ls -l /proc/PID/ns/net` shows). */
static __always_inline __u32 kk_sock_netns(const struct sock *sk)
{
	return BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
}

#define KK_S_IFMT	0170000
#define KK_S_IFSOCK	0140000

/*
 * The socket behind file descriptor fd of the current task, or NULL when fd
 * is not an open socket.  Lets syscall tracepoints (which only see an fd)
 * read the same struct sock a kprobe on the socket layer would.
 */
static __always_inline struct socket *kk_socket_of_fd(int fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds, *file = NULL;

	if (fd < 0 || !fdt || (unsigned int)fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]) || !file)
		return NULL;
	if ((BPF_CORE_READ(file, f_inode, i_mode) & KK_S_IFMT) != KK_S_IFSOCK)
		return NULL;
	return BPF_CORE_READ(file, private_data);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#endif /* KPROBEKIT_BPF_H */
