/* time.c - meter timestamps to UTC and ISO 8601 (see p1/time.h). Pure arithmetic: civil
 * dates by Howard Hinnant's days-from-civil algorithm, the EU summer-time rule by hand. */
#include "p1/time.h"

#include "digits.h"
#include "hex.h"

#include <stdio.h>
#include <string.h>

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	y -= m <= 2;
	const int64_t era = (y >= 0 ? y : y - 399) / 400;
	const unsigned yoe = (unsigned)(y - era * 400);
	const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

int64_t p1_time_from_civil(int year, int month, int day, int hour, int min, int sec)
{
	return days_from_civil(year, (unsigned)month, (unsigned)day) * 86400 +
	       (int64_t)hour * 3600 + (int64_t)min * 60 + sec;
}

void p1_time_to_civil(int64_t t, int *year, int *month, int *day, int *hour, int *min, int *sec)
{
	int64_t days = t / 86400, rem = t % 86400;
	if (rem < 0) {
		rem += 86400;
		days--;
	}
	*hour = (int)(rem / 3600);
	*min = (int)(rem / 60 % 60);
	*sec = (int)(rem % 60);
	days += 719468;
	const int64_t era = (days >= 0 ? days : days - 146096) / 146097;
	const unsigned doe = (unsigned)(days - era * 146097);
	const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	const unsigned mp = (5 * doy + 2) / 153;
	const unsigned d = doy - (153 * mp + 2) / 5 + 1;
	const unsigned m = mp < 10 ? mp + 3 : mp - 9;
	*year = (int)((int64_t)yoe + era * 400 + (m <= 2));
	*month = (int)m;
	*day = (int)d;
}

/* UTC second at which the last Sunday of month (3 or 10) of year reaches 01:00 UTC. */
static int64_t eu_switch(int year, int month)
{
	int64_t last = days_from_civil(year, (unsigned)month, 31);
	/* 1970-01-01 was a Thursday: weekday 0 = Sunday is (days + 4) % 7 */
	int64_t wd = ((last + 4) % 7 + 7) % 7;
	return (last - wd) * 86400 + 3600;
}

bool p1_tz_is_dst(const struct p1_tz *tz, int64_t t)
{
	if (!tz->eu_rule || tz->dst_offset_s == tz->std_offset_s)
		return false;
	int y, mo, d, h, mi, s;
	p1_time_to_civil(t, &y, &mo, &d, &h, &mi, &s);
	return t >= eu_switch(y, 3) && t < eu_switch(y, 10);
}

static int two(const char *s)
{
	unsigned a = (unsigned char)s[0] - (unsigned)'0', b = (unsigned char)s[1] - (unsigned)'0';
	return a <= 9 && b <= 9 ? (int)(a * 10 + b) : -1;
}

static inline bool civil_ok(int y, int mo, int d, int h, int mi, int s)
{
	static const unsigned char mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	/* year 2000 is a sentinel (000101000001W: unused slot) */
	if (y < 2001 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 ||
	    s > 59)
		return false;
	if (mo == 2 && d == 29 && !(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)))
		return false;
	return true;
}

/* Local civil time without flag -> UTC under the zone's rule. */
static void resolve_local(const struct p1_tz *tz, int64_t local, struct p1_time *r)
{
	int64_t as_std = local - tz->std_offset_s, as_dst = local - tz->dst_offset_s;
	bool std_ok = !p1_tz_is_dst(tz, as_std), dst_ok = p1_tz_is_dst(tz, as_dst);
	r->ambiguous = std_ok && dst_ok && tz->dst_offset_s != tz->std_offset_s;
	if (dst_ok) { /* repeated hour: summer time, as the meter's clock still ran on it */
		r->utc = as_dst;
		r->offset_s = tz->dst_offset_s;
	} else { /* standard time, also for the skipped spring hour */
		r->utc = as_std;
		r->offset_s = tz->std_offset_s;
	}
}

static int parse_dlms(const char *s, const struct p1_tz *tz, struct p1_time *r)
{
	uint8_t b[12];
	for (size_t i = 0; i < 12; i++) {
		int hi = p1_hexval(s[2 * i]), lo = p1_hexval(s[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return -1;
		b[i] = (uint8_t)(hi << 4 | lo);
	}
	int y = b[0] << 8 | b[1], mo = b[2], d = b[3], h = b[5], mi = b[6], sec = b[7];
	int16_t dev = (int16_t)(b[9] << 8 | b[10]); /* minutes, local = UTC - dev */
	if (!civil_ok(y, mo, d, h, mi, sec))
		return 0;
	int64_t local = p1_time_from_civil(y, mo, d, h, mi, sec);
	r->flag = (b[11] & 0x80) ? 'S' : 'W';
	r->ambiguous = false;
	if (dev != (int16_t)0x8000) {
		r->offset_s = -dev * 60;
		r->utc = local - r->offset_s;
	} else {
		resolve_local(tz, local, r);
		r->flag = 0;
	}
	return 1;
}

/* A DLMS octet-string timestamp (24 hex digits), see parse_dlms. */
static int parse_dlms_time(const char *s, const struct p1_tz *tz, struct p1_time *ret)
{
	struct p1_time r = {0};
	int k = parse_dlms(s, tz, &r);
	if (k == 1)
		*ret = r;
	return k;
}

int p1_time_parse(const char *s, size_t len, const struct p1_tz *tz, struct p1_time *ret)
{
	if (len == 24)
		return parse_dlms_time(s, tz, ret);
	if (len != 12 && len != 13)
		return -1;
	/* YYMMDDhhmmss, each two digits (all twelve characters are there to read) */
	int y2 = two(s), mo = two(s + 2), d = two(s + 4), h = two(s + 6), mi = two(s + 8),
	    sec = two(s + 10);
	if ((y2 | mo | d | h | mi | sec) < 0)
		return -1;
	char flag = 0;
	if (len == 13) {
		char c = (char)(s[12] & ~0x20);
		if (c == 'S' || c == 'W')
			flag = c;
		else if (!((s[12] >= 'A' && s[12] <= 'Z') || (s[12] >= 'a' && s[12] <= 'z')))
			return -1;
	}
	int y = 2000 + y2;
	if (y2 == 70 && mo == 1 && d == 1 && h <= 1 && mi == 0 && sec == 0)
		return 0; /* 700101010000W: the Unix epoch in two digits, "no device" (Iskra) */
	if (!civil_ok(y, mo, d, h, mi, sec))
		return 0;
	int64_t local = p1_time_from_civil(y, mo, d, h, mi, sec);
	if (flag) {
		int32_t off = flag == 'S' ? tz->dst_offset_s : tz->std_offset_s;
		*ret = (struct p1_time){.utc = local - off, .offset_s = off, .flag = flag};
		return 1;
	}
	struct p1_time r = {0};
	resolve_local(tz, local, &r);
	*ret = r;
	return 1;
}

size_t p1_time_format(const struct p1_time *t, char *buf, size_t cap)
{
	int y, mo, d, h, mi, s;
	p1_time_to_civil(t->utc + t->offset_s, &y, &mo, &d, &h, &mi, &s);
	int off = t->offset_s < 0 ? -t->offset_s : t->offset_s;
	/* What the snprintf below writes, by hand when every number has its fixed width (month
	 * to second always do): JSON output formats every timestamp of every telegram. */
	if ((unsigned)y <= 9999 && (unsigned)off < 100 * 3600 && cap > 25) {
		char *p = p1_two_digits(p1_two_digits(buf, (unsigned)y / 100), (unsigned)y % 100);
		*p++ = '-';
		p = p1_two_digits(p, (unsigned)mo);
		*p++ = '-';
		p = p1_two_digits(p, (unsigned)d);
		*p++ = 'T';
		p = p1_two_digits(p, (unsigned)h);
		*p++ = ':';
		p = p1_two_digits(p, (unsigned)mi);
		*p++ = ':';
		p = p1_two_digits(p, (unsigned)s);
		*p++ = t->offset_s < 0 ? '-' : '+';
		p = p1_two_digits(p, (unsigned)(off / 3600));
		*p++ = ':';
		p = p1_two_digits(p, (unsigned)(off / 60 % 60));
		*p = 0;
		return 25;
	}
	int n = snprintf(buf, cap, "%04d-%02d-%02dT%02d:%02d:%02d%c%02d:%02d", y, mo, d, h, mi, s,
			 t->offset_s < 0 ? '-' : '+', off / 3600, off / 60 % 60);
	return n < 0 ? 0 : (size_t)n;
}

size_t p1_time_format_tz(int64_t utc, const struct p1_tz *tz, char *buf, size_t cap)
{
	struct p1_time t = {.utc = utc};
	t.offset_s = p1_tz_is_dst(tz, utc) ? tz->dst_offset_s : tz->std_offset_s;
	return p1_time_format(&t, buf, cap);
}
