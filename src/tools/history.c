/* history.c - `p1d history` (print aggregates from the database as CSV or JSON) and
 * `p1d import FILE...` (load captured telegrams into the history through the same meter and
 * store code as live data; importing the same telegrams twice changes nothing). Both read the
 * configuration for the database path and the time zone; --db overrides the path.
 * Exit status: 0 ok, 1 error, 2 usage. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "loop.h"
#include "meter.h"
#include "store.h"
#include "history_format.h"
#include "tools.h"
#include "tzprobe.h"

struct common {
	const char *config_path, *db, *meter;
	struct config *cfg;
	struct p1_tz tz;
	char path[4096];
};

/* Config (optional file), zone and database path. 0 or exit status. */
static int load_common(struct common *c)
{
	struct config_error err = {0};
	char msg[700];
	if (!(c->cfg = config_new_defaults()))
		return 1;
	if (c->config_path && config_load_file(c->cfg, c->config_path, &err) < 0) {
		fprintf(stderr, "p1d: %s\n", config_error_format(&err, msg, sizeof(msg)));
		return 1;
	}
	const char *zone = c->cfg->g.timezone[0] ? c->cfg->g.timezone : "Europe/Amsterdam";
	if (tzprobe(zone, &c->tz) < 0) {
		fprintf(stderr, "p1d: unknown time zone \"%s\"\n", zone);
		return 1;
	}
	if (c->db)
		snprintf(c->path, sizeof(c->path), "%s", c->db);
	else
		config_database_path(c->cfg, c->path, sizeof(c->path));
	if (!c->meter)
		c->meter = c->cfg->n_meters ? c->cfg->meters[0].name : "main";
	return 0;
}

static void history_usage(FILE *f)
{
	fputs("usage: p1d history [--db PATH | -c CONF] [--meter NAME] --resolution "
	      "minute|hour|day|month\n"
	      "                   --from DATE --to DATE [--format csv|json]\n"
	      "Prints one row per bucket whose start is in [from, to). DATE: 2026-10-01 (local\n"
	      "midnight), 2026-10-01T06:00 (local), 2026-10-01T04:00Z, +hh:mm offsets, or seconds\n"
	      "since 1970. Amounts in the register's unit (kWh, m3, GJ), power in kW.\n",
	      f);
}

int p1_cmd_history(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"db", required_argument, NULL, 'd'},     {"config", required_argument, NULL, 'c'},
		{"meter", required_argument, NULL, 'm'},  {"resolution", required_argument, NULL, 'r'},
		{"from", required_argument, NULL, 'F'},   {"to", required_argument, NULL, 'T'},
		{"format", required_argument, NULL, 'o'}, {"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct common c = {0};
	const char *res_s = NULL, *from_s = NULL, *to_s = NULL, *format = "csv";
	int opt, status = 2;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'd': c.db = optarg; break;
		case 'c': c.config_path = optarg; break;
		case 'm': c.meter = optarg; break;
		case 'r': res_s = optarg; break;
		case 'F': from_s = optarg; break;
		case 'T': to_s = optarg; break;
		case 'o': format = optarg; break;
		case 'h': history_usage(stdout); return 0;
		default: history_usage(stderr); return 2;
		}
	}
	int res = res_s ? store_resolution_by_name(res_s) : -1;
	if (res < 0 || !from_s || !to_s || optind < argc ||
	    (strcmp(format, "csv") && strcmp(format, "json"))) {
		history_usage(stderr);
		return 2;
	}
	if ((status = load_common(&c)))
		goto out;
	int64_t from, to;
	if (history_parse_date(from_s, &c.tz, &from) < 0 ||
	    history_parse_date(to_s, &c.tz, &to) < 0) {
		fprintf(stderr, "p1d history: bad date (use 2026-10-01 or 2026-10-01T06:00Z)\n");
		status = 2;
		goto out;
	}
	struct store *s = NULL;
	struct store_opts so = {.path = c.path, .tz = c.tz, .read_only = true};
	if (store_new(NULL, &so, &s) < 0) {
		status = 1;
		goto out;
	}
	int n = history_write(s, c.meter, (enum store_resolution)res, from, to, &c.tz,
			      !strcmp(format, "json"), stdout);
	if (n < 0) {
		fprintf(stderr, "p1d history: query failed: %s\n", strerror(-n));
	} else if (fflush(stdout) != 0 || ferror(stdout)) { /* the rows are the output */
		fprintf(stderr, "p1d history: cannot write the output: %s\n", strerror(errno));
		n = -EIO;
	}
	status = n < 0;
	store_free(s);
out:
	config_free(c.cfg);
	return status;
}

static void on_import_finished(void *ud, struct meter *m)
{
	(void)m;
	loop_quit(ud, 0);
}

/* Feed one file through a meter into the store. */
static int import_file(struct common *c, struct store *s, const char *file)
{
	struct config_error err = {0};
	char msg[700];
	struct loop *loop = NULL;
	struct meter *m = NULL;
	int r = config_set_option(c->cfg, "meter", c->meter, "file", file, &err);
	if (r == 0)
		r = config_set_option(c->cfg, "meter", c->meter, "pace", "fast", &err);
	if (r < 0) {
		fprintf(stderr, "p1d import: %s\n", config_error_format(&err, msg, sizeof(msg)));
		return r;
	}
	const struct config_meter *cm = config_find_meter(c->cfg, c->meter);
	if ((r = loop_new(&loop)) < 0 || (r = meter_new(loop, cm, &c->tz, &m)) < 0 ||
	    (r = meter_add_sink(m, store_sink, s)) < 0) {
		fprintf(stderr, "p1d import: %s: %s\n", file, strerror(-r));
	} else {
		meter_on_finished(m, on_import_finished, loop);
		r = loop_run(loop);
	}
	meter_free(m);
	loop_free(loop);
	return r;
}

int p1_cmd_import(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"db", required_argument, NULL, 'd'},    {"config", required_argument, NULL, 'c'},
		{"meter", required_argument, NULL, 'm'}, {"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct common c = {0};
	int opt, status;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'd': c.db = optarg; break;
		case 'c': c.config_path = optarg; break;
		case 'm': c.meter = optarg; break;
		case 'h':
		default:
			fputs("usage: p1d import [--db PATH | -c CONF] [--meter NAME] FILE...\n",
			      opt == 'h' ? stdout : stderr);
			return opt == 'h' ? 0 : 2;
		}
	}
	if (optind >= argc) {
		fputs("usage: p1d import [--db PATH | -c CONF] [--meter NAME] FILE...\n", stderr);
		return 2;
	}
	log_init();
	if ((status = load_common(&c)))
		goto out;
	struct store *s = NULL;
	struct store_opts so = {.path = c.path,
				.tz = c.tz,
				.raw_days = c.cfg->store.raw_days,
				.commit_interval_ms = c.cfg->store.commit_interval_ms};
	if (store_new(NULL, &so, &s) < 0) {
		status = 1;
		goto out;
	}
	for (int i = optind; i < argc && status == 0; i++)
		status = import_file(&c, s, argv[i]) < 0;
	int r = store_commit(s);
	struct store_stats st;
	store_get_stats(s, &st);
	fprintf(stderr, "p1d import: %" PRIu64 " readings stored, %" PRIu64
		" already present, %" PRIu64 " new segments\n",
		st.committed, st.ignored, st.segments);
	if (r < 0 || st.backlog)
		status = 1;
	store_free(s);
out:
	config_free(c.cfg);
	return status;
}
