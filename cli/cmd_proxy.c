/*
 * cmd_proxy.c - `agentca proxy`: the mTLS forwarding proxy on its own (standalone mode).
 *
 * It is its own agent: before listening it enrolls (bootstrap token and root fingerprint)
 * or renews if due, with the agent loop of rotation/agent.c, into --out DIR. Then the main
 * thread only waits for signals and timers:
 *
 *   every minute        agent_run(once): renew when due (two thirds of the lifetime, with
 *                       jitter), then load the files again
 *   every bundle period bundle_watch_run(once): fetch the CA's bundle into DIR/bundle.pem
 *   after either        when the certificate or the bundle changed, proxy_update(): new
 *                       connections get the new material, open ones keep flowing
 *   every revocation_interval  GET /v1/revocations?since=N: revoked clients' sessions
 *                       close and their handshakes are refused (a CA without the feed is
 *                       asked again every FEED_ABSENT_RETRY seconds; expiry still holds)
 *   every 5 s           DIR/proxy-metrics.prom (Prometheus text, for node_exporter's
 *                       textfile collector or a person with cat)
 *   SIGHUP              load DIR's files again now (after an external renewal); with
 *                       --config also the file: listeners' allow rules apply at once
 *   SIGTERM, SIGINT     stop accepting, let sessions finish (drain), exit 0
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "cli/cli.h"
#include "common/config.h"
#include "common/fsutil.h"
#include "common/log.h"
#include "common/timefmt.h"
#include "gateway-hook/allow.h"
#include "gateway-hook/material.h"
#include "gateway-hook/proxy.h"
#include "gateway-hook/proxy_config.h"
#include "gateway-hook/revocation_feed.h"
#include "rotation/agent.h"
#include "rotation/bundle_watch.h"

#define RENEW_CHECK_SECONDS 60
#define METRICS_SECONDS 5
#define FEED_ABSENT_RETRY 300

static const char proxy_usage[] =
    "usage: agentca proxy --config FILE\n"
    "       agentca proxy --listen ADDR:PORT --upstream HOST:PORT --ca URL --out DIR\n"
    "                     [--token T | --token-file F] [--fingerprint SHA256]\n"
    "                     [--allow PATTERN]... [--upstream-tls [--upstream-ca FILE]\n"
    "                     [--upstream-name NAME]] [--proxy-protocol]\n"
    "                     [--bundle-interval 30s] [--idle-timeout 5m]\n"
    "\n"
    "Accept mTLS clients on ADDR:PORT and forward those whose certificate the CA's bundle\n"
    "trusts and whose identity an --allow rule names to HOST:PORT; refuse everyone else\n"
    "before a byte reaches the upstream. The proxy enrolls into DIR with the token (or uses\n"
    "the certificate already there), renews it, and follows the bundle; new material is\n"
    "swapped in without dropping connections. Sessions go to DIR/proxy-sessions.jsonl,\n"
    "metrics to DIR/proxy-metrics.prom. Logs JSON lines on stderr; SIGTERM drains.\n"
    "\n"
    "  --allow PATTERN       spiffe://TD/PATH (a \"*\" segment: one segment, \"**\": any\n"
    "                        number), dns:NAME or cn:NAME; repeatable; none: refuse all\n"
    "  --upstream-tls        connect to the upstream with TLS, presenting the proxy's\n"
    "                        certificate, verifying the upstream (fails closed)\n"
    "  --upstream-ca FILE    roots for the upstream (default: the CA's bundle)\n"
    "  --upstream-name NAME  name the upstream must prove, sent as SNI (default its host)\n"
    "  --proxy-protocol      send a PROXY v2 header with the client's identity first\n"
    "  --bundle-interval D   how often the CA's bundle is fetched (default 30s)\n"
    "  --idle-timeout D      close sessions idle this long (default 5m)\n"
    "\n"
    "configuration file (--config): {\"ca\": URL, \"out\": DIR, \"token_file\": F,\n"
    "\"fingerprint\": SHA256, \"bundle_interval\": \"30s\", \"proxy\": {...}} where \"proxy\"\n"
    "is the same section as in the daemon's config.json (see agentca serve --help).\n";

/* The standalone configuration file. */
struct standalone_settings {
	char *ca, *out, *token_file, *fingerprint;
	int64_t bundle_interval;
	struct proxy_settings proxy;
};

static const struct cfg_field standalone_fields[] = {
    {"ca", CFG_STRING, offsetof(struct standalone_settings, ca), 0, 0, NULL,
     "the CA's URL, https://HOST:PORT"},
    {"out", CFG_STRING, offsetof(struct standalone_settings, out), 0, 0, NULL,
     "the proxy's directory (key, certificates, bundle, session log)"},
    {"token_file", CFG_STRING, offsetof(struct standalone_settings, token_file), 0, 0, NULL,
     "a bootstrap token for the first enrollment"},
    {"fingerprint", CFG_STRING, offsetof(struct standalone_settings, fingerprint), 0, 0, NULL,
     "the CA root's SHA-256 fingerprint, for the first enrollment"},
    {"bundle_interval", CFG_DURATION, offsetof(struct standalone_settings, bundle_interval), 1,
     86400, NULL, "how often the CA's bundle is fetched (default 30s)"},
    {"proxy", CFG_OBJECT, offsetof(struct standalone_settings, proxy), 0, 0, proxy_settings_fields,
     "the proxy section, as in the daemon's config.json"},
    CFG_END,
};

/* Changed keys a reload applies (config_diff paths). */
static int
standalone_path_is_live(const char *path)
{
	return proxy_settings_path_is_live("proxy", path);
}

/* The running standalone proxy. */
struct standalone {
	struct standalone_settings s;
	struct proxy_files files;
	struct proxy *proxy;
	uint64_t bundle_sequence;     /* bundle versions loaded by this process */
	uint64_t revocation_sequence; /* of the CA's feed, for ?since= */
	int feed_absent;              /* the CA answered 404: said once */
	char *token;
	const char *config_path; /* --config, read again on SIGHUP; NULL with flags */
};

/* The first line of a file, heap (a token file). */
static char *
read_token_file(const char *path, struct ac_err *err)
{
	char *data = NULL;
	size_t len = 0;

	if (read_file(path, 8192, &data, &len, err) != 0)
		return NULL;
	data[strcspn(data, "\r\n")] = '\0';
	return data;
}

/* Enroll if DIR has no usable certificate, renew if due; log and carry on when the CA is
 * down (the certificate there stays in use). */
static int
agent_once(struct standalone *sa, struct ac_err *err)
{
	struct agent_options ao;

	memset(&ao, 0, sizeof(ao));
	ao.ca_url = sa->s.ca;
	ao.out_dir = sa->s.out;
	ao.token = sa->token;
	ao.fingerprint = sa->s.fingerprint;
	ao.once = 1;
	ao.key_type = KEY_EC_P256;
	return agent_run(&ao, err);
}

/* Fetch the bundle once into DIR/bundle.pem (trusting the bundle already there). */
static void
bundle_once(struct standalone *sa)
{
	struct bundle_watch_options bo;
	struct ac_err err;
	char path[4096];

	ac_err_clear(&err);
	if (path_join(path, sizeof(path), sa->s.out, "bundle.pem", &err) != 0)
		return;
	memset(&bo, 0, sizeof(bo));
	bo.ca_url = sa->s.ca;
	bo.out_path = path;
	bo.roots_pem = path;
	bo.once = 1;
	if (bundle_watch_run(&bo, &err) != 0)
		log_warn("proxy_bundle_fetch_failed", "%s; keeping the bundle in use", err.msg);
}

/* Load DIR again; swap the proxy's material when the certificate or the bundle changed. */
static void
reload_files(struct standalone *sa, const char *why)
{
	struct proxy_files fresh;
	struct ac_err err;
	int cert_changed, bundle_changed;

	ac_err_clear(&err);
	if (proxy_files_load(sa->s.out, &fresh, &err) != 0) {
		log_error("proxy_reload_failed", "%s; keeping the material in use", err.msg);
		return;
	}
	cert_changed = strcmp(fresh.cert_serial, sa->files.cert_serial) != 0;
	bundle_changed = strcmp(fresh.bundle_digest, sa->files.bundle_digest) != 0;
	if (!cert_changed && !bundle_changed) {
		proxy_files_free(&fresh);
		return;
	}
	fresh.m.bundle_sequence = sa->bundle_sequence + (bundle_changed ? 1 : 0);
	if (proxy_update(sa->proxy, &fresh.m, &err) != 0) {
		log_error("proxy_reload_failed", "%s; keeping the material in use", err.msg);
		proxy_files_free(&fresh);
		return;
	}
	sa->bundle_sequence = fresh.m.bundle_sequence;
	proxy_files_free(&sa->files);
	sa->files = fresh;
	log_info("proxy_material_swapped", "certificate %s, bundle %llu in use (%s)",
	         sa->files.cert_serial, (unsigned long long)sa->bundle_sequence, why);
}

static void
standalone_defaults(struct standalone_settings *s)
{
	memset(s, 0, sizeof(*s));
	s->bundle_interval = 30;
	proxy_settings_defaults(&s->proxy);
}

/* SIGHUP with --config: the listeners' allow rules apply at once; every other changed key
 * is named, and applies at the next start. A file that does not load changes nothing. */
static void
reload_config(struct standalone *sa)
{
	struct standalone_settings fresh;
	struct cfg_restart_list restart;
	struct ac_err err;

	ac_err_clear(&err);
	standalone_defaults(&fresh);
	if (config_load_file(sa->config_path, standalone_fields, &fresh, &err) != 0) {
		log_error("config_reload_failed", "%s; keeping the running configuration", err.msg);
		config_free(standalone_fields, &fresh);
		return;
	}
	memset(&restart, 0, sizeof(restart));
	restart.live = standalone_path_is_live;
	config_diff(standalone_fields, &sa->s, &fresh, NULL, cfg_restart_list_add, &restart);
	proxy_settings_apply_allow(sa->proxy, &sa->s.proxy, &fresh.proxy);
	log_info("config_reloaded", "configuration reloaded");
	if (restart.text[0] != '\0')
		log_warn("config_restart_needed",
		         "changed in the configuration, applied only when the proxy starts: %s",
		         restart.text);
	config_free(standalone_fields, &fresh);
}

static void
revoke_one(void *arg, const char *serial)
{
	struct standalone *sa = arg;

	if (proxy_revoke_serial(sa->proxy, serial) == 1)
		log_info("proxy_revoked", "certificate %s is revoked; its sessions close", serial);
}

/* Ask the CA's revocation feed for what is new. Returns the seconds until the next ask. */
static int64_t
poll_revocations(struct standalone *sa)
{
	struct ac_err err;

	ac_err_clear(&err);
	if (revocation_feed_poll(sa->s.ca, sa->s.out, &sa->revocation_sequence, revoke_one, sa,
	                         &err) == 0) {
		sa->feed_absent = 0;
		return sa->s.proxy.revocation_interval;
	}
	if (err.code == AC_ERR_NOTFOUND) {
		if (!sa->feed_absent)
			log_warn(
			    "proxy_no_revocation_feed",
			    "%s; only expiry ends sessions until it appears (asking every %d s)",
			    err.msg, FEED_ABSENT_RETRY);
		sa->feed_absent = 1;
		return FEED_ABSENT_RETRY;
	}
	log_warn("proxy_revocations_failed", "%s; retrying in %lld s", err.msg,
	         (long long)sa->s.proxy.revocation_interval);
	return sa->s.proxy.revocation_interval;
}

static void
write_metrics(struct standalone *sa)
{
	char path[4096], *text = NULL;
	size_t len = 0;
	struct ac_err err;

	ac_err_clear(&err);
	if (proxy_metrics_render(sa->proxy, &text, &len) != 0)
		return;
	if (path_join(path, sizeof(path), sa->s.out, "proxy-metrics.prom", &err) != 0 ||
	    atomic_write_file(path, text, len, 0644, &err) != 0)
		log_warn("proxy_metrics_failed", "%s", err.msg);
	free(text);
}

/* Parse the command line into sa->s (or load --config). Returns -1 after printing. */
static int
parse_args(int argc, char **argv, struct standalone *sa, int *exit_code)
{
	static const struct option longopts[] = {
	    {"config", required_argument, NULL, 'C'},
	    {"listen", required_argument, NULL, 'l'},
	    {"upstream", required_argument, NULL, 'u'},
	    {"ca", required_argument, NULL, 'c'},
	    {"out", required_argument, NULL, 'o'},
	    {"token", required_argument, NULL, 't'},
	    {"token-file", required_argument, NULL, 'T'},
	    {"fingerprint", required_argument, NULL, 'f'},
	    {"allow", required_argument, NULL, 'a'},
	    {"upstream-tls", no_argument, NULL, 'S'},
	    {"upstream-ca", required_argument, NULL, 'R'},
	    {"upstream-name", required_argument, NULL, 'N'},
	    {"proxy-protocol", no_argument, NULL, 'P'},
	    {"bundle-interval", required_argument, NULL, 'B'},
	    {"idle-timeout", required_argument, NULL, 'I'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct proxy_listener_settings l;
	const char *config = NULL, *token = NULL;
	struct ac_err err;
	int c, done, flags = 0;
	int64_t bundle_interval = 0, idle = 0;

	memset(&l, 0, sizeof(l));
	ac_err_clear(&err);
	*exit_code = EXIT_USAGE;
	while ((c = cli_getopt(argc, argv, "proxy", proxy_usage, longopts, &done)) != -1) {
		if (c == 0) {
			*exit_code = done;
			goto fail;
		}
		flags += c != 'C';
		switch (c) {
		case 'C':
			config = optarg;
			break;
		case 'l':
			l.listen = optarg;
			break;
		case 'u':
			l.upstream = optarg;
			break;
		case 'c':
			free(sa->s.ca);
			sa->s.ca = strdup(optarg);
			break;
		case 'o':
			free(sa->s.out);
			sa->s.out = strdup(optarg);
			break;
		case 't':
			token = optarg;
			break;
		case 'T':
			free(sa->s.token_file);
			sa->s.token_file = strdup(optarg);
			break;
		case 'f':
			free(sa->s.fingerprint);
			sa->s.fingerprint = strdup(optarg);
			break;
		case 'a':
			if (cfg_strlist_add(&l.allow, optarg, &err) != 0)
				goto fail_err;
			break;
		case 'S':
			l.upstream_mode = "tls";
			break;
		case 'R':
			l.upstream_ca_file = optarg;
			break;
		case 'N':
			l.upstream_name = optarg;
			break;
		case 'P':
			l.proxy_protocol = 1;
			break;
		case 'B':
			if (duration_parse(optarg, &bundle_interval) != 0 || bundle_interval <= 0) {
				cli_usage_error("proxy",
				                "--bundle-interval wants a duration (30s)");
				goto fail;
			}
			break;
		case 'I':
			if (duration_parse(optarg, &idle) != 0 || idle <= 0) {
				cli_usage_error("proxy", "--idle-timeout wants a duration (5m)");
				goto fail;
			}
			break;
		}
	}
	if (optind != argc) {
		cli_usage_error("proxy", "unexpected argument '%s'", argv[optind]);
		goto fail;
	}
	if (config != NULL && flags > 0) {
		cli_usage_error("proxy", "--config and the other options do not mix");
		goto fail;
	}
	if (config != NULL) {
		*exit_code = EXIT_FAIL;
		if (config_load_file(config, standalone_fields, &sa->s, &err) != 0)
			goto fail_err;
		sa->config_path = config;
	} else {
		if (l.listen == NULL || l.upstream == NULL) {
			cli_usage_error("proxy",
			                "--listen and --upstream are required (or --config)");
			goto fail;
		}
		if (proxy_settings_add_listener(&sa->s.proxy, &l, &err) != 0)
			goto fail_err;
		if (bundle_interval > 0)
			sa->s.bundle_interval = bundle_interval;
		if (idle > 0)
			sa->s.proxy.idle_timeout = idle;
	}
	if (sa->s.ca == NULL || sa->s.out == NULL) {
		cli_usage_error("proxy", "--ca and --out are required");
		goto fail;
	}
	if (strncmp(sa->s.ca, "https://", 8) != 0) {
		cli_usage_error("proxy", "--ca must be an https:// URL");
		goto fail;
	}
	*exit_code = EXIT_FAIL;
	if (token != NULL && token[0] != '\0') {
		sa->token = strdup(token);
	} else if (sa->s.token_file != NULL) {
		sa->token = read_token_file(sa->s.token_file, &err);
		if (sa->token == NULL)
			goto fail_err;
	}
	cfg_strlist_free(&l.allow);
	return 0;
fail_err:
	cli_fail("proxy", &err);
fail:
	cfg_strlist_free(&l.allow);
	return -1;
}

/* Every listener's allow rules parse (proxy_start would refuse them after enrolling). */
static int
check_rules(const struct proxy_options *po, struct ac_err *err)
{
	for (size_t i = 0; i < po->listener_count; i++) {
		struct allow_rules rules;

		if (allow_rules_parse(po->listeners[i].allow, po->listeners[i].allow_count, &rules,
		                      err) != 0)
			return ac_err_wrap(err, "proxy listener %s", po->listeners[i].listen);
		allow_rules_free(&rules);
	}
	return 0;
}

int
cmd_proxy(int argc, char **argv)
{
	struct standalone sa;
	struct proxy_options po;
	struct ac_err err;
	sigset_t signals;
	enum ac_log_level level = AC_LOG_INFO;
	const char *env = getenv("AGENTCA_LOG_LEVEL");
	int rc = EXIT_FAIL, attempt = 0;
	int64_t next_renew, next_bundle, next_metrics, next_revocations;

	memset(&sa, 0, sizeof(sa));
	memset(&po, 0, sizeof(po));
	ac_err_clear(&err);
	standalone_defaults(&sa.s);
	if (parse_args(argc, argv, &sa, &rc) != 0)
		goto out;
	rc = EXIT_FAIL;
	/* Check the configuration before enrolling, while a failure is still one line. */
	if (proxy_settings_options(&sa.s.proxy, sa.s.out, &po, &err) != 0 ||
	    check_rules(&po, &err) != 0) {
		cli_fail("proxy", &err);
		goto out;
	}
	if (env != NULL)
		ac_log_level_parse(env, &level);
	ac_log_set_level(level);

	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&signals);
	sigaddset(&signals, SIGTERM);
	sigaddset(&signals, SIGINT);
	sigaddset(&signals, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &signals, NULL);

	/* Enroll (or renew if due) before listening; a CA that is down is fine when DIR
	 * already holds a valid certificate. */
	if (ensure_dir(sa.s.out, 0700, &err) != 0) {
		cli_fail("proxy", &err);
		goto out;
	}
	if (agent_once(&sa, &err) != 0)
		log_warn("proxy_enroll_failed", "%s; trying the files in %s", err.msg, sa.s.out);
	ac_err_clear(&err);
	if (proxy_files_load(sa.s.out, &sa.files, &err) != 0) {
		cli_fail("proxy", &err);
		goto out;
	}
	sa.bundle_sequence = 1;
	sa.files.m.bundle_sequence = 1;
	sa.proxy = proxy_start(&po, &sa.files.m, &err);
	if (sa.proxy == NULL) {
		cli_fail("proxy", &err);
		goto out;
	}
	log_info("proxy_ready", "proxy ready with certificate %s", sa.files.cert_serial);
	next_renew = time_now() + RENEW_CHECK_SECONDS;
	next_bundle = time_now() + sa.s.bundle_interval;
	next_metrics = 0;
	next_revocations = 0;
	for (;;) {
		struct timespec tick = {1, 0};
		int sig = sigtimedwait(&signals, NULL, &tick);
		int64_t now = time_now();

		if (sig == SIGTERM || sig == SIGINT) {
			log_info("shutdown", "received %s, draining and stopping",
			         sig == SIGINT ? "SIGINT" : "SIGTERM");
			break;
		}
		if (sig == SIGHUP) {
			if (sa.config_path != NULL)
				reload_config(&sa);
			reload_files(&sa, "SIGHUP");
		}
		if (now >= next_renew) {
			ac_err_clear(&err);
			if (agent_once(&sa, &err) != 0) {
				int64_t wait = agent_backoff(attempt++, (uint32_t)now);

				log_warn("rotation_failed",
				         "%s; keeping the current certificate, "
				         "retrying in %lld s",
				         err.msg, (long long)wait);
				next_renew = now + wait;
			} else {
				attempt = 0;
				next_renew = now + RENEW_CHECK_SECONDS;
				reload_files(&sa, "renewal");
			}
		}
		if (now >= next_bundle) {
			bundle_once(&sa);
			reload_files(&sa, "bundle");
			next_bundle = now + sa.s.bundle_interval;
		}
		if (now >= next_revocations)
			next_revocations = now + poll_revocations(&sa);
		if (now >= next_metrics) {
			write_metrics(&sa);
			next_metrics = now + METRICS_SECONDS;
		}
	}
	rc = EXIT_OK;
out:
	proxy_stop(sa.proxy);
	proxy_options_release(&po);
	proxy_files_free(&sa.files);
	if (sa.token != NULL) {
		OPENSSL_cleanse(sa.token, strlen(sa.token));
		free(sa.token);
	}
	config_free(standalone_fields, &sa.s);
	if (rc == EXIT_OK)
		log_info("stopped", "agentca proxy stopped");
	return rc;
}
