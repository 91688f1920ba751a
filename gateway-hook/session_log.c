/*
 * session_log.c - the batched session log writer. See session_log.h.
 *
 * The ring is a fixed array of SESSION_RING records allocated once, with head/count under
 * one mutex. Producers copy a record in (a memcpy under the lock); the writer moves up to a
 * whole batch out into its own array under the lock, then formats and writes without it.
 */
#include "gateway-hook/session_log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "common/log.h"
#include "common/timefmt.h"

#define SESSION_RING 1024 /* records waiting; beyond this they are dropped */
#define SESSION_BATCH 256 /* records formatted per write */

struct session_log {
	int fd;
	char path[4096];
	pthread_mutex_t lock;
	pthread_cond_t wake;
	pthread_t writer;
	int writer_started, stopping;
	struct session_record *ring; /* SESSION_RING entries */
	size_t head, count;
	uint64_t dropped, dropped_reported;
	struct session_record *batch; /* the writer's own SESSION_BATCH entries */
};

/* "2026-11-22T05:00:00.123Z" for unix milliseconds. */
static void
format_ms(int64_t ms, char *buf, size_t len)
{
	char secs[40];
	size_t n;

	time_format_rfc3339(ms / 1000, secs, sizeof(secs));
	n = strlen(secs);
	if (n > 0 && secs[n - 1] == 'Z')
		secs[n - 1] = '\0';
	snprintf(buf, len, "%s.%03dZ", secs, (int)(ms % 1000));
}

/* One record as a JSON line appended to *out (heap, grown as needed). */
static int
append_line(const struct session_record *r, char **out, size_t *len, size_t *cap)
{
	char start[48], end[48], *text = NULL;
	json_t *o;
	size_t n;
	int rc = -1;

	format_ms(r->start_ms, start, sizeof(start));
	format_ms(r->end_ms, end, sizeof(end));
	o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:s, s:s}", "start",
	              start, "end", end, "listener", r->listener, "client", r->client, "identity",
	              r->identity, "serial", r->serial, "tls_version", r->tls_version, "cipher",
	              r->cipher, "upstream", r->upstream, "bytes_up", (json_int_t)r->bytes_up,
	              "bytes_down", (json_int_t)r->bytes_down, "outcome",
	              r->refused ? "refused" : "closed", "reason",
	              r->reason != NULL ? r->reason : "unknown");
	if (o == NULL)
		goto out;
	text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (text == NULL)
		goto out;
	n = strlen(text);
	if (*len + n + 1 > *cap) {
		size_t want = (*len + n + 1) * 2;
		char *grown = realloc(*out, want);

		if (grown == NULL)
			goto out;
		*out = grown;
		*cap = want;
	}
	memcpy(*out + *len, text, n);
	(*out)[*len + n] = '\n';
	*len += n + 1;
	rc = 0;
out:
	free(text);
	json_decref(o);
	return rc;
}

/* write(2) all of it, retrying on EINTR and short writes. */
static int
write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static void *
writer_main(void *arg)
{
	struct session_log *sl = arg;
	char *text = NULL;
	size_t cap = 0;

	pthread_mutex_lock(&sl->lock);
	for (;;) {
		size_t taken = 0, len = 0;
		uint64_t dropped;

		while (sl->count == 0 && !sl->stopping) {
			struct timespec until;

			clock_gettime(CLOCK_REALTIME, &until);
			until.tv_sec += 1;
			pthread_cond_timedwait(&sl->wake, &sl->lock, &until);
		}
		if (sl->count == 0 && sl->stopping)
			break;
		while (taken < SESSION_BATCH && sl->count > 0) {
			sl->batch[taken++] = sl->ring[sl->head];
			sl->head = (sl->head + 1) % SESSION_RING;
			sl->count--;
		}
		dropped = sl->dropped - sl->dropped_reported;
		sl->dropped_reported = sl->dropped;
		pthread_mutex_unlock(&sl->lock);

		for (size_t i = 0; i < taken; i++)
			if (append_line(&sl->batch[i], &text, &len, &cap) != 0)
				dropped++;
		if (len > 0 && write_all(sl->fd, text, len) != 0)
			log_error("session_log_write_failed", "%s: %s; %zu session records lost",
			          sl->path, strerror(errno), taken);
		if (dropped > 0)
			log_warn("session_log_dropped",
			         "%llu session records dropped (writer behind)",
			         (unsigned long long)dropped);
		pthread_mutex_lock(&sl->lock);
	}
	pthread_mutex_unlock(&sl->lock);
	free(text);
	return NULL;
}

struct session_log *
session_log_open(const char *path, struct ac_err *err)
{
	struct session_log *sl = calloc(1, sizeof(*sl));

	if (sl == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		return NULL;
	}
	sl->fd = -1;
	pthread_mutex_init(&sl->lock, NULL);
	pthread_cond_init(&sl->wake, NULL);
	snprintf(sl->path, sizeof(sl->path), "%s", path);
	sl->ring = calloc(SESSION_RING, sizeof(*sl->ring));
	sl->batch = calloc(SESSION_BATCH, sizeof(*sl->batch));
	if (sl->ring == NULL || sl->batch == NULL) {
		ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
		goto fail;
	}
	sl->fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
	if (sl->fd < 0) {
		ac_err_set(err, AC_ERR_IO, "file_unwritable", "%s: %s", path, strerror(errno));
		goto fail;
	}
	if (pthread_create(&sl->writer, NULL, writer_main, sl) != 0) {
		ac_err_set(err, AC_ERR_INTERNAL, "thread_failed",
		           "cannot start the session log writer");
		goto fail;
	}
	sl->writer_started = 1;
	return sl;
fail:
	session_log_close(sl);
	return NULL;
}

int
session_log_put(struct session_log *sl, const struct session_record *rec)
{
	int rc = 0;

	if (sl == NULL)
		return -1;
	pthread_mutex_lock(&sl->lock);
	if (sl->count == SESSION_RING) {
		sl->dropped++;
		rc = -1;
	} else {
		sl->ring[(sl->head + sl->count) % SESSION_RING] = *rec;
		sl->count++;
		if (sl->count >= SESSION_BATCH)
			pthread_cond_signal(&sl->wake);
	}
	pthread_mutex_unlock(&sl->lock);
	return rc;
}

uint64_t
session_log_dropped(struct session_log *sl)
{
	uint64_t n;

	if (sl == NULL)
		return 0;
	pthread_mutex_lock(&sl->lock);
	n = sl->dropped;
	pthread_mutex_unlock(&sl->lock);
	return n;
}

void
session_log_close(struct session_log *sl)
{
	if (sl == NULL)
		return;
	if (sl->writer_started) {
		pthread_mutex_lock(&sl->lock);
		sl->stopping = 1;
		pthread_cond_signal(&sl->wake);
		pthread_mutex_unlock(&sl->lock);
		pthread_join(sl->writer, NULL);
	}
	if (sl->fd >= 0)
		close(sl->fd);
	free(sl->ring);
	free(sl->batch);
	pthread_cond_destroy(&sl->wake);
	pthread_mutex_destroy(&sl->lock);
	free(sl);
}
