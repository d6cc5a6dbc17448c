/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * What the TCP tools share in BPF: the -4/-6/-L/-D filters, and a connection's
 * addresses and ports (struct kk_flow) read from a socket or from a packet's
 * headers.  The Python side is kprobekit/tcp.py.
 */
#ifndef KK_TCP_BPF_H
#define KK_TCP_BPF_H

#include "kprobekit.bpf.h"

#define IPPROTO_TCP	6
#define ETH_P_IP	0x0800
#define ETH_P_IPV6	0x86DD

const volatile __u16 filter_family = 0;			/* -4/-6: AF_INET, AF_INET6 or 0 */
const volatile __u16 filter_lports[KK_MAX_PORTS] = {};	/* -L, 0-terminated */
const volatile __u16 filter_rports[KK_MAX_PORTS] = {};	/* -D */

static __always_inline bool kk_tcp_wanted(__u16 family, __u16 lport, __u16 rport)
{
	if (filter_family && family != filter_family)
		return false;
	return kk_port_in(filter_lports, lport) && kk_port_in(filter_rports, rport);
}

/* One side's view of a connection; also a map key (counts per flow), so no holes. */
struct kk_flow {
	kk_addr_t laddr;
	kk_addr_t raddr;
	__u16 lport;
	__u16 rport;
	__u16 family;
	__u8 ip;		/* 4 or 6, for the kk_addr_t decoder */
	__u8 pad;
};

static __always_inline bool kk_flow_wanted(const struct kk_flow *f)
{
	return kk_tcp_wanted(f->family, f->lport, f->rport);
}

/* From a full socket; false unless IPv4/IPv6. */
static __always_inline bool kk_flow_from_sk(struct kk_flow *f, const struct sock *sk)
{
	f->family = kk_sock_family(sk);
	if (f->family != AF_INET && f->family != AF_INET6)
		return false;
	kk_read_sock_addrs(sk, f->family, f->laddr, f->raddr);
	f->lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	f->rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	f->ip = f->family == AF_INET6 ? 6 : 4;
	return true;
}

/*
 * From a packet's IP and TCP headers (skb->head + network_header/transport_header,
 * set by ip_rcv/ipv6_rcv on the way in and by the IP layer on the way out):
 * "local" is the packet's source.  *tcpflags gets the header's flag byte.
 * False unless TCP over IPv4/IPv6.
 */
static __always_inline bool kk_flow_from_skb(struct kk_flow *f, struct sk_buff *skb, __u8 *tcpflags)
{
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header), th = BPF_CORE_READ(skb, transport_header);
	__u16 proto = bpf_ntohs(BPF_CORE_READ(skb, protocol));
	struct tcphdr tcp;
	__u8 l4;

	if (proto == ETH_P_IP) {
		struct iphdr ip;

		if (bpf_probe_read_kernel(&ip, sizeof(ip), head + nh))
			return false;
		l4 = ip.protocol;
		f->family = AF_INET;
		__builtin_memcpy(f->laddr, &ip.saddr, 4);
		__builtin_memcpy(f->raddr, &ip.daddr, 4);
	} else if (proto == ETH_P_IPV6) {
		struct ipv6hdr ip6;

		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), head + nh))
			return false;
		l4 = ip6.nexthdr;
		f->family = AF_INET6;
		__builtin_memcpy(f->laddr, &ip6.saddr, 16);
		__builtin_memcpy(f->raddr, &ip6.daddr, 16);
	} else {
		return false;
	}
	if (l4 != IPPROTO_TCP || th == (__u16)~0U || th <= nh)
		return false;
	if (bpf_probe_read_kernel(&tcp, sizeof(tcp), head + th))
		return false;
	f->ip = f->family == AF_INET6 ? 6 : 4;
	f->lport = bpf_ntohs(tcp.source);
	f->rport = bpf_ntohs(tcp.dest);
	/* the flag byte follows doff/res1 (byte 13 of the header) */
	*tcpflags = ((__u8 *)&tcp)[13];
	return true;
}

#endif /* KK_TCP_BPF_H */
