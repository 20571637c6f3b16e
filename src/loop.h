/* loop.h - the event loop: the one place in p1d that waits.
 *
 * One epoll instance watches every fd of the process. Timers live in one timerfd
 * (CLOCK_MONOTONIC) whose expiry is set to the earliest deadline of a sorted timer list;
 * signals arrive through a signalfd; "before sleep" hooks run each time the loop is about to
 * wait (batched SQLite commits). Everything is called from loop_run() on the one thread.
 *
 * Callbacks may add, modify, remove or free any watch, timer or hook, including the one being
 * called: a removed watch is never called again, even if its event is already in the batch
 * epoll_wait returned. After loop_quit() no further callback runs in that iteration.
 *
 * Conventions: functions return 0 or a negative errno; objects come from the _new and _add
 * functions with a ret_ out-parameter written only on success, and the matching _free and
 * _remove functions accept NULL and return NULL, so "w = loop_watch_remove(w);" clears the
 * caller's pointer. */
#ifndef P1D_LOOP_H
#define P1D_LOOP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>

struct loop;
struct loop_watch;
struct loop_timer;
struct loop_hook;

/**
 * loop_fd_cb - fd event callback
 * @w: the watch (may be removed from inside the callback)
 * @fd: the watched file descriptor
 * @events: what happened: EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP, EPOLLRDHUP, ...
 * @ud: the pointer given to loop_watch_add()
 */
typedef void (*loop_fd_cb)(struct loop_watch *w, int fd, uint32_t events, void *ud);

/**
 * loop_timer_cb - timer expiry callback
 * @t: the timer (may be re-armed, disarmed or freed from inside the callback)
 * @ud: the pointer given to loop_timer_new()
 *
 * A periodic timer is already scheduled for its next period when the callback runs.
 */
typedef void (*loop_timer_cb)(struct loop_timer *t, void *ud);

/**
 * loop_signal_cb - signal callback, run from the loop (not in signal context)
 * @l: the loop
 * @signo: the signal number
 * @ud: the pointer given to loop_signal_set()
 */
typedef void (*loop_signal_cb)(struct loop *l, int signo, void *ud);

/**
 * loop_hook_cb - "before sleep" callback
 * @l: the loop
 * @ud: the pointer given to loop_hook_add()
 *
 * Runs once per iteration, just before epoll_wait, after all callbacks of the previous
 * iteration. It must not block; work it does may arm timers or watches.
 */
typedef void (*loop_hook_cb)(struct loop *l, void *ud);

/**
 * loop_new - Create the event loop
 * @ret_loop: the new loop on success
 * Returns: 0 on success, negative errno on failure
 *
 * Creates the epoll fd, the timerfd and the signalfd (close-on-exec, the last two
 * non-blocking) and blocks SIGTERM, SIGINT and SIGHUP with sigprocmask so that they are only
 * seen through the signalfd. Until loop_signal_set() says otherwise, SIGTERM and SIGINT make
 * loop_run() return 0 and SIGHUP is logged and ignored. The blocked mask is inherited across
 * fork and exec: a child that should die of SIGTERM must be given a clean mask
 * (posix_spawnattr_setsigmask). SIGPIPE is left alone; ignoring it is main's decision.
 */
int loop_new(struct loop **ret_loop);

/**
 * loop_free - Destroy the loop
 * @l: the loop, or NULL
 * Returns: NULL
 *
 * Free the objects built on the loop (sources, sinks) first. Whatever watch, timer or hook
 * is still registered is freed here (fds are not closed: their owners close them) and any
 * pointer to it is invalid afterwards. Discards pending signals and restores the signal mask
 * that loop_new found. Must not be called from inside a callback.
 */
struct loop *loop_free(struct loop *l);

/**
 * loop_run - Dispatch events until loop_quit()
 * @l: the loop
 * Returns: the code given to loop_quit() (should be >= 0), or a negative errno if
 * epoll_wait itself failed
 *
 * Each iteration runs the before-sleep hooks, waits in epoll_wait (no timeout: timers are
 * on the timerfd), then calls the callbacks of the fds that are ready; expired timers are
 * called in deadline order, timers with the same deadline in the order they were armed.
 * May be called again after it returned.
 */
int loop_run(struct loop *l);

/**
 * loop_quit - Make loop_run() return after the current callback
 * @l: the loop
 * @code: what loop_run() returns; the first call wins until loop_run() returns
 */
void loop_quit(struct loop *l, int code);

/**
 * loop_now_ms - Monotonic time in milliseconds (CLOCK_MONOTONIC)
 *
 * The clock timers use; unrelated to wall-clock time, never jumps.
 */
uint64_t loop_now_ms(void);

/**
 * loop_watch_add - Watch a file descriptor
 * @l: the loop
 * @fd: a descriptor epoll accepts (socket, pipe, tty, eventfd, ...; not a regular file:
 * that gives -EPERM). It should be O_NONBLOCK.
 * @events: EPOLLIN and/or EPOLLOUT (level-triggered); EPOLLERR and EPOLLHUP are always
 * reported while the watch is active. 0 pauses the watch: nothing at all is reported, not
 * even a hangup, until loop_watch_modify() asks for events again.
 * @cb: called when the fd is ready
 * @ud: passed to @cb
 * @ret_watch: the new watch on success
 * Returns: 0 on success, -EEXIST if @fd is already watched, other negative errno
 *
 * Remove the watch before closing the fd: epoll tracks the open file, not the number.
 * -EEXIST is not detected for an fd whose other watch is paused; do not watch an fd twice.
 */
int loop_watch_add(struct loop *l, int fd, uint32_t events, loop_fd_cb cb, void *ud,
                   struct loop_watch **ret_watch);

/**
 * loop_watch_modify - Change the events a watch waits for, or pause it with 0
 * @w: the watch
 * @events: as for loop_watch_add()
 * Returns: 0 on success, negative errno on failure
 *
 * A watch paused inside a callback gets no further callback from the same batch.
 */
int loop_watch_modify(struct loop_watch *w, uint32_t events);

/**
 * loop_watch_events - The events a watch currently waits for
 */
uint32_t loop_watch_events(const struct loop_watch *w);

/**
 * loop_watch_remove - Stop watching and free the watch
 * @w: the watch, or NULL
 * Returns: NULL
 *
 * Safe inside any callback, including the watch's own: its callback is not called again,
 * even for an event already returned by epoll_wait. The fd is not closed.
 */
struct loop_watch *loop_watch_remove(struct loop_watch *w);

/**
 * loop_timer_new - Create a timer (disarmed)
 * @l: the loop
 * @cb: called when the timer expires
 * @ud: passed to @cb
 * @ret_timer: the new timer on success
 * Returns: 0 on success, -EINVAL without a callback, -ENOMEM
 *
 * A timer is created once and armed, re-armed and disarmed as often as needed; it costs no
 * file descriptor.
 */
int loop_timer_new(struct loop *l, loop_timer_cb cb, void *ud, struct loop_timer **ret_timer);

/**
 * loop_timer_arm - (Re)arm a timer
 * @t: the timer
 * @delay_ms: first expiry, milliseconds from now; 0 means in the next iteration
 * @interval_ms: 0 for a one-shot timer, else the period of later expiries
 *
 * Replaces any earlier schedule. A periodic timer keeps its phase: expiries fall at
 * delay + k * interval; if the loop was busy for longer than a period the missed expiries
 * are skipped (the callback runs once, not once per missed period).
 */
void loop_timer_arm(struct loop_timer *t, uint64_t delay_ms, uint64_t interval_ms);

/**
 * loop_timer_disarm - Cancel the timer's pending expiry, if any; it can be armed again
 * @t: the timer, or NULL
 */
void loop_timer_disarm(struct loop_timer *t);

/**
 * loop_timer_armed - Whether the timer will expire (one-shot pending, or periodic)
 */
bool loop_timer_armed(const struct loop_timer *t);

/**
 * loop_timer_deadline_ms - When the timer next expires (loop_now_ms() clock), 0 if disarmed
 */
uint64_t loop_timer_deadline_ms(const struct loop_timer *t);

/**
 * loop_timer_free - Disarm and free a timer
 * @t: the timer, or NULL
 * Returns: NULL
 *
 * Safe inside any callback, including the timer's own.
 */
struct loop_timer *loop_timer_free(struct loop_timer *t);

/**
 * loop_signal_set - Handle a signal with a callback
 * @l: the loop
 * @signo: the signal; it is blocked and added to the signalfd if it was not already
 * @cb: the callback, or NULL to restore the default (SIGTERM/SIGINT: quit with 0;
 * others: ignore)
 * @ud: passed to @cb
 * Returns: 0 on success, -EINVAL for a signal that cannot be caught, other negative errno
 *
 * One callback per signal; a second call replaces the first. Signals that arrive while a
 * callback runs are delivered in the next iteration; several of the same kind may merge.
 */
int loop_signal_set(struct loop *l, int signo, loop_signal_cb cb, void *ud);

/**
 * loop_hook_add - Add a "before sleep" hook
 * @l: the loop
 * @cb: the hook
 * @ud: passed to @cb
 * @ret_hook: the new hook on success (may be NULL if the hook is never removed)
 * Returns: 0 on success, -EINVAL without a callback, -ENOMEM
 *
 * Hooks run in the order they were added.
 */
int loop_hook_add(struct loop *l, loop_hook_cb cb, void *ud, struct loop_hook **ret_hook);

/**
 * loop_hook_remove - Remove and free a hook
 * @h: the hook, or NULL
 * Returns: NULL
 *
 * Safe inside any callback, including the hook itself.
 */
struct loop_hook *loop_hook_remove(struct loop_hook *h);

#endif
