/* store_query.c - reading the history: bucket boundaries in the store's zone (23- and 25-hour
 * days), aggregate queries for `p1d history` and HTTP, and the raw "readings since" iterator
 * for MQTT backfill. Reads committed rows only; never writes. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"
#include "store_int.h"

static const char *res_names[STORE_RES_COUNT] = {"minute", "hour", "day", "month"};

const char *store_resolution_name(enum store_resolution r)
{
	return (unsigned)r < STORE_RES_COUNT ? res_names[r] : "?";
}

int store_resolution_by_name(const char *name)
{
	for (int r = 0; r < STORE_RES_COUNT; r++)
		if (!strcmp(name, res_names[r]))
			return r;
	return -1;
}

static int32_t offset_at(const struct p1_tz *tz, int64_t utc)
{
	return tz->eu_rule && p1_tz_is_dst(tz, utc) ? tz->dst_offset_s : tz->std_offset_s;
}

/* UTC of a local civil time (seconds since the epoch as if local were UTC). A local time in
 * the repeated hour gives the first (summer) instant, one in the skipped hour standard time. */
static int64_t local_to_utc(const struct p1_tz *tz, int64_t local)
{
	int64_t u = local - tz->dst_offset_s;
	if (offset_at(tz, u) == tz->dst_offset_s)
		return u;
	return local - tz->std_offset_s;
}

static int64_t floor_div(int64_t a, int64_t b)
{
	return a / b - (a % b < 0);
}

void store_bucket_bounds(enum store_resolution res, const struct p1_tz *tz, int64_t t,
			 int64_t *ret_start, int64_t *ret_end)
{
	int64_t local = t + offset_at(tz, t);
	int y, mo, d, h, mi, se;
	switch (res) {
	case STORE_RES_MINUTE:
		*ret_start = floor_div(t, 60) * 60;
		*ret_end = *ret_start + 60;
		return;
	case STORE_RES_HOUR: /* local hours: the repeated autumn hour is its own bucket */
		*ret_start = t - (local - floor_div(local, 3600) * 3600);
		*ret_end = *ret_start + 3600;
		return;
	case STORE_RES_DAY: {
		int64_t day = floor_div(local, 86400) * 86400;
		*ret_start = local_to_utc(tz, day);
		*ret_end = local_to_utc(tz, day + 86400);
		return;
	}
	default:
		p1_time_to_civil(local, &y, &mo, &d, &h, &mi, &se);
		*ret_start = local_to_utc(tz, p1_time_from_civil(y, mo, 1, 0, 0, 0));
		*ret_end = local_to_utc(tz, mo == 12 ? p1_time_from_civil(y + 1, 1, 1, 0, 0, 0)
						      : p1_time_from_civil(y, mo + 1, 1, 0, 0, 0));
	}
}

static int prepare_for(struct store *s, const char *sql, sqlite3_stmt **ret)
{
	if (!s->db)
		return -EIO;
	int rc = sqlite3_prepare_v2(s->db, sql, -1, ret, NULL);
	return rc ? store_errno(rc) : 0;
}

/* A bucket with the power sums kept, so that two parts of one bucket can be added. */
struct part {
	struct store_bucket b;
	int64_t psum, pn;
};

static void add_part(struct part *to, const struct part *p)
{
	to->b.readings += p->b.readings;
	for (int i = 0; i < STORE_REG_COUNT; i++)
		if (p->b.have >> i & 1u) {
			to->b.amount[i] += p->b.amount[i];
			to->b.have |= 1u << i;
		}
	if (p->pn) {
		if (!to->pn || p->b.power_min_w < to->b.power_min_w)
			to->b.power_min_w = p->b.power_min_w;
		if (!to->pn || p->b.power_max_w > to->b.power_max_w)
			to->b.power_max_w = p->b.power_max_w;
		to->psum += p->psum;
		to->pn += p->pn;
	}
}

static int emit(const struct store *s, enum store_resolution res, struct part *p,
		store_bucket_cb cb, void *ud)
{
	store_bucket_bounds(res, &s->tz, p->b.start_utc, &p->b.start_utc, &p->b.end_utc);
	p->b.have_power = p->pn > 0;
	p->b.power_avg_w = p->pn > 0 ? p->psum / p->pn : 0;
	return cb(ud, &p->b);
}

/* The minutes in memory (not yet written: the hour in progress, or everything since a failed
 * commit) summed into buckets of res in [from, to), oldest first. Returns the count, or -ENOMEM. */
static long pending_parts(const struct store *s, const char *meter, enum store_resolution res,
			  int64_t from, int64_t to, struct part **ret)
{
	*ret = NULL;
	const struct store_meter *m = NULL;
	for (size_t i = 0; i < s->n_meters; i++)
		if (!strcmp(s->meters[i].name, meter))
			m = &s->meters[i];
	if (!m || !m->n_pend)
		return 0;
	struct part *parts = calloc(m->n_pend, sizeof(*parts));
	long n = 0;
	if (!parts)
		return -ENOMEM;
	for (size_t i = 0; i < m->n_pend; i++) {
		const struct store_minute *mi = &m->pend[i];
		int64_t start, end;
		store_bucket_bounds(res, &s->tz, mi->start, &start, &end);
		if (start < from || start >= to)
			continue;
		if (!n || parts[n - 1].b.start_utc != start)
			parts[n++].b.start_utc = start;
		struct part p = {.b = {.readings = mi->n, .have = mi->have}, .psum = mi->psum,
				 .pn = mi->pn};
		memcpy(p.b.amount, mi->sum, sizeof(p.b.amount));
		p.b.power_min_w = mi->pmin;
		p.b.power_max_w = mi->pmax;
		add_part(&parts[n - 1], &p);
	}
	*ret = parts;
	return n;
}

int store_query_history(struct store *s, const char *meter, enum store_resolution res,
			int64_t from_utc, int64_t to_utc, store_bucket_cb cb, void *ud)
{
	char cols[1024], sql[1600];
	store_cols(cols, sizeof(cols), ", a.%s");
	snprintf(sql, sizeof(sql),
		 "SELECT a.start_utc, a.n, a.p_min, a.p_max, a.p_sum, a.p_n%s FROM agg a"
		 " JOIN meters m ON m.id = a.meter_id WHERE m.name = ? AND a.res = ?"
		 " AND a.start_utc >= ? AND a.start_utc < ? ORDER BY a.start_utc LIMIT %u",
		 cols, STORE_QUERY_ROWS_MAX);
	sqlite3_stmt *st;
	struct part *pend;
	int r = prepare_for(s, sql, &st);
	if (r < 0)
		return r;
	long n_pend = pending_parts(s, meter, res, from_utc, to_utc, &pend), ip = 0;
	if (n_pend < 0) {
		sqlite3_finalize(st);
		return (int)n_pend;
	}
	sqlite3_bind_text(st, 1, meter, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 2, (int)res);
	sqlite3_bind_int64(st, 3, from_utc);
	sqlite3_bind_int64(st, 4, to_utc);
	int n = 0, rc = SQLITE_DONE;
	while (r == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct part p = {0};
		p.b.start_utc = sqlite3_column_int64(st, 0);
		p.b.readings = (uint32_t)sqlite3_column_int64(st, 1);
		p.pn = sqlite3_column_int64(st, 5);
		if (p.pn > 0) {
			p.b.power_min_w = sqlite3_column_int64(st, 2);
			p.b.power_max_w = sqlite3_column_int64(st, 3);
			p.psum = sqlite3_column_int64(st, 4);
		}
		for (int i = 0; i < STORE_REG_COUNT; i++)
			if (sqlite3_column_type(st, 6 + i) != SQLITE_NULL) {
				p.b.amount[i] = sqlite3_column_int64(st, 6 + i);
				p.b.have |= 1u << i;
			}
		for (; r == 0 && ip < n_pend && pend[ip].b.start_utc < p.b.start_utc; ip++, n++)
			r = emit(s, res, &pend[ip], cb, ud);
		if (ip < n_pend && pend[ip].b.start_utc == p.b.start_utc)
			add_part(&p, &pend[ip++]);
		if (r == 0) {
			n++;
			r = emit(s, res, &p, cb, ud);
		}
	}
	if (r == 0 && rc != SQLITE_DONE)
		r = store_errno(rc);
	for (; r == 0 && ip < n_pend; ip++, n++)
		r = emit(s, res, &pend[ip], cb, ud);
	sqlite3_finalize(st);
	free(pend);
	return r ? r : n;
}
