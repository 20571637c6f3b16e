/* test_framer.c - unit tests for the P1 framer (p1/framer.h): every framing case of
 * dsmr-protocol.md §10.2 and §7.1-7.2 (T1 alone, junk, back to back, lower-case and unpadded
 * CRCs, the 127A corruption, truncation, '!' inside a line, restarts, noise in the header,
 * control characters counted from the header on, oversize frames, 7E1 bytes, LF-only lines,
 * frames without CRC), the stream-split property P2 of test-matrix.md (identical frames and
 * errors for every chunking of a composite stream and for 1000 random splits), bounded memory
 * over 1 MiB of garbage (P6), and bit-error injection P5 (no corrupt telegram accepted, every
 * intact one accepted). Telegrams are built here, their CRCs computed with p1_crc16 (itself
 * checked in test_crc16). */
#include <malloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "p1/crc16.h"
#include "p1/framer.h"

/* ---- telegrams ---- */

#define T1_BODY \
	"/XXX5TEST\r\n" \
	"\r\n" \
	"1-3:0.2.8(50)\r\n" \
	"0-0:1.0.0(240101120000W)\r\n" \
	"1-0:1.8.1(000123.456*kWh)\r\n" \
	"1-0:1.7.0(01.234*kW)\r\n" \
	"!"
static const char t1[] = T1_BODY "DEBB\r\n";
#define T1_LEN (sizeof(t1) - 1)
#define T1_COVERED 104

#define U1_BODY "/XXX5TEST\r\n\r\n1-0:1.8.1(001001.000*kWh)\r\n!"

/* §10.2 T4, DSMR 2.2 without CRC */
static const char t4[] = "/ISk5\\2MT382-1000\r\n"
                         "\r\n"
                         "0-0:96.1.1(4B384547303034303436333935353037)\r\n"
                         "1-0:1.8.1(00123.456*kWh)\r\n"
                         "1-0:1.8.2(00234.567*kWh)\r\n"
                         "1-0:2.8.1(00000.000*kWh)\r\n"
                         "1-0:2.8.2(00000.000*kWh)\r\n"
                         "0-0:96.14.0(0001)\r\n"
                         "1-0:1.7.0(0000.45*kW)\r\n"
                         "1-0:2.7.0(0000.00*kW)\r\n"
                         "0-0:17.0.0(999*A)\r\n"
                         "0-0:96.3.10(1)\r\n"
                         "0-0:96.13.1()\r\n"
                         "0-0:96.13.0()\r\n"
                         "0-1:24.1.0(3)\r\n"
                         "0-1:96.1.0(3232323241424344313233343536373839)\r\n"
                         "0-1:24.3.0(240101120000)(00)(60)(1)(0-1:24.2.1)(m3)\r\n"
                         "(01234.567)\r\n"
                         "0-1:24.4.0(1)\r\n"
                         "!\r\n";

/* A growable byte buffer for building streams. */
struct buf {
	uint8_t *p;
	size_t n, cap;
};

static void put(struct buf *b, const void *data, size_t n)
{
	if (b->n + n > b->cap) {
		b->cap = (b->n + n) * 2 + 256;
		b->p = realloc(b->p, b->cap);
		assert_non_null(b->p);
	}
	memcpy(b->p + b->n, data, n);
	b->n += n;
}

static void puts_(struct buf *b, const char *s)
{
	put(b, s, strlen(s));
}

/* Append "body" (from '/' through '!') and its CRC as 4 upper-case digits and CR LF. */
static void put_with_crc(struct buf *b, const char *body)
{
	char crc[8];
	snprintf(crc, sizeof(crc), "%04X\r\n", p1_crc16(0, body, strlen(body)));
	puts_(b, body);
	puts_(b, crc);
}

/* ---- recording what the framer reports ---- */

struct rec {
	enum p1_error error;
	enum p1_frame_kind kind;
	uint64_t offset;
	size_t len, crc_covered;
	bool has_crc, lf_restored;
	uint16_t crc_sent, crc_computed;
	uint8_t *data;
};

struct log {
	struct rec *r;
	size_t n, cap;
};

static void on_frame(void *ud, const struct p1_frame *f)
{
	struct log *l = ud;
	if (l->n == l->cap) {
		l->cap = l->cap ? 2 * l->cap : 16;
		l->r = realloc(l->r, l->cap * sizeof(*l->r));
		assert_non_null(l->r);
	}
	struct rec *r = &l->r[l->n++];
	*r = (struct rec){
	        .error = f->error,
	        .kind = f->kind,
	        .offset = f->offset,
	        .len = f->len,
	        .crc_covered = f->crc_covered,
	        .has_crc = f->has_crc,
	        .lf_restored = f->lf_restored,
	        .crc_sent = f->crc_sent,
	        .crc_computed = f->crc_computed,
	        .data = malloc(f->len + 1),
	};
	assert_non_null(r->data);
	memcpy(r->data, f->data, f->len);
	r->data[f->len] = 0;
}

static void log_free(struct log *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->r[i].data);
	free(l->r);
	*l = (struct log){0};
}

static struct p1_framer *framer(size_t max_len, bool crlf_retry)
{
	struct p1_framer_opts o;
	p1_framer_opts_init(&o);
	if (max_len)
		o.max_len = max_len;
	o.crlf_retry = crlf_retry;
	struct p1_framer *f = p1_framer_new(&o);
	assert_non_null(f);
	return f;
}

/* Feed the whole buffer in one call, then flush. */
static void run_whole(const void *p, size_t n, struct log *l)
{
	struct p1_framer *f = framer(0, true);
	p1_framer_feed(f, p, n, on_frame, l);
	p1_framer_flush(f, on_frame, l);
	p1_framer_free(f);
}

static void print_log(const char *title, const struct log *l)
{
	print_message("%s: %zu frames\n", title, l->n);
	for (size_t i = 0; i < l->n; i++)
		print_message(
		        "  #%zu error=%s offset=%llu len=%zu covered=%zu crc=%d %04X/%04X lf=%d\n",
		        i, p1_error_id(l->r[i].error), (unsigned long long)l->r[i].offset,
		        l->r[i].len, l->r[i].crc_covered, l->r[i].has_crc, l->r[i].crc_sent,
		        l->r[i].crc_computed, l->r[i].lf_restored);
}

static bool rec_equal(const struct rec *a, const struct rec *b)
{
	return a->error == b->error && a->kind == b->kind && a->offset == b->offset &&
	       a->len == b->len && a->crc_covered == b->crc_covered && a->has_crc == b->has_crc &&
	       a->lf_restored == b->lf_restored && a->crc_sent == b->crc_sent &&
	       a->crc_computed == b->crc_computed && !memcmp(a->data, b->data, a->len);
}

static void assert_logs_equal(const struct log *want, const struct log *got, const char *what)
{
	bool same = want->n == got->n;
	for (size_t i = 0; same && i < want->n; i++)
		same = rec_equal(&want->r[i], &got->r[i]);
	if (!same) {
		print_log("whole buffer", want);
		print_log(what, got);
		fail_msg("frames differ for %s", what);
	}
}

static void assert_t1(const struct rec *r, uint64_t offset)
{
	assert_int_equal(r->error, P1_OK);
	assert_int_equal(r->kind, P1_FRAME_TEXT);
	assert_int_equal(r->offset, offset);
	assert_int_equal(r->len, T1_LEN);
	assert_int_equal(r->crc_covered, T1_COVERED);
	assert_true(r->has_crc);
	assert_int_equal(r->crc_sent, 0xDEBB);
	assert_int_equal(r->crc_computed, 0xDEBB);
	assert_false(r->lf_restored);
	assert_memory_equal(r->data, t1, T1_LEN);
}

/* ---- §10.2 framing cases ---- */

static void test_t1_alone(void **state)
{
	(void)state;
	struct log l = {0};
	struct p1_framer *f = framer(0, true);
	assert_false(p1_framer_busy(f));
	p1_framer_feed(f, t1, T1_LEN, on_frame, &l);
	assert_int_equal(l.n, 1);
	assert_t1(&l.r[0], 0);
	assert_false(p1_framer_busy(f));
	assert_int_equal(p1_framer_garbage_bytes(f), 0);
	p1_framer_flush(f, on_frame, &l); /* nothing in progress: nothing reported */
	assert_int_equal(l.n, 1);
	p1_framer_free(f);
	log_free(&l);
}

static void test_t1_one_byte_reads(void **state)
{
	(void)state;
	struct log l = {0};
	struct p1_framer *f = framer(0, true);
	for (size_t i = 0; i < T1_LEN; i++) {
		p1_framer_feed(f, t1 + i, 1, on_frame, &l);
		/* nothing is reported before the last CRC digit */
		assert_int_equal(l.n, i >= T1_COVERED + 4 - 1 ? 1u : 0u);
		if (i < T1_COVERED + 3)
			assert_true(p1_framer_busy(f));
	}
	assert_int_equal(l.n, 1);
	assert_t1(&l.r[0], 0);
	p1_framer_free(f);
	log_free(&l);
}

static void test_junk_prefix(void **state)
{
	(void)state;
	static const char junk[] = "\x00\xFF\x7F"
	                           "1-0:1.7.0(00.1\r\n";
	struct buf b = {0};
	put(&b, junk, sizeof(junk) - 1);
	puts_(&b, t1);
	struct log l = {0};
	struct p1_framer *f = framer(0, true);
	p1_framer_feed(f, b.p, b.n, on_frame, &l);
	assert_int_equal(l.n, 1);
	assert_t1(&l.r[0], sizeof(junk) - 1);
	/* 3 junk bytes and the 14 characters of the half line; line ends between frames are not
	 * counted as garbage */
	assert_int_equal(p1_framer_garbage_bytes(f), 17);
	p1_framer_free(f);
	log_free(&l);
	free(b.p);
}

static void test_back_to_back(void **state)
{
	(void)state;
	struct buf b = {0};
	puts_(&b, t1);
	puts_(&b, t1);
	puts_(&b, t1);
	struct log l = {0};
	struct p1_framer *f = framer(0, true);
	p1_framer_feed(f, b.p, b.n, on_frame, &l);
	assert_int_equal(l.n, 3);
	for (size_t i = 0; i < 3; i++)
		assert_t1(&l.r[i], i * T1_LEN);
	assert_int_equal(p1_framer_garbage_bytes(f), 0);
	p1_framer_free(f);
	log_free(&l);
	free(b.p);
}

static void test_lower_case_crc(void **state)
{
	(void)state;
	static const char *const tails[] = {"debb\r\n", "dEbB\r\n", "DeBb\r\n"};
	for (size_t i = 0; i < 3; i++) {
		struct buf b = {0};
		puts_(&b, T1_BODY);
		puts_(&b, tails[i]);
		struct log l = {0};
		run_whole(b.p, b.n, &l);
		assert_int_equal(l.n, 1);
		assert_int_equal(l.r[0].error, P1_OK);
		assert_int_equal(l.r[0].crc_sent, 0xDEBB);
		assert_int_equal(l.r[0].crc_computed, 0xDEBB);
		log_free(&l);
		free(b.p);
	}
}

static void test_corruption_127a(void **state)
{
	(void)state;
	char bad[sizeof(t1)];
	memcpy(bad, t1, sizeof(t1));
	char *d = strstr(bad, "01.234");
	assert_non_null(d);
	d[5] = '5';
	struct buf b = {0};
	puts_(&b, bad);
	puts_(&b, t1);
	struct log l = {0};
	run_whole(b.p, b.n, &l);
	assert_int_equal(l.n, 2);
	assert_int_equal(l.r[0].error, P1_ERR_CRC);
	assert_int_equal(l.r[0].offset, 0);
	assert_true(l.r[0].has_crc);
	assert_int_equal(l.r[0].crc_sent, 0xDEBB);
	assert_int_equal(l.r[0].crc_computed, 0x127A);
	assert_int_equal(l.r[0].crc_covered, T1_COVERED);
	assert_t1(&l.r[1], T1_LEN);
	log_free(&l);
	free(b.p);
}

static void test_truncated_then_t1(void **state)
{
	(void)state;
	struct buf b = {0};
	put(&b, t1, T1_COVERED - 1); /* everything before the '!' */
	puts_(&b, t1);
	struct log l = {0};
	run_whole(b.p, b.n, &l);
	assert_int_equal(l.n, 2);
	assert_int_equal(l.r[0].error, P1_ERR_TRUNCATED);
	assert_int_equal(l.r[0].offset, 0);
	assert_int_equal(l.r[0].len, T1_COVERED - 1);
	assert_memory_equal(l.r[0].data, t1, T1_COVERED - 1);
	assert_t1(&l.r[1], T1_COVERED - 1);
	log_free(&l);
	free(b.p);

	/* cut after the header and one data line */
	const char *cut = strstr(t1, "0-0:1.0.0");
	b = (struct buf){0};
	put(&b, t1, (size_t)(cut - t1));
	puts_(&b, t1);
	run_whole(b.p, b.n, &l);
	assert_int_equal(l.n, 2);
	assert_int_equal(l.r[0].error, P1_ERR_TRUNCATED);
	assert_int_equal(l.r[0].offset, 0);
	assert_t1(&l.r[1], (uint64_t)(cut - t1));
	log_free(&l);
	free(b.p);

	/* cut in the header line (no line end yet): the new '/' restarts the frame */
	b = (struct buf){0};
	put(&b, t1, 5);
	puts_(&b, t1);
	struct p1_framer *f = framer(0, true);
	p1_framer_feed(f, b.p, b.n, on_frame, &l);
	assert_int_equal(l.n, 1);
	assert_t1(&l.r[0], 5);
	assert_int_equal(p1_framer_garbage_bytes(f), 5);
	p1_framer_free(f);
	log_free(&l);
	free(b.p);

	/* input ends inside a frame: flush reports it truncated, keeping the offset */
	f = framer(0, true);
	p1_framer_feed(f, "\r\n", 2, on_frame, &l);
	p1_framer_feed(f, t1, 50, on_frame, &l);
	assert_int_equal(l.n, 0);
	assert_true(p1_framer_busy(f));
	p1_framer_flush(f, on_frame, &l);
	assert_int_equal(l.n, 1);
	assert_int_equal(l.r[0].error, P1_ERR_TRUNCATED);
	assert_int_equal(l.r[0].offset, 2);
	assert_int_equal(l.r[0].len, 50);
	assert_false(p1_framer_busy(f));
	/* the stream offset carries on after a flush */
	p1_framer_feed(f, t1, T1_LEN, on_frame, &l);
	assert_int_equal(l.n, 2);
	assert_t1(&l.r[1], 52);
	p1_framer_free(f);
	log_free(&l);
}

static void test_unpadded_crc(void **state)
{
	(void)state;
	struct log l = {0};
	struct buf b = {0};
	puts_(&b, U1_BODY "8D2\r\n");
	run_whole(b.p, b.n, &l);
	assert_int_equal(l.n, 1);
	assert_int_equal(l.r[0].error, P1_OK);
	assert_int_equal(l.r[0].crc_sent, 0x08D2);
	assert_int_equal(l.r[0].crc_computed, 0x08D2);
	assert_true(l.r[0].has_crc);
	log_free(&l);
	free(b.p);

	/* padded form too */
	b = (struct buf){0};
	puts_(&b, U1_BODY "08D2\r\n");
	run_whole(b.p, b.n, &l);
	assert_int_equal(l.n, 1);
	assert_int_equal(l.r[0].error, P1_OK);
	log_free(&l);
	free(b.p);

	/* no CR LF after it: nothing until flush, which completes it */
	struct p1_framer *f = framer(0, true);
	p1_framer_feed(f, U1_BODY "8D2", strlen(U1_BODY "8D2"), on_frame, &l);
	assert_int_equal(l.n, 0);
	assert_true(p1_framer_busy(f));
	p1_framer_flush(f, on_frame, &l);
	assert_int_equal(l.n, 1);
	assert_int_equal(l.r[0].error, P1_OK);
	assert_int_equal(l.r[0].crc_sent, 0x08D2);
	/* the frame handed out ends in CR LF all the same */
	assert_int_equal(l.r[0].len, strlen(U1_BODY "8D2\r\n"));
	assert_memory_equal(l.r[0].data, U1_BODY "8D2\r\n", l.r[0].len);
	p1_framer_free(f);
	log_free(&l);

	/* the next telegram right after the third digit ends the CRC */
	b = (struct buf){0};
	puts_(&b, U1_BODY "8D2");
	puts_(&b, t1);
	run_whole(b.p, b.n, &l);
	assert_int_equal(l.n, 2);
	assert_int_equal(l.r[0].error, P1_OK);
	assert_t1(&l.r[1], strlen(U1_BODY "8D2"));
	log_free(&l);
	free(b.p);
}

static void test_bang_inside_line(void **state)
{
	(void)state;
	static const char body[] = "/XXX5TEST\r\n\r\n1-3:0.2.8(50)\r\n0-0:96.99.9(a!b)\r\n"
	                           "1-0:1.8.1(000123.456*kWh)\r\n!";
	struct buf b = {0};
	put_with_crc(&b, body);
	struct log l = {0};
	run_whole(b.p, b.n, &l);
	assert_int_equal(l.n, 1);
	assert_int_equal(l.r[0].error, P1_OK);
	assert_int_equal(l.r[0].crc_covered, strlen(body));
	log_free(&l);
	free(b.p);

	/* dsmr-reader #1408: bit errors turn ')' and '1' into '!' inside a line; the frame still
	 * ends at the real end line and is rejected for its CRC, not as truncated */
	char bad[sizeof(t1)];
	memcpy(bad, t1, sizeof(t1));
	char *d = strstr(bad, "1-0:1.8.1(000123.456*kWh)");
	d[4] = '!';
	d[24] = '!';
	run_whole(bad, T1_LEN, &l);
	assert_int_equal(l.n, 1);
	assert_int_equal(l.r[0].error, P1_ERR_CRC);
	assert_int_equal(l.r[0].crc_covered, T1_COVERED);
	assert_int_equal(l.r[0].crc_sent, 0xDEBB);
	log_free(&l);
}

/* §3.5: without CRC digits the end line is '!' and a line end. A '!' followed by anything
 * else is a line whose first character was damaged ('1' -> '!' is one bit): the frame must
 * not pass as a telegram without CRC, and the next telegram must still be found. */
static void test_damaged_end_line(void **state)
{
	(void)state;
	static const char *const lines[] = {"1-3:0.2.8", "0-0:1.0.0", "1-0:1.8.1", "1-0:1.7.0"};
	for (size_t i = 0; i < 4; i++) {
		char bad[sizeof(t1)];
		memcpy(bad, t1, sizeof(t1));
		char *d = strstr(bad, lines[i]);
		assert_non_null(d);
		*d = '!';
		struct buf b = {0};
		puts_(&b, bad);
		puts_(&b, t1);
		struct log l = {0};
		run_whole(b.p, b.n, &l);
		size_t ok = 0;
		for (size_t k = 0; k < l.n; k++) {
			if (l.r[k].error != P1_OK)
				continue;
			ok++;
			if (l.r[k].offset != T1_LEN)
				fail_msg("line %s damaged into '!': a frame at %llu accepted (%zu "
				         "bytes, "
				         "CRC %s)",
				         lines[i], (unsigned long long)l.r[k].offset, l.r[k].len,
				         l.r[k].has_crc ? "present" : "absent");
			assert_t1(&l.r[k], T1_LEN);
		}
		assert_int_equal(ok, 1);
		assert_int_not_equal(l.r[0].error, P1_OK);
		assert_int_equal(l.r[0].offset, 0);
		log_free(&l);
		free(b.p);
	}
	/* a bare '!' and its line end split across two reads is still an end line */
	struct log l = {0};
	struct p1_framer *f = framer(0, true);
	p1_framer_feed(f, t4, sizeof(t4) - 3, on_frame, &l);
	p1_framer_feed(f, "\r", 1, on_frame, &l);
	p1_framer_feed(f, "\n", 1, on_frame, &l);
	assert_int_equal(l.n, 1);
	assert_int_equal(l.r[0].error, P1_OK);
	assert_false(l.r[0].has_crc);
	p1_framer_free(f);
	log_free(&l);
}

/* §7.1 item 6 and §8: do not wait for a line end after the end line; a telegram without CRC
 * whose bare '!' is followed directly by the next telegram's '/' (a bridge that drops line
 * ends) ends there. A '/' cannot come from a damaged line start ('1' -> '!' leaves "!-"). */
static void test_no_crc_without_line_end(void **state)
{
	(void)state;
	struct buf b = {0};
	put(&b, t4, sizeof(t4) - 3); /* without "\r\n" after the '!' */
	size_t second = b.n;
	puts_(&b, t4);
	struct log l = {0};
	run_whole(b.p, b.n, &l);
	if (l.n != 2 || l.r[0].error != P1_OK)
		print_log("two DSMR 2.2 telegrams, the first without a line end after '!'", &l);
	assert_int_equal(l.n, 2);
	assert_int_equal(l.r[0].error, P1_OK);
	assert_false(l.r[0].has_crc);
	assert_int_equal(l.r[0].offset, 0);
	assert_int_equal(l.r[1].error, P1_OK);
	assert_int_equal(l.r[1].offset, second);
	log_free(&l);
	free(b.p);
}

static void test_noise_slash_in_header(void **state)
{
	(void)state;
	static const char *const prefixes[] = {"/", "/X", "/XX5", "/\x01\x02"};
	for (size_t i = 0; i < 4; i++) {
		struct buf b = {0};
		puts_(&b, prefixes[i]);
		puts_(&b, t1);
		struct log l = {0};
		struct p1_framer *f = framer(0, true);
		p1_framer_feed(f, b.p, b.n, on_frame, &l);
		p1_framer_flush(f, on_frame, &l);
		assert_int_equal(l.n, 1);
		assert_t1(&l.r[0], strlen(prefixes[i]));
		assert_int_equal(p1_framer_garbage_bytes(f), strlen(prefixes[i]));
		p1_framer_free(f);
		log_free(&l);
		free(b.p);
	}
}

/* Control characters (not CR, LF, TAB) are counted from the header on: three in a frame are
 * tolerated, the fourth makes it noise, reported at that byte, in any chunking. */
static void test_control_characters(void **state)
{
	(void)state;
	static const char ok[] = "/XXX5\x0bTEST\r\n\r\n"
	                         "1-0:1.8.1(000\x01" "123.456*kWh)\r\n"
	                         "1-0:1.7.0(01\x7f.234*kW)\r\n"
	                         "0-0:96.13.0(\tA)\r\n!";
	static const char noise[] = "/XXX5\x0bTEST\r\n\r\n"
	                            "1-0:1.8.1(000\x01" "123.456*kWh)\r\n"
	                            "1-0:1.7.0(01\x7f.234*kW)\r\n"
	                            "0-0:96.13.0(\tA\x03)\r\n!";
	struct buf b = {0};
	put_with_crc(&b, ok);
	put_with_crc(&b, noise);
	struct log whole = {0}, bytes = {0};
	run_whole(b.p, b.n, &whole);
	assert_int_equal(whole.n, 2);
	assert_int_equal(whole.r[0].error, P1_OK);
	assert_int_equal(whole.r[0].crc_covered, strlen(ok));
	assert_int_equal(whole.r[1].error, P1_ERR_SYNTAX);
	assert_int_equal(whole.r[1].offset, strlen(ok) + 6);
	assert_int_equal(whole.r[1].len, (size_t)(strchr(noise, '\x03') - noise));
	struct p1_framer *f = framer(0, true);
	for (size_t i = 0; i < b.n; i++)
		p1_framer_feed(f, b.p + i, 1, on_frame, &bytes);
	p1_framer_flush(f, on_frame, &bytes);
	p1_framer_free(f);
	assert_logs_equal(&whole, &bytes, "one byte at a time");
	log_free(&whole);
	log_free(&bytes);
	free(b.p);
}

static void test_too_long(void **state)
{
	(void)state;
	/* a frame of exactly max_len bytes ('/' through '!') passes, one more byte does not */
	struct log l = {0};
	struct p1_framer *f = framer(T1_COVERED, true);
	p1_framer_feed(f, t1, T1_LEN, on_frame, &l);
	assert_int_equal(l.n, 1);
	assert_t1(&l.r[0], 0);
	p1_framer_free(f);
	log_free(&l);

	f = framer(T1_COVERED - 1, true);
	p1_framer_feed(f, t1, T1_LEN, on_frame, &l);
	p1_framer_flush(f, on_frame, &l);
	assert_int_equal(l.n, 1);
	assert_int_equal(l.r[0].error, P1_ERR_TOO_LONG);
	assert_int_equal(l.r[0].offset, 0);
	assert_true(l.r[0].len <= T1_COVERED - 1);
	p1_framer_free(f);
	log_free(&l);

	/* a long text message line, then a good telegram */
	struct buf b = {0};
	puts_(&b, "/XXX5TEST\r\n\r\n1-3:0.2.8(50)\r\n0-0:96.13.0(");
	for (int i = 0; i < 300; i++)
		puts_(&b, "41");
	puts_(&b, ")\r\n1-0:1.8.1(000123.456*kWh)\r\n!");
	char crc[8];
	snprintf(crc, sizeof(crc), "%04X\r\n", p1_crc16(0, b.p, b.n));
	puts_(&b, crc);
	size_t long_len = b.n;
	puts_(&b, t1);
	for (size_t chunk = 1; chunk <= b.n; chunk = chunk * 3 + 1) {
		f = framer(256, true);
		for (size_t at = 0; at < b.n; at += chunk)
			p1_framer_feed(f, b.p + at, b.n - at < chunk ? b.n - at : chunk, on_frame,
			               &l);
		p1_framer_flush(f, on_frame, &l);
		assert_int_equal(l.n, 2);
		assert_int_equal(l.r[0].error, P1_ERR_TOO_LONG);
		assert_int_equal(l.r[0].offset, 0);
		assert_true(l.r[0].len <= 256);
		assert_t1(&l.r[1], long_len);
		p1_framer_free(f);
		log_free(&l);
	}
	/* the same telegram fits the default bound */
	run_whole(b.p, b.n, &l);
	assert_int_equal(l.n, 2);
	assert_int_equal(l.r[0].error, P1_OK);
	assert_int_equal(l.r[0].len, long_len);
	log_free(&l);
	free(b.p);

	/* a header line that never ends */
	b = (struct buf){0};
	puts_(&b, "/XXX5");
	for (int i = 0; i < 1000; i++)
		puts_(&b, "A");
	puts_(&b, "\r\n");
	size_t at = b.n;
	puts_(&b, t1);
	f = framer(256, true);
	p1_framer_feed(f, b.p, b.n, on_frame, &l);
	assert_int_equal(l.n, 2);
	assert_int_equal(l.r[0].error, P1_ERR_TOO_LONG);
	assert_int_equal(l.r[0].offset, 0);
	assert_t1(&l.r[1], at);
	p1_framer_free(f);
	log_free(&l);
	free(b.p);
}

/* The identification line is bounded at P1_HEADER_MAX bytes before its LF, however the bytes
 * arrive: a header that fills the bound exactly at the end of one read is reported too long
 * when the next byte comes, as it is when it comes in the same read. One byte less passes. */
static void test_header_bound_across_reads(void **state)
{
	(void)state;
	for (size_t k = P1_HEADER_MAX - 7; k <= P1_HEADER_MAX - 6; k++) {
		/* "/XXX5", k letters, CR: 6 + k bytes before the LF */
		char body[512];
		size_t n = 0;
		n += (size_t)snprintf(body, sizeof(body), "/XXX5");
		memset(body + n, 'A', k);
		n += k;
		snprintf(body + n, sizeof(body) - n, "\r\n\r\n1-0:1.8.1(000123.456*kWh)\r\n!");
		struct buf b = {0};
		put_with_crc(&b, body);
		size_t t1_at = b.n;
		puts_(&b, t1);
		bool fits = 6 + k < P1_HEADER_MAX;

		struct log whole = {0};
		run_whole(b.p, b.n, &whole);
		assert_int_equal(whole.n, 2);
		assert_int_equal(whole.r[0].error, fits ? P1_OK : P1_ERR_TOO_LONG);
		assert_int_equal(whole.r[0].offset, 0);
		if (!fits)
			assert_int_equal(whole.r[0].len, P1_HEADER_MAX);
		assert_t1(&whole.r[1], t1_at);

		/* cut around the bound, the first read ending exactly on it included */
		for (size_t cut = P1_HEADER_MAX - 2; cut <= P1_HEADER_MAX + 2; cut++) {
			struct log got = {0};
			struct p1_framer *f = framer(0, true);
			p1_framer_feed(f, b.p, cut, on_frame, &got);
			if (cut <= P1_HEADER_MAX) { /* nothing is decided before the next byte */
				assert_int_equal(got.n, 0);
				assert_true(p1_framer_busy(f));
			}
			p1_framer_feed(f, b.p + cut, b.n - cut, on_frame, &got);
			p1_framer_flush(f, on_frame, &got);
			p1_framer_free(f);
			char what[64];
			snprintf(what, sizeof(what), "k=%zu, cut at %zu", k, cut);
			assert_logs_equal(&whole, &got, what);
			log_free(&got);
		}
		log_free(&whole);
		free(b.p);
	}
}

/* A frame whose CRC failed is framed again from a later identification ('/', three letters,
 * '5': noise with a '/' may have opened a frame that swallowed the real telegram, which began
 * mid-line), once. A later '/' that is not followed so, or that is too near the end to be
 * followed by anything, is not a telegram: that frame stays one CRC error. */
static void test_rescan_after_crc_error(void **state)
{
	(void)state;
	static const struct {
		const char *header;
		bool found;
	} cases[] = {
	        {"/ABC5", true},  {"/abc5", true},  {"/Ab{5", false},
	        {"/AB@5", false}, {"/ABC4", false}, {"/A1C5", false},
	};
	static const char noise[] = "/\x7e\x10noise\r\n\r\nabc";
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char body[128];
		snprintf(body, sizeof(body), "%sTEST\r\n\r\n1-0:1.8.1(000123.456*kWh)\r\n!",
		         cases[i].header);
		struct buf b = {0};
		puts_(&b, noise);
		size_t inner = b.n;
		put_with_crc(&b, body);
		struct log whole = {0};
		run_whole(b.p, b.n, &whole);
		assert_int_equal(whole.n, cases[i].found ? 2 : 1);
		assert_int_equal(whole.r[0].error, P1_ERR_CRC);
		assert_int_equal(whole.r[0].offset, 0);
		assert_int_equal(whole.r[0].len, b.n);
		if (cases[i].found) {
			assert_int_equal(whole.r[1].error, P1_OK);
			assert_int_equal(whole.r[1].offset, inner);
			assert_int_equal(whole.r[1].len, b.n - inner);
			assert_memory_equal(whole.r[1].data, b.p + inner, b.n - inner);
		}
		/* byte by byte: the same */
		struct log bytes = {0};
		struct p1_framer *f = framer(0, true);
		for (size_t k = 0; k < b.n; k++)
			p1_framer_feed(f, b.p + k, 1, on_frame, &bytes);
		p1_framer_flush(f, on_frame, &bytes);
		p1_framer_free(f);
		assert_logs_equal(&whole, &bytes, cases[i].header);
		log_free(&bytes);
		log_free(&whole);
		free(b.p);
	}

	/* the last '/' right before the end line of an LF-only frame with one CRC digit: 6 bytes
	 * from the end of the frame handed out ("/\n!A\r\n"), too near to start a header */
	static const char tail[] = "/XXX5TEST\n\n0-0:96.13.0(a)/\n!A\r\n";
	struct log l = {0};
	run_whole(tail, sizeof(tail) - 1, &l);
	assert_int_equal(l.n, 1);
	assert_int_equal(l.r[0].error, P1_ERR_CRC);
	assert_true(l.r[0].has_crc);
	assert_int_equal(l.r[0].crc_sent, 0xA);
	assert_int_equal(l.r[0].len, sizeof(tail) - 1);
	assert_int_equal(l.r[0].data[l.r[0].len - 6], '/');
	log_free(&l);
}

static void test_limits(void **state)
{
	(void)state;
	struct p1_framer_opts o;
	p1_framer_opts_init(&o);
	assert_int_equal(o.max_len, P1_FRAME_MAX_DEFAULT);
	assert_true(o.crlf_retry);
	assert_true(o.encrypted);
	o.max_len = 63;
	assert_null(p1_framer_new(&o));
	o.max_len = P1_FRAME_MAX_LIMIT + 1;
	assert_null(p1_framer_new(&o));
	o.max_len = 64;
	struct p1_framer *f = p1_framer_new(&o);
	assert_non_null(f);
	assert_null(p1_framer_free(f));
	f = p1_framer_new(NULL);
	assert_non_null(f);
	p1_framer_free(f);
	assert_null(p1_framer_free(NULL));
}

/* 7E1 read as 8N1: bit 7 carries even parity. The frame handed out is the 7-bit text. */
static uint8_t even_parity(uint8_t c)
{
	unsigned ones = (unsigned)__builtin_popcount(c & 0x7f);
	return (uint8_t)((c & 0x7f) | ((ones & 1) ? 0x80 : 0));
}

static void test_7e1(void **state)
{
	(void)state;
	uint8_t p[sizeof(t1) + sizeof(t4)];
	size_t n = 0;
	int with_bit7 = 0;
	for (size_t i = 0; i < T1_LEN; i++) {
		p[n++] = even_parity((uint8_t)t1[i]);
		with_bit7 += p[n - 1] >> 7;
	}
	for (size_t i = 0; i < sizeof(t4) - 1; i++)
		p[n++] = even_parity((uint8_t)t4[i]);
	assert_true(with_bit7 > 20);  /* the test does what it says */
	assert_int_equal(p[0], 0xAF); /* '/' has five ones */
	struct log l = {0};
	run_whole(p, n, &l);
	assert_int_equal(l.n, 2);
	assert_t1(&l.r[0], 0);
	assert_int_equal(l.r[1].error, P1_OK);
	assert_false(l.r[1].has_crc);
	assert_int_equal(l.r[1].offset, T1_LEN);
	assert_int_equal(l.r[1].len, sizeof(t4) - 1);
	assert_memory_equal(l.r[1].data, t4, sizeof(t4) - 1);
	log_free(&l);
}

/* The framer masks text bytes to 7 bits (p1/framer.h), so a line end whose bit 7 is set (7M1
 * or 7O1 parity, or a parity bit flipped on the way) must end the line like 0x0A does. */
static void test_bit7_on_line_feeds(void **state)
{
	(void)state;
	uint8_t p[sizeof(t1)];
	for (size_t i = 0; i < T1_LEN; i++)
		p[i] = (uint8_t)(t1[i] | 0x80); /* mark parity: bit 7 always set */
	struct log l = {0};
	run_whole(p, T1_LEN, &l);
	if (l.n != 1 || l.r[0].error != P1_OK)
		print_log("T1 with bit 7 set on every byte", &l);
	assert_int_equal(l.n, 1);
	assert_t1(&l.r[0], 0);
	log_free(&l);
}

static void test_lf_only(void **state)
{
	(void)state;
	char lf[sizeof(t1)];
	size_t n = 0;
	for (size_t i = 0; i < T1_COVERED; i++)
		if (t1[i] != '\r')
			lf[n++] = t1[i];
	size_t covered = n;
	memcpy(lf + n, "DEBB\n", 5); /* the CRC of the CR LF original */
	n += 5;

	struct log l = {0};
	run_whole(lf, n, &l);
	assert_int_equal(l.n, 1);
	assert_int_equal(l.r[0].error, P1_OK);
	assert_true(l.r[0].lf_restored);
	assert_int_equal(l.r[0].crc_sent, 0xDEBB);
	assert_int_equal(l.r[0].crc_covered, covered);
	assert_memory_equal(l.r[0].data, lf, covered); /* handed out as received */
	log_free(&l);

	/* the retry switched off: a CRC error over the bytes as received */
	struct p1_framer *f = framer(0, false);
	p1_framer_feed(f, lf, n, on_frame, &l);
	p1_framer_flush(f, on_frame, &l);
	assert_int_equal(l.n, 1);
	assert_int_equal(l.r[0].error, P1_ERR_CRC);
	assert_false(l.r[0].lf_restored);
	assert_int_equal(l.r[0].crc_computed, 0x3B0E);
	p1_framer_free(f);
	log_free(&l);

	/* a CRC computed over the LF-only bytes matches directly, without the retry */
	memcpy(lf + covered, "3B0E\n", 5);
	f = framer(0, false);
	p1_framer_feed(f, lf, n, on_frame, &l);
	assert_int_equal(l.n, 1);
	assert_int_equal(l.r[0].error, P1_OK);
	assert_false(l.r[0].lf_restored);
	p1_framer_free(f);
	log_free(&l);

	/* a CR LF telegram with a wrong CRC is not rescued by the retry */
	char bad[sizeof(t1)];
	memcpy(bad, t1, sizeof(t1));
	memcpy(bad + T1_COVERED, "3B0E", 4);
	run_whole(bad, T1_LEN, &l);
	assert_int_equal(l.n, 1);
	assert_int_equal(l.r[0].error, P1_ERR_CRC);
	log_free(&l);
}

static void test_no_crc(void **state)
{
	(void)state;
	struct log l = {0};
	run_whole(t4, sizeof(t4) - 1, &l);
	assert_int_equal(l.n, 1);
	assert_int_equal(l.r[0].error, P1_OK);
	assert_false(l.r[0].has_crc);
	assert_int_equal(l.r[0].crc_covered, sizeof(t4) - 3);
	assert_memory_equal(l.r[0].data, t4, sizeof(t4) - 1);
	log_free(&l);

	/* T1 says 1-3:0.2.8: a bare '!' is a missing CRC */
	run_whole(T1_BODY "\r\n", strlen(T1_BODY "\r\n"), &l);
	assert_int_equal(l.n, 1);
	assert_int_equal(l.r[0].error, P1_ERR_CRC_MISSING);
	assert_false(l.r[0].has_crc);
	log_free(&l);

	/* so does a Fluvius telegram (0-0:96.1.4) */
	static const char be[] = "/FLU5\\253000000_A\r\n\r\n0-0:96.1.4(50217)\r\n"
	                         "1-0:1.8.1(000500.100*kWh)\r\n!\r\n";
	run_whole(be, strlen(be), &l);
	assert_int_equal(l.n, 1);
	assert_int_equal(l.r[0].error, P1_ERR_CRC_MISSING);
	log_free(&l);

	/* a bare '!' at the end of input is completed by flush */
	struct p1_framer *f = framer(0, true);
	p1_framer_feed(f, t4, sizeof(t4) - 3, on_frame, &l);
	assert_int_equal(l.n, 0);
	p1_framer_flush(f, on_frame, &l);
	assert_int_equal(l.n, 1);
	assert_int_equal(l.r[0].error, P1_OK);
	assert_false(l.r[0].has_crc);
	p1_framer_free(f);
	log_free(&l);
}

/* An encrypted envelope is handed out raw; a lone 0xDB before a telegram costs nothing. */
static void test_envelope(void **state)
{
	(void)state;
	static const char hex[] =
	        "DB084C555831323334358200A2300000002ABF9EE6DEF6BCBE7FCFCBA682319932B4A309CF"
	        "B6848B5149449C3F9B9C224B1189956BAC54AFB9A1D162143101AE34FA314C2C74C2F0F8DC"
	        "86FDDE211A204F8899F12B692FA66CEAA0B7B9F4EC67918FBA78E4A0EE2A39FC981ABF3178"
	        "38898CF14C50D5AB22B5BB4888F8D70F30B604CD001DD194439F83C19137A97128F1EE822B"
	        "FB1BFEA9B2C1504FF00435568F4A977A697788DF19C956C410A366";
	uint8_t env[175];
	for (size_t i = 0; i < sizeof(env); i++) {
		unsigned v;
		assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
		env[i] = (uint8_t)v;
	}
	struct buf b = {0};
	puts_(&b, "\r\n\x01");
	put(&b, env, sizeof(env));
	puts_(&b, t1);
	put(&b, "\xDB\x08", 2); /* looks like the start of an envelope, is not */
	size_t t1_at = b.n;
	puts_(&b, t1);
	for (size_t chunk = 1; chunk <= b.n; chunk += 37) {
		struct log l = {0};
		struct p1_framer *f = framer(0, true);
		for (size_t at = 0; at < b.n; at += chunk)
			p1_framer_feed(f, b.p + at, b.n - at < chunk ? b.n - at : chunk, on_frame,
			               &l);
		p1_framer_flush(f, on_frame, &l);
		assert_int_equal(l.n, 3);
		assert_int_equal(l.r[0].error, P1_OK);
		assert_int_equal(l.r[0].kind, P1_FRAME_ENCRYPTED);
		assert_int_equal(l.r[0].offset, 3);
		assert_int_equal(l.r[0].len, sizeof(env));
		assert_memory_equal(l.r[0].data, env, sizeof(env));
		assert_t1(&l.r[1], 3 + sizeof(env));
		assert_t1(&l.r[2], t1_at);
		p1_framer_free(f);
		log_free(&l);
	}
	/* with envelopes switched off the envelope is garbage (a '/' in the ciphertext may start
	 * a text frame that then comes out truncated) and the telegrams are still found */
	struct p1_framer_opts o;
	p1_framer_opts_init(&o);
	o.encrypted = false;
	struct p1_framer *f = p1_framer_new(&o);
	struct log l = {0};
	p1_framer_feed(f, b.p, b.n, on_frame, &l);
	p1_framer_flush(f, on_frame, &l);
	size_t ok = 0;
	for (size_t i = 0; i < l.n; i++) {
		assert_int_equal(l.r[i].kind, P1_FRAME_TEXT);
		if (l.r[i].error == P1_OK) {
			assert_memory_equal(l.r[i].data, t1, T1_LEN);
			ok++;
		}
	}
	assert_int_equal(ok, 2);
	assert_int_equal(l.r[l.n - 1].offset, t1_at);
	p1_framer_free(f);
	log_free(&l);
	free(b.p);
}

static void test_reset(void **state)
{
	(void)state;
	struct log l = {0};
	struct p1_framer *f = framer(0, true);
	p1_framer_feed(f, t1, 60, on_frame, &l);
	assert_true(p1_framer_busy(f));
	p1_framer_reset(f);
	assert_false(p1_framer_busy(f));
	p1_framer_flush(f, on_frame, &l);
	assert_int_equal(l.n, 0); /* forgotten, not reported */
	p1_framer_feed(f, t1, T1_LEN, on_frame, &l);
	assert_int_equal(l.n, 1);
	assert_t1(&l.r[0], 60);
	p1_framer_free(f);
	log_free(&l);
}

/* ---- P2: every chunking gives the same frames ---- */

struct expect {
	enum p1_error error;
	uint64_t offset;
};

/* A stream with every case above, and what the framer must report for it. */
static size_t composite(struct buf *b, struct expect *e)
{
	size_t n = 0;
#define EXPECT(err, off) (e[n++] = (struct expect){(err), (off)})
	put(b,
	    "\x00\xFF\x7F"
	    "1-0:1.7.0(00.1\r\n",
	    19);
	EXPECT(P1_OK, b->n);
	puts_(b, t1);
	EXPECT(P1_OK, b->n);
	puts_(b, t1);
	EXPECT(P1_ERR_TRUNCATED, b->n);
	put(b, t1, T1_COVERED - 1);
	EXPECT(P1_OK, b->n);
	puts_(b, t1);
	char bad[sizeof(t1)];
	memcpy(bad, t1, sizeof(t1));
	strstr(bad, "01.234")[5] = '5';
	EXPECT(P1_ERR_CRC, b->n);
	puts_(b, bad);
	EXPECT(P1_OK, b->n);
	puts_(b, U1_BODY "8D2\r\n");
	EXPECT(P1_OK, b->n);
	puts_(b, T1_BODY "debb\r\n");
	puts_(b, "/XX");
	EXPECT(P1_OK, b->n);
	puts_(b, t1);
	EXPECT(P1_OK, b->n);
	put_with_crc(b, "/XXX5TEST\r\n\r\n1-3:0.2.8(50)\r\n0-0:96.99.9(a!b)\r\n!");
	EXPECT(P1_OK, b->n);
	puts_(b, t4);
	EXPECT(P1_OK, b->n); /* LF only, CRC over CR LF */
	for (size_t i = 0; i < T1_COVERED; i++)
		if (t1[i] != '\r')
			put(b, &t1[i], 1);
	puts_(b, "DEBB\n");
	EXPECT(P1_ERR_CRC_MISSING, b->n);
	puts_(b, T1_BODY "\r\n");
	EXPECT(P1_OK, b->n); /* 7E1 */
	for (size_t i = 0; i < T1_LEN; i++) {
		uint8_t c = even_parity((uint8_t)t1[i]);
		put(b, &c, 1);
	}
	char dam[sizeof(t1)];
	memcpy(dam, t1, sizeof(t1));
	*strstr(dam, "1-0:1.8.1") = '!';
	EXPECT(P1_ERR_SYNTAX, b->n); /* '!' not followed by a line end or CRC digits */
	puts_(b, dam);
	puts_(b, "\xFF\xFF garbage \r\n");
	EXPECT(P1_OK, b->n); /* ends without CR LF: completed by the final flush */
	puts_(b, U1_BODY "8D2");
#undef EXPECT
	return n;
}

static void feed_chunks(const struct buf *b, const size_t *cuts, size_t ncuts, struct log *l)
{
	struct p1_framer *f = framer(0, true);
	size_t at = 0;
	for (size_t i = 0; i <= ncuts; i++) {
		size_t to = i < ncuts ? cuts[i] : b->n;
		p1_framer_feed(f, b->p + at, to - at, on_frame, l);
		at = to;
	}
	p1_framer_flush(f, on_frame, l);
	p1_framer_free(f);
}

static void test_every_chunking(void **state)
{
	(void)state;
	struct buf b = {0};
	struct expect e[32];
	size_t ne = composite(&b, e);

	struct log want = {0};
	run_whole(b.p, b.n, &want);
	if (want.n != ne)
		print_log("whole buffer", &want);
	assert_int_equal(want.n, ne);
	for (size_t i = 0; i < ne; i++) {
		if (want.r[i].error != e[i].error || want.r[i].offset != e[i].offset) {
			print_log("whole buffer", &want);
			fail_msg("frame %zu: %s at %llu, expected %s at %llu", i,
			         p1_error_id(want.r[i].error), (unsigned long long)want.r[i].offset,
			         p1_error_id(e[i].error), (unsigned long long)e[i].offset);
		}
	}

	size_t *cuts = malloc((b.n + 1) * sizeof(*cuts));
	assert_non_null(cuts);
	/* fixed chunk sizes 1 .. len */
	for (size_t k = 1; k <= b.n; k++) {
		size_t nc = 0;
		for (size_t at = k; at < b.n; at += k)
			cuts[nc++] = at;
		struct log got = {0};
		feed_chunks(&b, cuts, nc, &got);
		char what[64];
		snprintf(what, sizeof(what), "chunks of %zu bytes", k);
		assert_logs_equal(&want, &got, what);
		log_free(&got);
	}
	/* 1000 random splits (fixed seed), empty feeds included */
	uint64_t x = 0x9E3779B97F4A7C15u;
	for (int round = 0; round < 1000; round++) {
		size_t nc = 0, at = 0;
		for (;;) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			size_t step = (size_t)(x % (round % 3 == 0   ? 8
			                            : round % 3 == 1 ? 64
			                                             : 700));
			if (at + step >= b.n)
				break;
			at += step;
			cuts[nc++] = at;
		}
		struct log got = {0};
		feed_chunks(&b, cuts, nc, &got);
		char what[64];
		snprintf(what, sizeof(what), "random split #%d (%zu pieces)", round, nc + 1);
		assert_logs_equal(&want, &got, what);
		log_free(&got);
	}
	free(cuts);
	log_free(&want);
	free(b.p);
}

/* ---- P6: 1 MiB of garbage without '!', then telegrams ---- */

struct count {
	size_t ok, other, too_long, bad_ok;
	const uint8_t *data;
	bool data_moved;
};

static void on_count(void *ud, const struct p1_frame *f)
{
	struct count *c = ud;
	if (!c->data)
		c->data = f->data;
	else if (c->data != f->data)
		c->data_moved = true;
	if (f->error == P1_OK) {
		c->ok++;
		if (f->len != T1_LEN || memcmp(f->data, t1, T1_LEN))
			c->bad_ok++;
	} else {
		c->other++;
		c->too_long += f->error == P1_ERR_TOO_LONG;
	}
}

static void megabyte_then_telegrams(const uint8_t *junk, size_t n, struct count *c)
{
	enum { TELEGRAMS = 20 };
	struct p1_framer *f = framer(0, true);
	*c = (struct count){0};
	struct mallinfo2 before = mallinfo2();
	for (size_t at = 0; at < n; at += 4096)
		p1_framer_feed(f, junk + at, n - at < 4096 ? n - at : 4096, on_count, c);
	for (int i = 0; i < TELEGRAMS; i++)
		p1_framer_feed(f, t1, T1_LEN, on_count, c);
	p1_framer_flush(f, on_count, c);
	struct mallinfo2 after = mallinfo2();
	/* the framer allocates nothing after p1_framer_new */
	assert_int_equal(after.uordblks, before.uordblks);
	assert_int_equal(after.hblkhd, before.hblkhd);
	assert_false(c->data_moved);
	assert_int_equal(c->bad_ok, 0);
	assert_true(c->ok >= TELEGRAMS - 1); /* at most one valid telegram lost */
	assert_true(c->ok <= TELEGRAMS);
	p1_framer_free(f);
}

static void test_megabyte_garbage(void **state)
{
	(void)state;
	enum { MIB = 1 << 20 };
	uint8_t *junk = malloc(MIB);
	assert_non_null(junk);
	struct count c;

	/* random bytes, none of them '!' in either parity */
	uint64_t x = 42;
	for (size_t i = 0; i < MIB; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		uint8_t b = (uint8_t)(x >> 24);
		junk[i] = (b & 0x7f) == '!' ? 'x' : b;
	}
	megabyte_then_telegrams(junk, MIB, &c);
	print_message("random MiB: %zu telegrams found, %zu rejected frames\n", c.ok, c.other);

	/* a header that never ends: one frame too long, no telegram lost */
	junk[0] = '/';
	memset(junk + 1, 'A', MIB - 1);
	megabyte_then_telegrams(junk, MIB, &c);
	assert_int_equal(c.too_long, 1);
	assert_int_equal(c.other, 1);
	assert_int_equal(c.ok, 20);

	/* a body that never ends */
	static const char line[] = "1-0:1.8.1(000123.456*kWh)\r\n";
	memcpy(junk, "/XXX5TEST\r\n\r\n", 13);
	for (size_t i = 13; i < MIB; i++)
		junk[i] = (uint8_t)line[(i - 13) % (sizeof(line) - 1)];
	size_t end = MIB - (MIB - 13) % (sizeof(line) - 1); /* whole lines only */
	megabyte_then_telegrams(junk, end, &c);
	assert_int_equal(c.too_long, 1);
	assert_int_equal(c.other, 1);
	assert_true(c.ok >= 19);
	free(junk);
}

/* ---- P5: bit errors ---- */

static void test_bit_errors(void **state)
{
	(void)state;
	enum { N = 1000 };
	struct buf b = {0};
	size_t *start = malloc((N + 1) * sizeof(*start));
	assert_non_null(start);
	for (int i = 0; i < N; i++) {
		char body[1024];
		snprintf(body, sizeof(body),
		         "/XXX5TEST-DSMR5\r\n\r\n1-3:0.2.8(50)\r\n"
		         "0-0:1.0.0(2401%02d%02d%02d%02dW)\r\n"
		         "0-0:96.1.1(4530303030303030303030303030303030)\r\n"
		         "1-0:1.8.1(%06d.%03d*kWh)\r\n1-0:1.8.2(%06d.%03d*kWh)\r\n"
		         "1-0:2.8.1(000111.222*kWh)\r\n1-0:2.8.2(000333.444*kWh)\r\n"
		         "0-0:96.14.0(%04d)\r\n1-0:1.7.0(%02d.%03d*kW)\r\n1-0:2.7.0(00.000*kW)\r\n"
		         "0-0:96.7.21(00007)\r\n1-0:32.7.0(23%d.%d*V)\r\n1-0:31.7.0(%03d*A)\r\n"
		         "0-1:24.1.0(003)\r\n0-1:24.2.1(240101120000W)(%05d.%03d*m3)\r\n!",
		         1 + i / 1440 % 28, i / 60 % 24, i % 60, i % 59, 1234 + i, i % 1000,
		         2345 + i / 3, (i * 7) % 1000, 1 + i % 2, i % 10, (i * 13) % 1000, i % 10,
		         (i * 3) % 10, i % 40, 1234 + i / 300, (i * 11) % 1000);
		start[i] = b.n;
		put_with_crc(&b, body);
	}
	start[N] = b.n;

	static const double rates[] = {1e-5, 1e-4, 1e-3};
	uint8_t *s = malloc(b.n);
	bool *damaged = malloc(N), *accepted = malloc(N);
	assert_true(s && damaged && accepted);
	uint64_t x = 0xDEADBEEFCAFEF00Du;
	for (size_t ri = 0; ri < 3; ri++) {
		memcpy(s, b.p, b.n);
		memset(damaged, 0, N);
		memset(accepted, 0, N);
		size_t flips = 0, ti = 0;
		uint64_t threshold = (uint64_t)(rates[ri] * 18446744073709551615.0);
		for (size_t i = 0; i < b.n; i++) {
			while (i >= start[ti + 1])
				ti++;
			for (int bit = 0; bit < 8; bit++) {
				x ^= x << 13;
				x ^= x >> 7;
				x ^= x << 17;
				if (x < threshold) {
					s[i] ^= (uint8_t)(1u << bit);
					damaged[ti] = true;
					flips++;
				}
			}
		}
		struct log l = {0};
		struct p1_framer *f = framer(0, true);
		for (size_t at = 0; at < b.n;) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			size_t k = 1 + (size_t)(x % 3000);
			if (k > b.n - at)
				k = b.n - at;
			p1_framer_feed(f, s + at, k, on_frame, &l);
			at += k;
		}
		p1_framer_flush(f, on_frame, &l);
		p1_framer_free(f);

		size_t ok = 0, crc_err = 0, intact = 0;
		for (size_t i = 0; i < l.n; i++) {
			crc_err += l.r[i].error == P1_ERR_CRC;
			if (l.r[i].error != P1_OK)
				continue;
			ok++;
			/* an accepted frame is exactly one of the telegrams sent, where it was sent
			 */
			size_t lo = 0, hi = N;
			while (lo < hi) {
				size_t mid = (lo + hi) / 2;
				if (start[mid] < l.r[i].offset)
					lo = mid + 1;
				else
					hi = mid;
			}
			if (lo == N || start[lo] != l.r[i].offset ||
			    l.r[i].len != start[lo + 1] - start[lo] ||
			    memcmp(l.r[i].data, b.p + start[lo], l.r[i].len)) {
				print_message("accepted frame (%zu bytes, CRC %s):\n%.*s\n",
				              l.r[i].len, l.r[i].has_crc ? "present" : "absent",
				              (int)l.r[i].len, (const char *)l.r[i].data);
				fail_msg("BER %g: corrupt frame accepted at offset %llu", rates[ri],
				         (unsigned long long)l.r[i].offset);
			}
			accepted[lo] = true;
		}
		for (size_t i = 0; i < N; i++) {
			intact += !damaged[i];
			if (!damaged[i] && !accepted[i])
				fail_msg(
				        "BER %g: intact telegram %zu (offset %zu) was not accepted",
				        rates[ri], i, start[i]);
		}
		print_message("BER %g: %zu bits flipped, %zu/%d telegrams intact, %zu accepted, "
		              "%zu CRC errors, %zu frames reported\n",
		              rates[ri], flips, intact, N, ok, crc_err, l.n);
		assert_true(flips > 0);
		assert_true(ok >= intact);
		if (ri == 2)
			assert_true(intact < N / 2); /* at 1e-3 most telegrams are hit */
		log_free(&l);
	}
	free(s);
	free(damaged);
	free(accepted);
	free(start);
	free(b.p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_t1_alone),
	        cmocka_unit_test(test_t1_one_byte_reads),
	        cmocka_unit_test(test_junk_prefix),
	        cmocka_unit_test(test_back_to_back),
	        cmocka_unit_test(test_lower_case_crc),
	        cmocka_unit_test(test_corruption_127a),
	        cmocka_unit_test(test_truncated_then_t1),
	        cmocka_unit_test(test_unpadded_crc),
	        cmocka_unit_test(test_bang_inside_line),
	        cmocka_unit_test(test_damaged_end_line),
	        cmocka_unit_test(test_no_crc_without_line_end),
	        cmocka_unit_test(test_noise_slash_in_header),
	        cmocka_unit_test(test_control_characters),
	        cmocka_unit_test(test_too_long),
	        cmocka_unit_test(test_header_bound_across_reads),
	        cmocka_unit_test(test_rescan_after_crc_error),
	        cmocka_unit_test(test_limits),
	        cmocka_unit_test(test_7e1),
	        cmocka_unit_test(test_bit7_on_line_feeds),
	        cmocka_unit_test(test_lf_only),
	        cmocka_unit_test(test_no_crc),
	        cmocka_unit_test(test_envelope),
	        cmocka_unit_test(test_reset),
	        cmocka_unit_test(test_every_chunking),
	        cmocka_unit_test(test_megabyte_garbage),
	        cmocka_unit_test(test_bit_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
