/*
 * allow.h - the proxy's allow rules: which client identities a listener forwards.
 *
 * Deny by default: a verified client is forwarded only when one rule matches it. A rule is
 * one of
 *
 *   spiffe://TD/PATH    the client's SPIFFE ID (its URI SAN). Path segments are compared
 *                       one by one; a segment "*" matches exactly one segment, "**" matches
 *                       any number of segments (zero or more). The trust domain is exact.
 *                       So "spiffe://corp.internal/gw-1/" followed by "*" matches
 *                       .../gw-1/child-3 but not .../gw-1/child-3/x; followed by "**" it
 *                       matches .../gw-1 itself and everything under it.
 *   dns:NAME            a DNS SAN, case-insensitive; "dns:*.svc.corp" matches one label
 *   cn:NAME             the subject's common name, exact
 *
 * Rules are parsed and checked once (at start-up or reload); a malformed rule is refused
 * with a message naming it, never silently ignored. Matching does not allocate.
 */
#ifndef AGENTCA_GATEWAY_HOOK_ALLOW_H
#define AGENTCA_GATEWAY_HOOK_ALLOW_H

#include <stddef.h>

#include <openssl/x509.h>

#include "common/error.h"

#define ALLOW_RULE_MAX 2048 /* bytes in one rule, like a SPIFFE ID */

enum allow_kind { ALLOW_SPIFFE = 0, ALLOW_DNS, ALLOW_CN };

struct allow_rule {
	enum allow_kind kind;
	char *pattern; /* without the "dns:" / "cn:" prefix */
};

struct allow_rules {
	struct allow_rule *rules;
	size_t count;
};

/* Parse patterns[0..count) into out (replacing nothing: out starts empty). */
int allow_rules_parse(const char *const *patterns, size_t count, struct allow_rules *out,
                      struct ac_err *err);
void allow_rules_free(struct allow_rules *rules);

/* Does a SPIFFE ID match a spiffe:// pattern? 1 yes, 0 no (malformed input: no). */
int allow_spiffe_match(const char *pattern, const char *id);

/* Does a DNS name match a dns: pattern (exact or "*.suffix", one label)? 1 yes, 0 no. */
int allow_dns_match(const char *pattern, const char *name);

/* The index of the first rule that matches the certificate (spiffe_id: its SPIFFE ID as
 * read by tls_peer_from_cert, or ""), or -1 when none does. */
int allow_rules_match(const struct allow_rules *rules, X509 *cert, const char *spiffe_id);

#endif
