/* log.c - formats and writes log lines to stderr (see log.h). Owns the only globals in p1d: the
 * log settings. Never allocates, never fails, never calls back into other modules; a write
 * error on stderr is ignored because there is nowhere left to report it. Called by every
 * module, and by main for -v. */
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static struct {
	int max_prio;
	enum log_target forced;  /* LOG_TARGET_AUTO: detect */
	enum log_target current; /* what format_line() uses */
	bool detected;
} log_settings = {
        .max_prio = LOG_INFO,
        .forced = LOG_TARGET_AUTO,
        .current = LOG_TARGET_AUTO,
};

static const char *const prio_names[] = {
        [LOG_EMERG] = "emergency", [LOG_ALERT] = "alert",     [LOG_CRIT] = "critical",
        [LOG_ERR] = "error",       [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
        [LOG_INFO] = "info",       [LOG_DEBUG] = "debug",
};

const char *log_priority_name(int prio)
{
	if (prio < LOG_EMERG || prio > LOG_DEBUG)
		return "?";
	return prio_names[prio];
}

static bool stderr_is_journal(void)
{
	const char *e = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	char *end;
	struct stat st;

	/* "<device>:<inode>" in decimal, as systemd sets it */
	if (!e || *e < '0' || *e > '9')
		return false;
	errno = 0;
	dev = strtoull(e, &end, 10);
	if (*end != ':' || end[1] < '0' || end[1] > '9')
		return false;
	ino = strtoull(end + 1, &end, 10);
	if (*end != '\0' || errno)
		return false;
	if (fstat(STDERR_FILENO, &st) < 0)
		return false;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void log_init(void)
{
	int saved = errno;

	tzset();
	log_settings.detected = true;
	if (log_settings.forced != LOG_TARGET_AUTO)
		log_settings.current = log_settings.forced;
	else
		log_settings.current = stderr_is_journal() ? LOG_TARGET_JOURNAL : LOG_TARGET_PLAIN;
	errno = saved;
}

void log_set_target(enum log_target target)
{
	log_settings.forced = target;
	log_settings.detected = false; /* applied by log_init() on the next message */
}

enum log_target log_get_target(void)
{
	return log_settings.current;
}

void log_set_max_priority(int prio)
{
	if (prio < LOG_EMERG)
		prio = LOG_EMERG;
	if (prio > LOG_DEBUG)
		prio = LOG_DEBUG;
	log_settings.max_prio = prio;
}

int log_get_max_priority(void)
{
	return log_settings.max_prio;
}

void log_raise_verbosity(void)
{
	log_set_max_priority(log_settings.max_prio + 1);
}

bool log_enabled(int prio)
{
	return prio <= log_settings.max_prio;
}

/* Formats "<prefix><message>\n" into buf, one line, and returns its length. */
static size_t format_line(char *buf, size_t size, int prio, const char *fmt, va_list ap)
{
	size_t len = 0;
	int n;

	if (log_settings.current == LOG_TARGET_JOURNAL) {
		n = snprintf(buf, size, "<%d>", prio);
	} else {
		struct timespec ts;
		struct tm tm;

		clock_gettime(CLOCK_REALTIME, &ts);
		localtime_r(&ts.tv_sec, &tm);
		len = strftime(buf, size, "%Y-%m-%d %H:%M:%S ", &tm);
		n = snprintf(buf + len, size - len, "%s: ", log_priority_name(prio));
	}
	len += n > 0 ? (size_t)n : 0;

	size_t start = len;
	/* Flawfinder: ignore: fmt is log_msg's, whose callers gcc checks (format attribute) */
	n = vsnprintf(buf + len, size - len - 1, fmt, ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= size - len - 1) {
		/* cut: vsnprintf left size - 2 bytes plus NUL; mark it */
		len = size - 2;
		memset(buf + len - 3, '.', 3);
	} else {
		len += (size_t)n;
	}
	while (len > start && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
		len--;
	for (size_t i = start; i < len; i++)
		if ((unsigned char)buf[i] < 0x20 || buf[i] == 0x7f)
			buf[i] = ' ';
	buf[len++] = '\n';
	return len;
}

static void write_all(const char *buf, size_t len)
{
	/* stderr may be a pipe or socket; tolerate short writes and EINTR, give up otherwise */
	for (int tries = 0; len > 0 && tries < 8; tries++) {
		ssize_t n = write(STDERR_FILENO, buf, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		buf += n;
		len -= (size_t)n;
	}
}

void log_vmsg(int prio, const char *fmt, va_list ap)
{
	char line[LOG_LINE_MAX];
	int saved = errno;

	if (!log_enabled(prio))
		return;
	if (!log_settings.detected)
		log_init();
	errno = saved; /* for %m */
	write_all(line, format_line(line, sizeof(line), prio, fmt, ap));
	errno = saved;
}

void log_msg(int prio, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(prio, fmt, ap);
	va_end(ap);
}

/* "45 s", "12 min", "3 h": coarse on purpose, this is for people */
static void format_duration(char *buf, size_t size, uint64_t ms)
{
	uint64_t s = (ms + 500) / 1000;

	if (s < 120)
		snprintf(buf, size, "%llu s", (unsigned long long)s);
	else if (s < (uint64_t)120 * 60)
		snprintf(buf, size, "%llu min", (unsigned long long)(s / 60));
	else
		snprintf(buf, size, "%llu h", (unsigned long long)(s / 3600));
}

static void write_summary(struct log_ratelimit *rl, uint64_t now_ms, int prio, const char *text,
                          uint64_t more)
{
	char dur[32];

	if (more == 0) {
		log_msg(prio, "%s", text);
	} else {
		format_duration(dur, sizeof(dur), now_ms - rl->last_written_ms);
		log_msg(prio, "%s (%llu more in the last %s)", text, (unsigned long long)more, dur);
	}
	rl->last_written_ms = now_ms;
	rl->suppressed = 0;
}

bool log_ratelimit(struct log_ratelimit *rl, uint64_t now_ms, int prio, const char *fmt, ...)
{
	char text[LOG_RATELIMIT_TEXT_MAX];
	va_list ap;

	rl->total++;
	if (rl->started && now_ms - rl->last_written_ms < rl->interval_ms) {
		rl->suppressed++;
		rl->last_prio = prio;
		if (log_enabled(prio)) {
			va_start(ap, fmt);
			/* Flawfinder: ignore: log_ratelimit's fmt, checked by gcc like log_msg's */
			vsnprintf(rl->last_text, sizeof(rl->last_text), fmt, ap);
			va_end(ap);
		}
		return false;
	}
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap); /* Flawfinder: ignore: as above */
	va_end(ap);
	rl->started = true;
	write_summary(rl, now_ms, prio, text, rl->suppressed);
	return true;
}

bool log_ratelimit_flush(struct log_ratelimit *rl, uint64_t now_ms, bool force)
{
	if (rl->suppressed == 0)
		return false;
	if (!force && now_ms - rl->last_written_ms < rl->interval_ms)
		return false;
	write_summary(rl, now_ms, rl->last_prio, rl->last_text, rl->suppressed - 1);
	return true;
}
