/* The control plane over loopback (SPEC.md §4): projects and API keys,
 * manifests, integrations, connections, OAuth connect against the fake
 * providers, installations with update masks and JSON Patch. A real SQLite
 * file underneath; every bad input must answer a problem+json naming it. */
#include "app.h"
#include "control.h"
#include "fake/fake.h"
#include "server.h"
#include "store.h"
#include "util.h"
#include "testutil.h"
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct pb_app *app, *strict_app;
static char base[128], strict_base[128];
static struct fake *hs, *sf;

#define PUBLIC_URL "https://plugboard.example.com"
#define CALLBACK_URL PUBLIC_URL "/callbacks/v1/oauth"
#define CALLBACK_URL_ENC "https%3A%2F%2Fplugboard.example.com%2Fcallbacks%2Fv1%2Foauth"
#define MAX_BODY 65536

/* ---- helpers ------------------------------------------------------------------ */

/* Reports a failed check at the caller's line. */
static void expect_at(int ok, int line, const char *what)
{
    CU_assertImplementation(ok ? CU_TRUE : CU_FALSE, (unsigned)line, what, __FILE__, "",
                            CU_FALSE);
}

static int streq(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}

static const char *jstr(const json_t *j, const char *key)
{
    return json_string_value(json_object_get(j, key));
}

/* A dotted path through objects ("a.b.c"); NULL when absent. */
static json_t *jpath(json_t *j, const char *dotted)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", dotted);
    char *save = NULL;
    for (char *t = strtok_r(buf, ".", &save); t && j; t = strtok_r(NULL, ".", &save))
        j = json_object_get(j, t);
    return j;
}

struct resp {
    long status;
    char *body;
    char *ctype;
    char *reqid;
    json_t *j; /* the body parsed, NULL when it is not JSON */
};

static void resp_free(struct resp *r)
{
    free(r->body);
    free(r->ctype);
    free(r->reqid);
    json_decref(r->j);
    memset(r, 0, sizeof *r);
}

/* One request. auth: NULL (no credentials), "Bearer ..." style header text
 * (contains ':'), or a bare key sent as x-api-key. */
static void call_on(const char *server, const char *method, const char *path, const char *auth,
                    const char *body, struct resp *out)
{
    char url[2048], hdr[600];
    snprintf(url, sizeof url, "%s%s", server, path);
    const char *headers[3] = {NULL, NULL, NULL};
    if (auth) {
        if (strchr(auth, ':'))
            snprintf(hdr, sizeof hdr, "%s", auth);
        else
            snprintf(hdr, sizeof hdr, "x-api-key: %s", auth);
        headers[0] = hdr;
    }
    struct pbt_resp r;
    memset(out, 0, sizeof *out);
    CU_ASSERT_EQUAL_FATAL(pbt_http(method, url, headers, body, &r), 0);
    out->status = r.status;
    out->ctype = pbt_resp_header(&r, "Content-Type");
    out->reqid = pbt_resp_header(&r, "X-Request-Id");
    out->body = r.body;
    r.body = NULL;
    out->j = json_loads(out->body, JSON_DECODE_ANY, NULL);
    pbt_resp_free(&r);
}

static void call(const char *method, const char *path, const char *auth, const char *body,
                 struct resp *out)
{
    call_on(base, method, path, auth, body, out);
}

/* Checks a problem+json answer: status, type slug, title, exact detail
 * (NULL: not checked) and the first issue's name (NULL: no issues). */
#define EXPECT_PROBLEM(r, st, slug, title, detail, issue)                                      \
    expect_problem(r, st, slug, title, detail, issue, __LINE__)
static void expect_problem(const struct resp *r, long status, const char *slug, const char *title,
                           const char *detail, const char *issue, int line)
{
    char type[128], msg[1024];
    snprintf(type, sizeof type, "urn:plugboard:problem:%s", slug);
    snprintf(msg, sizeof msg, "status %ld, want %ld: %.800s", r->status, status, r->body);
    expect_at(r->status == status, line, msg);
    snprintf(msg, sizeof msg, "content type %s", r->ctype ? r->ctype : "(none)");
    expect_at(streq(r->ctype, "application/problem+json"), line, msg);
    if (!r->j) {
        expect_at(0, line, "problem body is not JSON");
        return;
    }
    snprintf(msg, sizeof msg, "type %s, want %s", jstr(r->j, "type"), type);
    expect_at(streq(jstr(r->j, "type"), type), line, msg);
    snprintf(msg, sizeof msg, "title %s, want %s", jstr(r->j, "title"), title);
    expect_at(streq(jstr(r->j, "title"), title), line, msg);
    expect_at(json_integer_value(json_object_get(r->j, "status")) == status, line,
              "status member");
    if (detail) {
        snprintf(msg, sizeof msg, "detail '%s', want '%s'", jstr(r->j, "detail"), detail);
        expect_at(streq(jstr(r->j, "detail"), detail), line, msg);
    }
    expect_at(r->reqid && streq(jstr(r->j, "requestId"), r->reqid), line,
              "requestId matches X-Request-Id");
    expect_at(json_is_boolean(json_object_get(r->j, "retryable")), line, "retryable is boolean");
    json_t *issues = json_object_get(r->j, "issues");
    if (!issue) {
        expect_at(issues == NULL, line, "no issues expected");
        return;
    }
    json_t *first = json_array_get(issues, 0);
    snprintf(msg, sizeof msg, "issue name '%s', want '%s'", jstr(first, "name"), issue);
    expect_at(streq(jstr(first, "name"), issue), line, msg);
    expect_at(json_array_size(issues) == 1, line, "exactly one issue");
    expect_at(jstr(first, "in") != NULL && jstr(first, "detail") != NULL, line,
              "issue has in and detail");
}

/* The problem for a 400 with one body issue: "<name>: <detail>". */
#define EXPECT_INVALID(r, name, detail) expect_invalid(r, "body", name, detail, __LINE__)
static void expect_invalid(const struct resp *r, const char *in, const char *name,
                           const char *detail, int line)
{
    char full[1200];
    snprintf(full, sizeof full, "%s: %s", name, detail);
    expect_problem(r, 400, "invalid-request", "Invalid request", full, name, line);
    json_t *first = json_array_get(json_object_get(r->j, "issues"), 0);
    char msg[1400];
    snprintf(msg, sizeof msg, "issue detail '%s', want '%s'", jstr(first, "detail"), detail);
    expect_at(streq(jstr(first, "detail"), detail), line, msg);
    expect_at(streq(jstr(first, "in"), in), line, "issue in");
}

#define EXPECT_STATUS(r, st) expect_status(r, st, __LINE__)
static void expect_status(const struct resp *r, long status, int line)
{
    char msg[1024];
    snprintf(msg, sizeof msg, "status %ld, want %ld: %.800s", r->status, status, r->body);
    expect_at(r->status == status, line, msg);
}

static char *fmt(const char *f, ...) PB_PRINTF(1, 2);
static char *fmt(const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    char *s = NULL;
    if (vasprintf(&s, f, ap) < 0)
        s = NULL;
    va_end(ap);
    return s;
}

/* `tmpl` with each "%s" replaced by `v` (templates kept in tables). */
static char *subst(const char *tmpl, const char *v)
{
    size_t n = strlen(tmpl) + 1, vl = strlen(v);
    for (const char *p = strstr(tmpl, "%s"); p; p = strstr(p + 2, "%s"))
        n += vl;
    char *out = malloc(n), *o = out;
    for (const char *p = tmpl; *p;) {
        if (p[0] == '%' && p[1] == 's') {
            memcpy(o, v, vl);
            o += vl;
            p += 2;
        } else {
            *o++ = *p++;
        }
    }
    *o = '\0';
    return out;
}

/* A fresh project made in process (the first key needs no server). */
struct proj {
    char id[64];
    char name[64];
    char key[128];
};

static void new_project(const char *prefix, struct proj *pr)
{
    static int n;
    snprintf(pr->name, sizeof pr->name, "%s-%d", prefix, ++n);
    struct pb_problem p = {0};
    json_t *out = NULL;
    CU_ASSERT_EQUAL_FATAL(pb_ctl_project_create(app, pr->name, &out, &p), 0);
    snprintf(pr->id, sizeof pr->id, "%s", jstr(out, "id"));
    snprintf(pr->key, sizeof pr->key, "%s", jstr(out, "apiKey"));
    json_decref(out);
}

static char *example_manifest(void)
{
    const char *src = getenv("PB_SRCDIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/examples/amp.yaml", src && *src ? src : ".");
    char *text = pbt_read_file(path, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    return text;
}

/* A project with examples/amp.yaml applied. */
static void manifest_project(const char *prefix, struct proj *pr)
{
    new_project(prefix, pr);
    char *text = example_manifest();
    char *path = fmt("/v1/projects/%s/manifest", pr->id);
    struct resp r;
    call("PUT", path, pr->key, text, &r);
    CU_ASSERT_EQUAL_FATAL(r.status, 200);
    resp_free(&r);
    free(path);
    free(text);
}

/* Imports a connection; returns its id (malloc'd). */
static char *import_conn(const struct proj *pr, const char *body)
{
    char *path = fmt("/v1/projects/%s/connections:generate", pr->id);
    struct resp r;
    call("POST", path, pr->key, body, &r);
    free(path);
    CU_ASSERT_EQUAL_FATAL(r.status, 201);
    char *id = strdup(jstr(r.j, "id"));
    resp_free(&r);
    return id;
}

static char *hubspot_conn(const struct proj *pr, const char *group)
{
    char *body = fmt("{\"groupRef\":\"%s\",\"provider\":\"hubspot\",\"apiKey\":\"pat-%s\"}", group,
                     group);
    char *id = import_conn(pr, body);
    free(body);
    return id;
}

/* Creates an installation of hubspot-crm for `group` with `config`
 * (JSON text); returns its id (malloc'd). */
static char *install(const struct proj *pr, const char *group, const char *config)
{
    char *path = fmt("/v1/projects/%s/integrations/hubspot-crm/installations", pr->id);
    char *body = fmt("{\"groupRef\":\"%s\",\"config\":%s}", group, config);
    struct resp r;
    call("POST", path, pr->key, body, &r);
    free(path);
    free(body);
    CU_ASSERT_EQUAL_FATAL(r.status, 201);
    char *id = strdup(jstr(r.j, "id"));
    resp_free(&r);
    return id;
}

/* 1 when `needle` occurs in the database file or its WAL. */
static int db_contains(struct pb_app *a, const char *needle)
{
    const char *url = a->cfg->store;
    CU_ASSERT_EQUAL_FATAL(strncmp(url, "sqlite:", 7), 0);
    const char *suffixes[] = {"", "-wal", "-journal"};
    int found = 0;
    for (size_t i = 0; i < 3; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s%s", url + 7, suffixes[i]);
        size_t len = 0;
        char *data = pbt_read_file(path, &len);
        if (!data)
            continue;
        if (memmem(data, len, needle, strlen(needle)))
            found = 1;
        free(data);
    }
    return found;
}

static size_t db_size(struct pb_app *a)
{
    size_t len = 0;
    char *data = pbt_read_file(a->cfg->store + 7, &len);
    free(data);
    return len;
}

/* Extracts the state parameter of an authorize URL (malloc'd). */
static char *url_param(const char *url, const char *name)
{
    size_t n = strlen(name);
    const char *q = strchr(url, '?');
    for (const char *p = q; p && *p;) {
        p++;
        if (strncmp(p, name, n) == 0 && p[n] == '=') {
            const char *end = strchr(p, '&');
            return strndup(p + n + 1, end ? (size_t)(end - p - n - 1) : strlen(p + n + 1));
        }
        p = strchr(p, '&');
    }
    return NULL;
}

/* ---- authentication --------------------------------------------------------------- */

static void test_missing_key_is_401(void)
{
    struct proj a;
    new_project("auth", &a);
    const char *paths[] = {"/v1/projects", "/v1/projects/%s", "/v1/projects/%s/integrations",
                           "/v1/projects/%s/connections/conn_x",
                           "/v1/projects/%s/integrations/hubspot-crm/installations"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        char *path = subst(paths[i], a.id);
        struct resp r;
        call("GET", path, NULL, NULL, &r);
        EXPECT_PROBLEM(&r, 401, "unauthenticated", "Unauthenticated",
                       "send an API key in x-api-key or Authorization: Bearer", "x-api-key");
        resp_free(&r);
        /* Another scheme is no key either. */
        call("GET", path, "Authorization: Basic dXNlcjpwYXNz", NULL, &r);
        EXPECT_PROBLEM(&r, 401, "unauthenticated", "Unauthenticated",
                       "send an API key in x-api-key or Authorization: Bearer", "x-api-key");
        resp_free(&r);
        free(path);
    }
    struct resp r;
    call("POST", "/v1/oauth-connect", NULL, "{}", &r);
    EXPECT_PROBLEM(&r, 401, "unauthenticated", "Unauthenticated",
                   "send an API key in x-api-key or Authorization: Bearer", "x-api-key");
    resp_free(&r);
    char *path = fmt("/v1/projects/%s/manifest", a.id);
    call("PUT", path, NULL, "specVersion: 1.0.0\n", &r);
    EXPECT_STATUS(&r, 401);
    resp_free(&r);
    free(path);
}

static void test_wrong_key_is_401(void)
{
    struct proj a;
    new_project("auth", &a);
    char *path = fmt("/v1/projects/%s/integrations", a.id);
    /* A key of the right shape with one character changed. */
    char bad[128];
    snprintf(bad, sizeof bad, "%s", a.key);
    bad[10] = bad[10] == 'A' ? 'B' : 'A';
    const char *keys[] = {bad, "pbk_nope", "Authorization: Bearer pbk_nope"};
    for (size_t i = 0; i < 3; i++) {
        struct resp r;
        call("GET", path, keys[i], NULL, &r);
        EXPECT_PROBLEM(&r, 401, "unauthenticated", "Unauthenticated", "the API key is not valid",
                       "x-api-key");
        resp_free(&r);
    }
    /* An over-long key is refused without being looked up. */
    char *longkey = malloc(400);
    memset(longkey, 'k', 399);
    longkey[399] = '\0';
    struct resp r;
    call("GET", path, longkey, NULL, &r);
    EXPECT_PROBLEM(&r, 401, "unauthenticated", "Unauthenticated", "the API key is not valid",
                   "x-api-key");
    resp_free(&r);
    free(longkey);
    free(path);
}

static void test_bearer_and_x_api_key(void)
{
    struct proj a;
    new_project("auth", &a);
    char *path = fmt("/v1/projects/%s", a.id);
    char bearer[200];
    snprintf(bearer, sizeof bearer, "Authorization: Bearer %s", a.key);
    struct resp r;
    call("GET", path, bearer, NULL, &r);
    EXPECT_STATUS(&r, 200);
    CU_ASSERT_STRING_EQUAL(jstr(r.j, "id"), a.id);
    CU_ASSERT_STRING_EQUAL(jstr(r.j, "name"), a.name);
    resp_free(&r);
    call("GET", path, a.key, NULL, &r);
    EXPECT_STATUS(&r, 200);
    CU_ASSERT_STRING_EQUAL(jstr(r.j, "id"), a.id);
    resp_free(&r);
    free(path);
}

/* Another project's key sees none of this project: 404 everywhere, never
 * 403, and the same answer as for ids that do not exist. */
static void test_other_projects_key_gets_404(void)
{
    struct proj a, b;
    manifest_project("own", &a);
    manifest_project("other", &b);
    char *conn = hubspot_conn(&a, "cust-a");
    char *inst = install(&a, "cust-a", "{\"content\":{}}");
    struct resp r;
    /* B's key on A's project, by id and by name. */
    const char *fmts[] = {"/v1/projects/%s", "/v1/projects/%s/integrations",
                          "/v1/projects/%s/integrations/hubspot-crm",
                          "/v1/projects/%s/connections",
                          "/v1/projects/%s/integrations/hubspot-crm/installations"};
    for (size_t i = 0; i < sizeof fmts / sizeof fmts[0]; i++) {
        const char *names[] = {a.id, a.name};
        for (size_t k = 0; k < 2; k++) {
            char *path = subst(fmts[i], names[k]);
            call("GET", path, b.key, NULL, &r);
            char *detail = fmt("project '%s' not found", names[k]);
            EXPECT_PROBLEM(&r, 404, "not-found", "Not found", detail, NULL);
            free(detail);
            resp_free(&r);
            free(path);
        }
    }
    char *path = fmt("/v1/projects/%s/manifest", a.id);
    call("PUT", path, b.key, "specVersion: 1.0.0\n", &r);
    EXPECT_STATUS(&r, 404);
    resp_free(&r);
    free(path);
    path = fmt("/v1/projects/%s/api-keys", a.id);
    call("POST", path, b.key, "{}", &r);
    EXPECT_STATUS(&r, 404);
    resp_free(&r);
    free(path);
    /* A's ids under B's own project are unknown ids there. */
    path = fmt("/v1/projects/%s/connections/%s", b.id, conn);
    call("GET", path, b.key, NULL, &r);
    char *detail = fmt("connection '%s' not found", conn);
    EXPECT_PROBLEM(&r, 404, "not-found", "Not found", detail, NULL);
    resp_free(&r);
    call("DELETE", path, b.key, NULL, &r);
    EXPECT_PROBLEM(&r, 404, "not-found", "Not found", detail, NULL);
    resp_free(&r);
    free(detail);
    free(path);
    path = fmt("/v1/projects/%s/integrations/hubspot-crm/installations/%s", b.id, inst);
    detail = fmt("installation '%s' not found", inst);
    const char *methods[] = {"GET", "DELETE", "PATCH"};
    for (size_t i = 0; i < 3; i++) {
        call(methods[i], path, b.key, i == 2 ? "{\"updateMask\":[\"config.content.proxy.enabled\"],"
                                               "\"installation\":{}}"
                                             : NULL,
             &r);
        EXPECT_PROBLEM(&r, 404, "not-found", "Not found", detail, NULL);
        resp_free(&r);
    }
    free(detail);
    free(path);
    /* A's integration id is not one of B's. */
    path = fmt("/v1/projects/%s/integrations", a.id);
    call("GET", path, a.key, NULL, &r);
    const char *int_id = jstr(json_array_get(r.j, 0), "id");
    char *bpath = fmt("/v1/projects/%s/integrations/%s", b.id, int_id);
    struct resp r2;
    call("GET", bpath, b.key, NULL, &r2);
    detail = fmt("integration '%s' not found", int_id);
    EXPECT_PROBLEM(&r2, 404, "not-found", "Not found", detail, NULL);
    free(detail);
    resp_free(&r2);
    free(bpath);
    resp_free(&r);
    free(path);
    /* config-content with A's installation id through B's project. */
    path = fmt("/v1/projects/%s/integrations/hubspot-crm/objects/contacts/config-content", b.id);
    char *body = fmt("{\"installationId\":\"%s\",\"action\":\"write\",\"changes\":[]}", inst);
    call("PATCH", path, b.key, body, &r);
    detail = fmt("no installation of 'hubspot-crm' for installationId '%s'", inst);
    EXPECT_PROBLEM(&r, 404, "not-found", "Not found", detail, NULL);
    free(detail);
    resp_free(&r);
    free(body);
    free(path);
    /* Nothing of A changed. */
    path = fmt("/v1/projects/%s/integrations/hubspot-crm/installations/%s", a.id, inst);
    call("GET", path, a.key, NULL, &r);
    EXPECT_STATUS(&r, 200);
    resp_free(&r);
    free(path);
    free(conn);
    free(inst);
}

/* ---- projects and keys -------------------------------------------------------------- */

static void test_projects_create_and_list(void)
{
    struct proj a;
    new_project("maker", &a);
    struct resp r;
    call("POST", "/v1/projects", a.key, "{\"name\":\"made-over-http\"}", &r);
    EXPECT_STATUS(&r, 201);
    CU_ASSERT_STRING_EQUAL(jstr(r.j, "name"), "made-over-http");
    CU_ASSERT_EQUAL(strncmp(jstr(r.j, "id"), "prj_", 4), 0);
    CU_ASSERT_EQUAL(strlen(jstr(r.j, "id")), 30);
    CU_ASSERT_EQUAL(strncmp(jstr(r.j, "apiKey"), "pbk_", 4), 0);
    CU_ASSERT_EQUAL(strlen(jstr(r.j, "createTime")), 20);
    CU_ASSERT_EQUAL(json_object_size(r.j), 4);
    char newid[64], newkey[128];
    snprintf(newid, sizeof newid, "%s", jstr(r.j, "id"));
    snprintf(newkey, sizeof newkey, "%s", jstr(r.j, "apiKey"));
    resp_free(&r);
    CU_ASSERT_FALSE(db_contains(app, newkey));
    /* The new key reaches the new project and only it. */
    call("GET", "/v1/projects", newkey, NULL, &r);
    EXPECT_STATUS(&r, 200);
    CU_ASSERT_EQUAL(json_array_size(r.j), 1);
    CU_ASSERT_STRING_EQUAL(jstr(json_array_get(r.j, 0), "id"), newid);
    CU_ASSERT_STRING_EQUAL(jstr(json_array_get(r.j, 0), "name"), "made-over-http");
    CU_ASSERT_PTR_NULL(json_object_get(json_array_get(r.j, 0), "apiKey"));
    resp_free(&r);
    char *path = fmt("/v1/projects/%s", newid);
    call("GET", path, a.key, NULL, &r);
    EXPECT_STATUS(&r, 404);
    resp_free(&r);
    call("GET", "/v1/projects/made-over-http", newkey, NULL, &r);
    EXPECT_STATUS(&r, 200);
    CU_ASSERT_STRING_EQUAL(jstr(r.j, "id"), newid);
    CU_ASSERT_PTR_NULL(json_object_get(r.j, "apiKey"));
    resp_free(&r);
    free(path);
    /* The name is taken now. */
    call("POST", "/v1/projects", a.key, "{\"name\":\"made-over-http\"}", &r);
    EXPECT_PROBLEM(&r, 409, "conflict", "Conflict", "project 'made-over-http' already exists",
                   NULL);
    resp_free(&r);
}

static void test_projects_create_bad_inputs(void)
{
    struct proj a;
    new_project("maker", &a);
    const char *name_rule = "must be 1-64 letters, digits, '-', '_' or '.', starting with a "
                            "letter or digit";
    const char *bodies[] = {"{}", "{\"name\":\"\"}", "{\"name\":42}", "{\"name\":\"bad name!\"}",
                            "{\"name\":\"-leading\"}",
                            "{\"name\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                            "aaaaaaaaa\"}"};
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        struct resp r;
        call("POST", "/v1/projects", a.key, bodies[i], &r);
        EXPECT_INVALID(&r, "name", name_rule);
        resp_free(&r);
    }
    struct resp r;
    call("POST", "/v1/projects", a.key, "{\"name\":\"owned\",\"owner\":\"me\"}", &r);
    EXPECT_INVALID(&r, "owner", "is not a known field");
    resp_free(&r);
    call("POST", "/v1/projects", a.key, "{\"name\":\"owned\"}", &r);
    EXPECT_STATUS(&r, 201); /* the refused call created nothing */
    resp_free(&r);
    /* Ids are looked up before names, so a name may not look like one. */
    call("POST", "/v1/projects", a.key, "{\"name\":\"prj_lookalike\"}", &r);
    EXPECT_INVALID(&r, "name", "must not start with 'prj_' (project ids do)");
    resp_free(&r);
    call("POST", "/v1/projects", NULL, "{\"name\":\"nokey\"}", &r);
    EXPECT_STATUS(&r, 401);
    resp_free(&r);
    call("GET", "/v1/projects/nokey", a.key, NULL, &r);
    EXPECT_PROBLEM(&r, 404, "not-found", "Not found", "project 'nokey' not found", NULL);
    resp_free(&r);
}

static void test_api_key_create(void)
{
    struct proj a;
    new_project("keys", &a);
    char *path = fmt("/v1/projects/%s/api-keys", a.name);
    struct resp r;
    call("POST", path, a.key, NULL, &r);
    EXPECT_STATUS(&r, 201);
    const char *key = jstr(r.j, "apiKey");
    CU_ASSERT_EQUAL(strncmp(jstr(r.j, "id"), "key_", 4), 0);
    CU_ASSERT_STRING_EQUAL(jstr(r.j, "projectId"), a.id);
    CU_ASSERT_EQUAL(strncmp(key, "pbk_", 4), 0);
    CU_ASSERT_EQUAL(strlen(key), 47);
    CU_ASSERT_EQUAL(strncmp(jstr(r.j, "prefix"), key, 10), 0);
    CU_ASSERT_EQUAL(strlen(jstr(r.j, "prefix")), 10);
    CU_ASSERT_NOT_EQUAL(strcmp(key, a.key), 0);
    char newkey[128];
    snprintf(newkey, sizeof newkey, "%s", key);
    resp_free(&r);
    /* Stored as a keyed hash only; both keys work. */
    CU_ASSERT_FALSE(db_contains(app, newkey));
    CU_ASSERT_FALSE(db_contains(app, a.key));
    char *ppath = fmt("/v1/projects/%s", a.id);
    call("GET", ppath, newkey, NULL, &r);
    EXPECT_STATUS(&r, 200);
    resp_free(&r);
    call("GET", ppath, a.key, NULL, &r);
    EXPECT_STATUS(&r, 200);
    resp_free(&r);
    free(ppath);
    free(path);
}

/* ---- manifests and integrations --------------------------------------------------- */

static void test_manifest_apply_example(void)
{
    struct proj a;
    new_project("manifest", &a);
    char *text = example_manifest();
    char *path = fmt("/v1/projects/%s/manifest", a.name);
    struct resp r;
    call("PUT", path, a.key, text, &r);
    EXPECT_STATUS(&r, 200);
    CU_ASSERT_STRING_EQUAL(r.ctype, "application/json");
    json_t *list = json_object_get(r.j, "integrations");
    CU_ASSERT_EQUAL_FATAL(json_array_size(list), 3);
    json_t *hsi = json_array_get(list, 0), *sfi = json_array_get(list, 1),
           *sg = json_array_get(list, 2);
    CU_ASSERT_STRING_EQUAL(jstr(hsi, "name"), "hubspot-crm");
    CU_ASSERT_STRING_EQUAL(jstr(hsi, "provider"), "hubspot");
    CU_ASSERT_STRING_EQUAL(jstr(hsi, "displayName"), "HubSpot CRM");
    CU_ASSERT_STRING_EQUAL(jstr(hsi, "projectId"), a.id);
    CU_ASSERT_EQUAL(strncmp(jstr(hsi, "id"), "int_", 4), 0);
    CU_ASSERT_TRUE(json_is_true(jpath(hsi, "proxy.enabled")));
    json_t *wobjs = jpath(hsi, "write.objects");
    CU_ASSERT_EQUAL(json_array_size(wobjs), 2);
    CU_ASSERT_STRING_EQUAL(jstr(json_array_get(wobjs, 0), "objectName"), "contacts");
    CU_ASSERT_TRUE(json_is_true(json_object_get(json_array_get(wobjs, 0), "inheritMapping")));
    CU_ASSERT_STRING_EQUAL(jstr(json_array_get(wobjs, 1), "objectName"), "companies");
    CU_ASSERT_TRUE(json_is_false(json_object_get(json_array_get(wobjs, 1), "inheritMapping")));
    json_t *robj = json_array_get(jpath(hsi, "read.objects"), 0);
    CU_ASSERT_STRING_EQUAL(jstr(robj, "destination"), "contactsWebhook");
    CU_ASSERT_STRING_EQUAL(jstr(robj, "schedule"), "*/30 * * * *");
    CU_ASSERT_EQUAL(json_array_size(json_object_get(robj, "requiredFields")), 3);
    CU_ASSERT_STRING_EQUAL(
        jstr(json_array_get(json_object_get(robj, "requiredFields"), 1), "mapToName"),
        "firstName");
    CU_ASSERT_EQUAL(json_array_size(json_object_get(robj, "optionalFields")), 4);
    CU_ASSERT_STRING_EQUAL(
        jstr(json_array_get(json_object_get(robj, "optionalFields"), 3), "fieldName"),
        "jobtitle");
    CU_ASSERT_STRING_EQUAL(jstr(sfi, "name"), "salesforce-crm");
    CU_ASSERT_STRING_EQUAL(jstr(sfi, "provider"), "salesforce");
    CU_ASSERT_EQUAL(json_integer_value(jpath(json_array_get(jpath(sfi, "read.objects"), 0),
                                             "backfill.defaultPeriod.days")),
                    30);
    CU_ASSERT_STRING_EQUAL(jstr(sg, "name"), "sendgrid-email");
    CU_ASSERT_PTR_NULL(json_object_get(sg, "displayName"));
    CU_ASSERT_EQUAL(json_array_size(jpath(sg, "write.objects")), 0);
    CU_ASSERT_EQUAL(json_array_size(jpath(sg, "read.objects")), 0);
    char hs_id[64];
    snprintf(hs_id, sizeof hs_id, "%s", jstr(hsi, "id"));
    json_t *answered = json_incref(list);
    resp_free(&r);
    /* GET answers the same integrations. */
    char *lpath = fmt("/v1/projects/%s/integrations", a.id);
    call("GET", lpath, a.key, NULL, &r);
    EXPECT_STATUS(&r, 200);
    CU_ASSERT_TRUE(json_equal(r.j, answered));
    resp_free(&r);
    free(lpath);
    const char *ids[] = {"hubspot-crm", hs_id};
    for (size_t i = 0; i < 2; i++) {
        char *gpath = fmt("/v1/projects/%s/integrations/%s", a.id, ids[i]);
        call("GET", gpath, a.key, NULL, &r);
        EXPECT_STATUS(&r, 200);
        CU_ASSERT_TRUE(json_equal(r.j, json_array_get(answered, 0)));
        resp_free(&r);
        free(gpath);
    }
    char *gpath = fmt("/v1/projects/%s/integrations/nope", a.id);
    call("GET", gpath, a.key, NULL, &r);
    EXPECT_PROBLEM(&r, 404, "not-found", "Not found", "integration 'nope' not found", NULL);
    resp_free(&r);
    free(gpath);
    json_decref(answered);
    free(path);
    free(text);
}

/* Applying again updates by name: ids stay, changes show, integrations
 * missing from the new manifest are kept. */
static void test_manifest_reapply_updates_in_place(void)
{
    struct proj a;
    manifest_project("manifest", &a);
    char *path = fmt("/v1/projects/%s/integrations/hubspot-crm", a.id);
    struct resp r;
    call("GET", path, a.key, NULL, &r);
    char id[64];
    snprintf(id, sizeof id, "%s", jstr(r.j, "id"));
    resp_free(&r);
    char *mpath = fmt("/v1/projects/%s/manifest", a.id);
    call("PUT", mpath, a.key,
         "specVersion: 1.0.0\n"
         "integrations:\n"
         "  - name: hubspot-crm\n"
         "    displayName: HubSpot (renamed)\n"
         "    provider: hubspot\n"
         "    write:\n"
         "      objects:\n"
         "        - objectName: deals\n",
         &r);
    EXPECT_STATUS(&r, 200);
    CU_ASSERT_EQUAL(json_array_size(json_object_get(r.j, "integrations")), 3);
    resp_free(&r);
    call("GET", path, a.key, NULL, &r);
    EXPECT_STATUS(&r, 200);
    CU_ASSERT_STRING_EQUAL(jstr(r.j, "id"), id);
    CU_ASSERT_STRING_EQUAL(jstr(r.j, "displayName"), "HubSpot (renamed)");
    CU_ASSERT_TRUE(json_is_false(jpath(r.j, "proxy.enabled")));
    CU_ASSERT_EQUAL(json_array_size(jpath(r.j, "write.objects")), 1);
    CU_ASSERT_STRING_EQUAL(jstr(json_array_get(jpath(r.j, "write.objects"), 0), "objectName"),
                           "deals");
    CU_ASSERT_EQUAL(json_array_size(jpath(r.j, "read.objects")), 0);
    resp_free(&r);
    free(mpath);
    free(path);
}

static void test_manifest_errors_name_line_and_column(void)
{
    struct proj a;
    new_project("manifest", &a);
    char *path = fmt("/v1/projects/%s/manifest", a.id);
    struct {
        const char *text, *where, *detail;
    } cases[] = {
        {"specVersion: 1.0.0\nintegrations:\n  - name: x\n    provider: hubspot\n    proxy: [\n",
         "6:1", NULL},
        {"specVersion: 1.0.0\n"
         "integrations:\n"
         "  - name: crm\n"
         "    provider: zoho\n",
         "4:15", "amp.yaml:4:15: provider 'zoho' is not enabled in plugboard.yaml"},
        {"specVersion: 2.0.0\nintegrations: []\n", "1:14",
         "amp.yaml:1:14: unsupported specVersion '2.0.0' (expected 1.0.0)"},
        {"specVersion: 1.0.0\n"
         "integrations:\n"
         "  - name: crm\n"
         "    provider: hubspot\n"
         "    colour: blue\n",
         "5:5", "amp.yaml:5:5: unknown key 'colour' in integrations[0]"},
        {"specVersion: 1.0.0\n"
         "integrations:\n"
         "  - name: crm\n"
         "    provider: hubspot\n"
         "    proxy: {enabled: maybe}\n",
         "5:22", "amp.yaml:5:22: integrations[0].proxy.enabled must be true or false"},
        {"", "1:1", "amp.yaml:1:1: the manifest is empty"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct resp r;
        call("PUT", path, a.key, cases[i].text, &r);
        EXPECT_PROBLEM(&r, 400, "invalid-manifest", "Invalid manifest", cases[i].detail,
                       cases[i].where);
        const char *detail = jstr(r.j, "detail");
        char prefix[64];
        snprintf(prefix, sizeof prefix, "amp.yaml:%s: ", cases[i].where);
        CU_ASSERT_PTR_NOT_NULL(detail);
        if (detail)
            CU_ASSERT_EQUAL(strncmp(detail, prefix, strlen(prefix)), 0);
        json_t *issue = json_array_get(json_object_get(r.j, "issues"), 0);
        CU_ASSERT_STRING_EQUAL(jstr(issue, "in"), "body");
        CU_ASSERT_TRUE(streq(jstr(issue, "detail"), detail));
        resp_free(&r);
    }
    /* A refused manifest creates nothing. */
    char *lpath = fmt("/v1/projects/%s/integrations", a.id);
    struct resp r;
    call("GET", lpath, a.key, NULL, &r);
    EXPECT_STATUS(&r, 200);
    CU_ASSERT_EQUAL(json_array_size(r.j), 0);
    resp_free(&r);
    free(lpath);
    free(path);
}

/* ---- bodies every JSON route refuses ------------------------------------------------- */

/* Malformed JSON, a non-object, an empty body and an oversize body on every
 * route that takes one. */
static void test_bad_bodies_on_every_route(void)
{
    struct proj a;
    manifest_project("bodies", &a);
    char *conn = hubspot_conn(&a, "cust-b");
    char *inst = install(&a, "cust-b", "{\"content\":{}}");
    char *routes[][2] = {
        {"POST", strdup("/v1/projects")},
        {"POST", fmt("/v1/projects/%s/connections:generate", a.id)},
        {"POST", fmt("/v1/projects/%s/integrations/hubspot-crm/installations", a.id)},
        {"PATCH", fmt("/v1/projects/%s/integrations/hubspot-crm/installations/%s", a.id, inst)},
        {"PATCH",
         fmt("/v1/projects/%s/integrations/hubspot-crm/objects/contacts/config-content", a.id)},
        {"POST", strdup("/v1/oauth-connect")},
    };
    char *big = malloc(MAX_BODY + 1024);
    memset(big, ' ', MAX_BODY + 1023);
    big[0] = '{';
    memcpy(big + MAX_BODY + 1020, "{}}", 3);
    big[MAX_BODY + 1023] = '\0';
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        const char *m = routes[i][0], *p = routes[i][1];
        struct resp r;
        call(m, p, a.key, "{\"groupRef\": \"x\",", &r);
        EXPECT_PROBLEM(&r, 400, "invalid-json", "Malformed JSON",
                       "malformed JSON at line 1 column 17: string or '}' expected near end of "
                       "file",
                       "body");
        resp_free(&r);
        call(m, p, a.key, "{\"groupRef\":\"a\",\"groupRef\":\"b\"}", &r);
        EXPECT_PROBLEM(&r, 400, "invalid-json", "Malformed JSON",
                       "malformed JSON at line 1 column 26: duplicate object key near "
                       "'\"groupRef\"'",
                       "body");
        resp_free(&r);
        call(m, p, a.key, "[1,2]", &r);
        EXPECT_PROBLEM(&r, 400, "invalid-request", "Invalid request",
                       "the request body must be a JSON object", "body");
        resp_free(&r);
        call(m, p, a.key, NULL, &r);
        EXPECT_PROBLEM(&r, 400, "invalid-request", "Invalid request",
                       "the request body must be a JSON object", "body");
        resp_free(&r);
        call(m, p, a.key, big, &r);
        EXPECT_PROBLEM(&r, 413, "body-too-large", "Request body too large",
                       "the request body exceeds 65536 bytes", NULL);
        resp_free(&r);
        free(routes[i][1]);
    }
    /* The manifest takes YAML, with the same body limit. */
    char *mpath = fmt("/v1/projects/%s/manifest", a.id);
    struct resp r;
    call("PUT", mpath, a.key, big, &r);
    EXPECT_PROBLEM(&r, 413, "body-too-large", "Request body too large",
                   "the request body exceeds 65536 bytes", NULL);
    resp_free(&r);
    free(mpath);
    free(big);
    free(conn);
    free(inst);
}

/* ---- connections --------------------------------------------------------------------- */

static void test_connection_generate_oauth_tokens(void)
{
    struct proj a;
    new_project("conn", &a);
    char *path = fmt("/v1/projects/%s/connections:generate", a.id);
    struct resp r;
    call("POST", path, a.key,
         "{\"groupRef\":\"cust-1\",\"consumerRef\":\"user-9\",\"provider\":\"hubspot\","
         "\"oauth2AuthorizationCode\":{"
         "\"accessToken\":{\"token\":\"AT-imported-7f3a9c\",\"expiresAt\":\"2030-05-06T07:08:09+02:00\"},"
         "\"refreshToken\":{\"token\":\"RT-imported-51d2e8\"},"
         "\"scopes\":[\"crm.objects.contacts.read\",\"crm.objects.contacts.write\"]}}",
         &r);
    EXPECT_STATUS(&r, 201);
    CU_ASSERT_STRING_EQUAL(r.ctype, "application/json");
    CU_ASSERT_EQUAL(strncmp(jstr(r.j, "id"), "conn_", 5), 0);
    CU_ASSERT_STRING_EQUAL(jstr(r.j, "projectId"), a.id);
    CU_ASSERT_STRING_EQUAL(jstr(r.j, "provider"), "hubspot");
    CU_ASSERT_STRING_EQUAL(jstr(r.j, "groupRef"), "cust-1");
    CU_ASSERT_STRING_EQUAL(jstr(r.j, "consumerRef"), "user-9");
    CU_ASSERT_STRING_EQUAL(jstr(r.j, "authScheme"), "oauth2/authorizationCode");
    CU_ASSERT_STRING_EQUAL(jstr(r.j, "status"), "working");
    CU_ASSERT_STRING_EQUAL(jstr(r.j, "accessTokenExpiresAt"), "2030-05-06T05:08:09Z");
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(r.j, "version")), 1);
    CU_ASSERT_EQUAL(json_object_size(json_object_get(r.j, "providerMetadata")), 0);
    json_t *scopes = json_object_get(r.j, "scopes");
    CU_ASSERT_EQUAL(json_array_size(scopes), 2);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_array_get(scopes, 1)),
                           "crm.objects.contacts.write");
    CU_ASSERT_PTR_NULL(strstr(r.body, "AT-imported"));
    CU_ASSERT_PTR_NULL(strstr(r.body, "RT-imported"));
    char id[64];
    snprintf(id, sizeof id, "%s", jstr(r.j, "id"));
    json_t *created = json_incref(r.j);
    resp_free(&r);
    /* GET answers the same, without secrets. */
    char *gpath = fmt("/v1/projects/%s/connections/%s", a.id, id);
    call("GET", gpath, a.key, NULL, &r);
    EXPECT_STATUS(&r, 200);
    CU_ASSERT_TRUE(json_equal(r.j, created));
    CU_ASSERT_PTR_NULL(strstr(r.body, "AT-imported"));
    CU_ASSERT_PTR_NULL(strstr(r.body, "RT-imported"));
    CU_ASSERT_PTR_NULL(strstr(r.body, "token\""));
    resp_free(&r);
    /* The list, filtered by groupRef. */
    char *lpath = fmt("/v1/projects/%s/connections?groupRef=cust-1", a.id);
    call("GET", lpath, a.key, NULL, &r);
    EXPECT_STATUS(&r, 200);
    CU_ASSERT_EQUAL(json_array_size(r.j), 1);
    CU_ASSERT_TRUE(json_equal(json_array_get(r.j, 0), created));
    resp_free(&r);
    free(lpath);
    lpath = fmt("/v1/projects/%s/connections?groupRef=nobody", a.id);
    call("GET", lpath, a.key, NULL, &r);
    EXPECT_STATUS(&r, 200);
    CU_ASSERT_EQUAL(json_array_size(r.j), 0);
    resp_free(&r);
    free(lpath);
    /* Encrypted at rest. */
    CU_ASSERT_FALSE(db_contains(app, "AT-imported-7f3a9c"));
    CU_ASSERT_FALSE(db_contains(app, "RT-imported-51d2e8"));
    json_decref(created);
    free(gpath);
    free(path);
}

static void test_connection_generate_other_schemes(void)
{
    struct proj a;
    new_project("conn", &a);
    char *path = fmt("/v1/projects/%s/connections:generate", a.id);
    struct {
        const char *body, *scheme, *secret;
    } cases[] = {
        {"{\"groupRef\":\"g1\",\"provider\":\"sendgrid\",\"apiKey\":\"SG.key-4e1b77\"}", "apiKey",
         "SG.key-4e1b77"},
        {"{\"groupRef\":\"g2\",\"provider\":\"sendgrid\",\"basicAuth\":{\"username\":\"bob\","
         "\"password\":\"pw-c0ffee-99\"}}",
         "basic", "pw-c0ffee-99"},
        {"{\"groupRef\":\"g3\",\"provider\":\"salesforce\",\"oauth2ClientCredentials\":{"
         "\"clientId\":\"cc-id\",\"clientSecret\":\"cc-secret-a1b2c3\",\"scopes\":[\"api\"]},"
         "\"providerMetadata\":{\"instance_url\":{\"value\":\"https://acme.my.salesforce.com\"}}}",
         "oauth2/clientCredentials", "cc-secret-a1b2c3"},
        {"{\"groupRef\":\"g4\",\"provider\":\"hubspot\",\"oauth2AuthorizationCode\":{"
         "\"refreshToken\":{\"token\":\"RT-only-8d8d8d\"}}}",
         "oauth2/authorizationCode", "RT-only-8d8d8d"},
        {"{\"groupRef\":\"g5\",\"provider\":\"sendgrid\"}", "none", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct resp r;
        call("POST", path, a.key, cases[i].body, &r);
        EXPECT_STATUS(&r, 201);
        CU_ASSERT_STRING_EQUAL(jstr(r.j, "authScheme"), cases[i].scheme);
        /* consumerRef defaults to the group. */
        CU_ASSERT_STRING_EQUAL(jstr(r.j, "consumerRef"), jstr(r.j, "groupRef"));
        CU_ASSERT_PTR_NULL(json_object_get(r.j, "accessTokenExpiresAt"));
        if (cases[i].secret) {
            CU_ASSERT_PTR_NULL(strstr(r.body, cases[i].secret));
            CU_ASSERT_FALSE(db_contains(app, cases[i].secret));
        }
        char *gpath = fmt("/v1/projects/%s/connections/%s", a.id, jstr(r.j, "id"));
        struct resp g;
        call("GET", gpath, a.key, NULL, &g);
        EXPECT_STATUS(&g, 200);
        CU_ASSERT_TRUE(json_equal(g.j, r.j));
        if (cases[i].secret)
            CU_ASSERT_PTR_NULL(strstr(g.body, cases[i].secret));
        if (i == 2) {
            CU_ASSERT_STRING_EQUAL(json_string_value(jpath(g.j, "providerMetadata.instance_url.value")),
                                   "https://acme.my.salesforce.com");
            CU_ASSERT_STRING_EQUAL(json_string_value(json_array_get(json_object_get(g.j, "scopes"), 0)),
                                   "api");
        }
        resp_free(&g);
        free(gpath);
        resp_free(&r);
    }
    free(path);
}

static void test_connection_generate_bad_inputs(void)
{
    struct proj a;
    new_project("conn", &a);
    char *path = fmt("/v1/projects/%s/connections:generate", a.id);
    char longref[300];
    memset(longref, 'r', 257);
    longref[257] = '\0';
    char *long_body = fmt("{\"groupRef\":\"g\",\"consumerRef\":\"%s\",\"provider\":\"hubspot\"}",
                          longref);
#define G "\"groupRef\":\"g\",\"provider\":\"hubspot\","
#define AC "oauth2AuthorizationCode.accessToken"
    struct {
        const char *body, *name, *detail;
    } cases[] = {
        {"{\"provider\":\"hubspot\"}", "groupRef", "is required"},
        {"{\"groupRef\":null,\"provider\":\"hubspot\"}", "groupRef", "is required"},
        {"{\"groupRef\":7,\"provider\":\"hubspot\"}", "groupRef", "must be a non-empty string"},
        {"{\"groupRef\":\"\",\"provider\":\"hubspot\"}", "groupRef", "must be a non-empty string"},
        {"{\"groupRef\":\"g\"}", "provider", "is required"},
        {"{\"groupRef\":\"g\",\"provider\":[\"hubspot\"]}", "provider",
         "must be a non-empty string"},
        {"{\"groupRef\":\"g\",\"provider\":\"zoho\"}", "provider",
         "provider 'zoho' is not enabled in plugboard.yaml"},
        {"{" G "\"bogus\":1}", "bogus", "is not a known field"},
        {long_body, "consumerRef", "must be at most 256 characters"},
        {"{" G "\"apiKey\":\"k\",\"basicAuth\":{\"username\":\"u\"}}", "basicAuth",
         "only one of apiKey, basicAuth, oauth2ClientCredentials, oauth2AuthorizationCode may be "
         "given"},
        {"{" G "\"apiKey\":\"\"}", "apiKey", "must be a non-empty string"},
        {"{" G "\"apiKey\":12345}", "apiKey", "must be a non-empty string"},
        {"{" G "\"basicAuth\":\"u:p\"}", "basicAuth", "must be an object"},
        {"{" G "\"basicAuth\":{\"password\":\"p\"}}", "basicAuth.username", "is required"},
        {"{" G "\"basicAuth\":{\"username\":\"u\",\"password\":5}}", "basicAuth.password",
         "must be a string"},
        {"{" G "\"basicAuth\":{\"username\":\"u\",\"pass\":\"p\"}}", "basicAuth.pass",
         "is not a known field"},
        {"{" G "\"oauth2ClientCredentials\":[]}", "oauth2ClientCredentials", "must be an object"},
        {"{" G "\"oauth2ClientCredentials\":{\"clientId\":\"c\"}}",
         "oauth2ClientCredentials.clientSecret", "is required"},
        {"{" G "\"oauth2ClientCredentials\":{\"clientSecret\":\"s\"}}",
         "oauth2ClientCredentials.clientId", "is required"},
        {"{" G "\"oauth2ClientCredentials\":{\"clientId\":\"c\",\"clientSecret\":\"s\","
             "\"scopes\":\"a b\"}}",
         "oauth2ClientCredentials.scopes", "must be an array of strings"},
        {"{" G "\"oauth2AuthorizationCode\":{}}", "oauth2AuthorizationCode",
         "needs accessToken, refreshToken or both"},
        {"{" G "\"oauth2AuthorizationCode\":{\"accessToken\":\"tok\"}}", AC, "must be an object"},
        {"{" G "\"oauth2AuthorizationCode\":{\"accessToken\":{}}}", AC ".token", "is required"},
        {"{" G "\"oauth2AuthorizationCode\":{\"accessToken\":{\"token\":\"t\",\"ttl\":5}}}",
         AC ".ttl", "is not a known field"},
        {"{" G "\"oauth2AuthorizationCode\":{\"accessToken\":{\"token\":\"t\","
             "\"expiresAt\":\"tomorrow\"}}}",
         AC ".expiresAt", "must be an RFC 3339 time such as 2026-01-02T15:04:05Z"},
        {"{" G "\"oauth2AuthorizationCode\":{\"accessToken\":{\"token\":\"t\","
             "\"expiresAt\":\"2030-01-01\"}}}",
         AC ".expiresAt", "must be an RFC 3339 time such as 2026-01-02T15:04:05Z"},
        {"{" G "\"oauth2AuthorizationCode\":{\"accessToken\":{\"token\":\"t\","
             "\"expiresAt\":\"2030-01-01T00:00:00\"}}}",
         AC ".expiresAt", "must be an RFC 3339 time such as 2026-01-02T15:04:05Z"},
        {"{" G "\"oauth2AuthorizationCode\":{\"accessToken\":{\"token\":\"t\","
             "\"expiresAt\":\"2030-01-01T00:00:00+5:0\"}}}",
         AC ".expiresAt", "must be an RFC 3339 time such as 2026-01-02T15:04:05Z"},
        {"{" G "\"oauth2AuthorizationCode\":{\"accessToken\":{\"token\":\"t\","
             "\"expiresAt\":\"2030-13-01T00:00:00Z\"}}}",
         AC ".expiresAt", "must be an RFC 3339 time such as 2026-01-02T15:04:05Z"},
        {"{" G "\"oauth2AuthorizationCode\":{\"accessToken\":{\"token\":\"t\","
             "\"expiresAt\":1700000000}}}",
         AC ".expiresAt", "must be a non-empty string"},
        {"{" G "\"oauth2AuthorizationCode\":{\"refreshToken\":{\"token\":\"\"}}}",
         "oauth2AuthorizationCode.refreshToken.token", "must be a non-empty string"},
        {"{" G "\"oauth2AuthorizationCode\":{\"refreshToken\":{\"token\":\"r\"},\"scopes\":[1]}}",
         "oauth2AuthorizationCode.scopes", "must be an array of strings"},
        {"{" G "\"providerMetadata\":\"x\"}", "providerMetadata", "must be an object"},
        {"{" G "\"providerMetadata\":{\"instance_url\":\"https://x\"}}",
         "providerMetadata.instance_url.value", "must be a string"},
        {"{" G "\"providerMetadata\":{\"instance_url\":{\"value\":5}}}",
         "providerMetadata.instance_url.value", "must be a string"},
    };
#undef G
#undef AC
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct resp r;
        call("POST", path, a.key, cases[i].body, &r);
        EXPECT_INVALID(&r, cases[i].name, cases[i].detail);
        resp_free(&r);
    }
    /* Nothing was stored. */
    char *lpath = fmt("/v1/projects/%s/connections", a.id);
    struct resp r;
    call("GET", lpath, a.key, NULL, &r);
    EXPECT_STATUS(&r, 200);
    CU_ASSERT_EQUAL(json_array_size(r.j), 0);
    resp_free(&r);
    free(lpath);
    free(long_body);
    free(path);
}

static void test_connection_get_and_delete(void)
{
    struct proj a;
    manifest_project("conn", &a);
    char *used = hubspot_conn(&a, "cust-d");
    char *inst = install(&a, "cust-d", "{\"content\":{}}");
    char *spare = hubspot_conn(&a, "cust-e");
    struct resp r;
    char *path = fmt("/v1/projects/%s/connections/conn_doesnotexist", a.id);
    call("GET", path, a.key, NULL, &r);
    EXPECT_PROBLEM(&r, 404, "not-found", "Not found", "connection 'conn_doesnotexist' not found",
                   NULL);
    resp_free(&r);
    call("DELETE", path, a.key, NULL, &r);
    EXPECT_PROBLEM(&r, 404, "not-found", "Not found", "connection 'conn_doesnotexist' not found",
                   NULL);
    resp_free(&r);
    free(path);
    /* In use by an installation. */
    path = fmt("/v1/projects/%s/connections/%s", a.id, used);
    call("DELETE", path, a.key, NULL, &r);
    EXPECT_PROBLEM(&r, 409, "conflict", "Conflict",
                   "the connection is used by an installation: delete or re-point the "
                   "installation first",
                   NULL);
    resp_free(&r);
    call("GET", path, a.key, NULL, &r);
    EXPECT_STATUS(&r, 200);
    resp_free(&r);
    free(path);
    /* Unused: 204, then gone. */
    path = fmt("/v1/projects/%s/connections/%s", a.id, spare);
    call("DELETE", path, a.key, NULL, &r);
    EXPECT_STATUS(&r, 204);
    CU_ASSERT_STRING_EQUAL(r.body, "");
    resp_free(&r);
    call("GET", path, a.key, NULL, &r);
    EXPECT_STATUS(&r, 404);
    resp_free(&r);
    call("DELETE", path, a.key, NULL, &r);
    EXPECT_STATUS(&r, 404);
    resp_free(&r);
    free(path);
    /* Once the installation is gone the connection can go. */
    path = fmt("/v1/projects/%s/integrations/hubspot-crm/installations/%s", a.id, inst);
    call("DELETE", path, a.key, NULL, &r);
    EXPECT_STATUS(&r, 204);
    resp_free(&r);
    free(path);
    path = fmt("/v1/projects/%s/connections/%s", a.id, used);
    call("DELETE", path, a.key, NULL, &r);
    EXPECT_STATUS(&r, 204);
    resp_free(&r);
    free(path);
    free(used);
    free(spare);
    free(inst);
}

/* Query values arrive %-escaped; ?groupRef= filters on the decoded value. */
static void test_group_ref_filters_decode_the_query(void)
{
    struct proj a;
    manifest_project("escapes", &a);
    char *c = hubspot_conn(&a, "Acme Corp/EU");
    char *other = hubspot_conn(&a, "Acme");
    char *inst = install(&a, "Acme Corp/EU", "{\"content\":{}}");
    const char *queries[] = {"Acme%20Corp%2FEU", "Acme+Corp%2fEU", "Acme%20Corp/EU"};
    for (size_t i = 0; i < 3; i++) {
        char *path = fmt("/v1/projects/%s/connections?groupRef=%s", a.id, queries[i]);
        struct resp r;
        call("GET", path, a.key, NULL, &r);
        EXPECT_STATUS(&r, 200);
        CU_ASSERT_EQUAL(json_array_size(r.j), 1);
        CU_ASSERT_STRING_EQUAL(jstr(json_array_get(r.j, 0), "id"), c);
        resp_free(&r);
        free(path);
        path = fmt("/v1/projects/%s/integrations/hubspot-crm/installations?groupRef=%s", a.id,
                   queries[i]);
        call("GET", path, a.key, NULL, &r);
        EXPECT_STATUS(&r, 200);
        CU_ASSERT_EQUAL(json_array_size(r.j), 1);
        CU_ASSERT_STRING_EQUAL(jstr(json_array_get(r.j, 0), "id"), inst);
        CU_ASSERT_STRING_EQUAL(jstr(json_array_get(r.j, 0), "groupRef"), "Acme Corp/EU");
        resp_free(&r);
        free(path);
    }
    free(c);
    free(other);
    free(inst);
}

/* ---- installations ------------------------------------------------------------------- */

static void test_installation_create_get_list_delete(void)
{
    struct proj a;
    manifest_project("inst", &a);
    char *older = hubspot_conn(&a, "cust-1");
    char *newer = hubspot_conn(&a, "cust-1");
    char *other = hubspot_conn(&a, "cust-2");
    char *ipath = fmt("/v1/projects/%s/integrations/hubspot-crm/installations", a.id);
    const char *config =
        "{\"content\":{\"provider\":\"hubspot\",\"proxy\":{\"enabled\":true},"
        "\"write\":{\"objects\":{\"contacts\":{\"objectName\":\"contacts\","
        "\"deletionSettings\":{\"enabled\":true},"
        "\"selectedFieldSettings\":{"
        "\"lifecyclestage\":{\"default\":{\"stringValue\":\"lead\"},\"writeOnCreate\":\"always\","
        "\"writeOnUpdate\":\"ifEmpty\"},"
        "\"hs_score\":{\"default\":{\"integerValue\":5},\"writeOnUpdate\":\"never\"},"
        "\"vip\":{\"default\":{\"booleanValue\":false}}}}}},"
        "\"read\":{\"objects\":{\"contacts\":{\"selectedFieldMappings\":{\"priority\":"
        "\"hs_priority\"}}}}}}";
    char *body = fmt("{\"groupRef\":\"cust-1\",\"config\":%s}", config);
    struct resp r;
    call("POST", ipath, a.key, body, &r);
    EXPECT_STATUS(&r, 201);
    CU_ASSERT_EQUAL(strncmp(jstr(r.j, "id"), "inst_", 5), 0);
    CU_ASSERT_STRING_EQUAL(jstr(r.j, "projectId"), a.id);
    CU_ASSERT_STRING_EQUAL(jstr(r.j, "groupRef"), "cust-1");
    /* Without connectionId, the group's newest connection for the provider. */
    CU_ASSERT_STRING_EQUAL(jstr(r.j, "connectionId"), newer);
    json_t *want_config = json_loads(config, 0, NULL);
    CU_ASSERT_TRUE(json_equal(json_object_get(r.j, "config"), want_config));
    json_decref(want_config);
    CU_ASSERT_EQUAL(strlen(jstr(r.j, "createTime")), 20);
    CU_ASSERT_STRING_EQUAL(jstr(r.j, "createTime"), jstr(r.j, "updateTime"));
    char id1[64];
    snprintf(id1, sizeof id1, "%s", jstr(r.j, "id"));
    json_t *created = json_incref(r.j);
    resp_free(&r);
    free(body);
    /* integrationId is the integration's id. */
    char *gi = fmt("/v1/projects/%s/integrations/hubspot-crm", a.id);
    call("GET", gi, a.key, NULL, &r);
    CU_ASSERT_STRING_EQUAL(jstr(created, "integrationId"), jstr(r.j, "id"));
    char int_id[64];
    snprintf(int_id, sizeof int_id, "%s", jstr(r.j, "id"));
    resp_free(&r);
    free(gi);
    /* An explicit connectionId. */
    body = fmt("{\"groupRef\":\"cust-2\",\"connectionId\":\"%s\",\"config\":{\"content\":{}}}",
               other);
    call("POST", ipath, a.key, body, &r);
    EXPECT_STATUS(&r, 201);
    CU_ASSERT_STRING_EQUAL(jstr(r.j, "connectionId"), other);
    char id2[64];
    snprintf(id2, sizeof id2, "%s", jstr(r.j, "id"));
    resp_free(&r);
    free(body);
    /* GET by id under the integration's name and under its id. */
    const char *integ_refs[] = {"hubspot-crm", int_id};
    for (size_t i = 0; i < 2; i++) {
        char *gpath = fmt("/v1/projects/%s/integrations/%s/installations/%s", a.id,
                          integ_refs[i], id1);
        call("GET", gpath, a.key, NULL, &r);
        EXPECT_STATUS(&r, 200);
        CU_ASSERT_TRUE(json_equal(r.j, created));
        resp_free(&r);
        free(gpath);
    }
    /* Under another integration it does not exist. */
    char *gpath = fmt("/v1/projects/%s/integrations/salesforce-crm/installations/%s", a.id, id1);
    call("GET", gpath, a.key, NULL, &r);
    char *detail = fmt("installation '%s' not found", id1);
    EXPECT_PROBLEM(&r, 404, "not-found", "Not found", detail, NULL);
    free(detail);
    resp_free(&r);
    free(gpath);
    gpath = fmt("/v1/projects/%s/integrations/hubspot-crm/installations/inst_nope", a.id);
    call("GET", gpath, a.key, NULL, &r);
    EXPECT_PROBLEM(&r, 404, "not-found", "Not found", "installation 'inst_nope' not found", NULL);
    resp_free(&r);
    call("DELETE", gpath, a.key, NULL, &r);
    EXPECT_PROBLEM(&r, 404, "not-found", "Not found", "installation 'inst_nope' not found", NULL);
    resp_free(&r);
    free(gpath);
    gpath = fmt("/v1/projects/%s/integrations/nope/installations/%s", a.id, id1);
    call("GET", gpath, a.key, NULL, &r);
    EXPECT_PROBLEM(&r, 404, "not-found", "Not found", "integration 'nope' not found", NULL);
    resp_free(&r);
    free(gpath);
    /* Lists: all, by group, none. */
    call("GET", ipath, a.key, NULL, &r);
    EXPECT_STATUS(&r, 200);
    CU_ASSERT_EQUAL(json_array_size(r.j), 2);
    CU_ASSERT_STRING_EQUAL(jstr(json_array_get(r.j, 0), "id"), id1);
    CU_ASSERT_STRING_EQUAL(jstr(json_array_get(r.j, 1), "id"), id2);
    resp_free(&r);
    char *lpath = fmt("%s?groupRef=cust-2", ipath);
    call("GET", lpath, a.key, NULL, &r);
    EXPECT_STATUS(&r, 200);
    CU_ASSERT_EQUAL(json_array_size(r.j), 1);
    CU_ASSERT_STRING_EQUAL(jstr(json_array_get(r.j, 0), "id"), id2);
    resp_free(&r);
    free(lpath);
    lpath = fmt("%s?groupRef=nobody", ipath);
    call("GET", lpath, a.key, NULL, &r);
    EXPECT_STATUS(&r, 200);
    CU_ASSERT_EQUAL(json_array_size(r.j), 0);
    resp_free(&r);
    free(lpath);
    lpath = fmt("/v1/projects/%s/integrations/salesforce-crm/installations", a.id);
    call("GET", lpath, a.key, NULL, &r);
    EXPECT_STATUS(&r, 200);
    CU_ASSERT_EQUAL(json_array_size(r.j), 0);
    resp_free(&r);
    free(lpath);
    lpath = fmt("/v1/projects/%s/integrations/nope/installations", a.id);
    call("GET", lpath, a.key, NULL, &r);
    EXPECT_PROBLEM(&r, 404, "not-found", "Not found", "integration 'nope' not found", NULL);
    resp_free(&r);
    free(lpath);
    /* DELETE: 204, then 404. */
    gpath = fmt("%s/%s", ipath, id1);
    call("DELETE", gpath, a.key, NULL, &r);
    EXPECT_STATUS(&r, 204);
    resp_free(&r);
    call("GET", gpath, a.key, NULL, &r);
    EXPECT_STATUS(&r, 404);
    resp_free(&r);
    call("DELETE", gpath, a.key, NULL, &r);
    EXPECT_STATUS(&r, 404);
    resp_free(&r);
    free(gpath);
    call("GET", ipath, a.key, NULL, &r);
    CU_ASSERT_EQUAL(json_array_size(r.j), 1);
    resp_free(&r);
    json_decref(created);
    free(ipath);
    free(older);
    free(newer);
    free(other);
}

static void test_installation_second_for_group_is_409(void)
{
    struct proj a;
    manifest_project("inst", &a);
    char *c1 = hubspot_conn(&a, "cust-1");
    char *id = install(&a, "cust-1", "{\"content\":{}}");
    char *ipath = fmt("/v1/projects/%s/integrations/hubspot-crm/installations", a.id);
    struct resp r;
    call("POST", ipath, a.key, "{\"groupRef\":\"cust-1\",\"config\":{\"content\":{}}}", &r);
    EXPECT_PROBLEM(&r, 409, "conflict", "Conflict",
                   "groupRef 'cust-1' already has an installation of integration 'hubspot-crm'",
                   NULL);
    resp_free(&r);
    call("GET", ipath, a.key, NULL, &r);
    CU_ASSERT_EQUAL(json_array_size(r.j), 1);
    resp_free(&r);
    /* Another integration for the same group is fine. */
    char *sfc = import_conn(&a, "{\"groupRef\":\"cust-1\",\"provider\":\"salesforce\","
                                "\"oauth2AuthorizationCode\":{\"accessToken\":{\"token\":\"x\"}},"
                                "\"providerMetadata\":{\"instance_url\":{\"value\":"
                                "\"https://acme.my.salesforce.com\"}}}");
    char *spath = fmt("/v1/projects/%s/integrations/salesforce-crm/installations", a.id);
    call("POST", spath, a.key, "{\"groupRef\":\"cust-1\",\"config\":{\"content\":{}}}", &r);
    EXPECT_STATUS(&r, 201);
    CU_ASSERT_STRING_EQUAL(jstr(r.j, "connectionId"), sfc);
    resp_free(&r);
    free(spath);
    free(sfc);
    free(ipath);
    free(id);
    free(c1);
}

static void test_installation_create_bad_inputs(void)
{
    struct proj a;
    manifest_project("inst", &a);
    char *hc = hubspot_conn(&a, "g");
    char *sfc = import_conn(&a, "{\"groupRef\":\"g\",\"provider\":\"salesforce\","
                                "\"apiKey\":\"k\"}");
    char *ipath = fmt("/v1/projects/%s/integrations/hubspot-crm/installations", a.id);
#define W(x) "{\"groupRef\":\"g\",\"config\":{\"content\":{\"write\":{\"objects\":{" x "}}}}}"
#define FS(x) W("\"contacts\":{\"selectedFieldSettings\":{\"email\":" x "}}")
#define FSP "config.content.write.objects.contacts.selectedFieldSettings.email"
    char *foreign = hubspot_conn(&a, "g-other");
    char *foreign_body = fmt("{\"groupRef\":\"g\",\"connectionId\":\"%s\",\"config\":{}}",
                             foreign);
    char *foreign_detail = fmt("connection '%s' belongs to groupRef 'g-other', not 'g'", foreign);
    char *wrong_provider = fmt("{\"groupRef\":\"g\",\"connectionId\":\"%s\",\"config\":{}}", sfc);
    char *wrong_provider_detail =
        fmt("connection '%s' is for provider 'salesforce', not 'hubspot'", sfc);
    const char *dflt = "must be exactly one of stringValue (string), integerValue (integer) or "
                       "booleanValue (boolean)";
    struct {
        const char *body, *name, *detail;
    } cases[] = {
        {"{\"config\":{\"content\":{}}}", "groupRef", "is required"},
        {"{\"groupRef\":[],\"config\":{}}", "groupRef", "must be a non-empty string"},
        {"{\"groupRef\":\"g\",\"config\":{},\"extra\":true}", "extra", "is not a known field"},
        {"{\"groupRef\":\"g\"}", "config", "is required"},
        {"{\"groupRef\":\"g\",\"config\":[]}", "config", "must be an object"},
        {"{\"groupRef\":\"g\",\"config\":{\"contents\":{}}}", "config.contents",
         "is not a known field"},
        {"{\"groupRef\":\"g\",\"config\":{\"content\":\"x\"}}", "config.content",
         "must be an object"},
        {"{\"groupRef\":\"g\",\"config\":{\"content\":{\"writes\":{}}}}", "config.content.writes",
         "is not a known field"},
        {"{\"groupRef\":\"g\",\"config\":{\"content\":{\"proxy\":{\"enabled\":\"yes\"}}}}",
         "config.content.proxy.enabled", "must be true or false"},
        {"{\"groupRef\":\"g\",\"config\":{\"content\":{\"write\":{\"objects\":[]}}}}",
         "config.content.write", "must be an object with an objects map"},
        {W("\"deals\":{}"), "config.content.write.objects.deals",
         "'deals' is not a write object of integration 'hubspot-crm'"},
        {"{\"groupRef\":\"g\",\"config\":{\"content\":{\"read\":{\"objects\":{\"companies\":{}}}}}}",
         "config.content.read.objects.companies",
         "'companies' is not a read object of integration 'hubspot-crm'"},
        {W("\"contacts\":true"), "config.content.write.objects.contacts", "must be an object"},
        {W("\"contacts\":{\"colour\":\"red\"}"), "config.content.write.objects.contacts.colour",
         "is not a known field"},
        {W("\"contacts\":{\"deletionSettings\":{\"enabled\":\"yes\"}}"),
         "config.content.write.objects.contacts.deletionSettings.enabled",
         "must be true or false"},
        {W("\"contacts\":{\"selectedFieldSettings\":[]}"),
         "config.content.write.objects.contacts.selectedFieldSettings", "must be an object"},
        {FS("\"always\""), FSP, "must be an object"},
        {FS("{\"writeOnCreate\":\"ifEmpty\"}"), FSP ".writeOnCreate", "must be always or never"},
        {FS("{\"writeOnCreate\":true}"), FSP ".writeOnCreate", "must be always or never"},
        {FS("{\"writeOnUpdate\":\"sometimes\"}"), FSP ".writeOnUpdate",
         "must be always, never or ifEmpty"},
        {FS("{\"default\":{\"floatValue\":1.5}}"), FSP ".default", dflt},
        {FS("{\"default\":{\"integerValue\":\"5\"}}"), FSP ".default", dflt},
        {FS("{\"default\":{\"integerValue\":1.5}}"), FSP ".default", dflt},
        {FS("{\"default\":{\"booleanValue\":\"true\"}}"), FSP ".default", dflt},
        {FS("{\"default\":{\"stringValue\":\"a\",\"booleanValue\":true}}"), FSP ".default", dflt},
        {FS("{\"default\":{}}"), FSP ".default", dflt},
        {FS("{\"default\":\"lead\"}"), FSP ".default", dflt},
        {FS("{\"required\":true}"), FSP ".required", "is not a known field"},
        {"{\"groupRef\":\"g\",\"connectionId\":\"conn_nope\",\"config\":{}}", "connectionId",
         "connection 'conn_nope' not found"},
        {wrong_provider, "connectionId", wrong_provider_detail},
        {foreign_body, "connectionId", foreign_detail},
        {"{\"groupRef\":\"g-none\",\"config\":{}}", "connectionId",
         "no connection for groupRef 'g-none' and provider 'hubspot': import one with "
         "connections:generate or OAuth connect first"},
    };
#undef W
#undef FS
#undef FSP
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct resp r;
        call("POST", ipath, a.key, cases[i].body, &r);
        EXPECT_INVALID(&r, cases[i].name, cases[i].detail);
        resp_free(&r);
    }
    struct resp r;
    call("GET", ipath, a.key, NULL, &r);
    EXPECT_STATUS(&r, 200);
    CU_ASSERT_EQUAL(json_array_size(r.j), 0);
    resp_free(&r);
    char *npath = fmt("/v1/projects/%s/integrations/nope/installations", a.id);
    call("POST", npath, a.key, "{\"groupRef\":\"g\",\"config\":{}}", &r);
    EXPECT_PROBLEM(&r, 404, "not-found", "Not found", "integration 'nope' not found", NULL);
    resp_free(&r);
    free(npath);
    free(wrong_provider);
    free(wrong_provider_detail);
    free(foreign);
    free(foreign_body);
    free(foreign_detail);
    free(ipath);
    free(hc);
    free(sfc);
}

/* ---- PATCH with updateMask ------------------------------------------------------------ */

static const char *patch_base_config =
    "{\"content\":{\"proxy\":{\"enabled\":true},\"write\":{\"objects\":{"
    "\"contacts\":{\"deletionSettings\":{\"enabled\":false}},"
    "\"companies\":{\"deletionSettings\":{\"enabled\":true}}}},"
    "\"read\":{\"objects\":{\"contacts\":{\"selectedFieldMappings\":{\"priority\":\"hs_p\"}}}}}}";

static json_t *get_inst(const struct proj *pr, const char *id)
{
    char *path = fmt("/v1/projects/%s/integrations/hubspot-crm/installations/%s", pr->id, id);
    struct resp r;
    call("GET", path, pr->key, NULL, &r);
    free(path);
    CU_ASSERT_EQUAL(r.status, 200);
    json_t *j = json_incref(r.j);
    resp_free(&r);
    return j;
}

static void test_installation_patch_update_mask(void)
{
    struct proj a;
    manifest_project("patch", &a);
    char *c1 = hubspot_conn(&a, "cust-p");
    char *id = install(&a, "cust-p", patch_base_config);
    char *c2 = hubspot_conn(&a, "cust-p");
    char *path = fmt("/v1/projects/%s/integrations/hubspot-crm/installations/%s", a.id, id);
    struct resp r;
    /* One write object replaced; its sibling untouched. */
    call("PATCH", path, a.key,
         "{\"updateMask\":[\"config.content.write.objects.contacts\"],"
         "\"installation\":{\"config\":{\"content\":{\"write\":{\"objects\":{\"contacts\":"
         "{\"selectedFieldSettings\":{\"email\":{\"writeOnUpdate\":\"ifEmpty\"}}},"
         "\"companies\":{\"deletionSettings\":{\"enabled\":false}}}}}}}}",
         &r);
    EXPECT_STATUS(&r, 200);
    json_t *want = json_loads(
        "{\"content\":{\"proxy\":{\"enabled\":true},\"write\":{\"objects\":{"
        "\"contacts\":{\"selectedFieldSettings\":{\"email\":{\"writeOnUpdate\":\"ifEmpty\"}}},"
        "\"companies\":{\"deletionSettings\":{\"enabled\":true}}}},"
        "\"read\":{\"objects\":{\"contacts\":{\"selectedFieldMappings\":{\"priority\":\"hs_p\"}}}}}}",
        0, NULL);
    CU_ASSERT_TRUE(json_equal(json_object_get(r.j, "config"), want));
    CU_ASSERT_STRING_EQUAL(jstr(r.j, "connectionId"), c1);
    json_t *got = get_inst(&a, id);
    CU_ASSERT_TRUE(json_equal(got, r.j));
    json_decref(got);
    json_decref(want);
    resp_free(&r);
    /* proxy.enabled and the connection, in one call. */
    char *body = fmt("{\"updateMask\":[\"config.content.proxy.enabled\",\"connectionId\"],"
                     "\"installation\":{\"connectionId\":\"%s\",\"config\":{\"content\":"
                     "{\"proxy\":{\"enabled\":false}}}}}",
                     c2);
    call("PATCH", path, a.key, body, &r);
    free(body);
    EXPECT_STATUS(&r, 200);
    CU_ASSERT_TRUE(json_is_false(jpath(r.j, "config.content.proxy.enabled")));
    CU_ASSERT_STRING_EQUAL(jstr(r.j, "connectionId"), c2);
    CU_ASSERT_PTR_NOT_NULL(jpath(r.j, "config.content.write.objects.companies"));
    resp_free(&r);
    /* A read object's mappings. */
    call("PATCH", path, a.key,
         "{\"updateMask\":[\"config.content.read.objects.contacts\"],"
         "\"installation\":{\"config\":{\"content\":{\"read\":{\"objects\":{\"contacts\":"
         "{\"selectedFieldMappings\":{\"priority\":\"hs_lead_status\"}}}}}}}}",
         &r);
    EXPECT_STATUS(&r, 200);
    CU_ASSERT_STRING_EQUAL(
        json_string_value(jpath(r.j, "config.content.read.objects.contacts.selectedFieldMappings."
                                     "priority")),
        "hs_lead_status");
    resp_free(&r);
    /* The whole write map; a masked object absent from the body is removed. */
    call("PATCH", path, a.key,
         "{\"updateMask\":[\"config.content.write.objects\"],"
         "\"installation\":{\"config\":{\"content\":{\"write\":{\"objects\":{\"companies\":{}}}}}}}",
         &r);
    EXPECT_STATUS(&r, 200);
    json_t *objs = jpath(r.j, "config.content.write.objects");
    CU_ASSERT_EQUAL(json_object_size(objs), 1);
    CU_ASSERT_PTR_NOT_NULL(json_object_get(objs, "companies"));
    resp_free(&r);
    call("PATCH", path, a.key,
         "{\"updateMask\":[\"config.content.write.objects.companies\"],\"installation\":{}}", &r);
    EXPECT_STATUS(&r, 200);
    CU_ASSERT_EQUAL(json_object_size(jpath(r.j, "config.content.write.objects")), 0);
    CU_ASSERT_STRING_EQUAL(jstr(r.j, "connectionId"), c2);
    resp_free(&r);
    free(path);
    free(id);
    free(c1);
    free(c2);
}

static void test_installation_patch_bad_inputs(void)
{
    struct proj a;
    manifest_project("patch", &a);
    char *c1 = hubspot_conn(&a, "cust-p");
    char *id = install(&a, "cust-p", patch_base_config);
    char *sfc = import_conn(&a, "{\"groupRef\":\"cust-p\",\"provider\":\"salesforce\","
                                "\"apiKey\":\"k\"}");
    char *foreign = hubspot_conn(&a, "cust-q");
    char *foreign_body =
        fmt("{\"updateMask\":[\"connectionId\"],\"installation\":{\"connectionId\":\"%s\"}}",
            foreign);
    char *foreign_detail =
        fmt("connection '%s' belongs to groupRef 'cust-q', not 'cust-p'", foreign);
    json_t *before = get_inst(&a, id);
    char *path = fmt("/v1/projects/%s/integrations/hubspot-crm/installations/%s", a.id, id);
    const char *paths_rule =
        "is not an updatable path (connectionId, config.content.write.objects, "
        "config.content.write.objects.<obj>, config.content.read.objects.<obj>, "
        "config.content.proxy.enabled)";
    char d_group[300], d_deep[300], d_config[300], d_second[300];
    snprintf(d_group, sizeof d_group, "'groupRef' %s", paths_rule);
    snprintf(d_deep, sizeof d_deep, "'config.content.write.objects.contacts.deletionSettings' %s",
             paths_rule);
    snprintf(d_config, sizeof d_config, "'config' %s", paths_rule);
    snprintf(d_second, sizeof d_second, "'config.content.read.objects' %s", paths_rule);
    char *wrong_provider =
        fmt("{\"updateMask\":[\"connectionId\"],\"installation\":{\"connectionId\":\"%s\"}}", sfc);
    char *wrong_provider_detail =
        fmt("connection '%s' is for provider 'salesforce', not 'hubspot'", sfc);
    struct {
        const char *body, *name, *detail;
    } cases[] = {
        {"{\"installation\":{}}", "updateMask", "must be a non-empty array of paths"},
        {"{\"updateMask\":[],\"installation\":{}}", "updateMask",
         "must be a non-empty array of paths"},
        {"{\"updateMask\":\"connectionId\",\"installation\":{}}", "updateMask",
         "must be a non-empty array of paths"},
        {"{\"updateMask\":[\"connectionId\"]}", "installation", "must be an object"},
        {"{\"updateMask\":[\"connectionId\"],\"installation\":[]}", "installation",
         "must be an object"},
        {"{\"updateMask\":[\"connectionId\"],\"installation\":{},\"etag\":\"x\"}", "etag",
         "is not a known field"},
        {"{\"updateMask\":[\"groupRef\"],\"installation\":{\"groupRef\":\"x\"}}", "updateMask[0]",
         d_group},
        {"{\"updateMask\":[\"config.content.write.objects.contacts.deletionSettings\"],"
         "\"installation\":{}}",
         "updateMask[0]", d_deep},
        {"{\"updateMask\":[\"config\"],\"installation\":{}}", "updateMask[0]", d_config},
        {"{\"updateMask\":[\"connectionId\",\"config.content.read.objects\"],"
         "\"installation\":{}}",
         "updateMask[1]", d_second},
        {"{\"updateMask\":[5],\"installation\":{}}", "updateMask[0]", "must be a string"},
        {"{\"updateMask\":[\"config.content.write.objects.deals\"],\"installation\":{\"config\":"
         "{\"content\":{\"write\":{\"objects\":{\"deals\":{}}}}}}}",
         "installation.config.content.write.objects.deals",
         "'deals' is not a write object of integration 'hubspot-crm'"},
        {"{\"updateMask\":[\"config.content.write.objects.contacts\"],\"installation\":{\"config\":"
         "{\"content\":{\"write\":{\"objects\":{\"contacts\":{\"selectedFieldSettings\":{\"email\":"
         "{\"writeOnCreate\":\"ifEmpty\"}}}}}}}}}",
         "installation.config.content.write.objects.contacts.selectedFieldSettings.email."
         "writeOnCreate",
         "must be always or never"},
        {"{\"updateMask\":[\"config.content.write.objects\"],\"installation\":{\"config\":"
         "{\"content\":{\"write\":{\"objects\":[]}}}}}",
         "installation.config.content.write", "must be an object with an objects map"},
        {"{\"updateMask\":[\"config.content.proxy.enabled\"],\"installation\":{\"config\":"
         "{\"content\":{\"proxy\":{\"enabled\":\"no\"}}}}}",
         "installation.config.content.proxy.enabled", "must be true or false"},
        {"{\"updateMask\":[\"connectionId\"],\"installation\":{\"connectionId\":\"conn_nope\"}}",
         "installation.connectionId", "connection 'conn_nope' not found"},
        {"{\"updateMask\":[\"connectionId\"],\"installation\":{\"connectionId\":7}}",
         "installation.connectionId", "must be a connection id"},
        {"{\"updateMask\":[\"connectionId\"],\"installation\":{}}", "installation.connectionId",
         "must be a connection id"},
        {wrong_provider, "installation.connectionId", wrong_provider_detail},
        {foreign_body, "installation.connectionId", foreign_detail},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct resp r;
        call("PATCH", path, a.key, cases[i].body, &r);
        EXPECT_INVALID(&r, cases[i].name, cases[i].detail);
        resp_free(&r);
    }
    /* Nothing changed. */
    json_t *after = get_inst(&a, id);
    CU_ASSERT_TRUE(json_equal(before, after));
    json_decref(after);
    json_decref(before);
    struct resp r;
    char *npath = fmt("/v1/projects/%s/integrations/hubspot-crm/installations/inst_nope", a.id);
    call("PATCH", npath, a.key,
         "{\"updateMask\":[\"config.content.proxy.enabled\"],\"installation\":{}}", &r);
    EXPECT_PROBLEM(&r, 404, "not-found", "Not found", "installation 'inst_nope' not found", NULL);
    resp_free(&r);
    free(npath);
    free(wrong_provider);
    free(wrong_provider_detail);
    free(foreign);
    free(foreign_body);
    free(foreign_detail);
    free(path);
    free(id);
    free(c1);
    free(sfc);
}

/* ---- JSON Patch on one object's config ------------------------------------------------- */

static void test_config_content_patch(void)
{
    struct proj a;
    manifest_project("jpatch", &a);
    char *c1 = hubspot_conn(&a, "cust-j");
    char *id = install(&a, "cust-j", "{\"content\":{}}");
    char *path =
        fmt("/v1/projects/%s/integrations/hubspot-crm/objects/contacts/config-content", a.id);
    struct resp r;
    /* By groupRef: the object's config is created on first use. */
    call("PATCH", path, a.key,
         "{\"groupRef\":\"cust-j\",\"action\":\"write\",\"changes\":["
         "{\"op\":\"add\",\"path\":\"/deletionSettings\",\"value\":{\"enabled\":true}},"
         "{\"op\":\"add\",\"path\":\"/selectedFieldSettings\",\"value\":{}},"
         "{\"op\":\"add\",\"path\":\"/selectedFieldSettings/email\","
         "\"value\":{\"writeOnCreate\":\"always\"}},"
         "{\"op\":\"add\",\"path\":\"/selectedFieldSettings/a~1b~0c\","
         "\"value\":{\"default\":{\"integerValue\":3}}}]}",
         &r);
    EXPECT_STATUS(&r, 200);
    CU_ASSERT_STRING_EQUAL(jstr(r.j, "id"), id);
    json_t *want = json_loads("{\"deletionSettings\":{\"enabled\":true},"
                              "\"selectedFieldSettings\":{\"email\":{\"writeOnCreate\":\"always\"},"
                              "\"a/b~c\":{\"default\":{\"integerValue\":3}}}}",
                              0, NULL);
    CU_ASSERT_TRUE(json_equal(jpath(r.j, "config.content.write.objects.contacts"), want));
    json_decref(want);
    resp_free(&r);
    /* By installationId: replace and remove. */
    char *body = fmt("{\"installationId\":\"%s\",\"action\":\"write\",\"changes\":["
                     "{\"op\":\"replace\",\"path\":\"/deletionSettings/enabled\",\"value\":false},"
                     "{\"op\":\"remove\",\"path\":\"/selectedFieldSettings/a~1b~0c\"},"
                     "{\"op\":\"replace\",\"path\":\"/selectedFieldSettings/email/writeOnCreate\","
                     "\"value\":\"never\"}]}",
                     id);
    call("PATCH", path, a.key, body, &r);
    free(body);
    EXPECT_STATUS(&r, 200);
    want = json_loads("{\"deletionSettings\":{\"enabled\":false},"
                      "\"selectedFieldSettings\":{\"email\":{\"writeOnCreate\":\"never\"}}}",
                      0, NULL);
    CU_ASSERT_TRUE(json_equal(jpath(r.j, "config.content.write.objects.contacts"), want));
    json_decref(want);
    json_t *got = get_inst(&a, id);
    CU_ASSERT_TRUE(json_equal(got, r.j));
    json_decref(got);
    resp_free(&r);
    /* The read side. */
    char *rpath =
        fmt("/v1/projects/%s/integrations/hubspot-crm/objects/contacts/config-content", a.id);
    call("PATCH", rpath, a.key,
         "{\"groupRef\":\"cust-j\",\"action\":\"read\",\"changes\":["
         "{\"op\":\"add\",\"path\":\"/selectedFieldMappings\",\"value\":{\"priority\":\"hs_p\"}}]}",
         &r);
    EXPECT_STATUS(&r, 200);
    CU_ASSERT_STRING_EQUAL(json_string_value(jpath(r.j, "config.content.read.objects.contacts."
                                                        "selectedFieldMappings.priority")),
                           "hs_p");
    CU_ASSERT_PTR_NOT_NULL(jpath(r.j, "config.content.write.objects.contacts.deletionSettings"));
    resp_free(&r);
    free(rpath);
    free(path);
    free(id);
    free(c1);
}

static void test_config_content_patch_bad_inputs(void)
{
    struct proj a;
    manifest_project("jpatch", &a);
    char *c1 = hubspot_conn(&a, "cust-j");
    char *id = install(&a, "cust-j",
                       "{\"content\":{\"write\":{\"objects\":{\"contacts\":{\"deletionSettings\":"
                       "{\"enabled\":true},\"selectedFieldSettings\":{\"email\":{"
                       "\"writeOnCreate\":\"always\"}}}}}}}");
    json_t *before = get_inst(&a, id);
    char *path =
        fmt("/v1/projects/%s/integrations/hubspot-crm/objects/contacts/config-content", a.id);
#define CP(changes) "{\"groupRef\":\"cust-j\",\"action\":\"write\",\"changes\":" changes "}"
    struct {
        const char *body, *name, *detail;
    } cases[] = {
        {"{\"groupRef\":\"cust-j\",\"changes\":[]}", "action", "is required"},
        {"{\"groupRef\":\"cust-j\",\"action\":\"delete\",\"changes\":[]}", "action",
         "must be write or read"},
        {"{\"action\":\"write\",\"changes\":[]}", "groupRef",
         "groupRef or installationId is required"},
        {"{\"groupRef\":\"cust-j\",\"action\":\"write\",\"changes\":[],\"dryRun\":true}",
         "dryRun", "is not a known field"},
        {"{\"groupRef\":\"cust-j\",\"action\":\"write\"}", "changes",
         "must be an array of JSON Patch operations"},
        {CP("{}"), "changes", "must be an array of JSON Patch operations"},
        {CP("[{\"op\":\"move\",\"from\":\"/a\",\"path\":\"/b\"}]"), "changes[0]",
         "op must be add, remove or replace: /b"},
        {CP("[{\"op\":\"add\",\"value\":1}]"), "changes[0]", "needs op and path"},
        {CP("[\"add\"]"), "changes[0]", "needs op and path"},
        {CP("[{\"op\":\"add\",\"path\":\"/deletionSettings\"}]"), "changes[0]",
         "needs a value: /deletionSettings"},
        {CP("[{\"op\":\"add\",\"path\":\"deletionSettings\",\"value\":{}}]"), "changes[0]",
         "path must start with '/': deletionSettings"},
        {CP("[{\"op\":\"replace\",\"path\":\"\",\"value\":{}}]"), "changes[0]",
         "cannot change the whole object"},
        {CP("[{\"op\":\"add\",\"path\":\"/a~2b\",\"value\":1}]"), "changes[0]",
         "path has a bad escape: /a~2b"},
        /* A failed op after a good one: neither is applied. */
        {CP("[{\"op\":\"replace\",\"path\":\"/deletionSettings/enabled\",\"value\":false},"
            "{\"op\":\"remove\",\"path\":\"/selectedFieldSettings/phone\"}]"),
         "changes[1]", "path does not exist: /selectedFieldSettings/phone"},
        {CP("[{\"op\":\"replace\",\"path\":\"/nothing\",\"value\":1}]"), "changes[0]",
         "path does not exist: /nothing"},
        {CP("[{\"op\":\"add\",\"path\":\"/missing/child\",\"value\":1}]"), "changes[0]",
         "path does not exist: /missing/child"},
        /* The result is validated like a whole config. */
        {CP("[{\"op\":\"replace\",\"path\":\"/selectedFieldSettings/email/writeOnCreate\","
            "\"value\":\"ifEmpty\"}]"),
         "config.content.write.objects.contacts.selectedFieldSettings.email.writeOnCreate",
         "must be always or never"},
        {CP("[{\"op\":\"add\",\"path\":\"/selectedFieldSettings/email/default\","
            "\"value\":{\"stringValue\":1}}]"),
         "config.content.write.objects.contacts.selectedFieldSettings.email.default",
         "must be exactly one of stringValue (string), integerValue (integer) or booleanValue "
         "(boolean)"},
        {CP("[{\"op\":\"add\",\"path\":\"/colour\",\"value\":\"red\"}]"),
         "config.content.write.objects.contacts.colour", "is not a known field"},
        {CP("[{\"op\":\"replace\",\"path\":\"/deletionSettings\",\"value\":true}]"),
         "config.content.write.objects.contacts.deletionSettings.enabled",
         "must be true or false"},
        {"{\"groupRef\":\"cust-j\",\"action\":\"read\",\"changes\":[{\"op\":\"add\",\"path\":"
         "\"/selectedFieldMappings\",\"value\":{\"priority\":5}}]}",
         "config.content.read.objects.contacts.selectedFieldMappings",
         "'priority' must map to a string"},
    };
#undef CP
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct resp r;
        call("PATCH", path, a.key, cases[i].body, &r);
        EXPECT_INVALID(&r, cases[i].name, cases[i].detail);
        resp_free(&r);
    }
    json_t *after = get_inst(&a, id);
    CU_ASSERT_TRUE(json_equal(before, after));
    json_decref(after);
    json_decref(before);
    struct resp r;
    call("PATCH", path, a.key, "{\"groupRef\":\"nobody\",\"action\":\"write\",\"changes\":[]}",
         &r);
    EXPECT_PROBLEM(&r, 404, "not-found", "Not found",
                   "no installation of 'hubspot-crm' for groupRef 'nobody'", NULL);
    resp_free(&r);
    call("PATCH", path, a.key,
         "{\"installationId\":\"inst_nope\",\"action\":\"write\",\"changes\":[]}", &r);
    EXPECT_PROBLEM(&r, 404, "not-found", "Not found",
                   "no installation of 'hubspot-crm' for installationId 'inst_nope'", NULL);
    resp_free(&r);
    free(path);
    path = fmt("/v1/projects/%s/integrations/hubspot-crm/objects/deals/config-content", a.id);
    call("PATCH", path, a.key, "{\"groupRef\":\"cust-j\",\"action\":\"write\",\"changes\":[]}",
         &r);
    EXPECT_PROBLEM(&r, 404, "not-found", "Not found",
                   "'deals' is not a write object of integration 'hubspot-crm'", NULL);
    resp_free(&r);
    free(path);
    /* companies is a write object but not a read one. */
    path = fmt("/v1/projects/%s/integrations/hubspot-crm/objects/companies/config-content", a.id);
    call("PATCH", path, a.key, "{\"groupRef\":\"cust-j\",\"action\":\"read\",\"changes\":[]}",
         &r);
    EXPECT_PROBLEM(&r, 404, "not-found", "Not found",
                   "'companies' is not a read object of integration 'hubspot-crm'", NULL);
    resp_free(&r);
    free(path);
    path = fmt("/v1/projects/%s/integrations/nope/objects/contacts/config-content", a.id);
    call("PATCH", path, a.key, "{\"groupRef\":\"cust-j\",\"action\":\"write\",\"changes\":[]}",
         &r);
    EXPECT_PROBLEM(&r, 404, "not-found", "Not found", "integration 'nope' not found", NULL);
    resp_free(&r);
    free(path);
    free(id);
    free(c1);
}

/* amp.yaml object names may contain dots: masks and JSON Patch treat the
 * name as one key. */
static void test_object_names_with_dots(void)
{
    struct proj a;
    new_project("dots", &a);
    char *mpath = fmt("/v1/projects/%s/manifest", a.id);
    struct resp r;
    call("PUT", mpath, a.key,
         "specVersion: 1.0.0\n"
         "integrations:\n"
         "  - name: dotted\n"
         "    provider: hubspot\n"
         "    write:\n"
         "      objects:\n"
         "        - objectName: p_custom.v2\n"
         "        - objectName: contacts\n",
         &r);
    EXPECT_STATUS(&r, 200);
    resp_free(&r);
    free(mpath);
    char *c = hubspot_conn(&a, "cust-dot");
    char *ipath = fmt("/v1/projects/%s/integrations/dotted/installations", a.id);
    call("POST", ipath, a.key,
         "{\"groupRef\":\"cust-dot\",\"config\":{\"content\":{\"write\":{\"objects\":{"
         "\"p_custom.v2\":{\"deletionSettings\":{\"enabled\":false}}}}}}}",
         &r);
    EXPECT_STATUS(&r, 201);
    char *id = strdup(jstr(r.j, "id"));
    resp_free(&r);
    char *path = fmt("%s/%s", ipath, id);
    call("PATCH", path, a.key,
         "{\"updateMask\":[\"config.content.write.objects.p_custom.v2\"],\"installation\":"
         "{\"config\":{\"content\":{\"write\":{\"objects\":{\"p_custom.v2\":"
         "{\"deletionSettings\":{\"enabled\":true}}}}}}}}",
         &r);
    EXPECT_STATUS(&r, 200);
    json_t *objs = jpath(r.j, "config.content.write.objects");
    CU_ASSERT_EQUAL(json_object_size(objs), 1);
    CU_ASSERT_TRUE(json_is_true(
        json_object_get(json_object_get(json_object_get(objs, "p_custom.v2"), "deletionSettings"),
                        "enabled")));
    resp_free(&r);
    /* Below an object is still not a mask path. */
    call("PATCH", path, a.key,
         "{\"updateMask\":[\"config.content.write.objects.p_custom.v2.deletionSettings\"],"
         "\"installation\":{}}",
         &r);
    EXPECT_INVALID(&r, "updateMask[0]",
                   "'config.content.write.objects.p_custom.v2.deletionSettings' is not an "
                   "updatable path (connectionId, config.content.write.objects, "
                   "config.content.write.objects.<obj>, config.content.read.objects.<obj>, "
                   "config.content.proxy.enabled)");
    resp_free(&r);
    char *cpath =
        fmt("/v1/projects/%s/integrations/dotted/objects/p_custom.v2/config-content", a.id);
    call("PATCH", cpath, a.key,
         "{\"groupRef\":\"cust-dot\",\"action\":\"write\",\"changes\":["
         "{\"op\":\"replace\",\"path\":\"/deletionSettings/enabled\",\"value\":false}]}",
         &r);
    EXPECT_STATUS(&r, 200);
    objs = jpath(r.j, "config.content.write.objects");
    CU_ASSERT_EQUAL(json_object_size(objs), 1);
    CU_ASSERT_TRUE(json_is_false(
        json_object_get(json_object_get(json_object_get(objs, "p_custom.v2"), "deletionSettings"),
                        "enabled")));
    resp_free(&r);
    free(cpath);
    free(path);
    free(id);
    free(ipath);
    free(c);
}

/* ---- OAuth connect ------------------------------------------------------------------ */

/* POST /v1/oauth-connect; returns the authorize URL (malloc'd). */
static char *connect_url(const char *server, const struct proj *pr, const char *provider,
                         const char *group, const char *extra)
{
    char *body = fmt("{\"projectIdOrName\":\"%s\",\"groupRef\":\"%s\",\"provider\":\"%s\"%s}",
                     pr->id, group, provider, extra ? extra : "");
    struct resp r;
    call_on(server, "POST", "/v1/oauth-connect", pr->key, body, &r);
    free(body);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_STRING_EQUAL(r.ctype, "text/plain; charset=utf-8");
    char *url = r.status == 200 ? strdup(r.body) : NULL;
    resp_free(&r);
    CU_ASSERT_PTR_NOT_NULL_FATAL(url);
    return url;
}

static void callback(const char *server, const char *query, struct resp *r)
{
    char *path = fmt("/callbacks/v1/oauth%s%s", query ? "?" : "", query ? query : "");
    call_on(server, "GET", path, NULL, NULL, r);
    free(path);
}

#define EXPECT_PAGE(r, st, text) expect_page(r, st, text, __LINE__)
static void expect_page(const struct resp *r, long status, const char *text, int line)
{
    char msg[1200];
    snprintf(msg, sizeof msg, "status %ld, want %ld: %.1000s", r->status, status, r->body);
    expect_at(r->status == status, line, msg);
    expect_at(streq(r->ctype, "text/html; charset=utf-8"), line, "content type text/html");
    snprintf(msg, sizeof msg, "page lacks '%s': %.900s", text, r->body);
    expect_at(r->body && strstr(r->body, text) != NULL, line, msg);
    expect_at(r->body && strncmp(r->body, "<!doctype html>", 15) == 0, line, "an HTML page");
    if (status >= 400) {
        snprintf(msg, sizeof msg, "<p>Request id: %s</p>", r->reqid ? r->reqid : "?");
        expect_at(r->body && strstr(r->body, msg) != NULL, line, "page names the request id");
    }
}

static void test_oauth_connect_authorize_url(void)
{
    struct proj a;
    new_project("oauth", &a);
    char *url = connect_url(base, &a, "hubspot", "cust-o", NULL);
    char *state = url_param(url, "state");
    CU_ASSERT_PTR_NOT_NULL_FATAL(state);
    CU_ASSERT_EQUAL(strncmp(state, "st_", 3), 0);
    CU_ASSERT_TRUE(strlen(state) >= 26);
    char *want = fmt("%s/oauth/authorize?client_id=hs-client&redirect_uri=%s"
                     "&scope=crm.objects.contacts.read&state=%s",
                     fake_base_url(hs), CALLBACK_URL_ENC, state);
    CU_ASSERT_STRING_EQUAL(url, want);
    free(want);
    /* A second connect gets another state; scopes from the request win. */
    char *url2 = connect_url(base, &a, "hubspot", "cust-o",
                             ",\"scopes\":[\"crm.objects.deals.read\",\"oauth\"]");
    char *state2 = url_param(url2, "state");
    CU_ASSERT_NOT_EQUAL(strcmp(state, state2), 0);
    char *scope = url_param(url2, "scope");
    CU_ASSERT_STRING_EQUAL(scope, "crm.objects.deals.read%20oauth");
    free(scope);
    /* By project name too; Salesforce builds its own URL. */
    char *body = fmt("{\"projectIdOrName\":\"%s\",\"groupRef\":\"g\",\"provider\":\"salesforce\"}",
                     a.name);
    struct resp r;
    call("POST", "/v1/oauth-connect", a.key, body, &r);
    EXPECT_STATUS(&r, 200);
    char *sf_state = url_param(r.body, "state");
    char *sf_want = fmt("%s/services/oauth2/authorize?response_type=code&client_id=sf-client"
                        "&redirect_uri=%s&state=%s",
                        fake_base_url(sf), CALLBACK_URL_ENC, sf_state);
    CU_ASSERT_STRING_EQUAL(r.body, sf_want);
    free(sf_want);
    free(sf_state);
    resp_free(&r);
    free(body);
    free(state2);
    free(url2);
    free(state);
    free(url);
}

static void test_oauth_connect_bad_inputs(void)
{
    struct proj a, b;
    new_project("oauth", &a);
    new_project("oauth-other", &b);
    char *other = fmt("{\"projectIdOrName\":\"%s\",\"groupRef\":\"g\",\"provider\":\"hubspot\"}",
                      b.id);
    char *other_detail = fmt("project '%s' not found", b.id);
#define P(rest) "{\"projectIdOrName\":\"%s\"" rest "}"
    struct {
        const char *body, *name, *detail;
    } cases[] = {
        {"{\"groupRef\":\"g\",\"provider\":\"hubspot\"}", "projectIdOrName", "is required"},
        {"{\"projectIdOrName\":5,\"groupRef\":\"g\",\"provider\":\"hubspot\"}",
         "projectIdOrName", "must be a non-empty string"},
        {P(",\"provider\":\"hubspot\""), "groupRef", "is required"},
        {P(",\"groupRef\":\"g\""), "provider", "is required"},
        {P(",\"groupRef\":\"g\",\"provider\":\"zoho\""), "provider",
         "provider 'zoho' is not enabled in plugboard.yaml"},
        {P(",\"groupRef\":\"g\",\"provider\":\"hubspot\",\"colour\":1"), "colour",
         "is not a known field"},
        {P(",\"groupRef\":\"g\",\"provider\":\"hubspot\",\"scopes\":\"a\""), "scopes",
         "must be an array of strings"},
        {P(",\"groupRef\":\"g\",\"provider\":\"hubspot\",\"providerMetadata\":{\"x\":1}"),
         "providerMetadata.x.value", "must be a string"},
        {P(",\"groupRef\":\"g\",\"consumerRef\":\"\",\"provider\":\"hubspot\""), "consumerRef",
         "must be a non-empty string"},
    };
#undef P
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *body = subst(cases[i].body, a.id);
        struct resp r;
        call("POST", "/v1/oauth-connect", a.key, body, &r);
        EXPECT_INVALID(&r, cases[i].name, cases[i].detail);
        resp_free(&r);
        free(body);
    }
    struct resp r;
    /* The generic plugin has no authorization-code flow. */
    char *body = fmt("{\"projectIdOrName\":\"%s\",\"groupRef\":\"g\",\"provider\":\"sendgrid\"}",
                     a.id);
    call("POST", "/v1/oauth-connect", a.key, body, &r);
    EXPECT_PROBLEM(&r, 422, "unsupported-capability", "Unsupported capability",
                   "provider 'sendgrid' does not support oauth2_connect", "provider");
    resp_free(&r);
    free(body);
    /* A provider configured without a client id cannot start the flow. */
    body = fmt("{\"projectIdOrName\":\"%s\",\"groupRef\":\"g\",\"provider\":\"hs-noclient\"}",
               a.id);
    call("POST", "/v1/oauth-connect", a.key, body, &r);
    EXPECT_PROBLEM(&r, 422, "provider-config", "Provider cannot authorize",
                   "provider 'hs-noclient' could not build an authorize URL: provider "
                   "'hs-noclient' needs client_id for OAuth",
                   NULL);
    resp_free(&r);
    free(body);
    /* Another project's id is a project that does not exist. */
    call("POST", "/v1/oauth-connect", a.key, other, &r);
    EXPECT_PROBLEM(&r, 404, "not-found", "Not found", other_detail, NULL);
    resp_free(&r);
    free(other);
    free(other_detail);
    CU_ASSERT_EQUAL(fake_token_calls(hs), 0);
}

/* The whole round trip: authorize URL, the provider's redirect with a code,
 * the code exchanged once, the connection stored with its tokens sealed. */
static void test_oauth_round_trip_hubspot(void)
{
    struct proj a;
    new_project("oauth", &a);
    fake_reset(hs);
    char *url = connect_url(base, &a, "hubspot", "cust-rt", ",\"consumerRef\":\"user-1\"");
    char *state = url_param(url, "state");
    /* Codes arrive %-escaped (Salesforce's end in "=="): decoded once. */
    fake_add_code(hs, "code/rt+1==");
    char *q = fmt("code=code%%2Frt%%2B1%%3D%%3D&state=%s", state);
    struct resp r;
    callback(base, q, &r);
    EXPECT_PAGE(&r, 200, "<h1>Connected</h1><p>The account is connected to hubspot.");
    resp_free(&r);
    /* One token call, with the code and the configured redirect_uri. */
    CU_ASSERT_EQUAL(fake_token_calls(hs), 1);
    CU_ASSERT_EQUAL(fake_count(hs, "POST", "/oauth/v1/token"), 1);
    struct fake_req fr;
    CU_ASSERT_EQUAL_FATAL(fake_last(hs, "POST", "/oauth/v1/token", &fr), 0);
    const char *names[] = {"grant_type", "code", "redirect_uri", "client_id", "client_secret"};
    const char *values[] = {"authorization_code", "code/rt+1==", CALLBACK_URL, "hs-client",
                            "hs-secret"};
    for (size_t i = 0; i < 5; i++) {
        char *v = fake_req_param(&fr, names[i]);
        CU_ASSERT_STRING_EQUAL(v ? v : "(none)", values[i]);
        free(v);
    }
    fake_req_free(&fr);
    char *issued = fake_last_issued_token(hs);
    CU_ASSERT_PTR_NOT_NULL_FATAL(issued);
    /* The connection is there, without token fields. */
    char *lpath = fmt("/v1/projects/%s/connections?groupRef=cust-rt", a.id);
    call("GET", lpath, a.key, NULL, &r);
    EXPECT_STATUS(&r, 200);
    CU_ASSERT_EQUAL_FATAL(json_array_size(r.j), 1);
    json_t *c = json_array_get(r.j, 0);
    CU_ASSERT_STRING_EQUAL(jstr(c, "provider"), "hubspot");
    CU_ASSERT_STRING_EQUAL(jstr(c, "groupRef"), "cust-rt");
    CU_ASSERT_STRING_EQUAL(jstr(c, "consumerRef"), "user-1");
    CU_ASSERT_STRING_EQUAL(jstr(c, "authScheme"), "oauth2/authorizationCode");
    CU_ASSERT_STRING_EQUAL(jstr(c, "status"), "working");
    CU_ASSERT_EQUAL(json_object_size(json_object_get(c, "providerMetadata")), 0);
    CU_ASSERT_PTR_NOT_NULL(json_object_get(c, "accessTokenExpiresAt"));
    char *gpath = fmt("/v1/projects/%s/connections/%s", a.id, jstr(c, "id"));
    resp_free(&r);
    call("GET", gpath, a.key, NULL, &r);
    EXPECT_STATUS(&r, 200);
    CU_ASSERT_PTR_NULL(strstr(r.body, issued));
    CU_ASSERT_PTR_NULL(strstr(r.body, "rt-"));
    CU_ASSERT_PTR_NULL(strstr(r.body, "token\""));
    CU_ASSERT_PTR_NULL(json_object_get(r.j, "accessToken"));
    CU_ASSERT_PTR_NULL(json_object_get(r.j, "credentials"));
    resp_free(&r);
    /* Sealed at rest: neither token's text is in the database files. */
    char refresh[64];
    snprintf(refresh, sizeof refresh, "r%s", issued + 1); /* the fake pairs at-N with rt-N */
    CU_ASSERT_TRUE(db_size(app) > 0);
    CU_ASSERT_FALSE(db_contains(app, issued));
    CU_ASSERT_FALSE(db_contains(app, refresh));
    CU_ASSERT_FALSE(db_contains(app, "access_token"));
    /* The state was single use. */
    fake_add_code(hs, "code-rt-2");
    char *q2 = fmt("code=code-rt-2&state=%s", state);
    callback(base, q2, &r);
    EXPECT_PAGE(&r, 400, "state: unknown, already used or expired: start the connection again");
    resp_free(&r);
    CU_ASSERT_EQUAL(fake_token_calls(hs), 1);
    call("GET", lpath, a.key, NULL, &r);
    CU_ASSERT_EQUAL(json_array_size(r.j), 1);
    resp_free(&r);
    free(q2);
    free(gpath);
    free(lpath);
    free(issued);
    free(q);
    free(state);
    free(url);
}

/* Salesforce's token response carries instance_url: it lands in the
 * connection's providerMetadata, next to what was given at connect time. */
static void test_oauth_round_trip_salesforce_metadata(void)
{
    struct proj a;
    new_project("oauth", &a);
    fake_reset(sf);
    char *url = connect_url(base, &a, "salesforce", "cust-sf",
                            ",\"providerMetadata\":{\"org\":{\"value\":\"acme\"}}");
    char *state = url_param(url, "state");
    fake_add_code(sf, "sf-code-1");
    char *q = fmt("state=%s&code=sf-code-1", state);
    struct resp r;
    callback(base, q, &r);
    EXPECT_PAGE(&r, 200, "connected to salesforce");
    resp_free(&r);
    CU_ASSERT_EQUAL(fake_token_calls(sf), 1);
    char *lpath = fmt("/v1/projects/%s/connections?groupRef=cust-sf", a.id);
    call("GET", lpath, a.key, NULL, &r);
    CU_ASSERT_EQUAL_FATAL(json_array_size(r.j), 1);
    json_t *c = json_array_get(r.j, 0);
    CU_ASSERT_STRING_EQUAL(jstr(c, "consumerRef"), "cust-sf");
    CU_ASSERT_STRING_EQUAL(json_string_value(jpath(c, "providerMetadata.instance_url.value")),
                           fake_base_url(sf));
    CU_ASSERT_STRING_EQUAL(json_string_value(jpath(c, "providerMetadata.org.value")), "acme");
    CU_ASSERT_TRUE(json_is_string(jpath(c, "providerMetadata.issued_at.value")));
    CU_ASSERT_EQUAL(json_array_size(json_object_get(c, "scopes")), 2);
    /* Salesforce sends no expires_in. */
    CU_ASSERT_PTR_NULL(json_object_get(c, "accessTokenExpiresAt"));
    resp_free(&r);
    char *issued = fake_last_issued_token(sf);
    CU_ASSERT_FALSE(db_contains(app, issued));
    free(issued);
    free(lpath);
    free(q);
    free(state);
    free(url);
}

static void test_oauth_callback_failures(void)
{
    struct proj a;
    new_project("oauth", &a);
    fake_reset(hs);
    struct resp r;
    callback(base, "code=c&state=st_neverissued", &r);
    EXPECT_PAGE(&r, 400, "state: unknown, already used or expired: start the connection again");
    resp_free(&r);
    callback(base, "code=c", &r);
    EXPECT_PAGE(&r, 400, "<p>state: is required</p>");
    resp_free(&r);
    callback(base, NULL, &r);
    EXPECT_PAGE(&r, 400, "<title>Connection failed</title>");
    resp_free(&r);
    /* The user said no: the page says so (escaped) and the state is spent. */
    char *url = connect_url(base, &a, "hubspot", "cust-f", NULL);
    char *state = url_param(url, "state");
    char *q = fmt("error=access_denied&error_description=%%3Cb%%3Enope%%3C%%2Fb%%3E&state=%s",
                  state);
    callback(base, q, &r);
    EXPECT_PAGE(&r, 400, "the provider answered: access_denied: &lt;b&gt;nope&lt;/b&gt;");
    CU_ASSERT_PTR_NULL(strstr(r.body, "<b>"));
    resp_free(&r);
    free(q);
    fake_add_code(hs, "code-f-1");
    q = fmt("code=code-f-1&state=%s", state);
    callback(base, q, &r);
    EXPECT_PAGE(&r, 400, "state: unknown, already used or expired");
    resp_free(&r);
    free(q);
    free(state);
    free(url);
    /* No code. */
    url = connect_url(base, &a, "hubspot", "cust-f", NULL);
    state = url_param(url, "state");
    q = fmt("state=%s", state);
    callback(base, q, &r);
    EXPECT_PAGE(&r, 400, "<p>code: is required</p>");
    resp_free(&r);
    free(q);
    free(state);
    free(url);
    /* A code the provider does not know. */
    url = connect_url(base, &a, "hubspot", "cust-f", NULL);
    state = url_param(url, "state");
    q = fmt("code=not-a-code&state=%s", state);
    callback(base, q, &r);
    EXPECT_PAGE(&r, 502,
                "provider &#39;hubspot&#39; refused the authorization code (HTTP 400): hubspot "
                "token endpoint (HTTP 400, BAD_AUTH_CODE): missing or unknown auth code");
    resp_free(&r);
    CU_ASSERT_EQUAL(fake_token_calls(hs), 1);
    free(q);
    free(state);
    free(url);
    /* The token endpoint down. */
    url = connect_url(base, &a, "hubspot", "cust-f", NULL);
    state = url_param(url, "state");
    fake_add_code(hs, "code-f-2");
    struct fake_fault fault = {.status = 503};
    fake_inject(hs, "POST", "/oauth/v1/token", &fault, 1);
    q = fmt("code=code-f-2&state=%s", state);
    callback(base, q, &r);
    EXPECT_PAGE(&r, 502,
                "provider &#39;hubspot&#39; refused the authorization code (HTTP 503): hubspot "
                "token endpoint (HTTP 503): The service is temporarily unavailable");
    resp_free(&r);
    free(q);
    free(state);
    free(url);
    /* A state past its expiry (put straight into the store, as if issued
     * long ago) is refused like an unknown one. */
    json_t *payload = json_pack("{s:s, s:s, s:s, s:s, s:{}}", "groupRef", "cust-f", "consumerRef",
                                "cust-f", "provider", "hubspot", "redirectUri", CALLBACK_URL,
                                "providerMetadata");
    CU_ASSERT_EQUAL(pb_store_oauth_state_put(app->store, "st_expiredexpiredexpired00", a.id,
                                             payload, pb_wall_ms() - 1000),
                    0);
    json_decref(payload);
    fake_add_code(hs, "code-f-3");
    callback(base, "code=code-f-3&state=st_expiredexpiredexpired00", &r);
    EXPECT_PAGE(&r, 400, "state: unknown, already used or expired: start the connection again");
    resp_free(&r);
    CU_ASSERT_EQUAL(fake_token_calls(hs), 2);
    /* Nothing was stored. */
    char *lpath = fmt("/v1/projects/%s/connections", a.id);
    call("GET", lpath, a.key, NULL, &r);
    CU_ASSERT_EQUAL(json_array_size(r.j), 0);
    resp_free(&r);
    free(lpath);
}

/* Two callbacks racing with one state: one connection, one token call. */
struct race {
    const char *query;
    long status;
};

static void *race_callback(void *arg)
{
    struct race *rc = arg;
    char url[1024];
    snprintf(url, sizeof url, "%s/callbacks/v1/oauth?%s", base, rc->query);
    struct pbt_resp r;
    rc->status = pbt_http("GET", url, NULL, NULL, &r) == 0 ? r.status : -1;
    pbt_resp_free(&r);
    return NULL;
}

static void test_oauth_state_used_once_under_race(void)
{
    struct proj a;
    new_project("oauth", &a);
    fake_reset(hs);
    char *url = connect_url(base, &a, "hubspot", "cust-race", NULL);
    char *state = url_param(url, "state");
    fake_add_code(hs, "code-race");
    char *q = fmt("code=code-race&state=%s", state);
    struct race races[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        races[i].query = q;
        races[i].status = 0;
        CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, race_callback, &races[i]), 0);
    }
    int ok = 0, refused = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        ok += races[i].status == 200;
        refused += races[i].status == 400;
    }
    CU_ASSERT_EQUAL(ok, 1);
    CU_ASSERT_EQUAL(refused, 3);
    CU_ASSERT_EQUAL(fake_token_calls(hs), 1);
    char *lpath = fmt("/v1/projects/%s/connections?groupRef=cust-race", a.id);
    struct resp r;
    call("GET", lpath, a.key, NULL, &r);
    CU_ASSERT_EQUAL(json_array_size(r.j), 1);
    resp_free(&r);
    free(lpath);
    free(q);
    free(state);
    free(url);
}

/* ---- the helpers behind the routes ----------------------------------------------------- */

static void test_rfc3339(void)
{
    CU_ASSERT_EQUAL(pb_parse_rfc3339("2026-01-02T15:04:05Z"), 1767366245000LL);
    CU_ASSERT_EQUAL(pb_parse_rfc3339("2026-01-02T15:04:05z"), 1767366245000LL);
    CU_ASSERT_EQUAL(pb_parse_rfc3339("2026-01-02T15:04:05.5Z"), 1767366245500LL);
    CU_ASSERT_EQUAL(pb_parse_rfc3339("2026-01-02T15:04:05.123456Z"), 1767366245123LL);
    CU_ASSERT_EQUAL(pb_parse_rfc3339("2026-01-02T16:04:05+01:00"), 1767366245000LL);
    CU_ASSERT_EQUAL(pb_parse_rfc3339("2026-01-02T13:34:05-01:30"), 1767366245000LL);
    const char *bad[] = {"", "2026-01-02", "2026-01-02T15:04:05", "2026-01-02 15:04:05Z",
                         " 2026-01-02T15:04:05Z", "2026-1-2T15:04:05Z", "2026-01-02T15:04:05.Z",
                         "2026-01-02T15:04:05+1:00", "2026-01-02T15:04:05+01", "2026-01-02T15:04:05+01:0",
                         "2026-01-02T15:04:05+24:00", "2026-01-02T15:04:05+01:00x",
                         "2026-13-02T15:04:05Z", "2026-01-02T25:04:05Z", "2026-01-02T15:04:05ZZ"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (pb_parse_rfc3339(bad[i]) != -1)
            fprintf(stderr, "accepted '%s'\n", bad[i]);
        CU_ASSERT_EQUAL(pb_parse_rfc3339(bad[i]), -1);
    }
    CU_ASSERT_EQUAL(pb_parse_rfc3339(NULL), -1);
}

/* RFC 6902 on arrays and the edges the config routes cannot reach. */
static void test_json_patch_arrays(void)
{
    json_t *doc = json_loads("{\"a\":[1,2,3],\"o\":{\"k\":\"v\"}}", 0, NULL);
    struct pb_problem p = {0};
    json_t *ops = json_loads("[{\"op\":\"add\",\"path\":\"/a/0\",\"value\":0},"
                             "{\"op\":\"add\",\"path\":\"/a/-\",\"value\":4},"
                             "{\"op\":\"remove\",\"path\":\"/a/2\"},"
                             "{\"op\":\"replace\",\"path\":\"/a/0\",\"value\":\"zero\"},"
                             "{\"op\":\"add\",\"path\":\"/o/k\",\"value\":\"w\"},"
                             "{\"op\":\"add\",\"path\":\"/o/\",\"value\":\"empty key\"}]",
                             0, NULL);
    json_t *out = pb_json_patch(doc, ops, &p);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    json_t *want = json_loads("{\"a\":[\"zero\",1,3,4],\"o\":{\"k\":\"w\",\"\":\"empty key\"}}",
                              0, NULL);
    CU_ASSERT_TRUE(json_equal(out, want));
    /* The input is left alone. */
    json_t *orig = json_loads("{\"a\":[1,2,3],\"o\":{\"k\":\"v\"}}", 0, NULL);
    CU_ASSERT_TRUE(json_equal(doc, orig));
    json_decref(orig);
    json_decref(want);
    json_decref(out);
    json_decref(ops);
    struct {
        const char *ops, *name, *detail;
    } bad[] = {
        {"[{\"op\":\"add\",\"path\":\"/a/4\",\"value\":0}]", "changes[0]",
         "changes[0]: array index out of range: /a/4"},
        {"[{\"op\":\"replace\",\"path\":\"/a/3\",\"value\":0}]", "changes[0]",
         "changes[0]: array index out of range: /a/3"},
        {"[{\"op\":\"remove\",\"path\":\"/a/-\"}]", "changes[0]",
         "changes[0]: array index out of range: /a/-"},
        {"[{\"op\":\"remove\",\"path\":\"/a/01\"}]", "changes[0]",
         "changes[0]: array index out of range: /a/01"},
        {"[{\"op\":\"remove\",\"path\":\"/a/x\"}]", "changes[0]",
         "changes[0]: array index out of range: /a/x"},
        {"[{\"op\":\"add\",\"path\":\"/a/9/b\",\"value\":0}]", "changes[0]",
         "changes[0]: path does not exist: /a/9/b"},
        {"[{\"op\":\"add\",\"path\":\"/o/k/deeper\",\"value\":0}]", "changes[0]",
         "changes[0]: path does not exist: /o/k/deeper"},
        {"[{\"op\":\"test\",\"path\":\"/o/k\",\"value\":\"v\"}]", "changes[0]",
         "changes[0]: op must be add, remove or replace: /o/k"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *o = json_loads(bad[i].ops, 0, NULL);
        struct pb_problem q = {0};
        CU_ASSERT_PTR_NULL(pb_json_patch(doc, o, &q));
        CU_ASSERT_EQUAL(q.status, 400);
        CU_ASSERT_STRING_EQUAL(q.detail, bad[i].detail);
        CU_ASSERT_STRING_EQUAL(jstr(json_array_get(q.issues, 0), "name"), bad[i].name);
        pb_problem_free(&q);
        json_decref(o);
    }
    json_decref(doc);
}

/* Without egress.allow_private the core refuses to call a loopback token
 * endpoint, and the callback says why. */
static void test_oauth_callback_refused_by_egress_policy(void)
{
    struct pb_problem p = {0};
    json_t *out = NULL;
    CU_ASSERT_EQUAL_FATAL(pb_ctl_project_create(strict_app, "strict", &out, &p), 0);
    struct proj a;
    snprintf(a.id, sizeof a.id, "%s", jstr(out, "id"));
    snprintf(a.key, sizeof a.key, "%s", jstr(out, "apiKey"));
    json_decref(out);
    fake_reset(hs);
    char *url = connect_url(strict_base, &a, "hubspot", "cust-s", NULL);
    char *state = url_param(url, "state");
    fake_add_code(hs, "code-s-1");
    char *q = fmt("code=code-s-1&state=%s", state);
    struct resp r;
    callback(strict_base, q, &r);
    EXPECT_PAGE(&r, 502,
                "the token endpoint of &#39;hubspot&#39; could not be reached: 127.0.0.1 "
                "resolves to a private or loopback address and egress.allow_private is false");
    resp_free(&r);
    CU_ASSERT_EQUAL(fake_token_calls(hs), 0);
    char *lpath = fmt("/v1/projects/%s/connections", a.id);
    call_on(strict_base, "GET", lpath, a.key, NULL, &r);
    EXPECT_STATUS(&r, 200);
    CU_ASSERT_EQUAL(json_array_size(r.j), 0);
    resp_free(&r);
    free(lpath);
    free(q);
    free(state);
    free(url);
}

static CU_TestInfo tests[] = {
    {"missing_key_is_401", test_missing_key_is_401},
    {"wrong_key_is_401", test_wrong_key_is_401},
    {"bearer_and_x_api_key", test_bearer_and_x_api_key},
    {"other_projects_key_gets_404", test_other_projects_key_gets_404},
    {"projects_create_and_list", test_projects_create_and_list},
    {"projects_create_bad_inputs", test_projects_create_bad_inputs},
    {"api_key_create", test_api_key_create},
    {"manifest_apply_example", test_manifest_apply_example},
    {"manifest_reapply_updates_in_place", test_manifest_reapply_updates_in_place},
    {"manifest_errors_name_line_and_column", test_manifest_errors_name_line_and_column},
    {"bad_bodies_on_every_route", test_bad_bodies_on_every_route},
    {"connection_generate_oauth_tokens", test_connection_generate_oauth_tokens},
    {"connection_generate_other_schemes", test_connection_generate_other_schemes},
    {"connection_generate_bad_inputs", test_connection_generate_bad_inputs},
    {"connection_get_and_delete", test_connection_get_and_delete},
    {"group_ref_filters_decode_the_query", test_group_ref_filters_decode_the_query},
    {"installation_create_get_list_delete", test_installation_create_get_list_delete},
    {"installation_second_for_group_is_409", test_installation_second_for_group_is_409},
    {"installation_create_bad_inputs", test_installation_create_bad_inputs},
    {"installation_patch_update_mask", test_installation_patch_update_mask},
    {"installation_patch_bad_inputs", test_installation_patch_bad_inputs},
    {"config_content_patch", test_config_content_patch},
    {"config_content_patch_bad_inputs", test_config_content_patch_bad_inputs},
    {"object_names_with_dots", test_object_names_with_dots},
    {"oauth_connect_authorize_url", test_oauth_connect_authorize_url},
    {"oauth_connect_bad_inputs", test_oauth_connect_bad_inputs},
    {"oauth_round_trip_hubspot", test_oauth_round_trip_hubspot},
    {"oauth_round_trip_salesforce_metadata", test_oauth_round_trip_salesforce_metadata},
    {"oauth_callback_failures", test_oauth_callback_failures},
    {"oauth_state_used_once_under_race", test_oauth_state_used_once_under_race},
    {"oauth_callback_refused_by_egress_policy", test_oauth_callback_refused_by_egress_policy},
    {"rfc3339", test_rfc3339},
    {"json_patch_arrays", test_json_patch_arrays},
    CU_TEST_INFO_NULL,
};

static char *providers_yaml(int allow_private)
{
    return fmt("public_url: " PUBLIC_URL "/\n"
               "server: {max_body_bytes: %d}\n"
               "egress: {timeout_ms: 5000, allow_private: %s}\n"
               "providers:\n"
               "  hubspot:\n"
               "    plugin: hubspot\n"
               "    client_id: hs-client\n"
               "    client_secret: hs-secret\n"
               "    scopes: crm.objects.contacts.read\n"
               "    base_url: %s\n"
               "    auth_url: %s/oauth/authorize\n"
               "    token_url: %s/oauth/v1/token\n"
               "  salesforce:\n"
               "    plugin: salesforce\n"
               "    client_id: sf-client\n"
               "    client_secret: sf-secret\n"
               "    login_url: %s\n"
               "  sendgrid: {plugin: generic, base_url: 'https://api.sendgrid.com'}\n"
               "  hs-noclient: {plugin: hubspot}\n",
               MAX_BODY, allow_private ? "true" : "false", fake_base_url(hs), fake_base_url(hs),
               fake_base_url(hs), fake_base_url(sf));
}

int main(int argc, char **argv)
{
    struct fake_opts hs_opts = {.client_id = "hs-client", .client_secret = "hs-secret"};
    struct fake_opts sf_opts = {.client_id = "sf-client", .client_secret = "sf-secret"};
    hs = fake_start(FAKE_HUBSPOT, &hs_opts);
    sf = fake_start(FAKE_SALESFORCE, &sf_opts);
    if (!hs || !sf)
        return 99;
    char *yaml = providers_yaml(1);
    app = pbt_start(yaml, base, sizeof base);
    free(yaml);
    yaml = providers_yaml(0);
    strict_app = pbt_start(yaml, strict_base, sizeof strict_base);
    free(yaml);
    if (!app || !strict_app)
        return 99;
    int rc = pbt_main(argc, argv, "control", tests);
    pbt_stop(strict_app);
    pbt_stop(app);
    fake_stop(hs);
    fake_stop(sf);
    return rc;
}
