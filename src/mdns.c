/* mdns.c - announces the HomeWizard-compatible API as _hwenergy._tcp through avahi-daemon.
 *
 * Owns one AvahiClient (created with AVAHI_CLIENT_NO_FAIL) on p1d's loop (mdns_poll.h), one
 * entry group with the one service, and a retry timer. Client states: CONNECTING
 * (avahi-daemon absent: logged once; libavahi-client itself watches for the daemon's D-Bus
 * name to appear), S_RUNNING (the service is added and committed), S_REGISTERING and
 * S_COLLISION (the host name is being (re)registered: the group is reset, and filled again on
 * S_RUNNING), FAILURE (the daemon or the bus went away: the client is replaced from the retry
 * timer, never from inside its own callback). A D-Bus system bus that cannot be reached at all
 * makes avahi_client_new fail even with NO_FAIL; that is retried with backoff.
 *
 * What it must never do: make p1d fail or wait because of Avahi. The one caveat is
 * libavahi-client's own design: its method calls (creating the client and the group, adding
 * and committing the service) wait for avahi-daemon's reply on the local D-Bus socket. They
 * are made only when the daemon's state changes (start, the daemon appearing, a name
 * collision), never per telegram or request, and none at shutdown: avahi_client_free closes
 * the connection first. A stuck (not absent) avahi-daemon holds such a call for D-Bus's reply
 * timeout, 25 s; that is logged as a warning.
 *
 * main creates it after the HTTP server (mdns_new) and frees it before (mdns_free).
 */
#include "mdns.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <avahi-client/client.h>
#include <avahi-client/publish.h>
#include <avahi-common/alternative.h>
#include <avahi-common/error.h>
#include <avahi-common/malloc.h>
#include <avahi-common/strlst.h>

#include "log.h"
#include "loop.h"
#include "mdns_poll.h"

#define SERIAL_LEN 12
#define MDNS_STUCK_MS 5000u /* a D-Bus call to avahi-daemon this slow means it is stuck */

/* ---- pure ------------------------------------------------------------------------------ */

bool mdns_addr_is_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
	}
	if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
		return IN6_IS_ADDR_LOOPBACK(a) ||
		       (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
	}
	return false; /* AF_UNIX and others: not reachable over the network either way */
}

static bool is_inet(const struct sockaddr_storage *ss)
{
	return ss->ss_family == AF_INET || ss->ss_family == AF_INET6;
}

enum mdns_decision mdns_decide(const struct mdns_opts *o, size_t *ret_index)
{
	bool any = false;

	if (!o->homewizard || !o->announce)
		return MDNS_OFF;
	for (size_t i = 0; i < o->n_addrs; i++) {
		const struct sockaddr_storage *ss = &o->addrs[i];
		if (!is_inet(ss))
			continue;
		any = true;
		if (!mdns_addr_is_loopback((const struct sockaddr *)ss)) {
			*ret_index = i;
			return MDNS_ANNOUNCE;
		}
	}
	return any ? MDNS_LOOPBACK_ONLY : MDNS_OFF;
}

static bool serial_ok(const char *s)
{
	size_t n = 0;

	for (; s && s[n]; n++)
		if (!isxdigit((unsigned char)s[n]))
			return false;
	return n == SERIAL_LEN;
}

static bool value_ok(const char *v)
{
	if (!v || !*v)
		return false;
	for (; *v; v++)
		if ((unsigned char)*v < 0x20 || *v == 0x7f)
			return false;
	return true;
}

int mdns_txt(const struct mdns_opts *o, char ret[MDNS_TXT_N][MDNS_TXT_LEN])
{
	const char *kv[MDNS_TXT_N][2] = {
	        {"api_enabled", "1"},
	        {"path", "/api/v1"},
	        {"serial", o->serial},
	        {"product_name", o->product_name},
	        {"product_type", o->product_type},
	};

	if (!serial_ok(o->serial))
		return -EINVAL;
	for (int i = 0; i < MDNS_TXT_N; i++) {
		if (!value_ok(kv[i][1]))
			return -EINVAL;
		int n = snprintf(ret[i], MDNS_TXT_LEN, "%s=%s", kv[i][0], kv[i][1]);
		if (n < 0 || n >= MDNS_TXT_LEN)
			return -EINVAL;
	}
	return MDNS_TXT_N;
}

int mdns_service_name(const char *serial, char *buf, size_t len)
{
	char tail[7];

	if (!serial_ok(serial))
		return -EINVAL;
	for (int i = 0; i < 6; i++)
		tail[i] = (char)toupper((unsigned char)serial[SERIAL_LEN - 6 + i]);
	tail[6] = '\0';
	int n = snprintf(buf, len, "p1meter-%s", tail);
	return n < 0 || (size_t)n >= len ? -EINVAL : 0;
}

/* ---- the announcer ---------------------------------------------------------------------- */

struct mdns {
	struct loop *loop;
	struct mdns_poll *poll;
	AvahiClient *client;
	AvahiEntryGroup *group;
	AvahiStringList *txt;
	char *name; /* avahi_malloc'd: collisions replace it */
	uint16_t port;
	AvahiIfIndex iface;
	AvahiProtocol proto;
	struct loop_timer *retry;
	uint64_t backoff_ms;
	int collisions;      /* alternative names tried since the last success */
	bool said_absent;    /* "avahi-daemon is not running" logged for this outage */
	bool said_no_bus;    /* "cannot reach D-Bus" logged for this outage */
	bool said_failure;   /* a failure logged since the last success */
	uint64_t connect_ms; /* when the current avahi_client_new began */
};

static void add_service(struct mdns *m, AvahiClient *c);

/* Replace the client from the retry timer in delay_ms (0: at once, for a daemon that went
 * away: the new client waits for it to come back). */
static void retry_in(struct mdns *m, uint64_t delay_ms)
{
	loop_timer_arm(m->retry, delay_ms, 0);
}

static uint64_t next_backoff(struct mdns *m)
{
	uint64_t d = m->backoff_ms;

	m->backoff_ms = d * 2 > MDNS_RETRY_MAX_MS ? MDNS_RETRY_MAX_MS : d * 2;
	return d;
}

/* Something unexpected (not an absent daemon): log once until the next success, retry. */
static void fail(struct mdns *m, const char *what, int err)
{
	uint64_t d = next_backoff(m);

	if (!m->said_failure)
		log_warning("mdns: %s: %s; retrying in %llu s", what, avahi_strerror(err),
		            (unsigned long long)(d / 1000));
	m->said_failure = true;
	retry_in(m, d);
}

static void rename_service(struct mdns *m)
{
	char *alt = avahi_alternative_service_name(m->name);

	if (!alt)
		return; /* out of memory: try the same name again */
	log_notice("mdns: the name \"%s\" is taken on the network, announcing as \"%s\"", m->name,
	           alt);
	avahi_free(m->name);
	m->name = alt;
	m->collisions++;
}

static void on_group(AvahiEntryGroup *g, AvahiEntryGroupState state, void *ud)
{
	struct mdns *m = ud;

	m->group = g; /* also called from inside avahi_entry_group_new */
	switch (state) {
	case AVAHI_ENTRY_GROUP_ESTABLISHED:
		log_info("mdns: announcing \"%s\" (%s) on port %u", m->name, MDNS_SERVICE_TYPE,
		         (unsigned)m->port);
		m->backoff_ms = MDNS_RETRY_MIN_MS;
		m->collisions = 0;
		m->said_failure = false;
		break;
	case AVAHI_ENTRY_GROUP_COLLISION:
		rename_service(m);
		avahi_entry_group_reset(g);
		add_service(m, avahi_entry_group_get_client(g));
		break;
	case AVAHI_ENTRY_GROUP_FAILURE:
		fail(m, "announcing failed", avahi_client_errno(avahi_entry_group_get_client(g)));
		break;
	case AVAHI_ENTRY_GROUP_UNCOMMITED:
	case AVAHI_ENTRY_GROUP_REGISTERING:
		break;
	}
}

static void add_service(struct mdns *m, AvahiClient *c)
{
	int r;

	if (!m->group && !(m->group = avahi_entry_group_new(c, on_group, m))) {
		fail(m, "cannot create an Avahi entry group", avahi_client_errno(c));
		return;
	}
	if (!avahi_entry_group_is_empty(m->group))
		return; /* already added and committed */
	while ((r = avahi_entry_group_add_service_strlst(m->group, m->iface, m->proto, 0, m->name,
	                                                 MDNS_SERVICE_TYPE, NULL, NULL, m->port,
	                                                 m->txt)) == AVAHI_ERR_COLLISION &&
	       m->collisions < MDNS_COLLISIONS_MAX)
		rename_service(m);
	if (r >= 0)
		r = avahi_entry_group_commit(m->group);
	if (r < 0) {
		avahi_entry_group_reset(m->group);
		fail(m, "cannot announce the service", r);
	}
}

static void on_client(AvahiClient *c, AvahiClientState state, void *ud)
{
	struct mdns *m = ud;

	m->client = c; /* also called from inside avahi_client_new */
	switch (state) {
	case AVAHI_CLIENT_S_RUNNING:
		m->said_absent = m->said_no_bus = false;
		add_service(m, c);
		break;
	case AVAHI_CLIENT_S_COLLISION:
	case AVAHI_CLIENT_S_REGISTERING:
		/* the host name is being (re)registered: add the service again once it runs */
		if (m->group)
			avahi_entry_group_reset(m->group);
		break;
	case AVAHI_CLIENT_CONNECTING:
		/* NO_FAIL: the daemon's name has no owner (answered at once), or its owner did
		 * not answer before D-Bus's reply timeout: a stuck daemon, which gives up its
		 * name only when it is restarted */
		if (loop_now_ms() - m->connect_ms >= MDNS_STUCK_MS)
			log_warning("mdns: avahi-daemon did not answer for %llu s and held p1d up "
			            "meanwhile; announcing %s once it is restarted",
			            (unsigned long long)((loop_now_ms() - m->connect_ms) / 1000),
			            MDNS_SERVICE_TYPE);
		else if (!m->said_absent)
			log_notice("mdns: avahi-daemon is not running; announcing %s as soon as it "
			           "starts",
			           MDNS_SERVICE_TYPE);
		m->said_absent = true;
		break;
	case AVAHI_CLIENT_FAILURE:
		if (avahi_client_errno(c) == AVAHI_ERR_DISCONNECTED) {
			if (!m->said_absent)
				log_notice("mdns: avahi-daemon (or the D-Bus system bus) went away; "
				           "announcing again when it is back");
			m->said_absent = true;
			retry_in(m, 0);
		} else {
			fail(m, "the Avahi client failed", avahi_client_errno(c));
		}
		break;
	}
}

/* A new client; the old one (and its group) is freed first. */
static void connect_client(struct mdns *m)
{
	int err = 0;

	if (m->client)
		avahi_client_free(m->client); /* frees its group too; makes no D-Bus call */
	m->client = NULL;
	m->group = NULL;
	m->collisions = 0;
	m->connect_ms = loop_now_ms();
	if (avahi_client_new(mdns_poll_api(m->poll), AVAHI_CLIENT_NO_FAIL, on_client, m, &err)) {
		m->said_no_bus = false; /* on_client has set m->client */
		return;
	}
	m->client = NULL; /* freed by avahi_client_new, with any group made in the callback */
	m->group = NULL;
	uint64_t d = next_backoff(m);
	if (!m->said_no_bus)
		log_notice("mdns: cannot reach avahi-daemon through the D-Bus system bus (%s); "
		           "retrying, announcing %s once it can be reached",
		           avahi_strerror(err), MDNS_SERVICE_TYPE);
	m->said_no_bus = true;
	retry_in(m, d);
}

static void on_retry(struct loop_timer *t, void *ud)
{
	(void)t;
	connect_client(ud);
}

/* The interface of a specific listen address, so that the service is announced where HTTP
 * can be reached; AVAHI_IF_UNSPEC (every interface) for a wildcard or when not found. */
static AvahiIfIndex iface_of(const struct sockaddr_storage *ss)
{
	const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
	const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
	struct ifaddrs *ifs = NULL;
	AvahiIfIndex r = AVAHI_IF_UNSPEC;

	if (ss->ss_family == AF_INET ? in->sin_addr.s_addr == htonl(INADDR_ANY)
	                             : IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr))
		return AVAHI_IF_UNSPEC;
	if (ss->ss_family == AF_INET6 && in6->sin6_scope_id)
		return (AvahiIfIndex)in6->sin6_scope_id;
	if (getifaddrs(&ifs) < 0)
		return AVAHI_IF_UNSPEC;
	for (struct ifaddrs *i = ifs; i && r == AVAHI_IF_UNSPEC; i = i->ifa_next) {
		if (!i->ifa_addr || i->ifa_addr->sa_family != ss->ss_family)
			continue;
		bool same = ss->ss_family == AF_INET
		                    ? ((struct sockaddr_in *)i->ifa_addr)->sin_addr.s_addr ==
		                              in->sin_addr.s_addr
		                    : IN6_ARE_ADDR_EQUAL(
		                              &((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr,
		                              &in6->sin6_addr);
		unsigned idx = same ? if_nametoindex(i->ifa_name) : 0;
		if (idx)
			r = (AvahiIfIndex)idx;
	}
	freeifaddrs(ifs);
	return r;
}

/* IPv4 only for an IPv4 socket; both for an IPv6 one (a wildcard usually takes IPv4 too). */
static AvahiProtocol proto_of(const struct sockaddr_storage *ss)
{
	const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;

	if (ss->ss_family == AF_INET)
		return AVAHI_PROTO_INET;
	return IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr) ? AVAHI_PROTO_UNSPEC : AVAHI_PROTO_INET6;
}

static uint16_t port_of(const struct sockaddr_storage *ss)
{
	return ntohs(ss->ss_family == AF_INET ? ((const struct sockaddr_in *)ss)->sin_port
	                                      : ((const struct sockaddr_in6 *)ss)->sin6_port);
}

/* Name, TXT and where: everything but the client. */
static int setup(struct mdns *m, const struct mdns_opts *o, const struct sockaddr_storage *ss)
{
	char txt[MDNS_TXT_N][MDNS_TXT_LEN], name[MDNS_NAME_LEN];
	const char *arr[MDNS_TXT_N];

	if (mdns_txt(o, txt) < 0 || mdns_service_name(o->serial, name, sizeof(name)) < 0)
		return -EINVAL;
	for (int i = 0; i < MDNS_TXT_N; i++)
		arr[i] = txt[i];
	m->txt = avahi_string_list_new_from_array(arr, MDNS_TXT_N);
	m->name = avahi_strdup(name);
	if (!m->txt || !m->name)
		return -ENOMEM;
	m->port = port_of(ss);
	m->iface = iface_of(ss);
	m->proto = proto_of(ss);
	m->backoff_ms = MDNS_RETRY_MIN_MS;
	return 0;
}

int mdns_new(struct loop *loop, const struct mdns_opts *o, struct mdns **ret_mdns)
{
	size_t i = 0;
	struct mdns *m;
	int r;

	switch (mdns_decide(o, &i)) {
	case MDNS_OFF:
		*ret_mdns = NULL;
		return 0;
	case MDNS_LOOPBACK_ONLY:
		log_notice("mdns: not announcing %s: HTTP listens on loopback only, where no other "
		           "machine can reach it (see listen and announce in p1d.conf(5))",
		           MDNS_SERVICE_TYPE);
		*ret_mdns = NULL;
		return 0;
	case MDNS_ANNOUNCE:
		break;
	}
	if (!(m = calloc(1, sizeof(*m))))
		return -ENOMEM;
	m->loop = loop;
	if ((r = setup(m, o, &o->addrs[i])) < 0 || (r = mdns_poll_new(loop, &m->poll)) < 0 ||
	    (r = loop_timer_new(loop, on_retry, m, &m->retry)) < 0) {
		mdns_free(m);
		return r;
	}
	if (m->port != MDNS_HOMEWIZARD_PORT)
		log_notice(
		        "mdns: announcing port %u; Home Assistant's homewizard integration "
		        "connects to port %d whatever the announcement says, so it finds p1d but "
		        "reaches it only when HTTP listens on port %d too",
		        (unsigned)m->port, MDNS_HOMEWIZARD_PORT, MDNS_HOMEWIZARD_PORT);
	connect_client(m);
	*ret_mdns = m;
	return 0;
}

struct mdns *mdns_free(struct mdns *m)
{
	if (!m)
		return NULL;
	loop_timer_free(m->retry);
	if (m->client)
		avahi_client_free(m->client);
	m->poll = mdns_poll_free(m->poll);
	avahi_string_list_free(m->txt);
	avahi_free(m->name);
	free(m);
	return NULL;
}
