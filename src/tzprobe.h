/* tzprobe.h - turn a time zone name into the two offsets libp1 works with, using the system's
 * tz database (libc). Outside libp1 because it reads files and touches TZ. */
#ifndef P1D_TZPROBE_H
#define P1D_TZPROBE_H

#include "p1/time.h"

/* zone: an IANA name ("Europe/Amsterdam"), or NULL/"" for the system's zone. Fills *ret with
 * the winter and summer offsets; eu_rule when they differ. Returns 0 or -EINVAL. */
int tzprobe(const char *zone, struct p1_tz *ret);

#endif
