/* hex.h - private to libp1: the value of one hex digit, either case. */
#ifndef P1_HEX_PRIV_H
#define P1_HEX_PRIV_H

/* 0..15, or -1 when c is not a hex digit. */
static inline int p1_hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c |= 0x20;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

#endif
