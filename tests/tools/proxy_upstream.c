/*
 * proxy_upstream.c - a tiny upstream for the proxy's integration tests: it listens on
 * 127.0.0.1 (port 0, written to --port-file), optionally speaks TLS (--tls CERT KEY), and
 * records every connection it gets: one line "conn=N bytes=B" in --record when it ends, the
 * first bytes in DIR/conn-N.bin with --dump DIR. A test that must show "no byte reached the
 * upstream" looks for an empty record file. With --tls the line ends in "tls=full", or in
 * "tls=resumed" when the client resumed a session from a ticket this upstream issued.
 *
 *   proxy_upstream --port-file F --record F [--dump DIR] [--tls CERT KEY] MODE
 *     echo          send back everything, until EOF
 *     http          answer one HTTP request with "hello from upstream", then close
 *                   (a leading PROXY v2 header is skipped)
 *     sink N [MBPS] read N bytes (at most MBPS MB/s), answer "received N", then close
 *     eof           read until the client's EOF (its half-close), then answer "got N bytes"
 *                   and close: the answer can only arrive if half-close works end to end
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define DUMP_MAX 4096

static const char *record_path, *dump_dir, *mode;
static long long sink_expect;
static double sink_mbps;
static SSL_CTX *tls;
static atomic_int next_id;

struct peer {
	int fd, id;
	SSL *ssl;
};

static ssize_t
peer_read(struct peer *p, void *buf, size_t n)
{
	if (p->ssl != NULL) {
		int r = SSL_read(p->ssl, buf, (int)n);

		return r > 0 ? r : 0;
	}
	return read(p->fd, buf, n);
}

static int
peer_write(struct peer *p, const void *buf, size_t n)
{
	const char *c = buf;

	while (n > 0) {
		ssize_t w = p->ssl != NULL ? SSL_write(p->ssl, c, (int)n) : write(p->fd, c, n);

		if (w <= 0)
			return -1;
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

static void
record(int id, long long bytes, const char *note)
{
	char line[256];
	FILE *fp = fopen(record_path, "a");

	if (fp == NULL)
		return;
	snprintf(line, sizeof(line), "conn=%d bytes=%lld%s%s\n", id, bytes, note[0] ? " " : "",
	         note);
	fputs(line, fp);
	fclose(fp);
}

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *
serve(void *arg)
{
	struct peer *p = arg;
	static const unsigned char v2sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
	                                        0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
	unsigned char buf[65536], dump[DUMP_MAX];
	size_t dumped = 0;
	long long total = 0;
	double start = now_s();
	const char *note = "";
	ssize_t n;

	if (tls != NULL) {
		p->ssl = SSL_new(tls);
		SSL_set_fd(p->ssl, p->fd);
		if (SSL_accept(p->ssl) != 1) {
			record(p->id, 0, "tls_failed");
			goto out;
		}
		note = SSL_session_reused(p->ssl) ? "tls=resumed" : "tls=full";
	}
	while ((n = peer_read(p, buf, sizeof(buf))) > 0) {
		if (dumped < DUMP_MAX) {
			size_t take = (size_t)n < DUMP_MAX - dumped ? (size_t)n : DUMP_MAX - dumped;

			memcpy(dump + dumped, buf, take);
			dumped += take;
		}
		total += n;
		if (strcmp(mode, "echo") == 0) {
			if (peer_write(p, buf, (size_t)n) != 0)
				break;
		} else if (strcmp(mode, "http") == 0) {
			size_t skip = 0;

			if (dumped >= 16 && memcmp(dump, v2sig, 12) == 0)
				skip = 16 + ((size_t)dump[14] << 8 | dump[15]);
			if (dumped > skip && memmem(dump + skip, dumped - skip, "\r\n\r\n", 4)) {
				static const char reply[] =
				    "HTTP/1.1 200 OK\r\nContent-Length: 20\r\n"
				    "Connection: close\r\n\r\nhello from upstream\n";

				peer_write(p, reply, sizeof(reply) - 1);
				break;
			}
		} else if (strcmp(mode, "eof") == 0) {
			continue;
		} else { /* sink */
			if (sink_mbps > 0) {
				double due = start + (double)total / (sink_mbps * 1e6);
				double wait = due - now_s();

				if (wait > 0) {
					struct timespec ts = {
					    (time_t)wait,
					    (long)((wait - (double)(time_t)wait) * 1e9)};

					nanosleep(&ts, NULL);
				}
			}
			if (total >= sink_expect) {
				char reply[64];

				snprintf(reply, sizeof(reply), "received %lld\n", total);
				peer_write(p, reply, strlen(reply));
				break;
			}
		}
	}
	if (strcmp(mode, "eof") == 0 && n == 0) {
		char reply[64];

		snprintf(reply, sizeof(reply), "got %lld bytes\n", total);
		peer_write(p, reply, strlen(reply));
	}
	record(p->id, total, note);
	if (dump_dir != NULL && dumped > 0) {
		char path[4096];
		FILE *fp;

		snprintf(path, sizeof(path), "%s/conn-%d.bin", dump_dir, p->id);
		fp = fopen(path, "w");
		if (fp != NULL) {
			fwrite(dump, 1, dumped, fp);
			fclose(fp);
		}
	}
out:
	if (p->ssl != NULL) {
		SSL_shutdown(p->ssl);
		SSL_free(p->ssl);
	}
	close(p->fd);
	free(p);
	return NULL;
}

int
main(int argc, char **argv)
{
	const char *port_file = NULL, *cert = NULL, *key = NULL;
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	int lfd, one = 1, i;
	FILE *fp;
	char tmp[4096];

	signal(SIGPIPE, SIG_IGN);
	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--port-file") == 0 && i + 1 < argc)
			port_file = argv[++i];
		else if (strcmp(argv[i], "--record") == 0 && i + 1 < argc)
			record_path = argv[++i];
		else if (strcmp(argv[i], "--dump") == 0 && i + 1 < argc)
			dump_dir = argv[++i];
		else if (strcmp(argv[i], "--tls") == 0 && i + 2 < argc) {
			cert = argv[++i];
			key = argv[++i];
		} else
			break;
	}
	if (port_file == NULL || record_path == NULL || i >= argc) {
		fprintf(stderr, "usage: proxy_upstream --port-file F --record F [--dump DIR] "
		                "[--tls CERT KEY] echo|http|eof|sink N [MBPS]\n");
		return 2;
	}
	mode = argv[i];
	if (strcmp(mode, "sink") == 0) {
		if (i + 1 >= argc)
			return 2;
		sink_expect = atoll(argv[i + 1]);
		if (i + 2 < argc)
			sink_mbps = atof(argv[i + 2]);
	}
	if (cert != NULL) {
		tls = SSL_CTX_new(TLS_server_method());
		if (tls == NULL || SSL_CTX_use_certificate_chain_file(tls, cert) != 1 ||
		    SSL_CTX_use_PrivateKey_file(tls, key, SSL_FILETYPE_PEM) != 1) {
			ERR_print_errors_fp(stderr);
			return 1;
		}
	}
	fclose(fopen(record_path, "a"));
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) != 0 || listen(lfd, 128) != 0 ||
	    getsockname(lfd, (struct sockaddr *)&sin, &len) != 0) {
		perror("listen");
		return 1;
	}
	snprintf(tmp, sizeof(tmp), "%s.tmp", port_file);
	fp = fopen(tmp, "w");
	if (fp == NULL)
		return 1;
	fprintf(fp, "%d\n", ntohs(sin.sin_port));
	fclose(fp);
	rename(tmp, port_file);
	for (;;) {
		int fd = accept(lfd, NULL, NULL);
		struct peer *p;
		pthread_t t;

		if (fd < 0)
			continue;
		p = calloc(1, sizeof(*p));
		if (p == NULL) {
			close(fd);
			continue;
		}
		p->fd = fd;
		p->id = atomic_fetch_add(&next_id, 1) + 1;
		if (pthread_create(&t, NULL, serve, p) != 0) {
			close(fd);
			free(p);
			continue;
		}
		pthread_detach(t);
	}
}
