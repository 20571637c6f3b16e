/* parse.c - a framed text telegram into a struct p1_telegram (see p1/telegram.h).
 *
 * Lines are read leniently (spaces, doubled parentheses, OBIS typos, continuation lines that
 * start with '('), keyed on the full OBIS code, and interpreted through the table in obis.c.
 * A line that cannot be read never fails a telegram whose CRC matched: it is kept as unknown
 * and flagged. A telegram without CRC (DSMR 2.2/3, EasyMeter, ACE4000) has nothing else to
 * vouch for it, so there every line must read and no known line may repeat.
 *
 * Most lines are the common kind, "1-0:1.8.1(001234.567*kWh)": one group with a number, text
 * or timestamp, right before the line end. Those are read and stored in one pass (plain_line),
 * their code found by a hash of its text; every other line goes the general way (start_line,
 * dispatch), which gives the same result for a common line too (tests check both ways).
 *
 * Pure: no allocation (strings go into the telegram's arena), no I/O, no clock.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "digits.h"
#include "hex.h"
#include "obis.h"
#include "p1/telegram.h"

struct slice {
	const char *p;
	size_t n;
};

struct line {
	bool has_obis;
	uint8_t o[5];
	uint64_t key;
	const char *start, *rest, *end; /* line, after the code, end (CR/LF excluded) */
	struct slice g[P1_MAX_GROUPS];
	unsigned ng;
	bool bad;
	bool joined; /* start..end is a copy in the arena (a wrapped value was joined) */
	unsigned lineno;
};

struct ctx {
	struct p1_telegram *t;
	const struct p1_parse_opts *o;
	bool strict;
	unsigned err_line;
};

/* ---- small readers ---- */

static inline bool is_space(char c)
{
	return c == ' ' || c == '\t';
}

static inline struct slice trim(struct slice s)
{
	while (s.n && is_space(*s.p)) {
		s.p++;
		s.n--;
	}
	while (s.n && is_space(s.p[s.n - 1]))
		s.n--;
	return s;
}

static char *arena_alloc(struct p1_telegram *t, size_t n)
{
	if (n + 1 > t->cap - t->arena_used)
		return NULL;
	char *p = t->arena + t->arena_used;
	t->arena_used += n + 1;
	p[n] = 0;
	return p;
}

/* Hex-encoded printable text is decoded; anything else is kept as sent. Decoded straight
 * into the arena, which is given back when the text turns out not to be hex. */
static struct p1_text hex_text(struct p1_telegram *t, struct slice s)
{
	struct p1_text r = {s.p, (uint16_t)s.n};
	if (s.n == 0 || s.n % 2)
		return r;
	char *d = arena_alloc(t, s.n / 2);
	if (!d)
		return r;
	for (size_t i = 0; i < s.n; i += 2) {
		int hi = p1_hexval(s.p[i]), lo = p1_hexval(s.p[i + 1]);
		int c = (hi | lo) < 0 ? 0 : hi << 4 | lo;
		if (c < 0x20 || c > 0x7e) {
			t->arena_used -= s.n / 2 + 1;
			return r;
		}
		d[i / 2] = (char)c;
	}
	r.ptr = d;
	r.len = (uint16_t)(s.n / 2);
	return r;
}

#define U(s) {s, sizeof(s) - 1}
static const struct {
	const char *s;
	size_t n;
} units[] = {
	U("kWh"), U("kW"), U("V"), U("A"), U("m3"), U("Wh"), U("W"), U("GJ"), U("kvarh"),
	U("kvar"), U("kVA"), U("varh"), U("var"), U("VA"), U("kVAh"), U("MWh"), U("MW"),
	U("MJ"), U("Hz"), U("s"), U("min"), U("h"), U("%"), U("l"),
};
#undef U

static bool same_chars(const char *a, const char *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (a[i] != b[i])
			return false;
	return true;
}

static const char *unit_canonical(struct p1_telegram *t, struct slice u)
{
	/* exact spelling first (what meters send), then any case ("kVar", "Kvar") */
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (units[i].n == u.n && same_chars(units[i].s, u.p, u.n))
			return units[i].s;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (units[i].n == u.n && !strncasecmp(units[i].s, u.p, u.n))
			return units[i].s;
	char *d = arena_alloc(t, u.n);
	if (d)
		memcpy(d, u.p, u.n);
	return d;
}

/* u is spelled exactly as the NUL-terminated s. */
static bool is_unit(struct slice u, const char *s)
{
	size_t i = 0;
	for (; i < u.n; i++)
		if (!s[i] || s[i] != u.p[i])
			return false;
	return !s[i];
}

/* Digits from p on, up to e at most, added to *m; returns where they end. Every slice lies in
 * NUL-terminated storage (the telegram's copy of the frame or its arena), so *e can be read:
 * when it is not a digit, it stops the loop and p needs no check of its own. */
static inline const char *read_digits(const char *p, const char *e, uint64_t *m)
{
	uint64_t v = *m;
	unsigned d;
	if ((unsigned char)*e - (unsigned)'0' > 9) {
		for (; (d = (unsigned char)*p - (unsigned)'0') <= 9; p++)
			v = v * 10 + d;
	} else {
		for (; p < e && (d = (unsigned char)*p - (unsigned)'0') <= 9; p++)
			v = v * 10 + d;
	}
	*m = v;
	return p;
}

/* "-001234.567" from p, up to e at most: mantissa and scale into n. Returns where the number
 * ends, or NULL when it has no digits or more than 18 (which always fit in 63 bits: longer
 * numbers are refused rather than wrapped). */
static inline const char *read_mantissa(const char *p, const char *e, struct p1_num *n)
{
	bool neg = false;
	if (p < e && (*p == '-' || *p == '+'))
		neg = *p++ == '-';
	uint64_t m = 0;
	const char *d = p;
	p = read_digits(p, e, &m);
	unsigned digits = (unsigned)(p - d), scale = 0;
	if (p < e && *p == '.') {
		d = ++p;
		p = read_digits(p, e, &m);
		scale = (unsigned)(p - d);
		digits += scale;
	}
	if (!digits || digits > 18)
		return NULL;
	*n = (struct p1_num){.mant = neg ? -(int64_t)m : (int64_t)m, .scale = (uint8_t)scale};
	return p;
}

/* The unit the meter sent (trimmed, not empty): spec_unit when it is spelled so (the same
 * spelling the table would give), else the table's spelling or a copy in the arena. */
static bool set_unit(struct ctx *c, struct p1_num *n, struct slice u, const char *spec_unit)
{
	n->unit = spec_unit && is_unit(u, spec_unit) ? spec_unit : unit_canonical(c->t, u);
	return n->unit != NULL;
}

/* The meter sent no unit: the spec's is assumed, when it has one. */
static void assume_unit(struct ctx *c, struct p1_num *n, const char *spec_unit)
{
	if (spec_unit && *spec_unit) {
		n->unit = spec_unit;
		n->unit_assumed = true;
		c->t->warnings |= P1_WARN_UNIT_ASSUMED;
	}
}

/* "-001234.567*kWh" -> mant, scale, unit: 1, 0 when s holds nothing but blanks, -1 when it
 * is not a number. spec_unit is assumed when the meter sent none. */
static int read_num(struct ctx *c, struct slice s, struct p1_num *out, const char *spec_unit)
{
	const char *p = s.p, *e = s.p + s.n;
	while (p < e && is_space(*p))
		p++;
	if (p == e)
		return 0;
	struct p1_num n;
	if (!(p = read_mantissa(p, e, &n)))
		return -1;
	while (p < e && is_space(*p))
		p++;
	if (p < e) {
		/* "123.456*kWh", and "123.456kWh" from meters that forget the star */
		bool star = *p == '*';
		if (!star && !((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')))
			return -1;
		struct slice u = trim((struct slice){p + star, (size_t)(e - p - star)});
		if (!u.n || !set_unit(c, &n, u, spec_unit))
			return -1;
	} else {
		assume_unit(c, &n, spec_unit);
	}
	*out = n;
	return 1;
}

static bool parse_num(struct ctx *c, struct slice s, struct p1_num *out, const char *spec_unit)
{
	return read_num(c, s, out, spec_unit) > 0;
}

static int parse_time(struct ctx *c, struct slice s, struct p1_time *out)
{
	s = trim(s);
	int r = p1_time_parse(s.p, s.n, &c->o->tz, out);
	if (r > 0 && out->ambiguous)
		c->t->warnings |= P1_WARN_AMBIGUOUS_TIME;
	return r;
}

/* ---- line structure ---- */

static const char *read_u8(const char *p, const char *e, uint8_t *out)
{
	while (p < e && is_space(*p))
		p++;
	unsigned v = 0, n = 0;
	for (; p < e && *p >= '0' && *p <= '9' && n < 4; p++, n++)
		v = v * 10 + (unsigned)(*p - '0');
	if (!n || v > 255)
		return NULL;
	*out = (uint8_t)v;
	while (p < e && is_space(*p))
		p++;
	return p;
}

/* The common case, "1-0:1.8.1(": digits and separators only. NULL when anything else. Lines
 * live in NUL-terminated storage (the telegram copy or the arena), so the loops stop at a
 * non-digit without checking e on every byte; the result is checked against e once. */
static const char *read_obis_fast(const char *p, const char *e, uint8_t o[5])
{
	static const char seps[5] = {'-', ':', '.', '.', '('};
	const char *start = p;
	for (int i = 0; i < 5; i++) {
		const char *d = p;
		unsigned v = 0;
		while ((unsigned)(*p - '0') <= 9)
			v = v * 10 + (unsigned)(*p++ - '0');
		if (p == d || p - d > 3 || v > 255 || *p != seps[i])
			return NULL;
		o[i] = (uint8_t)v;
		p += i < 4;
	}
	return p < e && p > start ? p : NULL;
}

/* A-B:C.D.E with an optional .F or *F; ':' or '.' accepted between C, D and E. */
static const char *read_obis(const char *p, const char *e, uint8_t o[5])
{
	const char *fast = read_obis_fast(p, e, o);
	if (fast)
		return fast;
	static const char seps[4][2] = {{'-', '-'}, {':', ':'}, {'.', ':'}, {'.', ':'}};
	for (int i = 0; i < 5; i++) {
		if (!(p = read_u8(p, e, &o[i])))
			return NULL;
		if (i < 4) {
			if (p >= e || (*p != seps[i][0] && *p != seps[i][1]))
				return NULL;
			p++;
		}
	}
	if (p < e && (*p == '.' || *p == '*')) {
		uint8_t f;
		const char *q = read_u8(p + 1, e, &f);
		if (q)
			p = q;
	}
	return p;
}

/* Groups "(..)(..)" of one physical line segment, appended to l->g. */
static void read_groups(struct ctx *c, struct line *l, const char *p, const char *e)
{
	while (p < e) {
		if (is_space(*p)) {
			p++;
			continue;
		}
		if (*p != '(') {
			l->bad = true;
			return;
		}
		p++;
		bool dbl = p < e && *p == '(';
		p += dbl;
		const char *close = memchr(p, ')', (size_t)(e - p));
		if (!close) {
			l->bad = true;
			return;
		}
		if (l->ng == P1_MAX_GROUPS) {
			c->t->warnings |= P1_WARN_TOO_MANY;
			l->bad = true;
			return;
		}
		l->g[l->ng++] = (struct slice){p, (size_t)(close - p)};
		p = close + 1;
		if (dbl && p < e && *p == ')')
			p++;
	}
}

static void start_line(struct ctx *c, struct line *l, const char *p, const char *e, unsigned n)
{
	/* field by field: zeroing the whole struct would clear the group array every line */
	l->start = p;
	l->end = e;
	l->lineno = n;
	l->ng = 0;
	l->bad = false;
	l->joined = false;
	l->has_obis = false;
	const char *q = read_obis(p, e, l->o);
	if (q && q < e && *q == '(') {
		l->has_obis = true;
		l->key = P1_OBIS_KEY(l->o[0], l->o[1], l->o[2], l->o[3], l->o[4]);
		l->rest = q;
		read_groups(c, l, q, e);
	} else {
		l->rest = p;
		l->bad = true;
	}
}

/* Ends a value group in the common line: its ')', or what makes the line uncommon. */
static const bool group_stop[256] = {[0] = true, ['\n'] = true, [')'] = true};

/* One value of a code as read_obis_fast takes it: 1-3 digits, at most 255, then sep. Returns
 * what follows sep, or NULL. */
static inline const char *code_part(const char *p, char sep, uint8_t *o, uint64_t *key)
{
	unsigned v = (unsigned)(*p - '0'), d;
	if (v > 9)
		return NULL;
	if ((d = (unsigned)(*++p - '0')) <= 9) {
		v = v * 10 + d;
		if ((d = (unsigned)(*++p - '0')) <= 9) {
			v = v * 10 + d;
			if (v > 255 || (unsigned)(*++p - '0') <= 9)
				return NULL;
		}
	}
	if (*p != sep)
		return NULL;
	*o = (uint8_t)v;
	*key = *key << 8 | v;
	return p + 1;
}

/* "A-B:C.D.E" followed by last, as read_obis_fast takes it: returns where last is, or NULL. */
static const char *read_code(const char *p, char last, uint8_t o[5], uint64_t *ret_key)
{
	uint64_t key = 0;
	unsigned a = (unsigned char)p[0] - (unsigned)'0', b;
	if (a <= 9 && p[1] == '-' && (b = (unsigned char)p[2] - (unsigned)'0') <= 9 &&
	    p[3] == ':') {
		o[0] = (uint8_t)a; /* "1-0:" and "0-1:", as every meter sends them */
		o[1] = (uint8_t)b;
		key = a << 8 | b;
		p += 4;
	} else if (!(p = code_part(p, '-', &o[0], &key)) || !(p = code_part(p, ':', &o[1], &key))) {
		return NULL;
	}
	if (!(p = code_part(p, '.', &o[2], &key)) || !(p = code_part(p, '.', &o[3], &key)) ||
	    !(p = code_part(p, last, &o[4], &key)))
		return NULL;
	*ret_key = key;
	return p - 1;
}

/* The code that starts a line: returns where the '(' after it is, or NULL. *ret_entry is its
 * table entry when the text is the code as the table writes it (found without reading
 * numbers; l->key is set, l->o is not), else NULL and l->key and l->o are read from the text.
 * e is the end of the text. */
static const char *line_code(const char *p, const char *e, struct line *l,
			     const struct p1_obis_entry **ret_entry)
{
	const char *paren;
	const struct p1_obis_entry *en = e - p >= 15 ? p1_obis_match(p, &paren) : NULL;
	*ret_entry = en;
	if (!en)
		return read_code(p, '(', l->o, &l->key);
	l->key = en->key;
	return paren;
}

static void codes_of_key(struct line *l)
{
	for (int i = 0; i < 5; i++)
		l->o[i] = (uint8_t)(l->key >> (32 - 8 * i));
}

/* The groups of a common line, from the '(' after its code: groups that do not start with
 * '(', and CR LF or LF right after the last ')'. Fills l exactly as start_line would and
 * returns the start of the next line; NULL for anything else, which the general path then
 * reads. The text is NUL-terminated (a NUL stops every loop here), so no loop checks e. */
static const char *scan_groups(const char *p, struct line *l, const char *start, unsigned n)
{
	const char *rest = p;
	unsigned ng = 0;
	do {
		const char *g = ++p;
		if (*g == '(' || ng == P1_MAX_GROUPS)
			return NULL;
		while (!group_stop[(unsigned char)*p])
			p++;
		if (*p != ')')
			return NULL;
		l->g[ng++] = (struct slice){g, (size_t)(p - g)};
	} while (*++p == '(');
	const char *end = p;
	p += *p == '\r';
	if (*p != '\n')
		return NULL;
	l->start = start;
	l->rest = rest;
	l->end = end;
	l->lineno = n;
	l->ng = ng;
	l->bad = false;
	l->joined = true; /* as read_lines sets it for every line it did not fail to join */
	l->has_obis = true;
	return p + 1;
}

/* ---- storing values ---- */

static void fail(struct ctx *c, const struct line *l)
{
	if (!c->err_line)
		c->err_line = l->lineno;
}

static void keep_unknown(struct ctx *c, const struct line *l)
{
	struct p1_telegram *t = c->t;
	if (t->n_unknown == P1_MAX_UNKNOWN) {
		t->warnings |= P1_WARN_TOO_MANY;
		return;
	}
	struct p1_unknown *u = &t->unknown[t->n_unknown++];
	if (l->has_obis) {
		snprintf(u->obis, sizeof(u->obis), "%u-%u:%u.%u.%u", l->o[0], l->o[1], l->o[2],
			 l->o[3], l->o[4]);
	} else {
		size_t n = (size_t)(l->end - l->start);
		const char *paren = memchr(l->start, '(', n);
		if (paren)
			n = (size_t)(paren - l->start);
		if (n >= sizeof(u->obis))
			n = sizeof(u->obis) - 1;
		memcpy(u->obis, l->start, n);
		u->obis[n] = 0;
	}
	struct slice r = trim((struct slice){l->rest, (size_t)(l->end - l->rest)});
	if (!l->has_obis)
		r = (struct slice){l->start, (size_t)(l->end - l->start)};
	u->raw = (struct p1_text){r.p, (uint16_t)(r.n > UINT16_MAX ? UINT16_MAX : r.n)};
}

/* A known line that could not be read: kept raw, flagged; fatal without CRC. */
static void bad_value(struct ctx *c, const struct line *l)
{
	c->t->warnings |= P1_WARN_BAD_VALUE;
	if (c->strict)
		fail(c, l);
	keep_unknown(c, l);
}

/* Claim a value slot; false (and flagged) when the line came before. */
static bool claim(struct ctx *c, const struct line *l, struct p1_value *v)
{
	if (v->presence == P1_ABSENT)
		return true;
	c->t->warnings |= P1_WARN_DUPLICATE;
	if (c->strict)
		fail(c, l);
	return false;
}

static bool is_empty(struct slice s)
{
	for (size_t i = 0; i < s.n; i++)
		if (!is_space(s.p[i]))
			return false;
	return true;
}

/* The unit the spec gives each field (what a number without unit is taken to be in). */
#define P1_FIELD_UNIT_(id, name, kind, unit, cls, qty, desc) [id] = (unit),
static const char *const spec_units[P1_FIELD_COUNT] = {P1_FIELD_LIST(P1_FIELD_UNIT_)};
#undef P1_FIELD_UNIT_

/* A number into v, P1_NULL when the group is empty; false when it is not a number. */
static bool store_num(struct ctx *c, struct slice s, struct p1_value *v, const char *spec_unit)
{
	int r = read_num(c, s, &v->num, spec_unit);
	if (r < 0)
		return false;
	v->presence = r ? P1_PRESENT : P1_NULL;
	return true;
}

static bool store_time(struct ctx *c, struct slice s, struct p1_value *v)
{
	if (is_empty(s)) {
		v->presence = P1_NULL;
		return true;
	}
	int r = parse_time(c, s, &v->time);
	if (r < 0)
		return false;
	v->presence = r ? P1_PRESENT : P1_NULL;
	return true;
}

static bool looks_like_obis(struct slice s)
{
	uint8_t o[5];
	uint64_t key;
	s = trim(s);
	const char *end = s.p + s.n; /* "0-0:96.7.19" as such first, then leniently */
	return read_code(s.p, *end, o, &key) == end || read_obis(s.p, end, o) == end;
}

static bool h_num_time(struct ctx *c, const struct line *l, enum p1_field f, enum p1_field f2)
{
	struct p1_value *v = &c->t->fields[f], *vt = &c->t->fields[f2];
	if (l->ng == 1)
		return store_num(c, l->g[0], v, spec_units[f]);
	struct p1_time probe;
	unsigned ti = parse_time(c, l->g[0], &probe) >= 0 || is_empty(l->g[0]) ? 0 : 1;
	return store_time(c, l->g[ti], vt) && store_num(c, l->g[1 - ti], v, spec_units[f]);
}

static bool h_pair(struct ctx *c, const struct line *l, enum p1_field f, enum p1_field f2)
{
	struct slice a = l->g[0], b = {0};
	if (l->ng >= 2) {
		b = l->g[1];
	} else {
		const char *comma = memchr(a.p, ',', a.n);
		if (!comma)
			return store_num(c, a, &c->t->fields[f], spec_units[f]);
		b = (struct slice){comma + 1, a.n - (size_t)(comma + 1 - a.p)};
		a.n = (size_t)(comma - a.p);
	}
	return store_num(c, a, &c->t->fields[f], spec_units[f]) &&
	       store_num(c, b, &c->t->fields[f2], spec_units[f2]);
}

static void sort_events(struct p1_telegram *t)
{
	for (unsigned i = 1; i < t->n_events; i++) {
		struct p1_event e = t->events[i];
		unsigned j = i;
		for (; j > 0 && t->events[j - 1].end.utc > e.end.utc; j--)
			t->events[j] = t->events[j - 1];
		t->events[j] = e;
	}
}

/* 1-0:99.97.0(z)(0-0:96.7.19)(TST)(dur*s)...; empty "()" means no entries. */
static bool h_events_read(struct ctx *c, const struct line *l);

/* All or nothing: a log that cannot be read leaves no entries behind. */
static bool h_events(struct ctx *c, const struct line *l)
{
	if (h_events_read(c, l))
		return true;
	c->t->n_events = 0;
	return false;
}

static bool h_events_read(struct ctx *c, const struct line *l)
{
	struct p1_telegram *t = c->t;
	unsigned i = 0;
	int64_t count = -1;
	struct p1_num n;
	if (l->ng && !is_empty(l->g[0])) {
		if (!parse_num(c, l->g[0], &n, NULL) || n.scale)
			return false;
		count = n.mant;
	}
	i = l->ng > 1 && looks_like_obis(l->g[1]) ? 2 : 1;
	unsigned pairs = 0;
	for (; i + 1 < l->ng; i += 2, pairs++) {
		struct p1_time end;
		int r = parse_time(c, l->g[i], &end);
		if (r < 0 || !parse_num(c, l->g[i + 1], &n, "s"))
			return false;
		if (r == 0) /* unused slot */
			continue;
		if (t->n_events == P1_MAX_EVENTS) {
			t->warnings |= P1_WARN_TOO_MANY;
			continue;
		}
		int64_t d = n.mant;
		for (unsigned k = 0; k < n.scale; k++)
			d /= 10;
		if (d < 0)
			d = -1; /* unknown */
		t->events[t->n_events++] = (struct p1_event){end, d};
	}
	if (i < l->ng && !is_empty(l->g[i]))
		return false; /* an odd group left over */
	if (count >= 0 && count != pairs)
		t->warnings |= P1_WARN_EVENT_COUNT;
	sort_events(t);
	t->fields[P1_F_FAILURE_LOG].presence = P1_PRESENT;
	return true;
}

static int h_demand_read(struct ctx *c, const struct line *l);

/* 0-0:98.1.0(n)(1-0:1.6.0)(1-0:1.6.0)(P)(T)(V)...; returns -1 for another layout. */
static int h_demand(struct ctx *c, const struct line *l)
{
	if (l->ng < 3 || !looks_like_obis(l->g[1]) || !looks_like_obis(l->g[2]))
		return -1;
	int r = h_demand_read(c, l);
	if (r == 0)
		c->t->n_demand = 0; /* all or nothing */
	return r;
}

static int h_demand_read(struct ctx *c, const struct line *l)
{
	struct p1_telegram *t = c->t;
	for (unsigned i = 3; i + 2 < l->ng; i += 3) {
		if (t->n_demand == P1_MAX_DEMAND) {
			t->warnings |= P1_WARN_TOO_MANY;
			break;
		}
		struct p1_demand d = {0};
		int rp = parse_time(c, l->g[i], &d.period), rt = parse_time(c, l->g[i + 1], &d.time);
		if (rp < 0 || rt < 0)
			return 0;
		d.period_valid = rp > 0;
		d.time_valid = rt > 0;
		if (!is_empty(l->g[i + 2])) {
			if (!parse_num(c, l->g[i + 2], &d.value, "kW"))
				return 0;
			d.value_valid = true;
		}
		t->demand[t->n_demand++] = d;
	}
	t->fields[P1_F_DEMAND_HISTORY].presence = P1_PRESENT;
	return 1;
}

/* The value of a line read from its first group alone (H_NUM, H_RAW, H_HEX, H_TIME). */
static bool store_first(struct ctx *c, const struct p1_obis_entry *e, struct slice g)
{
	struct p1_telegram *t = c->t;
	struct p1_value *v = &t->fields[e->field];
	switch (e->handler) {
	case H_NUM:
		return store_num(c, g, v, spec_units[e->field]);
	case H_RAW:
	case H_HEX: {
		struct slice s = trim(g);
		v->text = e->handler == H_HEX ? hex_text(t, s) : (struct p1_text){s.p, (uint16_t)s.n};
		v->presence = P1_PRESENT;
		return true;
	}
	case H_TIME:
		return store_time(c, g, v);
	}
	return false;
}

static bool h_entry(struct ctx *c, const struct line *l, const struct p1_obis_entry *e)
{
	enum p1_field f = e->field;
	if (!l->ng)
		return false;
	switch (e->handler) {
	case H_NUM:
	case H_RAW:
	case H_HEX:
	case H_TIME:
		return store_first(c, e, l->g[0]);
	case H_NUM_TIME:
		return h_num_time(c, l, f, e->field2);
	case H_PAIR:
		return h_pair(c, l, f, e->field2);
	case H_EVENTS:
		return h_events(c, l);
	}
	return false;
}

/* ---- M-Bus channels ---- */

static bool is_mbus(const uint8_t o[5])
{
	if (o[0] != 0 || o[1] < 1 || o[1] > P1_MAX_MBUS)
		return false;
	if (o[2] == 24)
		return (o[3] == 1 && o[4] == 0) || (o[3] == 2 && (o[4] == 1 || o[4] == 3)) ||
		       (o[3] == 3 && o[4] <= 1) || (o[3] == 4 && o[4] == 0);
	return o[2] == 96 && ((o[3] == 1 && o[4] <= 1) || (o[3] == 3 && o[4] == 10));
}

/* No unit and zero means "no reading" (meters without a device send (00000000)). */
static void mbus_null_zero(struct p1_value *v)
{
	if (v->presence == P1_PRESENT && !v->num.unit && v->num.mant == 0)
		v->presence = P1_NULL;
}

static bool mbus_value(struct ctx *c, const struct line *l, struct p1_mbus *m)
{
	if (!claim(c, l, &m->value))
		return true;
	m->value_obis_d = l->o[3];
	m->value_obis_e = l->o[4];
	bool ok;
	if (l->o[3] == 3) { /* DSMR 2.2 profile: (TST)(status)(period)(z)(obis)(unit)(value) */
		if (l->ng < 7)
			return false;
		struct slice u = trim(l->g[5]);
		ok = store_time(c, l->g[0], &m->time) && store_num(c, l->g[6], &m->value, NULL);
		if (ok && m->value.presence == P1_PRESENT && !m->value.num.unit && u.n)
			m->value.num.unit = unit_canonical(c->t, u);
	} else if (l->ng == 1) {
		ok = store_num(c, l->g[0], &m->value, NULL);
	} else {
		ok = store_time(c, l->g[0], &m->time) && store_num(c, l->g[1], &m->value, NULL);
	}
	mbus_null_zero(&m->value);
	return ok;
}

static bool h_mbus(struct ctx *c, const struct line *l)
{
	struct p1_mbus *m = &c->t->mbus[l->o[1] - 1];
	if (!m->present) {
		m->present = true;
		m->device_type = -1;
	}
	if (!l->ng)
		return false;
	struct slice g = trim(l->g[0]);
	if (l->o[2] == 24 && l->o[3] == 1) {
		struct p1_num n;
		if (!g.n)
			return true;
		if (m->device_type >= 0) {
			claim(c, l, &(struct p1_value){.presence = P1_PRESENT});
			return true;
		}
		if (!parse_num(c, g, &n, NULL) || n.scale || n.mant < 0 || n.mant > 255)
			return false;
		m->device_type = (int16_t)n.mant;
		return true;
	}
	if (l->o[2] == 96 && l->o[3] == 1) {
		if (claim(c, l, &m->id)) {
			m->id.text = hex_text(c->t, g);
			m->id.presence = g.n ? P1_PRESENT : P1_NULL;
		}
		return true;
	}
	if (l->o[2] == 24 && l->o[3] == 4)
		return !claim(c, l, &m->valve) || store_num(c, g, &m->valve, NULL);
	if (l->o[2] == 96 && l->o[3] == 3)
		return !claim(c, l, &m->relay) || store_num(c, g, &m->relay, NULL);
	return mbus_value(c, l, m);
}

static int medium_base(const struct p1_mbus *m)
{
	switch (m->device_type) {
	case 3:
		return P1_F_GAS_TYPE;
	case 6: case 7: case 0x16: case 0x17:
		return P1_F_WATER_TYPE;
	case 4: case 10: case 11: case 12: case 13:
		return P1_F_THERMAL_TYPE;
	case 2:
		return P1_F_SLAVE_TYPE;
	case -1:
		break;
	default:
		return -1;
	}
	const char *u = m->value.presence == P1_PRESENT ? m->value.num.unit : NULL;
	if (u && !strcmp(u, "m3")) /* without a device type, m3 is taken as gas */
		return P1_F_GAS_TYPE;
	if (u && (!strcmp(u, "GJ") || !strcmp(u, "MJ")))
		return P1_F_THERMAL_TYPE;
	if (u && (!strcmp(u, "kWh") || !strcmp(u, "Wh")))
		return P1_F_SLAVE_TYPE;
	return -1;
}

/* Fill gas_*, water_*, thermal_*, slave_* from the first channel of each medium. */
static void classify_mbus(struct p1_telegram *t)
{
	/* first the channels with a reading, so an empty channel does not hide a later one */
	for (unsigned i = 0; i < 2 * P1_MAX_MBUS; i++) {
		const struct p1_mbus *m = &t->mbus[i % P1_MAX_MBUS];
		if (i < P1_MAX_MBUS && m->value.presence != P1_PRESENT)
			continue;
		int base = m->present ? medium_base(m) : -1;
		if (base < 0 || t->fields[base].presence || t->fields[base + 1].presence ||
		    t->fields[base + 3].presence)
			continue;
		if (m->device_type >= 0)
			t->fields[base] = (struct p1_value){
				.presence = P1_PRESENT, .num = {.mant = m->device_type}};
		t->fields[base + 1] = m->id;
		t->fields[base + 2] = m->valve;
		t->fields[base + 3] = m->value;
		t->fields[base + 4] = m->time;
	}
}

/* ---- telegram ---- */

/* After the ')' that closes a line's only group: the start of the next line when the line
 * ends right there (CR LF or LF) and the next line cannot continue it, else NULL. */
static const char *line_done(const char *close)
{
	const char *next = close + 1 + (close[1] == '\r');
	if (*next++ != '\n' || ((unsigned)(*next - '0') > 9 && *next != '!'))
		return NULL;
	return next;
}

/* A plain number, "(001234.567*kWh)" or "(00012)", read where it stands: the one group of a
 * complete line (line_done), stored as store_num would store it. p is at the '('. Returns the
 * start of the next line, or NULL with nothing changed. */
static const char *plain_num(struct ctx *c, const char *p, const char *e,
			     const struct p1_obis_entry *en)
{
	struct p1_num n;
	const char *q = read_mantissa(p + 1, e, &n), *u = NULL, *close = q;
	if (!q)
		return NULL;
	const char *spec_unit = spec_units[en->field], *spelled = NULL;
	if (*q == '*') {
		/* the spec's own spelling, by far the most common, is recognised on the way */
		size_t k = 0;
		for (u = q + 1; spec_unit[k] && u[k] == spec_unit[k]; k++)
			;
		close = u + k;
		if (k && !spec_unit[k] && *close == ')') {
			spelled = spec_unit;
		} else {
			while (!group_stop[(unsigned char)*close])
				close++;
			if (*close != ')' || close == u || is_space(*u) || is_space(close[-1]))
				return NULL;
		}
	} else if (*q != ')') {
		return NULL;
	}
	const char *next = line_done(close);
	if (!next)
		return NULL;
	if (spelled)
		n.unit = spelled;
	else if (!u)
		assume_unit(c, &n, spec_unit);
	else if (!set_unit(c, &n, (struct slice){u, (size_t)(close - u)}, spec_unit))
		return NULL;
	c->t->fields[en->field].num = n;
	c->t->fields[en->field].presence = P1_PRESENT;
	return next;
}

/* The most common lines, a value of a field seen the first time in the line's only group
 * (a number, a text or a timestamp), stored as dispatch would store it without first cutting
 * the line into groups. p is at the '(' after the code, e is the end of the text, en is the
 * entry of the line's code when the caller has it, else NULL. Returns the start of the next
 * line, or NULL with nothing changed for any other line (blanks, an empty number, a second
 * group, a line the next one continues, ...): the general path then reads it. */
static const char *plain_line(struct ctx *c, const char *p, const char *e, const struct line *l,
			      const struct p1_obis_entry *en)
{
	if (!en) /* an entry of the table is never an M-Bus code (test_fields checks) */
		en = is_mbus(l->o) ? NULL : p1_obis_lookup(l->key);
	if (!en || c->t->fields[en->field].presence != P1_ABSENT)
		return NULL;
	if (en->handler == H_NUM)
		return plain_num(c, p, e, en);
	if (en->handler != H_RAW && en->handler != H_HEX && en->handler != H_TIME)
		return NULL;
	const char *g = p + 1, *close = g;
	if (*g == '(')
		return NULL;
	while (!group_stop[(unsigned char)*close])
		close++;
	const char *next = *close == ')' ? line_done(close) : NULL;
	if (!next || !store_first(c, en, (struct slice){g, (size_t)(close - g)}))
		return NULL;
	return next;
}

static void dispatch(struct ctx *c, const struct line *l)
{
	if (!l->has_obis || l->bad) {
		if (c->strict)
			fail(c, l);
		c->t->warnings |= P1_WARN_BAD_VALUE;
		keep_unknown(c, l);
		return;
	}
	if (is_mbus(l->o)) {
		if (!h_mbus(c, l))
			bad_value(c, l);
		return;
	}
	const struct p1_obis_entry *e = p1_obis_lookup(l->key);
	if (!e) {
		keep_unknown(c, l);
		return;
	}
	if (!claim(c, l, &c->t->fields[e->field]))
		return;
	if (e->handler == H_DEMAND) {
		int r = h_demand(c, l);
		if (r < 0)
			keep_unknown(c, l); /* Hungarian billing snapshot: another layout */
		else if (r == 0)
			bad_value(c, l);
		return;
	}
	if (!h_entry(c, l, e)) {
		c->t->fields[e->field].presence = P1_ABSENT;
		if (e->handler == H_NUM_TIME || e->handler == H_PAIR)
			c->t->fields[e->field2].presence = P1_ABSENT;
		bad_value(c, l);
	}
}

static bool text_is(const struct p1_value *v, const char *s)
{
	return v->presence == P1_PRESENT && v->text.len == strlen(s) &&
	       !memcmp(v->text.ptr, s, v->text.len);
}

static bool header_starts(const struct p1_telegram *t, const char *s)
{
	size_t n = strlen(s);
	return t->header.len >= n && !strncasecmp(t->header.ptr, s, n);
}

static enum p1_dialect detect(const struct p1_telegram *t)
{
	const struct p1_value *ver = &t->fields[P1_F_P1_VERSION];
	if (header_starts(t, "ESY5"))
		return P1_DIALECT_EASYMETER;
	if (header_starts(t, "ACE5"))
		return P1_DIALECT_ACE4000;
	if (header_starts(t, "EST5")) /* Sagemcom T210-D-r of Austrian grid operators */
		return P1_DIALECT_AUSTRIA;
	if (t->fields[P1_F_P1_VERSION_BE].presence)
		return P1_DIALECT_FLUVIUS;
	if (t->fields[P1_F_DEVICE_NAME].presence)
		return ver->presence ? (text_is(ver, "42") ? P1_DIALECT_SMARTY : P1_DIALECT_GENERIC)
				     : P1_DIALECT_HUNGARY;
	if (ver->presence == P1_PRESENT && ver->text.len >= 1) {
		if (ver->text.ptr[0] == '5')
			return P1_DIALECT_DSMR5;
		if (ver->text.ptr[0] == '4')
			return P1_DIALECT_DSMR4;
	}
	if (!t->has_crc)
		return P1_DIALECT_DSMR22;
	if (t->fields[P1_F_E_DEL_TOTAL].presence && !t->fields[P1_F_E_DEL_T1].presence)
		return P1_DIALECT_SWEDEN;
	return P1_DIALECT_GENERIC;
}

static bool num_is(const struct p1_value *v, int64_t mant, unsigned scale, const char *unit)
{
	return v->presence == P1_PRESENT && v->num.mant == mant && v->num.scale == scale &&
	       v->num.unit && !strcmp(v->num.unit, unit);
}

/* Fluvius writes 999.9 kW / 99.999 kW (limiter) and 999 A / 999.99 A (fuse supervision) for
 * "function not active". DSMR 3 meters send 999 A as a real threshold, so only here. */
static void fluvius_sentinels(struct p1_telegram *t)
{
	struct p1_value *thr = &t->fields[P1_F_THRESHOLD];
	if (num_is(thr, 9999, 1, "kW") || num_is(thr, 99999, 3, "kW"))
		thr->presence = P1_NULL;
	for (int f = P1_F_FUSE_L1; f <= P1_F_FUSE_L3; f++)
		if (num_is(&t->fields[f], 999, 0, "A") || num_is(&t->fields[f], 99999, 2, "A"))
			t->fields[f].presence = P1_NULL;
}

void p1_parse_opts_init(struct p1_parse_opts *o)
{
	*o = (struct p1_parse_opts){.tz = P1_TZ_CET, .force_dialect = P1_DIALECT_UNKNOWN};
}

struct p1_telegram *p1_telegram_new(size_t cap)
{
	struct p1_telegram *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->cap = cap + 64;
	t->raw = malloc(t->cap);
	t->arena = malloc(t->cap);
	if (!t->raw || !t->arena)
		return p1_telegram_free(t);
	return t;
}

struct p1_telegram *p1_telegram_free(struct p1_telegram *t)
{
	if (t) {
		free(t->raw);
		free(t->arena);
		free(t);
	}
	return NULL;
}

static const char *rebase(const struct p1_telegram *dst, const struct p1_telegram *src,
			  const char *p)
{
	if (p >= src->raw && p < src->raw + src->cap)
		return dst->raw + (p - src->raw);
	if (p >= src->arena && p < src->arena + src->cap)
		return dst->arena + (p - src->arena);
	return p; /* static strings: canonical units */
}

static void rebase_value(const struct p1_telegram *dst, const struct p1_telegram *src,
			 struct p1_value *v, enum p1_kind kind)
{
	if (v->presence != P1_PRESENT)
		return;
	if (kind == P1_KIND_TEXT)
		v->text.ptr = rebase(dst, src, v->text.ptr);
	else if (kind == P1_KIND_NUMBER && v->num.unit)
		v->num.unit = rebase(dst, src, v->num.unit);
}

bool p1_telegram_copy(struct p1_telegram *dst, const struct p1_telegram *src)
{
	if (dst->cap < src->cap)
		return false;
	char *raw = dst->raw, *arena = dst->arena;
	size_t cap = dst->cap;
	*dst = *src;
	dst->raw = raw;
	dst->arena = arena;
	dst->cap = cap;
	memcpy(dst->raw, src->raw, src->raw_len + 1);
	memcpy(dst->arena, src->arena, src->arena_used);
	dst->header.ptr = rebase(dst, src, src->header.ptr);
	for (int f = 0; f < P1_FIELD_COUNT; f++)
		rebase_value(dst, src, &dst->fields[f], p1_field_info((enum p1_field)f)->kind);
	for (unsigned i = 0; i < P1_MAX_MBUS; i++) {
		rebase_value(dst, src, &dst->mbus[i].id, P1_KIND_TEXT);
		rebase_value(dst, src, &dst->mbus[i].value, P1_KIND_NUMBER);
		rebase_value(dst, src, &dst->mbus[i].valve, P1_KIND_NUMBER);
		rebase_value(dst, src, &dst->mbus[i].relay, P1_KIND_NUMBER);
	}
	for (unsigned i = 0; i < dst->n_demand; i++)
		if (dst->demand[i].value.unit)
			dst->demand[i].value.unit = rebase(dst, src, dst->demand[i].value.unit);
	for (unsigned i = 0; i < dst->n_unknown; i++)
		dst->unknown[i].raw.ptr = rebase(dst, src, dst->unknown[i].raw.ptr);
	return true;
}

static void clear(struct p1_telegram *t)
{
	memset(t->fields, 0, sizeof(t->fields));
	memset(t->mbus, 0, sizeof(t->mbus));
	t->n_events = t->n_demand = 0;
	t->n_unknown = 0;
	t->warnings = 0;
	t->arena_used = 0;
	t->encrypted = false;
	t->dialect = P1_DIALECT_UNKNOWN;
}

/* Physical lines: [p, nl) without CR; returns the start of the next line. */
static const char *next_line(const char *p, const char *e, const char **ret_end)
{
	const char *nl = memchr(p, '\n', (size_t)(e - p));
	const char *le = nl ? nl : e;
	while (le > p && (le[-1] == '\r' || is_space(le[-1])))
		le--;
	*ret_end = le;
	return nl ? nl + 1 : e;
}

static bool unterminated(const char *p, const char *e)
{
	if (e > p && e[-1] == ')')
		return false;
	bool open = false;
	for (; p < e; p++)
		if (*p == '(')
			open = true;
		else if (*p == ')')
			open = false;
	return open;
}

/* Join a line whose last group is not closed with the next physical line, in the arena.
 * Returns the joined line (with *le updated) or NULL when it cannot be done. */
static const char *join_next(struct p1_telegram *t, const char **p, const char **le,
			     const char **next, const char *e, unsigned *n)
{
	const char *le2, *next2 = next_line(*next, e, &le2), *q = *next;
	while (q < le2 && is_space(*q))
		q++;
	if (q == le2 || !memchr(q, ')', (size_t)(le2 - q)))
		return NULL;
	uint8_t o[5];
	const char *after = read_obis(q, le2, o);
	if (after && after < le2 && *after == '(')
		return NULL; /* the next line is a line of its own: the ')' was lost */
	size_t a = (size_t)(*le - *p), b = (size_t)(le2 - q);
	char *j = arena_alloc(t, a + b);
	if (!j)
		return NULL;
	memcpy(j, *p, a);
	memcpy(j + a, q, b);
	*le = j + a + b;
	*next = next2;
	(*n)++;
	return j;
}

static void read_lines(struct ctx *c, const char *p, const char *e)
{
	struct line l;
	bool pending = false, first = true;
	unsigned n = 1, data_lines = 0;
	while (p < e) {
		n++;
		if ((unsigned)(*p - '0') <= 9) { /* a line of its own, never a continuation */
			if (pending)
				dispatch(c, &l);
			pending = false;
			const struct p1_obis_entry *en;
			const char *q = line_code(p, e, &l, &en), *next = NULL;
			if (q && !(next = plain_line(c, q, e, &l, en))) {
				if (en)
					codes_of_key(&l);
				pending = (next = scan_groups(q, &l, p, n)) != NULL;
			}
			if (next) {
				if (first)
					c->t->warnings |= P1_WARN_NO_HEADER_BLANK;
				first = false;
				data_lines++;
				p = next;
				continue;
			}
		}
		const char *le, *next = next_line(p, e, &le);
		while (p < le && is_space(*p))
			p++;
		if (p == le) {
			p = next;
			first = false;
			continue;
		}
		if (first)
			c->t->warnings |= P1_WARN_NO_HEADER_BLANK;
		first = false;
		if (*p == '!')
			break;
		if (*p == '(' && pending) {
			read_groups(c, &l, p, le);
			if (!l.joined) /* a joined line lives in the arena: its raw text ends there */
				l.end = le;
		} else {
			if (pending)
				dispatch(c, &l);
			const char *lp = p;
			if (unterminated(p, le) && next < e) /* a long value wrapped onto the next line */
				lp = join_next(c->t, &p, &le, &next, e, &n);
			start_line(c, &l, lp ? lp : p, le, n);
			l.joined = lp != NULL;
			pending = true;
			data_lines++;
		}
		p = next;
	}
	if (pending)
		dispatch(c, &l);
	if (c->strict && !data_lines && !c->err_line)
		c->err_line = n;
}

enum p1_error p1_parse(struct p1_telegram *t, const char *text, size_t len, bool has_crc,
		       uint16_t crc, const struct p1_parse_opts *opts, unsigned *ret_line)
{
	if (len + 1 > t->cap)
		return P1_ERR_TOO_LONG;
	clear(t);
	memcpy(t->raw, text, len);
	t->raw[len] = 0;
	t->raw_len = len;
	t->has_crc = has_crc;
	t->crc = has_crc ? crc : 0;

	const char *p = t->raw, *e = t->raw + len, *he;
	if (p < e && *p == '/')
		p++;
	p = next_line(p, e, &he);
	t->header = (struct p1_text){t->raw + 1, (uint16_t)(he > t->raw ? he - t->raw - 1 : 0)};

	struct ctx c = {.t = t, .o = opts, .strict = !has_crc};
	read_lines(&c, p, e);
	if (c.err_line) {
		if (ret_line)
			*ret_line = c.err_line;
		return P1_ERR_SYNTAX;
	}
	classify_mbus(t);
	t->dialect = opts->force_dialect != P1_DIALECT_UNKNOWN ? opts->force_dialect : detect(t);
	if (t->dialect == P1_DIALECT_FLUVIUS)
		fluvius_sentinels(t);
	return P1_OK;
}

bool p1_num_rescale(const struct p1_num *n, unsigned scale, int64_t *ret)
{
	int64_t v = n->mant;
	for (unsigned s = n->scale; s > scale; s--)
		v /= 10;
	for (unsigned s = n->scale; s < scale; s++) {
		if (v > INT64_MAX / 10 || v < INT64_MIN / 10)
			return false;
		v *= 10;
	}
	*ret = v;
	return true;
}

bool p1_num_milli(const struct p1_num *n, int64_t *ret)
{
	static const char *const small[] = {"Wh", "W", "varh", "var", "VA"};
	unsigned scale = 3;
	if (n->unit)
		for (size_t i = 0; i < sizeof(small) / sizeof(small[0]); i++)
			if (!strcmp(n->unit, small[i]))
				scale = 0;
	return p1_num_rescale(n, scale, ret);
}

size_t p1_num_format(const struct p1_num *n, char *buf, size_t cap)
{
	/* Every number of every telegram's JSON comes here, so the usual case (a scale up to 19:
	 * 10^scale fits in 64 bits) goes two digits at a time: the decimals zero-padded to scale
	 * digits, '.', then the integer part. Larger scales take the digit loop, which writes
	 * the same for those scales and stops when tmp is full. */
	static const uint64_t pow10[20] = {
		1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000, 1000000000,
		10000000000u, 100000000000u, 1000000000000u, 10000000000000u,
		100000000000000u, 1000000000000000u, 10000000000000000u, 100000000000000000u,
		1000000000000000000u, 10000000000000000000u,
	};
	char tmp[48];
	uint64_t m = n->mant < 0 ? (uint64_t)0 - (uint64_t)n->mant : (uint64_t)n->mant;
	size_t i = sizeof(tmp);
	if (n->scale < 20) {
		unsigned k = n->scale;
		uint64_t q = m, r = 0;
		if (k) {
			q = m / pow10[k];
			r = m % pow10[k];
			for (; k >= 2; k -= 2, r /= 100) {
				i -= 2;
				p1_two_digits(tmp + i, (unsigned)(r % 100));
			}
			if (k)
				tmp[--i] = (char)('0' + r);
			tmp[--i] = '.';
		}
		for (; q >= 100; q /= 100) {
			i -= 2;
			p1_two_digits(tmp + i, (unsigned)(q % 100));
		}
		if (q >= 10) {
			i -= 2;
			p1_two_digits(tmp + i, (unsigned)q);
		} else {
			tmp[--i] = (char)('0' + q);
		}
	} else {
		unsigned digits = 0;
		do {
			if (digits == n->scale && n->scale)
				tmp[--i] = '.';
			tmp[--i] = (char)('0' + m % 10);
			m /= 10;
			digits++;
		} while ((m || digits <= n->scale) && i > 2);
	}
	if (n->mant < 0)
		tmp[--i] = '-';
	size_t len = sizeof(tmp) - i;
	if (cap) {
		size_t k = len < cap ? len : cap - 1;
		memcpy(buf, tmp + i, k);
		buf[k] = 0;
	}
	return len;
}
