/* test_decoder.c - unit tests for what p1_decoder (p1/decoder.h) adds to the framer, the DLMS
 * envelope and the parser, each tested on its own elsewhere: an envelope without a key is
 * reported as such and does not disturb the next telegram; a decrypted telegram is marked
 * encrypted, dated at its envelope's offset and takes the Smarty or the Austrian dialect from
 * its content unless a dialect is forced; options the framer refuses make no decoder; and
 * p1_result_describe's messages when a result carries no frame. Envelopes are made here with
 * p1_dlms_encrypt (itself checked against the dsmr-protocol.md §10.3 vector in test_dlms). */
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
#include "p1/decoder.h"
#include "p1/dlms.h"

static const uint8_t key[P1_DLMS_KEY_LEN] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

/* §10.2 T1 */
static const char t1[] = "/XXX5TEST\r\n"
                         "\r\n"
                         "1-3:0.2.8(50)\r\n"
                         "0-0:1.0.0(240101120000W)\r\n"
                         "1-0:1.8.1(000123.456*kWh)\r\n"
                         "1-0:1.7.0(01.234*kW)\r\n"
                         "!DEBB\r\n";

struct got {
	unsigned n;
	enum p1_error error[8];
	uint64_t offset[8];
	bool telegram[8], frame[8], encrypted[8];
	enum p1_dialect dialect[8];
	char energy[8][32]; /* energy_delivered_tariff1 as sent, or "" */
};

static void on_result(void *ud, const struct p1_result *r)
{
	struct got *g = ud;
	assert_true(g->n < 8);
	unsigned i = g->n++;
	g->error[i] = r->error;
	g->offset[i] = r->offset;
	g->frame[i] = r->frame != NULL;
	g->telegram[i] = r->telegram != NULL;
	g->energy[i][0] = 0;
	if (r->telegram) {
		const struct p1_telegram *t = r->telegram;
		g->encrypted[i] = t->encrypted;
		g->dialect[i] = t->dialect;
		const struct p1_value *v = &t->fields[P1_F_E_DEL_T1];
		if (v->presence == P1_PRESENT)
			p1_num_format(&v->num, g->energy[i], sizeof(g->energy[i]));
	}
}

/* body (from '/' through the line before '!') closed with "!" and its CRC, into out. */
static size_t with_crc(const char *body, char *out, size_t cap)
{
	size_t n = strlen(body);
	assert_true(n + 8 <= cap);
	memcpy(out, body, n);
	out[n++] = '!';
	n += (size_t)snprintf(out + n, cap - n, "%04X\r\n", p1_crc16(0, out, n));
	return n;
}

/* An envelope around the telegram made of body, encrypted with key (Smarty default AK). */
static size_t envelope(const char *body, uint8_t *out, size_t cap)
{
	char plain[1024];
	size_t n = with_crc(body, plain, sizeof(plain)), len = 0;
	struct p1_dlms *d = p1_dlms_new(key, NULL);
	assert_non_null(d);
	assert_int_equal(p1_dlms_encrypt(d, (const uint8_t *)"SAG12345", 42, (const uint8_t *)plain,
	                                 n, out, cap, &len),
	                 P1_OK);
	p1_dlms_free(d);
	return len;
}

static void decode(const struct p1_decoder_opts *o, const void *p, size_t n, struct got *g)
{
	struct p1_decoder *d = p1_decoder_new(o);
	assert_non_null(d);
	*g = (struct got){0};
	p1_decoder_feed(d, p, n, on_result, g);
	p1_decoder_flush(d, on_result, g);
	p1_decoder_free(d);
}

static void keyed_opts(struct p1_decoder_opts *o)
{
	p1_decoder_opts_init(o);
	o->have_key = true;
	memcpy(o->key, key, sizeof(key));
}

/* An envelope reaches a decoder that has no key: one P1_ERR_NO_KEY at the envelope's offset,
 * no frame and no telegram with it, and the clear telegram after it decodes as usual. */
static void test_envelope_without_key(void **state)
{
	(void)state;
	uint8_t buf[2048];
	size_t n = envelope("/SAG5\\253000000_M\r\n\r\n1-3:0.2.8(42)\r\n"
	                    "1-0:1.8.1(000123.456*kWh)\r\n",
	                    buf + 3, sizeof(buf) - 3 - sizeof(t1));
	memcpy(buf, "\r\n\r", 3); /* line ends between frames are not garbage */
	memcpy(buf + 3 + n, t1, sizeof(t1) - 1);
	struct got g;
	decode(NULL, buf, 3 + n + sizeof(t1) - 1, &g);
	assert_int_equal(g.n, 2);
	assert_int_equal(g.error[0], P1_ERR_NO_KEY);
	assert_int_equal(g.offset[0], 3);
	assert_false(g.frame[0]);
	assert_false(g.telegram[0]);
	assert_int_equal(g.error[1], P1_OK);
	assert_int_equal(g.offset[1], 3 + n);
	assert_false(g.encrypted[1]);
	assert_int_equal(g.dialect[1], P1_DIALECT_DSMR5);
	assert_string_equal(g.energy[1], "123.456");

	/* and with the key, the same stream gives both telegrams */
	struct p1_decoder_opts o;
	keyed_opts(&o);
	decode(&o, buf, 3 + n + sizeof(t1) - 1, &g);
	assert_int_equal(g.n, 2);
	assert_int_equal(g.error[0], P1_OK);
	assert_int_equal(g.offset[0], 3);
	assert_true(g.encrypted[0]);
	assert_int_equal(g.dialect[0], P1_DIALECT_SMARTY);
	assert_int_equal(g.error[1], P1_OK);
	assert_false(g.encrypted[1]);
}

/* Inside an envelope the dialect comes from the content: Smarty when the telegram names its
 * logical device or says P1 version 42, the Austrian Sagemcom otherwise (another version, a
 * version that is not two characters, no version); a forced dialect wins over both. */
static void test_envelope_dialects(void **state)
{
	(void)state;
	static const struct {
		const char *lines;
		enum p1_dialect force, want;
	} cases[] = {
	        {"1-3:0.2.8(42)\r\n", P1_DIALECT_UNKNOWN, P1_DIALECT_SMARTY},
	        {"0-0:42.0.0(53414731323334353637383930)\r\n", P1_DIALECT_UNKNOWN,
	         P1_DIALECT_SMARTY},
	        {"1-3:0.2.8(50)\r\n", P1_DIALECT_UNKNOWN, P1_DIALECT_AUSTRIA},
	        {"1-3:0.2.8(420)\r\n", P1_DIALECT_UNKNOWN, P1_DIALECT_AUSTRIA},
	        {"1-3:0.2.8(4)\r\n", P1_DIALECT_UNKNOWN, P1_DIALECT_AUSTRIA},
	        {"", P1_DIALECT_UNKNOWN, P1_DIALECT_AUSTRIA},
	        {"1-3:0.2.8(42)\r\n", P1_DIALECT_DSMR5, P1_DIALECT_DSMR5},
	        {"", P1_DIALECT_GENERIC, P1_DIALECT_GENERIC},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char body[512];
		snprintf(body, sizeof(body),
		         "/SAG5\\253000000_M\r\n\r\n%s0-0:1.0.0(240601120000S)\r\n"
		         "1-0:1.8.1(001234.567*kWh)\r\n",
		         cases[i].lines);
		uint8_t buf[1024];
		size_t n = envelope(body, buf + 5, sizeof(buf) - 5);
		memcpy(buf, "junk\n", 5);
		struct p1_decoder_opts o;
		keyed_opts(&o);
		o.parse.force_dialect = cases[i].force;
		struct got g;
		decode(&o, buf, n + 5, &g);
		if (g.n != 1 || g.error[0] != P1_OK || g.dialect[0] != cases[i].want)
			fail_msg("case %zu: %u results, %s, dialect %s (want %s)", i, g.n,
			         p1_error_id(g.error[0]), p1_dialect_name(g.dialect[0]),
			         p1_dialect_name(cases[i].want));
		assert_true(g.encrypted[0]);
		assert_int_equal(g.offset[0], 5); /* the envelope's offset in the stream */
		assert_string_equal(g.energy[0], "1234.567");
	}
}

/* Options the framer refuses make no decoder; freeing nothing is allowed. */
static void test_new_refused(void **state)
{
	(void)state;
	struct p1_decoder_opts o;
	p1_decoder_opts_init(&o);
	o.framer.max_len = 10; /* below the framer's minimum of 64 */
	assert_null(p1_decoder_new(&o));
	p1_decoder_opts_init(&o);
	o.framer.max_len = P1_FRAME_MAX_LIMIT + 1;
	assert_null(p1_decoder_new(&o));
	assert_null(p1_decoder_free(NULL));
}

/* A result may come without its frame (an envelope that was refused): the messages that
 * quote the frame say 0 rather than read it. */
static void test_describe_without_frame(void **state)
{
	(void)state;
	char buf[128];
	struct p1_result r = {.error = P1_ERR_CRC};
	size_t n = p1_result_describe(&r, buf, sizeof(buf));
	assert_string_equal(buf, "CRC mismatch: telegram says 0000, computed 0000");
	assert_int_equal(n, strlen(buf));
	r = (struct p1_result){.error = P1_ERR_TOO_LONG};
	p1_result_describe(&r, buf, sizeof(buf));
	assert_string_equal(buf, "telegram too long: no end after 0 bytes");
	r = (struct p1_result){.error = P1_ERR_TRUNCATED};
	p1_result_describe(&r, buf, sizeof(buf));
	assert_string_equal(buf, "telegram truncated after 0 bytes");
	r = (struct p1_result){.error = P1_ERR_SYNTAX, .line = 7};
	p1_result_describe(&r, buf, sizeof(buf));
	assert_string_equal(buf, "bad syntax in a telegram without CRC, line 7");
	r = (struct p1_result){.error = P1_ERR_NO_KEY};
	p1_result_describe(&r, buf, sizeof(buf));
	assert_string_equal(buf, p1_strerror(P1_ERR_NO_KEY));
	/* snprintf-style: the length it needs, and what fits */
	r = (struct p1_result){.error = P1_ERR_CRC};
	n = p1_result_describe(&r, buf, 6);
	assert_int_equal(n, strlen("CRC mismatch: telegram says 0000, computed 0000"));
	assert_string_equal(buf, "CRC m");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_envelope_without_key),
	        cmocka_unit_test(test_envelope_dialects),
	        cmocka_unit_test(test_new_refused),
	        cmocka_unit_test(test_describe_without_frame),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
