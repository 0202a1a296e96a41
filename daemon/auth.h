/*
 * Who may do what: the bearer tokens of --tokens FILE (docs/SECURITY.md).
 *
 * The file has one "TOKEN ROLE JOB_GLOB" per line ('#' starts a comment).
 * A call presents "authorization: Bearer TOKEN" (gRPC metadata or the HTTP
 * header); the token resolves to a principal: its role and the glob of the
 * job ids it covers. Tokens are kept only as SHA-256 digests, compared in
 * constant time against every entry, and never logged: logs name the line
 * of the file that granted a call. Without --tokens every caller is the
 * open principal, which may do everything (the loopback default).
 *
 * Loop thread only; a reload (SIGHUP) builds a new table and swaps it in.
 */
#ifndef GRIST_DAEMON_AUTH_H
#define GRIST_DAEMON_AUTH_H

#include <stddef.h>
#include <stdint.h>

#define GRIST_TOKEN_MIN 16 /* shorter tokens are refused when the file loads */
#define GRIST_GLOB_MAX 256

enum grist_role {
    GRIST_ROLE_OPEN = 0, /* no tokens file: everything is allowed */
    GRIST_ROLE_READER = 1, /* queries of matching jobs */
    GRIST_ROLE_WORKER = 2, /* attach to matching jobs (and query them) */
    GRIST_ROLE_ADMIN = 3, /* everything, every job, the daemon-wide views */
};

struct grist_principal {
    enum grist_role role;
    char glob[GRIST_GLOB_MAX]; /* fnmatch(3) pattern of the job ids covered */
    uint8_t digest[32]; /* SHA-256 of the token: a job's owner is this */
    uint32_t line; /* the tokens file line that granted it (0: open) */
};

struct grist_auth;

/* What a call may need of its principal. */
enum grist_need { GRIST_NEED_READ, GRIST_NEED_ATTACH, GRIST_NEED_ADMIN };

/**
 * Load a tokens file. Lines that are malformed (not three fields, an
 * unknown role, a token shorter than GRIST_TOKEN_MIN, a duplicate token) make
 * the whole load fail with the line named in err (the token is not quoted).
 *
 * @return 0 with *out set; -EINVAL (err filled); -ENOMEM.
 */
int grist__auth_load(const char *path, struct grist_auth **out, char *err, size_t errsz);
void grist__auth_free(struct grist_auth *a); /* NULL: no-op */
size_t grist__auth_count(const struct grist_auth *a);

/**
 * Resolve the value of an authorization header ("Bearer TOKEN"; NULL or
 * len 0 when absent). a NULL (no tokens file): the open principal.
 *
 * @return 0 with *p filled; -EACCES when a table exists and the value is
 *         missing, malformed or names no token (the caller answers
 *         UNAUTHENTICATED / 401).
 */
int grist__auth_resolve(const struct grist_auth *a, const char *value, size_t len,
                        struct grist_principal *p);

/** Whether p may do need on job (NULL job: a daemon-wide view). */
int grist__auth_allows(const struct grist_principal *p, enum grist_need need, const char *job);

/** The principal of a digest in a (after a reload): 0 and *p, or -ENOENT. */
int grist__auth_lookup(const struct grist_auth *a, const uint8_t digest[32],
                       struct grist_principal *p);

const char *grist__role_name(enum grist_role r);

/* After a tokens reload (a: the table in force, NULL without --tokens):
 * whether who, resolved before it, still may do need on job (NULL: no job
 * yet). who is refreshed from a: a changed role or glob applies from here. */
int grist__auth_still_allowed(const struct grist_auth *a, struct grist_principal *who,
                              const char *job, enum grist_need need);

#endif
