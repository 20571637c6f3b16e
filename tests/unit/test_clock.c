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
	assert_int_equal(clock_reading_utc(t, NOW, p, &fb), want);
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

static void test_no_time_uses_the_system_clock(void **state)
{
	(void)state;
	struct p1_telegram *t = p1_telegram_new(1024);
	bool fb = true;
	for (int p = CLOCK_AUTO; p <= CLOCK_SYSTEM; p++) {
		assert_int_equal(clock_reading_utc(t, NOW, (enum clock_policy)p, &fb), NOW);
		assert_false(fb);
	}
	assert_int_equal(clock_reading_utc(t, NOW, CLOCK_AUTO, NULL), NOW);
	p1_telegram_free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_auto_trusts_a_plausible_meter),
	        cmocka_unit_test(test_auto_rejects_a_reset_or_future_clock),
	        cmocka_unit_test(test_meter_and_system_policies),
	        cmocka_unit_test(test_no_time_uses_the_system_clock),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
