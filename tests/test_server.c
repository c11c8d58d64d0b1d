/* The HTTP server over loopback: health, readiness, problem+json, routing,
 * request ids, body limits. */
#include "app.h"
#include "server.h"
#include "testutil.h"
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct pb_app *app;
static char base[128];

static json_t *get_json(const char *method, const char *path, const char *const *headers,
                        const char *body, long *status, char **ctype, char **reqid)
{
    char url[512];
    snprintf(url, sizeof url, "%s%s", base, path);
    struct pbt_resp r;
    CU_ASSERT_EQUAL(pbt_http(method, url, headers, body, &r), 0);
    *status = r.status;
    if (ctype)
        *ctype = pbt_resp_header(&r, "Content-Type");
    if (reqid)
        *reqid = pbt_resp_header(&r, "X-Request-Id");
    json_t *j = json_loads(r.body, 0, NULL);
    pbt_resp_free(&r);
    return j;
}

static void test_healthz(void)
{
    long status;
    char *ctype;
    json_t *j = get_json("GET", "/healthz", NULL, NULL, &status, &ctype, NULL);
    CU_ASSERT_EQUAL(status, 200);
    CU_ASSERT_STRING_EQUAL(ctype, "application/json");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "status")), "ok");
    json_decref(j);
    free(ctype);
}

static void test_readyz_reports_store_and_plugins(void)
{
    long status;
    json_t *j = get_json("GET", "/readyz", NULL, NULL, &status, NULL, NULL);
    CU_ASSERT_EQUAL(status, 200);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "status")), "ready");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "store")), "ok");
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "plugins")), 2);
    json_decref(j);
}

static void test_unknown_route_is_problem_json(void)
{
    long status;
    char *ctype, *reqid;
    json_t *j = get_json("GET", "/no/such/thing", NULL, NULL, &status, &ctype, &reqid);
    CU_ASSERT_EQUAL(status, 404);
    CU_ASSERT_STRING_EQUAL(ctype, "application/problem+json");
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "type")),
                           "urn:plugboard:problem:not-found");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "title")), "Not found");
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "status")), 404);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "detail")),
                           "GET /no/such/thing matches no route");
    CU_ASSERT_TRUE(json_is_false(json_object_get(j, "retryable")));
    /* The body's requestId is the one in the header, and it looks random. */
    CU_ASSERT_PTR_NOT_NULL_FATAL(reqid);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "requestId")), reqid);
    CU_ASSERT_EQUAL(strncmp(reqid, "req_", 4), 0);
    CU_ASSERT_EQUAL(strlen(reqid), 30);
    json_decref(j);
    free(ctype);
    free(reqid);
}

static void test_wrong_method_is_405(void)
{
    long status;
    json_t *j = get_json("POST", "/healthz", NULL, "{}", &status, NULL, NULL);
    CU_ASSERT_EQUAL(status, 405);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "type")),
                           "urn:plugboard:problem:method-not-allowed");
    json_decref(j);
}

static void test_caller_request_id_is_kept_when_safe(void)
{
    long status;
    char *reqid;
    const char *ok[] = {"X-Request-Id: trace-123.abc", NULL};
    json_t *j = get_json("GET", "/nothing", ok, NULL, &status, NULL, &reqid);
    CU_ASSERT_STRING_EQUAL(reqid, "trace-123.abc");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "requestId")), "trace-123.abc");
    json_decref(j);
    free(reqid);
    const char *bad[] = {"X-Request-Id: <script>", NULL};
    j = get_json("GET", "/nothing", bad, NULL, &status, NULL, &reqid);
    CU_ASSERT_NOT_EQUAL(strcmp(reqid, "<script>"), 0);
    CU_ASSERT_EQUAL(strncmp(reqid, "req_", 4), 0);
    json_decref(j);
    free(reqid);
}

static void test_distinct_request_ids(void)
{
    long status;
    char *a, *b;
    json_decref(get_json("GET", "/x", NULL, NULL, &status, NULL, &a));
    json_decref(get_json("GET", "/x", NULL, NULL, &status, NULL, &b));
    CU_ASSERT_NOT_EQUAL(strcmp(a, b), 0);
    free(a);
    free(b);
}

static void test_in_flight_returns_to_zero(void)
{
    long status;
    json_decref(get_json("GET", "/healthz", NULL, NULL, &status, NULL, NULL));
    /* The server finishes its bookkeeping just after the client has the
     * answer, so allow it a moment. */
    for (int i = 0; i < 200 && pb_server_in_flight(app->server) != 0; i++)
        usleep(10 * 1000);
    CU_ASSERT_EQUAL(pb_server_in_flight(app->server), 0);
}

static CU_TestInfo tests[] = {
    {"healthz", test_healthz},
    {"readyz_reports_store_and_plugins", test_readyz_reports_store_and_plugins},
    {"unknown_route_is_problem_json", test_unknown_route_is_problem_json},
    {"wrong_method_is_405", test_wrong_method_is_405},
    {"caller_request_id_is_kept_when_safe", test_caller_request_id_is_kept_when_safe},
    {"distinct_request_ids", test_distinct_request_ids},
    {"in_flight_returns_to_zero", test_in_flight_returns_to_zero},
    CU_TEST_INFO_NULL,
};

int main(int argc, char **argv)
{
    app = pbt_start("providers:\n"
                    "  hubspot: {plugin: hubspot, client_id: a, client_secret: b}\n"
                    "  mail: {plugin: generic, base_url: 'https://api.example.com'}\n",
                    base, sizeof base);
    if (!app)
        return 99;
    int rc = pbt_main(argc, argv, "server", tests);
    pbt_stop(app);
    return rc;
}
