/*
 * Who hears about a job (publish.c). The registry (jobs.c) reports through
 * its events (struct grist_job_events); this module turns a report into
 * the subscribers' callbacks: a new Hyperparams version to the job's Attach
 * streams, a new evaluation to its WatchJob streams, the job's end to both.
 * The subscriber list hangs off the job (j->subs) but only this module
 * reads or writes it. Loop thread.
 */
#ifndef GRIST_DAEMON_PUBLISH_H
#define GRIST_DAEMON_PUBLISH_H

#include <stddef.h>
#include <stdint.h>

struct grist_job;

struct grist_sub {
    struct grist_sub *next, **pprev; /* on job->subs; pprev NULL: not subscribed */
    struct grist_job *job;
    /* each may be NULL */
    void (*on_version)(struct grist_sub *s, const uint8_t *msg, size_t len); /* new Hyperparams */
    void (*on_state)(struct grist_sub *s, const struct grist_job *j); /* a new evaluation */
    void (*on_gone)(struct grist_sub *s); /* the job expired; s is already unsubscribed */
};

/** Subscribe s (its callbacks set) to job j. */
void grist__publish_join(struct grist_job *j, struct grist_sub *s);
/** Unsubscribe; idempotent. */
void grist__publish_leave(struct grist_sub *s);

/* The registry's events (ud unused): wired in main.c. A callback may
 * unsubscribe its own s. */
void grist__publish_version(void *ud, struct grist_job *j);
void grist__publish_state(void *ud, struct grist_job *j);
void grist__publish_gone(void *ud, struct grist_job *j);

#endif
