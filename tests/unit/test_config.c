/* test_config.c - the configuration table and parser: defaults, every value type with the exact
 * error and line, sections and keys, options over the file, secret files and their
 * permissions, validation, restart detection, masking of secrets, and that man/p1d.conf.5 and
 * etc/p1d.conf document exactly the keys of the table (P1_SOURCE_DIR names the source tree).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "p1/telegram.h"

static const uint8_t smarty_ak[CONFIG_KEY_LEN] = {0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
                                                  0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff};
#define KEY_HEX "0102030405060708090A0B0C0D0E0F10"
#define TOKEN "s3cr3t-t0ken-abcdefgh"

/* Load text as "p1d.conf" into fresh defaults; *ret_r gets the result. */
static struct config *load(const char *text, int *ret_r, struct config_error *err)
{
	struct config *c = config_new_defaults();

	assert_non_null(c);
	*ret_r = config_load_string(c, "p1d.conf", text, err);
	return c;
}

static struct config *load_ok(const char *text)
{
	struct config_error err = {0};
	char buf[600];
	int r;
	struct config *c = load(text, &r, &err);

	if (r != 0)
		fail_msg("unexpected error: %s", config_error_format(&err, buf, sizeof(buf)));
	return c;
}

/* The text must be refused with exactly this one-line message. */
static void expect_error(const char *text, const char *expected)
{
	struct config_error err = {0};
	char buf[600];
	int r;
	struct config *c = load(text, &r, &err);

	assert_int_equal(r, -EINVAL);
	assert_string_equal(config_error_format(&err, buf, sizeof(buf)), expected);
	config_free(c);
}

static void expect_invalid(const struct config *c, const char *expected)
{
	struct config_error err = {0};
	char buf[600];

	assert_int_equal(config_validate(c, &err), -EINVAL);
	assert_string_equal(config_error_format(&err, buf, sizeof(buf)), expected);
}

static char *write_temp(const char *content, mode_t mode)
{
	const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	char *path;
	int fd;

	assert_true(asprintf(&path, "%s/test_config-XXXXXX", dir) > 0);
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
	assert_int_equal(fchmod(fd, mode), 0);
	close(fd);
	return path;
}

static char *dump(const struct config *c)
{
	FILE *f = tmpfile();
	char *out;
	long len;

	assert_non_null(f);
	assert_int_equal(config_dump(c, f), 0);
	len = ftell(f);
	assert_true(len > 0);
	out = calloc(1, (size_t)len + 1);
	assert_non_null(out);
	rewind(f);
	assert_int_equal(fread(out, 1, (size_t)len, f), (size_t)len);
	fclose(f);
	return out;
}

static void test_defaults(void **state)
{
	struct config *c = config_new_defaults();
	const struct config_meter *m;

	(void)state;
	assert_non_null(c);
	assert_int_equal(c->g.log_level, LOG_INFO);
	assert_string_equal(c->g.state_directory, "/var/lib/p1d");
	assert_string_equal(c->g.timezone, "");
	assert_true(c->g.watchdog);
	assert_int_equal(c->n_meters, 0);
	assert_string_equal(c->store.database, "");
	assert_int_equal(c->store.commit_interval_ms, 60000);
	assert_int_equal(c->store.raw_days, 7);
	assert_true(c->store.enabled);
	assert_string_equal(c->mqtt.host, "");
	assert_int_equal(c->mqtt.port, 1883);
	assert_string_equal(c->mqtt.base_topic, "p1d");
	assert_int_equal(c->mqtt.qos, 1);
	assert_true(c->mqtt.retain);
	assert_int_equal(c->mqtt.keepalive_ms, 60000);
	assert_false(c->mqtt.tls);
	assert_true(c->mqtt.discovery);
	assert_string_equal(c->mqtt.discovery_prefix, "homeassistant");
	assert_int_equal(c->mqtt.interval_ms, 0);
	assert_int_equal(c->http.listen.n, 1);
	assert_string_equal(c->http.listen.v[0].host, "127.0.0.1");
	assert_int_equal(c->http.listen.v[0].port, 8080);
	assert_int_equal(c->http.max_connections, 64);
	assert_int_equal(c->http.timeout_ms, 10000);
	assert_string_equal(c->http.read_token, "");
	assert_false(c->http.homewizard);
	char db[256];
	assert_string_equal(config_database_path(c, db, sizeof(db)), "/var/lib/p1d/p1d.db");
	config_free(c);

	c = load_ok("[meter main]\nserial = /dev/ttyUSB0\n");
	assert_int_equal(c->n_meters, 1);
	m = config_find_meter(c, "main");
	assert_non_null(m);
	assert_int_equal(m->line, 1);
	assert_int_equal(config_meter_source(m), CONFIG_SOURCE_SERIAL);
	assert_int_equal(m->preset, CONFIG_PRESET_AUTO);
	assert_int_equal(m->data_request, CONFIG_DATA_REQUEST_NONE);
	assert_int_equal(m->pace, CONFIG_PACE_METER);
	assert_false(m->key.set);
	assert_true(m->authentication_key.set);
	assert_memory_equal(m->authentication_key.bytes, smarty_ak, CONFIG_KEY_LEN);
	assert_int_equal(m->dialect, P1_DIALECT_UNKNOWN);
	assert_int_equal(m->max_telegram_bytes, 16384);
	assert_int_equal(m->stale_after_ms, 30000);
	assert_int_equal(m->reconnect_max_ms, 30000);
	assert_null(m->tcp.host);
	assert_int_equal(config_validate(c, NULL), 0);
	assert_null(config_free(c));
	assert_null(config_free(NULL));
}

/* Every row: a default its own parser accepts, help, unique name in its section. */
static void test_table(void **state)
{
	size_t n;
	const struct config_item *items = config_items(&n);
	struct config *c = config_new_defaults();
	struct config_error err = {0};
	char buf[600];

	(void)state;
	assert_true(n >= 40);
	for (size_t i = 0; i < n; i++) {
		const struct config_item *it = &items[i];
		bool meter = it->section == CONFIG_SECTION_METER;
		int r = config_set_option(c, config_section_name(it->section), meter ? "x" : NULL,
		                          it->name, it->def, &err);
		if (r != 0)
			fail_msg("default of %s: %s", it->name,
			         config_error_format(&err, buf, sizeof(buf)));
		assert_true(it->help && strlen(it->help) > 10);
		for (size_t j = 0; j < i; j++)
			if (items[j].section == it->section && !strcmp(items[j].name, it->name))
				fail_msg("%s twice in [%s]", it->name,
				         config_section_name(it->section));
		if (it->type == CONFIG_ENUM)
			assert_non_null(it->values);
		if (it->type == CONFIG_INT || it->type == CONFIG_DURATION)
			assert_true(it->min <= it->max);
	}
	config_item_bounds(&items[0], buf, sizeof(buf));
	assert_string_equal(buf, "error|warning|notice|info|debug");
	assert_string_equal(config_type_name(CONFIG_DURATION), "duration");
	config_free(c);
}

static void test_bool_int(void **state)
{
	struct config *c;

	(void)state;
	c = load_ok("[p1d]\nwatchdog = no\n[mqtt]\nretain = OFF\ntls = 1\nqos = 2\nport = 8883\n");
	assert_false(c->g.watchdog);
	assert_false(c->mqtt.retain);
	assert_true(c->mqtt.tls);
	assert_int_equal(c->mqtt.qos, 2);
	assert_int_equal(c->mqtt.port, 8883);
	config_free(c);

	expect_error("[p1d]\n\n# comment\nwatchdog = maybe\n",
	             "p1d.conf:4: bad value \"maybe\" for watchdog: expected true or false");
	expect_error("[mqtt]\nqos = 3\n",
	             "p1d.conf:2: bad value \"3\" for qos: expected an integer from 0 to 2");
	expect_error("[meter a]\nserial = /dev/ttyS0\nmax_telegram = 1023\n",
	             "p1d.conf:3: bad value \"1023\" for max_telegram: expected an integer from "
	             "1024 to 1048576");
	expect_error("[mqtt]\nport = 18x\n",
	             "p1d.conf:2: bad value \"18x\" for port: expected an integer from 1 to 65535");
	expect_error("[mqtt]\nport = 99999999999999999999999\n",
	             "p1d.conf:2: bad value \"99999999999999999999999\" for port: expected an "
	             "integer from 1 to 65535");
	expect_error("[store]\nraw_days =\n",
	             "p1d.conf:2: bad value \"\" for raw_days: expected an integer from 0 to 3650");

	/* queue: 0 is automatic (the default), else at least 10 */
	c = load_ok("[mqtt]\nhost = x\n");
	assert_int_equal(c->mqtt.queue, 0);
	config_free(c);
	c = load_ok("[mqtt]\nqueue = 10\n");
	assert_int_equal(c->mqtt.queue, 10);
	config_free(c);
	expect_error("[mqtt]\nqueue = 9\n",
	             "p1d.conf:2: bad value \"9\" for queue: expected 0 (automatic) or from 10 to "
	             "100000");
	expect_error("[mqtt]\nqueue = 100001\n",
	             "p1d.conf:2: bad value \"100001\" for queue: expected an integer from 0 to "
	             "100000");
}

static void test_duration(void **state)
{
	struct config *c;

	(void)state;
	c = load_ok("[meter a]\nfile = -\nstale_after = 2min\nreconnect_max = 1min 30s\n"
	            "[store]\ncommit_interval = 45\n[mqtt]\ninterval = 500ms\nkeepalive = 1h30min\n"
	            "[http]\ntimeout = 10 s\n");
	assert_int_equal(c->meters[0].stale_after_ms, 120000);
	assert_int_equal(c->meters[0].reconnect_max_ms, 90000);
	assert_int_equal(c->store.commit_interval_ms, 45000);
	assert_int_equal(c->mqtt.interval_ms, 500);
	assert_int_equal(c->mqtt.keepalive_ms, 5400000);
	assert_int_equal(c->http.timeout_ms, 10000);
	config_free(c);

	expect_error("[meter a]\nserial = /dev/ttyUSB0\nstale_after = abc\n",
	             "p1d.conf:3: bad value \"abc\" for stale_after: expected a duration like 30s");
	expect_error(
	        "[meter a]\nstale_after = 1s\n",
	        "p1d.conf:2: bad value \"1s\" for stale_after: expected a duration from 2s to 1h");
	expect_error("[meter a]\nstale_after = 5m\n",
	             "p1d.conf:2: bad value \"5m\" for stale_after: expected a duration like 30s");
	expect_error(
	        "[meter a]\nstale_after = 1h 30\n",
	        "p1d.conf:2: bad value \"1h 30\" for stale_after: expected a duration like 30s");
	expect_error("[meter a]\nstale_after = -5s\n",
	             "p1d.conf:2: bad value \"-5s\" for stale_after: expected a duration like 30s");
	expect_error(
	        "[store]\ncommit_interval = 99999999999999999999d\n",
	        "p1d.conf:2: bad value \"99999999999999999999d\" for commit_interval: expected "
	        "a duration from 1s to 10min");
}

static void test_enum_string_path(void **state)
{
	struct config *c;

	(void)state;
	c = load_ok("[p1d]\nlog_level = debug\ntimezone = Europe/Amsterdam\n"
	            "state_directory = /srv/p1d\n[meter a]\nserial = /dev/ttyAMA0\n"
	            "preset = 9600-7E1\ndata_request = rts\ndialect = fluvius\n"
	            "[mqtt]\nbase_topic = home/energy\nclient_id = meter-1\n");
	assert_int_equal(c->g.log_level, LOG_DEBUG);
	assert_string_equal(c->g.timezone, "Europe/Amsterdam");
	assert_string_equal(c->meters[0].serial, "/dev/ttyAMA0");
	assert_int_equal(c->meters[0].preset, CONFIG_PRESET_9600_7E1);
	assert_int_equal(c->meters[0].data_request, CONFIG_DATA_REQUEST_RTS);
	assert_int_equal(c->meters[0].dialect, P1_DIALECT_FLUVIUS);
	assert_string_equal(c->mqtt.base_topic, "home/energy");
	char db[256];
	assert_string_equal(config_database_path(c, db, sizeof(db)), "/srv/p1d/p1d.db");
	config_free(c);

	expect_error("[p1d]\nlog_level = verbose\n",
	             "p1d.conf:2: bad value \"verbose\" for log_level: expected one of error, "
	             "warning, notice, info, debug");
	expect_error("[meter a]\npreset = 115200\n",
	             "p1d.conf:2: bad value \"115200\" for preset: expected one of auto, "
	             "115200-8N1, 9600-7E1");
	expect_error("[p1d]\nstate_directory =\n",
	             "p1d.conf:2: bad value \"\" for state_directory: expected a path");
	expect_error(
	        "[p1d]\ntimezone = Europe/ Amsterdam\n",
	        "p1d.conf:2: bad value \"Europe/ Amsterdam\" for timezone: expected no spaces");
	expect_error("[meter a]\nserial = ttyUSB0\n",
	             "p1d.conf:2: bad value \"ttyUSB0\" for serial: expected a device path like "
	             "/dev/ttyUSB0");
	expect_error(
	        "[mqtt]\nhost = broker:1883\n",
	        "p1d.conf:2: bad value \"broker:1883\" for host: expected a host without :PORT; "
	        "the port has a key of its own");
	c = load_ok("[mqtt]\nhost = fd00::1\n");
	assert_string_equal(c->mqtt.host, "fd00::1");
	config_free(c);
	expect_error("[mqtt]\nbase_topic = p1d/#\n",
	             "p1d.conf:2: bad value \"p1d/#\" for base_topic: expected a topic like p1d, "
	             "without +, #, spaces or a leading or trailing /");
	expect_error("[mqtt]\nclient_id = "
	             "a123456789b123456789c123456789d123456789e123456789f123456789g1234\n",
	             "p1d.conf:2: bad value "
	             "\"a123456789b123456789c123456789d123456789e123456789f123456789g1234\" for "
	             "client_id: expected at most 64 characters");
}

static void test_hexkey_hostport(void **state)
{
	struct config *c;
	struct config_error err = {0};
	char buf[600];
	int r;

	(void)state;
	c = load_ok("[meter a]\ntcp = 192.168.1.20:8088\nkey = " KEY_HEX "\n"
	            "authentication_key = ffeeddccbbaa99887766554433221100\n"
	            "[meter b]\ntcp = [fe80::1]:23\n"
	            "[http]\nlisten = 0.0.0.0:80  [::1]:8080 localhost:9000\n");
	assert_string_equal(c->meters[0].tcp.host, "192.168.1.20");
	assert_int_equal(c->meters[0].tcp.port, 8088);
	assert_true(c->meters[0].key.set);
	assert_int_equal(c->meters[0].key.bytes[0], 0x01);
	assert_int_equal(c->meters[0].key.bytes[15], 0x10);
	assert_int_equal(c->meters[0].authentication_key.bytes[0], 0xff);
	assert_string_equal(c->meters[1].tcp.host, "fe80::1");
	assert_int_equal(c->meters[1].tcp.port, 23);
	assert_int_equal(c->http.listen.n, 3);
	assert_string_equal(c->http.listen.v[1].host, "::1");
	assert_int_equal(c->http.listen.v[2].port, 9000);
	config_free(c);

	c = load_ok("[http]\nlisten =\n");
	assert_int_equal(c->http.listen.n, 0);
	config_free(c);

	/* secrets are never echoed */
	c = load("[meter a]\nkey = 0011223344556677889900112233445566\n", &r, &err);
	assert_int_equal(r, -EINVAL);
	assert_string_equal(config_error_format(&err, buf, sizeof(buf)),
	                    "p1d.conf:2: bad value for key: expected 32 hexadecimal digits");
	config_free(c);
	expect_error("[meter a]\nkey = 0011223344556677889900112233445G\n",
	             "p1d.conf:2: bad value for key: expected 32 hexadecimal digits");
	expect_error("[http]\nread_token = short\n",
	             "p1d.conf:2: bad value for read_token: expected at least 16 characters and no "
	             "spaces");

	static const char *const bad_hostports[] = {"host",   "host:0", "host:65536",
	                                            "::1:23", ":23",    "[::1]23",
	                                            "[::1]:", "a b:23", "host:-1"};
	for (size_t i = 0; i < sizeof(bad_hostports) / sizeof(bad_hostports[0]); i++) {
		char text[128], expected[256];
		snprintf(text, sizeof(text), "[meter a]\ntcp = %s\n", bad_hostports[i]);
		snprintf(expected, sizeof(expected),
		         "p1d.conf:2: bad value \"%s\" for tcp: expected HOST:PORT like "
		         "192.168.1.20:8088",
		         bad_hostports[i]);
		expect_error(text, expected);
	}
	expect_error("[http]\nlisten = 127.0.0.1\n",
	             "p1d.conf:2: bad value \"127.0.0.1\" for listen: expected up to 8 "
	             "ADDRESS:PORT separated by spaces");
	expect_error("[http]\nlisten = a:1 a:2 a:3 a:4 a:5 a:6 a:7 a:8 a:9\n",
	             "p1d.conf:2: bad value \"a:1 a:2 a:3 a:4 a:5 a:6 a:7 a:8 a:9\" for listen: "
	             "expected up to 8 ADDRESS:PORT separated by spaces");
}

static void test_syntax(void **state)
{
	struct config *c;
	char text[512];

	(void)state;
	/* indentation is not a continuation line; inline comments; a BOM */
	c = load_ok("\xEF\xBB\xBF[meter main] ; the only one\n  serial = /dev/ttyUSB0 ; cable\n"
	            "\tstale_after = 10s\n  [ mqtt ]\n  host = broker\n");
	assert_string_equal(c->meters[0].serial, "/dev/ttyUSB0");
	assert_int_equal(c->meters[0].stale_after_ms, 10000);
	assert_string_equal(c->mqtt.host, "broker");
	config_free(c);

	expect_error("[p1d]\nthis is not a key\nlog_level = loud\n",
	             "p1d.conf:2: expected \"key = value\", \"[section]\" or a # comment");
	expect_error(
	        "[p1d]\nlog_level = loud\nthis is not a key\n",
	        "p1d.conf:2: bad value \"loud\" for log_level: expected one of error, warning, "
	        "notice, info, debug");
	expect_error("[p1d\nlog_level = info\n", "p1d.conf:1: missing ] in section header");
	expect_error("[p1d] x\n", "p1d.conf:1: unexpected text after [p1d]");
	snprintf(text, sizeof(text), "[p1d]\ntimezone = %0250d\nwatchdog = maybe\n", 0);
	expect_error(text, "p1d.conf:2: line longer than 197 characters");
	/* the line after a long comment is still counted right */
	snprintf(text, sizeof(text), "[p1d]\n#%0150d\nwatchdog = maybe\n", 0);
	expect_error(text, "p1d.conf:3: bad value \"maybe\" for watchdog: expected true or false");
}

static void test_unknown(void **state)
{
	(void)state;
	expect_error("[meter main]\nserial = /dev/ttyUSB0\nseriall = /dev/ttyUSB1\n",
	             "p1d.conf:3: unknown key \"seriall\" in [meter main] (did you mean "
	             "\"serial\"?)");
	expect_error("[http]\nbase_topic = x\n",
	             "p1d.conf:2: unknown key \"base_topic\" in [http] (it belongs in [mqtt])");
	expect_error("[p1d]\nfrobnicate = 1\n", "p1d.conf:2: unknown key \"frobnicate\" in [p1d]");
	expect_error("log_level = info\n",
	             "p1d.conf:1: key \"log_level\" outside of any section (it belongs in [p1d])");
	expect_error("[p1d]\n[mqqt]\nhost = x\n", "p1d.conf:2: unknown section [mqqt]");
	expect_error("[meter Main]\n",
	             "p1d.conf:1: bad meter name \"Main\": expected 1 to 32 of a-z, 0-9, _ and -");
	expect_error("[meter]\n", "p1d.conf:1: section [meter] needs a name: [meter NAME]");
	expect_error("[meter abcdefghijabcdefghijabcdefghijabc]\n",
	             "p1d.conf:1: bad meter name \"abcdefghijabcdefghijabcdefghijabc\": expected 1 "
	             "to 32 of a-z, 0-9, _ and -");
}

static void test_duplicates(void **state)
{
	char text[1024];
	size_t n = 0;

	(void)state;
	expect_error("[meter a]\nserial = /dev/ttyUSB0\n\n[meter b]\nfile = -\n[meter a]\n",
	             "p1d.conf:6: duplicate section [meter a] (first on line 1)");
	expect_error("[meter a]\nserial = /dev/ttyUSB0\nserial = /dev/ttyUSB1\n",
	             "p1d.conf:3: duplicate key \"serial\" in [meter a] (first on line 2)");
	expect_error("[mqtt]\nhost = a\n[p1d]\n[mqtt]\n",
	             "p1d.conf:4: duplicate section [mqtt] (first on line 1)");
	/* the same key in two meters is no duplicate */
	config_free(load_ok("[meter a]\nfile = -\n[meter b]\nfile = -\n"));
	for (int i = 0; i <= CONFIG_METERS_MAX; i++)
		n += (size_t)snprintf(text + n, sizeof(text) - n, "[meter m%d]\nfile = -\n", i);
	expect_error(text, "p1d.conf:33: too many meters (at most 16)");
}

static void test_options(void **state)
{
	struct config *c;
	struct config_error err = {0};
	char buf[600];

	(void)state;
	c = load_ok("[p1d]\nlog_level = info\n[meter main]\nserial = /dev/ttyUSB0\n"
	            "stale_after = 10s\n");
	assert_int_equal(config_set_option(c, "p1d", NULL, "log_level", "debug", &err), 0);
	assert_int_equal(c->g.log_level, LOG_DEBUG);
	assert_int_equal(config_set_option(c, "meter", "main", "stale_after", "5s", &err), 0);
	assert_int_equal(c->meters[0].stale_after_ms, 5000);
	/* a source option replaces the file's source */
	assert_int_equal(config_set_option(c, "meter", "main", "tcp", "10.0.0.2:23", &err), 0);
	assert_string_equal(c->meters[0].serial, "");
	assert_string_equal(c->meters[0].tcp.host, "10.0.0.2");
	assert_int_equal(config_meter_source(&c->meters[0]), CONFIG_SOURCE_TCP);
	/* an option may create a meter */
	assert_int_equal(config_set_option(c, "meter", "second", "file", "-", &err), 0);
	assert_int_equal(c->n_meters, 2);
	assert_int_equal(c->meters[1].line, 0);
	assert_int_equal(config_validate(c, &err), 0);

	assert_int_equal(config_set_option(c, "meter", "main", "stale_after", "abc", &err),
	                 -EINVAL);
	assert_string_equal(config_error_format(&err, buf, sizeof(buf)),
	                    "command line: bad value \"abc\" for stale_after: expected a duration "
	                    "like 30s");
	assert_int_equal(config_set_option(c, "mqtt", NULL, "hots", "x", &err), -EINVAL);
	assert_string_equal(
	        config_error_format(&err, buf, sizeof(buf)),
	        "command line: unknown key \"hots\" in [mqtt] (did you mean \"host\"?)");
	assert_int_equal(config_set_option(c, "meter", NULL, "file", "-", &err), -EINVAL);
	assert_int_equal(config_set_option(c, "mqtt", "x", "host", "a", &err), -EINVAL);
	assert_int_equal(config_set_option(c, "nope", NULL, "host", "a", &err), -EINVAL);
	assert_string_equal(config_error_format(&err, buf, sizeof(buf)),
	                    "command line: unknown section [nope]");
	assert_int_equal(config_set_option(c, "meter", "Bad", "file", "-", &err), -EINVAL);
	config_free(c);
}

static void test_key_file(void **state)
{
	char *open_path = write_temp(KEY_HEX "\n", 0644);
	char *good_path = write_temp("  " KEY_HEX "\r\n", 0600);
	char *junk_path = write_temp("not a key\n", 0600);
	char text[512], expected[768];
	struct config *c;
	struct config_error err = {0};
	char *out;

	(void)state;
	snprintf(text, sizeof(text), "[meter a]\nserial = /dev/ttyUSB0\nkey_file = %s\n",
	         open_path);
	snprintf(expected, sizeof(expected),
	         "p1d.conf:3: key_file %s is accessible by group or others (mode 0644); chmod "
	         "600 it",
	         open_path);
	expect_error(text, expected);
	assert_int_equal(chmod(open_path, 0604), 0);
	snprintf(expected, sizeof(expected),
	         "p1d.conf:3: key_file %s is accessible by group or others (mode 0604); chmod "
	         "600 it",
	         open_path);
	expect_error(text, expected);

	snprintf(text, sizeof(text), "[meter a]\nserial = /dev/ttyUSB0\nkey_file = %s\n",
	         good_path);
	c = load_ok(text);
	assert_true(c->meters[0].key.set);
	assert_int_equal(c->meters[0].key.bytes[0], 0x01);
	assert_int_equal(c->meters[0].key.bytes[15], 0x10);
	out = dump(c);
	assert_non_null(strstr(out, "# key is read from key_file\n"));
	assert_null(strstr(out, "0102030405"));
	free(out);
	/* an option key replaces the file's key_file, and the other way round */
	assert_int_equal(
	        config_set_option(c, "meter", "a", "key", "ffffffffffffffffffffffffffffffff", &err),
	        0);
	assert_string_equal(c->meters[0].key_file, "");
	assert_int_equal(c->meters[0].key.bytes[0], 0xff);
	assert_int_equal(config_set_option(c, "meter", "a", "key_file", good_path, &err), 0);
	assert_int_equal(c->meters[0].key.bytes[0], 0x01);
	config_free(c);

	/* an empty key_file (an uncommented example line) leaves key alone */
	c = load_ok("[meter a]\nserial = /dev/ttyUSB0\nkey = " KEY_HEX "\nkey_file =\n");
	assert_true(c->meters[0].key.set);
	assert_int_equal(c->meters[0].key.bytes[0], 0x01);
	config_free(c);

	snprintf(text, sizeof(text), "[meter a]\nkey = " KEY_HEX "\nkey_file = %s\n", good_path);
	expect_error(text, "p1d.conf:3: key and key_file are both set in [meter a]; use only one");
	snprintf(text, sizeof(text), "[meter a]\nkey_file = %s\n\nkey = " KEY_HEX "\n", good_path);
	expect_error(text, "p1d.conf:4: key_file and key are both set in [meter a]; use only one");
	snprintf(text, sizeof(text), "[meter a]\nkey_file = %s\n", junk_path);
	snprintf(expected, sizeof(expected),
	         "p1d.conf:2: key_file %s: expected 32 hexadecimal digits", junk_path);
	expect_error(text, expected);
	unlink(junk_path);
	snprintf(expected, sizeof(expected), "p1d.conf:2: key_file %s: No such file or directory",
	         junk_path);
	expect_error(text, expected);

	unlink(open_path);
	unlink(good_path);
	free(open_path);
	free(good_path);
	free(junk_path);
}

static void test_password_file(void **state)
{
	char *path = write_temp("hunter2-password\nsecond line\n", 0600);
	char text[512];
	struct config *c;
	char *out;

	(void)state;
	snprintf(text, sizeof(text), "[mqtt]\nusername = p1d\npassword_file = %s\n", path);
	c = load_ok(text);
	assert_string_equal(c->mqtt.password, "hunter2-password");
	out = dump(c);
	assert_null(strstr(out, "hunter2"));
	assert_non_null(strstr(out, "# password is read from password_file\n"));
	free(out);
	config_free(c);
	c = load_ok("[mqtt]\nusername = u\npassword = kept-password\npassword_file =\n");
	assert_string_equal(c->mqtt.password, "kept-password");
	config_free(c);
	snprintf(text, sizeof(text), "[mqtt]\npassword = x\npassword_file = %s\n", path);
	expect_error(text,
	             "p1d.conf:3: password and password_file are both set in [mqtt]; use only one");
	unlink(path);
	free(path);
}

static void test_validate(void **state)
{
	struct config *c;

	(void)state;
	c = config_new_defaults();
	expect_invalid(c, "no meter: add a [meter NAME] section with serial, tcp or file");
	config_free(c);

	c = load_ok("[p1d]\n[meter a]\npreset = auto\n");
	expect_invalid(c, "p1d.conf:2: [meter a] has no source: set serial, tcp or file");
	config_free(c);

	expect_error("[meter a]\nserial = /dev/ttyUSB0\ntcp = bridge:23\n",
	             "p1d.conf:3: serial and tcp are both set in [meter a]; use only one");
	/* the same when someone fills the struct by hand */
	c = load_ok("[meter a]\nserial = /dev/ttyUSB0\n");
	free(c->meters[0].file);
	c->meters[0].file = strdup("-");
	expect_invalid(c, "p1d.conf:1: [meter a] has more than one source: set only one of serial, "
	                  "tcp and file");
	config_free(c);

	c = load_ok("[meter a]\nserial = /dev/ttyUSB0\npace = fast\n");
	expect_invalid(c, "p1d.conf:1: [meter a] sets pace, which only applies to file sources");
	config_free(c);
	c = load_ok("[meter a]\ntcp = h:1\npreset = 9600-7E1\n");
	expect_invalid(c,
	               "p1d.conf:1: [meter a] sets preset, which only applies to serial sources");
	config_free(c);
	c = load_ok("[meter a]\nfile = -\ndata_request = dtr\n");
	expect_invalid(
	        c, "p1d.conf:1: [meter a] sets data_request, which only applies to serial sources");
	config_free(c);
	c = load_ok("[meter a]\nserial = /dev/ttyUSB0\ndialect = smarty\n");
	expect_invalid(c, "p1d.conf:1: [meter a] has an encrypting dialect but no key or key_file");
	config_free(c);
	c = load_ok("[meter a]\nserial = /dev/ttyUSB0\ndialect = smarty\nkey = " KEY_HEX "\n");
	assert_int_equal(config_validate(c, NULL), 0);
	config_free(c);

	c = load_ok("[meter a]\nfile = -\n[mqtt]\nhost = h\npassword = x\n");
	expect_invalid(c, "p1d.conf: [mqtt] password needs a username");
	config_free(c);
	c = load_ok("[meter a]\nfile = -\n[mqtt]\nca_file = /etc/ssl/ca.pem\n");
	expect_invalid(c, "p1d.conf: [mqtt] ca_file, cert_file, key_file and tls_insecure need tls "
	                  "= true");
	config_free(c);
	c = load_ok("[meter a]\nfile = -\n[mqtt]\ntls = yes\ncert_file = /etc/p1d/c.pem\n");
	expect_invalid(c, "p1d.conf: [mqtt] cert_file and key_file go together");
	config_free(c);
}

static void test_needs_restart(void **state)
{
	const char *base = "[p1d]\nlog_level = info\n[meter main]\nserial = /dev/ttyUSB0\n"
	                   "stale_after = 30s\n[mqtt]\nhost = a\n";
	struct config *a = load_ok(base), *b;
	char what[128];

	(void)state;
	b = load_ok(base);
	assert_false(config_needs_restart(a, b, what, sizeof(what)));
	assert_string_equal(what, "");
	config_free(b);

	b = load_ok("[p1d]\nlog_level = debug\n[meter main]\nserial = /dev/ttyUSB0\n"
	            "stale_after = 30s\n[mqtt]\nhost = a\ninterval = 5s\n");
	assert_false(config_needs_restart(a, b, what, sizeof(what)));
	config_free(b);

	/* a running source keeps its watchdog setting until restarted */
	b = load_ok("[p1d]\n[meter main]\nserial = /dev/ttyUSB0\nstale_after = 1min\n"
	            "[mqtt]\nhost = a\n");
	assert_true(config_needs_restart(a, b, what, sizeof(what)));
	assert_string_equal(what, "[meter main] stale_after");
	config_free(b);

	b = load_ok("[p1d]\n[meter main]\nserial = /dev/ttyUSB0\n[mqtt]\nhost = b\n");
	assert_true(config_needs_restart(a, b, what, sizeof(what)));
	assert_string_equal(what, "[mqtt] host");
	config_free(b);

	b = load_ok("[meter main]\nserial = /dev/ttyUSB1\n[mqtt]\nhost = a\n");
	assert_true(config_needs_restart(a, b, what, sizeof(what)));
	assert_string_equal(what, "[meter main] serial");
	config_free(b);

	b = load_ok("[meter main]\nserial = /dev/ttyUSB0\nkey = " KEY_HEX "\n[mqtt]\nhost = a\n");
	assert_true(config_needs_restart(a, b, what, sizeof(what)));
	assert_string_equal(what, "[meter main] key");
	config_free(b);

	b = load_ok(
	        "[meter main]\nserial = /dev/ttyUSB0\n[meter two]\nfile = -\n[mqtt]\nhost = a\n");
	assert_true(config_needs_restart(a, b, what, sizeof(what)));
	assert_string_equal(what, "[meter two] added");
	assert_true(config_needs_restart(b, a, what, sizeof(what)));
	assert_string_equal(what, "[meter two] removed");
	config_free(b);
	config_free(a);
}

/* Remove every "key = ********" line. */
static void drop_masked_lines(char *text)
{
	static const char masked[] = " = ********\n";
	char *hit, *start;

	while ((hit = strstr(text, masked))) {
		for (start = hit; start > text && start[-1] != '\n'; start--)
			;
		memmove(start, hit + strlen(masked), strlen(hit + strlen(masked)) + 1);
	}
}

static void test_dump(void **state)
{
	struct config *c, *again;
	char *out, *out2;

	(void)state;
	c = load_ok("[p1d]\nlog_level = debug\n[meter main]\ntcp = [fe80::1]:23\nkey = " KEY_HEX
	            "\n[mqtt]\nhost = broker\nusername = u\npassword = pa55word-secret\n"
	            "[http]\nread_token = " TOKEN "\nadmin_token = " TOKEN "-admin\n");
	out = dump(c);
	assert_null(strstr(out, "pa55word"));
	assert_null(strstr(out, TOKEN));
	assert_null(strstr(out, "0102030405"));
	assert_null(strstr(out, "0A0B0C"));
	assert_null(strstr(out, "aabbcc"));
	assert_non_null(strstr(out, "[p1d]\nlog_level = debug\n"));
	assert_non_null(strstr(out, "\n[meter main]\nserial =\ntcp = [fe80::1]:23\n"));
	assert_non_null(strstr(out, "\nkey = ********\n"));
	assert_non_null(strstr(out, "\npassword = ********\n"));
	assert_non_null(strstr(out, "\nread_token = ********\n"));
	assert_non_null(strstr(out, "\ncommit_interval = 1min\n"));
	assert_non_null(strstr(out, "\nlisten = 127.0.0.1:8080\n"));
	assert_non_null(strstr(out, "\nstale_after = 30s\n"));

	config_free(c);
	free(out);

	/* without its masked lines, a dump reads back as the same configuration */
	c = load_ok("[p1d]\nlog_level = debug\n[meter main]\ntcp = [fe80::1]:23\n[http]\n"
	            "listen = 0.0.0.0:80 [::]:81\n");
	out = dump(c);
	drop_masked_lines(out);
	again = load_ok(out);
	out2 = dump(again);
	config_free(again);
	free(out);
	out = dump(c);
	assert_string_equal(out, out2);
	free(out);
	free(out2);
	config_free(c);
}

static void test_load_file(void **state)
{
	char *path = write_temp("[meter main]\nfile = -\n", 0644);
	char *bad = write_temp("[meter main]\nfile = -\nfiel = x\n", 0644);
	char missing[300], buf[600], expected[600];
	struct config *c = config_new_defaults();
	struct config_error err = {0};

	(void)state;
	assert_int_equal(config_load_file(c, path, &err), 0);
	assert_string_equal(c->path, path);
	assert_string_equal(c->meters[0].file, "-");
	config_free(c);

	c = config_new_defaults();
	assert_int_equal(config_load_file(c, bad, &err), -EINVAL);
	snprintf(expected, sizeof(expected),
	         "%s:3: unknown key \"fiel\" in [meter main] (did you mean \"file\"?)", bad);
	assert_string_equal(config_error_format(&err, buf, sizeof(buf)), expected);
	config_free(c);

	snprintf(missing, sizeof(missing), "%s.missing/p1d.conf", path);
	c = config_new_defaults();
	assert_int_equal(config_load_file(c, missing, &err), -ENOENT);
	snprintf(expected, sizeof(expected), "%s: No such file or directory", missing);
	assert_string_equal(config_error_format(&err, buf, sizeof(buf)), expected);
	assert_int_equal(config_load_file(c, "/", &err), -EISDIR);
	config_free(c);
	unlink(path);
	unlink(bad);
	free(path);
	free(bad);
}

/* The documentation checks. */
static const char *source_dir(void)
{
	const char *dir = getenv("P1_SOURCE_DIR");

	if (!dir || !*dir)
		fail_msg("P1_SOURCE_DIR is not set: it names the source tree "
		         "(tests/CMakeLists.txt)");
	return dir;
}

static FILE *open_source(const char *rel)
{
	char path[1024];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", source_dir(), rel);
	f = fopen(path, "re");
	if (!f)
		fail_msg("%s: %s", path, strerror(errno));
	return f;
}

struct doc_key {
	int section;
	char name[64];
	char value[256]; /* man: text after "Default: "; conf: the value shown */
	bool flag;       /* man: "Applied on reload."; conf: commented out */
};

static int section_of(const char *s)
{
	for (int i = 0; i < CONFIG_SECTION_COUNT; i++) {
		const char *name = config_section_name(i);
		size_t n = strlen(name);
		if (s[0] == '[' && !strncmp(s + 1, name, n) && (s[n + 1] == ']' || s[n + 1] == ' '))
			return i;
	}
	return -1;
}

static void chomp(char *s)
{
	s[strcspn(s, "\r\n")] = '\0';
}

/* Keys of man/p1d.conf.5: ".It Cm NAME" at the outer list of a ".Ss ... [section]". */
static size_t read_man_keys(struct doc_key *keys, size_t cap)
{
	FILE *f = open_source("man/p1d.conf.5");
	char line[1024];
	int section = -1, depth = 0;
	struct doc_key *cur = NULL;
	size_t n = 0;

	while (fgets(line, sizeof(line), f)) {
		chomp(line);
		if (!strncmp(line, ".Sh", 3) || !strncmp(line, ".Ss", 3)) {
			const char *b = strchr(line, '[');
			section = !strncmp(line, ".Ss", 3) && b ? section_of(b) : -1;
			cur = NULL;
		} else if (!strncmp(line, ".Bl", 3)) {
			depth++;
		} else if (!strncmp(line, ".El", 3)) {
			if (--depth == 0)
				cur = NULL;
		} else if (section >= 0 && depth == 1 && !strncmp(line, ".It Cm ", 7)) {
			assert_true(n < cap);
			cur = &keys[n++];
			*cur = (struct doc_key){.section = section};
			sscanf(line + 7, "%63[a-z_0-9]", cur->name);
		} else if (cur && !strncmp(line, "Default: ", 9)) {
			snprintf(cur->value, sizeof(cur->value), "%.255s", line + 9);
		} else if (cur && strstr(line, "Applied on reload.")) {
			cur->flag = true;
		}
	}
	fclose(f);
	return n;
}

/* Keys of etc/p1d.conf: "key = value" or "#key = value" (prose comments have "# "). */
static size_t read_conf_keys(struct doc_key *keys, size_t cap)
{
	FILE *f = open_source("etc/p1d.conf");
	char line[1024];
	int section = -1;
	size_t n = 0;

	while (fgets(line, sizeof(line), f)) {
		char name[64];
		int end = 0;
		bool commented = line[0] == '#';

		chomp(line);
		if (line[0] == '[') {
			section = section_of(line);
			assert_true(section >= 0);
			continue;
		}
		if (sscanf(line + commented, "%63[a-z_0-9] =%n", name, &end) != 1 || !end)
			continue;
		assert_true(n < cap);
		keys[n] = (struct doc_key){.section = section, .flag = commented};
		snprintf(keys[n].name, sizeof(keys[n].name), "%s", name);
		snprintf(keys[n].value, sizeof(keys[n].value), "%s",
		         line + commented + end + (line[commented + end] == ' '));
		n++;
	}
	fclose(f);
	return n;
}

static const struct doc_key *doc_find(const struct doc_key *keys, size_t n, int section,
                                      const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (keys[i].section == section && !strcmp(keys[i].name, name))
			return &keys[i];
	return NULL;
}

/* Fail naming every key the table has and the document lacks, and the other way round. */
static void compare_keys(const char *doc, const struct doc_key *keys, size_t n)
{
	size_t ni;
	const struct config_item *items = config_items(&ni);
	char missing[2048] = "", extra[2048] = "";

	for (size_t i = 0; i < ni; i++)
		if (!doc_find(keys, n, items[i].section, items[i].name))
			snprintf(missing + strlen(missing), sizeof(missing) - strlen(missing),
			         " [%s] %s", config_section_name(items[i].section), items[i].name);
	for (size_t i = 0; i < n; i++) {
		bool found = false;
		for (size_t j = 0; j < ni && !found; j++)
			found = (int)items[j].section == keys[i].section &&
			        !strcmp(items[j].name, keys[i].name);
		if (!found || doc_find(keys, i, keys[i].section, keys[i].name) != NULL)
			snprintf(extra + strlen(extra), sizeof(extra) - strlen(extra), " [%s] %s",
			         keys[i].section >= 0 ? config_section_name(keys[i].section) : "?",
			         keys[i].name);
	}
	if (*missing || *extra)
		fail_msg("%s: missing:%s; extra or repeated:%s", doc, *missing ? missing : " none",
		         *extra ? extra : " none");
}

static void test_man_page_documents_every_key(void **state)
{
	struct doc_key keys[128];
	size_t n = read_man_keys(keys, 128), ni;
	const struct config_item *items = config_items(&ni);

	(void)state;
	compare_keys("man/p1d.conf.5", keys, n);
	for (size_t i = 0; i < ni; i++) {
		const struct config_item *it = &items[i];
		const struct doc_key *d = doc_find(keys, n, it->section, it->name);
		size_t len = strlen(it->def);
		const char *v = d->value;

		if (!*v)
			fail_msg("man page: [%s] %s has no \"Default:\" line",
			         config_section_name(it->section), it->name);
		if (len ? strncmp(v, it->def, len) || !strchr(" .,;", v[len] ? v[len] : ' ')
		        : strncmp(v, "none", 4))
			fail_msg("man page: [%s] %s says \"Default: %s\", the table \"%s\"",
			         config_section_name(it->section), it->name, v,
			         len ? it->def : "none");
		if (d->flag != !(it->flags & CONFIG_RESTART))
			fail_msg("man page: [%s] %s %s \"Applied on reload.\"",
			         config_section_name(it->section), it->name,
			         d->flag ? "wrongly says" : "should say");
	}
}

static void test_example_config_lists_every_key(void **state)
{
	struct doc_key keys[128];
	size_t n = read_conf_keys(keys, 128), ni;
	const struct config_item *items = config_items(&ni);
	char path[1024];
	struct config *c, *expected;
	struct config_error err = {0};
	char *a, *b;

	(void)state;
	compare_keys("etc/p1d.conf", keys, n);
	for (size_t i = 0; i < ni; i++) {
		const struct config_item *it = &items[i];
		const struct doc_key *d = doc_find(keys, n, it->section, it->name);
		bool is_serial = it->section == CONFIG_SECTION_METER && !strcmp(it->name, "serial");

		if (d->flag == is_serial)
			fail_msg("etc/p1d.conf: [%s] %s should %sbe commented out",
			         config_section_name(it->section), it->name,
			         is_serial ? "not " : "");
		if (*it->def && strcmp(d->value, it->def))
			fail_msg("etc/p1d.conf: [%s] %s shows \"%s\", its default is \"%s\"",
			         config_section_name(it->section), it->name, d->value, it->def);
	}
	/* it loads and validates, and means the defaults plus one serial meter */
	snprintf(path, sizeof(path), "%s/etc/p1d.conf", source_dir());
	c = config_new_defaults();
	if (config_load_file(c, path, &err) < 0 || config_validate(c, &err) < 0)
		fail_msg("%s", config_error_format(&err, path, sizeof(path)));
	expected = config_new_defaults();
	assert_int_equal(
	        config_set_option(expected, "meter", "main", "serial", "/dev/ttyUSB0", &err), 0);
	a = dump(c);
	b = dump(expected);
	assert_string_equal(a, b);
	free(a);
	free(b);
	config_free(expected);
	config_free(c);
}

/* Every .Bd -literal block under EXAMPLES loads and validates; key_file gets a real file. */
static void test_man_page_examples(void **state)
{
	FILE *f = open_source("man/p1d.conf.5");
	char *key_path = write_temp(KEY_HEX "\n", 0600);
	char line[1024], text[4096] = "";
	bool in_examples = false, in_block = false;
	int blocks = 0;

	(void)state;
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, ".Sh", 3))
			in_examples = !strncmp(line, ".Sh EXAMPLES", 12);
		else if (in_examples && !strncmp(line, ".Bd -literal", 12))
			in_block = true, text[0] = '\0';
		else if (in_block && !strncmp(line, ".Ed", 3)) {
			struct config *c;
			struct config_error err = {0};
			char buf[600];
			int r;

			in_block = false;
			blocks++;
			c = load(text, &r, &err);
			if (r == 0)
				r = config_validate(c, &err);
			if (r < 0)
				fail_msg("example %d: %s\n%s", blocks,
				         config_error_format(&err, buf, sizeof(buf)), text);
			config_free(c);
		} else if (in_block) {
			if (!strncmp(line, "key_file = ", 11))
				snprintf(line, sizeof(line), "key_file = %s\n", key_path);
			strncat(text, line, sizeof(text) - strlen(text) - 1);
		}
	}
	fclose(f);
	assert_int_equal(blocks, 4);
	unlink(key_path);
	free(key_path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_defaults),
	        cmocka_unit_test(test_table),
	        cmocka_unit_test(test_bool_int),
	        cmocka_unit_test(test_duration),
	        cmocka_unit_test(test_enum_string_path),
	        cmocka_unit_test(test_hexkey_hostport),
	        cmocka_unit_test(test_syntax),
	        cmocka_unit_test(test_unknown),
	        cmocka_unit_test(test_duplicates),
	        cmocka_unit_test(test_options),
	        cmocka_unit_test(test_key_file),
	        cmocka_unit_test(test_password_file),
	        cmocka_unit_test(test_validate),
	        cmocka_unit_test(test_needs_restart),
	        cmocka_unit_test(test_dump),
	        cmocka_unit_test(test_load_file),
	        cmocka_unit_test(test_man_page_documents_every_key),
	        cmocka_unit_test(test_example_config_lists_every_key),
	        cmocka_unit_test(test_man_page_examples),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
