/* source.c - the part every source shares (see source.h): the state machine, retry backoff,
 * the data watchdog, counters, and the log lines that describe state changes. The kinds
 * (source_serial.c, source_tcp.c, source_file.c) only open, read and close; they report to
 * this file through the source_impl_* functions. Nothing here touches a file descriptor or
 * waits: retries and the watchdog are loop timers. Called by the meter that owns the source. */
#include "source.h"

#include "log.h"
#include "loop.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct source {
	struct loop *loop;
	struct source_config cfg; /* defaults applied; strings point to name and path below */
	char *name;
	char *path;
	source_data_cb on_data;
	source_state_cb on_state;
	void *ud;

	const struct source_ops *ops;
	void *impl;

	enum source_state state;
	struct loop_timer *retry_timer; /* first open, next attempt, connect timeout */
	struct loop_timer *stale_timer; /* data watchdog */
	uint64_t backoff_ms;            /* delay before the next attempt */
	uint64_t up_since_ms;           /* when the current connection was made */
	uint64_t down_since_ms;         /* when it was lost or first failed to open */
	int attempt_err;                /* errno of the last failed attempt, 0 after a loss */
	bool down_logged;               /* a warning said it is gone; "back" is owed */
	bool ever_connected;
	bool stale_logged;
	uint64_t stale_since_ms;
	uint64_t rng;
	struct source_stats stats;
};

/* ---- names ---- */

static const char *const state_names[] = {
        [SOURCE_IDLE] = "idle",           [SOURCE_OPENING] = "connecting",
        [SOURCE_CONNECTED] = "connected", [SOURCE_BACKOFF] = "absent",
        [SOURCE_STALE] = "stale",         [SOURCE_EOF] = "eof",
};
static const char *const kind_names[] = {
        [SOURCE_SERIAL] = "serial", [SOURCE_TCP] = "tcp", [SOURCE_FILE] = "file"};
static const char *const serial_mode_names[] = {
        [SOURCE_SERIAL_AUTO] = "auto",
        [SOURCE_SERIAL_115200_8N1] = "115200-8N1",
        [SOURCE_SERIAL_9600_7E1] = "9600-7E1",
};
static const char *const data_request_names[] = {
        [SOURCE_DATA_REQUEST_NONE] = "none",
        [SOURCE_DATA_REQUEST_DTR] = "dtr",
        [SOURCE_DATA_REQUEST_RTS] = "rts",
};
static const char *const pace_names[] = {
        [SOURCE_PACE_FAST] = "fast", [SOURCE_PACE_METER] = "meter"};

#define NAME_OF(table, v) ((unsigned)(v) < sizeof(table) / sizeof((table)[0]) ? (table)[v] : "?")

static int parse_name(const char *const *table, size_t n, const char *s, int *ret)
{
	for (size_t i = 0; s && i < n; i++) {
		if (table[i] && strcasecmp(table[i], s) == 0) {
			*ret = (int)i;
			return 0;
		}
	}
	return -EINVAL;
}

#define PARSE_ENUM(table, s, ret) \
	do { \
		int v_, r_ = parse_name(table, sizeof(table) / sizeof((table)[0]), s, &v_); \
		if (r_ < 0) \
			return r_; \
		*(ret) = v_; \
		return 0; \
	} while (0)

const char *source_state_name(enum source_state st)
{
	return NAME_OF(state_names, st);
}

const char *source_kind_name(enum source_kind k)
{
	return NAME_OF(kind_names, k);
}

const char *source_serial_mode_name(enum source_serial_mode m)
{
	return NAME_OF(serial_mode_names, m);
}

int source_serial_mode_parse(const char *s, enum source_serial_mode *ret)
{
	PARSE_ENUM(serial_mode_names, s, ret);
}

const char *source_data_request_name(enum source_data_request d)
{
	return NAME_OF(data_request_names, d);
}

int source_data_request_parse(const char *s, enum source_data_request *ret)
{
	PARSE_ENUM(data_request_names, s, ret);
}

const char *source_pace_name(enum source_pace p)
{
	return NAME_OF(pace_names, p);
}

int source_pace_parse(const char *s, enum source_pace *ret)
{
	PARSE_ENUM(pace_names, s, ret);
}

/* "250 ms", "1.5 s", "12 s", "5 min", "3 h": for people */
static const char *fmt_duration(char *buf, size_t size, uint64_t ms)
{
	if (ms < 1000)
		snprintf(buf, size, "%llu ms", (unsigned long long)ms);
	else if (ms < 10000 && ms % 1000)
		snprintf(buf, size, "%.1f s", (double)ms / 1000.0);
	else if (ms < 120000)
		snprintf(buf, size, "%llu s", (unsigned long long)((ms + 500) / 1000));
	else if (ms < (uint64_t)120 * 60000)
		snprintf(buf, size, "%llu min", (unsigned long long)(ms / 60000));
	else
		snprintf(buf, size, "%llu h", (unsigned long long)(ms / 3600000));
	return buf;
}

/* ---- state machine ---- */

static void set_state(struct source *s, enum source_state st, const char *why)
{
	if (s->state == st && st != SOURCE_STALE)
		return;
	s->state = st;
	if (s->on_state)
		s->on_state(s->ud, st, why ? why : "");
}

static uint64_t next_backoff(struct source *s)
{
	uint64_t delay =
	        s->backoff_ms < s->cfg.backoff_max_ms ? s->backoff_ms : s->cfg.backoff_max_ms;

	s->backoff_ms *= 2;
	if (s->backoff_ms > s->cfg.backoff_max_ms)
		s->backoff_ms = s->cfg.backoff_max_ms;
	if (s->ops->jitter) {
		/* xorshift64: +-20 % so that many readers of one bridge do not retry in step */
		s->rng ^= s->rng << 13;
		s->rng ^= s->rng >> 7;
		s->rng ^= s->rng << 17;
		delay = delay * (800 + s->rng % 401) / 1000;
	}
	return delay;
}

static void on_connected(struct source *s)
{
	char dur[32];
	uint64_t now = loop_now_ms();
	const char *detail = source_detail(s);

	loop_timer_disarm(s->retry_timer);
	s->stats.opens++;
	if (s->ever_connected)
		s->stats.reopens++;
	if (s->down_logged)
		log_notice("meter %s: %s %s after %s", s->name, s->path,
		           s->ever_connected ? "back" : "available",
		           fmt_duration(dur, sizeof(dur), now - s->down_since_ms));
	else if (!s->ever_connected && (!*detail || strcmp(detail, s->path) == 0))
		log_info("meter %s: reading %s", s->name, s->path);
	else if (!s->ever_connected)
		log_info("meter %s: reading %s (%s)", s->name, s->path, detail);
	s->ever_connected = true;
	s->down_logged = false;
	s->attempt_err = 0;
	s->up_since_ms = now;
	if (s->ops->reopen)
		loop_timer_arm(s->stale_timer, s->cfg.stale_after_ms, 0);
	set_state(s, SOURCE_CONNECTED, detail);
}

void source_impl_connected(struct source *s)
{
	on_connected(s);
}

void source_impl_eof(struct source *s, const char *why)
{
	s->ops->close(s);
	loop_timer_disarm(s->retry_timer);
	loop_timer_disarm(s->stale_timer);
	log_info("meter %s: end of %s (%s, %llu bytes)", s->name, s->path, why,
	         (unsigned long long)s->stats.bytes);
	set_state(s, SOURCE_EOF, why);
}

void source_impl_failed(struct source *s, int err, const char *what)
{
	char reason[160], dur[32], cap[32];
	uint64_t now = loop_now_ms();
	bool was_up = s->state == SOURCE_CONNECTED;

	if (what && err)
		snprintf(reason, sizeof(reason), "%s: %s", what, strerror(err));
	else if (err == EBUSY)
		snprintf(reason, sizeof(reason), "%s: another program has it open", strerror(err));
	else
		snprintf(reason, sizeof(reason), "%s", what ? what : strerror(err));

	s->ops->close(s);
	loop_timer_disarm(s->stale_timer);
	s->stats.failures++;
	if (!s->ops->reopen) {
		log_error("meter %s: reading %s failed (%s), giving up", s->name, s->path, reason);
		set_state(s, SOURCE_EOF, reason);
		return;
	}
	/* a connection that stayed up longer than the longest delay was healthy: start over */
	if (was_up && now - s->up_since_ms >= s->cfg.backoff_max_ms)
		s->backoff_ms = SOURCE_BACKOFF_MIN_MS;
	uint64_t delay = next_backoff(s);
	/* a device node that is gone (USB cable unplugged) costs nothing to look for: check every
	 * second so reading resumes within a second or two of it coming back */
	if (!s->ops->jitter && (err == ENOENT || err == ENODEV || err == ENXIO) &&
	    delay > SOURCE_ABSENT_POLL_MS)
		delay = SOURCE_ABSENT_POLL_MS;
	fmt_duration(cap, sizeof(cap), s->cfg.backoff_max_ms);
	/* one warning when it goes away, another only if the reason attempts fail changes
	 * (say from "No such file" to "Permission denied"); each attempt at debug level */
	if (was_up) {
		s->down_since_ms = now;
		s->attempt_err = 0;
		log_warning("meter %s: %s %s (%s), retrying every %s at most", s->name, s->path,
		            s->ops->lost_phrase, reason, cap);
	} else if (!s->down_logged || (s->attempt_err && err != s->attempt_err)) {
		if (!s->down_logged)
			s->down_since_ms = now;
		s->attempt_err = err;
		log_warning("meter %s: cannot %s %s (%s), retrying every %s at most", s->name,
		            s->ops->open_verb, s->path, reason, cap);
	} else {
		s->attempt_err = err;
		log_debug("meter %s: cannot %s %s (%s), next attempt in %s", s->name,
		          s->ops->open_verb, s->path, reason,
		          fmt_duration(dur, sizeof(dur), delay));
	}
	s->down_logged = true;
	loop_timer_arm(s->retry_timer, delay, 0);
	set_state(s, SOURCE_BACKOFF, reason);
}

static void open_now(struct source *s)
{
	int r = s->ops->open(s);

	if (r == 0) {
		on_connected(s);
	} else if (r == -EINPROGRESS) {
		loop_timer_arm(s->retry_timer, SOURCE_CONNECT_TIMEOUT_MS, 0);
		set_state(s, SOURCE_OPENING, "");
	} else {
		source_impl_failed(s, -r, NULL);
	}
}

static void on_retry_timer(struct loop_timer *t, void *ud)
{
	struct source *s = ud;

	(void)t;
	if (s->state == SOURCE_OPENING)
		source_impl_failed(s, ETIMEDOUT, NULL);
	else if (s->state == SOURCE_IDLE || s->state == SOURCE_BACKOFF)
		open_now(s);
}

static void on_stale_timer(struct loop_timer *t, void *ud)
{
	struct source *s = ud;
	char why[96], dur[32];
	uint64_t now = loop_now_ms();

	(void)t;
	if (s->state != SOURCE_CONNECTED)
		return;
	s->stats.stale++;
	if (!s->stale_logged) {
		uint64_t since = s->stats.last_valid_ms > s->up_since_ms ? s->stats.last_valid_ms
		                                                         : s->up_since_ms;
		s->stale_since_ms = since;
		s->stale_logged = true;
		snprintf(why, sizeof(why), "no valid telegram for %s",
		         fmt_duration(dur, sizeof(dur), now - since));
		log_warning("meter %s: %s from %s, reopening", s->name, why, s->path);
	} else {
		snprintf(why, sizeof(why), "no valid telegram for %s",
		         fmt_duration(dur, sizeof(dur), now - s->stale_since_ms));
		log_debug("meter %s: still %s from %s, reopening", s->name, why, s->path);
	}
	set_state(s, SOURCE_STALE, why);
	s->ops->close(s);
	open_now(s);
}

void source_impl_reopen(struct source *s, const char *why)
{
	if (s->state != SOURCE_CONNECTED)
		return;
	log_notice("meter %s: %s %s, reopening", s->name, s->path, why);
	loop_timer_disarm(s->stale_timer);
	s->ops->close(s);
	open_now(s);
}

void source_note_valid(struct source *s)
{
	char dur[32];
	uint64_t now = loop_now_ms();

	s->stats.last_valid_ms = now;
	s->backoff_ms = SOURCE_BACKOFF_MIN_MS;
	if (s->stale_logged) {
		log_notice("meter %s: valid telegrams from %s again after %s", s->name, s->path,
		           fmt_duration(dur, sizeof(dur), now - s->stale_since_ms));
		s->stale_logged = false;
	}
	if (s->state == SOURCE_CONNECTED && s->ops->reopen)
		loop_timer_arm(s->stale_timer, s->cfg.stale_after_ms, 0);
	if (s->ops->note_valid)
		s->ops->note_valid(s);
}

void source_impl_data(struct source *s, const uint8_t *buf, size_t len)
{
	if (len == 0)
		return;
	s->stats.bytes += len;
	s->stats.last_data_ms = loop_now_ms();
	s->on_data(s->ud, buf, len);
}

/* ---- object ---- */

int source_new(struct loop *loop, const struct source_config *cfg, source_data_cb on_data,
               source_state_cb on_state, void *ud, struct source **ret_source)
{
	struct source *s;
	int r;

	if (!loop || !cfg || !on_data || !ret_source)
		return -EINVAL;
	const char *name = cfg->name ? cfg->name : "?";
	if (!cfg->path || !*cfg->path) {
		log_error("meter %s: no %s source given", name, source_kind_name(cfg->kind));
		return -EINVAL;
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->loop = loop;
	s->cfg = *cfg;
	s->name = strdup(name);
	s->path = strdup(cfg->path);
	s->on_data = on_data;
	s->on_state = on_state;
	s->ud = ud;
	s->state = SOURCE_IDLE;
	s->backoff_ms = SOURCE_BACKOFF_MIN_MS;
	s->rng = (loop_now_ms() << 20) ^ (uint64_t)(uintptr_t)s ^ ((uint64_t)getpid() << 40);
	if (!s->rng)
		s->rng = 0x9e3779b97f4a7c15ull;
	if (!s->name || !s->path) {
		r = -ENOMEM;
		goto fail;
	}
	s->cfg.name = s->name;
	s->cfg.path = s->path;
	if (!s->cfg.period_ms)
		s->cfg.period_ms = SOURCE_PERIOD_DEFAULT_MS;
	if (!s->cfg.stale_after_ms)
		s->cfg.stale_after_ms = SOURCE_STALE_DEFAULT_MS;
	if (!s->cfg.backoff_max_ms)
		s->cfg.backoff_max_ms = SOURCE_BACKOFF_MAX_DEFAULT_MS;
	if (s->cfg.backoff_max_ms < SOURCE_BACKOFF_MIN_MS)
		s->cfg.backoff_max_ms = SOURCE_BACKOFF_MIN_MS;

	r = loop_timer_new(loop, on_retry_timer, s, &s->retry_timer);
	if (r < 0)
		goto fail;
	r = loop_timer_new(loop, on_stale_timer, s, &s->stale_timer);
	if (r < 0)
		goto fail;

	switch (cfg->kind) {
	case SOURCE_SERIAL:
		r = source_serial_setup(s, &s->cfg);
		break;
	case SOURCE_TCP:
		r = source_tcp_setup(s, &s->cfg);
		break;
	case SOURCE_FILE:
		r = source_file_setup(s, &s->cfg);
		break;
	default:
		log_error("meter %s: unknown source kind %d", s->name, (int)cfg->kind);
		r = -EINVAL;
	}
	if (r < 0)
		goto fail;
	/* the first open runs from the loop, so no callback runs inside source_new */
	loop_timer_arm(s->retry_timer, 0, 0);
	*ret_source = s;
	return 0;

fail:
	source_free(s);
	return r;
}

struct source *source_free(struct source *s)
{
	if (!s)
		return NULL;
	if (s->ops) {
		s->ops->close(s);
		s->ops->destroy(s);
	}
	loop_timer_free(s->retry_timer);
	loop_timer_free(s->stale_timer);
	free(s->name);
	free(s->path);
	free(s);
	return NULL;
}

enum source_state source_get_state(const struct source *s)
{
	return s->state;
}

void source_get_stats(const struct source *s, struct source_stats *ret_stats)
{
	*ret_stats = s->stats;
}

const char *source_detail(const struct source *s)
{
	if (s->ops && s->ops->detail)
		return s->ops->detail(s);
	return "";
}

int source_format_status(const struct source *s, char *buf, size_t size)
{
	const char *detail = source_detail(s);

	return snprintf(buf, size, "%s%s%s, %llu bytes, %llu reopens", source_state_name(s->state),
	                *detail ? " " : "", detail, (unsigned long long)s->stats.bytes,
	                (unsigned long long)s->stats.reopens);
}

/* ---- implementation interface ---- */

void source_impl_set(struct source *s, const struct source_ops *ops, void *impl)
{
	s->ops = ops;
	s->impl = impl;
}

void *source_impl(const struct source *s)
{
	return s->impl;
}

struct loop *source_impl_loop(const struct source *s)
{
	return s->loop;
}

const char *source_impl_name(const struct source *s)
{
	return s->name;
}

const char *source_impl_path(const struct source *s)
{
	return s->path;
}

const struct source_config *source_impl_config(const struct source *s)
{
	return &s->cfg;
}
