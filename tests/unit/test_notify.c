/* test_notify.c - sd_notify messages arrive on $NOTIFY_SOCKET as systemd would read them,
 * nothing happens without it, and the watchdog interval follows $WATCHDOG_USEC/$WATCHDOG_PID.
 * The "systemd" here is a datagram socket in a temporary directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "notify.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

struct fake_systemd {
	char dir[256];
	char path[300];
	int fd;
};

static int start(void **state)
{
	struct fake_systemd *f = calloc(1, sizeof(*f));
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	const char *tmp = getenv("TMPDIR");

	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "%s/p1d-notify-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/notify", f->dir);
	assert_true(strlen(f->path) < sizeof(sa.sun_path));
	strcpy(sa.sun_path, f->path);
	f->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	assert_true(f->fd >= 0);
	assert_int_equal(bind(f->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	setenv("NOTIFY_SOCKET", f->path, 1);
	*state = f;
	return 0;
}

static int stop(void **state)
{
	struct fake_systemd *f = *state;

	unsetenv("NOTIFY_SOCKET");
	unsetenv("WATCHDOG_USEC");
	unsetenv("WATCHDOG_PID");
	close(f->fd);
	unlink(f->path);
	rmdir(f->dir);
	free(f);
	return 0;
}

/* The next datagram, or "" if none is waiting. */
static const char *received(struct fake_systemd *f)
{
	static char buf[1024];
	ssize_t n = recv(f->fd, buf, sizeof(buf) - 1, 0);

	if (n < 0) {
		assert_int_equal(errno, EAGAIN);
		n = 0;
	}
	buf[n] = '\0';
	return buf;
}

static void test_messages(void **state)
{
	struct fake_systemd *f = *state;
	const char *m;
	unsigned long long usec;
	int n = 0;

	assert_true(notify_enabled());
	assert_int_equal(notify_ready(), 0);
	assert_string_equal(received(f), "READY=1");
	assert_int_equal(notify_status("meter %s: %d telegrams\nsecond line", "main", 42), 0);
	assert_string_equal(received(f), "STATUS=meter main: 42 telegrams second line");
	assert_int_equal(notify_watchdog(), 0);
	assert_string_equal(received(f), "WATCHDOG=1");
	assert_int_equal(notify_stopping(), 0);
	assert_string_equal(received(f), "STOPPING=1");
	assert_int_equal(notify_reloading(), 0);
	m = received(f);
	assert_int_equal(sscanf(m, "RELOADING=1\nMONOTONIC_USEC=%llu%n", &usec, &n), 1);
	assert_int_equal(m[n], '\0');
	assert_true(usec > 0);
	assert_string_equal(received(f), "");
}

static void test_noop_without_socket(void **state)
{
	struct fake_systemd *f = *state;

	unsetenv("NOTIFY_SOCKET");
	assert_false(notify_enabled());
	assert_int_equal(notify_ready(), 0);
	assert_int_equal(notify_status("x"), 0);
	assert_int_equal(notify_watchdog(), 0);
	assert_int_equal(notify_stopping(), 0);
	assert_int_equal(notify_reloading(), 0);
	assert_string_equal(received(f), "");
}

static void test_socket_gone_is_an_error(void **state)
{
	struct fake_systemd *f = *state;
	char missing[320];

	snprintf(missing, sizeof(missing), "%s/nobody", f->dir);
	setenv("NOTIFY_SOCKET", missing, 1);
	assert_true(notify_ready() < 0);
}

static void test_watchdog_usec(void **state)
{
	char pid[32];

	(void)state;
	assert_int_equal(notify_watchdog_usec(), 0);
	setenv("WATCHDOG_USEC", "20000000", 1);
	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	setenv("WATCHDOG_PID", pid, 1);
	assert_int_equal(notify_watchdog_usec(), 20000000);
	/* meant for another process (we are a child that inherited it) */
	snprintf(pid, sizeof(pid), "%d", (int)getpid() + 1);
	setenv("WATCHDOG_PID", pid, 1);
	assert_int_equal(notify_watchdog_usec(), 0);
	/* no PID given: for us */
	unsetenv("WATCHDOG_PID");
	assert_int_equal(notify_watchdog_usec(), 20000000);
	setenv("WATCHDOG_USEC", "nonsense", 1);
	assert_int_equal(notify_watchdog_usec(), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test_setup_teardown(test_messages, start, stop),
	        cmocka_unit_test_setup_teardown(test_noop_without_socket, start, stop),
	        cmocka_unit_test_setup_teardown(test_socket_gone_is_an_error, start, stop),
	        cmocka_unit_test_setup_teardown(test_watchdog_usec, start, stop),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
