/*
 * DESIGN: choosing beta and lr_scale (MATH.md sections 4-6). Pure functions
 * of a statistics view and a small selector state; called by the daemon's
 * compute thread every solve_every steps. Bounds (beta_min/max,
 * lr_scale_min/max) always hold on the output, whatever the statistics say.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "grist/error.h"
#include "grist/families.h"
#include "grist/select.h"

void grist_policy_default(struct grist_policy *p)
{
    memset(p, 0, sizeof(*p));
    p->rule = GRIST_RULE_CURVATURE;
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
    p->h = 1;
    p->z_fast = 4.0;
    p->horizon_step = 2.0;
    p->j_ema = 0.0;
    p->radius = 1e-3;
}

#define NAMES(fn_parse, fn_name, type, ...)                                                        \
    static const char *const fn_name##_tab[] = {__VA_ARGS__};                                      \
    int fn_parse(const char *s, type *out)                                                         \
    {                                                                                              \
        for (size_t i = 0; i < sizeof(fn_name##_tab) / sizeof(fn_name##_tab[0]); i++)              \
            if (s && strcmp(s, fn_name##_tab[i]) == 0) {                                           \
                *out = (type)i;                                                                    \
                return 0;                                                                          \
            }                                                                                      \
        return -EINVAL;                                                                            \
    }                                                                                              \
    const char *fn_name(type v)                                                                    \
    {                                                                                              \
        if ((size_t)v < sizeof(fn_name##_tab) / sizeof(fn_name##_tab[0]))                          \
            return fn_name##_tab[v];                                                               \
        return "?";                                                                                \
    }

NAMES(grist_noise_parse, grist_noise_name, enum grist_noise, "off", "workers", "acf", "auto",
      "lag1")
NAMES(grist_coupling_parse, grist_coupling_name, enum grist_coupling, "none", "dc", "energy",
      "radius", "greedy")
NAMES(grist_rule_parse, grist_rule_name, enum grist_rule, "alignment", "curvature")
NAMES(grist_mode_parse, grist_mode_name, enum grist_mode, "per_group", "global")
NAMES(grist_select_on_parse, grist_select_on_name, enum grist_select_on, "train", "validation")

static double clamp(double x, double lo, double hi)
{
    return x < lo ? lo : (x > hi ? hi : x);
}

void grist_selector_init(struct grist_selector *sel, enum grist_form form, double beta0, uint64_t n,
                         const double *cand, uint32_t ncand)
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
    sel->lr_scale = 1.0;
}

double grist_noise_estimate(const struct grist_stats_view *v, enum grist_noise mode)
{
    if (mode == GRIST_NOISE_AUTO)
        mode = v->worker_steps > 0 ? GRIST_NOISE_WORKERS : GRIST_NOISE_ACF;
    switch (mode) {
    case GRIST_NOISE_WORKERS:
        return v->worker_steps > 0 ? v->noise_mean : 0.0;
    case GRIST_NOISE_LAG1:
        return v->steps >= 2 && v->acf[0] > v->acf[1] ? v->acf[0] - v->acf[1] : 0.0;
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

enum grist_noise grist_policy_noise(const struct grist_policy *pol,
                                    const struct grist_stats_view *v)
{
    if (pol->noise != GRIST_NOISE_AUTO)
        return pol->noise;
    if (v->worker_steps > 0)
        return GRIST_NOISE_WORKERS;
    return pol->rule == GRIST_RULE_CURVATURE ? GRIST_NOISE_LAG1 : GRIST_NOISE_ACF;
}

double grist_lr_scale(enum grist_coupling c, enum grist_form form, double b, double b0)
{
    switch (c) {
    case GRIST_LR_DC:
        return !grist_form_is_ema(form) ? (1.0 - b) / (1.0 - b0) : 1.0;
    case GRIST_LR_ENERGY:
        if (!grist_form_is_ema(form))
            return sqrt(1.0 - b * b) / sqrt(1.0 - b0 * b0);
        return sqrt((1.0 + b) * (1.0 - b0)) / sqrt((1.0 - b) * (1.0 + b0));
    default:
        return 1.0;
    }
}

/* F_j and E_j of docs/MATH.md 5.4 are linear in the features (<s,V_j>,
 * |V_j|^2, |s|^2): F = fd dot + fr r0 - fs sigma2, E = ed dot + ee en + er r0. */
struct lin {
    double fd, fr, fs, ed, ee, er;
};

static struct lin greedy_terms(enum grist_form form, double b)
{
    switch (form) {
    case GRIST_FORM_NESTEROV: /* update g + b V: lag 0 carries 1 + b */
        return (struct lin){b, 1.0, 1.0 + b, 2.0 * b, b * b, 1.0};
    case GRIST_FORM_EMA_NESTEROV: { /* update (1 - b)(s + b V): Nesterov's, times 1 - b */
        const double c = 1.0 - b;
        return (struct lin){c * b, c, c * (1.0 + b), 2.0 * b * c * c, b * b * c * c, c * c};
    }
    case GRIST_FORM_EMA: /* update (1 - b) V */
        return (struct lin){1.0 - b, 0.0, 1.0 - b, 0.0, (1.0 - b) * (1.0 - b), 0.0};
    default: /* heavy ball: update V */
        return (struct lin){1.0, 0.0, 1.0, 0.0, 1.0, 0.0};
    }
}

void grist_greedy_drop(const struct grist_stats_view *v, enum grist_form form, double eta,
                       double kappa, double sigma2, double *D, double *F, double *E)
{
    const double r0 = v->acf[0];
    for (uint32_t j = 0; j < v->ncand; j++) {
        const struct lin l = greedy_terms(form, v->cand[j]);
        const double f = l.fd * v->dots[j] + l.fr * r0 - l.fs * sigma2;
        const double e = l.ed * v->dots[j] + l.ee * v->E[j] + l.er * r0;
        D[j] = eta * f - 0.5 * eta * eta * kappa * e;
        if (F)
            F[j] = f;
        if (E)
            E[j] = e;
    }
}

/* eta* = F_c / (kappa E_c), the step that maximizes D_c (docs/MATH.md 6.1); 0 = none. */
static double greedy_lr(const double *F, const double *E, double kappa, uint32_t c)
{
    return kappa > 0.0 && F[c] > 0.0 && E[c] > GRIST_TINY ? F[c] / (kappa * E[c]) : 0.0;
}

/* Standard error of D_a - D_b from the features' covariance. */
struct greedy_ctx {
    const struct grist_stats *st;
    enum grist_form form;
    double eta, kappa;
};

static double se_greedy1(const struct greedy_ctx *g, uint32_t a, uint32_t b)
{
    const struct grist_stats_config *cfg = grist_stats_config(g->st);
    const uint32_t K = cfg->ncand;
    double w[GRIST_MAX_FEATURES] = {0};
    const double h = 0.5 * g->eta * g->eta * g->kappa;
    for (int side = 0; side < 2; side++) {
        const uint32_t j = side ? b : a;
        const double sgn = side ? -1.0 : 1.0;
        const struct lin l = greedy_terms(g->form, cfg->cand[j]);
        w[GRIST_FEAT_DOT(K, j)] += sgn * (g->eta * l.fd - h * l.ed);
        w[GRIST_FEAT_ENERGY(K, j)] += sgn * (-h * l.ee);
        w[GRIST_FEAT_R0(K)] += sgn * (g->eta * l.fr - h * l.er);
    }
    return grist_stats_linear_se(g->st, w);
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
    const double z_fast = pol->rule == GRIST_RULE_CURVATURE ? pol->z_fast : 0.0;
    /* curvature rule: the statistics describe the trajectory of the current
     * beta, so a move stays within a factor pol->horizon_step of its
     * averaging horizon 1 / (1 - beta), towards the best candidate whose
     * lead is the evidence (docs/MATH.md 5.4) */
    const int region = pol->rule == GRIST_RULE_CURVATURE;
    const double hcur = 1.0 / (1.0 - cand[sel->cur]);
    const double hstep = pol->horizon_step > 1.0 ? pol->horizon_step : 2.0;
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
        const int fast = z_fast > 0.0 && margin > z_fast * se;
        if (sel->streak >= (pol->h ? pol->h : 1) || fast) {
            uint32_t to = b;
            if (region) { /* the candidate of the region farthest towards b */
                const double hb = 1.0 / (1.0 - cand[b]);
                double hbest = hcur;
                for (uint32_t k = 0; k < ncand; k++) {
                    const double hk = 1.0 / (1.0 - cand[k]);
                    if (cand[k] < pol->beta_min || cand[k] > pol->beta_max ||
                        hk > hstep * hcur * (1 + 1e-9) || hk < hcur / hstep * (1 - 1e-9))
                        continue;
                    const int toward = hb > hcur ? hk > hbest && hk <= hb * (1 + 1e-12)
                                                 : hk < hbest && hk >= hb * (1 - 1e-12);
                    if (toward) {
                        hbest = hk;
                        to = k;
                    }
                }
            }
            sel->cur = to;
            sel->moved = 1;
            sel->streak = 0;
            out->changed = 1;
            out->reason = fast ? "moved: gain above z_fast standard errors"
                : pol->rule == GRIST_RULE_CURVATURE
                ? "moved: predicted drop above z standard errors for H evaluations"
                : "moved: alignment gain above z standard errors for H evaluations";
        } else {
            out->reason = "challenger ahead; waiting for H consecutive evaluations";
        }
    } else {
        sel->streak = 0;
        out->reason = "holding: gain of the best candidate within z standard errors";
    }
}

static void finish(const struct grist_policy *pol, struct grist_selector *sel, const double *cand,
                   const struct grist_stats_view *v, struct grist_choice *out)
{
    out->index = sel->cur;
    const double beta = sel->moved ? cand[sel->cur] : sel->beta0;
    out->beta = clamp(beta, pol->beta_min, pol->beta_max);
    out->lr = 0.0;
    if (pol->coupling == GRIST_LR_RADIUS) {
        out->lr_scale = 1.0;
        const double e = v ? v->E[sel->cur] : 0.0;
        out->lr = e > GRIST_TINY ? pol->radius * sqrt((double)sel->n) / sqrt(e) : 0.0;
    } else if (pol->coupling == GRIST_LR_GREEDY) {
        /* eta* over the user's scheduled lr (the lr in force divided by the
         * factor last pushed), at most a factor 2 per evaluation */
        const double last = sel->lr_scale > 0.0 ? sel->lr_scale : 1.0;
        double sc = last;
        if (out->lr_greedy > 0.0 && v && v->lr > 0.0)
            sc = clamp(out->lr_greedy / (v->lr / last), 0.5 * last, 2.0 * last);
        out->lr_scale = sc;
    } else {
        const double b0 = clamp(sel->beta0, pol->beta_min, pol->beta_max);
        out->lr_scale = grist_lr_scale(pol->coupling, sel->form, out->beta, b0);
    }
    out->lr_scale = clamp(out->lr_scale, pol->lr_scale_min, pol->lr_scale_max);
    sel->lr_scale = out->lr_scale;
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

/* The second-order rule of docs/MATH.md 5.4 on one group: D_j, then the
 * same argmax and hysteresis as the first-order rule, on D's standard
 * errors. Holds while the curvature is not identified. */
/* The curvature is known only within [lo, hi]: a move must win at every
 * curvature of that range. D is linear in kappa, so the ends and the point
 * estimate suffice; the "standard error" handed to decide() is the one that
 * makes margin / se the smallest of the three z-scores. */
struct robust_ctx {
    struct greedy_ctx g[3]; /* lo, point, hi */
    const double *D[3];
    const double *Dpt; /* what decide() sees as j[] */
};

static double se_robust(void *ctx, uint32_t a, uint32_t b)
{
    const struct robust_ctx *r = ctx;
    const double margin = r->Dpt[a] - r->Dpt[b];
    double zmin = INFINITY;
    for (int k = 0; k < 3; k++) {
        const double se = se_greedy1(&r->g[k], a, b);
        const double m = r->D[k][a] - r->D[k][b];
        const double z = se > 0.0 ? m / se : (m > 0.0 ? INFINITY : -INFINITY);
        if (z < zmin)
            zmin = z;
    }
    if (!(zmin > 0.0) || !(margin > 0.0))
        return INFINITY;
    return isfinite(zmin) ? margin / zmin : 0.0;
}

/* The second-order rule of docs/MATH.md 5.4 on one group: D_j, then the
 * same argmax and hysteresis as the first-order rule, on D's standard
 * errors, robust over the plausible curvature range. Holds while there is
 * no curvature information at all. */
static void select_curvature(const struct grist_policy *pol, struct grist_selector *sel,
                             const struct grist_stats *st, const struct grist_stats_view *v,
                             struct grist_choice *out)
{
    struct grist_curvature cv;
    grist_stats_curvature(st, &cv);
    out->kappa = cv.kappa;
    const double eta = v->lr;
    if (!(eta > 0.0)) {
        sel->streak = 0;
        out->reason = "holding: the worker reports no lr (the curvature rule needs it)";
        return;
    }
    if (!(cv.hi > 0.0)) {
        sel->streak = 0;
        out->reason = "holding: curvature along the trajectory not yet measured";
        return;
    }
    const double kpt = cv.kappa > 0.0 ? cv.kappa : cv.hi;
    const double ks[3] = {cv.lo, kpt, cv.hi};
    double D[3][GRIST_MAX_CANDIDATES], F[GRIST_MAX_CANDIDATES], E[GRIST_MAX_CANDIDATES];
    struct robust_ctx ctx;
    for (int k = 0; k < 3; k++) {
        grist_greedy_drop(v, sel->form, eta, ks[k], out->noise, D[k], k ? NULL : F, k ? NULL : E);
        ctx.g[k] = (struct greedy_ctx){st, sel->form, eta, ks[k]};
        ctx.D[k] = D[k];
    }
    double Dpt[GRIST_MAX_CANDIDATES];
    memcpy(Dpt, D[1], v->ncand * sizeof(double));
    smooth(pol, sel, v->ncand, Dpt);
    ctx.Dpt = Dpt;
    decide(pol, sel, v->cand, v->ncand, Dpt, se_robust, &ctx, out);
    if (cv.kappa <= 0.0 && !out->changed && sel->streak == 0)
        out->reason = "holding: curvature not identified; no move wins over its whole range";
    if (cv.kappa > 0.0)
        out->lr_greedy = greedy_lr(F, E, cv.kappa, sel->cur);
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
    out->noise = grist_noise_estimate(&v, grist_policy_noise(pol, &v));
    out->noise_scale = noise_scale(&v, out->noise);
    if (v.steps < pol->min_steps || v.steps < 2) {
        out->reason = "warm-up: fewer than min_steps steps";
        finish(pol, sel, v.cand, &v, out);
        return 0;
    }
    if (pol->rule == GRIST_RULE_CURVATURE &&
        !(pol->select_on == GRIST_SELECT_VALIDATION && v.val_steps > 0)) {
        select_curvature(pol, sel, st, &v, out);
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
    const struct greedy_ctx *greedy; /* curvature rule: per group; eta 0 = left out */
};

static double se_global(void *ctx, uint32_t a, uint32_t b)
{
    const struct global_ctx *g = ctx;
    double v = 0.0;
    for (uint32_t i = 0; i < g->n; i++) {
        if (g->greedy && !(g->greedy[i].eta > 0.0))
            continue;
        const double s =
            g->greedy ? se_greedy1(&g->greedy[i], a, b) : grist_stats_diff_se(g->st[i], a, b);
        v += s * s;
    }
    return sqrt(v);
}

int grist_select_global(const struct grist_policy *pol, struct grist_selector *sel,
                        struct grist_stats *const *st, uint32_t ngroups, struct grist_choice *out)
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
    const int curv = pol->rule == GRIST_RULE_CURVATURE && pol->select_on != GRIST_SELECT_VALIDATION;
    /* curvature rule: per group its context and its F, E for the lr factor */
    struct gslot {
        double F[GRIST_MAX_CANDIDATES], E[GRIST_MAX_CANDIDATES];
    } *slot = NULL;
    struct greedy_ctx *gctx = NULL;
    if (curv) {
        slot = calloc(ngroups, sizeof(*slot));
        gctx = calloc(ngroups, sizeof(*gctx));
        if (!slot || !gctx) {
            free(slot);
            free(gctx);
            return -ENOMEM;
        }
    }
    uint32_t nmeasured = 0;
    int err = 0;
    for (uint32_t g = 0; g < ngroups && !err; g++) {
        struct grist_stats_view v;
        grist_stats_get_view(st[g], &v);
        if (v.ncand != K || memcmp(v.cand, cand, K * sizeof(double)) != 0) {
            err = -EINVAL;
            break;
        }
        memset(&out[g], 0, sizeof(out[g]));
        out[g].noise = grist_noise_estimate(&v, grist_policy_noise(pol, &v));
        out[g].noise_scale = noise_scale(&v, out[g].noise);
        double j[GRIST_MAX_CANDIDATES];
        if (curv) {
            struct grist_curvature cv;
            grist_stats_curvature(st[g], &cv);
            out[g].kappa = cv.kappa;
            gctx[g] = (struct greedy_ctx){st[g], sel[g].form, 0.0, cv.kappa};
            if (cv.kappa > 0.0 && v.lr > 0.0) {
                gctx[g].eta = v.lr;
                grist_greedy_drop(&v, sel[g].form, v.lr, cv.kappa, out[g].noise, j, slot[g].F,
                                  slot[g].E);
                nmeasured++;
            } else {
                memset(j, 0, sizeof(j));
            }
        } else {
            driving_j(pol, &v, out[g].noise, j);
        }
        for (uint32_t k = 0; k < K; k++)
            jsum[k] += j[k];
        if (v.steps < min_steps)
            min_steps = v.steps;
    }
    if (!err && sel[0].cur >= K)
        err = -EINVAL;
    if (err) {
        free(slot);
        free(gctx);
        return err;
    }
    struct grist_choice c;
    memset(&c, 0, sizeof(c));
    if (min_steps < pol->min_steps || min_steps < 2) {
        c.reason = "warm-up: fewer than min_steps steps";
    } else if (curv && nmeasured == 0) {
        sel[0].streak = 0;
        c.reason = "holding: curvature along the trajectory not yet measured";
    } else {
        smooth(pol, &sel[0], K, jsum);
        struct global_ctx ctx = {st, ngroups, curv ? gctx : NULL};
        decide(pol, &sel[0], cand, K, jsum, se_global, &ctx, &c);
    }
    for (uint32_t g = 0; g < ngroups; g++) {
        struct grist_stats_view v;
        grist_stats_get_view(st[g], &v);
        /* every group follows the job's choice with its own form and beta0 */
        struct grist_selector s = sel[g];
        s.cur = sel[0].cur;
        s.moved = sel[0].moved;
        const double noise = out[g].noise, ns = out[g].noise_scale, kappa = out[g].kappa;
        out[g] = c;
        out[g].noise = noise;
        out[g].noise_scale = ns;
        out[g].kappa = kappa;
        if (curv && gctx[g].eta > 0.0)
            out[g].lr_greedy = greedy_lr(slot[g].F, slot[g].E, kappa, s.cur);
        finish(pol, &s, cand, &v, &out[g]);
        sel[g].lr_scale = s.lr_scale;
        if (g > 0) {
            sel[g].cur = s.cur;
            sel[g].moved = s.moved;
        }
    }
    free(slot);
    free(gctx);
    return 0;
}
