/*
 * proxy_config.c - the "proxy" configuration section: its schema table, defaults, and the
 * translation into struct proxy_options. See proxy_config.h.
 */
#include "gateway-hook/proxy_config.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fsutil.h"
#include "common/log.h"

static const struct cfg_field listener_fields[] = {
    {"listen", CFG_STRING, offsetof(struct proxy_listener_settings, listen), 0, 0, NULL,
     "address the proxy accepts mTLS clients on, ADDR:PORT"},
    {"upstream", CFG_STRING, offsetof(struct proxy_listener_settings, upstream), 0, 0, NULL,
     "where allowed clients are forwarded, HOST:PORT"},
    {"upstream_mode", CFG_STRING, offsetof(struct proxy_listener_settings, upstream_mode), 0, 0,
     NULL, "tcp (plain) or tls (the proxy's certificate, upstream verified) (default tcp)"},
    {"upstream_name", CFG_STRING, offsetof(struct proxy_listener_settings, upstream_name), 0, 0,
     NULL, "tls: the name the upstream's certificate must carry, sent as SNI"},
    {"upstream_ca_file", CFG_STRING, offsetof(struct proxy_listener_settings, upstream_ca_file), 0,
     0, NULL, "tls: PEM roots for the upstream (default: the trust bundle)"},
    {"allow", CFG_STRING_LIST, offsetof(struct proxy_listener_settings, allow), 0, 0, NULL,
     "spiffe://TD/PATH (* one segment, ** any), dns:NAME, cn:NAME; none: deny all"},
    {"proxy_protocol", CFG_BOOL, offsetof(struct proxy_listener_settings, proxy_protocol), 0, 0,
     NULL, "send a PROXY v2 header with the client's identity first (default false)"},
    CFG_END,
};

const struct cfg_field proxy_settings_fields[] = {
    {"listeners", CFG_OBJECT_LIST, offsetof(struct proxy_settings, listeners), 0,
     sizeof(struct proxy_listener_settings), listener_fields, "mTLS forwarding listeners"},
    {"workers", CFG_INT, offsetof(struct proxy_settings, workers), 0, 256, NULL,
     "proxy worker threads (default 0: one per core)"},
    {"handshake_timeout", CFG_DURATION, offsetof(struct proxy_settings, handshake_timeout), 1, 300,
     NULL, "TLS handshake and upstream connect bound (default 10s)"},
    {"idle_timeout", CFG_DURATION, offsetof(struct proxy_settings, idle_timeout), 1, 86400, NULL,
     "a session with no byte either way for this long is closed (default 5m)"},
    {"max_connections", CFG_INT, offsetof(struct proxy_settings, max_connections), 1, 1000000, NULL,
     "connections open at once across listeners (default 10000)"},
    {"drain", CFG_DURATION, offsetof(struct proxy_settings, drain), 1, 3600, NULL,
     "on SIGTERM, how long open sessions may finish (default 10s)"},
    {"revocation_interval", CFG_DURATION, offsetof(struct proxy_settings, revocation_interval), 1,
     3600, NULL,
     "how often revocations are looked up; sessions of a revoked "
     "certificate close within this (default 5s)"},
    {"session_log", CFG_STRING, offsetof(struct proxy_settings, session_log), 0, 0, NULL,
     "JSON-lines session log (default proxy-sessions.jsonl in the directory)"},
    {"verify_cache", CFG_INT, offsetof(struct proxy_settings, verify_cache), 0, 1000000, NULL,
     "verified client chains each worker keeps, so a returning certificate skips the chain "
     "signatures; 0 turns the cache off (default 1024)"},
    CFG_END,
};

void
proxy_settings_defaults(struct proxy_settings *s)
{
	memset(s, 0, sizeof(*s));
	s->max_connections = 10000;
	s->handshake_timeout = 10;
	s->idle_timeout = 300;
	s->drain = 10;
	s->revocation_interval = 5;
	s->verify_cache = 1024;
}

void
proxy_settings_free(struct proxy_settings *s)
{
	config_free(proxy_settings_fields, s);
}

static int
copy_str(char **dst, const char *src)
{
	*dst = NULL;
	if (src == NULL)
		return 0;
	*dst = strdup(src);
	return *dst != NULL ? 0 : -1;
}

int
proxy_settings_add_listener(struct proxy_settings *s, const struct proxy_listener_settings *l,
                            struct ac_err *err)
{
	struct proxy_listener_settings *items, *fresh;

	items = realloc(s->listeners.items, (s->listeners.count + 1) * sizeof(*items));
	if (items == NULL)
		return ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
	s->listeners.items = items;
	fresh = &items[s->listeners.count];
	memset(fresh, 0, sizeof(*fresh));
	s->listeners.count++;
	fresh->proxy_protocol = l->proxy_protocol;
	if (copy_str(&fresh->listen, l->listen) != 0 ||
	    copy_str(&fresh->upstream, l->upstream) != 0 ||
	    copy_str(&fresh->upstream_mode, l->upstream_mode) != 0 ||
	    copy_str(&fresh->upstream_name, l->upstream_name) != 0 ||
	    copy_str(&fresh->upstream_ca_file, l->upstream_ca_file) != 0 ||
	    cfg_strlist_set(&fresh->allow, (const char *const *)l->allow.items, l->allow.count,
	                    err) != 0)
		return ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
	return 0;
}

int
proxy_settings_options(const struct proxy_settings *s, const char *dir, struct proxy_options *o,
                       struct ac_err *err)
{
	const struct proxy_listener_settings *ls = s->listeners.items;
	struct proxy_listener_config *cfgs = NULL;
	char *log_path = NULL;
	const char *log_name = s->session_log != NULL ? s->session_log : "proxy-sessions.jsonl";

	memset(o, 0, sizeof(*o));
	if (s->listeners.count == 0)
		return ac_err_set(err, AC_ERR_INVALID, "proxy_config_invalid",
		                  "no proxy listeners are configured");
	cfgs = calloc(s->listeners.count, sizeof(*cfgs));
	log_path = malloc(4096);
	if (cfgs == NULL || log_path == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		goto fail;
	}
	for (size_t i = 0; i < s->listeners.count; i++) {
		const struct proxy_listener_settings *l = &ls[i];
		const char *mode = l->upstream_mode != NULL ? l->upstream_mode : "tcp";

		if (l->listen == NULL || l->upstream == NULL) {
			ac_err_set(err, AC_ERR_INVALID, "proxy_config_invalid",
			           "proxy.listeners[%zu] needs \"listen\" and \"upstream\"", i);
			goto fail;
		}
		if (strcmp(mode, "tcp") == 0) {
			cfgs[i].mode = PROXY_UPSTREAM_TCP;
		} else if (strcmp(mode, "tls") == 0) {
			cfgs[i].mode = PROXY_UPSTREAM_TLS;
		} else {
			ac_err_set(err, AC_ERR_INVALID, "proxy_config_invalid",
			           "proxy.listeners[%zu].upstream_mode must be \"tcp\" or \"tls\"",
			           i);
			goto fail;
		}
		cfgs[i].listen = l->listen;
		cfgs[i].upstream = l->upstream;
		cfgs[i].upstream_name = l->upstream_name;
		cfgs[i].upstream_ca_file = l->upstream_ca_file;
		cfgs[i].allow = (const char *const *)l->allow.items;
		cfgs[i].allow_count = l->allow.count;
		cfgs[i].proxy_protocol = l->proxy_protocol;
	}
	if (log_name[0] == '/') {
		snprintf(log_path, 4096, "%s", log_name);
	} else if (path_join(log_path, 4096, dir, log_name, err) != 0) {
		goto fail;
	}
	o->listeners = cfgs;
	o->listener_count = s->listeners.count;
	o->workers = (int)s->workers;
	o->handshake_timeout_ms = (int)(s->handshake_timeout * 1000);
	o->idle_timeout_ms = (int)(s->idle_timeout * 1000);
	o->max_connections = (int)s->max_connections;
	o->drain_ms = (int)(s->drain * 1000);
	o->verify_cache = s->verify_cache > 0 ? (int)s->verify_cache : -1;
	o->session_log = log_path;
	return 0;
fail:
	free(cfgs);
	free(log_path);
	return -1;
}

void
proxy_options_release(struct proxy_options *o)
{
	free((void *)o->listeners);
	free((void *)o->session_log);
	memset(o, 0, sizeof(*o));
}

size_t
proxy_settings_apply_allow(struct proxy *p, struct proxy_settings *running,
                           const struct proxy_settings *fresh)
{
	struct proxy_listener_settings *have = running->listeners.items;
	const struct proxy_listener_settings *want = fresh->listeners.items;
	size_t changed = 0;

	if (running->listeners.count != fresh->listeners.count)
		return 0;
	for (size_t i = 0; i < fresh->listeners.count; i++) {
		const char *name = have[i].listen != NULL ? have[i].listen : "?";
		struct ac_err err;

		if (cfg_strlist_equal(&have[i].allow, &want[i].allow))
			continue;
		ac_err_clear(&err);
		if (proxy_set_allow(p, i, (const char *const *)want[i].allow.items,
		                    want[i].allow.count, &err) != 0 ||
		    cfg_strlist_set(&have[i].allow, (const char *const *)want[i].allow.items,
		                    want[i].allow.count, &err) != 0) {
			log_error("proxy_reload_failed", "%s; listener %s keeps its running rules",
			          err.msg, name);
			continue;
		}
		log_info("proxy_rules_reloaded", "listener %s: %zu allow rules", name,
		         want[i].allow.count);
		changed++;
	}
	return changed;
}

int
proxy_settings_path_is_live(const char *prefix, const char *path)
{
	size_t n = strlen(prefix), index;
	char tail[8];
	int end = 0;

	if (strncmp(path, prefix, n) != 0)
		return 0;
	return sscanf(path + n, ".listeners[%zu].%7[a-z]%n", &index, tail, &end) == 2 &&
	       path[n + (size_t)end] == '\0' && strcmp(tail, "allow") == 0;
}
