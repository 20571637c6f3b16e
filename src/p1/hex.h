/* hex.h - private to libp1: the value of one hex digit, either case. */
#ifndef P1_HEX_PRIV_H
#define P1_HEX_PRIV_H

/* 0..15, or -1 when c (a char or a byte) is not a hex digit. */
static inline int p1_hexval(int c)
{
	/* 1 + the value, 0 for anything that is not a hex digit */
	static const unsigned char v[256] = {
		['0'] = 1, ['1'] = 2, ['2'] = 3, ['3'] = 4, ['4'] = 5, ['5'] = 6, ['6'] = 7,
		['7'] = 8, ['8'] = 9, ['9'] = 10, ['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14,
		['E'] = 15, ['F'] = 16, ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14, ['e'] = 15,
		['f'] = 16,
	};
	return v[(unsigned char)c] - 1;
}

#endif
