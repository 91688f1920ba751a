/*
 * allow.c - parsing and matching the proxy's allow rules. See allow.h.
 *
 * SPIFFE patterns are matched segment by segment with the usual glob backtracking for "**"
 * (remember the last "**" and the position it stood for; on a mismatch let it swallow one
 * more segment). That is O(pattern segments x ID segments) in the worst case, and both are
 * bounded by ALLOW_RULE_MAX bytes.
 */
#include "gateway-hook/allow.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/x509v3.h>

#define SPIFFE_SCHEME "spiffe://"
#define SPIFFE_SCHEME_LEN 9

/* One '/'-separated segment: [p, p + len). */
struct segment {
	const char *p;
	size_t len;
};

/* The segment starting at s (after a '/'), up to the next '/' or the end. */
static struct segment
segment_at(const char *s)
{
	struct segment seg = {s, strcspn(s, "/")};

	return seg;
}

static int
segment_is(struct segment s, const char *lit)
{
	return s.len == strlen(lit) && memcmp(s.p, lit, s.len) == 0;
}

/* Split "spiffe://TD/a/b" into the trust domain and the path after it ("" or "/a/b").
 * Returns -1 when it is not a SPIFFE URI with a trust domain. */
static int
spiffe_split(const char *uri, struct segment *td, const char **path)
{
	if (strncmp(uri, SPIFFE_SCHEME, SPIFFE_SCHEME_LEN) != 0)
		return -1;
	*td = segment_at(uri + SPIFFE_SCHEME_LEN);
	if (td->len == 0)
		return -1;
	*path = td->p + td->len;
	return 0;
}

int
allow_spiffe_match(const char *pattern, const char *id)
{
	struct segment ptd, itd;
	const char *pp, *ip, *star_p = NULL, *star_i = NULL;

	if (pattern == NULL || id == NULL || spiffe_split(pattern, &ptd, &pp) != 0 ||
	    spiffe_split(id, &itd, &ip) != 0)
		return 0;
	if (ptd.len != itd.len || strncasecmp(ptd.p, itd.p, ptd.len) != 0)
		return 0;
	/* pp and ip point at "" or at "/segment...". */
	for (;;) {
		if (*pp == '/' && segment_is(segment_at(pp + 1), "**")) {
			/* "**": first try matching nothing; remember where to backtrack. */
			pp += 3;
			star_p = pp;
			star_i = ip;
			continue;
		}
		if (*pp == '\0' && *ip == '\0')
			return 1;
		if (*pp == '/' && *ip == '/') {
			struct segment ps = segment_at(pp + 1), is = segment_at(ip + 1);

			if (is.len > 0 && (segment_is(ps, "*") ||
			                   (ps.len == is.len && memcmp(ps.p, is.p, ps.len) == 0))) {
				pp = ps.p + ps.len;
				ip = is.p + is.len;
				continue;
			}
		}
		/* Mismatch: let the last "**" take one more segment of the ID. */
		if (star_p == NULL || *star_i != '/')
			return 0;
		{
			struct segment skipped = segment_at(star_i + 1);

			if (skipped.len == 0)
				return 0;
			star_i = skipped.p + skipped.len;
		}
		pp = star_p;
		ip = star_i;
	}
}

int
allow_dns_match(const char *pattern, const char *name)
{
	size_t plen, nlen;
	const char *dot;

	if (pattern == NULL || name == NULL || name[0] == '\0')
		return 0;
	if (strncmp(pattern, "*.", 2) != 0)
		return strcasecmp(pattern, name) == 0;
	/* "*.suffix": exactly one non-empty label in front of ".suffix". */
	dot = strchr(name, '.');
	if (dot == NULL || dot == name)
		return 0;
	plen = strlen(pattern + 1); /* ".suffix" */
	nlen = strlen(dot);
	return plen == nlen && strcasecmp(pattern + 1, dot) == 0;
}

/* A spiffe:// pattern is well formed: a trust domain, no empty segment, and "*" or "**"
 * only as whole segments. */
static int
spiffe_pattern_valid(const char *pattern)
{
	struct segment td;
	const char *p;

	if (spiffe_split(pattern, &td, &p) != 0)
		return 0;
	if (memchr(td.p, '*', td.len) != NULL)
		return 0;
	while (*p == '/') {
		struct segment s = segment_at(p + 1);

		if (s.len == 0)
			return 0;
		if (memchr(s.p, '*', s.len) != NULL && !segment_is(s, "*") && !segment_is(s, "**"))
			return 0;
		p = s.p + s.len;
	}
	return *p == '\0';
}

/* A dns: pattern: a name of letters, digits, '-' and '.', optionally "*." in front. */
static int
dns_pattern_valid(const char *pattern)
{
	const char *p = strncmp(pattern, "*.", 2) == 0 ? pattern + 2 : pattern;

	if (*p == '\0' || *p == '.')
		return 0;
	for (; *p != '\0'; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '-' || *p == '.'))
			return 0;
	return 1;
}

int
allow_rules_parse(const char *const *patterns, size_t count, struct allow_rules *out,
                  struct ac_err *err)
{
	memset(out, 0, sizeof(*out));
	if (count == 0)
		return 0;
	out->rules = calloc(count, sizeof(*out->rules));
	if (out->rules == NULL)
		return ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
	for (size_t i = 0; i < count; i++) {
		const char *text = patterns[i], *body;
		struct allow_rule *r = &out->rules[i];
		int ok;

		if (text == NULL || strlen(text) >= ALLOW_RULE_MAX) {
			ac_err_set(err, AC_ERR_INVALID, "allow_rule_invalid",
			           "allow rule %zu is empty or longer than %d bytes", i + 1,
			           ALLOW_RULE_MAX - 1);
			goto fail;
		}
		if (strncmp(text, "dns:", 4) == 0) {
			r->kind = ALLOW_DNS;
			body = text + 4;
			ok = dns_pattern_valid(body);
		} else if (strncmp(text, "cn:", 3) == 0) {
			r->kind = ALLOW_CN;
			body = text + 3;
			ok = body[0] != '\0';
		} else {
			r->kind = ALLOW_SPIFFE;
			body = text;
			ok = spiffe_pattern_valid(body);
		}
		if (!ok) {
			ac_err_set(
			    err, AC_ERR_INVALID, "allow_rule_invalid",
			    "allow rule \"%s\" is not spiffe://TD/PATH (with * or ** segments), "
			    "dns:NAME or cn:NAME",
			    text);
			goto fail;
		}
		r->pattern = strdup(body);
		if (r->pattern == NULL) {
			ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
			goto fail;
		}
		out->count = i + 1;
	}
	return 0;
fail:
	allow_rules_free(out);
	return -1;
}

void
allow_rules_free(struct allow_rules *rules)
{
	if (rules == NULL)
		return;
	for (size_t i = 0; i < rules->count; i++)
		free(rules->rules[i].pattern);
	free(rules->rules);
	rules->rules = NULL;
	rules->count = 0;
}

/* Does any DNS SAN of cert match pattern? NUL bytes inside a name never match. */
static int
dns_sans_match(X509 *cert, const char *pattern)
{
	GENERAL_NAMES *sans = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	int hit = 0;

	for (int i = 0; !hit && i < sk_GENERAL_NAME_num(sans); i++) {
		const GENERAL_NAME *gn = sk_GENERAL_NAME_value(sans, i);
		char name[256];
		int len;

		if (gn->type != GEN_DNS)
			continue;
		len = ASN1_STRING_length(gn->d.dNSName);
		if (len <= 0 || (size_t)len >= sizeof(name))
			continue;
		memcpy(name, ASN1_STRING_get0_data(gn->d.dNSName), (size_t)len);
		name[len] = '\0';
		if (strlen(name) != (size_t)len)
			continue;
		hit = allow_dns_match(pattern, name);
	}
	GENERAL_NAMES_free(sans);
	return hit;
}

/* Does the subject's common name equal cn exactly? */
static int
cn_matches(X509 *cert, const char *cn)
{
	X509_NAME *subject = X509_get_subject_name(cert);
	int idx = -1;

	while ((idx = X509_NAME_get_index_by_NID(subject, NID_commonName, idx)) >= 0) {
		ASN1_STRING *value = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, idx));
		size_t len = (size_t)ASN1_STRING_length(value);

		if (len == strlen(cn) && memcmp(ASN1_STRING_get0_data(value), cn, len) == 0)
			return 1;
	}
	return 0;
}

int
allow_rules_match(const struct allow_rules *rules, X509 *cert, const char *spiffe_id)
{
	for (size_t i = 0; rules != NULL && i < rules->count; i++) {
		const struct allow_rule *r = &rules->rules[i];
		int hit = 0;

		switch (r->kind) {
		case ALLOW_SPIFFE:
			hit = spiffe_id != NULL && spiffe_id[0] != '\0' &&
			      allow_spiffe_match(r->pattern, spiffe_id);
			break;
		case ALLOW_DNS:
			hit = cert != NULL && dns_sans_match(cert, r->pattern);
			break;
		case ALLOW_CN:
			hit = cert != NULL && cn_matches(cert, r->pattern);
			break;
		}
		if (hit)
			return (int)i;
	}
	return -1;
}
