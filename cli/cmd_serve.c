/*
 * cmd_serve.c - `agentca serve`: the CA daemon.
 *
 * Start-up loads everything that must be right before serving, and refuses to start
 * otherwise: the configuration (unknown keys refused), the CA keys (refused when readable
 * by others or when the passphrase is wrong), the store (migrated), the token keys. Then it
 * issues its own server certificate, starts the HTTP engine and the TLS front, and says it
 * is ready. The main thread then only waits for signals and runs the scheduler
 * (rotation/scheduler.h), which owns every timed duty:
 *
 *   SIGHUP           reload config.json (a bad file keeps the running one and says why)
 *                    and issue a fresh server certificate, swapped in without dropping
 *                    connections; the authority, bundle and rotation duties run at once
 *   SIGTERM, SIGINT  stop accepting, drain in-flight requests, exit 0
 *
 *   duty          every  what
 *   authority     1s     DIR's intermediate files changed (a rotation step, here or by
 *                        `agentca ca rotate`): load the authority again and swap it into
 *                        the issuer atomically (requests in flight keep the old one), and
 *                        renew the server certificate under the new intermediate
 *   bundle        1s     rebuild the trust bundle from DIR; long-polls answer on a change
 *   rotation      5s     intermediate rotation (ca/rotate.h): the next step when it is due
 *   server_cert   -      at its renewal point (two thirds of its life)
 *   tree_head     1s     the signed tree head in DIR/sth.json when the log has grown
 *   prune         1h     certificates expired for longer than rotation.retention leave the
 *                        hot tables (the log keeps everything)
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "ca/audit.h"
#include "ca/audit_keys.h"
#include "ca/authority.h"
#include "ca/issue.h"
#include "ca/keys.h"
#include "ca/rotate.h"
#include "cli/cli.h"
#include "cli/serve_proxy.h"
#include "cli/settings.h"
#include "common/fsutil.h"
#include "common/log.h"
#include "common/timefmt.h"
#include "enrollment/acme.h"
#include "enrollment/acme_validate.h"
#include "enrollment/api.h"
#include "enrollment/front.h"
#include "enrollment/server_cert.h"
#include "enrollment/tls.h"
#include "enrollment/token.h"
#include "rotation/ca_duties.h"
#include "rotation/scheduler.h"

/* How often the main loop wakes to run the scheduler. */
#define TICK_SECONDS 1
#define ROTATION_CHECK_SECONDS 5
#define PRUNE_SECONDS 3600

static const char serve_usage_head[] =
    "usage: agentca serve --dir DIR [--listen ADDR:PORT]... [--config FILE]\n"
    "                     [--password-file F] [--acme-resolver ADDR:PORT]\n"
    "                     [--acme-http-port N] [--acme-tls-alpn-port N]\n"
    "\n"
    "Run the CA daemon: the HTTPS API (enrollment, renewal, bundle, health, metrics).\n"
    "Logs JSON lines on stderr. SIGHUP reloads the configuration and the server\n"
    "certificate; SIGTERM drains and stops.\n"
    "\n"
    "  --listen ADDR:PORT      listen here instead of the configured addresses (repeatable)\n"
    "  --config FILE           settings (default DIR/config.json; every key has a default)\n"
    "  --password-file F       the CA key passphrase (else $AGENTCA_PASSWORD, DIR/password)\n"
    "  --acme-resolver A:P     DNS server for every ACME challenge lookup (acme.resolver)\n"
    "  --acme-http-port N      port http-01 validation connects to (acme.http_port)\n"
    "  --acme-tls-alpn-port N  port tls-alpn-01 validation connects to (acme.tls_alpn_port)\n"
    "\n"
    "configuration keys:\n";

/* Settings replaced by a reload stay allocated until exit: a request may still be reading
 * the policy it started with. Reloads are rare; this list stays short. */
struct retired_settings {
	struct agentca_settings *settings;
	struct retired_settings *next;
};

/* Authorities replaced by a rotation, likewise kept until exit: a request may be signing
 * with one, and a response may still be sending its chain. */
struct retired_authority {
	struct ca_authority *authority;
	struct retired_authority *next;
};

struct daemon {
	const char *dir, *config, *password_file;
	const struct cfg_strlist *listen_override;
	const char *acme_resolver; /* --acme-*: override acme.* of the settings */
	int acme_http_port, acme_tls_alpn_port;
	struct acme_options acme;
	struct ca_authority *authority;
	struct agentca_settings *settings;
	struct retired_settings *retired;
	struct store *store;
	struct issuer issuer;
	struct token_verifier *bootstrap;
	struct token_verifier *admin;
	struct token_signer *minter;
	EVP_PKEY *audit_key;
	struct retired_authority *retired_authorities;
	char
	    authority_files[512]; /* stat of the intermediate files the authority was loaded from */
	int64_t renew_grace;      /* read at start-up only (TLS and API agree) */
	struct scheduler scheduler;
	struct rotation_duty rotation_duty;
	struct prune_duty prune_duty;
	struct tree_head_duty tree_head_duty;
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
	STACK_OF(X509) *chain = NULL, *roots = NULL, *untrusted = NULL;
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
	/* Clients may hold leaves of the next or the retiring intermediate during a rotation. */
	if ((untrusted = sk_X509_dup(chain)) == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		goto out;
	}
	for (int i = 0; d->authority->rotating != NULL && i < sk_X509_num(d->authority->rotating);
	     i++)
		if (!sk_X509_push(untrusted, sk_X509_value(d->authority->rotating, i))) {
			ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
			goto out;
		}
	memset(&cfg, 0, sizeof(cfg));
	cfg.cert = fresh.cert;
	cfg.chain = chain;
	cfg.key = fresh.key;
	cfg.client_roots = roots;
	cfg.client_untrusted = untrusted;
	cfg.client_auth = TLS_CLIENT_AUTH_OPTIONAL;
	cfg.client_expired_grace = d->renew_grace;
	ctx = tls_server_ctx_new(&cfg, err);
	if (ctx == NULL)
		goto out;
	server_identity_free(&d->server);
	d->server = fresh;
	memset(&fresh, 0, sizeof(fresh));
out:
	server_identity_free(&fresh);
	sk_X509_free(chain); /* the certificates belong to the authority */
	sk_X509_free(untrusted);
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

/* A summary of the files the authority is loaded from (inode, size, mtime of each), to see
 * a rotation step taken by another process. */
static void
authority_files_stat(const char *dir, char *out, size_t len)
{
	static const char *const files[] = {"intermediate.pem", "intermediate.key",
	                                    CA_FILE_NEXT_CERT, CA_FILE_PREV_CERT};
	size_t used = 0;

	out[0] = '\0';
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]) && used < len; i++) {
		char path[4096];
		struct stat st;

		if (path_join(path, sizeof(path), dir, files[i], NULL) != 0 || stat(path, &st) != 0)
			memset(&st, 0, sizeof(st));
		used += (size_t)snprintf(out + used, len - used, "%llu:%lld:%lld.%09ld;",
		                         (unsigned long long)st.st_ino, (long long)st.st_size,
		                         (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
	}
}

/* Load the authority again when its files changed, and swap it in: new requests sign with
 * the new one, requests in flight finish with the one they started with. */
static int
duty_authority(void *arg, int64_t now, struct duty_report *rep, struct ac_err *err)
{
	struct daemon *d = arg;
	struct retired_authority *old;
	struct ca_authority *fresh;
	char files[sizeof(d->authority_files)];
	int switched;

	(void)now;
	authority_files_stat(d->dir, files, sizeof(files));
	if (strcmp(files, d->authority_files) == 0)
		return 0;
	if ((old = calloc(1, sizeof(*old))) == NULL)
		return ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
	if ((fresh = ca_authority_load(d->dir, d->password_file, err)) == NULL) {
		free(old);
		return -1;
	}
	/* What was seen before the load: a change during it is seen again next tick. */
	memcpy(d->authority_files, files, sizeof(files));
	switched = strcmp(fresh->intermediate_fingerprint, d->authority->intermediate_fingerprint);
	old->authority = d->authority;
	old->next = d->retired_authorities;
	d->retired_authorities = old;
	d->authority = fresh;
	__atomic_store_n(&d->issuer.authority, fresh, __ATOMIC_RELEASE);
	if (switched != 0)
		snprintf(rep->did, sizeof(rep->did), "intermediate %s now signs new certificates",
		         fresh->intermediate_fingerprint);
	else
		snprintf(rep->did, sizeof(rep->did),
		         "intermediate files changed; %d rotating intermediate%s accepted from "
		         "clients",
		         sk_X509_num(fresh->rotating),
		         sk_X509_num(fresh->rotating) == 1 ? "" : "s");
	/* The server certificate follows the signer; the client chain follows the rotation. */
	rotate_server_cert(d, switched != 0 ? "intermediate rotated" : "rotation changed");
	return 0;
}

static int
duty_bundle(void *arg, int64_t now, struct duty_report *rep, struct ac_err *err)
{
	struct daemon *d = arg;

	(void)now;
	(void)rep;
	return api_reload_bundle(d->api, err); /* logs bundle_changed itself */
}

static int
duty_server_cert(void *arg, int64_t now, struct duty_report *rep, struct ac_err *err)
{
	struct daemon *d = arg;

	(void)err;
	if (now >= d->server.renew_at)
		rotate_server_cert(d, "two thirds of its lifetime passed");
	/* On failure renew_at has not moved: try again next second. */
	rep->next_due = d->server.renew_at > now ? d->server.renew_at : now + 1;
	return 0;
}

static int
bundle_probe(void *arg, const char *fingerprint, int64_t *sequence)
{
	struct daemon *d = arg;

	return api_bundle_carries(d->api, fingerprint, sequence);
}

/* A rotation step changed DIR: reload what serves from it now, not on the next tick. */
static void
rotation_changed(void *arg, enum rotation_outcome outcome)
{
	struct daemon *d = arg;
	struct duty_report rep;
	struct ac_err err;

	(void)outcome;
	ac_err_clear(&err);
	rep.did[0] = '\0';
	if (duty_authority(d, 0, &rep, &err) != 0)
		log_error("authority_reload_failed", "%s; keeping the running authority", err.msg);
	else if (rep.did[0] != '\0')
		log_info("duty", "authority: %s", rep.did);
	ac_err_clear(&err);
	if (api_reload_bundle(d->api, &err) != 0)
		log_error("bundle_reload_failed", "%s; keeping the running bundle", err.msg);
}

/* Run the due duties, then hand /metrics their counters and the intermediates' states. */
static void
run_duties(struct daemon *d)
{
	char text[8192];
	size_t used;
	struct ac_err err;
	int64_t now = time_now();

	scheduler_tick(&d->scheduler, now);
	used = scheduler_metrics(&d->scheduler, now, text, sizeof(text));
	rotation_duty_metrics(&d->rotation_duty, text + used, sizeof(text) - used);
	ac_err_clear(&err);
	if (api_set_daemon_metrics(d->api, text, &err) != 0)
		log_warn("metrics_failed", "%s", err.msg);
}

/* The scheduler's duties, in the order they run within one tick. */
static int
schedule(struct daemon *d, struct ac_err *err)
{
	scheduler_init(&d->scheduler);
	d->rotation_duty.dir = d->dir;
	d->rotation_duty.password_file = d->password_file;
	d->rotation_duty.store = d->store;
	d->rotation_duty.settings = &d->settings->rotation;
	d->rotation_duty.bundle_probe = bundle_probe;
	d->rotation_duty.bundle_arg = d;
	d->rotation_duty.changed = rotation_changed;
	d->rotation_duty.changed_arg = d;
	d->rotation_duty.supersede_at = &d->issuer.supersede_at;
	d->prune_duty.store = d->store;
	d->prune_duty.settings = &d->settings->rotation;
	d->tree_head_duty.dir = d->dir;
	d->tree_head_duty.store = d->store;
	d->tree_head_duty.audit_key = d->audit_key;
	if (scheduler_add(&d->scheduler, "authority", TICK_SECONDS, 0, duty_authority, d, err) !=
	        0 ||
	    scheduler_add(&d->scheduler, "bundle", TICK_SECONDS, 0, duty_bundle, d, err) != 0 ||
	    scheduler_add(&d->scheduler, "rotation", ROTATION_CHECK_SECONDS, 0, duty_rotation,
	                  &d->rotation_duty, err) != 0 ||
	    scheduler_add(&d->scheduler, "server_cert", TICK_SECONDS, d->server.renew_at,
	                  duty_server_cert, d, err) != 0 ||
	    scheduler_add(&d->scheduler, "tree_head", TICK_SECONDS, 0, duty_tree_head,
	                  &d->tree_head_duty, err) != 0 ||
	    scheduler_add(&d->scheduler, "prune", PRUNE_SECONDS, 0, duty_prune, &d->prune_duty,
	                  err) != 0)
		return -1;
	return 0;
}

/* Keys whose new value the running daemon takes at once (a trailing '.': a whole section);
 * every other changed key waits for a restart and is named in the log. */
static int
applied_live(const char *path)
{
	static const char *const live[] = {"log_level",          "server_names", "admin_identities",
	                                   "auditor_identities", "policy.",      "rotation."};

	for (size_t i = 0; i < sizeof(live) / sizeof(live[0]); i++) {
		size_t n = strlen(live[i]);

		if (live[i][n - 1] == '.' ? strncmp(path, live[i], n) == 0
		                          : strcmp(path, live[i]) == 0)
			return 1;
	}
	return proxy_settings_path_is_live("proxy", path);
}

/* SIGHUP: a new configuration, validated before it replaces the running one. */
static void
reload(struct daemon *d)
{
	struct retired_settings *old;
	struct agentca_settings *fresh;
	struct cfg_restart_list restart;
	struct ac_err err;

	ac_err_clear(&err);
	memset(&restart, 0, sizeof(restart));
	restart.live = applied_live;
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
	settings_diff(d->settings, fresh, cfg_restart_list_add, &restart);
	if (d->proxy != NULL)
		serve_proxy_apply_allow(d->proxy, &d->settings->proxy, &fresh->proxy);
	old->settings = d->settings;
	old->next = d->retired;
	d->retired = old;
	d->settings = fresh;
	api_set_role_ids(d->api, &fresh->admin_ids, &fresh->auditor_ids);
	/* Requests in flight keep the policy they read; new ones see the new one. */
	__atomic_store_n(&d->issuer.policy, &fresh->policy, __ATOMIC_RELEASE);
	__atomic_store_n(&d->rotation_duty.settings, &fresh->rotation, __ATOMIC_RELEASE);
	__atomic_store_n(&d->prune_duty.settings, &fresh->rotation, __ATOMIC_RELEASE);
	apply_log_level(fresh);
	log_info("config_reloaded", "configuration reloaded");
	if (restart.text[0] != '\0')
		log_warn("config_restart_needed",
		         "changed in the configuration, applied only when the daemon starts: %s",
		         restart.text);
	rotate_server_cert(d, "reload");
	{
		struct ac_err bundle_err;

		ac_err_clear(&bundle_err);
		if (api_reload_bundle(d->api, &bundle_err) != 0)
			log_error("bundle_reload_failed", "%s; keeping the running bundle",
			          bundle_err.msg);
	}
}

/* The ACME server's options and its validation authority (the API stops it). */
static int
start_acme(struct daemon *d, struct ac_err *err)
{
	const struct acme_settings *as = &d->settings->acme;
	struct acme_validator_options vo;

	memset(&vo, 0, sizeof(vo));
	vo.resolver = d->acme_resolver != NULL ? d->acme_resolver : as->resolver;
	vo.http_port = d->acme_http_port > 0 ? d->acme_http_port : (int)as->http_port;
	vo.tls_alpn_port =
	    d->acme_tls_alpn_port > 0 ? d->acme_tls_alpn_port : (int)as->tls_alpn_port;
	vo.threads = (int)as->validation_threads;
	memset(&d->acme, 0, sizeof(d->acme));
	d->acme.issuer = &d->issuer;
	d->acme.external_account_required = as->external_account_required;
	d->acme.website = as->website;
	d->acme.dns_suffixes = &as->dns_suffixes;
	d->acme.ip_ranges = &as->ip_ranges;
	d->acme.order_ttl = as->order_ttl;
	d->acme.validator.submit = acme_validator_submit;
	d->acme.validator.stop = acme_validator_stop;
	d->acme.validator.validator = acme_validator_start(&vo, err);
	if (d->acme.validator.validator == NULL)
		return -1;
	log_info("acme_ready", "ACME directory at /acme/directory; challenges resolved through %s",
	         vo.resolver != NULL ? vo.resolver : "/etc/resolv.conf");
	return 0;
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

	authority_files_stat(d->dir, d->authority_files, sizeof(d->authority_files));
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
	d->renew_grace = d->settings->renew_grace;
	settings_store_options(d->settings, &so);
	d->store = store_open(&so, err);
	if (d->store == NULL)
		return -1;
	d->issuer.authority = d->authority;
	d->issuer.policy = &d->settings->policy;
	d->issuer.store = d->store;
	/* The renewal calendar, refilled from the certificates still valid (ca/renewal_plan.h). */
	d->issuer.planner = renewal_plan_new(err);
	if (d->issuer.planner == NULL ||
	    renewal_plan_rebuild(d->issuer.planner, d->store, (int64_t)time(NULL), err) != 0)
		return -1;

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
	/* A reload replaces these lists (api_set_role_ids); every settings struct the daemon
	 * loaded lives until it exits. */
	ao.admin_ids = &d->settings->admin_ids;
	ao.auditor_ids = &d->settings->auditor_ids;
	ao.max_depth = (int)d->settings->max_nesting_depth;
	ao.rate_per_address = (double)d->settings->rate_limits.address_per_second;
	ao.burst_per_address = (double)d->settings->rate_limits.address_burst;
	ao.rate_per_identity = (double)d->settings->rate_limits.identity_per_second;
	ao.burst_per_identity = (double)d->settings->rate_limits.identity_burst;
	ao.threads = (int)d->settings->http_threads;
	ao.renew_grace = d->renew_grace;
	if (start_acme(d, err) != 0)
		return -1;
	ao.acme = &d->acme;
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
	                      d->api, &d->proxy, err) != 0 ||
	    schedule(d, err) != 0)
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
	store_close(d->store);
	renewal_plan_free(d->issuer.planner);
	if (d->settings != NULL) {
		settings_free(d->settings);
		free(d->settings);
	}
	while (d->retired != NULL) {
		struct retired_settings *next = d->retired->next;

		settings_free(d->retired->settings);
		free(d->retired->settings);
		free(d->retired);
		d->retired = next;
	}
	ca_authority_free(d->authority);
	while (d->retired_authorities != NULL) {
		struct retired_authority *next = d->retired_authorities->next;

		ca_authority_free(d->retired_authorities->authority);
		free(d->retired_authorities);
		d->retired_authorities = next;
	}
}

int
cmd_serve(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"dir", required_argument, NULL, 'd'},
	    {"listen", required_argument, NULL, 'l'},
	    {"config", required_argument, NULL, 'C'},
	    {"password-file", required_argument, NULL, 'p'},
	    {"acme-resolver", required_argument, NULL, 'R'},
	    {"acme-http-port", required_argument, NULL, 'H'},
	    {"acme-tls-alpn-port", required_argument, NULL, 'T'},
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
		case 'R':
			d.acme_resolver = optarg;
			break;
		case 'H':
		case 'T': {
			char *end = NULL;
			long port = strtol(optarg, &end, 10);

			if (end == optarg || *end != '\0' || port < 1 || port > 65535) {
				cfg_strlist_free(&listen_override);
				return cli_usage_error("serve", "--acme-%s-port takes 1 to 65535",
				                       c == 'H' ? "http" : "tls-alpn");
			}
			if (c == 'H')
				d.acme_http_port = (int)port;
			else
				d.acme_tls_alpn_port = (int)port;
			break;
		}
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
	run_duties(&d);
	for (;;) {
		struct timespec tick = {TICK_SECONDS, 0};
		int sig = sigtimedwait(&signals, NULL, &tick);

		if (sig == SIGHUP) {
			reload(&d);
			scheduler_run_soon(&d.scheduler, "authority");
			scheduler_run_soon(&d.scheduler, "rotation");
		} else if (sig == SIGTERM || sig == SIGINT) {
			log_info("shutdown", "received %s, draining and stopping",
			         sig == SIGINT ? "SIGINT" : "SIGTERM");
			break;
		}
		run_duties(&d);
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
