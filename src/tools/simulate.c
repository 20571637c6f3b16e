/* simulate.c - `p1d simulate`: writes the telegrams of a simulated meter so that p1d can be
 * seen working without hardware and tests and benchmarks have data.
 *
 * It owns the command line, the pacing (one ppoll loop on absolute CLOCK_MONOTONIC deadlines),
 * the optional DLMS envelope, fault injection (garbage, bit errors, truncation) and the outputs:
 * stdout or an appended file (blocking), a pseudo-terminal behind a symlink, and a TCP server
 * that fans every telegram out to its clients. The pty and the clients are written
 * non-blocking; a telegram that would block is cut and counted, never waited for. The meter
 * itself (physics and text) lives in simulate_model.c. Called from main.c's subcommand
 * dispatch; it returns an exit status and never calls exit().
 */
#include "tools/tools.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "p1/dlms.h"
#include "p1/time.h"
#include "tools/simulate_model.h"

#define EXIT_USAGE 2
#define MAX_CLIENTS 64
#define GARBAGE_MAX 200
#define ENVELOPE_OVERHEAD 64 /* DLMS header and tag around the telegram, rounded up */
#define WIRE_MAX (GARBAGE_MAX + SIM_TELEGRAM_MAX + ENVELOPE_OVERHEAD)
#define INTERVAL_MAX_S 86400.0
#define SOLAR_DEFAULT_WP 4000
#define FAULT_SEED_SALT 0x5EEDFA017ull /* fault stream independent of the meter's */

struct options {
	struct sim_config model;
	double interval_s; /* < 0: the dialect's period */
	bool step_given, start_given, phases_given;
	uint64_t count; /* 0: forever */
	const char *output, *pty_path, *listen;
	bool encrypt, ak_given;
	uint8_t key[P1_DLMS_KEY_LEN], ak[P1_DLMS_KEY_LEN];
	double garbage_rate, bit_error_rate, truncate_rate;
};

struct counters {
	uint64_t generated, written, blocked, no_reader;
	uint64_t garbage, bit_errors, bits_flipped, truncated;
	uint64_t clients_dropped, clients_refused;
};

struct outputs {
	int file_fd; /* stdout or --output; -1 when not used */
	int pty_fd;  /* master side; -1 when not used */
	char pty_slave[64];
	const char *pty_link;
	bool link_made, pty_reader;
	int listen_fd;
	int clients[MAX_CLIENTS];
	int n_clients;
};

struct sim {
	struct options opt;
	struct counters n;
	struct outputs out;
	struct sim_meter *meter;
	struct p1_dlms *dlms;
	struct sim_rng faults;
	uint8_t title[8];
	uint32_t frame_counter;
	sigset_t run_mask; /* the mask to wait with: SIGINT and SIGTERM deliverable */
};

static volatile sig_atomic_t stop_signal;

static void on_stop_signal(int signo)
{
	stop_signal = signo;
}

/* ---- command line ---- */

enum {
	OPT_DIALECT = 256,
	OPT_INTERVAL,
	OPT_STEP,
	OPT_COUNT,
	OPT_START,
	OPT_SEED,
	OPT_SOLAR,
	OPT_PHASES,
	OPT_KEY,
	OPT_AK,
	OPT_OUTPUT,
	OPT_PTY,
	OPT_LISTEN,
	OPT_GARBAGE,
	OPT_BIT_ERRORS,
	OPT_TRUNCATE,
	OPT_HELP = 'h',
};

static const struct option long_options[] = {
        {"dialect", required_argument, NULL, OPT_DIALECT},
        {"interval", required_argument, NULL, OPT_INTERVAL},
        {"step", required_argument, NULL, OPT_STEP},
        {"count", required_argument, NULL, OPT_COUNT},
        {"start", required_argument, NULL, OPT_START},
        {"seed", required_argument, NULL, OPT_SEED},
        {"solar", optional_argument, NULL, OPT_SOLAR},
        {"phases", required_argument, NULL, OPT_PHASES},
        {"key", required_argument, NULL, OPT_KEY},
        {"ak", required_argument, NULL, OPT_AK},
        {"output", required_argument, NULL, OPT_OUTPUT},
        {"pty", required_argument, NULL, OPT_PTY},
        {"listen", required_argument, NULL, OPT_LISTEN},
        {"garbage", required_argument, NULL, OPT_GARBAGE},
        {"bit-errors", required_argument, NULL, OPT_BIT_ERRORS},
        {"truncate", required_argument, NULL, OPT_TRUNCATE},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
};

static void usage(FILE *f)
{
	fputs("Usage: p1d simulate [OPTION]...\n"
	      "Write the telegrams of a simulated smart meter.\n\n"
	      "  --dialect NAME     dsmr5 (default), dsmr4, dsmr22, fluvius or smarty\n"
	      "  --interval SECONDS real time between telegrams, decimals allowed, 0 = as fast\n"
	      "                     as possible (default: the dialect's period, 1 s or 10 s)\n"
	      "  --step SECONDS     simulated time per telegram (default: the dialect's period)\n"
	      "  --count N          stop after N telegrams (default: run until SIGINT/SIGTERM)\n"
	      "  --start TIME       simulated start, 2026-03-29T00:00:00Z, +hh:mm offsets or\n"
	      "                     seconds since 1970 (default: now, rounded to the period)\n"
	      "  --seed N           random seed (default 1): same options, same bytes\n"
	      "  --phases 1|3       (default 3 for dsmr5 and fluvius, 1 otherwise)\n"
	      "  --solar[=WATT]     add solar panels of that peak power (default 4000 W)\n"
	      "  --key HEX          wrap each telegram in the DLMS envelope (AES-128-GCM)\n"
	      "  --ak HEX           authentication key (default: the Smarty key)\n"
	      "  --output FILE      append to FILE instead of writing to stdout\n"
	      "  --pty PATH         serve a pseudo-terminal; PATH becomes a symlink to it\n"
	      "  --listen HOST:PORT serve every telegram to every TCP client\n"
	      "  --garbage RATE     chance per telegram of 1-200 random bytes before it\n"
	      "                     (never '/', 0xAF or 0xDB: no telegram is hidden)\n"
	      "  --bit-errors RATE  chance per byte of one flipped bit, after the CRC\n"
	      "  --truncate RATE    chance per telegram of cutting it at a random point\n"
	      "  --help             show this help\n\n"
	      "A summary line goes to stderr at the end: telegrams generated, written, dropped.\n",
	      f);
}

static int parse_double(const char *s, double lo, double hi, double *ret)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !(v >= lo && v <= hi))
		return -EINVAL;
	*ret = v;
	return 0;
}

static int parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *ret)
{
	char *end;
	unsigned long long v;

	if (*s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v < lo || v > hi)
		return -EINVAL;
	*ret = v;
	return 0;
}

/* "Z", "", "+hh:mm", "+hhmm" or "+hh" after an ISO 8601 time: seconds east of UTC. */
static int parse_offset(const char *s, int64_t *ret)
{
	int hh = 0, mm = 0, n = 0;

	if (*s == 0 || ((s[0] == 'Z' || s[0] == 'z') && s[1] == 0)) {
		*ret = 0;
		return 0;
	}
	/* NOLINTBEGIN(cert-err34-c): %2d reads two digits at most, so it cannot overflow, and
	 * the counts are checked */
	if ((*s != '+' && *s != '-') ||
	    (sscanf(s + 1, "%2d:%2d%n", &hh, &mm, &n) != 2 &&
	     sscanf(s + 1, "%2d%2d%n", &hh, &mm, &n) != 2 && sscanf(s + 1, "%2d%n", &hh, &n) != 1))
		return -EINVAL;
	/* NOLINTEND(cert-err34-c) */
	if (s[1 + n] != 0 || hh < 0 || hh > 14 || mm < 0 || mm > 59)
		return -EINVAL;
	*ret = (*s == '-' ? -1 : 1) * (int64_t)(hh * 3600 + mm * 60);
	return 0;
}

static int parse_start(const char *s, int64_t *ret)
{
	int y, mo, d, h, mi, sec, n = 0;
	int64_t offset;
	uint64_t unix_s;

	if (parse_u64(s, 0, INT64_MAX / 2, &unix_s) == 0) {
		*ret = (int64_t)unix_s;
		return 0;
	}
	/* NOLINTNEXTLINE(cert-err34-c): widths of 4 and 2 digits cannot overflow; count checked */
	if (sscanf(s, "%4d-%2d-%2d%*1[T ]%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6 ||
	    n == 0 || parse_offset(s + n, &offset) < 0)
		return -EINVAL;
	if (y < 1970 || y > 9999 || mo < 1 || mo > 12 || d < 1 || d > 31 || h < 0 || h > 23 ||
	    mi < 0 || mi > 59 || sec < 0 || sec > 59)
		return -EINVAL;
	*ret = p1_time_from_civil(y, mo, d, h, mi, sec) - offset;
	return 0;
}

static int parse_one(struct options *o, int c, const char *arg)
{
	uint64_t u = 0; /* read below even when parsing failed, then thrown away */
	double rate = 0;
	int r = 0;

	switch (c) {
	case OPT_DIALECT:
		return sim_dialect_parse(arg, &o->model.dialect);
	case OPT_INTERVAL:
		return parse_double(arg, 0, INTERVAL_MAX_S, &o->interval_s);
	case OPT_STEP:
		r = parse_u64(arg, 1, SIM_STEP_MAX_S, &u);
		o->model.step_s = (int64_t)u;
		o->step_given = true;
		return r;
	case OPT_COUNT:
		return parse_u64(arg, 1, UINT64_MAX, &o->count);
	case OPT_START:
		o->start_given = true;
		return parse_start(arg, &o->model.start);
	case OPT_SEED:
		return parse_u64(arg, 0, UINT64_MAX, &o->model.seed);
	case OPT_SOLAR:
		u = SOLAR_DEFAULT_WP;
		r = arg ? parse_u64(arg, 100, 100000, &u) : 0;
		o->model.solar_wp = (int32_t)u;
		return r;
	case OPT_PHASES:
		r = parse_u64(arg, 1, 3, &u);
		o->model.phases = (int)u;
		o->phases_given = true;
		return r < 0 || u == 2 ? -EINVAL : 0;
	case OPT_KEY:
		o->encrypt = true;
		return p1_dlms_parse_key(arg, o->key) ? 0 : -EINVAL;
	case OPT_AK:
		o->ak_given = true;
		return p1_dlms_parse_key(arg, o->ak) ? 0 : -EINVAL;
	}
	if (c == OPT_OUTPUT || c == OPT_PTY || c == OPT_LISTEN) {
		*(c == OPT_OUTPUT ? &o->output : c == OPT_PTY ? &o->pty_path : &o->listen) = arg;
		return 0;
	}
	r = parse_double(arg, 0, 1, &rate);
	*(c == OPT_GARBAGE      ? &o->garbage_rate
	  : c == OPT_BIT_ERRORS ? &o->bit_error_rate
	                        : &o->truncate_rate) = rate;
	return r;
}

static void apply_defaults(struct options *o)
{
	int period = sim_dialect_period_s(o->model.dialect);
	struct timespec now;

	if (o->interval_s < 0)
		o->interval_s = period;
	if (!o->step_given)
		o->model.step_s = period;
	if (!o->phases_given)
		o->model.phases = sim_dialect_phases(o->model.dialect);
	if (!o->start_given) {
		clock_gettime(CLOCK_REALTIME, &now);
		o->model.start = (int64_t)now.tv_sec / period * period;
	}
}

/* Returns 0 to run, 1 when --help was shown, -EINVAL on a usage error (already reported). */
static int parse_options(struct options *o, int argc, char **argv)
{
	int c;

	*o = (struct options){.model = {.dialect = SIM_DSMR5, .seed = 1}, .interval_s = -1};
	optind = 0; /* reset getopt: argv[0] is the subcommand name */
	opterr = 1;
	while ((c = getopt_long(argc, argv, "h", long_options, NULL)) != -1) {
		if (c == OPT_HELP) {
			usage(stdout);
			return 1;
		}
		if (c == '?' || parse_one(o, c, optarg) < 0) {
			if (c != '?')
				fprintf(stderr, "p1d simulate: invalid value for --%s: %s\n",
				        long_options[c - OPT_DIALECT].name, optarg ? optarg : "");
			fputs("Try 'p1d simulate --help'.\n", stderr);
			return -EINVAL;
		}
	}
	if (optind < argc || (o->ak_given && !o->encrypt)) {
		fputs(optind < argc ? "p1d simulate: unexpected argument\n"
		                    : "p1d simulate: --ak needs --key\n",
		      stderr);
		return -EINVAL;
	}
	apply_defaults(o);
	return 0;
}

/* ---- outputs ---- */

static int set_nonblock_cloexec(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
		return -errno;
	return 0;
}

/* Write all of p without waiting: 0, or -EAGAIN when the rest would block (the part already
 * written stays written), or another -errno. */
static int write_nonblock(int fd, const uint8_t *p, size_t n, bool socket)
{
	while (n > 0) {
		ssize_t r = socket ? send(fd, p, n, MSG_NOSIGNAL) : write(fd, p, n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return errno == EWOULDBLOCK ? -EAGAIN : -errno;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

/* Blocking write to stdout or the file, interruptible by SIGINT/SIGTERM. */
static int write_file(struct sim *s, const uint8_t *p, size_t n)
{
	sigset_t blocked;
	int r = 0;

	sigprocmask(SIG_SETMASK, &s->run_mask, &blocked);
	while (n > 0 && !stop_signal) {
		ssize_t w = write(s->out.file_fd, p, n);
		if (w < 0 && errno == EAGAIN) {
			struct pollfd pfd = {.fd = s->out.file_fd, .events = POLLOUT};
			poll(&pfd, 1, -1);
			continue;
		}
		if (w < 0 && errno != EINTR) {
			r = -errno;
			break;
		}
		p += w > 0 ? w : 0;
		n -= w > 0 ? (size_t)w : 0;
	}
	sigprocmask(SIG_SETMASK, &blocked, NULL);
	return r < 0 ? r : n > 0 ? -EINTR : 0;
}

static int make_link(struct outputs *out, const char *path)
{
	struct stat st;

	if (lstat(path, &st) == 0) {
		if (!S_ISLNK(st.st_mode))
			return -EEXIST; /* never replace anything but a stale symlink */
		if (unlink(path) < 0)
			return -errno;
	}
	if (symlink(out->pty_slave, path) < 0)
		return -errno;
	out->pty_link = path;
	out->link_made = true;
	return 0;
}

/* Raw mode on the slave side, at the meter's speed (9600 for DSMR 2.2, else 115200). The
 * setting outlives our closing the slave: the tty lives as long as the master. */
static int pty_configure(const char *slave_path, enum sim_dialect d)
{
	speed_t speed = d == SIM_DSMR22 ? B9600 : B115200;
	struct termios tio;
	int slave = open(slave_path, O_RDWR | O_NOCTTY | O_CLOEXEC), r = 0;

	if (slave < 0)
		return -errno;
	if (tcgetattr(slave, &tio) < 0)
		r = -errno;
	if (r == 0) {
		cfmakeraw(&tio);
		cfsetispeed(&tio, speed);
		cfsetospeed(&tio, speed);
		if (tcsetattr(slave, TCSANOW, &tio) < 0)
			r = -errno;
	}
	close(slave);
	return r;
}

/* A pty reachable through a symlink at path; we keep the master, readers open the slave. */
static int pty_open(struct outputs *out, const char *path, enum sim_dialect d)
{
	int r;

	out->pty_fd = posix_openpt(O_RDWR | O_NOCTTY);
	if (out->pty_fd < 0 || grantpt(out->pty_fd) < 0 || unlockpt(out->pty_fd) < 0)
		return -errno;
	r = set_nonblock_cloexec(out->pty_fd);
	if (r == 0)
		r = -ptsname_r(out->pty_fd, out->pty_slave, sizeof(out->pty_slave));
	if (r == 0)
		r = pty_configure(out->pty_slave, d);
	return r < 0 ? r : make_link(out, path);
}

/* The reader went away: throw away what it left unread, so that the next reader starts
 * with fresh telegrams instead of old ones. */
static void pty_forget_stale(struct outputs *out)
{
	int slave = open(out->pty_slave, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);

	if (slave >= 0) {
		tcflush(slave, TCIFLUSH);
		close(slave);
	}
}

enum fate { FATE_WRITTEN, FATE_BLOCKED, FATE_NO_READER };

static enum fate pty_deliver(struct outputs *out, const uint8_t *p, size_t n)
{
	struct pollfd pfd = {.fd = out->pty_fd, .events = POLLIN};
	uint8_t sink[512];
	int r;

	while (read(out->pty_fd, sink, sizeof(sink)) > 0)
		; /* whatever the reader wrote to its side */
	if (poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLHUP)) {
		if (out->pty_reader)
			pty_forget_stale(out);
		out->pty_reader = false;
		return FATE_NO_READER; /* nobody has the slave open */
	}
	out->pty_reader = true;
	r = write_nonblock(out->pty_fd, p, n, false);
	return r == 0 ? FATE_WRITTEN : r == -EAGAIN ? FATE_BLOCKED : FATE_NO_READER;
}

/* "HOST:PORT", "[V6]:PORT", ":PORT" or "*:PORT". */
static int listen_open(struct outputs *out, const char *spec)
{
	struct addrinfo hints = {.ai_flags = AI_PASSIVE, .ai_socktype = SOCK_STREAM}, *res, *ai;
	char host[256];
	const char *colon = strrchr(spec, ':');
	size_t hlen = colon ? (size_t)(colon - spec) : 0;
	int one = 1, fd = -1;

	if (!colon || hlen >= sizeof(host) || !colon[1])
		return -EINVAL;
	memcpy(host, spec, hlen);
	host[hlen] = 0;
	if (hlen >= 2 && host[0] == '[' && host[hlen - 1] == ']') {
		memmove(host, host + 1, hlen - 2);
		host[hlen - 2] = 0;
	}
	if (getaddrinfo(host[0] && strcmp(host, "*") ? host : NULL, colon + 1, &hints, &res) != 0)
		return -EADDRNOTAVAIL;
	for (ai = res; ai && fd < 0; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0)
			continue;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 16) < 0) {
			close(fd);
			fd = -1;
		}
	}
	freeaddrinfo(res);
	out->listen_fd = fd;
	return fd < 0 ? -EADDRINUSE : 0;
}

static void client_drop(struct sim *s, int i)
{
	close(s->out.clients[i]);
	s->out.clients[i] = s->out.clients[--s->out.n_clients];
}

static void clients_accept(struct sim *s)
{
	int fd;

	while ((fd = accept4(s->out.listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
		if (s->out.n_clients == MAX_CLIENTS) {
			close(fd);
			s->n.clients_refused++;
			continue;
		}
		s->out.clients[s->out.n_clients++] = fd;
	}
}

/* Every client gets the whole telegram or is dropped. */
static enum fate clients_deliver(struct sim *s, const uint8_t *p, size_t n)
{
	bool any = false, dropped = false;

	for (int i = s->out.n_clients - 1; i >= 0; i--) {
		if (write_nonblock(s->out.clients[i], p, n, true) == 0) {
			any = true;
			continue;
		}
		client_drop(s, i);
		s->n.clients_dropped++;
		dropped = true;
	}
	return any ? FATE_WRITTEN : dropped ? FATE_BLOCKED : FATE_NO_READER;
}

static int outputs_open(struct sim *s)
{
	struct outputs *out = &s->out;
	const struct options *o = &s->opt;
	int r = 0;

	if (o->output) {
		out->file_fd = open(o->output, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
		if (out->file_fd < 0)
			r = -errno;
	} else if (!o->pty_path && !o->listen) {
		out->file_fd = STDOUT_FILENO;
	}
	if (r < 0) {
		fprintf(stderr, "p1d simulate: cannot open %s: %s\n", o->output, strerror(-r));
		return r;
	}
	if (o->pty_path && (r = pty_open(out, o->pty_path, o->model.dialect)) < 0) {
		fprintf(stderr, "p1d simulate: cannot serve a pty at %s: %s\n", o->pty_path,
		        strerror(-r));
		return r;
	}
	if (o->listen && (r = listen_open(out, o->listen)) < 0)
		fprintf(stderr, "p1d simulate: cannot listen on %s: %s\n", o->listen, strerror(-r));
	return r;
}

static void outputs_close(struct outputs *out)
{
	char target[sizeof(out->pty_slave)];
	ssize_t n;

	if (out->link_made) { /* only if it still points at our pty */
		/* Flawfinder: ignore: bounded, terminated below; the link is the user's own */
		n = readlink(out->pty_link, target, sizeof(target) - 1);
		if (n >= 0 && (target[n] = 0, strcmp(target, out->pty_slave) == 0))
			unlink(out->pty_link);
	}
	if (out->file_fd > STDERR_FILENO)
		close(out->file_fd);
	if (out->pty_fd >= 0)
		close(out->pty_fd);
	if (out->listen_fd >= 0)
		close(out->listen_fd);
	for (int i = 0; i < out->n_clients; i++)
		close(out->clients[i]);
}

/* ---- faults ---- */

static size_t add_garbage(struct sim *s, uint8_t *wire)
{
	size_t n;

	if (s->opt.garbage_rate <= 0 || sim_rng_unit(&s->faults) >= s->opt.garbage_rate)
		return 0;
	n = 1 + sim_rng_below(&s->faults, GARBAGE_MAX);
	for (size_t i = 0; i < n; i++) {
		do
			wire[i] = (uint8_t)sim_rng_below(&s->faults, 256);
		while ((wire[i] & 0x7f) == '/' || wire[i] == 0xDB); /* 0xAF reads as '/' too */
	}
	s->n.garbage++;
	return n;
}

/* Bit errors, then truncation, on the telegram's bytes. Returns the length left. */
static size_t damage(struct sim *s, uint8_t *p, size_t n)
{
	uint64_t flips = 0;

	if (s->opt.bit_error_rate > 0) {
		for (size_t i = 0; i < n; i++) {
			if (sim_rng_unit(&s->faults) < s->opt.bit_error_rate) {
				p[i] ^= (uint8_t)(1u << sim_rng_below(&s->faults, 8));
				flips++;
			}
		}
	}
	s->n.bits_flipped += flips;
	s->n.bit_errors += flips > 0;
	if (s->opt.truncate_rate > 0 && n > 1 && sim_rng_unit(&s->faults) < s->opt.truncate_rate) {
		n = 1 + sim_rng_below(&s->faults, (uint32_t)(n - 1));
		s->n.truncated++;
	}
	return n;
}

/* The bytes that go on the wire for one telegram: garbage, the text or its envelope, damage.
 * Returns the length, or a negative errno. */
static int make_wire(struct sim *s, uint8_t *wire)
{
	char text[SIM_TELEGRAM_MAX];
	size_t g = add_garbage(s, wire), len;
	int n = sim_meter_next(s->meter, text, sizeof(text));

	if (n < 0)
		return n;
	s->n.generated++;
	if (s->dlms) {
		if (p1_dlms_encrypt(s->dlms, s->title, ++s->frame_counter, (const uint8_t *)text,
		                    (size_t)n, wire + g, WIRE_MAX - g, &len) != P1_OK)
			return -ENOBUFS;
	} else {
		memcpy(wire + g, text, (size_t)n);
		len = (size_t)n;
	}
	return (int)(g + damage(s, wire + g, len));
}

/* ---- the loop ---- */

static int deliver(struct sim *s, const uint8_t *wire, size_t n)
{
	enum fate fate = FATE_NO_READER, f;
	int r;

	if (s->out.file_fd >= 0) {
		r = write_file(s, wire, n);
		if (r < 0)
			return r;
		fate = FATE_WRITTEN;
	}
	if (s->out.pty_fd >= 0) {
		f = pty_deliver(&s->out, wire, n);
		fate = f < fate ? f : fate;
	}
	if (s->out.listen_fd >= 0) {
		f = clients_deliver(s, wire, n);
		fate = f < fate ? f : fate;
	}
	s->n.written += fate == FATE_WRITTEN;
	s->n.blocked += fate == FATE_BLOCKED;
	s->n.no_reader += fate == FATE_NO_READER;
	return 0;
}

static int64_t monotonic_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Accept clients, drain what they send, notice those that left. */
static void handle_events(struct sim *s, const struct pollfd *pfd, int nfds)
{
	char sink[512];

	for (int i = nfds - 1; i >= 1; i--) {
		if (!pfd[i].revents)
			continue;
		if (recv(pfd[i].fd, sink, sizeof(sink), MSG_DONTWAIT) == 0 ||
		    (pfd[i].revents & (POLLHUP | POLLERR)))
			client_drop(s, i - 1);
	}
	if (pfd[0].revents & POLLIN)
		clients_accept(s);
}

/* Sleep until deadline_ns on CLOCK_MONOTONIC, serving the TCP clients meanwhile. Returns at
 * once when a stop signal arrives. */
static void wait_until(struct sim *s, int64_t deadline_ns)
{
	struct pollfd pfd[1 + MAX_CLIENTS];
	struct timespec ts;
	int64_t left;
	int nfds;

	do {
		left = deadline_ns - monotonic_ns();
		left = left > 0 ? left : 0;
		ts = (struct timespec){.tv_sec = left / 1000000000, .tv_nsec = left % 1000000000};
		nfds = 0;
		if (s->out.listen_fd >= 0) {
			pfd[nfds++] = (struct pollfd){.fd = s->out.listen_fd, .events = POLLIN};
			for (int i = 0; i < s->out.n_clients; i++)
				pfd[nfds++] =
				        (struct pollfd){.fd = s->out.clients[i], .events = POLLIN};
		}
		if (ppoll(pfd, (nfds_t)nfds, &ts, &s->run_mask) > 0)
			handle_events(s, pfd, nfds);
	} while (!stop_signal && left > 0);
}

static int run(struct sim *s)
{
	uint8_t wire[WIRE_MAX];
	int64_t interval_ns = (int64_t)(s->opt.interval_s * 1e9 + 0.5);
	int64_t next_ns = monotonic_ns();
	int n, r;

	for (uint64_t i = 0; s->opt.count == 0 || i < s->opt.count; i++) {
		wait_until(s, next_ns);
		if (stop_signal)
			break;
		n = make_wire(s, wire);
		if (n < 0) {
			fprintf(stderr, "p1d simulate: cannot build a telegram: %s\n",
			        strerror(-n));
			return n;
		}
		r = deliver(s, wire, (size_t)n);
		if (r == -EPIPE || r == -EINTR)
			break; /* the reader of stdout left, or we were asked to stop */
		if (r < 0) {
			fprintf(stderr, "p1d simulate: write failed: %s, stopping\n", strerror(-r));
			return r;
		}
		next_ns += interval_ns;
		if (monotonic_ns() - next_ns > interval_ns + 1000000000)
			next_ns = monotonic_ns(); /* far behind (stalled output): do not burst */
	}
	return 0;
}

static void print_summary(const struct sim *s)
{
	const struct counters *n = &s->n;
	const struct options *o = &s->opt;

	/* Flawfinder: ignore: these formats are literals with <inttypes.h> macros */
	fprintf(stderr, "p1d simulate: generated=%" PRIu64 " written=%" PRIu64 " dropped=%" PRIu64,
	        n->generated, n->written, n->generated - n->written);
	if (o->pty_path || o->listen)
		/* Flawfinder: ignore: literal format */
		fprintf(stderr, " blocked=%" PRIu64 " no_reader=%" PRIu64, n->blocked,
		        n->no_reader);
	if (o->listen)
		/* Flawfinder: ignore: literal format */
		fprintf(stderr, " clients=%d clients_dropped=%" PRIu64 " clients_refused=%" PRIu64,
		        s->out.n_clients, n->clients_dropped, n->clients_refused);
	if (o->garbage_rate > 0 || o->bit_error_rate > 0 || o->truncate_rate > 0)
		/* Flawfinder: ignore: literal format */
		fprintf(stderr,
		        " garbage=%" PRIu64 " bit_errors=%" PRIu64 " bits_flipped=%" PRIu64
		        " truncated=%" PRIu64,
		        n->garbage, n->bit_errors, n->bits_flipped, n->truncated);
	fputc('\n', stderr);
}

/* SIGINT and SIGTERM are blocked except while waiting, so that they are seen promptly and
 * never lost between a check and the wait. SIGPIPE is ignored: EPIPE says it instead. */
static void signals_setup(struct sim *s, struct sigaction old[3], sigset_t *old_mask)
{
	struct sigaction sa = {.sa_handler = on_stop_signal}, ign = {.sa_handler = SIG_IGN};
	sigset_t stop;

	stop_signal = 0;
	sigemptyset(&stop);
	sigaddset(&stop, SIGINT);
	sigaddset(&stop, SIGTERM);
	sigaction(SIGINT, &sa, &old[0]);
	sigaction(SIGTERM, &sa, &old[1]);
	sigaction(SIGPIPE, &ign, &old[2]);
	sigprocmask(SIG_BLOCK, &stop, old_mask);
	s->run_mask = *old_mask;
	sigdelset(&s->run_mask, SIGINT);
	sigdelset(&s->run_mask, SIGTERM);
}

static void signals_restore(const struct sigaction old[3], const sigset_t *old_mask)
{
	sigaction(SIGINT, &old[0], NULL);
	sigaction(SIGTERM, &old[1], NULL);
	sigaction(SIGPIPE, &old[2], NULL);
	sigprocmask(SIG_SETMASK, old_mask, NULL);
}

static int setup(struct sim *s)
{
	s->meter = sim_meter_new(&s->opt.model);
	if (!s->meter)
		return -ENOMEM;
	sim_rng_seed(&s->faults, s->opt.model.seed ^ FAULT_SEED_SALT);
	if (s->opt.encrypt) {
		s->dlms = p1_dlms_new(s->opt.key, s->opt.ak_given ? s->opt.ak : NULL);
		if (!s->dlms)
			return -ENOMEM;
		sim_meter_system_title(s->meter, s->title);
	}
	return outputs_open(s);
}

int p1_cmd_simulate(int argc, char **argv)
{
	struct sim *s = calloc(1, sizeof(*s));
	struct sigaction old[3];
	sigset_t old_mask;
	int r;

	if (!s) {
		fputs("p1d simulate: out of memory\n", stderr);
		return EXIT_USAGE;
	}
	s->out = (struct outputs){.file_fd = -1, .pty_fd = -1, .listen_fd = -1};
	r = parse_options(&s->opt, argc, argv);
	if (r == 0) {
		signals_setup(s, old, &old_mask);
		r = setup(s);
		if (r == -ENOMEM)
			fputs("p1d simulate: out of memory\n", stderr);
		if (r == 0) {
			r = run(s);
			print_summary(s);
		}
		outputs_close(&s->out);
		signals_restore(old, &old_mask);
	}
	p1_dlms_free(s->dlms);
	sim_meter_free(s->meter);
	free(s);
	return r == 1 ? 0 : r < 0 ? EXIT_USAGE : 0;
}
