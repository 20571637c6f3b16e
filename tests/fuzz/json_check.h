/* json_check.h - a strict JSON checker for the fuzz targets: RFC 8259 grammar, ASCII only
 * (the JSON writer escapes every byte outside 0x20..0x7e), at most 32 levels deep. Header-only
 * so that each target stays one file plus this; not part of libp1. */
#ifndef P1_FUZZ_JSON_CHECK_H
#define P1_FUZZ_JSON_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

struct js {
	const char *p, *e;
	int depth;
};

static bool js_value(struct js *j);

static void js_ws(struct js *j)
{
	while (j->p < j->e && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
		j->p++;
}

static bool js_lit(struct js *j, const char *s)
{
	size_t n = strlen(s);
	if ((size_t)(j->e - j->p) < n || memcmp(j->p, s, n))
		return false;
	j->p += n;
	return true;
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool js_number(struct js *j)
{
	if (j->p < j->e && *j->p == '-')
		j->p++;
	if (j->p >= j->e || !is_digit(*j->p))
		return false;
	if (*j->p++ != '0')
		while (j->p < j->e && is_digit(*j->p))
			j->p++;
	if (j->p < j->e && *j->p == '.') {
		j->p++;
		if (j->p >= j->e || !is_digit(*j->p))
			return false;
		while (j->p < j->e && is_digit(*j->p))
			j->p++;
	}
	if (j->p < j->e && (*j->p == 'e' || *j->p == 'E')) {
		j->p++;
		if (j->p < j->e && (*j->p == '+' || *j->p == '-'))
			j->p++;
		if (j->p >= j->e || !is_digit(*j->p))
			return false;
		while (j->p < j->e && is_digit(*j->p))
			j->p++;
	}
	return true;
}

static bool js_string(struct js *j)
{
	if (j->p >= j->e || *j->p++ != '"')
		return false;
	while (j->p < j->e) {
		unsigned char c = (unsigned char)*j->p++;
		if (c == '"')
			return true;
		if (c < 0x20 || c >= 0x80)
			return false;
		if (c != '\\')
			continue;
		if (j->p >= j->e)
			return false;
		c = (unsigned char)*j->p++;
		if (c == 'u') {
			for (int i = 0; i < 4; i++, j->p++)
				if (j->p >= j->e || !strchr("0123456789abcdefABCDEF", *j->p) ||
				    !*j->p)
					return false;
		} else if (!strchr("\"\\/bfnrt", c) || !c) {
			return false;
		}
	}
	return false;
}

static bool js_container(struct js *j, char open, char close)
{
	if (++j->depth > 32)
		return false;
	j->p++; /* open */
	js_ws(j);
	if (j->p < j->e && *j->p == close) {
		j->p++;
		j->depth--;
		return true;
	}
	for (;;) {
		js_ws(j);
		if (open == '{') {
			if (!js_string(j))
				return false;
			js_ws(j);
			if (j->p >= j->e || *j->p++ != ':')
				return false;
		}
		if (!js_value(j))
			return false;
		js_ws(j);
		if (j->p >= j->e)
			return false;
		char c = *j->p++;
		if (c == close)
			break;
		if (c != ',')
			return false;
	}
	j->depth--;
	return true;
}

static bool js_value(struct js *j)
{
	js_ws(j);
	if (j->p >= j->e)
		return false;
	switch (*j->p) {
	case '{':
		return js_container(j, '{', '}');
	case '[':
		return js_container(j, '[', ']');
	case '"':
		return js_string(j);
	case 't':
		return js_lit(j, "true");
	case 'f':
		return js_lit(j, "false");
	case 'n':
		return js_lit(j, "null");
	default:
		return js_number(j);
	}
}

/* The whole of s[0..n) is one JSON value of the given type ('{', '"', or 0 for any). */
static bool json_ok(const char *s, size_t n, char type)
{
	struct js j = {s, s + n, 0};
	js_ws(&j);
	if (type && (j.p >= j.e || *j.p != type))
		return false;
	if (!js_value(&j))
		return false;
	js_ws(&j);
	return j.p == j.e;
}

#endif
