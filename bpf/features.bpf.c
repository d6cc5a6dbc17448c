// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Tiny programs that features.py loads and attaches one at a time to learn
 * what this kernel allows.  Attach targets are set from user space.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

SEC("?kprobe")
int BPF_KPROBE(probe_kprobe)
{
	return 0;
}

SEC("?kretprobe")
int BPF_KRETPROBE(probe_kretprobe)
{
	return 0;
}

SEC("?fentry")
int BPF_PROG(probe_fentry)
{
	return 0;
}

SEC("?fexit")
int BPF_PROG(probe_fexit)
{
	return 0;
}

SEC("?tracepoint/syscalls/sys_enter_getppid")
int probe_tracepoint(void *ctx)
{
	return 0;
}

SEC("?tp_btf/sys_enter")
int BPF_PROG(probe_tp_btf)
{
	return 0;
}

SEC("?raw_tp/sys_enter")
int probe_raw_tp(void *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
