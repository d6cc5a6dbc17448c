// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * A socket filter for progtrace's tests: attached to the test's own UDP
 * socket, it runs once per datagram that socket receives and nowhere else,
 * so its invocations can be counted exactly.  Keeps the whole datagram.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

SEC("socket")
int kk_sockfilter(struct __sk_buff *skb)
{
	return skb->len;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
