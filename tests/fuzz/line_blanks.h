/* line_blanks.h - for the tests of the parser's one-pass reading of common lines (fuzz_parse.c
 * and tests/unit/test_parse.c).
 *
 * with_blanks() writes a frame's text with a blank before every line end (CR LF or LF). The
 * parser reads such a text alike, as blanks before a line end do not count, but reads none of
 * its lines in one pass, which needs the line end right after the last ')': the general
 * reading does it all. Parsing both texts and comparing what blanks_key() writes for each
 * checks one reading against the other. */
#ifndef P1_TEST_LINE_BLANKS_H
#define P1_TEST_LINE_BLANKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "p1/json.h"
#include "p1/telegram.h"

/* out must have room for 2 * n bytes; returns the length written. */
static size_t with_blanks(const uint8_t *p, size_t n, char *out)
{
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		bool crlf = p[i] == '\r' && i + 1 < n && p[i + 1] == '\n';
		bool lf = p[i] == '\n' && (i == 0 || p[i - 1] != '\r');
		if (crlf || lf)
			out[k++] = ' ';
		out[k++] = (char)p[i];
	}
	return k;
}

/* What both texts must give alike: the telegram as JSON, and the codes of its unknown lines
 * without their raw text, which may run over several physical lines (a continuation after a
 * line that could not be joined) and then holds the blanks. A string to free, or NULL when
 * out of memory. */
static char *blanks_key(const struct p1_telegram *t)
{
	const unsigned flags = P1_JSON_ALL & ~P1_JSON_UNKNOWN;
	size_t need = p1_json_telegram(t, flags, NULL, 0) + 1;
	for (unsigned i = 0; i < t->n_unknown; i++)
		need += 1 + strlen(t->unknown[i].obis);
	char *s = malloc(need);
	if (!s)
		return NULL;
	size_t n = p1_json_telegram(t, flags, s, need);
	for (unsigned i = 0; i < t->n_unknown; i++)
		n += (size_t)snprintf(s + n, need - n, " %s", t->unknown[i].obis);
	return s;
}

#endif
