/*
 * ratelimit.c - token buckets in a fixed set-associative table. See ratelimit.h.
 *
 * The idea. A bucket is two numbers: the tokens it held at `stamp`, and `stamp`. Taking
 * first refills (tokens += (now - stamp) * rate, capped at burst, stamp = now), then takes
 * one token if there is one. A bucket that has refilled to burst says nothing that a new
 * bucket would not say, so it may be forgotten at any time.
 *
 * The table. A power-of-two number of slots, at least 2 * max_keys, cut into sets of
 * RL_WAYS consecutive slots, allocated once. A key hashes (SipHash-2-4 under a random secret,
 * so clients cannot aim their keys at one set) to one set and lives in one of its ways;
 * lookup scans the set's ways, nothing else, so there are no probe chains, no tombstones and
 * no rehashing. A new key takes a free way; if the set is full it replaces the bucket that
 * holds the most tokens at `now` (the one that carries least information, ideally a full
 * one, which costs nothing), the least recently used among equals. A busy key that is being
 * limited holds few tokens, so the one-off keys of a flood of distinct keys are evicted
 * before it.
 *
 * Keys up to RATELIMIT_KEY_MAX bytes are stored as they are. A longer key is stored as its
 * length and two more SipHash values under two other secrets: 192 bits compared in all,
 * with the set hash. Two long keys that collided would share one bucket, which only limits
 * them harder, and without the secrets a client can neither find nor aim for a collision.
 *
 * Locking. Sets are independent, so they are striped over RL_STRIPES mutexes (set i under
 * lock i % RL_STRIPES): threads taking for keys in different sets rarely meet. Hashing is
 * done before taking the lock.
 *
 * Limits. When more keys are live than a set has ways, a bucket is forgotten and its key
 * gets a fresh burst: a client with many identities (many addresses, or a /64 not folded
 * to one key by the caller) that drains them all can push its drained buckets out of the
 * table; it gets at most one extra burst per identity, and only by spending more than the
 * limit on every identity. Size max_keys above the number of clients you expect to limit at
 * once. Each slot costs sizeof(struct rl_slot), 168 bytes on 64-bit: 2-4 slots per key.
 */
#include "enrollment/ratelimit.h"

#include <limits.h>
#include <math.h> /* isfinite: a macro, no libm */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#define RL_WAYS 8     /* slots per set; a power of two */
#define RL_STRIPES 64 /* mutexes */
#define RL_DIGEST 16  /* bytes stored for a long key */

/* Slack for floating-point rounding: 0.999999999999 tokens counts as one. */
#define RL_EPSILON 1e-9

struct rl_slot {
	double tokens; /* tokens held at stamp */
	double stamp;  /* time of the last take: refill origin and recency */
	uint64_t hash; /* set hash of the key */
	size_t len;    /* key length; > RATELIMIT_KEY_MAX: key holds a digest */
	unsigned char used;
	unsigned char key[RATELIMIT_KEY_MAX];
};

struct ratelimit {
	double rate, burst;
	size_t set_mask;  /* number of sets - 1 */
	uint64_t seed[6]; /* SipHash keys: set hash, then two for long-key digests */
	struct rl_slot *slots;
	pthread_mutex_t locks[RL_STRIPES];
};

/* A key as stored: its bytes or digest, its length and its set hash. */
struct rl_key {
	const unsigned char *bytes; /* key itself, or digest below */
	size_t len;
	size_t stored; /* bytes to compare: len, or RL_DIGEST */
	uint64_t hash;
	unsigned char digest[RL_DIGEST];
};

/* Rotate x left by b bits (0 < b < 64). */
static uint64_t
rotl(uint64_t x, int b)
{
	return (x << b) | (x >> (64 - b));
}

#define SIPROUND                                                                                   \
	do {                                                                                       \
		v0 += v1;                                                                          \
		v1 = rotl(v1, 13);                                                                 \
		v1 ^= v0;                                                                          \
		v0 = rotl(v0, 32);                                                                 \
		v2 += v3;                                                                          \
		v3 = rotl(v3, 16);                                                                 \
		v3 ^= v2;                                                                          \
		v0 += v3;                                                                          \
		v3 = rotl(v3, 21);                                                                 \
		v3 ^= v0;                                                                          \
		v2 += v1;                                                                          \
		v1 = rotl(v1, 17);                                                                 \
		v1 ^= v2;                                                                          \
		v2 = rotl(v2, 32);                                                                 \
	} while (0)

/* SipHash-2-4 of in[0..len) under the 128-bit key (k0, k1). */
static uint64_t
siphash(uint64_t k0, uint64_t k1, const unsigned char *in, size_t len)
{
	uint64_t v0 = 0x736f6d6570736575ULL ^ k0, v1 = 0x646f72616e646f6dULL ^ k1;
	uint64_t v2 = 0x6c7967656e657261ULL ^ k0, v3 = 0x7465646279746573ULL ^ k1;
	uint64_t m, b = (uint64_t)len << 56;
	size_t i, end = len & ~(size_t)7;

	for (i = 0; i < end; i += 8) {
		m = 0;
		for (int j = 7; j >= 0; j--)
			m = (m << 8) | in[i + (size_t)j];
		v3 ^= m;
		SIPROUND;
		SIPROUND;
		v0 ^= m;
	}
	for (int j = 0; i + (size_t)j < len; j++)
		b |= (uint64_t)in[i + (size_t)j] << (8 * j);
	v3 ^= b;
	SIPROUND;
	SIPROUND;
	v0 ^= b;
	v2 ^= 0xff;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

/* Work out how key is stored and which set it belongs to. */
static void
key_form(const struct ratelimit *rl, const char *key, struct rl_key *k)
{
	uint64_t d0, d1;

	if (key == NULL)
		key = "";
	k->len = strlen(key);
	k->hash = siphash(rl->seed[0], rl->seed[1], (const unsigned char *)key, k->len);
	if (k->len <= RATELIMIT_KEY_MAX) {
		k->bytes = (const unsigned char *)key;
		k->stored = k->len;
		return;
	}
	d0 = siphash(rl->seed[2], rl->seed[3], (const unsigned char *)key, k->len);
	d1 = siphash(rl->seed[4], rl->seed[5], (const unsigned char *)key, k->len);
	memcpy(k->digest, &d0, sizeof(d0));
	memcpy(k->digest + sizeof(d0), &d1, sizeof(d1));
	k->bytes = k->digest;
	k->stored = RL_DIGEST;
}

/* Tokens the slot holds at now, refill included; the slot is not changed. */
static double
tokens_at(const struct ratelimit *rl, const struct rl_slot *s, double now)
{
	double t = s->tokens;

	if (now > s->stamp) {
		t += (now - s->stamp) * rl->rate;
		if (t > rl->burst)
			t = rl->burst;
	}
	return t;
}

/* The slot for k in its set: its own, else a free one, else the one to evict (most tokens
 * at now, then least recently used). Sets *found when the slot already holds k. Called with
 * the set's lock held. */
static struct rl_slot *
set_slot(struct ratelimit *rl, const struct rl_key *k, double now, int *found)
{
	struct rl_slot *set = &rl->slots[(k->hash & rl->set_mask) * RL_WAYS];
	struct rl_slot *free_slot = NULL, *victim = NULL;
	double victim_tokens = -1;

	*found = 0;
	for (size_t w = 0; w < RL_WAYS; w++) {
		struct rl_slot *s = &set[w];
		double t;

		if (!s->used) {
			if (free_slot == NULL)
				free_slot = s;
			continue;
		}
		if (s->hash == k->hash && s->len == k->len &&
		    memcmp(s->key, k->bytes, k->stored) == 0) {
			*found = 1;
			return s;
		}
		t = tokens_at(rl, s, now);
		if (victim == NULL || t > victim_tokens ||
		    (t == victim_tokens && s->stamp < victim->stamp)) {
			victim = s;
			victim_tokens = t;
		}
	}
	return free_slot != NULL ? free_slot : victim;
}

struct ratelimit *
ratelimit_new(double rate_per_second, double burst, size_t max_keys)
{
	struct ratelimit *rl = NULL;
	size_t slots = RL_WAYS;

	if (!isfinite(rate_per_second) || rate_per_second < 0)
		goto fail;
	if (rate_per_second > 0 && (!isfinite(burst) || burst < 1 || max_keys == 0))
		goto fail;
	rl = calloc(1, sizeof(*rl));
	if (rl == NULL)
		goto fail;
	for (size_t i = 0; i < RL_STRIPES; i++)
		pthread_mutex_init(&rl->locks[i], NULL);
	rl->rate = rate_per_second;
	rl->burst = burst;
	if (rate_per_second == 0)
		return rl; /* unlimited: no table */

	if (max_keys > SIZE_MAX / 4 / sizeof(struct rl_slot))
		goto fail;
	while (slots < 2 * max_keys)
		slots *= 2;
	rl->set_mask = slots / RL_WAYS - 1;
	if (RAND_bytes((unsigned char *)rl->seed, sizeof(rl->seed)) != 1)
		goto fail;
	rl->slots = calloc(slots, sizeof(*rl->slots));
	if (rl->slots == NULL)
		goto fail;
	return rl;

fail:
	ratelimit_free(rl);
	return NULL;
}

void
ratelimit_free(struct ratelimit *rl)
{
	if (rl == NULL)
		return;
	for (size_t i = 0; i < RL_STRIPES; i++)
		pthread_mutex_destroy(&rl->locks[i]);
	free(rl->slots);
	free(rl);
}

int
ratelimit_take(struct ratelimit *rl, const char *key, double now_seconds, int *retry_after_seconds)
{
	pthread_mutex_t *lock;
	struct rl_slot *s;
	struct rl_key k;
	double wait;
	int found, allowed, retry = 0;

	if (rl == NULL || rl->rate == 0) {
		if (retry_after_seconds != NULL)
			*retry_after_seconds = 0;
		return 1;
	}
	if (!isfinite(now_seconds))
		now_seconds = 0; /* a caller bug; refills nothing rather than everything */
	key_form(rl, key, &k);
	lock = &rl->locks[(k.hash & rl->set_mask) % RL_STRIPES];

	pthread_mutex_lock(lock);
	s = set_slot(rl, &k, now_seconds, &found);
	if (found) {
		s->tokens = tokens_at(rl, s, now_seconds);
		if (now_seconds > s->stamp)
			s->stamp = now_seconds;
	} else {
		s->used = 1;
		s->hash = k.hash;
		s->len = k.len;
		memcpy(s->key, k.bytes, k.stored);
		s->tokens = rl->burst;
		s->stamp = now_seconds;
	}
	allowed = s->tokens >= 1 - RL_EPSILON;
	if (allowed) {
		s->tokens -= 1;
	} else {
		/* whole seconds, rounded up, without libm */
		wait = (1 - s->tokens) / rl->rate - RL_EPSILON;
		if (wait >= INT_MAX)
			retry = INT_MAX;
		else if (wait <= 1)
			retry = 1;
		else
			retry = (int)wait + ((double)(int)wait < wait);
	}
	pthread_mutex_unlock(lock);

	if (retry_after_seconds != NULL)
		*retry_after_seconds = retry;
	return allowed;
}

size_t
ratelimit_keys(struct ratelimit *rl)
{
	size_t n = 0, sets;

	if (rl == NULL || rl->slots == NULL)
		return 0;
	sets = rl->set_mask + 1;
	for (size_t stripe = 0; stripe < RL_STRIPES && stripe < sets; stripe++) {
		pthread_mutex_lock(&rl->locks[stripe]);
		for (size_t set = stripe; set < sets; set += RL_STRIPES)
			for (size_t w = 0; w < RL_WAYS; w++)
				n += rl->slots[set * RL_WAYS + w].used;
		pthread_mutex_unlock(&rl->locks[stripe]);
	}
	return n;
}
