/*
 * token.h - the JWTs agentca mints and checks (libjwt, ES256):
 *
 *   bootstrap tokens  one-time credentials an agent enrolls with at boot (`token create`,
 *                     POST /v1/tokens); signed with DIR/token.key
 *   admin tokens      short-lived credentials of admins and auditors (`admin token`);
 *                     signed with DIR/admin.key
 *
 * Claims of a bootstrap token: iss "agentca", aud = the CA's root fingerprint (hex SHA-256
 * of the root's DER: a token is good at exactly one CA), sub = the SPIFFE ID to enroll,
 * "dns" = the DNS SANs it may ask for (array, may be empty), "parent" = the parent identity
 * when a parent agent minted it, "depth" = nesting depth (0 for admin-made tokens),
 * "cert_exp" = the latest notAfter the certificate may have (a parent's own), nbf,
 * iat, exp (at most 24 h after iat), jti = 128 random bits, hex, "typ" = "bootstrap".
 * An admin token has the same iss/aud/iat/nbf/exp/jti, sub = who ("admin:cli" or the name
 * given), "role" = "admin" or "auditor", "typ" = "admin", and lives at most 24 h.
 *
 * Verification checks, each failure its own reason (AC_ERR_POLICY unless malformed):
 * token_malformed (not a JWT, not ES256, missing or mistyped claim), token_bad_signature,
 * token_wrong_audience, token_wrong_type, token_not_yet_valid, token_expired (with
 * TOKEN_CLOCK_SKEW seconds of leeway both ways), token_lifetime_too_long. Whether a jti was
 * already used is the store's business: the issuance that consumes a token marks its jti in
 * the same transaction (store_write.token_jti), so a replay fails there, also after a restart.
 *
 * Keys: ES256 (P-256). Private keys are encrypted PKCS#8 under the CA passphrase, 0600;
 * public keys (token.pub, admin.pub) are what the daemon verifies with. token_keys_ensure()
 * makes both pairs when missing (init calls it; so do serve and token create for a CA made
 * before tokens existed). Keys are decoded once per signer/verifier, not per token.
 */
#ifndef AGENTCA_ENROLLMENT_TOKEN_H
#define AGENTCA_ENROLLMENT_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#include "common/config.h"
#include "common/error.h"

#define TOKEN_CLOCK_SKEW 60 /* seconds */
#define TOKEN_MAX_LIFETIME (24 * 3600)
#define TOKEN_MAX_BYTES 8192 /* a longer token is refused before parsing */

enum token_type { TOKEN_BOOTSTRAP = 0, TOKEN_ADMIN };

/* What a token grants. Strings are inline copies: no ownership to track. */
struct token_grant {
	enum token_type type;
	char jti[33];
	char subject[2049];
	char parent[2049]; /* "" when none */
	int depth;
	char role[16];              /* admin tokens: "admin" or "auditor" */
	struct cfg_strlist dns;     /* heap: token_grant_free() */
	int64_t cert_not_after_max; /* "cert_exp": the certificate may not outlive this (a
	                             * parent's own not_after); 0 when absent */
	int64_t not_before, expires, issued_at;
};

void token_grant_free(struct token_grant *g);

/* Make DIR/token.key, token.pub, admin.key, admin.pub when missing. */
int token_keys_ensure(const char *dir, const char *passphrase, struct ac_err *err);

struct token_signer;

/* Load the private key of `type` from DIR (decrypting with passphrase) and the audience
 * (root fingerprint, hex). */
struct token_signer *token_signer_load(const char *dir, enum token_type type,
                                       const char *passphrase, const char *audience,
                                       struct ac_err *err);
void token_signer_free(struct token_signer *s);

/* Mint a token from grant (type, subject, dns, parent, depth, role; jti, iat, nbf and exp
 * are filled in here from now and ttl). *jwt is heap (free()). */
int token_mint(struct token_signer *s, struct token_grant *grant, int64_t now, int64_t ttl,
               char **jwt, struct ac_err *err);

struct token_verifier;

struct token_verifier *token_verifier_load(const char *dir, enum token_type type,
                                           const char *audience, struct ac_err *err);
void token_verifier_free(struct token_verifier *v);

/* Check a token as described above; on success fill grant (caller frees with
 * token_grant_free). */
int token_verify(struct token_verifier *v, const char *jwt, size_t len, int64_t now,
                 struct token_grant *grant, struct ac_err *err);

/* Whether a JWT's header part (base64url, len bytes) is byte for byte one of the usual ES256
 * headers (token_plain_es256_headers), which token_verify then accepts without parsing it. */
#define TOKEN_PLAIN_ES256_HEADERS 3
extern const char *const token_plain_es256_headers[TOKEN_PLAIN_ES256_HEADERS];
int token_header_is_plain_es256(const char *part, size_t len);

#endif
