/* test_json.c - unit tests for the JSON output (p1/json.h).
 *
 * - field names are plain identifiers ([a-z0-9_]): json.c writes them as keys quoted at
 *   compile time, without escaping;
 * - a telegram built here with every kind of member (escapes in meter text, events with and
 *   without a duration, demand entries with missing parts, M-Bus channels with null and absent
 *   members, unknown codes seen more than once, encrypted, with and without CRC) against JSON
 *   written out by hand, for every combination of flags;
 * - p1_json_value, p1_json_string and p1_json_string_utf8 against hand-written JSON;
 * - every $P1_TEST_DATA/NAME.txt with a NAME.json beside it: the output (as test_parse.c
 *   builds it) equals the golden file;
 * - the contract of every function, for all of the above and for every telegram of the shared
 *   corpus ($P1_SHARED_TELEGRAMS, skipped when absent): for every cap from 0 to the full
 *   length + 1 the same return value, a NUL-terminated prefix of the full output, and
 *   nothing written at or past cap.
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <cmocka.h>

#include "p1/decoder.h"
#include "p1/json.h"
#include "p1/telegram.h"

#include "unit_util.h"

#define GUARD 16 /* bytes past cap that must stay untouched */
#define FILL 0xA5

/* ---- the contract ---- */

struct render {
	enum { R_TELEGRAM, R_VALUE, R_STRING, R_STRING_UTF8 } what;
	const struct p1_telegram *t;
	unsigned flags;
	enum p1_field field;
	const char *s;
	size_t len;
};

static size_t render(const struct render *r, char *buf, size_t cap)
{
	switch (r->what) {
	case R_TELEGRAM:
		return p1_json_telegram(r->t, r->flags, buf, cap);
	case R_VALUE:
		return p1_json_value(r->t, r->field, buf, cap);
	case R_STRING:
		return p1_json_string(r->s, r->len, buf, cap);
	default:
		return p1_json_string_utf8(r->s, r->len, buf, cap);
	}
}

/* The full output (malloc'd), after checking the contract at every cap. */
static char *check_contract(const struct render *r)
{
	size_t need = render(r, NULL, 0);
	char *full = malloc(need + 1 + GUARD), *buf = malloc(need + 1 + GUARD);
	assert_non_null(full);
	assert_non_null(buf);
	memset(full, FILL, need + 1 + GUARD);
	assert_int_equal(render(r, full, need + 1), need);
	assert_int_equal(strlen(full), need);
	for (size_t i = need + 1; i < need + 1 + GUARD; i++)
		assert_int_equal((unsigned char)full[i], FILL);
	for (size_t cap = 0; cap <= need + 1; cap++) {
		memset(buf, FILL, need + 1 + GUARD);
		size_t n = render(r, buf, cap);
		if (n != need)
			fail_msg("cap %zu: returned %zu, the full output is %zu", cap, n, need);
		if (cap) {
			size_t k = need < cap ? need : cap - 1;
			if (memcmp(buf, full, k) || buf[k] != 0)
				fail_msg("cap %zu: not a NUL-terminated prefix of %s", cap, full);
		}
		for (size_t i = cap; i < cap + GUARD; i++)
			if ((unsigned char)buf[i] != FILL)
				fail_msg("cap %zu: byte %zu written", cap, i);
	}
	free(buf);
	return full;
}

static void expect(const struct render *r, const char *want)
{
	char *got = check_contract(r);
	if (strcmp(got, want)) {
		size_t i = 0;
		while (got[i] && got[i] == want[i])
			i++;
		fail_msg("JSON differs at character %zu\nexpected: %s\nactual:   %s", i, want, got);
	}
	free(got);
}

static void expect_telegram(const struct p1_telegram *t, unsigned flags, const char *want)
{
	expect(&(struct render){R_TELEGRAM, .t = t, .flags = flags}, want);
}

static void expect_field(const struct p1_telegram *t, enum p1_field field, const char *want)
{
	expect(&(struct render){R_VALUE, .t = t, .field = field}, want);
}

/* ---- field names ---- */

static void test_field_names_plain(void **state)
{
	(void)state;
	for (int f = 0; f < P1_FIELD_COUNT; f++) {
		const char *name = p1_field_info((enum p1_field)f)->name;
		assert_true(name[0] != 0);
		for (const char *p = name; *p; p++)
			if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
				fail_msg("field %d: name \"%s\" is not [a-z0-9_]: json.c writes it "
				         "unescaped",
				         f, name);
		/* the same as escaping it */
		char want[128], got[128];
		snprintf(want, sizeof(want), "\"%s\"", name);
		p1_json_string(name, strlen(name), got, sizeof(got));
		assert_string_equal(got, want);
	}
}

/* ---- a telegram built here ---- */

/* A telegram with nothing in it (not even a header), to fill in. */
static struct p1_telegram *new_telegram(void)
{
	struct p1_telegram *t = calloc(1, sizeof(*t));
	assert_non_null(t);
	return t;
}

static struct p1_time at(int64_t utc, int32_t offset_s)
{
	return (struct p1_time){.utc = utc, .offset_s = offset_s, .flag = 'W'};
}

static struct p1_text text(const char *s, size_t n)
{
	return (struct p1_text){s, (uint16_t)n};
}

static struct p1_num num(int64_t mant, uint8_t scale, const char *unit)
{
	return (struct p1_num){.mant = mant, .scale = scale, .unit = unit};
}

static const char msg[] = "a\"b\\c\x01\n\x1f\x7f\x80\xc3\xa9\xff~ z";
#define MSG_JSON "\"a\\\"b\\\\c\\u0001\\u000a\\u001f\\u007f\\u0080\\u00c3\\u00a9\\u00ff~ z\""

static struct p1_telegram *full_telegram(void)
{
	struct p1_telegram *t = new_telegram();
	t->dialect = P1_DIALECT_DSMR5;
	t->encrypted = true;
	t->has_crc = true;
	t->crc = 0x0A1B;
	t->header = text("ISK5\\2M550T \"x\"", 15);

	t->fields[P1_F_P1_VERSION] = (struct p1_value){P1_PRESENT, .text = text("50", 2)};
	t->fields[P1_F_TIMESTAMP] =
	        (struct p1_value){P1_PRESENT, .time = at(civil_utc(2024, 3, 31, 12, 0, 0), 7200)};
	t->fields[P1_F_E_DEL_T1] = (struct p1_value){P1_PRESENT, .num = num(12345678, 3, "kWh")};
	t->fields[P1_F_P_RET] = (struct p1_value){P1_PRESENT, .num = num(-63, 3, "kW")};
	t->fields[P1_F_MAX_DEMAND_TIME].presence = P1_NULL;
	t->fields[P1_F_DEMAND_HISTORY].presence = P1_PRESENT;
	t->fields[P1_F_FAILURES] = (struct p1_value){P1_PRESENT, .num = num(0, 0, NULL)};
	t->fields[P1_F_FAILURE_LOG].presence = P1_PRESENT;
	t->fields[P1_F_MSG_LONG] = (struct p1_value){P1_PRESENT, .text = text(msg, sizeof(msg) - 1)};
	t->fields[P1_F_GAS] = (struct p1_value){P1_PRESENT, .num = num(4567890, 3, "m3")};
	/* a unit as a meter spelled it, not UTF-8 as far as JSON output knows */
	t->fields[P1_F_WATER] = (struct p1_value){P1_PRESENT, .num = num(5, 0, "m\xc2\xb3")};

	t->events[0] = (struct p1_event){at(civil_utc(2023, 10, 30, 2, 15, 0), 3600), 240};
	t->events[1] = (struct p1_event){at(civil_utc(2024, 2, 15, 9, 10, 10), 3600), -1};
	t->events[2] = (struct p1_event){at(civil_utc(2024, 2, 16, 9, 10, 10), 3600), 0};
	t->n_events = 3;

	t->demand[0] = (struct p1_demand){.period = at(civil_utc(2023, 12, 31, 23, 0, 0), 3600),
	                                  .time = at(civil_utc(2023, 12, 11, 17, 45, 0), 3600),
	                                  .value = num(1, 0, "W"), /* not valid: unit unused */
	                                  .period_valid = true,
	                                  .time_valid = true};
	t->demand[1] = (struct p1_demand){.time = at(civil_utc(2024, 1, 20, 6, 30, 0), 3600),
	                                  .value = num(2345, 3, "kW"),
	                                  .time_valid = true,
	                                  .value_valid = true};
	t->demand[2] = (struct p1_demand){0};
	t->n_demand = 3;

	struct p1_mbus *m = &t->mbus[0];
	m->present = true;
	m->device_type = 3;
	m->id = (struct p1_value){P1_PRESENT, .text = text("G001", 4)};
	m->value = (struct p1_value){P1_PRESENT, .num = num(4567890, 3, "m3")};
	m->value_obis_d = 2;
	m->value_obis_e = 1;
	m->time =
	        (struct p1_value){P1_PRESENT, .time = at(civil_utc(2024, 3, 31, 11, 55, 0), 7200)};
	m = &t->mbus[2];
	m->present = true;
	m->device_type = 99; /* no medium */
	m->id.presence = P1_NULL;
	m->value.presence = P1_NULL;
	m->value_obis_d = 2;
	m->value_obis_e = 3;
	m->time.presence = P1_NULL;
	m->valve = (struct p1_value){P1_PRESENT, .num = num(1, 0, NULL)};
	m->relay.presence = P1_NULL;
	m = &t->mbus[3];
	m->present = true;
	m->device_type = -1;
	m->value = (struct p1_value){P1_PRESENT, .num = num(-12, 1, NULL)};
	m->value_obis_d = 3;
	m->value_obis_e = 0;

	static const char *const codes[] = {"1-0:99.1.0", "0-0:96.50.1", "1-0:99.1.0", "weird\"key",
	                                    "1-0:99.1.0", "0-0:96.50.1", "0-0:96.50.9"};
	static const char *const raws[] = {"(1)", "(x\"y)", "(2)", "", "(3)", "(z)", "(single)"};
	for (unsigned i = 0; i < 7; i++) {
		snprintf(t->unknown[i].obis, sizeof(t->unknown[i].obis), "%s", codes[i]);
		t->unknown[i].raw = text(raws[i], strlen(raws[i]));
	}
	t->n_unknown = 7;
	return t;
}

/* The parts of full_telegram's JSON, by flag. */
static const char framing_json[] =
        "\"valid\":true,\"dialect\":\"dsmr5\",\"header\":\"ISK5\\\\2M550T \\\"x\\\"\","
        "\"crc\":\"0A1B\",\"encrypted\":true";
static const char fields_json[] =
        "\"p1_version\":\"50\","
        "\"timestamp\":\"2024-03-31T14:00:00+02:00\","
        "\"energy_delivered_tariff1\":12345.678,"
        "\"power_returned\":-0.063,"
        "\"active_energy_import_maximum_demand_running_month_timestamp\":null,"
        "\"active_energy_import_maximum_demand_last_13_months\":["
        "{\"period\":\"2024-01-01T00:00:00+01:00\",\"timestamp\":\"2023-12-11T18:45:00+01:00\","
        "\"value\":null},"
        "{\"period\":null,\"timestamp\":\"2024-01-20T07:30:00+01:00\",\"value\":2.345},"
        "{\"period\":null,\"timestamp\":null,\"value\":null}],"
        "\"electricity_failures\":0,"
        "\"electricity_failure_log\":["
        "{\"end\":\"2023-10-30T03:15:00+01:00\",\"duration\":240},"
        "{\"end\":\"2024-02-15T10:10:10+01:00\",\"duration\":null},"
        "{\"end\":\"2024-02-16T10:10:10+01:00\",\"duration\":0}],"
        "\"message_long\":" MSG_JSON ","
        "\"gas_delivered\":4567.890,"
        "\"water_delivered\":5";
static const char mbus_json[] =
        "\"mbus\":["
        "{\"channel\":1,\"device_type\":3,\"medium\":\"gas\",\"equipment_id\":\"G001\","
        "\"value\":4567.890,\"unit\":\"m3\",\"obis\":\"0-1:24.2.1\","
        "\"timestamp\":\"2024-03-31T13:55:00+02:00\"},"
        "{\"channel\":3,\"device_type\":99,\"equipment_id\":null,\"value\":null,"
        "\"obis\":\"0-3:24.2.3\",\"timestamp\":null,\"valve_position\":1,"
        "\"switch_position\":null},"
        "{\"channel\":4,\"value\":-1.2,\"obis\":\"0-4:24.3.0\"}]";
static const char units_json[] =
        "\"units\":{\"energy_delivered_tariff1\":\"kWh\",\"power_returned\":\"kW\","
        "\"active_energy_import_maximum_demand_last_13_months\":\"kW\","
        "\"electricity_failure_log\":\"s\",\"gas_delivered\":\"m3\","
        "\"water_delivered\":\"m\\u00c2\\u00b3\"}";
static const char unknown_json[] =
        "\"unknown\":{\"1-0:99.1.0\":[\"(1)\",\"(2)\",\"(3)\"],"
        "\"0-0:96.50.1\":[\"(x\\\"y)\",\"(z)\"],\"weird\\\"key\":\"\","
        "\"0-0:96.50.9\":\"(single)\"}";

/* "{" part, part, ... "}" for the flags given */
static char *expected(unsigned flags, const char *framing, const char *fields, const char *mbus,
                      const char *units, const char *unknown)
{
	const char *parts[] = {flags & P1_JSON_FRAMING ? framing : "", fields,
	                       flags & P1_JSON_MBUS ? mbus : "", flags & P1_JSON_UNITS ? units : "",
	                       flags & P1_JSON_UNKNOWN ? unknown : ""};
	size_t n = 3;
	for (size_t i = 0; i < 5; i++)
		n += strlen(parts[i]) + 1;
	char *s = malloc(n), *p = s;
	*p++ = '{';
	for (size_t i = 0; i < 5; i++) {
		if (!*parts[i])
			continue;
		if (p > s + 1)
			*p++ = ',';
		p += sprintf(p, "%s", parts[i]);
	}
	*p++ = '}';
	*p = 0;
	return s;
}

static void test_full_telegram(void **state)
{
	(void)state;
	struct p1_telegram *t = full_telegram();
	for (unsigned flags = 0; flags <= P1_JSON_ALL; flags++) {
		char *want = expected(flags, framing_json, fields_json, mbus_json, units_json,
		                      unknown_json);
		expect_telegram(t, flags, want);
		free(want);
	}
	free(t);
}

/* No CRC, not encrypted, nothing else: null CRC and empty sections. */
static void test_empty_telegram(void **state)
{
	(void)state;
	struct p1_telegram *t = new_telegram();
	t->header = text("", 0);
	expect_telegram(t, P1_JSON_ALL,
	                "{\"valid\":true,\"dialect\":\"unknown\",\"header\":\"\",\"crc\":null,"
	                "\"mbus\":[],\"units\":{},\"unknown\":{}}");
	expect_telegram(t, 0, "{}");
	expect_telegram(t, P1_JSON_UNKNOWN, "{\"unknown\":{}}");
	/* a failure log line with no entries, a demand history with none */
	t->fields[P1_F_FAILURE_LOG].presence = P1_NULL;
	t->fields[P1_F_DEMAND_HISTORY].presence = P1_PRESENT;
	t->has_crc = true;
	t->crc = 0xFFFF;
	expect_telegram(t, P1_JSON_FRAMING | P1_JSON_UNITS,
	                "{\"valid\":true,\"dialect\":\"unknown\",\"header\":\"\",\"crc\":\"FFFF\","
	                "\"active_energy_import_maximum_demand_last_13_months\":[],"
	                "\"electricity_failure_log\":[],"
	                "\"units\":{\"electricity_failure_log\":\"s\"}}");
	free(t);
}

/* Demand entries whose field is absent (p1_parse never does this): their unit is still
 * listed, at the field's place. */
static void test_demand_without_field(void **state)
{
	(void)state;
	struct p1_telegram *t = new_telegram();
	t->header = text("X", 1);
	t->fields[P1_F_P_DEL] = (struct p1_value){P1_PRESENT, .num = num(1, 0, "kW")};
	t->fields[P1_F_FAILURES] = (struct p1_value){P1_PRESENT, .num = num(7, 0, "")};
	t->demand[0] = (struct p1_demand){.value = num(5, 0, "kW"), .value_valid = true};
	t->n_demand = 1;
	expect_telegram(t, P1_JSON_UNITS,
	                "{\"power_delivered\":1,\"electricity_failures\":7,\"units\":{"
	                "\"power_delivered\":\"kW\","
	                "\"active_energy_import_maximum_demand_last_13_months\":\"kW\","
	                "\"electricity_failures\":\"\"}}");
	free(t);
}

/* ---- values and strings ---- */

static void test_values(void **state)
{
	(void)state;
	struct p1_telegram *t = full_telegram();
	static const struct {
		enum p1_field f;
		const char *want;
	} cases[] = {
	        {P1_F_P1_VERSION, "\"50\""},
	        {P1_F_TIMESTAMP, "\"2024-03-31T14:00:00+02:00\""},
	        {P1_F_E_DEL_T1, "12345.678"},
	        {P1_F_P_RET, "-0.063"},
	        {P1_F_MAX_DEMAND_TIME, "null"},
	        {P1_F_E_DEL_T2, "null"}, /* absent */
	        {P1_F_MSG_LONG, MSG_JSON},
	        {P1_F_FAILURE_LOG,
	         "[{\"end\":\"2023-10-30T03:15:00+01:00\",\"duration\":240},"
	         "{\"end\":\"2024-02-15T10:10:10+01:00\",\"duration\":null},"
	         "{\"end\":\"2024-02-16T10:10:10+01:00\",\"duration\":0}]"},
	        {P1_F_DEMAND_HISTORY,
	         "[{\"period\":\"2024-01-01T00:00:00+01:00\",\"timestamp\":"
	         "\"2023-12-11T18:45:00+01:00\",\"value\":null},"
	         "{\"period\":null,\"timestamp\":\"2024-01-20T07:30:00+01:00\",\"value\":2.345},"
	         "{\"period\":null,\"timestamp\":null,\"value\":null}]"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		expect_field(t, cases[i].f, cases[i].want);
	free(t);
}

/* Numbers as the meter wrote them, around the two-digit steps and the 64-bit limits. */
static void test_numbers(void **state)
{
	(void)state;
	static const struct {
		int64_t mant;
		uint8_t scale;
		const char *want;
	} cases[] = {
	        {0, 0, "0"},
	        {0, 3, "0.000"},
	        {7, 1, "0.7"},
	        {-7, 1, "-0.7"},
	        {10, 1, "1.0"},
	        {10, 0, "10"},
	        {99, 0, "99"},
	        {100, 0, "100"},
	        {-100, 2, "-1.00"},
	        {123456, 2, "1234.56"},
	        {1234567, 3, "1234.567"},
	        {5, 6, "0.000005"},
	        {INT64_MAX, 0, "9223372036854775807"},
	        {INT64_MIN, 0, "-9223372036854775808"},
	        {INT64_MAX, 19, "0.9223372036854775807"},
	        {INT64_MIN, 18, "-9.223372036854775808"},
	        {5, 19, "0.0000000000000000005"},
	        {5, 20, "0.00000000000000000005"},
	        {-12345, 21, "-0.000000000000000012345"},
	};
	struct p1_telegram *t = new_telegram();
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		t->fields[P1_F_E_DEL_T1] = (struct p1_value){
		        P1_PRESENT, .num = num(cases[i].mant, cases[i].scale, "kWh")};
		expect_field(t, P1_F_E_DEL_T1, cases[i].want);
	}
	free(t);
}

/* Offsets west and in half hours, and a year past 9999 (written as printf would). */
static void test_times(void **state)
{
	(void)state;
	static const struct {
		int64_t utc;
		int32_t offset_s;
		const char *want;
	} cases[] = {
	        {0, 0, "\"1970-01-01T00:00:00+00:00\""},
	        {0, -18000, "\"1969-12-31T19:00:00-05:00\""},
	        {1711886400, 19800, "\"2024-03-31T17:30:00+05:30\""},
	        {1711886400, -34200, "\"2024-03-31T02:30:00-09:30\""},
	        {253402300799, 0, "\"9999-12-31T23:59:59+00:00\""},
	        {253402300800, 0, "\"10000-01-01T00:00:00+00:00\""},
	        {4102444800, 360000, "\"2100-01-05T04:00:00+100:00\""},
	};
	struct p1_telegram *t = new_telegram();
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		t->fields[P1_F_TIMESTAMP] = (struct p1_value){
		        P1_PRESENT, .time = at(cases[i].utc, cases[i].offset_s)};
		expect_field(t, P1_F_TIMESTAMP, cases[i].want);
	}
	free(t);
}

static void test_strings(void **state)
{
	(void)state;
	expect(&(struct render){R_STRING, .s = msg, .len = sizeof(msg) - 1}, MSG_JSON);
	expect(&(struct render){R_STRING, .s = "", .len = 0}, "\"\"");
	expect(&(struct render){R_STRING, .s = "\"\\", .len = 2}, "\"\\\"\\\\\"");
	/* a NUL inside is a control byte like the others */
	expect(&(struct render){R_STRING, .s = "a\0b", .len = 3}, "\"a\\u0000b\"");
	/* UTF-8 passed through; controls and DEL still escaped */
	expect(&(struct render){R_STRING_UTF8, .s = msg, .len = sizeof(msg) - 1},
	       "\"a\\\"b\\\\c\\u0001\\u000a\\u001f\\u007f\x80\xc3\xa9\xff~ z\"");
	expect(&(struct render){R_STRING_UTF8, .s = "m\xc2\xb3", .len = 3}, "\"m\xc2\xb3\"");
	expect(&(struct render){R_STRING, .s = "m\xc2\xb3", .len = 3}, "\"m\\u00c2\\u00b3\"");
	/* every byte, alone: the escape JSON needs or the byte itself */
	for (unsigned c = 0; c < 256; c++) {
		char s[1] = {(char)c}, want[16];
		for (int utf8 = 0; utf8 < 2; utf8++) {
			if (c == '"' || c == '\\')
				snprintf(want, sizeof(want), "\"\\%c\"", c);
			else if (c < 0x20 || c == 0x7f || (c >= 0x80 && !utf8))
				snprintf(want, sizeof(want), "\"\\u%04x\"", c);
			else
				snprintf(want, sizeof(want), "\"%c\"", c);
			expect(&(struct render){utf8 ? R_STRING_UTF8 : R_STRING, .s = s, .len = 1},
			       want);
		}
	}
}

/* ---- telegrams from files ---- */

struct collect {
	char *s;
	size_t n, cap;
	unsigned valid;
};

static void append(struct collect *c, const char *s)
{
	size_t k = strlen(s);
	if (c->n + k + 1 > c->cap) {
		c->cap = (c->n + k + 1) * 2;
		c->s = realloc(c->s, c->cap);
		assert_non_null(c->s);
	}
	memcpy(c->s + c->n, s, k + 1);
	c->n += k;
}

/* One object per frame, as test_parse.c writes them; every valid telegram's JSON with the
 * contract checked at every cap (all flags), its other flags at full length. */
static void on_result(void *ud, const struct p1_result *r)
{
	struct collect *c = ud;
	if (r->error == P1_OK) {
		char *json = check_contract(
		        &(struct render){R_TELEGRAM, .t = r->telegram, .flags = P1_JSON_ALL});
		append(c, json);
		free(json);
		for (unsigned flags = 0; flags < P1_JSON_ALL; flags++) {
			char buf[1 << 16];
			size_t n = p1_json_telegram(r->telegram, flags, buf, sizeof(buf));
			assert_true(n < sizeof(buf));
			assert_int_equal(n, strlen(buf));
			assert_int_equal(p1_json_telegram(r->telegram, flags, NULL, 0), n);
		}
		c->valid++;
	} else {
		char tmp[160];
		snprintf(tmp, sizeof(tmp),
		         "{\"valid\":false,\"reason\":\"%s\",\"offset\":%llu,\"line\":%u}",
		         p1_error_id(r->error), (unsigned long long)r->offset, r->line);
		append(c, tmp);
	}
	append(c, "\n");
}

static struct collect decode(const char *p, size_t n)
{
	struct p1_decoder *d = p1_decoder_new(NULL);
	assert_non_null(d);
	struct collect c = {0};
	append(&c, "");
	p1_decoder_feed(d, p, n, on_result, &c);
	p1_decoder_flush(d, on_result, &c);
	p1_decoder_free(d);
	return c;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted names of the files in dir ending in ext; returns the count. */
static size_t list(const char *dir, const char *ext, char ***ret_names)
{
	DIR *d = opendir(dir);
	char **names = NULL;
	size_t n = 0;
	struct dirent *e;
	while (d && (e = readdir(d))) {
		size_t k = strlen(e->d_name), x = strlen(ext);
		if (e->d_name[0] == '.' || k <= x || strcmp(e->d_name + k - x, ext))
			continue;
		names = realloc(names, (n + 1) * sizeof(*names));
		names[n++] = strdup(e->d_name);
	}
	if (d)
		closedir(d);
	if (n)
		qsort(names, n, sizeof(*names), cmp_str);
	*ret_names = names;
	return n;
}

static void free_names(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

static void test_golden_fixtures(void **state)
{
	(void)state;
	const char *dir = getenv("P1_TEST_DATA");
	if (!dir)
		fail_msg("P1_TEST_DATA is not set; it names tests/data");
	char **names;
	size_t n = list(dir, ".txt", &names), compared = 0;
	unsigned telegrams = 0;
	for (size_t i = 0; i < n; i++) {
		char txt[4096], json[4096];
		snprintf(txt, sizeof(txt), "%s/%s", dir, names[i]);
		snprintf(json, sizeof(json), "%s/%.*s.json", dir, (int)strlen(names[i]) - 4,
		         names[i]);
		size_t len, jlen;
		char *want_raw = read_file(json, &jlen);
		if (!want_raw)
			continue;
		char *in = read_file(txt, &len);
		assert_non_null(in);
		struct collect c = decode(in, len);
		char *want = json_squeeze(want_raw), *got = json_squeeze(c.s);
		if (strcmp(want, got))
			fail_msg("%s: output differs from %s\nexpected: %s\nactual:   %s", txt, json,
			         want, got);
		compared++;
		telegrams += c.valid;
		free(want);
		free(got);
		free(c.s);
		free(in);
		free(want_raw);
	}
	free_names(names, n);
	print_message("%zu golden files, %u telegrams\n", compared, telegrams);
	assert_true(compared >= 40);
}

/* Every telegram of the shared corpus's text folders, every cap. */
static void test_shared_corpus(void **state)
{
	(void)state;
	static const char *const folders[] = {
	        "dsmr2.2-3", "dsmr4",       "dsmr5",    "fluvius-emucs", "smarty-lu",     "sweden",
	        "austria",   "hungary-eon", "iskra-ie", "ace4000",       "easymeter-q3d", "streams",
	};
	const char *root = getenv("P1_SHARED_TELEGRAMS");
	struct stat st;
	if (!root || !*root || stat(root, &st) || !S_ISDIR(st.st_mode)) {
		print_message("no shared corpus (P1_SHARED_TELEGRAMS), skipped\n");
		skip();
	}
	unsigned files = 0, telegrams = 0;
	for (size_t fi = 0; fi < sizeof(folders) / sizeof(folders[0]); fi++) {
		char dir[4096];
		snprintf(dir, sizeof(dir), "%s/%s", root, folders[fi]);
		char **names;
		size_t n = list(dir, ".txt", &names);
		for (size_t i = 0; i < n; i++) {
			char path[8192];
			snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
			size_t len;
			char *in = read_file(path, &len);
			assert_non_null(in);
			struct collect c = decode(in, len);
			files++;
			telegrams += c.valid;
			free(c.s);
			free(in);
		}
		free_names(names, n);
	}
	print_message("%u files, %u telegrams\n", files, telegrams);
	assert_true(telegrams >= 60);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_field_names_plain),
	        cmocka_unit_test(test_full_telegram),
	        cmocka_unit_test(test_empty_telegram),
	        cmocka_unit_test(test_demand_without_field),
	        cmocka_unit_test(test_values),
	        cmocka_unit_test(test_numbers),
	        cmocka_unit_test(test_times),
	        cmocka_unit_test(test_strings),
	        cmocka_unit_test(test_golden_fixtures),
	        cmocka_unit_test(test_shared_corpus),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
