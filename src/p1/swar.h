/* swar.h - private to libp1: eight bytes at a time in a 64-bit word ("SIMD within a
 * register"), portable C. Words are taken in memory order whatever the machine's byte order:
 * byte 0 in the low bits, so the lowest marked byte is the first one in memory. */
#ifndef P1_SWAR_PRIV_H
#define P1_SWAR_PRIV_H

#include <stdint.h>
#include <string.h>

#define BYTES(c) (0x0101010101010101ull * (uint8_t)(c))
#define HIGH BYTES(0x80)

static inline uint64_t load_le64(const void *p)
{
	uint64_t w;
	memcpy(&w, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	w = __builtin_bswap64(w);
#endif
	return w;
}

static inline void store_le64(void *p, uint64_t w)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	w = __builtin_bswap64(w);
#endif
	memcpy(p, &w, 8);
}

/* Bytes of w equal to c, for words of 7-bit bytes only: no sum carries into the next byte,
 * so the result has the high bit of exactly the bytes that are c. */
static inline uint64_t bytes7_eq(uint64_t w, uint8_t c)
{
	return ~((w ^ BYTES(c)) + BYTES(0x7f)) & HIGH;
}

/* Bytes of w equal to c, for any bytes: exact for the first such byte (a borrow may also mark
 * bytes after it), and 0 exactly when there is none. */
static inline uint64_t bytes_eq_first(uint64_t w, uint8_t c)
{
	uint64_t x = w ^ BYTES(c);
	return (x - BYTES(1)) & ~x & HIGH;
}

/* Index of the first byte a test marks; m must not be 0. */
static inline unsigned first_marked(uint64_t m)
{
	return (unsigned)__builtin_ctzll(m) >> 3;
}

/* How many bytes an exact test marks. */
static inline unsigned bytes_marked(uint64_t m)
{
	return (unsigned)(((m >> 7) * BYTES(1)) >> 56);
}

#endif
