/* mdns_poll.h - an AvahiPoll (avahi-common/watch.h) on p1d's loop, for libavahi-client.
 *
 * Watches become loop watches (several on one fd share one), timeouts loop timers; each may be
 * freed from inside its own callback. The AvahiPoll is valid until mdns_poll_free(), which
 * also frees whatever its user left registered (free the AvahiClient first).
 */
#ifndef P1D_MDNS_POLL_H
#define P1D_MDNS_POLL_H

struct loop;
struct mdns_poll;
struct AvahiPoll;

/* Returns 0 or -ENOMEM. */
int mdns_poll_new(struct loop *loop, struct mdns_poll **ret_poll);
/* NULL-safe; returns NULL. */
struct mdns_poll *mdns_poll_free(struct mdns_poll *p);
/* The AvahiPoll to give avahi_client_new(). */
const struct AvahiPoll *mdns_poll_api(struct mdns_poll *p);

#endif
