/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Kernel stacks for events: a program stores kk_kernel_stack(ctx) in a
 * kk_stack_t member, an id into the stack-trace map kk_stacks; user space
 * (kprobekit.stacks) reads the addresses there and names them from
 * /proc/kallsyms.  The map keeps one copy of each distinct stack, so a hot
 * path that always drops from the same place costs one entry.
 */
#ifndef KK_STACK_BPF_H
#define KK_STACK_BPF_H

#include "kprobekit.bpf.h"

#define KK_STACK_DEPTH	127	/* PERF_MAX_STACK_DEPTH */

/* >= 0: id in kk_stacks; < 0: -errno from bpf_get_stackid (-EEXIST: map full or hash collision) */
typedef __s32 kk_stack_t;

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, KK_STACK_DEPTH * sizeof(__u64));
	__uint(max_entries, 1024);	/* user space resizes (down to 1 when stacks are off) */
} kk_stacks SEC(".maps");

static __always_inline kk_stack_t kk_kernel_stack(void *ctx)
{
	/* no BPF_F_REUSE_STACKID: an id, once handed out, keeps its stack until user space is done */
	return bpf_get_stackid(ctx, &kk_stacks, 0);
}

#endif /* KK_STACK_BPF_H */
