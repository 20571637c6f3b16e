/* mqtt_discovery.h - what p1d's MQTT messages say: topic names, plain per-field payloads, Home
 * Assistant discovery configs, the manufacturer table, the DSMR Reader topic names and the
 * publish throttle. Pure formatting into the caller's buffers (snprintf-style return values:
 * the length needed); no I/O, no clock, no logging. Everything is derived from p1/fields.h. */
#ifndef P1D_MQTT_DISCOVERY_H
#define P1D_MQTT_DISCOVERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "p1/telegram.h"

/* Longest topic p1d builds (prefix 128 + node + field + slashes). */
#define MQTT_TOPIC_MAX 512

/* Manufacturer for the header's three-letter flag ("ISK5\2M550T-1012" -> "Iskra"); the flag
 * itself when it is not in the table, "" for a header shorter than three characters. Writes
 * into buf (NUL-terminated) and returns buf. */
const char *mqtt_manufacturer(const char *header, size_t len, char *buf, size_t cap);

/* Model from the header: what follows the flag and the baud-rate character, without a leading
 * backslash ("ISK5\2M550T-1012" -> "2M550T-1012"); the whole header when nothing follows. */
size_t mqtt_model(const char *header, size_t len, char *buf, size_t cap);

/* Home Assistant node id: "<base>_<meter>" with every character outside [A-Za-z0-9_-] as '_'. */
size_t mqtt_node_id(const char *base, const char *meter, char *buf, size_t cap);

/* A field's value as a plain payload: a number as the meter wrote it, text as is, a time in
 * ISO 8601, event logs and demand histories as JSON arrays. Returns 0 when the field has no
 * value in this telegram (absent or null): nothing is published then. */
size_t mqtt_field_payload(const struct p1_telegram *t, enum p1_field f, char *buf, size_t cap);

/* Home Assistant classes derived from a field's class and quantity; NULL when none applies. */
const char *mqtt_device_class(enum p1_field f);
const char *mqtt_state_class(enum p1_field f);
/* Unit as Home Assistant spells it (m3 -> m³), from the telegram when it carries one, else the
 * field's; NULL when the value has no unit. */
const char *mqtt_ha_unit(const struct p1_telegram *t, enum p1_field f);
/* Whether a field gets a discovery config (numbers, texts and times; not the JSON arrays). */
bool mqtt_discoverable(enum p1_field f);

/* What the device object of one meter says. */
struct mqtt_device {
	const char *base;      /* base topic */
	const char *meter;     /* meter name */
	const char *node;      /* mqtt_node_id() */
	const char *sw;        /* p1d version, for "origin" */
};

/* "<prefix>/sensor/<node>/<field>/config" */
size_t mqtt_discovery_topic(const char *prefix, const char *node, enum p1_field f, char *buf,
			    size_t cap);
/* The discovery config of one field as JSON. */
size_t mqtt_discovery_config(const struct mqtt_device *d, const struct p1_telegram *t,
			     enum p1_field f, char *buf, size_t cap);

/* DSMR Reader's topic for a field ("dsmr/reading/electricity_delivered_1"), NULL if it has none. */
const char *mqtt_dsmr_reader_topic(enum p1_field f);
/* DSMR Reader's payload: the plain payload, but the tariff without leading zeros ("2"). */
size_t mqtt_dsmr_reader_payload(const struct p1_telegram *t, enum p1_field f, char *buf,
				size_t cap);

/* Whether a telegram arriving at now_ms is published when the last one was at last_ms
 * (never: first), with at least interval_ms between publications (0: every telegram). */
bool mqtt_throttle_due(bool first, uint64_t last_ms, uint64_t now_ms, uint64_t interval_ms);

#endif
