/*
 * Inside gristd's HTTP endpoint: the connection and server state shared by
 * http.c (serving: connections, parsing, TLS, routing), metrics.c (the
 * Prometheus exposition) and api.c (the JSON views). Not for other modules:
 * the daemon sees http.h's start/stop only.
 */
#ifndef GRIST_HTTP_IMPL_H
#define GRIST_HTTP_IMPL_H

#include <http_parser.h>
#include <jansson.h>
#include <openssl/ssl.h>
#include <uv.h>

#include "auth.h"
#include "daemon.h"
#include "fanout.h"
#include "sbuf.h"

#define URL_MAX 4096
#define HEADER_MAX 8192

struct conn {
    uv_tcp_t tcp;
    struct grist_http *h;
    struct conn *next;
    http_parser parser;
    char url[URL_MAX + 1];
    size_t url_len, header_bytes;
    int url_too_long, headers_too_long, busy, closing;
    /* the Authorization header, collected across the parser's pieces */
    char field[16];
    size_t field_len;
    int in_value, field_is_auth;
    char auth[512];
    size_t auth_len;
    int auth_too_long;
    char *in; /* bytes read and not parsed yet (pipelined requests) */
    size_t in_len, in_cap;
    uv_timer_t timer; /* idle / slow-request timeout (--http-idle-timeout) */
    int timer_on;
    /* TLS (--tls-cert): the socket carries records; ssl turns them into the
     * plaintext in `in` (SSL_read) and responses into records (SSL_write),
     * through two memory BIOs, so libuv keeps doing all the I/O */
    SSL *ssl;
    BIO *rbio, *wbio; /* owned by ssl */
    struct fan_ticket *ticket; /* a cluster query in flight for this connection */
};

/* A cluster query outlives its connection if the client goes: the answer
 * then finds c NULL and is dropped. */
struct fan_ticket {
    struct conn *c;
    struct grist_principal who;
    int keep;
};

/* Unparsed input a connection may hold (pipelined requests): past it, close. */
#define HTTP_IN_MAX (64u << 10)

struct grist_http {
    uv_tcp_t srv;
    struct grist_daemon *d;
    char bound[80];
    struct conn *conns;
    int stopping;
};

/* Answer the request in flight on c with body (taken); keep: keep-alive. */
void grist__http_respond(struct conn *c, int code, const char *ctype, struct sbuf *body, int keep);
/* The JSON document v (taken; NULL: a 500 "out of memory" answer). */
void grist__http_json(struct conn *c, int code, json_t *v, int keep);
/* {"error": msg, "status": code} */
void grist__http_error(struct conn *c, int code, const char *msg, int keep);

/* metrics.c: GET /metrics, the jobs `who` may read */
void grist__http_metrics(struct conn *c, const struct grist_principal *who, int keep);

/* api.c: the JSON views */
void grist__api_jobs(struct conn *c, const struct grist_principal *who, int keep);
void grist__api_job(struct conn *c, const struct grist_job *j, int keep);
void grist__api_history(struct conn *c, const struct grist_job *j, const char *q, int keep);
/* the fanout callback of GET /api/v1/cluster/jobs (ud: a struct fan_ticket) */
void grist__api_on_cluster(void *ud, struct grist_fanout_result *res, uint32_t n);

#endif
