/* simulate_model.h - the simulated meter behind `p1d simulate`: a household's load, optional
 * solar panels and gas heating, the registers that integrate them, and the telegram text of
 * each dialect. Deterministic: the same configuration gives the same bytes. No I/O, no clock;
 * simulate.c owns the options, the pacing and the outputs. */
#ifndef P1D_SIMULATE_MODEL_H
#define P1D_SIMULATE_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Largest telegram the model writes (a 3-phase Fluvius telegram with 13 history months is
 * about 1.6 kB). */
#define SIM_TELEGRAM_MAX 4096

/* Longest simulated step: the demand bookkeeping walks every quarter hour of a step. */
#define SIM_STEP_MAX_S ((int64_t)31 * 86400)

enum sim_dialect { SIM_DSMR5, SIM_DSMR4, SIM_DSMR22, SIM_FLUVIUS, SIM_SMARTY, SIM_DIALECT_COUNT };

/* xoshiro256** seeded through splitmix64: small, fast, reproducible everywhere. */
struct sim_rng {
	uint64_t s[4];
};

void sim_rng_seed(struct sim_rng *r, uint64_t seed);
uint64_t sim_rng_next(struct sim_rng *r);
/* Uniform in [0, 1). */
double sim_rng_unit(struct sim_rng *r);
/* Uniform in [0, n), n >= 1. */
uint32_t sim_rng_below(struct sim_rng *r, uint32_t n);

struct sim_config {
	enum sim_dialect dialect;
	int phases;       /* 1 or 3 */
	int32_t solar_wp; /* peak power of the solar panels in W; 0 = none */
	int64_t start;    /* UTC of the first telegram */
	int64_t step_s;   /* simulated seconds per telegram, 1 .. SIM_STEP_MAX_S */
	uint64_t seed;
};

/* Dialect by its option name ("dsmr5", ...). Returns 0, or -EINVAL for an unknown name. */
int sim_dialect_parse(const char *name, enum sim_dialect *ret);
const char *sim_dialect_name(enum sim_dialect d);
/* The meter's telegram period in seconds: 1 for DSMR 5 and Fluvius, 10 otherwise. */
int sim_dialect_period_s(enum sim_dialect d);
/* Phases of a typical installation: 3 for DSMR 5 and Fluvius, 1 otherwise. */
int sim_dialect_phases(enum sim_dialect d);
/* Does the dialect end its telegrams with a CRC? */
bool sim_dialect_has_crc(enum sim_dialect d);

struct sim_meter;

/* NULL when out of memory or the configuration is out of range. */
struct sim_meter *sim_meter_new(const struct sim_config *cfg);
struct sim_meter *sim_meter_free(struct sim_meter *m);

/* Advance to the next telegram (the first call gives the one at cfg->start, telegram i is at
 * start + i * step_s) and write its text, CRC included, into buf. Returns its length, or
 * -ENOBUFS when cap is too small. */
int sim_meter_next(struct sim_meter *m, char *buf, size_t cap);

/* The DLMS system title of this meter: "SIM" and five digits of its serial number. */
void sim_meter_system_title(const struct sim_meter *m, uint8_t ret_title[8]);

#endif
