/* crc16.c - CRC-16/ARC (see p1/crc16.h). Table driven, slicing-by-8: eight bytes per step
 * through eight 256-entry tables (src/p1/crc16_tables.h, generated), then byte by byte. */
#include "p1/crc16.h"

#include <string.h>

#include "crc16_tables.h"

uint16_t p1_crc16(uint16_t crc, const void *data, size_t len)
{
	const unsigned char *p = data;
	uint32_t c = crc;
	while (len >= 8) {
		c ^= (uint32_t)p[0] | (uint32_t)p[1] << 8;
		c = crc16_tables[7][c & 0xff] ^ crc16_tables[6][c >> 8] ^ crc16_tables[5][p[2]] ^
		    crc16_tables[4][p[3]] ^ crc16_tables[3][p[4]] ^ crc16_tables[2][p[5]] ^
		    crc16_tables[1][p[6]] ^ crc16_tables[0][p[7]];
		p += 8;
		len -= 8;
	}
	while (len--)
		c = (c >> 8) ^ crc16_tables[0][(c ^ *p++) & 0xff];
	return (uint16_t)c;
}
