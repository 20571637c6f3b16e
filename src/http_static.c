/* http_static.c - the dashboard's files: a table of URL paths known at build time, each bound
 * to one file of the www directory or to the Chart.js file, read at request time.
 *
 * A request either names a row of the table or is not ours: no part of a URL ever becomes a
 * path, so there is nothing to traverse. Files of the www directory are opened with openat()
 * under a descriptor of that directory with O_NOFOLLOW (a symlink planted there is refused),
 * must be regular files no larger than HTTP_STATIC_FILE_MAX and are read whole into the reply
 * (a few hundred KiB at most, from local disk; O_NONBLOCK so that a FIFO cannot stall the
 * loop). The Chart.js path is the administrator's choice, so it may be a symlink (Debian's
 * Chart.min.js is one). Replies carry an ETag (inode, size, modification time) and
 * "Cache-Control: no-cache", so browsers revalidate and get 304 when nothing changed; the page
 * itself carries a Content-Security-Policy that allows only p1d's own scripts and styles.
 * A missing file or directory answers 404 and is logged once, not once per request, and is
 * looked for again at the next request. Owned by http.c; called from api_v1.c's dispatch.
 */
#include "http_static.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "http.h"
#include "log.h"

#ifndef P1_WWW_DIR
#define P1_WWW_DIR "/usr/share/p1d/www"
#endif
#ifndef P1_CHARTJS
#define P1_CHARTJS "/usr/share/javascript/chart.js/chart.min.js"
#endif

#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))
#define TYPE_JS "text/javascript; charset=utf-8"
#define CSP \
	"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " \
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

struct static_file {
	const char *url;
	const char *name; /* in the www directory; NULL: the Chart.js file */
	const char *type;
	const char *csp; /* Content-Security-Policy of pages */
};

/* Every file of web/ has a row (tests/unit/test_http_static.c checks both ways). */
static const struct static_file files[] = {
        {"/", "index.html", "text/html; charset=utf-8", CSP},
        {"/app.js", "app.js", TYPE_JS, NULL},
        {"/style.css", "style.css", "text/css; charset=utf-8", NULL},
        {"/favicon.svg", "favicon.svg", "image/svg+xml", NULL},
        {"/js/chart.js", NULL, TYPE_JS, NULL},
};

struct http_static {
	char *www_dir;
	char *chartjs;
	int www_fd;                     /* O_PATH directory, -1 while missing */
	bool dir_logged;                /* the missing directory was logged */
	bool logged[ELEMENTSOF(files)]; /* the missing file was logged */
};

static const struct static_file *find(const char *path)
{
	for (size_t i = 0; path && i < ELEMENTSOF(files); i++)
		if (!strcmp(path, files[i].url))
			return &files[i];
	return NULL;
}

bool http_static_known(const struct http_static *s, const char *path)
{
	return s && find(path);
}

/* The www directory's descriptor, opened now if it was missing so far. */
static int www_fd(struct http_static *s)
{
	if (s->www_fd >= 0)
		return s->www_fd;
	s->www_fd = open(s->www_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (s->www_fd < 0) {
		int r = -errno;
		if (!s->dir_logged)
			log_warning("http: dashboard directory %s: %s; the dashboard answers 404 "
			            "(see www_dir in p1d.conf(5))",
			            s->www_dir, strerror(-r));
		s->dir_logged = true;
		return r;
	}
	if (s->dir_logged)
		log_info("http: dashboard directory %s found", s->www_dir);
	s->dir_logged = false;
	return s->www_fd;
}

static int open_file(struct http_static *s, const struct static_file *f)
{
	const int flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
	int fd;
	if (f->name) {
		int dir = www_fd(s);
		if (dir < 0)
			return dir;
		fd = openat(dir, f->name, flags | O_NOFOLLOW);
	} else {
		fd = open(s->chartjs, flags);
	}
	return fd < 0 ? -errno : fd;
}

/* Reads a regular file whole. Returns 0 or -errno; *ret_body is malloc'd, NUL-terminated. */
static int read_file(int fd, const struct stat *st, char **ret_body, size_t *ret_len)
{
	size_t size = (size_t)st->st_size, n = 0;
	char *buf = malloc(size + 1);
	if (!buf)
		return -ENOMEM;
	while (n < size) {
		ssize_t k = read(fd, buf + n, size - n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			int r = -errno;
			free(buf);
			return r;
		}
		if (k == 0)
			break; /* shrank meanwhile: serve what is there */
		n += (size_t)k;
	}
	buf[n] = 0;
	*ret_body = buf;
	*ret_len = n;
	return 0;
}

/* If-None-Match: "*", or a list of (possibly weak) entity tags one of which is ours. */
static bool not_modified(const struct http_request *req, const char *etag)
{
	const char *inm = req->header ? req->header(req, "If-None-Match") : NULL;
	if (!inm)
		return false;
	return !strcmp(inm, "*") || strstr(inm, etag) != NULL;
}

static void missing(struct http_static *s, const struct static_file *f, const char *why,
                    struct http_reply *r)
{
	size_t i = (size_t)(f - files);
	bool no_dir = f->name && s->www_fd < 0; /* logged once for the whole directory */
	if (!s->logged[i] && !no_dir)
		log_warning("http: dashboard file %s%s%s: %s; %s answers 404",
		            f->name ? s->www_dir : "", f->name ? "/" : "",
		            f->name ? f->name : s->chartjs, why, f->url);
	s->logged[i] = !no_dir;
	http_reply_error(r, 404, f->name ? "dashboard file missing" : "Chart.js missing");
}

void http_static_serve(struct http_static *s, const struct http_request *req, struct http_reply *r)
{
	const struct static_file *f = s ? find(req->path) : NULL;
	struct stat st;
	if (!f) {
		http_reply_error(r, 404, "not found");
		return;
	}
	int fd = open_file(s, f);
	if (fd < 0) {
		missing(s, f, strerror(-fd), r);
		return;
	}
	const char *bad = NULL;
	if (fstat(fd, &st) < 0)
		bad = strerror(errno);
	else if (!S_ISREG(st.st_mode))
		bad = "not a regular file";
	else if ((uint64_t)st.st_size > HTTP_STATIC_FILE_MAX)
		bad = "larger than 4 MiB";
	if (bad) {
		close(fd);
		missing(s, f, bad, r);
		return;
	}
	s->logged[f - files] = false;
	snprintf(r->etag, sizeof(r->etag), "\"%" PRIx64 "-%" PRIx64 "-%" PRIx64 ".%lx\"",
	         (uint64_t)st.st_ino, (uint64_t)st.st_size, (uint64_t)st.st_mtim.tv_sec,
	         (unsigned long)st.st_mtim.tv_nsec);
	r->cache_control = "no-cache";
	r->csp = f->csp;
	if (not_modified(req, r->etag)) {
		close(fd);
		http_reply_take(r, 304, f->type, NULL, 0);
		return;
	}
	char *body = NULL;
	size_t len = 0;
	int e = read_file(fd, &st, &body, &len);
	close(fd);
	if (e < 0) {
		r->etag[0] = 0;
		r->cache_control = r->csp = NULL;
		log_warning("http: cannot read dashboard file for %s: %s", f->url, strerror(-e));
		http_reply_error(r, e == -ENOMEM ? 503 : 404, "cannot read dashboard file");
		return;
	}
	http_reply_take(r, 200, f->type, body, len);
}

int http_static_new(const char *www_dir, const char *chartjs, struct http_static **ret_static)
{
	struct http_static *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->www_fd = -1;
	s->www_dir = strdup(www_dir && *www_dir ? www_dir : P1_WWW_DIR);
	s->chartjs = strdup(chartjs && *chartjs ? chartjs : P1_CHARTJS);
	if (!s->www_dir || !s->chartjs) {
		http_static_free(s);
		return -ENOMEM;
	}
	(void)www_fd(s); /* logs a missing directory now rather than at the first visit */
	if (access(s->chartjs, R_OK) < 0) { /* Flawfinder: ignore: only decides a warning */
		log_warning("http: Chart.js %s: %s; the dashboard shows no charts (see chartjs in "
		            "p1d.conf(5))",
		            s->chartjs, strerror(errno));
		s->logged[find("/js/chart.js") - files] = true;
	}
	*ret_static = s;
	return 0;
}

struct http_static *http_static_free(struct http_static *s)
{
	if (!s)
		return NULL;
	if (s->www_fd >= 0)
		close(s->www_fd);
	free(s->www_dir);
	free(s->chartjs);
	free(s);
	return NULL;
}
