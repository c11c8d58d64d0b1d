/* Write API routes (SPEC.md §3): the write itself and the operations. */
#include "app.h"
#include "auth.h"
#include "control.h"
#include "routes.h"
#include "store.h"
#include "write.h"
#include <stdlib.h>
#include <string.h>

static int write_object(struct pb_request *r)
{
    int rc;
    if (pb_auth_project(r, &rc) != 0)
        return rc;
    json_t *body = pb_req_json_body(r, &rc);
    if (!body)
        return rc;
    struct pb_problem p = {0};
    json_t *out = NULL;
    unsigned status = 200;
    int ok = pb_write_request(r->app, r->project_id, pb_req_param(r, "integration"),
                              pb_req_param(r, "object"), body, &status, &out, &p);
    json_decref(body);
    if (ok != 0)
        return pb_reply_from_problem(r, &p);
    return pb_reply_json(r, status, out);
}

static int operation_get(struct pb_request *r)
{
    int rc;
    if (pb_auth_project(r, &rc) != 0)
        return rc;
    json_t *out = NULL;
    const char *id = pb_req_param(r, "operation");
    int s = pb_store_operation_get(r->app->store, r->project_id, id, &out);
    if (s == PB_STORE_NOTFOUND) {
        char detail[200];
        snprintf(detail, sizeof detail, "operation '%.100s' not found", id);
        return pb_reply_problem(r, 404, "not-found", "Not found", detail, 0, NULL);
    }
    if (s != 0)
        return pb_reply_problem(r, 503, "store-unavailable", "Store unavailable",
                                "the store failed; try again", 1, NULL);
    return pb_reply_json(r, 200, out);
}

static int operations_list(struct pb_request *r)
{
    int rc;
    if (pb_auth_project(r, &rc) != 0)
        return rc;
    struct pb_problem p = {0};
    json_t *inst = NULL;
    if (pb_ctl_installation_get(r->app, r->project_id, pb_req_param(r, "integration"),
                                pb_req_param(r, "installation"), NULL, &inst, &p) != 0)
        return pb_reply_from_problem(r, &p);
    int size = 20;
    const char *ps = pb_req_query(r, "pageSize");
    if (ps) {
        char *end;
        long v = strtol(ps, &end, 10);
        if (!*ps || *end || v < 1 || v > 100) {
            json_decref(inst);
            return pb_reply_problem(r, 400, "invalid-request", "Invalid request",
                                    "pageSize must be a whole number from 1 to 100", 0,
                                    json_pack("[o]", pb_issue("query", "pageSize", "1 to 100")));
        }
        size = (int)v;
    }
    json_t *out = NULL;
    int s = pb_store_operation_list(r->app->store, r->project_id,
                                    json_string_value(json_object_get(inst, "id")), size,
                                    pb_req_query(r, "pageToken"), &out);
    json_decref(inst);
    if (s == PB_STORE_NOTFOUND)
        return pb_reply_problem(r, 400, "invalid-request", "Invalid request",
                                "pageToken is not one this API gave out", 0,
                                json_pack("[o]", pb_issue("query", "pageToken", "unknown token")));
    if (s != 0)
        return pb_reply_problem(r, 503, "store-unavailable", "Store unavailable",
                                "the store failed; try again", 1, NULL);
    return pb_reply_json(r, 200, out);
}

#define P "/v1/projects/{project}"
const struct pb_route pb_routes_write[] = {
    {"POST", P "/integrations/{integration}/objects/{object}", write_object, PB_ROUTE_BODY},
    {"GET", P "/operations/{operation}", operation_get, 0},
    {"GET", P "/integrations/{integration}/installations/{installation}/operations",
     operations_list, 0},
    {NULL, NULL, NULL, 0},
};
#undef P
