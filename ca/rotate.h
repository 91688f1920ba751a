/*
 * rotate.h - intermediate CA rotation: a state machine whose every step is an entry in the
 * issuance log.
 *
 * An intermediate moves through these states (the store's `intermediates` table holds each
 * one's state; the log holds each change):
 *
 *   (csr_written)  the root is offline or corporate: DIR/next-intermediate.key and .csr are
 *                  written, and the rotation waits for `agentca ca import` to install
 *                  DIR/next-intermediate.pem
 *   prepared       DIR/next-intermediate.pem and .key exist (signed by the root in DIR, or
 *                  imported): from now on the daemon's bundle carries it
 *   published      the daemon has served it in the bundle; the entry notes when and the
 *                  bundle's SPIFFE sequence number
 *   active         it signs new leaves: DIR/intermediate.pem and .key (the files the
 *                  authority loads); the one it replaces becomes retiring
 *   retiring       DIR/previous-intermediate.pem and .key: signs nothing, stays in the bundle
 *                  and the chain the server accepts, until its last unexpired leaf is gone
 *   retired        its files are removed; it leaves the bundle
 *
 * A step is taken when it is due (rotation_step with forced = 0, from the daemon's
 * scheduler) or at once (forced = 1, `agentca ca rotate`): preparation at prepare_at
 * percent of the active intermediate's lifetime; publication as soon as the daemon's bundle
 * carries it; activation after publish_for seconds in the bundle (forcing skips this wait)
 * and, with acknowledgments on, once every listed gateway has reported a bundle sequence at
 * least the one that first carried it (forcing does not skip this: a gateway that has not
 * seen the new intermediate would refuse its leaves); retirement once no unexpired,
 * unrevoked leaf of the retiring intermediate is left (never forced). Only one intermediate
 * can be retiring: the next activation waits for the previous retirement, and while one is
 * retiring a forced step is that retirement (a third intermediate is prepared only when
 * due). A step holds a flock on DIR/rotation.lock: the daemon and the CLI never interleave.
 *
 * Files are the truth about which certificates exist, the store about their states: every
 * call first reconciles the two, so a process killed between a file operation and its log
 * entry (or in the middle of the activation's renames) resumes where it stopped.
 */
#ifndef AGENTCA_CA_ROTATE_H
#define AGENTCA_CA_ROTATE_H

#include <stddef.h>
#include <stdint.h>

#include "common/config.h"
#include "common/error.h"
#include "store/store.h"

#define CA_FILE_NEXT_CERT "next-intermediate.pem"
#define CA_FILE_NEXT_KEY "next-intermediate.key"
#define CA_FILE_NEXT_CSR "next-intermediate.csr"
#define CA_FILE_PREV_CERT "previous-intermediate.pem"
#define CA_FILE_PREV_KEY "previous-intermediate.key"

/* The `rotation` section of config.json (see rotation_settings_fields). */
struct rotation_intermediate_settings {
	int64_t publish_for; /* seconds in the bundle before activation; default 24h */
	int64_t prepare_at;  /* percent of the active intermediate's lifetime; default 66 */
};

struct rotation_settings {
	int64_t retention;           /* seconds an expired certificate stays in the hot tables */
	int acknowledgments;         /* 1: every gateway must ack the bundle before activation */
	struct cfg_strlist gateways; /* SPIFFE IDs of the gateways that must ack */
	struct rotation_intermediate_settings intermediate;
};

extern const struct cfg_field rotation_settings_fields[];

void rotation_settings_defaults(struct rotation_settings *s);
int rotation_settings_validate(const struct rotation_settings *s, struct ac_err *err);
void rotation_settings_free(struct rotation_settings *s);

/* Does the daemon's bundle now carry the certificate with this fingerprint? 1 (with its
 * sequence number), 0, or -1 on error. */
typedef int (*rotation_bundle_probe)(void *arg, const char *fingerprint, int64_t *sequence);

struct rotation_context {
	const char *dir;
	const char *password_file; /* for the root key when it is in DIR */
	struct store *store;
	const struct rotation_settings *settings;
	int64_t now; /* unix seconds: injected, so tests can move time */
	/* The daemon's bundle, for the publication step; NULL from the CLI, which then waits
	 * for the daemon to publish. */
	rotation_bundle_probe bundle_probe;
	void *bundle_arg;
	const char *actor; /* for the log: "admin:cli", "scheduler" */
};

enum rotation_outcome {
	ROTATION_NOTHING = 0, /* nothing due */
	ROTATION_RECORDED,    /* a fact found on disk was recorded (import, crash recovery) */
	ROTATION_PREPARED,
	ROTATION_CSR_WRITTEN,
	ROTATION_PUBLISHED,
	ROTATION_ACTIVATED,
	ROTATION_RETIRED,
	ROTATION_WAITING, /* a step is pending; message says on what */
};

struct rotation_result {
	enum rotation_outcome outcome;
	char fingerprint[65]; /* the intermediate the step concerned, or "" */
	char message[768];    /* what was done or what it waits for, for people */
};

/* Reconcile, then take the next step if due (or at once when forced). Returns 0 (with
 * res saying what happened, ROTATION_NOTHING included) or -1 on an error. */
int rotation_step(const struct rotation_context *ctx, int forced, struct rotation_result *res,
                  struct ac_err *err);

/* One intermediate as `ca show` and the scheduler see it. */
struct rotation_member {
	char fingerprint[65];
	char state[16]; /* as stored; "csr_written" for a CSR waiting for import */
	int64_t not_before, not_after;
	int64_t published_at, bundle_sequence, changed_at;
};

/* The intermediates as the store knows them (at most max; a CSR waiting for import first,
 * retired ones last). Reads only: run rotation_step first for a reconciled picture. */
int rotation_status(const struct rotation_context *ctx, struct rotation_member *members, size_t max,
                    size_t *n, struct ac_err *err);

/* The time after which no leaf of the active intermediate should still be renewing from
 * it: when a successor is prepared or published, its planned activation time; else 0. */
int64_t rotation_supersede_time(const struct rotation_member *members, size_t n,
                                const struct rotation_settings *s, int64_t now);

/* Finish an activation that stopped between its two renames (next-intermediate.pem left
 * without its key). Called before the authority is loaded. */
int rotation_repair_files(const char *dir, struct ac_err *err);

/* 1 when DIR waits for `ca import` of the next intermediate (a CSR and no certificate). */
int rotation_awaits_import(const char *dir);

/* A human name for an outcome ("prepared", "activated", ...). */
const char *rotation_outcome_name(enum rotation_outcome o);

#endif
