/* DESIGN: leveled logging; any thread; one formatted line per call. */
#include <stdarg.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "log.h"

static enum grist_log_level current = GRIST_LOG_INFO;
static const char *const names[] = {"error", "warn", "info", "debug"};

void grist__log_set_level(enum grist_log_level lvl)
{
    current = lvl;
}

int grist__log_parse_level(const char *s, enum grist_log_level *out)
{
    for (int i = 0; i <= GRIST_LOG_DEBUG; i++)
        if (strcmp(s, names[i]) == 0) {
            *out = (enum grist_log_level)i;
            return 0;
        }
    return -EINVAL;
}

void grist__log(enum grist_log_level lvl, const char *fmt, ...)
{
    if (lvl > current)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    fprintf(stderr, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ gristd %s: %s\n", tm.tm_year + 1900,
            tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
            names[lvl], msg);
}
