/*
 * fuzz_audit_verify.c - the offline verifier reads exports an auditor received from
 * somewhere: any bytes must give OK or a named failure, never a crash.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "ca/audit.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct audit_summary summary;
	struct ac_err err;
	FILE *in;

	if (size == 0)
		return 0;
	in = fmemopen((void *)data, size, "r");
	if (in == NULL)
		return 0;
	ac_err_clear(&err);
	audit_verify(in, "fuzz", NULL, &summary, &err);
	fclose(in);
	return 0;
}
