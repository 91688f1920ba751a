/*
 * bench_proxy.c - load for bench/proxy: the same client against agentca's proxy, HAProxy and
 * stunnel, and the upstream behind all three.
 *
 *   bench_proxy upstream PORT_FILE [CERT KEY CA]
 *       an epoll upstream on 127.0.0.1 (two threads): a connection whose first byte is 'D'
 *       is discarded (bulk), any other is echoed (handshake checks, ping-pong, idle). With
 *       CERT (leaf and chain), KEY and CA it speaks TLS 1.3 and requires a client
 *       certificate from CA (the re-encrypting variant); SIGUSR1 then writes the TLS
 *       handshakes it has seen, "full N resumed M group G", to PORT_FILE.stats.
 *   bench_proxy handshakes PORT CA CERT KEY SECONDS THREADS
 *       new mTLS connections (TLS 1.3, no resumption), each: handshake, 1 byte through the
 *       upstream and back, close. Prints "handshakes_per_s N handshakes COUNT".
 *   bench_proxy bulk PORT[,PORT...] CA CERT KEY SECONDS CONNECTIONS
 *       each connection writes 16 KiB blocks to the discarding upstream, SECONDS long
 *       (rounded to whole slices of BULK_SLICE). With several ports (at most PEERS_MAX)
 *       each of the CONNECTIONS threads holds a connection to every port, and the time is
 *       cut into slices of BULK_SLICE that go to the ports in turn (0 1 2 0 2 1 0 1 2 ...,
 *       see bulk_turn): every port gets SECONDS of slices spread over the whole run, so that
 *       the machine's slow and fast moments fall on every proxy alike. One line per PORT, in
 *       order: "bulk_mb_s N bytes COUNT"
 *   bench_proxy pingpong PORT[,PORT...] CA CERT KEY COUNT
 *       1 KiB written, 1 KiB echoed back, COUNT times on one connection per PORT (at most
 *       PEERS_MAX). With several ports the round trips are interleaved: each
 *       iteration makes one round trip on every connection, starting one connection later
 *       than the iteration before, so that every proxy meets the same moments of a shared
 *       machine and follows each of the others equally often. One line per PORT, in order:
 *       "p50_us N p99_us N p999_us N max_us N"
 *   bench_proxy idle PORT CA CERT KEY COUNT
 *       opens COUNT sessions (each proven with one echoed byte), prints "idle_ready", then
 *       holds them until stdin closes.
 *
 * Servers are verified against CA by the name "proxy.bench". Errors go to stderr and exit 1.
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
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "gateway-hook/worker_libctx.h"

#define BLOCK (16 * 1024)
#define PING 1024
#define PEERS_MAX 8     /* ports of one interleaved bulk or ping-pong run */
#define BULK_SLICE 0.25 /* seconds: the unit of an interleaved bulk run */

static int port; /* handshakes and idle: the proxy's port */
static SSL_CTX *client_ctx;
static double run_until;
static atomic_ullong done_count;

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
die(const char *what)
{
	fprintf(stderr, "bench_proxy: %s: %s\n", what, errno != 0 ? strerror(errno) : "");
	ERR_print_errors_fp(stderr);
	exit(1);
}

/* ---- the upstream ---- */

/*
 * Plain TCP, or TLS 1.3 with a client certificate required (the re-encrypting variant).
 * Two threads share the listening socket (EPOLLEXCLUSIVE), so that a TLS upstream's own
 * handshakes are not the one-core bottleneck all three proxies queue behind.
 */
#define UP_THREADS 2

struct up_conn {
	int fd;
	SSL *ssl; /* NULL: plain TCP */
	int handshaken;
	int mode; /* 0: unknown, 1: echo, 2: discard */
	size_t r, w;
	unsigned char buf[BLOCK];
};

static int up_lfd;
static SSL_CTX *up_ctx; /* NULL: plain TCP */
static const char *up_stats_path;
static atomic_ullong up_full, up_resumed;
static _Atomic int up_group; /* NID of the last negotiated key exchange group */
static volatile sig_atomic_t up_stats_wanted;

static void
on_sigusr1(int sig)
{
	(void)sig;
	up_stats_wanted = 1;
}

/* "full N resumed M group G" into PORT_FILE.stats: the TLS handshakes the upstream saw. */
static void
up_stats_write(void)
{
	char tmp[4096];
	int nid = atomic_load(&up_group);
	const char *group = nid != 0 ? OBJ_nid2sn(nid) : "-";
	FILE *fp;

	snprintf(tmp, sizeof(tmp), "%s.tmp", up_stats_path);
	fp = fopen(tmp, "w");
	if (fp == NULL)
		return;
	fprintf(fp, "full %llu resumed %llu group %s\n", atomic_load(&up_full),
	        atomic_load(&up_resumed), group != NULL ? group : "?");
	fclose(fp);
	rename(tmp, up_stats_path);
}

static void
up_watch(int ep, struct up_conn *c, uint32_t ev)
{
	struct epoll_event ee = {.events = ev, .data.ptr = c};

	epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ee);
}

/* >0 bytes, 0 would block (*want: the epoll event it waits for), -1 end or error. */
static ssize_t
up_io(struct up_conn *c, int writing, void *p, size_t n, uint32_t *want)
{
	if (c->ssl != NULL) {
		size_t done = 0;
		int ok;
		int code;

		ERR_clear_error(); /* SSL_get_error reads this thread's queue: no stale entries */
		ok = writing ? SSL_write_ex(c->ssl, p, n, &done) : SSL_read_ex(c->ssl, p, n, &done);
		if (ok == 1)
			return (ssize_t)done;
		code = SSL_get_error(c->ssl, ok);
		if (code == SSL_ERROR_WANT_READ || code == SSL_ERROR_WANT_WRITE) {
			*want = code == SSL_ERROR_WANT_WRITE ? EPOLLOUT : EPOLLIN;
			return 0;
		}
		return -1;
	}
	{
		ssize_t r = writing ? send(c->fd, p, n, MSG_NOSIGNAL) : read(c->fd, p, n);

		if (r > 0)
			return r;
		if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
			*want = writing ? EPOLLOUT : EPOLLIN;
			return 0;
		}
		return -1;
	}
}

static void
up_pump(int ep, struct up_conn *c)
{
	uint32_t want = EPOLLIN;

	for (;;) {
		ssize_t n;

		if (c->ssl != NULL && !c->handshaken) {
			int rc, code;

			ERR_clear_error();
			rc = SSL_do_handshake(c->ssl);

			if (rc != 1) {
				code = SSL_get_error(c->ssl, rc);
				if (code != SSL_ERROR_WANT_READ && code != SSL_ERROR_WANT_WRITE)
					goto gone;
				up_watch(ep, c, code == SSL_ERROR_WANT_WRITE ? EPOLLOUT : EPOLLIN);
				return;
			}
			c->handshaken = 1;
			atomic_fetch_add(SSL_session_reused(c->ssl) ? &up_resumed : &up_full, 1);
			atomic_store(&up_group, SSL_get_negotiated_group(c->ssl));
			continue;
		}
		if (c->w > c->r) { /* echo what is pending first */
			n = up_io(c, 1, c->buf + c->r, c->w - c->r, &want);
			if (n == 0) {
				up_watch(ep, c, want);
				return;
			}
			if (n < 0)
				goto gone;
			c->r += (size_t)n;
			continue;
		}
		c->r = c->w = 0;
		n = up_io(c, 0, c->buf, sizeof(c->buf), &want);
		if (n == 0) {
			up_watch(ep, c, want);
			return;
		}
		if (n < 0)
			goto gone;
		if (c->mode == 0)
			c->mode = c->buf[0] == 'D' ? 2 : 1;
		if (c->mode == 1)
			c->w = (size_t)n;
	}
gone:
	SSL_free(c->ssl);
	close(c->fd);
	free(c);
}

static void *
upstream_loop(void *arg)
{
	int ep = epoll_create1(0), one = 1;
	struct epoll_event ee, events[256];

	(void)arg;
	if (ep < 0)
		die("upstream epoll");
	ee.events = EPOLLIN | EPOLLEXCLUSIVE;
	ee.data.ptr = NULL;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, up_lfd, &ee) != 0)
		die("upstream epoll add");
	for (;;) {
		/* A timeout, so that a SIGUSR1 that landed in another thread is still seen. */
		int n = epoll_wait(ep, events, 256, 100);

		if (up_stats_wanted) {
			up_stats_wanted = 0;
			up_stats_write();
		}
		for (int i = 0; i < n; i++) {
			if (events[i].data.ptr == NULL) {
				int fd;

				while ((fd = accept4(up_lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
					struct up_conn *c = calloc(1, sizeof(*c));

					if (c == NULL || (up_ctx != NULL &&
					                  (c->ssl = SSL_new(up_ctx)) == NULL)) {
						free(c);
						close(fd);
						continue;
					}
					c->fd = fd;
					if (c->ssl != NULL) {
						SSL_set_fd(c->ssl, fd);
						SSL_set_accept_state(c->ssl);
					}
					setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
					ee.events = EPOLLIN;
					ee.data.ptr = c;
					epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ee);
				}
				continue;
			}
			up_pump(ep, events[i].data.ptr);
		}
	}
	return NULL;
}

/* The TLS upstream's context: CERT (leaf and chain) and KEY; clients must prove a
 * certificate from CA. Session tickets stay on (OpenSSL's default), as a real server's. */
static SSL_CTX *
upstream_tls_ctx(const char *cert, const char *key, const char *ca)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	if (ctx == NULL || SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1)
		die("upstream TLS context");
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"bench", 5);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	return ctx;
}

static _Noreturn void
run_upstream(const char *port_file, const char *cert, const char *key, const char *ca)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	int one = 1;
	pthread_t t[UP_THREADS - 1];
	char stats[4096];
	FILE *fp;

	if (cert != NULL)
		up_ctx = upstream_tls_ctx(cert, key, ca);
	snprintf(stats, sizeof(stats), "%s.stats", port_file);
	up_stats_path = stats;
	signal(SIGUSR1, on_sigusr1);
	up_lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	setsockopt(up_lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(up_lfd, (struct sockaddr *)&sin, sizeof(sin)) != 0 || listen(up_lfd, 4096) != 0 ||
	    getsockname(up_lfd, (struct sockaddr *)&sin, &len) != 0)
		die("upstream listen");
	fp = fopen(port_file, "w");
	if (fp == NULL)
		die(port_file);
	fprintf(fp, "%d\n", ntohs(sin.sin_port));
	fclose(fp);
	/* UP_THREADS - 1 more loops; this thread runs the last one. */
	for (int i = 0; i < UP_THREADS - 1; i++)
		if (pthread_create(&t[i], NULL, upstream_loop, NULL) != 0)
			die("upstream thread");
	upstream_loop(NULL);
	exit(0);
}

/* ---- clients ---- */

/* A verified mTLS connection to the proxy on to_port, or NULL. */
static SSL *
dial(int to_port, int *fdp)
{
	struct sockaddr_in sin;
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	SSL *ssl;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = htons((uint16_t)to_port);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0) {
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	ssl = SSL_new(client_ctx);
	SSL_set_fd(ssl, fd);
	SSL_set_tlsext_host_name(ssl, "proxy.bench");
	SSL_set1_host(ssl, "proxy.bench");
	SSL_set_connect_state(ssl);
	/* In the library context the proxy's handshakes run in (gateway-hook/worker_libctx.h):
	 * the clients share the machine's cores with the proxies, and their certificate parses
	 * and key share check cost less, for every peer alike. The client still verifies the
	 * proxy's whole chain and name. */
	if (worker_libctx_handshake(ssl) != 1) {
		SSL_free(ssl);
		close(fd);
		return NULL;
	}
	*fdp = fd;
	return ssl;
}

static int
write_all(SSL *ssl, const void *p, size_t n)
{
	size_t put;

	while (n > 0) {
		if (SSL_write_ex(ssl, p, n, &put) != 1)
			return -1;
		p = (const char *)p + put;
		n -= put;
	}
	return 0;
}

static int
read_all(SSL *ssl, void *p, size_t n)
{
	size_t got;

	while (n > 0) {
		if (SSL_read_ex(ssl, p, n, &got) != 1)
			return -1;
		p = (char *)p + got;
		n -= got;
	}
	return 0;
}

static void
hang_up(SSL *ssl, int fd)
{
	SSL_shutdown(ssl);
	SSL_free(ssl);
	close(fd);
}

static void *
handshake_worker(void *arg)
{
	(void)arg;
	while (now_s() < run_until) {
		int fd;
		unsigned char b = 'h';
		SSL *ssl = dial(port, &fd);

		if (ssl == NULL)
			continue;
		if (write_all(ssl, &b, 1) == 0 && read_all(ssl, &b, 1) == 0)
			atomic_fetch_add(&done_count, 1);
		hang_up(ssl, fd);
	}
	return NULL;
}

/* An interleaved bulk run (see the top of the file): its ports, its clock, its counts. */
static struct {
	int ports[PEERS_MAX];
	int n;
	long slices_each; /* of BULK_SLICE, per port */
	double start;
	pthread_barrier_t dialled, started;
	atomic_ullong bytes[PEERS_MAX];
} bulk;

/*
 * The port whose slice it is at time t (an index into bulk.ports). Cycles of slices alternate
 * 0 1 2 ... n-1 and 0 n-1 ... 2 1, so that every slice follows a slice of another port (whose
 * buffered bytes the proxy behind it is still working through when the slice begins), and
 * each port follows each of the others equally often (for 3 ports, every ordered pair once
 * in 6 slices).
 */
static int
bulk_turn(double t)
{
	long slice = (long)((t - bulk.start) / BULK_SLICE);
	int i = (int)(slice % bulk.n);

	return (slice / bulk.n) % 2 == 0 || i == 0 ? i : bulk.n - i;
}

static void *
bulk_worker(void *arg)
{
	static unsigned char block[BLOCK];
	SSL *ssl[PEERS_MAX];
	int fd[PEERS_MAX];

	(void)arg;
	for (int i = 0; i < bulk.n; i++)
		if ((ssl[i] = dial(bulk.ports[i], &fd[i])) == NULL)
			die("bulk connect");
	block[0] = 'D';
	/* Every connection of every thread is up before the clock starts. */
	if (pthread_barrier_wait(&bulk.dialled) == PTHREAD_BARRIER_SERIAL_THREAD) {
		bulk.start = now_s();
		run_until = bulk.start + (double)(bulk.n * bulk.slices_each) * BULK_SLICE;
	}
	pthread_barrier_wait(&bulk.started);
	for (double t = now_s(); t < run_until; t = now_s()) {
		int turn = bulk_turn(t);

		if (write_all(ssl[turn], block, sizeof(block)) != 0)
			die("bulk write");
		atomic_fetch_add(&bulk.bytes[turn], sizeof(block));
	}
	for (int i = 0; i < bulk.n; i++)
		hang_up(ssl[i], fd[i]);
	return NULL;
}

/* The comma-separated PORTS into ports (at most PEERS_MAX); their number. Dies on bad input. */
static int
ports_parse(const char *csv, int *ports)
{
	const char *at = csv;
	int n = 0;

	while (*at != '\0') {
		char *end;
		long v = strtol(at, &end, 10);

		if (n == PEERS_MAX || end == at || v <= 0 || v > 65535 ||
		    (*end != ',' && *end != '\0'))
			die("PORT[,PORT...] (at most 8)");
		ports[n++] = (int)v;
		at = *end == ',' ? end + 1 : end;
	}
	if (n == 0)
		die("no port");
	return n;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/*
 * COUNT 1 KiB round trips on one connection to each port of the comma-separated PORTS,
 * interleaved (see the top of the file); prints each connection's percentiles.
 */
static void
pingpong(const char *ports, int count)
{
	struct peer {
		SSL *ssl;
		int fd;
		double *rtt;
	} peers[PEERS_MAX];
	unsigned char msg[PING];
	int port_list[PEERS_MAX], n = ports_parse(ports, port_list);

	if (count <= 0)
		die("pingpong: COUNT must be positive");
	for (int i = 0; i < n; i++) {
		peers[i].ssl = dial(port_list[i], &peers[i].fd);
		peers[i].rtt = calloc((size_t)count, sizeof(double));
		if (peers[i].ssl == NULL || peers[i].rtt == NULL)
			die("pingpong connect");
	}
	memset(msg, 'p', sizeof(msg));
	for (int i = 0; i < count; i++) {
		for (int j = 0; j < n; j++) {
			struct peer *pr = &peers[(i + j) % n];
			double t0 = now_s();

			if (write_all(pr->ssl, msg, sizeof(msg)) != 0 ||
			    read_all(pr->ssl, msg, sizeof(msg)) != 0)
				die("pingpong");
			pr->rtt[i] = (now_s() - t0) * 1e6;
		}
	}
	for (int j = 0; j < n; j++) {
		double *rtt = peers[j].rtt;

		qsort(rtt, (size_t)count, sizeof(double), cmp_double);
		printf("p50_us %.0f p99_us %.0f p999_us %.0f max_us %.0f\n", rtt[count / 2],
		       rtt[count * 99 / 100], rtt[count * 999 / 1000], rtt[count - 1]);
		hang_up(peers[j].ssl, peers[j].fd);
		free(rtt);
	}
}

static void
run_threads(void *(*fn)(void *), int n)
{
	pthread_t *t = calloc((size_t)n, sizeof(*t));

	for (int i = 0; i < n; i++)
		if (pthread_create(&t[i], NULL, fn, NULL) != 0)
			die("thread");
	for (int i = 0; i < n; i++)
		pthread_join(t[i], NULL);
	free(t);
}

int
main(int argc, char **argv)
{
	const char *cmd;

	signal(SIGPIPE, SIG_IGN);
	if (argc < 3) {
		fprintf(stderr, "usage: bench_proxy upstream PORT_FILE [CERT KEY CA] | "
		                "handshakes|bulk|pingpong|idle PORT CA CERT KEY ...\n");
		return 2;
	}
	cmd = argv[1];
	if (strcmp(cmd, "upstream") == 0)
		run_upstream(argv[2], argc >= 6 ? argv[3] : NULL, argc >= 6 ? argv[4] : NULL,
		             argc >= 6 ? argv[5] : NULL);
	if (argc < 7)
		return 2;
	client_ctx = SSL_CTX_new(TLS_client_method());
	if (client_ctx == NULL || SSL_CTX_load_verify_locations(client_ctx, argv[3], NULL) != 1 ||
	    SSL_CTX_use_certificate_chain_file(client_ctx, argv[4]) != 1 ||
	    SSL_CTX_use_PrivateKey_file(client_ctx, argv[5], SSL_FILETYPE_PEM) != 1)
		die("client context");
	SSL_CTX_set_verify(client_ctx, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_min_proto_version(client_ctx, TLS1_3_VERSION);
	SSL_CTX_set_session_cache_mode(client_ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_options(client_ctx, SSL_OP_NO_TICKET);
	SSL_CTX_set1_groups_list(client_ctx, "P-256");

	if (strcmp(cmd, "handshakes") == 0) {
		double secs = atof(argv[6]), start = now_s();

		port = atoi(argv[2]);
		run_until = start + secs;
		run_threads(handshake_worker, argc > 7 ? atoi(argv[7]) : 1);
		printf("handshakes_per_s %.0f handshakes %llu\n",
		       (double)atomic_load(&done_count) / (now_s() - start),
		       atomic_load(&done_count));
		return 0;
	}
	if (strcmp(cmd, "bulk") == 0) {
		int threads = argc > 7 ? atoi(argv[7]) : 1;
		double each;

		bulk.n = ports_parse(argv[2], bulk.ports);
		bulk.slices_each = (long)(atof(argv[6]) / BULK_SLICE + 0.5);
		if (bulk.slices_each < 1)
			bulk.slices_each = 1;
		if (threads < 1 ||
		    pthread_barrier_init(&bulk.dialled, NULL, (unsigned)threads) != 0 ||
		    pthread_barrier_init(&bulk.started, NULL, (unsigned)threads) != 0)
			die("bulk: CONNECTIONS");
		run_threads(bulk_worker, threads);
		each = (double)bulk.slices_each * BULK_SLICE;
		for (int i = 0; i < bulk.n; i++)
			printf("bulk_mb_s %.1f bytes %llu\n",
			       (double)atomic_load(&bulk.bytes[i]) / 1e6 / each,
			       atomic_load(&bulk.bytes[i]));
		return 0;
	}
	if (strcmp(cmd, "pingpong") == 0) {
		pingpong(argv[2], atoi(argv[6]));
		return 0;
	}
	if (strcmp(cmd, "idle") == 0) {
		int count = atoi(argv[6]), opened = 0;
		SSL **ssl = calloc((size_t)count, sizeof(*ssl));
		int *fds = calloc((size_t)count, sizeof(int));
		char line[16];

		port = atoi(argv[2]);

		for (int i = 0; i < count; i++) {
			unsigned char b = 'i';

			ssl[i] = dial(port, &fds[i]);
			if (ssl[i] == NULL || write_all(ssl[i], &b, 1) != 0 ||
			    read_all(ssl[i], &b, 1) != 0)
				die("idle connect");
			opened++;
		}
		printf("idle_ready %d\n", opened);
		fflush(stdout);
		while (fgets(line, sizeof(line), stdin) != NULL)
			;
		for (int i = 0; i < count; i++)
			hang_up(ssl[i], fds[i]);
		free(ssl);
		free(fds);
		return 0;
	}
	return 2;
}
