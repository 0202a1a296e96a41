/* Leveled logging to stderr (thread-safe: one fprintf per line). */
#ifndef GRIST_DAEMON_LOG_H
#define GRIST_DAEMON_LOG_H

enum grist_log_level { GRIST_LOG_ERROR, GRIST_LOG_WARN, GRIST_LOG_INFO, GRIST_LOG_DEBUG };

void grist__log_set_level(enum grist_log_level lvl);
int grist__log_parse_level(const char *s, enum grist_log_level *out);
void grist__log(enum grist_log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define GRIST_ERR(...) grist__log(GRIST_LOG_ERROR, __VA_ARGS__)
#define GRIST_WARN(...) grist__log(GRIST_LOG_WARN, __VA_ARGS__)
#define GRIST_INFO(...) grist__log(GRIST_LOG_INFO, __VA_ARGS__)
#define GRIST_DEBUG(...) grist__log(GRIST_LOG_DEBUG, __VA_ARGS__)

#endif
