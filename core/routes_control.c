/* Control-plane routes (SPEC.md §4): projects, API keys, manifests,
 * integrations, connections, OAuth connect, installations. Handlers parse
 * and authenticate; the logic lives in control.c. */
#include "app.h"
#include "auth.h"
#include "control.h"
#include "routes.h"
#include "store.h"
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int reply_result(struct pb_request *r, int ok, unsigned status, json_t *out,
                        struct pb_problem *p)
{
    if (ok != 0)
        return pb_reply_from_problem(r, p);
    return pb_reply_json(r, status, out);
}

static int reply_empty(struct pb_request *r)
{
    return pb_reply_text(r, 204, "text/plain", "");
}

/* ---- projects -------------------------------------------------------------- */

static int projects_list(struct pb_request *r)
{
    int rc;
    if (pb_auth_key(r, &rc) != 0)
        return rc;
    struct pb_problem p = {0};
    json_t *proj = NULL;
    if (pb_ctl_project_resolve(r->app, r->project_id, r->project_id, &proj, &p) != 0)
        return pb_reply_from_problem(r, &p);
    return pb_reply_json(r, 200, json_pack("[o]", proj));
}

static int projects_create(struct pb_request *r)
{
    int rc;
    if (pb_auth_key(r, &rc) != 0)
        return rc;
    json_t *body = pb_req_json_body(r, &rc);
    if (!body)
        return rc;
    struct pb_problem p = {0};
    json_t *out = NULL;
    const char *k;
    json_t *v;
    /* Like every other body: a field we do not know is named, not ignored. */
    json_object_foreach(body, k, v) {
        if (strcmp(k, "name") != 0) {
            pb_problem_invalid(&p, "body", k, "is not a known field");
            json_decref(body);
            return pb_reply_from_problem(r, &p);
        }
    }
    json_t *name = json_object_get(body, "name");
    int ok = pb_ctl_project_create(r->app, json_is_string(name) ? json_string_value(name) : NULL,
                                   &out, &p);
    json_decref(body);
    return reply_result(r, ok, 201, out, &p);
}

static int project_get(struct pb_request *r)
{
    int rc;
    if (pb_auth_key(r, &rc) != 0)
        return rc;
    struct pb_problem p = {0};
    json_t *proj = NULL;
    int ok = pb_ctl_project_resolve(r->app, pb_req_param(r, "project"), r->project_id, &proj, &p);
    return reply_result(r, ok, 200, proj, &p);
}

static int api_key_create(struct pb_request *r)
{
    int rc;
    if (pb_auth_project(r, &rc) != 0)
        return rc;
    struct pb_problem p = {0};
    json_t *out = NULL;
    int ok = pb_ctl_api_key_create(r->app, r->project_id, &out, &p);
    return reply_result(r, ok, 201, out, &p);
}

/* ---- manifest and integrations --------------------------------------------- */

static int manifest_put(struct pb_request *r)
{
    int rc;
    if (pb_auth_project(r, &rc) != 0)
        return rc;
    struct pb_problem p = {0};
    json_t *out = NULL;
    int ok = pb_ctl_manifest_apply(r->app, r->project_id, r->body.data ? r->body.data : "",
                                   r->body.len, "amp.yaml", &out, &p);
    return reply_result(r, ok, 200, out, &p);
}

static int integrations_list(struct pb_request *r)
{
    int rc;
    if (pb_auth_project(r, &rc) != 0)
        return rc;
    json_t *out = NULL;
    if (pb_store_integration_list(r->app->store, r->project_id, &out) != 0)
        return pb_reply_problem(r, 503, "store-unavailable", "Store unavailable",
                                "the store failed; try again", 1, NULL);
    return pb_reply_json(r, 200, out);
}

static int integration_get(struct pb_request *r)
{
    int rc;
    if (pb_auth_project(r, &rc) != 0)
        return rc;
    struct pb_problem p = {0};
    json_t *out = NULL;
    int ok = pb_ctl_integration_get(r->app, r->project_id, pb_req_param(r, "integration"), &out, &p);
    return reply_result(r, ok, 200, out, &p);
}

/* ---- connections ------------------------------------------------------------- */

static int connection_generate(struct pb_request *r)
{
    int rc;
    if (pb_auth_project(r, &rc) != 0)
        return rc;
    json_t *body = pb_req_json_body(r, &rc);
    if (!body)
        return rc;
    struct pb_problem p = {0};
    json_t *out = NULL;
    int ok = pb_ctl_connection_generate(r->app, r->project_id, body, &out, &p);
    json_decref(body);
    return reply_result(r, ok, 201, out, &p);
}

static int connections_list(struct pb_request *r)
{
    int rc;
    if (pb_auth_project(r, &rc) != 0)
        return rc;
    json_t *out = NULL;
    const char *group = pb_req_query(r, "groupRef");
    int s = pb_store_connection_list(r->app->store, r->project_id, group, &out);
    if (s != 0)
        return pb_reply_problem(r, 503, "store-unavailable", "Store unavailable",
                                "the store failed; try again", 1, NULL);
    return pb_reply_json(r, 200, out);
}

static int not_found(struct pb_request *r, const char *what, const char *id)
{
    char detail[300];
    snprintf(detail, sizeof detail, "%s '%.200s' not found", what, id);
    return pb_reply_problem(r, 404, "not-found", "Not found", detail, 0, NULL);
}

static int connection_get(struct pb_request *r)
{
    int rc;
    if (pb_auth_project(r, &rc) != 0)
        return rc;
    json_t *out = NULL;
    const char *id = pb_req_param(r, "connection");
    int s = pb_store_connection_get(r->app->store, r->project_id, id, &out, NULL);
    if (s == PB_STORE_NOTFOUND)
        return not_found(r, "connection", id);
    if (s != 0)
        return pb_reply_problem(r, 503, "store-unavailable", "Store unavailable",
                                "the store failed; try again", 1, NULL);
    return pb_reply_json(r, 200, out);
}

static int connection_delete(struct pb_request *r)
{
    int rc;
    if (pb_auth_project(r, &rc) != 0)
        return rc;
    const char *id = pb_req_param(r, "connection");
    int s = pb_store_connection_delete(r->app->store, r->project_id, id);
    if (s == PB_STORE_NOTFOUND)
        return not_found(r, "connection", id);
    if (s == PB_STORE_CONFLICT)
        return pb_reply_problem(r, 409, "conflict", "Conflict",
                                "the connection is used by an installation: delete or re-point "
                                "the installation first",
                                0, NULL);
    if (s != 0)
        return pb_reply_problem(r, 503, "store-unavailable", "Store unavailable",
                                "the store failed; try again", 1, NULL);
    return reply_empty(r);
}

/* ---- OAuth ------------------------------------------------------------------------- */

static int oauth_connect(struct pb_request *r)
{
    int rc;
    if (pb_auth_key(r, &rc) != 0)
        return rc;
    json_t *body = pb_req_json_body(r, &rc);
    if (!body)
        return rc;
    struct pb_problem p = {0};
    json_t *proj = NULL;
    json_t *pid = json_object_get(body, "projectIdOrName");
    if (!json_is_string(pid) || json_string_length(pid) == 0) {
        /* Same wording as the other fields: absent vs. present but wrong. */
        pb_problem_invalid(&p, "body", "projectIdOrName", "%s",
                           !pid || json_is_null(pid) ? "is required" : "must be a non-empty string");
        json_decref(body);
        return pb_reply_from_problem(r, &p);
    }
    if (pb_ctl_project_resolve(r->app, json_string_value(pid), r->project_id, &proj, &p) != 0) {
        json_decref(body);
        return pb_reply_from_problem(r, &p);
    }
    json_decref(proj);
    char *url = NULL;
    int ok = pb_ctl_oauth_connect(r->app, r->project_id, body, &url, &p);
    json_decref(body);
    if (ok != 0)
        return pb_reply_from_problem(r, &p);
    rc = pb_reply_text(r, 200, "text/plain; charset=utf-8", url);
    free(url);
    return rc;
}

static void html_escape(struct pb_buf *b, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '<': pb_buf_appends(b, "&lt;"); break;
        case '>': pb_buf_appends(b, "&gt;"); break;
        case '&': pb_buf_appends(b, "&amp;"); break;
        case '"': pb_buf_appends(b, "&quot;"); break;
        case '\'': pb_buf_appends(b, "&#39;"); break;
        default: pb_buf_append(b, s, 1);
        }
    }
}

static int oauth_callback(struct pb_request *r)
{
    struct pb_problem p = {0};
    json_t *conn = NULL;
    const char *perr = pb_req_query(r, "error"), *pdesc = pb_req_query(r, "error_description");
    const char *code = pb_req_query(r, "code"), *state = pb_req_query(r, "state");
    char errtext[300] = "";
    if (perr)
        snprintf(errtext, sizeof errtext, "%.100s%s%.180s", perr, pdesc ? ": " : "",
                 pdesc ? pdesc : "");
    int ok = pb_ctl_oauth_callback(r->app, code, state, errtext[0] ? errtext : NULL, &conn, &p);
    struct pb_buf b = {0};
    pb_buf_appends(&b, "<!doctype html><html><head><meta charset=\"utf-8\"><title>");
    pb_buf_appends(&b, ok == 0 ? "Connected" : "Connection failed");
    pb_buf_appends(&b, "</title></head><body><h1>");
    unsigned status;
    if (ok == 0) {
        pb_buf_appends(&b, "Connected</h1><p>The account is connected to ");
        html_escape(&b, json_string_value(json_object_get(conn, "provider")));
        pb_buf_appends(&b, ". You can close this window.</p>");
        status = 200;
    } else {
        pb_buf_appends(&b, "Connection failed</h1><p>");
        html_escape(&b, p.detail);
        pb_buf_appends(&b, "</p><p>Request id: ");
        html_escape(&b, r->request_id);
        pb_buf_appends(&b, "</p>");
        status = p.status ? p.status : 400;
    }
    pb_buf_appends(&b, "</body></html>\n");
    json_decref(conn);
    pb_problem_free(&p);
    int rc = pb_reply_text(r, status, "text/html; charset=utf-8", b.data);
    pb_buf_free(&b);
    return rc;
}

/* ---- installations ------------------------------------------------------------ */

static int installation_create(struct pb_request *r)
{
    int rc;
    if (pb_auth_project(r, &rc) != 0)
        return rc;
    json_t *body = pb_req_json_body(r, &rc);
    if (!body)
        return rc;
    struct pb_problem p = {0};
    json_t *out = NULL;
    int ok = pb_ctl_installation_create(r->app, r->project_id, pb_req_param(r, "integration"), body,
                                        &out, &p);
    json_decref(body);
    return reply_result(r, ok, 201, out, &p);
}

static int installations_list(struct pb_request *r)
{
    int rc;
    if (pb_auth_project(r, &rc) != 0)
        return rc;
    struct pb_problem p = {0};
    json_t *integ = NULL, *out = NULL;
    if (pb_ctl_integration_get(r->app, r->project_id, pb_req_param(r, "integration"), &integ, &p) != 0)
        return pb_reply_from_problem(r, &p);
    const char *group = pb_req_query(r, "groupRef");
    int s = pb_store_installation_list(r->app->store, r->project_id,
                                       json_string_value(json_object_get(integ, "id")), group,
                                       &out);
    json_decref(integ);
    if (s != 0)
        return pb_reply_problem(r, 503, "store-unavailable", "Store unavailable",
                                "the store failed; try again", 1, NULL);
    return pb_reply_json(r, 200, out);
}

static int installation_get(struct pb_request *r)
{
    int rc;
    if (pb_auth_project(r, &rc) != 0)
        return rc;
    struct pb_problem p = {0};
    json_t *out = NULL;
    int ok = pb_ctl_installation_get(r->app, r->project_id, pb_req_param(r, "integration"),
                                     pb_req_param(r, "installation"), NULL, &out, &p);
    return reply_result(r, ok, 200, out, &p);
}

static int installation_patch(struct pb_request *r)
{
    int rc;
    if (pb_auth_project(r, &rc) != 0)
        return rc;
    json_t *body = pb_req_json_body(r, &rc);
    if (!body)
        return rc;
    struct pb_problem p = {0};
    json_t *out = NULL;
    int ok = pb_ctl_installation_patch(r->app, r->project_id, pb_req_param(r, "integration"),
                                       pb_req_param(r, "installation"), body, &out, &p);
    json_decref(body);
    return reply_result(r, ok, 200, out, &p);
}

static int installation_delete(struct pb_request *r)
{
    int rc;
    if (pb_auth_project(r, &rc) != 0)
        return rc;
    struct pb_problem p = {0};
    json_t *inst = NULL;
    if (pb_ctl_installation_get(r->app, r->project_id, pb_req_param(r, "integration"),
                                pb_req_param(r, "installation"), NULL, &inst, &p) != 0)
        return pb_reply_from_problem(r, &p);
    int s = pb_store_installation_delete(r->app->store, r->project_id,
                                         json_string_value(json_object_get(inst, "id")));
    json_decref(inst);
    if (s != 0)
        return pb_reply_problem(r, 503, "store-unavailable", "Store unavailable",
                                "the store failed; try again", 1, NULL);
    return reply_empty(r);
}

static int config_content_patch(struct pb_request *r)
{
    int rc;
    if (pb_auth_project(r, &rc) != 0)
        return rc;
    json_t *body = pb_req_json_body(r, &rc);
    if (!body)
        return rc;
    struct pb_problem p = {0};
    json_t *out = NULL;
    int ok = pb_ctl_config_content_patch(r->app, r->project_id, pb_req_param(r, "integration"),
                                         pb_req_param(r, "object"), body, &out, &p);
    json_decref(body);
    return reply_result(r, ok, 200, out, &p);
}

#define P "/v1/projects/{project}"
const struct pb_route pb_routes_control[] = {
    {"GET", "/v1/projects", projects_list, 0},
    {"POST", "/v1/projects", projects_create, PB_ROUTE_BODY},
    {"GET", P, project_get, 0},
    {"POST", P "/api-keys", api_key_create, PB_ROUTE_BODY},
    {"PUT", P "/manifest", manifest_put, PB_ROUTE_BODY},
    {"GET", P "/integrations", integrations_list, 0},
    {"GET", P "/integrations/{integration}", integration_get, 0},
    {"POST", P "/connections:generate", connection_generate, PB_ROUTE_BODY},
    {"GET", P "/connections", connections_list, 0},
    {"GET", P "/connections/{connection}", connection_get, 0},
    {"DELETE", P "/connections/{connection}", connection_delete, 0},
    {"POST", P "/integrations/{integration}/installations", installation_create, PB_ROUTE_BODY},
    {"GET", P "/integrations/{integration}/installations", installations_list, 0},
    {"GET", P "/integrations/{integration}/installations/{installation}", installation_get, 0},
    {"PATCH", P "/integrations/{integration}/installations/{installation}", installation_patch,
     PB_ROUTE_BODY},
    {"DELETE", P "/integrations/{integration}/installations/{installation}", installation_delete,
     0},
    {"PATCH", P "/integrations/{integration}/objects/{object}/config-content",
     config_content_patch, PB_ROUTE_BODY},
    {"POST", "/v1/oauth-connect", oauth_connect, PB_ROUTE_BODY},
    {"GET", "/callbacks/v1/oauth", oauth_callback, 0},
    {NULL, NULL, NULL, 0},
};
#undef P
