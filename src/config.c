/* config.c - the table of configuration keys and everything it drives: defaults, the INI
 * parser (libinih does the syntax, the table does the values), command-line options,
 * validation across keys, restart detection and the dump.
 *
 * It never logs, never exits and touches nothing but the struct config it fills and the files
 * it is asked to read (the config file, key_file, password_file); secrets never reach an error
 * message or a dump. main calls it at start, on SIGHUP (into a fresh struct, swapped in only
 * when it validates) and for `p1d -n`; the man page test and `p1d --help` read the table.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include <ini.h>

#include "clock.h"
#include "p1/framer.h"
#include "p1/telegram.h"

#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))
#define SEC 1000LL
#define MINUTE (60 * SEC)
#define HOUR (60 * MINUTE)
#define DAY (24 * HOUR)
#define STRING_MAX 1023      /* default length bound of strings and paths */
#define SECRET_FILE_MAX 1024 /* bytes read from key_file / password_file */
#define TOKEN_MIN 16         /* characters of an HTTP token */
#define MASK "********"

static const struct config_enum_value log_levels[] = {
        {"error", LOG_ERR}, {"warning", LOG_WARNING}, {"notice", LOG_NOTICE},
        {"info", LOG_INFO}, {"debug", LOG_DEBUG},     {NULL, 0}};
static const struct config_enum_value presets[] = {{"auto", CONFIG_PRESET_AUTO},
                                                   {"115200-8N1", CONFIG_PRESET_115200_8N1},
                                                   {"9600-7E1", CONFIG_PRESET_9600_7E1},
                                                   {NULL, 0}};
static const struct config_enum_value data_requests[] = {{"none", CONFIG_DATA_REQUEST_NONE},
                                                         {"dtr", CONFIG_DATA_REQUEST_DTR},
                                                         {"rts", CONFIG_DATA_REQUEST_RTS},
                                                         {NULL, 0}};
static const struct config_enum_value clocks[] = {
        {"auto", CLOCK_AUTO}, {"meter", CLOCK_METER}, {"system", CLOCK_SYSTEM}, {NULL, 0}};
static const struct config_enum_value paces[] = {
        {"meter", CONFIG_PACE_METER}, {"fast", CONFIG_PACE_FAST}, {NULL, 0}};
static const struct config_enum_value dialects[] = {
        {"auto", P1_DIALECT_UNKNOWN},    {"dsmr22", P1_DIALECT_DSMR22},
        {"dsmr4", P1_DIALECT_DSMR4},     {"dsmr5", P1_DIALECT_DSMR5},
        {"fluvius", P1_DIALECT_FLUVIUS}, {"smarty", P1_DIALECT_SMARTY},
        {"austria", P1_DIALECT_AUSTRIA}, {"sweden", P1_DIALECT_SWEDEN},
        {"hungary", P1_DIALECT_HUNGARY}, {"easymeter", P1_DIALECT_EASYMETER},
        {"ace4000", P1_DIALECT_ACE4000}, {NULL, 0}};

static bool has_space(const char *s)
{
	for (; *s; s++)
		if (isspace((unsigned char)*s))
			return true;
	return false;
}

/* Extra rules of single keys: NULL when fine, else what was expected. */
static const char *check_device(const char *v)
{
	return !*v || *v == '/' ? NULL : "expected a device path like /dev/ttyUSB0";
}

static const char *check_topic(const char *v)
{
	size_t n = strlen(v);
	if (n == 0 || strpbrk(v, "+#") || v[0] == '/' || v[n - 1] == '/' || strstr(v, "//") ||
	    has_space(v))
		return "expected a topic like p1d, without +, #, spaces or a leading or trailing /";
	return NULL;
}

static const char *check_queue(const char *v)
{
	if (strcmp(v, "0") && strtol(v, NULL, 10) < 10)
		return "expected 0 (automatic) or from 10 to 100000";
	return NULL;
}

static const char *check_token(const char *v)
{
	if (*v && (strlen(v) < TOKEN_MIN || has_space(v)))
		return "expected at least 16 characters and no spaces";
	return NULL;
}

static const char *check_no_space(const char *v)
{
	return has_space(v) ? "expected no spaces" : NULL;
}

static const char *check_host(const char *v)
{
	const char *colon = strchr(v, ':');

	if (colon && !strchr(colon + 1, ':')) /* one colon: HOST:PORT, not an IPv6 address */
		return "expected a host without :PORT; the port has a key of its own";
	return check_no_space(v);
}

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = (char)tolower((unsigned char)c);
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Exactly 32 hex digits. Kept here so config does not depend on libp1's crypto. */
static int parse_hex_key(const char *s, uint8_t key[CONFIG_KEY_LEN])
{
	if (strlen(s) != 2 * (size_t)CONFIG_KEY_LEN)
		return -EINVAL;
	for (size_t i = 0; i < CONFIG_KEY_LEN; i++) {
		int hi = hex_digit(s[2 * i]), lo = hex_digit(s[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return -EINVAL;
		key[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

/* Read a small file holding a secret, refusing one that group or others may access. */
static int read_secret_file(const char *what, const char *path, char *buf, size_t cap, char *msg,
                            size_t len)
{
	struct stat st;
	size_t n = 0;
	ssize_t k;
	int fd, r = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK); /* a FIFO must not block */
	if (fd < 0) {
		snprintf(msg, len, "%s %s: %s", what, path, strerror(errno));
		return -EINVAL;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		snprintf(msg, len, "%s %s: not a regular file", what, path);
		r = -EINVAL;
	} else if (st.st_mode & (S_IRWXG | S_IRWXO)) {
		snprintf(msg, len,
		         "%s %s is accessible by group or others (mode %04o); chmod 600 it", what,
		         path, (unsigned)(st.st_mode & 07777));
		r = -EINVAL;
	}
	while (r == 0 && n + 1 < cap && (k = read(fd, buf + n, cap - 1 - n)) != 0) {
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			snprintf(msg, len, "%s %s: %s", what, path, strerror(errno));
			r = -EINVAL;
		} else {
			n += (size_t)k;
		}
	}
	close(fd);
	buf[n] = '\0';
	if (r == 0 && n + 1 >= cap) {
		snprintf(msg, len, "%s %s: longer than %zu bytes", what, path, cap - 2);
		r = -EINVAL;
	}
	return r;
}

static int apply_key_file(void *base, const char *path, char *msg, size_t len)
{
	struct config_meter *m = base;
	char buf[SECRET_FILE_MAX], *s = buf;
	int r;

	/* unset: forget a key read from the previous key_file, keep one from key */
	if (!*path) {
		if (m->key_file && *m->key_file)
			m->key = (struct config_hexkey){0};
		return 0;
	}
	m->key = (struct config_hexkey){0};
	r = read_secret_file("key_file", path, buf, sizeof(buf), msg, len);
	if (r == 0) {
		while (isspace((unsigned char)*s))
			s++;
		for (size_t n = strlen(s); n > 0 && isspace((unsigned char)s[n - 1]); n--)
			s[n - 1] = '\0';
		if (parse_hex_key(s, m->key.bytes) < 0) {
			snprintf(msg, len, "key_file %s: expected 32 hexadecimal digits", path);
			r = -EINVAL;
		}
	}
	m->key.set = r == 0;
	explicit_bzero(buf, sizeof(buf));
	return r;
}

static void free_secret(char *s)
{
	if (s)
		explicit_bzero(s, strlen(s));
	free(s);
}

static int apply_password_file(void *base, const char *path, char *msg, size_t len)
{
	struct config *c = base;
	char buf[SECRET_FILE_MAX] = "", *s;
	int r = 0;

	if (!*path && !(c->mqtt.password_file && *c->mqtt.password_file))
		return 0; /* nothing read before: keep a password from password */
	if (*path) {
		r = read_secret_file("password_file", path, buf, sizeof(buf), msg, len);
		buf[strcspn(buf, "\r\n")] = '\0';
		if (r == 0 && !*buf) {
			snprintf(msg, len, "password_file %s: the first line is empty", path);
			r = -EINVAL;
		}
	}
	if (r == 0) {
		s = strdup(buf);
		if (s) {
			free_secret(c->mqtt.password);
			c->mqtt.password = s;
		} else {
			r = -ENOMEM;
		}
	}
	explicit_bzero(buf, sizeof(buf));
	return r;
}

/* Row helpers: the _Generic makes a row whose member has the wrong C type fail to compile.
 * NOLINTNEXTLINE(bugprone-macro-parentheses): ctype is a type name, which takes none */
#define AT(base, ctype, m) _Generic(((base *)0)->m, ctype : offsetof(base, m))
#define IN(k) .section = CONFIG_SECTION_##k, .name
#define STR(b, m) .type = CONFIG_STRING, .offset = AT(b, char *, m)
#define PATH(b, m) .type = CONFIG_PATH, .offset = AT(b, char *, m)
#define BOOL(b, m) .type = CONFIG_BOOL, .offset = AT(b, bool, m)
#define INT(b, m, lo, hi) .type = CONFIG_INT, .offset = AT(b, int, m), .min = (lo), .max = (hi)
#define DUR(b, m, lo, hi) \
	.type = CONFIG_DURATION, .offset = AT(b, int64_t, m), .min = (lo), .max = (hi)
#define ENUM(b, m, v) .type = CONFIG_ENUM, .offset = AT(b, int, m), .values = (v)
#define HEXKEY(b, m) .type = CONFIG_HEXKEY, .offset = AT(b, struct config_hexkey, m)
#define HOSTPORT(b, m) .type = CONFIG_HOSTPORT, .offset = AT(b, struct config_hostport, m)
#define ADDRS(b, m) .type = CONFIG_ADDRS, .offset = AT(b, struct config_addrs, m)
#define C struct config
#define M struct config_meter
#define R CONFIG_RESTART
#define SECRET (CONFIG_SECRET | CONFIG_RESTART)

static const struct config_item items[] = {
        {IN(GLOBAL) = "log_level", ENUM(C, g.log_level, log_levels), .def = "info",
         .help = "Least important messages logged: error, warning, notice, info or debug."},
        {IN(GLOBAL) = "state_directory", PATH(C, g.state_directory), .def = "/var/lib/p1d",
         .min = 1, .flags = R, .help = "Directory of the database and other state."},
        {IN(GLOBAL) = "timezone", STR(C, g.timezone), .def = "", .max = 64, .flags = R,
         .check = check_no_space,
         .help = "Zone of the meters' clocks, e.g. Europe/Amsterdam; empty: Central European Time."},
        {IN(GLOBAL) = "watchdog", BOOL(C, g.watchdog), .def = "true", .flags = R,
         .help = "Keep the systemd watchdog fed when the unit sets WatchdogSec=."},

        {IN(METER) = "serial", PATH(M, serial), .def = "", .flags = R, .conflicts = "tcp file",
         .check = check_device, .help = "Serial device of the P1 cable, e.g. /dev/ttyUSB0."},
        {IN(METER) = "tcp", HOSTPORT(M, tcp), .def = "", .flags = R, .conflicts = "serial file",
         .help = "HOST:PORT of a serial-to-network bridge (ser2net, ESP-Link) passing raw bytes."},
        {IN(METER) = "file", PATH(M, file), .def = "", .flags = R, .conflicts = "serial tcp",
         .help = "Read telegrams from this file, or from standard input when -."},
        {IN(METER) = "preset", ENUM(M, preset, presets), .def = "auto", .flags = R,
         .help = "Serial settings: auto (try both), 115200-8N1 (DSMR 4 and later), 9600-7E1."},
        {IN(METER) = "data_request", ENUM(M, data_request, data_requests), .def = "none",
         .flags = R, .help = "Raise DTR or RTS to drive the meter's data request line."},
        {IN(METER) = "pace", ENUM(M, pace, paces), .def = "meter", .flags = R,
         .help = "For file sources: replay at the meter's pace (meter) or at once (fast)."},
        {IN(METER) = "key", HEXKEY(M, key), .def = "", .flags = SECRET, .conflicts = "key_file",
         .help = "Decryption key (32 hex digits) of an encrypted meter (Smarty, Austria)."},
        {IN(METER) = "key_file", PATH(M, key_file), .def = "", .flags = R, .conflicts = "key",
         .apply = apply_key_file,
         .help = "File holding the decryption key; group and others may not access it."},
        {IN(METER) = "authentication_key", HEXKEY(M, authentication_key),
         .def = "00112233445566778899AABBCCDDEEFF", .flags = SECRET,
         .help = "Authentication key of encrypted meters; the default is every Smarty's."},
        {IN(METER) = "dialect", ENUM(M, dialect, dialects), .def = "auto", .flags = R,
         .help = "Meter dialect; auto recognises it from the telegrams."},
        {IN(METER) = "max_telegram", INT(M, max_telegram_bytes, 1024, P1_FRAME_MAX_LIMIT),
         .def = "16384", .flags = R, .help = "Longest telegram accepted, in bytes."},
        {IN(METER) = "stale_after", DUR(M, stale_after_ms, 2 * SEC, HOUR), .def = "30s", .flags = R,
         .help = "Reopen a source that delivers no valid telegram for this long."},
        {IN(METER) = "reconnect_max", DUR(M, reconnect_max_ms, SEC, 10 * MINUTE), .def = "30s", .flags = R,
         .help = "Longest wait between attempts to reopen a lost source."},
        {IN(METER) = "clock", ENUM(M, clock, clocks), .def = "auto", .flags = R,
         .help = "Date readings by the meter's clock (meter), the system's (system), or the "
                 "meter's unless it is implausible (auto)."},

        {IN(STORE) = "database", PATH(C, store.database), .def = "", .flags = R,
         .help = "SQLite database file; empty: p1d.db in state_directory."},
        {IN(STORE) = "commit_interval", DUR(C, store.commit_interval_ms, SEC, 10 * MINUTE),
         .def = "60s", .help = "Write batched readings to the database this often."},
        {IN(STORE) = "raw_days", INT(C, store.raw_days, 0, 3650), .def = "7",
         .help = "Days of full-resolution readings kept; aggregates are kept for good."},
        {IN(STORE) = "enabled", BOOL(C, store.enabled), .def = "true", .flags = R,
         .help = "Keep history in the database."},

        {IN(MQTT) = "host", STR(C, mqtt.host), .def = "", .max = 253, .flags = R,
         .check = check_host, .help = "Broker host name or address; empty: MQTT is off."},
        {IN(MQTT) = "port", INT(C, mqtt.port, 1, 65535), .def = "1883", .flags = R,
         .help = "Broker port; usually 8883 with tls."},
        {IN(MQTT) = "client_id", STR(C, mqtt.client_id), .def = "", .max = 64, .flags = R,
         .help = "MQTT client identifier; empty: p1d- and the host name."},
        {IN(MQTT) = "username", STR(C, mqtt.username), .def = "", .flags = R,
         .help = "User name at the broker."},
        {IN(MQTT) = "password", STR(C, mqtt.password), .def = "", .flags = SECRET,
         .conflicts = "password_file", .help = "Password at the broker."},
        {IN(MQTT) = "password_file", PATH(C, mqtt.password_file), .def = "", .flags = R,
         .conflicts = "password", .apply = apply_password_file,
         .help = "File whose first line is the password; group and others may not access it."},
        {IN(MQTT) = "base_topic", STR(C, mqtt.base_topic), .def = "p1d", .max = 128, .flags = R,
         .check = check_topic, .help = "First level of every topic published."},
        {IN(MQTT) = "qos", INT(C, mqtt.qos, 0, 2), .def = "1", .flags = R,
         .help = "MQTT quality of service of messages published."},
        {IN(MQTT) = "retain", BOOL(C, mqtt.retain), .def = "true", .flags = R,
         .help = "Publish readings as retained messages."},
        {IN(MQTT) = "keepalive", DUR(C, mqtt.keepalive_ms, 5 * SEC, 18 * HOUR), .def = "60s",
         .flags = R, .help = "MQTT keep-alive interval."},
        {IN(MQTT) = "tls", BOOL(C, mqtt.tls), .def = "false", .flags = R,
         .help = "Connect to the broker with TLS."},
        {IN(MQTT) = "ca_file", PATH(C, mqtt.ca_file), .def = "", .flags = R,
         .help = "CA certificates that vouch for the broker; empty: the system's."},
        {IN(MQTT) = "cert_file", PATH(C, mqtt.cert_file), .def = "", .flags = R,
         .help = "Client certificate, with key_file."},
        {IN(MQTT) = "key_file", PATH(C, mqtt.key_file), .def = "", .flags = R,
         .help = "Private key of the client certificate."},
        {IN(MQTT) = "tls_insecure", BOOL(C, mqtt.tls_insecure), .def = "false", .flags = R,
         .help = "Do not check the broker's name against its certificate."},
        {IN(MQTT) = "discovery", BOOL(C, mqtt.discovery), .def = "true", .flags = R,
         .help = "Publish Home Assistant discovery messages."},
        {IN(MQTT) = "discovery_prefix", STR(C, mqtt.discovery_prefix), .def = "homeassistant",
         .max = 128, .flags = R, .check = check_topic,
         .help = "Topic prefix Home Assistant watches for discovery."},
        {IN(MQTT) = "dsmr_reader", BOOL(C, mqtt.dsmr_reader), .def = "false", .flags = R,
         .help = "Also publish DSMR Reader's topics (dsmr/reading/...) for existing automations."},
        {IN(MQTT) = "queue", INT(C, mqtt.queue, 0, 100000), .def = "0", .flags = R,
         .check = check_queue,
         .help = "Readings kept in memory while the broker is away; with a store, older ones "
                 "are sent from the history. 0: 3600 without a store, 300 with one."},
        {IN(MQTT) = "interval", DUR(C, mqtt.interval_ms, 0, HOUR), .def = "0",
         .help = "Publish at most this often; 0: every telegram."},

        {IN(HTTP) = "listen", ADDRS(C, http.listen), .def = "127.0.0.1:8080", .flags = R,
         .help = "ADDRESS:PORT to serve HTTP on, separated by spaces; empty: HTTP is off."},
        {IN(HTTP) = "max_connections", INT(C, http.max_connections, 1, 1024), .def = "64",
         .flags = R, .help = "Connections served at once."},
        {IN(HTTP) = "timeout", DUR(C, http.timeout_ms, SEC, 10 * MINUTE), .def = "10s", .flags = R,
         .help = "Close a connection idle this long."},
        {IN(HTTP) = "tls_cert", PATH(C, http.tls_cert), .def = "", .flags = R,
         .help = "PEM certificate (chain) to serve HTTPS with, with tls_key; empty: plain HTTP."},
        {IN(HTTP) = "tls_key", PATH(C, http.tls_key), .def = "", .flags = R,
         .help = "PEM private key of tls_cert; others may not read it."},
        {IN(HTTP) = "read_token", STR(C, http.read_token), .def = "", .max = 256,
         .flags = CONFIG_SECRET, .check = check_token,
         .help = "Bearer token needed to read; empty: reading needs none."},
        {IN(HTTP) = "admin_token", STR(C, http.admin_token), .def = "", .max = 256,
         .flags = CONFIG_SECRET, .check = check_token,
         .help = "Bearer token of the write endpoints; empty: they are off."},
        {IN(HTTP) = "homewizard", BOOL(C, http.homewizard), .def = "false", .flags = R,
         .help = "Also answer the HomeWizard P1 local API (/api, /api/v1/data)."},
        {IN(HTTP) = "announce", BOOL(C, http.announce), .def = "true", .flags = R,
         .help = "With homewizard, announce it on the network through avahi-daemon "
                 "(_hwenergy._tcp) unless HTTP listens on loopback only."},
        {IN(HTTP) = "relay", HOSTPORT(C, http.relay), .def = "", .flags = R,
         .help = "ADDR:PORT of a read-only TCP server that re-sends every raw telegram of the first meter."},
        {IN(HTTP) = "dashboard", BOOL(C, http.dashboard), .def = "true", .flags = R,
         .help = "Serve the dashboard at /."},
        {IN(HTTP) = "www_dir", PATH(C, http.www_dir), .def = "", .flags = R,
         .help = "Directory of the dashboard's files; empty: the files installed with p1d."},
        {IN(HTTP) = "chartjs", PATH(C, http.chartjs), .def = "", .flags = R,
         .help = "Chart.js file (UMD build) the dashboard uses; empty: the build's choice."},
};

#define N_ITEMS ELEMENTSOF(items)

static const char *const section_names[CONFIG_SECTION_COUNT] = {"p1d", "meter", "store", "mqtt",
                                                                "http"};
static const char *const type_names[CONFIG_TYPE_COUNT] = {
        "string", "path", "bool", "int", "duration", "enum", "hexkey", "host:port", "addresses"};

const struct config_item *config_items(size_t *ret_n)
{
	*ret_n = N_ITEMS;
	return items;
}

const char *config_section_name(enum config_section s)
{
	return (unsigned)s < CONFIG_SECTION_COUNT ? section_names[s] : "?";
}

const char *config_type_name(enum config_type t)
{
	return (unsigned)t < CONFIG_TYPE_COUNT ? type_names[t] : "?";
}

static const struct config_item *find_item(int section, const char *name, size_t len)
{
	for (size_t i = 0; i < N_ITEMS; i++)
		if ((int)items[i].section == section && strlen(items[i].name) == len &&
		    memcmp(items[i].name, name, len) == 0)
			return &items[i];
	return NULL;
}

static void *member(const struct config_item *it, const void *base)
{
	return (char *)base + it->offset;
}

/* Values. The functions below take a pointer to a member of the key's type; a parsed value
 * waits in a union value (aligned for every type) until it replaces the member. */
union value {
	char *s;
	bool b;
	int i;
	int64_t ms;
	struct config_hexkey k;
	struct config_hostport hp;
	struct config_addrs a;
};

static size_t type_size(enum config_type t)
{
	switch (t) {
	case CONFIG_BOOL:
		return sizeof(bool);
	case CONFIG_INT:
	case CONFIG_ENUM:
		return sizeof(int);
	case CONFIG_DURATION:
		return sizeof(int64_t);
	case CONFIG_HEXKEY:
		return sizeof(struct config_hexkey);
	case CONFIG_HOSTPORT:
		return sizeof(struct config_hostport);
	case CONFIG_ADDRS:
		return sizeof(struct config_addrs);
	default:
		return sizeof(char *);
	}
}

static void value_free(const struct config_item *it, void *v)
{
	char **str = v;
	struct config_hostport *hp = v;
	struct config_addrs *a = v;

	switch (it->type) {
	case CONFIG_STRING:
	case CONFIG_PATH:
		free_secret(*str);
		*str = NULL;
		break;
	case CONFIG_HOSTPORT:
		free(hp->host);
		hp->host = NULL;
		break;
	case CONFIG_ADDRS:
		for (size_t i = 0; i < a->n; i++)
			free(a->v[i].host);
		free(a->v);
		*a = (struct config_addrs){0};
		break;
	default:
		explicit_bzero(v, type_size(it->type));
		break;
	}
} /* NOLINT(clang-analyzer-unix.Malloc): clang 14 loses a union value's s read as *str */

/* Whether a key that excludes others holds something. */
static bool value_is_set(const struct config_item *it, const void *v)
{
	switch (it->type) {
	case CONFIG_STRING:
	case CONFIG_PATH:
		return *(char *const *)v && **(char *const *)v;
	case CONFIG_HEXKEY:
		return ((const struct config_hexkey *)v)->set;
	case CONFIG_HOSTPORT:
		return ((const struct config_hostport *)v)->host != NULL;
	case CONFIG_ADDRS:
		return ((const struct config_addrs *)v)->n > 0;
	default:
		return true;
	}
}

static bool hostport_equal(const struct config_hostport *a, const struct config_hostport *b)
{
	return a->port == b->port &&
	       (a->host && b->host ? strcmp(a->host, b->host) == 0 : a->host == b->host);
}

static bool value_equal(const struct config_item *it, const void *va, const void *vb)
{
	const struct config_hexkey *ka = va, *kb = vb;
	const struct config_addrs *aa = va, *ab = vb;
	const char *sa, *sb;

	switch (it->type) {
	case CONFIG_STRING:
	case CONFIG_PATH:
		sa = *(char *const *)va;
		sb = *(char *const *)vb;
		return strcmp(sa ? sa : "", sb ? sb : "") == 0;
	case CONFIG_HEXKEY:
		return ka->set == kb->set &&
		       (!ka->set || !memcmp(ka->bytes, kb->bytes, CONFIG_KEY_LEN));
	case CONFIG_HOSTPORT:
		return hostport_equal(va, vb);
	case CONFIG_ADDRS:
		if (aa->n != ab->n)
			return false;
		for (size_t i = 0; i < aa->n; i++)
			if (!hostport_equal(&aa->v[i], &ab->v[i]))
				return false;
		return true;
	default:
		return memcmp(va, vb, type_size(it->type)) == 0;
	}
}

static int parse_int(const char *s, long long *ret)
{
	char *end;
	long long v;

	if (!isdigit((unsigned char)s[s[0] == '-']))
		return -EINVAL;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (*end)
		return -EINVAL;
	if (errno)
		return -ERANGE;
	*ret = v;
	return 0;
}

static const struct {
	const char *name;
	int64_t ms;
} units[] = {{"d", DAY}, {"h", HOUR}, {"min", MINUTE}, {"s", SEC}, {"ms", 1}};

/* "30s", "1h30min", "1h 30min", "10 s", "500ms"; a lone bare number is seconds.
 * Returns -EINVAL or -ERANGE. */
static int parse_duration(const char *s, int64_t *ret)
{
	const char *p = s;
	int64_t total = 0;

	if (!*p)
		return -EINVAL;
	while (*p) {
		int64_t n = 0, unit = 0;
		size_t ulen;

		if (!isdigit((unsigned char)*p))
			return -EINVAL;
		for (; isdigit((unsigned char)*p); p++) {
			if (n > (INT64_MAX - 9) / 10)
				return -ERANGE;
			n = n * 10 + (*p - '0');
		}
		p += strspn(p, " \t");
		for (ulen = 0; isalpha((unsigned char)p[ulen]); ulen++)
			;
		if (ulen == 0 && !*p && total == 0 && !strpbrk(s, " \t"))
			unit = SEC; /* a lone bare number */
		for (size_t i = 0; i < ELEMENTSOF(units) && ulen; i++)
			if (strlen(units[i].name) == ulen && memcmp(p, units[i].name, ulen) == 0)
				unit = units[i].ms;
		if (!unit)
			return -EINVAL;
		if (n > (INT64_MAX - total) / unit)
			return -ERANGE;
		total += n * unit;
		for (p += ulen; *p == ' ' || *p == '\t'; p++)
			;
	}
	*ret = total;
	return 0;
}

static void format_duration(int64_t ms, char *buf, size_t len)
{
	if (ms == 0) {
		snprintf(buf, len, "0");
		return;
	}
	for (size_t i = 0; i < ELEMENTSOF(units); i++)
		if (ms % units[i].ms == 0) {
			snprintf(buf, len, "%lld%s", (long long)(ms / units[i].ms), units[i].name);
			return;
		}
}

/* HOST:PORT or [IPV6]:PORT, n bytes of s. */
static int parse_hostport(const char *s, size_t n, struct config_hostport *ret)
{
	const char *host = s, *colon, *p;
	size_t hlen;
	long port = 0;

	if (n > 0 && s[0] == '[') {
		const char *close = memchr(s, ']', n);
		if (!close || close + 1 == s + n || close[1] != ':')
			return -EINVAL;
		host = s + 1;
		hlen = (size_t)(close - host);
		colon = close + 1;
	} else {
		colon = memchr(s, ':', n);
		if (!colon || memchr(colon + 1, ':', (size_t)(s + n - colon - 1)))
			return -EINVAL; /* no port, or IPv6 without brackets */
		hlen = (size_t)(colon - s);
	}
	if (hlen == 0 || hlen > 253)
		return -EINVAL;
	for (size_t i = 0; i < hlen; i++)
		if (!isgraph((unsigned char)host[i]) || strchr("[]/@", host[i]))
			return -EINVAL;
	if (colon + 1 == s + n)
		return -EINVAL;
	for (p = colon + 1; p < s + n; p++) {
		if (!isdigit((unsigned char)*p) || port > 65535)
			return -EINVAL;
		port = port * 10 + (*p - '0');
	}
	if (port < 1 || port > 65535)
		return -EINVAL;
	ret->host = strndup(host, hlen);
	ret->port = (int)port;
	return ret->host ? 0 : -ENOMEM;
}

static int parse_addrs(const char *s, struct config_addrs *ret)
{
	struct config_addrs a = {0};
	int r = 0;

	a.v = calloc(CONFIG_LISTEN_MAX, sizeof(*a.v));
	if (!a.v)
		return -ENOMEM;
	while (r == 0) {
		size_t n;
		s += strspn(s, " \t");
		n = strcspn(s, " \t");
		if (n == 0)
			break;
		r = a.n == CONFIG_LISTEN_MAX ? -ERANGE : parse_hostport(s, n, &a.v[a.n]);
		if (r == 0)
			a.n++;
		s += n;
	}
	if (r < 0 || a.n == 0) {
		value_free(&(struct config_item){.type = CONFIG_ADDRS}, &a);
		return r;
	}
	*ret = a;
	return 0;
}

static void format_hostport(const struct config_hostport *hp, char *buf, size_t len)
{
	if (!hp->host)
		snprintf(buf, len, "%s", "");
	else
		/* Flawfinder: ignore: either format is a literal (gcc checks both) */
		snprintf(buf, len, strchr(hp->host, ':') ? "[%s]:%d" : "%s:%d", hp->host, hp->port);
}

static size_t enum_list(const struct config_item *it, const char *sep, char *buf, size_t len)
{
	size_t n = 0;

	buf[0] = '\0';
	for (const struct config_enum_value *e = it->values; e->name && n < len; e++)
		n += (size_t)snprintf(buf + n, len - n, "%s%s", e == it->values ? "" : sep,
		                      e->name);
	return n;
}

size_t config_item_bounds(const struct config_item *it, char *buf, size_t len)
{
	char lo[32], hi[32];

	buf[0] = '\0';
	switch (it->type) {
	case CONFIG_INT:
		return (size_t)snprintf(buf, len, "%lld..%lld", (long long)it->min,
		                        (long long)it->max);
	case CONFIG_DURATION:
		format_duration(it->min, lo, sizeof(lo));
		format_duration(it->max, hi, sizeof(hi));
		return (size_t)snprintf(buf, len, "%s..%s", lo, hi);
	case CONFIG_ENUM:
		return enum_list(it, "|", buf, len);
	default:
		return 0;
	}
}

/* Parse text into u. On -EINVAL/-ERANGE, msg says what was expected. */
static int value_parse(const struct config_item *it, const char *s, union value *u, char *msg,
                       size_t len)
{
	long long n;
	int r;

	memset(u, 0, sizeof(*u));
	switch (it->type) {
	case CONFIG_STRING:
	case CONFIG_PATH: {
		size_t max = it->max ? (size_t)it->max : STRING_MAX, l = strlen(s);
		for (const char *p = s; *p; p++)
			if ((unsigned char)*p < ' ' || *p == 0x7f) {
				snprintf(msg, len, "expected no control characters");
				return -EINVAL;
			}
		if (l > max) {
			snprintf(msg, len, "expected at most %zu characters", max);
			return -EINVAL;
		}
		if (l < (size_t)it->min) {
			snprintf(msg, len, "expected %s",
			         it->type == CONFIG_PATH ? "a path" : "text");
			return -EINVAL;
		}
		u->s = strdup(s);
		return u->s ? 0 : -ENOMEM;
	}
	case CONFIG_BOOL:
		if (!strcasecmp(s, "true") || !strcasecmp(s, "yes") || !strcasecmp(s, "on") ||
		    !strcmp(s, "1"))
			u->b = true;
		else if (strcasecmp(s, "false") && strcasecmp(s, "no") && strcasecmp(s, "off") &&
		         strcmp(s, "0"))
			return snprintf(msg, len, "expected true or false"), -EINVAL;
		return 0;
	case CONFIG_INT:
		if (parse_int(s, &n) < 0 || n < it->min || n > it->max) {
			snprintf(msg, len, "expected an integer from %lld to %lld",
			         (long long)it->min, (long long)it->max);
			return -EINVAL;
		}
		u->i = (int)n;
		return 0;
	case CONFIG_DURATION:
		r = parse_duration(s, &u->ms);
		if (r == -EINVAL) {
			snprintf(msg, len, "expected a duration like 30s");
		} else if (r < 0 || u->ms < it->min || u->ms > it->max) {
			char lo[32], hi[32];
			format_duration(it->min, lo, sizeof(lo));
			format_duration(it->max, hi, sizeof(hi));
			snprintf(msg, len, "expected a duration from %s to %s", lo, hi);
			r = -EINVAL;
		}
		return r;
	case CONFIG_ENUM:
		for (const struct config_enum_value *e = it->values; e->name; e++)
			if (strcmp(s, e->name) == 0) {
				u->i = e->value;
				return 0;
			}
		r = snprintf(msg, len, "expected one of ");
		enum_list(it, ", ", msg + r, len - (size_t)r);
		return -EINVAL;
	case CONFIG_HEXKEY:
		if (!*s && !*it->def)
			return 0;
		if (parse_hex_key(s, u->k.bytes) < 0)
			return snprintf(msg, len, "expected 32 hexadecimal digits"), -EINVAL;
		u->k.set = true;
		return 0;
	case CONFIG_HOSTPORT:
		if (!*s)
			return 0;
		r = parse_hostport(s, strlen(s), &u->hp);
		if (r == -EINVAL)
			snprintf(msg, len, "expected HOST:PORT like 192.168.1.20:8088");
		return r;
	case CONFIG_ADDRS:
		r = *s ? parse_addrs(s, &u->a) : 0;
		if (r == -EINVAL || r == -ERANGE) {
			snprintf(msg, len, "expected up to %d ADDRESS:PORT separated by spaces",
			         CONFIG_LISTEN_MAX);
			r = -EINVAL;
		}
		return r;
	default:
		return -EINVAL;
	}
}

/* The canonical text of a member (secrets included: callers mask). */
static void value_format(const struct config_item *it, const void *v, char *buf, size_t len)
{
	const struct config_hexkey *k = v;
	const struct config_addrs *a = v;
	const char *str;
	size_t n = 0;

	buf[0] = '\0';
	switch (it->type) {
	case CONFIG_STRING:
	case CONFIG_PATH:
		str = *(char *const *)v;
		snprintf(buf, len, "%s", str ? str : "");
		break;
	case CONFIG_BOOL:
		snprintf(buf, len, "%s", *(const bool *)v ? "true" : "false");
		break;
	case CONFIG_INT:
		snprintf(buf, len, "%d", *(const int *)v);
		break;
	case CONFIG_DURATION:
		format_duration(*(const int64_t *)v, buf, len);
		break;
	case CONFIG_ENUM:
		for (const struct config_enum_value *e = it->values; e->name; e++)
			if (e->value == *(const int *)v) {
				snprintf(buf, len, "%s", e->name);
				break;
			}
		break;
	case CONFIG_HEXKEY:
		for (size_t i = 0; k->set && i < CONFIG_KEY_LEN && n + 3 <= len; i++)
			n += (size_t)snprintf(buf + n, len - n, "%02X", k->bytes[i]);
		break;
	case CONFIG_HOSTPORT:
		format_hostport(v, buf, len);
		break;
	case CONFIG_ADDRS:
		for (size_t i = 0; i < a->n && n + 1 < len; i++) {
			if (i)
				buf[n++] = ' ';
			format_hostport(&a->v[i], buf + n, len - n);
			n += strlen(buf + n);
		}
		break;
	default:
		break;
	}
}

enum mode {
	MODE_DEFAULT, /* filling in a default */
	MODE_FILE,    /* from a config file: conflicting keys are an error */
	MODE_OPTION,  /* from the command line: it wins, conflicting keys are reset */
};

static int set_item(const struct config_item *it, void *base, const char *text, enum mode mode,
                    const char *where, char *msg, size_t len);

/* Enforce .conflicts before a key is set to something. */
static int resolve_conflicts(const struct config_item *it, void *base, enum mode mode,
                             const char *where, char *msg, size_t len)
{
	const char *p = it->conflicts;

	while (p && *p) {
		size_t n = strcspn(p, " ");
		const struct config_item *o = find_item(it->section, p, n);

		p += n + strspn(p + n, " ");
		if (!o || !value_is_set(o, member(o, base)))
			continue;
		if (mode != MODE_OPTION) {
			snprintf(msg, len, "%s and %s are both set in %s; use only one", o->name,
			         it->name, where);
			return -EINVAL;
		}
		int r = set_item(o, base, o->def, MODE_DEFAULT, where, msg, len);
		if (r < 0)
			return r;
	}
	return 0;
}

/* The one way a key gets a value: parse, check, resolve conflicts, read files, store. */
static int set_item(const struct config_item *it, void *base, const char *text, enum mode mode,
                    const char *where, char *msg, size_t len)
{
	union value v;
	char why[128];
	const char *bad;
	int r;

	r = value_parse(it, text, &v, why, sizeof(why));
	if (r == 0 && it->check && (bad = it->check(text))) {
		snprintf(why, sizeof(why), "%s", bad);
		value_free(it, &v);
		r = -EINVAL;
	}
	if (r == -ENOMEM) {
		snprintf(msg, len, "out of memory");
		return r;
	}
	if (r < 0) {
		/* bounded so that the whole fits a struct config_error */
		if (it->flags & CONFIG_SECRET)
			snprintf(msg, len, "bad value for %.40s: %.100s", it->name, why);
		else
			snprintf(msg, len, "bad value \"%.80s\" for %.40s: %.100s", text, it->name,
			         why);
		return -EINVAL;
	}
	if (value_is_set(it, &v) && it->conflicts)
		r = resolve_conflicts(it, base, mode, where, msg, len);
	if (r == 0 && it->apply)
		r = it->apply(base, text, msg, len);
	if (r < 0) {
		value_free(it, &v);
		return r;
	}
	value_free(it, member(it, base));
	memcpy(member(it, base), &v, type_size(it->type));
	return 0;
}

static int set_defaults(enum config_section s, void *base)
{
	char msg[256];

	for (size_t i = 0; i < N_ITEMS; i++)
		if (items[i].section == s) {
			int r = set_item(&items[i], base, items[i].def, MODE_DEFAULT, "", msg,
			                 sizeof(msg));
			if (r < 0)
				return r;
		}
	return 0;
}

static void free_section(enum config_section s, void *base)
{
	for (size_t i = 0; i < N_ITEMS; i++)
		if (items[i].section == s)
			value_free(&items[i], member(&items[i], base));
}

struct config *config_new_defaults(void)
{
	struct config *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	for (int s = 0; s < CONFIG_SECTION_COUNT; s++)
		if (s != CONFIG_SECTION_METER && set_defaults(s, c) < 0)
			return config_free(c);
	return c;
}

struct config *config_free(struct config *c)
{
	if (!c)
		return NULL;
	for (size_t i = 0; i < c->n_meters; i++)
		free_section(CONFIG_SECTION_METER, &c->meters[i]);
	free(c->meters);
	for (int s = 0; s < CONFIG_SECTION_COUNT; s++)
		if (s != CONFIG_SECTION_METER)
			free_section(s, c);
	free(c->path);
	free(c);
	return NULL;
}

static bool meter_name_valid(const char *name)
{
	size_t n = strlen(name);

	return n >= 1 && n <= CONFIG_METER_NAME_MAX &&
	       strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_-") == n;
}

const struct config_meter *config_find_meter(const struct config *c, const char *name)
{
	for (size_t i = 0; c && i < c->n_meters; i++)
		if (strcmp(c->meters[i].name, name) == 0)
			return &c->meters[i];
	return NULL;
}

/* A new meter at its defaults; the name is valid and unused. Returns its index. */
static int meter_add(struct config *c, const char *name, unsigned line, char *msg, size_t len)
{
	struct config_meter *v;

	if (c->n_meters >= CONFIG_METERS_MAX) {
		snprintf(msg, len, "too many meters (at most %d)", CONFIG_METERS_MAX);
		return -EINVAL;
	}
	v = realloc(c->meters, (c->n_meters + 1) * sizeof(*v));
	if (!v)
		return snprintf(msg, len, "out of memory"), -ENOMEM;
	c->meters = v;
	v = &c->meters[c->n_meters++];
	*v = (struct config_meter){.line = line};
	snprintf(v->name, sizeof(v->name), "%s", name);
	if (set_defaults(CONFIG_SECTION_METER, v) < 0)
		return snprintf(msg, len, "out of memory"), -ENOMEM;
	return (int)(c->n_meters - 1);
}

static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), row[64], prev, tmp;

	if (la >= 64 || lb >= 64)
		return 64;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		prev = row[0];
		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			tmp = row[j];
			row[j] = a[i - 1] == b[j - 1] ? prev : 1 + prev;
			if (row[j] > row[j - 1] + 1)
				row[j] = row[j - 1] + 1;
			if (row[j] > tmp + 1)
				row[j] = tmp + 1;
			prev = tmp;
		}
	}
	return row[lb];
}

/* "unknown key ..." with a hint: a near miss in the section, or the section it belongs in.
 * where NULL: the key came before any section header. */
static void unknown_key(int section, const char *name, const char *where, char *msg, size_t len)
{
	const struct config_item *best = NULL, *elsewhere = NULL;
	size_t best_d = 3, n;

	for (size_t i = 0; i < N_ITEMS; i++) {
		size_t d = edit_distance(name, items[i].name);
		if ((int)items[i].section == section && d < best_d && d < strlen(name)) {
			best = &items[i];
			best_d = d;
		}
		if ((int)items[i].section != section && d == 0 && !elsewhere)
			elsewhere = &items[i];
	}
	if (where)
		n = (size_t)snprintf(msg, len, "unknown key \"%.64s\" in %s", name, where);
	else
		n = (size_t)snprintf(msg, len, "key \"%.64s\" outside of any section", name);
	if (n >= len)
		return;
	if (best)
		snprintf(msg + n, len - n, " (did you mean \"%s\"?)", best->name);
	else if (elsewhere)
		snprintf(msg + n, len - n, " (it belongs in [%s%s])",
		         section_names[elsewhere->section],
		         elsewhere->section == CONFIG_SECTION_METER ? " NAME" : "");
}

static void where_name(int section, const struct config_meter *m, char *buf, size_t len)
{
	if (section == CONFIG_SECTION_METER)
		snprintf(buf, len, "[meter %s]", m->name);
	else
		snprintf(buf, len, "[%s]", section_names[section]);
}

static void set_error(struct config_error *err, const char *file, unsigned line, const char *fmt,
                      ...)
        __attribute__((format(printf, 4, 5))); /* Flawfinder: ignore: attribute */
static void set_error(struct config_error *err, const char *file, unsigned line, const char *fmt,
                      ...)
{
	va_list ap;

	if (!err)
		return;
	snprintf(err->file, sizeof(err->file), "%s", file ? file : "");
	err->line = line;
	va_start(ap, fmt);
	/* Flawfinder: ignore: fmt is set_error's, whose callers gcc checks (format attribute) */
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
}

char *config_error_format(const struct config_error *e, char *buf, size_t len)
{
	if (e->file[0] && e->line)
		snprintf(buf, len, "%s:%u: %s", e->file, e->line, e->msg);
	else if (e->file[0])
		snprintf(buf, len, "%s: %s", e->file, e->msg);
	else
		snprintf(buf, len, "%s", e->msg);
	return buf;
}

/* Parsing one file. libinih does the syntax; our reader hands it one line per call, which
 * lets us count lines, refuse overlong ones, drop indentation (so no line is ever taken as a
 * continuation of the one before) and see every section header, even of an empty section. */
enum { CUR_NONE = -1, CUR_SKIP = -2 };

struct parse {
	struct config *c;
	const char *name; /* for messages */
	FILE *f;          /* input: a file, */
	const char *s;    /* or text */
	unsigned line;
	int cur;      /* enum config_section, CUR_NONE before any, CUR_SKIP after a bad header */
	size_t meter; /* when cur is CONFIG_SECTION_METER */
	unsigned section_line[CONFIG_SECTION_COUNT];
	unsigned seen[N_ITEMS];                          /* line each key was set on, [p1d] etc. */
	unsigned seen_meter[CONFIG_METERS_MAX][N_ITEMS]; /* the same per meter */
	int error;                                       /* the first error */
	unsigned error_line;
	struct config_error *err;
};

static int parse_fail(struct parse *p, int r, const char *fmt, ...)
        __attribute__((format(printf, 3, 4))); /* Flawfinder: ignore: attribute */
static int parse_fail(struct parse *p, int r, const char *fmt, ...)
{
	va_list ap;

	if (p->error)
		return 0;
	p->error = r;
	p->error_line = p->line;
	if (p->err) {
		snprintf(p->err->file, sizeof(p->err->file), "%s", p->name);
		p->err->line = p->line;
		va_start(ap, fmt);
		/* Flawfinder: ignore: parse_fail's fmt, checked by gcc like set_error's */
		vsnprintf(p->err->msg, sizeof(p->err->msg), fmt, ap);
		va_end(ap);
	}
	return 0; /* what an inih handler returns on error */
}

static void section_header(struct parse *p, const char *line)
{
	const char *end = strchr(line, ']'), *rest, *start = line + 1;
	char buf[256], *name = buf, msg[256];
	size_t n;
	int r;

	p->cur = CUR_SKIP;
	if (!end) {
		parse_fail(p, -EINVAL, "missing ] in section header");
		return;
	}
	rest = end + 1 + strspn(end + 1, " \t\r\n");
	if (*rest && *rest != ';' && *rest != '#') {
		parse_fail(p, -EINVAL, "unexpected text after [%.*s]", (int)(end - start), start);
		return;
	}
	start += strspn(start, " \t");
	while (end > start && isblank((unsigned char)end[-1]))
		end--;
	n = (size_t)(end - start) < sizeof(buf) ? (size_t)(end - start) : sizeof(buf) - 1;
	memcpy(buf, start, n);
	buf[n] = '\0';
	if (strncmp(name, "meter", 5) == 0 && (!name[5] || isblank((unsigned char)name[5]))) {
		const struct config_meter *m;
		name += 5 + strspn(name + 5, " \t");
		if (!meter_name_valid(name)) {
			parse_fail(p, -EINVAL,
			           *name ? "bad meter name \"%.64s\": expected 1 to 32 of a-z, "
			                   "0-9, _ and -"
			                 : "section [meter%s] needs a name: [meter NAME]",
			           name);
			return;
		}
		m = config_find_meter(p->c, name);
		if (m && m->line) {
			parse_fail(p, -EINVAL, "duplicate section [meter %s] (first on line %u)",
			           name, m->line);
			return;
		}
		if (m) {
			parse_fail(p, -EINVAL, "duplicate section [meter %s]", name);
			return;
		}
		r = meter_add(p->c, name, p->line, msg, sizeof(msg));
		if (r < 0) {
			parse_fail(p, r, "%s", msg);
			return;
		}
		p->meter = (size_t)r;
		p->cur = CONFIG_SECTION_METER;
		return;
	}
	for (int s = 0; s < CONFIG_SECTION_COUNT; s++) {
		if (s == CONFIG_SECTION_METER || strcmp(name, section_names[s]) != 0)
			continue;
		if (p->section_line[s]) {
			parse_fail(p, -EINVAL, "duplicate section [%s] (first on line %u)", name,
			           p->section_line[s]);
			return;
		}
		p->section_line[s] = p->line;
		p->cur = s;
		return;
	}
	parse_fail(p, -EINVAL, "unknown section [%.64s]", name);
}

static char *next_chunk(struct parse *p, char *buf, int cap)
{
	size_t n = 0;

	if (p->f)
		return fgets(buf, cap, p->f);
	if (!*p->s)
		return NULL;
	while (*p->s && n + 1 < (size_t)cap)
		if ((buf[n++] = *p->s++) == '\n')
			break;
	buf[n] = '\0';
	return buf;
}

static bool at_end(struct parse *p)
{
	int ch;

	if (!p->f)
		return !*p->s;
	ch = getc(p->f);
	if (ch == EOF)
		return true;
	ungetc(ch, p->f);
	return false;
}

static char *reader(char *buf, int cap, void *stream)
{
	struct parse *p = stream;
	size_t n, skip;
	char rest[256];

	if (!next_chunk(p, buf, cap))
		return NULL;
	p->line++;
	n = strlen(buf);
	if ((n == 0 || buf[n - 1] != '\n') && !at_end(p)) {
		while (next_chunk(p, rest, sizeof(rest)) && !strchr(rest, '\n'))
			;
		parse_fail(p, -EINVAL, "line longer than %d characters", cap - 3);
		memcpy(buf, "\n", sizeof("\n"));
		return buf;
	}
	if (p->line == 1 && strncmp(buf, "\xEF\xBB\xBF", 3) == 0)
		memmove(buf, buf + 3, n - 2);
	skip = strspn(buf, " \t\v\f\r"); /* every blank libinih's lskip drops but the line end */
	memmove(buf, buf + skip, strlen(buf + skip) + 1);
	if (buf[0] == '[')
		section_header(p, buf);
	return buf;
}

static int handler(void *user, const char *section, const char *name, const char *value)
{
	struct parse *p = user;
	const struct config_item *it;
	void *base = p->c;
	unsigned *seen;
	char where[64], msg[256];
	int r;

	(void)section; /* ours is p->cur, from the same header */
	if (p->cur == CUR_SKIP)
		return 1; /* the bad header has been reported */
	if (p->cur == CUR_NONE) {
		unknown_key(CUR_NONE, name, NULL, msg, sizeof(msg));
		return parse_fail(p, -EINVAL, "%s", msg);
	}
	if (p->cur == CONFIG_SECTION_METER)
		base = &p->c->meters[p->meter];
	where_name(p->cur, base, where, sizeof(where));
	it = find_item(p->cur, name, strlen(name));
	if (!it) {
		unknown_key(p->cur, name, where, msg, sizeof(msg));
		return parse_fail(p, -EINVAL, "%s", msg);
	}
	seen = p->cur == CONFIG_SECTION_METER ? &p->seen_meter[p->meter][it - items]
	                                      : &p->seen[it - items];
	if (*seen)
		return parse_fail(p, -EINVAL, "duplicate key \"%s\" in %s (first on line %u)", name,
		                  where, *seen);
	*seen = p->line;
	r = set_item(it, base, value, MODE_FILE, where, msg, sizeof(msg));
	if (r < 0)
		return parse_fail(p, r, "%s", msg);
	return 1;
}

static int parse_run(struct parse *p)
{
	int r = ini_parse_stream(reader, p, handler, p);

	if (r == -2) {
		p->error = 0;
		parse_fail(p, -ENOMEM, "out of memory");
	} else if (r > 0 && (!p->error || (unsigned)r < p->error_line)) {
		p->error = 0; /* an earlier line that inih could not read */
		p->line = (unsigned)r;
		parse_fail(p, -EINVAL, "expected \"key = value\", \"[section]\" or a # comment");
	}
	if (!p->error && p->f && ferror(p->f))
		parse_fail(p, -EIO, "%s", strerror(EIO));
	return p->error;
}

static struct parse *parse_new(struct config *c, const char *name, struct config_error *err)
{
	struct parse *p = calloc(1, sizeof(*p));

	if (!p) {
		set_error(err, name, 0, "out of memory");
		return NULL;
	}
	p->c = c;
	p->name = name;
	p->cur = CUR_NONE;
	p->err = err;
	return p;
}

/* Run the parse and free p. On success c->path names what was read, for validation. */
static int parse_finish(struct parse *p, const char *name)
{
	struct config *c = p->c;
	struct config_error *err = p->err;
	int r = parse_run(p);
	char *copy;

	free(p);
	if (r < 0)
		return r;
	copy = strdup(name);
	if (!copy) {
		set_error(err, name, 0, "out of memory");
		return -ENOMEM;
	}
	free(c->path);
	c->path = copy;
	return 0;
}

int config_load_string(struct config *c, const char *name, const char *text,
                       struct config_error *err)
{
	struct parse *p = parse_new(c, name, err);

	if (!p)
		return -ENOMEM;
	p->s = text;
	return parse_finish(p, name);
}

int config_load_file(struct config *c, const char *path, struct config_error *err)
{
	struct parse *p;
	struct stat st;
	FILE *f;
	int r;

	f = fopen(path, "re");
	if (!f || fstat(fileno(f), &st) < 0 || S_ISDIR(st.st_mode)) {
		r = !f ? -errno : S_ISDIR(st.st_mode) ? -EISDIR : -errno;
		set_error(err, path, 0, "%s", strerror(-r));
		if (f)
			fclose(f);
		return r;
	}
	p = parse_new(c, path, err);
	if (!p) {
		fclose(f);
		return -ENOMEM;
	}
	p->f = f;
	r = parse_finish(p, path);
	fclose(f);
	return r;
}

int config_set_option(struct config *c, const char *section, const char *name, const char *key,
                      const char *value, struct config_error *err)
{
	const struct config_item *it = NULL;
	void *base = c;
	char where[64], msg[256];
	int s, r;

	for (s = 0; s < CONFIG_SECTION_COUNT; s++)
		if (strcmp(section, section_names[s]) == 0)
			break;
	if (s == CONFIG_SECTION_COUNT || (s == CONFIG_SECTION_METER) != (name != NULL)) {
		set_error(err, "command line", 0, "unknown section [%s%s%s]", section,
		          name ? " " : "", name ? name : "");
		return -EINVAL;
	}
	if (s == CONFIG_SECTION_METER) {
		const struct config_meter *m = config_find_meter(c, name);
		if (!meter_name_valid(name)) {
			set_error(err, "command line", 0,
			          "bad meter name \"%.64s\": expected 1 to 32 of a-z, 0-9, _ and -",
			          name);
			return -EINVAL;
		}
		r = m ? (int)(m - c->meters) : meter_add(c, name, 0, msg, sizeof(msg));
		if (r < 0) {
			set_error(err, "command line", 0, "%s", msg);
			return r;
		}
		base = &c->meters[r];
	}
	where_name(s, base, where, sizeof(where));
	it = find_item(s, key, strlen(key));
	if (!it) {
		unknown_key(s, key, where, msg, sizeof(msg));
		r = -EINVAL;
	} else {
		r = set_item(it, base, value, MODE_OPTION, where, msg, sizeof(msg));
	}
	if (r < 0)
		set_error(err, "command line", 0, "%s", msg);
	return r;
}

enum config_source config_meter_source(const struct config_meter *m)
{
	if (m->serial && *m->serial)
		return CONFIG_SOURCE_SERIAL;
	if (m->tcp.host)
		return CONFIG_SOURCE_TCP;
	if (m->file && *m->file)
		return CONFIG_SOURCE_FILE;
	return CONFIG_SOURCE_NONE;
}

const char *config_database_path(const struct config *c, char *buf, size_t len)
{
	if (*c->store.database)
		snprintf(buf, len, "%s", c->store.database);
	else
		snprintf(buf, len, "%s/p1d.db", c->g.state_directory);
	return buf;
}

static int validate_meter(const struct config *c, const struct config_meter *m,
                          struct config_error *err)
{
	const char *file = c->path ? c->path : "";
	enum config_source src = config_meter_source(m);
	int n = (m->serial && *m->serial) + (m->tcp.host != NULL) + (m->file && *m->file);
	const char *what = NULL;

	if (n == 0)
		what = "has no source: set serial, tcp or file";
	else if (n > 1)
		what = "has more than one source: set only one of serial, tcp and file";
	else if (m->pace != CONFIG_PACE_METER && src != CONFIG_SOURCE_FILE)
		what = "sets pace, which only applies to file sources";
	else if (m->preset != CONFIG_PRESET_AUTO && src != CONFIG_SOURCE_SERIAL)
		what = "sets preset, which only applies to serial sources";
	else if (m->data_request != CONFIG_DATA_REQUEST_NONE && src != CONFIG_SOURCE_SERIAL)
		what = "sets data_request, which only applies to serial sources";
	else if ((m->dialect == P1_DIALECT_SMARTY || m->dialect == P1_DIALECT_AUSTRIA) &&
	         !m->key.set)
		what = "has an encrypting dialect but no key or key_file";
	if (!what)
		return 0;
	set_error(err, file, m->line, "[meter %s] %s", m->name, what);
	return -EINVAL;
}

int config_validate(const struct config *c, struct config_error *err)
{
	const char *file = c->path ? c->path : "";
	const struct config_mqtt *q = &c->mqtt;
	const char *what = NULL;

	if (c->n_meters == 0) {
		set_error(err, file, 0,
		          "no meter: add a [meter NAME] section with serial, tcp or file");
		return -EINVAL;
	}
	for (size_t i = 0; i < c->n_meters; i++) {
		int r = validate_meter(c, &c->meters[i], err);
		if (r < 0)
			return r;
	}
	if (*q->password && !*q->username)
		what = "password needs a username";
	else if (!q->tls && (*q->ca_file || *q->cert_file || *q->key_file || q->tls_insecure))
		what = "ca_file, cert_file, key_file and tls_insecure need tls = true";
	else if (!*q->cert_file != !*q->key_file)
		what = "cert_file and key_file go together";
	if (what) {
		set_error(err, file, 0, "[mqtt] %s", what);
		return -EINVAL;
	}
	return 0;
}

/* First key flagged CONFIG_RESTART that differs between two instances of a section. */
static const struct config_item *restart_diff(enum config_section s, const void *a, const void *b)
{
	for (size_t i = 0; i < N_ITEMS; i++)
		if (items[i].section == s && (items[i].flags & CONFIG_RESTART) &&
		    !value_equal(&items[i], member(&items[i], a), member(&items[i], b)))
			return &items[i];
	return NULL;
}

bool config_needs_restart(const struct config *old, const struct config *new, char *what,
                          size_t len)
{
	const struct config_item *it;

	for (int s = 0; s < CONFIG_SECTION_COUNT; s++)
		if (s != CONFIG_SECTION_METER && (it = restart_diff(s, old, new))) {
			snprintf(what, len, "[%s] %s", section_names[s], it->name);
			return true;
		}
	for (size_t i = 0; i < old->n_meters; i++) {
		const struct config_meter *a = &old->meters[i];
		const struct config_meter *b = config_find_meter(new, a->name);
		if (!b) {
			snprintf(what, len, "[meter %s] removed", a->name);
			return true;
		}
		if ((it = restart_diff(CONFIG_SECTION_METER, a, b))) {
			snprintf(what, len, "[meter %s] %s", a->name, it->name);
			return true;
		}
	}
	for (size_t i = 0; i < new->n_meters; i++)
		if (!config_find_meter(old, new->meters[i].name)) {
			snprintf(what, len, "[meter %s] added", new->meters[i].name);
			return true;
		}
	if (len)
		what[0] = '\0';
	return false;
}

/* A key that holds a secret read from a file it conflicts with (key from key_file). */
static const struct config_item *read_from(const struct config_item *it, const void *base)
{
	const char *p = it->conflicts;

	while (p && *p) {
		size_t n = strcspn(p, " ");
		const struct config_item *o = find_item(it->section, p, n);
		if (o && o->apply && value_is_set(o, member(o, base)))
			return o;
		p += n + strspn(p + n, " ");
	}
	return NULL;
}

static void dump_section(FILE *f, enum config_section s, const void *base, const char *title)
{
	char buf[4096]; /* the longest value: CONFIG_LISTEN_MAX addresses */

	fprintf(f, "%s\n", title);
	for (size_t i = 0; i < N_ITEMS; i++) {
		const struct config_item *it = &items[i], *from;
		const void *v = member(it, base);
		if (it->section != s)
			continue;
		if ((it->flags & CONFIG_SECRET) && (from = read_from(it, base)))
			fprintf(f, "# %s is read from %s\n", it->name, from->name);
		else if (it->flags & CONFIG_SECRET)
			fprintf(f, "%s =%s\n", it->name, value_is_set(it, v) ? " " MASK : "");
		else {
			value_format(it, v, buf, sizeof(buf));
			/* no blank before a leading ';', which libinih would take for a comment */
			fprintf(f, "%s =%s%s\n", it->name, *buf && *buf != ';' ? " " : "", buf);
		}
	}
}

int config_dump(const struct config *c, FILE *f)
{
	char title[64];

	dump_section(f, CONFIG_SECTION_GLOBAL, c, "[p1d]");
	for (size_t i = 0; i < c->n_meters; i++) {
		snprintf(title, sizeof(title), "\n[meter %s]", c->meters[i].name);
		dump_section(f, CONFIG_SECTION_METER, &c->meters[i], title);
	}
	for (int s = CONFIG_SECTION_STORE; s < CONFIG_SECTION_COUNT; s++) {
		snprintf(title, sizeof(title), "\n[%s]", section_names[s]);
		dump_section(f, s, c, title);
	}
	return fflush(f) == 0 && !ferror(f) ? 0 : -EIO;
}
