/* unit_util.h - small helpers shared by the cmocka unit tests (test_json.c, test_parse.c,
 * test_corpus.c, test_time.c). Header-only and static inline, so that a test that does not
 * use one gets no unused-function warning. Not a test itself: tests/CMakeLists.txt builds
 * tests/unit/test_*.c only.
 *
 * - read_file(): a whole file, malloc'd and NUL-terminated;
 * - json_squeeze(): JSON with the whitespace outside strings removed, as the golden files
 *   of tests/data may be pretty-printed;
 * - civil_utc(): the UTC instant of a civil date and time, by libc's timegm(), independently
 *   of libp1. */
#ifndef P1_TEST_UNIT_UTIL_H
#define P1_TEST_UNIT_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <ftw.h>
#include <sys/stat.h>
#include <string.h>
#include <time.h>

/* The whole of the file at path, malloc'd, with a NUL after its *ret_len bytes (so that a text
 * file is a C string); NULL (and *ret_len 0) when it cannot be opened or memory runs out. */
static inline void *read_file(const char *path, size_t *ret_len)
{
	*ret_len = 0;
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	size_t cap = 4096, n = 0;
	char *p = malloc(cap + 1);
	while (p) {
		if (n == cap) {
			char *q = realloc(p, 2 * cap + 1);
			if (!q) {
				free(p);
				p = NULL;
				break;
			}
			p = q;
			cap *= 2;
		}
		size_t k = fread(p + n, 1, cap - n, f);
		if (!k)
			break;
		n += k;
	}
	fclose(f);
	if (!p)
		return NULL;
	p[n] = 0;
	*ret_len = n;
	return p;
}

/* s with the whitespace outside JSON strings removed (malloc'd; NULL when out of memory). */
static inline char *json_squeeze(const char *s)
{
	char *out = malloc(strlen(s) + 1), *o = out;
	if (!out)
		return NULL;
	bool in_str = false;
	for (; *s; s++) {
		if (in_str) {
			*o++ = *s;
			if (*s == '\\' && s[1])
				*o++ = *++s;
			else if (*s == '"')
				in_str = false;
		} else if (*s == '"') {
			in_str = true;
			*o++ = *s;
		} else if (*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r') {
			*o++ = *s;
		}
	}
	*o = 0;
	return out;
}

/* Seconds since the epoch of the civil date and time y-mo-d h:mi:s read as UTC. */
static inline int64_t civil_utc(int y, int mo, int d, int h, int mi, int s)
{
	struct tm tm = {.tm_year = y - 1900,
	                .tm_mon = mo - 1,
	                .tm_mday = d,
	                .tm_hour = h,
	                .tm_min = mi,
	                .tm_sec = s};
	return (int64_t)timegm(&tm);
}

static inline int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* Removes dir and everything under it (a test's temporary directory). Returns 0 or -1. */
static inline int remove_tree(const char *dir)
{
	return nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS) == 0 ? 0 : -1;
}

#endif
