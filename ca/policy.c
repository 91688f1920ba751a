/*
 * policy.c - the issuance policy: which names, keys and lifetimes the CA will certify.
 *
 * Every check here is a pure function of its input and the loaded policy: no I/O, no
 * allocation on the success path, so ca_issue() can call them for every name of every
 * request. The syntax rules are small tables walked in order: the first rule a name breaks
 * gives the refusal and its message, so the most specific rules (a NUL byte, a query string)
 * come before the general ones (a character outside the allowed set).
 *
 * Names come from outside and may hold anything; messages quote them through policy_escape(),
 * so a NUL or a terminal escape in a name never reaches a log line raw.
 *
 * Limits: IDNs must already be A-labels ("xn--..."); an IPv4-mapped IPv6 address is matched
 * only against IPv6 ranges.
 */
#include "ca/policy.h"

#include <arpa/inet.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#define POLICY_DEFAULT_TTL (24 * 3600)
#define POLICY_DEFAULT_MAX_SANS 16
#define POLICY_MAX_SANS_LIMIT 1000
#define SPIFFE_SCHEME "spiffe://"
#define SPIFFE_TRUST_DOMAIN_MAX 255
#define DNS_LABEL_MAX 63

const struct cfg_field ca_policy_fields[] = {
    {"default_ttl", CFG_DURATION, offsetof(struct ca_policy, default_ttl), POLICY_TTL_FLOOR,
     POLICY_TTL_CEILING, NULL, "lifetime of a leaf when the request names none (24h)"},
    {"min_ttl", CFG_DURATION, offsetof(struct ca_policy, min_ttl), POLICY_TTL_FLOOR,
     POLICY_TTL_CEILING, NULL, "shortest lifetime a request may get (5m; at least 10s)"},
    {"max_ttl", CFG_DURATION, offsetof(struct ca_policy, max_ttl), POLICY_TTL_FLOOR,
     POLICY_TTL_CEILING, NULL, "longest lifetime a request may get (90d)"},
    {"dns_suffixes", CFG_STRING_LIST, offsetof(struct ca_policy, dns_suffixes), 0, 0, NULL,
     "DNS SANs must equal or end in one of these (default: the trust domain)"},
    {"ip_ranges", CFG_STRING_LIST, offsetof(struct ca_policy, ip_ranges), 0, 0, NULL,
     "IP SANs must fall in one of these CIDR ranges (default: none allowed)"},
    {"max_sans", CFG_INT, offsetof(struct ca_policy, max_sans), 1, POLICY_MAX_SANS_LIMIT, NULL,
     "most SANs in one certificate, counting the SPIFFE ID (16)"},
    {"crl_url", CFG_STRING, offsetof(struct ca_policy, crl_url), 0, 0, NULL,
     "CRL distribution point put in leaves (default: none)"},
    {"ocsp_url", CFG_STRING, offsetof(struct ca_policy, ocsp_url), 0, 0, NULL,
     "OCSP responder put in leaves' AIA (default: none)"},
    CFG_END,
};

/*
 * Quote len bytes of s for a message: printable ASCII as is, '"' and '\' escaped, anything
 * else as \xNN. Long names are cut with "..." so a message always fits.
 */
void
policy_escape(const char *s, size_t len, char *out, size_t outlen)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	if (outlen == 0)
		return;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		char esc[5];
		size_t n;

		if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			n = 2;
		} else if (c >= 0x20 && c < 0x7f) {
			esc[0] = (char)c;
			n = 1;
		} else {
			esc[0] = '\\';
			esc[1] = 'x';
			esc[2] = hex[c >> 4];
			esc[3] = hex[c & 0xf];
			n = 4;
		}
		if (o + n + 4 > outlen) { /* room for "..." and the NUL */
			if (o + 4 <= outlen) {
				memcpy(out + o, "...", 3);
				o += 3;
			}
			break;
		}
		memcpy(out + o, esc, n);
		o += n;
	}
	out[o] = '\0';
}

/*
 * Defaults and lifetime.
 */

/* Fill policy with the defaults; the only allowed DNS suffix is the trust domain. */
int
ca_policy_defaults(struct ca_policy *policy, const char *trust_domain, struct ac_err *err)
{
	int rc = -1;

	memset(policy, 0, sizeof(*policy));
	policy->default_ttl = POLICY_DEFAULT_TTL;
	policy->min_ttl = POLICY_DEFAULT_MIN_TTL;
	policy->max_ttl = POLICY_TTL_CEILING;
	policy->max_sans = POLICY_DEFAULT_MAX_SANS;
	if (trust_domain != NULL && cfg_strlist_add(&policy->dns_suffixes, trust_domain, err) != 0)
		goto out;
	rc = 0;
out:
	return rc;
}

/* Free what the config table describes (the suffix and range lists, the URLs). */
void
ca_policy_free(struct ca_policy *policy)
{
	if (policy == NULL)
		return;
	config_free(ca_policy_fields, policy);
}

/* Clamp a requested lifetime (0 or negative: the default) to [min_ttl, max_ttl], and never
 * outside the hard floor and ceiling whatever the configuration says. */
int64_t
policy_clamp_ttl(const struct ca_policy *policy, int64_t requested)
{
	int64_t ttl = requested > 0 ? requested : policy->default_ttl;

	if (ttl < policy->min_ttl)
		ttl = policy->min_ttl;
	if (ttl > policy->max_ttl)
		ttl = policy->max_ttl;
	if (ttl < POLICY_TTL_FLOOR)
		ttl = POLICY_TTL_FLOOR;
	if (ttl > POLICY_TTL_CEILING)
		ttl = POLICY_TTL_CEILING;
	return ttl;
}

/*
 * SPIFFE IDs: spiffe://<trust domain>/<path>.
 *
 * A parsed view of the ID: the trust domain and the path (from its first '/') as spans.
 */
struct spiffe_view {
	const char *id;
	size_t len;
	const char *td;
	size_t td_len;
	const char *path; /* NULL when there is none */
	size_t path_len;
};

static int
has_byte_below(const char *s, size_t len, unsigned char below)
{
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] < below)
			return 1;
	return 0;
}

static int
spiffe_empty(const struct spiffe_view *v)
{
	return v->len == 0;
}

static int
spiffe_has_nul(const struct spiffe_view *v)
{
	return memchr(v->id, '\0', v->len) != NULL;
}

static int
spiffe_has_control(const struct spiffe_view *v)
{
	return has_byte_below(v->id, v->len, 0x20) || memchr(v->id, 0x7f, v->len) != NULL;
}

static int
spiffe_too_long(const struct spiffe_view *v)
{
	return v->len > POLICY_SPIFFE_ID_MAX;
}

static int
spiffe_bad_scheme(const struct spiffe_view *v)
{
	return v->len < strlen(SPIFFE_SCHEME) ||
	       memcmp(v->id, SPIFFE_SCHEME, strlen(SPIFFE_SCHEME)) != 0;
}

static int
spiffe_query_or_fragment(const struct spiffe_view *v)
{
	return memchr(v->id, '?', v->len) != NULL || memchr(v->id, '#', v->len) != NULL;
}

static int
spiffe_userinfo_or_port(const struct spiffe_view *v)
{
	return memchr(v->td, '@', v->td_len) != NULL || memchr(v->td, ':', v->td_len) != NULL;
}

static int
spiffe_bad_trust_domain(const struct spiffe_view *v)
{
	if (v->td_len == 0 || v->td_len > SPIFFE_TRUST_DOMAIN_MAX)
		return 1;
	for (size_t i = 0; i < v->td_len; i++) {
		char c = v->td[i];

		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
		      c == '_'))
			return 1;
	}
	return 0;
}

static int
spiffe_no_path(const struct spiffe_view *v)
{
	return v->path == NULL || v->path_len <= 1;
}

static int
spiffe_trailing_slash(const struct spiffe_view *v)
{
	return v->path[v->path_len - 1] == '/';
}

/* Call fn on each segment of the path (the path starts with '/'); 1 if any returns 1. */
static int
spiffe_any_segment(const struct spiffe_view *v, int (*fn)(const char *seg, size_t len))
{
	const char *p = v->path + 1, *end = v->path + v->path_len;

	while (p <= end) {
		const char *slash = memchr(p, '/', (size_t)(end - p));
		const char *seg_end = slash != NULL ? slash : end;

		if (fn(p, (size_t)(seg_end - p)))
			return 1;
		p = seg_end + 1;
	}
	return 0;
}

static int
segment_empty(const char *seg, size_t len)
{
	(void)seg;
	return len == 0;
}

static int
segment_dots(const char *seg, size_t len)
{
	return (len == 1 && seg[0] == '.') || (len == 2 && seg[0] == '.' && seg[1] == '.');
}

static int
segment_bad_char(const char *seg, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		char c = seg[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '-' || c == '_'))
			return 1;
	}
	return 0;
}

static int
spiffe_empty_segment(const struct spiffe_view *v)
{
	return spiffe_any_segment(v, segment_empty);
}

static int
spiffe_dot_segment(const struct spiffe_view *v)
{
	return spiffe_any_segment(v, segment_dots);
}

static int
spiffe_bad_path_char(const struct spiffe_view *v)
{
	return spiffe_any_segment(v, segment_bad_char);
}

/* The SPIFFE ID syntax, in the order checked. Rules after the scheme may rely on the view's
 * trust domain; rules after spiffe_no_path may rely on a path of at least "/x". */
static const struct {
	int (*broken)(const struct spiffe_view *v);
	const char *why;
} spiffe_rules[] = {
    {spiffe_empty, "is empty"},
    {spiffe_has_nul, "contains a NUL byte"},
    {spiffe_has_control, "contains a control byte"},
    {spiffe_too_long, "is longer than 2048 bytes"},
    {spiffe_bad_scheme, "does not start with \"spiffe://\""},
    {spiffe_query_or_fragment, "has a query or a fragment"},
    {spiffe_userinfo_or_port, "has user info or a port"},
    {spiffe_bad_trust_domain,
     "has a trust domain that is not 1-255 of lowercase letters, digits, '.', '-', '_'"},
    {spiffe_no_path, "has no path (a workload identity needs one)"},
    {spiffe_trailing_slash, "ends with '/'"},
    {spiffe_empty_segment, "has an empty path segment"},
    {spiffe_dot_segment, "has a '.' or '..' path segment"},
    {spiffe_bad_path_char, "has a path character other than letters, digits, '.', '-', '_'"},
};

/* Check a SPIFFE ID's syntax (subject_invalid) and that it lies in our trust domain. */
int
policy_check_spiffe_id(const char *id, size_t len, const char *trust_domain, struct ac_err *err)
{
	struct spiffe_view v = {id, len, NULL, 0, NULL, 0};
	char shown[160];
	int rc = -1;

	if (id == NULL) {
		ac_err_set(err, AC_ERR_INVALID, "subject_invalid", "no SPIFFE ID was given");
		goto out;
	}
	if (len >= strlen(SPIFFE_SCHEME)) {
		v.td = id + strlen(SPIFFE_SCHEME);
		v.path = memchr(v.td, '/', len - strlen(SPIFFE_SCHEME));
		v.td_len = v.path != NULL ? (size_t)(v.path - v.td) : (size_t)(id + len - v.td);
		v.path_len = v.path != NULL ? (size_t)(id + len - v.path) : 0;
	}
	for (size_t i = 0; i < ARRAY_LEN(spiffe_rules); i++) {
		if (spiffe_rules[i].broken(&v)) {
			policy_escape(id, len, shown, sizeof(shown));
			ac_err_set(err, AC_ERR_INVALID, "subject_invalid", "SPIFFE ID \"%s\" %s",
			           shown, spiffe_rules[i].why);
			goto out;
		}
	}
	if (trust_domain == NULL || strlen(trust_domain) != v.td_len ||
	    memcmp(trust_domain, v.td, v.td_len) != 0) {
		policy_escape(id, len, shown, sizeof(shown));
		ac_err_set(err, AC_ERR_POLICY, "subject_invalid",
		           "SPIFFE ID \"%s\" is not in this CA's trust domain \"%s\"", shown,
		           trust_domain != NULL ? trust_domain : "");
		goto out;
	}
	rc = 0;
out:
	return rc;
}

/*
 * DNS names.
 */

static int
dns_empty(const char *name, size_t len)
{
	(void)name;
	return len == 0;
}

static int
dns_has_nul(const char *name, size_t len)
{
	return memchr(name, '\0', len) != NULL;
}

static int
dns_has_control(const char *name, size_t len)
{
	return has_byte_below(name, len, 0x20) || memchr(name, 0x7f, len) != NULL;
}

static int
dns_too_long(const char *name, size_t len)
{
	(void)name;
	return len > POLICY_DNS_NAME_MAX;
}

static int
dns_wildcard(const char *name, size_t len)
{
	return memchr(name, '*', len) != NULL;
}

/* Each label 1..63 bytes of letters, digits and hyphens, not starting or ending with '-'.
 * A trailing dot makes an empty last label and is refused too. */
static int
dns_bad_label(const char *name, size_t len)
{
	size_t start = 0;

	for (size_t i = 0; i <= len; i++) {
		size_t n;

		if (i < len && name[i] != '.') {
			char c = name[i];

			if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			      (c >= '0' && c <= '9') || c == '-'))
				return 1;
			continue;
		}
		n = i - start;
		if (n == 0 || n > DNS_LABEL_MAX || name[start] == '-' || name[i - 1] == '-')
			return 1;
		start = i + 1;
	}
	return 0;
}

/* The DNS name syntax, in the order checked; every failure is name_invalid. */
static const struct {
	int (*broken)(const char *name, size_t len);
	const char *why;
} dns_rules[] = {
    {dns_empty, "is empty"},
    {dns_has_nul, "contains a NUL byte"},
    {dns_has_control, "contains a control byte"},
    {dns_too_long, "is longer than 253 bytes"},
    {dns_wildcard, "is a wildcard, which this CA never issues"},
    {dns_bad_label,
     "has a label that is empty, longer than 63 bytes, or not letters, digits and inner '-'"},
};

/* 1 when name is suffix or ends with "." + suffix, ignoring case. */
static int
dns_under_suffix(const char *name, size_t len, const char *suffix)
{
	size_t slen = strlen(suffix);

	if (slen == 0 || slen > len)
		return 0;
	if (strncasecmp(name + len - slen, suffix, slen) != 0)
		return 0;
	return slen == len || name[len - slen - 1] == '.';
}

/* Check a DNS SAN: syntax (name_invalid), then under an allowed suffix (name_outside_policy). */
int
policy_check_dns(const struct ca_policy *policy, const char *name, size_t len, struct ac_err *err)
{
	char shown[160];
	int rc = -1;

	for (size_t i = 0; i < ARRAY_LEN(dns_rules); i++) {
		if (dns_rules[i].broken(name, len)) {
			policy_escape(name, len, shown, sizeof(shown));
			ac_err_set(err, AC_ERR_INVALID, "name_invalid", "DNS name \"%s\" %s", shown,
			           dns_rules[i].why);
			goto out;
		}
	}
	for (size_t i = 0; i < policy->dns_suffixes.count; i++) {
		if (dns_under_suffix(name, len, policy->dns_suffixes.items[i])) {
			rc = 0;
			goto out;
		}
	}
	policy_escape(name, len, shown, sizeof(shown));
	ac_err_set(err, AC_ERR_POLICY, "name_outside_policy",
	           "DNS name \"%s\" is not under an allowed suffix%s%s", shown,
	           policy->dns_suffixes.count > 0 ? " such as " : " (none is configured)",
	           policy->dns_suffixes.count > 0 ? policy->dns_suffixes.items[0] : "");
out:
	return rc;
}

/*
 * IP addresses.
 */

struct ip_range {
	size_t len; /* 4 or 16 */
	unsigned char addr[16];
	unsigned prefix; /* bits */
};

/* Parse "10.0.0.0/8", "fd00::/8", or a single address (a /32 or /128). */
static int
ip_range_parse(const char *text, struct ip_range *out)
{
	char buf[INET6_ADDRSTRLEN + 8];
	const char *slash;
	size_t alen;
	unsigned long prefix;
	char *end;

	slash = strchr(text, '/');
	alen = slash != NULL ? (size_t)(slash - text) : strlen(text);
	if (alen == 0 || alen >= sizeof(buf))
		return -1;
	memcpy(buf, text, alen);
	buf[alen] = '\0';
	if (inet_pton(AF_INET, buf, out->addr) == 1)
		out->len = 4;
	else if (inet_pton(AF_INET6, buf, out->addr) == 1)
		out->len = 16;
	else
		return -1;
	out->prefix = (unsigned)out->len * 8;
	if (slash != NULL) {
		if (slash[1] < '0' || slash[1] > '9' || strlen(slash + 1) > 3)
			return -1;
		prefix = strtoul(slash + 1, &end, 10);
		if (*end != '\0' || prefix > out->len * 8)
			return -1;
		out->prefix = (unsigned)prefix;
	}
	return 0;
}

/* 1 when addr (len bytes) lies inside range. */
static int
ip_range_contains(const struct ip_range *range, const unsigned char *addr, size_t len)
{
	size_t full = range->prefix / 8;
	unsigned rest = range->prefix % 8;

	if (len != range->len)
		return 0;
	if (memcmp(addr, range->addr, full) != 0)
		return 0;
	if (rest != 0) {
		unsigned char mask = (unsigned char)(0xff << (8 - rest));

		if ((addr[full] & mask) != (range->addr[full] & mask))
			return 0;
	}
	return 1;
}

/* Check an IP SAN: 4 or 16 bytes (name_invalid), inside an allowed range
 * (name_outside_policy). Ranges were validated at load; one that no longer parses is
 * skipped. */
int
policy_check_ip(const struct ca_policy *policy, const unsigned char *addr, size_t len,
                struct ac_err *err)
{
	char shown[INET6_ADDRSTRLEN];
	struct ip_range range;
	int rc = -1;

	if (len != 4 && len != 16) {
		ac_err_set(err, AC_ERR_INVALID, "name_invalid",
		           "IP address SAN is %zu bytes long; it must be 4 or 16", len);
		goto out;
	}
	for (size_t i = 0; i < policy->ip_ranges.count; i++) {
		if (ip_range_parse(policy->ip_ranges.items[i], &range) == 0 &&
		    ip_range_contains(&range, addr, len)) {
			rc = 0;
			goto out;
		}
	}
	if (inet_ntop(len == 4 ? AF_INET : AF_INET6, addr, shown, sizeof(shown)) == NULL)
		snprintf(shown, sizeof(shown), "?");
	ac_err_set(err, AC_ERR_POLICY, "name_outside_policy",
	           "IP address %s is not in an allowed range%s", shown,
	           policy->ip_ranges.count > 0 ? "" : " (no IP ranges are configured)");
out:
	return rc;
}

/*
 * Keys.
 */

/* The subject keys we accept. An EC rule names its curve by OpenSSL's name and its NIST
 * name; an RSA rule bounds the modulus. Anything matching no rule is key_type_not_allowed.
 * A key is matched by its EVP_PKEY_get_id (a field read) and only by name for a key whose
 * type has no id (a provider-only algorithm): EVP_PKEY_is_a takes OpenSSL's name-table lock
 * on every call, and it was called for each rule on every issuance. */
static const struct {
	int id;            /* EVP_PKEY_get_id */
	const char *type;  /* EVP_PKEY_is_a name, for keys without an id */
	const char *group; /* EC only */
	const char *nist;  /* EC only */
	int min_bits, max_bits;
} key_rules[] = {
    {EVP_PKEY_EC, "EC", "prime256v1", "P-256", 0, 0},
    {EVP_PKEY_EC, "EC", "secp384r1", "P-384", 0, 0},
    {EVP_PKEY_ED25519, "ED25519", NULL, NULL, 0, 0},
    {EVP_PKEY_RSA, "RSA", NULL, NULL, 2048, 8192},
};

/* Whether key (of id, from EVP_PKEY_get_id) is of the type of key_rules[rule]. */
static int
key_rule_type_matches(EVP_PKEY *key, int id, size_t rule)
{
	if (id > 0)
		return id == key_rules[rule].id;
	return EVP_PKEY_is_a(key, key_rules[rule].type);
}

#define KEY_ALLOWED_TEXT "EC P-256 or P-384, Ed25519, or RSA 2048 to 8192 bits"

/* Check the subject's key against key_rules. */
int
policy_check_key(EVP_PKEY *key, struct ac_err *err)
{
	char group[64] = "";
	const char *type;
	size_t glen = 0;
	int id, bits, rc = -1;

	if (key == NULL) {
		ac_err_set(err, AC_ERR_INVALID, "key_type_not_allowed", "no public key was given");
		goto out;
	}
	id = EVP_PKEY_get_id(key);
	type = EVP_PKEY_get0_type_name(key);
	if (type == NULL)
		type = "unknown";
	if ((id > 0 ? id == EVP_PKEY_EC : EVP_PKEY_is_a(key, "EC")) &&
	    EVP_PKEY_get_group_name(key, group, sizeof(group), &glen) != 1)
		snprintf(group, sizeof(group), "explicit parameters");
	bits = EVP_PKEY_get_bits(key);
	for (size_t i = 0; i < ARRAY_LEN(key_rules); i++) {
		if (!key_rule_type_matches(key, id, i))
			continue;
		if (key_rules[i].group != NULL && strcmp(group, key_rules[i].group) != 0 &&
		    strcmp(group, key_rules[i].nist) != 0)
			continue;
		if (key_rules[i].min_bits != 0 && bits < key_rules[i].min_bits) {
			ac_err_set(err, AC_ERR_POLICY, "key_too_weak",
			           "%s key of %d bits is too weak; at least %d bits are required",
			           type, bits, key_rules[i].min_bits);
			goto out;
		}
		if (key_rules[i].max_bits != 0 && bits > key_rules[i].max_bits) {
			ac_err_set(err, AC_ERR_POLICY, "key_type_not_allowed",
			           "%s key of %d bits is larger than the %d bits allowed", type,
			           bits, key_rules[i].max_bits);
			goto out;
		}
		rc = 0;
		goto out;
	}
	if (group[0] != '\0')
		ac_err_set(err, AC_ERR_POLICY, "key_type_not_allowed",
		           "%s key on curve %s is not allowed; use " KEY_ALLOWED_TEXT, type, group);
	else
		ac_err_set(err, AC_ERR_POLICY, "key_type_not_allowed",
		           "%s key is not allowed; use " KEY_ALLOWED_TEXT, type);
out:
	return rc;
}

/*
 * Validation after loading.
 */

/* Refuse a configuration that cannot be applied: lifetimes out of order, a suffix that is
 * not a DNS name, a range that is not CIDR, a SAN bound out of range. */
int
ca_policy_validate(const struct ca_policy *policy, struct ac_err *err)
{
	struct ip_range range;
	char shown[160];
	int rc = -1;

	if (policy->min_ttl < POLICY_TTL_FLOOR || policy->max_ttl > POLICY_TTL_CEILING) {
		ac_err_set(err, AC_ERR_INVALID, "config_invalid",
		           "policy: lifetimes must lie between 10s and 90d");
		goto out;
	}
	if (policy->min_ttl > policy->default_ttl || policy->default_ttl > policy->max_ttl) {
		ac_err_set(err, AC_ERR_INVALID, "config_invalid",
		           "policy: min_ttl <= default_ttl <= max_ttl must hold");
		goto out;
	}
	if (policy->max_sans < 1 || policy->max_sans > POLICY_MAX_SANS_LIMIT) {
		ac_err_set(err, AC_ERR_INVALID, "config_invalid",
		           "policy: max_sans must be between 1 and %d", POLICY_MAX_SANS_LIMIT);
		goto out;
	}
	for (size_t i = 0; i < policy->dns_suffixes.count; i++) {
		const char *s = policy->dns_suffixes.items[i];

		for (size_t r = 0; r < ARRAY_LEN(dns_rules); r++) {
			if (dns_rules[r].broken(s, strlen(s))) {
				policy_escape(s, strlen(s), shown, sizeof(shown));
				ac_err_set(err, AC_ERR_INVALID, "config_invalid",
				           "policy.dns_suffixes: \"%s\" %s", shown,
				           dns_rules[r].why);
				goto out;
			}
		}
	}
	for (size_t i = 0; i < policy->ip_ranges.count; i++) {
		const char *s = policy->ip_ranges.items[i];

		if (ip_range_parse(s, &range) != 0) {
			policy_escape(s, strlen(s), shown, sizeof(shown));
			ac_err_set(err, AC_ERR_INVALID, "config_invalid",
			           "policy.ip_ranges: \"%s\" is not an address or CIDR range",
			           shown);
			goto out;
		}
	}
	rc = 0;
out:
	return rc;
}
