/* simulate_model.c - the simulated meter of `p1d simulate` (see simulate_model.h).
 *
 * It owns the physics and the text. A household draws a base load, a refrigerator cycle, a
 * daily activity curve and random appliance runs, spread over one or three phases; solar
 * panels follow the sun's elevation at 51.5 N under a wandering cloud cover; a boiler burns gas
 * for heating (outdoor temperature by season and hour) and showers. The powers are rounded to
 * what the dialect prints, and the registers are the exact integral of those printed powers:
 * energy is kept in W*s, so two telegrams' register difference equals power * step summed,
 * within the register's 1 Wh resolution. Local times are Central European with the S/W flag.
 * It must never do I/O, read a clock or keep global state: simulate.c calls it and decides
 * where the bytes go.
 */
#include "tools/simulate_model.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "p1/crc16.h"
#include "p1/time.h"

#define QUARTER_S 900
#define HISTORY_MONTHS 13
#define MAX_EVENTS 8
#define SERIAL_DIGITS 13
#define PI 3.14159265358979323846
#define SOLAR_LATITUDE_DEG 51.5
#define SOLAR_LONGITUDE_DEG 5.0
#define ACTIVITY_HOURS_PER_DAY 10.5 /* integral of activity() over an average day */
#define GAS_J_PER_ML 28.5           /* 31.65 MJ/m3 at 90 % boiler efficiency */
#define SHOWER_ML_S 600             /* a combi boiler heating shower water, about 2.2 m3/h */
#define SHOWER_S 540
#define SENTINEL_TST "632525252525W" /* "no time" as Fluvius and Smarty meters send it */

/* One kind of appliance that runs now and then on top of the base load. */
struct appliance {
	int32_t power_w;
	int32_t duration_s;
	double per_day; /* runs on an average day */
};

static const struct appliance appliances[] = {
        {2000, 180, 4.0},   /* kettle */
        {1100, 240, 2.0},   /* microwave */
        {2100, 1800, 0.5},  /* washing machine, heating the water */
        {1900, 2700, 0.5},  /* dishwasher */
        {2400, 2400, 0.25}, /* oven */
        {900, 1200, 0.25},  /* vacuum cleaner */
        {1600, 420, 0.6},   /* hair dryer */
        {2800, 1200, 0.6},  /* induction hob */
};

struct event {
	int64_t end; /* UTC; the event is running while end > now */
	int32_t power_w;
	int phase;
};

struct month_peak {
	int64_t period_end; /* UTC of the first local midnight of the next month */
	int64_t peak_t;     /* UTC of the end of the peak quarter hour, 0 = none */
	int32_t peak_w;
};

struct local {
	int year, month, day, hour, min, sec;
	int wday; /* 0 = Sunday */
	bool dst;
};

struct sim_meter {
	struct sim_config cfg;
	struct sim_rng rng;
	uint64_t seq; /* telegrams written so far */
	int64_t now;  /* UTC of the current telegram */
	char digits[SERIAL_DIGITS + 1];

	/* household and weather */
	int32_t base_w;
	int32_t fridge_offset_s;
	double cloud;     /* fraction of the clear-sky solar output, 0.1 .. 1 */
	double weather_c; /* deviation of the outdoor temperature from the season, K */
	double grid_dv;   /* slow deviation of the grid voltage, 0.1 V */
	struct event events[MAX_EVENTS];
	int64_t shower_end;

	/* the current telegram's values, exactly as printed */
	int32_t phase_w[3]; /* net per phase: positive import, negative export */
	int32_t volt_dv[3];
	int32_t amp_ca[3]; /* 0.01 A */
	int32_t import_w, export_w, q_import_var, q_export_var;
	int tariff; /* 1 or 2 */

	/* registers: exact integrals of the printed powers */
	int64_t import_ws[2], export_ws[2]; /* W*s per tariff */
	int64_t q_import_vs, q_export_vs;   /* var*s */
	int32_t gas_ml_s;
	int64_t gas_ml;
	int64_t gas_capture_t, gas_capture_ml;

	/* Belgian demand: quarter-hour averages and monthly peaks of the import power */
	int64_t quarter_ws;
	int64_t quarter_from; /* UTC since when quarter_ws counts: the quarter's start, or later
	                       * for the first quarter of the simulation */
	int32_t last_quarter_w;
	int month; /* year * 12 + month - 1 of the running local month */
	struct month_peak running;
	struct month_peak history[HISTORY_MONTHS];
	int n_history;

	/* static facts of this meter */
	int64_t failure_end[2];
	int32_t failure_s[2];
	int failures, long_failures;
	int sags[3], swells[3];
};

/* ---- random numbers ---- */

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

void sim_rng_seed(struct sim_rng *r, uint64_t seed)
{
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

uint64_t sim_rng_next(struct sim_rng *r)
{
	uint64_t *s = r->s;
	const uint64_t result = rotl(s[1] * 5, 7) * 9;
	const uint64_t t = s[1] << 17;

	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return result;
}

double sim_rng_unit(struct sim_rng *r)
{
	return (double)(sim_rng_next(r) >> 11) * 0x1.0p-53;
}

uint32_t sim_rng_below(struct sim_rng *r, uint32_t n)
{
	return (uint32_t)(((sim_rng_next(r) >> 32) * (uint64_t)n) >> 32);
}

/* ---- dialects ---- */

static const char *const dialect_names[SIM_DIALECT_COUNT] = {"dsmr5", "dsmr4", "dsmr22", "fluvius",
                                                             "smarty"};

int sim_dialect_parse(const char *name, enum sim_dialect *ret)
{
	for (int d = 0; d < SIM_DIALECT_COUNT; d++) {
		if (strcmp(name, dialect_names[d]) == 0) {
			*ret = (enum sim_dialect)d;
			return 0;
		}
	}
	return -EINVAL;
}

const char *sim_dialect_name(enum sim_dialect d)
{
	return d < SIM_DIALECT_COUNT ? dialect_names[d] : "?";
}

int sim_dialect_period_s(enum sim_dialect d)
{
	return d == SIM_DSMR5 || d == SIM_FLUVIUS ? 1 : 10;
}

int sim_dialect_phases(enum sim_dialect d)
{
	return d == SIM_DSMR5 || d == SIM_FLUVIUS ? 3 : 1;
}

bool sim_dialect_has_crc(enum sim_dialect d)
{
	return d != SIM_DSMR22;
}

/* ---- time ---- */

static int64_t floor_div(int64_t a, int64_t b)
{
	int64_t q = a / b;
	return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

static void to_local(int64_t utc, struct local *ret)
{
	const struct p1_tz tz = P1_TZ_CET;
	int64_t local;

	ret->dst = p1_tz_is_dst(&tz, utc);
	local = utc + (ret->dst ? tz.dst_offset_s : tz.std_offset_s);
	p1_time_to_civil(local, &ret->year, &ret->month, &ret->day, &ret->hour, &ret->min,
	                 &ret->sec);
	ret->wday = (int)((floor_div(local, 86400) % 7 + 11) % 7); /* 1970-01-01 was a Thursday */
}

/* UTC of local midnight starting the month key (year * 12 + month - 1). */
static int64_t month_start_utc(int key)
{
	const struct p1_tz tz = P1_TZ_CET;
	int64_t local = p1_time_from_civil(key / 12, key % 12 + 1, 1, 0, 0, 0);
	int64_t utc = local - tz.std_offset_s;

	return p1_tz_is_dst(&tz, utc) ? local - tz.dst_offset_s : utc;
}

static int month_key(int64_t utc)
{
	struct local lt;

	to_local(utc, &lt);
	return lt.year * 12 + lt.month - 1;
}

static double hour_of_day(const struct local *lt)
{
	return lt->hour + lt->min / 60.0 + lt->sec / 3600.0;
}

static double day_of_year(const struct local *lt)
{
	return (double)(p1_time_from_civil(lt->year, lt->month, lt->day, 0, 0, 0) -
	                p1_time_from_civil(lt->year, 1, 1, 0, 0, 0)) /
	       86400.0;
}

/* NL: tariff 1 (low) 23:00-07:00 and weekends. BE: tariff 2 (night) 22:00-07:00 and
 * weekends, tariff 1 (day) otherwise. Smarty has totals only. */
static int tariff_at(enum sim_dialect d, const struct local *lt)
{
	bool weekend = lt->wday == 0 || lt->wday == 6;

	if (d == SIM_SMARTY)
		return 1;
	if (d == SIM_FLUVIUS)
		return weekend || lt->hour >= 22 || lt->hour < 7 ? 2 : 1;
	return weekend || lt->hour >= 23 || lt->hour < 7 ? 1 : 2;
}

/* ---- physics ---- */

static double bump(double h, double centre, double width)
{
	double d = (h - centre) / width;
	return exp(-0.5 * d * d);
}

/* How busy the household is: about 0.05 at night, peaks of 1 to 1.3 in the morning and the
 * evening. */
static double activity(const struct local *lt)
{
	double h = hour_of_day(lt);
	bool weekend = lt->wday == 0 || lt->wday == 6;

	return 0.05 + bump(h, weekend ? 9.0 : 7.25, 0.9) +
	       (weekend ? 0.7 : 0.4) * bump(h, 12.5, 1.2) + 1.3 * bump(h, 19.0, 1.8);
}

/* Fraction of the panels' peak power under a clear sky. */
static double solar_clear_sky(int64_t t, const struct local *lt)
{
	double decl = 23.44 * PI / 180 * sin(2 * PI * (284 + day_of_year(lt)) / 365.0);
	double lat = SOLAR_LATITUDE_DEG * PI / 180;
	double solar_h =
	        (double)(t - floor_div(t, 86400) * 86400) / 3600.0 + SOLAR_LONGITUDE_DEG / 15.0;
	double hour_angle = (solar_h - 12.0) * 15.0 * PI / 180;
	double sin_elev = sin(lat) * sin(decl) + cos(lat) * cos(decl) * cos(hour_angle);

	return sin_elev > 0 ? 0.85 * pow(sin_elev, 1.15) : 0;
}

/* A bounded random walk: step scaled with the square root of the simulated time. */
static double wander(struct sim_rng *r, double x, double per_minute, double lo, double hi,
                     int64_t step_s)
{
	double scale = sqrt((double)step_s / 60.0);

	if (scale > 10)
		scale = 10;
	x += (sim_rng_unit(r) - 0.5) * 2 * per_minute * scale;
	return x < lo ? lo : x > hi ? hi : x;
}

static void start_events(struct sim_meter *m, int64_t t, double act)
{
	double step = (double)m->cfg.step_s;

	for (size_t a = 0; a < sizeof(appliances) / sizeof(appliances[0]); a++) {
		double p = appliances[a].per_day * act / ACTIVITY_HOURS_PER_DAY / 3600.0 * step;
		if (sim_rng_unit(&m->rng) >= p)
			continue;
		for (int e = 0; e < MAX_EVENTS; e++) {
			if (m->events[e].end > t)
				continue;
			/* it began somewhere within the last step */
			m->events[e].end = t - (int64_t)(sim_rng_unit(&m->rng) * step) +
			                   appliances[a].duration_s;
			m->events[e].power_w = appliances[a].power_w;
			m->events[e].phase =
			        m->cfg.phases == 3 ? (int)sim_rng_below(&m->rng, 3) : 0;
			break;
		}
	}
	if (sim_rng_unit(&m->rng) < 1.5 * act / ACTIVITY_HOURS_PER_DAY / 3600.0 * step &&
	    m->shower_end <= t)
		m->shower_end = t - (int64_t)(sim_rng_unit(&m->rng) * step) + SHOWER_S;
}

/* Household consumption per phase, W. */
static void household_load(struct sim_meter *m, int64_t t, double act, double load_w[3])
{
	static const double share3[3] = {0.45, 0.30, 0.25}, share1[3] = {1, 0, 0};
	const double *share = m->cfg.phases == 3 ? share3 : share1;
	double base = m->base_w * (0.97 + 0.06 * sim_rng_unit(&m->rng));
	double lights = 300.0 * act * (0.85 + 0.3 * sim_rng_unit(&m->rng));
	bool fridge_on = (t + m->fridge_offset_s) % 2700 < 900;

	for (int p = 0; p < 3; p++)
		load_w[p] = (base + lights) * share[p];
	load_w[m->cfg.phases == 3 ? 1 : 0] += fridge_on ? 90 : 0;
	for (int e = 0; e < MAX_EVENTS; e++)
		if (m->events[e].end > t)
			load_w[m->events[e].phase] += m->events[e].power_w;
}

static void measure_voltages(struct sim_meter *m, const double load_w[3], double solar_w)
{
	for (int p = 0; p < 3; p++) {
		double noise = (sim_rng_unit(&m->rng) - 0.5) * 8;
		double v = 2300 + m->grid_dv + noise - load_w[p] / 150 + solar_w / 120;
		int32_t watts = m->phase_w[p] < 0 ? -m->phase_w[p] : m->phase_w[p];

		m->volt_dv[p] = (int32_t)lround(v);
		m->amp_ca[p] =
		        (int32_t)(((int64_t)watts * 1000 + m->volt_dv[p] / 2) / m->volt_dv[p]);
	}
}

/* Powers as the meter prints them, at telegram time t. */
static void measure(struct sim_meter *m, int64_t t, const struct local *lt)
{
	double act = activity(lt), load_w[3], total_load = 0;
	double solar = m->cfg.solar_wp * solar_clear_sky(t, lt) * m->cloud;
	double solar_phase = m->cfg.phases == 3 ? solar / 3 : solar;
	int32_t net = 0, q;

	start_events(m, t, act);
	household_load(m, t, act, load_w);
	for (int p = 0; p < 3; p++) {
		bool live = p < m->cfg.phases;
		m->phase_w[p] =
		        live ? (int32_t)lround(load_w[p]) - (int32_t)lround(solar_phase) : 0;
		net += m->phase_w[p];
		total_load += load_w[p];
	}
	measure_voltages(m, load_w, solar_phase);
	if (m->cfg.dialect == SIM_DSMR22) /* 10 W resolution */
		net = (net >= 0 ? net + 5 : net - 5) / 10 * 10;
	m->import_w = net > 0 ? net : 0;
	m->export_w = net < 0 ? -net : 0;
	q = (int32_t)lround(total_load * 0.2 - 70 + 20 * sim_rng_unit(&m->rng));
	m->q_import_var = q > 0 ? q : 0;
	m->q_export_var = q < 0 ? -q : 0;
	m->tariff = tariff_at(m->cfg.dialect, lt);
}

static int32_t gas_rate_ml_s(struct sim_meter *m, int64_t t, const struct local *lt)
{
	double h = hour_of_day(lt);
	double outdoor = 10.5 - 7.5 * cos(2 * PI * (day_of_year(lt) - 20) / 365.25) +
	                 3 * sin(2 * PI * (h - 9) / 24) + m->weather_c;
	double setpoint = h >= 6.5 && h < 22.5 ? 20.0 : 16.0;
	double loss_w = 150.0 * (setpoint - 2.0 - outdoor); /* 2 K from people and appliances */
	double ml_s = loss_w > 0 ? loss_w / GAS_J_PER_ML : 0;

	if (m->shower_end > t)
		ml_s += SHOWER_ML_S;
	return (int32_t)lround(ml_s);
}

/* ---- registers ---- */

static void demand_roll_month(struct sim_meter *m, int64_t t)
{
	int key = month_key(t);

	if (key == m->month)
		return;
	if (m->n_history == HISTORY_MONTHS) {
		memmove(&m->history[0], &m->history[1],
		        sizeof(m->history[0]) * (HISTORY_MONTHS - 1));
		m->n_history--;
	}
	m->running.period_end = month_start_utc(m->month + 1);
	m->history[m->n_history++] = m->running;
	m->month = key;
	m->running = (struct month_peak){0};
}

/* A quarter hour ended at q_end: its average may be the month's new peak. A quarter the
 * simulation saw less than half of (it began late in it) does not count. */
static void demand_close_quarter(struct sim_meter *m, int64_t q_end)
{
	int64_t seen_s = q_end - m->quarter_from;

	m->last_quarter_w = (int32_t)(m->quarter_ws / seen_s);
	m->quarter_ws = 0;
	m->quarter_from = q_end;
	demand_roll_month(m, q_end - 1);
	if (seen_s >= QUARTER_S / 2 &&
	    (m->running.peak_t == 0 || m->last_quarter_w > m->running.peak_w)) {
		m->running.peak_w = m->last_quarter_w;
		m->running.peak_t = q_end;
	}
}

/* Spread a constant import power over (from, to] into quarter hours. */
static void demand_add(struct sim_meter *m, int64_t from, int64_t to, int32_t power_w)
{
	while (from < to) {
		int64_t q_end = (floor_div(from, QUARTER_S) + 1) * QUARTER_S;
		int64_t seg_end = q_end < to ? q_end : to;

		m->quarter_ws += (int64_t)power_w * (seg_end - from);
		if (seg_end == q_end)
			demand_close_quarter(m, q_end);
		from = seg_end;
	}
	demand_roll_month(m, to);
}

/* Take the gas register at the last capture boundary in (t - step, t]. */
static void gas_capture(struct sim_meter *m, int64_t t, int64_t gas_before)
{
	int64_t period = m->cfg.dialect == SIM_DSMR5 || m->cfg.dialect == SIM_FLUVIUS ? 300 : 3600;
	int64_t boundary = floor_div(t, period) * period;
	int64_t from = t - m->cfg.step_s;

	if (boundary > from) {
		m->gas_capture_t = boundary;
		m->gas_capture_ml = gas_before + (int64_t)m->gas_ml_s * (boundary - from);
	}
}

/* Everything the powers of this telegram did over the step that ends at t. */
static void integrate(struct sim_meter *m, int64_t t, const struct local *lt)
{
	int64_t step = m->cfg.step_s, gas_before = m->gas_ml;

	m->import_ws[m->tariff - 1] += (int64_t)m->import_w * step;
	m->export_ws[m->tariff - 1] += (int64_t)m->export_w * step;
	m->q_import_vs += (int64_t)m->q_import_var * step;
	m->q_export_vs += (int64_t)m->q_export_var * step;
	m->gas_ml_s = gas_rate_ml_s(m, t, lt);
	m->gas_ml += (int64_t)m->gas_ml_s * step;
	gas_capture(m, t, gas_before);
	demand_add(m, t - step, t, m->import_w);
}

static void weather_update(struct sim_meter *m)
{
	int64_t step = m->cfg.step_s;

	m->cloud = wander(&m->rng, m->cloud, 0.03, 0.1, 1.0, step);
	m->weather_c = wander(&m->rng, m->weather_c, 0.02, -5.0, 5.0, step);
	m->grid_dv = wander(&m->rng, m->grid_dv, 2.0, -40.0, 60.0, step);
}

/* ---- life cycle ---- */

static void init_registers(struct sim_meter *m)
{
	struct sim_rng *r = &m->rng;
	int64_t step = m->cfg.step_s, start = m->cfg.start;
	int64_t gas_period =
	        m->cfg.dialect == SIM_DSMR5 || m->cfg.dialect == SIM_FLUVIUS ? 300 : 3600;
	int64_t import_wh = 4000000 + sim_rng_below(r, 16000000);
	int64_t export_wh = m->cfg.solar_wp > 0 ? 1000000 + sim_rng_below(r, 9000000) : 0;

	/* registers in W*s: a meter with a few years of history, 40-50 % of it in tariff 1 */
	m->import_ws[0] = import_wh * (40 + sim_rng_below(r, 11)) / 100 * 3600;
	m->import_ws[1] = import_wh * 3600 - m->import_ws[0];
	m->export_ws[0] = export_wh * (40 + sim_rng_below(r, 11)) / 100 * 3600;
	m->export_ws[1] = export_wh * 3600 - m->export_ws[0];
	m->q_import_vs = import_wh / 5 * 3600;
	m->q_export_vs = import_wh / 50 * 3600;
	m->gas_ml = (int64_t)(500000 + sim_rng_below(r, 4000000)) * 1000; /* litres * 1000 */
	m->gas_capture_t = floor_div(start - step, gas_period) * gas_period;
	m->gas_capture_ml = m->gas_ml;
	m->month = month_key(start - step);
	m->quarter_from = start - step;
}

static void init_household(struct sim_meter *m)
{
	struct sim_rng *r = &m->rng;
	int64_t start = m->cfg.start;

	for (int i = 0; i < SERIAL_DIGITS; i++)
		m->digits[i] = (char)('0' + sim_rng_below(r, 10));
	m->base_w = 150 + (int32_t)sim_rng_below(r, 151);
	m->fridge_offset_s = (int32_t)sim_rng_below(r, 2700);
	m->cloud = 0.3 + 0.7 * sim_rng_unit(r);
	m->weather_c = (sim_rng_unit(r) - 0.5) * 6;
	m->failure_end[0] =
	        start - 86400 * (120 + (int64_t)sim_rng_below(r, 200)) - sim_rng_below(r, 86400);
	m->failure_s[0] = 200 + (int32_t)sim_rng_below(r, 20000);
	m->failure_end[1] =
	        start - 86400 * (5 + (int64_t)sim_rng_below(r, 100)) - sim_rng_below(r, 86400);
	m->failure_s[1] = 190 + (int32_t)sim_rng_below(r, 5000);
	m->failures = 3 + (int)sim_rng_below(r, 10);
	m->long_failures = 2;
	for (int p = 0; p < 3; p++) {
		m->sags[p] = (int)sim_rng_below(r, 4);
		m->swells[p] = (int)sim_rng_below(r, 2);
	}
}

struct sim_meter *sim_meter_new(const struct sim_config *cfg)
{
	struct sim_meter *m;

	if (cfg->dialect >= SIM_DIALECT_COUNT || (cfg->phases != 1 && cfg->phases != 3) ||
	    cfg->step_s < 1 || cfg->step_s > SIM_STEP_MAX_S || cfg->solar_wp < 0)
		return NULL;
	m = calloc(1, sizeof(*m));
	if (!m)
		return NULL;
	m->cfg = *cfg;
	sim_rng_seed(&m->rng, cfg->seed);
	init_household(m);
	init_registers(m);
	return m;
}

struct sim_meter *sim_meter_free(struct sim_meter *m)
{
	free(m);
	return NULL;
}

void sim_meter_system_title(const struct sim_meter *m, uint8_t ret_title[8])
{
	memcpy(ret_title, "SIM", 3); /* NOLINT(bugprone-not-null-terminated-result): not a string */
	memcpy(ret_title + 3, m->digits + SERIAL_DIGITS - 5, 5);
}

/* ---- text ---- */

struct out {
	char *p;
	size_t len, cap;
	bool overflow;
};

/* Flawfinder: ignore: an attribute, not a call */
static void __attribute__((format(printf, 2, 3))) put(struct out *o, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (o->overflow)
		return;
	va_start(ap, fmt);
	/* Flawfinder: ignore: fmt is put's, and gcc checks put's callers (format attribute) */
	n = vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= o->cap - o->len)
		o->overflow = true;
	else
		o->len += (size_t)n;
}

/* "YYMMDDhhmmssX" in local meter time; X = S or W, or nothing when flag is false. */
static void format_tst(char buf[16], int64_t utc, bool flag)
{
	struct local lt;

	to_local(utc, &lt);
	snprintf(buf, 16, "%02d%02d%02d%02d%02d%02d%s", lt.year % 100, lt.month, lt.day, lt.hour,
	         lt.min, lt.sec, flag ? (lt.dst ? "S" : "W") : "");
}

static void put_tst_group(struct out *o, int64_t utc)
{
	char tst[16];

	format_tst(tst, utc, true);
	put(o, "(%s)", tst);
}

/* An octet-string identifier: prefix followed by the last n serial digits, hex encoded. */
static void put_id(struct out *o, const struct sim_meter *m, const char *obis, const char *prefix,
                   int n)
{
	put(o, "%s(", obis);
	for (const char *c = prefix; *c; c++)
		put(o, "%02X", (unsigned char)*c);
	for (int i = SERIAL_DIGITS - n; i < SERIAL_DIGITS; i++)
		put(o, "%02X", (unsigned char)m->digits[i]);
	put(o, ")\r\n");
}

/* A fixed-point number: value in units of 10^-decimals, zero padded to int_digits. */
static void put_fixed(struct out *o, int64_t value, int int_digits, int decimals)
{
	int64_t scale = 1;

	for (int i = 0; i < decimals; i++)
		scale *= 10;
	put(o, "%0*lld", int_digits, (long long)(value / scale));
	if (decimals > 0)
		put(o, ".%0*lld", decimals, (long long)(value % scale));
}

static void put_kw(struct out *o, const char *obis, int32_t watts, int int_digits, int decimals)
{
	int32_t v = decimals == 2 ? watts / 10 : watts;

	put(o, "%s(", obis);
	put_fixed(o, v, int_digits, decimals);
	put(o, "*kW)\r\n");
}

static void put_register(struct out *o, const char *obis, int64_t unit_s, int int_digits,
                         const char *unit)
{
	put(o, "%s(", obis);
	put_fixed(o, unit_s / 3600, int_digits, 3);
	put(o, "*%s)\r\n", unit);
}

static void put_tariff_registers(struct out *o, const struct sim_meter *m, int int_digits)
{
	put_register(o, "1-0:1.8.1", m->import_ws[0], int_digits, "kWh");
	put_register(o, "1-0:1.8.2", m->import_ws[1], int_digits, "kWh");
	put_register(o, "1-0:2.8.1", m->export_ws[0], int_digits, "kWh");
	put_register(o, "1-0:2.8.2", m->export_ws[1], int_digits, "kWh");
	put(o, "0-0:96.14.0(%04d)\r\n", m->tariff);
}

static void put_failures(struct out *o, const struct sim_meter *m)
{
	put(o, "0-0:96.7.21(%05d)\r\n", m->failures);
	put(o, "0-0:96.7.9(%05d)\r\n", m->long_failures);
	put(o, "1-0:99.97.0(2)(0-0:96.7.19)");
	for (int i = 0; i < 2; i++) {
		put_tst_group(o, m->failure_end[i]);
		put(o, "(%010d*s)", m->failure_s[i]);
	}
	put(o, "\r\n");
}

static void put_sags_swells(struct out *o, const struct sim_meter *m)
{
	static const int code[3] = {32, 52, 72};

	for (int p = 0; p < m->cfg.phases; p++)
		/* NOLINTNEXTLINE(clang-analyzer-core.CallAndMessage): phases is 1 or 3 */
		put(o, "1-0:%d.32.0(%05d)\r\n", code[p], m->sags[p]);
	for (int p = 0; p < m->cfg.phases; p++)
		put(o, "1-0:%d.36.0(%05d)\r\n", code[p], m->swells[p]);
}

static void put_phase_volts(struct out *o, const struct sim_meter *m)
{
	for (int p = 0; p < m->cfg.phases; p++)
		put(o, "1-0:%d.7.0(%03d.%d*V)\r\n", 32 + 20 * p, m->volt_dv[p] / 10,
		    m->volt_dv[p] % 10);
}

/* Currents as whole amperes (DSMR 4/5, Smarty) or with two decimals (Fluvius). */
static void put_phase_amps(struct out *o, const struct sim_meter *m, bool centi)
{
	for (int p = 0; p < m->cfg.phases; p++) {
		if (centi)
			put(o, "1-0:%d.7.0(%03d.%02d*A)\r\n", 31 + 20 * p, m->amp_ca[p] / 100,
			    m->amp_ca[p] % 100);
		else
			put(o, "1-0:%d.7.0(%03d*A)\r\n", 31 + 20 * p, (m->amp_ca[p] + 50) / 100);
	}
}

static void put_phase_powers(struct out *o, const struct sim_meter *m)
{
	char obis[32];

	for (int dir = 0; dir < 2; dir++) {
		for (int p = 0; p < m->cfg.phases; p++) {
			int32_t w = dir == 0 ? m->phase_w[p] : -m->phase_w[p];
			snprintf(obis, sizeof(obis), "1-0:%d.7.0", 21 + 20 * p + dir);
			put_kw(o, obis, w > 0 ? w : 0, 2, 3);
		}
	}
}

/* Dutch M-Bus gas meter on channel 1, temperature-corrected value (24.2.1). */
static void put_gas_nl(struct out *o, const struct sim_meter *m)
{
	put(o, "0-1:24.1.0(003)\r\n");
	put_id(o, m, "0-1:96.1.0", "G0028", 12);
	put(o, "0-1:24.2.1");
	put_tst_group(o, m->gas_capture_t);
	put(o, "(");
	put_fixed(o, m->gas_capture_ml / 1000, 5, 3);
	put(o, "*m3)\r\n");
}

static void render_dsmr5(const struct sim_meter *m, struct out *o)
{
	put(o, "/ISK5\\2M550T-1012\r\n\r\n1-3:0.2.8(50)\r\n0-0:1.0.0");
	put_tst_group(o, m->now);
	put(o, "\r\n");
	put_id(o, m, "0-0:96.1.1", "E0043", 12);
	put_tariff_registers(o, m, 6);
	put_kw(o, "1-0:1.7.0", m->import_w, 2, 3);
	put_kw(o, "1-0:2.7.0", m->export_w, 2, 3);
	put_failures(o, m);
	put_sags_swells(o, m);
	put(o, "0-0:96.13.0()\r\n");
	put_phase_volts(o, m);
	put_phase_amps(o, m, false);
	put_phase_powers(o, m);
	put_gas_nl(o, m);
}

static void render_dsmr4(const struct sim_meter *m, struct out *o)
{
	put(o, "/KFM5KAIFA-METER\r\n\r\n1-3:0.2.8(42)\r\n0-0:1.0.0");
	put_tst_group(o, m->now);
	put(o, "\r\n");
	put_id(o, m, "0-0:96.1.1", "E0026", 12);
	put_tariff_registers(o, m, 6);
	put_kw(o, "1-0:1.7.0", m->import_w, 2, 3);
	put_kw(o, "1-0:2.7.0", m->export_w, 2, 3);
	put_failures(o, m);
	put_sags_swells(o, m);
	put(o, "0-0:96.13.1()\r\n0-0:96.13.0()\r\n");
	put_phase_amps(o, m, false);
	put_phase_powers(o, m);
	put_gas_nl(o, m);
}

static void render_dsmr22(const struct sim_meter *m, struct out *o)
{
	char tst[16];

	put(o, "/ISk5\\2MT382-1000\r\n\r\n");
	put_id(o, m, "0-0:96.1.1", "K8EG", 12);
	put_tariff_registers(o, m, 5);
	put_kw(o, "1-0:1.7.0", m->import_w, 4, 2);
	put_kw(o, "1-0:2.7.0", m->export_w, 4, 2);
	put(o, "0-0:17.0.0(999*A)\r\n0-0:96.3.10(1)\r\n0-0:96.13.1()\r\n0-0:96.13.0()\r\n");
	put(o, "0-1:24.1.0(3)\r\n");
	put_id(o, m, "0-1:96.1.0", "G0001", 12);
	format_tst(tst, m->gas_capture_t, false);
	put(o, "0-1:24.3.0(%s)(00)(60)(1)(0-1:24.2.1)(m3)\r\n(", tst);
	put_fixed(o, m->gas_capture_ml / 1000, 5, 3);
	put(o, ")\r\n0-1:24.4.0(1)\r\n");
}

static void put_demand(struct out *o, const struct sim_meter *m)
{
	int64_t elapsed = m->now - m->quarter_from;
	int32_t avg_w = elapsed ? (int32_t)(m->quarter_ws / elapsed) : m->last_quarter_w;

	put_kw(o, "1-0:1.4.0", avg_w, 2, 3);
	put(o, "1-0:1.6.0");
	if (m->running.peak_t)
		put_tst_group(o, m->running.peak_t);
	else
		put(o, "(" SENTINEL_TST ")");
	put(o, "(");
	put_fixed(o, m->running.peak_w, 2, 3);
	put(o, "*kW)\r\n0-0:98.1.0(%d)(1-0:1.6.0)(1-0:1.6.0)", m->n_history);
	for (int i = 0; i < m->n_history; i++) {
		const struct month_peak *h = &m->history[i];
		put_tst_group(o, h->period_end);
		if (h->peak_t)
			put_tst_group(o, h->peak_t);
		else
			put(o, "(" SENTINEL_TST ")");
		put(o, "(");
		put_fixed(o, h->peak_w, 2, 3);
		put(o, "*kW)");
	}
	put(o, m->n_history ? "\r\n" : "()\r\n");
}

static void render_fluvius(const struct sim_meter *m, struct out *o)
{
	put(o, "/FLU5\\253769484_A\r\n\r\n0-0:96.1.4(50217)\r\n");
	put_id(o, m, "0-0:96.1.1", "1SAG", 10);
	put(o, "0-0:1.0.0");
	put_tst_group(o, m->now);
	put(o, "\r\n");
	put_tariff_registers(o, m, 6);
	put_demand(o, m);
	put_kw(o, "1-0:1.7.0", m->import_w, 2, 3);
	put_kw(o, "1-0:2.7.0", m->export_w, 2, 3);
	put_phase_powers(o, m);
	put_phase_volts(o, m);
	put_phase_amps(o, m, true);
	put(o, "0-0:96.3.10(1)\r\n0-0:17.0.0(999.9*kW)\r\n1-0:31.4.0(999*A)\r\n0-0:96.13.0()\r\n");
	put(o, "0-1:24.1.0(003)\r\n");
	put_id(o, m, "0-1:96.1.1", "7FLO", 10);
	put(o, "0-1:24.4.0(1)\r\n0-1:24.2.3");
	put_tst_group(o, m->gas_capture_t);
	put(o, "(");
	put_fixed(o, m->gas_capture_ml / 1000, 5, 3);
	put(o, "*m3)\r\n");
}

static void render_smarty(const struct sim_meter *m, struct out *o)
{
	put(o, "/Lux5\\253694471_M\r\n\r\n1-3:0.2.8(42)\r\n0-0:1.0.0");
	put_tst_group(o, m->now);
	put(o, "\r\n");
	put_id(o, m, "0-0:42.0.0", "SAG", 13);
	put_register(o, "1-0:1.8.0", m->import_ws[0] + m->import_ws[1], 6, "kWh");
	put_register(o, "1-0:2.8.0", m->export_ws[0] + m->export_ws[1], 6, "kWh");
	put_register(o, "1-0:3.8.0", m->q_import_vs, 6, "kvarh");
	put_register(o, "1-0:4.8.0", m->q_export_vs, 6, "kvarh");
	put_kw(o, "1-0:1.7.0", m->import_w, 2, 3);
	put_kw(o, "1-0:2.7.0", m->export_w, 2, 3);
	put(o, "1-0:3.7.0(");
	put_fixed(o, m->q_import_var, 2, 3);
	put(o, "*kvar)\r\n1-0:4.7.0(");
	put_fixed(o, m->q_export_var, 2, 3);
	put(o, "*kvar)\r\n0-0:17.0.0(999.9*kVA)\r\n1-1:31.4.0(040*A)(-040*A)\r\n");
	put(o, "0-0:96.3.10(1)\r\n0-0:96.7.21(%05d)\r\n", m->failures);
	put(o, "1-0:99.97.0(0)(0-0:96.7.19)\r\n");
	put_sags_swells(o, m);
	put(o, "0-0:96.13.0()\r\n");
	put_phase_volts(o, m);
	put_phase_amps(o, m, false);
	put_phase_powers(o, m);
}

static void (*const renderers[SIM_DIALECT_COUNT])(const struct sim_meter *, struct out *) = {
        render_dsmr5, render_dsmr4, render_dsmr22, render_fluvius, render_smarty};

int sim_meter_next(struct sim_meter *m, char *buf, size_t cap)
{
	struct out o = {.p = buf, .cap = cap};
	struct local lt;
	int64_t t = m->cfg.start + (int64_t)m->seq * m->cfg.step_s;

	m->now = t;
	to_local(t, &lt);
	weather_update(m);
	measure(m, t, &lt);
	integrate(m, t, &lt);
	m->seq++;

	renderers[m->cfg.dialect](m, &o);
	put(&o, "!");
	if (sim_dialect_has_crc(m->cfg.dialect) && !o.overflow)
		put(&o, "%04X", p1_crc16(0, o.p, o.len));
	put(&o, "\r\n");
	if (o.overflow)
		return -ENOBUFS;
	return (int)o.len;
}
