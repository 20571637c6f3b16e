/* p1/crc16.h - CRC-16/ARC (poly 0x8005 reflected, init 0, no final xor), table driven.
 * The P1 CRC covers every byte from '/' through '!', both included. Check: "123456789" -> BB3D. */
#ifndef P1_CRC16_H
#define P1_CRC16_H

#include <stddef.h>
#include <stdint.h>

/* Continue a CRC over len more bytes; start with crc = 0. */
uint16_t p1_crc16(uint16_t crc, const void *data, size_t len);

#endif
