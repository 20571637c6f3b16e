/* test_time.c - unit tests for meter timestamps (p1/time.h): civil <-> epoch conversion for
 * every day of 1970..2099 against libc's timegm/gmtime_r, parse -> format round trips for
 * both flags over 2001..2099, the EU summer-time switch instants 2020-2030 against a table of
 * known dates, p1_time_format_tz around the switches and in other zones, flags (lower case,
 * other letters), the repeated autumn hour and the skipped spring hour without flag,
 * impossible dates and the sentinels of dsmr-protocol.md §4.3, and the /ESR5 DLMS date-time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "p1/time.h"

#include "unit_util.h"

static const struct p1_tz cet = {3600, 7200, true};

static int parse(const char *s, const struct p1_tz *tz, struct p1_time *t)
{
	memset(t, 0x5A, sizeof(*t));
	return p1_time_parse(s, strlen(s), tz, t);
}

static const char *fmt(const struct p1_time *t)
{
	static char buf[64];
	size_t n = p1_time_format(t, buf, sizeof(buf));
	assert_int_equal(n, strlen(buf));
	return buf;
}

static void test_civil_every_day(void **state)
{
	(void)state;
	static const int times[][3] = {{0, 0, 0}, {0, 59, 59}, {12, 30, 1}, {23, 59, 59}};
	int64_t want = 0;
	for (int64_t day = 0;; day++) {
		time_t t = (time_t)(day * 86400);
		struct tm tm;
		gmtime_r(&t, &tm);
		int y = tm.tm_year + 1900;
		if (y > 2099)
			break;
		for (size_t k = 0; k < 4; k++) {
			want = day * 86400 + times[k][0] * 3600 + times[k][1] * 60 + times[k][2];
			int64_t got = p1_time_from_civil(y, tm.tm_mon + 1, tm.tm_mday, times[k][0],
			                                 times[k][1], times[k][2]);
			if (got != want)
				fail_msg(
				        "from_civil(%d-%02d-%02d %02d:%02d:%02d) = %lld, want %lld",
				        y, tm.tm_mon + 1, tm.tm_mday, times[k][0], times[k][1],
				        times[k][2], (long long)got, (long long)want);
			int cy, cmo, cd, ch, cmi, cs;
			p1_time_to_civil(want, &cy, &cmo, &cd, &ch, &cmi, &cs);
			if (cy != y || cmo != tm.tm_mon + 1 || cd != tm.tm_mday ||
			    ch != times[k][0] || cmi != times[k][1] || cs != times[k][2])
				fail_msg("to_civil(%lld) = %d-%02d-%02d %02d:%02d:%02d",
				         (long long)want, cy, cmo, cd, ch, cmi, cs);
		}
	}
	assert_int_equal(want, civil_utc(2099, 12, 31, 23, 59, 59));
	/* a few before 1970 and the epoch itself */
	assert_int_equal(p1_time_from_civil(1970, 1, 1, 0, 0, 0), 0);
	assert_int_equal(p1_time_from_civil(1969, 12, 31, 23, 59, 59), -1);
	int y, mo, d, h, mi, s;
	p1_time_to_civil(-1, &y, &mo, &d, &h, &mi, &s);
	assert_true(y == 1969 && mo == 12 && d == 31 && h == 23 && mi == 59 && s == 59);
	p1_time_to_civil(civil_utc(1900, 3, 1, 0, 0, 0), &y, &mo, &d, &h, &mi, &s);
	assert_true(y == 1900 && mo == 3 && d == 1);
}

/* YYMMDDhhmmssX -> UTC with the flag's offset -> ISO with that offset, over 2001..2099. */
static void test_parse_format_round_trip(void **state)
{
	(void)state;
	unsigned checked = 0;
	for (int y = 2001; y <= 2099; y++)
		for (int mo = 1; mo <= 12; mo++) {
			static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
			int last = mdays[mo - 1] + (mo == 2 && y % 4 == 0);
			for (int d = 1; d <= last; d += (d == last - 1 ? 1 : 9)) {
				int h = (y + d) % 24, mi = (mo * 7 + d) % 60, s = (y * 3 + mo) % 60;
				for (int f = 0; f < 2; f++) {
					char in[32], want[64];
					struct p1_time t;
					char flag = f ? 'S' : 'W';
					snprintf(in, sizeof(in), "%02d%02d%02d%02d%02d%02d%c",
					         y % 100, mo, d, h, mi, s, flag);
					assert_int_equal(parse(in, &cet, &t), 1);
					assert_int_equal(t.flag, flag);
					assert_false(t.ambiguous);
					int off = f ? 7200 : 3600;
					assert_int_equal(t.offset_s, off);
					if (t.utc != civil_utc(y, mo, d, h, mi, s) - off)
						fail_msg("%s -> %lld", in, (long long)t.utc);
					snprintf(want, sizeof(want),
					         "%04d-%02d-%02dT%02d:%02d:%02d+%02d:00", y, mo, d,
					         h, mi, s, off / 3600);
					assert_string_equal(fmt(&t), want);
					checked++;
				}
			}
		}
	assert_true(checked > 9000);
}

/* Last Sundays of March and October, 2020-2030 (summer time starts and ends at 01:00 UTC). */
static const int switches[][3] = {
        {2020, 29, 25}, {2021, 28, 31}, {2022, 27, 30}, {2023, 26, 29},
        {2024, 31, 27}, {2025, 30, 26}, {2026, 29, 25}, {2027, 28, 31},
        {2028, 26, 29}, {2029, 25, 28}, {2030, 31, 27},
};

static void test_eu_switch_dates(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(switches) / sizeof(switches[0]); i++) {
		int y = switches[i][0];
		int64_t spring = civil_utc(y, 3, switches[i][1], 1, 0, 0);
		int64_t autumn = civil_utc(y, 10, switches[i][2], 1, 0, 0);
		/* the table itself: last Sundays */
		struct tm tm;
		time_t tt = (time_t)spring;
		gmtime_r(&tt, &tm);
		assert_int_equal(tm.tm_wday, 0);
		assert_true(switches[i][1] + 7 > 31);
		tt = (time_t)autumn;
		gmtime_r(&tt, &tm);
		assert_int_equal(tm.tm_wday, 0);
		assert_true(switches[i][2] + 7 > 31);

		assert_false(p1_tz_is_dst(&cet, spring - 1));
		assert_true(p1_tz_is_dst(&cet, spring));
		assert_true(p1_tz_is_dst(&cet, autumn - 1));
		assert_false(p1_tz_is_dst(&cet, autumn));
		assert_false(p1_tz_is_dst(&cet, civil_utc(y, 1, 15, 12, 0, 0)));
		assert_true(p1_tz_is_dst(&cet, civil_utc(y, 7, 15, 12, 0, 0)));
		assert_false(p1_tz_is_dst(&cet, civil_utc(y, 12, 31, 23, 59, 59)));
		/* a week earlier nothing has switched yet */
		assert_false(p1_tz_is_dst(&cet, spring - 7 * 86400));
		assert_true(p1_tz_is_dst(&cet, autumn - 7 * 86400));

		char buf[32], want[32];
		p1_time_format_tz(spring - 1, &cet, buf, sizeof(buf));
		snprintf(want, sizeof(want), "%04d-03-%02dT01:59:59+01:00", y, switches[i][1]);
		assert_string_equal(buf, want);
		p1_time_format_tz(spring, &cet, buf, sizeof(buf));
		snprintf(want, sizeof(want), "%04d-03-%02dT03:00:00+02:00", y, switches[i][1]);
		assert_string_equal(buf, want);
		p1_time_format_tz(autumn - 1, &cet, buf, sizeof(buf));
		snprintf(want, sizeof(want), "%04d-10-%02dT02:59:59+02:00", y, switches[i][2]);
		assert_string_equal(buf, want);
		p1_time_format_tz(autumn, &cet, buf, sizeof(buf));
		snprintf(want, sizeof(want), "%04d-10-%02dT02:00:00+01:00", y, switches[i][2]);
		assert_string_equal(buf, want);
	}
}

static void test_format_tz_zones(void **state)
{
	(void)state;
	char buf[64];
	int64_t t = civil_utc(2024, 7, 1, 12, 0, 0);
	/* no summer time */
	struct p1_tz utc = {0, 0, false};
	assert_int_equal(p1_time_format_tz(t, &utc, buf, sizeof(buf)), 25);
	assert_string_equal(buf, "2024-07-01T12:00:00+00:00");
	/* Sweden-like: standard time all year */
	struct p1_tz se = {3600, 3600, false};
	p1_time_format_tz(t, &se, buf, sizeof(buf));
	assert_string_equal(buf, "2024-07-01T13:00:00+01:00");
	assert_false(p1_tz_is_dst(&se, t));
	/* eu_rule set but no second offset: never summer time */
	struct p1_tz odd = {3600, 3600, true};
	assert_false(p1_tz_is_dst(&odd, t));
	/* west of UTC, with the EU rule (Portugal/UK style offsets shifted) */
	struct p1_tz west = {-5 * 3600, -4 * 3600, true};
	p1_time_format_tz(t, &west, buf, sizeof(buf));
	assert_string_equal(buf, "2024-07-01T08:00:00-04:00");
	p1_time_format_tz(civil_utc(2024, 1, 1, 3, 0, 0), &west, buf, sizeof(buf));
	assert_string_equal(buf, "2023-12-31T22:00:00-05:00");
	/* half-hour offset */
	struct p1_tz india = {19800, 19800, false};
	p1_time_format_tz(civil_utc(2024, 1, 1, 20, 0, 0), &india, buf, sizeof(buf));
	assert_string_equal(buf, "2024-01-02T01:30:00+05:30");
	/* Eastern Europe (Hungary is CET; Lithuania/Finland EET) */
	struct p1_tz eet = {7200, 10800, true};
	p1_time_format_tz(t, &eet, buf, sizeof(buf));
	assert_string_equal(buf, "2024-07-01T15:00:00+03:00");
	/* snprintf-style length when the buffer is short */
	char small[8];
	assert_int_equal(p1_time_format_tz(t, &cet, small, sizeof(small)), 25);
	assert_string_equal(small, "2024-07");
}

static void test_flags(void **state)
{
	(void)state;
	struct p1_time t;
	/* dsmr-protocol.md §4.3: 231029023000S is 00:30Z, W is 01:30Z */
	assert_int_equal(parse("231029023000S", &cet, &t), 1);
	assert_int_equal(t.utc, civil_utc(2023, 10, 29, 0, 30, 0));
	assert_string_equal(fmt(&t), "2023-10-29T02:30:00+02:00");
	assert_int_equal(parse("231029023000W", &cet, &t), 1);
	assert_int_equal(t.utc, civil_utc(2023, 10, 29, 1, 30, 0));
	assert_string_equal(fmt(&t), "2023-10-29T02:30:00+01:00");
	/* lower case */
	assert_int_equal(parse("231029023000s", &cet, &t), 1);
	assert_int_equal(t.flag, 'S');
	assert_int_equal(t.utc, civil_utc(2023, 10, 29, 0, 30, 0));
	assert_int_equal(parse("231029023000w", &cet, &t), 1);
	assert_int_equal(t.flag, 'W');
	/* another letter is no flag: resolved by the zone's rule */
	assert_int_equal(parse("240101120000T", &cet, &t), 1);
	assert_int_equal(t.flag, 0);
	assert_int_equal(t.utc, civil_utc(2024, 1, 1, 11, 0, 0));
	/* the flag wins over the rule: W in summer, S in winter (Fluvius period stamps) */
	assert_int_equal(parse("240715120000W", &cet, &t), 1);
	assert_int_equal(t.utc, civil_utc(2024, 7, 15, 11, 0, 0));
	assert_int_equal(parse("200301000000S", &cet, &t), 1);
	assert_int_equal(t.utc, civil_utc(2020, 2, 29, 22, 0, 0));
	/* W inside the skipped spring hour still converts by the offset rule */
	assert_int_equal(parse("240331023000W", &cet, &t), 1);
	assert_int_equal(t.utc, civil_utc(2024, 3, 31, 1, 30, 0));
	/* Swedish meters always send W */
	struct p1_tz se = {3600, 3600, false};
	assert_int_equal(parse("240715120000W", &se, &t), 1);
	assert_int_equal(t.utc, civil_utc(2024, 7, 15, 11, 0, 0));
}

static void test_no_flag(void **state)
{
	(void)state;
	struct p1_time t;
	/* winter and summer */
	assert_int_equal(parse("240101120000", &cet, &t), 1);
	assert_int_equal(t.flag, 0);
	assert_int_equal(t.offset_s, 3600);
	assert_int_equal(t.utc, civil_utc(2024, 1, 1, 11, 0, 0));
	assert_false(t.ambiguous);
	assert_int_equal(parse("240715120000", &cet, &t), 1);
	assert_int_equal(t.offset_s, 7200);
	assert_int_equal(t.utc, civil_utc(2024, 7, 15, 10, 0, 0));
	assert_false(t.ambiguous);
	/* the repeated autumn hour: ambiguous, summer time taken (p1/time.h) */
	for (int mi = 0; mi < 60; mi += 15) {
		char s[32];
		snprintf(s, sizeof(s), "2310290%d%02d00", 2, mi);
		assert_int_equal(parse(s, &cet, &t), 1);
		assert_true(t.ambiguous);
		assert_int_equal(t.offset_s, 7200);
		assert_int_equal(t.utc, civil_utc(2023, 10, 29, 0, mi, 0));
	}
	/* just before and after it */
	assert_int_equal(parse("231029015959", &cet, &t), 1);
	assert_false(t.ambiguous);
	assert_int_equal(t.utc, civil_utc(2023, 10, 28, 23, 59, 59));
	assert_int_equal(parse("231029030000", &cet, &t), 1);
	assert_false(t.ambiguous);
	assert_int_equal(t.utc, civil_utc(2023, 10, 29, 2, 0, 0));
	/* the skipped spring hour: standard time */
	assert_int_equal(parse("240331023000", &cet, &t), 1);
	assert_false(t.ambiguous);
	assert_int_equal(t.offset_s, 3600);
	assert_int_equal(t.utc, civil_utc(2024, 3, 31, 1, 30, 0));
	assert_int_equal(parse("240331030000", &cet, &t), 1);
	assert_int_equal(t.utc, civil_utc(2024, 3, 31, 1, 0, 0));
	/* a zone without summer time is never ambiguous */
	struct p1_tz utc = {0, 0, false};
	assert_int_equal(parse("231029023000", &utc, &t), 1);
	assert_false(t.ambiguous);
	assert_int_equal(t.utc, civil_utc(2023, 10, 29, 2, 30, 0));
	/* every autumn 2020-2030: exactly the hour 02:00-02:59 is ambiguous */
	for (size_t i = 0; i < sizeof(switches) / sizeof(switches[0]); i++) {
		for (int h = 0; h < 5; h++) {
			char s[32];
			snprintf(s, sizeof(s), "%02d10%02d%02d3000", switches[i][0] % 100,
			         switches[i][2], h);
			assert_int_equal(parse(s, &cet, &t), 1);
			if (t.ambiguous != (h == 2))
				fail_msg("%s: ambiguous=%d", s, t.ambiguous);
		}
	}
}

static void test_impossible_and_malformed(void **state)
{
	(void)state;
	struct p1_time t;
	static const char *const impossible[] = {
	        "230229120000W", /* not a leap year */
	        "231131120000W", "241301120000W", "240001120000W", "240100120000W",
	        "240101240000W", "240101126000W", "240101120060W", "241232000000S",
	};
	for (size_t i = 0; i < sizeof(impossible) / sizeof(impossible[0]); i++)
		if (parse(impossible[i], &cet, &t) != 0)
			fail_msg("%s accepted", impossible[i]);
	assert_int_equal(parse("240229120000W", &cet, &t), 1); /* leap year */
	assert_int_equal(t.utc, civil_utc(2024, 2, 29, 11, 0, 0));
	assert_int_equal(parse("990101000000W", &cet, &t), 1);
	assert_int_equal(t.utc, civil_utc(2098, 12, 31, 23, 0, 0));
	static const char *const malformed[] = {
	        "",
	        "2401011200",
	        "24010112000",
	        "2401011200000W",
	        "24010112000XW",
	        "2401011200 0W",
	        "240101120000!",
	        "2401011200001",
	        "-40101120000W",
	        "0x0101120000W",
	};
	for (size_t i = 0; i < sizeof(malformed) / sizeof(malformed[0]); i++)
		if (parse(malformed[i], &cet, &t) != -1)
			fail_msg("\"%s\" not rejected as malformed", malformed[i]);
	/* the length given is what counts, not the NUL */
	assert_int_equal(p1_time_parse("240101120000WXYZ", 13, &cet, &t), 1);
	assert_int_equal(t.flag, 'W');
}

/* dsmr-protocol.md §4.3 sentinels: well-formed, but "no timestamp". */
static void test_sentinels(void **state)
{
	(void)state;
	static const char *const sentinels[] = {
	        "632525252525W", "632525252525S", "000101000001W", "000000000000W",
	        "000000000000S", "000101010000W", "700101010000W",
	};
	for (size_t i = 0; i < sizeof(sentinels) / sizeof(sentinels[0]); i++) {
		struct p1_time t;
		int r = parse(sentinels[i], &cet, &t);
		if (r != 0)
			fail_msg("sentinel %s: p1_time_parse returned %d (utc %lld), expected 0",
			         sentinels[i], r, r > 0 ? (long long)t.utc : 0LL);
	}
}

static void test_dlms_datetime(void **state)
{
	(void)state;
	struct p1_time t;
	/* §4.3: 2024-06-28 10:43:43, deviation -120 min (local = UTC+2), DST */
	assert_int_equal(parse("07E8061C050A2B2B00FF8880", &cet, &t), 1);
	assert_int_equal(t.utc, civil_utc(2024, 6, 28, 8, 43, 43));
	assert_int_equal(t.offset_s, 7200);
	assert_int_equal(t.flag, 'S');
	assert_string_equal(fmt(&t), "2024-06-28T10:43:43+02:00");
	/* lower-case hex */
	assert_int_equal(parse("07e8061c050a2b2b00ff8880", &cet, &t), 1);
	assert_int_equal(t.utc, civil_utc(2024, 6, 28, 8, 43, 43));
	/* winter, deviation -60, no DST bit */
	assert_int_equal(parse("07E8010F010C000000FFC400", &cet, &t), 1);
	assert_int_equal(t.utc, civil_utc(2024, 1, 15, 11, 0, 0));
	assert_int_equal(t.flag, 'W');
	assert_int_equal(t.offset_s, 3600);
	/* deviation not specified (0x8000): the zone's rule */
	assert_int_equal(parse("07E8061C050A2B2B00800000", &cet, &t), 1);
	assert_int_equal(t.utc, civil_utc(2024, 6, 28, 8, 43, 43));
	assert_int_equal(t.flag, 0);
	/* impossible date: no time; not hex: not a timestamp */
	assert_int_equal(parse("07E80D1C050A2B2B00FF8880", &cet, &t), 0);
	assert_int_equal(parse("07E8061C050A2B2B00FF88GG", &cet, &t), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_civil_every_day),
	        cmocka_unit_test(test_parse_format_round_trip),
	        cmocka_unit_test(test_eu_switch_dates),
	        cmocka_unit_test(test_format_tz_zones),
	        cmocka_unit_test(test_flags),
	        cmocka_unit_test(test_no_flag),
	        cmocka_unit_test(test_impossible_and_malformed),
	        cmocka_unit_test(test_sentinels),
	        cmocka_unit_test(test_dlms_datetime),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
