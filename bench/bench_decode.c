/* bench_decode.c - what decoding costs: time, instructions and memory per telegram, and
 * throughput on a noisy stream. Everything goes through p1_decoder_feed, the path the daemon
 * uses (framer, CRC, parser), with a realistic DSMR 5 three-phase telegram with gas, written
 * below and given its CRC with p1_crc16.
 *
 * Usage: bench_decode [--time N | --rss N | --stream MIB [GAP [crlf]] | --once N | --json N]
 *        (no option: --time, --rss and --stream with their defaults)
 *
 *   --time N     decode the telegram N times (default 200000), one feed call per telegram, in 5
 *                rounds; report ns per telegram and MB/s of the fastest and the median round
 *   --once N     decode it N times and exit, for instruction counts:
 *                  valgrind --tool=callgrind bench_decode --once 1001 (and --once 1);
 *                  instructions per telegram = (Ir(1001) - Ir(1)) / 1000
 *   --json N     decode the telegram once and render it as JSON (p1_json_telegram, P1_JSON_ALL)
 *                N times; report ns per render. For instruction counts:
 *                  valgrind --tool=callgrind bench_decode --json 1001 (and --json 1);
 *                  instructions per render = (Ir(1001) - Ir(1)) / 1000
 *   --rss N      decode N telegrams (default 1000000) and report VmRSS/VmHWM before and after
 *   --stream MIB [GAP [crlf]]
 *                MIB MiB (default 64) of random bytes with the telegram interleaved after
 *                every GAP bytes on average (default 1024; the gap varies from GAP/2 to 3 GAP/2),
 *                fed in 4 KiB reads; report MB/s, telegrams recovered (byte-identical, CRC ok),
 *                accepted frames that were not one of ours (must be 0) and rejections by
 *                reason. With crlf the last two random bytes before each telegram are CR LF,
 *                so every telegram starts a line, as after a meter's previous telegram.
 *
 * Exit status 1 when a telegram that should decode did not, 2 on a usage error.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "p1/crc16.h"
#include "p1/decoder.h"
#include "p1/json.h"

#define TELEGRAM_CAP 2048
#define STREAM_READ 4096 /* bytes per feed call in --stream, a typical serial read */

static char telegram[TELEGRAM_CAP];
static size_t telegram_len;

/* A DSMR 5.0 three-phase meter with a gas meter on M-Bus channel 1, 40 lines, as an Iskra
 * AM550 sends it; values are made up, the layout is the spec's. */
static void build_telegram(void)
{
	static const char body[] = "/ISK5\\2M550T-1012\r\n"
	                           "\r\n"
	                           "1-3:0.2.8(50)\r\n"
	                           "0-0:1.0.0(240331120000S)\r\n"
	                           "0-0:96.1.1(4530303434303031353337363331343137)\r\n"
	                           "1-0:1.8.1(012345.678*kWh)\r\n"
	                           "1-0:1.8.2(023456.789*kWh)\r\n"
	                           "1-0:2.8.1(001234.567*kWh)\r\n"
	                           "1-0:2.8.2(002345.678*kWh)\r\n"
	                           "0-0:96.14.0(0002)\r\n"
	                           "1-0:1.7.0(01.234*kW)\r\n"
	                           "1-0:2.7.0(00.000*kW)\r\n"
	                           "0-0:96.7.21(00012)\r\n"
	                           "0-0:96.7.9(00003)\r\n"
	                           "1-0:99.97.0(2)(0-0:96.7.19)(231030031500W)(0000000240*s)"
	                           "(240215101010W)(0000004321*s)\r\n"
	                           "1-0:32.32.0(00002)\r\n"
	                           "1-0:52.32.0(00001)\r\n"
	                           "1-0:72.32.0(00001)\r\n"
	                           "1-0:32.36.0(00000)\r\n"
	                           "1-0:52.36.0(00000)\r\n"
	                           "1-0:72.36.0(00000)\r\n"
	                           "0-0:96.13.0()\r\n"
	                           "1-0:32.7.0(230.1*V)\r\n"
	                           "1-0:52.7.0(231.2*V)\r\n"
	                           "1-0:72.7.0(229.8*V)\r\n"
	                           "1-0:31.7.0(002*A)\r\n"
	                           "1-0:51.7.0(001*A)\r\n"
	                           "1-0:71.7.0(003*A)\r\n"
	                           "1-0:21.7.0(00.412*kW)\r\n"
	                           "1-0:41.7.0(00.198*kW)\r\n"
	                           "1-0:61.7.0(00.624*kW)\r\n"
	                           "1-0:22.7.0(00.000*kW)\r\n"
	                           "1-0:42.7.0(00.000*kW)\r\n"
	                           "1-0:62.7.0(00.000*kW)\r\n"
	                           "0-1:24.1.0(003)\r\n"
	                           "0-1:96.1.0(4730303339303031363331373831383137)\r\n"
	                           "0-1:24.2.1(240331115500S)(04567.890*m3)\r\n"
	                           "!";
	size_t n = sizeof(body) - 1;
	memcpy(telegram, body, n);
	unsigned crc = p1_crc16(0, body, n);
	telegram_len = n + (size_t)snprintf(telegram + n, sizeof(telegram) - n, "%04X\r\n", crc);
}

struct tally {
	uint64_t ok, mine, other, errors;
	uint64_t by_error[P1_ERR_COUNT];
};

/* Count results; a telegram is "mine" when its frame is byte for byte the one we sent. */
static void on_result(void *ud, const struct p1_result *r)
{
	struct tally *t = ud;
	if (r->error != P1_OK) {
		t->errors++;
		if ((unsigned)r->error < P1_ERR_COUNT)
			t->by_error[r->error]++;
		return;
	}
	t->ok++;
	if (r->frame && r->frame->len == telegram_len &&
	    !memcmp(r->frame->data, telegram, telegram_len))
		t->mine++;
	else
		t->other++;
}

static struct p1_decoder *decoder(void)
{
	struct p1_decoder *d = p1_decoder_new(NULL);
	if (!d) {
		fprintf(stderr, "bench_decode: p1_decoder_new failed\n");
		exit(1);
	}
	return d;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int check(const struct tally *t, uint64_t want, const char *what)
{
	if (t->ok == want && t->mine == want && !t->errors)
		return 0;
	fprintf(stderr, "bench_decode: %s: %llu of %llu telegrams decoded, %llu errors\n", what,
	        (unsigned long long)t->mine, (unsigned long long)want,
	        (unsigned long long)t->errors);
	return 1;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* (a) time per telegram */
static int bench_time(uint64_t n)
{
	enum { ROUNDS = 5 };
	struct p1_decoder *d = decoder();
	struct tally t = {0};
	for (int i = 0; i < 1000; i++) /* warm up caches and branch predictors */
		p1_decoder_feed(d, telegram, telegram_len, on_result, &t);
	double ns[ROUNDS];
	for (int r = 0; r < ROUNDS; r++) {
		t = (struct tally){0};
		double t0 = now_s();
		for (uint64_t i = 0; i < n; i++)
			p1_decoder_feed(d, telegram, telegram_len, on_result, &t);
		ns[r] = (now_s() - t0) * 1e9 / (double)n;
		if (check(&t, n, "time"))
			return 1;
	}
	qsort(ns, ROUNDS, sizeof(ns[0]), cmp_double);
	for (int k = 0; k < 2; k++) {
		double v = k ? ns[ROUNDS / 2] : ns[0];
		printf("time: %s of %d rounds of %llu telegrams (%zu bytes): %.0f ns/telegram, "
		       "%.0f telegrams/s, %.1f MB/s\n",
		       k ? "median" : "best", ROUNDS, (unsigned long long)n, telegram_len, v,
		       1e9 / v, (double)telegram_len / v * 1e3);
	}
	p1_decoder_free(d);
	return 0;
}

/* (b) a fixed number of telegrams, for callgrind */
static int bench_once(uint64_t n)
{
	struct p1_decoder *d = decoder();
	struct tally t = {0};
	for (uint64_t i = 0; i < n; i++)
		p1_decoder_feed(d, telegram, telegram_len, on_result, &t);
	p1_decoder_free(d);
	return check(&t, n, "once");
}

struct json_run {
	uint64_t n;      /* renders */
	size_t len;      /* bytes of JSON */
	double ns;       /* per render */
	bool bad;
	char buf[8192];
};

/* Render the telegram n times while it is valid, that is, inside the callback. */
static void on_json(void *ud, const struct p1_result *r)
{
	struct json_run *j = ud;
	if (r->error != P1_OK || !r->frame || r->frame->len != telegram_len ||
	    memcmp(r->frame->data, telegram, telegram_len)) {
		j->bad = true;
		return;
	}
	double t0 = now_s();
	for (uint64_t i = 0; i < j->n; i++)
		j->len = p1_json_telegram(r->telegram, P1_JSON_ALL, j->buf, sizeof(j->buf));
	j->ns = (now_s() - t0) * 1e9 / (double)j->n;
	j->bad |= j->len >= sizeof(j->buf) || strlen(j->buf) != j->len;
}

/* (e) the telegram as JSON, rendered n times */
static int bench_json(uint64_t n)
{
	struct p1_decoder *d = decoder();
	static struct json_run j;
	j.n = n;
	p1_decoder_feed(d, telegram, telegram_len, on_json, &j);
	p1_decoder_free(d);
	if (j.bad || !j.len) {
		fprintf(stderr, "bench_decode: json: the telegram did not decode or render\n");
		return 1;
	}
	printf("json: %llu renders of %zu bytes (P1_JSON_ALL): %.0f ns/render\n",
	       (unsigned long long)n, j.len, j.ns);
	return 0;
}

/* kB of a "VmRSS:" style line of /proc/self/status, or -1 */
static long status_kb(const char *key)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long v = -1;
	size_t k = strlen(key);
	while (f && fgets(line, sizeof(line), f))
		if (!strncmp(line, key, k) && line[k] == ':')
			v = strtol(line + k + 1, NULL, 10);
	if (f)
		fclose(f);
	return v;
}

/* (c) memory stays flat */
static int bench_rss(uint64_t n)
{
	struct p1_decoder *d = decoder();
	struct tally t = {0};
	p1_decoder_feed(d, telegram, telegram_len, on_result, &t);
	long rss0 = status_kb("VmRSS"), hwm0 = status_kb("VmHWM");
	for (uint64_t i = 1; i < n; i++)
		p1_decoder_feed(d, telegram, telegram_len, on_result, &t);
	long rss1 = status_kb("VmRSS"), hwm1 = status_kb("VmHWM");
	printf("rss: %llu telegrams: VmRSS %ld -> %ld kB (%+ld kB), VmHWM %ld -> %ld kB (%+ld "
	       "kB)\n",
	       (unsigned long long)n, rss0, rss1, rss1 - rss0, hwm0, hwm1, hwm1 - hwm0);
	p1_decoder_free(d);
	return check(&t, n, "rss");
}

static uint64_t rng_state = 0x9E3779B97F4A7C15u;

static uint64_t rng(void) /* xorshift64*, fixed seed: every run sees the same stream */
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545F4914F6CDD1Du;
}

/* (d) telegrams in random bytes (test matrix P4); with line_start, each telegram follows a CR LF
 * as it would after a meter's previous telegram, to tell losses at a line start from others */
static int bench_stream(size_t mib, size_t gap, bool line_start)
{
	size_t cap = mib << 20;
	uint8_t *s = malloc(cap);
	if (!s) {
		fprintf(stderr, "bench_decode: out of memory\n");
		return 1;
	}
	size_t n = 0;
	uint64_t sent = 0;
	for (;;) {
		size_t g = gap / 2 + (size_t)(rng() % (gap + 1));
		if (n + g + telegram_len > cap)
			break;
		for (size_t i = 0; i < g; i++)
			s[n + i] = (uint8_t)(rng() >> 56);
		n += g;
		if (line_start && g >= 2)
			memcpy(s + n - 2, "\r\n", 2);
		memcpy(s + n, telegram, telegram_len);
		n += telegram_len;
		sent++;
	}
	while (n < cap)
		s[n++] = (uint8_t)(rng() >> 56);
	long rss0 = status_kb("VmRSS");
	struct p1_decoder *d = decoder();
	struct tally t = {0};
	double t0 = now_s();
	for (size_t off = 0; off < n; off += STREAM_READ)
		p1_decoder_feed(d, s + off, n - off < STREAM_READ ? n - off : STREAM_READ,
		                on_result, &t);
	p1_decoder_flush(d, on_result, &t);
	double secs = now_s() - t0;
	long rss1 = status_kb("VmRSS");
	printf("stream: %zu MiB, a telegram every %zu random bytes on average%s: %.1f MB/s; "
	       "%llu of %llu telegrams recovered (%.2f %%), %llu other frames accepted, "
	       "%llu rejected (",
	       mib, gap, line_start ? " (each after CR LF)" : "", (double)n / secs / 1e6,
	       (unsigned long long)t.mine, (unsigned long long)sent,
	       100.0 * (double)t.mine / (double)sent, (unsigned long long)t.other,
	       (unsigned long long)t.errors);
	const char *sep = "";
	for (int e = 1; e < P1_ERR_COUNT; e++)
		if (t.by_error[e]) {
			printf("%s%s %llu", sep, p1_error_id((enum p1_error)e),
			       (unsigned long long)t.by_error[e]);
			sep = ", ";
		}
	printf("); VmRSS %+ld kB\n", rss1 - rss0);
	p1_decoder_free(d);
	free(s);
	return t.mine == sent && !t.other ? 0 : 1;
}

static uint64_t arg_u64(const char *s, const char *what)
{
	char *end;
	unsigned long long v = strtoull(s, &end, 10);
	if (!*s || *end || !v) {
		fprintf(stderr, "bench_decode: %s: not a positive number: %s\n", what, s);
		exit(2);
	}
	return v;
}

int main(int argc, char **argv)
{
	build_telegram();
	if (argc == 1) {
		printf("telegram: %zu bytes, DSMR 5.0 three-phase with gas\n", telegram_len);
		int r = bench_time(200000);
		r |= bench_rss(1000000);
		r |= bench_stream(64, 1024, false);
		return r;
	}
	const char *opt = argv[1];
	uint64_t n = argc > 2 ? arg_u64(argv[2], opt) : 0;
	if (!strcmp(opt, "--once") && argc == 3)
		return bench_once(n);
	if (!strcmp(opt, "--json") && argc == 3)
		return bench_json(n);
	if (!strcmp(opt, "--time") && argc <= 3)
		return bench_time(n ? n : 200000);
	if (!strcmp(opt, "--rss") && argc <= 3)
		return bench_rss(n ? n : 1000000);
	if (!strcmp(opt, "--stream") && argc <= 5)
		return bench_stream(n ? (size_t)n : 64,
		                    argc > 3 ? (size_t)arg_u64(argv[3], "gap") : 1024,
		                    argc > 4 && !strcmp(argv[4], "crlf"));
	fprintf(stderr,
	        "usage: %s [--time N | --rss N | --stream MIB [GAP [crlf]] | --once N | --json N]\n",
	        argv[0]);
	return 2;
}
