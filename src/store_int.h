/* store_int.h - what the files of the store module share (store.c: database and commits,
 * store_ingest.c: telegrams to readings and pending aggregates, store_chunk.c: the packed raw
 * readings, store_query.c: reading the history). Private: nothing else includes it. */
#ifndef P1D_STORE_INT_H
#define P1D_STORE_INT_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "log.h"
#include "store.h"

#define STORE_SCHEMA_VERSION 1
#define STORE_METERS_MAX 16 /* CONFIG_METERS_MAX */
#define STORE_NAME_MAX 33
#define STORE_IDENTITY_MAX 100
/* Readings per chunk row at most (a commit of a bigger backlog writes several). */
#define STORE_CHUNK_MAX 3600u
/* Minute buckets a meter keeps in memory before they reach the database (an hour is normal;
 * more only while the database cannot be written). Beyond it the two oldest are merged. */
#define STORE_PENDING_MAX 4096u
/* Chunks deleted per retention step at most (each holds about a commit's readings). */
#define STORE_RETENTION_CHUNKS 1000
/* Retention waits until this much raw history is due, then deletes it in one step. */
#define STORE_RETENTION_BATCH_S (6 * 3600)

/* One minute of differences, waiting to be written with its hour, day and month. */
struct store_minute {
	int64_t start;
	uint32_t n, have;
	int64_t sum[STORE_REG_COUNT];
	int64_t pmin, pmax, psum;
	uint32_t pn;
	/* the meter after the last reading in this minute: where a replay continues */
	int64_t last_utc;
	uint32_t seg, have_base;
	int64_t reg[STORE_REG_COUNT];
};

struct store_meter {
	char name[STORE_NAME_MAX];
	int64_t db_id;         /* meters.id, 0: not looked up yet */
	bool loaded;           /* state read from the database (or there was none) */
	bool started;          /* a previous reading exists */
	int64_t last_utc;      /* newest reading accepted */
	uint32_t seg;
	char identity[STORE_IDENTITY_MAX];
	uint32_t have; /* bit r: reg[r] known in this segment */
	int64_t reg[STORE_REG_COUNT];
	struct store_minute *pend; /* oldest first */
	size_t n_pend, cap_pend, n_flush;
};

/* One reading waiting for the commit. */
struct store_entry {
	int64_t utc;
	uint8_t meter; /* index in store.meters */
	bool new_seg;  /* write a segments row */
	uint8_t reason;
	bool have_power;
	uint32_t seg;
	uint32_t have; /* registers in the telegram */
	int64_t reg[STORE_REG_COUNT];
	int64_t power_w;
	char identity[STORE_IDENTITY_MAX];
};

/* A bucket being summed while aggregates are written. */
struct store_acc {
	bool used;
	int64_t start;
	uint32_t n, have;
	int64_t sum[STORE_REG_COUNT];
	int64_t pmin, pmax, psum;
	uint32_t pn;
};

struct store {
	char *path;
	struct p1_tz tz;
	int raw_days;
	bool read_only;
	bool healthy;
	uint64_t commit_interval_ms, retry_ms;
	struct loop_timer *timer;
	sqlite3 *db;
	sqlite3_stmt *st_chunk, *st_agg, *st_state, *st_segment, *st_retention;
	struct store_meter meters[STORE_METERS_MAX];
	size_t n_meters;
	struct store_entry *backlog; /* ring of STORE_BACKLOG_MAX */
	size_t head, count;
	uint8_t *buf; /* chunk encoding */
	size_t buf_cap;
	uint64_t queued, ignored, committed, dropped, commit_failures, segments;
	uint64_t commits, checkpoints;
	int64_t last_commit_utc;
	struct log_ratelimit fail_rl, drop_rl;
};

/* store.c */
int store_errno(int rc);
int store_cols(char *buf, size_t cap, const char *fmt); /* fmt: up to four %s, the name */
int64_t store_meter_id(struct store *s, struct store_meter *m, bool create, int *rc);
extern const char *const store_reason_name[];

/* store_ingest.c */
struct store_meter *store_find_meter(struct store *s, const char *name, bool create);
/* Read the meter's state and replay the readings committed after its aggregates. Returns 0,
 * or -ENOMEM with nothing loaded (the next telegram tries again). */
int store_load_meter(struct store *s, struct store_meter *m);

/* store_chunk.c */
/* Encode backlog entries [from, to) of meter index mi into s->buf. Returns the size or
 * -ENOMEM; *ret_n: readings encoded (at most STORE_CHUNK_MAX). */
long store_chunk_encode(struct store *s, size_t mi, size_t *pos, uint32_t *ret_n,
			int64_t *ret_first, int64_t *ret_last, uint32_t *ret_seg);
/* Readings of the meter's chunks with utc > after, oldest first, at most max. */
int store_chunk_scan(struct store *s, int64_t meter_id, int64_t after, size_t max,
		     store_reading_cb cb, void *ud);

#endif
