/* obis.h - private to libp1: the OBIS table that maps codes to fields and line handlers. */
#ifndef P1_OBIS_PRIV_H
#define P1_OBIS_PRIV_H

#include <stddef.h>
#include <stdint.h>

#include "obis_hash.h"
#include "p1/fields.h"
#include "swar.h"

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

/* The table, sorted by key: OBIS_TABLE_SIZE entries (obis_hash.h). */
extern const struct p1_obis_entry p1_obis_entries[];

/* Entry for a key, or NULL. */
const struct p1_obis_entry *p1_obis_lookup(uint64_t key);

/* Entry whose code is written at p exactly as the table writes it and followed by '('
 * ("1-0:1.8.1(001234.567*kWh)"), with *ret_paren set to the '('; NULL for any other text,
 * M-Bus channel codes and other spellings of a code included ("1-0:01.8.1("): those are for
 * a reader of numbers. Reads 16 bytes from p, which must all be readable. Inline: the parser
 * calls it for every line. */
static inline const struct p1_obis_entry *p1_obis_match(const char *p, const char **ret_paren)
{
	/* every code of the table is 8 to 15 characters long (the generator checks), so its '('
	 * is in the second word; a '(' in the first word makes that word unlike every entry's */
	uint64_t w0 = load_le64(p), w1 = load_le64(p + 8), m = bytes_eq_first(w1, '(');
	if (!m)
		return NULL;
	unsigned at = first_marked(m); /* the second word keeps the bytes up to the '(' */
	w1 &= at == 7 ? ~0ull : (1ull << (8 * at + 8)) - 1;
	unsigned slot =
		obis_text_slots[((w0 ^ w1 * OBIS_TEXT_MUL1) * OBIS_TEXT_MUL2) >> OBIS_HASH_SHIFT];
	if (!slot || obis_text[slot - 1][0] != w0 || obis_text[slot - 1][1] != w1)
		return NULL;
	*ret_paren = p + 8 + at;
	return &p1_obis_entries[slot - 1];
}

/* The whole table, sorted by key (for tests and documentation). */
const struct p1_obis_entry *p1_obis_table(size_t *ret_n);

#endif
