/* history_format.c - history buckets as CSV or JSON, for `p1d history` and the HTTP history
 * route: one row per bucket, `start` and `end` in ISO 8601 with offset, the amount of each
 * register named after its field (thousandths printed exactly), power min/avg/max in kW. */
#include "history_format.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* "2026-10-01" (local midnight), "2026-10-01T12:00[:00]" (local), with "Z" or "+hh:mm" (that
 * offset), or seconds since 1970. */
int history_parse_date(const char *s, const struct p1_tz *tz, int64_t *ret)
{
	int y, mo, d, h = 0, mi = 0, se = 0, n = 0;
	char *end;
	long long secs = strtoll(s, &end, 10);
	if (*s && !*end) {
		*ret = secs;
		return 0;
	}
	if (sscanf(s, "%4d-%2d-%2d%n", &y, &mo, &d, &n) != 3)
		return -EINVAL;
	s += n;
	if (*s == 'T' || *s == ' ') {
		if (sscanf(s + 1, "%2d:%2d%n", &h, &mi, &n) != 2)
			return -EINVAL;
		s += 1 + n;
		if (*s == ':' && sscanf(s + 1, "%2d%n", &se, &n) == 1)
			s += 1 + n;
	}
	if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60)
		return -EINVAL;
	int64_t local = p1_time_from_civil(y, mo, d, h, mi, se);
	if (*s == 'Z' && !s[1]) {
		*ret = local;
	} else if ((*s == '+' || *s == '-') && strlen(s) == 6 && s[3] == ':') {
		int oh = atoi(s + 1), om = atoi(s + 4);
		*ret = local - (*s == '-' ? -1 : 1) * (oh * 3600 + om * 60);
	} else if (!*s) {
		/* local time: summer time if that reading of it is summer time (the first of a
		 * repeated hour), else standard time */
		int64_t u = local - tz->dst_offset_s;
		*ret = tz->eu_rule && p1_tz_is_dst(tz, u) ? u : local - tz->std_offset_s;
	} else {
		return -EINVAL;
	}
	return 0;
}

static void put_milli(FILE *f, int64_t v)
{
	uint64_t a = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
	fprintf(f, "%s%" PRIu64 ".%03u", v < 0 ? "-" : "", a / 1000, (unsigned)(a % 1000));
}

struct print_run {
	FILE *out;
	const struct p1_tz *tz;
	bool json, first;
	uint32_t have; /* columns printed */
	bool power;
};

static int collect(void *ud, const struct store_bucket *b)
{
	struct print_run *p = ud;
	p->have |= b->have;
	p->power |= b->have_power;
	return 0;
}

static int print_bucket(void *ud, const struct store_bucket *b)
{
	struct print_run *p = ud;
	char s[32], e[32];
	p1_time_format_tz(b->start_utc, p->tz, s, sizeof(s));
	p1_time_format_tz(b->end_utc, p->tz, e, sizeof(e));
	if (p->json)
		fprintf(p->out, "%s{\"start\":\"%s\",\"end\":\"%s\"", p->first ? "[\n" : ",\n", s, e);
	else
		fprintf(p->out, "%s,%s", s, e);
	p->first = false;
	for (int r = 0; r < STORE_REG_COUNT; r++) {
		if (!(p->have & (1u << r)))
			continue;
		if (p->json)
			fprintf(p->out, ",\"%s\":", p1_field_info(store_reg_field(r))->name);
		else
			fputc(',', p->out);
		if (b->have & (1u << r))
			put_milli(p->out, b->amount[r]);
		else if (p->json)
			fputs("null", p->out);
	}
	const char *pn[3] = {"power_min", "power_avg", "power_max"};
	int64_t pv[3] = {b->power_min_w, b->power_avg_w, b->power_max_w};
	for (int i = 0; p->power && i < 3; i++) {
		if (p->json)
			fprintf(p->out, ",\"%s\":", pn[i]);
		else
			fputc(',', p->out);
		if (b->have_power)
			put_milli(p->out, pv[i]);
		else if (p->json)
			fputs("null", p->out);
	}
	fputs(p->json ? "}" : "\n", p->out);
	return 0;
}


int history_write(struct store *s, const char *meter, enum store_resolution res, int64_t from,
		  int64_t to, const struct p1_tz *tz, bool json, FILE *out)
{
	struct print_run p = {.out = out, .tz = tz, .json = json, .first = true};
	int n = store_query_history(s, meter, res, from, to, collect, &p);
	if (n >= 0 && !p.json) {
		fputs("start,end", out);
		for (int r = 0; r < STORE_REG_COUNT; r++)
			if (p.have & (1u << r))
				fprintf(out, ",%s", p1_field_info(store_reg_field(r))->name);
		fputs(p.power ? ",power_min,power_avg,power_max\n" : "\n", out);
	}
	if (n >= 0)
		n = store_query_history(s, meter, res, from, to, print_bucket, &p);
	if (n >= 0 && p.json)
		fputs(p.first ? "[]\n" : "\n]\n", out);
	return n;
}

size_t history_reading_json(const struct store_reading *r, const struct p1_tz *tz, char *buf,
			    size_t cap)
{
	char when[32];
	FILE *f = fmemopen(buf, cap, "w");
	if (!f)
		return cap;
	p1_time_format_tz(r->utc, tz, when, sizeof(when));
	fprintf(f, "{\"timestamp\":\"%s\",\"from_history\":true", when);
	for (int i = 0; i < STORE_REG_COUNT; i++) {
		if (!(r->have >> i & 1u))
			continue;
		fprintf(f, ",\"%s\":", p1_field_info(store_reg_field((enum store_reg)i))->name);
		put_milli(f, r->reg[i]);
	}
	if (r->have_power) {
		fputs(",\"power_delivered\":", f);
		put_milli(f, r->power_w > 0 ? r->power_w : 0);
		fputs(",\"power_returned\":", f);
		put_milli(f, r->power_w < 0 ? -r->power_w : 0);
	}
	fputs(",\"units\":{", f);
	bool first = true;
	for (int i = 0; i < STORE_REG_COUNT; i++) {
		if (!(r->have >> i & 1u))
			continue;
		const struct p1_field_info *fi = p1_field_info(store_reg_field((enum store_reg)i));
		fprintf(f, "%s\"%s\":\"%s\"", first ? "" : ",", fi->name, fi->unit);
		first = false;
	}
	if (r->have_power)
		fprintf(f, "%s\"power_delivered\":\"kW\",\"power_returned\":\"kW\"",
			first ? "" : ",");
	fputs("}}", f);
	long n = ftell(f);
	bool ok = !ferror(f) && n >= 0 && (size_t)n < cap;
	fclose(f);
	return ok ? (size_t)n : cap;
}
