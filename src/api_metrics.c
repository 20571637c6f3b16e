/* api_metrics.c - GET /metrics: the Prometheus text exposition (format 0.0.4).
 *
 * Every numeric counter or gauge field of fields.h becomes one metric family named
 * p1d_<field>[_<unit>][_total], labelled meter="..."; COUNTER fields are counters, GAUGE
 * fields gauges. Values are printed exactly as the meter sent them (in the field's unit;
 * Wh or W are converted to kWh/kW by moving the decimal point). p1d's own health follows.
 * Each family is written once with all meters' samples together, as the format requires.
 * Pure: writes into a FILE (a memstream) from plain data.
 */
#include <inttypes.h>
#include <string.h>

#include "http.h"
#include "version.h"

static const char *unit_suffix(const char *unit)
{
	static const struct {
		const char *unit, *suffix;
	} map[] = {
	        {"kWh", "kwh"},   {"kW", "kw"},    {"kvarh", "kvarh"}, {"kvar", "kvar"},
	        {"kVA", "kva"},   {"m3", "m3"},    {"GJ", "gj"},       {"V", "volts"},
	        {"A", "amperes"}, {"Hz", "hertz"}, {"s", "seconds"},
	};
	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
		if (!strcmp(unit, map[i].unit))
			return map[i].suffix;
	return NULL;
}

/* The value in the field's unit, exactly. False when it cannot be expressed. */
static bool format_value(const struct p1_num *n, const char *field_unit, char *buf, size_t cap)
{
	int64_t milli;
	if (!n->unit || !strcmp(n->unit, field_unit) || !field_unit[0]) {
		size_t len = p1_num_format(n, buf, cap);
		return len < cap;
	}
	if (!p1_num_milli(n, &milli))
		return false;
	struct p1_num m = {.mant = milli, .scale = 3};
	size_t len = p1_num_format(&m, buf, cap);
	return len < cap;
}

static void write_help(FILE *out, const char *name, const char *type, const char *help)
{
	fprintf(out, "# HELP %s ", name);
	for (const char *p = help; *p; p++) {
		if (*p == '\\')
			fputs("\\\\", out);
		else if (*p == '\n')
			fputs("\\n", out);
		else
			fputc(*p, out);
	}
	fprintf(out, "\n# TYPE %s %s\n", name, type);
}

static void write_fields(const struct http_ctx *ctx, FILE *out)
{
	char name[128], value[48];
	for (int f = 0; f < P1_FIELD_COUNT; f++) {
		const struct p1_field_info *fi = p1_field_info((enum p1_field)f);
		if (fi->kind != P1_KIND_NUMBER || fi->cls == P1_CLASS_INFO)
			continue;
		bool counter = fi->cls == P1_CLASS_COUNTER, header = false;
		const char *suffix = unit_suffix(fi->unit);
		snprintf(name, sizeof(name), "p1d_%s%s%s%s", fi->name, suffix ? "_" : "",
		         suffix ? suffix : "", counter ? "_total" : "");
		for (size_t i = 0; i < ctx->n_meters; i++) {
			const struct p1_telegram *t = ctx->meters[i].latest;
			if (!t || !p1_has(t, (enum p1_field)f) ||
			    !format_value(&t->fields[f].num, fi->unit, value, sizeof(value)))
				continue;
			if (!header) {
				write_help(out, name, counter ? "counter" : "gauge",
				           fi->description);
				header = true;
			}
			fprintf(out, "%s{meter=\"%s\"} %s\n", name, ctx->meters[i].name, value);
		}
	}
}

/* One family with one sample per meter. */
static void write_health_u64(const struct http_ctx *ctx, FILE *out, const char *name,
                             const char *type, const char *help, size_t offset_in_view)
{
	write_help(out, name, type, help);
	for (size_t i = 0; i < ctx->n_meters; i++) {
		uint64_t v;
		memcpy(&v, (const char *)&ctx->meters[i] + offset_in_view, sizeof(v));
		fprintf(out, "%s{meter=\"%s\"} %" PRIu64 "\n", name, ctx->meters[i].name, v);
	}
}

#define VIEW_OFF(member) offsetof(struct http_meter_view, member)

static void write_health(const struct http_ctx *ctx, FILE *out)
{
	write_help(out, "p1d_build_info", "gauge", "p1d version");
	fprintf(out, "p1d_build_info{version=\"%s\"} 1\n", P1D_VERSION);
	write_help(out, "p1d_uptime_seconds", "gauge", "Seconds since p1d started");
	fprintf(out, "p1d_uptime_seconds %" PRId64 "\n", ctx->uptime_s);
	write_health_u64(ctx, out, "p1d_telegrams_total", "counter", "Valid telegrams received",
	                 VIEW_OFF(stats.telegrams));
	write_help(out, "p1d_rejected_total", "counter", "Rejected frames by reason");
	for (size_t i = 0; i < ctx->n_meters; i++)
		for (int e = 1; e < P1_ERR_COUNT; e++)
			fprintf(out, "p1d_rejected_total{meter=\"%s\",reason=\"%s\"} %" PRIu64 "\n",
			        ctx->meters[i].name, p1_error_id((enum p1_error)e),
			        ctx->meters[i].stats.errors[e]);
	write_help(out, "p1d_last_telegram_age_seconds", "gauge",
	           "Seconds since the last valid telegram (absent before the first)");
	for (size_t i = 0; i < ctx->n_meters; i++)
		if (ctx->meters[i].last_age_ms >= 0)
			fprintf(out,
			        "p1d_last_telegram_age_seconds{meter=\"%s\"} %" PRId64 ".%03d\n",
			        ctx->meters[i].name, ctx->meters[i].last_age_ms / 1000,
			        (int)(ctx->meters[i].last_age_ms % 1000));
	write_health_u64(ctx, out, "p1d_source_reopens_total", "counter",
	                 "Times the source came back after it was lost", VIEW_OFF(src.reopens));
	write_health_u64(ctx, out, "p1d_source_failures_total", "counter",
	                 "Failed source opens plus lost connections", VIEW_OFF(src.failures));
	write_health_u64(ctx, out, "p1d_source_bytes_total", "counter",
	                 "Bytes read from the source", VIEW_OFF(src.bytes));
	write_help(out, "p1d_source_connected", "gauge", "1 while the source is connected");
	for (size_t i = 0; i < ctx->n_meters; i++)
		fprintf(out, "p1d_source_connected{meter=\"%s\"} %d\n", ctx->meters[i].name,
		        ctx->meters[i].connected ? 1 : 0);
}

void api_metrics_write(const struct http_ctx *ctx, FILE *out)
{
	write_fields(ctx, out);
	write_health(ctx, out);
	http_run_metrics_hooks(ctx->h, out);
}
