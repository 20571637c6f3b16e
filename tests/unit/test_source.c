/* test_source.c - sources against real peers in the same process: files and pipes (fast and
 * meter pace), a TCP listener that refuses, accepts and hangs up, the data watchdog, and a
 * socat pty pair that disappears and comes back (skipped without socat). Everything runs in
 * the real loop with short timeouts; a guard timer fails a test that would hang. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "log.h"
#include "loop.h"
#include "source.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define GUARD_CODE 99
#define MAX_EVENTS 64

struct rec;
typedef void (*rec_state_fn)(struct rec *r, enum source_state st, const char *why);
typedef void (*rec_data_fn)(struct rec *r, const uint8_t *buf, size_t len);

/* What a source told us, plus the test's own reactions. */
struct rec {
	struct loop *loop;
	struct source *src;
	uint8_t *data;
	size_t len, cap;
	int chunks;
	uint64_t chunk_at[MAX_EVENTS];
	size_t chunk_len[MAX_EVENTS];
	uint64_t chunk_iter[MAX_EVENTS];
	uint64_t iterations; /* before-sleep hook count */
	enum source_state states[MAX_EVENTS];
	uint64_t state_at[MAX_EVENTS];
	char why[MAX_EVENTS][96];
	int nstates;
	bool valid_on_data; /* call source_note_valid on every chunk */
	rec_state_fn on_state;
	rec_data_fn on_data;
	void *ctx;
};

static void rec_data(void *ud, const uint8_t *buf, size_t len)
{
	struct rec *r = ud;

	assert_true(len > 0);
	assert_true(len <= 4 * 16384);
	if (r->len + len > r->cap) {
		r->cap = (r->len + len) * 2;
		r->data = realloc(r->data, r->cap);
		assert_non_null(r->data);
	}
	memcpy(r->data + r->len, buf, len);
	r->len += len;
	if (r->chunks < MAX_EVENTS) {
		r->chunk_at[r->chunks] = loop_now_ms();
		r->chunk_len[r->chunks] = len;
		r->chunk_iter[r->chunks] = r->iterations;
	}
	r->chunks++;
	if (r->valid_on_data)
		source_note_valid(r->src);
	if (r->on_data)
		r->on_data(r, buf, len);
}

static void rec_state(void *ud, enum source_state st, const char *why)
{
	struct rec *r = ud;

	assert_non_null(why);
	if (r->nstates < MAX_EVENTS) {
		r->states[r->nstates] = st;
		r->state_at[r->nstates] = loop_now_ms();
		snprintf(r->why[r->nstates], sizeof(r->why[0]), "%s", why);
		r->nstates++;
	}
	if (r->on_state)
		r->on_state(r, st, why);
}

static void on_hook(struct loop *l, void *ud)
{
	(void)l;
	((struct rec *)ud)->iterations++;
}

static void on_guard(struct loop_timer *t, void *ud)
{
	(void)t;
	loop_quit(ud, GUARD_CODE);
}

struct fixture {
	struct loop *loop;
	struct loop_timer *guard;
	struct rec rec;
	char dir[256];
	pid_t children[4]; /* socat processes still to be stopped by teardown */
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	const char *tmp = getenv("TMPDIR");

	assert_non_null(f);
	assert_int_equal(loop_new(&f->loop), 0);
	assert_int_equal(loop_timer_new(f->loop, on_guard, f->loop, &f->guard), 0);
	loop_timer_arm(f->guard, 5000, 0);
	assert_int_equal(loop_hook_add(f->loop, on_hook, &f->rec, NULL), 0);
	f->rec.loop = f->loop;
	snprintf(f->dir, sizeof(f->dir), "%s/p1d-source-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	assert_non_null(mkdtemp(f->dir));
	log_set_max_priority(LOG_INFO);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[300];

	f->rec.src = source_free(f->rec.src);
	/* a failed assertion may have left socat running */
	for (int i = 0; i < 4; i++) {
		if (f->children[i] > 0) {
			kill(f->children[i], SIGTERM);
			waitpid(f->children[i], NULL, 0);
		}
	}
	loop_timer_free(f->guard);
	loop_free(f->loop);
	free(f->rec.data);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", f->dir);
	free(f);
	return 0;
}

static int count_states(const struct rec *r, enum source_state st)
{
	int n = 0;

	for (int i = 0; i < r->nstates; i++)
		n += r->states[i] == st;
	return n;
}

static int first_state(const struct rec *r, enum source_state st, int from)
{
	for (int i = from; i < r->nstates; i++)
		if (r->states[i] == st)
			return i;
	return -1;
}

static void quit_on_eof(struct rec *r, enum source_state st, const char *why)
{
	(void)why;
	if (st == SOURCE_EOF)
		loop_quit(r->loop, 0);
}

static void write_file(const char *path, const void *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, buf, len), (ssize_t)len);
	close(fd);
}

/* stderr into a temporary file, for checking what was logged */
struct capture {
	FILE *file;
	int saved;
};

static void capture_begin(struct capture *c)
{
	c->file = tmpfile();
	assert_non_null(c->file);
	fflush(stderr);
	c->saved = dup(STDERR_FILENO);
	assert_true(c->saved >= 0);
	dup2(fileno(c->file), STDERR_FILENO);
	log_set_target(LOG_TARGET_JOURNAL);
}

static void capture_end(struct capture *c, char *text, size_t size)
{
	ssize_t n;

	dup2(c->saved, STDERR_FILENO);
	close(c->saved);
	log_set_target(LOG_TARGET_AUTO);
	n = pread(fileno(c->file), text, size - 1, 0);
	text[n > 0 ? n : 0] = '\0';
	fclose(c->file);
}

static int count_substr(const char *hay, const char *needle)
{
	int n = 0;

	for (const char *p = hay; (p = strstr(p, needle)); p++)
		n++;
	return n;
}

/* ---- file ---- */

static void test_file_fast(void **state)
{
	struct fixture *f = *state;
	struct rec *r = &f->rec;
	const size_t size = 200000;
	uint8_t *content = malloc(size);
	char path[300];
	struct source_stats st;

	assert_non_null(content);
	for (size_t i = 0; i < size; i++)
		content[i] = (uint8_t)(i * 7 + i / 251);
	snprintf(path, sizeof(path), "%s/stream.bin", f->dir);
	write_file(path, content, size);

	struct source_config cfg = {
	        .name = "t", .kind = SOURCE_FILE, .path = path, .pace = SOURCE_PACE_FAST};
	r->on_state = quit_on_eof;
	assert_int_equal(source_new(f->loop, &cfg, rec_data, rec_state, r, &r->src), 0);
	assert_int_equal(r->nstates, 0); /* no callback from inside source_new */
	assert_int_equal(loop_run(f->loop), 0);

	assert_int_equal(r->len, size);
	assert_memory_equal(r->data, content, size);
	/* chunked, at most SOURCE_READ_MAX each, one per loop iteration */
	assert_true(r->chunks >= (int)(size / SOURCE_READ_MAX));
	for (int i = 0; i < r->chunks && i < MAX_EVENTS; i++) {
		assert_true(r->chunk_len[i] <= SOURCE_READ_MAX);
		if (i)
			assert_true(r->chunk_iter[i] > r->chunk_iter[i - 1]);
	}
	assert_int_equal(r->nstates, 2);
	assert_int_equal(r->states[0], SOURCE_CONNECTED);
	assert_int_equal(r->states[1], SOURCE_EOF);
	assert_int_equal(source_get_state(r->src), SOURCE_EOF);
	source_get_stats(r->src, &st);
	assert_int_equal(st.bytes, size);
	assert_int_equal(st.opens, 1);
	assert_int_equal(st.reopens, 0);
	free(content);
}

#define TELEGRAM(id) \
	"/ISK5\\2M550T-10" id "\r\n\r\n1-3:0.2.8(50)\r\n1-0:1.8.1(000123.456*kWh)\r\n!ABCD\r\n"

static void test_file_meter_pace(void **state)
{
	struct fixture *f = *state;
	struct rec *r = &f->rec;
	const char *tel[] = {"garbage\r\n" TELEGRAM("1"), TELEGRAM("2"), TELEGRAM("3"),
	                     TELEGRAM("4"), TELEGRAM("5") "trailing"};
	char all[2048] = "", path[300];
	const uint32_t period = 40;

	for (int i = 0; i < 5; i++)
		strcat(all, tel[i]);
	snprintf(path, sizeof(path), "%s/telegrams.txt", f->dir);
	write_file(path, all, strlen(all));

	struct source_config cfg = {.name = "t",
	                            .kind = SOURCE_FILE,
	                            .path = path,
	                            .pace = SOURCE_PACE_METER,
	                            .period_ms = period};
	r->on_state = quit_on_eof;
	uint64_t start = loop_now_ms();
	assert_int_equal(source_new(f->loop, &cfg, rec_data, rec_state, r, &r->src), 0);
	assert_int_equal(loop_run(f->loop), 0);

	assert_int_equal(r->chunks, 5);
	assert_int_equal(r->len, strlen(all));
	assert_memory_equal(r->data, all, r->len);
	size_t off = 0;
	for (int i = 0; i < 5; i++) {
		/* one telegram each, cut before the next '/' */
		assert_int_equal(r->chunk_len[i], strlen(tel[i]));
		assert_memory_equal(r->data + off, tel[i], strlen(tel[i]));
		off += r->chunk_len[i];
		/* one per period (phase-locked to the first), the first at once */
		assert_true(r->chunk_at[i] >= start + (uint64_t)i * period);
	}
	assert_true(r->chunk_at[0] - start < period);
	assert_true(r->chunk_at[4] - start < 4 * period + 150);
	assert_int_equal(r->states[r->nstates - 1], SOURCE_EOF);
}

static void test_file_missing(void **state)
{
	struct fixture *f = *state;
	char path[300];
	struct source *s = NULL;

	snprintf(path, sizeof(path), "%s/missing", f->dir);
	struct source_config cfg = {.name = "t", .kind = SOURCE_FILE, .path = path};
	assert_int_equal(source_new(f->loop, &cfg, rec_data, rec_state, &f->rec, &s), -ENOENT);
	assert_null(s);
	cfg.path = "";
	assert_int_equal(source_new(f->loop, &cfg, rec_data, rec_state, &f->rec, &s), -EINVAL);
}

/* stdin as a pipe: "-" */
static void run_stdin(struct fixture *f, enum source_pace pace, const void *buf, size_t len)
{
	struct rec *r = &f->rec;
	int p[2], saved = dup(STDIN_FILENO);

	assert_true(saved >= 0);
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	assert_true(len <= 60000); /* fits in the pipe: written before the loop runs */
	assert_int_equal(write(p[1], buf, len), (ssize_t)len);
	close(p[1]);
	assert_int_equal(dup2(p[0], STDIN_FILENO), STDIN_FILENO);
	close(p[0]);

	struct source_config cfg = {
	        .name = "t", .kind = SOURCE_FILE, .path = "-", .pace = pace, .period_ms = 20};
	r->on_state = quit_on_eof;
	assert_int_equal(source_new(f->loop, &cfg, rec_data, rec_state, r, &r->src), 0);
	assert_int_equal(loop_run(f->loop), 0);
	dup2(saved, STDIN_FILENO);
	close(saved);
	/* our stdin description was not switched to non-blocking behind the parent's back */
	assert_false(fcntl(STDIN_FILENO, F_GETFL) & O_NONBLOCK);
}

static void test_stdin_fast(void **state)
{
	struct fixture *f = *state;
	static uint8_t buf[50000];

	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)(i % 253);
	run_stdin(f, SOURCE_PACE_FAST, buf, sizeof(buf));
	assert_int_equal(f->rec.len, sizeof(buf));
	assert_memory_equal(f->rec.data, buf, sizeof(buf));
	assert_int_equal(f->rec.states[f->rec.nstates - 1], SOURCE_EOF);
}

static void test_stdin_meter_pace(void **state)
{
	struct fixture *f = *state;
	const char *all = TELEGRAM("1") TELEGRAM("2") TELEGRAM("3");

	run_stdin(f, SOURCE_PACE_METER, all, strlen(all));
	/* the writer is long gone: the hangup must not spin the loop between ticks */
	if (f->rec.iterations > 50)
		fail_msg("%llu loop iterations for 3 ticks", (unsigned long long)f->rec.iterations);
	assert_int_equal(f->rec.chunks, 3);
	assert_int_equal(f->rec.len, strlen(all));
	assert_memory_equal(f->rec.data, all, strlen(all));
	assert_int_equal(f->rec.chunk_len[0], strlen(TELEGRAM("1")));
}

/* ---- tcp ---- */

struct server {
	struct fixture *f;
	int lfd;
	uint16_t port;
	struct loop_watch *lw;
	int conn;
	int accepts;
	uint64_t closed_at;
	uint64_t reaccept_at;
	struct loop_timer *talk; /* sends junk every 50 ms while connected (watchdog test) */
};

static void server_init(struct server *s, struct fixture *f)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sa);

	memset(s, 0, sizeof(*s));
	s->f = f;
	s->conn = -1;
	s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	assert_true(s->lfd >= 0);
	assert_int_equal(bind(s->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&sa, &len), 0);
	s->port = ntohs(sa.sin_port);
}

static void server_fini(struct server *s)
{
	s->lw = loop_watch_remove(s->lw);
	s->talk = loop_timer_free(s->talk);
	if (s->conn >= 0)
		close(s->conn);
	close(s->lfd);
}

static void server_send(struct server *s, const char *text)
{
	assert_int_equal(send(s->conn, text, strlen(text), MSG_NOSIGNAL), (ssize_t)strlen(text));
}

static void on_accept(struct loop_watch *w, int fd, uint32_t events, void *ud)
{
	struct server *s = ud;
	int c;

	(void)w;
	(void)events;
	c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (c < 0)
		return;
	if (s->conn >= 0)
		close(s->conn);
	s->conn = c;
	s->accepts++;
	if (s->accepts == 1) {
		server_send(s, "hello");
	} else {
		s->reaccept_at = loop_now_ms();
		server_send(s, "again");
	}
}

static void server_listen(struct server *s)
{
	assert_int_equal(listen(s->lfd, 4), 0);
	assert_int_equal(loop_watch_add(s->f->loop, s->lfd, EPOLLIN, on_accept, s, &s->lw), 0);
}

static void tcp_on_state(struct rec *r, enum source_state st, const char *why)
{
	struct server *s = r->ctx;

	/* the first attempt was refused: now start listening */
	if (st == SOURCE_BACKOFF && s->accepts == 0 && !s->lw) {
		assert_non_null(strstr(why, "refused"));
		server_listen(s);
	}
}

static void tcp_on_data(struct rec *r, const uint8_t *buf, size_t len)
{
	struct server *s = r->ctx;

	(void)buf;
	(void)len;
	if (r->len == 5 && memcmp(r->data, "hello", 5) == 0) {
		close(s->conn); /* the peer hangs up */
		s->conn = -1;
		s->closed_at = loop_now_ms();
	} else if (r->len == 10) {
		loop_quit(r->loop, 0);
	}
}

static void test_tcp_refused_then_reconnect(void **state)
{
	struct fixture *f = *state;
	struct rec *r = &f->rec;
	struct server s;
	char addr[64];
	struct source_stats st;

	server_init(&s, f);
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", s.port);
	struct source_config cfg = {
	        .name = "t", .kind = SOURCE_TCP, .path = addr, .backoff_max_ms = 400};
	r->ctx = &s;
	r->on_state = tcp_on_state;
	r->on_data = tcp_on_data;
	struct capture cap;
	char text[4096];
	capture_begin(&cap);
	assert_int_equal(source_new(f->loop, &cfg, rec_data, rec_state, r, &r->src), 0);
	int code = loop_run(f->loop);
	capture_end(&cap, text, sizeof(text));
	assert_int_equal(code, 0);

	/* each change of state said once, with what happens next */
	if (count_substr(text, "<4>meter t: cannot connect to") != 1 ||
	    count_substr(text, "(Connection refused), retrying every 400 ms at most") != 1 ||
	    count_substr(text, "available after") != 1 ||
	    count_substr(text, "connection lost (closed by the peer), retrying every") != 1 ||
	    count_substr(text, "<5>meter t: 127.0.0.1:") != 2 ||
	    count_substr(text, " back after ") != 1)
		fail_msg("unexpected log:\n%s", text);
	assert_int_equal(s.accepts, 2);
	assert_int_equal(r->len, 10);
	assert_memory_equal(r->data, "helloagain", 10);
	/* refused, connected, lost, connected again */
	int i = first_state(r, SOURCE_BACKOFF, 0);
	assert_true(i >= 0);
	i = first_state(r, SOURCE_CONNECTED, i);
	assert_true(i >= 0);
	i = first_state(r, SOURCE_BACKOFF, i);
	assert_true(i >= 0);
	assert_non_null(strstr(r->why[i], "closed by the peer"));
	i = first_state(r, SOURCE_CONNECTED, i);
	assert_true(i >= 0);
	/* after a backoff, not at once: min(500, 400) ms with +-20 % jitter */
	assert_true(s.reaccept_at - s.closed_at >= 300);
	assert_true(s.reaccept_at - s.closed_at < 1000);
	source_get_stats(r->src, &st);
	assert_int_equal(st.opens, 2);
	assert_int_equal(st.reopens, 1);
	assert_true(st.failures >= 2);
	assert_int_equal(st.bytes, 10);
	assert_string_equal(source_detail(r->src), addr);
	char line[128];
	source_format_status(r->src, line, sizeof(line));
	assert_non_null(strstr(line, "connected"));
	assert_non_null(strstr(line, "10 bytes, 1 reopens"));
	server_fini(&s);
}

static void on_stop(struct loop_timer *t, void *ud)
{
	(void)t;
	loop_quit(ud, 0);
}

static void test_tcp_refused_logs_once(void **state)
{
	struct fixture *f = *state;
	struct rec *r = &f->rec;
	struct server s;
	char addr[64], text[4096];
	struct loop_timer *stop;
	struct source_stats st;
	struct capture cap;

	server_init(&s, f); /* bound, never listening: every attempt is refused */
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", s.port);
	struct source_config cfg = {
	        .name = "t", .kind = SOURCE_TCP, .path = addr, .backoff_max_ms = 250};
	capture_begin(&cap);
	assert_int_equal(source_new(f->loop, &cfg, rec_data, rec_state, r, &r->src), 0);
	assert_int_equal(loop_timer_new(f->loop, on_stop, f->loop, &stop), 0);
	loop_timer_arm(stop, 1300, 0);
	int code = loop_run(f->loop);
	capture_end(&cap, text, sizeof(text));
	assert_int_equal(code, 0);
	loop_timer_free(stop);

	source_get_stats(r->src, &st);
	assert_true(st.failures >= 4); /* 0, 250, 500, 750, 1000 ms, +-20 % */
	assert_int_equal(st.opens, 0);
	/* one warning for all those attempts */
	const char *first = strstr(text, "<4>meter t: cannot connect to");
	if (!first || strstr(first + 1, "<4>") || !strstr(first, "retrying every 250 ms at most"))
		fail_msg("expected exactly one warning, got:\n%s", text);
	/* between attempts, or in one (a refused connect may complete asynchronously) */
	assert_true(source_get_state(r->src) == SOURCE_BACKOFF ||
	            source_get_state(r->src) == SOURCE_OPENING);
	server_fini(&s);
}

static void test_tcp_addresses(void **state)
{
	struct fixture *f = *state;
	const char *bad[] = {"nonsense", "1.2.3.4", "1.2.3.4:0", "1.2.3.4:65536",
	                     "::1:80",   "[::1]80", ":80",       "1.2.3.4:http"};
	struct source *s = NULL;
	struct source_config cfg = {.name = "t", .kind = SOURCE_TCP};
	FILE *devnull = fopen("/dev/null", "w");
	int saved = dup(STDERR_FILENO);

	assert_non_null(devnull);
	dup2(fileno(devnull), STDERR_FILENO); /* the errors are expected */
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cfg.path = bad[i];
		if (source_new(f->loop, &cfg, rec_data, rec_state, &f->rec, &s) != -EINVAL)
			fail_msg("\"%s\" was accepted", bad[i]);
		assert_null(s);
	}
	dup2(saved, STDERR_FILENO);
	close(saved);
	fclose(devnull);

	cfg.path = "[::1]:2001";
	assert_int_equal(source_new(f->loop, &cfg, rec_data, rec_state, &f->rec, &s), 0);
	assert_string_equal(source_detail(s), "[::1]:2001");
	s = source_free(s);
	cfg.path = "192.0.2.7:23";
	assert_int_equal(source_new(f->loop, &cfg, rec_data, rec_state, &f->rec, &s), 0);
	assert_string_equal(source_detail(s), "192.0.2.7:23");
	assert_int_equal(source_get_state(s), SOURCE_IDLE);
	s = source_free(s);
}

/* ---- data watchdog ---- */

static void on_talk(struct loop_timer *t, void *ud)
{
	struct server *s = ud;

	(void)t;
	if (s->conn >= 0)
		(void)send(s->conn, "noise", 5, MSG_NOSIGNAL);
}

/* reopened after going stale: both ends saw the second connection */
static void stale_done(struct rec *r)
{
	struct server *s = r->ctx;

	if (s->accepts >= 2 && count_states(r, SOURCE_STALE) > 0 &&
	    first_state(r, SOURCE_CONNECTED, first_state(r, SOURCE_STALE, 0)) > 0)
		loop_quit(r->loop, 0);
}

static void on_accept_quiet(struct loop_watch *w, int fd, uint32_t events, void *ud)
{
	struct server *s = ud;
	int c;

	(void)w;
	(void)events;
	c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (c < 0)
		return;
	if (s->conn >= 0)
		close(s->conn);
	s->conn = c;
	if (++s->accepts == 2)
		s->reaccept_at = loop_now_ms();
	stale_done(&s->f->rec);
}

static void stale_on_state(struct rec *r, enum source_state st, const char *why)
{
	(void)st;
	(void)why;
	stale_done(r);
}

static void run_watchdog(struct fixture *f, struct server *s, bool feed, uint64_t run_ms)
{
	struct rec *r = &f->rec;
	char addr[64];
	struct loop_timer *stop;

	server_init(s, f);
	assert_int_equal(listen(s->lfd, 4), 0);
	assert_int_equal(loop_watch_add(f->loop, s->lfd, EPOLLIN, on_accept_quiet, s, &s->lw), 0);
	assert_int_equal(loop_timer_new(f->loop, on_talk, s, &s->talk), 0);
	loop_timer_arm(s->talk, 50, 50);
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", s->port);
	struct source_config cfg = {
	        .name = "t", .kind = SOURCE_TCP, .path = addr, .stale_after_ms = 300};
	r->ctx = s;
	r->on_state = stale_on_state;
	r->valid_on_data = feed;
	assert_int_equal(source_new(f->loop, &cfg, rec_data, rec_state, r, &r->src), 0);
	assert_int_equal(loop_timer_new(f->loop, on_stop, f->loop, &stop), 0);
	loop_timer_arm(stop, run_ms, 0);
	assert_int_equal(loop_run(f->loop), 0);
	loop_timer_free(stop);
}

static void test_stale_watchdog_fires(void **state)
{
	struct fixture *f = *state;
	struct rec *r = &f->rec;
	struct server s;
	struct source_stats st;

	run_watchdog(f, &s, false, 2000);
	/* bytes flowed, but nobody said they were valid: stale, then reopened */
	int i = first_state(r, SOURCE_CONNECTED, 0);
	int j = first_state(r, SOURCE_STALE, 0);
	assert_true(i >= 0 && j > i);
	assert_non_null(strstr(r->why[j], "no valid telegram"));
	assert_true(r->state_at[j] - r->state_at[i] >= 300);
	assert_true(r->state_at[j] - r->state_at[i] < 600);
	assert_true(first_state(r, SOURCE_CONNECTED, j) > j);
	assert_int_equal(s.accepts, 2);
	source_get_stats(r->src, &st);
	assert_true(st.bytes > 0);
	assert_int_equal(st.stale, 1);
	assert_int_equal(st.opens, 2);
	assert_int_equal(st.last_valid_ms, 0);
	server_fini(&s);
}

static void test_stale_watchdog_fed(void **state)
{
	struct fixture *f = *state;
	struct rec *r = &f->rec;
	struct server s;
	struct source_stats st;

	run_watchdog(f, &s, true, 900);
	assert_int_equal(count_states(r, SOURCE_STALE), 0);
	assert_int_equal(s.accepts, 1);
	source_get_stats(r->src, &st);
	assert_int_equal(st.stale, 0);
	assert_int_equal(st.opens, 1);
	assert_true(st.last_valid_ms > 0);
	assert_true(r->chunks >= 10);
	server_fini(&s);
}

/* ---- serial ---- */

static bool have_socat(void)
{
	const char *path = getenv("PATH");
	char buf[4096], exe[4200];

	if (!path)
		return false;
	snprintf(buf, sizeof(buf), "%s", path);
	for (char *save, *d = strtok_r(buf, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
		snprintf(exe, sizeof(exe), "%s/socat", d);
		if (access(exe, X_OK) == 0)
			return true;
	}
	return false;
}

struct pty_pair {
	char x[300]; /* the source reads here */
	char y[300]; /* the test writes here */
	pid_t pid;
	int wfd;
	pid_t *slot; /* in the fixture, for teardown */
};

static void pty_init(struct pty_pair *pp, struct fixture *f, int slot)
{
	memset(pp, 0, sizeof(*pp));
	snprintf(pp->x, sizeof(pp->x), "%s/x", f->dir);
	snprintf(pp->y, sizeof(pp->y), "%s/y", f->dir);
	pp->wfd = -1;
	pp->slot = &f->children[slot];
}

static bool exists(const char *p)
{
	struct stat st;

	return stat(p, &st) == 0;
}

/* Starts socat and waits (this is a test) until both links exist. The loop blocked
 * SIGTERM, so the child gets a clean signal mask. */
static void socat_start(struct pty_pair *pp)
{
	char a[400], b[400];
	char *argv[] = {"socat", a, b, NULL};
	posix_spawnattr_t attr;
	posix_spawn_file_actions_t fa;
	sigset_t none, dflt;

	snprintf(a, sizeof(a), "pty,raw,echo=0,link=%s", pp->x);
	snprintf(b, sizeof(b), "pty,raw,echo=0,link=%s", pp->y);
	sigemptyset(&none);
	sigemptyset(&dflt);
	sigaddset(&dflt, SIGTERM);
	sigaddset(&dflt, SIGINT);
	sigaddset(&dflt, SIGHUP);
	posix_spawnattr_init(&attr);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setsigdefault(&attr, &dflt);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	/* no inherited stdout/stderr: a socat left behind must not hold the runner's pipes */
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
	posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
	assert_int_equal(posix_spawnp(&pp->pid, "socat", &fa, &attr, argv, environ), 0);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	*pp->slot = pp->pid;
	for (int i = 0; i < 300 && !(exists(pp->x) && exists(pp->y)); i++)
		usleep(10000);
	assert_true(exists(pp->x) && exists(pp->y));
	pp->wfd = -1;
}

static void socat_stop(struct pty_pair *pp)
{
	if (pp->wfd >= 0)
		close(pp->wfd);
	pp->wfd = -1;
	if (pp->pid > 0) {
		kill(pp->pid, SIGTERM);
		waitpid(pp->pid, NULL, 0);
	}
	pp->pid = 0;
	*pp->slot = 0;
}

static void pty_write(struct pty_pair *pp, const char *text)
{
	if (pp->wfd < 0)
		pp->wfd = open(pp->y, O_WRONLY | O_NOCTTY | O_CLOEXEC);
	assert_true(pp->wfd >= 0);
	assert_int_equal(write(pp->wfd, text, strlen(text)), (ssize_t)strlen(text));
}

struct serial_test {
	struct pty_pair pp;
	int phase;
	uint64_t restarted_at;
	uint64_t back_at;
	struct loop_timer *restart;
};

static void on_restart(struct loop_timer *t, void *ud)
{
	struct serial_test *stt = ud;

	(void)t;
	socat_start(&stt->pp);
	stt->restarted_at = loop_now_ms();
}

static void serial_on_state(struct rec *r, enum source_state st, const char *why)
{
	struct serial_test *stt = r->ctx;

	(void)why;
	if (st == SOURCE_CONNECTED && stt->phase == 0) {
		pty_write(&stt->pp, TELEGRAM("1"));
		stt->phase = 1;
	} else if (st == SOURCE_BACKOFF && stt->phase == 2) {
		/* gone: bring it back at the same link a little later */
		stt->phase = 3;
		loop_timer_arm(stt->restart, 300, 0);
	} else if (st == SOURCE_CONNECTED && stt->phase == 3) {
		stt->back_at = loop_now_ms();
		pty_write(&stt->pp, TELEGRAM("2"));
		stt->phase = 4;
	}
}

static void serial_on_data(struct rec *r, const uint8_t *buf, size_t len)
{
	struct serial_test *stt = r->ctx;

	(void)buf;
	(void)len;
	if (stt->phase == 1 && r->len == strlen(TELEGRAM("1"))) {
		source_note_valid(r->src);
		stt->phase = 2;
		socat_stop(&stt->pp); /* the adapter is unplugged */
	} else if (stt->phase == 4 && r->len == strlen(TELEGRAM("1") TELEGRAM("2"))) {
		loop_quit(r->loop, 0);
	}
}

static void test_serial_pty_disappears_and_returns(void **state)
{
	struct fixture *f = *state;
	struct rec *r = &f->rec;
	struct serial_test stt = {0};
	struct source_stats st;

	if (!have_socat())
		skip();
	pty_init(&stt.pp, f, 0);
	socat_start(&stt.pp);
	assert_int_equal(loop_timer_new(f->loop, on_restart, &stt, &stt.restart), 0);

	struct source_config cfg = {.name = "t",
	                            .kind = SOURCE_SERIAL,
	                            .path = stt.pp.x,
	                            .serial_mode = SOURCE_SERIAL_115200_8N1,
	                            .data_request = SOURCE_DATA_REQUEST_NONE,
	                            .backoff_max_ms = 1000};
	r->ctx = &stt;
	r->on_state = serial_on_state;
	r->on_data = serial_on_data;
	assert_int_equal(source_new(f->loop, &cfg, rec_data, rec_state, r, &r->src), 0);
	int code = loop_run(f->loop);
	socat_stop(&stt.pp);
	loop_timer_free(stt.restart);
	assert_int_equal(code, 0);

	assert_int_equal(stt.phase, 4);
	assert_memory_equal(r->data, TELEGRAM("1") TELEGRAM("2"), r->len);
	assert_true(stt.back_at - stt.restarted_at < 2000);
	assert_string_equal(source_detail(r->src), "115200-8N1");
	source_get_stats(r->src, &st);
	assert_int_equal(st.opens, 2);
	assert_int_equal(st.reopens, 1);
}

static void busy_on_state(struct rec *r, enum source_state st, const char *why)
{
	if (st == SOURCE_BACKOFF) {
		assert_non_null(strstr(why, "busy"));
		loop_quit(r->loop, 0);
	}
}

static void test_serial_exclusive(void **state)
{
	struct fixture *f = *state;
	struct rec *r = &f->rec, first = {.loop = f->loop};
	struct pty_pair pp;
	FILE *devnull = fopen("/dev/null", "w");
	int saved = dup(STDERR_FILENO);

	if (!have_socat())
		skip();
	pty_init(&pp, f, 0);
	socat_start(&pp);
	struct source_config cfg = {.name = "t",
	                            .kind = SOURCE_SERIAL,
	                            .path = pp.x,
	                            .serial_mode = SOURCE_SERIAL_9600_7E1,
	                            .data_request = SOURCE_DATA_REQUEST_DTR};
	assert_int_equal(source_new(f->loop, &cfg, rec_data, rec_state, &first, &first.src), 0);
	r->on_state = busy_on_state;
	assert_int_equal(source_new(f->loop, &cfg, rec_data, rec_state, r, &r->src), 0);
	dup2(fileno(devnull), STDERR_FILENO); /* the "cannot raise DTR on a pty" warning */
	int code = loop_run(f->loop);
	dup2(saved, STDERR_FILENO);
	close(saved);
	fclose(devnull);
	assert_int_equal(code, 0);
	assert_int_equal(source_get_state(first.src), SOURCE_CONNECTED);
	assert_int_equal(source_get_state(r->src), SOURCE_BACKOFF);
	/* the first reader still gets every byte */
	first.on_state = NULL;
	pty_write(&pp, "/abc\r\n");
	loop_timer_arm(f->guard, 300, 0);
	loop_run(f->loop);
	assert_int_equal(first.len, 6);
	assert_memory_equal(first.data, "/abc\r\n", 6);
	first.src = source_free(first.src);
	free(first.data);
	socat_stop(&pp);
}

static void test_serial_absent_device(void **state)
{
	struct fixture *f = *state;
	struct rec *r = &f->rec;
	char path[300];
	struct source_stats st;
	FILE *devnull = fopen("/dev/null", "w");
	int saved = dup(STDERR_FILENO);

	snprintf(path, sizeof(path), "%s/ttyUSB-gone", f->dir);
	struct source_config cfg = {
	        .name = "t", .kind = SOURCE_SERIAL, .path = path, .backoff_max_ms = 250};
	assert_int_equal(source_new(f->loop, &cfg, rec_data, rec_state, r, &r->src), 0);
	loop_timer_arm(f->guard, 700, 0);
	dup2(fileno(devnull), STDERR_FILENO);
	assert_int_equal(loop_run(f->loop), GUARD_CODE);
	dup2(saved, STDERR_FILENO);
	close(saved);
	fclose(devnull);
	assert_int_equal(source_get_state(r->src), SOURCE_BACKOFF);
	assert_non_null(strstr(r->why[0], "No such file"));
	assert_int_equal(r->nstates, 1); /* retries that change nothing are not state changes */
	source_get_stats(r->src, &st);
	assert_true(st.failures >= 3);
	assert_string_equal(source_detail(r->src), "115200-8N1"); /* auto starts there */
}

struct probe_test {
	struct pty_pair pp;
	char detail_before[32];
	char detail_after[32];
};

static void on_probe_check(struct loop_timer *t, void *ud)
{
	struct rec *r = ud;
	struct probe_test *pt = r->ctx;

	(void)t;
	snprintf(pt->detail_after, sizeof(pt->detail_after), "%s", source_detail(r->src));
	/* a telegram at the new setting settles it */
	pty_write(&pt->pp, TELEGRAM("1"));
}

static void probe_on_data(struct rec *r, const uint8_t *buf, size_t len)
{
	(void)buf;
	(void)len;
	if (r->len == strlen(TELEGRAM("1"))) {
		source_note_valid(r->src);
		loop_quit(r->loop, 0);
	}
}

static void test_serial_auto_probes_next_preset(void **state)
{
	struct fixture *f = *state;
	struct rec *r = &f->rec;
	struct probe_test pt;
	struct loop_timer *check;

	if (!have_socat())
		skip();
	pty_init(&pt.pp, f, 0);
	socat_start(&pt.pp);
	struct source_config cfg = {.name = "t",
	                            .kind = SOURCE_SERIAL,
	                            .path = pt.pp.x,
	                            .serial_mode = SOURCE_SERIAL_AUTO,
	                            .stale_after_ms = 60000};
	r->ctx = &pt;
	r->on_data = probe_on_data;
	assert_int_equal(source_new(f->loop, &cfg, rec_data, rec_state, r, &r->src), 0);
	snprintf(pt.detail_before, sizeof(pt.detail_before), "%s", source_detail(r->src));
	assert_int_equal(loop_timer_new(f->loop, on_probe_check, r, &check), 0);
	loop_timer_arm(check, SOURCE_SERIAL_PROBE_115200_MS + 300, 0);
	loop_timer_arm(f->guard, SOURCE_SERIAL_PROBE_115200_MS + 2000, 0);
	int code = loop_run(f->loop);
	loop_timer_free(check);
	socat_stop(&pt.pp);
	assert_int_equal(code, 0);
	assert_string_equal(pt.detail_before, "115200-8N1");
	assert_string_equal(pt.detail_after, "9600-7E1");
	assert_string_equal(source_detail(r->src), "9600-7E1");
	assert_int_equal(count_states(r, SOURCE_CONNECTED), 1); /* switched in place */
}

/* ---- names ---- */

static void test_names(void **state)
{
	enum source_serial_mode m;
	enum source_data_request d;
	enum source_pace p;

	(void)state;
	assert_int_equal(source_serial_mode_parse("9600-7e1", &m), 0);
	assert_int_equal(m, SOURCE_SERIAL_9600_7E1);
	assert_int_equal(source_serial_mode_parse("auto", &m), 0);
	assert_int_equal(m, SOURCE_SERIAL_AUTO);
	assert_int_equal(source_serial_mode_parse("115200", &m), -EINVAL);
	assert_int_equal(source_data_request_parse("rts", &d), 0);
	assert_int_equal(d, SOURCE_DATA_REQUEST_RTS);
	assert_int_equal(source_data_request_parse(NULL, &d), -EINVAL);
	assert_int_equal(source_pace_parse("meter", &p), 0);
	assert_int_equal(p, SOURCE_PACE_METER);
	assert_string_equal(source_serial_mode_name(SOURCE_SERIAL_115200_8N1), "115200-8N1");
	assert_string_equal(source_state_name(SOURCE_BACKOFF), "absent");
	assert_string_equal(source_state_name((enum source_state)42), "?");
	assert_string_equal(source_kind_name(SOURCE_TCP), "tcp");
	assert_null(source_free(NULL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test_setup_teardown(test_file_fast, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_file_meter_pace, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_file_missing, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_stdin_fast, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_stdin_meter_pace, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_tcp_refused_then_reconnect, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_tcp_refused_logs_once, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_tcp_addresses, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_stale_watchdog_fires, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_stale_watchdog_fed, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_serial_pty_disappears_and_returns, setup,
	                                        teardown),
	        cmocka_unit_test_setup_teardown(test_serial_exclusive, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_serial_absent_device, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_serial_auto_probes_next_preset, setup,
	                                        teardown),
	        cmocka_unit_test(test_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
