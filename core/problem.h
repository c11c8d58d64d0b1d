/* A problem (RFC 9457) built by the engines and rendered by the server as
 * application/problem+json, or by the CLI as one line on stderr. */
#ifndef PB_CORE_PROBLEM_H
#define PB_CORE_PROBLEM_H
#include <jansson.h>
#include "plugboard/plugin.h"

struct pb_problem {
    unsigned status;         /* 0 while no problem was set */
    char slug[48];           /* becomes urn:plugboard:problem:<slug> */
    char title[96];
    char detail[600];
    int retryable;
    json_t *issues;          /* owned: [{in, name, value?, detail}] or NULL */
};

/* Sets the problem; `issues` is stolen (may be NULL). */
void pb_problem_set(struct pb_problem *p, unsigned status, const char *slug, const char *title,
                    json_t *issues, const char *fmt, ...) PB_PRINTF(6, 7);
/* A 400 with one validation issue naming the field. */
void pb_problem_invalid(struct pb_problem *p, const char *in, const char *name,
                        const char *fmt, ...) PB_PRINTF(4, 5);
/* A 400 naming the first key of obj not in `allowed` (NULL-terminated);
 * prefix is the field path of obj ("" at the top). 0 when all are known. */
int pb_problem_only_keys(const json_t *obj, const char *prefix, const char *const *allowed,
                         struct pb_problem *p);
void pb_problem_clear(struct pb_problem *p);
/* Frees issues and resets. */
void pb_problem_free(struct pb_problem *p);
#endif
