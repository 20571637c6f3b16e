/* test_log.c - log line formats (journald prefix vs local timestamp), priority filtering,
 * one line per event, and the rate-limit summaries. stderr is pointed at a temporary file for
 * each test and read back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "log.h"

#include <errno.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct capture {
	FILE *file;
	int saved_stderr;
	char text[8192];
};

static int capture_start(void **state)
{
	struct capture *c = calloc(1, sizeof(*c));

	assert_non_null(c);
	c->file = tmpfile();
	assert_non_null(c->file);
	fflush(stderr);
	c->saved_stderr = dup(STDERR_FILENO);
	assert_true(c->saved_stderr >= 0);
	assert_int_equal(dup2(fileno(c->file), STDERR_FILENO), STDERR_FILENO);
	unsetenv("JOURNAL_STREAM");
	log_set_target(LOG_TARGET_AUTO);
	log_set_max_priority(LOG_INFO);
	log_init();
	*state = c;
	return 0;
}

static int capture_stop(void **state)
{
	struct capture *c = *state;
	char rest[4096];
	ssize_t n;

	/* whatever the test did not check (a failed assertion's message) goes to the real
	 * stderr */
	lseek(fileno(c->file), 0, SEEK_SET);
	while ((n = read(fileno(c->file), rest, sizeof(rest))) > 0)
		if (write(c->saved_stderr, rest, (size_t)n) < 0)
			break;
	dup2(c->saved_stderr, STDERR_FILENO);
	close(c->saved_stderr);
	fclose(c->file);
	free(c);
	unsetenv("JOURNAL_STREAM");
	log_set_target(LOG_TARGET_AUTO);
	log_init();
	return 0;
}

/* Everything written so far, and start over. */
static const char *captured(struct capture *c)
{
	int fd = fileno(c->file);
	off_t end = lseek(fd, 0, SEEK_END);
	ssize_t n;

	assert_true(end >= 0 && (size_t)end < sizeof(c->text));
	n = pread(fd, c->text, (size_t)end, 0);
	assert_int_equal(n, end);
	c->text[n] = '\0';
	assert_int_equal(ftruncate(fd, 0), 0);
	lseek(fd, 0, SEEK_SET);
	return c->text;
}

static void assert_matches(const char *text, const char *pattern)
{
	regex_t re;

	assert_int_equal(regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB), 0);
	if (regexec(&re, text, 0, NULL, 0) != 0)
		fail_msg("\"%s\" does not match /%s/", text, pattern);
	regfree(&re);
}

static void set_journal_stream(bool matching)
{
	struct stat st;
	char buf[64];

	assert_int_equal(fstat(STDERR_FILENO, &st), 0);
	snprintf(buf, sizeof(buf), "%llu:%llu", (unsigned long long)st.st_dev,
	         (unsigned long long)st.st_ino + (matching ? 0 : 1));
	setenv("JOURNAL_STREAM", buf, 1);
}

static void test_plain_format(void **state)
{
	struct capture *c = *state;

	assert_int_equal(log_get_target(), LOG_TARGET_PLAIN);
	log_warning("meter %s: %d telegrams", "main", 3);
	assert_matches(captured(c), "^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2} "
	                            "warning: meter main: 3 telegrams\n$");
	log_error("e");
	log_notice("n");
	log_info("i");
	assert_matches(captured(c), "^[-0-9 :]{20}error: e\n[-0-9 :]{20}notice: n\n"
	                            "[-0-9 :]{20}info: i\n$");
}

static void test_journal_format(void **state)
{
	struct capture *c = *state;

	set_journal_stream(true);
	log_init();
	assert_int_equal(log_get_target(), LOG_TARGET_JOURNAL);
	log_warning("meter %s: %d telegrams", "main", 3);
	log_error("bad");
	log_info("fine");
	assert_string_equal(captured(c), "<4>meter main: 3 telegrams\n<3>bad\n<6>fine\n");

	/* JOURNAL_STREAM naming another file (inherited by a child): plain */
	set_journal_stream(false);
	log_init();
	assert_int_equal(log_get_target(), LOG_TARGET_PLAIN);
	setenv("JOURNAL_STREAM", "garbage", 1);
	log_init();
	assert_int_equal(log_get_target(), LOG_TARGET_PLAIN);

	/* forced */
	log_set_target(LOG_TARGET_JOURNAL);
	log_notice("forced");
	assert_string_equal(captured(c), "<5>forced\n");
	assert_int_equal(log_get_target(), LOG_TARGET_JOURNAL);
}

static void test_priority_filter(void **state)
{
	struct capture *c = *state;

	log_set_target(LOG_TARGET_JOURNAL);
	log_set_max_priority(LOG_NOTICE);
	assert_false(log_enabled(LOG_INFO));
	assert_true(log_enabled(LOG_NOTICE));
	log_info("dropped");
	log_debug("dropped");
	log_notice("kept");
	assert_string_equal(captured(c), "<5>kept\n");

	log_raise_verbosity(); /* -v */
	log_info("info now");
	log_debug("not debug yet");
	log_raise_verbosity(); /* -vv */
	log_raise_verbosity(); /* more than enough */
	assert_int_equal(log_get_max_priority(), LOG_DEBUG);
	log_debug("debug now");
	assert_string_equal(captured(c), "<6>info now\n<7>debug now\n");
	log_set_max_priority(-5);
	assert_int_equal(log_get_max_priority(), LOG_EMERG);
	assert_string_equal(log_priority_name(LOG_WARNING), "warning");
	assert_string_equal(log_priority_name(42), "?");
}

static void test_one_line_per_event(void **state)
{
	struct capture *c = *state;
	char big[LOG_LINE_MAX * 2];
	const char *out;

	log_set_target(LOG_TARGET_JOURNAL);
	log_info("two\nlines\r\tand a tab\n");
	assert_string_equal(captured(c), "<6>two lines  and a tab\n");

	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	log_info("%s", big);
	out = captured(c);
	assert_int_equal(strlen(out), LOG_LINE_MAX - 1);
	assert_int_equal(strchr(out, '\n') - out, LOG_LINE_MAX - 2);
	assert_memory_equal(out + LOG_LINE_MAX - 5, "...\n", 4);

	/* errno survives, and %m sees the caller's errno */
	errno = ENOENT;
	log_error("open: %m");
	assert_int_equal(errno, ENOENT);
	assert_string_equal(captured(c), "<3>open: No such file or directory\n");
}

static int count_lines(const char *s)
{
	int n = 0;

	for (; *s; s++)
		n += *s == '\n';
	return n;
}

static void test_ratelimit(void **state)
{
	struct capture *c = *state;
	struct log_ratelimit rl = LOG_RATELIMIT_INIT(60000);
	uint64_t t0 = 1000000;

	log_set_target(LOG_TARGET_JOURNAL);
	/* first occurrence: written */
	assert_true(log_ratelimit(&rl, t0, LOG_WARNING, "CRC mismatch #%d", 0));
	assert_string_equal(captured(c), "<4>CRC mismatch #0\n");

	/* 37 more within the minute: counted only */
	for (int i = 1; i <= 37; i++)
		assert_false(log_ratelimit(&rl, t0 + (uint64_t)i * 1000, LOG_WARNING,
		                           "CRC mismatch #%d", i));
	assert_string_equal(captured(c), "");
	assert_int_equal(rl.suppressed, 37);
	assert_false(log_ratelimit_flush(&rl, t0 + 59999, false)); /* not yet due */

	/* the next one after the interval carries the count */
	assert_true(log_ratelimit(&rl, t0 + 60000, LOG_WARNING, "CRC mismatch #%d", 38));
	assert_string_equal(captured(c), "<4>CRC mismatch #38 (37 more in the last 60 s)\n");
	assert_int_equal(rl.total, 39);

	/* a burst that then stops: the flush writes the latest text with the rest counted */
	for (int i = 0; i < 5; i++)
		log_ratelimit(&rl, t0 + 61000 + (uint64_t)i, LOG_ERR, "decrypt failed #%d", i);
	assert_string_equal(captured(c), "");
	assert_false(log_ratelimit_flush(&rl, t0 + 62000, false));
	assert_true(log_ratelimit_flush(&rl, t0 + 120000, false));
	assert_string_equal(captured(c), "<3>decrypt failed #4 (4 more in the last 60 s)\n");
	assert_false(log_ratelimit_flush(&rl, t0 + 999999, true)); /* nothing owed */

	/* forced flush at shutdown; a single suppressed event has no count */
	log_ratelimit(&rl, t0 + 121000, LOG_ERR, "once");
	assert_true(log_ratelimit_flush(&rl, t0 + 122000, true));
	assert_string_equal(captured(c), "<3>once\n");

	/* an event every second for ten minutes: one line per interval */
	struct log_ratelimit r2 = LOG_RATELIMIT_INIT(60000);
	for (int i = 0; i < 600; i++)
		log_ratelimit(&r2, t0 + (uint64_t)i * 1000, LOG_WARNING, "x");
	assert_int_equal(count_lines(captured(c)), 10);
	assert_int_equal(r2.total, 600);
}

static void test_ratelimit_long_gap(void **state)
{
	struct capture *c = *state;
	struct log_ratelimit rl = LOG_RATELIMIT_INIT(60000);

	log_set_target(LOG_TARGET_JOURNAL);
	log_ratelimit(&rl, 0, LOG_WARNING, "a");
	log_ratelimit(&rl, 10, LOG_WARNING, "a");
	log_ratelimit(&rl, 3 * 3600 * 1000, LOG_WARNING, "a");
	assert_string_equal(captured(c), "<4>a\n<4>a (1 more in the last 3 h)\n");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test_setup_teardown(test_plain_format, capture_start, capture_stop),
	        cmocka_unit_test_setup_teardown(test_journal_format, capture_start, capture_stop),
	        cmocka_unit_test_setup_teardown(test_priority_filter, capture_start, capture_stop),
	        cmocka_unit_test_setup_teardown(test_one_line_per_event, capture_start,
	                                        capture_stop),
	        cmocka_unit_test_setup_teardown(test_ratelimit, capture_start, capture_stop),
	        cmocka_unit_test_setup_teardown(test_ratelimit_long_gap, capture_start,
	                                        capture_stop),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
