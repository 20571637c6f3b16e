/* http.h - the HTTP server: REST API, Server-Sent Events, Prometheus metrics, HomeWizard API
 * and the dashboard's files (http_static.h).
 *
 * libmicrohttpd runs in external epoll mode: one MHD daemon per listen address, each one's
 * epoll fd is watched by our loop and MHD_run is called when it is readable and from one
 * timer armed (from a before-sleep hook) with MHD_get_timeout. MHD never runs a thread of its
 * own. Meters are attached with http_add_meter(); the server registers itself as their sink to
 * feed the live stream. Modules the server does not know (store, mqtt, relay) are reached
 * only through the hooks below, which main connects; every hook is optional.
 *
 * The second half of this header is for the route files (api_v1.c, api_metrics.c,
 * api_homewizard.c) and the unit tests: the request and reply types and pure helpers.
 */
#ifndef P1D_HTTP_H
#define P1D_HTTP_H

#include <jansson.h>
#include <stdbool.h>
#include <sys/types.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "meter.h"

struct loop;
struct config_http;
struct http;
struct http_static;

/* Bounds. */
#define HTTP_METERS_MAX 16              /* meters one server serves */
#define HTTP_PER_IP_MAX 8               /* connections per client address */
#define HTTP_MEMORY_LIMIT (32u << 10)   /* per connection, for the request headers */
#define HTTP_SSE_QUEUE_MAX (256u << 10) /* bytes queued per SSE client, then it skips ahead */
#define HTTP_SSE_STALL_MS 5000u         /* an SSE client that took nothing this long is dropped */
#define HTTP_SNDBUF (128 << 10)          /* kernel send buffer per connection */
#define HTTP_SSE_CLIENTS_MAX 32         /* SSE clients at once (503 beyond) */
#define HTTP_SSE_HEARTBEAT_MS 15000u    /* ": keep-alive" comment when no telegram came */
#define HTTP_BODY_MAX (4u << 20)        /* largest generated body */
#define HTTP_TOKEN_MAX 256

/* History hook: fill *ret_reply for GET /api/v1/meters/<m>/history; return 0 or negative
 * errno. Without a hook the route answers 503 "history store not available". */
struct http_reply;
struct http_request;
typedef int (*http_history_cb)(void *ud, const char *meter, const struct http_request *req,
                               struct http_reply *ret_reply);
/* Status hook: add members to the /api/v1/status object under "section" (e.g. "mqtt"). */
typedef void (*http_status_cb)(void *ud, json_t *section);
/* Metrics hook: write complete Prometheus metric families (HELP, TYPE, samples) to out. */
typedef void (*http_metrics_cb)(void *ud, FILE *out);

#define HTTP_HOOKS_MAX 8

/* Starts listening on every address of cfg->listen (cfg->listen.n must be > 0). cfg is
 * copied where needed (tokens). Logs what fails. */
int http_new(struct loop *loop, const struct config_http *cfg, struct http **ret_http);
struct http *http_free(struct http *h);

/* Serves the meter (the first one added is the default meter) and follows its telegrams. */
int http_add_meter(struct http *h, struct meter *m);
void http_set_history_hook(struct http *h, http_history_cb cb, void *ud);
int http_add_status_hook(struct http *h, const char *section, http_status_cb cb, void *ud);
int http_add_metrics_hook(struct http *h, http_metrics_cb cb, void *ud);
/* Port the first listen address is bound to (useful with port 0), or -errno. */
int http_port(const struct http *h);
/* The local addresses HTTP listens on (bound, or passed by systemd), up to max; the count. */
struct sockaddr_storage;
size_t http_local_addrs(const struct http *h, struct sockaddr_storage *ret, size_t max);

/* ---- for the route files and tests ---------------------------------------------------- */

/* What a route sees of a meter: plain data, so routes are testable without a daemon. */
struct http_meter_view {
	const char *name;
	const struct p1_telegram *latest; /* NULL before the first telegram */
	struct meter_stats stats;
	struct source_stats src;
	const char *source_kind;  /* "serial", "tcp", "file" */
	const char *source_state; /* source_state_name() */
	bool connected;
	int64_t last_age_ms; /* -1: no telegram yet */
};

struct http_request {
	const char *method; /* "GET", "HEAD", ... */
	const char *path;   /* URL path, decoded by MHD, without the query */
	/* query parameter lookup; NULL when absent */
	const char *(*arg)(const struct http_request *req, const char *name);
	const char *(*header)(const struct http_request *req, const char *name);
	void *ctx;
};

struct http_reply {
	int status;
	const char *content_type; /* static string */
	char *body;               /* malloc'd, owned by the reply */
	size_t len;
	const char *allow; /* Allow header for 405, or NULL */
	bool sse;          /* the route wants a live event stream (body unused) */
	int sse_meter;     /* index of the meter it follows */
	/* a body made piece by piece (body unused): read() puts up to max bytes into buf and
	 * returns how many; 0: nothing yet, call again in the next loop iteration (the work goes
	 * in steps, so that telegrams are not kept waiting); -1: the end; < -1: failed (the
	 * connection is closed, the client sees a cut reply). stream_free() ends it. */
	ssize_t (*stream_read)(void *ud, char *buf, size_t max);
	void (*stream_free)(void *ud);
	void *stream_ud;
	/* the dashboard's files (http_static.c) */
	const char *cache_control; /* NULL: "no-store" */
	const char *csp;           /* Content-Security-Policy, or NULL */
	char etag[72];             /* ETag, "" for none */
};

/* What the routes know of the server. */
struct http_ctx {
	struct http_meter_view meters[HTTP_METERS_MAX];
	size_t n_meters;
	int64_t uptime_s;
	bool homewizard;
	struct http_static *www; /* the dashboard's files, NULL when it is off */
	struct http *h;          /* NULL in unit tests: no hooks */
};

/* Route resolution result of api_v1_parse(). */
enum api_route {
	API_NOT_FOUND = 0,
	API_METERS,      /* /api/v1/meters */
	API_STATUS,      /* /api/v1/status */
	API_NOW,         /* [/api/v1/meters/<m>]/now */
	API_TELEGRAM,    /* [/api/v1/meters/<m>]/telegram */
	API_EVENTS,      /* [/api/v1/meters/<m>]/events */
	API_HISTORY,     /* [/api/v1/meters/<m>]/history */
	API_METRICS,     /* /metrics */
	API_HW_API,      /* /api (HomeWizard) */
	API_HW_DATA,     /* /api/v1/data (HomeWizard) */
	API_HW_TELEGRAM, /* /api/v1/telegram (HomeWizard) */
	API_STATIC,      /* a dashboard file (http_static.c), decided by api_dispatch */
};

/* Parses a path. For meter routes *ret_meter is the meter name ("" for the default meter),
 * copied into meter (size CONFIG_METER_NAME_MAX + 1 is enough; longer names give
 * API_NOT_FOUND). Pure. */
enum api_route api_v1_parse(const char *path, char *meter, size_t meter_size);

/* Answers one request: fills reply (status, type, body). Pure but for the hooks of ctx->h. */
void api_dispatch(const struct http_ctx *ctx, const struct http_request *req,
                  struct http_reply *reply);

/* reply = {"error": msg} with status. */
void http_reply_error(struct http_reply *r, int status, const char *msg);
/* reply = dumped json (steals the reference). */
void http_reply_json(struct http_reply *r, int status, json_t *j);
/* reply = body (steals the malloc'd buffer). */
void http_reply_take(struct http_reply *r, int status, const char *type, char *body, size_t len);

/* Constant-time comparison of a presented token with the configured one (both NUL-terminated;
 * time does not depend on where they differ or on the configured token's length). */
bool http_token_equal(const char *presented, const char *expected);

/* Prometheus exposition of the meters (and, with ctx->h, the hooks) into out. */
void api_metrics_write(const struct http_ctx *ctx, FILE *out);

/* HomeWizard v1 JSON of a telegram (malloc'd, NUL-terminated; NULL on out of memory). */
char *api_hw_data(const struct p1_telegram *t);
/* HomeWizard /api object for a meter. */
char *api_hw_info(const struct http_meter_view *m);
/* What /api says of p1d, also announced over mDNS (mdns.h). */
#define API_HW_PRODUCT_TYPE "HWE-P1"
#define API_HW_PRODUCT_NAME "P1 meter (p1d)"
#define API_HW_SERIAL_LEN 12
/* The serial /api gives for a meter: 12 hex digits derived from its name. */
void api_hw_serial(const char *meter_name, char ret[API_HW_SERIAL_LEN + 1]);

/* The raw telegram with equipment ids masked (malloc'd copy; NULL on out of memory). */
char *api_mask_telegram(const char *raw, size_t len);

/* Used by api_v1 for hooks (NULL-safe on h). */
void http_run_status_hooks(struct http *h, json_t *status);
void http_run_metrics_hooks(struct http *h, FILE *out);
int http_run_history_hook(struct http *h, const char *meter, const struct http_request *req,
                          struct http_reply *reply);

#endif
