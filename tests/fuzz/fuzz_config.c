/* fuzz_config.c - libFuzzer target for the configuration parser (test matrix P8).
 * fuzz.sh: daemon (built with the daemon's services of src/ and their libraries)
 *
 * The input is a p1d.conf, optionally preceded by command-line options:
 *
 *   @SECTION KEY=VALUE          (p1d, store, mqtt, http: what --db, --mqtt, --http... set)
 *   @meter NAME KEY=VALUE       (what --serial, --tcp, --file, --key... set)
 *   ...the file's text, up to the first NUL byte...
 *
 * Every leading line that starts with '@' is one option (at most OPTIONS_MAX; a malformed one
 * is passed on as it is split). The text goes to config_load_string(), then the options to
 * config_set_option(), as main does; then config_validate(), config_dump() and these checks:
 *
 *   - a failed load or option names the file (or "command line") and a line of the text, with
 *     a message; config_error_format() fits any buffer;
 *   - indentation does not matter: the text with \v, \f or \r before every line (blanks
 *     libinih skips as it does spaces and tabs) loads to the same dump;
 *   - the dump has one line per key of each section, in table order, "KEY =", "KEY = VALUE" or
 *     "KEY =;VALUE", secrets only as ******** (or "# KEY is read from FILE");
 *   - the dump, with the secrets put back, loads again into a fresh config that dumps the same
 *     text, holds the same secrets, needs no restart to go to either way and validates alike
 *     (skipped when an option value has spaces at its ends or a ';', which a file cannot hold,
 *     when a line of the dump would be longer than a file line may be, or when a secret was
 *     emptied after it was read from key_file or password_file: see emptied_secret());
 *   - config_needs_restart() between a config and itself is false.
 *
 * key_file and password_file make the parser read a file. The input never chooses which: every
 * line whose key is key_file or password_file (as libinih splits it) and every such option is
 * rewritten to name one of a few files this target writes into a private directory (a good key,
 * a bad one, one others may read, a password, an empty file, a long one, a missing one, the
 * directory itself), chosen by the value's first byte; an empty value stays empty. So the
 * fuzzer, running as any user, opens nothing else. Any violation aborts.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond) \
	do { \
		if (!(cond)) { \
			fprintf(stderr, "fuzz_config: %s:%d: invariant failed: %s\n", __FILE__, \
			        __LINE__, #cond); \
			abort(); \
		} \
	} while (0)

#define OPTIONS_MAX 4
#define FILE_LINE_MAX 198 /* longest line config_load_* reads (libinih's INI_MAX_LINE - 2) */
#define NAME "fuzz.conf"
#define MASK "********"

/* ---- the only files key_file and password_file may name ---- */

static const struct {
	const char *name;
	const char *text; /* NULL: not created */
	mode_t mode;
} files[] = {
        {"key.good", "000102030405060708090A0B0C0D0E0F\n", 0600},
        {"key.bad", "not a key\n", 0600},
        {"key.open", "000102030405060708090a0b0c0d0e0f", 0644},
        {"password", "pw-1f2e3d4c\nsecond line\n", 0600},
        {"empty", "", 0600},
        {"long", NULL, 0600}, /* 2000 bytes, written below */
        {"missing", NULL, 0},
        {".", NULL, 0}, /* the directory */
};
#define N_FILES (sizeof(files) / sizeof(files[0]))

static char dir[64];

static void files_remove(void)
{
	char path[128];
	for (size_t i = 0; i < N_FILES; i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, files[i].name);
		unlink(path);
	}
	rmdir(dir);
}

static void files_init(void)
{
	char path[128], long_text[2001];
	snprintf(dir, sizeof(dir), "%s", "/tmp/p1d-fuzz-config-XXXXXX");
	CHECK(mkdtemp(dir));
	memset(long_text, 'a', sizeof(long_text) - 1);
	long_text[sizeof(long_text) - 1] = 0;
	for (size_t i = 0; i < N_FILES; i++) {
		const char *text = !strcmp(files[i].name, "long") ? long_text : files[i].text;
		if (!text)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, files[i].name);
		int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		CHECK(fd >= 0);
		CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
		CHECK(fchmod(fd, files[i].mode) == 0);
		close(fd);
	}
	atexit(files_remove);
}

/* The file a fuzzed value of key_file or password_file is replaced with. */
static void pick_file(const char *value, size_t n, char *buf, size_t len)
{
	if (n == 0)
		buf[0] = 0;
	else
		snprintf(buf, len, "%s/%s", dir, files[(unsigned char)value[0] % N_FILES].name);
}

static bool reads_file(const char *key, size_t n)
{
	return (n == 8 && !memcmp(key, "key_file", 8)) ||
	       (n == 13 && !memcmp(key, "password_file", 13));
}

static bool is_space(char c)
{
	return isspace((unsigned char)c);
}

/* The text with every key_file and password_file line rewritten. Conservative: the key is
 * what precedes the first '=' or ':' once blanks and byte order marks are skipped, which is
 * what libinih sees whenever it calls the handler for such a line. A line that libinih could
 * take as the continuation of one (it starts with a blank the reader keeps, such as \v) is
 * blanked for the rest of the section: the parser refuses continuations as duplicate keys,
 * but the target does not count on it. malloc'd. */
static char *rewrite_file_keys(const char *text)
{
	char *out = NULL;
	size_t len = 0;
	bool guard = false;
	FILE *f = open_memstream(&out, &len);
	CHECK(f);
	for (const char *p = text; *p;) {
		const char *e = strchr(p, '\n'), *q = p, *d, *k;
		e = e ? e : p + strlen(p);
		size_t blanks = strspn(p, " \t"); /* what the reader drops */
		if (guard && p + blanks < e && is_space(p[blanks])) {
			fputc('\n', f);
			p = *e ? e + 1 : e;
			continue;
		}
		for (;;) {
			while (q < e && is_space(*q))
				q++;
			if (e - q >= 3 && !memcmp(q, "\xEF\xBB\xBF", 3))
				q += 3;
			else
				break;
		}
		for (d = q; d < e && *d != '=' && *d != ':'; d++)
			;
		for (k = d; k > q && is_space(k[-1]); k--)
			;
		if (d < e && reads_file(q, (size_t)(k - q))) {
			char file[128];
			const char *v = d + 1;
			while (v < e && is_space(*v))
				v++;
			pick_file(v, (size_t)(e - v), file, sizeof(file));
			fprintf(f, "%.*s = %s\n", (int)(k - q), q, file);
			guard = true;
		} else {
			if (q < e && *q == '[')
				guard = false;
			fwrite(p, 1, (size_t)(e - p) + (*e != 0), f);
		}
		p = *e ? e + 1 : e;
	}
	CHECK(fclose(f) == 0 && out);
	return out;
}

/* ---- options ---- */

struct option {
	char section[64], name[64], key[64], value[256];
	bool meter;
};

/* "@SECTION KEY=VALUE" or "@meter NAME KEY=VALUE" (line without '@' and LF). */
static void option_split(const char *s, size_t n, struct option *o)
{
	char line[512];
	snprintf(line, sizeof(line), "%.*s", (int)n, s);
	char *sp = strchr(line, ' '), *rest = sp ? sp + 1 : line + strlen(line);
	if (sp)
		*sp = 0;
	snprintf(o->section, sizeof(o->section), "%.63s", line);
	o->meter = !strcmp(o->section, "meter");
	if (o->meter) {
		sp = strchr(rest, ' ');
		if (sp)
			*sp = 0;
		snprintf(o->name, sizeof(o->name), "%.63s", rest);
		rest = sp ? sp + 1 : rest + strlen(rest);
	}
	char *eq = strchr(rest, '=');
	if (eq)
		*eq = 0;
	snprintf(o->key, sizeof(o->key), "%s", rest);
	snprintf(o->value, sizeof(o->value), "%s", eq ? eq + 1 : "");
	if (reads_file(o->key, strlen(o->key))) {
		char file[128];
		pick_file(o->value, strlen(o->value), file, sizeof(file));
		snprintf(o->value, sizeof(o->value), "%s", file);
	}
}

/* Whether a file could hold this value as it is: libinih strips blanks at its ends and
 * cuts it at a ';' after a blank. */
static bool file_can_hold(const char *v)
{
	size_t n = strlen(v);
	return !strchr(v, ';') && (n == 0 || (!is_space(v[0]) && !is_space(v[n - 1])));
}

/* ---- checks ---- */

static void check_error(const struct config_error *err, const char *file, unsigned lines)
{
	char buf[1024], tiny[8];
	CHECK(memchr(err->file, 0, sizeof(err->file)) && memchr(err->msg, 0, sizeof(err->msg)));
	CHECK(!strcmp(err->file, file));
	CHECK(err->msg[0]);
	CHECK(err->line <= lines);
	size_t n = strlen(config_error_format(err, buf, sizeof(buf)));
	CHECK(n > 0 && n < sizeof(buf) && strstr(buf, err->msg));
	config_error_format(err, tiny, sizeof(tiny));
	CHECK(strlen(tiny) < sizeof(tiny) && !strncmp(tiny, buf, strlen(tiny)));
}

static char *dump(const struct config *c, size_t *ret_len)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	CHECK(f);
	CHECK(config_dump(c, f) == 0);
	CHECK(fclose(f) == 0 && text);
	CHECK(strlen(text) == len);
	*ret_len = len;
	return text;
}

static const struct config_item *items;
static size_t n_items;

static const struct config_item *item(enum config_section s, const char *name, size_t n)
{
	for (size_t i = 0; i < n_items; i++)
		if (items[i].section == s && strlen(items[i].name) == n &&
		    !memcmp(items[i].name, name, n))
			return &items[i];
	return NULL;
}

/* A secret's value as a file would give it (struct config_item's offset is the table's). */
static void secret_text(const struct config_item *it, const void *base, char *buf, size_t len)
{
	const void *v = (const char *)base + it->offset;
	buf[0] = 0;
	if (it->type == CONFIG_HEXKEY) {
		const struct config_hexkey *k = v;
		for (size_t i = 0; k->set && i < CONFIG_KEY_LEN; i++)
			snprintf(buf + 2 * i, len - 2 * i, "%02X", k->bytes[i]);
	} else {
		CHECK(it->type == CONFIG_STRING || it->type == CONFIG_PATH);
		const char *s = *(char *const *)v;
		snprintf(buf, len, "%s", s ? s : "");
	}
}

/* Walks a dump: checks its shape, and writes into out (when not NULL) the same text with the
 * secrets of c in place of ********. Returns false when a line of out is too long for a file. */
static bool walk_dump(const char *text, const struct config *c, FILE *out)
{
	enum config_section s = CONFIG_SECTION_COUNT;
	const void *base = NULL;
	size_t seen = 0, want = 0, next = 0;
	bool fits = true;
	for (const char *p = text; *p;) {
		const char *e = strchr(p, '\n');
		CHECK(e); /* every line ends */
		size_t n = (size_t)(e - p);
		char line[4200];
		CHECK(n < sizeof(line));
		memcpy(line, p, n);
		line[n] = 0;
		p = e + 1;
		for (size_t i = 0; i < n; i++)
			CHECK((unsigned char)line[i] >= ' ' && line[i] != 0x7f);
		if (n == 0) {
			if (out)
				fputc('\n', out);
			continue;
		}
		if (line[0] == '[') {
			CHECK(seen == want); /* the section before had every key */
			CHECK(line[n - 1] == ']');
			line[n - 1] = 0;
			if (!strncmp(line + 1, "meter ", 6)) {
				s = CONFIG_SECTION_METER;
				base = config_find_meter(c, line + 7);
				CHECK(base);
			} else {
				for (s = 0; s < CONFIG_SECTION_COUNT; s++)
					if (!strcmp(line + 1, config_section_name(s)))
						break;
				CHECK(s < CONFIG_SECTION_COUNT && s != CONFIG_SECTION_METER);
				base = c;
			}
			seen = want = 0;
			next = 0;
			for (size_t i = 0; i < n_items; i++)
				want += items[i].section == s;
			line[n - 1] = ']';
			if (out)
				fprintf(out, "%s\n", line);
			continue;
		}
		CHECK(s < CONFIG_SECTION_COUNT);
		const struct config_item *it;
		if (line[0] == '#') {
			/* "# key is read from key_file" */
			char name[64], from[64];
			CHECK(sscanf(line, "# %63s is read from %63s", name, from) == 2);
			it = item(s, name, strlen(name));
			CHECK(it && (it->flags & CONFIG_SECRET));
			CHECK(item(s, from, strlen(from)) && reads_file(from, strlen(from)));
		} else {
			const char *eq = strstr(line, " =");
			CHECK(eq);
			it = item(s, line, (size_t)(eq - line));
			CHECK(it);
			const char *v = eq + 2;
			/* "KEY =", "KEY = VALUE", or "KEY =;VALUE" (a blank would make a comment) */
			CHECK(!*v || (v[0] == ' ' && v[1] && v[1] != ';') || v[0] == ';');
			if (it->flags & CONFIG_SECRET) {
				CHECK(!*v || !strcmp(v, " " MASK));
				if (*v) {
					char secret[1100];
					secret_text(it, base, secret, sizeof(secret));
					CHECK(secret[0]);
					snprintf(line + (eq - line) + 2,
					         sizeof(line) - (size_t)(eq - line) - 2, "%s%s",
					         secret[0] == ';' ? "" : " ", secret);
					n = strlen(line);
				}
			}
		}
		/* table order */
		size_t index = (size_t)(it - items);
		CHECK(index >= next);
		next = index + 1;
		seen++;
		fits &= n <= FILE_LINE_MAX;
		if (out)
			fprintf(out, "%s\n", line);
	}
	CHECK(seen == want);
	return fits;
}

static void check_secrets_equal(const struct config *a, const struct config *b)
{
	char sa[1100], sb[1100];
	for (size_t i = 0; i < n_items; i++) {
		if (!(items[i].flags & CONFIG_SECRET))
			continue;
		if (items[i].section != CONFIG_SECTION_METER) {
			secret_text(&items[i], a, sa, sizeof(sa));
			secret_text(&items[i], b, sb, sizeof(sb));
			CHECK(!strcmp(sa, sb));
			continue;
		}
		for (size_t m = 0; m < a->n_meters; m++) {
			const struct config_meter *mb = config_find_meter(b, a->meters[m].name);
			CHECK(mb);
			secret_text(&items[i], &a->meters[m], sa, sizeof(sa));
			secret_text(&items[i], mb, sb, sizeof(sb));
			CHECK(!strcmp(sa, sb));
		}
	}
}

static bool is_set(const struct config_item *it, const void *base)
{
	const void *v = (const char *)base + it->offset;
	if (it->type == CONFIG_HEXKEY)
		return ((const struct config_hexkey *)v)->set;
	return *(char *const *)v && **(char *const *)v;
}

/* A secret emptied after it was read from its file (key_file, then "key =" or an empty
 * option): no file can say that, since the file would be read again. Known, reported. */
static bool emptied_secret(const void *base, enum config_section s)
{
	for (size_t i = 0; i < n_items; i++) {
		const struct config_item *it = &items[i], *from;
		if (it->section != s || !(it->flags & CONFIG_SECRET) || !it->conflicts ||
		    is_set(it, base))
			continue;
		from = item(s, it->conflicts, strcspn(it->conflicts, " "));
		if (from && reads_file(from->name, strlen(from->name)) && is_set(from, base))
			return true;
	}
	return false;
}

static bool representable(const struct config *c)
{
	for (size_t i = 0; i < c->n_meters; i++)
		if (emptied_secret(&c->meters[i], CONFIG_SECTION_METER))
			return false;
	return !emptied_secret(c, CONFIG_SECTION_MQTT);
}

/* The dump, secrets restored, loads again and gives the same configuration. */
static void check_reload(const struct config *c, const char *text, int valid,
                         const struct config_error *verr)
{
	char *again = NULL, what[128];
	size_t len = 0, len2;
	FILE *f = open_memstream(&again, &len);
	CHECK(f);
	bool fits = walk_dump(text, c, f);
	CHECK(fclose(f) == 0 && again);
	if (fits) {
		struct config *c2 = config_new_defaults();
		struct config_error err = {0}, verr2 = {0};
		CHECK(c2);
		int r = config_load_string(c2, NAME, again, &err);
		if (r < 0)
			fprintf(stderr, "fuzz_config: the dump does not load: %s:%u: %s\n%s",
			        err.file, err.line, err.msg, again);
		CHECK(r == 0);
		char *text2 = dump(c2, &len2);
		if (strcmp(text, text2))
			fprintf(stderr, "fuzz_config: the reloaded dump differs:\n%s\n----\n%s",
			        text, text2);
		CHECK(!strcmp(text, text2));
		free(text2);
		check_secrets_equal(c, c2);
		CHECK(c2->n_meters == c->n_meters);
		CHECK(!config_needs_restart(c, c2, what, sizeof(what)) && !what[0]);
		CHECK(!config_needs_restart(c2, c, what, sizeof(what)));
		CHECK(config_validate(c2, &verr2) == valid);
		CHECK(!strcmp(verr->msg, verr2.msg));
		config_free(c2);
	}
	free(again);
}

/* The text with a blank other than space and tab (which libinih's lskip drops too) at the
 * start of every line, after a byte order mark; NULL when a line would grow too long. */
static char *indented(const char *text)
{
	static const char blanks[] = "\v\f\r";
	char *out = NULL;
	size_t len = 0, i = 0;
	FILE *f = open_memstream(&out, &len);
	CHECK(f);
	bool fits = true;
	for (const char *p = text; *p; i++) {
		const char *e = strchr(p, '\n');
		e = e ? e : p + strlen(p);
		if (i == 0 && !strncmp(p, "\xEF\xBB\xBF", 3)) {
			fwrite(p, 1, 3, f);
			p += 3;
		}
		fits &= e - p < FILE_LINE_MAX;
		fputc(blanks[i % 3], f);
		fwrite(p, 1, (size_t)(e - p) + (*e != 0), f);
		p = *e ? e + 1 : e;
	}
	CHECK(fclose(f) == 0 && out);
	if (!fits) {
		free(out);
		return NULL;
	}
	return out;
}

/* Indentation does not matter: the indented text loads alike. */
static void check_indented(const char *file, const char *dumped)
{
	char *text = indented(file);
	if (!text)
		return;
	struct config *c = config_new_defaults();
	struct config_error err = {0};
	size_t len;
	CHECK(c);
	int r = config_load_string(c, NAME, text, &err);
	if (r < 0)
		fprintf(stderr, "fuzz_config: the indented text does not load: %s:%u: %s\n",
		        err.file, err.line, err.msg);
	CHECK(r == 0);
	char *again = dump(c, &len);
	CHECK(!strcmp(again, dumped));
	free(again);
	config_free(c);
	free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool ready;
	if (!ready) {
		files_init();
		items = config_items(&n_items);
		ready = true;
	}
	/* a C string: the text ends at the first NUL */
	char *input = malloc(size + 1);
	CHECK(input);
	memcpy(input, data, size);
	input[size] = 0;

	struct option opts[OPTIONS_MAX];
	size_t n_opts = 0;
	const char *text = input;
	while (*text == '@' && n_opts < OPTIONS_MAX) {
		const char *e = strchr(text, '\n');
		size_t n = e ? (size_t)(e - text) : strlen(text);
		option_split(text + 1, n - 1, &opts[n_opts++]);
		text += n + (e != NULL);
	}
	char *file = rewrite_file_keys(text);
	unsigned lines = 1;
	for (const char *p = file; *p; p++)
		lines += *p == '\n';

	struct config *c = config_new_defaults();
	struct config_error err = {0};
	char what[128];
	CHECK(c);
	int r = config_load_string(c, NAME, file, &err);
	CHECK(r == 0 || r == -EINVAL || r == -ENOMEM);
	if (r < 0)
		check_error(&err, NAME, lines);
	if (r == 0) {
		size_t len;
		char *text0 = dump(c, &len);
		check_indented(file, text0);
		free(text0);
	}
	bool plain = true;
	for (size_t i = 0; r == 0 && i < n_opts; i++) {
		struct option *o = &opts[i];
		memset(&err, 0, sizeof(err));
		r = config_set_option(c, o->section, o->meter ? o->name : NULL, o->key, o->value,
		                      &err);
		CHECK(r == 0 || r == -EINVAL || r == -ENOMEM);
		if (r < 0)
			check_error(&err, "command line", 0);
		plain &= file_can_hold(o->value);
	}
	if (r == 0) {
		struct config_error verr = {0};
		int valid = config_validate(c, &verr);
		CHECK(valid == 0 || valid == -EINVAL);
		if (valid < 0)
			check_error(&verr, NAME, lines);
		for (size_t i = 0; i < c->n_meters; i++) {
			const struct config_meter *m = &c->meters[i];
			CHECK(config_find_meter(c, m->name) == m);
			CHECK((unsigned)config_meter_source(m) <= CONFIG_SOURCE_FILE);
		}
		char db[4096];
		CHECK(config_database_path(c, db, sizeof(db)) == db && db[0]);
		CHECK(!config_needs_restart(c, c, what, sizeof(what)));

		size_t len;
		char *text1 = dump(c, &len);
		if (plain && representable(c))
			check_reload(c, text1, valid, &verr);
		else
			walk_dump(text1, c, NULL);
		free(text1);
	}
	config_free(c);
	free(file);
	free(input);
	return 0;
}
