/*
 * DESIGN: the listener probe (--listener-probe SECONDS). Loop thread.
 *
 * gRPC core (1.51) stops accepting on a listener for good when accept4()
 * fails with EMFILE: the socket stays open, so the kernel still completes
 * TCP handshakes into its backlog, but nothing ever answers. The process
 * lives on and, without this probe, exits 0 at the next stop, so no
 * supervisor restarts it. Every interval the loop opens a connection to each
 * of its own TCP and unix listeners, sends the HTTP/2 client preface and an
 * empty SETTINGS frame, and expects the server's first frame, a SETTINGS
 * frame, before the next interval. After PROBE_FAILS consecutive probes of
 * one listener without an answer, the health check answers NOT_SERVING and
 * the daemon shuts down in order (its final snapshot included) and exits 1,
 * so that systemd (Restart=on-failure) or Kubernetes starts a working one.
 * A TLS listener gets a ClientHello instead and must answer with a handshake
 * record. A listener whose address is a host name (not a numeric address or
 * a unix path) is not probed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "daemon.h"
#include "net.h"
#include "probe.h"
#include "log.h"

#define PROBE_FAILS 3

struct probe_conn {
    union {
        uv_handle_t h;
        uv_stream_t s;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } u;
    uv_connect_t creq;
    uv_write_t wreq;
    struct grist_probe *p;
    int i;
    unsigned char buf[64];
    size_t got;
};

struct grist_probe {
    struct grist_daemon *d;
    uv_timer_t timer;
    void (*failed)(struct grist_daemon *d);
    int n;
    struct sockaddr_storage addr[GRIST_MAX_LISTENERS];
    char path[GRIST_MAX_LISTENERS][256]; /* unix listeners */
    int kind[GRIST_MAX_LISTENERS]; /* 0 not probed, 1 tcp, 2 unix, 3 tcp with TLS */
    int answered[GRIST_MAX_LISTENERS]; /* the probe of this interval got its SETTINGS */
    int fails[GRIST_MAX_LISTENERS];
    struct probe_conn *cur[GRIST_MAX_LISTENERS];
    int stopped, gave_up;
    unsigned char hello[2048]; /* TLS listeners: a ClientHello made by OpenSSL */
    size_t hello_len;
};

/* The HTTP/2 client preface and an empty SETTINGS frame (RFC 9113 3.4). */
static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
                              "\x00\x00\x00\x04\x00\x00\x00\x00\x00";

static void on_closed(uv_handle_t *h)
{
    free(h->data);
}

static void conn_close(struct probe_conn *c)
{
    if (c->p && c->p->cur[c->i] == c)
        c->p->cur[c->i] = NULL;
    c->p = NULL;
    if (!uv_is_closing(&c->u.h))
        uv_close(&c->u.h, on_closed);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    (void)hint;
    struct probe_conn *c = h->data;
    *b = uv_buf_init((char *)c->buf + c->got, (unsigned)(sizeof(c->buf) - c->got));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    (void)b;
    struct probe_conn *c = s->data;
    if (n < 0 || !c->p) {
        conn_close(c);
        return;
    }
    c->got += (size_t)n;
    if (c->p->kind[c->i] == 3) { /* TLS: the answer is a handshake record (ServerHello) */
        if (c->buf[0] == 0x16)
            c->p->answered[c->i] = 1;
        conn_close(c);
    } else if (c->got >= 9) { /* a frame header: length(3) type(1) flags(1) stream(4) */
        if (c->buf[3] == 0x04)
            c->p->answered[c->i] = 1;
        conn_close(c);
    }
}

static void on_write(uv_write_t *w, int status)
{
    struct probe_conn *c = w->data;
    if (status < 0 || !c->p)
        conn_close(c);
}

static void on_connect(uv_connect_t *r, int status)
{
    struct probe_conn *c = r->data;
    if (status < 0 || !c->p) {
        conn_close(c);
        return;
    }
    uv_buf_t b = c->p->kind[c->i] == 3 ? uv_buf_init((char *)c->p->hello, (unsigned)c->p->hello_len)
                                       : uv_buf_init((char *)preface, sizeof(preface) - 1);
    c->wreq.data = c;
    if (uv_write(&c->wreq, &c->u.s, &b, 1, on_write) < 0 ||
        uv_read_start(&c->u.s, on_alloc, on_read) < 0)
        conn_close(c);
}

/* The first flight of a TLS client, made once: any live TLS listener
 * answers it with a handshake record; a plaintext preface would only get
 * the connection closed. */
static int client_hello(struct grist_probe *p)
{
    if (p->hello_len)
        return 0;
    int r = -1;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl = ctx ? SSL_new(ctx) : NULL;
    BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
    if (ssl && rb && wb) {
        SSL_set_bio(ssl, rb, wb); /* ssl owns both now */
        rb = wb = NULL;
        SSL_set_connect_state(ssl);
        SSL_set_alpn_protos(ssl, (const unsigned char *)"\x02h2", 3);
        (void)SSL_do_handshake(ssl); /* wants to read: the ClientHello is written */
        int n = BIO_read(SSL_get_wbio(ssl), p->hello, (int)sizeof(p->hello));
        if (n > 0) {
            p->hello_len = (size_t)n;
            r = 0;
        }
    }
    BIO_free(rb);
    BIO_free(wb);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    ERR_clear_error();
    return r;
}

static void start_one(struct grist_probe *p, int i)
{
    struct probe_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return;
    c->p = p;
    c->i = i;
    c->creq.data = c;
    int r;
    if (p->kind[i] == 1 || p->kind[i] == 3) {
        uv_tcp_init(p->d->loop, &c->u.tcp);
        c->u.h.data = c;
        r = uv_tcp_connect(&c->creq, &c->u.tcp, (const struct sockaddr *)&p->addr[i], on_connect);
    } else {
        uv_pipe_init(p->d->loop, &c->u.pipe, 0);
        c->u.h.data = c;
        uv_pipe_connect(&c->creq, &c->u.pipe, p->path[i], on_connect);
        r = 0;
    }
    p->cur[i] = c;
    if (r < 0)
        conn_close(c);
}

static void on_tick(uv_timer_t *t)
{
    struct grist_probe *p = t->data;
    for (int i = 0; i < p->n; i++) {
        if (!p->kind[i])
            continue;
        if (p->cur[i]) /* no answer within the interval */
            conn_close(p->cur[i]);
        if (p->answered[i]) {
            if (p->fails[i])
                GRIST_INFO("listener %s answers again", p->d->net->bound[i]);
            p->fails[i] = 0;
        } else if (++p->fails[i] >= PROBE_FAILS && !p->gave_up) {
            p->gave_up = 1;
            GRIST_ERR("listener %s stopped accepting connections (%d probes without an HTTP/2 "
                      "answer; gRPC stops accepting after EMFILE, see the log above): health is "
                      "NOT_SERVING, shutting down with exit status 1 so that a supervisor "
                      "restarts gristd",
                      p->d->net->bound[i], PROBE_FAILS);
            p->d->net->listener_failed = 1;
            p->failed(p->d);
            return;
        }
        p->answered[i] = 0;
        start_one(p, i);
    }
}

int grist__probe_start(struct grist_daemon *d, double interval_s,
                       void (*failed)(struct grist_daemon *d), struct grist_probe **out)
{
    *out = NULL;
    if (interval_s <= 0)
        return 0;
    struct grist_probe *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->d = d;
    p->failed = failed;
    p->n = d->net->nbound;
    int any = 0;
    for (int i = 0; i < p->n; i++) {
        const char *a = d->net->bound[i];
        if (strncmp(a, "unix:", 5) == 0) {
            snprintf(p->path[i], sizeof(p->path[i]), "%s", a + 5);
            p->kind[i] = 2;
        } else {
            char host[256];
            const char *colon = strrchr(a, ':');
            if (!colon || (size_t)(colon - a) >= sizeof(host))
                continue;
            memcpy(host, a, (size_t)(colon - a));
            host[colon - a] = '\0';
            const int port = atoi(colon + 1);
            char *h = host;
            if (h[0] == '[') { /* [v6]:port */
                h++;
                h[strlen(h) - 1] = '\0';
            }
            if (strcmp(h, "0.0.0.0") == 0)
                h = "127.0.0.1";
            else if (strcmp(h, "::") == 0)
                h = "::1";
            if (uv_ip4_addr(h, port, (struct sockaddr_in *)&p->addr[i]) == 0 ||
                uv_ip6_addr(h, port, (struct sockaddr_in6 *)&p->addr[i]) == 0)
                p->kind[i] = d->tls ? (client_hello(p) == 0 ? 3 : 0) : 1;
            else
                GRIST_DEBUG("listener %s: a host name, not probed", a);
        }
        any |= p->kind[i] != 0;
    }
    if (!any) {
        free(p);
        return 0;
    }
    uv_timer_init(d->loop, &p->timer);
    p->timer.data = p;
    const uint64_t ms = (uint64_t)(interval_s * 1000.0);
    uv_timer_start(&p->timer, on_tick, ms, ms);
    for (int i = 0; i < p->n; i++)
        if (p->kind[i]) {
            p->answered[i] = 0;
            start_one(p, i);
        }
    *out = p;
    return 0;
}

static void on_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

void grist__probe_stop(struct grist_probe *p)
{
    if (!p || p->stopped)
        return;
    p->stopped = 1;
    for (int i = 0; i < p->n; i++)
        if (p->cur[i])
            conn_close(p->cur[i]);
    uv_close((uv_handle_t *)&p->timer, on_timer_closed);
}
