/* test_crc16.c - unit tests for p1_crc16 (p1/crc16.h): every check value of dsmr-protocol.md
 * §3.6 and §10.2, the telegrams of §10.2 from '/' through '!', incremental computation in any
 * split equal to one shot, agreement with an independent bit-by-bit model over random data, and
 * that none of the wrong CRC-16 variants of §3.6 comes out. The fixture telegrams t1..t3 are
 * read from $P1_TEST_DATA when it is set. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "p1/crc16.h"

/* §10.2 T1, from '/' through '!' (104 bytes). */
static const char t1[] = "/XXX5TEST\r\n"
                         "\r\n"
                         "1-3:0.2.8(50)\r\n"
                         "0-0:1.0.0(240101120000W)\r\n"
                         "1-0:1.8.1(000123.456*kWh)\r\n"
                         "1-0:1.7.0(01.234*kW)\r\n"
                         "!";

/* §10.3 plaintext from '/' through '!' */
static const char lux[] = "/Lux5\\253000000_M\r\n"
                          "\r\n"
                          "1-3:0.2.8(42)\r\n"
                          "0-0:1.0.0(240601120000S)\r\n"
                          "1-0:1.8.0(000123.456*kWh)\r\n"
                          "1-0:2.8.0(000001.000*kWh)\r\n"
                          "1-0:1.7.0(00.500*kW)\r\n"
                          "!";

static uint16_t crc_str(const char *s)
{
	return p1_crc16(0, s, strlen(s));
}

/* The bitwise procedure of §3.6, written from the prose, independent of the table. */
static uint16_t crc_model(const uint8_t *p, size_t n)
{
	uint16_t crc = 0;
	for (size_t i = 0; i < n; i++) {
		crc ^= p[i];
		for (int k = 0; k < 8; k++)
			crc = (crc & 1) ? (uint16_t)((crc >> 1) ^ 0xA001) : (uint16_t)(crc >> 1);
	}
	return crc;
}

/* Generic MSB-first CRC model with the parameters of the "wrong" variants of §3.6. */
static uint16_t crc_msb(const char *s, uint16_t poly, uint16_t init, uint16_t xorout)
{
	uint16_t crc = init;
	for (; *s; s++) {
		crc ^= (uint16_t)((uint8_t)*s << 8);
		for (int k = 0; k < 8; k++)
			crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ poly) : (uint16_t)(crc << 1);
	}
	return crc ^ xorout;
}

/* Generic LSB-first (reflected) model. */
static uint16_t crc_lsb(const char *s, uint16_t rpoly, uint16_t init, uint16_t xorout)
{
	uint16_t crc = init;
	for (; *s; s++) {
		crc ^= (uint8_t)*s;
		for (int k = 0; k < 8; k++)
			crc = (crc & 1) ? (uint16_t)((crc >> 1) ^ rpoly) : (uint16_t)(crc >> 1);
	}
	return crc ^ xorout;
}

static void test_check_values(void **state)
{
	(void)state;
	assert_int_equal(crc_str("123456789"), 0xBB3D);
	assert_int_equal(crc_str("/"), 0xDC41);
	assert_int_equal(crc_str("/!"), 0x28DC);
	assert_int_equal(crc_str("/\r\n\r\n!"), 0xFD7E);
	assert_int_equal(crc_str("1"), 0xD4C1);
	assert_int_equal(crc_str("12"), 0x4594);
	assert_int_equal(crc_str("123"), 0xBA04);
	assert_int_equal(crc_str("1234"), 0x14BA);
	assert_int_equal(p1_crc16(0, "", 0), 0x0000);
	assert_int_equal(p1_crc16(0, NULL, 0), 0x0000);
	/* a zero-length continuation leaves the register alone */
	assert_int_equal(p1_crc16(0xBB3D, "", 0), 0xBB3D);
}

/* §3.6 worked example: the register after the first byte '/' step by step ends at DC41; the
 * same register continued with '!' gives the "/!" value. */
static void test_worked_example(void **state)
{
	(void)state;
	uint16_t r = p1_crc16(0, "/", 1);
	assert_int_equal(r, 0xDC41);
	assert_int_equal(p1_crc16(r, "!", 1), 0x28DC);
}

static void test_telegram_vectors(void **state)
{
	(void)state;
	char buf[256];

	assert_int_equal(strlen(t1), 104);
	assert_int_equal(crc_str(t1), 0xDEBB);

	/* T1 with LF-only line ends */
	size_t n = 0;
	for (const char *p = t1; *p; p++)
		if (*p != '\r')
			buf[n++] = *p;
	assert_int_equal(p1_crc16(0, buf, n), 0x3B0E);

	/* single-digit corruption 01.234 -> 01.235 */
	strcpy(buf, t1);
	char *d = strstr(buf, "01.234");
	assert_non_null(d);
	d[5] = '5';
	assert_int_equal(crc_str(buf), 0x127A);

	/* XXX5TEST written xxx5test */
	strcpy(buf, t1);
	memcpy(buf + 1, "xxx5test", 8);
	assert_int_equal(crc_str(buf), 0x0E0F);

	/* U1 */
	assert_int_equal(crc_str("/XXX5TEST\r\n\r\n1-0:1.8.1(001001.000*kWh)\r\n!"), 0x08D2);

	/* Lux plaintext of §10.3 */
	assert_int_equal(strlen(lux) + 6, 145); /* + "ABE8\r\n" */
	assert_int_equal(crc_str(lux), 0xABE8);
}

/* The fixture files t1..t3 (the §10.2 telegrams, exact bytes): CRC over '/'..'!'. */
static void test_fixture_files(void **state)
{
	(void)state;
	static const struct {
		const char *name;
		uint16_t crc;
		size_t covered;
	} files[] = {
	        {"t1-dsmr5-minimal.txt", 0xDEBB, 104},
	        {"t2-dsmr5.txt", 0xA7E4, 769},
	        {"t3-fluvius.txt", 0x8DF5, 734},
	};
	const char *dir = getenv("P1_TEST_DATA");
	if (!dir) {
		print_message("P1_TEST_DATA not set, skipping the fixture files\n");
		skip();
	}
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		char path[4096], data[4096];
		snprintf(path, sizeof(path), "%s/%s", dir, files[i].name);
		FILE *f = fopen(path, "rb");
		if (!f)
			fail_msg("cannot open %s", path);
		size_t n = fread(data, 1, sizeof(data) - 1, f);
		fclose(f);
		data[n] = 0;
		char *bang = strstr(data, "\r\n!");
		assert_non_null(bang);
		size_t covered = (size_t)(bang + 3 - data);
		assert_int_equal(data[0], '/');
		assert_int_equal(covered, files[i].covered);
		assert_int_equal(p1_crc16(0, data, covered), files[i].crc);
		/* and the CRC the file carries is that value */
		assert_int_equal(strtoul(bang + 3, NULL, 16), files[i].crc);
	}
}

/* The wrong variants of §3.6 give their documented values, and p1_crc16 gives none of them. */
static void test_wrong_variants(void **state)
{
	(void)state;
	const char *s = "123456789";
	uint16_t buypass = crc_msb(s, 0x8005, 0x0000, 0x0000);
	uint16_t modbus = crc_lsb(s, 0xA001, 0xFFFF, 0x0000);
	uint16_t ccitt_false = crc_msb(s, 0x1021, 0xFFFF, 0x0000);
	uint16_t xmodem = crc_msb(s, 0x1021, 0x0000, 0x0000);
	uint16_t kermit = crc_lsb(s, 0x8408, 0x0000, 0x0000);
	assert_int_equal(buypass, 0xFEE8);
	assert_int_equal(modbus, 0x4B37);
	assert_int_equal(ccitt_false, 0x29B1);
	assert_int_equal(xmodem, 0x31C3);
	assert_int_equal(kermit, 0x2189);
	assert_int_equal(crc_lsb(s, 0xA001, 0, 0), 0xBB3D); /* the model itself is right */

	uint16_t got = crc_str(s);
	const uint16_t wrong[] = {buypass, modbus, ccitt_false, xmodem, kermit};
	for (size_t i = 0; i < sizeof(wrong) / sizeof(wrong[0]); i++)
		assert_int_not_equal(got, wrong[i]);

	/* and over a whole telegram too: the table is not one of the other variants */
	assert_int_not_equal(crc_str(t1), crc_lsb(t1, 0xA001, 0xFFFF, 0));
	assert_int_not_equal(crc_str(t1), crc_msb(t1, 0x8005, 0, 0));
}

/* Any split of T1 into two or three pieces gives the one-shot value. */
static void test_incremental(void **state)
{
	(void)state;
	size_t n = strlen(t1);
	for (size_t a = 0; a <= n; a++) {
		uint16_t c = p1_crc16(0, t1, a);
		assert_int_equal(p1_crc16(c, t1 + a, n - a), 0xDEBB);
	}
	for (size_t a = 0; a <= n; a += 7)
		for (size_t b = a; b <= n; b += 3) {
			uint16_t c = p1_crc16(0, t1, a);
			c = p1_crc16(c, t1 + a, b - a);
			assert_int_equal(p1_crc16(c, t1 + b, n - b), 0xDEBB);
		}
	/* byte by byte */
	uint16_t c = 0;
	for (size_t i = 0; i < n; i++)
		c = p1_crc16(c, t1 + i, 1);
	assert_int_equal(c, 0xDEBB);
}

/* Random data of random lengths, split at random points: table == bitwise model. */
static void test_random_against_model(void **state)
{
	(void)state;
	static uint8_t buf[4096];
	uint32_t x = 0x12345678;
	for (int round = 0; round < 2000; round++) {
		size_t n = 0;
		x = x * 1103515245u + 12345u;
		n = (x >> 8) % sizeof(buf);
		for (size_t i = 0; i < n; i++) {
			x = x * 1103515245u + 12345u;
			buf[i] = (uint8_t)(x >> 16);
		}
		uint16_t want = crc_model(buf, n);
		assert_int_equal(p1_crc16(0, buf, n), want);
		x = x * 1103515245u + 12345u;
		size_t cut = n ? (x >> 4) % (n + 1) : 0;
		assert_int_equal(p1_crc16(p1_crc16(0, buf, cut), buf + cut, n - cut), want);
	}
	/* every single byte value */
	for (unsigned b = 0; b < 256; b++) {
		uint8_t byte = (uint8_t)b;
		assert_int_equal(p1_crc16(0, &byte, 1), crc_model(&byte, 1));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_check_values),         cmocka_unit_test(test_worked_example),
	        cmocka_unit_test(test_telegram_vectors),     cmocka_unit_test(test_fixture_files),
	        cmocka_unit_test(test_wrong_variants),       cmocka_unit_test(test_incremental),
	        cmocka_unit_test(test_random_against_model),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
