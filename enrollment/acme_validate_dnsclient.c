/*
 * acme_validate_dnsclient.c - the strict DNS stub client of the validation authority (see
 * acme_validate_dnsclient.h): query building, response parsing and the UDP/TCP exchange.
 *
 * The parser never trusts a length: every read is checked against the end of the message,
 * a compression pointer must point before the label that holds it (so no loop can form) and
 * at most DNS_MAX_POINTERS are followed per name. A response that does not carry our ID, is
 * not a response, or asks another question is refused; over UDP such a datagram is dropped
 * and the client keeps waiting for the real one until the deadline (a spoofer must guess
 * the random ID and the port).
 */
#include "enrollment/acme_validate_dnsclient.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>

#define DNS_HEADER_LEN 12
#define DNS_MAX_POINTERS 16
#define DNS_MAX_CNAME_HOPS 8
#define DNS_UDP_MAX 4096
#define DNS_TCP_MAX 65535
#define DNS_UDP_RETRY_MS 1000
#define DNS_CLASS_IN 1

int64_t
dns_monotonic_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Parse an IPv4 or IPv6 literal (IPv6 possibly in brackets) into out. */
static int
parse_address(const char *text, size_t len, struct dns_server *out)
{
	char buf[64];

	if (len >= 2 && text[0] == '[' && text[len - 1] == ']') {
		text++;
		len -= 2;
	}
	if (len == 0 || len >= sizeof(buf))
		return -1;
	memcpy(buf, text, len);
	buf[len] = '\0';
	if (inet_pton(AF_INET, buf, out->addr) == 1) {
		out->family = AF_INET;
		return 0;
	}
	if (inet_pton(AF_INET6, buf, out->addr) == 1) {
		out->family = AF_INET6;
		return 0;
	}
	return -1;
}

/* The first "nameserver ADDR" of /etc/resolv.conf, port 53. */
static int
server_from_resolv_conf(struct dns_server *out, struct ac_err *err)
{
	FILE *f = NULL;
	char line[256];
	int rc = -1;

	f = fopen("/etc/resolv.conf", "r");
	if (f == NULL) {
		ac_err_set(err, AC_ERR_IO, "acme_resolver_missing",
		           "/etc/resolv.conf: %s; set the ACME resolver (ADDR:PORT) explicitly",
		           strerror(errno));
		goto out;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		char *p = line, *end;

		if (strncmp(p, "nameserver", 10) != 0 || (p[10] != ' ' && p[10] != '\t'))
			continue;
		p += 10;
		while (*p == ' ' || *p == '\t')
			p++;
		end = p;
		while (*end != '\0' && *end != ' ' && *end != '\t' && *end != '\n' && *end != '%')
			end++;
		if (parse_address(p, (size_t)(end - p), out) == 0) {
			out->port = 53;
			rc = 0;
			goto out;
		}
	}
	ac_err_set(err, AC_ERR_INVALID, "acme_resolver_missing",
	           "/etc/resolv.conf names no usable nameserver; set the ACME resolver "
	           "(ADDR:PORT) explicitly");
out:
	if (f != NULL)
		fclose(f);
	return rc;
}

int
dns_server_parse(const char *text, struct dns_server *out, struct ac_err *err)
{
	const char *colon;
	char *end;
	long port;

	memset(out, 0, sizeof(*out));
	if (text == NULL)
		return server_from_resolv_conf(out, err);
	colon = strrchr(text, ':');
	if (colon == NULL || colon[1] == '\0')
		goto bad;
	errno = 0;
	port = strtol(colon + 1, &end, 10);
	if (errno != 0 || *end != '\0' || port < 1 || port > 65535)
		goto bad;
	if (parse_address(text, (size_t)(colon - text), out) != 0)
		goto bad;
	/* An unbracketed IPv6 address would have lost its last group to the port. */
	if (out->family == AF_INET6 && text[0] != '[')
		goto bad;
	out->port = (uint16_t)port;
	return 0;
bad:
	return ac_err_set(err, AC_ERR_INVALID, "acme_resolver_invalid",
	                  "ACME resolver \"%.64s\" is not ADDR:PORT (e.g. 127.0.0.1:8053 or "
	                  "[::1]:53)",
	                  text);
}

int
dns_build_query(unsigned char *buf, size_t cap, uint16_t id, const char *qname, uint16_t qtype,
                size_t *len, struct ac_err *err)
{
	size_t off = DNS_HEADER_LEN, name_len = strlen(qname);
	const char *label = qname;

	if (name_len > 0 && qname[name_len - 1] == '.')
		name_len--;
	if (name_len == 0 || name_len > 253 || cap < DNS_HEADER_LEN + name_len + 2 + 4)
		return ac_err_set(err, AC_ERR_INVALID, "dns_name_invalid",
		                  "DNS name of %zu bytes cannot be asked", name_len);
	memset(buf, 0, DNS_HEADER_LEN);
	buf[0] = (unsigned char)(id >> 8);
	buf[1] = (unsigned char)id;
	buf[2] = 0x01; /* RD */
	buf[5] = 1;    /* QDCOUNT */
	while (label < qname + name_len) {
		const char *dot = memchr(label, '.', (size_t)(qname + name_len - label));
		size_t n =
		    (dot != NULL ? (size_t)(dot - label) : (size_t)(qname + name_len - label));

		if (n == 0 || n > 63)
			return ac_err_set(err, AC_ERR_INVALID, "dns_name_invalid",
			                  "DNS name \"%.255s\" has an empty or too long label",
			                  qname);
		buf[off++] = (unsigned char)n;
		memcpy(buf + off, label, n);
		off += n;
		label += n + (dot != NULL ? 1 : 0);
	}
	buf[off++] = 0;
	buf[off++] = (unsigned char)(qtype >> 8);
	buf[off++] = (unsigned char)qtype;
	buf[off++] = 0;
	buf[off++] = DNS_CLASS_IN;
	*len = off;
	return 0;
}

/*
 * Read the (possibly compressed) name at *off into out as lower-case dotted text without the
 * final dot. *off moves past the name as it sits at *off (not past the pointer's target).
 * A label holding a dot, a NUL or a byte outside printable ASCII cannot equal any name we
 * ask for: *plain is set to 0 and the caller never matches it.
 */
static int
read_name(const unsigned char *msg, size_t len, size_t *off, char out[DNS_MAX_NAME + 1], int *plain)
{
	size_t pos = *off, out_len = 0, wire_len = 0;
	size_t limit = len; /* a pointer must point before the label it is in */
	int jumps = 0, jumped = 0;

	*plain = 1;
	for (;;) {
		unsigned char c;

		if (pos >= len || pos >= limit)
			return -1;
		c = msg[pos];
		if ((c & 0xC0) == 0xC0) {
			size_t target;

			if (pos + 1 >= len || ++jumps > DNS_MAX_POINTERS)
				return -1;
			target = ((size_t)(c & 0x3F) << 8) | msg[pos + 1];
			if (target >= pos)
				return -1;
			if (!jumped)
				*off = pos + 2;
			jumped = 1;
			limit = pos;
			pos = target;
			continue;
		}
		if ((c & 0xC0) != 0)
			return -1; /* 0x40 and 0x80: extended label types, refused */
		if (c == 0) {
			if (!jumped)
				*off = pos + 1;
			break;
		}
		if (pos + 1 + c > len || pos + 1 + c > limit)
			return -1;
		wire_len += 1 + (size_t)c;
		if (wire_len + 1 > 255)
			return -1;
		if (out_len > 0)
			out[out_len++] = '.';
		for (size_t i = 0; i < c; i++) {
			unsigned char b = msg[pos + 1 + i];

			if (b <= 0x20 || b >= 0x7F || b == '.')
				*plain = 0;
			if (b >= 'A' && b <= 'Z')
				b = (unsigned char)(b - 'A' + 'a');
			out[out_len++] = (char)b;
		}
		pos += 1 + c;
	}
	out[out_len] = '\0';
	return 0;
}

/* Names compare without case and without a final dot. */
static int
name_equal(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);

	if (la > 0 && a[la - 1] == '.')
		la--;
	if (lb > 0 && b[lb - 1] == '.')
		lb--;
	return la == lb && strncasecmp(a, b, la) == 0;
}

static uint16_t
get16(const unsigned char *p)
{
	return (uint16_t)((p[0] << 8) | p[1]);
}

/* Join a TXT record's character-strings into rec; -1 when they overrun the rdata. A record
 * longer than DNS_MAX_RDATA is kept with len 0 (it cannot match a 43-byte digest). */
static int
read_txt(const unsigned char *rdata, size_t rdlen, struct dns_record *rec)
{
	size_t pos = 0, total = 0;
	int too_long = 0;

	if (rdlen == 0)
		return -1;
	while (pos < rdlen) {
		size_t n = rdata[pos];

		if (pos + 1 + n > rdlen)
			return -1;
		if (total + n > DNS_MAX_RDATA)
			too_long = 1;
		else
			memcpy(rec->data + total, rdata + pos + 1, n);
		total += n;
		pos += 1 + n;
	}
	rec->len = too_long ? 0 : (uint16_t)total;
	return 0;
}

#define MALFORMED(...)                                                                             \
	do {                                                                                       \
		ac_err_set(err, AC_ERR_INVALID, "dns_malformed", __VA_ARGS__);                     \
		goto out;                                                                          \
	} while (0)

int
dns_parse_response(const unsigned char *msg, size_t len, uint16_t id, const char *qname,
                   uint16_t qtype, struct dns_answer *out, struct ac_err *err)
{
	char name[DNS_MAX_NAME + 1];
	char target[DNS_MAX_NAME + 1];
	size_t off = DNS_HEADER_LEN;
	unsigned qdcount, ancount;
	int plain, hops = 0, rc = -1;

	memset(out, 0, offsetof(struct dns_answer, records));
	if (strlen(qname) > DNS_MAX_NAME)
		MALFORMED("DNS name too long");
	snprintf(target, sizeof(target), "%s", qname);
	if (len < DNS_HEADER_LEN)
		MALFORMED("DNS response of %zu bytes is shorter than a header", len);
	if (get16(msg) != id)
		MALFORMED("DNS response carries another query's ID");
	if ((msg[2] & 0x80) == 0 || (msg[2] & 0x78) != 0)
		MALFORMED("DNS message is not a response to a standard query");
	out->truncated = (msg[2] & 0x02) != 0;
	out->rcode = msg[3] & 0x0F;
	qdcount = get16(msg + 4);
	ancount = get16(msg + 6);
	if (qdcount != 1)
		MALFORMED("DNS response holds %u questions, want 1", qdcount);
	if (read_name(msg, len, &off, name, &plain) != 0)
		MALFORMED("DNS response: malformed question name");
	if (off + 4 > len)
		MALFORMED("DNS response: question cut short");
	if (!plain || !name_equal(name, qname) || get16(msg + off) != qtype ||
	    get16(msg + off + 2) != DNS_CLASS_IN)
		MALFORMED("DNS response answers another question");
	off += 4;
	if (out->truncated) {
		rc = 0; /* the caller asks again over TCP; the records may be cut */
		goto out;
	}
	for (unsigned i = 0; i < ancount; i++) {
		uint16_t type, class, rdlen;
		size_t rdata_off;
		int owner_plain;

		if (read_name(msg, len, &off, name, &owner_plain) != 0)
			MALFORMED("DNS response: malformed name in answer %u", i + 1);
		if (off + 10 > len)
			MALFORMED("DNS response: answer %u cut short", i + 1);
		type = get16(msg + off);
		class = get16(msg + off + 2);
		rdlen = get16(msg + off + 8);
		rdata_off = off + 10;
		if (rdata_off + rdlen > len)
			MALFORMED("DNS response: answer %u overruns the message", i + 1);
		off = rdata_off + rdlen;
		if (class != DNS_CLASS_IN || !owner_plain || !name_equal(name, target))
			continue;
		if (type == DNS_TYPE_CNAME && qtype != DNS_TYPE_CNAME) {
			size_t cname_off = rdata_off;
			int cname_plain;

			if (++hops > DNS_MAX_CNAME_HOPS)
				MALFORMED("DNS response: more than %d CNAMEs", DNS_MAX_CNAME_HOPS);
			if (read_name(msg, rdata_off + rdlen, &cname_off, name, &cname_plain) !=
			        0 ||
			    cname_off != rdata_off + rdlen)
				MALFORMED("DNS response: malformed CNAME in answer %u", i + 1);
			if (!cname_plain)
				MALFORMED("DNS response: CNAME target is not a host name");
			memcpy(target, name, sizeof(target));
			continue;
		}
		if (type != qtype)
			continue;
		if (out->count == DNS_MAX_RECORDS)
			continue; /* more than we look at; the first ones decide */
		{
			struct dns_record *rec = &out->records[out->count];

			rec->type = type;
			if (type == DNS_TYPE_A || type == DNS_TYPE_AAAA) {
				size_t want = type == DNS_TYPE_A ? 4 : 16;

				if (rdlen != want)
					MALFORMED("DNS response: address record of %u bytes",
					          rdlen);
				memcpy(rec->data, msg + rdata_off, want);
				rec->len = (uint16_t)want;
			} else if (type == DNS_TYPE_TXT) {
				if (read_txt(msg + rdata_off, rdlen, rec) != 0)
					MALFORMED("DNS response: malformed TXT record in answer %u",
					          i + 1);
			} else {
				if (rdlen > DNS_MAX_RDATA)
					continue;
				memcpy(rec->data, msg + rdata_off, rdlen);
				rec->len = rdlen;
			}
			out->count++;
		}
	}
	rc = 0;
out:
	if (rc != 0)
		out->count = 0;
	return rc;
}

/* Fill a sockaddr for server. */
static socklen_t
server_sockaddr(const struct dns_server *server, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (server->family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons(server->port);
		memcpy(&sin->sin_addr, server->addr, 4);
		return sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(server->port);
		memcpy(&sin6->sin6_addr, server->addr, 16);
		return sizeof(*sin6);
	}
}

int
dns_wait_fd(int fd, short events, int64_t deadline_ms)
{
	for (;;) {
		struct pollfd pfd = {.fd = fd, .events = events};
		int64_t left = deadline_ms - dns_monotonic_ms();
		int n;

		if (left <= 0)
			return 0;
		n = poll(&pfd, 1, left > 60000 ? 60000 : (int)left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n > 0)
			return 1;
	}
}

static const char *
family_text(const struct dns_server *server, char *buf, size_t len)
{
	char addr[INET6_ADDRSTRLEN];

	inet_ntop(server->family, server->addr, addr, sizeof(addr));
	snprintf(buf, len, server->family == AF_INET6 ? "[%s]:%u" : "%s:%u", addr, server->port);
	return buf;
}

/* One question of an exchange: the query as sent and where its answer goes. */
struct dns_question {
	const char *qname;
	uint16_t qtype, id;
	unsigned char query[DNS_HEADER_LEN + 260 + 4];
	size_t qlen;
	struct dns_answer *out;
	int answered;
};

/*
 * One exchange over UDP for up to DNS_MAX_QUESTIONS questions on one socket: every question
 * is sent at once, each datagram is matched to the unanswered question whose ID and
 * question it carries, and the unanswered ones are sent again every DNS_UDP_RETRY_MS;
 * foreign datagrams are dropped. After a datagram the socket is read again before polling
 * (the other answer is usually there already).
 */
static int
lookup_udp(const struct dns_server *server, struct dns_question *qs, size_t nq, int64_t deadline_ms,
           struct ac_err *err)
{
	struct sockaddr_storage ss;
	socklen_t sslen = server_sockaddr(server, &ss);
	unsigned char *buf = NULL;
	char where[80];
	size_t left = nq;
	int fd = -1, rc = -1;

	family_text(server, where, sizeof(where));
	buf = malloc(DNS_UDP_MAX);
	if (buf == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		goto out;
	}
	fd = socket(server->family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&ss, sslen) != 0) {
		ac_err_set(err, AC_ERR_UNAVAILABLE, "dns_unreachable", "DNS server %s: %s", where,
		           strerror(errno));
		goto out;
	}
	while (dns_monotonic_ms() < deadline_ms) {
		int64_t retry_at = dns_monotonic_ms() + DNS_UDP_RETRY_MS;
		int read_first = 0;

		for (size_t i = 0; i < nq; i++) {
			if (qs[i].answered)
				continue;
			if (send(fd, qs[i].query, qs[i].qlen, 0) != (ssize_t)qs[i].qlen) {
				ac_err_set(err, AC_ERR_UNAVAILABLE, "dns_unreachable",
				           "DNS server %s: %s", where, strerror(errno));
				goto out;
			}
		}
		for (;;) {
			int64_t until = retry_at < deadline_ms ? retry_at : deadline_ms;
			ssize_t n;

			if (!read_first) {
				int ready = dns_wait_fd(fd, POLLIN, until);

				if (ready == 0)
					break;
				if (ready < 0)
					goto unreachable;
			}
			n = recv(fd, buf, DNS_UDP_MAX, 0);
			read_first = 0;
			if (n < 0 && (errno == EAGAIN || errno == EINTR))
				continue;
			if (n < 0)
				goto unreachable; /* ECONNREFUSED: nothing listens */
			for (size_t i = 0; i < nq; i++) {
				struct ac_err ignored;

				if (qs[i].answered || n < 2 || get16(buf) != qs[i].id)
					continue;
				ac_err_clear(&ignored);
				if (dns_parse_response(buf, (size_t)n, qs[i].id, qs[i].qname,
				                       qs[i].qtype, qs[i].out, &ignored) == 0) {
					qs[i].answered = 1;
					left--;
				}
				break;
			}
			/* Not our answer (or garbage): keep waiting for the real one. */
			if (left == 0) {
				rc = 0;
				goto out;
			}
			read_first = 1;
		}
	}
	for (size_t i = 0; i < nq; i++) {
		if (!qs[i].answered) {
			ac_err_set(err, AC_ERR_UNAVAILABLE, "dns_timeout",
			           "DNS server %s did not answer the query for %s in time", where,
			           qs[i].qname);
			break;
		}
	}
	goto out;
unreachable:
	ac_err_set(err, AC_ERR_UNAVAILABLE, "dns_unreachable", "DNS server %s: %s", where,
	           strerror(errno));
out:
	if (fd >= 0)
		close(fd);
	free(buf);
	return rc;
}

/* Write or read exactly len bytes on a non-blocking socket before the deadline. */
static int
tcp_io(int fd, unsigned char *buf, size_t len, int writing, int64_t deadline_ms)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = writing ? send(fd, buf + done, len - done, MSG_NOSIGNAL)
		                    : recv(fd, buf + done, len - done, 0);

		if (n > 0) {
			done += (size_t)n;
			continue;
		}
		if (n == 0)
			return -1;
		if (errno != EAGAIN && errno != EINTR)
			return -1;
		if (dns_wait_fd(fd, writing ? POLLOUT : POLLIN, deadline_ms) != 1)
			return -1;
	}
	return 0;
}

/* One exchange over TCP (RFC 1035 4.2.2: two length bytes before each message). */
static int
lookup_tcp(const struct dns_server *server, const unsigned char *query, size_t qlen, uint16_t id,
           const char *qname, uint16_t qtype, int64_t deadline_ms, struct dns_answer *out,
           struct ac_err *err)
{
	struct sockaddr_storage ss;
	socklen_t sslen = server_sockaddr(server, &ss);
	unsigned char *buf = NULL, prefix[2];
	char where[80];
	size_t rlen;
	int fd = -1, rc = -1, soerr = 0;
	socklen_t soerr_len = sizeof(soerr);

	family_text(server, where, sizeof(where));
	buf = malloc(DNS_TCP_MAX + 2);
	if (buf == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		goto out;
	}
	fd = socket(server->family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		goto fail;
	if (connect(fd, (struct sockaddr *)&ss, sslen) != 0) {
		if (errno != EINPROGRESS)
			goto fail;
		if (dns_wait_fd(fd, POLLOUT, deadline_ms) != 1) {
			errno = ETIMEDOUT;
			goto fail;
		}
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &soerr_len) != 0 || soerr != 0) {
			errno = soerr;
			goto fail;
		}
	}
	buf[0] = (unsigned char)(qlen >> 8);
	buf[1] = (unsigned char)qlen;
	memcpy(buf + 2, query, qlen);
	if (tcp_io(fd, buf, qlen + 2, 1, deadline_ms) != 0 ||
	    tcp_io(fd, prefix, 2, 0, deadline_ms) != 0)
		goto fail;
	rlen = get16(prefix);
	if (tcp_io(fd, buf, rlen, 0, deadline_ms) != 0)
		goto fail;
	if (dns_parse_response(buf, rlen, id, qname, qtype, out, err) != 0)
		goto out;
	if (out->truncated) {
		ac_err_set(err, AC_ERR_INVALID, "dns_malformed",
		           "DNS server %s sent a truncated answer over TCP", where);
		goto out;
	}
	rc = 0;
	goto out;
fail:
	ac_err_set(err, AC_ERR_UNAVAILABLE, "dns_unreachable", "DNS server %s over TCP: %s", where,
	           errno != 0 ? strerror(errno) : "connection closed");
out:
	if (fd >= 0)
		close(fd);
	free(buf);
	return rc;
}

int
dns_lookup_each(const struct dns_server *server, const char *qname, const uint16_t *qtypes,
                size_t nq, int64_t deadline_ms, struct dns_answer *outs, struct ac_err *err)
{
	struct dns_question qs[DNS_MAX_QUESTIONS];
	unsigned char idbytes[2 * DNS_MAX_QUESTIONS];

	if (nq == 0 || nq > DNS_MAX_QUESTIONS) {
		ac_err_set(err, AC_ERR_INTERNAL, "dns_internal", "%zu DNS questions at once", nq);
		return -1;
	}
	if (RAND_bytes(idbytes, (int)sizeof(idbytes)) != 1)
		return ac_err_ssl(err, AC_ERR_CRYPTO, "rand_failed", "DNS query ID");
	memset(qs, 0, sizeof(qs));
	for (size_t i = 0; i < nq; i++) {
		qs[i].qname = qname;
		qs[i].qtype = qtypes[i];
		qs[i].id = get16(idbytes + 2 * i);
		/* Distinct IDs, so a datagram answers at most one of the questions. */
		for (size_t j = 0; j < i; j++)
			if (qs[j].id == qs[i].id)
				qs[i].id = (uint16_t)(qs[i].id + 1 + j);
		qs[i].out = &outs[i];
		if (dns_build_query(qs[i].query, sizeof(qs[i].query), qs[i].id, qname, qtypes[i],
		                    &qs[i].qlen, err) != 0)
			return -1;
	}
	if (lookup_udp(server, qs, nq, deadline_ms, err) != 0)
		return -1;
	for (size_t i = 0; i < nq; i++) {
		if (outs[i].truncated &&
		    lookup_tcp(server, qs[i].query, qs[i].qlen, qs[i].id, qname, qtypes[i],
		               deadline_ms, &outs[i], err) != 0)
			return -1;
	}
	return 0;
}

int
dns_lookup(const struct dns_server *server, const char *qname, uint16_t qtype, int64_t deadline_ms,
           struct dns_answer *out, struct ac_err *err)
{
	return dns_lookup_each(server, qname, &qtype, 1, deadline_ms, out, err);
}
