/*
 * cmd_serve.c - `agentca serve`: the CA daemon.
 *
 * Start-up loads everything that must be right before serving, and refuses to start
 * otherwise: the configuration (unknown keys refused), the CA keys (refused when readable
 * by others or when the passphrase is wrong), the store (migrated), the token keys. Then it
 * issues its own server certificate, starts the HTTP engine and the TLS front, and says it
 * is ready. The main thread then only waits for signals and timers:
 *
 *   SIGHUP           reload config.json (a bad file keeps the running one and says why)
 *                    and issue a fresh server certificate, swapped in without dropping
 *                    connections
 *   SIGTERM, SIGINT  stop accepting, drain in-flight requests, exit 0
 *   every second     publish the signed tree head in DIR/sth.json when the log has grown
 *                    (so within a second of each batch of commits); renew the server
 *                    certificate once two thirds of its life has passed
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ca/audit.h"
#include "ca/audit_keys.h"
#include "ca/authority.h"
#include "ca/issue.h"
#include "ca/keys.h"
#include "cli/cli.h"
#include "cli/serve_proxy.h"
#include "cli/settings.h"
#include "common/fsutil.h"
#include "common/log.h"
#include "common/timefmt.h"
#include "enrollment/api.h"
#include "enrollment/front.h"
#include "enrollment/server_cert.h"
#include "enrollment/tls.h"
#include "enrollment/token.h"

/* How often the main loop wakes: a tree head is published within this long of each commit
 * that grew the log; the server certificate's renewal is checked as often. */
#define STH_PUBLISH_INTERVAL 1

static const char serve_usage_head[] =
    "usage: agentca serve --dir DIR [--listen ADDR:PORT]... [--config FILE]\n"
    "                     [--password-file F]\n"
    "\n"
    "Run the CA daemon: the HTTPS API (enrollment, renewal, bundle, health, metrics).\n"
    "Logs JSON lines on stderr. SIGHUP reloads the configuration and the server\n"
    "certificate; SIGTERM drains and stops.\n"
    "\n"
    "  --listen ADDR:PORT      listen here instead of the configured addresses (repeatable)\n"
    "  --config FILE           settings (default DIR/config.json; every key has a default)\n"
    "  --password-file F       the CA key passphrase (else $AGENTCA_PASSWORD, DIR/password)\n"
    "\n"
    "configuration keys:\n";

/* Settings replaced by a reload stay allocated until exit: a request may still be reading
 * the policy it started with. Reloads are rare; this list stays short. */
struct retired_settings {
	struct agentca_settings settings;
	struct retired_settings *next;
};

struct daemon {
	const char *dir, *config, *password_file;
	const struct cfg_strlist *listen_override;
	struct ca_authority *authority;
	struct agentca_settings *settings;
	struct retired_settings *retired;
	struct store *store;
	struct issuer issuer;
	struct token_verifier *bootstrap;
	struct token_verifier *admin;
	struct token_signer *minter;
	EVP_PKEY *audit_key;
	struct cfg_strlist admin_ids, auditor_ids; /* copies: read at start-up only */
	uint64_t published_tree_size;              /* of the last DIR/sth.json written */
	struct server_identity server;
	struct tls_ctx_slot *tls;
	struct api *api;
	struct front *front;
	struct serve_proxy *proxy; /* NULL without proxy listeners */
};

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

/* The names the server certificate carries: the listen hosts, then server_names. */
static int
server_names(const struct daemon *d, struct cfg_strlist *names, struct ac_err *err)
{
	const struct cfg_strlist *listen =
	    d->listen_override->count > 0 ? d->listen_override : &d->settings->listen;
	char host[256];

	for (size_t i = 0; i < listen->count; i++)
		if (listen_address_host(listen->items[i], host, sizeof(host)) == 0 &&
		    cfg_strlist_add(names, host, err) != 0)
			return -1;
	for (size_t i = 0; i < d->settings->proxy.listeners.count; i++) {
		const struct proxy_listener_settings *pl = d->settings->proxy.listeners.items;

		if (pl[i].listen != NULL &&
		    listen_address_host(pl[i].listen, host, sizeof(host)) == 0 &&
		    cfg_strlist_add(names, host, err) != 0)
			return -1;
	}
	for (size_t i = 0; i < d->settings->server_names.count; i++)
		if (cfg_strlist_add(names, d->settings->server_names.items[i], err) != 0)
			return -1;
	return 0;
}

/* Issue a server certificate and build the server TLS context around it. Clients may
 * present a certificate of ours (renewal); it is verified against our root. */
static SSL_CTX *
make_server_ctx(struct daemon *d, struct ac_err *err)
{
	struct cfg_strlist names = {NULL, 0};
	struct server_identity fresh;
	struct tls_server_config cfg;
	STACK_OF(X509) *chain = NULL, *roots = NULL;
	SSL_CTX *ctx = NULL;

	memset(&fresh, 0, sizeof(fresh));
	if (server_names(d, &names, err) != 0 ||
	    server_cert_issue(&d->issuer, &names, SERVER_CERT_TTL, &fresh, err) != 0)
		goto out;
	chain = sk_X509_new_null();
	roots = sk_X509_new_null();
	if (chain == NULL || roots == NULL || !sk_X509_push(chain, d->authority->intermediate) ||
	    !sk_X509_push(roots, d->authority->root)) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		goto out;
	}
	for (int i = 0; d->authority->upstream != NULL && i < sk_X509_num(d->authority->upstream);
	     i++)
		if (!sk_X509_push(chain, sk_X509_value(d->authority->upstream, i))) {
			ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
			goto out;
		}
	memset(&cfg, 0, sizeof(cfg));
	cfg.cert = fresh.cert;
	cfg.chain = chain;
	cfg.key = fresh.key;
	cfg.client_roots = roots;
	cfg.client_untrusted = chain;
	cfg.client_auth = TLS_CLIENT_AUTH_OPTIONAL;
	ctx = tls_server_ctx_new(&cfg, err);
	if (ctx == NULL)
		goto out;
	server_identity_free(&d->server);
	d->server = fresh;
	memset(&fresh, 0, sizeof(fresh));
out:
	server_identity_free(&fresh);
	sk_X509_free(chain); /* the certificates belong to the authority */
	sk_X509_free(roots);
	cfg_strlist_free(&names);
	return ctx;
}

/* Renew the server certificate and swap the TLS context: open connections keep theirs. */
static void
rotate_server_cert(struct daemon *d, const char *why)
{
	struct ac_err err;
	SSL_CTX *ctx;

	ac_err_clear(&err);
	ctx = make_server_ctx(d, &err);
	if (ctx == NULL) {
		log_error("server_cert_renewal_failed", "%s; keeping serial %s until %lld", err.msg,
		          d->server.serial, (long long)d->server.not_after);
		return;
	}
	tls_slot_swap(d->tls, ctx);
	serve_proxy_material_changed(d->proxy, d->authority, &d->server);
	log_info("server_cert_rotated", "server certificate %s in use (%s)", d->server.serial, why);
}

/* Publish the signed tree head in DIR/sth.json when the log has grown since the last one
 * (called every second): auditors and mirrors copy it from there, or ask GET
 * /v1/audit/sth. */
static void
publish_sth(struct daemon *d)
{
	char path[4096], *text = NULL, head_hash[LOG_HASH_HEX_LEN + 1];
	struct ac_err err;
	struct sth sth;
	json_t *doc = NULL;
	uint64_t head = 0;

	ac_err_clear(&err);
	/* A cheap look first: most seconds nothing was committed. */
	if (store_log_head(d->store, &head, head_hash, &err) != 0)
		goto fail;
	if (head == d->published_tree_size && head != 0)
		return;
	if (audit_sth_make(d->store, d->audit_key, &sth, &err) != 0)
		goto fail;
	if (sth.tree_size == d->published_tree_size)
		return;
	doc = sth_to_json(&sth);
	text = doc != NULL ? json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	if (text == NULL) {
		ac_err_set(&err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		goto fail;
	}
	if (path_join(path, sizeof(path), d->dir, "sth.json", &err) != 0 ||
	    atomic_write_file(path, text, strlen(text), 0644, &err) != 0)
		goto fail;
	d->published_tree_size = sth.tree_size;
	log_info("sth_published", "signed tree head for %llu entries published",
	         (unsigned long long)sth.tree_size);
	goto out;
fail:
	log_warn("sth_publish_failed", "%s", err.msg);
out:
	free(text);
	json_decref(doc);
}

/* SIGHUP: a new configuration, validated before it replaces the running one. */
static void
reload(struct daemon *d)
{
	struct retired_settings *old;
	struct agentca_settings *fresh;
	struct ac_err err;

	ac_err_clear(&err);
	fresh = calloc(1, sizeof(*fresh));
	old = calloc(1, sizeof(*old));
	if (fresh == NULL || old == NULL ||
	    settings_load(d->dir, d->config, d->authority->trust_domain, fresh, &err) != 0) {
		log_error("config_reload_failed", "%s; keeping the running configuration",
		          err.msg[0] != '\0' ? err.msg : "out of memory");
		free(fresh);
		free(old);
		return;
	}
	old->settings = *d->settings;
	old->next = d->retired;
	d->retired = old;
	free(d->settings);
	d->settings = fresh;
	/* Requests in flight keep the policy they read; new ones see the new one. */
	__atomic_store_n(&d->issuer.policy, &fresh->policy, __ATOMIC_RELEASE);
	apply_log_level(fresh);
	log_info("config_reloaded", "configuration reloaded");
	rotate_server_cert(d, "reload");
	{
		struct ac_err bundle_err;

		ac_err_clear(&bundle_err);
		if (api_reload_bundle(d->api, &bundle_err) != 0)
			log_error("bundle_reload_failed", "%s; keeping the running bundle",
			          bundle_err.msg);
	}
}

static int
start(struct daemon *d, struct ac_err *err)
{
	char passphrase[PASSPHRASE_MAX];
	struct front_options fo;
	struct api_options ao;
	struct store_options so;
	SSL_CTX *ctx;
	const struct cfg_strlist *listen;

	d->authority = ca_authority_load(d->dir, d->password_file, err);
	if (d->authority == NULL)
		return -1;
	d->settings = calloc(1, sizeof(*d->settings));
	if (d->settings == NULL)
		return ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
	if (settings_load(d->dir, d->config, d->authority->trust_domain, d->settings, err) != 0) {
		free(d->settings);
		d->settings = NULL;
		return -1;
	}
	apply_log_level(d->settings);
	settings_store_options(d->settings, &so);
	d->store = store_open(&so, err);
	if (d->store == NULL)
		return -1;
	d->issuer.authority = d->authority;
	d->issuer.policy = &d->settings->policy;
	d->issuer.store = d->store;

	if (passphrase_resolve(d->dir, d->password_file, passphrase, sizeof(passphrase), err) != 0)
		return -1;
	if (token_keys_ensure(d->dir, passphrase, err) != 0) {
		passphrase_wipe(passphrase, sizeof(passphrase));
		return -1;
	}
	d->minter = token_signer_load(d->dir, TOKEN_BOOTSTRAP, passphrase,
	                              d->authority->root_fingerprint, err);
	if (d->minter != NULL && audit_keys_ensure(d->dir, passphrase, err) == 0)
		d->audit_key = audit_key_load(d->dir, passphrase, err);
	passphrase_wipe(passphrase, sizeof(passphrase));
	if (d->minter != NULL && d->audit_key == NULL)
		return -1;
	if (d->minter == NULL)
		return -1;
	d->bootstrap =
	    token_verifier_load(d->dir, TOKEN_BOOTSTRAP, d->authority->root_fingerprint, err);
	d->admin = d->bootstrap != NULL ? token_verifier_load(d->dir, TOKEN_ADMIN,
	                                                      d->authority->root_fingerprint, err)
	                                : NULL;
	if (d->bootstrap == NULL || d->admin == NULL)
		return -1;

	ctx = make_server_ctx(d, err);
	if (ctx == NULL)
		return -1;
	d->tls = tls_slot_new(ctx);
	if (d->tls == NULL) {
		SSL_CTX_free(ctx);
		return ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
	}

	memset(&ao, 0, sizeof(ao));
	ao.issuer = &d->issuer;
	ao.bootstrap = d->bootstrap;
	ao.admin = d->admin;
	ao.minter = d->minter;
	ao.audit_key = d->audit_key;
	/* Identity lists are read at start-up (a reload does not change them): the API keeps
	 * the daemon's own copies, which outlive any reload. */
	if (cfg_strlist_set(&d->admin_ids, (const char *const *)d->settings->admin_ids.items,
	                    d->settings->admin_ids.count, err) != 0 ||
	    cfg_strlist_set(&d->auditor_ids, (const char *const *)d->settings->auditor_ids.items,
	                    d->settings->auditor_ids.count, err) != 0)
		return -1;
	ao.admin_ids = &d->admin_ids;
	ao.auditor_ids = &d->auditor_ids;
	ao.max_depth = (int)d->settings->max_nesting_depth;
	ao.rate_per_address = (double)d->settings->rate_limits.address_per_second;
	ao.burst_per_address = (double)d->settings->rate_limits.address_burst;
	ao.rate_per_identity = (double)d->settings->rate_limits.identity_per_second;
	ao.burst_per_identity = (double)d->settings->rate_limits.identity_burst;
	ao.threads = (int)d->settings->http_threads;
	d->api = api_start(&ao, err);
	if (d->api == NULL)
		return -1;

	listen = d->listen_override->count > 0 ? d->listen_override : &d->settings->listen;
	memset(&fo, 0, sizeof(fo));
	fo.listen = (const char *const *)listen->items;
	fo.listen_count = listen->count;
	fo.tls = d->tls;
	fo.mhd = api_mhd(d->api);
	d->front = front_start(&fo, err);
	if (d->front == NULL)
		return -1;
	api_set_front(d->api, d->front);
	if (serve_proxy_start(d->dir, &d->settings->proxy, d->authority, &d->server, d->store,
	                      d->api, &d->proxy, err) != 0)
		return -1;

	for (size_t i = 0; i < listen->count; i++)
		log_info("listening", "HTTPS API on %s (port %d)", listen->items[i],
		         front_bound_port(d->front, i));
	log_info("ca_ready", "CA \"%s\" (trust domain %s, %s mode) ready; root %s, intermediate %s",
	         d->authority->name, d->authority->trust_domain, d->authority->mode,
	         d->authority->root_fingerprint, d->authority->intermediate_fingerprint);
	return 0;
}

/* Stop in the reverse order of start: no new connections, drain, then the rest. */
static void
stop(struct daemon *d)
{
	api_begin_shutdown(d->api);
	front_stop(d->front);
	api_stop(d->api);
	serve_proxy_stop(d->proxy);
	tls_slot_free(d->tls);
	server_identity_free(&d->server);
	token_verifier_free(d->bootstrap);
	token_verifier_free(d->admin);
	token_signer_free(d->minter);
	EVP_PKEY_free(d->audit_key);
	cfg_strlist_free(&d->admin_ids);
	cfg_strlist_free(&d->auditor_ids);
	store_close(d->store);
	if (d->settings != NULL) {
		settings_free(d->settings);
		free(d->settings);
	}
	while (d->retired != NULL) {
		struct retired_settings *next = d->retired->next;

		settings_free(&d->retired->settings);
		free(d->retired);
		d->retired = next;
	}
	ca_authority_free(d->authority);
}

int
cmd_serve(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"dir", required_argument, NULL, 'd'},
	    {"listen", required_argument, NULL, 'l'},
	    {"config", required_argument, NULL, 'C'},
	    {"password-file", required_argument, NULL, 'p'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct cfg_strlist listen_override = {NULL, 0};
	struct daemon d;
	struct ac_err err;
	sigset_t signals;
	int c, rc = EXIT_FAIL;

	memset(&d, 0, sizeof(d));
	ac_err_clear(&err);
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
			fputs(serve_usage_head, stdout);
			settings_print_reference(stdout);
			return EXIT_OK;
		case 'd':
			d.dir = optarg;
			break;
		case 'l':
			if (cfg_strlist_add(&listen_override, optarg, &err) != 0)
				return cli_fail("serve", &err);
			break;
		case 'C':
			d.config = optarg;
			break;
		case 'p':
			d.password_file = optarg;
			break;
		default:
			fprintf(stderr, "(try 'agentca serve --help')\n");
			cfg_strlist_free(&listen_override);
			return EXIT_USAGE;
		}
	}
	if (optind != argc || d.dir == NULL) {
		cfg_strlist_free(&listen_override);
		return optind != argc
		           ? cli_usage_error("serve", "unexpected argument '%s'", argv[optind])
		           : cli_usage_error("serve", "--dir is required");
	}
	d.listen_override = &listen_override;

	/* Block the signals we wait for before any thread starts, so all threads inherit it.
	 * SIGPIPE: a peer that goes away is an error return, not a death. */
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&signals);
	sigaddset(&signals, SIGTERM);
	sigaddset(&signals, SIGINT);
	sigaddset(&signals, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &signals, NULL);

	if (start(&d, &err) != 0) {
		/* Before the daemon is up, stderr is a person's terminal: one plain line. */
		rc = cli_fail("serve", &err);
		goto out;
	}
	publish_sth(&d);
	for (;;) {
		struct timespec tick = {STH_PUBLISH_INTERVAL, 0};
		int sig = sigtimedwait(&signals, NULL, &tick);

		if (sig == SIGHUP) {
			reload(&d);
		} else if (sig == SIGTERM || sig == SIGINT) {
			log_info("shutdown", "received %s, draining and stopping",
			         sig == SIGINT ? "SIGINT" : "SIGTERM");
			break;
		}
		if (time_now() >= d.server.renew_at)
			rotate_server_cert(&d, "two thirds of its lifetime passed");
		publish_sth(&d);
		serve_proxy_tick(d.proxy);
	}
	rc = EXIT_OK;
out:
	stop(&d);
	cfg_strlist_free(&listen_override);
	if (rc == EXIT_OK)
		log_info("stopped", "agentca stopped");
	return rc;
}
