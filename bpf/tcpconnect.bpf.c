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
 *
 * --lat and -x (report_at_end) make the fentry and kprobe backends report at
 * the end of the handshake too, through tp_handshake_end (the same
 * tracepoint logic), so the latency (SYN_SENT -> ESTABLISHED) and the outcome
 * (ESTABLISHED, or CLOSE with sk_err: refused, timed out, unreachable) are
 * known; their return-value hooks then add, with -x, the connects that fail
 * inside tcp_v{4,6}_connect before any SYN (no route, no free port), which a
 * tracepoint cannot see.
 */
#include "kprobekit.bpf.h"
#include "kk_metrics.bpf.h"

#define IPPROTO_TCP 6

const volatile __u16 filter_family = 0;		/* AF_INET, AF_INET6 or 0 */
const volatile __u32 filter_uid = (__u32)-1;	/* -1: any user */
const volatile __u16 filter_ports[KK_MAX_PORTS] = {};	/* destination ports, 0-terminated */
const volatile __u32 filter_netns = 0;		/* network namespace inode, 0: any */
const volatile __u64 filter_cgroup = 0;		/* cgroup v2 id, 0: any */
const volatile bool report_at_end = false;	/* report when the handshake ends (--lat, -x) */
const volatile bool report_failed = false;	/* also connects that failed before a SYN (-x) */

struct event {
	kk_addr_t saddr;
	kk_addr_t daddr;
	__u64 ts_ns;
	__u32 pid;
	__u32 tid;
	__u32 uid;
	__u64 lat_ns;		/* SYN_SENT -> ESTABLISHED; 0 if not measured */
	kk_errno_t ret;		/* the connect's outcome, when outcome_known */
	__u16 sport;
	__u16 dport;
	__u8 ip;
	__u8 outcome_known;	/* 0: reported before the handshake ended */
	char comm[TASK_COMM_LEN];
};

KK_EVENTS(struct event)

/* Metrics mode: connects by (family, result), and the handshake's latency. */
struct connect_key {
	__u16 family;
	__u16 known;		/* 0: the outcome is not known (closed before the handshake ended) */
	kk_errno_t ret;		/* 0 or -errno */
};

KK_COUNTER(connects, struct connect_key, 1024);
KK_HISTOGRAM(connect_latency);

static __always_inline int count_connect(struct sock *sk, __u16 family, __s32 ret, bool known, __u64 lat_ns)
{
	struct connect_key k = { .family = family, .known = known, .ret = ret };

	if (!kk_metrics_sock_wanted(sk))
		return 0;
	kk_count(&connects, &k, 1);
	if (lat_ns)
		kk_observe(&connect_latency, lat_ns);
	return 0;
}

/* Who connects: taken in the connecting task, reported possibly later. */
struct who {
	__u64 ts_ns;
	struct kk_task task;
};

/* kprobe backend: thread id -> the call's arguments, between kprobe and kretprobe. */
struct call {
	struct sock *sk;
	struct sockaddr *uaddr;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32);
	__type(value, struct call);
} connecting SEC(".maps");

/* tracepoint backend: socket -> who, between SYN_SENT and the next state. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 10240);
	__type(key, struct sock *);
	__type(value, struct who);
} syn_sent SEC(".maps");

/* Filters that need only the current task; applied before anything is stashed. */
static __always_inline bool task_wanted(void)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 uid = (__u32)bpf_get_current_uid_gid();

	if (!kk_pid_wanted(pid_tgid >> 32))
		return false;
	if (filter_cgroup && bpf_get_current_cgroup_id() != filter_cgroup)
		return false;
	return filter_uid == (__u32)-1 || filter_uid == uid;
}

static __always_inline void who_now(struct who *w)
{
	w->ts_ns = bpf_ktime_get_ns();
	kk_task_now(&w->task);
}

/* How a connect ended, as far as the reporting hook knows. */
struct outcome {
	__u64 lat_ns;
	int ret;
	bool known;
};

/* The filters that need the socket: family, destination port, network namespace. */
static __always_inline bool sock_wanted(struct sock *sk, __u16 family, __u16 dport)
{
	if (filter_family && family != filter_family)
		return false;
	if (!kk_port_in(filter_ports, dport))
		return false;
	return !filter_netns || kk_sock_netns(sk) == filter_netns;
}

static __always_inline int emit_for(void *ctx, struct sock *sk, const struct who *w, __u16 sport,
				    const struct outcome *o)
{
	__u16 family = kk_sock_family(sk);
	__u16 dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	struct event *e;

	if (!sock_wanted(sk, family, dport))
		return 0;
	if (kk_metrics)
		return count_connect(sk, family, o->ret, o->known, o->lat_ns);
	e = kk_reserve();
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	kk_read_sock_addrs(sk, family, e->saddr, e->daddr);
	e->lat_ns = o->lat_ns;
	e->ret = o->ret;
	e->outcome_known = o->known;
	e->ts_ns = w->ts_ns;
	KK_SET_TASK(e, &w->task);
	e->sport = sport;
	e->dport = dport;
	e->ip = family == AF_INET6 ? 6 : 4;
	kk_submit(ctx, e);
	return 0;
}

/* At the connect call's return, SYN sent: the outcome is not known yet. */
static __always_inline int emit_sent(void *ctx, struct sock *sk)
{
	struct outcome o = {};
	struct who w;

	who_now(&w);
	return emit_for(ctx, sk, &w, BPF_CORE_READ(sk, __sk_common.skc_num), &o);
}

/*
 * A connect that failed inside tcp_v{4,6}_connect, before any SYN: the
 * socket may not hold the destination yet (ip_route_connect failed), so it
 * is taken from the sockaddr (sin_port at offset 2; sin_addr at 4,
 * sin6_addr at 8).
 */
static __always_inline int emit_failed(void *ctx, struct sock *sk, struct sockaddr *uaddr, int ret)
{
	struct { __u16 family; __be16 port; } head = {};
	__u16 family = kk_sock_family(sk);
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct event *e;
	__u16 dport;

	bpf_probe_read_kernel(&head, sizeof(head), uaddr);
	dport = bpf_ntohs(head.port);
	if (!sock_wanted(sk, family, dport))
		return 0;
	if (kk_metrics)
		return count_connect(sk, family, ret, true, 0);
	e = kk_reserve();
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	if (family == AF_INET6) {
		bpf_core_read(e->saddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_probe_read_kernel(e->daddr, 16, (__u8 *)uaddr + 8);
	} else {
		bpf_core_read(e->saddr, 4, &sk->__sk_common.skc_rcv_saddr);
		bpf_probe_read_kernel(e->daddr, 4, (__u8 *)uaddr + 4);
	}
	e->ts_ns = bpf_ktime_get_ns();
	e->pid = pid_tgid >> 32;
	e->tid = (__u32)pid_tgid;
	e->uid = (__u32)bpf_get_current_uid_gid();
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	e->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	e->dport = dport;
	e->ip = family == AF_INET6 ? 6 : 4;
	e->ret = ret;
	e->outcome_known = 1;
	kk_submit(ctx, e);
	return 0;
}

/* What the return-value hooks do with a connect's result. */
static __always_inline int connect_returned(void *ctx, struct sock *sk, struct sockaddr *uaddr, int ret)
{
	if (ret)
		return report_failed ? emit_failed(ctx, sk, uaddr, ret) : 0;
	if (report_at_end)
		return 0;	/* tp_handshake_end reports it */
	return emit_sent(ctx, sk);
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
	if (is_v6_socket(sk) || !task_wanted())
		return 0;
	return connect_returned(ctx, sk, uaddr, ret);
}

SEC("?fexit/tcp_v6_connect")
int BPF_PROG(fexit_v6, struct sock *sk, struct sockaddr *uaddr, int addr_len, int ret)
{
	if (!task_wanted())
		return 0;
	return connect_returned(ctx, sk, uaddr, ret);
}

/* --- kprobe backend (seed 000's design) --- */

static __always_inline int stash(struct sock *sk, struct sockaddr *uaddr)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct call c = { .sk = sk, .uaddr = uaddr };

	if (!task_wanted())
		return 0;
	bpf_map_update_elem(&connecting, &tid, &c, BPF_ANY);
	return 0;
}

static __always_inline int unstash(void *ctx, int ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct call *found = bpf_map_lookup_elem(&connecting, &tid);
	struct call c;

	if (!found)
		return 0;	/* entry missed, or filtered out there */
	c = *found;
	bpf_map_delete_elem(&connecting, &tid);
	/* uaddr is __sys_connect's kernel copy, still live in the caller's frame */
	return connect_returned(ctx, c.sk, c.uaddr, ret);
}

SEC("?kprobe/tcp_v4_connect")
int BPF_KPROBE(kprobe_v4, struct sock *sk, struct sockaddr *uaddr)
{
	if (is_v6_socket(sk))
		return 0;
	return stash(sk, uaddr);
}

SEC("?kretprobe/tcp_v4_connect")
int BPF_KRETPROBE(kretprobe_v4, int ret)
{
	return unstash(ctx, ret);
}

SEC("?kprobe/tcp_v6_connect")
int BPF_KPROBE(kprobe_v6, struct sock *sk, struct sockaddr *uaddr)
{
	return stash(sk, uaddr);
}

SEC("?kretprobe/tcp_v6_connect")
int BPF_KRETPROBE(kretprobe_v6, int ret)
{
	return unstash(ctx, ret);
}

/* --- tracepoint backend, and the handshake's end for the others --- */

/*
 * tracepoint_backend: this is the only hook (tp_set_state).  Otherwise
 * (tp_handshake_end) the fentry/kprobe hooks see the call's return, and
 * this one only reports at the handshake's end when asked to.
 */
static __always_inline int on_state(struct trace_event_raw_inet_sock_set_state *ctx, bool tracepoint_backend)
{
	struct sock *sk = (struct sock *)ctx->skaddr;
	struct outcome o = {};
	struct who w, *found;

	if (!tracepoint_backend && !report_at_end)
		return 0;
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
	if (!ctx->sport) {
		/*
		 * No source port: tcp_v{4,6}_connect failed after SYN_SENT (e.g.
		 * no free port), no SYN was sent.  The return-value hooks report
		 * these with their error; here only the failure itself is known.
		 */
		if (!tracepoint_backend || !report_failed)
			return 0;
		return emit_for(ctx, sk, &w, 0, &o);
	}
	if (ctx->newstate == TCP_ESTABLISHED) {
		o.known = true;
		o.lat_ns = bpf_ktime_get_ns() - w.ts_ns;
	} else {
		/* tcp_done_with_error() (tcp_reset() before 6.10) sets sk_err before CLOSE */
		o.ret = -BPF_CORE_READ(sk, sk_err);
		o.known = o.ret != 0;
	}
	/*
	 * ESTABLISHED, or CLOSE (refused, timed out): the addresses are still
	 * set, but on CLOSE the port is already released (skc_num is 0) — the
	 * tracepoint's own sport is taken from inet_sport, which stays.
	 */
	return emit_for(ctx, sk, &w, ctx->sport, &o);
}

SEC("?tracepoint/sock/inet_sock_set_state")
int tp_set_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	return on_state(ctx, true);
}

SEC("?tracepoint/sock/inet_sock_set_state")
int tp_handshake_end(struct trace_event_raw_inet_sock_set_state *ctx)
{
	return on_state(ctx, false);
}
