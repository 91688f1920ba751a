/*
 * proxy_v2.c - the PROXY protocol v2 encoder. See proxy_v2.h.
 *
 * A bounded writer: every append checks the room left, so an oversized string becomes an
 * error and never an overrun. Lengths on the wire are 16-bit big-endian.
 */
#include "gateway-hook/proxy_v2.h"

#include <netinet/in.h>
#include <string.h>

static const unsigned char pp2_signature[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                                0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

/* A cursor over the output buffer. */
struct writer {
	unsigned char *p;
	size_t cap, len;
	int overflow;
};

static void
put(struct writer *w, const void *data, size_t n)
{
	if (w->overflow || n > w->cap - w->len) {
		w->overflow = 1;
		return;
	}
	memcpy(w->p + w->len, data, n);
	w->len += n;
}

static void
put_u8(struct writer *w, unsigned v)
{
	unsigned char b = (unsigned char)v;

	put(w, &b, 1);
}

static void
put_u16(struct writer *w, size_t v)
{
	unsigned char b[2] = {(unsigned char)(v >> 8), (unsigned char)v};

	put(w, b, 2);
}

/* Overwrite a 16-bit length at offset at (written earlier as a placeholder). */
static void
patch_u16(struct writer *w, size_t at, size_t v)
{
	if (w->overflow || v > 0xFFFF) {
		w->overflow = 1;
		return;
	}
	w->p[at] = (unsigned char)(v >> 8);
	w->p[at + 1] = (unsigned char)v;
}

/* One TLV with a string value; nothing for NULL or "". */
static void
put_tlv_str(struct writer *w, unsigned type, const char *value)
{
	size_t n;

	if (value == NULL || value[0] == '\0')
		return;
	n = strlen(value);
	if (n > 0xFFFF) {
		w->overflow = 1;
		return;
	}
	put_u8(w, type);
	put_u16(w, n);
	put(w, value, n);
}

int
proxy_v2_encode(const struct proxy_v2_info *info, unsigned char *out, size_t cap, size_t *len,
                struct ac_err *err)
{
	struct writer w = {out, cap, 0, 0};
	size_t len_at, ssl_at, ssl_start;

	*len = 0;
	if (info == NULL || info->src == NULL || info->dst == NULL ||
	    info->src->sa_family != info->dst->sa_family)
		return ac_err_set(err, AC_ERR_INVALID, "proxy_v2_address",
		                  "PROXY v2 needs a client and a listener address of one family");
	put(&w, pp2_signature, sizeof(pp2_signature));
	put_u8(&w, 0x21); /* version 2, command PROXY */
	if (info->src->sa_family == AF_INET) {
		const struct sockaddr_in *s = (const void *)info->src, *d = (const void *)info->dst;

		put_u8(&w, 0x11); /* TCP over IPv4 */
		len_at = w.len;
		put_u16(&w, 0);
		put(&w, &s->sin_addr, 4);
		put(&w, &d->sin_addr, 4);
		put(&w, &s->sin_port, 2); /* already network order */
		put(&w, &d->sin_port, 2);
	} else if (info->src->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s = (const void *)info->src,
		                          *d = (const void *)info->dst;

		put_u8(&w, 0x21); /* TCP over IPv6 */
		len_at = w.len;
		put_u16(&w, 0);
		put(&w, &s->sin6_addr, 16);
		put(&w, &d->sin6_addr, 16);
		put(&w, &s->sin6_port, 2);
		put(&w, &d->sin6_port, 2);
	} else {
		return ac_err_set(err, AC_ERR_INVALID, "proxy_v2_address",
		                  "PROXY v2 carries IPv4 or IPv6 addresses only");
	}

	/* PP2_TYPE_SSL: client flags, verify result, then its sub-TLVs. */
	put_u8(&w, PP2_TYPE_SSL);
	ssl_at = w.len;
	put_u16(&w, 0);
	ssl_start = w.len;
	put_u8(&w, PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN);
	put(&w, "\0\0\0\0", 4); /* verify: 0, the client certificate verified */
	put_tlv_str(&w, PP2_SUBTYPE_SSL_VERSION, info->tls_version);
	put_tlv_str(&w, PP2_SUBTYPE_SSL_CIPHER, info->cipher);
	put_tlv_str(&w, PP2_SUBTYPE_SSL_CN, info->cn);
	patch_u16(&w, ssl_at, w.len - ssl_start);

	put_tlv_str(&w, PP2_TYPE_AGENTCA_SPIFFE_ID, info->spiffe_id);
	put_tlv_str(&w, PP2_TYPE_AGENTCA_SERIAL, info->serial);
	patch_u16(&w, len_at, w.len - len_at - 2);
	if (w.overflow)
		return ac_err_set(err, AC_ERR_INVALID, "proxy_v2_too_long",
		                  "the PROXY v2 header does not fit in %zu bytes", cap);
	*len = w.len;
	return 0;
}
