/* source.h - where a meter's bytes come from: a serial port, a TCP serial bridge, or a file.
 *
 * A source is created from a struct source_config and the loop, opens itself, and hands every
 * chunk it reads to on_data (never a byte at a time). Serial and TCP sources that fail or
 * disappear are closed and reopened with exponential backoff (SOURCE_BACKOFF_MIN_MS doubling
 * up to backoff_max_ms; TCP delays get +-20 % jitter), and a data watchdog reopens them when
 * the owner has not called source_note_valid() for stale_after_ms while connected. A file
 * source reads once to the end and reports SOURCE_EOF; the daemon decides what then.
 *
 * The source logs its own state changes once, with the meter name ("meter main: /dev/ttyUSB0
 * disappeared (read: Input/output error), retrying every 30 s at most", "meter main:
 * /dev/ttyUSB0 back after 12 s"); retries that change nothing are logged at debug level only.
 * on_state is told about every state change, so the owner need not log them again.
 *
 * Callbacks run only from the loop, never from inside a source_* call. Do not call
 * source_free() from inside the source's own callbacks (call loop_quit() or arm a timer). */
#ifndef P1D_SOURCE_H
#define P1D_SOURCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct loop;
struct source;

/* First retry delay after a failure; doubles per failed attempt up to backoff_max_ms. */
#define SOURCE_BACKOFF_MIN_MS 250u
/* Default cap of the retry delay. */
#define SOURCE_BACKOFF_MAX_DEFAULT_MS 30000u
/* A serial device node that does not exist is looked for this often, whatever the backoff. */
#define SOURCE_ABSENT_POLL_MS 1000u
/* Default data watchdog: reopen after this long without a valid telegram. */
#define SOURCE_STALE_DEFAULT_MS 30000u
/* Default period of a file source in meter pace: one telegram per period. */
#define SOURCE_PERIOD_DEFAULT_MS 1000u
/* A TCP connect that has not completed after this long is abandoned and retried. */
#define SOURCE_CONNECT_TIMEOUT_MS 10000u
/* Bytes read per read(2): at least one whole telegram of a DSMR 5 meter. */
#define SOURCE_READ_MAX 16384u
/* Serial "auto": how long each preset is tried without a valid telegram (about two telegram
 * periods: DSMR 4/5 at 115200 send every 1 or 10 s, DSMR 2.2/3 at 9600 every 10 s and a
 * telegram takes up to half a second to arrive at 960 bytes/s). */
#define SOURCE_SERIAL_PROBE_115200_MS 12000u
#define SOURCE_SERIAL_PROBE_9600_MS 25000u
/* An open serial port is checked this often against its configured path: when a link such as
 * /dev/serial/by-id/... or /dev/p1 now names another device (the adapter was renumbered while
 * the old node lingers), or names nothing, the port is closed and the path reopened. */
#define SOURCE_SERIAL_FOLLOW_MS 1000u
/* Bytes but no valid telegram for this long: one warning naming the serial settings tried
 * and the other ones (a wrong serial_mode, or a signal that is not inverted). */
#define SOURCE_SERIAL_HINT_MS 60000u
/* ... when at least this many bytes arrived in that time (not noise on an idle line). */
#define SOURCE_SERIAL_HINT_MIN_BYTES 64u

enum source_kind {
	SOURCE_SERIAL, /* a tty: USB serial adapter, UART, pty */
	SOURCE_TCP,    /* a TCP serial bridge (ser2net, esp-link, ESPHome stream server) */
	SOURCE_FILE,   /* a recorded stream, or stdin with "-" */
};

enum source_state {
	SOURCE_IDLE,      /* created, first open not tried yet */
	SOURCE_OPENING,   /* TCP connect under way (serial and file opens complete at once) */
	SOURCE_CONNECTED, /* reading */
	SOURCE_BACKOFF,   /* absent or failed; the next attempt is scheduled */
	SOURCE_STALE,     /* connected but no valid telegram for stale_after_ms; reopening now */
	SOURCE_EOF,       /* a file source reached its end (or a read error); final */
};

enum source_serial_mode {
	SOURCE_SERIAL_AUTO,       /* 115200-8N1, then 9600-7E1, cycling until one works */
	SOURCE_SERIAL_115200_8N1, /* DSMR 4 and 5, Fluvius, Smarty */
	SOURCE_SERIAL_9600_7E1,   /* DSMR 2.2 and 3, EasyMeter */
};

enum source_data_request {
	SOURCE_DATA_REQUEST_NONE, /* leave the modem lines as the driver sets them */
	SOURCE_DATA_REQUEST_DTR,  /* raise DTR after open (wired to the meter's Data Request) */
	SOURCE_DATA_REQUEST_RTS,  /* raise RTS after open */
};

enum source_pace {
	SOURCE_PACE_FAST,  /* one chunk per loop iteration, as fast as the consumer takes it */
	SOURCE_PACE_METER, /* one telegram (cut before each "\n/") per period_ms */
};

/**
 * struct source_config - settings of one source; plain data, borrowed by source_new()
 *
 * Zero means "default" for the numbers. Strings are copied.
 */
struct source_config {
	const char *name; /* meter name, for log lines ("main"); NULL: "?" */
	enum source_kind kind;
	const char *path; /* serial: device; tcp: "host:port", "[v6addr]:port"; file: path/"-" */
	enum source_serial_mode serial_mode;
	enum source_data_request data_request; /* serial only */
	enum source_pace pace;                 /* file only */
	uint32_t period_ms;      /* file in meter pace; default SOURCE_PERIOD_DEFAULT_MS */
	uint32_t stale_after_ms; /* serial and tcp; default SOURCE_STALE_DEFAULT_MS */
	uint32_t backoff_max_ms; /* serial and tcp; default SOURCE_BACKOFF_MAX_DEFAULT_MS */
};

/**
 * struct source_stats - counters for STATUS= lines and metrics
 */
struct source_stats {
	uint64_t bytes;         /* bytes handed to on_data */
	uint64_t opens;         /* successful opens or connects */
	uint64_t reopens;       /* successful opens after the first (the source came back) */
	uint64_t failures;      /* failed attempts plus lost connections */
	uint64_t stale;         /* data watchdog expiries */
	uint64_t last_data_ms;  /* loop_now_ms() of the last read with data, 0 if none */
	uint64_t last_valid_ms; /* loop_now_ms() of the last source_note_valid(), 0 if none */
};

/**
 * source_data_cb - bytes arrived
 * @ud: the owner's pointer
 * @buf: the bytes, borrowed for the duration of the call
 * @len: how many, > 0
 */
typedef void (*source_data_cb)(void *ud, const uint8_t *buf, size_t len);

/**
 * source_state_cb - the source changed state
 * @ud: the owner's pointer
 * @st: the new state
 * @why: a short reason or detail ("read: Input/output error", "115200-8N1"), never NULL
 */
typedef void (*source_state_cb)(void *ud, enum source_state st, const char *why);

/**
 * source_new - Create a source and schedule its first open
 * @loop: the event loop
 * @cfg: settings, borrowed for the call
 * @on_data: receives the bytes
 * @on_state: told about state changes (may be NULL)
 * @ud: passed to both callbacks
 * @ret_source: the new source on success
 * Returns: 0 on success, negative errno on failure (logged here, with the reason)
 *
 * Serial and TCP sources never fail for a device or peer that is absent: they retry.
 * They fail for settings that cannot work: -EINVAL for a malformed "host:port", a TCP host
 * name that does not resolve (names are resolved here, once, with getaddrinfo, which may
 * block for the resolver's timeout; numeric addresses never block). A file source opens its
 * file here and fails with its errno (-ENOENT, -EACCES, ...).
 */
int source_new(struct loop *loop, const struct source_config *cfg, source_data_cb on_data,
               source_state_cb on_state, void *ud, struct source **ret_source);

/**
 * source_free - Close and free a source
 * @s: the source, or NULL
 * Returns: NULL
 */
struct source *source_free(struct source *s);

/**
 * source_note_valid - The owner decoded a valid telegram from this source's bytes
 * @s: the source
 *
 * Feeds the data watchdog, resets the retry backoff and, for a serial source in auto mode,
 * settles on the current preset.
 */
void source_note_valid(struct source *s);

/**
 * source_get_state - The current state
 */
enum source_state source_get_state(const struct source *s);

/**
 * source_get_stats - Copy the counters
 * @s: the source
 * @ret_stats: filled in
 */
void source_get_stats(const struct source *s, struct source_stats *ret_stats);

/**
 * source_detail - Kind-specific detail: the serial preset in use ("9600-7E1"), the TCP
 * address being used, "" otherwise. Valid until the next loop iteration.
 */
const char *source_detail(const struct source *s);

/**
 * source_format_status - One line for STATUS= ("connected 115200-8N1, 1234 bytes, 2 reopens")
 * @s: the source
 * @buf: where to write; always NUL-terminated
 * @size: size of @buf
 * Returns: what snprintf returned
 */
int source_format_status(const struct source *s, char *buf, size_t size);

/* Names for config parsing and status: each *_name returns a static string, each *_parse
 * returns 0 and writes *ret on success, -EINVAL for an unknown name. */
const char *source_state_name(enum source_state st);
const char *source_kind_name(enum source_kind k);
const char *source_serial_mode_name(enum source_serial_mode m);
int source_serial_mode_parse(const char *s, enum source_serial_mode *ret);
const char *source_data_request_name(enum source_data_request d);
int source_data_request_parse(const char *s, enum source_data_request *ret);
const char *source_pace_name(enum source_pace p);
int source_pace_parse(const char *s, enum source_pace *ret);

/* ---- Implementation interface: for source.c and source_{serial,tcp,file}.c only. ----
 *
 * source.c owns the state machine (backoff, watchdog, logging, counters); a kind only opens,
 * reads and closes. Its open() returns 0 when connected, -EINPROGRESS when it will call
 * source_impl_connected() or source_impl_failed() later, or a negative errno. While
 * connected it passes bytes to source_impl_data() and reports the end with
 * source_impl_failed() (which calls its close()) or source_impl_eof(). */
struct source_ops {
	const char *open_verb;   /* "open", "connect to": "cannot <verb> <path> (...)" */
	const char *lost_phrase; /* "disappeared", "connection lost" */
	bool reopen;             /* false: a file; failures end in SOURCE_EOF */
	bool jitter;             /* randomise retry delays by +-20 % */
	int (*open)(struct source *s);
	void (*close)(struct source *s);               /* idempotent */
	void (*destroy)(struct source *s);             /* after close(): free the kind's state */
	void (*note_valid)(struct source *s);          /* optional */
	const char *(*detail)(const struct source *s); /* optional */
};

/* Constructors of the kinds, called by source_new() once the common part exists: each sets
 * up its state with source_impl_set(), or returns a negative errno after logging why. */
int source_serial_setup(struct source *s, const struct source_config *cfg);
int source_tcp_setup(struct source *s, const struct source_config *cfg);
int source_file_setup(struct source *s, const struct source_config *cfg);

void source_impl_set(struct source *s, const struct source_ops *ops, void *impl);
void *source_impl(const struct source *s);
struct loop *source_impl_loop(const struct source *s);
const char *source_impl_name(const struct source *s);
const char *source_impl_path(const struct source *s);
const struct source_config *source_impl_config(const struct source *s); /* defaults applied */
void source_impl_data(struct source *s, const uint8_t *buf, size_t len);
void source_impl_connected(struct source *s);
void source_impl_failed(struct source *s, int err, const char *what);
void source_impl_eof(struct source *s, const char *why);
/* Close and open again at once (the path now names another device): logs why. */
void source_impl_reopen(struct source *s, const char *why);

#endif
