/* test_relay.c - the raw telegram relay on its own: two clients get byte-identical
 * telegrams, a client that never reads is dropped while the other keeps receiving, the client
 * limit refuses extra clients, and bytes sent by a client are ignored. */
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>

#include "loop.h"
#include "relay.h"

static void on_quit(struct loop_timer *t, void *ud)
{
	(void)t;
	loop_quit(ud, 0);
}

/* Runs the loop for about ms milliseconds. */
static void spin(struct loop *l, unsigned ms)
{
	struct loop_timer *t;
	assert_int_equal(loop_timer_new(l, on_quit, l, &t), 0);
	loop_timer_arm(t, ms, 0);
	assert_int_equal(loop_run(l), 0);
	loop_timer_free(t);
}

static int client(int port, int rcvbuf)
{
	struct sockaddr_in sa = {.sin_family = AF_INET,
	                         .sin_port = htons((uint16_t)port),
	                         .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	if (rcvbuf)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

/* Reads what is there without waiting. */
static size_t drain(int fd, char *buf, size_t cap)
{
	size_t got = 0;
	for (;;) {
		ssize_t n = recv(fd, buf + got, cap - got, MSG_DONTWAIT);
		if (n <= 0)
			return got;
		got += (size_t)n;
		if (got == cap)
			return got;
	}
}

static const char frame[] = "/XXX5TEST\r\n\r\n1-0:1.8.1(001234.567*kWh)\r\n!ABCD\r\n";

static void test_two_clients_identical(void **state)
{
	struct loop *l;
	struct relay *r;
	struct relay_stats st;
	static char a[65536], b[65536], want[65536];
	size_t na = 0, nb = 0, nw = 0;
	(void)state;
	assert_int_equal(loop_new(&l), 0);
	assert_int_equal(relay_new(l, "127.0.0.1", 0, &r), 0);
	int port = relay_port(r);
	assert_true(port > 0);
	int ca = client(port, 0), cb = client(port, 0);
	spin(l, 50);
	relay_get_stats(r, &st);
	assert_int_equal(st.clients, 2);
	assert_int_equal(write(cb, "ignored input\n", 14), 14); /* read-only: discarded */
	for (int i = 0; i < 100; i++) {
		char f[128];
		int n = snprintf(f, sizeof(f), "/T%03d\r\n\r\n1-0:1.8.1(%06d.000*kWh)\r\n!%04X\r\n",
		                 i, i, i);
		relay_send(r, (const uint8_t *)f, (size_t)n);
		memcpy(want + nw, f, (size_t)n);
		nw += (size_t)n;
		spin(l, 1);
		na += drain(ca, a + na, sizeof(a) - na);
		nb += drain(cb, b + nb, sizeof(b) - nb);
	}
	for (int i = 0; i < 50 && (na < nw || nb < nw); i++) {
		spin(l, 5);
		na += drain(ca, a + na, sizeof(a) - na);
		nb += drain(cb, b + nb, sizeof(b) - nb);
	}
	assert_int_equal(na, nw);
	assert_int_equal(nb, nw);
	assert_memory_equal(a, want, nw);
	assert_memory_equal(b, want, nw);
	relay_get_stats(r, &st);
	assert_int_equal(st.telegrams, 100);
	assert_int_equal(st.dropped, 0);
	/* a client that leaves is noticed */
	close(ca);
	spin(l, 20);
	relay_get_stats(r, &st);
	assert_int_equal(st.clients, 1);
	close(cb);
	relay_free(r);
	loop_free(l);
}

static void test_slow_client_dropped(void **state)
{
	struct loop *l;
	struct relay *r;
	struct relay_stats st;
	static char big[4096], buf[1 << 16];
	size_t sent = 0, got = 0;
	(void)state;
	memset(big, 'x', sizeof(big));
	assert_int_equal(loop_new(&l), 0);
	assert_int_equal(relay_new(l, "127.0.0.1", 0, &r), 0);
	int slow = client(relay_port(r), 4096), fast = client(relay_port(r), 0);
	spin(l, 50);
	/* bounded: 64 MiB at most; the slow client's socket buffers fill long before */
	for (int i = 0; i < 16384; i++) {
		relay_send(r, (const uint8_t *)big, sizeof(big));
		sent += sizeof(big);
		spin(l, 0);
		got += drain(fast, buf, sizeof(buf));
		relay_get_stats(r, &st);
		if (st.dropped)
			break;
	}
	relay_get_stats(r, &st);
	assert_int_equal(st.dropped, 1);
	assert_int_equal(st.clients, 1);
	for (int i = 0; i < 100 && got < sent; i++) {
		spin(l, 2);
		got += drain(fast, buf, sizeof(buf));
	}
	assert_int_equal(got, sent); /* the reading client lost nothing */
	/* the dropped client sees the end of the stream */
	struct timeval tv = {.tv_sec = 5};
	setsockopt(slow, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	ssize_t n;
	size_t total = 0;
	while ((n = recv(slow, buf, sizeof(buf), 0)) > 0 && total <= sent)
		total += (size_t)n;
	assert_true(n == 0 || (n < 0 && errno == ECONNRESET));
	assert_true(total < sent);
	close(slow);
	close(fast);
	relay_free(r);
	loop_free(l);
}

static void test_client_limit(void **state)
{
	struct loop *l;
	struct relay *r;
	struct relay_stats st;
	int fds[RELAY_CLIENTS_MAX + 2];
	(void)state;
	assert_int_equal(loop_new(&l), 0);
	assert_int_equal(relay_new(l, "127.0.0.1", 0, &r), 0);
	for (int i = 0; i < RELAY_CLIENTS_MAX + 2; i++) {
		fds[i] = client(relay_port(r), 0);
		spin(l, 5); /* accept as they come: the listen backlog is small */
	}
	spin(l, 50);
	relay_get_stats(r, &st);
	assert_int_equal(st.clients, RELAY_CLIENTS_MAX);
	assert_int_equal(st.refused, 2);
	relay_send(r, (const uint8_t *)frame, sizeof(frame) - 1);
	char buf[256];
	spin(l, 10);
	assert_int_equal(recv(fds[0], buf, sizeof(buf), MSG_DONTWAIT), (ssize_t)sizeof(frame) - 1);
	for (int i = 0; i < RELAY_CLIENTS_MAX + 2; i++)
		close(fds[i]);
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	relay_write_metrics(r, f);
	fclose(f);
	assert_non_null(strstr(text, "p1d_relay_refused_total 2\n"));
	free(text);
	relay_free(r);
	loop_free(l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_two_clients_identical),
	        cmocka_unit_test(test_slow_client_dropped),
	        cmocka_unit_test(test_client_limit),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
