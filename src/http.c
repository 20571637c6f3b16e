/* http.c - the HTTP server: libmicrohttpd driven by p1d's loop, authentication, replies and
 * the Server-Sent Events stream.
 *
 * One MHD daemon per listen address, each in external epoll mode (MHD_USE_EPOLL, no thread):
 * its epoll fd is watched by the loop, MHD_run() is called when it is readable, and a
 * before-sleep hook arms one timer with the smallest MHD_get_timeout(). Requests are answered
 * at once by api_dispatch() from a snapshot of the meters (struct http_ctx); nothing here
 * blocks. An SSE client gets a bounded queue filled by the meter sink and a response whose
 * content reader suspends the connection when the queue is empty; a new telegram resumes it.
 * A client whose queue overflows is dropped. Owned by main; never calls another sink.
 */
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "config.h"
#include "http.h"
#include "http_static.h"
#include "log.h"
#include "loop.h"
#include "p1/json.h"
#include "source.h"

#define HTTP_DAEMONS_MAX ((size_t)2 * CONFIG_LISTEN_MAX) /* a name may resolve to v4 and v6 */
#define HTTP_SSE_EVENT_START 16384u
#define HTTP_STREAM_BLOCK 32768u /* bytes MHD asks a streamed reply for at a time */
#define HTTP_STREAM_TURN 131072u /* bytes a streamed reply gives per loop iteration at most */

struct http_meter {
	struct http *h;
	struct meter *m;
	uint64_t seq; /* SSE event id */
};

struct sse_client {
	struct http *h;
	struct MHD_Connection *conn;
	size_t meter;
	char *buf;
	size_t len, off, cap;
	bool suspended, closing;
	uint16_t last2;      /* the last two bytes handed to MHD: "\n\n" ends an event */
	uint64_t taken_ms;   /* when MHD last took bytes (or the stream started) */
	struct sse_client *prev, *next;
};

struct http_hook {
	const char *section;
	void *cb;
	void *ud;
};

struct http {
	struct loop *loop;
	struct MHD_Daemon *d[HTTP_DAEMONS_MAX];
	struct loop_watch *w[HTTP_DAEMONS_MAX];
	size_t n_d;
	struct loop_timer *timer, *heartbeat;
	struct loop_hook *hook;
	char *read_token, *admin_token;
	char *tls_cert, *tls_key; /* PEM, NULL without TLS */
	bool homewizard;
	/* the dashboard's files, NULL when it is off */
	struct http_static *www;
	bool kicked; /* the timer is armed for "now" */
	uint64_t started_ms;
	struct http_meter meters[HTTP_METERS_MAX];
	size_t n_meters;
	struct sse_client *sse;
	size_t n_sse;
	struct http_stream *streams; /* replies made piece by piece */
	size_t n_streams;
	uint64_t sse_dropped, sse_skipped, requests;
	char *event; /* scratch for one SSE event */
	size_t event_cap;
	http_history_cb history;
	void *history_ud;
	struct http_hook status[HTTP_HOOKS_MAX], metrics[HTTP_HOOKS_MAX];
	size_t n_status, n_metrics;
};

bool http_token_equal(const char *presented, const char *expected)
{
	unsigned char a[SHA256_DIGEST_LENGTH], b[SHA256_DIGEST_LENGTH];
	if (!presented || !expected)
		return false;
	/* comparing digests makes the time independent of lengths and contents */
	SHA256((const unsigned char *)presented, strlen(presented), a);
	SHA256((const unsigned char *)expected, strlen(expected), b);
	return CRYPTO_memcmp(a, b, sizeof(a)) == 0;
}

/* ---- hooks ---- */

void http_set_history_hook(struct http *h, http_history_cb cb, void *ud)
{
	h->history = cb;
	h->history_ud = ud;
}

int http_add_status_hook(struct http *h, const char *section, http_status_cb cb, void *ud)
{
	if (!section || !cb)
		return -EINVAL;
	if (h->n_status == HTTP_HOOKS_MAX)
		return -E2BIG;
	h->status[h->n_status++] = (struct http_hook){section, (void *)cb, ud};
	return 0;
}

int http_add_metrics_hook(struct http *h, http_metrics_cb cb, void *ud)
{
	if (!cb)
		return -EINVAL;
	if (h->n_metrics == HTTP_HOOKS_MAX)
		return -E2BIG;
	h->metrics[h->n_metrics++] = (struct http_hook){NULL, (void *)cb, ud};
	return 0;
}

void http_run_status_hooks(struct http *h, json_t *status)
{
	json_t *http = json_pack("{s:I, s:I, s:I, s:I}", "requests",
	                         (json_int_t)(h ? h->requests : 0), "sse_clients",
	                         (json_int_t)(h ? h->n_sse : 0), "sse_dropped",
	                         (json_int_t)(h ? h->sse_dropped : 0), "sse_skipped",
	                         (json_int_t)(h ? h->sse_skipped : 0));
	json_object_set_new(status, "http", http);
	for (size_t i = 0; h && i < h->n_status; i++) {
		json_t *sec = json_object();
		((http_status_cb)h->status[i].cb)(h->status[i].ud, sec);
		json_object_set_new(status, h->status[i].section, sec);
	}
}

void http_run_metrics_hooks(struct http *h, FILE *out)
{
	if (!h)
		return;
	fputs("# HELP p1d_http_requests_total HTTP requests answered\n"
	      "# TYPE p1d_http_requests_total counter\n",
	      out);
	fprintf(out, "p1d_http_requests_total %llu\n", (unsigned long long)h->requests);
	fputs("# HELP p1d_http_sse_clients Live event stream clients\n"
	      "# TYPE p1d_http_sse_clients gauge\n",
	      out);
	fprintf(out, "p1d_http_sse_clients %zu\n", h->n_sse);
	fputs("# HELP p1d_http_sse_dropped_total Event stream clients dropped for being slow\n"
	      "# TYPE p1d_http_sse_dropped_total counter\n",
	      out);
	fprintf(out, "p1d_http_sse_dropped_total %llu\n", (unsigned long long)h->sse_dropped);
	fputs("# HELP p1d_http_sse_skipped_total Events not sent to event stream clients that had "
	      "fallen behind\n"
	      "# TYPE p1d_http_sse_skipped_total counter\n",
	      out);
	fprintf(out, "p1d_http_sse_skipped_total %llu\n", (unsigned long long)h->sse_skipped);
	for (size_t i = 0; i < h->n_metrics; i++)
		((http_metrics_cb)h->metrics[i].cb)(h->metrics[i].ud, out);
}

int http_run_history_hook(struct http *h, const char *meter, const struct http_request *req,
                          struct http_reply *reply)
{
	if (!h || !h->history)
		return -ENOSYS;
	int r = h->history(h->history_ud, meter, req, reply);
	if (r < 0 && r != -ENOSYS && !reply->body)
		http_reply_error(reply, 503, "history query failed");
	return r;
}

/* ---- the routes' view of the meters ---- */

static void fill_ctx(struct http *h, struct http_ctx *ctx)
{
	uint64_t now = loop_now_ms();
	ctx->n_meters = h->n_meters;
	ctx->uptime_s = (int64_t)((now - h->started_ms) / 1000);
	ctx->homewizard = h->homewizard;
	ctx->www = h->www;
	ctx->h = h;
	for (size_t i = 0; i < h->n_meters; i++) {
		struct http_meter_view *v = &ctx->meters[i];
		const struct source *s = meter_source(h->meters[i].m);
		enum source_state st = source_get_state(s);
		v->name = meter_name(h->meters[i].m);
		v->latest = meter_latest(h->meters[i].m);
		meter_get_stats(h->meters[i].m, &v->stats);
		source_get_stats(s, &v->src);
		v->source_kind = source_kind_name(source_impl_config(s)->kind);
		v->source_state = source_state_name(st);
		v->connected = st == SOURCE_CONNECTED;
		v->last_age_ms =
		        v->stats.last_telegram_ms ? (int64_t)(now - v->stats.last_telegram_ms) : -1;
	}
}

/* ---- replies ---- */

/* A reply made piece by piece (http_reply.stream_read): when a piece is not ready, the
 * connection is suspended and resumed in the next loop iteration, so that MHD does not call
 * again at once and the loop serves the meters in between. */
struct http_stream {
	struct http *h;
	struct MHD_Connection *conn;
	ssize_t (*read)(void *ud, char *buf, size_t max);
	void (*free)(void *ud);
	void *ud;
	bool suspended;
	size_t given; /* bytes since the last resume */
	struct http_stream *prev, *next;
};

static void kick(struct http *h);

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct http_stream *s = cls;
	(void)pos;
	/* MHD asks again as long as the socket takes more: a fast client would keep the loop */
	ssize_t n = s->given < HTTP_STREAM_TURN ? s->read(s->ud, buf, max) : 0;
	if (n > 0) {
		s->given += (size_t)n;
		return n;
	}
	if (n == 0) {
		s->given = 0;
		s->suspended = true;
		MHD_suspend_connection(s->conn);
		kick(s->h);
		return 0;
	}
	if (n < -1)
		log_info("http: a reply failed half way, connection closed");
	return n == -1 ? MHD_CONTENT_READER_END_OF_STREAM : MHD_CONTENT_READER_END_WITH_ERROR;
}

static void stream_free(void *cls)
{
	struct http_stream *s = cls;
	if (s->prev)
		s->prev->next = s->next;
	else
		s->h->streams = s->next;
	if (s->next)
		s->next->prev = s->prev;
	s->h->n_streams--;
	s->free(s->ud);
	free(s);
}

/* the suspended streams go on (from the loop's timer: MHD sees them in the next MHD_run) */
static void streams_resume(struct http *h)
{
	for (struct http_stream *s = h->streams; s; s = s->next)
		if (s->suspended) {
			s->suspended = false;
			MHD_resume_connection(s->conn);
		}
}

static struct MHD_Response *stream_response(struct http *h, struct MHD_Connection *c,
                                            struct http_reply *r)
{
	struct http_stream *s = calloc(1, sizeof(*s));
	if (!s) {
		r->stream_free(r->stream_ud);
		return NULL;
	}
	*s = (struct http_stream){.h = h, .conn = c, .read = r->stream_read,
	                          .free = r->stream_free, .ud = r->stream_ud, .next = h->streams};
	r->stream_read = NULL;
	struct MHD_Response *resp = MHD_create_response_from_callback(
	        MHD_SIZE_UNKNOWN, HTTP_STREAM_BLOCK, stream_read, s, stream_free);
	if (!resp) {
		s->free(s->ud);
		free(s);
		return NULL;
	}
	if (h->streams)
		h->streams->prev = s;
	h->streams = s;
	h->n_streams++;
	return resp;
}

/* The reply's headers on resp, then queued (resp is released). */
static enum MHD_Result respond(struct MHD_Connection *c, struct http_reply *r,
                               struct MHD_Response *resp)
{
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
	                        r->content_type ? r->content_type : "text/plain");
	MHD_add_response_header(resp, "X-Robots-Tag", "noindex");
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL,
	                        r->cache_control ? r->cache_control : "no-store");
	MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
	if (r->etag[0])
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, r->etag);
	if (r->csp)
		MHD_add_response_header(resp, "Content-Security-Policy", r->csp);
	if (r->allow)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, r->allow);
	if (r->status == 401)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
		                        "Bearer realm=\"p1d\"");
	enum MHD_Result ret = MHD_queue_response(c, (unsigned)r->status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static enum MHD_Result queue(struct MHD_Connection *c, struct http_reply *r)
{
	struct MHD_Response *resp;
	if (r->body)
		resp = MHD_create_response_from_buffer(r->len, r->body, MHD_RESPMEM_MUST_FREE);
	else
		resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
	if (!resp) {
		free(r->body);
		return MHD_NO;
	}
	r->body = NULL;
	return respond(c, r, resp);
}

/* queue(), or a reply made piece by piece */
static enum MHD_Result queue_reply(struct http *h, struct MHD_Connection *c,
                                   struct http_reply *r)
{
	if (!r->stream_read)
		return queue(c, r);
	struct MHD_Response *resp = stream_response(h, c, r);
	return resp ? respond(c, r, resp) : MHD_NO;
}

/* ---- Server-Sent Events ---- */

static void kick(struct http *h)
{
	/* run MHD in the next iteration: a resumed connection is only seen by MHD_run */
	h->kicked = true;
	loop_timer_arm(h->timer, 0, 0);
}

static void sse_resume(struct sse_client *c)
{
	if (c->suspended) {
		c->suspended = false;
		MHD_resume_connection(c->conn);
		kick(c->h);
	}
}

static void sse_drop(struct sse_client *c)
{
	if (c->closing)
		return;
	c->closing = true;
	c->h->sse_dropped++;
	sse_resume(c);
}

#define SSE_END ('\n' << 8 | '\n')

/* The client fell HTTP_SSE_QUEUE_MAX behind: forget the events it has not started reading,
 * so that it goes on with the newest (the ids show the gap). The event MHD is in the middle
 * of is kept whole, so the stream stays well formed. Events never hold "\n\n" but at their
 * end (the JSON has no raw newline). */
static void sse_skip(struct sse_client *c)
{
	size_t keep = c->off;
	if (c->last2 != SSE_END && c->off < c->len) {
		if ((c->last2 & 0xff) == '\n' && c->buf[c->off] == '\n') {
			keep = c->off + 1;
		} else {
			const char *e = memmem(c->buf + c->off, c->len - c->off, "\n\n", 2);
			keep = e ? (size_t)(e - c->buf) + 2 : c->len;
		}
	}
	/* count the events (not the keep-alive comments) that start in what goes */
	for (size_t i = keep; i < c->len; i++)
		if (c->buf[i] == 'i' &&
		    (i == keep || (i >= keep + 2 && c->buf[i - 1] == '\n' && c->buf[i - 2] == '\n')))
			c->h->sse_skipped++;
	c->len = keep;
}

/* Queues an event. A client more than HTTP_SSE_QUEUE_MAX behind skips to the newest event;
 * one that has taken nothing for HTTP_SSE_STALL_MS is not reading at all and is dropped. */
static void sse_push(struct sse_client *c, const char *data, size_t len)
{
	if (c->closing)
		return;
	if (c->off == c->len) { /* caught up: the stall clock starts now */
		c->off = c->len = 0;
		c->taken_ms = loop_now_ms();
	}
	if (c->len - c->off + len > HTTP_SSE_QUEUE_MAX) {
		if (loop_now_ms() - c->taken_ms >= HTTP_SSE_STALL_MS) {
			log_info("http: event stream client stopped reading, dropped");
			sse_drop(c);
			return;
		}
		sse_skip(c);
	}
	if (c->len + len > c->cap) {
		if (c->off) {
			memmove(c->buf, c->buf + c->off, c->len - c->off);
			c->len -= c->off;
			c->off = 0;
		}
		if (c->len + len > c->cap) {
			size_t cap = c->len + len + 4096;
			char *b = realloc(c->buf, cap);
			if (!b) {
				sse_drop(c);
				return;
			}
			c->buf = b;
			c->cap = cap;
		}
	}
	memcpy(c->buf + c->len, data, len);
	c->len += len;
	sse_resume(c);
}

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct sse_client *c = cls;
	(void)pos;
	if (c->closing)
		return MHD_CONTENT_READER_END_WITH_ERROR;
	size_t n = c->len - c->off;
	if (n == 0) {
		c->suspended = true;
		MHD_suspend_connection(c->conn);
		return 0;
	}
	if (n > max)
		n = max;
	if (!n)
		return 0;
	memcpy(buf, c->buf + c->off, n);
	c->off += n;
	c->taken_ms = loop_now_ms();
	c->last2 = n >= 2 ? (uint16_t)((uint8_t)buf[n - 2] << 8 | (uint8_t)buf[n - 1])
	                  : (uint16_t)(c->last2 << 8 | (uint8_t)buf[0]);
	return (ssize_t)n;
}

static void sse_free(void *cls)
{
	struct sse_client *c = cls;
	if (c->prev)
		c->prev->next = c->next;
	else
		c->h->sse = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->h->n_sse--;
	free(c->buf);
	free(c);
}

/* "id: N\nevent: telegram\ndata: {...}\n\n" in h->event for the meter's latest telegram (its
 * JSON shared with the other sinks, meter.h); returns its length, 0 on failure */
static size_t sse_format(struct http *h, struct http_meter *hm)
{
	const char *json;
	size_t n = meter_latest_json(hm->m, P1_JSON_ALL, &json);
	char head[64];
	int k = snprintf(head, sizeof(head), "id: %llu\nevent: telegram\ndata: ",
	                 (unsigned long long)hm->seq);
	if (!n || k <= 0 || (size_t)k >= sizeof(head))
		return 0;
	size_t want = (size_t)k + n + 3;
	if (want > h->event_cap) {
		char *e = want <= HTTP_BODY_MAX ? realloc(h->event, want) : NULL;
		if (!e)
			return 0;
		h->event = e;
		h->event_cap = want;
	}
	memcpy(h->event, head, (size_t)k);
	memcpy(h->event + k, json, n);
	memcpy(h->event + (size_t)k + n, "\n\n", 3);
	return want - 1;
}

static void on_telegram(void *ud, struct meter *m, const struct p1_telegram *t,
                        int64_t received_utc)
{
	struct http_meter *hm = ud;
	struct http *h = hm->h;
	(void)m;
	(void)t;
	(void)received_utc;
	hm->seq++;
	if (!h->sse)
		return;
	size_t n = sse_format(h, hm);
	size_t index = (size_t)(hm - h->meters);
	for (struct sse_client *c = h->sse, *next; c; c = next) {
		next = c->next;
		if (c->meter != index)
			continue;
		if (n)
			sse_push(c, h->event, n);
		else
			sse_drop(c);
	}
}

static void on_heartbeat(struct loop_timer *t, void *ud)
{
	struct http *h = ud;
	(void)t;
	for (struct sse_client *c = h->sse; c; c = c->next)
		sse_push(c, ": keep-alive\n\n", 14);
}

static enum MHD_Result sse_start(struct http *h, struct MHD_Connection *conn, size_t meter)
{
	struct http_reply err = {0};
	if (h->n_sse >= HTTP_SSE_CLIENTS_MAX) {
		http_reply_error(&err, 503, "too many event stream clients");
		return queue(conn, &err);
	}
	struct sse_client *c = calloc(1, sizeof(*c));
	if (!c)
		return MHD_NO;
	*c = (struct sse_client){.h = h, .conn = conn, .meter = meter, .last2 = SSE_END,
	                         .taken_ms = loop_now_ms()};
	struct MHD_Response *resp =
	        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, sse_read, c, sse_free);
	if (!resp) {
		free(c);
		return MHD_NO;
	}
	c->next = h->sse;
	if (h->sse)
		h->sse->prev = c;
	h->sse = c;
	h->n_sse++;
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	MHD_add_response_header(resp, "X-Robots-Tag", "noindex");
	MHD_add_response_header(resp, "X-Accel-Buffering", "no");
	/* the latest telegram at once, so a client need not wait for the next */
	struct http_meter *hm = &h->meters[meter];
	size_t n = sse_format(h, hm);
	if (n)
		sse_push(c, h->event, n);
	else
		sse_push(c, ": p1d\n\n", 7);
	enum MHD_Result ret = MHD_queue_response(conn, MHD_HTTP_OK, resp);
	MHD_destroy_response(resp);
	return ret;
}

/* ---- requests ---- */

static const char *req_arg(const struct http_request *req, const char *name)
{
	return MHD_lookup_connection_value(req->ctx, MHD_GET_ARGUMENT_KIND, name);
}

static const char *req_header(const struct http_request *req, const char *name)
{
	return MHD_lookup_connection_value(req->ctx, MHD_HEADER_KIND, name);
}

static bool authorized(const struct http *h, struct MHD_Connection *c)
{
	if (!h->read_token[0])
		return true;
	const char *a =
	        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
	if (!a || strncasecmp(a, "Bearer ", 7))
		return false;
	/* the admin token also allows reading */
	bool ok = http_token_equal(a + 7, h->read_token);
	if (h->admin_token[0])
		ok |= http_token_equal(a + 7, h->admin_token);
	return ok;
}

static bool has_body(struct MHD_Connection *conn)
{
	const char *cl =
	        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
	return (cl && strcmp(cl, "0")) ||
	       MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
	                                   MHD_HTTP_HEADER_TRANSFER_ENCODING);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
	struct http *h = cls;
	struct http_reply reply = {0};
	(void)version;
	(void)upload_data;
	if (!*con_cls) {
		/* first call, headers only: answering now would make MHD close the connection
		 * (it cannot know there is no body); answer in the second call */
		*con_cls = h;
		if (!has_body(conn))
			return MHD_YES;
	}
	if (*upload_data_size) {
		*upload_data_size = 0; /* bodies are never read: refused below */
		return MHD_YES;
	}
	h->requests++;
	/* the dashboard's files hold no data: the page asks for the token itself */
	if (!authorized(h, conn) && !http_static_known(h->www, url)) {
		http_reply_error(&reply, 401, "missing or invalid token");
		return queue(conn, &reply);
	}
	/* no route takes a body; refuse one instead of reading it */
	if (has_body(conn)) {
		http_reply_error(&reply, 400, "request body not allowed");
		return queue(conn, &reply);
	}
	struct http_ctx *ctx = calloc(1, sizeof(*ctx));
	if (!ctx)
		return MHD_NO;
	fill_ctx(h, ctx);
	struct http_request req = {method, url, req_arg, req_header, conn};
	api_dispatch(ctx, &req, &reply);
	free(ctx);
	if (reply.sse) {
		if (!strcmp(method, "HEAD")) {
			reply.sse = false;
			http_reply_take(&reply, 200, "text/event-stream", NULL, 0);
			return queue(conn, &reply);
		}
		return sse_start(h, conn, (size_t)reply.sse_meter);
	}
	return queue_reply(h, conn, &reply);
}

/* ---- MHD and the loop ---- */

static void run_all(struct http *h)
{
	for (size_t i = 0; i < h->n_d; i++)
		MHD_run(h->d[i]);
}

static void on_epoll(struct loop_watch *w, int fd, uint32_t events, void *ud)
{
	struct MHD_Daemon *d = ud;
	(void)w;
	(void)fd;
	(void)events;
	MHD_run(d);
}

static void on_timer(struct loop_timer *t, void *ud)
{
	struct http *h = ud;
	(void)t;
	h->kicked = false;
	streams_resume(h);
	run_all(h);
}

static void before_sleep(struct loop *l, void *ud)
{
	struct http *h = ud;
	uint64_t best = UINT64_MAX;
	(void)l;
	if (h->kicked)
		return;
	for (size_t i = 0; i < h->n_d; i++) {
		MHD_UNSIGNED_LONG_LONG t;
		if (MHD_get_timeout(h->d[i], &t) == MHD_YES && t < best)
			best = t;
	}
	if (best == UINT64_MAX)
		loop_timer_disarm(h->timer);
	else if (!loop_timer_armed(h->timer) ||
	         loop_timer_deadline_ms(h->timer) > loop_now_ms() + best)
		loop_timer_arm(h->timer, best, 0);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	(void)cls;
	char msg[256];
	vsnprintf(msg, sizeof(msg), fmt, ap); /* Flawfinder: ignore: libmicrohttpd's format */
	msg[strcspn(msg, "\n")] = 0;
	log_debug("http: %s", msg);
}

/* A new connection: bound the kernel's send buffer, so that a live-stream client that stopped
 * reading fills its (bounded) queue soon instead of hiding megabytes in the kernel. */
static void on_connection(void *cls, struct MHD_Connection *c, void **socket_ctx,
                          enum MHD_ConnectionNotificationCode toe)
{
	(void)cls;
	(void)socket_ctx;
	const union MHD_ConnectionInfo *ci;
	int sndbuf = HTTP_SNDBUF;
	if (toe == MHD_CONNECTION_NOTIFY_STARTED &&
	    (ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD)))
		setsockopt(ci->connect_fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
}

/* One MHD daemon: on the address sa, or on the socket fd systemd passed (sa NULL). */
static int start_daemon(struct http *h, const struct config_http *cfg, const struct sockaddr *sa,
                        int fd, const char *what)
{
	unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
	if (sa && sa->sa_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	if (h->tls_cert)
		flags |= MHD_USE_TLS;
	unsigned timeout_s = (unsigned)((cfg->timeout_ms + 999) / 1000);
	struct MHD_OptionItem ops[] = {
	        {MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)mhd_log, NULL},
	        {MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)on_connection, NULL},
	        {MHD_OPTION_CONNECTION_LIMIT, cfg->max_connections, NULL},
	        {MHD_OPTION_CONNECTION_TIMEOUT, timeout_s ? timeout_s : 1, NULL},
	        {MHD_OPTION_PER_IP_CONNECTION_LIMIT, HTTP_PER_IP_MAX, NULL},
	        {MHD_OPTION_CONNECTION_MEMORY_LIMIT, HTTP_MEMORY_LIMIT, NULL},
	        sa ? (struct MHD_OptionItem){MHD_OPTION_SOCK_ADDR, 0, (void *)sa}
	           : (struct MHD_OptionItem){MHD_OPTION_LISTEN_SOCKET, fd, NULL},
	        h->tls_cert ? (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, h->tls_cert}
	                    : (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL},
	        {h->tls_key ? MHD_OPTION_HTTPS_MEM_KEY : MHD_OPTION_END, 0, h->tls_key},
	        {MHD_OPTION_END, 0, NULL},
	};
	errno = 0;
	struct MHD_Daemon *d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, h,
	                                        MHD_OPTION_ARRAY, ops, MHD_OPTION_END);
	if (!d) {
		int r = errno ? -errno : -EADDRINUSE;
		if (h->tls_cert)
			log_error("http: cannot listen on %s: %s (or tls_cert and tls_key are not a "
			          "matching PEM certificate and key)",
			          what, strerror(-r));
		else
			log_error("http: cannot listen on %s: %s", what, strerror(-r));
		return r;
	}
	const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_EPOLL_FD);
	int r = info ? loop_watch_add(h->loop, info->epoll_fd, EPOLLIN, on_epoll, d, &h->w[h->n_d])
	             : -EINVAL;
	if (r < 0) {
		MHD_stop_daemon(d);
		return r;
	}
	h->d[h->n_d++] = d;
	log_info("http: listening on %s%s", what, h->tls_cert ? " (TLS)" : "");
	return 0;
}

/* Sockets systemd passed (socket activation, p1d.socket): those named "http" (or not named)
 * serve HTTP; others are closed with a warning. Returns the number used, or -errno. */
static int listen_activated(struct http *h, const struct config_http *cfg)
{
	char **names = NULL;
	int n = sd_listen_fds_with_names(1, &names), used = 0, r = 0;
	for (int i = 0; i < n; i++) {
		int fd = SD_LISTEN_FDS_START + i;
		const char *name = names && names[i] ? names[i] : "unknown";
		char what[96];
		snprintf(what, sizeof(what), "socket %d from systemd (%s)", fd, name);
		if ((strcmp(name, "http") && strcmp(name, "unknown")) || r < 0 ||
		    h->n_d == HTTP_DAEMONS_MAX || sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1) <= 0) {
			if (r == 0)
				log_warning("http: not using %s: not a listening stream socket named "
				            "http",
				            what);
			close(fd);
			continue;
		}
		if ((r = start_daemon(h, cfg, NULL, fd, what)) == 0)
			used++;
		else
			close(fd);
	}
	for (int i = 0; names && i < n; i++)
		free(names[i]);
	free(names);
	return r < 0 ? r : used;
}

/* The whole of a PEM file (at most 64 KiB). A key must not be readable by others. */
static int read_pem(const char *key, const char *path, bool secret, char **ret)
{
	struct stat st;
	FILE *f = fopen(path, "re");
	int r = 0;
	*ret = NULL;
	if (!f || fstat(fileno(f), &st) < 0) {
		r = -errno;
		log_error("http: cannot read %s %s: %s", key, path, strerror(errno));
	} else if (secret && (st.st_mode & S_IRWXO)) {
		r = -EPERM;
		log_error("http: %s %s can be read by anyone; chmod o-rwx it", key, path);
	} else if (st.st_size <= 0 || st.st_size > 65536) {
		r = -EINVAL;
		log_error("http: %s %s is not a PEM file (size %lld)", key, path,
		          (long long)st.st_size);
	} else if (!(*ret = calloc(1, (size_t)st.st_size + 1))) {
		r = -ENOMEM;
	} else if (fread(*ret, 1, (size_t)st.st_size, f) != (size_t)st.st_size) {
		r = -EIO;
		log_error("http: cannot read %s %s", key, path);
	}
	if (f)
		fclose(f);
	if (r < 0 && *ret) {
		explicit_bzero(*ret, (size_t)st.st_size);
		free(*ret);
		*ret = NULL;
	}
	return r;
}

static int load_tls(struct http *h, const struct config_http *cfg)
{
	bool cert = cfg->tls_cert && *cfg->tls_cert, key = cfg->tls_key && *cfg->tls_key;
	if (!cert && !key)
		return 0;
	if (cert != key) {
		log_error("http: tls_cert and tls_key go together: give both or neither");
		return -EINVAL;
	}
	int r = read_pem("tls_cert", cfg->tls_cert, false, &h->tls_cert);
	if (r == 0)
		r = read_pem("tls_key", cfg->tls_key, true, &h->tls_key);
	return r;
}

static int listen_on(struct http *h, const struct config_http *cfg,
                     const struct config_hostport *hp)
{
	struct addrinfo hints = {.ai_flags = AI_PASSIVE | AI_NUMERICSERV,
	                         .ai_socktype = SOCK_STREAM},
	                *res = NULL;
	char port[8], what[300];
	snprintf(port, sizeof(port), "%d", hp->port);
	/* Flawfinder: ignore: either format is a literal (gcc checks both) */
	snprintf(what, sizeof(what), strchr(hp->host ? hp->host : "", ':') ? "[%s]:%d" : "%s:%d",
	         hp->host ? hp->host : "*", hp->port);
	/* names are resolved once at start, before the loop runs */
	int e = getaddrinfo(hp->host, port, &hints, &res);
	if (e) {
		log_error("http: cannot resolve %s: %s", what, gai_strerror(e));
		return -EADDRNOTAVAIL;
	}
	int r = 0;
	for (struct addrinfo *ai = res; ai && r == 0; ai = ai->ai_next) {
		if (h->n_d == HTTP_DAEMONS_MAX)
			break;
		r = start_daemon(h, cfg, ai->ai_addr, -1, what);
	}
	freeaddrinfo(res);
	return r;
}

int http_new(struct loop *loop, const struct config_http *cfg, struct http **ret_http)
{
	struct http *h = calloc(1, sizeof(*h));
	int r = -ENOMEM;
	if (!h)
		return -ENOMEM;
	h->loop = loop;
	h->started_ms = loop_now_ms();
	h->homewizard = cfg->homewizard;
	if (cfg->dashboard && (r = http_static_new(cfg->www_dir, cfg->chartjs, &h->www)) < 0)
		goto fail;
	r = -ENOMEM;
	h->read_token = strdup(cfg->read_token ? cfg->read_token : "");
	h->admin_token = strdup(cfg->admin_token ? cfg->admin_token : "");
	h->event_cap = HTTP_SSE_EVENT_START;
	h->event = malloc(h->event_cap);
	if (!h->read_token || !h->admin_token || !h->event)
		goto fail;
	if ((r = loop_timer_new(loop, on_timer, h, &h->timer)) < 0 ||
	    (r = loop_timer_new(loop, on_heartbeat, h, &h->heartbeat)) < 0 ||
	    (r = loop_hook_add(loop, before_sleep, h, &h->hook)) < 0)
		goto fail;
	uint64_t beat = cfg->timeout_ms > 2000 ? (uint64_t)cfg->timeout_ms / 2 : 1000;
	if (beat > HTTP_SSE_HEARTBEAT_MS)
		beat = HTTP_SSE_HEARTBEAT_MS;
	loop_timer_arm(h->heartbeat, beat, beat);
	if ((r = load_tls(h, cfg)) < 0 || (r = listen_activated(h, cfg)) < 0)
		goto fail;
	if (r > 0)
		log_info("http: socket activation: the listen addresses of p1d.conf are not used");
	for (size_t i = 0; r == 0 && i < cfg->listen.n; i++)
		if ((r = listen_on(h, cfg, &cfg->listen.v[i])) < 0)
			goto fail;
	if (h->n_d == 0) {
		r = -EINVAL;
		goto fail;
	}
	*ret_http = h;
	return 0;
fail:
	http_free(h);
	return r;
}

int http_add_meter(struct http *h, struct meter *m)
{
	if (h->n_meters == HTTP_METERS_MAX)
		return -E2BIG;
	struct http_meter *hm = &h->meters[h->n_meters];
	*hm = (struct http_meter){h, m, 0};
	int r = meter_add_sink(m, on_telegram, hm);
	if (r < 0)
		return r;
	h->n_meters++;
	return 0;
}

int http_port(const struct http *h)
{
	if (!h || !h->n_d)
		return -ENOTCONN;
	const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->d[0], MHD_DAEMON_INFO_BIND_PORT);
	return info ? info->port : -EINVAL;
}

size_t http_local_addrs(const struct http *h, struct sockaddr_storage *ret, size_t max)
{
	size_t n = 0;
	for (size_t i = 0; h && i < h->n_d && n < max; i++) {
		const union MHD_DaemonInfo *info =
		        MHD_get_daemon_info(h->d[i], MHD_DAEMON_INFO_LISTEN_FD);
		socklen_t len = sizeof(ret[n]);
		if (info && getsockname(info->listen_fd, (struct sockaddr *)&ret[n], &len) == 0)
			n++;
	}
	return n;
}

struct http *http_free(struct http *h)
{
	if (!h)
		return NULL;
	/* MHD must not be stopped with suspended connections: resume them to close */
	for (struct sse_client *c = h->sse; c; c = c->next) {
		c->closing = true;
		if (c->suspended) {
			c->suspended = false;
			MHD_resume_connection(c->conn);
		}
	}
	streams_resume(h);
	for (size_t i = 0; i < h->n_d; i++) {
		loop_watch_remove(h->w[i]);
		MHD_run(h->d[i]);
		MHD_stop_daemon(h->d[i]);
	}
	loop_hook_remove(h->hook);
	loop_timer_free(h->timer);
	loop_timer_free(h->heartbeat);
	http_static_free(h->www);
	free(h->event);
	free(h->read_token);
	free(h->admin_token);
	free(h->tls_cert);
	if (h->tls_key)
		explicit_bzero(h->tls_key, strlen(h->tls_key));
	free(h->tls_key);
	free(h);
	return NULL;
}
