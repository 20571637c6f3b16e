/* mdns.h - the mDNS/DNS-SD announcement of the HomeWizard-compatible API: a _hwenergy._tcp
 * service published through the system's avahi-daemon (libavahi-client over D-Bus), with the
 * TXT records a HomeWizard P1 meter sends, so that the HomeWizard app and Home Assistant's
 * homewizard integration find p1d with no set-up.
 *
 * libavahi-client runs on p1d's loop through mdns_poll.h (its D-Bus socket is a loop watch,
 * its timeouts loop timers). The client is created with AVAHI_CLIENT_NO_FAIL: an
 * avahi-daemon that is missing, stopped or restarted is never fatal; p1d logs it once and
 * announces as soon as the daemon (or the D-Bus system bus) is back. Name collisions get
 * Avahi's alternative names ("p1meter-1A2B3C #2"). Freeing withdraws the announcement.
 *
 * main creates it after the HTTP server, with the addresses HTTP really listens on; the second
 * half of this header is the pure part, for the unit tests.
 */
#ifndef P1D_MDNS_H
#define P1D_MDNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct loop;
struct mdns;

#define MDNS_SERVICE_TYPE "_hwenergy._tcp"
#define MDNS_TXT_N 5     /* TXT strings announced */
#define MDNS_TXT_LEN 96  /* room for the longest, "product_name=..." */
#define MDNS_NAME_LEN 64 /* a DNS label (63) and its NUL */
#define MDNS_RETRY_MIN_MS 1000u
#define MDNS_RETRY_MAX_MS 60000u
#define MDNS_COLLISIONS_MAX 32 /* alternative names tried before giving up until a retry */
/* Home Assistant's homewizard integration connects to this port, whatever the SRV record says */
#define MDNS_HOMEWIZARD_PORT 80

struct mdns_opts {
	bool homewizard;                      /* [http] homewizard */
	bool announce;                        /* [http] announce */
	const char *serial;                   /* 12 hex digits: what GET /api says */
	const char *product_name;             /* what GET /api says, e.g. "P1 meter (p1d)" */
	const char *product_type;             /* "HWE-P1" */
	const struct sockaddr_storage *addrs; /* where HTTP listens (bound or from systemd) */
	size_t n_addrs;
};

/**
 * mdns_new - Start announcing, if there is anything to announce
 * @loop: the loop
 * @o: what to announce; copied
 * @ret_mdns: the announcer, or NULL when mdns_decide() says there is nothing to do
 * Returns: 0 (also when avahi-daemon or D-Bus cannot be reached: that is retried), -EINVAL for
 * bad @o, -ENOMEM
 *
 * Logs a notice when HTTP listens only on loopback (announcing would be pointless) and when
 * the announced port is not MDNS_HOMEWIZARD_PORT.
 */
int mdns_new(struct loop *loop, const struct mdns_opts *o, struct mdns **ret_mdns);

/**
 * mdns_free - Withdraw the announcement and free everything
 * @m: the announcer, or NULL
 * Returns: NULL
 *
 * Closes the D-Bus connection without waiting for anything: avahi-daemon withdraws the service
 * (mDNS goodbye packets) when its client goes away.
 */
struct mdns *mdns_free(struct mdns *m);

/* ---- pure, for the unit tests --------------------------------------------------------- */

enum mdns_decision {
	MDNS_OFF,           /* homewizard or announce is off, or HTTP listens nowhere: silent */
	MDNS_LOOPBACK_ONLY, /* HTTP listens on loopback only: nobody could reach it */
	MDNS_ANNOUNCE,      /* announce the port of the address chosen */
};

/* 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104. Wildcards (0.0.0.0, ::) are not loopback. */
bool mdns_addr_is_loopback(const struct sockaddr *sa);

/* Whether to announce, and which listen address (*ret_index, the first that is not loopback,
 * written for MDNS_ANNOUNCE only). */
enum mdns_decision mdns_decide(const struct mdns_opts *o, size_t *ret_index);

/* The TXT strings of a HomeWizard P1 meter, in its order: api_enabled=1, path=/api/v1,
 * serial=, product_name=, product_type=. Returns MDNS_TXT_N, or -EINVAL when the serial is
 * not 12 hex digits or a value is empty, too long or holds a control character. */
int mdns_txt(const struct mdns_opts *o, char ret[MDNS_TXT_N][MDNS_TXT_LEN]);

/* The service name, as a HomeWizard P1 meter names itself: "p1meter-" and the last six digits
 * of the serial in capitals ("p1meter-1A2B3C"). Returns 0 or -EINVAL (bad serial, no room). */
int mdns_service_name(const char *serial, char *buf, size_t len);

#endif
