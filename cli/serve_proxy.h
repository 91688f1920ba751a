/*
 * serve_proxy.h - the integrated proxy inside `agentca serve`: the listeners of the
 * configuration's "proxy" section, served with the daemon's own certificate material (its
 * server certificate and key, the intermediate, the bundle of DIR/root.pem and
 * DIR/trust.pem), handed over in-process at start and on every rotation or reload, and
 * revocations read from the store on a timer.
 */
#ifndef AGENTCA_CLI_SERVE_PROXY_H
#define AGENTCA_CLI_SERVE_PROXY_H

#include "ca/authority.h"
#include "common/error.h"
#include "enrollment/api.h"
#include "enrollment/server_cert.h"
#include "gateway-hook/proxy_config.h"
#include "store/store.h"

struct serve_proxy;

/* Start the configured listeners (*out stays NULL when there are none). Its metrics are
 * appended to the API's /metrics. */
int serve_proxy_start(const char *dir, const struct proxy_settings *ps,
                      const struct ca_authority *ca, const struct server_identity *id,
                      struct store *store, struct api *api, struct serve_proxy **out,
                      struct ac_err *err);

/* The server certificate was rotated or the bundle may have changed: swap new material in
 * (open sessions keep theirs). A failure is logged; the running material stays. */
void serve_proxy_material_changed(struct serve_proxy *sp, const struct ca_authority *ca,
                                  const struct server_identity *id);

/* Called every second: looks up revocations every revocation_interval and closes the
 * sessions of revoked certificates. */
void serve_proxy_tick(struct serve_proxy *sp);

/* A reloaded configuration: the listeners' new allow rules apply at once (see
 * proxy_settings_apply_allow); running is updated to match. */
void serve_proxy_apply_allow(struct serve_proxy *sp, struct proxy_settings *running,
                             const struct proxy_settings *fresh);

/* Drain and stop (after api_stop: /metrics may read the proxy until then). */
void serve_proxy_stop(struct serve_proxy *sp);

#endif
