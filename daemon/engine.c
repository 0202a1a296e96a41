/*
 * DESIGN: the compute thread (see engine.h).
 *
 * Threads: the loop enqueues work items under e->mu and signals e->cv; the
 * compute thread takes the whole queue at once, applies it, and posts
 * results to e->out (also under e->mu) with uv_async_send. Only the compute
 * thread touches the backend and the statistics (e_job), so a cuda backend's
 * handle and stream stay on one thread.
 *
 * Order: items of one job are applied in queue order. Consecutive steps of a
 * job within one taken batch are applied as one grist_stats_update() of n
 * steps per group (the covariance takes them as one rank-b SYRK): when the
 * thread falls behind, work merges instead of piling up. Control items
 * (create, drop) never count against the capacity and are never dropped.
 *
 * Fair share (admission, loop thread, under mu): the queue is bounded by
 * capacity steps, and, once the thread is behind (the queue is half full, or
 * its oldest step has waited lag_ns), by a share of the queued work per
 * job: a job whose
 * queued floats (ngroups * m per step, what its updates cost) exceed 1/N of
 * all queued floats, N the jobs on this thread, has its new steps refused
 * (-EBUSY), unless it holds fewer than capacity / 2N steps (its reserve:
 * the others can fill at most half the queue once it is behind, so a job
 * within its reserve always finds room). The thread takes the whole queue at once, so the time a taken
 * batch needs is bounded by about lag_ns of work plus the others' steps: a
 * heavy job cannot make its neighbours' steps wait past the capacity. A
 * lone job (N = 1) is never over its share and uses the whole queue.
 * lag_ns = 0 turns the share off (the queue's capacity is the only bound).
 *
 * Family solves (eigendecompositions, ~9 ms per 256 x 256 group here) run
 * on a second, low-priority thread with its own backend instance, so they
 * never delay a selection or a push: when they are due, the compute thread
 * copies each group's Sigma (grist_stats_sigma_snapshot) into a request and
 * goes on; the families thread solves it and stores the values in the
 * job's family box, which every later result of the job copies. A job has
 * at most one request in flight (a due solve is skipped while one runs),
 * and the thread at most one waiting besides the one it solves: a job
 * falling due while another's request waits is postponed to its next
 * evaluation, so the Sigma copies in memory stay bounded under any load.
 * The box is reference-counted (job + request) under fmu, so a job dropped
 * while its request runs is freed by whichever lets go last.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#ifdef __linux__
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "engine.h"
#include "log.h"
#include "snapio.h"

enum item_kind { IT_CREATE, IT_STEP, IT_VALIDATION, IT_DROP, IT_SNAPSHOT, IT_STOP };

struct item {
    struct item *next;
    enum item_kind kind;
    uint64_t key, step, queued_ns;
    uint64_t read_ns; /* the job's share's read_ns when queued */
    uint32_t nworkers, ngroups, m;
    struct grist_engine_job_spec *spec; /* IT_CREATE */
    float *sketch; /* ngroups * m */
    double *worker_sq; /* ngroups */
    uint32_t *batch; /* ngroups */
    double *lrb; /* 2 * ngroups: update multiplier, beta */
};

/* the newest family values of a job, shared with the families thread */
struct fam_box {
    int refs, busy, have;
    uint32_t ngroups;
    struct grist_families fam[]; /* ngroups */
};

struct fam_req {
    struct fam_req *next;
    struct fam_box *box;
    uint64_t key; /* the job's: the solved families are posted to the loop */
    uint32_t ngroups, n; /* n = m_cov */
    double *sigma; /* ngroups * n * n, mmap'd (sigma_alloc) */
    double *c; /* ngroups; 0 = group not ready */
};

struct e_job {
    struct e_job *next; /* hash chain */
    uint64_t key;
    uint32_t ngroups, m;
    struct grist_job_policy policy;
    struct grist_stats **stats;
    struct grist_selector *sel;
    struct fam_box *box;
    uint64_t steps, last_step, last_queued_ns, next_solve, next_families;
    uint64_t families_ns; /* uv_hrtime() of the last family request (0: none yet) */
    uint64_t read_ns; /* the newest read_ns its steps brought */
    uint32_t families_phase;
    /* steps of the current batch */
    struct item **pend;
    uint32_t npend, cap_pend;
    struct e_job *dirty_next;
    int dirty;
};

#define NBUCKET 1024

struct grist_engine {
    uv_loop_t *loop;
    struct grist_backend *be;
    uv_thread_t thread;
    uv_mutex_t mu;
    uv_cond_t cv;
    struct item *head, *tail; /* in */
    uint32_t depth, capacity;
    uint32_t njobs; /* jobs on this thread (created, not dropped) */
    uint64_t gen; /* takes of the queue so far */
    uint64_t work; /* floats queued since the last take */
    uint64_t lag_ns; /* the thread is behind once the head waited this */
    uint64_t shed; /* steps refused for being over their share */
    struct grist_engine_result *out_head, *out_tail;
    uv_async_t async;
    grist_engine_result_fn *cb;
    void *ud;
    void (*done)(void *ud);
    int stopped;
    /* compute thread only */
    struct e_job *jobs[NBUCKET];
    /* families thread */
    struct grist_backend *fbe;
    uv_thread_t fthread;
    uv_mutex_t fmu;
    uv_cond_t fcv;
    struct fam_req *fhead, *ftail; /* at most one waiting (families_request) */
    uint64_t fdeferred; /* due family solves postponed: a request was waiting */
    uint64_t frequested; /* family solves queued for the families thread */
    uint64_t families_interval_ns; /* at most one family request per job this often */
    uint64_t families_idle_ns; /* ... and this often for a job nobody read that long */
    unsigned families_delay_ms; /* fault injection only */
    unsigned slow_us_per_group; /* fault injection only: each step costs this per group */
    int fstop, have_fthread;
};

static void box_unref_locked(struct fam_box *b)
{
    if (b && --b->refs == 0)
        free(b);
}

/* The Sigma copies of a request come straight from the kernel and go back
 * to it: they are megabytes (ngroups x n^2 doubles) that live for one solve,
 * allocated on the compute thread and freed on the families thread, and
 * from malloc they left their pages resident in the compute thread's arena
 * among the statistics (bench-daemon --memory, RSS per group against the
 * statistics' need: 1.15 -> 1.12 from the two job shapes; a process-wide
 * fixed mmap threshold did as much but doubled the CPU per worker-step at
 * 2 x 8; docs/PERFORMANCE.analysis.md, memory). */
static double *sigma_alloc(size_t n)
{
    void *p = mmap(NULL, n * sizeof(double), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static void sigma_free(double *p, size_t n)
{
    if (p)
        munmap(p, n * sizeof(double));
}

static void req_free(struct fam_req *q)
{
    if (!q)
        return;
    sigma_free(q->sigma, (size_t)q->ngroups * q->n * q->n);
    free(q->c);
    free(q);
}

static void post(struct grist_engine *e, struct grist_engine_result *r);

static void families_main(void *arg)
{
    struct grist_engine *e = arg;
    pthread_setname_np(pthread_self(), "gristd-family");
#ifdef __linux__
    /* nice 10 for this thread only (Linux keeps a nice value per thread) */
    if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 10) != 0)
        GRIST_DEBUG("families thread: setpriority failed");
#endif
    uv_mutex_lock(&e->fmu);
    for (;;) {
        while (!e->fstop && !e->fhead)
            uv_cond_wait(&e->fcv, &e->fmu);
        if (e->fstop)
            break;
        struct fam_req *q = e->fhead;
        e->fhead = q->next;
        if (!e->fhead)
            e->ftail = NULL;
        uv_mutex_unlock(&e->fmu);
        if (e->families_delay_ms) /* GRISTD_FAULT=families-slow (tests) */
            uv_sleep(e->families_delay_ms);
        struct grist_families *out = calloc(q->ngroups, sizeof(*out));
        int *ok = calloc(q->ngroups, sizeof(*ok));
        for (uint32_t g = 0; out && ok && g < q->ngroups; g++)
            if (q->c[g] > 0.0)
                ok[g] =
                    grist_families_from_snapshot(e->fbe, q->n, q->sigma + (size_t)g * q->n * q->n,
                                                 q->c[g], 1e-12, &out[g]) == 0;
        uv_mutex_lock(&e->fmu);
        for (uint32_t g = 0; out && ok && g < q->ngroups; g++)
            if (ok[g]) {
                q->box->fam[g] = out[g];
                q->box->have = 1;
            }
        /* post the families on their own: a job whose last evaluation came
         * before the solve finished (its run ended) still shows them */
        struct grist_engine_result *r = NULL;
        if (out && ok && q->box->have)
            r = calloc(1, sizeof(*r) + q->ngroups * sizeof(struct grist_engine_group_result));
        if (r) {
            r->key = q->key;
            r->families_only = 1;
            r->ngroups = q->ngroups;
            for (uint32_t g = 0; g < q->ngroups; g++) {
                r->groups[g].fam = q->box->fam[g];
                r->groups[g].have_families = q->box->have;
            }
        }
        q->box->busy = 0;
        box_unref_locked(q->box);
        if (r) { /* post() takes e->mu: not under fmu */
            uv_mutex_unlock(&e->fmu);
            post(e, r);
            uv_mutex_lock(&e->fmu);
        }
        free(out);
        free(ok);
        req_free(q);
    }
    uv_mutex_unlock(&e->fmu);
}

/* compute thread: queue the family solves of job j (skipped while one of
 * its own runs). @return 1 when postponed because another job's request is
 * waiting (the caller retries at the job's next evaluation), else 0. */
static int families_request(struct grist_engine *e, struct e_job *j)
{
    if (!e->have_fthread || !j->box)
        return 0;
    const uint32_t n = grist_stats_cov_dim(j->stats[0]);
    if (n == 0)
        return 0;
    /* the time floor: family values are diagnostics a person reads, so a
     * job stepping 1,000 times a second needs them no more often than one
     * stepping once (each request costs an eigendecomposition per group) */
    const uint64_t now = uv_hrtime();
    /* a job nobody reads (no dashboard, no query) in the idle interval gets
     * the idle floor: on a shared daemon most jobs are unwatched, and their
     * family solves were the largest part of its CPU at low step rates */
    const uint64_t floor = j->read_ns && now - j->read_ns < e->families_idle_ns
        ? e->families_interval_ns
        : e->families_idle_ns;
    if (j->families_ns && now - j->families_ns < floor)
        return 0;
    /* another job's request is waiting: this one is postponed to the job's
     * next evaluation (j->families_ns stays), so the thread's queue holds at
     * most one Sigma copy besides the one being solved, however many jobs
     * fall due at once (an unbounded queue held ngroups x n^2 doubles per
     * job: 512 KiB per group at n = 256). Only this thread queues, so the
     * queue cannot fill between here and the append below. */
    uv_mutex_lock(&e->fmu);
    const int busy = j->box->busy, postpone = !busy && e->fhead != NULL;
    e->fdeferred += (uint64_t)postpone;
    uv_mutex_unlock(&e->fmu);
    if (busy)
        return 0;
    if (postpone)
        return 1;
    struct fam_req *q = calloc(1, sizeof(*q));
    if (!q)
        return 0;
    j->families_ns = now;
    q->key = j->key;
    q->ngroups = j->ngroups;
    q->n = n;
    q->sigma = sigma_alloc((size_t)j->ngroups * n * n);
    q->c = calloc(j->ngroups, sizeof(double));
    if (!q->sigma || !q->c) {
        req_free(q);
        return 0;
    }
    int any = 0;
    for (uint32_t g = 0; g < j->ngroups; g++) {
        double c = 0;
        if (grist_stats_cov_dim(j->stats[g]) == n &&
            grist_stats_sigma_snapshot(j->stats[g], q->sigma + (size_t)g * n * n, &c) == 0) {
            q->c[g] = c;
            any = 1;
        }
    }
    if (!any) {
        req_free(q);
        return 0;
    }
    uv_mutex_lock(&e->fmu);
    q->box = j->box;
    j->box->refs++;
    j->box->busy = 1;
    if (e->ftail)
        e->ftail->next = q;
    else
        e->fhead = q;
    e->ftail = q;
    e->frequested++;
    uv_cond_signal(&e->fcv);
    uv_mutex_unlock(&e->fmu);
    return 0;
}

static void item_free(struct item *it)
{
    if (!it)
        return;
    if (it->spec) {
        free((void *)it->spec->groups);
        free((void *)it->spec->restore);
        free(it->spec);
    }
    free(it->sketch);
    free(it->worker_sq);
    free(it->batch);
    free(it->lrb);
    free(it);
}

static struct e_job **slot(struct grist_engine *e, uint64_t key)
{
    struct e_job **p = &e->jobs[key % NBUCKET];
    while (*p && (*p)->key != key)
        p = &(*p)->next;
    return p;
}

static void job_free(struct grist_engine *e, struct e_job *j)
{
    if (!j)
        return;
    uv_mutex_lock(&e->fmu);
    box_unref_locked(j->box);
    uv_mutex_unlock(&e->fmu);
    for (uint32_t g = 0; g < j->ngroups && j->stats; g++)
        grist_stats_free(j->stats[g]);
    free(j->stats);
    free(j->sel);
    free(j->pend);
    free(j);
}

static void post(struct grist_engine *e, struct grist_engine_result *r)
{
    uv_mutex_lock(&e->mu);
    r->next = NULL;
    if (e->out_tail)
        e->out_tail->next = r;
    else
        e->out_head = r;
    e->out_tail = r;
    uv_mutex_unlock(&e->mu);
    uv_async_send(&e->async);
}

/*
 * A job's compute state in a snapshot (the job file's engine part, written
 * and read by the one layout below): its step counters, and per group the
 * selector, the statistics (grist_stats_serialize, itself versioned and
 * checksummed) and the newest family values. Reading fills `st` with
 * pointers into the input.
 */
struct e_state_group {
    struct grist_selector sel;
    const void *stats;
    size_t stats_len;
    int have_fam;
    struct grist_families fam;
};

static void visit_state(struct grist_sio *s, uint32_t *ngroups, uint32_t cap, uint64_t c[4],
                        struct e_state_group *gs)
{
    sio_u32(s, ngroups);
    if (*ngroups > cap) /* read from the input: gs holds cap groups */
        s->bad = 1;
    for (int i = 0; i < 4; i++)
        sio_u64(s, &c[i]);
    for (uint32_t g = 0; g < *ngroups && !s->bad; g++) {
        struct grist_selector *sel = &gs[g].sel;
        sio_int(s, sel->form);
        sio_f64(s, &sel->beta0);
        sio_u64(s, &sel->n);
        sio_int(s, sel->moved);
        sio_u32(s, &sel->cur);
        sio_u32(s, &sel->challenger);
        sio_u32(s, &sel->streak);
        sio_u64(s, &sel->smooth_n);
        sio_f64(s, &sel->lr_scale);
        uint32_t k = GRIST_MAX_CANDIDATES;
        sio_u32(s, &k);
        if (k != GRIST_MAX_CANDIDATES)
            s->bad = 1;
        for (uint32_t i = 0; i < GRIST_MAX_CANDIDATES; i++)
            sio_f64(s, &sel->smooth[i]);
        sio_blob(s, &gs[g].stats, &gs[g].stats_len);
        sio_int(s, gs[g].have_fam);
        double *f = (double *)&gs[g].fam; /* the struct is doubles only */
        uint32_t nf = sizeof(gs[g].fam) / sizeof(double);
        sio_u32(s, &nf);
        if (nf != sizeof(gs[g].fam) / sizeof(double))
            s->bad = 1;
        for (uint32_t i = 0; i < nf && !s->bad; i++)
            sio_f64(s, &f[i]);
    }
}

/* compute thread: the job's state as a result for the loop (snap NULL when
 * the job is unknown or memory ran out; the loop counts the failure) */
static void post_snapshot(struct grist_engine *e, uint64_t key, struct e_job *j)
{
    struct grist_engine_result *r = calloc(1, sizeof(*r));
    if (!r)
        return; /* the loop's request stays outstanding; see snapshot.c */
    r->key = key;
    r->snapshot = 1;
    struct e_state_group *gs = j ? calloc(j->ngroups, sizeof(*gs)) : NULL;
    int ok = gs != NULL;
    for (uint32_t g = 0; ok && g < j->ngroups; g++) {
        void *buf;
        size_t len;
        ok = grist_stats_serialize(j->stats[g], &buf, &len) == 0;
        if (!ok)
            break;
        gs[g].stats = buf;
        gs[g].stats_len = len;
        gs[g].sel = j->sel[g];
    }
    if (ok) {
        uv_mutex_lock(&e->fmu);
        for (uint32_t g = 0; g < j->ngroups; g++) {
            gs[g].have_fam = j->box->have;
            gs[g].fam = j->box->fam[g];
        }
        uv_mutex_unlock(&e->fmu);
        uint32_t ng = j->ngroups;
        uint64_t c[4] = {j->steps, j->last_step, j->next_solve, j->next_families};
        struct grist_sio w = {0};
        visit_state(&w, &ng, j->ngroups, c, gs);
        r->snap = malloc(w.off);
        if (r->snap) {
            r->snap_len = w.off;
            w = (struct grist_sio){.p = r->snap};
            visit_state(&w, &ng, j->ngroups, c, gs);
        }
    }
    for (uint32_t g = 0; gs && g < j->ngroups; g++)
        free((void *)gs[g].stats);
    free(gs);
    post(e, r);
}

/* Decode a job's compute state and build its statistics on be, checked
 * against the job it must belong to (groups, m, candidates, forms) before
 * anything is allocated; the statistics keep their own fold, lags and
 * batch (a daemon restarted with another --cov-dim restores them as they
 * were). gs / st: ngroups each, filled; the caller
 * frees st[]. @return 0; GRIST_EBADSTATE; -ENOMEM; a backend's error. */
static int state_decode(struct grist_backend *be, const struct grist_engine_job_spec *sp,
                        const void *buf, size_t len, struct e_state_group *gs,
                        struct grist_stats **st, uint64_t c[4])
{
    uint32_t ng = sp->ngroups;
    struct grist_sio rd = {.p = (unsigned char *)buf, .len = len, .reading = 1};
    visit_state(&rd, &ng, sp->ngroups, c, gs);
    if (rd.bad || rd.off != len || ng != sp->ngroups)
        return GRIST_EBADSTATE;
    for (uint32_t g = 0; g < sp->ngroups; g++) {
        struct grist_stats_config cfg;
        if (grist_stats_peek_config(gs[g].stats, gs[g].stats_len, &cfg) < 0 || cfg.m != sp->m ||
            cfg.ncand != sp->policy.ncand || cfg.form != (uint32_t)sp->groups[g].form ||
            gs[g].sel.cur >= sp->policy.ncand || gs[g].sel.challenger >= sp->policy.ncand)
            return GRIST_EBADSTATE;
        const int r = grist_stats_deserialize(be, gs[g].stats, gs[g].stats_len, &st[g]);
        if (r < 0)
            return r;
    }
    return 0;
}

int grist__engine_state_check(struct grist_backend *be, const struct grist_engine_job_spec *sp,
                              const void *buf, size_t len)
{
    struct e_state_group *gs = calloc(sp->ngroups, sizeof(*gs));
    struct grist_stats **st = calloc(sp->ngroups, sizeof(*st));
    uint64_t c[4];
    int r = gs && st ? state_decode(be, sp, buf, len, gs, st, c) : -ENOMEM;
    for (uint32_t g = 0; st && g < sp->ngroups; g++)
        grist_stats_free(st[g]);
    free(st);
    free(gs);
    return r;
}

/* compute thread: replace a fresh job's state by a snapshot's, all or
 * nothing. @return as state_decode(). */
static int restore_state(struct grist_engine *e, struct e_job *j,
                         const struct grist_engine_job_spec *sp)
{
    struct e_state_group *gs = calloc(j->ngroups, sizeof(*gs));
    struct grist_stats **st = calloc(j->ngroups, sizeof(*st));
    uint64_t c[4];
    int r = gs && st ? state_decode(e->be, sp, sp->restore, sp->restore_len, gs, st, c) : -ENOMEM;
    if (r == 0) {
        for (uint32_t g = 0; g < j->ngroups; g++) {
            grist_stats_free(j->stats[g]);
            j->stats[g] = st[g];
            st[g] = NULL;
            j->sel[g] = gs[g].sel;
        }
        j->steps = c[0];
        j->last_step = c[1];
        j->next_solve = c[2];
        j->next_families = c[3];
        uv_mutex_lock(&e->fmu);
        for (uint32_t g = 0; g < j->ngroups; g++) {
            j->box->fam[g] = gs[g].fam;
            j->box->have |= gs[g].have_fam;
        }
        uv_mutex_unlock(&e->fmu);
    }
    for (uint32_t g = 0; st && g < j->ngroups; g++)
        grist_stats_free(st[g]);
    free(st);
    free(gs);
    return r;
}

static void post_restore_failed(struct grist_engine *e, struct e_job *j, int err)
{
    struct grist_engine_result *r = calloc(1, sizeof(*r));
    if (!r)
        return;
    r->key = j->key;
    r->restore_failed = 1;
    r->error = err;
    post(e, r);
}

static void do_create(struct grist_engine *e, struct item *it)
{
    const struct grist_engine_job_spec *sp = it->spec;
    struct e_job **p = slot(e, sp->key);
    if (*p) { /* a re-created job replaces the old state */
        struct e_job *old = *p;
        *p = old->next;
        job_free(e, old);
    }
    struct e_job *j = calloc(1, sizeof(*j));
    if (!j)
        goto fail;
    j->key = sp->key;
    j->ngroups = sp->ngroups;
    j->m = sp->m;
    j->policy = sp->policy;
    j->next_solve = sp->policy.solve_every;
    /* family solves are staggered across jobs (a per-job phase within
     * families_every) so that jobs in lockstep do not all run their
     * eigendecompositions in the same batch */
    j->families_phase = (uint32_t)(sp->key * 2654435761u);
    {
        const uint32_t fe = sp->policy.families_every ? sp->policy.families_every : 50;
        j->next_families = 1 + j->families_phase % fe;
    }
    j->stats = calloc(sp->ngroups, sizeof(*j->stats));
    j->sel = calloc(sp->ngroups, sizeof(*j->sel));
    j->box = calloc(1, sizeof(*j->box) + sp->ngroups * sizeof(struct grist_families));
    if (j->box) {
        j->box->refs = 1;
        j->box->ngroups = sp->ngroups;
    }
    if (!j->stats || !j->sel || !j->box)
        goto fail;
    struct grist_stats_config cfg;
    grist_stats_config_default(&cfg);
    cfg.m = sp->m;
    cfg.cov_dim = sp->cov_dim;
    cfg.lags = sp->lags;
    cfg.cov_batch = sp->cov_batch;
    cfg.gamma = sp->policy.gamma;
    cfg.ncand = sp->policy.ncand;
    memcpy(cfg.cand, sp->policy.cand, cfg.ncand * sizeof(double));
    for (uint32_t g = 0; g < sp->ngroups; g++) {
        cfg.form = sp->groups[g].form;
        int r = grist_stats_new(e->be, &cfg, &j->stats[g]);
        if (r < 0) {
            GRIST_ERR("job %llx group %u: statistics: %s", (unsigned long long)sp->key, g,
                      grist_strerror(r));
            goto fail;
        }
        grist_selector_init(&j->sel[g], sp->groups[g].form, sp->groups[g].beta0, sp->groups[g].n,
                            cfg.cand, cfg.ncand);
    }
    if (sp->restore) {
        const int r = restore_state(e, j, sp);
        if (r < 0)
            post_restore_failed(e, j, r);
    }
    j->next = NULL;
    *slot(e, sp->key) = j;
    return;
fail:
    job_free(e, j);
    GRIST_ERR("job %llx: cannot create its statistics", (unsigned long long)sp->key);
}

static void evaluate(struct grist_engine *e, struct e_job *j)
{
    const uint64_t t0 = uv_hrtime();
    const int families = j->steps >= j->next_families;
    if (families) {
        const uint32_t fe = j->policy.families_every ? j->policy.families_every : 50;
        const uint64_t off = j->families_phase % fe;
        j->next_families = ((j->steps + fe - off) / fe + 1) * fe - (fe - off);
        if (j->next_families <= j->steps)
            j->next_families += fe;
    }
    struct grist_engine_result *r =
        calloc(1, sizeof(*r) + j->ngroups * sizeof(struct grist_engine_group_result));
    if (!r)
        return;
    r->key = j->key;
    r->step = j->last_step;
    r->steps = j->steps;
    r->ngroups = j->ngroups;
    r->queued_ns = j->last_queued_ns;
    struct grist_choice *ch = calloc(j->ngroups, sizeof(*ch));
    if (!ch) {
        free(r);
        return;
    }
    if (j->policy.sel.mode == GRIST_MODE_GLOBAL) {
        if (grist_select_global(&j->policy.sel, j->sel, j->stats, j->ngroups, ch) < 0)
            r->error = -EINVAL;
    } else {
        for (uint32_t g = 0; g < j->ngroups; g++)
            grist_select_group(&j->policy.sel, &j->sel[g], j->stats[g], &ch[g]);
    }
    for (uint32_t g = 0; g < j->ngroups; g++) {
        struct grist_engine_group_result *o = &r->groups[g];
        o->choice = ch[g];
        snprintf(o->reason, sizeof(o->reason), "%s", ch[g].reason ? ch[g].reason : "");
        o->choice.reason = NULL; /* static text copied above */
        struct grist_stats_view v;
        grist_stats_get_view(j->stats[g], &v);
        o->ncand = v.ncand;
        o->steps = v.steps;
        for (uint32_t k = 0; k < v.ncand; k++) {
            o->cand[k] = v.cand[k];
            o->J[k] = v.J[k];
            o->J_se[k] = grist_stats_diff_se(j->stats[g], k, k);
        }
    }
    /* every result carries the newest family values the families thread
     * produced (solved on a snapshot taken at an earlier evaluation) */
    uv_mutex_lock(&e->fmu);
    for (uint32_t g = 0; g < j->ngroups; g++) {
        r->groups[g].fam = j->box->fam[g];
        r->groups[g].have_families = j->box->have;
    }
    uv_mutex_unlock(&e->fmu);
    free(ch);
    r->solve_s = (double)(uv_hrtime() - t0) * 1e-9;
    post(e, r);
    /* after the result is posted: the push does not wait for the snapshot;
     * postponed behind another job's request, it is due again at once */
    if (families && families_request(e, j))
        j->next_families = j->steps + 1;
}

static void flush(struct grist_engine *e, struct e_job *j)
{
    if (j->npend == 0)
        return;
    const uint32_t n = j->npend, m = j->m;
    struct grist_step *steps = calloc(n, sizeof(*steps));
    int err = 0;
    if (!steps) {
        err = -ENOMEM;
    } else {
        for (uint32_t g = 0; g < j->ngroups && !err; g++) {
            for (uint32_t i = 0; i < n; i++) {
                const struct item *it = j->pend[i];
                steps[i] = (struct grist_step){
                    .sketch = it->sketch + (size_t)g * m,
                    .len = m,
                    .nworkers = it->nworkers,
                    .batch_size = it->batch[g],
                    .has_worker_sq = it->nworkers >= 2,
                    .worker_sq_sum = it->worker_sq[g],
                    .lr = it->lrb ? it->lrb[g] : 0.0,
                    .beta = it->lrb ? it->lrb[it->ngroups + g] : 0.0,
                };
            }
            int r = grist_stats_update(j->stats[g], steps, n);
            if (r < 0) {
                /* input was validated by the loop; only a device failure gets here */
                GRIST_ERR("job %llx group %u: update failed: %s", (unsigned long long)j->key, g,
                          grist_strerror(r));
                err = r;
            }
        }
    }
    free(steps);
    if (e->slow_us_per_group) /* GRISTD_FAULT=compute-slow (tests): a known cost per step */
        usleep((useconds_t)(n * j->ngroups * e->slow_us_per_group));
    if (!err) {
        j->steps += n;
        j->last_step = j->pend[n - 1]->step;
        j->last_queued_ns = j->pend[n - 1]->queued_ns;
    }
    for (uint32_t i = 0; i < n; i++)
        item_free(j->pend[i]);
    j->npend = 0;
    if (!err && j->steps >= j->next_solve) {
        const uint32_t every = j->policy.solve_every ? j->policy.solve_every : 1;
        j->next_solve = (j->steps / every + 1) * every;
        evaluate(e, j);
    }
}

static void thread_main(void *arg)
{
    struct grist_engine *e = arg;
    pthread_setname_np(pthread_self(), "gristd-compute");
    for (;;) {
        uv_mutex_lock(&e->mu);
        while (!e->head)
            uv_cond_wait(&e->cv, &e->mu);
        struct item *list = e->head;
        e->head = e->tail = NULL;
        e->depth = 0;
        e->work = 0;
        e->gen++; /* every job's share starts again */
        uv_mutex_unlock(&e->mu);

        struct e_job *dirty = NULL;
        int stop = 0;
        while (list) {
            struct item *it = list;
            list = it->next;
            it->next = NULL;
            struct e_job *j = it->kind == IT_STOP ? NULL : *slot(e, it->key);
            if (j && it->kind != IT_STEP)
                flush(e, j);
            switch (it->kind) {
            case IT_CREATE:
                do_create(e, it);
                item_free(it);
                break;
            case IT_DROP:
                if (j) {
                    struct e_job **p = slot(e, it->key);
                    *p = j->next;
                    if (j->dirty) { /* unlink from the dirty list */
                        for (struct e_job **d = &dirty; *d; d = &(*d)->dirty_next)
                            if (*d == j) {
                                *d = j->dirty_next;
                                break;
                            }
                    }
                    job_free(e, j);
                }
                item_free(it);
                break;
            case IT_VALIDATION:
                for (uint32_t g = 0; j && g < j->ngroups && g < it->ngroups; g++)
                    grist_stats_validation(j->stats[g], it->sketch + (size_t)g * it->m, it->m);
                item_free(it);
                break;
            case IT_STEP:
                if (!j || it->ngroups != j->ngroups || it->m != j->m) {
                    item_free(it);
                    break;
                }
                if (j->npend == j->cap_pend) {
                    uint32_t cap = j->cap_pend ? j->cap_pend * 2 : 16;
                    struct item **p = realloc(j->pend, cap * sizeof(*p));
                    if (!p) {
                        item_free(it);
                        break;
                    }
                    j->pend = p;
                    j->cap_pend = cap;
                }
                j->pend[j->npend++] = it;
                if (it->read_ns > j->read_ns)
                    j->read_ns = it->read_ns;
                if (!j->dirty) {
                    j->dirty = 1;
                    j->dirty_next = dirty;
                    dirty = j;
                }
                break;
            case IT_SNAPSHOT:
                post_snapshot(e, it->key, j);
                item_free(it);
                break;
            case IT_STOP:
                stop = 1;
                item_free(it);
                break;
            }
        }
        for (struct e_job *j = dirty; j; j = j->dirty_next) {
            flush(e, j);
            j->dirty = 0;
        }
        if (stop)
            break;
    }
    for (size_t b = 0; b < NBUCKET; b++)
        while (e->jobs[b]) {
            struct e_job *j = e->jobs[b];
            e->jobs[b] = j->next;
            job_free(e, j);
        }
}

static void on_async(uv_async_t *a)
{
    struct grist_engine *e = a->data;
    uv_mutex_lock(&e->mu);
    struct grist_engine_result *r = e->out_head;
    e->out_head = e->out_tail = NULL;
    uv_mutex_unlock(&e->mu);
    while (r) {
        struct grist_engine_result *next = r->next;
        if (e->stopped)
            grist__engine_result_free(r);
        else
            e->cb(e->ud, r); /* the callback owns r */
        r = next;
    }
}

/* Stop and join the families thread; drop its queue and its backend. */
static void families_stop(struct grist_engine *e)
{
    if (!e->have_fthread)
        return;
    uv_mutex_lock(&e->fmu);
    e->fstop = 1;
    uv_cond_signal(&e->fcv);
    uv_mutex_unlock(&e->fmu);
    uv_thread_join(&e->fthread);
    for (struct fam_req *q = e->fhead, *n; q; q = n) {
        n = q->next;
        box_unref_locked(q->box);
        req_free(q);
    }
    e->fhead = e->ftail = NULL;
    grist_backend_close(e->fbe);
    e->fbe = NULL;
    e->have_fthread = 0;
}

/* The failed start's close: the caller still owns the backend. */
static void on_async_closed_free(uv_handle_t *h)
{
    struct grist_engine *e = h->data;
    uv_mutex_destroy(&e->mu);
    uv_cond_destroy(&e->cv);
    uv_mutex_destroy(&e->fmu);
    uv_cond_destroy(&e->fcv);
    free(e);
}

void grist__engine_set_families_interval(struct grist_engine *e, double seconds,
                                         double idle_seconds)
{
    e->families_interval_ns = seconds > 0 ? (uint64_t)(seconds * 1e9) : 0;
    /* 0 means every --families-every steps, read or not */
    e->families_idle_ns = e->families_interval_ns == 0 ? 0
        : idle_seconds > seconds                       ? (uint64_t)(idle_seconds * 1e9)
                                                       : e->families_interval_ns;
}

int grist__engine_start(struct grist_engine **out, uv_loop_t *loop, struct grist_backend *be,
                        uint32_t capacity, double lag_s, grist_engine_result_fn *cb, void *ud)
{
    struct grist_engine *e = calloc(1, sizeof(*e));
    if (!e)
        return -ENOMEM;
    e->loop = loop;
    e->be = be;
    e->capacity = capacity;
    e->lag_ns = (uint64_t)(lag_s * 1e9);
    e->cb = cb;
    e->ud = ud;
    uv_mutex_init(&e->mu);
    uv_cond_init(&e->cv);
    uv_mutex_init(&e->fmu);
    uv_cond_init(&e->fcv);
    uv_async_init(loop, &e->async, on_async);
    e->async.data = e;
    /* the families thread gets its own instance of the same backend (a
     * cuda backend's handle and stream stay on their thread) and one BLAS
     * thread: it is the background, not the hot path */
    {
        const char *f = getenv("GRISTD_FAULT");
        e->families_delay_ms = f && strcmp(f, "families-slow") == 0 ? 1500 : 0;
        e->slow_us_per_group = f && strcmp(f, "compute-slow") == 0 ? 50 : 0;
    }
    if (grist_backend_open(grist_backend_name(be), &e->fbe) == 0) {
        grist_backend_set_threads(e->fbe, 1);
        if (uv_thread_create(&e->fthread, families_main, e) == 0)
            e->have_fthread = 1;
        else
            grist_backend_close(e->fbe), e->fbe = NULL;
    }
    if (!e->have_fthread)
        GRIST_WARN("engine: no families thread; family diagnostics are off");
    /* GRISTD_FAULT=engine-thread makes this creation fail: the failure path
     * is tested (tests/integration/test_daemon.c), not only written;
     * families-slow makes every family solve take 1.5 s longer (test_attach) */
    const char *fault = getenv("GRISTD_FAULT");
    if ((fault && strcmp(fault, "engine-thread") == 0) ||
        uv_thread_create(&e->thread, thread_main, e) != 0) {
        GRIST_ERR("engine: cannot start the compute thread");
        families_stop(e);
        /* the families thread is joined: only the async handle refers to e
         * now; the loop has not run yet, so deliver its close here */
        uv_close((uv_handle_t *)&e->async, on_async_closed_free);
        uv_run(loop, UV_RUN_NOWAIT);
        return -ENOMEM;
    }
    *out = e;
    return 0;
}

static void push(struct grist_engine *e, struct item *it)
{
    if (e->tail)
        e->tail->next = it;
    else
        e->head = it;
    e->tail = it;
    uv_cond_signal(&e->cv);
}

static void on_async_closed(uv_handle_t *h)
{
    struct grist_engine *e = h->data;
    void (*done)(void *) = e->done;
    void *ud = e->ud;
    uv_mutex_destroy(&e->mu);
    uv_cond_destroy(&e->cv);
    uv_mutex_destroy(&e->fmu);
    uv_cond_destroy(&e->fcv);
    grist_backend_close(e->be);
    free(e);
    if (done)
        done(ud);
}

void grist__engine_stop(struct grist_engine *e, void (*done)(void *ud))
{
    struct item *it = calloc(1, sizeof(*it));
    uv_mutex_lock(&e->mu);
    if (it) {
        it->kind = IT_STOP;
        push(e, it);
    }
    uv_mutex_unlock(&e->mu);
    uv_thread_join(&e->thread);
    families_stop(e);
    /* drop undelivered results and anything queued after STOP */
    struct item *rest = e->head;
    while (rest) {
        struct item *n = rest->next;
        item_free(rest);
        rest = n;
    }
    struct grist_engine_result *r = e->out_head;
    while (r) {
        struct grist_engine_result *n = r->next;
        grist__engine_result_free(r);
        r = n;
    }
    e->out_head = e->out_tail = NULL;
    e->stopped = 1;
    e->done = done;
    uv_close((uv_handle_t *)&e->async, on_async_closed);
}

int grist__engine_create_job(struct grist_engine *e, const struct grist_engine_job_spec *spec)
{
    struct item *it = calloc(1, sizeof(*it));
    struct grist_engine_job_spec *sp = malloc(sizeof(*sp));
    struct grist_group_spec *gs = malloc(spec->ngroups * sizeof(*gs));
    if (!it || !sp || !gs) {
        free(it), free(sp), free(gs);
        return -ENOMEM;
    }
    *sp = *spec;
    memcpy(gs, spec->groups, spec->ngroups * sizeof(*gs));
    sp->groups = gs;
    sp->restore = NULL;
    if (spec->restore) {
        void *copy = malloc(spec->restore_len);
        if (!copy) {
            free(it), free(sp), free(gs);
            return -ENOMEM;
        }
        memcpy(copy, spec->restore, spec->restore_len);
        sp->restore = copy;
    }
    it->kind = IT_CREATE;
    it->key = spec->key;
    it->spec = sp;
    uv_mutex_lock(&e->mu);
    e->njobs++;
    push(e, it);
    uv_mutex_unlock(&e->mu);
    return 0;
}

int grist__engine_snapshot(struct grist_engine *e, uint64_t key)
{
    struct item *it = calloc(1, sizeof(*it));
    if (!it)
        return -ENOMEM;
    it->kind = IT_SNAPSHOT;
    it->key = key;
    uv_mutex_lock(&e->mu);
    push(e, it);
    uv_mutex_unlock(&e->mu);
    return 0;
}

void grist__engine_result_free(struct grist_engine_result *r)
{
    if (!r)
        return;
    free(r->snap);
    free(r);
}

void grist__engine_drop_job(struct grist_engine *e, uint64_t key)
{
    struct item *it = calloc(1, sizeof(*it));
    if (!it) {
        uv_mutex_lock(&e->mu);
        e->njobs--;
        uv_mutex_unlock(&e->mu);
        return; /* the state stays until the daemon exits; nothing breaks */
    }
    it->kind = IT_DROP;
    it->key = key;
    uv_mutex_lock(&e->mu);
    e->njobs--;
    push(e, it);
    uv_mutex_unlock(&e->mu);
}

/* Under mu: what the job has queued since the thread last took the queue. */
static void share_current_locked(const struct grist_engine *e, struct grist_engine_share *sh)
{
    if (sh->gen != e->gen) {
        sh->gen = e->gen;
        sh->work = 0;
        sh->steps = 0;
    }
}

/* Under mu: 0 when a step of `work` floats from the job owning sh may be
 * queued now; -EAGAIN (full) or -EBUSY (over its share while behind). */
static int admit_locked(struct grist_engine *e, struct grist_engine_share *sh, uint64_t work)
{
    if (e->depth >= e->capacity)
        return -EAGAIN;
    share_current_locked(e, sh);
    /* a job holding fewer than capacity / 2N steps is always admitted: the
     * queue is never full while one is */
    if (!e->lag_ns || e->njobs <= 1 || !e->head || (uint64_t)sh->steps * 2 * e->njobs < e->capacity)
        return 0;
    if (e->depth < e->capacity / 2 && uv_hrtime() - e->head->queued_ns < e->lag_ns)
        return 0; /* not behind */
    /* behind: over 1/N of the queued work (this step included) is refused */
    if ((sh->work + work) * e->njobs > e->work + work) {
        e->shed++;
        return -EBUSY;
    }
    return 0;
}

/* sk is taken: the item holds it from here, and it is freed on every error. */
static int queue_data(struct grist_engine *e, struct grist_engine_share *sh, enum item_kind kind,
                      uint64_t key, uint64_t step, uint32_t nworkers, uint32_t ngroups, uint32_t m,
                      float *sk, const double *worker_sq, const uint32_t *batch, const double *lrb)
{
    const uint64_t work = (uint64_t)ngroups * m;
    uv_mutex_lock(&e->mu);
    const int adm = admit_locked(e, sh, work);
    uv_mutex_unlock(&e->mu);
    if (adm < 0) {
        free(sk);
        return adm;
    }
    struct item *it = calloc(1, sizeof(*it));
    if (!it) {
        free(sk);
        return -ENOMEM;
    }
    it->kind = kind;
    it->key = key;
    it->step = step;
    it->queued_ns = uv_hrtime();
    it->read_ns = sh->read_ns;
    it->nworkers = nworkers;
    it->ngroups = ngroups;
    it->m = m;
    it->sketch = sk;
    it->worker_sq = calloc(ngroups, sizeof(double));
    it->batch = calloc(ngroups, sizeof(uint32_t));
    if (!it->worker_sq || !it->batch) {
        item_free(it);
        return -ENOMEM;
    }
    if (worker_sq)
        memcpy(it->worker_sq, worker_sq, ngroups * sizeof(double));
    if (batch)
        memcpy(it->batch, batch, ngroups * sizeof(uint32_t));
    if (lrb) {
        it->lrb = malloc(2 * (size_t)ngroups * sizeof(double));
        if (!it->lrb) {
            item_free(it);
            return -ENOMEM;
        }
        memcpy(it->lrb, lrb, 2 * (size_t)ngroups * sizeof(double));
    }
    uv_mutex_lock(&e->mu);
    share_current_locked(e, sh); /* the thread may have taken the queue meanwhile */
    sh->work += work;
    sh->steps++;
    e->work += work;
    e->depth++;
    push(e, it);
    uv_mutex_unlock(&e->mu);
    return 0;
}

int grist__engine_step(struct grist_engine *e, struct grist_engine_share *sh, uint64_t key,
                       uint64_t step, uint32_t nworkers, uint32_t ngroups, uint32_t m, float *mean,
                       const double *worker_sq, const uint32_t *batch, const double *lrb)
{
    return queue_data(e, sh, IT_STEP, key, step, nworkers, ngroups, m, mean, worker_sq, batch, lrb);
}

int grist__engine_validation(struct grist_engine *e, struct grist_engine_share *sh, uint64_t key,
                             uint32_t ngroups, uint32_t m, float *sketch)
{
    return queue_data(e, sh, IT_VALIDATION, key, 0, 1, ngroups, m, sketch, NULL, NULL, NULL);
}

uint64_t grist__engine_shed(struct grist_engine *e)
{
    uv_mutex_lock(&e->mu);
    const uint64_t s = e->shed;
    uv_mutex_unlock(&e->mu);
    return s;
}

uint64_t grist__engine_families_deferred(struct grist_engine *e)
{
    uv_mutex_lock(&e->fmu);
    const uint64_t n = e->fdeferred;
    uv_mutex_unlock(&e->fmu);
    return n;
}

uint64_t grist__engine_families_requested(struct grist_engine *e)
{
    uv_mutex_lock(&e->fmu);
    const uint64_t n = e->frequested;
    uv_mutex_unlock(&e->fmu);
    return n;
}

uint32_t grist__engine_depth(struct grist_engine *e)
{
    uv_mutex_lock(&e->mu);
    const uint32_t d = e->depth;
    uv_mutex_unlock(&e->mu);
    return d;
}
