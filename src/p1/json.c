/* json.c - a telegram as JSON (see p1/json.h). Formatting only: every number is printed from
 * its mantissa and scale, so what the meter sent is what comes out. */
#include "p1/json.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

struct out {
	char *buf;
	size_t cap, len;
};

static void put(struct out *o, const char *s, size_t n)
{
	if (o->len < o->cap) {
		size_t room = o->cap - o->len - 1, k = n < room ? n : room;
		memcpy(o->buf + o->len, s, k);
		o->buf[o->len + k] = 0;
	}
	o->len += n;
}

static void puts_(struct out *o, const char *s)
{
	put(o, s, strlen(s));
}

/* utf8: bytes from 0x80 up are passed through (text of ours, such as "m³"); otherwise they
 * are escaped one by one (bytes from a meter, which are not known to be UTF-8). */
static void put_string_as(struct out *o, const char *s, size_t n, bool utf8)
{
	static const char hex[] = "0123456789abcdef";
	put(o, "\"", 1);
	size_t from = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x20 && c != '"' && c != '\\' && (c < 0x7f || (utf8 && c >= 0x80)))
			continue;
		put(o, s + from, i - from);
		from = i + 1;
		char esc[7] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15], 0};
		if (c == '"' || c == '\\') {
			esc[1] = (char)c;
			esc[2] = 0;
		}
		puts_(o, esc);
	}
	put(o, s + from, n - from);
	put(o, "\"", 1);
}

static void put_string(struct out *o, const char *s, size_t n)
{
	put_string_as(o, s, n, false);
}

static void put_num(struct out *o, const struct p1_num *n)
{
	char tmp[48];
	size_t k = p1_num_format(n, tmp, sizeof(tmp));
	put(o, tmp, k);
}

static void put_time(struct out *o, const struct p1_time *t)
{
	char tmp[40];
	size_t k = p1_time_format(t, tmp, sizeof(tmp));
	put(o, "\"", 1);
	put(o, tmp, k);
	put(o, "\"", 1);
}

static void put_key(struct out *o, bool *first, const char *key)
{
	if (!*first)
		put(o, ",", 1);
	*first = false;
	put_string(o, key, strlen(key));
	put(o, ":", 1);
}

static void put_events(struct out *o, const struct p1_telegram *t)
{
	put(o, "[", 1);
	for (unsigned i = 0; i < t->n_events; i++) {
		if (i)
			put(o, ",", 1);
		puts_(o, "{\"end\":");
		put_time(o, &t->events[i].end);
		char tmp[48];
		if (t->events[i].duration_s < 0)
			snprintf(tmp, sizeof(tmp), ",\"duration\":null}");
		else
			snprintf(tmp, sizeof(tmp), ",\"duration\":%lld}",
				 (long long)t->events[i].duration_s);
		puts_(o, tmp);
	}
	put(o, "]", 1);
}

static void put_demand(struct out *o, const struct p1_telegram *t)
{
	put(o, "[", 1);
	for (unsigned i = 0; i < t->n_demand; i++) {
		const struct p1_demand *d = &t->demand[i];
		if (i)
			put(o, ",", 1);
		puts_(o, "{\"period\":");
		if (d->period_valid)
			put_time(o, &d->period);
		else
			puts_(o, "null");
		puts_(o, ",\"timestamp\":");
		if (d->time_valid)
			put_time(o, &d->time);
		else
			puts_(o, "null");
		puts_(o, ",\"value\":");
		if (d->value_valid)
			put_num(o, &d->value);
		else
			puts_(o, "null");
		put(o, "}", 1);
	}
	put(o, "]", 1);
}

static void put_value(struct out *o, const struct p1_telegram *t, enum p1_field f)
{
	const struct p1_value *v = &t->fields[f];
	enum p1_kind k = p1_field_info(f)->kind;
	if (k == P1_KIND_EVENTS)
		return put_events(o, t);
	if (k == P1_KIND_DEMAND)
		return put_demand(o, t);
	if (v->presence != P1_PRESENT)
		return puts_(o, "null");
	if (k == P1_KIND_NUMBER)
		put_num(o, &v->num);
	else if (k == P1_KIND_TIME)
		put_time(o, &v->time);
	else
		put_string(o, v->text.ptr, v->text.len);
}

size_t p1_json_value(const struct p1_telegram *t, enum p1_field f, char *buf, size_t cap)
{
	struct out o = {buf, cap, 0};
	if (cap)
		buf[0] = 0;
	put_value(&o, t, f);
	return o.len;
}

size_t p1_json_string_utf8(const char *s, size_t len, char *buf, size_t cap)
{
	struct out o = {buf, cap, 0};
	if (cap)
		buf[0] = 0;
	put_string_as(&o, s, len, true);
	return o.len;
}

size_t p1_json_string(const char *s, size_t len, char *buf, size_t cap)
{
	struct out o = {buf, cap, 0};
	if (cap)
		buf[0] = 0;
	put_string(&o, s, len);
	return o.len;
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

static void put_mbus_one(struct out *o, const struct p1_mbus *m, unsigned ch)
{
	char tmp[64];
	bool first = true;
	put(o, "{", 1);
	snprintf(tmp, sizeof(tmp), "%u", ch);
	put_key(o, &first, "channel");
	puts_(o, tmp);
	if (m->device_type >= 0) {
		snprintf(tmp, sizeof(tmp), "%d", m->device_type);
		put_key(o, &first, "device_type");
		puts_(o, tmp);
		const char *med = medium_name(m->device_type);
		if (med) {
			put_key(o, &first, "medium");
			put_string(o, med, strlen(med));
		}
	}
	if (m->id.presence) {
		put_key(o, &first, "equipment_id");
		if (m->id.presence == P1_PRESENT)
			put_string(o, m->id.text.ptr, m->id.text.len);
		else
			puts_(o, "null");
	}
	if (m->value.presence) {
		put_key(o, &first, "value");
		if (m->value.presence == P1_PRESENT) {
			put_num(o, &m->value.num);
			if (m->value.num.unit) {
				put_key(o, &first, "unit");
				put_string(o, m->value.num.unit, strlen(m->value.num.unit));
			}
		} else {
			puts_(o, "null");
		}
		snprintf(tmp, sizeof(tmp), "0-%u:24.%u.%u", ch, m->value_obis_d, m->value_obis_e);
		put_key(o, &first, "obis");
		put_string(o, tmp, strlen(tmp));
	}
	if (m->time.presence) {
		put_key(o, &first, "timestamp");
		if (m->time.presence == P1_PRESENT)
			put_time(o, &m->time.time);
		else
			puts_(o, "null");
	}
	const struct {
		const char *name;
		const struct p1_value *v;
	} ints[] = {{"valve_position", &m->valve}, {"switch_position", &m->relay}};
	for (size_t i = 0; i < 2; i++) {
		if (!ints[i].v->presence)
			continue;
		put_key(o, &first, ints[i].name);
		if (ints[i].v->presence == P1_PRESENT)
			put_num(o, &ints[i].v->num);
		else
			puts_(o, "null");
	}
	put(o, "}", 1);
}

static void put_mbus(struct out *o, const struct p1_telegram *t)
{
	put(o, "[", 1);
	bool first = true;
	for (unsigned i = 0; i < P1_MAX_MBUS; i++) {
		if (!t->mbus[i].present)
			continue;
		if (!first)
			put(o, ",", 1);
		first = false;
		put_mbus_one(o, &t->mbus[i], i + 1);
	}
	put(o, "]", 1);
}

static const char *field_unit(const struct p1_telegram *t, enum p1_field f)
{
	const struct p1_value *v = &t->fields[f];
	const struct p1_field_info *fi = p1_field_info(f);
	if (fi->kind == P1_KIND_NUMBER)
		return v->presence == P1_PRESENT ? v->num.unit : NULL;
	if (fi->kind == P1_KIND_EVENTS)
		return v->presence ? "s" : NULL;
	if (fi->kind == P1_KIND_DEMAND) {
		for (unsigned i = 0; i < t->n_demand; i++)
			if (t->demand[i].value_valid && t->demand[i].value.unit)
				return t->demand[i].value.unit;
		return NULL;
	}
	return NULL;
}

static void put_units(struct out *o, const struct p1_telegram *t)
{
	bool first = true;
	put(o, "{", 1);
	for (int f = 0; f < P1_FIELD_COUNT; f++) {
		const char *u = field_unit(t, (enum p1_field)f);
		if (!u)
			continue;
		put_key(o, &first, p1_field_info((enum p1_field)f)->name);
		put_string(o, u, strlen(u));
	}
	put(o, "}", 1);
}

/* Unknown lines; a code seen more than once becomes an array of its raw values. */
static void put_unknown(struct out *o, const struct p1_telegram *t)
{
	bool first = true;
	put(o, "{", 1);
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
			put(o, "[", 1);
		for (unsigned j = i, k = 0; j < t->n_unknown; j++) {
			if (strcmp(t->unknown[j].obis, u->obis))
				continue;
			if (k++)
				put(o, ",", 1);
			put_string(o, t->unknown[j].raw.ptr, t->unknown[j].raw.len);
		}
		if (count > 1)
			put(o, "]", 1);
	}
	put(o, "}", 1);
}

static void put_framing(struct out *o, const struct p1_telegram *t, bool *first)
{
	put_key(o, first, "valid");
	puts_(o, "true");
	put_key(o, first, "dialect");
	const char *d = p1_dialect_name(t->dialect);
	put_string(o, d, strlen(d));
	put_key(o, first, "header");
	put_string(o, t->header.ptr, t->header.len);
	put_key(o, first, "crc");
	if (t->has_crc) {
		char tmp[8];
		snprintf(tmp, sizeof(tmp), "\"%04X\"", t->crc);
		puts_(o, tmp);
	} else {
		puts_(o, "null");
	}
	if (t->encrypted) {
		put_key(o, first, "encrypted");
		puts_(o, "true");
	}
}

size_t p1_json_telegram(const struct p1_telegram *t, unsigned flags, char *buf, size_t cap)
{
	struct out o = {buf, cap, 0};
	bool first = true;
	if (cap)
		buf[0] = 0;
	put(&o, "{", 1);
	if (flags & P1_JSON_FRAMING)
		put_framing(&o, t, &first);
	for (int f = 0; f < P1_FIELD_COUNT; f++) {
		if (!t->fields[f].presence)
			continue;
		put_key(&o, &first, p1_field_info((enum p1_field)f)->name);
		put_value(&o, t, (enum p1_field)f);
	}
	if (flags & P1_JSON_MBUS) {
		put_key(&o, &first, "mbus");
		put_mbus(&o, t);
	}
	if (flags & P1_JSON_UNITS) {
		put_key(&o, &first, "units");
		put_units(&o, t);
	}
	if (flags & P1_JSON_UNKNOWN) {
		put_key(&o, &first, "unknown");
		put_unknown(&o, t);
	}
	put(&o, "}", 1);
	return o.len;
}
