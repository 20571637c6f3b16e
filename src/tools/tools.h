/* tools.h - subcommands of the p1d binary built on libp1 only: `p1d decode`, `p1d simulate`.
 * Each takes the arguments after its name (argv[0] is the subcommand name) and returns the
 * process exit status. */
#ifndef P1D_TOOLS_H
#define P1D_TOOLS_H

int p1_cmd_decode(int argc, char **argv);
int p1_cmd_simulate(int argc, char **argv);
/* history.c: `p1d history` and `p1d import` (these also use the store and the meter). */
int p1_cmd_history(int argc, char **argv);
int p1_cmd_import(int argc, char **argv);

#endif
