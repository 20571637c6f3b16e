/* fuzz_framer.c - libFuzzer target for p1_framer (test matrix P1 and P2).
 *
 * Input layout:
 *   byte 0      options: bits 0-2 pick max_len (16384, 64, 96, 128, 256, 1024, 4096, 8192),
 *               bit 3 turns crlf_retry off, bit 4 turns envelope recognition off
 *   byte 1      low 4 bits: n, the number of chunk-size bytes that follow
 *   n bytes     chunk sizes, used in turn: b + 1 for b < 0xF0, else (b - 0xEF) * 256;
 *               n = 0 means one byte per call
 *   the rest    the byte stream
 *
 * The stream is framed twice, once in one p1_framer_feed call and once in the chosen chunks,
 * each followed by p1_framer_flush. Every frame of both runs is checked on its own (shape,
 * CRC, that it is a faithful copy of the input at its offset, offsets in order and inside the
 * input), then the two runs must report exactly the same frames, errors and garbage count.
 * Any violation aborts, so libFuzzer reports it with the input that caused it.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "p1/crc16.h"
#include "p1/dlms.h"
#include "p1/framer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SLACK 64 /* bytes a frame may exceed max_len by: CRC digits, CR LF, envelope header */

struct rec {
	enum p1_error error;
	enum p1_frame_kind kind;
	uint64_t offset;
	size_t len, crc_covered;
	bool has_crc, lf_restored;
	uint16_t crc_sent, crc_computed;
	uint64_t hash;
};

struct run {
	const uint8_t *in; /* the stream */
	size_t in_len;
	size_t max_len;
	struct rec *recs;
	size_t n, cap;
};

#define CHECK(cond) \
	do { \
		if (!(cond)) { \
			fprintf(stderr, "fuzz_framer: %s:%d: invariant failed: %s\n", __FILE__, \
			        __LINE__, #cond); \
			abort(); \
		} \
	} while (0)

static uint64_t fnv1a(const uint8_t *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325u;
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 0x100000001b3u;
	return h;
}

static int hexval(uint8_t c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* CRC with CR inserted before every LF that lacks one, written independently of framer.c. */
static uint16_t crc_cr_restored(const uint8_t *p, size_t n)
{
	uint16_t crc = 0;
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\n' && (i == 0 || p[i - 1] != '\r'))
			crc = p1_crc16(crc, "\r", 1);
		crc = p1_crc16(crc, p + i, 1);
	}
	return crc;
}

static void check_text_ok(const struct run *r, const struct p1_frame *fr)
{
	const uint8_t *d = fr->data;
	CHECK(fr->len >= 4 && d[0] == '/');
	CHECK(fr->crc_covered >= 2 && fr->crc_covered + 2 <= fr->len);
	CHECK(d[fr->crc_covered - 1] == '!');
	CHECK(d[fr->len - 2] == '\r' && d[fr->len - 1] == '\n');
	for (size_t i = 0; i < fr->len; i++)
		CHECK(d[i] < 0x80);
	/* the CRC digits: 1-4 hex digits when has_crc, none otherwise */
	size_t digits = fr->len - 2 - fr->crc_covered;
	CHECK(fr->has_crc ? digits >= 1 && digits <= 4 : digits == 0);
	unsigned sent = 0;
	for (size_t i = 0; i < digits; i++) {
		int v = hexval(d[fr->crc_covered + i]);
		CHECK(v >= 0);
		sent = sent << 4 | (unsigned)v;
	}
	/* everything before the normalised CR LF is the masked input at the frame's offset */
	for (size_t i = 0; i < fr->len - 2; i++)
		CHECK(d[i] == (r->in[fr->offset + i] & 0x7f));
	uint16_t plain = p1_crc16(0, d, fr->crc_covered);
	if (fr->has_crc) {
		CHECK(fr->crc_sent == sent);
		if (fr->error == P1_OK) {
			CHECK(fr->crc_computed == fr->crc_sent);
			if (fr->lf_restored)
				CHECK(plain != fr->crc_sent &&
				      crc_cr_restored(d, fr->crc_covered) == fr->crc_sent);
			else
				CHECK(plain == fr->crc_sent);
		} else {
			CHECK(fr->error == P1_ERR_CRC);
			CHECK(fr->crc_computed != fr->crc_sent && plain != fr->crc_sent);
		}
	} else {
		bool claims = memmem(d, fr->crc_covered, "1-3:0.2.8", 9) ||
		              memmem(d, fr->crc_covered, "0-0:96.1.4", 10);
		CHECK(fr->error == (claims ? P1_ERR_CRC_MISSING : P1_OK));
		CHECK(!fr->lf_restored);
	}
}

static void check_frame(struct run *r, const struct p1_frame *fr)
{
	CHECK(fr->offset < r->in_len);
	CHECK(!r->n || fr->offset >= r->recs[r->n - 1].offset);
	CHECK(fr->len <= r->max_len + SLACK);
	CHECK(fr->len == 0 || fr->data);
	CHECK(fr->len <= r->in_len - fr->offset + 2);
	bool complete =
	        fr->error == P1_OK || fr->error == P1_ERR_CRC || fr->error == P1_ERR_CRC_MISSING;
	/* syntax: a line starting with '!' but followed by neither CRC digits nor a line end */
	CHECK(complete || fr->error == P1_ERR_TOO_LONG || fr->error == P1_ERR_TRUNCATED ||
	      fr->error == P1_ERR_SYNTAX);
	if (fr->kind == P1_FRAME_TEXT) {
		if (complete)
			check_text_ok(r, fr);
		else {
			CHECK(fr->len >= 1 && fr->data[0] == '/');
			CHECK(fr->len <= r->in_len - fr->offset);
			for (size_t i = 0; i < fr->len; i++)
				CHECK(fr->data[i] == (r->in[fr->offset + i] & 0x7f));
		}
	} else {
		CHECK(fr->kind == P1_FRAME_ENCRYPTED);
		CHECK(fr->error == P1_OK || fr->error == P1_ERR_TOO_LONG ||
		      fr->error == P1_ERR_TRUNCATED);
		CHECK(fr->len >= 1 && fr->data[0] == 0xDB);
		CHECK(fr->len <= r->in_len - fr->offset);
		CHECK(!memcmp(fr->data, r->in + fr->offset, fr->len));
		if (fr->error == P1_OK) {
			struct p1_dlms_info info;
			CHECK(p1_dlms_header(fr->data, fr->len, &info) == 1);
			CHECK(info.total_len == fr->len);
		}
	}
}

static void on_frame(void *ud, const struct p1_frame *fr)
{
	struct run *r = ud;
	check_frame(r, fr);
	CHECK(r->n < r->cap);
	r->recs[r->n++] = (struct rec){
	        .error = fr->error,
	        .kind = fr->kind,
	        .offset = fr->offset,
	        .len = fr->len,
	        .crc_covered = fr->crc_covered,
	        .has_crc = fr->has_crc,
	        .lf_restored = fr->lf_restored,
	        .crc_sent = fr->crc_sent,
	        .crc_computed = fr->crc_computed,
	        .hash = fnv1a(fr->data, fr->len),
	};
}

static bool rec_equal(const struct rec *a, const struct rec *b)
{
	return a->error == b->error && a->kind == b->kind && a->offset == b->offset &&
	       a->len == b->len && a->crc_covered == b->crc_covered && a->has_crc == b->has_crc &&
	       a->lf_restored == b->lf_restored && a->crc_sent == b->crc_sent &&
	       a->crc_computed == b->crc_computed && a->hash == b->hash;
}

static void print_rec(const char *which, size_t i, const struct run *r)
{
	if (i >= r->n) {
		fprintf(stderr, "  %s: no frame #%zu (%zu frames)\n", which, i, r->n);
		return;
	}
	const struct rec *x = &r->recs[i];
	fprintf(stderr,
	        "  %s: frame #%zu error=%s kind=%d offset=%llu len=%zu crc_covered=%zu "
	        "has_crc=%d crc_sent=%04X crc_computed=%04X lf_restored=%d\n",
	        which, i, p1_error_id(x->error), (int)x->kind, (unsigned long long)x->offset,
	        x->len, x->crc_covered, x->has_crc, x->crc_sent, x->crc_computed, x->lf_restored);
}

/* Abort at the first frame the two runs disagree on, saying what each reported. */
static void compare_runs(const struct run *whole, const struct run *split)
{
	size_t n = whole->n > split->n ? whole->n : split->n;
	for (size_t i = 0; i < n; i++) {
		if (i < whole->n && i < split->n && rec_equal(&whole->recs[i], &split->recs[i]))
			continue;
		fprintf(stderr,
		        "fuzz_framer: P2 violated: chunked feeding reported other frames\n");
		print_rec("whole buffer", i, whole);
		print_rec("chunked     ", i, split);
		abort();
	}
}

static size_t chunk_size(uint8_t b)
{
	return b < 0xF0 ? (size_t)b + 1 : (size_t)(b - 0xEF) * 256;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t max_lens[8] = {16384, 64, 96, 128, 256, 1024, 4096, 8192};
	if (size < 2)
		return 0;
	uint8_t opt = data[0];
	size_t nsizes = data[1] & 15;
	if (size < 2 + nsizes)
		return 0;
	const uint8_t *sizes = data + 2;
	const uint8_t *in = data + 2 + nsizes;
	size_t in_len = size - 2 - nsizes;

	struct p1_framer_opts o;
	p1_framer_opts_init(&o);
	o.max_len = max_lens[opt & 7];
	o.crlf_retry = !(opt & 8);
	o.encrypted = !(opt & 16);

	/* every frame starts at a distinct input byte, so in_len + 1 records always suffice;
	 * the arrays are kept from one input to the next and only ever grow */
	static struct rec *recs[2];
	static size_t recs_cap;
	if (recs_cap < in_len + 1) {
		for (int i = 0; i < 2; i++) {
			free(recs[i]);
			recs[i] = malloc((in_len + 1) * sizeof(struct rec));
			CHECK(recs[i]);
		}
		recs_cap = in_len + 1;
	}
	struct run whole = {in, in_len, o.max_len, recs[0], 0, recs_cap};
	struct run split = {in, in_len, o.max_len, recs[1], 0, recs_cap};
	struct p1_framer *fw = p1_framer_new(&o), *fs = p1_framer_new(&o);
	CHECK(fw && fs);

	p1_framer_feed(fw, in, in_len, on_frame, &whole);
	for (size_t pos = 0, k = 0; pos < in_len; k++) {
		size_t n = nsizes ? chunk_size(sizes[k % nsizes]) : 1;
		if (n > in_len - pos)
			n = in_len - pos;
		p1_framer_feed(fs, in + pos, n, on_frame, &split);
		pos += n;
	}
	CHECK(p1_framer_busy(fw) == p1_framer_busy(fs));
	p1_framer_flush(fw, on_frame, &whole);
	p1_framer_flush(fs, on_frame, &split);
	CHECK(!p1_framer_busy(fw) && !p1_framer_busy(fs));

	/* P2: the chunking must not change anything that was reported */
	compare_runs(&whole, &split);
	CHECK(p1_framer_garbage_bytes(fw) == p1_framer_garbage_bytes(fs));
	CHECK(p1_framer_garbage_bytes(fw) <= in_len);

	p1_framer_free(fw);
	p1_framer_free(fs);
	return 0;
}
