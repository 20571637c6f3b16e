/* p1/time.h - meter timestamps: YYMMDDhhmmssX to UTC, and back to ISO 8601.
 *
 * A timestamp with an S (summer) or W (winter) flag converts to UTC with the zone's two
 * offsets and no rules. One without a flag (DSMR 2.2/3) is resolved with the European
 * summer-time rule when the zone has summer time: in the repeated autumn hour summer time is
 * taken, in the skipped spring hour standard time. Pure: no tz database, no clock.
 */
#ifndef P1_TIME_H
#define P1_TIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct p1_tz {
	int32_t std_offset_s; /* east of UTC, winter: +3600 for CET */
	int32_t dst_offset_s; /* east of UTC, summer: +7200 for CEST; = std when no summer time */
	bool eu_rule;         /* summer time from the last Sunday of March 01:00 UTC to the last
			       * Sunday of October 01:00 UTC; false: never summer time */
};

/* Central European Time (NL, BE, LU, AT, SE meters). */
#define P1_TZ_CET ((struct p1_tz){3600, 7200, true})

struct p1_time {
	int64_t utc;      /* seconds since 1970-01-01T00:00:00Z */
	int32_t offset_s; /* local offset that applied, for printing */
	char flag;        /* 'S', 'W', or 0 when the meter sent none */
	bool ambiguous;   /* no flag and in the repeated autumn hour */
};

/* Seconds since the epoch of a civil date-time taken as UTC; fields are not range checked. */
int64_t p1_time_from_civil(int year, int month, int day, int hour, int min, int sec);

/* Civil date-time of seconds since the epoch (UTC). */
void p1_time_to_civil(int64_t t, int *year, int *month, int *day, int *hour, int *min, int *sec);

/* Is t (UTC) in summer time under the zone's rule? */
bool p1_tz_is_dst(const struct p1_tz *tz, int64_t t);

/* Parse a meter timestamp: "YYMMDDhhmmssX" (X = S/W, any case; other letters = no flag),
 * "YYMMDDhhmmss", or a 24-hex-digit DLMS date-time. Returns 1 for a valid time, 0 for a
 * well-formed but impossible or sentinel value (632525252525W, 000101000001W, ...: "no time"),
 * -1 when s is not a timestamp at all. */
int p1_time_parse(const char *s, size_t len, const struct p1_tz *tz, struct p1_time *ret);

/* ISO 8601 with offset: "2019-02-27T13:47:24+01:00". buf needs 26 bytes. Returns length. */
size_t p1_time_format(const struct p1_time *t, char *buf, size_t cap);

/* ISO 8601 of a UTC time in the zone: offset chosen with the zone's rule. */
size_t p1_time_format_tz(int64_t utc, const struct p1_tz *tz, char *buf, size_t cap);

#endif
