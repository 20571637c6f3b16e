/* config.h - the daemon's configuration: a plain struct with typed members, the one table of
 * keys that fills it, and the parser of /etc/p1d/p1d.conf (INI, read with libinih).
 *
 * Every key lives in one row of the table in config.c: section, name, type, default, bounds,
 * help, whether a change needs a restart, and where its value is stored. Parsing, command-line
 * options, defaults, dumping, restart detection, the man page test and `p1d --help` all walk
 * that table; adding a key means adding a row (and a member, and its man page entry).
 *
 * Loading never logs and changes nothing outside the struct it fills: it reads the config file
 * and the secret files it names (key_file, password_file), nothing else. Errors come back as a
 * negative errno and a struct config_error naming file and line. main loads a fresh struct,
 * applies options, validates, and only then swaps it in (at start and on SIGHUP).
 */
#ifndef P1D_CONFIG_H
#define P1D_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CONFIG_DEFAULT_PATH "/etc/p1d/p1d.conf"
#define CONFIG_KEY_LEN 16        /* bytes of an AES-128 key, written as 32 hex digits */
#define CONFIG_METER_NAME_MAX 32 /* [a-z0-9_-]{1,32} */
#define CONFIG_METERS_MAX 16     /* [meter NAME] sections per file */
#define CONFIG_LISTEN_MAX 8      /* addresses in [http] listen */

enum config_section {
	CONFIG_SECTION_GLOBAL, /* [p1d] */
	CONFIG_SECTION_METER,  /* [meter NAME], one per meter */
	CONFIG_SECTION_STORE,  /* [store] */
	CONFIG_SECTION_MQTT,   /* [mqtt] */
	CONFIG_SECTION_HTTP,   /* [http] */
	CONFIG_SECTION_COUNT
};

enum config_type {
	CONFIG_STRING,   /* char *, "" when unset */
	CONFIG_PATH,     /* char *, "" when unset */
	CONFIG_BOOL,     /* bool: true/false, yes/no, on/off, 1/0 */
	CONFIG_INT,      /* int within min..max */
	CONFIG_DURATION, /* int64_t milliseconds within min..max; 500ms, 30s, 5min, 1h, 7d */
	CONFIG_ENUM,     /* int: the value of the matching config_enum_value */
	CONFIG_HEXKEY,   /* struct config_hexkey: 32 hex digits */
	CONFIG_HOSTPORT, /* struct config_hostport: HOST:PORT or [IPV6]:PORT */
	CONFIG_ADDRS,    /* struct config_addrs: HOST:PORT ..., separated by spaces */
	CONFIG_TYPE_COUNT
};

/* Values of enum keys. Log levels are syslog priorities (LOG_ERR ... LOG_DEBUG). */
enum config_preset { CONFIG_PRESET_AUTO, CONFIG_PRESET_115200_8N1, CONFIG_PRESET_9600_7E1 };
enum config_data_request {
	CONFIG_DATA_REQUEST_NONE,
	CONFIG_DATA_REQUEST_DTR,
	CONFIG_DATA_REQUEST_RTS
};
enum config_pace { CONFIG_PACE_METER, CONFIG_PACE_FAST };
/* dialect holds an enum p1_dialect; "auto" is P1_DIALECT_UNKNOWN (detect). */

enum config_source {
	CONFIG_SOURCE_NONE,
	CONFIG_SOURCE_SERIAL,
	CONFIG_SOURCE_TCP,
	CONFIG_SOURCE_FILE
};

struct config_hexkey {
	bool set;
	uint8_t bytes[CONFIG_KEY_LEN];
};

struct config_hostport {
	char *host; /* NULL when unset; IPv6 without brackets */
	int port;   /* 1..65535 */
};

struct config_addrs {
	struct config_hostport *v;
	size_t n; /* 0: none (disabled) */
};

struct config_global {
	int log_level; /* LOG_ERR..LOG_DEBUG */
	char *state_directory;
	char *timezone; /* "": Central European Time */
	bool watchdog;
};

struct config_meter {
	char name[CONFIG_METER_NAME_MAX + 1];
	unsigned line; /* of its [meter NAME] header, 0 when made by an option */
	/* exactly one source, see config_meter_source() */
	char *serial;
	struct config_hostport tcp;
	char *file;               /* "-": standard input */
	int preset;               /* enum config_preset */
	int data_request;         /* enum config_data_request */
	int pace;                 /* enum config_pace */
	struct config_hexkey key; /* from key, or read from key_file at load */
	char *key_file;
	struct config_hexkey authentication_key;
	int dialect; /* enum p1_dialect */
	int max_telegram_bytes;
	int64_t stale_after_ms;
	int64_t reconnect_max_ms;
	int clock; /* enum clock_policy */
};

struct config_store {
	char *database; /* "": <state_directory>/p1d.db, see config_database_path() */
	int64_t commit_interval_ms;
	int raw_days;
	bool enabled;
};

struct config_mqtt {
	char *host; /* "": MQTT disabled */
	int port;
	char *client_id;
	char *username;
	char *password; /* from password, or read from password_file at load */
	char *password_file;
	char *base_topic;
	int qos;
	bool retain;
	int64_t keepalive_ms;
	bool tls;
	char *ca_file;
	char *cert_file;
	char *key_file;
	bool tls_insecure;
	bool discovery;
	char *discovery_prefix;
	bool dsmr_reader;
	int64_t interval_ms; /* 0: every telegram */
	int queue;           /* readings kept in memory for the broker; 0: automatic */
};

struct config_http {
	struct config_addrs listen; /* n == 0: HTTP disabled */
	int max_connections;
	int64_t timeout_ms;
	char *read_token;  /* "": reading needs no token */
	char *admin_token; /* "": write endpoints disabled */
	bool homewizard;
	bool announce; /* mDNS announcement of the HomeWizard API, see mdns.h */
	struct config_hostport relay; /* host NULL: no relay */
	char *tls_cert; /* "": plain HTTP */
	char *tls_key;
	bool dashboard;
	char *www_dir; /* "": the files installed with p1d */
	char *chartjs; /* "": the Chart.js file chosen at build time */
};

struct config {
	char *path; /* file loaded last, NULL when none */
	struct config_global g;
	struct config_meter *meters;
	size_t n_meters;
	struct config_store store;
	struct config_mqtt mqtt;
	struct config_http http;
};

/* Where an error is: file "" and line 0 when there is no file (validation of options only);
 * line 0 when the error concerns the whole file. msg never contains a secret. */
struct config_error {
	char file[256];
	unsigned line;
	char msg[256];
};

/* One row of the key table. */
struct config_enum_value {
	const char *name;
	int value;
};

#define CONFIG_RESTART (1u << 0) /* a change takes effect only after a restart */
#define CONFIG_SECRET (1u << 1)  /* never printed */

struct config_item {
	enum config_section section;
	const char *name;
	enum config_type type;
	const char *def;  /* default as written in the file, canonical form; "" = unset */
	int64_t min, max; /* INT: value; DURATION: ms; STRING/PATH: length (max 0 = 1023) */
	const struct config_enum_value *values; /* ENUM: ends with a NULL name */
	unsigned flags;                         /* CONFIG_RESTART, CONFIG_SECRET */
	const char *conflicts; /* keys of the same section that may not be set together with it */
	const char *help;      /* one line */
	/* private */
	size_t offset; /* in struct config, or in struct config_meter for meter keys */
	const char *(*check)(const char *value); /* extra rule: NULL or what was expected */
	int (*apply)(void *base, const char *value, char *msg, size_t len); /* reads a file */
};

/* All rows, in file order. */
const struct config_item *config_items(size_t *ret_n);
/* "p1d", "meter", "store", "mqtt", "http". */
const char *config_section_name(enum config_section s);
/* "string", "path", "bool", "int", "duration", "enum", "hexkey", "host:port", "addresses". */
const char *config_type_name(enum config_type t);
/* The allowed values in words: "1024..1048576", "2s..1h", "error|warning|...", "" if any. */
size_t config_item_bounds(const struct config_item *it, char *buf, size_t len);

/* Every key at its default, no meters. NULL on out of memory. */
struct config *config_new_defaults(void);
struct config *config_free(struct config *c);

/* Read an INI file into c: keys found override what c holds. Returns 0, -EINVAL for a
 * mistake in the file, -errno when it cannot be read, -ENOMEM. On error c is half-filled
 * (still safe to free) and *err says where and why. */
int config_load_file(struct config *c, const char *path, struct config_error *err);
/* The same for text in memory; name is used in error messages in place of a file name. */
int config_load_string(struct config *c, const char *name, const char *text,
                       struct config_error *err);

/* One key from the command line, through the same table; it wins over the file: keys it
 * conflicts with (serial vs tcp, key vs key_file, ...) are reset. section is "p1d", "store",
 * "mqtt", "http" or "meter" with name (the meter is created when missing; name NULL
 * otherwise). Errors say "command line". */
int config_set_option(struct config *c, const char *section, const char *name, const char *key,
                      const char *value, struct config_error *err);

/* Rules across keys: at least one meter, exactly one source each, keys that only make sense
 * for some sources, TLS files only with tls, ... Returns 0 or -EINVAL. */
int config_validate(const struct config *c, struct config_error *err);

/* True when going from old to new needs a restart; what gets "[meter main] serial",
 * "[meter kitchen] added", "[mqtt] host", ... for the first such difference. */
bool config_needs_restart(const struct config *old, const struct config *new, char *what,
                          size_t len);

/* The effective configuration as INI; secrets as ********. Returns 0 or -errno. */
int config_dump(const struct config *c, FILE *f);

/* "file:line: msg", "file: msg" or "msg". Returns buf. */
char *config_error_format(const struct config_error *e, char *buf, size_t len);

enum config_source config_meter_source(const struct config_meter *m);
const struct config_meter *config_find_meter(const struct config *c, const char *name);
/* The database file: store.database, or <state_directory>/p1d.db. Returns buf. */
const char *config_database_path(const struct config *c, char *buf, size_t len);

#endif
