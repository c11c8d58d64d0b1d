/* The Write API end to end (SPEC.md §3): every request row through the real
 * hubspot and salesforce plugins against the fake providers, validation,
 * deletes, associations, headers, batches with allOrNone, field settings and
 * inheritMapping, asynchronous writes with retries and deadlines, auto
 * batching (with an injected clock), restarts, and the operations API. */
#include "app.h"
#include "control.h"
#include "fake/fake.h"
#include "server.h"
#include "store.h"
#include "testutil.h"
#include "write.h"
#include "http.h"
#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static struct pb_app *app;
static char base[128], cfgpath[700];
static struct fake *hs, *sf, *echo;
static char key[128], project_id[64], other_key[128], other_project[64];
static char inst_hs[64], inst_sf[64], inst_hs3[64], inst_hs_ie[64], inst_sf_ie[64];

/* ---- the injected clock ------------------------------------------------------ */

static _Atomic long long clock_offset_ms;

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t test_clock(void)
{
    return wall_ms() + atomic_load(&clock_offset_ms);
}

/* Moves plugboard's clock forward and wakes the workers. */
static void advance(long long ms)
{
    atomic_fetch_add(&clock_offset_ms, ms);
    pb_writer_kick(app->writer);
}

static void nap(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- JSON and HTTP helpers --------------------------------------------------- */

/* printf, then ' becomes ": test bodies stay readable. */
static char *q(const char *fmt, ...) PB_PRINTF(1, 2);
static char *q(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        abort();
    va_end(ap);
    for (char *p = s; *p; p++)
        if (*p == '\'')
            *p = '"';
    return s;
}

static json_t *qj(const char *text)
{
    char *s = q("%s", text);
    json_error_t e;
    json_t *j = json_loads(s, 0, &e);
    if (!j)
        fprintf(stderr, "bad test JSON: %s: %s\n", e.text, s);
    free(s);
    return j;
}

/* The value at a dotted path ("issues.0.name"); borrowed, NULL if absent. */
static json_t *jget(const json_t *j, const char *path)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    json_t *cur = (json_t *)j;
    for (char *save = NULL, *t = strtok_r(buf, ".", &save); t && cur; t = strtok_r(NULL, ".", &save)) {
        if (json_is_array(cur)) {
            char *end;
            long i = strtol(t, &end, 10);
            cur = *end ? NULL : json_array_get(cur, (size_t)i);
        } else {
            cur = json_object_get(cur, t);
        }
    }
    return cur;
}

/* A string at a path, or "(absent)". */
static const char *js(const json_t *j, const char *path)
{
    const char *s = json_string_value(jget(j, path));
    return s ? s : "(absent)";
}

static long long ji(const json_t *j, const char *path)
{
    json_t *v = jget(j, path);
    return json_is_integer(v) ? (long long)json_integer_value(v) : -999;
}

static long request(const char *method, const char *path, const char *api_key, const char *body,
                    json_t **out)
{
    char url[1024], auth[200];
    snprintf(url, sizeof url, "%s%s", base, path);
    snprintf(auth, sizeof auth, "x-api-key: %s", api_key);
    const char *h[] = {auth, "Content-Type: application/json", NULL};
    struct pbt_resp r;
    pbt_http(method, url, h, body, &r);
    if (out) {
        *out = json_loads(r.body, 0, NULL);
        if (r.status >= 400 && !strstr(r.headers, "application/problem+json") && r.status != 422)
            fprintf(stderr, "\n  %ld without problem+json: %s\n", r.status, r.headers);
    }
    long st = r.status;
    pbt_resp_free(&r);
    return st;
}

/* POSTs a write (body in q() notation) to integration/object. */
static long wr(const char *integration, const char *object, json_t **out, const char *fmt, ...)
    PB_PRINTF(4, 5);
static long wr(const char *integration, const char *object, json_t **out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        abort();
    va_end(ap);
    for (char *p = s; *p; p++)
        if (*p == '\'')
            *p = '"';
    char path[512];
    snprintf(path, sizeof path, "/v1/projects/%s/integrations/%s/objects/%s", project_id,
             integration, object);
    long st = request("POST", path, key, s, out);
    free(s);
    return st;
}

static json_t *get_op(const char *id)
{
    char path[300];
    snprintf(path, sizeof path, "/v1/projects/%s/operations/%s", project_id, id);
    json_t *j = NULL;
    if (request("GET", path, key, NULL, &j) != 200) {
        json_decref(j);
        return NULL;
    }
    return j;
}

/* Polls the operations API until the operation is no longer in_progress. */
static json_t *wait_done(const char *id, int timeout_ms)
{
    for (int waited = 0;; waited += 20) {
        json_t *op = get_op(id);
        if (op && strcmp(js(op, "status"), "in_progress") != 0)
            return op;
        if (waited >= timeout_ms)
            return op;
        json_decref(op);
        nap(20);
    }
}

/* Polls until the operation has made `n` attempts (or finished). */
static long long wait_attempts(const char *id, long long n, int timeout_ms)
{
    long long have = -1;
    for (int waited = 0; waited <= timeout_ms; waited += 10) {
        json_t *op = get_op(id);
        have = ji(op, "metadata.retry.attempts");
        int done = op && strcmp(js(op, "status"), "in_progress") != 0;
        json_decref(op);
        if (have >= n || done)
            break;
        nap(10);
    }
    return have;
}

/* Requests with exactly this method and path. */
static size_t count_exact(struct fake *f, const char *method, const char *path)
{
    size_t n = 0;
    struct fake_req r;
    for (size_t i = 0; fake_nth(f, method, path, i, &r) == 0; i++) {
        n += strcmp(r.path, path) == 0;
        fake_req_free(&r);
    }
    return n;
}

/* The JSON body of the last request with exactly this method and path. */
static json_t *last_body(struct fake *f, const char *method, const char *path)
{
    json_t *body = NULL;
    struct fake_req r;
    for (size_t i = 0; fake_nth(f, method, path, i, &r) == 0; i++) {
        if (strcmp(r.path, path) == 0) {
            json_decref(body);
            body = fake_req_json(&r);
        }
        fake_req_free(&r);
    }
    return body;
}

static int json_eq_text(const json_t *j, const char *expected_q)
{
    json_t *want = qj(expected_q);
    int eq = json_equal((json_t *)j, want);
    if (!eq) {
        char *a = json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT | JSON_ENCODE_ANY);
        char *b = json_dumps(want, JSON_SORT_KEYS | JSON_COMPACT);
        fprintf(stderr, "\n  got  %s\n  want %s\n", a ? a : "NULL", b);
        free(a);
        free(b);
    }
    json_decref(want);
    return eq;
}

/* A 400/403/404/422 problem with the first issue naming `name` (NULL: no
 * issue expected). */
static void expect_problem(long st, json_t *j, long want_status, const char *name)
{
    CU_ASSERT_EQUAL(st, want_status);
    CU_ASSERT_EQUAL(ji(j, "status"), want_status);
    if (name)
        CU_ASSERT_STRING_EQUAL(js(j, "issues.0.name"), name);
    if (st != want_status || (name && strcmp(js(j, "issues.0.name"), name) != 0)) {
        char *d = json_dumps(j, JSON_COMPACT);
        fprintf(stderr, "\n  want %ld %s, got %ld %s\n", want_status, name ? name : "", st,
                d ? d : "(no JSON)");
        free(d);
    }
}

/* ---- validation ------------------------------------------------------------- */

struct vcase {
    const char *integration, *object, *body;
    long status;
    const char *issue;
};

static void test_validation_errors(void)
{
    static const struct vcase cases[] = {
        {"hs-int", "contacts", "{'type':'create','record':{'email':'a@x.test'}}", 400, "groupRef"},
        {"hs-int", "contacts", "{'groupRef':'','type':'create','record':{}}", 400, "groupRef"},
        {"hs-int", "contacts", "{'groupRef':'customer-1','type':'upsert','record':{}}", 400, "type"},
        {"hs-int", "contacts", "{'groupRef':'customer-1','record':{}}", 400, "type"},
        {"hs-int", "contacts", "{'groupRef':'customer-1','type':'create','mode':'later','record':{}}", 400, "mode"},
        {"hs-int", "contacts", "{'groupRef':'customer-1','type':'create','record':{},'batch':[{'record':{}}]}", 400, "batch"},
        {"hs-int", "contacts", "{'groupRef':'customer-1','type':'create'}", 400, "record"},
        {"hs-int", "contacts", "{'groupRef':'customer-1','type':'create','record':[1]}", 400, "record"},
        {"hs-int", "contacts", "{'groupRef':'customer-1','type':'create','batch':[]}", 400, "batch"},
        {"hs-int", "contacts", "{'groupRef':'customer-1','type':'update','record':{'email':'a@x.test'}}", 400, "record.id"},
        {"hs-int", "contacts", "{'groupRef':'customer-1','type':'delete','record':{}}", 400, "record.id"},
        {"hs-int", "contacts", "{'groupRef':'customer-1','type':'update','batch':[{'record':{'id':'1'}},{'record':{'email':'b'}}]}", 400, "batch[1].record.id"},
        {"hs-int", "contacts", "{'groupRef':'customer-1','type':'create','batch':[{'record':{},'extra':1}]}", 400, "batch[0].extra"},
        {"hs-int", "contacts", "{'groupRef':'customer-1','type':'delete','batch':[{'record':{'id':'1'}}]}", 400, "batch"},
        {"hs-int", "contacts", "{'groupRef':'customer-1','type':'delete','mode':'asynchronous','record':{'id':'1'}}", 400, "mode"},
        {"hs-int", "contacts", "{'groupRef':'customer-1','type':'create','mode':'asynchronous','record':{},'retryPolicy':{'deadlineHours':0}}", 400, "retryPolicy.deadlineHours"},
        {"hs-int", "contacts", "{'groupRef':'customer-1','type':'create','mode':'asynchronous','record':{},'retryPolicy':{'deadlineHours':49}}", 400, "retryPolicy.deadlineHours"},
        {"hs-int", "contacts", "{'groupRef':'customer-1','type':'create','mode':'asynchronous','record':{},'retryPolicy':{'deadlineHours':'2'}}", 400, "retryPolicy.deadlineHours"},
        {"hs-int", "contacts", "{'groupRef':'customer-1','type':'create','record':{},'retryPolicy':{'deadlineHours':2}}", 400, "retryPolicy"},
        {"hs-int", "contacts", "{'groupRef':'customer-1','type':'create','mode':'asynchronous','record':{},'autoBatchPolicy':{'maxDelayMinutes':0}}", 400, "autoBatchPolicy.maxDelayMinutes"},
        {"hs-int", "contacts", "{'groupRef':'customer-1','type':'create','mode':'asynchronous','record':{},'autoBatchPolicy':{'maxDelayMinutes':1441}}", 400, "autoBatchPolicy.maxDelayMinutes"},
        {"hs-int", "contacts", "{'groupRef':'customer-1','type':'create','mode':'asynchronous','record':{},'autoBatchPolicy':{}}", 400, "autoBatchPolicy.maxDelayMinutes"},
        {"hs-int", "contacts", "{'groupRef':'customer-1','type':'create','mode':'asynchronous','record':{},'autoBatchPolicy':{'maxDelayMinutes':5,'retryDeadlineHours':49}}", 400, "autoBatchPolicy.retryDeadlineHours"},
        {"hs-int", "contacts", "{'groupRef':'customer-1','type':'create','mode':'asynchronous','batch':[{'record':{}}],'autoBatchPolicy':{'maxDelayMinutes':5}}", 400, "autoBatchPolicy"},
        {"hs-int", "contacts", "{'groupRef':'customer-1','type':'create','record':{},'autoBatchPolicy':{'maxDelayMinutes':5}}", 400, "autoBatchPolicy"},
        {"hs-int", "contacts", "{'groupRef':'customer-1','type':'create','record':{},'batchPolicy':{'allOrNone':'yes'}}", 400, "batchPolicy.allOrNone"},
        {"hs-int", "contacts", "{'groupRef':'customer-1','type':'create','record':{},'associations':[{'to':{}}]}", 400, "associations[0]"},
        {"hs-int", "contacts", "{'groupRef':'customer-1','type':'create','batch':[{'record':{}}],'associations':[]}", 400, "associations"},
        {"hs-int", "contacts", "{'groupRef':'customer-1','type':'create','record':{},'headers':[{'key':'X-A'}]}", 400, "headers[0]"},
        {"hs-int", "contacts", "{'groupRef':'customer-1','type':'create','record':{},'colour':'red'}", 400, "colour"},
        {"sf-int", "Account", "{'groupRef':'customer-1','type':'create','mode':'asynchronous','record':{},'autoBatchPolicy':{'maxDelayMinutes':5},'headers':[{'key':'Sforce-Auto-Assign','value':'FALSE'}]}", 400, "headers"},
        {"hs-int", "contacts", "[1,2]", 400, NULL},
        /* Not a write object, no installation, no integration: 404. */
        {"hs-int", "tasks", "{'groupRef':'customer-1','type':'create','record':{}}", 404, NULL},
        {"hs-int", "contacts", "{'groupRef':'nobody','type':'create','record':{}}", 404, "groupRef"},
        {"no-such-int", "contacts", "{'groupRef':'customer-1','type':'create','record':{}}", 404, NULL},
    };
    size_t before = fake_count(hs, NULL, "/crm");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *j = NULL;
        long st = wr(cases[i].integration, cases[i].object, &j, "%s", cases[i].body);
        expect_problem(st, j, cases[i].status, cases[i].issue);
        json_decref(j);
    }
    /* A batch of 101. */
    json_t *batch = json_array();
    for (int i = 0; i < 101; i++)
        json_array_append_new(batch, json_pack("{s:{s:s}}", "record", "email", "x@x.test"));
    char *items = json_dumps(batch, JSON_COMPACT);
    json_decref(batch);
    json_t *j = NULL;
    long st = wr("hs-int", "contacts", &j, "{'groupRef':'customer-1','type':'create','batch':%s}",
                 items);
    free(items);
    expect_problem(st, j, 400, "batch");
    json_decref(j);
    /* Nothing reached the provider, and nothing needed a token. */
    CU_ASSERT_EQUAL(fake_count(hs, NULL, "/crm"), before);
}

/* ---- single records ---------------------------------------------------------- */

static void test_hubspot_create_and_update(void)
{
    json_t *j = NULL;
    long st = wr("hs-int", "contacts", &j,
                 "{'groupRef':'customer-1','type':'create','record':{'email':'ada@x.test',"
                 "'firstname':'Ada','age':36}}");
    CU_ASSERT_EQUAL_FATAL(st, 200);
    CU_ASSERT_TRUE(json_is_true(jget(j, "result.success")));
    const char *id = js(j, "result.recordId");
    json_t *rec = fake_hubspot_record(hs, "contacts", id);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rec);
    CU_ASSERT_STRING_EQUAL(js(rec, "properties.email"), "ada@x.test");
    CU_ASSERT_STRING_EQUAL(js(rec, "properties.age"), "36");
    /* result.data is the provider's answer. */
    CU_ASSERT_STRING_EQUAL(js(j, "result.data.id"), id);
    CU_ASSERT_STRING_EQUAL(js(j, "result.data.properties.firstname"), "Ada");
    /* The CRM objects API, body {properties}. */
    json_t *sent = last_body(hs, "POST", "/crm/v3/objects/contacts");
    CU_ASSERT_TRUE(json_eq_text(sent, "{'properties':{'email':'ada@x.test','firstname':'Ada','age':36}}"));
    json_decref(sent);
    /* The operation was recorded. */
    json_t *op = get_op(js(j, "operationId"));
    CU_ASSERT_STRING_EQUAL(js(op, "status"), "success");
    CU_ASSERT_STRING_EQUAL(js(op, "actionType"), "write");
    CU_ASSERT_STRING_EQUAL(js(op, "installationId"), inst_hs);
    CU_ASSERT_STRING_EQUAL(js(op, "projectId"), project_id);
    CU_ASSERT_STRING_EQUAL(js(op, "metadata.objects.0"), "contacts");
    CU_ASSERT_STRING_EQUAL(js(op, "metadata.successfulRecordIds.0"), id);
    CU_ASSERT_EQUAL(json_array_size(jget(op, "metadata.successfulRecordIds")), 1);
    CU_ASSERT_STRING_EQUAL(js(op, "result"), "1 of 1 records written");
    json_decref(op);

    char path[128];
    snprintf(path, sizeof path, "/crm/v3/objects/contacts/%s", id);
    json_t *u = NULL;
    st = wr("hs-int", "contacts", &u,
            "{'groupRef':'customer-1','type':'update','record':{'id':'%s','firstname':'Augusta'}}",
            id);
    CU_ASSERT_EQUAL(st, 200);
    CU_ASSERT_STRING_EQUAL(js(u, "result.recordId"), id);
    CU_ASSERT_STRING_EQUAL(js(u, "result.data.properties.firstname"), "Augusta");
    CU_ASSERT_EQUAL(count_exact(hs, "PATCH", path), 1);
    sent = last_body(hs, "PATCH", path);
    CU_ASSERT_TRUE(json_eq_text(sent, "{'properties':{'firstname':'Augusta'}}"));
    json_decref(sent);
    json_decref(rec);
    rec = fake_hubspot_record(hs, "contacts", id);
    CU_ASSERT_STRING_EQUAL(js(rec, "properties.firstname"), "Augusta");
    CU_ASSERT_STRING_EQUAL(js(rec, "properties.email"), "ada@x.test");
    json_decref(rec);
    json_decref(u);
    json_decref(j);
}

static void test_hubspot_rejection_is_422(void)
{
    json_t *j = NULL;
    long st = wr("hs-int", "contacts", &j,
                 "{'groupRef':'customer-1','type':'update','record':{'id':'999999','firstname':'X'}}");
    CU_ASSERT_EQUAL(st, 422);
    CU_ASSERT_TRUE(json_is_false(jget(j, "result.success")));
    CU_ASSERT_STRING_EQUAL(js(j, "errors.0.message"), "resource not found");
    CU_ASSERT_EQUAL(json_array_size(jget(j, "errors")), 1);
    json_t *op = get_op(js(j, "operationId"));
    CU_ASSERT_STRING_EQUAL(js(op, "status"), "failure");
    CU_ASSERT_STRING_EQUAL(js(op, "result"), "0 of 1 records written: resource not found");
    json_decref(op);
    json_decref(j);
    size_t n = fake_hubspot_count(hs, "contacts");
    st = wr("hs-int", "contacts", &j,
            "{'groupRef':'customer-1','type':'create','record':{'email':'INVALID'}}");
    CU_ASSERT_EQUAL(st, 422);
    CU_ASSERT_PTR_NOT_NULL(strstr(js(j, "errors.0.message"), "INVALID was not a valid value for property"));
    CU_ASSERT_EQUAL(fake_hubspot_count(hs, "contacts"), n);
    json_decref(j);
}

static void test_salesforce_create_and_update(void)
{
    json_t *j = NULL;
    size_t n = fake_salesforce_count(sf, "Account");
    long st = wr("sf-int", "Account", &j,
                 "{'groupRef':'customer-1','type':'create','record':{'Name':'Acme','Industry':'Energy'}}");
    CU_ASSERT_EQUAL_FATAL(st, 200);
    const char *id = js(j, "result.recordId");
    CU_ASSERT_EQUAL(strlen(id), 18);
    CU_ASSERT_STRING_EQUAL(js(j, "result.data.id"), id);
    CU_ASSERT_TRUE(json_is_true(jget(j, "result.data.success")));
    CU_ASSERT_EQUAL(fake_salesforce_count(sf, "Account"), n + 1);
    json_t *rec = fake_salesforce_record(sf, "Account", id);
    CU_ASSERT_STRING_EQUAL(js(rec, "Name"), "Acme");
    CU_ASSERT_STRING_EQUAL(js(rec, "Industry"), "Energy");
    json_decref(rec);
    /* The sObjects API at the version from plugboard.yaml. */
    json_t *sent = last_body(sf, "POST", "/services/data/v59.0/sobjects/Account");
    CU_ASSERT_TRUE(json_eq_text(sent, "{'Name':'Acme','Industry':'Energy'}"));
    json_decref(sent);

    json_t *u = NULL;
    st = wr("sf-int", "Account", &u,
            "{'groupRef':'customer-1','type':'update','record':{'id':'%s','Industry':'Retail'}}", id);
    CU_ASSERT_EQUAL(st, 200);
    CU_ASSERT_STRING_EQUAL(js(u, "result.recordId"), id);
    CU_ASSERT_TRUE(json_is_true(jget(u, "result.success")));
    char path[200];
    snprintf(path, sizeof path, "/services/data/v59.0/sobjects/Account/%s", id);
    sent = last_body(sf, "PATCH", path);
    CU_ASSERT_TRUE(json_eq_text(sent, "{'Industry':'Retail'}"));
    json_decref(sent);
    rec = fake_salesforce_record(sf, "Account", id);
    CU_ASSERT_STRING_EQUAL(js(rec, "Industry"), "Retail");
    CU_ASSERT_STRING_EQUAL(js(rec, "Name"), "Acme");
    json_decref(rec);
    json_decref(u);
    json_decref(j);
    /* A rejection: errors read back from Salesforce. */
    st = wr("sf-int", "Account", &j,
            "{'groupRef':'customer-1','type':'create','record':{'Name':'INVALID'}}");
    CU_ASSERT_EQUAL(st, 422);
    CU_ASSERT_STRING_EQUAL(js(j, "errors.0.message"), "Name: value INVALID is not allowed");
    CU_ASSERT_STRING_EQUAL(js(j, "errors.0.errorCode"), "FIELD_CUSTOM_VALIDATION_EXCEPTION");
    CU_ASSERT_TRUE(json_is_false(jget(j, "result.success")));
    CU_ASSERT_EQUAL(fake_salesforce_count(sf, "Account"), n + 1);
    json_decref(j);
}

static void test_refresh_after_401(void)
{
    fake_expire_token(hs, "hs-access-1");
    size_t calls = fake_token_calls(hs);
    json_t *j = NULL;
    long st = wr("hs-int", "contacts", &j,
                 "{'groupRef':'customer-1','type':'create','record':{'email':'r@x.test'}}");
    CU_ASSERT_EQUAL(st, 200);
    CU_ASSERT_EQUAL(fake_token_calls(hs), calls + 1);
    json_t *rec = fake_hubspot_record(hs, "contacts", js(j, "result.recordId"));
    CU_ASSERT_STRING_EQUAL(js(rec, "properties.email"), "r@x.test");
    json_decref(rec);
    json_decref(j);
}

static void test_auth_styles_and_project_name(void)
{
    /* Authorization: Bearer, and the project by name. */
    char url[512], auth[200];
    snprintf(url, sizeof url, "%s/v1/projects/write-test/integrations/hs-int/objects/contacts", base);
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", key);
    const char *h[] = {auth, "Content-Type: application/json", NULL};
    char *body = q("{'groupRef':'customer-1','type':'create','record':{'email':'bearer@x.test'}}");
    struct pbt_resp r;
    pbt_http("POST", url, h, body, &r);
    CU_ASSERT_EQUAL(r.status, 200);
    json_t *j = json_loads(r.body, 0, NULL);
    json_t *rec = fake_hubspot_record(hs, "contacts", js(j, "result.recordId"));
    CU_ASSERT_STRING_EQUAL(js(rec, "properties.email"), "bearer@x.test");
    json_decref(rec);
    json_decref(j);
    pbt_resp_free(&r);
    /* No key, a wrong key, another project's key. */
    const char *none[] = {"Content-Type: application/json", NULL};
    pbt_http("POST", url, none, body, &r);
    CU_ASSERT_EQUAL(r.status, 401);
    pbt_resp_free(&r);
    const char *wrong[] = {"x-api-key: pbk_wrong", NULL};
    pbt_http("POST", url, wrong, body, &r);
    CU_ASSERT_EQUAL(r.status, 401);
    pbt_resp_free(&r);
    snprintf(auth, sizeof auth, "x-api-key: %s", other_key);
    const char *other[] = {auth, NULL};
    pbt_http("POST", url, other, body, &r);
    CU_ASSERT_EQUAL(r.status, 404);
    pbt_resp_free(&r);
    free(body);
}

/* ---- deletes ------------------------------------------------------------------ */

static void test_delete(void)
{
    json_t *j = NULL;
    CU_ASSERT_EQUAL_FATAL(wr("hs-int", "contacts", &j,
                             "{'groupRef':'customer-1','type':'create','record':{'email':'d@x.test'}}"),
                          200);
    char id[64];
    snprintf(id, sizeof id, "%s", js(j, "result.recordId"));
    json_decref(j);
    long st = wr("hs-int", "contacts", &j,
                 "{'groupRef':'customer-1','type':'delete','record':{'id':'%s'}}", id);
    CU_ASSERT_EQUAL(st, 200);
    CU_ASSERT_TRUE(json_is_true(jget(j, "result.success")));
    CU_ASSERT_STRING_EQUAL(js(j, "result.recordId"), id);
    CU_ASSERT_PTR_NULL(fake_hubspot_record(hs, "contacts", id));
    char path[128];
    snprintf(path, sizeof path, "/crm/v3/objects/contacts/%s", id);
    CU_ASSERT_EQUAL(count_exact(hs, "DELETE", path), 1);
    json_t *op = get_op(js(j, "operationId"));
    CU_ASSERT_STRING_EQUAL(js(op, "status"), "success");
    json_decref(op);
    json_decref(j);
    /* Already gone: the provider's rejection. */
    st = wr("hs-int", "contacts", &j, "{'groupRef':'customer-1','type':'delete','record':{'id':'%s'}}",
            id);
    CU_ASSERT_EQUAL(st, 422);
    CU_ASSERT_STRING_EQUAL(js(j, "errors.0.message"), "resource not found");
    json_decref(j);

    /* Not enabled for companies: 403 saying how to enable it, provider untouched. */
    size_t before = fake_count(hs, "DELETE", NULL);
    st = wr("hs-int", "companies", &j, "{'groupRef':'customer-1','type':'delete','record':{'id':'1'}}");
    expect_problem(st, j, 403, NULL);
    CU_ASSERT_PTR_NOT_NULL(strstr(js(j, "detail"),
                                  "config.content.write.objects.companies.deletionSettings.enabled"));
    CU_ASSERT_EQUAL(fake_count(hs, "DELETE", NULL), before);
    json_decref(j);

    /* Salesforce: Account enabled, Contact not. */
    CU_ASSERT_EQUAL_FATAL(wr("sf-int", "Account", &j,
                             "{'groupRef':'customer-1','type':'create','record':{'Name':'Gone'}}"),
                          200);
    snprintf(id, sizeof id, "%s", js(j, "result.recordId"));
    json_decref(j);
    st = wr("sf-int", "Account", &j, "{'groupRef':'customer-1','type':'delete','record':{'id':'%s'}}",
            id);
    CU_ASSERT_EQUAL(st, 200);
    CU_ASSERT_STRING_EQUAL(js(j, "result.recordId"), id);
    CU_ASSERT_PTR_NULL(fake_salesforce_record(sf, "Account", id));
    snprintf(path, sizeof path, "/services/data/v59.0/sobjects/Account/%s", id);
    CU_ASSERT_EQUAL(count_exact(sf, "DELETE", path), 1);
    json_decref(j);
    st = wr("sf-int", "Contact", &j, "{'groupRef':'customer-1','type':'delete','record':{'id':'003x'}}");
    expect_problem(st, j, 403, NULL);
    json_decref(j);
}

/* ---- associations and headers -------------------------------------------------- */

static void test_associations(void)
{
    json_t *c = NULL, *j = NULL;
    CU_ASSERT_EQUAL_FATAL(wr("hs-int", "companies", &c,
                             "{'groupRef':'customer-1','type':'create','record':{'name':'Assoc Co'}}"),
                          200);
    const char *company = js(c, "result.recordId");
    long st = wr("hs-int", "contacts", &j,
                 "{'groupRef':'customer-1','type':'create','record':{'email':'as@x.test'},"
                 "'associations':[{'to':{'id':'%s'},'types':[{'associationCategory':'HUBSPOT_DEFINED',"
                 "'associationTypeId':279}]}]}",
                 company);
    CU_ASSERT_EQUAL_FATAL(st, 200);
    json_t *rec = fake_hubspot_record(hs, "contacts", js(j, "result.recordId"));
    CU_ASSERT_STRING_EQUAL(js(rec, "associations.0.to.id"), company);
    CU_ASSERT_EQUAL(ji(rec, "associations.0.types.0.associationTypeId"), 279);
    CU_ASSERT_STRING_EQUAL(js(rec, "associations.0.types.0.associationCategory"), "HUBSPOT_DEFINED");
    json_decref(rec);
    /* HubSpot's create body is {properties, associations}. */
    json_t *sent = last_body(hs, "POST", "/crm/v3/objects/contacts");
    char want[400];
    snprintf(want, sizeof want,
             "{'properties':{'email':'as@x.test'},'associations':[{'to':{'id':'%s'},'types':"
             "[{'associationCategory':'HUBSPOT_DEFINED','associationTypeId':279}]}]}",
             company);
    CU_ASSERT_TRUE(json_eq_text(sent, want));
    json_decref(sent);
    json_decref(j);
    /* In a batch, per item. */
    st = wr("hs-int", "contacts", &j,
            "{'groupRef':'customer-1','type':'create','batch':[{'record':{'email':'b1@x.test'},"
            "'associations':[{'to':{'id':'%s'},'types':[{'associationCategory':'HUBSPOT_DEFINED',"
            "'associationTypeId':279}]}]},{'record':{'email':'b2@x.test'}}]}",
            company);
    CU_ASSERT_EQUAL(st, 200);
    rec = fake_hubspot_record(hs, "contacts", js(j, "results.0.recordId"));
    CU_ASSERT_STRING_EQUAL(js(rec, "associations.0.to.id"), company);
    json_decref(rec);
    rec = fake_hubspot_record(hs, "contacts", js(j, "results.1.recordId"));
    CU_ASSERT_PTR_NULL(jget(rec, "associations"));
    json_decref(rec);
    json_decref(j);
    /* HubSpot takes associations only on create: 422 before any call. */
    size_t before = fake_count(hs, NULL, "/crm");
    st = wr("hs-int", "contacts", &j,
            "{'groupRef':'customer-1','type':'update','record':{'id':'1'},'associations':[{'to':"
            "{'id':'%s'},'types':[{'associationCategory':'HUBSPOT_DEFINED','associationTypeId':279}]}]}",
            company);
    expect_problem(st, j, 422, "associations");
    CU_ASSERT_PTR_NOT_NULL(strstr(js(j, "detail"), "provider 'hubspot'"));
    CU_ASSERT_EQUAL(fake_count(hs, NULL, "/crm"), before);
    json_decref(j);
    /* Salesforce has no associations slot. */
    before = fake_count(sf, NULL, NULL);
    st = wr("sf-int", "Account", &j,
            "{'groupRef':'customer-1','type':'create','record':{'Name':'A'},'associations':[{'to':"
            "{'id':'1'},'types':[{'associationCategory':'HUBSPOT_DEFINED','associationTypeId':1}]}]}");
    expect_problem(st, j, 422, "associations");
    CU_ASSERT_STRING_EQUAL(js(j, "detail"), "provider 'salesforce' does not support associations");
    CU_ASSERT_EQUAL(fake_count(sf, NULL, NULL), before);
    json_decref(j);
    json_decref(c);
}

static void test_headers(void)
{
    json_t *j = NULL;
    long st = wr("sf-int", "Account", &j,
                 "{'groupRef':'customer-1','type':'create','record':{'Name':'Hdr'},'headers':["
                 "{'key':'Sforce-Duplicate-Rule-Header','value':'allowSave=true'},"
                 "{'key':'Sforce-Auto-Assign','value':'FALSE'}]}");
    CU_ASSERT_EQUAL(st, 200);
    struct fake_req r;
    CU_ASSERT_EQUAL_FATAL(fake_last(sf, "POST", "/services/data/v59.0/sobjects/Account", &r), 0);
    CU_ASSERT_STRING_EQUAL(fake_req_header(&r, "Sforce-Duplicate-Rule-Header"), "allowSave=true");
    CU_ASSERT_STRING_EQUAL(fake_req_header(&r, "Sforce-Auto-Assign"), "FALSE");
    fake_req_free(&r);
    json_decref(j);
    /* A header the plugin will not forward. */
    size_t before = fake_count(sf, NULL, NULL);
    st = wr("sf-int", "Account", &j,
            "{'groupRef':'customer-1','type':'create','record':{'Name':'Hdr'},'headers':["
            "{'key':'Sforce-Auto-Assign','value':'FALSE'},{'key':'X-Forwarded-For','value':'1.2.3.4'}]}");
    expect_problem(st, j, 422, "headers[1].key");
    CU_ASSERT_EQUAL(fake_count(sf, NULL, NULL), before);
    json_decref(j);
    /* Any header to a provider without the slot. */
    before = fake_count(hs, NULL, NULL);
    st = wr("hs-int", "contacts", &j,
            "{'groupRef':'customer-1','type':'create','record':{'email':'h@x.test'},'headers':["
            "{'key':'X-Trace','value':'1'}]}");
    expect_problem(st, j, 422, "headers");
    CU_ASSERT_STRING_EQUAL(js(j, "detail"), "provider 'hubspot' does not support header passthrough");
    CU_ASSERT_EQUAL(fake_count(hs, NULL, NULL), before);
    json_decref(j);
}

static void test_provider_without_writes(void)
{
    json_t *j = NULL;
    size_t before = fake_count(echo, NULL, NULL);
    long st = wr("echo-int", "things", &j, "{'groupRef':'customer-1','type':'create','record':{'a':1}}");
    expect_problem(st, j, 422, "type");
    CU_ASSERT_STRING_EQUAL(js(j, "detail"), "provider 'echo' does not support writes");
    json_decref(j);
    st = wr("echo-int", "things", &j, "{'groupRef':'customer-1','type':'delete','record':{'id':'1'}}");
    expect_problem(st, j, 422, "type");
    CU_ASSERT_STRING_EQUAL(js(j, "detail"), "provider 'echo' does not support deletes");
    json_decref(j);
    CU_ASSERT_EQUAL(fake_count(echo, NULL, NULL), before);
}

/* ---- batches ---------------------------------------------------------------------- */

static void test_hubspot_batches(void)
{
    size_t n = fake_hubspot_count(hs, "contacts");
    size_t calls = count_exact(hs, "POST", "/crm/v3/objects/contacts/batch/create");
    json_t *j = NULL;
    long st = wr("hs-int", "contacts", &j,
                 "{'groupRef':'customer-1','type':'create','batch':[{'record':{'email':'b-1@x.test'}},"
                 "{'record':{'email':'INVALID'}},{'record':{'email':'b-3@x.test'}}]}");
    CU_ASSERT_EQUAL_FATAL(st, 200);
    CU_ASSERT_EQUAL(count_exact(hs, "POST", "/crm/v3/objects/contacts/batch/create"), calls + 1);
    CU_ASSERT_EQUAL(ji(j, "successCount"), 2);
    CU_ASSERT_EQUAL(ji(j, "failureCount"), 1);
    CU_ASSERT_EQUAL(json_array_size(jget(j, "results")), 3);
    CU_ASSERT_TRUE(json_is_true(jget(j, "results.0.success")));
    CU_ASSERT_TRUE(json_is_false(jget(j, "results.1.success")));
    CU_ASSERT_TRUE(json_is_true(jget(j, "results.2.success")));
    CU_ASSERT_PTR_NOT_NULL(strstr(js(j, "results.1.errors.0.message"),
                                  "INVALID was not a valid value for property \\\"email\\\"") ||
                           strstr(js(j, "results.1.errors.0.message"),
                                  "INVALID was not a valid value for property \"email\""));
    CU_ASSERT_EQUAL(ji(j, "errors.0.index"), 1);
    /* In input order: result i is record i. */
    json_t *r0 = fake_hubspot_record(hs, "contacts", js(j, "results.0.recordId"));
    json_t *r2 = fake_hubspot_record(hs, "contacts", js(j, "results.2.recordId"));
    CU_ASSERT_STRING_EQUAL(js(r0, "properties.email"), "b-1@x.test");
    CU_ASSERT_STRING_EQUAL(js(r2, "properties.email"), "b-3@x.test");
    CU_ASSERT_EQUAL(fake_hubspot_count(hs, "contacts"), n + 2);
    json_t *sent = last_body(hs, "POST", "/crm/v3/objects/contacts/batch/create");
    CU_ASSERT_EQUAL(json_array_size(jget(sent, "inputs")), 3);
    CU_ASSERT_STRING_EQUAL(js(sent, "inputs.2.properties.email"), "b-3@x.test");
    json_decref(sent);
    json_t *op = get_op(js(j, "operationId"));
    CU_ASSERT_STRING_EQUAL(js(op, "status"), "failure");
    CU_ASSERT_EQUAL(json_array_size(jget(op, "metadata.successfulRecordIds")), 2);
    json_decref(op);
    /* batch/update */
    json_t *u = NULL;
    st = wr("hs-int", "contacts", &u,
            "{'groupRef':'customer-1','type':'update','batch':[{'record':{'id':'%s','firstname':'Two'}},"
            "{'record':{'id':'%s','firstname':'Zero'}}]}",
            js(j, "results.2.recordId"), js(j, "results.0.recordId"));
    CU_ASSERT_EQUAL(st, 200);
    CU_ASSERT_EQUAL(ji(u, "successCount"), 2);
    CU_ASSERT_STRING_EQUAL(js(u, "results.0.recordId"), js(j, "results.2.recordId"));
    CU_ASSERT_STRING_EQUAL(js(u, "results.1.recordId"), js(j, "results.0.recordId"));
    CU_ASSERT_EQUAL(count_exact(hs, "POST", "/crm/v3/objects/contacts/batch/update"), 1);
    json_decref(r0);
    json_decref(r2);
    r0 = fake_hubspot_record(hs, "contacts", js(j, "results.0.recordId"));
    r2 = fake_hubspot_record(hs, "contacts", js(j, "results.2.recordId"));
    CU_ASSERT_STRING_EQUAL(js(r0, "properties.firstname"), "Zero");
    CU_ASSERT_STRING_EQUAL(js(r2, "properties.firstname"), "Two");
    json_decref(r0);
    json_decref(r2);
    json_decref(u);
    json_decref(j);
    /* 100 in one call. */
    json_t *items = json_array();
    for (int i = 0; i < 100; i++) {
        char e[64];
        snprintf(e, sizeof e, "hundred-%d@x.test", i);
        json_array_append_new(items, json_pack("{s:{s:s}}", "record", "email", e));
    }
    char *text = json_dumps(items, JSON_COMPACT);
    json_decref(items);
    n = fake_hubspot_count(hs, "contacts");
    st = wr("hs-int", "contacts", &j, "{'groupRef':'customer-1','type':'create','batch':%s}", text);
    free(text);
    CU_ASSERT_EQUAL(st, 200);
    CU_ASSERT_EQUAL(ji(j, "successCount"), 100);
    CU_ASSERT_EQUAL(ji(j, "failureCount"), 0);
    CU_ASSERT_EQUAL(fake_hubspot_count(hs, "contacts"), n + 100);
    json_t *r99 = fake_hubspot_record(hs, "contacts", js(j, "results.99.recordId"));
    CU_ASSERT_STRING_EQUAL(js(r99, "properties.email"), "hundred-99@x.test");
    json_decref(r99);
    json_decref(j);
}

static void test_hubspot_all_or_none_refused(void)
{
    size_t n = fake_hubspot_count(hs, "contacts"), before = fake_count(hs, NULL, NULL);
    json_t *j = NULL;
    long st = wr("hs-int", "contacts", &j,
                 "{'groupRef':'customer-1','type':'create','batchPolicy':{'allOrNone':true},"
                 "'batch':[{'record':{'email':'aon-1@x.test'}},{'record':{'email':'INVALID'}}]}");
    expect_problem(st, j, 422, "batchPolicy.allOrNone");
    CU_ASSERT_PTR_NOT_NULL(strstr(js(j, "detail"), "provider 'hubspot' does not support batchPolicy.allOrNone"));
    CU_ASSERT_EQUAL(fake_hubspot_count(hs, "contacts"), n);
    CU_ASSERT_EQUAL(fake_count(hs, NULL, NULL), before);
    json_decref(j);
    /* The same asynchronously: refused before it is stored. */
    st = wr("hs-int", "contacts", &j,
            "{'groupRef':'customer-1','type':'create','mode':'asynchronous','batchPolicy':"
            "{'allOrNone':true},'batch':[{'record':{'email':'aon-1@x.test'}}]}");
    expect_problem(st, j, 422, "batchPolicy.allOrNone");
    json_decref(j);
}

static void test_salesforce_batches(void)
{
    const char *coll = "/services/data/v59.0/composite/sobjects";
    size_t n = fake_salesforce_count(sf, "Contact");
    json_t *j = NULL;
    long st = wr("sf-int", "Contact", &j,
                 "{'groupRef':'customer-1','type':'create','batch':[{'record':{'LastName':'One'}},"
                 "{'record':{'LastName':'INVALID'}},{'record':{'LastName':'Three'}}]}");
    CU_ASSERT_EQUAL_FATAL(st, 200);
    CU_ASSERT_EQUAL(ji(j, "successCount"), 2);
    CU_ASSERT_EQUAL(ji(j, "failureCount"), 1);
    CU_ASSERT_STRING_EQUAL(js(j, "results.1.errors.0.errorCode"), "FIELD_CUSTOM_VALIDATION_EXCEPTION");
    CU_ASSERT_EQUAL(fake_salesforce_count(sf, "Contact"), n + 2);
    json_t *r = fake_salesforce_record(sf, "Contact", js(j, "results.2.recordId"));
    CU_ASSERT_STRING_EQUAL(js(r, "LastName"), "Three");
    json_decref(r);
    json_t *sent = last_body(sf, "POST", coll);
    CU_ASSERT_TRUE(json_is_false(jget(sent, "allOrNone")));
    CU_ASSERT_STRING_EQUAL(js(sent, "records.0.attributes.type"), "Contact");
    CU_ASSERT_STRING_EQUAL(js(sent, "records.0.LastName"), "One");
    json_decref(sent);
    /* Update: PATCH composite/sobjects. */
    json_t *u = NULL;
    st = wr("sf-int", "Contact", &u,
            "{'groupRef':'customer-1','type':'update','batch':[{'record':{'id':'%s','FirstName':'A'}},"
            "{'record':{'id':'%s','FirstName':'C'}}]}",
            js(j, "results.0.recordId"), js(j, "results.2.recordId"));
    CU_ASSERT_EQUAL(st, 200);
    CU_ASSERT_EQUAL(ji(u, "successCount"), 2);
    CU_ASSERT_EQUAL(count_exact(sf, "PATCH", coll), 1);
    r = fake_salesforce_record(sf, "Contact", js(j, "results.2.recordId"));
    CU_ASSERT_STRING_EQUAL(js(r, "FirstName"), "C");
    json_decref(r);
    json_decref(u);
    json_decref(j);

    /* allOrNone: one bad record and nothing is written; the response says
     * which record failed and why, and that the others were rolled back. */
    n = fake_salesforce_count(sf, "Contact");
    st = wr("sf-int", "Contact", &j,
            "{'groupRef':'customer-1','type':'create','batchPolicy':{'allOrNone':true},'batch':["
            "{'record':{'LastName':'Kept?'}},{'record':{'LastName':'INVALID'}},{'record':{'LastName':'No'}}]}");
    CU_ASSERT_EQUAL(st, 422);
    CU_ASSERT_EQUAL(ji(j, "successCount"), 0);
    CU_ASSERT_EQUAL(ji(j, "failureCount"), 3);
    CU_ASSERT_STRING_EQUAL(js(j, "results.1.errors.0.errorCode"), "FIELD_CUSTOM_VALIDATION_EXCEPTION");
    CU_ASSERT_STRING_EQUAL(js(j, "results.1.errors.0.message"), "LastName: value INVALID is not allowed");
    CU_ASSERT_STRING_EQUAL(js(j, "results.0.errors.0.errorCode"), "ALL_OR_NONE_OPERATION_ROLLED_BACK");
    CU_ASSERT_STRING_EQUAL(js(j, "results.2.errors.0.errorCode"), "ALL_OR_NONE_OPERATION_ROLLED_BACK");
    CU_ASSERT_EQUAL(fake_salesforce_count(sf, "Contact"), n);
    sent = last_body(sf, "POST", coll);
    CU_ASSERT_TRUE(json_is_true(jget(sent, "allOrNone")));
    json_decref(sent);
    json_t *op = get_op(js(j, "operationId"));
    CU_ASSERT_STRING_EQUAL(js(op, "status"), "failure");
    CU_ASSERT_EQUAL(json_array_size(jget(op, "metadata.successfulRecordIds")), 0);
    json_decref(op);
    json_decref(j);
    /* allOrNone with every record valid writes them all. */
    st = wr("sf-int", "Contact", &j,
            "{'groupRef':'customer-1','type':'create','batchPolicy':{'allOrNone':true},'batch':["
            "{'record':{'LastName':'All1'}},{'record':{'LastName':'All2'}}]}");
    CU_ASSERT_EQUAL(st, 200);
    CU_ASSERT_EQUAL(ji(j, "successCount"), 2);
    CU_ASSERT_EQUAL(fake_salesforce_count(sf, "Contact"), n + 2);
    json_decref(j);
}

/* ---- field settings and mappings ------------------------------------------------- */

static void test_field_settings(void)
{
    json_t *j = NULL;
    long st = wr("hs-int", "companies", &j,
                 "{'groupRef':'customer-1','type':'create','record':{'name':'Acme',"
                 "'description':'dropped on create','hs_lead_status':'NEW'}}");
    CU_ASSERT_EQUAL_FATAL(st, 200);
    json_t *sent = last_body(hs, "POST", "/crm/v3/objects/companies");
    CU_ASSERT_TRUE(json_eq_text(sent,
                                "{'properties':{'name':'Acme','hs_lead_status':'NEW','industry':"
                                "'TECHNOLOGY','numberofemployees':5,'is_public':true,'city':'Paris'}}"));
    json_decref(sent);
    char id[64];
    snprintf(id, sizeof id, "%s", js(j, "result.recordId"));
    json_t *rec = fake_hubspot_record(hs, "companies", id);
    CU_ASSERT_STRING_EQUAL(js(rec, "properties.industry"), "TECHNOLOGY");
    CU_ASSERT_STRING_EQUAL(js(rec, "properties.numberofemployees"), "5");
    CU_ASSERT_STRING_EQUAL(js(rec, "properties.is_public"), "true");
    CU_ASSERT_PTR_NULL(jget(rec, "properties.description"));
    json_decref(rec);
    json_decref(j);
    /* A value given is not replaced by the default. */
    st = wr("hs-int", "companies", &j,
            "{'groupRef':'customer-1','type':'create','record':{'name':'B','industry':'RETAIL',"
            "'numberofemployees':7,'is_public':false,'city':'Oslo'}}");
    CU_ASSERT_EQUAL(st, 200);
    sent = last_body(hs, "POST", "/crm/v3/objects/companies");
    CU_ASSERT_TRUE(json_eq_text(sent, "{'properties':{'name':'B','industry':'RETAIL',"
                                      "'numberofemployees':7,'is_public':false,'city':'Oslo'}}"));
    json_decref(sent);
    json_decref(j);
    /* Update: never drops, only writeOnUpdate: always defaults apply; with
     * no ifEmpty field in it, nothing is read first. */
    size_t reads = fake_count(hs, "GET", "/crm");
    st = wr("hs-int", "companies", &j,
            "{'groupRef':'customer-1','type':'update','record':{'id':'%s','name':'Acme 2',"
            "'hs_lead_status':'OPEN','description':'now allowed'}}",
            id);
    CU_ASSERT_EQUAL(st, 200);
    char path[128];
    snprintf(path, sizeof path, "/crm/v3/objects/companies/%s", id);
    sent = last_body(hs, "PATCH", path);
    CU_ASSERT_TRUE(json_eq_text(sent, "{'properties':{'name':'Acme 2','description':'now allowed',"
                                      "'city':'Paris'}}"));
    json_decref(sent);
    CU_ASSERT_EQUAL(fake_count(hs, "GET", "/crm"), reads);
    rec = fake_hubspot_record(hs, "companies", id);
    CU_ASSERT_STRING_EQUAL(js(rec, "properties.hs_lead_status"), "NEW");
    CU_ASSERT_STRING_EQUAL(js(rec, "properties.description"), "now allowed");
    json_decref(rec);
    json_decref(j);
    /* Batches get the same treatment per record. */
    st = wr("hs-int", "companies", &j,
            "{'groupRef':'customer-1','type':'create','batch':[{'record':{'name':'C1'}},"
            "{'record':{'name':'C2','industry':'RETAIL','description':'x'}}]}");
    CU_ASSERT_EQUAL(st, 200);
    sent = last_body(hs, "POST", "/crm/v3/objects/companies/batch/create");
    CU_ASSERT_TRUE(json_eq_text(jget(sent, "inputs.0.properties"),
                                "{'name':'C1','industry':'TECHNOLOGY','numberofemployees':5,"
                                "'is_public':true,'city':'Paris'}"));
    CU_ASSERT_TRUE(json_eq_text(jget(sent, "inputs.1.properties"),
                                "{'name':'C2','industry':'RETAIL','numberofemployees':5,"
                                "'is_public':true,'city':'Paris'}"));
    json_decref(sent);
    json_decref(j);
    /* writeOnUpdate: ifEmpty: the record is read first (it has no phone, so
     * the phone is written; more in test_if_empty_*). On create it is
     * written as any field. */
    size_t gets = fake_count(hs, "GET", "/crm");
    st = wr("hs-int", "companies", &j,
            "{'groupRef':'customer-1','type':'update','record':{'id':'%s','phone':'+1 555'}}", id);
    CU_ASSERT_EQUAL(st, 200);
    CU_ASSERT_EQUAL(fake_count(hs, "GET", "/crm"), gets + 1);
    sent = last_body(hs, "PATCH", path);
    CU_ASSERT_TRUE(json_eq_text(sent, "{'properties':{'phone':'+1 555','city':'Paris'}}"));
    json_decref(sent);
    json_decref(j);
    st = wr("hs-int", "companies", &j,
            "{'groupRef':'customer-1','type':'create','record':{'name':'P','phone':'+1 555'}}");
    CU_ASSERT_EQUAL(st, 200);
    sent = last_body(hs, "POST", "/crm/v3/objects/companies");
    CU_ASSERT_STRING_EQUAL(js(sent, "properties.phone"), "+1 555");
    json_decref(sent);
    json_decref(j);
}

static void test_inherit_mapping(void)
{
    json_t *j = NULL;
    long st = wr("hs-int", "deals", &j,
                 "{'groupRef':'customer-1','type':'create','record':{'title':'Big deal','value':1000,"
                 "'stage':'won','pipeline':'default'}}");
    CU_ASSERT_EQUAL_FATAL(st, 200);
    /* title -> dealname (manifest), value -> amount (this installation),
     * stage: mapped name left unmapped here, dropped; pipeline passes. */
    json_t *sent = last_body(hs, "POST", "/crm/v3/objects/deals");
    CU_ASSERT_TRUE(json_eq_text(sent, "{'properties':{'dealname':'Big deal','amount':1000,"
                                      "'pipeline':'default'}}"));
    json_decref(sent);
    json_t *rec = fake_hubspot_record(hs, "deals", js(j, "result.recordId"));
    CU_ASSERT_STRING_EQUAL(js(rec, "properties.dealname"), "Big deal");
    CU_ASSERT_STRING_EQUAL(js(rec, "properties.amount"), "1000");
    CU_ASSERT_PTR_NULL(jget(rec, "properties.stage"));
    CU_ASSERT_PTR_NULL(jget(rec, "properties.title"));
    json_decref(rec);
    char id[64];
    snprintf(id, sizeof id, "%s", js(j, "result.recordId"));
    json_decref(j);
    st = wr("hs-int", "deals", &j,
            "{'groupRef':'customer-1','type':'update','record':{'id':'%s','value':2000}}", id);
    CU_ASSERT_EQUAL(st, 200);
    char path[128];
    snprintf(path, sizeof path, "/crm/v3/objects/deals/%s", id);
    sent = last_body(hs, "PATCH", path);
    CU_ASSERT_TRUE(json_eq_text(sent, "{'properties':{'amount':2000}}"));
    json_decref(sent);
    json_decref(j);
}

/* ---- writeOnUpdate: ifEmpty ------------------------------------------------------- */

/* customer-ie's settings (set-up): hubspot companies phone and salesforce
 * Account Phone are ifEmpty; companies domain and Account Rating are ifEmpty
 * with a default, never written on create. */

/* The query of the last request with exactly this method and path. */
static char *last_query(struct fake *f, const char *method, const char *path)
{
    char *out = NULL;
    struct fake_req r;
    for (size_t i = 0; fake_nth(f, method, path, i, &r) == 0; i++) {
        if (strcmp(r.path, path) == 0) {
            free(out);
            out = strdup(r.query);
        }
        fake_req_free(&r);
    }
    return out ? out : strdup("(none)");
}

static void check_query(struct fake *f, const char *method, const char *path, const char *want)
{
    char *got = last_query(f, method, path);
    CU_ASSERT_STRING_EQUAL(got, want);
    if (strcmp(got, want) != 0)
        fprintf(stderr, "\n  %s %s?%s, want ?%s\n", method, path, got, want);
    free(got);
}

/* Creates a record for customer-ie (synchronously); its id into id. */
static void ie_create(const char *integration, const char *object, const char *record_q,
                      char id[64])
{
    json_t *j = NULL;
    long st = wr(integration, object, &j, "{'groupRef':'customer-ie','type':'create','record':%s}",
                 record_q);
    CU_ASSERT_EQUAL(st, 200);
    snprintf(id, 64, "%s", js(j, "result.recordId"));
    json_decref(j);
}

static void test_if_empty_hubspot(void)
{
    char a[64], b[64], c[64], d[64], path[160], want[1024];
    ie_create("hs-int", "companies", "{'name':'IE A','phone':'+1 111'}", a);
    ie_create("hs-int", "companies", "{'name':'IE B'}", b);
    ie_create("hs-int", "companies", "{'name':'IE C','phone':''}", c);
    json_t *rec = fake_hubspot_record(hs, "companies", a);
    CU_ASSERT_STRING_EQUAL(js(rec, "properties.phone"), "+1 111");
    CU_ASSERT_PTR_NULL(jget(rec, "properties.domain"));
    json_decref(rec);

    /* A has a phone: the caller's is dropped; its domain is empty: the
     * default is written. The record is read first, asking for both. */
    json_t *j = NULL;
    long st = wr("hs-int", "companies", &j,
                 "{'groupRef':'customer-ie','type':'update','record':{'id':'%s','name':'IE A2',"
                 "'phone':'+9 999'}}",
                 a);
    CU_ASSERT_EQUAL(st, 200);
    CU_ASSERT_TRUE(json_is_true(jget(j, "result.success")));
    json_decref(j);
    snprintf(path, sizeof path, "/crm/v3/objects/companies/%s", a);
    check_query(hs, "GET", path, "properties=phone,domain");
    struct fake_req get, patch;
    CU_ASSERT_EQUAL(fake_last(hs, "GET", path, &get), 0);
    CU_ASSERT_EQUAL(fake_last(hs, "PATCH", path, &patch), 0);
    CU_ASSERT_TRUE(get.at <= patch.at);
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_req_header(&get, "Authorization"), "Bearer "));
    fake_req_free(&get);
    fake_req_free(&patch);
    json_t *sent = last_body(hs, "PATCH", path);
    CU_ASSERT_TRUE(json_eq_text(sent, "{'properties':{'name':'IE A2','domain':'default.example'}}"));
    json_decref(sent);
    rec = fake_hubspot_record(hs, "companies", a);
    CU_ASSERT_STRING_EQUAL(js(rec, "properties.phone"), "+1 111");
    CU_ASSERT_STRING_EQUAL(js(rec, "properties.domain"), "default.example");
    CU_ASSERT_STRING_EQUAL(js(rec, "properties.name"), "IE A2");
    json_decref(rec);

    /* B has neither: both written. C's phone is "": empty too. */
    st = wr("hs-int", "companies", &j,
            "{'groupRef':'customer-ie','type':'update','record':{'id':'%s','phone':'+2 222'}}", b);
    CU_ASSERT_EQUAL(st, 200);
    json_decref(j);
    snprintf(path, sizeof path, "/crm/v3/objects/companies/%s", b);
    sent = last_body(hs, "PATCH", path);
    CU_ASSERT_TRUE(json_eq_text(sent, "{'properties':{'phone':'+2 222','domain':'default.example'}}"));
    json_decref(sent);
    st = wr("hs-int", "companies", &j,
            "{'groupRef':'customer-ie','type':'update','record':{'id':'%s','phone':'+3 333'}}", c);
    CU_ASSERT_EQUAL(st, 200);
    json_decref(j);
    rec = fake_hubspot_record(hs, "companies", c);
    CU_ASSERT_STRING_EQUAL(js(rec, "properties.phone"), "+3 333");
    json_decref(rec);

    /* A batch is read in one call; each record keeps what is empty for it.
     * A record that does not exist has nothing to keep (the update then
     * fails for it at HubSpot). */
    ie_create("hs-int", "companies", "{'name':'IE D'}", d);
    st = wr("hs-int", "companies", &j,
            "{'groupRef':'customer-ie','type':'update','batch':["
            "{'record':{'id':'%s','phone':'+4'}},"
            "{'record':{'id':'%s','phone':'+5','domain':'b.example'}},"
            "{'record':{'id':'%s','phone':'+6'}},"
            "{'record':{'id':'99999999','phone':'+7'}}]}",
            a, b, d);
    CU_ASSERT_EQUAL(st, 200);
    CU_ASSERT_EQUAL(ji(j, "successCount"), 3);
    CU_ASSERT_EQUAL(ji(j, "failureCount"), 1);
    CU_ASSERT_TRUE(json_is_false(jget(j, "results.3.success")));
    json_decref(j);
    sent = last_body(hs, "POST", "/crm/v3/objects/companies/batch/read");
    snprintf(want, sizeof want,
             "{'properties':['phone','domain'],'inputs':[{'id':'%s'},{'id':'%s'},{'id':'%s'},"
             "{'id':'99999999'}]}",
             a, b, d);
    CU_ASSERT_TRUE(json_eq_text(sent, want));
    json_decref(sent);
    sent = last_body(hs, "POST", "/crm/v3/objects/companies/batch/update");
    CU_ASSERT_TRUE(json_eq_text(jget(sent, "inputs.0.properties"), "{}"));
    CU_ASSERT_TRUE(json_eq_text(jget(sent, "inputs.1.properties"), "{}"));
    CU_ASSERT_TRUE(json_eq_text(jget(sent, "inputs.2.properties"),
                                "{'phone':'+6','domain':'default.example'}"));
    CU_ASSERT_TRUE(json_eq_text(jget(sent, "inputs.3.properties"),
                                "{'phone':'+7','domain':'default.example'}"));
    json_decref(sent);
    rec = fake_hubspot_record(hs, "companies", a);
    CU_ASSERT_STRING_EQUAL(js(rec, "properties.phone"), "+1 111");
    json_decref(rec);
    rec = fake_hubspot_record(hs, "companies", b);
    CU_ASSERT_STRING_EQUAL(js(rec, "properties.phone"), "+2 222");
    CU_ASSERT_STRING_EQUAL(js(rec, "properties.domain"), "default.example");
    json_decref(rec);
    rec = fake_hubspot_record(hs, "companies", d);
    CU_ASSERT_STRING_EQUAL(js(rec, "properties.phone"), "+6");
    CU_ASSERT_STRING_EQUAL(js(rec, "properties.domain"), "default.example");
    json_decref(rec);

    /* A read the provider cannot answer now: 502, retryable, nothing written. */
    snprintf(path, sizeof path, "/crm/v3/objects/companies/%s", b);
    size_t patches = count_exact(hs, "PATCH", path);
    struct fake_fault f503 = {.status = 503};
    fake_inject(hs, "GET", path, &f503, 1);
    st = wr("hs-int", "companies", &j,
            "{'groupRef':'customer-ie','type':'update','record':{'id':'%s','name':'IE B2'}}", b);
    expect_problem(st, j, 502, NULL);
    CU_ASSERT_TRUE(json_is_true(jget(j, "retryable")));
    CU_ASSERT_PTR_NOT_NULL(strstr(js(j, "detail"), "provider 'hubspot' answered 503 while reading "
                                                   "the current values"));
    json_decref(j);
    CU_ASSERT_EQUAL(count_exact(hs, "PATCH", path), patches);
    struct fake_fault f429 = {.status = 429, .retry_after = "3"};
    fake_inject(hs, "GET", path, &f429, 1);
    st = wr("hs-int", "companies", &j,
            "{'groupRef':'customer-ie','type':'update','record':{'id':'%s','name':'IE B2'}}", b);
    expect_problem(st, j, 429, NULL);
    json_decref(j);
    CU_ASSERT_EQUAL(count_exact(hs, "PATCH", path), patches);
}

static void test_if_empty_async_read_retry(void)
{
    char b[64], path[160];
    ie_create("hs-int", "companies", "{'name':'IE async','phone':'+1 000'}", b);
    snprintf(path, sizeof path, "/crm/v3/objects/companies/%s", b);
    size_t gets = count_exact(hs, "GET", path);
    struct fake_fault f503 = {.status = 503};
    fake_inject(hs, "GET", path, &f503, 1);
    json_t *j = NULL;
    long st = wr("hs-int", "companies", &j,
                 "{'groupRef':'customer-ie','type':'update','mode':'asynchronous','record':"
                 "{'id':'%s','name':'IE async 2','phone':'+9'}}",
                 b);
    CU_ASSERT_EQUAL_FATAL(st, 200);
    char id[64];
    snprintf(id, sizeof id, "%s", js(j, "operationId"));
    json_decref(j);
    CU_ASSERT_EQUAL(wait_attempts(id, 1, 5000), 1);
    json_t *op = get_op(id);
    CU_ASSERT_STRING_EQUAL(js(op, "status"), "in_progress");
    CU_ASSERT_STRING_EQUAL(js(op, "metadata.lastError"),
                           "provider 'hubspot' answered 503 while reading the current values "
                           "(writeOnUpdate: ifEmpty)");
    json_decref(op);
    CU_ASSERT_EQUAL(count_exact(hs, "GET", path), gets + 1);
    CU_ASSERT_EQUAL(count_exact(hs, "PATCH", path), 0);
    /* The retry reads again, then writes what is still empty. */
    advance(2500);
    op = wait_done(id, 5000);
    CU_ASSERT_STRING_EQUAL(js(op, "status"), "success");
    CU_ASSERT_EQUAL(ji(op, "metadata.retry.attempts"), 2);
    json_decref(op);
    CU_ASSERT_EQUAL(count_exact(hs, "GET", path), gets + 2);
    json_t *sent = last_body(hs, "PATCH", path);
    CU_ASSERT_TRUE(json_eq_text(sent, "{'properties':{'name':'IE async 2','domain':'default.example'}}"));
    json_decref(sent);
    json_t *rec = fake_hubspot_record(hs, "companies", b);
    CU_ASSERT_STRING_EQUAL(js(rec, "properties.phone"), "+1 000");
    json_decref(rec);
}

/* The fake has no sObject Collections retrieve (GET composite/sobjects/{obj});
 * its answer is injected, made of the fake's own records as Salesforce
 * would return them (null for an id it does not have). */
static void sf_canned_collection(char *const *ids, size_t n, int times)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *rec = fake_salesforce_record(sf, "Account", ids[i]);
        json_array_append_new(arr, rec ? rec : json_null());
    }
    char *body = json_dumps(arr, JSON_COMPACT);
    json_decref(arr);
    struct fake_fault canned = {.status = 200, .body = body};
    fake_inject(sf, "GET", "/services/data/v59.0/composite/sobjects/Account", &canned, times);
    free(body);
}

static void test_if_empty_salesforce(void)
{
    char x[64], y[64], z[64], path[200], want[1024];
    ie_create("sf-int", "Account", "{'Name':'IE X','Phone':'111'}", x);
    ie_create("sf-int", "Account", "{'Name':'IE Y'}", y);
    json_t *rec = fake_salesforce_record(sf, "Account", x);
    CU_ASSERT_PTR_NULL(jget(rec, "Rating"));
    json_decref(rec);

    json_t *j = NULL;
    long st = wr("sf-int", "Account", &j,
                 "{'groupRef':'customer-ie','type':'update','record':{'id':'%s','Name':'IE X2',"
                 "'Phone':'999'}}",
                 x);
    CU_ASSERT_EQUAL(st, 200);
    json_decref(j);
    snprintf(path, sizeof path, "/services/data/v59.0/sobjects/Account/%s", x);
    check_query(sf, "GET", path, "fields=Phone,Rating");
    json_t *sent = last_body(sf, "PATCH", path);
    CU_ASSERT_TRUE(json_eq_text(sent, "{'Name':'IE X2','Rating':'Warm'}"));
    json_decref(sent);
    rec = fake_salesforce_record(sf, "Account", x);
    CU_ASSERT_STRING_EQUAL(js(rec, "Phone"), "111");
    CU_ASSERT_STRING_EQUAL(js(rec, "Rating"), "Warm");
    json_decref(rec);

    st = wr("sf-int", "Account", &j,
            "{'groupRef':'customer-ie','type':'update','record':{'id':'%s','Phone':'222'}}", y);
    CU_ASSERT_EQUAL(st, 200);
    json_decref(j);
    snprintf(path, sizeof path, "/services/data/v59.0/sobjects/Account/%s", y);
    sent = last_body(sf, "PATCH", path);
    CU_ASSERT_TRUE(json_eq_text(sent, "{'Phone':'222','Rating':'Warm'}"));
    json_decref(sent);

    /* A batch: one collection read, then each record keeps what is empty. */
    ie_create("sf-int", "Account", "{'Name':'IE Z'}", z);
    char *ids[] = {x, y, z};
    sf_canned_collection(ids, 3, 1);
    st = wr("sf-int", "Account", &j,
            "{'groupRef':'customer-ie','type':'update','batch':["
            "{'record':{'id':'%s','Phone':'333'}},"
            "{'record':{'id':'%s','Rating':'Hot'}},"
            "{'record':{'id':'%s','Phone':'444'}}]}",
            x, y, z);
    CU_ASSERT_EQUAL(st, 200);
    CU_ASSERT_EQUAL(ji(j, "successCount"), 3);
    json_decref(j);
    snprintf(want, sizeof want, "ids=%s,%s,%s&fields=Phone,Rating", x, y, z);
    check_query(sf, "GET", "/services/data/v59.0/composite/sobjects/Account", want);
    sent = last_body(sf, "PATCH", "/services/data/v59.0/composite/sobjects");
    snprintf(want, sizeof want,
             "{'allOrNone':false,'records':["
             "{'attributes':{'type':'Account'},'id':'%s'},"
             "{'attributes':{'type':'Account'},'id':'%s'},"
             "{'attributes':{'type':'Account'},'id':'%s','Phone':'444','Rating':'Warm'}]}",
             x, y, z);
    CU_ASSERT_TRUE(json_eq_text(sent, want));
    json_decref(sent);
    rec = fake_salesforce_record(sf, "Account", y);
    CU_ASSERT_STRING_EQUAL(js(rec, "Rating"), "Warm");
    json_decref(rec);
    rec = fake_salesforce_record(sf, "Account", z);
    CU_ASSERT_STRING_EQUAL(js(rec, "Phone"), "444");
    CU_ASSERT_STRING_EQUAL(js(rec, "Rating"), "Warm");
    json_decref(rec);

    /* Asynchronously: the collection read answers 503 first, the write is
     * retried, read again and sent. */
    char w[64];
    ie_create("sf-int", "Account", "{'Name':'IE W','Phone':'555'}", w);
    struct fake_fault f503 = {.status = 503};
    fake_inject(sf, "GET", "/services/data/v59.0/composite/sobjects/Account", &f503, 1);
    char *ids2[] = {w, z};
    sf_canned_collection(ids2, 2, 1);
    size_t patches = count_exact(sf, "PATCH", "/services/data/v59.0/composite/sobjects");
    st = wr("sf-int", "Account", &j,
            "{'groupRef':'customer-ie','type':'update','mode':'asynchronous','batch':["
            "{'record':{'id':'%s','Phone':'666'}},{'record':{'id':'%s','Phone':'777'}}]}",
            w, z);
    CU_ASSERT_EQUAL_FATAL(st, 200);
    char op_id[64];
    snprintf(op_id, sizeof op_id, "%s", js(j, "operationId"));
    json_decref(j);
    CU_ASSERT_EQUAL(wait_attempts(op_id, 1, 5000), 1);
    json_t *op = get_op(op_id);
    CU_ASSERT_STRING_EQUAL(js(op, "status"), "in_progress");
    CU_ASSERT_STRING_EQUAL(js(op, "metadata.lastError"),
                           "provider 'salesforce' answered 503 while reading the current values "
                           "(writeOnUpdate: ifEmpty)");
    json_decref(op);
    CU_ASSERT_EQUAL(count_exact(sf, "PATCH", "/services/data/v59.0/composite/sobjects"), patches);
    advance(2500);
    op = wait_done(op_id, 5000);
    CU_ASSERT_STRING_EQUAL(js(op, "status"), "success");
    CU_ASSERT_EQUAL(ji(op, "metadata.retry.attempts"), 2);
    json_decref(op);
    sent = last_body(sf, "PATCH", "/services/data/v59.0/composite/sobjects");
    snprintf(want, sizeof want,
             "{'allOrNone':false,'records':["
             "{'attributes':{'type':'Account'},'id':'%s','Rating':'Warm'},"
             "{'attributes':{'type':'Account'},'id':'%s'}]}",
             w, z);
    CU_ASSERT_TRUE(json_eq_text(sent, want));
    json_decref(sent);
    rec = fake_salesforce_record(sf, "Account", w);
    CU_ASSERT_STRING_EQUAL(js(rec, "Phone"), "555");
    CU_ASSERT_STRING_EQUAL(js(rec, "Rating"), "Warm");
    json_decref(rec);
}

/* ---- synchronous provider failures ------------------------------------------------ */

static void test_sync_provider_outage(void)
{
    struct fake_fault f503 = {.status = 503};
    fake_inject(hs, "POST", "/crm/v3/objects/tickets", &f503, 1);
    json_t *j = NULL;
    long st = wr("hs-int", "tickets", &j,
                 "{'groupRef':'customer-1','type':'create','record':{'subject':'s'}}");
    expect_problem(st, j, 502, NULL);
    CU_ASSERT_TRUE(json_is_true(jget(j, "retryable")));
    CU_ASSERT_PTR_NOT_NULL(strstr(js(j, "detail"), "provider 'hubspot' answered 503"));
    json_decref(j);
    struct fake_fault f429 = {.status = 429, .retry_after = "7"};
    fake_inject(hs, "POST", "/crm/v3/objects/tickets", &f429, 1);
    st = wr("hs-int", "tickets", &j, "{'groupRef':'customer-1','type':'create','record':{'subject':'s'}}");
    expect_problem(st, j, 429, NULL);
    json_decref(j);
    st = wr("hs-int", "tickets", &j, "{'groupRef':'customer-1','type':'create','record':{'subject':'s'}}");
    CU_ASSERT_EQUAL(st, 200);
    json_decref(j);
}

/* ---- asynchronous writes ------------------------------------------------------------- */

static void test_async_write_is_stored_then_run(void)
{
    /* Workers stopped: the accepted write waits in the store. */
    pb_writer_stop(app->writer);
    app->writer = NULL;
    size_t before = count_exact(hs, "POST", "/crm/v3/objects/contacts");
    json_t *j = NULL;
    long st = wr("hs-int", "contacts", &j,
                 "{'groupRef':'customer-1','type':'create','mode':'asynchronous','record':{'email':'async@x.test'}}");
    CU_ASSERT_EQUAL_FATAL(st, 200);
    CU_ASSERT_EQUAL(json_object_size(j), 1);
    char id[64];
    snprintf(id, sizeof id, "%s", js(j, "operationId"));
    json_decref(j);
    nap(200);
    json_t *op = get_op(id);
    CU_ASSERT_STRING_EQUAL(js(op, "status"), "in_progress");
    CU_ASSERT_EQUAL(ji(op, "metadata.retry.attempts"), 0);
    CU_ASSERT_STRING_EQUAL(js(op, "metadata.objects.0"), "contacts");
    json_decref(op);
    CU_ASSERT_EQUAL(count_exact(hs, "POST", "/crm/v3/objects/contacts"), before);
    CU_ASSERT_EQUAL_FATAL(pb_writer_start(app, 2, &app->writer), 0);
    op = wait_done(id, 5000);
    CU_ASSERT_STRING_EQUAL(js(op, "status"), "success");
    CU_ASSERT_EQUAL(ji(op, "metadata.retry.attempts"), 1);
    CU_ASSERT_PTR_NOT_NULL(jget(op, "metadata.retry.lastAttempt"));
    CU_ASSERT_STRING_EQUAL(js(op, "result"), "1 of 1 records written");
    json_t *rec = fake_hubspot_record(hs, "contacts", js(op, "metadata.successfulRecordIds.0"));
    CU_ASSERT_STRING_EQUAL(js(rec, "properties.email"), "async@x.test");
    json_decref(rec);
    json_decref(op);
    CU_ASSERT_EQUAL(count_exact(hs, "POST", "/crm/v3/objects/contacts"), before + 1);
    /* A rejection is final at once. */
    st = wr("hs-int", "contacts", &j,
            "{'groupRef':'customer-1','type':'create','mode':'asynchronous','record':{'email':'INVALID'}}");
    CU_ASSERT_EQUAL(st, 200);
    op = wait_done(js(j, "operationId"), 5000);
    CU_ASSERT_STRING_EQUAL(js(op, "status"), "failure");
    CU_ASSERT_EQUAL(ji(op, "metadata.retry.attempts"), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(js(op, "result"), "0 of 1 records written: Property values were not valid"));
    json_decref(op);
    json_decref(j);
    /* Salesforce asynchronously, with headers. */
    st = wr("sf-int", "Account", &j,
            "{'groupRef':'customer-1','type':'create','mode':'asynchronous','record':{'Name':'Later'},"
            "'headers':[{'key':'Sforce-Auto-Assign','value':'FALSE'}]}");
    CU_ASSERT_EQUAL(st, 200);
    op = wait_done(js(j, "operationId"), 5000);
    CU_ASSERT_STRING_EQUAL(js(op, "status"), "success");
    rec = fake_salesforce_record(sf, "Account", js(op, "metadata.successfulRecordIds.0"));
    CU_ASSERT_STRING_EQUAL(js(rec, "Name"), "Later");
    struct fake_req r;
    CU_ASSERT_EQUAL(fake_last(sf, "POST", "/services/data/v59.0/sobjects/Account", &r), 0);
    CU_ASSERT_STRING_EQUAL(fake_req_header(&r, "Sforce-Auto-Assign"), "FALSE");
    fake_req_free(&r);
    json_decref(rec);
    json_decref(op);
    json_decref(j);
}

static void test_async_retries_until_success(void)
{
    const char *path = "/crm/v3/objects/tickets";
    fake_reset(hs);
    struct fake_fault f429 = {.status = 429, .retry_after = "30"};
    struct fake_fault f500 = {.status = 500};
    struct fake_fault f503 = {.status = 503};
    fake_inject(hs, "POST", path, &f429, 1);
    fake_inject(hs, "POST", path, &f500, 1);
    fake_inject(hs, "POST", path, &f503, 1);
    json_t *j = NULL;
    long st = wr("hs-int", "tickets", &j,
                 "{'groupRef':'customer-1','type':'create','mode':'asynchronous','record':{'subject':'retry me'},"
                 "'retryPolicy':{'deadlineHours':2}}");
    CU_ASSERT_EQUAL_FATAL(st, 200);
    char id[64];
    snprintf(id, sizeof id, "%s", js(j, "operationId"));
    json_decref(j);
    CU_ASSERT_EQUAL(wait_attempts(id, 1, 5000), 1);
    CU_ASSERT_EQUAL(count_exact(hs, "POST", path), 1);
    json_t *op = get_op(id);
    CU_ASSERT_STRING_EQUAL(js(op, "status"), "in_progress");
    CU_ASSERT_STRING_EQUAL(js(op, "metadata.lastError"), "provider 'hubspot' answered 429");
    json_decref(op);
    /* Retry-After: 30 is honoured: nothing at +20 s. */
    advance(20 * 1000);
    nap(600);
    CU_ASSERT_EQUAL(count_exact(hs, "POST", path), 1);
    advance(11 * 1000);
    CU_ASSERT_EQUAL(wait_attempts(id, 2, 5000), 2);
    CU_ASSERT_EQUAL(count_exact(hs, "POST", path), 2);
    /* Then exponential backoff: the second retry waits 2 to 4 s. */
    advance(1000);
    nap(400);
    CU_ASSERT_EQUAL(count_exact(hs, "POST", path), 2);
    advance(3500);
    CU_ASSERT_EQUAL(wait_attempts(id, 3, 5000), 3);
    advance(9000);
    op = wait_done(id, 5000);
    CU_ASSERT_STRING_EQUAL(js(op, "status"), "success");
    CU_ASSERT_EQUAL(ji(op, "metadata.retry.attempts"), 4);
    CU_ASSERT_EQUAL(count_exact(hs, "POST", path), 4);
    json_t *rec = fake_hubspot_record(hs, "tickets", js(op, "metadata.successfulRecordIds.0"));
    CU_ASSERT_STRING_EQUAL(js(rec, "properties.subject"), "retry me");
    json_decref(rec);
    json_decref(op);
}

static void test_async_deadline_failure(void)
{
    const char *path = "/crm/v3/objects/tickets";
    fake_reset(hs);
    struct fake_fault f503 = {.status = 503};
    fake_inject(hs, "POST", path, &f503, -1);
    size_t tickets = fake_hubspot_count(hs, "tickets");
    json_t *j = NULL;
    long st = wr("hs-int", "tickets", &j,
                 "{'groupRef':'customer-1','type':'create','mode':'asynchronous','record':{'subject':'doomed'},"
                 "'retryPolicy':{'deadlineHours':1}}");
    CU_ASSERT_EQUAL_FATAL(st, 200);
    char id[64];
    snprintf(id, sizeof id, "%s", js(j, "operationId"));
    json_decref(j);
    long long advanced = 0, attempts = 0;
    json_t *op = NULL;
    for (int step = 0; step < 40; step++) {
        attempts = wait_attempts(id, attempts + 1, 5000);
        op = get_op(id);
        if (strcmp(js(op, "status"), "in_progress") != 0)
            break;
        json_decref(op);
        op = NULL;
        advance(6 * 60 * 1000);
        advanced += 6 * 60 * 1000;
    }
    CU_ASSERT_PTR_NOT_NULL_FATAL(op);
    CU_ASSERT_STRING_EQUAL(js(op, "status"), "failure");
    CU_ASSERT_STRING_EQUAL(js(op, "result"), "retry deadline passed: provider 'hubspot' answered 503");
    CU_ASSERT_STRING_EQUAL(js(op, "metadata.lastError"), "provider 'hubspot' answered 503");
    /* Tried until the hour was up, not after. */
    CU_ASSERT_TRUE(advanced >= 60 * 60 * 1000 && advanced <= 66 * 60 * 1000);
    CU_ASSERT_EQUAL(ji(op, "metadata.retry.attempts"), (long long)count_exact(hs, "POST", path));
    CU_ASSERT_TRUE(ji(op, "metadata.retry.attempts") >= 11);
    CU_ASSERT_EQUAL(fake_hubspot_count(hs, "tickets"), tickets);
    json_decref(op);
    fake_reset(hs);
}

static void test_async_batches(void)
{
    /* HubSpot: an asynchronous batch with associations per item. */
    json_t *c = NULL, *j = NULL;
    CU_ASSERT_EQUAL_FATAL(wr("hs-int", "companies", &c,
                             "{'groupRef':'customer-1','type':'create','record':{'name':'Async Co'}}"),
                          200);
    long st = wr("hs-int", "contacts", &j,
                 "{'groupRef':'customer-1','type':'create','mode':'asynchronous','batch':["
                 "{'record':{'email':'ab-1@x.test'},'associations':[{'to':{'id':'%s'},'types':"
                 "[{'associationCategory':'HUBSPOT_DEFINED','associationTypeId':279}]}]},"
                 "{'record':{'email':'ab-2@x.test'}}]}",
                 js(c, "result.recordId"));
    CU_ASSERT_EQUAL_FATAL(st, 200);
    json_t *op = wait_done(js(j, "operationId"), 5000);
    CU_ASSERT_STRING_EQUAL(js(op, "status"), "success");
    CU_ASSERT_STRING_EQUAL(js(op, "result"), "2 of 2 records written");
    json_t *rec = fake_hubspot_record(hs, "contacts", js(op, "metadata.successfulRecordIds.0"));
    CU_ASSERT_STRING_EQUAL(js(rec, "properties.email"), "ab-1@x.test");
    CU_ASSERT_STRING_EQUAL(js(rec, "associations.0.to.id"), js(c, "result.recordId"));
    json_decref(rec);
    json_decref(op);
    json_decref(j);
    json_decref(c);
    /* Salesforce: allOrNone asynchronously writes nothing when one fails. */
    size_t n = fake_salesforce_count(sf, "Contact");
    st = wr("sf-int", "Contact", &j,
            "{'groupRef':'customer-1','type':'create','mode':'asynchronous','batchPolicy':"
            "{'allOrNone':true},'batch':[{'record':{'LastName':'Fine'}},{'record':{'LastName':'INVALID'}}]}");
    CU_ASSERT_EQUAL_FATAL(st, 200);
    op = wait_done(js(j, "operationId"), 5000);
    CU_ASSERT_STRING_EQUAL(js(op, "status"), "failure");
    CU_ASSERT_EQUAL(json_array_size(jget(op, "metadata.successfulRecordIds")), 0);
    CU_ASSERT_EQUAL(ji(op, "metadata.errors.1.index"), 1);
    CU_ASSERT_STRING_EQUAL(js(op, "metadata.errors.1.errorCode"), "FIELD_CUSTOM_VALIDATION_EXCEPTION");
    CU_ASSERT_STRING_EQUAL(js(op, "metadata.errors.0.errorCode"), "ALL_OR_NONE_OPERATION_ROLLED_BACK");
    CU_ASSERT_EQUAL(fake_salesforce_count(sf, "Contact"), n);
    json_decref(op);
    json_decref(j);
}

static void test_async_network_and_classified_retries(void)
{
    const char *path = "/services/data/v59.0/sobjects/Account";
    fake_reset(sf);
    struct fake_fault reset = {.reset = 1};
    struct fake_fault lock = {.status = 400,
                              .body = "[{\"message\":\"unable to obtain exclusive access to this "
                                      "record\",\"errorCode\":\"UNABLE_TO_LOCK_ROW\"}]"};
    struct fake_fault limit = {.status = 403,
                               .body = "[{\"message\":\"TotalRequests Limit exceeded.\","
                                       "\"errorCode\":\"REQUEST_LIMIT_EXCEEDED\"}]"};
    fake_inject(sf, "POST", path, &reset, 1);
    fake_inject(sf, "POST", path, &lock, 1);
    fake_inject(sf, "POST", path, &limit, 1);
    json_t *j = NULL;
    long st = wr("sf-int", "Account", &j,
                 "{'groupRef':'customer-1','type':'create','mode':'asynchronous','record':{'Name':'Persistent'}}");
    CU_ASSERT_EQUAL_FATAL(st, 200);
    char id[64];
    snprintf(id, sizeof id, "%s", js(j, "operationId"));
    json_decref(j);
    /* A dropped connection: retried after 1 to 2 s. */
    CU_ASSERT_EQUAL(wait_attempts(id, 1, 5000), 1);
    CU_ASSERT_EQUAL(count_exact(sf, "POST", path), 1);
    advance(2500);
    /* UNABLE_TO_LOCK_ROW is a 400 the plugin classifies as retryable. */
    CU_ASSERT_EQUAL(wait_attempts(id, 2, 5000), 2);
    json_t *op = get_op(id);
    CU_ASSERT_STRING_EQUAL(js(op, "metadata.lastError"), "provider 'salesforce' answered 400");
    json_decref(op);
    advance(4500);
    /* REQUEST_LIMIT_EXCEEDED: rate limited, no retry for 60 s. */
    CU_ASSERT_EQUAL(wait_attempts(id, 3, 5000), 3);
    advance(30 * 1000);
    nap(500);
    CU_ASSERT_EQUAL(count_exact(sf, "POST", path), 3);
    advance(31 * 1000);
    op = wait_done(id, 5000);
    CU_ASSERT_STRING_EQUAL(js(op, "status"), "success");
    CU_ASSERT_EQUAL(ji(op, "metadata.retry.attempts"), 4);
    CU_ASSERT_EQUAL(count_exact(sf, "POST", path), 4);
    json_t *rec = fake_salesforce_record(sf, "Account", js(op, "metadata.successfulRecordIds.0"));
    CU_ASSERT_STRING_EQUAL(js(rec, "Name"), "Persistent");
    json_decref(rec);
    json_decref(op);
}

/* ---- auto batching -------------------------------------------------------------------- */

struct sender {
    int from, to;
    char (*ids)[64];
    int failures;
};

static void *send_writes(void *arg)
{
    struct sender *s = arg;
    for (int i = s->from; i < s->to; i++) {
        json_t *j = NULL;
        long st = wr("hs-int", "contacts", &j,
                     "{'groupRef':'customer-1','type':'create','mode':'asynchronous','record':"
                     "{'email':'auto-%d@x.test'},'autoBatchPolicy':{'maxDelayMinutes':10}}",
                     i);
        if (st == 200)
            snprintf(s->ids[i], 64, "%s", js(j, "operationId"));
        else
            s->failures++;
        json_decref(j);
    }
    return NULL;
}

static void test_autobatch_1000_as_ten_calls(void)
{
    const char *batch_path = "/crm/v3/objects/contacts/batch/create";
    fake_reset(hs);
    size_t n = fake_hubspot_count(hs, "contacts");
    static char ids[1000][64];
    struct sender s = {0, 1000, ids, 0};
    send_writes(&s);
    CU_ASSERT_EQUAL(s.failures, 0);
    /* Arrival order decides the bucket: write i is in batch i / 100. */
    int grouped = 1;
    for (int i = 0; i < 1000; i++) {
        grouped &= strcmp(ids[i], ids[i - i % 100]) == 0;
        if (i % 100 == 0 && i > 0)
            grouped &= strcmp(ids[i], ids[i - 100]) != 0;
    }
    CU_ASSERT_TRUE(grouped);
    for (int b = 0; b < 10; b++) {
        json_t *op = wait_done(ids[b * 100], 10000);
        CU_ASSERT_STRING_EQUAL(js(op, "status"), "success");
        CU_ASSERT_EQUAL(json_array_size(jget(op, "metadata.successfulRecordIds")), 100);
        CU_ASSERT_STRING_EQUAL(js(op, "result"), "100 of 100 records written");
        json_decref(op);
    }
    CU_ASSERT_EQUAL(count_exact(hs, "POST", batch_path), 10);
    CU_ASSERT_EQUAL(count_exact(hs, "POST", "/crm/v3/objects/contacts"), 0);
    CU_ASSERT_EQUAL(fake_hubspot_count(hs, "contacts"), n + 1000);
    int full = 1, ordered = 1;
    for (size_t i = 0; i < 10; i++) {
        struct fake_req r;
        if (fake_nth(hs, "POST", batch_path, i, &r) != 0) {
            full = 0;
            break;
        }
        json_t *body = fake_req_json(&r);
        full &= json_array_size(jget(body, "inputs")) == 100;
        /* Every call holds 100 consecutive writes, first to last. */
        const char *first = js(body, "inputs.0.properties.email");
        int k = -1;
        sscanf(first, "auto-%d@", &k);
        ordered &= k >= 0 && k % 100 == 0;
        char want[64];
        snprintf(want, sizeof want, "auto-%d@x.test", k + 99);
        ordered &= strcmp(js(body, "inputs.99.properties.email"), want) == 0;
        json_decref(body);
        fake_req_free(&r);
    }
    CU_ASSERT_TRUE(full);
    CU_ASSERT_TRUE(ordered);
}

static void test_autobatch_lone_write_after_max_delay(void)
{
    const char *batch_path = "/crm/v3/objects/contacts/batch/create";
    fake_reset(hs);
    json_t *a = NULL, *b = NULL, *c = NULL;
    CU_ASSERT_EQUAL_FATAL(wr("hs-int", "contacts", &a,
                             "{'groupRef':'customer-1','type':'create','mode':'asynchronous','record':"
                             "{'email':'lone-a@x.test'},'autoBatchPolicy':{'maxDelayMinutes':5}}"),
                          200);
    advance(2 * 60 * 1000);
    /* A second write within the delay joins the first one's batch... */
    CU_ASSERT_EQUAL_FATAL(wr("hs-int", "contacts", &b,
                             "{'groupRef':'customer-1','type':'create','mode':'asynchronous','record':"
                             "{'email':'lone-b@x.test'},'autoBatchPolicy':{'maxDelayMinutes':60}}"),
                          200);
    CU_ASSERT_STRING_EQUAL(js(a, "operationId"), js(b, "operationId"));
    /* ...an update gathers apart. */
    CU_ASSERT_EQUAL_FATAL(wr("hs-int", "contacts", &c,
                             "{'groupRef':'customer-1','type':'update','mode':'asynchronous','record':"
                             "{'id':'1','email':'x'},'autoBatchPolicy':{'maxDelayMinutes':5}}"),
                          200);
    CU_ASSERT_STRING_NOT_EQUAL(js(a, "operationId"), js(c, "operationId"));
    /* 4.5 minutes after the first write: still waiting. */
    advance(150 * 1000);
    nap(600);
    CU_ASSERT_EQUAL(count_exact(hs, "POST", batch_path), 0);
    json_t *op = get_op(js(a, "operationId"));
    CU_ASSERT_STRING_EQUAL(js(op, "status"), "in_progress");
    json_decref(op);
    /* maxDelayMinutes after the first write, both go in one call. */
    advance(31 * 1000);
    op = wait_done(js(a, "operationId"), 5000);
    CU_ASSERT_STRING_EQUAL(js(op, "status"), "success");
    CU_ASSERT_EQUAL(json_array_size(jget(op, "metadata.successfulRecordIds")), 2);
    json_decref(op);
    CU_ASSERT_EQUAL(count_exact(hs, "POST", batch_path), 1);
    json_t *sent = last_body(hs, "POST", batch_path);
    CU_ASSERT_EQUAL(json_array_size(jget(sent, "inputs")), 2);
    CU_ASSERT_STRING_EQUAL(js(sent, "inputs.0.properties.email"), "lone-a@x.test");
    CU_ASSERT_STRING_EQUAL(js(sent, "inputs.1.properties.email"), "lone-b@x.test");
    json_decref(sent);
    /* The update (its own bucket, 5 minutes after it came) goes as
     * batch/update. */
    CU_ASSERT_EQUAL(count_exact(hs, "POST", "/crm/v3/objects/contacts/batch/update"), 0);
    advance(2 * 60 * 1000);
    op = wait_done(js(c, "operationId"), 5000);
    CU_ASSERT_STRING_EQUAL(js(op, "status"), "failure"); /* record 1 does not exist */
    json_decref(op);
    CU_ASSERT_EQUAL(count_exact(hs, "POST", "/crm/v3/objects/contacts/batch/update"), 1);
    /* A lone write goes alone. */
    json_t *d = NULL;
    CU_ASSERT_EQUAL_FATAL(wr("hs-int", "contacts", &d,
                             "{'groupRef':'customer-1','type':'create','mode':'asynchronous','record':"
                             "{'email':'alone@x.test'},'autoBatchPolicy':{'maxDelayMinutes':1}}"),
                          200);
    nap(400);
    CU_ASSERT_EQUAL(count_exact(hs, "POST", batch_path), 1);
    advance(61 * 1000);
    op = wait_done(js(d, "operationId"), 5000);
    CU_ASSERT_STRING_EQUAL(js(op, "status"), "success");
    json_t *rec = fake_hubspot_record(hs, "contacts", js(op, "metadata.successfulRecordIds.0"));
    CU_ASSERT_STRING_EQUAL(js(rec, "properties.email"), "alone@x.test");
    json_decref(rec);
    json_decref(op);
    CU_ASSERT_EQUAL(count_exact(hs, "POST", batch_path), 2);
    sent = last_body(hs, "POST", batch_path);
    CU_ASSERT_EQUAL(json_array_size(jget(sent, "inputs")), 1);
    json_decref(sent);
    json_decref(a);
    json_decref(b);
    json_decref(c);
    json_decref(d);
}

static void test_autobatch_deadline_is_first_writes(void)
{
    const char *path = "/crm/v3/objects/tickets/batch/create";
    fake_reset(hs);
    struct fake_fault f503 = {.status = 503};
    fake_inject(hs, "POST", path, &f503, -1);
    json_t *a = NULL, *b = NULL;
    CU_ASSERT_EQUAL_FATAL(wr("hs-int", "tickets", &a,
                             "{'groupRef':'customer-1','type':'create','mode':'asynchronous','record':"
                             "{'subject':'first'},'autoBatchPolicy':{'maxDelayMinutes':1,'retryDeadlineHours':1}}"),
                          200);
    CU_ASSERT_EQUAL_FATAL(wr("hs-int", "tickets", &b,
                             "{'groupRef':'customer-1','type':'create','mode':'asynchronous','record':"
                             "{'subject':'second'},'autoBatchPolicy':{'maxDelayMinutes':1,'retryDeadlineHours':48}}"),
                          200);
    CU_ASSERT_STRING_EQUAL(js(a, "operationId"), js(b, "operationId"));
    const char *id = js(a, "operationId");
    advance(61 * 1000);
    long long advanced = 61 * 1000, attempts = 0;
    json_t *op = NULL;
    for (int step = 0; step < 40; step++) {
        attempts = wait_attempts(id, attempts + 1, 5000);
        op = get_op(id);
        if (strcmp(js(op, "status"), "in_progress") != 0)
            break;
        json_decref(op);
        op = NULL;
        advance(6 * 60 * 1000);
        advanced += 6 * 60 * 1000;
    }
    CU_ASSERT_STRING_EQUAL(js(op, "status"), "failure");
    CU_ASSERT_STRING_EQUAL(js(op, "result"), "retry deadline passed: provider 'hubspot' answered 503");
    CU_ASSERT_TRUE(advanced >= 60 * 60 * 1000 && advanced <= 67 * 60 * 1000);
    json_decref(op);
    json_decref(a);
    json_decref(b);
    fake_reset(hs);
}

/* ---- restarts ---------------------------------------------------------------------------- */

static int open_app(void)
{
    char err[1024];
    if (pb_app_open(cfgpath, PB_APP_ALL, &app, err, sizeof err) != 0) {
        fprintf(stderr, "open: %s\n", err);
        return -1;
    }
    struct pb_server *srv;
    if (pb_server_start(app, &srv, err, sizeof err) != 0) {
        fprintf(stderr, "server: %s\n", err);
        return -1;
    }
    snprintf(base, sizeof base, "http://127.0.0.1:%d", pb_server_port(srv));
    return pb_writer_start(app, 2, &app->writer);
}

static void test_restart_keeps_queued_and_claimed_writes(void)
{
    const char *batch_path = "/crm/v3/objects/tickets/batch/create";
    fake_reset(hs);
    json_t *a = NULL, *b = NULL, *c = NULL;
    CU_ASSERT_EQUAL_FATAL(wr("hs-int", "tickets", &a,
                             "{'groupRef':'customer-1','type':'create','mode':'asynchronous','record':"
                             "{'subject':'queued-1'},'autoBatchPolicy':{'maxDelayMinutes':5}}"),
                          200);
    CU_ASSERT_EQUAL_FATAL(wr("hs-int", "tickets", &b,
                             "{'groupRef':'customer-1','type':'create','mode':'asynchronous','record':"
                             "{'subject':'queued-2'},'autoBatchPolicy':{'maxDelayMinutes':5}}"),
                          200);
    /* An operation a crashed worker had claimed: the workers are stopped,
     * the write accepted, and a worker that will never finish claims it. */
    pb_writer_stop(app->writer);
    app->writer = NULL;
    CU_ASSERT_EQUAL_FATAL(wr("hs-int", "tickets", &c,
                             "{'groupRef':'customer-1','type':'create','mode':'asynchronous','record':"
                             "{'subject':'claimed'}}"),
                          200);
    json_t *claimed = NULL;
    int64_t now = pb_now_ms();
    CU_ASSERT_EQUAL(pb_store_operation_claim(app->store, "wrk_crashed", now, now + 3600 * 1000, 10,
                                             &claimed),
                    0);
    CU_ASSERT_EQUAL(json_array_size(claimed), 1);
    CU_ASSERT_STRING_EQUAL(js(claimed, "0.id"), js(c, "operationId"));
    json_decref(claimed);
    /* Restart. */
    pb_app_close(app);
    app = NULL;
    CU_ASSERT_EQUAL_FATAL(open_app(), 0);
    /* The claimed one runs again at once (no waiting out the claim). */
    json_t *op = wait_done(js(c, "operationId"), 5000);
    CU_ASSERT_STRING_EQUAL(js(op, "status"), "success");
    json_t *rec = fake_hubspot_record(hs, "tickets", js(op, "metadata.successfulRecordIds.0"));
    CU_ASSERT_STRING_EQUAL(js(rec, "properties.subject"), "claimed");
    json_decref(rec);
    json_decref(op);
    /* The bucket is still there and goes when its time comes. */
    CU_ASSERT_EQUAL(count_exact(hs, "POST", batch_path), 0);
    advance(5 * 60 * 1000 + 1000);
    op = wait_done(js(a, "operationId"), 5000);
    CU_ASSERT_STRING_EQUAL(js(op, "status"), "success");
    CU_ASSERT_EQUAL(json_array_size(jget(op, "metadata.successfulRecordIds")), 2);
    json_decref(op);
    CU_ASSERT_EQUAL(count_exact(hs, "POST", batch_path), 1);
    json_decref(a);
    json_decref(b);
    json_decref(c);
}

/* ---- the operations API ------------------------------------------------------------------ */

/* ---- concurrency and the control-plane cache ---------------------------------- */

static int connect_and_install(const char *integration, const char *conn_body, const char *config,
                               char *inst_out);

#define CW_THREADS 32
#define CW_PER_THREAD 25

struct cw {
    int t;
    int not_200, not_stored;
    char ids[CW_PER_THREAD][64];
};

/* Asynchronous writes from many clients at once (they share commits in
 * the store): each acknowledged operation is in the store when its 200
 * arrives. */
static void *cw_main(void *arg)
{
    struct cw *w = arg;
    for (int i = 0; i < CW_PER_THREAD; i++) {
        json_t *j = NULL;
        long st = wr("hs-int", "contacts", &j,
                     "{'groupRef':'customer-3','type':'create','mode':'asynchronous',"
                     "'record':{'email':'cw-%d-%d@x.test'}}",
                     w->t, i);
        snprintf(w->ids[i], sizeof w->ids[i], "%s", js(j, "operationId"));
        json_decref(j);
        if (st != 200) {
            w->not_200++;
            continue;
        }
        json_t *op = NULL;
        if (pb_store_operation_get(app->store, project_id, w->ids[i], &op) != PB_STORE_OK)
            w->not_stored++;
        json_decref(op);
    }
    return NULL;
}

static void test_async_concurrent_clients(void)
{
    size_t before = count_exact(hs, "POST", "/crm/v3/objects/contacts");
    static struct cw w[CW_THREADS];
    pthread_t th[CW_THREADS];
    for (int t = 0; t < CW_THREADS; t++) {
        memset(&w[t], 0, sizeof w[t]);
        w[t].t = t;
        CU_ASSERT_EQUAL_FATAL(pthread_create(&th[t], NULL, cw_main, &w[t]), 0);
    }
    int not_200 = 0, not_stored = 0;
    for (int t = 0; t < CW_THREADS; t++) {
        pthread_join(th[t], NULL);
        not_200 += w[t].not_200;
        not_stored += w[t].not_stored;
    }
    CU_ASSERT_EQUAL(not_200, 0);
    CU_ASSERT_EQUAL(not_stored, 0);
    /* Distinct operations, every one run once, to success. */
    json_t *seen = json_object();
    int bad = 0;
    for (int t = 0; t < CW_THREADS; t++) {
        for (int i = 0; i < CW_PER_THREAD; i++) {
            json_object_set_new(seen, w[t].ids[i], json_true());
            json_t *op = wait_done(w[t].ids[i], 20000);
            if (strcmp(js(op, "status"), "success") != 0 ||
                ji(op, "metadata.retry.attempts") != 1)
                bad++;
            json_decref(op);
        }
    }
    CU_ASSERT_EQUAL(json_object_size(seen), CW_THREADS * CW_PER_THREAD);
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT_EQUAL(count_exact(hs, "POST", "/crm/v3/objects/contacts"),
                    before + CW_THREADS * CW_PER_THREAD);
    json_decref(seen);
}

/* A write finds the integration and installation through the control-plane
 * cache: a changed config, and a deleted installation, are seen by the very
 * next write. */
static void test_installation_changes_seen_at_once(void)
{
    char inst[64];
    const char *body =
        "{'groupRef':'customer-cache','provider':'hubspot','oauth2AuthorizationCode':"
        "{'accessToken':{'token':'hs-access-1','expiresAt':'2099-01-01T00:00:00Z'},"
        "'refreshToken':{'token':'hs-refresh-1'}}}";
    CU_ASSERT_EQUAL_FATAL(
        connect_and_install("hs-int", body,
                            "{'content':{'write':{'objects':{'companies':{'selectedFieldSettings':"
                            "{'industry':{'default':{'stringValue':'FIRST'}}}}}}}}",
                            inst),
        0);
    const char *path = "/crm/v3/objects/companies";
    json_t *j = NULL, *sent = NULL;
    for (int round = 0; round < 2; round++) {
        CU_ASSERT_EQUAL(wr("hs-int", "companies", &j,
                           "{'groupRef':'customer-cache','type':'create','record':{'name':'C%d'}}",
                           round),
                        200);
        json_decref(j);
        sent = last_body(hs, "POST", path);
        CU_ASSERT_STRING_EQUAL(js(sent, "properties.industry"), "FIRST");
        json_decref(sent);
    }
    json_t *cur = NULL;
    CU_ASSERT_EQUAL_FATAL(pb_store_installation_get(app->store, project_id, inst, &cur),
                          PB_STORE_OK);
    json_t *cfg = qj("{'content':{'write':{'objects':{'companies':{'selectedFieldSettings':"
                     "{'industry':{'default':{'stringValue':'SECOND'}}}}}}}}");
    CU_ASSERT_EQUAL(pb_store_installation_update(app->store, project_id, inst,
                                                 js(cur, "connectionId"), cfg, NULL),
                    PB_STORE_OK);
    json_decref(cfg);
    json_decref(cur);
    CU_ASSERT_EQUAL(wr("hs-int", "companies", &j,
                       "{'groupRef':'customer-cache','type':'create','record':{'name':'C2'}}"),
                    200);
    json_decref(j);
    sent = last_body(hs, "POST", path);
    CU_ASSERT_STRING_EQUAL(js(sent, "properties.industry"), "SECOND");
    json_decref(sent);
    CU_ASSERT_EQUAL(pb_store_installation_delete(app->store, project_id, inst), PB_STORE_OK);
    long st = wr("hs-int", "companies", &j,
                 "{'groupRef':'customer-cache','type':'create','mode':'asynchronous',"
                 "'record':{'name':'C3'}}");
    expect_problem(st, j, 404, "groupRef");
    json_decref(j);
}

static void test_operations_api(void)
{
    char made[5][64];
    for (int i = 0; i < 5; i++) {
        json_t *j = NULL;
        CU_ASSERT_EQUAL_FATAL(wr("hs-int", "contacts", &j,
                                 "{'groupRef':'customer-3','type':'create','record':{'email':'p%d@x.test'}}",
                                 i),
                              200);
        snprintf(made[i], sizeof made[i], "%s", js(j, "operationId"));
        json_decref(j);
        nap(5);
    }
    json_t *op = get_op(made[0]);
    const char *keys[] = {"actionType", "createTime", "id", "installationId", "integrationId",
                          "metadata", "projectId", "result", "status", "updateTime"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        CU_ASSERT_PTR_NOT_NULL(json_object_get(op, keys[i]));
    CU_ASSERT_EQUAL(json_object_size(op), 10);
    CU_ASSERT_STRING_EQUAL(js(op, "id"), made[0]);
    CU_ASSERT_STRING_EQUAL(js(op, "installationId"), inst_hs3);
    CU_ASSERT_STRING_EQUAL(js(op, "status"), "success");
    json_decref(op);
    /* Paged, newest first. */
    char path[400];
    json_t *page = NULL;
    int seen = 0;
    char token[512] = "";
    int sizes[3] = {0};
    for (int p = 0; p < 3; p++) {
        snprintf(path, sizeof path,
                 "/v1/projects/%s/integrations/hs-int/installations/%s/operations?pageSize=2%s%s",
                 project_id, inst_hs3, token[0] ? "&pageToken=" : "", token);
        CU_ASSERT_EQUAL_FATAL(request("GET", path, key, NULL, &page), 200);
        json_t *ops = jget(page, "operations");
        sizes[p] = (int)json_array_size(ops);
        for (size_t i = 0; i < json_array_size(ops); i++, seen++)
            CU_ASSERT_STRING_EQUAL(js(ops, i == 0 ? "0.id" : "1.id"), made[4 - seen]);
        snprintf(token, sizeof token, "%s", js(page, "nextPageToken"));
        if (!jget(page, "nextPageToken"))
            token[0] = '\0';
        json_decref(page);
    }
    CU_ASSERT_EQUAL(sizes[0], 2);
    CU_ASSERT_EQUAL(sizes[1], 2);
    CU_ASSERT_EQUAL(sizes[2], 1);
    CU_ASSERT_EQUAL(token[0], '\0');
    /* Errors. */
    snprintf(path, sizeof path,
             "/v1/projects/%s/integrations/hs-int/installations/%s/operations?pageSize=0", project_id,
             inst_hs3);
    json_t *j = NULL;
    long st = request("GET", path, key, NULL, &j);
    expect_problem(st, j, 400, "pageSize");
    json_decref(j);
    snprintf(path, sizeof path,
             "/v1/projects/%s/integrations/hs-int/installations/%s/operations?pageToken=zz", project_id,
             inst_hs3);
    st = request("GET", path, key, NULL, &j);
    expect_problem(st, j, 400, "pageToken");
    json_decref(j);
    snprintf(path, sizeof path, "/v1/projects/%s/integrations/hs-int/installations/inst_nope/operations",
             project_id);
    st = request("GET", path, key, NULL, &j);
    expect_problem(st, j, 404, NULL);
    json_decref(j);
    snprintf(path, sizeof path, "/v1/projects/%s/operations/op_nope", project_id);
    st = request("GET", path, key, NULL, &j);
    expect_problem(st, j, 404, NULL);
    json_decref(j);
    /* Another project's key sees nothing. */
    snprintf(path, sizeof path, "/v1/projects/%s/operations/%s", other_project, made[0]);
    st = request("GET", path, other_key, NULL, &j);
    expect_problem(st, j, 404, NULL);
    json_decref(j);
    snprintf(path, sizeof path, "/v1/projects/%s/operations/%s", project_id, made[0]);
    CU_ASSERT_EQUAL(request("GET", path, other_key, NULL, &j), 404);
    json_decref(j);
    CU_ASSERT_EQUAL(request("GET", path, "pbk_wrong", NULL, &j), 401);
    json_decref(j);
}

/* ---- set-up -------------------------------------------------------------------------------- */

static int connect_and_install(const char *integration, const char *conn_body, const char *config,
                               char *inst_out)
{
    struct pb_problem p = {0};
    json_t *body = qj(conn_body), *conn = NULL, *inst = NULL;
    if (!body || pb_ctl_connection_generate(app, project_id, body, &conn, &p) != 0) {
        fprintf(stderr, "connection: %s\n", p.detail);
        return -1;
    }
    json_t *cfg = qj(config);
    json_t *ib = json_pack("{s:O, s:O, s:o}", "groupRef", json_object_get(body, "groupRef"),
                           "connectionId", json_object_get(conn, "id"), "config", cfg);
    int rc = pb_ctl_installation_create(app, project_id, integration, ib, &inst, &p);
    if (rc != 0)
        fprintf(stderr, "installation: %s\n", p.detail);
    else
        snprintf(inst_out, 64, "%s", json_string_value(json_object_get(inst, "id")));
    json_decref(body);
    json_decref(conn);
    json_decref(inst);
    json_decref(ib);
    return rc;
}

static int setup(void)
{
    pb_set_clock(test_clock);
    hs = fake_start(FAKE_HUBSPOT, NULL);
    sf = fake_start(FAKE_SALESFORCE, NULL);
    echo = fake_start(FAKE_ECHO, NULL);
    if (!hs || !sf || !echo)
        return -1;
    char dir[600], plugdir[700];
    snprintf(dir, sizeof dir, "%s/wr", pbt_tmpdir());
    snprintf(plugdir, sizeof plugdir, "%s/plugins", dir);
    if (mkdir(dir, 0700) != 0 || mkdir(plugdir, 0755) != 0)
        return -1;
    const char *names[] = {"hubspot", "salesforce", "generic"};
    for (size_t i = 0; i < 3; i++)
        if (pbt_install_plugin(names[i], plugdir, names[i]) != 0)
            return -1;
    char yaml[4096];
    snprintf(yaml, sizeof yaml,
             "listen: 127.0.0.1:0\n"
             "data_dir: %s/var\n"
             "store: sqlite:%s/var/plugboard.db\n"
             "master_key_file: %s/var/master.key\n"
             "plugin_dir: %s\n"
             "log: {level: error, format: json}\n"
             "egress: {allow_private: true, timeout_ms: 5000}\n"
             "providers:\n"
             "  hubspot: {plugin: hubspot, client_id: hs-client, client_secret: hs-secret,\n"
             "            base_url: '%s', token_url: '%s/oauth/v1/token'}\n"
             "  salesforce: {plugin: salesforce, client_id: a, client_secret: b, login_url: '%s',\n"
             "               api_version: v59.0}\n"
             "  echo: {plugin: generic, base_url: '%s', auth_header: X-Echo-Key, auth_scheme: ''}\n",
             dir, dir, dir, plugdir, fake_base_url(hs), fake_base_url(hs), fake_base_url(sf),
             fake_base_url(echo));
    snprintf(cfgpath, sizeof cfgpath, "%s/plugboard.yaml", dir);
    if (pbt_write_file(cfgpath, yaml) != 0 || open_app() != 0)
        return -1;
    struct pb_problem p = {0};
    json_t *out = NULL;
    if (pb_ctl_project_create(app, "write-test", &out, &p) != 0)
        return -1;
    snprintf(key, sizeof key, "%s", json_string_value(json_object_get(out, "apiKey")));
    snprintf(project_id, sizeof project_id, "%s", json_string_value(json_object_get(out, "id")));
    json_decref(out);
    if (pb_ctl_project_create(app, "other", &out, &p) != 0)
        return -1;
    snprintf(other_key, sizeof other_key, "%s", json_string_value(json_object_get(out, "apiKey")));
    snprintf(other_project, sizeof other_project, "%s",
             json_string_value(json_object_get(out, "id")));
    json_decref(out);
    const char *manifest =
        "specVersion: 1.0.0\n"
        "integrations:\n"
        "  - name: hs-int\n"
        "    provider: hubspot\n"
        "    write:\n"
        "      objects:\n"
        "        - objectName: contacts\n"
        "        - objectName: companies\n"
        "        - objectName: tickets\n"
        "        - objectName: deals\n"
        "          inheritMapping: true\n"
        "    read:\n"
        "      objects:\n"
        "        - objectName: deals\n"
        "          destination: dealsWebhook\n"
        "          requiredFields:\n"
        "            - fieldName: dealname\n"
        "              mapToName: title\n"
        "          optionalFields:\n"
        "            - mapToName: value\n"
        "            - mapToName: stage\n"
        "  - name: sf-int\n"
        "    provider: salesforce\n"
        "    write: {objects: [{objectName: Account}, {objectName: Contact}]}\n"
        "  - name: echo-int\n"
        "    provider: echo\n"
        "    write: {objects: [{objectName: things}]}\n";
    if (pb_ctl_manifest_apply(app, project_id, manifest, strlen(manifest), "amp.yaml", &out, &p) != 0) {
        fprintf(stderr, "manifest: %s\n", p.detail);
        return -1;
    }
    json_decref(out);
    fake_add_token(hs, "hs-access-1", "hs-refresh-1", 0);
    fake_add_token(sf, "sf-access-1", "sf-refresh-1", 0);
#define HS_CONN                                                                                    \
    "{'groupRef':'%s','provider':'hubspot','oauth2AuthorizationCode':{'accessToken':"             \
    "{'token':'hs-access-1','expiresAt':'2099-01-01T00:00:00Z'},'refreshToken':{'token':'hs-refresh-1'}}}"
    char body[1024];
    snprintf(body, sizeof body, HS_CONN, "customer-1");
    if (connect_and_install(
            "hs-int", body,
            "{'content':{'write':{'objects':{"
            "'contacts':{'deletionSettings':{'enabled':true}},"
            "'companies':{'selectedFieldSettings':{"
            "'industry':{'default':{'stringValue':'TECHNOLOGY'}},"
            "'numberofemployees':{'default':{'integerValue':5}},"
            "'is_public':{'default':{'booleanValue':true}},"
            "'hs_lead_status':{'writeOnUpdate':'never'},"
            "'description':{'writeOnCreate':'never'},"
            "'city':{'default':{'stringValue':'Paris'},'writeOnUpdate':'always'},"
            "'phone':{'writeOnUpdate':'ifEmpty'}}}}},"
            "'read':{'objects':{'deals':{'selectedFieldMappings':{'value':'amount'}}}}}}",
            inst_hs) != 0)
        return -1;
    snprintf(body, sizeof body, HS_CONN, "customer-3");
    if (connect_and_install("hs-int", body, "{'content':{}}", inst_hs3) != 0)
        return -1;
    snprintf(body, sizeof body,
             "{'groupRef':'customer-1','provider':'salesforce','providerMetadata':{'instance_url':"
             "{'value':'%s'}},'oauth2AuthorizationCode':{'accessToken':{'token':'sf-access-1'},"
             "'refreshToken':{'token':'sf-refresh-1'}}}",
             fake_base_url(sf));
    if (connect_and_install("sf-int", body,
                            "{'content':{'write':{'objects':{'Account':{'deletionSettings':"
                            "{'enabled':true}},'Contact':{'deletionSettings':{'enabled':false}}}}}}",
                            inst_sf) != 0)
        return -1;
    /* writeOnUpdate: ifEmpty, with and without defaults. */
    snprintf(body, sizeof body, HS_CONN, "customer-ie");
    if (connect_and_install("hs-int", body,
                            "{'content':{'write':{'objects':{'companies':{'selectedFieldSettings':{"
                            "'phone':{'writeOnUpdate':'ifEmpty'},"
                            "'domain':{'default':{'stringValue':'default.example'},"
                            "'writeOnCreate':'never','writeOnUpdate':'ifEmpty'}}}}}}}",
                            inst_hs_ie) != 0)
        return -1;
    snprintf(body, sizeof body,
             "{'groupRef':'customer-ie','provider':'salesforce','providerMetadata':{'instance_url':"
             "{'value':'%s'}},'oauth2AuthorizationCode':{'accessToken':{'token':'sf-access-1'},"
             "'refreshToken':{'token':'sf-refresh-1'}}}",
             fake_base_url(sf));
    if (connect_and_install("sf-int", body,
                            "{'content':{'write':{'objects':{'Account':{'selectedFieldSettings':{"
                            "'Phone':{'writeOnUpdate':'ifEmpty'},"
                            "'Rating':{'default':{'stringValue':'Warm'},"
                            "'writeOnCreate':'never','writeOnUpdate':'ifEmpty'}}}}}}}",
                            inst_sf_ie) != 0)
        return -1;
    char inst_echo[64];
    if (connect_and_install("echo-int",
                            "{'groupRef':'customer-1','provider':'echo','apiKey':'echo-secret'}",
                            "{'content':{'write':{'objects':{'things':{'deletionSettings':{'enabled':true}}}}}}",
                            inst_echo) != 0)
        return -1;
    return 0;
}

static CU_TestInfo tests[] = {
    {"validation_errors", test_validation_errors},
    {"hubspot_create_and_update", test_hubspot_create_and_update},
    {"hubspot_rejection_is_422", test_hubspot_rejection_is_422},
    {"salesforce_create_and_update", test_salesforce_create_and_update},
    {"refresh_after_401", test_refresh_after_401},
    {"auth_styles_and_project_name", test_auth_styles_and_project_name},
    {"delete", test_delete},
    {"associations", test_associations},
    {"headers", test_headers},
    {"provider_without_writes", test_provider_without_writes},
    {"hubspot_batches", test_hubspot_batches},
    {"hubspot_all_or_none_refused", test_hubspot_all_or_none_refused},
    {"salesforce_batches", test_salesforce_batches},
    {"field_settings", test_field_settings},
    {"inherit_mapping", test_inherit_mapping},
    {"if_empty_hubspot", test_if_empty_hubspot},
    {"if_empty_async_read_retry", test_if_empty_async_read_retry},
    {"if_empty_salesforce", test_if_empty_salesforce},
    {"sync_provider_outage", test_sync_provider_outage},
    {"async_write_is_stored_then_run", test_async_write_is_stored_then_run},
    {"async_batches", test_async_batches},
    {"async_retries_until_success", test_async_retries_until_success},
    {"async_network_and_classified_retries", test_async_network_and_classified_retries},
    {"async_deadline_failure", test_async_deadline_failure},
    {"autobatch_1000_as_ten_calls", test_autobatch_1000_as_ten_calls},
    {"autobatch_lone_write_after_max_delay", test_autobatch_lone_write_after_max_delay},
    {"autobatch_deadline_is_first_writes", test_autobatch_deadline_is_first_writes},
    {"restart_keeps_queued_and_claimed_writes", test_restart_keeps_queued_and_claimed_writes},
    {"operations_api", test_operations_api},
    {"async_concurrent_clients", test_async_concurrent_clients},
    {"installation_changes_seen_at_once", test_installation_changes_seen_at_once},
    CU_TEST_INFO_NULL,
};

int main(int argc, char **argv)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (setup() != 0) {
        fprintf(stderr, "test_write: set-up failed\n");
        return 99;
    }
    int rc = pbt_main(argc, argv, "write", tests);
    pb_app_close(app);
    fake_stop(hs);
    fake_stop(sf);
    fake_stop(echo);
    return rc;
}
