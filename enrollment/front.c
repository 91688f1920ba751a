/*
 * front.c - the HTTPS front: OpenSSL terminates TLS, libmicrohttpd sees plaintext.
 *
 * Shape (after relayd and Redis ae.c): N worker threads, each with its own epoll loop, its
 * own listening socket per address (SO_REUSEPORT spreads accepts when N > 1) and its own
 * connections; workers share nothing but the peer table, the counters and the TLS slot.
 *
 * A connection goes through four states, each with its own timer list:
 *
 *   FIRST_BYTE  accepted; wait (first_byte_timeout_ms) for the first byte and peek at it.
 *               Not 0x16 (a TLS handshake record): close at once, count plaintext_refused.
 *   HANDSHAKE   non-blocking SSL_accept driven by epoll, bounded by handshake_timeout_ms
 *               (counted from the first byte).
 *   RELAY       a socketpair: one end goes to MHD (MHD_add_connection), we keep the other
 *               ("local") and copy bytes both ways through two 16 KiB buffers allocated
 *               once per connection: "up" (client -> MHD) and "down" (MHD -> client).
 *               A side is not read while the buffer it fills is full: that is the
 *               backpressure. Client EOF (close_notify or FIN) becomes shutdown(SHUT_WR)
 *               towards MHD; MHD closing its end, once "down" is flushed, becomes
 *               SSL_shutdown + shutdown(SHUT_WR) towards the client.
 *   LINGER      our side is closed for writing; read and drop what the client still sends
 *               until it closes too (at most LINGER_MS), so a close never turns into a reset
 *               that would destroy the tail of a response in the client's receive buffer.
 *
 * Timer lists are FIFOs: every entry of one list has the same timeout, so the head always
 * expires first and checking timers costs O(expired).
 *
 * The pump (relay_pump) is level-triggered: it tries every transfer that has room until none
 * makes progress (or PUMP_ROUNDS passes, then the connection goes on the ready list so that
 * a bulk transfer cannot starve the others), then registers interest in exactly what each
 * blocked transfer waits for (OpenSSL may need to read in order to write and the reverse).
 * A read known to return EAGAIN is not made: after a short read of "local", or when
 * OpenSSL holds no bytes after reading the client's socket (it reads ahead as much as its
 * buffer takes), that side is "dry" until epoll reports EPOLLIN on it again. Epoll is
 * level-triggered and the interest in EPOLLIN is registered whenever the read is skipped,
 * so bytes that arrive meanwhile, or were there after all, wake the pump; a skipped read
 * costs at most one extra epoll_wait, and saves about 30 read(2) calls per ACME order.
 *
 * The peer table maps the MHD-side descriptor to the connection's verified peer. It is an
 * array indexed by descriptor under one mutex. The entry is written before
 * MHD_add_connection (a fast request must find it) and removed when the relay ends. MHD
 * closes its descriptor on its own schedule, so the number may be reused by a newer
 * connection before the old relay has noticed: an insert simply overwrites, and a removal
 * only clears the entry if it still belongs to the connection removing it.
 *
 * libmicrohttpd set-up that makes MHD_add_connection() from our threads work (checked by
 * tests/unit/test_front.c against libmicrohttpd 0.9.75):
 *
 *   MHD_start_daemon(MHD_USE_NO_LISTEN_SOCKET | MHD_USE_INTERNAL_POLLING_THREAD |
 *                    MHD_USE_EPOLL | MHD_USE_ITC, 0, NULL, NULL, handler, cls,
 *                    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)60, MHD_OPTION_END);
 *
 *   - MHD_USE_NO_LISTEN_SOCKET: MHD binds nothing; port 0 is fine.
 *   - MHD_USE_INTERNAL_POLLING_THREAD: MHD runs its own loop; MHD_add_connection() from any
 *     thread queues the socket for that loop (it takes MHD's lock; safe from all workers).
 *   - MHD_USE_ITC: wakes MHD's loop so a freshly added connection is served at once rather
 *     than at the next timeout (MHD's documentation requires it for MHD_add_connection with
 *     internal polling; NO_LISTEN_SOCKET implies it in 0.9.75, we pass it explicitly).
 *   - MHD_USE_EPOLL: optional, scales past FD_SETSIZE (select's limit is 1024 descriptors).
 *   - MHD_OPTION_THREAD_POOL_SIZE: microhttpd.h says NO_LISTEN_SOCKET ignores it, but
 *     0.9.75 starts the pool and spreads added connections over its threads. The API
 *     (api.c) runs a pool of API_THREADS_PER_CORE threads per core, because a handler holds
 *     its thread until its certificate is durable; every integration test and benchmark
 *     runs through it. This file's own test (test_front.c) uses one MHD thread.
 *     THREAD_PER_CONNECTION also works but costs a thread per keep-alive connection; not
 *     used.
 *   - MHD_OPTION_CONNECTION_TIMEOUT bounds idle keep-alive connections: when MHD closes its
 *     end, the relay closes the TLS connection. front_stop() does not close idle keep-alive
 *     connections before drain_ms; call it before MHD_stop_daemon().
 *   - Keep-alive: libmicrohttpd 0.9.75 answers "Connection: close" (and closes) whenever a
 *     handler queues its response in the *first* call for a request, even a bodiless GET.
 *     Handlers must set *con_cls and return MHD_YES on the first call, and queue the
 *     response on a later one (the test handler does; checked with socketpairs and TCP).
 *   - MHD sees an AF_INET/AF_INET6 client address on a Unix socket, so with MHD_USE_ERROR_LOG
 *     it logs that TCP_NODELAY/TCP_CORK are not supported; harmless (no Nagle on AF_UNIX).
 *
 * SIGPIPE: OpenSSL writes to sockets with write(2), so a client that vanishes would raise
 * SIGPIPE. front_start() ignores SIGPIPE when its disposition is still the default.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>

#include "common/log.h"
#include "enrollment/front.h"

#define RELAY_BUF (16 * 1024) /* per direction, per connection */
#define LINGER_MS 2000
#define ACCEPT_BATCH 64 /* accepts per wake-up per listener, for fairness */
#define PUMP_ROUNDS 8   /* relay passes per wake-up before yielding */
#define MAX_EVENTS 128
#define ACCEPT_PAUSE_MS 100 /* after EMFILE and friends */
#define LIMIT_LOG_MS 1000   /* at most one "connection_limit" line per second per worker */

enum handle_kind { H_WAKE, H_LISTEN, H_TCP, H_LOCAL };

/* What an epoll event points at. */
struct handle {
	enum handle_kind kind;
	void *ptr; /* struct worker, struct listener or struct conn */
};

enum conn_state { CS_FIRST_BYTE = 0, CS_HANDSHAKE, CS_LINGER, CS_RELAY };
#define NTIMERS 3 /* the first three states have a timer list each */

/* A byte buffer: data in [r, w) of RELAY_BUF bytes. */
struct buf {
	unsigned char *p;
	size_t r, w;
};

struct worker;

struct conn {
	struct worker *w;
	enum conn_state state;
	struct handle h_tcp, h_local;
	int fd;     /* the client's TCP socket */
	int local;  /* our end of the socketpair, or -1 */
	int mhd_fd; /* MHD's end (the peer table key), or -1 */
	SSL *ssl;
	struct sockaddr_storage addr;
	socklen_t addrlen;
	char name[INET6_ADDRSTRLEN + 8]; /* "127.0.0.1:5555", "[::1]:5555": for logs */
	struct tls_peer peer;
	unsigned char *mem; /* both buffers, one allocation */
	struct buf up, down;
	uint32_t ev_tcp, ev_local; /* interest currently registered */
	int local_watched;         /* local is in epoll */
	int rd_want, wr_want;      /* SSL_ERROR_WANT_* of the blocked SSL_read / SSL_write */
	unsigned client_eof : 1, local_eof : 1, local_shut : 1, mhd_gone : 1;
	unsigned dead : 1, ready : 1;
	/* Known to have nothing to read until epoll says otherwise: tcp_dry when OpenSSL holds
	 * no bytes and its last read of the socket drained it (or returned EAGAIN), local_dry
	 * when the last read(2) of "local" was short or returned EAGAIN. An EPOLLIN (HUP, ERR)
	 * on that descriptor clears it; see relay_pump. */
	unsigned tcp_dry : 1, local_dry : 1;
	int timer; /* index into worker->timers, or -1 */
	int64_t deadline;
	TAILQ_ENTRY(conn) all_entry;
	TAILQ_ENTRY(conn) timer_entry;
	TAILQ_ENTRY(conn) ready_entry;
};
TAILQ_HEAD(conn_list, conn);

struct listener {
	struct handle h;
	int fd;
	size_t index; /* into front->addrs */
};

struct worker {
	struct front *f;
	int epfd, wakefd;
	struct handle h_wake;
	struct listener *ls; /* one per address; fd -1 once closed */
	pthread_t thread;
	int started;
	struct conn_list all, ready, dead;
	struct conn_list timers[NTIMERS];
	int timeouts[NTIMERS];
	int draining;
	int64_t drain_deadline;
	int64_t accept_resume; /* accepting is paused until then; 0: not paused */
	int64_t last_limit_log;
};

/*
 * The peer table: slots[fd] is the relay whose MHD-side descriptor is fd. Descriptors are
 * a process-wide namespace, so is the table: front_peer_of() never touches a struct front,
 * and a handler that runs late (after front_stop) gets "unknown", not freed memory. The
 * array is freed, under the lock, when the last front stops.
 */
struct peer_table {
	pthread_mutex_t lock;
	struct conn **slots;
	size_t cap;
	int fronts; /* fronts started and not yet stopped */
};

static struct peer_table peers = {PTHREAD_MUTEX_INITIALIZER, NULL, 0, 0};

struct front {
	struct front_options o; /* copied, with defaults filled in */
	size_t naddr;
	struct sockaddr_storage *addrs;
	socklen_t *addrlens;
	char **names; /* the listen strings, for messages */
	int *ports;
	int nworkers;
	struct worker *workers;
	int registered; /* counted in peers.fronts */
	atomic_int stopping;
	atomic_uint_fast64_t accepted, handshakes_ok, handshakes_failed, plaintext_refused;
	atomic_uint_fast64_t limit_refused;
	atomic_int_fast64_t active;
};

static void conn_close(struct conn *c);
static void relay_run(struct conn *c);

/* Milliseconds on the monotonic clock. */
static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* "addr:port" of a socket address, brackets around IPv6. */
static void
sockaddr_name(const struct sockaddr_storage *ss, char *out, size_t len)
{
	char host[INET6_ADDRSTRLEN] = "?";

	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;

		inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
		snprintf(out, len, "[%s]:%u", host, ntohs(s6->sin6_port));
	} else {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;

		inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
		snprintf(out, len, "%s:%u", host, ntohs(s4->sin_port));
	}
}

/* The first OpenSSL error as text (then the queue is cleared); fallback when empty. */
static void
ssl_reason(char *out, size_t len, const char *fallback)
{
	unsigned long e = ERR_peek_last_error();

	if (e != 0)
		ERR_error_string_n(e, out, len);
	else
		snprintf(out, len, "%s", fallback);
	ERR_clear_error();
}

/*
 * Peer table.
 */

/* Record c under fd (overwriting a stale entry left by a relay whose MHD side has gone). */
static int
table_put(struct peer_table *t, int fd, struct conn *c)
{
	int rc = -1;

	pthread_mutex_lock(&t->lock);
	if ((size_t)fd >= t->cap) {
		size_t cap = t->cap == 0 ? 1024 : t->cap;
		struct conn **slots;

		while (cap <= (size_t)fd)
			cap *= 2;
		slots = realloc(t->slots, cap * sizeof(*slots));
		if (slots == NULL)
			goto out;
		memset(slots + t->cap, 0, (cap - t->cap) * sizeof(*slots));
		t->slots = slots;
		t->cap = cap;
	}
	t->slots[fd] = c;
	rc = 0;
out:
	pthread_mutex_unlock(&t->lock);
	return rc;
}

/* Forget fd, but only if the entry is still c's. */
static void
table_del(struct peer_table *t, int fd, struct conn *c)
{
	pthread_mutex_lock(&t->lock);
	if (fd >= 0 && (size_t)fd < t->cap && t->slots[fd] == c)
		t->slots[fd] = NULL;
	pthread_mutex_unlock(&t->lock);
}

/*
 * Epoll interest and timers.
 */

/* Register, change or drop (mask 0 keeps it registered) interest in fd. */
static int
watch(struct worker *w, int fd, struct handle *h, uint32_t *cur, uint32_t want, int add)
{
	struct epoll_event ev;

	if (!add && *cur == want)
		return 0;
	memset(&ev, 0, sizeof(ev));
	ev.events = want;
	ev.data.ptr = h;
	if (epoll_ctl(w->epfd, add ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, &ev) != 0) {
		log_error("front_epoll_failed", "epoll_ctl on descriptor %d: %s", fd,
		          strerror(errno));
		return -1;
	}
	*cur = want;
	return 0;
}

/*
 * Leave the epoll set, then close. close() alone is not enough: epoll forgets a descriptor
 * only when the last reference to the open file goes, and a fork() elsewhere in the process
 * (popen, a reload command) holds copies until its exec, so events could still arrive for a
 * connection already freed.
 */
static void
unwatch_close(struct worker *w, int fd, int watched)
{
	if (watched && epoll_ctl(w->epfd, EPOLL_CTL_DEL, fd, NULL) != 0 && errno != ENOENT)
		log_error("front_epoll_failed", "epoll_ctl(DEL) on descriptor %d: %s", fd,
		          strerror(errno));
	close(fd);
}

/* Take c off its timer list. */
static void
timer_clear(struct conn *c)
{
	if (c->timer >= 0)
		TAILQ_REMOVE(&c->w->timers[c->timer], c, timer_entry);
	c->timer = -1;
}

/* Put c at the tail of timer list q (its deadline is now + that list's timeout). */
static void
timer_set(struct conn *c, int q)
{
	timer_clear(c);
	c->timer = q;
	c->deadline = now_ms() + c->w->timeouts[q];
	TAILQ_INSERT_TAIL(&c->w->timers[q], c, timer_entry);
}

/* Close what has expired: slow first bytes, slow handshakes, lingering closes. */
static void
timers_expire(struct worker *w, int64_t now)
{
	struct conn *c;

	for (int q = 0; q < NTIMERS; q++) {
		while ((c = TAILQ_FIRST(&w->timers[q])) != NULL && c->deadline <= now) {
			if (q == CS_HANDSHAKE) {
				atomic_fetch_add(&w->f->handshakes_failed, 1);
				log_warn("tls_handshake_failed",
				         "%s: handshake timed out after %d ms", c->name,
				         w->timeouts[q]);
			} else if (q == CS_FIRST_BYTE) {
				log_debug("front_idle", "%s: nothing received in %d ms", c->name,
				          w->timeouts[q]);
			}
			conn_close(c);
		}
	}
}

/* How long epoll_wait may sleep: until the next deadline, or 0 with work ready. */
static int
next_timeout(struct worker *w, int64_t now)
{
	int64_t next = -1, d;
	struct conn *c;

	if (!TAILQ_EMPTY(&w->ready))
		return 0;
	for (int q = 0; q < NTIMERS; q++)
		if ((c = TAILQ_FIRST(&w->timers[q])) != NULL && (next < 0 || c->deadline < next))
			next = c->deadline;
	if (w->accept_resume != 0 && (next < 0 || w->accept_resume < next))
		next = w->accept_resume;
	if (w->draining && (next < 0 || w->drain_deadline < next))
		next = w->drain_deadline;
	if (next < 0)
		return -1;
	d = next - now;
	return d < 0 ? 0 : d > 60000 ? 60000 : (int)d;
}

/*
 * Connection lifetime.
 */

/* Close everything c holds; the memory is freed after the current batch of events. */
static void
conn_close(struct conn *c)
{
	struct worker *w = c->w;

	if (c->dead)
		return;
	timer_clear(c);
	if (c->ready)
		TAILQ_REMOVE(&w->ready, c, ready_entry);
	c->ready = 0;
	TAILQ_REMOVE(&w->all, c, all_entry);
	if (c->mhd_fd >= 0)
		table_del(&peers, c->mhd_fd, c);
	c->mhd_fd = -1;
	SSL_free(c->ssl);
	c->ssl = NULL;
	if (c->local >= 0)
		unwatch_close(w, c->local, c->local_watched);
	c->local = -1;
	c->local_watched = 0;
	if (c->fd >= 0)
		unwatch_close(w, c->fd, 1);
	c->fd = -1;
	free(c->mem);
	c->mem = NULL;
	c->dead = 1;
	atomic_fetch_sub(&w->f->active, 1);
	TAILQ_INSERT_TAIL(&w->dead, c, all_entry);
}

/* Free the connections closed during this batch. */
static void
dead_free(struct worker *w)
{
	struct conn *c;

	while ((c = TAILQ_FIRST(&w->dead)) != NULL) {
		TAILQ_REMOVE(&w->dead, c, all_entry);
		free(c);
	}
}

/* Accept what is waiting on l (a bounded batch), refusing beyond max_connections. */
static void
accept_batch(struct worker *w, struct listener *l)
{
	struct front *f = w->f;
	struct conn *c;
	int64_t now;

	for (int i = 0; i < ACCEPT_BATCH && l->fd >= 0; i++) {
		struct sockaddr_storage ss;
		socklen_t sslen = sizeof(ss);
		int fd;

		fd = accept4(l->fd, (struct sockaddr *)&ss, &sslen, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
				continue;
			/* EMFILE, ENFILE, ENOBUFS, ENOMEM: back off instead of spinning. */
			log_error("front_accept_failed", "%s: accept: %s", f->names[l->index],
			          strerror(errno));
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			    errno == ENOMEM) {
				w->accept_resume = now_ms() + ACCEPT_PAUSE_MS;
				for (size_t j = 0; j < f->naddr; j++)
					if (w->ls[j].fd >= 0)
						epoll_ctl(w->epfd, EPOLL_CTL_DEL, w->ls[j].fd,
						          NULL);
			}
			return;
		}
		if (atomic_fetch_add(&f->active, 1) >= f->o.max_connections) {
			atomic_fetch_sub(&f->active, 1);
			atomic_fetch_add(&f->limit_refused, 1);
			close(fd);
			now = now_ms();
			if (now - w->last_limit_log >= LIMIT_LOG_MS) {
				w->last_limit_log = now;
				log_warn("connection_limit",
				         "%s: %d connections open, refusing more",
				         f->names[l->index], f->o.max_connections);
			}
			continue;
		}
		c = calloc(1, sizeof(*c));
		if (c == NULL) {
			atomic_fetch_sub(&f->active, 1);
			close(fd);
			log_error("front_accept_failed", "%s: out of memory", f->names[l->index]);
			continue;
		}
		/* An answer leaves as a few TLS records written one after another: without
		 * NODELAY, Nagle holds the last one back until the client's delayed ACK (40 ms). */
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
		c->w = w;
		c->fd = fd;
		c->local = c->mhd_fd = -1;
		c->timer = -1;
		c->h_tcp.kind = H_TCP;
		c->h_tcp.ptr = c;
		c->h_local.kind = H_LOCAL;
		c->h_local.ptr = c;
		memcpy(&c->addr, &ss, sslen);
		c->addrlen = sslen;
		sockaddr_name(&ss, c->name, sizeof(c->name));
		c->state = CS_FIRST_BYTE;
		TAILQ_INSERT_TAIL(&w->all, c, all_entry);
		atomic_fetch_add(&f->accepted, 1);
		if (watch(w, fd, &c->h_tcp, &c->ev_tcp, EPOLLIN, 1) != 0) {
			conn_close(c);
			continue;
		}
		timer_set(c, CS_FIRST_BYTE);
	}
}

/* Peek at the first byte: a TLS handshake record goes on to SSL_accept, anything else is
 * closed with nothing sent back. */
static void
first_byte(struct conn *c)
{
	struct front *f = c->w->f;
	unsigned char b;
	SSL_CTX *ctx;
	ssize_t n;

	n = recv(c->fd, &b, 1, MSG_PEEK);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (n <= 0) {
		conn_close(c); /* closed or reset before saying anything */
		return;
	}
	if (b != 0x16) {
		atomic_fetch_add(&f->plaintext_refused, 1);
		log_warn("plaintext_refused", "%s: not a TLS handshake (first byte 0x%02x), closed",
		         c->name, b);
		conn_close(c);
		return;
	}
	ctx = tls_slot_acquire(f->o.tls);
	if (ctx == NULL) {
		log_error("front_no_tls_context", "%s: no TLS context installed", c->name);
		conn_close(c);
		return;
	}
	c->ssl = SSL_new(ctx);
	SSL_CTX_free(ctx); /* the SSL holds its own reference */
	if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1) {
		char why[256];

		ssl_reason(why, sizeof(why), "SSL_new failed");
		log_error("front_ssl_failed", "%s: %s", c->name, why);
		conn_close(c);
		return;
	}
	/* Partial writes from a buffer that moves; a FIN without close_notify is a half-close
	 * (HTTP frames its own messages, so truncation is detected above us). */
	SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_set_options(c->ssl, SSL_OP_IGNORE_UNEXPECTED_EOF);
	/* Read ahead: one read(2) takes a record's header and body (and whatever follows)
	 * instead of one for the 5-byte header and one for the rest. Bytes OpenSSL holds are
	 * never left waiting for epoll: the pump calls SSL_read until it wants more, right
	 * after the handshake too, and requeues itself when it stops early. */
	SSL_set_read_ahead(c->ssl, 1);
	SSL_set_accept_state(c->ssl);
	c->state = CS_HANDSHAKE;
	timer_set(c, CS_HANDSHAKE);
	relay_run(c);
}

/* Socketpair, peer table entry, MHD_add_connection: the connection becomes a relay. */
static int
relay_start(struct conn *c)
{
	struct front *f = c->w->f;
	struct ac_err err;
	int sv[2];

	ac_err_clear(&err);
	if (tls_peer_from_ssl(c->ssl, &c->peer, &err) != 0) {
		log_warn("tls_peer_unreadable", "%s: %s", c->name, err.msg);
		return -1;
	}
	c->mem = malloc(2 * RELAY_BUF);
	if (c->mem == NULL) {
		log_error("front_relay_failed", "%s: out of memory", c->name);
		return -1;
	}
	c->up.p = c->mem;
	c->down.p = c->mem + RELAY_BUF;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) {
		log_error("front_relay_failed", "%s: socketpair: %s", c->name, strerror(errno));
		return -1;
	}
	c->local = sv[0];
	if (table_put(&peers, sv[1], c) != 0) {
		close(sv[1]);
		log_error("front_relay_failed", "%s: out of memory", c->name);
		return -1;
	}
	c->mhd_fd = sv[1];
	/* From here MHD owns sv[1], and closes it even on failure. */
	if (MHD_add_connection(f->o.mhd, sv[1], (const struct sockaddr *)&c->addr, c->addrlen) !=
	    MHD_YES) {
		log_error("front_relay_failed", "%s: MHD_add_connection: %s", c->name,
		          strerror(errno));
		return -1;
	}
	if (watch(c->w, c->local, &c->h_local, &c->ev_local, EPOLLIN, 1) != 0)
		return -1;
	c->local_watched = 1;
	return 0;
}

/* Drive SSL_accept; on success start the relay, on failure count and log. */
static void
handshake(struct conn *c)
{
	struct front *f = c->w->f;
	char why[256];
	long vr;
	int rc, e;

	tls_error_queue_clear();
	rc = SSL_accept(c->ssl);
	if (rc == 1) {
		atomic_fetch_add(&f->handshakes_ok, 1);
		timer_clear(c);
		c->state = CS_RELAY;
		if (relay_start(c) != 0) {
			conn_close(c);
			return;
		}
		relay_run(c);
		return;
	}
	e = SSL_get_error(c->ssl, rc);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		if (watch(c->w, c->fd, &c->h_tcp, &c->ev_tcp,
		          e == SSL_ERROR_WANT_READ ? EPOLLIN : EPOLLOUT, 0) != 0)
			conn_close(c);
		return;
	}
	if (e == SSL_ERROR_SYSCALL && ERR_peek_last_error() == 0)
		snprintf(why, sizeof(why), "%s",
		         errno != 0 ? strerror(errno) : "connection closed during the handshake");
	else
		ssl_reason(why, sizeof(why), "handshake failed");
	vr = SSL_get_verify_result(c->ssl);
	atomic_fetch_add(&f->handshakes_failed, 1);
	if (vr != X509_V_OK)
		log_warn("tls_handshake_failed", "%s: %s (client certificate: %s)", c->name, why,
		         X509_verify_cert_error_string(vr));
	else
		log_warn("tls_handshake_failed", "%s: %s", c->name, why);
	ERR_clear_error();
	conn_close(c);
}

/* Bytes held and room left in a buffer. */
static size_t
buf_len(const struct buf *b)
{
	return b->w - b->r;
}

/* Room at the tail, moving the data to the front first when the tail is full. */
static size_t
buf_room(struct buf *b)
{
	if (b->r == b->w)
		b->r = b->w = 0;
	if (b->w == RELAY_BUF && b->r > 0) {
		memmove(b->p, b->p + b->r, b->w - b->r);
		b->w -= b->r;
		b->r = 0;
	}
	return RELAY_BUF - b->w;
}

/*
 * Move bytes until nothing moves. Returns 0 to keep going, 1 when the relay is complete
 * (MHD closed and everything it sent is written to the client), -1 to abort.
 */
static int
relay_pump(struct conn *c, int *more)
{
	int progress, rounds = 0, e;
	ssize_t n;
	size_t room;

	*more = 0;
	do {
		progress = 0;
		/* client -> up (a read known to find nothing is left to epoll) */
		room = c->client_eof ? 0 : buf_room(&c->up);
		if (room > 0 && c->tcp_dry) {
			c->rd_want = SSL_ERROR_WANT_READ;
		} else if (room > 0) {
			tls_error_queue_clear();
			n = SSL_read(c->ssl, c->up.p + c->up.w, (int)room);
			if (n > 0) {
				c->up.w += (size_t)n;
				c->rd_want = 0;
				/* OpenSSL reads ahead as much as its buffer takes: holding nothing
				 * now means the socket had no more at that read. */
				c->tcp_dry = !SSL_has_pending(c->ssl);
				progress = 1;
			} else if ((e = SSL_get_error(c->ssl, (int)n)) == SSL_ERROR_WANT_READ ||
			           e == SSL_ERROR_WANT_WRITE) {
				c->rd_want = e;
				/* WANT_READ: OpenSSL used what it held and the socket said EAGAIN.
				 */
				c->tcp_dry = e == SSL_ERROR_WANT_READ;
			} else if (e == SSL_ERROR_ZERO_RETURN) {
				c->client_eof = 1;
				c->rd_want = 0;
				progress = 1;
			} else {
				char why[256];

				ssl_reason(why, sizeof(why), "connection lost");
				log_debug("front_client_error", "%s: read: %s", c->name, why);
				return -1;
			}
		}
		/* up -> MHD */
		if (buf_len(&c->up) > 0) {
			n = send(c->local, c->up.p + c->up.r, buf_len(&c->up), MSG_NOSIGNAL);
			if (n > 0) {
				c->up.r += (size_t)n;
				progress = 1;
			} else if (n < 0 && errno == EINTR) {
				progress = 1;
			} else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
				/* MHD closed: drop what it will never read, stop reading the
				 * client, and let its last response (if any) drain below. */
				c->up.r = c->up.w = 0;
				c->client_eof = 1;
				c->mhd_gone = 1;
				progress = 1;
			}
		}
		/* client finished: tell MHD (once everything it sent is delivered) */
		if (c->client_eof && buf_len(&c->up) == 0 && !c->local_shut) {
			c->local_shut = 1;
			if (!c->mhd_gone && shutdown(c->local, SHUT_WR) != 0 && errno != ENOTCONN)
				log_debug("front_relay_error", "%s: shutdown: %s", c->name,
				          strerror(errno));
		}
		/* MHD -> down (skipped when known empty; never once epoll no longer watches) */
		if (!c->local_eof && (room = buf_room(&c->down)) > 0 &&
		    !(c->local_dry && c->local_watched)) {
			n = read(c->local, c->down.p + c->down.w, room);
			if (n > 0) {
				c->down.w += (size_t)n;
				/* A stream socket returns less than asked only when drained. */
				c->local_dry = (size_t)n < room;
				progress = 1;
			} else if (n == 0) {
				c->local_eof = 1;
				progress = 1;
			} else if (errno == EINTR) {
				progress = 1;
			} else if (errno != EAGAIN && errno != EWOULDBLOCK) {
				c->local_eof = 1; /* ECONNRESET: MHD is gone */
				progress = 1;
			} else {
				c->local_dry = 1;
			}
		}
		/* down -> client */
		if (buf_len(&c->down) > 0) {
			tls_error_queue_clear();
			n = SSL_write(c->ssl, c->down.p + c->down.r, (int)buf_len(&c->down));
			if (n > 0) {
				c->down.r += (size_t)n;
				c->wr_want = 0;
				progress = 1;
			} else if ((e = SSL_get_error(c->ssl, (int)n)) == SSL_ERROR_WANT_READ ||
			           e == SSL_ERROR_WANT_WRITE) {
				c->wr_want = e;
			} else {
				char why[256];

				ssl_reason(why, sizeof(why), "connection lost");
				log_debug("front_client_error", "%s: write: %s", c->name, why);
				return -1;
			}
		}
		if (progress && ++rounds >= PUMP_ROUNDS) {
			*more = 1;
			break;
		}
	} while (progress);
	if (c->local_eof && buf_len(&c->down) == 0)
		return 1;
	return 0;
}

/* The relay is complete: close_notify, half-close, drop the MHD side, then linger. */
static void
relay_finish(struct conn *c)
{
	ERR_clear_error();
	if (SSL_shutdown(c->ssl) < 0)
		ERR_clear_error(); /* best effort: the client may be gone or not reading */
	if (shutdown(c->fd, SHUT_WR) != 0) {
		conn_close(c);
		return;
	}
	table_del(&peers, c->mhd_fd, c);
	c->mhd_fd = -1;
	unwatch_close(c->w, c->local, c->local_watched);
	c->local = -1;
	c->local_watched = 0;
	free(c->mem);
	c->mem = NULL;
	c->state = CS_LINGER;
	if (c->ready)
		TAILQ_REMOVE(&c->w->ready, c, ready_entry);
	c->ready = 0;
	if (watch(c->w, c->fd, &c->h_tcp, &c->ev_tcp, EPOLLIN, 0) != 0) {
		conn_close(c);
		return;
	}
	timer_set(c, CS_LINGER);
}

/* Read and drop until the client closes. */
static void
linger_read(struct conn *c)
{
	unsigned char sink[4096];
	ssize_t n;

	for (;;) {
		n = recv(c->fd, sink, sizeof(sink), 0);
		if (n > 0)
			continue;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		conn_close(c);
		return;
	}
}

/* Run whatever the connection's state calls for. */
static void
relay_run(struct conn *c)
{
	uint32_t tcp = 0, local = 0;
	int rc, more;

	switch (c->state) {
	case CS_FIRST_BYTE:
		first_byte(c);
		return;
	case CS_HANDSHAKE:
		handshake(c);
		return;
	case CS_LINGER:
		linger_read(c);
		return;
	case CS_RELAY:
		break;
	}
	rc = relay_pump(c, &more);
	if (rc < 0) {
		conn_close(c);
		return;
	}
	if (rc == 1) {
		relay_finish(c);
		return;
	}
	if (more && !c->ready) {
		c->ready = 1;
		TAILQ_INSERT_TAIL(&c->w->ready, c, ready_entry);
	}
	/* Interest in what each blocked transfer waits for. */
	if (!c->client_eof && buf_len(&c->up) < RELAY_BUF)
		tcp |= c->rd_want == SSL_ERROR_WANT_WRITE ? EPOLLOUT : EPOLLIN;
	if (buf_len(&c->down) > 0)
		tcp |= c->wr_want == SSL_ERROR_WANT_READ ? EPOLLIN : EPOLLOUT;
	if (!c->local_eof && buf_len(&c->down) < RELAY_BUF)
		local |= EPOLLIN;
	if (buf_len(&c->up) > 0)
		local |= EPOLLOUT;
	if (watch(c->w, c->fd, &c->h_tcp, &c->ev_tcp, tcp, 0) != 0) {
		conn_close(c);
		return;
	}
	if (c->local_watched && watch(c->w, c->local, &c->h_local, &c->ev_local, local, 0) != 0)
		conn_close(c);
}

/* An event on the client's socket. */
static void
on_tcp(struct conn *c, uint32_t events)
{
	/* Reset, or both directions closed: nothing more can reach the client. */
	if (c->state == CS_RELAY && (events & (EPOLLERR | EPOLLHUP))) {
		log_debug("front_client_error", "%s: connection reset", c->name);
		conn_close(c);
		return;
	}
	if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
		c->tcp_dry = 0;
	relay_run(c);
}

/* An event on our end of the socketpair. */
static void
on_local(struct conn *c, uint32_t events)
{
	/* MHD closed its end. epoll reports that whatever the mask says, so stop watching
	 * (or it would spin while "down" is full); the pump reads the rest when it has room. */
	if ((events & (EPOLLHUP | EPOLLERR)) && c->local_watched) {
		epoll_ctl(c->w->epfd, EPOLL_CTL_DEL, c->local, NULL);
		c->local_watched = 0;
	}
	if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
		c->local_dry = 0;
	relay_run(c);
}

/* Stop accepting, drop connections that have not finished a handshake, start the drain. */
static void
drain_begin(struct worker *w)
{
	struct conn *c, *next;

	if (w->draining)
		return;
	w->draining = 1;
	w->drain_deadline = now_ms() + w->f->o.drain_ms;
	w->accept_resume = 0;
	for (size_t i = 0; i < w->f->naddr; i++) {
		if (w->ls[i].fd >= 0) {
			unwatch_close(w, w->ls[i].fd, 1); /* ENOENT when paused */
			w->ls[i].fd = -1;
		}
	}
	for (c = TAILQ_FIRST(&w->all); c != NULL; c = next) {
		next = TAILQ_NEXT(c, all_entry);
		if (c->state == CS_FIRST_BYTE || c->state == CS_HANDSHAKE)
			conn_close(c);
	}
}

/* Re-arm the listeners after an accept pause. */
static void
accept_resume(struct worker *w)
{
	uint32_t cur;

	w->accept_resume = 0;
	for (size_t i = 0; i < w->f->naddr; i++) {
		cur = 0;
		if (w->ls[i].fd >= 0)
			watch(w, w->ls[i].fd, &w->ls[i].h, &cur, EPOLLIN, 1);
	}
}

/* The worker thread: one epoll loop. */
static void *
worker_main(void *arg)
{
	struct worker *w = arg;
	struct epoll_event evs[MAX_EVENTS];
	struct conn_list batch;
	struct conn *c;
	uint64_t v;
	int64_t now;
	int n;

	for (;;) {
		now = now_ms();
		timers_expire(w, now);
		if (w->accept_resume != 0 && now >= w->accept_resume && !w->draining)
			accept_resume(w);
		if (w->draining && (TAILQ_EMPTY(&w->all) || now >= w->drain_deadline))
			break;
		dead_free(w);
		n = epoll_wait(w->epfd, evs, MAX_EVENTS, next_timeout(w, now));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			log_error("front_epoll_failed", "epoll_wait: %s", strerror(errno));
			break;
		}
		for (int i = 0; i < n; i++) {
			struct handle *h = evs[i].data.ptr;

			switch (h->kind) {
			case H_WAKE:
				if (read(w->wakefd, &v, sizeof(v)) < 0 && errno != EAGAIN)
					log_error("front_wake_failed", "eventfd: %s",
					          strerror(errno));
				if (atomic_load(&w->f->stopping))
					drain_begin(w);
				break;
			case H_LISTEN:
				if (!w->draining)
					accept_batch(w, h->ptr);
				break;
			case H_TCP:
				c = h->ptr;
				if (!c->dead)
					on_tcp(c, evs[i].events);
				break;
			case H_LOCAL:
				c = h->ptr;
				if (!c->dead)
					on_local(c, evs[i].events);
				break;
			}
		}
		/* Connections that yielded in the middle of a transfer get another turn. */
		TAILQ_INIT(&batch);
		TAILQ_CONCAT(&batch, &w->ready, ready_entry);
		while ((c = TAILQ_FIRST(&batch)) != NULL) {
			TAILQ_REMOVE(&batch, c, ready_entry);
			c->ready = 0;
			relay_run(c);
		}
	}
	while ((c = TAILQ_FIRST(&w->all)) != NULL)
		conn_close(c);
	dead_free(w);
	return NULL;
}

/*
 * Start-up.
 */

/* "127.0.0.1:8443" or "[::1]:8443" (numeric addresses only) into a socket address. */
static int
parse_listen(const char *s, struct sockaddr_storage *ss, socklen_t *len, struct ac_err *err)
{
	char host[INET6_ADDRSTRLEN];
	const char *colon, *hs, *he;
	char *end;
	long port;

	memset(ss, 0, sizeof(*ss));
	if (s == NULL)
		return ac_err_set(err, AC_ERR_INVALID, "listen_invalid", "empty listen address");
	if (s[0] == '[') {
		hs = s + 1;
		he = strchr(s, ']');
		if (he == NULL || he[1] != ':')
			goto bad;
		colon = he + 1;
	} else {
		hs = s;
		colon = strrchr(s, ':');
		if (colon == NULL)
			goto bad;
		he = colon;
		if (memchr(hs, ':', (size_t)(he - hs)) != NULL)
			goto bad; /* IPv6 needs brackets */
	}
	if ((size_t)(he - hs) >= sizeof(host) || he == hs)
		goto bad;
	memcpy(host, hs, (size_t)(he - hs));
	host[he - hs] = '\0';
	errno = 0;
	port = strtol(colon + 1, &end, 10);
	if (colon[1] == '\0' || *end != '\0' || errno != 0 || port < 0 || port > 65535)
		goto bad;
	if (s[0] != '[') {
		struct sockaddr_in *s4 = (struct sockaddr_in *)ss;

		if (inet_pton(AF_INET, host, &s4->sin_addr) != 1)
			goto bad;
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)port);
		*len = sizeof(*s4);
	} else {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

		if (inet_pton(AF_INET6, host, &s6->sin6_addr) != 1)
			goto bad;
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		*len = sizeof(*s6);
	}
	return 0;
bad:
	return ac_err_set(err, AC_ERR_INVALID, "listen_invalid",
	                  "%s: not an address:port (IPv4 literal, or IPv6 literal in brackets)", s);
}

/* A non-blocking listening socket bound to ss. */
static int
listen_open(const struct sockaddr_storage *ss, socklen_t len, int reuseport, const char *name,
            struct ac_err *err)
{
	int fd, on = 1;

	fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		ac_err_set(err, AC_ERR_IO, "listen_failed", "%s: socket: %s", name,
		           strerror(errno));
		return -1;
	}
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 ||
	    (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) != 0) ||
	    (ss->ss_family == AF_INET6 &&
	     setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on)) != 0)) {
		ac_err_set(err, AC_ERR_IO, "listen_failed", "%s: setsockopt: %s", name,
		           strerror(errno));
		goto fail;
	}
	if (bind(fd, (const struct sockaddr *)ss, len) != 0) {
		ac_err_set(err, AC_ERR_IO, "listen_failed", "%s: bind: %s", name, strerror(errno));
		goto fail;
	}
	if (listen(fd, SOMAXCONN) != 0) {
		ac_err_set(err, AC_ERR_IO, "listen_failed", "%s: listen: %s", name,
		           strerror(errno));
		goto fail;
	}
	return fd;
fail:
	close(fd);
	return -1;
}

/* The port a socket is bound to. */
static int
bound_port(int fd, const char *name, struct ac_err *err)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
		return ac_err_set(err, AC_ERR_IO, "listen_failed", "%s: getsockname: %s", name,
		                  strerror(errno));
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

/* The port of a socket address. */
static int
addr_port(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
	return ntohs(((const struct sockaddr_in *)ss)->sin_port);
}

/* Set the port of a socket address. */
static void
set_port(struct sockaddr_storage *ss, int port)
{
	if (ss->ss_family == AF_INET6)
		((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
	else
		((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
}

/* Epoll, eventfd and one listening socket per address for worker w. */
static int
worker_init(struct front *f, struct worker *w, struct ac_err *err)
{
	uint32_t cur = 0;

	w->f = f;
	w->epfd = w->wakefd = -1;
	TAILQ_INIT(&w->all);
	TAILQ_INIT(&w->ready);
	TAILQ_INIT(&w->dead);
	for (int q = 0; q < NTIMERS; q++)
		TAILQ_INIT(&w->timers[q]);
	w->timeouts[CS_FIRST_BYTE] = f->o.first_byte_timeout_ms;
	w->timeouts[CS_HANDSHAKE] = f->o.handshake_timeout_ms;
	w->timeouts[CS_LINGER] = LINGER_MS;
	w->ls = calloc(f->naddr, sizeof(*w->ls));
	if (w->ls == NULL)
		return ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
	for (size_t i = 0; i < f->naddr; i++)
		w->ls[i].fd = -1;
	w->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (w->epfd < 0)
		return ac_err_set(err, AC_ERR_IO, "front_failed", "epoll_create1: %s",
		                  strerror(errno));
	w->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (w->wakefd < 0)
		return ac_err_set(err, AC_ERR_IO, "front_failed", "eventfd: %s", strerror(errno));
	w->h_wake.kind = H_WAKE;
	w->h_wake.ptr = w;
	if (watch(w, w->wakefd, &w->h_wake, &cur, EPOLLIN, 1) != 0)
		return ac_err_set(err, AC_ERR_IO, "front_failed", "epoll_ctl: %s", strerror(errno));
	for (size_t i = 0; i < f->naddr; i++) {
		struct listener *l = &w->ls[i];

		l->h.kind = H_LISTEN;
		l->h.ptr = l;
		l->index = i;
		l->fd =
		    listen_open(&f->addrs[i], f->addrlens[i], f->nworkers > 1, f->names[i], err);
		if (l->fd < 0)
			return -1;
		if (f->ports[i] == 0) {
			f->ports[i] = bound_port(l->fd, f->names[i], err);
			if (f->ports[i] < 0)
				return -1;
			set_port(&f->addrs[i], f->ports[i]); /* the other workers share it */
		}
		cur = 0;
		if (watch(w, l->fd, &l->h, &cur, EPOLLIN, 1) != 0)
			return ac_err_set(err, AC_ERR_IO, "listen_failed", "%s: epoll_ctl: %s",
			                  f->names[i], strerror(errno));
	}
	return 0;
}

/* Tell every worker to stop, wait for them, and free everything. */
static void
front_free(struct front *f)
{
	uint64_t one = 1;

	if (f == NULL)
		return;
	atomic_store(&f->stopping, 1);
	for (int i = 0; f->workers != NULL && i < f->nworkers; i++) {
		struct worker *w = &f->workers[i];

		if (w->started && write(w->wakefd, &one, sizeof(one)) != sizeof(one))
			log_error("front_wake_failed", "eventfd: %s", strerror(errno));
	}
	for (int i = 0; f->workers != NULL && i < f->nworkers; i++) {
		struct worker *w = &f->workers[i];

		if (w->started)
			pthread_join(w->thread, NULL);
		for (size_t j = 0; w->ls != NULL && j < f->naddr; j++)
			if (w->ls[j].fd >= 0)
				close(w->ls[j].fd);
		free(w->ls);
		if (w->wakefd >= 0)
			close(w->wakefd);
		if (w->epfd >= 0)
			close(w->epfd);
	}
	free(f->workers);
	for (size_t i = 0; f->names != NULL && i < f->naddr; i++)
		free(f->names[i]);
	free(f->names);
	free(f->addrs);
	free(f->addrlens);
	free(f->ports);
	if (f->registered) {
		pthread_mutex_lock(&peers.lock);
		if (--peers.fronts == 0) {
			free(peers.slots); /* every relay is gone: all entries are NULL */
			peers.slots = NULL;
			peers.cap = 0;
		}
		pthread_mutex_unlock(&peers.lock);
	}
	free(f);
}

/* Bind every address for every worker, then start the workers. */
struct front *
front_start(const struct front_options *opts, struct ac_err *err)
{
	struct sigaction sa;
	struct front *f;
	long ncpu;

	if (opts == NULL || opts->listen_count == 0 || opts->tls == NULL || opts->mhd == NULL) {
		ac_err_set(err, AC_ERR_INVALID, "front_config_invalid",
		           "the HTTPS front needs addresses, a TLS context and an MHD daemon");
		return NULL;
	}
	f = calloc(1, sizeof(*f));
	if (f == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		return NULL;
	}
	f->o = *opts;
	if (f->o.handshake_timeout_ms <= 0)
		f->o.handshake_timeout_ms = 10000;
	if (f->o.first_byte_timeout_ms <= 0)
		f->o.first_byte_timeout_ms = 5000;
	if (f->o.max_connections <= 0)
		f->o.max_connections = 10000;
	if (f->o.drain_ms <= 0)
		f->o.drain_ms = 10000;
	if (f->o.workers <= 0) {
		ncpu = sysconf(_SC_NPROCESSORS_ONLN);
		f->o.workers = ncpu > 0 ? (int)(ncpu > 256 ? 256 : ncpu) : 1;
	}
	f->nworkers = f->o.workers;
	f->naddr = opts->listen_count;
	f->o.listen = NULL; /* borrowed strings are copied into names */
	pthread_mutex_lock(&peers.lock);
	peers.fronts++;
	pthread_mutex_unlock(&peers.lock);
	f->registered = 1;
	f->addrs = calloc(f->naddr, sizeof(*f->addrs));
	f->addrlens = calloc(f->naddr, sizeof(*f->addrlens));
	f->names = calloc(f->naddr, sizeof(*f->names));
	f->ports = calloc(f->naddr, sizeof(*f->ports));
	f->workers = calloc((size_t)f->nworkers, sizeof(*f->workers));
	if (f->addrs == NULL || f->addrlens == NULL || f->names == NULL || f->ports == NULL ||
	    f->workers == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		goto fail;
	}
	for (int i = 0; i < f->nworkers; i++)
		f->workers[i].epfd = f->workers[i].wakefd = -1;
	for (size_t i = 0; i < f->naddr; i++) {
		if (parse_listen(opts->listen[i], &f->addrs[i], &f->addrlens[i], err) != 0)
			goto fail;
		f->names[i] = strdup(opts->listen[i]);
		if (f->names[i] == NULL) {
			ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
			goto fail;
		}
		f->ports[i] = addr_port(&f->addrs[i]);
	}

	/* OpenSSL writes with write(2): a vanished client must not kill the daemon. */
	if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) {
		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = SIG_IGN;
		sigemptyset(&sa.sa_mask);
		if (sigaction(SIGPIPE, &sa, NULL) != 0) {
			ac_err_set(err, AC_ERR_INTERNAL, "front_failed", "sigaction(SIGPIPE): %s",
			           strerror(errno));
			goto fail;
		}
	}

	for (int i = 0; i < f->nworkers; i++)
		if (worker_init(f, &f->workers[i], err) != 0)
			goto fail;
	for (int i = 0; i < f->nworkers; i++) {
		int rc = pthread_create(&f->workers[i].thread, NULL, worker_main, &f->workers[i]);

		if (rc != 0) {
			ac_err_set(err, AC_ERR_INTERNAL, "front_failed", "pthread_create: %s",
			           strerror(rc));
			goto fail;
		}
		f->workers[i].started = 1;
	}
	for (size_t i = 0; i < f->naddr; i++)
		log_info("front_listening", "HTTPS front listening on %s (port %d, %d workers)",
		         f->names[i], f->ports[i], f->nworkers);
	return f;
fail:
	front_free(f);
	return NULL;
}

/* The port bound for listen address i, or -1. */
int
front_bound_port(const struct front *f, size_t i)
{
	if (f == NULL || i >= f->naddr)
		return -1;
	return f->ports[i];
}

/* Copy the verified peer recorded for this MHD connection. 0: found; -1: not a relayed
 * connection (or no longer one), peer zeroed. Safe from any thread, even after front_stop:
 * f is not dereferenced (see struct peer_table). */
int
front_peer_of(struct front *f, struct MHD_Connection *conn, struct tls_peer *peer)
{
	const union MHD_ConnectionInfo *info;
	struct peer_table *t = &peers;
	int fd, rc = -1;

	(void)f;
	memset(peer, 0, sizeof(*peer));
	info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
	if (info == NULL)
		return -1;
	fd = info->connect_fd;
	pthread_mutex_lock(&t->lock);
	if (fd >= 0 && (size_t)fd < t->cap && t->slots[fd] != NULL) {
		*peer = t->slots[fd]->peer;
		rc = 0;
	}
	pthread_mutex_unlock(&t->lock);
	return rc;
}

/* A snapshot of the counters. */
void
front_stats(struct front *f, struct front_stats *out)
{
	int64_t active = atomic_load(&f->active);

	out->accepted = atomic_load(&f->accepted);
	out->handshakes_ok = atomic_load(&f->handshakes_ok);
	out->handshakes_failed = atomic_load(&f->handshakes_failed);
	out->plaintext_refused = atomic_load(&f->plaintext_refused);
	out->limit_refused = atomic_load(&f->limit_refused);
	out->active = active < 0 ? 0 : (uint64_t)active;
}

/* Stop accepting, let relays finish for up to drain_ms, close the rest, free. */
void
front_stop(struct front *f)
{
	front_free(f);
}
