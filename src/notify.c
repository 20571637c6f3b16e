/* notify.c - sd_notify wrapper (see notify.h). Owns nothing but the formatting of the
 * messages; never logs, never blocks beyond one datagram to systemd. Called by main. */
#include "notify.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <systemd/sd-daemon.h>
#include <time.h>

/* Longest STATUS= text sent; longer ones are cut. */
#define NOTIFY_STATUS_MAX 512

bool notify_enabled(void)
{
	const char *s = getenv("NOTIFY_SOCKET");

	return s && *s;
}

static int send_state(const char *state)
{
	int r;

	if (!notify_enabled())
		return 0;
	r = sd_notify(0, state);
	return r < 0 ? r : 0;
}

int notify_ready(void)
{
	return send_state("READY=1");
}

int notify_status(const char *fmt, ...)
{
	char buf[sizeof("STATUS=") + NOTIFY_STATUS_MAX] = "STATUS=";
	const size_t off = sizeof("STATUS=") - 1;
	va_list ap;

	if (!notify_enabled())
		return 0;
	va_start(ap, fmt);
	/* Flawfinder: ignore: fmt is notify_status's, whose callers gcc checks (notify.h) */
	vsnprintf(buf + off, sizeof(buf) - off, fmt, ap);
	va_end(ap);
	for (char *p = buf + off; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	return send_state(buf);
}

int notify_watchdog(void)
{
	return send_state("WATCHDOG=1");
}

uint64_t notify_watchdog_usec(void)
{
	uint64_t usec = 0;

	if (sd_watchdog_enabled(0, &usec) <= 0)
		return 0;
	return usec;
}

int notify_stopping(void)
{
	return send_state("STOPPING=1");
}

int notify_reloading(void)
{
	char buf[64];
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	snprintf(buf, sizeof(buf), "RELOADING=1\nMONOTONIC_USEC=%llu",
	         (unsigned long long)ts.tv_sec * 1000000ULL +
	                 (unsigned long long)ts.tv_nsec / 1000);
	return send_state(buf);
}
