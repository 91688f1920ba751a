/*
 * api_ocsp.c - the OCSP routes (RFC 6960 appendix A): POST /v1/ocsp with the DER request as
 * the body (application/ocsp-request), and GET /v1/ocsp/<base64 of the DER request> for
 * clients and caches that prefer GET. Both answer 200 application/ocsp-response with whatever
 * ca/ocsp.c made, including its malformedRequest and unauthorized statuses: OCSP clients read
 * the OCSP status, not the HTTP one. Signing and caching live in ca/ocsp.c.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "ca/ocsp.h"
#include "common/log.h"
#include "common/timefmt.h"
#include "enrollment/api_internal.h"

/* Longest base64 text a GET may carry: OCSP_REQUEST_MAX bytes, padded. */
#define OCSP_GET_B64_MAX (4 * ((OCSP_REQUEST_MAX + 2) / 3))

/* Answer one DER request (or none: NULL, 0 gets malformedRequest). */
static void
ocsp_answer(struct api *api, struct api_request *req, const unsigned char *der, size_t len,
            struct api_response *resp)
{
	enum ocsp_outcome outcome = OCSP_MALFORMED;
	unsigned char *body = NULL;
	size_t body_len = 0;
	struct ac_err err;

	ac_err_clear(&err);
	if (ocsp_respond(api->ocsp, der, len, time_now(), &body, &body_len, &outcome, &err) != 0) {
		log_error("ocsp_failed", "request %s: %s", req->id, err.msg);
		api_problem(resp, 500, err.reason != NULL ? err.reason : "internal_error", err.msg);
		return;
	}
	if (outcome == OCSP_MALFORMED || outcome == OCSP_UNAUTHORIZED)
		log_info("ocsp_refused", "request %s: %s", req->id, ocsp_outcome_name(outcome));
	resp->status = 200;
	resp->content_type = "application/ocsp-response";
	resp->body = (char *)body;
	resp->len = body_len;
}

/* POST /v1/ocsp: the body is the DER request. */
void
handle_ocsp_post(struct api *api, struct MHD_Connection *conn, struct api_request *req,
                 struct api_response *resp)
{
	(void)conn;
	ocsp_answer(api, req, (const unsigned char *)req->body, req->len, resp);
}

/*
 * Decode standard base64 (or its URL-safe alphabet), padding optional, into at most
 * OCSP_REQUEST_MAX bytes. Returns the length, or -1 when the text is not base64 or too long.
 * The path reaches us URL-decoded by libmicrohttpd; a '/' in the base64 is part of it.
 */
static int
b64_decode_request(const char *text, unsigned char *out)
{
	char buf[OCSP_GET_B64_MAX + 4];
	size_t n = strlen(text), pad = 0;
	int len;

	if (n == 0 || n > OCSP_GET_B64_MAX)
		return -1;
	for (size_t i = 0; i < n; i++) {
		char ch = text[i];

		if (ch == '-')
			ch = '+';
		else if (ch == '_')
			ch = '/';
		else if (ch == '=' && i + 2 < n)
			return -1; /* padding only at the end */
		else if (ch != '=' && ch != '+' && ch != '/' &&
		         !((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
		           (ch >= '0' && ch <= '9')))
			return -1;
		buf[i] = ch;
	}
	while (n % 4 != 0)
		buf[n++] = '=';
	buf[n] = '\0';
	for (size_t i = n; i > 0 && buf[i - 1] == '='; i--)
		pad++;
	if (pad > 2)
		return -1;
	len = EVP_DecodeBlock(out, (const unsigned char *)buf, (int)n);
	if (len < 0 || (size_t)len < pad)
		return -1;
	return len - (int)pad;
}

/* GET /v1/ocsp/<base64>: the request rides in the path. */
void
handle_ocsp_get(struct api *api, struct MHD_Connection *conn, struct api_request *req,
                struct api_response *resp)
{
	unsigned char der[OCSP_GET_B64_MAX]; /* decoding writes whole groups of 3 */
	int len;

	(void)conn;
	len = req->path_rest != NULL ? b64_decode_request(req->path_rest, der) : -1;
	if (len < 0)
		ocsp_answer(api, req, NULL, 0, resp); /* malformedRequest */
	else
		ocsp_answer(api, req, der, (size_t)len, resp);
}
