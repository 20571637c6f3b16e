/* http_static.h - the dashboard's files, served by the HTTP server at "/" and beside it.
 *
 * A fixed list of URL paths, each mapped at build time to one file: the page, its script, style
 * and icon from the www directory (web/ in the source tree, installed to <datadir>/p1d/www),
 * and /js/chart.js from the Chart.js file (Debian's libjs-chart.js). Nothing taken from a URL
 * is ever used as a file name. Files are read when requested, so an upgrade needs no restart;
 * a missing file answers 404 and is logged once. http.c owns the object, api_v1.c dispatches
 * to it.
 */
#ifndef P1D_HTTP_STATIC_H
#define P1D_HTTP_STATIC_H

#include <stdbool.h>

struct http_request;
struct http_reply;
struct http_static;

#define HTTP_STATIC_FILE_MAX (4u << 20) /* largest file served, bytes */

/* www_dir and chartjs: NULL or "" for the locations chosen at build time (P1_WWW_DIR,
 * P1_CHARTJS). Never fails because a file or the directory is missing (that is logged, and
 * looked for again at each request); only -ENOMEM. */
int http_static_new(const char *www_dir, const char *chartjs, struct http_static **ret_static);
struct http_static *http_static_free(struct http_static *s);

/* Whether path is one of the dashboard's URLs (false when s is NULL). Pure. */
bool http_static_known(const struct http_static *s, const char *path);

/* Answers GET or HEAD of a known path: 200 with the file, 304 when If-None-Match names its
 * ETag, 404 (JSON error) when the file is missing or not a regular file. */
void http_static_serve(struct http_static *s, const struct http_request *req,
                       struct http_reply *reply);

#endif
