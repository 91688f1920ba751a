/*
 * material.h - the proxy's certificate material read from a directory the agent loop keeps
 * current (key.pem, cert.pem, chain.pem, bundle.pem; see rotation/agent.h), with a
 * fingerprint of each part so a caller can tell what changed since the last load.
 */
#ifndef AGENTCA_GATEWAY_HOOK_MATERIAL_H
#define AGENTCA_GATEWAY_HOOK_MATERIAL_H

#include "common/error.h"
#include "gateway-hook/proxy.h"

struct proxy_files {
	struct proxy_material m; /* owned: freed by proxy_files_free */
	char cert_serial[41];    /* of the leaf */
	char bundle_digest[65];  /* SHA-256 of bundle.pem's bytes */
};

/* Load DIR's files; a key that does not match the certificate is refused. */
int proxy_files_load(const char *dir, struct proxy_files *f, struct ac_err *err);
void proxy_files_free(struct proxy_files *f);

#endif
