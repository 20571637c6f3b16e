/* test_powerloss.c - test matrix D2, simulated power loss. Each cycle forks a child that opens
 * the store through powerloss_vfs (registered as the child's default VFS), takes one telegram
 * per simulated second with a commit every WINDOW readings (the default 60-s commit window at
 * 1 telegram/s), tells the parent through a pipe which readings it took and which commits
 * returned, and loses power at a random point: between two telegrams, or inside a write or a
 * sync (of the schema, a commit or a checkpoint), with the disk holding exactly what was
 * synced or also a random part of what was not (reordering). The child then _exit()s without
 * closing anything: what it held in memory (the backlog of the next commit) is gone.
 *
 * The parent opens the database with SQLite's ordinary VFS and checks: integrity_check ok; no
 * reading the store reported committed before the cut's last commit window is missing, and
 * no more than one window of the readings the child took (loss <= 1 commit window); nothing
 * present after an earlier cut has gone; no impossible rows (readings strictly increasing,
 * each equal to what the meter sent that second, none the meter never sent, one segment,
 * aggregates that add up exactly to the register differences, power within what was sent).
 * The next child reopens the store and continues; at the end the parent does too, and closes
 * it cleanly. P1_POWERLOSS_CYCLES (default 50; 200 for the test matrix) and P1_POWERLOSS_SEED
 * (default: the time, printed) choose the run. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "powerloss_vfs.h"
#include "store.h"
#include "unit_util.h"

#define WINDOW 60               /* readings per commit: commit_interval 60 s at 1 telegram/s */
#define READINGS_MAX 10000      /* readings a child takes at most before the power goes */
#define READINGS_MAX_LONG 50000 /* the same when the cut is to land in a checkpoint */
#define GAP_MAX_S 120           /* seconds the power stays off at most */
#define RAW_DAYS 1              /* short, so that long runs delete raw readings too */
#define CYCLES_DEFAULT 50
#define OPS_PER_WINDOW 3        /* writes and syncs per commit, about: where a cut may land */
#define CHECKPOINT_OPS 120      /* database writes and syncs per checkpoint, about */
#define FINAL_READINGS (3 * WINDOW + 17)
/* how the child ended */
#define EXIT_CUT 40               /* the power went between two telegrams */
#define EXIT_CUT_IN_IO 41         /* inside a write or sync */
#define EXIT_CUT_IN_CHECKPOINT 42 /* inside a checkpoint */
#define POWER_MIN_W 200
#define POWER_MAX_W 1199

static char dir[64], path[300];
static int64_t t0;

/* ---- the meter: every register a function of the second, never going backwards ---------- */

static int64_t exp_t1(int64_t utc)
{
	return 1000000 + 2 * (utc - t0) + (utc - t0) / 7;
}

static int64_t exp_t2(int64_t utc)
{
	return 2000000 + (utc - t0) / 3;
}

static int64_t exp_gas(int64_t utc)
{
	return 300000 + (utc - t0) / 300 * 5;
}

static int64_t exp_power_w(int64_t utc)
{
	return POWER_MIN_W + (utc - t0) * 7919 % (POWER_MAX_W - POWER_MIN_W + 1);
}

#define HAVE ((1u << STORE_E_DEL_T1) | (1u << STORE_E_DEL_T2) | (1u << STORE_GAS))

static void set_num(struct p1_telegram *t, enum p1_field f, int64_t v, const char *unit)
{
	t->fields[f].presence = P1_PRESENT;
	t->fields[f].num = (struct p1_num){.mant = v, .scale = 3, .unit = unit};
}

static const struct p1_telegram *telegram_at(struct p1_telegram *t, int64_t utc)
{
	static const char id[] = "E0043553610385999";
	memset(t->fields, 0, sizeof(t->fields));
	t->fields[P1_F_TIMESTAMP].presence = P1_PRESENT;
	t->fields[P1_F_TIMESTAMP].time.utc = utc;
	t->fields[P1_F_EQUIPMENT_ID].presence = P1_PRESENT;
	t->fields[P1_F_EQUIPMENT_ID].text = (struct p1_text){id, sizeof(id) - 1};
	set_num(t, P1_F_E_DEL_T1, exp_t1(utc), "kWh");
	set_num(t, P1_F_E_DEL_T2, exp_t2(utc), "kWh");
	set_num(t, P1_F_GAS, exp_gas(utc), "m3");
	set_num(t, P1_F_P_DEL, exp_power_w(utc), "kW");
	return t;
}

static struct store_opts opts(bool read_only)
{
	return (struct store_opts){.path = path, .commit_interval_ms = 60000, .raw_days = RAW_DAYS,
				   .tz = P1_TZ_CET, .read_only = read_only};
}

/* ---- the child: the daemon until the power goes ------------------------------------------ */

struct plan {
	int64_t start;         /* the first telegram's second */
	int n;                 /* telegrams before the cut, unless it comes inside I/O first */
	uint64_t cut_after_ops; /* 0: the cut is between two telegrams */
	bool in_checkpoint;    /* cut_after_ops counts database file writes and syncs */
	unsigned keep_percent; /* reordering: unsynced pieces the disk wrote anyway */
	uint64_t seed;
};

struct msg {
	int64_t kind; /* 'R': took readings up to utc; 'C': committed up to utc; 'F': failed */
	int64_t utc;
	uint64_t checkpoints, syncs_wal, syncs_db;
};

static void say(int fd, int64_t kind, int64_t utc, const struct store *s)
{
	struct store_stats st;
	struct powerloss_stats ps;
	store_get_stats(s, &st);
	powerloss_get_stats(&ps);
	struct msg m = {kind, utc, st.checkpoints, ps.syncs_wal, ps.syncs_db};
	if (write(fd, &m, sizeof(m)) != (ssize_t)sizeof(m))
		_exit(6);
}

static void child(int fd, const struct plan *p)
{
	struct store *s = NULL;
	struct store_opts o = opts(false);
	log_set_max_priority(LOG_WARNING);
	if (powerloss_register(true) != SQLITE_OK)
		_exit(3);
	powerloss_set_reorder(p->keep_percent, p->seed);
	powerloss_arm(p->cut_after_ops, p->in_checkpoint,
		      p->in_checkpoint ? EXIT_CUT_IN_CHECKPOINT : EXIT_CUT_IN_IO);
	if (store_new(NULL, &o, &s) < 0)
		_exit(4);
	struct p1_telegram *t = p1_telegram_new(1024);
	for (int i = 0; i < p->n; i++) {
		int64_t utc = p->start + i;
		if (store_add_at(s, "main", telegram_at(t, utc), utc) != 1)
			_exit(5); /* ignored: the store holds a reading from the future */
		if ((i + 1) % WINDOW == 0) {
			say(fd, 'R', utc, s);
			say(fd, store_commit(s) == 0 ? 'C' : 'F', utc, s);
		}
	}
	say(fd, 'R', p->start + p->n - 1, s);
	powerloss_crash();
	_exit(EXIT_CUT);
}

/* ---- the parent's bookkeeping ------------------------------------------------------------ */

struct run {
	uint64_t rnd;
	size_t span; /* seconds from t0 the bitmaps cover */
	uint64_t *taken, *present, *was_present;
	int64_t next_start;
	/* figures */
	int cycles, cut_in_io, cut_in_checkpoint, reordered, commits, failures;
	uint64_t checkpoints, syncs_wal, syncs_db;
	int64_t lost_max, lost_committed_max, lost_total;
	int over_window, lost_before_window, gone_later;
};

static uint64_t next_rnd(struct run *r)
{
	r->rnd = r->rnd * 6364136223846793005u + 1442695040888963407u;
	return r->rnd >> 33;
}

static bool bit(const uint64_t *b, const struct run *r, int64_t utc)
{
	uint64_t i = (uint64_t)(utc - t0);
	return i < r->span && (b[i / 64] >> (i % 64) & 1);
}

static void set_bit(uint64_t *b, const struct run *r, int64_t utc)
{
	uint64_t i = (uint64_t)(utc - t0);
	assert_true(i < r->span);
	b[i / 64] |= (uint64_t)1 << (i % 64);
}

static void clear_bit(uint64_t *b, const struct run *r, int64_t utc)
{
	uint64_t i = (uint64_t)(utc - t0);
	assert_true(i < r->span);
	b[i / 64] &= ~((uint64_t)1 << (i % 64));
}

/* Readings in [from, to] (not before horizon) missing from the database. */
static int64_t missing(const struct run *r, int64_t from, int64_t to, int64_t horizon)
{
	int64_t n = 0;
	for (int64_t u = from > horizon ? from : horizon; u <= to; u++)
		n += !bit(r->present, r, u);
	return n;
}

/* ---- the parent's checks ----------------------------------------------------------------- */

static void assert_not_moved_aside(void)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	assert_non_null(d);
	while ((e = readdir(d)))
		if (strstr(e->d_name, ".corrupt-"))
			fail_msg("the store found %s corrupt, moved it aside: %s", path, e->d_name);
	closedir(d);
}

static sqlite3_stmt *query(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
		fail_msg("%s: %s", sql, sqlite3_errmsg(db));
	return st;
}

/* The first column of the first row, or dflt without a row. */
static int64_t query_int(sqlite3 *db, const char *sql, int64_t dflt)
{
	sqlite3_stmt *st = query(db, sql);
	int rc = sqlite3_step(st);
	int64_t v = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : dflt;
	assert_true(rc == SQLITE_ROW || rc == SQLITE_DONE);
	sqlite3_finalize(st);
	return v;
}

static void assert_integrity(sqlite3 *db)
{
	sqlite3_stmt *st = query(db, "PRAGMA integrity_check");
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	const char *res = (const char *)sqlite3_column_text(st, 0);
	if (strcmp(res, "ok"))
		fail_msg("integrity_check: %s", res);
	assert_int_equal(sqlite3_step(st), SQLITE_DONE);
	sqlite3_finalize(st);
}

/* Raw chunks: in key order, each after the one before, all of segment 0. */
static void assert_chunks(sqlite3 *db)
{
	sqlite3_stmt *st = query(db, "SELECT first_utc, last_utc, seg, n FROM chunks ORDER BY id");
	int64_t prev_last = INT64_MIN;
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		int64_t first = sqlite3_column_int64(st, 0), last = sqlite3_column_int64(st, 1);
		assert_true(first > prev_last);
		assert_true(last >= first);
		assert_int_equal(sqlite3_column_int64(st, 2), 0);
		assert_true(sqlite3_column_int64(st, 3) >= 1);
		assert_true(sqlite3_column_int64(st, 3) <= last - first + 1);
		prev_last = last;
	}
	assert_int_equal(rc, SQLITE_DONE);
	sqlite3_finalize(st);
}

/* Aggregates: at every resolution the amounts add up to the registers at state.agg_upto
 * minus those of the segment's first reading, nothing negative, power within what was sent. */
static void assert_aggregates(sqlite3 *db, int64_t newest)
{
	assert_true(query_int(db, "SELECT count(*) FROM segments", 0) <= 1);
	int64_t seg_start = query_int(db, "SELECT start_utc FROM segments WHERE seq = 0", -1);
	sqlite3_stmt *st = query(db, "SELECT agg_upto, seg, energy_delivered_tariff1,"
				     " energy_delivered_tariff2, gas_delivered FROM state");
	if (sqlite3_step(st) != SQLITE_ROW) {
		sqlite3_finalize(st);
		assert_int_equal(query_int(db, "SELECT count(*) FROM agg", 0), 0);
		return;
	}
	int64_t upto = sqlite3_column_int64(st, 0);
	assert_true(seg_start > 0 && upto >= seg_start && upto <= newest);
	assert_int_equal(sqlite3_column_int64(st, 1), 0);
	assert_int_equal(sqlite3_column_int64(st, 2), exp_t1(upto));
	assert_int_equal(sqlite3_column_int64(st, 3), exp_t2(upto));
	assert_int_equal(sqlite3_column_int64(st, 4), exp_gas(upto));
	sqlite3_finalize(st);
	st = query(db, "SELECT res, sum(n), min(n), coalesce(sum(energy_delivered_tariff1), 0),"
		       " coalesce(sum(energy_delivered_tariff2), 0),"
		       " coalesce(sum(gas_delivered), 0), min(energy_delivered_tariff1),"
		       " min(energy_delivered_tariff2), min(gas_delivered), min(p_min), max(p_max),"
		       " sum(p_n != n) FROM agg GROUP BY res ORDER BY res");
	int64_t n0 = -1;
	int res = 0;
	for (; sqlite3_step(st) == SQLITE_ROW; res++) {
		assert_int_equal(sqlite3_column_int64(st, 0), res);
		if (n0 < 0)
			n0 = sqlite3_column_int64(st, 1);
		assert_int_equal(sqlite3_column_int64(st, 1), n0);
		assert_true(sqlite3_column_int64(st, 2) >= 1);
		assert_int_equal(sqlite3_column_int64(st, 3), exp_t1(upto) - exp_t1(seg_start));
		assert_int_equal(sqlite3_column_int64(st, 4), exp_t2(upto) - exp_t2(seg_start));
		assert_int_equal(sqlite3_column_int64(st, 5), exp_gas(upto) - exp_gas(seg_start));
		for (int c = 6; c <= 8; c++)
			assert_true(sqlite3_column_int64(st, c) >= 0);
		assert_true(sqlite3_column_int64(st, 9) >= POWER_MIN_W);
		assert_true(sqlite3_column_int64(st, 10) <= POWER_MAX_W);
		assert_int_equal(sqlite3_column_int64(st, 11), 0);
	}
	sqlite3_finalize(st);
	assert_int_equal(res, STORE_RES_COUNT);
}

struct scan {
	struct run *r;
	int64_t prev;
	size_t n;
};

static int reading_cb(void *ud, const struct store_reading *rd)
{
	struct scan *c = ud;
	if (rd->utc <= c->prev)
		fail_msg("reading %" PRId64 " after %" PRId64 ": out of order or twice", rd->utc,
			 c->prev);
	if (!bit(c->r->taken, c->r, rd->utc))
		fail_msg("reading %" PRId64 " was never sent", rd->utc);
	assert_int_equal(rd->segment, 0);
	assert_int_equal(rd->have, HAVE);
	assert_int_equal(rd->reg[STORE_E_DEL_T1], exp_t1(rd->utc));
	assert_int_equal(rd->reg[STORE_E_DEL_T2], exp_t2(rd->utc));
	assert_int_equal(rd->reg[STORE_GAS], exp_gas(rd->utc));
	assert_true(rd->have_power);
	assert_int_equal(rd->power_w, exp_power_w(rd->utc));
	set_bit(c->r->present, c->r, rd->utc);
	c->prev = rd->utc;
	c->n++;
	return 0;
}

/* Everything about the database after a cut; fills r->present. Returns the newest reading
 * (0: none). */
static int64_t check_database(struct run *r)
{
	sqlite3 *db = NULL;
	int64_t newest = 0;
	memset(r->present, 0, (r->span + 63) / 64 * 8);
	assert_not_moved_aside();
	if (access(path, F_OK) < 0)
		return 0;
	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, "unix"), SQLITE_OK);
	/* leave the WAL as the cut left it for the next child: no checkpoint at close */
	sqlite3_db_config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);
	assert_integrity(db);
	if (query_int(db, "SELECT count(*) FROM sqlite_master WHERE name = 'chunks'", 0)) {
		assert_chunks(db);
		newest = query_int(db, "SELECT coalesce(max(last_utc), 0) FROM chunks", 0);
		assert_aggregates(db, newest);
		struct store *s = NULL;
		struct store_opts o = opts(true);
		struct scan c = {r, INT64_MIN, 0};
		assert_int_equal(store_new(NULL, &o, &s), 0);
		int n = store_readings_since(s, "main", 0, STORE_QUERY_ROWS_MAX, reading_cb, &c);
		assert_int_equal(n, (int)c.n);
		assert_true(c.n < STORE_QUERY_ROWS_MAX);
		assert_int_equal(c.prev, c.n ? newest : INT64_MIN);
		store_free(s);
	}
	assert_int_equal(sqlite3_close(db), SQLITE_OK);
	return newest;
}

/* What a cut lost, against what the child said. */
struct cycle {
	int64_t read_upto;   /* newest reading the child took */
	int64_t c_last;      /* newest reading of the last commit that returned */
	int64_t c_prev;      /* the same for the commit before it */
	int commits, failures;
	struct msg last;
};

static void judge(struct run *r, const struct plan *p, const struct cycle *c, int64_t newest)
{
	int64_t horizon = newest - RAW_DAYS * 86400;
	int64_t lost = missing(r, p->start, c->read_upto, horizon);
	int64_t lost_committed = missing(r, p->start, c->c_last, horizon);
	int64_t lost_before_window = missing(r, p->start, c->c_prev, horizon);
	int64_t gone = 0;
	for (int64_t u = horizon > t0 ? horizon : t0; u < p->start; u++)
		gone += bit(r->was_present, r, u) && !bit(r->present, r, u);
	if (lost > WINDOW || lost_before_window || gone)
		print_message("cut %d (%s, keep %u%%): took %" PRId64 " readings, committed %d"
			      " times, lost %" PRId64 " (%" PRId64 " reported committed, %" PRId64
			      " before the last window), %" PRId64 " earlier readings gone\n",
			      r->cycles,
			      p->in_checkpoint   ? "in a checkpoint"
			      : p->cut_after_ops ? "inside I/O"
						 : "between telegrams",
			      p->keep_percent, c->read_upto - p->start + 1, c->commits, lost,
			      lost_committed, lost_before_window, gone);
	r->lost_total += lost;
	r->lost_max = lost > r->lost_max ? lost : r->lost_max;
	r->lost_committed_max =
		lost_committed > r->lost_committed_max ? lost_committed : r->lost_committed_max;
	r->over_window += lost > WINDOW;
	r->lost_before_window += lost_before_window > 0;
	r->gone_later += gone > 0;
	memcpy(r->was_present, r->present, (r->span + 63) / 64 * 8);
}

static bool read_msg(int fd, struct msg *m)
{
	size_t got = 0;
	while (got < sizeof(*m)) {
		ssize_t k = read(fd, (char *)m + got, sizeof(*m) - got);
		if (k <= 0)
			return false;
		got += (size_t)k;
	}
	return true;
}

static void run_cycle(struct run *r)
{
	struct plan p = {.start = r->next_start};
	p.n = 1 + (int)(next_rnd(r) % READINGS_MAX);
	p.keep_percent = next_rnd(r) % 2 ? 50 : 0;
	p.seed = next_rnd(r);
	switch (next_rnd(r) % 3) {
	case 0: /* between two telegrams, after the n-th */
		break;
	case 1: /* inside any write or sync: of the schema, a commit or a checkpoint */
		p.cut_after_ops = 1 + next_rnd(r) % ((uint64_t)p.n / WINDOW * OPS_PER_WINDOW + 10);
		break;
	default: /* inside a checkpoint, if one comes within a longer run */
		p.n = 1 + (int)(next_rnd(r) % READINGS_MAX_LONG);
		p.cut_after_ops = 1 + next_rnd(r) % CHECKPOINT_OPS;
		p.in_checkpoint = true;
		break;
	}
	for (int i = 0; i < p.n; i++)
		set_bit(r->taken, r, p.start + i);
	int fds[2];
	assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(fds[0]);
		child(fds[1], &p);
	}
	close(fds[1]);
	struct cycle c = {p.start - 1, p.start - 1, p.start - 1, 0, 0, {0}};
	struct msg m;
	while (read_msg(fds[0], &m)) {
		if (m.kind == 'R')
			c.read_upto = m.utc;
		else if (m.kind == 'C') {
			c.c_prev = c.c_last;
			c.c_last = m.utc;
			c.commits++;
		} else {
			c.failures++;
		}
		c.last = m;
	}
	close(fds[0]);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (!WIFEXITED(status) ||
	    (WEXITSTATUS(status) != EXIT_CUT && WEXITSTATUS(status) != EXIT_CUT_IN_IO &&
	     WEXITSTATUS(status) != EXIT_CUT_IN_CHECKPOINT))
		fail_msg("cut %d: the child ended with status 0x%x", r->cycles, status);
	/* the telegrams after the cut were never sent */
	for (int64_t u = c.read_upto + 1; u < p.start + p.n; u++)
		clear_bit(r->taken, r, u);
	r->cycles++;
	r->cut_in_io += WEXITSTATUS(status) == EXIT_CUT_IN_IO;
	r->cut_in_checkpoint += WEXITSTATUS(status) == EXIT_CUT_IN_CHECKPOINT;
	r->reordered += p.keep_percent > 0;
	r->commits += c.commits;
	r->failures += c.failures;
	r->checkpoints += c.last.checkpoints;
	r->syncs_wal += c.last.syncs_wal;
	r->syncs_db += c.last.syncs_db;
	int64_t newest = check_database(r);
	judge(r, &p, &c, newest);
	r->next_start = (c.read_upto > p.start ? c.read_upto : p.start) + 1 +
			(int64_t)(next_rnd(r) % (GAP_MAX_S + 1));
}

/* After the last cut: the store opens the file, continues and closes cleanly (no loss). */
static void final_run(struct run *r)
{
	struct store *s = NULL;
	struct store_opts o = opts(false);
	struct p1_telegram *t = p1_telegram_new(1024);
	int64_t start = r->next_start;
	assert_int_equal(store_new(NULL, &o, &s), 0);
	for (int i = 0; i < FINAL_READINGS; i++) {
		set_bit(r->taken, r, start + i);
		assert_int_equal(store_add_at(s, "main", telegram_at(t, start + i), start + i), 1);
		if ((i + 1) % WINDOW == 0)
			assert_int_equal(store_commit(s), 0);
	}
	store_free(s);
	p1_telegram_free(t);
	int64_t newest = check_database(r);
	assert_int_equal(newest, start + FINAL_READINGS - 1);
	assert_int_equal(missing(r, start, newest, 0), 0);
}

static void test_power_loss(void **state)
{
	(void)state;
	const char *env = getenv("P1_POWERLOSS_CYCLES");
	int cycles = env ? atoi(env) : CYCLES_DEFAULT;
	env = getenv("P1_POWERLOSS_SEED");
	struct run r = {.rnd = env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL)};
	print_message("%d cuts, P1_POWERLOSS_SEED=%" PRIu64 "\n", cycles, r.rnd);
	r.span = (size_t)cycles * (READINGS_MAX_LONG + GAP_MAX_S + 1) + FINAL_READINGS + 1;
	size_t words = (r.span + 63) / 64;
	r.taken = calloc(words, 8);
	r.present = calloc(words, 8);
	r.was_present = calloc(words, 8);
	assert_true(r.taken && r.present && r.was_present);
	r.next_start = t0;
	while (r.cycles < cycles)
		run_cycle(&r);
	final_run(&r);
	print_message("%d cuts (%d inside a write or sync, %d of them inside a checkpoint; %d with"
		      " reordering): %d commits returned, %d failed, %" PRIu64 " checkpoints,"
		      " %" PRIu64 " WAL syncs, %" PRIu64 " database syncs\n",
		      r.cycles, r.cut_in_io + r.cut_in_checkpoint, r.cut_in_checkpoint, r.reordered,
		      r.commits, r.failures, r.checkpoints, r.syncs_wal, r.syncs_db);
	print_message("lost per cut: at most %" PRId64 " readings (window %d), %" PRId64
		      " in all; at most %" PRId64 " reported committed; %d cuts lost more than a"
		      " window, %d lost readings committed before the last window, %d lost"
		      " earlier readings\n",
		      r.lost_max, WINDOW, r.lost_total, r.lost_committed_max, r.over_window,
		      r.lost_before_window, r.gone_later);
	free(r.taken);
	free(r.present);
	free(r.was_present);
	assert_int_equal(r.failures, 0);
	assert_int_equal(r.lost_before_window, 0);
	assert_int_equal(r.over_window, 0);
	assert_int_equal(r.gone_later, 0);
}

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/p1d-test-powerloss-XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/p1d.db", dir);
	t0 = p1_time_from_civil(2026, 1, 5, 0, 0, 0);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	assert_int_equal(remove_tree(dir), 0);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_power_loss, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
