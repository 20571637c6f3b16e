/* test_loop.c - the event loop: timer order and periods, removal from inside callbacks,
 * signals through the signalfd, fd watches on pipes, hooks, quit codes. Every test arms a
 * guard timer so that a broken loop fails the test instead of hanging it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "loop.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define GUARD_CODE 99

static void on_guard(struct loop_timer *t, void *ud)
{
	(void)t;
	loop_quit(ud, GUARD_CODE);
}

static struct loop *new_loop(struct loop_timer **guard, uint64_t ms)
{
	struct loop *l = NULL;

	assert_int_equal(loop_new(&l), 0);
	assert_non_null(l);
	assert_int_equal(loop_timer_new(l, on_guard, l, guard), 0);
	loop_timer_arm(*guard, ms, 0);
	return l;
}

/* ---- timers ---- */

struct order {
	struct loop *l;
	int seen[16];
	uint64_t at[16];
	int n;
	int quit_after;
};

struct tagged {
	struct order *o;
	int tag;
	struct loop_timer *t;
};

static void on_tagged(struct loop_timer *t, void *ud)
{
	struct tagged *tg = ud;
	struct order *o = tg->o;

	(void)t;
	o->at[o->n] = loop_now_ms();
	o->seen[o->n++] = tg->tag;
	if (o->n == o->quit_after)
		loop_quit(o->l, 7);
}

static void test_timers_fire_in_order(void **state)
{
	(void)state;
	struct loop_timer *guard;
	struct loop *l = new_loop(&guard, 2000);
	struct order o = {.l = l, .quit_after = 5};
	/* armed out of order; 15a and 15b share a deadline and must keep arming order */
	const uint64_t delay[] = {30, 10, 15, 15, 20};
	const int tag[] = {30, 10, 151, 152, 20};
	struct tagged tg[5];
	uint64_t start = loop_now_ms();

	for (int i = 0; i < 5; i++) {
		tg[i] = (struct tagged){.o = &o, .tag = tag[i]};
		assert_int_equal(loop_timer_new(l, on_tagged, &tg[i], &tg[i].t), 0);
	}
	/* same-deadline ties need the same now: arm 15a and 15b back to back */
	for (int i = 0; i < 5; i++)
		loop_timer_arm(tg[i].t, delay[i], 0);
	assert_true(loop_timer_armed(tg[0].t));
	assert_int_equal(loop_run(l), 7);

	const int want[] = {10, 151, 152, 20, 30};
	for (int i = 0; i < 5; i++)
		assert_int_equal(o.seen[i], want[i]);
	/* never early */
	assert_true(o.at[0] - start >= 10);
	assert_true(o.at[4] - start >= 30);
	for (int i = 0; i < 5; i++) {
		assert_false(loop_timer_armed(tg[i].t));
		tg[i].t = loop_timer_free(tg[i].t);
		assert_null(tg[i].t);
	}
	loop_free(l);
}

struct periodic {
	struct loop *l;
	int count;
	uint64_t at[8];
};

static void on_periodic(struct loop_timer *t, void *ud)
{
	struct periodic *p = ud;

	p->at[p->count++] = loop_now_ms();
	assert_true(loop_timer_armed(t)); /* already scheduled for the next period */
	if (p->count == 5) {
		loop_timer_disarm(t);
		loop_quit(p->l, 0);
	}
}

static void test_periodic_timer(void **state)
{
	(void)state;
	struct loop_timer *guard, *t;
	struct loop *l = new_loop(&guard, 2000);
	struct periodic p = {.l = l};
	uint64_t start = loop_now_ms();

	assert_int_equal(loop_timer_new(l, on_periodic, &p, &t), 0);
	loop_timer_arm(t, 20, 20);
	assert_int_equal(loop_run(l), 0);
	assert_int_equal(p.count, 5);
	assert_false(loop_timer_armed(t));
	/* phase kept: the k-th expiry is not before start + 20 * k */
	for (int k = 0; k < 5; k++)
		assert_true(p.at[k] >= start + 20u * (unsigned)(k + 1));
	assert_true(p.at[4] - start < 1000);
	loop_timer_free(t);
	loop_free(l);
}

struct rearm {
	struct loop *l;
	int count;
};

static void on_rearm(struct loop_timer *t, void *ud)
{
	struct rearm *r = ud;

	if (++r->count < 3)
		loop_timer_arm(t, 0, 0); /* next iteration, not now again */
	else
		loop_quit(r->l, 0);
}

static void test_timer_rearm_and_cancel(void **state)
{
	(void)state;
	struct loop_timer *guard, *t, *never;
	struct loop *l = new_loop(&guard, 2000);
	struct rearm r = {.l = l};
	struct order o = {.l = l, .quit_after = 100};
	struct tagged tg = {.o = &o, .tag = 1};

	assert_int_equal(loop_timer_new(l, on_rearm, &r, &t), 0);
	assert_int_equal(loop_timer_new(l, on_tagged, &tg, &never), 0);
	loop_timer_arm(never, 10, 0);
	loop_timer_arm(never, 5000, 0); /* re-arm replaces */
	assert_true(loop_timer_deadline_ms(never) >= loop_now_ms() + 4000);
	loop_timer_disarm(never);
	assert_false(loop_timer_armed(never));
	assert_int_equal(loop_timer_deadline_ms(never), 0);
	loop_timer_arm(t, 30, 0);
	assert_int_equal(loop_run(l), 0);
	assert_int_equal(r.count, 3);
	assert_int_equal(o.n, 0);
	loop_timer_free(t);
	loop_timer_free(never);
	loop_timer_free(NULL);
	loop_free(l);
}

/* ---- removal from inside callbacks ---- */

struct killer {
	struct loop *l;
	struct loop_timer *self;
	struct loop_timer *victim;
	int ran;
	int victim_ran;
};

static void on_victim(struct loop_timer *t, void *ud)
{
	struct killer *k = ud;

	(void)t;
	k->victim_ran++;
}

static void on_killer(struct loop_timer *t, void *ud)
{
	struct killer *k = ud;

	assert_ptr_equal(t, k->self);
	k->ran++;
	k->victim = loop_timer_free(k->victim); /* due in the same batch */
	k->self = loop_timer_free(t);           /* and itself */
}

static void on_after(struct loop_timer *t, void *ud)
{
	(void)t;
	loop_quit(ud, 0);
}

static void test_timer_free_inside_callback(void **state)
{
	(void)state;
	struct loop_timer *guard, *after;
	struct loop *l = new_loop(&guard, 2000);
	struct killer k = {.l = l};

	assert_int_equal(loop_timer_new(l, on_killer, &k, &k.self), 0);
	assert_int_equal(loop_timer_new(l, on_victim, &k, &k.victim), 0);
	assert_int_equal(loop_timer_new(l, on_after, l, &after), 0);
	loop_timer_arm(k.self, 10, 10);  /* periodic, freed in its first run */
	loop_timer_arm(k.victim, 10, 0); /* same deadline, armed later: runs after the killer */
	loop_timer_arm(after, 60, 0);
	assert_int_equal(loop_run(l), 0);
	assert_int_equal(k.ran, 1);
	assert_int_equal(k.victim_ran, 0);
	assert_null(k.self);
	assert_null(k.victim);
	loop_timer_free(after);
	loop_free(l);
}

struct pair {
	struct loop *l;
	int fd[2];
	struct loop_watch *w[2];
	int calls[2];
};

static void on_pair(struct loop_watch *w, int fd, uint32_t events, void *ud)
{
	struct pair *p = ud;
	int me = w == p->w[0] ? 0 : 1;

	assert_ptr_equal(w, p->w[me]);
	assert_int_equal(fd, p->fd[me]);
	assert_true(events & EPOLLIN);
	p->calls[me]++;
	/* both are ready in the same batch: remove the other one and ourselves */
	p->w[!me] = loop_watch_remove(p->w[!me]);
	close(p->fd[!me]);
	p->w[me] = loop_watch_remove(w);
}

static void on_quit_soon(struct loop_timer *t, void *ud)
{
	(void)t;
	loop_quit(ud, 0);
}

static void test_watch_remove_inside_callback(void **state)
{
	(void)state;
	struct loop_timer *guard, *soon;
	struct loop *l = new_loop(&guard, 2000);
	struct pair p = {.l = l};
	int a[2], b[2];

	assert_int_equal(pipe2(a, O_NONBLOCK | O_CLOEXEC), 0);
	assert_int_equal(pipe2(b, O_NONBLOCK | O_CLOEXEC), 0);
	p.fd[0] = a[0];
	p.fd[1] = b[0];
	assert_int_equal(write(a[1], "x", 1), 1);
	assert_int_equal(write(b[1], "y", 1), 1);
	assert_int_equal(loop_watch_add(l, p.fd[0], EPOLLIN, on_pair, &p, &p.w[0]), 0);
	assert_int_equal(loop_watch_add(l, p.fd[1], EPOLLIN, on_pair, &p, &p.w[1]), 0);
	assert_int_equal(loop_timer_new(l, on_quit_soon, l, &soon), 0);
	loop_timer_arm(soon, 50, 0);
	assert_int_equal(loop_run(l), 0);
	/* exactly one of the two ran: the other was removed before its turn */
	assert_int_equal(p.calls[0] + p.calls[1], 1);
	assert_null(p.w[0]);
	assert_null(p.w[1]);
	close(a[1]);
	close(b[1]);
	loop_timer_free(soon);
	loop_free(l);
}

/* ---- fd watches ---- */

struct pipe_state {
	struct loop *l;
	int rfd, wfd;
	struct loop_watch *rw, *ww;
	char got[64];
	size_t len;
	int writable;
	bool hup;
};

static void on_pipe_read(struct loop_watch *w, int fd, uint32_t events, void *ud)
{
	struct pipe_state *ps = ud;

	if (events & EPOLLIN) {
		ssize_t n = read(fd, ps->got + ps->len, sizeof(ps->got) - 1 - ps->len);
		if (n > 0) {
			ps->len += (size_t)n;
			return;
		}
	}
	if (events & EPOLLHUP) {
		ps->hup = true;
		loop_watch_remove(w);
		loop_quit(ps->l, 3);
	}
}

static void on_pipe_write(struct loop_watch *w, int fd, uint32_t events, void *ud)
{
	struct pipe_state *ps = ud;

	assert_true(events & EPOLLOUT);
	ps->writable++;
	assert_int_equal(write(fd, "hello", 5), 5);
	/* written once: stop asking for EPOLLOUT, then hang up */
	assert_int_equal(loop_watch_modify(w, 0), 0);
	assert_int_equal(loop_watch_events(w), 0);
	ps->ww = loop_watch_remove(w);
	close(ps->wfd);
	ps->wfd = -1;
}

static void test_fd_watch_pipe(void **state)
{
	(void)state;
	struct loop_timer *guard;
	struct loop *l = new_loop(&guard, 2000);
	struct pipe_state ps = {.l = l};
	int fds[2];
	struct loop_watch *dup;

	assert_int_equal(pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0);
	ps.rfd = fds[0];
	ps.wfd = fds[1];
	assert_int_equal(loop_watch_add(l, ps.rfd, EPOLLIN, on_pipe_read, &ps, &ps.rw), 0);
	assert_int_equal(loop_watch_add(l, ps.rfd, EPOLLIN, on_pipe_read, &ps, &dup), -EEXIST);
	assert_int_equal(loop_watch_add(l, ps.wfd, 0, on_pipe_write, &ps, &ps.ww), 0);
	assert_int_equal(loop_watch_modify(ps.ww, EPOLLOUT), 0);
	assert_int_equal(loop_watch_events(ps.ww), EPOLLOUT);
	assert_int_equal(loop_run(l), 3);
	assert_int_equal(ps.writable, 1);
	assert_true(ps.hup);
	assert_int_equal(ps.len, 5);
	assert_memory_equal(ps.got, "hello", 5);
	close(ps.rfd);
	loop_free(l);
}

struct paused {
	struct loop *l;
	int calls;
	uint32_t events;
	int iterations;
};

static void on_paused_fd(struct loop_watch *w, int fd, uint32_t events, void *ud)
{
	struct paused *p = ud;

	(void)fd;
	p->calls++;
	p->events = events;
	loop_watch_remove(w);
	loop_quit(p->l, 4);
}

static void on_count_iteration(struct loop *l, void *ud)
{
	(void)l;
	((struct paused *)ud)->iterations++;
}

static void test_paused_watch_ignores_hangup(void **state)
{
	(void)state;
	struct loop_timer *guard;
	struct loop *l = new_loop(&guard, 100);
	struct paused p = {.l = l};
	struct loop_watch *w, *dup;
	int fds[2];

	assert_int_equal(pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0);
	close(fds[1]); /* the read end hangs up at once, and stays hung up */
	assert_int_equal(loop_hook_add(l, on_count_iteration, &p, NULL), 0);
	assert_int_equal(loop_watch_add(l, fds[0], 0, on_paused_fd, &p, &w), 0);
	assert_int_equal(loop_run(l), GUARD_CODE);
	assert_int_equal(p.calls, 0);
	assert_true(p.iterations < 5); /* slept until the guard, no spinning on EPOLLHUP */

	/* paused after being active, then active again */
	assert_int_equal(loop_watch_modify(w, EPOLLIN), 0);
	assert_int_equal(loop_watch_modify(w, 0), 0);
	loop_timer_arm(guard, 50, 0);
	assert_int_equal(loop_run(l), GUARD_CODE);
	assert_int_equal(p.calls, 0);
	assert_int_equal(loop_watch_modify(w, EPOLLIN), 0);
	loop_timer_arm(guard, 1000, 0);
	assert_int_equal(loop_run(l), 4);
	assert_int_equal(p.calls, 1);
	assert_true(p.events & EPOLLHUP);
	assert_int_equal(loop_watch_add(l, -1, 0, on_paused_fd, &p, &dup), -EINVAL);
	close(fds[0]);
	loop_free(l);
}

static void test_regular_file_is_eperm(void **state)
{
	(void)state;
	struct loop *l;
	struct loop_watch *w = NULL;
	FILE *f = tmpfile();
	int fd;

	assert_non_null(f);
	fd = dup(fileno(f));
	fclose(f);
	assert_true(fd >= 0);
	assert_int_equal(loop_new(&l), 0);
	assert_int_equal(loop_watch_add(l, fd, EPOLLIN, on_pipe_read, NULL, &w), -EPERM);
	assert_null(w);
	close(fd);
	loop_free(l);
}

/* ---- signals ---- */

struct sigstate {
	int signo;
	int count;
};

static void on_signal(struct loop *l, int signo, void *ud)
{
	struct sigstate *s = ud;

	s->signo = signo;
	s->count++;
	loop_quit(l, 5);
}

static bool blocked(int signo)
{
	sigset_t cur;

	sigprocmask(SIG_BLOCK, NULL, &cur);
	return sigismember(&cur, signo);
}

static void test_signals(void **state)
{
	(void)state;
	struct loop_timer *guard;
	struct loop *l = new_loop(&guard, 2000);
	struct sigstate s = {0};

	assert_true(blocked(SIGTERM));
	assert_true(blocked(SIGHUP));
	assert_true(blocked(SIGINT));

	assert_int_equal(loop_signal_set(l, SIGHUP, on_signal, &s), 0);
	raise(SIGHUP);
	assert_int_equal(loop_run(l), 5);
	assert_int_equal(s.signo, SIGHUP);
	assert_int_equal(s.count, 1);

	/* a signal not blocked by default */
	assert_int_equal(loop_signal_set(l, SIGUSR1, on_signal, &s), 0);
	assert_true(blocked(SIGUSR1));
	raise(SIGUSR1);
	assert_int_equal(loop_run(l), 5);
	assert_int_equal(s.signo, SIGUSR1);

	/* SIGTERM without a handler: quit with 0; loop_run can run again after returning */
	raise(SIGTERM);
	assert_int_equal(loop_run(l), 0);
	assert_int_equal(s.count, 2);

	/* SIGHUP back to the default (ignored): the guard ends the run */
	assert_int_equal(loop_signal_set(l, SIGHUP, NULL, NULL), 0);
	raise(SIGHUP);
	loop_timer_arm(guard, 100, 0);
	assert_int_equal(loop_run(l), GUARD_CODE);
	assert_int_equal(s.count, 2);

	assert_int_equal(loop_signal_set(l, SIGKILL, on_signal, &s), -EINVAL);
	assert_int_equal(loop_signal_set(l, 0, on_signal, &s), -EINVAL);

	/* a pending signal is discarded, and the old mask restored, by loop_free */
	raise(SIGTERM);
	loop_free(l);
	assert_false(blocked(SIGTERM));
	assert_false(blocked(SIGUSR1));
	assert_false(blocked(SIGHUP));
}

/* ---- hooks and quit ---- */

struct hooks {
	struct loop *l;
	struct loop_hook *h[3];
	int calls[3];
	int order[16];
	int n;
};

struct hook_ctx {
	struct hooks *hs;
	int id;
};

static void on_hook(struct loop *l, void *ud)
{
	struct hook_ctx *c = ud;
	struct hooks *hs = c->hs;

	(void)l;
	hs->calls[c->id]++;
	if (hs->n < 16)
		hs->order[hs->n++] = c->id;
	if (c->id == 0 && hs->calls[0] == 2) {
		/* second iteration: hook 0 removes hook 1 (not yet run) and itself */
		hs->h[1] = loop_hook_remove(hs->h[1]);
		hs->h[0] = loop_hook_remove(hs->h[0]);
	}
	if (c->id == 2 && hs->calls[2] == 4)
		loop_quit(hs->l, 0);
}

static void on_tick(struct loop_timer *t, void *ud)
{
	(void)t;
	(void)ud;
}

static void test_hooks(void **state)
{
	(void)state;
	struct loop_timer *guard, *tick;
	struct loop *l = new_loop(&guard, 2000);
	struct hooks hs = {.l = l};
	struct hook_ctx ctx[3];

	for (int i = 0; i < 3; i++) {
		ctx[i] = (struct hook_ctx){.hs = &hs, .id = i};
		assert_int_equal(loop_hook_add(l, on_hook, &ctx[i], &hs.h[i]), 0);
	}
	/* something to wake up for each iteration */
	assert_int_equal(loop_timer_new(l, on_tick, NULL, &tick), 0);
	loop_timer_arm(tick, 5, 5);
	assert_int_equal(loop_run(l), 0);
	assert_int_equal(hs.calls[0], 2);
	assert_int_equal(hs.calls[1], 1);
	assert_int_equal(hs.calls[2], 4);
	const int want[] = {0, 1, 2, 0, 2, 2, 2};
	assert_int_equal(hs.n, 7);
	for (int i = 0; i < 7; i++)
		assert_int_equal(hs.order[i], want[i]);
	assert_null(hs.h[0]);
	assert_null(hs.h[1]);
	hs.h[2] = loop_hook_remove(hs.h[2]);
	loop_timer_free(tick);
	loop_free(l);
}

static void test_quit_before_run_and_first_code_wins(void **state)
{
	(void)state;
	struct loop *l;
	uint64_t a = loop_now_ms(), b;

	assert_int_equal(loop_new(&l), 0);
	loop_quit(l, 11);
	loop_quit(l, 12);
	assert_int_equal(loop_run(l), 11);
	b = loop_now_ms();
	assert_true(b >= a);
	assert_null(loop_free(l));
	assert_null(loop_free(NULL));
	assert_null(loop_watch_remove(NULL));
	assert_null(loop_hook_remove(NULL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_timers_fire_in_order),
	        cmocka_unit_test(test_periodic_timer),
	        cmocka_unit_test(test_timer_rearm_and_cancel),
	        cmocka_unit_test(test_timer_free_inside_callback),
	        cmocka_unit_test(test_watch_remove_inside_callback),
	        cmocka_unit_test(test_fd_watch_pipe),
	        cmocka_unit_test(test_paused_watch_ignores_hangup),
	        cmocka_unit_test(test_regular_file_is_eperm),
	        cmocka_unit_test(test_signals),
	        cmocka_unit_test(test_hooks),
	        cmocka_unit_test(test_quit_before_run_and_first_code_wins),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
