/*
 * ratelimit.h - token buckets per key, for answering 429 with Retry-After.
 *
 * One limiter holds one rule (rate tokens per second, up to burst tokens) applied to every
 * key separately: a key is a client address in text form, a SPIFFE ID, a serial or a token
 * subject. Each request takes one token from its key's bucket; an empty bucket means 429,
 * and the limiter says how many whole seconds until the next token.
 *
 * All memory is allocated once by ratelimit_new and sized by max_keys: ratelimit_take never
 * allocates, and no number of distinct keys grows it. When the table is full the least
 * useful bucket is forgotten (see ratelimit.c): a forgotten key comes back with a full burst.
 *
 * Keys are compared byte for byte. Callers normalise them first: one spelling per IPv6
 * address, and usually its /64 prefix rather than the address, since a client owns the
 * whole prefix and could otherwise rotate through it.
 *
 * Thread-safe: any number of threads may call ratelimit_take and ratelimit_keys on the same
 * limiter at once.
 */
#ifndef AGENTCA_ENROLLMENT_RATELIMIT_H
#define AGENTCA_ENROLLMENT_RATELIMIT_H

#include <stddef.h>

/* Keys up to this many bytes are stored as they are; longer ones as a 128-bit keyed hash. */
#define RATELIMIT_KEY_MAX 128

struct ratelimit;

/* A limiter allowing rate_per_second tokens per second per key, at most burst in a row, and
 * tracking about max_keys keys at once (the table has at least 2 * max_keys slots).
 * A rate of 0 means unlimited: every take is allowed and nothing is allocated for keys.
 * NULL on invalid arguments (negative or non-finite rate; with a positive rate, burst < 1
 * or max_keys 0) or out of memory. */
struct ratelimit *ratelimit_new(double rate_per_second, double burst, size_t max_keys);

/* Free the limiter; NULL is accepted. */
void ratelimit_free(struct ratelimit *rl);

/* Take one token from key's bucket at monotonic time now_seconds. Returns 1 if allowed
 * (*retry_after_seconds set to 0), 0 if refused (*retry_after_seconds set to the whole
 * seconds, >= 1 and rounded up, after which one token will be there). retry_after_seconds
 * may be NULL. A NULL limiter allows everything; a NULL key counts as "". Time going
 * backwards (threads reading the clock in a different order from the one they take the
 * lock in) refills nothing and is otherwise harmless. */
int ratelimit_take(struct ratelimit *rl, const char *key, double now_seconds,
                   int *retry_after_seconds);

/* How many keys the limiter is tracking now (a gauge for /metrics). */
size_t ratelimit_keys(struct ratelimit *rl);

#endif
