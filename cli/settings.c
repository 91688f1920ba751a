/*
 * settings.c - the configuration schema of config.json and its loading. See settings.h.
 */
#include "cli/settings.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "common/fsutil.h"
#include "common/log.h"

static const struct cfg_field store_fields[] = {
    {"path", CFG_STRING, offsetof(struct store_settings, path), 0, 0, NULL,
     "SQLite database file, relative to DIR (default agentca.db)"},
    {"busy_timeout_ms", CFG_INT, offsetof(struct store_settings, busy_timeout_ms), 1, 600000, NULL,
     "how long a writer waits for the database lock (default 5000)"},
    {"group_commit_max", CFG_INT, offsetof(struct store_settings, group_commit_max), 1, 65536, NULL,
     "most writes committed together in one durable transaction (default 256)"},
    CFG_END,
};

static const struct cfg_field rate_limit_fields[] = {
    {"address_per_second", CFG_INT, offsetof(struct rate_limit_settings, address_per_second), 0,
     1000000, NULL, "requests per second from one client address; 0 is off (default 100)"},
    {"address_burst", CFG_INT, offsetof(struct rate_limit_settings, address_burst), 1, 1000000,
     NULL, "requests an address may send at once above its rate (default 200)"},
    {"identity_per_second", CFG_INT, offsetof(struct rate_limit_settings, identity_per_second), 0,
     1000000, NULL,
     "enrollments, renewals and mints per second per identity; 0 is off "
     "(default 5)"},
    {"identity_burst", CFG_INT, offsetof(struct rate_limit_settings, identity_burst), 1, 1000000,
     NULL, "calls an identity may make at once above its rate (default 20)"},
    CFG_END,
};

static const struct cfg_field acme_fields[] = {
    {"external_account_required", CFG_BOOL,
     offsetof(struct acme_settings, external_account_required), 0, 0, NULL,
     "new ACME accounts need an external account binding (agentca acme eab create)"},
    {"website", CFG_STRING, offsetof(struct acme_settings, website), 0, 0, NULL,
     "URL shown as meta.website in the ACME directory"},
    {"dns_suffixes", CFG_STRING_LIST, offsetof(struct acme_settings, dns_suffixes), 0, 0, NULL,
     "DNS suffixes ACME orders may name (on top of policy.dns_suffixes); empty: policy's"},
    {"ip_ranges", CFG_STRING_LIST, offsetof(struct acme_settings, ip_ranges), 0, 0, NULL,
     "CIDR ranges ACME orders may name (on top of policy.ip_ranges); empty: policy's"},
    {"order_ttl", CFG_DURATION, offsetof(struct acme_settings, order_ttl), 60, 7 * 86400, NULL,
     "how long an ACME order and its authorizations stay valid (default 1h)"},
    {"resolver", CFG_STRING, offsetof(struct acme_settings, resolver), 0, 0, NULL,
     "ADDR:PORT of the DNS server for every challenge lookup (default: resolv.conf)"},
    {"http_port", CFG_INT, offsetof(struct acme_settings, http_port), 1, 65535, NULL,
     "port the http-01 validator connects to (default 80)"},
    {"tls_alpn_port", CFG_INT, offsetof(struct acme_settings, tls_alpn_port), 1, 65535, NULL,
     "port the tls-alpn-01 validator connects to (default 443)"},
    {"validation_threads", CFG_INT, offsetof(struct acme_settings, validation_threads), 1, 256,
     NULL, "challenge validations run at once (default 4)"},
    CFG_END,
};

static const struct cfg_field settings_fields[] = {
    {"log_level", CFG_STRING, offsetof(struct agentca_settings, log_level), 0, 0, NULL,
     "debug, info, warn or error (default info)"},
    {"listen", CFG_STRING_LIST, offsetof(struct agentca_settings, listen), 0, 0, NULL,
     "HTTPS API addresses, ADDR:PORT or [V6]:PORT (default [\"127.0.0.1:8443\"])"},
    {"server_names", CFG_STRING_LIST, offsetof(struct agentca_settings, server_names), 0, 0, NULL,
     "extra DNS names or IPs for the daemon's own certificate"},
    {"admin_identities", CFG_STRING_LIST, offsetof(struct agentca_settings, admin_ids), 0, 0, NULL,
     "SPIFFE IDs whose client certificates act as admins"},
    {"auditor_identities", CFG_STRING_LIST, offsetof(struct agentca_settings, auditor_ids), 0, 0,
     NULL, "SPIFFE IDs whose client certificates act as auditors (read-only)"},
    {"max_nesting_depth", CFG_INT, offsetof(struct agentca_settings, max_nesting_depth), 1, 16,
     NULL, "how deep agents may nest children under themselves (default 3)"},
    {"renew_grace", CFG_DURATION, offsetof(struct agentca_settings, renew_grace), 0, 7 * 86400,
     NULL,
     "how long after expiry a certificate may still renew over mTLS (default 0: off; at "
     "most 7d)"},
    {"rate_limits", CFG_OBJECT, offsetof(struct agentca_settings, rate_limits), 0, 0,
     rate_limit_fields, "429 with Retry-After beyond these"},
    {"http_threads", CFG_INT, offsetof(struct agentca_settings, http_threads), 0, 256, NULL,
     "HTTP worker threads (default 0: 8 per core, as handlers wait for durable commits)"},
    {"policy", CFG_OBJECT, offsetof(struct agentca_settings, policy), 0, 0, ca_policy_fields,
     "issuance policy"},
    {"store", CFG_OBJECT, offsetof(struct agentca_settings, store), 0, 0, store_fields,
     "the embedded store"},
    {"rotation", CFG_OBJECT, offsetof(struct agentca_settings, rotation), 0, 0,
     rotation_settings_fields, "intermediate rotation and pruning (scheduler)"},
    {"acme", CFG_OBJECT, offsetof(struct agentca_settings, acme), 0, 0, acme_fields,
     "the ACME server under /acme/ and its challenge validation"},
    {"proxy", CFG_OBJECT, offsetof(struct agentca_settings, proxy), 0, 0, proxy_settings_fields,
     "mTLS forwarding proxy listeners served by the daemon (gateway-hook)"},
    CFG_END,
};

static const char *const cfg_type_labels[] = {
    [CFG_STRING] = "string",       [CFG_INT] = "integer",      [CFG_BOOL] = "boolean",
    [CFG_DURATION] = "duration",   [CFG_STRING_LIST] = "list", [CFG_OBJECT] = "object",
    [CFG_OBJECT_LIST] = "objects",
};

static void
print_fields(FILE *out, const struct cfg_field *fields, const char *prefix)
{
	for (; fields->key != NULL; fields++) {
		char path[128];

		snprintf(path, sizeof(path), "%s%s%s", prefix, prefix[0] != '\0' ? "." : "",
		         fields->key);
		fprintf(out, "  %-24s %-9s %s\n", path, cfg_type_labels[fields->type],
		        fields->help != NULL ? fields->help : "");
		if (fields->type == CFG_OBJECT)
			print_fields(out, fields->children, path);
		if (fields->type == CFG_OBJECT_LIST) {
			strncat(path, "[]", sizeof(path) - strlen(path) - 1);
			print_fields(out, fields->children, path);
		}
	}
}

size_t
settings_diff(const struct agentca_settings *a, const struct agentca_settings *b,
              void (*changed)(void *arg, const char *path), void *arg)
{
	return config_diff(settings_fields, a, b, NULL, changed, arg);
}

void
settings_print_reference(FILE *out)
{
	print_fields(out, settings_fields, "");
}

int
settings_read_trust_domain(const char *dir, char *buf, size_t len, struct ac_err *err)
{
	char path[4096];
	json_error_t jerr;
	json_t *root, *td;
	int rc = -1;

	if (path_join(path, sizeof(path), dir, "ca.json", err) != 0)
		return -1;
	root = json_load_file(path, 0, &jerr);
	if (root == NULL)
		return ac_err_set(err, AC_ERR_NOTFOUND, "no_ca",
		                  "%s: no CA here (%s); run agentca init first", dir, jerr.text);
	td = json_object_get(root, "trust_domain");
	if (!json_is_string(td) || json_string_length(td) >= len) {
		ac_err_set(err, AC_ERR_INVALID, "ca_json_invalid", "%s: no trust_domain", path);
		goto out;
	}
	memcpy(buf, json_string_value(td), json_string_length(td) + 1);
	rc = 0;
out:
	json_decref(root);
	return rc;
}

int
settings_load(const char *dir, const char *config_path, const char *trust_domain,
              struct agentca_settings *s, struct ac_err *err)
{
	char default_path[4096];
	enum ac_log_level level;

	memset(s, 0, sizeof(*s));
	s->store.busy_timeout_ms = 5000;
	s->max_nesting_depth = 3;
	s->rate_limits.address_per_second = 100;
	s->rate_limits.address_burst = 200;
	s->rate_limits.identity_per_second = 5;
	s->rate_limits.identity_burst = 20;
	s->store.group_commit_max = 256;
	rotation_settings_defaults(&s->rotation);
	s->acme.order_ttl = 3600;
	proxy_settings_defaults(&s->proxy);
	if (ca_policy_defaults(&s->policy, trust_domain != NULL ? trust_domain : "", err) != 0)
		return -1;

	if (config_path == NULL) {
		if (path_join(default_path, sizeof(default_path), dir, "config.json", err) != 0)
			goto fail;
		if (path_exists(default_path))
			config_path = default_path;
	}
	if (config_path != NULL && config_load_file(config_path, settings_fields, s, err) != 0)
		goto fail;
	if (s->listen.count == 0 && cfg_strlist_add(&s->listen, "127.0.0.1:8443", err) != 0)
		goto fail;

	if (s->log_level != NULL && ac_log_level_parse(s->log_level, &level) != 0) {
		ac_err_set(err, AC_ERR_INVALID, "config_invalid",
		           "%s: \"log_level\" must be debug, info, warn or error", config_path);
		goto fail;
	}
	if (rotation_settings_validate(&s->rotation, err) != 0) {
		ac_err_wrap(err, "%s", config_path != NULL ? config_path : "default settings");
		goto fail;
	}
	if (ca_policy_validate(&s->policy, err) != 0) {
		ac_err_wrap(err, "%s", config_path != NULL ? config_path : "default policy");
		goto fail;
	}
	{
		const char *p = s->store.path != NULL ? s->store.path : "agentca.db";

		if (p[0] == '/') {
			if (strlen(p) >= sizeof(s->store_path_resolved)) {
				ac_err_set(err, AC_ERR_INVALID, "config_invalid",
				           "store.path is too long");
				goto fail;
			}
			strcpy(s->store_path_resolved, p);
		} else if (path_join(s->store_path_resolved, sizeof(s->store_path_resolved), dir, p,
		                     err) != 0) {
			goto fail;
		}
	}
	return 0;
fail:
	settings_free(s);
	return -1;
}

void
settings_free(struct agentca_settings *s)
{
	ca_policy_free(&s->policy);
	free(s->log_level);
	s->log_level = NULL;
	cfg_strlist_free(&s->listen);
	cfg_strlist_free(&s->server_names);
	cfg_strlist_free(&s->admin_ids);
	cfg_strlist_free(&s->auditor_ids);
	free(s->store.path);
	s->store.path = NULL;
	rotation_settings_free(&s->rotation);
	config_free(acme_fields, &s->acme);
	proxy_settings_free(&s->proxy);
}

void
settings_store_options(const struct agentca_settings *s, struct store_options *opts)
{
	store_options_defaults(opts);
	opts->path = s->store_path_resolved;
	opts->busy_timeout_ms = s->store.busy_timeout_ms;
	opts->group_commit_max = s->store.group_commit_max;
}

int
settings_open_store(const char *dir, const char *config_path, const char *trust_domain,
                    struct agentca_settings *s, struct store **store, struct ac_err *err)
{
	struct store_options opts;
	char td[256];

	*store = NULL;
	if (trust_domain == NULL) {
		if (settings_read_trust_domain(dir, td, sizeof(td), err) != 0)
			return -1;
		trust_domain = td;
	}
	if (settings_load(dir, config_path, trust_domain, s, err) != 0)
		return -1;
	settings_store_options(s, &opts);
	*store = store_open(&opts, err);
	if (*store == NULL) {
		settings_free(s);
		return -1;
	}
	return 0;
}
