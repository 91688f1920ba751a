/*
 * merkle.c - RFC 9162 Merkle tree hashing, proofs and their verification (see merkle.h).
 *
 * Proof generation walks the RFC's recursive definitions from the top down, as a loop over
 * a shrinking leaf range, collecting the sibling ranges it passes; the RFC lists those from
 * the bottom up, so the collected list is reversed at the end. Each sibling is a range hash,
 * computed from perfect subtrees by merkle_range_hash.
 */
#include "store/merkle.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

static EVP_MD *sha256;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

/* Fetch SHA-256 once: an implicit fetch per hash costs more than the hash of 65 bytes. */
static void
sha256_fetch(void)
{
	sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
}

/*
 * SHA-256 over prefix || a || b. With the default provider this fails only when memory is
 * exhausted, which these void functions cannot report: abort() then, rather than return a
 * hash that would make an honest log look forged (the same choice as log_chain_hash).
 */
static void
hash3(unsigned char prefix, const void *a, size_t alen, const void *b, size_t blen,
      unsigned char out[MERKLE_HASH_LEN])
{
	EVP_MD_CTX *ctx = NULL;
	unsigned int len = 0;

	if (pthread_once(&sha256_once, sha256_fetch) != 0 || sha256 == NULL ||
	    (ctx = EVP_MD_CTX_new()) == NULL || EVP_DigestInit_ex(ctx, sha256, NULL) != 1 ||
	    EVP_DigestUpdate(ctx, &prefix, 1) != 1 ||
	    (alen > 0 && EVP_DigestUpdate(ctx, a, alen) != 1) ||
	    (blen > 0 && EVP_DigestUpdate(ctx, b, blen) != 1) ||
	    EVP_DigestFinal_ex(ctx, out, &len) != 1 || len != MERKLE_HASH_LEN)
		abort();
	EVP_MD_CTX_free(ctx);
}

void
merkle_leaf_hash(const void *data, size_t len, unsigned char out[MERKLE_HASH_LEN])
{
	hash3(0x00, data, len, NULL, 0, out);
}

void
merkle_node_hash(const unsigned char left[MERKLE_HASH_LEN],
                 const unsigned char right[MERKLE_HASH_LEN], unsigned char out[MERKLE_HASH_LEN])
{
	unsigned char both[2 * MERKLE_HASH_LEN];

	memcpy(both, left, MERKLE_HASH_LEN);
	memcpy(both + MERKLE_HASH_LEN, right, MERKLE_HASH_LEN);
	hash3(0x01, both, sizeof(both), NULL, 0, out);
}

/* SHA-256 of nothing. */
void
merkle_empty_root(unsigned char out[MERKLE_HASH_LEN])
{
	EVP_MD_CTX *ctx = NULL;
	unsigned int len = 0;

	if (pthread_once(&sha256_once, sha256_fetch) != 0 || sha256 == NULL ||
	    (ctx = EVP_MD_CTX_new()) == NULL || EVP_DigestInit_ex(ctx, sha256, NULL) != 1 ||
	    EVP_DigestFinal_ex(ctx, out, &len) != 1 || len != MERKLE_HASH_LEN)
		abort();
	EVP_MD_CTX_free(ctx);
}

/* The largest power of two strictly below n (n >= 2). */
static uint64_t
split_point(uint64_t n)
{
	uint64_t k = 1;

	while (k < n - k)
		k <<= 1;
	return k;
}

/* 1 when n is a power of two (n > 0). */
static int
is_pow2(uint64_t n)
{
	return n != 0 && (n & (n - 1)) == 0;
}

static unsigned
log2_exact(uint64_t n)
{
	unsigned level = 0;

	while (n > 1) {
		n >>= 1;
		level++;
	}
	return level;
}

/* MTH(D[start:end]) by RFC 9162's split; an aligned power-of-two range is one node. */
int
merkle_range_hash(merkle_node_fn node, void *arg, uint64_t start, uint64_t end,
                  unsigned char out[MERKLE_HASH_LEN])
{
	unsigned char left[MERKLE_HASH_LEN], right[MERKLE_HASH_LEN];
	uint64_t n, k;

	if (end < start)
		return -1;
	n = end - start;
	if (n == 0) {
		merkle_empty_root(out);
		return 0;
	}
	if (is_pow2(n) && start % n == 0)
		return node(arg, log2_exact(n), start / n, out);
	k = split_point(n);
	if (merkle_range_hash(node, arg, start, start + k, left) != 0 ||
	    merkle_range_hash(node, arg, start + k, end, right) != 0)
		return -1;
	merkle_node_hash(left, right, out);
	return 0;
}

/* Reverse the first n hashes of a (top-down collection into the RFC's bottom-up order). */
static void
reverse(unsigned char a[][MERKLE_HASH_LEN], size_t n)
{
	unsigned char tmp[MERKLE_HASH_LEN];
	size_t i;

	for (i = 0; i < n / 2; i++) {
		memcpy(tmp, a[i], MERKLE_HASH_LEN);
		memcpy(a[i], a[n - 1 - i], MERKLE_HASH_LEN);
		memcpy(a[n - 1 - i], tmp, MERKLE_HASH_LEN);
	}
}

/* PATH(m, D[n]) of RFC 9162 2.1.3.1. */
int
merkle_inclusion_proof(merkle_node_fn node, void *arg, uint64_t index, uint64_t size,
                       unsigned char path[][MERKLE_HASH_LEN], size_t *len)
{
	uint64_t start = 0, end = size, k;
	size_t n = 0;

	*len = 0;
	if (index >= size)
		return -1;
	while (end - start > 1) {
		if (n == MERKLE_PROOF_MAX)
			return -1;
		k = split_point(end - start);
		if (index - start < k) {
			/* PATH(m, D[0:k]) : MTH(D[k:n]) */
			if (merkle_range_hash(node, arg, start + k, end, path[n++]) != 0)
				return -1;
			end = start + k;
		} else {
			/* PATH(m - k, D[k:n]) : MTH(D[0:k]) */
			if (merkle_range_hash(node, arg, start, start + k, path[n++]) != 0)
				return -1;
			start += k;
		}
	}
	reverse(path, n);
	*len = n;
	return 0;
}

/* PROOF(m, D[n]) = SUBPROOF(m, D[n], true) of RFC 9162 2.1.4.1. */
int
merkle_consistency_proof(merkle_node_fn node, void *arg, uint64_t old_size, uint64_t new_size,
                         unsigned char proof[][MERKLE_HASH_LEN], size_t *len)
{
	uint64_t start = 0, end = new_size, m = old_size, k;
	int whole = 1; /* b: the subtree is the whole old tree, known to the verifier */
	size_t n = 0;

	*len = 0;
	if (old_size == 0 || old_size > new_size)
		return -1;
	/* Top down, each step appends its sibling after the subproof below it. */
	while (m != end - start) {
		if (n == MERKLE_PROOF_MAX - 1)
			return -1;
		k = split_point(end - start);
		if (m <= k) {
			/* SUBPROOF(m, D[0:k], b) : MTH(D[k:n]) */
			if (merkle_range_hash(node, arg, start + k, end, proof[n++]) != 0)
				return -1;
			end = start + k;
		} else {
			/* SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k]) */
			if (merkle_range_hash(node, arg, start, start + k, proof[n++]) != 0)
				return -1;
			start += k;
			m -= k;
			whole = 0;
		}
	}
	/* SUBPROOF(m, D[m], false) = {MTH(D[m])}, first in the bottom-up order. */
	if (!whole && merkle_range_hash(node, arg, start, end, proof[n++]) != 0)
		return -1;
	reverse(proof, n);
	*len = n;
	return 0;
}

int
merkle_verify_inclusion(const unsigned char leaf_hash[MERKLE_HASH_LEN], uint64_t index,
                        uint64_t size, const unsigned char path[][MERKLE_HASH_LEN], size_t len,
                        const unsigned char root[MERKLE_HASH_LEN])
{
	unsigned char r[MERKLE_HASH_LEN];
	uint64_t fn, sn;
	size_t i;

	if (index >= size)
		return -1;
	fn = index;
	sn = size - 1;
	memcpy(r, leaf_hash, MERKLE_HASH_LEN);
	for (i = 0; i < len; i++) {
		if (sn == 0)
			return -1;
		if ((fn & 1) != 0 || fn == sn) {
			merkle_node_hash(path[i], r, r);
			if ((fn & 1) == 0) {
				while ((fn & 1) == 0 && fn != 0) {
					fn >>= 1;
					sn >>= 1;
				}
			}
		} else {
			merkle_node_hash(r, path[i], r);
		}
		fn >>= 1;
		sn >>= 1;
	}
	return sn == 0 && memcmp(r, root, MERKLE_HASH_LEN) == 0 ? 0 : -1;
}

int
merkle_verify_consistency(uint64_t old_size, uint64_t new_size,
                          const unsigned char old_root[MERKLE_HASH_LEN],
                          const unsigned char new_root[MERKLE_HASH_LEN],
                          const unsigned char proof[][MERKLE_HASH_LEN], size_t len)
{
	unsigned char fr[MERKLE_HASH_LEN], sr[MERKLE_HASH_LEN];
	uint64_t fn, sn;
	size_t i = 0;

	if (old_size > new_size)
		return -1;
	if (old_size == 0)
		return len == 0 ? 0 : -1;
	if (old_size == new_size)
		return len == 0 && memcmp(old_root, new_root, MERKLE_HASH_LEN) == 0 ? 0 : -1;
	/* 1: an empty path fails. 2: when old_size is a power of two, old_root is the first
	 * value of the path, as if prepended. 5: fr and sr start from the first value. */
	if (len == 0)
		return -1;
	if (is_pow2(old_size)) {
		memcpy(fr, old_root, MERKLE_HASH_LEN);
	} else {
		memcpy(fr, proof[0], MERKLE_HASH_LEN);
		i = 1;
	}
	memcpy(sr, fr, MERKLE_HASH_LEN);
	/* 3, 4 */
	fn = old_size - 1;
	sn = new_size - 1;
	while ((fn & 1) != 0) {
		fn >>= 1;
		sn >>= 1;
	}
	/* 6 */
	for (; i < len; i++) {
		if (sn == 0)
			return -1;
		if ((fn & 1) != 0 || fn == sn) {
			merkle_node_hash(proof[i], fr, fr);
			merkle_node_hash(proof[i], sr, sr);
			while ((fn & 1) == 0 && fn != 0) {
				fn >>= 1;
				sn >>= 1;
			}
		} else {
			merkle_node_hash(sr, proof[i], sr);
		}
		fn >>= 1;
		sn >>= 1;
	}
	/* 7 */
	return sn == 0 && memcmp(fr, old_root, MERKLE_HASH_LEN) == 0 &&
	               memcmp(sr, new_root, MERKLE_HASH_LEN) == 0
	           ? 0
	           : -1;
}

void
merkle_stream_init(struct merkle_stream *ms)
{
	memset(ms, 0, sizeof(*ms));
}

/* Push a leaf; equal-sized subtrees on top merge, as in a binary counter. */
int
merkle_stream_push(struct merkle_stream *ms, const unsigned char leaf_hash[MERKLE_HASH_LEN])
{
	unsigned char h[MERKLE_HASH_LEN];
	unsigned level = 0;

	if (ms->count == UINT64_MAX)
		return -1;
	memcpy(h, leaf_hash, MERKLE_HASH_LEN);
	while (ms->depth > 0 && ms->levels[ms->depth - 1] == level) {
		merkle_node_hash(ms->hashes[ms->depth - 1], h, h);
		ms->depth--;
		level++;
	}
	/* depth is at most the number of one bits in count, so below MERKLE_STACK_MAX. */
	ms->levels[ms->depth] = level;
	memcpy(ms->hashes[ms->depth], h, MERKLE_HASH_LEN);
	ms->depth++;
	ms->count++;
	return 0;
}

/* Fold the stack from the right: the smaller subtrees form MTH's right-hand parts. */
void
merkle_stream_root(const struct merkle_stream *ms, unsigned char out[MERKLE_HASH_LEN])
{
	unsigned char r[MERKLE_HASH_LEN];
	size_t i;

	if (ms->depth == 0) {
		merkle_empty_root(out);
		return;
	}
	memcpy(r, ms->hashes[ms->depth - 1], MERKLE_HASH_LEN);
	for (i = ms->depth - 1; i > 0; i--)
		merkle_node_hash(ms->hashes[i - 1], r, r);
	memcpy(out, r, MERKLE_HASH_LEN);
}
