// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * tcpaccept: passive TCP connections, reported when a process accepts them.
 * Three backends, one object:
 *   fentry      fexit on inet_csk_accept, which returns the new socket (read
 *               with bpf_get_func_ret: the argument list changed in 6.10)
 *   kprobe      kretprobe on inet_csk_accept
 *   tracepoint  syscalls:sys_exit_accept4/sys_exit_accept: the new fd is
 *               resolved to its socket in the accepting task's fd table.
 *               Only accept(2)/accept4(2) are seen: not io_uring, not
 *               in-kernel accepts (kernel_accept).
 * All run in the accepting task, so PID and COMM are the acceptor's: the
 * handshake itself completes in softirq, where the current task is unrelated
 * (why sock:inet_sock_set_state SYN_RECV->ESTABLISHED is not used).
 */
#include "kprobekit.bpf.h"
#include "kk_metrics.bpf.h"

#define IPPROTO_TCP 6

const volatile __u16 filter_family = 0;			/* AF_INET, AF_INET6 or 0 */
const volatile __u16 filter_ports[KK_MAX_PORTS] = {};	/* local ports, 0-terminated */

struct event {
	kk_addr_t laddr;
	kk_addr_t raddr;
	__u64 ts_ns;
	__u32 pid;
	__u32 tid;
	__u32 uid;
	__u16 lport;
	__u16 rport;
	__u8 ip;
	char comm[TASK_COMM_LEN];
};

KK_EVENTS(struct event)

/* Metrics mode: accepts by (family, local port); listening ports are few, so the labels stay bounded. */
struct accept_key {
	__u16 family;
	__u16 port;
};

KK_COUNTER(accepts, struct accept_key, 4096);

static __always_inline int emit(void *ctx, struct sock *sk)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct event *e;
	__u16 family, lport;

	if (!sk || !kk_pid_wanted(pid_tgid >> 32))
		return 0;
	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	family = kk_sock_family(sk);
	if (family != AF_INET && family != AF_INET6)
		return 0;
	if (filter_family && family != filter_family)
		return 0;
	lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	if (!kk_port_in(filter_ports, lport))
		return 0;
	if (kk_metrics) {
		struct accept_key k = { .family = family, .port = lport };

		if (kk_metrics_sock_wanted(sk))
			kk_count(&accepts, &k, 1);
		return 0;
	}
	e = kk_reserve();
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	kk_read_sock_addrs(sk, family, e->laddr, e->raddr);
	e->ts_ns = bpf_ktime_get_ns();
	e->pid = pid_tgid >> 32;
	e->tid = (__u32)pid_tgid;
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->lport = lport;
	e->rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	e->ip = family == AF_INET6 ? 6 : 4;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	kk_submit(ctx, e);
	return 0;
}

/* --- fentry backend --- */

SEC("?fexit/inet_csk_accept")
int BPF_PROG(fexit_accept)
{
	__u64 ret = 0;

	bpf_get_func_ret(ctx, &ret);
	return emit(ctx, (struct sock *)ret);
}

/* --- kprobe backend --- */

SEC("?kretprobe/inet_csk_accept")
int BPF_KRETPROBE(kretprobe_accept, struct sock *newsk)
{
	return emit(ctx, newsk);
}

/* --- tracepoint backend --- */

static __always_inline int accepted_fd(void *ctx, long fd)
{
	struct socket *sock;

	if (fd < 0 || !kk_pid_wanted(bpf_get_current_pid_tgid() >> 32))
		return 0;
	sock = kk_socket_of_fd((int)fd);
	if (!sock)
		return 0;
	return emit(ctx, BPF_CORE_READ(sock, sk));
}

SEC("?tracepoint/syscalls/sys_exit_accept4")
int tp_exit_accept4(struct trace_event_raw_sys_exit *ctx)
{
	return accepted_fd(ctx, ctx->ret);
}

SEC("?tracepoint/syscalls/sys_exit_accept")
int tp_exit_accept(struct trace_event_raw_sys_exit *ctx)
{
	return accepted_fd(ctx, ctx->ret);
}
