/* health.c - store and MQTT health for /api/v1/status, /metrics and STATUS= (see health.h). */
#include "health.h"

#include <inttypes.h>
#include <stdbool.h>
#include <string.h>

#include "mqtt.h"
#include "store.h"

void health_store_status(void *ud, json_t *sec)
{
	struct store_stats st;
	store_get_stats(ud, &st);
	json_object_set_new(sec, "path", json_string(store_path(ud)));
	json_object_set_new(sec, "healthy", json_boolean(st.healthy));
	json_object_set_new(sec, "size_bytes", json_integer((json_int_t)st.db_bytes));
	json_object_set_new(sec, "readings_committed", json_integer((json_int_t)st.committed));
	json_object_set_new(sec, "readings_waiting", json_integer((json_int_t)st.backlog));
	json_object_set_new(sec, "readings_dropped", json_integer((json_int_t)st.dropped));
	json_object_set_new(sec, "commits", json_integer((json_int_t)st.commits));
	json_object_set_new(sec, "commit_failures", json_integer((json_int_t)st.commit_failures));
	json_object_set_new(sec, "checkpoints", json_integer((json_int_t)st.checkpoints));
	json_object_set_new(sec, "pages_written", json_integer((json_int_t)st.pages_written));
	json_object_set_new(sec, "segments", json_integer((json_int_t)st.segments));
	json_object_set_new(sec, "last_commit_utc",
	                    st.last_commit_utc ? json_integer(st.last_commit_utc) : json_null());
}

static void family(FILE *out, const char *name, const char *type, const char *help,
                   uint64_t value)
{
	fprintf(out, "# HELP %s %s\n# TYPE %s %s\n%s %" PRIu64 "\n", name, help, name, type, name,
	        value);
}

void health_store_metrics(void *ud, FILE *out)
{
	struct store_stats st;
	store_get_stats(ud, &st);
	family(out, "p1d_store_healthy", "gauge", "1 when the last database write succeeded",
	       st.healthy);
	family(out, "p1d_store_size_bytes", "gauge", "Size of the database file and its WAL",
	       st.db_bytes);
	family(out, "p1d_store_readings_committed_total", "counter", "Readings written to the database",
	       st.committed);
	family(out, "p1d_store_readings_waiting", "gauge", "Readings in memory not yet written",
	       st.backlog);
	family(out, "p1d_store_readings_dropped_total", "counter",
	       "Raw readings dropped because the database could not be written for too long",
	       st.dropped);
	family(out, "p1d_store_commits_total", "counter", "Transactions that wrote readings",
	       st.commits);
	family(out, "p1d_store_commit_failures_total", "counter", "Failed database writes",
	       st.commit_failures);
	family(out, "p1d_store_checkpoints_total", "counter",
	       "WAL checkpoints (when the database file is synced to disk)", st.checkpoints);
	family(out, "p1d_store_pages_written_total", "counter",
	       "Database pages written since the database was opened", st.pages_written);
}

void health_mqtt_status(void *ud, json_t *sec)
{
	struct mqtt_stats st;
	mqtt_get_stats(ud, &st);
	json_object_set_new(sec, "connected", json_boolean(st.connected));
	json_object_set_new(sec, "connects", json_integer((json_int_t)st.connects));
	json_object_set_new(sec, "published", json_integer((json_int_t)st.published));
	json_object_set_new(sec, "delivered", json_integer((json_int_t)st.delivered));
	json_object_set_new(sec, "backfilled", json_integer((json_int_t)st.backfilled));
	json_object_set_new(sec, "waiting", json_integer((json_int_t)st.waiting));
	json_object_set_new(sec, "dropped", json_integer((json_int_t)st.dropped));
	json_object_set_new(sec, "skipped", json_integer((json_int_t)st.skipped));
}

void health_mqtt_metrics(void *ud, FILE *out)
{
	struct mqtt_stats st;
	mqtt_get_stats(ud, &st);
	family(out, "p1d_mqtt_connected", "gauge", "1 while connected to the broker", st.connected);
	family(out, "p1d_mqtt_connects_total", "counter", "Successful connections to the broker",
	       st.connects);
	family(out, "p1d_mqtt_published_total", "counter", "Messages handed to the broker",
	       st.published);
	family(out, "p1d_mqtt_delivered_total", "counter",
	       "State messages the broker acknowledged", st.delivered);
	family(out, "p1d_mqtt_backfilled_total", "counter",
	       "Readings of an outage sent from the history and acknowledged", st.backfilled);
	family(out, "p1d_mqtt_queue", "gauge", "Readings waiting for the broker", st.waiting);
	family(out, "p1d_mqtt_dropped_total", "counter",
	       "State messages that will never be delivered", st.dropped);
	family(out, "p1d_mqtt_skipped_total", "counter",
	       "Per-field messages skipped while the broker lagged", st.skipped);
}

/* "Name:   value kB" lines of /proc/self/status and "name: value" of /proc/self/io. */
static bool proc_value(const char *file, const char *key, uint64_t *ret)
{
	FILE *f = fopen(file, "re");
	char line[256];
	size_t kl = strlen(key);
	bool found = false;
	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f))
		if (!strncmp(line, key, kl) && line[kl] == ':')
			found = sscanf(line + kl + 1, "%" SCNu64, ret) == 1;
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
