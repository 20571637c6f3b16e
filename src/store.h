/* store.h - the history database (SQLite): raw readings for raw_days, then minute, hour, day
 * and month aggregates kept for good, every row keyed by meter name. See docs/store.md.
 *
 * The store is a meter sink: store_add() turns a telegram into a reading (registers in
 * thousandths, net power in W), starts a new segment on a meter swap or a register going
 * backwards, adds the register differences to the previous reading into in-memory minute
 * buckets and appends the reading to a bounded backlog. Nothing touches the disk until a
 * commit: the commit timer (commit_interval), a full batch, store_commit()/store_sync() or
 * store_free() write the backlog as one packed row per meter, and the aggregates of every hour
 * that is complete, in one transaction. A failed commit is rolled back, logged (rate limited)
 * and retried with backoff; readings stay in memory (at most STORE_BACKLOG_MAX, oldest raw
 * readings dropped first; their usage is already in the minute buckets).
 *
 * store_query_history() (HTTP, `p1d history`) returns the aggregates written so far plus, in
 * the process that ingests, the minutes still in memory (the hour in progress), so that today
 * is up to date; another process reading the same file sees the complete hours only.
 * store_readings_since() (MQTT backfill) returns raw readings, those written and those
 * waiting for the next commit, with store_held_upto() as the time up to which it has them. Both use the store's own connection: call
 * them from the loop's thread. */
#ifndef P1D_STORE_H
#define P1D_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "p1/telegram.h"
#include "p1/time.h"

struct loop;
struct meter;
struct store;

/* Rows kept in memory while the database cannot be written; at 1 telegram/s one hour. */
#define STORE_BACKLOG_MAX 3600u
/* A backlog this long is committed at once, without waiting for the timer (fast replay). */
#define STORE_BATCH_MAX 2000u
/* Raw readings deleted per commit at most (retention runs in small steps). */
#define STORE_RETENTION_STEP 2000u
/* Retry delays after a failed commit or open: doubled from MIN up to MAX. */
#define STORE_RETRY_MIN_MS 1000u
#define STORE_RETRY_MAX_MS 300000u
/* WAL pages after which a commit runs a checkpoint (SQLite's own default). */
#define STORE_CHECKPOINT_PAGES 1000
/* SQLite's page cache (it defaults to 2 MiB): commits touch the newest pages only, queries
 * read little, and the OS caches the file anyway. */
#define STORE_CACHE_KIB 512
/* Rows one query may return at most. */
#define STORE_QUERY_ROWS_MAX 1000000u

/* The registers the history keeps, in thousandths of their unit (Wh, dm3, MJ). */
enum store_reg {
	STORE_E_DEL_T1,
	STORE_E_DEL_T2,
	STORE_E_DEL_T3,
	STORE_E_DEL_T4,
	STORE_E_DEL_TOTAL,
	STORE_E_RET_T1,
	STORE_E_RET_T2,
	STORE_E_RET_T3,
	STORE_E_RET_T4,
	STORE_E_RET_TOTAL,
	STORE_GAS,
	STORE_WATER,
	STORE_THERMAL,
	STORE_REG_COUNT
};

/* The telegram field a register comes from (its name names the history column). */
enum p1_field store_reg_field(enum store_reg r);

enum store_resolution {
	STORE_RES_MINUTE,
	STORE_RES_HOUR,
	STORE_RES_DAY, /* local days in the store's zone: 23, 24 or 25 hours */
	STORE_RES_MONTH,
	STORE_RES_COUNT
};

/* "minute", "hour", "day", "month"; by name: -1 when unknown. */
const char *store_resolution_name(enum store_resolution r);
int store_resolution_by_name(const char *name);

struct store_opts {
	const char *path;            /* database file */
	int64_t commit_interval_ms;  /* timer commit period */
	int raw_days;                /* raw readings kept for this many days */
	struct p1_tz tz;             /* zone of day and month buckets */
	bool read_only;              /* queries only (p1d history): no create, no writes */
};

/**
 * store_new - Open (or create) the database
 * @loop: the loop for the commit and retry timers; NULL: commits only by store_commit()
 * @o: options (path copied)
 * @ret_store: the store
 * Returns: 0; -ENOMEM; with o->read_only a negative errno when the file cannot be read.
 *
 * A writable store that cannot open its file still succeeds: it logs why, keeps a backlog and
 * retries with backoff. A corrupt file is moved aside to <path>.corrupt-<UTC> and a fresh one
 * created.
 */
int store_new(struct loop *loop, const struct store_opts *o, struct store **ret_store);
/* Commits the backlog (one attempt) and closes. NULL-safe; returns NULL. */
struct store *store_free(struct store *s);

/* Meter sink (meter_sink_cb): ud is the store. */
void store_sink(void *ud, struct meter *m, const struct p1_telegram *t, int64_t received_utc);

/* Add one telegram of meter name, dated utc (seconds); t is borrowed. Returns 1 when queued,
 * 0 when ignored (not newer than the meter's last reading: a duplicate), negative errno. */
int store_add_at(struct store *s, const char *meter, const struct p1_telegram *t, int64_t utc);
/* The same, dated by the meter's clock unless it is implausible (clock.h, CLOCK_AUTO). */
int store_add(struct store *s, const char *meter, const struct p1_telegram *t,
	      int64_t received_utc);

/* Write the backlog now, with the aggregates of the hours that are complete. Returns 0 (also
 * when empty) or a negative errno (backlog kept). */
int store_commit(struct store *s);
/* The same, and the aggregates of the hour in progress too (shutdown, import, tests). */
int store_sync(struct store *s);

struct store_stats {
	uint64_t queued;          /* readings accepted */
	uint64_t ignored;         /* not newer than the last one (duplicates, replays) */
	uint64_t committed;       /* readings written */
	uint64_t dropped;         /* backlog overflow, or no memory to take one */
	uint64_t commit_failures;
	uint64_t segments;        /* new segments started (swaps, resets) */
	size_t backlog;
	bool healthy;             /* the last commit or open succeeded */
	uint64_t commits;         /* transactions that wrote readings */
	uint64_t checkpoints;     /* WAL checkpoints: when the database file is fsynced */
	int64_t last_commit_utc;  /* 0: none yet */
	uint64_t db_bytes;        /* size of the database file and its WAL now */
	uint64_t pages_written;   /* database pages this connection wrote (since it opened) */
};
void store_get_stats(const struct store *s, struct store_stats *ret);
/* The database file. */
const char *store_path(const struct store *s);
/* Newest reading of the meter the store took (UTC), 0: none: store_readings_since() has every
 * reading up to it that it will ever have (a backlog dropped while the disk failed is gone).
 * For MQTT backfill. */
int64_t store_held_upto(const struct store *s, const char *meter);

/* One bucket of history. Amounts are in thousandths of the register's unit (kWh -> Wh). */
struct store_bucket {
	int64_t start_utc, end_utc;
	uint32_t readings;            /* readings that fell in the bucket */
	uint32_t have;                /* bit r: amount[r] is known */
	int64_t amount[STORE_REG_COUNT];
	bool have_power;
	int64_t power_min_w, power_avg_w, power_max_w; /* delivered minus returned */
};
/* Return non-zero to stop the query (that value is returned). */
typedef int (*store_bucket_cb)(void *ud, const struct store_bucket *b);

/**
 * store_query_history - Committed buckets of a meter, oldest first
 * @meter: meter name
 * @res: resolution
 * @from_utc, @to_utc: buckets whose start is in [from, to)
 * Returns: number of buckets, the callback's non-zero value, or a negative errno.
 */
int store_query_history(struct store *s, const char *meter, enum store_resolution res,
			int64_t from_utc, int64_t to_utc, store_bucket_cb cb, void *ud);

/* One raw reading: registers as the meter sent them. */
struct store_reading {
	int64_t utc;
	uint32_t segment;
	uint32_t have; /* bit r: reg[r] was in the telegram */
	int64_t reg[STORE_REG_COUNT];
	bool have_power;
	int64_t power_w;
};
typedef int (*store_reading_cb)(void *ud, const struct store_reading *r);

/**
 * store_readings_since - Raw readings newer than after_utc, oldest first: written ones, then
 * those waiting in memory for the next commit
 * @max: at most this many (page with the last utc seen); raw readings exist for raw_days only
 * Returns: number of readings, the callback's non-zero value, or a negative errno.
 */
int store_readings_since(struct store *s, const char *meter, int64_t after_utc, size_t max,
			 store_reading_cb cb, void *ud);

/* Start and end (UTC) of the bucket of resolution res containing t, in zone tz. */
void store_bucket_bounds(enum store_resolution res, const struct p1_tz *tz, int64_t t,
			 int64_t *ret_start, int64_t *ret_end);

#endif
