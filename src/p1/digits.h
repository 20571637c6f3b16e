/* digits.h - private to libp1: decimal digits two at a time, for the formatters that run for
 * every value of every telegram (p1_num_format, p1_time_format). */
#ifndef P1_DIGITS_PRIV_H
#define P1_DIGITS_PRIV_H

#include <string.h>

/* v (0..99) as two digits at p; returns the end. */
static inline char *p1_two_digits(char *p, unsigned v)
{
	static const char pairs[201] = "0001020304050607080910111213141516171819"
				       "2021222324252627282930313233343536373839"
				       "4041424344454647484950515253545556575859"
				       "6061626364656667686970717273747576777879"
				       "8081828384858687888990919293949596979899";
	memcpy(p, pairs + 2 * (size_t)v, 2);
	return p + 2;
}

#endif
