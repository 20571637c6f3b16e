/* main.c - the p1d binary. Wiring only: parses the command line, loads the configuration,
 * creates every object in dependency order (loop, meters, sinks), runs the loop, and tears
 * down in reverse. `p1d decode` and `p1d simulate` are dispatched to src/tools. Only main
 * decides what is fatal. */
#include <errno.h>
#include <malloc.h>
#include <getopt.h>
#include <openssl/crypto.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "config.h"
#include "health.h"
#include "history_format.h"
#include "http.h"
#include "log.h"
#include "loop.h"
#include "mdns.h"
#include "meter.h"
#include "mqtt.h"
#include "mqtt_queue.h"
#include "notify.h"
#include "relay.h"
#include "store.h"
#include "tools/tools.h"
#include "tzprobe.h"
#include "version.h"

#define STATUS_INTERVAL_MS 5000u
/* End of input: how often p1d checks that MQTT delivered all, and how long it waits for
 * progress. */
#define DRAIN_CHECK_MS 100u
#define DRAIN_STALL_MS 5000u
#define OPTIONS_MAX 32

struct option_value {
	const char *section, *key, *value;
	bool meter; /* applies to the option-made (or first) meter */
};

struct daemon {
	const char *config_path; /* NULL: none */
	struct option_value opts[OPTIONS_MAX];
	size_t n_opts;
	int verbosity;
	bool check_only;
	struct config *cfg;
	struct loop *loop;
	struct meter *meters[CONFIG_METERS_MAX];
	size_t n_meters;
	struct loop_timer *watchdog, *status;
	struct loop_timer *drain; /* end of input: waits for MQTT to deliver what it holds */
	uint64_t drain_progress, drain_progress_ms;
	struct http *http; /* NULL when [http] listen is empty */
	struct store *store; /* NULL when [store] enabled = false */
	struct mqtt *mqtt;   /* NULL when [mqtt] host is empty */
	struct relay *relay; /* NULL when [http] relay is empty */
	struct mdns *mdns;   /* NULL when the HomeWizard API is not announced */
	struct p1_tz tz;     /* the meters' clock zone; history buckets follow it */
};

static void usage(FILE *f)
{
	fputs("usage: p1d [OPTIONS]                 run the daemon (in the foreground)\n"
	      "       p1d decode [OPTIONS] [FILE...] decode telegrams to JSON\n"
	      "       p1d simulate [OPTIONS]         write telegrams of a simulated meter\n"
	      "       p1d history [OPTIONS]          print history from the database\n"
	      "       p1d import [OPTIONS] FILE...   load captured telegrams into the history\n"
	      "\n"
	      "  -c, --config FILE    configuration file (default " CONFIG_DEFAULT_PATH ")\n"
	      "  -n, --check          check the configuration and exit\n"
	      "  -f, --foreground     stay in the foreground (always the case; for scripts)\n"
	      "  -v, --verbose        more logging (repeat for debug)\n"
	      "      --serial PATH    read a meter on a serial port\n"
	      "      --preset P       auto, 115200-8N1 or 9600-7E1 (default auto)\n"
	      "      --tcp HOST:PORT  read a meter through a TCP serial bridge\n"
	      "      --file PATH|-    replay telegrams from a file or stdin\n"
	      "      --pace P         meter or fast (file replay speed, default meter)\n"
	      "      --key HEX        decryption key (32 hex digits) for encrypted meters\n"
	      "      --db PATH        history database\n"
	      "      --mqtt HOST[:PORT] MQTT broker\n"
	      "      --http ADDR:PORT listen for HTTP\n"
	      "      --version        print the version\n"
	      "Options override the configuration file; they apply to its first meter, or create\n"
	      "one named \"main\". See p1d(8) and p1d.conf(5).\n",
	      f);
}

static int add_opt(struct daemon *d, const char *section, const char *key, const char *value,
		   bool meter)
{
	if (d->n_opts == OPTIONS_MAX)
		return -E2BIG;
	d->opts[d->n_opts++] = (struct option_value){section, key, value, meter};
	return 0;
}

static bool has_source_option(const struct daemon *d)
{
	for (size_t i = 0; i < d->n_opts; i++)
		if (d->opts[i].meter && (!strcmp(d->opts[i].key, "serial") ||
					 !strcmp(d->opts[i].key, "tcp") ||
					 !strcmp(d->opts[i].key, "file")))
			return true;
	return false;
}

/* --mqtt HOST[:PORT] */
static int add_mqtt_opt(struct daemon *d, char *arg)
{
	char *colon = strrchr(arg, ':');
	if (colon && !strchr(colon, ']') && strchr(arg, ':') == colon) {
		*colon = 0;
		if (add_opt(d, "mqtt", "port", colon + 1, false) < 0)
			return -E2BIG;
	}
	return add_opt(d, "mqtt", "host", arg, false);
}

static int parse_args(struct daemon *d, int argc, char **argv)
{
	enum { O_SERIAL = 256, O_PRESET, O_TCP, O_FILE, O_PACE, O_KEY, O_DB, O_MQTT, O_HTTP, O_VERSION };
	static const struct option longopts[] = {
		{"config", required_argument, NULL, 'c'}, {"check", no_argument, NULL, 'n'},
		{"foreground", no_argument, NULL, 'f'},  {"verbose", no_argument, NULL, 'v'},
		{"help", no_argument, NULL, 'h'},        {"serial", required_argument, NULL, O_SERIAL},
		{"preset", required_argument, NULL, O_PRESET}, {"tcp", required_argument, NULL, O_TCP},
		{"file", required_argument, NULL, O_FILE}, {"pace", required_argument, NULL, O_PACE},
		{"key", required_argument, NULL, O_KEY},   {"db", required_argument, NULL, O_DB},
		{"mqtt", required_argument, NULL, O_MQTT}, {"http", required_argument, NULL, O_HTTP},
		{"version", no_argument, NULL, O_VERSION}, {NULL, 0, NULL, 0},
	};
	static const struct {
		int opt;
		const char *section, *key;
		bool meter;
	} simple[] = {
		{O_SERIAL, "meter", "serial", true}, {O_PRESET, "meter", "preset", true},
		{O_TCP, "meter", "tcp", true},       {O_FILE, "meter", "file", true},
		{O_PACE, "meter", "pace", true},     {O_KEY, "meter", "key", true},
		{O_DB, "store", "database", false},  {O_HTTP, "http", "listen", false},
	};
	int c, r = 0;
	while ((c = getopt_long(argc, argv, "c:nfvh", longopts, NULL)) != -1 && r == 0) {
		switch (c) {
		case 'c': d->config_path = optarg; break;
		case 'n': d->check_only = true; break;
		case 'f': break;
		case 'v': d->verbosity++; break;
		case 'h': usage(stdout); exit(0);
		case O_VERSION: printf("p1d %s\n", P1D_VERSION); exit(0);
		case O_MQTT: r = add_mqtt_opt(d, optarg); break;
		default: {
			size_t i = 0;
			for (; i < sizeof(simple) / sizeof(simple[0]); i++)
				if (simple[i].opt == c)
					break;
			if (i == sizeof(simple) / sizeof(simple[0])) {
				usage(stderr);
				return -EINVAL;
			}
			r = add_opt(d, simple[i].section, simple[i].key, optarg, simple[i].meter);
		}
		}
	}
	if (r < 0) {
		fprintf(stderr, "p1d: too many options\n");
		return r;
	}
	if (optind < argc) {
		fprintf(stderr, "p1d: unexpected argument \"%s\"\n", argv[optind]);
		return -EINVAL;
	}
	return 0;
}

/* Load the file (if any) and apply the options on top. NULL after printing the error. */
static struct config *load_config(const struct daemon *d)
{
	struct config_error err = {0};
	char msg[700];
	struct config *c = config_new_defaults();
	if (!c) {
		log_error("out of memory");
		return NULL;
	}
	const char *path = d->config_path;
	if (!path && !has_source_option(d))
		path = CONFIG_DEFAULT_PATH;
	int r = path ? config_load_file(c, path, &err) : 0;
	const char *meter = NULL;
	for (size_t i = 0; r == 0 && i < d->n_opts; i++) {
		if (d->opts[i].meter && !meter)
			meter = c->n_meters ? c->meters[0].name : "main";
		r = config_set_option(c, d->opts[i].section, d->opts[i].meter ? meter : NULL,
				      d->opts[i].key, d->opts[i].value, &err);
	}
	if (r == 0)
		r = config_validate(c, &err);
	if (r < 0) {
		log_error("%s", config_error_format(&err, msg, sizeof(msg)));
		if (r == -ENOENT && path && !d->config_path)
			log_error("give a config file with -c, or a meter with --serial, --tcp or --file");
		return config_free(c);
	}
	return c;
}

static void apply_log_level(const struct daemon *d, const struct config *c)
{
	int level = c->g.log_level + d->verbosity;
	log_set_max_priority(level > LOG_DEBUG ? LOG_DEBUG : level);
}

static void on_status(struct loop_timer *t, void *ud)
{
	struct daemon *d = ud;
	char line[1024] = "", part[256];
	size_t used = 0;
	(void)t;
	for (size_t i = 0; i < d->n_meters; i++) {
		meter_tick(d->meters[i]);
		meter_format_status(d->meters[i], part, sizeof(part));
		int n = snprintf(line + used, sizeof(line) - used, "%s%s", i ? "; " : "", part);
		if (n < 0 || (size_t)n >= sizeof(line) - used)
			break;
		used += (size_t)n;
	}
	health_format_status(d->store, d->mqtt, line, sizeof(line));
	notify_status("%s", line);
	/* Give the kernel back the heap pages a burst freed (an outage's outbox, a replay):
	 * glibc only trims the top of the heap by itself, so without this RSS stays at its
	 * peak. Cheap at p1d's heap size, and only every STATUS_INTERVAL_MS. */
	malloc_trim(0);
}

static void on_watchdog(struct loop_timer *t, void *ud)
{
	(void)t;
	(void)ud;
	notify_watchdog(); /* the timer firing is the proof that the loop runs */
}

static void on_quit(struct loop *l, int signo, void *ud)
{
	(void)ud;
	log_info("%s received, stopping", strsignal(signo));
	loop_quit(l, 0);
}

static void on_reload(struct loop *l, int signo, void *ud)
{
	struct daemon *d = ud;
	char what[128];
	(void)l;
	(void)signo;
	notify_reloading();
	struct config *c = load_config(d);
	if (!c) {
		log_error("reload failed, keeping the running configuration");
	} else if (config_needs_restart(d->cfg, c, what, sizeof(what))) {
		apply_log_level(d, c);
		log_warning("reload: %s changed and needs a restart; only log_level was applied", what);
		config_free(c);
	} else {
		apply_log_level(d, c);
		config_free(d->cfg);
		d->cfg = c;
		if (d->mqtt)
			mqtt_set_interval(d->mqtt, (uint64_t)c->mqtt.interval_ms);
		log_notice("configuration reloaded");
	}
	notify_ready();
	on_status(NULL, d);
}

static void on_meter_finished(void *ud, struct meter *m)
{
	struct daemon *d = ud;
	struct meter_stats st;
	meter_get_stats(m, &st);
	log_notice("meter %s: end of input: %llu telegrams, %llu rejected", meter_name(m),
		   (unsigned long long)st.telegrams, (unsigned long long)st.rejected);
	for (size_t i = 0; i < d->n_meters; i++)
		if (!meter_finished(d->meters[i]))
			return;
	/* every meter was a file, all read: stop once MQTT delivered what it holds */
	struct mqtt_stats ms;
	if (d->mqtt)
		mqtt_get_stats(d->mqtt, &ms);
	if (!d->mqtt || !ms.waiting) {
		loop_quit(d->loop, 0);
		return;
	}
	log_info("mqtt: delivering %llu readings before stopping",
		 (unsigned long long)ms.waiting);
	d->drain_progress = ms.delivered + ms.backfilled;
	d->drain_progress_ms = loop_now_ms();
	loop_timer_arm(d->drain, DRAIN_CHECK_MS, DRAIN_CHECK_MS);
}

/* After the end of input: stop when MQTT has delivered everything, or made no progress for
 * DRAIN_STALL_MS (the broker away, or not taking more). */
static void on_drain(struct loop_timer *t, void *ud)
{
	struct daemon *d = ud;
	struct mqtt_stats ms;
	(void)t;
	mqtt_get_stats(d->mqtt, &ms);
	uint64_t progress = ms.delivered + ms.backfilled, now = loop_now_ms();
	if (progress != d->drain_progress) {
		d->drain_progress = progress;
		d->drain_progress_ms = now;
	}
	if (ms.waiting && now - d->drain_progress_ms < DRAIN_STALL_MS)
		return;
	if (ms.waiting)
		log_warning("mqtt: stopping with %llu readings not delivered: the broker took none "
			    "for %u s (%s)",
			    (unsigned long long)ms.waiting, DRAIN_STALL_MS / 1000,
			    ms.connected ? "connected" : "not connected");
	loop_quit(d->loop, 0);
}

/* The history store, a sink of every meter. It opens (or keeps retrying) on its own. */
static int start_store(struct daemon *d, const struct p1_tz *tz)
{
	char path[4096];
	if (!d->cfg->store.enabled)
		return 0;
	struct store_opts o = {.path = config_database_path(d->cfg, path, sizeof(path)),
			       .commit_interval_ms = d->cfg->store.commit_interval_ms,
			       .raw_days = d->cfg->store.raw_days,
			       .tz = *tz};
	int r = store_new(d->loop, &o, &d->store);
	for (size_t i = 0; r == 0 && i < d->n_meters; i++)
		r = meter_add_sink(d->meters[i], store_sink, d->store);
	if (r < 0)
		log_error("store %s: cannot start: %s", path, strerror(-r));
	return r;
}

/* GET /api/v1/meters/<m>/history?resolution=&from=&to=[&format=csv|json]: the rows `p1d
 * history` prints; history_query_parse() says what a request may ask. */
static int history_hook(void *ud, const char *meter, const struct http_request *req,
			struct http_reply *ret)
{
	struct daemon *d = ud;
	struct history_params p = {req->arg(req, "resolution"), req->arg(req, "from"),
				   req->arg(req, "to"), req->arg(req, "format"),
				   req->header(req, "Accept")};
	struct history_query q;
	const char *why;
	if (history_query_parse(&p, &d->tz, (int64_t)time(NULL), &q, &why) < 0) {
		http_reply_error(ret, 400, why);
		return 0;
	}
	/* streamed: a year of minutes neither waits in memory nor holds the loop */
	struct history_stream *hs;
	int r = history_stream_new(d->store, meter, &q, &d->tz, &hs);
	if (r == -ENOMEM)
		return r;
	if (r < 0) {
		http_reply_error(ret, 503, "history query failed");
		return 0;
	}
	ret->stream_ud = hs;
	ret->stream_read = history_stream_read;
	ret->stream_free = history_stream_free;
	ret->status = 200;
	ret->content_type = q.csv ? "text/csv; charset=utf-8" : "application/json";
	return 0;
}

/* The HTTP server (API, live stream, metrics), serving every meter. */
static int start_http(struct daemon *d)
{
	if (d->cfg->http.listen.n == 0 && sd_listen_fds(0) <= 0)
		return 0; /* off, unless systemd passed sockets (p1d.socket) */
	int r = http_new(d->loop, &d->cfg->http, &d->http); /* logs what fails */
	if (r == 0 && d->store) {
		http_set_history_hook(d->http, history_hook, d);
		http_add_status_hook(d->http, "store", health_store_status, d->store);
		http_add_metrics_hook(d->http, health_store_metrics, d->store);
	}
	if (r == 0)
		http_add_metrics_hook(d->http, health_process_metrics, NULL);
	for (size_t i = 0; r == 0 && i < d->n_meters; i++)
		if ((r = http_add_meter(d->http, d->meters[i])) < 0)
			log_error("http: cannot serve meter %s: %s", meter_name(d->meters[i]),
				  strerror(-r));
	return r;
}

/* The mDNS announcement of the HomeWizard API (the first meter's, as /api serves it). */
static int start_mdns(struct daemon *d)
{
	struct sockaddr_storage addrs[2 * CONFIG_LISTEN_MAX];
	char serial[API_HW_SERIAL_LEN + 1];
	if (!d->http || !d->n_meters)
		return 0;
	api_hw_serial(meter_name(d->meters[0]), serial);
	struct mdns_opts o = {.homewizard = d->cfg->http.homewizard,
			      .announce = d->cfg->http.announce,
			      .serial = serial,
			      .product_name = API_HW_PRODUCT_NAME,
			      .product_type = API_HW_PRODUCT_TYPE,
			      .addrs = addrs,
			      .n_addrs = http_local_addrs(d->http, addrs,
							  sizeof(addrs) / sizeof(addrs[0]))};
	int r = mdns_new(d->loop, &o, &d->mdns);
	if (r < 0)
		log_error("mdns: cannot start: %s", strerror(-r));
	return r;
}

/* The raw telegram relay: the first meter's raw telegrams to TCP clients. */
static int start_relay(struct daemon *d)
{
	const struct config_hostport *hp = &d->cfg->http.relay;
	if (!hp->host || !*hp->host || !d->n_meters)
		return 0;
	int r = relay_new(d->loop, hp->host, hp->port, &d->relay);
	if (r == 0)
		r = meter_add_raw_sink(d->meters[0], relay_raw_sink, d->relay);
	if (r == 0 && d->http)
		r = http_add_metrics_hook(d->http, relay_write_metrics, d->relay);
	if (r < 0)
		log_error("relay: cannot start: %s", strerror(-r));
	return r;
}

/* MQTT backfill from the store: the meter's committed readings after after_utc as state
 * messages. */
struct backfill_run {
	struct daemon *d;
	mqtt_emit_cb emit;
	void *ctx;
	char buf[4096];
};

static int backfill_one(void *ud, const struct store_reading *r)
{
	struct backfill_run *b = ud;
	size_t n = history_reading_json(r, &b->d->tz, b->buf, sizeof(b->buf));
	if (n >= sizeof(b->buf))
		return -ENOSPC;
	return b->emit(b->ctx, r->utc, b->buf, n);
}

static int backfill_hook(void *ud, const char *meter, int64_t after_utc, size_t max,
			 mqtt_emit_cb emit, void *ctx, int64_t *ret_complete_utc)
{
	struct daemon *d = ud;
	struct backfill_run b = {d, emit, ctx, ""};
	*ret_complete_utc = store_held_upto(d->store, meter);
	int n = store_readings_since(d->store, meter, after_utc, max, backfill_one, &b);
	return n < 0 ? n : 0; /* the count is what emit saw */
}

/* The MQTT client, a sink of every meter. It connects (and reconnects) on its own. */
static int start_mqtt(struct daemon *d)
{
	if (!d->cfg->mqtt.host || !*d->cfg->mqtt.host)
		return 0;
	struct config_mqtt mc = d->cfg->mqtt;
	if (!mc.queue) /* with a store, older readings come from the history: keep few */
		mc.queue = (int)(d->store ? MQTT_QUEUE_STORE_DEFAULT : MQTT_QUEUE_MAX_DEFAULT);
	int r = mqtt_new(d->loop, &mc, &d->mqtt);
	if (r == 0)
		mqtt_set_dsmr_reader(d->mqtt, d->cfg->mqtt.dsmr_reader);
	if (r == 0 && d->store)
		mqtt_set_backfill(d->mqtt, backfill_hook, d);
	if (r == 0 && d->http) {
		http_add_status_hook(d->http, "mqtt", health_mqtt_status, d->mqtt);
		http_add_metrics_hook(d->http, health_mqtt_metrics, d->mqtt);
	}
	for (size_t i = 0; r == 0 && i < d->n_meters; i++)
		r = mqtt_attach(d->mqtt, d->meters[i]);
	if (r < 0)
		log_error("mqtt: cannot start: %s", strerror(-r));
	return r;
}

static int start(struct daemon *d)
{
	/* meter clocks run on Central European time in every country p1d knows */
	const char *zone = d->cfg->g.timezone[0] ? d->cfg->g.timezone : "Europe/Amsterdam";
	if (tzprobe(zone, &d->tz) < 0) {
		log_error("unknown time zone \"%s\" (see timezone in p1d.conf(5))", zone);
		return -EINVAL;
	}
	int r = loop_new(&d->loop);
	if (r < 0) {
		log_error("cannot create the event loop: %s", strerror(-r));
		return r;
	}
	loop_signal_set(d->loop, SIGTERM, on_quit, d);
	loop_signal_set(d->loop, SIGINT, on_quit, d);
	loop_signal_set(d->loop, SIGHUP, on_reload, d);
	for (size_t i = 0; i < d->cfg->n_meters; i++) {
		r = meter_new(d->loop, &d->cfg->meters[i], &d->tz, &d->meters[i]);
		if (r < 0) {
			log_error("meter %s: cannot start: %s", d->cfg->meters[i].name, strerror(-r));
			return r;
		}
		d->n_meters++;
		meter_on_finished(d->meters[i], on_meter_finished, d);
	}
	if ((r = start_store(d, &d->tz)) < 0)
		return r;
	if ((r = start_http(d)) < 0)
		return r;
	if ((r = start_mdns(d)) < 0)
		return r;
	if ((r = start_relay(d)) < 0)
		return r;
	if ((r = start_mqtt(d)) < 0)
		return r;
	if ((r = loop_timer_new(d->loop, on_drain, d, &d->drain)) < 0 ||
	    (r = loop_timer_new(d->loop, on_status, d, &d->status)) < 0)
		return r;
	loop_timer_arm(d->status, STATUS_INTERVAL_MS, STATUS_INTERVAL_MS);
	uint64_t wd_usec = notify_watchdog_usec();
	if (wd_usec && d->cfg->g.watchdog) {
		if ((r = loop_timer_new(d->loop, on_watchdog, d, &d->watchdog)) < 0)
			return r;
		/* a quarter of the interval: a ping is never later than WatchdogSec/3 */
		loop_timer_arm(d->watchdog, 0, wd_usec / 4000 ? wd_usec / 4000 : 1);
	}
	return 0;
}

static void stop(struct daemon *d)
{
	d->mqtt = mqtt_free(d->mqtt); /* publishes offline, waits <= 0.5 s for the broker */
	d->relay = relay_free(d->relay);
	d->mdns = mdns_free(d->mdns);
	d->http = http_free(d->http);
	d->store = store_free(d->store); /* commits the batch */
	for (size_t i = d->n_meters; i-- > 0;)
		meter_free(d->meters[i]);
	loop_timer_free(d->watchdog);
	loop_timer_free(d->status);
	loop_timer_free(d->drain);
	loop_free(d->loop);
	config_free(d->cfg);
}

static int run_daemon(int argc, char **argv)
{
	struct daemon d = {0};
	log_init();
	if (parse_args(&d, argc, argv) < 0)
		return 2;
	log_set_max_priority(LOG_INFO + d.verbosity > LOG_DEBUG ? LOG_DEBUG : LOG_INFO + d.verbosity);
	if (!(d.cfg = load_config(&d)))
		return 1;
	apply_log_level(&d, d.cfg);
	if (d.check_only) {
		if (d.verbosity)
			config_dump(d.cfg, stdout);
		printf("%s: configuration ok\n", d.config_path ? d.config_path : "command line");
		config_free(d.cfg);
		return 0;
	}
	signal(SIGPIPE, SIG_IGN); /* a peer that goes away is an error return, not a death */
	/* initialise libcrypto now, without reading openssl.cnf, before anything is sandboxed */
	OPENSSL_init_crypto(OPENSSL_INIT_NO_LOAD_CONFIG, NULL);
	int r = start(&d);
	if (r == 0) {
		log_notice("p1d %s started, %zu meter%s", P1D_VERSION, d.n_meters,
			   d.n_meters == 1 ? "" : "s");
		notify_ready();
		on_status(NULL, &d);
		r = loop_run(d.loop);
		notify_stopping();
	}
	stop(&d);
	return r < 0 ? 1 : r;
}

int main(int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "decode"))
		return p1_cmd_decode(argc - 1, argv + 1);
	if (argc >= 2 && !strcmp(argv[1], "simulate"))
		return p1_cmd_simulate(argc - 1, argv + 1);
	if (argc >= 2 && !strcmp(argv[1], "history"))
		return p1_cmd_history(argc - 1, argv + 1);
	if (argc >= 2 && !strcmp(argv[1], "import"))
		return p1_cmd_import(argc - 1, argv + 1);
	return run_daemon(argc, argv);
}
