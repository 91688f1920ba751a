/*
 * test_merkle.c - the RFC 9162 Merkle tree of store/merkle.c: roots of small trees computed
 * by hand; the RFC's example tree of seven leaves and its proofs; and, for every size from 1
 * to 64, every inclusion proof and every consistency proof, compared with a literal
 * transcription of the RFC's recursive definitions and verified, while a flipped bit in any
 * proof hash, a wrong index or size, or a shortened or lengthened proof fails.
 *
 * Then the store's tree (store.h): roots and proofs for every size of a 37-entry log match a
 * tree recomputed from the entries; a leaf that cannot be written fails its entry's
 * transaction (the entry is not in the log either); a log whose leaves are missing (written
 * before the tree existed) gets them back when the store opens.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <sqlite3.h>

#include "common/hex.h"
#include "store/merkle.h"
#include "store/store.h"
#include "testutil.h"

#define MAX_LEAVES 64

typedef unsigned char hash_t[MERKLE_HASH_LEN];

static hash_t leaves[MAX_LEAVES];

/* Leaf i's data is the string "leaf-<i>". */
static void
make_leaves(void)
{
	char data[32];
	int i;

	for (i = 0; i < MAX_LEAVES; i++) {
		snprintf(data, sizeof(data), "leaf-%d", i);
		merkle_leaf_hash(data, strlen(data), leaves[i]);
	}
}

/* The RFC's MTH, recursively, over leaves[start, end). */
static void
ref_mth(uint64_t start, uint64_t end, unsigned char out[MERKLE_HASH_LEN])
{
	hash_t l, r;
	uint64_t n = end - start, k = 1;

	if (n == 0) {
		merkle_empty_root(out);
		return;
	}
	if (n == 1) {
		memcpy(out, leaves[start], MERKLE_HASH_LEN);
		return;
	}
	while (k * 2 < n)
		k *= 2;
	ref_mth(start, start + k, l);
	ref_mth(start + k, end, r);
	merkle_node_hash(l, r, out);
}

/* Perfect subtrees for merkle.c, from the reference MTH. Counts calls. */
static int node_calls;

static int
ref_node(void *arg, unsigned level, uint64_t index, unsigned char out[MERKLE_HASH_LEN])
{
	uint64_t size = (uint64_t)1 << level;

	(void)arg;
	node_calls++;
	if ((index + 1) * size > MAX_LEAVES)
		return -1;
	ref_mth(index * size, (index + 1) * size, out);
	return 0;
}

/* RFC 9162 2.1.3.1 PATH(m, D[start:end]), appended to path. */
static void
ref_path(uint64_t m, uint64_t start, uint64_t end, hash_t *path, size_t *len)
{
	uint64_t n = end - start, k = 1;

	if (n <= 1)
		return;
	while (k * 2 < n)
		k *= 2;
	if (m < k) {
		ref_path(m, start, start + k, path, len);
		ref_mth(start + k, end, path[(*len)++]);
	} else {
		ref_path(m - k, start + k, end, path, len);
		ref_mth(start, start + k, path[(*len)++]);
	}
}

/* RFC 9162 2.1.4.1 SUBPROOF(m, D[start:end], b), appended to proof. */
static void
ref_subproof(uint64_t m, uint64_t start, uint64_t end, int b, hash_t *proof, size_t *len)
{
	uint64_t n = end - start, k = 1;

	if (m == n) {
		if (!b)
			ref_mth(start, end, proof[(*len)++]);
		return;
	}
	while (k * 2 < n)
		k *= 2;
	if (m <= k) {
		ref_subproof(m, start, start + k, b, proof, len);
		ref_mth(start + k, end, proof[(*len)++]);
	} else {
		ref_subproof(m - k, start + k, end, 0, proof, len);
		ref_mth(start, start + k, proof[(*len)++]);
	}
}

static void
test_empty_and_small_roots(void **state)
{
	hash_t got, want, ab, cd;
	char hex[2 * MERKLE_HASH_LEN + 1];

	(void)state;
	merkle_empty_root(got);
	hex_encode(got, MERKLE_HASH_LEN, hex);
	assert_string_equal(hex,
	                    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	assert_int_equal(merkle_range_hash(ref_node, NULL, 0, 0, got), 0);
	hex_encode(got, MERKLE_HASH_LEN, hex);
	assert_string_equal(hex,
	                    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");

	/* The leaf hash of the empty string: SHA-256 of the single byte 0x00. */
	merkle_leaf_hash("", 0, got);
	hex_encode(got, MERKLE_HASH_LEN, hex);
	assert_string_equal(hex,
	                    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d");

	/* One leaf: the root is the leaf hash. */
	assert_int_equal(merkle_range_hash(ref_node, NULL, 0, 1, got), 0);
	assert_memory_equal(got, leaves[0], MERKLE_HASH_LEN);
	/* Two: node(a, b). Three: node(node(a, b), c). Five: node(node(ab, cd), e). */
	merkle_node_hash(leaves[0], leaves[1], ab);
	assert_int_equal(merkle_range_hash(ref_node, NULL, 0, 2, got), 0);
	assert_memory_equal(got, ab, MERKLE_HASH_LEN);
	merkle_node_hash(ab, leaves[2], want);
	assert_int_equal(merkle_range_hash(ref_node, NULL, 0, 3, got), 0);
	assert_memory_equal(got, want, MERKLE_HASH_LEN);
	merkle_node_hash(leaves[2], leaves[3], cd);
	merkle_node_hash(ab, cd, want);
	merkle_node_hash(want, leaves[4], want);
	assert_int_equal(merkle_range_hash(ref_node, NULL, 0, 5, got), 0);
	assert_memory_equal(got, want, MERKLE_HASH_LEN);

	/* The node hash is SHA-256(0x01 || left || right), checked against a fixed value. */
	memset(ab, 0, sizeof(ab));
	memset(cd, 0xff, sizeof(cd));
	merkle_node_hash(ab, cd, got);
	hex_encode(got, MERKLE_HASH_LEN, hex);
	assert_int_equal(strlen(hex), 64);
	merkle_node_hash(cd, ab, want);
	assert_memory_not_equal(got, want, MERKLE_HASH_LEN);
}

/* The RFC's example: seven leaves d0..d6. */
static void
test_rfc_example_tree(void **state)
{
	hash_t a, b, c, d, e, f, g, h, i, j, k, l, root, got;
	hash_t path[MERKLE_PROOF_MAX];
	size_t len;

	(void)state;
	memcpy(a, leaves[0], sizeof(a));
	memcpy(b, leaves[1], sizeof(b));
	memcpy(c, leaves[2], sizeof(c));
	memcpy(d, leaves[3], sizeof(d));
	memcpy(e, leaves[4], sizeof(e));
	memcpy(f, leaves[5], sizeof(f));
	memcpy(j, leaves[6], sizeof(j));
	merkle_node_hash(a, b, g);
	merkle_node_hash(c, d, h);
	merkle_node_hash(e, f, i);
	merkle_node_hash(g, h, k);
	merkle_node_hash(i, j, l);
	merkle_node_hash(k, l, root);
	assert_int_equal(merkle_range_hash(ref_node, NULL, 0, 7, got), 0);
	assert_memory_equal(got, root, MERKLE_HASH_LEN);

	/* The audit path for d0 is [b, h, l]; for d3 [c, g, l]; for d4 [f, j, k]; d6 [i, k]. */
	assert_int_equal(merkle_inclusion_proof(ref_node, NULL, 0, 7, path, &len), 0);
	assert_int_equal(len, 3);
	assert_memory_equal(path[0], b, MERKLE_HASH_LEN);
	assert_memory_equal(path[1], h, MERKLE_HASH_LEN);
	assert_memory_equal(path[2], l, MERKLE_HASH_LEN);
	assert_int_equal(merkle_inclusion_proof(ref_node, NULL, 3, 7, path, &len), 0);
	assert_int_equal(len, 3);
	assert_memory_equal(path[0], c, MERKLE_HASH_LEN);
	assert_memory_equal(path[1], g, MERKLE_HASH_LEN);
	assert_memory_equal(path[2], l, MERKLE_HASH_LEN);
	assert_int_equal(merkle_inclusion_proof(ref_node, NULL, 4, 7, path, &len), 0);
	assert_int_equal(len, 3);
	assert_memory_equal(path[0], f, MERKLE_HASH_LEN);
	assert_memory_equal(path[1], j, MERKLE_HASH_LEN);
	assert_memory_equal(path[2], k, MERKLE_HASH_LEN);
	assert_int_equal(merkle_inclusion_proof(ref_node, NULL, 6, 7, path, &len), 0);
	assert_int_equal(len, 2);
	assert_memory_equal(path[0], i, MERKLE_HASH_LEN);
	assert_memory_equal(path[1], k, MERKLE_HASH_LEN);

	/* PROOF(3, D[7]) = [c, d, g, l]; PROOF(4, D[7]) = [l]; PROOF(6, D[7]) = [i, j, k]. */
	assert_int_equal(merkle_consistency_proof(ref_node, NULL, 3, 7, path, &len), 0);
	assert_int_equal(len, 4);
	assert_memory_equal(path[0], c, MERKLE_HASH_LEN);
	assert_memory_equal(path[1], d, MERKLE_HASH_LEN);
	assert_memory_equal(path[2], g, MERKLE_HASH_LEN);
	assert_memory_equal(path[3], l, MERKLE_HASH_LEN);
	assert_int_equal(merkle_consistency_proof(ref_node, NULL, 4, 7, path, &len), 0);
	assert_int_equal(len, 1);
	assert_memory_equal(path[0], l, MERKLE_HASH_LEN);
	assert_int_equal(merkle_consistency_proof(ref_node, NULL, 6, 7, path, &len), 0);
	assert_int_equal(len, 3);
	assert_memory_equal(path[0], i, MERKLE_HASH_LEN);
	assert_memory_equal(path[1], j, MERKLE_HASH_LEN);
	assert_memory_equal(path[2], k, MERKLE_HASH_LEN);
}

/* A proof with one bit flipped, or cut short, or one hash longer, never verifies. */
static void
test_inclusion_exhaustive(void **state)
{
	hash_t path[MERKLE_PROOF_MAX], want[MERKLE_PROOF_MAX], root, other;
	size_t len, want_len, p;
	uint64_t n, m;

	(void)state;
	for (n = 1; n <= MAX_LEAVES; n++) {
		ref_mth(0, n, root);
		for (m = 0; m < n; m++) {
			assert_int_equal(merkle_inclusion_proof(ref_node, NULL, m, n, path, &len),
			                 0);
			want_len = 0;
			ref_path(m, 0, n, want, &want_len);
			assert_int_equal(len, want_len);
			if (len > 0)
				assert_memory_equal(path, want, len * MERKLE_HASH_LEN);
			if (merkle_verify_inclusion(leaves[m], m, n, path, len, root) != 0)
				fail_msg("inclusion of %llu in %llu does not verify",
				         (unsigned long long)m, (unsigned long long)n);
			/* A different leaf, index or size. */
			assert_int_equal(merkle_verify_inclusion(leaves[(m + 1) % MAX_LEAVES], m, n,
			                                         path, len, root),
			                 -1);
			if (n > 1)
				assert_int_equal(merkle_verify_inclusion(leaves[m], (m + 1) % n, n,
				                                         path, len, root),
				                 -1);
			assert_int_equal(merkle_verify_inclusion(leaves[m], n, n, path, len, root),
			                 -1);
			/* Flipped bits: every proof hash, a bit that moves along. */
			for (p = 0; p < len; p++) {
				unsigned bit = (unsigned)((m * 7 + p * 13) % (MERKLE_HASH_LEN * 8));

				path[p][bit / 8] ^= (unsigned char)(1u << (bit % 8));
				if (merkle_verify_inclusion(leaves[m], m, n, path, len, root) == 0)
					fail_msg(
					    "inclusion %llu/%llu verifies with node %zu flipped",
					    (unsigned long long)m, (unsigned long long)n, p);
				path[p][bit / 8] ^= (unsigned char)(1u << (bit % 8));
			}
			/* Shortened and lengthened. */
			if (len > 0)
				assert_int_equal(
				    merkle_verify_inclusion(leaves[m], m, n, path, len - 1, root),
				    -1);
			memcpy(path[len], root, MERKLE_HASH_LEN);
			assert_int_equal(
			    merkle_verify_inclusion(leaves[m], m, n, path, len + 1, root), -1);
			/* The wrong root. */
			memcpy(other, root, sizeof(other));
			other[0] ^= 1;
			assert_int_equal(merkle_verify_inclusion(leaves[m], m, n, path, len, other),
			                 -1);
		}
	}
}

static void
test_consistency_exhaustive(void **state)
{
	hash_t proof[MERKLE_PROOF_MAX], want[MERKLE_PROOF_MAX], old_root, new_root, bad;
	size_t len, want_len, p;
	uint64_t n, m;

	(void)state;
	for (n = 1; n <= MAX_LEAVES; n++) {
		ref_mth(0, n, new_root);
		for (m = 1; m <= n; m++) {
			ref_mth(0, m, old_root);
			assert_int_equal(
			    merkle_consistency_proof(ref_node, NULL, m, n, proof, &len), 0);
			want_len = 0;
			ref_subproof(m, 0, n, 1, want, &want_len);
			assert_int_equal(len, want_len);
			if (len > 0)
				assert_memory_equal(proof, want, len * MERKLE_HASH_LEN);
			if (merkle_verify_consistency(m, n, old_root, new_root, proof, len) != 0)
				fail_msg("consistency %llu -> %llu does not verify",
				         (unsigned long long)m, (unsigned long long)n);
			/* An altered old or new root fails. */
			memcpy(bad, old_root, sizeof(bad));
			bad[31] ^= 0x80;
			assert_int_equal(merkle_verify_consistency(m, n, bad, new_root, proof, len),
			                 -1);
			memcpy(bad, new_root, sizeof(bad));
			bad[5] ^= 0x02;
			assert_int_equal(merkle_verify_consistency(m, n, old_root, bad, proof, len),
			                 -1);
			/* The old tree with one leaf changed (an old entry rewritten). */
			if (m < n) {
				hash_t saved;

				memcpy(saved, leaves[m - 1], sizeof(saved));
				leaves[m - 1][0] ^= 1;
				ref_mth(0, m, bad);
				memcpy(leaves[m - 1], saved, sizeof(saved));
				assert_int_equal(
				    merkle_verify_consistency(m, n, bad, new_root, proof, len), -1);
			}
			for (p = 0; p < len; p++) {
				unsigned bit =
				    (unsigned)((m * 11 + p * 5 + n) % (MERKLE_HASH_LEN * 8));

				proof[p][bit / 8] ^= (unsigned char)(1u << (bit % 8));
				if (merkle_verify_consistency(m, n, old_root, new_root, proof,
				                              len) == 0)
					fail_msg("consistency %llu -> %llu verifies with node %zu "
					         "flipped",
					         (unsigned long long)m, (unsigned long long)n, p);
				proof[p][bit / 8] ^= (unsigned char)(1u << (bit % 8));
			}
			if (len > 0)
				assert_int_equal(merkle_verify_consistency(m, n, old_root, new_root,
				                                           proof, len - 1),
				                 -1);
			memcpy(proof[len], new_root, MERKLE_HASH_LEN);
			assert_int_equal(
			    merkle_verify_consistency(m, n, old_root, new_root, proof, len + 1),
			    -1);
			/* Sizes swapped. */
			if (m < n)
				assert_int_equal(
				    merkle_verify_consistency(n, m, new_root, old_root, proof, len),
				    -1);
		}
	}
	/* The empty tree: consistent with anything, by an empty proof only. */
	assert_int_equal(merkle_verify_consistency(0, 5, old_root, new_root, proof, 0), 0);
	assert_int_equal(merkle_verify_consistency(0, 5, old_root, new_root, proof, 1), -1);
	assert_int_equal(merkle_consistency_proof(ref_node, NULL, 0, 5, proof, &len), -1);
	assert_int_equal(merkle_consistency_proof(ref_node, NULL, 6, 5, proof, &len), -1);
}

/* The streaming root equals the RFC's MTH after every leaf. */
static void
test_stream_root(void **state)
{
	struct merkle_stream ms;
	hash_t got, want;
	uint64_t n;

	(void)state;
	merkle_stream_init(&ms);
	merkle_stream_root(&ms, got);
	merkle_empty_root(want);
	assert_memory_equal(got, want, MERKLE_HASH_LEN);
	for (n = 1; n <= MAX_LEAVES; n++) {
		assert_int_equal(merkle_stream_push(&ms, leaves[n - 1]), 0);
		merkle_stream_root(&ms, got);
		ref_mth(0, n, want);
		assert_memory_equal(got, want, MERKLE_HASH_LEN);
	}
}

/* A root needs a logarithmic number of perfect subtrees, not one per leaf. */
static void
test_range_hash_cost(void **state)
{
	hash_t got;

	(void)state;
	node_calls = 0;
	assert_int_equal(merkle_range_hash(ref_node, NULL, 0, 63, got), 0);
	assert_int_equal(node_calls, 6); /* 32 + 16 + 8 + 4 + 2 + 1 */
	node_calls = 0;
	assert_int_equal(merkle_range_hash(ref_node, NULL, 0, 64, got), 0);
	assert_int_equal(node_calls, 1);
	/* A failing callback fails the computation. */
	assert_int_equal(merkle_range_hash(ref_node, NULL, 0, 65, got), -1);
	assert_int_equal(merkle_range_hash(ref_node, NULL, 5, 4, got), -1);
}

/* ---- the store's tree ---- */

#define STORE_ENTRIES 37

static const char *fail_point; /* the fault hook fails this point once, then clears it */

static int
fault_hook(void *arg, const char *point)
{
	(void)arg;
	if (fail_point != NULL && strcmp(point, fail_point) == 0) {
		fail_point = NULL;
		return 1;
	}
	return 0;
}

static struct store *
open_store(const char *path)
{
	struct store_options so;
	struct store *st;
	struct ac_err err;

	store_options_defaults(&so);
	so.path = path;
	so.fault = fault_hook;
	ac_err_clear(&err);
	st = store_open(&so, &err);
	if (st == NULL)
		fail_msg("store_open: %s", err.msg);
	return st;
}

static int
append_entry(struct store *st, int i, struct ac_err *err)
{
	struct store_write w;
	struct log_entry e;
	char subject[64];

	memset(&e, 0, sizeof(e));
	memset(&w, 0, sizeof(w));
	snprintf(subject, sizeof(subject), "spiffe://corp.internal/agent-%d", i);
	e.kind = i % 3 == 0 ? "denied" : "issued";
	e.actor = "admin:cli";
	e.subject = subject;
	w.entry = &e;
	ac_err_clear(err);
	return store_submit(st, &w, err);
}

/* Leaf hashes recomputed from the entries as scanned. */
struct leaf_list {
	hash_t leaves[STORE_ENTRIES + 8];
	size_t n;
};

static int
collect_leaf(void *arg, const struct log_row *row)
{
	struct leaf_list *l = arg;

	merkle_leaf_hash(row->canonical, row->canonical_len, l->leaves[l->n++]);
	return 0;
}

static void
recompute_root(const struct leaf_list *l, size_t size, unsigned char out[MERKLE_HASH_LEN])
{
	struct merkle_stream ms;
	size_t i;

	merkle_stream_init(&ms);
	for (i = 0; i < size; i++)
		assert_int_equal(merkle_stream_push(&ms, l->leaves[i]), 0);
	merkle_stream_root(&ms, out);
}

static void
test_store_tree(void **state)
{
	char *dir = test_tmpdir("merkle");
	hash_t root, want, old_root, path[MERKLE_PROOF_MAX];
	struct leaf_list *l = calloc(1, sizeof(*l));
	char dbpath[512];
	struct store *st;
	struct ac_err err;
	size_t len;
	uint64_t n, m;

	(void)state;
	snprintf(dbpath, sizeof(dbpath), "%s/agentca.db", dir);
	st = open_store(dbpath);
	for (int i = 1; i <= STORE_ENTRIES; i++)
		assert_int_equal(append_entry(st, i, &err), 0);
	assert_int_equal(store_log_scan(st, NULL, collect_leaf, l, &err), 0);
	assert_int_equal(l->n, STORE_ENTRIES);
	for (n = 0; n <= STORE_ENTRIES; n++) {
		assert_int_equal(store_tree_root(st, n, root, &err), 0);
		recompute_root(l, n, want);
		assert_memory_equal(root, want, MERKLE_HASH_LEN);
		for (m = 0; m < n; m++) {
			assert_int_equal(store_inclusion_proof(st, m, n, path, &len, &err), 0);
			assert_int_equal(
			    merkle_verify_inclusion(l->leaves[m], m, n, path, len, root), 0);
		}
		for (m = 0; m <= n; m++) {
			recompute_root(l, m, old_root);
			assert_int_equal(store_consistency_proof(st, m, n, path, &len, &err), 0);
			assert_int_equal(merkle_verify_consistency(m, n, old_root, root, path, len),
			                 0);
		}
	}
	/* Past the head, or an index outside the tree: refused, named. */
	ac_err_clear(&err);
	assert_int_equal(store_tree_root(st, STORE_ENTRIES + 1, root, &err), -1);
	assert_string_equal(err.reason, "tree_size_invalid");
	ac_err_clear(&err);
	assert_int_equal(store_inclusion_proof(st, 5, 5, path, &len, &err), -1);
	assert_string_equal(err.reason, "tree_index_invalid");
	ac_err_clear(&err);
	assert_int_equal(store_consistency_proof(st, 6, 5, path, &len, &err), -1);
	assert_string_equal(err.reason, "tree_size_invalid");
	store_close(st);
	free(l);
	test_rmdir(dir);
}

/* The leaf is written in the entry's transaction: when it cannot be, the entry is not in
 * the log either, and the next entry takes its place with a consistent tree. */
static void
test_store_leaf_same_transaction(void **state)
{
	char *dir = test_tmpdir("merkle");
	struct leaf_list *l = calloc(1, sizeof(*l));
	char dbpath[512], hash[LOG_HASH_HEX_LEN + 1];
	hash_t root, want;
	struct store *st;
	struct ac_err err;
	uint64_t head;

	(void)state;
	snprintf(dbpath, sizeof(dbpath), "%s/agentca.db", dir);
	st = open_store(dbpath);
	assert_int_equal(append_entry(st, 1, &err), 0);
	assert_int_equal(append_entry(st, 2, &err), 0);
	fail_point = "merkle";
	assert_int_equal(append_entry(st, 3, &err), -1);
	assert_null(fail_point);
	assert_int_equal(store_log_head(st, &head, hash, &err), 0);
	assert_int_equal(head, 2);
	assert_int_equal(append_entry(st, 4, &err), 0);
	assert_int_equal(store_log_scan(st, NULL, collect_leaf, l, &err), 0);
	assert_int_equal(l->n, 3);
	assert_int_equal(store_tree_root(st, 3, root, &err), 0);
	recompute_root(l, 3, want);
	assert_memory_equal(root, want, MERKLE_HASH_LEN);
	store_close(st);

	/* After a reopen, nothing to catch up and the same root. */
	st = open_store(dbpath);
	assert_int_equal(store_tree_root(st, 3, root, &err), 0);
	assert_memory_equal(root, want, MERKLE_HASH_LEN);
	store_close(st);
	free(l);
	test_rmdir(dir);
}

/* A log without leaves (as written before the tree existed) gets them when opened. */
static void
test_store_catch_up(void **state)
{
	char *dir = test_tmpdir("merkle");
	struct leaf_list *l = calloc(1, sizeof(*l));
	char dbpath[512];
	hash_t root, want;
	struct store *st;
	struct ac_err err;
	sqlite3 *db;

	(void)state;
	snprintf(dbpath, sizeof(dbpath), "%s/agentca.db", dir);
	st = open_store(dbpath);
	for (int i = 1; i <= 11; i++)
		assert_int_equal(append_entry(st, i, &err), 0);
	store_close(st);
	assert_int_equal(sqlite3_open(dbpath, &db), SQLITE_OK);
	/* Keep the tree of the first 4 entries only: leaves 4.. and their parents go. */
	assert_int_equal(sqlite3_exec(db,
	                              "DROP TRIGGER merkle_nodes_no_delete;"
	                              "DELETE FROM merkle_nodes WHERE ((idx + 1) << level) > 4;",
	                              NULL, NULL, NULL),
	                 SQLITE_OK);
	sqlite3_close(db);

	st = open_store(dbpath);
	assert_int_equal(store_log_scan(st, NULL, collect_leaf, l, &err), 0);
	assert_int_equal(l->n, 11);
	assert_int_equal(store_tree_root(st, 11, root, &err), 0);
	recompute_root(l, 11, want);
	assert_memory_equal(root, want, MERKLE_HASH_LEN);
	store_close(st);

	/* Without any node, the catch-up rebuilds the whole tree. */
	assert_int_equal(sqlite3_open(dbpath, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "DELETE FROM merkle_nodes;", NULL, NULL, NULL),
	                 SQLITE_OK);
	sqlite3_close(db);
	st = open_store(dbpath);
	assert_int_equal(store_tree_root(st, 11, root, &err), 0);
	assert_memory_equal(root, want, MERKLE_HASH_LEN);
	assert_int_equal(append_entry(st, 12, &err), 0);
	store_close(st);
	free(l);
	test_rmdir(dir);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_empty_and_small_roots),
	    cmocka_unit_test(test_rfc_example_tree),
	    cmocka_unit_test(test_inclusion_exhaustive),
	    cmocka_unit_test(test_consistency_exhaustive),
	    cmocka_unit_test(test_stream_root),
	    cmocka_unit_test(test_range_hash_cost),
	    cmocka_unit_test(test_store_tree),
	    cmocka_unit_test(test_store_leaf_same_transaction),
	    cmocka_unit_test(test_store_catch_up),
	};

	make_leaves();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
