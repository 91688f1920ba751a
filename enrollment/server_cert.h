/*
 * server_cert.h - the daemon's own TLS certificate.
 *
 * At start-up, and again once two thirds of its lifetime have passed, the daemon makes a
 * fresh P-256 key in memory and has its intermediate sign a server certificate naming the
 * addresses and host names it serves: the hosts of its listen addresses that are IP
 * literals or names, plus the configured server_names. Names the intermediate's name
 * constraints would not allow (a DNS name outside the policy's suffixes, an IP outside its
 * ranges when ranges are set) are left out with a warning: a client would refuse the
 * chain otherwise. The certificate is recorded in the store and the log like any other
 * (actor "ca:self"); the key never touches the disk.
 */
#ifndef AGENTCA_ENROLLMENT_SERVER_CERT_H
#define AGENTCA_ENROLLMENT_SERVER_CERT_H

#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "ca/issue.h"
#include "common/config.h"
#include "common/error.h"

#define SERVER_CERT_TTL (24 * 3600)

struct server_identity {
	X509 *cert;
	EVP_PKEY *key;
	int64_t not_after;
	int64_t renew_at;
	char serial[41];
};

/* Issue a server certificate for names (host names and IP literals). */
int server_cert_issue(const struct issuer *iss, const struct cfg_strlist *names, int64_t ttl,
                      struct server_identity *out, struct ac_err *err);
void server_identity_free(struct server_identity *id);

/* The host part of "127.0.0.1:8443", "[::1]:8443" or "ca.corp.internal:8443" into buf. */
int listen_address_host(const char *address, char *buf, size_t len);

#endif
