/*
 * cli.h - what the command implementations share: the command table entry, exit codes and
 * the one-line error reporting the CLI contract promises.
 *
 * Exit codes: 0 success, 1 failure, 2 usage error; every failure prints exactly one line on
 * stderr ("agentca issue: csr.pem: CSR signature does not verify").
 */
#ifndef AGENTCA_CLI_CLI_H
#define AGENTCA_CLI_CLI_H

#include <getopt.h>

#include "common/error.h"

#define EXIT_OK 0
#define EXIT_FAIL 1
#define EXIT_USAGE 2

struct cli_command {
	const char *name; /* "init", "ca import", "audit verify" */
	int (*run)(int argc, char **argv);
	const char *summary; /* one line for `agentca --help` */
};

/* Print "agentca <cmd>: <message>" and "Try 'agentca <cmd> --help'." ; returns EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Print "agentca <cmd>: <err->msg>"; returns EXIT_USAGE for AC_ERR_USAGE, else EXIT_FAIL. */
int cli_fail(const char *cmd, const struct ac_err *err);

/* Parse options with getopt_long. Handles --help (prints usage to stdout, *done = EXIT_OK)
 * and unknown options (*done = EXIT_USAGE). Returns the option character, -1 at the end, or
 * 0 when *done holds the exit code. */
int cli_getopt(int argc, char **argv, const char *cmd, const char *usage,
               const struct option *longopts, int *done);

/* The commands (cmd_*.c). */
int cmd_init(int argc, char **argv);
int cmd_ca_import(int argc, char **argv);
int cmd_ca_show(int argc, char **argv);
int cmd_ca_rotate(int argc, char **argv);
int cmd_trust_add(int argc, char **argv);
int cmd_issue(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_acme_eab_create(int argc, char **argv);
int cmd_audit_export(int argc, char **argv);
int cmd_audit_verify(int argc, char **argv);
int cmd_audit_sth(int argc, char **argv);
int cmd_token_create(int argc, char **argv);
int cmd_admin_token(int argc, char **argv);
int cmd_enroll(int argc, char **argv);
int cmd_revoke(int argc, char **argv);
int cmd_agent(int argc, char **argv);
int cmd_bundle_watch(int argc, char **argv);
int cmd_proxy(int argc, char **argv);

#endif
