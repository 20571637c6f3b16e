/* store_ingest.c - telegrams to readings: which time a telegram is filed under, the register
 * values in thousandths, segments (a new equipment id, a register going backwards or jumping
 * impossibly far), the differences to the previous reading summed into pending minute buckets,
 * and the bounded backlog of readings waiting for the commit. At the first telegram of a meter
 * its state is read back and the readings committed after its last written aggregates are
 * replayed into the pending minutes, so that a crash loses no energy from the aggregates.
 * Logs a new segment once, when it starts; never otherwise per telegram. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "clock.h"
#include "loop.h"
#include "meter.h"
#include "store.h"
#include "store_int.h"

/* A register step above this rate is a swap nobody announced: 1 MW of power or 1000 m3 of gas
 * an hour, in thousandths per second, over at least an hour. */
#define JUMP_MILLI_PER_S 277778

enum { REASON_FIRST, REASON_SWAP, REASON_BACKWARDS, REASON_JUMP };

struct store_meter *store_find_meter(struct store *s, const char *name, bool create)
{
	for (size_t i = 0; i < s->n_meters; i++)
		if (!strcmp(s->meters[i].name, name))
			return &s->meters[i];
	if (!create || s->n_meters == STORE_METERS_MAX || strlen(name) >= STORE_NAME_MAX)
		return NULL;
	struct store_meter *m = &s->meters[s->n_meters++];
	memset(m, 0, sizeof(*m));
	snprintf(m->name, sizeof(m->name), "%s", name);
	return m;
}

/* ---- pending minutes ------------------------------------------------------------------ */

static void merge_minute(struct store_minute *into, const struct store_minute *from)
{
	into->n += from->n;
	for (int r = 0; r < STORE_REG_COUNT; r++)
		into->sum[r] += from->sum[r];
	into->have |= from->have;
	if (from->pn) {
		into->pmin = into->pn && into->pmin < from->pmin ? into->pmin : from->pmin;
		into->pmax = into->pn && into->pmax > from->pmax ? into->pmax : from->pmax;
		into->psum += from->psum;
		into->pn += from->pn;
	}
}

static struct store_minute *minute_for(struct store *s, struct store_meter *m, int64_t utc)
{
	int64_t start, end;
	store_bucket_bounds(STORE_RES_MINUTE, &s->tz, utc, &start, &end);
	if (m->n_pend && m->pend[m->n_pend - 1].start == start)
		return &m->pend[m->n_pend - 1];
	if (m->n_pend == STORE_PENDING_MAX) {
		/* the database has been away for days: keep the energy, lose the minute */
		merge_minute(&m->pend[1], &m->pend[0]);
		memmove(m->pend, m->pend + 1, (m->n_pend - 1) * sizeof(*m->pend));
		m->n_pend--;
	}
	if (m->n_pend == m->cap_pend) {
		size_t cap = m->cap_pend ? m->cap_pend * 2 : 128;
		struct store_minute *p = realloc(m->pend, cap * sizeof(*p));
		if (!p)
			return NULL;
		m->pend = p;
		m->cap_pend = cap;
	}
	struct store_minute *b = &m->pend[m->n_pend++];
	memset(b, 0, sizeof(*b));
	b->start = start;
	return b;
}

/* Apply one reading to the meter: differences to the previous one unless it starts a
 * segment, summed into its minute. Returns -ENOMEM when the minute cannot be kept. */
static int apply(struct store *s, struct store_meter *m, int64_t utc, bool new_seg,
		 const int64_t *val, uint32_t have, bool have_power, int64_t power_w)
{
	struct store_minute *b = minute_for(s, m, utc);
	if (!b)
		return -ENOMEM;
	if (new_seg)
		m->have = 0;
	for (int r = 0; r < STORE_REG_COUNT; r++) {
		if (!(have & (1u << r)))
			continue;
		if (m->have & (1u << r)) {
			b->sum[r] += val[r] - m->reg[r];
			b->have |= 1u << r;
		}
		m->reg[r] = val[r];
	}
	m->have |= have;
	b->n++;
	if (have_power) {
		b->pmin = b->pn && b->pmin < power_w ? b->pmin : power_w;
		b->pmax = b->pn && b->pmax > power_w ? b->pmax : power_w;
		b->psum += power_w;
		b->pn++;
	}
	m->started = true;
	m->last_utc = utc;
	b->last_utc = utc;
	b->seg = m->seg;
	b->have_base = m->have;
	memcpy(b->reg, m->reg, sizeof(b->reg));
	return 0;
}

/* ---- state and replay --------------------------------------------------------------------- */

static int load_identity(struct store *s, struct store_meter *m)
{
	sqlite3_stmt *st;
	m->identity[0] = 0;
	int rc = sqlite3_prepare_v2(s->db, "SELECT identity FROM segments WHERE meter_id = ?"
				    " AND seq = ?", -1, &st, NULL);
	if (rc)
		return rc;
	sqlite3_bind_int64(st, 1, m->db_id);
	sqlite3_bind_int64(st, 2, m->seg);
	if ((rc = sqlite3_step(st)) == SQLITE_ROW)
		snprintf(m->identity, sizeof(m->identity), "%s", sqlite3_column_text(st, 0));
	sqlite3_finalize(st);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static int replay_cb(void *ud, const struct store_reading *rd)
{
	struct store *s = ((void **)ud)[0];
	struct store_meter *m = ((void **)ud)[1];
	bool new_seg = !m->started || rd->segment != m->seg;
	m->seg = rd->segment;
	return apply(s, m, rd->utc, new_seg, rd->reg, rd->have, rd->have_power, rd->power_w);
}

/* The meter's state: the reading its aggregates end at (*ret_after), when there is one. */
static int load_state(struct store *s, struct store_meter *m, int64_t *ret_after)
{
	char cols[1024], sql[1400];
	sqlite3_stmt *st;
	store_cols(cols, sizeof(cols), ", %s");
	snprintf(sql, sizeof(sql), "SELECT agg_upto, seg, have%s FROM state WHERE meter_id = ?",
		 cols);
	int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
	if (rc)
		return rc;
	sqlite3_bind_int64(st, 1, m->db_id);
	if ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		*ret_after = m->last_utc = sqlite3_column_int64(st, 0);
		m->seg = (uint32_t)sqlite3_column_int64(st, 1);
		m->have = (uint32_t)sqlite3_column_int64(st, 2);
		for (int r = 0; r < STORE_REG_COUNT; r++)
			m->reg[r] = sqlite3_column_int64(st, 3 + r);
		m->started = true;
	}
	sqlite3_finalize(st);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Memory ran out while loading: forget what was read, the next telegram loads again (going
 * on from half a state would lose the usage since the last aggregates for good). */
static int unload(struct store_meter *m)
{
	m->loaded = m->started = false;
	m->last_utc = 0;
	m->seg = m->have = 0;
	m->identity[0] = 0;
	m->n_pend = m->n_flush = 0;
	return -ENOMEM;
}

int store_load_meter(struct store *s, struct store_meter *m)
{
	int rc = SQLITE_OK;
	int64_t after = INT64_MIN;
	m->loaded = true;
	if (!s->db || !store_meter_id(s, m, false, &rc) || (rc = load_state(s, m, &after)))
		return store_errno(rc) == -ENOMEM ? unload(m) : 0;
	void *ctx[2] = {s, m};
	int r = store_chunk_scan(s, m->db_id, after, SIZE_MAX, replay_cb, ctx);
	if (r == -ENOMEM)
		return unload(m);
	if (r < 0)
		log_error("store %s: meter %s: cannot read back the readings after %" PRId64
			  " (%s); their usage is missing from the aggregates",
			  s->path, m->name, after, strerror(-r));
	if (m->started && store_errno(load_identity(s, m)) == -ENOMEM)
		return unload(m);
	return 0;
}

/* ---- telegrams ----------------------------------------------------------------------------- */

static void text_of(const struct p1_telegram *t, enum p1_field f, char *buf, size_t cap)
{
	const struct p1_value *v = &t->fields[f];
	size_t n = v->presence == P1_PRESENT ? v->text.len : 0;
	if (n >= cap)
		n = cap - 1;
	memcpy(buf, n ? v->text.ptr : "", n);
	buf[n] = 0;
}

static int64_t power_net_w(const struct p1_telegram *t, bool *ret_have)
{
	int64_t del = 0, ret = 0;
	bool hd = p1_has(t, P1_F_P_DEL) && p1_num_milli(&t->fields[P1_F_P_DEL].num, &del);
	bool hr = p1_has(t, P1_F_P_RET) && p1_num_milli(&t->fields[P1_F_P_RET].num, &ret);
	*ret_have = hd || hr;
	return (hd ? del : 0) - (hr ? ret : 0);
}

/* Why this reading starts a segment, or -1. */
static int segment_reason(const struct store_meter *m, const struct store_entry *e)
{
	if (!m->started)
		return REASON_FIRST;
	if (m->identity[0] && strcmp(m->identity, e->identity))
		return REASON_SWAP;
	int64_t span = e->utc - m->last_utc < 3600 ? 3600 : e->utc - m->last_utc;
	for (int r = 0; r < STORE_REG_COUNT; r++) {
		if (!(e->have & m->have & (1u << r)))
			continue;
		if (e->reg[r] < m->reg[r])
			return REASON_BACKWARDS;
		if ((e->reg[r] - m->reg[r]) / span > JUMP_MILLI_PER_S)
			return REASON_JUMP;
	}
	return -1;
}

/* The backlog is full: drop the oldest raw reading. Its usage is already in the pending
 * minutes; only the raw row is lost. A segment it started is kept on the next reading. */
static void drop_oldest(struct store *s)
{
	struct store_entry *old = &s->backlog[s->head];
	for (size_t i = 1; old->new_seg && i < s->count; i++) {
		struct store_entry *e = &s->backlog[(s->head + i) % STORE_BACKLOG_MAX];
		if (e->meter == old->meter) {
			if (!e->new_seg && e->seg == old->seg) {
				e->new_seg = true;
				e->reason = old->reason;
			}
			break;
		}
	}
	s->head = (s->head + 1) % STORE_BACKLOG_MAX;
	s->count--;
	s->dropped++;
	log_ratelimit(&s->drop_rl, loop_now_ms(), LOG_WARNING,
		      "store %s: backlog full (%u readings), dropping the oldest raw reading"
		      " (its usage stays in the aggregates)",
		      s->path, STORE_BACKLOG_MAX);
}

/* A reading that cannot be taken (out of memory): counted with the backlog's drops. Its usage
 * is not lost: the next reading's difference covers it. */
static int drop_reading(struct store *s, const struct store_meter *m, int r)
{
	s->dropped++;
	log_ratelimit(&s->drop_rl, loop_now_ms(), LOG_WARNING,
		      "store %s: meter %s: %s, dropping a reading (its usage is counted with the"
		      " next one)",
		      s->path, m->name, strerror(-r));
	return r;
}

int store_add(struct store *s, const char *meter, const struct p1_telegram *t,
	      int64_t received_utc)
{
	return store_add_at(s, meter, t, clock_reading_utc(t, received_utc, CLOCK_AUTO, NULL, NULL));
}

int store_add_at(struct store *s, const char *meter, const struct p1_telegram *t, int64_t utc)
{
	struct store_meter *m = store_find_meter(s, meter, true);
	int err;
	if (!m || s->read_only)
		return m ? -EROFS : -E2BIG;
	if (!m->loaded && (err = store_load_meter(s, m)) < 0)
		return drop_reading(s, m, err);
	if (m->started && utc <= m->last_utc) {
		s->ignored++;
		return 0;
	}
	/* room in the reading's minute first: nothing below fails, a reading is taken whole (its
	 * segment, its minute, its backlog entry) or not at all */
	if (!minute_for(s, m, utc))
		return drop_reading(s, m, -ENOMEM);
	if (s->count == STORE_BACKLOG_MAX)
		drop_oldest(s);
	struct store_entry *e = &s->backlog[(s->head + s->count) % STORE_BACKLOG_MAX];
	memset(e, 0, sizeof(*e));
	e->meter = (uint8_t)(m - s->meters);
	e->utc = utc;
	char eq[48], gas[48];
	text_of(t, P1_F_EQUIPMENT_ID, eq, sizeof(eq));
	text_of(t, P1_F_GAS_ID, gas, sizeof(gas));
	snprintf(e->identity, sizeof(e->identity), "%s/%s", eq, gas);
	for (int r = 0; r < STORE_REG_COUNT; r++) {
		enum p1_field f = store_reg_field(r);
		if (p1_has(t, f) && p1_num_milli(&t->fields[f].num, &e->reg[r]))
			e->have |= 1u << r;
	}
	e->power_w = power_net_w(t, &e->have_power);
	int reason = segment_reason(m, e);
	if (reason >= 0) {
		e->new_seg = true;
		e->reason = (uint8_t)reason;
		if (reason != REASON_FIRST) {
			m->seg++;
			s->segments++;
			log_warning("meter %s: %s, starting history segment %" PRIu32
				    " (no usage is counted across it)",
				    m->name, store_reason_name[reason], m->seg);
		}
	}
	e->seg = m->seg;
	int r = apply(s, m, utc, e->new_seg, e->reg, e->have, e->have_power, e->power_w);
	if (r < 0)
		return r;
	snprintf(m->identity, sizeof(m->identity), "%s", e->identity);
	s->count++;
	s->queued++;
	if (s->count >= STORE_BATCH_MAX && s->healthy)
		store_commit(s);
	return 1;
}

void store_sink(void *ud, struct meter *m, const struct p1_telegram *t, int64_t received_utc)
{
	(void)received_utc;
	store_add_at(ud, meter_name(m), t, meter_reading_utc(m));
}
