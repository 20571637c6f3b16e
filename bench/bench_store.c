/* bench_store.c - what the history store costs the SD card: bytes written per simulated day
 * at one telegram per second with the default settings (commit every 60 s = 60 readings,
 * raw_days 7), the database size after D simulated days, and the time to answer a year of
 * hourly history. Readings go through store_add() and store_commit(), the path the daemon
 * uses; the telegram holds what a DSMR 5 meter's registers hold (two tariffs each way, gas
 * updated every 5 minutes, power).
 *
 * Usage: bench_store [--days D] [--commit-every N] DB
 *   DB is created (it must not exist). Bytes written are this process's write_bytes from
 *   /proc/self/io (page cache level: what the kernel will write to the block device, without
 *   the file system's journal), sampled per simulated day. Default: 30 days, N = 60.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "store.h"

static uint64_t write_bytes(void)
{
	FILE *f = fopen("/proc/self/io", "r");
	char line[128];
	unsigned long long v = 0;
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "write_bytes: %llu", &v) == 1)
			break;
	if (f)
		fclose(f);
	return v;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static off_t size_of(const char *db, const char *suffix)
{
	char p[4200];
	struct stat st;
	snprintf(p, sizeof(p), "%s%s", db, suffix);
	return stat(p, &st) == 0 ? st.st_size : 0;
}

static void set_num(struct p1_telegram *t, enum p1_field f, int64_t v, const char *unit)
{
	t->fields[f].presence = P1_PRESENT;
	t->fields[f].num = (struct p1_num){.mant = v, .scale = 3, .unit = unit};
}

static int count_cb(void *ud, const struct store_bucket *b)
{
	(void)b;
	(*(int *)ud)++;
	return 0;
}

int main(int argc, char **argv)
{
	int days = 30, every = 60;
	const char *db = NULL;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--days") && i + 1 < argc)
			days = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--commit-every") && i + 1 < argc)
			every = atoi(argv[++i]);
		else
			db = argv[i];
	}
	if (!db || days < 1 || every < 1 || access(db, F_OK) == 0) {
		fprintf(stderr, "usage: bench_store [--days D] [--commit-every N] NEW-DB\n");
		return 2;
	}
	log_set_max_priority(LOG_WARNING);
	struct store *s = NULL;
	struct store_opts o = {.path = db, .commit_interval_ms = 60000, .raw_days = 7,
			       .tz = P1_TZ_CET};
	if (store_new(NULL, &o, &s) < 0)
		return 1;
	struct p1_telegram *t = p1_telegram_new(1024);
	static const char id[] = "E0043553610385999";
	t->fields[P1_F_EQUIPMENT_ID].presence = P1_PRESENT;
	t->fields[P1_F_EQUIPMENT_ID].text = (struct p1_text){id, sizeof(id) - 1};
	t->fields[P1_F_TIMESTAMP].presence = P1_PRESENT;
	int64_t t0 = p1_time_from_civil(2025, 1, 1, 0, 0, 0);
	int64_t del1 = 4669437, del2 = 6189720, ret1 = 0, ret2 = 0, gas = 1714990;
	uint64_t rnd = 1, w0 = write_bytes(), w_day = w0, w_week_total = 0;
	double start = now_s();
	printf("day,write_bytes,db_bytes,wal_bytes\n");
	for (int64_t i = 0; i < (int64_t)days * 86400; i++) {
		int64_t utc = t0 + i;
		rnd = rnd * 6364136223846793005u + 1442695040888963407u;
		int64_t power_w = 200 + (int64_t)(rnd >> 53); /* 0.2 .. 1.2 kW */
		bool low = ((utc / 3600) % 24) < 7;
		/* power_w for one second, in Wh: accumulate in mWh, registers move in Wh */
		static int64_t mwh;
		mwh += power_w * 1000 / 3600;
		if (mwh >= 1000) {
			(low ? &del1 : &del2)[0] += mwh / 1000;
			mwh %= 1000;
		}
		if (utc % 300 == 0)
			gas += (int64_t)(rnd >> 62);
		t->fields[P1_F_TIMESTAMP].time.utc = utc;
		set_num(t, P1_F_E_DEL_T1, del1, "kWh");
		set_num(t, P1_F_E_DEL_T2, del2, "kWh");
		set_num(t, P1_F_E_RET_T1, ret1, "kWh");
		set_num(t, P1_F_E_RET_T2, ret2, "kWh");
		set_num(t, P1_F_GAS, gas, "m3");
		set_num(t, P1_F_P_DEL, power_w, "kW");
		set_num(t, P1_F_P_RET, 0, "kW");
		store_add(s, "main", t, utc);
		if ((i + 1) % every == 0 && store_commit(s) < 0)
			return 1;
		if ((i + 1) % 86400 == 0) {
			uint64_t w = write_bytes();
			int day = (int)((i + 1) / 86400);
			printf("%d,%llu,%lld,%lld\n", day, (unsigned long long)(w - w_day),
			       (long long)size_of(db, ""), (long long)size_of(db, "-wal"));
			if (day > 7)
				w_week_total += w - w_day;
			w_day = w;
		}
	}
	double ingest = now_s() - start;
	store_sync(s); /* the hour in progress too */
	int n = 0;
	double q0 = now_s();
	int r = store_query_history(s, "main", STORE_RES_HOUR, t0, t0 + 365 * 86400, count_cb, &n);
	double q = now_s() - q0;
	printf("# %d days, %d readings per commit: %.1f s of ingest (%.0f readings/s)\n", days,
	       every, ingest, (double)days * 86400 / ingest);
	printf("# written: %.2f MB in total, %.2f MB per day on average",
	       (double)(write_bytes() - w0) / 1e6, (double)(write_bytes() - w0) / 1e6 / days);
	if (days > 7)
		printf(", %.2f MB per day after the first week (retention running)",
		       (double)w_week_total / 1e6 / (days - 7));
	printf("\n# database: %.2f MB, WAL %.2f MB\n", (double)size_of(db, "") / 1e6,
	       (double)size_of(db, "-wal") / 1e6);
	printf("# hourly history query: %d buckets in %.1f ms (status %d)\n", n, q * 1000, r);
	store_free(s);
	p1_telegram_free(t);
	return 0;
}
