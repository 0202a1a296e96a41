/*
 * DESIGN: the tokens table (see auth.h). A token is hashed once when the
 * file loads and once per call; the call's digest is compared with every
 * entry by CRYPTO_memcmp and the loop does not stop at the first match, so
 * the time taken says nothing about which entry (or how much of one)
 * matched. The file should be readable by gristd's user only; a file that
 * others can read is loaded with a warning.
 */
#include <errno.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "auth.h"
#include "log.h"

struct entry {
    struct grist_principal p;
};

struct grist_auth {
    struct entry *e;
    size_t n;
};

static void digest(const char *tok, size_t len, uint8_t out[32])
{
    unsigned int n = 32;
    if (!EVP_Digest(tok, len, out, &n, EVP_sha256(), NULL))
        memset(out, 0, 32); /* cannot happen with the default provider */
}

const char *grist__role_name(enum grist_role r)
{
    switch (r) {
    case GRIST_ROLE_READER:
        return "reader";
    case GRIST_ROLE_WORKER:
        return "worker";
    case GRIST_ROLE_ADMIN:
        return "admin";
    default:
        return "open";
    }
}

static int parse_role(const char *s, enum grist_role *r)
{
    if (strcmp(s, "reader") == 0)
        *r = GRIST_ROLE_READER;
    else if (strcmp(s, "worker") == 0)
        *r = GRIST_ROLE_WORKER;
    else if (strcmp(s, "admin") == 0)
        *r = GRIST_ROLE_ADMIN;
    else
        return -EINVAL;
    return 0;
}

/* A token is printable ASCII without spaces (what a header can carry). */
static int token_ok(const char *t)
{
    for (; *t; t++)
        if (*t <= 0x20 || *t >= 0x7f)
            return 0;
    return 1;
}

int grist__auth_load(const char *path, struct grist_auth **out, char *err, size_t errsz)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errsz, "tokens file %s: %s", path, strerror(errno));
        return -EINVAL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && (st.st_mode & 0077))
        GRIST_WARN("tokens file %s can be read by other users (mode %03o); chmod 600 it", path,
                   (unsigned)(st.st_mode & 0777));
    struct grist_auth *a = calloc(1, sizeof(*a));
    size_t cap = 0;
    char line[1024];
    unsigned lineno = 0;
    int r = a ? 0 : -ENOMEM;
    while (r == 0 && fgets(line, sizeof(line), f)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(f)) {
            snprintf(err, errsz, "tokens file %s:%u: line longer than %zu bytes", path, lineno,
                     sizeof(line) - 2);
            r = -EINVAL;
            break;
        }
        line[strcspn(line, "\r\n")] = '\0';
        /* '#' starts a comment at the line's start or after a blank only:
         * inside a token it is part of the token */
        for (char *h = line; (h = strchr(h, '#')) != NULL; h++)
            if (h == line || h[-1] == ' ' || h[-1] == '\t') {
                *h = '\0';
                break;
            }
        char *save = NULL;
        char *tok = strtok_r(line, " \t", &save);
        if (!tok)
            continue;
        char *role = strtok_r(NULL, " \t", &save);
        char *glob = strtok_r(NULL, " \t", &save);
        char *extra = strtok_r(NULL, " \t", &save);
        struct grist_principal p = {.line = lineno};
        if (!role || !glob || extra) {
            snprintf(err, errsz, "tokens file %s:%u: expected 'TOKEN ROLE JOB_GLOB'", path, lineno);
            r = -EINVAL;
        } else if (parse_role(role, &p.role) < 0) {
            snprintf(err, errsz, "tokens file %s:%u: role '%.32s' is not reader, worker or admin",
                     path, lineno, role);
            r = -EINVAL;
        } else if (strlen(tok) < GRIST_TOKEN_MIN || !token_ok(tok)) {
            snprintf(err, errsz,
                     "tokens file %s:%u: a token must be at least %d printable characters "
                     "without spaces (e.g. openssl rand -hex 32)",
                     path, lineno, GRIST_TOKEN_MIN);
            r = -EINVAL;
        } else if (strlen(glob) >= sizeof(p.glob)) {
            snprintf(err, errsz, "tokens file %s:%u: job glob longer than %d bytes", path, lineno,
                     GRIST_GLOB_MAX - 1);
            r = -EINVAL;
        }
        if (r < 0)
            break;
        strcpy(p.glob, glob);
        digest(tok, strlen(tok), p.digest);
        OPENSSL_cleanse(tok, strlen(tok));
        for (size_t i = 0; i < a->n; i++)
            if (memcmp(a->e[i].p.digest, p.digest, 32) == 0) {
                snprintf(err, errsz, "tokens file %s:%u: the token of line %u again", path, lineno,
                         a->e[i].p.line);
                r = -EINVAL;
            }
        if (r < 0)
            break;
        if (a->n == cap) {
            size_t nc = cap ? 2 * cap : 16;
            struct entry *e = realloc(a->e, nc * sizeof(*e));
            if (!e) {
                r = -ENOMEM;
                break;
            }
            a->e = e;
            cap = nc;
        }
        a->e[a->n++].p = p;
    }
    OPENSSL_cleanse(line, sizeof(line));
    fclose(f);
    if (r < 0) {
        if (r == -ENOMEM)
            snprintf(err, errsz, "tokens file %s: out of memory", path);
        grist__auth_free(a);
        return r;
    }
    *out = a;
    return 0;
}

void grist__auth_free(struct grist_auth *a)
{
    if (!a)
        return;
    if (a->e)
        OPENSSL_cleanse(a->e, a->n * sizeof(*a->e));
    free(a->e);
    free(a);
}

size_t grist__auth_count(const struct grist_auth *a)
{
    return a ? a->n : 0;
}

int grist__auth_resolve(const struct grist_auth *a, const char *value, size_t len,
                        struct grist_principal *p)
{
    memset(p, 0, sizeof(*p));
    if (!a) {
        p->role = GRIST_ROLE_OPEN;
        strcpy(p->glob, "*");
        return 0;
    }
    static const char bearer[] = "Bearer ";
    const size_t bl = sizeof(bearer) - 1;
    if (!value || len <= bl || strncasecmp(value, bearer, bl) != 0)
        return -EACCES;
    uint8_t d[32];
    digest(value + bl, len - bl, d);
    size_t found = a->n;
    for (size_t i = 0; i < a->n; i++) {
        /* every entry is compared; the match is selected without a branch
         * that depends on where it was found */
        const int eq = CRYPTO_memcmp(a->e[i].p.digest, d, 32) == 0;
        const size_t mask = (size_t)0 - (size_t)eq;
        found = (found & ~mask) | (i & mask);
    }
    if (found == a->n)
        return -EACCES;
    *p = a->e[found].p;
    return 0;
}

int grist__auth_lookup(const struct grist_auth *a, const uint8_t dg[32], struct grist_principal *p)
{
    if (!a)
        return -ENOENT;
    for (size_t i = 0; i < a->n; i++)
        if (memcmp(a->e[i].p.digest, dg, 32) == 0) {
            *p = a->e[i].p;
            return 0;
        }
    return -ENOENT;
}

int grist__auth_allows(const struct grist_principal *p, enum grist_need need, const char *job)
{
    if (p->role == GRIST_ROLE_OPEN || p->role == GRIST_ROLE_ADMIN)
        return 1;
    if (need == GRIST_NEED_ADMIN)
        return 0;
    if (need == GRIST_NEED_ATTACH && p->role != GRIST_ROLE_WORKER)
        return 0;
    if (!job) /* a daemon-wide view, which the caller filters by job */
        return 1;
    return fnmatch(p->glob, job, 0) == 0;
}

int grist__auth_still_allowed(const struct grist_auth *a, struct grist_principal *who,
                              const char *job, enum grist_need need)
{
    if (who->role == GRIST_ROLE_OPEN)
        return a == NULL;
    struct grist_principal now;
    if (grist__auth_lookup(a, who->digest, &now) < 0)
        return 0;
    *who = now;
    return !job || grist__auth_allows(who, need, job);
}
