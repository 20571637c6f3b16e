/* store.c - the history store's database: schema and migrations, opening (a corrupt file is
 * moved aside), the batched commit (raw chunks, then the aggregates of closed hours, the state
 * a restart continues from, a step of retention, all in one transaction), retries with backoff.
 *
 * Owns one SQLite connection and every byte written to the database. It never waits: SQLite
 * is called synchronously with short transactions from timers and sinks on the loop's thread.
 * It never logs per telegram: failures are rate limited and say what happens next. Called by
 * main (store_new/free, store_sink on each meter), by `p1d import` and `p1d history`, and by
 * readers through store_query.c. Schema and rules: docs/store.md.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"
#include "meter.h"
#include "store.h"
#include "store_int.h"

static const enum p1_field reg_fields[STORE_REG_COUNT] = {
	P1_F_E_DEL_T1, P1_F_E_DEL_T2, P1_F_E_DEL_T3,  P1_F_E_DEL_T4,    P1_F_E_DEL_TOTAL,
	P1_F_E_RET_T1, P1_F_E_RET_T2, P1_F_E_RET_T3,  P1_F_E_RET_T4,    P1_F_E_RET_TOTAL,
	P1_F_GAS,      P1_F_WATER,    P1_F_THERMAL,
};

enum p1_field store_reg_field(enum store_reg r)
{
	return reg_fields[r];
}

const char *const store_reason_name[] = {"first", "equipment id changed",
					 "register went backwards", "register jumped"};

/* ---- error translation --------------------------------------------------------------- */

int store_errno(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_OK: return 0;
	case SQLITE_FULL: return -ENOSPC;
	case SQLITE_READONLY: return -EROFS;
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB: return -EBADMSG;
	case SQLITE_BUSY:
	case SQLITE_LOCKED: return -EBUSY;
	case SQLITE_NOMEM: return -ENOMEM;
	case SQLITE_CANTOPEN: return -EACCES;
	case SQLITE_PERM:
	case SQLITE_AUTH: return -EPERM;
	default: return -EIO;
	}
}

static void note_failure(struct store *s, const char *what, int rc, const char *next)
{
	/* the system's errno says why a file could not be opened or written (ENOENT, ENOSPC) */
	int sys = s->db ? sqlite3_system_errno(s->db) : 0;
	s->healthy = false;
	log_ratelimit(&s->fail_rl, loop_now_ms(), LOG_ERR, "store %s: %s: %s (%s), %s", s->path,
		      what, s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc),
		      strerror(sys > 0 ? sys : -store_errno(rc)), next);
}

/* ---- schema --------------------------------------------------------------------------- */

static int append(char *buf, size_t cap, size_t *used, const char *fmt, const char *a)
{
	/* Flawfinder: ignore: fmt is a literal pattern of store_cols' callers, up to four %s */
	int n = snprintf(buf + *used, cap - *used, fmt, a, a, a, a);
	if (n < 0 || (size_t)n >= cap - *used)
		return -ENOBUFS;
	*used += (size_t)n;
	return 0;
}

/* fmt is applied to each register's column name (up to 4 times). */
int store_cols(char *buf, size_t cap, const char *fmt)
{
	size_t used = 0;
	buf[0] = 0;
	for (int r = 0; r < STORE_REG_COUNT; r++)
		if (append(buf, cap, &used, fmt, p1_field_info(reg_fields[r])->name) < 0)
			return -ENOBUFS;
	return 0;
}

static int exec(struct store *s, const char *sql)
{
	return sqlite3_exec(s->db, sql, NULL, NULL, NULL);
}

static int create_schema(struct store *s)
{
	char cols[1024], sql[4096];
	store_cols(cols, sizeof(cols), ", %s INTEGER");
	snprintf(sql, sizeof(sql),
		 "BEGIN;"
		 "CREATE TABLE meters(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);"
		 "CREATE TABLE segments(meter_id INTEGER NOT NULL, seq INTEGER NOT NULL,"
		 " start_utc INTEGER NOT NULL, identity TEXT NOT NULL, reason TEXT NOT NULL,"
		 " PRIMARY KEY(meter_id, seq)) WITHOUT ROWID;"
		 "CREATE TABLE chunks(id INTEGER PRIMARY KEY, meter_id INTEGER NOT NULL,"
		 " first_utc INTEGER NOT NULL, last_utc INTEGER NOT NULL, seg INTEGER NOT NULL,"
		 " n INTEGER NOT NULL, data BLOB NOT NULL);"
		 "CREATE TABLE agg(meter_id INTEGER NOT NULL, res INTEGER NOT NULL,"
		 " start_utc INTEGER NOT NULL, n INTEGER NOT NULL%s,"
		 " p_min INTEGER, p_max INTEGER, p_sum INTEGER, p_n INTEGER,"
		 " PRIMARY KEY(meter_id, res, start_utc)) WITHOUT ROWID;"
		 "CREATE TABLE state(meter_id INTEGER PRIMARY KEY, agg_upto INTEGER NOT NULL,"
		 " seg INTEGER NOT NULL, have INTEGER NOT NULL%s);"
		 "PRAGMA user_version=%d;"
		 "COMMIT;",
		 cols, cols, STORE_SCHEMA_VERSION);
	return exec(s, sql);
}

/* Bring the schema to STORE_SCHEMA_VERSION. Migrations go here, one step per version. */
static int migrate(struct store *s)
{
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL);
	if (rc != SQLITE_OK)
		return rc;
	rc = sqlite3_step(st);
	int version = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : -1;
	sqlite3_finalize(st);
	if (version < 0)
		return rc == SQLITE_DONE ? SQLITE_ERROR : rc;
	if (version == 0 && !s->read_only)
		return create_schema(s);
	if (version == STORE_SCHEMA_VERSION)
		return SQLITE_OK;
	log_error("store %s: schema version %d, this p1d knows %d", s->path, version,
		  STORE_SCHEMA_VERSION);
	return SQLITE_MISMATCH;
}

static int prepare(struct store *s)
{
	char cols[1024], qs[256], upd[4096], sql[8192];
	store_cols(cols, sizeof(cols), ", %s");
	store_cols(qs, sizeof(qs), ", ?");
	int rc;
	if ((rc = sqlite3_prepare_v3(s->db,
				     "INSERT INTO chunks(id, meter_id, first_utc, last_utc, seg, n, data)"
				     " VALUES(?2 * 64 + (?1 & 63), ?1, ?2, ?3, ?4, ?5, ?6)",
				     -1, SQLITE_PREPARE_PERSISTENT, &s->st_chunk, NULL)))
		return rc;
	size_t used = 0;
	upd[0] = 0;
	for (int r = 0; r < STORE_REG_COUNT; r++) {
		const char *n = p1_field_info(reg_fields[r])->name;
		int k = snprintf(upd + used, sizeof(upd) - used,
				 ", %s = CASE WHEN excluded.%s IS NULL THEN %s"
				 " ELSE coalesce(%s, 0) + excluded.%s END", n, n, n, n, n);
		if (k < 0 || (size_t)k >= sizeof(upd) - used)
			return SQLITE_TOOBIG;
		used += (size_t)k;
	}
	snprintf(sql, sizeof(sql),
		 "INSERT INTO agg(meter_id, res, start_utc, n%s, p_min, p_max, p_sum, p_n)"
		 " VALUES(?, ?, ?, ?%s, ?, ?, ?, ?)"
		 " ON CONFLICT(meter_id, res, start_utc) DO UPDATE SET n = n + excluded.n%s,"
		 " p_min = coalesce(min(p_min, excluded.p_min), p_min, excluded.p_min),"
		 " p_max = coalesce(max(p_max, excluded.p_max), p_max, excluded.p_max),"
		 " p_sum = coalesce(p_sum, 0) + coalesce(excluded.p_sum, 0),"
		 " p_n = coalesce(p_n, 0) + coalesce(excluded.p_n, 0)",
		 cols, qs, upd);
	if ((rc = sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s->st_agg, NULL)))
		return rc;
	snprintf(sql, sizeof(sql),
		 "INSERT OR REPLACE INTO state(meter_id, agg_upto, seg, have%s)"
		 " VALUES(?, ?, ?, ?%s)", cols, qs);
	if ((rc = sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s->st_state,
				     NULL)))
		return rc;
	if ((rc = sqlite3_prepare_v3(s->db,
				     "INSERT OR IGNORE INTO segments(meter_id, seq, start_utc,"
				     " identity, reason) VALUES(?, ?, ?, ?, ?)",
				     -1, SQLITE_PREPARE_PERSISTENT, &s->st_segment, NULL)))
		return rc;
	if ((rc = sqlite3_prepare_v3(
		     s->db,
		     "DELETE FROM chunks WHERE id IN (SELECT id FROM chunks WHERE id < ?2 * 64"
		     " AND meter_id = ?1 AND last_utc < ?2 ORDER BY id LIMIT ?3) AND EXISTS"
		     " (SELECT 1 FROM chunks WHERE meter_id = ?1 AND id < (?2 - ?4) * 64)",
		     -1, SQLITE_PREPARE_PERSISTENT, &s->st_retention, NULL)))
		return rc;
	return SQLITE_OK;
}

static void close_db(struct store *s)
{
	sqlite3_stmt **sts[] = {&s->st_chunk, &s->st_agg, &s->st_state, &s->st_segment,
				&s->st_retention};
	for (size_t i = 0; i < sizeof(sts) / sizeof(sts[0]); i++) {
		sqlite3_finalize(*sts[i]);
		*sts[i] = NULL;
	}
	sqlite3_close_v2(s->db);
	s->db = NULL;
	for (size_t i = 0; i < s->n_meters; i++)
		s->meters[i].db_id = 0;
}

/* Move path (and its -wal, -shm) to path.corrupt-<UTC>. */
static void move_aside(struct store *s)
{
	char stamp[32], dst[4200], src[4200];
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	size_t n = strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
	for (int i = 1; i < 100; i++) { /* never overwrite an earlier one of the same second */
		snprintf(dst, sizeof(dst), "%s.corrupt-%s", s->path, stamp);
		if (access(dst, F_OK) < 0) /* Flawfinder: ignore: picks a free name; no privilege */
			break;
		snprintf(stamp + n, sizeof(stamp) - n, "-%d", i);
	}
	const char *suffix[] = {"", "-wal", "-shm"};
	for (size_t i = 0; i < 3; i++) {
		snprintf(src, sizeof(src), "%s%s", s->path, suffix[i]);
		snprintf(dst, sizeof(dst), "%s.corrupt-%s%s", s->path, stamp, suffix[i]);
		if (rename(src, dst) == 0 && i == 0)
			log_error("store %s: database is corrupt, moved to %s, starting a fresh one",
				  s->path, dst);
	}
}

/* Pragmas, integrity, schema, statements. */
static int setup_db(struct store *s)
{
	int rc;
	sqlite3_busy_timeout(s->db, s->read_only ? 2000 : 100);
	if (s->read_only)
		return migrate(s);
	sqlite3_stmt *st;
	if ((rc = sqlite3_prepare_v2(s->db, "PRAGMA quick_check", -1, &st, NULL)))
		return rc;
	rc = sqlite3_step(st);
	bool ok = rc == SQLITE_ROW && !strcmp((const char *)sqlite3_column_text(st, 0), "ok");
	sqlite3_finalize(st);
	if (!ok)
		return rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_CORRUPT : rc;
	/* WAL: a commit appends to one file and readers never block the writer. FULL: the WAL
	 * is fsynced at every commit, so a power cut loses at most the readings waiting in
	 * memory (one commit window). NORMAL fsyncs the WAL only at checkpoints (every
	 * STORE_CHECKPOINT_PAGES, hours of commits): a power cut would lose every commit since
	 * the last one. The price is one fdatasync per commit window (1440 a day at 60 s);
	 * SQLite writes the same bytes. tests/unit/test_powerloss.c (test matrix D2) checks it. */
	char pragmas[160];
	snprintf(pragmas, sizeof(pragmas),
		 "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA secure_delete=OFF;"
		 " PRAGMA cache_size=-%d",
		 STORE_CACHE_KIB);
	if ((rc = exec(s, pragmas)))
		return rc;
	if ((rc = migrate(s)))
		return rc;
	return prepare(s);
}

/* SQLite's automatic checkpoint, done here so that it is counted: in WAL mode a checkpoint
 * is when the database file is fsynced. */
static int on_wal(void *ud, sqlite3 *db, const char *name, int pages)
{
	struct store *s = ud;
	if (pages >= STORE_CHECKPOINT_PAGES &&
	    sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL) == SQLITE_OK)
		s->checkpoints++;
	return SQLITE_OK;
}

static int open_db(struct store *s)
{
	for (int attempt = 0; attempt < 2; attempt++) {
		int flags = s->read_only ? SQLITE_OPEN_READONLY
					 : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
		int rc = sqlite3_open_v2(s->path, &s->db, flags | SQLITE_OPEN_NOMUTEX, NULL);
		/* SQLite opens a file it may not write read-only, without an error: that is a
		 * failure to open for writing, retried like any other */
		if (rc == SQLITE_OK && !s->read_only && sqlite3_db_readonly(s->db, "main") == 1)
			rc = SQLITE_READONLY;
		if (rc == SQLITE_OK)
			rc = setup_db(s);
		if (rc == SQLITE_OK) {
			if (!s->read_only)
				sqlite3_wal_hook(s->db, on_wal, s);
			return 0;
		}
		int r = store_errno(rc);
		if (r == -EBADMSG && !s->read_only && attempt == 0) {
			close_db(s);
			move_aside(s);
			continue;
		}
		if (!s->read_only)
			note_failure(s, "cannot open", rc, "keeping telegrams in memory and retrying");
		else
			log_error("store %s: cannot open: %s", s->path,
				  s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
		close_db(s);
		return r;
	}
	return -EBADMSG;
}

/* ---- meters ------------------------------------------------------------------------------- */

/* The meter's id in the database, created when missing. 0 when unknown or on error (*rc). */
int64_t store_meter_id(struct store *s, struct store_meter *m, bool create, int *rc)
{
	if (m->db_id)
		return m->db_id;
	sqlite3_stmt *st;
	*rc = sqlite3_prepare_v2(s->db, "SELECT id FROM meters WHERE name = ?", -1, &st, NULL);
	if (*rc)
		return 0;
	sqlite3_bind_text(st, 1, m->name, -1, SQLITE_STATIC);
	*rc = sqlite3_step(st);
	if (*rc == SQLITE_ROW)
		m->db_id = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	*rc = *rc == SQLITE_ROW || *rc == SQLITE_DONE ? SQLITE_OK : *rc;
	if (m->db_id || !create || *rc)
		return m->db_id;
	*rc = sqlite3_prepare_v2(s->db, "INSERT INTO meters(name) VALUES(?)", -1, &st, NULL);
	if (*rc)
		return 0;
	sqlite3_bind_text(st, 1, m->name, -1, SQLITE_STATIC);
	*rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (*rc != SQLITE_DONE)
		return 0;
	*rc = SQLITE_OK;
	m->db_id = sqlite3_last_insert_rowid(s->db);
	return m->db_id;
}

/* ---- commit ------------------------------------------------------------------------------ */

static void bind_regs(sqlite3_stmt *st, int first, const int64_t *v, uint32_t have)
{
	for (int r = 0; r < STORE_REG_COUNT; r++) {
		if (have & (1u << r))
			sqlite3_bind_int64(st, first + r, v[r]);
		else
			sqlite3_bind_null(st, first + r);
	}
}

static int step_reset(sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
}

static int write_acc(struct store *s, struct store_acc *a, int64_t id, int res)
{
	if (!a->used)
		return SQLITE_OK;
	sqlite3_stmt *st = s->st_agg;
	sqlite3_bind_int64(st, 1, id);
	sqlite3_bind_int(st, 2, res);
	sqlite3_bind_int64(st, 3, a->start);
	sqlite3_bind_int64(st, 4, a->n);
	bind_regs(st, 5, a->sum, a->have);
	int p = 5 + STORE_REG_COUNT;
	if (a->pn) {
		sqlite3_bind_int64(st, p, a->pmin);
		sqlite3_bind_int64(st, p + 1, a->pmax);
		sqlite3_bind_int64(st, p + 2, a->psum);
		sqlite3_bind_int64(st, p + 3, a->pn);
	}
	a->used = false;
	return step_reset(st);
}

/* Add a minute to the bucket of resolution res that contains it, writing the previous one
 * when the minute belongs to another. */
static int acc_minute(struct store *s, struct store_acc *a, int64_t id, int res,
		      const struct store_minute *b)
{
	int64_t start, end;
	store_bucket_bounds((enum store_resolution)res, &s->tz, b->start, &start, &end);
	if (a->used && a->start != start) {
		int rc = write_acc(s, a, id, res);
		if (rc)
			return rc;
	}
	if (!a->used) {
		memset(a, 0, sizeof(*a));
		a->used = true;
		a->start = start;
	}
	a->n += b->n;
	a->have |= b->have;
	for (int r = 0; r < STORE_REG_COUNT; r++)
		a->sum[r] += b->sum[r];
	if (b->pn) {
		a->pmin = a->pn && a->pmin < b->pmin ? a->pmin : b->pmin;
		a->pmax = a->pn && a->pmax > b->pmax ? a->pmax : b->pmax;
		a->psum += b->psum;
		a->pn += b->pn;
	}
	return SQLITE_OK;
}

/* How many pending minutes to write: those of closed hours, or all of them. */
static size_t minutes_to_flush(struct store *s, const struct store_meter *m, bool all)
{
	if (all || !m->n_pend)
		return m->n_pend;
	int64_t last, end, h;
	store_bucket_bounds(STORE_RES_HOUR, &s->tz, m->pend[m->n_pend - 1].start, &last, &end);
	size_t n = 0;
	while (n < m->n_pend) {
		store_bucket_bounds(STORE_RES_HOUR, &s->tz, m->pend[n].start, &h, &end);
		if (h >= last)
			break;
		n++;
	}
	return n;
}

/* Write the meter's pending minutes of closed hours (or all) into the four tiers, its state
 * as of the last of them, and a step of retention. */
static int write_aggregates(struct store *s, struct store_meter *m, bool all)
{
	size_t nf = minutes_to_flush(s, m, all);
	struct store_acc acc[STORE_RES_COUNT] = {0};
	int rc = SQLITE_OK;
	int64_t id = m->db_id;
	if (!nf)
		return SQLITE_OK;
	if (!id && !store_meter_id(s, m, true, &rc))
		return rc;
	id = m->db_id;
	for (size_t k = 0; k < nf && !rc; k++)
		for (int res = 0; res < STORE_RES_COUNT && !rc; res++)
			rc = acc_minute(s, &acc[res], id, res, &m->pend[k]);
	for (int res = 0; res < STORE_RES_COUNT && !rc; res++)
		rc = write_acc(s, &acc[res], id, res);
	if (rc)
		return rc;
	const struct store_minute *b = &m->pend[nf - 1];
	sqlite3_stmt *st = s->st_state;
	sqlite3_bind_int64(st, 1, id);
	sqlite3_bind_int64(st, 2, b->last_utc);
	sqlite3_bind_int64(st, 3, b->seg);
	sqlite3_bind_int64(st, 4, b->have_base);
	bind_regs(st, 5, b->reg, b->have_base);
	if ((rc = step_reset(st)))
		return rc;
	m->n_flush = nf;
	/* retention, a step at a time: chunks older than raw_days before the newest reading (not
	 * the wall clock: imported history keeps its days), never one not yet aggregated; only
	 * once STORE_RETENTION_BATCH_S are due, as freeing pages costs writes of its own */
	int64_t cutoff = m->last_utc - (int64_t)s->raw_days * 86400;
	st = s->st_retention;
	sqlite3_bind_int64(st, 1, id);
	sqlite3_bind_int64(st, 2, cutoff < b->last_utc ? cutoff : b->last_utc);
	sqlite3_bind_int(st, 3, STORE_RETENTION_CHUNKS);
	sqlite3_bind_int(st, 4, STORE_RETENTION_BATCH_S);
	return step_reset(st);
}

static int write_segments(struct store *s, size_t mi, int64_t id)
{
	for (size_t i = 0; i < s->count; i++) {
		const struct store_entry *e = &s->backlog[(s->head + i) % STORE_BACKLOG_MAX];
		if (e->meter != mi || !e->new_seg)
			continue;
		sqlite3_stmt *st = s->st_segment;
		sqlite3_bind_int64(st, 1, id);
		sqlite3_bind_int64(st, 2, e->seg);
		sqlite3_bind_int64(st, 3, e->utc);
		sqlite3_bind_text(st, 4, e->identity, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 5, store_reason_name[e->reason], -1, SQLITE_STATIC);
		int rc = step_reset(st);
		if (rc)
			return rc;
	}
	return SQLITE_OK;
}

/* The backlog of one meter as chunks. */
static int write_chunks(struct store *s, size_t mi)
{
	struct store_meter *m = &s->meters[mi];
	size_t pos = 0;
	int rc = SQLITE_OK;
	while (!rc) {
		uint32_t n = 0, seg = 0;
		int64_t first = 0, last = 0;
		long len = store_chunk_encode(s, mi, &pos, &n, &first, &last, &seg);
		if (len < 0)
			return SQLITE_NOMEM;
		if (!n)
			break;
		if (!m->db_id && !store_meter_id(s, m, true, &rc))
			return rc;
		sqlite3_stmt *st = s->st_chunk;
		sqlite3_bind_int64(st, 1, m->db_id);
		sqlite3_bind_int64(st, 2, first);
		sqlite3_bind_int64(st, 3, last);
		sqlite3_bind_int64(st, 4, seg);
		sqlite3_bind_int64(st, 5, n);
		sqlite3_bind_blob(st, 6, s->buf, (int)len, SQLITE_STATIC);
		rc = step_reset(st);
	}
	return rc ? rc : write_segments(s, mi, m->db_id);
}

static int write_all(struct store *s, bool all)
{
	int rc = SQLITE_OK;
	for (size_t mi = 0; mi < s->n_meters && !rc; mi++)
		rc = write_chunks(s, mi);
	for (size_t mi = 0; mi < s->n_meters && !rc; mi++)
		rc = write_aggregates(s, &s->meters[mi], all);
	return rc;
}

static void schedule_retry(struct store *s)
{
	s->retry_ms = s->retry_ms ? s->retry_ms * 2 : STORE_RETRY_MIN_MS;
	if (s->retry_ms > STORE_RETRY_MAX_MS)
		s->retry_ms = STORE_RETRY_MAX_MS;
	if (s->timer)
		loop_timer_arm(s->timer, s->retry_ms, 0);
}

static void recovered(struct store *s)
{
	if (!s->healthy)
		log_notice("store %s: writing again, %zu readings in the backlog", s->path, s->count);
	s->healthy = true;
	if (s->retry_ms && s->timer)
		loop_timer_arm(s->timer, s->commit_interval_ms, s->commit_interval_ms);
	s->retry_ms = 0;
}

static bool anything_to_write(const struct store *s, bool all)
{
	if (s->count)
		return true;
	for (size_t i = 0; all && i < s->n_meters; i++)
		if (s->meters[i].n_pend)
			return true;
	return false;
}

static int commit(struct store *s, bool all)
{
	if (s->read_only)
		return -EROFS;
	if (!s->db) {
		int r = open_db(s);
		if (r < 0) {
			schedule_retry(s);
			return r;
		}
		for (size_t i = 0; i < s->n_meters; i++)
			if (!s->meters[i].started)
				s->meters[i].loaded = false;
	}
	if (!anything_to_write(s, all)) {
		recovered(s);
		return 0;
	}
	if (!sqlite3_get_autocommit(s->db))
		exec(s, "ROLLBACK"); /* the last failed commit's ROLLBACK ran out of memory */
	int rc = exec(s, "BEGIN IMMEDIATE");
	if (!rc)
		rc = write_all(s, all);
	if (!rc)
		rc = exec(s, "COMMIT");
	if (rc) {
		int r = store_errno(rc);
		s->commit_failures++;
		char next[96];
		snprintf(next, sizeof(next), "keeping %zu readings in memory, retrying in %u s",
			 s->count, (unsigned)((s->retry_ms ? s->retry_ms * 2 : STORE_RETRY_MIN_MS) / 1000));
		note_failure(s, "commit failed", rc, next);
		if (!sqlite3_get_autocommit(s->db))
			exec(s, "ROLLBACK");
		for (size_t i = 0; i < s->n_meters; i++) {
			s->meters[i].db_id = 0; /* may have been rolled back */
			s->meters[i].n_flush = 0;
		}
		if (r == -EBADMSG)
			close_db(s); /* reopening moves the file aside */
		schedule_retry(s);
		return r;
	}
	for (size_t i = 0; i < s->n_meters; i++) {
		struct store_meter *m = &s->meters[i];
		memmove(m->pend, m->pend + m->n_flush, (m->n_pend - m->n_flush) * sizeof(*m->pend));
		m->n_pend -= m->n_flush;
		m->n_flush = 0;
	}
	s->committed += s->count;
	s->commits++;
	s->last_commit_utc = (int64_t)time(NULL);
	s->head = s->count = 0;
	recovered(s);
	return 0;
}

int store_commit(struct store *s)
{
	return commit(s, false);
}

int store_sync(struct store *s)
{
	return commit(s, true);
}

static void on_timer(struct loop_timer *t, void *ud)
{
	(void)t;
	store_commit(ud);
}

/* ---- lifetime ---------------------------------------------------------------------------- */

int store_new(struct loop *loop, const struct store_opts *o, struct store **ret_store)
{
	struct store *s = calloc(1, sizeof(*s));
	if (!s || !(s->path = strdup(o->path)))
		goto oom;
	s->tz = o->tz;
	s->raw_days = o->raw_days;
	s->read_only = o->read_only;
	s->commit_interval_ms = o->commit_interval_ms > 0 ? (uint64_t)o->commit_interval_ms : 60000;
	s->fail_rl = (struct log_ratelimit)LOG_RATELIMIT_INIT(60000);
	s->drop_rl = (struct log_ratelimit)LOG_RATELIMIT_INIT(60000);
	s->healthy = true;
	if (!s->read_only && !(s->backlog = calloc(STORE_BACKLOG_MAX, sizeof(*s->backlog))))
		goto oom;
	if (loop && !s->read_only) {
		if (loop_timer_new(loop, on_timer, s, &s->timer) < 0)
			goto oom;
		loop_timer_arm(s->timer, s->commit_interval_ms, s->commit_interval_ms);
	}
	int r = open_db(s);
	if (r < 0 && (s->read_only || r == -ENOMEM)) {
		store_free(s);
		return r;
	}
	if (r < 0)
		schedule_retry(s);
	*ret_store = s;
	return 0;
oom:
	store_free(s);
	return -ENOMEM;
}

struct store *store_free(struct store *s)
{
	if (!s)
		return NULL;
	if (!s->read_only && anything_to_write(s, true) && store_sync(s) < 0)
		log_error("store %s: %zu readings could not be written and are lost", s->path,
			  s->count);
	log_ratelimit_flush(&s->fail_rl, loop_now_ms(), true);
	log_ratelimit_flush(&s->drop_rl, loop_now_ms(), true);
	loop_timer_free(s->timer);
	close_db(s);
	for (size_t i = 0; i < s->n_meters; i++)
		free(s->meters[i].pend);
	free(s->backlog);
	free(s->buf);
	free(s->path);
	free(s);
	return NULL;
}

void store_get_stats(const struct store *s, struct store_stats *ret)
{
	*ret = (struct store_stats){
		.queued = s->queued,
		.ignored = s->ignored,
		.committed = s->committed,
		.dropped = s->dropped,
		.commit_failures = s->commit_failures,
		.segments = s->segments,
		.backlog = s->count,
		.healthy = s->healthy,
		.commits = s->commits,
		.checkpoints = s->checkpoints,
		.last_commit_utc = s->last_commit_utc,
	};
	struct stat st;
	char wal[PATH_MAX];
	if (s->path && stat(s->path, &st) == 0)
		ret->db_bytes += (uint64_t)st.st_size;
	if (s->path && snprintf(wal, sizeof(wal), "%s-wal", s->path) < (int)sizeof(wal) &&
	    stat(wal, &st) == 0)
		ret->db_bytes += (uint64_t)st.st_size;
	if (s->db) {
		int cur = 0, hi = 0;
		if (sqlite3_db_status(s->db, SQLITE_DBSTATUS_CACHE_WRITE, &cur, &hi, 0) == SQLITE_OK)
			ret->pages_written = (uint64_t)cur;
	}
}

const char *store_path(const struct store *s)
{
	return s->path;
}

int64_t store_held_upto(const struct store *s, const char *meter)
{
	for (size_t i = 0; i < s->n_meters; i++)
		if (!strcmp(s->meters[i].name, meter))
			return s->meters[i].last_utc;
	return 0;
}
