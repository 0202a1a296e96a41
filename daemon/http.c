/*
 * DESIGN: gristd's HTTP endpoint (--http HOST:PORT), for Prometheus,
 * dashboards and people: GET /metrics (Prometheus text format 0.0.4),
 * /api/v1/jobs, /api/v1/jobs/{job}, /api/v1/jobs/{job}/history, and / (the
 * page, daemon/www/index.html, compiled in).
 *
 * Threads: everything runs on the libuv loop that owns the jobs, so a
 * response is a consistent snapshot and nothing is locked. Requests are
 * parsed by Node's http-parser (Debian's libhttp-parser, 2.9): maintained,
 * callback-based and allocation-free, it fits a libuv read callback
 * directly; llhttp, its successor, is not packaged in Debian 12. Each
 * connection serves one request at a time (keep-alive honoured), requests
 * are limited to 4 KiB of URL and 8 KiB of headers, and a response is built in
 * memory and written with one uv_write, so the loop never blocks on a slow
 * client: a stalled reader only holds its own buffer. Work per request is
 * bounded: /metrics by --metrics-max-jobs, history by LTTB downsampling.
 *
 * This file serves (connections, parsing, TLS, routing, responses); the
 * views are metrics.c (Prometheus) and api.c (JSON), sharing http_impl.h.
 */
#include <ctype.h>
#include <errno.h>
#include <http_parser.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "daemon.h"
#include "fanout.h"
#include "http_impl.h"
#include "grist/v1/grist.pb-c.h"
#include "http.h"
#include "jobs.h"
#include "query.h"
#include "log.h"
#include "pbjson.h"
#include "tls.h"
#include "www_index.h"

struct wreq {
    uv_write_t w;
    struct conn *c;
    char *buf;
    int close_after;
    int tls_only; /* handshake records or an alert, not a response */
};

static void conn_free(struct conn *c)
{
    if (c->ssl)
        SSL_free(c->ssl);
    free(c->in);
    free(c);
}

static void timer_closed(uv_handle_t *hd)
{
    conn_free(hd->data);
}

static void conn_closed(uv_handle_t *hd)
{
    struct conn *c = hd->data;
    if (c->ticket)
        c->ticket->c = NULL;
    for (struct conn **p = c->h ? &c->h->conns : &c->next; c->h && *p; p = &(*p)->next)
        if (*p == c) {
            *p = c->next;
            break;
        }
    if (c->timer_on)
        uv_close((uv_handle_t *)&c->timer, timer_closed); /* frees c */
    else
        conn_free(c);
}

static void conn_close(struct conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    uv_close((uv_handle_t *)&c->tcp, conn_closed);
}

static void parse_pending(struct conn *c);

static void on_written(uv_write_t *w, int status)
{
    struct wreq *r = (struct wreq *)w;
    struct conn *c = r->c;
    free(r->buf);
    if (r->tls_only) {
        if (status < 0 || r->close_after)
            conn_close(c);
        free(r);
        return;
    }
    c->busy = 0;
    if (status < 0 || r->close_after)
        conn_close(c);
    else
        parse_pending(c); /* the next pipelined request, if any */
    free(r);
}

static const char *reason_of(int code)
{
    switch (code) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 414:
        return "URI Too Long";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    default:
        return "Error";
    }
}

void grist__http_respond(struct conn *c, int code, const char *ctype, struct sbuf *body, int keep)
{
    if (body->oom) {
        free(body->p);
        *body = (struct sbuf){0};
        code = 500;
        ctype = "application/json";
        sb_printf(body, "{\"error\":\"out of memory\",\"status\":500}\n");
    }
    struct sbuf out = {0};
    sb_printf(&out,
              "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
              "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n%s"
              "Connection: %s\r\n\r\n",
              code, reason_of(code), ctype, body->len,
              code == 401 ? "WWW-Authenticate: Bearer realm=\"gristd\"\r\n" : "",
              keep ? "keep-alive" : "close");
    if (body->len && c->parser.method != HTTP_HEAD) /* HEAD: the headers of GET, no body */
        sb_put(&out, body->p, body->len);
    free(body->p);
    if (c->ssl && !out.oom) { /* the response as TLS records */
        struct sbuf rec = {0};
        if (SSL_write(c->ssl, out.p, (int)out.len) != (int)out.len) {
            ERR_clear_error();
            free(out.p);
            conn_close(c);
            return;
        }
        char chunk[16384];
        int n;
        while ((n = BIO_read(c->wbio, chunk, sizeof(chunk))) > 0)
            sb_put(&rec, chunk, (size_t)n);
        free(out.p);
        out = rec;
    }
    struct wreq *r = calloc(1, sizeof(*r));
    if (!r || out.oom) {
        free(r);
        free(out.p);
        conn_close(c);
        return;
    }
    r->c = c;
    r->buf = out.p;
    r->close_after = !keep;
    c->busy = 1;
    uv_buf_t b = uv_buf_init(out.p, (unsigned)out.len);
    if (uv_write(&r->w, (uv_stream_t *)&c->tcp, &b, 1, on_written) < 0) {
        free(r->buf);
        free(r);
        conn_close(c);
    }
}

void grist__http_json(struct conn *c, int code, json_t *v, int keep)
{
    size_t len = 0;
    char *s = grist__json_take_dump(v, &len);
    /* NULL (no document, or no memory to write it): respond answers 500 */
    struct sbuf b = {.p = s, .len = s ? len : 0, .cap = s ? len : 0, .oom = !s};
    grist__http_respond(c, code, "application/json", &b, keep);
}

void grist__http_error(struct conn *c, int code, const char *msg, int keep)
{
    /* a message that is not UTF-8 (it may quote the request) is not JSON
     * text: the status alone then */
    json_t *o = json_pack("{s:s,s:i}", "error", msg, "status", code);
    if (!o)
        o = json_pack("{s:s,s:i}", "error", "request refused", "status", code);
    grist__http_json(c, code, o, keep);
}

/* percent-decode a path segment in place; -1 on a bad escape */
static int pct_decode(char *s)
{
    char *o = s;
    for (char *p = s; *p; p++) {
        if (*p == '%') {
            unsigned v;
            if (!p[1] || !p[2] || sscanf(p + 1, "%2x", &v) != 1 || v == 0)
                return -EINVAL;
            *o++ = (char)v;
            p += 2;
        } else {
            *o++ = *p;
        }
    }
    *o = 0;
    return 0;
}

static void route(struct conn *c)
{
    const int keep = http_should_keep_alive(&c->parser);
    if (c->url_too_long) {
        grist__http_error(c, 414, "request URL too long", 0);
        return;
    }
    if (c->headers_too_long) {
        grist__http_error(c, 431, "request headers too large (8 KiB at most)", 0);
        return;
    }
    if (c->parser.method != HTTP_GET && c->parser.method != HTTP_HEAD) {
        grist__http_error(c, 405, "only GET is served", keep);
        return;
    }
    char path[URL_MAX + 1];
    const char *q = strchr(c->url, '?');
    const size_t plen = q ? (size_t)(q - c->url) : c->url_len;
    memcpy(path, c->url, plen);
    path[plen] = 0;
    q = q ? q + 1 : "";
    if (strcmp(path, "/") == 0 || strcmp(path, "/index.html") == 0) {
        /* the page is code, no data: open; what it fetches needs a token */
        struct sbuf b = {0};
        sb_put(&b, (const char *)grist_www_index, grist_www_index_len);
        grist__http_respond(c, 200, "text/html; charset=utf-8", &b, keep);
        return;
    }
    struct grist_principal who;
    if (c->auth_too_long ||
        grist__auth_resolve(c->h->d->auth, c->auth_len ? c->auth : NULL, c->auth_len, &who) < 0) {
        c->h->d->cnt.auth_unauthenticated++;
        grist__http_error(c, 401, "a valid 'Authorization: Bearer TOKEN' header is required", keep);
        return;
    }
    if (strcmp(path, "/metrics") == 0) {
        grist__http_metrics(c, &who, keep);
        return;
    }
    if (strcmp(path, "/api/v1/jobs") == 0 || strcmp(path, "/api/v1/jobs/") == 0) {
        grist__api_jobs(c, &who, keep);
        return;
    }
    if (strcmp(path, "/api/v1/cluster/jobs") == 0) {
        struct fan_ticket *t = calloc(1, sizeof(*t));
        if (!t) {
            grist__http_error(c, 500, "out of memory", 0);
            return;
        }
        t->c = c;
        t->who = who;
        t->keep = keep;
        c->ticket = t;
        c->busy = 1; /* answered when every replica did (at most 2 s) */
        const int r = grist__fanout_jobs(c->h->d, c->auth, c->auth_len, grist__api_on_cluster, t);
        if (r < 0) {
            c->ticket = NULL;
            c->busy = 0;
            free(t);
            grist__http_error(c, r == -ENOENT ? 404 : 500,
                              r == -ENOENT ? "not a sharded gristd (--shard I/N --shard-peers)"
                                           : "out of memory",
                              keep);
        }
        return;
    }
    static const char prefix[] = "/api/v1/jobs/";
    if (strncmp(path, prefix, sizeof(prefix) - 1) == 0) {
        char *id = path + sizeof(prefix) - 1;
        char *rest = strchr(id, '/');
        if (rest)
            *rest++ = 0;
        if (pct_decode(id) < 0) {
            grist__http_error(c, 400, "job id: bad percent-encoding", keep);
            return;
        }
        if (!grist__auth_allows(&who, GRIST_NEED_READ, id)) {
            c->h->d->cnt.auth_denied++;
            grist__http_error(c, 403, "this token does not cover the job", keep);
            return;
        }
        struct grist_job *j = grist__job_find(c->h->d, id);
        if (!j) {
            grist__http_error(c, 404, "no such job", keep);
            return;
        }
        grist__job_mark_read(j);
        if (!rest || !*rest) {
            grist__api_job(c, j, keep);
            return;
        }
        if (strcmp(rest, "history") == 0) {
            grist__api_history(c, j, q, keep);
            return;
        }
    }
    grist__http_error(c, 404, "no such resource (see /api/v1/jobs, /metrics, /)", keep);
}

/* ---- parsing ---- */

static int on_message_begin(http_parser *p)
{
    struct conn *c = p->data;
    c->url_len = 0;
    c->url[0] = 0;
    c->header_bytes = 0;
    c->url_too_long = c->headers_too_long = 0;
    c->field_len = 0;
    c->in_value = c->field_is_auth = 0;
    c->auth_len = 0;
    c->auth_too_long = 0;
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    if (c->url_len + len > URL_MAX) {
        c->url_too_long = 1;
        return 0;
    }
    memcpy(c->url + c->url_len, at, len);
    c->url_len += len;
    c->url[c->url_len] = 0;
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    c->header_bytes += len;
    if (c->header_bytes > HEADER_MAX)
        c->headers_too_long = 1;
    if (c->in_value) { /* a new field begins */
        c->in_value = 0;
        c->field_len = 0;
    }
    for (size_t i = 0; i < len; i++, c->field_len++)
        if (c->field_len < sizeof(c->field))
            c->field[c->field_len] = at[i];
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    c->header_bytes += len;
    if (c->header_bytes > HEADER_MAX)
        c->headers_too_long = 1;
    if (!c->in_value) {
        c->in_value = 1;
        c->field_is_auth = c->field_len == 13 && strncasecmp(c->field, "authorization", 13) == 0;
        if (c->field_is_auth) /* a second Authorization header replaces the first */
            c->auth_len = 0, c->auth_too_long = 0;
    }
    if (c->field_is_auth) {
        if (c->auth_len + len >= sizeof(c->auth))
            c->auth_too_long = 1;
        else
            memcpy(c->auth + c->auth_len, at, len), c->auth_len += len;
    }
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct conn *c = p->data;
    route(c);
    /* one request at a time: stop parsing until the response is written */
    http_parser_pause(p, 1);
    return 0;
}

static http_parser_settings g_settings;

static void on_alloc(uv_handle_t *hd, size_t sz, uv_buf_t *b)
{
    (void)hd;
    b->base = malloc(sz);
    b->len = b->base ? sz : 0;
}

static void on_timeout(uv_timer_t *t)
{
    struct conn *c = t->data;
    if (!c->busy) /* nothing being answered: idle, or a request that never completed */
        conn_close(c);
}

/* (Re)arm the idle timer: called when a connection opens and after every
 * complete request. */
static void arm_timer(struct conn *c)
{
    if (c->timer_on)
        uv_timer_start(&c->timer, on_timeout, (uint64_t)(c->h->d->cfg->http_idle_timeout * 1000.0),
                       0);
}

/* Parse buffered input until a request completes (it is answered, and the
 * parser waits for the response to be written) or the input runs out.
 * Pipelined requests are answered in order, one at a time. */
static void parse_pending(struct conn *c)
{
    while (!c->busy && !c->closing && c->in_len > 0) {
        const size_t used = http_parser_execute(&c->parser, &g_settings, c->in, c->in_len);
        const enum http_errno err = HTTP_PARSER_ERRNO(&c->parser);
        const size_t consumed = used; /* paused: up to and including the request's last byte */
        if (err == HPE_PAUSED) {
            http_parser_pause(&c->parser, 0);
            arm_timer(c);
        } else if (err != HPE_OK) {
            if (!c->busy)
                grist__http_error(c, 400, http_errno_description(err), 0);
            else
                conn_close(c);
            c->in_len = 0;
            return;
        }
        memmove(c->in, c->in + consumed, c->in_len - consumed);
        c->in_len -= consumed;
        if (err != HPE_PAUSED)
            break; /* a partial request: wait for more bytes */
    }
}

/* Send what OpenSSL wrote into wbio outside a response (handshake
 * records, alerts); close_after once it is out. */
static void tls_flush(struct conn *c, int close_after)
{
    struct sbuf out = {0};
    char chunk[16384];
    int n;
    while ((n = BIO_read(c->wbio, chunk, sizeof(chunk))) > 0)
        sb_put(&out, chunk, (size_t)n);
    if (out.len == 0 && !out.oom) {
        if (close_after)
            conn_close(c);
        return;
    }
    struct wreq *r = out.oom ? NULL : calloc(1, sizeof(*r));
    if (!r) {
        free(out.p);
        conn_close(c);
        return;
    }
    r->c = c;
    r->buf = out.p;
    r->tls_only = 1;
    r->close_after = close_after;
    uv_buf_t ub = uv_buf_init(out.p, (unsigned)out.len);
    if (uv_write(&r->w, (uv_stream_t *)&c->tcp, &ub, 1, on_written) < 0) {
        free(r->buf);
        free(r);
        conn_close(c);
    }
}

/* Records in, plaintext appended to c->in. @return 0; -1 when the
 * connection is done (a failed handshake: no certificate under mTLS, an
 * unknown CA, plaintext sent to a TLS port; it is closed, after the alert
 * if there is one). */
static int tls_input(struct conn *c, const char *data, size_t len)
{
    if (BIO_write(c->rbio, data, (int)len) != (int)len) {
        conn_close(c);
        return -ECONNRESET;
    }
    for (;;) {
        if (c->in_len + 4096 > c->in_cap) {
            size_t cap = c->in_cap ? c->in_cap * 2 : 8192;
            char *p = c->in_len + 4096 > HTTP_IN_MAX ? NULL : realloc(c->in, cap);
            if (!p) { /* more than any client needs queued, or no memory */
                conn_close(c);
                return -ECONNRESET;
            }
            c->in = p;
            c->in_cap = cap;
        }
        const int n = SSL_read(c->ssl, c->in + c->in_len, (int)(c->in_cap - c->in_len));
        if (n > 0) {
            c->in_len += (size_t)n;
            continue;
        }
        const int e = SSL_get_error(c->ssl, n);
        if (e == SSL_ERROR_WANT_READ) {
            tls_flush(c, 0); /* the server's handshake flight, if any */
            return 0;
        }
        if (e != SSL_ERROR_ZERO_RETURN) {
            char why[160];
            ERR_error_string_n(ERR_peek_last_error(), why, sizeof(why));
            GRIST_DEBUG("http: TLS connection refused: %s", why);
        }
        ERR_clear_error();
        tls_flush(c, 1); /* the alert, then close */
        return -ECONNRESET;
    }
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct conn *c = s->data;
    if (n < 0) {
        free(b->base);
        conn_close(c);
        return;
    }
    if (n == 0 || c->closing) {
        free(b->base);
        return;
    }
    if (c->ssl) {
        const int r = tls_input(c, b->base, (size_t)n);
        free(b->base);
        if (r == 0)
            parse_pending(c);
        return;
    }
    if (c->in_len + (size_t)n > HTTP_IN_MAX) { /* more than any client needs queued */
        free(b->base);
        conn_close(c);
        return;
    }
    if (c->in_len + (size_t)n > c->in_cap) {
        size_t cap = c->in_cap ? c->in_cap : 4096;
        while (cap < c->in_len + (size_t)n)
            cap *= 2;
        char *p = realloc(c->in, cap);
        if (!p) {
            free(b->base);
            conn_close(c);
            return;
        }
        c->in = p;
        c->in_cap = cap;
    }
    memcpy(c->in + c->in_len, b->base, (size_t)n);
    c->in_len += (size_t)n;
    free(b->base);
    parse_pending(c);
}

static void on_connection(uv_stream_t *srv, int status)
{
    struct grist_http *h = srv->data;
    if (status < 0 || h->stopping)
        return;
    struct conn *c = calloc(1, sizeof(*c));
    if (!c)
        return;
    c->h = h;
    uv_tcp_init(h->d->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(srv, (uv_stream_t *)&c->tcp) < 0) {
        uv_close((uv_handle_t *)&c->tcp, (uv_close_cb)free);
        return;
    }
    if (h->d->tls) {
        SSL_CTX *ctx = grist__tls_http_ctx(h->d->tls); /* the set in force now */
        c->ssl = ctx ? SSL_new(ctx) : NULL;
        if (ctx)
            SSL_CTX_free(ctx); /* the SSL holds its own reference */
        c->rbio = BIO_new(BIO_s_mem());
        c->wbio = BIO_new(BIO_s_mem());
        if (!c->ssl || !c->rbio || !c->wbio) {
            BIO_free(c->rbio);
            BIO_free(c->wbio);
            if (c->ssl)
                SSL_free(c->ssl);
            c->ssl = NULL;
            uv_close((uv_handle_t *)&c->tcp, (uv_close_cb)free);
            return;
        }
        SSL_set_bio(c->ssl, c->rbio, c->wbio);
        SSL_set_accept_state(c->ssl);
    }
    c->next = h->conns;
    h->conns = c;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    if (uv_timer_init(h->d->loop, &c->timer) == 0) {
        c->timer.data = c;
        c->timer_on = 1;
        arm_timer(c);
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

int grist__http_start(struct grist_daemon *d, const char *address, struct grist_http **out)
{
    char host[256];
    const char *colon = strrchr(address, ':');
    if (!colon || colon == address || (size_t)(colon - address) >= sizeof(host))
        return -EINVAL;
    memcpy(host, address, (size_t)(colon - address));
    host[colon - address] = 0;
    char *end;
    const long port = strtol(colon + 1, &end, 10);
    if (*end || port < 0 || port > 65535)
        return -EINVAL;
    struct sockaddr_storage ss;
    if (host[0] == '[') { /* [v6]:port */
        size_t hl = strlen(host);
        if (hl < 2 || host[hl - 1] != ']')
            return -EINVAL;
        host[hl - 1] = 0;
        if (uv_ip6_addr(host + 1, (int)port, (struct sockaddr_in6 *)&ss) < 0)
            return -EINVAL;
    } else if (uv_ip4_addr(strcmp(host, "localhost") == 0 ? "127.0.0.1" : host, (int)port,
                           (struct sockaddr_in *)&ss) < 0) {
        return -EINVAL;
    }
    http_parser_settings_init(&g_settings);
    g_settings.on_message_begin = on_message_begin;
    g_settings.on_url = on_url;
    g_settings.on_header_field = on_header_field;
    g_settings.on_header_value = on_header_value;
    g_settings.on_message_complete = on_message_complete;
    struct grist_http *h = calloc(1, sizeof(*h));
    if (!h)
        return -ENOMEM;
    h->d = d;
    uv_tcp_init(d->loop, &h->srv);
    h->srv.data = h;
    int r = uv_tcp_bind(&h->srv, (const struct sockaddr *)&ss, 0);
    if (r == 0)
        r = uv_listen((uv_stream_t *)&h->srv, 128, on_connection);
    if (r < 0) {
        GRIST_ERR("--http %s: %s", address, uv_strerror(r));
        uv_close((uv_handle_t *)&h->srv, (uv_close_cb)free);
        return r;
    }
    struct sockaddr_storage bound;
    int blen = sizeof(bound);
    uv_tcp_getsockname(&h->srv, (struct sockaddr *)&bound, &blen);
    char ip[64] = "?";
    if (bound.ss_family == AF_INET6) {
        uv_ip6_name((struct sockaddr_in6 *)&bound, ip, sizeof(ip));
        snprintf(h->bound, sizeof(h->bound), "[%s]:%d", ip,
                 ntohs(((struct sockaddr_in6 *)&bound)->sin6_port));
    } else {
        uv_ip4_name((struct sockaddr_in *)&bound, ip, sizeof(ip));
        snprintf(h->bound, sizeof(h->bound), "%s:%d", ip,
                 ntohs(((struct sockaddr_in *)&bound)->sin_port));
    }
    GRIST_INFO("http: serving /metrics, /api/v1 and / on %s (%s)", h->bound,
               d->tls ? (d->cfg->tls_client_ca[0] ? "TLS, client certificates" : "TLS")
                      : "plaintext");
    *out = h;
    return 0;
}

const char *grist__http_bound(const struct grist_http *h)
{
    return h->bound;
}

void grist__http_stop(struct grist_http *h)
{
    if (!h)
        return;
    h->stopping = 1;
    /* libuv runs close callbacks in its own order: detach the connections
     * from h before h goes with its listener */
    for (struct conn *c = h->conns, *n; c; c = n) {
        n = c->next;
        if (c->ticket) { /* a cluster query in flight answers nobody now */
            c->ticket->c = NULL;
            c->ticket = NULL;
        }
        c->h = NULL;
        conn_close(c);
    }
    h->conns = NULL;
    uv_close((uv_handle_t *)&h->srv, (uv_close_cb)free);
}
