/* p1/error.h - why a frame was rejected. */
#ifndef P1_ERROR_H
#define P1_ERROR_H

enum p1_error {
	P1_OK = 0,
	P1_ERR_CRC,         /* CRC mismatch */
	P1_ERR_CRC_MISSING, /* no CRC on a telegram that says it is DSMR 4 or newer */
	P1_ERR_TOO_LONG,    /* frame longer than the configured bound */
	P1_ERR_TRUNCATED,   /* frame cut off: a new frame began, the input ended or went silent */
	P1_ERR_SYNTAX,      /* a telegram without CRC that is not well formed */
	P1_ERR_ENVELOPE,    /* encrypted envelope with an impossible header */
	P1_ERR_NO_KEY,      /* encrypted frame but no key configured */
	P1_ERR_AUTH,        /* decryption failed: wrong key or authentication key, or damaged frame */
	P1_ERR_COUNT
};

/* A short phrase a person understands ("CRC mismatch"). Never NULL. */
const char *p1_strerror(enum p1_error e);

/* A stable identifier for counters and metrics ("crc", "too_long", ...). Never NULL. */
const char *p1_error_id(enum p1_error e);

#endif
