/* mqtt_queue.h - the MQTT outbox: state messages waiting for the broker.
 *
 * Every `<base>/<meter>/state` message goes through this bounded queue, oldest first. An entry
 * is pending until it is handed to libmosquitto (then in flight, with its message id) and
 * leaves the queue only when libmosquitto reports it delivered (PUBACK for QoS 1). When the
 * connection is lost, entries in flight become pending again and are sent again after the
 * reconnect, so an outage loses nothing until a bound is hit. The bounds are an entry count and
 * a byte count; when either is exceeded the oldest pending entry is dropped and counted.
 * Pure data structure: no I/O, no clock, no logging. */
#ifndef P1D_MQTT_QUEUE_H
#define P1D_MQTT_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One hour of telegrams at one per second. */
#define MQTT_QUEUE_MAX_DEFAULT 3600u
/* With a store, which can send what the outbox dropped: five minutes, 0.5 MiB. */
#define MQTT_QUEUE_STORE_DEFAULT 300u
/* About 3600 DSMR 5 state messages; caps the memory an outage can cost. */
#define MQTT_QUEUE_BYTES_DEFAULT (6u * 1024u * 1024u)

/* Extra ring slots for entries acknowledged out of order (more than the in-flight window). */
#define MQTT_QUEUE_SLACK 256u

struct mqtt_queue;

struct mqtt_queue_stats {
	size_t entries;    /* waiting or in flight */
	size_t bytes;      /* payload bytes held */
	size_t inflight;   /* handed to the library, not yet acknowledged */
	uint64_t queued;   /* ever added */
	uint64_t acked;    /* ever acknowledged */
	uint64_t dropped;  /* dropped because a bound was hit */
};

/* A queue of at most max_entries entries and max_bytes payload bytes. */
int mqtt_queue_new(size_t max_entries, size_t max_bytes, struct mqtt_queue **ret);
struct mqtt_queue *mqtt_queue_free(struct mqtt_queue *q);

/* Called for every entry dropped because a bound was hit, oldest first, with the meter slot
 * and time it was pushed with. */
typedef void (*mqtt_queue_drop_cb)(void *ud, unsigned meter, int64_t utc);
void mqtt_queue_on_drop(struct mqtt_queue *q, mqtt_queue_drop_cb cb, void *ud);

/* Append a copy of payload for meter slot `meter` (an index the caller chooses), dated
 * received_utc (the reading's time). Drops the oldest pending entries while a bound is
 * exceeded. -ENOMEM, -E2BIG for a payload larger than max_bytes. */
int mqtt_queue_push(struct mqtt_queue *q, unsigned meter, int64_t received_utc,
		    const char *payload, size_t len);

/* The oldest pending entry, or false when there is none. *ret_last says whether it is the
 * newest entry of the queue (only that one is published retained). */
bool mqtt_queue_peek(const struct mqtt_queue *q, unsigned *ret_meter, const char **ret_payload,
		     size_t *ret_len, int64_t *ret_utc, bool *ret_last);
/* Mark the entry peek returned as in flight with message id mid (> 0). */
void mqtt_queue_sent(struct mqtt_queue *q, int mid);
/* An acknowledgement: removes the in-flight entry with that id and gives its receive time
 * (ret_utc may be NULL). False when no entry has that id. */
bool mqtt_queue_ack(struct mqtt_queue *q, int mid, int64_t *ret_utc);
/* The connection was lost: every entry in flight is pending again. */
void mqtt_queue_requeue(struct mqtt_queue *q);

void mqtt_queue_get_stats(const struct mqtt_queue *q, struct mqtt_queue_stats *ret);

#endif
