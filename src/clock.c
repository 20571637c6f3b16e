/* clock.c - which clock dates a reading (see clock.h). */
#include "clock.h"

#include "p1/telegram.h"

/* In auto mode: is the meter's time u plausible? */
static bool plausible(int64_t u, int64_t received_utc, const struct clock_ctx *ctx)
{
	if (u < CLOCK_BOGUS_BEFORE_UTC)
		return false;
	if (u <= received_utc + CLOCK_BOGUS_AHEAD_S)
		return true;
	/* ahead of the system clock: believe the meter when the system clock is the wrong one */
	if (ctx && received_utc < ctx->sane_after_utc)
		return true;
	return ctx && ctx->last_meter_utc && u > ctx->last_meter_utc &&
	       u - ctx->last_meter_utc <= CLOCK_CONTINUES_S;
}

int64_t clock_reading_utc(const struct p1_telegram *t, int64_t received_utc,
			  enum clock_policy policy, struct clock_ctx *ctx, bool *ret_fallback)
{
	bool has = p1_has(t, P1_F_TIMESTAMP);
	int64_t u = has ? t->fields[P1_F_TIMESTAMP].time.utc : 0;
	bool use = has && (policy == CLOCK_METER ||
			   (policy == CLOCK_AUTO && plausible(u, received_utc, ctx)));
	if (ret_fallback)
		*ret_fallback = has && !use && policy == CLOCK_AUTO;
	if (use && ctx)
		ctx->last_meter_utc = u;
	return use ? u : received_utc;
}
