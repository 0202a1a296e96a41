/*
 * DESIGN: durable job state (--state-dir, --snapshot-interval). Loop thread,
 * except op_work, which runs on libuv's thread pool.
 *
 * One file per job, DIR/job-<16 hex digits of FNV-1a(job id)>.state, holding
 * everything the job is: its shape and policy, the values in force and
 * their version, its counters and history rings, its last evaluation, and
 * the compute thread's part (statistics, selectors, families; engine.c).
 *
 * Taking a snapshot never stops the hot path:
 *   1. every interval, each job whose state changed gets an IT_SNAPSHOT item
 *      on its compute thread, queued behind the steps already queued;
 *   2. the compute thread serializes its part and posts it back as a result,
 *      in order with the job's evaluations, so when it reaches the loop
 *      every evaluation it reflects has been applied to the loop's part;
 *   3. the loop adds its part and hands the file to one writer, which
 *      writes DIR/NAME.tmp, fsyncs it, renames it over NAME and fsyncs the
 *      directory: a file is the old one or the new one, never half of each.
 * Writes and unlinks go through one queue, one at a time, so an expired
 * job's unlink cannot overtake its last write.
 *
 * What a crash loses: a SIGKILL (or power loss) loses what happened since
 * the newest file of each job, at most one interval plus the time of one
 * write; steps still open (not aggregated) are never in a file. SIGTERM
 * aggregates the open steps, snapshots every job that changed and exits
 * once the files are on disk. A failed write (full disk, unwritable
 * directory) is logged and counted and the job is tried again at the next
 * interval; the daemon goes on serving.
 *
 * Loading, at start before the listeners: a file that is truncated, corrupt
 * (checksum), of another format version or byte order, or inconsistent is
 * refused with a log line naming the reason, counted, and renamed to
 * NAME.refused (kept for a person to look at, not read again); its job
 * starts fresh when a worker attaches. The frame is snapio.h's; the layout
 * is visit_job() below, one function for both directions.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "grist/sketch.h"
#include "jobs.h"
#include "log.h"
#include "snapio.h"
#include "snapshot.h"

#define SUFFIX ".state"

struct op {
    struct op *next;
    char path[PATH_MAX];
    uint8_t *buf; /* NULL: unlink path */
    size_t len;
    uint64_t key, sig; /* the job and the state the file holds */
    unsigned delay_ms; /* GRISTD_FAULT=snapshot-slow (tests): a slow disk */
    int err; /* errno of the failure, 0 */
    char what[32]; /* the step that failed */
};

struct grist_snapshots {
    struct grist_daemon *d;
    char dir[PATH_MAX - 64]; /* room for the file names in a PATH_MAX path */
    uv_timer_t timer;
    uv_work_t work;
    struct op *head, *tail, *running;
    uint32_t outstanding; /* snapshot requests whose answer has not come back */
    void (*final_done)(struct grist_daemon *d);
    unsigned delay_ms; /* of every write: GRISTD_FAULT=snapshot-slow (tests), else 0 */
    int failing; /* the last write failed (log the first failure, then the recovery) */
    int closed, timer_closed; /* grist__snapshot_stop() ran; its timer's close came back */
};

/* freed once stopped, with its timer closed and no write running */
static void maybe_free(struct grist_snapshots *sn)
{
    if (!sn->closed || !sn->timer_closed || sn->running)
        return;
    while (sn->head) {
        struct op *o = sn->head;
        sn->head = o->next;
        free(o->buf);
        free(o);
    }
    free(sn);
}

/* ---- the frame ------------------------------------------------------------ */

uint64_t grist__sio_fnv1a(const unsigned char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

#define BOM 0x01020304u

void grist__sio_seal(unsigned char *buf, const char magic[8], uint32_t version, size_t plen)
{
    const uint32_t bom = BOM;
    const uint64_t len = plen, sum = grist__sio_fnv1a(buf + GRIST_SIO_HEADER, plen);
    memcpy(buf, magic, 8);
    memcpy(buf + 8, &version, 4);
    memcpy(buf + 12, &bom, 4);
    memcpy(buf + 16, &len, 8);
    memcpy(buf + 24, &sum, 8);
}

int grist__sio_open(const unsigned char *buf, size_t len, const char magic[8], uint32_t oldest,
                    uint32_t version, uint32_t *got, const unsigned char **payload, size_t *plen,
                    char *why, size_t whysz)
{
    uint32_t ver, bom;
    uint64_t n, sum;
    if (len < GRIST_SIO_HEADER) {
        snprintf(why, whysz, "truncated (%zu bytes, shorter than the header)", len);
        return GRIST_EBADSTATE;
    }
    if (memcmp(buf, magic, 8) != 0) {
        snprintf(why, whysz, "not a %.8s file", magic);
        return GRIST_EBADSTATE;
    }
    memcpy(&ver, buf + 8, 4);
    memcpy(&bom, buf + 12, 4);
    memcpy(&n, buf + 16, 8);
    memcpy(&sum, buf + 24, 8);
    if (bom != BOM) {
        snprintf(why, whysz, "written on a machine of the other byte order");
        return GRIST_EBADSTATE;
    }
    if (ver < oldest || ver > version) {
        snprintf(why, whysz, "format version %u (this build reads %u to %u)", ver, oldest, version);
        return GRIST_EBADSTATE;
    }
    *got = ver;
    if (n != len - GRIST_SIO_HEADER) {
        snprintf(why, whysz, "truncated or extended (payload %llu bytes, the header says %llu)",
                 (unsigned long long)(len - GRIST_SIO_HEADER), (unsigned long long)n);
        return GRIST_EBADSTATE;
    }
    if (grist__sio_fnv1a(buf + GRIST_SIO_HEADER, n) != sum) {
        snprintf(why, whysz, "checksum mismatch (corrupt)");
        return GRIST_EBADSTATE;
    }
    *payload = buf + GRIST_SIO_HEADER;
    *plen = n;
    return 0;
}

/* ---- the layout ----------------------------------------------------------- */

/* An enum is read back only if its name parses to it again. */
#define ENUM_CHECK(fn, type, name_fn, parse_fn)                                                    \
    static int fn(type v)                                                                          \
    {                                                                                              \
        type x;                                                                                    \
        return parse_fn(name_fn(v), &x) == 0 && x == v;                                            \
    }
ENUM_CHECK(rule_ok, enum grist_rule, grist_rule_name, grist_rule_parse)
ENUM_CHECK(mode_ok, enum grist_mode, grist_mode_name, grist_mode_parse)
ENUM_CHECK(noise_ok, enum grist_noise, grist_noise_name, grist_noise_parse)
ENUM_CHECK(coupling_ok, enum grist_coupling, grist_coupling_name, grist_coupling_parse)
ENUM_CHECK(select_on_ok, enum grist_select_on, grist_select_on_name, grist_select_on_parse)

static void visit_policy(struct grist_sio *s, struct grist_job_policy *p)
{
    struct grist_policy *q = &p->sel;
    sio_int(s, q->rule);
    sio_int(s, q->mode);
    sio_int(s, q->noise);
    sio_int(s, q->coupling);
    sio_int(s, q->select_on);
    sio_f64(s, &q->beta_min);
    sio_f64(s, &q->beta_max);
    sio_f64(s, &q->lr_scale_min);
    sio_f64(s, &q->lr_scale_max);
    sio_u32(s, &q->min_steps);
    sio_f64(s, &q->z);
    sio_u32(s, &q->h);
    sio_f64(s, &q->j_ema);
    sio_f64(s, &q->radius);
    sio_f64(s, &q->z_fast);
    sio_f64(s, &q->horizon_step);
    sio_u32(s, &p->solve_every);
    sio_u32(s, &p->families_every);
    sio_f64(s, &p->gamma);
    sio_u32(s, &p->ncand);
    if (s->reading && (p->ncand == 0 || p->ncand > GRIST_MAX_CANDIDATES))
        s->bad = 1;
    for (uint32_t k = 0; k < p->ncand && !s->bad; k++)
        sio_f64(s, &p->cand[k]);
    if (!s->reading || s->bad)
        return;
    if (!rule_ok(q->rule) || !mode_ok(q->mode) || !noise_ok(q->noise) ||
        !coupling_ok(q->coupling) || !select_on_ok(q->select_on) ||
        !(q->beta_min >= 0 && q->beta_min <= q->beta_max && q->beta_max < 1) || q->h == 0 ||
        !(p->gamma > 0 && p->gamma < 1))
        s->bad = 1;
    for (uint32_t k = 0; k < p->ncand; k++)
        if (!(p->cand[k] >= 0 && p->cand[k] < 1))
            s->bad = 1;
}

static void visit_choice(struct grist_sio *s, struct grist_choice *c)
{
    sio_f64(s, &c->beta);
    sio_f64(s, &c->lr_scale);
    sio_f64(s, &c->lr);
    sio_f64(s, &c->confidence);
    sio_f64(s, &c->noise);
    sio_f64(s, &c->noise_scale);
    sio_u32(s, &c->index);
    sio_f64(s, &c->kappa);
    sio_f64(s, &c->lr_greedy);
    sio_int(s, c->changed);
    c->reason = NULL; /* the text is the group result's reason[] */
}

/* The job's last evaluation (GetJob, the JSON API and /metrics show it). */
static void visit_last(struct grist_sio *s, struct grist_job *j)
{
    int32_t have = j->last != NULL;
    sio_i32(s, &have);
    if (!have || s->bad)
        return;
    if (s->reading) {
        j->last =
            calloc(1, sizeof(*j->last) + j->ngroups * sizeof(struct grist_engine_group_result));
        if (!j->last) {
            s->bad = 1;
            return;
        }
        j->last->ngroups = j->ngroups;
    }
    struct grist_engine_result *r = j->last;
    sio_u64(s, &r->step);
    sio_u64(s, &r->steps);
    sio_int(s, r->error);
    for (uint32_t g = 0; g < j->ngroups && !s->bad; g++) {
        struct grist_engine_group_result *o = &r->groups[g];
        visit_choice(s, &o->choice);
        sio_int(s, o->have_families);
        double *f = (double *)&o->fam; /* doubles only */
        for (size_t i = 0; i < sizeof(o->fam) / sizeof(double); i++)
            sio_f64(s, &f[i]);
        sio_u32(s, &o->ncand);
        if (o->ncand > GRIST_MAX_CANDIDATES)
            s->bad = 1;
        for (uint32_t k = 0; k < o->ncand && !s->bad; k++) {
            sio_f64(s, &o->cand[k]);
            sio_f64(s, &o->J[k]);
            sio_f64(s, &o->J_se[k]);
        }
        sio_u64(s, &o->steps);
        sio_str(s, o->reason, sizeof(o->reason));
    }
}

static void visit_history(struct grist_sio *s, struct grist_history *h, uint32_t cap)
{
    uint32_t n = h->len;
    sio_u32(s, &n);
    if (s->bad)
        return;
    if (s->reading) {
        h->pts = malloc((size_t)cap * sizeof(*h->pts));
        if (!h->pts) {
            s->bad = 1;
            return;
        }
        h->cap = cap;
        h->len = h->skip = 0;
        h->stride = 1;
    }
    for (uint32_t i = 0; i < n && !s->bad; i++) {
        struct grist_history_point p = {0};
        if (!s->reading)
            p = h->pts[i];
        /* doubles on disk (the format before float32 points, unchanged) */
        double v[5] = {p.momentum, p.lr_scale, p.noise, p.noise_scale, p.confidence};
        sio_u64(s, &p.step);
        for (int k = 0; k < 5; k++)
            sio_f64(s, &v[k]);
        if (s->reading) { /* thinned again, as they came, when the cap shrank */
            p = (struct grist_history_point){p.step,           grist__f32(v[0]), grist__f32(v[1]),
                                             grist__f32(v[2]), grist__f32(v[3]), grist__f32(v[4])};
            grist__history_add(h, &p);
        }
    }
}

/*
 * The job file's payload. Writing reads j; reading fills a calloc'ed j
 * (allocating its arrays) and points *eng into the input. now: the loop's
 * clock (the job's age is stored, not the clock). lim: the daemon's limits,
 * which a job read back must fit.
 */
static void visit_job(struct grist_sio *s, struct grist_job *j, uint64_t now,
                      const struct grist_daemon *d, const void **eng, size_t *eng_len)
{
    sio_str(s, j->id, sizeof(j->id));
    sio_u32(s, &j->seed);
    sio_u32(s, &j->world);
    sio_u32(s, &j->ngroups);
    sio_u32(s, &j->m);
    sio_u32(s, &j->sketch_kind);
    if (s->bad)
        return;
    if (s->reading) {
        if (!j->id[0] || j->world == 0 || j->world > d->limits.max_workers || j->ngroups == 0 ||
            j->ngroups > d->limits.max_groups || j->m == 0 || j->m > d->limits.max_sketch_dim ||
            j->sketch_kind > GRIST_SKETCH_BLOCK) {
            s->bad = 1;
            return;
        }
        j->groups = calloc(j->ngroups, sizeof(*j->groups));
        j->push = calloc(j->ngroups, sizeof(*j->push));
        j->push_reason = calloc(j->ngroups, sizeof(*j->push_reason));
        j->history = calloc(j->ngroups, sizeof(*j->history));
        if (!j->groups || !j->push || !j->push_reason || !j->history) {
            s->bad = 1;
            return;
        }
    }
    for (uint32_t g = 0; g < j->ngroups && !s->bad; g++) {
        struct grist_group_spec *gs = &j->groups[g];
        sio_str(s, gs->name, sizeof(gs->name));
        sio_u64(s, &gs->n);
        sio_int(s, gs->form);
        sio_f64(s, &gs->lr);
        sio_f64(s, &gs->beta0);
        if (!s->reading || s->version >= 2)
            sio_u32(s, &gs->sample);
        else
            gs->sample = 1;
        if (s->reading &&
            ((unsigned)gs->form > GRIST_FORM_EMA_NESTEROV || gs->n == 0 ||
             grist_sketch_check_sample(gs->sample) < 0))
            s->bad = 1;
    }
    visit_policy(s, &j->policy);
    sio_u64(s, &j->version);
    sio_u64(s, &j->push_step);
    for (uint32_t g = 0; g < j->ngroups && !s->bad; g++) {
        struct grist_push_group *p = &j->push[g];
        sio_f64(s, &p->momentum);
        sio_f64(s, &p->lr_scale);
        sio_f64(s, &p->lr);
        sio_f64(s, &p->confidence);
        sio_str(s, j->push_reason[g], sizeof(j->push_reason[g]));
        if (s->reading &&
            !(isfinite(p->momentum) && p->momentum >= 0 && p->momentum < 1 &&
              isfinite(p->lr_scale) && isfinite(p->lr)))
            s->bad = 1;
    }
    uint64_t *counters[] = {&j->high_step, &j->steps,    &j->dropped,  &j->partial,   &j->late,
                            &j->duplicate, &j->rejected, &j->segments, &j->validation};
    for (size_t i = 0; i < sizeof(counters) / sizeof(counters[0]); i++)
        sio_u64(s, counters[i]);
    sio_int(s, j->seg_open);
    uint64_t age = s->reading ? 0 : now - j->created_ms;
    sio_u64(s, &age);
    if (s->reading) {
        j->created_ms = age < now ? now - age : 0;
        j->idle_since_ms = now; /* no stream yet: idle-expiry counts from the restart */
    }
    for (uint32_t g = 0; g < j->ngroups && !s->bad; g++)
        visit_history(s, &j->history[g], (uint32_t)d->cfg->history);
    visit_last(s, j);
    sio_blob(s, eng, eng_len);
}

/* What a snapshot would hold changed since the last one handed to the writer. */
static uint64_t job_sig(const struct grist_job *j)
{
    const uint64_t v[] = {j->steps,     j->dropped,  j->partial,   j->late,
                          j->duplicate, j->rejected, j->segments,  j->validation,
                          j->version,   j->world,    j->high_step, j->last ? j->last->steps : 0};
    return grist__sio_fnv1a((const unsigned char *)v, sizeof(v)) | 1; /* 0: never written */
}

static void job_path(const struct grist_snapshots *sn, const char *id, char *out, size_t n)
{
    snprintf(out, n, "%s/job-%016llx" SUFFIX, sn->dir,
             (unsigned long long)grist__sio_fnv1a((const unsigned char *)id, strlen(id)));
}

/* ---- the writer ----------------------------------------------------------- */

static void op_free(struct op *o)
{
    if (o) {
        free(o->buf);
        free(o);
    }
}

/* thread pool: write (tmp, fsync, rename, fsync the directory) or unlink */
static void op_work(uv_work_t *w)
{
    struct op *o = w->data;
    o->err = 0;
    if (!o->buf) {
        if (unlink(o->path) != 0 && errno != ENOENT) {
            o->err = errno;
            snprintf(o->what, sizeof(o->what), "unlink");
        }
        return;
    }
    if (o->delay_ms)
        usleep(o->delay_ms * 1000u);
    char tmp[PATH_MAX + 8];
    snprintf(tmp, sizeof(tmp), "%s.tmp", o->path);
    const char *what = "open";
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0) {
        what = "write";
        size_t off = 0;
        while (off < o->len) {
            ssize_t k = write(fd, o->buf + off, o->len - off);
            if (k < 0 && errno == EINTR)
                continue;
            if (k <= 0) {
                if (k == 0)
                    errno = EIO;
                goto fail;
            }
            off += (size_t)k;
        }
        what = "fsync";
        if (fsync(fd) != 0)
            goto fail;
        what = "close";
        const int c = close(fd);
        fd = -1;
        if (c != 0)
            goto fail;
        what = "rename";
        if (rename(tmp, o->path) != 0)
            goto fail;
        char dir[PATH_MAX];
        snprintf(dir, sizeof(dir), "%s", o->path);
        char *slash = strrchr(dir, '/');
        if (slash)
            *slash = '\0';
        int dfd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) { /* the rename itself durable */
            (void)fsync(dfd);
            close(dfd);
        }
        return;
    }
fail:
    o->err = errno ? errno : EIO;
    snprintf(o->what, sizeof(o->what), "%s", what);
    if (fd >= 0)
        close(fd);
    unlink(tmp);
}

static void op_next(struct grist_snapshots *sn);

static void check_final(struct grist_snapshots *sn)
{
    if (sn->final_done && sn->outstanding == 0 && !sn->running && !sn->head) {
        void (*done)(struct grist_daemon *) = sn->final_done;
        sn->final_done = NULL;
        done(sn->d);
    }
}

static void op_done(uv_work_t *w, int status)
{
    struct grist_snapshots *sn =
        (struct grist_snapshots *)((char *)w - offsetof(struct grist_snapshots, work));
    struct op *o = sn->running;
    struct grist_daemon *d = sn->d;
    sn->running = NULL;
    if (sn->closed) {
        op_free(o);
        maybe_free(sn);
        return;
    }
    if (status != 0 && !o->err) {
        o->err = -status;
        snprintf(o->what, sizeof(o->what), "queue");
    }
    if (o->err) {
        d->cnt.snapshot_errors++;
        if (!sn->failing)
            GRIST_ERR("state: %s %s: %s (counted in gristd_snapshot_errors_total; retried every "
                      "interval; the daemon goes on serving)",
                      o->what, o->path, strerror(o->err));
        else
            GRIST_DEBUG("state: %s %s: %s", o->what, o->path, strerror(o->err));
        sn->failing = 1;
        if (o->buf) /* the job's state is not on disk: the next interval tries again */
            for (struct grist_job *j = d->jobs; j; j = j->next)
                if (j->key == o->key && j->snap_sig == o->sig)
                    j->snap_sig = 0;
    } else if (o->buf) {
        d->cnt.snapshots_written++;
        if (sn->failing)
            GRIST_INFO("state: writing again (%s)", o->path);
        sn->failing = 0;
    }
    op_free(o);
    op_next(sn);
    check_final(sn);
}

static void op_next(struct grist_snapshots *sn)
{
    if (sn->running || !sn->head)
        return;
    struct op *o = sn->head;
    sn->head = o->next;
    if (!sn->head)
        sn->tail = NULL;
    sn->running = o;
    sn->work.data = o;
    const int r = uv_queue_work(sn->d->loop, &sn->work, op_work, op_done);
    if (r != 0) { /* cannot happen with a live loop; count it as a failed write */
        sn->running = NULL;
        sn->d->cnt.snapshot_errors++;
        GRIST_ERR("state: cannot queue the write of %s: %s", o->path, uv_strerror(r));
        op_free(o);
    }
}

static void op_queue(struct grist_snapshots *sn, struct op *o)
{
    /* A newer state of a job whose write is still waiting takes that write's
     * place (latest wins): a disk slower than the interval leaves one
     * waiting write per job, never a backlog of stale ones (which grew
     * without bound and made a SIGKILL lose seconds instead of one
     * interval; test_snapshot_slow_disk). The running write is not in the
     * list; an unlink keeps its place. */
    if (o->buf)
        for (struct op *q = sn->head; q; q = q->next)
            if (q->key == o->key && q->buf) {
                free(q->buf);
                q->buf = o->buf;
                q->len = o->len;
                q->sig = o->sig;
                o->buf = NULL;
                op_free(o);
                sn->d->cnt.snapshots_superseded++;
                return;
            }
    o->next = NULL;
    if (sn->tail)
        sn->tail->next = o;
    else
        sn->head = o;
    sn->tail = o;
    op_next(sn);
}

/* ---- taking snapshots ----------------------------------------------------- */

static void request(struct grist_snapshots *sn, struct grist_job *j)
{
    if (j->snap_pending || job_sig(j) == j->snap_sig)
        return;
    if (grist__engine_snapshot(grist__engine_of(sn->d, j->key), j->key) < 0) {
        sn->d->cnt.snapshot_errors++;
        return;
    }
    j->snap_pending = 1;
    sn->outstanding++;
}

static void on_timer(uv_timer_t *t)
{
    struct grist_snapshots *sn = t->data;
    for (struct grist_job *j = sn->d->jobs; j; j = j->next)
        request(sn, j);
}

void grist__snapshot_result(struct grist_daemon *d, struct grist_engine_result *r)
{
    struct grist_snapshots *sn = d->snap;
    if (!sn) {
        grist__engine_result_free(r);
        return;
    }
    if (sn->outstanding)
        sn->outstanding--;
    struct grist_job *j = NULL;
    for (struct grist_job *x = d->jobs; x; x = x->next)
        if (x->key == r->key)
            j = x;
    if (j)
        j->snap_pending = 0;
    if (j && !r->snap) {
        d->cnt.snapshot_errors++;
        GRIST_ERR("state: job '%s': the compute thread could not serialize it (out of memory)",
                  j->id);
    } else if (j) {
        const void *eng = r->snap;
        size_t eng_len = r->snap_len;
        const uint64_t now = grist__now_ms(d);
        struct grist_sio w = {0};
        visit_job(&w, j, now, d, &eng, &eng_len);
        struct op *o = calloc(1, sizeof(*o));
        uint8_t *buf = o ? malloc(GRIST_SIO_HEADER + w.off) : NULL;
        if (!buf) {
            free(o);
            d->cnt.snapshot_errors++;
        } else {
            w = (struct grist_sio){.p = buf + GRIST_SIO_HEADER};
            visit_job(&w, j, now, d, &eng, &eng_len);
            grist__sio_seal(buf, GRIST_JOB_MAGIC, GRIST_JOB_VERSION, w.off);
            o->buf = buf;
            o->len = GRIST_SIO_HEADER + w.off;
            o->key = j->key;
            o->delay_ms = sn->delay_ms;
            o->sig = j->snap_sig = job_sig(j);
            job_path(sn, j->id, o->path, sizeof(o->path));
            op_queue(sn, o);
        }
    }
    grist__engine_result_free(r);
    check_final(sn);
}

void grist__snapshot_forget(struct grist_daemon *d, const struct grist_job *j)
{
    struct grist_snapshots *sn = d->snap;
    if (!sn)
        return;
    struct op *o = calloc(1, sizeof(*o));
    if (!o)
        return; /* the file stays; it is restored and expires again */
    job_path(sn, j->id, o->path, sizeof(o->path));
    op_queue(sn, o);
}

void grist__snapshot_final(struct grist_daemon *d, void (*done)(struct grist_daemon *d))
{
    struct grist_snapshots *sn = d->snap;
    if (!sn) {
        done(d);
        return;
    }
    uv_timer_stop(&sn->timer);
    uint32_t n = 0;
    for (struct grist_job *j = d->jobs; j; j = j->next) {
        grist__job_complete_open(d, j);
        const uint32_t before = sn->outstanding;
        request(sn, j);
        n += sn->outstanding - before;
    }
    GRIST_INFO("state: final snapshot of %u job%s to %s", n, n == 1 ? "" : "s", sn->dir);
    sn->final_done = done;
    check_final(sn);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct grist_snapshots *sn = h->data;
    sn->timer_closed = 1;
    maybe_free(sn);
}

void grist__snapshot_stop(struct grist_daemon *d)
{
    struct grist_snapshots *sn = d->snap;
    if (!sn)
        return;
    d->snap = NULL;
    sn->closed = 1;
    uv_close((uv_handle_t *)&sn->timer, on_timer_closed);
}

/* ---- loading -------------------------------------------------------------- */

static int read_file(const char *path, uint8_t **buf, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat stb;
    if (fstat(fd, &stb) != 0 || !S_ISREG(stb.st_mode)) {
        close(fd);
        return -EINVAL;
    }
    const size_t n = (size_t)stb.st_size;
    uint8_t *p = malloc(n ? n : 1);
    if (!p) {
        close(fd);
        return -ENOMEM;
    }
    size_t off = 0;
    while (off < n) {
        ssize_t k = read(fd, p + off, n - off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        off += (size_t)k;
    }
    close(fd);
    *buf = p;
    *len = off;
    return 0;
}

/* Decode one job file. @return the job (calloc'ed, arrays allocated) with
 * *eng pointing into buf; NULL with why filled. */
static struct grist_job *decode(const struct grist_daemon *d, uint64_t now, const uint8_t *buf,
                                size_t len, const void **eng, size_t *eng_len, char *why,
                                size_t whysz)
{
    const unsigned char *pl;
    size_t plen;
    uint32_t ver;
    if (grist__sio_open(buf, len, GRIST_JOB_MAGIC, GRIST_JOB_VERSION_OLDEST, GRIST_JOB_VERSION,
                        &ver, &pl, &plen, why, whysz) < 0)
        return NULL;
    struct grist_job *j = calloc(1, sizeof(*j));
    if (!j) {
        snprintf(why, whysz, "out of memory");
        return NULL;
    }
    struct grist_sio r = {.p = (unsigned char *)pl, .len = plen, .reading = 1, .version = ver};
    visit_job(&r, j, now, d, eng, eng_len);
    if (r.bad || r.off != plen) {
        snprintf(why, whysz,
                 "inconsistent contents at byte %zu of %zu (a field out of range, "
                 "or a limit of this daemon lowered since)",
                 r.off, plen);
        grist__job_free(j);
        return NULL;
    }
    return j;
}

static void refuse(struct grist_daemon *d, const char *path, const char *why)
{
    d->cnt.snapshots_refused++;
    char to[PATH_MAX + 512];
    snprintf(to, sizeof(to), "%s.refused", path);
    const int moved = rename(path, to) == 0;
    GRIST_ERR("state: %s refused: %s; its job starts fresh%s%s", path, why,
              moved ? "; kept as " : "", moved ? to : "");
}

static void load_all(struct grist_daemon *d, struct grist_snapshots *sn)
{
    DIR *dir = opendir(sn->dir);
    if (!dir) {
        GRIST_ERR("state: cannot read %s: %s; no job is restored", sn->dir, strerror(errno));
        return;
    }
    uint32_t restored = 0;
    struct dirent *de;
    while ((de = readdir(dir)) != NULL) {
        const size_t n = strlen(de->d_name), sl = strlen(SUFFIX);
        if (n <= sl || strncmp(de->d_name, "job-", 4) != 0 ||
            strcmp(de->d_name + n - sl, SUFFIX) != 0)
            continue;
        char path[sizeof(sn->dir) + sizeof(de->d_name) + 2];
        snprintf(path, sizeof(path), "%s/%s", sn->dir, de->d_name);
        uint8_t *buf = NULL;
        size_t len = 0;
        int r = read_file(path, &buf, &len);
        if (r < 0) {
            char why[64];
            snprintf(why, sizeof(why), "cannot read it (%s)", strerror(-r));
            refuse(d, path, why);
            continue;
        }
        char why[256];
        const void *eng = NULL;
        size_t eng_len = 0;
        struct grist_job *j =
            decode(d, grist__now_ms(d), buf, len, &eng, &eng_len, why, sizeof(why));
        if (!j) {
            refuse(d, path, why);
            free(buf);
            continue;
        }
        char expect[sizeof(path)];
        job_path(sn, j->id, expect, sizeof(expect));
        if (strcmp(expect, path) != 0) {
            snprintf(why, sizeof(why), "it names job '%.128s', whose file is another", j->id);
            grist__job_free(j);
            refuse(d, path, why);
            free(buf);
            continue;
        }
        const uint64_t sig_version = j->version, step = j->high_step;
        char id[GRIST_JOB_ID_MAX + 1];
        snprintf(id, sizeof(id), "%s", j->id);
        char err[256];
        if (grist__job_restore(d, j, eng, eng_len, err, sizeof(err)) < 0) {
            /* not the file's fault (a limit, the memory budget): it stays */
            GRIST_ERR("state: %s not restored: %s", path, err);
        } else {
            struct grist_job *x = grist__job_find(d, id);
            if (x)
                x->snap_sig = job_sig(x); /* on disk as it is */
            restored++;
            d->cnt.jobs_restored++;
            GRIST_DEBUG("state: job '%s' at step %llu, version %llu", id, (unsigned long long)step,
                        (unsigned long long)sig_version);
        }
        free(buf);
    }
    closedir(dir);
    GRIST_INFO("state: %u job%s restored from %s", restored, restored == 1 ? "" : "s", sn->dir);
}

int grist__snapshot_check(const struct grist_daemon *d, struct grist_backend *be,
                          const uint8_t *buf, size_t len, char *why, size_t whysz)
{
    const void *eng = NULL;
    size_t eng_len = 0;
    struct grist_job *j = decode(d, 0, buf, len, &eng, &eng_len, why, whysz);
    if (!j)
        return GRIST_EBADSTATE;
    const struct grist_engine_job_spec spec = {
        .ngroups = j->ngroups,
        .m = j->m,
        .cov_dim = (uint32_t)d->cfg->cov_dim,
        .policy = j->policy,
        .groups = j->groups,
    };
    const int r = grist__engine_state_check(be, &spec, eng, eng_len);
    if (r < 0)
        snprintf(why, whysz, "the compute state: %s", grist_strerror(r));
    grist__job_free(j);
    return r < 0 ? -1 : 0;
}

int grist__snapshot_start(struct grist_daemon *d)
{
    const struct grist_config *c = d->cfg;
    if (!c->state_dir[0])
        return 0;
    struct grist_snapshots *sn = calloc(1, sizeof(*sn));
    if (!sn)
        return -ENOMEM;
    sn->d = d;
    const char *fault = getenv("GRISTD_FAULT");
    sn->delay_ms = fault && strcmp(fault, "snapshot-slow") == 0 ? 100 : 0;
    if (strlen(c->state_dir) > sizeof(sn->dir) - 64) {
        GRIST_ERR("state: --state-dir is longer than %zu bytes", sizeof(sn->dir) - 64);
        free(sn);
        return -EINVAL;
    }
    snprintf(sn->dir, sizeof(sn->dir), "%s", c->state_dir);
    size_t n = strlen(sn->dir);
    while (n > 1 && sn->dir[n - 1] == '/')
        sn->dir[--n] = '\0';
    if (mkdir(sn->dir, 0700) != 0 && errno != EEXIST)
        GRIST_ERR("state: cannot create %s: %s (snapshots will fail and be counted)", sn->dir,
                  strerror(errno));
    d->snap = sn;
    load_all(d, sn);
    uv_timer_init(d->loop, &sn->timer);
    sn->timer.data = sn;
    const uint64_t ms = (uint64_t)(c->snapshot_interval * 1000.0);
    uv_timer_start(&sn->timer, on_timer, ms, ms);
    GRIST_INFO("state: %s, a snapshot every %.3g s", sn->dir, c->snapshot_interval);
    return 0;
}
