/* test_http_static.c - the dashboard's files through api_dispatch, without a server: the URL
 * table (and that it names every file of web/ and nothing else), bodies equal to the files,
 * content types, ETag and If-None-Match (304), HEAD, 405, the dashboard turned off, and what
 * must be refused without crashing or blocking: a missing directory or file (404, logged once,
 * found again later), a symlink, a FIFO, a directory and an oversized file in the www
 * directory, a missing Chart.js. P1_SOURCE_DIR names the source tree (web/). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "http.h"
#include "http_static.h"

static char web[1024]; /* the source tree's web/ */
static char tmp[256];  /* a scratch directory per test */

struct headers {
	const char *if_none_match;
};

static const char *get_header(const struct http_request *req, const char *name)
{
	const struct headers *h = req->ctx;
	return h && !strcasecmp(name, "If-None-Match") ? h->if_none_match : NULL;
}

static void serve(struct http_static *s, const char *method, const char *path,
                  const char *if_none_match, struct http_reply *r)
{
	struct http_ctx ctx = {.www = s};
	struct headers h = {if_none_match};
	struct http_request req = {method, path, NULL, get_header, &h};
	memset(r, 0, sizeof(*r));
	api_dispatch(&ctx, &req, r);
}

static void reply_done(struct http_reply *r)
{
	free(r->body);
	r->body = NULL;
}

static void assert_error(struct http_reply *r, int status, const char *msg)
{
	char want[256];
	snprintf(want, sizeof(want), "{\"error\":\"%s\"}", msg);
	assert_int_equal(r->status, status);
	assert_string_equal(r->content_type, "application/json");
	assert_non_null(r->body);
	assert_string_equal(r->body, want);
	assert_string_equal(r->etag, "");
	reply_done(r);
}

/* Whole file into a malloc'd buffer (NUL-terminated); NULL when it cannot be read. */
static char *slurp(const char *dir, const char *name, size_t *ret_len)
{
	char path[1300];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	char *buf = NULL;
	size_t len = 0, cap = 0, n;
	do {
		if (len + 4096 > cap) {
			cap = 2 * cap + 4096;
			buf = realloc(buf, cap + 1);
			assert_non_null(buf);
		}
		n = fread(buf + len, 1, cap - len, f);
		len += n;
	} while (n > 0);
	fclose(f);
	buf[len] = 0;
	*ret_len = len;
	return buf;
}

static void write_file(const char *dir, const char *name, const char *text)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	assert_int_equal(fclose(f), 0);
}

static int setup(void **state)
{
	const char *src = getenv("P1_SOURCE_DIR");
	snprintf(web, sizeof(web), "%s/web", src ? src : ".");
	(void)state;
	return 0;
}

static int make_tmp(void **state)
{
	const char *t = getenv("TMPDIR");
	snprintf(tmp, sizeof(tmp), "%s/p1d-static-XXXXXX", t && *t ? t : "/tmp");
	(void)state;
	return mkdtemp(tmp) ? 0 : -1;
}

static int remove_tmp(void **state)
{
	char cmd[300];
	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
	return system(cmd) == 0 ? 0 : -1;
}

/* stderr into a file while f runs; returns how many lines were logged. */
static int count_log_lines(void (*f)(void *), void *ud, const char *needle)
{
	char path[300], line[1024];
	int saved = dup(STDERR_FILENO), n = 0;
	snprintf(path, sizeof(path), "%s/log", tmp);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(saved >= 0 && fd >= 0);
	fflush(stderr);
	dup2(fd, STDERR_FILENO);
	close(fd);
	f(ud);
	fflush(stderr);
	dup2(saved, STDERR_FILENO);
	close(saved);
	FILE *in = fopen(path, "r");
	assert_non_null(in);
	while (fgets(line, sizeof(line), in))
		n += strstr(line, needle) != NULL;
	fclose(in);
	return n;
}

static void test_table(void **state)
{
	struct http_static *s = NULL;
	(void)state;
	assert_int_equal(http_static_new(web, "/nonexistent/chart.js", &s), 0);
	assert_false(http_static_known(NULL, "/"));
	static const char *const known[] = {"/", "/app.js", "/style.css", "/favicon.svg",
	                                    "/js/chart.js"};
	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		assert_true(http_static_known(s, known[i]));
	static const char *const unknown[] = {"",
	                                      "/index.html",
	                                      "//",
	                                      "/app.js/",
	                                      "/APP.JS",
	                                      "/js/",
	                                      "/js",
	                                      "/../web/app.js",
	                                      "/js/../app.js",
	                                      "/app.js%00",
	                                      "/app.js?x",
	                                      "/./app.js",
	                                      "/etc/passwd",
	                                      "/js/chart.min.js",
	                                      "/web/app.js",
	                                      "/log",
	                                      "/api/v1/x",
	                                      "/favicon.ico",
	                                      "/style.css ",
	                                      "app.js"};
	for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
		struct http_reply r;
		assert_false(http_static_known(s, unknown[i]));
		serve(s, "GET", unknown[i], NULL, &r);
		assert_error(&r, 404, "not found");
	}
	assert_false(http_static_known(s, NULL));
	http_static_free(s);
	assert_null(http_static_free(NULL));
}

/* Every file of web/ is served, byte for byte, with its type; the table has no other. */
static void test_web_files(void **state)
{
	static const struct {
		const char *ext, *type;
	} types[] = {{".html", "text/html; charset=utf-8"},
	             {".js", "text/javascript; charset=utf-8"},
	             {".css", "text/css; charset=utf-8"},
	             {".svg", "image/svg+xml"}};
	struct http_static *s = NULL;
	struct dirent *e;
	size_t served = 0;
	(void)state;
	assert_int_equal(http_static_new(web, "/nonexistent/chart.js", &s), 0);
	DIR *d = opendir(web);
	assert_non_null(d);
	while ((e = readdir(d))) {
		char url[300];
		struct http_reply r;
		size_t len = 0;
		if (e->d_name[0] == '.')
			continue;
		snprintf(url, sizeof(url), "/%s", strcmp(e->d_name, "index.html") ? e->d_name : "");
		if (!http_static_known(s, url))
			fail_msg("web/%s is not served (add it to the table in http_static.c)",
			         e->d_name);
		char *want = slurp(web, e->d_name, &len);
		assert_non_null(want);
		serve(s, "GET", url, NULL, &r);
		assert_int_equal(r.status, 200);
		assert_int_equal(r.len, len);
		assert_memory_equal(r.body, want, len);
		const char *dot = strrchr(e->d_name, '.');
		size_t t = 0;
		while (t < sizeof(types) / sizeof(types[0]) && strcmp(dot, types[t].ext))
			t++;
		assert_true(t < sizeof(types) / sizeof(types[0]));
		assert_string_equal(r.content_type, types[t].type);
		assert_string_equal(r.cache_control, "no-cache");
		assert_true(r.etag[0] == '"' && r.etag[strlen(r.etag) - 1] == '"');
		if (!strcmp(url, "/"))
			assert_non_null(strstr(r.csp, "script-src 'self'"));
		else
			assert_null(r.csp);
		reply_done(&r);
		/* HEAD: the same reply; the server sends only its headers */
		serve(s, "HEAD", url, NULL, &r);
		assert_int_equal(r.status, 200);
		assert_int_equal(r.len, len);
		reply_done(&r);
		free(want);
		served++;
	}
	closedir(d);
	/* the table's www rows (all but /js/chart.js) are all in web/ */
	assert_int_equal(served, 4);
	http_static_free(s);
}

static void test_etag_and_methods(void **state)
{
	struct http_static *s = NULL;
	struct http_reply r;
	char etag[sizeof(r.etag)], list[300];
	(void)state;
	write_file(tmp, "app.js", "console.log(1);\n");
	assert_int_equal(http_static_new(tmp, NULL, &s), 0);
	serve(s, "GET", "/app.js", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "console.log(1);\n");
	strcpy(etag, r.etag);
	reply_done(&r);
	serve(s, "GET", "/app.js", etag, &r);
	assert_int_equal(r.status, 304);
	assert_null(r.body);
	assert_int_equal(r.len, 0);
	assert_string_equal(r.etag, etag);
	snprintf(list, sizeof(list), "\"x\", W/%s", etag);
	serve(s, "HEAD", "/app.js", list, &r);
	assert_int_equal(r.status, 304);
	serve(s, "GET", "/app.js", "*", &r);
	assert_int_equal(r.status, 304);
	serve(s, "GET", "/app.js", "\"something-else\"", &r);
	assert_int_equal(r.status, 200);
	reply_done(&r);
	/* a changed file has another tag */
	write_file(tmp, "app.js", "console.log(22);\n");
	serve(s, "GET", "/app.js", etag, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "console.log(22);\n");
	assert_string_not_equal(r.etag, etag);
	reply_done(&r);
	for (const char *const *m = (const char *const[]){"POST", "PUT", "DELETE", "OPTIONS", NULL};
	     *m; m++) {
		serve(s, *m, "/app.js", NULL, &r);
		assert_string_equal(r.allow, "GET, HEAD");
		assert_error(&r, 405, "method not allowed");
	}
	http_static_free(s);
	/* dashboard off: no route */
	serve(NULL, "GET", "/", NULL, &r);
	assert_error(&r, 404, "not found");
}

struct many {
	struct http_static *s;
	const char *path;
	int status;
};

static void request_many(void *ud)
{
	struct many *m = ud;
	for (int i = 0; i < 5; i++) {
		struct http_reply r;
		serve(m->s, "GET", m->path, NULL, &r);
		m->status = r.status;
		reply_done(&r);
	}
}

static void make_missing(void *ud)
{
	struct many *m = ud;
	char dir[300];
	snprintf(dir, sizeof(dir), "%s/www", tmp);
	assert_int_equal(http_static_new(dir, "/nonexistent/chart.min.js", &m->s), 0);
}

/* A missing directory: 404 and one line at start, none per request; found once created. */
static void test_missing_dir(void **state)
{
	struct many m = {.path = "/"};
	struct http_reply r;
	char dir[300];
	(void)state;
	assert_int_equal(count_log_lines(make_missing, &m, "www"), 1);
	assert_int_equal(count_log_lines(request_many, &m, "dashboard"), 0);
	assert_int_equal(m.status, 404);
	serve(m.s, "GET", "/", NULL, &r);
	assert_error(&r, 404, "dashboard file missing");
	serve(m.s, "GET", "/js/chart.js", NULL, &r);
	assert_error(&r, 404, "Chart.js missing");
	snprintf(dir, sizeof(dir), "%s/www", tmp);
	assert_int_equal(mkdir(dir, 0700), 0);
	write_file(dir, "index.html", "<!doctype html>\n");
	serve(m.s, "GET", "/", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "<!doctype html>\n");
	reply_done(&r);
	/* a file missing in an existing directory: logged once */
	m.path = "/style.css";
	assert_int_equal(count_log_lines(request_many, &m, "style.css"), 1);
	assert_int_equal(m.status, 404);
	http_static_free(m.s);
}

/* What the www directory may hold that must not be served, nor block, nor crash. */
static void test_refused(void **state)
{
	struct http_static *s = NULL;
	struct http_reply r;
	char path[300], outside[300];
	(void)state;
	/* a symlink to a file outside the directory */
	snprintf(outside, sizeof(outside), "%s/secret", tmp);
	write_file(tmp, "secret", "password\n");
	snprintf(path, sizeof(path), "%s/www", tmp);
	assert_int_equal(mkdir(path, 0700), 0);
	snprintf(path, sizeof(path), "%s/www/app.js", tmp);
	assert_int_equal(symlink(outside, path), 0);
	/* a FIFO: opening it must not wait for a writer */
	snprintf(path, sizeof(path), "%s/www/index.html", tmp);
	assert_int_equal(mkfifo(path, 0600), 0);
	/* a directory */
	snprintf(path, sizeof(path), "%s/www/style.css", tmp);
	assert_int_equal(mkdir(path, 0700), 0);
	/* larger than the bound (sparse) */
	snprintf(path, sizeof(path), "%s/www/favicon.svg", tmp);
	int fd = open(path, O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)HTTP_STATIC_FILE_MAX + 1), 0);
	close(fd);
	snprintf(path, sizeof(path), "%s/www", tmp);
	assert_int_equal(http_static_new(path, outside, &s), 0);
	for (const char *const *u =
	             (const char *const[]){"/app.js", "/", "/style.css", "/favicon.svg", NULL};
	     *u; u++) {
		serve(s, "GET", *u, NULL, &r);
		assert_error(&r, 404, "dashboard file missing");
	}
	/* the Chart.js file is the administrator's choice: served from where it says */
	serve(s, "GET", "/js/chart.js", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "password\n");
	assert_string_equal(r.content_type, "text/javascript; charset=utf-8");
	reply_done(&r);
	http_static_free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_table),
	        cmocka_unit_test(test_web_files),
	        cmocka_unit_test_setup_teardown(test_etag_and_methods, make_tmp, remove_tmp),
	        cmocka_unit_test_setup_teardown(test_missing_dir, make_tmp, remove_tmp),
	        cmocka_unit_test_setup_teardown(test_refused, make_tmp, remove_tmp),
	};
	return cmocka_run_group_tests(tests, setup, NULL);
}
