// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * solisten: listen() on TCP sockets, successful or not.  Three backends, one
 * object:
 *   fentry      fexit on inet_listen: socket, backlog and return value at once
 *   kprobe      kprobe stashes socket and backlog by thread, kretprobe reports
 *   tracepoint  syscalls:sys_enter_listen stashes fd and backlog by thread,
 *               sys_exit_listen resolves the fd to its socket in the calling
 *               task's fd table and reports: same values as the hooks above
 *               (listen() is not reported when it fails before inet_listen,
 *               e.g. EBADF/ENOTSOCK, nor when issued through io_uring)
 * All read the socket after inet_listen, when an unbound socket has been
 * given its port (inet_csk_listen_start -> get_port).
 */
#include "kprobekit.bpf.h"
#include "kk_metrics.bpf.h"

#define IPPROTO_TCP 6

const volatile __u32 filter_netns = 0;			/* network namespace inode, 0: any */
const volatile __u16 filter_ports[KK_MAX_PORTS] = {};	/* local ports, 0-terminated */
const volatile bool report_failed = false;		/* also listen() calls that failed */

struct event {
	kk_addr_t addr;
	__u64 ts_ns;
	__u32 pid;
	__u32 tid;
	__u32 netns;
	__s32 backlog;
	kk_errno_t ret;
	__u16 port;
	__u8 ip;
	char comm[TASK_COMM_LEN];
};

KK_EVENTS(struct event)

/* Between entry and exit of one listen(), by thread id. */
struct call {
	struct socket *sock;	/* kprobe backend */
	__s32 fd;		/* tracepoint backend */
	__s32 backlog;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32);
	__type(value, struct call);
} calls SEC(".maps");

/* Metrics mode: successful listen() calls (key 0 only). */
KK_COUNTER(listens, __u32, 1);

static __always_inline int emit(void *ctx, struct socket *sock, int backlog, int ret)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct sock *sk = BPF_CORE_READ(sock, sk);
	__u8 daddr[16];
	struct event *e;
	__u16 family, port;
	__u32 netns;

	if (ret && !report_failed)
		return 0;
	if (!sk || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	family = kk_sock_family(sk);
	if (family != AF_INET && family != AF_INET6)
		return 0;
	netns = kk_sock_netns(sk);
	if (filter_netns && netns != filter_netns)
		return 0;
	port = BPF_CORE_READ(sk, __sk_common.skc_num);
	if (!kk_port_in(filter_ports, port))
		return 0;
	if (kk_metrics) {
		__u32 zero = 0;

		if (!ret && kk_metrics_sock_wanted(sk))
			kk_count(&listens, &zero, 1);
		return 0;
	}
	e = kk_reserve();
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	kk_read_sock_addrs(sk, family, e->addr, daddr);
	e->ts_ns = bpf_ktime_get_ns();
	e->pid = pid_tgid >> 32;
	e->tid = (__u32)pid_tgid;
	e->netns = netns;
	e->backlog = backlog;
	e->ret = ret;
	e->port = port;
	e->ip = family == AF_INET6 ? 6 : 4;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	kk_submit(ctx, e);
	return 0;
}

static __always_inline void stash(struct socket *sock, int fd, int backlog)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pid_tgid;
	struct call c = { .sock = sock, .fd = fd, .backlog = backlog };

	if (kk_pid_wanted(pid_tgid >> 32))
		bpf_map_update_elem(&calls, &tid, &c, BPF_ANY);
}

/* The stashed call of this thread, removed from the map; false if none. */
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

SEC("?fexit/inet_listen")
int BPF_PROG(fexit_listen, struct socket *sock, int backlog, int ret)
{
	if (!kk_pid_wanted(bpf_get_current_pid_tgid() >> 32))
		return 0;
	return emit(ctx, sock, backlog, ret);
}

/* --- kprobe backend --- */

SEC("?kprobe/inet_listen")
int BPF_KPROBE(kprobe_listen, struct socket *sock, int backlog)
{
	stash(sock, -1, backlog);
	return 0;
}

SEC("?kretprobe/inet_listen")
int BPF_KRETPROBE(kretprobe_listen, int ret)
{
	struct call c;

	if (!unstash(&c))
		return 0;
	return emit(ctx, c.sock, c.backlog, ret);
}

/* --- tracepoint backend --- */

SEC("?tracepoint/syscalls/sys_enter_listen")
int tp_enter_listen(struct trace_event_raw_sys_enter *ctx)
{
	stash(NULL, (int)ctx->args[0], (int)ctx->args[1]);
	return 0;
}

SEC("?tracepoint/syscalls/sys_exit_listen")
int tp_exit_listen(struct trace_event_raw_sys_exit *ctx)
{
	struct socket *sock;
	struct call c;
	int somaxconn;

	if (!unstash(&c))
		return 0;
	sock = kk_socket_of_fd(c.fd);
	if (!sock)
		return 0;	/* EBADF, ENOTSOCK: no socket to describe */
	/* __sys_listen clamps the backlog before inet_listen sees it */
	somaxconn = BPF_CORE_READ(sock, sk, __sk_common.skc_net.net, core.sysctl_somaxconn);
	if ((unsigned int)c.backlog > (unsigned int)somaxconn)
		c.backlog = somaxconn;
	return emit(ctx, sock, c.backlog, (int)ctx->ret);
}
