/* history_format.c - history buckets as CSV or JSON, for `p1d history` and the HTTP history
 * route: one row per bucket, `start` and `end` in ISO 8601 with offset, the amount of each
 * register named after its field (thousandths printed exactly), power min/avg/max in kW. */
#include "history_format.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static bool two_digits(const char *s)
{
	return isdigit((unsigned char)s[0]) && isdigit((unsigned char)s[1]);
}

/* "2026-10-01" (local midnight), "2026-10-01T12:00[:00]" (local), with "Z" or "+hh:mm" (that
 * offset), or seconds since 1970; years 0 to 9999, so that no arithmetic on dates overflows. */
int history_parse_date(const char *s, const struct p1_tz *tz, int64_t *ret)
{
	int y, mo, d, h = 0, mi = 0, se = 0, n = 0;
	int64_t t;
	char *end;
	errno = 0;
	long long secs = strtoll(s, &end, 10);
	if (*s && !*end) {
		if (errno || secs < HISTORY_DATE_MIN || secs > HISTORY_DATE_MAX)
			return -EINVAL;
		*ret = secs;
		return 0;
	}
	/* NOLINTBEGIN(cert-err34-c): %4d and %2d read four and two digits at most, so they
	 * cannot overflow, and each count is checked */
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
	/* NOLINTEND(cert-err34-c) */
	if (mo < 1 || mo > 12 || d < 1 || d > 31 || h < 0 || h > 23 || mi < 0 || mi > 59 ||
	    se < 0 || se > 60)
		return -EINVAL;
	int64_t local = p1_time_from_civil(y, mo, d, h, mi, se);
	if (*s == 'Z' && !s[1]) {
		t = local;
	} else if ((*s == '+' || *s == '-') && strlen(s) == 6 && two_digits(s + 1) && s[3] == ':' &&
		   two_digits(s + 4)) {
		int oh = (int)strtol(s + 1, NULL, 10), om = (int)strtol(s + 4, NULL, 10);
		t = local - (*s == '-' ? -1 : 1) * (int64_t)(oh * 3600 + om * 60);
	} else if (!*s) {
		/* local time: summer time if that reading of it is summer time (the first of a
		 * repeated hour), else standard time */
		int64_t u = local - tz->dst_offset_s;
		t = tz->eu_rule && p1_tz_is_dst(tz, u) ? u : local - tz->std_offset_s;
	} else {
		return -EINVAL;
	}
	if (t < HISTORY_DATE_MIN || t > HISTORY_DATE_MAX)
		return -EINVAL;
	*ret = t;
	return 0;
}

int history_query_parse(const struct history_params *p, const struct p1_tz *tz, int64_t now,
			struct history_query *ret, const char **ret_error)
{
	static const int64_t bucket_s[] = {60, 3600, 86400, (int64_t)28 * 86400};
	static const int64_t span_s[] = {3600, 86400, (int64_t)31 * 86400, (int64_t)365 * 86400};
	int res = p->resolution ? store_resolution_by_name(p->resolution) : -1;
	int64_t from = 0, to = 0, start;
	/* to first: a missing from counts back from it (dates are bounded: no overflow) */
	bool ok = res >= 0 && (!p->to || history_parse_date(p->to, tz, &to) == 0) &&
		  (!p->from || history_parse_date(p->from, tz, &from) == 0);
	if (ok && !p->to)
		store_bucket_bounds((enum store_resolution)res, tz, now, &start, &to);
	if (ok && !p->from)
		store_bucket_bounds((enum store_resolution)res, tz, to - span_s[res], &from,
				    &start);
	if (!ok || to <= from) {
		*ret_error = "need resolution=minute|hour|day|month, and from=DATE and to=DATE "
			     "after it when given (2026-10-01, 2026-10-01T06:00Z)";
		return -EINVAL;
	}
	if (p->format && strcmp(p->format, "csv") && strcmp(p->format, "json")) {
		*ret_error = "format must be csv or json";
		return -EINVAL;
	}
	if ((to - from) / bucket_s[res] > HISTORY_BUCKETS_MAX) {
		*ret_error = "range too long for this resolution: at most 1100000 buckets (two "
			     "years of minutes)";
		return -EINVAL;
	}
	ret->res = (enum store_resolution)res;
	ret->from = from;
	ret->to = to;
	ret->csv = p->format ? !strcmp(p->format, "csv")
			     : p->accept && strstr(p->accept, "text/csv");
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


/* Before the first row: the CSV header (the columns collected); JSON needs none. */
static void print_start(const struct print_run *p)
{
	if (p->json)
		return;
	fputs("start,end", p->out);
	for (int r = 0; r < STORE_REG_COUNT; r++)
		if (p->have & (1u << r))
			fprintf(p->out, ",%s", p1_field_info(store_reg_field(r))->name);
	fputs(p->power ? ",power_min,power_avg,power_max\n" : "\n", p->out);
}

/* After the last row: the end of the JSON array. */
static void print_end(const struct print_run *p)
{
	if (p->json)
		fputs(p->first ? "[]\n" : "\n]\n", p->out);
}

int history_write(struct store *s, const char *meter, enum store_resolution res, int64_t from,
		  int64_t to, const struct p1_tz *tz, bool json, FILE *out)
{
	struct print_run p = {.out = out, .tz = tz, .json = json, .first = true};
	int n = store_query_history(s, meter, res, from, to, collect, &p);
	if (n >= 0) {
		print_start(&p);
		n = store_query_history(s, meter, res, from, to, print_bucket, &p);
	}
	if (n >= 0)
		print_end(&p);
	return n;
}

/* ---- the same, piece by piece ---------------------------------------------------------- */

enum { HS_COLLECT, HS_PRINT, HS_DONE };

struct history_stream {
	struct store *s;
	char *meter;
	struct history_query q;
	struct p1_tz tz;
	struct print_run p;
	int phase;
	int64_t cursor;  /* start of the next step's range */
	char *out;       /* what the last step printed */
	size_t len, off; /* its length, and how much of it was read */
};

/* The end of the next step's range: HISTORY_STREAM_STEP buckets or fewer (hours and months
 * may be shorter or longer in UTC: a step is a range of starts, every bucket is in one). */
static int64_t step_end(const struct history_stream *hs)
{
	static const int64_t bucket_s[] = {60, 3600, 86400, (int64_t)31 * 86400};
	int64_t span = HISTORY_STREAM_STEP * bucket_s[hs->q.res];
	return hs->q.to - hs->cursor <= span ? hs->q.to : hs->cursor + span;
}

/* One step: collects the columns of a range, or prints its rows (and the header before the
 * first, the end after the last) into hs->out. Returns 0 or a negative errno. */
static int step(struct history_stream *hs)
{
	int64_t to = step_end(hs);
	if (hs->phase == HS_COLLECT) {
		int n = store_query_history(hs->s, hs->meter, hs->q.res, hs->cursor, to, collect,
					    &hs->p);
		if (n < 0)
			return n;
		hs->cursor = to;
		if (to < hs->q.to)
			return 0;
		hs->phase = HS_PRINT;
		hs->cursor = hs->q.from;
		to = step_end(hs);
	}
	FILE *f = open_memstream(&hs->out, &hs->len);
	if (!f)
		return -ENOMEM;
	hs->off = 0;
	hs->p.out = f;
	if (hs->cursor == hs->q.from)
		print_start(&hs->p);
	int n = store_query_history(hs->s, hs->meter, hs->q.res, hs->cursor, to, print_bucket,
				    &hs->p);
	hs->cursor = to;
	if (n >= 0 && to >= hs->q.to) {
		print_end(&hs->p);
		hs->phase = HS_DONE;
	}
	if (fclose(f) != 0 && n >= 0)
		n = -ENOMEM;
	return n < 0 ? n : 0;
}

int history_stream_new(struct store *s, const char *meter, const struct history_query *q,
		       const struct p1_tz *tz, struct history_stream **ret)
{
	struct history_stream *hs = calloc(1, sizeof(*hs));
	*ret = NULL;
	if (!hs || !(hs->meter = strdup(meter))) {
		free(hs);
		return -ENOMEM;
	}
	hs->s = s;
	hs->q = *q;
	hs->tz = *tz;
	hs->p = (struct print_run){.tz = &hs->tz, .json = !q->csv, .first = true};
	hs->cursor = q->from;
	int r = step(hs);
	if (r < 0) {
		history_stream_free(hs);
		return r;
	}
	*ret = hs;
	return 0;
}

ssize_t history_stream_read(void *ud, char *buf, size_t max)
{
	struct history_stream *hs = ud;
	if (hs->off == hs->len) {
		free(hs->out);
		hs->out = NULL;
		hs->len = hs->off = 0;
		if (hs->phase == HS_DONE)
			return -1;
		if (step(hs) < 0)
			return -2;
	}
	size_t n = hs->len - hs->off < max ? hs->len - hs->off : max;
	if (n == 0)
		return 0; /* a step that printed nothing yet: the next one will */
	memcpy(buf, hs->out + hs->off, n);
	hs->off += n;
	return (ssize_t)n;
}

void history_stream_free(void *ud)
{
	struct history_stream *hs = ud;
	if (!hs)
		return;
	free(hs->out);
	free(hs->meter);
	free(hs);
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
