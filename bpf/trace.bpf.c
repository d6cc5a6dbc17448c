// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * trace: one generic program per hook kind, driven by a fetch plan.
 *
 * User space compiles each probe spec (kprobe_events syntax, BTF names or a
 * tracepoint with its fields) into a `struct plan` stored in `plans` at the
 * probe's index, and attaches the program with that index as attach cookie.
 * So any function and any fetch list run without a compiler:
 *   kprobe/kretprobe  a fetch starts from a register of pt_regs ($argN,
 *                     %REG, $retval, $stackN), follows up to MAX_DEREF
 *                     pointer offsets and stores an integer or a string
 *   tracepoint        the raw record is copied; user space decodes its
 *                     fields from tracefs's format file
 * Filters (field OP constant, all must hold) run here, on the fetched values.
 *
 * In metrics mode (kk_metrics, `kprobekit exporter`) a hit that passes the
 * filters is counted in `counts` under its probe and the label values that
 * `label_plans` names, instead of being sent.
 */
#include "kk_stack.bpf.h"
#include "kk_metrics.bpf.h"

#define MAX_PROBES	64
#define MAX_FETCH	8
#define MAX_DEREF	4
#define MAX_FILTER	4
#define DATA_MAX	512	/* fetched values / raw record; a power of two */
#define STR_MAX		128	/* longest string fetched */
#define REG_WORDS	32	/* struct pt_regs as u64 words (x86-64: 21) */

enum fetch_src { KK_SRC_REG = 0, KK_SRC_COMM = 1 };
enum fetch_kind { KK_FETCH_INT = 0, KK_FETCH_STR = 1, KK_FETCH_USTR = 2 };
enum filter_op { KK_EQ = 0, KK_NE, KK_LT, KK_LE, KK_GT, KK_GE, KK_AND };

struct fetch {
	__u8 src;		/* enum fetch_src */
	__u8 kind;		/* enum fetch_kind */
	__u8 size;		/* integers: 1, 2, 4 or 8 bytes */
	__u8 nderef;		/* offsets used in offs[] */
	__u16 reg;		/* u64 word of pt_regs the fetch starts from */
	__u16 dst;		/* where the value goes in event.data */
	/* value = reg; all but the last: value = *(u64 *)(value + off); last: read at value + off */
	__s32 offs[MAX_DEREF];
};

struct filter {
	__u16 off;		/* in event.data */
	__u8 size;
	__u8 op;		/* enum filter_op */
	__u8 is_signed;
	__u8 pad[3];
	__s64 value;
};

struct plan {
	__u32 nfetch;
	__u32 nfilter;
	__u32 raw_size;		/* tracepoints: bytes of record to copy */
	__u32 pad;
	struct fetch fetch[MAX_FETCH];
	struct filter filter[MAX_FILTER];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_PROBES);
	__type(key, __u32);
	__type(value, struct plan);
} plans SEC(".maps");

const volatile bool want_kstack = false;	/* -K */

struct event {
	__u64 ts_ns;
	__u32 pid;
	__u32 tid;
	__u32 probe;		/* index of the spec */
	kk_stack_t kstack;	/* -K; else -ENODATA */
	char comm[TASK_COMM_LEN];
	__u8 data[DATA_MAX + STR_MAX];	/* the tail keeps every masked write in bounds */
};

/* events are built in kk_scratch and copied out whole, so kk_reserve/kk_submit go unused */
#pragma clang diagnostic ignored "-Wunused-function"
KK_EVENTS(struct event)

struct regs_buf {
	__u64 w[REG_WORDS];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct regs_buf);
} regs_scratch SEC(".maps");

/* Metrics mode: which fetched values label a probe's count. */
#define MAX_LABELS	4
#define LABEL_MAX	16	/* bytes kept of a label value; strings are cut there */

enum label_kind { KK_LABEL_INT = 0, KK_LABEL_BYTES = 1, KK_LABEL_STR = 2 };

struct label {
	__u16 off;		/* in event.data */
	__u8 size;		/* integers: 1, 2, 4 or 8; bytes: up to LABEL_MAX */
	__u8 kind;		/* enum label_kind */
};

struct label_plan {
	__u32 nlabels;
	struct label label[MAX_LABELS];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_PROBES);
	__type(key, __u32);
	__type(value, struct label_plan);
} label_plans SEC(".maps");

struct count_key {
	__u32 probe;
	__u32 pad;
	__u8 value[MAX_LABELS][LABEL_MAX];	/* integers as u64, little-endian */
};

/* new label combinations beyond this are counted as lost: cardinality stays bounded */
KK_COUNTER(counts, struct count_key, 10240);

/* The event under construction: always built in the per-CPU slot, then copied out. */
static __always_inline struct event *start_event(struct plan **planp, void *ctx)
{
	__u32 zero = 0, id = (__u32)bpf_get_attach_cookie(ctx);
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct event *e;

	if (!kk_pid_wanted(pid_tgid >> 32))
		return NULL;
	*planp = bpf_map_lookup_elem(&plans, &id);
	e = bpf_map_lookup_elem(&kk_scratch, &zero);
	if (!*planp || !e)
		return NULL;
	e->ts_ns = bpf_ktime_get_ns();
	e->pid = pid_tgid >> 32;
	e->tid = (__u32)pid_tgid;
	e->probe = id;
	e->kstack = want_kstack ? kk_kernel_stack(ctx) : -61;	/* ENODATA */
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	return e;
}

static __always_inline __u64 load_int(const __u8 *p, __u8 size, bool is_signed)
{
	switch (size) {
	case 1: return is_signed ? (__u64)(__s64)*(__s8 *)p : *(__u8 *)p;
	case 2: return is_signed ? (__u64)(__s64)*(__s16 *)p : *(__u16 *)p;
	case 4: return is_signed ? (__u64)(__s64)*(__s32 *)p : *(__u32 *)p;
	default: return *(__u64 *)p;
	}
}

static __always_inline bool filters_pass(struct plan *plan, struct event *e)
{
	for (int i = 0; i < MAX_FILTER; i++) {
		struct filter *f = &plan->filter[i];
		__u64 v;
		bool ok;

		if (i >= plan->nfilter)
			break;
		v = load_int(&e->data[f->off & (DATA_MAX - 1)], f->size, f->is_signed);
		switch (f->op) {
		case KK_EQ: ok = v == (__u64)f->value; break;
		case KK_NE: ok = v != (__u64)f->value; break;
		case KK_AND: ok = (v & (__u64)f->value) != 0; break;
		default:
			if (f->is_signed) {
				__s64 s = (__s64)v;
				ok = f->op == KK_LT ? s < f->value : f->op == KK_LE ? s <= f->value :
				     f->op == KK_GT ? s > f->value : s >= f->value;
			} else {
				__u64 c = (__u64)f->value;
				ok = f->op == KK_LT ? v < c : f->op == KK_LE ? v <= c :
				     f->op == KK_GT ? v > c : v >= c;
			}
		}
		if (!ok)
			return false;
	}
	return true;
}

static __always_inline int count_event(struct event *e)
{
	struct label_plan *lp = bpf_map_lookup_elem(&label_plans, &e->probe);
	struct count_key key;

	if (!lp)
		return 0;
	__builtin_memset(&key, 0, sizeof(key));
	key.probe = e->probe;
	for (int i = 0; i < MAX_LABELS; i++) {
		struct label *l = &lp->label[i];
		__u8 *src;
		__u32 n;

		if (i >= lp->nlabels)
			break;
		src = &e->data[l->off & (DATA_MAX - 1)];
		if (l->kind == KK_LABEL_STR) {
			bpf_probe_read_kernel_str(key.value[i], LABEL_MAX, src);
		} else if (l->kind == KK_LABEL_BYTES) {
			n = l->size;
			if (n > LABEL_MAX)
				n = LABEL_MAX;
			bpf_probe_read_kernel(key.value[i], n, src);
		} else {
			*(__u64 *)key.value[i] = load_int(src, l->size, false);
		}
	}
	kk_count(&counts, &key, 1);
	return 0;
}

static __always_inline int finish_event(void *ctx, struct plan *plan, struct event *e)
{
	if (!filters_pass(plan, e))
		return 0;
	if (kk_metrics)
		return count_event(e);
	if (kk_perfbuf ? bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, e, sizeof(*e))
		       : kk_ringbuf_output(e, sizeof(*e)))
		__sync_fetch_and_add(&kk_lost, 1);	/* see kk_submit() */
	return 0;
}

static __always_inline int fetch_regs(struct pt_regs *ctx)
{
	struct plan *plan;
	struct event *e = start_event(&plan, ctx);
	__u32 zero = 0;
	struct regs_buf *regs;

	if (!e)
		return 0;
	regs = bpf_map_lookup_elem(&regs_scratch, &zero);
	if (!regs)
		return 0;
	bpf_probe_read_kernel(regs->w, sizeof(struct pt_regs) < sizeof(regs->w) ?
			      sizeof(struct pt_regs) : sizeof(regs->w), ctx);

	for (int i = 0; i < MAX_FETCH; i++) {
		struct fetch *f = &plan->fetch[i];
		__u8 *dst;
		__u64 v, addr;
		__u32 n;

		if (i >= plan->nfetch)
			break;
		dst = &e->data[f->dst & (DATA_MAX - 1)];
		if (f->src == KK_SRC_COMM) {
			bpf_get_current_comm(dst, TASK_COMM_LEN);
			continue;
		}
		v = regs->w[f->reg & (REG_WORDS - 1)];
		n = f->nderef;
		for (int j = 0; j < MAX_DEREF - 1; j++) {
			if (j + 1 >= n)
				break;
			if (bpf_probe_read_kernel(&v, sizeof(v), (void *)(v + f->offs[j])))
				v = 0;
		}
		addr = n ? v + f->offs[(n - 1) & (MAX_DEREF - 1)] : v;
		if (f->kind == KK_FETCH_STR) {
			bpf_probe_read_kernel_str(dst, STR_MAX, (void *)addr);
		} else if (f->kind == KK_FETCH_USTR) {
			bpf_probe_read_user_str(dst, STR_MAX, (void *)addr);
		} else if (n) {
			__u32 size = f->size;

			if (size > 8)
				size = 8;
			v = 0;	/* little-endian: a short read fills the low bytes */
			bpf_probe_read_kernel(&v, size, (void *)addr);
			*(__u64 *)dst = v;
		} else {
			*(__u64 *)dst = v;
		}
	}
	return finish_event(ctx, plan, e);
}

SEC("?kprobe")
int kprobe_fetch(struct pt_regs *ctx)
{
	return fetch_regs(ctx);
}

SEC("?kretprobe")
int kretprobe_fetch(struct pt_regs *ctx)
{
	return fetch_regs(ctx);
}

SEC("?tracepoint")
int tracepoint_raw(void *ctx)
{
	struct plan *plan;
	struct event *e = start_event(&plan, ctx);
	__u32 size;

	if (!e)
		return 0;
	/*
	 * The whole buffer when readable (it takes the __data_loc strings after
	 * the fixed part), else just the fixed part: a failed read zeroes it all.
	 */
	if (bpf_probe_read_kernel(e->data, DATA_MAX, ctx)) {
		size = plan->raw_size;
		if (size > DATA_MAX)
			size = DATA_MAX;
		bpf_probe_read_kernel(e->data, size, ctx);
	}
	return finish_event(ctx, plan, e);
}
