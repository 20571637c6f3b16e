/* relay.h - the raw telegram relay: a read-only TCP server that re-sends every valid raw
 * telegram, byte for byte, to each connected client, so that other tools (DSMR Reader, Home
 * Assistant's network dsmr integration) can share the one P1 port.
 *
 * Clients never slow p1d down: writes are non-blocking, each client has a bounded queue, and
 * a client whose queue would overflow is dropped (counted). What clients send is read and
 * discarded. Register relay_raw_sink() with meter_add_raw_sink() for the meter to relay.
 */
#ifndef P1D_RELAY_H
#define P1D_RELAY_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct loop;
struct meter;
struct relay;

#define RELAY_CLIENTS_MAX 16               /* clients at once; more are refused */
#define RELAY_CLIENT_QUEUE_MAX (64u << 10) /* bytes queued per client before it is dropped */
#define RELAY_CLIENT_SNDBUF (64 << 10)     /* kernel send buffer per client */

struct relay_stats {
	uint64_t accepted;  /* clients accepted */
	uint64_t refused;   /* clients refused: RELAY_CLIENTS_MAX reached */
	uint64_t dropped;   /* clients dropped for being slow */
	uint64_t telegrams; /* telegrams relayed */
	size_t clients;     /* clients connected now */
};

/* Listens on host:port (host NULL: all addresses; port 0: any free port). */
int relay_new(struct loop *loop, const char *host, int port, struct relay **ret_relay);
struct relay *relay_free(struct relay *r);

/* Queues one telegram's bytes for every client and writes what the sockets take now. */
void relay_send(struct relay *r, const uint8_t *frame, size_t len);
/* meter_raw_cb: ud is the relay. */
void relay_raw_sink(void *ud, struct meter *m, const uint8_t *frame, size_t len);

/* The bound port, or a negative errno. */
int relay_port(const struct relay *r);
void relay_get_stats(const struct relay *r, struct relay_stats *ret);
/* Prometheus families p1d_relay_* (an http_metrics_cb: ud is the relay). */
void relay_write_metrics(void *ud, FILE *out);

#endif
