/* The credentials cache and token refresh: against an in-process plugboard
 * (store, master key, real plugins) and the fake HubSpot and Salesforce
 * token endpoints, with an injectable clock. */
#include "app.h"
#include "control.h"
#include "fake/fake.h"
#include "http.h"
#include "loader.h"
#include "secrets.h"
#include "store.h"
#include "testutil.h"
#include "tokens.h"
#include "util.h"
#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- clock ----------------------------------------------------------------- */

static _Atomic int64_t clock_offset;

static int64_t test_clock(void)
{
    return pb_wall_ms() + atomic_load(&clock_offset);
}

static void advance(int64_t ms)
{
    atomic_fetch_add(&clock_offset, ms);
}

/* ---- fixture ----------------------------------------------------------------- */

struct fx {
    struct fake *hs, *sf;
    struct pb_app *app;
    struct pb_tokens *tok;
    char project[64];
    const struct pb_provider *hubspot, *salesforce, *hubspot_down;
};

/* A loopback port nothing listens on. */
static int closed_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    bind(s, (struct sockaddr *)&a, sizeof a);
    getsockname(s, (struct sockaddr *)&a, &len);
    int port = ntohs(a.sin_port);
    close(s);
    return port;
}

static int fx_start(struct fx *x)
{
    memset(x, 0, sizeof *x);
    atomic_store(&clock_offset, 0);
    struct fake_opts ho = {.client_id = "hs-client", .client_secret = "hs-secret-value"};
    x->hs = fake_start(FAKE_HUBSPOT, &ho);
    x->sf = fake_start(FAKE_SALESFORCE, NULL);
    if (!x->hs || !x->sf)
        return -1;
    char yaml[2048], base[128];
    snprintf(yaml, sizeof yaml,
             "egress: {allow_private: true, timeout_ms: 5000}\n"
             "providers:\n"
             "  hubspot: {plugin: hubspot, client_id: hs-client, client_secret: hs-secret-value,"
             " base_url: %s, token_url: %s/oauth/v1/token}\n"
             "  hubspot_down: {plugin: hubspot, client_id: hs-client,"
             " client_secret: hs-secret-value, base_url: %s,"
             " token_url: http://127.0.0.1:%d/oauth/v1/token}\n"
             "  salesforce: {plugin: salesforce, client_id: sf-client,"
             " client_secret: sf-secret, login_url: %s}\n",
             fake_base_url(x->hs), fake_base_url(x->hs), fake_base_url(x->hs), closed_port(),
             fake_base_url(x->sf));
    x->app = pbt_start(yaml, base, sizeof base);
    if (!x->app)
        return -1;
    x->hubspot = pb_registry_find(x->app->reg, "hubspot");
    x->hubspot_down = pb_registry_find(x->app->reg, "hubspot_down");
    x->salesforce = pb_registry_find(x->app->reg, "salesforce");
    if (pb_tokens_init(x->app, &x->tok) != 0)
        return -1;
    struct pb_problem p;
    pb_problem_clear(&p);
    json_t *proj = NULL;
    if (pb_ctl_project_create(x->app, "tokens", &proj, &p) != 0)
        return -1;
    snprintf(x->project, sizeof x->project, "%s",
             json_string_value(json_object_get(proj, "id")));
    json_decref(proj);
    return 0;
}

static void fx_stop(struct fx *x)
{
    pb_tokens_free(x->tok);
    if (x->app)
        pbt_stop(x->app);
    if (x->hs)
        fake_stop(x->hs);
    if (x->sf)
        fake_stop(x->sf);
    atomic_store(&clock_offset, 0);
}

static int group_n;

/* Creates a connection from a connections:generate body (stolen); returns
 * its id (malloc'd) or NULL. */
static char *gen_conn(struct fx *x, json_t *body)
{
    char ref[32];
    snprintf(ref, sizeof ref, "group-%d", ++group_n);
    json_object_set_new(body, "groupRef", json_string(ref));
    struct pb_problem p;
    pb_problem_clear(&p);
    json_t *out = NULL;
    int rc = pb_ctl_connection_generate(x->app, x->project, body, &out, &p);
    json_decref(body);
    if (rc != 0) {
        fprintf(stderr, "generate: %u %s\n", p.status, p.detail);
        pb_problem_free(&p);
        return NULL;
    }
    char *id = pb_xstrdup(json_string_value(json_object_get(out, "id")));
    json_decref(out);
    return id;
}

/* An oauth2 HubSpot connection whose access token expires at now + in_s. */
static char *oauth_conn(struct fx *x, const char *provider, const char *access,
                        const char *refresh, int64_t in_s)
{
    char ts[40];
    pb_fmt_rfc3339(pb_now_ms() + in_s * 1000, ts, sizeof ts);
    json_t *b = json_pack("{s:s, s:{s:{s:s, s:s}, s:{s:s}}}", "provider", provider,
                          "oauth2AuthorizationCode", "accessToken", "token", access, "expiresAt",
                          ts, "refreshToken", "token", refresh);
    return gen_conn(x, b);
}

/* The connection as stored: API shape in *conn, decrypted credentials returned. */
static json_t *stored_creds(struct fx *x, const char *id, json_t **conn)
{
    char *sealed = NULL;
    *conn = NULL;
    if (pb_store_connection_get(x->app->store, x->project, id, conn, &sealed) != 0)
        return NULL;
    size_t len = 0;
    char *plain = pb_secret_unseal(sealed, &len);
    free(sealed);
    json_t *c = plain ? json_loadb(plain, len, 0, NULL) : NULL;
    pb_secret_free(plain);
    return c;
}

static const char *sget(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static int streq(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}

/* ---- tests ------------------------------------------------------------------- */

static void test_fresh_token_no_refresh(void)
{
    struct fx x;
    CU_ASSERT_FATAL(fx_start(&x) == 0);
    char *id = oauth_conn(&x, "hubspot", "at-fresh", "rt-fresh", 3600);
    CU_ASSERT_FATAL(id != NULL);
    struct pb_problem p;
    pb_problem_clear(&p);
    struct pb_cred_lease *l1 = NULL, *l2 = NULL;
    CU_ASSERT_EQUAL(pb_tokens_acquire(x.tok, x.project, id, x.hubspot, &l1, &p), 0);
    CU_ASSERT_FATAL(l1 != NULL);
    CU_ASSERT_TRUE(streq(l1->view.auth_type, "oauth2"));
    CU_ASSERT_TRUE(streq(l1->view.access_token, "at-fresh"));
    CU_ASSERT_TRUE(streq(l1->view.refresh_token, "rt-fresh"));
    CU_ASSERT_TRUE(streq(l1->connection_id, id));
    CU_ASSERT_EQUAL(l1->version, 1);
    int64_t want = pb_now_ms() / 1000 + 3600;
    CU_ASSERT_TRUE(l1->view.expires_at >= want - 5 && l1->view.expires_at <= want + 1);
    CU_ASSERT_PTR_NOT_NULL(l1->view.metadata);
    /* The second call is served from the same in-memory snapshot. */
    CU_ASSERT_EQUAL(pb_tokens_acquire(x.tok, x.project, id, x.hubspot, &l2, &p), 0);
    CU_ASSERT_PTR_EQUAL(l1->snapshot, l2->snapshot);
    CU_ASSERT_EQUAL(pb_tokens_refresh_count(x.tok), 0);
    CU_ASSERT_EQUAL(fake_token_calls(x.hs), 0);
    pb_tokens_release(l1);
    pb_tokens_release(l2);
    free(id);
    fx_stop(&x);
}

static void test_expiring_token_refreshes_once_and_stores(void)
{
    struct fx x;
    CU_ASSERT_FATAL(fx_start(&x) == 0);
    fake_add_token(x.hs, NULL, "rt-good", 0);
    /* Inside the default 300 s margin. */
    char *id = oauth_conn(&x, "hubspot", "at-old", "rt-good", 60);
    CU_ASSERT_FATAL(id != NULL);
    struct pb_problem p;
    pb_problem_clear(&p);
    struct pb_cred_lease *l = NULL;
    CU_ASSERT_EQUAL_FATAL(pb_tokens_acquire(x.tok, x.project, id, x.hubspot, &l, &p), 0);
    char *issued = fake_last_issued_token(x.hs);
    CU_ASSERT_FATAL(issued != NULL);
    CU_ASSERT_TRUE(streq(l->view.access_token, issued));
    CU_ASSERT_TRUE(streq(l->view.refresh_token, "rt-good"));
    CU_ASSERT_EQUAL(l->version, 2);
    int64_t want = pb_now_ms() / 1000 + 1800;
    CU_ASSERT_TRUE(l->view.expires_at >= want - 5 && l->view.expires_at <= want + 1);
    CU_ASSERT_EQUAL(fake_token_calls(x.hs), 1);
    CU_ASSERT_EQUAL(pb_tokens_refresh_count(x.tok), 1);

    /* What the plugin sent. */
    struct fake_req r;
    CU_ASSERT_EQUAL_FATAL(fake_last(x.hs, "POST", "/oauth/v1/token", &r), 0);
    char *gt = fake_req_param(&r, "grant_type"), *rt = fake_req_param(&r, "refresh_token");
    CU_ASSERT_TRUE(streq(gt, "refresh_token"));
    CU_ASSERT_TRUE(streq(rt, "rt-good"));
    free(gt);
    free(rt);
    fake_req_free(&r);

    /* The store already has the new token when the lease is handed out. */
    json_t *conn = NULL;
    json_t *c = stored_creds(&x, id, &conn);
    CU_ASSERT_FATAL(c != NULL);
    CU_ASSERT_TRUE(streq(sget(c, "access_token"), issued));
    CU_ASSERT_TRUE(streq(sget(c, "refresh_token"), "rt-good"));
    CU_ASSERT_TRUE(streq(sget(c, "auth_type"), "oauth2"));
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(conn, "version")), 2);
    CU_ASSERT_TRUE(streq(sget(conn, "status"), "working"));
    int64_t exp = pb_parse_rfc3339(sget(conn, "accessTokenExpiresAt"));
    CU_ASSERT_TRUE(exp / 1000 >= want - 5 && exp / 1000 <= want + 1);
    json_decref(c);
    json_decref(conn);

    /* Fresh now: no further refresh. */
    struct pb_cred_lease *l2 = NULL;
    CU_ASSERT_EQUAL(pb_tokens_acquire(x.tok, x.project, id, x.hubspot, &l2, &p), 0);
    CU_ASSERT_TRUE(l2 && streq(l2->view.access_token, issued));
    CU_ASSERT_EQUAL(fake_token_calls(x.hs), 1);
    CU_ASSERT_EQUAL(pb_tokens_refresh_count(x.tok), 1);
    pb_tokens_release(l);
    pb_tokens_release(l2);
    free(issued);
    free(id);
    fx_stop(&x);
}

static void test_refresh_keeps_old_refresh_token(void)
{
    struct fx x;
    CU_ASSERT_FATAL(fx_start(&x) == 0);
    char *id = oauth_conn(&x, "hubspot", "at-old", "rt-keep", -10);
    CU_ASSERT_FATAL(id != NULL);
    struct fake_fault ok = {.status = 200,
                            .body = "{\"access_token\":\"at-no-rt\",\"token_type\":\"bearer\"}"};
    fake_inject(x.hs, "POST", "/oauth/v1/token", &ok, 1);
    struct pb_problem p;
    pb_problem_clear(&p);
    struct pb_cred_lease *l = NULL;
    CU_ASSERT_EQUAL_FATAL(pb_tokens_acquire(x.tok, x.project, id, x.hubspot, &l, &p), 0);
    CU_ASSERT_TRUE(streq(l->view.access_token, "at-no-rt"));
    CU_ASSERT_TRUE(streq(l->view.refresh_token, "rt-keep"));
    CU_ASSERT_EQUAL(l->view.expires_at, 0);
    json_t *conn = NULL;
    json_t *c = stored_creds(&x, id, &conn);
    CU_ASSERT_TRUE(streq(sget(c, "access_token"), "at-no-rt"));
    CU_ASSERT_TRUE(streq(sget(c, "refresh_token"), "rt-keep"));
    /* No expiry given: none stored, and no refresh on the next call. */
    CU_ASSERT_PTR_NULL(json_object_get(conn, "accessTokenExpiresAt"));
    json_decref(c);
    json_decref(conn);
    struct pb_cred_lease *l2 = NULL;
    CU_ASSERT_EQUAL(pb_tokens_acquire(x.tok, x.project, id, x.hubspot, &l2, &p), 0);
    CU_ASSERT_EQUAL(fake_token_calls(x.hs), 1);
    pb_tokens_release(l2);
    pb_tokens_release(l);
    free(id);
    fx_stop(&x);
}

static void test_short_lived_token_not_refreshed_again_at_once(void)
{
    struct fx x;
    CU_ASSERT_FATAL(fx_start(&x) == 0);
    char *id = oauth_conn(&x, "hubspot", "at-old", "rt-short", -10);
    CU_ASSERT_FATAL(id != NULL);
    /* 120 s is less than the 300 s margin. */
    struct fake_fault ok = {
        .status = 200,
        .body = "{\"access_token\":\"at-short\",\"refresh_token\":\"rt-short\",\"expires_in\":120}"};
    fake_inject(x.hs, "POST", "/oauth/v1/token", &ok, 1);
    struct pb_problem p;
    pb_problem_clear(&p);
    struct pb_cred_lease *l = NULL;
    CU_ASSERT_EQUAL_FATAL(pb_tokens_acquire(x.tok, x.project, id, x.hubspot, &l, &p), 0);
    CU_ASSERT_TRUE(streq(l->view.access_token, "at-short"));
    pb_tokens_release(l);
    for (int i = 0; i < 5; i++) {
        CU_ASSERT_EQUAL(pb_tokens_acquire(x.tok, x.project, id, x.hubspot, &l, &p), 0);
        pb_tokens_release(l);
    }
    CU_ASSERT_EQUAL(fake_token_calls(x.hs), 1);
    free(id);
    fx_stop(&x);
}

/* ---- 200 callers, one refresh ---- */

#define N_THREADS 200

struct worker {
    struct fx *x;
    const char *id;
    pthread_barrier_t *bar;
    int rc;
    unsigned status;
    long long version;
    char *token;
    const struct pb_cred_lease *old; /* refresh_after_401 when set */
};

static void *worker_run(void *arg)
{
    struct worker *w = arg;
    struct pb_problem p;
    pb_problem_clear(&p);
    struct pb_cred_lease *l = NULL;
    pthread_barrier_wait(w->bar);
    if (w->old)
        w->rc = pb_tokens_refresh_after_401(w->x->tok, w->old, w->x->hubspot, &l, &p);
    else
        w->rc = pb_tokens_acquire(w->x->tok, w->x->project, w->id, w->x->hubspot, &l, &p);
    w->status = p.status;
    if (l) {
        w->version = l->version;
        w->token = l->view.access_token ? strdup(l->view.access_token) : NULL;
    }
    pb_tokens_release(l);
    pb_problem_free(&p);
    return NULL;
}

/* Runs n workers at once; returns how many got `token` (NULL: the token the
 * first worker got) at `version`. */
static int run_workers(struct fx *x, const char *id, const struct pb_cred_lease *old, int n,
                       const char *token, long long version)
{
    struct worker *w = calloc((size_t)n, sizeof *w);
    pthread_t *th = calloc((size_t)n, sizeof *th);
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, (unsigned)n);
    int started = 0;
    for (int i = 0; i < n; i++) {
        w[i] = (struct worker){.x = x, .id = id, .bar = &bar, .old = old, .rc = -99};
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, 256 * 1024);
        if (pthread_create(&th[i], &attr, worker_run, &w[i]) == 0)
            started++;
        pthread_attr_destroy(&attr);
    }
    CU_ASSERT_EQUAL_FATAL(started, n);
    int good = 0;
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    if (!token)
        token = w[0].token;
    for (int i = 0; i < n; i++) {
        if (w[i].rc == 0 && streq(w[i].token, token) && w[i].version == version)
            good++;
        else
            fprintf(stderr, "worker %d: rc %d status %u version %lld token %s\n", i, w[i].rc,
                    w[i].status, w[i].version, w[i].token ? "(other)" : "(none)");
    }
    for (int i = 0; i < n; i++)
        free(w[i].token);
    pthread_barrier_destroy(&bar);
    free(w);
    free(th);
    return good;
}

static void test_concurrent_callers_share_one_refresh(void)
{
    struct fx x;
    CU_ASSERT_FATAL(fx_start(&x) == 0);
    fake_add_token(x.hs, NULL, "rt-many", 0);
    char *id = oauth_conn(&x, "hubspot", "at-expired", "rt-many", -60);
    CU_ASSERT_FATAL(id != NULL);
    /* A slow token endpoint so every caller arrives during the refresh. */
    struct fake_fault slow = {.delay_ms = 300};
    fake_inject(x.hs, "POST", "/oauth/v1/token", &slow, 1);
    CU_ASSERT_EQUAL(run_workers(&x, id, NULL, N_THREADS, NULL, 2), N_THREADS);
    char *issued = fake_last_issued_token(x.hs);
    CU_ASSERT_FATAL(issued != NULL);
    CU_ASSERT_EQUAL(fake_token_calls(x.hs), 1);
    CU_ASSERT_EQUAL(pb_tokens_refresh_count(x.tok), 1);
    /* Again, now checking every caller got the new token. */
    CU_ASSERT_EQUAL(run_workers(&x, id, NULL, N_THREADS, issued, 2), N_THREADS);
    CU_ASSERT_EQUAL(fake_token_calls(x.hs), 1);
    free(issued);
    free(id);
    fx_stop(&x);
}

static void test_concurrent_callers_all_get_new_token(void)
{
    struct fx x;
    CU_ASSERT_FATAL(fx_start(&x) == 0);
    fake_add_token(x.hs, NULL, "rt-many2", 0);
    char *id = oauth_conn(&x, "hubspot", "at-expired", "rt-many2", -60);
    CU_ASSERT_FATAL(id != NULL);
    struct fake_fault slow = {
        .delay_ms = 300,
        .status = 200,
        .body = "{\"access_token\":\"at-shared\",\"refresh_token\":\"rt-many2\",\"expires_in\":1800}"};
    fake_inject(x.hs, "POST", "/oauth/v1/token", &slow, 1);
    CU_ASSERT_EQUAL(run_workers(&x, id, NULL, N_THREADS, "at-shared", 2), N_THREADS);
    CU_ASSERT_EQUAL(fake_token_calls(x.hs), 1);
    CU_ASSERT_EQUAL(pb_tokens_refresh_count(x.tok), 1);
    free(id);
    fx_stop(&x);
}

static void test_refused_refresh_backs_off(void)
{
    struct fx x;
    CU_ASSERT_FATAL(fx_start(&x) == 0);
    /* rt-unknown was never issued: the token endpoint refuses it. */
    char *id = oauth_conn(&x, "hubspot", "at-expired", "rt-unknown", -60);
    CU_ASSERT_FATAL(id != NULL);
    struct pb_problem p;
    pb_problem_clear(&p);
    struct pb_cred_lease *l = NULL;
    CU_ASSERT_EQUAL(pb_tokens_acquire(x.tok, x.project, id, x.hubspot, &l, &p), -1);
    CU_ASSERT_PTR_NULL(l);
    CU_ASSERT_EQUAL(p.status, 424);
    CU_ASSERT_STRING_EQUAL(p.slug, "reauthorization-required");
    CU_ASSERT_FALSE(p.retryable);
    CU_ASSERT_PTR_NOT_NULL(strstr(p.detail, id));
    CU_ASSERT_PTR_NOT_NULL(strstr(p.detail, "needs re-authorization"));
    CU_ASSERT_PTR_NOT_NULL(strstr(p.detail, "the provider refused the token refresh"));
    CU_ASSERT_PTR_NOT_NULL(strstr(p.detail, "missing or unknown refresh token"));
    /* Nothing secret in the problem. */
    CU_ASSERT_PTR_NULL(strstr(p.detail, "rt-unknown"));
    CU_ASSERT_PTR_NULL(strstr(p.detail, "at-expired"));
    CU_ASSERT_PTR_NULL(strstr(p.detail, "hs-secret-value"));
    CU_ASSERT_EQUAL(fake_token_calls(x.hs), 1);
    json_t *conn = NULL;
    json_t *c = stored_creds(&x, id, &conn);
    CU_ASSERT_TRUE(streq(sget(conn, "status"), "needs_reauthorization"));
    json_decref(c);
    json_decref(conn);
    pb_problem_free(&p);

    /* Inside the back-off window (5 s): same problem, no provider call. */
    advance(2000);
    CU_ASSERT_EQUAL(pb_tokens_acquire(x.tok, x.project, id, x.hubspot, &l, &p), -1);
    CU_ASSERT_EQUAL(p.status, 424);
    CU_ASSERT_PTR_NOT_NULL(strstr(p.detail, "missing or unknown refresh token"));
    CU_ASSERT_EQUAL(fake_token_calls(x.hs), 1);
    pb_problem_free(&p);

    /* Past it: one more try, refused again; the window doubles to 10 s. */
    advance(4000);
    CU_ASSERT_EQUAL(pb_tokens_acquire(x.tok, x.project, id, x.hubspot, &l, &p), -1);
    CU_ASSERT_EQUAL(p.status, 424);
    CU_ASSERT_EQUAL(fake_token_calls(x.hs), 2);
    pb_problem_free(&p);
    advance(6000);
    CU_ASSERT_EQUAL(pb_tokens_acquire(x.tok, x.project, id, x.hubspot, &l, &p), -1);
    CU_ASSERT_EQUAL(fake_token_calls(x.hs), 2);
    pb_problem_free(&p);

    /* The provider accepts the refresh token again: the next try works. */
    fake_add_token(x.hs, NULL, "rt-unknown", 0);
    advance(5000);
    CU_ASSERT_EQUAL(pb_tokens_acquire(x.tok, x.project, id, x.hubspot, &l, &p), 0);
    CU_ASSERT_EQUAL(fake_token_calls(x.hs), 3);
    CU_ASSERT_TRUE(l && l->version == 2);
    pb_tokens_release(l);
    c = stored_creds(&x, id, &conn);
    CU_ASSERT_TRUE(streq(sget(conn, "status"), "working"));
    json_decref(c);
    json_decref(conn);
    free(id);
    fx_stop(&x);
}

static void test_token_endpoint_down_is_502(void)
{
    struct fx x;
    CU_ASSERT_FATAL(fx_start(&x) == 0);
    fake_add_token(x.hs, NULL, "rt-down", 0);
    /* Nothing listens at hubspot_down's token URL. */
    char *id = oauth_conn(&x, "hubspot_down", "at-expired", "rt-down", -60);
    CU_ASSERT_FATAL(id != NULL);
    struct pb_problem p;
    pb_problem_clear(&p);
    struct pb_cred_lease *l = NULL;
    CU_ASSERT_EQUAL(pb_tokens_acquire(x.tok, x.project, id, x.hubspot_down, &l, &p), -1);
    CU_ASSERT_EQUAL(p.status, 502);
    CU_ASSERT_STRING_EQUAL(p.slug, "token-refresh-unavailable");
    CU_ASSERT_TRUE(p.retryable);
    CU_ASSERT_EQUAL(pb_tokens_refresh_count(x.tok), 1);
    pb_problem_free(&p);
    /* A storm of callers right after does not hammer the endpoint. */
    CU_ASSERT_EQUAL(pb_tokens_acquire(x.tok, x.project, id, x.hubspot_down, &l, &p), -1);
    CU_ASSERT_EQUAL(p.status, 502);
    CU_ASSERT_EQUAL(pb_tokens_refresh_count(x.tok), 1);
    pb_problem_free(&p);
    /* Not a refusal: the connection is not marked for re-authorization. */
    json_t *conn = NULL;
    json_t *c = stored_creds(&x, id, &conn);
    CU_ASSERT_TRUE(streq(sget(conn, "status"), "working"));
    json_decref(c);
    json_decref(conn);
    free(id);

    /* A 503 from the token endpoint is the same kind of failure. */
    id = oauth_conn(&x, "hubspot", "at-expired", "rt-down", -60);
    struct fake_fault down = {.status = 503};
    fake_inject(x.hs, "POST", "/oauth/v1/token", &down, 1);
    CU_ASSERT_EQUAL(pb_tokens_acquire(x.tok, x.project, id, x.hubspot, &l, &p), -1);
    CU_ASSERT_EQUAL(p.status, 502);
    CU_ASSERT_STRING_EQUAL(p.slug, "token-refresh-unavailable");
    CU_ASSERT_TRUE(p.retryable);
    CU_ASSERT_PTR_NOT_NULL(strstr(p.detail, "503"));
    CU_ASSERT_EQUAL(fake_token_calls(x.hs), 1);
    pb_problem_free(&p);
    CU_ASSERT_EQUAL(pb_tokens_acquire(x.tok, x.project, id, x.hubspot, &l, &p), -1);
    CU_ASSERT_EQUAL(fake_token_calls(x.hs), 1);
    pb_problem_free(&p);
    /* After the brief back-off it tries again, and the endpoint is back. */
    advance(1500);
    CU_ASSERT_EQUAL(pb_tokens_acquire(x.tok, x.project, id, x.hubspot, &l, &p), 0);
    CU_ASSERT_EQUAL(fake_token_calls(x.hs), 2);
    pb_tokens_release(l);
    free(id);
    fx_stop(&x);
}

static void test_proactive_refresh_failure_keeps_valid_token(void)
{
    struct fx x;
    CU_ASSERT_FATAL(fx_start(&x) == 0);
    /* Expiring within the margin but still valid for a minute. */
    char *id = oauth_conn(&x, "hubspot", "at-still-valid", "rt-x", 60);
    CU_ASSERT_FATAL(id != NULL);
    struct fake_fault down = {.status = 503};
    fake_inject(x.hs, "POST", "/oauth/v1/token", &down, 1);
    struct pb_problem p;
    pb_problem_clear(&p);
    struct pb_cred_lease *l = NULL;
    CU_ASSERT_EQUAL(pb_tokens_acquire(x.tok, x.project, id, x.hubspot, &l, &p), 0);
    CU_ASSERT_TRUE(l && streq(l->view.access_token, "at-still-valid"));
    CU_ASSERT_EQUAL(p.status, 0);
    CU_ASSERT_EQUAL(fake_token_calls(x.hs), 1);
    pb_tokens_release(l);
    /* In the back-off window: the valid token, no call. */
    CU_ASSERT_EQUAL(pb_tokens_acquire(x.tok, x.project, id, x.hubspot, &l, &p), 0);
    CU_ASSERT_EQUAL(fake_token_calls(x.hs), 1);
    pb_tokens_release(l);
    /* Once it has really expired, the failure shows. */
    advance(61000);
    fake_inject(x.hs, "POST", "/oauth/v1/token", &down, 1);
    CU_ASSERT_EQUAL(pb_tokens_acquire(x.tok, x.project, id, x.hubspot, &l, &p), -1);
    CU_ASSERT_EQUAL(p.status, 502);
    CU_ASSERT_EQUAL(fake_token_calls(x.hs), 2);
    pb_problem_free(&p);
    free(id);
    fx_stop(&x);
}

static void test_refresh_after_401(void)
{
    struct fx x;
    CU_ASSERT_FATAL(fx_start(&x) == 0);
    fake_add_token(x.hs, NULL, "rt-401", 0);
    /* Not expiring: only the 401 makes a refresh. */
    char *id = oauth_conn(&x, "hubspot", "at-revoked", "rt-401", 3600);
    CU_ASSERT_FATAL(id != NULL);
    struct pb_problem p;
    pb_problem_clear(&p);
    struct pb_cred_lease *old = NULL, *fresh = NULL, *again = NULL, *third = NULL;
    CU_ASSERT_EQUAL_FATAL(pb_tokens_acquire(x.tok, x.project, id, x.hubspot, &old, &p), 0);
    CU_ASSERT_EQUAL(old->version, 1);
    CU_ASSERT_EQUAL(fake_token_calls(x.hs), 0);

    /* Many callers that all used `old` get 401 at once: one refresh. */
    struct fake_fault slow = {.delay_ms = 200};
    fake_inject(x.hs, "POST", "/oauth/v1/token", &slow, 1);
    CU_ASSERT_EQUAL(run_workers(&x, id, old, 50, NULL, 2), 50);
    CU_ASSERT_EQUAL(fake_token_calls(x.hs), 1);
    char *issued = fake_last_issued_token(x.hs);

    /* A late caller with the stale lease gets the current one, no refresh. */
    CU_ASSERT_EQUAL(pb_tokens_refresh_after_401(x.tok, old, x.hubspot, &again, &p), 0);
    CU_ASSERT_TRUE(again && again->version == 2 && streq(again->view.access_token, issued));
    CU_ASSERT_EQUAL(fake_token_calls(x.hs), 1);
    /* `old` is still readable after the swap. */
    CU_ASSERT_TRUE(streq(old->view.access_token, "at-revoked"));

    /* A 401 on the current token refreshes again, once. */
    CU_ASSERT_EQUAL(pb_tokens_refresh_after_401(x.tok, again, x.hubspot, &fresh, &p), 0);
    CU_ASSERT_TRUE(fresh && fresh->version == 3);
    CU_ASSERT_FALSE(fresh && streq(fresh->view.access_token, issued));
    CU_ASSERT_EQUAL(fake_token_calls(x.hs), 2);
    CU_ASSERT_EQUAL(pb_tokens_refresh_after_401(x.tok, again, x.hubspot, &third, &p), 0);
    CU_ASSERT_TRUE(third && third->version == 3);
    CU_ASSERT_EQUAL(fake_token_calls(x.hs), 2);
    CU_ASSERT_EQUAL(pb_tokens_refresh_count(x.tok), 2);

    pb_tokens_release(third);
    pb_tokens_release(fresh);
    pb_tokens_release(again);
    pb_tokens_release(old);
    free(issued);
    free(id);
    fx_stop(&x);
}

static void test_refresh_after_401_refused(void)
{
    struct fx x;
    CU_ASSERT_FATAL(fx_start(&x) == 0);
    char *id = oauth_conn(&x, "hubspot", "at-revoked", "rt-revoked", 3600);
    CU_ASSERT_FATAL(id != NULL);
    struct pb_problem p;
    pb_problem_clear(&p);
    struct pb_cred_lease *old = NULL, *fresh = NULL;
    CU_ASSERT_EQUAL_FATAL(pb_tokens_acquire(x.tok, x.project, id, x.hubspot, &old, &p), 0);
    CU_ASSERT_EQUAL(pb_tokens_refresh_after_401(x.tok, old, x.hubspot, &fresh, &p), -1);
    CU_ASSERT_EQUAL(p.status, 424);
    CU_ASSERT_PTR_NULL(fresh);
    CU_ASSERT_EQUAL(fake_token_calls(x.hs), 1);
    pb_problem_free(&p);
    /* The token is known bad: a 401 in the window answers without a call. */
    CU_ASSERT_EQUAL(pb_tokens_refresh_after_401(x.tok, old, x.hubspot, &fresh, &p), -1);
    CU_ASSERT_EQUAL(p.status, 424);
    CU_ASSERT_EQUAL(fake_token_calls(x.hs), 1);
    pb_problem_free(&p);
    pb_tokens_release(old);
    free(id);
    fx_stop(&x);
}

static void test_api_key_never_refreshes(void)
{
    struct fx x;
    CU_ASSERT_FATAL(fx_start(&x) == 0);
    char *id = gen_conn(&x, json_pack("{s:s, s:s}", "provider", "hubspot", "apiKey",
                                      "pat-na1-secret"));
    CU_ASSERT_FATAL(id != NULL);
    struct pb_problem p;
    pb_problem_clear(&p);
    struct pb_cred_lease *l = NULL, *l2 = NULL;
    CU_ASSERT_EQUAL_FATAL(pb_tokens_acquire(x.tok, x.project, id, x.hubspot, &l, &p), 0);
    CU_ASSERT_TRUE(streq(l->view.auth_type, "api_key"));
    CU_ASSERT_TRUE(streq(l->view.api_key, "pat-na1-secret"));
    CU_ASSERT_PTR_NULL(l->view.access_token);
    CU_ASSERT_EQUAL(l->view.expires_at, 0);
    /* After a 401 there is nothing to refresh: the same credentials. */
    CU_ASSERT_EQUAL(pb_tokens_refresh_after_401(x.tok, l, x.hubspot, &l2, &p), 0);
    CU_ASSERT_TRUE(l2 && l2->version == l->version);
    pb_tokens_release(l2);
    advance(10LL * 365 * 24 * 3600 * 1000);
    CU_ASSERT_EQUAL(pb_tokens_acquire(x.tok, x.project, id, x.hubspot, &l2, &p), 0);
    pb_tokens_release(l2);
    CU_ASSERT_EQUAL(pb_tokens_refresh_count(x.tok), 0);
    CU_ASSERT_EQUAL(fake_token_calls(x.hs), 0);
    pb_tokens_release(l);

    /* Basic auth neither. */
    free(id);
    id = gen_conn(&x, json_pack("{s:s, s:{s:s, s:s}}", "provider", "hubspot", "basicAuth",
                                "username", "u", "password", "pw"));
    CU_ASSERT_EQUAL(pb_tokens_acquire(x.tok, x.project, id, x.hubspot, &l, &p), 0);
    CU_ASSERT_TRUE(l && streq(l->view.username, "u") && streq(l->view.password, "pw"));
    pb_tokens_release(l);
    CU_ASSERT_EQUAL(pb_tokens_refresh_count(x.tok), 0);
    free(id);
    fx_stop(&x);
}

static void test_oauth2_cc_gets_token_on_first_use(void)
{
    struct fx x;
    CU_ASSERT_FATAL(fx_start(&x) == 0);
    const char *sfurl = fake_base_url(x.sf);
    json_t *b = json_pack("{s:s, s:{s:s, s:s, s:[s]}, s:{s:{s:s}}}", "provider", "salesforce",
                          "oauth2ClientCredentials", "clientId", "cc-client", "clientSecret",
                          "cc-secret", "scopes", "api", "providerMetadata", "instance_url",
                          "value", sfurl);
    char *id = gen_conn(&x, b);
    CU_ASSERT_FATAL(id != NULL);
    /* The fake has no client-credentials grant; answer as Salesforce does. */
    char body[512];
    snprintf(body, sizeof body,
             "{\"access_token\":\"cc-token-1\",\"instance_url\":\"%s\",\"id\":\"%s/id/00D/005\","
             "\"token_type\":\"Bearer\",\"issued_at\":\"1700000000000\",\"scope\":\"api\"}",
             sfurl, sfurl);
    struct fake_fault ok = {.status = 200, .body = body};
    fake_inject(x.sf, "POST", "/services/oauth2/token", &ok, 1);

    struct pb_problem p;
    pb_problem_clear(&p);
    struct pb_cred_lease *l = NULL;
    CU_ASSERT_EQUAL_FATAL(pb_tokens_acquire(x.tok, x.project, id, x.salesforce, &l, &p), 0);
    CU_ASSERT_TRUE(streq(l->view.auth_type, "oauth2_cc"));
    CU_ASSERT_TRUE(streq(l->view.access_token, "cc-token-1"));
    CU_ASSERT_TRUE(streq(l->view.client_id, "cc-client"));
    CU_ASSERT_TRUE(streq(pb_services()->cred_meta(&l->view, "instance_url"), sfurl));
    CU_ASSERT_TRUE(streq(pb_services()->cred_meta(&l->view, "issued_at"), "1700000000000"));
    CU_ASSERT_EQUAL(fake_token_calls(x.sf), 1);
    struct fake_req r;
    CU_ASSERT_EQUAL_FATAL(fake_last(x.sf, "POST", "/services/oauth2/token", &r), 0);
    char *gt = fake_req_param(&r, "grant_type"), *cid = fake_req_param(&r, "client_id");
    CU_ASSERT_TRUE(streq(gt, "client_credentials"));
    CU_ASSERT_TRUE(streq(cid, "cc-client"));
    free(gt);
    free(cid);
    fake_req_free(&r);

    json_t *conn = NULL;
    json_t *c = stored_creds(&x, id, &conn);
    CU_ASSERT_TRUE(streq(sget(c, "access_token"), "cc-token-1"));
    CU_ASSERT_TRUE(streq(sget(c, "client_secret"), "cc-secret"));
    CU_ASSERT_PTR_NULL(json_object_get(c, "refresh_token"));
    json_t *md = json_object_get(conn, "providerMetadata");
    CU_ASSERT_TRUE(streq(sget(json_object_get(md, "issued_at"), "value"), "1700000000000"));
    CU_ASSERT_TRUE(streq(sget(json_object_get(md, "instance_url"), "value"), sfurl));
    json_decref(c);
    json_decref(conn);
    pb_tokens_release(l);

    /* A token with no known expiry is used as it is. */
    CU_ASSERT_EQUAL(pb_tokens_acquire(x.tok, x.project, id, x.salesforce, &l, &p), 0);
    CU_ASSERT_TRUE(l && streq(l->view.access_token, "cc-token-1"));
    pb_tokens_release(l);
    CU_ASSERT_EQUAL(fake_token_calls(x.sf), 1);
    free(id);
    fx_stop(&x);
}

static void test_generation_change_reloads(void)
{
    struct fx x;
    CU_ASSERT_FATAL(fx_start(&x) == 0);
    char *id = oauth_conn(&x, "hubspot", "at-one", "rt-one", 3600);
    CU_ASSERT_FATAL(id != NULL);
    struct pb_problem p;
    pb_problem_clear(&p);
    struct pb_cred_lease *l1 = NULL, *l2 = NULL, *l3 = NULL;
    CU_ASSERT_EQUAL_FATAL(pb_tokens_acquire(x.tok, x.project, id, x.hubspot, &l1, &p), 0);

    /* Someone else (another node, a re-import) stores new credentials. */
    const char *plain = "{\"auth_type\":\"oauth2\",\"access_token\":\"at-two\","
                        "\"refresh_token\":\"rt-two\"}";
    char *sealed = pb_secret_seal(plain, strlen(plain));
    long long nv = 0;
    json_t *merge = json_pack("{s:{s:s}}", "portal", "value", "42");
    CU_ASSERT_EQUAL(pb_store_connection_update_credentials(x.app->store, id, 1, sealed,
                                                           pb_now_ms() + 7200 * 1000, merge,
                                                           &nv),
                    0);
    json_decref(merge);
    free(sealed);
    CU_ASSERT_EQUAL_FATAL(pb_tokens_acquire(x.tok, x.project, id, x.hubspot, &l2, &p), 0);
    CU_ASSERT_TRUE(streq(l2->view.access_token, "at-two"));
    CU_ASSERT_TRUE(streq(l2->view.refresh_token, "rt-two"));
    CU_ASSERT_EQUAL(l2->version, nv);
    CU_ASSERT_TRUE(streq(pb_services()->cred_meta(&l2->view, "portal"), "42"));
    /* The earlier lease is an immutable snapshot. */
    CU_ASSERT_TRUE(streq(l1->view.access_token, "at-one"));
    CU_ASSERT_EQUAL(pb_tokens_refresh_count(x.tok), 0);

    /* An unrelated write moves the generation: reloaded, same content. */
    char *other = gen_conn(&x, json_pack("{s:s, s:s}", "provider", "hubspot", "apiKey", "k"));
    CU_ASSERT_EQUAL_FATAL(pb_tokens_acquire(x.tok, x.project, id, x.hubspot, &l3, &p), 0);
    CU_ASSERT_PTR_NOT_EQUAL(l3->snapshot, l2->snapshot);
    CU_ASSERT_TRUE(streq(l3->view.access_token, "at-two"));
    pb_tokens_release(l3);
    /* Nothing changed since: served from memory. */
    CU_ASSERT_EQUAL_FATAL(pb_tokens_acquire(x.tok, x.project, id, x.hubspot, &l3, &p), 0);
    struct pb_cred_lease *l4 = NULL;
    CU_ASSERT_EQUAL_FATAL(pb_tokens_acquire(x.tok, x.project, id, x.hubspot, &l4, &p), 0);
    CU_ASSERT_PTR_EQUAL(l3->snapshot, l4->snapshot);
    pb_tokens_release(l4);
    pb_tokens_release(l3);

    /* Deleted in the store: gone from the cache too. */
    CU_ASSERT_EQUAL(pb_store_connection_delete(x.app->store, x.project, other), 0);
    CU_ASSERT_EQUAL(pb_tokens_acquire(x.tok, x.project, other, x.hubspot, &l3, &p), -1);
    CU_ASSERT_EQUAL(p.status, 404);
    pb_problem_free(&p);
    pb_tokens_release(l1);
    pb_tokens_release(l2);
    free(other);
    free(id);
    fx_stop(&x);
}

static void test_not_found_and_scoping(void)
{
    struct fx x;
    CU_ASSERT_FATAL(fx_start(&x) == 0);
    char *id = oauth_conn(&x, "hubspot", "at-a", "rt-a", 3600);
    CU_ASSERT_FATAL(id != NULL);
    struct pb_problem p;
    pb_problem_clear(&p);
    struct pb_cred_lease *l = NULL;
    CU_ASSERT_EQUAL(pb_tokens_acquire(x.tok, x.project, "conn_nope", x.hubspot, &l, &p), -1);
    CU_ASSERT_EQUAL(p.status, 404);
    pb_problem_free(&p);
    /* Another project cannot reach it, even once it is cached. */
    CU_ASSERT_EQUAL(pb_tokens_acquire(x.tok, x.project, id, x.hubspot, &l, &p), 0);
    pb_tokens_release(l);
    l = NULL;
    json_t *proj = NULL;
    CU_ASSERT_EQUAL_FATAL(pb_ctl_project_create(x.app, "other", &proj, &p), 0);
    CU_ASSERT_EQUAL(pb_tokens_acquire(x.tok, json_string_value(json_object_get(proj, "id")), id,
                                      x.hubspot, &l, &p),
                    -1);
    CU_ASSERT_EQUAL(p.status, 404);
    CU_ASSERT_PTR_NULL(l);
    pb_problem_free(&p);
    json_decref(proj);
    /* The provider must be the connection's own. */
    CU_ASSERT_EQUAL(pb_tokens_acquire(x.tok, x.project, id, x.salesforce, &l, &p), -1);
    CU_ASSERT_EQUAL(p.status, 409);
    pb_problem_free(&p);
    free(id);
    fx_stop(&x);
}

static void test_refresh_conflict_uses_stored_token(void)
{
    struct fx x;
    CU_ASSERT_FATAL(fx_start(&x) == 0);
    fake_add_token(x.hs, NULL, "rt-c", 0);
    char *id = oauth_conn(&x, "hubspot", "at-c", "rt-c", 3600);
    CU_ASSERT_FATAL(id != NULL);
    struct pb_problem p;
    pb_problem_clear(&p);
    struct pb_cred_lease *old = NULL, *fresh = NULL;
    CU_ASSERT_EQUAL_FATAL(pb_tokens_acquire(x.tok, x.project, id, x.hubspot, &old, &p), 0);
    /* Another node refreshes while ours is on the wire (our cache has not
     * seen it: the write happens during the slow token call). */
    struct fake_fault slow = {.delay_ms = 400};
    fake_inject(x.hs, "POST", "/oauth/v1/token", &slow, 1);
    struct worker w = {.x = &x, .id = id, .old = old, .rc = -99};
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, 2);
    w.bar = &bar;
    pthread_t th;
    pthread_create(&th, NULL, worker_run, &w);
    pthread_barrier_wait(&bar);
    /* The request is recorded on arrival, before the fake's delay. */
    for (int i = 0; i < 2000 && fake_token_calls(x.hs) == 0; i++)
        usleep(1000);
    CU_ASSERT_EQUAL(fake_token_calls(x.hs), 1);
    const char *plain = "{\"auth_type\":\"oauth2\",\"access_token\":\"at-other-node\","
                        "\"refresh_token\":\"rt-c\"}";
    char *sealed = pb_secret_seal(plain, strlen(plain));
    long long nv = 0;
    CU_ASSERT_EQUAL(pb_store_connection_update_credentials(x.app->store, id, 1, sealed,
                                                           pb_now_ms() + 3600 * 1000, NULL, &nv),
                    0);
    free(sealed);
    pthread_join(th, NULL);
    pthread_barrier_destroy(&bar);
    CU_ASSERT_EQUAL(w.rc, 0);
    CU_ASSERT_TRUE(streq(w.token, "at-other-node"));
    CU_ASSERT_EQUAL(w.version, nv);
    free(w.token);
    CU_ASSERT_EQUAL(fake_token_calls(x.hs), 1);
    CU_ASSERT_EQUAL_FATAL(pb_tokens_acquire(x.tok, x.project, id, x.hubspot, &fresh, &p), 0);
    CU_ASSERT_TRUE(streq(fresh->view.access_token, "at-other-node"));
    pb_tokens_release(fresh);
    pb_tokens_release(old);
    free(id);
    fx_stop(&x);
}

int main(int argc, char **argv)
{
    pb_set_clock(test_clock);
    CU_TestInfo tests[] = {
        {"fresh_token_no_refresh", test_fresh_token_no_refresh},
        {"expiring_token_refreshes_once_and_stores", test_expiring_token_refreshes_once_and_stores},
        {"refresh_keeps_old_refresh_token", test_refresh_keeps_old_refresh_token},
        {"short_lived_token_not_refreshed_again_at_once",
         test_short_lived_token_not_refreshed_again_at_once},
        {"concurrent_callers_share_one_refresh", test_concurrent_callers_share_one_refresh},
        {"concurrent_callers_all_get_new_token", test_concurrent_callers_all_get_new_token},
        {"refused_refresh_backs_off", test_refused_refresh_backs_off},
        {"token_endpoint_down_is_502", test_token_endpoint_down_is_502},
        {"proactive_refresh_failure_keeps_valid_token",
         test_proactive_refresh_failure_keeps_valid_token},
        {"refresh_after_401", test_refresh_after_401},
        {"refresh_after_401_refused", test_refresh_after_401_refused},
        {"api_key_never_refreshes", test_api_key_never_refreshes},
        {"oauth2_cc_gets_token_on_first_use", test_oauth2_cc_gets_token_on_first_use},
        {"generation_change_reloads", test_generation_change_reloads},
        {"not_found_and_scoping", test_not_found_and_scoping},
        {"refresh_conflict_uses_stored_token", test_refresh_conflict_uses_stored_token},
        CU_TEST_INFO_NULL,
    };
    return pbt_main(argc, argv, "tokens", tests);
}
