/*
 * admit.c - the proxy's admission decisions. See admit.h.
 */
#include "gateway-hook/admit.h"

#include <openssl/err.h>
#include <openssl/x509v3.h>

const char *const proxy_reason_names[PR_COUNT] = {
    [PR_PLAINTEXT] = "plaintext",
    [PR_NO_CERT] = "no_client_certificate",
    [PR_UNTRUSTED] = "certificate_untrusted",
    [PR_EXPIRED] = "certificate_expired",
    [PR_REVOKED] = "certificate_revoked",
    [PR_NOT_ALLOWED] = "identity_not_allowed",
    [PR_HANDSHAKE_FAILED] = "handshake_failed",
    [PR_HANDSHAKE_TIMEOUT] = "handshake_timeout",
    [PR_CONN_LIMIT] = "connection_limit",
    [PR_UP_CONNECT] = "upstream_connect_failed",
    [PR_UP_TLS] = "upstream_tls_failed",
    [PR_CLIENT_CLOSED] = "client_closed",
    [PR_UPSTREAM_CLOSED] = "upstream_closed",
    [PR_CLIENT_ERROR] = "client_error",
    [PR_UPSTREAM_ERROR] = "upstream_error",
    [PR_IDLE_TIMEOUT] = "idle_timeout",
    [PR_SESSION_REVOKED] = "certificate_revoked",
    [PR_SESSION_EXPIRED] = "certificate_expired",
    [PR_SESSION_NOT_ALLOWED] = "identity_not_allowed",
    [PR_SHUTDOWN] = "shutdown",
};

enum proxy_reason
proxy_first_byte(unsigned char first)
{
	return first == 0x16 ? PR_ADMITTED : PR_PLAINTEXT;
}

/* The certificate's verdict first (it is the cause when there is one), then the error. */
enum proxy_reason
proxy_handshake_failure(SSL *ssl, unsigned long err)
{
	long verdict = ssl != NULL ? SSL_get_verify_result(ssl) : X509_V_OK;

	if (ERR_GET_LIB(err) == ERR_LIB_SSL &&
	    (ERR_GET_REASON(err) == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE ||
	     ERR_GET_REASON(err) == SSL_R_NO_CERTIFICATES_RETURNED))
		return PR_NO_CERT;
	if (verdict == X509_V_ERR_CERT_HAS_EXPIRED)
		return PR_EXPIRED;
	if (verdict != X509_V_OK)
		return PR_UNTRUSTED;
	return PR_HANDSHAKE_FAILED;
}

enum proxy_reason
proxy_admit(SSL *ssl, const struct allow_rules *rules,
            int (*revoked)(void *arg, const char *serial), void *arg, int64_t now,
            struct tls_peer *peer)
{
	struct ac_err err;

	ac_err_clear(&err);
	if (tls_peer_from_ssl(ssl, peer, &err) != 0 || !peer->present)
		return PR_NO_CERT;
	if (revoked != NULL && revoked(arg, peer->serial))
		return PR_REVOKED;
	if (peer->not_after <= now)
		return PR_EXPIRED;
	if (allow_rules_match(rules, SSL_get0_peer_certificate(ssl), peer->spiffe_id) < 0)
		return PR_NOT_ALLOWED;
	return PR_ADMITTED;
}
