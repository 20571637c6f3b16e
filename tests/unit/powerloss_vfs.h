/* powerloss_vfs.h - a SQLite VFS for tests that simulates a power cut, in the manner of
 * SQLite's own src/test6.c. It wraps the default (unix) VFS: every file a connection opens by
 * name (database, -wal, -journal) is written through at once, but the shim keeps, per path,
 * the size the file had at its last xSync and an undo log of the bytes each later write or
 * truncate overwrote. powerloss_crash() puts every file back to what the disk would hold after
 * a power cut: the last synced contents, or, with reordering on, the last synced contents plus
 * a random subset of the 512-byte pieces written since (the disk wrote some of them before
 * the power went). Shared memory (-shm) is passed through: it does not survive a power cut and
 * SQLite rebuilds it from the WAL when it opens the database again.
 *
 * The real fsync is never called (what is durable is what the shim says). Creating and
 * deleting a file are taken as durable at once (SQLite syncs the directory where it matters).
 * For a test process only: the state is global, and the process is expected to _exit() after
 * the crash without closing anything. */
#ifndef P1D_POWERLOSS_VFS_H
#define P1D_POWERLOSS_VFS_H

#include <stdbool.h>
#include <stdint.h>

/* Register the "powerloss" VFS over the current default one, as the new default when
 * make_default (sqlite3_open_v2(..., NULL) then uses it). Returns a SQLite result code. */
int powerloss_register(bool make_default);

/* keep_percent 0: a crash restores exactly the synced state; 1..100: each 512-byte piece of an
 * unsynced write survives with that probability (seeded, reproducible). */
void powerloss_set_reorder(unsigned keep_percent, uint64_t seed);

/* Cut the power at the ops-th write, truncate or sync from now, before doing it:
 * powerloss_crash(), then _exit(exit_code). db_only counts those of main database files only
 * (in WAL mode they happen in checkpoints). 0 disarms. */
void powerloss_arm(uint64_t ops, bool db_only, int exit_code);

/* Put every tracked file back to its state after a power cut. The open connections are left
 * as they are: call _exit() next. */
void powerloss_crash(void);

struct powerloss_stats {
	uint64_t ops;            /* writes, truncates and syncs seen */
	uint64_t syncs_db;       /* xSync of main databases */
	uint64_t syncs_wal;      /* xSync of WAL files */
	uint64_t syncs_journal;  /* xSync of rollback journals */
	uint64_t unsynced_bytes; /* bytes written since the files' last syncs, now */
};
void powerloss_get_stats(struct powerloss_stats *ret);

#endif
