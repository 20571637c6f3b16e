/* store_query.c - reading the history: bucket boundaries in the store's zone (23- and 25-hour
 * days), aggregate queries for `p1d history` and HTTP, and the raw "readings since" iterator
 * for MQTT backfill. Reads committed rows only; never writes. */
#include <errno.h>
#include <stdio.h>
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
	int r = prepare_for(s, sql, &st);
	if (r < 0)
		return r;
	sqlite3_bind_text(st, 1, meter, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 2, (int)res);
	sqlite3_bind_int64(st, 3, from_utc);
	sqlite3_bind_int64(st, 4, to_utc);
	int n = 0, rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct store_bucket b = {0};
		int64_t start = sqlite3_column_int64(st, 0);
		store_bucket_bounds(res, &s->tz, start, &b.start_utc, &b.end_utc);
		b.readings = (uint32_t)sqlite3_column_int64(st, 1);
		int64_t pn = sqlite3_column_int64(st, 5);
		if (pn > 0) {
			b.have_power = true;
			b.power_min_w = sqlite3_column_int64(st, 2);
			b.power_max_w = sqlite3_column_int64(st, 3);
			b.power_avg_w = sqlite3_column_int64(st, 4) / pn;
		}
		for (int i = 0; i < STORE_REG_COUNT; i++)
			if (sqlite3_column_type(st, 6 + i) != SQLITE_NULL) {
				b.amount[i] = sqlite3_column_int64(st, 6 + i);
				b.have |= 1u << i;
			}
		n++;
		if ((r = cb(ud, &b)) != 0)
			break;
	}
	if (r == 0 && rc != SQLITE_DONE)
		r = store_errno(rc);
	sqlite3_finalize(st);
	return r ? r : n;
}
