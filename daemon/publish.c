/*
 * DESIGN: the fan-out of a job's news to its subscribers (publish.h).
 * A subscriber list per job, doubly linked through pprev so that leaving is
 * O(1); callbacks run in list order, and one may leave (itself) while the
 * list is walked: the next one is read before it runs. Loop thread.
 */
#include <stddef.h>

#include "jobs.h"
#include "publish.h"

void grist__publish_join(struct grist_job *j, struct grist_sub *s)
{
    grist__publish_leave(s);
    s->job = j;
    s->next = j->subs;
    if (j->subs)
        j->subs->pprev = &s->next;
    s->pprev = &j->subs;
    j->subs = s;
}

void grist__publish_leave(struct grist_sub *s)
{
    if (!s->pprev)
        return;
    *s->pprev = s->next;
    if (s->next)
        s->next->pprev = s->pprev;
    s->next = NULL;
    s->pprev = NULL;
    s->job = NULL;
}

void grist__publish_version(void *ud, struct grist_job *j)
{
    (void)ud;
    for (struct grist_sub *s = j->subs, *next; s; s = next) {
        next = s->next;
        if (s->on_version)
            s->on_version(s, j->push_msg, j->push_len);
    }
}

void grist__publish_state(void *ud, struct grist_job *j)
{
    (void)ud;
    for (struct grist_sub *s = j->subs, *next; s; s = next) {
        next = s->next;
        if (s->on_state)
            s->on_state(s, j);
    }
}

void grist__publish_gone(void *ud, struct grist_job *j)
{
    (void)ud;
    while (j->subs) {
        struct grist_sub *s = j->subs;
        grist__publish_leave(s);
        if (s->on_gone)
            s->on_gone(s);
    }
}
