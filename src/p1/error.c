/* error.c - names of frame rejection reasons (see p1/error.h). */
#include "p1/error.h"

static const struct {
	const char *id, *text;
} errors[P1_ERR_COUNT] = {
	[P1_OK] = {"ok", "ok"},
	[P1_ERR_CRC] = {"crc", "CRC mismatch"},
	[P1_ERR_CRC_MISSING] = {"crc_missing", "CRC missing on a DSMR 4 or newer telegram"},
	[P1_ERR_TOO_LONG] = {"too_long", "telegram too long"},
	[P1_ERR_TRUNCATED] = {"truncated", "telegram truncated"},
	[P1_ERR_SYNTAX] = {"syntax", "bad syntax"},
	[P1_ERR_ENVELOPE] = {"envelope", "bad encrypted frame header"},
	[P1_ERR_NO_KEY] = {"no_key", "encrypted frame but no decryption key configured"},
	[P1_ERR_AUTH] = {"auth", "decryption failed (wrong key or authentication key, or damaged frame)"},
};

const char *p1_strerror(enum p1_error e)
{
	return (unsigned)e < P1_ERR_COUNT ? errors[e].text : "unknown error";
}

const char *p1_error_id(enum p1_error e)
{
	return (unsigned)e < P1_ERR_COUNT ? errors[e].id : "unknown";
}
