/*
 * worker_libctx.c - the proxy workers' OpenSSL library context: the process's "default"
 * provider seen through a built-in provider whose only decoders are the DER
 * SubjectPublicKeyInfo ones, without the key types the TLS policy never uses. See
 * worker_libctx.h for why.
 *
 * The built-in provider ("agentca-worker") hands out the default provider's algorithm
 * tables (filtered) and the default provider's context as its own, so every implementation
 * runs exactly as it would in the process's context, but one: the EC key management's
 * validation, which asks for the quick public-key check where the full one can only add
 * a multiplication whose result is known (ec_validate_in_handshake, below). OpenSSL keeps
 * its own fetched-method caches per library context; the worker context's fill up on the
 * first handshakes.
 */
#include "gateway-hook/worker_libctx.h"

#include <pthread.h>
#include <string.h>
#include <strings.h>

#include <openssl/core.h>
#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/objects.h>
#include <openssl/params.h>
#include <openssl/provider.h>

#define WORKER_PROVIDER_NAME "agentca-worker"
#define SPKI_DECODERS_MAX 32 /* OpenSSL 3.0's default provider has 12, 8 of them kept */
#define KEYMGMTS_MAX 64      /* it has 18, 8 of them kept */

static pthread_once_t worker_once = PTHREAD_ONCE_INIT;
static OSSL_LIB_CTX *worker_ctx;
static OSSL_PROVIDER *process_default; /* the process's "default" provider, held for good */
static OSSL_ALGORITHM spki_decoders[SPKI_DECODERS_MAX + 1]; /* NULL-terminated */
static OSSL_ALGORITHM keymgmts[KEYMGMTS_MAX + 1];           /* NULL-terminated */

/*
 * Key types no handshake under enrollment/tls.c's policy uses, left out of the worker
 * context (each key type's management is looked at by every decoder context built there):
 * finite-field DH (no DHE suites, no ffdhe groups), DSA and SM2 (TLS 1.3 has no such
 * signature algorithms, and a TLS 1.2 client certificate with a DSA key, which agentca's CA
 * never issues, is refused: it cannot sign a CertificateVerify there), and the
 * EVP_PKEY forms of MACs and KDFs, which libssl 3.0 reaches as EVP_MAC and EVP_KDF; HMAC
 * stays (the TLS 1.3 PSK binder signs with an HMAC EVP_PKEY). A certificate with such a key
 * still parses, without its public key, so it cannot complete a handshake; the upstream
 * side runs under the same policy. test_proxy_worker_libctx.c runs handshakes over each
 * group and key type the policy allows.
 */
static const char *const unused_key_types[] = {
    "DH", "DHX", "DSA", "SM2", "TLS1-PRF", "HKDF", "SCRYPT", "SIPHASH", "POLY1305", "CMAC",
};

/* Whether an algorithm's first name (before any ':') is name. */
static int
first_name_is(const char *names, const char *name)
{
	size_t len = strcspn(names, ":");

	return strlen(name) == len && strncmp(names, name, len) == 0;
}

/* Whether an algorithm's first name is one of unused_key_types. */
static int
key_type_unused(const char *names)
{
	for (size_t i = 0; i < sizeof(unused_key_types) / sizeof(unused_key_types[0]); i++)
		if (first_name_is(names, unused_key_types[i]))
			return 1;
	return 0;
}

/* Whether the comma-separated property definition holds name=value (no spaces inside,
 * as OpenSSL's providers write them; names and values compared without case). */
static int
property_has(const char *definition, const char *name, const char *value)
{
	size_t nlen = strlen(name), vlen = strlen(value);
	const char *p = definition;

	while (p != NULL && *p != '\0') {
		const char *end = strchr(p, ',');
		size_t len = end != NULL ? (size_t)(end - p) : strlen(p);

		if (len == nlen + 1 + vlen && strncasecmp(p, name, nlen) == 0 && p[nlen] == '=' &&
		    strncasecmp(p + nlen + 1, value, vlen) == 0)
			return 1;
		p = end != NULL ? end + 1 : NULL;
	}
	return 0;
}

/* The decoders kept: DER SubjectPublicKeyInfo, of a key type kept. */
static int
decoder_kept(const OSSL_ALGORITHM *alg)
{
	return alg->property_definition != NULL &&
	       property_has(alg->property_definition, "input", "der") &&
	       property_has(alg->property_definition, "structure", "SubjectPublicKeyInfo") &&
	       !key_type_unused(alg->algorithm_names);
}

/* The key managements kept: every key type but unused_key_types. */
static int
keymgmt_kept(const OSSL_ALGORITHM *alg)
{
	return !key_type_unused(alg->algorithm_names);
}

/* Copy the default provider's algorithms of operation_id that keep() accepts into out
 * (max entries and a NULL terminator). Returns how many, or -1 when there are none or
 * more than fit. */
static int
algorithms_collect(int operation_id, int (*keep)(const OSSL_ALGORITHM *), OSSL_ALGORITHM *out,
                   int max)
{
	const OSSL_ALGORITHM *all;
	int no_cache = 0, n = 0;

	all = OSSL_PROVIDER_query_operation(process_default, operation_id, &no_cache);
	for (; all != NULL && all->algorithm_names != NULL; all++) {
		if (!keep(all))
			continue;
		if (n == max)
			return -1;
		out[n++] = *all;
	}
	memset(&out[n], 0, sizeof(out[n]));
	return n > 0 ? n : -1;
}

/*
 * The EC key management's validation, in a handshake: the only key checked there is the
 * peer's ECDHE share (EVP_PKEY_derive_set_peer), and OpenSSL 3.0 checks it in full, which
 * ends in multiplying the point by the group order, as costly as the key exchange itself.
 * SEC 1 v2 (3.2.2.1) asks for that step only when the cofactor h is not 1: on a curve with
 * h = 1, every point on the curve has the group's order, so once the quick check (not the
 * point at infinity, coordinates in range, on the curve) passes, the product is the point
 * at infinity. So a public-key-only full check on P-256, P-384 or P-521 (h = 1, FIPS
 * 186-4) is asked as the quick one; everything else (other curves, explicit parameters,
 * private keys, key pairs, domain parameters) goes to OpenSSL's own check unchanged.
 */
#define EC_DISPATCH_MAX 64
static OSSL_DISPATCH ec_keymgmt_dispatch[EC_DISPATCH_MAX + 1];
static OSSL_FUNC_keymgmt_validate_fn *ec_validate_process;
static OSSL_FUNC_keymgmt_get_params_fn *ec_get_params_process;

/* Whether keydata is a key on a named curve of cofactor 1 (P-256, P-384, P-521). */
static int
ec_curve_cofactor_one(const void *keydata)
{
	char name[64] = "";
	OSSL_PARAM params[] = {
	    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, name, sizeof(name) - 1),
	    OSSL_PARAM_END,
	};
	int nid;

	if (!ec_get_params_process((void *)keydata, params) || !OSSL_PARAM_modified(&params[0]))
		return 0;
	nid = OBJ_sn2nid(name);
	return nid == NID_X9_62_prime256v1 || nid == NID_secp384r1 || nid == NID_secp521r1;
}

static int
ec_validate_in_handshake(const void *keydata, int selection, int checktype)
{
	if (checktype == OSSL_KEYMGMT_VALIDATE_FULL_CHECK &&
	    selection == OSSL_KEYMGMT_SELECT_PUBLIC_KEY && ec_curve_cofactor_one(keydata))
		checktype = OSSL_KEYMGMT_VALIDATE_QUICK_CHECK;
	return ec_validate_process(keydata, selection, checktype);
}

/* A copy of the EC key management's dispatch table with ec_validate_in_handshake in place
 * of its validation, or NULL when it has no validation or get_params (then the caller
 * keeps the original). */
static const OSSL_DISPATCH *
ec_keymgmt_wrap(const OSSL_DISPATCH *process)
{
	size_t n = 0;

	for (; process[n].function_id != 0; n++) {
		if (n == EC_DISPATCH_MAX)
			return NULL;
		ec_keymgmt_dispatch[n] = process[n];
		if (process[n].function_id == OSSL_FUNC_KEYMGMT_VALIDATE) {
			ec_validate_process = OSSL_FUNC_keymgmt_validate(&process[n]);
			ec_keymgmt_dispatch[n].function = (void (*)(void))ec_validate_in_handshake;
		} else if (process[n].function_id == OSSL_FUNC_KEYMGMT_GET_PARAMS) {
			ec_get_params_process = OSSL_FUNC_keymgmt_get_params(&process[n]);
		}
	}
	memset(&ec_keymgmt_dispatch[n], 0, sizeof(ec_keymgmt_dispatch[n]));
	return ec_validate_process != NULL && ec_get_params_process != NULL ? ec_keymgmt_dispatch
	                                                                    : NULL;
}

/* keymgmts with the EC entry's implementation replaced by ec_keymgmt_wrap's (left as it
 * is if that cannot be made). */
static void
keymgmts_wrap_ec(void)
{
	for (OSSL_ALGORITHM *alg = keymgmts; alg->algorithm_names != NULL; alg++) {
		if (first_name_is(alg->algorithm_names, "EC")) {
			const OSSL_DISPATCH *wrapped = ec_keymgmt_wrap(alg->implementation);

			if (wrapped != NULL)
				alg->implementation = wrapped;
		}
	}
}

static const OSSL_ALGORITHM *
worker_query_operation(void *provctx, int operation_id, int *no_cache)
{
	(void)provctx;
	if (operation_id == OSSL_OP_DECODER) {
		*no_cache = 0;
		return spki_decoders;
	}
	if (operation_id == OSSL_OP_KEYMGMT) {
		*no_cache = 0;
		return keymgmts;
	}
	return OSSL_PROVIDER_query_operation(process_default, operation_id, no_cache);
}

static void
worker_unquery_operation(void *provctx, int operation_id, const OSSL_ALGORITHM *algs)
{
	(void)provctx;
	if (operation_id != OSSL_OP_DECODER && operation_id != OSSL_OP_KEYMGMT)
		OSSL_PROVIDER_unquery_operation(process_default, operation_id, algs);
}

static const OSSL_PARAM *
worker_gettable_params(void *provctx)
{
	(void)provctx;
	return OSSL_PROVIDER_gettable_params(process_default);
}

static int
worker_get_params(void *provctx, OSSL_PARAM params[])
{
	(void)provctx;
	return OSSL_PROVIDER_get_params(process_default, params);
}

/* TLS-GROUP and TLS-SIGALG: what libssl asks a provider for the groups and signature
 * algorithms it offers. */
static int
worker_get_capabilities(void *provctx, const char *capability, OSSL_CALLBACK *cb, void *arg)
{
	(void)provctx;
	return OSSL_PROVIDER_get_capabilities(process_default, capability, cb, arg);
}

/* The provider context is the default provider's, which is not ours to free. */
static void
worker_teardown(void *provctx)
{
	(void)provctx;
}

static const OSSL_DISPATCH worker_dispatch[] = {
    {OSSL_FUNC_PROVIDER_QUERY_OPERATION, (void (*)(void))worker_query_operation},
    {OSSL_FUNC_PROVIDER_UNQUERY_OPERATION, (void (*)(void))worker_unquery_operation},
    {OSSL_FUNC_PROVIDER_GETTABLE_PARAMS, (void (*)(void))worker_gettable_params},
    {OSSL_FUNC_PROVIDER_GET_PARAMS, (void (*)(void))worker_get_params},
    {OSSL_FUNC_PROVIDER_GET_CAPABILITIES, (void (*)(void))worker_get_capabilities},
    {OSSL_FUNC_PROVIDER_TEARDOWN, (void (*)(void))worker_teardown},
    {0, NULL},
};

static int
worker_provider_init(const OSSL_CORE_HANDLE *handle, const OSSL_DISPATCH *in,
                     const OSSL_DISPATCH **out, void **provctx)
{
	(void)handle;
	(void)in;
	*out = worker_dispatch;
	*provctx = OSSL_PROVIDER_get0_provider_ctx(process_default);
	return *provctx != NULL;
}

/* OSSL_PROVIDER_do_all callback: clears *plain on any provider but default and base. */
static int
provider_is_plain(OSSL_PROVIDER *prov, void *plain)
{
	const char *name = OSSL_PROVIDER_get0_name(prov);

	if (name == NULL || (strcmp(name, "default") != 0 && strcmp(name, "base") != 0))
		*(int *)plain = 0;
	return 1;
}

static void
worker_libctx_make(void)
{
	OSSL_LIB_CTX *ctx;
	int plain = 1;

	/* do_all activates the fallback (default) provider first if nothing else is. */
	if (!OSSL_PROVIDER_do_all(NULL, provider_is_plain, &plain) || !plain ||
	    !OSSL_PROVIDER_available(NULL, "default"))
		return;
	process_default = OSSL_PROVIDER_load(NULL, "default");
	if (process_default == NULL)
		return;
	if (algorithms_collect(OSSL_OP_DECODER, decoder_kept, spki_decoders, SPKI_DECODERS_MAX) < 0)
		goto fail;
	if (algorithms_collect(OSSL_OP_KEYMGMT, keymgmt_kept, keymgmts, KEYMGMTS_MAX) < 0)
		goto fail;
	keymgmts_wrap_ec();
	ctx = OSSL_LIB_CTX_new();
	if (ctx == NULL)
		goto fail;
	/* A context with a provider loaded explicitly never falls back to loading default. */
	if (!OSSL_PROVIDER_add_builtin(ctx, WORKER_PROVIDER_NAME, worker_provider_init) ||
	    OSSL_PROVIDER_load(ctx, WORKER_PROVIDER_NAME) == NULL) {
		OSSL_LIB_CTX_free(ctx);
		goto fail;
	}
	worker_ctx = ctx;
	return;
fail:
	OSSL_PROVIDER_unload(process_default);
	process_default = NULL;
}

OSSL_LIB_CTX *
worker_libctx(void)
{
	if (pthread_once(&worker_once, worker_libctx_make) != 0)
		return NULL;
	return worker_ctx;
}

int
worker_libctx_handshake(SSL *ssl)
{
	OSSL_LIB_CTX *ctx = worker_libctx(), *process_ctx;
	int rc;

	if (ctx == NULL)
		return SSL_do_handshake(ssl);
	process_ctx = OSSL_LIB_CTX_set0_default(ctx);
	rc = SSL_do_handshake(ssl);
	OSSL_LIB_CTX_set0_default(process_ctx);
	return rc;
}
