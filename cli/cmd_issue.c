/*
 * cmd_issue.c - `agentca issue`: offline issuance by an admin on the CA host. It goes through
 * the same engine, policy and durable log as every online path.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ca/authority.h"
#include "ca/issue.h"
#include "ca/csr.h"
#include "cli/cli.h"
#include "cli/settings.h"
#include "common/fsutil.h"

static const char issue_usage[] =
    "usage: agentca issue --dir DIR --csr REQ.pem --subject SPIFFE-ID [--ttl 24h] > CERT.pem\n"
    "\n"
    "Issue a certificate for SPIFFE-ID from a CSR (PEM or DER; '-' reads stdin). Prints the\n"
    "leaf followed by its chain. The CSR's DNS and IP names are checked against the policy.\n"
    "\n"
    "  --ttl D                 lifetime, clamped to the policy (default 24h)\n"
    "  --config FILE           settings (default DIR/config.json)\n"
    "  --password-file F       the CA key passphrase (else $AGENTCA_PASSWORD, DIR/password)\n";

/* Read the CSR from a file or stdin, bounded. */
static int
read_csr(const char *path, char **data, size_t *len, struct ac_err *err)
{
	size_t used = 0;
	char *buf;

	if (strcmp(path, "-") != 0)
		return read_file(path, CSR_MAX_BYTES, data, len, err);
	buf = malloc(CSR_MAX_BYTES + 1);
	if (buf == NULL)
		return ac_err_set(err, AC_ERR_INTERNAL, "out_of_memory", "out of memory");
	used = fread(buf, 1, CSR_MAX_BYTES + 1, stdin);
	if (used > CSR_MAX_BYTES) {
		free(buf);
		return ac_err_set(err, AC_ERR_INVALID, "csr_malformed",
		                  "stdin: CSR larger than %d bytes", CSR_MAX_BYTES);
	}
	buf[used] = '\0';
	*data = buf;
	*len = used;
	return 0;
}

int
cmd_issue(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"dir", required_argument, NULL, 'd'},
	    {"csr", required_argument, NULL, 'c'},
	    {"subject", required_argument, NULL, 's'},
	    {"ttl", required_argument, NULL, 't'},
	    {"config", required_argument, NULL, 'C'},
	    {"password-file", required_argument, NULL, 'p'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *dir = NULL, *csr_path = NULL, *subject = NULL, *config = NULL;
	const char *password_file = NULL;
	struct ca_authority *authority = NULL;
	struct agentca_settings settings;
	struct store *store = NULL;
	struct issue_request req;
	struct issue_result res;
	struct issuer iss;
	struct ac_err err;
	char *csr = NULL;
	size_t csr_len = 0;
	int64_t ttl = 0;
	int c, done, have_settings = 0, rc = EXIT_FAIL;

	ac_err_clear(&err);
	memset(&res, 0, sizeof(res));
	while ((c = cli_getopt(argc, argv, "issue", issue_usage, longopts, &done)) != -1) {
		if (c == 0)
			return done;
		switch (c) {
		case 'd':
			dir = optarg;
			break;
		case 'c':
			csr_path = optarg;
			break;
		case 's':
			subject = optarg;
			break;
		case 't':
			if (duration_parse(optarg, &ttl) != 0)
				return cli_usage_error("issue", "bad --ttl '%s' (e.g. 24h, 30m)",
				                       optarg);
			break;
		case 'C':
			config = optarg;
			break;
		case 'p':
			password_file = optarg;
			break;
		}
	}
	if (optind != argc)
		return cli_usage_error("issue", "unexpected argument '%s'", argv[optind]);
	if (dir == NULL || csr_path == NULL || subject == NULL)
		return cli_usage_error("issue", "--dir, --csr and --subject are required");

	if (read_csr(csr_path, &csr, &csr_len, &err) != 0)
		goto fail;
	authority = ca_authority_load(dir, password_file, &err);
	if (authority == NULL)
		goto fail;
	if (settings_open_store(dir, config, authority->trust_domain, &settings, &store, &err) != 0)
		goto fail;
	have_settings = 1;

	memset(&iss, 0, sizeof(iss)); /* no planner, no planned switch: renew at 2/3 */
	iss.authority = authority;
	iss.policy = &settings.policy;
	iss.store = store;
	memset(&req, 0, sizeof(req));
	req.csr = (const unsigned char *)csr;
	req.csr_len = csr_len;
	req.subject = subject;
	req.ttl = ttl;
	req.kind = "issued";
	req.actor = "admin:cli";
	if (ca_issue(&iss, &req, &res, &err) != 0)
		goto fail;
	if (fwrite(res.cert_pem, 1, res.cert_pem_len, stdout) != res.cert_pem_len ||
	    fwrite(res.chain_pem, 1, res.chain_pem_len, stdout) != res.chain_pem_len ||
	    fflush(stdout) != 0) {
		ac_err_set(&err, AC_ERR_IO, "write_failed",
		           "writing the certificate to stdout failed (serial %s is issued and "
		           "logged)",
		           res.serial);
		goto fail;
	}
	rc = EXIT_OK;
	goto out;
fail:
	rc = cli_fail("issue", &err);
out:
	issue_result_free(&res);
	store_close(store);
	if (have_settings)
		settings_free(&settings);
	ca_authority_free(authority);
	free(csr);
	return rc;
}
