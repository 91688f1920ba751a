/*
 * acme_validate_dns.c - the dns-01 check (RFC 8555 section 8.4): a TXT record at
 * _acme-challenge.NAME, looked up through the configured DNS server, must hold
 * base64url(SHA-256(key authorization)). Any one of the TXT records may match.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base64url.h"
#include "enrollment/acme_validate_internal.h"

void
acme_check_dns01(const struct acme_checker *c, const struct acme_validation *job,
                 int64_t deadline_ms, struct acme_validation_result *out)
{
	struct dns_answer *answer = NULL;
	unsigned char digest[32];
	char want[44], qname[300];
	struct ac_err err;

	ac_err_clear(&err);
	snprintf(qname, sizeof(qname), "_acme-challenge.%s", job->identifier);
	if (acme_key_authorization_digest(c, job->key_authorization, digest) != 0) {
		acme_fail(out, "connection", "the CA could not hash the key authorization");
		goto out;
	}
	base64url_encode(digest, sizeof(digest), want, sizeof(want));
	answer = malloc(sizeof(*answer));
	if (answer == NULL) {
		acme_fail(out, "connection", "the CA is out of memory; try again later");
		goto out;
	}
	if (dns_lookup(&c->resolver, qname, DNS_TYPE_TXT, deadline_ms, answer, &err) != 0) {
		acme_fail(out, "dns", "looking up the TXT record at %.100s: %.120s", qname,
		          err.msg);
		goto out;
	}
	if (answer->rcode != DNS_RCODE_NOERROR && answer->rcode != DNS_RCODE_NXDOMAIN) {
		acme_fail(out, "dns",
		          "the DNS server answered rcode %d for the TXT record at %.100s",
		          answer->rcode, qname);
		goto out;
	}
	if (answer->count == 0) {
		acme_fail(out, "unauthorized", "no TXT record found at %.100s", qname);
		goto out;
	}
	for (size_t i = 0; i < answer->count; i++) {
		if (answer->records[i].len == 43 &&
		    memcmp(answer->records[i].data, want, 43) == 0) {
			out->ok = 1;
			goto out;
		}
	}
	acme_fail(out, "incorrectResponse",
	          "%zu TXT record(s) at %.100s, none is base64url(SHA-256(key authorization))",
	          answer->count, qname);
out:
	free(answer);
}
