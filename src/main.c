/* main.c - the p1d binary: `p1d decode`, `p1d simulate`, and (default) the daemon.
 * Wiring only: parses the command line and hands over to the subcommand. */
#include <stdio.h>
#include <string.h>

#include "tools/tools.h"
#include "version.h"

static void usage(FILE *f)
{
	fputs("usage: p1d [OPTIONS]                run the daemon\n"
	      "       p1d decode [OPTIONS] [FILE...] decode telegrams to JSON\n"
	      "       p1d simulate [OPTIONS]        write telegrams of a simulated meter\n"
	      "       p1d --version\n"
	      "Run a subcommand with --help for its options.\n",
	      f);
}

int main(int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "decode"))
		return p1_cmd_decode(argc - 1, argv + 1);
	if (argc >= 2 && !strcmp(argv[1], "simulate"))
		return p1_cmd_simulate(argc - 1, argv + 1);
	if (argc >= 2 && !strcmp(argv[1], "--version")) {
		printf("p1d %s\n", P1D_VERSION);
		return 0;
	}
	if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		usage(stdout);
		return 0;
	}
	usage(stderr);
	return 2;
}
