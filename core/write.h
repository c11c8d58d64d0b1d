/* The Write API (SPEC.md §3): validation, field settings, synchronous
 * writes through the provider's plugin, durable asynchronous writes with
 * retries, and auto batching. */
#ifndef PB_CORE_WRITE_H
#define PB_CORE_WRITE_H
#include <jansson.h>
#include "problem.h"

struct pb_app;
struct pb_writer;

/* Starts the workers that execute asynchronous writes. */
int pb_writer_start(struct pb_app *app, int workers, struct pb_writer **out);
/* Wakes the workers (new work, or a test moved the clock). */
void pb_writer_kick(struct pb_writer *w);
void pb_writer_stop(struct pb_writer *w);

/* POST .../integrations/{i}/objects/{obj}. On success *status is 200 or
 * 422 (a provider's rejection) and *out the response body; on failure the
 * problem is filled. */
int pb_write_request(struct pb_app *app, const char *project_id, const char *integration,
                     const char *object, const json_t *body, unsigned *status, json_t **out,
                     struct pb_problem *p);
#endif
