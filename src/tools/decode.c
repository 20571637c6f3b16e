/* decode.c - `p1d decode [--key HEX] [--aad HEX] [--tz ZONE] [FILE...]`: every frame found in
 * the input as one JSON object per line. Each file (or stdin) is one byte stream that may hold
 * many frames and garbage. Exit status: 0 when every frame was valid, 1 when any was invalid
 * or none was found, 2 for a usage or I/O error. Built on libp1 only.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "p1/decoder.h"
#include "p1/dlms.h"
#include "p1/json.h"
#include "tools.h"
#include "tzprobe.h"

struct decode_run {
	char *json;
	size_t json_cap;
	unsigned valid, invalid;
};

static void on_result(void *ud, const struct p1_result *r)
{
	struct decode_run *run = ud;
	if (r->error == P1_OK) {
		size_t n = p1_json_telegram(r->telegram, P1_JSON_ALL, run->json, run->json_cap);
		if (n >= run->json_cap) {
			free(run->json);
			run->json_cap = n + 1;
			run->json = malloc(run->json_cap);
			if (!run->json) {
				fprintf(stderr, "p1d decode: out of memory\n");
				exit(2);
			}
			p1_json_telegram(r->telegram, P1_JSON_ALL, run->json, run->json_cap);
		}
		fputs(run->json, stdout);
		fputc('\n', stdout);
		run->valid++;
		return;
	}
	char msg[256], esc[600];
	p1_result_describe(r, msg, sizeof(msg));
	p1_json_string(msg, strlen(msg), esc, sizeof(esc));
	printf("{\"valid\":false,\"error\":%s,\"reason\":\"%s\",\"offset\":%llu}\n", esc,
	       p1_error_id(r->error), (unsigned long long)r->offset);
	run->invalid++;
}

static int decode_fd(struct p1_decoder *d, int fd, struct decode_run *run, const char *name)
{
	static uint8_t buf[65536];
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			fprintf(stderr, "p1d decode: %s: %s\n", name, strerror(errno));
			return -1;
		}
		if (n == 0)
			break;
		p1_decoder_feed(d, buf, (size_t)n, on_result, run);
	}
	p1_decoder_flush(d, on_result, run);
	return 0;
}

static void usage(FILE *f)
{
	fputs("usage: p1d decode [--key HEX] [--aad HEX] [--tz ZONE] [--dialect NAME] [FILE...]\n"
	      "Decode P1 telegrams from files (or stdin) and print one JSON object per frame.\n"
	      "  --key HEX      decryption key for encrypted (Smarty) frames, 32 hex digits\n"
	      "  --aad HEX      authentication key, 32 hex digits (default: the Smarty one)\n"
	      "  --tz ZONE      time zone of the meter clock (default Europe/Amsterdam rules)\n"
	      "  --dialect NAME force the dialect instead of detecting it\n"
	      "Exit status: 0 all frames valid, 1 a frame was invalid or none found, 2 error.\n",
	      f);
}

static bool parse_aad(const char *s, uint8_t ak[16])
{
	/* the full AAD is 0x30 followed by the authentication key */
	if (strlen(s) == 34 && s[0] == '3' && s[1] == '0')
		s += 2;
	return p1_dlms_parse_key(s, ak);
}

static int parse_args(int argc, char **argv, struct p1_decoder_opts *o)
{
	static const struct option longopts[] = {
		{"key", required_argument, NULL, 'k'}, {"aad", required_argument, NULL, 'a'},
		{"tz", required_argument, NULL, 't'},  {"dialect", required_argument, NULL, 'd'},
		{"help", no_argument, NULL, 'h'},      {NULL, 0, NULL, 0},
	};
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'k':
			if (!p1_dlms_parse_key(optarg, o->key)) {
				fprintf(stderr, "p1d decode: --key needs 32 hex digits\n");
				return -1;
			}
			o->have_key = true;
			break;
		case 'a':
			if (!parse_aad(optarg, o->ak)) {
				fprintf(stderr, "p1d decode: --aad needs 32 hex digits\n");
				return -1;
			}
			o->have_ak = true;
			break;
		case 't':
			if (tzprobe(optarg, &o->parse.tz) < 0) {
				fprintf(stderr, "p1d decode: unknown time zone \"%s\"\n", optarg);
				return -1;
			}
			break;
		case 'd': {
			int dl = p1_dialect_by_name(optarg);
			if (dl <= 0) {
				fprintf(stderr, "p1d decode: unknown dialect \"%s\"\n", optarg);
				return -1;
			}
			o->parse.force_dialect = (enum p1_dialect)dl;
			break;
		}
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -1;
		}
	}
	return 0;
}

int p1_cmd_decode(int argc, char **argv)
{
	struct p1_decoder_opts o;
	p1_decoder_opts_init(&o);
	if (parse_args(argc, argv, &o) < 0)
		return 2;
	struct p1_decoder *d = p1_decoder_new(&o);
	struct decode_run run = {.json_cap = 16384};
	run.json = malloc(run.json_cap);
	if (!d || !run.json) {
		fprintf(stderr, "p1d decode: out of memory\n");
		p1_decoder_free(d);
		free(run.json);
		return 2;
	}
	int status = 0;
	if (optind == argc) {
		if (decode_fd(d, STDIN_FILENO, &run, "stdin") < 0)
			status = 2;
	}
	for (int i = optind; i < argc && status == 0; i++) {
		int fd = strcmp(argv[i], "-") ? open(argv[i], O_RDONLY | O_CLOEXEC) : STDIN_FILENO;
		if (fd < 0) {
			fprintf(stderr, "p1d decode: %s: %s\n", argv[i], strerror(errno));
			status = 2;
			break;
		}
		p1_decoder_reset(d);
		if (decode_fd(d, fd, &run, argv[i]) < 0)
			status = 2;
		if (fd != STDIN_FILENO)
			close(fd);
	}
	/* the JSON is the output: one that could not all be written is an I/O error */
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "p1d decode: cannot write the output: %s\n", strerror(errno));
		status = 2;
	}
	p1_decoder_free(d);
	free(run.json);
	if (status)
		return status;
	return run.invalid || !run.valid ? 1 : 0;
}
