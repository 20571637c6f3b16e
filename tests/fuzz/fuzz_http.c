/* fuzz_http.c - libFuzzer target for the HTTP routes and the history query (test matrix P8).
 * fuzz.sh: daemon (built with the daemon's services of src/ and their libraries)
 *
 * The input is a request in the shape of an HTTP/1.1 head, without libmicrohttpd:
 *
 *   METHOD SP TARGET [SP FLAGS] LF
 *   NAME: VALUE LF                       (headers, any number; CR before LF is dropped)
 *
 * TARGET is PATH[?QUERY]. As libmicrohttpd hands them to p1d, the path and every NAME=VALUE
 * of the query (split at '&') are %-decoded (a %00 ends the string), '+' in the query is a
 * space, an argument without '=' has no value, and names are looked up without regard to
 * case, the first one winning. Header values lose their surrounding blanks. FLAGS are
 * letters shaping the server: 'w' HomeWizard API on, 'd' dashboard off, 'e' the first meter
 * has no telegram yet, '0' no meter at all, '1' only the first meter.
 *
 * The server (struct http_ctx) has three meters: "main" with the DSMR 5 telegram of
 * tests/data/t2-dsmr5.txt, "flu" with the Fluvius one of t3-fluvius.txt, "garage" with none;
 * the dashboard's files are small files in a private directory. api_dispatch() answers the
 * request, and these must hold:
 *
 *   - the status is 200, 304, 400, 404, 405 or 503; 405 exactly for a known route asked with
 *     another method than GET or HEAD, with "Allow: GET, HEAD"; 404 for an unknown route;
 *   - an event stream only for .../events, of a meter that exists, without a body; 304 only
 *     for a dashboard file, without a body; otherwise a body of the length said, with a type;
 *   - a JSON body parses with jansson (and is ASCII); an error is {"error": "..."};
 *   - /now is the meter's exact telegram JSON; /telegram its raw text, or with mask=1 the same
 *     text with only equipment ids turned into X;
 *   - the same request answered twice gives the same reply (routes are pure);
 *   - api_v1_parse() names only valid meters, copies them whole or not at all.
 *
 * The history route needs the store, which only the daemon connects (src/main.c); here its
 * arguments go through history_query_parse(), as the daemon's hook does, for every request
 * that has a resolution, from or to (whatever its path), and a query that passes is run with
 * history_write() on a store holding 30 hours of readings of "main" (JSON must parse and have
 * as many rows as the store returned), and for ranges of up to 64 steps through the daemon's
 * history_stream_*, read in pieces of 1 to 1024 bytes (the input's size decides), which must
 * give the same text. history_parse_date() gets from and to alone too, in two
 * zones: a date it accepts is inside HISTORY_DATE_MIN..MAX, the zone decides whether it is
 * accepted only at the ends of that range, "Z" is the same as "+00:00" and a plain number is
 * that many seconds. Any violation aborts.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include "history_format.h"
#include "http.h"
#include "http_static.h"
#include "log.h"
#include "p1/decoder.h"
#include "p1/json.h"
#include "store.h"

#include "json_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond) \
	do { \
		if (!(cond)) { \
			fprintf(stderr, "fuzz_http: %s:%d: invariant failed: %s\n", __FILE__, \
			        __LINE__, #cond); \
			abort(); \
		} \
	} while (0)

#define ARGS_MAX 32
#define HEADERS_MAX 32
#define METER_NAME_MAX 32
#define READINGS 120 /* in the store: every 15 minutes for 30 hours */
#define READING_S 900
#define T0 1774699200LL /* 2026-03-28T12:00:00Z: the readings span the spring DST change */
#define NOW (T0 + 36 * 3600)
/* Streamed replies are compared for ranges up to this (each step is a query, so the longest
 * ranges would take seconds under the sanitizers; the steps do not depend on the range). */
#define STREAM_BUCKETS_MAX (64 * HISTORY_STREAM_STEP)
#define STREAM_PIECE_MAX 1024 /* bytes asked of history_stream_read() at most */

static const char dsmr5[] =
        "/XXX5TEST-DSMR5\r\n\r\n"
        "1-3:0.2.8(50)\r\n"
        "0-0:1.0.0(240331120000S)\r\n"
        "0-0:96.1.1(4530303030303030303030303030303030)\r\n"
        "1-0:1.8.1(001234.567*kWh)\r\n"
        "1-0:1.8.2(002345.678*kWh)\r\n"
        "1-0:2.8.1(000111.222*kWh)\r\n"
        "1-0:2.8.2(000333.444*kWh)\r\n"
        "0-0:96.14.0(0002)\r\n"
        "1-0:1.7.0(00.543*kW)\r\n"
        "1-0:2.7.0(00.000*kW)\r\n"
        "0-0:96.7.21(00007)\r\n"
        "0-0:96.7.9(00002)\r\n"
        "1-0:99.97.0(2)(0-0:96.7.19)(231030031500W)(0000000240*s)(240215101010W)(0000004321*s)\r\n"
        "1-0:32.32.0(00001)\r\n"
        "1-0:32.36.0(00000)\r\n"
        "0-0:96.13.0(48656C6C6F)\r\n"
        "1-0:32.7.0(231.4*V)\r\n"
        "1-0:31.7.0(002*A)\r\n"
        "1-0:21.7.0(00.543*kW)\r\n"
        "1-0:22.7.0(00.000*kW)\r\n"
        "0-1:24.1.0(003)\r\n"
        "0-1:96.1.0(4730303030303030303030303030303030)\r\n"
        "0-1:24.2.1(240331115500S)(01234.567*m3)\r\n"
        "0-2:24.1.0(007)\r\n"
        "0-2:96.1.0(3830303030303030303030303030303030)\r\n"
        "0-2:24.2.1(240331115500S)(00321.123*m3)\r\n"
        "!A7E4\r\n";

static const char fluvius[] =
        "/FLU5\\253000000_A\r\n\r\n"
        "0-0:96.1.4(50217)\r\n"
        "0-0:96.1.1(3153414730303030303030303030)\r\n"
        "0-0:1.0.0(240115083000W)\r\n"
        "1-0:1.8.1(000500.100*kWh)\r\n"
        "1-0:1.8.2(000400.200*kWh)\r\n"
        "1-0:2.8.1(000050.300*kWh)\r\n"
        "1-0:2.8.2(000010.400*kWh)\r\n"
        "0-0:96.14.0(0001)\r\n"
        "1-0:1.4.0(01.250*kW)\r\n"
        "1-0:1.6.0(240110183000W)(04.321*kW)\r\n"
        "0-0:98.1.0(2)(1-0:1.6.0)(1-0:1.6.0)(231201000000W)(231112190000W)(03.500*kW)"
        "(240101000000W)(231224171500W)(05.250*kW)\r\n"
        "1-0:1.7.0(00.750*kW)\r\n"
        "1-0:2.7.0(00.000*kW)\r\n"
        "1-0:21.7.0(00.750*kW)\r\n"
        "1-0:22.7.0(00.000*kW)\r\n"
        "1-0:32.7.0(232.1*V)\r\n"
        "1-0:31.7.0(003.41*A)\r\n"
        "0-0:96.3.10(1)\r\n"
        "0-0:17.0.0(999.9*kW)\r\n"
        "1-0:31.4.0(999*A)\r\n"
        "0-0:96.13.0()\r\n"
        "0-1:24.1.0(003)\r\n"
        "0-1:96.1.1(37464C4F30303030303030303030)\r\n"
        "0-1:24.4.0(1)\r\n"
        "0-1:24.2.3(240115082500W)(01234.567*m3)\r\n"
        "!8DF5\r\n";

/* ---- the server's side, made once ---- */

static const char *const www_files[] = {"index.html", "app.js", "style.css", "favicon.svg",
                                        "chart.js"};
#define N_WWW (sizeof(www_files) / sizeof(www_files[0]))

static struct {
	char dir[64];
	struct p1_telegram *t[2]; /* of main and flu */
	char *now_json[2];        /* their /now bodies */
	size_t now_len[2];
	struct http_static *www;
	struct store *store;
} srv;

static const struct p1_tz tz_cet = P1_TZ_CET, tz_utc = {0, 0, false};

static void on_result(void *ud, const struct p1_result *r)
{
	struct p1_telegram **t = ud;
	CHECK(r->error == P1_OK && !*t);
	*t = p1_telegram_new(r->telegram->cap);
	CHECK(*t && p1_telegram_copy(*t, r->telegram));
}

static struct p1_telegram *decode(const char *text)
{
	struct p1_telegram *t = NULL;
	struct p1_decoder_opts o;
	p1_decoder_opts_init(&o);
	struct p1_decoder *d = p1_decoder_new(&o);
	CHECK(d);
	p1_decoder_feed(d, text, strlen(text), on_result, &t);
	p1_decoder_flush(d, on_result, &t);
	p1_decoder_free(d);
	CHECK(t);
	return t;
}

static void path_of(const char *name, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s", srv.dir, name);
}

static void cleanup(void)
{
	char path[128];
	static const char *const db[] = {"history.db", "history.db-wal", "history.db-shm",
	                                 "history.db-journal"};
	srv.store = store_free(srv.store);
	srv.www = http_static_free(srv.www);
	for (size_t i = 0; i < 2; i++) {
		srv.t[i] = p1_telegram_free(srv.t[i]);
		free(srv.now_json[i]);
	}
	for (size_t i = 0; i < N_WWW; i++) {
		path_of(www_files[i], path, sizeof(path));
		unlink(path);
	}
	for (size_t i = 0; i < sizeof(db) / sizeof(db[0]); i++) {
		path_of(db[i], path, sizeof(path));
		unlink(path);
	}
	rmdir(srv.dir);
}

/* 30 hours of readings of "main", energy and power changing, committed. */
static void store_init(void)
{
	char path[128];
	path_of("history.db", path, sizeof(path));
	struct store_opts o = {
	        .path = path, .commit_interval_ms = 60000, .raw_days = 7, .tz = tz_cet};
	CHECK(store_new(NULL, &o, &srv.store) == 0);
	struct p1_telegram *t = p1_telegram_new(srv.t[0]->cap);
	CHECK(t && p1_telegram_copy(t, srv.t[0]));
	for (int i = 0; i < READINGS; i++) {
		t->fields[P1_F_E_DEL_T1].num.mant += 1 + i % 7 * 37;
		t->fields[P1_F_P_DEL].num.mant = i % 11 * 97;
		CHECK(store_add_at(srv.store, "main", t, T0 + (int64_t)i * READING_S) == 1);
	}
	CHECK(store_sync(srv.store) == 0);
	p1_telegram_free(t);
}

static void server_init(void)
{
	char path[128], chartjs[128];
	log_set_max_priority(LOG_ERR); /* a missing dashboard file is not news here */
	snprintf(srv.dir, sizeof(srv.dir), "%s", "/tmp/p1d-fuzz-http-XXXXXX");
	CHECK(mkdtemp(srv.dir));
	atexit(cleanup);
	for (size_t i = 0; i < N_WWW; i++) {
		path_of(www_files[i], path, sizeof(path));
		int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		CHECK(fd >= 0);
		CHECK(write(fd, www_files[i], strlen(www_files[i])) ==
		      (ssize_t)strlen(www_files[i]));
		close(fd);
	}
	path_of("chart.js", chartjs, sizeof(chartjs));
	CHECK(http_static_new(srv.dir, chartjs, &srv.www) == 0);
	srv.t[0] = decode(dsmr5);
	srv.t[1] = decode(fluvius);
	for (size_t i = 0; i < 2; i++) {
		size_t n = p1_json_telegram(srv.t[i], P1_JSON_ALL, NULL, 0);
		srv.now_json[i] = malloc(n + 1);
		CHECK(srv.now_json[i]);
		CHECK(p1_json_telegram(srv.t[i], P1_JSON_ALL, srv.now_json[i], n + 1) == n);
		srv.now_len[i] = n;
	}
	store_init();
}

static void ctx_init(struct http_ctx *ctx, const char *flags)
{
	memset(ctx, 0, sizeof(*ctx));
	ctx->meters[0] = (struct http_meter_view){.name = "main",
	                                          .latest = srv.t[0],
	                                          .source_kind = "serial",
	                                          .source_state = "connected",
	                                          .connected = true,
	                                          .last_age_ms = 1500};
	ctx->meters[0].stats.telegrams = 42;
	ctx->meters[0].stats.errors[P1_ERR_CRC] = 3;
	ctx->meters[0].stats.rejected = 3;
	ctx->meters[0].src.bytes = 123456;
	ctx->meters[1] = (struct http_meter_view){.name = "flu",
	                                          .latest = srv.t[1],
	                                          .source_kind = "tcp",
	                                          .source_state = "connected",
	                                          .connected = true,
	                                          .last_age_ms = 0};
	ctx->meters[2] = (struct http_meter_view){.name = "garage",
	                                          .source_kind = "file",
	                                          .source_state = "backoff",
	                                          .last_age_ms = -1};
	ctx->n_meters = strchr(flags, '0') ? 0 : strchr(flags, '1') ? 1 : 3;
	if (strchr(flags, 'e'))
		ctx->meters[0].latest = NULL;
	ctx->uptime_s = 12345;
	ctx->homewizard = strchr(flags, 'w') != NULL;
	ctx->www = strchr(flags, 'd') ? NULL : srv.www;
}

/* ---- the request ---- */

struct pair {
	char *name, *value; /* value NULL: an argument without '=' */
};

struct request {
	struct http_request req;
	char *method, *path, flags[16];
	struct pair args[ARGS_MAX], headers[HEADERS_MAX];
	size_t n_args, n_headers;
};

static int hex(char c)
{
	return c >= '0' && c <= '9'   ? c - '0'
	       : c >= 'a' && c <= 'f' ? c - 'a' + 10
	       : c >= 'A' && c <= 'F' ? c - 'A' + 10
	                              : -1;
}

/* %-decoded copy of s[0..n) (as MHD_http_unescape; '+' a space when plus). */
static char *unescape(const char *s, size_t n, bool plus)
{
	char *out = malloc(n + 1), *o = out;
	CHECK(out);
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '%' && i + 2 < n && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
			*o++ = (char)(hex(s[i + 1]) << 4 | hex(s[i + 2]));
			i += 2;
		} else {
			*o++ = plus && s[i] == '+' ? ' ' : s[i];
		}
	}
	*o = 0;
	return out;
}

static const char *lookup(const struct pair *v, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (!strcasecmp(v[i].name, name))
			return v[i].value;
	return NULL;
}

static const char *req_arg(const struct http_request *req, const char *name)
{
	const struct request *r = req->ctx;
	return lookup(r->args, r->n_args, name);
}

static const char *req_header(const struct http_request *req, const char *name)
{
	const struct request *r = req->ctx;
	return lookup(r->headers, r->n_headers, name);
}

static void parse_query(struct request *r, const char *q, size_t n)
{
	const char *end = q + n;
	while (q < end && r->n_args < ARGS_MAX) {
		const char *amp = memchr(q, '&', (size_t)(end - q));
		const char *e = amp ? amp : end, *eq = memchr(q, '=', (size_t)(e - q));
		if (e > q) {
			struct pair *a = &r->args[r->n_args++];
			a->name = unescape(q, (size_t)((eq ? eq : e) - q), true);
			a->value = eq ? unescape(eq + 1, (size_t)(e - eq - 1), true) : NULL;
		}
		q = e + (amp != NULL);
	}
}

static void request_parse(struct request *r, const char *in, size_t size)
{
	const char *end = in + size, *nl = memchr(in, '\n', size);
	const char *le = nl ? nl : end;
	memset(r, 0, sizeof(*r));
	/* METHOD SP TARGET [SP FLAGS] */
	const char *sp = memchr(in, ' ', (size_t)(le - in));
	const char *ms = sp ? sp : le;
	r->method = strndup(in, (size_t)(ms - in));
	const char *target = sp ? sp + 1 : le;
	const char *sp2 = memchr(target, ' ', (size_t)(le - target));
	const char *te = sp2 ? sp2 : le;
	if (te > target && te[-1] == '\r')
		te--;
	if (sp2) {
		size_t n = (size_t)(le - sp2 - 1);
		snprintf(r->flags, sizeof(r->flags), "%.*s", (int)n, sp2 + 1);
	}
	const char *qm = memchr(target, '?', (size_t)(te - target));
	r->path = unescape(target, (size_t)((qm ? qm : te) - target), false);
	if (qm)
		parse_query(r, qm + 1, (size_t)(te - qm - 1));
	/* NAME: VALUE lines */
	for (const char *p = nl ? nl + 1 : end; p < end && r->n_headers < HEADERS_MAX;) {
		const char *e = memchr(p, '\n', (size_t)(end - p));
		e = e ? e : end;
		const char *colon = memchr(p, ':', (size_t)(e - p));
		if (colon && colon > p) {
			const char *v = colon + 1, *ve = e;
			while (v < ve && (*v == ' ' || *v == '\t'))
				v++;
			while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t' || ve[-1] == '\r'))
				ve--;
			struct pair *h = &r->headers[r->n_headers++];
			h->name = strndup(p, (size_t)(colon - p));
			h->value = strndup(v, (size_t)(ve - v));
			CHECK(h->name && h->value);
		}
		p = e + 1;
	}
	CHECK(r->method && r->path);
	r->req = (struct http_request){r->method, r->path, req_arg, req_header, r};
}

static void request_free(struct request *r)
{
	for (size_t i = 0; i < r->n_args; i++) {
		free(r->args[i].name);
		free(r->args[i].value);
	}
	for (size_t i = 0; i < r->n_headers; i++) {
		free(r->headers[i].name);
		free(r->headers[i].value);
	}
	free(r->method);
	free(r->path);
}

/* ---- checks ---- */

static bool get_or_head(const char *method)
{
	return !strcmp(method, "GET") || !strcmp(method, "HEAD");
}

static bool valid_name(const char *s)
{
	size_t n = strlen(s);
	return n >= 1 && n <= METER_NAME_MAX &&
	       strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_-") == n;
}

static bool meter_route(enum api_route r)
{
	return r == API_NOW || r == API_TELEGRAM || r == API_EVENTS || r == API_HISTORY;
}

/* api_v1_parse alone: what it names, and buffers of every size around the name. */
static enum api_route check_parse(const char *path, char *meter)
{
	static const char *const leaves[] = {"", "", "", "now", "telegram", "events", "history"};
	enum api_route r = api_v1_parse(path, meter, METER_NAME_MAX + 1);
	char small[METER_NAME_MAX + 1];
	CHECK(r >= API_NOT_FOUND && r <= API_HW_TELEGRAM && r != API_STATIC);
	CHECK(strlen(meter) <= METER_NAME_MAX);
	CHECK(api_v1_parse(NULL, small, sizeof(small)) == API_NOT_FOUND);
	CHECK(api_v1_parse(path, NULL, 8) == API_NOT_FOUND);
	if (!meter[0])
		return r;
	CHECK(meter_route(r) && valid_name(meter));
	char want[128];
	snprintf(want, sizeof(want), "/api/v1/meters/%s/%s", meter, leaves[r]);
	CHECK(!strcmp(path, want));
	size_t n = strlen(meter);
	CHECK(api_v1_parse(path, small, n + 1) == r && !strcmp(small, meter));
	CHECK(api_v1_parse(path, small, n) == API_NOT_FOUND && !small[0]);
	return r;
}

static void check_json(const struct http_reply *rep)
{
	json_error_t e;
	json_t *j = json_loadb(rep->body, rep->len, 0, &e);
	if (!j || !json_ok(rep->body, rep->len, 0)) {
		fprintf(stderr, "fuzz_http: invalid JSON (%s):\n%.*s\n", j ? "not ASCII" : e.text,
		        (int)(rep->len > 4000 ? 4000 : rep->len), rep->body);
		abort();
	}
	if (rep->status >= 400) {
		CHECK(json_is_object(j) && json_object_size(j) == 1);
		CHECK(json_is_string(json_object_get(j, "error")));
		CHECK(json_string_length(json_object_get(j, "error")) > 0);
	}
	json_decref(j);
}

/* mask=1: the raw text with the values of equipment id lines (0-n:96.1.0, 0-n:96.1.1,
 * 0-0:96.1.2) turned into X, up to the closing parenthesis or the line's end. */
static void check_masked(const char *body, const struct p1_telegram *t)
{
	const char *raw = t->raw;
	size_t len = t->raw_len;
	char *want = malloc(len + 1);
	CHECK(want);
	memcpy(want, raw, len + 1);
	for (size_t i = 0; i + 12 <= len; i++) {
		if ((i && raw[i - 1] != '\n') || strncmp(raw + i, "0-", 2) ||
		    !isdigit((unsigned char)raw[i + 2]) || strncmp(raw + i + 3, ":96.1.", 6) ||
		    raw[i + 9] < '0' || raw[i + 9] > '2' || raw[i + 10] != '(')
			continue;
		for (size_t j = i + 11; j < len && raw[j] != ')' && raw[j] != '\n'; j++)
			want[j] = 'X';
	}
	CHECK(!memcmp(body, want, len + 1));
	free(want);
}

static void check_reply(const struct http_ctx *ctx, const struct request *rq,
                        const struct http_reply *rep)
{
	char meter[METER_NAME_MAX + 1];
	enum api_route route = check_parse(rq->path, meter);
	bool hw = route == API_HW_API || route == API_HW_DATA;
	bool known = (route != API_NOT_FOUND && (!hw || ctx->homewizard)) ||
	             http_static_known(ctx->www, rq->path);
	int s = rep->status;
	CHECK(s == 200 || s == 304 || s == 400 || s == 404 || s == 405 || s == 503);
	CHECK((s == 405) == (known && !get_or_head(rq->method)));
	CHECK(s == 405 ? rep->allow && !strcmp(rep->allow, "GET, HEAD") : !rep->allow);
	if (!known)
		CHECK(s == 404);
	if (rep->sse) {
		CHECK(s == 200 && route == API_EVENTS && !rep->body);
		CHECK(rep->sse_meter >= 0 && (size_t)rep->sse_meter < ctx->n_meters);
		return;
	}
	if (s == 304) {
		CHECK(!rep->body && !rep->len && http_static_known(ctx->www, rq->path));
		return;
	}
	CHECK(rep->body && rep->content_type);
	CHECK(rep->body[rep->len] == 0 && strlen(rep->body) == rep->len);
	if (!strcmp(rep->content_type, "application/json"))
		check_json(rep);
	else
		CHECK(s == 200);
	if (route == API_HISTORY && s != 404 && s != 405) {
		/* the resolution is checked before the hook, which only the daemon has */
		const char *res = req_arg(&rq->req, "resolution");
		bool bad = res && store_resolution_by_name(res) < 0;
		CHECK(s == (bad ? 400 : 503));
	}
	if (s != 200 || !meter_route(route))
		return;
	int index = -1;
	for (size_t i = 0; i < ctx->n_meters && index < 0; i++)
		if (!meter[0] || !strcmp(meter, ctx->meters[i].name))
			index = (int)i;
	CHECK(index >= 0 && index < 2 && ctx->meters[index].latest == srv.t[index]);
	const struct p1_telegram *t = srv.t[index];
	if (route == API_NOW) {
		CHECK(rep->len == srv.now_len[index] &&
		      !memcmp(rep->body, srv.now_json[index], rep->len));
	} else if (route == API_TELEGRAM) {
		const char *mask = req_arg(&rq->req, "mask");
		CHECK(rep->len == t->raw_len);
		if (mask && (!mask[0] || !strcmp(mask, "1") || !strcmp(mask, "true")))
			check_masked(rep->body, t);
		else
			CHECK(!memcmp(rep->body, t->raw, t->raw_len));
	} else {
		CHECK(0); /* history needs the daemon's hook; events were above */
	}
}

/* ---- history ---- */

static bool near_limit(int64_t t)
{
	return t - HISTORY_DATE_MIN < 2 * 86400 || HISTORY_DATE_MAX - t < 2 * 86400;
}

static void check_date(const char *s)
{
	int64_t a = 0, b = 0;
	char buf[128];
	int ra = history_parse_date(s, &tz_cet, &a), rb = history_parse_date(s, &tz_utc, &b);
	CHECK(ra == 0 || ra == -EINVAL);
	CHECK(rb == 0 || rb == -EINVAL);
	if (ra == 0)
		CHECK(a >= HISTORY_DATE_MIN && a <= HISTORY_DATE_MAX);
	if (rb == 0)
		CHECK(b >= HISTORY_DATE_MIN && b <= HISTORY_DATE_MAX);
	if (ra != rb) {
		/* only a local time at the ends of the range depends on the zone */
		CHECK(near_limit(ra == 0 ? a : b));
		return;
	}
	if (ra < 0)
		return;
	size_t n = strlen(s);
	if (n && strspn(s, "0123456789") == n) {
		CHECK(a == b && a == strtoll(s, NULL, 10));
	} else if (n > 1 && s[n - 1] == 'Z' && n < sizeof(buf) - 6) {
		/* Z is +00:00, in any zone */
		int64_t c;
		snprintf(buf, sizeof(buf), "%.*s+00:00", (int)(n - 1), s);
		CHECK(history_parse_date(buf, &tz_cet, &c) == 0 && c == a && a == b);
	}
}

static size_t count_rows(const char *s, size_t len, bool csv)
{
	size_t n = 0;
	if (csv) {
		for (size_t i = 0; i < len; i++)
			n += s[i] == '\n';
		return n - 1; /* the header */
	}
	json_error_t e;
	json_t *j = json_loadb(s, len, 0, &e);
	if (!j || !json_is_array(j)) {
		fprintf(stderr, "fuzz_http: history is not a JSON array (%s):\n%.*s\n", e.text,
		        (int)(len > 4000 ? 4000 : len), s);
		abort();
	}
	n = json_array_size(j);
	json_decref(j);
	return n;
}

/* The reply the daemon streams (history_stream_*) is the text history_write() gives, read in
 * pieces of any size, in a bounded number of calls. */
static void check_stream(const char *meter, const struct history_query *q, const char *want,
                         size_t want_len, size_t piece)
{
	static const int64_t bucket_s[] = {60, 3600, 86400, 28 * 86400};
	struct history_stream *hs;
	char buf[STREAM_PIECE_MAX];
	size_t got = 0, calls = 0;
	size_t steps = (size_t)((q->to - q->from) / bucket_s[q->res] / HISTORY_STREAM_STEP) + 2;
	CHECK(history_stream_new(srv.store, meter, q, &tz_cet, &hs) == 0 && hs);
	for (;;) {
		ssize_t k = history_stream_read(hs, buf, piece);
		if (k == -1)
			break;
		CHECK(k >= 0 && (size_t)k <= piece && got + (size_t)k <= want_len);
		CHECK(!memcmp(buf, want + got, (size_t)k));
		got += (size_t)k;
		CHECK(++calls <= 2 * steps + want_len / piece + 4);
	}
	CHECK(got == want_len);
	CHECK(history_stream_read(hs, buf, piece) == -1);
	history_stream_free(hs);
}

static void check_history(const struct request *rq, const char *meter, size_t piece)
{
	static const int64_t bucket_s[] = {60, 3600, 86400, 28 * 86400};
	static const int64_t span_s[] = {3600, 86400, 31 * 86400, 365 * 86400};
	const struct http_request *req = &rq->req;
	struct history_params p = {req_arg(req, "resolution"), req_arg(req, "from"),
	                           req_arg(req, "to"), req_arg(req, "format"),
	                           req_header(req, "Accept")};
	struct history_query q;
	const char *why = NULL;
	if (p.from)
		check_date(p.from);
	if (p.to)
		check_date(p.to);
	if (!p.resolution && !p.from && !p.to)
		return;
	if (p.resolution) {
		int res = store_resolution_by_name(p.resolution);
		CHECK(res >= -1 && res < STORE_RES_COUNT);
		CHECK(res < 0 ||
		      !strcmp(store_resolution_name((enum store_resolution)res), p.resolution));
	}
	int r = history_query_parse(&p, &tz_cet, NOW, &q, &why);
	CHECK(r == 0 || r == -EINVAL);
	if (r < 0) {
		CHECK(why && why[0]);
		return;
	}
	CHECK(p.resolution && (unsigned)q.res < STORE_RES_COUNT);
	CHECK(q.from < q.to);
	CHECK((q.to - q.from) / bucket_s[q.res] <= HISTORY_BUCKETS_MAX);
	if (!p.to)
		CHECK(q.to > NOW && q.to <= NOW + 32 * 86400);
	if (!p.from)
		CHECK(q.to - q.from <= span_s[q.res] + 32 * 86400);
	CHECK(q.csv ==
	      (p.format ? !strcmp(p.format, "csv") : p.accept && strstr(p.accept, "text/csv")));

	char *body = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&body, &len);
	CHECK(f);
	int n = history_write(srv.store, meter, q.res, q.from, q.to, &tz_cet, !q.csv, f);
	CHECK(fclose(f) == 0 && body);
	CHECK(n >= 0 && n <= READINGS + 2);
	CHECK((size_t)n == count_rows(body, len, q.csv));
	if ((q.to - q.from) / bucket_s[q.res] <= STREAM_BUCKETS_MAX)
		check_stream(meter, &q, body, len, piece);
	free(body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool ready;
	if (!ready) {
		server_init();
		ready = true;
	}
	struct request rq;
	request_parse(&rq, (const char *)data, size);
	struct http_ctx *ctx = malloc(sizeof(*ctx));
	CHECK(ctx);
	ctx_init(ctx, rq.flags);

	struct http_reply a = {0}, b = {0};
	api_dispatch(ctx, &rq.req, &a);
	check_reply(ctx, &rq, &a);
	/* answered again, alike */
	api_dispatch(ctx, &rq.req, &b);
	CHECK(a.status == b.status && a.len == b.len && a.sse == b.sse);
	CHECK(!a.body == !b.body && (!a.body || !memcmp(a.body, b.body, a.len)));
	CHECK(!a.content_type == !b.content_type &&
	      (!a.content_type || !strcmp(a.content_type, b.content_type)));
	free(a.body);
	free(b.body);

	char meter[METER_NAME_MAX + 1];
	api_v1_parse(rq.path, meter, sizeof(meter));
	check_history(&rq, meter[0] ? meter : "main", 1 + size % STREAM_PIECE_MAX);

	free(ctx);
	request_free(&rq);
	return 0;
}
