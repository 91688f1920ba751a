/*
 * fuzz_config.c - the JSON configuration loader, with the issuance policy's table, on any
 * bytes: it must refuse or apply, never crash or leak.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <jansson.h>

#include "ca/policy.h"
#include "common/config.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct cfg_field fields[] = {
	    {"log_level", CFG_STRING, 0, 0, 0, NULL, NULL},
	    CFG_END,
	};
	struct {
		char *log_level;
	} top = {NULL};
	struct ca_policy policy;
	json_error_t jerr;
	struct ac_err err;
	json_t *root;

	root = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &jerr);
	if (root == NULL)
		return 0;
	ac_err_clear(&err);
	if (ca_policy_defaults(&policy, "corp.internal", &err) == 0) {
		json_t *p = json_object_get(root, "policy");

		if (p != NULL && config_apply_json(p, ca_policy_fields, &policy, "fuzz", &err) == 0)
			ca_policy_validate(&policy, &err);
		ca_policy_free(&policy);
	}
	ac_err_clear(&err);
	json_object_del(root, "policy");
	config_apply_json(root, fields, &top, "fuzz", &err);
	config_free(fields, &top);
	json_decref(root);
	return 0;
}
