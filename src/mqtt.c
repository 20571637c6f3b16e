/* mqtt.c - the MQTT sink (see mqtt.h): one libmosquitto client driven by p1d's loop.
 *
 * libmosquitto never gets a thread or a blocking call: its socket is watched by our epoll
 * (EPOLLIN always, EPOLLOUT while it wants to write, decided in a before-sleep hook), its
 * housekeeping (keep-alive) runs from a timer, and a lost connection is retried from a timer
 * with exponential backoff. The mosquitto object is created for each connection attempt and
 * destroyed with the connection, so libmosquitto never keeps messages of its own across an
 * outage: the outbox (mqtt_queue.c) is the one place that knows what the broker has not
 * acknowledged. libmosquitto's callbacks only record what happened; teardown happens after the
 * library call returned. Called by main (new/attach/free) and by the meters (telegrams). */
#include "mqtt.h"

#include <errno.h>
#include <mosquitto.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "loop.h"
#include "meter.h"
#include "mqtt_discovery.h"
#include "mqtt_queue.h"
#include "p1/json.h"
#include "version.h"

enum state { S_IDLE, S_CONNECTING, S_CONNECTED };

/* Readings of a gap read from the history ahead of publishing, MQTT_BACKFILL_BATCH at a time,
 * so that the history is queried (and its chunks decoded) once per batch, not per message:
 * all after gap_after, oldest first. Dropped when the connection is lost (gap_after goes
 * back then). */
struct bf_item {
	int64_t utc;
	size_t off, len; /* in text */
};

struct bf_batch {
	char *text;
	size_t text_len, text_cap;
	struct bf_item *items;
	size_t n, next, cap;
	bool past_gap;    /* the history went on past the gap */
	int64_t complete; /* the history holds every reading up to this time */
};

struct mqtt_meter {
	struct mqtt *q;
	unsigned idx;
	char name[CONFIG_METER_NAME_MAX + 1];
	char node[256];
	struct meter *m;
	uint64_t seen[2];      /* fields this meter has sent (bit per enum p1_field) */
	uint64_t announced[2]; /* fields whose discovery config went out on this connection */
	bool published_once;
	uint64_t last_publish_ms;
	/* per-field topics: when they last went out, and whether newer values wait for
	 * fields_timer (MQTT_FIELDS_MIN_MS) */
	uint64_t fields_ms;
	bool fields_due;
	struct loop_timer *fields_timer;
	/* readings the outbox dropped, to be sent from the history: (gap_after, gap_to] */
	int64_t gap_after, gap_to; /* gap_to 0: no gap */
	uint64_t gap_dropped, gap_acked;
	uint64_t gap_wait_until_ms; /* the history had nothing new: ask again from then */
	struct bf_batch batch;
};

/* A reading from the history handed to libmosquitto, not yet acknowledged. */
struct bf_inflight {
	int mid;
	unsigned meter;
	int64_t utc;
};

struct mqtt {
	struct loop *loop;
	/* settings, copied */
	char *host, *client_id, *username, *password, *base, *prefix, *ca, *cert, *key;
	int port, qos, keepalive_s;
	bool retain, tls, insecure, discovery, dsmr_reader;
	uint64_t interval_ms;
	char status_topic[MQTT_TOPIC_MAX], ha_status_topic[MQTT_TOPIC_MAX];

	struct mosquitto *mosq; /* NULL between connections */
	enum state state;
	struct loop_watch *watch;
	int watch_fd;
	struct loop_timer *retry; /* next attempt, or the connect timeout while connecting */
	struct loop_timer *misc;
	struct loop_timer *again; /* armed for "now": more backfill to send */
	struct loop_hook *hook;
	bool lost;              /* set by callbacks: tear down after the library call */
	int connack_rc;         /* CONNACK refusal, 0: none */
	bool stalled;           /* acknowledgements stopped coming */
	int disconnect_rc;      /* what libmosquitto's disconnect callback said */
	uint64_t last_in_ms;    /* when the broker last sent something */
	uint64_t busy_since_ms; /* when something became unacknowledged after nothing was */
	uint64_t backoff_ms;
	uint32_t rnd;
	bool was_connected;     /* connected at least once */
	bool lib_init;          /* mosquitto_lib_init() was called */
	struct log_ratelimit rl_fail, rl_drop;

	struct mqtt_queue *outbox;
	size_t backlog; /* QoS > 0 messages outside the outbox not yet acknowledged */
	mqtt_backfill_cb backfill;
	void *backfill_ud;
	struct bf_inflight bf[MQTT_INFLIGHT_MAX];
	size_t n_bf;
	int last_errno; /* errno of the last failed connection, for the backoff */
	struct mqtt_meter *meters[CONFIG_METERS_MAX];
	size_t n_meters;
	struct mqtt_stats st;
};

uint64_t mqtt_backoff_next(uint64_t *base_ms, uint32_t rnd)
{
	uint64_t b = *base_ms ? *base_ms * 2 : MQTT_BACKOFF_MIN_MS;
	if (b > MQTT_BACKOFF_MAX_MS)
		b = MQTT_BACKOFF_MAX_MS;
	if (b < MQTT_BACKOFF_MIN_MS)
		b = MQTT_BACKOFF_MIN_MS;
	*base_ms = b;
	return b - b * (rnd % 21u) / 100u;
}

static uint32_t next_rnd(struct mqtt *q)
{
	uint32_t x = q->rnd; /* xorshift32: jitter only, not security */
	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	return q->rnd = x;
}

static bool bit_get(const uint64_t *set, unsigned f)
{
	return set[f / 64] >> (f % 64) & 1u;
}

static void bit_set(uint64_t *set, unsigned f)
{
	set[f / 64] |= (uint64_t)1 << (f % 64);
}

/* ---- publishing ---- */

static bool outstanding(const struct mqtt *q)
{
	struct mqtt_queue_stats qs;
	mqtt_queue_get_stats(q->outbox, &qs);
	return qs.inflight || q->backlog;
}

/* Before a publish: start the clock of the stall check when nothing was outstanding. */
static void note_busy(struct mqtt *q)
{
	if (q->qos > 0 && !outstanding(q))
		q->busy_since_ms = loop_now_ms();
}

/* A message outside the outbox. Counts QoS > 0 messages until their acknowledgement. */
static int publish(struct mqtt *q, const char *topic, const char *payload, size_t len, bool retain)
{
	if (q->state != S_CONNECTED)
		return -ENOTCONN;
	note_busy(q);
	int rc = mosquitto_publish(q->mosq, NULL, topic, (int)len, payload, q->qos, retain);
	if (rc != MOSQ_ERR_SUCCESS) {
		q->lost = true;
		return -EIO;
	}
	q->st.published++;
	if (q->qos > 0)
		q->backlog++;
	return 0;
}

static void publish_discovery(struct mqtt_meter *mm, bool all)
{
	struct mqtt *q = mm->q;
	char topic[MQTT_TOPIC_MAX], cfg[4096];
	struct mqtt_device d = {q->base, mm->name, mm->node, P1D_VERSION};
	const struct p1_telegram *latest = meter_latest(mm->m);
	if (!q->discovery || !latest)
		return;
	for (unsigned f = 0; f < P1_FIELD_COUNT; f++) {
		if (!bit_get(mm->seen, f) || (!all && bit_get(mm->announced, f)) ||
		    !mqtt_discoverable((enum p1_field)f))
			continue;
		mqtt_discovery_topic(q->prefix, mm->node, (enum p1_field)f, topic, sizeof(topic));
		size_t n = mqtt_discovery_config(&d, latest, (enum p1_field)f, cfg, sizeof(cfg));
		if (n >= sizeof(cfg) || publish(q, topic, cfg, n, true) < 0)
			continue;
		bit_set(mm->announced, f);
	}
}

static void publish_fields(struct mqtt_meter *mm)
{
	struct mqtt *q = mm->q;
	const struct p1_telegram *t = meter_latest(mm->m);
	char topic[MQTT_TOPIC_MAX], val[4096];
	mm->fields_ms = loop_now_ms();
	mm->fields_due = false;
	loop_timer_disarm(mm->fields_timer);
	if (!t || q->state != S_CONNECTED)
		return;
	for (unsigned f = 0; f < P1_FIELD_COUNT; f++) {
		size_t n = mqtt_field_payload(t, (enum p1_field)f, val, sizeof(val));
		if (!n || n >= sizeof(val))
			continue;
		if (q->backlog >= MQTT_BACKLOG_MAX) {
			q->st.skipped++;
			continue;
		}
		snprintf(topic, sizeof(topic), "%s/%s/%s", q->base, mm->name,
			 p1_field_info((enum p1_field)f)->name);
		publish(q, topic, val, n, q->retain);
		const char *dt = q->dsmr_reader ? mqtt_dsmr_reader_topic((enum p1_field)f) : NULL;
		if (dt) {
			n = mqtt_dsmr_reader_payload(t, (enum p1_field)f, val, sizeof(val));
			publish(q, dt, val, n, q->retain);
		}
	}
}

static size_t inflight(const struct mqtt *q)
{
	struct mqtt_queue_stats qs;
	mqtt_queue_get_stats(q->outbox, &qs);
	return qs.inflight + q->n_bf;
}

/* Hands one reading from the history to libmosquitto. False when that failed. */
static bool bf_publish(struct mqtt *q, struct mqtt_meter *mm, int64_t utc, const char *json,
		       size_t len)
{
	char topic[MQTT_TOPIC_MAX];
	snprintf(topic, sizeof(topic), "%s/%s/state", q->base, mm->name);
	int mid = 0;
	note_busy(q);
	if (mosquitto_publish(q->mosq, &mid, topic, (int)len, json, q->qos, false) !=
	    MOSQ_ERR_SUCCESS) {
		q->lost = true;
		return false;
	}
	q->st.published++;
	mm->gap_after = utc;
	if (q->qos == 0) {
		mm->gap_acked++;
		q->st.backfilled++;
	} else {
		q->bf[q->n_bf++] = (struct bf_inflight){mid, mm->idx, utc};
	}
	return true;
}

static void batch_reset(struct bf_batch *b, bool release)
{
	if (release) {
		free(b->text);
		free(b->items);
		*b = (struct bf_batch){0};
	}
	b->text_len = b->n = b->next = 0;
	b->past_gap = false;
}

/* The history's emit callback: keeps the readings of the gap in the batch. */
static int bf_collect(void *ctx, int64_t utc, const char *json, size_t len)
{
	struct mqtt_meter *mm = ctx;
	struct bf_batch *b = &mm->batch;
	if (utc > mm->gap_to) {
		b->past_gap = true;
		return 1;
	}
	if (b->n == b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 64;
		void *p = realloc(b->items, cap * sizeof(*b->items));
		if (!p)
			return -ENOMEM;
		b->items = p;
		b->cap = cap;
	}
	if (b->text_len + len > b->text_cap) {
		size_t cap = (b->text_len + len) * 2;
		char *p = realloc(b->text, cap);
		if (!p)
			return -ENOMEM;
		b->text = p;
		b->text_cap = cap;
	}
	memcpy(b->text + b->text_len, json, len);
	b->items[b->n++] = (struct bf_item){utc, b->text_len, len};
	b->text_len += len;
	return 0;
}

static bool bf_pending(const struct mqtt *q, unsigned meter)
{
	for (size_t i = 0; i < q->n_bf; i++)
		if (q->bf[i].meter == meter)
			return true;
	return false;
}

/* The gap is filled (or the history cannot fill more of it). */
static void gap_done(struct mqtt *q, struct mqtt_meter *mm)
{
	uint64_t lost = mm->gap_dropped > mm->gap_acked ? mm->gap_dropped - mm->gap_acked : 0;
	q->st.dropped += lost;
	if (lost)
		log_warning("mqtt: meter %s: sent %llu readings of the outage from the history; %llu "
			    "were not in it and are lost",
			    mm->name, (unsigned long long)mm->gap_acked, (unsigned long long)lost);
	else
		log_notice("mqtt: meter %s: sent %llu readings of the outage from the history",
			   mm->name, (unsigned long long)mm->gap_acked);
	mm->gap_to = mm->gap_after = 0;
	mm->gap_dropped = mm->gap_acked = 0;
}

/* Sends the meter's gap from the history while the in-flight window has room, reading it
 * MQTT_BACKFILL_BATCH readings at a time, and at most that many per call: with QoS 0 nothing
 * is in flight, and the loop must get to its other work (the next call comes from the
 * before-sleep hook, and q->again keeps the loop from sleeping meanwhile). */
static void pump_backfill(struct mqtt *q, struct mqtt_meter *mm)
{
	uint64_t now = loop_now_ms();
	struct bf_batch *b = &mm->batch;
	size_t budget = MQTT_BACKFILL_BATCH;
	while (mm->gap_to && q->state == S_CONNECTED && !q->lost &&
	       inflight(q) < MQTT_INFLIGHT_MAX && now >= mm->gap_wait_until_ms) {
		if (b->next < b->n) {
			if (!budget--) {
				loop_timer_arm(q->again, 0, 0);
				return;
			}
			const struct bf_item *it = &b->items[b->next++];
			bf_publish(q, mm, it->utc, b->text + it->off, it->len);
			continue;
		}
		batch_reset(b, false);
		int n = q->backfill(q->backfill_ud, mm->name, mm->gap_after, MQTT_BACKFILL_BATCH,
				    bf_collect, mm, &b->complete);
		if (n < 0) {
			batch_reset(b, false);
			log_ratelimit(&q->rl_drop, now, LOG_WARNING,
				      "mqtt: meter %s: cannot read the outage back from the history: "
				      "%s",
				      mm->name, strerror(-n));
			mm->gap_wait_until_ms = now + MQTT_BACKFILL_WAIT_MS;
			return;
		}
		if (b->n)
			continue;
		if (b->past_gap || b->complete >= mm->gap_to) {
			if (!bf_pending(q, mm->idx)) {
				gap_done(q, mm);
				batch_reset(b, true);
			} else { /* all sent: look again once the last acknowledgements are in */
				mm->gap_wait_until_ms = now + MQTT_BACKFILL_ACK_WAIT_MS;
			}
		} else {
			mm->gap_wait_until_ms = now + MQTT_BACKFILL_WAIT_MS; /* not in the store yet */
		}
		return;
	}
}

/* The outbox dropped a reading: with a history, it becomes part of the meter's gap. */
static void on_outbox_drop(void *ud, unsigned meter, int64_t utc)
{
	struct mqtt *q = ud;
	struct mqtt_meter *mm = q->meters[meter];
	if (!q->backfill) {
		q->st.dropped++;
		return;
	}
	if (!mm->gap_to)
		mm->gap_after = utc - 1;
	if (utc > mm->gap_to)
		mm->gap_to = utc;
	mm->gap_dropped++;
}

/* Hands pending state messages to libmosquitto, at most MQTT_INFLIGHT_MAX at a time: the
 * readings of a gap from the history first (they are older), then the outbox. */
static void pump(struct mqtt *q)
{
	bool gaps = false;
	for (size_t i = 0; q->backfill && i < q->n_meters; i++) {
		pump_backfill(q, q->meters[i]);
		gaps |= q->meters[i]->gap_to != 0;
	}
	if (gaps)
		return;
	struct mqtt_queue_stats qs;
	char topic[MQTT_TOPIC_MAX];
	unsigned idx;
	const char *payload;
	size_t len;
	int64_t utc;
	bool last;
	for (;;) {
		mqtt_queue_get_stats(q->outbox, &qs);
		if (q->state != S_CONNECTED || q->lost || qs.inflight + q->n_bf >= MQTT_INFLIGHT_MAX ||
		    !mqtt_queue_peek(q->outbox, &idx, &payload, &len, &utc, &last))
			return;
		snprintf(topic, sizeof(topic), "%s/%s/state", q->base, q->meters[idx]->name);
		int mid = 0;
		note_busy(q);
		int rc = mosquitto_publish(q->mosq, &mid, topic, (int)len, payload, q->qos,
					   q->retain && last);
		if (rc != MOSQ_ERR_SUCCESS) {
			q->lost = true;
			return;
		}
		q->st.published++;
		mqtt_queue_sent(q->outbox, mid);
		if (q->qos == 0 && mqtt_queue_ack(q->outbox, mid, &utc)) {
			q->st.delivered++;
			q->st.last_acked_utc = utc;
		}
	}
}

/* ---- libmosquitto callbacks: record, publish; never tear down here ---- */

static void on_connect(struct mosquitto *mosq, void *ud, int rc)
{
	struct mqtt *q = ud;
	(void)mosq;
	if (rc != 0) {
		q->connack_rc = rc;
		q->lost = true;
		return;
	}
	q->state = S_CONNECTED;
	q->last_in_ms = loop_now_ms();
	q->backoff_ms = 0;
	q->was_connected = true;
	q->st.connects++;
	loop_timer_disarm(q->retry);
	struct mqtt_stats st;
	mqtt_get_stats(q, &st);
	if (st.waiting)
		log_notice("mqtt: connected to %s:%d, delivering %llu readings kept while "
			   "disconnected (%llu dropped so far)",
			   q->host, q->port, (unsigned long long)st.waiting,
			   (unsigned long long)st.dropped);
	else
		log_notice("mqtt: connected to %s:%d", q->host, q->port);
	log_ratelimit_flush(&q->rl_drop, loop_now_ms(), true);
	publish(q, q->status_topic, "online", 6, true);
	if (q->discovery)
		mosquitto_subscribe(q->mosq, NULL, q->ha_status_topic, 0);
	for (size_t i = 0; i < q->n_meters; i++) {
		struct mqtt_meter *mm = q->meters[i];
		memset(mm->announced, 0, sizeof(mm->announced));
		publish_discovery(mm, true);
		publish_fields(mm);
	}
	pump(q);
}

static void on_disconnect(struct mosquitto *mosq, void *ud, int rc)
{
	struct mqtt *q = ud;
	(void)mosq;
	q->disconnect_rc = rc;
	q->lost = true;
}

static void on_publish(struct mosquitto *mosq, void *ud, int mid)
{
	struct mqtt *q = ud;
	int64_t utc;
	(void)mosq;
	if (mqtt_queue_ack(q->outbox, mid, &utc)) {
		q->st.delivered++;
		q->st.last_acked_utc = utc;
		return;
	}
	for (size_t i = 0; i < q->n_bf; i++) {
		if (q->bf[i].mid != mid)
			continue;
		struct mqtt_meter *mm = q->meters[q->bf[i].meter];
		mm->gap_acked++;
		q->st.backfilled++;
		q->bf[i] = q->bf[--q->n_bf];
		return;
	}
	if (q->backlog)
		q->backlog--;
}

/* Home Assistant announces itself on <prefix>/status: send the configs again. Retained
 * copies (delivered on every subscribe) are ignored: the configs just went out. */
static void on_message(struct mosquitto *mosq, void *ud, const struct mosquitto_message *msg)
{
	struct mqtt *q = ud;
	(void)mosq;
	if (msg->retain || strcmp(msg->topic, q->ha_status_topic) || msg->payloadlen != 6 ||
	    memcmp(msg->payload, "online", 6))
		return;
	log_info("mqtt: Home Assistant is online, sending discovery again");
	for (size_t i = 0; i < q->n_meters; i++)
		publish_discovery(q->meters[i], true);
}

/* ---- connection ---- */

static void on_io(struct loop_watch *w, int fd, uint32_t events, void *ud);

static void client_destroy(struct mqtt *q)
{
	q->watch = loop_watch_remove(q->watch);
	q->watch_fd = -1;
	if (q->mosq)
		mosquitto_destroy(q->mosq);
	q->mosq = NULL;
	q->state = S_IDLE;
	loop_timer_disarm(q->misc);
}

static int client_create(struct mqtt *q)
{
	struct mosquitto *m = mosquitto_new(q->client_id, true, q);
	const char *what = NULL;
	int rc;
	if (!m)
		return -ENOMEM;
	mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
	mosquitto_max_inflight_messages_set(m, 100);
	if ((rc = mosquitto_will_set(m, q->status_topic, 7, "offline", q->qos, true)))
		what = "will";
	else if (*q->username &&
		 (rc = mosquitto_username_pw_set(m, q->username, *q->password ? q->password : NULL)))
		what = "username";
	else if (q->tls) {
		const char *files[][2] = {{"ca_file", q->ca}, {"cert_file", q->cert}, {"key_file", q->key}};
		for (size_t i = 0; i < 3; i++)
			/* Flawfinder: ignore: a clear error now; libmosquitto opens the files */
			if (*files[i][1] && access(files[i][1], R_OK) < 0) {
				log_error("mqtt: cannot read %s %s: %m", files[i][0], files[i][1]);
				mosquitto_destroy(m);
				return -EINVAL;
			}
		if (!*q->ca)
			mosquitto_int_option(m, MOSQ_OPT_TLS_USE_OS_CERTS, 1);
		if ((rc = mosquitto_tls_set(m, *q->ca ? q->ca : NULL, NULL, *q->cert ? q->cert : NULL,
					    *q->key ? q->key : NULL, NULL)))
			what = "tls (ca_file, cert_file, key_file)";
		else if ((rc = mosquitto_tls_insecure_set(m, q->insecure)))
			what = "tls_insecure";
	}
	if (what) {
		log_error("mqtt: libmosquitto refuses the %s setting: %s", what, mosquitto_strerror(rc));
		mosquitto_destroy(m);
		return -EINVAL;
	}
	mosquitto_connect_callback_set(m, on_connect);
	mosquitto_disconnect_callback_set(m, on_disconnect);
	mosquitto_publish_callback_set(m, on_publish);
	mosquitto_message_callback_set(m, on_message);
	q->mosq = m;
	return 0;
}

/* Keeps the epoll watch on libmosquitto's current socket, with EPOLLOUT while it wants to
 * write. libmosquitto may close and reopen its socket inside any call. */
static void sync_watch(struct mqtt *q)
{
	int fd = q->mosq ? mosquitto_socket(q->mosq) : -1;
	if (fd != q->watch_fd) {
		q->watch = loop_watch_remove(q->watch);
		q->watch_fd = -1;
	}
	if (fd < 0)
		return;
	uint32_t ev = EPOLLIN | (mosquitto_want_write(q->mosq) ? EPOLLOUT : 0);
	if (!q->watch) {
		if (loop_watch_add(q->loop, fd, ev, on_io, q, &q->watch) == 0)
			q->watch_fd = fd;
		else
			q->lost = true;
	} else if (loop_watch_events(q->watch) != ev) {
		loop_watch_modify(q->watch, ev);
	}
}

static void schedule_retry(struct mqtt *q)
{
	uint64_t delay = mqtt_backoff_next(&q->backoff_ms, next_rnd(q));
	if (q->last_errno == ECONNREFUSED && delay > MQTT_BACKOFF_REFUSED_MS) {
		q->backoff_ms = MQTT_BACKOFF_REFUSED_MS; /* nobody listens yet: ask again soon */
		delay = MQTT_BACKOFF_REFUSED_MS - MQTT_BACKOFF_REFUSED_MS * (next_rnd(q) % 21u) / 100u;
	}
	loop_timer_arm(q->retry, delay, 0);
}

/* Why the connection failed, for the log. */
static void failure_reason(struct mqtt *q, int rc, int err, char *buf, size_t len)
{
	if (rc == MOSQ_ERR_SUCCESS)
		rc = q->disconnect_rc;
	if (q->stalled) {
		snprintf(buf, len, "no acknowledgement for %d s", q->keepalive_s);
	} else if (q->connack_rc) {
		const char *hint = q->connack_rc == 4 || q->connack_rc == 5
					   ? " (check username and password)"
					   : "";
		snprintf(buf, len, "refused by the broker: %s%s",
			 mosquitto_connack_string(q->connack_rc), hint);
	} else if (rc == MOSQ_ERR_ERRNO && err) {
		snprintf(buf, len, "%s", strerror(err));
	} else if (rc == MOSQ_ERR_TLS) {
		snprintf(buf, len, "TLS handshake failed (check ca_file and the broker's name)");
	} else if (rc == MOSQ_ERR_KEEPALIVE) {
		snprintf(buf, len, "no answer within the keep-alive period (%d s)", q->keepalive_s);
	} else if (rc == MOSQ_ERR_SUCCESS || rc == MOSQ_ERR_CONN_LOST) {
		snprintf(buf, len, "connection closed");
	} else {
		snprintf(buf, len, "%s", mosquitto_strerror(rc));
	}
	size_t n = strlen(buf); /* libmosquitto's texts end in '.'; ours go on */
	if (n && buf[n - 1] == '.')
		buf[n - 1] = 0;
}

static void connection_failed(struct mqtt *q, int rc, int err)
{
	char why[200];
	failure_reason(q, rc, err, why, sizeof(why));
	bool was = q->state == S_CONNECTED;
	client_destroy(q);
	mqtt_queue_requeue(q->outbox);
	for (size_t i = 0; i < q->n_bf; i++) { /* sent again from the oldest unacknowledged */
		struct mqtt_meter *mm = q->meters[q->bf[i].meter];
		if (q->bf[i].utc - 1 < mm->gap_after)
			mm->gap_after = q->bf[i].utc - 1;
	}
	for (size_t i = 0; i < q->n_meters; i++) /* read again from the new gap_after */
		batch_reset(&q->meters[i]->batch, false);
	q->n_bf = 0;
	q->backlog = 0;
	q->last_errno = rc == MOSQ_ERR_ERRNO ? err : 0;
	q->lost = false;
	q->stalled = false;
	q->connack_rc = 0;
	q->disconnect_rc = 0;
	q->st.connected = false;
	schedule_retry(q);
	uint64_t delay_s = (loop_timer_deadline_ms(q->retry) - loop_now_ms() + 999) / 1000;
	if (was) {
		log_warning("mqtt: lost the connection to %s:%d: %s, reconnecting in %llu s; readings "
			    "are kept for later",
			    q->host, q->port, why, (unsigned long long)delay_s);
		q->rl_fail.last_written_ms = 0; /* the next failure is news again */
		q->rl_fail.started = false;
	} else {
		log_ratelimit(&q->rl_fail, loop_now_ms(), LOG_WARNING,
			      "mqtt: cannot connect to %s:%d: %s, retrying with backoff (up to %u s)",
			      q->host, q->port, why, MQTT_BACKOFF_MAX_MS / 1000);
	}
}

/* After every libmosquitto call: a failure or a lost connection tears the client down. */
static void after_call(struct mqtt *q, int rc, int err)
{
	if (rc != MOSQ_ERR_SUCCESS || q->lost)
		connection_failed(q, rc, err);
	else
		q->st.connected = q->state == S_CONNECTED;
}

static void on_io(struct loop_watch *w, int fd, uint32_t events, void *ud)
{
	struct mqtt *q = ud;
	int rc = MOSQ_ERR_SUCCESS;
	(void)w;
	(void)fd;
	errno = 0;
	if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
		rc = mosquitto_loop_read(q->mosq, 1);
		q->last_in_ms = loop_now_ms();
	}
	if (rc == MOSQ_ERR_SUCCESS && !q->lost && q->mosq && (events & EPOLLOUT))
		rc = mosquitto_loop_write(q->mosq, 1);
	after_call(q, rc, errno);
}

static void on_again(struct loop_timer *t, void *ud)
{
	(void)t;
	(void)ud; /* the before-sleep hook pumps; this only kept the loop from sleeping */
}

static void on_misc(struct loop_timer *t, void *ud)
{
	struct mqtt *q = ud;
	(void)t;
	if (!q->mosq)
		return;
	/* libmosquitto only notices a silent broker after up to two keep-alive periods (its ping
	 * waits for a quiet outgoing side, which a publishing client never has); messages that
	 * stay unacknowledged for one period say it sooner. */
	uint64_t now = loop_now_ms(), since = q->last_in_ms > q->busy_since_ms ? q->last_in_ms
									      : q->busy_since_ms;
	if (q->state == S_CONNECTED && outstanding(q) &&
	    now - since > (uint64_t)q->keepalive_s * 1000u) {
		q->stalled = true;
		q->lost = true;
	}
	errno = 0;
	after_call(q, q->lost ? MOSQ_ERR_SUCCESS : mosquitto_loop_misc(q->mosq), errno);
}

/* The retry timer: start a connection; while connecting, it is the connect timeout. */
static void on_retry(struct loop_timer *t, void *ud)
{
	struct mqtt *q = ud;
	(void)t;
	if (q->state == S_CONNECTING) {
		log_ratelimit(&q->rl_fail, loop_now_ms(), LOG_WARNING,
			      "mqtt: %s:%d did not answer within %u s, retrying", q->host, q->port,
			      MQTT_CONNECT_TIMEOUT_MS / 1000);
		client_destroy(q);
		schedule_retry(q);
		return;
	}
	if (!q->mosq && client_create(q) < 0) {
		schedule_retry(q);
		return;
	}
	errno = 0;
	int rc = mosquitto_connect_async(q->mosq, q->host, q->port, q->keepalive_s);
	if (rc != MOSQ_ERR_SUCCESS) {
		after_call(q, rc, errno);
		return;
	}
	q->state = S_CONNECTING;
	loop_timer_arm(q->retry, MQTT_CONNECT_TIMEOUT_MS, 0);
	loop_timer_arm(q->misc, MQTT_MISC_INTERVAL_MS, MQTT_MISC_INTERVAL_MS);
	sync_watch(q);
}

/* Before the loop sleeps: tear down what broke, send what waits, ask for EPOLLOUT as needed. */
static void on_before_sleep(struct loop *l, void *ud)
{
	struct mqtt *q = ud;
	(void)l;
	if (q->lost && q->mosq) {
		connection_failed(q, MOSQ_ERR_SUCCESS, 0);
		return;
	}
	pump(q);
	if (q->lost && q->mosq) {
		connection_failed(q, MOSQ_ERR_SUCCESS, 0);
		return;
	}
	sync_watch(q);
}

/* ---- the sink ---- */

/* Per-field topics are latest-value topics: they go out at most every MQTT_FIELDS_MIN_MS per
 * meter. A meter sends a telegram a second at most, so live every telegram's values go out at
 * once; a file replayed as fast as it reads gets the newest values every MQTT_FIELDS_MIN_MS
 * (and the last ones when it ends) instead of some 40 messages per telegram. */
static void fields_after_telegram(struct mqtt_meter *mm)
{
	uint64_t now = loop_now_ms();
	if (mm->fields_due)
		return;
	if (!mm->fields_ms || now - mm->fields_ms >= MQTT_FIELDS_MIN_MS) {
		publish_fields(mm);
		return;
	}
	mm->fields_due = true;
	loop_timer_arm(mm->fields_timer, mm->fields_ms + MQTT_FIELDS_MIN_MS - now, 0);
}

static void on_fields_timer(struct loop_timer *t, void *ud)
{
	struct mqtt_meter *mm = ud;
	(void)t;
	if (mm->fields_due)
		publish_fields(mm);
}

static void on_telegram(void *ud, struct meter *m, const struct p1_telegram *t, int64_t received_utc)
{
	struct mqtt_meter *mm = ud;
	struct mqtt *q = mm->q;
	struct mqtt_queue_stats before, after;
	uint64_t now = loop_now_ms();
	bool new_fields = false;
	(void)received_utc;
	for (unsigned f = 0; f < P1_FIELD_COUNT; f++)
		if (t->fields[f].presence != P1_ABSENT && !bit_get(mm->seen, f)) {
			bit_set(mm->seen, f);
			new_fields = true;
		}
	if (!mqtt_throttle_due(!mm->published_once, mm->last_publish_ms, now, q->interval_ms))
		return;
	mm->published_once = true;
	mm->last_publish_ms = now;

	const char *json;
	size_t n = meter_latest_json(m, P1_JSON_ALL & ~(unsigned)P1_JSON_FRAMING, &json);
	int r = n ? 0 : -ENOMEM; /* no JSON during the callback: out of memory */
	mqtt_queue_get_stats(q->outbox, &before);
	if (r == 0)
		r = mqtt_queue_push(q->outbox, mm->idx, meter_reading_utc(m), json, n);
	mqtt_queue_get_stats(q->outbox, &after);
	if (r < 0) { /* lost like a reading the full outbox drops (with a store: sent later) */
		on_outbox_drop(q, mm->idx, meter_reading_utc(m));
		log_ratelimit(&q->rl_drop, now, LOG_WARNING,
			      "mqtt: meter %s: cannot queue a state message (%s), %s", mm->name,
			      strerror(-r),
			      q->backfill ? "it will be sent from the history" : "dropped");
	} else {
		q->st.queued++;
	}
	if (after.dropped != before.dropped && q->backfill)
		log_ratelimit(&q->rl_drop, now, LOG_NOTICE,
			      "mqtt: %zu readings wait in memory; older ones will be sent from the "
			      "history",
			      after.entries);
	else if (after.dropped != before.dropped)
		log_ratelimit(&q->rl_drop, now, LOG_WARNING,
			      "mqtt: outbox full (%zu readings), dropping the oldest; %llu dropped "
			      "so far",
			      after.entries, (unsigned long long)after.dropped);
	if (q->state != S_CONNECTED)
		return;
	if (new_fields)
		publish_discovery(mm, false);
	fields_after_telegram(mm);
	pump(q);
}

int mqtt_attach(struct mqtt *q, struct meter *m)
{
	if (q->n_meters == CONFIG_METERS_MAX)
		return -E2BIG;
	struct mqtt_meter *mm = calloc(1, sizeof(*mm));
	if (!mm)
		return -ENOMEM;
	mm->q = q;
	mm->m = m;
	mm->idx = (unsigned)q->n_meters;
	snprintf(mm->name, sizeof(mm->name), "%s", meter_name(m));
	mqtt_node_id(q->base, mm->name, mm->node, sizeof(mm->node));
	int r = loop_timer_new(q->loop, on_fields_timer, mm, &mm->fields_timer);
	if (r == 0)
		r = meter_add_sink(m, on_telegram, mm);
	if (r < 0) {
		loop_timer_free(mm->fields_timer);
		free(mm);
		return r;
	}
	q->meters[q->n_meters++] = mm;
	return 0;
}

void mqtt_set_dsmr_reader(struct mqtt *q, bool on)
{
	q->dsmr_reader = on;
}

void mqtt_set_interval(struct mqtt *q, uint64_t interval_ms)
{
	q->interval_ms = interval_ms;
}

void mqtt_set_backfill(struct mqtt *q, mqtt_backfill_cb cb, void *ud)
{
	q->backfill = cb;
	q->backfill_ud = ud;
}

void mqtt_get_stats(const struct mqtt *q, struct mqtt_stats *ret)
{
	struct mqtt_queue_stats qs;
	mqtt_queue_get_stats(q->outbox, &qs);
	*ret = q->st;
	ret->overflowed = qs.dropped;
	ret->waiting = qs.entries;
	for (size_t i = 0; i < q->n_meters; i++) /* not yet sent from the history */
		if (q->meters[i]->gap_to && q->meters[i]->gap_dropped > q->meters[i]->gap_acked)
			ret->waiting += q->meters[i]->gap_dropped - q->meters[i]->gap_acked;
}

static char *dup_or_empty(const char *s)
{
	return strdup(s ? s : "");
}

int mqtt_new(struct loop *loop, const struct config_mqtt *cfg, struct mqtt **ret)
{
	struct mqtt *q = calloc(1, sizeof(*q));
	char host[256] = "localhost", id[300];
	int r = -ENOMEM;
	if (!q)
		return -ENOMEM;
	q->loop = loop;
	q->watch_fd = -1;
	q->rl_fail = (struct log_ratelimit)LOG_RATELIMIT_INIT(MQTT_LOG_INTERVAL_MS);
	q->rl_drop = (struct log_ratelimit)LOG_RATELIMIT_INIT(MQTT_LOG_INTERVAL_MS);
	q->rnd = (uint32_t)(loop_now_ms() ^ ((uint64_t)getpid() << 16)) | 1u;
	gethostname(host, sizeof(host) - 1);
	snprintf(id, sizeof(id), "p1d-%s", host);
	q->host = dup_or_empty(cfg->host);
	q->client_id = dup_or_empty(cfg->client_id && *cfg->client_id ? cfg->client_id : id);
	q->username = dup_or_empty(cfg->username);
	q->password = dup_or_empty(cfg->password);
	q->base = dup_or_empty(cfg->base_topic && *cfg->base_topic ? cfg->base_topic : "p1d");
	q->prefix = dup_or_empty(cfg->discovery_prefix && *cfg->discovery_prefix
					 ? cfg->discovery_prefix
					 : "homeassistant");
	q->ca = dup_or_empty(cfg->ca_file);
	q->cert = dup_or_empty(cfg->cert_file);
	q->key = dup_or_empty(cfg->key_file);
	q->port = cfg->port;
	q->qos = cfg->qos;
	q->keepalive_s = (int)(cfg->keepalive_ms / 1000 > 5 ? cfg->keepalive_ms / 1000 : 5);
	q->retain = cfg->retain;
	q->tls = cfg->tls;
	q->insecure = cfg->tls_insecure;
	q->discovery = cfg->discovery;
	q->interval_ms = cfg->interval_ms > 0 ? (uint64_t)cfg->interval_ms : 0;
	snprintf(q->status_topic, sizeof(q->status_topic), "%s/status", q->base);
	snprintf(q->ha_status_topic, sizeof(q->ha_status_topic), "%s/status", q->prefix);
	if (!q->host || !q->client_id || !q->username || !q->password || !q->base || !q->prefix ||
	    !q->ca || !q->cert || !q->key)
		goto fail;
	size_t entries = cfg->queue > 0 ? (size_t)cfg->queue : MQTT_QUEUE_MAX_DEFAULT;
	size_t bytes = MQTT_QUEUE_BYTES_DEFAULT / MQTT_QUEUE_MAX_DEFAULT * entries;
	if ((r = mqtt_queue_new(entries, bytes, &q->outbox)) < 0 ||
	    (r = loop_timer_new(loop, on_retry, q, &q->retry)) < 0 ||
	    (r = loop_timer_new(loop, on_misc, q, &q->misc)) < 0 ||
	    (r = loop_timer_new(loop, on_again, q, &q->again)) < 0 ||
	    (r = loop_hook_add(loop, on_before_sleep, q, &q->hook)) < 0)
		goto fail;
	mqtt_queue_on_drop(q->outbox, on_outbox_drop, q);
	mosquitto_lib_init();
	q->lib_init = true;
	if ((r = client_create(q)) < 0) /* checks the settings now: TLS files, ... */
		goto fail;
	loop_timer_arm(q->retry, 0, 0);
	*ret = q;
	return 0;
fail:
	mqtt_free(q);
	return r;
}

/* At shutdown only: publish offline and wait (at most MQTT_GOODBYE_MS) until the broker has
 * acknowledged what was published, then send DISCONNECT. libmosquitto closes the socket right
 * after writing DISCONNECT; unread acknowledgements in our receive buffer would make the
 * kernel send a reset, and the broker would drop what it had not read yet (the last
 * telegram's values). */
static void goodbye(struct mqtt *q)
{
	struct mqtt_queue_stats qs;
	uint64_t deadline = loop_now_ms() + MQTT_GOODBYE_MS;
	for (size_t i = 0; i < q->n_meters; i++) /* the last values of a replayed file */
		if (q->meters[i]->fields_due)
			publish_fields(q->meters[i]);
	publish(q, q->status_topic, "offline", 7, true);
	for (;;) {
		int fd = mosquitto_socket(q->mosq);
		uint64_t now = loop_now_ms();
		mqtt_queue_get_stats(q->outbox, &qs);
		bool want_write = mosquitto_want_write(q->mosq);
		if (fd < 0 || q->lost || now >= deadline ||
		    (!qs.inflight && !q->backlog && !want_write))
			break;
		struct pollfd pfd = {fd, POLLIN | (want_write ? POLLOUT : 0), 0};
		if (poll(&pfd, 1, (int)(deadline - now)) <= 0)
			break;
		int rc = MOSQ_ERR_SUCCESS;
		if (pfd.revents & POLLOUT)
			rc = mosquitto_loop_write(q->mosq, 1);
		if (rc == MOSQ_ERR_SUCCESS && (pfd.revents & (POLLIN | POLLERR | POLLHUP)))
			rc = mosquitto_loop_read(q->mosq, 1);
		if (rc != MOSQ_ERR_SUCCESS)
			return;
	}
	if (!q->lost && mosquitto_socket(q->mosq) >= 0)
		mosquitto_disconnect(q->mosq);
}

struct mqtt *mqtt_free(struct mqtt *q)
{
	if (!q)
		return NULL;
	if (q->mosq) {
		if (q->state == S_CONNECTED)
			goodbye(q);
		client_destroy(q);
	}
	log_ratelimit_flush(&q->rl_fail, loop_now_ms(), true);
	log_ratelimit_flush(&q->rl_drop, loop_now_ms(), true);
	if (q->outbox) {
		struct mqtt_stats st;
		mqtt_get_stats(q, &st);
		if (st.waiting || st.dropped)
			log_notice("mqtt: stopping with %llu readings not delivered, %llu dropped",
				   (unsigned long long)st.waiting, (unsigned long long)st.dropped);
	}
	if (q->lib_init)
		mosquitto_lib_cleanup();
	loop_hook_remove(q->hook);
	loop_timer_free(q->retry);
	loop_timer_free(q->misc);
	loop_timer_free(q->again);
	mqtt_queue_free(q->outbox);
	for (size_t i = 0; i < q->n_meters; i++) {
		loop_timer_free(q->meters[i]->fields_timer);
		batch_reset(&q->meters[i]->batch, true);
		free(q->meters[i]);
	}
	if (q->password)
		explicit_bzero(q->password, strlen(q->password));
	free(q->host);
	free(q->client_id);
	free(q->username);
	free(q->password);
	free(q->base);
	free(q->prefix);
	free(q->ca);
	free(q->cert);
	free(q->key);
	free(q);
	return NULL;
}
