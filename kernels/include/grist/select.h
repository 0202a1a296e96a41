/*
 * Choosing momentum / beta1 and the learning-rate factor (MATH.md sections
 * 4 to 6) from a group's statistics. Pure functions over the statistics view
 * plus a small per-group selector state; no backend calls.
 */
#ifndef GRIST_SELECT_H
#define GRIST_SELECT_H

#include <stdint.h>

#include "grist/stats.h"

#ifdef __cplusplus
extern "C" {
#endif

enum grist_mode { GRIST_MODE_PER_GROUP = 0, GRIST_MODE_GLOBAL = 1 };
enum grist_noise {
    GRIST_NOISE_OFF = 0,
    GRIST_NOISE_WORKERS,
    GRIST_NOISE_ACF,
    GRIST_NOISE_AUTO,
    GRIST_NOISE_LAG1
};
enum grist_coupling {
    GRIST_LR_NONE = 0,
    GRIST_LR_DC,
    GRIST_LR_ENERGY,
    GRIST_LR_RADIUS,
    GRIST_LR_GREEDY
};
/** Selection rule: the paper's first-order alignment, or the second-order
 *  greedy rule with curvature along the trajectory (docs/MATH.md 5.4). */
enum grist_rule { GRIST_RULE_ALIGNMENT = 0, GRIST_RULE_CURVATURE = 1 };
enum grist_select_on { GRIST_SELECT_TRAIN = 0, GRIST_SELECT_VALIDATION = 1 };

/** Selection policy of a job (MATH.md sections 4-6). */
struct grist_policy {
    enum grist_rule rule;
    enum grist_mode mode;
    enum grist_noise noise;
    enum grist_coupling coupling;
    enum grist_select_on select_on;
    double beta_min, beta_max; /**< hard bounds on any pushed beta */
    double lr_scale_min, lr_scale_max; /**< hard bounds on lr_scale */
    uint32_t min_steps; /**< no move before this many steps */
    double z; /**< hysteresis: margin in standard errors */
    uint32_t h; /**< hysteresis: consecutive evaluations */
    double j_ema; /**< extra smoothing of J before argmax; 0 = off */
    double radius; /**< rho for GRIST_LR_RADIUS */
    double z_fast; /**< a margin of z_fast standard errors moves at once (curvature
                                      rule; 0 = off) */
    double horizon_step; /**< curvature rule: one move changes 1/(1-beta) by at most this
                                      factor (2; docs/MATH.md 5.4) */
};

/** Defaults of MATH.md (noise auto, coupling none, z = 2, H = 3, ...). */
void grist_policy_default(struct grist_policy *p);

/** Parse/format enum names ("per_group", "acf", "energy", ...). @return 0 or -EINVAL. */
int grist_noise_parse(const char *s, enum grist_noise *out);
int grist_coupling_parse(const char *s, enum grist_coupling *out);
int grist_mode_parse(const char *s, enum grist_mode *out);
int grist_select_on_parse(const char *s, enum grist_select_on *out);
int grist_rule_parse(const char *s, enum grist_rule *out);
const char *grist_rule_name(enum grist_rule v);
const char *grist_noise_name(enum grist_noise v);
const char *grist_coupling_name(enum grist_coupling v);
const char *grist_mode_name(enum grist_mode v);
const char *grist_select_on_name(enum grist_select_on v);

/** Per-group selector state (embedded; init with grist_selector_init()). */
struct grist_selector {
    enum grist_form form;
    double beta0; /**< the user's configured beta */
    uint64_t n; /**< elements of the group (radius coupling) */
    int moved; /**< 0 until the first move: beta0 is pushed as is */
    uint32_t cur; /**< index of the current candidate */
    uint32_t challenger; /**< candidate of the running streak */
    uint32_t streak; /**< consecutive evaluations that favoured challenger */
    uint64_t smooth_n; /**< evaluations folded into smooth[] */
    double lr_scale; /**< the lr_scale of the last evaluation (greedy coupling) */
    double smooth[GRIST_MAX_CANDIDATES]; /**< J after j_ema smoothing */
};

void grist_selector_init(struct grist_selector *sel, enum grist_form form, double beta0, uint64_t n,
                         const double *cand, uint32_t ncand);

/** Outcome of one evaluation. */
struct grist_choice {
    double beta; /**< momentum / beta1 to use */
    double lr_scale; /**< factor on the user's lr (1 for radius) */
    double lr; /**< absolute lr (radius coupling), else 0 */
    double confidence; /**< margin of the best over the current, in standard errors */
    double noise; /**< sigma-hat^2 used for the correction */
    double noise_scale; /**< B_noise of MATH.md section 4 */
    uint32_t index; /**< candidate index of beta (nearest when not moved) */
    double kappa; /**< curvature along the trajectory used (0: not identified) */
    double lr_greedy; /**< eta* = F / (kappa E) of the current candidate, absolute (0: none) */
    int changed; /**< 1 when this evaluation moved beta */
    const char *reason; /**< static text explaining the state */
};

/**
 * sigma-hat^2 of the aggregated gradient under a noise mode (MATH.md 4).
 * AUTO uses workers when any step had W >= 2, else acf; LAG1 is
 * max(0, r_0 - r_1) (docs/MATH.md 4.6).
 */
double grist_noise_estimate(const struct grist_stats_view *v, enum grist_noise mode);

/** The noise mode a policy resolves to: under the curvature rule AUTO falls
 *  back to lag1 with one worker (acf under the alignment rule). */
enum grist_noise grist_policy_noise(const struct grist_policy *pol,
                                    const struct grist_stats_view *v);

/**
 * Predicted loss drop D_j = eta F_j - (eta^2 / 2) kappa E_j of every
 * candidate (docs/MATH.md 5.4): F_j the noise-corrected first-order
 * alignment and E_j the energy of candidate j's update under the form,
 * sigma2 the noise estimate, eta the lr in force, kappa the curvature.
 * F and E may be NULL.
 */
void grist_greedy_drop(const struct grist_stats_view *v, enum grist_form form, double eta,
                       double kappa, double sigma2, double *D, double *F, double *E);

/** lr_scale of MATH.md section 6 for coupling NONE, DC or ENERGY. */
double grist_lr_scale(enum grist_coupling c, enum grist_form form, double beta, double beta0);

/**
 * Evaluate one group (per_group mode): corrected J, smoothing, argmax among
 * candidates in [beta_min, beta_max], hysteresis, lr coupling.
 *
 * @return 0; -EINVAL for mismatched sizes.
 */
int grist_select_group(const struct grist_policy *pol, struct grist_selector *sel,
                       const struct grist_stats *st, struct grist_choice *out);

/**
 * Evaluate a job in global mode: one beta for all groups from the sum of the
 * groups' J (all groups must share the candidate list). sel[0] holds the
 * job's hysteresis state; out[g] receives each group's choice (lr_scale per
 * group's form and beta0).
 *
 * @return 0; -EINVAL when candidate lists differ.
 */
int grist_select_global(const struct grist_policy *pol, struct grist_selector *sel,
                        struct grist_stats *const *st, uint32_t ngroups, struct grist_choice *out);

#ifdef __cplusplus
}
#endif

#endif /* GRIST_SELECT_H */
