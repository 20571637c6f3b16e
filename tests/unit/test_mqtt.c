/* test_mqtt.c - the pure parts of the MQTT sink: topic names, plain per-field payloads, Home
 * Assistant discovery configs for every field class (parsed back with jansson), the
 * manufacturer table, DSMR Reader names, the outbox bounds and drop counter, the publish
 * throttle and the reconnect backoff. The broker side is tests/integration/test_mqtt.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "loop.h"
#include "mqtt.h"
#include "mqtt_discovery.h"
#include "mqtt_queue.h"
#include "p1/telegram.h"

static const char TELEGRAM[] =
	"/ISK5\\2M550T-1012\r\n"
	"\r\n"
	"1-3:0.2.8(50)\r\n"
	"0-0:1.0.0(261121105859W)\r\n"
	"0-0:96.1.1(4530303433353533363130333835393939)\r\n"
	"1-0:1.8.1(002046.098*kWh)\r\n"
	"1-0:1.8.2(002129.613*kWh)\r\n"
	"1-0:2.8.1(000000.000*kWh)\r\n"
	"1-0:2.8.2(000012.500*kWh)\r\n"
	"0-0:96.14.0(0002)\r\n"
	"1-0:1.7.0(00.387*kW)\r\n"
	"1-0:2.7.0(00.000*kW)\r\n"
	"0-0:96.7.21(00006)\r\n"
	"0-0:96.7.9(00002)\r\n"
	"0-0:96.13.0()\r\n"
	"1-0:32.7.0(230.2*V)\r\n"
	"1-0:31.7.0(001*A)\r\n"
	"1-0:21.7.0(00.174*kW)\r\n"
	"0-1:24.1.0(003)\r\n"
	"0-1:96.1.0(4730303238353533363130333835393939)\r\n"
	"0-1:24.2.1(261121105500W)(02079.740*m3)\r\n"
	"!\r\n";

static struct p1_telegram *parse(void)
{
	struct p1_parse_opts o;
	p1_parse_opts_init(&o);
	struct p1_telegram *t = p1_telegram_new(4096);
	assert_non_null(t);
	assert_int_equal(p1_parse(t, TELEGRAM, strlen(TELEGRAM), false, 0, &o, NULL), P1_OK);
	return t;
}

static json_t *config_of(const struct p1_telegram *t, enum p1_field f)
{
	struct mqtt_device d = {"home/p1", "main", "home_p1_main", "9.9"};
	char buf[4096];
	size_t n = mqtt_discovery_config(&d, t, f, buf, sizeof(buf));
	assert_true(n < sizeof(buf));
	json_error_t err;
	json_t *j = json_loads(buf, 0, &err);
	if (!j)
		fail_msg("invalid JSON for %s: %s: %s", p1_field_info(f)->name, err.text, buf);
	return j;
}

static const char *str(json_t *j, const char *key)
{
	json_t *v = json_object_get(j, key);
	return v && json_is_string(v) ? json_string_value(v) : NULL;
}

static void expect(json_t *j, const char *key, const char *want)
{
	const char *got = str(j, key);
	if (!want) {
		if (got)
			fail_msg("%s: unexpected %s", key, got);
		return;
	}
	if (!got || strcmp(got, want))
		fail_msg("%s: want %s, got %s", key, want, got ? got : "(none)");
}

static void test_manufacturer(void **state)
{
	static const struct {
		const char *header, *want;
	} cases[] = {
		{"ISK5\\2M550T-1012", "Iskra"},   {"ISk5MIE5T-200", "Iskra"},
		{"KFM5KAIFA-METER", "Kaifa"},     {"XMX5LGBBFG1012530239", "Landis+Gyr"},
		{"Ene5\\T210-D ESMR5.0", "Sagemcom"}, {"SAG5SAG-METER", "Sagemcom"},
		{"KMP5 ZABF001587315111", "Kamstrup"}, {"FLU5\\253769484_A", "Fluvius"},
		{"Lux5\\u00", "Luxmetering"},     {"ESY5Q3DA1004 V3.04", "EasyMeter"},
		{"ABC5XYZ", "ABC"},               {"AB", ""},
	};
	char buf[64];
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		assert_string_equal(mqtt_manufacturer(cases[i].header, strlen(cases[i].header), buf,
						      sizeof(buf)),
				    cases[i].want);
}

static void test_model_and_node(void **state)
{
	char buf[128];
	(void)state;
	mqtt_model("ISK5\\2M550T-1012", 16, buf, sizeof(buf));
	assert_string_equal(buf, "2M550T-1012");
	mqtt_model("KFM5KAIFA-METER", 15, buf, sizeof(buf));
	assert_string_equal(buf, "KAIFA-METER");
	mqtt_model("XMX5", 4, buf, sizeof(buf));
	assert_string_equal(buf, "XMX5");
	assert_int_equal(mqtt_node_id("home/p1", "main-2", buf, sizeof(buf)), 14);
	assert_string_equal(buf, "home_p1_main-2");
	mqtt_discovery_topic("homeassistant", "p1d_main", P1_F_GAS, buf, sizeof(buf));
	assert_string_equal(buf, "homeassistant/sensor/p1d_main/gas_delivered/config");
}

static void test_payloads(void **state)
{
	struct p1_telegram *t = parse();
	char buf[256];
	(void)state;
	assert_int_equal(mqtt_field_payload(t, P1_F_E_DEL_T1, buf, sizeof(buf)), 8);
	assert_string_equal(buf, "2046.098");
	mqtt_field_payload(t, P1_F_P_RET, buf, sizeof(buf));
	assert_string_equal(buf, "0.000"); /* the meter's decimals, not 0 */
	mqtt_field_payload(t, P1_F_EQUIPMENT_ID, buf, sizeof(buf));
	assert_string_equal(buf, "E0043553610385999");
	mqtt_field_payload(t, P1_F_TIMESTAMP, buf, sizeof(buf));
	assert_string_equal(buf, "2026-11-21T10:58:59+01:00");
	mqtt_field_payload(t, P1_F_GAS, buf, sizeof(buf));
	assert_string_equal(buf, "2079.740");
	mqtt_field_payload(t, P1_F_TARIFF, buf, sizeof(buf));
	assert_string_equal(buf, "0002");
	assert_int_equal(mqtt_field_payload(t, P1_F_V_L2, buf, sizeof(buf)), 0); /* absent */
	assert_int_equal(mqtt_field_payload(t, P1_F_MSG_LONG, buf, sizeof(buf)), 0); /* empty */
	p1_telegram_free(t);
}

static void test_discovery_classes(void **state)
{
	static const struct {
		enum p1_field f;
		const char *device_class, *state_class, *unit;
	} cases[] = {
		{P1_F_E_DEL_T1, "energy", "total_increasing", "kWh"},
		{P1_F_E_RET_T2, "energy", "total_increasing", "kWh"},
		{P1_F_P_DEL, "power", "measurement", "kW"},
		{P1_F_P_DEL_L1, "power", "measurement", "kW"},
		{P1_F_V_L1, "voltage", "measurement", "V"},
		{P1_F_I_L1, "current", "measurement", "A"},
		{P1_F_GAS, "gas", "total_increasing", "m\xc2\xb3"},
		{P1_F_FAILURES, NULL, "total_increasing", NULL},
		{P1_F_TIMESTAMP, "timestamp", NULL, NULL},
		{P1_F_GAS_TIME, "timestamp", NULL, NULL},
		{P1_F_EQUIPMENT_ID, NULL, NULL, NULL},
		{P1_F_TARIFF, NULL, NULL, NULL},
	};
	struct p1_telegram *t = parse();
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		json_t *j = config_of(t, cases[i].f);
		char want[256];
		expect(j, "device_class", cases[i].device_class);
		expect(j, "state_class", cases[i].state_class);
		expect(j, "unit_of_measurement", cases[i].unit);
		snprintf(want, sizeof(want), "home/p1/main/%s", p1_field_info(cases[i].f)->name);
		expect(j, "state_topic", want);
		snprintf(want, sizeof(want), "home_p1_main_%s", p1_field_info(cases[i].f)->name);
		expect(j, "unique_id", want);
		expect(j, "availability_topic", "home/p1/status");
		expect(j, "entity_category",
		       p1_field_info(cases[i].f)->cls == P1_CLASS_INFO ? "diagnostic" : NULL);
		json_t *dev = json_object_get(j, "device");
		assert_non_null(dev);
		expect(dev, "manufacturer", "Iskra");
		expect(dev, "model", "2M550T-1012");
		expect(dev, "sw_version", "50");
		expect(dev, "serial_number", "E0043553610385999");
		json_t *ids = json_object_get(dev, "identifiers");
		assert_true(json_is_array(ids));
		assert_string_equal(json_string_value(json_array_get(ids, 0)), "p1d_E0043553610385999");
		json_decref(j);
	}
	/* every field the telegram has gives valid JSON */
	for (unsigned f = 0; f < P1_FIELD_COUNT; f++)
		if (t->fields[f].presence && mqtt_discoverable((enum p1_field)f))
			json_decref(config_of(t, (enum p1_field)f));
	p1_telegram_free(t);
}

/* Rules Home Assistant enforces, checked over the whole field table. */
static void test_classes_whole_table(void **state)
{
	(void)state;
	for (unsigned f = 0; f < P1_FIELD_COUNT; f++) {
		const struct p1_field_info *fi = p1_field_info((enum p1_field)f);
		const char *dc = mqtt_device_class((enum p1_field)f);
		const char *sc = mqtt_state_class((enum p1_field)f);
		if (fi->kind == P1_KIND_NUMBER && fi->cls == P1_CLASS_COUNTER)
			assert_string_equal(sc, "total_increasing");
		if (fi->kind == P1_KIND_NUMBER && fi->cls == P1_CLASS_GAUGE)
			assert_string_equal(sc, "measurement");
		if (dc && (!strcmp(dc, "energy") || !strcmp(dc, "gas") || !strcmp(dc, "water")) &&
		    fi->cls != P1_CLASS_INFO)
			assert_string_equal(sc, "total_increasing");
		if (fi->kind == P1_KIND_TIME)
			assert_true(dc && !strcmp(dc, "timestamp") && !sc);
		if (fi->kind == P1_KIND_EVENTS || fi->kind == P1_KIND_DEMAND)
			assert_false(mqtt_discoverable((enum p1_field)f));
	}
	assert_null(mqtt_ha_unit(NULL, P1_F_PF));
	assert_string_equal(mqtt_ha_unit(NULL, P1_F_WATER), "m\xc2\xb3");
	assert_string_equal(mqtt_device_class(P1_F_WATER), "water");
}

static void test_dsmr_reader(void **state)
{
	struct p1_telegram *t = parse();
	char buf[64];
	(void)state;
	assert_string_equal(mqtt_dsmr_reader_topic(P1_F_E_DEL_T1), "dsmr/reading/electricity_delivered_1");
	assert_string_equal(mqtt_dsmr_reader_topic(P1_F_E_RET_T2), "dsmr/reading/electricity_returned_2");
	assert_string_equal(mqtt_dsmr_reader_topic(P1_F_P_DEL), "dsmr/reading/electricity_currently_delivered");
	assert_string_equal(mqtt_dsmr_reader_topic(P1_F_P_DEL_L3), "dsmr/reading/phase_currently_delivered_l3");
	assert_string_equal(mqtt_dsmr_reader_topic(P1_F_V_L1), "dsmr/reading/phase_voltage_l1");
	assert_string_equal(mqtt_dsmr_reader_topic(P1_F_I_L2), "dsmr/reading/phase_power_current_l2");
	assert_string_equal(mqtt_dsmr_reader_topic(P1_F_GAS), "dsmr/reading/extra_device_delivered");
	assert_string_equal(mqtt_dsmr_reader_topic(P1_F_GAS_TIME), "dsmr/reading/extra_device_timestamp");
	assert_string_equal(mqtt_dsmr_reader_topic(P1_F_TIMESTAMP), "dsmr/reading/timestamp");
	assert_null(mqtt_dsmr_reader_topic(P1_F_EQUIPMENT_ID));
	assert_int_equal(mqtt_dsmr_reader_payload(t, P1_F_TARIFF, buf, sizeof(buf)), 1);
	assert_string_equal(buf, "2");
	mqtt_dsmr_reader_payload(t, P1_F_E_DEL_T2, buf, sizeof(buf));
	assert_string_equal(buf, "2129.613");
	p1_telegram_free(t);
}

static void push(struct mqtt_queue *q, int i)
{
	char p[32];
	int n = snprintf(p, sizeof(p), "reading %d", i);
	assert_int_equal(mqtt_queue_push(q, 0, 1000 + i, p, (size_t)n), 0);
}

static int peek_number(struct mqtt_queue *q, bool *last)
{
	unsigned meter;
	const char *p;
	size_t len;
	int64_t utc;
	if (!mqtt_queue_peek(q, &meter, &p, &len, &utc, last))
		return -1;
	char text[32]; /* payloads are not NUL-terminated */
	assert_true(len < sizeof(text));
	memcpy(text, p, len);
	text[len] = 0;
	assert_int_equal(utc - 1000, atoi(text + 8));
	return atoi(text + 8);
}

static void test_queue_bound(void **state)
{
	struct mqtt_queue *q;
	struct mqtt_queue_stats st;
	bool last;
	(void)state;
	assert_int_equal(mqtt_queue_new(5, 1 << 20, &q), 0);
	for (int i = 1; i <= 8; i++)
		push(q, i);
	mqtt_queue_get_stats(q, &st);
	assert_int_equal(st.entries, 5);
	assert_int_equal(st.dropped, 3);
	assert_int_equal(st.queued, 8);
	assert_int_equal(peek_number(q, &last), 4); /* the oldest were dropped */
	assert_false(last);

	/* two in flight; acknowledged out of order */
	mqtt_queue_sent(q, 11);
	assert_int_equal(peek_number(q, NULL), 5);
	mqtt_queue_sent(q, 12);
	assert_int_equal(peek_number(q, NULL), 6);
	assert_true(mqtt_queue_ack(q, 12, NULL));
	assert_false(mqtt_queue_ack(q, 12, NULL));
	assert_false(mqtt_queue_ack(q, 99, NULL));
	/* full again: the in-flight entry (4) is not dropped, the oldest pending (6) is */
	push(q, 9);
	push(q, 10);
	mqtt_queue_get_stats(q, &st);
	assert_int_equal(st.entries, 5);
	assert_int_equal(st.dropped, 4);
	assert_int_equal(st.inflight, 1);
	assert_int_equal(peek_number(q, NULL), 7);

	/* the connection is lost: 4 is pending again and goes first */
	mqtt_queue_requeue(q);
	assert_int_equal(peek_number(q, NULL), 4);
	int64_t utc = 0;
	mqtt_queue_sent(q, 13);
	assert_true(mqtt_queue_ack(q, 13, &utc));
	assert_int_equal(utc, 1004);
	int order[] = {7, 8, 9, 10};
	for (size_t i = 0; i < 4; i++) {
		assert_int_equal(peek_number(q, &last), order[i]);
		assert_int_equal(last, i == 3); /* only the newest is published retained */
		mqtt_queue_sent(q, 20 + (int)i);
		assert_true(mqtt_queue_ack(q, 20 + (int)i, NULL));
	}
	assert_int_equal(peek_number(q, NULL), -1);
	mqtt_queue_get_stats(q, &st);
	assert_int_equal(st.entries, 0);
	assert_int_equal(st.bytes, 0);
	assert_int_equal(st.acked, 6);
	mqtt_queue_free(q);
}

static void test_queue_bytes(void **state)
{
	struct mqtt_queue *q;
	struct mqtt_queue_stats st;
	char big[400];
	(void)state;
	memset(big, 'x', sizeof(big));
	assert_int_equal(mqtt_queue_new(100, 1000, &q), 0);
	for (int i = 0; i < 5; i++)
		assert_int_equal(mqtt_queue_push(q, 1, i, big, sizeof(big)), 0);
	mqtt_queue_get_stats(q, &st);
	assert_int_equal(st.entries, 2);
	assert_int_equal(st.bytes, 800);
	assert_int_equal(st.dropped, 3);
	char huge[1001] = {0};
	assert_int_equal(mqtt_queue_push(q, 1, 0, huge, sizeof(huge)), -E2BIG);
	mqtt_queue_free(q);
}

static void test_throttle(void **state)
{
	(void)state;
	assert_true(mqtt_throttle_due(true, 0, 5, 10000));
	assert_true(mqtt_throttle_due(false, 1000, 1001, 0));
	assert_false(mqtt_throttle_due(false, 1000, 5999, 5000));
	assert_true(mqtt_throttle_due(false, 1000, 6000, 5000));
	/* one telegram a second, interval 10 s: every tenth is published */
	uint64_t last = 0;
	int published = 0;
	for (int i = 0; i < 60; i++) {
		uint64_t now = 1000 + (uint64_t)i * 1000;
		if (mqtt_throttle_due(i == 0, last, now, 10000)) {
			published++;
			last = now;
		}
	}
	assert_int_equal(published, 6);
}

static void test_backoff(void **state)
{
	uint64_t base = 0, want[] = {1000, 2000, 4000, 8000, 16000, 30000, 30000};
	(void)state;
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		uint64_t d = mqtt_backoff_next(&base, (uint32_t)(i * 7919u));
		assert_int_equal(base, want[i]);
		assert_true(d <= base && d >= base * 80 / 100);
	}
	base = 0;
	assert_int_equal(mqtt_backoff_next(&base, 0), 1000);
	assert_int_equal(mqtt_backoff_next(&base, 20), 1600);
}

/* A loopback port nobody listens on. */
static int closed_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	close(fd);
	return ntohs(a.sin_port);
}

static void on_quit(struct loop_timer *t, void *ud)
{
	(void)t;
	loop_quit(ud, 0);
}

/* The client against a port where nobody listens: it keeps retrying from the loop without
 * blocking it, never reports a connection, and is freed cleanly (leaks show under ASan). */
static void test_client_no_broker(void **state)
{
	struct loop *l;
	struct loop_timer *quit;
	struct mqtt *q;
	struct mqtt_stats st;
	(void)state;
	struct config *c = config_new_defaults();
	assert_non_null(c);
	free(c->mqtt.host);
	c->mqtt.host = strdup("127.0.0.1");
	c->mqtt.port = closed_port();
	assert_int_equal(loop_new(&l), 0);
	assert_int_equal(mqtt_new(l, &c->mqtt, &q), 0);
	assert_int_equal(loop_timer_new(l, on_quit, l, &quit), 0);
	uint64_t t0 = loop_now_ms();
	loop_timer_arm(quit, 1500, 0);
	assert_int_equal(loop_run(l), 0);
	assert_true(loop_now_ms() - t0 < 2500); /* nothing held the loop */
	mqtt_get_stats(q, &st);
	assert_false(st.connected);
	assert_int_equal(st.connects, 0);
	assert_int_equal(st.waiting, 0);
	mqtt_free(q);

	/* unreadable TLS files are refused at start */
	c->mqtt.tls = true;
	free(c->mqtt.ca_file);
	c->mqtt.ca_file = strdup("/nonexistent/ca.crt");
	assert_int_equal(mqtt_new(l, &c->mqtt, &q), -EINVAL);
	loop_timer_free(quit);
	loop_free(l);
	config_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_manufacturer),
		cmocka_unit_test(test_model_and_node),
		cmocka_unit_test(test_payloads),
		cmocka_unit_test(test_discovery_classes),
		cmocka_unit_test(test_classes_whole_table),
		cmocka_unit_test(test_dsmr_reader),
		cmocka_unit_test(test_queue_bound),
		cmocka_unit_test(test_queue_bytes),
		cmocka_unit_test(test_throttle),
		cmocka_unit_test(test_backoff),
		cmocka_unit_test(test_client_no_broker),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
