/* p1/fields.h - the one list of named telegram fields.
 *
 * Every value p1d exposes (JSON keys, MQTT topics, Home Assistant discovery, Prometheus
 * names, history columns) is named here and nowhere else. Names follow the vocabulary shared
 * by arduino-dsmr and ESPHome's dsmr component where one exists. The OBIS codes that feed each
 * field live in src/p1/obis.c; docs/fields.md lists both and a test keeps them in step.
 *
 * Columns: C identifier, JSON name, kind, unit the spec uses (what is assumed when a meter
 * omits it), class, quantity (what kind of physical thing, for device classes), description.
 */
#ifndef P1_FIELDS_H
#define P1_FIELDS_H

#include <stddef.h>

enum p1_kind {
	P1_KIND_NUMBER, /* fixed-point number, optional unit */
	P1_KIND_TEXT,   /* string (hex-decoded when the meter hex-encodes it) */
	P1_KIND_TIME,   /* meter timestamp */
	P1_KIND_EVENTS, /* power failure log, see struct p1_event */
	P1_KIND_DEMAND, /* monthly peak history, see struct p1_demand */
};

enum p1_class {
	P1_CLASS_INFO,    /* identifiers, states, texts */
	P1_CLASS_COUNTER, /* a register that only grows (energy, gas, event counts) */
	P1_CLASS_GAUGE,   /* an instantaneous measurement (power, voltage, current) */
};

/* X(id, name, kind, unit, class, quantity, description) */
#define P1_FIELD_LIST(X) \
	X(P1_F_P1_VERSION, "p1_version", TEXT, "", INFO, "", "P1 output version (1-3:0.2.8), e.g. 50 for DSMR 5.0") \
	X(P1_F_P1_VERSION_BE, "p1_version_be", TEXT, "", INFO, "", "Belgian e-MUCS P1 version (0-0:96.1.4)") \
	X(P1_F_TIMESTAMP, "timestamp", TIME, "", INFO, "timestamp", "Telegram date and time") \
	X(P1_F_EQUIPMENT_ID, "equipment_id", TEXT, "", INFO, "", "Electricity meter equipment identifier") \
	X(P1_F_EAN, "ean", TEXT, "", INFO, "", "EAN/GSRN of the connection point (Belgium, 0-0:96.1.2)") \
	X(P1_F_DEVICE_NAME, "logical_device_name", TEXT, "", INFO, "", "COSEM logical device name (0-0:42.0.0)") \
	X(P1_F_E_DEL_T1, "energy_delivered_tariff1", NUMBER, "kWh", COUNTER, "energy", "Energy delivered to the client, tariff 1 (NL low, BE day)") \
	X(P1_F_E_DEL_T2, "energy_delivered_tariff2", NUMBER, "kWh", COUNTER, "energy", "Energy delivered to the client, tariff 2 (NL normal, BE night)") \
	X(P1_F_E_DEL_T3, "energy_delivered_tariff3", NUMBER, "kWh", COUNTER, "energy", "Energy delivered to the client, tariff 3") \
	X(P1_F_E_DEL_T4, "energy_delivered_tariff4", NUMBER, "kWh", COUNTER, "energy", "Energy delivered to the client, tariff 4") \
	X(P1_F_E_DEL_T5, "energy_delivered_tariff5", NUMBER, "kWh", COUNTER, "energy", "Energy delivered to the client, tariff 5") \
	X(P1_F_E_DEL_T6, "energy_delivered_tariff6", NUMBER, "kWh", COUNTER, "energy", "Energy delivered to the client, tariff 6") \
	X(P1_F_E_DEL_TOTAL, "energy_delivered_lux", NUMBER, "kWh", COUNTER, "energy", "Energy delivered to the client, all tariffs (1-0:1.8.0: Luxembourg, Sweden, Austria, ...)") \
	X(P1_F_E_RET_T1, "energy_returned_tariff1", NUMBER, "kWh", COUNTER, "energy", "Energy returned by the client, tariff 1") \
	X(P1_F_E_RET_T2, "energy_returned_tariff2", NUMBER, "kWh", COUNTER, "energy", "Energy returned by the client, tariff 2") \
	X(P1_F_E_RET_T3, "energy_returned_tariff3", NUMBER, "kWh", COUNTER, "energy", "Energy returned by the client, tariff 3") \
	X(P1_F_E_RET_T4, "energy_returned_tariff4", NUMBER, "kWh", COUNTER, "energy", "Energy returned by the client, tariff 4") \
	X(P1_F_E_RET_T5, "energy_returned_tariff5", NUMBER, "kWh", COUNTER, "energy", "Energy returned by the client, tariff 5") \
	X(P1_F_E_RET_T6, "energy_returned_tariff6", NUMBER, "kWh", COUNTER, "energy", "Energy returned by the client, tariff 6") \
	X(P1_F_E_RET_TOTAL, "energy_returned_lux", NUMBER, "kWh", COUNTER, "energy", "Energy returned by the client, all tariffs (1-0:2.8.0)") \
	X(P1_F_RE_IMP, "total_imported_energy", NUMBER, "kvarh", COUNTER, "reactive_energy", "Reactive energy imported (1-0:3.8.0)") \
	X(P1_F_RE_EXP, "total_exported_energy", NUMBER, "kvarh", COUNTER, "reactive_energy", "Reactive energy exported (1-0:4.8.0)") \
	X(P1_F_RE_Q1, "reactive_energy_q1", NUMBER, "kvarh", COUNTER, "reactive_energy", "Reactive energy, quadrant I (1-0:5.8.0)") \
	X(P1_F_RE_Q2, "reactive_energy_q2", NUMBER, "kvarh", COUNTER, "reactive_energy", "Reactive energy, quadrant II (1-0:6.8.0)") \
	X(P1_F_RE_Q3, "reactive_energy_q3", NUMBER, "kvarh", COUNTER, "reactive_energy", "Reactive energy, quadrant III (1-0:7.8.0)") \
	X(P1_F_RE_Q4, "reactive_energy_q4", NUMBER, "kvarh", COUNTER, "reactive_energy", "Reactive energy, quadrant IV (1-0:8.8.0)") \
	X(P1_F_TARIFF, "electricity_tariff", TEXT, "", INFO, "", "Active tariff indicator (0001, 0002, ...)") \
	X(P1_F_P_DEL, "power_delivered", NUMBER, "kW", GAUGE, "power", "Actual power delivered to the client (+P)") \
	X(P1_F_P_RET, "power_returned", NUMBER, "kW", GAUGE, "power", "Actual power returned by the client (-P)") \
	X(P1_F_Q_DEL, "reactive_power_delivered", NUMBER, "kvar", GAUGE, "reactive_power", "Reactive power imported (+Q, 1-0:3.7.0)") \
	X(P1_F_Q_RET, "reactive_power_returned", NUMBER, "kvar", GAUGE, "reactive_power", "Reactive power exported (-Q, 1-0:4.7.0)") \
	X(P1_F_S_DEL, "apparent_power_delivered", NUMBER, "kVA", GAUGE, "apparent_power", "Apparent power imported (1-0:9.7.0)") \
	X(P1_F_S_RET, "apparent_power_returned", NUMBER, "kVA", GAUGE, "apparent_power", "Apparent power exported (1-0:10.7.0)") \
	X(P1_F_AVG_DEMAND, "active_energy_import_current_average_demand", NUMBER, "kW", GAUGE, "power", "Running quarter-hour average import power (Belgium, 1-0:1.4.0)") \
	X(P1_F_MAX_DEMAND, "active_energy_import_maximum_demand_running_month", NUMBER, "kW", GAUGE, "power", "Highest quarter-hour average import power of the running month (1-0:1.6.0)") \
	X(P1_F_MAX_DEMAND_TIME, "active_energy_import_maximum_demand_running_month_timestamp", TIME, "", INFO, "timestamp", "When the running month's peak occurred") \
	X(P1_F_DEMAND_HISTORY, "active_energy_import_maximum_demand_last_13_months", DEMAND, "kW", INFO, "power", "Monthly quarter-hour peaks of up to 13 past months (0-0:98.1.0)") \
	X(P1_F_THRESHOLD, "electricity_threshold", NUMBER, "kW", INFO, "power", "Limiter threshold (0-0:17.0.0; A in DSMR 3, kVA in Luxembourg)") \
	X(P1_F_SWITCH, "electricity_switch_position", NUMBER, "", INFO, "", "Breaker state: 0 disconnected, 1 connected, 2 ready for reconnection") \
	X(P1_F_FUSE_L1, "fuse_threshold_l1", NUMBER, "A", INFO, "current", "Fuse supervision / current limit threshold, L1 (1-0:31.4.0)") \
	X(P1_F_FUSE_L2, "fuse_threshold_l2", NUMBER, "A", INFO, "current", "Current limit threshold, L2 (1-0:51.4.0)") \
	X(P1_F_FUSE_L3, "fuse_threshold_l3", NUMBER, "A", INFO, "current", "Current limit threshold, L3 (1-0:71.4.0)") \
	X(P1_F_CUR_THR_IMP, "current_threshold_import", NUMBER, "A", INFO, "current", "Import current threshold (Luxembourg 1-1:31.4.0 / 1-1:34.4.0, first value)") \
	X(P1_F_CUR_THR_EXP, "current_threshold_export", NUMBER, "A", INFO, "current", "Export current threshold (Luxembourg, second value)") \
	X(P1_F_FAILURES, "electricity_failures", NUMBER, "", COUNTER, "", "Number of power failures in any phase") \
	X(P1_F_LONG_FAILURES, "electricity_long_failures", NUMBER, "", COUNTER, "", "Number of long power failures in any phase") \
	X(P1_F_FAILURE_LOG, "electricity_failure_log", EVENTS, "s", INFO, "", "Long power failure event log (1-0:99.97.0), oldest first") \
	X(P1_F_SAGS_L1, "electricity_sags_l1", NUMBER, "", COUNTER, "", "Number of voltage sags in phase L1") \
	X(P1_F_SAGS_L2, "electricity_sags_l2", NUMBER, "", COUNTER, "", "Number of voltage sags in phase L2") \
	X(P1_F_SAGS_L3, "electricity_sags_l3", NUMBER, "", COUNTER, "", "Number of voltage sags in phase L3") \
	X(P1_F_SWELLS_L1, "electricity_swells_l1", NUMBER, "", COUNTER, "", "Number of voltage swells in phase L1") \
	X(P1_F_SWELLS_L2, "electricity_swells_l2", NUMBER, "", COUNTER, "", "Number of voltage swells in phase L2") \
	X(P1_F_SWELLS_L3, "electricity_swells_l3", NUMBER, "", COUNTER, "", "Number of voltage swells in phase L3") \
	X(P1_F_MSG_SHORT, "message_short", TEXT, "", INFO, "", "Text message code (0-0:96.13.1)") \
	X(P1_F_MSG_LONG, "message_long", TEXT, "", INFO, "", "Text message (0-0:96.13.0)") \
	X(P1_F_MSG_MBUS1, "message_mbus1", TEXT, "", INFO, "", "Text message for M-Bus channel 1 (Luxembourg 0-0:96.13.2)") \
	X(P1_F_MSG_MBUS2, "message_mbus2", TEXT, "", INFO, "", "Text message for M-Bus channel 2 (0-0:96.13.3)") \
	X(P1_F_MSG_MBUS3, "message_mbus3", TEXT, "", INFO, "", "Text message for M-Bus channel 3 (0-0:96.13.4)") \
	X(P1_F_MSG_MBUS4, "message_mbus4", TEXT, "", INFO, "", "Text message for M-Bus channel 4 (0-0:96.13.5)") \
	X(P1_F_V_L1, "voltage_l1", NUMBER, "V", GAUGE, "voltage", "Instantaneous voltage L1") \
	X(P1_F_V_L2, "voltage_l2", NUMBER, "V", GAUGE, "voltage", "Instantaneous voltage L2") \
	X(P1_F_V_L3, "voltage_l3", NUMBER, "V", GAUGE, "voltage", "Instantaneous voltage L3") \
	X(P1_F_I_L1, "current_l1", NUMBER, "A", GAUGE, "current", "Instantaneous current L1") \
	X(P1_F_I_L2, "current_l2", NUMBER, "A", GAUGE, "current", "Instantaneous current L2") \
	X(P1_F_I_L3, "current_l3", NUMBER, "A", GAUGE, "current", "Instantaneous current L3") \
	X(P1_F_P_DEL_L1, "power_delivered_l1", NUMBER, "kW", GAUGE, "power", "Instantaneous power delivered, L1 (+P)") \
	X(P1_F_P_DEL_L2, "power_delivered_l2", NUMBER, "kW", GAUGE, "power", "Instantaneous power delivered, L2 (+P)") \
	X(P1_F_P_DEL_L3, "power_delivered_l3", NUMBER, "kW", GAUGE, "power", "Instantaneous power delivered, L3 (+P)") \
	X(P1_F_P_RET_L1, "power_returned_l1", NUMBER, "kW", GAUGE, "power", "Instantaneous power returned, L1 (-P)") \
	X(P1_F_P_RET_L2, "power_returned_l2", NUMBER, "kW", GAUGE, "power", "Instantaneous power returned, L2 (-P)") \
	X(P1_F_P_RET_L3, "power_returned_l3", NUMBER, "kW", GAUGE, "power", "Instantaneous power returned, L3 (-P)") \
	X(P1_F_Q_DEL_L1, "reactive_power_delivered_l1", NUMBER, "kvar", GAUGE, "reactive_power", "Reactive power imported, L1 (+Q)") \
	X(P1_F_Q_DEL_L2, "reactive_power_delivered_l2", NUMBER, "kvar", GAUGE, "reactive_power", "Reactive power imported, L2 (+Q)") \
	X(P1_F_Q_DEL_L3, "reactive_power_delivered_l3", NUMBER, "kvar", GAUGE, "reactive_power", "Reactive power imported, L3 (+Q)") \
	X(P1_F_Q_RET_L1, "reactive_power_returned_l1", NUMBER, "kvar", GAUGE, "reactive_power", "Reactive power exported, L1 (-Q)") \
	X(P1_F_Q_RET_L2, "reactive_power_returned_l2", NUMBER, "kvar", GAUGE, "reactive_power", "Reactive power exported, L2 (-Q)") \
	X(P1_F_Q_RET_L3, "reactive_power_returned_l3", NUMBER, "kvar", GAUGE, "reactive_power", "Reactive power exported, L3 (-Q)") \
	X(P1_F_FREQ, "frequency", NUMBER, "Hz", GAUGE, "frequency", "Grid frequency (1-0:14.7.0)") \
	X(P1_F_PF, "power_factor", NUMBER, "", GAUGE, "power_factor", "Power factor (1-0:13.7.0)") \
	X(P1_F_PF_L1, "power_factor_l1", NUMBER, "", GAUGE, "power_factor", "Power factor L1 (1-0:33.7.0)") \
	X(P1_F_PF_L2, "power_factor_l2", NUMBER, "", GAUGE, "power_factor", "Power factor L2 (1-0:53.7.0)") \
	X(P1_F_PF_L3, "power_factor_l3", NUMBER, "", GAUGE, "power_factor", "Power factor L3 (1-0:73.7.0)") \
	X(P1_F_GAS_TYPE, "gas_device_type", NUMBER, "", INFO, "", "M-Bus device type of the gas meter (3)") \
	X(P1_F_GAS_ID, "gas_equipment_id", TEXT, "", INFO, "", "Gas meter equipment identifier") \
	X(P1_F_GAS_VALVE, "gas_valve_position", NUMBER, "", INFO, "", "Gas valve state: 0 closed, 1 open, 2 ready") \
	X(P1_F_GAS, "gas_delivered", NUMBER, "m3", COUNTER, "gas", "Gas delivered, last value from the gas meter (NL 24.2.1, BE 24.2.3, DSMR 2.2 24.3.0)") \
	X(P1_F_GAS_TIME, "gas_timestamp", TIME, "", INFO, "timestamp", "When the gas meter captured gas_delivered") \
	X(P1_F_WATER_TYPE, "water_device_type", NUMBER, "", INFO, "", "M-Bus device type of the water meter (7)") \
	X(P1_F_WATER_ID, "water_equipment_id", TEXT, "", INFO, "", "Water meter equipment identifier") \
	X(P1_F_WATER_VALVE, "water_valve_position", NUMBER, "", INFO, "", "Water valve state") \
	X(P1_F_WATER, "water_delivered", NUMBER, "m3", COUNTER, "water", "Water delivered, last value from the water meter") \
	X(P1_F_WATER_TIME, "water_timestamp", TIME, "", INFO, "timestamp", "When the water meter captured water_delivered") \
	X(P1_F_THERMAL_TYPE, "thermal_device_type", NUMBER, "", INFO, "", "M-Bus device type of the heat/cold meter (4, 10-13)") \
	X(P1_F_THERMAL_ID, "thermal_equipment_id", TEXT, "", INFO, "", "Heat meter equipment identifier") \
	X(P1_F_THERMAL_VALVE, "thermal_valve_position", NUMBER, "", INFO, "", "Heat valve state") \
	X(P1_F_THERMAL, "thermal_delivered", NUMBER, "GJ", COUNTER, "heat", "Heat delivered, last value from the heat meter") \
	X(P1_F_THERMAL_TIME, "thermal_timestamp", TIME, "", INFO, "timestamp", "When the heat meter captured thermal_delivered") \
	X(P1_F_SLAVE_TYPE, "slave_device_type", NUMBER, "", INFO, "", "M-Bus device type of the slave electricity meter (2)") \
	X(P1_F_SLAVE_ID, "slave_equipment_id", TEXT, "", INFO, "", "Slave electricity meter equipment identifier") \
	X(P1_F_SLAVE_VALVE, "slave_valve_position", NUMBER, "", INFO, "", "Slave meter switch state") \
	X(P1_F_SLAVE, "slave_delivered", NUMBER, "kWh", COUNTER, "energy", "Energy of the slave electricity meter") \
	X(P1_F_SLAVE_TIME, "slave_timestamp", TIME, "", INFO, "timestamp", "When the slave meter captured slave_delivered")

#define P1_FIELD_ENUM_(id, name, kind, unit, cls, qty, desc) id,
enum p1_field { P1_FIELD_LIST(P1_FIELD_ENUM_) P1_FIELD_COUNT };
#undef P1_FIELD_ENUM_

struct p1_field_info {
	const char *name;
	enum p1_kind kind;
	const char *unit; /* "" when the value has no unit */
	enum p1_class cls;
	const char *quantity; /* "energy", "power", "gas", ... or "" */
	const char *description;
};

/* Metadata of a field; field must be < P1_FIELD_COUNT. */
const struct p1_field_info *p1_field_info(enum p1_field field);

/* Field by JSON name, or -1 when there is none. */
int p1_field_by_name(const char *name);

/* OBIS codes that feed a field, for documentation: writes up to max codes ("1-0:1.8.1")
 * into codes[] and returns how many there are. M-Bus fields report "0-n:..." patterns. */
size_t p1_field_obis(enum p1_field field, const char **codes, size_t max);

#endif
