/* gen_corpus.c - write the seed inputs of the fuzz targets from the project's own telegrams.
 *
 * Seeds are the telegrams in tests/data, each as it is (the base telegrams t1..t4 also
 * truncated, bit-flipped and with LF-only line ends), plus telegrams written here: lower-case
 * and short CRCs, long text messages, power failure logs and demand histories in their corner
 * cases, M-Bus channels of every medium, numbers at their limits, and DLMS envelopes built with
 * p1_dlms_encrypt (short, 0x81 and 0x82 length forms, the unauthenticated 0x20 variant, a
 * damaged tag). Every CRC is computed, never copied. Not built by CMake: run it by hand when the
 * fixtures change, fuzz from its output, then merge into tests/fuzz/corpus (see README.md):
 *
 *   cc -D_GNU_SOURCE -Iinclude src/p1/[a-z]*.c tests/fuzz/gen_corpus.c -lcrypto -o gen_corpus
 *   ./gen_corpus tests/data SEED_DIR
 *
 * Files are named seed-*, so they are easy to tell from inputs the fuzzer found.
 */
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "p1/crc16.h"
#include "p1/dlms.h"

#define MAX_SEED (20 * 1024) /* bytes; keep the committed corpus small */

struct buf {
	uint8_t d[64 * 1024];
	size_t n;
};

static const char *out_dir;
static unsigned written;

static void die(const char *what)
{
	fprintf(stderr, "gen_corpus: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void put(struct buf *b, const void *p, size_t n)
{
	if (n > sizeof(b->d) - b->n) {
		fprintf(stderr, "gen_corpus: seed too large\n");
		exit(1);
	}
	memcpy(b->d + b->n, p, n);
	b->n += n;
}

static void putf(struct buf *b, const char *fmt, ...)
{
	char tmp[8192];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(tmp)) {
		fprintf(stderr, "gen_corpus: line too long\n");
		exit(1);
	}
	put(b, tmp, (size_t)n);
}

/* Append "CRC\r\n" to a telegram that ends with '!'; the CRC covers '/' through '!'. */
static void seal(struct buf *b, size_t start)
{
	putf(b, "%04X\r\n", p1_crc16(0, b->d + start, b->n - start));
}

static void save(const char *target, const char *name, const uint8_t *p, size_t n)
{
	char path[4096];
	if (n > MAX_SEED) {
		fprintf(stderr, "gen_corpus: %s/%s: %zu bytes, over the limit\n", target, name, n);
		exit(1);
	}
	snprintf(path, sizeof(path), "%s/%s", out_dir, target);
	if (mkdir(path, 0755) < 0 && errno != EEXIST)
		die(path);
	snprintf(path, sizeof(path), "%s/%s/seed-%s", out_dir, target, name);
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(p, 1, n, f) != n || fclose(f))
		die(path);
	written++;
}

/* The framer target reads two option bytes and chunk sizes first (see fuzz_framer.c). */
static void save_framer(const char *name, uint8_t opt, const uint8_t *sizes, size_t nsizes,
                        const uint8_t *p, size_t n)
{
	struct buf b = {.n = 0};
	uint8_t hdr[2] = {opt, (uint8_t)nsizes};
	put(&b, hdr, 2);
	put(&b, sizes, nsizes);
	put(&b, p, n);
	save("framer", name, b.d, b.n);
}

/* A text seed goes to the parser as it is and to the decoder as a stream. */
static void save_text(const char *name, const struct buf *b)
{
	save("parse", name, b->d, b->n);
	save("decoder", name, b->d, b->n);
}

/* ---- telegrams written here ---- */

/* DSMR 5, three phases, gas: the shape most Dutch meters send. */
static void dsmr5_3ph(struct buf *b, const char *extra)
{
	size_t s = b->n;
	putf(b, "/ISK5\\2M550T-1012\r\n\r\n1-3:0.2.8(50)\r\n0-0:1.0.0(241027025959S)\r\n"
	        "0-0:96.1.1(4530303434303031353337363331343137)\r\n"
	        "1-0:1.8.1(012345.678*kWh)\r\n1-0:1.8.2(023456.789*kWh)\r\n"
	        "1-0:2.8.1(001234.567*kWh)\r\n1-0:2.8.2(002345.678*kWh)\r\n0-0:96.14.0(0002)\r\n"
	        "1-0:1.7.0(01.234*kW)\r\n1-0:2.7.0(00.000*kW)\r\n0-0:96.7.21(00012)\r\n"
	        "0-0:96.7.9(00003)\r\n");
	putf(b, "%s", extra);
	putf(b, "1-0:32.32.0(00002)\r\n1-0:52.32.0(00001)\r\n1-0:72.32.0(00001)\r\n"
	        "1-0:32.36.0(00000)\r\n1-0:52.36.0(00000)\r\n1-0:72.36.0(00000)\r\n"
	        "0-0:96.13.0()\r\n1-0:32.7.0(230.1*V)\r\n1-0:52.7.0(231.2*V)\r\n"
	        "1-0:72.7.0(229.8*V)\r\n1-0:31.7.0(002*A)\r\n1-0:51.7.0(001*A)\r\n"
	        "1-0:71.7.0(003*A)\r\n1-0:21.7.0(00.412*kW)\r\n1-0:41.7.0(00.198*kW)\r\n"
	        "1-0:61.7.0(00.624*kW)\r\n1-0:22.7.0(00.000*kW)\r\n1-0:42.7.0(00.000*kW)\r\n"
	        "1-0:62.7.0(00.000*kW)\r\n0-1:24.1.0(003)\r\n"
	        "0-1:96.1.0(4730303339303031363331373831383137)\r\n"
	        "0-1:24.2.1(241027025500S)(04567.890*m3)\r\n!");
	seal(b, s);
}

/* Luxembourg Smarty plaintext with the pair lines in both spellings. */
static void smarty(struct buf *b)
{
	size_t s = b->n;
	putf(b, "/Lux5\\253000000_M\r\n\r\n1-3:0.2.8(42)\r\n0-0:1.0.0(240601120000S)\r\n"
	        "0-0:42.0.0(53414731303330373539373834)\r\n1-0:1.8.0(000123.456*kWh)\r\n"
	        "1-0:2.8.0(000001.000*kWh)\r\n1-0:3.8.0(000010.000*kvarh)\r\n"
	        "1-0:4.8.0(000002.000*kvarh)\r\n1-0:1.7.0(00.500*kW)\r\n1-0:2.7.0(00.000*kW)\r\n"
	        "1-0:3.7.0(00.100*kvar)\r\n1-0:4.7.0(00.000*kvar)\r\n0-0:17.0.0(999.9*kVA)\r\n"
	        "1-1:31.4.0(100*A)(-063*A)\r\n1-1:34.4.0(100.0*A,-100.0*A)\r\n"
	        "1-0:9.7.0(00.510*kVA)\r\n1-0:10.7.0(00.000*kVA)\r\n0-0:96.3.10(1)\r\n"
	        "0-1:96.3.10(0)\r\n0-0:96.7.21(00003)\r\n0-0:96.13.0()\r\n0-0:96.13.2(4869)\r\n"
	        "1-0:23.7.0(00.010*kvar)\r\n1-0:24.7.0(00.000*kvar)\r\n!");
	seal(b, s);
}

/* Every M-Bus medium, a DSMR 2.2 gas profile, a DLMS date-time, odd spellings. */
static void mbus_all(struct buf *b)
{
	size_t s = b->n;
	putf(b, "/XMX5LGBBFG1012463817\r\n\r\n1-3:0.2.8(50)\r\n0-0:1.0.0(241231235959W)\r\n"
	        "0-1:24.1.0(003)\r\n0-1:96.1.0(4730303339303031363331373831383137)\r\n"
	        "0-1:24.2.1(241231235500W)(01234.567*m3)\r\n0-1:24.4.0(1)\r\n"
	        "0-2:24.1.0(007)\r\n0-2:96.1.1(3830303030303030303030303030303030)\r\n"
	        "0-2:24.2.1(632525252525W)(00000000)\r\n0-3:24.1.0(004)\r\n"
	        "0-3:24.2.1(241231235500W)(00012.345*GJ)\r\n0-4:24.1.0(002)\r\n"
	        "0-4:24.2.1(241231235500W)(000100.000*kWh)\r\n0-4:96.3.10(1)\r\n"
	        "0-0:1.0.0*255(07E80C1FFF173B3B00FFC400)\r\n1-0:1.8.1*255(000001.000*kWh)\r\n"
	        "1-0:1.8.2 ( 000002.000 * KWH )\r\n1-0:1.7.0((00.100*kW))\r\n"
	        "1-0:2.7.0(00000*W)\r\n1-0:3.8.0(000001*varh)\r\n1-0:14.7.0(49.98*Hz)\r\n"
	        "1-0:13.7.0(0.998)\r\n0-0:96.99.8(unknown)\r\n0-0:96.99.8(again)\r\n"
	        "not a line at all\r\n!");
	seal(b, s);
}

static void t4_style(struct buf *b)
{
	putf(b, "/KMP5 ZABF000000000000\r\n\r\n0-0:96.1.1(4B384547303034303436333935353037)\r\n"
	        "1-0:1.8.1(00123.456*kWh)\r\n1-0:1.8.2(00234.567*kWh)\r\n0-0:96.14.0(0001)\r\n"
	        "1-0:1.7.0(0000.45*kW)\r\n0-0:17.0.0(999*A)\r\n0-0:96.3.10(1)\r\n"
	        "0-1:24.1.0(3)\r\n0-1:96.1.0(3232323241424344313233343536373839)\r\n"
	        "0-1:24.3.0(241027023000)(00)(60)(1)(0-1:24.2.1)(m3)\r\n(01234.567)\r\n"
	        "0-1:24.4.0(1)\r\n!\r\n");
}

static void lf_only(struct buf *out, const struct buf *in)
{
	for (size_t i = 0; i < in->n; i++)
		if (in->d[i] != '\r' || i + 1 >= in->n || in->d[i + 1] != '\n')
			put(out, &in->d[i], 1);
}

/* A telegram of one line type, many times over. */
static void one_line(struct buf *b, const char *header, const char *line)
{
	size_t s = b->n;
	putf(b, "/%s\r\n\r\n1-3:0.2.8(50)\r\n%s\r\n!", header, line);
	seal(b, s);
}

static void hexs(char *out, const char *s)
{
	for (; *s; s++, out += 2)
		sprintf(out, "%02X", (unsigned char)*s);
	*out = 0;
}

static void text_variants(void)
{
	static char line[6000], hex[4200], msg[2100];
	struct buf b = {.n = 0};

	/* long text messages: hex of 1024 printable bytes, the longest the spec allows */
	for (int i = 0; i < 1024; i++)
		msg[i] = (char)(' ' + i % 95);
	msg[1024] = 0;
	hexs(hex, msg);
	snprintf(line, sizeof(line), "0-0:96.13.0(%s)\r\n0-0:96.13.1(3031)", hex);
	one_line(&b, "XXX5LONGMSG", line);
	save_text("msg-long-hex", &b);
	b.n = 0;
	memset(msg, 'A', 2048);
	msg[2048] = 0;
	snprintf(line, sizeof(line), "0-0:96.13.0(%s)", msg); /* not hex: kept as sent */
	one_line(&b, "XXX5LONGMSG", line);
	save_text("msg-long-raw", &b);
	b.n = 0;
	one_line(&b, "XXX5MSG", "0-0:96.13.0(48656C6C6F0A576F726C64)\r\n0-0:96.13.0(22)");
	save_text("msg-ctrl-dup", &b);

	/* power failure logs */
	static const char *const logs[] = {
	        "1-0:99.97.0(0)(0-0:96.7.19)",
	        "1-0:99.97.0()",
	        "1-0:99.97.0(1)(0-0:96.7.19)(000101000001W)(2147483647*s)",
	        "1-0:99.97.0(3)(0-0:96.7.19)(240301101010W)(0000000300*s)"
	        "(231029023000S)(0000000200*s)(231029023000W)(0000000100*s)",
	        "1-0:99.97.0(2)(0-0:96.7.19)(240101101010)(0000000240*s)(240102101010X)(12*s)",
	        "1-0:99.97.0(5)(0-0:96.7.19)(240101101010W)(1*s)",
	        "1-0:99.97.0(1)(240101101010W)(0000000240)",
	};
	char name[64];
	for (size_t i = 0; i < sizeof(logs) / sizeof(logs[0]); i++) {
		b.n = 0;
		one_line(&b, "XXX5LOG", logs[i]);
		snprintf(name, sizeof(name), "log-%zu", i);
		save_text(name, &b);
	}
	/* ten entries, the most the spec has, and more than we keep */
	size_t k = (size_t)snprintf(line, sizeof(line), "1-0:99.97.0(20)(0-0:96.7.19)");
	for (int i = 0; i < 20; i++)
		k += (size_t)snprintf(line + k, sizeof(line) - k, "(24%02d%02d101010W)(%010d*s)",
		                      1 + i % 12, 1 + i, 100 * i);
	b.n = 0;
	one_line(&b, "XXX5LOG", line);
	save_text("log-20", &b);

	/* demand histories (Fluvius 0-0:98.1.0) and the Hungarian layout */
	static const char *const demand[] = {
	        "0-0:96.1.4(50217)\r\n0-0:98.1.0(0)(1-0:1.6.0)(1-0:1.6.0)()",
	        "0-0:96.1.4(50217)\r\n0-0:98.1.0(1)(1-0:1.6.0)(1-0:1.6.0)(632525252525W)"
	        "(632525252525W)(00.000*kW)",
	        "0-0:96.1.4(50217)\r\n0-0:98.1.0(1)(1-0:1.6.0)(1-0:1.6.0)(200301000000S)"
	        "(200215183000W)(03.500)",
	        "0-0:98.1.0(240101000000W)(000123.456*kWh)(000234.567*kWh)(000001.000*kWh)",
	        "0-0:96.1.4(50217)\r\n1-0:1.6.0(08.796*kW)(260102010000)\r\n1-0:1.4.0(01.250*kW)",
	        "0-0:96.1.4(50217)\r\n1-0:1.6.0(240110183000W)(04.321*kW)\r\n1-0:1.6.0()",
	};
	for (size_t i = 0; i < sizeof(demand) / sizeof(demand[0]); i++) {
		b.n = 0;
		one_line(&b, "FLU5\\253769484_A", demand[i]);
		snprintf(name, sizeof(name), "demand-%zu", i);
		save_text(name, &b);
	}
	k = (size_t)snprintf(line, sizeof(line),
	                     "0-0:96.1.4(50217)\r\n0-0:98.1.0(13)(1-0:1.6.0)(1-0:1.6.0)");
	for (int i = 0; i < 18; i++)
		k += (size_t)snprintf(line + k, sizeof(line) - k,
		                      "(%02d%02d01000000W)(%02d%02d15183000W)(%02d.%03d*kW)",
		                      23 + i / 12, 1 + i % 12, 23 + i / 12, 1 + i % 12, i, 7 * i);
	b.n = 0;
	one_line(&b, "FLU5\\253769484_A", line);
	save_text("demand-18", &b);

	/* numbers and units at their limits */
	b.n = 0;
	one_line(&b, "XXX5NUM",
	         "1-0:1.8.1(9223372036854775807*kWh)\r\n1-0:1.8.2(-000000.001*kWh)\r\n"
	         "1-0:2.8.1(0.0000000000000000000000000000000000000000000000000001*kWh)\r\n"
	         "1-0:2.8.2(99999999999999999999*kWh)\r\n1-0:1.7.0(.5*kW)\r\n"
	         "1-0:2.7.0(1.*kW)\r\n1-0:32.7.0(230.1*)\r\n1-0:31.7.0(5*weird unit)\r\n"
	         "1-0:21.7.0(+1.0*kW)\r\n0-0:17.0.0(1,5*kW)");
	save_text("numbers", &b);
}

static void save_truncations(const char *base, const struct buf *t)
{
	static const size_t cuts[] = {1, 2, 20, 100, 300};
	char name[96];
	for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
		if (cuts[i] >= t->n)
			continue;
		snprintf(name, sizeof(name), "%s-cut%zu", base, t->n - cuts[i]);
		save("parse", name, t->d, t->n - cuts[i]);
		/* a truncated telegram followed by a whole one: first dropped, second kept */
		struct buf s = {.n = 0};
		put(&s, t->d, t->n - cuts[i]);
		put(&s, t->d, t->n);
		save("decoder", name, s.d, s.n);
	}
}

static void save_flips(const char *base, const struct buf *t)
{
	static const size_t at[] = {0, 5, 40, 200, 500};
	char name[96];
	for (size_t i = 0; i < sizeof(at) / sizeof(at[0]); i++) {
		if (at[i] >= t->n)
			continue;
		struct buf f = *t;
		f.d[at[i]] ^= (uint8_t)(1u << (i % 8));
		snprintf(name, sizeof(name), "%s-flip%zu", base, at[i]);
		save("decoder", name, f.d, f.n);
		if (i % 2)
			save("parse", name, f.d, f.n);
	}
}

/* ---- DLMS envelopes ---- */

static const uint8_t key[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
static const uint8_t title[8] = {'L', 'U', 'X', '1', '2', '3', '4', '5'};

/* Envelope in the 0x82 form p1_dlms_encrypt writes, or rewritten to a shorter length form
 * (form 0: short, 1: 0x81) when it fits; unauth drops the tag and marks security 0x20. */
static void envelope(struct p1_dlms *d, const struct buf *plain, int form, int unauth,
                     struct buf *out)
{
	static uint8_t tmp[70000];
	size_t n;
	if (p1_dlms_encrypt(d, title, 0x2A, plain->d, plain->n, tmp, sizeof(tmp), &n) != P1_OK) {
		fprintf(stderr, "gen_corpus: p1_dlms_encrypt failed\n");
		exit(1);
	}
	size_t l = (size_t)tmp[11] << 8 | tmp[12];
	if (unauth) {
		tmp[13] = 0x20;
		l -= 12;
		n -= 12;
	}
	put(out, tmp, 10);
	if (form == 0 && l < 0x80) {
		uint8_t b = (uint8_t)l;
		put(out, &b, 1);
	} else if (form == 1 && l < 0x100) {
		uint8_t b[2] = {0x81, (uint8_t)l};
		put(out, b, 2);
	} else {
		uint8_t b[3] = {0x82, (uint8_t)(l >> 8), (uint8_t)l};
		put(out, b, 3);
	}
	put(out, tmp + 13, n - 13);
}

static void envelopes(void)
{
	struct p1_dlms *d = p1_dlms_new(key, NULL);
	if (!d)
		die("p1_dlms_new");
	struct buf plain = {.n = 0}, tiny = {.n = 0}, big = {.n = 0}, e = {.n = 0};
	smarty(&plain);
	size_t s = tiny.n;
	putf(&tiny, "/Lux5\r\n\r\n1-3:0.2.8(42)\r\n1-0:1.8.0(1*kWh)\r\n!");
	seal(&tiny, s);
	dsmr5_3ph(&big, "");

	envelope(d, &plain, 2, 0, &e);
	save("decoder", "enc-smarty", e.d, e.n);
	uint8_t opt = 0, sizes[3] = {0, 12, 200};
	save_framer("enc-smarty", opt, sizes, 3, e.d, e.n);
	struct buf bad = e;
	bad.d[bad.n - 1] ^= 1; /* tag */
	save("decoder", "enc-bad-tag", bad.d, bad.n);
	bad = e;
	bad.n -= 20; /* cut, then a clear telegram */
	put(&bad, tiny.d, tiny.n);
	save("decoder", "enc-cut-then-clear", bad.d, bad.n);
	save_framer("enc-cut-then-clear", 0, NULL, 0, bad.d, bad.n);

	e.n = 0;
	envelope(d, &tiny, 0, 0, &e);
	save("decoder", "enc-short-form", e.d, e.n);
	save_framer("enc-short-form", 0, NULL, 0, e.d, e.n);
	e.n = 0;
	envelope(d, &tiny, 1, 0, &e);
	save("decoder", "enc-0x81-form", e.d, e.n);
	e.n = 0;
	envelope(d, &plain, 2, 1, &e);
	save("decoder", "enc-unauth-0x20", e.d, e.n);
	e.n = 0;
	envelope(d, &big, 2, 0, &e); /* a Dutch telegram inside: dialect austria */
	put(&e, big.d, big.n);       /* and the same in clear right after */
	save("decoder", "enc-dsmr5-then-clear", e.d, e.n);
	save_framer("enc-dsmr5-then-clear", 0x05, (const uint8_t[]){0xF3, 7}, 2, e.d, e.n);

	struct buf two = {.n = 0}, empty = {.n = 0};
	put(&two, tiny.d, tiny.n);
	put(&two, tiny.d, tiny.n);
	e.n = 0;
	envelope(d, &two, 2, 0, &e); /* two telegrams in one envelope */
	save("decoder", "enc-two-inside", e.d, e.n);
	e.n = 0;
	putf(&empty, "no telegram in here\r\n");
	envelope(d, &empty, 2, 0, &e);
	save("decoder", "enc-no-telegram", e.d, e.n);
	/* envelope starts that are not envelopes, around a clear telegram */
	e.n = 0;
	put(&e, "\xDB\x09\xDB\x08LUX12345\x80\xDB", 14);
	put(&e, tiny.d, tiny.n);
	put(&e, "\xDB\x08LUX12345\x82\xFF\xFF\x30\x00\x00\x00\x01", 18);
	save("decoder", "enc-false-starts", e.d, e.n);
	save_framer("enc-false-starts", 0, NULL, 0, e.d, e.n);
	p1_dlms_free(d);
}

/* ---- framer streams ---- */

static void framer_streams(const struct buf *t1, const struct buf *t2)
{
	struct buf s = {.n = 0};
	put(&s,
	    "\x00\xFF\x7F"
	    "1-0:1.7.0(00.1\r\n",
	    19);
	put(&s, t1->d, t1->n);
	put(&s, t1->d, t1->n);
	save_framer("junk-t1-t1", 0, NULL, 0, s.d, s.n);
	save_framer("junk-t1-t1-split", 0, (const uint8_t[]){2, 0, 40}, 3, s.d, s.n);

	/* lower-case, 3-digit and LF-only CRC lines; a 7E1 stream read as 8N1 */
	s.n = 0;
	size_t st = s.n;
	putf(&s, "/XXX5TEST\r\n\r\n1-0:1.8.1(001001.000*kWh)\r\n!");
	uint16_t crc = p1_crc16(0, s.d + st, s.n - st);
	putf(&s, "%03x\r\n", crc);
	struct buf lf = {.n = 0};
	lf_only(&lf, t1);
	put(&s, lf.d, lf.n);
	for (size_t i = 0; i < t1->n; i++) { /* even parity in bit 7 */
		uint8_t c = t1->d[i];
		if (__builtin_parity(c))
			c |= 0x80;
		put(&s, &c, 1);
	}
	save_framer("crc-forms", 0, (const uint8_t[]){0}, 1, s.d, s.n);
	save_framer("crc-forms-nocrlfretry", 8, NULL, 0, s.d, s.n);

	/* a new '/' at a line start inside a frame; noise '/' in the header; an over-long frame */
	s.n = 0;
	put(&s, t2->d, 300);
	put(&s, "\r\n", 2);
	put(&s, "/noise/", 7);
	put(&s, t2->d, t2->n);
	save_framer("cut-resync", 0x02, (const uint8_t[]){31, 0xF1}, 2, s.d, s.n);
	save_framer("too-long-96", 0x02, NULL, 0, t2->d, t2->n);
	save_framer("too-long-1024", 0x05, (const uint8_t[]){100}, 1, s.d, s.n);
	/* flush while waiting for the CRC line's end, and with no CRC at all */
	save_framer("flush-in-crc", 0, NULL, 0, t1->d, t1->n - 3);
	save_framer("dsmr22-noenv", 0x10, NULL, 0, (const uint8_t *)"\xDB/ISk5\r\n\r\n!\r\n", 13);
}

/* ---- fixtures ---- */

static int read_file(const char *path, struct buf *b)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return -1;
	b->n = fread(b->d, 1, sizeof(b->d), f);
	fclose(f);
	return 0;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void fixtures(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		die(dir);
	char *names[256];
	size_t n = 0;
	struct dirent *e;
	while ((e = readdir(d)) && n < 256)
		if (e->d_name[0] != '.')
			names[n++] = strdup(e->d_name);
	closedir(d);
	qsort(names, n, sizeof(*names), by_name);
	for (size_t i = 0; i < n; i++) {
		static struct buf b;
		char path[4096], base[128];
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		snprintf(base, sizeof(base), "%s", names[i]);
		char *dot = strrchr(base, '.');
		if (dot)
			*dot = 0;
		if (read_file(path, &b) < 0 || !b.n || b.n > MAX_SEED / 2 ||
		    (b.d[0] != '/' && b.d[0] != 0xDB))
			goto next; /* not a telegram (expected JSON, notes, ...) */
		save_text(base, &b);
		if (base[0] != 't' || base[1] < '0' || base[1] > '9')
			goto next; /* variants of the base telegrams only */
		save_framer(base, 0, NULL, 0, b.d, b.n);
		save_truncations(base, &b);
		save_flips(base, &b);
		if (b.d[0] == '/') {
			struct buf lf = {.n = 0};
			lf_only(&lf, &b);
			char name[160];
			snprintf(name, sizeof(name), "%s-lf", base);
			save("parse", name, lf.d, lf.n);
			save("decoder", name, lf.d, lf.n);
		}
	next:
		free(names[i]);
	}
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: %s FIXTURE_DIR CORPUS_DIR\n", argv[0]);
		return 2;
	}
	out_dir = argv[2];
	if (mkdir(out_dir, 0755) < 0 && errno != EEXIST)
		die(out_dir);
	fixtures(argv[1]);

	static struct buf t1, t2, b;
	size_t s = 0;
	putf(&t1, "/XXX5TEST\r\n\r\n1-3:0.2.8(50)\r\n0-0:1.0.0(240101120000W)\r\n"
	          "1-0:1.8.1(000123.456*kWh)\r\n1-0:1.7.0(01.234*kW)\r\n!");
	seal(&t1, s);
	dsmr5_3ph(&t2, "1-0:99.97.0(2)(0-0:96.7.19)(231030031500W)(0000000240*s)"
	               "(240215101010W)(0000004321*s)\r\n");
	save_text("dsmr5-3ph", &t2);
	smarty(&b);
	save_text("smarty-plain", &b);
	b.n = 0;
	mbus_all(&b);
	save_text("mbus-all", &b);
	b.n = 0;
	t4_style(&b);
	save_text("dsmr22-kamstrup", &b);
	text_variants();
	envelopes();
	framer_streams(&t1, &t2);
	printf("gen_corpus: wrote %u seeds under %s\n", written, out_dir);
	return 0;
}
