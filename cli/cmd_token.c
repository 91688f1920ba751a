/*
 * cmd_token.c - `agentca token create` (a bootstrap token an agent enrolls with) and
 * `agentca admin token` (a short-lived credential for an admin or auditor).
 *
 * Both print the token alone on stdout and nothing else, so that `T=$(agentca token create
 * ...)` just works. The token is a credential: it goes to stdout only, never into a
 * message or the issuance log, which records the minting under the token's jti.
 *
 * The audience of every token is the CA's root fingerprint, read from DIR/root.pem (no
 * passphrase needed for that); the signing key needs the passphrase. Token keys are made
 * here when missing, for a CA created before tokens existed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/x509.h>

#include "ca/authority.h"
#include "ca/keys.h"
#include "ca/x509_build.h"
#include "cli/admin_log.h"
#include "cli/cli.h"
#include "common/config.h"
#include "common/fsutil.h"
#include "common/timefmt.h"
#include "enrollment/token.h"

#define BOOTSTRAP_DEFAULT_TTL (10 * 60)
#define ADMIN_DEFAULT_TTL (15 * 60)

/* What both commands need once their options are read. */
struct mint_request {
	const char *cmd; /* for messages: "token create", "admin token" */
	const char *dir;
	const char *password_file;
	int64_t ttl;
};

/* The root fingerprint of DIR: the first certificate of DIR/root.pem. */
static int
root_fingerprint(const char *dir, char out[65], struct ac_err *err)
{
	STACK_OF(X509) *certs = NULL;
	char path[4096];
	int rc = -1;

	if (path_join(path, sizeof(path), dir, "root.pem", err) != 0)
		goto out;
	if (!path_exists(path)) {
		ac_err_set(err, AC_ERR_NOTFOUND, "no_root",
		           "%s: no root certificate (a CA made with --csr needs 'agentca ca "
		           "import' first)",
		           path);
		goto out;
	}
	certs = x509_read_pem_file(path, err);
	if (certs == NULL)
		goto out;
	rc = cert_fingerprint(sk_X509_value(certs, 0), out, err);
out:
	sk_X509_pop_free(certs, X509_free);
	return rc;
}

/*
 * Mint a token of grant->type for DIR, record it in the issuance log, then print it.
 * Recording comes first: a token the log does not know is never handed out.
 */
static int
mint_and_print(const struct mint_request *req, struct token_grant *grant)
{
	struct token_signer *signer = NULL;
	char passphrase[PASSPHRASE_MAX + 1], audience[65];
	struct ac_err err;
	char *jwt = NULL;
	int rc = EXIT_FAIL;

	ac_err_clear(&err);
	passphrase[0] = '\0';
	if (root_fingerprint(req->dir, audience, &err) != 0)
		goto fail;
	if (passphrase_resolve(req->dir, req->password_file, passphrase, sizeof(passphrase),
	                       &err) != 0)
		goto fail;
	if (token_keys_ensure(req->dir, passphrase, &err) != 0)
		goto fail;
	signer = token_signer_load(req->dir, grant->type, passphrase, audience, &err);
	if (signer == NULL)
		goto fail;
	passphrase_wipe(passphrase, sizeof(passphrase));
	if (token_mint(signer, grant, time_now(), req->ttl, &jwt, &err) != 0)
		goto fail;
	if (admin_log_token_created(req->dir, NULL, grant, &err) != 0)
		goto fail;
	if (printf("%s\n", jwt) < 0 || fflush(stdout) != 0) {
		ac_err_set(&err, AC_ERR_IO, "write_failed", "cannot write the token to stdout");
		goto fail;
	}
	rc = EXIT_OK;
	goto out;
fail:
	rc = cli_fail(req->cmd, &err);
out:
	passphrase_wipe(passphrase, sizeof(passphrase));
	if (jwt != NULL) {
		OPENSSL_cleanse(jwt, strlen(jwt));
		free(jwt);
	}
	token_signer_free(signer);
	return rc;
}

/* Parse a --ttl value; 0 or a usage error's exit code. */
static int
parse_ttl(const char *cmd, const char *text, int64_t *ttl)
{
	if (duration_parse(text, ttl) != 0 || *ttl <= 0)
		return cli_usage_error(cmd, "bad duration '%s' (e.g. 10m)", text);
	if (*ttl > TOKEN_MAX_LIFETIME)
		return cli_usage_error(cmd, "--ttl %s is longer than the 24h a token may live",
		                       text);
	return 0;
}

/* Copy text into a fixed-size grant field; a usage error's exit code when it is too long. */
static int
copy_field(const char *cmd, const char *option, char *dst, size_t len, const char *text)
{
	if (strlen(text) >= len)
		return cli_usage_error(cmd, "%s is longer than %zu bytes", option, len - 1);
	memcpy(dst, text, strlen(text) + 1);
	return 0;
}

static const char create_usage[] =
    "usage: agentca token create --dir DIR --subject ID [--ttl 10m] [--dns NAME]...\n"
    "                            [--parent ID] [--password-file F]\n"
    "\n"
    "Mint a one-time bootstrap token for the agent ID (a SPIFFE ID) and print it alone on\n"
    "stdout. The agent enrolls with it (agentca enroll --token T). The token is good at this\n"
    "CA only (its audience is the root fingerprint) and for at most 24h.\n"
    "\n"
    "  --subject ID            the SPIFFE ID to enroll, e.g. spiffe://corp.internal/gw-1\n"
    "  --ttl D                 how long the token is good for (default 10m, at most 24h)\n"
    "  --dns NAME              a DNS name the agent may ask for (repeatable)\n"
    "  --parent ID             the parent identity the agent enrolls under\n"
    "  --password-file F       the CA key passphrase (else $AGENTCA_PASSWORD, DIR/password)\n";

int
cmd_token_create(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"dir", required_argument, NULL, 'd'},
	    {"subject", required_argument, NULL, 's'},
	    {"ttl", required_argument, NULL, 't'},
	    {"dns", required_argument, NULL, 'n'},
	    {"parent", required_argument, NULL, 'P'},
	    {"password-file", required_argument, NULL, 'p'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	static const char cmd[] = "token create";
	struct mint_request req = {cmd, NULL, NULL, BOOTSTRAP_DEFAULT_TTL};
	struct token_grant grant;
	struct ac_err err;
	int c, done, rc = EXIT_FAIL;

	ac_err_clear(&err);
	memset(&grant, 0, sizeof(grant));
	grant.type = TOKEN_BOOTSTRAP;
	while ((c = cli_getopt(argc, argv, cmd, create_usage, longopts, &done)) != -1) {
		rc = 0;
		switch (c) {
		case 0:
			rc = done;
			goto out;
		case 'd':
			req.dir = optarg;
			break;
		case 's':
			rc = copy_field(cmd, "--subject", grant.subject, sizeof(grant.subject),
			                optarg);
			break;
		case 't':
			rc = parse_ttl(cmd, optarg, &req.ttl);
			break;
		case 'n':
			if (cfg_strlist_add(&grant.dns, optarg, &err) != 0)
				rc = cli_fail(cmd, &err);
			break;
		case 'P':
			rc =
			    copy_field(cmd, "--parent", grant.parent, sizeof(grant.parent), optarg);
			break;
		case 'p':
			req.password_file = optarg;
			break;
		}
		if (rc != 0)
			goto out;
	}
	if (optind != argc) {
		rc = cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
		goto out;
	}
	if (req.dir == NULL || grant.subject[0] == '\0') {
		rc = cli_usage_error(cmd, "--dir and --subject are required");
		goto out;
	}
	/* Tokens an admin makes are depth 0; the issuance engine places the child under
	 * --parent from the parent's own certificate. */
	grant.depth = 0;
	rc = mint_and_print(&req, &grant);
out:
	token_grant_free(&grant);
	return rc;
}

static const char admin_usage[] =
    "usage: agentca admin token --dir DIR --role admin|auditor [--ttl 15m] [--name WHO]\n"
    "                           [--password-file F]\n"
    "\n"
    "Mint a short-lived token for the admin API and print it alone on stdout. An auditor\n"
    "token may only read (export the issuance log); an admin token may also act.\n"
    "\n"
    "  --role R                admin or auditor\n"
    "  --ttl D                 how long the token is good for (default 15m, at most 24h)\n"
    "  --name WHO              who the token is for (default admin:cli)\n"
    "  --password-file F       the CA key passphrase (else $AGENTCA_PASSWORD, DIR/password)\n";

int
cmd_admin_token(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"dir", required_argument, NULL, 'd'},
	    {"role", required_argument, NULL, 'r'},
	    {"ttl", required_argument, NULL, 't'},
	    {"name", required_argument, NULL, 'n'},
	    {"password-file", required_argument, NULL, 'p'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	static const char cmd[] = "admin token";
	struct mint_request req = {cmd, NULL, NULL, ADMIN_DEFAULT_TTL};
	struct token_grant grant;
	const char *role = NULL, *name = "admin:cli";
	int c, done, rc = EXIT_FAIL;

	memset(&grant, 0, sizeof(grant));
	grant.type = TOKEN_ADMIN;
	while ((c = cli_getopt(argc, argv, cmd, admin_usage, longopts, &done)) != -1) {
		rc = 0;
		switch (c) {
		case 0:
			rc = done;
			goto out;
		case 'd':
			req.dir = optarg;
			break;
		case 'r':
			role = optarg;
			break;
		case 't':
			rc = parse_ttl(cmd, optarg, &req.ttl);
			break;
		case 'n':
			name = optarg;
			break;
		case 'p':
			req.password_file = optarg;
			break;
		}
		if (rc != 0)
			goto out;
	}
	if (optind != argc) {
		rc = cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
		goto out;
	}
	if (req.dir == NULL || role == NULL) {
		rc = cli_usage_error(cmd, "--dir and --role are required");
		goto out;
	}
	if (strcmp(role, "admin") != 0 && strcmp(role, "auditor") != 0) {
		rc = cli_usage_error(cmd, "--role must be admin or auditor, not '%s'", role);
		goto out;
	}
	memcpy(grant.role, role, strlen(role) + 1);
	if (name[0] == '\0') {
		rc = cli_usage_error(cmd, "--name must not be empty");
		goto out;
	}
	rc = copy_field(cmd, "--name", grant.subject, sizeof(grant.subject), name);
	if (rc != 0)
		goto out;
	rc = mint_and_print(&req, &grant);
out:
	token_grant_free(&grant);
	return rc;
}
