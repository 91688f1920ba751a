/*
 * settings.h - the daemon's configuration file (DIR/config.json, or --config FILE): one
 * schema for the whole file, assembled from each layer's own table, so an unknown key
 * anywhere is refused with its full path.
 *
 *   {
 *     "log_level": "info",
 *     "listen": ["127.0.0.1:8443"], "server_names": [], "http_threads": 0,
 *     "policy": { ...ca/policy.h: ca_policy_fields... },
 *     "store":  { "path": "agentca.db", "busy_timeout_ms": 5000, "group_commit_max": 256 },
 *     "rotation": { ...ca/rotate.h: rotation_settings_fields... }
 *     "acme":   { "external_account_required": false, "resolver": "127.0.0.1:8053", ... }
 *   }
 *
 * Every setting has a default, so a missing file section (or `--dir` alone) works.
 */
#ifndef AGENTCA_CLI_SETTINGS_H
#define AGENTCA_CLI_SETTINGS_H

#include <stdint.h>
#include <stdio.h>

#include "ca/policy.h"
#include "ca/rotate.h"
#include "common/error.h"
#include "gateway-hook/proxy_config.h"
#include "store/store.h"

struct store_settings {
	char *path; /* relative paths are under DIR */
	int64_t busy_timeout_ms;
	int64_t group_commit_max;
};

struct rate_limit_settings {
	int64_t address_per_second, address_burst;   /* per client address; 0: off */
	int64_t identity_per_second, identity_burst; /* per identity; 0: off */
};

/* The ACME server (enrollment/acme.h) and its validation authority (acme_validate.h). */
struct acme_settings {
	int external_account_required;   /* newAccount needs an EAB key */
	char *website;                   /* directory meta.website */
	struct cfg_strlist dns_suffixes; /* identifiers allowed to ACME (on top of policy) */
	struct cfg_strlist ip_ranges;
	int64_t order_ttl;     /* seconds; default 1h */
	char *resolver;        /* ADDR:PORT for every validation lookup; NULL: resolv.conf */
	int64_t http_port;     /* http-01 target port; default 80 */
	int64_t tls_alpn_port; /* tls-alpn-01 target port; default 443 */
	int64_t validation_threads;
};

struct agentca_settings {
	char *log_level;
	struct cfg_strlist listen;       /* HTTPS API addresses; default 127.0.0.1:8443 */
	struct cfg_strlist server_names; /* extra names for the daemon's certificate */
	int64_t http_threads;            /* 0: one per core */
	struct cfg_strlist admin_ids;    /* SPIFFE IDs whose certificates act as admins */
	struct cfg_strlist auditor_ids;  /* ... as auditors */
	int64_t max_nesting_depth;       /* default 3 */
	int64_t renew_grace;             /* seconds an expired certificate may still renew; 0 */
	struct rate_limit_settings rate_limits;
	struct ca_policy policy;
	struct store_settings store;
	struct rotation_settings rotation; /* ca/rotate.h: intermediate rotation, pruning */
	struct acme_settings acme;
	struct proxy_settings proxy; /* integrated proxy listeners (gateway-hook) */
	char store_path_resolved[4096];
};

/* Defaults, then config_path (or DIR/config.json when config_path is NULL and that file
 * exists), then validation. trust_domain seeds the policy's DNS suffix default. */
int settings_load(const char *dir, const char *config_path, const char *trust_domain,
                  struct agentca_settings *s, struct ac_err *err);
void settings_free(struct agentca_settings *s);

/* Store options from the settings (borrowing its strings). */
void settings_store_options(const struct agentca_settings *s, struct store_options *opts);

/* Call changed(arg, path) for every key whose value differs between a and b (see
 * config_diff); returns how many differ. */
size_t settings_diff(const struct agentca_settings *a, const struct agentca_settings *b,
                     void (*changed)(void *arg, const char *path), void *arg);

/* Print every key with its type and help line (for `serve --help` and the README). */
void settings_print_reference(FILE *out);

/* Load the settings of DIR (trust_domain NULL: read it from DIR/ca.json) and open the store
 * they name. On success the caller owns both: store_close(), then settings_free(). */
int settings_open_store(const char *dir, const char *config_path, const char *trust_domain,
                        struct agentca_settings *s, struct store **store, struct ac_err *err);

/* Read the trust domain from DIR/ca.json into buf (for commands that do not load keys). */
int settings_read_trust_domain(const char *dir, char *buf, size_t len, struct ac_err *err);

#endif
