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
    char backend[16];
    char log_level[16];
    int64_t max_message_bytes;
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
