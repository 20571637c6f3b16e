/* api_homewizard.c - bodies of the HomeWizard P1 meter local API, v1 (GET /api and
 * GET /api/v1/data), so that apps and Home Assistant's homewizard integration can read p1d.
 * Field names are HomeWizard's (total_power_import_t1_kwh, active_power_w, ...; "montly" is
 * their spelling). Numbers are written exactly (kWh with the meter's decimals, W as integers
 * from kW moved three places), never through floating point. Pure: telegram in, JSON out.
 * Only enabled with [http] homewizard = true; api_v1.c routes here.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "p1/json.h"
#include "version.h"

struct hw_out {
	FILE *f;
	bool first;
};

static void key(struct hw_out *o, const char *k)
{
	fprintf(o->f, "%s\"%s\":", o->first ? "" : ",", k);
	o->first = false;
}

static void put_str(struct hw_out *o, const char *k, const char *s, size_t len)
{
	char buf[512];
	size_t n = p1_json_string(s, len, buf, sizeof(buf));
	if (n >= sizeof(buf))
		return;
	key(o, k);
	fputs(buf, o->f);
}

static void put_milli(struct hw_out *o, const char *k, int64_t milli)
{
	struct p1_num n = {.mant = milli, .scale = 3};
	char buf[40];
	p1_num_format(&n, buf, sizeof(buf));
	key(o, k);
	fputs(buf, o->f);
}

static bool milli_of(const struct p1_telegram *t, enum p1_field f, int64_t *ret)
{
	return p1_has(t, f) && p1_num_milli(&t->fields[f].num, ret);
}

/* A field in thousandths (kWh, m3), printed with three decimals. */
static void put_field_milli(struct hw_out *o, const char *k, const struct p1_telegram *t,
                            enum p1_field f)
{
	int64_t v;
	if (milli_of(t, f, &v))
		put_milli(o, k, v);
}

/* A field as the meter wrote it (V, A, Hz, counts). */
static void put_field(struct hw_out *o, const char *k, const struct p1_telegram *t, enum p1_field f)
{
	char buf[40];
	if (!p1_has(t, f) || p1_num_format(&t->fields[f].num, buf, sizeof(buf)) >= sizeof(buf))
		return;
	key(o, k);
	fputs(buf, o->f);
}

/* A kW field as integer watts. */
static void put_watts(struct hw_out *o, const char *k, const struct p1_telegram *t, enum p1_field f)
{
	int64_t w;
	if (milli_of(t, f, &w)) {
		key(o, k);
		fprintf(o->f, "%" PRId64, w); /* Flawfinder: ignore: a literal with PRId64 */
	}
}

/* delivered - returned, in W, when either is present. */
static void put_net_watts(struct hw_out *o, const char *k, const struct p1_telegram *t,
                          enum p1_field del, enum p1_field ret)
{
	int64_t d = 0, r = 0;
	bool hd = milli_of(t, del, &d), hr = milli_of(t, ret, &r);
	if (hd || hr) {
		key(o, k);
		fprintf(o->f, "%" PRId64, d - r); /* Flawfinder: ignore: a literal with PRId64 */
	}
}

/* Sum of tariff registers, or the all-tariff register when the meter sends one. */
static void put_total(struct hw_out *o, const char *k, const struct p1_telegram *t,
                      enum p1_field total, enum p1_field first, int n)
{
	int64_t sum = 0, v;
	bool any = false;
	if (milli_of(t, total, &v)) {
		put_milli(o, k, v);
		return;
	}
	for (int i = 0; i < n; i++)
		if (milli_of(t, (enum p1_field)(first + i), &v)) {
			sum += v;
			any = true;
		}
	if (any)
		put_milli(o, k, sum);
}

/* HomeWizard timestamps: the meter's local time as the number YYMMDDhhmmss. */
static bool hw_time(const struct p1_time *tm, int64_t *ret)
{
	int y, mo, d, h, mi, s;
	p1_time_to_civil(tm->utc + tm->offset_s, &y, &mo, &d, &h, &mi, &s);
	*ret = ((((((int64_t)(y % 100) * 100 + mo) * 100 + d) * 100 + h) * 100 + mi) * 100) + s;
	return true;
}

static void put_time(struct hw_out *o, const char *k, const struct p1_telegram *t, enum p1_field f)
{
	int64_t v;
	if (p1_has(t, f) && hw_time(&t->fields[f].time, &v)) {
		key(o, k);
		fprintf(o->f, "%" PRId64, v); /* Flawfinder: ignore: a literal with PRId64 */
	}
}

/* Equipment ids are given hex-encoded, as HomeWizard does. */
static void put_hex_id(struct hw_out *o, const char *k, const struct p1_telegram *t,
                       enum p1_field f)
{
	char hex[2 * 96 + 1];
	if (!p1_has(t, f))
		return;
	const struct p1_text *x = &t->fields[f].text;
	size_t n = x->len < 96 ? x->len : 96;
	for (size_t i = 0; i < n; i++)
		snprintf(hex + 2 * i, 3, "%02x", (unsigned char)x->ptr[i]);
	hex[2 * n] = 0;
	put_str(o, k, hex, 2 * n);
}

static void put_text_int(struct hw_out *o, const char *k, const struct p1_telegram *t,
                         enum p1_field f)
{
	if (!p1_has(t, f))
		return;
	const struct p1_text *x = &t->fields[f].text;
	long v = 0;
	if (x->len == 0 || x->len > 9)
		return;
	for (size_t i = 0; i < x->len; i++) {
		if (x->ptr[i] < '0' || x->ptr[i] > '9')
			return;
		v = v * 10 + (x->ptr[i] - '0');
	}
	key(o, k);
	fprintf(o->f, "%ld", v);
}

static void put_external(struct hw_out *o, const struct p1_telegram *t)
{
	static const struct {
		enum p1_field id, value, time;
		const char *type, *unit;
	} ext[] = {
	        {P1_F_GAS_ID, P1_F_GAS, P1_F_GAS_TIME, "gas_meter", "m3"},
	        {P1_F_WATER_ID, P1_F_WATER, P1_F_WATER_TIME, "water_meter", "m3"},
	        {P1_F_THERMAL_ID, P1_F_THERMAL, P1_F_THERMAL_TIME, "heat_meter", "GJ"},
	};
	key(o, "external");
	fputc('[', o->f);
	bool first = true;
	for (size_t i = 0; i < sizeof(ext) / sizeof(ext[0]); i++) {
		if (!p1_has(t, ext[i].value))
			continue;
		struct hw_out e = {o->f, true};
		fputs(first ? "{" : ",{", o->f);
		first = false;
		put_hex_id(&e, "unique_id", t, ext[i].id);
		put_str(&e, "type", ext[i].type, strlen(ext[i].type));
		put_time(&e, "timestamp", t, ext[i].time);
		put_field_milli(&e, "value", t, ext[i].value);
		put_str(&e, "unit", ext[i].unit, strlen(ext[i].unit));
		fputc('}', o->f);
	}
	fputc(']', o->f);
}

static void put_phases(struct hw_out *o, const struct p1_telegram *t)
{
	static const char *const l[3] = {"l1", "l2", "l3"};
	char k[48];
	for (int i = 0; i < 3; i++) {
		snprintf(k, sizeof(k), "active_power_%s_w", l[i]);
		put_net_watts(o, k, t, (enum p1_field)(P1_F_P_DEL_L1 + i),
		              (enum p1_field)(P1_F_P_RET_L1 + i));
	}
	for (int i = 0; i < 3; i++) {
		snprintf(k, sizeof(k), "active_voltage_%s_v", l[i]);
		put_field(o, k, t, (enum p1_field)(P1_F_V_L1 + i));
	}
	for (int i = 0; i < 3; i++) {
		snprintf(k, sizeof(k), "active_current_%s_a", l[i]);
		put_field(o, k, t, (enum p1_field)(P1_F_I_L1 + i));
	}
	for (int i = 0; i < 3; i++) {
		snprintf(k, sizeof(k), "voltage_sag_%s_count", l[i]);
		put_field(o, k, t, (enum p1_field)(P1_F_SAGS_L1 + i));
	}
	for (int i = 0; i < 3; i++) {
		snprintf(k, sizeof(k), "voltage_swell_%s_count", l[i]);
		put_field(o, k, t, (enum p1_field)(P1_F_SWELLS_L1 + i));
	}
}

static void put_registers(struct hw_out *o, const struct p1_telegram *t)
{
	char k[48];
	put_total(o, "total_power_import_kwh", t, P1_F_E_DEL_TOTAL, P1_F_E_DEL_T1, 6);
	for (int i = 0; i < 4; i++) {
		snprintf(k, sizeof(k), "total_power_import_t%d_kwh", i + 1);
		put_field_milli(o, k, t, (enum p1_field)(P1_F_E_DEL_T1 + i));
	}
	put_total(o, "total_power_export_kwh", t, P1_F_E_RET_TOTAL, P1_F_E_RET_T1, 6);
	for (int i = 0; i < 4; i++) {
		snprintf(k, sizeof(k), "total_power_export_t%d_kwh", i + 1);
		put_field_milli(o, k, t, (enum p1_field)(P1_F_E_RET_T1 + i));
	}
}

char *api_hw_data(const struct p1_telegram *t)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	if (!f)
		return NULL;
	struct hw_out o = {f, true};
	fputc('{', f);
	put_text_int(&o, "smr_version", t, P1_F_P1_VERSION);
	put_str(&o, "meter_model", t->header.ptr, t->header.len);
	put_hex_id(&o, "unique_id", t, P1_F_EQUIPMENT_ID);
	put_text_int(&o, "active_tariff", t, P1_F_TARIFF);
	put_registers(&o, t);
	put_net_watts(&o, "active_power_w", t, P1_F_P_DEL, P1_F_P_RET);
	put_phases(&o, t);
	put_field(&o, "active_frequency_hz", t, P1_F_FREQ);
	put_field(&o, "any_power_fail_count", t, P1_F_FAILURES);
	put_field(&o, "long_power_fail_count", t, P1_F_LONG_FAILURES);
	put_watts(&o, "active_power_average_w", t, P1_F_AVG_DEMAND);
	put_watts(&o, "montly_power_peak_w", t, P1_F_MAX_DEMAND);
	put_time(&o, "montly_power_peak_timestamp", t, P1_F_MAX_DEMAND_TIME);
	put_field_milli(&o, "total_gas_m3", t, P1_F_GAS);
	put_time(&o, "gas_timestamp", t, P1_F_GAS_TIME);
	put_hex_id(&o, "gas_unique_id", t, P1_F_GAS_ID);
	put_external(&o, t);
	fputc('}', f);
	if (fclose(f) != 0) {
		free(buf);
		return NULL;
	}
	return buf;
}

void api_hw_serial(const char *meter_name, char ret[API_HW_SERIAL_LEN + 1])
{
	/* HomeWizard's serial is a MAC address; p1d gives 12 hex digits derived from the
	 * meter name (stable, and reveals nothing). */
	uint64_t h = UINT64_C(1469598103934665603);
	for (const char *p = meter_name; *p; p++)
		h = (h ^ (unsigned char)*p) * UINT64_C(1099511628211);
	/* Flawfinder: ignore: a literal format with PRIx64 */
	snprintf(ret, API_HW_SERIAL_LEN + 1, "%012" PRIx64, (uint64_t)(h & 0xffffffffffffull));
}

char *api_hw_info(const struct http_meter_view *m)
{
	char serial[API_HW_SERIAL_LEN + 1];
	api_hw_serial(m->name, serial);
	json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s}", "product_type", API_HW_PRODUCT_TYPE,
	                      "product_name", API_HW_PRODUCT_NAME, "serial", serial,
	                      "firmware_version", P1D_VERSION, "api_version", "v1");
	char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	return s;
}
