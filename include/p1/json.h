/* p1/json.h - a telegram as JSON, exact: numbers with the meter's decimals, timestamps in
 * ISO 8601 with offset. Pure formatting into a caller's buffer. */
#ifndef P1_JSON_H
#define P1_JSON_H

#include <stddef.h>

#include "p1/telegram.h"

enum p1_json_flags {
	P1_JSON_FRAMING = 1u << 0, /* "valid", "dialect", "header", "crc" first */
	P1_JSON_UNITS = 1u << 1,   /* "units": {field: unit} */
	P1_JSON_UNKNOWN = 1u << 2, /* "unknown": {obis: raw} */
	P1_JSON_MBUS = 1u << 3,    /* "mbus": [...] */
	P1_JSON_ALL = 0xf,
};

/* Write the telegram as one JSON object (no newline). Returns the length it needs, as
 * snprintf does; the output is complete only when that is < cap. */
size_t p1_json_telegram(const struct p1_telegram *t, unsigned flags, char *buf, size_t cap);

/* Write a JSON string literal (quotes included) of len bytes of s. Returns needed length. */
size_t p1_json_string(const char *s, size_t len, char *buf, size_t cap);

/* The same for text that is UTF-8 already (units such as "m³"): bytes from 0x80 up are
 * passed through instead of being escaped one by one. */
size_t p1_json_string_utf8(const char *s, size_t len, char *buf, size_t cap);

/* Write one field's value as JSON (number, string, ISO time, array or null). */
size_t p1_json_value(const struct p1_telegram *t, enum p1_field f, char *buf, size_t cap);

#endif
