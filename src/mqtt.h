/* mqtt.h - the MQTT sink: publishes every meter's telegrams to a broker with libmosquitto,
 * driven by p1d's loop (its socket in our epoll, its housekeeping from our timer; never
 * mosquitto_loop_start or any blocking loop).
 *
 * Topics (see docs/mqtt.md): `<base>/status` (online/offline, retained, also the will),
 * `<base>/<meter>/state` (the telegram as JSON), `<base>/<meter>/<field>` (plain values,
 * retained), Home Assistant discovery configs under `<prefix>/sensor/<node>/<field>/config`
 * (re-sent on every connect and when `<prefix>/status` says online), and optionally DSMR
 * Reader's `dsmr/reading/...` topics.
 *
 * A broker that is away never slows reading: connects are asynchronous and retried with
 * exponential backoff (MQTT_BACKOFF_MIN_MS .. MQTT_BACKOFF_MAX_MS, with jitter). State messages
 * wait in a bounded outbox (mqtt_queue.h) until the broker acknowledges them, so an outage
 * loses nothing until the bound is hit; what is dropped is counted and logged in summary.
 * Per-field topics are not queued: after a reconnect the latest values are published.
 *
 * Backfill from the history: with a store (mqtt_set_backfill), the outbox holds the recent
 * readings only ([mqtt] queue of them); the readings it drops during a long outage are
 * remembered per meter as a gap of time, and after the reconnect they are read back from the
 * history and published to `<base>/<meter>/state` with their original times, oldest first,
 * before the outbox's newer ones, with the same in-flight window and acknowledgements. Readings
 * the history does not have (raw_days passed, store failing) are counted as dropped.
 *
 * The name of the broker is resolved by libmosquitto inside the connect call (getaddrinfo):
 * with a numeric address or a name in /etc/hosts that never waits; a name that needs DNS may
 * hold the loop for as long as the resolver takes, once per connection attempt. */
#ifndef P1D_MQTT_H
#define P1D_MQTT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct loop;
struct meter;
struct config_mqtt;
struct mqtt;

#define MQTT_BACKOFF_MIN_MS 1000u
#define MQTT_BACKOFF_MAX_MS 30000u
/* A broker that refuses the connection (restarting, port closed) costs nothing to ask again:
 * retry at least this often, so that p1d is back within about a second of the broker. */
#define MQTT_BACKOFF_REFUSED_MS 1500u
/* Readings read from the history at once when filling a gap. */
#define MQTT_BACKFILL_BATCH 256u
/* After the history had nothing new for a gap, ask again after this long. */
#define MQTT_BACKFILL_WAIT_MS 1000u
/* A gap sent whole: check again for its acknowledgements after this long. */
#define MQTT_BACKFILL_ACK_WAIT_MS 50u
/* A connection that has no CONNACK after this long is abandoned and retried. */
#define MQTT_CONNECT_TIMEOUT_MS 10000u
/* State messages in flight at once (handed to libmosquitto, not acknowledged). */
#define MQTT_INFLIGHT_MAX 20u
/* Other messages (per-field, discovery) handed to libmosquitto and not yet sent or
 * acknowledged; beyond this, per-field values are skipped (counted) until it drains. */
#define MQTT_BACKLOG_MAX 2000u
/* Per-field (latest-value) topics go out at most this often per meter; a meter sends a
 * telegram a second at most, so this only thins out a file replayed at full speed. */
#define MQTT_FIELDS_MIN_MS 500u
/* How often libmosquitto's housekeeping (keep-alive pings, retries) runs while connected. */
#define MQTT_MISC_INTERVAL_MS 1000u
/* At shutdown, how long p1d waits for the broker to take its last messages and close. */
#define MQTT_GOODBYE_MS 500u
/* Connection failures are logged once, then summarised at most this often. */
#define MQTT_LOG_INTERVAL_MS 60000u

struct mqtt_stats {
	bool connected;
	uint64_t connects;       /* successful CONNACKs */
	uint64_t published;      /* messages handed to libmosquitto */
	uint64_t queued;         /* state messages ever put in the outbox */
	uint64_t delivered;      /* state messages acknowledged */
	uint64_t dropped;        /* state messages that will never be delivered */
	uint64_t overflowed;     /* state messages the full outbox dropped (with a store: sent
	                          * later from the history, unless it lacks them) */
	uint64_t backfilled;     /* readings from the history acknowledged by the broker */
	uint64_t skipped;        /* per-field messages skipped because the broker lagged */
	uint64_t waiting;        /* state messages in the outbox now */
	int64_t last_acked_utc;  /* receive time of the newest state message acknowledged */
};

/* Backfill hook: call emit(ctx, utc, json, len) for the meter's readings newer than
 * after_utc, oldest first, at most max of them, stopping when emit returns non-zero; set
 * *ret_complete_utc to the time up to which the history holds every reading. Returns 0 or a
 * negative errno. */
typedef int (*mqtt_emit_cb)(void *ctx, int64_t utc, const char *json, size_t len);
typedef int (*mqtt_backfill_cb)(void *ud, const char *meter, int64_t after_utc, size_t max,
                                mqtt_emit_cb emit, void *ctx, int64_t *ret_complete_utc);

/* Creates the client and starts connecting (from the loop, at once). cfg is copied. Returns
 * 0, -EINVAL for a setting libmosquitto refuses (TLS files, ...; logged), -ENOMEM. */
int mqtt_new(struct loop *loop, const struct config_mqtt *cfg, struct mqtt **ret);
/* Publishes `offline`, disconnects cleanly (waiting at most MQTT_GOODBYE_MS for the broker to
 * close: shutdown only, the loop is not running) and frees. NULL-safe. */
struct mqtt *mqtt_free(struct mqtt *q);

/* Registers q as a sink of the meter. */
int mqtt_attach(struct mqtt *q, struct meter *m);

/* Also publish DSMR Reader's topic set (dsmr/reading/..., dsmr/meter-stats/...). */
void mqtt_set_dsmr_reader(struct mqtt *q, bool on);
/* Change the publish interval (the `interval` key can be reloaded). */
void mqtt_set_interval(struct mqtt *q, uint64_t interval_ms);
/* Readings the outbox drops are sent later from the history through cb. */
void mqtt_set_backfill(struct mqtt *q, mqtt_backfill_cb cb, void *ud);

void mqtt_get_stats(const struct mqtt *q, struct mqtt_stats *ret);

/* Reconnect backoff: *base_ms (0 at first) doubles from MQTT_BACKOFF_MIN_MS up to
 * MQTT_BACKOFF_MAX_MS; returns the delay to wait, *base_ms minus up to 20 % jitter taken from
 * rnd (any random number). Pure; for tests too. */
uint64_t mqtt_backoff_next(uint64_t *base_ms, uint32_t rnd);

#endif
