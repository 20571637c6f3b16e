/* clock.c - which clock dates a reading (see clock.h). */
#include "clock.h"

#include "p1/telegram.h"

int64_t clock_reading_utc(const struct p1_telegram *t, int64_t received_utc,
			  enum clock_policy policy, bool *ret_fallback)
{
	bool has = p1_has(t, P1_F_TIMESTAMP);
	int64_t u = has ? t->fields[P1_F_TIMESTAMP].time.utc : 0;
	bool use = has && (policy == CLOCK_METER ||
			   (policy == CLOCK_AUTO && u >= CLOCK_BOGUS_BEFORE_UTC &&
			    u <= received_utc + CLOCK_BOGUS_AHEAD_S));
	if (ret_fallback)
		*ret_fallback = has && !use && policy == CLOCK_AUTO;
	return use ? u : received_utc;
}
