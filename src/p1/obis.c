/* obis.c - the one OBIS table: code -> field and how to read the line; field metadata from
 * p1/fields.h; dialect names. The table is sorted by key for binary search (a unit test checks
 * the order). M-Bus channel lines (0-n:24.x, 0-n:96.1.x with n = 1..4) are not in the table:
 * the parser reads them into channels and classifies them by device type afterwards.
 */
#include "obis.h"

#include <string.h>

#include "p1/telegram.h"

#define K(a, b, c, d, e) P1_OBIS_KEY(a, b, c, d, e)

static const struct p1_obis_entry table[] = {
	{K(0, 0, 1, 0, 0), "0-0:1.0.0", P1_F_TIMESTAMP, H_TIME, 0},
	{K(0, 0, 17, 0, 0), "0-0:17.0.0", P1_F_THRESHOLD, H_NUM, 0},
	{K(0, 0, 32, 32, 0), "0-0:32.32.0", P1_F_SAGS_L1, H_NUM, 0},
	{K(0, 0, 32, 36, 0), "0-0:32.36.0", P1_F_SWELLS_L1, H_NUM, 0},
	{K(0, 0, 42, 0, 0), "0-0:42.0.0", P1_F_DEVICE_NAME, H_HEX, 0},
	{K(0, 0, 52, 32, 0), "0-0:52.32.0", P1_F_SAGS_L2, H_NUM, 0},
	{K(0, 0, 52, 36, 0), "0-0:52.36.0", P1_F_SWELLS_L2, H_NUM, 0},
	{K(0, 0, 72, 32, 0), "0-0:72.32.0", P1_F_SAGS_L3, H_NUM, 0},
	{K(0, 0, 72, 36, 0), "0-0:72.36.0", P1_F_SWELLS_L3, H_NUM, 0},
	{K(0, 0, 96, 1, 0), "0-0:96.1.0", P1_F_EQUIPMENT_ID, H_HEX, 0},
	{K(0, 0, 96, 1, 1), "0-0:96.1.1", P1_F_EQUIPMENT_ID, H_HEX, 0},
	{K(0, 0, 96, 1, 2), "0-0:96.1.2", P1_F_EAN, H_HEX, 0},
	{K(0, 0, 96, 1, 4), "0-0:96.1.4", P1_F_P1_VERSION_BE, H_HEX, 0},
	{K(0, 0, 96, 1, 255), "0-0:96.1.255", P1_F_EQUIPMENT_ID, H_HEX, 0},
	{K(0, 0, 96, 3, 10), "0-0:96.3.10", P1_F_SWITCH, H_NUM, 0},
	{K(0, 0, 96, 7, 9), "0-0:96.7.9", P1_F_LONG_FAILURES, H_NUM, 0},
	{K(0, 0, 96, 7, 21), "0-0:96.7.21", P1_F_FAILURES, H_NUM, 0},
	{K(0, 0, 96, 13, 0), "0-0:96.13.0", P1_F_MSG_LONG, H_HEX, 0},
	{K(0, 0, 96, 13, 1), "0-0:96.13.1", P1_F_MSG_SHORT, H_HEX, 0},
	{K(0, 0, 96, 13, 2), "0-0:96.13.2", P1_F_MSG_MBUS1, H_HEX, 0},
	{K(0, 0, 96, 13, 3), "0-0:96.13.3", P1_F_MSG_MBUS2, H_HEX, 0},
	{K(0, 0, 96, 13, 4), "0-0:96.13.4", P1_F_MSG_MBUS3, H_HEX, 0},
	{K(0, 0, 96, 13, 5), "0-0:96.13.5", P1_F_MSG_MBUS4, H_HEX, 0},
	{K(0, 0, 96, 14, 0), "0-0:96.14.0", P1_F_TARIFF, H_HEX, 0},
	{K(0, 0, 98, 1, 0), "0-0:98.1.0", P1_F_DEMAND_HISTORY, H_DEMAND, 0},
	{K(1, 0, 1, 4, 0), "1-0:1.4.0", P1_F_AVG_DEMAND, H_NUM, 0},
	{K(1, 0, 1, 6, 0), "1-0:1.6.0", P1_F_MAX_DEMAND, H_NUM_TIME, P1_F_MAX_DEMAND_TIME},
	{K(1, 0, 1, 7, 0), "1-0:1.7.0", P1_F_P_DEL, H_NUM, 0},
	{K(1, 0, 1, 8, 0), "1-0:1.8.0", P1_F_E_DEL_TOTAL, H_NUM, 0},
	{K(1, 0, 1, 8, 1), "1-0:1.8.1", P1_F_E_DEL_T1, H_NUM, 0},
	{K(1, 0, 1, 8, 2), "1-0:1.8.2", P1_F_E_DEL_T2, H_NUM, 0},
	{K(1, 0, 1, 8, 3), "1-0:1.8.3", P1_F_E_DEL_T3, H_NUM, 0},
	{K(1, 0, 1, 8, 4), "1-0:1.8.4", P1_F_E_DEL_T4, H_NUM, 0},
	{K(1, 0, 1, 8, 5), "1-0:1.8.5", P1_F_E_DEL_T5, H_NUM, 0},
	{K(1, 0, 1, 8, 6), "1-0:1.8.6", P1_F_E_DEL_T6, H_NUM, 0},
	{K(1, 0, 2, 7, 0), "1-0:2.7.0", P1_F_P_RET, H_NUM, 0},
	{K(1, 0, 2, 8, 0), "1-0:2.8.0", P1_F_E_RET_TOTAL, H_NUM, 0},
	{K(1, 0, 2, 8, 1), "1-0:2.8.1", P1_F_E_RET_T1, H_NUM, 0},
	{K(1, 0, 2, 8, 2), "1-0:2.8.2", P1_F_E_RET_T2, H_NUM, 0},
	{K(1, 0, 2, 8, 3), "1-0:2.8.3", P1_F_E_RET_T3, H_NUM, 0},
	{K(1, 0, 2, 8, 4), "1-0:2.8.4", P1_F_E_RET_T4, H_NUM, 0},
	{K(1, 0, 2, 8, 5), "1-0:2.8.5", P1_F_E_RET_T5, H_NUM, 0},
	{K(1, 0, 2, 8, 6), "1-0:2.8.6", P1_F_E_RET_T6, H_NUM, 0},
	{K(1, 0, 3, 7, 0), "1-0:3.7.0", P1_F_Q_DEL, H_NUM, 0},
	{K(1, 0, 3, 8, 0), "1-0:3.8.0", P1_F_RE_IMP, H_NUM, 0},
	{K(1, 0, 4, 7, 0), "1-0:4.7.0", P1_F_Q_RET, H_NUM, 0},
	{K(1, 0, 4, 8, 0), "1-0:4.8.0", P1_F_RE_EXP, H_NUM, 0},
	{K(1, 0, 5, 8, 0), "1-0:5.8.0", P1_F_RE_Q1, H_NUM, 0},
	{K(1, 0, 6, 8, 0), "1-0:6.8.0", P1_F_RE_Q2, H_NUM, 0},
	{K(1, 0, 7, 8, 0), "1-0:7.8.0", P1_F_RE_Q3, H_NUM, 0},
	{K(1, 0, 8, 8, 0), "1-0:8.8.0", P1_F_RE_Q4, H_NUM, 0},
	{K(1, 0, 9, 7, 0), "1-0:9.7.0", P1_F_S_DEL, H_NUM, 0},
	{K(1, 0, 10, 7, 0), "1-0:10.7.0", P1_F_S_RET, H_NUM, 0},
	{K(1, 0, 13, 7, 0), "1-0:13.7.0", P1_F_PF, H_NUM, 0},
	{K(1, 0, 14, 7, 0), "1-0:14.7.0", P1_F_FREQ, H_NUM, 0},
	{K(1, 0, 21, 7, 0), "1-0:21.7.0", P1_F_P_DEL_L1, H_NUM, 0},
	{K(1, 0, 22, 7, 0), "1-0:22.7.0", P1_F_P_RET_L1, H_NUM, 0},
	{K(1, 0, 23, 7, 0), "1-0:23.7.0", P1_F_Q_DEL_L1, H_NUM, 0},
	{K(1, 0, 24, 7, 0), "1-0:24.7.0", P1_F_Q_RET_L1, H_NUM, 0},
	{K(1, 0, 31, 4, 0), "1-0:31.4.0", P1_F_FUSE_L1, H_NUM, 0},
	{K(1, 0, 31, 7, 0), "1-0:31.7.0", P1_F_I_L1, H_NUM, 0},
	{K(1, 0, 32, 7, 0), "1-0:32.7.0", P1_F_V_L1, H_NUM, 0},
	{K(1, 0, 32, 32, 0), "1-0:32.32.0", P1_F_SAGS_L1, H_NUM, 0},
	{K(1, 0, 32, 36, 0), "1-0:32.36.0", P1_F_SWELLS_L1, H_NUM, 0},
	{K(1, 0, 33, 7, 0), "1-0:33.7.0", P1_F_PF_L1, H_NUM, 0},
	{K(1, 0, 41, 7, 0), "1-0:41.7.0", P1_F_P_DEL_L2, H_NUM, 0},
	{K(1, 0, 42, 7, 0), "1-0:42.7.0", P1_F_P_RET_L2, H_NUM, 0},
	{K(1, 0, 43, 7, 0), "1-0:43.7.0", P1_F_Q_DEL_L2, H_NUM, 0},
	{K(1, 0, 44, 7, 0), "1-0:44.7.0", P1_F_Q_RET_L2, H_NUM, 0},
	{K(1, 0, 51, 4, 0), "1-0:51.4.0", P1_F_FUSE_L2, H_NUM, 0},
	{K(1, 0, 51, 7, 0), "1-0:51.7.0", P1_F_I_L2, H_NUM, 0},
	{K(1, 0, 52, 7, 0), "1-0:52.7.0", P1_F_V_L2, H_NUM, 0},
	{K(1, 0, 52, 32, 0), "1-0:52.32.0", P1_F_SAGS_L2, H_NUM, 0},
	{K(1, 0, 52, 36, 0), "1-0:52.36.0", P1_F_SWELLS_L2, H_NUM, 0},
	{K(1, 0, 53, 7, 0), "1-0:53.7.0", P1_F_PF_L2, H_NUM, 0},
	{K(1, 0, 61, 7, 0), "1-0:61.7.0", P1_F_P_DEL_L3, H_NUM, 0},
	{K(1, 0, 62, 7, 0), "1-0:62.7.0", P1_F_P_RET_L3, H_NUM, 0},
	{K(1, 0, 63, 7, 0), "1-0:63.7.0", P1_F_Q_DEL_L3, H_NUM, 0},
	{K(1, 0, 64, 7, 0), "1-0:64.7.0", P1_F_Q_RET_L3, H_NUM, 0},
	{K(1, 0, 71, 4, 0), "1-0:71.4.0", P1_F_FUSE_L3, H_NUM, 0},
	{K(1, 0, 71, 7, 0), "1-0:71.7.0", P1_F_I_L3, H_NUM, 0},
	{K(1, 0, 72, 7, 0), "1-0:72.7.0", P1_F_V_L3, H_NUM, 0},
	{K(1, 0, 72, 32, 0), "1-0:72.32.0", P1_F_SAGS_L3, H_NUM, 0},
	{K(1, 0, 72, 36, 0), "1-0:72.36.0", P1_F_SWELLS_L3, H_NUM, 0},
	{K(1, 0, 73, 7, 0), "1-0:73.7.0", P1_F_PF_L3, H_NUM, 0},
	{K(1, 0, 99, 97, 0), "1-0:99.97.0", P1_F_FAILURE_LOG, H_EVENTS, 0},
	{K(1, 1, 31, 4, 0), "1-1:31.4.0", P1_F_CUR_THR_IMP, H_PAIR, P1_F_CUR_THR_EXP},
	{K(1, 1, 34, 4, 0), "1-1:34.4.0", P1_F_CUR_THR_IMP, H_PAIR, P1_F_CUR_THR_EXP},
	{K(1, 3, 0, 2, 8), "1-3:0.2.8", P1_F_P1_VERSION, H_RAW, 0},
};

#define N_TABLE (sizeof(table) / sizeof(table[0]))

const struct p1_obis_entry *p1_obis_lookup(uint64_t key)
{
	size_t lo = 0, hi = N_TABLE;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (table[mid].key < key)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < N_TABLE && table[lo].key == key ? &table[lo] : NULL;
}

const struct p1_obis_entry *p1_obis_table(size_t *ret_n)
{
	*ret_n = N_TABLE;
	return table;
}

#define P1_FIELD_INFO_(id, name, kind, unit, cls, qty, desc) \
	[id] = {name, P1_KIND_##kind, unit, P1_CLASS_##cls, qty, desc},
static const struct p1_field_info infos[P1_FIELD_COUNT] = {P1_FIELD_LIST(P1_FIELD_INFO_)};
#undef P1_FIELD_INFO_

const struct p1_field_info *p1_field_info(enum p1_field field)
{
	return &infos[field];
}

int p1_field_by_name(const char *name)
{
	for (int i = 0; i < P1_FIELD_COUNT; i++)
		if (!strcmp(infos[i].name, name))
			return i;
	return -1;
}

/* Fields filled from M-Bus channels, with the codes that feed them. */
static const struct {
	uint8_t first, last;
	const char *codes[4];
} mbus_docs[] = {
	{P1_F_GAS_TYPE, P1_F_GAS_TYPE, {"0-n:24.1.0"}},
	{P1_F_GAS_ID, P1_F_GAS_ID, {"0-n:96.1.0", "0-n:96.1.1"}},
	{P1_F_GAS_VALVE, P1_F_GAS_VALVE, {"0-n:24.4.0"}},
	{P1_F_GAS, P1_F_GAS_TIME, {"0-n:24.2.1", "0-n:24.2.3", "0-n:24.3.0"}},
	{P1_F_WATER_TYPE, P1_F_WATER_TYPE, {"0-n:24.1.0"}},
	{P1_F_WATER_ID, P1_F_WATER_ID, {"0-n:96.1.0", "0-n:96.1.1"}},
	{P1_F_WATER_VALVE, P1_F_WATER_VALVE, {"0-n:24.4.0"}},
	{P1_F_WATER, P1_F_WATER_TIME, {"0-n:24.2.1", "0-n:24.3.0"}},
	{P1_F_THERMAL_TYPE, P1_F_THERMAL_TYPE, {"0-n:24.1.0"}},
	{P1_F_THERMAL_ID, P1_F_THERMAL_ID, {"0-n:96.1.0", "0-n:96.1.1"}},
	{P1_F_THERMAL_VALVE, P1_F_THERMAL_VALVE, {"0-n:24.4.0"}},
	{P1_F_THERMAL, P1_F_THERMAL_TIME, {"0-n:24.2.1", "0-n:24.3.0", "0-n:24.3.1"}},
	{P1_F_SLAVE_TYPE, P1_F_SLAVE_TYPE, {"0-n:24.1.0"}},
	{P1_F_SLAVE_ID, P1_F_SLAVE_ID, {"0-n:96.1.0", "0-n:96.1.1"}},
	{P1_F_SLAVE_VALVE, P1_F_SLAVE_VALVE, {"0-n:24.4.0"}},
	{P1_F_SLAVE, P1_F_SLAVE_TIME, {"0-n:24.2.1", "0-n:24.3.0"}},
};

size_t p1_field_obis(enum p1_field field, const char **codes, size_t max)
{
	size_t n = 0;
	for (size_t i = 0; i < N_TABLE; i++)
		if (table[i].field == field || (table[i].field2 == field && table[i].handler >= H_NUM_TIME &&
						table[i].handler <= H_PAIR)) {
			if (n < max)
				codes[n] = table[i].code;
			n++;
		}
	for (size_t i = 0; i < sizeof(mbus_docs) / sizeof(mbus_docs[0]); i++)
		if (field >= mbus_docs[i].first && field <= mbus_docs[i].last)
			for (size_t j = 0; j < 4 && mbus_docs[i].codes[j]; j++) {
				if (n < max)
					codes[n] = mbus_docs[i].codes[j];
				n++;
			}
	return n;
}

static const char *const dialects[P1_DIALECT_COUNT] = {
	[P1_DIALECT_UNKNOWN] = "unknown", [P1_DIALECT_DSMR22] = "dsmr22",
	[P1_DIALECT_DSMR4] = "dsmr4",     [P1_DIALECT_DSMR5] = "dsmr5",
	[P1_DIALECT_FLUVIUS] = "fluvius", [P1_DIALECT_SMARTY] = "smarty",
	[P1_DIALECT_AUSTRIA] = "austria", [P1_DIALECT_SWEDEN] = "sweden",
	[P1_DIALECT_HUNGARY] = "hungary", [P1_DIALECT_EASYMETER] = "easymeter",
	[P1_DIALECT_ACE4000] = "ace4000", [P1_DIALECT_GENERIC] = "generic",
};

const char *p1_dialect_name(enum p1_dialect d)
{
	return (unsigned)d < P1_DIALECT_COUNT ? dialects[d] : "unknown";
}

int p1_dialect_by_name(const char *name)
{
	for (int i = 0; i < P1_DIALECT_COUNT; i++)
		if (!strcmp(dialects[i], name))
			return i;
	return -1;
}
