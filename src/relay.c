/* relay.c - the raw telegram relay (see relay.h). One listening socket and up to
 * RELAY_CLIENTS_MAX client sockets, all non-blocking and watched by the loop. A client's queue
 * is a linear buffer of at most RELAY_CLIENT_QUEUE_MAX bytes: a telegram is appended whole or
 * the client is dropped, so a client never receives a partial telegram followed by another.
 * Never blocks, never reads a client's bytes for meaning, never calls another sink.
 */
#include <errno.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"
#include "relay.h"

struct relay_client {
	struct relay *r;
	int fd;
	struct loop_watch *w;
	uint8_t *buf;
	size_t len, off;
};

struct relay {
	struct loop *loop;
	int fd;
	struct loop_watch *w;
	struct relay_client *c[RELAY_CLIENTS_MAX];
	struct relay_stats st;
};

static void client_close(struct relay_client *c)
{
	struct relay *r = c->r;
	for (size_t i = 0; i < RELAY_CLIENTS_MAX; i++)
		if (r->c[i] == c)
			r->c[i] = NULL;
	loop_watch_remove(c->w);
	close(c->fd);
	free(c->buf);
	free(c);
	r->st.clients--;
}

/* Writes what the socket takes. Returns 0, or -errno when the client is gone. */
static int client_flush(struct relay_client *c)
{
	while (c->off < c->len) {
		ssize_t n =
		        send(c->fd, c->buf + c->off, c->len - c->off, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			if (errno == EINTR)
				continue;
			return -errno;
		}
		c->off += (size_t)n;
	}
	if (c->off == c->len)
		c->off = c->len = 0;
	return loop_watch_modify(c->w, c->len ? EPOLLIN | EPOLLOUT : EPOLLIN);
}

static void on_client(struct loop_watch *w, int fd, uint32_t events, void *ud)
{
	struct relay_client *c = ud;
	uint8_t sink[1024];
	(void)w;
	if (events & EPOLLIN) {
		ssize_t n = recv(fd, sink, sizeof(sink), MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
			client_close(c); /* the client went away */
			return;
		}
	}
	if ((events & (EPOLLERR | EPOLLHUP)) || ((events & EPOLLOUT) && client_flush(c) < 0))
		client_close(c);
}

static void on_accept(struct loop_watch *w, int fd, uint32_t events, void *ud)
{
	struct relay *r = ud;
	(void)w;
	(void)events;
	/* bounded: at most a few accepts per wake-up, the rest come with the next one */
	for (int k = 0; k < 8; k++) {
		int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (cfd < 0)
			return;
		size_t i = 0;
		while (i < RELAY_CLIENTS_MAX && r->c[i])
			i++;
		struct relay_client *c = i < RELAY_CLIENTS_MAX ? calloc(1, sizeof(*c)) : NULL;
		if (!c) {
			r->st.refused++;
			close(cfd);
			continue;
		}
		/* the kernel's buffer too is bounded, or a stalled client could hide megabytes in it
		 * (loopback autotuning) before our queue notices */
		int sndbuf = RELAY_CLIENT_SNDBUF;
		setsockopt(cfd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
		*c = (struct relay_client){.r = r, .fd = cfd};
		if (loop_watch_add(r->loop, cfd, EPOLLIN, on_client, c, &c->w) < 0) {
			close(cfd);
			free(c);
			r->st.refused++;
			continue;
		}
		r->c[i] = c;
		r->st.clients++;
		r->st.accepted++;
	}
}

void relay_send(struct relay *r, const uint8_t *frame, size_t len)
{
	if (!r)
		return;
	r->st.telegrams++;
	for (size_t i = 0; i < RELAY_CLIENTS_MAX; i++) {
		struct relay_client *c = r->c[i];
		if (!c)
			continue;
		if (c->len - c->off + len > RELAY_CLIENT_QUEUE_MAX) {
			log_info("relay: client too slow (%zu bytes queued), dropped",
			         c->len - c->off);
			r->st.dropped++;
			client_close(c);
			continue;
		}
		if (c->off) {
			memmove(c->buf, c->buf + c->off, c->len - c->off);
			c->len -= c->off;
			c->off = 0;
		}
		if (!c->buf && !(c->buf = malloc(RELAY_CLIENT_QUEUE_MAX))) {
			client_close(c);
			continue;
		}
		memcpy(c->buf + c->len, frame, len);
		c->len += len;
		if (client_flush(c) < 0)
			client_close(c);
	}
}

void relay_raw_sink(void *ud, struct meter *m, const uint8_t *frame, size_t len)
{
	(void)m;
	relay_send(ud, frame, len);
}

int relay_new(struct loop *loop, const char *host, int port, struct relay **ret_relay)
{
	struct addrinfo hints = {.ai_flags = AI_PASSIVE | AI_NUMERICSERV,
	                         .ai_socktype = SOCK_STREAM},
	                *res = NULL;
	char ps[8];
	int one = 1, r;
	snprintf(ps, sizeof(ps), "%d", port);
	if (getaddrinfo(host, ps, &hints, &res) != 0 || !res) {
		log_error("relay: cannot resolve %s", host ? host : "*");
		return -EADDRNOTAVAIL;
	}
	struct relay *rl = calloc(1, sizeof(*rl));
	if (!rl) {
		freeaddrinfo(res);
		return -ENOMEM;
	}
	rl->loop = loop;
	rl->fd = socket(res->ai_family, res->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (rl->fd < 0 || setsockopt(rl->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(rl->fd, res->ai_addr, res->ai_addrlen) < 0 || listen(rl->fd, 16) < 0) {
		r = -errno;
		log_error("relay: cannot listen on %s:%d: %s", host ? host : "*", port,
		          strerror(-r));
		freeaddrinfo(res);
		relay_free(rl);
		return r;
	}
	freeaddrinfo(res);
	if ((r = loop_watch_add(loop, rl->fd, EPOLLIN, on_accept, rl, &rl->w)) < 0) {
		relay_free(rl);
		return r;
	}
	log_info("relay: listening on %s:%d", host ? host : "*", relay_port(rl));
	*ret_relay = rl;
	return 0;
}

struct relay *relay_free(struct relay *r)
{
	if (!r)
		return NULL;
	for (size_t i = 0; i < RELAY_CLIENTS_MAX; i++)
		if (r->c[i])
			client_close(r->c[i]);
	loop_watch_remove(r->w);
	if (r->fd >= 0)
		close(r->fd);
	free(r);
	return NULL;
}

int relay_port(const struct relay *r)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	memset(&ss, 0, sizeof(ss));
	if (!r || getsockname(r->fd, (struct sockaddr *)&ss, &len) < 0)
		return -ENOTCONN;
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

void relay_get_stats(const struct relay *r, struct relay_stats *ret)
{
	*ret = r->st;
}

void relay_write_metrics(void *ud, FILE *out)
{
	const struct relay *r = ud;
	fprintf(out,
	        "# HELP p1d_relay_clients Raw telegram relay clients connected\n"
	        "# TYPE p1d_relay_clients gauge\np1d_relay_clients %zu\n"
	        "# HELP p1d_relay_dropped_total Relay clients dropped for being slow\n"
	        "# TYPE p1d_relay_dropped_total counter\np1d_relay_dropped_total %llu\n"
	        "# HELP p1d_relay_refused_total Relay clients refused at the client limit\n"
	        "# TYPE p1d_relay_refused_total counter\np1d_relay_refused_total %llu\n",
	        r->st.clients, (unsigned long long)r->st.dropped,
	        (unsigned long long)r->st.refused);
}
