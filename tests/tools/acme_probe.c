/*
 * acme_probe.c - an ACME client that speaks the JWS itself, for what Debian's lego 4.9.1 and
 * certbot 2.1 cannot send: `replaces` (RFC 9773), renewalInfo, and requests that are wrong
 * on purpose. tests/integration/test_acme_bad_input.sh runs it against the daemon:
 *
 *   acme_probe DIRECTORY ROOT.pem CHALLTESTSRV_MGMT_PORT EAB_KID EAB_HMAC OUTDIR HTTP01_PORT
 *
 * It walks the whole protocol (dns-01 answered through pebble-challtestsrv's management
 * API, http-01 for an IP identifier by a small responder of its own), prints "ok - ..." for each
 * check, writes the certificates it got to OUTDIR (first.pem, replacement.pem, ip.pem, each leaf
 * then chain) for openssl, and exits 1 at the first check that fails. Each refusal is checked for
 * its RFC 8555 error type and for changing nothing (the order list, the order's status, the
 * account's state stay as they were).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "ca/x509_build.h"
#include "common/base64url.h"
#include "common/timefmt.h"
#include "enrollment/acme_jws.h"

static const char *root_pem;
static json_t *dir;
static char nonce[128];
static int mgmt_port;

struct reply {
	long status;
	char *body;
	size_t len;
	char location[512];
	char retry_after[32];
};

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void
die(const char *fmt, ...)
{
	va_list ap;

	fputs("FAIL: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static void
ok(const char *what)
{
	printf("ok - %s\n", what);
	fflush(stdout);
}

static size_t
on_body(char *data, size_t size, size_t n, void *arg)
{
	struct reply *r = arg;
	char *grown = realloc(r->body, r->len + size * n + 1);

	if (grown == NULL)
		return 0;
	memcpy(grown + r->len, data, size * n);
	r->len += size * n;
	grown[r->len] = '\0';
	r->body = grown;
	return size * n;
}

/* Keep Replay-Nonce, Location and Retry-After. */
static size_t
on_header(char *data, size_t size, size_t n, void *arg)
{
	struct reply *r = arg;
	size_t len = size * n;
	char line[600];

	if (len >= sizeof(line))
		return len;
	memcpy(line, data, len);
	line[len] = '\0';
	line[strcspn(line, "\r\n")] = '\0';
	if (strncasecmp(line, "Replay-Nonce: ", 14) == 0)
		snprintf(nonce, sizeof(nonce), "%s", line + 14);
	else if (strncasecmp(line, "Location: ", 10) == 0)
		snprintf(r->location, sizeof(r->location), "%s", line + 10);
	else if (strncasecmp(line, "Retry-After: ", 13) == 0)
		snprintf(r->retry_after, sizeof(r->retry_after), "%s", line + 13);
	return len;
}

/* One request; body NULL: GET. */
static struct reply
http(const char *url, const char *body, size_t body_len, const char *ctype)
{
	struct reply r;
	struct curl_slist *headers = NULL;
	char h[128];
	CURL *curl = curl_easy_init();

	memset(&r, 0, sizeof(r));
	curl_easy_setopt(curl, CURLOPT_URL, url);
	curl_easy_setopt(curl, CURLOPT_CAINFO, root_pem);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, &r);
	curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(curl, CURLOPT_HEADERDATA, &r);
	if (body != NULL) {
		snprintf(h, sizeof(h), "Content-Type: %s", ctype);
		headers = curl_slist_append(headers, h);
		curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
		curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)body_len);
	}
	if (curl_easy_perform(curl) != CURLE_OK)
		die("request to %s failed", url);
	curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r.status);
	curl_slist_free_all(headers);
	curl_easy_cleanup(curl);
	if (r.body == NULL)
		r.body = strdup("");
	return r;
}

static const char *
dir_url(const char *name)
{
	return json_string_value(json_object_get(dir, name));
}

static void
fresh_nonce(void)
{
	struct reply r = http(dir_url("newNonce"), NULL, 0, NULL);

	free(r.body);
	if (nonce[0] == '\0')
		die("newNonce gave no Replay-Nonce");
}

/* The account a request is made as. */
struct account {
	EVP_PKEY *key;
	const char *alg;
	json_t *jwk;
	char kid[512];
};

/* Sign and POST. kid NULL: use the jwk. payload NULL: POST-as-GET. use_nonce NULL: the
 * current nonce. */
static struct reply
post_as(const struct account *a, EVP_PKEY *signer, const char *alg, const char *url,
        const char *header_url, const char *payload, const char *use_nonce, int with_jwk)
{
	json_t *hdr = json_pack("{s:s, s:s}", "nonce", use_nonce ? use_nonce : nonce, "url",
	                        header_url ? header_url : url);
	json_t *jws;
	struct ac_err err;
	char *text;
	struct reply r;

	ac_err_clear(&err);
	if (with_jwk)
		json_object_set(hdr, "jwk", a->jwk);
	else
		json_object_set_new(hdr, "kid", json_string(a->kid));
	jws = acme_jws_sign(signer, NULL, 0, alg, hdr, payload, &err);
	if (jws == NULL)
		die("signing: %s", err.msg);
	text = json_dumps(jws, JSON_COMPACT);
	r = http(url, text, strlen(text), "application/jose+json");
	free(text);
	json_decref(jws);
	json_decref(hdr);
	return r;
}

static struct reply
post(const struct account *a, const char *url, const char *payload)
{
	return post_as(a, a->key, a->alg, url, NULL, payload, NULL, 0);
}

static json_t *
body_json(const struct reply *r)
{
	json_t *doc = json_loads(r->body, 0, NULL);

	if (doc == NULL)
		die("not JSON: %s", r->body);
	return doc;
}

/* The reply is a problem of this type with this status. */
static void
expect_problem(struct reply *r, long status, const char *type, const char *what)
{
	char full[128];
	json_t *doc = json_loads(r->body, 0, NULL);

	snprintf(full, sizeof(full), "urn:ietf:params:acme:error:%s", type);
	if (r->status != status || doc == NULL || !json_is_string(json_object_get(doc, "type")) ||
	    strcmp(json_string_value(json_object_get(doc, "type")), full) != 0)
		die("%s: want %ld %s, got %ld %s", what, status, type, r->status, r->body);
	json_decref(doc);
	free(r->body);
	ok(what);
}

static void
expect_status(struct reply *r, long status, const char *what)
{
	if (r->status != status)
		die("%s: want %ld, got %ld %s", what, status, r->status, r->body);
}

static struct account
new_key(void)
{
	struct account a;
	struct ac_err err;

	memset(&a, 0, sizeof(a));
	ac_err_clear(&err);
	a.key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	a.jwk = acme_jwk_from_key(a.key, &a.alg, &err);
	if (a.key == NULL || a.jwk == NULL)
		die("key: %s", err.msg);
	return a;
}

static char *
eab_binding(const struct account *a, const char *kid, const char *hmac_b64)
{
	unsigned char mac[64];
	size_t mac_len = 0;
	struct ac_err err;
	json_t *hdr, *eab, *payload;
	char *jwk_text = json_dumps(a->jwk, JSON_COMPACT), *text;

	ac_err_clear(&err);
	if (base64url_decode(hmac_b64, strlen(hmac_b64), mac, sizeof(mac), &mac_len) != 0)
		die("EAB HMAC is not base64url");
	hdr = json_pack("{s:s, s:s}", "kid", kid, "url", dir_url("newAccount"));
	eab = acme_jws_sign(NULL, mac, mac_len, "HS256", hdr, jwk_text, &err);
	payload = json_pack("{s:b, s:o}", "termsOfServiceAgreed", 1, "externalAccountBinding", eab);
	text = json_dumps(payload, JSON_COMPACT);
	json_decref(payload);
	json_decref(hdr);
	free(jwk_text);
	return text;
}

static long
orders_count(const struct account *a)
{
	char url[640];
	struct reply r;
	json_t *doc;
	long n;

	snprintf(url, sizeof(url), "%s/orders", a->kid);
	r = post(a, url, NULL);
	expect_status(&r, 200, "orders list");
	doc = body_json(&r);
	n = (long)json_array_size(json_object_get(doc, "orders"));
	json_decref(doc);
	free(r.body);
	return n;
}

/* A new order for names (type dns unless they parse as IPs); its URL in order_url. */
static json_t *
new_order(const struct account *a, const char *const *names, size_t n, const char *replaces,
          char order_url[512], struct reply *out)
{
	json_t *idents = json_array(), *payload;
	char *text;
	struct reply r;

	for (size_t i = 0; i < n; i++)
		json_array_append_new(
		    idents,
		    json_pack("{s:s, s:s}", "type",
		              strspn(names[i], "0123456789.:") == strlen(names[i]) ? "ip" : "dns",
		              "value", names[i]));
	payload = json_pack("{s:o}", "identifiers", idents);
	if (replaces != NULL)
		json_object_set_new(payload, "replaces", json_string(replaces));
	text = json_dumps(payload, JSON_COMPACT);
	r = post(a, dir_url("newOrder"), text);
	free(text);
	json_decref(payload);
	if (out != NULL) {
		*out = r;
		return NULL;
	}
	expect_status(&r, 201, "newOrder");
	snprintf(order_url, 512, "%s", r.location);
	payload = body_json(&r);
	free(r.body);
	return payload;
}

static json_t *
get_json(const struct account *a, const char *url, const char *what)
{
	struct reply r = post(a, url, NULL);
	json_t *doc;

	expect_status(&r, 200, what);
	doc = body_json(&r);
	free(r.body);
	return doc;
}

/* Answer every authorization of the order with dns-01 through pebble-challtestsrv and wait
 * until the order is ready. */
static void
fulfil(const struct account *a, const json_t *order, const char *order_url)
{
	char tp[ACME_THUMBPRINT_LEN + 1], mgmt[128];
	struct ac_err err;
	size_t i;
	json_t *au;

	ac_err_clear(&err);
	if (acme_jwk_thumbprint(a->jwk, tp, &err) != 0)
		die("thumbprint");
	snprintf(mgmt, sizeof(mgmt), "http://127.0.0.1:%d/set-txt", mgmt_port);
	json_array_foreach(json_object_get(order, "authorizations"), i, au)
	{
		json_t *authz = get_json(a, json_string_value(au), "authz"), *ch;
		const char *name = json_string_value(
		    json_object_get(json_object_get(authz, "identifier"), "value"));
		size_t j;

		json_array_foreach(json_object_get(authz, "challenges"), j, ch)
		{
			const char *type = json_string_value(json_object_get(ch, "type"));
			unsigned char digest[32];
			char keyauth[256], value[64], body[512];
			struct reply r;

			if (strcmp(type, "dns-01") != 0)
				continue;
			snprintf(keyauth, sizeof(keyauth), "%s.%s",
			         json_string_value(json_object_get(ch, "token")), tp);
			EVP_Digest(keyauth, strlen(keyauth), digest, NULL, EVP_sha256(), NULL);
			base64url_encode(digest, sizeof(digest), value, sizeof(value));
			snprintf(body, sizeof(body),
			         "{\"host\":\"_acme-challenge.%s.\",\"value\":\"%s\"}", name,
			         value);
			{
				CURL *curl = curl_easy_init();

				curl_easy_setopt(curl, CURLOPT_URL, mgmt);
				curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
				if (curl_easy_perform(curl) != CURLE_OK)
					die("set-txt");
				curl_easy_cleanup(curl);
			}
			r = post(a, json_string_value(json_object_get(ch, "url")), "{}");
			expect_status(&r, 200, "challenge");
			free(r.body);
		}
		json_decref(authz);
	}
	for (int tries = 0; tries < 100; tries++) {
		json_t *o = get_json(a, order_url, "order");
		const char *st = json_string_value(json_object_get(o, "status"));
		int ready = strcmp(st, "ready") == 0, bad = strcmp(st, "invalid") == 0;

		json_decref(o);
		if (ready)
			return;
		if (bad)
			die("order became invalid");
		usleep(100000);
	}
	die("order never became ready");
}

/* http-01 for an IP identifier: a one-request HTTP server on 127.0.0.1:port that answers
 * the key authorization, on a thread of its own. */
struct http01 {
	int fd;
	char path[256];
	char keyauth[256];
	int served;
};

static void *
http01_serve(void *arg)
{
	struct http01 *h = arg;

	for (;;) {
		char req[2048], resp[512];
		ssize_t n;
		int c = accept(h->fd, NULL, NULL);

		if (c < 0)
			return NULL;
		n = read(c, req, sizeof(req) - 1);
		req[n > 0 ? n : 0] = '\0';
		if (strncmp(req, "GET ", 4) == 0 &&
		    strncmp(req + 4, h->path, strlen(h->path)) == 0) {
			snprintf(
			    resp, sizeof(resp),
			    "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
			    strlen(h->keyauth), h->keyauth);
			h->served++;
		} else {
			snprintf(resp, sizeof(resp),
			         "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: "
			         "close\r\n\r\n");
		}
		if (write(c, resp, strlen(resp)) < 0)
			perror("http01 write");
		close(c);
	}
}

/* Answer the order's single http-01 challenge on port and wait until the order is ready. */
static void
fulfil_http01(const struct account *a, const json_t *order, const char *order_url, int port)
{
	static struct http01 h;
	struct sockaddr_in sa;
	char tp[ACME_THUMBPRINT_LEN + 1];
	struct ac_err err;
	pthread_t t;
	json_t *authz, *ch;
	size_t j;
	int one = 1;

	ac_err_clear(&err);
	if (acme_jwk_thumbprint(a->jwk, tp, &err) != 0)
		die("thumbprint");
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	h.fd = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(h.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (h.fd < 0 || bind(h.fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(h.fd, 8) != 0)
		die("http-01 responder on port %d", port);
	authz = get_json(
	    a, json_string_value(json_array_get(json_object_get(order, "authorizations"), 0)),
	    "authz");
	json_array_foreach(json_object_get(authz, "challenges"), j, ch)
	{
		struct reply r;

		if (strcmp(json_string_value(json_object_get(ch, "type")), "http-01") != 0)
			continue;
		snprintf(h.path, sizeof(h.path), "/.well-known/acme-challenge/%s ",
		         json_string_value(json_object_get(ch, "token")));
		snprintf(h.keyauth, sizeof(h.keyauth), "%s.%s",
		         json_string_value(json_object_get(ch, "token")), tp);
		pthread_create(&t, NULL, http01_serve, &h);
		pthread_detach(t);
		r = post(a, json_string_value(json_object_get(ch, "url")), "{}");
		expect_status(&r, 200, "http-01 challenge");
		free(r.body);
	}
	json_decref(authz);
	for (int tries = 0; tries < 100; tries++) {
		json_t *o = get_json(a, order_url, "order");
		const char *st = json_string_value(json_object_get(o, "status"));
		int ready = strcmp(st, "ready") == 0, bad = strcmp(st, "invalid") == 0;

		json_decref(o);
		if (ready && h.served > 0)
			return;
		if (bad)
			die("the ip order became invalid");
		usleep(100000);
	}
	die("the ip order never became ready");
}

/* A CSR for names, as base64url DER, with its key. */
static char *
make_csr(const char *const *names, size_t n)
{
	EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	X509_REQ *req = X509_REQ_new();
	STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
	char san[1024] = "";
	X509_EXTENSION *ext;
	unsigned char *der = NULL;
	int len;
	char *out;

	for (size_t i = 0; i < n; i++)
		snprintf(san + strlen(san), sizeof(san) - strlen(san), "%s%s:%s", i ? "," : "",
		         strspn(names[i], "0123456789.:") == strlen(names[i]) ? "IP" : "DNS",
		         names[i]);
	ext = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, san);
	sk_X509_EXTENSION_push(exts, ext);
	X509_REQ_set_pubkey(req, key);
	X509_REQ_add_extensions(req, exts);
	X509_REQ_sign(req, key, EVP_sha256());
	len = i2d_X509_REQ(req, &der);
	out = base64url_encode_alloc(der, (size_t)len);
	OPENSSL_free(der);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	X509_REQ_free(req);
	EVP_PKEY_free(key);
	return out;
}

static struct reply
finalize(const struct account *a, const json_t *order, const char *const *names, size_t n)
{
	char *csr = make_csr(names, n), payload[4096];
	struct reply r;

	snprintf(payload, sizeof(payload), "{\"csr\":\"%s\"}", csr);
	r = post(a, json_string_value(json_object_get(order, "finalize")), payload);
	free(csr);
	return r;
}

/* Download the order's certificate into path; its RFC 9773 certid into certid. */
static void
download(const struct account *a, const char *order_url, const char *path, char certid[256])
{
	json_t *o = get_json(a, order_url, "order");
	struct reply r;
	FILE *f;
	BIO *bio;
	X509 *leaf;
	const ASN1_OCTET_STRING *akid;
	const ASN1_INTEGER *serial;
	char a64[128], s64[128];

	if (strcmp(json_string_value(json_object_get(o, "status")), "valid") != 0)
		die("order is not valid after finalize");
	r = post(a, json_string_value(json_object_get(o, "certificate")), NULL);
	expect_status(&r, 200, "certificate");
	if ((f = fopen(path, "w")) == NULL || fwrite(r.body, 1, r.len, f) != r.len)
		die("%s", path);
	fclose(f);
	bio = BIO_new_mem_buf(r.body, (int)r.len);
	leaf = PEM_read_bio_X509(bio, NULL, NULL, NULL);
	if (leaf == NULL)
		die("the certificate is not PEM");
	akid = X509_get0_authority_key_id(leaf);
	serial = X509_get0_serialNumber(leaf);
	base64url_encode(ASN1_STRING_get0_data(akid), (size_t)ASN1_STRING_length(akid), a64,
	                 sizeof(a64));
	base64url_encode(ASN1_STRING_get0_data(serial), (size_t)ASN1_STRING_length(serial), s64,
	                 sizeof(s64));
	snprintf(certid, 256, "%s.%s", a64, s64);
	X509_free(leaf);
	BIO_free(bio);
	free(r.body);
	json_decref(o);
}

static json_t *
renewal_info(const char *certid, struct reply *r)
{
	char url[640];

	snprintf(url, sizeof(url), "%s/%s", dir_url("renewalInfo"), certid);
	*r = http(url, NULL, 0, NULL);
	expect_status(r, 200, "renewalInfo");
	return body_json(r);
}

/* renewalInfo's window is the minute the CA's renewal planner chose (ca/renewal_plan.h):
 * it starts within [1/2, 3/4] of the lifetime counted from issuance (notBefore + 60 s of
 * backdating) and lasts at most a minute. */
static void
check_planned_window(json_t *doc, const char *cert_path)
{
	json_t *w = json_object_get(doc, "suggestedWindow");
	const char *start_text = json_string_value(json_object_get(w, "start"));
	const char *end_text = json_string_value(json_object_get(w, "end"));
	int64_t start, end, issued, not_after;
	FILE *f = fopen(cert_path, "r");
	X509 *leaf = f != NULL ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;

	if (f != NULL)
		fclose(f);
	if (leaf == NULL)
		die("%s: cannot read the certificate", cert_path);
	issued = asn1_time_to_unix(X509_get0_notBefore(leaf)) + 60;
	not_after = asn1_time_to_unix(X509_get0_notAfter(leaf));
	X509_free(leaf);
	if (start_text == NULL || end_text == NULL || time_parse(start_text, 0, &start) != 0 ||
	    time_parse(end_text, 0, &end) != 0)
		die("renewalInfo: unreadable window");
	if (start < issued + (not_after - issued) / 2 ||
	    start > issued + (not_after - issued) * 3 / 4 || end <= start || end - start > 60)
		die("renewalInfo: window %s..%s is not the planner's minute in [1/2, 3/4] of "
		    "%lld..%lld",
		    start_text, end_text, (long long)issued, (long long)not_after);
}

int
main(int argc, char **argv)
{
	struct account a, stranger, other;
	struct reply r;
	json_t *order, *pending, *doc;
	char order_url[512], pending_url[512], url[640], certid[256], certid2[256], path[1024];
	char used_nonce[128], *payload;
	const char *names[] = {"probe.corp.internal"};
	const char *wrong[] = {"other.corp.internal"};
	const char *pending_names[] = {"pending.corp.internal"};
	long before;

	if (argc != 8) {
		fprintf(stderr, "usage: acme_probe DIRECTORY ROOT.pem MGMT_PORT EAB_KID EAB_HMAC "
		                "OUTDIR HTTP01_PORT\n");
		return 2;
	}
	root_pem = argv[2];
	mgmt_port = atoi(argv[3]);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	r = http(argv[1], NULL, 0, NULL);
	dir = body_json(&r);
	free(r.body);

	/* Accounts: EAB required. */
	a = new_key();
	fresh_nonce();
	r = post_as(&a, a.key, a.alg, dir_url("newAccount"), NULL,
	            "{\"termsOfServiceAgreed\":true}", NULL, 1);
	expect_problem(&r, 400, "externalAccountRequired",
	               "newAccount without EAB: externalAccountRequired");
	payload = eab_binding(&a, argv[4], "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
	r = post_as(&a, a.key, a.alg, dir_url("newAccount"), NULL, payload, NULL, 1);
	free(payload);
	expect_problem(&r, 403, "unauthorized", "newAccount with a wrong EAB MAC: unauthorized");
	payload = eab_binding(&a, argv[4], argv[5]);
	r = post_as(&a, a.key, a.alg, dir_url("newAccount"), NULL, payload, NULL, 1);
	free(payload);
	expect_status(&r, 201, "newAccount with EAB");
	snprintf(a.kid, sizeof(a.kid), "%s", r.location);
	free(r.body);
	ok("newAccount with EAB: 201 and a kid");
	r = post_as(&a, a.key, a.alg, dir_url("newAccount"), NULL, "{\"onlyReturnExisting\":true}",
	            NULL, 1);
	expect_status(&r, 200, "onlyReturnExisting");
	if (strcmp(r.location, a.kid) != 0)
		die("onlyReturnExisting: another account");
	free(r.body);
	stranger = new_key();
	r = post_as(&stranger, stranger.key, stranger.alg, dir_url("newAccount"), NULL,
	            "{\"onlyReturnExisting\":true}", NULL, 1);
	expect_problem(&r, 400, "accountDoesNotExist",
	               "onlyReturnExisting for a new key: accountDoesNotExist");

	/* Bad JWS, each changing nothing: the order list stays as it is. */
	before = orders_count(&a);
	snprintf(used_nonce, sizeof(used_nonce), "%s", nonce);
	r = post(&a, dir_url("newOrder"),
	         "{\"identifiers\":[{\"type\":\"dns\",\"value\":\"x.corp.internal\"}]}");
	expect_status(&r, 201, "newOrder");
	free(r.body);
	before++;
	r = post_as(&a, a.key, a.alg, dir_url("newOrder"), NULL,
	            "{\"identifiers\":[{\"type\":\"dns\",\"value\":\"y.corp.internal\"}]}",
	            used_nonce, 0);
	expect_problem(&r, 400, "badNonce", "a replayed nonce: badNonce");
	r = post_as(&a, a.key, a.alg, dir_url("newOrder"), dir_url("revokeCert"),
	            "{\"identifiers\":[{\"type\":\"dns\",\"value\":\"y.corp.internal\"}]}", NULL,
	            0);
	expect_problem(&r, 403, "unauthorized", "a url header for another resource: unauthorized");
	r = post_as(&a, stranger.key, stranger.alg, dir_url("newOrder"), NULL,
	            "{\"identifiers\":[{\"type\":\"dns\",\"value\":\"y.corp.internal\"}]}", NULL,
	            0);
	expect_problem(&r, 400, "malformed", "a JWS signed by another key: malformed");
	r = post_as(&a, NULL, "HS256", dir_url("newOrder"), NULL,
	            "{\"identifiers\":[{\"type\":\"dns\",\"value\":\"y.corp.internal\"}]}", NULL,
	            0);
	expect_problem(&r, 400, "badSignatureAlgorithm",
	               "an unsupported alg (HS256): badSignatureAlgorithm");
	{
		json_t *hdr = json_pack("{s:s, s:s, s:s}", "nonce", nonce, "url",
		                        dir_url("newOrder"), "kid", a.kid);
		struct ac_err err;
		json_t *jws;
		char *text;

		ac_err_clear(&err);
		jws = acme_jws_sign(a.key, NULL, 0, a.alg, hdr, "{\"identifiers\":[]}", &err);
		text = json_dumps(jws, JSON_COMPACT);
		r = http(dir_url("newOrder"), text, strlen(text) / 2, "application/jose+json");
		expect_problem(&r, 400, "malformed", "a truncated body: malformed");
		free(text);
		json_decref(jws);
		json_decref(hdr);
	}
	{
		size_t big = 1024 * 1024;
		char *huge = malloc(big + 1);

		memset(huge, 'A', big);
		huge[0] = '{';
		huge[big] = '\0';
		r = http(dir_url("newOrder"), huge, big, "application/jose+json");
		expect_problem(&r, 413, "malformed", "a 1 MiB body: malformed (413)");
		/* At the limit (API_MAX_BODY, ACME_JWS_MAX: 64 KiB) the whole body still goes
		 * through libmicrohttpd's per-connection memory to the JWS parser; one byte
		 * more is refused before it. */
		huge[65536] = '\0';
		r = http(dir_url("newOrder"), huge, 65536, "application/jose+json");
		expect_problem(&r, 400, "malformed", "a body of exactly 64 KiB: malformed (400)");
		huge[65536] = 'A';
		huge[65537] = '\0';
		r = http(dir_url("newOrder"), huge, 65537, "application/jose+json");
		expect_problem(&r, 413, "malformed", "a body of 64 KiB + 1: malformed (413)");
		free(huge);
	}
	if (orders_count(&a) != before)
		die("a refused request changed the order list");
	ok("no refused request made an order");

	/* Identifier policy: outside the trust domain and outside the IP ranges. */
	{
		const char *outside[] = {"www.example.com"};
		const char *ip_out[] = {"10.9.9.9"};
		const char *ip_in[] = {"127.0.0.1"};
		const char *wild[] = {"*.corp.internal"};

		new_order(&a, outside, 1, NULL, order_url, &r);
		expect_problem(&r, 400, "rejectedIdentifier",
		               "a name outside policy: rejectedIdentifier");
		new_order(&a, ip_out, 1, NULL, order_url, &r);
		expect_problem(&r, 400, "rejectedIdentifier",
		               "an IP outside the ranges: rejectedIdentifier");
		new_order(&a, wild, 1, NULL, order_url, &r);
		expect_problem(&r, 400, "rejectedIdentifier", "a wildcard: rejectedIdentifier");
		order = new_order(&a, ip_in, 1, NULL, order_url, NULL);
		doc = get_json(
		    &a,
		    json_string_value(json_array_get(json_object_get(order, "authorizations"), 0)),
		    "authz");
		if (strcmp(json_string_value(
		               json_object_get(json_object_get(doc, "identifier"), "type")),
		           "ip") != 0 ||
		    json_array_size(json_object_get(doc, "challenges")) != 2)
			die("an ip authorization must offer http-01 and tls-alpn-01 only");
		json_decref(doc);
		ok("an ip identifier (RFC 8738): http-01 and tls-alpn-01 offered");
		fulfil_http01(&a, order, order_url, atoi(argv[7]));
		r = finalize(&a, order, ip_in, 1);
		expect_status(&r, 200, "finalize of the ip order");
		free(r.body);
		snprintf(path, sizeof(path), "%s/ip.pem", argv[6]);
		download(&a, order_url, path, certid);
		json_decref(order);
		ok("an ip identifier validated by http-01 on 127.0.0.1 and issued");
	}

	/* Finalize before the order is ready, then with names that differ: nothing changes. */
	pending = new_order(&a, pending_names, 1, NULL, pending_url, NULL);
	r = finalize(&a, pending, pending_names, 1);
	expect_problem(&r, 403, "orderNotReady", "finalize before ready: orderNotReady");
	order = new_order(&a, names, 1, NULL, order_url, NULL);
	fulfil(&a, order, order_url);
	ok("dns-01 through pebble-challtestsrv: the order is ready");
	r = finalize(&a, order, wrong, 1);
	expect_problem(&r, 400, "badCSR", "a CSR naming other names: badCSR");
	doc = get_json(&a, order_url, "order");
	if (strcmp(json_string_value(json_object_get(doc, "status")), "ready") != 0)
		die("a refused finalize changed the order");
	json_decref(doc);
	ok("the refused finalize left the order ready");
	r = finalize(&a, order, names, 1);
	expect_status(&r, 200, "finalize");
	free(r.body);
	snprintf(path, sizeof(path), "%s/first.pem", argv[6]);
	download(&a, order_url, path, certid);
	ok("finalize and download: application/pem-certificate-chain");
	/* A valid order is never finalized again: no second certificate, the same URL. */
	{
		json_t *was = get_json(&a, order_url, "order"), *now;

		r = finalize(&a, order, names, 1);
		expect_problem(&r, 403, "orderNotReady", "a second finalize: orderNotReady");
		now = get_json(&a, order_url, "order");
		if (!json_equal(json_object_get(was, "certificate"),
		                json_object_get(now, "certificate")) ||
		    strcmp(json_string_value(json_object_get(now, "status")), "valid") != 0)
			die("a second finalize changed the order");
		json_decref(was);
		json_decref(now);
		ok("the second finalize left the order valid with its one certificate");
	}

	/* Renewal information, then an order that replaces the certificate. */
	doc = renewal_info(certid, &r);
	if (json_object_get(json_object_get(doc, "suggestedWindow"), "start") == NULL ||
	    r.retry_after[0] == '\0')
		die("renewalInfo without a window or Retry-After: %s", r.body);
	check_planned_window(doc, path);
	json_decref(doc);
	free(r.body);
	ok("renewalInfo: the CA planner's minute inside [1/2, 3/4] of the lifetime, and "
	   "Retry-After");
	json_decref(order);
	order = new_order(&a, names, 1, certid, order_url, NULL);
	if (!json_equal(json_object_get(order, "replaces"), json_string(certid)))
		die("the new order does not say what it replaces");
	new_order(&a, names, 1, certid, pending_url, &r);
	expect_problem(&r, 409, "alreadyReplaced",
	               "a second order replacing the same certificate: alreadyReplaced");
	fulfil(&a, order, order_url);
	r = finalize(&a, order, names, 1);
	expect_status(&r, 200, "finalize of the replacement");
	free(r.body);
	snprintf(path, sizeof(path), "%s/replacement.pem", argv[6]);
	download(&a, order_url, path, certid2);
	ok("an order with replaces (RFC 9773) was issued");

	/* Revocation by the account; renewalInfo then says renew now. */
	{
		FILE *f;
		X509 *leaf;
		unsigned char *der = NULL;
		int len;
		char *b64, body[8192];
		time_t now = time(NULL);
		struct tm tm;
		char stamp[32];

		snprintf(path, sizeof(path), "%s/first.pem", argv[6]);
		f = fopen(path, "r");
		leaf = PEM_read_X509(f, NULL, NULL, NULL);
		fclose(f);
		len = i2d_X509(leaf, &der);
		b64 = base64url_encode_alloc(der, (size_t)len);
		snprintf(body, sizeof(body), "{\"certificate\":\"%s\",\"reason\":7}", b64);
		r = post(&a, dir_url("revokeCert"), body);
		expect_problem(&r, 400, "badRevocationReason",
		               "revocation reason 7: badRevocationReason");
		other = new_key();
		snprintf(body, sizeof(body), "{\"certificate\":\"%s\"}", b64);
		r = post_as(&other, other.key, other.alg, dir_url("revokeCert"), NULL, body, NULL,
		            1);
		expect_problem(&r, 403, "unauthorized",
		               "revocation by an unrelated key: unauthorized");
		r = post(&a, dir_url("revokeCert"), body);
		expect_status(&r, 200, "revokeCert");
		free(r.body);
		ok("revokeCert by the account");
		r = post(&a, dir_url("revokeCert"), body);
		expect_problem(&r, 400, "alreadyRevoked", "revoking again: alreadyRevoked");
		doc = renewal_info(certid, &r);
		gmtime_r(&now, &tm);
		strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm);
		if (strcmp(json_string_value(
		               json_object_get(json_object_get(doc, "suggestedWindow"), "start")),
		           stamp) > 0)
			die("renewalInfo of a revoked certificate does not say renew now: %s",
			    r.body);
		json_decref(doc);
		free(r.body);
		ok("renewalInfo of a revoked certificate: the window has begun");
		free(b64);
		OPENSSL_free(der);
		X509_free(leaf);
	}

	/* A failed validation: the challenge and its authorization are invalid with the
	 * validator's error, and so is the order. */
	{
		const char *unserved[] = {"unserved.corp.internal"};
		json_t *o = new_order(&a, unserved, 1, NULL, url, NULL), *authz, *ch;
		const char *au =
		    json_string_value(json_array_get(json_object_get(o, "authorizations"), 0));
		const char *type;
		char shown[64];
		size_t j;

		authz = get_json(&a, au, "authz");
		json_array_foreach(json_object_get(authz, "challenges"), j, ch)
		{
			if (strcmp(json_string_value(json_object_get(ch, "type")), "http-01") != 0)
				continue;
			r = post(&a, json_string_value(json_object_get(ch, "url")), "{}");
			expect_status(&r, 200, "http-01 challenge nobody answers");
			free(r.body);
		}
		json_decref(authz);
		for (int tries = 0; tries < 150; tries++) {
			authz = get_json(&a, au, "authz");
			if (strcmp(json_string_value(json_object_get(authz, "status")),
			           "pending") != 0)
				break;
			json_decref(authz);
			authz = NULL;
			usleep(100000);
		}
		if (authz == NULL ||
		    strcmp(json_string_value(json_object_get(authz, "status")), "invalid") != 0)
			die("a challenge nobody answered did not make the authorization invalid");
		ch = json_array_get(json_object_get(authz, "challenges"), 0);
		type = json_string_value(json_object_get(json_object_get(ch, "error"), "type"));
		if (type == NULL || strncmp(type, "urn:ietf:params:acme:error:", 27) != 0 ||
		    strcmp(json_string_value(json_object_get(ch, "status")), "invalid") != 0)
			die("the failed challenge carries no ACME error: %s",
			    json_dumps(authz, JSON_COMPACT));
		snprintf(shown, sizeof(shown), "%s", type + 27);
		json_decref(authz);
		authz = get_json(&a, url, "order");
		if (strcmp(json_string_value(json_object_get(authz, "status")), "invalid") != 0)
			die("the order of a failed validation is not invalid");
		json_decref(authz);
		json_decref(o);
		printf(
		    "ok - a failed http-01 validation: challenge, authorization and order invalid "
		    "(%s)\n",
		    shown);
	}

	/* A contact update; an authorization deactivated makes its order invalid. */
	r = post(&a, a.kid, "{\"contact\":[\"mailto:pki@corp.internal\"]}");
	expect_status(&r, 200, "contact update");
	if (strstr(r.body, "mailto:pki@corp.internal") == NULL)
		die("the contact update is not in the account: %s", r.body);
	free(r.body);
	/* The daemon keeps accounts parsed in memory: a later read must see the update. */
	r = post(&a, a.kid, NULL);
	expect_status(&r, 200, "the account read after a contact update");
	if (strstr(r.body, "mailto:pki@corp.internal") == NULL)
		die("a read after the contact update shows the old contact: %s", r.body);
	free(r.body);
	r = post(&a, a.kid, "{\"contact\":[\"tel:+1555\"]}");
	expect_problem(&r, 400, "unsupportedContact", "a tel: contact: unsupportedContact");
	ok("contact update");
	{
		const char *au = json_string_value(
		    json_array_get(json_object_get(pending, "authorizations"), 0));

		r = post(&a, au, "{\"status\":\"deactivated\"}");
		expect_status(&r, 200, "authz deactivation");
		free(r.body);
		doc = get_json(&a, pending_url, "order");
		if (strcmp(json_string_value(json_object_get(doc, "status")), "invalid") != 0)
			die("the order of a deactivated authorization is not invalid");
		json_decref(doc);
		ok("authorization deactivated: its order is invalid");
	}

	/* Key rollover, then deactivation: the deactivated kid is refused. */
	{
		struct account next = new_key();
		json_t *inner_hdr =
		    json_pack("{s:s, s:O}", "url", dir_url("keyChange"), "jwk", next.jwk);
		json_t *inner_payload = json_pack("{s:s, s:O}", "account", a.kid, "oldKey", a.jwk);
		char *ip = json_dumps(inner_payload, JSON_COMPACT), *inner_text;
		struct ac_err err;
		json_t *inner;

		ac_err_clear(&err);
		inner = acme_jws_sign(next.key, NULL, 0, next.alg, inner_hdr, ip, &err);
		inner_text = json_dumps(inner, JSON_COMPACT);
		r = post(&a, dir_url("keyChange"), inner_text);
		expect_status(&r, 200, "keyChange");
		free(r.body);
		snprintf(next.kid, sizeof(next.kid), "%s", a.kid);
		r = post(&a, a.kid, NULL);
		expect_problem(&r, 400, "malformed", "after keyChange the old key is refused");
		r = post(&next, a.kid, NULL);
		expect_status(&r, 200, "the new key reads the account");
		free(r.body);
		ok("keyChange: the new key works, the old one no longer does");
		r = post(&next, a.kid, "{\"status\":\"deactivated\"}");
		expect_status(&r, 200, "deactivate");
		free(r.body);
		r = post(&next, dir_url("newOrder"),
		         "{\"identifiers\":[{\"type\":\"dns\",\"value\":\"z.corp.internal\"}]}");
		expect_problem(&r, 403, "unauthorized",
		               "the kid of a deactivated account: unauthorized");
		free(inner_text);
		free(ip);
		json_decref(inner);
		json_decref(inner_payload);
		json_decref(inner_hdr);
	}
	/* newOrder counts against the account: a burst ends in rateLimited with Retry-After. */
	{
		struct account burst = new_key();
		int limited = 0;

		payload = eab_binding(&burst, argv[4], argv[5]);
		r = post_as(&burst, burst.key, burst.alg, dir_url("newAccount"), NULL, payload,
		            NULL, 1);
		free(payload);
		expect_status(&r, 201, "newAccount for the burst");
		snprintf(burst.kid, sizeof(burst.kid), "%s", r.location);
		free(r.body);
		for (int i = 0; i < 200 && !limited; i++) {
			r = post(
			    &burst, dir_url("newOrder"),
			    "{\"identifiers\":[{\"type\":\"dns\",\"value\":\"b.corp.internal\"}]}");
			if (r.status == 429) {
				if (r.retry_after[0] == '\0')
					die("rateLimited without Retry-After");
				expect_problem(
				    &r, 429, "rateLimited",
				    "a burst of new orders: rateLimited with Retry-After");
				limited = 1;
			} else {
				expect_status(&r, 201, "newOrder in the burst");
				free(r.body);
			}
		}
		if (!limited)
			die("200 new orders at once were never rate limited");
	}
	json_decref(order);
	json_decref(pending);
	json_decref(dir);
	curl_global_cleanup();
	return 0;
}
