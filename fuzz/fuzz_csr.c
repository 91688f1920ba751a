/*
 * fuzz_csr.c - CSR parsing (PEM and DER) and the name and key policy checks on whatever
 * the parser accepts: the path every certificate request from outside takes.
 */
#include <stddef.h>
#include <stdint.h>

#include "ca/csr.h"
#include "ca/policy.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct ca_policy policy;
	static int ready;
	struct ac_err err;
	struct csr *csr = NULL;

	if (!ready) {
		ac_err_clear(&err);
		if (ca_policy_defaults(&policy, "corp.internal", &err) != 0)
			return 0;
		ready = 1;
	}
	ac_err_clear(&err);
	if (csr_parse(data, size, &csr, &err) != 0)
		return 0;
	ac_err_clear(&err);
	policy_check_key(csr->key, &err);
	for (size_t i = 0; i < csr->san_count; i++) {
		const struct csr_san *san = &csr->sans[i];

		ac_err_clear(&err);
		if (san->type == CSR_SAN_DNS)
			policy_check_dns(&policy, (const char *)san->value, san->len, &err);
		else if (san->type == CSR_SAN_URI)
			policy_check_spiffe_id((const char *)san->value, san->len, "corp.internal",
			                       &err);
		else if (san->type == CSR_SAN_IP)
			policy_check_ip(&policy, san->value, san->len, &err);
	}
	csr_free(csr);
	return 0;
}
