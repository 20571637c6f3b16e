/* test_store.c - the history store: hourly and daily buckets exact across the DST days (25
 * hours in autumn, 23 in spring), segments on a meter swap and a counter reset, idempotent
 * re-adding, retention, a corrupt file moved aside, and write failures (a missing directory, a
 * file size limit that makes writes fail like a full disk) with the backlog kept and written
 * once the disk is back. Telegrams are filled in directly, not parsed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "store.h"
#include "unit_util.h"

static char dir[64], path[300];
static struct p1_telegram *tel;

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/p1d-test-store-XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/p1d.db", dir);
	tel = p1_telegram_new(1024);
	log_set_max_priority(LOG_CRIT); /* the failures below are expected */
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	assert_int_equal(remove_tree(dir), 0);
	p1_telegram_free(tel);
	return 0;
}

/* A telegram at utc with two delivered tariffs, gas and power (thousandths). */
static const struct p1_telegram *make(int64_t utc, const char *id, int64_t t1, int64_t t2,
				      int64_t gas, int64_t power_w)
{
	memset(tel->fields, 0, sizeof(tel->fields));
	tel->fields[P1_F_TIMESTAMP].presence = P1_PRESENT;
	tel->fields[P1_F_TIMESTAMP].time.utc = utc;
	tel->fields[P1_F_EQUIPMENT_ID].presence = P1_PRESENT;
	tel->fields[P1_F_EQUIPMENT_ID].text = (struct p1_text){id, (uint16_t)strlen(id)};
	struct {
		enum p1_field f;
		int64_t v;
		const char *unit;
	} nums[] = {{P1_F_E_DEL_T1, t1, "kWh"}, {P1_F_E_DEL_T2, t2, "kWh"},
		    {P1_F_GAS, gas, "m3"}, {P1_F_P_DEL, power_w, "kW"}};
	for (size_t i = 0; i < 4; i++) {
		tel->fields[nums[i].f].presence = P1_PRESENT;
		tel->fields[nums[i].f].num = (struct p1_num){.mant = nums[i].v, .scale = 3,
							     .unit = nums[i].unit};
	}
	return tel;
}

static struct store *open_store(int raw_days)
{
	struct store *s = NULL;
	struct store_opts o = {.path = path, .commit_interval_ms = 60000, .raw_days = raw_days,
			       .tz = P1_TZ_CET};
	assert_int_equal(store_new(NULL, &o, &s), 0);
	return s;
}

struct sums {
	int n;
	int64_t t1, t2, gas;
	int64_t first_start, last_end;
	int64_t pmin, pmax;
	bool negative;
};

static int sum_cb(void *ud, const struct store_bucket *b)
{
	struct sums *s = ud;
	if (!s->n++)
		s->first_start = b->start_utc;
	s->last_end = b->end_utc;
	s->t1 += b->amount[STORE_E_DEL_T1];
	s->t2 += b->amount[STORE_E_DEL_T2];
	s->gas += b->amount[STORE_GAS];
	s->negative |= b->amount[STORE_E_DEL_T1] < 0 || b->amount[STORE_GAS] < 0;
	s->pmin = b->power_min_w;
	s->pmax = b->power_max_w;
	return 0;
}

static struct sums query(struct store *s, enum store_resolution res, int64_t from, int64_t to)
{
	struct sums x = {0};
	int n = store_query_history(s, "main", res, from, to, sum_cb, &x);
	assert_int_equal(n, x.n);
	return x;
}

/* Register values of the first reading of the last feed(): the baseline of what follows. */
static int64_t first_t1, first_gas;

/* Readings every step_s from start for count steps; *t1 and *gas end at the last values. */
static void feed(struct store *s, int64_t start, int step_s, int count, const char *id,
		 int64_t *t1, int64_t *gas)
{
	uint64_t rnd = 12345;
	for (int i = 0; i < count; i++) {
		rnd = rnd * 6364136223846793005u + 1442695040888963407u;
		*t1 += (int64_t)(rnd >> 60);        /* 0..15 Wh */
		*gas += (int64_t)((rnd >> 40) & 3); /* 0..3 dm3 */
		assert_true(store_add(s, "main", make(start + (int64_t)i * step_s, id, *t1, 5000,
						      *gas, (int64_t)(rnd >> 52)),
				      start + 100000000) >= 0);
		if (i == 0) {
			first_t1 = *t1;
			first_gas = *gas;
		}
	}
}

static void dst_day(int64_t day_start, int hours)
{
	struct store *s = open_store(7);
	int64_t t1 = 1000000, gas = 500000;
	/* one reading exactly at the start of the day, then every 30 s until its end */
	feed(s, day_start, 30, hours * 120, "E1", &t1, &gas);
	assert_int_equal(store_sync(s), 0);
	struct sums h = query(s, STORE_RES_HOUR, day_start, day_start + hours * 3600);
	assert_int_equal(h.n, hours);
	assert_int_equal(h.first_start, day_start);
	assert_int_equal(h.last_end, day_start + hours * 3600);
	struct sums d = query(s, STORE_RES_DAY, day_start - 86400, day_start + 86400 * 2);
	assert_int_equal(d.n, 1);
	assert_int_equal(d.first_start, day_start);
	assert_int_equal(d.last_end - d.first_start, hours * 3600);
	/* the first reading only sets the baseline: the day holds everything after it */
	assert_int_equal(h.t1, t1 - first_t1);
	assert_int_equal(d.t1, h.t1);
	assert_int_equal(d.gas, h.gas);
	struct sums m = query(s, STORE_RES_MINUTE, day_start, day_start + hours * 3600);
	assert_int_equal(m.n, hours * 60);
	assert_int_equal(m.t1, h.t1);
	assert_int_equal(h.gas, gas - first_gas);
	assert_true(h.t1 > 1000);
	store_free(s);
}

static void test_fall_back_day(void **state)
{
	(void)state;
	/* 25 October 2026 in CET: 2026-10-24T22:00Z to 2026-10-25T23:00Z */
	dst_day(p1_time_from_civil(2026, 10, 24, 22, 0, 0), 25);
}

static void test_spring_forward_day(void **state)
{
	(void)state;
	/* 29 March 2026 in CET: 2026-03-28T23:00Z to 2026-03-29T22:00Z */
	dst_day(p1_time_from_civil(2026, 3, 28, 23, 0, 0), 23);
}

static void test_bucket_bounds(void **state)
{
	(void)state;
	struct p1_tz tz = P1_TZ_CET;
	int64_t s, e;
	store_bucket_bounds(STORE_RES_MONTH, &tz, p1_time_from_civil(2026, 10, 15, 0, 0, 0), &s, &e);
	assert_int_equal(s, p1_time_from_civil(2026, 9, 30, 22, 0, 0));
	assert_int_equal(e, p1_time_from_civil(2026, 10, 31, 23, 0, 0));
	/* 00:30 local on 1 January belongs to January */
	store_bucket_bounds(STORE_RES_DAY, &tz, p1_time_from_civil(2025, 12, 31, 23, 30, 0), &s, &e);
	assert_int_equal(s, p1_time_from_civil(2025, 12, 31, 23, 0, 0));
	assert_int_equal(e - s, 86400);
	assert_int_equal(store_resolution_by_name("hour"), STORE_RES_HOUR);
	assert_int_equal(store_resolution_by_name("week"), -1);
}

/* The hour in progress is answered from memory, merged with the written hours, and equals
 * what the database holds once it is written. */
static void test_hour_in_progress(void **state)
{
	(void)state;
	struct store *s = open_store(7);
	int64_t t0 = p1_time_from_civil(2026, 11, 20, 9, 0, 0), t1 = 1000000, gas = 500000;
	feed(s, t0, 10, 360 + 150, "E1", &t1, &gas); /* one hour and 25 minutes */
	assert_int_equal(store_commit(s), 0);         /* writes the complete hour only */
	struct sums now_h = query(s, STORE_RES_HOUR, t0, t0 + 2 * 3600);
	struct sums now_d = query(s, STORE_RES_DAY, t0 - 86400, t0 + 86400);
	struct sums now_m = query(s, STORE_RES_MINUTE, t0, t0 + 2 * 3600);
	assert_int_equal(now_h.n, 2);
	assert_int_equal(now_h.last_end, t0 + 2 * 3600);
	assert_int_equal(now_m.n, 60 + 25);
	assert_int_equal(now_h.t1, t1 - first_t1); /* every Wh, the hour in progress included */
	assert_int_equal(now_d.t1, now_h.t1);
	assert_int_equal(now_d.gas, gas - first_gas);
	assert_int_equal(now_m.t1, now_h.t1);
	assert_true(now_h.pmax >= now_h.pmin);
	/* a range that ends before the hour in progress does not see it */
	assert_int_equal(query(s, STORE_RES_HOUR, t0, t0 + 3600).n, 1);
	assert_int_equal(store_sync(s), 0); /* now the database has it: same answers */
	struct sums h = query(s, STORE_RES_HOUR, t0, t0 + 2 * 3600);
	struct sums d = query(s, STORE_RES_DAY, t0 - 86400, t0 + 86400);
	assert_int_equal(h.n, 2);
	assert_int_equal(h.t1, now_h.t1);
	assert_int_equal(h.pmin, now_h.pmin);
	assert_int_equal(h.pmax, now_h.pmax);
	assert_int_equal(d.t1, now_d.t1);
	assert_int_equal(d.gas, now_d.gas);
	store_free(s);
}

static void test_swap_and_reset(void **state)
{
	(void)state;
	struct store *s = open_store(7);
	int64_t t0 = p1_time_from_civil(2026, 6, 1, 0, 0, 0);
	assert_int_equal(store_add(s, "main", make(t0, "OLD", 1000000, 0, 100, 0), t0), 1);
	assert_int_equal(store_add(s, "main", make(t0 + 10, "OLD", 1000100, 0, 100, 0), t0), 1);
	/* swap: the new meter starts at 5 kWh */
	assert_int_equal(store_add(s, "main", make(t0 + 20, "NEW", 5000, 0, 100, 0), t0), 1);
	assert_int_equal(store_add(s, "main", make(t0 + 30, "NEW", 5050, 0, 100, 0), t0), 1);
	/* reset: the register goes back to 0 */
	assert_int_equal(store_add(s, "main", make(t0 + 40, "NEW", 0, 0, 100, 0), t0), 1);
	assert_int_equal(store_add(s, "main", make(t0 + 50, "NEW", 7, 0, 100, 0), t0), 1);
	/* a duplicate and an older one are ignored */
	assert_int_equal(store_add(s, "main", make(t0 + 50, "NEW", 7, 0, 100, 0), t0), 0);
	assert_int_equal(store_add(s, "main", make(t0 + 5, "NEW", 7, 0, 100, 0), t0), 0);
	assert_int_equal(store_sync(s), 0);
	struct store_stats st;
	store_get_stats(s, &st);
	assert_int_equal(st.segments, 2);
	assert_int_equal(st.ignored, 2);
	assert_int_equal(st.committed, 6);
	struct sums m = query(s, STORE_RES_MINUTE, 0, INT64_MAX);
	assert_false(m.negative);
	assert_int_equal(m.t1, 100 + 50 + 7);
	struct sums mo = query(s, STORE_RES_MONTH, 0, INT64_MAX);
	assert_int_equal(mo.n, 1);
	assert_int_equal(mo.t1, 157);
	store_free(s);
	/* a restart continues the last segment */
	s = open_store(7);
	assert_int_equal(store_add(s, "main", make(t0 + 50, "NEW", 7, 0, 100, 0), t0), 0);
	assert_int_equal(store_add(s, "main", make(t0 + 60, "NEW", 10, 0, 100, 0), t0), 1);
	assert_int_equal(store_sync(s), 0);
	store_get_stats(s, &st);
	assert_int_equal(st.segments, 0);
	assert_int_equal(query(s, STORE_RES_MONTH, 0, INT64_MAX).t1, 160);
	store_free(s);
}

static void test_idempotent(void **state)
{
	(void)state;
	int64_t t0 = p1_time_from_civil(2026, 5, 1, 0, 0, 0), t1 = 0, gas = 0;
	struct store *s = open_store(7);
	feed(s, t0, 10, 5000, "E1", &t1, &gas);
	store_free(s); /* commits */
	s = open_store(7);
	struct sums a = query(s, STORE_RES_HOUR, 0, INT64_MAX);
	t1 = gas = 0;
	feed(s, t0, 10, 5000, "E1", &t1, &gas);
	assert_int_equal(store_sync(s), 0);
	struct store_stats st;
	store_get_stats(s, &st);
	assert_int_equal(st.ignored, 5000);
	assert_int_equal(st.committed, 0);
	struct sums b = query(s, STORE_RES_HOUR, 0, INT64_MAX);
	assert_memory_equal(&a, &b, sizeof(a));
	assert_int_equal(a.t1, t1 - first_t1);
	assert_int_equal(a.gas, gas - first_gas);
	store_free(s);
}

static int count_cb(void *ud, const struct store_reading *r)
{
	int64_t *last = ud;
	assert_true(r->utc > *last);
	*last = r->utc;
	return 0;
}

static void test_retention(void **state)
{
	(void)state;
	int64_t t0 = p1_time_from_civil(2026, 2, 1, 0, 0, 0), t1 = 0, gas = 0;
	struct store *s = open_store(1);
	/* three days at one reading a minute, committed every hour as the timer would */
	for (int h = 0; h < 72; h++) {
		feed(s, t0 + h * 3600, 60, 60, "E1", &t1, &gas);
		assert_int_equal(store_commit(s), 0);
	}
	assert_int_equal(store_sync(s), 0);
	int64_t last = 0, first = 0;
	int n = store_readings_since(s, "main", 0, 1, count_cb, &first);
	assert_int_equal(n, 1);
	n = store_readings_since(s, "main", 0, 100000, count_cb, &last);
	/* a day is kept, plus what is due but waits for a batch of retention (up to
	 * STORE_RETENTION_BATCH_S) and the rest of the packed row straddling the limit */
	assert_true(n >= 24 * 60 + 1 && n <= 31 * 60);
	assert_true(first >= last - 31 * 3600 && first <= last - 24 * 3600);
	assert_int_equal(last, t0 + 72 * 3600 - 60);
	/* aggregates are kept for good */
	assert_int_equal(query(s, STORE_RES_HOUR, 0, INT64_MAX).n, 72);
	last = t0 + 72 * 3600 - 600;
	assert_int_equal(store_readings_since(s, "main", last, 5, count_cb, &last), 5);
	store_free(s);
}

/* Stops after *(int *)ud readings. */
static int stop_after_cb(void *ud, const struct store_reading *r)
{
	(void)r;
	return --*(int *)ud == 0 ? 7 : 0;
}

/* Readings since a time come from the database, then from the backlog waiting for the next
 * commit, in order, without a reading twice; store_held_upto says up to where. */
static void test_readings_since_backlog(void **state)
{
	(void)state;
	int64_t t0 = p1_time_from_civil(2026, 2, 1, 0, 0, 0), t1 = 0, gas = 0;
	struct store *s = open_store(7);
	feed(s, t0, 1, 100, "E1", &t1, &gas);
	assert_int_equal(store_commit(s), 0);
	feed(s, t0 + 100, 1, 50, "E1", &t1, &gas); /* not committed */
	struct store_stats st;
	store_get_stats(s, &st);
	assert_int_equal(st.backlog, 50);
	assert_int_equal(store_held_upto(s, "main"), t0 + 149);
	assert_int_equal(store_held_upto(s, "other"), 0);

	int64_t last = t0 - 1;
	assert_int_equal(store_readings_since(s, "main", last, 1000, count_cb, &last), 150);
	assert_int_equal(last, t0 + 149);
	/* paged across the boundary between written and waiting */
	last = t0 - 1;
	int pages = 0;
	while (store_readings_since(s, "main", last, 7, count_cb, &last) > 0)
		pages++;
	assert_int_equal(pages, (150 + 6) / 7);
	assert_int_equal(last, t0 + 149);
	/* from inside the backlog */
	last = t0 + 120;
	assert_int_equal(store_readings_since(s, "main", last, 1000, count_cb, &last), 29);
	/* a callback that stops in the database part stops there */
	int left = 3;
	assert_int_equal(store_readings_since(s, "main", t0 - 1, 1000, stop_after_cb, &left), 7);
	assert_int_equal(left, 0);
	/* and in the backlog part */
	left = 103;
	assert_int_equal(store_readings_since(s, "main", t0 - 1, 1000, stop_after_cb, &left), 7);
	assert_int_equal(left, 0);
	assert_int_equal(store_readings_since(s, "other", 0, 1000, count_cb, &last), 0);
	store_free(s);
}

static int count_corrupt(void)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;
	while ((e = readdir(d)))
		n += strstr(e->d_name, "p1d.db.corrupt-") != NULL &&
		     !strstr(e->d_name, "-wal") && !strstr(e->d_name, "-shm");
	closedir(d);
	return n;
}

static void test_corrupt_file(void **state)
{
	(void)state;
	FILE *f = fopen(path, "w");
	for (int i = 0; i < 5000; i++)
		fputs("this is not a database ", f);
	fclose(f);
	struct store *s = open_store(7);
	assert_int_equal(count_corrupt(), 1);
	int64_t t0 = p1_time_from_civil(2026, 4, 1, 0, 0, 0), t1 = 0, gas = 0;
	feed(s, t0, 10, 100, "E1", &t1, &gas);
	assert_int_equal(store_sync(s), 0);
	assert_int_equal(query(s, STORE_RES_DAY, 0, INT64_MAX).n, 1);
	store_free(s);

	/* a valid header with damaged pages: cut the file in half */
	s = open_store(7);
	feed(s, t0 + 1000, 1, 20000, "E1", &t1, &gas);
	store_free(s);
	struct stat sb;
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(truncate(path, sb.st_size / 2), 0);
	s = open_store(7);
	assert_int_equal(count_corrupt(), 2);
	feed(s, t0 + 100000, 10, 10, "E1", &t1, &gas);
	assert_int_equal(store_sync(s), 0);
	store_free(s);
}

static void test_missing_directory(void **state)
{
	(void)state;
	char sub[200];
	snprintf(sub, sizeof(sub), "%s/later", dir);
	snprintf(path, sizeof(path), "%s/p1d.db", sub);
	struct store *s = open_store(7);
	int64_t t0 = p1_time_from_civil(2026, 4, 1, 0, 0, 0), t1 = 0, gas = 0;
	/* more than the backlog holds: the oldest raw readings are dropped, not their energy */
	feed(s, t0, 10, STORE_BACKLOG_MAX + 500, "E1", &t1, &gas);
	assert_true(store_commit(s) < 0);
	struct store_stats st;
	store_get_stats(s, &st);
	assert_false(st.healthy);
	assert_int_equal(st.backlog, STORE_BACKLOG_MAX);
	assert_int_equal(st.dropped, 500);
	assert_int_equal(mkdir(sub, 0700), 0);
	assert_int_equal(store_sync(s), 0);
	store_get_stats(s, &st);
	assert_true(st.healthy);
	assert_int_equal(st.committed, STORE_BACKLOG_MAX);
	/* exact: the first reading is the baseline, everything after it is counted */
	struct sums h = query(s, STORE_RES_HOUR, 0, INT64_MAX);
	assert_int_equal(h.t1, t1 - first_t1);
	assert_int_equal(h.gas, gas - first_gas);
	store_free(s);
	snprintf(path, sizeof(path), "%s/p1d.db", dir);
}

static void test_disk_full(void **state)
{
	(void)state;
	struct store *s = open_store(7);
	int64_t t0 = p1_time_from_civil(2026, 4, 1, 0, 0, 0), t1 = 0, gas = 0;
	feed(s, t0, 10, 10, "E1", &t1, &gas);
	assert_int_equal(store_sync(s), 0);
	/* files may not grow: writes fail as on a full disk (EFBIG, SIGXFSZ ignored) */
	struct rlimit old, small = {.rlim_cur = 4096, .rlim_max = RLIM_INFINITY};
	getrlimit(RLIMIT_FSIZE, &old);
	signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);
	feed(s, t0 + 1000, 10, 1500, "E1", &t1, &gas);
	int r = store_commit(s);
	setrlimit(RLIMIT_FSIZE, &old);
	assert_true(r < 0);
	struct store_stats st;
	store_get_stats(s, &st);
	assert_false(st.healthy);
	assert_int_equal(st.backlog, 1500);
	assert_int_equal(store_sync(s), 0);
	store_get_stats(s, &st);
	assert_true(st.healthy);
	assert_int_equal(st.committed, 1510);
	store_free(s);
	/* nothing was lost or doubled */
	s = open_store(7);
	int64_t last = 0;
	assert_int_equal(store_readings_since(s, "main", 0, 100000, count_cb, &last), 1510);
	store_free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_bucket_bounds, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hour_in_progress, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fall_back_day, setup, teardown),
		cmocka_unit_test_setup_teardown(test_spring_forward_day, setup, teardown),
		cmocka_unit_test_setup_teardown(test_swap_and_reset, setup, teardown),
		cmocka_unit_test_setup_teardown(test_idempotent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_retention, setup, teardown),
		cmocka_unit_test_setup_teardown(test_readings_since_backlog, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing_directory, setup, teardown),
		cmocka_unit_test_setup_teardown(test_disk_full, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
