/*
 * api_enroll.c - POST /v1/enroll (a bootstrap token and a CSR) and POST /v1/renew (mTLS with
 * the current certificate and a CSR): the two ways an agent gets a certificate.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "ca/policy.h"
#include "ca/x509_build.h"
#include "common/config.h"
#include "common/log.h"
#include "common/timefmt.h"
#include "enrollment/api_internal.h"

/* How json_escape_ascii writes each ASCII byte: 0 as itself, 'u' as \u00XX, any other as a
 * backslash and that character (jansson's choices: only '"', '\\' and controls escaped). */
static const char json_escape_class[128] = {
    ['\0'] = 'u', [0x01] = 'u', [0x02] = 'u', [0x03] = 'u',  [0x04] = 'u', [0x05] = 'u',
    [0x06] = 'u', [0x07] = 'u', ['\b'] = 'b', ['\t'] = 't',  ['\n'] = 'n', [0x0b] = 'u',
    ['\f'] = 'f', ['\r'] = 'r', [0x0e] = 'u', [0x0f] = 'u',  [0x10] = 'u', [0x11] = 'u',
    [0x12] = 'u', [0x13] = 'u', [0x14] = 'u', [0x15] = 'u',  [0x16] = 'u', [0x17] = 'u',
    [0x18] = 'u', [0x19] = 'u', [0x1a] = 'u', [0x1b] = 'u',  [0x1c] = 'u', [0x1d] = 'u',
    [0x1e] = 'u', [0x1f] = 'u', ['"'] = '"',  ['\\'] = '\\',
};

/*
 * The JSON string escape of src (len bytes) into out, which has room for 6 * len bytes;
 * returns the escaped length without the quotes, or (size_t)-1 for a byte above 0x7f (the
 * caller then leaves the encoding to jansson, which checks UTF-8). PEM is ASCII, so in
 * practice only the newlines are escaped.
 */
static size_t
json_escape_ascii(const char *src, size_t len, char *out)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = 0;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)src[i];
		char cls;

		if (c > 0x7f)
			return (size_t)-1;
		cls = json_escape_class[c];
		if (cls == 0) {
			out[n++] = (char)c;
		} else if (cls == 'u') {
			memcpy(out + n, "\\u00", 4);
			out[n + 4] = hex[c >> 4];
			out[n + 5] = hex[c & 15];
			n += 6;
		} else {
			out[n] = '\\';
			out[n + 1] = cls;
			n += 2;
		}
	}
	return n;
}

/* The issued certificate as jansson encodes it: the slow path for non-ASCII input. */
static json_t *
issue_result_json(const struct issue_result *res, const char *nb, const char *na, const char *ra)
{
	return json_pack("{s:s%, s:s%, s:s, s:s, s:s, s:s}", "certificate", res->cert_pem,
	                 res->cert_pem_len, "chain", (const char *)res->chain_pem,
	                 res->chain_pem_len, "serial", res->serial, "not_before", nb, "not_after",
	                 na, "renew_after", ra);
}

/*
 * resp = the issued certificate as the API returns it, a compact JSON object
 * {certificate, chain, serial, not_before, not_after, renew_after}, the same bytes as
 * jansson's JSON_COMPACT encoding. Written by hand (one measured pass, one allocation): the
 * values are ours (PEM, hex, RFC 3339), and jansson's per-character encoder was about 6% of
 * the daemon's instructions per enrollment.
 */
void
api_issue_result_response(struct api_response *resp, int status, const struct issue_result *res)
{
	char nb[32], na[32], ra[32];
	const char *keys[6] = {"certificate", "chain",     "serial",
	                       "not_before",  "not_after", "renew_after"};
	const char *vals[6];
	size_t lens[6], room = 2; /* the braces */
	char *body, *p, *smaller;

	time_format_rfc3339(res->not_before, nb, sizeof(nb));
	time_format_rfc3339(res->not_after, na, sizeof(na));
	time_format_rfc3339(res->renew_after, ra, sizeof(ra));
	vals[0] = res->cert_pem != NULL ? res->cert_pem : "";
	lens[0] = res->cert_pem != NULL ? res->cert_pem_len : 0;
	vals[1] = res->chain_pem != NULL ? (const char *)res->chain_pem : "";
	lens[1] = res->chain_pem != NULL ? res->chain_pem_len : 0;
	vals[2] = res->serial;
	vals[3] = nb;
	vals[4] = na;
	vals[5] = ra;
	for (int i = 2; i < 6; i++)
		lens[i] = strlen(vals[i]);
	/* Room for the worst case (every byte a \u00XX), given back after one pass. */
	for (int i = 0; i < 6; i++)
		room += strlen(keys[i]) + 6 * lens[i] + 6; /* ,"key":"value" */
	body = malloc(room + 1);
	if (body == NULL) {
		api_problem(resp, 500, "internal_error", "out of memory encoding the response");
		return;
	}
	p = body;
	*p++ = '{';
	for (int i = 0; i < 6; i++) {
		size_t klen = strlen(keys[i]), n;

		if (i > 0)
			*p++ = ',';
		*p++ = '"';
		memcpy(p, keys[i], klen);
		p += klen;
		*p++ = '"';
		*p++ = ':';
		*p++ = '"';
		n = json_escape_ascii(vals[i], lens[i], p);
		if (n == (size_t)-1) {
			free(body);
			api_json_response(resp, status, issue_result_json(res, nb, na, ra));
			return;
		}
		p += n;
		*p++ = '"';
	}
	*p++ = '}';
	*p = '\0';
	resp->len = (size_t)(p - body);
	smaller = realloc(body, resp->len + 1);
	if (smaller != NULL)
		body = smaller;
	resp->status = status;
	resp->content_type = "application/json";
	resp->body = body;
}

/* JSON whitespace. */
static int
json_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/*
 * One member of the fast path's object at body[*pos]: "token" or "csr", a colon and a string
 * of printable ASCII; the csr may hold the escapes \n, \r, \t and \/, the token none.
 * Sets *key (0 token, 1 csr), *value and *value_len (the raw bytes between the quotes) and
 * advances *pos past the closing quote. 0 when the member is not of that shape.
 */
static int
enroll_body_member(const char *body, size_t len, size_t *pos, int *key, const char **value,
                   size_t *value_len)
{
	size_t i = *pos;

	if (len - i >= 7 && memcmp(body + i, "\"token\"", 7) == 0) {
		*key = 0;
		i += 7;
	} else if (len - i >= 5 && memcmp(body + i, "\"csr\"", 5) == 0) {
		*key = 1;
		i += 5;
	} else {
		return 0;
	}
	while (i < len && json_ws(body[i]))
		i++;
	if (i >= len || body[i] != ':')
		return 0;
	i++;
	while (i < len && json_ws(body[i]))
		i++;
	if (i >= len || body[i] != '"')
		return 0;
	*value = body + ++i;
	for (; i < len && body[i] != '"'; i++) {
		unsigned char c = (unsigned char)body[i];

		if (c < 0x20 || c > 0x7e)
			return 0;
		if (c == '\\') {
			if (*key == 0 || i + 1 >= len ||
			    (body[i + 1] != 'n' && body[i + 1] != 'r' && body[i + 1] != 't' &&
			     body[i + 1] != '/'))
				return 0;
			i++;
		}
	}
	if (i >= len)
		return 0;
	*value_len = (size_t)(body + i - *value);
	*pos = i + 1;
	return 1;
}

/* The raw string bytes src (src_len, checked by enroll_body_member) decoded into out; the
 * decoded length. */
static size_t
enroll_body_unescape(const char *src, size_t src_len, char *out)
{
	size_t n = 0;

	for (size_t i = 0; i < src_len; i++) {
		if (src[i] != '\\') {
			out[n++] = src[i];
			continue;
		}
		i++;
		out[n++] = src[i] == 'n' ? '\n' : src[i] == 'r' ? '\r' : src[i] == 't' ? '\t' : '/';
	}
	return n;
}

int
enroll_body_fast(const char *body, size_t len, struct enroll_body *out)
{
	const char *value[2] = {NULL, NULL};
	size_t value_len[2] = {0, 0}, i = 0;
	int key;

	memset(out, 0, sizeof(*out));
	if (body == NULL)
		return 0;
	while (i < len && json_ws(body[i]))
		i++;
	if (i >= len || body[i] != '{')
		return 0;
	i++;
	for (int member = 0; member < 2; member++) {
		const char *v;
		size_t vlen;

		while (i < len && json_ws(body[i]))
			i++;
		if (!enroll_body_member(body, len, &i, &key, &v, &vlen) || value[key] != NULL)
			return 0;
		value[key] = v;
		value_len[key] = vlen;
		while (i < len && json_ws(body[i]))
			i++;
		if (i >= len || body[i] != (member == 0 ? ',' : '}'))
			return 0;
		i++;
	}
	while (i < len && json_ws(body[i]))
		i++;
	if (i != len)
		return 0;
	/* One block: the token, a NUL, the decoded csr, a NUL (as jansson's strings are). */
	out->block = malloc(value_len[0] + value_len[1] + 2);
	if (out->block == NULL)
		return 0;
	memcpy(out->block, value[0], value_len[0]);
	out->block[value_len[0]] = '\0';
	out->token = out->block;
	out->token_len = value_len[0];
	out->csr = out->block + value_len[0] + 1;
	out->csr_len = enroll_body_unescape(value[1], value_len[1], out->csr);
	out->csr[out->csr_len] = '\0';
	return 1;
}

/* Status for a refused issuance: bad tokens are 401, a used token 409, policy 403. */
static int
refusal_status(const struct ac_err *err)
{
	if (err->reason != NULL && strncmp(err->reason, "token_", 6) == 0 &&
	    strcmp(err->reason, "token_used") != 0)
		return 401;
	return ac_errcode_http_status(err->code);
}

/*
 * POST /v1/enroll {token, csr}: the token is checked (signature, audience, time, type),
 * then the engine issues for the token's subject with the token's DNS names as the most the
 * CSR may ask for, marking the token's jti used in the same durable commit.
 */
void
handle_enroll(struct api *api, struct MHD_Connection *conn, struct api_request *req,
              struct api_response *resp)
{
	struct token_grant grant;
	struct issue_request ir;
	struct issue_result res;
	struct enroll_body fast;
	struct ac_err err;
	const char *token, *csr;
	size_t token_len = 0, csr_len = 0;
	char actor[64];
	json_t *doc = NULL;

	(void)conn;
	memset(&grant, 0, sizeof(grant));
	memset(&res, 0, sizeof(res));
	ac_err_clear(&err);
	/* The usual body without jansson; anything else (and every error) through jansson. */
	if (enroll_body_fast(req->body, req->len, &fast)) {
		token = fast.token;
		token_len = fast.token_len;
		csr = fast.csr;
		csr_len = fast.csr_len;
	} else {
		doc = api_parse_body(req, resp);
		if (doc == NULL)
			return;
		token = api_body_string(doc, "token", 1, &token_len, resp);
		csr = token != NULL ? api_body_string(doc, "csr", 1, &csr_len, resp) : NULL;
		if (token == NULL || csr == NULL)
			goto out;
	}

	if (token_verify(api->bootstrap, token, token_len, time_now(), &grant, &err) != 0) {
		struct issue_request denied;

		memset(&denied, 0, sizeof(denied));
		denied.actor = "token:unverified";
		denied.request_id = req->id;
		issue_record_denial(api->issuer, &denied, &err);
		metrics_denied(api->metrics, err.reason);
		api_problem(resp, refusal_status(&err), err.reason, err.msg);
		goto out;
	}
	if (api_identity_limited(api, grant.subject, resp))
		goto out;
	snprintf(actor, sizeof(actor), "token:%s", grant.jti);
	memset(&ir, 0, sizeof(ir));
	ir.csr = (const unsigned char *)csr;
	ir.csr_len = csr_len;
	ir.subject = grant.subject;
	ir.allowed_dns = &grant.dns;
	ir.kind = "issued";
	ir.actor = actor;
	ir.request_id = req->id;
	ir.parent = grant.parent[0] != '\0' ? grant.parent : NULL;
	ir.token_jti = grant.jti;
	ir.token_expires = grant.expires;
	ir.depth = grant.depth;
	ir.not_after_max = grant.cert_not_after_max;
	if (ca_issue(api->issuer, &ir, &res, &err) != 0) {
		/* Policy refusals are already in the log; a replayed token is recorded here. */
		if (err.code == AC_ERR_CONFLICT)
			issue_record_denial(api->issuer, &ir, &err);
		metrics_denied(api->metrics, err.reason);
		api_problem(resp, refusal_status(&err), err.reason, err.msg);
		goto out;
	}
	metrics_issued(api->metrics, "issued");
	log_info("enrolled", "%s enrolled with token %s: serial %s", grant.subject, grant.jti,
	         res.serial);
	api_issue_result_response(resp, 201, &res);
out:
	issue_result_free(&res);
	token_grant_free(&grant);
	free(fast.block);
	json_decref(doc);
}

/* The DNS SANs of a DER certificate, into list. */
static int
cert_dns_names(const struct cert_row *row, struct cfg_strlist *list, struct ac_err *err)
{
	const unsigned char *p = row->der;
	GENERAL_NAMES *names = NULL;
	X509 *cert;
	int rc = -1;

	cert = d2i_X509(NULL, &p, (long)row->der_len);
	if (cert == NULL)
		return ac_err_ssl(err, AC_ERR_STORE, "store_corrupt",
		                  "stored certificate %s does not decode", row->serial);
	names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	for (int i = 0; names != NULL && i < sk_GENERAL_NAME_num(names); i++) {
		const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);

		if (gn->type == GEN_DNS &&
		    cfg_strlist_add(list, (const char *)ASN1_STRING_get0_data(gn->d.dNSName),
		                    err) != 0)
			goto out;
	}
	rc = 0;
out:
	GENERAL_NAMES_free(names);
	X509_free(cert);
	return rc;
}

/*
 * POST /v1/renew [{csr}] over mTLS: the client certificate must have verified against our
 * chain, be one we issued, and not be revoked. The new certificate is for the same identity,
 * with at most the same DNS names, and keeps the parent.
 */
void
handle_renew(struct api *api, struct MHD_Connection *conn, struct api_request *req,
             struct api_response *resp)
{
	struct cfg_strlist dns = {NULL, 0};
	struct issue_request ir;
	struct issue_result res;
	struct cert_row row;
	struct tls_peer peer;
	struct ac_err err;
	const char *csr;
	size_t csr_len = 0;
	char actor[64], detail[256];
	json_t *doc = NULL;
	int64_t now;
	int have_row = 0;

	memset(&res, 0, sizeof(res));
	memset(&row, 0, sizeof(row));
	memset(&ir, 0, sizeof(ir));
	ac_err_clear(&err);
	if (api->front == NULL || front_peer_of(api->front, conn, &peer) != 0 ||
	    (!peer.present && !peer.expired_in_grace)) {
		api_problem(resp, 401, "client_certificate_required",
		            "renewal needs the current certificate as the TLS client certificate");
		return;
	}
	/* An expired certificate (let through the handshake by the grace, or expired during a
	 * kept-alive connection) renews only within renew_grace of its notAfter, checked now. */
	now = time_now();
	if (peer.not_after < now) {
		char expired_at[32];

		time_format_rfc3339(peer.not_after, expired_at, sizeof(expired_at));
		if (api->renew_grace <= 0 || now - peer.not_after > api->renew_grace) {
			metrics_denied(api->metrics, "certificate_expired");
			snprintf(
			    detail, sizeof(detail),
			    "certificate %s expired at %s, beyond the renewal grace of %lld s: "
			    "enroll again with a bootstrap token",
			    peer.serial, expired_at, (long long)api->renew_grace);
			api_problem(resp, 401, "certificate_expired", detail);
			return;
		}
		log_info("renew_in_grace",
		         "certificate %s of %s expired at %s; renewing within the "
		         "grace (request %s)",
		         peer.serial, peer.spiffe_id, expired_at, req->id);
	}
	if (api_identity_limited(api, peer.spiffe_id, resp))
		return;
	snprintf(actor, sizeof(actor), "cert:%s", peer.serial);
	ir.actor = actor;
	ir.request_id = req->id;
	ir.subject = peer.spiffe_id;
	ir.kind = "renewed";
	if (store_cert_get(api->issuer->store, peer.serial, &row, &err) != 0) {
		if (err.code == AC_ERR_NOTFOUND) {
			ac_err_clear(&err);
			ac_err_set(&err, AC_ERR_POLICY, "unknown_certificate",
			           "certificate %s was not issued by this CA", peer.serial);
		}
		goto refuse;
	}
	have_row = 1;
	if (row.revoked_at != 0) {
		ac_err_set(&err, AC_ERR_POLICY, "certificate_revoked",
		           "certificate %s is revoked and cannot renew", peer.serial);
		goto refuse;
	}
	/* The body is optional: without a CSR the certificate is renewed for the same key. */
	csr = NULL;
	if (req->len > 0) {
		doc = api_parse_body(req, resp);
		if (doc == NULL)
			goto out;
		if (json_object_get(doc, "csr") != NULL &&
		    (csr = api_body_string(doc, "csr", 1, &csr_len, resp)) == NULL)
			goto out;
	}
	if (cert_dns_names(&row, &dns, &err) != 0)
		goto refuse;
	ir.csr = (const unsigned char *)csr;
	ir.csr_len = csr_len;
	ir.renew_cert_der = row.der;
	ir.renew_cert_der_len = row.der_len;
	ir.allowed_dns = &dns;
	ir.parent = row.parent;
	ir.depth = row.depth;
	if (ca_issue(api->issuer, &ir, &res, &err) != 0) {
		metrics_denied(api->metrics, err.reason);
		api_problem(resp, refusal_status(&err), err.reason, err.msg);
		goto out;
	}
	metrics_issued(api->metrics, "renewed");
	log_info("renewed", "%s renewed: serial %s replaces %s", peer.spiffe_id, res.serial,
	         peer.serial);
	api_issue_result_response(resp, 200, &res);
	goto out;
refuse:
	issue_record_denial(api->issuer, &ir, &err);
	metrics_denied(api->metrics, err.reason);
	api_problem(resp, refusal_status(&err), err.reason, err.msg);
out:
	cfg_strlist_free(&dns);
	if (have_row)
		store_cert_row_free(&row);
	issue_result_free(&res);
	json_decref(doc);
}
