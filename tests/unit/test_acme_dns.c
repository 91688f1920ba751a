/*
 * test_acme_dns.c - the validation authority's DNS client (enrollment/
 * acme_validate_dnsclient.h): the parser on well-formed answers (TXT split in strings, CNAME
 * chains, compression) and on hostile ones (pointer loops and forward pointers, overlong
 * labels and names, lengths past the end, another ID or question, queries posing as
 * answers), and the exchange itself against a small UDP+TCP server in this file: truncated
 * UDP answers are asked again over TCP, a datagram with a foreign ID is ignored.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "enrollment/acme_validate_dnsclient.h"

#define QNAME "_acme-challenge.example.test"

/* A message being built. */
struct msg {
	unsigned char b[4096];
	size_t n;
};

static void
put8(struct msg *m, unsigned v)
{
	assert_true(m->n < sizeof(m->b));
	m->b[m->n++] = (unsigned char)v;
}

static void
put16(struct msg *m, unsigned v)
{
	put8(m, v >> 8);
	put8(m, v & 0xFF);
}

static void
put_bytes(struct msg *m, const void *p, size_t n)
{
	assert_true(m->n + n <= sizeof(m->b));
	memcpy(m->b + m->n, p, n);
	m->n += n;
}

/* A name in wire form, uncompressed. */
static void
put_name(struct msg *m, const char *name)
{
	while (*name != '\0') {
		const char *dot = strchr(name, '.');
		size_t n = dot != NULL ? (size_t)(dot - name) : strlen(name);

		put8(m, (unsigned)n);
		put_bytes(m, name, n);
		name += n + (dot != NULL ? 1 : 0);
	}
	put8(m, 0);
}

/* Header and question of a response to (id, qname, qtype); flags: QR, RD, RA and rcode. */
static void
begin(struct msg *m, uint16_t id, unsigned flags, unsigned ancount, const char *qname,
      unsigned qtype)
{
	m->n = 0;
	put16(m, id);
	put16(m, flags);
	put16(m, 1);
	put16(m, ancount);
	put16(m, 0);
	put16(m, 0);
	put_name(m, qname);
	put16(m, qtype);
	put16(m, 1);
}

#define RESPONSE 0x8180

/* One resource record header with owner at offset 12 (the question's name). */
static void
rr_header_ptr(struct msg *m, unsigned type, unsigned rdlen)
{
	put16(m, 0xC00C);
	put16(m, type);
	put16(m, 1);
	put16(m, 0);
	put16(m, 60);
	put16(m, rdlen);
}

static int
parse(const struct msg *m, uint16_t id, const char *qname, unsigned qtype, struct dns_answer *ans)
{
	struct ac_err err;

	ac_err_clear(&err);
	return dns_parse_response(m->b, m->n, id, qname, (uint16_t)qtype, ans, &err);
}

static struct dns_answer ans;

static void
test_txt_answer(void **state)
{
	struct msg m;
	(void)state;

	begin(&m, 0x1234, RESPONSE, 2, QNAME, DNS_TYPE_TXT);
	/* One record split in two strings, one in one string. */
	rr_header_ptr(&m, DNS_TYPE_TXT, 1 + 3 + 1 + 4);
	put8(&m, 3);
	put_bytes(&m, "abc", 3);
	put8(&m, 4);
	put_bytes(&m, "defg", 4);
	rr_header_ptr(&m, DNS_TYPE_TXT, 1 + 2);
	put8(&m, 2);
	put_bytes(&m, "xy", 2);
	assert_int_equal(parse(&m, 0x1234, QNAME, DNS_TYPE_TXT, &ans), 0);
	assert_int_equal(ans.rcode, 0);
	assert_int_equal(ans.count, 2);
	assert_int_equal(ans.records[0].len, 7);
	assert_memory_equal(ans.records[0].data, "abcdefg", 7);
	assert_int_equal(ans.records[1].len, 2);
	/* Case and a final dot do not matter. */
	assert_int_equal(parse(&m, 0x1234, "_ACME-challenge.Example.TEST.", DNS_TYPE_TXT, &ans), 0);
	assert_int_equal(ans.count, 2);
}

static void
test_cname_chain(void **state)
{
	struct msg m;
	size_t target_off;
	(void)state;

	begin(&m, 7, RESPONSE, 3, QNAME, DNS_TYPE_TXT);
	/* A record for another name first: ignored. */
	put_name(&m, "unrelated.test");
	put16(&m, DNS_TYPE_TXT);
	put16(&m, 1);
	put16(&m, 0);
	put16(&m, 60);
	put16(&m, 2);
	put8(&m, 1);
	put8(&m, 'z');
	/* QNAME CNAME delegated.test */
	rr_header_ptr(&m, DNS_TYPE_CNAME, 16);
	target_off = m.n;
	put_name(&m, "delegated.test");
	/* delegated.test (compressed) TXT "ok" */
	put16(&m, 0xC000 | (unsigned)target_off);
	put16(&m, DNS_TYPE_TXT);
	put16(&m, 1);
	put16(&m, 0);
	put16(&m, 60);
	put16(&m, 3);
	put8(&m, 2);
	put_bytes(&m, "ok", 2);
	assert_int_equal(parse(&m, 7, QNAME, DNS_TYPE_TXT, &ans), 0);
	assert_int_equal(ans.count, 1);
	assert_memory_equal(ans.records[0].data, "ok", 2);
}

static void
test_addresses_and_rcode(void **state)
{
	struct msg m;
	static const unsigned char v4[4] = {192, 0, 2, 7};
	(void)state;

	begin(&m, 9, RESPONSE, 1, "host.test", DNS_TYPE_A);
	rr_header_ptr(&m, DNS_TYPE_A, 4);
	put_bytes(&m, v4, 4);
	assert_int_equal(parse(&m, 9, "host.test", DNS_TYPE_A, &ans), 0);
	assert_int_equal(ans.count, 1);
	assert_memory_equal(ans.records[0].data, v4, 4);
	/* An A record of 5 bytes is malformed. */
	begin(&m, 9, RESPONSE, 1, "host.test", DNS_TYPE_A);
	rr_header_ptr(&m, DNS_TYPE_A, 5);
	put_bytes(&m, "12345", 5);
	assert_int_equal(parse(&m, 9, "host.test", DNS_TYPE_A, &ans), -1);
	/* NXDOMAIN is an answer, with no records. */
	begin(&m, 9, RESPONSE | DNS_RCODE_NXDOMAIN, 0, "host.test", DNS_TYPE_A);
	assert_int_equal(parse(&m, 9, "host.test", DNS_TYPE_A, &ans), 0);
	assert_int_equal(ans.rcode, DNS_RCODE_NXDOMAIN);
	assert_int_equal(ans.count, 0);
}

static void
test_not_our_answer(void **state)
{
	struct msg m;
	(void)state;

	begin(&m, 100, RESPONSE, 0, QNAME, DNS_TYPE_TXT);
	assert_int_equal(parse(&m, 101, QNAME, DNS_TYPE_TXT, &ans), -1); /* another ID */
	assert_int_equal(parse(&m, 100, "_acme-challenge.other.test", DNS_TYPE_TXT, &ans), -1);
	assert_int_equal(parse(&m, 100, QNAME, DNS_TYPE_A, &ans), -1); /* another type */
	begin(&m, 100, 0x0100, 0, QNAME, DNS_TYPE_TXT);                /* a query, QR=0 */
	assert_int_equal(parse(&m, 100, QNAME, DNS_TYPE_TXT, &ans), -1);
	begin(&m, 100, RESPONSE, 0, QNAME, DNS_TYPE_TXT);
	m.b[5] = 2; /* QDCOUNT 2 */
	assert_int_equal(parse(&m, 100, QNAME, DNS_TYPE_TXT, &ans), -1);
	for (size_t cut = 0; cut < m.n; cut++) { /* every truncation of a valid message */
		struct msg t = m;

		t.b[5] = 1;
		t.n = cut;
		assert_int_equal(parse(&t, 100, QNAME, DNS_TYPE_TXT, &ans), -1);
	}
}

static void
test_hostile_names(void **state)
{
	struct msg m;
	(void)state;

	/* The answer's owner is a pointer to itself. */
	begin(&m, 1, RESPONSE, 1, QNAME, DNS_TYPE_TXT);
	put16(&m, 0xC000 | (unsigned)m.n);
	put16(&m, DNS_TYPE_TXT);
	put16(&m, 1);
	put16(&m, 0);
	put16(&m, 60);
	put16(&m, 2);
	put8(&m, 1);
	put8(&m, 'a');
	assert_int_equal(parse(&m, 1, QNAME, DNS_TYPE_TXT, &ans), -1);

	/* A forward pointer (into the record's own data). */
	begin(&m, 1, RESPONSE, 1, QNAME, DNS_TYPE_TXT);
	put16(&m, 0xC000 | (unsigned)(m.n + 12));
	put16(&m, DNS_TYPE_TXT);
	put16(&m, 1);
	put16(&m, 0);
	put16(&m, 60);
	put16(&m, 2);
	put8(&m, 0);
	put8(&m, 0);
	assert_int_equal(parse(&m, 1, QNAME, DNS_TYPE_TXT, &ans), -1);

	/* Two pointers pointing at each other: the second one points forward. */
	begin(&m, 1, RESPONSE, 1, QNAME, DNS_TYPE_TXT);
	{
		size_t a = m.n;

		put16(&m, 0xC000 | (unsigned)(a + 2));
		put16(&m, 0xC000 | (unsigned)a);
	}
	assert_int_equal(parse(&m, 1, QNAME, DNS_TYPE_TXT, &ans), -1);

	/* A label of 64 bytes in the question. */
	m.n = 0;
	put16(&m, 1);
	put16(&m, RESPONSE);
	put16(&m, 1);
	put16(&m, 0);
	put16(&m, 0);
	put16(&m, 0);
	put8(&m, 64);
	for (int i = 0; i < 64; i++)
		put8(&m, 'a');
	put8(&m, 0);
	put16(&m, DNS_TYPE_TXT);
	put16(&m, 1);
	assert_int_equal(parse(&m, 1, QNAME, DNS_TYPE_TXT, &ans), -1);

	/* A name of more than 255 bytes made of pointers to pointers: 3 hops of 61 bytes are
	 * a valid name, 5 are not. */
	for (int hops = 3; hops <= 5; hops += 2) {
		size_t prev = 0, rdlen_at, chain_start;

		begin(&m, 1, RESPONSE, 2, QNAME, DNS_TYPE_TXT);
		/* Record 1: an unrelated owner, a type we skip, the hops in its data. */
		put_name(&m, "x.test");
		put16(&m, 99);
		put16(&m, 1);
		put16(&m, 0);
		put16(&m, 60);
		rdlen_at = m.n;
		put16(&m, 0);
		chain_start = m.n;
		for (int hop = 0; hop < hops; hop++) {
			size_t here = m.n;

			put8(&m, 60);
			for (int i = 0; i < 60; i++)
				put8(&m, 'b');
			if (hop == 0)
				put8(&m, 0);
			else
				put16(&m, 0xC000 | (unsigned)prev);
			prev = here;
		}
		m.b[rdlen_at] = (unsigned char)((m.n - chain_start) >> 8);
		m.b[rdlen_at + 1] = (unsigned char)(m.n - chain_start);
		/* Record 2: its owner is the last hop. */
		put16(&m, 0xC000 | (unsigned)prev);
		put16(&m, DNS_TYPE_TXT);
		put16(&m, 1);
		put16(&m, 0);
		put16(&m, 60);
		put16(&m, 2);
		put8(&m, 1);
		put8(&m, 'a');
		assert_int_equal(parse(&m, 1, QNAME, DNS_TYPE_TXT, &ans), hops == 3 ? 0 : -1);
		assert_int_equal(ans.count, 0);
	}

	/* Extended label types (0x40, 0x80) are refused. */
	begin(&m, 1, RESPONSE, 1, QNAME, DNS_TYPE_TXT);
	put8(&m, 0x41);
	put8(&m, 0);
	assert_int_equal(parse(&m, 1, QNAME, DNS_TYPE_TXT, &ans), -1);
}

static void
test_hostile_lengths(void **state)
{
	struct msg m;
	(void)state;

	/* rdlength past the end of the message. */
	begin(&m, 2, RESPONSE, 1, QNAME, DNS_TYPE_TXT);
	rr_header_ptr(&m, DNS_TYPE_TXT, 200);
	put8(&m, 3);
	put_bytes(&m, "abc", 3);
	assert_int_equal(parse(&m, 2, QNAME, DNS_TYPE_TXT, &ans), -1);

	/* A character-string longer than its record. */
	begin(&m, 2, RESPONSE, 1, QNAME, DNS_TYPE_TXT);
	rr_header_ptr(&m, DNS_TYPE_TXT, 4);
	put8(&m, 9);
	put_bytes(&m, "abc", 3);
	assert_int_equal(parse(&m, 2, QNAME, DNS_TYPE_TXT, &ans), -1);

	/* ANCOUNT says 5, the message holds 1. */
	begin(&m, 2, RESPONSE, 5, QNAME, DNS_TYPE_TXT);
	rr_header_ptr(&m, DNS_TYPE_TXT, 2);
	put8(&m, 1);
	put8(&m, 'a');
	assert_int_equal(parse(&m, 2, QNAME, DNS_TYPE_TXT, &ans), -1);

	/* A CNAME loop: a -> b -> a ... stops after a bounded number of hops. */
	begin(&m, 2, RESPONSE, 20, "a.test", DNS_TYPE_TXT);
	for (int i = 0; i < 10; i++) {
		put_name(&m, "a.test");
		put16(&m, DNS_TYPE_CNAME);
		put16(&m, 1);
		put16(&m, 0);
		put16(&m, 60);
		put16(&m, 8);
		put_name(&m, "b.test");
		put_name(&m, "b.test");
		put16(&m, DNS_TYPE_CNAME);
		put16(&m, 1);
		put16(&m, 0);
		put16(&m, 60);
		put16(&m, 8);
		put_name(&m, "a.test");
	}
	assert_int_equal(parse(&m, 2, "a.test", DNS_TYPE_TXT, &ans), -1);

	/* More records than kept: the first DNS_MAX_RECORDS count, the parse succeeds. */
	begin(&m, 2, RESPONSE, DNS_MAX_RECORDS + 5, QNAME, DNS_TYPE_TXT);
	for (int i = 0; i < DNS_MAX_RECORDS + 5; i++) {
		rr_header_ptr(&m, DNS_TYPE_TXT, 2);
		put8(&m, 1);
		put8(&m, 'a' + i);
	}
	assert_int_equal(parse(&m, 2, QNAME, DNS_TYPE_TXT, &ans), 0);
	assert_int_equal(ans.count, DNS_MAX_RECORDS);
}

static void
test_query_and_server_syntax(void **state)
{
	unsigned char buf[512];
	size_t len;
	struct ac_err err;
	struct dns_server s;
	char long_label[80];
	(void)state;

	ac_err_clear(&err);
	assert_int_equal(dns_build_query(buf, sizeof(buf), 0xBEEF, QNAME, DNS_TYPE_TXT, &len, &err),
	                 0);
	assert_int_equal(len, 12 + strlen(QNAME) + 2 + 4);
	assert_int_equal(buf[0], 0xBE);
	assert_int_equal(buf[1], 0xEF);
	memset(long_label, 'a', 64);
	long_label[64] = '\0';
	assert_int_equal(dns_build_query(buf, sizeof(buf), 1, long_label, DNS_TYPE_A, &len, &err),
	                 -1);
	ac_err_clear(&err);
	assert_int_equal(dns_build_query(buf, sizeof(buf), 1, "a..b", DNS_TYPE_A, &len, &err), -1);

	ac_err_clear(&err);
	assert_int_equal(dns_server_parse("127.0.0.1:8053", &s, &err), 0);
	assert_int_equal(s.port, 8053);
	assert_int_equal(dns_server_parse("[::1]:53", &s, &err), 0);
	assert_int_equal(s.family, AF_INET6);
	assert_int_equal(dns_server_parse("::1:53", &s, &err), -1);
	ac_err_clear(&err);
	assert_int_equal(dns_server_parse("127.0.0.1:0", &s, &err), -1);
	ac_err_clear(&err);
	assert_int_equal(dns_server_parse("ns.example:53", &s, &err), -1);
}

/* ---- the exchange, against a server in this file ---- */

struct fake_server {
	int udp_fd, tcp_fd, port;
	pthread_t thread;
	const char *txt; /* what the TCP answer holds */
};

/* A response to query q (the question copied) with the given flags and one TXT record. */
static void
answer_for(const unsigned char *q, size_t qlen, unsigned flags, uint16_t id, const char *txt,
           struct msg *m)
{
	m->n = 0;
	put16(m, id);
	put16(m, flags);
	put16(m, 1);
	put16(m, txt != NULL ? 1 : 0);
	put16(m, 0);
	put16(m, 0);
	put_bytes(m, q + 12, qlen - 12);
	if (txt != NULL) {
		rr_header_ptr(m, DNS_TYPE_TXT, (unsigned)(1 + strlen(txt)));
		put8(m, (unsigned)strlen(txt));
		put_bytes(m, txt, strlen(txt));
	}
}

/* UDP: answer first with a foreign ID, then with TC set. TCP: the real answer. */
static void *
fake_server_main(void *arg)
{
	struct fake_server *s = arg;
	unsigned char q[512], lenbuf[2];
	struct sockaddr_storage from;
	socklen_t fromlen = sizeof(from);
	struct msg m;
	ssize_t n;
	int conn;
	uint16_t id;

	n = recvfrom(s->udp_fd, q, sizeof(q), 0, (struct sockaddr *)&from, &fromlen);
	if (n < 12)
		return NULL;
	id = (uint16_t)((q[0] << 8) | q[1]);
	answer_for(q, (size_t)n, RESPONSE, (uint16_t)(id ^ 0x5555), "spoofed", &m);
	sendto(s->udp_fd, m.b, m.n, 0, (struct sockaddr *)&from, fromlen);
	answer_for(q, (size_t)n, RESPONSE | 0x0200, id, NULL, &m);
	sendto(s->udp_fd, m.b, m.n, 0, (struct sockaddr *)&from, fromlen);

	conn = accept(s->tcp_fd, NULL, NULL);
	if (conn < 0)
		return NULL;
	if (recv(conn, lenbuf, 2, MSG_WAITALL) == 2) {
		size_t qlen = (size_t)((lenbuf[0] << 8) | lenbuf[1]);

		if (qlen <= sizeof(q) && recv(conn, q, qlen, MSG_WAITALL) == (ssize_t)qlen) {
			unsigned char out[2];

			id = (uint16_t)((q[0] << 8) | q[1]);
			answer_for(q, qlen, RESPONSE, id, s->txt, &m);
			out[0] = (unsigned char)(m.n >> 8);
			out[1] = (unsigned char)m.n;
			send(conn, out, 2, 0);
			send(conn, m.b, m.n, 0);
		}
	}
	close(conn);
	return NULL;
}

static void
test_truncated_then_tcp(void **state)
{
	struct fake_server s = {.txt = "over-tcp"};
	struct sockaddr_in sin = {.sin_family = AF_INET};
	socklen_t len = sizeof(sin);
	struct dns_server server;
	struct ac_err err;
	(void)state;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	s.tcp_fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(bind(s.tcp_fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(s.tcp_fd, 4), 0);
	assert_int_equal(getsockname(s.tcp_fd, (struct sockaddr *)&sin, &len), 0);
	s.port = ntohs(sin.sin_port);
	s.udp_fd = socket(AF_INET, SOCK_DGRAM, 0);
	assert_int_equal(bind(s.udp_fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(pthread_create(&s.thread, NULL, fake_server_main, &s), 0);

	memset(&server, 0, sizeof(server));
	server.family = AF_INET;
	server.port = (uint16_t)s.port;
	memcpy(server.addr, &sin.sin_addr, 4);
	ac_err_clear(&err);
	assert_int_equal(
	    dns_lookup(&server, QNAME, DNS_TYPE_TXT, dns_monotonic_ms() + 5000, &ans, &err), 0);
	assert_int_equal(ans.count, 1);
	assert_int_equal(ans.records[0].len, 8);
	assert_memory_equal(ans.records[0].data, "over-tcp", 8);
	pthread_join(s.thread, NULL);
	close(s.tcp_fd);
	close(s.udp_fd);
}

/* Two questions at once (dns_lookup_each): the server reads both from one socket and
 * answers the second first, with a datagram carrying a foreign ID in between. */
static void *
pair_server_main(void *arg)
{
	struct fake_server *s = arg;
	unsigned char q[2][512];
	ssize_t n[2];
	struct sockaddr_storage from;
	socklen_t fromlen;
	struct msg m;
	uint16_t id[2];

	for (int i = 0; i < 2; i++) {
		fromlen = sizeof(from);
		n[i] =
		    recvfrom(s->udp_fd, q[i], sizeof(q[i]), 0, (struct sockaddr *)&from, &fromlen);
		if (n[i] < 12)
			return NULL;
		id[i] = (uint16_t)((q[i][0] << 8) | q[i][1]);
	}
	answer_for(q[1], (size_t)n[1], RESPONSE, id[1], "second", &m);
	sendto(s->udp_fd, m.b, m.n, 0, (struct sockaddr *)&from, fromlen);
	answer_for(q[0], (size_t)n[0], RESPONSE, (uint16_t)(id[0] ^ id[1] ^ 0x5555), "spoofed", &m);
	sendto(s->udp_fd, m.b, m.n, 0, (struct sockaddr *)&from, fromlen);
	answer_for(q[0], (size_t)n[0], RESPONSE, id[0], "first", &m);
	sendto(s->udp_fd, m.b, m.n, 0, (struct sockaddr *)&from, fromlen);
	return NULL;
}

static void
test_two_questions_one_socket(void **state)
{
	static struct dns_answer pair[2];
	const uint16_t types[2] = {DNS_TYPE_TXT, DNS_TYPE_A};
	struct fake_server s = {.tcp_fd = -1};
	struct sockaddr_in sin = {.sin_family = AF_INET};
	socklen_t len = sizeof(sin);
	struct dns_server server;
	struct ac_err err;
	(void)state;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	s.udp_fd = socket(AF_INET, SOCK_DGRAM, 0);
	assert_int_equal(bind(s.udp_fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(getsockname(s.udp_fd, (struct sockaddr *)&sin, &len), 0);
	assert_int_equal(pthread_create(&s.thread, NULL, pair_server_main, &s), 0);

	memset(&server, 0, sizeof(server));
	server.family = AF_INET;
	server.port = ntohs(sin.sin_port);
	memcpy(server.addr, &sin.sin_addr, 4);
	ac_err_clear(&err);
	assert_int_equal(
	    dns_lookup_each(&server, QNAME, types, 2, dns_monotonic_ms() + 5000, pair, &err), 0);
	/* The TXT question got the "first" answer; the A question's answer carried only a TXT
	 * record, which is not what it asked for. */
	assert_int_equal(pair[0].count, 1);
	assert_int_equal(pair[0].records[0].len, 5);
	assert_memory_equal(pair[0].records[0].data, "first", 5);
	assert_int_equal(pair[1].count, 0);
	assert_int_equal(pair[1].rcode, DNS_RCODE_NOERROR);
	pthread_join(s.thread, NULL);
	close(s.udp_fd);
	/* More questions than one exchange takes: refused before anything is sent. */
	assert_int_equal(
	    dns_lookup_each(&server, QNAME, types, 3, dns_monotonic_ms() + 5000, pair, &err), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_txt_answer),
	    cmocka_unit_test(test_cname_chain),
	    cmocka_unit_test(test_addresses_and_rcode),
	    cmocka_unit_test(test_not_our_answer),
	    cmocka_unit_test(test_hostile_names),
	    cmocka_unit_test(test_hostile_lengths),
	    cmocka_unit_test(test_query_and_server_syntax),
	    cmocka_unit_test(test_truncated_then_tcp),
	    cmocka_unit_test(test_two_questions_one_socket),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
