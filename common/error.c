/*
 * error.c - filling and wrapping struct ac_err. See error.h for the convention.
 */
#include "common/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>

void
ac_err_clear(struct ac_err *err)
{
	if (err == NULL)
		return;
	err->code = AC_OK;
	err->reason = NULL;
	err->msg[0] = '\0';
}

static int err_vset(struct ac_err *err, enum ac_errcode code, const char *reason, const char *fmt,
                    va_list ap) __attribute__((format(printf, 4, 0)));

static int
err_vset(struct ac_err *err, enum ac_errcode code, const char *reason, const char *fmt, va_list ap)
{
	if (err == NULL || err->code != AC_OK)
		return -1;
	err->code = code;
	err->reason = reason != NULL ? reason : "error";
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	return -1;
}

int
ac_err_set(struct ac_err *err, enum ac_errcode code, const char *reason, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	err_vset(err, code, reason, fmt, ap);
	va_end(ap);
	return -1;
}

int
ac_err_wrap(struct ac_err *err, const char *fmt, ...)
{
	char prefix[AC_ERR_MSG_MAX], joined[AC_ERR_MSG_MAX];
	va_list ap;

	if (err == NULL || err->code == AC_OK)
		return -1;
	va_start(ap, fmt);
	vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	snprintf(joined, sizeof(joined), "%s: %s", prefix, err->msg);
	memcpy(err->msg, joined, sizeof(err->msg));
	return -1;
}

int
ac_err_ssl(struct ac_err *err, enum ac_errcode code, const char *reason, const char *fmt, ...)
{
	char detail[256] = "";
	unsigned long e;
	va_list ap;

	e = ERR_peek_error();
	if (e != 0)
		ERR_error_string_n(e, detail, sizeof(detail));
	ERR_clear_error();
	if (err == NULL || err->code != AC_OK)
		return -1;
	va_start(ap, fmt);
	err_vset(err, code, reason, fmt, ap);
	va_end(ap);
	if (detail[0] != '\0') {
		size_t used = strlen(err->msg);
		snprintf(err->msg + used, sizeof(err->msg) - used, " (%s)", detail);
	}
	return -1;
}

static const struct {
	enum ac_errcode code;
	const char *name;
	int http_status;
} errcode_table[] = {
    {AC_OK, "ok", 200},
    {AC_ERR_INVALID, "invalid input", 400},
    {AC_ERR_POLICY, "refused by policy", 403},
    {AC_ERR_NOTFOUND, "not found", 404},
    {AC_ERR_CONFLICT, "conflict", 409},
    {AC_ERR_IO, "i/o error", 500},
    {AC_ERR_CRYPTO, "cryptographic failure", 500},
    {AC_ERR_STORE, "store failure", 500},
    {AC_ERR_UNAVAILABLE, "temporarily unavailable", 503},
    {AC_ERR_INTERNAL, "internal error", 500},
    {AC_ERR_USAGE, "usage error", 400},
};

const char *
ac_errcode_name(enum ac_errcode code)
{
	for (size_t i = 0; i < sizeof(errcode_table) / sizeof(errcode_table[0]); i++)
		if (errcode_table[i].code == code)
			return errcode_table[i].name;
	return "unknown error";
}

int
ac_errcode_http_status(enum ac_errcode code)
{
	for (size_t i = 0; i < sizeof(errcode_table) / sizeof(errcode_table[0]); i++)
		if (errcode_table[i].code == code)
			return errcode_table[i].http_status;
	return 500;
}
