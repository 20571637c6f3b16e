/* obis.h - private to libp1: the OBIS table that maps codes to fields and line handlers. */
#ifndef P1_OBIS_PRIV_H
#define P1_OBIS_PRIV_H

#include <stddef.h>
#include <stdint.h>

#include "p1/fields.h"

/* How a line is read. */
enum p1_handler {
	H_NUM,      /* first group: number with optional unit */
	H_RAW,      /* first group as is */
	H_HEX,      /* first group, hex-decoded when it is printable text in hex */
	H_TIME,     /* first group: timestamp */
	H_NUM_TIME, /* (time)(number) or (number)(time): field = number, field2 = time */
	H_PAIR,     /* two numbers, as two groups or "a,b" in one: field, field2 */
	H_EVENTS,   /* power failure log */
	H_DEMAND,   /* monthly peak history */
};

#define P1_OBIS_KEY(a, b, c, d, e) \
	((uint64_t)(a) << 32 | (uint64_t)(b) << 24 | (uint64_t)(c) << 16 | (uint64_t)(d) << 8 | \
	 (uint64_t)(e))

struct p1_obis_entry {
	uint64_t key;
	const char *code;
	uint8_t field;
	uint8_t handler;
	uint8_t field2;
};

/* Entry for a key, or NULL. */
const struct p1_obis_entry *p1_obis_lookup(uint64_t key);

/* The whole table, sorted by key (for tests and documentation). */
const struct p1_obis_entry *p1_obis_table(size_t *ret_n);

#endif
