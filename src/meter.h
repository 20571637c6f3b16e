/* meter.h - one meter: its source, its decoder, its counters and its latest telegram.
 *
 * The meter feeds the bytes its source reads to a libp1 decoder, counts every rejected frame
 * by reason (logged in summary, never once per telegram), keeps a copy of the latest valid
 * telegram, and hands each valid telegram to the sinks registered with meter_add_sink(), in
 * registration order. Sinks get the telegram borrowed for the call; a sink that keeps data
 * copies it. Sinks never see each other.
 */
#ifndef P1D_METER_H
#define P1D_METER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "p1/error.h"
#include "p1/telegram.h"
#include "source.h"

struct loop;
struct meter;
struct config_meter;

#define METER_SINKS_MAX 8
/* A frame in progress with no byte for this long was cut (the meter stopped mid-telegram, a
 * cable was pulled): drop it, so that it cannot swallow the next telegram. A meter sends a
 * telegram without pauses, so a serial line that is quiet this long mid-frame was cut; a TCP
 * bridge may add network jitter. Files are read to the end and flushed there. */
#define METER_GAP_SERIAL_MS 600u
#define METER_GAP_TCP_MS 1500u
/* Rejected frames are logged once, then summarised at most this often. */
#define METER_ERROR_SUMMARY_MS 60000u

struct meter_stats {
	uint64_t telegrams;              /* valid telegrams */
	uint64_t errors[P1_ERR_COUNT];   /* rejected frames by reason */
	uint64_t rejected;               /* sum of errors[] */
	uint64_t last_telegram_ms;       /* loop_now_ms() of the last valid telegram, 0: none */
	int64_t last_telegram_utc;       /* system time of the last valid telegram, 0: none */
};

/* received_utc: system time the telegram was completed. */
typedef void (*meter_sink_cb)(void *ud, struct meter *m, const struct p1_telegram *t,
			      int64_t received_utc);
/* Raw bytes of each valid telegram's frame, for the raw relay. */
typedef void (*meter_raw_cb)(void *ud, struct meter *m, const uint8_t *frame, size_t len);

/* Creates the meter and its source. tz: the meter clock's zone. */
int meter_new(struct loop *loop, const struct config_meter *cfg, const struct p1_tz *tz,
	      struct meter **ret_meter);
struct meter *meter_free(struct meter *m);

int meter_add_sink(struct meter *m, meter_sink_cb cb, void *ud);
int meter_add_raw_sink(struct meter *m, meter_raw_cb cb, void *ud);

const char *meter_name(const struct meter *m);
/* The time (UTC seconds) that dates the telegram being handed to the sinks: the meter's clock
 * or the system's, as the meter's clock setting says (clock.h). Sinks call it from their
 * callback. */
int64_t meter_reading_utc(const struct meter *m);
void meter_get_stats(const struct meter *m, struct meter_stats *ret);
/* The latest valid telegram, NULL before the first. Valid until the next loop iteration. */
const struct p1_telegram *meter_latest(const struct meter *m);
/* The latest telegram as JSON (p1/json.h) with flags P1_JSON_ALL or
 * P1_JSON_ALL & ~P1_JSON_FRAMING: rendered once per telegram on first use and shared, so sinks
 * that publish the same JSON (MQTT state, the event stream) do not each format it. Sets *ret to
 * the text (NUL-terminated) and returns its length; 0 before the first telegram or when out of
 * memory. Valid until the next telegram. */
size_t meter_latest_json(struct meter *m, unsigned flags, const char **ret);
const struct source *meter_source(const struct meter *m);
/* True once a file source has been read to its end. */
bool meter_finished(const struct meter *m);
/* Called once when a file source has been read to its end and its last frame decoded. */
void meter_on_finished(struct meter *m, void (*cb)(void *ud, struct meter *m), void *ud);

/* "main: 1234 telegrams, last 1 s ago, 0 CRC errors" for STATUS= */
int meter_format_status(const struct meter *m, char *buf, size_t size);

/* Housekeeping from a timer: writes the summary of rejected frames when one is owed. */
void meter_tick(struct meter *m);

/* Feed bytes as if the source had read them (tests, import). */
void meter_feed(struct meter *m, const uint8_t *buf, size_t len);
/* End of input: complete or reject what is in progress. */
void meter_flush(struct meter *m);

#endif
