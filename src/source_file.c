/* source_file.c - a recorded byte stream as a source: a file, or stdin with "-" (see
 * source.h). Reads to the end once and reports SOURCE_EOF; never reopens. Pace "fast" hands
 * over one chunk per loop iteration, so replaying a large file never starves other fds; pace
 * "meter" cuts the stream before each "\n/" (the start of the next telegram) and hands over
 * one telegram per period, like a meter would. Regular files cannot be watched by epoll, so
 * they are read from a timer; pipes and terminals are read when readable. */
#include "source.h"

#include "log.h"
#include "loop.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Buffer for meter pace: several worst-case telegrams (16 KiB each, dsmr-protocol.md 2.7).
 * A "telegram" that does not fit is handed over as one full buffer. */
#define FILE_METER_BUF (4 * 16384u)

struct file_src {
	struct source *src;
	int fd;
	bool pollable; /* epoll accepts it (pipe, tty, socket); false for regular files */
	bool eof;      /* read returned 0 */
	enum source_pace pace;
	uint32_t period_ms;
	struct loop_watch *watch;
	struct loop_timer *timer; /* fast pace on a regular file: next chunk; meter pace: period */
	size_t len;               /* bytes waiting in buf (meter pace) */
	size_t cap;
	uint8_t *buf;
};

/* Opens a new file description for stdin where possible, so that O_NONBLOCK does not leak
 * into the terminal or pipe we share with the parent. Sockets cannot be reopened that way. */
static int open_stdin(void)
{
	int fd = open("/proc/self/fd/0", O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);

	if (fd >= 0)
		return fd;
	fd = fcntl(STDIN_FILENO, F_DUPFD_CLOEXEC, 3);
	if (fd < 0)
		return -errno;
	int fl = fcntl(fd, F_GETFL);
	if (fl >= 0)
		(void)fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	return fd;
}

/* Where the first telegram in buf ends: just after the '\n' of the first "\n/" that follows
 * a '/'. 0 if there is none yet. */
static size_t telegram_end(const uint8_t *buf, size_t len)
{
	const uint8_t *start = memchr(buf, '/', len);

	if (!start)
		return 0;
	const uint8_t *nl = memmem(start, len - (size_t)(start - buf), "\n/", 2);
	return nl ? (size_t)(nl - buf) + 1 : 0;
}

static void want_readable(struct file_src *f, bool on)
{
	if (f->watch)
		(void)loop_watch_modify(f->watch, on ? EPOLLIN : 0);
}

/* Reads one chunk into buf + len. Returns bytes read, 0 at EOF (sets f->eof), -EAGAIN, or
 * another negative errno. */
static ssize_t read_more(struct file_src *f)
{
	ssize_t n = read(f->fd, f->buf + f->len, f->cap - f->len);

	if (n < 0)
		return errno == EINTR ? -EAGAIN : -errno;
	if (n == 0)
		f->eof = true;
	f->len += (size_t)n;
	return n;
}

/* ---- fast pace ---- */

static void fast_chunk(struct file_src *f)
{
	ssize_t n;

	f->len = 0;
	n = read_more(f);
	if (n == -EAGAIN)
		return;
	if (n < 0) {
		source_impl_failed(f->src, (int)-n, "read");
		return;
	}
	if (n == 0) {
		source_impl_eof(f->src, "end of file");
		return;
	}
	if (!f->pollable)
		loop_timer_arm(f->timer, 0, 0); /* next chunk in the next iteration */
	source_impl_data(f->src, f->buf, (size_t)n);
}

/* ---- meter pace ---- */

static void meter_tick(struct file_src *f)
{
	size_t end;

	if (!f->pollable) {
		/* a regular file: reading never waits, so fill up to one telegram now */
		while (!f->eof && f->len < f->cap && !telegram_end(f->buf, f->len)) {
			ssize_t n = read_more(f);
			if (n < 0 && n != -EAGAIN) {
				source_impl_failed(f->src, (int)-n, "read");
				return;
			}
			if (n == -EAGAIN)
				break;
		}
	}
	end = telegram_end(f->buf, f->len);
	if (!end && (f->eof || f->len == f->cap))
		end = f->len;
	if (end) {
		source_impl_data(f->src, f->buf, end);
		memmove(f->buf, f->buf + end, f->len - end);
		f->len -= end;
	}
	if (f->eof && f->len == 0) {
		source_impl_eof(f->src, "end of file");
		return;
	}
	want_readable(f, !f->eof && f->len < f->cap && !telegram_end(f->buf, f->len));
}

static void meter_fill(struct file_src *f)
{
	ssize_t n;

	if (f->len == f->cap) { /* a read of 0 bytes would look like the end */
		want_readable(f, false);
		return;
	}
	n = read_more(f);

	if (n == -EAGAIN)
		return;
	if (n < 0) {
		source_impl_failed(f->src, (int)-n, "read");
		return;
	}
	/* enough for the next tick, or nothing more to come: stop watching until then */
	if (f->eof || f->len == f->cap || telegram_end(f->buf, f->len))
		want_readable(f, false);
}

/* ---- loop callbacks ---- */

static void on_readable(struct loop_watch *w, int fd, uint32_t events, void *ud)
{
	struct file_src *f = ud;

	(void)w;
	(void)fd;
	(void)events; /* EPOLLHUP/EPOLLERR: the read returns 0 or the error */
	if (f->pace == SOURCE_PACE_FAST)
		fast_chunk(f);
	else
		meter_fill(f);
}

static void on_timer(struct loop_timer *t, void *ud)
{
	struct file_src *f = ud;

	(void)t;
	if (f->fd < 0)
		return;
	if (f->pace == SOURCE_PACE_FAST)
		fast_chunk(f);
	else
		meter_tick(f);
}

/* ---- ops ---- */

static int file_open(struct source *s)
{
	struct file_src *f = source_impl(s);
	struct loop *loop = source_impl_loop(s);
	uint32_t events = f->pace == SOURCE_PACE_FAST ? EPOLLIN : 0;
	int r;

	if (f->fd < 0)
		return -EBADF; /* already at its end: files are not reopened */
	r = loop_watch_add(loop, f->fd, events, on_readable, f, &f->watch);
	if (r == -EPERM)
		f->pollable = false;
	else if (r < 0)
		return r;
	else
		f->pollable = true;

	if (f->pace == SOURCE_PACE_METER)
		loop_timer_arm(f->timer, 0, f->period_ms); /* first telegram now */
	else if (!f->pollable)
		loop_timer_arm(f->timer, 0, 0);
	return 0;
}

static void file_close(struct source *s)
{
	struct file_src *f = source_impl(s);

	f->watch = loop_watch_remove(f->watch);
	loop_timer_disarm(f->timer);
	if (f->fd >= 0)
		close(f->fd);
	f->fd = -1;
}

static void file_destroy(struct source *s)
{
	struct file_src *f = source_impl(s);

	if (!f)
		return;
	loop_timer_free(f->timer);
	free(f->buf);
	free(f);
}

static const char *file_detail(const struct source *s)
{
	const struct file_src *f = source_impl(s);

	return f->pace == SOURCE_PACE_METER ? "meter pace" : "";
}

static const struct source_ops file_ops = {
        .open_verb = "open",
        .lost_phrase = "failed",
        .reopen = false,
        .jitter = false,
        .open = file_open,
        .close = file_close,
        .destroy = file_destroy,
        .detail = file_detail,
};

int source_file_setup(struct source *s, const struct source_config *cfg)
{
	struct file_src *f = calloc(1, sizeof(*f));
	int r;

	if (!f)
		return -ENOMEM;
	f->src = s;
	f->fd = -1;
	f->pace = cfg->pace;
	f->period_ms = cfg->period_ms;
	f->cap = f->pace == SOURCE_PACE_METER ? FILE_METER_BUF : SOURCE_READ_MAX;
	f->buf = malloc(f->cap);
	source_impl_set(s, &file_ops, f); /* from here on source_free() cleans up */
	if (!f->buf)
		return -ENOMEM;
	r = loop_timer_new(source_impl_loop(s), on_timer, f, &f->timer);
	if (r < 0)
		return r;

	if (strcmp(cfg->path, "-") == 0) {
		r = open_stdin();
	} else {
		r = open(cfg->path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
		if (r < 0)
			r = -errno;
	}
	if (r < 0) {
		log_error("meter %s: cannot open %s: %s", cfg->name, cfg->path, strerror(-r));
		return r;
	}
	f->fd = r;
	return 0;
}
