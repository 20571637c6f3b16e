/* decoder.c - bytes in, telegrams out (see p1/decoder.h).
 *
 * One framer reads the wire. Text frames go straight to the parser; encrypted envelopes are
 * decrypted into a plaintext buffer that a second framer reads, so a decrypted telegram passes
 * exactly the same CRC and syntax checks as one that arrived in clear. Everything is allocated
 * in p1_decoder_new.
 */
#include "p1/decoder.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "p1/dlms.h"

struct p1_decoder {
	struct p1_decoder_opts opts;
	struct p1_framer *wire, *inner;
	struct p1_dlms *dlms;
	struct p1_telegram *t;
	uint8_t *plain;
	size_t plain_cap;
	/* the callback of the feed in progress */
	p1_result_cb cb;
	void *ud;
	uint64_t envelope_offset; /* offset of the envelope being unwrapped */
	bool in_envelope;
	unsigned inner_results;   /* frames the inner framer found in one plaintext */
};

void p1_decoder_opts_init(struct p1_decoder_opts *o)
{
	memset(o, 0, sizeof(*o));
	p1_framer_opts_init(&o->framer);
	p1_parse_opts_init(&o->parse);
}

struct p1_decoder *p1_decoder_new(const struct p1_decoder_opts *opts)
{
	struct p1_decoder *d = calloc(1, sizeof(*d));
	if (!d)
		return NULL;
	if (opts)
		d->opts = *opts;
	else
		p1_decoder_opts_init(&d->opts);
	struct p1_framer_opts inner = d->opts.framer;
	inner.encrypted = false;
	d->wire = p1_framer_new(&d->opts.framer);
	d->inner = p1_framer_new(&inner);
	d->t = p1_telegram_new(d->opts.framer.max_len + 16);
	d->plain_cap = d->opts.framer.max_len + 64;
	d->plain = malloc(d->plain_cap);
	if (d->opts.have_key)
		d->dlms = p1_dlms_new(d->opts.key, d->opts.have_ak ? d->opts.ak : NULL);
	if (!d->wire || !d->inner || !d->t || !d->plain || (d->opts.have_key && !d->dlms))
		return p1_decoder_free(d);
	return d;
}

struct p1_decoder *p1_decoder_free(struct p1_decoder *d)
{
	if (d) {
		p1_framer_free(d->wire);
		p1_framer_free(d->inner);
		p1_dlms_free(d->dlms);
		p1_telegram_free(d->t);
		free(d->plain);
		memset(&d->opts.key, 0, sizeof(d->opts.key));
		free(d);
	}
	return NULL;
}

static void deliver(struct p1_decoder *d, struct p1_result *r)
{
	if (d->in_envelope) {
		r->offset = d->envelope_offset;
		d->inner_results++;
	}
	d->cb(d->ud, r);
}

static void on_text(struct p1_decoder *d, const struct p1_frame *fr)
{
	struct p1_result r = {.error = fr->error, .offset = fr->offset, .frame = fr};
	if (r.error == P1_OK)
		r.error = p1_parse(d->t, (const char *)fr->data, fr->len, fr->has_crc, fr->crc_sent,
				   &d->opts.parse, &r.line);
	if (r.error == P1_OK) {
		struct p1_telegram *t = d->t;
		if (fr->lf_restored)
			t->warnings |= P1_WARN_LF_ONLY;
		if (d->in_envelope) {
			t->encrypted = true;
			if (d->opts.parse.force_dialect == P1_DIALECT_UNKNOWN)
				t->dialect = t->fields[P1_F_DEVICE_NAME].presence ||
							     (t->fields[P1_F_P1_VERSION].presence &&
							      t->fields[P1_F_P1_VERSION].text.len == 2 &&
							      !memcmp(t->fields[P1_F_P1_VERSION].text.ptr, "42", 2))
						     ? P1_DIALECT_SMARTY
						     : P1_DIALECT_AUSTRIA;
		}
		r.telegram = t;
	}
	deliver(d, &r);
}

static void on_inner(void *ud, const struct p1_frame *fr)
{
	on_text(ud, fr);
}

static void on_envelope(struct p1_decoder *d, const struct p1_frame *fr)
{
	struct p1_result r = {.error = fr->error, .offset = fr->offset};
	if (r.error == P1_OK && !d->dlms)
		r.error = P1_ERR_NO_KEY;
	size_t n = 0;
	if (r.error == P1_OK)
		r.error = p1_dlms_decrypt(d->dlms, fr->data, fr->len, d->plain, d->plain_cap, &n, NULL);
	if (r.error != P1_OK) {
		d->cb(d->ud, &r);
		return;
	}
	d->in_envelope = true;
	d->envelope_offset = fr->offset;
	d->inner_results = 0;
	p1_framer_reset(d->inner);
	p1_framer_feed(d->inner, d->plain, n, on_inner, d);
	p1_framer_flush(d->inner, on_inner, d);
	d->in_envelope = false;
	if (!d->inner_results) { /* decrypted, but no telegram inside */
		r.error = P1_ERR_SYNTAX;
		d->cb(d->ud, &r);
	}
}

static void on_wire(void *ud, const struct p1_frame *fr)
{
	struct p1_decoder *d = ud;
	if (fr->kind == P1_FRAME_ENCRYPTED)
		on_envelope(d, fr);
	else
		on_text(d, fr);
}

void p1_decoder_feed(struct p1_decoder *d, const void *data, size_t len, p1_result_cb cb,
		     void *ud)
{
	d->cb = cb;
	d->ud = ud;
	p1_framer_feed(d->wire, data, len, on_wire, d);
}

void p1_decoder_flush(struct p1_decoder *d, p1_result_cb cb, void *ud)
{
	d->cb = cb;
	d->ud = ud;
	p1_framer_flush(d->wire, on_wire, d);
}

void p1_decoder_reset(struct p1_decoder *d)
{
	p1_framer_reset(d->wire);
}

bool p1_decoder_busy(const struct p1_decoder *d)
{
	return p1_framer_busy(d->wire);
}

size_t p1_result_describe(const struct p1_result *r, char *buf, size_t cap)
{
	int n;
	const struct p1_frame *f = r->frame;
	switch (r->error) {
	case P1_ERR_CRC:
		n = snprintf(buf, cap, "CRC mismatch: telegram says %04X, computed %04X",
			     f ? f->crc_sent : 0, f ? f->crc_computed : 0);
		break;
	case P1_ERR_SYNTAX:
		if (f && f->error == P1_ERR_SYNTAX) {
			n = snprintf(buf, cap, "damaged telegram: a line starts with '!' but no CRC "
					       "or line end follows");
			break;
		}
		n = r->line ? snprintf(buf, cap, "bad syntax in a telegram without CRC, line %u",
				       r->line)
			    : snprintf(buf, cap, "bad syntax in a telegram without CRC");
		break;
	case P1_ERR_TOO_LONG:
		n = snprintf(buf, cap, "telegram too long: no end after %zu bytes", f ? f->len : (size_t)0);
		break;
	case P1_ERR_TRUNCATED:
		n = snprintf(buf, cap, "telegram truncated after %zu bytes", f ? f->len : (size_t)0);
		break;
	default:
		n = snprintf(buf, cap, "%s", p1_strerror(r->error));
		break;
	}
	return n < 0 ? 0 : (size_t)n;
}
