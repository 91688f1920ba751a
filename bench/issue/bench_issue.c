/*
 * bench_issue.c - issuances per second through the real engine (ca_issue) with durable
 * logging: every certificate is in the SQLite log (WAL, synchronous=FULL) before it counts.
 *
 *   bench_issue [--threads N] [--seconds S] [--csrs N]
 *
 * Makes a fresh P-256 CA in a temporary directory, pre-generates distinct P-256 CSRs (so
 * key generation is not measured), then runs N threads issuing for S seconds. Prints one
 * line of key=value pairs for run.sh to read.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "ca/authority.h"
#include "ca/issue.h"
#include "common/log.h"

struct csr_blob {
	char *pem;
	size_t len;
};

struct bench {
	struct issuer iss;
	struct csr_blob *csrs;
	size_t csr_count;
	double seconds;
	atomic_uint_fast64_t issued;
	atomic_uint_fast64_t failed;
};

static double
now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU seconds (user + system) used so far by every thread of the process. */
static double
cpu_seconds(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static int
make_csr(struct csr_blob *out)
{
	EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	X509_REQ *req = X509_REQ_new();
	BIO *bio = BIO_new(BIO_s_mem());
	BUF_MEM *mem;
	int rc = -1;

	if (key == NULL || req == NULL || bio == NULL)
		goto out;
	if (!X509_REQ_set_version(req, 0) || !X509_REQ_set_pubkey(req, key) ||
	    !X509_REQ_sign(req, key, EVP_sha256()) || !PEM_write_bio_X509_REQ(bio, req))
		goto out;
	BIO_get_mem_ptr(bio, &mem);
	out->pem = malloc(mem->length);
	if (out->pem == NULL)
		goto out;
	memcpy(out->pem, mem->data, mem->length);
	out->len = mem->length;
	rc = 0;
out:
	BIO_free(bio);
	X509_REQ_free(req);
	EVP_PKEY_free(key);
	return rc;
}

static void *
issue_loop(void *arg)
{
	struct bench *b = arg;
	double end = now_seconds() + b->seconds;
	size_t i = (size_t)rand();

	while (now_seconds() < end) {
		struct csr_blob *csr = &b->csrs[i++ % b->csr_count];
		struct issue_request req;
		struct issue_result res;
		struct ac_err err;

		memset(&req, 0, sizeof(req));
		memset(&res, 0, sizeof(res));
		ac_err_clear(&err);
		req.csr = (const unsigned char *)csr->pem;
		req.csr_len = csr->len;
		req.subject = "spiffe://bench.internal/agent";
		req.actor = "bench";
		if (ca_issue(&b->iss, &req, &res, &err) == 0)
			atomic_fetch_add(&b->issued, 1);
		else
			atomic_fetch_add(&b->failed, 1);
		issue_result_free(&res);
	}
	return NULL;
}

int
main(int argc, char **argv)
{
	struct ca_init_options init;
	struct ca_init_report report;
	struct store_options sopts;
	struct ca_policy policy;
	struct bench b;
	struct ac_err err;
	pthread_t threads[256];
	char dir[256], dbpath[300], cmd[300];
	const char *tmp = getenv("TMPDIR");
	int nthreads = 1, rc = 1;
	double t0, c0, elapsed, cpu;

	memset(&b, 0, sizeof(b));
	b.seconds = 5;
	b.csr_count = 1000;
	for (int i = 1; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--threads") == 0)
			nthreads = atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--seconds") == 0)
			b.seconds = atof(argv[i + 1]);
		else if (strcmp(argv[i], "--csrs") == 0)
			b.csr_count = (size_t)atoi(argv[i + 1]);
	}
	if (nthreads < 1 || nthreads > 256 || b.csr_count < 1)
		return 2;
	ac_log_set_level(AC_LOG_ERROR);
	ac_err_clear(&err);
	snprintf(dir, sizeof(dir), "%s/agentca-bench-XXXXXX", tmp != NULL ? tmp : "/tmp");
	if (mkdtemp(dir) == NULL)
		return 1;
	setenv("AGENTCA_PASSWORD", "bench-passphrase", 1);

	ca_init_options_defaults(&init);
	init.dir = dir;
	init.name = "Bench";
	init.trust_domain = "bench.internal";
	if (ca_init(&init, &report, &err) != 0)
		goto fail;
	b.iss.authority = ca_authority_load(dir, NULL, &err);
	if (b.iss.authority == NULL)
		goto fail;
	if (ca_policy_defaults(&policy, "bench.internal", &err) != 0)
		goto fail;
	b.iss.policy = &policy;
	snprintf(dbpath, sizeof(dbpath), "%s/agentca.db", dir);
	store_options_defaults(&sopts);
	sopts.path = dbpath;
	b.iss.store = store_open(&sopts, &err);
	if (b.iss.store == NULL)
		goto fail;

	b.csrs = calloc(b.csr_count, sizeof(*b.csrs));
	for (size_t i = 0; i < b.csr_count; i++)
		if (make_csr(&b.csrs[i]) != 0)
			return 1;

	c0 = cpu_seconds();
	t0 = now_seconds();
	for (int i = 0; i < nthreads; i++)
		pthread_create(&threads[i], NULL, issue_loop, &b);
	for (int i = 0; i < nthreads; i++)
		pthread_join(threads[i], NULL);
	elapsed = now_seconds() - t0;
	cpu = cpu_seconds() - c0;

	printf("threads=%d seconds=%.2f issued=%" PRIuFAST64 " failed=%" PRIuFAST64
	       " per_second=%.1f cpu_us_per_issue=%.1f\n",
	       nthreads, elapsed, atomic_load(&b.issued), atomic_load(&b.failed),
	       (double)atomic_load(&b.issued) / elapsed,
	       atomic_load(&b.issued) > 0 ? cpu * 1e6 / (double)atomic_load(&b.issued) : 0.0);
	{
		struct store_stats stats;

		store_stats(b.iss.store, &stats);
		printf("store: transactions=%" PRIu64 " units=%" PRIu64 " largest_batch=%" PRIu64
		       "\n",
		       stats.transactions, stats.units, stats.largest_batch);
	}
	rc = atomic_load(&b.failed) == 0 ? 0 : 1;
	store_close(b.iss.store);
	ca_authority_free(b.iss.authority);
	ca_policy_free(&policy);
	for (size_t i = 0; i < b.csr_count; i++)
		free(b.csrs[i].pem);
	free(b.csrs);
	goto out;
fail:
	fprintf(stderr, "bench_issue: %s\n", err.msg);
out:
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		rc = 1;
	return rc;
}
