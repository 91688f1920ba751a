/*
 * cmd_serve.c - `agentca serve`: the CA daemon.
 *
 * Start-up loads everything that must be right before serving, and refuses to start
 * otherwise: the configuration (unknown keys refused), the CA keys (refused when readable
 * by others, or when the passphrase is wrong), the store (migrated). Then it waits for
 * signals: SIGHUP reloads and re-validates the configuration (a bad file keeps the old
 * one and says why), SIGTERM and SIGINT stop cleanly. The HTTPS API arrives with the
 * enrollment front; until then the daemon holds the CA ready for it.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ca/authority.h"
#include "cli/cli.h"
#include "cli/settings.h"
#include "common/log.h"

static const char serve_usage_head[] =
	"usage: agentca serve --dir DIR [--config FILE] [--password-file F]\n"
	"\n"
	"Run the CA daemon. Logs JSON lines on stderr. SIGHUP reloads the configuration;\n"
	"SIGTERM stops.\n"
	"\n"
	"  --config FILE           settings (default DIR/config.json; every key has a default)\n"
	"  --password-file F       the CA key passphrase (else $AGENTCA_PASSWORD, DIR/password)\n"
	"\n"
	"configuration keys:\n";

static void
apply_log_level(const struct agentca_settings *s)
{
	enum ac_log_level level = AC_LOG_INFO;
	const char *env = getenv("AGENTCA_LOG_LEVEL");

	if (env != NULL)
		ac_log_level_parse(env, &level);
	else if (s->log_level != NULL)
		ac_log_level_parse(s->log_level, &level);
	ac_log_set_level(level);
}

int
cmd_serve(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"dir", required_argument, NULL, 'd'},
		{"config", required_argument, NULL, 'C'},
		{"password-file", required_argument, NULL, 'p'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *dir = NULL, *config = NULL, *password_file = NULL;
	struct ca_authority *authority = NULL;
	struct agentca_settings settings;
	struct store_options store_opts;
	struct store *store = NULL;
	struct ac_err err;
	sigset_t signals;
	int c, done, have_settings = 0, rc = EXIT_FAIL;

	ac_err_clear(&err);
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
			fputs(serve_usage_head, stdout);
			settings_print_reference(stdout);
			return EXIT_OK;
		case 'd':
			dir = optarg;
			break;
		case 'C':
			config = optarg;
			break;
		case 'p':
			password_file = optarg;
			break;
		default:
			fprintf(stderr, "(try 'agentca serve --help')\n");
			return EXIT_USAGE;
		}
	}
	(void)done;
	if (optind != argc)
		return cli_usage_error("serve", "unexpected argument '%s'", argv[optind]);
	if (dir == NULL)
		return cli_usage_error("serve", "--dir is required");

	/* Block the signals we wait for before any thread starts, so all threads inherit it. */
	sigemptyset(&signals);
	sigaddset(&signals, SIGTERM);
	sigaddset(&signals, SIGINT);
	sigaddset(&signals, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &signals, NULL);

	authority = ca_authority_load(dir, password_file, &err);
	if (authority == NULL)
		goto fail;
	if (settings_load(dir, config, authority->trust_domain, &settings, &err) != 0)
		goto fail;
	have_settings = 1;
	apply_log_level(&settings);
	settings_store_options(&settings, &store_opts);
	store = store_open(&store_opts, &err);
	if (store == NULL)
		goto fail;

	log_info("ca_ready", "CA \"%s\" (trust domain %s, %s mode) ready; root %s, intermediate %s",
		 authority->name, authority->trust_domain, authority->mode,
		 authority->root_fingerprint, authority->intermediate_fingerprint);

	for (;;) {
		int sig = 0;

		if (sigwait(&signals, &sig) != 0)
			continue;
		if (sig == SIGHUP) {
			struct agentca_settings fresh;
			struct ac_err reload_err;

			ac_err_clear(&reload_err);
			if (settings_load(dir, config, authority->trust_domain, &fresh,
					  &reload_err) != 0) {
				log_error("config_reload_failed", "%s; keeping the running "
								  "configuration",
					  reload_err.msg);
				continue;
			}
			settings_free(&settings);
			settings = fresh;
			apply_log_level(&settings);
			log_info("config_reloaded", "configuration reloaded");
			continue;
		}
		log_info("shutdown", "received %s, stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
		break;
	}
	rc = EXIT_OK;
	goto out;
fail:
	/* Before the daemon is up, stderr is a person's terminal: one plain line. */
	rc = cli_fail("serve", &err);
out:
	store_close(store);
	if (have_settings)
		settings_free(&settings);
	ca_authority_free(authority);
	return rc;
}
