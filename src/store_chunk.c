/* store_chunk.c - raw readings packed into chunks: one row per commit and meter holding up to
 * STORE_CHUNK_MAX readings, each written as differences to the one before (varints), so that
 * a commit of a minute of readings adds a few hundred bytes to one page instead of sixty rows.
 *
 * Format of chunks.data, per reading (about 4 bytes for a 1-s meter):
 *   varint(head): (utc - previous utc) << 2 | segment changed << 1 | flags changed
 *                 (the first reading's time is the row's first_utc, its segment the row's seg)
 *   varint(segment - previous segment)                         if the segment changed
 *   varint(flags: bit 0 power present, bits 1.. registers present)  if flags changed (or first)
 *   zigzag varint(power_w - previous power_w)                  if power present
 *   varint(changed: bit r = register r differs from its previous value)
 *   zigzag varint(register - previous value) for each changed register
 * Previous values start at 0 in each chunk. Never logs; called by store.c (encode at commit)
 * and store_ingest.c (replay), store_readings_since() for readers. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"
#include "store_int.h"

static int put_varint(struct store *s, size_t *len, uint64_t v)
{
	if (*len + 10 > s->buf_cap) {
		size_t cap = s->buf_cap ? s->buf_cap * 2 : 65536;
		uint8_t *b = realloc(s->buf, cap);
		if (!b)
			return -ENOMEM;
		s->buf = b;
		s->buf_cap = cap;
	}
	do {
		s->buf[(*len)++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
		v >>= 7;
	} while (v);
	return 0;
}

static uint64_t zigzag(int64_t v)
{
	return ((uint64_t)v << 1) ^ (v < 0 ? UINT64_MAX : 0); /* no shift of a negative value */
}

static int64_t unzigzag(uint64_t v)
{
	return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}

static bool get_varint(const uint8_t **p, const uint8_t *end, uint64_t *ret)
{
	uint64_t v = 0;
	for (unsigned shift = 0; *p < end && shift < 64; shift += 7) {
		uint8_t b = *(*p)++;
		v |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80)) {
			*ret = v;
			return true;
		}
	}
	return false;
}

long store_chunk_encode(struct store *s, size_t mi, size_t *pos, uint32_t *ret_n,
			int64_t *ret_first, int64_t *ret_last, uint32_t *ret_seg)
{
	size_t len = 0;
	uint32_t n = 0;
	int64_t prev_utc = 0, prev_power = 0, prev[STORE_REG_COUNT] = {0};
	uint32_t prev_seg = 0, prev_flags = 0;
	int r = 0;
	for (; *pos < s->count && n < STORE_CHUNK_MAX && r == 0; (*pos)++) {
		const struct store_entry *e = &s->backlog[(s->head + *pos) % STORE_BACKLOG_MAX];
		if (e->meter != mi)
			continue;
		if (n == 0) {
			*ret_first = prev_utc = e->utc;
			*ret_seg = prev_seg = e->seg;
		}
		uint32_t flags = (uint32_t)e->have_power | e->have << 1, changed = 0;
		bool fl = n == 0 || flags != prev_flags, sg = e->seg != prev_seg;
		r |= put_varint(s, &len, (uint64_t)(e->utc - prev_utc) << 2 | (uint64_t)sg << 1 | fl);
		if (sg)
			r |= put_varint(s, &len, e->seg - prev_seg);
		if (fl)
			r |= put_varint(s, &len, flags);
		if (e->have_power) {
			r |= put_varint(s, &len, zigzag(e->power_w - prev_power));
			prev_power = e->power_w;
		}
		for (int k = 0; k < STORE_REG_COUNT; k++)
			if (e->have & (1u << k) && e->reg[k] != prev[k])
				changed |= 1u << k;
		r |= put_varint(s, &len, changed);
		for (int k = 0; k < STORE_REG_COUNT; k++)
			if (changed & (1u << k)) {
				r |= put_varint(s, &len, zigzag(e->reg[k] - prev[k]));
				prev[k] = e->reg[k];
			}
		prev_flags = flags;
		prev_utc = e->utc;
		prev_seg = e->seg;
		*ret_last = e->utc;
		n++;
	}
	*ret_n = n;
	return r < 0 ? r : (long)len;
}

/* Decode one chunk, calling cb for readings newer than after. Returns the number delivered,
 * the callback's non-zero value (as *stop), or -EBADMSG. */
static int decode(const uint8_t *p, size_t len, int64_t utc, uint32_t seg, int64_t after,
		  size_t max, store_reading_cb cb, void *ud, int *stop)
{
	const uint8_t *end = p + len;
	struct store_reading rd = {0};
	int64_t power = 0, prev[STORE_REG_COUNT] = {0};
	uint64_t flags = 0;
	int n = 0;
	while (p < end && (size_t)n < max) {
		uint64_t head, dseg = 0, changed, v;
		if (!get_varint(&p, end, &head) || (head & 2 && !get_varint(&p, end, &dseg)) ||
		    (head & 1 && !get_varint(&p, end, &flags)))
			return -EBADMSG;
		utc += (int64_t)(head >> 2);
		seg += (uint32_t)dseg;
		memset(&rd, 0, sizeof(rd));
		rd.utc = utc;
		rd.segment = seg;
		rd.have_power = flags & 1;
		rd.have = (uint32_t)(flags >> 1);
		if (rd.have_power) {
			if (!get_varint(&p, end, &v))
				return -EBADMSG;
			rd.power_w = power += unzigzag(v);
		}
		if (!get_varint(&p, end, &changed))
			return -EBADMSG;
		for (int k = 0; k < STORE_REG_COUNT; k++) {
			if (changed & (1u << k)) {
				if (!get_varint(&p, end, &v))
					return -EBADMSG;
				prev[k] += unzigzag(v);
			}
			rd.reg[k] = rd.have & (1u << k) ? prev[k] : 0;
		}
		if (utc <= after)
			continue;
		n++;
		if ((*stop = cb(ud, &rd)) != 0)
			break;
	}
	return n;
}

int store_chunk_scan(struct store *s, int64_t meter_id, int64_t after, size_t max,
		     store_reading_cb cb, void *ud)
{
	sqlite3_stmt *st;
	if (!s->db)
		return -EIO;
	int rc = sqlite3_prepare_v2(
		s->db,
		"SELECT first_utc, seg, data FROM chunks WHERE meter_id = ?1 AND id >= coalesce("
		"(SELECT max(id) FROM chunks WHERE meter_id = ?1 AND id <= ?2 * 64 + 63),"
		" -9223372036854775807) ORDER BY id",
		-1, &st, NULL);
	if (rc)
		return store_errno(rc);
	sqlite3_bind_int64(st, 1, meter_id);
	sqlite3_bind_int64(st, 2, after);
	int total = 0, stop = 0;
	while ((size_t)total < max && !stop && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		const uint8_t *data = sqlite3_column_blob(st, 2);
		int len = sqlite3_column_bytes(st, 2);
		int n = decode(data, (size_t)len, sqlite3_column_int64(st, 0),
			       (uint32_t)sqlite3_column_int64(st, 1), after, max - (size_t)total, cb,
			       ud, &stop);
		if (n < 0) {
			sqlite3_finalize(st);
			return n;
		}
		total += n;
	}
	if (!stop && (size_t)total < max && rc != SQLITE_DONE) {
		sqlite3_finalize(st);
		return store_errno(rc);
	}
	sqlite3_finalize(st);
	return stop ? stop : total;
}

struct since {
	store_reading_cb cb;
	void *ud;
	int64_t last; /* newest reading handed to cb */
	bool stopped; /* cb returned non-zero */
};

static int since_cb(void *ud, const struct store_reading *r)
{
	struct since *c = ud;
	c->last = r->utc;
	int stop = c->cb(c->ud, r);
	c->stopped = stop != 0;
	return stop;
}

int store_readings_since(struct store *s, const char *meter, int64_t after_utc, size_t max,
			 store_reading_cb cb, void *ud)
{
	struct store_meter tmp = {0};
	struct since c = {cb, ud, after_utc, false};
	int rc = 0, n = 0;
	if (max > STORE_QUERY_ROWS_MAX)
		max = STORE_QUERY_ROWS_MAX;
	snprintf(tmp.name, sizeof(tmp.name), "%s", meter);
	if (s->db && store_meter_id(s, &tmp, false, &rc))
		n = store_chunk_scan(s, tmp.db_id, after_utc, max, since_cb, &c);
	else if (rc)
		return store_errno(rc);
	if (n < 0 || c.stopped || (size_t)n >= max)
		return n;
	/* then the readings waiting for the next commit */
	size_t mi = 0;
	while (mi < s->n_meters && strcmp(s->meters[mi].name, meter))
		mi++;
	for (size_t i = 0; i < s->count && (size_t)n < max; i++) {
		const struct store_entry *e = &s->backlog[(s->head + i) % STORE_BACKLOG_MAX];
		if (e->meter != mi || e->utc <= c.last)
			continue;
		struct store_reading rd = {.utc = e->utc, .segment = e->seg, .have = e->have,
					   .have_power = e->have_power, .power_w = e->power_w};
		memcpy(rd.reg, e->reg, sizeof(rd.reg));
		n++;
		c.last = e->utc;
		int stop = cb(ud, &rd);
		if (stop)
			return stop;
	}
	return n;
}
