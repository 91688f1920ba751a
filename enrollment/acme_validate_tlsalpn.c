/*
 * acme_validate_tlsalpn.c - the tls-alpn-01 check (RFC 8737): a TLS handshake with
 * IDENTIFIER:PORT offering only the ALPN protocol "acme-tls/1", with SNI the name (for an IP
 * address its reverse name, RFC 8738 section 6). The server must pick "acme-tls/1" and show a
 * certificate whose subjectAltName holds exactly the one identifier and which carries a
 * critical id-pe-acmeIdentifier extension whose value is the DER OCTET STRING of
 * SHA-256(key authorization). The certificate is self-signed by design: it is examined, not
 * verified.
 *
 * Every address the resolver gives is tried in turn until one accepts the connection; the
 * connect and the handshake are non-blocking and end at the job's deadline. The SSL_CTX is
 * the pool's, made once in acme_validate.c.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "enrollment/acme_validate_internal.h"

#define ALPN_PROTOCOL "acme-tls/1"

/* A connected non-blocking socket to one of addrs, or -1 with out filled. */
static int
connect_any(const struct acme_addresses *addrs, int port, const char *identifier,
            int64_t deadline_ms, struct acme_validation_result *out)
{
	int last_errno = 0;

	for (size_t i = 0; i < addrs->count; i++) {
		struct sockaddr_storage ss;
		socklen_t sslen;
		int fd, soerr = 0;
		socklen_t soerr_len = sizeof(soerr);

		memset(&ss, 0, sizeof(ss));
		if (addrs->list[i].family == AF_INET) {
			struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

			sin->sin_family = AF_INET;
			sin->sin_port = htons((uint16_t)port);
			memcpy(&sin->sin_addr, addrs->list[i].addr, 4);
			sslen = sizeof(*sin);
		} else {
			struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

			sin6->sin6_family = AF_INET6;
			sin6->sin6_port = htons((uint16_t)port);
			memcpy(&sin6->sin6_addr, addrs->list[i].addr, 16);
			sslen = sizeof(*sin6);
		}
		fd = socket(addrs->list[i].family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0) {
			last_errno = errno;
			continue;
		}
		if (connect(fd, (struct sockaddr *)&ss, sslen) == 0)
			return fd;
		if (errno == EINPROGRESS) {
			int ready = dns_wait_fd(fd, POLLOUT, deadline_ms);

			if (ready == 1 &&
			    getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &soerr_len) == 0 &&
			    soerr == 0)
				return fd;
			last_errno = ready == 1 ? soerr : ETIMEDOUT;
		} else {
			last_errno = errno;
		}
		close(fd);
		if (last_errno == ETIMEDOUT)
			break;
	}
	acme_fail(out, "connection", "connecting to %.100s port %d for tls-alpn-01: %s", identifier,
	          port, strerror(last_errno != 0 ? last_errno : ECONNREFUSED));
	return -1;
}

/* The SNI for an IP address: its reverse DNS name (RFC 8738 section 6). */
static void
reverse_name(const struct acme_addresses *addrs, char *out, size_t len)
{
	const unsigned char *a = addrs->list[0].addr;
	size_t o = 0;

	if (addrs->list[0].family == AF_INET) {
		snprintf(out, len, "%u.%u.%u.%u.in-addr.arpa", a[3], a[2], a[1], a[0]);
		return;
	}
	for (int i = 15; i >= 0 && o + 4 < len; i--) {
		static const char hexd[] = "0123456789abcdef";

		out[o++] = hexd[a[i] & 0x0F];
		out[o++] = '.';
		out[o++] = hexd[a[i] >> 4];
		out[o++] = '.';
	}
	snprintf(out + o, len - o, "ip6.arpa");
}

/* The certificate names exactly the one identifier in its subjectAltName. */
static int
san_is_identifier(X509 *cert, const struct acme_validation *job, const struct acme_addresses *addrs)
{
	GENERAL_NAMES *names;
	const GENERAL_NAME *gn;
	int crit = -1, ok = 0;

	names = X509_get_ext_d2i(cert, NID_subject_alt_name, &crit, NULL);
	if (names == NULL || sk_GENERAL_NAME_num(names) != 1)
		goto out;
	gn = sk_GENERAL_NAME_value(names, 0);
	if (job->identifier_is_ip) {
		size_t want = addrs->list[0].family == AF_INET ? 4 : 16;

		ok = gn->type == GEN_IPADD && (size_t)ASN1_STRING_length(gn->d.iPAddress) == want &&
		     memcmp(ASN1_STRING_get0_data(gn->d.iPAddress), addrs->list[0].addr, want) == 0;
	} else {
		size_t want = strlen(job->identifier);

		ok = gn->type == GEN_DNS && (size_t)ASN1_STRING_length(gn->d.dNSName) == want &&
		     strncasecmp((const char *)ASN1_STRING_get0_data(gn->d.dNSName),
		                 job->identifier, want) == 0;
	}
out:
	GENERAL_NAMES_free(names);
	return ok;
}

/* Check the acmeIdentifier extension: one, critical, DER OCTET STRING of the digest. */
static void
check_acme_identifier(const struct acme_checker *c, X509 *cert, const unsigned char digest[32],
                      const char *identifier, struct acme_validation_result *out)
{
	const X509_EXTENSION *ext;
	const ASN1_OCTET_STRING *value;
	int idx = X509_get_ext_by_OBJ(cert, c->acme_identifier_oid, -1);

	if (idx < 0) {
		acme_fail(out, "incorrectResponse",
		          "the certificate for %.100s has no acmeIdentifier extension "
		          "(1.3.6.1.5.5.7.1.31)",
		          identifier);
		return;
	}
	if (X509_get_ext_by_OBJ(cert, c->acme_identifier_oid, idx) >= 0) {
		acme_fail(out, "incorrectResponse",
		          "the certificate for %.100s has more than one acmeIdentifier extension",
		          identifier);
		return;
	}
	ext = X509_get_ext(cert, idx);
	if (!X509_EXTENSION_get_critical(ext)) {
		acme_fail(out, "incorrectResponse",
		          "the acmeIdentifier extension of the certificate for %.100s is not "
		          "critical",
		          identifier);
		return;
	}
	value = X509_EXTENSION_get_data((X509_EXTENSION *)ext);
	if (ASN1_STRING_length(value) != 34 || ASN1_STRING_get0_data(value)[0] != 0x04 ||
	    ASN1_STRING_get0_data(value)[1] != 32 ||
	    memcmp(ASN1_STRING_get0_data(value) + 2, digest, 32) != 0) {
		acme_fail(out, "incorrectResponse",
		          "the acmeIdentifier extension of the certificate for %.100s is not "
		          "SHA-256 of this challenge's key authorization",
		          identifier);
		return;
	}
	out->ok = 1;
}

void
acme_check_tlsalpn01(const struct acme_checker *c, const struct acme_validation *job,
                     int64_t deadline_ms, struct acme_validation_result *out)
{
	struct acme_addresses addrs;
	unsigned char digest[32];
	const unsigned char *alpn = NULL;
	unsigned int alpn_len = 0;
	char sni[80];
	SSL *ssl = NULL;
	X509 *cert = NULL;
	int fd = -1;

	if (acme_key_authorization_digest(c, job->key_authorization, digest) != 0) {
		acme_fail(out, "connection", "the CA could not hash the key authorization");
		goto out;
	}
	if (acme_resolve(c, job->identifier, job->identifier_is_ip, deadline_ms, &addrs, out) != 0)
		goto out;
	fd = connect_any(&addrs, c->tls_alpn_port, job->identifier, deadline_ms, out);
	if (fd < 0)
		goto out;
	ssl = SSL_new(c->alpn_ctx);
	if (ssl == NULL || SSL_set_fd(ssl, fd) != 1) {
		acme_fail(out, "connection",
		          "the CA could not start a TLS client; try again later");
		goto out;
	}
	if (job->identifier_is_ip)
		reverse_name(&addrs, sni, sizeof(sni));
	else
		snprintf(sni, sizeof(sni), "%.79s", job->identifier);
	/* A single-label name is not a valid SNI for every stack; it is still what RFC 8737
	 * asks for, and the check is against the peer's answer. */
	if (SSL_set_tlsext_host_name(ssl, sni) != 1) {
		acme_fail(out, "tls", "cannot send SNI %.80s", sni);
		goto out;
	}
	for (;;) {
		int r = SSL_connect(ssl), e, ready;

		if (r == 1)
			break;
		e = SSL_get_error(ssl, r);
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
			ready = dns_wait_fd(fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT,
			                    deadline_ms);
			if (ready == 1)
				continue;
			acme_fail(out, "connection",
			          "the TLS handshake with %.100s port %d timed out",
			          job->identifier, c->tls_alpn_port);
			goto out;
		}
		{
			unsigned long code = ERR_get_error();
			char why[120];

			if (code != 0)
				ERR_error_string_n(code, why, sizeof(why));
			else
				snprintf(why, sizeof(why), "connection closed");
			ERR_clear_error();
			acme_fail(out, "tls",
			          "the TLS handshake with %.100s port %d (ALPN acme-tls/1) failed: "
			          "%s",
			          job->identifier, c->tls_alpn_port, why);
		}
		goto out;
	}
	SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
	if (alpn_len != strlen(ALPN_PROTOCOL) || memcmp(alpn, ALPN_PROTOCOL, alpn_len) != 0) {
		acme_fail(out, "tls", "%.100s port %d did not negotiate ALPN acme-tls/1",
		          job->identifier, c->tls_alpn_port);
		goto out;
	}
	cert = SSL_get1_peer_certificate(ssl);
	if (cert == NULL) {
		acme_fail(out, "tls", "%.100s port %d sent no certificate", job->identifier,
		          c->tls_alpn_port);
		goto out;
	}
	if (!san_is_identifier(cert, job, &addrs)) {
		acme_fail(out, "incorrectResponse",
		          "the tls-alpn-01 certificate must name exactly %.100s in its "
		          "subjectAltName and nothing else",
		          job->identifier);
		goto out;
	}
	check_acme_identifier(c, cert, digest, job->identifier, out);
out:
	X509_free(cert);
	if (ssl != NULL) {
		SSL_set_quiet_shutdown(ssl, 1);
		SSL_free(ssl);
	}
	if (fd >= 0)
		close(fd);
	ERR_clear_error();
}
