/*
 * serve_proxy.c - the integrated proxy inside `agentca serve`. See serve_proxy.h.
 *
 * The bundle is what GET /v1/bundle serves: the root plus the extra roots of trust.pem.
 * Its sequence number counts the distinct bundles this process has handed to the proxy
 * (1 at start), told apart by a SHA-256 over their DER.
 */
#include "cli/serve_proxy.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "ca/x509_build.h"
#include "common/fsutil.h"
#include "common/hex.h"
#include "common/log.h"
#include "common/timefmt.h"

struct serve_proxy {
	struct proxy *proxy;
	struct proxy_options po;
	struct store *store;
	char dir[4096];
	int64_t revocation_interval, next_scan;
	uint64_t bundle_sequence;
	unsigned char bundle_digest[32];
};

/* The daemon's material: its server certificate and key, the chain up to the root, and
 * the bundle. chain and bundle are new stacks holding their own references. */
static int
material_build(const char *dir, const struct ca_authority *ca, const struct server_identity *id,
               struct proxy_material *m, struct ac_err *err)
{
	char path[4096];

	memset(m, 0, sizeof(*m));
	m->cert = id->cert;
	m->key = id->key;
	m->chain = sk_X509_new_null();
	m->bundle = sk_X509_new_null();
	if (m->chain == NULL || m->bundle == NULL || !sk_X509_push(m->chain, ca->intermediate) ||
	    !sk_X509_push(m->bundle, ca->root))
		goto oom;
	X509_up_ref(ca->intermediate);
	X509_up_ref(ca->root);
	for (int i = 0; ca->upstream != NULL && i < sk_X509_num(ca->upstream); i++) {
		if (!sk_X509_push(m->chain, sk_X509_value(ca->upstream, i)))
			goto oom;
		X509_up_ref(sk_X509_value(ca->upstream, i));
	}
	if (path_join(path, sizeof(path), dir, "trust.pem", err) != 0)
		goto fail;
	if (path_exists(path)) {
		STACK_OF(X509) *extra = x509_read_pem_file(path, err);

		if (extra == NULL)
			goto fail;
		while (sk_X509_num(extra) > 0) {
			X509 *root = sk_X509_shift(extra);

			if (!sk_X509_push(m->bundle, root)) {
				X509_free(root);
				sk_X509_pop_free(extra, X509_free);
				goto oom;
			}
		}
		sk_X509_free(extra);
	}
	return 0;
oom:
	ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
fail:
	sk_X509_pop_free(m->chain, X509_free);
	sk_X509_pop_free(m->bundle, X509_free);
	memset(m, 0, sizeof(*m));
	return -1;
}

static void
material_release(struct proxy_material *m)
{
	sk_X509_pop_free(m->chain, X509_free);
	sk_X509_pop_free(m->bundle, X509_free);
	memset(m, 0, sizeof(*m));
}

/* SHA-256 over the bundle's DER, to tell a new bundle from the one in use. */
static int
bundle_digest(STACK_OF(X509) *bundle, unsigned char out[32])
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int ok = md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1;

	for (int i = 0; ok && i < sk_X509_num(bundle); i++) {
		unsigned char *der = NULL;
		int len = i2d_X509(sk_X509_value(bundle, i), &der);

		ok = len > 0 && EVP_DigestUpdate(md, der, (size_t)len) == 1;
		OPENSSL_free(der);
	}
	ok = ok && EVP_DigestFinal_ex(md, out, NULL) == 1;
	EVP_MD_CTX_free(md);
	return ok ? 0 : -1;
}

static int
metrics_source(void *arg, char **text, size_t *len)
{
	return proxy_metrics_render(arg, text, len);
}

int
serve_proxy_start(const char *dir, const struct proxy_settings *ps, const struct ca_authority *ca,
                  const struct server_identity *id, struct store *store, struct api *api,
                  struct serve_proxy **out, struct ac_err *err)
{
	struct serve_proxy *sp = NULL;
	struct proxy_material m;

	*out = NULL;
	memset(&m, 0, sizeof(m));
	if (ps->listeners.count == 0)
		return 0;
	sp = calloc(1, sizeof(*sp));
	if (sp == NULL)
		return ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
	snprintf(sp->dir, sizeof(sp->dir), "%s", dir);
	sp->store = store;
	sp->revocation_interval = ps->revocation_interval;
	if (proxy_settings_options(ps, dir, &sp->po, err) != 0 ||
	    material_build(dir, ca, id, &m, err) != 0 || bundle_digest(m.bundle, sp->bundle_digest))
		goto fail;
	sp->bundle_sequence = 1;
	m.bundle_sequence = 1;
	sp->proxy = proxy_start(&sp->po, &m, err);
	if (sp->proxy == NULL)
		goto fail;
	material_release(&m);
	serve_proxy_tick(sp); /* revocations known before the first client */
	api_set_metrics_source(api, metrics_source, sp->proxy);
	*out = sp;
	return 0;
fail:
	material_release(&m);
	proxy_options_release(&sp->po);
	free(sp);
	return -1;
}

void
serve_proxy_material_changed(struct serve_proxy *sp, const struct ca_authority *ca,
                             const struct server_identity *id)
{
	struct proxy_material m;
	unsigned char digest[32];
	struct ac_err err;

	if (sp == NULL)
		return;
	ac_err_clear(&err);
	if (material_build(sp->dir, ca, id, &m, &err) != 0 || bundle_digest(m.bundle, digest) != 0)
		goto fail;
	m.bundle_sequence =
	    sp->bundle_sequence + (memcmp(digest, sp->bundle_digest, sizeof(digest)) != 0 ? 1 : 0);
	if (proxy_update(sp->proxy, &m, &err) != 0)
		goto fail;
	sp->bundle_sequence = m.bundle_sequence;
	memcpy(sp->bundle_digest, digest, sizeof(digest));
	log_info("proxy_material_swapped", "proxy: server certificate %s, bundle %llu in use",
	         id->serial, (unsigned long long)sp->bundle_sequence);
	material_release(&m);
	return;
fail:
	material_release(&m);
	log_error("proxy_reload_failed", "%s; the proxy keeps the material in use",
	          err.msg[0] != '\0' ? err.msg : "cannot hash the bundle");
}

static int
revoke_row(void *arg, const struct revoked_row *row)
{
	struct serve_proxy *sp = arg;

	if (proxy_revoke_serial(sp->proxy, row->serial) == 1)
		log_info("proxy_revoked", "proxy: certificate %s is revoked; its sessions close",
		         row->serial);
	return 0;
}

void
serve_proxy_tick(struct serve_proxy *sp)
{
	struct ac_err err;
	int64_t now = time_now();

	if (sp == NULL || now < sp->next_scan)
		return;
	sp->next_scan = now + sp->revocation_interval;
	ac_err_clear(&err);
	/* Expired certificates cannot connect anyway: only the ones still valid matter. */
	if (store_revoked_scan(sp->store, now, revoke_row, sp, &err) != 0)
		log_warn("proxy_revocations_failed", "%s; retrying in %lld s", err.msg,
		         (long long)sp->revocation_interval);
}

void
serve_proxy_apply_allow(struct serve_proxy *sp, struct proxy_settings *running,
                        const struct proxy_settings *fresh)
{
	proxy_settings_apply_allow(sp->proxy, running, fresh);
}

void
serve_proxy_stop(struct serve_proxy *sp)
{
	if (sp == NULL)
		return;
	proxy_stop(sp->proxy);
	proxy_options_release(&sp->po);
	free(sp);
}
