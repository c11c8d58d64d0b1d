/* The proxy end to end: the three request styles through the real plugins
 * against the project's fake providers (HubSpot over TLS reached through
 * egress.connect_to), header hygiene, host-escape attempts, 401 refresh,
 * retries, throttle mode, streaming memory and the activity log. */
#include "app.h"
#include "control.h"
#include "fake/fake.h"
#include "server.h"
#include "testutil.h"
#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct pb_app *app;
static char base[128];
static struct fake *echo, *hs, *sf;
static char key[128], project_id[64];
static char inst_echo[64], inst_hs[64], inst_sf[64], inst_noproxy[64];
static char hs_token[64] = "hs-access-1";

/* ---- helpers ------------------------------------------------------------- */

static long call(const char *method, const char *path, const char *const *headers,
                 const char *body, struct pbt_resp *out)
{
    char url[2048];
    snprintf(url, sizeof url, "%s%s", base, path);
    pbt_http(method, url, headers, body, out);
    return out->status;
}

static json_t *resp_json(struct pbt_resp *r)
{
    return json_loads(r->body, 0, NULL);
}

/* The echo fake answers {"method","path","query","headers":{...},...}. */
static const char *echoed_header(json_t *j, const char *name)
{
    return json_string_value(json_object_get(json_object_get(j, "headers"), name));
}

static void amp_headers(const char **h, const char *inst)
{
    static char k[200], p[200], i[200];
    snprintf(k, sizeof k, "x-api-key: %s", key);
    snprintf(p, sizeof p, "x-amp-project-id: %s", project_id);
    snprintf(i, sizeof i, "x-amp-installation-id: %s", inst);
    h[0] = "x-amp-proxy-version: 1";
    h[1] = k;
    h[2] = p;
    h[3] = i;
    h[4] = NULL;
}

/* ---- the tests --------------------------------------------------------------- */

static void test_amp_style_forwards_and_filters(void)
{
    const char *h[12];
    amp_headers(h, inst_echo);
    h[4] = "Authorization: Bearer caller-secret";
    h[5] = "X-Custom: kept";
    h[6] = "Connection: keep-alive, X-Drop-Me";
    h[7] = "X-Drop-Me: hop";
    h[8] = "Keep-Alive: timeout=5";
    h[9] = "Content-Type: application/json";
    h[10] = NULL;
    struct pbt_resp r;
    CU_ASSERT_EQUAL(call("POST", "/v1/things/42?b=2&a=1&a=%20x", h, "{\"x\":1}", &r), 200);
    json_t *j = resp_json(&r);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "method")), "POST");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "path")), "/v1/things/42");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "query")), "b=2&a=1&a=%20x");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "body")), "{\"x\":1}");
    CU_ASSERT_STRING_EQUAL(echoed_header(j, "x-custom"), "kept");
    CU_ASSERT_STRING_EQUAL(echoed_header(j, "content-type"), "application/json");
    /* The plugin's credential replaced the caller's. */
    CU_ASSERT_STRING_EQUAL(echoed_header(j, "x-echo-key"), "echo-secret");
    CU_ASSERT_PTR_NULL(echoed_header(j, "authorization"));
    CU_ASSERT_PTR_NULL(echoed_header(j, "x-api-key"));
    CU_ASSERT_PTR_NULL(echoed_header(j, "x-amp-proxy-version"));
    CU_ASSERT_PTR_NULL(echoed_header(j, "x-amp-project-id"));
    CU_ASSERT_PTR_NULL(echoed_header(j, "x-amp-installation-id"));
    CU_ASSERT_PTR_NULL(echoed_header(j, "x-drop-me"));
    CU_ASSERT_PTR_NULL(echoed_header(j, "keep-alive"));
    json_decref(j);
    pbt_resp_free(&r);
}

static void test_amp_style_by_integration_and_group(void)
{
    char k[200], p[200];
    snprintf(k, sizeof k, "x-api-key: %s", key);
    snprintf(p, sizeof p, "x-amp-project-id: %s", project_id);
    const char *h[] = {"x-amp-proxy-version: 1", k, p, "x-amp-integration-name: echo-int",
                       "x-amp-group-ref: customer-1", NULL};
    struct pbt_resp r;
    CU_ASSERT_EQUAL(call("GET", "/ping", h, NULL, &r), 200);
    json_t *j = resp_json(&r);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "path")), "/ping");
    json_decref(j);
    pbt_resp_free(&r);
    /* An unknown group is a 404 problem naming the header. */
    const char *bad[] = {"x-amp-proxy-version: 1", k, p, "x-amp-integration-name: echo-int",
                         "x-amp-group-ref: nobody", NULL};
    CU_ASSERT_EQUAL(call("GET", "/ping", bad, NULL, &r), 404);
    j = resp_json(&r);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(
                               json_array_get(json_object_get(j, "issues"), 0), "name")),
                           "x-amp-group-ref");
    json_decref(j);
    pbt_resp_free(&r);
    /* With all three, the installation id wins (the group would not match). */
    char i[200];
    snprintf(i, sizeof i, "x-amp-installation-id: %s", inst_echo);
    const char *both[] = {"x-amp-proxy-version: 1", k, p, "x-amp-integration-name: echo-int",
                          "x-amp-group-ref: nobody", i, NULL};
    CU_ASSERT_EQUAL(call("GET", "/ping", both, NULL, &r), 200);
    pbt_resp_free(&r);
}

static void test_nango_style(void)
{
    char auth[200];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", key);
    const char *h[] = {auth, "Provider-Config-Key: echo-int", "Connection-Id: customer-1",
                       "Nango-Proxy-X-Trace: t-1", "X-Not-Forwarded: no", NULL};
    struct pbt_resp r;
    CU_ASSERT_EQUAL(call("GET", "/proxy/v2/items?limit=5&cursor=a%2Bb", h, NULL, &r), 200);
    json_t *j = resp_json(&r);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "path")), "/v2/items");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "query")), "limit=5&cursor=a%2Bb");
    CU_ASSERT_STRING_EQUAL(echoed_header(j, "x-trace"), "t-1");
    CU_ASSERT_PTR_NULL(echoed_header(j, "x-not-forwarded"));
    CU_ASSERT_PTR_NULL(echoed_header(j, "provider-config-key"));
    CU_ASSERT_PTR_NULL(echoed_header(j, "connection-id"));
    CU_ASSERT_STRING_EQUAL(echoed_header(j, "x-echo-key"), "echo-secret");
    json_decref(j);
    pbt_resp_free(&r);
    /* Nango-shaped errors. */
    const char *bad[] = {auth, "Provider-Config-Key: echo-int", "Connection-Id: nobody", NULL};
    CU_ASSERT_EQUAL(call("GET", "/proxy/x", bad, NULL, &r), 404);
    j = resp_json(&r);
    CU_ASSERT_STRING_EQUAL(
        json_string_value(json_object_get(json_object_get(j, "error"), "code")),
        "unknown_connection");
    CU_ASSERT_PTR_NOT_NULL(json_object_get(json_object_get(j, "error"), "message"));
    json_decref(j);
    pbt_resp_free(&r);
    const char *nokey[] = {"Provider-Config-Key: echo-int", "Connection-Id: customer-1", NULL};
    CU_ASSERT_EQUAL(call("GET", "/proxy/x", nokey, NULL, &r), 401);
    j = resp_json(&r);
    CU_ASSERT_STRING_EQUAL(
        json_string_value(json_object_get(json_object_get(j, "error"), "code")), "unauthorized");
    json_decref(j);
    pbt_resp_free(&r);
}

static void test_sdk_style(void)
{
    char auth[200], path[256];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", key);
    snprintf(path, sizeof path, "/sdk/%s/crm/v3/objects/contacts?limit=1", inst_hs);
    const char *h[] = {auth, NULL};
    struct pbt_resp r;
    size_t before = fake_count(hs, "GET", "/crm/v3/objects/contacts");
    CU_ASSERT_EQUAL(call("GET", path, h, NULL, &r), 200);
    CU_ASSERT_EQUAL(fake_count(hs, "GET", "/crm/v3/objects/contacts"), before + 1);
    struct fake_req fr;
    CU_ASSERT_EQUAL_FATAL(fake_last(hs, "GET", "/crm/v3/objects/contacts", &fr), 0);
    char want[128];
    snprintf(want, sizeof want, "Bearer %s", hs_token);
    CU_ASSERT_STRING_EQUAL(fake_req_header(&fr, "Authorization"), want);
    CU_ASSERT_STRING_EQUAL(fr.query, "limit=1");
    fake_req_free(&fr);
    pbt_resp_free(&r);
}

/* Every style reaches every plugin: Nango style to HubSpot and Salesforce,
 * SDK style to Salesforce. */
static void test_styles_through_each_plugin(void)
{
    char auth[200], path[256];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", key);
    struct pbt_resp r;
    const char *hsh[] = {auth, "Provider-Config-Key: hs-int", "Connection-Id: customer-1", NULL};
    size_t before = fake_count(hs, "GET", "/crm/v3/objects/deals");
    CU_ASSERT_EQUAL(call("GET", "/proxy/crm/v3/objects/deals?limit=2", hsh, NULL, &r), 200);
    CU_ASSERT_EQUAL(fake_count(hs, "GET", "/crm/v3/objects/deals"), before + 1);
    pbt_resp_free(&r);
    const char *sfh[] = {auth, "Provider-Config-Key: sf-int", "Connection-Id: customer-1", NULL};
    before = fake_count(sf, "GET", "/services/data");
    CU_ASSERT_EQUAL(call("GET", "/proxy/services/data/v60.0/sobjects/Contact/003000000000000AAA",
                         sfh, NULL, &r),
                    404);
    CU_ASSERT_EQUAL(fake_count(sf, "GET", "/services/data"), before + 1);
    pbt_resp_free(&r);
    snprintf(path, sizeof path, "/sdk/%s/services/data/v60.0/sobjects/Lead/00Q000000000000AAA",
             inst_sf);
    const char *sdk[] = {auth, NULL};
    CU_ASSERT_EQUAL(call("GET", path, sdk, NULL, &r), 404);
    CU_ASSERT_EQUAL(fake_count(sf, "GET", "/services/data"), before + 2);
    struct fake_req fr;
    CU_ASSERT_EQUAL_FATAL(fake_last(sf, "GET", "/services/data/v60.0/sobjects/Lead", &fr), 0);
    CU_ASSERT_STRING_EQUAL(fake_req_header(&fr, "Authorization"), "Bearer sf-access-1");
    fake_req_free(&fr);
    pbt_resp_free(&r);
}

static void test_salesforce_base_from_instance_url(void)
{
    const char *h[6];
    amp_headers(h, inst_sf);
    struct pbt_resp r;
    CU_ASSERT_EQUAL(call("GET", "/services/data/v60.0/sobjects/Account/001000000000000AAA", h,
                         NULL, &r),
                    404);
    /* The fake's own 404 shape came back unchanged. */
    json_t *j = resp_json(&r);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(json_array_get(j, 0), "errorCode")),
                           "NOT_FOUND");
    json_decref(j);
    CU_ASSERT_EQUAL(fake_count(sf, "GET", "/services/data/v60.0/sobjects/Account"), 1);
    pbt_resp_free(&r);
}

static void test_escape_attempts_refused(void)
{
    const char *paths[] = {"//evil.example/x", "/%2F%2Fevil.example/x", "/@evil.example/x",
                           "/a/../b", "/a/%2e%2e/b", "/x%0d%0aHost:%20evil", "/a\\b", NULL};
    const char *h[6];
    amp_headers(h, inst_echo);
    size_t before = fake_count(echo, NULL, NULL);
    for (size_t i = 0; paths[i]; i++) {
        struct pbt_resp r;
        long st = call("GET", paths[i], h, NULL, &r);
        if (st != 400)
            fprintf(stderr, "\n%s -> %ld %s\n", paths[i], st, r.body);
        CU_ASSERT_EQUAL(st, 400);
        pbt_resp_free(&r);
    }
    CU_ASSERT_EQUAL(fake_count(echo, NULL, NULL), before);
}

static void test_refusals(void)
{
    struct pbt_resp r;
    const char *h[6];
    amp_headers(h, inst_noproxy);
    CU_ASSERT_EQUAL(call("GET", "/x", h, NULL, &r), 403);
    pbt_resp_free(&r);
    const char *bad[] = {"x-amp-proxy-version: 1", "x-api-key: pbk_wrong", "x-amp-project-id: p",
                         "x-amp-installation-id: i", NULL};
    CU_ASSERT_EQUAL(call("GET", "/x", bad, NULL, &r), 401);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.headers, "application/problem+json"));
    pbt_resp_free(&r);
    amp_headers(h, "inst_doesnotexist");
    CU_ASSERT_EQUAL(call("GET", "/x", h, NULL, &r), 404);
    pbt_resp_free(&r);
}

static void test_401_refreshes_once_and_retries(void)
{
    fake_expire_token(hs, hs_token);
    size_t calls = fake_token_calls(hs);
    const char *h[6];
    amp_headers(h, inst_hs);
    struct pbt_resp r;
    CU_ASSERT_EQUAL(call("GET", "/crm/v3/objects/contacts", h, NULL, &r), 200);
    pbt_resp_free(&r);
    CU_ASSERT_EQUAL(fake_token_calls(hs), calls + 1);
    char *issued = fake_last_issued_token(hs);
    struct fake_req fr;
    CU_ASSERT_EQUAL_FATAL(fake_last(hs, "GET", "/crm/v3/objects/contacts", &fr), 0);
    char want[128];
    snprintf(want, sizeof want, "Bearer %s", issued);
    CU_ASSERT_STRING_EQUAL(fake_req_header(&fr, "Authorization"), want);
    snprintf(hs_token, sizeof hs_token, "%s", issued);
    fake_req_free(&fr);
    free(issued);
    /* The next call uses the new token without another refresh. */
    CU_ASSERT_EQUAL(call("GET", "/crm/v3/objects/contacts", h, NULL, &r), 200);
    pbt_resp_free(&r);
    CU_ASSERT_EQUAL(fake_token_calls(hs), calls + 1);
}

struct worker {
    long status;
    char body[200];
};

static void *concurrent_call(void *arg)
{
    struct worker *w = arg;
    const char *h[6];
    amp_headers(h, inst_hs);
    struct pbt_resp r;
    w->status = call("GET", "/crm/v3/objects/contacts", h, NULL, &r);
    snprintf(w->body, sizeof w->body, "%s", r.body ? r.body : "");
    pbt_resp_free(&r);
    return NULL;
}

static void test_200_concurrent_calls_one_refresh(void)
{
    fake_expire_token(hs, hs_token);
    size_t calls = fake_token_calls(hs);
    enum { N = 200 };
    pthread_t t[N];
    static struct worker w[N];
    for (int i = 0; i < N; i++)
        CU_ASSERT_EQUAL_FATAL(pthread_create(&t[i], NULL, concurrent_call, &w[i]), 0);
    int ok = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        ok += w[i].status == 200;
        if (w[i].status != 200)
            fprintf(stderr, "\n  call %d answered %ld: %s\n", i, w[i].status, w[i].body);
    }
    CU_ASSERT_EQUAL(ok, N);
    CU_ASSERT_EQUAL(fake_token_calls(hs), calls + 1);
    char *issued = fake_last_issued_token(hs);
    snprintf(hs_token, sizeof hs_token, "%s", issued);
    free(issued);
}

static void test_nango_retries(void)
{
    char auth[200];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", key);
    struct fake_fault f503 = {.status = 503};
    fake_inject(echo, "GET", "/flaky", &f503, 2);
    const char *h[] = {auth, "Provider-Config-Key: echo-int", "Connection-Id: customer-1",
                       "Retries: 3", NULL};
    size_t before = fake_count(echo, "GET", "/flaky");
    struct pbt_resp r;
    CU_ASSERT_EQUAL(call("GET", "/proxy/flaky", h, NULL, &r), 200);
    pbt_resp_free(&r);
    CU_ASSERT_EQUAL(fake_count(echo, "GET", "/flaky"), before + 3);
    /* Retry-On adds statuses; without Retries nothing is retried. */
    struct fake_fault f403 = {.status = 403};
    fake_inject(echo, "GET", "/forbidden", &f403, 1);
    const char *h2[] = {auth, "Provider-Config-Key: echo-int", "Connection-Id: customer-1",
                        "Retries: 1", "Retry-On: 403", NULL};
    CU_ASSERT_EQUAL(call("GET", "/proxy/forbidden", h2, NULL, &r), 200);
    pbt_resp_free(&r);
    fake_inject(echo, "GET", "/forbidden2", &f403, 1);
    const char *h3[] = {auth, "Provider-Config-Key: echo-int", "Connection-Id: customer-1", NULL};
    CU_ASSERT_EQUAL(call("GET", "/proxy/forbidden2", h3, NULL, &r), 403);
    pbt_resp_free(&r);
    const char *h4[] = {auth, "Provider-Config-Key: echo-int", "Connection-Id: customer-1",
                        "Retries: many", NULL};
    CU_ASSERT_EQUAL(call("GET", "/proxy/x", h4, NULL, &r), 400);
    pbt_resp_free(&r);
}

static void test_throttle_mode(void)
{
    struct fake_fault f429 = {.status = 429, .retry_after = "2"};
    fake_inject(hs, "GET", "/crm/v3/objects/companies", &f429, 1);
    const char *h[8];
    amp_headers(h, inst_hs);
    h[4] = "X-Amp-Rate-Limiter-Mode: throttle";
    h[5] = NULL;
    struct pbt_resp r;
    CU_ASSERT_EQUAL(call("GET", "/crm/v3/objects/companies", h, NULL, &r), 429);
    char *ra = pbt_resp_header(&r, "X-Amp-Retry-After");
    char *rt = pbt_resp_header(&r, "X-Amp-Retryable");
    CU_ASSERT_PTR_NOT_NULL_FATAL(ra);
    regex_t re;
    regcomp(&re,
            "^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|"
            "Nov|Dec) [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} UTC$",
            REG_EXTENDED | REG_NOSUB);
    CU_ASSERT_EQUAL(regexec(&re, ra, 0, NULL, 0), 0);
    CU_ASSERT_STRING_EQUAL(rt, "true");
    free(ra);
    free(rt);
    pbt_resp_free(&r);
    /* Blocked: plugboard answers itself, the provider sees nothing. */
    size_t before = fake_count(hs, NULL, "/crm");
    CU_ASSERT_EQUAL(call("GET", "/crm/v3/objects/contacts", h, NULL, &r), 429);
    CU_ASSERT_EQUAL(fake_count(hs, NULL, "/crm"), before);
    ra = pbt_resp_header(&r, "X-Amp-Retry-After");
    CU_ASSERT_PTR_NOT_NULL(ra);
    if (ra)
        CU_ASSERT_EQUAL(regexec(&re, ra, 0, NULL, 0), 0);
    free(ra);
    regfree(&re);
    pbt_resp_free(&r);
    /* After the window the call goes through again. */
    sleep(3);
    CU_ASSERT_EQUAL(call("GET", "/crm/v3/objects/contacts", h, NULL, &r), 200);
    pbt_resp_free(&r);
    CU_ASSERT_EQUAL(fake_count(hs, NULL, "/crm"), before + 1);
}

/* ---- streaming memory -------------------------------------------------------- */

static long rss_peak_kb(void)
{
    char *s = pbt_read_file("/proc/self/status", NULL);
    long kb = -1;
    char *p = s ? strstr(s, "VmHWM:") : NULL;
    if (p)
        kb = strtol(p + 6, NULL, 10);
    free(s);
    return kb;
}

static void reset_peak(void)
{
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (f) {
        fputs("5", f);
        fclose(f);
    }
}

struct gen {
    size_t left, sent;
};

static size_t gen_read(char *buf, size_t size, size_t n, void *u)
{
    struct gen *g = u;
    size_t want = size * n < g->left ? size * n : g->left;
    for (size_t i = 0; i < want; i++)
        buf[i] = (char)((g->sent + i) % 251);
    g->left -= want;
    g->sent += want;
    return want;
}

struct sink {
    size_t bytes, bad;
    char *head;
};

static size_t sink_write(char *d, size_t size, size_t n, void *u)
{
    struct sink *s = u;
    size_t len = size * n;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)d[i] != (unsigned char)((s->bytes + i) % 251))
            s->bad++;
    s->bytes += len;
    return len;
}

static size_t text_write(char *d, size_t size, size_t n, void *u)
{
    struct sink *s = u;
    size_t len = size * n, have = s->head ? strlen(s->head) : 0;
    s->head = realloc(s->head, have + len + 1);
    memcpy(s->head + have, d, len);
    s->head[have + len] = '\0';
    return len;
}

static void test_streaming_200mb_both_ways(void)
{
    const size_t N = 200u * 1024 * 1024;
    const char *h[6];
    amp_headers(h, inst_echo);
    struct curl_slist *sl = NULL;
    for (int i = 0; h[i]; i++)
        sl = curl_slist_append(sl, h[i]);
    sl = curl_slist_append(sl, "Content-Type: application/octet-stream");
    sl = curl_slist_append(sl, "Expect:");
    long before = rss_peak_kb();
    reset_peak();
    long base_kb = rss_peak_kb();
    /* Upload 200 MB; the echo fake counts and checksums it. */
    CURL *c = curl_easy_init();
    char url[512];
    snprintf(url, sizeof url, "%s/upload", base);
    struct gen g = {.left = N};
    struct sink text = {0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "POST");
    curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)N);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, gen_read);
    curl_easy_setopt(c, CURLOPT_READDATA, &g);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, sl);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, text_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &text);
    CU_ASSERT_EQUAL(curl_easy_perform(c), CURLE_OK);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    CU_ASSERT_EQUAL(status, 200);
    json_t *j = text.head ? json_loads(text.head, 0, NULL) : NULL;
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "bodyBytes")), (json_int_t)N);
    json_decref(j);
    free(text.head);
    curl_easy_cleanup(c);
    /* Download 200 MB through the proxy and check every byte. */
    c = curl_easy_init();
    snprintf(url, sizeof url, "%s/bytes/%zu", base, N);
    struct sink s = {0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, sl);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
    CU_ASSERT_EQUAL(curl_easy_perform(c), CURLE_OK);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    CU_ASSERT_EQUAL(status, 200);
    CU_ASSERT_EQUAL(s.bytes, N);
    CU_ASSERT_EQUAL(s.bad, 0);
    curl_easy_cleanup(c);
    curl_slist_free_all(sl);
    long peak = rss_peak_kb();
    /* Client, plugboard and fake share this process: 200 MB each way must
     * not show up in its resident memory. */
    fprintf(stderr, "\n  rss peak before %ld kB, base %ld kB, during %ld kB\n", before, base_kb,
            peak);
    CU_ASSERT(peak - base_kb < 32 * 1024);
}

static void test_activity_records(void)
{
    char auth[200], path[256];
    snprintf(auth, sizeof auth, "x-api-key: %s", key);
    snprintf(path, sizeof path, "/v1/projects/%s/activity?installationId=%s&limit=5", project_id,
             inst_echo);
    const char *h[] = {auth, NULL};
    struct pbt_resp r;
    CU_ASSERT_EQUAL(call("GET", path, h, NULL, &r), 200);
    json_t *j = resp_json(&r);
    json_t *list = json_object_get(j, "activity");
    CU_ASSERT_TRUE(json_array_size(list) >= 1 && json_array_size(list) <= 5);
    /* Records land as calls complete, so look for the GET among them. */
    size_t k;
    json_t *e0, *last = NULL;
    json_array_foreach(list, k, e0) {
        CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(e0, "installationId")), inst_echo);
        if (!last && strcmp(json_string_value(json_object_get(e0, "method")), "GET") == 0)
            last = e0;
    }
    CU_ASSERT_PTR_NOT_NULL_FATAL(last);
    CU_ASSERT_PTR_NOT_NULL(json_object_get(last, "status"));
    CU_ASSERT_PTR_NOT_NULL(json_object_get(last, "durationMs"));
    /* No query strings, no secrets in the log. */
    CU_ASSERT_PTR_NULL(strchr(json_string_value(json_object_get(last, "path")), '?'));
    CU_ASSERT_PTR_NULL(strstr(r.body, "echo-secret"));
    CU_ASSERT_PTR_NULL(strstr(r.body, key));
    json_decref(j);
    pbt_resp_free(&r);
    /* The streamed upload was logged with its size. */
    snprintf(path, sizeof path, "/v1/projects/%s/activity?limit=1000", project_id);
    CU_ASSERT_EQUAL(call("GET", path, h, NULL, &r), 200);
    j = resp_json(&r);
    size_t i;
    json_t *e;
    int found = 0;
    json_array_foreach(json_object_get(j, "activity"), i, e) {
        if (strcmp(json_string_value(json_object_get(e, "path")), "/upload") == 0)
            found = json_integer_value(json_object_get(e, "bytesIn")) == 200LL * 1024 * 1024;
    }
    CU_ASSERT_TRUE(found);
    json_decref(j);
    pbt_resp_free(&r);
}

/* ---- set-up ------------------------------------------------------------------ */

static int setup(void)
{
    char certs[600], cmd[900];
    snprintf(certs, sizeof certs, "%s/certs", pbt_tmpdir());
    const char *src = getenv("PB_SRCDIR") ? getenv("PB_SRCDIR") : ".";
    snprintf(cmd, sizeof cmd, "sh %s/tests/fake/certs.sh %s >/dev/null 2>&1", src, certs);
    if (system(cmd) != 0)
        return -1;
    char pem[700], pkey[700], ca[700];
    snprintf(pem, sizeof pem, "%s/server.pem", certs);
    snprintf(pkey, sizeof pkey, "%s/server.key", certs);
    snprintf(ca, sizeof ca, "%s/ca.pem", certs);
    struct fake_opts plain = {0};
    struct fake_opts tls = {.tls_cert_file = pem, .tls_key_file = pkey, .client_id = "hs-client",
                            .client_secret = "hs-secret"};
    echo = fake_start(FAKE_ECHO, &plain);
    hs = fake_start(FAKE_HUBSPOT, &tls);
    sf = fake_start(FAKE_SALESFORCE, &plain);
    if (!echo || !hs || !sf)
        return -1;
    char yaml[4096];
    snprintf(yaml, sizeof yaml,
             "egress:\n"
             "  allow_private: true\n"
             "  ca_file: %s\n"
             "  connect_to: ['api.hubapi.com:443:127.0.0.1:%d']\n"
             "providers:\n"
             "  hubspot: {plugin: hubspot, client_id: hs-client, client_secret: hs-secret}\n"
             "  salesforce: {plugin: salesforce, client_id: a, client_secret: b, login_url: '%s'}\n"
             "  echo: {plugin: generic, base_url: '%s', auth_header: X-Echo-Key, auth_scheme: ''}\n",
             ca, fake_port(hs), fake_base_url(sf), fake_base_url(echo));
    app = pbt_start(yaml, base, sizeof base);
    if (!app)
        return -1;
    struct pb_problem p = {0};
    json_t *out = NULL;
    if (pb_ctl_project_create(app, "proxy-test", &out, &p) != 0)
        return -1;
    snprintf(key, sizeof key, "%s", json_string_value(json_object_get(out, "apiKey")));
    snprintf(project_id, sizeof project_id, "%s", json_string_value(json_object_get(out, "id")));
    json_decref(out);
    const char *manifest =
        "specVersion: 1.0.0\n"
        "integrations:\n"
        "  - {name: echo-int, provider: echo, proxy: {enabled: true}}\n"
        "  - {name: hs-int, provider: hubspot, proxy: {enabled: true}}\n"
        "  - {name: sf-int, provider: salesforce, proxy: {enabled: true}}\n"
        "  - {name: closed, provider: echo, proxy: {enabled: false}}\n";
    if (pb_ctl_manifest_apply(app, project_id, manifest, strlen(manifest), "amp.yaml", &out, &p) != 0) {
        fprintf(stderr, "manifest: %s\n", p.detail);
        return -1;
    }
    json_decref(out);
    fake_add_token(hs, hs_token, "hs-refresh-1", 3600);
    fake_add_token(sf, "sf-access-1", "sf-refresh-1", 3600);
    struct {
        const char *body, *integration;
        char *inst;
    } conns[] = {
        {"{\"groupRef\":\"customer-1\",\"provider\":\"echo\",\"apiKey\":\"echo-secret\"}",
         "echo-int", inst_echo},
        {NULL, "hs-int", inst_hs},
        {NULL, "sf-int", inst_sf},
        {"{\"groupRef\":\"customer-2\",\"provider\":\"echo\",\"apiKey\":\"echo-secret\"}",
         "closed", inst_noproxy},
    };
    char hsbody[512], sfbody[512];
    snprintf(hsbody, sizeof hsbody,
             "{\"groupRef\":\"customer-1\",\"provider\":\"hubspot\",\"oauth2AuthorizationCode\":"
             "{\"accessToken\":{\"token\":\"%s\",\"expiresAt\":\"2099-01-01T00:00:00Z\"},"
             "\"refreshToken\":{\"token\":\"hs-refresh-1\"}}}",
             hs_token);
    snprintf(sfbody, sizeof sfbody,
             "{\"groupRef\":\"customer-1\",\"provider\":\"salesforce\",\"providerMetadata\":"
             "{\"instance_url\":{\"value\":\"%s\"}},\"oauth2AuthorizationCode\":"
             "{\"accessToken\":{\"token\":\"sf-access-1\"},\"refreshToken\":{\"token\":\"sf-refresh-1\"}}}",
             fake_base_url(sf));
    conns[1].body = hsbody;
    conns[2].body = sfbody;
    for (size_t i = 0; i < 4; i++) {
        json_t *body = json_loads(conns[i].body, 0, NULL), *conn = NULL, *inst = NULL;
        if (pb_ctl_connection_generate(app, project_id, body, &conn, &p) != 0) {
            fprintf(stderr, "connection: %s\n", p.detail);
            return -1;
        }
        json_t *ib = json_pack("{s:O, s:O, s:{}}", "groupRef", json_object_get(body, "groupRef"),
                               "connectionId", json_object_get(conn, "id"), "config");
        if (pb_ctl_installation_create(app, project_id, conns[i].integration, ib, &inst, &p) != 0) {
            fprintf(stderr, "installation: %s\n", p.detail);
            return -1;
        }
        snprintf(conns[i].inst, 64, "%s", json_string_value(json_object_get(inst, "id")));
        json_decref(body);
        json_decref(conn);
        json_decref(inst);
        json_decref(ib);
    }
    return 0;
}

static CU_TestInfo tests[] = {
    {"amp_style_forwards_and_filters", test_amp_style_forwards_and_filters},
    {"amp_style_by_integration_and_group", test_amp_style_by_integration_and_group},
    {"nango_style", test_nango_style},
    {"sdk_style", test_sdk_style},
    {"salesforce_base_from_instance_url", test_salesforce_base_from_instance_url},
    {"styles_through_each_plugin", test_styles_through_each_plugin},
    {"escape_attempts_refused", test_escape_attempts_refused},
    {"refusals", test_refusals},
    {"401_refreshes_once_and_retries", test_401_refreshes_once_and_retries},
    {"200_concurrent_calls_one_refresh", test_200_concurrent_calls_one_refresh},
    {"nango_retries", test_nango_retries},
    {"throttle_mode", test_throttle_mode},
    {"streaming_200mb_both_ways", test_streaming_200mb_both_ways},
    {"activity_records", test_activity_records},
    CU_TEST_INFO_NULL,
};

int main(int argc, char **argv)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (setup() != 0) {
        fprintf(stderr, "test_proxy: set-up failed\n");
        return 99;
    }
    int rc = pbt_main(argc, argv, "proxy", tests);
    pbt_stop(app);
    fake_stop(echo);
    fake_stop(hs);
    fake_stop(sf);
    return rc;
}
