#include "auth.h"
#include "app.h"
#include "cache.h"
#include "control.h"
#include <string.h>
#include <strings.h>

const char *pb_auth_key_of(struct pb_request *r)
{
    const char *k = pb_req_get_header(r, "x-api-key");
    if (k && *k)
        return k;
    const char *auth = pb_req_get_header(r, "Authorization");
    if (auth && strncasecmp(auth, "Bearer ", 7) == 0 && auth[7])
        return auth + 7;
    return NULL;
}

int pb_auth_key(struct pb_request *r, int *rc)
{
    const char *key = pb_auth_key_of(r);
    if (!key) {
        *rc = pb_reply_problem(r, 401, "unauthenticated", "Unauthenticated",
                               "send an API key in x-api-key or Authorization: Bearer", 0,
                               json_pack("[o]", pb_issue("header", "x-api-key", "missing")));
        return -1;
    }
    int bad = r->app->cache
                  ? pb_cache_key_project(r->app->cache, key, r->project_id, sizeof r->project_id)
                  : (pb_ctl_authenticate(r->app, key, r->project_id, sizeof r->project_id) == 0
                         ? 0
                         : PB_STORE_NOTFOUND);
    if (bad == PB_STORE_ERR) {
        r->project_id[0] = '\0';
        *rc = pb_reply_problem(r, 503, "store-unavailable", "Store unavailable",
                               "the API key could not be checked; try again", 1, NULL);
        return -1;
    }
    if (bad != 0) {
        r->project_id[0] = '\0';
        *rc = pb_reply_problem(r, 401, "unauthenticated", "Unauthenticated",
                               "the API key is not valid", 0,
                               json_pack("[o]", pb_issue("header", "x-api-key", "not a valid key")));
        return -1;
    }
    return 0;
}

int pb_reply_from_problem(struct pb_request *r, struct pb_problem *p)
{
    int rc = pb_reply_problem(r, p->status, p->slug, p->title, p->detail, p->retryable,
                              p->issues ? json_incref(p->issues) : NULL);
    pb_problem_free(p);
    return rc;
}

int pb_auth_project(struct pb_request *r, int *rc)
{
    if (pb_auth_key(r, rc) != 0)
        return -1;
    struct pb_problem p = {0};
    json_t *proj = NULL;
    if (pb_ctl_project_resolve(r->app, pb_req_param(r, "project"), r->project_id, &proj, &p) != 0) {
        *rc = pb_reply_from_problem(r, &p);
        return -1;
    }
    json_decref(proj);
    return 0;
}
