/*
 * DESIGN: TLS material (see tls.h). Threads: open and reload run on the
 * loop thread (or main before it); the gRPC fetcher runs on gRPC's own
 * threads at each handshake, so the PEM set in force is guarded by a mutex
 * and identified by a generation: the fetcher answers UNCHANGED unless the
 * generation moved since it last handed a config to gRPC.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "log.h"
#include "tls.h"

struct pem_set {
    char *cert, *key, *ca; /* ca NULL: no client certificates */
};

/* One per gRPC credentials object (one per listener): each server security
 * connector must get its own initial config and its own copy of a reload. */
struct fetcher {
    struct grist_tls *t;
    uint64_t fetched_gen; /* guarded by t->mu */
};

struct grist_tls {
    char cert_path[1024], key_path[1024], ca_path[1024];
    pthread_mutex_t mu;
    struct pem_set cur; /* guarded by mu */
    SSL_CTX *http; /* guarded by mu */
    uint64_t gen; /* guarded by mu */
    int require_client;
    struct fetcher fetchers[GRIST_MAX_LISTENERS];
    int nfetchers;
};

static void pem_free(struct pem_set *s)
{
    if (s->key)
        OPENSSL_cleanse(s->key, strlen(s->key));
    free(s->cert);
    free(s->key);
    free(s->ca);
    memset(s, 0, sizeof(*s));
}

static char *slurp(const char *path, char *err, size_t errsz)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errsz, "%s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 8192, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf)
            break;
        n += fread(buf + n, 1, cap - 1 - n, f);
        if (n < cap - 1 || feof(f) || ferror(f))
            break;
        if (cap >= (1u << 20)) {
            snprintf(err, errsz, "%s: larger than 1 MiB", path);
            free(buf);
            fclose(f);
            return NULL;
        }
        char *nb = realloc(buf, cap * 2);
        if (!nb) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf || bad) {
        snprintf(err, errsz, "%s: cannot read", path);
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

static void ssl_error(const char *what, const char *path, char *err, size_t errsz)
{
    char e[200] = "";
    unsigned long code = ERR_get_error();
    if (code)
        ERR_error_string_n(code, e, sizeof(e));
    ERR_clear_error();
    snprintf(err, errsz, "%s %s: %s", what, path, e[0] ? e : "invalid");
}

/* An OpenSSL context from the PEM text of the set (also its check: the
 * certificate chain parses, the key parses and matches it, the CA parses).
 * The same buffers then go to gRPC, so what was checked is what is served. */
static SSL_CTX *make_ctx(const struct grist_tls *t, const struct pem_set *pem, char *err,
                         size_t errsz)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        snprintf(err, errsz, "cannot create a TLS context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* session resumption with client certificates needs a context id */
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"gristd", 6);
    BIO *b = BIO_new_mem_buf(pem->cert, -1);
    X509 *leaf = b ? PEM_read_bio_X509_AUX(b, NULL, NULL, NULL) : NULL;
    int ok = leaf && SSL_CTX_use_certificate(ctx, leaf) == 1;
    X509_free(leaf);
    for (X509 *x; ok && (x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL;)
        if (SSL_CTX_add0_chain_cert(ctx, x) != 1) { /* takes x on success */
            X509_free(x);
            ok = 0;
        }
    BIO_free(b);
    if (!ok) {
        ssl_error("certificate", t->cert_path, err, errsz);
        goto fail;
    }
    ERR_clear_error(); /* the chain loop ends on "no start line" */
    b = BIO_new_mem_buf(pem->key, -1);
    EVP_PKEY *key = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    ok = key && SSL_CTX_use_PrivateKey(ctx, key) == 1;
    EVP_PKEY_free(key);
    if (!ok) {
        ssl_error("private key", t->key_path, err, errsz);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        ssl_error("private key does not match the certificate", t->key_path, err, errsz);
        goto fail;
    }
    if (t->require_client) {
        X509_STORE *store = SSL_CTX_get_cert_store(ctx);
        b = BIO_new_mem_buf(pem->ca, -1);
        int n = 0;
        for (X509 *x; b && (x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL; n++) {
            X509_STORE_add_cert(store, x);
            X509_free(x);
        }
        BIO_free(b);
        if (n == 0) {
            ssl_error("client CA", t->ca_path, err, errsz);
            goto fail;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    }
    ERR_clear_error();
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

static int load(struct grist_tls *t, char *err, size_t errsz)
{
    struct pem_set s = {0};
    s.cert = slurp(t->cert_path, err, errsz);
    s.key = s.cert ? slurp(t->key_path, err, errsz) : NULL;
    if (s.key && t->require_client)
        s.ca = slurp(t->ca_path, err, errsz);
    if (!s.cert || !s.key || (t->require_client && !s.ca)) {
        pem_free(&s);
        return -EINVAL;
    }
    SSL_CTX *ctx = make_ctx(t, &s, err, errsz);
    if (!ctx) {
        pem_free(&s);
        return -EINVAL;
    }
    pthread_mutex_lock(&t->mu);
    struct pem_set old = t->cur;
    SSL_CTX *old_ctx = t->http;
    t->cur = s;
    t->http = ctx;
    t->gen++;
    pthread_mutex_unlock(&t->mu);
    pem_free(&old);
    if (old_ctx)
        SSL_CTX_free(old_ctx);
    return 0;
}

int grist__tls_open(const struct grist_config *cfg, struct grist_tls **out, char *err, size_t errsz)
{
    *out = NULL;
    if (!cfg->tls_cert[0] && !cfg->tls_key[0]) {
        if (cfg->tls_client_ca[0]) {
            snprintf(err, errsz, "--tls-client-ca needs --tls-cert and --tls-key");
            return -EINVAL;
        }
        return 0;
    }
    if (!cfg->tls_cert[0] || !cfg->tls_key[0]) {
        snprintf(err, errsz, "--tls-cert and --tls-key go together");
        return -EINVAL;
    }
    struct grist_tls *t = calloc(1, sizeof(*t));
    if (!t) {
        snprintf(err, errsz, "out of memory");
        return -ENOMEM;
    }
    snprintf(t->cert_path, sizeof(t->cert_path), "%s", cfg->tls_cert);
    snprintf(t->key_path, sizeof(t->key_path), "%s", cfg->tls_key);
    snprintf(t->ca_path, sizeof(t->ca_path), "%s", cfg->tls_client_ca);
    t->require_client = cfg->tls_client_ca[0] != '\0';
    pthread_mutex_init(&t->mu, NULL);
    if (load(t, err, errsz) < 0) {
        grist__tls_free(t);
        return -EINVAL;
    }
    *out = t;
    return 0;
}

int grist__tls_reload(struct grist_tls *t, char *err, size_t errsz)
{
    return load(t, err, errsz);
}

uint64_t grist__tls_generation(const struct grist_tls *t)
{
    return t ? t->gen : 0;
}

/* gRPC threads, at each handshake */
static grpc_ssl_certificate_config_reload_status fetch(void *ud,
                                                       grpc_ssl_server_certificate_config **config)
{
    struct fetcher *fe = ud;
    struct grist_tls *t = fe->t;
    grpc_ssl_certificate_config_reload_status st = GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_UNCHANGED;
    pthread_mutex_lock(&t->mu);
    if (t->gen != fe->fetched_gen) {
        grpc_ssl_pem_key_cert_pair pair = {t->cur.key, t->cur.cert};
        /* gRPC 1.51 asserts that a fetched config has root certificates
         * even when client certificates are not requested: without a client
         * CA the server's own chain stands in, and is never used */
        *config = grpc_ssl_server_certificate_config_create(t->cur.ca ? t->cur.ca : t->cur.cert,
                                                            &pair, 1);
        if (*config) {
            fe->fetched_gen = t->gen;
            st = GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_NEW;
        } else {
            st = GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_FAIL;
        }
    }
    pthread_mutex_unlock(&t->mu);
    return st;
}

grpc_server_credentials *grist__tls_grpc_credentials(struct grist_tls *t)
{
    if (t->nfetchers == GRIST_MAX_LISTENERS)
        return NULL;
    struct fetcher *fe = &t->fetchers[t->nfetchers++];
    fe->t = t;
    fe->fetched_gen = 0;
    grpc_ssl_server_credentials_options *o =
        grpc_ssl_server_credentials_create_options_using_config_fetcher(
            t->require_client ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                              : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
            fetch, fe);
    return o ? grpc_ssl_server_credentials_create_with_options(o) : NULL;
}

grpc_channel_credentials *grist__tls_channel_credentials(struct grist_tls *t)
{
    pthread_mutex_lock(&t->mu);
    grpc_ssl_pem_key_cert_pair pair = {t->cur.key, t->cur.cert};
    grpc_channel_credentials *c =
        grpc_ssl_credentials_create(t->cur.ca, t->require_client ? &pair : NULL, NULL, NULL);
    pthread_mutex_unlock(&t->mu);
    return c;
}

SSL_CTX *grist__tls_http_ctx(struct grist_tls *t)
{
    pthread_mutex_lock(&t->mu);
    SSL_CTX *c = t->http;
    SSL_CTX_up_ref(c);
    pthread_mutex_unlock(&t->mu);
    return c;
}

void grist__tls_free(struct grist_tls *t)
{
    if (!t)
        return;
    pem_free(&t->cur);
    if (t->http)
        SSL_CTX_free(t->http);
    pthread_mutex_destroy(&t->mu);
    free(t);
}
