/*
 * DESIGN: the configuration table. Each row names an option, its type,
 * default, bounds and help; the same rows parse flags ("--name value" or
 * "--name=value"), parse the config file ("name = value", '#' comments) and
 * print --help, so the three cannot disagree. Runs on the main thread
 * before the loop starts.
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "grist_config.h"

enum opt_type { OPT_STR, OPT_INT, OPT_DBL, OPT_LISTEN, OPT_BOOL };

struct opt {
    const char *name;
    enum opt_type type;
    size_t off;
    size_t size; /* strings */
    const char *def;
    double min, max;
    const char *help;
};

#define F(field) offsetof(struct grist_config, field), sizeof(((struct grist_config *)0)->field)

static const struct opt table[] = {
    {"listen", OPT_LISTEN, F(listen), "127.0.0.1:7788", 0, 0,
     "address to serve gRPC on: HOST:PORT (port 0 picks a free port) or unix:PATH; "
     "repeat for more listeners (at most 4)"},
    {"ready-fd", OPT_INT, F(ready_fd), "-1", -1, 1 << 20,
     "once listening, write 'grpc <bound address>' per listener to this fd, then close it"},
    {"http", OPT_STR, F(http), "", 0, 0,
     "serve /metrics (Prometheus), /api/v1 (JSON) and the dashboard page / on HOST:PORT "
     "(port 0 picks a free port; the ready fd also gets 'http <bound address>'); off when empty"},
    {"http-idle-timeout", OPT_DBL, F(http_idle_timeout), "10", 0.1, 3600,
     "seconds an HTTP connection may stay open without completing a request (idle keep-alive or a trickling request)"},
    {"metrics-max-jobs", OPT_INT, F(metrics_max_jobs), "100", 0, 1 << 20,
     "jobs with per-group series in /metrics (bounds the cardinality; the rest are counted)"},
    {"state-dir", OPT_STR, F(state_dir), "", 0, 0,
     "keep every job's state in this directory (one file per job, written atomically every "
     "--snapshot-interval and at SIGTERM; restored at start); off when empty"},
    {"snapshot-interval", OPT_DBL, F(snapshot_interval), "10", 0.05, 86400,
     "seconds between snapshots of the jobs that changed (what a SIGKILL can lose)"},
    {"listener-probe", OPT_DBL, F(listener_probe), "5", 0, 3600,
     "seconds between probes of each listener (an HTTP/2 preface to itself); three without an "
     "answer (gRPC stops accepting after EMFILE) make health NOT_SERVING and gristd exit 1 "
     "after an ordered shutdown; 0 = off"},
    {"tls-cert", OPT_STR, F(tls_cert), "", 0, 0,
     "PEM certificate chain: gRPC and --http serve TLS (1.2 or later) with it; reloaded on "
     "SIGHUP, open connections untouched"},
    {"tls-key", OPT_STR, F(tls_key), "", 0, 0, "PEM private key of --tls-cert"},
    {"tls-client-ca", OPT_STR, F(tls_client_ca), "", 0, 0,
     "PEM CA bundle: clients must present a certificate it signed (mTLS), on gRPC and --http"},
    {"tokens", OPT_STR, F(tokens), "", 0, 0,
     "bearer tokens, one 'TOKEN ROLE JOB_GLOB' per line (ROLE: worker, reader or admin; "
     "docs/SECURITY.md); every call but health then needs one; reloaded on SIGHUP"},
    {"insecure", OPT_BOOL, F(insecure), "false", 0, 0,
     "allow --listen or --http on a non-loopback address without TLS (refused otherwise)"},
    {"empty-job-expiry", OPT_DBL, F(empty_job_expiry), "60", 1, 1e9,
     "seconds without workers after which a job that never sent a summary is dropped "
     "(throw-away Hellos cannot fill --max-jobs)"},
    {"max-summary-rate", OPT_DBL, F(max_summary_rate), "20000", 0, 1e9,
     "summaries per second one job may send (a burst of one second's worth); past it the "
     "stream ends with RESOURCE_EXHAUSTED and the message is not applied; 0 = no limit"},
    {"max-streams-per-peer", OPT_INT, F(max_streams_per_peer), "4096", 1, 1 << 24,
     "Attach streams open at once from one client address (all unix-socket clients are one)"},
    {"max-streams-per-token", OPT_INT, F(max_streams_per_token), "4096", 1, 1 << 24,
     "Attach streams open at once with one token (--tokens)"},
    {"job-create-rate", OPT_DBL, F(job_create_rate), "16", 0.001, 1e9,
     "jobs per second one client address may create, after a burst of --job-create-burst"},
    {"job-create-burst", OPT_INT, F(job_create_burst), "512", 1, 1 << 24,
     "jobs one client address may create at once before --job-create-rate applies"},
    {"shard", OPT_STR, F(shard), "", 0, 0,
     "I/N: this replica is shard I of N and serves only the jobs whose id hashes to I "
     "(rendezvous hashing, the clients compute the same); others get FAILED_PRECONDITION "
     "naming their shard; empty = not sharded"},
    {"shard-peers", OPT_STR, F(shard_peers), "", 0, 0,
     "ADDR0,ADDR1,...: the N replicas' addresses in shard order; a refused Hello then names "
     "the right replica's address and libgrist reconnects there"},
    {"backend", OPT_STR, F(backend), "auto", 0, 0,
     "kernels backend: auto (first usable of cuda, cpu, ref), cuda, cpu or ref"},
    {"log-level", OPT_STR, F(log_level), "info", 0, 0, "error, warn, info or debug"},
    {"max-message-bytes", OPT_INT, F(max_message_bytes), "67108864", 1024, 1 << 30,
     "largest gRPC message accepted or sent"},
    {"max-jobs", OPT_INT, F(max_jobs), "1024", 1, 1 << 20,
     "jobs served at once; a Hello for one more is refused with RESOURCE_EXHAUSTED"},
    {"max-groups", OPT_INT, F(max_groups), "256", 1, 65536, "parameter groups per job"},
    {"max-workers", OPT_INT, F(max_workers), "4096", 1, 1 << 20, "world size of a job"},
    {"max-step-jump", OPT_INT, F(max_step_jump), "1048576", 1, INT64_C(1) << 40,
     "largest forward jump of a job's step numbers; a summary further ahead is refused"},
    {"max-sketch-dim", OPT_INT, F(max_sketch_dim), "65536", 64, 65536,
     "largest sketch dimension m a worker may choose"},
    {"compute-queue", OPT_INT, F(compute_queue), "4096", 16, 1 << 20,
     "aggregated steps waiting for the compute thread; beyond it steps are dropped and counted"},
    {"compute-lag", OPT_DBL, F(compute_lag), "1", 0, 3600,
     "seconds the oldest queued step may wait before its compute thread counts as behind (so does "
     "a half-full queue); then a job holding more than 1/N of the queued work (N jobs on the thread) sheds its new steps; 0 = no fair share"},
    {"compute-threads", OPT_INT, F(compute_threads), "2", 1, 16,
     "compute threads, each with its own kernels backend; jobs are spread over them in admission order"},
    {"cov-dim", OPT_INT, F(cov_dim), "256", 0, 65536,
     "fold the sketch covariance to this many dimensions (power of two; 0 = no covariance)"},
    {"lags", OPT_INT, F(lags), "16", 2, 64, "autocorrelation lags L"},
    {"cov-batch", OPT_INT, F(cov_batch), "16", 1, 256, "steps per rank-b covariance update"},
    {"solve-every", OPT_INT, F(solve_every), "10", 1, 1 << 20,
     "steps between selections (a job may ask for its own); family solves: --families-every"},
    {"families-every", OPT_INT, F(families_every), "50", 1, 1 << 20,
     "steps between family solves (one eigendecomposition per group; at most as often as solve-every)"},
    {"families-interval", OPT_DBL, F(families_interval), "5", 0, 86400,
     "seconds between a job's family solves at the least, whatever its step rate, while someone reads the job (0 = every --families-every steps, read or not)"},
    {"families-idle-interval", OPT_DBL, F(families_idle_interval), "60", 0, 86400,
     "the same floor for a job nobody has read (GetJob, WatchJob, GetHistory, the HTTP job views) for that long; at least --families-interval"},
    {"min-steps", OPT_INT, F(min_steps), "20", 0, 1 << 20, "no push before this many steps"},
    {"hysteresis-h", OPT_INT, F(hysteresis_h), "1", 1, 1000,
     "consecutive evaluations that must agree before beta moves"},
    {"history", OPT_INT, F(history), "2048", 16, 1 << 22,
     "points of history kept per group: the whole run, thinned to every other point when full"},
    {"blas-threads", OPT_INT, F(blas_threads), "1", 1, 256, "threads of the host BLAS"},
    {"ema-gamma", OPT_DBL, F(ema_gamma), "0.95", 0.5, 0.9999, "EMA decay of every statistic"},
    {"j-ema", OPT_DBL, F(j_ema), "0", 0, 0.9999,
     "EMA decay of the alignment J before each argmax (MATH.md 5; 0 = off)"},
    {"hysteresis-z", OPT_DBL, F(hysteresis_z), "2", 0, 100,
     "standard errors by which the best candidate must lead"},
    {"beta-min", OPT_DBL, F(beta_min), "0", 0, 0.9999, "smallest beta ever pushed"},
    {"beta-max", OPT_DBL, F(beta_max), "0.995", 0, 0.9999, "largest beta ever pushed"},
    {"aggregation-timeout", OPT_DBL, F(aggregation_timeout), "2", 0.001, 3600,
     "seconds to wait for every rank of a step before aggregating those that reported"},
    {"memory-budget", OPT_DBL, F(memory_budget), "0", 0, 1e9,
     "MiB of job statistics the daemon holds at most (0 = half of the physical memory); a new job past it is refused with RESOURCE_EXHAUSTED"},
    {"job-memory-budget", OPT_DBL, F(job_memory_budget), "1024", 1, 1e9,
     "MiB of statistics one job may need (groups x sketch_dim x candidates, lags, covariance); a larger job is refused"},
    {"hello-timeout", OPT_DBL, F(hello_timeout), "10", 0.05, 3600,
     "seconds an Attach stream may stay open without its Hello (then DEADLINE_EXCEEDED)"},
    {"idle-expiry", OPT_DBL, F(idle_expiry), "3600", 1, 1e9,
     "seconds after its last worker left before a job and its statistics are dropped"},
    {"mode", OPT_STR, F(mode), "per_group", 0, 0, "per_group or global"},
    {"noise-correction", OPT_STR, F(noise_correction), "auto", 0, 0,
     "off, workers, acf, lag1 or auto (auto: workers with >= 2 ranks, else lag1 under the curvature rule, acf under alignment)"},
    {"lr-coupling", OPT_STR, F(lr_coupling), "none", 0, 0,
     "none, dc, energy, radius or greedy (none chosen from the lr sweep in docs/QUALITY.md; greedy: docs/MATH.md 6.1)"},
    {"select-on", OPT_STR, F(select_on), "train", 0, 0, "train or validation"},
    {"rule", OPT_STR, F(rule), "curvature", 0, 0,
     "selection rule: curvature (second-order greedy, docs/MATH.md 5.4) or alignment (the paper's)"},
    {"hysteresis-z-fast", OPT_DBL, F(hysteresis_z_fast), "4", 0, 100,
     "curvature rule: a lead of this many standard errors moves at once (0 = off)"},
    {"horizon-step", OPT_DBL, F(horizon_step), "2", 1.01, 1000,
     "curvature rule: one move changes the averaging horizon 1/(1-beta) by at most this factor"},
};

#define NOPT (sizeof(table) / sizeof(table[0]))

static const struct opt *find(const char *name, size_t len)
{
    for (size_t i = 0; i < NOPT; i++)
        if (strlen(table[i].name) == len && strncmp(table[i].name, name, len) == 0)
            return &table[i];
    return NULL;
}

static int set(struct grist_config *cfg, const struct opt *o, const char *val, int from_file)
{
    char *base = (char *)cfg + o->off;
    char *end;
    switch (o->type) {
    case OPT_STR:
        if (strlen(val) >= o->size)
            goto bad;
        strcpy(base, val);
        return 0;
    case OPT_LISTEN: {
        /* a flag replaces the file's/default list on first use */
        if (!from_file && !cfg->listen_from_flags) {
            cfg->listen_from_flags = 1;
            cfg->nlisten = 0;
        }
        if (cfg->nlisten >= GRIST_MAX_LISTENERS || strlen(val) >= sizeof(cfg->listen[0]) ||
            val[0] == '\0')
            goto bad;
        strcpy(cfg->listen[cfg->nlisten++], val);
        return 0;
    }
    case OPT_BOOL:
        if (strcmp(val, "true") == 0 || strcmp(val, "1") == 0 || strcmp(val, "yes") == 0)
            *(int *)base = 1;
        else if (strcmp(val, "false") == 0 || strcmp(val, "0") == 0 || strcmp(val, "no") == 0)
            *(int *)base = 0;
        else
            goto bad;
        return 0;
    case OPT_INT: {
        errno = 0;
        long long v = strtoll(val, &end, 0);
        if (errno || *end || end == val || v < o->min || v > o->max)
            goto bad;
        if (o->size == sizeof(int))
            *(int *)base = (int)v;
        else
            *(int64_t *)base = v;
        return 0;
    }
    case OPT_DBL: {
        errno = 0;
        double v = strtod(val, &end);
        if (errno || *end || end == val || v < o->min || v > o->max)
            goto bad;
        *(double *)base = v;
        return 0;
    }
    }
bad:
    fprintf(stderr, "gristd: bad value '%s' for %s (see --help)\n", val, o->name);
    return -EINVAL;
}

void grist__config_defaults(struct grist_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < NOPT; i++) {
        if (table[i].type == OPT_LISTEN) {
            strcpy(cfg->listen[0], table[i].def);
            cfg->nlisten = 1;
        } else {
            set(cfg, &table[i], table[i].def, 1);
        }
    }
}

void grist__config_help(FILE *f)
{
    fprintf(f,
            "usage: gristd [OPTIONS]\n\n"
            "grist " GRIST_VERSION ": gradient-statistics sidecar daemon.\n"
            "Options (also accepted as 'name = value' lines in --config FILE):\n\n");
    fprintf(f, "  --config FILE\n      read options from FILE first; flags override it\n");
    for (size_t i = 0; i < NOPT; i++) {
        const struct opt *o = &table[i];
        const char *t = o->type == OPT_INT ? "INT" : o->type == OPT_DBL ? "NUM" : "STR";
        if (o->type == OPT_BOOL)
            fprintf(f, "  --%s (a flag; in a file: %s = true", o->name, o->name);
        else
            fprintf(f, "  --%s %s (default: %s", o->name, t, o->def);
        if (o->type == OPT_INT)
            fprintf(f, "; range %.0f..%.0f", o->min, o->max);
        else if (o->type == OPT_DBL)
            fprintf(f, "; range %g..%g", o->min, o->max);
        fprintf(f, ")\n      %s\n", o->help);
    }
    fprintf(f,
            "  --help\n      print this and exit\n  --version\n      print the version and exit\n");
}

static int parse_file(struct grist_config *cfg, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "gristd: cannot open config file %s: %s\n", path, strerror(errno));
        return -EINVAL;
    }
    char line[1024];
    int lineno = 0, r = 0;
    while (r == 0 && fgets(line, sizeof(line), f)) {
        lineno++;
        char *p = line;
        p[strcspn(p, "#\r\n")] = '\0';
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0')
            continue;
        char *eq = strchr(p, '=');
        if (!eq) {
            fprintf(stderr, "gristd: %s:%d: expected 'name = value'\n", path, lineno);
            r = -EINVAL;
            break;
        }
        char *k_end = eq;
        while (k_end > p && (k_end[-1] == ' ' || k_end[-1] == '\t'))
            k_end--;
        char *v = eq + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        char *v_end = v + strlen(v);
        while (v_end > v && (v_end[-1] == ' ' || v_end[-1] == '\t'))
            *--v_end = '\0';
        const struct opt *o = find(p, (size_t)(k_end - p));
        if (!o) {
            fprintf(stderr, "gristd: %s:%d: unknown option '%.*s'\n", path, lineno,
                    (int)(k_end - p), p);
            r = -EINVAL;
            break;
        }
        if (o->type == OPT_LISTEN && cfg->nlisten == 1 && strcmp(cfg->listen[0], o->def) == 0)
            cfg->nlisten = 0; /* the file's first listen replaces the default */
        r = set(cfg, o, v, 1);
    }
    fclose(f);
    return r;
}

int grist__config_parse(struct grist_config *cfg, int argc, char **argv)
{
    /* config file first, so that flags override it */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--config") == 0 && i + 1 < argc) {
            if (parse_file(cfg, argv[i + 1]) < 0)
                return -EINVAL;
        } else if (strncmp(a, "--config=", 9) == 0) {
            if (parse_file(cfg, a + 9) < 0)
                return -EINVAL;
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            grist__config_help(stdout);
            return 1;
        }
        if (strcmp(a, "--version") == 0) {
            printf("gristd " GRIST_VERSION "\n");
            return 1;
        }
        if (strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "gristd: unexpected argument '%s' (see --help)\n", a);
            return -EINVAL;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        const size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const char *val = eq ? eq + 1 : NULL;
        if (len == 6 && strncmp(name, "config", 6) == 0) {
            if (!val)
                i++;
            continue;
        }
        const struct opt *o = find(name, len);
        if (!o) {
            fprintf(stderr, "gristd: unknown option '%s' (see --help)\n", a);
            return -EINVAL;
        }
        if (!val && o->type == OPT_BOOL)
            val = "true"; /* a flag takes no value; --name=false turns it off */
        if (!val) {
            if (i + 1 >= argc) {
                fprintf(stderr, "gristd: option --%s needs a value\n", o->name);
                return -EINVAL;
            }
            val = argv[++i];
        }
        if (set(cfg, o, val, 0) < 0)
            return -EINVAL;
    }
    return 0;
}
