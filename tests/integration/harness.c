/* DESIGN: see harness.h. The daemon is exec'd with a pipe's write end as
 * its ready fd; we read until EOF, which the daemon causes by closing it. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "grpc/health/v1/health.pb-c.h"
#include "harness.h"

int gristd_start(struct gristd_proc *p, const char *const *args)
{
    memset(p, 0, sizeof(*p));
    const char *bin = getenv("GRISTD");
    if (!bin) {
        fprintf(stderr, "harness: GRISTD is not set\n");
        return -1;
    }
    int fds[2];
    if (pipe(fds) < 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        close(fds[0]);
        char fdbuf[16];
        snprintf(fdbuf, sizeof(fdbuf), "%d", fds[1]);
        const char *argv[48];
        int n = 0;
        /* GRISTD_WRAPPER="valgrind --error-exitcode=99 ..." runs the daemon under a tool */
        static char wrap[512];
        const char *wr = getenv("GRISTD_WRAPPER");
        if (wr && *wr) {
            snprintf(wrap, sizeof(wrap), "%s", wr);
            for (char *t = strtok(wrap, " "); t && n < 16; t = strtok(NULL, " "))
                argv[n++] = t;
        }
        argv[n++] = bin;
        for (int i = 0; args && args[i] && n < 28; i++)
            argv[n++] = args[i];
        argv[n++] = "--ready-fd";
        argv[n++] = fdbuf;
        argv[n] = NULL;
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    p->pid = pid;
    char buf[2048];
    size_t len = 0;
    for (;;) {
        ssize_t r = read(fds[0], buf + len, sizeof(buf) - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    close(fds[0]);
    buf[len] = '\0';
    for (char *line = strtok(buf, "\n"); line && p->naddr < GRIST_TEST_MAX_ADDR;
         line = strtok(NULL, "\n")) {
        if (strncmp(line, "grpc ", 5) == 0)
            snprintf(p->addr[p->naddr++], sizeof(p->addr[0]), "%s", line + 5);
        else if (strncmp(line, "http ", 5) == 0)
            snprintf(p->http, sizeof(p->http), "%s", line + 5);
    }
    return p->naddr > 0 ? 0 : -1;
}

int gristd_stop(struct gristd_proc *p, int sig)
{
    if (p->pid <= 0)
        return -1;
    if (sig)
        kill(p->pid, sig);
    int st;
    while (waitpid(p->pid, &st, 0) < 0 && errno == EINTR)
        ;
    p->pid = 0;
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    return 128 + WTERMSIG(st);
}

grpc_status_code rpc_unary(const char *target, const char *method, const void *req, size_t req_len,
                           void **resp, size_t *resp_len, char *details, size_t details_size,
                           double timeout_s)
{
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    grpc_channel *ch = grpc_channel_create(target, creds, NULL);
    grpc_channel_credentials_release(creds);
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    gpr_timespec deadline =
        gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
                     gpr_time_from_millis((int64_t)(timeout_s * 1000), GPR_TIMESPAN));
    grpc_slice m = grpc_slice_from_copied_string(method);
    grpc_call *call =
        grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, m, NULL, deadline, NULL);
    grpc_slice_unref(m);

    grpc_slice s = grpc_slice_from_copied_buffer(req, req_len);
    grpc_byte_buffer *send = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    grpc_byte_buffer *recv = NULL;
    grpc_metadata_array init_md, trail_md;
    grpc_metadata_array_init(&init_md);
    grpc_metadata_array_init(&trail_md);
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice status_details;
    grpc_op ops[6];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &init_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trail_md;
    ops[5].data.recv_status_on_client.status = &status;
    ops[5].data.recv_status_on_client.status_details = &status_details;
    int tag;
    if (grpc_call_start_batch(call, ops, 6, &tag, NULL) == GRPC_CALL_OK) {
        grpc_event ev =
            grpc_completion_queue_pluck(cq, &tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        (void)ev;
        if (details) {
            char *d = grpc_slice_to_c_string(status_details);
            snprintf(details, details_size, "%s", d);
            gpr_free(d);
        }
        grpc_slice_unref(status_details);
    }
    if (resp) {
        *resp = NULL;
        *resp_len = 0;
        if (recv) {
            grpc_byte_buffer_reader rd;
            grpc_byte_buffer_reader_init(&rd, recv);
            grpc_slice all = grpc_byte_buffer_reader_readall(&rd);
            *resp_len = GRPC_SLICE_LENGTH(all);
            *resp = malloc(*resp_len + 1);
            memcpy(*resp, GRPC_SLICE_START_PTR(all), *resp_len);
            grpc_slice_unref(all);
            grpc_byte_buffer_reader_destroy(&rd);
        }
    }
    if (recv)
        grpc_byte_buffer_destroy(recv);
    grpc_byte_buffer_destroy(send);
    grpc_metadata_array_destroy(&init_md);
    grpc_metadata_array_destroy(&trail_md);
    grpc_call_unref(call);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(cq);
    grpc_channel_destroy(ch);
    return status;
}

int health_check(const char *target, const char *service)
{
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = (char *)service;
    unsigned char buf[512];
    size_t len = grpc__health__v1__health_check_request__pack(&req, buf);
    void *resp;
    size_t resp_len;
    grpc_status_code st = rpc_unary(target, "/grpc.health.v1.Health/Check", buf, len, &resp,
                                    &resp_len, NULL, 0, 10.0);
    if (st != GRPC_STATUS_OK) {
        free(resp);
        return -(int)st;
    }
    Grpc__Health__V1__HealthCheckResponse *r =
        grpc__health__v1__health_check_response__unpack(NULL, resp_len, resp);
    free(resp);
    if (!r)
        return -1000;
    int out = (int)r->status;
    grpc__health__v1__health_check_response__free_unpacked(r, NULL);
    return out;
}

long proc_status_kb(pid_t pid, const char *key)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    const size_t kl = strlen(key);
    long kb = -1;
    while (f && fgets(line, sizeof(line), f))
        if (strncmp(line, key, kl) == 0 && line[kl] == ':' &&
            sscanf(line + kl + 1, "%ld kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb;
}

double gristd_metric(const struct gristd_proc *p, const char *name)
{
    const char *colon = strrchr(p->http, ':');
    if (!p->http[0] || !colon)
        return NAN;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    if (inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr) != 1)
        return NAN;
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return NAN;
    static const char req[] = "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        write(fd, req, sizeof(req) - 1) != (ssize_t)sizeof(req) - 1) {
        close(fd);
        return NAN;
    }
    enum { CAP = 1 << 20 };
    char *buf = malloc(CAP);
    size_t n = 0;
    ssize_t k;
    while (buf && n < CAP - 1 && (k = read(fd, buf + n, CAP - 1 - n)) > 0)
        n += (size_t)k;
    close(fd);
    if (!buf)
        return NAN;
    buf[n] = '\0';
    char key[160];
    snprintf(key, sizeof(key), "\n%s ", name);
    const char *at = strstr(buf, key);
    const double v = at ? strtod(at + strlen(key), NULL) : NAN;
    free(buf);
    return v;
}

double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
