/*
 * mkexpired.c - a test tool that makes a certificate which has already expired, which the
 * product can never issue (its policy clamps lifetimes to at least 5 minutes from now), so
 * that integration tests can drive the renewal grace against the real daemon without faking
 * the daemon's clock.
 *
 *   mkexpired DIR SPIFFE-ID SECONDS-AGO OUTDIR [--foreign]
 *
 * Loads the CA in DIR (passphrase from AGENTCA_PASSWORD), makes a P-256 key and a leaf for
 * SPIFFE-ID that expired SECONDS-AGO seconds ago (valid for the hour before), signed by the
 * intermediate, and records it in DIR's store with an "issued" log entry, exactly as an
 * issuance would (so renewal finds it). Writes OUTDIR/cert.pem and OUTDIR/key.pem.
 *
 * --foreign: the same leaf with the intermediate's name as issuer but signed by a throwaway
 * key, and not recorded: a certificate from another CA that claims to be ours.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "ca/authority.h"
#include "ca/keys.h"
#include "ca/x509_build.h"
#include "store/store.h"

static void
die(const char *what, const struct ac_err *err)
{
	fprintf(stderr, "mkexpired: %s%s%s\n", what, err != NULL ? ": " : "",
	        err != NULL ? err->msg : "");
	exit(1);
}

static void
write_pem(const char *dir, const char *name, X509 *cert, EVP_PKEY *key)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	if (f == NULL)
		die(path, NULL);
	if ((cert != NULL && !PEM_write_X509(f, cert)) ||
	    (key != NULL && !PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL)))
		die(path, NULL);
	fclose(f);
	if (key != NULL)
		chmod(path, 0600);
}

int
main(int argc, char **argv)
{
	struct ca_authority *ca;
	struct store_options so;
	struct store *st;
	struct cert_record rec;
	struct log_entry entry;
	struct store_write w;
	struct ac_err err;
	EVP_PKEY *key, *signer_key = NULL;
	X509 *cert;
	X509_NAME *name;
	char serial[41], spki[65], fp[65], san[2100], dbpath[4096];
	const char *sans[1];
	unsigned char *der = NULL;
	int der_len, foreign;
	int64_t now = (int64_t)time(NULL), ago;

	if (argc < 5 || argc > 6 || (argc == 6 && strcmp(argv[5], "--foreign") != 0)) {
		fprintf(stderr, "usage: mkexpired DIR SPIFFE-ID SECONDS-AGO OUTDIR [--foreign]\n");
		return 2;
	}
	foreign = argc == 6;
	ago = strtoll(argv[3], NULL, 10);
	ac_err_clear(&err);
	ca = ca_authority_load(argv[1], NULL, &err);
	if (ca == NULL)
		die("loading the CA", &err);
	key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	signer_key = foreign ? EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256") : ca->intermediate_key;
	cert = X509_new();
	name = x509_name_make("expired test leaf", NULL, &err);
	snprintf(san, sizeof(san), "URI:%s", argv[2]);
	if (key == NULL || signer_key == NULL || cert == NULL || name == NULL ||
	    X509_set_version(cert, 2) != 1 || x509_set_random_serial(cert, serial, &err) != 0 ||
	    x509_set_validity(cert, now - ago - 3600, now - ago, &err) != 0 ||
	    X509_set_subject_name(cert, name) != 1 ||
	    X509_set_issuer_name(cert, X509_get_subject_name(ca->intermediate)) != 1 ||
	    X509_set_pubkey(cert, key) != 1 ||
	    x509_add_ext_text(cert, ca->intermediate, NID_basic_constraints, "critical,CA:FALSE",
	                      &err) != 0 ||
	    x509_add_ext_text(cert, ca->intermediate, NID_key_usage, "critical,digitalSignature",
	                      &err) != 0 ||
	    x509_add_ext_text(cert, ca->intermediate, NID_ext_key_usage, "serverAuth,clientAuth",
	                      &err) != 0 ||
	    x509_add_ext_text(cert, ca->intermediate, NID_subject_key_identifier, "hash", &err) !=
	        0 ||
	    x509_add_ext_text(cert, ca->intermediate, NID_authority_key_identifier, "keyid:always",
	                      &err) != 0 ||
	    x509_add_ext_text(cert, ca->intermediate, NID_subject_alt_name, san, &err) != 0 ||
	    x509_sign(cert, signer_key, foreign ? EVP_sha256() : ca->sign_md, &err) != 0)
		die("making the certificate", &err);

	if (!foreign) {
		snprintf(dbpath, sizeof(dbpath), "%s/agentca.db", argv[1]);
		store_options_defaults(&so);
		so.path = dbpath;
		st = store_open(&so, &err);
		der_len = i2d_X509(cert, &der);
		if (st == NULL || der_len <= 0 || key_spki_sha256(key, spki, &err) != 0 ||
		    cert_fingerprint(ca->intermediate, fp, &err) != 0)
			die("preparing the store record", &err);
		memset(&rec, 0, sizeof(rec));
		rec.serial = serial;
		rec.subject = argv[2];
		rec.spki_sha256 = spki;
		rec.issuer_fingerprint = fp;
		rec.not_before = now - ago - 3600;
		rec.not_after = now - ago;
		rec.der = der;
		rec.der_len = (size_t)der_len;
		sans[0] = argv[2];
		memset(&entry, 0, sizeof(entry));
		entry.kind = "issued";
		entry.actor = "admin:mkexpired";
		entry.subject = argv[2];
		entry.serial = serial;
		entry.sans = sans;
		entry.sans_count = 1;
		entry.not_before = rec.not_before;
		entry.not_after = rec.not_after;
		entry.spki_sha256 = spki;
		entry.detail = "test tool: a certificate issued already expired";
		memset(&w, 0, sizeof(w));
		w.cert = &rec;
		w.entry = &entry;
		if (store_submit(st, &w, &err) != 0)
			die("recording the certificate", &err);
		store_close(st);
		OPENSSL_free(der);
	}
	write_pem(argv[4], "cert.pem", cert, NULL);
	write_pem(argv[4], "key.pem", NULL, key);
	printf("%s\n", serial);
	X509_NAME_free(name);
	X509_free(cert);
	if (foreign)
		EVP_PKEY_free(signer_key);
	EVP_PKEY_free(key);
	ca_authority_free(ca);
	return 0;
}
