/*
 * DESIGN: choosing beta and lr_scale (MATH.md sections 4-6). Pure functions
 * of a statistics view and a small selector state; called by the daemon's
 * compute thread every solve_every steps. Bounds (beta_min/max,
 * lr_scale_min/max) always hold on the output, whatever the statistics say.
 */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "grist/error.h"
#include "grist/families.h"
#include "grist/select.h"

void grist_policy_default(struct grist_policy *p)
{
    memset(p, 0, sizeof(*p));
    p->mode = GRIST_MODE_PER_GROUP;
    p->noise = GRIST_NOISE_AUTO;
    p->coupling = GRIST_LR_NONE;
    p->select_on = GRIST_SELECT_TRAIN;
    p->beta_min = 0.0;
    p->beta_max = 0.995;
    p->lr_scale_min = 0.1;
    p->lr_scale_max = 10.0;
    p->min_steps = 20;
    p->z = 2.0;
    p->h = 3;
    p->j_ema = 0.0;
    p->radius = 1e-3;
}

#define NAMES(fn_parse, fn_name, type, ...)                                     \
    static const char *const fn_name##_tab[] = {__VA_ARGS__};                   \
    int fn_parse(const char *s, type *out)                                      \
    {                                                                           \
        for (size_t i = 0; i < sizeof(fn_name##_tab) / sizeof(fn_name##_tab[0]); i++) \
            if (s && strcmp(s, fn_name##_tab[i]) == 0) {                        \
                *out = (type)i;                                                 \
                return 0;                                                       \
            }                                                                   \
        return -EINVAL;                                                         \
    }                                                                           \
    const char *fn_name(type v)                                                 \
    {                                                                           \
        if ((size_t)v < sizeof(fn_name##_tab) / sizeof(fn_name##_tab[0]))       \
            return fn_name##_tab[v];                                            \
        return "?";                                                             \
    }

NAMES(grist_noise_parse, grist_noise_name, enum grist_noise, "off", "workers", "acf", "auto")
NAMES(grist_coupling_parse, grist_coupling_name, enum grist_coupling, "none", "dc", "energy",
      "radius")
NAMES(grist_mode_parse, grist_mode_name, enum grist_mode, "per_group", "global")
NAMES(grist_select_on_parse, grist_select_on_name, enum grist_select_on, "train", "validation")

static double clamp(double x, double lo, double hi)
{
    return x < lo ? lo : (x > hi ? hi : x);
}

void grist_selector_init(struct grist_selector *sel, enum grist_form form, double beta0,
                         uint64_t n, const double *cand, uint32_t ncand)
{
    memset(sel, 0, sizeof(*sel));
    sel->form = form;
    sel->beta0 = beta0;
    sel->n = n;
    uint32_t best = 0;
    for (uint32_t j = 1; j < ncand; j++)
        if (fabs(cand[j] - beta0) < fabs(cand[best] - beta0))
            best = j;
    sel->cur = best;
    sel->challenger = best;
}

double grist_noise_estimate(const struct grist_stats_view *v, enum grist_noise mode)
{
    if (mode == GRIST_NOISE_AUTO)
        mode = v->worker_steps > 0 ? GRIST_NOISE_WORKERS : GRIST_NOISE_ACF;
    switch (mode) {
    case GRIST_NOISE_WORKERS:
        return v->worker_steps > 0 ? v->noise_mean : 0.0;
    case GRIST_NOISE_ACF: {
        if (v->lags < 2 || v->steps < 3)
            return 0.0;
        const double r0 = v->acf[0], r1 = v->acf[1], r2 = v->acf[2];
        if (!(r1 > GRIST_TINY && r2 > GRIST_TINY))
            return 0.0;
        const double sig = fmin(r0, r1 * r1 / r2);
        return r0 - sig;
    }
    default:
        return 0.0;
    }
}

double grist_lr_scale(enum grist_coupling c, enum grist_form form, double b, double b0)
{
    switch (c) {
    case GRIST_LR_DC:
        return form == GRIST_FORM_HEAVY_BALL ? (1.0 - b) / (1.0 - b0) : 1.0;
    case GRIST_LR_ENERGY:
        if (form == GRIST_FORM_HEAVY_BALL)
            return sqrt(1.0 - b * b) / sqrt(1.0 - b0 * b0);
        return sqrt((1.0 + b) * (1.0 - b0)) / sqrt((1.0 - b) * (1.0 + b0));
    default:
        return 1.0;
    }
}

/* The J vector that drives the choice: validation J when asked for and
 * available, else the noise-corrected training J. */
static void driving_j(const struct grist_policy *pol, const struct grist_stats_view *v,
                      double sigma2, double *j)
{
    const int val = pol->select_on == GRIST_SELECT_VALIDATION && v->val_steps > 0;
    for (uint32_t k = 0; k < v->ncand; k++) {
        const double b = v->cand[k];
        j[k] = val ? v->J_val[k] : v->J[k] - sqrt(1.0 - b * b) * sigma2;
    }
}

/* Argmax, hysteresis and output, shared by both modes. */
static void decide(const struct grist_policy *pol, struct grist_selector *sel, const double *cand,
                   uint32_t ncand, const double *j, double se_of(void *, uint32_t, uint32_t),
                   void *se_ctx, struct grist_choice *out)
{
    int best = -1;
    for (uint32_t k = 0; k < ncand; k++) {
        if (cand[k] < pol->beta_min || cand[k] > pol->beta_max)
            continue;
        if (best < 0 || j[k] > j[best])
            best = (int)k;
    }
    out->changed = 0;
    if (best < 0) {
        out->reason = "no candidate within [beta_min, beta_max]";
        sel->streak = 0;
        return;
    }
    const uint32_t b = (uint32_t)best;
    if (b == sel->cur) {
        sel->streak = 0;
        double second = -INFINITY;
        int s2 = -1;
        for (uint32_t k = 0; k < ncand; k++)
            if (k != b && cand[k] >= pol->beta_min && cand[k] <= pol->beta_max && j[k] > second) {
                second = j[k];
                s2 = (int)k;
            }
        const double se = s2 >= 0 ? se_of(se_ctx, b, (uint32_t)s2) : INFINITY;
        out->confidence = s2 >= 0 && se > 0.0 ? (j[b] - second) / se : INFINITY;
        out->reason = sel->moved ? "holding: current beta has the best alignment"
                                 : "holding: configured beta has the best alignment";
        return;
    }
    const double margin = j[b] - j[sel->cur];
    const double se = se_of(se_ctx, b, sel->cur);
    out->confidence = se > 0.0 ? margin / se : INFINITY;
    if (margin > pol->z * se) {
        if (sel->challenger == b) {
            sel->streak++;
        } else {
            sel->challenger = b;
            sel->streak = 1;
        }
        if (sel->streak >= (pol->h ? pol->h : 1)) {
            sel->cur = b;
            sel->moved = 1;
            sel->streak = 0;
            out->changed = 1;
            out->reason = "moved: alignment gain above z standard errors for H evaluations";
        } else {
            out->reason = "challenger ahead; waiting for H consecutive evaluations";
        }
    } else {
        sel->streak = 0;
        out->reason = "holding: gain of the best candidate within z standard errors";
    }
}

static void finish(const struct grist_policy *pol, const struct grist_selector *sel,
                   const double *cand, const struct grist_stats_view *v, struct grist_choice *out)
{
    out->index = sel->cur;
    const double beta = sel->moved ? cand[sel->cur] : sel->beta0;
    out->beta = clamp(beta, pol->beta_min, pol->beta_max);
    out->lr = 0.0;
    if (pol->coupling == GRIST_LR_RADIUS) {
        out->lr_scale = 1.0;
        const double e = v ? v->E[sel->cur] : 0.0;
        out->lr = e > GRIST_TINY ? pol->radius * sqrt((double)sel->n) / sqrt(e) : 0.0;
    } else {
        const double b0 = clamp(sel->beta0, pol->beta_min, pol->beta_max);
        out->lr_scale = grist_lr_scale(pol->coupling, sel->form, out->beta, b0);
    }
    out->lr_scale = clamp(out->lr_scale, pol->lr_scale_min, pol->lr_scale_max);
}

static double noise_scale(const struct grist_stats_view *v, double sigma2)
{
    const double w = v->nworkers > 1.0 ? v->nworkers : 1.0;
    const double den = v->acf[0] - sigma2;
    return v->batch_size * w * sigma2 / (den > GRIST_TINY ? den : GRIST_TINY);
}

static double se_single(void *ctx, uint32_t a, uint32_t b)
{
    return grist_stats_diff_se(ctx, a, b);
}

static void smooth(const struct grist_policy *pol, struct grist_selector *sel, uint32_t ncand,
                   double *j)
{
    if (!(pol->j_ema > 0.0 && pol->j_ema < 1.0))
        return;
    sel->smooth_n++;
    const double c = 1.0 / (1.0 - pow(pol->j_ema, (double)sel->smooth_n));
    for (uint32_t k = 0; k < ncand; k++) {
        sel->smooth[k] = pol->j_ema * sel->smooth[k] + (1.0 - pol->j_ema) * j[k];
        j[k] = sel->smooth[k] * c;
    }
}

int grist_select_group(const struct grist_policy *pol, struct grist_selector *sel,
                       const struct grist_stats *st, struct grist_choice *out)
{
    if (!pol || !sel || !st || !out)
        return -EINVAL;
    struct grist_stats_view v;
    grist_stats_get_view(st, &v);
    if (sel->cur >= v.ncand)
        return -EINVAL;
    memset(out, 0, sizeof(*out));
    out->noise = grist_noise_estimate(&v, pol->noise);
    out->noise_scale = noise_scale(&v, out->noise);
    if (v.steps < pol->min_steps || v.steps < 2) {
        out->reason = "warm-up: fewer than min_steps steps";
        finish(pol, sel, v.cand, &v, out);
        return 0;
    }
    double j[GRIST_MAX_CANDIDATES];
    driving_j(pol, &v, out->noise, j);
    smooth(pol, sel, v.ncand, j);
    decide(pol, sel, v.cand, v.ncand, j, se_single, (void *)st, out);
    finish(pol, sel, v.cand, &v, out);
    return 0;
}

struct global_ctx {
    struct grist_stats *const *st;
    uint32_t n;
};

static double se_global(void *ctx, uint32_t a, uint32_t b)
{
    const struct global_ctx *g = ctx;
    double v = 0.0;
    for (uint32_t i = 0; i < g->n; i++) {
        const double s = grist_stats_diff_se(g->st[i], a, b);
        v += s * s;
    }
    return sqrt(v);
}

int grist_select_global(const struct grist_policy *pol, struct grist_selector *sel,
                        struct grist_stats *const *st, uint32_t ngroups,
                        struct grist_choice *out)
{
    if (!pol || !sel || !st || !out || ngroups == 0)
        return -EINVAL;
    struct grist_stats_view v0;
    grist_stats_get_view(st[0], &v0);
    double cand[GRIST_MAX_CANDIDATES];
    const uint32_t K = v0.ncand;
    memcpy(cand, v0.cand, K * sizeof(double));
    double jsum[GRIST_MAX_CANDIDATES] = {0};
    uint64_t min_steps = UINT64_MAX;
    for (uint32_t g = 0; g < ngroups; g++) {
        struct grist_stats_view v;
        grist_stats_get_view(st[g], &v);
        if (v.ncand != K || memcmp(v.cand, cand, K * sizeof(double)) != 0)
            return -EINVAL;
        memset(&out[g], 0, sizeof(out[g]));
        out[g].noise = grist_noise_estimate(&v, pol->noise);
        out[g].noise_scale = noise_scale(&v, out[g].noise);
        double j[GRIST_MAX_CANDIDATES];
        driving_j(pol, &v, out[g].noise, j);
        for (uint32_t k = 0; k < K; k++)
            jsum[k] += j[k];
        if (v.steps < min_steps)
            min_steps = v.steps;
    }
    if (sel[0].cur >= K)
        return -EINVAL;
    struct grist_choice c;
    memset(&c, 0, sizeof(c));
    if (min_steps < pol->min_steps || min_steps < 2) {
        c.reason = "warm-up: fewer than min_steps steps";
    } else {
        smooth(pol, &sel[0], K, jsum);
        struct global_ctx ctx = {st, ngroups};
        decide(pol, &sel[0], cand, K, jsum, se_global, &ctx, &c);
    }
    for (uint32_t g = 0; g < ngroups; g++) {
        struct grist_stats_view v;
        grist_stats_get_view(st[g], &v);
        /* every group follows the job's choice with its own form and beta0 */
        struct grist_selector s = sel[g];
        s.cur = sel[0].cur;
        s.moved = sel[0].moved;
        const double noise = out[g].noise, ns = out[g].noise_scale;
        out[g] = c;
        out[g].noise = noise;
        out[g].noise_scale = ns;
        finish(pol, &s, cand, &v, &out[g]);
        if (g > 0) {
            sel[g].cur = s.cur;
            sel[g].moved = s.moved;
        }
    }
    return 0;
}
