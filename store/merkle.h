/*
 * merkle.h - the Merkle tree of RFC 9162 (section 2.1) over the issuance log's entries.
 *
 * Pure functions over 32-byte SHA-256 hashes; no SQL, no files. The hashing is RFC 9162's:
 *
 *   leaf hash   SHA-256(0x00 || entry bytes)      (the entry's canonical encoding)
 *   node hash   SHA-256(0x01 || left || right)
 *   MTH({})     SHA-256() of nothing, for the empty tree
 *   MTH(D[n])   for n > 1: node(MTH(D[0:k]), MTH(D[k:n])), k the largest power of two < n
 *
 * Trees are addressed by leaf ranges. A "perfect" subtree is one of 2^level leaves starting
 * at a multiple of 2^level: (level, index) covers leaves [index << level, (index + 1) << level).
 * Those never change once their last leaf exists, so a store keeps them, and everything else
 * (a root of any size, inclusion and consistency proofs) is computed here from at most a few
 * dozen of them through a callback (merkle_node_fn).
 *
 * Proofs are arrays of hashes in RFC 9162's order (2.1.3.1 PATH, 2.1.4.1 PROOF); the verifiers
 * are the algorithms of 2.1.3.2 and 2.1.4.2, and need nothing but the proof, the sizes and
 * the roots. merkle_stream computes a root from leaf hashes pushed in order, in O(log n)
 * memory, for a verifier that reads a whole export.
 */
#ifndef AGENTCA_STORE_MERKLE_H
#define AGENTCA_STORE_MERKLE_H

#include <stddef.h>
#include <stdint.h>

#define MERKLE_HASH_LEN 32
/* The longest proof for a tree below 2^64 leaves: 64 for inclusion, 65 for consistency. */
#define MERKLE_PROOF_MAX 66
/* Perfect subtrees on the stack of a merkle_stream: one per bit of the leaf count. */
#define MERKLE_STACK_MAX 64

/* The hash of perfect subtree (level, index); 0, or -1 when it cannot be had (the callback
 * keeps its own error). Level 0 is the leaf hashes. */
typedef int (*merkle_node_fn)(void *arg, unsigned level, uint64_t index,
                              unsigned char out[MERKLE_HASH_LEN]);

/* SHA-256(0x00 || data). */
void merkle_leaf_hash(const void *data, size_t len, unsigned char out[MERKLE_HASH_LEN]);

/* SHA-256(0x01 || left || right). out may be left or right. */
void merkle_node_hash(const unsigned char left[MERKLE_HASH_LEN],
                      const unsigned char right[MERKLE_HASH_LEN],
                      unsigned char out[MERKLE_HASH_LEN]);

/* The root of the empty tree: SHA-256 of no bytes. */
void merkle_empty_root(unsigned char out[MERKLE_HASH_LEN]);

/* MTH(D[start:end]) from perfect subtrees. start == end gives the empty root. */
int merkle_range_hash(merkle_node_fn node, void *arg, uint64_t start, uint64_t end,
                      unsigned char out[MERKLE_HASH_LEN]);

/* The inclusion proof (audit path) of leaf `index` in the tree of `size` leaves, index < size.
 * *len gets the number of hashes (at most MERKLE_PROOF_MAX). */
int merkle_inclusion_proof(merkle_node_fn node, void *arg, uint64_t index, uint64_t size,
                           unsigned char path[][MERKLE_HASH_LEN], size_t *len);

/* The consistency proof from the tree of old_size leaves to the one of new_size, with
 * 0 < old_size <= new_size (the proof is empty when they are equal). */
int merkle_consistency_proof(merkle_node_fn node, void *arg, uint64_t old_size, uint64_t new_size,
                             unsigned char proof[][MERKLE_HASH_LEN], size_t *len);

/* RFC 9162 2.1.3.2: 0 when path proves leaf_hash is leaf `index` of the tree of `size`
 * leaves with root `root`, else -1. */
int merkle_verify_inclusion(const unsigned char leaf_hash[MERKLE_HASH_LEN], uint64_t index,
                            uint64_t size, const unsigned char path[][MERKLE_HASH_LEN], size_t len,
                            const unsigned char root[MERKLE_HASH_LEN]);

/* RFC 9162 2.1.4.2: 0 when proof shows the tree (new_size, new_root) extends the tree
 * (old_size, old_root), else -1. Equal sizes need an empty proof and equal roots; every
 * tree extends the empty one (old_size 0, empty proof). */
int merkle_verify_consistency(uint64_t old_size, uint64_t new_size,
                              const unsigned char old_root[MERKLE_HASH_LEN],
                              const unsigned char new_root[MERKLE_HASH_LEN],
                              const unsigned char proof[][MERKLE_HASH_LEN], size_t len);

/* A root computed from leaf hashes pushed in order: a stack of perfect subtrees. */
struct merkle_stream {
	uint64_t count; /* leaves pushed */
	size_t depth;   /* subtrees on the stack */
	unsigned levels[MERKLE_STACK_MAX];
	unsigned char hashes[MERKLE_STACK_MAX][MERKLE_HASH_LEN];
};

void merkle_stream_init(struct merkle_stream *ms);

/* Add the next leaf hash. -1 only past 2^64 - 1 leaves. */
int merkle_stream_push(struct merkle_stream *ms, const unsigned char leaf_hash[MERKLE_HASH_LEN]);

/* MTH of the leaves pushed so far (the stream stays usable). */
void merkle_stream_root(const struct merkle_stream *ms, unsigned char out[MERKLE_HASH_LEN]);

#endif
