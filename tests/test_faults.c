/* Faults against the fakes, through the proxy and the Write API: a
 * provider that breaks off mid-body, resets, answers too slowly, answers
 * 500 forever, a token endpoint that answers garbage or is down, a store
 * that becomes read-only or locked mid-run, and clients that are slow or
 * idle. Every fault ends in a bounded time with an exact answer.
 *
 * Config: egress.timeout_ms 1500, server.connection_timeout_s 2,
 * server.connection_limit 32 (a second app with a 5 s egress timeout runs
 * the retry budget test).
 *
 * With PB_SECRETS_LOG set, every secret the test makes is appended to that
 * file (one per line) for tests/secrets_scan.sh. */
#include "app.h"
#include "control.h"
#include "fake/fake.h"
#include "log.h"
#include "server.h"
#include "testutil.h"
#include "util.h"
#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <linux/capability.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>

#define TIMEOUT_MS 1500
#define PATIENT_TIMEOUT_MS 5000

static struct pb_app *app, *patient;
static char base[128], patient_base[128];
static int port;
static struct fake *echo, *hs;
static char key[128], project_id[64], patient_key[128], patient_project[64];
static char inst_echo[64], inst_hs[64], patient_echo[64];
/* HubSpot installations whose access token has expired, one per test that
 * makes the token endpoint fail (each has its own back-off). */
enum { T_GARBAGE, T_NOTOKEN, T_DOWN, T_503, T_WRITE_GARBAGE, N_EXPIRED };
static char inst_expired[N_EXPIRED][64];
static const char *const expired_groups[N_EXPIRED] = {"g-garbage", "g-notoken", "g-down",
                                                      "g-503", "g-write-garbage"};

#define ECHO_SECRET "flt-echo-secret-4be2a7"
#define HS_ACCESS "flt-hs-access-91c3d0"
#define HS_REFRESH "flt-hs-refresh-22ab7f"
#define HS_CLIENT_SECRET "flt-hs-client-secret-5e6f"
#define EXPIRED_ACCESS "flt-hs-stale-access-%d-0c1d"
#define EXPIRED_REFRESH "flt-hs-refresh-%d-a9e8"

/* ---- helpers ------------------------------------------------------------------ */

static void secret_log(const char *s)
{
    const char *path = getenv("PB_SECRETS_LOG");
    if (!path || !*path || !s || !*s)
        return;
    FILE *f = fopen(path, "a");
    if (!f)
        return;
    fprintf(f, "%s\n", s);
    fclose(f);
}

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    char *s = NULL;
    if (vasprintf(&s, f, ap) < 0)
        abort();
    va_end(ap);
    return s;
}

#define EXPECT(cond, ...)                                                                    \
    do {                                                                                     \
        int ok_ = !!(cond);                                                                  \
        if (!ok_) {                                                                          \
            fprintf(stderr, "\n    %s:%d: ", __FILE__, __LINE__);                            \
            fprintf(stderr, __VA_ARGS__);                                                    \
            fputc('\n', stderr);                                                             \
        }                                                                                    \
        CU_assertImplementation(ok_ ? CU_TRUE : CU_FALSE, __LINE__, #cond, __FILE__, "",     \
                                CU_FALSE);                                                   \
    } while (0)

#define EXPECT_STR(actual, want)                                                             \
    do {                                                                                     \
        const char *a_ = (actual), *w_ = (want);                                             \
        EXPECT(a_ && strcmp(a_, w_) == 0, "%s is '%.300s', want '%.300s'", #actual,          \
               a_ ? a_ : "(null)", w_);                                                      \
    } while (0)

static const char *jstr(const json_t *j, const char *key_)
{
    return json_string_value(json_object_get(j, key_));
}

/* One finished exchange as a client sees it. */
struct call {
    CURLcode rc;
    long status;
    char *body;
    size_t len;
    char *headers;
    json_t *j;
    int64_t ms;          /* wall time of the call */
    curl_off_t announced; /* Content-Length, -1 when none */
};

static void call_free(struct call *c)
{
    free(c->body);
    free(c->headers);
    json_decref(c->j);
    memset(c, 0, sizeof *c);
}

static size_t grow(char *d, size_t size, size_t n, void *u)
{
    struct call *c = u;
    size_t add = size * n;
    c->body = realloc(c->body, c->len + add + 1);
    memcpy(c->body + c->len, d, add);
    c->len += add;
    c->body[c->len] = '\0';
    return add;
}

static size_t grow_headers(char *d, size_t size, size_t n, void *u)
{
    char **h = u;
    size_t have = *h ? strlen(*h) : 0, add = size * n;
    *h = realloc(*h, have + add + 1);
    memcpy(*h + have, d, add);
    (*h)[have + add] = '\0';
    return add;
}

static void do_call_on(const char *server, const char *method, const char *path,
                       const char *const *hdrs, const char *body, long timeout_s, struct call *c)
{
    memset(c, 0, sizeof *c);
    CURL *h = curl_easy_init();
    struct curl_slist *sl = NULL;
    for (size_t i = 0; hdrs && hdrs[i]; i++)
        sl = curl_slist_append(sl, hdrs[i]);
    sl = curl_slist_append(sl, "Expect:");
    char *url = fmt("%s%s", server, path);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, sl);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, timeout_s);
    curl_easy_setopt(h, CURLOPT_FORBID_REUSE, 1L);
    if (body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, grow);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, grow_headers);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &c->headers);
    int64_t t0 = pb_mono_ms();
    c->rc = curl_easy_perform(h);
    c->ms = pb_mono_ms() - t0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &c->status);
    c->announced = -1;
    curl_easy_getinfo(h, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &c->announced);
    if (!c->body)
        c->body = strdup("");
    if (!c->headers)
        c->headers = strdup("");
    c->j = json_loadb(c->body, c->len, 0, NULL);
    curl_slist_free_all(sl);
    curl_easy_cleanup(h);
    free(url);
}

static void do_call(const char *method, const char *path, const char *const *hdrs,
                    const char *body, struct call *c)
{
    do_call_on(base, method, path, hdrs, body, 30, c);
}

/* The problem's slug, or the Nango error's code. */
static const char *slug_of(const struct call *c)
{
    const char *t = jstr(c->j, "type");
    if (t && strncmp(t, "urn:plugboard:problem:", 22) == 0)
        return t + 22;
    const char *code = jstr(json_object_get(c->j, "error"), "code");
    return code ? code : "";
}

static int is_problem(const struct call *c)
{
    return strstr(c->headers, "application/problem+json") != NULL &&
           json_integer_value(json_object_get(c->j, "status")) == c->status;
}

/* Ampersand-style headers for an installation of the main app's project. */
struct amp {
    char k[200], p[200], i[200];
    const char *h[8];
};

static const char *const *amp_for(struct amp *a, const char *inst)
{
    snprintf(a->k, sizeof a->k, "x-api-key: %s", key);
    snprintf(a->p, sizeof a->p, "x-amp-project-id: %s", project_id);
    snprintf(a->i, sizeof a->i, "x-amp-installation-id: %s", inst);
    a->h[0] = "x-amp-proxy-version: 1";
    a->h[1] = a->k;
    a->h[2] = a->p;
    a->h[3] = a->i;
    a->h[4] = NULL;
    return a->h;
}

static int raw_connect(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* Milliseconds until the server closes `fd` (0 bytes or a reset), -1 when
 * it is still open after wait_ms. Bytes the server sent first are counted
 * in *got. */
static int64_t wait_closed(int fd, int64_t start, int64_t wait_ms, size_t *got)
{
    *got = 0;
    for (;;) {
        int64_t left = start + wait_ms - pb_mono_ms();
        if (left <= 0)
            return -1;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int n = poll(&p, 1, (int)left);
        if (n <= 0)
            continue;
        char buf[4096];
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r > 0) {
            *got += (size_t)r;
            continue;
        }
        return pb_mono_ms() - start;
    }
}

/* ---- dropping root's override, so file modes mean what they say ---------------- */

static void drop_dac_override(void)
{
    if (geteuid() != 0)
        return;
    struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct d[2];
    if (syscall(SYS_capget, &h, d) != 0)
        return;
    const int caps[] = {CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER};
    for (size_t i = 0; i < sizeof caps / sizeof caps[0]; i++) {
        unsigned bit = 1u << (caps[i] % 32);
        d[caps[i] / 32].effective &= ~bit;
        d[caps[i] / 32].permitted &= ~bit;
        d[caps[i] / 32].inheritable &= ~bit;
    }
    if (syscall(SYS_capset, &h, d) != 0)
        perror("test_faults: capset");
}

/* ---- set-up ------------------------------------------------------------------ */

static int make_project(struct pb_app *a, const char *name, char *id, char *k)
{
    struct pb_problem p = {0};
    json_t *out = NULL;
    if (pb_ctl_project_create(a, name, &out, &p) != 0)
        return -1;
    snprintf(id, 64, "%s", jstr(out, "id"));
    snprintf(k, 128, "%s", jstr(out, "apiKey"));
    json_decref(out);
    secret_log(k);
    const char *amp = "specVersion: 1.0.0\n"
                      "integrations:\n"
                      "  - {name: echo-int, provider: echo, proxy: {enabled: true}}\n"
                      "  - {name: hs-int, provider: hubspot, proxy: {enabled: true},\n"
                      "     write: {objects: [{objectName: contacts}]}}\n";
    if (pb_ctl_manifest_apply(a, id, amp, strlen(amp), "amp.yaml", &out, &p) != 0) {
        fprintf(stderr, "manifest: %s\n", p.detail);
        return -1;
    }
    json_decref(out);
    return 0;
}

static int connect_install(struct pb_app *a, const char *pid, const char *integration,
                           const char *body, char *inst)
{
    struct pb_problem p = {0};
    json_t *b = json_loads(body, 0, NULL), *c = NULL, *i = NULL;
    if (!b || pb_ctl_connection_generate(a, pid, b, &c, &p) != 0) {
        fprintf(stderr, "connection: %s\n", p.detail);
        return -1;
    }
    json_t *ib = json_pack("{s:O, s:O, s:{s:{}}}", "groupRef", json_object_get(b, "groupRef"),
                           "connectionId", json_object_get(c, "id"), "config", "content");
    int rc = pb_ctl_installation_create(a, pid, integration, ib, &i, &p);
    if (rc == 0)
        snprintf(inst, 64, "%s", jstr(i, "id"));
    else
        fprintf(stderr, "installation: %s\n", p.detail);
    json_decref(ib);
    json_decref(b);
    json_decref(c);
    json_decref(i);
    return rc;
}

static char *providers(long timeout_ms, const char *server)
{
    return fmt("%s"
               "egress: {timeout_ms: %ld, allow_private: true}\n"
               "providers:\n"
               "  echo: {plugin: generic, base_url: '%s', auth_header: X-Echo-Key, "
               "auth_scheme: ''}\n"
               "  hubspot: {plugin: hubspot, client_id: flt-hs-client, client_secret: %s, "
               "base_url: '%s', token_url: '%s/oauth/v1/token'}\n",
               server, timeout_ms, fake_base_url(echo), HS_CLIENT_SECRET, fake_base_url(hs),
               fake_base_url(hs));
}

static int setup(void)
{
    struct fake_opts hs_opts = {.client_id = "flt-hs-client", .client_secret = HS_CLIENT_SECRET};
    echo = fake_start(FAKE_ECHO, NULL);
    hs = fake_start(FAKE_HUBSPOT, &hs_opts);
    if (!echo || !hs)
        return -1;
    secret_log(HS_CLIENT_SECRET);
    secret_log(ECHO_SECRET);
    secret_log(HS_ACCESS);
    secret_log(HS_REFRESH);
    char *yaml = providers(TIMEOUT_MS, "server: {connection_limit: 32, connection_timeout_s: 2}\n");
    app = pbt_start(yaml, base, sizeof base);
    free(yaml);
    /* Both apps start before anything is sealed: the master key is
     * process-wide. */
    yaml = providers(PATIENT_TIMEOUT_MS, "");
    patient = pbt_start(yaml, patient_base, sizeof patient_base);
    free(yaml);
    if (!app || !patient)
        return -1;
    if (getenv("PB_SECRETS_LOG"))
        pb_log_setup("debug", "json"); /* the scan reads the most verbose logs */
    port = atoi(strrchr(base, ':') + 1);
    if (make_project(app, "faults", project_id, key) != 0 ||
        make_project(patient, "patient", patient_project, patient_key) != 0)
        return -1;
    fake_add_token(hs, HS_ACCESS, HS_REFRESH, 0);
    if (connect_install(app, project_id, "echo-int",
                        "{\"groupRef\":\"g-echo\",\"provider\":\"echo\",\"apiKey\":\"" ECHO_SECRET "\"}",
                        inst_echo) != 0 ||
        connect_install(patient, patient_project, "echo-int",
                        "{\"groupRef\":\"g-echo\",\"provider\":\"echo\",\"apiKey\":\"" ECHO_SECRET "\"}",
                        patient_echo) != 0 ||
        connect_install(app, project_id, "hs-int",
                        "{\"groupRef\":\"g-hs\",\"provider\":\"hubspot\",\"oauth2AuthorizationCode\":"
                        "{\"accessToken\":{\"token\":\"" HS_ACCESS "\",\"expiresAt\":\"2099-01-01T00:00:00Z\"},"
                        "\"refreshToken\":{\"token\":\"" HS_REFRESH "\"}}}",
                        inst_hs) != 0)
        return -1;
    for (int i = 0; i < N_EXPIRED; i++) {
        char access[64], refresh[64];
        snprintf(access, sizeof access, EXPIRED_ACCESS, i);
        snprintf(refresh, sizeof refresh, EXPIRED_REFRESH, i);
        secret_log(access);
        secret_log(refresh);
        fake_add_token(hs, access, refresh, -1);
        char *body = fmt("{\"groupRef\":\"%s\",\"provider\":\"hubspot\",\"oauth2AuthorizationCode\":"
                         "{\"accessToken\":{\"token\":\"%s\",\"expiresAt\":\"2020-01-01T00:00:00Z\"},"
                         "\"refreshToken\":{\"token\":\"%s\"}}}",
                         expired_groups[i], access, refresh);
        int rc = connect_install(app, project_id, "hs-int", body, inst_expired[i]);
        free(body);
        if (rc != 0)
            return -1;
    }
    return 0;
}

/* ---- a provider that breaks off ---------------------------------------------------- */

static void test_partial_body_proxy(void)
{
    /* 200 with Content-Length 64 and 32 bytes, then the provider drops:
     * the client sees the same short body and a broken transfer, never a
     * complete-looking 200. */
    struct fake_fault f = {.partial_body = 1};
    struct amp a;
    const char *const *h = amp_for(&a, inst_echo);
    char *auth = fmt("Authorization: Bearer %s", key);
    const char *hn[] = {auth, "Provider-Config-Key: echo-int", "Connection-Id: g-echo",
                        "Retries: 3", NULL};
    char *sdk = fmt("/sdk/%s/partial", inst_echo);
    struct {
        const char *path;
        const char *const *h;
    } styles[] = {{"/partial", h}, {"/proxy/partial", hn}, {sdk, hn}};
    for (size_t s = 0; s < 3; s++) {
        fake_inject(echo, "GET", "/partial", &f, 1);
        size_t before = fake_count(echo, "GET", "/partial");
        struct call c;
        do_call("GET", styles[s].path, styles[s].h, NULL, &c);
        EXPECT(c.rc == CURLE_PARTIAL_FILE, "style %zu: curl %d", s, c.rc);
        CU_ASSERT_EQUAL(c.status, 200);
        CU_ASSERT_EQUAL(c.announced, 64);
        CU_ASSERT_EQUAL(c.len, 32);
        CU_ASSERT_TRUE(c.ms < 3000);
        /* Headers were relayed: nothing can be retried any more. */
        CU_ASSERT_EQUAL(fake_count(echo, "GET", "/partial"), before + 1);
        call_free(&c);
    }
    free(sdk);
    free(auth);
}

static void test_partial_error_body_proxy(void)
{
    /* A 404 whose body breaks off is read whole for classification; the
     * break must not turn into a complete-looking 404 with a cut body. */
    struct fake_fault f = {.status = 404, .partial_body = 1};
    fake_inject(echo, "GET", "/partial-404", &f, 1);
    struct amp a;
    struct call c;
    do_call("GET", "/partial-404", amp_for(&a, inst_echo), NULL, &c);
    EXPECT(c.status == 502, "status %ld curl %d body %s", c.status, c.rc, c.body);
    CU_ASSERT_EQUAL(c.rc, CURLE_OK);
    CU_ASSERT_TRUE(is_problem(&c));
    EXPECT_STR(slug_of(&c), "provider-unreachable");
    CU_ASSERT_TRUE(json_is_true(json_object_get(c.j, "retryable")));
    call_free(&c);
    /* With Nango retries the broken answer is retried like a network error. */
    fake_inject(echo, "GET", "/partial-503", &(struct fake_fault){.status = 503, .partial_body = 1},
                1);
    char *auth = fmt("Authorization: Bearer %s", key);
    const char *hn[] = {auth, "Provider-Config-Key: echo-int", "Connection-Id: g-echo",
                        "Retries: 2", NULL};
    size_t before = fake_count(echo, "GET", "/partial-503");
    do_call("GET", "/proxy/partial-503", hn, NULL, &c);
    CU_ASSERT_EQUAL(c.status, 200);
    EXPECT_STR(jstr(c.j, "path"), "/partial-503");
    CU_ASSERT_EQUAL(fake_count(echo, "GET", "/partial-503"), before + 2);
    call_free(&c);
    free(auth);
}

/* Warms a pooled upstream connection to the echo fake (the proxy reuses
 * the most recently returned one). */
static void warm(void)
{
    struct amp a;
    struct call c;
    do_call("GET", "/warm", amp_for(&a, inst_echo), NULL, &c);
    CU_ASSERT_EQUAL(c.status, 200);
    call_free(&c);
}

static void test_reset_proxy(void)
{
    /* The provider takes the request and drops the connection without an
     * answer. A POST with a body: one attempt, 502. */
    struct fake_fault f = {.reset = 1};
    struct amp a;
    struct call c;
    warm();
    fake_inject(echo, "POST", "/reset-body", &f, 1);
    size_t before = fake_count(echo, "POST", "/reset-body");
    do_call("POST", "/reset-body", amp_for(&a, inst_echo), "{\"n\":1}", &c);
    EXPECT(c.status == 502, "status %ld %s", c.status, c.body);
    CU_ASSERT_TRUE(is_problem(&c));
    EXPECT_STR(slug_of(&c), "provider-unreachable");
    CU_ASSERT_TRUE(c.ms < 3000);
    CU_ASSERT_EQUAL(fake_count(echo, "POST", "/reset-body"), before + 1);
    call_free(&c);
    /* The same on a fresh upstream connection. */
    fake_inject(echo, "GET", "/reset-fresh", &f, 1);
    before = fake_count(echo, "GET", "/reset-fresh");
    do_call("GET", "/reset-fresh", amp_for(&a, inst_echo), NULL, &c);
    EXPECT(c.status == 502, "status %ld %s", c.status, c.body);
    EXPECT(fake_count(echo, "GET", "/reset-fresh") == before + 1 ||
               fake_count(echo, "GET", "/reset-fresh") == before + 2,
           "%zu attempts", fake_count(echo, "GET", "/reset-fresh") - before);
    call_free(&c);
    /* Nango: a network error is retried when asked to. */
    fake_inject(echo, "GET", "/reset2", &f, 1);
    char *auth = fmt("Authorization: Bearer %s", key);
    const char *hn[] = {auth, "Provider-Config-Key: echo-int", "Connection-Id: g-echo",
                        "Retries: 1", NULL};
    before = fake_count(echo, "GET", "/reset2");
    do_call("GET", "/proxy/reset2", hn, NULL, &c);
    CU_ASSERT_EQUAL(c.status, 200);
    CU_ASSERT_EQUAL(fake_count(echo, "GET", "/reset2"), before + 2);
    call_free(&c);
    free(auth);
}

/* Known bug, run only with PB_KNOWN_BUGS=1: libcurl silently re-sends a
 * request on a reused connection that died before any answer, unless it
 * would have to rewind a body it sent; a bodyless POST therefore reaches
 * the provider twice. */
static void test_reset_on_reused_connection_bodyless_post(void)
{
    /* A POST without a body on a reused upstream connection that the
     * provider drops after taking the request: without Retries it must be
     * sent once (the provider may have acted on it). */
    struct fake_fault f = {.reset = 1};
    struct amp a;
    struct call c;
    warm();
    fake_inject(echo, "POST", "/reset-nobody", &f, 1);
    size_t before = fake_count(echo, "POST", "/reset-nobody");
    do_call("POST", "/reset-nobody", amp_for(&a, inst_echo), "", &c);
    EXPECT(fake_count(echo, "POST", "/reset-nobody") == before + 1,
           "the POST reached the provider %zu times (answer %ld)",
           fake_count(echo, "POST", "/reset-nobody") - before, c.status);
    EXPECT(c.status == 502, "status %ld %s", c.status, c.body);
    call_free(&c);
}

static void test_partial_body_write_api(void)
{
    struct fake_fault f = {.partial_body = 1};
    fake_inject(hs, "POST", "/crm/v3/objects/contacts", &f, 1);
    size_t before = fake_hubspot_count(hs, "contacts");
    char *k = fmt("x-api-key: %s", key);
    const char *h[] = {k, "Content-Type: application/json", NULL};
    char *path = fmt("/v1/projects/%s/integrations/hs-int/objects/contacts", project_id);
    struct call c;
    do_call("POST", path, h,
            "{\"groupRef\":\"g-hs\",\"type\":\"create\",\"record\":{\"email\":\"p@example.com\"}}",
            &c);
    EXPECT(c.status == 502, "status %ld %s", c.status, c.body);
    CU_ASSERT_TRUE(is_problem(&c));
    EXPECT_STR(slug_of(&c), "provider-unreachable");
    CU_ASSERT_TRUE(json_is_true(json_object_get(c.j, "retryable")));
    CU_ASSERT_TRUE(c.ms < 3000);
    call_free(&c);
    /* The partial answer is the fake's own; it stored nothing. */
    CU_ASSERT_EQUAL(fake_hubspot_count(hs, "contacts"), before);
    /* Without the fault the same write succeeds. */
    do_call("POST", path, h,
            "{\"groupRef\":\"g-hs\",\"type\":\"create\",\"record\":{\"email\":\"p@example.com\"}}",
            &c);
    EXPECT(c.status == 200, "status %ld %s", c.status, c.body);
    CU_ASSERT_TRUE(json_is_true(json_object_get(json_object_get(c.j, "result"), "success")));
    CU_ASSERT_EQUAL(fake_hubspot_count(hs, "contacts"), before + 1);
    call_free(&c);
    free(path);
    free(k);
}

static void test_provider_500_write_api(void)
{
    /* A synchronous write the provider answers with 500: a retryable 502
     * problem naming the operation; one attempt. */
    struct fake_fault f = {.status = 500};
    fake_inject(hs, "POST", "/crm/v3/objects/contacts", &f, 1);
    size_t before = fake_count(hs, "POST", "/crm/v3/objects/contacts");
    char *k = fmt("x-api-key: %s", key);
    const char *h[] = {k, NULL};
    char *path = fmt("/v1/projects/%s/integrations/hs-int/objects/contacts", project_id);
    struct call c;
    do_call("POST", path, h,
            "{\"groupRef\":\"g-hs\",\"type\":\"create\",\"record\":{\"email\":\"e@example.com\"}}",
            &c);
    EXPECT(c.status == 502, "status %ld %s", c.status, c.body);
    CU_ASSERT_TRUE(is_problem(&c));
    EXPECT_STR(slug_of(&c), "provider-error");
    CU_ASSERT_TRUE(json_is_true(json_object_get(c.j, "retryable")));
    const char *d = jstr(c.j, "detail");
    EXPECT(d && strncmp(d, "operation op_", 13) == 0 && strstr(d, "answered 500"), "detail %s", d);
    CU_ASSERT_EQUAL(fake_count(hs, "POST", "/crm/v3/objects/contacts"), before + 1);
    call_free(&c);
    free(path);
    free(k);
}

/* ---- a provider that is too slow --------------------------------------------------- */

static void test_slow_provider_proxy(void)
{
    struct fake_fault f = {.delay_ms = 6000};
    struct amp a;
    char *auth = fmt("Authorization: Bearer %s", key);
    const char *hn[] = {auth, "Provider-Config-Key: echo-int", "Connection-Id: g-echo", NULL};
    struct {
        const char *path;
        const char *const *h;
        const char *slug;
    } styles[] = {{"/slow", amp_for(&a, inst_echo), "provider-timeout"},
                  {"/proxy/slow", hn, "upstream_error"}};
    for (size_t s = 0; s < 2; s++) {
        fake_inject(echo, "GET", "/slow", &f, 1);
        struct call c;
        do_call("GET", styles[s].path, styles[s].h, NULL, &c);
        EXPECT(c.status == 504, "style %zu: %ld %s", s, c.status, c.body);
        EXPECT_STR(slug_of(&c), styles[s].slug);
        /* Stalled for egress.timeout_ms (1500; streams count whole seconds
         * of silence, so 1 s here) and not much more. */
        EXPECT(c.ms >= 900 && c.ms < TIMEOUT_MS + 1000, "style %zu took %lld ms", s,
               (long long)c.ms);
        call_free(&c);
    }
    free(auth);
}

static void test_slow_provider_write_api(void)
{
    struct fake_fault f = {.delay_ms = 6000};
    fake_inject(hs, "POST", "/crm/v3/objects/contacts", &f, 1);
    char *k = fmt("x-api-key: %s", key);
    const char *h[] = {k, NULL};
    char *path = fmt("/v1/projects/%s/integrations/hs-int/objects/contacts", project_id);
    struct call c;
    do_call("POST", path, h,
            "{\"groupRef\":\"g-hs\",\"type\":\"create\",\"record\":{\"email\":\"s@example.com\"}}",
            &c);
    /* The Write API reports a timeout as 502 (the proxy says 504). */
    EXPECT(c.status == 502, "status %ld %s", c.status, c.body);
    CU_ASSERT_TRUE(is_problem(&c));
    EXPECT_STR(slug_of(&c), "provider-unreachable");
    EXPECT(strstr(jstr(c.j, "detail") ? jstr(c.j, "detail") : "", "did not answer within 1500 ms"),
           "detail %s", jstr(c.j, "detail"));
    EXPECT(c.ms >= TIMEOUT_MS - 100 && c.ms < TIMEOUT_MS + 1000, "took %lld ms",
           (long long)c.ms);
    call_free(&c);
    free(path);
    free(k);
}

/* ---- retries within the egress timeout ------------------------------------------- */

static void test_500_forever_with_retries(void)
{
    struct fake_fault f = {.status = 500};
    fake_inject(echo, "GET", "/always-500", &f, 100);
    char *auth = fmt("Authorization: Bearer %s", patient_key);
    const char *hn[] = {auth, "Provider-Config-Key: echo-int", "Connection-Id: g-echo",
                        "Retries: 3", NULL};
    size_t before = fake_count(echo, "GET", "/always-500");
    struct call c;
    do_call_on(patient_base, "GET", "/proxy/always-500", hn, NULL, 30, &c);
    CU_ASSERT_EQUAL(c.status, 500);
    /* The provider's own answer comes back, after 1 + 3 attempts. */
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(c.j, "status")), 500);
    EXPECT_STR(jstr(c.j, "error"), "Internal Server Error");
    CU_ASSERT_EQUAL(fake_count(echo, "GET", "/always-500"), before + 4);
    /* Three back-offs of 100-200, 200-400 and 400-800 ms, inside 5 s. */
    EXPECT(c.ms >= 700 && c.ms < PATIENT_TIMEOUT_MS, "took %lld ms", (long long)c.ms);
    call_free(&c);
    /* Without Retries: one attempt. */
    const char *h0[] = {auth, "Provider-Config-Key: echo-int", "Connection-Id: g-echo", NULL};
    do_call_on(patient_base, "GET", "/proxy/always-500", h0, NULL, 30, &c);
    CU_ASSERT_EQUAL(c.status, 500);
    CU_ASSERT_EQUAL(fake_count(echo, "GET", "/always-500"), before + 5);
    call_free(&c);
    /* Retries: 10 cannot outlast the egress timeout: the last answer is
     * relayed when the next back-off would pass it. */
    const char *h10[] = {auth, "Provider-Config-Key: echo-int", "Connection-Id: g-echo",
                         "Retries: 10", NULL};
    do_call_on(patient_base, "GET", "/proxy/always-500", h10, NULL, 30, &c);
    CU_ASSERT_EQUAL(c.status, 500);
    size_t n = fake_count(echo, "GET", "/always-500") - before - 5;
    EXPECT(n >= 5 && n <= 8, "%zu attempts", n);
    EXPECT(c.ms < PATIENT_TIMEOUT_MS + 500, "took %lld ms", (long long)c.ms);
    call_free(&c);
    free(auth);
}

/* ---- the token endpoint ------------------------------------------------------------ */

static void test_token_refresh_garbage(void)
{
    struct fake_fault garbage = {.status = 200, .body = "<html>not json{"};
    fake_inject(hs, "POST", "/oauth/v1/token", &garbage, 1);
    size_t tok0 = fake_token_calls(hs), api0 = fake_count(hs, NULL, "/crm");
    struct amp a;
    struct call c;
    do_call("GET", "/crm/v3/objects/contacts", amp_for(&a, inst_expired[T_GARBAGE]), NULL, &c);
    EXPECT(c.status == 424, "status %ld %s", c.status, c.body);
    CU_ASSERT_TRUE(is_problem(&c));
    EXPECT_STR(slug_of(&c), "reauthorization-required");
    CU_ASSERT_TRUE(json_is_false(json_object_get(c.j, "retryable")));
    CU_ASSERT_EQUAL(fake_token_calls(hs), tok0 + 1);
    call_free(&c);
    /* Inside the back-off: the same answer, no token call, no API call. */
    char *auth = fmt("Authorization: Bearer %s", key);
    const char *hn[] = {auth, "Provider-Config-Key: hs-int", "Connection-Id: g-garbage", NULL};
    do_call("GET", "/proxy/crm/v3/objects/contacts", hn, NULL, &c);
    CU_ASSERT_EQUAL(c.status, 424);
    EXPECT_STR(slug_of(&c), "reauthorization-required");
    CU_ASSERT_EQUAL(fake_token_calls(hs), tok0 + 1);
    call_free(&c);
    CU_ASSERT_EQUAL(fake_count(hs, NULL, "/crm"), api0);
    /* JSON without an access token is no better. */
    struct fake_fault notoken = {.status = 200, .body = "{\"token_type\":\"bearer\",\"access_token\":5}"};
    fake_inject(hs, "POST", "/oauth/v1/token", &notoken, 1);
    do_call("GET", "/crm/v3/objects/contacts", amp_for(&a, inst_expired[T_NOTOKEN]), NULL, &c);
    CU_ASSERT_EQUAL(c.status, 424);
    EXPECT_STR(slug_of(&c), "reauthorization-required");
    CU_ASSERT_EQUAL(fake_token_calls(hs), tok0 + 2);
    call_free(&c);
    CU_ASSERT_EQUAL(fake_count(hs, NULL, "/crm"), api0);
    free(auth);
}

static void test_token_refresh_garbage_write_api(void)
{
    struct fake_fault garbage = {.status = 200, .body = "garbage"};
    fake_inject(hs, "POST", "/oauth/v1/token", &garbage, 1);
    size_t tok0 = fake_token_calls(hs), api0 = fake_count(hs, NULL, "/crm");
    char *k = fmt("x-api-key: %s", key);
    const char *h[] = {k, NULL};
    char *path = fmt("/v1/projects/%s/integrations/hs-int/objects/contacts", project_id);
    struct call c;
    do_call("POST", path, h,
            "{\"groupRef\":\"g-write-garbage\",\"type\":\"create\",\"record\":{\"email\":\"g@example.com\"}}",
            &c);
    EXPECT(c.status == 424, "status %ld %s", c.status, c.body);
    CU_ASSERT_TRUE(is_problem(&c));
    EXPECT_STR(slug_of(&c), "reauthorization-required");
    CU_ASSERT_EQUAL(fake_token_calls(hs), tok0 + 1);
    CU_ASSERT_EQUAL(fake_count(hs, NULL, "/crm"), api0);
    call_free(&c);
    free(path);
    free(k);
}

static void test_token_endpoint_down(void)
{
    /* The token endpoint drops the connection: 502, then a back-off in
     * which callers get the same answer without a token call. */
    struct fake_fault reset = {.reset = 1};
    fake_inject(hs, "POST", "/oauth/v1/token", &reset, 1);
    size_t tok0 = fake_token_calls(hs), api0 = fake_count(hs, NULL, "/crm");
    struct amp a;
    const char *const *h = amp_for(&a, inst_expired[T_DOWN]);
    struct call c;
    do_call("GET", "/crm/v3/objects/contacts", h, NULL, &c);
    EXPECT(c.status == 502, "status %ld %s", c.status, c.body);
    CU_ASSERT_TRUE(is_problem(&c));
    EXPECT_STR(slug_of(&c), "token-refresh-unavailable");
    CU_ASSERT_TRUE(json_is_true(json_object_get(c.j, "retryable")));
    CU_ASSERT_EQUAL(fake_token_calls(hs), tok0 + 1);
    int64_t failed_at = pb_mono_ms();
    call_free(&c);
    do_call("GET", "/crm/v3/objects/contacts", h, NULL, &c);
    CU_ASSERT_EQUAL(c.status, 502);
    EXPECT_STR(slug_of(&c), "token-refresh-unavailable");
    /* Only meaningful inside the 1 s window. */
    if (pb_mono_ms() - failed_at < 900)
        CU_ASSERT_EQUAL(fake_token_calls(hs), tok0 + 1);
    call_free(&c);
    CU_ASSERT_EQUAL(fake_count(hs, NULL, "/crm"), api0);
    /* After the window the refresh is tried again and the call goes through
     * with the new token. */
    usleep(1200 * 1000);
    do_call("GET", "/crm/v3/objects/contacts", h, NULL, &c);
    CU_ASSERT_EQUAL(c.status, 200);
    CU_ASSERT_EQUAL(fake_token_calls(hs), tok0 + 2);
    call_free(&c);
    char *issued = fake_last_issued_token(hs);
    /* The fake's tokens ("at-N") are too short to look for in a file. */
    if (issued && strlen(issued) >= 12)
        secret_log(issued);
    struct fake_req fr;
    CU_ASSERT_EQUAL_FATAL(fake_last(hs, "GET", "/crm/v3/objects/contacts", &fr), 0);
    char *want = fmt("Bearer %s", issued);
    EXPECT_STR(fake_req_header(&fr, "Authorization"), want);
    fake_req_free(&fr);
    free(want);
    free(issued);
    /* A 503 with Retry-After: the back-off follows the provider's time. */
    struct fake_fault busy = {.status = 503, .retry_after = "30"};
    fake_inject(hs, "POST", "/oauth/v1/token", &busy, 1);
    size_t tok1 = fake_token_calls(hs);
    const char *const *h503 = amp_for(&a, inst_expired[T_503]);
    do_call("GET", "/crm/v3/objects/contacts", h503, NULL, &c);
    CU_ASSERT_EQUAL(c.status, 502);
    EXPECT_STR(slug_of(&c), "token-refresh-unavailable");
    call_free(&c);
    usleep(1200 * 1000);
    do_call("GET", "/crm/v3/objects/contacts", h503, NULL, &c);
    CU_ASSERT_EQUAL(c.status, 502);
    call_free(&c);
    CU_ASSERT_EQUAL(fake_token_calls(hs), tok1 + 1);
}

/* ---- the store ---------------------------------------------------------------------- */

static char *store_dir(void)
{
    return fmt("%s/srv1/var", pbt_tmpdir());
}

static void chmod_store(mode_t file_mode, mode_t dir_mode)
{
    char *dir = store_dir();
    const char *names[] = {"plugboard.db", "plugboard.db-wal", "plugboard.db-shm"};
    for (size_t i = 0; i < 3; i++) {
        char *p = fmt("%s/%s", dir, names[i]);
        chmod(p, file_mode); /* -wal and -shm may not exist */
        free(p);
    }
    CU_ASSERT_EQUAL(chmod(dir, dir_mode), 0);
    free(dir);
}

static void generate(const char *group, struct call *c)
{
    char *k = fmt("x-api-key: %s", key);
    const char *h[] = {k, NULL};
    char *path = fmt("/v1/projects/%s/connections:generate", project_id);
    char *body = fmt("{\"groupRef\":\"%s\",\"provider\":\"echo\",\"apiKey\":\"" ECHO_SECRET "\"}",
                     group);
    do_call("POST", path, h, body, c);
    free(body);
    free(path);
    free(k);
}

static void test_store_read_only_mid_run(void)
{
    /* Warm the caches, then take write permission away from the store file
     * and its directory. */
    struct amp a;
    struct call c;
    do_call("GET", "/warm", amp_for(&a, inst_echo), NULL, &c);
    CU_ASSERT_EQUAL(c.status, 200);
    call_free(&c);
    chmod_store(0444, 0555);
    char *dir = store_dir();
    char *probe = fmt("%s/probe", dir);
    FILE *pf = fopen(probe, "w");
    /* Root without CAP_DAC_OVERRIDE (dropped in main) is refused like anyone. */
    CU_ASSERT_PTR_NULL(pf);
    if (pf)
        fclose(pf);
    /* The proxy keeps serving. */
    for (int i = 0; i < 5; i++) {
        do_call("GET", "/while-read-only", amp_for(&a, inst_echo), NULL, &c);
        CU_ASSERT_EQUAL(c.status, 200);
        CU_ASSERT_TRUE(c.ms < 1000);
        call_free(&c);
    }
    /* The store holds its file open: SQLite keeps writing through the open
     * descriptors, so modes changed after start do not stop it. Writes and
     * reads of the control plane still succeed. */
    generate("g-read-only", &c);
    EXPECT(c.status == 201, "status %ld %s", c.status, c.body);
    call_free(&c);
    char *k = fmt("x-api-key: %s", key);
    const char *h[] = {k, NULL};
    char *path = fmt("/v1/projects/%s/connections", project_id);
    do_call("GET", path, h, NULL, &c);
    CU_ASSERT_EQUAL(c.status, 200);
    call_free(&c);
    free(path);
    struct call hz;
    do_call("GET", "/readyz", NULL, NULL, &hz);
    CU_ASSERT_EQUAL(hz.status, 200);
    call_free(&hz);
    chmod_store(0600, 0700);
    free(k);
    free(probe);
    free(dir);
}

struct bg_write {
    pthread_t t;
    struct call c;
};

static void *bg_generate(void *arg)
{
    struct bg_write *w = arg;
    char *k = fmt("x-api-key: %s", key);
    const char *h[] = {k, NULL};
    char *path = fmt("/v1/projects/%s/connections:generate", project_id);
    do_call_on(base, "POST", path, h,
               "{\"groupRef\":\"g-locked\",\"provider\":\"echo\",\"apiKey\":\"" ECHO_SECRET "\"}",
               90, &w->c);
    free(path);
    free(k);
    return NULL;
}

static void test_store_locked_mid_run(void)
{
    /* Another process holds the store's write lock (a CLI command, a
     * backup): a control-plane write waits out SQLite's busy timeout and
     * answers a 503 problem; the proxy keeps serving meanwhile; writes work
     * again once the lock is gone. */
    char *dir = store_dir();
    char *db = fmt("%s/plugboard.db", dir);
    /* Warm the caches after the last write (a write empties them), and let
     * the activity log flush what that call left. */
    warm();
    usleep(400 * 1000);
    sqlite3 *other = NULL;
    CU_ASSERT_EQUAL_FATAL(sqlite3_open_v2(db, &other, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    CU_ASSERT_EQUAL_FATAL(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    struct bg_write w;
    memset(&w, 0, sizeof w);
    CU_ASSERT_EQUAL_FATAL(pthread_create(&w.t, NULL, bg_generate, &w), 0);
    /* The proxy, while the store is locked and the write waits (on the
     * store's one connection, which the cache would need on a miss). */
    struct amp a;
    struct call c;
    int64_t worst = 0;
    for (int i = 0; i < 8; i++) {
        usleep(300 * 1000);
        do_call("GET", "/while-locked", amp_for(&a, inst_echo), NULL, &c);
        CU_ASSERT_EQUAL(c.status, 200);
        worst = c.ms > worst ? c.ms : worst;
        call_free(&c);
    }
    EXPECT(worst < 1000, "a proxied call waited %lld ms on the locked store", (long long)worst);
    pthread_join(w.t, NULL);
    EXPECT(w.c.status == 503, "status %ld after %lld ms: %s", w.c.status, (long long)w.c.ms,
           w.c.body);
    CU_ASSERT_TRUE(is_problem(&w.c));
    EXPECT_STR(slug_of(&w.c), "store-unavailable");
    CU_ASSERT_TRUE(json_is_true(json_object_get(w.c.j, "retryable")));
    call_free(&w.c);
    CU_ASSERT_EQUAL(sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(other);
    generate("g-after-lock", &c);
    CU_ASSERT_EQUAL(c.status, 201);
    call_free(&c);
    free(db);
    free(dir);
}

/* ---- slow and idle clients ---------------------------------------------------------- */

static void test_slow_clients_cannot_starve_others(void)
{
    /* 20 connections that never finish their request: half a request head,
     * a head with half its body, or nothing at all. */
    enum { N = 20 };
    int fds[N];
    char *k = fmt("x-api-key: %s", key);
    char *partial_body = fmt("POST /v1/projects/%s/connections:generate HTTP/1.1\r\n"
                             "Host: x\r\n%s\r\nContent-Length: 100\r\n\r\n{\"groupRef\":",
                             project_id, k);
    const char *partial_head = "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: 1";
    int64_t start = pb_mono_ms();
    for (int i = 0; i < N; i++) {
        fds[i] = raw_connect();
        CU_ASSERT_TRUE_FATAL(fds[i] >= 0);
        const char *send_this = i % 3 == 0 ? partial_head : i % 3 == 1 ? partial_body : "";
        if (*send_this)
            CU_ASSERT_TRUE(send(fds[i], send_this, strlen(send_this), MSG_NOSIGNAL) > 0);
    }
    /* Others are served at once meanwhile, on every kind of route. */
    struct amp a;
    struct call c;
    do_call("GET", "/healthz", NULL, NULL, &c);
    CU_ASSERT_EQUAL(c.status, 200);
    CU_ASSERT_TRUE(c.ms < 1000);
    call_free(&c);
    do_call("GET", "/served", amp_for(&a, inst_echo), NULL, &c);
    CU_ASSERT_EQUAL(c.status, 200);
    CU_ASSERT_TRUE(c.ms < 1000);
    call_free(&c);
    /* The slow ones are closed after connection_timeout_s (2 s). */
    for (int i = 0; i < N; i++) {
        size_t got = 0;
        int64_t closed = wait_closed(fds[i], start, 6000, &got);
        EXPECT(closed >= 1500 && closed < 5000, "slow client %d closed after %lld ms", i,
               (long long)closed);
        close(fds[i]);
    }
    free(partial_body);
    free(k);
}

/* A client that sends its request head one byte at a time never goes
 * idle; the server still cuts it off connection_timeout_s after the head
 * began, so such clients cannot hold connection_limit forever. */
static void test_trickling_client_is_closed(void)
{
    int fd = raw_connect();
    CU_ASSERT_TRUE_FATAL(fd >= 0);
    const char *head = "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Trickle: aaaaaaaaaaaaaaaaaaaa";
    int64_t start = pb_mono_ms();
    int64_t closed = -1;
    for (size_t i = 0; head[i] && pb_mono_ms() - start < 8000; i++) {
        if (send(fd, head + i, 1, MSG_NOSIGNAL) != 1) {
            closed = pb_mono_ms() - start;
            break;
        }
        size_t got = 0;
        int64_t t = wait_closed(fd, pb_mono_ms(), 500, &got);
        if (t >= 0) {
            closed = pb_mono_ms() - start;
            break;
        }
    }
    EXPECT(closed >= 0 && closed < 6000, "a trickling client was still open after %lld ms",
           (long long)(pb_mono_ms() - start));
    close(fd);
}

/* 1 when the server already closed fd (it refused the connection). */
static int closed_now(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    char c;
    return poll(&p, 1, 0) == 1 && recv(fd, &c, 1, MSG_DONTWAIT) <= 0;
}

static void test_idle_connections_at_the_limit(void)
{
    /* 32 idle connections fill connection_limit: the next one is closed at
     * once; when the idle ones time out (2 s), calls succeed again. */
    enum { N = 32 };
    int fds[N];
    /* Connections of the earlier tests are gone by now, but the server may
     * count one for a moment longer: replace any it refused. */
    usleep(500 * 1000);
    int64_t start = pb_mono_ms();
    for (int i = 0; i < N; i++) {
        fds[i] = raw_connect();
        CU_ASSERT_TRUE_FATAL(fds[i] >= 0);
    }
    for (int round = 0; round < 5; round++) {
        usleep(150 * 1000);
        int replaced = 0;
        for (int i = 0; i < N; i++)
            if (closed_now(fds[i])) {
                close(fds[i]);
                fds[i] = raw_connect();
                CU_ASSERT_TRUE_FATAL(fds[i] >= 0);
                replaced++;
            }
        if (!replaced)
            break;
        start = pb_mono_ms();
    }
    int held = 0;
    for (int i = 0; i < N; i++)
        held += !closed_now(fds[i]);
    CU_ASSERT_EQUAL_FATAL(held, N);
    struct call c;
    do_call("GET", "/healthz", NULL, NULL, &c);
    EXPECT(c.rc != CURLE_OK && c.status == 0, "at the limit: curl %d status %ld", c.rc, c.status);
    call_free(&c);
    int64_t ok_at = -1;
    while (pb_mono_ms() - start < 6000) {
        do_call("GET", "/healthz", NULL, NULL, &c);
        int ok = c.status == 200;
        call_free(&c);
        if (ok) {
            ok_at = pb_mono_ms() - start;
            break;
        }
        usleep(100 * 1000);
    }
    EXPECT(ok_at >= 1500 && ok_at < 5000, "served again after %lld ms", (long long)ok_at);
    for (int i = 0; i < N; i++) {
        size_t got = 0;
        CU_ASSERT_TRUE(wait_closed(fds[i], start, 6000, &got) >= 0);
        CU_ASSERT_EQUAL(got, 0);
        close(fds[i]);
    }
}

static CU_TestInfo tests[] = {
    {"partial_body_proxy", test_partial_body_proxy},
    {"partial_error_body_proxy", test_partial_error_body_proxy},
    {"reset_proxy", test_reset_proxy},
    {"partial_body_write_api", test_partial_body_write_api},
    {"provider_500_write_api", test_provider_500_write_api},
    {"slow_provider_proxy", test_slow_provider_proxy},
    {"slow_provider_write_api", test_slow_provider_write_api},
    {"500_forever_with_retries", test_500_forever_with_retries},
    {"token_refresh_garbage", test_token_refresh_garbage},
    {"token_refresh_garbage_write_api", test_token_refresh_garbage_write_api},
    {"token_endpoint_down", test_token_endpoint_down},
    {"store_read_only_mid_run", test_store_read_only_mid_run},
    {"store_locked_mid_run", test_store_locked_mid_run},
    {"slow_clients_cannot_starve_others", test_slow_clients_cannot_starve_others},
    {"idle_connections_at_the_limit", test_idle_connections_at_the_limit},
    {"trickling_client_is_closed", test_trickling_client_is_closed},
    CU_TEST_INFO_NULL, /* room for the known bug */
    CU_TEST_INFO_NULL,
    CU_TEST_INFO_NULL,
};

int main(int argc, char **argv)
{
    if (getenv("PB_KNOWN_BUGS") && *getenv("PB_KNOWN_BUGS") == '1') {
        size_t n = 0;
        while (tests[n].pName)
            n++;
        tests[n] = (CU_TestInfo){"reset_on_reused_connection_bodyless_post",
                                 test_reset_on_reused_connection_bodyless_post};
    }
    /* Before any thread exists, so every thread inherits it. */
    drop_dac_override();
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (setup() != 0) {
        fprintf(stderr, "test_faults: set-up failed\n");
        return 99;
    }
    int rc = pbt_main(argc, argv, "faults", tests);
    pbt_stop(patient);
    pbt_stop(app);
    fake_stop(echo);
    fake_stop(hs);
    return rc;
}
