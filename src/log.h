/* log.h - one line per event on stderr, with a priority.
 *
 * Under journald (stderr is the stream named by $JOURNAL_STREAM) every line carries a "<N>"
 * priority prefix and no timestamp, since the journal adds its own. Anywhere else (terminal,
 * file, pipe) a line reads "2026-11-21 14:03:07 warning: meter main: ...". Messages below the
 * global minimum priority are dropped before formatting. The log settings are the only globals
 * in p1d. log_* never fails and never allocates; a message longer than LOG_LINE_MAX is cut. */
#ifndef P1D_LOG_H
#define P1D_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <syslog.h>

/* Longest line written, prefix and newline included; longer messages end in "...". */
#define LOG_LINE_MAX 2048

/* Longest message text a struct log_ratelimit keeps for its summary line. */
#define LOG_RATELIMIT_TEXT_MAX 256

enum log_target {
	LOG_TARGET_AUTO,    /* decide from $JOURNAL_STREAM and stderr (the default) */
	LOG_TARGET_JOURNAL, /* "<N>message" */
	LOG_TARGET_PLAIN,   /* "YYYY-MM-DD HH:MM:SS level: message", local time */
};

/**
 * log_init - (Re)detect where stderr goes
 *
 * Compares $JOURNAL_STREAM ("st_dev:st_ino") with fstat(2) of stderr to choose the journal or
 * the plain format, and calls tzset() for the local timestamps. Call once at startup and again
 * after redirecting stderr. Without a call, the first message does it.
 */
void log_init(void);

/**
 * log_set_target - Force a format instead of detecting it
 * @target: LOG_TARGET_AUTO to detect again on the next message
 */
void log_set_target(enum log_target target);

/**
 * log_get_target - The format in use (never LOG_TARGET_AUTO once a message was written)
 */
enum log_target log_get_target(void);

/**
 * log_set_max_priority - Set the least important priority still written
 * @prio: LOG_EMERG..LOG_DEBUG; clamped into that range. The default is LOG_INFO.
 */
void log_set_max_priority(int prio);

/**
 * log_get_max_priority - The least important priority still written
 */
int log_get_max_priority(void);

/**
 * log_raise_verbosity - One more level of detail (each -v), up to LOG_DEBUG
 */
void log_raise_verbosity(void);

/**
 * log_enabled - Whether a message of this priority would be written
 * @prio: LOG_EMERG..LOG_DEBUG
 *
 * Lets a caller skip expensive formatting (hex dumps of telegrams at debug level).
 */
bool log_enabled(int prio);

/**
 * log_msg - Write one line to stderr
 * @prio: LOG_EMERG..LOG_DEBUG (syslog.h)
 * @fmt: printf format; a trailing newline is not needed. Newlines and other control characters
 * inside the message become spaces so that one event stays one line.
 *
 * Preserves errno, so "log_error(...%m...)" and the caller's error handling both work.
 */
void log_msg(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/**
 * log_vmsg - log_msg with a va_list
 */
void log_vmsg(int prio, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

#define log_error(...) log_msg(LOG_ERR, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_notice(...) log_msg(LOG_NOTICE, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

/**
 * log_priority_name - "error", "warning", ... for LOG_EMERG..LOG_DEBUG; "?" otherwise
 */
const char *log_priority_name(int prio);

/**
 * struct log_ratelimit - Summarise a repeated event instead of logging every occurrence
 *
 * The first occurrence is logged. Later occurrences within @interval_ms of the last written
 * line are only counted; the first occurrence after the interval is written with the count
 * appended: "CRC mismatch (37 more in the last 60 s)". So an event that repeats every second
 * costs one line per interval. log_ratelimit_flush() writes a pending summary when the event
 * stopped (call it from a timer or at shutdown). Initialise with LOG_RATELIMIT_INIT or zero it
 * and set @interval_ms. Time is passed in (loop_now_ms()), which keeps this testable.
 */
struct log_ratelimit {
	uint64_t interval_ms;
	uint64_t last_written_ms; /* when a line for this event was last written */
	uint64_t suppressed;      /* occurrences counted but not written since then */
	uint64_t total;           /* every occurrence ever */
	bool started;
	int last_prio;
	char last_text[LOG_RATELIMIT_TEXT_MAX]; /* the latest suppressed message */
};

#define LOG_RATELIMIT_INIT(ms) \
	{ \
		.interval_ms = (ms) \
	}

/**
 * log_ratelimit - Log one occurrence of a repeated event, or count it
 * @rl: the event's state
 * @now_ms: monotonic time in milliseconds
 * @prio: priority of the line
 * @fmt: printf format of this occurrence
 * Returns: true if a line was written, false if the occurrence was only counted
 */
bool log_ratelimit(struct log_ratelimit *rl, uint64_t now_ms, int prio, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

/**
 * log_ratelimit_flush - Write the summary of suppressed occurrences, if one is owed
 * @rl: the event's state
 * @now_ms: monotonic time in milliseconds
 * @force: write it even if @interval_ms has not passed yet (at shutdown)
 * Returns: true if a line was written
 *
 * The line repeats the latest suppressed message: "CRC mismatch (36 more in the last 60 s)",
 * the line itself standing for one occurrence.
 */
bool log_ratelimit_flush(struct log_ratelimit *rl, uint64_t now_ms, bool force);

#endif
