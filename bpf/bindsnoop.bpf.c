// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * bindsnoop: bind() on IPv4 and IPv6 sockets (TCP, UDP, ...), with its
 * result.  Three backends, one object:
 *   fentry      fexit on inet_bind/inet6_bind: socket, address and result at once
 *   kprobe      kprobe stashes socket and requested address by thread,
 *               kretprobe reports
 *   tracepoint  syscalls:sys_enter_bind stashes the fd and the sockaddr read
 *               from user memory, sys_exit_bind resolves the fd to its socket
 *               in the caller's fd table and reports.  It also sees binds that
 *               fail before inet_bind (EBADF, EINVAL on a short address, ...).
 * A bind that succeeded is described by the socket (the port the kernel
 * picked for port 0); one that failed by the address that was asked for.
 */
#include "kprobekit.bpf.h"
#include "kk_metrics.bpf.h"


const volatile __u16 filter_ports[KK_MAX_PORTS] = {};	/* ports, 0-terminated */
const volatile bool errors_only = false;

/* OPTS bits, as bcc's bindsnoop prints them: "FTNRr" */
#define OPT_FREEBIND		1
#define OPT_TRANSPARENT		2
#define OPT_BIND_ADDRESS_NO_PORT 4
#define OPT_REUSEADDR		8
#define OPT_REUSEPORT		16

struct event {
	kk_addr_t addr;
	__u64 ts_ns;
	__u32 pid;
	__u32 tid;
	__u32 uid;
	__u32 bound_if;
	kk_errno_t ret;
	__u16 port;
	__u16 proto;
	__u8 opts;
	__u8 ip;
	char comm[TASK_COMM_LEN];
};

KK_EVENTS(struct event)

/* One bind() between entry and exit, by thread id. */
struct call {
	struct socket *sock;	/* kprobe backend */
	__s32 fd;		/* tracepoint backend */
	__u16 port;		/* requested, host order */
	__u8 addr[16];		/* requested */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32);
	__type(value, struct call);
} calls SEC(".maps");

/* inet_sock's option bits before Linux 6.6, which moved them into inet_flags. */
struct inet_sock___bitfields {
	__u8 freebind: 1;
	__u8 transparent: 1;
	__u8 bind_address_no_port: 1;
} __attribute__((preserve_access_index));

/* Bit numbers in inet_flags since 6.6 (an anonymous enum: no CO-RE relocation for it; stable since). */
#define INET_FLAGS_FREEBIND_BIT			11
#define INET_FLAGS_TRANSPARENT_BIT		15
#define INET_FLAGS_BIND_ADDRESS_NO_PORT_BIT	18

static __always_inline __u8 sock_opts(struct sock *sk)
{
	struct inet_sock *inet = (struct inet_sock *)sk;
	__u8 opts = 0;

	if (bpf_core_field_exists(inet->inet_flags)) {
		unsigned long flags = BPF_CORE_READ(inet, inet_flags);

		if (flags & (1UL << INET_FLAGS_FREEBIND_BIT))
			opts |= OPT_FREEBIND;
		if (flags & (1UL << INET_FLAGS_TRANSPARENT_BIT))
			opts |= OPT_TRANSPARENT;
		if (flags & (1UL << INET_FLAGS_BIND_ADDRESS_NO_PORT_BIT))
			opts |= OPT_BIND_ADDRESS_NO_PORT;
	} else {
		struct inet_sock___bitfields *old = (void *)sk;

		if (BPF_CORE_READ_BITFIELD_PROBED(old, freebind))
			opts |= OPT_FREEBIND;
		if (BPF_CORE_READ_BITFIELD_PROBED(old, transparent))
			opts |= OPT_TRANSPARENT;
		if (BPF_CORE_READ_BITFIELD_PROBED(old, bind_address_no_port))
			opts |= OPT_BIND_ADDRESS_NO_PORT;
	}
	if (BPF_CORE_READ_BITFIELD_PROBED(sk, __sk_common.skc_reuse))
		opts |= OPT_REUSEADDR;
	if (BPF_CORE_READ_BITFIELD_PROBED(sk, __sk_common.skc_reuseport))
		opts |= OPT_REUSEPORT;
	return opts;
}

/*
 * Copies the requested port and address of a sockaddr_in/sockaddr_in6
 * (sin_port at offset 2; sin_addr at 4, sin6_addr at 8) into c.
 */
static __always_inline void read_sockaddr(struct call *c, const void *uaddr, bool user)
{
	struct { __u16 family; __be16 port; } head = {};
	const __u8 *p = uaddr;

	if (user)
		bpf_probe_read_user(&head, sizeof(head), p);
	else
		bpf_probe_read_kernel(&head, sizeof(head), p);
	c->port = bpf_ntohs(head.port);
	if (head.family == AF_INET6) {
		if (user)
			bpf_probe_read_user(c->addr, 16, p + 8);
		else
			bpf_probe_read_kernel(c->addr, 16, p + 8);
	} else {
		if (user)
			bpf_probe_read_user(c->addr, 4, p + 4);
		else
			bpf_probe_read_kernel(c->addr, 4, p + 4);
	}
}

/* Metrics mode: binds by (protocol, result). */
struct bind_key {
	__u16 proto;		/* IPPROTO_TCP, IPPROTO_UDP, ... */
	__u16 pad;
	kk_errno_t ret;
};

KK_COUNTER(binds, struct bind_key, 1024);

static __always_inline int emit(void *ctx, struct socket *sock, const struct call *c, int ret)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct sock *sk = BPF_CORE_READ(sock, sk);
	__u8 daddr[16];
	struct event *e;
	__u16 family, port;

	if (!sk || (errors_only && !ret))
		return 0;
	family = kk_sock_family(sk);
	if (family != AF_INET && family != AF_INET6)
		return 0;
	port = ret ? c->port : BPF_CORE_READ(sk, __sk_common.skc_num);
	if (!kk_port_in(filter_ports, port))
		return 0;
	if (kk_metrics) {
		struct bind_key k = { .proto = BPF_CORE_READ(sk, sk_protocol), .ret = ret };

		if (kk_metrics_sock_wanted(sk))
			kk_count(&binds, &k, 1);
		return 0;
	}
	e = kk_reserve();
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	if (ret)
		__builtin_memcpy(e->addr, c->addr, sizeof(e->addr));
	else
		kk_read_sock_addrs(sk, family, e->addr, daddr);
	e->ts_ns = bpf_ktime_get_ns();
	e->pid = pid_tgid >> 32;
	e->tid = (__u32)pid_tgid;
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->bound_if = BPF_CORE_READ(sk, __sk_common.skc_bound_dev_if);
	e->ret = ret;
	e->port = port;
	e->proto = BPF_CORE_READ(sk, sk_protocol);
	e->opts = sock_opts(sk);
	e->ip = family == AF_INET6 ? 6 : 4;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	kk_submit(ctx, e);
	return 0;
}

static __always_inline bool task_wanted(void)
{
	return kk_pid_wanted(bpf_get_current_pid_tgid() >> 32);
}

static __always_inline int stash(const struct call *c)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();

	if (task_wanted())
		bpf_map_update_elem(&calls, &tid, c, BPF_ANY);
	return 0;
}

static __always_inline bool unstash(struct call *c)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct call *found = bpf_map_lookup_elem(&calls, &tid);

	if (!found)
		return false;
	*c = *found;
	bpf_map_delete_elem(&calls, &tid);
	return true;
}

/* --- fentry backend --- */

static __always_inline int fexit_bind(void *ctx, struct socket *sock, struct sockaddr *uaddr, int ret)
{
	struct call c = {};

	if (!task_wanted())
		return 0;
	read_sockaddr(&c, uaddr, false);
	return emit(ctx, sock, &c, ret);
}

SEC("?fexit/inet_bind")
int BPF_PROG(fexit_v4, struct socket *sock, struct sockaddr *uaddr, int addr_len, int ret)
{
	return fexit_bind(ctx, sock, uaddr, ret);
}

SEC("?fexit/inet6_bind")
int BPF_PROG(fexit_v6, struct socket *sock, struct sockaddr *uaddr, int addr_len, int ret)
{
	return fexit_bind(ctx, sock, uaddr, ret);
}

/* --- kprobe backend --- */

static __always_inline int kprobe_bind(struct socket *sock, struct sockaddr *uaddr)
{
	struct call c = { .sock = sock, .fd = -1 };

	read_sockaddr(&c, uaddr, false);
	return stash(&c);
}

static __always_inline int kretprobe_bind(void *ctx, int ret)
{
	struct call c;

	if (!unstash(&c))
		return 0;
	return emit(ctx, c.sock, &c, ret);
}

SEC("?kprobe/inet_bind")
int BPF_KPROBE(kprobe_v4, struct socket *sock, struct sockaddr *uaddr)
{
	return kprobe_bind(sock, uaddr);
}

SEC("?kretprobe/inet_bind")
int BPF_KRETPROBE(kretprobe_v4, int ret)
{
	return kretprobe_bind(ctx, ret);
}

SEC("?kprobe/inet6_bind")
int BPF_KPROBE(kprobe_v6, struct socket *sock, struct sockaddr *uaddr)
{
	return kprobe_bind(sock, uaddr);
}

SEC("?kretprobe/inet6_bind")
int BPF_KRETPROBE(kretprobe_v6, int ret)
{
	return kretprobe_bind(ctx, ret);
}

/* --- tracepoint backend --- */

SEC("?tracepoint/syscalls/sys_enter_bind")
int tp_enter_bind(struct trace_event_raw_sys_enter *ctx)
{
	struct call c = { .fd = (int)ctx->args[0] };

	if (!task_wanted())
		return 0;
	/* user memory: read now, while the caller is blocked in bind() */
	read_sockaddr(&c, (const void *)ctx->args[1], true);
	return stash(&c);
}

SEC("?tracepoint/syscalls/sys_exit_bind")
int tp_exit_bind(struct trace_event_raw_sys_exit *ctx)
{
	struct socket *sock;
	struct call c;

	if (!unstash(&c))
		return 0;
	sock = kk_socket_of_fd(c.fd);
	if (!sock)
		return 0;	/* EBADF, ENOTSOCK: no socket to describe */
	return emit(ctx, sock, &c, (int)ctx->ret);
}
