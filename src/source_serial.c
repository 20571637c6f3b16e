/* source_serial.c - a serial port as a source (see source.h): a USB serial adapter, a UART,
 * a /dev/serial/by-id link, or a pty. Opens read-only through libserialport, sets the line
 * (115200-8N1 or 9600-7E1, no flow control), optionally raises DTR or RTS for the meter's
 * Data Request line, and reads whatever arrived each time the fd is readable. Claims the port
 * exclusively (TIOCEXCL plus flock) so that a second reader fails with EBUSY instead of
 * silently stealing bytes. libserialport refuses devices it cannot identify (a pty from socat,
 * used by the tests); those are opened with open(2) and termios instead.
 *
 * In "auto" mode the presets are tried in turn, each for its probe window, until the owner
 * reports a valid telegram through source_note_valid(); the preset survives a reopen. Opening,
 * reopening and logging are source.c's job.
 *
 * While open, the configured path is checked every SOURCE_SERIAL_FOLLOW_MS: when it names
 * another device than the one being read (a /dev/serial/by-id or udev link moved to a
 * renumbered adapter while the old node lingers) or nothing at all, the port is reopened, so
 * p1d never keeps reading a node the path no longer names. Bytes without a valid telegram for
 * SOURCE_SERIAL_HINT_MS get one warning that names the serial settings tried and the others. */
#include "source.h"

#include "log.h"
#include "loop.h"

#include <errno.h>
#include <fcntl.h>
#include <libserialport.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <inttypes.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

struct serial_preset {
	const char *name;
	int baud;
	int bits;
	enum sp_parity parity;
	speed_t speed;   /* termios path */
	tcflag_t cflags; /* termios path: size and parity */
	uint32_t probe_ms;
	const char *senders; /* the meters that send this way, for the wrong-mode warning */
};

/* Order is the auto-detection order; indexes match enum source_serial_mode - 1. */
static const struct serial_preset presets[] = {
        {"115200-8N1", 115200, 8, SP_PARITY_NONE, B115200, CS8, SOURCE_SERIAL_PROBE_115200_MS,
         "DSMR 4 and 5, e-MUCS and Smarty meters"},
        {"9600-7E1", 9600, 7, SP_PARITY_EVEN, B9600, CS7 | PARENB, SOURCE_SERIAL_PROBE_9600_MS,
         "DSMR 2.2 and 3.0 meters"},
};
#define N_PRESETS (sizeof(presets) / sizeof(presets[0]))

struct serial_src {
	struct source *src;
	struct sp_port *port; /* set when opened through libserialport */
	int fd;
	bool auto_mode;
	size_t preset;
	bool settled;        /* a valid telegram arrived at this preset since the open */
	int announced;       /* preset last logged as settled, -1 for none */
	bool probing_logged; /* "trying other settings" said since the last settle */
	bool dr_warned;      /* could not raise the Data Request line, said once */
	enum source_data_request data_request;
	struct loop_watch *watch;
	struct loop_timer *probe_timer;
	struct loop_timer *follow_timer; /* checks the path still names the open device */
	dev_t rdev;                      /* the open device */
	uint64_t quiet_since_ms; /* first bytes since the last valid telegram, 0 for none */
	uint64_t quiet_last_ms;  /* last bytes of that stretch */
	uint64_t quiet_bytes;    /* bytes in it */
	bool hinted;             /* the wrong-mode warning was given for this stretch */
	uint8_t buf[SOURCE_READ_MAX];
};

static int sp_errno(void)
{
	int e = sp_last_error_code();

	return e > 0 ? e : EIO;
}

/* libserialport path. -ENOTSUP: the device exists but libserialport will not take it.
 * libserialport 0.1.1 looks the name up under /sys/class/tty, which fails for a
 * /dev/serial/by-id link, so the link is resolved first (that also tells an absent device,
 * ENOENT, from one libserialport does not know). */
static int open_sp(struct serial_src *ss, const char *path)
{
	struct sp_port *port;
	char *real = realpath(path, NULL);
	enum sp_return r;

	if (!real)
		return -errno;
	r = sp_get_port_by_name(real, &port);
	free(real);
	if (r != SP_OK)
		return -ENOTSUP;
	if (sp_open(port, SP_MODE_READ) != SP_OK) {
		int e = sp_errno();
		sp_free_port(port);
		switch (e) {
		case ENOENT:
		case ENODEV:
		case ENXIO:
		case EACCES:
		case EPERM:
		case EBUSY:
			return -e;
		default:
			return -ENOTSUP; /* an ioctl it needs failed: try plain termios */
		}
	}
	if (sp_get_port_handle(port, &ss->fd) != SP_OK) {
		sp_close(port);
		sp_free_port(port);
		return -EIO;
	}
	ss->port = port;
	/* libserialport opens O_NONBLOCK but without O_CLOEXEC */
	(void)fcntl(ss->fd, F_SETFD, FD_CLOEXEC);
	return 0;
}

static int open_termios(struct serial_src *ss, const char *path)
{
	int fd = open(path, O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	if (!isatty(fd)) {
		close(fd);
		return -ENOTTY;
	}
	ss->fd = fd;
	return 0;
}

static int apply_preset(struct serial_src *ss)
{
	const struct serial_preset *p = &presets[ss->preset];

	if (ss->port) {
		struct sp_port_config *c;
		int r = 0;

		if (sp_new_config(&c) != SP_OK)
			return -ENOMEM;
		if (sp_set_config_baudrate(c, p->baud) != SP_OK ||
		    sp_set_config_bits(c, p->bits) != SP_OK ||
		    sp_set_config_parity(c, p->parity) != SP_OK ||
		    sp_set_config_stopbits(c, 1) != SP_OK ||
		    sp_set_config_flowcontrol(c, SP_FLOWCONTROL_NONE) != SP_OK ||
		    sp_set_config(ss->port, c) != SP_OK)
			r = -sp_errno();
		sp_free_config(c);
		if (r == 0)
			sp_flush(ss->port, SP_BUF_INPUT);
		return r;
	}

	struct termios tio;
	if (tcgetattr(ss->fd, &tio) < 0)
		return -errno;
	cfmakeraw(&tio);
	tio.c_cflag &= ~(tcflag_t)(CSIZE | PARENB | PARODD | CSTOPB | CRTSCTS);
	tio.c_cflag |= CLOCAL | CREAD | p->cflags;
	tio.c_iflag &= ~(tcflag_t)(IXON | IXOFF | IXANY | INPCK | ISTRIP);
	tio.c_cc[VMIN] = 1;
	tio.c_cc[VTIME] = 0;
	if (cfsetispeed(&tio, p->speed) < 0 || cfsetospeed(&tio, p->speed) < 0)
		return -errno;
	if (tcsetattr(ss->fd, TCSANOW, &tio) < 0) {
		if (errno != EINVAL || !(p->cflags & PARENB))
			return -errno;
		/* a pty (socat in front of a TCP bridge, say) keeps 8 bits without parity, which
		 * glibc reports as EINVAL: read it so, the framer ignores the 8th bit (the parity
		 * bit of 7E1) */
		tio.c_cflag &= ~(tcflag_t)(CSIZE | PARENB);
		tio.c_cflag |= CS8;
		if (tcsetattr(ss->fd, TCSANOW, &tio) < 0)
			return -errno;
	}
	(void)tcflush(ss->fd, TCIFLUSH); /* bytes received at the old setting are garbage */
	return 0;
}

static void raise_data_request(struct serial_src *ss)
{
	int bit, r = 0;

	if (ss->data_request == SOURCE_DATA_REQUEST_NONE)
		return;
	bit = ss->data_request == SOURCE_DATA_REQUEST_DTR ? TIOCM_DTR : TIOCM_RTS;
	if (ioctl(ss->fd, TIOCMBIS, &bit) < 0)
		r = -errno;
	if (r < 0 && !ss->dr_warned) {
		/* a pty, or an adapter without modem lines: the meter may still send on its own */
		log_warning("meter %s: cannot raise %s on %s (%s), reading without Data Request",
		            source_impl_name(ss->src), source_data_request_name(ss->data_request),
		            source_impl_path(ss->src), strerror(-r));
		ss->dr_warned = true;
	}
}

/* Bytes keep coming but none made a valid telegram for SOURCE_SERIAL_HINT_MS: a meter at the
 * other speed, or a signal that is not inverted, gives exactly that. Said once per stretch. */
static void hint_wrong_mode(struct serial_src *ss, uint64_t now)
{
	const struct serial_preset *p = &presets[ss->preset];
	const char *name = source_impl_name(ss->src), *path = source_impl_path(ss->src);
	unsigned secs = (unsigned)((now - ss->quiet_since_ms) / 1000);

	ss->hinted = true;
	if (ss->auto_mode) {
		log_warning("meter %s: %" PRIu64 " bytes from %s in %u s but no valid telegram at "
		            "%s or %s: check that the P1 signal is inverted (by the cable, or an "
		            "inverter before a plain UART) and that the cable is on the P1 port",
		            name, ss->quiet_bytes, path, secs, presets[0].name, presets[1].name);
		return;
	}
	const struct serial_preset *o = &presets[(ss->preset + 1) % N_PRESETS];
	log_warning("meter %s: %" PRIu64 " bytes from %s in %u s but no valid telegram at %s: "
	            "%s send %s, try preset = %s (or auto); if the preset is right, check that "
	            "the P1 signal is inverted",
	            name, ss->quiet_bytes, path, secs, p->name, o->senders, o->name, o->name);
}

static void count_quiet(struct serial_src *ss, size_t n)
{
	uint64_t now = loop_now_ms();

	/* a line silent for as long as the warning waits starts a new stretch */
	if (!ss->quiet_since_ms || now - ss->quiet_last_ms >= SOURCE_SERIAL_HINT_MS) {
		ss->quiet_since_ms = now;
		ss->quiet_bytes = 0;
	}
	ss->quiet_last_ms = now;
	ss->quiet_bytes += n;
}

static void on_readable(struct loop_watch *w, int fd, uint32_t events, void *ud)
{
	struct serial_src *ss = ud;
	ssize_t n;

	(void)w;
	/* one read per iteration; whatever is buffered is delivered before a hangup is noticed,
	 * since a hung-up tty reads 0 or EIO only once it is drained */
	n = read(fd, ss->buf, sizeof(ss->buf));
	if (n > 0) {
		if (!ss->hinted)
			count_quiet(ss, (size_t)n);
		source_impl_data(ss->src, ss->buf, (size_t)n); /* may note a valid telegram */
		if (!ss->hinted && ss->quiet_since_ms &&
		    ss->quiet_bytes >= SOURCE_SERIAL_HINT_MIN_BYTES &&
		    ss->quiet_last_ms - ss->quiet_since_ms >= SOURCE_SERIAL_HINT_MS)
			hint_wrong_mode(ss, ss->quiet_last_ms);
	} else if (n < 0 && errno != EAGAIN && errno != EINTR) {
		source_impl_failed(ss->src, errno, "read");
	} else if (n == 0 || (events & (EPOLLHUP | EPOLLERR))) {
		source_impl_failed(ss->src, 0, "hangup");
	}
}

static void on_probe_timer(struct loop_timer *t, void *ud)
{
	struct serial_src *ss = ud;
	size_t old = ss->preset;
	int r;

	if (ss->fd < 0 || ss->settled)
		return;
	ss->preset = (ss->preset + 1) % N_PRESETS;
	if (!ss->probing_logged)
		log_info("meter %s: no valid telegram at %s from %s, trying other serial settings",
		         source_impl_name(ss->src), presets[old].name, source_impl_path(ss->src));
	else
		log_debug("meter %s: trying %s", source_impl_name(ss->src),
		          presets[ss->preset].name);
	ss->probing_logged = true;
	r = apply_preset(ss);
	if (r < 0) {
		source_impl_failed(ss->src, -r, "setting the line");
		return;
	}
	loop_timer_arm(t, presets[ss->preset].probe_ms, 0);
}

/* Still the device the configured path names? A moved link, or none, means reopening. */
static void on_follow_timer(struct loop_timer *t, void *ud)
{
	struct serial_src *ss = ud;
	const char *path = source_impl_path(ss->src);
	struct stat st;
	char why[160];

	(void)t;
	if (ss->fd < 0)
		return;
	if (stat(path, &st) < 0) {
		snprintf(why, sizeof(why), "no longer names a device (%s)", strerror(errno));
	} else if (st.st_rdev != ss->rdev) {
		char *real = realpath(path, NULL);
		snprintf(why, sizeof(why), "now names another device (%s)", real ? real : "?");
		free(real);
	} else {
		return;
	}
	source_impl_reopen(ss->src, why);
}

static void serial_close(struct source *s);

static int serial_open(struct source *s)
{
	struct serial_src *ss = source_impl(s);
	const char *path = source_impl_path(s);
	int r;

	r = open_sp(ss, path);
	if (r == -ENOTSUP) {
		r = open_termios(ss, path);
		if (r == 0)
			log_debug("meter %s: %s opened with termios (libserialport refused it)",
			          source_impl_name(s), path);
	}
	if (r < 0)
		return r;
	/* exclusive: later opens get EBUSY (TIOCEXCL; root bypasses it, flock catches a second
	 * p1d even then) */
	if (flock(ss->fd, LOCK_EX | LOCK_NB) < 0) {
		r = errno == EWOULDBLOCK ? -EBUSY : -errno;
		goto fail;
	}
	(void)ioctl(ss->fd, TIOCEXCL);
	struct stat st;
	if (fstat(ss->fd, &st) < 0) {
		r = -errno;
		goto fail;
	}
	ss->rdev = st.st_rdev;
	r = apply_preset(ss);
	if (r < 0)
		goto fail;
	raise_data_request(ss);
	r = loop_watch_add(source_impl_loop(s), ss->fd, EPOLLIN, on_readable, ss, &ss->watch);
	if (r < 0)
		goto fail;
	ss->settled = false;
	if (ss->auto_mode)
		loop_timer_arm(ss->probe_timer, presets[ss->preset].probe_ms, 0);
	loop_timer_arm(ss->follow_timer, SOURCE_SERIAL_FOLLOW_MS, SOURCE_SERIAL_FOLLOW_MS);
	return 0;

fail:
	serial_close(s);
	return r;
}

static void serial_close(struct source *s)
{
	struct serial_src *ss = source_impl(s);

	ss->watch = loop_watch_remove(ss->watch);
	loop_timer_disarm(ss->probe_timer);
	loop_timer_disarm(ss->follow_timer);
	if (ss->port) {
		sp_close(ss->port); /* closes ss->fd */
		sp_free_port(ss->port);
		ss->port = NULL;
	} else if (ss->fd >= 0) {
		close(ss->fd);
	}
	ss->fd = -1;
	ss->settled = false;
}

static void serial_destroy(struct source *s)
{
	struct serial_src *ss = source_impl(s);

	if (!ss)
		return;
	loop_timer_free(ss->probe_timer);
	loop_timer_free(ss->follow_timer);
	free(ss);
}

static void serial_note_valid(struct source *s)
{
	struct serial_src *ss = source_impl(s);

	ss->quiet_since_ms = 0;
	ss->hinted = false;
	if (!ss->auto_mode || ss->settled || ss->fd < 0)
		return;
	ss->settled = true;
	ss->probing_logged = false;
	loop_timer_disarm(ss->probe_timer);
	if (ss->announced != (int)ss->preset) {
		log_notice("meter %s: settled on %s", source_impl_name(s),
		           presets[ss->preset].name);
		ss->announced = (int)ss->preset;
	}
}

static const char *serial_detail(const struct source *s)
{
	const struct serial_src *ss = source_impl(s);

	return presets[ss->preset].name;
}

static const struct source_ops serial_ops = {
        .open_verb = "open",
        .lost_phrase = "disappeared",
        .reopen = true,
        .jitter = false,
        .open = serial_open,
        .close = serial_close,
        .destroy = serial_destroy,
        .note_valid = serial_note_valid,
        .detail = serial_detail,
};

int source_serial_setup(struct source *s, const struct source_config *cfg)
{
	struct serial_src *ss = calloc(1, sizeof(*ss));

	if (!ss)
		return -ENOMEM;
	ss->src = s;
	ss->fd = -1;
	ss->announced = -1;
	ss->data_request = cfg->data_request;
	source_impl_set(s, &serial_ops, ss);
	switch (cfg->serial_mode) {
	case SOURCE_SERIAL_AUTO:
		ss->auto_mode = true;
		ss->preset = 0;
		break;
	case SOURCE_SERIAL_115200_8N1:
	case SOURCE_SERIAL_9600_7E1:
		ss->preset = (size_t)cfg->serial_mode - 1;
		break;
	default:
		log_error("meter %s: unknown serial mode %d", cfg->name, (int)cfg->serial_mode);
		return -EINVAL;
	}
	if (cfg->data_request > SOURCE_DATA_REQUEST_RTS) {
		log_error("meter %s: unknown data request line %d", cfg->name,
		          (int)cfg->data_request);
		return -EINVAL;
	}
	int r = loop_timer_new(source_impl_loop(s), on_probe_timer, ss, &ss->probe_timer);
	if (r == 0)
		r = loop_timer_new(source_impl_loop(s), on_follow_timer, ss, &ss->follow_timer);
	return r;
}
