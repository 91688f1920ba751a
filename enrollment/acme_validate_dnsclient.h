/*
 * acme_validate_dnsclient.h - the validation authority's own small DNS stub client: one
 * question (A, AAAA or TXT), or two for the same name sent at once on one socket, to one
 * configured server over UDP, again over TCP when an answer is truncated.
 *
 * It is strict because every byte of the answer comes from outside: the message ID and the
 * question must be the ones asked, compression pointers may only point backwards and are
 * bounded in number, names are at most 255 bytes and labels 63, every length is checked
 * against the end of the message. Only records of the asked type and class IN whose owner is
 * the asked name (or a name it is aliased to by a CNAME in the same answer, at most 8 hops)
 * are kept, and at most DNS_MAX_RECORDS of them.
 */
#ifndef AGENTCA_ENROLLMENT_ACME_VALIDATE_DNSCLIENT_H
#define AGENTCA_ENROLLMENT_ACME_VALIDATE_DNSCLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

#define DNS_TYPE_A 1
#define DNS_TYPE_CNAME 5
#define DNS_TYPE_TXT 16
#define DNS_TYPE_AAAA 28

#define DNS_RCODE_NOERROR 0
#define DNS_RCODE_SERVFAIL 2
#define DNS_RCODE_NXDOMAIN 3

#define DNS_MAX_RECORDS 16
#define DNS_MAX_RDATA 512 /* a TXT record's strings, joined; longer ones are dropped */
#define DNS_MAX_NAME 255  /* presentation form without the final dot */

/* The records of one answer that match the question. For TXT, data holds the record's
 * character-strings joined (RFC 8555 8.4 compares the whole value); for A and AAAA the 4 or
 * 16 address bytes. */
struct dns_answer {
	int rcode;
	int truncated; /* TC was set: ask again over TCP */
	size_t count;
	struct dns_record {
		uint16_t type;
		uint16_t len;
		unsigned char data[DNS_MAX_RDATA];
	} records[DNS_MAX_RECORDS];
};

/* A DNS server: an IPv4 or IPv6 address and a port. */
struct dns_server {
	int family; /* AF_INET or AF_INET6 */
	unsigned char addr[16];
	uint16_t port;
};

/* Parse "ADDR:PORT" ("127.0.0.1:8053", "[::1]:53"), or NULL for the first nameserver line
 * of /etc/resolv.conf on port 53. */
int dns_server_parse(const char *text, struct dns_server *out, struct ac_err *err);

/* Write the query for (qname, qtype) with the given ID into buf (RD set). */
int dns_build_query(unsigned char *buf, size_t cap, uint16_t id, const char *qname, uint16_t qtype,
                    size_t *len, struct ac_err *err);

/* Check and parse one response to the query (id, qname, qtype). -1 with err when the
 * message is malformed or does not answer that question. */
int dns_parse_response(const unsigned char *msg, size_t len, uint16_t id, const char *qname,
                       uint16_t qtype, struct dns_answer *out, struct ac_err *err);

/* Milliseconds on the monotonic clock: the clock of every deadline in the validator. */
int64_t dns_monotonic_ms(void);

/* Wait until fd is ready for events (POLLIN, POLLOUT) or deadline_ms passes: 1 ready,
 * 0 timed out, -1 poll failed. */
int dns_wait_fd(int fd, short events, int64_t deadline_ms);

/* Ask server for (qname, qtype), giving up at deadline_ms (dns_monotonic_ms() clock). The
 * answer's rcode is left to the caller; -1 with err on a network failure or a timeout. */
int dns_lookup(const struct dns_server *server, const char *qname, uint16_t qtype,
               int64_t deadline_ms, struct dns_answer *out, struct ac_err *err);

#define DNS_MAX_QUESTIONS 2

/* Ask server for qname with nq (1..DNS_MAX_QUESTIONS) types at once, the queries sent
 * together on one UDP socket (each truncated answer asked again over TCP); outs[i] answers
 * qtypes[i]. 0 when every question is answered; -1 with err as dns_lookup. */
int dns_lookup_each(const struct dns_server *server, const char *qname, const uint16_t *qtypes,
                    size_t nq, int64_t deadline_ms, struct dns_answer *outs, struct ac_err *err);

#endif
