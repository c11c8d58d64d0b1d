#include "activity.h"
#include "log.h"
#include "store.h"
#include "util.h"
#include <pthread.h>
#include <time.h>

#define BATCH_MAX 500
#define QUEUE_MAX 100000  /* beyond this, records are dropped and counted */

struct pb_activity {
    pb_store *store;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t wake, flushed;
    json_t *queue;          /* array of records */
    unsigned long long written, wanted, dropped;
    int stop;
};

static void *run(void *arg)
{
    struct pb_activity *a = arg;
    pthread_mutex_lock(&a->mu);
    for (;;) {
        while (!a->stop && json_array_size(a->queue) == 0) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 200 * 1000 * 1000;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&a->wake, &a->mu, &ts);
        }
        if (json_array_size(a->queue) == 0 && a->stop)
            break;
        json_t *batch = a->queue;
        a->queue = json_array();
        pthread_mutex_unlock(&a->mu);
        size_t n = json_array_size(batch);
        for (size_t off = 0; off < n; off += BATCH_MAX) {
            json_t *part = json_array();
            for (size_t i = off; i < n && i < off + BATCH_MAX; i++)
                json_array_append(part, json_array_get(batch, i));
            if (pb_store_activity_append(a->store, part) != 0)
                pb_logf(PB_LOG_WARN, "activity: %zu records could not be stored",
                        json_array_size(part));
            json_decref(part);
        }
        json_decref(batch);
        pthread_mutex_lock(&a->mu);
        a->written += n;
        pthread_cond_broadcast(&a->flushed);
    }
    pthread_cond_broadcast(&a->flushed);
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

struct pb_activity *pb_activity_start(pb_store *st)
{
    struct pb_activity *a = pb_xcalloc(1, sizeof *a);
    a->store = st;
    a->queue = json_array();
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->wake, NULL);
    pthread_cond_init(&a->flushed, NULL);
    if (pthread_create(&a->thread, NULL, run, a) != 0) {
        json_decref(a->queue);
        free(a);
        return NULL;
    }
    return a;
}

void pb_activity_add(struct pb_activity *a, json_t *record)
{
    if (!a) {
        json_decref(record);
        return;
    }
    pthread_mutex_lock(&a->mu);
    /* A record that could not be built (NULL) must not be counted as wanted:
     * pb_activity_flush would wait for it forever. */
    if (!record || json_array_size(a->queue) >= QUEUE_MAX) {
        a->dropped++;
        json_decref(record);
    } else {
        json_array_append_new(a->queue, record);
        a->wanted++;
        if (json_array_size(a->queue) >= BATCH_MAX)
            pthread_cond_signal(&a->wake);
    }
    pthread_mutex_unlock(&a->mu);
}

void pb_activity_flush(struct pb_activity *a)
{
    if (!a)
        return;
    pthread_mutex_lock(&a->mu);
    unsigned long long target = a->wanted;
    pthread_cond_signal(&a->wake);
    while (a->written < target && !a->stop)
        pthread_cond_wait(&a->flushed, &a->mu);
    pthread_mutex_unlock(&a->mu);
}

void pb_activity_stop(struct pb_activity *a)
{
    if (!a)
        return;
    pthread_mutex_lock(&a->mu);
    a->stop = 1;
    pthread_cond_signal(&a->wake);
    pthread_mutex_unlock(&a->mu);
    pthread_join(a->thread, NULL);
    if (a->dropped)
        pb_logf(PB_LOG_WARN, "activity: %llu records dropped (queue full)", a->dropped);
    json_decref(a->queue);
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->wake);
    pthread_cond_destroy(&a->flushed);
    free(a);
}
