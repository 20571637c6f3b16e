/* history_format.h - history buckets from the store as CSV or JSON (see history_format.c). */
#ifndef P1D_HISTORY_FORMAT_H
#define P1D_HISTORY_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "p1/time.h"
#include "store.h"

/* "2026-10-01" (local midnight), "2026-10-01T12:00[:00]" (local), with "Z" or "+hh:mm", or
 * seconds since 1970. Returns 0 or -EINVAL. */
int history_parse_date(const char *s, const struct p1_tz *tz, int64_t *ret);

/* Buckets of meter whose start is in [from, to) written to out. Returns the number of
 * buckets or a negative errno. */
int history_write(struct store *s, const char *meter, enum store_resolution res, int64_t from,
		  int64_t to, const struct p1_tz *tz, bool json, FILE *out);

/* One raw reading as the JSON of an MQTT state message sent from the history: "timestamp"
 * (ISO 8601 in zone tz), "from_history": true, the registers it has (exact decimals, named
 * after their fields), power_delivered/power_returned in kW, and "units". Returns the length,
 * or cap or more when it does not fit. */
size_t history_reading_json(const struct store_reading *r, const struct p1_tz *tz, char *buf,
			    size_t cap);

#endif
