/*
 * hex.h - lowercase hex encoding, and fingerprints as users type them.
 */
#ifndef AGENTCA_COMMON_HEX_H
#define AGENTCA_COMMON_HEX_H

#include <stddef.h>

/* Encode n bytes as 2n lowercase hex digits plus a NUL; out must hold 2n+1 bytes. */
void hex_encode(const unsigned char *in, size_t n, char *out);

/* Decode exactly 2n hex digits (either case) into n bytes. -1 on a bad digit or length. */
int hex_decode(const char *in, unsigned char *out, size_t n);

/* Normalise a SHA-256 fingerprint as a user may type it ("AB:CD:..." or "abcd...") into 64
 * lowercase digits plus NUL. -1 unless it holds exactly 32 bytes of hex. */
int fingerprint_normalize(const char *in, char out[65]);

#endif
