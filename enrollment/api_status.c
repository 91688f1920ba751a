/*
 * api_status.c - the routes anyone may call to see that the daemon is well: GET /healthz
 * and GET /metrics.
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
	const struct ca_authority *ca = api->issuer->authority;
	struct front_stats fs;
	struct store_stats ss;
	char extra[4096];
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
	         "agentca_log_commit_failures_total %" PRIu64 "\n",
	         ss.commit_seconds, ss.transactions, ss.commit_seconds_max, ss.units,
	         ss.transactions_failed);
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
	resp->status = 200;
	resp->content_type = "text/plain; version=0.0.4";
	if (metrics_render(api->metrics, extra, &resp->body, &resp->len) != 0)
		api_problem(resp, 500, "internal_error", "cannot render metrics");
}
