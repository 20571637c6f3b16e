/* powerloss_vfs.c - the power-cut VFS of powerloss_vfs.h. Every named file gets a track (by
 * path, so that it outlives a close: unsynced data of a closed file is lost too) holding its
 * synced size and an undo log, newest first, of what each unsynced write or truncate
 * overwrote. xSync empties the log. powerloss_crash() walks each log from the newest entry to
 * the oldest writing the old bytes back (all of them, or, with reordering, the pieces the dice
 * say the disk never wrote), then cuts the file to its synced size (or to the end of the
 * furthest piece kept). Used by tests/unit/test_powerloss.c only. */
#include <fcntl.h>
#include <stdbool.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "powerloss_vfs.h"

/* The open flags that say what a file is (main database, WAL, journal, ...). */
#define KIND_MASK \
	(SQLITE_OPEN_MAIN_DB | SQLITE_OPEN_TEMP_DB | SQLITE_OPEN_TRANSIENT_DB | \
	 SQLITE_OPEN_MAIN_JOURNAL | SQLITE_OPEN_TEMP_JOURNAL | SQLITE_OPEN_SUBJOURNAL | \
	 SQLITE_OPEN_SUPER_JOURNAL | SQLITE_OPEN_WAL)

/* The unit of reordering: a piece of a write the disk wrote whole or not at all. */
#define PIECE 512

struct undo {
	struct undo *prev; /* the write before this one */
	sqlite3_int64 off;
	int len;
	bool cut; /* a truncate: always undone (the size is the synced one or beyond) */
	unsigned char old[]; /* what was there (zeros past the end of the file) */
};

struct track {
	struct track *next;
	char *path;
	int kind; /* SQLITE_OPEN_MAIN_DB, _WAL, _MAIN_JOURNAL, ... */
	sqlite3_int64 synced_size;
	struct undo *last; /* newest first */
};

struct pl_file {
	sqlite3_file base;
	struct track *t; /* NULL: a temporary file, not tracked */
	/* the real file follows (vfs.szOsFile) */
};

#define REAL(f) ((sqlite3_file *)((struct pl_file *)(f) + 1))

static sqlite3_vfs vfs, *parent;
static struct track *tracks;
static unsigned keep_percent;
static uint64_t rnd_state = 1, countdown;
static bool count_db_only;
static int crash_code;
static struct powerloss_stats stats;

static unsigned rnd_percent(void)
{
	rnd_state = rnd_state * 6364136223846793005u + 1442695040888963407u;
	return (unsigned)((rnd_state >> 33) % 100);
}

/* Count a write, truncate or sync of f: the armed cut comes before the one it falls on. */
static void tick(const struct pl_file *f)
{
	bool counts = !count_db_only || (f->t && f->t->kind == SQLITE_OPEN_MAIN_DB);
	stats.ops++;
	if (countdown && counts && --countdown == 0) {
		powerloss_crash();
		_exit(crash_code);
	}
}

static struct track *track_of(const char *path)
{
	for (struct track *t = tracks; t; t = t->next)
		if (!strcmp(t->path, path))
			return t;
	return NULL;
}

static void forget(struct track *t)
{
	while (t->last) {
		struct undo *u = t->last;
		t->last = u->prev;
		stats.unsynced_bytes -= (uint64_t)u->len;
		free(u);
	}
}

/* Remember what [off, off + len) holds now, before it is overwritten or cut. */
static int save(struct pl_file *f, sqlite3_int64 off, sqlite3_int64 len, bool cut)
{
	if (!f->t || len <= 0)
		return SQLITE_OK;
	if (len > 1 << 30)
		return SQLITE_NOMEM;
	struct undo *u = malloc(sizeof(*u) + (size_t)len);
	if (!u)
		return SQLITE_NOMEM;
	u->off = off;
	u->len = (int)len;
	u->cut = cut;
	/* a short read zero-fills the rest: bytes past the end were never there */
	int rc = REAL(f)->pMethods->xRead(REAL(f), u->old, u->len, off);
	if (rc != SQLITE_OK && rc != SQLITE_IOERR_SHORT_READ) {
		free(u);
		return rc;
	}
	u->prev = f->t->last;
	f->t->last = u;
	stats.unsynced_bytes += (uint64_t)len;
	return SQLITE_OK;
}

/* ---- file methods ---------------------------------------------------------------------- */

static int pl_close(sqlite3_file *file)
{
	/* the track stays: what was not synced is still at risk */
	return REAL(file)->pMethods->xClose(REAL(file));
}

static int pl_read(sqlite3_file *file, void *buf, int n, sqlite3_int64 off)
{
	return REAL(file)->pMethods->xRead(REAL(file), buf, n, off);
}

static int pl_write(sqlite3_file *file, const void *buf, int n, sqlite3_int64 off)
{
	tick((struct pl_file *)file);
	int rc = save((struct pl_file *)file, off, n, false);
	return rc ? SQLITE_IOERR_WRITE : REAL(file)->pMethods->xWrite(REAL(file), buf, n, off);
}

static int pl_truncate(sqlite3_file *file, sqlite3_int64 size)
{
	sqlite3_int64 cur = 0;
	tick((struct pl_file *)file);
	int rc = REAL(file)->pMethods->xFileSize(REAL(file), &cur);
	if (rc == SQLITE_OK && cur > size)
		rc = save((struct pl_file *)file, size, cur - size, true);
	return rc ? SQLITE_IOERR_TRUNCATE : REAL(file)->pMethods->xTruncate(REAL(file), size);
}

static int pl_sync(sqlite3_file *file, int flags)
{
	struct track *t = ((struct pl_file *)file)->t;
	(void)flags;
	tick((struct pl_file *)file);
	if (!t)
		return SQLITE_OK;
	forget(t);
	int rc = REAL(file)->pMethods->xFileSize(REAL(file), &t->synced_size);
	if (t->kind == SQLITE_OPEN_MAIN_DB)
		stats.syncs_db++;
	else if (t->kind == SQLITE_OPEN_WAL)
		stats.syncs_wal++;
	else if (t->kind == SQLITE_OPEN_MAIN_JOURNAL)
		stats.syncs_journal++;
	return rc;
}

static int pl_file_size(sqlite3_file *file, sqlite3_int64 *ret)
{
	return REAL(file)->pMethods->xFileSize(REAL(file), ret);
}

static int pl_lock(sqlite3_file *file, int lock)
{
	return REAL(file)->pMethods->xLock(REAL(file), lock);
}

static int pl_unlock(sqlite3_file *file, int lock)
{
	return REAL(file)->pMethods->xUnlock(REAL(file), lock);
}

static int pl_check_reserved(sqlite3_file *file, int *ret)
{
	return REAL(file)->pMethods->xCheckReservedLock(REAL(file), ret);
}

static int pl_file_control(sqlite3_file *file, int op, void *arg)
{
	/* a size hint may grow the file behind the shim's back (posix_fallocate) */
	if (op == SQLITE_FCNTL_SIZE_HINT)
		return SQLITE_OK;
	return REAL(file)->pMethods->xFileControl(REAL(file), op, arg);
}

static int pl_sector_size(sqlite3_file *file)
{
	return REAL(file)->pMethods->xSectorSize(REAL(file));
}

static int pl_device_characteristics(sqlite3_file *file)
{
	return REAL(file)->pMethods->xDeviceCharacteristics(REAL(file)) &
	       ~SQLITE_IOCAP_BATCH_ATOMIC;
}

static int pl_shm_map(sqlite3_file *file, int page, int size, int extend, void volatile **ret)
{
	return REAL(file)->pMethods->xShmMap(REAL(file), page, size, extend, ret);
}

static int pl_shm_lock(sqlite3_file *file, int offset, int n, int flags)
{
	return REAL(file)->pMethods->xShmLock(REAL(file), offset, n, flags);
}

static void pl_shm_barrier(sqlite3_file *file)
{
	REAL(file)->pMethods->xShmBarrier(REAL(file));
}

static int pl_shm_unmap(sqlite3_file *file, int delete)
{
	return REAL(file)->pMethods->xShmUnmap(REAL(file), delete);
}

/* Version 2: shared memory for WAL, no xFetch (so no memory-mapped I/O around the shim). */
static const sqlite3_io_methods pl_io = {
	.iVersion = 2,
	.xClose = pl_close,
	.xRead = pl_read,
	.xWrite = pl_write,
	.xTruncate = pl_truncate,
	.xSync = pl_sync,
	.xFileSize = pl_file_size,
	.xLock = pl_lock,
	.xUnlock = pl_unlock,
	.xCheckReservedLock = pl_check_reserved,
	.xFileControl = pl_file_control,
	.xSectorSize = pl_sector_size,
	.xDeviceCharacteristics = pl_device_characteristics,
	.xShmMap = pl_shm_map,
	.xShmLock = pl_shm_lock,
	.xShmBarrier = pl_shm_barrier,
	.xShmUnmap = pl_shm_unmap,
};

/* ---- VFS methods ----------------------------------------------------------------------- */

static int pl_open(sqlite3_vfs *v, const char *name, sqlite3_file *file, int flags, int *ret_flags)
{
	struct pl_file *f = (struct pl_file *)file;
	(void)v;
	file->pMethods = NULL; /* what SQLite expects after a failed open */
	f->t = NULL;
	int rc = parent->xOpen(parent, name, REAL(f), flags, ret_flags);
	if (rc != SQLITE_OK)
		return rc;
	if (name && !(flags & SQLITE_OPEN_DELETEONCLOSE) && !(f->t = track_of(name))) {
		struct track *t = calloc(1, sizeof(*t));
		if (!t || !(t->path = strdup(name))) {
			free(t);
			REAL(f)->pMethods->xClose(REAL(f));
			return SQLITE_NOMEM;
		}
		t->kind = flags & KIND_MASK;
		/* a file that exists now is taken as synced: the test starts from a clean state */
		REAL(f)->pMethods->xFileSize(REAL(f), &t->synced_size);
		t->next = tracks;
		tracks = t;
		f->t = t;
	}
	file->pMethods = &pl_io;
	return SQLITE_OK;
}

static int pl_delete(sqlite3_vfs *v, const char *name, int sync_dir)
{
	(void)v;
	for (struct track **p = &tracks; *p; p = &(*p)->next) {
		if (!strcmp((*p)->path, name)) {
			struct track *t = *p;
			*p = t->next;
			forget(t);
			free(t->path);
			free(t);
			break;
		}
	}
	return parent->xDelete(parent, name, sync_dir);
}

int powerloss_register(bool make_default)
{
	if (!parent) {
		if (!(parent = sqlite3_vfs_find(NULL)))
			return SQLITE_ERROR;
		/* the rest of the unix VFS's methods do not depend on the sqlite3_vfs they are
		 * called with: copy them */
		vfs = *parent;
		vfs.pNext = NULL;
		vfs.zName = "powerloss";
		vfs.szOsFile = (int)sizeof(struct pl_file) + parent->szOsFile;
		vfs.xOpen = pl_open;
		vfs.xDelete = pl_delete;
	}
	return sqlite3_vfs_register(&vfs, make_default);
}

void powerloss_set_reorder(unsigned percent, uint64_t seed)
{
	keep_percent = percent > 100 ? 100 : percent;
	rnd_state = seed;
}

void powerloss_arm(uint64_t ops, bool db_only, int exit_code)
{
	countdown = ops;
	count_db_only = db_only;
	crash_code = exit_code;
}

/* Undo one write: all of it, or with reordering the pieces the disk did not get to. Returns
 * the end of the furthest piece kept (0: none). */
static sqlite3_int64 undo(int fd, const struct undo *u)
{
	sqlite3_int64 kept_end = 0;
	for (int at = 0; at < u->len;) {
		int n = PIECE - (int)((u->off + at) % PIECE);
		if (n > u->len - at)
			n = u->len - at;
		if (keep_percent && !u->cut && rnd_percent() < keep_percent)
			kept_end = u->off + at + n;
		else if (pwrite(fd, u->old + at, (size_t)n, u->off + at) != n)
			abort(); /* the test's own file system failed: nothing sensible is left */
		at += n;
	}
	return kept_end;
}

void powerloss_crash(void)
{
	countdown = 0;
	for (struct track *t = tracks; t; t = t->next) {
		int fd = open(t->path, O_WRONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		sqlite3_int64 size = t->synced_size;
		for (struct undo *u = t->last; u; u = u->prev) {
			sqlite3_int64 end = undo(fd, u);
			if (end > size)
				size = end;
		}
		if (ftruncate(fd, size) < 0)
			abort();
		close(fd);
		forget(t);
	}
}

void powerloss_get_stats(struct powerloss_stats *ret)
{
	*ret = stats;
}
