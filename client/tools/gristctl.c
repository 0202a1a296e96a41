/*
 * gristctl: gristd from the command line, through libgrist's query calls.
 *
 *   gristctl [--address HOST:PORT|unix:PATH] [--timeout S] COMMAND ...
 *     jobs [--json]                       every job
 *     job ID [--json]                     a job and its groups
 *     watch ID [--for S] [--json]         the job's state at each evaluation
 *                                         (a table redrawn in place on a terminal)
 *     history ID [--group G] [--series NAME] [--points N] [--from S] [--to S] [--json]
 *
 * The address defaults to $GRIST_ADDRESS, then 127.0.0.1:7788. Exit status:
 * 0; 1 the daemon failed or is unreachable; 2 usage; 3 no such job, group or
 * series.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "grist/client.h"

static double g_timeout = 10.0;
static int g_json;

static int usage(void)
{
    fprintf(
        stderr,
        "usage: gristctl [--address HOST:PORT|unix:PATH] [--timeout S] [--token-file F]\n"
        "                [--tls-ca F [--tls-cert F --tls-key F] [--tls-server-name N]] COMMAND\n"
        "  jobs [--json]\n"
        "  job ID [--json]\n"
        "  watch ID [--for SECONDS] [--json]\n"
        "  history ID [--group G] [--series momentum|lr_scale|noise|noise_scale|confidence]\n"
        "             [--points N] [--from STEP] [--to STEP] [--json]\n");
    return 2;
}

static int fail(const char *what, int r)
{
    fprintf(stderr, "gristctl: %s: %s\n", what,
            r == -ENOENT       ? "no such job"
                : r == -EINVAL ? "invalid argument (group or series)"
                : r == -EACCES ? "gristd wants a valid token (--token-file or GRIST_TOKEN)"
                : r == -EPERM  ? "this token does not cover the job"
                               : strerror(-r));
    return r == -ENOENT || r == -EINVAL ? 3 : r == -EACCES || r == -EPERM ? 4 : 1;
}

/*
 * --json writes, through jansson, the same documents as gristd's HTTP API
 * (daemon/README.md): JobBrief and GroupState fields under their proto names
 * (plus "id" = job_id), so a script can read either. Test http checks that
 * `gristctl job --json` has every key and value of /api/v1/jobs/{job}.
 */
static json_t *jnum(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

static json_t *jarr(const double *v, uint32_t n)
{
    json_t *a = json_array();
    for (uint32_t k = 0; a && k < n; k++)
        json_array_append_new(a, jnum(v[k]));
    return a;
}

static json_t *json_job(const struct grist_job_info *j)
{
    return json_pack("{s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:s,s:I,s:I,s:I}", "id", j->id,
                     "job_id", j->id, "world_size", (json_int_t)j->world_size, "live_workers",
                     (json_int_t)j->live_workers, "step", (json_int_t)j->step, "version",
                     (json_int_t)j->version, "dropped_steps", (json_int_t)j->dropped_steps,
                     "late_summaries", (json_int_t)j->late_summaries, "validation_summaries",
                     (json_int_t)j->validation_summaries, "step_segments",
                     (json_int_t)j->step_segments, "sketch_kind",
                     j->sketch_kind == 1 ? "block" : "hashed", "shed_steps",
                     (json_int_t)j->shed_steps, "groups", (json_int_t)j->groups, "sketch_dim",
                     (json_int_t)j->sketch_dim);
}

static json_t *json_group(const struct grist_group_info *g)
{
    json_t *o =
        json_pack("{s:s,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:I,s:s,s:o,s:o,s:o,s:I,s:I}", "name", g->name,
                  "momentum", jnum(g->momentum), "lr_scale", jnum(g->lr_scale), "candidates",
                  jarr(g->cand, g->ncand), "alignment", jarr(g->J, g->ncand), "alignment_se",
                  jarr(g->J_se, g->ncand), "noise", jnum(g->noise), "noise_scale",
                  jnum(g->noise_scale), "steps", (json_int_t)g->steps, "reason", g->reason,
                  "curvature", jnum(g->curvature), "lr_greedy", jnum(g->lr_greedy), "confidence",
                  jnum(g->confidence), "num_elements", (json_int_t)g->num_elements, "sketch_sample",
                  (json_int_t)g->sketch_sample);
    if (o && g->have_families)
        json_object_set_new(o, "families",
                            json_pack("{s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o}", "trace",
                                      jnum(g->trace), "frobenius", jnum(g->frobenius), "trace_sqrt",
                                      jnum(g->trace_sqrt), "lambda_max", jnum(g->lambda_max),
                                      "effective_rank", jnum(g->effective_rank), "value_frobenius",
                                      jnum(g->value_frobenius), "value_spectral",
                                      jnum(g->value_spectral), "value_isotropic",
                                      jnum(g->value_isotropic), "value_lyapunov",
                                      jnum(g->value_lyapunov), "value_whitened",
                                      jnum(g->value_whitened), "value_diagonal",
                                      jnum(g->value_diagonal)));
    return o;
}

/* print v as one line and release it; -ENOMEM when it could not be built */
static int json_print(json_t *v)
{
    if (!v || json_dumpf(v, stdout, JSON_COMPACT | JSON_REAL_PRECISION(17)) < 0) {
        json_decref(v);
        return -ENOMEM;
    }
    putchar('\n');
    json_decref(v);
    return 0;
}

/* {"job":{...},"groups":[...]} */
static int json_state(const struct grist_job_info *j, const struct grist_group_info *g, uint32_t n)
{
    json_t *a = json_array();
    for (uint32_t i = 0; a && i < n; i++)
        json_array_append_new(a, json_group(&g[i]));
    return json_print(json_pack("{s:o,s:o}", "job", json_job(j), "groups", a));
}

static void table_job(const struct grist_job_info *j, const struct grist_group_info *g, uint32_t n)
{
    printf("job %s: step %llu, version %llu, workers %u/%u, dropped steps %llu\n", j->id,
           (unsigned long long)j->step, (unsigned long long)j->version, j->live_workers,
           j->world_size, (unsigned long long)j->dropped_steps);
    printf("%-20s %9s %9s %12s %12s %8s %10s %8s\n", "group", "momentum", "lr_scale", "noise",
           "noise_scale", "steps", "tr Sigma", "eff.rank");
    for (uint32_t i = 0; i < n; i++) {
        printf("%-20s %9.4f %9.4f %12.4g %12.4g %8llu", g[i].name, g[i].momentum, g[i].lr_scale,
               g[i].noise, g[i].noise_scale, (unsigned long long)g[i].steps);
        if (g[i].have_families)
            printf(" %10.4g %8.2f\n", g[i].trace, g[i].effective_rank);
        else
            printf(" %10s %8s\n", "-", "-");
    }
}

struct watch_state {
    int tty, updates;
};

static int on_watch(void *ud, const struct grist_job_info *j, const struct grist_group_info *g,
                    uint32_t n)
{
    struct watch_state *w = ud;
    w->updates++;
    if (g_json) {
        json_state(j, g, n);
    } else {
        if (w->tty)
            printf("\033[H\033[J"); /* home, clear: the table is redrawn in place */
        table_job(j, g, n);
        if (!w->tty)
            printf("\n");
    }
    fflush(stdout);
    return 0;
}

/* The first line of a token file, without its newline (a token is never
 * given on the command line, where ps would show it). */
static int read_token(const char *path, char *out, size_t size)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "gristctl: --token-file %s: %s\n", path, strerror(errno));
        return -1;
    }
    const int ok = fgets(out, (int)size, f) != NULL;
    fclose(f);
    out[strcspn(out, "\r\n")] = '\0';
    if (!ok || !out[0]) {
        fprintf(stderr, "gristctl: --token-file %s: empty\n", path);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *address = getenv("GRIST_ADDRESS");
    if (!address || !*address)
        address = "127.0.0.1:7788";
    struct grist_client_options opt;
    grist_client_options_default(&opt);
    static char token[1024];
    const char *env_token = getenv("GRIST_TOKEN");
    if (env_token && *env_token)
        opt.token = env_token;
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "--address") && i + 1 < argc)
            address = argv[++i];
        else if (!strcmp(argv[i], "--token-file") && i + 1 < argc) {
            if (read_token(argv[++i], token, sizeof(token)) < 0)
                return 2;
            opt.token = token;
        } else if (!strcmp(argv[i], "--tls-ca") && i + 1 < argc)
            opt.tls_ca_file = argv[++i];
        else if (!strcmp(argv[i], "--tls-cert") && i + 1 < argc)
            opt.tls_cert_file = argv[++i];
        else if (!strcmp(argv[i], "--tls-key") && i + 1 < argc)
            opt.tls_key_file = argv[++i];
        else if (!strcmp(argv[i], "--tls-server-name") && i + 1 < argc)
            opt.tls_server_name = argv[++i];
        else if (!strcmp(argv[i], "--timeout") && i + 1 < argc)
            g_timeout = atof(argv[++i]);
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            return usage() == 2 ? 0 : 0;
        else
            return usage();
    }
    if (i >= argc)
        return usage();
    const char *cmd = argv[i++];
    const char *id = NULL;
    uint32_t group = 0, points = 100;
    const char *series = "momentum";
    uint64_t from = 0, to = 0;
    double duration = 0;
    for (; i < argc; i++) {
        const char *a = argv[i];
        const int has = i + 1 < argc;
        if (!strcmp(a, "--json"))
            g_json = 1;
        else if (!strcmp(a, "--group") && has)
            group = (uint32_t)strtoul(argv[++i], NULL, 10);
        else if (!strcmp(a, "--series") && has)
            series = argv[++i];
        else if (!strcmp(a, "--points") && has)
            points = (uint32_t)strtoul(argv[++i], NULL, 10);
        else if (!strcmp(a, "--from") && has)
            from = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(a, "--to") && has)
            to = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(a, "--for") && has)
            duration = atof(argv[++i]);
        else if (a[0] != '-' && !id)
            id = a;
        else
            return usage();
    }
    struct grist_client *c;
    /* "a,b,c": the replicas of a sharded gristd, in shard order. `jobs` asks
     * every one; the other commands ask the replica of their job. */
    char *list[64];
    uint32_t nlist = 0;
    char *addrs = strdup(address);
    for (char *save = NULL, *a = addrs ? strtok_r(addrs, ",", &save) : NULL; a && nlist < 64;
         a = strtok_r(NULL, ",", &save))
        list[nlist++] = a;
    if (nlist == 0)
        return usage();
    const char *mine = list[id && nlist > 1 ? grist_shard_pick(id, nlist) : 0];
    int r = grist_client_open(mine, &opt, &c);
    if (r < 0)
        return fail("open", r);
    int rc = 0;
    if (!strcmp(cmd, "health")) {
        int serving = 0;
        r = grist_query_health(c, g_timeout, &serving);
        if (r < 0)
            rc = fail(mine, r);
        else if (!serving)
            rc = 1;
        if (r == 0)
            printf("%s\n", serving ? "SERVING" : "NOT_SERVING");
    } else if (!strcmp(cmd, "jobs")) {
        struct grist_job_info *jobs = NULL;
        uint32_t n = 0;
        r = 0;
        for (uint32_t k = 0; k < nlist && r >= 0; k++) {
            struct grist_client *ck = c;
            if (k > 0 && (r = grist_client_open(list[k], &opt, &ck)) < 0)
                break;
            struct grist_job_info *part;
            uint32_t np;
            r = grist_query_jobs(ck, g_timeout, &part, &np);
            if (r == 0) {
                struct grist_job_info *all = realloc(jobs, (n + np + 1) * sizeof(*all));
                if (all) {
                    memcpy(all + n, part, np * sizeof(*part));
                    jobs = all;
                    n += np;
                } else {
                    r = -ENOMEM;
                }
                free(part);
            }
            if (ck != c)
                grist_client_close(ck);
            if (r < 0)
                address = list[k];
        }
        if (r < 0) {
            free(jobs);
            rc = fail(address, r);
        } else {
            if (g_json) {
                json_t *a = json_array();
                for (uint32_t k = 0; a && k < n; k++)
                    json_array_append_new(a, json_job(&jobs[k]));
                if (json_print(json_pack("{s:o}", "jobs", a)) < 0)
                    rc = fail("jobs", -ENOMEM);
            } else {
                printf("%-32s %8s %8s %10s %8s %8s\n", "job", "workers", "world", "step", "version",
                       "dropped");
                for (uint32_t k = 0; k < n; k++)
                    printf("%-32s %8u %8u %10llu %8llu %8llu\n", jobs[k].id, jobs[k].live_workers,
                           jobs[k].world_size, (unsigned long long)jobs[k].step,
                           (unsigned long long)jobs[k].version,
                           (unsigned long long)jobs[k].dropped_steps);
            }
            free(jobs);
        }
    } else if (!strcmp(cmd, "job") && id) {
        struct grist_job_info info;
        struct grist_group_info *g;
        uint32_t n;
        r = grist_query_job(c, id, g_timeout, &info, &g, &n);
        if (r < 0) {
            rc = fail(id, r);
        } else {
            if (g_json) {
                json_state(&info, g, n);
            } else {
                table_job(&info, g, n);
            }
            free(g);
        }
    } else if (!strcmp(cmd, "watch") && id) {
        struct watch_state w = {isatty(STDOUT_FILENO), 0};
        r = grist_query_watch(c, id, duration, on_watch, &w);
        if (r < 0)
            rc = fail(id, r);
    } else if (!strcmp(cmd, "history") && id) {
        uint64_t *steps;
        double *vals;
        uint32_t n;
        r = grist_query_history(c, id, group, series, from, to, points, g_timeout, &steps, &vals,
                                &n);
        if (r < 0) {
            rc = fail(id, r);
        } else {
            if (g_json) {
                json_t *st = json_array();
                for (uint32_t k = 0; st && k < n; k++)
                    json_array_append_new(st, json_integer((json_int_t)steps[k]));
                if (json_print(json_pack("{s:s,s:I,s:s,s:o,s:o}", "job", id, "group",
                                         (json_int_t)group, "series", series, "steps", st, "values",
                                         jarr(vals, n))) < 0)
                    rc = fail(id, -ENOMEM);
            } else {
                printf("%10s %14s\n", "step", series);
                for (uint32_t k = 0; k < n; k++)
                    printf("%10llu %14.6g\n", (unsigned long long)steps[k], vals[k]);
            }
            free(steps);
            free(vals);
        }
    } else {
        rc = usage();
    }
    grist_client_close(c);
    free(addrs);
    return rc;
}
