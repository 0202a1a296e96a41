/*
 * gristd configuration: one declarative table (config.c) drives the command
 * line flags, the optional config file (key = value lines) and --help.
 */
#ifndef GRIST_DAEMON_CONFIG_H
#define GRIST_DAEMON_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#define GRIST_MAX_LISTENERS 4

struct grist_config {
    char listen[GRIST_MAX_LISTENERS][256];
    int nlisten;
    int listen_from_flags; /* internal: a --listen flag replaced the list */
    int ready_fd;
    char http[256];
    int64_t metrics_max_jobs;
    char backend[16];
    char log_level[16];
    int64_t max_message_bytes;
    int64_t max_jobs;
    int64_t max_groups;
    int64_t max_workers;
    int64_t max_step_jump;
    int64_t max_sketch_dim;
    int64_t compute_queue;
    double compute_lag;
    int64_t compute_threads;
    int64_t cov_dim;
    int64_t lags;
    int64_t cov_batch;
    int64_t solve_every;
    int64_t families_every;
    double families_interval; /* s, the time floor of family solves */
    double families_idle_interval; /* s, the same for a job nobody has read that long */
    int64_t min_steps;
    int64_t hysteresis_h;
    int64_t history;
    int64_t blas_threads;
    double ema_gamma;
    double hysteresis_z;
    double j_ema;
    double beta_min;
    double beta_max;
    double aggregation_timeout;
    double idle_expiry;
    double hello_timeout;
    double memory_budget, job_memory_budget;
    double http_idle_timeout;
    char mode[16];
    char noise_correction[16];
    char lr_coupling[16];
    char select_on[16];
    char rule[16];
    double hysteresis_z_fast;
    double horizon_step;
    char state_dir[1024];
    double snapshot_interval;
    double listener_probe;
    char tls_cert[1024], tls_key[1024], tls_client_ca[1024];
    char tokens[1024];
    int insecure;
    double empty_job_expiry;
    double max_summary_rate;
    int64_t max_streams_per_peer, max_streams_per_token;
    double job_create_rate;
    int64_t job_create_burst;
    char shard[32];
    char shard_peers[8192];
};

/** Fill every field with its default from the table. */
void grist__config_defaults(struct grist_config *cfg);

/**
 * Parse argv (and a --config file if one is named; flags win over the file).
 *
 * @return 0 to run; 1 when --help or --version printed and the daemon should
 *         exit 0; -EINVAL on a bad option (a message went to stderr).
 */
int grist__config_parse(struct grist_config *cfg, int argc, char **argv);

/** Print --help: every option with its type, default and bounds. */
void grist__config_help(FILE *f);

#endif
