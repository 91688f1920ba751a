/*
 * proxy.c - the mTLS forwarding proxy's engine. See proxy.h for what it promises.
 *
 * Shape (after Redis ae.c and the API front): N worker threads, each with its own epoll
 * loop, its own listening socket per listener (SO_REUSEPORT spreads accepts across
 * workers), its own connections and its own cache of verified client chains (gateway-hook/
 * verify_cache.h). Workers share the TLS context slots, the revoked-serial set and the
 * counters (atomics), nothing else. Handshakes run in the library context of
 * gateway-hook/worker_libctx.h (worker_libctx_handshake), where parsing a certificate costs
 * about half.
 *
 * A connection walks through these states:
 *
 *   FIRST_BYTE    accepted; peek at the first byte. Not 0x16 (a TLS handshake record):
 *                 refused as "plaintext".
 *   HANDSHAKE     non-blocking SSL_accept with the current server context (client
 *                 certificate required, verified against the bundle).
 *   CONNECT       the peer is checked (revoked? allowed?) and only then the upstream
 *                 connect starts, non-blocking. The client is not read meanwhile.
 *   UP_HANDSHAKE  TLS upstreams: SSL_connect with the listener's client context, the
 *                 upstream's name checked and sent as SNI. Fails closed. A session ticket
 *                 the upstream gave an earlier connection of the same listener, under the
 *                 same client context, is offered for resumption (each ticket once).
 *   RELAY         bytes both ways.
 *
 * The relay: each direction has one fixed-size buffer taken from the worker's pool when
 * there is something to read and given back as soon as it is empty, so an idle session
 * holds no buffer. A side is not read while the buffer it fills is full: that is the
 * backpressure, both ways, and nothing grows without bound. EOF on one side (close_notify
 * or FIN) becomes, once its buffer is flushed, a half-close towards the other side
 * (SSL_shutdown + shutdown(SHUT_WR)); the session ends when both directions have ended, on
 * any error, on the idle timeout, or when the client's certificate is revoked or expires.
 *
 * The pump is level-triggered: it moves bytes until no transfer makes progress (or
 * PUMP_ROUNDS, so that one bulk transfer cannot starve the other sessions of the worker),
 * then registers interest in exactly what each blocked operation waits for (OpenSSL may
 * need to read in order to write and the reverse). Both TLS sides read ahead (one read(2)
 * takes what the socket has, not a record header and then its body), and a side whose last
 * read would block, or came back short with nothing left buffered in OpenSSL, is "quiet":
 * not read again until epoll reports it readable, so a one-way stream costs one read and one
 * write per record, not a failed read on the silent side too, and a ping-pong message one
 * read, not a second one that fails.
 *
 * Timers are a sweep every PROXY_SWEEP_MS over the worker's connections: deadlines,
 * certificate expiry and, when the revocation generation moved, revoked serials.
 */
#include "gateway-hook/proxy.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "ca/x509_build.h"
#include "common/log.h"
#include "common/timefmt.h"
#include "enrollment/tls.h"
#include "gateway-hook/admit.h"
#include "gateway-hook/allow.h"
#include "gateway-hook/proxy_v2.h"
#include "gateway-hook/session_log.h"
#include "gateway-hook/verify_cache.h"
#include "gateway-hook/worker_libctx.h"

#define RELAY_BUF (16 * 1024) /* per direction, only while it holds bytes */
/* OpenSSL's read-ahead buffer per TLS side: a read(2) takes up to this much, several records
 * of a stream at once (OpenSSL's default holds one). Released when empty, as RELAY_BUF is. */
#define TLS_READ_AHEAD (64 * 1024)
#define POOL_KEEP 256 /* free buffers a worker keeps for reuse */
#define PUMP_ROUNDS 16
#define ACCEPT_BATCH 64
#define MAX_EVENTS 128
#define UP_TICKETS 8 /* upstream session tickets a listener keeps for resumption */

enum handle_kind { H_WAKE, H_LISTEN, H_CLIENT, H_UPSTREAM };

struct handle {
	enum handle_kind kind;
	void *ptr;
};

enum conn_state { S_FIRST_BYTE, S_HANDSHAKE, S_CONNECT, S_UP_HANDSHAKE, S_RELAY };

/* A pooled buffer: bytes in [r, w) of data. */
struct pbuf {
	size_t r, w;
	struct pbuf *next_free;
	unsigned char data[RELAY_BUF];
};

/* One side of a session: a socket, and its TLS state when it speaks TLS. */
struct endpoint {
	int fd;
	SSL *ssl;
	struct handle h;
	uint32_t ev;         /* interest registered with epoll; 0 and !watched: not added */
	int watched;         /* added to epoll */
	int rd_want;         /* SSL_ERROR_WANT_READ/WRITE of the blocked read, or 0 */
	int wr_want;         /* ... of the blocked write, or 0 */
	unsigned eof : 1;    /* no more bytes will come from it */
	unsigned shut : 1;   /* we have closed our writing direction towards it */
	unsigned broken : 1; /* an error: no SSL_shutdown */
	unsigned quiet : 1;  /* its last read would block and epoll has not said "readable"
	                      * since: reading again now would only cost a syscall */
};

struct listener;
struct worker;

struct retired_rules {
	struct allow_rules *rules;
	struct retired_rules *next;
};

struct conn {
	struct worker *w;
	struct listener *l;
	enum conn_state state;
	struct endpoint cl, up;
	struct pbuf *c2u, *u2c; /* client -> upstream, upstream -> client */
	int64_t start_ms, deadline_ms, last_active_ms;
	struct sockaddr_storage caddr, laddr;
	char client_name[64];
	struct tls_peer peer;
	const char *tls_version, *cipher; /* static strings from OpenSSL */
	uint64_t bytes_up, bytes_down;
	enum proxy_reason first_eof; /* which side ended first, for the close reason */
	int have_first_eof;
	int dead; /* closed; freed after the current batch of events */
	TAILQ_ENTRY(conn) entry;
};
TAILQ_HEAD(conn_list, conn);

/*
 * TLS upstreams: sessions (tickets) the upstream issued, for resumption: each resumed
 * handshake saves the proxy a certificate verification and a signature. They are only
 * offered under the client context they came from (held here by reference, so the pointer
 * cannot be reused by another context): a new certificate or bundle means new full
 * handshakes. Each ticket is used once (RFC 8446, C.4); the newest first. A ticket that
 * arrives on a session still running under the previous context replaces the kept ones
 * with its own; that costs full handshakes for a while, never a wrong resumption.
 */
struct up_tickets {
	pthread_mutex_t lock;
	SSL_CTX *ctx;               /* the context s[] came from, a reference; or NULL */
	SSL_SESSION *s[UP_TICKETS]; /* oldest first */
	int n;
};

/* One configured listener (shared by all workers). */
struct listener {
	size_t index;
	char *listen, *upstream, *upstream_name, *upstream_ca_file;
	enum proxy_upstream_mode mode;
	int proxy_protocol;
	struct allow_rules *_Atomic allow; /* replaced whole by proxy_set_allow */
	struct sockaddr_storage listen_addr, upstream_addr;
	socklen_t listen_len, upstream_len;
	STACK_OF(X509) *upstream_roots; /* from upstream_ca_file, or NULL: the bundle */
	struct tls_ctx_slot *up_tls;    /* TLS upstreams: our client context */
	struct up_tickets tickets;      /* TLS upstreams: sessions to resume */
	int port;                       /* bound port */
};

/* A worker's listening socket for one listener. */
struct wlistener {
	struct handle h;
	struct worker *w;
	struct listener *l;
	int fd;
};

struct worker {
	struct proxy *p;
	pthread_t thread;
	int started;
	int epfd, wakefd;
	struct handle h_wake;
	struct wlistener *ls;
	struct conn_list conns;
	struct conn_list dead; /* closed in this batch of events, freed after it */
	struct pbuf *pool;
	int pool_count;
	struct verify_cache *vcache; /* this worker's verified client chains, or NULL (off) */
	int64_t next_sweep_ms;
	uint64_t revoke_seen;
	uint64_t rules_seen;
	int listening;
};

struct proxy {
	struct proxy_options o;
	struct listener *ls;
	size_t nls;
	struct worker *workers;
	int nworkers;
	struct tls_ctx_slot *server_tls;
	struct session_log *slog;
	atomic_int stopping;
	int64_t drain_deadline_ms;
	/* revoked serials (lowercase hex), sorted; revoke_gen moves on each addition */
	pthread_mutex_t revoke_lock;
	char **revoked;
	size_t nrevoked, revoked_cap;
	atomic_uint_fast64_t revoke_gen;
	/* allow rules replaced by proxy_set_allow: kept until proxy_free, since a worker may
	 * be admitting against them; rules_gen moves on each replacement */
	pthread_mutex_t rules_lock;
	struct retired_rules *retired_rules;
	atomic_uint_fast64_t rules_gen;
	/* material facts for metrics */
	atomic_int_fast64_t cert_not_after;
	atomic_uint_fast64_t bundle_sequence;
	/* counters */
	atomic_int_fast64_t active;
	atomic_uint_fast64_t accepted, handshakes_ok, sessions, bytes_up, bytes_down;
	atomic_uint_fast64_t by_reason[PR_COUNT];
};

static int64_t
now_ms(void)
{
	return time_now_ms();
}

/* "127.0.0.1:5555" or "[::1]:5555". */
static void
addr_name(const struct sockaddr_storage *ss, char *out, size_t len)
{
	char host[INET6_ADDRSTRLEN], port[8];

	if (getnameinfo((const struct sockaddr *)ss, sizeof(*ss), host, sizeof(host), port,
	                sizeof(port), NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
		snprintf(out, len, "?");
		return;
	}
	snprintf(out, len, ss->ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, port);
}

/* Split "host:port" or "[v6]:port" and resolve it (numeric or by name, once, at start). */
static int
resolve(const char *text, struct sockaddr_storage *ss, socklen_t *len, int passive,
        struct ac_err *err)
{
	char host[256];
	const char *colon, *port;
	struct addrinfo hints, *res = NULL;
	size_t hlen;
	int rc;

	if (text == NULL || text[0] == '\0')
		return ac_err_set(err, AC_ERR_INVALID, "address_invalid", "empty address");
	if (text[0] == '[') {
		colon = strstr(text, "]:");
		if (colon == NULL)
			goto bad;
		hlen = (size_t)(colon - text - 1);
		if (hlen >= sizeof(host))
			goto bad;
		memcpy(host, text + 1, hlen);
		port = colon + 2;
	} else {
		colon = strrchr(text, ':');
		if (colon == NULL || (size_t)(colon - text) >= sizeof(host))
			goto bad;
		hlen = (size_t)(colon - text);
		memcpy(host, text, hlen);
		port = colon + 1;
	}
	host[hlen] = '\0';
	if (hlen == 0 || port[0] == '\0' || strspn(port, "0123456789") != strlen(port) ||
	    atoi(port) > 65535)
		goto bad;
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
	rc = getaddrinfo(host, port, &hints, &res);
	if (rc != 0 || res == NULL)
		return ac_err_set(err, AC_ERR_INVALID, "address_unresolved", "%s: %s", text,
		                  gai_strerror(rc));
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
bad:
	return ac_err_set(err, AC_ERR_INVALID, "address_invalid",
	                  "\"%s\" is not HOST:PORT or [V6]:PORT", text);
}

static void
set_port(struct sockaddr_storage *ss, int port)
{
	if (ss->ss_family == AF_INET)
		((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
	else
		((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
}

static int
get_port(const struct sockaddr_storage *ss)
{
	return ntohs(ss->ss_family == AF_INET ? ((const struct sockaddr_in *)ss)->sin_port
	                                      : ((const struct sockaddr_in6 *)ss)->sin6_port);
}

/* ---- the revoked-serial set ---- */

static int
serial_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Lowercase, without leading zeros (how tls_peer spells serials), into out. */
static int
serial_normalize(const char *in, char *out, size_t len)
{
	size_t n = 0;

	while (*in == '0' && in[1] != '\0')
		in++;
	for (; *in != '\0'; in++) {
		char ch = *in;

		if (ch == ':')
			continue;
		if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') ||
		      (ch >= 'A' && ch <= 'F')) ||
		    n + 1 >= len)
			return -1;
		out[n++] = (char)(ch >= 'A' && ch <= 'F' ? ch - 'A' + 'a' : ch);
	}
	out[n] = '\0';
	return n > 0 ? 0 : -1;
}

static int
is_revoked(struct proxy *p, const char *serial)
{
	char norm[64];
	const char *key = norm;
	int hit;

	/* tls_peer keeps a leading zero digit (0x0a... is "0a..."); the set has none. */
	if (serial[0] == '\0' || serial_normalize(serial, norm, sizeof(norm)) != 0)
		return 0;
	pthread_mutex_lock(&p->revoke_lock);
	hit = p->nrevoked > 0 &&
	      bsearch(&key, p->revoked, p->nrevoked, sizeof(char *), serial_cmp) != NULL;
	pthread_mutex_unlock(&p->revoke_lock);
	return hit;
}

static void wake_all(struct proxy *p);

int
proxy_revoke_serial(struct proxy *p, const char *serial_hex)
{
	char norm[64], *copy, *key = norm;
	int rc = 0;

	if (serial_hex == NULL || serial_normalize(serial_hex, norm, sizeof(norm)) != 0)
		return 0;
	pthread_mutex_lock(&p->revoke_lock);
	if (p->nrevoked > 0 &&
	    bsearch(&key, p->revoked, p->nrevoked, sizeof(char *), serial_cmp) != NULL)
		goto out;
	if (p->nrevoked == p->revoked_cap) {
		size_t cap = p->revoked_cap == 0 ? 64 : p->revoked_cap * 2;
		char **grown = realloc(p->revoked, cap * sizeof(char *));

		if (grown == NULL) {
			rc = -1;
			goto out;
		}
		p->revoked = grown;
		p->revoked_cap = cap;
	}
	copy = strdup(norm);
	if (copy == NULL) {
		rc = -1;
		goto out;
	}
	{
		size_t at = 0;

		while (at < p->nrevoked && strcmp(p->revoked[at], copy) < 0)
			at++;
		memmove(p->revoked + at + 1, p->revoked + at, (p->nrevoked - at) * sizeof(char *));
		p->revoked[at] = copy;
		p->nrevoked++;
	}
	rc = 1;
out:
	pthread_mutex_unlock(&p->revoke_lock);
	if (rc == 1) {
		atomic_fetch_add(&p->revoke_gen, 1);
		wake_all(p);
	}
	return rc;
}

/* ---- buffers ---- */

static struct pbuf *
pbuf_get(struct worker *w)
{
	struct pbuf *b = w->pool;

	if (b != NULL) {
		w->pool = b->next_free;
		w->pool_count--;
	} else {
		b = malloc(sizeof(*b));
		if (b == NULL)
			return NULL;
	}
	b->r = b->w = 0;
	b->next_free = NULL;
	return b;
}

static void
pbuf_put(struct worker *w, struct pbuf **bp)
{
	struct pbuf *b = *bp;

	*bp = NULL;
	if (b == NULL)
		return;
	if (w->pool_count >= POOL_KEEP) {
		free(b);
		return;
	}
	b->next_free = w->pool;
	w->pool = b;
	w->pool_count++;
}

static size_t
pbuf_len(const struct pbuf *b)
{
	return b != NULL ? b->w - b->r : 0;
}

/* ---- endpoints ---- */

/* Read into p: >0 bytes, 0 would block (rd_want says on what), -1 EOF, -2 error. */
static ssize_t
ep_read(struct endpoint *e, void *p, size_t n)
{
	ssize_t r;

	e->rd_want = 0;
	if (e->ssl != NULL) {
		size_t got = 0;
		int ok, code;

		tls_error_queue_clear();
		ok = SSL_read_ex(e->ssl, p, n, &got);
		if (ok == 1)
			return (ssize_t)got;
		code = SSL_get_error(e->ssl, ok);
		if (code == SSL_ERROR_WANT_READ || code == SSL_ERROR_WANT_WRITE) {
			e->rd_want = code;
			return 0;
		}
		if (code == SSL_ERROR_ZERO_RETURN)
			return -1;
		/* A FIN without close_notify is an end too, not an attack on a byte stream we
		 * relay as it comes; anything else is an error. */
		if (code == SSL_ERROR_SSL &&
		    ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
			e->broken = 1;
			return -1;
		}
		e->broken = 1;
		return -2;
	}
	r = read(e->fd, p, n);
	if (r > 0)
		return r;
	if (r == 0)
		return -1;
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
		e->rd_want = SSL_ERROR_WANT_READ;
		return 0;
	}
	return -2;
}

/* Write from p: >0 bytes written, 0 would block (wr_want says on what), -2 error. */
static ssize_t
ep_write(struct endpoint *e, const void *p, size_t n)
{
	ssize_t r;

	e->wr_want = 0;
	if (e->ssl != NULL) {
		size_t put = 0;
		int ok, code;

		tls_error_queue_clear();
		ok = SSL_write_ex(e->ssl, p, n, &put);
		if (ok == 1)
			return (ssize_t)put;
		code = SSL_get_error(e->ssl, ok);
		if (code == SSL_ERROR_WANT_READ || code == SSL_ERROR_WANT_WRITE) {
			e->wr_want = code;
			return 0;
		}
		e->broken = 1;
		return -2;
	}
	r = send(e->fd, p, n, MSG_NOSIGNAL);
	if (r > 0)
		return r;
	if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
		e->wr_want = SSL_ERROR_WANT_WRITE;
		return 0;
	}
	return -2;
}

/* Half-close our writing direction: close_notify (TLS), then FIN. */
static void
ep_shut(struct endpoint *e)
{
	if (e->shut)
		return;
	e->shut = 1;
	if (e->ssl != NULL && !e->broken) {
		ERR_clear_error();
		SSL_shutdown(e->ssl); /* sends close_notify; the read side stays open */
		ERR_clear_error();
	}
	shutdown(e->fd, SHUT_WR);
}

static uint32_t
ev_of(int want)
{
	return want == SSL_ERROR_WANT_WRITE ? EPOLLOUT : EPOLLIN;
}

/* Register interest ev for e (0: none, but stay registered). */
static int
ep_watch(struct worker *w, struct endpoint *e, uint32_t ev)
{
	struct epoll_event ee;

	if (e->fd < 0)
		return 0;
	if (e->watched && e->ev == ev)
		return 0;
	memset(&ee, 0, sizeof(ee));
	ee.events = ev;
	ee.data.ptr = &e->h;
	if (epoll_ctl(w->epfd, e->watched ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, e->fd, &ee) != 0)
		return -1;
	e->watched = 1;
	e->ev = ev;
	return 0;
}

static void
ep_close(struct worker *w, struct endpoint *e)
{
	if (e->fd >= 0) {
		if (e->watched)
			epoll_ctl(w->epfd, EPOLL_CTL_DEL, e->fd, NULL);
		close(e->fd);
		e->fd = -1;
	}
	SSL_free(e->ssl);
	e->ssl = NULL;
}

/* ---- connections ---- */

/* The session log entry and the counters for a connection that ends now. */
static void
conn_record(struct conn *c, enum proxy_reason why)
{
	struct proxy *p = c->w->p;
	struct session_record rec;
	int refused = why < PR_REFUSALS;

	atomic_fetch_add(&p->by_reason[why], 1);
	if (refused)
		log_info("proxy_refused", "listener %s: client %s%s%s refused: %s", c->l->listen,
		         c->client_name, c->peer.spiffe_id[0] != '\0' ? " " : "", c->peer.spiffe_id,
		         proxy_reason_names[why]);
	else
		atomic_fetch_add(&p->sessions, 1);
	if (p->slog == NULL)
		return;
	memset(&rec, 0, sizeof(rec));
	rec.start_ms = c->start_ms;
	rec.end_ms = now_ms();
	rec.refused = refused;
	rec.reason = proxy_reason_names[why];
	snprintf(rec.listener, sizeof(rec.listener), "%s", c->l->listen);
	snprintf(rec.client, sizeof(rec.client), "%s", c->client_name);
	snprintf(rec.identity, sizeof(rec.identity), "%s", c->peer.spiffe_id);
	snprintf(rec.serial, sizeof(rec.serial), "%s", c->peer.serial);
	snprintf(rec.tls_version, sizeof(rec.tls_version), "%s",
	         c->tls_version != NULL ? c->tls_version : "");
	snprintf(rec.cipher, sizeof(rec.cipher), "%s", c->cipher != NULL ? c->cipher : "");
	snprintf(rec.upstream, sizeof(rec.upstream), "%s", c->l->upstream);
	rec.bytes_up = c->bytes_up;
	rec.bytes_down = c->bytes_down;
	session_log_put(p->slog, &rec);
}

static void
conn_close(struct conn *c, enum proxy_reason why)
{
	struct worker *w = c->w;

	conn_record(c, why);
	ep_close(w, &c->cl);
	ep_close(w, &c->up);
	pbuf_put(w, &c->c2u);
	pbuf_put(w, &c->u2c);
	TAILQ_REMOVE(&w->conns, c, entry);
	atomic_fetch_sub(&w->p->active, 1);
	c->dead = 1;
	TAILQ_INSERT_TAIL(&w->dead, c, entry);
}

/* Free the connections closed since the last call: no event can point at them any more. */
static void
dead_free(struct worker *w)
{
	struct conn *c;

	while ((c = TAILQ_FIRST(&w->dead)) != NULL) {
		TAILQ_REMOVE(&w->dead, c, entry);
		free(c);
	}
}

static void relay_run(struct conn *c);
static void upstream_connect(struct conn *c);
static void upstream_handshake(struct conn *c);

/* The first byte decides: a TLS handshake record or nothing. */
static void
first_byte(struct conn *c)
{
	unsigned char b;
	ssize_t n = recv(c->cl.fd, &b, 1, MSG_PEEK);
	SSL_CTX *ctx;

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		conn_close(c, PR_HANDSHAKE_FAILED);
		return;
	}
	if (proxy_first_byte(b) != PR_ADMITTED) {
		conn_close(c, PR_PLAINTEXT);
		return;
	}
	ctx = tls_slot_acquire(c->w->p->server_tls);
	c->cl.ssl = ctx != NULL ? SSL_new(ctx) : NULL;
	SSL_CTX_free(ctx); /* the SSL holds its own reference */
	if (c->cl.ssl == NULL || SSL_set_fd(c->cl.ssl, c->cl.fd) != 1 ||
	    (c->w->vcache != NULL && verify_cache_attach(c->cl.ssl, c->w->vcache) != 0)) {
		conn_close(c, PR_HANDSHAKE_FAILED);
		return;
	}
	SSL_set_mode(c->cl.ssl,
	             SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	/* Read what the socket has (up to TLS_READ_AHEAD) in one read(), not a record's
	 * header and then its body in two, nor a stream's records one read() each. */
	SSL_set_read_ahead(c->cl.ssl, 1);
	SSL_set_default_read_buffer_len(c->cl.ssl, TLS_READ_AHEAD);
	SSL_set_accept_state(c->cl.ssl);
	c->state = S_HANDSHAKE;
}

/* The revoked-set lookup, as proxy_admit() wants it. */
static int
revoked_cb(void *arg, const char *serial)
{
	return is_revoked(arg, serial);
}

static void
handshake(struct conn *c)
{
	int rc, code;
	enum proxy_reason verdict;

	tls_error_queue_clear();
	rc = worker_libctx_handshake(c->cl.ssl);
	if (rc != 1) {
		code = SSL_get_error(c->cl.ssl, rc);
		if (code == SSL_ERROR_WANT_READ || code == SSL_ERROR_WANT_WRITE) {
			ep_watch(c->w, &c->cl, ev_of(code));
			return;
		}
		c->cl.broken = 1;
		conn_close(c, proxy_handshake_failure(c->cl.ssl, ERR_peek_error()));
		return;
	}
	c->tls_version = SSL_get_version(c->cl.ssl);
	c->cipher = SSL_get_cipher_name(c->cl.ssl);
	verdict = proxy_admit(c->cl.ssl, atomic_load(&c->l->allow), revoked_cb, c->w->p, time_now(),
	                      &c->peer);
	if (verdict != PR_ADMITTED) {
		/* Say goodbye properly; nothing the client sent goes anywhere. */
		ep_shut(&c->cl);
		conn_close(c, verdict);
		return;
	}
	atomic_fetch_add(&c->w->p->handshakes_ok, 1);
	upstream_connect(c);
}

/* Start the non-blocking connect to the upstream. */
static void
upstream_connect(struct conn *c)
{
	struct listener *l = c->l;
	int one = 1;

	c->state = S_CONNECT;
	c->deadline_ms = now_ms() + c->w->p->o.handshake_timeout_ms;
	ep_watch(c->w, &c->cl, 0); /* do not read the client until the upstream is ready */
	c->up.fd =
	    socket(l->upstream_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->up.fd < 0) {
		conn_close(c, PR_UP_CONNECT);
		return;
	}
	setsockopt(c->up.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(c->up.fd, (const struct sockaddr *)&l->upstream_addr, l->upstream_len) != 0 &&
	    errno != EINPROGRESS) {
		log_warn("proxy_upstream_failed", "listener %s: %s: %s", l->listen, l->upstream,
		         strerror(errno));
		conn_close(c, PR_UP_CONNECT);
		return;
	}
	if (ep_watch(c->w, &c->up, EPOLLOUT) != 0)
		conn_close(c, PR_UP_CONNECT);
}

/* Everything before the first relayed byte is done: PROXY v2 header, then relay. */
static void
relay_begin(struct conn *c)
{
	c->state = S_RELAY;
	c->last_active_ms = now_ms();
	if (c->l->proxy_protocol) {
		struct proxy_v2_info info;
		struct ac_err err;
		X509 *cert = SSL_get0_peer_certificate(c->cl.ssl);
		char cn[256] = "";
		size_t len = 0;

		if (cert != NULL)
			X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn,
			                          sizeof(cn));
		memset(&info, 0, sizeof(info));
		info.src = (const struct sockaddr *)&c->caddr;
		info.dst = (const struct sockaddr *)&c->laddr;
		info.spiffe_id = c->peer.spiffe_id;
		info.serial = c->peer.serial;
		info.tls_version = c->tls_version;
		info.cipher = c->cipher;
		info.cn = cn;
		ac_err_clear(&err);
		c->c2u = pbuf_get(c->w);
		if (c->c2u == NULL ||
		    proxy_v2_encode(&info, c->c2u->data, RELAY_BUF, &len, &err) != 0) {
			log_warn("proxy_v2_failed", "listener %s: %s", c->l->listen,
			         err.msg[0] != '\0' ? err.msg : "out of memory");
			conn_close(c, PR_UPSTREAM_ERROR);
			return;
		}
		c->c2u->w = len;
	}
	relay_run(c);
}

/* Drop every kept ticket and the context reference. Called with t->lock held. */
static void
tickets_clear(struct up_tickets *t)
{
	for (int i = 0; i < t->n; i++)
		SSL_SESSION_free(t->s[i]);
	t->n = 0;
	SSL_CTX_free(t->ctx);
	t->ctx = NULL;
}

/* Keep sess (the reference passes to the listener), issued on a connection made with ctx. */
static void
tickets_put(struct up_tickets *t, SSL_CTX *ctx, SSL_SESSION *sess)
{
	pthread_mutex_lock(&t->lock);
	if (t->ctx != ctx) {
		tickets_clear(t);
		SSL_CTX_up_ref(ctx);
		t->ctx = ctx;
	}
	if (t->n == UP_TICKETS) {
		SSL_SESSION_free(t->s[0]);
		memmove(t->s, t->s + 1, (UP_TICKETS - 1) * sizeof(t->s[0]));
		t->n--;
	}
	t->s[t->n++] = sess;
	pthread_mutex_unlock(&t->lock);
}

/* The newest ticket issued under ctx, taken out (the caller frees it), or NULL. */
static SSL_SESSION *
tickets_take(struct up_tickets *t, SSL_CTX *ctx)
{
	SSL_SESSION *sess = NULL;

	pthread_mutex_lock(&t->lock);
	if (t->ctx == ctx && t->n > 0)
		sess = t->s[--t->n];
	pthread_mutex_unlock(&t->lock);
	return sess;
}

/* OpenSSL's new-session callback on the upstream client contexts: a ticket arrived on an
 * upstream connection (app data: its conn). Returns 1: the session is ours now. */
static int
upstream_ticket_new(SSL *ssl, SSL_SESSION *sess)
{
	struct conn *c = SSL_get_app_data(ssl);

	if (c == NULL || !SSL_SESSION_is_resumable(sess))
		return 0;
	tickets_put(&c->l->tickets, SSL_get_SSL_CTX(ssl), sess);
	return 1;
}

static void
upstream_connected(struct conn *c)
{
	int soerr = 0;
	socklen_t len = sizeof(soerr);
	int one = 1;

	if (getsockopt(c->up.fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0)
		soerr = errno;
	if (soerr == EINPROGRESS)
		return;
	if (soerr != 0) {
		log_warn("proxy_upstream_failed", "listener %s: %s: %s", c->l->listen,
		         c->l->upstream, strerror(soerr));
		conn_close(c, PR_UP_CONNECT);
		return;
	}
	setsockopt(c->up.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (c->l->mode == PROXY_UPSTREAM_TLS) {
		SSL_CTX *ctx = tls_slot_acquire(c->l->up_tls);
		struct ac_err err;

		ac_err_clear(&err);
		c->up.ssl = ctx != NULL ? SSL_new(ctx) : NULL;
		SSL_CTX_free(ctx);
		if (c->up.ssl == NULL || SSL_set_fd(c->up.ssl, c->up.fd) != 1 ||
		    tls_client_set_host(c->up.ssl, c->l->upstream_name, &err) != 0) {
			log_warn("proxy_upstream_tls_failed", "listener %s: %s", c->l->listen,
			         err.msg[0] != '\0' ? err.msg : "cannot set up TLS");
			conn_close(c, PR_UP_TLS);
			return;
		}
		SSL_set_app_data(c->up.ssl, c);
		{
			SSL_SESSION *sess =
			    tickets_take(&c->l->tickets, SSL_get_SSL_CTX(c->up.ssl));

			if (sess != NULL) {
				SSL_set_session(c->up.ssl, sess); /* a failure: a full handshake */
				SSL_SESSION_free(sess);
			}
		}
		SSL_set_mode(c->up.ssl,
		             SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
		SSL_set_read_ahead(c->up.ssl, 1);
		SSL_set_default_read_buffer_len(c->up.ssl, TLS_READ_AHEAD);
		SSL_set_connect_state(c->up.ssl);
		c->state = S_UP_HANDSHAKE;
		upstream_handshake(c);
		return;
	}
	relay_begin(c);
}

static void
upstream_handshake(struct conn *c)
{
	int rc, code;

	tls_error_queue_clear();
	rc = worker_libctx_handshake(c->up.ssl);
	if (rc == 1) {
		relay_begin(c);
		return;
	}
	code = SSL_get_error(c->up.ssl, rc);
	if (code == SSL_ERROR_WANT_READ || code == SSL_ERROR_WANT_WRITE) {
		ep_watch(c->w, &c->up, ev_of(code));
		return;
	}
	{
		long verdict = SSL_get_verify_result(c->up.ssl);
		char why[256];

		ERR_error_string_n(ERR_peek_error(), why, sizeof(why));
		log_warn("proxy_upstream_tls_failed", "listener %s: upstream %s: %s", c->l->listen,
		         c->l->upstream,
		         verdict != X509_V_OK ? X509_verify_cert_error_string(verdict) : why);
	}
	c->up.broken = 1;
	conn_close(c, PR_UP_TLS);
}

/*
 * Move bytes from src through *bp to dst. Returns 1 on progress, 0 none, -1 src error,
 * -2 dst error.
 */
static int
transfer(struct conn *c, struct endpoint *src, struct pbuf **bp, struct endpoint *dst,
         uint64_t *counter)
{
	struct worker *w = c->w;
	int progress = 0;
	ssize_t n;

	if (!src->eof && !src->quiet && pbuf_len(*bp) < RELAY_BUF) {
		if (*bp == NULL && (*bp = pbuf_get(w)) == NULL)
			return -1;
		if ((*bp)->w == RELAY_BUF && (*bp)->r > 0) {
			memmove((*bp)->data, (*bp)->data + (*bp)->r, (*bp)->w - (*bp)->r);
			(*bp)->w -= (*bp)->r;
			(*bp)->r = 0;
		}
		if ((*bp)->w < RELAY_BUF) {
			size_t room = RELAY_BUF - (*bp)->w;

			n = ep_read(src, (*bp)->data + (*bp)->w, room);
			if (n > 0) {
				(*bp)->w += (size_t)n;
				*counter += (uint64_t)n;
				progress = 1;
				/* Less than there was room for, and nothing left in OpenSSL: the
				 * socket most likely had no more, and reading again now would fail
				 * with EAGAIN (after a ping-pong's every message). If it does have
				 * more, level-triggered epoll reports it readable at once. */
				if ((size_t)n < room &&
				    (src->ssl == NULL || !SSL_has_pending(src->ssl)))
					src->quiet = 1;
			} else if (n == -1) {
				src->eof = 1;
				if (!c->have_first_eof) {
					c->have_first_eof = 1;
					c->first_eof =
					    src == &c->cl ? PR_CLIENT_CLOSED : PR_UPSTREAM_CLOSED;
				}
				progress = 1;
			} else if (n == -2) {
				return -1;
			} else if (src->rd_want == SSL_ERROR_WANT_READ) {
				/* Nothing buffered in OpenSSL either (SSL_read would have returned
				 * it): only the socket can bring more, and epoll will say so. */
				src->quiet = 1;
			}
		}
	}
	if (pbuf_len(*bp) > 0 && !dst->shut) {
		n = ep_write(dst, (*bp)->data + (*bp)->r, pbuf_len(*bp));
		if (n > 0) {
			(*bp)->r += (size_t)n;
			progress = 1;
		} else if (n == -2) {
			return -2;
		}
	}
	if (pbuf_len(*bp) == 0)
		pbuf_put(w, bp);
	if (src->eof && *bp == NULL && !dst->shut) {
		ep_shut(dst);
		progress = 1;
	}
	return progress;
}

/* Interest for one endpoint from what its blocked operations wait for. */
static uint32_t
interest(const struct endpoint *e, const struct pbuf *inbound, const struct pbuf *outbound)
{
	uint32_t ev = 0;

	if (!e->eof && pbuf_len(inbound) < RELAY_BUF)
		ev |= ev_of(e->rd_want);
	if (pbuf_len(outbound) > 0 && !e->shut)
		ev |= ev_of(e->wr_want);
	return ev;
}

static void
relay_run(struct conn *c)
{
	uint64_t up = 0, down = 0;
	int rounds, a = 0, b = 0;

	for (rounds = 0; rounds < PUMP_ROUNDS; rounds++) {
		a = transfer(c, &c->cl, &c->c2u, &c->up, &up);
		if (a < 0)
			break;
		b = transfer(c, &c->up, &c->u2c, &c->cl, &down);
		if (b < 0 || (a == 0 && b == 0))
			break;
	}
	c->bytes_up += up;
	c->bytes_down += down;
	atomic_fetch_add(&c->w->p->bytes_up, up);
	atomic_fetch_add(&c->w->p->bytes_down, down);
	if (up + down > 0)
		c->last_active_ms = now_ms();
	if (a == -1 || b == -2) {
		conn_close(c, PR_CLIENT_ERROR);
		return;
	}
	if (a == -2 || b == -1) {
		conn_close(c, PR_UPSTREAM_ERROR);
		return;
	}
	if (c->cl.eof && c->up.eof && c->c2u == NULL && c->u2c == NULL) {
		conn_close(c, c->first_eof);
		return;
	}
	if (rounds == PUMP_ROUNDS) {
		/* More to do: come back after the others had their turn (level-triggered). */
		ep_watch(c->w, &c->cl, EPOLLIN | EPOLLOUT);
		ep_watch(c->w, &c->up, EPOLLIN | EPOLLOUT);
		return;
	}
	if (ep_watch(c->w, &c->cl, interest(&c->cl, c->c2u, c->u2c)) != 0 ||
	    ep_watch(c->w, &c->up, interest(&c->up, c->u2c, c->c2u)) != 0)
		conn_close(c, PR_CLIENT_ERROR);
}

/* Events on either socket of a connection: advance whatever state it is in. */
static void
conn_event(struct conn *c, int upstream_side, uint32_t events)
{
	struct endpoint *side = upstream_side ? &c->up : &c->cl;
	int hangup = (events & (EPOLLHUP | EPOLLERR)) != 0;

	if (c->dead)
		return;
	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
		side->quiet = 0;
	if (hangup && c->state != S_RELAY && !(upstream_side && c->state == S_CONNECT)) {
		/* Gone before the session started (a failed connect is seen by SO_ERROR). */
		conn_close(c, !upstream_side               ? PR_HANDSHAKE_FAILED
		              : c->state == S_UP_HANDSHAKE ? PR_UP_TLS
		                                           : PR_UP_CONNECT);
		return;
	}
	switch (c->state) {
	case S_FIRST_BYTE:
		first_byte(c);
		if (c->state == S_HANDSHAKE)
			handshake(c);
		break;
	case S_HANDSHAKE:
		handshake(c);
		break;
	case S_CONNECT:
		if (upstream_side)
			upstream_connected(c);
		break;
	case S_UP_HANDSHAKE:
		if (upstream_side)
			upstream_handshake(c);
		break;
	case S_RELAY:
		relay_run(c);
		/* A side that hung up after its EOF can take nothing more: without this,
		 * level-triggered EPOLLHUP would wake us for nothing until the other side ends. */
		if (!c->dead && hangup && side->eof)
			conn_close(c, c->first_eof);
		break;
	}
}

/* ---- workers ---- */

static void
accept_batch(struct wlistener *wl)
{
	struct worker *w = wl->w;
	struct proxy *p = w->p;

	for (int i = 0; i < ACCEPT_BATCH; i++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		int fd =
		    accept4(wl->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct conn *c;
		int one = 1;

		if (fd < 0)
			return;
		atomic_fetch_add(&p->accepted, 1);
		c = calloc(1, sizeof(*c));
		if (c == NULL) {
			close(fd);
			continue;
		}
		c->w = w;
		c->l = wl->l;
		c->cl.fd = fd;
		c->up.fd = -1;
		c->cl.h.kind = H_CLIENT;
		c->cl.h.ptr = c;
		c->up.h.kind = H_UPSTREAM;
		c->up.h.ptr = c;
		c->caddr = ss;
		len = sizeof(c->laddr);
		getsockname(fd, (struct sockaddr *)&c->laddr, &len);
		addr_name(&ss, c->client_name, sizeof(c->client_name));
		c->start_ms = now_ms();
		c->deadline_ms = c->start_ms + p->o.handshake_timeout_ms;
		c->state = S_FIRST_BYTE;
		TAILQ_INSERT_TAIL(&w->conns, c, entry);
		if (atomic_fetch_add(&p->active, 1) >= p->o.max_connections) {
			conn_close(c, PR_CONN_LIMIT);
			continue;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (ep_watch(w, &c->cl, EPOLLIN) != 0)
			conn_close(c, PR_HANDSHAKE_FAILED);
	}
}

/* Timeouts, certificate expiry and revocations, every PROXY_SWEEP_MS. */
static void
sweep(struct worker *w, int64_t now)
{
	struct proxy *p = w->p;
	uint64_t gen = atomic_load(&p->revoke_gen);
	uint64_t rules_gen = atomic_load(&p->rules_gen);
	int check_revoked = gen != w->revoke_seen;
	int check_rules = rules_gen != w->rules_seen;
	int64_t now_s = now / 1000;
	struct conn *c, *next;

	w->revoke_seen = gen;
	w->rules_seen = rules_gen;
	for (c = TAILQ_FIRST(&w->conns); c != NULL; c = next) {
		int relaying = c->state == S_RELAY;

		next = TAILQ_NEXT(c, entry);
		/* Admitted (still connecting upstream, or relaying): the client's certificate
		 * must stay unrevoked and unexpired. A revocation seen while the upstream is
		 * being connected must not be missed when the session starts later. */
		if (c->peer.present) {
			if (check_revoked && is_revoked(p, c->peer.serial)) {
				conn_close(c, relaying ? PR_SESSION_REVOKED : PR_REVOKED);
				continue;
			}
			if (c->peer.not_after <= now_s) {
				conn_close(c, relaying ? PR_SESSION_EXPIRED : PR_EXPIRED);
				continue;
			}
			if (check_rules && allow_rules_match(atomic_load(&c->l->allow),
			                                     SSL_get0_peer_certificate(c->cl.ssl),
			                                     c->peer.spiffe_id) < 0) {
				conn_close(c, relaying ? PR_SESSION_NOT_ALLOWED : PR_NOT_ALLOWED);
				continue;
			}
		}
		if (!relaying) {
			if (now >= c->deadline_ms)
				conn_close(c,
				           c->state == S_CONNECT || c->state == S_UP_HANDSHAKE
				               ? (c->state == S_CONNECT ? PR_UP_CONNECT : PR_UP_TLS)
				               : PR_HANDSHAKE_TIMEOUT);
			continue;
		}
		if (now - c->last_active_ms >= p->o.idle_timeout_ms)
			conn_close(c, PR_IDLE_TIMEOUT);
	}
}

static void
stop_listening(struct worker *w)
{
	for (size_t i = 0; i < w->p->nls; i++) {
		if (w->ls[i].fd >= 0) {
			epoll_ctl(w->epfd, EPOLL_CTL_DEL, w->ls[i].fd, NULL);
			close(w->ls[i].fd);
			w->ls[i].fd = -1;
		}
	}
	w->listening = 0;
}

static void *
worker_main(void *arg)
{
	struct worker *w = arg;
	struct proxy *p = w->p;
	struct epoll_event events[MAX_EVENTS];

	for (;;) {
		int64_t now = now_ms();
		int n;

		if (atomic_load(&p->stopping)) {
			if (w->listening)
				stop_listening(w);
			if (TAILQ_EMPTY(&w->conns))
				break;
			if (now >= p->drain_deadline_ms) {
				while (!TAILQ_EMPTY(&w->conns))
					conn_close(TAILQ_FIRST(&w->conns), PR_SHUTDOWN);
				break;
			}
		}
		if (now >= w->next_sweep_ms) {
			sweep(w, now);
			w->next_sweep_ms = now + PROXY_SWEEP_MS;
		}
		n = epoll_wait(w->epfd, events, MAX_EVENTS, PROXY_SWEEP_MS);
		for (int i = 0; i < n; i++) {
			struct handle *h = events[i].data.ptr;

			switch (h->kind) {
			case H_WAKE: {
				uint64_t v;

				if (read(w->wakefd, &v, sizeof(v)) < 0)
					break;
				w->next_sweep_ms = 0; /* revocations: look now */
				break;
			}
			case H_LISTEN:
				accept_batch(h->ptr);
				break;
			case H_CLIENT:
			case H_UPSTREAM: {
				struct conn *c = h->ptr;

				/* Closed earlier in this batch: still allocated (dead list),
				 * conn_event ignores it. */
				conn_event(c, h->kind == H_UPSTREAM, events[i].events);
				break;
			}
			}
		}
		dead_free(w);
	}
	dead_free(w);
	return NULL;
}

static void
wake_all(struct proxy *p)
{
	uint64_t one = 1;

	for (int i = 0; i < p->nworkers; i++)
		if (p->workers[i].wakefd >= 0 && write(p->workers[i].wakefd, &one, sizeof(one)) < 0)
			continue;
}

/* A listening socket for l (SO_REUSEPORT when several workers share the address). */
static int
listen_socket(struct listener *l, int reuseport, struct ac_err *err)
{
	int fd, one = 1;

	fd = socket(l->listen_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		ac_err_set(err, AC_ERR_IO, "listen_failed", "%s: %s", l->listen, strerror(errno));
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if ((reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) ||
	    bind(fd, (const struct sockaddr *)&l->listen_addr, l->listen_len) != 0 ||
	    listen(fd, 1024) != 0) {
		ac_err_set(err, AC_ERR_IO, "listen_failed", "%s: %s", l->listen, strerror(errno));
		close(fd);
		return -1;
	}
	if (get_port(&l->listen_addr) == 0) {
		struct sockaddr_storage bound;
		socklen_t len = sizeof(bound);

		if (getsockname(fd, (struct sockaddr *)&bound, &len) == 0)
			set_port(&l->listen_addr, get_port(&bound)); /* later workers share it */
	}
	if (l->port == 0) {
		/* Name the listener by the port it really has, in logs and the session log. */
		char name[64];

		addr_name(&l->listen_addr, name, sizeof(name));
		free(l->listen);
		l->listen = strdup(name);
		if (l->listen == NULL) {
			ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
			close(fd);
			return -1;
		}
	}
	l->port = get_port(&l->listen_addr);
	return fd;
}

static int
worker_init(struct proxy *p, struct worker *w, struct ac_err *err)
{
	struct epoll_event ee;

	w->p = p;
	TAILQ_INIT(&w->conns);
	TAILQ_INIT(&w->dead);
	w->wakefd = -1;
	w->epfd = epoll_create1(EPOLL_CLOEXEC);
	w->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	w->ls = calloc(p->nls, sizeof(*w->ls));
	if (w->ls != NULL)
		for (size_t i = 0; i < p->nls; i++)
			w->ls[i].fd = -1;
	if (w->epfd < 0 || w->wakefd < 0 || w->ls == NULL)
		return ac_err_set(err, AC_ERR_INTERNAL, "proxy_start_failed",
		                  "cannot create a proxy worker: %s", strerror(errno));
	if (p->o.verify_cache >= 0 &&
	    (w->vcache = verify_cache_new((size_t)p->o.verify_cache, revoked_cb, p)) == NULL)
		return ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory",
		                  "cannot create a proxy worker's verify cache: out of memory");
	w->h_wake.kind = H_WAKE;
	w->h_wake.ptr = w;
	memset(&ee, 0, sizeof(ee));
	ee.events = EPOLLIN;
	ee.data.ptr = &w->h_wake;
	if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->wakefd, &ee) != 0)
		return ac_err_set(err, AC_ERR_INTERNAL, "proxy_start_failed",
		                  "cannot watch the wake-up descriptor");
	for (size_t i = 0; i < p->nls; i++) {
		struct wlistener *wl = &w->ls[i];

		wl->w = w;
		wl->l = &p->ls[i];
		wl->h.kind = H_LISTEN;
		wl->h.ptr = wl;
		wl->fd = listen_socket(&p->ls[i], p->nworkers > 1, err);
		if (wl->fd < 0)
			return -1;
		ee.events = EPOLLIN;
		ee.data.ptr = &wl->h;
		if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, wl->fd, &ee) != 0)
			return ac_err_set(err, AC_ERR_INTERNAL, "proxy_start_failed",
			                  "cannot watch %s", p->ls[i].listen);
	}
	w->listening = 1;
	return 0;
}

/* ---- material: contexts built off the hot path ---- */

struct built {
	SSL_CTX *server;
	SSL_CTX **up; /* per listener; NULL for TCP upstreams */
};

static void
built_free(struct proxy *p, struct built *b)
{
	SSL_CTX_free(b->server);
	for (size_t i = 0; b->up != NULL && i < p->nls; i++)
		SSL_CTX_free(b->up[i]);
	free(b->up);
	memset(b, 0, sizeof(*b));
}

static int
build_contexts(struct proxy *p, const struct proxy_material *m, struct built *b, struct ac_err *err)
{
	struct tls_server_config sc;

	memset(b, 0, sizeof(*b));
	if (m == NULL || m->cert == NULL || m->key == NULL || sk_X509_num(m->bundle) <= 0)
		return ac_err_set(err, AC_ERR_INVALID, "proxy_material_missing",
		                  "the proxy needs its certificate, its key and a trust bundle");
	memset(&sc, 0, sizeof(sc));
	sc.cert = m->cert;
	sc.chain = m->chain;
	sc.key = m->key;
	sc.client_roots = m->bundle;
	sc.client_untrusted = m->chain;
	sc.client_auth = TLS_CLIENT_AUTH_REQUIRED;
	b->server = tls_server_ctx_new(&sc, err);
	if (b->server == NULL)
		goto fail;
	/* Client chains verified once per certificate and worker, then taken from the cache. */
	if (p->o.verify_cache >= 0 && verify_cache_install(b->server, m->chain, err) != 0)
		goto fail;
	/* One TLS 1.3 ticket per handshake instead of OpenSSL's two: each one is the session
	 * (with the client's certificate) encoded and encrypted, and a client resumes with one. */
	SSL_CTX_set_num_tickets(b->server, 1);
	b->up = calloc(p->nls, sizeof(*b->up));
	if (b->up == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		goto fail;
	}
	for (size_t i = 0; i < p->nls; i++) {
		struct tls_client_config cc;

		if (p->ls[i].mode != PROXY_UPSTREAM_TLS)
			continue;
		memset(&cc, 0, sizeof(cc));
		cc.roots = p->ls[i].upstream_roots != NULL ? p->ls[i].upstream_roots : m->bundle;
		cc.cert = m->cert;
		cc.chain = m->chain;
		cc.key = m->key;
		b->up[i] = tls_client_ctx_new(&cc, err);
		if (b->up[i] == NULL) {
			ac_err_wrap(err, "listener %s upstream", p->ls[i].listen);
			goto fail;
		}
		/* Tickets go to the listener's up_tickets, not to OpenSSL's cache. */
		SSL_CTX_set_session_cache_mode(b->up[i], SSL_SESS_CACHE_CLIENT |
		                                             SSL_SESS_CACHE_NO_INTERNAL_STORE);
		SSL_CTX_sess_set_new_cb(b->up[i], upstream_ticket_new);
	}
	return 0;
fail:
	built_free(p, b);
	return -1;
}

static void
note_material(struct proxy *p, const struct proxy_material *m)
{
	atomic_store(&p->cert_not_after, asn1_time_to_unix(X509_get0_notAfter(m->cert)));
	atomic_store(&p->bundle_sequence, m->bundle_sequence);
}

int
proxy_update(struct proxy *p, const struct proxy_material *m, struct ac_err *err)
{
	struct built b;

	if (build_contexts(p, m, &b, err) != 0)
		return -1;
	tls_slot_swap(p->server_tls, b.server);
	b.server = NULL;
	for (size_t i = 0; i < p->nls; i++) {
		if (b.up[i] != NULL) {
			tls_slot_swap(p->ls[i].up_tls, b.up[i]);
			b.up[i] = NULL;
		}
	}
	built_free(p, &b);
	note_material(p, m);
	return 0;
}

/* ---- start and stop ---- */

static char *
dup_or_null(const char *s)
{
	return s != NULL ? strdup(s) : NULL;
}

/* Parsed rules for a listener, on the heap (so that they can be replaced whole). */
static struct allow_rules *
allow_rules_new(const char *listen, const char *const *patterns, size_t count, struct ac_err *err)
{
	struct allow_rules *rules = calloc(1, sizeof(*rules));

	if (rules == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		return NULL;
	}
	if (allow_rules_parse(patterns, count, rules, err) != 0) {
		free(rules);
		ac_err_wrap(err, "proxy listener %s", listen);
		return NULL;
	}
	if (rules->count == 0)
		log_warn("proxy_no_allow_rules",
		         "listener %s has no allow rules: every client will be refused", listen);
	return rules;
}

static void
allow_rules_destroy(struct allow_rules *rules)
{
	if (rules != NULL) {
		allow_rules_free(rules);
		free(rules);
	}
}

static int
listener_init(struct listener *l, const struct proxy_listener_config *cfg, size_t index,
              struct ac_err *err)
{
	struct allow_rules *rules;
	char host[256];

	l->index = index;
	l->mode = cfg->mode;
	l->proxy_protocol = cfg->proxy_protocol;
	l->listen = dup_or_null(cfg->listen);
	l->upstream = dup_or_null(cfg->upstream);
	l->upstream_ca_file = dup_or_null(cfg->upstream_ca_file);
	if (l->listen == NULL || l->upstream == NULL)
		return ac_err_set(err, AC_ERR_INVALID, "proxy_config_invalid",
		                  "proxy listener %zu needs a listen and an upstream address",
		                  index + 1);
	if (resolve(l->listen, &l->listen_addr, &l->listen_len, 1, err) != 0 ||
	    resolve(l->upstream, &l->upstream_addr, &l->upstream_len, 0, err) != 0)
		return ac_err_wrap(err, "proxy listener %s", l->listen);
	if ((rules = allow_rules_new(l->listen, cfg->allow, cfg->allow_count, err)) == NULL)
		return -1;
	atomic_store(&l->allow, rules);
	if (cfg->upstream_name != NULL) {
		l->upstream_name = strdup(cfg->upstream_name);
	} else {
		/* The host part of the upstream address. */
		const char *u = l->upstream, *end;
		size_t n;

		if (u[0] == '[') {
			u++;
			end = strchr(u, ']');
		} else {
			end = strrchr(u, ':');
		}
		n = end != NULL ? (size_t)(end - u) : strlen(u);
		if (n >= sizeof(host))
			n = sizeof(host) - 1;
		memcpy(host, u, n);
		host[n] = '\0';
		l->upstream_name = strdup(host);
	}
	if (l->upstream_name == NULL)
		return ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
	if (l->mode == PROXY_UPSTREAM_TLS && l->upstream_ca_file != NULL) {
		l->upstream_roots = x509_read_pem_file(l->upstream_ca_file, err);
		if (l->upstream_roots == NULL)
			return ac_err_wrap(err, "proxy listener %s upstream CA", l->listen);
	}
	return 0;
}

static void
listener_free(struct listener *l)
{
	free(l->listen);
	free(l->upstream);
	free(l->upstream_name);
	free(l->upstream_ca_file);
	allow_rules_destroy(atomic_load(&l->allow));
	sk_X509_pop_free(l->upstream_roots, X509_free);
	tls_slot_free(l->up_tls);
	tickets_clear(&l->tickets);
	pthread_mutex_destroy(&l->tickets.lock);
}

static void
proxy_free(struct proxy *p)
{
	if (p == NULL)
		return;
	for (int i = 0; p->workers != NULL && i < p->nworkers; i++) {
		struct worker *w = &p->workers[i];

		while (w->conns.tqh_first != NULL)
			conn_close(TAILQ_FIRST(&w->conns), PR_SHUTDOWN);
		dead_free(w);
		if (w->ls != NULL)
			stop_listening(w);
		free(w->ls);
		while (w->pool != NULL) {
			struct pbuf *next = w->pool->next_free;

			free(w->pool);
			w->pool = next;
		}
		if (w->epfd >= 0)
			close(w->epfd);
		if (w->wakefd >= 0)
			close(w->wakefd);
		verify_cache_free(w->vcache);
	}
	free(p->workers);
	for (size_t i = 0; p->ls != NULL && i < p->nls; i++)
		listener_free(&p->ls[i]);
	free(p->ls);
	tls_slot_free(p->server_tls);
	session_log_close(p->slog);
	for (size_t i = 0; i < p->nrevoked; i++)
		free(p->revoked[i]);
	free(p->revoked);
	pthread_mutex_destroy(&p->revoke_lock);
	while (p->retired_rules != NULL) {
		struct retired_rules *r = p->retired_rules;

		p->retired_rules = r->next;
		allow_rules_destroy(r->rules);
		free(r);
	}
	pthread_mutex_destroy(&p->rules_lock);
	free(p);
}

struct proxy *
proxy_start(const struct proxy_options *opts, const struct proxy_material *m, struct ac_err *err)
{
	struct proxy *p;
	struct built b;
	long cores;

	memset(&b, 0, sizeof(b));
	if (opts == NULL || opts->listener_count == 0) {
		ac_err_set(err, AC_ERR_INVALID, "proxy_config_invalid", "no proxy listeners");
		return NULL;
	}
	p = calloc(1, sizeof(*p));
	if (p == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		return NULL;
	}
	pthread_mutex_init(&p->revoke_lock, NULL);
	pthread_mutex_init(&p->rules_lock, NULL);
	p->o = *opts;
	if (p->o.handshake_timeout_ms <= 0)
		p->o.handshake_timeout_ms = 10000;
	if (p->o.idle_timeout_ms <= 0)
		p->o.idle_timeout_ms = 300000;
	if (p->o.max_connections <= 0)
		p->o.max_connections = 10000;
	if (p->o.drain_ms <= 0)
		p->o.drain_ms = 10000;
	if (p->o.verify_cache == 0)
		p->o.verify_cache = VERIFY_CACHE_DEFAULT_ENTRIES;
	cores = sysconf(_SC_NPROCESSORS_ONLN);
	p->nworkers = p->o.workers > 0 ? p->o.workers : (cores > 0 ? (int)cores : 1);
	p->nls = opts->listener_count;
	p->ls = calloc(p->nls, sizeof(*p->ls));
	if (p->ls == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		goto fail;
	}
	for (size_t i = 0; i < p->nls; i++) /* before any can fail: listener_free destroys it */
		pthread_mutex_init(&p->ls[i].tickets.lock, NULL);
	for (size_t i = 0; i < p->nls; i++)
		if (listener_init(&p->ls[i], &opts->listeners[i], i, err) != 0)
			goto fail;
	if (build_contexts(p, m, &b, err) != 0)
		goto fail;
	p->server_tls = tls_slot_new(b.server);
	b.server = NULL;
	if (p->server_tls == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		goto fail;
	}
	for (size_t i = 0; i < p->nls; i++) {
		if (b.up[i] == NULL)
			continue;
		p->ls[i].up_tls = tls_slot_new(b.up[i]);
		b.up[i] = NULL;
		if (p->ls[i].up_tls == NULL) {
			ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
			goto fail;
		}
	}
	built_free(p, &b);
	note_material(p, m);
	if (opts->session_log != NULL) {
		p->slog = session_log_open(opts->session_log, err);
		if (p->slog == NULL)
			goto fail;
	}
	p->workers = calloc((size_t)p->nworkers, sizeof(*p->workers));
	if (p->workers == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		goto fail;
	}
	for (int i = 0; i < p->nworkers; i++) {
		p->workers[i].epfd = -1;
		p->workers[i].wakefd = -1;
	}
	for (int i = 0; i < p->nworkers; i++)
		if (worker_init(p, &p->workers[i], err) != 0)
			goto fail;
	(void)worker_libctx(); /* the handshakes' library context, made now, not on a handshake */
	for (int i = 0; i < p->nworkers; i++) {
		if (pthread_create(&p->workers[i].thread, NULL, worker_main, &p->workers[i]) != 0) {
			ac_err_set(err, AC_ERR_INTERNAL, "thread_failed",
			           "cannot start a proxy worker");
			proxy_stop(p);
			return NULL;
		}
		p->workers[i].started = 1;
	}
	for (size_t i = 0; i < p->nls; i++)
		log_info("proxy_listening", "proxy %s (port %d) -> %s %s%s", p->ls[i].listen,
		         p->ls[i].port, p->ls[i].mode == PROXY_UPSTREAM_TLS ? "tls" : "tcp",
		         p->ls[i].upstream, p->ls[i].proxy_protocol ? " with PROXY v2" : "");
	return p;
fail:
	built_free(p, &b);
	proxy_free(p);
	return NULL;
}

int
proxy_set_allow(struct proxy *p, size_t listener, const char *const *allow, size_t count,
                struct ac_err *err)
{
	struct allow_rules *fresh, *old;
	struct retired_rules *r;

	if (listener >= p->nls)
		return ac_err_set(err, AC_ERR_INVALID, "proxy_config_invalid",
		                  "there is no proxy listener %zu", listener + 1);
	if ((r = calloc(1, sizeof(*r))) == NULL)
		return ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
	if ((fresh = allow_rules_new(p->ls[listener].listen, allow, count, err)) == NULL) {
		free(r);
		return -1;
	}
	pthread_mutex_lock(&p->rules_lock);
	old = atomic_exchange(&p->ls[listener].allow, fresh);
	r->rules = old;
	r->next = p->retired_rules;
	p->retired_rules = r;
	pthread_mutex_unlock(&p->rules_lock);
	atomic_fetch_add(&p->rules_gen, 1);
	wake_all(p);
	return 0;
}

int
proxy_bound_port(const struct proxy *p, size_t i)
{
	return p != NULL && i < p->nls ? p->ls[i].port : -1;
}

/* printf onto a growing heap buffer. */
static int appendf(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int
appendf(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(*buf != NULL ? *buf + *len : NULL, *buf != NULL ? *cap - *len : 0,
		              fmt, ap);
		va_end(ap);
		if (n < 0)
			return -1;
		if (*buf != NULL && *len + (size_t)n < *cap) {
			*len += (size_t)n;
			return 0;
		}
		{
			size_t want = (*cap + (size_t)n + 1) * 2;
			char *grown = realloc(*buf, want);

			if (grown == NULL)
				return -1;
			*buf = grown;
			*cap = want;
		}
	}
}

int
proxy_metrics_render(struct proxy *p, char **out, size_t *outlen)
{
	char *buf = NULL;
	size_t len = 0, cap = 0;
	int rc = 0;

	rc |= appendf(&buf, &len, &cap,
	              "# HELP agentca_proxy_active_connections Connections open now.\n"
	              "# TYPE agentca_proxy_active_connections gauge\n"
	              "agentca_proxy_active_connections %lld\n"
	              "# HELP agentca_proxy_accepted_total Connections accepted.\n"
	              "# TYPE agentca_proxy_accepted_total counter\n"
	              "agentca_proxy_accepted_total %llu\n"
	              "# HELP agentca_proxy_handshakes_total Client handshakes that verified and "
	              "were allowed.\n"
	              "# TYPE agentca_proxy_handshakes_total counter\n"
	              "agentca_proxy_handshakes_total %llu\n"
	              "# HELP agentca_proxy_sessions_total Sessions that reached the upstream "
	              "and ended.\n"
	              "# TYPE agentca_proxy_sessions_total counter\n"
	              "agentca_proxy_sessions_total %llu\n",
	              (long long)atomic_load(&p->active),
	              (unsigned long long)atomic_load(&p->accepted),
	              (unsigned long long)atomic_load(&p->handshakes_ok),
	              (unsigned long long)atomic_load(&p->sessions));
	rc |= appendf(&buf, &len, &cap,
	              "# HELP agentca_proxy_refused_total Connections refused, by reason.\n"
	              "# TYPE agentca_proxy_refused_total counter\n");
	for (int r = 0; r < PR_REFUSALS; r++)
		rc |= appendf(&buf, &len, &cap, "agentca_proxy_refused_total{reason=\"%s\"} %llu\n",
		              proxy_reason_names[r],
		              (unsigned long long)atomic_load(&p->by_reason[r]));
	rc |= appendf(&buf, &len, &cap,
	              "# HELP agentca_proxy_closed_total Sessions ended, by reason.\n"
	              "# TYPE agentca_proxy_closed_total counter\n");
	for (int r = PR_REFUSALS; r < PR_COUNT; r++)
		rc |= appendf(&buf, &len, &cap, "agentca_proxy_closed_total{reason=\"%s\"} %llu\n",
		              proxy_reason_names[r],
		              (unsigned long long)atomic_load(&p->by_reason[r]));
	rc |= appendf(
	    &buf, &len, &cap,
	    "# HELP agentca_proxy_bytes_total Bytes relayed, by direction.\n"
	    "# TYPE agentca_proxy_bytes_total counter\n"
	    "agentca_proxy_bytes_total{direction=\"up\"} %llu\n"
	    "agentca_proxy_bytes_total{direction=\"down\"} %llu\n"
	    "# HELP agentca_proxy_certificate_expiry_seconds Seconds until the proxy's own "
	    "certificate expires.\n"
	    "# TYPE agentca_proxy_certificate_expiry_seconds gauge\n"
	    "agentca_proxy_certificate_expiry_seconds %lld\n"
	    "# HELP agentca_proxy_bundle_sequence Sequence number of the trust bundle in use.\n"
	    "# TYPE agentca_proxy_bundle_sequence gauge\n"
	    "agentca_proxy_bundle_sequence %llu\n"
	    "# HELP agentca_proxy_session_log_dropped_total Session records dropped (writer "
	    "behind).\n"
	    "# TYPE agentca_proxy_session_log_dropped_total counter\n"
	    "agentca_proxy_session_log_dropped_total %llu\n",
	    (unsigned long long)atomic_load(&p->bytes_up),
	    (unsigned long long)atomic_load(&p->bytes_down),
	    (long long)(atomic_load(&p->cert_not_after) - time_now()),
	    (unsigned long long)atomic_load(&p->bundle_sequence),
	    (unsigned long long)session_log_dropped(p->slog));
	{
		struct verify_cache_stats sum, one;

		memset(&sum, 0, sizeof(sum));
		for (int i = 0; i < p->nworkers; i++) {
			verify_cache_stats(p->workers[i].vcache, &one);
			sum.hits += one.hits;
			sum.misses += one.misses;
			sum.stale += one.stale;
		}
		rc |= appendf(&buf, &len, &cap,
		              "# HELP agentca_proxy_verify_cache_total Client chain verifications: "
		              "taken from the cache (hit), done in full (miss), cached entries "
		              "refused as expired, not yet valid or revoked (stale).\n"
		              "# TYPE agentca_proxy_verify_cache_total counter\n"
		              "agentca_proxy_verify_cache_total{result=\"hit\"} %llu\n"
		              "agentca_proxy_verify_cache_total{result=\"miss\"} %llu\n"
		              "agentca_proxy_verify_cache_total{result=\"stale\"} %llu\n",
		              (unsigned long long)sum.hits, (unsigned long long)sum.misses,
		              (unsigned long long)sum.stale);
	}
	if (rc != 0) {
		free(buf);
		return -1;
	}
	*out = buf;
	*outlen = len;
	return 0;
}

void
proxy_stop(struct proxy *p)
{
	if (p == NULL)
		return;
	p->drain_deadline_ms = now_ms() + p->o.drain_ms;
	atomic_store(&p->stopping, 1);
	wake_all(p);
	for (int i = 0; i < p->nworkers; i++)
		if (p->workers[i].started)
			pthread_join(p->workers[i].thread, NULL);
	proxy_free(p);
}
