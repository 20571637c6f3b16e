/* p1/telegram.h - the decoded telegram and the parser that fills it.
 *
 * A struct p1_telegram is allocated once (p1_telegram_new) and refilled by p1_parse() for every
 * frame: parsing never allocates. It owns a copy of the frame text, so it stays valid after the
 * framer moves on; strings point into that copy or into the telegram's own arena.
 *
 * Values are exact: numbers are kept as an integer mantissa and a count of decimals, exactly as
 * the meter wrote them (1033.309 kWh is mant 1033309, scale 3).
 */
#ifndef P1_TELEGRAM_H
#define P1_TELEGRAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "p1/error.h"
#include "p1/fields.h"
#include "p1/time.h"

#define P1_MAX_MBUS 4      /* M-Bus channels 1..4 */
#define P1_MAX_EVENTS 16   /* power failure log entries kept (spec: 10) */
#define P1_MAX_DEMAND 16   /* monthly peaks kept (spec: 13) */
#define P1_MAX_UNKNOWN 64  /* unknown lines kept per telegram */
#define P1_MAX_GROUPS 64   /* value groups per line */

enum p1_dialect {
	P1_DIALECT_UNKNOWN = 0,
	P1_DIALECT_DSMR22,    /* NL DSMR 2.2 / 3.0, no CRC */
	P1_DIALECT_DSMR4,     /* NL DSMR 4.x */
	P1_DIALECT_DSMR5,     /* NL DSMR 5.x */
	P1_DIALECT_FLUVIUS,   /* BE e-MUCS */
	P1_DIALECT_SMARTY,    /* LU Smarty */
	P1_DIALECT_AUSTRIA,   /* AT, DSMR text inside the Smarty envelope */
	P1_DIALECT_SWEDEN,    /* SE H1 port */
	P1_DIALECT_HUNGARY,   /* HU E.ON */
	P1_DIALECT_EASYMETER, /* DE EasyMeter Q3D, no CRC */
	P1_DIALECT_ACE4000,   /* Itron ACE4000, no CRC */
	P1_DIALECT_GENERIC,   /* something else with a CRC */
	P1_DIALECT_COUNT
};

/* "dsmr5", "fluvius", ...; "unknown" for P1_DIALECT_UNKNOWN. */
const char *p1_dialect_name(enum p1_dialect d);
/* Dialect by name, or -1. */
int p1_dialect_by_name(const char *name);

/* A string. Not NUL-terminated unless said so. */
struct p1_text {
	const char *ptr;
	uint16_t len;
};

/* A fixed-point number: mant / 10^scale, in unit. */
struct p1_num {
	int64_t mant;
	uint8_t scale;
	bool unit_assumed; /* the meter sent no unit; unit is the spec's */
	const char *unit;  /* NUL-terminated canonical spelling ("kWh", "m3") or NULL */
};

enum p1_presence {
	P1_ABSENT = 0,
	P1_PRESENT,   /* value is valid */
	P1_NULL,      /* line present but empty "()" or a sentinel such as 632525252525W */
};

struct p1_value {
	uint8_t presence; /* enum p1_presence */
	union {
		struct p1_num num;
		struct p1_time time;
		struct p1_text text;
	};
};

/* One entry of the power failure log (1-0:99.97.0). */
struct p1_event {
	struct p1_time end;  /* when the failure ended */
	int64_t duration_s;  /* -1 when unknown */
};

/* One month of the peak history (0-0:98.1.0). */
struct p1_demand {
	struct p1_time period; /* end of the billing period (start of the next month) */
	struct p1_time time;   /* when the peak occurred */
	struct p1_num value;
	bool period_valid, time_valid, value_valid; /* false for sentinels / empty groups */
};

/* An M-Bus channel (gas, water, heat, slave electricity meter). */
struct p1_mbus {
	bool present;
	int16_t device_type;   /* EN 13757-3 medium code, -1 when not sent */
	struct p1_value id;    /* text */
	struct p1_value value; /* number */
	struct p1_value time;  /* capture time of value */
	struct p1_value valve; /* number */
	struct p1_value relay; /* number: 0-n:96.3.10 */
	uint8_t value_obis_d, value_obis_e; /* 24.2.1 -> 2,1; 24.2.3 -> 2,3; 24.3.0 -> 3,0 */
};

/* A line whose OBIS code has no field, or a known line that could not be read. */
struct p1_unknown {
	char obis[24];       /* normalised "A-B:C.D.E", or the raw start of a line without a code */
	struct p1_text raw;  /* everything after the code, groups included: "(123*kWh)" */
};

/* Non-fatal oddities seen while parsing (bit mask in p1_telegram.warnings). */
enum p1_warning {
	P1_WARN_DUPLICATE = 1u << 0,     /* a known line came twice; first kept */
	P1_WARN_BAD_VALUE = 1u << 1,     /* a known line could not be read; kept as unknown */
	P1_WARN_TOO_MANY = 1u << 2,      /* more unknown lines / events / groups than kept */
	P1_WARN_LF_ONLY = 1u << 3,       /* CRC only matched after restoring CR before LF */
	P1_WARN_EVENT_COUNT = 1u << 4,   /* 99.97.0 count differs from the entries present */
	P1_WARN_UNIT_ASSUMED = 1u << 5,  /* a value came without unit; the spec's was assumed */
	P1_WARN_AMBIGUOUS_TIME = 1u << 6,/* a timestamp without S/W fell in the repeated hour */
	P1_WARN_NO_HEADER_BLANK = 1u << 7,/* no blank line after the header */
};

struct p1_telegram {
	enum p1_dialect dialect;
	bool encrypted;       /* arrived inside a DLMS envelope */
	bool has_crc;
	uint16_t crc;         /* as sent, when has_crc */
	uint32_t warnings;    /* enum p1_warning bits */
	struct p1_text header;/* identification line without the leading '/' */

	struct p1_value fields[P1_FIELD_COUNT];

	struct p1_event events[P1_MAX_EVENTS];
	uint8_t n_events;
	struct p1_demand demand[P1_MAX_DEMAND];
	uint8_t n_demand;
	struct p1_mbus mbus[P1_MAX_MBUS]; /* index = channel - 1 */
	struct p1_unknown unknown[P1_MAX_UNKNOWN];
	uint16_t n_unknown;

	/* The frame as received (text from '/' through the CRC line), NUL-terminated. */
	char *raw;
	size_t raw_len;

	/* private: storage */
	size_t cap;
	char *arena;
	size_t arena_used;
};

struct p1_parse_opts {
	struct p1_tz tz;               /* for timestamps without S/W flag and for offsets */
	enum p1_dialect force_dialect; /* P1_DIALECT_UNKNOWN: detect */
};

/* Defaults: Central European time, dialect detected. */
void p1_parse_opts_init(struct p1_parse_opts *o);

/* A telegram able to hold frames of up to cap bytes. NULL on out of memory. */
struct p1_telegram *p1_telegram_new(size_t cap);
struct p1_telegram *p1_telegram_free(struct p1_telegram *t);

/* Parse one framed text telegram (from '/' up to and including the CRC line; the framer's
 * output). has_crc/crc say what the framer found. Returns P1_OK, or P1_ERR_SYNTAX (then
 * *ret_line, if given, is the 1-based line number at fault) when a telegram without CRC is
 * not well formed, or P1_ERR_TOO_LONG when len exceeds the telegram's capacity. */
enum p1_error p1_parse(struct p1_telegram *t, const char *text, size_t len, bool has_crc,
		       uint16_t crc, const struct p1_parse_opts *opts, unsigned *ret_line);

/* Copy src into dst (allocated with a capacity at least src's): strings are re-pointed into
 * dst's own storage. Returns false when dst is too small. */
bool p1_telegram_copy(struct p1_telegram *dst, const struct p1_telegram *src);

/* Convenience accessors. */
static inline bool p1_has(const struct p1_telegram *t, enum p1_field f)
{
	return t->fields[f].presence == P1_PRESENT;
}

/* Number converted to the given scale (decimals), truncating toward zero when scale is
 * smaller. Returns false on overflow. */
bool p1_num_rescale(const struct p1_num *n, unsigned scale, int64_t *ret);

/* Number in thousandths of the large unit (kWh, kW, kvarh, kvar, kVA, m3, GJ): "1.5 kWh" and
 * "1500 Wh" both give 1500. Other units are taken as they are. Digits beyond the thousandth
 * are truncated. Returns false on overflow. */
bool p1_num_milli(const struct p1_num *n, int64_t *ret);

/* Format a number exactly ("1234.567", "-0.063"). Returns the length written (snprintf-style:
 * the length it would have had if cap is too small). */
size_t p1_num_format(const struct p1_num *n, char *buf, size_t cap);

#endif
