/* replay_main.c - run a libFuzzer target over saved inputs without libFuzzer, so every fuzz
 * target is also an ordinary test (ctest runs fuzz_<name>_replay over tests/fuzz/corpus/<name>/)
 * and a crashing input can be replayed under gdb or valgrind.
 *
 * Usage: fuzz_<name>_replay PATH...   where each PATH is a file or a directory of files (not
 * searched recursively; names starting with '.' are skipped). Inputs run in name order, so a
 * failure is reproducible. Exit status: 0 when every input ran, 1 when a path is missing or
 * unreadable or when no input was found at all (an empty corpus is a broken test, not a pass).
 * A finding aborts inside the target, as it would under libFuzzer; the last "replay: running"
 * line on stderr names the input.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

#define REPLAY_MAX_INPUT (1024 * 1024) /* bytes; libFuzzer runs use -max_len=16384 */

static uint8_t input[REPLAY_MAX_INPUT];

/* Run one file; returns 0, or -1 after saying why. */
static int run_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		return -1;
	}
	size_t n = fread(input, 1, sizeof(input), f);
	int err = ferror(f);
	int more = !err && fgetc(f) != EOF;
	fclose(f);
	if (err || more) {
		fprintf(stderr, "replay: %s: %s\n", path, err ? "read error" : "larger than 1 MiB");
		return -1;
	}
	/* A heap copy of exactly n bytes, so ASan sees a read past the end of the input. */
	uint8_t *copy = malloc(n ? n : 1);
	if (!copy) {
		fprintf(stderr, "replay: out of memory\n");
		return -1;
	}
	memcpy(copy, input, n);
	/* said before running, so the input is known when the target aborts */
	fprintf(stderr, "replay: running %s (%zu bytes)\n", path, n);
	LLVMFuzzerTestOneInput(copy, n);
	free(copy);
	return 0;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Run every regular file of a directory in name order; returns files run, or -1. */
static long run_dir(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d) {
		fprintf(stderr, "replay: %s: %s\n", dir, strerror(errno));
		return -1;
	}
	char **names = NULL;
	size_t n = 0, cap = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		if (n == cap) {
			cap = cap ? 2 * cap : 64;
			char **grown = realloc(names, cap * sizeof(*names));
			if (!grown)
				break;
			names = grown;
		}
		if (!(names[n] = strdup(e->d_name)))
			break;
		n++;
	}
	closedir(d);
	if (n)
		qsort(names, n, sizeof(*names), by_name);
	long ran = 0;
	for (size_t i = 0; i < n; i++) {
		char path[4096];
		struct stat st;
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
			if (run_file(path) < 0)
				ran = -1;
			else if (ran >= 0)
				ran++;
		}
		free(names[i]);
	}
	free(names);
	return ran;
}

int main(int argc, char **argv)
{
	if (LLVMFuzzerInitialize)
		LLVMFuzzerInitialize(&argc, &argv);
	if (argc < 2) {
		fprintf(stderr, "usage: %s CORPUS_DIR_OR_FILE...\n", argv[0]);
		return 1;
	}
	long total = 0;
	int failed = 0;
	for (int i = 1; i < argc; i++) {
		struct stat st;
		if (stat(argv[i], &st) < 0) {
			fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
			failed = 1;
			continue;
		}
		long n = S_ISDIR(st.st_mode) ? run_dir(argv[i]) : (run_file(argv[i]) < 0 ? -1 : 1);
		if (n < 0)
			failed = 1;
		else
			total += n;
	}
	printf("replay: ran %ld input%s\n", total, total == 1 ? "" : "s");
	if (!total) {
		fprintf(stderr, "replay: no inputs found\n");
		return 1;
	}
	return failed;
}
