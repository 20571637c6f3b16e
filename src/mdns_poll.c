/* mdns_poll.c - an AvahiPoll on p1d's loop, so that libavahi-client (mdns.c) runs on the one
 * thread without a poll loop of its own: an AvahiWatch becomes a loop watch (several on one fd,
 * as libdbus makes for its socket's reading and writing, share one loop watch), an
 * AvahiTimeout a loop timer (avahi's absolute gettimeofday times turned into delays).
 *
 * Every object may be freed from inside its own callback, and a watch from inside the
 * callback of another watch on the same fd: watches freed during a dispatch are only marked
 * dead and swept when it ends. It never waits and never logs. mdns.c is its only user.
 */
#include "mdns_poll.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/time.h>

#include <avahi-common/watch.h>

#include "loop.h"

struct fdw;

struct AvahiWatch {
	struct fdw *f;
	struct AvahiWatch *next;
	AvahiWatchEvent events;  /* wanted */
	AvahiWatchEvent revents; /* of the dispatch in progress, for watch_get_events */
	AvahiWatchCallback cb;
	void *ud;
	bool dead; /* freed while its fd was being dispatched */
};

/* One loop watch per fd, shared by every AvahiWatch on it (libdbus watches its socket once
 * for reading and once for writing). */
struct fdw {
	struct mdns_poll *p;
	struct fdw *next;
	int fd;
	struct loop_watch *lw;
	struct AvahiWatch *watches;
	int busy; /* dispatching: AvahiWatches are only marked dead */
};

struct AvahiTimeout {
	struct mdns_poll *p;
	struct AvahiTimeout *prev, *next;
	struct loop_timer *t;
	AvahiTimeoutCallback cb;
	void *ud;
};

struct mdns_poll {
	AvahiPoll api; /* api.userdata is this */
	struct loop *loop;
	struct fdw *fds;
	struct AvahiTimeout *timeouts;
};

static uint32_t to_epoll(AvahiWatchEvent e)
{
	return ((e & AVAHI_WATCH_IN) ? EPOLLIN : 0u) | ((e & AVAHI_WATCH_OUT) ? EPOLLOUT : 0u);
}

static AvahiWatchEvent from_epoll(uint32_t e)
{
	return (AvahiWatchEvent)(((e & EPOLLIN) ? AVAHI_WATCH_IN : 0) |
	                         ((e & EPOLLOUT) ? AVAHI_WATCH_OUT : 0) |
	                         ((e & EPOLLERR) ? AVAHI_WATCH_ERR : 0) |
	                         ((e & (EPOLLHUP | EPOLLRDHUP)) ? AVAHI_WATCH_HUP : 0));
}

static void fdw_update(struct fdw *f)
{
	AvahiWatchEvent e = 0;

	for (struct AvahiWatch *w = f->watches; w; w = w->next)
		if (!w->dead)
			e |= w->events;
	if (loop_watch_events(f->lw) != to_epoll(e))
		(void)loop_watch_modify(f->lw, to_epoll(e)); /* only fails for a closed fd */
}

static void fdw_free(struct fdw *f)
{
	struct fdw **pp = &f->p->fds;

	while (*pp != f)
		pp = &(*pp)->next;
	*pp = f->next;
	loop_watch_remove(f->lw);
	while (f->watches) {
		struct AvahiWatch *w = f->watches;
		f->watches = w->next;
		free(w);
	}
	free(f);
}

/* Frees the dead watches, and the fdw when none is left. */
static void fdw_sweep(struct fdw *f)
{
	struct AvahiWatch **pp = &f->watches;

	while (*pp) {
		struct AvahiWatch *w = *pp;
		if (w->dead) {
			*pp = w->next;
			free(w);
		} else {
			pp = &w->next;
		}
	}
	if (!f->watches)
		fdw_free(f);
	else
		fdw_update(f);
}

static void on_fd(struct loop_watch *lw, int fd, uint32_t events, void *ud)
{
	struct fdw *f = ud;
	AvahiWatchEvent got = from_epoll(events);

	(void)lw;
	f->busy++;
	for (struct AvahiWatch *w = f->watches; w; w = w->next) {
		AvahiWatchEvent e = got & (w->events | AVAHI_WATCH_ERR | AVAHI_WATCH_HUP);
		if (w->dead || !e)
			continue;
		w->revents = e;
		w->cb(w, fd, e, w->ud);
		w->revents = 0; /* w may be dead now, but is not freed while f is busy */
	}
	if (--f->busy == 0)
		fdw_sweep(f);
}

static AvahiWatch *watch_new(const AvahiPoll *api, int fd, AvahiWatchEvent events,
                             AvahiWatchCallback cb, void *ud)
{
	struct mdns_poll *p = api->userdata;
	struct fdw *f = p->fds;
	struct AvahiWatch *w = calloc(1, sizeof(*w));

	if (!w)
		return NULL;
	while (f && f->fd != fd)
		f = f->next;
	if (!f && (f = calloc(1, sizeof(*f)))) {
		*f = (struct fdw){.p = p, .fd = fd};
		if (loop_watch_add(p->loop, fd, 0, on_fd, f, &f->lw) < 0) {
			free(f);
			f = NULL;
		} else {
			f->next = p->fds;
			p->fds = f;
		}
	}
	if (!f) {
		free(w);
		return NULL;
	}
	*w = (struct AvahiWatch){.f = f, .events = events, .cb = cb, .ud = ud};
	struct AvahiWatch **pp = &f->watches;
	while (*pp)
		pp = &(*pp)->next;
	*pp = w; /* appended: a dispatch in progress reaches it only for events it wants */
	fdw_update(f);
	return w;
}

static void watch_update(AvahiWatch *w, AvahiWatchEvent events)
{
	w->events = events;
	fdw_update(w->f);
}

static AvahiWatchEvent watch_get_events(AvahiWatch *w)
{
	return w->revents;
}

static void watch_free(AvahiWatch *w)
{
	struct fdw *f = w->f;

	w->dead = true;
	if (f->busy)
		fdw_update(f);
	else
		fdw_sweep(f);
}

static void on_timer(struct loop_timer *t, void *ud)
{
	struct AvahiTimeout *to = ud;

	(void)t;
	to->cb(to, to->ud); /* may free to */
}

/* avahi's times are absolute, on gettimeofday's clock; loop timers take a delay. */
static void timeout_arm(struct AvahiTimeout *to, const struct timeval *tv)
{
	struct timeval now;
	int64_t us;

	if (!tv) {
		loop_timer_disarm(to->t);
		return;
	}
	gettimeofday(&now, NULL);
	us = (int64_t)(tv->tv_sec - now.tv_sec) * 1000000 + (tv->tv_usec - now.tv_usec);
	loop_timer_arm(to->t, us > 0 ? (uint64_t)(us + 999) / 1000 : 0, 0);
}

static AvahiTimeout *timeout_new(const AvahiPoll *api, const struct timeval *tv,
                                 AvahiTimeoutCallback cb, void *ud)
{
	struct mdns_poll *p = api->userdata;
	struct AvahiTimeout *to = calloc(1, sizeof(*to));

	if (!to)
		return NULL;
	*to = (struct AvahiTimeout){.p = p, .cb = cb, .ud = ud, .next = p->timeouts};
	if (loop_timer_new(p->loop, on_timer, to, &to->t) < 0) {
		free(to);
		return NULL;
	}
	if (p->timeouts)
		p->timeouts->prev = to;
	p->timeouts = to;
	timeout_arm(to, tv);
	return to;
}

static void timeout_update(AvahiTimeout *to, const struct timeval *tv)
{
	timeout_arm(to, tv);
}

static void timeout_free(AvahiTimeout *to)
{
	if (!to)
		return;
	loop_timer_free(to->t);
	if (to->prev)
		to->prev->next = to->next;
	else
		to->p->timeouts = to->next;
	if (to->next)
		to->next->prev = to->prev;
	free(to);
}

int mdns_poll_new(struct loop *loop, struct mdns_poll **ret_poll)
{
	struct mdns_poll *p = calloc(1, sizeof(*p));

	if (!p)
		return -ENOMEM;
	p->loop = loop;
	p->api = (AvahiPoll){
	        .userdata = p,
	        .watch_new = watch_new,
	        .watch_update = watch_update,
	        .watch_get_events = watch_get_events,
	        .watch_free = watch_free,
	        .timeout_new = timeout_new,
	        .timeout_update = timeout_update,
	        .timeout_free = timeout_free,
	};
	*ret_poll = p;
	return 0;
}

struct mdns_poll *mdns_poll_free(struct mdns_poll *p)
{
	if (!p)
		return NULL;
	for (struct fdw *f = p->fds, *next; f; f = next) {
		next = f->next;
		fdw_free(f);
	}
	for (struct AvahiTimeout *to = p->timeouts, *next; to; to = next) {
		next = to->next;
		timeout_free(to);
	}
	free(p);
	return NULL;
}

const struct AvahiPoll *mdns_poll_api(struct mdns_poll *p)
{
	return &p->api;
}
