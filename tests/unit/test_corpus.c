/* test_corpus.c - conformance over the shared corpus of real telegrams named by
 * $P1_SHARED_TELEGRAMS (read in place, never copied; every test is skipped when the variable
 * is unset or the directory is missing). See the corpus README for what each folder holds.
 *
 * - dialect folders: every file decodes to exactly one valid telegram and no invalid frame,
 *   in any chunking; its JSON is valid JSON; the detected dialect is the folder's; energy
 *   registers, power and gas are present with the value written in the file; every known line
 *   is read (no P1_WARN_BAD_VALUE);
 * - bad-crc/: every frame rejected with P1_ERR_CRC, no valid telegram;
 * - malformed/: no valid telegram, no crash (run this under ASan/UBSan);
 * - streams/: exactly the frames whose CRC this test verifies itself with p1_crc16 over
 *   '/'..'!' come out valid, at their offsets;
 * - encrypted/: decrypted with the key (and AAD) of the .key file beside each .bin, through
 *   p1_decoder when the AAD is 0x30 || AK, with OpenSSL directly when the file says the tag is
 *   over an empty AAD; the plaintext decodes valid when its own CRC is right.
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "p1/crc16.h"
#include "p1/decoder.h"
#include "p1/dlms.h"
#include "p1/json.h"
#include "p1/telegram.h"

#include "unit_util.h"

#define JSON_CAP (256 * 1024)
#define MAX_FILES 256

static const char *const dialect_folders[] = {
        "dsmr2.2-3", "dsmr4",       "dsmr5",    "fluvius-emucs", "smarty-lu",     "sweden",
        "austria",   "hungary-eon", "iskra-ie", "ace4000",       "easymeter-q3d",
};

/* ---- files ---- */

static const char *corpus(void)
{
	static char dir[4096];
	const char *env = getenv("P1_SHARED_TELEGRAMS");
	struct stat st;
	if (!env || !*env) {
		print_message("P1_SHARED_TELEGRAMS not set, skipping the corpus\n");
		skip();
	}
	if (stat(env, &st) || !S_ISDIR(st.st_mode)) {
		print_message("%s not found, skipping the corpus\n", env);
		skip();
	}
	snprintf(dir, sizeof(dir), "%s", env);
	return dir;
}

/* read_file() (unit_util.h), failing the test when the file cannot be read. */
static void *read_file_or_fail(const char *path, size_t *ret_len)
{
	void *p = read_file(path, ret_len);
	if (!p)
		fail_msg("cannot open %s", path);
	return p;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted names of the files in dir/folder ending in ext; returns the count. */
static size_t list(const char *dir, const char *folder, const char *ext, char **names)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", dir, folder);
	DIR *d = opendir(path);
	if (!d)
		fail_msg("corpus folder %s missing", path);
	size_t n = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		size_t k = strlen(e->d_name), x = strlen(ext);
		if (e->d_name[0] == '.' || k <= x || strcmp(e->d_name + k - x, ext))
			continue;
		assert_true(n < MAX_FILES);
		names[n++] = strdup(e->d_name);
	}
	closedir(d);
	qsort(names, n, sizeof(*names), cmp_str);
	return n;
}

static void free_names(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
}

/* ---- a tiny JSON validator (RFC 8259 grammar) ---- */

static const char *js_ws(const char *p)
{
	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
		p++;
	return p;
}

static const char *js_value(const char *p, int depth);

static const char *js_string(const char *p)
{
	if (*p++ != '"')
		return NULL;
	for (;;) {
		unsigned char c = (unsigned char)*p++;
		if (c == '"')
			return p;
		if (c < 0x20)
			return NULL;
		if (c == '\\') {
			c = (unsigned char)*p++;
			if (c == 'u') {
				for (int i = 0; i < 4; i++, p++)
					if (!((*p >= '0' && *p <= '9') ||
					      (*p >= 'a' && *p <= 'f') || (*p >= 'A' && *p <= 'F')))
						return NULL;
			} else if (!strchr("\"\\/bfnrt", c) || !c) {
				return NULL;
			}
		}
	}
}

static const char *js_number(const char *p)
{
	if (*p == '-')
		p++;
	if (*p == '0')
		p++;
	else if (*p >= '1' && *p <= '9')
		while (*p >= '0' && *p <= '9')
			p++;
	else
		return NULL;
	if (*p == '.') {
		p++;
		if (!(*p >= '0' && *p <= '9'))
			return NULL;
		while (*p >= '0' && *p <= '9')
			p++;
	}
	if (*p == 'e' || *p == 'E') {
		p++;
		if (*p == '+' || *p == '-')
			p++;
		if (!(*p >= '0' && *p <= '9'))
			return NULL;
		while (*p >= '0' && *p <= '9')
			p++;
	}
	return p;
}

static const char *js_value(const char *p, int depth)
{
	if (depth > 64)
		return NULL;
	p = js_ws(p);
	switch (*p) {
	case '{':
		p = js_ws(p + 1);
		if (*p == '}')
			return p + 1;
		for (;;) {
			if (!(p = js_string(js_ws(p))))
				return NULL;
			p = js_ws(p);
			if (*p++ != ':')
				return NULL;
			if (!(p = js_value(p, depth + 1)))
				return NULL;
			p = js_ws(p);
			if (*p == '}')
				return p + 1;
			if (*p++ != ',')
				return NULL;
		}
	case '[':
		p = js_ws(p + 1);
		if (*p == ']')
			return p + 1;
		for (;;) {
			if (!(p = js_value(p, depth + 1)))
				return NULL;
			p = js_ws(p);
			if (*p == ']')
				return p + 1;
			if (*p++ != ',')
				return NULL;
		}
	case '"':
		return js_string(p);
	case 't':
		return strncmp(p, "true", 4) ? NULL : p + 4;
	case 'f':
		return strncmp(p, "false", 5) ? NULL : p + 5;
	case 'n':
		return strncmp(p, "null", 4) ? NULL : p + 4;
	default:
		return js_number(p);
	}
}

static bool json_valid(const char *s)
{
	const char *end = js_value(s, 0);
	return end && *js_ws(end) == 0;
}

/* The validator itself. */
static void test_json_validator(void **state)
{
	(void)state;
	static const char *const good[] = {
	        "{}",
	        "[]",
	        "{\"a\":1}",
	        "{\"a\":[1,-2.5,3e4,true,false,null,\"x\\\"\\u00e9\"]}",
	        " { \"a\" : { \"b\" : [ ] } } ",
	        "0",
	        "-0.000",
	};
	static const char *const bad[] = {
	        "",   "{",        "{\"a\":}", "{\"a\":1,}", "[1,]", "{a:1}",   "01", "1.",
	        ".5", "\"\x01\"", "\"\\x\"",  "{\"a\":1}}", "nul",  "[\"abc]", "+1", "{\"a\" 1}",
	};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		if (!json_valid(good[i]))
			fail_msg("valid JSON rejected: %s", good[i]);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (json_valid(bad[i]))
			fail_msg("invalid JSON accepted: %s", bad[i]);
}

/* ---- decoding a file ---- */

struct tele {
	enum p1_dialect dialect;
	uint32_t warnings;
	uint64_t offset;
	bool encrypted, json_ok;
	struct p1_value fields[P1_FIELD_COUNT];
	char *json;
	char unknown[512];
};

struct run {
	unsigned valid, invalid;
	enum p1_error errors[64];
	uint64_t err_offsets[64];
	struct tele t[64];
	char *json;
	/* copies of the formatted numbers, since the telegram is only valid during the callback */
	char nums[64][P1_FIELD_COUNT][48];
};

static void on_result(void *ud, const struct p1_result *r)
{
	struct run *run = ud;
	if (r->error != P1_OK) {
		if (run->invalid < 64) {
			run->errors[run->invalid] = r->error;
			run->err_offsets[run->invalid] = r->offset;
		}
		run->invalid++;
		return;
	}
	if (run->valid >= 64) {
		run->valid++;
		return;
	}
	const struct p1_telegram *t = r->telegram;
	struct tele *x = &run->t[run->valid];
	size_t need = p1_json_telegram(t, P1_JSON_ALL, run->json, JSON_CAP);
	assert_true(need < JSON_CAP);
	*x = (struct tele){.dialect = t->dialect,
	                   .warnings = t->warnings,
	                   .offset = r->offset,
	                   .encrypted = t->encrypted};
	x->json = strdup(run->json);
	x->json_ok = json_valid(run->json);
	memcpy(x->fields, t->fields, sizeof(x->fields));
	for (int f = 0; f < P1_FIELD_COUNT; f++) {
		run->nums[run->valid][f][0] = 0;
		if (t->fields[f].presence == P1_PRESENT &&
		    p1_field_info((enum p1_field)f)->kind == P1_KIND_NUMBER)
			p1_num_format(&t->fields[f].num, run->nums[run->valid][f], 48);
		/* pointers into the telegram do not outlive the callback */
		memset(&x->fields[f].text, 0, sizeof(x->fields[f].text));
	}
	size_t k = 0;
	for (unsigned i = 0; i < t->n_unknown && k + 40 < sizeof(x->unknown); i++)
		k += (size_t)snprintf(x->unknown + k, sizeof(x->unknown) - k, "%s%s", i ? " " : "",
		                      t->unknown[i].obis);
	run->valid++;
}

static void run_free(struct run *run)
{
	for (unsigned i = 0; i < run->valid && i < 64; i++)
		free(run->t[i].json);
	free(run->json);
	free(run);
}

/* Decode len bytes fed in pieces of chunk bytes (0: all at once). */
static struct run *decode(const uint8_t *p, size_t len, size_t chunk,
                          const struct p1_decoder_opts *opts)
{
	struct p1_decoder_opts o;
	if (opts)
		o = *opts;
	else
		p1_decoder_opts_init(&o);
	struct p1_decoder *d = p1_decoder_new(&o);
	assert_non_null(d);
	struct run *run = calloc(1, sizeof(*run));
	run->json = malloc(JSON_CAP);
	if (!chunk)
		chunk = len ? len : 1;
	for (size_t at = 0; at < len; at += chunk)
		p1_decoder_feed(d, p + at, len - at < chunk ? len - at : chunk, on_result, run);
	p1_decoder_flush(d, on_result, run);
	p1_decoder_free(d);
	return run;
}

static const char *errors_str(const struct run *run)
{
	static char buf[512];
	size_t k = 0;
	buf[0] = 0;
	for (unsigned i = 0; i < run->invalid && i < 64 && k + 32 < sizeof(buf); i++)
		k += (size_t)snprintf(buf + k, sizeof(buf) - k, "%s%s@%llu", i ? "," : "",
		                      p1_error_id(run->errors[i]),
		                      (unsigned long long)run->err_offsets[i]);
	return buf;
}

/* ---- dialect folders ---- */

static void test_dialect_folders(void **state)
{
	(void)state;
	const char *dir = corpus();
	unsigned files = 0, failures = 0;
	for (size_t fi = 0; fi < sizeof(dialect_folders) / sizeof(dialect_folders[0]); fi++) {
		char *names[MAX_FILES];
		size_t n = list(dir, dialect_folders[fi], ".txt", names);
		assert_true(n > 0);
		for (size_t i = 0; i < n; i++) {
			char path[4096];
			snprintf(path, sizeof(path), "%s/%s/%s", dir, dialect_folders[fi],
			         names[i]);
			size_t len;
			uint8_t *p = read_file_or_fail(path, &len);
			struct run *whole = decode(p, len, 0, NULL);
			files++;
			if (whole->valid != 1 || whole->invalid != 0) {
				print_message("%s/%s: %u valid, %u invalid (%s)\n",
				              dialect_folders[fi], names[i], whole->valid,
				              whole->invalid, errors_str(whole));
				failures++;
			} else if (!whole->t[0].json_ok) {
				print_message("%s/%s: invalid JSON: %s\n", dialect_folders[fi],
				              names[i], whole->t[0].json);
				failures++;
			} else {
				/* P2: the same telegram in any chunking */
				static const size_t chunks[] = {1, 2, 3, 7, 16, 64, 333};
				for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
					struct run *r = decode(p, len, chunks[c], NULL);
					if (r->valid != 1 || r->invalid != 0 ||
					    strcmp(r->t[0].json, whole->t[0].json)) {
						print_message("%s/%s: differs in chunks of %zu\n",
						              dialect_folders[fi], names[i],
						              chunks[c]);
						failures++;
					}
					run_free(r);
				}
			}
			run_free(whole);
			free(p);
		}
		free_names(names, n);
	}
	print_message("%u files in dialect folders\n", files);
	assert_true(files >= 60);
	if (failures)
		fail_msg("%u failures in dialect folders", failures);
}

static const char *expected_dialect(const char *folder, const char *text)
{
	static const struct {
		const char *folder, *dialect;
	} map[] = {
	        {"dsmr2.2-3", "dsmr22"},        {"dsmr5", "dsmr5"},
	        {"fluvius-emucs", "fluvius"},   {"smarty-lu", "smarty"},
	        {"sweden", "sweden"},           {"hungary-eon", "hungary"},
	        {"easymeter-q3d", "easymeter"}, {"ace4000", "ace4000"},
	};
	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
		if (!strcmp(folder, map[i].folder))
			return map[i].dialect;
	if (!strcmp(folder, "dsmr4") && strstr(text, "1-3:0.2.8(4"))
		return "dsmr4";
	return NULL; /* reported only */
}

static void test_dialect_detection(void **state)
{
	(void)state;
	const char *dir = corpus();
	unsigned failures = 0, checked = 0;
	for (size_t fi = 0; fi < sizeof(dialect_folders) / sizeof(dialect_folders[0]); fi++) {
		char *names[MAX_FILES];
		size_t n = list(dir, dialect_folders[fi], ".txt", names);
		for (size_t i = 0; i < n; i++) {
			char path[4096];
			snprintf(path, sizeof(path), "%s/%s/%s", dir, dialect_folders[fi],
			         names[i]);
			size_t len;
			uint8_t *p = read_file_or_fail(path, &len);
			struct run *r = decode(p, len, 0, NULL);
			const char *want = expected_dialect(dialect_folders[fi], (const char *)p);
			const char *got = r->valid ? p1_dialect_name(r->t[0].dialect) : "(none)";
			if (!want) {
				print_message("note: %s/%s detected as %s\n", dialect_folders[fi],
				              names[i], got);
			} else {
				checked++;
				if (strcmp(want, got)) {
					print_message("%s/%s: dialect %s, expected %s\n",
					              dialect_folders[fi], names[i], got, want);
					failures++;
				}
			}
			run_free(r);
			free(p);
		}
		free_names(names, n);
	}
	assert_true(checked >= 55);
	if (failures)
		fail_msg("%u files with the wrong dialect", failures);
}

/* "-000123.4560" -> "-123.4560"; "" when s does not start with a number. */
static void norm_num(const char *s, size_t n, char *out, size_t cap)
{
	size_t i = 0, k = 0;
	bool neg = false, nonzero = false;
	while (i < n && s[i] == ' ')
		i++;
	if (i < n && (s[i] == '-' || s[i] == '+'))
		neg = s[i++] == '-';
	size_t start = i;
	while (i < n && ((s[i] >= '0' && s[i] <= '9') || s[i] == '.')) {
		nonzero |= s[i] >= '1' && s[i] <= '9';
		i++;
	}
	if (i == start || cap < 4) {
		out[0] = 0;
		return;
	}
	/* drop leading zeros of the integer part */
	while (start + 1 < i && s[start] == '0' && s[start + 1] != '.')
		start++;
	if (neg && nonzero)
		out[k++] = '-';
	for (; start < i && k + 1 < cap; start++)
		out[k++] = s[start];
	out[k] = 0;
}

static bool num_is_zero(const char *norm)
{
	for (; *norm; norm++)
		if (*norm >= '1' && *norm <= '9')
			return false;
	return true;
}

/* The first line of text that starts with code (optionally followed by a .255 or *255
 * suffix) and a '('; returns the start of its first group's content, or NULL. */
static const char *find_line(const char *text, const char *code)
{
	size_t cl = strlen(code);
	for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		if (strncmp(p, code, cl))
			continue;
		const char *q = p + cl;
		if (!strncmp(q, "*255", 4) || !strncmp(q, ".255", 4))
			q += 4;
		if (*q == '(')
			return q + 1;
	}
	return NULL;
}

/* The last group of the logical line whose first group starts at g (continuation lines that
 * begin with '(' included). */
static const char *last_group(const char *g, size_t *ret_len)
{
	const char *last = g;
	const char *p = g;
	for (;;) {
		const char *close = strchr(p, ')');
		if (!close)
			break;
		const char *next = close + 1;
		while (*next == '\r' || *next == '\n' || *next == ' ')
			next++;
		if (*next != '(') {
			*ret_len = (size_t)(close - last);
			return last;
		}
		last = p = next + 1;
	}
	*ret_len = 0;
	return last;
}

static void test_key_fields(void **state)
{
	(void)state;
	static const struct {
		const char *code;
		enum p1_field field;
	} keys[] = {
	        {"1-0:1.8.0", P1_F_E_DEL_TOTAL}, {"1-0:1.8.1", P1_F_E_DEL_T1},
	        {"1-0:1.8.2", P1_F_E_DEL_T2},    {"1-0:2.8.0", P1_F_E_RET_TOTAL},
	        {"1-0:2.8.1", P1_F_E_RET_T1},    {"1-0:2.8.2", P1_F_E_RET_T2},
	        {"1-0:1.7.0", P1_F_P_DEL},       {"1-0:2.7.0", P1_F_P_RET},
	};
	const char *dir = corpus();
	unsigned failures = 0, checked = 0, gas_checked = 0;
	for (size_t fi = 0; fi < sizeof(dialect_folders) / sizeof(dialect_folders[0]); fi++) {
		char *names[MAX_FILES];
		size_t n = list(dir, dialect_folders[fi], ".txt", names);
		for (size_t i = 0; i < n; i++) {
			char path[4096];
			snprintf(path, sizeof(path), "%s/%s/%s", dir, dialect_folders[fi],
			         names[i]);
			size_t len;
			char *text = read_file_or_fail(path, &len);
			struct run *r = decode((uint8_t *)text, len, 0, NULL);
			if (r->valid != 1) {
				run_free(r);
				free(text);
				continue; /* reported by test_dialect_folders */
			}
			const struct tele *t = &r->t[0];
			for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
				const char *g = find_line(text, keys[k].code);
				if (!g || *g == ')')
					continue;
				char want[64];
				norm_num(g, strcspn(g, "*)"), want, sizeof(want));
				checked++;
				if (t->fields[keys[k].field].presence != P1_PRESENT) {
					print_message(
					        "%s/%s: %s present in the file, %s not decoded\n",
					        dialect_folders[fi], names[i], keys[k].code,
					        p1_field_info(keys[k].field)->name);
					failures++;
				} else if (strcmp(r->nums[0][keys[k].field], want)) {
					print_message("%s/%s: %s is %s in the file, decoded %s\n",
					              dialect_folders[fi], names[i], keys[k].code,
					              want, r->nums[0][keys[k].field]);
					failures++;
				}
			}
			/* gas: the first gas channel (device type 3) with a reading */
			bool has_gas = false;
			char want[64] = "";
			for (int ch = 1; ch <= 4 && !want[0]; ch++) {
				char code[32];
				snprintf(code, sizeof(code), "0-%d:24.1.0", ch);
				const char *g = find_line(text, code);
				if (!g || strtol(g, NULL, 10) != 3 ||
				    g[strspn(g, "0123456789")] != ')')
					continue;
				static const char *const vals[] = {"24.2.1", "24.2.3", "24.3.0"};
				for (int v = 0; v < 3 && !want[0]; v++) {
					snprintf(code, sizeof(code), "0-%d:%s", ch, vals[v]);
					if (!(g = find_line(text, code)))
						continue;
					has_gas = true; /* a gas meter with a value line */
					size_t gl;
					const char *lg = last_group(g, &gl);
					norm_num(lg, strcspn(lg, "*)"), want, sizeof(want));
					if (num_is_zero(want))
						want[0] = 0; /* no reading */
				}
			}
			if (has_gas) {
				gas_checked++;
				if (t->fields[P1_F_GAS].presence == P1_ABSENT) {
					print_message("%s/%s: gas reading line in the file, "
					              "gas_delivered absent\n",
					              dialect_folders[fi], names[i]);
					failures++;
				} else if (want[0] && (t->fields[P1_F_GAS].presence != P1_PRESENT ||
				                       strcmp(r->nums[0][P1_F_GAS], want))) {
					print_message(
					        "%s/%s: gas reading %s in the file, decoded %s\n",
					        dialect_folders[fi], names[i], want,
					        t->fields[P1_F_GAS].presence == P1_PRESENT
					                ? r->nums[0][P1_F_GAS]
					                : "null");
					failures++;
				}
			}
			run_free(r);
			free(text);
		}
		free_names(names, n);
	}
	print_message("%u register/power values and %u gas meters checked\n", checked, gas_checked);
	assert_true(checked >= 300);
	assert_true(gas_checked >= 35);
	if (failures)
		fail_msg("%u key fields missing or wrong", failures);
}

/* Files whose unread lines are not the parser's fault, with the reason. */
static const struct {
	const char *file, *why;
} unread_ok[] = {
        {"dsmr5/dsmrparser-net-2.txt",
         "edited file: M-Bus device types 303, 909, 808, 101 are not EN 13757-3 medium codes"},
};

static void test_every_line_read(void **state)
{
	(void)state;
	const char *dir = corpus();
	unsigned failures = 0;
	for (size_t fi = 0; fi < sizeof(dialect_folders) / sizeof(dialect_folders[0]); fi++) {
		char *names[MAX_FILES];
		size_t n = list(dir, dialect_folders[fi], ".txt", names);
		for (size_t i = 0; i < n; i++) {
			char path[4096], rel[512];
			snprintf(path, sizeof(path), "%s/%s/%s", dir, dialect_folders[fi],
			         names[i]);
			snprintf(rel, sizeof(rel), "%s/%s", dialect_folders[fi], names[i]);
			size_t len;
			uint8_t *p = read_file_or_fail(path, &len);
			struct run *r = decode(p, len, 0, NULL);
			if (r->valid == 1 && (r->t[0].warnings & P1_WARN_BAD_VALUE)) {
				const char *why = NULL;
				for (size_t k = 0; k < sizeof(unread_ok) / sizeof(unread_ok[0]);
				     k++)
					if (!strcmp(rel, unread_ok[k].file))
						why = unread_ok[k].why;
				if (why) {
					print_message("note: %s: lines not read (%s): %s\n", rel,
					              why, r->t[0].unknown);
				} else {
					print_message(
					        "%s: known lines not read, kept as unknown: %s\n",
					        rel, r->t[0].unknown);
					failures++;
				}
			}
			run_free(r);
			free(p);
		}
		free_names(names, n);
	}
	if (failures)
		fail_msg("%u files with known lines the parser could not read", failures);
}

/* ---- bad-crc, malformed ---- */

static void test_bad_crc(void **state)
{
	(void)state;
	const char *dir = corpus();
	char *names[MAX_FILES];
	size_t n = list(dir, "bad-crc", ".txt", names);
	assert_true(n >= 20);
	unsigned failures = 0;
	for (size_t i = 0; i < n; i++) {
		char path[4096];
		snprintf(path, sizeof(path), "%s/bad-crc/%s", dir, names[i]);
		size_t len;
		uint8_t *p = read_file_or_fail(path, &len);
		struct run *r = decode(p, len, 0, NULL);
		bool all_crc = r->invalid > 0;
		for (unsigned k = 0; k < r->invalid && k < 64; k++)
			all_crc &= r->errors[k] == P1_ERR_CRC;
		if (r->valid || !all_crc) {
			print_message("bad-crc/%s: %u valid, %u rejected (%s)\n", names[i],
			              r->valid, r->invalid, errors_str(r));
			failures++;
		}
		run_free(r);
		free(p);
	}
	free_names(names, n);
	if (failures)
		fail_msg("%u bad-crc files not rejected as CRC errors", failures);
}

static void test_malformed(void **state)
{
	(void)state;
	const char *dir = corpus();
	char *names[MAX_FILES];
	size_t n = list(dir, "malformed", ".txt", names);
	assert_true(n >= 1);
	for (size_t i = 0; i < n; i++) {
		char path[4096];
		snprintf(path, sizeof(path), "%s/malformed/%s", dir, names[i]);
		size_t len;
		uint8_t *p = read_file_or_fail(path, &len);
		for (size_t chunk = 0; chunk <= 64; chunk += chunk ? chunk : 1) {
			struct run *r = decode(p, len, chunk, NULL);
			if (r->valid)
				fail_msg("malformed/%s (chunks of %zu): %u valid telegram(s): %s",
				         names[i], chunk, r->valid, r->t[0].json);
			if (!chunk)
				print_message("malformed/%s: rejected: %s\n", names[i],
				              r->invalid ? errors_str(r) : "(no frame)");
			run_free(r);
		}
		free(p);
	}
	free_names(names, n);
}

/* ---- streams ---- */

/* Start offsets of the frames in p whose CRC verifies: '/' ... '!' at a line start, 1-4 hex
 * digits after it. */
static size_t crc_frames(const uint8_t *p, size_t n, uint64_t *starts, size_t max)
{
	size_t found = 0;
	size_t last_bang = 0;
	for (size_t s = 0; s < n; s++) {
		if (p[s] != '/')
			continue;
		for (size_t b = s + 1; b < n; b++) {
			if (p[b] != '!' || p[b - 1] != '\n')
				continue;
			unsigned v = 0, digits = 0;
			for (size_t k = b + 1; k < n && digits < 4; k++, digits++) {
				int c = p[k];
				int h = c >= '0' && c <= '9' ? c - '0'
				        : (c | 0x20) >= 'a' && (c | 0x20) <= 'f'
				                ? (c | 0x20) - 'a' + 10
				                : -1;
				if (h < 0)
					break;
				v = v << 4 | (unsigned)h;
			}
			if (digits && p1_crc16(0, p + s, b - s + 1) == v && b != last_bang) {
				assert_true(found < max);
				starts[found++] = s;
				last_bang = b;
			}
			break; /* only the first end line after this '/' */
		}
	}
	return found;
}

static void test_streams(void **state)
{
	(void)state;
	const char *dir = corpus();
	char *names[MAX_FILES];
	size_t n = list(dir, "streams", ".txt", names);
	assert_true(n >= 1);
	size_t total = 0;
	for (size_t i = 0; i < n; i++) {
		char path[4096];
		snprintf(path, sizeof(path), "%s/streams/%s", dir, names[i]);
		size_t len;
		uint8_t *p = read_file_or_fail(path, &len);
		uint64_t starts[64];
		size_t want = crc_frames(p, len, starts, 64);
		assert_true(want >= 1);
		total += want;
		for (size_t chunk = 0; chunk <= 512; chunk = chunk ? chunk * 2 : 1) {
			struct run *r = decode(p, len, chunk, NULL);
			if (r->valid != want)
				fail_msg("streams/%s (chunks of %zu): %u valid telegrams, %zu "
				         "frames verify",
				         names[i], chunk, r->valid, want);
			for (size_t k = 0; k < want; k++) {
				assert_int_equal(r->t[k].offset, starts[k]);
				assert_true(r->t[k].json_ok);
			}
			run_free(r);
		}
		print_message("streams/%s: %zu valid telegrams\n", names[i], want);
		free(p);
	}
	free_names(names, n);
	assert_true(total >= 4);
}

/* ---- encrypted ---- */

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c |= 0x20;
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static size_t unhex(const char *s, uint8_t *out, size_t cap)
{
	size_t n = 0;
	while (hexval(s[0]) >= 0 && hexval(s[1]) >= 0 && n < cap) {
		out[n++] = (uint8_t)(hexval(s[0]) << 4 | hexval(s[1]));
		s += 2;
	}
	return n;
}

/* key=HEX and aad=HEX lines (aad: the authentication key, or 0x30 followed by it). */
static void read_key(const char *path, uint8_t key[16], bool *have_aad, uint8_t ak[16])
{
	size_t len;
	char *text = read_file_or_fail(path, &len);
	bool have_key = false;
	*have_aad = false;
	for (char *line = strtok(text, "\r\n"); line; line = strtok(NULL, "\r\n")) {
		while (*line == ' ')
			line++;
		if (*line == '#')
			continue;
		uint8_t buf[32];
		if (!strncasecmp(line, "key=", 4)) {
			assert_int_equal(unhex(line + 4, buf, sizeof(buf)), 16);
			memcpy(key, buf, 16);
			have_key = true;
		} else if (!strncasecmp(line, "aad=", 4)) {
			size_t k = unhex(line + 4, buf, sizeof(buf));
			if (k == 17 && buf[0] == 0x30)
				memcpy(ak, buf + 1, 16);
			else if (k == 16)
				memcpy(ak, buf, 16);
			else
				fail_msg("%s: aad is neither 16 bytes nor 0x30 and 16 bytes", path);
			*have_aad = true;
		}
	}
	if (!have_key)
		fail_msg("%s: no key= line", path);
	free(text);
}

/* AES-128-GCM with no additional data, 12-byte tag, IV = title || counter: the plaintext. */
static size_t decrypt_no_aad(const uint8_t *frame, size_t n, const uint8_t key[16], uint8_t *out)
{
	struct p1_dlms_info info;
	assert_int_equal(p1_dlms_header(frame, n, &info), 1);
	assert_int_equal(info.total_len, n);
	assert_int_equal(info.security, 0x30);
	uint8_t iv[12];
	memcpy(iv, info.system_title, 8);
	for (int i = 0; i < 4; i++)
		iv[8 + i] = (uint8_t)(info.frame_counter >> (24 - 8 * i));
	size_t clen = n - info.header_len - 12;
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	int outl = 0, finl = 0;
	assert_non_null(ctx);
	assert_int_equal(EVP_DecryptInit_ex(ctx, EVP_aes_128_gcm(), NULL, NULL, NULL), 1);
	assert_int_equal(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_IVLEN, 12, NULL), 1);
	assert_int_equal(EVP_DecryptInit_ex(ctx, NULL, NULL, key, iv), 1);
	assert_int_equal(EVP_DecryptUpdate(ctx, out, &outl, frame + info.header_len, (int)clen), 1);
	assert_int_equal(
	        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, 12, (void *)(frame + n - 12)), 1);
	int ok = EVP_DecryptFinal_ex(ctx, out + outl, &finl);
	EVP_CIPHER_CTX_free(ctx);
	if (ok != 1)
		fail_msg("tag over an empty AAD does not verify");
	return (size_t)(outl + finl);
}

static void test_encrypted(void **state)
{
	(void)state;
	const char *dir = corpus();
	char *names[MAX_FILES];
	size_t n = list(dir, "encrypted", ".bin", names);
	assert_true(n >= 1);
	unsigned decoded_valid = 0;
	for (size_t i = 0; i < n; i++) {
		char path[4096], kpath[4096];
		snprintf(path, sizeof(path), "%s/encrypted/%s", dir, names[i]);
		snprintf(kpath, sizeof(kpath), "%s/encrypted/%.*s.key", dir,
		         (int)strlen(names[i]) - 4, names[i]);
		size_t len;
		uint8_t *frame = read_file_or_fail(path, &len);
		struct p1_decoder_opts o;
		p1_decoder_opts_init(&o);
		bool have_aad;
		read_key(kpath, o.key, &have_aad, o.ak);
		o.have_key = true;
		o.have_ak = have_aad;

		/* the plaintext, decrypted here */
		uint8_t *plain = malloc(len);
		size_t plen;
		if (have_aad) {
			struct p1_dlms *d = p1_dlms_new(o.key, o.ak);
			assert_non_null(d);
			assert_int_equal(p1_dlms_decrypt(d, frame, len, plain, len, &plen, NULL),
			                 P1_OK);
			p1_dlms_free(d);
		} else {
			plen = decrypt_no_aad(frame, len, o.key, plain);
		}
		assert_int_equal(plain[0], '/');
		uint64_t starts[4];
		bool crc_ok = crc_frames(plain, plen, starts, 4) == 1;

		/* the plaintext through the decoder as if it had come in clear */
		struct run *r = decode(plain, plen, 0, NULL);
		if (crc_ok) {
			if (r->valid != 1 || r->invalid)
				fail_msg("%s: plaintext: %u valid, %u invalid (%s)", names[i],
				         r->valid, r->invalid, errors_str(r));
			assert_true(r->t[0].json_ok);
			decoded_valid++;
		} else {
			/* the source's plaintext carries a CRC that does not match its bytes */
			assert_int_equal(r->valid, 0);
			assert_int_equal(r->invalid, 1);
			assert_int_equal(r->errors[0], P1_ERR_CRC);
		}
		print_message("%s: %zu-byte plaintext, CRC %s, AAD %s\n", names[i], plen,
		              crc_ok ? "valid" : "NOT valid", have_aad ? "0x30 || AK" : "empty");
		run_free(r);

		/* and the envelope through the decoder, in one piece and byte by byte */
		if (have_aad) {
			for (size_t chunk = 0; chunk <= 1; chunk++) {
				r = decode(frame, len, chunk, &o);
				if (crc_ok) {
					if (r->valid != 1 || r->invalid)
						fail_msg("%s: %u valid, %u invalid (%s)", names[i],
						         r->valid, r->invalid, errors_str(r));
					assert_true(r->t[0].encrypted);
					assert_int_equal(r->t[0].offset, 0);
					assert_true(r->t[0].json_ok);
					assert_non_null(strstr(r->t[0].json, "\"encrypted\":true"));
					enum p1_dialect d = r->t[0].dialect;
					assert_true(d == P1_DIALECT_SMARTY ||
					            d == P1_DIALECT_AUSTRIA);
				} else {
					assert_int_equal(r->valid, 0);
					assert_int_equal(r->errors[0], P1_ERR_CRC);
				}
				run_free(r);
			}
			/* a wrong key is an authentication failure */
			o.key[0] ^= 1;
			r = decode(frame, len, 0, &o);
			assert_int_equal(r->valid, 0);
			assert_int_equal(r->invalid, 1);
			assert_int_equal(r->errors[0], P1_ERR_AUTH);
			run_free(r);
		}
		free(plain);
		free(frame);
	}
	free_names(names, n);
	assert_true(decoded_valid >= 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_json_validator),    cmocka_unit_test(test_dialect_folders),
	        cmocka_unit_test(test_dialect_detection), cmocka_unit_test(test_key_fields),
	        cmocka_unit_test(test_every_line_read),   cmocka_unit_test(test_bad_crc),
	        cmocka_unit_test(test_malformed),         cmocka_unit_test(test_streams),
	        cmocka_unit_test(test_encrypted),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
