/* Tests for the fake provider servers, over real loopback HTTP(S) with libcurl. */
#include "fake.h"
#include "testutil.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- a tiny libcurl client ------------------------------------------------------- */

struct hresp {
    CURLcode rc;
    long status;
    char *body;
    size_t len;
    char *hdrs;
    size_t hlen;
};

struct hreq {
    const char *method;
    const char *url;
    const char *const *headers; /* NULL-terminated */
    const char *body;
    size_t body_len;            /* 0: strlen(body) */
    const char *cainfo;
    const char *resolve;        /* "host:port:addr" */
    const char *connect_to;     /* "host:port:addr:port" */
    long timeout_ms;
};

static size_t grow(char **buf, size_t *len, const char *d, size_t n)
{
    char *p = realloc(*buf, *len + n + 1);
    if (!p)
        return 0;
    memcpy(p + *len, d, n);
    *len += n;
    p[*len] = '\0';
    *buf = p;
    return n;
}

static size_t body_cb(char *d, size_t sz, size_t nm, void *u)
{
    struct hresp *r = u;
    return grow(&r->body, &r->len, d, sz * nm);
}

static size_t hdr_cb(char *d, size_t sz, size_t nm, void *u)
{
    struct hresp *r = u;
    return grow(&r->hdrs, &r->hlen, d, sz * nm);
}

static void setup(CURL *h, const struct hreq *q, struct curl_slist **hl, struct curl_slist **rl,
                  struct curl_slist **cl)
{
    curl_easy_setopt(h, CURLOPT_URL, q->url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, q->timeout_ms ? q->timeout_ms : 60000L);
    if (q->method && strcmp(q->method, "HEAD") == 0)
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    else if (q->method)
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, q->method);
    for (const char *const *p = q->headers; p && *p; p++)
        *hl = curl_slist_append(*hl, *p);
    if (*hl)
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, *hl);
    if (q->cainfo)
        curl_easy_setopt(h, CURLOPT_CAINFO, q->cainfo);
    if (q->resolve) {
        *rl = curl_slist_append(NULL, q->resolve);
        curl_easy_setopt(h, CURLOPT_RESOLVE, *rl);
    }
    if (q->connect_to) {
        *cl = curl_slist_append(NULL, q->connect_to);
        curl_easy_setopt(h, CURLOPT_CONNECT_TO, *cl);
    }
}

static CURLcode doreq(const struct hreq *q, struct hresp *out)
{
    memset(out, 0, sizeof *out);
    CURL *h = curl_easy_init();
    struct curl_slist *hl = NULL, *rl = NULL, *cl = NULL;
    setup(h, q, &hl, &rl, &cl);
    if (q->body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE,
                         (curl_off_t)(q->body_len ? q->body_len : strlen(q->body)));
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, q->body);
    }
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, body_cb);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, hdr_cb);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, out);
    out->rc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &out->status);
    curl_easy_cleanup(h);
    curl_slist_free_all(hl);
    curl_slist_free_all(rl);
    curl_slist_free_all(cl);
    if (!out->body)
        out->body = calloc(1, 1);
    return out->rc;
}

static void hresp_free(struct hresp *r)
{
    free(r->body);
    free(r->hdrs);
    memset(r, 0, sizeof *r);
}

/* The value of a response header (of the last header block), malloc'd or NULL. */
static char *hdr(const struct hresp *r, const char *name)
{
    if (!r->hdrs)
        return NULL;
    const char *block = r->hdrs, *p;
    while ((p = strstr(block, "\r\nHTTP/")) != NULL)
        block = p + 2;
    size_t nl = strlen(name);
    for (p = block; p && *p;) {
        const char *eol = strstr(p, "\r\n");
        if (!eol)
            break;
        if ((size_t)(eol - p) > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            return strndup(v, (size_t)(eol - v));
        }
        p = eol + 2;
    }
    return NULL;
}

static int hdr_is(const struct hresp *r, const char *name, const char *want)
{
    char *v = hdr(r, name);
    int ok = v && strcmp(v, want) == 0;
    if (!ok)
        fprintf(stderr, "header %s: got %s want %s\n", name, v ? v : "(none)", want);
    free(v);
    return ok;
}

static json_t *jbody(const struct hresp *r)
{
    return json_loadb(r->body, r->len, JSON_DECODE_ANY, NULL);
}

/* url(f, "/path") into rotating static buffers */
static const char *U(struct fake *f, const char *fmt, ...)
{
    static _Thread_local char bufs[8][1024];
    static _Thread_local int k;
    char *b = bufs[k++ & 7];
    int n = snprintf(b, 1024, "%s", fake_base_url(f));
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b + n, 1024 - (size_t)n, fmt, ap);
    va_end(ap);
    return b;
}

/* A JSON API call with an optional bearer token; returns the parsed body. */
static json_t *call(struct fake *f, const char *method, const char *path, const char *token,
                    const char *body, long *status)
{
    char auth[256];
    const char *hs[3] = {0};
    int n = 0;
    if (token) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
        hs[n++] = auth;
    }
    if (body)
        hs[n++] = "Content-Type: application/json";
    struct hreq q = {.method = method, .url = U(f, "%s", path), .headers = hs, .body = body};
    struct hresp r;
    doreq(&q, &r);
    if (r.rc != CURLE_OK)
        fprintf(stderr, "%s %s: %s\n", method, path, curl_easy_strerror(r.rc));
    *status = r.status;
    json_t *j = jbody(&r);
    hresp_free(&r);
    return j;
}

static const char *js(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

static json_t *jpath(json_t *j, const char *path)
{
    /* "a.b.0.c" */
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    char *save = NULL;
    for (char *t = strtok_r(buf, ".", &save); t && j; t = strtok_r(NULL, ".", &save)) {
        if (json_is_array(j))
            j = json_array_get(j, strtoul(t, NULL, 10));
        else
            j = json_object_get(j, t);
    }
    return j;
}

static const char *jps(json_t *j, const char *path)
{
    return json_string_value(jpath(j, path));
}

static uint64_t fnv1a(uint64_t h, const unsigned char *d, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= d[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}
#define FNV_INIT 0xcbf29ce484222325ULL

#define JEQ(j, path, want)                                                                        \
    do {                                                                                          \
        const char *got_ = jps((j), (path));                                                     \
        if (!got_ || strcmp(got_, (want)) != 0)                                                   \
            fprintf(stderr, "%s:%d %s = %s, want %s\n", __FILE__, __LINE__, (path),               \
                    got_ ? got_ : "(null)", (want));                                              \
        CU_ASSERT(got_ && strcmp(got_, (want)) == 0);                                             \
    } while (0)

/* ---- start / stop ----------------------------------------------------------------- */

static void test_start_stop(void)
{
    enum fake_kind kinds[] = {FAKE_HUBSPOT, FAKE_SALESFORCE, FAKE_ECHO};
    for (int i = 0; i < 3; i++) {
        struct fake *f = fake_start(kinds[i], NULL);
        CU_ASSERT_PTR_NOT_NULL_FATAL(f);
        CU_ASSERT(fake_port(f) > 0);
        char want[64];
        snprintf(want, sizeof want, "http://127.0.0.1:%d", fake_port(f));
        CU_ASSERT_STRING_EQUAL(fake_base_url(f), want);
        fake_stop(f);
    }
    struct fake_opts o = {.tls_cert_file = "/nonexistent/cert.pem", .tls_key_file = "/nonexistent/key.pem"};
    fprintf(stderr, "(an error about a missing cert is expected) ");
    CU_ASSERT_PTR_NULL(fake_start(FAKE_ECHO, &o));
    fake_stop(NULL);
}

/* ---- recording ---------------------------------------------------------------------- */

static void test_recording(void)
{
    struct fake *f = fake_start(FAKE_ECHO, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    double t0 = fake_now();
    const char *hs[] = {"X-Test: one", "Content-Type: text/plain", NULL};
    struct hreq q = {.method = "POST", .url = U(f, "/a/b%%20c?x=1&y=%%20z&y=2"), .headers = hs, .body = "hello"};
    struct hresp r;
    CU_ASSERT_EQUAL(doreq(&q, &r), CURLE_OK);
    CU_ASSERT_EQUAL(r.status, 200);
    hresp_free(&r);
    double t1 = fake_now();
    struct hreq q2 = {.method = "GET", .url = U(f, "/c")};
    CU_ASSERT_EQUAL(doreq(&q2, &r), CURLE_OK);
    hresp_free(&r);

    CU_ASSERT_EQUAL(fake_count(f, NULL, NULL), 2);
    CU_ASSERT_EQUAL(fake_count(f, "POST", NULL), 1);
    CU_ASSERT_EQUAL(fake_count(f, "post", "/a/"), 1);
    CU_ASSERT_EQUAL(fake_count(f, "GET", "/a"), 0);
    CU_ASSERT_EQUAL(fake_count(f, NULL, "/c"), 1);

    struct fake_req rq;
    CU_ASSERT_EQUAL_FATAL(fake_last(f, "POST", "/a", &rq), 0);
    CU_ASSERT_STRING_EQUAL(rq.method, "POST");
    CU_ASSERT_STRING_EQUAL(rq.path, "/a/b%20c");
    CU_ASSERT_STRING_EQUAL(rq.query, "x=1&y=%20z&y=2");
    CU_ASSERT_STRING_EQUAL(fake_req_header(&rq, "x-test"), "one");
    CU_ASSERT_PTR_NOT_NULL(fake_req_header(&rq, "Host"));
    CU_ASSERT_PTR_NULL(fake_req_header(&rq, "X-None"));
    CU_ASSERT_STRING_EQUAL(rq.body, "hello");
    CU_ASSERT_EQUAL(rq.body_len, 5);
    CU_ASSERT_EQUAL(rq.body_total, 5);
    CU_ASSERT_EQUAL(rq.body_checksum, fnv1a(FNV_INIT, (const unsigned char *)"hello", 5));
    CU_ASSERT(rq.at >= t0 && rq.at <= t1);
    char *y = fake_req_param(&rq, "y");
    CU_ASSERT_STRING_EQUAL(y, " z");
    free(y);
    CU_ASSERT_PTR_NULL(fake_req_param(&rq, "nope"));
    fake_req_free(&rq);

    CU_ASSERT_EQUAL(fake_nth(f, NULL, NULL, 0, &rq), 0);
    CU_ASSERT_STRING_EQUAL(rq.method, "POST");
    fake_req_free(&rq);
    CU_ASSERT_EQUAL(fake_nth(f, NULL, NULL, 1, &rq), 0);
    CU_ASSERT_STRING_EQUAL(rq.path, "/c");
    CU_ASSERT_STRING_EQUAL(rq.query, "");
    CU_ASSERT_STRING_EQUAL(rq.body, "");
    fake_req_free(&rq);
    CU_ASSERT_EQUAL(fake_nth(f, NULL, NULL, 2, &rq), -1);
    CU_ASSERT_EQUAL(fake_last(f, "PUT", NULL, &rq), -1);

    /* bodies over 1 MiB are recorded truncated */
    size_t big = 2 * 1024 * 1024 + 7;
    char *b = malloc(big);
    memset(b, 'x', big);
    struct hreq q3 = {.method = "PUT", .url = U(f, "/big"), .body = b, .body_len = big};
    CU_ASSERT_EQUAL(doreq(&q3, &r), CURLE_OK);
    hresp_free(&r);
    CU_ASSERT_EQUAL_FATAL(fake_last(f, "PUT", "/big", &rq), 0);
    CU_ASSERT_EQUAL(rq.body_len, 1024 * 1024);
    CU_ASSERT_EQUAL(rq.body_total, big);
    CU_ASSERT_EQUAL(strlen(rq.body), 1024 * 1024);
    CU_ASSERT_EQUAL(rq.body_checksum, fnv1a(FNV_INIT, (unsigned char *)b, big));
    fake_req_free(&rq);
    free(b);

    /* JSON body helper */
    const char *jh[] = {"Content-Type: application/json", NULL};
    struct hreq q4 = {.method = "POST", .url = U(f, "/j"), .headers = jh, .body = "{\"a\":[1,2]}"};
    doreq(&q4, &r);
    hresp_free(&r);
    CU_ASSERT_EQUAL(fake_last(f, NULL, "/j", &rq), 0);
    json_t *j = fake_req_json(&rq);
    CU_ASSERT_EQUAL(json_array_size(json_object_get(j, "a")), 2);
    json_decref(j);
    fake_req_free(&rq);

    fake_reset(f);
    CU_ASSERT_EQUAL(fake_count(f, NULL, NULL), 0);
    CU_ASSERT_EQUAL(fake_last(f, NULL, NULL, &rq), -1);
    fake_stop(f);
}

/* ---- faults ---------------------------------------------------------------------------- */

static void test_fault_429_hubspot(void)
{
    struct fake *f = fake_start(FAKE_HUBSPOT, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fake_add_token(f, "tok", NULL, 0);
    struct fake_fault ft = {.status = 429};
    fake_inject(f, "GET", "/crm/v3/objects/contacts", &ft, 2);
    const char *hs[] = {"Authorization: Bearer tok", NULL};
    struct hreq q = {.method = "GET", .url = U(f, "/crm/v3/objects/contacts"), .headers = hs};
    struct hresp r;
    for (int i = 0; i < 2; i++) {
        CU_ASSERT_EQUAL(doreq(&q, &r), CURLE_OK);
        CU_ASSERT_EQUAL(r.status, 429);
        json_t *j = jbody(&r);
        JEQ(j, "status", "error");
        JEQ(j, "message", "You have reached your ten_secondly_rolling limit.");
        JEQ(j, "errorType", "RATE_LIMIT");
        JEQ(j, "policyName", "TEN_SECONDLY_ROLLING");
        JEQ(j, "category", "RATE_LIMITS");
        CU_ASSERT(js(j, "correlationId") && strlen(js(j, "correlationId")) == 36);
        json_decref(j);
        CU_ASSERT(hdr_is(&r, "X-HubSpot-RateLimit-Interval-Milliseconds", "10000"));
        CU_ASSERT(hdr_is(&r, "X-HubSpot-RateLimit-Max", "100"));
        CU_ASSERT(hdr_is(&r, "X-HubSpot-RateLimit-Remaining", "0"));
        char *ra = hdr(&r, "Retry-After");
        CU_ASSERT_PTR_NULL(ra);
        free(ra);
        char *ct = hdr(&r, "Content-Type");
        CU_ASSERT(ct && strncmp(ct, "application/json", 16) == 0);
        free(ct);
        hresp_free(&r);
    }
    CU_ASSERT_EQUAL(doreq(&q, &r), CURLE_OK);
    CU_ASSERT_EQUAL(r.status, 200);
    hresp_free(&r);

    /* with Retry-After; only POSTs */
    struct fake_fault ft2 = {.status = 429, .retry_after = "7"};
    fake_inject(f, "POST", NULL, &ft2, 1);
    CU_ASSERT_EQUAL(doreq(&q, &r), CURLE_OK);
    CU_ASSERT_EQUAL(r.status, 200);
    hresp_free(&r);
    const char *hs2[] = {"Authorization: Bearer tok", "Content-Type: application/json", NULL};
    struct hreq p = {.method = "POST", .url = U(f, "/crm/v3/objects/contacts"), .headers = hs2,
                     .body = "{\"properties\":{\"email\":\"a@b.c\"}}"};
    CU_ASSERT_EQUAL(doreq(&p, &r), CURLE_OK);
    CU_ASSERT_EQUAL(r.status, 429);
    CU_ASSERT(hdr_is(&r, "Retry-After", "7"));
    hresp_free(&r);
    CU_ASSERT_EQUAL(fake_hubspot_count(f, "contacts"), 0);
    CU_ASSERT_EQUAL(doreq(&p, &r), CURLE_OK);
    CU_ASSERT_EQUAL(r.status, 201);
    hresp_free(&r);
    CU_ASSERT_EQUAL(fake_hubspot_count(f, "contacts"), 1);
    /* faulted requests are recorded too */
    CU_ASSERT_EQUAL(fake_count(f, NULL, NULL), 6);
    fake_stop(f);
}

static void test_fault_status_and_body(void)
{
    struct fake *f = fake_start(FAKE_HUBSPOT, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fake_add_token(f, "tok", NULL, 0);
    long st;
    struct fake_fault e500 = {.status = 500};
    fake_inject(f, NULL, NULL, &e500, 1);
    json_t *j = call(f, "GET", "/crm/v3/objects/contacts", "tok", NULL, &st);
    CU_ASSERT_EQUAL(st, 500);
    JEQ(j, "status", "error");
    JEQ(j, "category", "INTERNAL_ERROR");
    json_decref(j);

    /* custom body, forever until reset */
    struct fake_fault e503 = {.status = 503, .body = "{\"oops\":true}", .retry_after = "Wed, 21 Oct 2015 07:28:00 GMT"};
    fake_inject(f, NULL, "/crm/v3/objects/deals", &e503, -1);
    for (int i = 0; i < 3; i++) {
        j = call(f, "GET", "/crm/v3/objects/deals", "tok", NULL, &st);
        CU_ASSERT_EQUAL(st, 503);
        CU_ASSERT(json_is_true(json_object_get(j, "oops")));
        json_decref(j);
    }
    j = call(f, "GET", "/crm/v3/objects/contacts", "tok", NULL, &st);
    CU_ASSERT_EQUAL(st, 200);
    json_decref(j);
    /* faults are matched in injection order */
    struct fake_fault a = {.status = 502}, b = {.status = 504};
    fake_inject(f, NULL, "/crm/v3/objects/contacts", &a, 1);
    fake_inject(f, NULL, "/crm", &b, 1);
    j = call(f, "GET", "/crm/v3/objects/contacts", "tok", NULL, &st);
    CU_ASSERT_EQUAL(st, 502);
    json_decref(j);
    j = call(f, "GET", "/crm/v3/objects/contacts", "tok", NULL, &st);
    CU_ASSERT_EQUAL(st, 504);
    json_decref(j);
    fake_reset(f);
    j = call(f, "GET", "/crm/v3/objects/deals", "tok", NULL, &st);
    CU_ASSERT_EQUAL(st, 200);
    json_decref(j);
    fake_stop(f);
}

static void test_fault_salesforce_limit(void)
{
    struct fake *f = fake_start(FAKE_SALESFORCE, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fake_add_token(f, "tok", NULL, 0);
    struct fake_fault ft = {.status = 403};
    fake_inject(f, NULL, "/services/data/", &ft, 1);
    long st;
    json_t *j = call(f, "GET", "/services/data/v62.0/sobjects/Account/001000000000000AAA", "tok", NULL, &st);
    CU_ASSERT_EQUAL(st, 403);
    CU_ASSERT(json_is_array(j) && json_array_size(j) == 1);
    JEQ(j, "0.message", "TotalRequests Limit exceeded.");
    JEQ(j, "0.errorCode", "REQUEST_LIMIT_EXCEEDED");
    json_decref(j);
    struct fake_fault e500 = {.status = 500};
    fake_inject(f, NULL, NULL, &e500, 1);
    j = call(f, "GET", "/services/data/v62.0/limits", "tok", NULL, &st);
    CU_ASSERT_EQUAL(st, 500);
    JEQ(j, "0.errorCode", "UNKNOWN_EXCEPTION");
    json_decref(j);
    fake_stop(f);
}

static void test_fault_delay(void)
{
    struct fake *f = fake_start(FAKE_ECHO, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    struct fake_fault d = {.delay_ms = 300};
    fake_inject(f, "GET", "/x", &d, 1);
    long st;
    double t0 = fake_now();
    json_t *j = call(f, "GET", "/x", NULL, NULL, &st);
    double dt = fake_now() - t0;
    CU_ASSERT_EQUAL(st, 200); /* delayed, then answered normally */
    JEQ(j, "path", "/x");
    CU_ASSERT(dt >= 0.29);
    json_decref(j);
    struct fake_fault d2 = {.delay_ms = 200, .status = 500};
    fake_inject(f, NULL, NULL, &d2, 1);
    t0 = fake_now();
    j = call(f, "GET", "/x", NULL, NULL, &st);
    dt = fake_now() - t0;
    CU_ASSERT_EQUAL(st, 500);
    CU_ASSERT(dt >= 0.19);
    JEQ(j, "error", "Internal Server Error");
    json_decref(j);
    t0 = fake_now();
    j = call(f, "GET", "/x", NULL, NULL, &st);
    CU_ASSERT(fake_now() - t0 < 0.19);
    json_decref(j);
    /* the client gives up while the fake still sleeps */
    struct fake_fault d3 = {.delay_ms = 1500};
    fake_inject(f, NULL, NULL, &d3, 1);
    struct hreq q = {.method = "GET", .url = U(f, "/x"), .timeout_ms = 200};
    struct hresp r;
    CU_ASSERT_EQUAL(doreq(&q, &r), CURLE_OPERATION_TIMEDOUT);
    hresp_free(&r);
    fake_stop(f);
}

static void test_fault_reset(void)
{
    struct fake *f = fake_start(FAKE_HUBSPOT, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fake_add_token(f, "tok", NULL, 0);
    struct fake_fault ft = {.reset = 1};
    fake_inject(f, "POST", "/crm/v3/objects/contacts", &ft, 1);
    const char *hs[] = {"Authorization: Bearer tok", "Content-Type: application/json", NULL};
    struct hreq q = {.method = "POST", .url = U(f, "/crm/v3/objects/contacts"), .headers = hs,
                     .body = "{\"properties\":{\"email\":\"x@y.z\"}}"};
    struct hresp r;
    CURLcode rc = doreq(&q, &r);
    CU_ASSERT(rc == CURLE_GOT_NOTHING || rc == CURLE_RECV_ERROR);
    CU_ASSERT_EQUAL(r.status, 0);
    hresp_free(&r);
    CU_ASSERT_EQUAL(fake_hubspot_count(f, "contacts"), 0);
    CU_ASSERT_EQUAL(fake_count(f, "POST", NULL), 1);
    CU_ASSERT_EQUAL(doreq(&q, &r), CURLE_OK);
    CU_ASSERT_EQUAL(r.status, 201);
    hresp_free(&r);
    CU_ASSERT_EQUAL(fake_hubspot_count(f, "contacts"), 1);
    fake_stop(f);
}

static void test_fault_partial_body(void)
{
    enum fake_kind kinds[] = {FAKE_ECHO, FAKE_SALESFORCE, FAKE_HUBSPOT};
    for (int i = 0; i < 3; i++) {
        struct fake *f = fake_start(kinds[i], NULL);
        CU_ASSERT_PTR_NOT_NULL_FATAL(f);
        struct fake_fault ft = {.partial_body = 1, .status = i == 0 ? 0 : 500};
        fake_inject(f, NULL, NULL, &ft, 1);
        struct hreq q = {.method = "GET", .url = U(f, "/anything")};
        struct hresp r;
        CU_ASSERT_EQUAL(doreq(&q, &r), CURLE_PARTIAL_FILE);
        CU_ASSERT_EQUAL(r.status, i == 0 ? 200 : 500);
        char *cl = hdr(&r, "Content-Length");
        CU_ASSERT_PTR_NOT_NULL(cl);
        if (cl)
            CU_ASSERT(r.len > 0 && r.len < strtoul(cl, NULL, 10));
        free(cl);
        hresp_free(&r);
        /* custom body, cut in half */
        struct fake_fault ft2 = {.partial_body = 1, .status = 200,
                                 .body = "0123456789012345678901234567890123456789012345678901234567890123456789"};
        fake_inject(f, NULL, NULL, &ft2, 1);
        CU_ASSERT_EQUAL(doreq(&q, &r), CURLE_PARTIAL_FILE);
        CU_ASSERT_EQUAL(r.len, 35);
        CU_ASSERT(strncmp(r.body, "01234567890123456789012345678901234", 35) == 0);
        hresp_free(&r);
        fake_stop(f);
    }
}

/* ---- HubSpot --------------------------------------------------------------------------- */

static void test_hubspot_auth(void)
{
    struct fake *f = fake_start(FAKE_HUBSPOT, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    long st;
    json_t *j = call(f, "GET", "/crm/v3/objects/contacts", NULL, NULL, &st);
    CU_ASSERT_EQUAL(st, 401);
    JEQ(j, "status", "error");
    JEQ(j, "category", "INVALID_AUTHENTICATION");
    CU_ASSERT(strncmp(js(j, "message"), "Authentication credentials not found", 36) == 0);
    json_decref(j);
    j = call(f, "GET", "/crm/v3/objects/contacts", "nope", NULL, &st);
    CU_ASSERT_EQUAL(st, 401);
    json_decref(j);
    fake_add_token(f, "good", "r1", 0);
    fake_add_token(f, "short", NULL, 1);
    fake_add_token(f, "dead", NULL, -1);
    j = call(f, "GET", "/crm/v3/objects/contacts", "good", NULL, &st);
    CU_ASSERT_EQUAL(st, 200);
    CU_ASSERT(json_is_array(json_object_get(j, "results")));
    json_decref(j);
    j = call(f, "GET", "/crm/v3/objects/contacts", "dead", NULL, &st);
    CU_ASSERT_EQUAL(st, 401);
    JEQ(j, "category", "EXPIRED_AUTHENTICATION");
    json_decref(j);
    j = call(f, "GET", "/crm/v3/objects/contacts", "short", NULL, &st);
    CU_ASSERT_EQUAL(st, 200);
    json_decref(j);
    fake_expire_token(f, "good");
    j = call(f, "GET", "/crm/v3/objects/contacts", "good", NULL, &st);
    CU_ASSERT_EQUAL(st, 401);
    JEQ(j, "status", "error");
    JEQ(j, "category", "EXPIRED_AUTHENTICATION");
    json_decref(j);
    usleep(1100 * 1000);
    j = call(f, "GET", "/crm/v3/objects/contacts", "short", NULL, &st);
    CU_ASSERT_EQUAL(st, 401);
    JEQ(j, "category", "EXPIRED_AUTHENTICATION");
    json_decref(j);
    fake_stop(f);
}

static json_t *form_post(struct fake *f, const char *path, const char *form, const char *extra_header,
                         long *status)
{
    const char *hs[] = {"Content-Type: application/x-www-form-urlencoded", extra_header, NULL};
    struct hreq q = {.method = "POST", .url = U(f, "%s", path), .headers = hs, .body = form};
    struct hresp r;
    doreq(&q, &r);
    *status = r.status;
    json_t *j = jbody(&r);
    hresp_free(&r);
    return j;
}

static void test_hubspot_oauth(void)
{
    struct fake_opts o = {.client_id = "cid", .client_secret = "sec", .token_ttl_s = 600};
    struct fake *f = fake_start(FAKE_HUBSPOT, &o);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    const char *tp = "/oauth/v1/token";
    fake_add_code(f, "c1");
    long st;
    json_t *j = form_post(f, tp,
                          "grant_type=authorization_code&client_id=cid&client_secret=sec"
                          "&redirect_uri=http%3A%2F%2Flocalhost%2Fcb&code=c1",
                          NULL, &st);
    CU_ASSERT_EQUAL(st, 200);
    JEQ(j, "token_type", "bearer");
    JEQ(j, "access_token", "at-1");
    JEQ(j, "refresh_token", "rt-1");
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "expires_in")), 600);
    json_decref(j);
    struct fake_req rq;
    CU_ASSERT_EQUAL(fake_last(f, "POST", tp, &rq), 0);
    char *ru = fake_req_param(&rq, "redirect_uri");
    CU_ASSERT_STRING_EQUAL(ru, "http://localhost/cb");
    free(ru);
    fake_req_free(&rq);
    /* codes are single use */
    j = form_post(f, tp, "grant_type=authorization_code&client_id=cid&client_secret=sec&code=c1", NULL, &st);
    CU_ASSERT_EQUAL(st, 400);
    JEQ(j, "status", "BAD_AUTH_CODE");
    CU_ASSERT_PTR_NOT_NULL(js(j, "message"));
    json_decref(j);
    /* refresh */
    j = form_post(f, tp, "grant_type=refresh_token&client_id=cid&client_secret=sec&refresh_token=rt-1", NULL, &st);
    CU_ASSERT_EQUAL(st, 200);
    JEQ(j, "access_token", "at-2");
    JEQ(j, "refresh_token", "rt-1");
    json_decref(j);
    char *last = fake_last_issued_token(f);
    CU_ASSERT_STRING_EQUAL(last, "at-2");
    free(last);
    j = call(f, "GET", "/crm/v3/objects/contacts", "at-2", NULL, &st);
    CU_ASSERT_EQUAL(st, 200);
    json_decref(j);
    j = call(f, "GET", "/crm/v3/objects/contacts", "at-1", NULL, &st);
    CU_ASSERT_EQUAL(st, 200);
    json_decref(j);
    /* bad grants */
    j = form_post(f, tp, "grant_type=refresh_token&client_id=cid&client_secret=sec&refresh_token=zzz", NULL, &st);
    CU_ASSERT_EQUAL(st, 400);
    JEQ(j, "status", "BAD_REFRESH_TOKEN");
    json_decref(j);
    j = form_post(f, tp, "grant_type=refresh_token&client_id=other&client_secret=sec&refresh_token=rt-1", NULL, &st);
    CU_ASSERT_EQUAL(st, 400);
    JEQ(j, "status", "BAD_CLIENT_ID");
    json_decref(j);
    j = form_post(f, tp, "grant_type=refresh_token&client_id=cid&client_secret=bad&refresh_token=rt-1", NULL, &st);
    CU_ASSERT_EQUAL(st, 400);
    JEQ(j, "status", "BAD_CLIENT_SECRET");
    json_decref(j);
    j = form_post(f, tp, "grant_type=password&client_id=cid&client_secret=sec", NULL, &st);
    CU_ASSERT_EQUAL(st, 400);
    JEQ(j, "status", "BAD_GRANT_TYPE");
    json_decref(j);
    CU_ASSERT_EQUAL(fake_token_calls(f), 7);
    /* revoked refresh tokens fail */
    fake_revoke_refresh(f, "rt-1");
    j = form_post(f, tp, "grant_type=refresh_token&client_id=cid&client_secret=sec&refresh_token=rt-1", NULL, &st);
    CU_ASSERT_EQUAL(st, 400);
    JEQ(j, "status", "BAD_REFRESH_TOKEN");
    json_decref(j);
    /* refresh tokens added by the test */
    fake_add_token(f, NULL, "mine", 0);
    j = form_post(f, tp, "grant_type=refresh_token&client_id=cid&client_secret=sec&refresh_token=mine", NULL, &st);
    CU_ASSERT_EQUAL(st, 200);
    JEQ(j, "access_token", "at-3");
    json_decref(j);
    /* a fault on the token endpoint still counts as a call */
    struct fake_fault e = {.status = 503};
    fake_inject(f, "POST", tp, &e, 1);
    j = form_post(f, tp, "grant_type=refresh_token&client_id=cid&client_secret=sec&refresh_token=mine", NULL, &st);
    CU_ASSERT_EQUAL(st, 503);
    json_decref(j);
    CU_ASSERT_EQUAL(fake_token_calls(f), 10);
    fake_reset(f);
    CU_ASSERT_EQUAL(fake_token_calls(f), 0);
    /* tokens survive a reset */
    j = call(f, "GET", "/crm/v3/objects/contacts", "at-3", NULL, &st);
    CU_ASSERT_EQUAL(st, 200);
    json_decref(j);
    fake_stop(f);
}

static void test_hubspot_crud(void)
{
    struct fake *f = fake_start(FAKE_HUBSPOT, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fake_add_token(f, "t", NULL, 0);
    long st;
    json_t *j = call(f, "POST", "/crm/v3/objects/contacts", "t",
                     "{\"properties\":{\"email\":\"ann@example.com\",\"firstname\":\"Ann\",\"age\":5,\"vip\":true}}", &st);
    CU_ASSERT_EQUAL(st, 201);
    const char *id0 = js(j, "id");
    CU_ASSERT_PTR_NOT_NULL_FATAL(id0);
    char id[32];
    snprintf(id, sizeof id, "%s", id0);
    CU_ASSERT(strspn(id, "0123456789") == strlen(id));
    JEQ(j, "properties.email", "ann@example.com");
    JEQ(j, "properties.age", "5");
    JEQ(j, "properties.vip", "true");
    JEQ(j, "properties.hs_object_id", id);
    CU_ASSERT_PTR_NOT_NULL(jps(j, "properties.createdate"));
    CU_ASSERT_PTR_NOT_NULL(jps(j, "properties.hs_lastmodifieddate"));
    CU_ASSERT_PTR_NOT_NULL(js(j, "createdAt"));
    CU_ASSERT_PTR_NOT_NULL(js(j, "updatedAt"));
    CU_ASSERT(json_is_false(json_object_get(j, "archived")));
    json_decref(j);
    CU_ASSERT_EQUAL(fake_hubspot_count(f, "contacts"), 1);
    CU_ASSERT_EQUAL(fake_hubspot_count(f, "0-1"), 1);

    char path[128];
    snprintf(path, sizeof path, "/crm/v3/objects/contacts/%s", id);
    j = call(f, "GET", path, "t", NULL, &st);
    CU_ASSERT_EQUAL(st, 200);
    JEQ(j, "id", id);
    JEQ(j, "properties.firstname", "Ann");
    json_decref(j);
    snprintf(path, sizeof path, "/crm/v3/objects/contacts/%s?properties=email,lastname", id);
    j = call(f, "GET", path, "t", NULL, &st);
    JEQ(j, "properties.email", "ann@example.com");
    CU_ASSERT(json_is_null(jpath(j, "properties.lastname")));
    CU_ASSERT_PTR_NULL(jpath(j, "properties.firstname"));
    json_decref(j);
    /* by another unique property */
    j = call(f, "GET", "/crm/v3/objects/contacts/ann%40example.com?idProperty=email", "t", NULL, &st);
    CU_ASSERT_EQUAL(st, 200);
    JEQ(j, "id", id);
    json_decref(j);

    snprintf(path, sizeof path, "/crm/v3/objects/contacts/%s", id);
    j = call(f, "PATCH", path, "t", "{\"properties\":{\"firstname\":\"Anna\"}}", &st);
    CU_ASSERT_EQUAL(st, 200);
    JEQ(j, "properties.firstname", "Anna");
    JEQ(j, "properties.email", "ann@example.com");
    json_decref(j);
    json_t *rec = fake_hubspot_record(f, "contact", id);
    JEQ(rec, "properties.firstname", "Anna");
    json_decref(rec);

    /* per-record validation */
    j = call(f, "PATCH", path, "t", "{\"properties\":{\"firstname\":\"INVALID\"}}", &st);
    CU_ASSERT_EQUAL(st, 400);
    JEQ(j, "category", "VALIDATION_ERROR");
    CU_ASSERT(strncmp(js(j, "message"), "Property values were not valid", 30) == 0);
    json_decref(j);
    j = call(f, "POST", "/crm/v3/objects/contacts", "t", "{\"properties\":{\"email\":\"INVALID\"}}", &st);
    CU_ASSERT_EQUAL(st, 400);
    JEQ(j, "category", "VALIDATION_ERROR");
    json_decref(j);
    j = call(f, "POST", "/crm/v3/objects/contacts", "t", "{not json", &st);
    CU_ASSERT_EQUAL(st, 400);
    JEQ(j, "category", "VALIDATION_ERROR");
    json_decref(j);
    CU_ASSERT_EQUAL(fake_hubspot_count(f, "contacts"), 1);

    /* the date-versioned prefix shares the store */
    j = call(f, "POST", "/crm/objects/2026-03/companies", "t", "{\"properties\":{\"name\":\"Acme\"}}", &st);
    CU_ASSERT_EQUAL(st, 201);
    char cid[32];
    snprintf(cid, sizeof cid, "%s", js(j, "id"));
    json_decref(j);
    snprintf(path, sizeof path, "/crm/v3/objects/companies/%s", cid);
    j = call(f, "GET", path, "t", NULL, &st);
    CU_ASSERT_EQUAL(st, 200);
    JEQ(j, "properties.name", "Acme");
    json_decref(j);
    snprintf(path, sizeof path, "/crm/objects/2026-03/contacts/%s", id);
    j = call(f, "GET", path, "t", NULL, &st);
    CU_ASSERT_EQUAL(st, 200);
    json_decref(j);

    /* list with paging */
    for (int i = 0; i < 3; i++) {
        j = call(f, "POST", "/crm/v3/objects/contacts", "t", "{\"properties\":{\"firstname\":\"P\"}}", &st);
        json_decref(j);
    }
    j = call(f, "GET", "/crm/v3/objects/contacts?limit=3", "t", NULL, &st);
    CU_ASSERT_EQUAL(json_array_size(json_object_get(j, "results")), 3);
    JEQ(j, "paging.next.after", "3");
    json_decref(j);
    j = call(f, "GET", "/crm/v3/objects/contacts?limit=3&after=3", "t", NULL, &st);
    CU_ASSERT_EQUAL(json_array_size(json_object_get(j, "results")), 1);
    CU_ASSERT_PTR_NULL(json_object_get(j, "paging"));
    json_decref(j);
    /* search */
    j = call(f, "POST", "/crm/v3/objects/contacts/search", "t",
             "{\"filterGroups\":[{\"filters\":[{\"propertyName\":\"email\",\"operator\":\"EQ\",\"value\":\"ANN@example.com\"}]}]}", &st);
    CU_ASSERT_EQUAL(st, 200);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "total")), 1);
    JEQ(j, "results.0.id", id);
    json_decref(j);

    /* delete */
    snprintf(path, sizeof path, "/crm/v3/objects/contacts/%s", id);
    j = call(f, "DELETE", path, "t", NULL, &st);
    CU_ASSERT_EQUAL(st, 204);
    json_decref(j);
    CU_ASSERT_PTR_NULL(fake_hubspot_record(f, "contacts", id));
    j = call(f, "GET", path, "t", NULL, &st);
    CU_ASSERT_EQUAL(st, 404);
    JEQ(j, "status", "error");
    JEQ(j, "message", "resource not found");
    JEQ(j, "category", "OBJECT_NOT_FOUND");
    json_decref(j);
    j = call(f, "PATCH", path, "t", "{\"properties\":{\"a\":\"b\"}}", &st);
    CU_ASSERT_EQUAL(st, 404);
    json_decref(j);
    j = call(f, "DELETE", path, "t", NULL, &st);
    CU_ASSERT_EQUAL(st, 404);
    json_decref(j);
    CU_ASSERT_EQUAL(fake_hubspot_count(f, "contacts"), 3);
    fake_stop(f);
}

/* fmt is one of this file's literal item templates. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
static char *batch_body(const char *fmt, int n, int invalid_at)
{
    size_t cap = 64 + (size_t)n * 200, len = 0;
    char *b = malloc(cap);
    len += (size_t)snprintf(b + len, cap - len, "{\"inputs\":[");
    for (int i = 0; i < n; i++) {
        char item[200];
        snprintf(item, sizeof item, fmt, i == invalid_at ? "INVALID" : "ok", i);
        len += (size_t)snprintf(b + len, cap - len, "%s%s", i ? "," : "", item);
    }
    snprintf(b + len, cap - len, "]}");
    return b;
}
#pragma GCC diagnostic pop

static void test_hubspot_batch(void)
{
    struct fake *f = fake_start(FAKE_HUBSPOT, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fake_add_token(f, "t", NULL, 0);
    long st;
    const char *fmt = "{\"properties\":{\"firstname\":\"%s\",\"n\":\"%d\"}}";
    char *b = batch_body(fmt, 3, -1);
    json_t *j = call(f, "POST", "/crm/v3/objects/contacts/batch/create", "t", b, &st);
    free(b);
    CU_ASSERT_EQUAL(st, 201);
    JEQ(j, "status", "COMPLETE");
    CU_ASSERT_EQUAL(json_array_size(json_object_get(j, "results")), 3);
    CU_ASSERT_PTR_NOT_NULL(js(j, "startedAt"));
    CU_ASSERT_PTR_NOT_NULL(js(j, "completedAt"));
    CU_ASSERT_PTR_NULL(json_object_get(j, "errors"));
    char ids[3][32];
    for (int i = 0; i < 3; i++)
        snprintf(ids[i], sizeof ids[i], "%s", jps(json_array_get(json_object_get(j, "results"), (size_t)i), "id"));
    json_decref(j);
    CU_ASSERT_EQUAL(fake_hubspot_count(f, "contacts"), 3);

    /* one invalid input: 207, the others are written */
    b = batch_body("{\"properties\":{\"firstname\":\"%s\",\"n\":\"%d\"},\"objectWriteTraceId\":\"tr\"}", 3, 1);
    j = call(f, "POST", "/crm/objects/2026-03/contacts/batch/create", "t", b, &st);
    free(b);
    CU_ASSERT_EQUAL(st, 207);
    JEQ(j, "status", "COMPLETE");
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "numErrors")), 1);
    CU_ASSERT_EQUAL(json_array_size(json_object_get(j, "results")), 2);
    JEQ(j, "errors.0.status", "error");
    JEQ(j, "errors.0.category", "VALIDATION_ERROR");
    CU_ASSERT(strncmp(jps(j, "errors.0.message"), "Property values were not valid", 30) == 0);
    JEQ(j, "errors.0.context.propertyName.0", "firstname");
    JEQ(j, "errors.0.context.objectWriteTraceId.0", "tr");
    json_decref(j);
    CU_ASSERT_EQUAL(fake_hubspot_count(f, "contacts"), 5);

    /* update: one unknown id, one invalid value */
    char ub[512];
    snprintf(ub, sizeof ub,
             "{\"inputs\":[{\"id\":\"%s\",\"properties\":{\"firstname\":\"U0\"}},"
             "{\"id\":\"999999999\",\"properties\":{\"firstname\":\"U1\"}},"
             "{\"id\":\"%s\",\"properties\":{\"firstname\":\"INVALID\"}}]}",
             ids[0], ids[2]);
    j = call(f, "POST", "/crm/v3/objects/contacts/batch/update", "t", ub, &st);
    CU_ASSERT_EQUAL(st, 207);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "numErrors")), 2);
    CU_ASSERT_EQUAL(json_array_size(json_object_get(j, "results")), 1);
    JEQ(j, "results.0.properties.firstname", "U0");
    int saw_nf = 0, saw_val = 0;
    for (size_t i = 0; i < 2; i++) {
        const char *cat = jps(json_array_get(json_object_get(j, "errors"), i), "category");
        const char *cid = jps(json_array_get(json_object_get(j, "errors"), i), "context.ids.0");
        if (cat && strcmp(cat, "OBJECT_NOT_FOUND") == 0 && cid && strcmp(cid, "999999999") == 0)
            saw_nf = 1;
        if (cat && strcmp(cat, "VALIDATION_ERROR") == 0 && cid && strcmp(cid, ids[2]) == 0)
            saw_val = 1;
    }
    CU_ASSERT(saw_nf && saw_val);
    json_decref(j);
    json_t *rec = fake_hubspot_record(f, "contacts", ids[0]);
    JEQ(rec, "properties.firstname", "U0");
    json_decref(rec);
    rec = fake_hubspot_record(f, "contacts", ids[2]);
    JEQ(rec, "properties.firstname", "ok");
    json_decref(rec);
    snprintf(ub, sizeof ub, "{\"inputs\":[{\"id\":\"%s\",\"properties\":{\"lastname\":\"L\"}}]}", ids[1]);
    j = call(f, "POST", "/crm/v3/objects/contacts/batch/update", "t", ub, &st);
    CU_ASSERT_EQUAL(st, 200);
    JEQ(j, "status", "COMPLETE");
    json_decref(j);

    /* read */
    snprintf(ub, sizeof ub, "{\"properties\":[\"firstname\"],\"inputs\":[{\"id\":\"%s\"},{\"id\":\"%s\"}]}", ids[0], ids[1]);
    j = call(f, "POST", "/crm/v3/objects/contacts/batch/read", "t", ub, &st);
    CU_ASSERT_EQUAL(st, 200);
    CU_ASSERT_EQUAL(json_array_size(json_object_get(j, "results")), 2);
    JEQ(j, "results.0.properties.firstname", "U0");
    CU_ASSERT_PTR_NULL(jpath(j, "results.1.properties.lastname"));
    json_decref(j);
    snprintf(ub, sizeof ub, "{\"inputs\":[{\"id\":\"%s\"},{\"id\":\"1\"}]}", ids[0]);
    j = call(f, "POST", "/crm/v3/objects/contacts/batch/read", "t", ub, &st);
    CU_ASSERT_EQUAL(st, 207);
    JEQ(j, "errors.0.category", "OBJECT_NOT_FOUND");
    JEQ(j, "errors.0.context.ids.0", "1");
    json_decref(j);

    /* upsert */
    j = call(f, "POST", "/crm/v3/objects/contacts/batch/upsert", "t",
             "{\"inputs\":[{\"idProperty\":\"email\",\"id\":\"up@x.io\",\"properties\":{\"firstname\":\"Up\"}}]}", &st);
    CU_ASSERT_EQUAL(st, 200);
    CU_ASSERT(json_is_true(jpath(j, "results.0.new")));
    JEQ(j, "results.0.properties.email", "up@x.io");
    json_decref(j);
    j = call(f, "POST", "/crm/v3/objects/contacts/batch/upsert", "t",
             "{\"inputs\":[{\"idProperty\":\"email\",\"id\":\"up@x.io\",\"properties\":{\"firstname\":\"Up2\"}}]}", &st);
    CU_ASSERT(json_is_false(jpath(j, "results.0.new")));
    JEQ(j, "results.0.properties.firstname", "Up2");
    json_decref(j);
    CU_ASSERT_EQUAL(fake_hubspot_count(f, "contacts"), 6);

    /* archive */
    snprintf(ub, sizeof ub, "{\"inputs\":[{\"id\":\"%s\"},{\"id\":\"%s\"},{\"id\":\"424242\"}]}", ids[0], ids[1]);
    j = call(f, "POST", "/crm/v3/objects/contacts/batch/archive", "t", ub, &st);
    CU_ASSERT_EQUAL(st, 204);
    json_decref(j);
    CU_ASSERT_EQUAL(fake_hubspot_count(f, "contacts"), 4);

    /* limits */
    b = batch_body(fmt, 101, -1);
    j = call(f, "POST", "/crm/v3/objects/contacts/batch/create", "t", b, &st);
    free(b);
    CU_ASSERT_EQUAL(st, 400);
    JEQ(j, "category", "VALIDATION_ERROR");
    json_decref(j);
    b = batch_body(fmt, 100, -1);
    j = call(f, "POST", "/crm/v3/objects/contacts/batch/create", "t", b, &st);
    free(b);
    CU_ASSERT_EQUAL(st, 201);
    json_decref(j);
    CU_ASSERT_EQUAL(fake_hubspot_count(f, "contacts"), 104);
    j = call(f, "POST", "/crm/v3/objects/contacts/batch/create", "t", "{\"inputs\":[]}", &st);
    CU_ASSERT_EQUAL(st, 400);
    json_decref(j);
    fake_stop(f);
}

static void test_hubspot_associations(void)
{
    struct fake *f = fake_start(FAKE_HUBSPOT, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fake_add_token(f, "t", NULL, 0);
    long st;
    json_t *j = call(f, "POST", "/crm/v3/objects/companies", "t", "{\"properties\":{\"name\":\"Acme\"}}", &st);
    char co[32];
    snprintf(co, sizeof co, "%s", js(j, "id"));
    json_decref(j);
    char body[512];
    snprintf(body, sizeof body,
             "{\"properties\":{\"email\":\"a@acme.io\"},\"associations\":[{\"to\":{\"id\":\"%s\"},"
             "\"types\":[{\"associationCategory\":\"HUBSPOT_DEFINED\",\"associationTypeId\":279}]},"
             "{\"to\":{\"id\":777},\"types\":[{\"associationCategory\":\"HUBSPOT_DEFINED\",\"associationTypeId\":4}]}]}",
             co);
    j = call(f, "POST", "/crm/v3/objects/contacts", "t", body, &st);
    CU_ASSERT_EQUAL(st, 201);
    char ct[32];
    snprintf(ct, sizeof ct, "%s", js(j, "id"));
    CU_ASSERT_PTR_NULL(json_object_get(j, "associations"));
    json_decref(j);
    char path[256];
    snprintf(path, sizeof path, "/crm/v3/objects/contacts/%s?associations=companies,deals", ct);
    j = call(f, "GET", path, "t", NULL, &st);
    CU_ASSERT_EQUAL(st, 200);
    JEQ(j, "associations.companies.results.0.id", co);
    JEQ(j, "associations.companies.results.0.type", "contact_to_company_unlabeled");
    JEQ(j, "associations.deals.results.0.id", "777");
    JEQ(j, "associations.deals.results.0.type", "contact_to_deal");
    json_decref(j);
    snprintf(path, sizeof path, "/crm/v3/objects/contacts/%s", ct);
    j = call(f, "GET", path, "t", NULL, &st);
    CU_ASSERT_PTR_NULL(json_object_get(j, "associations"));
    json_decref(j);
    json_t *rec = fake_hubspot_record(f, "contacts", ct);
    JEQ(rec, "associations.0.to.id", co);
    JEQ(rec, "associations.0.types.0.associationCategory", "HUBSPOT_DEFINED");
    CU_ASSERT_EQUAL(json_integer_value(jpath(rec, "associations.0.types.0.associationTypeId")), 279);
    json_decref(rec);
    /* batch create with associations */
    snprintf(body, sizeof body,
             "{\"inputs\":[{\"properties\":{\"dealname\":\"D\"},\"associations\":[{\"to\":{\"id\":\"%s\"},"
             "\"types\":[{\"associationCategory\":\"USER_DEFINED\",\"associationTypeId\":12}]}]}]}",
             ct);
    j = call(f, "POST", "/crm/v3/objects/deals/batch/create", "t", body, &st);
    CU_ASSERT_EQUAL(st, 201);
    char deal[32];
    snprintf(deal, sizeof deal, "%s", jps(j, "results.0.id"));
    json_decref(j);
    snprintf(path, sizeof path, "/crm/v3/objects/deals/%s?associations=contacts", deal);
    j = call(f, "GET", path, "t", NULL, &st);
    JEQ(j, "associations.contacts.results.0.id", ct);
    JEQ(j, "associations.contacts.results.0.type", "12");
    json_decref(j);
    /* malformed associations */
    j = call(f, "POST", "/crm/v3/objects/contacts", "t",
             "{\"properties\":{},\"associations\":[{\"to\":{},\"types\":[]}]}", &st);
    CU_ASSERT_EQUAL(st, 400);
    json_decref(j);
    fake_stop(f);
}

/* ---- Salesforce ------------------------------------------------------------------------- */

static int sf_id_ok(const char *id, const char *prefix)
{
    if (!id || strlen(id) != 18 || strncmp(id, prefix, 3) != 0)
        return 0;
    static const char map[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
    for (int k = 0; k < 3; k++) {
        int bits = 0;
        for (int j = 0; j < 5; j++)
            if (id[k * 5 + j] >= 'A' && id[k * 5 + j] <= 'Z')
                bits |= 1 << j;
        if (id[15 + k] != map[bits])
            return 0;
    }
    return 1;
}

static void test_salesforce_oauth(void)
{
    struct fake_opts o = {.client_id = "cid", .client_secret = "sec"};
    struct fake *f = fake_start(FAKE_SALESFORCE, &o);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    const char *tp = "/services/oauth2/token";
    fake_add_code(f, "code-1");
    long st;
    json_t *j = form_post(f, tp,
                          "grant_type=authorization_code&code=code-1&client_id=cid&client_secret=sec"
                          "&redirect_uri=https%3A%2F%2Fapp%2Fcb",
                          NULL, &st);
    CU_ASSERT_EQUAL(st, 200);
    JEQ(j, "access_token", "at-1");
    JEQ(j, "refresh_token", "rt-1");
    JEQ(j, "instance_url", fake_base_url(f));
    JEQ(j, "token_type", "Bearer");
    CU_ASSERT(js(j, "id") && strstr(js(j, "id"), "/id/00D"));
    CU_ASSERT(js(j, "issued_at") && strlen(js(j, "issued_at")) >= 13);
    CU_ASSERT(js(j, "signature") && strlen(js(j, "signature")) == 44);
    json_decref(j);
    j = form_post(f, tp, "grant_type=authorization_code&code=code-1&client_id=cid&client_secret=sec", NULL, &st);
    CU_ASSERT_EQUAL(st, 400);
    JEQ(j, "error", "invalid_grant");
    json_decref(j);
    /* client credentials in a Basic header: Y2lkOnNlYw== is cid:sec */
    j = form_post(f, tp, "grant_type=refresh_token&refresh_token=rt-1", "Authorization: Basic Y2lkOnNlYw==", &st);
    CU_ASSERT_EQUAL(st, 200);
    JEQ(j, "access_token", "at-2");
    CU_ASSERT_PTR_NULL(json_object_get(j, "refresh_token"));
    JEQ(j, "instance_url", fake_base_url(f));
    json_decref(j);
    j = form_post(f, tp, "grant_type=refresh_token&refresh_token=bogus&client_id=cid&client_secret=sec", NULL, &st);
    CU_ASSERT_EQUAL(st, 400);
    JEQ(j, "error", "invalid_grant");
    JEQ(j, "error_description", "expired access/refresh token");
    json_decref(j);
    j = form_post(f, tp, "grant_type=refresh_token&refresh_token=rt-1&client_id=x&client_secret=sec", NULL, &st);
    CU_ASSERT_EQUAL(st, 400);
    JEQ(j, "error", "invalid_client_id");
    json_decref(j);
    j = form_post(f, tp, "grant_type=refresh_token&refresh_token=rt-1&client_id=cid&client_secret=x", NULL, &st);
    CU_ASSERT_EQUAL(st, 400);
    JEQ(j, "error", "invalid_client");
    json_decref(j);
    CU_ASSERT_EQUAL(fake_token_calls(f), 6);
    j = call(f, "GET", "/services/data/v62.0/limits", "at-2", NULL, &st);
    CU_ASSERT_EQUAL(st, 200);
    json_decref(j);
    fake_stop(f);

    struct fake_opts o2 = {.instance_url = "https://acme.my.salesforce.com", .token_ttl_s = 60};
    f = fake_start(FAKE_SALESFORCE, &o2);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fake_add_token(f, NULL, "r", 0);
    j = form_post(f, tp, "grant_type=refresh_token&refresh_token=r&client_id=any", NULL, &st);
    CU_ASSERT_EQUAL(st, 200);
    JEQ(j, "instance_url", "https://acme.my.salesforce.com");
    json_decref(j);
    fake_stop(f);
}

static void test_salesforce_crud(void)
{
    struct fake *f = fake_start(FAKE_SALESFORCE, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    long st;
    json_t *j = call(f, "POST", "/services/data/v62.0/sobjects/Account", NULL, "{\"Name\":\"A\"}", &st);
    CU_ASSERT_EQUAL(st, 401);
    JEQ(j, "0.message", "Session expired or invalid");
    JEQ(j, "0.errorCode", "INVALID_SESSION_ID");
    json_decref(j);
    fake_add_token(f, "t", NULL, 0);
    fake_add_token(f, "old", NULL, 0);
    fake_expire_token(f, "old");
    j = call(f, "GET", "/services/data/v62.0/limits", "old", NULL, &st);
    CU_ASSERT_EQUAL(st, 401);
    JEQ(j, "0.errorCode", "INVALID_SESSION_ID");
    json_decref(j);

    const char *hs[] = {"Authorization: Bearer t", "Content-Type: application/json",
                        "Sforce-Auto-Assign: FALSE", "Sforce-Duplicate-Rule-Header: allowSave=true", NULL};
    struct hreq q = {.method = "POST", .url = U(f, "/services/data/v58.0/sobjects/Account"), .headers = hs,
                     .body = "{\"Name\":\"Acme\",\"Industry\":\"Tech\",\"NumberOfEmployees\":5}"};
    struct hresp r;
    CU_ASSERT_EQUAL(doreq(&q, &r), CURLE_OK);
    CU_ASSERT_EQUAL(r.status, 201);
    j = jbody(&r);
    char *loc = hdr(&r, "Location");
    CU_ASSERT(loc && strstr(loc, "/services/data/v58.0/sobjects/Account/001"));
    free(loc);
    hresp_free(&r);
    char id[32];
    snprintf(id, sizeof id, "%s", js(j, "id"));
    CU_ASSERT(sf_id_ok(id, "001"));
    CU_ASSERT(json_is_true(json_object_get(j, "success")));
    CU_ASSERT_EQUAL(json_array_size(json_object_get(j, "errors")), 0);
    json_decref(j);
    struct fake_req rq;
    CU_ASSERT_EQUAL(fake_last(f, "POST", "/services/data/", &rq), 0);
    CU_ASSERT_STRING_EQUAL(fake_req_header(&rq, "Sforce-Auto-Assign"), "FALSE");
    CU_ASSERT_STRING_EQUAL(fake_req_header(&rq, "sforce-duplicate-rule-header"), "allowSave=true");
    fake_req_free(&rq);
    CU_ASSERT_EQUAL(fake_salesforce_count(f, "Account"), 1);

    char path[256];
    snprintf(path, sizeof path, "/services/data/v63.0/sobjects/Account/%s", id);
    j = call(f, "GET", path, "t", NULL, &st);
    CU_ASSERT_EQUAL(st, 200);
    JEQ(j, "Id", id);
    JEQ(j, "Name", "Acme");
    JEQ(j, "attributes.type", "Account");
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "NumberOfEmployees")), 5);
    json_decref(j);
    /* the 15-character form of the id works too */
    snprintf(path, sizeof path, "/services/data/v63.0/sobjects/Account/%.15s", id);
    j = call(f, "GET", path, "t", NULL, &st);
    CU_ASSERT_EQUAL(st, 200);
    JEQ(j, "Id", id);
    json_decref(j);
    snprintf(path, sizeof path, "/services/data/v63.0/sobjects/Account/%s?fields=Name", id);
    j = call(f, "GET", path, "t", NULL, &st);
    JEQ(j, "Name", "Acme");
    CU_ASSERT_PTR_NULL(json_object_get(j, "Industry"));
    json_decref(j);

    snprintf(path, sizeof path, "/services/data/v62.0/sobjects/Account/%s", id);
    j = call(f, "PATCH", path, "t", "{\"Name\":\"Acme 2\"}", &st);
    CU_ASSERT_EQUAL(st, 204);
    json_decref(j);
    json_t *rec = fake_salesforce_record(f, "Account", id);
    JEQ(rec, "Name", "Acme 2");
    JEQ(rec, "Industry", "Tech");
    json_decref(rec);
    j = call(f, "PATCH", path, "t", "{\"Name\":\"INVALID\"}", &st);
    CU_ASSERT_EQUAL(st, 400);
    JEQ(j, "0.errorCode", "FIELD_CUSTOM_VALIDATION_EXCEPTION");
    JEQ(j, "0.fields.0", "Name");
    CU_ASSERT_PTR_NOT_NULL(jps(j, "0.message"));
    json_decref(j);
    j = call(f, "POST", "/services/data/v62.0/sobjects/Contact", "t", "{\"LastName\":\"INVALID\"}", &st);
    CU_ASSERT_EQUAL(st, 400);
    JEQ(j, "0.errorCode", "FIELD_CUSTOM_VALIDATION_EXCEPTION");
    json_decref(j);
    CU_ASSERT_EQUAL(fake_salesforce_count(f, "Contact"), 0);
    j = call(f, "POST", "/services/data/v62.0/sobjects/Contact", "t", "[1,2", &st);
    CU_ASSERT_EQUAL(st, 400);
    JEQ(j, "0.errorCode", "JSON_PARSER_ERROR");
    json_decref(j);

    j = call(f, "DELETE", path, "t", NULL, &st);
    CU_ASSERT_EQUAL(st, 204);
    json_decref(j);
    CU_ASSERT_EQUAL(fake_salesforce_count(f, "Account"), 0);
    j = call(f, "GET", path, "t", NULL, &st);
    CU_ASSERT_EQUAL(st, 404);
    JEQ(j, "0.errorCode", "NOT_FOUND");
    JEQ(j, "0.message", "The requested resource does not exist");
    json_decref(j);
    j = call(f, "PATCH", path, "t", "{\"Name\":\"x\"}", &st);
    CU_ASSERT_EQUAL(st, 404);
    json_decref(j);
    j = call(f, "DELETE", path, "t", NULL, &st);
    CU_ASSERT_EQUAL(st, 404);
    json_decref(j);
    j = call(f, "GET", "/services/data/vX/sobjects/Account", "t", NULL, &st);
    CU_ASSERT_EQUAL(st, 404);
    json_decref(j);

    /* upsert by external id */
    j = call(f, "PATCH", "/services/data/v62.0/sobjects/Contact/Ext__c/E1", "t", "{\"LastName\":\"One\"}", &st);
    CU_ASSERT_EQUAL(st, 201);
    CU_ASSERT(json_is_true(json_object_get(j, "created")));
    CU_ASSERT(sf_id_ok(js(j, "id"), "003"));
    json_decref(j);
    j = call(f, "PATCH", "/services/data/v62.0/sobjects/Contact/Ext__c/E1", "t", "{\"LastName\":\"Uno\"}", &st);
    CU_ASSERT_EQUAL(st, 200);
    CU_ASSERT(json_is_false(json_object_get(j, "created")));
    json_decref(j);
    j = call(f, "GET", "/services/data/v62.0/sobjects/Contact/Ext__c/E1", "t", NULL, &st);
    CU_ASSERT_EQUAL(st, 200);
    JEQ(j, "LastName", "Uno");
    json_decref(j);
    CU_ASSERT_EQUAL(fake_salesforce_count(f, "Contact"), 1);
    fake_stop(f);
}

static void test_salesforce_composite(void)
{
    struct fake *f = fake_start(FAKE_SALESFORCE, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fake_add_token(f, "t", NULL, 0);
    long st;
    const char *cp = "/services/data/v62.0/composite/sobjects";
    json_t *j = call(f, "POST", cp, "t",
                     "{\"allOrNone\":false,\"records\":["
                     "{\"attributes\":{\"type\":\"Account\"},\"Name\":\"A\"},"
                     "{\"attributes\":{\"type\":\"Account\"},\"Name\":\"INVALID\"},"
                     "{\"attributes\":{\"type\":\"Contact\"},\"LastName\":\"C\"}]}",
                     &st);
    CU_ASSERT_EQUAL(st, 200);
    CU_ASSERT_EQUAL(json_array_size(j), 3);
    CU_ASSERT(json_is_true(jpath(j, "0.success")));
    CU_ASSERT(sf_id_ok(jps(j, "0.id"), "001"));
    CU_ASSERT_EQUAL(json_array_size(jpath(j, "0.errors")), 0);
    CU_ASSERT(json_is_false(jpath(j, "1.success")));
    JEQ(j, "1.errors.0.statusCode", "FIELD_CUSTOM_VALIDATION_EXCEPTION");
    JEQ(j, "1.errors.0.fields.0", "Name");
    CU_ASSERT(json_is_true(jpath(j, "2.success")));
    CU_ASSERT(sf_id_ok(jps(j, "2.id"), "003"));
    char a0[32], c2[32];
    snprintf(a0, sizeof a0, "%s", jps(j, "0.id"));
    snprintf(c2, sizeof c2, "%s", jps(j, "2.id"));
    json_decref(j);
    CU_ASSERT_EQUAL(fake_salesforce_count(f, "Account"), 1);
    CU_ASSERT_EQUAL(fake_salesforce_count(f, "Contact"), 1);

    /* allOrNone: nothing is stored */
    j = call(f, "POST", cp, "t",
             "{\"allOrNone\":true,\"records\":["
             "{\"attributes\":{\"type\":\"Account\"},\"Name\":\"B\"},"
             "{\"attributes\":{\"type\":\"Account\"},\"Name\":\"INVALID\"},"
             "{\"attributes\":{\"type\":\"Account\"},\"Name\":\"D\"}]}",
             &st);
    CU_ASSERT_EQUAL(st, 200);
    CU_ASSERT_EQUAL(json_array_size(j), 3);
    for (size_t i = 0; i < 3; i++) {
        json_t *e = json_array_get(j, i);
        CU_ASSERT(json_is_false(json_object_get(e, "success")));
        CU_ASSERT_PTR_NULL(json_object_get(e, "id"));
        const char *code = jps(e, "errors.0.statusCode");
        CU_ASSERT_STRING_EQUAL(code ? code : "", i == 1 ? "FIELD_CUSTOM_VALIDATION_EXCEPTION"
                                                        : "ALL_OR_NONE_OPERATION_ROLLED_BACK");
    }
    JEQ(j, "0.errors.0.message",
        "Record rolled back because not all records were valid and the request was using AllOrNone header");
    json_decref(j);
    CU_ASSERT_EQUAL(fake_salesforce_count(f, "Account"), 1);

    /* update: allOrNone rolls the valid one back */
    char body[1024];
    snprintf(body, sizeof body,
             "{\"allOrNone\":true,\"records\":[{\"attributes\":{\"type\":\"Account\"},\"id\":\"%s\",\"Name\":\"A2\"},"
             "{\"attributes\":{\"type\":\"Account\"},\"id\":\"001000000000000AAA\",\"Name\":\"X\"}]}",
             a0);
    j = call(f, "PATCH", cp, "t", body, &st);
    CU_ASSERT_EQUAL(st, 200);
    JEQ(j, "0.errors.0.statusCode", "ALL_OR_NONE_OPERATION_ROLLED_BACK");
    CU_ASSERT(json_is_false(jpath(j, "1.success")));
    json_decref(j);
    json_t *rec = fake_salesforce_record(f, "Account", a0);
    JEQ(rec, "Name", "A");
    json_decref(rec);
    snprintf(body, sizeof body,
             "{\"records\":[{\"attributes\":{\"type\":\"Account\"},\"id\":\"%s\",\"Name\":\"A2\"},"
             "{\"attributes\":{\"type\":\"Contact\"},\"id\":\"%s\",\"LastName\":\"INVALID\"}]}",
             a0, c2);
    j = call(f, "PATCH", cp, "t", body, &st);
    CU_ASSERT_EQUAL(st, 200);
    CU_ASSERT(json_is_true(jpath(j, "0.success")));
    JEQ(j, "0.id", a0);
    JEQ(j, "1.errors.0.statusCode", "FIELD_CUSTOM_VALIDATION_EXCEPTION");
    json_decref(j);
    rec = fake_salesforce_record(f, "Account", a0);
    JEQ(rec, "Name", "A2");
    json_decref(rec);

    /* delete */
    char path[256];
    snprintf(path, sizeof path, "%s?ids=%s,001000000000000AAA&allOrNone=false", cp, a0);
    j = call(f, "DELETE", path, "t", NULL, &st);
    CU_ASSERT_EQUAL(st, 200);
    CU_ASSERT(json_is_true(jpath(j, "0.success")));
    CU_ASSERT(json_is_false(jpath(j, "1.success")));
    JEQ(j, "1.errors.0.statusCode", "ENTITY_IS_DELETED");
    json_decref(j);
    CU_ASSERT_EQUAL(fake_salesforce_count(f, "Account"), 0);
    /* the same id twice */
    j = call(f, "POST", "/services/data/v62.0/sobjects/Account", "t", "{\"Name\":\"Twice\"}", &st);
    snprintf(a0, sizeof a0, "%s", js(j, "id"));
    json_decref(j);
    snprintf(path, sizeof path, "%s?ids=%s,%s", cp, a0, a0);
    j = call(f, "DELETE", path, "t", NULL, &st);
    CU_ASSERT_EQUAL(st, 200);
    CU_ASSERT(json_is_true(jpath(j, "0.success")));
    CU_ASSERT(json_is_false(jpath(j, "1.success")));
    json_decref(j);
    CU_ASSERT_EQUAL(fake_salesforce_count(f, "Account"), 0);

    /* more than 200 records */
    size_t cap = 201 * 64 + 64, len = 0;
    char *big = malloc(cap);
    len += (size_t)snprintf(big, cap, "{\"records\":[");
    for (int i = 0; i < 201; i++)
        len += (size_t)snprintf(big + len, cap - len, "%s{\"attributes\":{\"type\":\"Lead\"},\"LastName\":\"L%d\"}",
                                i ? "," : "", i);
    snprintf(big + len, cap - len, "]}");
    j = call(f, "POST", cp, "t", big, &st);
    free(big);
    CU_ASSERT_EQUAL(st, 400);
    CU_ASSERT(json_is_array(j));
    CU_ASSERT_PTR_NOT_NULL(jps(j, "0.errorCode"));
    json_decref(j);
    CU_ASSERT_EQUAL(fake_salesforce_count(f, "Lead"), 0);
    fake_stop(f);
}

/* ---- echo ------------------------------------------------------------------------------ */

static void test_echo_basic(void)
{
    struct fake *f = fake_start(FAKE_ECHO, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    const char *hs[] = {"X-One: 1", "X-Multi: a", "X-Multi: b", "Content-Type: application/json", NULL};
    const char *body = "{\"k\":\"v\"}";
    struct hreq q = {.method = "PUT", .url = U(f, "/p/q?x=%%2F&y"), .headers = hs, .body = body};
    struct hresp r;
    CU_ASSERT_EQUAL(doreq(&q, &r), CURLE_OK);
    CU_ASSERT_EQUAL(r.status, 200);
    json_t *j = jbody(&r);
    hresp_free(&r);
    JEQ(j, "method", "PUT");
    JEQ(j, "path", "/p/q");
    JEQ(j, "query", "x=%2F&y");
    JEQ(j, "headers.x-one", "1");
    JEQ(j, "headers.x-multi", "a, b");
    JEQ(j, "headers.content-type", "application/json");
    JEQ(j, "body", body);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "bodyBytes")), (json_int_t)strlen(body));
    char want[17];
    snprintf(want, sizeof want, "%016llx",
             (unsigned long long)fnv1a(FNV_INIT, (const unsigned char *)body, strlen(body)));
    JEQ(j, "bodyChecksum", want);
    json_decref(j);

    /* not UTF-8: body null, still counted */
    const unsigned char bin[] = {0xff, 0xfe, 0x00, 0x01, 0x80};
    struct hreq q2 = {.method = "POST", .url = U(f, "/bin"), .body = (const char *)bin, .body_len = sizeof bin};
    CU_ASSERT_EQUAL(doreq(&q2, &r), CURLE_OK);
    j = jbody(&r);
    hresp_free(&r);
    CU_ASSERT(json_is_null(json_object_get(j, "body")));
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "bodyBytes")), 5);
    snprintf(want, sizeof want, "%016llx", (unsigned long long)fnv1a(FNV_INIT, bin, sizeof bin));
    JEQ(j, "bodyChecksum", want);
    json_decref(j);

    /* any method, no body */
    struct hreq q3 = {.method = "OPTIONS", .url = U(f, "/")};
    CU_ASSERT_EQUAL(doreq(&q3, &r), CURLE_OK);
    j = jbody(&r);
    hresp_free(&r);
    JEQ(j, "method", "OPTIONS");
    JEQ(j, "body", "");
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "bodyBytes")), 0);
    JEQ(j, "bodyChecksum", "cbf29ce484222325");
    json_decref(j);
    fake_stop(f);
}

static void test_echo_helpers(void)
{
    struct fake *f = fake_start(FAKE_ECHO, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    struct hresp r;
    struct hreq q = {.method = "GET", .url = U(f, "/bytes/1000")};
    CU_ASSERT_EQUAL(doreq(&q, &r), CURLE_OK);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_EQUAL(r.len, 1000);
    int ok = 1;
    for (size_t i = 0; i < r.len; i++)
        if ((unsigned char)r.body[i] != i % 251)
            ok = 0;
    CU_ASSERT(ok);
    CU_ASSERT(hdr_is(&r, "Content-Length", "1000"));
    hresp_free(&r);
    q.url = U(f, "/bytes/0");
    CU_ASSERT_EQUAL(doreq(&q, &r), CURLE_OK);
    CU_ASSERT_EQUAL(r.len, 0);
    hresp_free(&r);

    q.url = U(f, "/status/418");
    CU_ASSERT_EQUAL(doreq(&q, &r), CURLE_OK);
    CU_ASSERT_EQUAL(r.status, 418);
    json_t *j = jbody(&r);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "status")), 418);
    json_decref(j);
    hresp_free(&r);
    q.url = U(f, "/status/204");
    CU_ASSERT_EQUAL(doreq(&q, &r), CURLE_OK);
    CU_ASSERT_EQUAL(r.status, 204);
    CU_ASSERT_EQUAL(r.len, 0);
    hresp_free(&r);
    q.url = U(f, "/status/503");
    CU_ASSERT_EQUAL(doreq(&q, &r), CURLE_OK);
    CU_ASSERT_EQUAL(r.status, 503);
    hresp_free(&r);

    q.url = U(f, "/headers/X-Custom-Thing/hello%%20world");
    CU_ASSERT_EQUAL(doreq(&q, &r), CURLE_OK);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT(hdr_is(&r, "X-Custom-Thing", "hello world"));
    hresp_free(&r);
    q.url = U(f, "/headers/Retry-After/3");
    CU_ASSERT_EQUAL(doreq(&q, &r), CURLE_OK);
    CU_ASSERT(hdr_is(&r, "Retry-After", "3"));
    hresp_free(&r);

    q.url = U(f, "/slow/250");
    double t0 = fake_now();
    CU_ASSERT_EQUAL(doreq(&q, &r), CURLE_OK);
    CU_ASSERT(fake_now() - t0 >= 0.245);
    CU_ASSERT_EQUAL(r.status, 200);
    hresp_free(&r);
    /* other methods on helper paths are echoed */
    q.method = "POST";
    q.url = U(f, "/status/500");
    q.body = "x";
    CU_ASSERT_EQUAL(doreq(&q, &r), CURLE_OK);
    CU_ASSERT_EQUAL(r.status, 200);
    hresp_free(&r);
    fake_stop(f);
}

/* 50 MB each way, streamed */
struct up_state {
    uint64_t pos, total, sum;
};

static size_t up_read(char *buf, size_t sz, size_t nm, void *u)
{
    struct up_state *s = u;
    size_t n = sz * nm;
    if (n > s->total - s->pos)
        n = (size_t)(s->total - s->pos);
    for (size_t i = 0; i < n; i++)
        buf[i] = (char)((s->pos + i) * 7 % 256);
    s->sum = fnv1a(s->sum, (unsigned char *)buf, n);
    s->pos += n;
    return n;
}

struct down_state {
    uint64_t n;
    int bad;
};

static size_t down_write(char *d, size_t sz, size_t nm, void *u)
{
    struct down_state *s = u;
    size_t n = sz * nm;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)d[i] != (s->n + i) % 251)
            s->bad = 1;
    s->n += n;
    return n;
}

static void test_echo_stream_50mb(void)
{
    struct fake *f = fake_start(FAKE_ECHO, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    const uint64_t total = 50ULL * 1024 * 1024;

    struct up_state us = {0, total, FNV_INIT};
    struct hresp r;
    memset(&r, 0, sizeof r);
    CURL *h = curl_easy_init();
    curl_easy_setopt(h, CURLOPT_URL, U(f, "/upload"));
    curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "POST");
    curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)total);
    curl_easy_setopt(h, CURLOPT_READFUNCTION, up_read);
    curl_easy_setopt(h, CURLOPT_READDATA, &us);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, body_cb);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    CU_ASSERT_EQUAL(curl_easy_perform(h), CURLE_OK);
    long st = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &st);
    curl_easy_cleanup(h);
    CU_ASSERT_EQUAL(st, 200);
    json_t *j = jbody(&r);
    free(r.body);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "bodyBytes")), (json_int_t)total);
    CU_ASSERT(json_is_null(json_object_get(j, "body")));
    char want[17];
    snprintf(want, sizeof want, "%016llx", (unsigned long long)us.sum);
    JEQ(j, "bodyChecksum", want);
    json_decref(j);
    struct fake_req rq;
    CU_ASSERT_EQUAL(fake_last(f, "POST", "/upload", &rq), 0);
    CU_ASSERT_EQUAL(rq.body_total, total);
    CU_ASSERT_EQUAL(rq.body_len, 1024 * 1024);
    CU_ASSERT_EQUAL(rq.body_checksum, us.sum);
    fake_req_free(&rq);

    /* chunked request body (no Content-Length) */
    struct up_state cs = {0, 3 * 1024 * 1024 + 11, FNV_INIT};
    memset(&r, 0, sizeof r);
    h = curl_easy_init();
    struct curl_slist *te = curl_slist_append(NULL, "Transfer-Encoding: chunked");
    curl_easy_setopt(h, CURLOPT_URL, U(f, "/chunked"));
    curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "PUT");
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, te);
    curl_easy_setopt(h, CURLOPT_READFUNCTION, up_read);
    curl_easy_setopt(h, CURLOPT_READDATA, &cs);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, body_cb);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    CU_ASSERT_EQUAL(curl_easy_perform(h), CURLE_OK);
    curl_easy_cleanup(h);
    curl_slist_free_all(te);
    j = jbody(&r);
    free(r.body);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "bodyBytes")), (json_int_t)cs.total);
    snprintf(want, sizeof want, "%016llx", (unsigned long long)cs.sum);
    JEQ(j, "bodyChecksum", want);
    JEQ(j, "headers.transfer-encoding", "chunked");
    json_decref(j);

    struct down_state ds = {0, 0};
    struct hresp hr;
    memset(&hr, 0, sizeof hr);
    h = curl_easy_init();
    curl_easy_setopt(h, CURLOPT_URL, U(f, "/bytes/%llu", (unsigned long long)total));
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, down_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &ds);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, hdr_cb);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &hr);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    CU_ASSERT_EQUAL(curl_easy_perform(h), CURLE_OK);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &st);
    curl_easy_cleanup(h);
    CU_ASSERT_EQUAL(st, 200);
    CU_ASSERT_EQUAL(ds.n, total);
    CU_ASSERT_FALSE(ds.bad);
    char cl[32];
    snprintf(cl, sizeof cl, "%llu", (unsigned long long)total);
    CU_ASSERT(hdr_is(&hr, "Content-Length", cl));
    hresp_free(&hr);
    fake_stop(f);
}

/* ---- TLS ----------------------------------------------------------------------------------- */

static char *certs_script(void)
{
    const char *e = getenv("FAKE_CERTS_SH");
    char buf[1024];
    if (e && *e)
        return strdup(e);
    const char *sd = getenv("srcdir");
    if (sd && *sd) {
        snprintf(buf, sizeof buf, "%s/tests/fake/certs.sh", sd);
        if (access(buf, R_OK) == 0)
            return strdup(buf);
    }
    snprintf(buf, sizeof buf, "%s", __FILE__);
    char *sl = strrchr(buf, '/');
    if (sl)
        snprintf(sl + 1, sizeof buf - (size_t)(sl + 1 - buf), "certs.sh");
    else
        snprintf(buf, sizeof buf, "certs.sh");
    return strdup(buf);
}

static void test_tls(void)
{
    char *script = certs_script();
    char *dir = pbt_path("certs");
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "sh '%s' '%s'", script, dir);
    CU_ASSERT_EQUAL_FATAL(system(cmd), 0);
    char ca[1200], cert[1200], key[1200];
    snprintf(ca, sizeof ca, "%s/ca.pem", dir);
    snprintf(cert, sizeof cert, "%s/server.pem", dir);
    snprintf(key, sizeof key, "%s/server.key", dir);
    /* idempotent */
    char *before = pbt_read_file(cert, NULL);
    CU_ASSERT_EQUAL(system(cmd), 0);
    char *after = pbt_read_file(cert, NULL);
    CU_ASSERT(before && after && strcmp(before, after) == 0);
    free(before);
    free(after);

    struct fake_opts o = {.tls_cert_file = cert, .tls_key_file = key};
    struct fake *f = fake_start(FAKE_HUBSPOT, &o);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT(strncmp(fake_base_url(f), "https://127.0.0.1:", 18) == 0);
    fake_add_token(f, "t", NULL, 0);
    int port = fake_port(f);
    char url[256], res[256];
    snprintf(url, sizeof url, "https://api.hubapi.com:%d/crm/v3/objects/contacts", port);
    snprintf(res, sizeof res, "api.hubapi.com:%d:127.0.0.1", port);
    const char *hs[] = {"Authorization: Bearer t", NULL};
    struct hreq q = {.method = "GET", .url = url, .headers = hs, .cainfo = ca, .resolve = res};
    struct hresp r;
    CU_ASSERT_EQUAL(doreq(&q, &r), CURLE_OK);
    CU_ASSERT_EQUAL(r.status, 200);
    hresp_free(&r);
    /* the way plugboard's egress will reach it: connect_to from the real host:443 */
    char ct[256];
    snprintf(ct, sizeof ct, "api.hubapi.com:443:127.0.0.1:%d", port);
    struct hreq q2 = {.method = "GET", .url = "https://api.hubapi.com/crm/v3/objects/contacts", .headers = hs,
                      .cainfo = ca, .connect_to = ct};
    CU_ASSERT_EQUAL(doreq(&q2, &r), CURLE_OK);
    CU_ASSERT_EQUAL(r.status, 200);
    hresp_free(&r);
    /* the certificate is really checked */
    struct hreq q3 = q;
    q3.cainfo = NULL;
    CU_ASSERT_EQUAL(doreq(&q3, &r), CURLE_PEER_FAILED_VERIFICATION);
    hresp_free(&r);
    char url4[256], res4[256];
    snprintf(url4, sizeof url4, "https://api.example.org:%d/crm/v3/objects/contacts", port);
    snprintf(res4, sizeof res4, "api.example.org:%d:127.0.0.1", port);
    struct hreq q4 = {.method = "GET", .url = url4, .headers = hs, .cainfo = ca, .resolve = res4};
    CU_ASSERT_EQUAL(doreq(&q4, &r), CURLE_PEER_FAILED_VERIFICATION);
    hresp_free(&r);
    /* plain HTTP to a TLS port fails */
    struct hreq q5 = {.method = "GET", .url = U(f, "/x"), .timeout_ms = 3000};
    char plain[256];
    snprintf(plain, sizeof plain, "http://127.0.0.1:%d/x", port);
    q5.url = plain;
    doreq(&q5, &r);
    CU_ASSERT(r.rc != CURLE_OK || r.status != 200);
    hresp_free(&r);
    fake_stop(f);

    /* Salesforce on a wildcard name, echo on its own name, with a big body */
    f = fake_start(FAKE_SALESFORCE, &o);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fake_add_token(f, "t", NULL, 0);
    port = fake_port(f);
    snprintf(url, sizeof url, "https://acme.my.salesforce.com:%d/services/data/v62.0/sobjects/Account", port);
    snprintf(res, sizeof res, "acme.my.salesforce.com:%d:127.0.0.1", port);
    const char *hs2[] = {"Authorization: Bearer t", "Content-Type: application/json", NULL};
    struct hreq q6 = {.method = "POST", .url = url, .headers = hs2, .cainfo = ca, .resolve = res,
                      .body = "{\"Name\":\"TLS\"}"};
    CU_ASSERT_EQUAL(doreq(&q6, &r), CURLE_OK);
    CU_ASSERT_EQUAL(r.status, 201);
    hresp_free(&r);
    CU_ASSERT_EQUAL(fake_salesforce_count(f, "Account"), 1);
    snprintf(url, sizeof url, "https://login.salesforce.com:%d/services/oauth2/token", port);
    snprintf(res, sizeof res, "login.salesforce.com:%d:127.0.0.1", port);
    fake_add_code(f, "c");
    struct hreq q7 = {.method = "POST", .url = url, .cainfo = ca, .resolve = res,
                      .body = "grant_type=authorization_code&code=c"};
    CU_ASSERT_EQUAL(doreq(&q7, &r), CURLE_OK);
    CU_ASSERT_EQUAL(r.status, 200);
    json_t *j = jbody(&r);
    CU_ASSERT(strncmp(js(j, "instance_url"), "https://", 8) == 0);
    json_decref(j);
    hresp_free(&r);
    fake_stop(f);

    f = fake_start(FAKE_ECHO, &o);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    port = fake_port(f);
    snprintf(url, sizeof url, "https://api.echo.test:%d/bytes/3000000", port);
    snprintf(res, sizeof res, "api.echo.test:%d:127.0.0.1", port);
    struct hreq q8 = {.method = "GET", .url = url, .cainfo = ca, .resolve = res};
    CU_ASSERT_EQUAL(doreq(&q8, &r), CURLE_OK);
    CU_ASSERT_EQUAL(r.len, 3000000);
    CU_ASSERT_EQUAL((unsigned char)r.body[2999999], 2999999 % 251);
    hresp_free(&r);
    /* faults over TLS too */
    struct fake_fault pf = {.partial_body = 1, .status = 200};
    fake_inject(f, NULL, NULL, &pf, 1);
    CU_ASSERT_EQUAL(doreq(&q8, &r), CURLE_PARTIAL_FILE);
    hresp_free(&r);
    struct fake_fault rf = {.reset = 1};
    fake_inject(f, NULL, NULL, &rf, 1);
    CU_ASSERT_NOT_EQUAL(doreq(&q8, &r), CURLE_OK);
    hresp_free(&r);
    fake_stop(f);
    free(dir);
    free(script);
}

/* ---- concurrency, aborted requests, stop ------------------------------------------------- */

struct worker {
    struct fake *f;
    int n, ok;
};

static void *create_worker(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < w->n; i++) {
        long st;
        json_t *j = call(w->f, "POST", "/crm/v3/objects/contacts", "t", "{\"properties\":{\"firstname\":\"w\"}}", &st);
        if (st == 201)
            w->ok++;
        json_decref(j);
    }
    return NULL;
}

static void *refresh_worker(void *arg)
{
    struct worker *w = arg;
    long st;
    json_t *j = form_post(w->f, "/oauth/v1/token", "grant_type=refresh_token&refresh_token=r", NULL, &st);
    if (st == 200)
        w->ok++;
    json_decref(j);
    return NULL;
}

static void test_concurrency(void)
{
    struct fake *f = fake_start(FAKE_HUBSPOT, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fake_add_token(f, "t", "r", 0);
    pthread_t th[8];
    struct worker w[8];
    for (int i = 0; i < 8; i++) {
        w[i] = (struct worker){f, 25, 0};
        pthread_create(&th[i], NULL, create_worker, &w[i]);
    }
    int ok = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        ok += w[i].ok;
    }
    CU_ASSERT_EQUAL(ok, 200);
    CU_ASSERT_EQUAL(fake_hubspot_count(f, "contacts"), 200);
    CU_ASSERT_EQUAL(fake_count(f, "POST", "/crm/v3/objects/contacts"), 200);
    for (int i = 0; i < 8; i++) {
        w[i] = (struct worker){f, 1, 0};
        pthread_create(&th[i], NULL, refresh_worker, &w[i]);
    }
    ok = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        ok += w[i].ok;
    }
    CU_ASSERT_EQUAL(ok, 8);
    CU_ASSERT_EQUAL(fake_token_calls(f), 8);
    fake_stop(f);
}

static int raw_connect(int port)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(s, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(s);
        return -1;
    }
    return s;
}

struct slow_call {
    struct fake *f;
    CURLcode rc;
};

static void *slow_worker(void *arg)
{
    struct slow_call *s = arg;
    struct hreq q = {.method = "GET", .url = U(s->f, "/slow/20000"), .timeout_ms = 30000};
    struct hresp r;
    s->rc = doreq(&q, &r);
    hresp_free(&r);
    return NULL;
}

static void test_aborted_and_stop(void)
{
    struct fake *f = fake_start(FAKE_ECHO, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    /* request line only */
    int s = raw_connect(fake_port(f));
    CU_ASSERT_FATAL(s >= 0);
    const char *a = "GET /half HTTP/1.1\r\nHost: x\r\n";
    CU_ASSERT(write(s, a, strlen(a)) == (ssize_t)strlen(a));
    usleep(50 * 1000);
    close(s);
    /* headers, then half the body */
    s = raw_connect(fake_port(f));
    CU_ASSERT_FATAL(s >= 0);
    const char *b = "POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789";
    CU_ASSERT(write(s, b, strlen(b)) == (ssize_t)strlen(b));
    usleep(50 * 1000);
    close(s);
    /* garbage */
    s = raw_connect(fake_port(f));
    CU_ASSERT_FATAL(s >= 0);
    CU_ASSERT(write(s, "\x01\x02\r\n\r\n", 6) == 6);
    usleep(50 * 1000);
    close(s);
    usleep(100 * 1000);
    /* incomplete requests are not recorded, the server still works */
    CU_ASSERT_EQUAL(fake_count(f, NULL, NULL), 0);
    long st;
    json_t *j = call(f, "GET", "/fine", NULL, NULL, &st);
    CU_ASSERT_EQUAL(st, 200);
    json_decref(j);

    /* an idle keep-alive connection stays open across fake_stop() */
    int ka = raw_connect(fake_port(f));
    CU_ASSERT_FATAL(ka >= 0);
    const char *kreq = "GET /ka HTTP/1.1\r\nHost: x\r\n\r\n";
    CU_ASSERT(write(ka, kreq, strlen(kreq)) == (ssize_t)strlen(kreq));
    char kbuf[4096];
    ssize_t kn = read(ka, kbuf, sizeof kbuf - 1);
    CU_ASSERT(kn > 12 && strncmp(kbuf, "HTTP/1.1 200", 12) == 0);

    /* stopping does not wait for sleeping handlers */
    struct slow_call sc = {f, CURLE_OK};
    pthread_t th;
    pthread_create(&th, NULL, slow_worker, &sc);
    usleep(300 * 1000);
    struct fake_fault d = {.delay_ms = 20000};
    fake_inject(f, NULL, NULL, &d, 1);
    double t0 = fake_now();
    fake_stop(f);
    CU_ASSERT(fake_now() - t0 < 5.0);
    pthread_join(th, NULL);
    CU_ASSERT_NOT_EQUAL(sc.rc, CURLE_OK);
    close(ka);
}

static CU_TestInfo tests[] = {
    {"start_stop", test_start_stop},
    {"recording", test_recording},
    {"fault_429_hubspot", test_fault_429_hubspot},
    {"fault_status_and_body", test_fault_status_and_body},
    {"fault_salesforce_limit", test_fault_salesforce_limit},
    {"fault_delay", test_fault_delay},
    {"fault_reset", test_fault_reset},
    {"fault_partial_body", test_fault_partial_body},
    {"hubspot_auth", test_hubspot_auth},
    {"hubspot_oauth", test_hubspot_oauth},
    {"hubspot_crud", test_hubspot_crud},
    {"hubspot_batch", test_hubspot_batch},
    {"hubspot_associations", test_hubspot_associations},
    {"salesforce_oauth", test_salesforce_oauth},
    {"salesforce_crud", test_salesforce_crud},
    {"salesforce_composite", test_salesforce_composite},
    {"echo_basic", test_echo_basic},
    {"echo_helpers", test_echo_helpers},
    {"echo_stream_50mb", test_echo_stream_50mb},
    {"tls", test_tls},
    {"concurrency", test_concurrency},
    {"aborted_and_stop", test_aborted_and_stop},
    CU_TEST_INFO_NULL,
};

int main(int argc, char **argv)
{
    curl_global_init(CURL_GLOBAL_ALL);
    int rc = pbt_main(argc, argv, "fake", tests);
    curl_global_cleanup();
    return rc;
}
