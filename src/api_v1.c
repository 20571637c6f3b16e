/* api_v1.c - the routes of the HTTP API: path parsing, method and parameter checks, and the
 * JSON/text bodies of /api/v1/... (the HomeWizard and Prometheus bodies live in their own
 * files). Works on plain data (struct http_ctx) and never touches a socket or MHD, so every
 * route is testable without a server; http.c calls api_dispatch() once per request.
 * Telegram values are printed by libp1's exact JSON writer, never through jansson reals.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "http_static.h"
#include "p1/json.h"
#include "version.h"

#define API_METER_NAME_MAX 32
#define API_TELEGRAM_JSON_START 16384u

void http_reply_take(struct http_reply *r, int status, const char *type, char *body, size_t len)
{
	free(r->body);
	r->status = status;
	r->content_type = type;
	r->body = body;
	r->len = len;
}

void http_reply_json(struct http_reply *r, int status, json_t *j)
{
	char *s = j ? json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
	json_decref(j);
	if (!s) {
		/* out of memory: a static body the server knows not to free is not possible
		 * with a malloc'd reply, so try a tiny allocation once more */
		s = strdup("{\"error\":\"out of memory\"}");
		status = 503;
	}
	http_reply_take(r, status, "application/json", s, s ? strlen(s) : 0);
}

void http_reply_error(struct http_reply *r, int status, const char *msg)
{
	http_reply_json(r, status, json_pack("{s:s}", "error", msg));
}

static bool valid_meter_name(const char *s, size_t n)
{
	if (n == 0 || n > API_METER_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_' ||
		      s[i] == '-'))
			return false;
	return true;
}

static enum api_route meter_route(const char *leaf)
{
	static const struct {
		const char *name;
		enum api_route route;
	} leaves[] = {
	        {"now", API_NOW},
	        {"telegram", API_TELEGRAM},
	        {"events", API_EVENTS},
	        {"history", API_HISTORY},
	};
	for (size_t i = 0; i < sizeof(leaves) / sizeof(leaves[0]); i++)
		if (!strcmp(leaf, leaves[i].name))
			return leaves[i].route;
	return API_NOT_FOUND;
}

enum api_route api_v1_parse(const char *path, char *meter, size_t meter_size)
{
	static const char v1[] = "/api/v1/", meters[] = "meters/";
	if (!path || !meter || meter_size == 0)
		return API_NOT_FOUND;
	meter[0] = 0;
	if (!strcmp(path, "/metrics"))
		return API_METRICS;
	if (!strcmp(path, "/api"))
		return API_HW_API;
	if (strncmp(path, v1, sizeof(v1) - 1))
		return API_NOT_FOUND;
	const char *rest = path + sizeof(v1) - 1;
	if (!strcmp(rest, "meters"))
		return API_METERS;
	if (!strcmp(rest, "status"))
		return API_STATUS;
	if (!strcmp(rest, "data"))
		return API_HW_DATA;
	if (!strcmp(rest, "telegram"))
		return API_TELEGRAM; /* also HomeWizard's /api/v1/telegram: the same text */
	if (strncmp(rest, meters, sizeof(meters) - 1))
		return meter_route(rest);
	const char *name = rest + sizeof(meters) - 1, *slash = strchr(name, '/');
	if (!slash)
		return API_NOT_FOUND;
	size_t n = (size_t)(slash - name);
	if (!valid_meter_name(name, n) || n >= meter_size)
		return API_NOT_FOUND;
	enum api_route r = meter_route(slash + 1);
	if (r != API_NOT_FOUND) {
		memcpy(meter, name, n);
		meter[n] = 0;
	}
	return r;
}

static const struct http_meter_view *find_meter(const struct http_ctx *ctx, const char *name,
                                                int *ret_index)
{
	for (size_t i = 0; i < ctx->n_meters; i++)
		if (!name[0] || !strcmp(ctx->meters[i].name, name)) {
			*ret_index = (int)i;
			return &ctx->meters[i];
		}
	return NULL;
}

static json_t *meter_json(const struct http_meter_view *m)
{
	json_t *errors = json_object(), *o;
	for (int e = 1; e < P1_ERR_COUNT; e++)
		json_object_set_new(errors, p1_error_id((enum p1_error)e),
		                    json_integer((json_int_t)m->stats.errors[e]));
	o = json_pack("{s:s, s:s, s:s, s:b, s:I, s:I, s:I, s:o, s:I, s:I}", "name", m->name,
	              "source", m->source_kind, "state", m->source_state, "connected", m->connected,
	              "telegrams", (json_int_t)m->stats.telegrams, "rejected",
	              (json_int_t)m->stats.rejected, "crc_errors",
	              (json_int_t)m->stats.errors[P1_ERR_CRC], "errors", errors, "reopens",
	              (json_int_t)m->src.reopens, "bytes", (json_int_t)m->src.bytes);
	if (o)
		json_object_set_new(o, "last_telegram_age_ms",
		                    m->last_age_ms < 0 ? json_null()
		                                       : json_integer(m->last_age_ms));
	return o;
}

static void route_meters(const struct http_ctx *ctx, struct http_reply *r)
{
	json_t *a = json_array();
	for (size_t i = 0; i < ctx->n_meters; i++)
		json_array_append_new(a, meter_json(&ctx->meters[i]));
	http_reply_json(r, 200, json_pack("{s:o}", "meters", a));
}

static void route_status(const struct http_ctx *ctx, struct http_reply *r)
{
	json_t *names = json_array(), *s;
	for (size_t i = 0; i < ctx->n_meters; i++)
		json_array_append_new(names, meter_json(&ctx->meters[i]));
	s = json_pack("{s:s, s:I, s:o, s:n, s:n}", "version", P1D_VERSION, "uptime_s",
	              (json_int_t)ctx->uptime_s, "meters", names, "mqtt", "store");
	if (s)
		http_run_status_hooks(ctx->h, s);
	http_reply_json(r, 200, s);
}

static void route_now(const struct http_meter_view *m, struct http_reply *r)
{
	size_t cap = API_TELEGRAM_JSON_START;
	for (int tries = 0; tries < 2; tries++) {
		char *buf = malloc(cap);
		if (!buf)
			break;
		size_t n = p1_json_telegram(m->latest, P1_JSON_ALL, buf, cap);
		if (n < cap) {
			http_reply_take(r, 200, "application/json", buf, n);
			return;
		}
		free(buf);
		if (n >= HTTP_BODY_MAX)
			break;
		cap = n + 1;
	}
	http_reply_error(r, 503, "out of memory");
}

/* "1", "true", "0", "false", absent; -1 for anything else */
static int bool_arg(const struct http_request *req, const char *name)
{
	const char *v = req->arg ? req->arg(req, name) : NULL;
	if (!v)
		return 0;
	if (!strcmp(v, "1") || !strcmp(v, "true") || !v[0])
		return 1;
	if (!strcmp(v, "0") || !strcmp(v, "false"))
		return 0;
	return -1;
}

static void route_telegram(const struct http_meter_view *m, const struct http_request *req,
                           struct http_reply *r)
{
	int mask = bool_arg(req, "mask");
	if (mask < 0) {
		http_reply_error(r, 400, "mask must be 0 or 1");
		return;
	}
	char *body = mask ? api_mask_telegram(m->latest->raw, m->latest->raw_len)
	                  : malloc(m->latest->raw_len + 1);
	if (!body) {
		http_reply_error(r, 503, "out of memory");
		return;
	}
	if (!mask)
		memcpy(body, m->latest->raw, m->latest->raw_len + 1);
	http_reply_take(r, 200, "text/plain; charset=utf-8", body, m->latest->raw_len);
}

static void route_history(const struct http_ctx *ctx, const char *meter,
                          const struct http_request *req, struct http_reply *r)
{
	static const char *const resolutions[] = {"minute", "hour", "day", "month"};
	const char *res = req->arg ? req->arg(req, "resolution") : NULL;
	if (res) {
		size_t i = 0;
		while (i < 4 && strcmp(res, resolutions[i]))
			i++;
		if (i == 4) {
			http_reply_error(r, 400, "resolution must be minute, hour, day or month");
			return;
		}
	}
	if (http_run_history_hook(ctx->h, meter, req, r) == -ENOSYS)
		http_reply_error(r, 503, "history store not available");
}

static void route_metrics(const struct http_ctx *ctx, struct http_reply *r)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	if (!f) {
		http_reply_error(r, 503, "out of memory");
		return;
	}
	api_metrics_write(ctx, f);
	if (fclose(f) != 0 || !buf) {
		free(buf);
		http_reply_error(r, 503, "out of memory");
		return;
	}
	http_reply_take(r, 200, "text/plain; version=0.0.4; charset=utf-8", buf, len);
}

static void route_hw(const struct http_ctx *ctx, enum api_route route, struct http_reply *r)
{
	const struct http_meter_view *m = ctx->n_meters ? &ctx->meters[0] : NULL;
	char *s;
	if (!m) {
		http_reply_error(r, 404, "no meter");
		return;
	}
	if (route == API_HW_DATA && !m->latest) {
		http_reply_error(r, 503, "no telegram received yet");
		return;
	}
	s = route == API_HW_DATA ? api_hw_data(m->latest) : api_hw_info(m);
	if (!s)
		http_reply_error(r, 503, "out of memory");
	else
		http_reply_take(r, 200, "application/json", s, strlen(s));
}

static void meter_dispatch(const struct http_ctx *ctx, enum api_route route, const char *name,
                           const struct http_request *req, struct http_reply *r)
{
	int index = 0;
	const struct http_meter_view *m = find_meter(ctx, name, &index);
	if (!m) {
		http_reply_error(r, 404, name[0] ? "unknown meter" : "no meter");
		return;
	}
	if (route == API_HISTORY) {
		route_history(ctx, m->name, req, r);
		return;
	}
	if (route == API_EVENTS) {
		r->status = 200;
		r->sse = true;
		r->sse_meter = index;
		return;
	}
	if (!m->latest) {
		http_reply_error(r, 503, "no telegram received yet");
		return;
	}
	if (route == API_NOW)
		route_now(m, r);
	else
		route_telegram(m, req, r);
}

void api_dispatch(const struct http_ctx *ctx, const struct http_request *req, struct http_reply *r)
{
	char meter[API_METER_NAME_MAX + 1];
	enum api_route route = api_v1_parse(req->path, meter, sizeof(meter));
	if (!ctx->homewizard && (route == API_HW_API || route == API_HW_DATA))
		route = API_NOT_FOUND;
	if (route == API_NOT_FOUND && http_static_known(ctx->www, req->path))
		route = API_STATIC;
	if (route == API_NOT_FOUND) {
		http_reply_error(r, 404, "not found");
		return;
	}
	if (strcmp(req->method, "GET") && strcmp(req->method, "HEAD")) {
		r->allow = "GET, HEAD";
		http_reply_error(r, 405, "method not allowed");
		return;
	}
	switch (route) {
	case API_METERS:
		route_meters(ctx, r);
		break;
	case API_STATUS:
		route_status(ctx, r);
		break;
	case API_METRICS:
		route_metrics(ctx, r);
		break;
	case API_HW_API:
	case API_HW_DATA:
		route_hw(ctx, route, r);
		break;
	case API_STATIC:
		http_static_serve(ctx->www, req, r);
		break;
	default:
		meter_dispatch(ctx, route, meter, req, r);
		break;
	}
}

/* Masks the value of equipment id lines (0-n:96.1.0, 0-n:96.1.1, 0-0:96.1.2: meter, M-Bus
 * and EAN ids) with 'X', keeping the length. The CRC no longer matches the masked text. */
char *api_mask_telegram(const char *raw, size_t len)
{
	char *out = malloc(len + 1);
	if (!out)
		return NULL;
	memcpy(out, raw, len);
	out[len] = 0;
	for (size_t i = 0; i < len; i++) {
		if (i > 0 && out[i - 1] != '\n')
			continue;
		if (len - i < 12 || out[i] != '0' || out[i + 1] != '-' || out[i + 2] < '0' ||
		    out[i + 2] > '9' || memcmp(out + i + 3, ":96.1.", 6) || out[i + 9] < '0' ||
		    out[i + 9] > '2' || out[i + 10] != '(')
			continue;
		for (size_t j = i + 11; j < len && out[j] != ')' && out[j] != '\n'; j++)
			out[j] = 'X';
	}
	return out;
}
