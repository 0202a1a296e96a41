/* Integration test helpers: start the real gristd on a free port and wait
 * on its readiness fd (never on sleep), and make gRPC core client calls. */
#ifndef GRIST_TEST_HARNESS_H
#define GRIST_TEST_HARNESS_H

#include <grpc/grpc.h>
#include <stddef.h>
#include <sys/types.h>

#define GRIST_TEST_MAX_ADDR 4

struct gristd_proc {
    pid_t pid;
    int naddr;
    char addr[GRIST_TEST_MAX_ADDR][300]; /* from the ready fd, "grpc " stripped */
    char http[300]; /* the "http HOST:PORT" line's address, or "" */
};

/* Start $GRISTD with the given extra arguments (NULL-terminated) plus
 * --ready-fd; returns 0 once every ready line arrived and the fd closed. */
int gristd_start(struct gristd_proc *p, const char *const *args);
/* Send sig and wait; returns the exit status (or 128 + signal). */
int gristd_stop(struct gristd_proc *p, int sig);

/* A "key: N kB" line of /proc/PID/status ("VmRSS", "VmHWM"); -1 if absent. */
long proc_status_kb(pid_t pid, const char *key);
/* A sample without labels ("name value") from GET /metrics on p's http
 * address; NAN when gristd has no http listener, cannot be reached, or
 * does not report it. */
double gristd_metric(const struct gristd_proc *p, const char *name);
/* Seconds on the monotonic clock. */
double mono_s(void);

/* One unary call; *resp is malloc'd (NULL when no message came). */
grpc_status_code rpc_unary(const char *target, const char *method, const void *req, size_t req_len,
                           void **resp, size_t *resp_len, char *details, size_t details_size,
                           double timeout_s);

/* Health/Check of service ("" for the server); returns the serving status
 * (1 SERVING, 2 NOT_SERVING) or -grpc_status on a failed call. */
int health_check(const char *target, const char *service);

#endif
