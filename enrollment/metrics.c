/*
 * metrics.c - request, issuance and denial counters rendered as Prometheus text.
 * See metrics.h.
 */
#include "enrollment/metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <dirent.h>
#include <malloc.h>

/* Latency histogram bucket bounds, seconds. */
static const double latency_buckets[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5};
#define BUCKET_COUNT (sizeof(latency_buckets) / sizeof(latency_buckets[0]))

/* Status classes counted per route. */
static const int status_codes[] = {200, 201, 304, 400, 401, 403, 404, 405, 409, 413, 429, 500, 503};
#define STATUS_COUNT (sizeof(status_codes) / sizeof(status_codes[0]))

struct route_metrics {
	const char *name;
	uint64_t by_status[STATUS_COUNT + 1]; /* last: any other status */
	uint64_t buckets[BUCKET_COUNT];
	uint64_t count;
	double sum;
};

struct metrics {
	pthread_mutex_t lock;
	struct route_metrics routes[METRICS_ROUTES_MAX];
	size_t route_count;
	uint64_t issued, renewed;
	struct {
		const char *reason;
		uint64_t count;
	} denied[METRICS_REASONS_MAX];
	size_t denied_count;
};

struct metrics *
metrics_new(const char *const *route_names, size_t count)
{
	struct metrics *m;

	if (count > METRICS_ROUTES_MAX)
		return NULL;
	m = calloc(1, sizeof(*m));
	if (m == NULL)
		return NULL;
	pthread_mutex_init(&m->lock, NULL);
	for (size_t i = 0; i < count; i++)
		m->routes[i].name = route_names[i];
	m->route_count = count;
	return m;
}

void
metrics_free(struct metrics *m)
{
	if (m == NULL)
		return;
	pthread_mutex_destroy(&m->lock);
	free(m);
}

void
metrics_request(struct metrics *m, size_t route, int status, double seconds)
{
	struct route_metrics *r;
	size_t s;

	if (route >= m->route_count)
		return;
	r = &m->routes[route];
	for (s = 0; s < STATUS_COUNT && status_codes[s] != status; s++)
		;
	pthread_mutex_lock(&m->lock);
	r->by_status[s]++;
	for (size_t b = 0; b < BUCKET_COUNT; b++)
		if (seconds <= latency_buckets[b])
			r->buckets[b]++;
	r->count++;
	r->sum += seconds;
	pthread_mutex_unlock(&m->lock);
}

void
metrics_issued(struct metrics *m, const char *kind)
{
	pthread_mutex_lock(&m->lock);
	if (kind != NULL && strcmp(kind, "renewed") == 0)
		m->renewed++;
	else
		m->issued++;
	pthread_mutex_unlock(&m->lock);
}

void
metrics_denied(struct metrics *m, const char *reason)
{
	size_t i;

	if (reason == NULL)
		reason = "unknown";
	pthread_mutex_lock(&m->lock);
	for (i = 0; i < m->denied_count; i++)
		if (strcmp(m->denied[i].reason, reason) == 0)
			break;
	if (i == m->denied_count && m->denied_count < METRICS_REASONS_MAX)
		m->denied[m->denied_count++].reason = reason;
	if (i < m->denied_count)
		m->denied[i].count++;
	pthread_mutex_unlock(&m->lock);
}

/* A growing text buffer for the renderer. */
struct text {
	char *data;
	size_t len, cap;
	int failed;
};

static void text_printf(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
text_printf(struct text *t, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (t->failed)
		return;
	for (;;) {
		size_t room = t->cap - t->len;

		va_start(ap, fmt);
		n = vsnprintf(t->data != NULL ? t->data + t->len : NULL, room, fmt, ap);
		va_end(ap);
		if (n < 0) {
			t->failed = 1;
			return;
		}
		if ((size_t)n < room) {
			t->len += (size_t)n;
			return;
		}
		{
			size_t cap = (t->cap + (size_t)n + 1) * 2;
			char *grown = realloc(t->data, cap);

			if (grown == NULL) {
				t->failed = 1;
				return;
			}
			t->data = grown;
			t->cap = cap;
		}
	}
}

int
metrics_render(struct metrics *m, const char *extra, char **out, size_t *len)
{
	struct text t = {NULL, 0, 0, 0};

	pthread_mutex_lock(&m->lock);
	text_printf(&t, "# HELP agentca_http_requests_total HTTP requests by route and status.\n"
	                "# TYPE agentca_http_requests_total counter\n");
	for (size_t i = 0; i < m->route_count; i++) {
		const struct route_metrics *r = &m->routes[i];

		for (size_t s = 0; s <= STATUS_COUNT; s++) {
			if (r->by_status[s] == 0)
				continue;
			if (s < STATUS_COUNT)
				text_printf(&t,
				            "agentca_http_requests_total{route=\"%s\",code=\"%d\"} "
				            "%llu\n",
				            r->name, status_codes[s],
				            (unsigned long long)r->by_status[s]);
			else
				text_printf(
				    &t,
				    "agentca_http_requests_total{route=\"%s\",code=\"other\"}"
				    " %llu\n",
				    r->name, (unsigned long long)r->by_status[s]);
		}
	}
	text_printf(&t, "# HELP agentca_http_request_duration_seconds Request latency by route.\n"
	                "# TYPE agentca_http_request_duration_seconds histogram\n");
	for (size_t i = 0; i < m->route_count; i++) {
		const struct route_metrics *r = &m->routes[i];

		for (size_t b = 0; b < BUCKET_COUNT; b++)
			text_printf(&t,
			            "agentca_http_request_duration_seconds_bucket{route=\"%s\","
			            "le=\"%g\"} %llu\n",
			            r->name, latency_buckets[b], (unsigned long long)r->buckets[b]);
		text_printf(&t,
		            "agentca_http_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"}"
		            " %llu\n"
		            "agentca_http_request_duration_seconds_sum{route=\"%s\"} %.6f\n"
		            "agentca_http_request_duration_seconds_count{route=\"%s\"} %llu\n",
		            r->name, (unsigned long long)r->count, r->name, r->sum, r->name,
		            (unsigned long long)r->count);
	}
	text_printf(&t,
	            "# HELP agentca_certificates_issued_total Certificates issued, by kind.\n"
	            "# TYPE agentca_certificates_issued_total counter\n"
	            "agentca_certificates_issued_total{kind=\"issued\"} %llu\n"
	            "agentca_certificates_issued_total{kind=\"renewed\"} %llu\n"
	            "# HELP agentca_requests_denied_total Refused requests, by reason.\n"
	            "# TYPE agentca_requests_denied_total counter\n",
	            (unsigned long long)m->issued, (unsigned long long)m->renewed);
	for (size_t i = 0; i < m->denied_count; i++)
		text_printf(&t, "agentca_requests_denied_total{reason=\"%s\"} %llu\n",
		            m->denied[i].reason, (unsigned long long)m->denied[i].count);
	pthread_mutex_unlock(&m->lock);
	if (extra != NULL)
		text_printf(&t, "%s", extra);
	if (t.failed) {
		free(t.data);
		return -1;
	}
	*out = t.data;
	*len = t.len;
	return 0;
}

/* Append to buf, keeping it a string when it is full. */
static void append(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
append(char *buf, size_t len, const char *fmt, ...)
{
	size_t used = strlen(buf);
	va_list ap;

	if (used + 1 >= len)
		return;
	va_start(ap, fmt);
	vsnprintf(buf + used, len - used, fmt, ap);
	va_end(ap);
}

/* The process's start, unix seconds: field 22 of /proc/self/stat (clock ticks after boot)
 * plus the boot time; -1 when unreadable. */
static double
process_start_time(void)
{
	char stat[1024], line[256], *p;
	FILE *fp;
	size_t n;
	unsigned long long start_ticks = 0, btime = 0;
	long hz = sysconf(_SC_CLK_TCK);
	int field;

	if (hz <= 0 || (fp = fopen("/proc/self/stat", "r")) == NULL)
		return -1;
	n = fread(stat, 1, sizeof(stat) - 1, fp);
	fclose(fp);
	stat[n] = '\0';
	/* Fields after the command name, which is in parentheses and may hold spaces. */
	if ((p = strrchr(stat, ')')) == NULL)
		return -1;
	for (field = 2; field < 22 && p != NULL; field++)
		p = strchr(p + 1, ' ');
	if (p == NULL || sscanf(p + 1, "%llu", &start_ticks) != 1)
		return -1;
	if ((fp = fopen("/proc/stat", "r")) == NULL)
		return -1;
	while (fgets(line, sizeof(line), fp) != NULL)
		if (sscanf(line, "btime %llu", &btime) == 1)
			break;
	fclose(fp);
	if (btime == 0)
		return -1;
	return (double)btime + (double)start_ticks / (double)hz;
}

void
metrics_process(char *buf, size_t len)
{
	struct rusage ru;
	struct rlimit rl;
	unsigned long long pages_virtual, pages_resident;
	long page = sysconf(_SC_PAGESIZE);
	double start = process_start_time();
	FILE *fp;
	DIR *dir;

	if (getrusage(RUSAGE_SELF, &ru) == 0)
		append(buf, len,
		       "# HELP process_cpu_seconds_total Total user and system CPU time spent in "
		       "seconds.\n"
		       "# TYPE process_cpu_seconds_total counter\n"
		       "process_cpu_seconds_total %.3f\n",
		       (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
		           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6);
	if (page > 0 && (fp = fopen("/proc/self/statm", "r")) != NULL) {
		if (fscanf(fp, "%llu %llu", &pages_virtual, &pages_resident) == 2)
			append(
			    buf, len,
			    "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
			    "# TYPE process_resident_memory_bytes gauge\n"
			    "process_resident_memory_bytes %llu\n"
			    "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n"
			    "# TYPE process_virtual_memory_bytes gauge\n"
			    "process_virtual_memory_bytes %llu\n",
			    pages_resident * (unsigned long long)page,
			    pages_virtual * (unsigned long long)page);
		fclose(fp);
	}
	if ((dir = opendir("/proc/self/fd")) != NULL) {
		struct dirent *e;
		long open_fds = -1; /* the directory's own descriptor is not counted */

		while ((e = readdir(dir)) != NULL)
			if (e->d_name[0] != '.')
				open_fds++;
		closedir(dir);
		append(buf, len,
		       "# HELP process_open_fds Number of open file descriptors.\n"
		       "# TYPE process_open_fds gauge\n"
		       "process_open_fds %ld\n",
		       open_fds);
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
		append(buf, len,
		       "# HELP process_max_fds Maximum number of open file descriptors.\n"
		       "# TYPE process_max_fds gauge\n"
		       "process_max_fds %llu\n",
		       (unsigned long long)rl.rlim_cur);
	if (start > 0)
		append(
		    buf, len,
		    "# HELP process_start_time_seconds Start time of the process since unix epoch "
		    "in seconds.\n"
		    "# TYPE process_start_time_seconds gauge\n"
		    "process_start_time_seconds %.2f\n",
		    start);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
	{
		/* The allocator's view: what malloc counts as in use (live allocations, and the
		 * freed chunks its per-thread caches hold, which it does not count as free), and
		 * what it keeps free inside its arenas (not returned to the kernel, so in the RSS).
		 * A leak grows the first without bound; fragmentation and per-thread arenas grow
		 * the second up to a plateau. heaptrack gives the exact live bytes. */
		struct mallinfo2 heap = mallinfo2();

		/* All zeros: another allocator answers malloc (AddressSanitizer's, a preloaded
		 * jemalloc), and glibc's counters say nothing about it. */
		if (heap.uordblks + heap.hblkhd + heap.fordblks > 0)
			append(
			    buf, len,
			    "# HELP agentca_heap_in_use_bytes Bytes malloc counts as in use (live "
			    "allocations and per-thread caches).\n"
			    "# TYPE agentca_heap_in_use_bytes gauge\n"
			    "agentca_heap_in_use_bytes %zu\n"
			    "# HELP agentca_heap_free_bytes Bytes malloc holds free in its "
			    "arenas.\n"
			    "# TYPE agentca_heap_free_bytes gauge\n"
			    "agentca_heap_free_bytes %zu\n",
			    heap.uordblks + heap.hblkhd, heap.fordblks);
	}
#endif
}
