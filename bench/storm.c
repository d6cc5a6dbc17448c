// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Load generators for the benchmarks, in C so that the generator's own cost
 * is small next to what a tracer adds.
 *   storm connect N [SECONDS]   N connect/accept/close cycles on 127.0.0.1;
 *                               prints the elapsed wall time in ns
 *   storm getppid N [SECONDS]   N getppid() calls (bench/bpf/events.bpf.c
 *                               turns each into a ring buffer record)
 * Both stop early after SECONDS (default 30), so a run is bounded in count
 * and time.  The client closes with SO_LINGER 0 (an RST, no TIME_WAIT), so
 * tens of thousands of cycles do not exhaust ephemeral ports.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int connect_storm(long n, long long limit_ns)
{
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(addr);
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	int one = 1, srv = socket(AF_INET, SOCK_STREAM, 0);
	long long t0, t;
	long i;

	setsockopt(srv, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (srv < 0 || bind(srv, (struct sockaddr *)&addr, len) || listen(srv, 128) ||
	    getsockname(srv, (struct sockaddr *)&addr, &len)) {
		perror("storm: listen on 127.0.0.1");
		return 1;
	}
	t0 = now_ns();
	for (i = 0; i < n; i++) {
		int c = socket(AF_INET, SOCK_STREAM, 0), a;

		if (c < 0 || connect(c, (struct sockaddr *)&addr, sizeof(addr))) {
			perror("storm: connect");
			return 1;
		}
		a = accept(srv, NULL, NULL);
		if (a < 0) {
			perror("storm: accept");
			return 1;
		}
		setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		close(c);
		close(a);
		if ((i & 255) == 0 && now_ns() - t0 > limit_ns)
			break;
	}
	t = now_ns() - t0;
	printf("%ld %lld\n", i, t);
	return 0;
}

static int getppid_storm(long n, long long limit_ns)
{
	long long t0 = now_ns();
	long i;

	for (i = 0; i < n; i++) {
		syscall(SYS_getppid);
		if ((i & 4095) == 0 && now_ns() - t0 > limit_ns)
			break;
	}
	printf("%ld %lld\n", i, now_ns() - t0);
	return 0;
}

int main(int argc, char **argv)
{
	long n;
	long long limit_ns;

	if (argc < 3) {
		fprintf(stderr, "usage: storm connect|getppid N [SECONDS]\n");
		return 2;
	}
	n = atol(argv[2]);
	limit_ns = (argc > 3 ? atof(argv[3]) : 30.0) * 1e9;
	if (!strcmp(argv[1], "connect"))
		return connect_storm(n, limit_ns);
	if (!strcmp(argv[1], "getppid"))
		return getppid_storm(n, limit_ns);
	fprintf(stderr, "storm: unknown mode %s\n", argv[1]);
	return 2;
}
