/*
 * TLS material of the daemon (--tls-cert, --tls-key, --tls-client-ca): the
 * same certificate serves gRPC (gRPC core's own TLS) and the HTTP endpoint
 * (OpenSSL through memory BIOs in http.c). With a client CA, both require
 * and verify a client certificate (mTLS).
 *
 * Reload (SIGHUP): the files are read and checked on the loop thread (the
 * key must match the certificate); only a set that passes replaces the one
 * in force. gRPC picks it up at its next handshake through a certificate
 * fetcher; HTTP connections accepted afterwards use the new context.
 * Connections and streams already open are not touched.
 */
#ifndef GRIST_DAEMON_TLS_H
#define GRIST_DAEMON_TLS_H

#include <stddef.h>
#include <stdint.h>

#include <grpc/grpc_security.h>
#include <openssl/ssl.h>

#include "config.h"

struct grist_tls;

/**
 * Read and check the files named in cfg. @return 0 with *out set (NULL when
 * cfg names no certificate: plaintext); -EINVAL with err filled.
 */
int grist__tls_open(const struct grist_config *cfg, struct grist_tls **out, char *err,
                    size_t errsz);

/** Read the files again; on success they take effect for new connections.
 *  @return 0; -EINVAL (err filled, the old set stays). */
int grist__tls_reload(struct grist_tls *t, char *err, size_t errsz);

/** gRPC server credentials backed by t (fetched at each handshake). */
grpc_server_credentials *grist__tls_grpc_credentials(struct grist_tls *t);

/** gRPC client credentials from the set in force, for the daemon's calls to
 *  its peers (the cluster view): their certificates are verified against the
 *  client CA when there is one (the cluster's CA), else the system roots,
 *  and under mTLS the daemon's own certificate is presented. NULL on ENOMEM. */
grpc_channel_credentials *grist__tls_channel_credentials(struct grist_tls *t);

/** The HTTP endpoint's context in force, with a reference (SSL_CTX_free it). */
SSL_CTX *grist__tls_http_ctx(struct grist_tls *t);

/** How many sets were loaded (1 after open; +1 per successful reload). */
uint64_t grist__tls_generation(const struct grist_tls *t);

/** Free t (after the server that used it is destroyed). NULL: no-op. */
void grist__tls_free(struct grist_tls *t);

#endif
