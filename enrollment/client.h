/*
 * client.h - the agent's side of enrollment (libcurl on OpenSSL).
 *
 * Trust starts from a fingerprint the operator gives out of band: the client fetches the
 * CA's bundle once without trusting the server, keeps only the root whose SHA-256 equals the
 * fingerprint, and from then on talks to the CA with full verification against that root
 * alone (server name included). The bundle it finally writes is fetched again over that
 * verified connection.
 */
#ifndef AGENTCA_ENROLLMENT_CLIENT_H
#define AGENTCA_ENROLLMENT_CLIENT_H

#include <signal.h>
#include <stddef.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "common/config.h"
#include "common/error.h"

/* Requests give up (within about a second) once *flag becomes non-zero: a long-poll must
 * not keep a process from stopping. NULL: never. */
void client_set_abort(volatile sig_atomic_t *flag);

/* The root PEM (one certificate) of the CA at ca_url whose fingerprint matches. Heap. */
int client_bootstrap_root(const char *ca_url, const char *fingerprint, char **root_pem,
                          struct ac_err *err);

/* GET ca_url/v1/bundle verified against root_pem. Heap. */
int client_fetch_bundle(const char *ca_url, const char *root_pem, char **bundle_pem,
                        struct ac_err *err);

/* What the CA returned for an enrollment or renewal. Heap strings. */
struct client_issued {
	char *cert_pem;
	char *chain_pem;
	char *serial;
	char *not_after;
	char *renew_after;
};
void client_issued_free(struct client_issued *c);

/* POST ca_url/v1/enroll {token, csr}. A problem document's detail becomes err->msg. */
int client_enroll(const char *ca_url, const char *root_pem, const char *token, const char *csr_pem,
                  struct client_issued *out, struct ac_err *err);

/* POST ca_url/v1/renew {csr} over mTLS with the current certificate (cert_pem: leaf and
 * chain) and its key (key_pem), verifying the server against roots_pem (the bundle). */
int client_renew(const char *ca_url, const char *roots_pem, const char *cert_pem,
                 const char *key_pem, const char *csr_pem, struct client_issued *out,
                 struct ac_err *err);

/* GET ca_url/v1/bundle?wait=W with If-None-Match: etag (may be ""), verified against
 * roots_pem. On a changed bundle: *changed = 1, *bundle_pem (heap) and etag updated; on
 * 304: *changed = 0. The CA answers as soon as the bundle changes, or after W seconds. */
int client_watch_bundle(const char *ca_url, const char *roots_pem, int wait_seconds, char etag[128],
                        char **bundle_pem, int *changed, struct ac_err *err);

/* GET ca_url + path (JSON), verified against roots_pem, with a client certificate when
 * cert_pem and key_pem are given. 404 is AC_ERR_NOTFOUND; other non-200 answers become
 * errors with the problem's detail. *doc: json_decref() it. */
int client_get_json(const char *ca_url, const char *path, const char *roots_pem,
                    const char *cert_pem, const char *key_pem, json_t **doc, struct ac_err *err);

/* A CSR (PEM, heap) for key with a DNS SAN for each name. */
/* POST /v1/bundle/ack {etag} over mTLS with cert_pem/key_pem: tell the CA that the bundle
 * with this ETag is now in use. */
int client_bundle_ack(const char *ca_url, const char *roots_pem, const char *cert_pem,
                      const char *key_pem, const char *etag, struct ac_err *err);

char *client_make_csr(EVP_PKEY *key, const struct cfg_strlist *dns, struct ac_err *err);

/* The DNS names a token grants, read from its payload without verifying it (the CA
 * verifies): only to ask for them in the CSR. */
int client_token_dns(const char *token, struct cfg_strlist *dns, struct ac_err *err);

/* Write out_dir/key.pem (0600), cert.pem, chain.pem and bundle.pem, each atomically, then
 * out_dir/renew_after: one line "SERIAL RFC3339", the point the CA chose for this
 * certificate to renew at (removed when the CA gave none). */
int client_write_identity(const char *out_dir, EVP_PKEY *key, const struct client_issued *c,
                          const char *bundle_pem, struct ac_err *err);

#endif
