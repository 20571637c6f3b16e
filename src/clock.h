/* clock.h - which clock dates a reading: the meter's or the system's.
 *
 * A telegram carries the meter's own time (0-0:1.0.0); the daemon knows when it received it.
 * History, MQTT backfill and the HTTP API date a reading with one time, chosen here by the
 * meter's `clock` setting (p1d.conf(5)):
 *   auto   - the meter's time when it is plausible: not before 2010, and not more than a day
 *            ahead of the system clock unless the system clock is the one that is wrong
 *            (earlier than p1d's build, or it jumped back while the meter's clock went on
 *            from its last trusted time); otherwise (meters reset to 2000-01-01, clocks in
 *            the far future, telegrams without a time) the system's time;
 *   meter  - the meter's time whenever the telegram has one (replays of old captures of a
 *            meter whose clock is known to be right);
 *   system - always the time the telegram was received (meters with a wrong clock that is
 *            still plausible).
 * Pure: no clock of its own, no logging. */
#ifndef P1D_CLOCK_H
#define P1D_CLOCK_H

#include <stdbool.h>
#include <stdint.h>

#include "p1/telegram.h"

enum clock_policy { CLOCK_AUTO, CLOCK_METER, CLOCK_SYSTEM };

/* Meter times before this are a reset clock (2010-01-01T00:00:00Z). */
#define CLOCK_BOGUS_BEFORE_UTC 1262304000
/* Meter times further ahead of the system clock than this are wrong. */
#define CLOCK_BOGUS_AHEAD_S 86400

/* A meter time at most this far after the last trusted one continues it. */
#define CLOCK_CONTINUES_S 3600

struct clock_ctx {
	int64_t sane_after_utc;  /* a system clock before this is wrong (p1d's build time) */
	int64_t last_meter_utc;  /* the meter's last trusted time, 0: none; updated */
};

/* The time (UTC seconds) that dates telegram t, received at received_utc. ctx (may be NULL:
 * no history, no build time) is updated. *ret_fallback (may be NULL) is set when the meter
 * has a time that the policy rejected. */
int64_t clock_reading_utc(const struct p1_telegram *t, int64_t received_utc,
			  enum clock_policy policy, struct clock_ctx *ctx, bool *ret_fallback);

#endif
