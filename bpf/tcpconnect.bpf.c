// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * tcpconnect: active TCP connects.  Three backends, one object; user space
 * turns on exactly one set of programs (they are all "?"-prefixed, i.e. not
 * loaded unless asked for):
 *   fentry      fexit on tcp_v{4,6}_connect: arguments and return value at once
 *   kprobe      kprobe stashes the sock by thread, kretprobe reads it on success
 *   tracepoint  sock:inet_sock_set_state: CLOSE->SYN_SENT (in the connecting
 *               task) stashes who connects, keyed by socket; the socket's next
 *               transition reports it, when the source port is known.  At
 *               sys_exit_connect it is too late: a refused connect has reset
 *               the ports and source address by then (tcp_disconnect).
 */
#include "kprobekit.bpf.h"

#define MAX_PORTS 16
#define IPPROTO_TCP 6

const volatile __u16 filter_family = 0;		/* AF_INET, AF_INET6 or 0 */
const volatile __u32 filter_uid = (__u32)-1;	/* -1: any user */
const volatile __u16 filter_ports[MAX_PORTS] = {};	/* destination ports, 0-terminated */

struct event {
	kk_addr_t saddr;
	kk_addr_t daddr;
	__u64 ts_ns;
	__u32 pid;
	__u32 tid;
	__u32 uid;
	__u16 sport;
	__u16 dport;
	__u8 ip;
	char comm[TASK_COMM_LEN];
};

KK_EVENTS(struct event)

/* Who connects: taken in the connecting task, reported possibly later. */
struct who {
	__u64 ts_ns;
	__u32 pid;
	__u32 tid;
	__u32 uid;
	char comm[TASK_COMM_LEN];
};

/* kprobe backend: thread id -> socket, between kprobe and kretprobe. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32);
	__type(value, struct sock *);
} connecting SEC(".maps");

/* tracepoint backend: socket -> who, between SYN_SENT and the next state. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 10240);
	__type(key, struct sock *);
	__type(value, struct who);
} syn_sent SEC(".maps");

static __always_inline bool port_wanted(__u16 port)
{
	if (!filter_ports[0])
		return true;
	for (int i = 0; i < MAX_PORTS && filter_ports[i]; i++)
		if (filter_ports[i] == port)
			return true;
	return false;
}

/* Filters that need only the current task; applied before anything is stashed. */
static __always_inline bool task_wanted(void)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 uid = (__u32)bpf_get_current_uid_gid();

	if (!kk_pid_wanted(pid_tgid >> 32))
		return false;
	return filter_uid == (__u32)-1 || filter_uid == uid;
}

static __always_inline void who_now(struct who *w)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	w->ts_ns = bpf_ktime_get_ns();
	w->pid = pid_tgid >> 32;
	w->tid = (__u32)pid_tgid;
	w->uid = (__u32)bpf_get_current_uid_gid();
	bpf_get_current_comm(w->comm, sizeof(w->comm));
}

static __always_inline int emit_for(void *ctx, struct sock *sk, const struct who *w, __u16 sport)
{
	__u16 family = kk_sock_family(sk);
	__u16 dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	struct event *e;

	if (filter_family && family != filter_family)
		return 0;
	if (!port_wanted(dport))
		return 0;
	e = kk_reserve();
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	kk_read_sock_addrs(sk, family, e->saddr, e->daddr);
	e->ts_ns = w->ts_ns;
	e->pid = w->pid;
	e->tid = w->tid;
	e->uid = w->uid;
	__builtin_memcpy(e->comm, w->comm, sizeof(e->comm));
	e->sport = sport;
	e->dport = dport;
	e->ip = family == AF_INET6 ? 6 : 4;
	kk_submit(ctx, e);
	return 0;
}

static __always_inline int emit(void *ctx, struct sock *sk)
{
	struct who w;

	who_now(&w);
	return emit_for(ctx, sk, &w, BPF_CORE_READ(sk, __sk_common.skc_num));
}

/*
 * An AF_INET6 socket connecting to a v4-mapped address goes through
 * tcp_v6_connect -> tcp_v4_connect; report it once, from the v6 hook.
 */
static __always_inline bool is_v6_socket(struct sock *sk)
{
	return kk_sock_family(sk) == AF_INET6;
}

/* --- fentry backend --- */

SEC("?fexit/tcp_v4_connect")
int BPF_PROG(fexit_v4, struct sock *sk, struct sockaddr *uaddr, int addr_len, int ret)
{
	if (ret || is_v6_socket(sk) || !task_wanted())
		return 0;
	return emit(ctx, sk);
}

SEC("?fexit/tcp_v6_connect")
int BPF_PROG(fexit_v6, struct sock *sk, struct sockaddr *uaddr, int addr_len, int ret)
{
	if (ret || !task_wanted())
		return 0;
	return emit(ctx, sk);
}

/* --- kprobe backend (seed 000's design) --- */

static __always_inline int stash(struct sock *sk)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();

	if (!task_wanted())
		return 0;
	bpf_map_update_elem(&connecting, &tid, &sk, BPF_ANY);
	return 0;
}

static __always_inline int unstash(void *ctx, int ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct sock **skp = bpf_map_lookup_elem(&connecting, &tid);
	struct sock *sk;

	if (!skp)
		return 0;	/* entry missed, or filtered out there */
	sk = *skp;
	bpf_map_delete_elem(&connecting, &tid);
	if (ret)
		return 0;	/* failed before the SYN: addresses may be unset */
	return emit(ctx, sk);
}

SEC("?kprobe/tcp_v4_connect")
int BPF_KPROBE(kprobe_v4, struct sock *sk)
{
	if (is_v6_socket(sk))
		return 0;
	return stash(sk);
}

SEC("?kretprobe/tcp_v4_connect")
int BPF_KRETPROBE(kretprobe_v4, int ret)
{
	return unstash(ctx, ret);
}

SEC("?kprobe/tcp_v6_connect")
int BPF_KPROBE(kprobe_v6, struct sock *sk)
{
	return stash(sk);
}

SEC("?kretprobe/tcp_v6_connect")
int BPF_KRETPROBE(kretprobe_v6, int ret)
{
	return unstash(ctx, ret);
}

/* --- tracepoint backend --- */

SEC("?tracepoint/sock/inet_sock_set_state")
int tp_set_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	struct sock *sk = (struct sock *)ctx->skaddr;
	struct who w, *found;

	if (ctx->protocol != IPPROTO_TCP)
		return 0;
	if (ctx->newstate == TCP_SYN_SENT) {
		/* tcp_v{4,6}_connect, in the connecting task, before the port is bound */
		if (ctx->oldstate == TCP_CLOSE && task_wanted()) {
			who_now(&w);
			bpf_map_update_elem(&syn_sent, &sk, &w, BPF_ANY);
		}
		return 0;
	}
	if (ctx->oldstate != TCP_SYN_SENT)
		return 0;
	found = bpf_map_lookup_elem(&syn_sent, &sk);
	if (!found)
		return 0;
	w = *found;
	bpf_map_delete_elem(&syn_sent, &sk);
	/* No source port: tcp_v4_connect failed after SYN_SENT, no SYN was sent. */
	if (!ctx->sport)
		return 0;
	/*
	 * ESTABLISHED, or CLOSE (refused, timed out): the addresses are still
	 * set, but on CLOSE the port is already released (skc_num is 0) — the
	 * tracepoint's own sport is taken from inet_sport, which stays.
	 */
	return emit_for(ctx, sk, &w, ctx->sport);
}
