/*
 * cmd_agent.c - `agentca agent`: enroll if needed, then keep the certificate renewed.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "common/log.h"
#include "rotation/agent.h"

#include <openssl/crypto.h>

static const char agent_usage[] =
    "usage: agentca agent --ca URL --out DIR [--token T | --token-file F]\n"
    "                     [--fingerprint SHA256] [--exec CMD] [--signal PID:SIG]\n"
    "                     [--once] [--force] [--key-type p256|p384|ed25519|rsa3072]\n"
    "\n"
    "Keep DIR/key.pem, cert.pem, chain.pem and bundle.pem valid: enroll with the token when\n"
    "DIR holds no valid certificate, then renew over mTLS at two thirds of the lifetime\n"
    "(with jitter), a new key each time. After each rotation run CMD (/bin/sh -c) or send\n"
    "SIG to PID. When the CA is unreachable, keep the current files and retry with\n"
    "backoff. Logs JSON lines on stderr; SIGTERM stops.\n"
    "\n"
    "  --once                  renew if due (or enroll if needed), then exit: for cron or a\n"
    "                          systemd timer\n"
    "  --force                 renew now, due or not\n";

/* "1234:HUP" or "1234:1" into pid and signal number. */
static int
parse_signal(const char *text, pid_t *pid, int *sig)
{
	static const struct {
		const char *name;
		int number;
	} names[] = {{"HUP", SIGHUP},
	             {"USR1", SIGUSR1},
	             {"USR2", SIGUSR2},
	             {"TERM", SIGTERM},
	             {"INT", SIGINT}};
	const char *colon = strchr(text, ':');
	char *end;
	long p;

	if (colon == NULL)
		return -1;
	p = strtol(text, &end, 10);
	if (end != colon || p <= 0)
		return -1;
	*pid = (pid_t)p;
	colon++;
	if (strncmp(colon, "SIG", 3) == 0)
		colon += 3;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (strcmp(colon, names[i].name) == 0) {
			*sig = names[i].number;
			return 0;
		}
	}
	*sig = (int)strtol(colon, &end, 10);
	return *end == '\0' && *sig > 0 && *sig < 65 ? 0 : -1;
}

/* The first line of a file, without its newline, heap. */
static char *
first_line(const char *path)
{
	char buf[8192 + 2];
	FILE *fp = fopen(path, "r");

	if (fp == NULL)
		return NULL;
	if (fgets(buf, sizeof(buf), fp) == NULL)
		buf[0] = '\0';
	fclose(fp);
	buf[strcspn(buf, "\r\n")] = '\0';
	return strdup(buf);
}

int
cmd_agent(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"ca", required_argument, NULL, 'c'},
	    {"out", required_argument, NULL, 'o'},
	    {"token", required_argument, NULL, 't'},
	    {"token-file", required_argument, NULL, 'T'},
	    {"fingerprint", required_argument, NULL, 'f'},
	    {"exec", required_argument, NULL, 'e'},
	    {"signal", required_argument, NULL, 's'},
	    {"once", no_argument, NULL, '1'},
	    {"force", no_argument, NULL, 'F'},
	    {"key-type", required_argument, NULL, 'k'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct agent_options o;
	struct ac_err err;
	const char *token_file = NULL, *env;
	char *token = NULL;
	enum ac_log_level level = AC_LOG_INFO;
	int c, done, rc = EXIT_FAIL;

	memset(&o, 0, sizeof(o));
	o.key_type = KEY_EC_P256;
	ac_err_clear(&err);
	while ((c = cli_getopt(argc, argv, "agent", agent_usage, longopts, &done)) != -1) {
		if (c == 0)
			return done;
		switch (c) {
		case 'c':
			o.ca_url = optarg;
			break;
		case 'o':
			o.out_dir = optarg;
			break;
		case 't':
			o.token = optarg;
			break;
		case 'T':
			token_file = optarg;
			break;
		case 'f':
			o.fingerprint = optarg;
			break;
		case 'e':
			o.exec_cmd = optarg;
			break;
		case 's':
			if (parse_signal(optarg, &o.signal_pid, &o.signal_number) != 0)
				return cli_usage_error("agent",
				                       "--signal wants PID:SIG, e.g. 1234:HUP");
			break;
		case '1':
			o.once = 1;
			break;
		case 'F':
			o.force = 1;
			break;
		case 'k':
			if (key_type_parse(optarg, &o.key_type) != 0)
				return cli_usage_error("agent", "unknown --key-type '%s'", optarg);
			break;
		}
	}
	if (optind != argc)
		return cli_usage_error("agent", "unexpected argument '%s'", argv[optind]);
	/* Empty values mean "not given": systemd units pass unset variables as "". */
	if (token_file != NULL && token_file[0] == '\0')
		token_file = NULL;
	if (o.fingerprint != NULL && o.fingerprint[0] == '\0')
		o.fingerprint = NULL;
	if (o.exec_cmd != NULL && o.exec_cmd[0] == '\0')
		o.exec_cmd = NULL;
	if (o.token != NULL && o.token[0] == '\0')
		o.token = NULL;
	if (o.ca_url == NULL || o.out_dir == NULL)
		return cli_usage_error("agent", "--ca and --out are required");
	if (strncmp(o.ca_url, "https://", 8) != 0)
		return cli_usage_error("agent", "--ca must be an https:// URL");
	if (token_file != NULL && o.token == NULL) {
		token = first_line(token_file);
		if (token == NULL) {
			ac_err_set(&err, AC_ERR_IO, "file_unreadable", "%s: cannot read the token",
			           token_file);
			return cli_fail("agent", &err);
		}
		o.token = token;
	}
	/* A long-running process: its log is its voice, unless told otherwise. */
	env = getenv("AGENTCA_LOG_LEVEL");
	if (env != NULL)
		ac_log_level_parse(env, &level);
	ac_log_set_level(level);

	if (agent_run(&o, &err) != 0)
		rc = cli_fail("agent", &err);
	else
		rc = EXIT_OK;
	if (token != NULL) {
		OPENSSL_cleanse(token, strlen(token));
		free(token);
	}
	return rc;
}
