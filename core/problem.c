#include "problem.h"
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void pb_problem_clear(struct pb_problem *p)
{
    memset(p, 0, sizeof *p);
}

void pb_problem_free(struct pb_problem *p)
{
    json_decref(p->issues);
    pb_problem_clear(p);
}

static void vset(struct pb_problem *p, unsigned status, const char *slug, const char *title,
                 json_t *issues, const char *fmt, va_list ap)
{
    json_decref(p->issues);
    p->status = status;
    p->retryable = status == 429 || status == 502 || status == 503 || status == 504;
    snprintf(p->slug, sizeof p->slug, "%s", slug);
    snprintf(p->title, sizeof p->title, "%s", title);
    vsnprintf(p->detail, sizeof p->detail, fmt, ap);
    p->issues = issues;
}

void pb_problem_set(struct pb_problem *p, unsigned status, const char *slug, const char *title,
                    json_t *issues, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vset(p, status, slug, title, issues, fmt, ap);
    va_end(ap);
}

void pb_problem_invalid(struct pb_problem *p, const char *in, const char *name,
                        const char *fmt, ...)
{
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    json_t *issues = json_pack("[{s:s, s:s, s:s}]", "in", in, "name", name, "detail", detail);
    pb_problem_set(p, 400, "invalid-request", "Invalid request", issues, "%s: %s", name, detail);
}

int pb_problem_only_keys(const json_t *obj, const char *prefix, const char *const *allowed,
                         struct pb_problem *p)
{
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)obj, key, v) {
        int ok = 0;
        for (const char *const *a = allowed; *a; a++)
            ok |= strcmp(*a, key) == 0;
        if (!ok) {
            char path[256];
            snprintf(path, sizeof path, "%s%s%.100s", prefix, *prefix ? "." : "", key);
            pb_problem_invalid(p, "body", path, "is not a known field");
            return -1;
        }
    }
    return 0;
}
