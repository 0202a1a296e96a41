/*
 * One layout function for both directions of a snapshot (snapshot.c,
 * engine.c). A visit function calls sio_u32/sio_f64/... on each field in
 * order: writing, the field is read and appended (a first pass with p ==
 * NULL only counts the bytes); reading, the field is filled from the input
 * and `bad` is set on the first short read, after which every call is a
 * no-op. So the writer and the reader of a format cannot drift apart.
 * Integers and doubles are written in the machine's byte order; the frame
 * (sio_seal/sio_open) carries a byte-order mark that refuses the other one.
 */
#ifndef GRIST_DAEMON_SNAPIO_H
#define GRIST_DAEMON_SNAPIO_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct grist_sio {
    unsigned char *p; /* writing: the output (NULL: count only); reading: the input */
    size_t off, len; /* reading: len is the input's length */
    int reading, bad;
    uint32_t version; /* reading: the file's format version */
};

static inline void sio_bytes(struct grist_sio *s, void *v, size_t n)
{
    if (s->bad)
        return;
    if (s->reading) {
        if (s->len - s->off < n) {
            s->bad = 1;
            return;
        }
        memcpy(v, s->p + s->off, n);
    } else if (s->p) {
        memcpy(s->p + s->off, v, n);
    }
    s->off += n;
}

static inline void sio_u32(struct grist_sio *s, uint32_t *v)
{
    sio_bytes(s, v, sizeof(*v));
}
static inline void sio_u64(struct grist_sio *s, uint64_t *v)
{
    sio_bytes(s, v, sizeof(*v));
}
static inline void sio_i32(struct grist_sio *s, int32_t *v)
{
    sio_bytes(s, v, sizeof(*v));
}
static inline void sio_f64(struct grist_sio *s, double *v)
{
    sio_bytes(s, v, sizeof(*v));
}

/* An int or an enum through a 32-bit field. */
#define sio_int(s, v)                                                                              \
    do {                                                                                           \
        int32_t sio_tmp_ = (int32_t)(v);                                                           \
        sio_i32((s), &sio_tmp_);                                                                   \
        if ((s)->reading)                                                                          \
            (v) = sio_tmp_;                                                                        \
    } while (0)

/* A NUL-terminated string of at most cap - 1 bytes, written as u32 length
 * and bytes; a longer one read back sets bad. */
static inline void sio_str(struct grist_sio *s, char *str, size_t cap)
{
    uint32_t n = s->reading ? 0 : (uint32_t)strnlen(str, cap - 1);
    sio_u32(s, &n);
    if (s->reading && !s->bad && n >= cap) {
        s->bad = 1;
        return;
    }
    sio_bytes(s, str, n);
    if (s->reading && !s->bad)
        str[n] = '\0';
}

/* A blob: u64 length and bytes. Reading, *ptr points into the input (not a
 * copy) and *n is its length. */
static inline void sio_blob(struct grist_sio *s, const void **ptr, size_t *n)
{
    uint64_t len = s->reading ? 0 : (uint64_t)*n;
    sio_u64(s, &len);
    if (s->bad)
        return;
    if (s->reading) {
        if (s->len - s->off < len) {
            s->bad = 1;
            return;
        }
        *ptr = s->p + s->off;
        *n = (size_t)len;
    } else if (s->p) {
        memcpy(s->p + s->off, *ptr, (size_t)len);
    }
    s->off += (size_t)len;
}

/* The frame of a snapshot file: magic (8 bytes) | u32 version | u32 byte-order
 * mark | u64 payload length | u64 FNV-1a of the payload | payload. */
#define GRIST_SIO_HEADER 32u

/* A job file of --state-dir (daemon/snapshot.c, docs/PERSISTENCE.md). */
#define GRIST_JOB_MAGIC "GRISTJB1"
#define GRIST_JOB_VERSION 2u /* 2: GroupSpec.sketch_sample */
#define GRIST_JOB_VERSION_OLDEST 1u /* still read; the fields it lacks take their defaults */

uint64_t grist__sio_fnv1a(const unsigned char *p, size_t n);
/* Write the header in front of a payload of plen bytes at buf + GRIST_SIO_HEADER. */
void grist__sio_seal(unsigned char *buf, const char magic[8], uint32_t version, size_t plen);
/* Check the frame. @return 0 with *payload / *plen set; -1 with why filled
 * (truncated, another file, another version or byte order, checksum). */
int grist__sio_open(const unsigned char *buf, size_t len, const char magic[8], uint32_t oldest,
                    uint32_t version, uint32_t *got, const unsigned char **payload, size_t *plen,
                    char *why, size_t whysz);

#endif
