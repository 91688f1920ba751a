/*
 * api_admin.c - POST /v1/tokens (admins, and parent agents for their children) and
 * POST /v1/revoke (admins): the routes that change who may hold a certificate.
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
#include "ca/ocsp.h"
#include "ca/revoke.h"
#include "enrollment/api_internal.h"

/* Parse an optional "ttl" member ("10m" or seconds); 0 when absent. */
static int
body_ttl(json_t *doc, int64_t *ttl, struct api_response *resp)
{
	json_t *v = json_object_get(doc, "ttl");

	*ttl = 0;
	if (v == NULL)
		return 0;
	if (json_is_integer(v) && json_integer_value(v) > 0) {
		*ttl = (int64_t)json_integer_value(v);
		return 0;
	}
	if (json_is_string(v) && duration_parse(json_string_value(v), ttl) == 0 && *ttl > 0)
		return 0;
	api_problem(resp, 400, "malformed_request", "\"ttl\" must be a duration such as \"10m\"");
	return -1;
}

/*
 * POST /v1/tokens {subject, ttl?, dns?}: mint a bootstrap token.
 *
 * An admin may mint for any subject (the engine applies the policy at enrollment). A parent
 * agent, authenticated by a certificate we issued that is not revoked, may mint only for a
 * child under its own path ("<parent>/..."), one level deeper than itself and at most
 * max_depth deep, with a token and a certificate that never outlive its own certificate.
 * Auditors and anonymous callers may not mint.
 */
void
handle_tokens(struct api *api, struct MHD_Connection *conn, struct api_request *req,
              struct api_response *resp)
{
	struct token_grant grant;
	struct log_entry entry;
	struct store_write w;
	struct cert_row row;
	struct caller caller;
	struct ac_err err;
	const char *subject;
	size_t subject_len = 0;
	char *jwt = NULL, detail[128];
	int64_t ttl, now = time_now();
	json_t *doc = NULL, *dns;
	int have_row = 0;

	memset(&grant, 0, sizeof(grant));
	memset(&row, 0, sizeof(row));
	ac_err_clear(&err);
	if (api_resolve_caller(api, conn, &caller, resp) != 0)
		return;
	if (caller.role != CALLER_ADMIN && caller.role != CALLER_AGENT) {
		api_problem(resp, caller.role == CALLER_NONE ? 401 : 403, "not_allowed",
		            caller.role == CALLER_NONE
		                ? "minting tokens needs an admin token or a client certificate"
		                : "auditors cannot mint tokens");
		return;
	}
	if (api_identity_limited(api, caller.actor, resp))
		return;
	doc = api_parse_body(req, resp);
	if (doc == NULL)
		return;
	subject = api_body_string(doc, "subject", 1, &subject_len, resp);
	if (subject == NULL || body_ttl(doc, &ttl, resp) != 0)
		goto out;
	if (ttl == 0)
		ttl = 600;
	if (subject_len >= sizeof(grant.subject) || memchr(subject, '\0', subject_len) != NULL) {
		api_problem(resp, 400, "malformed_request", "\"subject\" is not a SPIFFE ID");
		goto out;
	}
	memcpy(grant.subject, subject, subject_len + 1);
	grant.type = TOKEN_BOOTSTRAP;
	dns = json_object_get(doc, "dns");
	if (dns != NULL) {
		size_t i;
		json_t *item;

		if (!json_is_array(dns)) {
			api_problem(resp, 400, "malformed_request",
			            "\"dns\" must be a list of names");
			goto out;
		}
		json_array_foreach(dns, i, item)
		{
			if (!json_is_string(item) ||
			    cfg_strlist_add(&grant.dns, json_string_value(item), &err) != 0) {
				api_problem(resp, 400, "malformed_request",
				            "\"dns\" must be a list of names");
				goto out;
			}
		}
	}

	if (caller.role == CALLER_AGENT) {
		size_t plen = strlen(caller.peer.spiffe_id);

		if (store_cert_get(api->issuer->store, caller.peer.serial, &row, &err) != 0) {
			ac_err_clear(&err);
			ac_err_set(&err, AC_ERR_POLICY, "unknown_certificate",
			           "certificate %s was not issued by this CA", caller.peer.serial);
			goto refuse;
		}
		have_row = 1;
		if (row.revoked_at != 0) {
			ac_err_set(&err, AC_ERR_POLICY, "certificate_revoked",
			           "certificate %s is revoked", caller.peer.serial);
			goto refuse;
		}
		if (plen == 0 || strncmp(grant.subject, caller.peer.spiffe_id, plen) != 0 ||
		    grant.subject[plen] != '/' || grant.subject[plen + 1] == '\0') {
			ac_err_set(&err, AC_ERR_POLICY, "outside_parent_path",
			           "%s may mint tokens only for identities under %s/",
			           caller.peer.spiffe_id, caller.peer.spiffe_id);
			goto refuse;
		}
		if (row.depth + 1 > api->max_depth) {
			ac_err_set(&err, AC_ERR_POLICY, "depth_exceeded",
			           "%s is at depth %d: children may go at most %d deep",
			           caller.peer.spiffe_id, row.depth, api->max_depth);
			goto refuse;
		}
		if (ttl > row.not_after - now)
			ttl = row.not_after - now;
		if (ttl <= 0) {
			ac_err_set(&err, AC_ERR_POLICY, "parent_expired",
			           "the parent's certificate has expired");
			goto refuse;
		}
		snprintf(grant.parent, sizeof(grant.parent), "%s", caller.peer.spiffe_id);
		grant.depth = row.depth + 1;
		grant.cert_not_after_max = row.not_after;
	}
	if (token_mint(api->minter, &grant, now, ttl, &jwt, &err) != 0)
		goto refuse;

	/* The token exists only once the log says so. */
	snprintf(detail, sizeof(detail), "bootstrap token %s", grant.jti);
	memset(&entry, 0, sizeof(entry));
	entry.kind = "token_created";
	entry.request_id = req->id;
	entry.actor = caller.actor;
	entry.subject = grant.subject;
	entry.parent = grant.parent[0] != '\0' ? grant.parent : NULL;
	entry.not_before = grant.not_before;
	entry.not_after = grant.expires;
	entry.sans = (const char *const *)grant.dns.items;
	entry.sans_count = grant.dns.count;
	entry.detail = detail;
	memset(&w, 0, sizeof(w));
	w.entry = &entry;
	if (store_submit(api->issuer->store, &w, &err) != 0) {
		api_problem(resp, ac_errcode_http_status(err.code), err.reason, err.msg);
		goto out;
	}
	log_info("token_minted", "%s minted token %s for %s", caller.actor, grant.jti,
	         grant.subject);
	{
		char expires[32];

		time_format_rfc3339(grant.expires, expires, sizeof(expires));
		api_json_response(resp, 201,
		                  json_pack("{s:s, s:s, s:s}", "token", jwt, "jti", grant.jti,
		                            "expires", expires));
	}
	goto out;
refuse : {
	struct issue_request denied;

	memset(&denied, 0, sizeof(denied));
	denied.actor = caller.actor;
	denied.request_id = req->id;
	denied.subject = grant.subject;
	denied.parent = caller.role == CALLER_AGENT ? caller.peer.spiffe_id : NULL;
	issue_record_denial(api->issuer, &denied, &err);
}
	metrics_denied(api->metrics, err.reason);
	api_problem(resp, ac_errcode_http_status(err.code), err.reason, err.msg);
out:
	if (jwt != NULL) {
		OPENSSL_cleanse(jwt, strlen(jwt));
		free(jwt);
	}
	if (have_row)
		store_cert_row_free(&row);
	token_grant_free(&grant);
	json_decref(doc);
}

/*
 * POST /v1/revoke {serial, reason?}: admins only. The certificate row and the "revoked" log
 * entry change in one commit; renewal is refused from then on. The nested agents under the
 * revoked identity are revoked with it (ca/revoke.c).
 */
void
handle_revoke(struct api *api, struct MHD_Connection *conn, struct api_request *req,
              struct api_response *resp)
{
	struct revoke_request rr;
	struct caller caller;
	struct ac_err err;
	const char *serial, *reason;
	size_t len = 0;
	int children = 0;
	json_t *doc;

	ac_err_clear(&err);
	if (api_resolve_caller(api, conn, &caller, resp) != 0)
		return;
	if (caller.role != CALLER_ADMIN) {
		api_problem(resp, caller.role == CALLER_NONE ? 401 : 403, "not_allowed",
		            "only admins may revoke certificates");
		return;
	}
	doc = api_parse_body(req, resp);
	if (doc == NULL)
		return;
	serial = api_body_string(doc, "serial", 1, &len, resp);
	reason = serial != NULL ? api_body_string(doc, "reason", 0, &len, resp) : NULL;
	if (serial == NULL || (json_object_get(doc, "reason") != NULL && reason == NULL))
		goto out;
	memset(&rr, 0, sizeof(rr));
	rr.serial = serial;
	rr.reason = reason;
	rr.actor = caller.actor;
	rr.request_id = req->id;
	if (ca_revoke(api->issuer->store, &rr, &children, &err) != 0) {
		api_problem(resp, ac_errcode_http_status(err.code), err.reason, err.msg);
		goto out;
	}
	/* Take effect now: this serial's cached OCSP answers go, and the watcher (which also
	 * forgets the nested ones) wakes the revocation feed's long-polls. */
	ocsp_responder_forget(api->ocsp, serial);
	api_revocations_poke(api->revocations);
	log_info("revoked", "%s revoked %s (%s) and %d nested certificate%s", caller.actor, serial,
	         reason != NULL ? reason : "unspecified", children, children == 1 ? "" : "s");
	api_json_response(resp, 200,
	                  json_pack("{s:s, s:i}", "serial", serial, "children_revoked", children));
out:
	json_decref(doc);
}
