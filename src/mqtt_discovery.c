/* mqtt_discovery.c - topic names, payloads and Home Assistant discovery configs (see
 * mqtt_discovery.h). Pure: called by mqtt.c and the unit test. Field names, units, classes
 * and quantities come from p1/fields.h; nothing here spells a field name except the DSMR
 * Reader table, which maps our names to theirs. */
#include "mqtt_discovery.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "p1/json.h"

struct out {
	char *buf;
	size_t cap, len;
};

static void put(struct out *o, const char *s, size_t n)
{
	if (o->len < o->cap) {
		size_t room = o->cap - o->len - 1, k = n < room ? n : room;
		memcpy(o->buf + o->len, s, k);
		o->buf[o->len + k] = 0;
	}
	o->len += n;
}

static void puts_(struct out *o, const char *s)
{
	put(o, s, strlen(s));
}

/* A JSON string literal of our own UTF-8 text (libp1's escaper, bytes >= 0x80 kept). */
static void put_str(struct out *o, const char *s, size_t n)
{
	size_t room = o->len < o->cap ? o->cap - o->len : 0;
	o->len += p1_json_string_utf8(s, n, room ? o->buf + o->len : NULL, room);
}

static void put_kv(struct out *o, const char *key, const char *val)
{
	put(o, ",", 1);
	put_str(o, key, strlen(key));
	put(o, ":", 1);
	put_str(o, val, strlen(val));
}

/* A value that came from the meter (header, equipment id): any byte, escaped by libp1. */
static void put_kv_meter(struct out *o, const char *key, const char *val)
{
	char tmp[1024];
	put(o, ",", 1);
	put_str(o, key, strlen(key));
	put(o, ":", 1);
	size_t k = p1_json_string(val, strlen(val), tmp, sizeof(tmp));
	if (k < sizeof(tmp))
		put(o, tmp, k);
	else
		put(o, "\"\"", 2);
}

static const struct {
	const char *flag, *name;
} manufacturers[] = {
	{"ISK", "Iskra"},        {"KFM", "Kaifa"},          {"XMX", "Landis+Gyr"},
	{"LGZ", "Landis+Gyr"},   {"ENE", "Sagemcom"},       {"SAG", "Sagemcom"},
	{"KMP", "Kamstrup"},     {"KAM", "Kamstrup"},       {"FLU", "Fluvius"},
	{"LUX", "Luxmetering"},  {"ESY", "EasyMeter"},      {"ACE", "Itron"},
	{"ELS", "Elster"},       {"AUX", "Ningbo Sanxing"}, {"ZIV", "ZIV"},
};

const char *mqtt_manufacturer(const char *header, size_t len, char *buf, size_t cap)
{
	if (!cap)
		return buf;
	buf[0] = 0;
	if (len < 3)
		return buf;
	for (size_t i = 0; i < sizeof(manufacturers) / sizeof(manufacturers[0]); i++)
		if (!strncasecmp(header, manufacturers[i].flag, 3)) {
			snprintf(buf, cap, "%s", manufacturers[i].name);
			return buf;
		}
	snprintf(buf, cap, "%.3s", header);
	return buf;
}

size_t mqtt_model(const char *header, size_t len, char *buf, size_t cap)
{
	size_t from = len > 4 ? 4 : len;
	if (from < len && header[from] == '\\')
		from++;
	if (from >= len)
		from = 0;
	struct out o = {buf, cap, 0};
	if (cap)
		buf[0] = 0;
	put(&o, header + from, len - from);
	return o.len;
}

size_t mqtt_node_id(const char *base, const char *meter, char *buf, size_t cap)
{
	int n = snprintf(buf, cap, "%s_%s", base, meter);
	for (int i = 0; cap && i < n && (size_t)i < cap - 1; i++) {
		char c = buf[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-'))
			buf[i] = '_';
	}
	return n < 0 ? 0 : (size_t)n;
}

size_t mqtt_field_payload(const struct p1_telegram *t, enum p1_field f, char *buf, size_t cap)
{
	const struct p1_field_info *fi = p1_field_info(f);
	const struct p1_value *v = &t->fields[f];
	struct out o = {buf, cap, 0};
	if (cap)
		buf[0] = 0;
	if (fi->kind == P1_KIND_EVENTS || fi->kind == P1_KIND_DEMAND)
		return v->presence == P1_ABSENT ? 0 : p1_json_value(t, f, buf, cap);
	if (v->presence != P1_PRESENT)
		return 0;
	char tmp[64];
	switch (fi->kind) {
	case P1_KIND_NUMBER: put(&o, tmp, p1_num_format(&v->num, tmp, sizeof(tmp))); break;
	case P1_KIND_TIME: put(&o, tmp, p1_time_format(&v->time, tmp, sizeof(tmp))); break;
	default: put(&o, v->text.ptr, v->text.len); break;
	}
	return o.len;
}

bool mqtt_discoverable(enum p1_field f)
{
	enum p1_kind k = p1_field_info(f)->kind;
	return k == P1_KIND_NUMBER || k == P1_KIND_TEXT || k == P1_KIND_TIME;
}

const char *mqtt_device_class(enum p1_field f)
{
	static const struct {
		const char *quantity, *device_class;
	} map[] = {
		{"energy", "energy"},
		{"heat", "energy"},
		{"power", "power"},
		{"voltage", "voltage"},
		{"current", "current"},
		{"gas", "gas"},
		{"water", "water"},
		{"reactive_power", "reactive_power"},
		{"reactive_energy", "reactive_energy"},
		{"apparent_power", "apparent_power"},
		{"frequency", "frequency"},
		{"power_factor", "power_factor"},
		{"timestamp", "timestamp"},
	};
	const struct p1_field_info *fi = p1_field_info(f);
	if (!mqtt_discoverable(f))
		return NULL;
	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
		if (!strcmp(fi->quantity, map[i].quantity))
			return fi->kind == P1_KIND_TIME && strcmp(map[i].device_class, "timestamp")
				       ? NULL
				       : map[i].device_class;
	return NULL;
}

const char *mqtt_state_class(enum p1_field f)
{
	const struct p1_field_info *fi = p1_field_info(f);
	if (fi->kind != P1_KIND_NUMBER)
		return NULL;
	if (fi->cls == P1_CLASS_COUNTER)
		return "total_increasing";
	if (fi->cls == P1_CLASS_GAUGE)
		return "measurement";
	return NULL;
}

const char *mqtt_ha_unit(const struct p1_telegram *t, enum p1_field f)
{
	const struct p1_field_info *fi = p1_field_info(f);
	if (fi->kind != P1_KIND_NUMBER)
		return NULL;
	const char *u = fi->unit;
	if (t && t->fields[f].presence == P1_PRESENT && t->fields[f].num.unit)
		u = t->fields[f].num.unit;
	if (!u || !*u)
		return NULL;
	if (!strcmp(u, "m3"))
		return "m\xc2\xb3";
	return u;
}

size_t mqtt_discovery_topic(const char *prefix, const char *node, enum p1_field f, char *buf,
			    size_t cap)
{
	int n = snprintf(buf, cap, "%s/sensor/%s/%s/config", prefix, node, p1_field_info(f)->name);
	return n < 0 ? 0 : (size_t)n;
}

/* "energy_delivered_tariff1" -> "Energy delivered tariff1" */
static void pretty_name(const char *name, char *buf, size_t cap)
{
	snprintf(buf, cap, "%s", name);
	for (char *p = buf; *p; p++)
		if (*p == '_')
			*p = ' ';
	if (buf[0] >= 'a' && buf[0] <= 'z')
		buf[0] = (char)(buf[0] - 'a' + 'A');
}

static void put_device(struct out *o, const struct mqtt_device *d, const struct p1_telegram *t)
{
	char id[160], tmp[160];
	const struct p1_value *eq = &t->fields[P1_F_EQUIPMENT_ID];
	const struct p1_value *ver = &t->fields[P1_F_P1_VERSION];
	if (eq->presence == P1_PRESENT && eq->text.len) {
		snprintf(tmp, sizeof(tmp), "p1d_%.*s", (int)eq->text.len, eq->text.ptr);
		mqtt_node_id("p1d", tmp + 4, id, sizeof(id));
	} else {
		snprintf(id, sizeof(id), "%s", d->node);
	}
	puts_(o, ",\"device\":{\"identifiers\":[");
	put_str(o, id, strlen(id)); /* ASCII: mqtt_node_id() */
	put(o, "]", 1);
	snprintf(tmp, sizeof(tmp), "%s %s", d->base, d->meter);
	put_kv_meter(o, "name", tmp);
	put_kv_meter(o, "manufacturer", mqtt_manufacturer(t->header.ptr, t->header.len, tmp, sizeof(tmp)));
	mqtt_model(t->header.ptr, t->header.len, tmp, sizeof(tmp));
	put_kv_meter(o, "model", tmp);
	if (eq->presence == P1_PRESENT && eq->text.len) {
		snprintf(tmp, sizeof(tmp), "%.*s", (int)eq->text.len, eq->text.ptr);
		put_kv_meter(o, "serial_number", tmp);
	}
	if (ver->presence == P1_PRESENT && ver->text.len) {
		snprintf(tmp, sizeof(tmp), "%.*s", (int)ver->text.len, ver->text.ptr);
		put_kv_meter(o, "sw_version", tmp);
	}
	put(o, "}", 1);
}

size_t mqtt_discovery_config(const struct mqtt_device *d, const struct p1_telegram *t,
			     enum p1_field f, char *buf, size_t cap)
{
	const struct p1_field_info *fi = p1_field_info(f);
	struct out o = {buf, cap, 0};
	char tmp[MQTT_TOPIC_MAX];
	const char *v;
	if (cap)
		buf[0] = 0;
	pretty_name(fi->name, tmp, sizeof(tmp));
	puts_(&o, "{\"name\":");
	put_str(&o, tmp, strlen(tmp));
	snprintf(tmp, sizeof(tmp), "%s_%s", d->node, fi->name);
	put_kv(&o, "unique_id", tmp);
	put_kv(&o, "object_id", tmp);
	snprintf(tmp, sizeof(tmp), "%s/%s/%s", d->base, d->meter, fi->name);
	put_kv(&o, "state_topic", tmp);
	snprintf(tmp, sizeof(tmp), "%s/status", d->base);
	put_kv(&o, "availability_topic", tmp);
	if ((v = mqtt_ha_unit(t, f)))
		put_kv(&o, "unit_of_measurement", v);
	if ((v = mqtt_device_class(f)))
		put_kv(&o, "device_class", v);
	if ((v = mqtt_state_class(f)))
		put_kv(&o, "state_class", v);
	if (fi->cls == P1_CLASS_INFO)
		put_kv(&o, "entity_category", "diagnostic");
	put_device(&o, d, t);
	puts_(&o, ",\"origin\":{\"name\":\"p1d\"");
	if (d->sw)
		put_kv(&o, "sw_version", d->sw);
	puts_(&o, "}}");
	return o.len;
}

/* DSMR Reader's names for the values it publishes per telegram (dsmr/reading/...) and its
 * meter statistics (dsmr/meter-stats/...). */
static const struct {
	enum p1_field f;
	const char *topic;
} dsmr_reader[] = {
	{P1_F_TIMESTAMP, "dsmr/reading/timestamp"},
	{P1_F_E_DEL_T1, "dsmr/reading/electricity_delivered_1"},
	{P1_F_E_RET_T1, "dsmr/reading/electricity_returned_1"},
	{P1_F_E_DEL_T2, "dsmr/reading/electricity_delivered_2"},
	{P1_F_E_RET_T2, "dsmr/reading/electricity_returned_2"},
	{P1_F_P_DEL, "dsmr/reading/electricity_currently_delivered"},
	{P1_F_P_RET, "dsmr/reading/electricity_currently_returned"},
	{P1_F_P_DEL_L1, "dsmr/reading/phase_currently_delivered_l1"},
	{P1_F_P_DEL_L2, "dsmr/reading/phase_currently_delivered_l2"},
	{P1_F_P_DEL_L3, "dsmr/reading/phase_currently_delivered_l3"},
	{P1_F_P_RET_L1, "dsmr/reading/phase_currently_returned_l1"},
	{P1_F_P_RET_L2, "dsmr/reading/phase_currently_returned_l2"},
	{P1_F_P_RET_L3, "dsmr/reading/phase_currently_returned_l3"},
	{P1_F_V_L1, "dsmr/reading/phase_voltage_l1"},
	{P1_F_V_L2, "dsmr/reading/phase_voltage_l2"},
	{P1_F_V_L3, "dsmr/reading/phase_voltage_l3"},
	{P1_F_I_L1, "dsmr/reading/phase_power_current_l1"},
	{P1_F_I_L2, "dsmr/reading/phase_power_current_l2"},
	{P1_F_I_L3, "dsmr/reading/phase_power_current_l3"},
	{P1_F_GAS, "dsmr/reading/extra_device_delivered"},
	{P1_F_GAS_TIME, "dsmr/reading/extra_device_timestamp"},
	{P1_F_P1_VERSION, "dsmr/meter-stats/dsmr_version"},
	{P1_F_TARIFF, "dsmr/meter-stats/electricity_tariff"},
	{P1_F_FAILURES, "dsmr/meter-stats/power_failure_count"},
	{P1_F_LONG_FAILURES, "dsmr/meter-stats/long_power_failure_count"},
	{P1_F_SAGS_L1, "dsmr/meter-stats/voltage_sag_count_l1"},
	{P1_F_SAGS_L2, "dsmr/meter-stats/voltage_sag_count_l2"},
	{P1_F_SAGS_L3, "dsmr/meter-stats/voltage_sag_count_l3"},
	{P1_F_SWELLS_L1, "dsmr/meter-stats/voltage_swell_count_l1"},
	{P1_F_SWELLS_L2, "dsmr/meter-stats/voltage_swell_count_l2"},
	{P1_F_SWELLS_L3, "dsmr/meter-stats/voltage_swell_count_l3"},
};

const char *mqtt_dsmr_reader_topic(enum p1_field f)
{
	for (size_t i = 0; i < sizeof(dsmr_reader) / sizeof(dsmr_reader[0]); i++)
		if (dsmr_reader[i].f == f)
			return dsmr_reader[i].topic;
	return NULL;
}

size_t mqtt_dsmr_reader_payload(const struct p1_telegram *t, enum p1_field f, char *buf,
				size_t cap)
{
	size_t n = mqtt_field_payload(t, f, buf, cap);
	if (f != P1_F_TARIFF || n >= cap)
		return n;
	size_t z = 0;
	while (z + 1 < n && buf[z] == '0')
		z++;
	memmove(buf, buf + z, n - z + 1);
	return n - z;
}

bool mqtt_throttle_due(bool first, uint64_t last_ms, uint64_t now_ms, uint64_t interval_ms)
{
	return first || !interval_ms || now_ms < last_ms || now_ms - last_ms >= interval_ms;
}
