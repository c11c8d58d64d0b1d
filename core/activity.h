/* The activity log of proxied calls: records queue in memory and a
 * background thread appends them to the store in batches, so the proxy's
 * hot path never waits on the disk. */
#ifndef PB_CORE_ACTIVITY_H
#define PB_CORE_ACTIVITY_H
#include <jansson.h>

struct pb_activity;
typedef struct pb_store pb_store;

struct pb_activity *pb_activity_start(pb_store *st);
/* Queues one record (stolen), shaped as pb_store_activity_append's. */
void pb_activity_add(struct pb_activity *a, json_t *record);
/* Writes everything queued so far; returns once it is in the store. */
void pb_activity_flush(struct pb_activity *a);
/* Flushes and stops the thread. */
void pb_activity_stop(struct pb_activity *a);
#endif
