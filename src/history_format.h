/* history_format.h - history buckets from the store as CSV or JSON (see history_format.c). */
#ifndef P1D_HISTORY_FORMAT_H
#define P1D_HISTORY_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <sys/types.h>

#include "p1/time.h"
#include "store.h"

/* Dates history_parse_date() accepts: years 0 to 9999, so that spans and differences of
 * them never overflow. */
#define HISTORY_DATE_MIN (-62167219200LL) /* 0000-01-01T00:00:00Z */
#define HISTORY_DATE_MAX 253402300799LL   /* 9999-12-31T23:59:59Z */
/* Buckets one history request may ask for: two years of minutes (the reply is streamed, see
 * history_stream_new(); the bound keeps a request from stepping through centuries). */
#define HISTORY_BUCKETS_MAX 1100000

/* "2026-10-01" (local midnight), "2026-10-01T12:00[:00]" (local), with "Z" or "+hh:mm", or
 * seconds since 1970; between HISTORY_DATE_MIN and HISTORY_DATE_MAX. Returns 0 or -EINVAL. */
int history_parse_date(const char *s, const struct p1_tz *tz, int64_t *ret);

/* The parameters of a history request as given (each NULL when absent): ?resolution=&from=
 * &to=&format= and the Accept header of GET /api/v1/meters/<m>/history. */
struct history_params {
	const char *resolution, *from, *to, *format, *accept;
};

/* What to query: buckets of res whose start is in [from, to), as CSV or JSON. */
struct history_query {
	enum store_resolution res;
	int64_t from, to; /* UTC seconds, from < to */
	bool csv;
};

/* Checks a history request: resolution minute|hour|day|month; from and to dates (above);
 * without to: up to the end of the bucket holding now; without from: the last hour of minutes,
 * day of hours, 31 days of days or year of months before to; at most HISTORY_BUCKETS_MAX
 * buckets; CSV with format=csv, or without format when accept names text/csv. Returns 0, or
 * -EINVAL with *ret_error the reason for a 400 reply (a static string). Pure. */
int history_query_parse(const struct history_params *p, const struct p1_tz *tz, int64_t now,
			struct history_query *ret, const char **ret_error);

/* Buckets of meter whose start is in [from, to) written to out. Returns the number of
 * buckets or a negative errno. */
int history_write(struct store *s, const char *meter, enum store_resolution res, int64_t from,
		  int64_t to, const struct p1_tz *tz, bool json, FILE *out);

/* The same as a reply made piece by piece (HTTP), HISTORY_STREAM_STEP buckets per step at
 * most, so that no step keeps the loop long whatever the range: the columns are collected
 * first (steps that return 0 bytes), then the rows are printed. meter and tz are copied. The
 * first step is taken here: returns 0, or its negative errno (-EIO: the database is not open)
 * with nothing allocated. */
#define HISTORY_STREAM_STEP 512
struct history_stream;
int history_stream_new(struct store *s, const char *meter, const struct history_query *q,
		       const struct p1_tz *tz, struct history_stream **ret);
/* Up to max bytes of the reply into buf: their count; 0 when a step produced none yet (call
 * again); -1 at the end; -2 when the query failed (the reply is cut). */
ssize_t history_stream_read(void *hs, char *buf, size_t max);
void history_stream_free(void *hs);

/* One raw reading as the JSON of an MQTT state message sent from the history: "timestamp"
 * (ISO 8601 in zone tz), "from_history": true, the registers it has (exact decimals, named
 * after their fields), power_delivered/power_returned in kW, and "units". Returns the length,
 * or cap or more when it does not fit. */
size_t history_reading_json(const struct store_reading *r, const struct p1_tz *tz, char *buf,
			    size_t cap);

#endif
