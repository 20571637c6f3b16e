/* health.c - store and MQTT health for /api/v1/status, /metrics and STATUS= (see health.h). */
#include "health.h"

#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "mqtt.h"
#include "store.h"

/* One number of a module's stats: its /api/v1/status member and its Prometheus family. */
struct stat_row {
	const char *json;   /* member of the status section */
	const char *metric; /* family name, NULL: status only */
	const char *type;   /* "gauge" or "counter" */
	const char *help;
	size_t offset;      /* of a uint64_t, size_t or bool in the stats struct */
	char kind;          /* 'u' uint64_t, 'z' size_t, 'b' bool */
};

#define ROW(S, json, metric, type, help, member, kind)                                        \
	{json, metric, type, help, offsetof(struct S, member), kind}

static const struct stat_row store_rows[] = {
        ROW(store_stats, "healthy", "p1d_store_healthy", "gauge",
            "1 when the last database write succeeded", healthy, 'b'),
        ROW(store_stats, "size_bytes", "p1d_store_size_bytes", "gauge",
            "Size of the database file and its WAL", db_bytes, 'u'),
        ROW(store_stats, "readings_committed", "p1d_store_readings_committed_total", "counter",
            "Readings written to the database", committed, 'u'),
        ROW(store_stats, "readings_waiting", "p1d_store_readings_waiting", "gauge",
            "Readings in memory not yet written", backlog, 'z'),
        ROW(store_stats, "readings_dropped", "p1d_store_readings_dropped_total", "counter",
            "Raw readings dropped (database not writable for too long, or out of memory)",
            dropped, 'u'),
        ROW(store_stats, "commits", "p1d_store_commits_total", "counter",
            "Transactions that wrote readings", commits, 'u'),
        ROW(store_stats, "commit_failures", "p1d_store_commit_failures_total", "counter",
            "Failed database writes", commit_failures, 'u'),
        ROW(store_stats, "checkpoints", "p1d_store_checkpoints_total", "counter",
            "WAL checkpoints (when the database file is synced to disk)", checkpoints, 'u'),
        ROW(store_stats, "pages_written", "p1d_store_pages_written_total", "counter",
            "Database pages written since the database was opened", pages_written, 'u'),
        ROW(store_stats, "segments", NULL, NULL, NULL, segments, 'u'),
};

static const struct stat_row mqtt_rows[] = {
        ROW(mqtt_stats, "connected", "p1d_mqtt_connected", "gauge",
            "1 while connected to the broker", connected, 'b'),
        ROW(mqtt_stats, "connects", "p1d_mqtt_connects_total", "counter",
            "Successful connections to the broker", connects, 'u'),
        ROW(mqtt_stats, "published", "p1d_mqtt_published_total", "counter",
            "Messages handed to the broker", published, 'u'),
        ROW(mqtt_stats, "delivered", "p1d_mqtt_delivered_total", "counter",
            "State messages the broker acknowledged", delivered, 'u'),
        ROW(mqtt_stats, "backfilled", "p1d_mqtt_backfilled_total", "counter",
            "Readings of an outage sent from the history and acknowledged", backfilled, 'u'),
        ROW(mqtt_stats, "waiting", "p1d_mqtt_queue", "gauge", "Readings waiting for the broker",
            waiting, 'u'),
        ROW(mqtt_stats, "dropped", "p1d_mqtt_dropped_total", "counter",
            "State messages that will never be delivered", dropped, 'u'),
        ROW(mqtt_stats, "skipped", "p1d_mqtt_skipped_total", "counter",
            "Per-field messages skipped while the broker lagged", skipped, 'u'),
};

static uint64_t row_value(const struct stat_row *r, const void *st)
{
	const char *p = (const char *)st + r->offset;
	if (r->kind == 'b')
		return *(const bool *)p;
	if (r->kind == 'z')
		return *(const size_t *)p;
	return *(const uint64_t *)p;
}

static void rows_status(const struct stat_row *rows, size_t n, const void *st, json_t *sec)
{
	for (size_t i = 0; i < n; i++)
		json_object_set_new(sec, rows[i].json,
		                    rows[i].kind == 'b'
		                            ? json_boolean(row_value(&rows[i], st))
		                            : json_integer((json_int_t)row_value(&rows[i], st)));
}

static void family(FILE *out, const char *name, const char *type, const char *help,
                   uint64_t value)
{
	fprintf(out, "# HELP %s %s\n# TYPE %s %s\n%s %" PRIu64 "\n", name, help, name, type, name,
	        value);
}

static void rows_metrics(const struct stat_row *rows, size_t n, const void *st, FILE *out)
{
	for (size_t i = 0; i < n; i++)
		if (rows[i].metric)
			family(out, rows[i].metric, rows[i].type, rows[i].help,
			       row_value(&rows[i], st));
}

#define N_ROWS(a) (sizeof(a) / sizeof((a)[0]))

void health_store_status(void *ud, json_t *sec)
{
	struct store_stats st;
	store_get_stats(ud, &st);
	json_object_set_new(sec, "path", json_string(store_path(ud)));
	rows_status(store_rows, N_ROWS(store_rows), &st, sec);
	json_object_set_new(sec, "last_commit_utc",
	                    st.last_commit_utc ? json_integer(st.last_commit_utc) : json_null());
}

void health_store_metrics(void *ud, FILE *out)
{
	struct store_stats st;
	store_get_stats(ud, &st);
	rows_metrics(store_rows, N_ROWS(store_rows), &st, out);
}

void health_mqtt_status(void *ud, json_t *sec)
{
	struct mqtt_stats st;
	mqtt_get_stats(ud, &st);
	rows_status(mqtt_rows, N_ROWS(mqtt_rows), &st, sec);
}

void health_mqtt_metrics(void *ud, FILE *out)
{
	struct mqtt_stats st;
	mqtt_get_stats(ud, &st);
	rows_metrics(mqtt_rows, N_ROWS(mqtt_rows), &st, out);
}

/* "Name:   value kB" lines of /proc/self/status and "name: value" of /proc/self/io. A value
 * that is not a number in range is not reported. */
static bool proc_value(const char *file, const char *key, uint64_t *ret)
{
	FILE *f = fopen(file, "re");
	char line[256], *end;
	size_t kl = strlen(key);
	bool found = false;
	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f)) {
		if (strncmp(line, key, kl) || line[kl] != ':')
			continue;
		const char *p = line + kl + 1 + strspn(line + kl + 1, " \t");
		errno = 0;
		unsigned long long v = strtoull(p, &end, 10);
		if (*p >= '0' && *p <= '9' && errno == 0) {
			*ret = v;
			found = true;
		}
	}
	fclose(f);
	return found;
}

void health_process_metrics(void *ud, FILE *out)
{
	uint64_t v;
	(void)ud;
	if (proc_value("/proc/self/io", "write_bytes", &v))
		family(out, "p1d_process_disk_written_bytes_total", "counter",
		       "Bytes p1d caused to be written to storage", v);
	if (proc_value("/proc/self/status", "VmRSS", &v))
		family(out, "p1d_process_resident_memory_bytes", "gauge", "Resident memory",
		       v * 1024u);
}

size_t health_format_status(const struct store *s, const struct mqtt *q, char *buf, size_t size)
{
	size_t used = strlen(buf);
	int n = 0;
	if (s) {
		struct store_stats st;
		store_get_stats(s, &st);
		if (st.healthy)
			n = snprintf(buf + used, size - used, "; store ok");
		else
			n = snprintf(buf + used, size - used, "; store failing (%zu readings waiting)",
			             st.backlog);
		if (n > 0 && (size_t)n < size - used)
			used += (size_t)n;
	}
	if (q) {
		struct mqtt_stats st;
		mqtt_get_stats(q, &st);
		if (st.connected)
			n = snprintf(buf + used, size - used, "; mqtt connected");
		else
			n = snprintf(buf + used, size - used, "; mqtt away (%" PRIu64 " waiting)",
			             st.waiting);
		if (n > 0 && (size_t)n < size - used)
			used += (size_t)n;
	}
	return used;
}
