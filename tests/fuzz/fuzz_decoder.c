/* fuzz_decoder.c - libFuzzer target for the whole p1_decoder: framer, DLMS envelope, inner
 * framer, parser (test matrix P1).
 *
 * The input is a byte stream as it comes off the wire. The decoder has a fixed key (the one of
 * the dsmr-protocol.md §10.3 vector, 000102...0F, with the Smarty default authentication key),
 * so envelopes built with that key decrypt and their plaintext goes through the inner framer
 * and the parser; any other envelope exercises the header checks and tag verification. The
 * stream is fed in one call and flushed. Every result is checked: a known error code, an offset
 * inside the stream and in order, a telegram exactly when the result is P1_OK, a description
 * that fits any buffer like snprintf, and valid JSON for every telegram. Any violation aborts.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "p1/decoder.h"
#include "p1/json.h"

#include "json_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond) \
	do { \
		if (!(cond)) { \
			fprintf(stderr, "fuzz_decoder: %s:%d: invariant failed: %s\n", __FILE__, \
			        __LINE__, #cond); \
			abort(); \
		} \
	} while (0)

struct state {
	uint64_t base; /* stream offset of the input's first byte */
	size_t size;
	uint64_t last_offset;
	unsigned results, ok;
};

static char json[256 * 1024];

static void on_result(void *ud, const struct p1_result *r)
{
	struct state *s = ud;
	CHECK((unsigned)r->error < P1_ERR_COUNT);
	CHECK(r->offset >= s->base && r->offset - s->base < s->size);
	CHECK(!s->results || r->offset >= s->last_offset);
	s->last_offset = r->offset;
	s->results++;
	CHECK((r->error == P1_OK) == (r->telegram != NULL));
	if (r->frame)
		CHECK(r->frame->error == r->error || r->frame->error == P1_OK);

	char msg[512], tiny[8];
	size_t n = p1_result_describe(r, msg, sizeof(msg));
	CHECK(n > 0 && n < sizeof(msg) && strlen(msg) == n);
	CHECK(p1_result_describe(r, tiny, sizeof(tiny)) == n);
	size_t k = n < sizeof(tiny) - 1 ? n : sizeof(tiny) - 1;
	CHECK(tiny[k] == 0 && !memcmp(tiny, msg, k));
	CHECK(p1_strerror(r->error) && p1_error_id(r->error));
	if (r->error == P1_ERR_SYNTAX && r->frame)
		CHECK(!r->frame->has_crc);

	if (!r->telegram)
		return;
	const struct p1_telegram *t = r->telegram;
	s->ok++;
	CHECK((unsigned)t->dialect < P1_DIALECT_COUNT);
	if (t->encrypted)
		CHECK(t->dialect == P1_DIALECT_SMARTY || t->dialect == P1_DIALECT_AUSTRIA);
	size_t len = p1_json_telegram(t, P1_JSON_ALL, json, sizeof(json));
	if (len < sizeof(json) && !json_ok(json, len, '{')) {
		fprintf(stderr, "fuzz_decoder: invalid JSON:\n%.*s\n",
		        (int)(len > 4000 ? 4000 : len), json);
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* One decoder for all inputs, reset between them. Its stream offset keeps counting across
	 * resets, so offsets are checked relative to where this input starts. */
	static struct p1_decoder *d;
	static uint64_t fed;
	if (!d) {
		struct p1_decoder_opts o;
		p1_decoder_opts_init(&o);
		o.have_key = true;
		for (int i = 0; i < 16; i++)
			o.key[i] = (uint8_t)i;
		d = p1_decoder_new(&o);
		CHECK(d);
	}
	p1_decoder_reset(d);
	struct state s = {.base = fed, .size = size};
	p1_decoder_feed(d, data, size, on_result, &s);
	p1_decoder_flush(d, on_result, &s);
	fed += size;
	CHECK(!p1_decoder_busy(d));
	CHECK(s.ok <= s.results);
	return 0;
}
