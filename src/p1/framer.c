/* framer.c - cut a byte stream into P1 frames (see p1/framer.h).
 *
 * States: HUNT skips bytes until '/' (text) or 0xDB (encrypted envelope); HEADER collects the
 * identification line, where another '/' means the first one was noise; BODY collects lines
 * and watches the first byte of each: '!' ends the data, '/' means the frame was cut and a new
 * one begins; CRC reads up to four hex digits; ENVELOPE collects the length the DLMS header
 * announces. The framer owns one buffer, allocated in p1_framer_new, and never allocates again.
 * It never logs: every rejected frame goes to the caller's callback with its reason.
 */
#include "hex.h"
#include "p1/framer.h"
#include "swar.h"

#include <stdlib.h>
#include <string.h>

#include "p1/crc16.h"
#include "p1/dlms.h"

enum state { HUNT, HEADER, BODY, CRC, ENVELOPE };

/* Room after the '!' for four CRC digits and CR LF, and for an envelope's header. */
#define TAIL_ROOM 64

struct p1_framer {
	struct p1_framer_opts opts;
	enum state st;
	bool line_start;    /* BODY: the next byte starts a line */
	uint8_t *buf;
	size_t len, cap;
	size_t crc_covered; /* CRC: bytes up to and including '!' */
	unsigned crc_digits;
	uint16_t crc_value;
	size_t env_total;   /* ENVELOPE: announced length, 0 while unknown */
	unsigned controls;  /* control characters seen in this frame (not CR, LF, TAB) */
	uint8_t *scratch;   /* a rejected frame's tail, framed again (see rescan) */
	bool rescanning;
	uint64_t pos;       /* stream offset of the next byte fed */
	const uint8_t *base;/* the buffer being fed, and its stream offset */
	uint64_t base_pos;
	uint64_t start;     /* stream offset of the frame start */
	uint64_t garbage;
};

void p1_framer_opts_init(struct p1_framer_opts *o)
{
	*o = (struct p1_framer_opts){
		.max_len = P1_FRAME_MAX_DEFAULT,
		.crlf_retry = true,
		.encrypted = true,
	};
}

struct p1_framer *p1_framer_new(const struct p1_framer_opts *opts)
{
	struct p1_framer_opts o;
	if (opts)
		o = *opts;
	else
		p1_framer_opts_init(&o);
	if (o.max_len < 64 || o.max_len > P1_FRAME_MAX_LIMIT)
		return NULL;
	struct p1_framer *f = calloc(1, sizeof(*f));
	if (!f)
		return NULL;
	f->opts = o;
	f->cap = o.max_len + TAIL_ROOM;
	f->buf = malloc(f->cap);
	f->scratch = malloc(f->cap);
	if (!f->buf || !f->scratch)
		return p1_framer_free(f);
	return f;
}

struct p1_framer *p1_framer_free(struct p1_framer *f)
{
	if (f) {
		free(f->buf);
		free(f->scratch);
		free(f);
	}
	return NULL;
}

void p1_framer_reset(struct p1_framer *f)
{
	f->st = HUNT;
	f->len = 0;
	f->env_total = 0;
}

bool p1_framer_busy(const struct p1_framer *f)
{
	return f->st != HUNT;
}

uint64_t p1_framer_garbage_bytes(const struct p1_framer *f)
{
	return f->garbage;
}

static void report(struct p1_framer *f, enum p1_error err, p1_frame_cb cb, void *ud)
{
	struct p1_frame fr = {
		.error = err,
		.kind = f->st == ENVELOPE ? P1_FRAME_ENCRYPTED : P1_FRAME_TEXT,
		.data = f->buf,
		.len = f->len,
		.offset = f->start,
	};
	p1_framer_reset(f);
	cb(ud, &fr);
}

#define OFFSET(f, p) ((f)->base_pos + (uint64_t)((p) - (f)->base))

static void begin_text(struct p1_framer *f, uint64_t at)
{
	f->st = HEADER;
	f->controls = 0;
	f->buf[0] = '/';
	f->len = 1;
	f->start = at;
}

/* CRC over the covered bytes with CR restored before every LF, for frames whose line ends
 * all lost their CR on the way (a transport or file that rewrote them). A frame that has
 * some CR LF was not rewritten: it gets no second chance. */
static bool crc_with_cr(const uint8_t *p, size_t n, uint16_t *ret)
{
	if (memmem(p, n, "\r\n", 2))
		return false;
	uint16_t crc = 0;
	bool bare = false;
	size_t from = 0;
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\n' && (i == 0 || p[i - 1] != '\r')) {
			crc = p1_crc16(crc, p + from, i - from);
			crc = p1_crc16(crc, "\r", 1);
			from = i;
			bare = true;
		}
	}
	*ret = p1_crc16(crc, p + from, n - from);
	return bare;
}

/* A frame without CRC is acceptable only from a dialect that has none. */
static bool claims_crc(const uint8_t *p, size_t n)
{
	return memmem(p, n, "1-3:0.2.8", 9) || memmem(p, n, "0-0:96.1.4", 10);
}

static void feed(struct p1_framer *f, const uint8_t *p, size_t n, uint64_t base_pos,
		 p1_frame_cb cb, void *ud);

/* Where a real identification ("/ISK5", "/KFM5", "/Ene5") starts inside a frame, or 0. */
static size_t later_header(const uint8_t *b, size_t n)
{
	for (size_t k = 1; k + 5 < n; k++) {
		const uint8_t *h = memchr(b + k, '/', n - 5 - k);
		if (!h)
			return 0;
		k = (size_t)(h - b);
		bool letters = true;
		for (int j = 1; j <= 3; j++)
			letters &= ((h[j] | 0x20) >= 'a' && (h[j] | 0x20) <= 'z');
		if (letters && h[4] == '5')
			return k;
	}
	return 0;
}

/* A frame whose CRC failed may be noise that swallowed a real telegram (a '/' in the noise
 * opened a frame and the real one began mid-line): frame its tail again, once. */
static void rescan(struct p1_framer *f, uint64_t start, size_t len, p1_frame_cb cb, void *ud)
{
	size_t k = later_header(f->scratch, len);
	if (!k)
		return;
	f->rescanning = true;
	feed(f, f->scratch + k, len - k, start + k, cb, ud);
	f->rescanning = false;
}

static void finish_text(struct p1_framer *f, p1_frame_cb cb, void *ud)
{
	struct p1_frame fr = {
		.error = P1_OK,
		.kind = P1_FRAME_TEXT,
		.data = f->buf,
		.crc_covered = f->crc_covered,
		.offset = f->start,
		.has_crc = f->crc_digits > 0,
		.crc_sent = f->crc_value,
	};
	/* normalise the end of the CRC line */
	f->buf[f->len++] = '\r';
	f->buf[f->len++] = '\n';
	fr.len = f->len;
	if (fr.has_crc) {
		fr.crc_computed = p1_crc16(0, f->buf, f->crc_covered);
		if (fr.crc_computed != fr.crc_sent) {
			uint16_t alt;
			if (f->opts.crlf_retry && crc_with_cr(f->buf, f->crc_covered, &alt) &&
			    alt == fr.crc_sent) {
				fr.lf_restored = true;
				fr.crc_computed = alt;
			} else {
				fr.error = P1_ERR_CRC;
			}
		}
	} else if (claims_crc(f->buf, f->crc_covered)) {
		fr.error = P1_ERR_CRC_MISSING;
	}
	bool again = fr.error == P1_ERR_CRC && !f->rescanning;
	if (again)
		memcpy(f->scratch, f->buf, f->len);
	uint64_t start = f->start;
	size_t len = f->len;
	p1_framer_reset(f);
	cb(ud, &fr);
	if (again)
		rescan(f, start, len, cb, ud);
}

static const uint8_t *hunt(struct p1_framer *f, const uint8_t *p, const uint8_t *end)
{
	for (; p < end; p++) {
		uint8_t b = *p;
		if ((b & 0x7f) == '/') {
			begin_text(f, OFFSET(f, p));
			p++;
			break;
		}
		if (b == 0xDB && f->opts.encrypted) {
			f->st = ENVELOPE;
			f->buf[0] = b;
			f->len = 1;
			f->env_total = 0;
			f->start = OFFSET(f, p);
			p++;
			break;
		}
		if (b != '\r' && b != '\n')
			f->garbage++;
	}
	return p;
}

/* The identification line: printable text of bounded length up to LF. Anything else means
 * the '/' was noise; hunting resumes at the offending byte (which may be a real '/' or 0xDB). */
static const uint8_t *header(struct p1_framer *f, const uint8_t *p, const uint8_t *end,
			     p1_frame_cb cb, void *ud)
{
	/* kept in locals: a store into the buffer could otherwise change them, as far as the
	 * compiler knows, and they would be read again for every byte */
	uint8_t *buf = f->buf;
	size_t len = f->len, max = P1_HEADER_MAX;
	unsigned controls = f->controls;
	if (f->opts.max_len < max)
		max = f->opts.max_len;
	for (; p < end; p++) {
		uint8_t b = *p & 0x7f;
		if (len >= max)
			break;
		if (b == '\n') {
			buf[len++] = b;
			f->len = len;
			f->controls = controls;
			f->st = BODY;
			f->line_start = true;
			return p + 1;
		}
		/* a stray control character or two is tolerated (test data with "\2" in the
		 * header exists); binary noise has one in every four bytes */
		controls += (b < 0x20 || b == 0x7f) && b != '\r' && b != '\t';
		if (b == '/' || *p == 0xDB || controls > P1_HEADER_CONTROLS_MAX) {
			f->garbage += len;
			p1_framer_reset(f);
			return p; /* HUNT looks at this byte again */
		}
		buf[len++] = b;
	}
	f->len = len;
	f->controls = controls;
	if (len >= max && p < end)
		report(f, P1_ERR_TOO_LONG, cb, ud);
	return p;
}

static bool is_control(uint8_t b)
{
	return (b < 0x20 && b != '\r' && b != '\n' && b != '\t') || b == 0x7f;
}

static bool ends_data(uint8_t b)
{
	b &= 0x7f;
	return b == '/' || b == '!';
}

/* One pass over a chunk of the body: copy it into d with bit 7 cleared, find the first line
 * that starts with '!' (end of data) or '/' (a new telegram: this one was cut), and count the
 * control characters (not CR, LF, TAB) before it. Returns the bytes before that line start, or
 * n when there is none; *stop is the byte found there, or 0. A word is looked at more closely
 * only when it holds a byte below 0x20 or a DEL, that is in a telegram a line end. */
__attribute__((noinline)) /* its own registers keep the word loop's constants */
static size_t scan_body(struct p1_framer *f, uint8_t *restrict d, const uint8_t *restrict s,
			size_t n, int *stop)
{
	unsigned controls = 0;
	size_t k = 0, used = n;
	*stop = 0;
	if (f->line_start && ends_data(s[0])) {
		used = 0;
		goto found;
	}
	for (; k + 8 <= n; k += 8) {
		uint64_t w = load_le64(s + k) & BYTES(0x7f);
		store_le64(d + k, w);
		/* bytes are 7-bit, so sums stay in their byte: b + 0x60 reaches 0x80 from b = 0x20
		 * on, b + 1 only for DEL; a byte whose two sums agree in bit 7 is a control
		 * character (or a line end) */
		uint64_t above = w + BYTES(0x60), del = w + BYTES(1);
		if (((above ^ del) & HIGH) == HIGH)
			continue;
		uint64_t lf = bytes7_eq(w, '\n');
		uint64_t ctrl = ~above & HIGH & ~(lf | bytes7_eq(w, '\r'));
		if (ctrl) /* rare: not only line ends */
			ctrl &= ~bytes7_eq(w, '\t');
		ctrl |= del & HIGH;
		for (; lf; lf &= lf - 1) {
			size_t at = k + first_marked(lf) + 1;
			if (at < n && ends_data(s[at])) {
				if (at - k < 8) /* controls after the line start do not count */
					ctrl &= (1ull << (8 * (at - k))) - 1;
				controls += bytes_marked(ctrl);
				used = at;
				goto found;
			}
		}
		if (ctrl)
			controls += bytes_marked(ctrl);
	}
	for (bool ls = k ? d[k - 1] == '\n' : f->line_start; k < n; k++) {
		if (ls && ends_data(s[k])) {
			used = k;
			goto found;
		}
		d[k] = s[k] & 0x7f;
		controls += is_control(d[k]);
		ls = d[k] == '\n';
	}
	f->line_start = d[n - 1] == '\n';
	f->controls += controls;
	return n;
found:
	d[used] = s[used] & 0x7f; /* the '!' belongs to the frame */
	*stop = d[used];
	f->controls += controls;
	return used;
}

/* Binary noise, not a telegram: report it at the control byte that went over the limit (the
 * same byte whatever the chunking), and hunt again after it. */
static const uint8_t *noise(struct p1_framer *f, const uint8_t *p, const uint8_t *d, size_t used,
			    unsigned before, p1_frame_cb cb, void *ud)
{
	size_t at = 0;
	unsigned seen = before;
	for (; at < used; at++)
		if (is_control(d[at]) && ++seen > P1_BODY_CONTROLS_MAX)
			break;
	f->len += at;
	report(f, P1_ERR_SYNTAX, cb, ud);
	return p + at + 1;
}

/* Collect lines. Line starts are looked for among the masked bytes, so a line feed with bit 7
 * set still ends a line. */
static const uint8_t *body(struct p1_framer *f, const uint8_t *p, const uint8_t *end,
			   p1_frame_cb cb, void *ud)
{
	size_t n = (size_t)(end - p);
	size_t room = f->len < f->opts.max_len ? f->opts.max_len - f->len : 0;
	if (!room) {
		report(f, P1_ERR_TOO_LONG, cb, ud);
		return p;
	}
	if (n > room)
		n = room;
	uint8_t *d = f->buf + f->len;
	unsigned before = f->controls;
	int stop; /* '!' or '/' at a line start */
	size_t used = scan_body(f, d, p, n, &stop);
	if (f->controls > P1_BODY_CONTROLS_MAX)
		return noise(f, p, d, used, before, cb, ud);
	if (stop == '/') {
		f->len += used;
		report(f, P1_ERR_TRUNCATED, cb, ud);
		return p + used; /* HUNT takes it from here */
	}
	if (stop == '!') {
		f->len += used + 1;
		f->crc_covered = f->len;
		f->crc_digits = 0;
		f->crc_value = 0;
		f->st = CRC;
		return p + used + 1;
	}
	f->len += n;
	return p + n;
}

static const uint8_t *crc_digits(struct p1_framer *f, const uint8_t *p, const uint8_t *end,
				 p1_frame_cb cb, void *ud)
{
	for (; p < end; p++) {
		uint8_t b = *p & 0x7f;
		int v = p1_hexval(b);
		if (v < 0) {
			/* without digits only a line end (or the next telegram, glued on) may follow
			 * the '!': anything else is a line whose first character was damaged into '!' */
			if (!f->crc_digits && b != '\r' && b != '\n' && b != '/') {
				report(f, P1_ERR_SYNTAX, cb, ud);
				return p;
			}
			finish_text(f, cb, ud);
			return p; /* not consumed: CR, LF, or the next frame's first byte */
		}
		f->buf[f->len++] = (uint8_t)(*p & 0x7f);
		f->crc_value = (uint16_t)(f->crc_value << 4 | (unsigned)v);
		if (++f->crc_digits == 4) {
			finish_text(f, cb, ud);
			return p + 1;
		}
	}
	return p;
}



/* Not an envelope after all: look at the bytes after the 0xDB again. */
static void envelope_reject(struct p1_framer *f, p1_frame_cb cb, void *ud)
{
	uint8_t copy[TAIL_ROOM];
	size_t n = f->len - 1 < sizeof(copy) ? f->len - 1 : sizeof(copy);
	memcpy(copy, f->buf + 1, n);
	f->garbage++;
	uint64_t resume = f->start + 1;
	p1_framer_reset(f);
	feed(f, copy, n, resume, cb, ud);
}

static const uint8_t *envelope(struct p1_framer *f, const uint8_t *p, const uint8_t *end,
			       p1_frame_cb cb, void *ud)
{
	while (p < end) {
		if (!f->env_total) {
			f->buf[f->len++] = *p++;
			struct p1_dlms_info info;
			int r = p1_dlms_header(f->buf, f->len, &info);
			if (r < 0 || f->len >= TAIL_ROOM) {
				envelope_reject(f, cb, ud);
				return p;
			}
			if (r > 0) {
				if (info.total_len > f->opts.max_len + TAIL_ROOM) {
					report(f, P1_ERR_TOO_LONG, cb, ud);
					return p;
				}
				f->env_total = info.total_len;
			}
			continue;
		}
		size_t want = f->env_total - f->len, have = (size_t)(end - p);
		size_t n = want < have ? want : have;
		memcpy(f->buf + f->len, p, n);
		f->len += n;
		p += n;
		if (f->len == f->env_total) {
			struct p1_frame fr = {
				.error = P1_OK,
				.kind = P1_FRAME_ENCRYPTED,
				.data = f->buf,
				.len = f->len,
				.offset = f->start,
			};
			p1_framer_reset(f);
			cb(ud, &fr);
			return p;
		}
	}
	return p;
}

static void feed(struct p1_framer *f, const uint8_t *p, size_t n, uint64_t base_pos,
		 p1_frame_cb cb, void *ud)
{
	const uint8_t *saved_base = f->base, *end = p + n;
	uint64_t saved_pos = f->base_pos;
	f->base = p;
	f->base_pos = base_pos;
	while (p < end) {
		switch (f->st) {
		case HUNT:
			p = hunt(f, p, end);
			break;
		case HEADER:
			p = header(f, p, end, cb, ud);
			break;
		case BODY:
			p = body(f, p, end, cb, ud);
			break;
		case CRC:
			p = crc_digits(f, p, end, cb, ud);
			break;
		case ENVELOPE:
			p = envelope(f, p, end, cb, ud);
			break;
		}
	}
	f->base = saved_base;
	f->base_pos = saved_pos;
}

void p1_framer_feed(struct p1_framer *f, const void *data, size_t len, p1_frame_cb cb, void *ud)
{
	feed(f, data, len, f->pos, cb, ud);
	f->pos += len;
}

void p1_framer_flush(struct p1_framer *f, p1_frame_cb cb, void *ud)
{
	switch (f->st) {
	case HUNT:
		break;
	case CRC:
		finish_text(f, cb, ud);
		break;
	default:
		report(f, P1_ERR_TRUNCATED, cb, ud);
		break;
	}
}
