/* loop.c - the event loop (see loop.h): owns the epoll fd, the one timerfd, the signalfd and
 * the lists of watches, timers and hooks. It is the only caller of epoll_wait in p1d and never
 * waits anywhere else; it knows nothing about what the callbacks do.
 *
 * Timers: one timerfd for all timers, programmed (absolute, CLOCK_MONOTONIC) to the deadline
 * of the head of a list sorted by deadline, and only just before epoll_wait, so arming many
 * timers in one iteration costs one timerfd_settime; a head that is due already costs none
 * (epoll_wait does not wait, and the timers run after the events). Compared with one timerfd per timer this
 * costs no fd per timer and gives a deterministic order: timers that are due together run in
 * deadline order, ties in arming order. p1d has a few dozen timers at most, so the sorted
 * linked list (O(n) insert) is cheaper than a heap in code and in practice.
 *
 * Safe removal: epoll_wait returns a batch of events pointing at watches. A watch removed
 * while a batch is being dispatched is taken out of epoll at once but only marked dead; dead
 * watches are skipped and freed after the batch. Expired timers are moved to a separate list
 * and popped one by one, so a callback may free any timer. Hooks use the same mark-and-sweep
 * as watches. */
#include "loop.h"

#include "log.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

/* Events taken from the kernel per epoll_wait; more simply wait for the next iteration. */
#define LOOP_MAX_EVENTS 64

struct loop_watch {
	struct loop *loop;
	int fd;
	uint32_t events;
	loop_fd_cb cb;
	void *ud;
	bool in_epoll; /* false while paused (events == 0) */
	bool dead;
	struct loop_watch *prev, *next; /* l->watches */
};

enum timer_place { TIMER_IDLE, TIMER_ACTIVE, TIMER_EXPIRED };

struct loop_timer {
	struct loop *loop;
	loop_timer_cb cb;
	void *ud;
	uint64_t deadline_ms;
	uint64_t interval_ms;
	enum timer_place place;
	struct loop_timer *prev, *next;         /* l->active or l->expired, by place */
	struct loop_timer *all_prev, *all_next; /* l->timers: every timer, for loop_free */
};

struct loop_hook {
	struct loop *loop;
	loop_hook_cb cb;
	void *ud;
	bool dead;
	struct loop_hook *next;
};

struct signal_handler {
	loop_signal_cb cb;
	void *ud;
};

struct timer_list {
	struct loop_timer *head, *tail;
};

struct loop {
	int epfd;
	int timerfd;
	int sigfd;
	struct loop_watch *timer_watch;
	struct loop_watch *signal_watch;

	struct loop_watch *watches;
	struct loop_watch *dead_watches; /* removed during a batch, freed after it */
	bool dispatching;

	struct timer_list active;  /* armed, sorted by deadline */
	struct timer_list expired; /* due, being dispatched */
	struct loop_timer *timers; /* all timers */
	uint64_t programmed_ms;    /* what the timerfd is set to, 0 = disarmed */

	struct loop_hook *hooks;
	bool running_hooks;
	bool hooks_dirty;

	sigset_t sigmask;     /* signals routed to the signalfd */
	sigset_t old_sigmask; /* restored by loop_free */
	struct signal_handler handlers[_NSIG];

	bool quit;
	int quit_code;
};

uint64_t loop_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- timer lists ---- */

static void tl_unlink(struct timer_list *tl, struct loop_timer *t)
{
	if (t->prev)
		t->prev->next = t->next;
	else
		tl->head = t->next;
	if (t->next)
		t->next->prev = t->prev;
	else
		tl->tail = t->prev;
	t->prev = t->next = NULL;
}

static void tl_append(struct timer_list *tl, struct loop_timer *t)
{
	t->next = NULL;
	t->prev = tl->tail;
	if (tl->tail)
		tl->tail->next = t;
	else
		tl->head = t;
	tl->tail = t;
}

/* Sorted insert after every timer with deadline <= t's, scanning from the tail: new
 * deadlines are usually the latest. */
static void tl_insert_sorted(struct timer_list *tl, struct loop_timer *t)
{
	struct loop_timer *after = tl->tail;

	while (after && after->deadline_ms > t->deadline_ms)
		after = after->prev;
	t->prev = after;
	t->next = after ? after->next : tl->head;
	if (t->next)
		t->next->prev = t;
	else
		tl->tail = t;
	if (after)
		after->next = t;
	else
		tl->head = t;
}

static void timer_take_out(struct loop_timer *t)
{
	if (t->place == TIMER_ACTIVE)
		tl_unlink(&t->loop->active, t);
	else if (t->place == TIMER_EXPIRED)
		tl_unlink(&t->loop->expired, t);
	t->place = TIMER_IDLE;
}

static void timer_schedule(struct loop_timer *t, uint64_t deadline_ms)
{
	timer_take_out(t);
	t->deadline_ms = deadline_ms;
	t->place = TIMER_ACTIVE;
	tl_insert_sorted(&t->loop->active, t);
}

/* Set the timerfd to the earliest deadline, if that changed. Called only before waiting. */
static int program_timerfd(struct loop *l)
{
	uint64_t want = l->active.head ? l->active.head->deadline_ms : 0;
	struct itimerspec its = {0};

	if (want == l->programmed_ms)
		return 0;
	if (want) {
		its.it_value.tv_sec = (time_t)(want / 1000);
		its.it_value.tv_nsec = (long)(want % 1000) * 1000000L;
		if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
			its.it_value.tv_nsec = 1; /* all zero would disarm */
	}
	if (timerfd_settime(l->timerfd, TFD_TIMER_ABSTIME, &its, NULL) < 0)
		return -errno;
	l->programmed_ms = want;
	return 0;
}

static void dispatch_timers(struct loop *l)
{
	uint64_t now = loop_now_ms();
	struct loop_timer *t;

	/* move everything that is due to the expired list, in order */
	while ((t = l->active.head) && t->deadline_ms <= now) {
		tl_unlink(&l->active, t);
		t->place = TIMER_EXPIRED;
		tl_append(&l->expired, t);
	}
	while (!l->quit && (t = l->expired.head)) {
		tl_unlink(&l->expired, t);
		t->place = TIMER_IDLE;
		if (t->interval_ms) {
			uint64_t missed = (now - t->deadline_ms) / t->interval_ms + 1;
			timer_schedule(t, t->deadline_ms + missed * t->interval_ms);
		}
		t->cb(t, t->ud); /* t may be gone now */
	}
	/* after loop_quit: whatever is left stays due for the next loop_run */
	while ((t = l->expired.head)) {
		tl_unlink(&l->expired, t);
		t->place = TIMER_ACTIVE;
		tl_insert_sorted(&l->active, t);
	}
}

static void on_timerfd(struct loop_watch *w, int fd, uint32_t events, void *ud)
{
	struct loop *l = ud;
	uint64_t expirations;

	(void)w;
	(void)events;
	/* drain; EAGAIN is fine (the timer was re-programmed to the future meanwhile) */
	if (read(fd, &expirations, sizeof(expirations)) < 0 && errno != EAGAIN)
		log_debug("loop: reading timerfd: %m");
	l->programmed_ms = 0; /* a one-shot absolute timerfd is disarmed once it fired */
	dispatch_timers(l);
}

int loop_timer_new(struct loop *l, loop_timer_cb cb, void *ud, struct loop_timer **ret_timer)
{
	struct loop_timer *t;

	if (!cb)
		return -EINVAL;
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->loop = l;
	t->cb = cb;
	t->ud = ud;
	t->all_next = l->timers;
	if (l->timers)
		l->timers->all_prev = t;
	l->timers = t;
	*ret_timer = t;
	return 0;
}

void loop_timer_arm(struct loop_timer *t, uint64_t delay_ms, uint64_t interval_ms)
{
	t->interval_ms = interval_ms;
	timer_schedule(t, loop_now_ms() + delay_ms);
}

void loop_timer_disarm(struct loop_timer *t)
{
	if (!t)
		return;
	timer_take_out(t);
	t->interval_ms = 0;
	t->deadline_ms = 0;
}

bool loop_timer_armed(const struct loop_timer *t)
{
	return t && t->place != TIMER_IDLE;
}

uint64_t loop_timer_deadline_ms(const struct loop_timer *t)
{
	return loop_timer_armed(t) ? t->deadline_ms : 0;
}

struct loop_timer *loop_timer_free(struct loop_timer *t)
{
	struct loop *l;

	if (!t)
		return NULL;
	l = t->loop;
	timer_take_out(t);
	if (t->all_prev)
		t->all_prev->all_next = t->all_next;
	else
		l->timers = t->all_next;
	if (t->all_next)
		t->all_next->all_prev = t->all_prev;
	free(t);
	return NULL;
}

/* ---- fd watches ---- */

int loop_watch_add(struct loop *l, int fd, uint32_t events, loop_fd_cb cb, void *ud,
                   struct loop_watch **ret_watch)
{
	struct loop_watch *w;
	struct epoll_event ev = {.events = events};

	if (fd < 0 || !cb)
		return -EINVAL;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->loop = l;
	w->fd = fd;
	w->events = events;
	w->cb = cb;
	w->ud = ud;
	ev.data.ptr = w;
	/* added even when paused: this is where epoll says whether it can watch the fd */
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		int r = -errno;
		free(w);
		return r;
	}
	w->in_epoll = true;
	if (events == 0) {
		(void)epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL);
		w->in_epoll = false;
	}
	w->next = l->watches;
	if (l->watches)
		l->watches->prev = w;
	l->watches = w;
	*ret_watch = w;
	return 0;
}

int loop_watch_modify(struct loop_watch *w, uint32_t events)
{
	struct epoll_event ev = {.events = events, .data.ptr = w};

	if (w->dead)
		return -ESTALE;
	if (events == w->events)
		return 0;
	/* epoll reports EPOLLHUP and EPOLLERR whatever the mask says, so a paused watch (say, a
	 * pipe whose writer is gone) would wake the loop forever: pause by leaving epoll */
	if (events == 0) {
		if (epoll_ctl(w->loop->epfd, EPOLL_CTL_DEL, w->fd, NULL) < 0)
			return -errno;
		w->in_epoll = false;
	} else if (epoll_ctl(w->loop->epfd, w->in_epoll ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, w->fd,
	                     &ev) < 0) {
		return -errno;
	} else {
		w->in_epoll = true;
	}
	w->events = events;
	return 0;
}

uint32_t loop_watch_events(const struct loop_watch *w)
{
	return w->events;
}

struct loop_watch *loop_watch_remove(struct loop_watch *w)
{
	struct loop *l;

	if (!w || w->dead)
		return NULL;
	l = w->loop;
	/* EBADF/ENOENT here mean the owner closed the fd first; nothing left to undo */
	if (w->in_epoll)
		(void)epoll_ctl(l->epfd, EPOLL_CTL_DEL, w->fd, NULL);
	if (w->prev)
		w->prev->next = w->next;
	else
		l->watches = w->next;
	if (w->next)
		w->next->prev = w->prev;
	if (l->dispatching) {
		w->dead = true;
		w->prev = NULL;
		w->next = l->dead_watches;
		l->dead_watches = w;
	} else {
		free(w);
	}
	return NULL;
}

static void free_dead_watches(struct loop *l)
{
	while (l->dead_watches) {
		struct loop_watch *w = l->dead_watches;
		l->dead_watches = w->next;
		free(w);
	}
}

/* ---- signals ---- */

static void default_signal(struct loop *l, int signo)
{
	if (signo == SIGTERM || signo == SIGINT) {
		log_notice("SIG%s received, shutting down", sigabbrev_np(signo));
		loop_quit(l, 0);
	} else {
		log_info("SIG%s received and ignored", sigabbrev_np(signo));
	}
}

static void on_signalfd(struct loop_watch *w, int fd, uint32_t events, void *ud)
{
	struct loop *l = ud;
	struct signalfd_siginfo si;

	(void)w;
	(void)events;
	/* one signal per iteration keeps loop_quit() prompt; level-triggered epoll brings us
	 * back for the rest */
	ssize_t n = read(fd, &si, sizeof(si));
	if (n != (ssize_t)sizeof(si))
		return;
	int signo = (int)si.ssi_signo;
	if (signo <= 0 || signo >= _NSIG)
		return;
	if (l->handlers[signo].cb)
		l->handlers[signo].cb(l, signo, l->handlers[signo].ud);
	else
		default_signal(l, signo);
}

int loop_signal_set(struct loop *l, int signo, loop_signal_cb cb, void *ud)
{
	sigset_t one;

	if (signo <= 0 || signo >= _NSIG || signo == SIGKILL || signo == SIGSTOP)
		return -EINVAL;
	if (!sigismember(&l->sigmask, signo)) {
		sigemptyset(&one);
		if (sigaddset(&one, signo) < 0)
			return -EINVAL;
		if (sigprocmask(SIG_BLOCK, &one, NULL) < 0)
			return -errno;
		sigaddset(&l->sigmask, signo);
		if (signalfd(l->sigfd, &l->sigmask, SFD_NONBLOCK | SFD_CLOEXEC) < 0) {
			int r = -errno;
			sigdelset(&l->sigmask, signo);
			if (!sigismember(&l->old_sigmask, signo))
				sigprocmask(SIG_UNBLOCK, &one, NULL);
			return r;
		}
	}
	l->handlers[signo].cb = cb;
	l->handlers[signo].ud = ud;
	return 0;
}

/* ---- hooks ---- */

int loop_hook_add(struct loop *l, loop_hook_cb cb, void *ud, struct loop_hook **ret_hook)
{
	struct loop_hook *h, **p;

	if (!cb)
		return -EINVAL;
	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->loop = l;
	h->cb = cb;
	h->ud = ud;
	for (p = &l->hooks; *p; p = &(*p)->next)
		;
	*p = h;
	if (ret_hook)
		*ret_hook = h;
	return 0;
}

static void sweep_hooks(struct loop *l)
{
	struct loop_hook **p = &l->hooks;

	while (*p) {
		struct loop_hook *h = *p;
		if (h->dead) {
			*p = h->next;
			free(h);
		} else {
			p = &h->next;
		}
	}
	l->hooks_dirty = false;
}

struct loop_hook *loop_hook_remove(struct loop_hook *h)
{
	if (!h || h->dead)
		return NULL;
	h->dead = true;
	h->loop->hooks_dirty = true;
	if (!h->loop->running_hooks)
		sweep_hooks(h->loop);
	return NULL;
}

static void run_hooks(struct loop *l)
{
	l->running_hooks = true;
	/* dead hooks stay linked until the sweep, so h->next stays valid */
	for (struct loop_hook *h = l->hooks; h && !l->quit; h = h->next)
		if (!h->dead)
			h->cb(l, h->ud);
	l->running_hooks = false;
	if (l->hooks_dirty)
		sweep_hooks(l);
}

/* ---- the loop ---- */

int loop_new(struct loop **ret_loop)
{
	struct loop *l = calloc(1, sizeof(*l));
	sigset_t block;
	int r;

	if (!l)
		return -ENOMEM;
	l->epfd = l->timerfd = l->sigfd = -1;
	sigemptyset(&l->sigmask);
	sigaddset(&l->sigmask, SIGTERM);
	sigaddset(&l->sigmask, SIGINT);
	sigaddset(&l->sigmask, SIGHUP);
	block = l->sigmask;
	if (sigprocmask(SIG_BLOCK, &block, &l->old_sigmask) < 0) {
		r = -errno;
		free(l);
		return r;
	}

	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epfd < 0)
		goto fail_errno;
	l->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (l->timerfd < 0)
		goto fail_errno;
	l->sigfd = signalfd(-1, &l->sigmask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (l->sigfd < 0)
		goto fail_errno;
	r = loop_watch_add(l, l->timerfd, EPOLLIN, on_timerfd, l, &l->timer_watch);
	if (r < 0)
		goto fail;
	r = loop_watch_add(l, l->sigfd, EPOLLIN, on_signalfd, l, &l->signal_watch);
	if (r < 0)
		goto fail;
	*ret_loop = l;
	return 0;

fail_errno:
	r = -errno;
fail:
	loop_free(l);
	return r;
}

struct loop *loop_free(struct loop *l)
{
	struct signalfd_siginfo si;

	if (!l)
		return NULL;
	for (struct loop_watch *w = l->watches, *next; w; w = next) {
		next = w->next;
		loop_watch_remove(w);
	}
	free_dead_watches(l);
	for (struct loop_timer *t = l->timers, *next; t; t = next) {
		next = t->all_next;
		loop_timer_free(t);
	}
	for (struct loop_hook *h = l->hooks; h; h = h->next)
		h->dead = true;
	sweep_hooks(l);

	/* discard what is pending so unblocking cannot deliver it with its default action */
	if (l->sigfd >= 0) {
		while (read(l->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
			;
		close(l->sigfd);
	}
	sigprocmask(SIG_SETMASK, &l->old_sigmask, NULL);
	if (l->timerfd >= 0)
		close(l->timerfd);
	if (l->epfd >= 0)
		close(l->epfd);
	free(l);
	return NULL;
}

void loop_quit(struct loop *l, int code)
{
	if (l->quit)
		return;
	l->quit = true;
	l->quit_code = code;
}

static void dispatch_events(struct loop *l, const struct epoll_event *ev, int n)
{
	l->dispatching = true;
	for (int i = 0; i < n && !l->quit; i++) {
		struct loop_watch *w = ev[i].data.ptr;
		/* removed or paused by an earlier callback of this batch */
		if (w->dead || !w->in_epoll)
			continue;
		w->cb(w, w->fd, ev[i].events, w->ud);
	}
	l->dispatching = false;
	free_dead_watches(l);
}

int loop_run(struct loop *l)
{
	struct epoll_event ev[LOOP_MAX_EVENTS];
	int r = 0;

	while (!l->quit) {
		run_hooks(l);
		if (l->quit)
			break;
		/* A timer that is due already (armed for "now": work for the next iteration) needs
		 * no timerfd_settime: poll the fds without waiting, then run it. */
		bool due = l->active.head && l->active.head->deadline_ms <= loop_now_ms();
		r = due ? 0 : program_timerfd(l);
		if (r < 0) {
			log_error("loop: cannot set timerfd: %s", strerror(-r));
			break;
		}
		int n = epoll_wait(l->epfd, ev, LOOP_MAX_EVENTS, due ? 0 : -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			log_error("loop: epoll_wait failed: %m");
			break;
		}
		dispatch_events(l, ev, n);
		if (due && !l->quit)
			dispatch_timers(l);
	}
	if (l->quit)
		r = l->quit_code;
	l->quit = false;
	l->quit_code = 0;
	return r;
}
