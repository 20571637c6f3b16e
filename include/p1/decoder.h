/* p1/decoder.h - bytes in, telegrams out: framer + DLMS decryption + parser in one object.
 * This is what the daemon's meters and `p1d decode` use. Pure, allocates only at _new. */
#ifndef P1_DECODER_H
#define P1_DECODER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "p1/error.h"
#include "p1/framer.h"
#include "p1/telegram.h"

struct p1_decoder_opts {
	struct p1_framer_opts framer;
	struct p1_parse_opts parse;
	bool have_key;
	uint8_t key[16];
	bool have_ak;          /* false: the Smarty default authentication key */
	uint8_t ak[16];
};

void p1_decoder_opts_init(struct p1_decoder_opts *o);

/* What happened to one frame. */
struct p1_result {
	enum p1_error error;
	uint64_t offset;                    /* stream offset of the frame start */
	unsigned line;                      /* P1_ERR_SYNTAX: line at fault (1-based) or 0 */
	const struct p1_frame *frame;       /* the text frame (after decryption), may be NULL */
	const struct p1_telegram *telegram; /* when error == P1_OK; valid during the callback */
};

typedef void (*p1_result_cb)(void *userdata, const struct p1_result *r);

struct p1_decoder;

struct p1_decoder *p1_decoder_new(const struct p1_decoder_opts *opts);
struct p1_decoder *p1_decoder_free(struct p1_decoder *d);

void p1_decoder_feed(struct p1_decoder *d, const void *data, size_t len, p1_result_cb cb,
		     void *userdata);
void p1_decoder_flush(struct p1_decoder *d, p1_result_cb cb, void *userdata);
void p1_decoder_reset(struct p1_decoder *d);
bool p1_decoder_busy(const struct p1_decoder *d);

/* A message a person understands: "CRC mismatch: telegram says DEBB, computed 127A".
 * Returns the length written (snprintf-style). */
size_t p1_result_describe(const struct p1_result *r, char *buf, size_t cap);

#endif
