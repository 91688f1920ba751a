/*
 * acme_validate_http01.c - the http-01 check (RFC 8555 section 8.3): GET
 * http://IDENTIFIER:PORT/.well-known/acme-challenge/TOKEN and compare the body, trimmed of
 * white space, with the key authorization.
 *
 * The name is resolved through the configured DNS server (AAAA and A) and libcurl is told to
 * connect to exactly those addresses (CURLOPT_RESOLVE), so the system resolver never
 * decides. Redirects are followed here, not by libcurl: at most MAX_REDIRECTS, only to
 * http on port 80 or the configured http-01 port and to https on 443, each new name
 * resolved the same way; libcurl may open sockets only to the addresses so found. The body
 * is read up to BODY_MAX bytes; the whole check, redirects included, ends at the job's
 * deadline. No proxy from the environment applies. The libcurl handle is the worker
 * thread's (struct acme_check_state), reset before every transfer; connections are never
 * reused.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <curl/curl.h>

#include "enrollment/acme_validate_internal.h"

#define MAX_REDIRECTS 10
#define BODY_MAX 4096
#define URL_MAX 2048

/* The body collected so far; overflow makes the write callback stop the transfer. */
struct body {
	char data[BODY_MAX + 1];
	size_t len;
	int overflow;
};

static size_t
body_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct body *b = userdata;
	size_t n = size * nmemb;

	if (n > BODY_MAX - b->len) {
		b->overflow = 1;
		return 0;
	}
	memcpy(b->data + b->len, ptr, n);
	b->len += n;
	return n;
}

/* Copy s into out with anything outside printable ASCII (and quotes) shown as '?', for a
 * detail that quotes what the client served. */
static void
printable(const char *s, size_t len, char *out, size_t out_len)
{
	size_t n = len < out_len - 1 ? len : out_len - 1;

	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];

		out[i] = (ch < 0x20 || ch >= 0x7F || ch == '"' || ch == '\\') ? '?' : (char)ch;
	}
	out[n] = '\0';
}

static int
is_space(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

/* host as it goes in a URL: IPv6 literals in brackets. */
static void
url_host(const char *host, char *out, size_t len)
{
	if (strchr(host, ':') != NULL)
		snprintf(out, len, "[%s]", host);
	else
		snprintf(out, len, "%s", host);
}

/* libcurl's socket opener: only the addresses the configured resolver gave (or the IP
 * identifier itself), so a name never reaches the system resolver by a slip. */
static curl_socket_t
open_resolved_only(void *clientp, curlsocktype purpose, struct curl_sockaddr *address)
{
	const struct acme_addresses *addrs = clientp;

	(void)purpose;
	for (size_t i = 0; i < addrs->count; i++) {
		if (address->family != addrs->list[i].family)
			continue;
		if (address->family == AF_INET &&
		    memcmp(&((const struct sockaddr_in *)(const void *)&address->addr)->sin_addr,
		           addrs->list[i].addr, 4) == 0)
			return socket(address->family, address->socktype | SOCK_CLOEXEC,
			              address->protocol);
		if (address->family == AF_INET6 &&
		    memcmp(&((const struct sockaddr_in6 *)(const void *)&address->addr)->sin6_addr,
		           addrs->list[i].addr, 16) == 0)
			return socket(address->family, address->socktype | SOCK_CLOEXEC,
			              address->protocol);
	}
	return CURL_SOCKET_BAD;
}

/* Map a libcurl failure on url to an ACME error. */
static void
fail_transfer(struct acme_validation_result *out, CURLcode code, const char *errbuf,
              const char *url, const struct body *b)
{
	const char *why = errbuf[0] != '\0' ? errbuf : curl_easy_strerror(code);

	switch (code) {
	case CURLE_WRITE_ERROR:
		if (b->overflow) {
			acme_fail(
			    out, "unauthorized",
			    "the response from %.100s is longer than %d bytes; serve only the "
			    "key authorization",
			    url, BODY_MAX);
			return;
		}
		break;
	case CURLE_OPERATION_TIMEDOUT:
		acme_fail(out, "connection", "fetching %.100s timed out: %.80s", url, why);
		return;
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CIPHER:
	case CURLE_PEER_FAILED_VERIFICATION:
		acme_fail(out, "tls", "TLS with %.100s failed: %.80s", url, why);
		return;
	default:
		break;
	}
	acme_fail(out, "connection", "fetching %.100s failed: %.80s", url, why);
}

/* Where a redirect may go: 0 and (host, is_ip, port, https) set, or -1 with out filled. */
static int
redirect_target(const struct acme_checker *c, const char *location, char *host, size_t host_len,
                int *is_ip, int *port, int *https, struct acme_validation_result *out)
{
	CURLU *u = curl_url();
	char *scheme = NULL, *uhost = NULL, *uport = NULL;
	unsigned char ip[16];
	size_t hlen;
	int rc = -1;

	if (u == NULL) {
		acme_fail(out, "connection", "the CA is out of memory; try again later");
		goto out;
	}
	if (curl_url_set(u, CURLUPART_URL, location, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &uhost, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_PORT, &uport, CURLU_DEFAULT_PORT) != CURLUE_OK) {
		acme_fail(out, "connection", "redirect to an invalid URL");
		goto out;
	}
	if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0) {
		acme_fail(out, "connection",
		          "redirect to a %.16s URL; only http and https are "
		          "followed",
		          scheme);
		goto out;
	}
	*https = strcmp(scheme, "https") == 0;
	*port = atoi(uport);
	if (*https ? *port != 443 : (*port != 80 && *port != c->http_port)) {
		acme_fail(out, "connection",
		          "redirect to port %d; only 80 (or the http-01 port %d) for http and 443 "
		          "for https are followed",
		          *port, c->http_port);
		goto out;
	}
	hlen = strlen(uhost);
	if (hlen >= 2 && uhost[0] == '[' && uhost[hlen - 1] == ']') {
		uhost[hlen - 1] = '\0';
		memmove(uhost, uhost + 1, hlen - 1);
	}
	if (strlen(uhost) >= host_len) {
		acme_fail(out, "connection", "redirect to a host name that is too long");
		goto out;
	}
	snprintf(host, host_len, "%s", uhost);
	*is_ip = inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1;
	rc = 0;
out:
	curl_free(scheme);
	curl_free(uhost);
	curl_free(uport);
	curl_url_cleanup(u);
	return rc;
}

void
acme_check_state_clear(struct acme_check_state *st)
{
	if (st->curl != NULL)
		curl_easy_cleanup(st->curl);
	st->curl = NULL;
	st->resolved[0] = '\0';
}

void
acme_check_http01(const struct acme_checker *c, struct acme_check_state *st,
                  const struct acme_validation *job, int64_t deadline_ms,
                  struct acme_validation_result *out)
{
	CURL *curl = NULL;
	struct curl_slist *resolve = NULL;
	struct acme_addresses addrs;
	struct body *b = NULL;
	char *url = NULL, host[256], bracketed[260], errbuf[CURL_ERROR_SIZE];
	int is_ip = job->identifier_is_ip, port = c->http_port, https = 0;

	url = malloc(URL_MAX);
	b = malloc(sizeof(*b));
	if (st->curl == NULL)
		st->curl = curl_easy_init();
	curl = st->curl;
	if (url == NULL || b == NULL || curl == NULL) {
		acme_fail(out, "connection", "the CA is out of memory; try again later");
		goto out;
	}
	snprintf(host, sizeof(host), "%s", job->identifier);
	url_host(host, bracketed, sizeof(bracketed));
	snprintf(url, URL_MAX, "http://%s:%d/.well-known/acme-challenge/%s", bracketed, port,
	         job->token);

	for (int hop = 0;; hop++) {
		char entry[512], addr_text[INET6_ADDRSTRLEN + 2];
		size_t elen;
		int64_t left;
		long status = 0;
		char *location = NULL;
		CURLcode code;

		if (acme_resolve(c, host, is_ip, deadline_ms, &addrs, out) != 0)
			goto out;
		curl_slist_free_all(resolve);
		resolve = NULL;
		/* First drop the entry the last transfer left in the handle's DNS cache. */
		if (st->resolved[0] != '\0') {
			snprintf(entry, sizeof(entry), "-%s", st->resolved);
			resolve = curl_slist_append(NULL, entry);
			if (resolve == NULL) {
				acme_fail(out, "connection",
				          "the CA is out of memory; try again later");
				goto out;
			}
		}
		if (!is_ip) {
			struct curl_slist *more;

			elen = (size_t)snprintf(entry, sizeof(entry), "%s:%d:", host, port);
			for (size_t i = 0; i < addrs.count && elen < sizeof(entry); i++) {
				char text[INET6_ADDRSTRLEN];

				inet_ntop(addrs.list[i].family, addrs.list[i].addr, text,
				          sizeof(text));
				snprintf(addr_text, sizeof(addr_text),
				         addrs.list[i].family == AF_INET6 ? "[%s]" : "%s", text);
				elen += (size_t)snprintf(entry + elen, sizeof(entry) - elen, "%s%s",
				                         i > 0 ? "," : "", addr_text);
			}
			more = curl_slist_append(resolve, entry);
			if (more == NULL) {
				acme_fail(out, "connection",
				          "the CA is out of memory; try again later");
				goto out;
			}
			resolve = more;
		}
		left = deadline_ms - dns_monotonic_ms();
		if (left <= 0) {
			acme_fail(out, "connection", "fetching %.100s timed out", url);
			goto out;
		}
		b->len = 0;
		b->overflow = 0;
		errbuf[0] = '\0';
		curl_easy_reset(curl);
		curl_easy_setopt(curl, CURLOPT_URL, url);
		curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
		curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
		curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
		curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
		curl_easy_setopt(curl, CURLOPT_FORBID_REUSE, 1L);
		curl_easy_setopt(curl, CURLOPT_FRESH_CONNECT, 1L);
		curl_easy_setopt(curl, CURLOPT_HTTP_CONTENT_DECODING, 0L);
		curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long)left);
		curl_easy_setopt(curl, CURLOPT_USERAGENT, "agentca-validation-authority");
		curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
		curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, body_write);
		curl_easy_setopt(curl, CURLOPT_WRITEDATA, b);
		/* An https redirect target proves control by answering, not by its certificate
		 * (the client is being validated for a certificate it may not have yet). */
		curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 0L);
		if (resolve != NULL)
			curl_easy_setopt(curl, CURLOPT_RESOLVE, resolve);
		curl_easy_setopt(curl, CURLOPT_OPENSOCKETFUNCTION, open_resolved_only);
		curl_easy_setopt(curl, CURLOPT_OPENSOCKETDATA, &addrs);
		code = curl_easy_perform(curl);
		/* The cache now holds this transfer's entry (the old one is gone). */
		if (is_ip)
			st->resolved[0] = '\0';
		else
			snprintf(st->resolved, sizeof(st->resolved), "%s:%d", host, port);
		if (code != CURLE_OK) {
			fail_transfer(out, code, errbuf, url, b);
			goto out;
		}
		curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
		if (status == 200)
			break;
		if (status != 301 && status != 302 && status != 303 && status != 307 &&
		    status != 308) {
			acme_fail(out, "unauthorized",
			          "%.100s answered HTTP %ld; it must answer 200 with the key "
			          "authorization",
			          url, status);
			goto out;
		}
		if (hop == MAX_REDIRECTS) {
			acme_fail(out, "connection", "more than %d redirects from %.100s",
			          MAX_REDIRECTS, job->identifier);
			goto out;
		}
		if (curl_easy_getinfo(curl, CURLINFO_REDIRECT_URL, &location) != CURLE_OK ||
		    location == NULL) {
			acme_fail(out, "connection", "%.100s answered HTTP %ld without a Location",
			          url, status);
			goto out;
		}
		if (strlen(location) >= URL_MAX) {
			acme_fail(out, "connection",
			          "redirect from %.100s to a URL longer than %d "
			          "bytes",
			          url, URL_MAX);
			goto out;
		}
		if (redirect_target(c, location, host, sizeof(host), &is_ip, &port, &https, out) !=
		    0)
			goto out;
		snprintf(url, URL_MAX, "%s", location);
	}

	{
		const char *start = b->data, *end = b->data + b->len;
		size_t ka_len = strlen(job->key_authorization);
		char got[48];

		while (start < end && is_space(*start))
			start++;
		while (end > start && is_space(end[-1]))
			end--;
		if ((size_t)(end - start) != ka_len ||
		    memcmp(start, job->key_authorization, ka_len) != 0) {
			printable(start, (size_t)(end - start), got, sizeof(got));
			acme_fail(
			    out, "incorrectResponse",
			    "the file at %.100s is not this challenge's key authorization (got "
			    "\"%s%s\")",
			    url, got, (size_t)(end - start) >= sizeof(got) ? "..." : "");
			goto out;
		}
	}
	out->ok = 1;
out:
	curl_slist_free_all(resolve);
	free(b);
	free(url);
}
