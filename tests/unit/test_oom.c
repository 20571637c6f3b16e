/* test_oom.c - test matrix D6: out of memory on a telegram's way through the daemon. Every
 * allocation fails in turn, N = 1, 2, ... until a run makes fewer than N: our code's (malloc,
 * calloc, realloc, reallocarray, strdup, strndup, open_memstream, asprintf: wrapped at link
 * time with -Wl,--wrap, see tests/CMakeLists.txt, which reaches every reference from this
 * program, p1d_core and libp1) and SQLite's (SQLITE_CONFIG_MALLOC, the way SQLite's own OOM
 * tests count down) share one countdown. libmosquitto's and OpenSSL's allocations are not
 * counted; jansson is not on this path (the MQTT payloads are formatted by p1/json.c).
 *
 * - decoder: p1_decoder_new (with and without a key) and p1_decoder_feed over the telegrams
 *   of tests/data; feeding never allocates.
 * - path: what main does with a store and MQTT, in-process and without a broker: two meters
 *   (file sources that are never read: the test feeds them), a store on a database left by
 *   a "crash" (its WAL recovered, the readings after the last aggregates replayed), the MQTT
 *   client with its outbox and the backfill hook set; then telegrams (one with a bad CRC, one
 *   of a swapped meter), a commit, the JSON of the event stream, a history query and a
 *   readings-since query with minutes and readings still in memory, and a sync.
 * - path, new database: the same on a database that does not exist yet (schema created).
 * - stop: the objects freed with memory short, the last commit with them; then a restart.
 * Not reached without a broker: what mqtt.c does once connected (per-field topics,
 * discovery, backfill batches); they are tests/integration's.
 *
 * Each run checks: nothing crashed; an object that could not be made says -ENOMEM; what
 * failed is counted (rejected frames, readings the store dropped, commit failures, MQTT
 * messages waiting or dropped) and logged; and, with the countdown disarmed, the same
 * objects go on: the next telegram is decoded, rendered as JSON, stored, committed and read
 * back, the history's energy adds up to the register difference and the segments are those
 * the telegrams call for. Under ASan (P1_SANITIZE) LSan checks for leaks every
 * OOM_LEAK_EVERY runs.
 *
 * Every sweep runs twice: the N-th allocation fails alone, then every allocation from the
 * N-th on fails (persistent, as SQLite's tests also do: error paths that allocate). ctest
 * runs every N of ours, and of SQLite's every N up to OOM_DENSE and every OOM_STRIDE-th
 * after it; P1_OOM_FULL=1 runs every N (1.5 min under ASan), P1_OOM_PERSIST=1 the
 * persistent sweep only, P1_OOM_ONLY=N one run (its log printed), P1_OOM_TRACE=1 prints
 * each run. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "loop.h"
#include "meter.h"
#include "mqtt.h"
#include "mqtt_queue.h"
#include "p1/crc16.h"
#include "p1/decoder.h"
#include "p1/json.h"
#include "store.h"
#include "unit_util.h"

#if defined(__SANITIZE_ADDRESS__)
#define OOM_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define OOM_LSAN 1
#endif
#endif
#ifdef OOM_LSAN
#include <sanitizer/lsan_interface.h>
#endif

/* ctest: of SQLite's allocations every N up to OOM_DENSE, then every OOM_STRIDE-th. */
#define OOM_DENSE 400ul
#define OOM_STRIDE 7ul

/* ---- the countdown ------------------------------------------------------------------ */

enum oom_who { OOM_OURS, OOM_SQLITE };

static struct {
	bool armed;
	bool persist;          /* every allocation from the target on fails, not just that one */
	unsigned long target;  /* the allocation that fails, 1-based */
	unsigned long calls;   /* allocations since arming */
	unsigned long by[2];   /* of them, ours and SQLite's */
	unsigned long failed;  /* allocations made to fail */
} oom;

/* Whose each allocation of the run where nothing fails is (1-based; runs are deterministic,
 * so a run whose N-th allocation fails made the same N - 1 before it). */
#define OOM_MAP_MAX 16384u
static unsigned char oom_map[OOM_MAP_MAX];

static bool oom_persist_mode, oom_full;

static void oom_arm(unsigned long n)
{
	memset(&oom, 0, sizeof(oom));
	oom.target = n;
	oom.persist = oom_persist_mode;
	oom.armed = true;
}

/* Disarms; true when an allocation was made to fail. */
static bool oom_disarm(void)
{
	oom.armed = false;
	return oom.failed > 0;
}

static bool oom_fail(enum oom_who who)
{
	if (!oom.armed)
		return false;
	oom.calls++;
	oom.by[who]++;
	if (oom.target == ULONG_MAX && oom.calls < OOM_MAP_MAX)
		oom_map[oom.calls] = (unsigned char)who;
	if (oom.calls == oom.target || (oom.persist && oom.calls > oom.target)) {
		oom.failed++;
		errno = ENOMEM;
		return true;
	}
	return false;
}

void *__real_malloc(size_t size);
void *__real_calloc(size_t nmemb, size_t size);
void *__real_realloc(void *p, size_t size);
void *__real_reallocarray(void *p, size_t nmemb, size_t size);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
FILE *__real_open_memstream(char **ptr, size_t *size);
int __real_vasprintf(char **ret, const char *fmt, va_list ap);
void *__wrap_malloc(size_t size);
void *__wrap_calloc(size_t nmemb, size_t size);
void *__wrap_realloc(void *p, size_t size);
void *__wrap_reallocarray(void *p, size_t nmemb, size_t size);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);
FILE *__wrap_open_memstream(char **ptr, size_t *size);
int __wrap_vasprintf(char **ret, const char *fmt, va_list ap);
int __wrap_asprintf(char **ret, const char *fmt, ...);
int __wrap___vasprintf_chk(char **ret, int flag, const char *fmt, va_list ap);
int __wrap___asprintf_chk(char **ret, int flag, const char *fmt, ...);

void *__wrap_malloc(size_t size)
{
	return oom_fail(OOM_OURS) ? NULL : __real_malloc(size);
}

void *__wrap_calloc(size_t nmemb, size_t size)
{
	return oom_fail(OOM_OURS) ? NULL : __real_calloc(nmemb, size);
}

void *__wrap_realloc(void *p, size_t size)
{
	return oom_fail(OOM_OURS) ? NULL : __real_realloc(p, size);
}

void *__wrap_reallocarray(void *p, size_t nmemb, size_t size)
{
	return oom_fail(OOM_OURS) ? NULL : __real_reallocarray(p, nmemb, size);
}

char *__wrap_strdup(const char *s)
{
	return oom_fail(OOM_OURS) ? NULL : __real_strdup(s);
}

char *__wrap_strndup(const char *s, size_t n)
{
	return oom_fail(OOM_OURS) ? NULL : __real_strndup(s, n);
}

FILE *__wrap_open_memstream(char **ptr, size_t *size)
{
	return oom_fail(OOM_OURS) ? NULL : __real_open_memstream(ptr, size);
}

int __wrap_vasprintf(char **ret, const char *fmt, va_list ap)
{
	return oom_fail(OOM_OURS) ? -1 : __real_vasprintf(ret, fmt, ap);
}

int __wrap_asprintf(char **ret, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = __wrap_vasprintf(ret, fmt, ap);
	va_end(ap);
	return n;
}

/* what asprintf and vasprintf become with _FORTIFY_SOURCE=2 */
int __wrap___vasprintf_chk(char **ret, int flag, const char *fmt, va_list ap)
{
	(void)flag;
	return __wrap_vasprintf(ret, fmt, ap);
}

int __wrap___asprintf_chk(char **ret, int flag, const char *fmt, ...)
{
	va_list ap;
	(void)flag;
	va_start(ap, fmt);
	int n = __wrap_vasprintf(ret, fmt, ap);
	va_end(ap);
	return n;
}

static sqlite3_mem_methods sqlite_mem;

static void *sqlite_malloc(int n)
{
	return oom_fail(OOM_SQLITE) ? NULL : sqlite_mem.xMalloc(n);
}

static void *sqlite_realloc(void *p, int n)
{
	return oom_fail(OOM_SQLITE) ? NULL : sqlite_mem.xRealloc(p, n);
}

/* SQLite's allocator, counted: configured before anything opens a database. */
static void sqlite_countdown(void)
{
	static sqlite3_mem_methods m;
	assert_int_equal(sqlite3_shutdown(), SQLITE_OK);
	assert_int_equal(sqlite3_config(SQLITE_CONFIG_GETMALLOC, &sqlite_mem), SQLITE_OK);
	m = sqlite_mem;
	m.xMalloc = sqlite_malloc;
	m.xRealloc = sqlite_realloc;
	assert_int_equal(sqlite3_config(SQLITE_CONFIG_MALLOC, &m), SQLITE_OK);
	assert_int_equal(sqlite3_initialize(), SQLITE_OK);
}

/* Under LSan: a leak of the runs since the last check, N from..to (a check stops the world
 * and costs tens of milliseconds: made every OOM_LEAK_EVERY runs; LSan's report has the
 * stack of the allocation, P1_OOM_ONLY=N runs one alone). */
#define OOM_LEAK_EVERY 16
static void leak_check(const char *what, unsigned long from, unsigned long to)
{
#ifdef OOM_LSAN
	if (__lsan_do_recoverable_leak_check())
		fail_msg("%s: a leak with allocation N failing, N in %lu..%lu", what, from, to);
#else
	(void)what;
	(void)from;
	(void)to;
#endif
}

struct sweep_result {
	unsigned long runs;        /* N run */
	unsigned long allocations; /* in the run without a failure */
	unsigned long by[2];
};

/* The run in progress, named when a check fails (sweep_teardown). */
static const char *cur_what;
static unsigned long cur_n;

static bool sweep_one(const char *what, bool (*run)(unsigned long n), unsigned long n)
{
	cur_what = what;
	cur_n = n;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	bool failed = run(n);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (getenv("P1_OOM_TRACE"))
		printf("# %s %lu: %s, %ld ms\n", what, n, failed ? "failed" : "none failed",
		       (long)((t1.tv_sec - t0.tv_sec) * 1000 +
			      (t1.tv_nsec - t0.tv_nsec) / 1000000));
	return failed;
}

/* A run where nothing fails (recording whose each allocation is), then run(n) for each N of
 * its allocations: all of them with P1_OOM_FULL; for ctest every one up to OOM_DENSE, every
 * one of ours, every OOM_STRIDE-th of SQLite's and the last. P1_OOM_ONLY=N runs that one. */
static struct sweep_result sweep(const char *what, bool (*run)(unsigned long n))
{
	struct sweep_result res = {0};
	const char *only = getenv("P1_OOM_ONLY");
	if (only && *only) {
		sweep_one(what, run, strtoul(only, NULL, 10));
		leak_check(what, strtoul(only, NULL, 10), strtoul(only, NULL, 10));
		cur_what = NULL;
		return res;
	}
	assert_false(sweep_one(what, run, ULONG_MAX));
	res.allocations = oom.calls;
	res.by[OOM_OURS] = oom.by[OOM_OURS];
	res.by[OOM_SQLITE] = oom.by[OOM_SQLITE];
	assert_true(res.allocations < OOM_MAP_MAX);
	unsigned long checked = 1;
	for (unsigned long n = 1; n <= res.allocations; n++) {
		if (!oom_full && n > OOM_DENSE && oom_map[n] != OOM_OURS && n % OOM_STRIDE &&
		    n != res.allocations)
			continue;
		assert_true(sweep_one(what, run, n)); /* the same N - 1 allocations came first */
		if (++res.runs % OOM_LEAK_EVERY == 0) {
			leak_check(what, checked, n);
			checked = n + 1;
		}
	}
	leak_check(what, checked, res.allocations);
	cur_what = NULL;
	printf("# %s%s: %lu allocations (%lu ours, %lu SQLite's), %lu runs\n", what,
	       oom_persist_mode ? " (persistent)" : "", res.allocations, res.by[OOM_OURS],
	       res.by[OOM_SQLITE], res.runs);
	return res;
}

/* ---- the log of a run ------------------------------------------------------------------- */

static char log_text[1 << 16];
static int saved_stderr = -1;

/* Warnings and errors of the armed part of a run go to a memory file; outside it only what
 * is critical is written (the summaries objects write when freed). */
static void capture_start(void)
{
	log_set_max_priority(LOG_WARNING);
	int fd = memfd_create("p1d-oom-log", MFD_CLOEXEC);
	assert_true(fd >= 0);
	saved_stderr = dup(STDERR_FILENO);
	assert_true(saved_stderr >= 0);
	assert_true(dup2(fd, STDERR_FILENO) >= 0);
	close(fd);
}

/* The log written since capture_start(), stderr restored. */
static const char *capture_end(void)
{
	ssize_t n = pread(STDERR_FILENO, log_text, sizeof(log_text) - 1, 0);
	log_text[n > 0 ? n : 0] = 0;
	dup2(saved_stderr, STDERR_FILENO);
	close(saved_stderr);
	saved_stderr = -1;
	log_set_max_priority(LOG_CRIT);
	return log_text;
}

static int sweep_teardown(void **state)
{
	(void)state;
	if (cur_what)
		printf("# %s: failed with allocation %lu failing%s (P1_OOM_ONLY=%lu runs it"
		       " alone)\n",
		       cur_what, cur_n, oom_persist_mode ? " and all after it" : "", cur_n);
	cur_what = NULL;
	oom.armed = false;
	if (saved_stderr >= 0)
		capture_end();
	return 0;
}

/* ---- telegrams ------------------------------------------------------------------------ */

/* Replace the value in the first group of the line of OBIS code obis. */
static void set_value(char *text, size_t cap, const char *obis, const char *value)
{
	char key[32];
	snprintf(key, sizeof(key), "\n%s(", obis);
	char *p = strstr(text, key);
	assert_non_null(p);
	p += strlen(key);
	char *end = strchr(p, ')');
	assert_non_null(end);
	size_t vlen = strlen(value), tail = strlen(end) + 1;
	assert_true((size_t)(p - text) + vlen + tail <= cap);
	memmove(p + vlen, end, tail);
	memcpy(p, value, vlen);
}

static void set_crc(char *text)
{
	char *slash = strchr(text, '/'), *bang = strstr(text, "\n!");
	char hex[5];
	assert_non_null(slash);
	assert_non_null(bang);
	bang++;
	snprintf(hex, sizeof(hex), "%04X", p1_crc16(0, slash, (size_t)(bang + 1 - slash)));
	memcpy(bang + 1, hex, 4);
}

/* The history: TEMPLATE_N readings every STEP_S from T0 (12:00 CEST) in the database the
 * runs start from, then RUN_N telegrams per meter under the countdown (crossing 14:00, so
 * that the commit after COMMIT_AT writes an hour), then one more with it disarmed. */
#define T0_UTC ((int64_t)1711879200) /* 2024-03-31 10:00:00 UTC */
#define STEP_S 10
#define TEMPLATE_N 714u /* up to 13:58:50 */
#define RUN_N 12u
#define COMMIT_AT 8u
#define BAD_AT 3u
#define METERS 2
#define FRAME_MAX 2048

static const char *const meter_names[METERS] = {"main", "swap"};
static const char *const equipment[3] = {
	"4530303030303030303030303030303030", /* main */
	"4530303030303030303030303030303031", /* swap, before */
	"4530303030303030303030303030303032", /* swap, after: another meter, same registers */
};
static char *t2_text;

static int64_t utc_of(unsigned g)
{
	return T0_UTC + (int64_t)g * STEP_S;
}

/* energy_delivered_tariff1 in Wh of meter mi at reading g */
static int64_t t1_of(int mi, unsigned g)
{
	return mi == 0 ? 1234567 + 7 * (int64_t)g + g % 3 : 5000000 + 5 * (int64_t)g;
}

/* Telegram g of meter mi: tests/data/t2-dsmr5.txt with its time, id, tariff 1 and power. */
static size_t make_frame(int mi, unsigned g, char *buf, size_t cap)
{
	char v[64];
	assert_true(strlen(t2_text) < cap);
	strcpy(buf, t2_text);
	time_t local = (time_t)(utc_of(g) + 7200);
	struct tm tm;
	gmtime_r(&local, &tm);
	strftime(v, sizeof(v), "%y%m%d%H%M%SS", &tm);
	set_value(buf, cap, "0-0:1.0.0", v);
	set_value(buf, cap, "0-0:96.1.1", equipment[mi == 0 ? 0 : g < TEMPLATE_N ? 1 : 2]);
	int64_t t1 = t1_of(mi, g);
	snprintf(v, sizeof(v), "%06lld.%03lld*kWh", (long long)(t1 / 1000), (long long)(t1 % 1000));
	set_value(buf, cap, "1-0:1.8.1", v);
	unsigned w = (g * 37u) % 900u + 100u;
	snprintf(v, sizeof(v), "%02u.%03u*kW", w / 1000, w % 1000);
	set_value(buf, cap, "1-0:1.7.0", v);
	set_crc(buf);
	return strlen(buf);
}

/* ---- shared fixtures ---------------------------------------------------------------- */

static char dir[64], db_path[128], tpl_db[128], tpl_wal[128];
static struct config *cfg;
static struct loop *loop;
static const struct p1_tz tz = P1_TZ_CET;
static char run_frames[METERS][RUN_N + 1][FRAME_MAX];
static size_t run_len[METERS][RUN_N + 1];
static char bad_frame[FRAME_MAX];
static size_t bad_len;
static char next_json[FRAME_MAX * 2]; /* main's JSON of the telegram after the run */

static void decoder_opts(struct p1_decoder_opts *o)
{
	const struct config_meter *cm = config_find_meter(cfg, "main");
	p1_decoder_opts_init(o);
	o->framer.max_len = (size_t)cm->max_telegram_bytes;
	o->parse.tz = tz;
	o->parse.force_dialect = (enum p1_dialect)cm->dialect;
}

struct decoded {
	struct store *store; /* add each telegram to it (template) */
	const char *meter;
	unsigned ok, bad;
	char *json; /* render the last one here */
	size_t json_cap;
};

static void on_decoded(void *ud, const struct p1_result *r)
{
	struct decoded *d = ud;
	if (r->error != P1_OK) {
		d->bad++;
		return;
	}
	d->ok++;
	if (d->store)
		assert_int_equal(store_add_at(d->store, d->meter, r->telegram,
					      r->telegram->fields[P1_F_TIMESTAMP].time.utc),
				 1);
	if (d->json)
		assert_true(p1_json_telegram(r->telegram, P1_JSON_ALL & ~(unsigned)P1_JSON_FRAMING,
					     d->json, d->json_cap) < d->json_cap);
}

static void copy_file(const char *from, const char *to)
{
	static char buf[1 << 16];
	int in = open(from, O_RDONLY | O_CLOEXEC);
	int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(in >= 0 && out >= 0);
	ssize_t n;
	while ((n = read(in, buf, sizeof(buf))) > 0)
		assert_int_equal(write(out, buf, (size_t)n), n);
	assert_int_equal(n, 0);
	close(in);
	close(out);
}

/* The database a run starts from: TEMPLATE_N readings of each meter committed, the last
 * hour's aggregates not yet written, copied while the store is open (a crash). */
static void make_template(void)
{
	struct store *s = NULL;
	struct store_opts so = {.path = db_path, .commit_interval_ms = 60000, .raw_days = 7,
				.tz = tz};
	struct p1_decoder_opts o;
	char frame[FRAME_MAX];
	decoder_opts(&o);
	assert_int_equal(store_new(NULL, &so, &s), 0);
	for (int mi = 0; mi < METERS; mi++) {
		struct p1_decoder *dec = p1_decoder_new(&o);
		struct decoded d = {.store = s, .meter = meter_names[mi]};
		assert_non_null(dec);
		for (unsigned g = 0; g < TEMPLATE_N; g++)
			p1_decoder_feed(dec, frame, make_frame(mi, g, frame, sizeof(frame)),
					on_decoded, &d);
		p1_decoder_flush(dec, on_decoded, &d);
		assert_int_equal(d.ok, TEMPLATE_N);
		p1_decoder_free(dec);
	}
	assert_int_equal(store_commit(s), 0);
	char wal[160];
	snprintf(wal, sizeof(wal), "%s-wal", db_path);
	copy_file(db_path, tpl_db);
	copy_file(wal, tpl_wal);
	store_free(s);
}

static int group_setup(void **state)
{
	(void)state;
	size_t len;
	char path[512];
	const char *data = getenv("P1_TEST_DATA");
	const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
	snprintf(dir, sizeof(dir), "%s/p1d-test-oom-XXXXXX", base);
	assert_non_null(mkdtemp(dir));
	snprintf(db_path, sizeof(db_path), "%s/p1d.db", dir);
	snprintf(tpl_db, sizeof(tpl_db), "%s/template.db", dir);
	snprintf(tpl_wal, sizeof(tpl_wal), "%s/template.db-wal", dir);
	snprintf(path, sizeof(path), "%s/t2-dsmr5.txt", data ? data : "tests/data");
	t2_text = read_file(path, &len);
	assert_non_null(t2_text);

	struct config_error err = {0};
	cfg = config_new_defaults();
	assert_non_null(cfg);
	for (int mi = 0; mi < METERS; mi++) {
		const char *m = meter_names[mi];
		assert_int_equal(config_set_option(cfg, "meter", m, "file", "/dev/null", &err), 0);
		assert_int_equal(config_set_option(cfg, "meter", m, "pace", "fast", &err), 0);
	}
	free(cfg->mqtt.host);
	cfg->mqtt.host = strdup("127.0.0.1"); /* never connected: the loop does not run */
	assert_non_null(cfg->mqtt.host);
	assert_int_equal(loop_new(&loop), 0);
	log_set_target(LOG_TARGET_PLAIN);
	log_set_max_priority(LOG_CRIT);

	for (int mi = 0; mi < METERS; mi++)
		for (unsigned k = 0; k <= RUN_N; k++)
			run_len[mi][k] = make_frame(mi, TEMPLATE_N + k, run_frames[mi][k],
						    FRAME_MAX);
	memcpy(bad_frame, run_frames[0][BAD_AT], sizeof(bad_frame));
	bad_len = run_len[0][BAD_AT];
	*strstr(bad_frame, "*kWh") ^= 1; /* '*' becomes '+', the CRC stays: a CRC mismatch */

	struct p1_decoder_opts o;
	decoder_opts(&o);
	struct p1_decoder *dec = p1_decoder_new(&o);
	struct decoded d = {.json = next_json, .json_cap = sizeof(next_json)};
	assert_non_null(dec);
	p1_decoder_feed(dec, run_frames[0][RUN_N], run_len[0][RUN_N], on_decoded, &d);
	assert_int_equal(d.ok, 1);
	p1_decoder_feed(dec, bad_frame, bad_len, on_decoded, &d);
	assert_int_equal(d.bad, 1);
	p1_decoder_free(dec);

	make_template();
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	assert_int_equal(remove_tree(dir), 0);
	loop_free(loop);
	config_free(cfg);
	free(t2_text);
	return 0;
}

/* ---- parse: the decoder ------------------------------------------------------------- */

static const char *const decoder_files[] = {"t1-dsmr5-minimal.txt", "t2-dsmr5.txt",
					    "t3-fluvius.txt", "t4-dsmr22.txt"};
static char *stream;
static size_t stream_len;
static struct decoded decoder_want;
static char decoder_json[2][FRAME_MAX * 2];

static void decode_stream(struct p1_decoder *dec, struct decoded *d)
{
	p1_decoder_feed(dec, stream, stream_len, on_decoded, d);
	p1_decoder_flush(dec, on_decoded, d);
}

static bool run_decoder(unsigned long n)
{
	struct p1_decoder_opts o, ok;
	struct decoded d = {.json = decoder_json[1], .json_cap = sizeof(decoder_json[1])};
	decoder_opts(&o);
	ok = o;
	ok.have_key = true;
	memset(ok.key, 0x5a, sizeof(ok.key));
	oom_arm(n);
	struct p1_decoder *plain = p1_decoder_new(&o);
	struct p1_decoder *keyed = p1_decoder_new(&ok);
	unsigned long made = oom.calls;
	if (plain)
		decode_stream(plain, &d);
	bool failed = oom_disarm();

	assert_true((plain && keyed) || failed);
	assert_int_equal(oom.calls, made); /* no allocation per telegram */
	if (plain) {
		assert_int_equal(d.ok, decoder_want.ok);
		assert_int_equal(d.bad, decoder_want.bad);
		assert_string_equal(decoder_json[1], decoder_json[0]);
		memset(&d, 0, sizeof(d)); /* and again, disarmed */
		decode_stream(plain, &d);
		assert_int_equal(d.ok, decoder_want.ok);
	}
	p1_decoder_free(keyed);
	p1_decoder_free(plain);
	return failed;
}

static void test_decoder(void **state)
{
	(void)state;
	char path[512];
	const char *data = getenv("P1_TEST_DATA");
	size_t cap = 1 << 16;
	stream = malloc(cap);
	assert_non_null(stream);
	stream_len = 0;
	for (size_t i = 0; i < sizeof(decoder_files) / sizeof(decoder_files[0]); i++) {
		size_t len;
		snprintf(path, sizeof(path), "%s/%s", data ? data : "tests/data", decoder_files[i]);
		char *t = read_file(path, &len);
		assert_non_null(t);
		assert_true(stream_len + 2 * len < cap);
		memcpy(stream + stream_len, t, len);
		stream_len += len;
		free(t);
	}
	memcpy(stream + stream_len, bad_frame, bad_len); /* and a CRC error */
	stream_len += bad_len;

	struct p1_decoder_opts o;
	decoder_opts(&o);
	struct p1_decoder *dec = p1_decoder_new(&o);
	decoder_want = (struct decoded){.json = decoder_json[0],
					.json_cap = sizeof(decoder_json[0])};
	decode_stream(dec, &decoder_want);
	p1_decoder_free(dec);
	assert_int_equal(decoder_want.ok, 4);
	assert_int_equal(decoder_want.bad, 1);

	struct sweep_result r = sweep("decoder", run_decoder);
	if (!getenv("P1_OOM_ONLY"))
		assert_true(r.allocations >= 10);
	free(stream);
}

/* ---- the path: meters, store, MQTT ---------------------------------------------------- */

/* The database a run starts from: the template's (a crash: its WAL recovered, the readings
 * after the last aggregates replayed), or none (created, schema and all). */
static bool fresh_db;

/* What the runs of a sweep saw, for the summary line. */
static struct {
	unsigned long start_failed, dropped, commit_failed, queue_failed, quiet;
} seen;

struct world {
	struct meter *meter[METERS];
	struct store *store;
	struct mqtt *mqtt;
	int r_start, r_commit, r_sync, r_query, r_since;
	size_t json_len; /* main's JSON with the framing keys (the event stream's) */
	int64_t query_t1, since_n;
};

static int no_backfill(void *ud, const char *meter, int64_t after_utc, size_t max,
		       mqtt_emit_cb emit, void *ctx, int64_t *ret_complete_utc)
{
	(void)ud, (void)meter, (void)after_utc, (void)max, (void)emit, (void)ctx;
	(void)ret_complete_utc;
	fail_msg("backfill without a broker");
	return -EIO;
}

/* With P1_OOM_TRACE, in the run where nothing fails: the allocations of each step. */
static void step_done(const char *step)
{
	static unsigned long by[2];
	if (!oom.armed || oom.target != ULONG_MAX || !getenv("P1_OOM_TRACE"))
		return;
	if (step)
		printf("#   %s: %lu ours, %lu SQLite's\n", step, oom.by[OOM_OURS] - by[OOM_OURS],
		       oom.by[OOM_SQLITE] - by[OOM_SQLITE]);
	memcpy(by, oom.by, sizeof(by));
}

/* As main's start(): meters, then the store and its sinks, then MQTT. */
static int world_start(struct world *w)
{
	struct store_opts so = {.path = db_path, .commit_interval_ms = 60000, .raw_days = 7,
				.tz = tz};
	struct config_mqtt mc = cfg->mqtt;
	int r;
	mc.queue = MQTT_QUEUE_STORE_DEFAULT;
	step_done(NULL);
	for (int mi = 0; mi < METERS; mi++)
		if ((r = meter_new(loop, config_find_meter(cfg, meter_names[mi]), &tz,
				   &w->meter[mi])) < 0)
			return r;
	step_done("meter_new x2");
	if ((r = store_new(loop, &so, &w->store)) < 0)
		return r;
	for (int mi = 0; mi < METERS; mi++)
		if ((r = meter_add_sink(w->meter[mi], store_sink, w->store)) < 0)
			return r;
	step_done("store_new");
	if ((r = mqtt_new(loop, &mc, &w->mqtt)) < 0)
		return r;
	mqtt_set_backfill(w->mqtt, no_backfill, NULL);
	for (int mi = 0; mi < METERS; mi++)
		if ((r = mqtt_attach(w->mqtt, w->meter[mi])) < 0)
			return r;
	step_done("mqtt_new, mqtt_attach x2");
	return 0;
}

static void world_stop(struct world *w)
{
	mqtt_free(w->mqtt);
	store_free(w->store);
	for (int mi = METERS; mi-- > 0;)
		meter_free(w->meter[mi]);
}

static int sum_t1(void *ud, const struct store_bucket *b)
{
	*(int64_t *)ud += b->amount[STORE_E_DEL_T1];
	return 0;
}

static int count_reading(void *ud, const struct store_reading *r)
{
	(void)r;
	++*(int64_t *)ud;
	return 0;
}

struct readings {
	int mi;
	unsigned n, in_run; /* all of them, those of the run (after the template) */
	int64_t last_utc;
	unsigned first_run_g;
};

/* Every reading as the generator made it, oldest first, in its segment. */
static int check_reading(void *ud, const struct store_reading *r)
{
	struct readings *c = ud;
	assert_true(r->utc > c->last_utc);
	assert_int_equal((r->utc - T0_UTC) % STEP_S, 0);
	unsigned g = (unsigned)((r->utc - T0_UTC) / STEP_S);
	assert_true(g <= TEMPLATE_N + RUN_N);
	assert_true(fresh_db ? g >= TEMPLATE_N : true);
	assert_true(r->have & (1u << STORE_E_DEL_T1));
	assert_int_equal(r->reg[STORE_E_DEL_T1], t1_of(c->mi, g));
	assert_int_equal(r->segment, c->mi == 1 && g >= TEMPLATE_N && !fresh_db ? 1 : 0);
	if (g >= TEMPLATE_N && !c->in_run++)
		c->first_run_g = g;
	c->n++;
	c->last_utc = r->utc;
	return 0;
}

/* After the run: the history has every reading the store took (queued, or any number of the
 * run's with UINT64_MAX), the energy of each meter adds up to its register differences (the
 * template's too), and only the swap started a segment. */
static void check_history(struct store *s, uint64_t queued)
{
	unsigned in_run = 0;
	for (int mi = 0; mi < METERS; mi++) {
		struct readings c = {.mi = mi};
		int n = store_readings_since(s, meter_names[mi], 0, 100000, check_reading, &c);
		assert_int_equal(n, (int)c.n);
		assert_int_equal(c.n - c.in_run, fresh_db ? 0 : TEMPLATE_N);
		assert_int_equal(c.last_utc, utc_of(TEMPLATE_N + RUN_N)); /* the next telegram */
		in_run += c.in_run;
		int64_t sum = 0, last = t1_of(mi, TEMPLATE_N + RUN_N);
		int64_t want = last - t1_of(mi, 0);
		if (fresh_db)
			want = last - t1_of(mi, c.first_run_g);
		else if (mi == 1) /* nothing is counted across the swap */
			want = t1_of(mi, TEMPLATE_N - 1) - t1_of(mi, 0) + last -
			       t1_of(mi, c.first_run_g);
		assert_true(store_query_history(s, meter_names[mi], STORE_RES_HOUR, T0_UTC - 86400,
						T0_UTC + 86400, sum_t1, &sum) > 0);
		assert_int_equal(sum, want);
		sum = 0;
		assert_true(store_query_history(s, meter_names[mi], STORE_RES_MINUTE,
						T0_UTC - 86400, T0_UTC + 86400, sum_t1, &sum) > 0);
		assert_int_equal(sum, want);
	}
	if (queued != UINT64_MAX)
		assert_int_equal(in_run, queued);
}

/* The segments table, read with a connection of our own once the store is closed. */
static void check_segments(void)
{
	sqlite3 *db;
	sqlite3_stmt *st;
	static const char *const want[][3] = {{"main", "0", "first"},
					      {"swap", "0", "first"},
					      {"swap", "1", "equipment id changed"}};
	size_t n_want = fresh_db ? 2 : 3, i = 0;
	assert_int_equal(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db,
					    "SELECT m.name, s.seq, s.reason FROM segments s JOIN "
					    "meters m ON m.id = s.meter_id ORDER BY m.name, s.seq",
					    -1, &st, NULL),
			 SQLITE_OK);
	while (sqlite3_step(st) == SQLITE_ROW) {
		assert_true(i < n_want);
		for (int c = 0; c < 3; c++)
			assert_string_equal((const char *)sqlite3_column_text(st, c), want[i][c]);
		i++;
	}
	assert_int_equal(i, n_want);
	sqlite3_finalize(st);
	sqlite3_close(db);
}

/* A database moved aside as corrupt: never because memory ran out. */
static bool corrupt_file_exists(void)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	bool found = false;
	assert_non_null(d);
	while ((e = readdir(d)))
		found |= strstr(e->d_name, "corrupt") != NULL;
	closedir(d);
	return found;
}

static void feed(struct world *w, unsigned k)
{
	for (int mi = 0; mi < METERS; mi++)
		meter_feed(w->meter[mi], (const uint8_t *)run_frames[mi][k], run_len[mi][k]);
}

/* The telegrams of a run, under the countdown. */
static void run_telegrams(struct world *w)
{
	const char *json;
	for (unsigned k = 0; k < RUN_N; k++) {
		feed(w, k);
		if (k == BAD_AT)
			meter_feed(w->meter[0], (const uint8_t *)bad_frame, bad_len);
		if (k == COMMIT_AT) {
			step_done("telegrams");
			w->r_commit = store_commit(w->store);
			step_done("commit");
		}
	}
	step_done("telegrams");
	w->json_len = meter_latest_json(w->meter[0], P1_JSON_ALL, &json);
	step_done("event stream JSON");
	/* with the minutes of 14:00 still in memory, and readings waiting for the commit */
	w->r_query = store_query_history(w->store, "main", STORE_RES_MINUTE, T0_UTC,
					 T0_UTC + 86400, sum_t1, &w->query_t1);
	step_done("history query");
	w->r_since = store_readings_since(w->store, "swap", 0, 100000, count_reading,
					  &w->since_n);
	step_done("readings since");
	w->r_sync = store_sync(w->store);
	step_done("sync");
}

/* What the armed part of a run did: said, counted, and only when an allocation failed. */
static void check_run(struct world *w, bool failed, const char *log, uint64_t *ret_telegrams)
{
	struct meter_stats ms;
	struct store_stats ss;
	struct mqtt_stats qs;
	uint64_t telegrams = 0;
	for (int mi = 0; mi < METERS; mi++) {
		meter_get_stats(w->meter[mi], &ms);
		assert_int_equal(ms.telegrams, RUN_N); /* decoding never allocates */
		assert_int_equal(ms.errors[P1_ERR_CRC], mi == 0 ? 1 : 0);
		assert_int_equal(ms.rejected, mi == 0 ? 1 : 0);
		telegrams += ms.telegrams;
	}
	assert_non_null(strstr(log, "meter main: CRC mismatch"));
	assert_true(w->json_len > 0 || failed); /* 0: out of memory */
	store_get_stats(w->store, &ss);
	assert_int_equal(ss.ignored, 0);
	assert_int_equal(ss.queued + ss.dropped, telegrams); /* every reading taken or counted */
	if (ss.dropped) {
		assert_true(failed);
		assert_non_null(strstr(log, "dropping a reading"));
		seen.dropped++;
	}
	if (w->r_commit < 0 || w->r_sync < 0) {
		assert_true(failed);
		assert_true(strstr(log, "commit failed") || strstr(log, "cannot open"));
		seen.commit_failed++;
	}
	if (strstr(log, "commit failed"))
		assert_true(ss.commit_failures > 0);
	assert_true(w->r_query >= 0 || (failed && w->r_query == -ENOMEM));
	assert_true(w->r_since >= 0 || (failed && w->r_since == -ENOMEM));
	if (w->r_since >= 0)
		assert_int_equal(w->r_since, w->since_n);
	mqtt_get_stats(w->mqtt, &qs);
	/* with a store, a state message that could not be queued is sent from the history */
	assert_int_equal(qs.waiting, telegrams);
	assert_int_equal(qs.dropped, 0);
	if (qs.queued != telegrams) {
		assert_true(failed);
		assert_non_null(strstr(log, "cannot queue a state message"));
		seen.queue_failed++;
	}
	if (failed && !ss.dropped && w->r_commit == 0 && w->r_sync == 0 && qs.queued == telegrams &&
	    w->r_query >= 0 && w->r_since >= 0 && w->json_len)
		seen.quiet++; /* SQLite took it (a cache page it did without, ...) */
	*ret_telegrams = telegrams;
}

static bool run_path(unsigned long n)
{
	struct world w = {0};
	char path[160];
	snprintf(path, sizeof(path), "%s-shm", db_path);
	unlink(path);
	snprintf(path, sizeof(path), "%s-wal", db_path);
	unlink(path);
	unlink(db_path);
	if (!fresh_db) {
		copy_file(tpl_db, db_path);
		copy_file(tpl_wal, path);
	}

	capture_start();
	oom_arm(n);
	w.r_start = world_start(&w);
	if (!w.r_start)
		run_telegrams(&w);
	bool failed = oom_disarm();
	const char *log = capture_end();
	if ((!failed && strstr(log, "error:")) || getenv("P1_OOM_ONLY"))
		print_message("%s", log);

	if (w.r_start) { /* main gives up: p1d does not start */
		assert_true(failed);
		assert_int_equal(w.r_start, -ENOMEM);
		world_stop(&w);
		assert_false(corrupt_file_exists());
		seen.start_failed++;
		return failed;
	}
	uint64_t telegrams;
	check_run(&w, failed, log, &telegrams);

	/* disarmed, the same objects go on: the next telegram is decoded, rendered, queued,
	 * stored, committed and read back */
	feed(&w, RUN_N);
	const char *json;
	size_t len = meter_latest_json(w.meter[0], P1_JSON_ALL & ~(unsigned)P1_JSON_FRAMING, &json);
	assert_int_equal(len, strlen(next_json));
	assert_string_equal(json, next_json);
	assert_true(meter_latest_json(w.meter[0], P1_JSON_ALL, &json) > len);
	assert_int_equal(store_sync(w.store), 0);
	struct store_stats ss;
	struct mqtt_stats qs;
	store_get_stats(w.store, &ss);
	assert_true(ss.healthy);
	assert_int_equal(ss.backlog, 0);
	assert_int_equal(ss.queued + ss.dropped, telegrams + METERS);
	check_history(w.store, ss.queued);
	mqtt_get_stats(w.mqtt, &qs);
	assert_int_equal(qs.waiting, telegrams + METERS);
	world_stop(&w);
	check_segments();
	assert_false(corrupt_file_exists());
	return failed;
}

/* p1d stops with memory short: the last commit may fail (its readings are lost, said in the
 * log), nothing leaks, and the next start goes on from the database as it is. */
static bool run_stop(unsigned long n)
{
	struct world w = {0};
	char path[160];
	snprintf(path, sizeof(path), "%s-shm", db_path);
	unlink(path);
	snprintf(path, sizeof(path), "%s-wal", db_path);
	copy_file(tpl_db, db_path);
	copy_file(tpl_wal, path);
	assert_int_equal(world_start(&w), 0);
	for (unsigned k = 0; k < RUN_N; k++) {
		feed(&w, k);
		if (k == COMMIT_AT)
			assert_int_equal(store_commit(w.store), 0);
	}
	capture_start();
	oom_arm(n);
	world_stop(&w);
	bool failed = oom_disarm();
	const char *log = capture_end();
	if ((!failed && strstr(log, "error:")) || getenv("P1_OOM_ONLY"))
		print_message("%s", log);
	if (strstr(log, "could not be written"))
		assert_true(failed);
	assert_false(corrupt_file_exists());

	memset(&w, 0, sizeof(w));
	assert_int_equal(world_start(&w), 0);
	feed(&w, RUN_N);
	assert_int_equal(store_sync(w.store), 0);
	check_history(w.store, UINT64_MAX);
	world_stop(&w);
	check_segments();
	return failed;
}

static void test_stop(void **state)
{
	(void)state;
	fresh_db = false;
	sweep("stop", run_stop);
}

static void path_sweep(const char *what)
{
	memset(&seen, 0, sizeof(seen));
	struct sweep_result r = sweep(what, run_path);
	printf("# %s: runs where p1d did not start %lu, the store dropped a reading %lu, a "
	       "commit failed %lu, MQTT could not queue %lu, nothing showed %lu\n",
	       what, seen.start_failed, seen.dropped, seen.commit_failed, seen.queue_failed,
	       seen.quiet);
	if (!getenv("P1_OOM_ONLY")) {
		assert_true(r.by[OOM_OURS] >= 20);
		assert_true(r.by[OOM_SQLITE] >= 100);
	}
}

static void test_path(void **state)
{
	(void)state;
	fresh_db = false;
	path_sweep("path");
}

static void test_path_new_database(void **state)
{
	(void)state;
	fresh_db = true;
	path_sweep("path, new database");
}

int main(void)
{
	const char *full = getenv("P1_OOM_FULL");
	const char *persist = getenv("P1_OOM_PERSIST");
	oom_full = full && *full && strcmp(full, "0");
	oom_persist_mode = persist && *persist && strcmp(persist, "0");
	sqlite_countdown();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_decoder, sweep_teardown),
		cmocka_unit_test_teardown(test_path, sweep_teardown),
		cmocka_unit_test_teardown(test_path_new_database, sweep_teardown),
		cmocka_unit_test_teardown(test_stop, sweep_teardown),
	};
	int r = cmocka_run_group_tests(tests, group_setup, group_teardown);
	if (r == 0 && !oom_persist_mode) {
		oom_persist_mode = true;
		r = cmocka_run_group_tests(tests, group_setup, group_teardown);
	}
	return r;
}
