/* fuzz_parse.c - libFuzzer target for p1_parse and the JSON writer (test matrix P1).
 *
 * The whole input is one frame's text, as the framer would hand it over (real telegrams make
 * good seeds as they are). It is parsed as a telegram without CRC (strict) and with one
 * (lenient), into telegrams that held other text before, and each result is checked:
 *
 *   - with a CRC the parser never rejects a telegram that fits;
 *   - counts stay within their bounds, the event log is sorted, every string the telegram
 *     holds points into its own copy of the frame or its arena (never into the caller's input);
 *   - p1_json_telegram writes valid JSON (RFC 8259, ASCII only) and returns the same length
 *     for a buffer that is too small, filling it with a NUL-terminated prefix;
 *   - every field rendered alone by p1_json_value is a valid JSON value;
 *   - what a telegram held before does not change the result (nothing leaks from the last
 *     parse);
 *   - p1_telegram_copy makes a copy that owns all it points to and renders the same after its
 *     source has been parsed over;
 *   - the text with a blank before every line end (line_blanks.h), which the parser must read
 *     alike but never in its one pass for common lines, gives the same verdicts, the same line
 *     at fault and the same telegram: the one-pass reading agrees with the general one.
 *
 * Any violation aborts, so libFuzzer reports it with the input that caused it.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "p1/crc16.h"
#include "p1/json.h"
#include "p1/telegram.h"

#include "json_check.h"
#include "line_blanks.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CAP 16400 /* what p1_decoder_new gives its telegram: max_len 16384 + 16 */

#define CHECK(cond) \
	do { \
		if (!(cond)) { \
			fprintf(stderr, "fuzz_parse: %s:%d: invariant failed: %s\n", __FILE__, \
			        __LINE__, #cond); \
			abort(); \
		} \
	} while (0)

static void json_fail(const char *what, const char *s, size_t n)
{
	fprintf(stderr, "fuzz_parse: %s is not valid JSON (%zu bytes):\n%.*s\n", what, n,
	        (int)(n > 4000 ? 4000 : n), s);
	abort();
}

/* ---- checks on a parsed telegram ---- */

static bool inside(const void *p, size_t n, const void *base, size_t base_len)
{
	const char *q = p, *b = base;
	return q >= b && q + n <= b + base_len;
}

static void check_text(const struct p1_telegram *t, const struct p1_text *x)
{
	if (!x->len)
		return;
	CHECK(x->ptr);
	CHECK(inside(x->ptr, x->len, t->raw, t->raw_len) ||
	      inside(x->ptr, x->len, t->arena, t->arena_used));
}

static void check_value(const struct p1_telegram *t, const struct p1_value *v, enum p1_kind k)
{
	CHECK(v->presence <= P1_NULL);
	if (v->presence != P1_PRESENT)
		return;
	if (k == P1_KIND_TEXT) {
		check_text(t, &v->text);
	} else if (k == P1_KIND_NUMBER) {
		int64_t x;
		char buf[64];
		if (v->num.unit)
			CHECK(strlen(v->num.unit) < CAP);
		(void)p1_num_milli(&v->num, &x);
		(void)p1_num_rescale(&v->num, 3, &x);
		size_t n = p1_num_format(&v->num, buf, sizeof(buf));
		CHECK(n < sizeof(buf) && strlen(buf) == n);
	}
}

static void check_telegram(const struct p1_telegram *t)
{
	CHECK((unsigned)t->dialect < P1_DIALECT_COUNT);
	CHECK(t->n_events <= P1_MAX_EVENTS && t->n_demand <= P1_MAX_DEMAND);
	CHECK(t->n_unknown <= P1_MAX_UNKNOWN);
	CHECK(t->arena_used <= t->cap);
	check_text(t, &t->header);
	for (int f = 0; f < P1_FIELD_COUNT; f++)
		check_value(t, &t->fields[f], p1_field_info((enum p1_field)f)->kind);
	/* a log is there in full, oldest first, or not at all */
	if (t->fields[P1_F_FAILURE_LOG].presence == P1_PRESENT)
		for (unsigned i = 1; i < t->n_events; i++)
			CHECK(t->events[i - 1].end.utc <= t->events[i].end.utc);
	else
		CHECK(t->n_events == 0);
	if (t->fields[P1_F_DEMAND_HISTORY].presence != P1_PRESENT)
		CHECK(t->n_demand == 0);
	for (unsigned i = 0; i < t->n_unknown; i++) {
		CHECK(memchr(t->unknown[i].obis, 0, sizeof(t->unknown[i].obis)));
		check_text(t, &t->unknown[i].raw);
	}
	for (unsigned i = 0; i < P1_MAX_MBUS; i++) {
		const struct p1_mbus *m = &t->mbus[i];
		if (!m->present)
			continue;
		check_value(t, &m->id, P1_KIND_TEXT);
		check_value(t, &m->value, P1_KIND_NUMBER);
		check_value(t, &m->valve, P1_KIND_NUMBER);
		check_value(t, &m->relay, P1_KIND_NUMBER);
	}
}

/* A copy must own everything it points to: nothing may point into the source's buffers. */
static void check_value_not_in(const struct p1_value *v, enum p1_kind k,
                               const struct p1_telegram *src)
{
	const void *p = NULL;
	if (v->presence != P1_PRESENT)
		return;
	if (k == P1_KIND_TEXT)
		p = v->text.ptr;
	else if (k == P1_KIND_NUMBER)
		p = v->num.unit;
	if (p)
		CHECK(!inside(p, 1, src->raw, src->cap) && !inside(p, 1, src->arena, src->cap));
}

static void check_copy(const struct p1_telegram *copy, const struct p1_telegram *src)
{
	check_telegram(copy);
	CHECK(!copy->header.len || !inside(copy->header.ptr, 1, src->raw, src->cap));
	for (int f = 0; f < P1_FIELD_COUNT; f++)
		check_value_not_in(&copy->fields[f], p1_field_info((enum p1_field)f)->kind, src);
	for (unsigned i = 0; i < P1_MAX_MBUS; i++) {
		check_value_not_in(&copy->mbus[i].id, P1_KIND_TEXT, src);
		check_value_not_in(&copy->mbus[i].value, P1_KIND_NUMBER, src);
		check_value_not_in(&copy->mbus[i].valve, P1_KIND_NUMBER, src);
		check_value_not_in(&copy->mbus[i].relay, P1_KIND_NUMBER, src);
	}
	for (unsigned i = 0; i < copy->n_demand; i++)
		if (copy->demand[i].value_valid && copy->demand[i].value.unit)
			CHECK(!inside(copy->demand[i].value.unit, 1, src->arena, src->cap));
	for (unsigned i = 0; i < copy->n_unknown; i++)
		CHECK(!inside(copy->unknown[i].raw.ptr, 1, src->raw, src->cap) &&
		      !inside(copy->unknown[i].raw.ptr, 1, src->arena, src->cap));
}

/* Render with p1_json_telegram into a buffer of exactly the size it asks for (so ASan sees any
 * overrun), check the JSON, and return the buffer (caller frees). With thorough, also check
 * that too small buffers get the same length and a NUL-terminated prefix, and that every field
 * rendered alone by p1_json_value is valid. */
static char *render(const struct p1_telegram *t, size_t *ret_len, uint32_t pick, bool thorough)
{
	size_t need = p1_json_telegram(t, P1_JSON_ALL, NULL, 0);
	char *buf = malloc(need + 1);
	CHECK(buf);
	CHECK(p1_json_telegram(t, P1_JSON_ALL, buf, need + 1) == need);
	CHECK(buf[need] == 0 && strlen(buf) == need);
	if (!json_ok(buf, need, '{'))
		json_fail("p1_json_telegram output", buf, need);
	*ret_len = need;
	if (!thorough)
		return buf;

	size_t caps[2] = {1, need ? 1 + pick % need : 1};
	for (int i = 0; i < 2; i++) {
		char *small = malloc(caps[i]);
		CHECK(small);
		CHECK(p1_json_telegram(t, P1_JSON_ALL, small, caps[i]) == need);
		CHECK(small[caps[i] - 1] == 0 && !memcmp(small, buf, caps[i] - 1));
		free(small);
	}
	for (int f = 0; f < P1_FIELD_COUNT; f++) {
		char one[4096];
		if (!t->fields[f].presence && f != P1_F_FAILURE_LOG && f != P1_F_DEMAND_HISTORY)
			continue; /* "null": nothing to check */
		size_t n = p1_json_value(t, (enum p1_field)f, one, sizeof(one));
		if (n >= sizeof(one))
			continue; /* a long text or array: covered by the whole telegram above */
		if (!json_ok(one, n, 0))
			json_fail(p1_field_info((enum p1_field)f)->name, one, n);
	}
	return buf;
}

/* What the second telegram holds before each input: a bit of everything, so that anything a
 * parse forgets to clear shows up as a difference. */
static const char prior[] =
        "/XXX5PRIOR\r\n\r\n1-3:0.2.8(50)\r\n0-0:1.0.0(240101120000W)\r\n"
        "0-0:96.1.1(4530303030)\r\n1-0:1.8.1(000123.456*kWh)\r\n1-0:1.7.0(01.234*xyz)\r\n"
        "1-0:99.97.0(1)(0-0:96.7.19)(231030031500W)(0000000240*s)\r\n"
        "0-0:98.1.0(1)(1-0:1.6.0)(1-0:1.6.0)(231201000000W)(231112190000W)(03.500*kW)\r\n"
        "0-1:24.1.0(003)\r\n0-1:96.1.0(4730)\r\n0-1:24.2.1(240101115500W)(01234.567*m3)\r\n"
        "0-2:24.1.0(007)\r\n0-2:24.4.0(1*abc)\r\n0-0:96.99.9(x)\r\nbad line\r\n!\r\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* Two telegrams kept across inputs. Each input is parsed strictly and then leniently into
	 * the first, and leniently into the second right after it held the prior telegram above,
	 * so a finding never depends on an earlier input. */
	static struct p1_telegram *reused, *other, *copy;
	if (!reused) {
		reused = p1_telegram_new(CAP);
		other = p1_telegram_new(CAP);
		copy = p1_telegram_new(CAP);
		CHECK(reused && other && copy);
	}
	const char *text = (const char *)data;
	struct p1_parse_opts o;
	p1_parse_opts_init(&o);
	uint16_t crc = p1_crc16(0, data, size);
	uint32_t pick = crc * 2654435761u;

	/* strict: without CRC every line must read */
	unsigned line = 0;
	enum p1_error e = p1_parse(reused, text, size, false, 0, &o, &line);
	if (size + 1 > reused->cap) {
		CHECK(e == P1_ERR_TOO_LONG);
		return 0;
	}
	CHECK(e == P1_OK || e == P1_ERR_SYNTAX);
	if (e == P1_ERR_SYNTAX) {
		CHECK(line >= 1);
	} else {
		check_telegram(reused);
		CHECK(!reused->has_crc);
	}
	/* the same verdict when every line is read the general way */
	static char blanks[2 * CAP];
	size_t blanks_len = with_blanks(data, size, blanks);
	bool both = blanks_len + 1 <= other->cap;
	if (both) {
		unsigned line2 = 0;
		CHECK(p1_parse(other, blanks, blanks_len, false, 0, &o, &line2) == e);
		CHECK(line2 == line);
	}

	/* lenient: with a CRC nothing but the length can fail */
	CHECK(p1_parse(reused, text, size, true, crc, &o, NULL) == P1_OK);
	CHECK(p1_parse(other, prior, sizeof(prior) - 1, true, 0, &o, NULL) == P1_OK);
	CHECK(p1_parse(other, text, size, true, crc, &o, NULL) == P1_OK);
	check_telegram(reused);
	CHECK(reused->has_crc && reused->crc == crc && reused->raw_len == size);
	CHECK(!memcmp(reused->raw, data, size) && reused->raw[size] == 0);
	size_t len, len2;
	char *a = render(reused, &len, pick, true), *b = render(other, &len2, pick, false);
	if (len != len2 || memcmp(a, b, len)) {
		fprintf(stderr,
		        "fuzz_parse: the same text parsed differently after another:\n%s\n%s\n", a,
		        b);
		abort();
	}
	free(b);
	if (both) { /* and the same telegram */
		char *k0 = blanks_key(reused);
		CHECK(p1_parse(other, blanks, blanks_len, true, crc, &o, NULL) == P1_OK);
		char *k1 = blanks_key(other);
		CHECK(k0 && k1);
		if (strcmp(k0, k1)) {
			fprintf(stderr,
			        "fuzz_parse: read in one pass and in general, the same text gives:"
			        "\n%s\n%s\n",
			        k0, k1);
			abort();
		}
		free(k0);
		free(k1);
	}

	/* a copy stays whole when its source is parsed over */
	CHECK(p1_telegram_copy(copy, reused));
	CHECK(p1_parse(reused, prior, sizeof(prior) - 1, true, 0, &o, NULL) == P1_OK);
	check_copy(copy, reused);
	b = render(copy, &len2, pick, false);
	if (len != len2 || memcmp(a, b, len)) {
		fprintf(stderr, "fuzz_parse: a copy renders differently from its source:\n%s\n%s\n",
		        a, b);
		abort();
	}
	free(a);
	free(b);
	return 0;
}
