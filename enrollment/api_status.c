/*
 * api_status.c - the routes anyone may call to see that the daemon is well: GET /healthz
 * and GET /metrics.
 */
#include <inttypes.h>
#include <stdatomic.h>
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
#include "ca/crl.h"
#include "ca/ocsp.h"
#include "enrollment/api_internal.h"

void
handle_healthz(struct api *api, struct MHD_Connection *conn, struct api_request *req,
               struct api_response *resp)
{
	(void)api;
	(void)conn;
	(void)req;
	api_json_response(resp, 200, json_pack("{s:s}", "status", "ok"));
}

void
handle_metrics(struct api *api, struct MHD_Connection *conn, struct api_request *req,
               struct api_response *resp)
{
	const struct ca_authority *ca = issuer_authority(api->issuer);
	struct front_stats fs;
	struct store_stats ss;
	char extra[8192];
	size_t used;
	int64_t now = time_now();

	(void)conn;
	(void)req;
	memset(&fs, 0, sizeof(fs));
	if (api->front != NULL)
		front_stats(api->front, &fs);
	store_stats(api->issuer->store, &ss);
	snprintf(extra, sizeof(extra),
	         "# HELP agentca_log_commit_seconds Durable issuance-log transactions (group "
	         "commit).\n"
	         "# TYPE agentca_log_commit_seconds summary\n"
	         "agentca_log_commit_seconds_sum %.6f\n"
	         "agentca_log_commit_seconds_count %" PRIu64 "\n"
	         "# TYPE agentca_log_commit_seconds_max gauge\n"
	         "agentca_log_commit_seconds_max %.6f\n"
	         "# TYPE agentca_log_commit_units_total counter\n"
	         "agentca_log_commit_units_total %" PRIu64 "\n"
	         "# TYPE agentca_log_commit_failures_total counter\n"
	         "agentca_log_commit_failures_total %" PRIu64 "\n"
	         "# HELP agentca_store_memory_bytes Memory the store holds (page caches).\n"
	         "# TYPE agentca_store_memory_bytes gauge\n"
	         "agentca_store_memory_bytes %" PRIu64 "\n",
	         ss.commit_seconds, ss.transactions, ss.commit_seconds_max, ss.units,
	         ss.transactions_failed, ss.memory_bytes);
	used = strlen(extra);
	snprintf(extra + used, sizeof(extra) - used,
	         "# HELP agentca_ca_certificate_expiry_seconds Seconds until a CA certificate "
	         "expires.\n"
	         "# TYPE agentca_ca_certificate_expiry_seconds gauge\n"
	         "agentca_ca_certificate_expiry_seconds{cert=\"intermediate\"} %" PRId64 "\n"
	         "agentca_ca_certificate_expiry_seconds{cert=\"root\"} %" PRId64 "\n"
	         "# TYPE agentca_tls_connections_accepted_total counter\n"
	         "agentca_tls_connections_accepted_total %" PRIu64 "\n"
	         "# TYPE agentca_tls_handshakes_total counter\n"
	         "agentca_tls_handshakes_total{result=\"ok\"} %" PRIu64 "\n"
	         "agentca_tls_handshakes_total{result=\"failed\"} %" PRIu64 "\n"
	         "agentca_tls_handshakes_total{result=\"plaintext_refused\"} %" PRIu64 "\n"
	         "# TYPE agentca_tls_connections_active gauge\n"
	         "agentca_tls_connections_active %" PRIu64 "\n",
	         ca->intermediate_not_after - now,
	         asn1_time_to_unix(X509_get0_notAfter(ca->root)) - now, fs.accepted,
	         fs.handshakes_ok, fs.handshakes_failed, fs.plaintext_refused, fs.active);
	if (api->ocsp != NULL) {
		struct ocsp_stats os;

		ocsp_responder_stats(api->ocsp, &os);
		used = strlen(extra);
		snprintf(extra + used, sizeof(extra) - used,
		         "# HELP agentca_ocsp_responses_total OCSP answers by status.\n"
		         "# TYPE agentca_ocsp_responses_total counter\n");
		for (int i = 0; i < OCSP_OUTCOMES; i++) {
			used = strlen(extra);
			snprintf(extra + used, sizeof(extra) - used,
			         "agentca_ocsp_responses_total{status=\"%s\"} %" PRIu64 "\n",
			         ocsp_outcome_name((enum ocsp_outcome)i), os.outcomes[i]);
		}
		used = strlen(extra);
		snprintf(extra + used, sizeof(extra) - used,
		         "# HELP agentca_ocsp_signatures_total OCSP responses signed (cache misses "
		         "and nonces).\n"
		         "# TYPE agentca_ocsp_signatures_total counter\n"
		         "agentca_ocsp_signatures_total %" PRIu64 "\n"
		         "# TYPE agentca_ocsp_cache_hits_total counter\n"
		         "agentca_ocsp_cache_hits_total %" PRIu64 "\n",
		         os.signatures, os.cache_hits);
	}
	used = strlen(extra);
	metrics_process(extra + used, sizeof(extra) - used);
	resp->status = 200;
	resp->content_type = "text/plain; version=0.0.4";
	{
		api_metrics_fn source = atomic_load(&api->metrics_source);
		char *more = NULL, *all = NULL;
		size_t more_len = 0;
		int rc;

		if (source == NULL ||
		    source(atomic_load(&api->metrics_source_arg), &more, &more_len) != 0) {
			more = NULL;
			more_len = 0;
		}
		pthread_mutex_lock(&api->daemon_metrics_lock);
		if (asprintf(&all, "%s%s%.*s", extra,
		             api->daemon_metrics != NULL ? api->daemon_metrics : "", (int)more_len,
		             more != NULL ? more : "") < 0)
			all = NULL;
		pthread_mutex_unlock(&api->daemon_metrics_lock);
		rc = metrics_render(api->metrics, all != NULL ? all : extra, &resp->body,
		                    &resp->len);
		free(more);
		free(all);
		if (rc != 0)
			api_problem(resp, 500, "internal_error", "cannot render metrics");
	}
}

int
api_set_daemon_metrics(struct api *api, const char *text, struct ac_err *err)
{
	char *copy = strdup(text);

	if (copy == NULL)
		return ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
	pthread_mutex_lock(&api->daemon_metrics_lock);
	free(api->daemon_metrics);
	api->daemon_metrics = copy;
	pthread_mutex_unlock(&api->daemon_metrics_lock);
	return 0;
}

void
api_set_metrics_source(struct api *api, api_metrics_fn fn, void *arg)
{
	atomic_store(&api->metrics_source_arg, arg);
	atomic_store(&api->metrics_source, fn);
}

/*
 * GET /v1/crl: the intermediate's CRL (DER, application/pkix-crl). Built on demand and kept
 * while the log has not grown and it is less than half way to its nextUpdate, so that a
 * revocation shows within one request and relying parties always get a fresh list.
 */
void
handle_crl(struct api *api, struct MHD_Connection *conn, struct api_request *req,
           struct api_response *resp)
{
	char head_hash[LOG_HASH_HEX_LEN + 1];
	struct ac_err err;
	uint64_t head = 0;
	int64_t now = time_now();

	(void)conn;
	(void)req;
	ac_err_clear(&err);
	if (store_log_head(api->issuer->store, &head, head_hash, &err) != 0) {
		api_problem(resp, ac_errcode_http_status(err.code), err.reason, err.msg);
		return;
	}
	pthread_mutex_lock(&api->crl_lock);
	if (api->crl_der == NULL || api->crl_log_size != head ||
	    now - api->crl_built >= CRL_VALIDITY / 2) {
		unsigned char *der = NULL;
		size_t len = 0;

		if (crl_build(issuer_authority(api->issuer), api->issuer->store, now, &der, &len,
		              &err) != 0) {
			pthread_mutex_unlock(&api->crl_lock);
			api_problem(resp, ac_errcode_http_status(err.code), err.reason, err.msg);
			return;
		}
		OPENSSL_free(api->crl_der);
		api->crl_der = der;
		api->crl_len = len;
		api->crl_log_size = head;
		api->crl_built = now;
	}
	resp->body = malloc(api->crl_len);
	if (resp->body != NULL) {
		memcpy(resp->body, api->crl_der, api->crl_len);
		resp->len = api->crl_len;
	}
	pthread_mutex_unlock(&api->crl_lock);
	if (resp->body == NULL) {
		api_problem(resp, 500, "internal_error", "out of memory");
		return;
	}
	resp->status = 200;
	resp->content_type = "application/pkix-crl";
}
