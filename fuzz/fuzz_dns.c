/*
 * fuzz_dns.c - the validation authority's DNS response parser on any bytes: every answer
 * the dns-01 and address lookups get comes from the network, so dns_parse_response() must
 * refuse or accept, never crash, hang, loop on compression pointers or read past the end.
 * The message's own ID is used, so the fuzzer reaches the question and answer sections; the
 * question asked is chosen by the first byte among the three the validator makes.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "enrollment/acme_validate_dnsclient.h"

static struct dns_answer answer;

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct {
		const char *name;
		uint16_t type;
	} questions[] = {
	    {"_acme-challenge.example.com", DNS_TYPE_TXT},
	    {"example.com", DNS_TYPE_A},
	    {"example.com", DNS_TYPE_AAAA},
	};
	struct ac_err err;
	uint16_t id;
	size_t pick;

	if (size < 3)
		return 0;
	pick = data[0] % (sizeof(questions) / sizeof(questions[0]));
	data++;
	size--;
	id = (uint16_t)((data[0] << 8) | data[1]);
	ac_err_clear(&err);
	if (dns_parse_response(data, size, id, questions[pick].name, questions[pick].type, &answer,
	                       &err) == 0) {
		/* Touch what was kept: lengths must be within the records. */
		for (size_t i = 0; i < answer.count; i++)
			if (answer.records[i].len > sizeof(answer.records[i].data))
				__builtin_trap();
	}
	return 0;
}
