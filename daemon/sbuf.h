/*
 * A growing byte buffer for responses (HTTP headers, the Prometheus text).
 * On allocation failure `oom` is set and later writes are dropped; the
 * responder then answers 500. Header-only: every function is inline.
 */
#ifndef GRIST_SBUF_H
#define GRIST_SBUF_H

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
};

static inline void sb_grow(struct sbuf *b, size_t need)
{
    if (b->oom || b->len + need + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + need + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = 1;
        return;
    }
    b->p = p;
    b->cap = cap;
}

static inline void sb_put(struct sbuf *b, const char *s, size_t n)
{
    sb_grow(b, n);
    if (b->oom)
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

__attribute__((format(printf, 2, 3))) static inline void sb_printf(struct sbuf *b, const char *fmt,
                                                                   ...)
{
    va_list ap;
    va_start(ap, fmt);
    char tmp[512];
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof(tmp)) {
        sb_put(b, tmp, (size_t)n);
        return;
    }
    sb_grow(b, (size_t)n);
    if (b->oom)
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* a Prometheus label value: backslash, quote and newline escaped */
static inline void sb_plabel(struct sbuf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            sb_printf(b, "\\%c", *s);
        else if (*s == '\n')
            sb_put(b, "\\n", 2);
        else
            sb_put(b, s, 1);
    }
}

static inline void sb_pnum(struct sbuf *b, double v)
{
    if (isnan(v))
        sb_put(b, "NaN", 3);
    else if (isinf(v))
        sb_put(b, v > 0 ? "+Inf" : "-Inf", 4);
    else
        sb_printf(b, "%.17g", v);
}

#endif
