/* test_mdns.c - the pure part of the mDNS announcement (loopback test, the decision whether
 * to announce, TXT strings and service name, the serial shared with GET /api), the AvahiPoll
 * adapter on a real loop (two watches on one fd, events, frees from inside callbacks, absolute
 * timeouts), and an announcer that cannot reach D-Bus: not an error, freed cleanly. Every
 * loop test arms a guard timer so that a broken adapter fails instead of hanging. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "http.h"
#include "loop.h"
#include "mdns.h"
#include "mdns_poll.h"

#include <arpa/inet.h>
#include <avahi-common/watch.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#define GUARD_CODE 99

static struct sockaddr_storage v4(const char *addr, int port)
{
	struct sockaddr_storage ss = {0};
	struct sockaddr_in *in = (struct sockaddr_in *)&ss;
	in->sin_family = AF_INET;
	in->sin_port = htons((uint16_t)port);
	assert_int_equal(inet_pton(AF_INET, addr, &in->sin_addr), 1);
	return ss;
}

static struct sockaddr_storage v6(const char *addr, int port)
{
	struct sockaddr_storage ss = {0};
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
	in6->sin6_family = AF_INET6;
	in6->sin6_port = htons((uint16_t)port);
	assert_int_equal(inet_pton(AF_INET6, addr, &in6->sin6_addr), 1);
	return ss;
}

static bool loopback(struct sockaddr_storage ss)
{
	return mdns_addr_is_loopback((const struct sockaddr *)&ss);
}

static void test_loopback(void **state)
{
	(void)state;
	assert_true(loopback(v4("127.0.0.1", 80)));
	assert_true(loopback(v4("127.255.0.9", 80)));
	assert_true(loopback(v6("::1", 80)));
	assert_true(loopback(v6("::ffff:127.0.0.1", 80)));
	assert_false(loopback(v4("0.0.0.0", 80)));
	assert_false(loopback(v4("192.0.2.7", 80)));
	assert_false(loopback(v4("128.0.0.1", 80)));
	assert_false(loopback(v6("::", 80)));
	assert_false(loopback(v6("fe80::1", 80)));
	assert_false(loopback(v6("::ffff:192.0.2.7", 80)));
}

static struct mdns_opts opts(const struct sockaddr_storage *addrs, size_t n)
{
	return (struct mdns_opts){.homewizard = true,
	                          .announce = true,
	                          .serial = "711abd71bb52",
	                          .product_name = "P1 meter (p1d)",
	                          .product_type = "HWE-P1",
	                          .addrs = addrs,
	                          .n_addrs = n};
}

static void test_decide(void **state)
{
	(void)state;
	struct sockaddr_storage a[4] = {v4("127.0.0.1", 8080), v6("::1", 8080), v4("0.0.0.0", 80),
	                                v6("::", 81)};
	struct sockaddr_storage unix_addr = {.ss_family = AF_UNIX};
	struct mdns_opts o = opts(a, 4);
	size_t i = 77;

	assert_int_equal(mdns_decide(&o, &i), MDNS_ANNOUNCE);
	assert_int_equal(i, 2); /* the first address that is not loopback */
	o.n_addrs = 2;
	i = 77;
	assert_int_equal(mdns_decide(&o, &i), MDNS_LOOPBACK_ONLY);
	assert_int_equal(i, 77); /* written for MDNS_ANNOUNCE only */
	o = opts(a + 3, 1);
	assert_int_equal(mdns_decide(&o, &i), MDNS_ANNOUNCE);
	assert_int_equal(i, 0);
	o.homewizard = false;
	assert_int_equal(mdns_decide(&o, &i), MDNS_OFF);
	o = opts(a + 2, 1);
	o.announce = false;
	assert_int_equal(mdns_decide(&o, &i), MDNS_OFF);
	o = opts(a, 0); /* HTTP listens nowhere */
	assert_int_equal(mdns_decide(&o, &i), MDNS_OFF);
	o = opts(&unix_addr, 1); /* not an IP socket: nothing to announce, and no notice */
	assert_int_equal(mdns_decide(&o, &i), MDNS_OFF);
}

static void test_txt(void **state)
{
	(void)state;
	char txt[MDNS_TXT_N][MDNS_TXT_LEN];
	char long_name[MDNS_TXT_LEN];
	struct mdns_opts o = opts(NULL, 0);

	assert_int_equal(mdns_txt(&o, txt), MDNS_TXT_N);
	assert_string_equal(txt[0], "api_enabled=1");
	assert_string_equal(txt[1], "path=/api/v1");
	assert_string_equal(txt[2], "serial=711abd71bb52");
	assert_string_equal(txt[3], "product_name=P1 meter (p1d)");
	assert_string_equal(txt[4], "product_type=HWE-P1");

	const char *bad_serials[] = {"", "711abd71bb5", "711abd71bb52a", "711abd71bb5g", NULL};
	for (size_t k = 0; k < sizeof(bad_serials) / sizeof(bad_serials[0]); k++) {
		o.serial = bad_serials[k];
		assert_int_equal(mdns_txt(&o, txt), -EINVAL);
	}
	o = opts(NULL, 0);
	o.product_name = "P1\nmeter";
	assert_int_equal(mdns_txt(&o, txt), -EINVAL);
	o.product_name = "";
	assert_int_equal(mdns_txt(&o, txt), -EINVAL);
	memset(long_name, 'x', sizeof(long_name) - 1);
	long_name[sizeof(long_name) - 1] = '\0';
	o.product_name = long_name; /* "product_name=" does not fit before it */
	assert_int_equal(mdns_txt(&o, txt), -EINVAL);
	o.product_name = long_name + sizeof("product_name=") - 1; /* just fits */
	assert_int_equal(mdns_txt(&o, txt), MDNS_TXT_N);
	assert_int_equal(strlen(txt[3]), MDNS_TXT_LEN - 1);
}

static void test_service_name(void **state)
{
	(void)state;
	char name[MDNS_NAME_LEN];

	assert_int_equal(mdns_service_name("711abd71bb52", name, sizeof(name)), 0);
	assert_string_equal(name, "p1meter-71BB52");
	assert_int_equal(mdns_service_name("711abd71bb52", name, 14), -EINVAL);
	assert_int_equal(mdns_service_name("711abd71bb52", name, 15), 0);
	assert_int_equal(mdns_service_name("not hex here", name, sizeof(name)), -EINVAL);
}

/* The serial announced is the one GET /api gives. */
static void test_serial_matches_api(void **state)
{
	(void)state;
	char serial[API_HW_SERIAL_LEN + 1], txt[MDNS_TXT_N][MDNS_TXT_LEN], want[64];
	struct http_meter_view view = {.name = "main"};
	struct mdns_opts o = opts(NULL, 0);
	char *info = api_hw_info(&view);
	json_t *j = json_loads(info, 0, NULL);

	api_hw_serial("main", serial);
	o.serial = serial;
	o.product_name = API_HW_PRODUCT_NAME;
	o.product_type = API_HW_PRODUCT_TYPE;
	assert_int_equal(mdns_txt(&o, txt), MDNS_TXT_N);
	assert_non_null(j);
	snprintf(want, sizeof(want), "serial=%s", json_string_value(json_object_get(j, "serial")));
	assert_string_equal(txt[2], want);
	snprintf(want, sizeof(want), "product_name=%s",
	         json_string_value(json_object_get(j, "product_name")));
	assert_string_equal(txt[3], want);
	snprintf(want, sizeof(want), "product_type=%s",
	         json_string_value(json_object_get(j, "product_type")));
	assert_string_equal(txt[4], want);
	api_hw_serial("kitchen", serial);
	assert_string_not_equal(txt[2] + 7, serial);
	json_decref(j);
	free(info);
}

/* ---- the AvahiPoll adapter ---- */

static void on_guard(struct loop_timer *t, void *ud)
{
	(void)t;
	loop_quit(ud, GUARD_CODE);
}

struct fixture {
	struct loop *l;
	struct loop_timer *guard;
	struct mdns_poll *p;
	const AvahiPoll *api;
	int sv[2]; /* a socket pair: sv[0] is watched */
};

static void setup_fixture(struct fixture *f)
{
	assert_int_equal(loop_new(&f->l), 0);
	assert_int_equal(loop_timer_new(f->l, on_guard, f->l, &f->guard), 0);
	loop_timer_arm(f->guard, 5000, 0);
	assert_int_equal(mdns_poll_new(f->l, &f->p), 0);
	f->api = mdns_poll_api(f->p);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, f->sv),
	                 0);
}

static void teardown_fixture(struct fixture *f)
{
	assert_null(mdns_poll_free(f->p)); /* frees what the test left registered */
	loop_timer_free(f->guard);
	loop_free(f->l);
	close(f->sv[0]);
	close(f->sv[1]);
}

struct seen {
	struct fixture *f;
	AvahiWatch *w;
	AvahiWatchEvent events, got_events;
	int calls;
	bool free_self, quit;
	AvahiWatch *free_other; /* freed from inside this watch's callback */
};

static void on_watch(AvahiWatch *w, int fd, AvahiWatchEvent events, void *ud)
{
	struct seen *s = ud;
	const AvahiPoll *api = s->f->api;

	assert_ptr_equal(w, s->w);
	assert_int_equal(fd, s->f->sv[0]);
	s->calls++;
	s->events = events;
	s->got_events = api->watch_get_events(w);
	if (s->free_other) {
		api->watch_free(s->free_other);
		s->free_other = NULL;
	}
	if (s->free_self) {
		api->watch_free(w);
		s->w = NULL;
	}
	if (s->quit)
		loop_quit(s->f->l, 0);
}

static void test_poll_two_watches_one_fd(void **state)
{
	(void)state;
	struct fixture f;
	setup_fixture(&f);
	struct seen in = {.f = &f}, out = {.f = &f, .quit = true};

	in.w = f.api->watch_new(f.api, f.sv[0], AVAHI_WATCH_IN, on_watch, &in);
	out.w = f.api->watch_new(f.api, f.sv[0], AVAHI_WATCH_OUT, on_watch, &out);
	assert_non_null(in.w);
	assert_non_null(out.w);
	/* writable at once, nothing to read yet */
	assert_int_equal(loop_run(f.l), 0);
	assert_int_equal(in.calls, 0);
	assert_int_equal(out.calls, 1);
	assert_int_equal(out.events, AVAHI_WATCH_OUT);
	assert_int_equal(out.got_events, AVAHI_WATCH_OUT);   /* watch_get_events inside */
	assert_int_equal(f.api->watch_get_events(out.w), 0); /* and 0 outside a dispatch */
	/* now readable too: both are called; then the reader stops the loop */
	f.api->watch_update(out.w, 0);
	assert_int_equal(write(f.sv[1], "x", 1), 1);
	in.quit = true;
	assert_int_equal(loop_run(f.l), 0);
	assert_int_equal(in.calls, 1);
	assert_int_equal(in.events, AVAHI_WATCH_IN);
	assert_int_equal(out.calls, 1); /* paused with watch_update(0) */
	teardown_fixture(&f);
}

static void on_unused(struct loop_watch *w, int fd, uint32_t events, void *ud)
{
	(void)w;
	(void)fd;
	(void)events;
	(void)ud;
}

static void test_poll_free_inside_callbacks(void **state)
{
	(void)state;
	struct fixture f;
	setup_fixture(&f);
	struct seen a = {.f = &f, .free_self = true}, b = {.f = &f, .quit = true};
	struct loop_watch *lw = NULL;

	/* a frees itself and b keeps working */
	a.w = f.api->watch_new(f.api, f.sv[0], AVAHI_WATCH_OUT, on_watch, &a);
	b.w = f.api->watch_new(f.api, f.sv[0], AVAHI_WATCH_OUT, on_watch, &b);
	assert_int_equal(loop_run(f.l), 0);
	assert_int_equal(a.calls, 1);
	assert_null(a.w);
	assert_int_equal(b.calls, 1);
	assert_int_equal(loop_run(f.l), 0);
	assert_int_equal(a.calls, 1); /* never called again */
	assert_int_equal(b.calls, 2);
	/* b frees a new watch c before c's turn in the same dispatch, then itself */
	struct seen c = {.f = &f};
	c.w = f.api->watch_new(f.api, f.sv[0], AVAHI_WATCH_OUT, on_watch, &c);
	b.free_other = c.w;
	b.free_self = true;
	assert_int_equal(loop_run(f.l), 0);
	assert_int_equal(b.calls, 3);
	assert_int_equal(c.calls, 0);
	/* the fd's loop watch is gone with its last AvahiWatch: the loop accepts the fd again */
	assert_int_equal(loop_watch_add(f.l, f.sv[0], EPOLLIN, on_unused, NULL, &lw), 0);
	loop_watch_remove(lw);
	/* one left registered at the end is freed by mdns_poll_free */
	assert_non_null(f.api->watch_new(f.api, f.sv[0], AVAHI_WATCH_IN, on_watch, &c));
	teardown_fixture(&f);
}

struct fired {
	struct fixture *f;
	AvahiTimeout *t;
	uint64_t at_ms;
	int calls;
	bool free_self;
};

static void on_timeout(AvahiTimeout *t, void *ud)
{
	struct fired *s = ud;

	assert_ptr_equal(t, s->t);
	s->calls++;
	s->at_ms = loop_now_ms();
	if (s->free_self) {
		s->f->api->timeout_free(t);
		s->t = NULL;
	}
	loop_quit(s->f->l, 0);
}

static struct timeval in_ms(int ms)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	tv.tv_usec += ms * 1000;
	tv.tv_sec += tv.tv_usec / 1000000;
	tv.tv_usec %= 1000000;
	return tv;
}

static void test_poll_timeouts(void **state)
{
	(void)state;
	struct fixture f;
	setup_fixture(&f);
	struct fired a = {.f = &f}, b = {.f = &f, .free_self = true};
	struct timeval tv = in_ms(60), past = {0, 0};
	uint64_t start = loop_now_ms();

	/* an absolute time on gettimeofday's clock */
	a.t = f.api->timeout_new(f.api, &tv, on_timeout, &a);
	assert_non_null(a.t);
	assert_int_equal(loop_run(f.l), 0);
	assert_int_equal(a.calls, 1);
	assert_true(a.at_ms - start >= 55);
	/* one-shot: re-armed only by timeout_update; NULL disarms */
	tv = in_ms(20);
	f.api->timeout_update(a.t, &tv);
	f.api->timeout_update(a.t, NULL);
	b.t = f.api->timeout_new(f.api, &past, on_timeout, &b); /* past: the next iteration */
	start = loop_now_ms();
	assert_int_equal(loop_run(f.l), 0);
	assert_int_equal(b.calls, 1);
	assert_null(b.t); /* freed itself */
	assert_true(b.at_ms - start < 50);
	tv = in_ms(30);
	f.api->timeout_update(a.t, &tv);
	assert_int_equal(loop_run(f.l), 0);
	assert_int_equal(a.calls, 2);
	/* disabled from the start, and freeing NULL */
	assert_non_null(f.api->timeout_new(f.api, NULL, on_timeout, &a));
	f.api->timeout_free(NULL);
	teardown_fixture(&f); /* frees a.t and the disabled one */
}

/* No D-Bus system bus: mdns_new succeeds, keeps retrying on a timer, frees cleanly. */
static void test_announcer_without_dbus(void **state)
{
	(void)state;
	struct fixture f;
	setup_fixture(&f);
	struct sockaddr_storage a[2] = {v4("127.0.0.1", 8080), v4("0.0.0.0", 80)};
	struct mdns_opts o = opts(a, 2);
	struct mdns *m = NULL;

	setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/p1d-test-bus", 1);
	assert_int_equal(mdns_new(f.l, &o, &m), 0);
	assert_non_null(m);
	loop_timer_arm(f.guard, 1500, 0); /* the first retry comes after 1 s */
	assert_int_equal(loop_run(f.l), GUARD_CODE);
	assert_null(mdns_free(m));
	assert_null(mdns_free(NULL));
	/* nothing to announce: success without an announcer */
	m = (struct mdns *)&o;
	o.n_addrs = 1;
	assert_int_equal(mdns_new(f.l, &o, &m), 0);
	assert_null(m);
	o.n_addrs = 2;
	o.announce = false;
	m = (struct mdns *)&o;
	assert_int_equal(mdns_new(f.l, &o, &m), 0);
	assert_null(m);
	/* a bad serial is a programming error reported as -EINVAL, not a crash */
	o.announce = true;
	o.serial = "xyz";
	m = NULL;
	assert_int_equal(mdns_new(f.l, &o, &m), -EINVAL);
	assert_null(m);
	teardown_fixture(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_loopback),
	        cmocka_unit_test(test_decide),
	        cmocka_unit_test(test_txt),
	        cmocka_unit_test(test_service_name),
	        cmocka_unit_test(test_serial_matches_api),
	        cmocka_unit_test(test_poll_two_watches_one_fd),
	        cmocka_unit_test(test_poll_free_inside_callbacks),
	        cmocka_unit_test(test_poll_timeouts),
	        cmocka_unit_test(test_announcer_without_dbus),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
