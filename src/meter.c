/* meter.c - a meter: source -> decoder -> sinks (see meter.h). Owns the source, the decoder,
 * a copy of the latest telegram, the per-reason error counters and their summary log lines.
 * Never calls a sink's internals; never blocks. */
#include "meter.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "config.h"
#include "log.h"
#include "loop.h"
#include "p1/decoder.h"
#include "p1/json.h"
#include "version.h"

/* Room for the first rendering; a DSMR 5 telegram needs about 1.7 KB. */
#define METER_JSON_START 4096u

/* One rendering of the latest telegram as JSON. */
struct json_cache {
	unsigned flags;
	uint64_t telegram; /* st.telegrams when rendered; 0: empty */
	char *buf;
	size_t cap, len;
};

struct sink {
	meter_sink_cb cb;
	meter_raw_cb raw;
	void *ud;
};

struct meter {
	char name[CONFIG_METER_NAME_MAX + 1];
	struct loop *loop;
	struct source *src;
	struct p1_decoder *dec;
	struct p1_telegram *latest;
	bool have_latest;
	const struct p1_telegram *dispatching; /* the telegram the sinks are being handed */
	struct json_cache json[2];
	bool finished;
	struct loop_timer *gap; /* cuts a frame the meter stopped sending */
	uint32_t gap_ms;        /* 0: never (files) */
	struct sink sinks[METER_SINKS_MAX];
	size_t n_sinks;
	struct meter_stats st;
	struct log_ratelimit errlog[P1_ERR_COUNT]; /* one summary per reason */
	void (*finished_cb)(void *ud, struct meter *m);
	void *finished_ud;
	enum clock_policy clock;
	struct clock_ctx clock_ctx;
	int64_t reading_utc; /* time that dates the telegram being handed to the sinks */
	bool clock_bogus;    /* the last telegram's meter time was rejected */
};

static int64_t now_utc(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec;
}

/* One line per telegram, at debug level only: "-v -v" shows the daemon at work. */
static void log_telegram(const struct meter *m, const struct p1_telegram *t)
{
	static const enum p1_field shown[] = {
	        P1_F_TIMESTAMP,   P1_F_P_DEL,    P1_F_P_RET,    P1_F_E_DEL_T1, P1_F_E_DEL_T2,
	        P1_F_E_DEL_TOTAL, P1_F_E_RET_T1, P1_F_E_RET_T2, P1_F_GAS,
	};
	char line[512], v[64];
	size_t used = 0;
	for (size_t i = 0; i < sizeof(shown) / sizeof(shown[0]); i++) {
		const struct p1_value *val = &t->fields[shown[i]];
		if (val->presence != P1_PRESENT)
			continue;
		if (shown[i] == P1_F_TIMESTAMP)
			p1_time_format(&val->time, v, sizeof(v));
		else
			p1_num_format(&val->num, v, sizeof(v));
		int n = snprintf(line + used, sizeof(line) - used, " %s=%s%s",
		                 p1_field_info(shown[i])->name, v,
		                 val->num.unit && shown[i] != P1_F_TIMESTAMP ? val->num.unit : "");
		if (n < 0 || (size_t)n >= sizeof(line) - used)
			break;
		used += (size_t)n;
	}
	log_debug("meter %s: telegram %llu:%s", m->name, (unsigned long long)m->st.telegrams,
	          used ? line : " (no known fields)");
}

static void on_result(void *ud, const struct p1_result *r)
{
	struct meter *m = ud;
	if (r->error != P1_OK) {
		m->st.errors[r->error]++;
		m->st.rejected++;
		char msg[256];
		p1_result_describe(r, msg, sizeof(msg));
		log_ratelimit(&m->errlog[r->error], loop_now_ms(), LOG_WARNING, "meter %s: %s",
		              m->name, msg);
		return;
	}
	const struct p1_telegram *t = r->telegram;
	m->st.telegrams++;
	m->st.last_telegram_ms = loop_now_ms();
	m->st.last_telegram_utc = now_utc();
	bool fallback;
	m->reading_utc = clock_reading_utc(t, m->st.last_telegram_utc, m->clock, &m->clock_ctx,
	                                   &fallback);
	if (fallback != m->clock_bogus) {
		m->clock_bogus = fallback;
		if (fallback) {
			char when[32] = "?";
			time_t u = (time_t)t->fields[P1_F_TIMESTAMP].time.utc;
			struct tm tm;
			if (gmtime_r(&u, &tm))
				strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
			log_warning("meter %s: the meter's clock says %s, dating readings with the "
			            "system clock (see clock in p1d.conf(5))",
			            m->name, when);
		}
		else
			log_notice("meter %s: the meter's clock is plausible again", m->name);
	}
	if (m->src)
		source_note_valid(m->src);
	if (p1_telegram_copy(m->latest, t))
		m->have_latest = true;
	if (log_enabled(LOG_DEBUG))
		log_telegram(m, t);
	if (m->st.telegrams == 1)
		log_notice("meter %s: first telegram (%s, %s)", m->name,
		           p1_dialect_name(t->dialect), t->has_crc ? "CRC ok" : "no CRC");
	m->dispatching = t;
	for (size_t i = 0; i < m->n_sinks; i++) {
		if (m->sinks[i].cb)
			m->sinks[i].cb(m->sinks[i].ud, m, t, m->st.last_telegram_utc);
		else if (r->frame)
			m->sinks[i].raw(m->sinks[i].ud, m, r->frame->data, r->frame->len);
	}
	m->dispatching = NULL;
}

static void on_gap(struct loop_timer *t, void *ud)
{
	(void)t;
	meter_flush(ud);
}

void meter_feed(struct meter *m, const uint8_t *buf, size_t len)
{
	p1_decoder_feed(m->dec, buf, len, on_result, m);
	if (m->gap_ms && p1_decoder_busy(m->dec))
		loop_timer_arm(m->gap, m->gap_ms, 0);
	else
		loop_timer_disarm(m->gap);
}

void meter_flush(struct meter *m)
{
	p1_decoder_flush(m->dec, on_result, m);
	loop_timer_disarm(m->gap);
}

static void on_data(void *ud, const uint8_t *buf, size_t len)
{
	meter_feed(ud, buf, len);
}

static void on_state(void *ud, enum source_state st, const char *why)
{
	struct meter *m = ud;
	(void)why;
	if (st == SOURCE_EOF) {
		meter_flush(m);
		m->finished = true;
		if (m->finished_cb)
			m->finished_cb(m->finished_ud, m);
	} else if (st != SOURCE_CONNECTED) {
		p1_decoder_reset(m->dec); /* bytes after a reopen do not continue the old frame */
		loop_timer_disarm(m->gap);
	}
}

static void source_config_from(const struct config_meter *c, struct source_config *sc)
{
	*sc = (struct source_config){.name = c->name};
	if (c->serial && *c->serial) {
		sc->kind = SOURCE_SERIAL;
		sc->path = c->serial;
	} else if (c->file && *c->file) {
		sc->kind = SOURCE_FILE;
		sc->path = c->file;
	} else {
		sc->kind = SOURCE_TCP;
	}
	sc->serial_mode = c->preset == CONFIG_PRESET_115200_8N1 ? SOURCE_SERIAL_115200_8N1
	                  : c->preset == CONFIG_PRESET_9600_7E1 ? SOURCE_SERIAL_9600_7E1
	                                                        : SOURCE_SERIAL_AUTO;
	sc->data_request = c->data_request == CONFIG_DATA_REQUEST_DTR   ? SOURCE_DATA_REQUEST_DTR
	                   : c->data_request == CONFIG_DATA_REQUEST_RTS ? SOURCE_DATA_REQUEST_RTS
	                                                                : SOURCE_DATA_REQUEST_NONE;
	sc->pace = c->pace == CONFIG_PACE_FAST ? SOURCE_PACE_FAST : SOURCE_PACE_METER;
	sc->stale_after_ms = (uint32_t)c->stale_after_ms;
	sc->backoff_max_ms = (uint32_t)c->reconnect_max_ms;
}

static int decoder_from(const struct config_meter *c, const struct p1_tz *tz,
                        struct p1_decoder **ret)
{
	struct p1_decoder_opts o;
	p1_decoder_opts_init(&o);
	o.framer.max_len = (size_t)c->max_telegram_bytes;
	o.parse.tz = *tz;
	o.parse.force_dialect = (enum p1_dialect)c->dialect;
	if (c->key.set) {
		o.have_key = true;
		memcpy(o.key, c->key.bytes, sizeof(o.key));
	}
	if (c->authentication_key.set) {
		o.have_ak = true;
		memcpy(o.ak, c->authentication_key.bytes, sizeof(o.ak));
	}
	*ret = p1_decoder_new(&o);
	memset(o.key, 0, sizeof(o.key));
	return *ret ? 0 : -ENOMEM;
}

int meter_new(struct loop *loop, const struct config_meter *cfg, const struct p1_tz *tz,
              struct meter **ret_meter)
{
	struct meter *m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	snprintf(m->name, sizeof(m->name), "%s", cfg->name);
	m->loop = loop;
	m->clock = (enum clock_policy)cfg->clock;
	m->clock_ctx.sane_after_utc = P1D_BUILD_UTC;
	for (size_t i = 0; i < P1_ERR_COUNT; i++)
		m->errlog[i] = (struct log_ratelimit)LOG_RATELIMIT_INIT(METER_ERROR_SUMMARY_MS);
	int r = decoder_from(cfg, tz, &m->dec);
	if (r == 0) {
		m->latest = p1_telegram_new((size_t)cfg->max_telegram_bytes + 16);
		r = m->latest ? 0 : -ENOMEM;
	}
	if (r == 0)
		r = loop_timer_new(loop, on_gap, m, &m->gap);
	if (r == 0 && loop) {
		struct source_config sc;
		char hostport[300];
		source_config_from(cfg, &sc);
		m->gap_ms = sc.kind == SOURCE_SERIAL ? METER_GAP_SERIAL_MS
			    : sc.kind == SOURCE_TCP  ? METER_GAP_TCP_MS
						     : 0;
		if (sc.kind == SOURCE_TCP) {
			bool v6 = cfg->tcp.host && strchr(cfg->tcp.host, ':');
			/* Flawfinder: ignore: either format is a literal (gcc checks both) */
			snprintf(hostport, sizeof(hostport), v6 ? "[%s]:%d" : "%s:%d",
			         cfg->tcp.host ? cfg->tcp.host : "", cfg->tcp.port);
			sc.path = hostport;
		}
		r = source_new(loop, &sc, on_data, on_state, m, &m->src);
	}
	if (r < 0) {
		meter_free(m);
		return r;
	}
	*ret_meter = m;
	return 0;
}

struct meter *meter_free(struct meter *m)
{
	if (!m)
		return NULL;
	for (size_t i = 0; i < P1_ERR_COUNT; i++)
		if (m->errlog[i].suppressed)
			log_ratelimit_flush(&m->errlog[i], loop_now_ms(), true);
	source_free(m->src);
	loop_timer_free(m->gap);
	p1_decoder_free(m->dec);
	p1_telegram_free(m->latest);
	for (size_t i = 0; i < 2; i++)
		free(m->json[i].buf);
	free(m);
	return NULL;
}

void meter_tick(struct meter *m)
{
	for (size_t i = 0; i < P1_ERR_COUNT; i++)
		log_ratelimit_flush(&m->errlog[i], loop_now_ms(), false);
}

static int add(struct meter *m, meter_sink_cb cb, meter_raw_cb raw, void *ud)
{
	if (m->n_sinks == METER_SINKS_MAX)
		return -ENOSPC;
	m->sinks[m->n_sinks++] = (struct sink){cb, raw, ud};
	return 0;
}

int meter_add_sink(struct meter *m, meter_sink_cb cb, void *ud)
{
	return add(m, cb, NULL, ud);
}

int meter_add_raw_sink(struct meter *m, meter_raw_cb cb, void *ud)
{
	return add(m, NULL, cb, ud);
}

const char *meter_name(const struct meter *m)
{
	return m->name;
}

void meter_get_stats(const struct meter *m, struct meter_stats *ret)
{
	*ret = m->st;
}

int64_t meter_reading_utc(const struct meter *m)
{
	return m->reading_utc;
}

const struct p1_telegram *meter_latest(const struct meter *m)
{
	return m->have_latest ? m->latest : NULL;
}

size_t meter_latest_json(struct meter *m, unsigned flags, const char **ret)
{
	const struct p1_telegram *t = m->dispatching ? m->dispatching : meter_latest(m);
	/* one slot per flag set in use: with the framing keys (event stream), without (MQTT) */
	struct json_cache *c = &m->json[!(flags & P1_JSON_FRAMING)];
	*ret = NULL;
	if (!t)
		return 0;
	if (c->telegram != m->st.telegrams || c->flags != flags) {
		c->telegram = 0;
		c->flags = flags;
		size_t n = c->buf ? p1_json_telegram(t, flags, c->buf, c->cap) : SIZE_MAX;
		while (n >= c->cap) {
			size_t want = n == SIZE_MAX ? METER_JSON_START : n + 1;
			char *b = realloc(c->buf, want);
			if (!b)
				return 0;
			c->buf = b;
			c->cap = want;
			n = p1_json_telegram(t, flags, c->buf, c->cap);
		}
		c->len = n;
		c->telegram = m->st.telegrams;
	}
	*ret = c->buf;
	return c->len;
}

const struct source *meter_source(const struct meter *m)
{
	return m->src;
}

bool meter_finished(const struct meter *m)
{
	return m->finished;
}

void meter_on_finished(struct meter *m, void (*cb)(void *ud, struct meter *m), void *ud)
{
	m->finished_cb = cb;
	m->finished_ud = ud;
}

int meter_format_status(const struct meter *m, char *buf, size_t size)
{
	if (!m->st.telegrams)
		return snprintf(buf, size, "%s: no telegram yet, %s, %llu rejected", m->name,
		                m->src ? source_state_name(source_get_state(m->src)) : "idle",
		                (unsigned long long)m->st.rejected);
	uint64_t age_s = (loop_now_ms() - m->st.last_telegram_ms) / 1000;
	return snprintf(buf, size, "%s: %llu telegrams, last %llu s ago, %llu CRC errors", m->name,
	                (unsigned long long)m->st.telegrams, (unsigned long long)age_s,
	                (unsigned long long)m->st.errors[P1_ERR_CRC]);
}
