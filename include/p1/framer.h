/* p1/framer.h - cut a byte stream into P1 frames.
 *
 * Feed bytes in any chunking; the framer calls back once per frame found: a text telegram
 * ('/' ... '!CRC'), an encrypted DLMS envelope (0xDB ...), or a rejected frame with its reason.
 * It resynchronises on garbage and on a new '/' at the start of a line inside a broken frame,
 * bounds every frame, checks the CRC (either case, 1-4 digits), and accepts a frame without CRC
 * only when it does not say it is DSMR 4 or newer.
 *
 * Text bytes are masked to 7 bits (a 7E1 line read as 8N1 then reads right); the CRC is
 * computed over the masked bytes. Encrypted envelopes are kept as raw bytes.
 *
 * Pure: the buffer is allocated by p1_framer_new and never again. The framer has no clock: the
 * caller calls p1_framer_flush() when the line has been silent too long or at end of input.
 */
#ifndef P1_FRAMER_H
#define P1_FRAMER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "p1/error.h"

#define P1_FRAME_MAX_DEFAULT 16384u /* bytes; longest real telegrams are ~3.5 KiB */
#define P1_FRAME_MAX_LIMIT (1u << 20)
#define P1_HEADER_MAX 128u /* identification line; real ones are under 40 characters */
/* Control characters (not CR, LF, TAB) that make a frame binary noise, not text. */
#define P1_HEADER_CONTROLS_MAX 2u
#define P1_BODY_CONTROLS_MAX 3u

enum p1_frame_kind {
	P1_FRAME_TEXT,      /* data = "/...!CRC\r\n" (masked, CRC line normalised to end in CR LF) */
	P1_FRAME_ENCRYPTED, /* data = the whole envelope, raw bytes */
};

struct p1_frame {
	enum p1_error error;     /* P1_OK, or why it was rejected */
	enum p1_frame_kind kind;
	const uint8_t *data;     /* valid during the callback only */
	size_t len;
	size_t crc_covered;      /* text: bytes from '/' through '!' */
	uint64_t offset;         /* stream offset of the first byte ('/' or 0xDB) */
	bool has_crc;            /* text: CRC digits were present */
	uint16_t crc_sent;       /* text: the CRC the meter sent */
	uint16_t crc_computed;   /* text: the CRC over the bytes received */
	bool lf_restored;        /* text: CRC matched only after restoring CR before bare LF */
};

typedef void (*p1_frame_cb)(void *userdata, const struct p1_frame *frame);

struct p1_framer_opts {
	size_t max_len;     /* frame bound, default P1_FRAME_MAX_DEFAULT */
	bool crlf_retry;    /* on CRC mismatch, retry with CR restored before bare LF (default on) */
	bool encrypted;     /* recognise 0xDB envelopes (default on) */
};

void p1_framer_opts_init(struct p1_framer_opts *o);

struct p1_framer;

/* NULL on out of memory or max_len outside 64..P1_FRAME_MAX_LIMIT. opts may be NULL. */
struct p1_framer *p1_framer_new(const struct p1_framer_opts *opts);
struct p1_framer *p1_framer_free(struct p1_framer *f);

/* Feed len bytes; cb is called for each frame completed or rejected. */
void p1_framer_feed(struct p1_framer *f, const void *data, size_t len, p1_frame_cb cb,
		    void *userdata);

/* End of input or the line went silent: a frame waiting only for the end of its CRC line is
 * completed, anything else in progress is reported as P1_ERR_TRUNCATED. The stream offset is
 * kept. */
void p1_framer_flush(struct p1_framer *f, p1_frame_cb cb, void *userdata);

/* Forget anything in progress without reporting it (after reopening a source). */
void p1_framer_reset(struct p1_framer *f);

/* True while a frame is in progress (for inter-byte timeouts). */
bool p1_framer_busy(const struct p1_framer *f);

/* Bytes skipped while hunting for a frame start, since creation (line ends between frames
 * are not counted). */
uint64_t p1_framer_garbage_bytes(const struct p1_framer *f);

#endif
