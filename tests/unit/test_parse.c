/* test_parse.c - unit tests for the telegram parser (p1/telegram.h) and its JSON (p1/json.h).
 *
 * Data-driven: every $P1_TEST_DATA/NAME.txt that has a NAME.json beside it is decoded with
 * p1_decoder (default options) and the output compared with the JSON file. The output is one
 * JSON object per frame: p1_json_telegram(P1_JSON_ALL) for a valid telegram, and
 * {"valid":false,"reason":<p1_error_id>,"offset":N,"line":L} for a rejected frame. The JSON
 * files may be pretty-printed: whitespace outside strings is ignored, everything else (number
 * spellings such as 0.000 included) must match exactly. t1..t4 are the telegrams of
 * dsmr-protocol.md §10.2, their expected values checked against the worked decodes of §9; the
 * q-*.txt fixtures are one quirk of §7 each (CRCs filled in by tests/data/mkcrc.py).
 *
 * Focused: per quirk, assertions on struct p1_telegram fields (mantissa, scale, unit, UTC
 * seconds, flags, warnings) that JSON does not show, with telegrams built here and their CRCs
 * computed with p1_crc16. UTC instants are computed with timegm(), independently of libp1.
 */
#include <dirent.h>
#include <malloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "p1/crc16.h"
#include "p1/decoder.h"
#include "p1/json.h"
#include "p1/obis.h"
#include "p1/telegram.h"

#include "../fuzz/line_blanks.h"
#include "unit_util.h"

#define CAP 65536

/* ---- decoding a whole stream into the JSON lines of the data-driven tests ---- */

struct out {
	char *s;
	size_t n, cap;
	unsigned valid, invalid;
	char *json;
};

static void out_put(struct out *o, const char *s)
{
	size_t k = strlen(s);
	if (o->n + k + 1 > o->cap) {
		o->cap = (o->n + k + 1) * 2;
		o->s = realloc(o->s, o->cap);
		assert_non_null(o->s);
	}
	memcpy(o->s + o->n, s, k + 1);
	o->n += k;
}

static void on_result(void *ud, const struct p1_result *r)
{
	struct out *o = ud;
	if (r->error == P1_OK) {
		assert_non_null(r->telegram);
		size_t need = p1_json_telegram(r->telegram, P1_JSON_ALL, o->json, CAP);
		assert_true(need < CAP);
		assert_int_equal(strlen(o->json), need);
		/* the length-only call agrees */
		assert_int_equal(p1_json_telegram(r->telegram, P1_JSON_ALL, NULL, 0), need);
		out_put(o, o->json);
		o->valid++;
	} else {
		char tmp[160];
		snprintf(tmp, sizeof(tmp),
		         "{\"valid\":false,\"reason\":\"%s\",\"offset\":%llu,\"line\":%u}",
		         p1_error_id(r->error), (unsigned long long)r->offset, r->line);
		out_put(o, tmp);
		o->invalid++;
	}
	out_put(o, "\n");
}

static void decode(const void *p, size_t n, struct out *o)
{
	struct p1_decoder_opts opts;
	p1_decoder_opts_init(&opts);
	struct p1_decoder *d = p1_decoder_new(&opts);
	assert_non_null(d);
	*o = (struct out){0};
	o->json = malloc(CAP);
	out_put(o, "");
	p1_decoder_feed(d, p, n, on_result, o);
	p1_decoder_flush(d, on_result, o);
	p1_decoder_free(d);
	free(o->json);
	o->json = NULL;
}

/* ---- common lines are read in one pass: that reading agrees with the general one ---- */

struct both {
	struct p1_telegram *t;
	unsigned frames;
};

/* Parse the frame as it came and with blanks before its line ends (line_blanks.h): same
 * verdict, same line at fault, same telegram. */
static void on_frame_both(void *ud, const struct p1_result *r)
{
	struct both *b = ud;
	const struct p1_frame *f = r->frame;
	if (!f || f->kind != P1_FRAME_TEXT)
		return;
	struct p1_parse_opts opts;
	p1_parse_opts_init(&opts);
	char *text[2] = {(char *)f->data, malloc(2 * f->len + 1)};
	assert_non_null(text[1]);
	size_t n[2] = {f->len, with_blanks(f->data, f->len, text[1])};
	enum p1_error err[2];
	unsigned line[2];
	char *key[2];
	for (int k = 0; k < 2; k++) {
		line[k] = 0;
		err[k] = p1_parse(b->t, text[k], n[k], f->has_crc, f->crc_sent, &opts, &line[k]);
		key[k] = err[k] == P1_OK ? blanks_key(b->t) : strdup("");
		assert_non_null(key[k]);
	}
	if (err[0] != err[1] || line[0] != line[1] || strcmp(key[0], key[1]))
		fail_msg("frame at %llu: read in one pass: %d, line %u, %s\nread in general: %d, "
		         "line %u, %s",
		         (unsigned long long)f->offset, err[0], line[0], key[0], err[1], line[1],
		         key[1]);
	free(key[0]);
	free(key[1]);
	free(text[1]);
	b->frames++;
}

static unsigned check_both_readings(const void *p, size_t n)
{
	struct both b = {.t = p1_telegram_new(CAP)};
	assert_non_null(b.t);
	struct p1_decoder *d = p1_decoder_new(NULL);
	assert_non_null(d);
	p1_decoder_feed(d, p, n, on_frame_both, &b);
	p1_decoder_flush(d, on_frame_both, &b);
	p1_decoder_free(d);
	p1_telegram_free(b.t);
	return b.frames;
}

/* ---- data-driven fixtures ---- */

struct fixture {
	char txt[4096], json[4096];
};

static void test_fixture(void **state)
{
	const struct fixture *fx = *state;
	size_t n, m;
	char *in = read_file(fx->txt, &n);
	char *want_raw = read_file(fx->json, &m);
	if (!in || !want_raw)
		fail_msg("cannot read %s or %s", fx->txt, fx->json);
	struct out o;
	decode(in, n, &o);
	/* every text frame the fixture holds, once in the one-pass reading of common lines and
	 * once in the general reading */
	check_both_readings(in, n);
	char *want = json_squeeze(want_raw), *got = json_squeeze(o.s);
	if (strcmp(want, got)) {
		size_t i = 0;
		while (want[i] && want[i] == got[i])
			i++;
		print_message("%s: output differs from %s at character %zu\n", fx->txt, fx->json,
		              i);
		/* cmocka's print_message truncates long lines */
		fflush(stdout);
		printf("expected: %s\nactual:   %s\n", want, got);
		fflush(stdout);
		print_message("near:     ...%.60s\n", got + (i > 20 ? i - 20 : 0));
		fail_msg("JSON mismatch for %s", fx->txt);
	}
	free(want);
	free(got);
	free(want_raw);
	free(in);
	free(o.s);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int run_fixtures(void)
{
	const char *dir = getenv("P1_TEST_DATA");
	if (!dir) {
		fprintf(stderr, "test_parse: P1_TEST_DATA is not set; it names tests/data\n");
		return 1;
	}
	DIR *d = opendir(dir);
	if (!d) {
		fprintf(stderr, "test_parse: cannot open %s\n", dir);
		return 1;
	}
	char **names = NULL;
	size_t nn = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		size_t k = strlen(e->d_name);
		if (k > 4 && !strcmp(e->d_name + k - 4, ".txt")) {
			names = realloc(names, (nn + 1) * sizeof(*names));
			names[nn++] = strdup(e->d_name);
		}
	}
	closedir(d);
	qsort(names, nn, sizeof(*names), cmp_str);

	struct CMUnitTest *tests = calloc(nn + 1, sizeof(*tests));
	struct fixture *fx = calloc(nn + 1, sizeof(*fx));
	size_t nt = 0;
	bool have_t[4] = {false};
	for (size_t i = 0; i < nn; i++) {
		struct fixture *f = &fx[nt];
		snprintf(f->txt, sizeof(f->txt), "%s/%s", dir, names[i]);
		snprintf(f->json, sizeof(f->json), "%s/%.*s.json", dir, (int)strlen(names[i]) - 4,
		         names[i]);
		FILE *j = fopen(f->json, "r");
		if (!j)
			continue;
		fclose(j);
		for (int k = 0; k < 4; k++)
			if (names[i][0] == 't' && names[i][1] == '1' + k && names[i][2] == '-')
				have_t[k] = true;
		tests[nt] = (struct CMUnitTest){
		        .name = names[i], .test_func = test_fixture, .initial_state = f};
		nt++;
	}
	int r = 0;
	for (int k = 0; k < 4; k++)
		if (!have_t[k]) {
			fprintf(stderr, "test_parse: fixture t%d-*.txt/.json missing in %s\n",
			        k + 1, dir);
			r = 1;
		}
	r |= _cmocka_run_group_tests("fixtures", tests, nt, NULL, NULL);
	for (size_t i = 0; i < nn; i++)
		free(names[i]);
	free(names);
	free(tests);
	free(fx);
	return r;
}

/* ---- focused tests: building and parsing telegrams ---- */

static struct p1_telegram *T;
static struct p1_parse_opts OPTS;

static int setup(void **state)
{
	(void)state;
	T = p1_telegram_new(CAP);
	p1_parse_opts_init(&OPTS);
	return T ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	T = p1_telegram_free(T);
	return 0;
}

#define L(...) ((const char *const[]){__VA_ARGS__, NULL})

/* "/hdr\r\n\r\n" + lines + "!" [+ CRC], into buf; returns the length. */
static size_t build(char *buf, size_t cap, const char *hdr, bool blank, const char *const *lines,
                    bool crc)
{
	size_t n = (size_t)snprintf(buf, cap, "/%s\r\n%s", hdr, blank ? "\r\n" : "");
	for (; *lines; lines++)
		n += (size_t)snprintf(buf + n, cap - n, "%s\r\n", *lines);
	n += (size_t)snprintf(buf + n, cap - n, "!");
	if (crc)
		n += (size_t)snprintf(buf + n, cap - n, "%04X", p1_crc16(0, buf, n));
	n += (size_t)snprintf(buf + n, cap - n, "\r\n");
	assert_true(n < cap);
	return n;
}

/* Parse a telegram built from lines; crc says whether it carries one. */
static enum p1_error parse_full(const char *hdr, bool blank, const char *const *lines, bool crc,
                                unsigned *ret_line)
{
	static char buf[CAP];
	size_t n = build(buf, sizeof(buf), hdr, blank, lines, crc);
	uint16_t c = 0;
	if (crc) {
		const char *bang = strstr(buf, "\r\n!");
		c = (uint16_t)strtoul(bang + 3, NULL, 16);
	}
	unsigned line = 0;
	enum p1_error e = p1_parse(T, buf, n, crc, c, &OPTS, &line);
	if (ret_line)
		*ret_line = line;
	return e;
}

static void parse_ok(const char *const *lines)
{
	assert_int_equal(parse_full("XXX5TEST", true, lines, true, NULL), P1_OK);
}

static const struct p1_value *F(enum p1_field f)
{
	return &T->fields[f];
}

static void assert_num(const struct p1_value *v, int64_t mant, unsigned scale, const char *unit)
{
	assert_int_equal(v->presence, P1_PRESENT);
	assert_int_equal(v->num.mant, mant);
	assert_int_equal(v->num.scale, scale);
	if (unit) {
		assert_non_null(v->num.unit);
		assert_string_equal(v->num.unit, unit);
	} else {
		assert_null(v->num.unit);
	}
}

static void assert_text(const struct p1_value *v, const char *s)
{
	assert_int_equal(v->presence, P1_PRESENT);
	assert_int_equal(v->text.len, strlen(s));
	assert_memory_equal(v->text.ptr, s, strlen(s));
}

static void assert_time(const struct p1_value *v, int64_t want_utc, char flag)
{
	assert_int_equal(v->presence, P1_PRESENT);
	assert_int_equal(v->time.utc, want_utc);
	assert_int_equal(v->time.flag, flag);
}

static char *json(void)
{
	static char buf[CAP];
	size_t n = p1_json_telegram(T, P1_JSON_ALL, buf, sizeof(buf));
	assert_true(n < sizeof(buf));
	return buf;
}

/* ---- §9 worked decodes, field by field ---- */

static char *fixture_text(const char *name, size_t *n)
{
	const char *dir = getenv("P1_TEST_DATA");
	if (!dir)
		skip();
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	char *p = read_file(path, n);
	if (!p)
		fail_msg("cannot read %s", path);
	return p;
}

static enum p1_error parse_file(const char *name)
{
	size_t n;
	char *p = fixture_text(name, &n);
	const char *bang = strstr(p, "\r\n!");
	assert_non_null(bang);
	bool crc = bang[3] != '\r';
	uint16_t c = crc ? (uint16_t)strtoul(bang + 3, NULL, 16) : 0;
	enum p1_error e = p1_parse(T, p, n, crc, c, &OPTS, NULL);
	free(p);
	return e;
}

static void test_worked_t2(void **state)
{
	(void)state;
	assert_int_equal(parse_file("t2-dsmr5.txt"), P1_OK);
	assert_int_equal(T->dialect, P1_DIALECT_DSMR5);
	assert_true(T->has_crc);
	assert_int_equal(T->crc, 0xA7E4);
	assert_int_equal(T->warnings, 0);
	assert_int_equal(T->header.len, strlen("XXX5TEST-DSMR5"));
	assert_text(F(P1_F_P1_VERSION), "50");
	assert_time(F(P1_F_TIMESTAMP), civil_utc(2024, 3, 31, 10, 0, 0), 'S');
	assert_int_equal(F(P1_F_TIMESTAMP)->time.offset_s, 7200);
	assert_text(F(P1_F_EQUIPMENT_ID), "E0000000000000000");
	assert_num(F(P1_F_E_DEL_T1), 1234567, 3, "kWh");
	assert_num(F(P1_F_E_DEL_T2), 2345678, 3, "kWh");
	assert_num(F(P1_F_E_RET_T1), 111222, 3, "kWh");
	assert_num(F(P1_F_E_RET_T2), 333444, 3, "kWh");
	assert_text(F(P1_F_TARIFF), "0002");
	assert_num(F(P1_F_P_DEL), 543, 3, "kW");
	assert_num(F(P1_F_P_RET), 0, 3, "kW");
	assert_num(F(P1_F_FAILURES), 7, 0, NULL);
	assert_num(F(P1_F_LONG_FAILURES), 2, 0, NULL);
	assert_int_equal(T->n_events, 2);
	assert_int_equal(T->events[0].end.utc, civil_utc(2023, 10, 30, 2, 15, 0));
	assert_int_equal(T->events[0].duration_s, 240);
	assert_int_equal(T->events[1].end.utc, civil_utc(2024, 2, 15, 9, 10, 10));
	assert_int_equal(T->events[1].duration_s, 4321);
	assert_num(F(P1_F_SAGS_L1), 1, 0, NULL);
	assert_num(F(P1_F_SWELLS_L1), 0, 0, NULL);
	assert_text(F(P1_F_MSG_LONG), "Hello");
	assert_num(F(P1_F_V_L1), 2314, 1, "V");
	assert_num(F(P1_F_I_L1), 2, 0, "A");
	assert_num(F(P1_F_P_DEL_L1), 543, 3, "kW");
	assert_num(F(P1_F_P_RET_L1), 0, 3, "kW");
	/* channel 1 gas, channel 2 water */
	assert_true(T->mbus[0].present);
	assert_int_equal(T->mbus[0].device_type, 3);
	assert_text(&T->mbus[0].id, "G0000000000000000");
	assert_num(&T->mbus[0].value, 1234567, 3, "m3");
	assert_time(&T->mbus[0].time, civil_utc(2024, 3, 31, 9, 55, 0), 'S');
	assert_int_equal(T->mbus[0].value_obis_d, 2);
	assert_int_equal(T->mbus[0].value_obis_e, 1);
	assert_int_equal(T->mbus[1].device_type, 7);
	assert_text(&T->mbus[1].id, "80000000000000000");
	assert_num(&T->mbus[1].value, 321123, 3, "m3");
	assert_time(&T->mbus[1].time, civil_utc(2024, 3, 31, 9, 55, 0), 'S');
	assert_false(T->mbus[2].present);
	assert_num(F(P1_F_GAS), 1234567, 3, "m3");
	assert_num(F(P1_F_GAS_TYPE), 3, 0, NULL);
	assert_text(F(P1_F_GAS_ID), "G0000000000000000");
	assert_num(F(P1_F_WATER), 321123, 3, "m3");
	assert_int_equal(T->n_unknown, 0);
	/* the telegram keeps its own copy of the frame */
	assert_int_equal(T->raw_len, 775);
	assert_int_equal(T->raw[0], '/');
}

static void test_worked_t3(void **state)
{
	(void)state;
	assert_int_equal(parse_file("t3-fluvius.txt"), P1_OK);
	assert_int_equal(T->dialect, P1_DIALECT_FLUVIUS);
	assert_text(F(P1_F_P1_VERSION_BE), "50217");
	assert_int_equal(F(P1_F_P1_VERSION)->presence, P1_ABSENT);
	assert_text(F(P1_F_EQUIPMENT_ID), "1SAG0000000000");
	assert_time(F(P1_F_TIMESTAMP), civil_utc(2024, 1, 15, 7, 30, 0), 'W');
	assert_num(F(P1_F_E_DEL_T1), 500100, 3, "kWh");
	assert_num(F(P1_F_E_DEL_T2), 400200, 3, "kWh");
	assert_num(F(P1_F_E_RET_T1), 50300, 3, "kWh");
	assert_num(F(P1_F_E_RET_T2), 10400, 3, "kWh");
	assert_text(F(P1_F_TARIFF), "0001");
	assert_num(F(P1_F_AVG_DEMAND), 1250, 3, "kW");
	assert_num(F(P1_F_MAX_DEMAND), 4321, 3, "kW");
	assert_time(F(P1_F_MAX_DEMAND_TIME), civil_utc(2024, 1, 10, 17, 30, 0), 'W');
	assert_int_equal(F(P1_F_DEMAND_HISTORY)->presence, P1_PRESENT);
	assert_int_equal(T->n_demand, 2);
	assert_true(T->demand[0].period_valid && T->demand[0].time_valid &&
	            T->demand[0].value_valid);
	assert_int_equal(T->demand[0].period.utc, civil_utc(2023, 11, 30, 23, 0, 0));
	assert_int_equal(T->demand[0].time.utc, civil_utc(2023, 11, 12, 18, 0, 0));
	assert_int_equal(T->demand[0].value.mant, 3500);
	assert_int_equal(T->demand[1].period.utc, civil_utc(2023, 12, 31, 23, 0, 0));
	assert_int_equal(T->demand[1].time.utc, civil_utc(2023, 12, 24, 16, 15, 0));
	assert_int_equal(T->demand[1].value.mant, 5250);
	assert_num(F(P1_F_P_DEL), 750, 3, "kW");
	assert_num(F(P1_F_V_L1), 2321, 1, "V");
	assert_num(F(P1_F_I_L1), 341, 2, "A");
	assert_num(F(P1_F_SWITCH), 1, 0, NULL);
	assert_text(F(P1_F_MSG_LONG), "");
	assert_int_equal(T->mbus[0].device_type, 3);
	assert_text(&T->mbus[0].id, "7FLO0000000000");
	assert_num(&T->mbus[0].valve, 1, 0, NULL);
	assert_num(&T->mbus[0].value, 1234567, 3, "m3");
	assert_time(&T->mbus[0].time, civil_utc(2024, 1, 15, 7, 25, 0), 'W');
	assert_int_equal(T->mbus[0].value_obis_d, 2);
	assert_int_equal(T->mbus[0].value_obis_e, 3);
	assert_num(F(P1_F_GAS), 1234567, 3, "m3");
	assert_num(F(P1_F_GAS_VALVE), 1, 0, NULL);
}

/* §9: "limiter and fuse supervision inactive (sentinels)"; §7.3 item 24: 999.9 kW,
 * 99.999 kW, 999 A and 999.99 A mean "function not active" on Fluvius meters. */
static void test_fluvius_threshold_sentinels(void **state)
{
	(void)state;
	static const char *const limiter[] = {"0-0:17.0.0(999.9*kW)", "0-0:17.0.0(99.999*kW)"};
	static const char *const fuse[] = {"1-0:31.4.0(999*A)", "1-0:31.4.0(999.99*A)"};
	/* a real Fluvius limit is a value */
	assert_int_equal(
	        parse_full("FLU5\\253000000_A", true,
	                   L("0-0:96.1.4(50217)", "0-0:17.0.0(006.0*kW)", "1-0:31.4.0(040*A)"),
	                   true, NULL),
	        P1_OK);
	assert_num(F(P1_F_THRESHOLD), 60, 1, "kW");
	assert_num(F(P1_F_FUSE_L1), 40, 0, "A");
	/* and 999 A on a DSMR 2.2 meter is a threshold of 999 A (§10.2 T4) */
	assert_int_equal(parse_full("ISk5\\2MT382-1000", true, L("0-0:17.0.0(999*A)"), false, NULL),
	                 P1_OK);
	assert_num(F(P1_F_THRESHOLD), 999, 0, "A");
	for (int i = 0; i < 2; i++) {
		assert_int_equal(parse_full("FLU5\\253000000_A", true,
		                            L("0-0:96.1.4(50217)", limiter[i], fuse[i]), true,
		                            NULL),
		                 P1_OK);
		assert_int_equal(T->dialect, P1_DIALECT_FLUVIUS);
		if (F(P1_F_THRESHOLD)->presence != P1_NULL || F(P1_F_FUSE_L1)->presence != P1_NULL)
			fail_msg(
			        "%s / %s: sentinel reported as a value (presence %d, %d), expected "
			        "\"not active\" (P1_NULL)",
			        limiter[i], fuse[i], F(P1_F_THRESHOLD)->presence,
			        F(P1_F_FUSE_L1)->presence);
	}
}

static void test_worked_t4(void **state)
{
	(void)state;
	assert_int_equal(parse_file("t4-dsmr22.txt"), P1_OK);
	assert_int_equal(T->dialect, P1_DIALECT_DSMR22);
	assert_false(T->has_crc);
	assert_text(F(P1_F_EQUIPMENT_ID), "K8EG004046395507");
	assert_text(F(P1_F_TARIFF), "0001");
	assert_num(F(P1_F_P_DEL), 45, 2, "kW");
	assert_num(F(P1_F_THRESHOLD), 999, 0, "A");
	assert_num(F(P1_F_GAS), 1234567, 3, "m3");
	/* 2024-01-01 12:00:00 local, no flag: winter time, not ambiguous */
	assert_time(F(P1_F_GAS_TIME), civil_utc(2024, 1, 1, 11, 0, 0), 0);
	assert_false(F(P1_F_GAS_TIME)->time.ambiguous);
	assert_int_equal(T->mbus[0].value_obis_d, 3);
	assert_int_equal(T->mbus[0].value_obis_e, 0);
	assert_int_equal(F(P1_F_TIMESTAMP)->presence, P1_ABSENT);
}

/* ---- §7 quirks ---- */

static void test_header_blank_line(void **state)
{
	(void)state;
	assert_int_equal(parse_full("XXX5TEST", false,
	                            L("1-3:0.2.8(50)", "1-0:1.8.1(000001.000*kWh)"), true, NULL),
	                 P1_OK);
	assert_true(T->warnings & P1_WARN_NO_HEADER_BLANK);
	assert_num(F(P1_F_E_DEL_T1), 1000, 3, "kWh");
	parse_ok(L("1-3:0.2.8(50)", "1-0:1.8.1(000001.000*kWh)"));
	assert_false(T->warnings & P1_WARN_NO_HEADER_BLANK);
	/* also without CRC (DSMR 2.2 Kamstrup) */
	assert_int_equal(parse_full("KMP5 ZABF000000000000", false, L("1-0:1.8.1(00001.000*kWh)"),
	                            false, NULL),
	                 P1_OK);
	assert_int_equal(T->dialect, P1_DIALECT_DSMR22);
}

static void test_header_spaces(void **state)
{
	(void)state;
	assert_int_equal(parse_full("Ene5\\T211 ESMR 5.0", true, L("1-3:0.2.8(50)"), true, NULL),
	                 P1_OK);
	assert_int_equal(T->header.len, strlen("Ene5\\T211 ESMR 5.0"));
	assert_memory_equal(T->header.ptr, "Ene5\\T211 ESMR 5.0", T->header.len);
	assert_non_null(strstr(json(), "\"header\":\"Ene5\\\\T211 ESMR 5.0\""));
}

static void test_obis_suffix_and_typos(void **state)
{
	(void)state;
	parse_ok(L("1-0:1.8.1*255(000010.003*kWh)", "1-0:31.7.0.255(001*A)", "1-0:72:32.0(00003)",
	           "0-0:96.7. 9(00002)", "0-0:96.1.255*255(1ESY1313002565)"));
	assert_num(F(P1_F_E_DEL_T1), 10003, 3, "kWh");
	assert_num(F(P1_F_I_L1), 1, 0, "A");
	assert_num(F(P1_F_SAGS_L3), 3, 0, NULL);
	assert_num(F(P1_F_LONG_FAILURES), 2, 0, NULL);
	assert_text(F(P1_F_EQUIPMENT_ID), "1ESY1313002565");
	assert_int_equal(T->n_unknown, 0);
	assert_int_equal(T->warnings, 0);
}

static void test_double_parentheses(void **state)
{
	(void)state;
	parse_ok(L("0-0:96.13.1((ER11))", "1-0:1.7.0((00.104*kW))"));
	assert_text(F(P1_F_MSG_SHORT), "ER11");
	assert_num(F(P1_F_P_DEL), 104, 3, "kW");
	assert_int_equal(T->warnings, 0);
}

static void test_empty_values(void **state)
{
	(void)state;
	parse_ok(L("0-0:1.0.0()", "1-0:2.7.0()", "0-0:96.13.0()", "1-0:99.97.0()", "0-1:24.1.0()",
	           "0-1:96.1.0()"));
	assert_int_equal(F(P1_F_TIMESTAMP)->presence, P1_NULL);
	assert_int_equal(F(P1_F_P_RET)->presence, P1_NULL);
	assert_text(F(P1_F_MSG_LONG), "");
	assert_int_equal(F(P1_F_FAILURE_LOG)->presence, P1_PRESENT);
	assert_int_equal(T->n_events, 0);
	assert_true(T->mbus[0].present);
	assert_int_equal(T->mbus[0].device_type, -1);
	assert_int_equal(T->mbus[0].id.presence, P1_NULL);
	assert_int_equal(T->warnings & (P1_WARN_BAD_VALUE | P1_WARN_EVENT_COUNT), 0);
	/* and never an error without CRC either */
	assert_int_equal(parse_full("ISk5\\2MT382-1000", true,
	                            L("1-0:1.8.1(00001.000*kWh)", "0-0:96.13.1()", "0-0:96.13.0()",
	                              "1-0:2.7.0()"),
	                            false, NULL),
	                 P1_OK);
}

static void test_missing_units(void **state)
{
	(void)state;
	parse_ok(L("1-0:1.8.1(000010.005)", "1-0:32.7.0(230.5)"));
	assert_num(F(P1_F_E_DEL_T1), 10005, 3, "kWh");
	assert_true(F(P1_F_E_DEL_T1)->num.unit_assumed);
	assert_num(F(P1_F_V_L1), 2305, 1, "V");
	assert_true(F(P1_F_V_L1)->num.unit_assumed);
	assert_true(T->warnings & P1_WARN_UNIT_ASSUMED);
	parse_ok(L("1-0:1.8.1(000010.005*kWh)"));
	assert_false(F(P1_F_E_DEL_T1)->num.unit_assumed);
	assert_false(T->warnings & P1_WARN_UNIT_ASSUMED);
	/* a value without unit whose field has none is not "assumed" */
	parse_ok(L("0-0:96.7.21(00004)"));
	assert_num(F(P1_F_FAILURES), 4, 0, NULL);
	assert_false(T->warnings & P1_WARN_UNIT_ASSUMED);
}

/* Units written right after the number without '*' (000123.456kWh): seen on Fluvius meters
 * (corpus fluvius-emucs/openhab-*); README of the corpus asks for it. */
static void test_unit_without_star(void **state)
{
	(void)state;
	parse_ok(L("1-0:1.8.1(000123.456kWh)", "1-0:1.7.0(01.234kW)", "1-0:31.7.0(005A)"));
	if (F(P1_F_E_DEL_T1)->presence != P1_PRESENT)
		fail_msg("1-0:1.8.1(000123.456kWh) not read (kept as unknown: %u lines)",
		         T->n_unknown);
	assert_num(F(P1_F_E_DEL_T1), 123456, 3, "kWh");
	assert_num(F(P1_F_P_DEL), 1234, 3, "kW");
	assert_num(F(P1_F_I_L1), 5, 0, "A");
	assert_false(T->warnings & P1_WARN_BAD_VALUE);
}

static void test_wh_and_w(void **state)
{
	(void)state;
	parse_ok(L("1-0:1.8.0(000123456*Wh)", "1-0:1.7.0(000500*W)", "1-0:3.8.0(000001234*varh)",
	           "1-0:3.7.0(000100*var)", "1-0:1.8.1(000123.456*kWh)", "1-0:2.7.0(01.500*kW)"));
	int64_t v;
	assert_num(F(P1_F_E_DEL_TOTAL), 123456, 0, "Wh");
	assert_true(p1_num_milli(&F(P1_F_E_DEL_TOTAL)->num, &v));
	assert_int_equal(v, 123456); /* thousandths of a kWh */
	assert_true(p1_num_milli(&F(P1_F_E_DEL_T1)->num, &v));
	assert_int_equal(v, 123456); /* the same energy written in kWh */
	assert_true(p1_num_milli(&F(P1_F_P_DEL)->num, &v));
	assert_int_equal(v, 500);
	assert_true(p1_num_milli(&F(P1_F_P_RET)->num, &v));
	assert_int_equal(v, 1500);
	assert_true(p1_num_milli(&F(P1_F_RE_IMP)->num, &v));
	assert_int_equal(v, 1234);
	assert_true(p1_num_milli(&F(P1_F_Q_DEL)->num, &v));
	assert_int_equal(v, 100);
	/* digits beyond the thousandth are truncated */
	struct p1_num q3d = {.mant = 123456789, .scale = 7, .unit = "kWh"};
	assert_true(p1_num_milli(&q3d, &v));
	assert_int_equal(v, 12345);
}

static void test_unit_spellings(void **state)
{
	(void)state;
	parse_ok(L("1-0:3.7.0(00.100*kVar)", "1-0:4.7.0(00.200*Kvar)", "1-0:23.7.0(00.050*KVAR)",
	           "1-0:3.8.0(000001.000*kVArh)", "1-0:32.7.0(230.0*v)", "1-0:1.7.0(01.000*KW)"));
	assert_num(F(P1_F_Q_DEL), 100, 3, "kvar");
	assert_num(F(P1_F_Q_RET), 200, 3, "kvar");
	assert_num(F(P1_F_Q_DEL_L1), 50, 3, "kvar");
	assert_num(F(P1_F_RE_IMP), 1000, 3, "kvarh");
	assert_num(F(P1_F_V_L1), 2300, 1, "V");
	assert_num(F(P1_F_P_DEL), 1000, 3, "kW");
}

/* Common lines are read and stored in one pass, anything unusual in the general way: values
 * of both kinds of line come out right, and the telegram is the same when every line has to
 * be read in the general way. */
static void test_one_pass_lines(void **state)
{
	(void)state;
	static char buf[CAP];
	size_t n = build(buf, sizeof(buf), "ISK5\\2M550T-1012", true,
	                 L("1-3:0.2.8(50)", "0-0:1.0.0(240331120000S)",
	                   "0-0:96.1.1(4530303434303031353337363331343137)",
	                   "1-0:1.8.1(012345.678*kWh)", /* the most common line */
	                   "1-0:1.8.2(023456.789*KWH)", /* another spelling of the unit */
	                   "1-0:2.8.1(001234.567)",     /* no unit */
	                   "1-0:2.8.2( 002345.678*kWh)", "1-0:1.8.1(099999.999*kWh)",
	                   "0-0:96.14.0(0002)", "0-0:96.13.0()", "0-0:96.7.21(00012)",
	                   "1-0:01.8.3(000001.000*kWh)", /* the code spelled otherwise */
	                   "1-0:2.7.0(00.000*kW)", "  (1)", /* continued on the next line */
	                   "1-0:22.7.0(-00.100*kW)", "1-0:41.7.0(0000000000000000001.000*kW)",
	                   "1-0:21.7.0(00.412*kW)(junk", "0-1:24.1.0(003)",
	                   "0-1:24.2.1(240331115500S)(04567.890*m3)", "1-0:31.7.0(002*A)"),
	                 true);
	const char *bang = strstr(buf, "\r\n!");
	uint16_t crc = (uint16_t)strtoul(bang + 3, NULL, 16);
	assert_int_equal(p1_parse(T, buf, n, true, crc, &OPTS, NULL), P1_OK);
	assert_text(F(P1_F_P1_VERSION), "50");
	assert_int_equal(F(P1_F_TIMESTAMP)->time.utc, civil_utc(2024, 3, 31, 10, 0, 0));
	assert_text(F(P1_F_EQUIPMENT_ID), "E0044001537631417");
	assert_num(F(P1_F_E_DEL_T1), 12345678, 3, "kWh");
	assert_num(F(P1_F_E_DEL_T2), 23456789, 3, "kWh");
	assert_num(F(P1_F_E_RET_T1), 1234567, 3, "kWh");
	assert_true(F(P1_F_E_RET_T1)->num.unit_assumed);
	assert_true(T->warnings & P1_WARN_UNIT_ASSUMED);
	assert_num(F(P1_F_E_RET_T2), 2345678, 3, "kWh");
	assert_true(T->warnings & P1_WARN_DUPLICATE);
	assert_text(F(P1_F_TARIFF), "0002");
	assert_int_equal(F(P1_F_MSG_LONG)->presence, P1_PRESENT);
	assert_int_equal(F(P1_F_MSG_LONG)->text.len, 0);
	assert_num(F(P1_F_FAILURES), 12, 0, NULL);
	assert_num(F(P1_F_E_DEL_T3), 1000, 3, "kWh");
	assert_num(F(P1_F_P_RET), 0, 3, "kW");
	assert_num(F(P1_F_P_RET_L1), -100, 3, "kW");
	assert_int_equal(F(P1_F_P_DEL_L2)->presence, P1_ABSENT); /* 19 digits */
	assert_int_equal(F(P1_F_P_DEL_L1)->presence, P1_ABSENT); /* unclosed */
	assert_true(T->warnings & P1_WARN_BAD_VALUE);
	assert_num(F(P1_F_GAS), 4567890, 3, "m3");
	assert_num(F(P1_F_I_L1), 2, 0, "A");
	assert_int_equal(T->dialect, P1_DIALECT_DSMR5);
	assert_int_equal(check_both_readings(buf, n), 1);
}

static void test_negative_values(void **state)
{
	(void)state;
	assert_int_equal(parse_full("Lux5\\253000000_M", true,
	                            L("1-3:0.2.8(42)", "0-0:42.0.0(4C5558313233)",
	                              "1-1:31.4.0(100*A)(-063*A)", "1-0:31.7.0(-001.2*A)"),
	                            true, NULL),
	                 P1_OK);
	assert_int_equal(T->dialect, P1_DIALECT_SMARTY);
	assert_text(F(P1_F_DEVICE_NAME), "LUX123");
	assert_num(F(P1_F_CUR_THR_IMP), 100, 0, "A");
	assert_num(F(P1_F_CUR_THR_EXP), -63, 0, "A");
	assert_num(F(P1_F_I_L1), -12, 1, "A");
	char buf[32];
	assert_int_equal(p1_num_format(&F(P1_F_CUR_THR_EXP)->num, buf, sizeof(buf)), 3);
	assert_string_equal(buf, "-63");
	assert_non_null(strstr(json(), "\"current_threshold_export\":-63"));

	/* the comma form, on the table's OBIS 34.4.0 */
	parse_ok(L("1-3:0.2.8(42)", "1-1:34.4.0(100.0*A,-100.0*A)"));
	assert_num(F(P1_F_CUR_THR_IMP), 1000, 1, "A");
	assert_num(F(P1_F_CUR_THR_EXP), -1000, 1, "A");
}

static void test_hex_and_plain(void **state)
{
	(void)state;
	parse_ok(L("0-0:96.1.1(1ESY1313002565)", "0-0:96.1.2(303)", "0-0:96.14.0(5431)",
	           "0-0:96.13.0(48656C6C6F2C20776F726C6421)", "0-0:96.13.1(0A0B)",
	           "0-0:96.1.4(3231313130)"));
	assert_text(F(P1_F_EQUIPMENT_ID), "1ESY1313002565"); /* not hex */
	assert_text(F(P1_F_EAN), "303");                     /* odd length */
	assert_text(F(P1_F_TARIFF), "T1");                   /* /ESR5 meter */
	assert_text(F(P1_F_MSG_LONG), "Hello, world!");
	assert_text(F(P1_F_MSG_SHORT), "0A0B"); /* hex of control characters: kept as sent */
	assert_text(F(P1_F_P1_VERSION_BE), "21110");
	/* the usual tariff codes are not text in hex */
	parse_ok(L("0-0:96.14.0(0002)"));
	assert_text(F(P1_F_TARIFF), "0002");
}

static void test_sentinel_timestamps(void **state)
{
	(void)state;
	static const char *const sentinels[] = {
	        "632525252525W", "632525252525S", "000101000001W", "000000000000W",
	        "000000000000S", "000101010000W", "700101010000W",
	};
	/* Kaifa unused power failure slot */
	parse_ok(L("1-0:99.97.0(2)(0-0:96.7.19)(000101000001W)(2147483647*s)(231030031500W)("
	           "0000000240*s)"));
	assert_int_equal(T->n_events, 1);
	assert_int_equal(T->events[0].duration_s, 240);
	assert_false(T->warnings & P1_WARN_EVENT_COUNT);
	/* Fluvius M-Bus channel without data */
	parse_ok(L("0-1:24.1.0(003)", "0-1:24.2.1(632525252525W)(00000.000*m3)"));
	assert_int_equal(T->mbus[0].time.presence, P1_NULL);
	/* AM550 without gas meter */
	parse_ok(L("1-3:0.2.8(50)", "0-1:24.1.0(003)", "0-1:96.1.0()",
	           "0-1:24.2.1(700101010000W)(00000000)"));
	assert_int_equal(F(P1_F_GAS)->presence, P1_NULL);
	if (T->mbus[0].time.presence != P1_NULL)
		fail_msg("AM550 gas capture time 700101010000W read as a time (utc %lld)",
		         (long long)T->mbus[0].time.time.utc);
	/* every sentinel as the telegram time, 700101010000W last */
	for (size_t i = 0; i < sizeof(sentinels) / sizeof(sentinels[0]); i++) {
		char line[64];
		snprintf(line, sizeof(line), "0-0:1.0.0(%s)", sentinels[i]);
		parse_ok(L("1-3:0.2.8(50)", line));
		if (F(P1_F_TIMESTAMP)->presence != P1_NULL)
			fail_msg("%s read as a time (presence %d, utc %lld), expected no timestamp",
			         sentinels[i], F(P1_F_TIMESTAMP)->presence,
			         (long long)F(P1_F_TIMESTAMP)->time.utc);
		assert_int_equal(T->warnings & P1_WARN_BAD_VALUE, 0);
	}
}

static void test_time_flags(void **state)
{
	(void)state;
	/* lower-case flags */
	parse_ok(L("0-0:1.0.0(240102030405w)", "0-1:24.1.0(3)",
	           "0-1:24.2.1(240601120000s)(00001.000*m3)"));
	assert_time(F(P1_F_TIMESTAMP), civil_utc(2024, 1, 2, 2, 4, 5), 'W');
	assert_time(F(P1_F_GAS_TIME), civil_utc(2024, 6, 1, 10, 0, 0), 'S');
	/* DST: the flag decides the repeated autumn hour */
	parse_ok(L("0-0:1.0.0(231029023000S)", "1-0:1.6.0(231029023000W)(01.000*kW)"));
	assert_time(F(P1_F_TIMESTAMP), civil_utc(2023, 10, 29, 0, 30, 0), 'S');
	assert_time(F(P1_F_MAX_DEMAND_TIME), civil_utc(2023, 10, 29, 1, 30, 0), 'W');
	assert_false(T->warnings & P1_WARN_AMBIGUOUS_TIME);
	/* any other letter is no flag (a corrupted 'T') */
	parse_ok(L("0-0:1.0.0(240102030405T)"));
	assert_time(F(P1_F_TIMESTAMP), civil_utc(2024, 1, 2, 2, 4, 5), 0);
	/* the /ESR5 meter's DLMS date-time */
	assert_int_equal(parse_full("ESR5\\TEST", true,
	                            L("1-3:0.2.8(50)", "0-0:1.0.0(07E8061C050A2B2B00FF8880)"), true,
	                            NULL),
	                 P1_OK);
	assert_time(F(P1_F_TIMESTAMP), civil_utc(2024, 6, 28, 8, 43, 43), 'S');
	assert_int_equal(F(P1_F_TIMESTAMP)->time.offset_s, 7200);
}

static void test_ambiguous_time(void **state)
{
	(void)state;
	unsigned line;
	assert_int_equal(
	        parse_full("ISk5\\2MT382-1000", true,
	                   L("1-0:1.8.1(00001.000*kWh)", "0-1:24.1.0(3)",
	                     "0-1:24.3.0(231029023000)(00)(60)(1)(0-1:24.2.1)(m3)", "(00001.011)"),
	                   false, &line),
	        P1_OK);
	assert_true(T->warnings & P1_WARN_AMBIGUOUS_TIME);
	assert_true(F(P1_F_GAS_TIME)->time.ambiguous);
	assert_int_equal(F(P1_F_GAS_TIME)->time.flag, 0);
	/* the policy of p1/time.h: summer time in the repeated hour */
	assert_int_equal(F(P1_F_GAS_TIME)->time.utc, civil_utc(2023, 10, 29, 0, 30, 0));
	/* an hour later it is not ambiguous */
	assert_int_equal(
	        parse_full("ISk5\\2MT382-1000", true,
	                   L("1-0:1.8.1(00001.000*kWh)", "0-1:24.1.0(3)",
	                     "0-1:24.3.0(231029033000)(00)(60)(1)(0-1:24.2.1)(m3)", "(00001.011)"),
	                   false, &line),
	        P1_OK);
	assert_false(T->warnings & P1_WARN_AMBIGUOUS_TIME);
	assert_int_equal(F(P1_F_GAS_TIME)->time.utc, civil_utc(2023, 10, 29, 2, 30, 0));
}

static void test_power_failure_log(void **state)
{
	(void)state;
	/* a single empty group */
	parse_ok(L("1-0:99.97.0()"));
	assert_int_equal(F(P1_F_FAILURE_LOG)->presence, P1_PRESENT);
	assert_int_equal(T->n_events, 0);
	assert_false(T->warnings & (P1_WARN_EVENT_COUNT | P1_WARN_BAD_VALUE));
	/* zero entries */
	parse_ok(L("1-0:99.97.0(0)(0-0:96.7.19)"));
	assert_int_equal(T->n_events, 0);
	assert_false(T->warnings & (P1_WARN_EVENT_COUNT | P1_WARN_BAD_VALUE));
	/* durations without unit */
	parse_ok(L("1-0:99.97.0(2)(0-0:96.7.19)(231030031500W)(5358478)(240215101010W)(23)"));
	assert_int_equal(T->n_events, 2);
	assert_int_equal(T->events[0].duration_s, 5358478);
	assert_int_equal(T->events[1].duration_s, 23);
	assert_true(T->warnings & P1_WARN_UNIT_ASSUMED);
	assert_false(T->warnings & P1_WARN_EVENT_COUNT);
	/* count not matching the pairs: the pairs are trusted */
	parse_ok(L("1-0:99.97.0(3)(0-0:96.7.19)(231030031500W)(0000000240*s)(240215101010W)("
	           "0000004321*s)"));
	assert_int_equal(T->n_events, 2);
	assert_true(T->warnings & P1_WARN_EVENT_COUNT);
	/* ten entries, the 4.0.4 example's 1-0:96.7.19 */
	char line[1024];
	size_t n = (size_t)snprintf(line, sizeof(line), "1-0:99.97.0(10)(1-0:96.7.19)");
	for (int i = 0; i < 10; i++)
		n += (size_t)snprintf(line + n, sizeof(line) - n, "(2401%02d101010W)(%010d*s)",
		                      i + 1, i + 1);
	parse_ok(L(line));
	assert_int_equal(T->n_events, 10);
	for (int i = 0; i < 10; i++) {
		assert_int_equal(T->events[i].end.utc, civil_utc(2024, 1, i + 1, 9, 10, 10));
		assert_int_equal(T->events[i].duration_s, i + 1);
	}
	assert_false(T->warnings & P1_WARN_EVENT_COUNT);
	/* newest first (Kaifa) comes out oldest first */
	parse_ok(L("1-0:99.97.0(3)(0-0:96.7.19)(240615120000S)(0000000030*s)(240215101010W)"
	           "(0000004321*s)(231030031500W)(0000000240*s)"));
	assert_int_equal(T->n_events, 3);
	assert_int_equal(T->events[0].end.utc, civil_utc(2023, 10, 30, 2, 15, 0));
	assert_int_equal(T->events[0].duration_s, 240);
	assert_int_equal(T->events[1].end.utc, civil_utc(2024, 2, 15, 9, 10, 10));
	assert_int_equal(T->events[2].end.utc, civil_utc(2024, 6, 15, 10, 0, 0));
	assert_int_equal(T->events[2].duration_s, 30);
	/* a log line that cannot be read never fails a telegram with CRC */
	parse_ok(L("1-0:99.97.0(2)(0-0:96.7.19)(garbage)(x)", "1-0:1.8.1(000001.000*kWh)"));
	assert_true(T->warnings & P1_WARN_BAD_VALUE);
	assert_num(F(P1_F_E_DEL_T1), 1000, 3, "kWh");
}

static void test_demand_history(void **state)
{
	(void)state;
	const char *hdr = "FLU5\\253000000_A";
	/* empty history with its trailing empty group */
	assert_int_equal(parse_full(hdr, true,
	                            L("0-0:96.1.4(50217)", "0-0:98.1.0(0)(1-0:1.6.0)(1-0:1.6.0)()"),
	                            true, NULL),
	                 P1_OK);
	assert_int_equal(F(P1_F_DEMAND_HISTORY)->presence, P1_PRESENT);
	assert_int_equal(T->n_demand, 0);
	assert_false(T->warnings & P1_WARN_BAD_VALUE);
	/* a month without data */
	assert_int_equal(
	        parse_full(hdr, true,
	                   L("0-0:96.1.4(50217)",
	                     "0-0:98.1.0(2)(1-0:1.6.0)(1-0:1.6.0)(230201000000W)(632525252525W)"
	                     "(00.000*kW)(230301000000W)(230214190000W)(02.500*kW)"),
	                   true, NULL),
	        P1_OK);
	assert_int_equal(T->n_demand, 2);
	assert_true(T->demand[0].period_valid);
	assert_false(T->demand[0].time_valid);
	assert_int_equal(T->demand[0].period.utc, civil_utc(2023, 1, 31, 23, 0, 0));
	assert_true(T->demand[1].time_valid);
	assert_int_equal(T->demand[1].time.utc, civil_utc(2023, 2, 14, 18, 0, 0));
	assert_int_equal(T->demand[1].value.mant, 2500);
	assert_non_null(strstr(json(), "\"timestamp\":null"));
	/* thirteen months */
	char line[2048];
	size_t n = (size_t)snprintf(line, sizeof(line), "0-0:98.1.0(13)(1-0:1.6.0)(1-0:1.6.0)");
	for (int i = 0; i < 13; i++) {
		int py = 23 + (i + 1) / 12, pm = (i + 1) % 12 + 1, ty = 23 + i / 12,
		    tm = i % 12 + 1;
		n += (size_t)snprintf(line + n, sizeof(line) - n,
		                      "(%02d%02d01000000W)(%02d%02d15180000W)(%02d.%03d*kW)", py,
		                      pm, ty, tm, i + 1, i * 7);
	}
	assert_int_equal(parse_full(hdr, true, L("0-0:96.1.4(50217)", line), true, NULL), P1_OK);
	assert_int_equal(T->n_demand, 13);
	for (int i = 0; i < 13; i++) {
		assert_true(T->demand[i].value_valid);
		assert_int_equal(T->demand[i].value.mant, (i + 1) * 1000 + i * 7);
		assert_int_equal(T->demand[i].time.utc,
		                 civil_utc(2023 + i / 12, i % 12 + 1, 15, 17, 0, 0));
	}
	/* the Hungarian billing snapshot is another layout: kept as unknown */
	assert_int_equal(
	        parse_full(
	                "SAG5SAG-METER", true,
	                L("0-0:42.0.0(5341473130)",
	                  "0-0:98.1.0(230701000000S)(000040.777*kWh)(000008.950*kWh)(03.564*kW)"),
	                true, NULL),
	        P1_OK);
	assert_int_equal(T->dialect, P1_DIALECT_HUNGARY);
	assert_int_equal(F(P1_F_DEMAND_HISTORY)->presence, P1_ABSENT);
	assert_int_equal(T->n_demand, 0);
	assert_int_equal(T->n_unknown, 1);
	assert_string_equal(T->unknown[0].obis, "0-0:98.1.0");
	assert_false(T->warnings & P1_WARN_BAD_VALUE);
}

static void test_iskra_ie_max_demand(void **state)
{
	(void)state;
	static const char *const lines[] = {"1-0:1.6.0(08.796*kW)(260102010000)",
	                                    "1-0:1.6.0(260102010000)(08.796*kW)"};
	for (int i = 0; i < 2; i++) {
		assert_int_equal(parse_full("ISk5\\2MIE5T-200", true,
		                            L("0-0:96.1.4(50217)", lines[i]), true, NULL),
		                 P1_OK);
		assert_num(F(P1_F_MAX_DEMAND), 8796, 3, "kW");
		assert_time(F(P1_F_MAX_DEMAND_TIME), civil_utc(2026, 1, 2, 0, 0, 0), 0);
		assert_false(T->warnings & P1_WARN_BAD_VALUE);
	}
}

static void test_mbus_channels(void **state)
{
	(void)state;
	/* types 7/3/4/2 on channels 1-4, lines in no particular order, gas on channel 2 */
	parse_ok(L("0-4:24.2.1(240101120000W)(000012.345*kWh)", "0-4:24.1.0(002)",
	           "0-2:24.2.1(240101115500W)(01234.567*m3)", "0-2:96.1.0(3232323232)",
	           "0-2:24.1.0(003)", "0-1:24.1.0(007)", "0-1:24.2.1(240101115000W)(00321.123*m3)",
	           "0-3:24.2.1(240101110000W)(00012.34*GJ)", "0-3:24.1.0(004)"));
	assert_int_equal(T->mbus[0].device_type, 7);
	assert_int_equal(T->mbus[1].device_type, 3);
	assert_int_equal(T->mbus[2].device_type, 4);
	assert_int_equal(T->mbus[3].device_type, 2);
	assert_num(F(P1_F_GAS), 1234567, 3, "m3");
	assert_text(F(P1_F_GAS_ID), "22222");
	assert_time(F(P1_F_GAS_TIME), civil_utc(2024, 1, 1, 10, 55, 0), 'W');
	assert_num(F(P1_F_WATER), 321123, 3, "m3");
	assert_num(F(P1_F_THERMAL), 1234, 2, "GJ");
	assert_num(F(P1_F_SLAVE), 12345, 3, "kWh");
	assert_num(F(P1_F_SLAVE_TYPE), 2, 0, NULL);

	/* Belgium: gas on 24.2.3, water on 24.2.1, id on 96.1.1, valve and relay */
	assert_int_equal(
	        parse_full("FLU5\\253000000_A", true,
	                   L("0-0:96.1.4(50217)", "0-1:24.1.0(007)", "0-1:96.1.1(3737373737)",
	                     "0-1:24.2.1(240115082500W)(00321.123*m3)", "0-2:24.1.0(003)",
	                     "0-2:96.1.1(3333333333)", "0-2:24.4.0(1)", "0-2:96.3.10(0)",
	                     "0-2:24.2.3(240115082500W)(01234.567*m3)", "0-0:96.1.1(3131)"),
	                   true, NULL),
	        P1_OK);
	assert_num(F(P1_F_GAS), 1234567, 3, "m3");
	assert_int_equal(T->mbus[1].value_obis_e, 3);
	assert_text(F(P1_F_GAS_ID), "33333");
	assert_num(F(P1_F_GAS_VALVE), 1, 0, NULL);
	assert_num(&T->mbus[1].relay, 0, 0, NULL);
	assert_num(F(P1_F_WATER), 321123, 3, "m3");
	assert_text(F(P1_F_WATER_ID), "77777");
	/* the E-meter id 0-0:96.1.1 is not an M-Bus id */
	assert_text(F(P1_F_EQUIPMENT_ID), "11");

	/* device types with and without leading zeros */
	parse_ok(L("0-1:24.1.0(3)", "0-1:24.2.1(240101115500W)(00001.001*m3)", "0-2:24.1.0(07)",
	           "0-2:24.2.1(240101115500W)(00002.002*m3)", "0-3:24.1.0(004)",
	           "0-3:24.2.1(240101115500W)(240.860*GJ)"));
	assert_int_equal(T->mbus[0].device_type, 3);
	assert_int_equal(T->mbus[1].device_type, 7);
	assert_int_equal(T->mbus[2].device_type, 4);
	assert_num(F(P1_F_THERMAL), 240860, 3, "GJ");

	/* a single value without timestamp; zero without unit is no reading */
	parse_ok(L("0-1:24.1.0(003)", "0-1:24.2.1(0)"));
	assert_int_equal(F(P1_F_GAS)->presence, P1_NULL);
	assert_int_equal(T->mbus[0].time.presence, P1_ABSENT);
	parse_ok(L("0-1:24.1.0(003)", "0-1:24.2.1(240101115500W)(00000000.0000)", "0-2:24.1.0(007)",
	           "0-2:24.2.1(240101115500W)(00000.000*m3)"));
	assert_int_equal(F(P1_F_GAS)->presence, P1_NULL);
	assert_num(F(P1_F_WATER), 0, 3, "m3"); /* zero with a unit is a reading */
	assert_false(T->warnings & P1_WARN_BAD_VALUE);
}

/* An M-Bus channel without a device behind it (corpus dsmr5/dsmr_parser-2: channel 1 gas with
 * no reading, the real gas meter on channel 2) must not hide the gas meter that has one. */
static void test_mbus_empty_gas_channel_first(void **state)
{
	(void)state;
	parse_ok(L("0-1:24.1.0(003)", "0-1:96.1.0()", "0-1:24.2.1(632525252525W)(00000000)",
	           "0-2:24.1.0(003)", "0-2:96.1.0(3232323232)",
	           "0-2:24.2.1(240102030000W)(00246.138*m3)"));
	assert_num(&T->mbus[1].value, 246138, 3, "m3");
	if (F(P1_F_GAS)->presence != P1_PRESENT)
		fail_msg("gas_delivered is %s although channel 2 has a reading",
		         F(P1_F_GAS)->presence == P1_NULL ? "null" : "absent");
	assert_num(F(P1_F_GAS), 246138, 3, "m3");
	assert_text(F(P1_F_GAS_ID), "22222");
	assert_time(F(P1_F_GAS_TIME), civil_utc(2024, 1, 2, 2, 0, 0), 'W');
}

static void test_duplicates(void **state)
{
	(void)state;
	parse_ok(L("0-0:1.0.0(240102030405W)", "1-0:1.8.1(000001.000*kWh)",
	           "0-0:1.0.0(240102030406W)", "1-0:1.8.1(000002.000*kWh)", "0-1:24.1.0(003)",
	           "0-1:24.1.0(007)"));
	assert_true(T->warnings & P1_WARN_DUPLICATE);
	assert_num(F(P1_F_E_DEL_T1), 1000, 3, "kWh");
	assert_time(F(P1_F_TIMESTAMP), civil_utc(2024, 1, 2, 2, 4, 5), 'W');
	assert_int_equal(T->mbus[0].device_type, 3);
	parse_ok(L("1-0:1.8.1(000001.000*kWh)"));
	assert_false(T->warnings & P1_WARN_DUPLICATE);

	/* without CRC a duplicate rejects the telegram, naming the line */
	unsigned line = 0;
	assert_int_equal(parse_full("ISk5\\2MT382-1000", true,
	                            L("1-0:1.8.1(00001.000*kWh)", "0-0:96.14.0(0001)",
	                              "1-0:1.8.1(00002.000*kWh)"),
	                            false, &line),
	                 P1_ERR_SYNTAX);
	assert_int_equal(line, 5);
	line = 0;
	assert_int_equal(
	        parse_full("ISk5\\2MT382-1000", false,
	                   L("0-1:96.1.0(3232)", "1-0:1.8.1(00001.000*kWh)", "0-1:96.1.0(3232)"),
	                   false, &line),
	        P1_ERR_SYNTAX);
	assert_int_equal(line, 4);
}

static void test_unknown_lines(void **state)
{
	(void)state;
	parse_ok(L("1-0:15.8.0(000800.817*kWh)", "7-0:23.1.0(01238.740*m3)(19-01-01 00:00:00)",
	           "0-0:96.50.1(ABC)", "7-0:23.1.0(01238.770*m3)(19-01-01 01:00:00)"));
	assert_int_equal(T->n_unknown, 4);
	assert_string_equal(T->unknown[0].obis, "1-0:15.8.0");
	assert_int_equal(T->unknown[0].raw.len, strlen("(000800.817*kWh)"));
	assert_memory_equal(T->unknown[0].raw.ptr, "(000800.817*kWh)", T->unknown[0].raw.len);
	assert_string_equal(T->unknown[1].obis, "7-0:23.1.0");
	assert_int_equal(T->warnings, 0); /* unknown is normal, not a warning */
	const char *j = json();
	assert_non_null(strstr(j,
	                       "\"unknown\":{\"1-0:15.8.0\":\"(000800.817*kWh)\",\"7-0:23.1.0\":"
	                       "[\"(01238.740*m3)(19-01-01 00:00:00)\",\"(01238.770*m3)(19-01-01 "
	                       "01:00:00)\"],\"0-0:96.50.1\":\"(ABC)\"}"));
	/* also without CRC: an unknown line is not an error */
	assert_int_equal(parse_full("ISk5\\2MT382-1000", true,
	                            L("1-0:1.8.1(00001.000*kWh)", "0-0:96.50.1(ABC)"), false, NULL),
	                 P1_OK);
}

static void test_slash_in_text(void **state)
{
	(void)state;
	/* through the decoder: the framer must not restart on a '/' inside a line */
	static char buf[4096];
	size_t n = build(
	        buf, sizeof(buf), "XXX5SLASH", true,
	        L("1-3:0.2.8(50)", "0-0:96.13.0(test-/-test)", "1-0:1.8.1(000010.007*kWh)"), true);
	struct out o;
	decode(buf, n, &o);
	assert_int_equal(o.valid, 1);
	assert_int_equal(o.invalid, 0);
	assert_non_null(strstr(o.s, "\"message_long\":\"test-/-test\""));
	free(o.s);
	n = build(buf, sizeof(buf), "ISk5\\2MT382-1003", true,
	          L("1-0:1.8.1(00010.008*kWh)", "0-0:96.13.0(test-/-test)"), false);
	decode(buf, n, &o);
	assert_int_equal(o.valid, 1);
	assert_int_equal(o.invalid, 0);
	assert_non_null(strstr(o.s, "\"dialect\":\"dsmr22\""));
	free(o.s);
}

static void test_dsmr22_gas(void **state)
{
	(void)state;
	/* value on the next line */
	assert_int_equal(parse_full("KMP5 ZABF000000000000", false,
	                            L("1-0:1.8.1(00010.009*kWh)", "0-1:24.1.0(03)",
	                              "0-1:24.3.0(240715120000)(08)(60)(1)(0-1:24.2.1)(m3)",
	                              "(00456.789)", "0-1:24.4.0(1)"),
	                            false, NULL),
	                 P1_OK);
	assert_num(F(P1_F_GAS), 456789, 3, "m3");
	assert_time(F(P1_F_GAS_TIME), civil_utc(2024, 7, 15, 10, 0, 0), 0);
	assert_num(F(P1_F_GAS_VALVE), 1, 0, NULL);
	assert_int_equal(T->mbus[0].value_obis_d, 3);
	/* on the same line */
	assert_int_equal(
	        parse_full("ISk5\\2MT382-1000", true,
	                   L("1-0:1.8.1(00010.010*kWh)", "0-1:24.1.0(3)",
	                     "0-1:24.3.0(240115120000)(00)(60)(1)(0-1:24.2.1)(m3)(00789.012)"),
	                   false, NULL),
	        P1_OK);
	assert_num(F(P1_F_GAS), 789012, 3, "m3");
	assert_time(F(P1_F_GAS_TIME), civil_utc(2024, 1, 15, 11, 0, 0), 0);
	/* heat in GJ through the same profile */
	assert_int_equal(
	        parse_full("ISk5\\2MT382-1000", true,
	                   L("1-0:1.8.1(00010.010*kWh)", "0-1:24.1.0(4)",
	                     "0-1:24.3.0(240115120000)(00)(60)(1)(0-1:24.2.1)(GJ)", "(0012.34)"),
	                   false, NULL),
	        P1_OK);
	assert_num(F(P1_F_THERMAL), 1234, 2, "GJ");
}

static void test_strict_without_crc(void **state)
{
	(void)state;
	unsigned line = 0;
	/* a printf template left in a simulator (corpus malformed/dsmrd-1) */
	assert_int_equal(parse_full("KMP5 KA6U000000000000", true,
	                            L("0-0:96.1.1(00000000000000)", "1-0:1.8.1(%f*kWh)",
	                              "1-0:1.8.2(00010.012*kWh)"),
	                            false, &line),
	                 P1_ERR_SYNTAX);
	assert_int_equal(line, 4);
	/* the same line in a telegram with CRC is kept as unknown and flagged */
	parse_ok(L("1-3:0.2.8(50)", "1-0:1.8.1(%f*kWh)", "1-0:1.8.2(000010.012*kWh)"));
	assert_int_equal(F(P1_F_E_DEL_T1)->presence, P1_ABSENT);
	assert_true(T->warnings & P1_WARN_BAD_VALUE);
	assert_int_equal(T->n_unknown, 1);
	assert_string_equal(T->unknown[0].obis, "1-0:1.8.1");
	assert_num(F(P1_F_E_DEL_T2), 10012, 3, "kWh");
	/* a line that is not OBIS at all, without CRC */
	line = 0;
	assert_int_equal(
	        parse_full("ISk5\\2MT382-1000", true,
	                   L("1-0:1.8.1(00001.000*kWh)", "garbage here", "0-0:96.14.0(0001)"),
	                   false, &line),
	        P1_ERR_SYNTAX);
	assert_int_equal(line, 4);
	/* no data lines at all */
	assert_int_equal(parse_full("ISk5\\2MT382-1000", true, L("", ""), false, &line),
	                 P1_ERR_SYNTAX);
	/* through the decoder: rejected with the line, offset of the frame */
	static char buf[1024];
	memcpy(buf, "\r\n\r\n", 4);
	size_t n = 4 + build(buf + 4, sizeof(buf) - 4, "KMP5 KA6U000000000000", true,
	                     L("0-0:96.1.1(00000000000000)", "1-0:1.8.1(%f*kWh)"), false);
	struct out o;
	decode(buf, n, &o);
	assert_int_equal(o.valid, 0);
	assert_string_equal(o.s,
	                    "{\"valid\":false,\"reason\":\"syntax\",\"offset\":4,\"line\":4}\n");
	free(o.s);
}

/* A text message broken over two physical lines (DSMR 4.0/4.2/5.0 spec examples in the corpus,
 * dsmr4/openhab-3, CRC valid): the continuation does not start with '('. */
static void test_text_over_two_lines(void **state)
{
	(void)state;
	parse_ok(L("1-3:0.2.8(40)", "0-0:96.13.0(48656C6C6F2C20", "776F726C6421)",
	           "1-0:1.8.1(000010.013*kWh)"));
	if (F(P1_F_MSG_LONG)->presence != P1_PRESENT)
		fail_msg("0-0:96.13.0 over two lines not read (%u unknown lines)", T->n_unknown);
	assert_text(F(P1_F_MSG_LONG), "Hello, world!");
	assert_int_equal(T->n_unknown, 0);
	assert_num(F(P1_F_E_DEL_T1), 10013, 3, "kWh");
}

/* Joining wrapped values must not swallow the next data line: a line that lost its ')' is
 * not the first half of a wrapped value when the next line starts with an OBIS code. Without
 * CRC such a line makes the telegram invalid (every line must read); with CRC the next line
 * is still decoded and no unit made of the next line's text appears. */
static void test_unclosed_group_not_joined(void **state)
{
	(void)state;
	unsigned line = 0;
	enum p1_error e = parse_full(
	        "ISk5\\2MT382-1000", true,
	        L("1-0:1.8.1(00123.456*kWh", "1-0:1.8.2(00234.567*kWh)", "0-0:96.14.0(0001)"),
	        false, &line);
	if (e != P1_ERR_SYNTAX)
		fail_msg("telegram without CRC with an unclosed group accepted: %s", json());
	assert_int_equal(line, 3);

	parse_ok(L("1-3:0.2.8(50)", "1-0:1.8.1(000123.456*kWh", "1-0:1.8.2(000234.567*kWh)"));
	assert_num(F(P1_F_E_DEL_T2), 234567, 3, "kWh");
	if (F(P1_F_E_DEL_T1)->presence == P1_PRESENT && F(P1_F_E_DEL_T1)->num.unit)
		assert_string_equal(F(P1_F_E_DEL_T1)->num.unit, "kWh");
}

/* One bit error turning the first character of a line into '!' (0x31 -> 0x21) must not make a
 * CRC telegram pass as a shorter telegram without CRC. The framer ends the frame at that '!'
 * and, when no DSMR 4+ marker came before it, accepts it as a DSMR 2.2 frame. */
static void test_bit_error_bang_not_accepted(void **state)
{
	(void)state;
	static char buf[2048];
	struct out o;
	/* a DSMR 5 telegram whose first line (the version line) is hit: the frame left has no
	 * data line, which the parser rejects */
	size_t n = build(
	        buf, sizeof(buf), "XXX5TEST", true,
	        L("1-3:0.2.8(50)", "0-0:1.0.0(240101120000W)", "1-0:1.8.1(000123.456*kWh)"), true);
	buf[strstr(buf, "1-3:0.2.8") - buf] ^= 0x10;
	decode(buf, n, &o);
	assert_int_equal(o.valid, 0);
	free(o.s);
	/* a Swedish telegram: CRC, no version line */
	n = build(buf, sizeof(buf), "ELL5\\253833635_A", true,
	          L("0-0:1.0.0(240101120000W)", "1-0:1.8.0(00001234.567*kWh)",
	            "1-0:2.8.0(00000012.345*kWh)", "1-0:1.7.0(0001.234*kW)",
	            "1-0:2.7.0(0000.000*kW)"),
	          true);
	decode(buf, n, &o);
	assert_int_equal(o.valid, 1);
	assert_non_null(strstr(o.s, "\"dialect\":\"sweden\""));
	free(o.s);
	char *p = strstr(buf, "1-0:2.8.0");
	*p ^= 0x10; /* '1' -> '!' */
	decode(buf, n, &o);
	if (o.valid)
		fail_msg("a telegram with a bit error was accepted: %s", o.s);
	free(o.s);
}

static void test_dialects(void **state)
{
	(void)state;
	const struct {
		const char *hdr;
		const char *const *lines;
		bool crc;
		enum p1_dialect want;
	} cases[] = {
	        {"ISk5\\2MT382-1000", L("1-0:1.8.1(00001.000*kWh)"), false, P1_DIALECT_DSMR22},
	        {"KFM5KAIFA-METER", L("1-3:0.2.8(42)", "1-0:1.8.1(000001.000*kWh)"), true,
	         P1_DIALECT_DSMR4},
	        {"XMX5LGBBFG10", L("1-3:0.2.8(40)"), true, P1_DIALECT_DSMR4},
	        {"ISK5\\2M550T-1012", L("1-3:0.2.8(50)"), true, P1_DIALECT_DSMR5},
	        {"FLU5\\253769484_A", L("0-0:96.1.4(50217)"), true, P1_DIALECT_FLUVIUS},
	        {"Lux5\\253663629_D", L("1-3:0.2.8(42)", "0-0:42.0.0(5341473130)"), true,
	         P1_DIALECT_SMARTY},
	        {"SAG5SAG-METER", L("0-0:42.0.0(5341473130)", "1-0:1.8.0(000001.000*kWh)"), true,
	         P1_DIALECT_HUNGARY},
	        {"ESY5Q3DB1024 V3.04", L("1-0:1.8.0*255(00000001.0000000*kWh)"), false,
	         P1_DIALECT_EASYMETER},
	        {"ACE5ACE4KGPRS", L("1-0:1.8.0*255(00001.000*kWh)"), false, P1_DIALECT_ACE4000},
	        {"ELL5\\253833635_A",
	         L("1-0:1.8.0(00001234.567*kWh)", "1-0:2.8.0(00000012.345*kWh)"), true,
	         P1_DIALECT_SWEDEN},
	        {"ABC5XYZ", L("1-0:1.8.1(000001.000*kWh)"), true, P1_DIALECT_GENERIC},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_int_equal(parse_full(cases[i].hdr, true, cases[i].lines, cases[i].crc, NULL),
		                 P1_OK);
		if (T->dialect != cases[i].want)
			fail_msg("/%s: dialect %s, expected %s", cases[i].hdr,
			         p1_dialect_name(T->dialect), p1_dialect_name(cases[i].want));
	}
	/* forced */
	OPTS.force_dialect = P1_DIALECT_FLUVIUS;
	parse_ok(L("1-3:0.2.8(50)"));
	assert_int_equal(T->dialect, P1_DIALECT_FLUVIUS);
	p1_parse_opts_init(&OPTS);
	/* names */
	for (int d = 0; d < P1_DIALECT_COUNT; d++)
		assert_int_equal(p1_dialect_by_name(p1_dialect_name((enum p1_dialect)d)), d);
	assert_int_equal(p1_dialect_by_name("nope"), -1);
	assert_string_equal(p1_dialect_name(P1_DIALECT_COUNT), "unknown");
}

/* ---- the telegram object, numbers, the OBIS table ---- */

static void test_reuse_and_bounds(void **state)
{
	(void)state;
	assert_int_equal(parse_file("t2-dsmr5.txt"), P1_OK);
	assert_true(T->mbus[1].present);
	/* refilled by a smaller telegram: nothing of the first one remains */
	parse_ok(L("1-3:0.2.8(50)", "1-0:1.8.1(000001.000*kWh)"));
	assert_false(T->mbus[0].present);
	assert_false(T->mbus[1].present);
	assert_int_equal(T->n_events, 0);
	assert_int_equal(F(P1_F_GAS)->presence, P1_ABSENT);
	assert_int_equal(F(P1_F_MSG_LONG)->presence, P1_ABSENT);
	for (int f = 0; f < P1_FIELD_COUNT; f++)
		if (f != P1_F_P1_VERSION && f != P1_F_E_DEL_T1 && T->fields[f].presence)
			fail_msg("field %s left over", p1_field_info((enum p1_field)f)->name);

	/* a telegram larger than the object holds */
	struct p1_telegram *small = p1_telegram_new(64);
	assert_non_null(small);
	static char buf[1024];
	size_t n =
	        build(buf, sizeof(buf), "XXX5TEST", true,
	              L("1-3:0.2.8(50)", "1-0:1.8.1(000001.000*kWh)", "1-0:1.8.2(000002.000*kWh)",
	                "1-0:2.8.1(000001.000*kWh)", "1-0:2.8.2(000001.000*kWh)"),
	              true);
	assert_true(n > 128); /* more than p1_telegram_new(64) holds, its margin included */
	assert_int_equal(p1_parse(small, buf, n, true, 0, &OPTS, NULL), P1_ERR_TOO_LONG);
	p1_telegram_free(small);
	assert_null(p1_telegram_free(NULL));

	/* parsing allocates nothing */
	n = build(buf, sizeof(buf), "XXX5TEST", true,
	          L("1-3:0.2.8(50)", "0-0:96.13.0(48656C6C6F)", "1-0:1.8.1(000001.000*kWh)",
	            "1-0:3.7.0(00.100*kVar)", "1-0:1.7.0(00.100*xyz)", "9-9:9.9.9(1)"),
	          true);
	struct mallinfo2 before = mallinfo2();
	for (int i = 0; i < 100; i++)
		assert_int_equal(p1_parse(T, buf, n, false, 0, &OPTS, NULL), P1_OK);
	struct mallinfo2 after = mallinfo2();
	assert_int_equal(after.uordblks, before.uordblks);
	/* an unknown unit is kept as written */
	assert_num(F(P1_F_P_DEL), 100, 3, "xyz");
}

static void test_numbers(void **state)
{
	(void)state;
	char buf[64];
	struct p1_num n = {.mant = -63, .scale = 3};
	assert_int_equal(p1_num_format(&n, buf, sizeof(buf)), 6);
	assert_string_equal(buf, "-0.063");
	n = (struct p1_num){.mant = 1033309, .scale = 3};
	assert_int_equal(p1_num_format(&n, buf, sizeof(buf)), 8);
	assert_string_equal(buf, "1033.309");
	n = (struct p1_num){.mant = 0, .scale = 3};
	p1_num_format(&n, buf, sizeof(buf));
	assert_string_equal(buf, "0.000");
	n = (struct p1_num){.mant = 5, .scale = 0};
	p1_num_format(&n, buf, sizeof(buf));
	assert_string_equal(buf, "5");
	n = (struct p1_num){.mant = INT64_MIN + 1, .scale = 0};
	assert_int_equal(p1_num_format(&n, buf, sizeof(buf)), 20);
	assert_string_equal(buf, "-9223372036854775807");
	/* truncated output, snprintf-style */
	n = (struct p1_num){.mant = 1033309, .scale = 3};
	assert_int_equal(p1_num_format(&n, buf, 4), 8);
	assert_string_equal(buf, "103");

	int64_t v;
	n = (struct p1_num){.mant = 1033309, .scale = 3};
	assert_true(p1_num_rescale(&n, 1, &v));
	assert_int_equal(v, 10333);
	assert_true(p1_num_rescale(&n, 5, &v));
	assert_int_equal(v, 103330900);
	n = (struct p1_num){.mant = -1999, .scale = 3};
	assert_true(p1_num_rescale(&n, 0, &v));
	assert_int_equal(v, -1); /* toward zero */
	n = (struct p1_num){.mant = INT64_MAX / 10 + 1, .scale = 0};
	assert_false(p1_num_rescale(&n, 1, &v));

	/* exact values through the parser: no floating point on the way */
	parse_ok(L("1-0:1.8.0(00000001.0000001*kWh)", "1-0:2.8.0(999999999.999*kWh)"));
	assert_num(F(P1_F_E_DEL_TOTAL), 10000001, 7, "kWh");
	assert_num(F(P1_F_E_RET_TOTAL), 999999999999, 3, "kWh");
	assert_non_null(strstr(json(), "\"energy_delivered_lux\":1.0000001,"));
	/* too many digits for 64 bits: a bad value, not a wrong one */
	parse_ok(L("1-0:1.8.1(99999999999999999999*kWh)"));
	assert_int_equal(F(P1_F_E_DEL_T1)->presence, P1_ABSENT);
	assert_true(T->warnings & P1_WARN_BAD_VALUE);
}

static void test_obis_table(void **state)
{
	(void)state;
	size_t n;
	const struct p1_obis_entry *t = p1_obis_table(&n);
	assert_true(n > 50);
	for (size_t i = 0; i < n; i++) {
		if (i)
			assert_true(t[i - 1].key < t[i].key);
		assert_ptr_equal(p1_obis_lookup(t[i].key), &t[i]);
		unsigned a, b, c, d, e;
		assert_int_equal(sscanf(t[i].code, "%u-%u:%u.%u.%u", &a, &b, &c, &d, &e), 5);
		assert_true(t[i].key == P1_OBIS_KEY(a, b, c, d, e));
		assert_true(t[i].field < P1_FIELD_COUNT);
	}
	assert_null(p1_obis_lookup(P1_OBIS_KEY(9, 9, 9, 9, 9)));
	for (int f = 0; f < P1_FIELD_COUNT; f++) {
		const struct p1_field_info *fi = p1_field_info((enum p1_field)f);
		assert_int_equal(p1_field_by_name(fi->name), f);
		const char *codes[8];
		if (p1_field_obis((enum p1_field)f, codes, 8) == 0)
			fail_msg("field %s has no OBIS code", fi->name);
	}
	assert_int_equal(p1_field_by_name("no_such_field"), -1);
}

static void test_json_strings(void **state)
{
	(void)state;
	char buf[64];
	assert_int_equal(p1_json_string("a\"b\\c\x01\x7f", 7, buf, sizeof(buf)),
	                 strlen("\"a\\\"b\\\\c\\u0001\\u007f\""));
	assert_string_equal(buf, "\"a\\\"b\\\\c\\u0001\\u007f\"");
	/* a text message with control characters comes out escaped */
	parse_ok(L("0-0:96.13.0(line\"1)", "1-0:1.8.1(000001.000*kWh)"));
	assert_non_null(strstr(json(), "\"message_long\":\"line\\\"1\""));
	/* per field */
	assert_int_equal(p1_json_value(T, P1_F_E_DEL_T1, buf, sizeof(buf)), 5);
	assert_string_equal(buf, "1.000");
	p1_json_value(T, P1_F_GAS, buf, sizeof(buf));
	assert_string_equal(buf, "null");
	/* flags select the parts */
	size_t k = p1_json_telegram(T, 0, buf, sizeof(buf));
	assert_true(k < sizeof(buf));
	assert_null(strstr(buf, "\"valid\""));
	assert_null(strstr(buf, "\"mbus\""));
	/* a too small buffer is always terminated and the needed length returned */
	char small[10];
	size_t need = p1_json_telegram(T, P1_JSON_ALL, small, sizeof(small));
	assert_true(need > sizeof(small));
	assert_int_equal(strlen(small), sizeof(small) - 1);
}

/* Meter bytes are escaped one by one; UTF-8 text of ours passes through; both snprintf-style. */
static void test_json_string_utf8(void **state)
{
	(void)state;
	char buf[64];
	const char *m3 = "m\xc2\xb3 \"q\"\x01";
	assert_int_equal(p1_json_string_utf8(m3, strlen(m3), buf, sizeof(buf)), 17);
	assert_string_equal(buf, "\"m\xc2\xb3 \\\"q\\\"\\u0001\"");
	assert_int_equal(p1_json_string(m3, strlen(m3), buf, sizeof(buf)), 27);
	assert_string_equal(buf, "\"m\\u00c2\\u00b3 \\\"q\\\"\\u0001\"");
	/* too small: the length it needs, a NUL-terminated prefix */
	assert_int_equal(p1_json_string_utf8(m3, strlen(m3), buf, 4), 17);
	assert_int_equal(strlen(buf), 3);
}

/* ---- lines that cannot be read, and the API's edges ---- */

/* A failure log with a group left over after its last (time, duration) pair cannot be read:
 * no entry of it is kept, the line is kept raw and flagged; without CRC it is the line at
 * fault (also when the caller does not ask which line). */
static void test_event_log_odd_group(void **state)
{
	(void)state;
	static const char log[] =
	        "1-0:99.97.0(2)(0-0:96.7.19)(231030031500W)(0000000240*s)(240215101010W)";
	parse_ok(L("1-3:0.2.8(50)", log, "1-0:1.8.1(000001.000*kWh)"));
	assert_int_equal(F(P1_F_FAILURE_LOG)->presence, P1_ABSENT);
	assert_int_equal(T->n_events, 0);
	assert_true(T->warnings & P1_WARN_BAD_VALUE);
	assert_int_equal(T->n_unknown, 1);
	assert_string_equal(T->unknown[0].obis, "1-0:99.97.0");
	assert_num(F(P1_F_E_DEL_T1), 1000, 3, "kWh");
	/* an empty group left over is no entry, not an error */
	parse_ok(L("1-0:99.97.0(1)(0-0:96.7.19)(231030031500W)(0000000240*s)()"));
	assert_int_equal(T->n_events, 1);
	assert_false(T->warnings & P1_WARN_BAD_VALUE);

	unsigned line = 0;
	assert_int_equal(parse_full("ISk5\\2MT382-1000", true, L("1-0:1.8.1(00001.000*kWh)", log),
	                            false, &line),
	                 P1_ERR_SYNTAX);
	assert_int_equal(line, 4);
	static char buf[1024];
	size_t n = build(buf, sizeof(buf), "ISk5\\2MT382-1000", true,
	                 L("1-0:1.8.1(00001.000*kWh)", log), false);
	assert_int_equal(p1_parse(T, buf, n, false, 0, &OPTS, NULL), P1_ERR_SYNTAX);
}

/* A demand history with a value that is not a number is all or nothing: no month kept. */
static void test_demand_bad_value(void **state)
{
	(void)state;
	assert_int_equal(parse_full("FLU5\\253000000_A", true,
	                            L("0-0:96.1.4(50217)",
	                              "0-0:98.1.0(2)(1-0:1.6.0)(1-0:1.6.0)(230201000000W)"
	                              "(230114190000W)(01.000*kW)(230301000000W)(230214190000W)"
	                              "(2,5*kW)"),
	                            true, NULL),
	                 P1_OK);
	assert_int_equal(F(P1_F_DEMAND_HISTORY)->presence, P1_ABSENT);
	assert_int_equal(T->n_demand, 0);
	assert_true(T->warnings & P1_WARN_BAD_VALUE);
	assert_int_equal(T->n_unknown, 1);
	assert_string_equal(T->unknown[0].obis, "0-0:98.1.0");
}

/* M-Bus lines read once each: a second value, valve or relay line is a duplicate (the first
 * kept; fatal without CRC), a valve or relay that is not a number is a bad value, and a DSMR
 * 2.2 profile line whose value never comes (six groups, no continuation) has no reading. */
static void test_mbus_line_errors(void **state)
{
	(void)state;
	parse_ok(L("0-1:24.1.0(003)", "0-1:24.2.1(240101120000W)(00001.000*m3)",
	           "0-1:24.2.1(240101130000W)(00002.000*m3)", "0-1:24.4.0(1)", "0-1:24.4.0(0)",
	           "0-1:96.3.10(1)", "0-1:96.3.10(0)"));
	assert_true(T->warnings & P1_WARN_DUPLICATE);
	assert_false(T->warnings & P1_WARN_BAD_VALUE);
	assert_num(F(P1_F_GAS), 1000, 3, "m3");
	assert_time(F(P1_F_GAS_TIME), civil_utc(2024, 1, 1, 11, 0, 0), 'W');
	assert_num(&T->mbus[0].valve, 1, 0, NULL);
	assert_num(&T->mbus[0].relay, 1, 0, NULL);
	assert_num(F(P1_F_GAS_VALVE), 1, 0, NULL);

	parse_ok(L("0-1:24.1.0(003)", "0-1:24.2.1(240101120000W)(00001.000*m3)", "0-1:24.4.0(x)",
	           "0-1:96.3.10(on)"));
	assert_true(T->warnings & P1_WARN_BAD_VALUE);
	assert_false(T->warnings & P1_WARN_DUPLICATE);
	assert_int_equal(T->mbus[0].valve.presence, P1_ABSENT);
	assert_int_equal(T->mbus[0].relay.presence, P1_ABSENT);
	assert_int_equal(T->n_unknown, 2);
	assert_string_equal(T->unknown[0].obis, "0-1:24.4.0");
	assert_string_equal(T->unknown[1].obis, "0-1:96.3.10");
	assert_num(F(P1_F_GAS), 1000, 3, "m3");

	unsigned line = 0;
	assert_int_equal(parse_full("ISk5\\2MT382-1000", true,
	                            L("1-0:1.8.1(00001.000*kWh)", "0-1:24.4.0(1)", "0-1:24.4.0(1)"),
	                            false, &line),
	                 P1_ERR_SYNTAX);
	assert_int_equal(line, 5);

	/* the DSMR 2.2 profile without its value */
	static const char *const profile[] = {"1-0:1.8.1(00010.010*kWh)", "0-1:24.1.0(3)",
	                                      "0-1:24.3.0(240115120000)(00)(60)(1)(0-1:24.2.1)(m3)",
	                                      "0-1:24.4.0(1)", NULL};
	assert_int_equal(parse_full("ISk5\\2MT382-1000", true, profile, true, NULL), P1_OK);
	assert_int_equal(F(P1_F_GAS)->presence, P1_ABSENT);
	assert_int_equal(T->mbus[0].value.presence, P1_ABSENT);
	assert_true(T->warnings & P1_WARN_BAD_VALUE);
	assert_num(F(P1_F_GAS_VALVE), 1, 0, NULL);
	line = 0;
	assert_int_equal(parse_full("ISk5\\2MT382-1000", true, profile, false, &line),
	                 P1_ERR_SYNTAX);
	assert_int_equal(line, 5);
}

/* An OBIS value above 255 is no code: the line is kept under its text and flagged. */
static void test_obis_value_range(void **state)
{
	(void)state;
	parse_ok(L("1-0:256.8.1(000001.000*kWh)", "1-0:1.8.1(000002.000*kWh)"));
	assert_true(T->warnings & P1_WARN_BAD_VALUE);
	assert_int_equal(T->n_unknown, 1);
	assert_string_equal(T->unknown[0].obis, "1-0:256.8.1");
	assert_num(F(P1_F_E_DEL_T1), 2000, 3, "kWh");
	parse_ok(L("1-0:1.8.1(000002.000*kWh)", "1-0:1.8.1000(000001.000*kWh)"));
	assert_int_equal(T->n_unknown, 1);
	assert_true(T->warnings & P1_WARN_BAD_VALUE);
	unsigned line = 0;
	assert_int_equal(parse_full("ISk5\\2MT382-1000", true,
	                            L("1-0:1.8.1(00001.000*kWh)", "1-0:1.8.256(00001.000*kWh)"),
	                            false, &line),
	                 P1_ERR_SYNTAX);
	assert_int_equal(line, 4);
}

/* A group that is not closed and whose next line cannot complete it (no ')' there) is not
 * joined: a continuation line that follows is read as its next group, and the line, bad, is
 * kept raw from its first group through the continuation. */
static void test_unjoined_continuation(void **state)
{
	(void)state;
	parse_ok(L("1-3:0.2.8(50)", "0-0:96.13.0(3031", "(3233", "1-0:1.8.1(000001.000*kWh)"));
	assert_int_equal(F(P1_F_MSG_LONG)->presence, P1_ABSENT);
	assert_true(T->warnings & P1_WARN_BAD_VALUE);
	assert_int_equal(T->n_unknown, 1);
	assert_string_equal(T->unknown[0].obis, "0-0:96.13.0");
	assert_int_equal(T->unknown[0].raw.len, strlen("(3031\r\n(3233"));
	assert_memory_equal(T->unknown[0].raw.ptr, "(3031\r\n(3233", T->unknown[0].raw.len);
	assert_num(F(P1_F_E_DEL_T1), 1000, 3, "kWh");
}

/* p1_telegram_copy needs a destination at least as large as the source; what it copies points
 * into the destination's own storage, a demand month without value included. */
static void test_copy(void **state)
{
	(void)state;
	assert_int_equal(parse_full("FLU5\\253000000_A", true,
	                            L("0-0:96.1.4(50217)", "0-0:96.13.0(48656C6C6F)",
	                              "0-0:98.1.0(1)(1-0:1.6.0)(1-0:1.6.0)(230201000000W)"
	                              "(632525252525W)()",
	                              "1-0:1.8.1(000001.000*kWh)"),
	                            true, NULL),
	                 P1_OK);
	assert_int_equal(T->n_demand, 1);
	assert_false(T->demand[0].value_valid);
	struct p1_telegram *small = p1_telegram_new(CAP / 2), *big = p1_telegram_new(CAP);
	assert_non_null(small);
	assert_non_null(big);
	assert_false(p1_telegram_copy(small, T));
	assert_true(p1_telegram_copy(big, T));
	const struct p1_value *msg = &big->fields[P1_F_MSG_LONG];
	assert_int_equal(msg->presence, P1_PRESENT);
	assert_memory_equal(msg->text.ptr, "Hello", 5);
	assert_true(msg->text.ptr >= big->arena && msg->text.ptr < big->arena + big->cap);
	assert_true(big->header.ptr >= big->raw && big->header.ptr < big->raw + big->cap);
	assert_int_equal(big->n_demand, 1);
	assert_null(big->demand[0].value.unit);
	assert_int_equal(big->dialect, P1_DIALECT_FLUVIUS);
	p1_telegram_free(small);
	p1_telegram_free(big);
}

/* The number helpers at their edges: a '+' sign, rescaling that would overflow below zero,
 * formatting scales of 20 and more (not from the parser, which keeps 18 digits at most), and
 * asking only for the length. */
static void test_number_edges(void **state)
{
	(void)state;
	parse_ok(L("1-0:1.8.1(+000123.456*kWh)", "1-0:2.7.0(+00.000*kW)"));
	assert_num(F(P1_F_E_DEL_T1), 123456, 3, "kWh");
	assert_num(F(P1_F_P_RET), 0, 3, "kW");
	assert_false(T->warnings & P1_WARN_BAD_VALUE);

	int64_t v;
	struct p1_num n = {.mant = INT64_MIN / 10 - 1, .scale = 0};
	assert_false(p1_num_rescale(&n, 1, &v));
	n.mant = INT64_MIN / 10;
	assert_true(p1_num_rescale(&n, 1, &v));
	assert_int_equal(v, INT64_MIN / 10 * 10);

	char buf[64];
	n = (struct p1_num){.mant = -5, .scale = 21};
	assert_int_equal(p1_num_format(&n, buf, sizeof(buf)), 24);
	assert_string_equal(buf, "-0.000000000000000000005");
	n = (struct p1_num){.mant = 1033309, .scale = 3};
	assert_int_equal(p1_num_format(&n, NULL, 0), 8);
	/* a scale wider than the formatter's room stops at its room, NUL-terminated */
	n = (struct p1_num){.mant = 7, .scale = 200};
	memset(buf, 'x', sizeof(buf));
	size_t len = p1_num_format(&n, buf, sizeof(buf));
	assert_true(len < sizeof(buf));
	assert_int_equal(strlen(buf), len);
	assert_int_equal(buf[len - 1], '7');
}

static int run_focused(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_json_string_utf8),
	        cmocka_unit_test(test_worked_t2),
	        cmocka_unit_test(test_worked_t3),
	        cmocka_unit_test(test_fluvius_threshold_sentinels),
	        cmocka_unit_test(test_worked_t4),
	        cmocka_unit_test(test_header_blank_line),
	        cmocka_unit_test(test_header_spaces),
	        cmocka_unit_test(test_obis_suffix_and_typos),
	        cmocka_unit_test(test_double_parentheses),
	        cmocka_unit_test(test_empty_values),
	        cmocka_unit_test(test_missing_units),
	        cmocka_unit_test(test_unit_without_star),
	        cmocka_unit_test(test_wh_and_w),
	        cmocka_unit_test(test_unit_spellings),
	        cmocka_unit_test(test_one_pass_lines),
	        cmocka_unit_test(test_negative_values),
	        cmocka_unit_test(test_hex_and_plain),
	        cmocka_unit_test(test_sentinel_timestamps),
	        cmocka_unit_test(test_time_flags),
	        cmocka_unit_test(test_ambiguous_time),
	        cmocka_unit_test(test_power_failure_log),
	        cmocka_unit_test(test_demand_history),
	        cmocka_unit_test(test_iskra_ie_max_demand),
	        cmocka_unit_test(test_mbus_channels),
	        cmocka_unit_test(test_mbus_empty_gas_channel_first),
	        cmocka_unit_test(test_duplicates),
	        cmocka_unit_test(test_unknown_lines),
	        cmocka_unit_test(test_slash_in_text),
	        cmocka_unit_test(test_dsmr22_gas),
	        cmocka_unit_test(test_strict_without_crc),
	        cmocka_unit_test(test_text_over_two_lines),
	        cmocka_unit_test(test_unclosed_group_not_joined),
	        cmocka_unit_test(test_bit_error_bang_not_accepted),
	        cmocka_unit_test(test_dialects),
	        cmocka_unit_test(test_reuse_and_bounds),
	        cmocka_unit_test(test_numbers),
	        cmocka_unit_test(test_obis_table),
	        cmocka_unit_test(test_json_strings),
	        cmocka_unit_test(test_event_log_odd_group),
	        cmocka_unit_test(test_demand_bad_value),
	        cmocka_unit_test(test_mbus_line_errors),
	        cmocka_unit_test(test_obis_value_range),
	        cmocka_unit_test(test_unjoined_continuation),
	        cmocka_unit_test(test_copy),
	        cmocka_unit_test(test_number_edges),
	};
	return cmocka_run_group_tests_name("parse", tests, setup, teardown);
}

int main(void)
{
	int r = run_focused();
	r |= run_fixtures();
	return r ? 1 : 0;
}
