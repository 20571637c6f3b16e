/* test_http.c - the HTTP routes without a server: path parsing, error replies, the exact
 * telegram JSON, Prometheus text validity, the HomeWizard mapping, id masking and token
 * comparison, all from a telegram of tests/data parsed by libp1. */
#include <ctype.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http.h"
#include "p1/decoder.h"
#include "p1/json.h"

static struct p1_telegram *fixture; /* t2-dsmr5.txt */

static void on_result(void *ud, const struct p1_result *r)
{
	if (r->error == P1_OK && !fixture) {
		fixture = p1_telegram_new(r->telegram->cap);
		assert_true(p1_telegram_copy(fixture, r->telegram));
	}
	(void)ud;
}

static int setup(void **state)
{
	const char *dir = getenv("P1_TEST_DATA");
	char path[1024], buf[16384];
	snprintf(path, sizeof(path), "%s/t2-dsmr5.txt", dir ? dir : "tests/data");
	FILE *f = fopen(path, "rb");
	if (!f)
		return -1;
	size_t n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	struct p1_decoder_opts o;
	p1_decoder_opts_init(&o);
	struct p1_decoder *d = p1_decoder_new(&o);
	p1_decoder_feed(d, buf, n, on_result, NULL);
	p1_decoder_flush(d, on_result, NULL);
	p1_decoder_free(d);
	(void)state;
	return fixture ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	fixture = p1_telegram_free(fixture);
	return 0;
}

static void ctx_init(struct http_ctx *ctx, bool with_telegram)
{
	memset(ctx, 0, sizeof(*ctx));
	ctx->n_meters = 2;
	ctx->meters[0] = (struct http_meter_view){.name = "main",
	                                          .source_kind = "serial",
	                                          .source_state = "connected",
	                                          .connected = true,
	                                          .last_age_ms = 1500};
	ctx->meters[0].latest = with_telegram ? fixture : NULL;
	ctx->meters[0].stats.telegrams = 42;
	ctx->meters[0].stats.errors[P1_ERR_CRC] = 3;
	ctx->meters[0].stats.rejected = 3;
	ctx->meters[1] = (struct http_meter_view){.name = "garage",
	                                          .source_kind = "tcp",
	                                          .source_state = "backoff",
	                                          .last_age_ms = -1};
}

struct args {
	const char *k[4], *v[4];
};

static const char *get_arg(const struct http_request *req, const char *name)
{
	const struct args *a = req->ctx;
	for (int i = 0; a && i < 4 && a->k[i]; i++)
		if (!strcmp(a->k[i], name))
			return a->v[i];
	return NULL;
}

static void dispatch(const struct http_ctx *ctx, const char *method, const char *path,
                     struct args *a, struct http_reply *r)
{
	struct http_request req = {method, path, get_arg, NULL, a};
	memset(r, 0, sizeof(*r));
	api_dispatch(ctx, &req, r);
}

static void assert_error(struct http_reply *r, int status, const char *msg)
{
	char want[256];
	snprintf(want, sizeof(want), "{\"error\":\"%s\"}", msg);
	assert_int_equal(r->status, status);
	assert_string_equal(r->content_type, "application/json");
	assert_non_null(r->body);
	assert_string_equal(r->body, want);
	free(r->body);
	r->body = NULL;
}

static void test_parse(void **state)
{
	static const struct {
		const char *path;
		enum api_route route;
		const char *meter;
	} cases[] = {
	        {"/api/v1/meters", API_METERS, ""},
	        {"/api/v1/status", API_STATUS, ""},
	        {"/api/v1/now", API_NOW, ""},
	        {"/api/v1/telegram", API_TELEGRAM, ""},
	        {"/api/v1/events", API_EVENTS, ""},
	        {"/api/v1/history", API_HISTORY, ""},
	        {"/api/v1/meters/main/now", API_NOW, "main"},
	        {"/api/v1/meters/garage-2/events", API_EVENTS, "garage-2"},
	        {"/api/v1/meters/a_b/history", API_HISTORY, "a_b"},
	        {"/api/v1/meters/main/telegram", API_TELEGRAM, "main"},
	        {"/metrics", API_METRICS, ""},
	        {"/api", API_HW_API, ""},
	        {"/api/v1/data", API_HW_DATA, ""},
	        {"/api/v1/meters/Main/now", API_NOT_FOUND, ""},
	        {"/api/v1/meters/main/now/", API_NOT_FOUND, ""},
	        {"/api/v1/meters/main/", API_NOT_FOUND, ""},
	        {"/api/v1/meters/main", API_NOT_FOUND, ""},
	        {"/api/v1/meters//now", API_NOT_FOUND, ""},
	        {"/api/v1/meters/../now", API_NOT_FOUND, ""},
	        {"/api/v1/meters/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/now", API_NOT_FOUND, ""},
	        {"/api/v2/now", API_NOT_FOUND, ""},
	        {"/", API_NOT_FOUND, ""},
	        {"", API_NOT_FOUND, ""},
	        {"/metrics/", API_NOT_FOUND, ""},
	        {"/api/v1/nowx", API_NOT_FOUND, ""},
	};
	char meter[40];
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		enum api_route r = api_v1_parse(cases[i].path, meter, sizeof(meter));
		if (r != cases[i].route)
			fail_msg("%s: route %d, want %d", cases[i].path, r, cases[i].route);
		assert_string_equal(meter, cases[i].meter);
	}
	assert_int_equal(api_v1_parse(NULL, meter, sizeof(meter)), API_NOT_FOUND);
	assert_int_equal(api_v1_parse("/api/v1/meters/main/now", meter, 4), API_NOT_FOUND);
}

static void test_errors(void **state)
{
	struct http_ctx ctx;
	struct http_reply r;
	struct args bad_mask = {{"mask"}, {"yes"}}, bad_res = {{"resolution"}, {"week"}};
	(void)state;
	ctx_init(&ctx, true);
	dispatch(&ctx, "GET", "/nope", NULL, &r);
	assert_error(&r, 404, "not found");
	dispatch(&ctx, "POST", "/api/v1/now", NULL, &r);
	assert_string_equal(r.allow, "GET, HEAD");
	assert_error(&r, 405, "method not allowed");
	dispatch(&ctx, "DELETE", "/metrics", NULL, &r);
	assert_error(&r, 405, "method not allowed");
	dispatch(&ctx, "GET", "/api/v1/meters/nope/now", NULL, &r);
	assert_error(&r, 404, "unknown meter");
	dispatch(&ctx, "GET", "/api/v1/meters/garage/now", NULL, &r);
	assert_error(&r, 503, "no telegram received yet");
	dispatch(&ctx, "GET", "/api/v1/telegram", &bad_mask, &r);
	assert_error(&r, 400, "mask must be 0 or 1");
	dispatch(&ctx, "GET", "/api/v1/history", &bad_res, &r);
	assert_error(&r, 400, "resolution must be minute, hour, day or month");
	dispatch(&ctx, "GET", "/api/v1/meters/main/history", NULL, &r);
	assert_error(&r, 503, "history store not available");
	dispatch(&ctx, "GET", "/api/v1/data", NULL, &r); /* HomeWizard off */
	assert_error(&r, 404, "not found");
	dispatch(&ctx, "GET", "/api", NULL, &r);
	assert_error(&r, 404, "not found");
	ctx.n_meters = 0;
	dispatch(&ctx, "GET", "/api/v1/now", NULL, &r);
	assert_error(&r, 404, "no meter");
	ctx_init(&ctx, false);
	dispatch(&ctx, "HEAD", "/api/v1/now", NULL, &r);
	assert_error(&r, 503, "no telegram received yet");
}

static void test_now_and_telegram(void **state)
{
	struct http_ctx ctx;
	struct http_reply r;
	static char want[65536];
	struct args mask = {{"mask"}, {"1"}};
	(void)state;
	ctx_init(&ctx, true);
	size_t n = p1_json_telegram(fixture, P1_JSON_ALL, want, sizeof(want));
	assert_true(n < sizeof(want));
	dispatch(&ctx, "GET", "/api/v1/meters/main/now", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.len, n);
	assert_memory_equal(r.body, want, n);
	assert_non_null(strstr(r.body, "\"energy_delivered_tariff1\":1234.567"));
	free(r.body);
	dispatch(&ctx, "HEAD", "/api/v1/now", NULL, &r); /* default meter */
	assert_int_equal(r.status, 200);
	assert_memory_equal(r.body, want, n);
	free(r.body);

	dispatch(&ctx, "GET", "/api/v1/telegram", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.content_type, "text/plain; charset=utf-8");
	assert_int_equal(r.len, fixture->raw_len);
	assert_memory_equal(r.body, fixture->raw, r.len);
	free(r.body);
	dispatch(&ctx, "GET", "/api/v1/telegram", &mask, &r);
	assert_int_equal(r.len, fixture->raw_len);
	assert_null(strstr(r.body, "4530303030"));
	assert_null(strstr(r.body, "4730303030"));
	assert_non_null(strstr(r.body, "0-0:96.1.1(XXXX"));
	assert_non_null(strstr(r.body, "0-1:96.1.0(XXXX"));
	assert_non_null(strstr(r.body, "1-0:1.8.1(001234.567*kWh)"));
	free(r.body);

	dispatch(&ctx, "GET", "/api/v1/meters/main/events", NULL, &r);
	assert_true(r.sse);
	assert_int_equal(r.sse_meter, 0);
	dispatch(&ctx, "GET", "/api/v1/meters/garage/events", NULL, &r);
	assert_true(r.sse);
	assert_int_equal(r.sse_meter, 1);
}

static void test_meters_status(void **state)
{
	struct http_ctx ctx;
	struct http_reply r;
	json_error_t err;
	(void)state;
	ctx_init(&ctx, true);
	dispatch(&ctx, "GET", "/api/v1/meters", NULL, &r);
	assert_int_equal(r.status, 200);
	json_t *j = json_loads(r.body, 0, &err), *m0, *m1;
	assert_non_null(j);
	m0 = json_array_get(json_object_get(j, "meters"), 0);
	m1 = json_array_get(json_object_get(j, "meters"), 1);
	assert_string_equal(json_string_value(json_object_get(m0, "name")), "main");
	assert_int_equal(json_integer_value(json_object_get(m0, "telegrams")), 42);
	assert_int_equal(json_integer_value(json_object_get(m0, "crc_errors")), 3);
	assert_int_equal(json_integer_value(json_object_get(m0, "last_telegram_age_ms")), 1500);
	assert_true(json_is_null(json_object_get(m1, "last_telegram_age_ms")));
	assert_true(json_is_false(json_object_get(m1, "connected")));
	json_decref(j);
	free(r.body);
	dispatch(&ctx, "GET", "/api/v1/status", NULL, &r);
	assert_int_equal(r.status, 200);
	j = json_loads(r.body, 0, &err);
	assert_non_null(j);
	assert_non_null(json_string_value(json_object_get(j, "version")));
	assert_true(json_is_null(json_object_get(j, "mqtt")));
	assert_true(json_is_null(json_object_get(j, "store")));
	json_decref(j);
	free(r.body);
}

/* A strict reader of the text exposition format: names, HELP/TYPE before samples, one TYPE
 * per family, families contiguous, counters end in _total, label syntax, float values. */
static void check_exposition(const char *text)
{
	char seen[256][128], cur[128] = "", typed[128] = "", type[16] = "";
	size_t n_seen = 0, samples = 0;
	const char *p = text;
	while (*p) {
		const char *eol = strchr(p, '\n');
		assert_non_null(eol); /* every line ends with \n */
		char line[1024];
		size_t len = (size_t)(eol - p);
		assert_true(len < sizeof(line));
		memcpy(line, p, len);
		line[len] = 0;
		p = eol + 1;
		if (!strncmp(line, "# HELP ", 7) || !strncmp(line, "# TYPE ", 7)) {
			char name[128], rest[900];
			assert_int_equal(sscanf(line + 7, "%127s %899[^\n]", name, rest), 2);
			if (line[2] == 'T') {
				assert_true(!strcmp(rest, "counter") || !strcmp(rest, "gauge"));
				for (size_t i = 0; i < n_seen; i++)
					if (!strcmp(seen[i], name))
						fail_msg("family %s twice", name);
				assert_true(n_seen < 256);
				strcpy(seen[n_seen++], name);
				strcpy(typed, name);
				strcpy(type, rest);
				if (!strcmp(rest, "counter"))
					assert_non_null(strstr(name, "_total"));
			}
			continue;
		}
		assert_true(line[0] != '#');
		size_t i = 0;
		assert_true(isalpha((unsigned char)line[0]) || line[0] == '_');
		while (isalnum((unsigned char)line[i]) || line[i] == '_' || line[i] == ':')
			i++;
		memcpy(cur, line, i);
		cur[i] = 0;
		if (strcmp(cur, typed))
			fail_msg("sample %s outside its family (%s)", cur, typed);
		if (line[i] == '{') {
			i++;
			while (line[i] != '}') {
				assert_true(isalpha((unsigned char)line[i]) || line[i] == '_');
				while (isalnum((unsigned char)line[i]) || line[i] == '_')
					i++;
				assert_int_equal(line[i++], '=');
				assert_int_equal(line[i++], '"');
				while (line[i] != '"') {
					assert_true(line[i] != 0 && line[i] != '\n');
					i += line[i] == '\\' ? 2 : 1;
				}
				i++;
				if (line[i] == ',')
					i++;
			}
			i++;
		}
		assert_int_equal(line[i++], ' ');
		char *end;
		strtod(line + i, &end);
		assert_true(end != line + i && *end == 0);
		samples++;
	}
	assert_true(samples > 0);
}

static char *metrics(const struct http_ctx *ctx)
{
	struct http_reply r;
	dispatch(ctx, "GET", "/metrics", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.content_type, "text/plain; version=0.0.4; charset=utf-8");
	return r.body;
}

static void test_metrics(void **state)
{
	struct http_ctx ctx;
	(void)state;
	ctx_init(&ctx, true);
	char *m = metrics(&ctx);
	check_exposition(m);
	assert_non_null(
	        strstr(m, "# TYPE p1d_energy_delivered_tariff1_kwh_total counter\n"
	                  "p1d_energy_delivered_tariff1_kwh_total{meter=\"main\"} 1234.567\n"));
	assert_non_null(strstr(m, "# TYPE p1d_power_delivered_kw gauge\n"
	                          "p1d_power_delivered_kw{meter=\"main\"} 0.543\n"));
	assert_non_null(strstr(m, "p1d_voltage_l1_volts{meter=\"main\"} 231.4\n"));
	assert_non_null(strstr(m, "p1d_current_l1_amperes{meter=\"main\"} 2\n"));
	assert_non_null(strstr(m, "p1d_gas_delivered_m3_total{meter=\"main\"} 1234.567\n"));
	assert_non_null(strstr(m, "p1d_telegrams_total{meter=\"main\"} 42\n"));
	assert_non_null(strstr(m, "p1d_telegrams_total{meter=\"garage\"} 0\n"));
	assert_non_null(strstr(m, "p1d_rejected_total{meter=\"main\",reason=\"crc\"} 3\n"));
	assert_non_null(strstr(m, "p1d_last_telegram_age_seconds{meter=\"main\"} 1.500\n"));
	assert_null(strstr(m, "p1d_last_telegram_age_seconds{meter=\"garage\"}"));
	assert_non_null(strstr(m, "p1d_source_connected{meter=\"garage\"} 0\n"));
	free(m);
	/* no telegram at all: still valid, health only */
	ctx_init(&ctx, false);
	m = metrics(&ctx);
	check_exposition(m);
	assert_null(strstr(m, "kwh"));
	free(m);
}

static void test_homewizard(void **state)
{
	struct http_ctx ctx;
	struct http_reply r;
	json_error_t err;
	(void)state;
	ctx_init(&ctx, true);
	ctx.homewizard = true;
	dispatch(&ctx, "GET", "/api/v1/data", NULL, &r);
	assert_int_equal(r.status, 200);
	static const char *const want[] = {
	        "\"smr_version\":50",
	        "\"meter_model\":\"XXX5TEST-DSMR5\"",
	        "\"unique_id\":\"4530303030303030303030303030303030\"",
	        "\"active_tariff\":2",
	        "\"total_power_import_kwh\":3580.245",
	        "\"total_power_import_t1_kwh\":1234.567",
	        "\"total_power_import_t2_kwh\":2345.678",
	        "\"total_power_export_kwh\":444.666",
	        "\"total_power_export_t1_kwh\":111.222",
	        "\"active_power_w\":543",
	        "\"active_power_l1_w\":543",
	        "\"active_voltage_l1_v\":231.4",
	        "\"active_current_l1_a\":2",
	        "\"voltage_sag_l1_count\":1",
	        "\"voltage_swell_l1_count\":0",
	        "\"any_power_fail_count\":7",
	        "\"long_power_fail_count\":2",
	        "\"total_gas_m3\":1234.567",
	        "\"gas_timestamp\":240331115500",
	        "{\"unique_id\":\"4730303030303030303030303030303030\",\"type\":\"gas_meter\","
	        "\"timestamp\":240331115500,\"value\":1234.567,\"unit\":\"m3\"}",
	        "\"type\":\"water_meter\",\"timestamp\":240331115500,\"value\":321.123",
	};
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		if (!strstr(r.body, want[i]))
			fail_msg("missing %s in %s", want[i], r.body);
	json_t *j = json_loads(r.body, 0, &err);
	assert_non_null(j);
	json_decref(j);
	free(r.body);
	dispatch(&ctx, "GET", "/api", NULL, &r);
	assert_int_equal(r.status, 200);
	j = json_loads(r.body, 0, &err);
	assert_string_equal(json_string_value(json_object_get(j, "product_type")), "HWE-P1");
	assert_string_equal(json_string_value(json_object_get(j, "api_version")), "v1");
	assert_int_equal(strlen(json_string_value(json_object_get(j, "serial"))), 12);
	json_decref(j);
	free(r.body);
}

static void test_tokens(void **state)
{
	(void)state;
	assert_true(http_token_equal("s3cret-token", "s3cret-token"));
	assert_false(http_token_equal("s3cret-tokeN", "s3cret-token"));
	assert_false(http_token_equal("s3cret-toke", "s3cret-token"));
	assert_false(http_token_equal("s3cret-token2", "s3cret-token"));
	assert_false(http_token_equal("", "s3cret-token"));
	assert_false(http_token_equal(NULL, "s3cret-token"));
	assert_false(http_token_equal("x", NULL));
	assert_true(http_token_equal("", ""));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_parse),
	        cmocka_unit_test(test_errors),
	        cmocka_unit_test(test_now_and_telegram),
	        cmocka_unit_test(test_meters_status),
	        cmocka_unit_test(test_metrics),
	        cmocka_unit_test(test_homewizard),
	        cmocka_unit_test(test_tokens),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
