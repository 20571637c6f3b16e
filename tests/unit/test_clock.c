/* test_clock.c - the clock setting decides which time dates a reading: the meter's when it is
 * plausible (auto) or always (meter), the system's (system), and the system's when the
 * telegram has no time at all. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "clock.h"

#define NOW 1790000000 /* 2026-09-21 */

static struct p1_telegram *with_time(int64_t meter_utc)
{
	struct p1_telegram *t = p1_telegram_new(1024);
	assert_non_null(t);
	t->fields[P1_F_TIMESTAMP].presence = P1_PRESENT;
	t->fields[P1_F_TIMESTAMP].time.utc = meter_utc;
	return t;
}

static void check(int64_t meter_utc, enum clock_policy p, int64_t want, bool want_fallback)
{
	struct p1_telegram *t = with_time(meter_utc);
	bool fb = !want_fallback;
	assert_int_equal(clock_reading_utc(t, NOW, p, NULL, &fb), want);
	assert_int_equal(fb, want_fallback);
	p1_telegram_free(t);
}

static void test_auto_trusts_a_plausible_meter(void **state)
{
	(void)state;
	check(NOW - 3, CLOCK_AUTO, NOW - 3, false);           /* a few seconds behind */
	check(NOW - 86400 * 400, CLOCK_AUTO, NOW - 86400 * 400, false); /* an old capture */
	check(NOW + CLOCK_BOGUS_AHEAD_S, CLOCK_AUTO, NOW + CLOCK_BOGUS_AHEAD_S, false);
}

static void test_auto_rejects_a_reset_or_future_clock(void **state)
{
	(void)state;
	check(946684800, CLOCK_AUTO, NOW, true);               /* 2000-01-01 */
	check(CLOCK_BOGUS_BEFORE_UTC - 1, CLOCK_AUTO, NOW, true);
	check(NOW + CLOCK_BOGUS_AHEAD_S + 1, CLOCK_AUTO, NOW, true);
	check(4102444800, CLOCK_AUTO, NOW, true);              /* 2100 */
}

static void test_meter_and_system_policies(void **state)
{
	(void)state;
	check(946684800, CLOCK_METER, 946684800, false);
	check(NOW - 3, CLOCK_SYSTEM, NOW, false);
	check(946684800, CLOCK_SYSTEM, NOW, false); /* not a fallback: asked for */
}

/* The system clock, not the meter's, is wrong: before p1d's build (a Pi without a real-time
 * clock before NTP), or jumped back a year while the meter's clock goes on. */
static void test_auto_trusts_a_meter_when_the_system_clock_is_wrong(void **state)
{
	(void)state;
	int64_t meter = NOW + 400 * 86400; /* the meter is right, the system a year behind */
	struct p1_telegram *t = with_time(meter);
	struct clock_ctx before_build = {.sane_after_utc = NOW + 86400 * 30};
	bool fb = true;
	assert_int_equal(clock_reading_utc(t, NOW, CLOCK_AUTO, &before_build, &fb), meter);
	assert_false(fb);
	assert_int_equal(before_build.last_meter_utc, meter);
	/* after the build, a jump back: the meter continues from its last trusted time */
	struct clock_ctx ctx = {.sane_after_utc = NOW - 86400, .last_meter_utc = meter - 1};
	assert_int_equal(clock_reading_utc(t, NOW, CLOCK_AUTO, &ctx, &fb), meter);
	assert_false(fb);
	/* a meter time far past its last trusted one is not a continuation */
	ctx.last_meter_utc = meter - CLOCK_CONTINUES_S - 1;
	assert_int_equal(clock_reading_utc(t, NOW, CLOCK_AUTO, &ctx, &fb), NOW);
	assert_true(fb);
	/* nor is one without history: the first telegram of a meter with a future clock */
	struct clock_ctx fresh = {.sane_after_utc = NOW - 86400};
	assert_int_equal(clock_reading_utc(t, NOW, CLOCK_AUTO, &fresh, &fb), NOW);
	assert_true(fb);
	assert_int_equal(fresh.last_meter_utc, 0);
	/* a reset clock is never trusted, whatever the system clock */
	p1_telegram_free(t);
	t = with_time(946684800);
	assert_int_equal(clock_reading_utc(t, NOW, CLOCK_AUTO, &before_build, &fb), NOW);
	assert_true(fb);
	p1_telegram_free(t);
}

static void test_no_time_uses_the_system_clock(void **state)
{
	(void)state;
	struct p1_telegram *t = p1_telegram_new(1024);
	bool fb = true;
	for (int p = CLOCK_AUTO; p <= CLOCK_SYSTEM; p++) {
		assert_int_equal(clock_reading_utc(t, NOW, (enum clock_policy)p, NULL, &fb), NOW);
		assert_false(fb);
	}
	assert_int_equal(clock_reading_utc(t, NOW, CLOCK_AUTO, NULL, NULL), NOW);
	p1_telegram_free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_auto_trusts_a_plausible_meter),
	        cmocka_unit_test(test_auto_rejects_a_reset_or_future_clock),
	        cmocka_unit_test(test_meter_and_system_policies),
	        cmocka_unit_test(test_auto_trusts_a_meter_when_the_system_clock_is_wrong),
	        cmocka_unit_test(test_no_time_uses_the_system_clock),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
