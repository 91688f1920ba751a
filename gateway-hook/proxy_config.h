/*
 * proxy_config.h - the "proxy" section of a configuration file, the same in the daemon's
 * config.json (integrated listeners) and in `agentca proxy --config FILE` (standalone):
 *
 *   "proxy": {
 *     "listeners": [
 *       { "listen": "127.0.0.1:9443", "upstream": "127.0.0.1:8080",
 *         "upstream_mode": "tcp",                      (or "tls")
 *         "upstream_name": "app.corp.internal",        (tls: name to verify and send as SNI)
 *         "upstream_ca_file": "/etc/app/ca.pem",       (tls: roots; default the bundle)
 *         "allow": ["spiffe://corp.internal/gw-1", "dns:*.svc.corp.internal"],
 *         "proxy_protocol": false }
 *     ],
 *     "workers": 0, "handshake_timeout": "10s", "idle_timeout": "5m",
 *     "max_connections": 10000, "drain": "10s", "revocation_interval": "5s",
 *     "session_log": "proxy-sessions.jsonl", "verify_cache": 1024
 *   }
 *
 * The table (proxy_settings_fields) is walked by the loader, by `--help` and by the README.
 */
#ifndef AGENTCA_GATEWAY_HOOK_PROXY_CONFIG_H
#define AGENTCA_GATEWAY_HOOK_PROXY_CONFIG_H

#include <stdint.h>

#include "common/config.h"
#include "common/error.h"
#include "gateway-hook/proxy.h"

struct proxy_listener_settings {
	char *listen, *upstream, *upstream_mode, *upstream_name, *upstream_ca_file;
	struct cfg_strlist allow;
	int proxy_protocol;
};

struct proxy_settings {
	struct cfg_objlist listeners; /* of struct proxy_listener_settings */
	int64_t workers, max_connections;
	int64_t verify_cache; /* verified client chains cached per worker; 0: off */
	int64_t handshake_timeout, idle_timeout, drain, revocation_interval; /* seconds */
	char *session_log; /* relative paths are under the proxy's directory */
};

extern const struct cfg_field proxy_settings_fields[];

void proxy_settings_defaults(struct proxy_settings *s);
void proxy_settings_free(struct proxy_settings *s);

/* Append one listener (for command-line flags); strings are copied. */
int proxy_settings_add_listener(struct proxy_settings *s, const struct proxy_listener_settings *l,
                                struct ac_err *err);

/* proxy_options for proxy_start(), borrowing the settings' strings. dir resolves a relative
 * session_log. Free with proxy_options_release(). */
int proxy_settings_options(const struct proxy_settings *s, const char *dir, struct proxy_options *o,
                           struct ac_err *err);
void proxy_options_release(struct proxy_options *o);

/* After a configuration reload: give the running proxy, started from `running`, the allow
 * rules of `fresh` for every listener whose rules changed (proxy_set_allow), and copy them
 * into `running`, which then describes the proxy again. Nothing when the listener list
 * changed length (that needs a restart). Logs each listener. Returns how many changed. */
size_t proxy_settings_apply_allow(struct proxy *p, struct proxy_settings *running,
                                  const struct proxy_settings *fresh);

/* Is this changed key (a config_diff path below `prefix`, such as "proxy") one that
 * proxy_settings_apply_allow applies? */
int proxy_settings_path_is_live(const char *prefix, const char *path);

#endif
