/* json.c - a telegram as JSON (see p1/json.h). Formatting only: every number is printed from
 * its mantissa and scale, so what the meter sent is what comes out.
 *
 * The daemon renders every telegram (MQTT state, event stream), so this is written for speed:
 * pieces go straight into the caller's buffer while they fit and the NUL is written once at
 * the end; field names and fixed keys are quoted at compile time (names are [a-z0-9_], which
 * tests/unit/test_json.c checks); integers are written by hand, not with snprintf. Whatever
 * does not fit goes through put_tail, which keeps the output a prefix of the full one. */
#include "p1/json.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

struct out {
	char *buf;
	size_t cap;
	size_t len; /* bytes the output needs so far; may pass cap */
};

/* A piece that does not fit whole: as much of it as leaves room for the NUL. */
static __attribute__((noinline)) void put_tail(struct out *o, const char *s, size_t n)
{
	if (o->len < o->cap) {
		size_t room = o->cap - o->len - 1;
		memcpy(o->buf + o->len, s, n < room ? n : room);
	}
	o->len += n;
}

static inline void put(struct out *o, const char *s, size_t n)
{
	if (o->len + n < o->cap) {
		memcpy(o->buf + o->len, s, n);
		o->len += n;
	} else {
		put_tail(o, s, n);
	}
}

/* A string literal; its length is a constant, so the copy is a few moves. */
#define PUT_LIT(o, lit) put(o, lit, sizeof(lit) - 1)

static inline void put_c(struct out *o, char c)
{
	if (o->len + 1 < o->cap)
		o->buf[o->len] = c;
	o->len++;
}

/* The NUL, once: after the output, or in the last byte when the output was cut. */
static size_t finish(struct out *o)
{
	if (o->cap)
		o->buf[o->len < o->cap ? o->len : o->cap - 1] = 0;
	return o->len;
}

static void put_u64(struct out *o, uint64_t v)
{
	char tmp[20], *p = tmp + sizeof(tmp);
	do {
		*--p = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	put(o, p, (size_t)(tmp + sizeof(tmp) - p));
}

/* What a JSON string cannot hold as it is: 1 always (control bytes, quote, backslash, DEL),
 * 2 unless the text is known to be UTF-8 (bytes from 0x80 up). */
#define R16(x) x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x
static const uint8_t esc_class[256] = {
	R16(1), R16(1),
	0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x22 " */
	R16(0), R16(0),
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, /* 0x5c \ */
	R16(0),
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, /* 0x7f DEL */
	R16(2), R16(2), R16(2), R16(2), R16(2), R16(2), R16(2), R16(2),
};
#undef R16

/* The string from its first byte to escape, s[i], on. */
static __attribute__((noinline)) void put_string_esc(struct out *o, const char *s, size_t n,
						     size_t i, uint8_t mask)
{
	static const char hex[] = "0123456789abcdef";
	put_c(o, '"');
	size_t from = 0;
	for (; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (!(esc_class[c] & mask))
			continue;
		put(o, s + from, i - from);
		from = i + 1;
		if (c == '"' || c == '\\') {
			char esc[2] = {'\\', (char)c};
			put(o, esc, 2);
		} else {
			char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
			put(o, esc, 6);
		}
	}
	put(o, s + from, n - from);
	put_c(o, '"');
}

/* utf8: bytes from 0x80 up are passed through (text of ours, such as "m³"); otherwise they
 * are escaped one by one (bytes from a meter, which are not known to be UTF-8). */
static inline void put_string_as(struct out *o, const char *s, size_t n, bool utf8)
{
	const uint8_t mask = utf8 ? 1 : 3;
	size_t i = 0;
	while (i < n && !(esc_class[(uint8_t)s[i]] & mask))
		i++;
	if (i == n && o->len + n + 2 < o->cap) { /* the usual case: nothing to escape */
		char *p = o->buf + o->len;
		p[0] = '"';
		memcpy(p + 1, s, n);
		p[n + 1] = '"';
		o->len += n + 2;
	} else {
		put_string_esc(o, s, n, i, mask);
	}
}

static void put_string(struct out *o, const char *s, size_t n)
{
	put_string_as(o, s, n, false);
}

static __attribute__((noinline)) void put_num_tail(struct out *o, const struct p1_num *n)
{
	char tmp[48];
	put(o, tmp, p1_num_format(n, tmp, sizeof(tmp)));
}

static void put_num(struct out *o, const struct p1_num *n)
{
	/* p1_num_format writes at most 47 characters and the NUL */
	if (o->len < o->cap && o->cap - o->len >= 48)
		o->len += p1_num_format(n, o->buf + o->len, 48);
	else
		put_num_tail(o, n);
}

/* Quotes around at most 38 characters, the longest p1_time_format can write. */
#define TIME_MAX 40

static __attribute__((noinline)) void put_time_tail(struct out *o, const struct p1_time *t)
{
	char tmp[TIME_MAX];
	size_t k = p1_time_format(t, tmp + 1, sizeof(tmp) - 1);
	tmp[0] = '"';
	tmp[k + 1] = '"';
	put(o, tmp, k + 2);
}

static void put_time(struct out *o, const struct p1_time *t)
{
	if (o->len < o->cap && o->cap - o->len >= TIME_MAX) {
		char *p = o->buf + o->len;
		size_t k = p1_time_format(t, p + 1, TIME_MAX - 1);
		p[0] = '"';
		p[k + 1] = '"';
		o->len += k + 2;
	} else {
		put_time_tail(o, t);
	}
}

/* A member's key, comma included unless it is the object's first. */
static inline void put_key_quoted(struct out *o, bool *first, const char *comma_key, size_t n)
{
	if (*first)
		put(o, comma_key + 1, n - 1);
	else
		put(o, comma_key, n);
	*first = false;
}

/* name: a string literal that needs no escaping. */
#define PUT_KEY(o, first, name) put_key_quoted(o, first, ",\"" name "\":", sizeof(name) + 3)

/* A key that may need escaping. */
static void put_key(struct out *o, bool *first, const char *key)
{
	if (!*first)
		put_c(o, ',');
	*first = false;
	put_string(o, key, strlen(key));
	put_c(o, ':');
}

/* The field table's names as keys, quoted here at compile time, and kinds (also in
 * p1_field_info, which is a call away). */
#define FIELD_KEY_(id, name, kind, unit, cls, qty, desc) \
	[id] = {",\"" name "\":", sizeof(name) + 3, P1_KIND_##kind},
static const struct {
	const char *key; /* ,"name": */
	uint8_t len;
	uint8_t kind; /* enum p1_kind */
} field_keys[P1_FIELD_COUNT] = {P1_FIELD_LIST(FIELD_KEY_)};
#undef FIELD_KEY_
#define FIELD_KEY_FITS_(id, name, kind, unit, cls, qty, desc) \
	_Static_assert(sizeof(name) + 3 <= UINT8_MAX, "field name too long: " name);
P1_FIELD_LIST(FIELD_KEY_FITS_)
#undef FIELD_KEY_FITS_
_Static_assert(P1_FIELD_COUNT <= UINT8_MAX + 1, "field numbers must fit in uint8_t");

static void put_field_key(struct out *o, bool *first, enum p1_field f)
{
	put_key_quoted(o, first, field_keys[f].key, field_keys[f].len);
}

static void put_events(struct out *o, const struct p1_telegram *t)
{
	put_c(o, '[');
	for (unsigned i = 0; i < t->n_events; i++) {
		if (i)
			put_c(o, ',');
		PUT_LIT(o, "{\"end\":");
		put_time(o, &t->events[i].end);
		if (t->events[i].duration_s < 0) {
			PUT_LIT(o, ",\"duration\":null}");
		} else {
			PUT_LIT(o, ",\"duration\":");
			put_u64(o, (uint64_t)t->events[i].duration_s);
			put_c(o, '}');
		}
	}
	put_c(o, ']');
}

static void put_demand(struct out *o, const struct p1_telegram *t)
{
	put_c(o, '[');
	for (unsigned i = 0; i < t->n_demand; i++) {
		const struct p1_demand *d = &t->demand[i];
		if (i)
			put_c(o, ',');
		PUT_LIT(o, "{\"period\":");
		if (d->period_valid)
			put_time(o, &d->period);
		else
			PUT_LIT(o, "null");
		PUT_LIT(o, ",\"timestamp\":");
		if (d->time_valid)
			put_time(o, &d->time);
		else
			PUT_LIT(o, "null");
		PUT_LIT(o, ",\"value\":");
		if (d->value_valid)
			put_num(o, &d->value);
		else
			PUT_LIT(o, "null");
		put_c(o, '}');
	}
	put_c(o, ']');
}

static inline void put_value(struct out *o, const struct p1_telegram *t, enum p1_field f)
{
	const struct p1_value *v = &t->fields[f];
	switch (field_keys[f].kind) {
	case P1_KIND_EVENTS:
		put_events(o, t);
		break;
	case P1_KIND_DEMAND:
		put_demand(o, t);
		break;
	default:
		if (v->presence != P1_PRESENT)
			PUT_LIT(o, "null");
		else if (field_keys[f].kind == P1_KIND_NUMBER)
			put_num(o, &v->num);
		else if (field_keys[f].kind == P1_KIND_TIME)
			put_time(o, &v->time);
		else
			put_string(o, v->text.ptr, v->text.len);
	}
}

size_t p1_json_value(const struct p1_telegram *t, enum p1_field f, char *buf, size_t cap)
{
	struct out o = {buf, cap, 0};
	put_value(&o, t, f);
	return finish(&o);
}

size_t p1_json_string_utf8(const char *s, size_t len, char *buf, size_t cap)
{
	struct out o = {buf, cap, 0};
	put_string_as(&o, s, len, true);
	return finish(&o);
}

size_t p1_json_string(const char *s, size_t len, char *buf, size_t cap)
{
	struct out o = {buf, cap, 0};
	put_string(&o, s, len);
	return finish(&o);
}

static const char *medium_name(int type)
{
	switch (type) {
	case 2: return "electricity";
	case 3: return "gas";
	case 4: case 12: return "heat";
	case 6: return "warm_water";
	case 7: case 0x16: case 0x17: return "water";
	case 10: case 11: return "cooling";
	case 13: return "heat_cooling";
	default: return NULL;
	}
}

/* A number member that may be null; absent ones are left out. */
static void put_mbus_num(struct out *o, bool *first, const char *comma_key, size_t n,
			 const struct p1_value *v)
{
	if (!v->presence)
		return;
	put_key_quoted(o, first, comma_key, n);
	if (v->presence == P1_PRESENT)
		put_num(o, &v->num);
	else
		PUT_LIT(o, "null");
}

static void put_mbus_one(struct out *o, const struct p1_mbus *m, unsigned ch)
{
	bool first = false; /* "channel" is always there, and first */
	PUT_LIT(o, "{\"channel\":");
	put_u64(o, ch);
	if (m->device_type >= 0) {
		PUT_KEY(o, &first, "device_type");
		put_u64(o, (uint64_t)m->device_type);
		const char *med = medium_name(m->device_type);
		if (med) {
			PUT_KEY(o, &first, "medium");
			put_string(o, med, strlen(med));
		}
	}
	if (m->id.presence) {
		PUT_KEY(o, &first, "equipment_id");
		if (m->id.presence == P1_PRESENT)
			put_string(o, m->id.text.ptr, m->id.text.len);
		else
			PUT_LIT(o, "null");
	}
	if (m->value.presence) {
		PUT_KEY(o, &first, "value");
		if (m->value.presence == P1_PRESENT) {
			put_num(o, &m->value.num);
			if (m->value.num.unit) {
				PUT_KEY(o, &first, "unit");
				put_string(o, m->value.num.unit, strlen(m->value.num.unit));
			}
		} else {
			PUT_LIT(o, "null");
		}
		/* "0-ch:24.d.e": digits only, nothing to escape */
		PUT_KEY(o, &first, "obis");
		PUT_LIT(o, "\"0-");
		put_u64(o, ch);
		PUT_LIT(o, ":24.");
		put_u64(o, m->value_obis_d);
		put_c(o, '.');
		put_u64(o, m->value_obis_e);
		put_c(o, '"');
	}
	if (m->time.presence) {
		PUT_KEY(o, &first, "timestamp");
		if (m->time.presence == P1_PRESENT)
			put_time(o, &m->time.time);
		else
			PUT_LIT(o, "null");
	}
#define MBUS_KEY(name) ",\"" name "\":", sizeof(name) + 3
	put_mbus_num(o, &first, MBUS_KEY("valve_position"), &m->valve);
	put_mbus_num(o, &first, MBUS_KEY("switch_position"), &m->relay);
#undef MBUS_KEY
	put_c(o, '}');
}

static void put_mbus(struct out *o, const struct p1_telegram *t)
{
	put_c(o, '[');
	bool first = true;
	for (unsigned i = 0; i < P1_MAX_MBUS; i++) {
		if (!t->mbus[i].present)
			continue;
		if (!first)
			put_c(o, ',');
		first = false;
		put_mbus_one(o, &t->mbus[i], i + 1);
	}
	put_c(o, ']');
}

static const char *field_unit(const struct p1_telegram *t, enum p1_field f)
{
	const struct p1_value *v = &t->fields[f];
	switch (field_keys[f].kind) {
	case P1_KIND_NUMBER:
		return v->presence == P1_PRESENT ? v->num.unit : NULL;
	case P1_KIND_EVENTS:
		return v->presence ? "s" : NULL;
	case P1_KIND_DEMAND:
		for (unsigned i = 0; i < t->n_demand; i++)
			if (t->demand[i].value_valid && t->demand[i].value.unit)
				return t->demand[i].value.unit;
		return NULL;
	default:
		return NULL;
	}
}

/* present: the fields the object has, in order. */
static void put_units(struct out *o, const struct p1_telegram *t, const uint8_t *present,
		      unsigned n_present)
{
	uint8_t all[P1_FIELD_COUNT];
	if (t->n_demand && !t->fields[P1_F_DEMAND_HISTORY].presence) {
		/* demand entries without their field (not from p1_parse): their unit is listed
		 * all the same, so look at every field */
		for (unsigned f = 0; f < P1_FIELD_COUNT; f++)
			all[f] = (uint8_t)f;
		present = all;
		n_present = P1_FIELD_COUNT;
	}
	bool first = true;
	put_c(o, '{');
	for (unsigned i = 0; i < n_present; i++) {
		const char *u = field_unit(t, (enum p1_field)present[i]);
		if (u) {
			put_field_key(o, &first, (enum p1_field)present[i]);
			put_string(o, u, strlen(u));
		}
	}
	put_c(o, '}');
}

/* Unknown lines; a code seen more than once becomes an array of its raw values. */
static void put_unknown(struct out *o, const struct p1_telegram *t)
{
	bool first = true;
	put_c(o, '{');
	for (unsigned i = 0; i < t->n_unknown; i++) {
		const struct p1_unknown *u = &t->unknown[i];
		unsigned before = 0, count = 0;
		for (unsigned j = 0; j < t->n_unknown; j++)
			if (!strcmp(t->unknown[j].obis, u->obis)) {
				before += j < i;
				count++;
			}
		if (before)
			continue;
		put_key(o, &first, u->obis);
		if (count > 1)
			put_c(o, '[');
		for (unsigned j = i, k = 0; j < t->n_unknown; j++) {
			if (strcmp(t->unknown[j].obis, u->obis))
				continue;
			if (k++)
				put_c(o, ',');
			put_string(o, t->unknown[j].raw.ptr, t->unknown[j].raw.len);
		}
		if (count > 1)
			put_c(o, ']');
	}
	put_c(o, '}');
}

/* The object's first members. */
static void put_framing(struct out *o, const struct p1_telegram *t)
{
	static const char hex[] = "0123456789ABCDEF";
	PUT_LIT(o, "\"valid\":true,\"dialect\":");
	const char *d = p1_dialect_name(t->dialect);
	put_string(o, d, strlen(d));
	PUT_LIT(o, ",\"header\":");
	put_string(o, t->header.ptr, t->header.len);
	if (t->has_crc) {
		unsigned c = t->crc;
		char crc[14] = {',', '"', 'c', 'r', 'c', '"', ':', '"', hex[c >> 12 & 15],
				hex[c >> 8 & 15], hex[c >> 4 & 15], hex[c & 15], '"'};
		put(o, crc, 13);
	} else {
		PUT_LIT(o, ",\"crc\":null");
	}
	if (t->encrypted)
		PUT_LIT(o, ",\"encrypted\":true");
}

size_t p1_json_telegram(const struct p1_telegram *t, unsigned flags, char *buf, size_t cap)
{
	struct out o = {buf, cap, 0};
	bool first = true;
	put_c(&o, '{');
	if (flags & P1_JSON_FRAMING) {
		put_framing(&o, t);
		first = false;
	}
	uint8_t present[P1_FIELD_COUNT];
	unsigned n_present = 0;
	for (unsigned f = 0; f < P1_FIELD_COUNT; f++) {
		if (!t->fields[f].presence)
			continue;
		present[n_present++] = (uint8_t)f;
		put_field_key(&o, &first, (enum p1_field)f);
		put_value(&o, t, (enum p1_field)f);
	}
	if (flags & P1_JSON_MBUS) {
		PUT_KEY(&o, &first, "mbus");
		put_mbus(&o, t);
	}
	if (flags & P1_JSON_UNITS) {
		PUT_KEY(&o, &first, "units");
		put_units(&o, t, present, n_present);
	}
	if (flags & P1_JSON_UNKNOWN) {
		PUT_KEY(&o, &first, "unknown");
		put_unknown(&o, t);
	}
	put_c(&o, '}');
	return finish(&o);
}
