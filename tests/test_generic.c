/* The generic plugin with providers.yaml catalogs. Unit level (the plugin
 * loaded from its built .so and driven through the ABI with the core's
 * services): the shipped catalog entry by entry, a generated 1,000-entry
 * catalog, unsupported modes, errors, aliases, templates, OAuth requests,
 * token responses and rate-limit headers. End to end (an in-process
 * plugboard, the fake echo and HubSpot servers and a small rate-limited
 * server): API_KEY, BASIC, OAUTH2 with refresh and connect, OAUTH2_CC and
 * NONE entries through the proxy, interpolated base URLs, a missing
 * connectionConfig value, and retry headers feeding throttle mode. */
#include "app.h"
#include "control.h"
#include "fake/fake.h"
#include "http.h"
#include "server.h"
#include "testutil.h"

#include <curl/curl.h>
#include <dlfcn.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define NOW_MS INT64_C(1750000000000)

/* ---- loading the plugin ---------------------------------------------------- */

/* The core's services with log lines captured for assertions. */
static struct pb_core_services cap_svc;
static char logbuf[1 << 16];
static size_t loglen;
static pthread_mutex_t logmu = PTHREAD_MUTEX_INITIALIZER;

static void cap_log(enum pb_log_level level, const char *provider, const char *fmt, ...)
    PB_PRINTF(3, 4);

static void cap_log(enum pb_log_level level, const char *provider, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&logmu);
    int n = snprintf(logbuf + loglen, sizeof logbuf - loglen, "%d %s: %s\n", (int)level,
                     provider ? provider : "-", line);
    if (n > 0 && (size_t)n < sizeof logbuf - loglen)
        loglen += (size_t)n;
    pthread_mutex_unlock(&logmu);
}

static void log_clear(void)
{
    pthread_mutex_lock(&logmu);
    loglen = 0;
    logbuf[0] = '\0';
    pthread_mutex_unlock(&logmu);
}

static size_t log_count(const char *needle)
{
    size_t n = 0;
    for (const char *p = strstr(logbuf, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

static const struct pb_core_services *svc(void)
{
    if (!cap_svc.struct_size) {
        cap_svc = *pb_services();
        cap_svc.log = cap_log;
    }
    return &cap_svc;
}

struct plug {
    void *dl;
    const struct pb_plugin *vt;
    void *st;
};

static const struct pb_plugin *open_vt(void **dl)
{
    char *path = pbt_built_plugin("generic");
    *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!*dl)
        fprintf(stderr, "\ncannot load %s: %s\n", path, dlerror());
    free(path);
    if (!*dl)
        return NULL;
    void *sym = dlsym(*dl, PB_PLUGIN_ENTRY_SYMBOL);
    if (!sym)
        return NULL;
    pb_plugin_entry_fn fn;
    memcpy(&fn, &sym, sizeof fn);
    return fn();
}

/* Initializes the plugin with options (borrowed) as provider `name`. */
static int plug_init(struct plug *p, const char *name, json_t *opts, const char *config_dir,
                     struct pb_error *err)
{
    struct pb_error local;
    if (!err)
        err = &local;
    pb_error_clear(err);
    memset(p, 0, sizeof *p);
    p->vt = open_vt(&p->dl);
    if (!p->vt)
        return -100;
    struct pb_plugin_config cfg = {
        .struct_size = sizeof cfg,
        .provider_name = name,
        .config_file = "/etc/plugboard/plugboard.yaml",
        .options = opts,
        .config_dir = config_dir ? config_dir : "/etc/plugboard",
    };
    int rc = p->vt->init(svc(), &cfg, &p->st, err);
    if (rc != 0 && rc != -100 && err == &local)
        fprintf(stderr, "\n  init: %s\n", err->message);
    return rc;
}

static void plug_close(struct plug *p)
{
    if (p->vt && p->st)
        p->vt->fini(p->st);
    if (p->dl)
        dlclose(p->dl);
    memset(p, 0, sizeof *p);
}

/* Enables `entry` of the catalog at `path`; extra options as JSON text. */
static int plug_entry(struct plug *p, const char *path, const char *entry, const char *extra,
                      struct pb_error *err)
{
    json_t *o = extra ? json_loads(extra, 0, NULL) : json_object();
    if (!o) {
        fprintf(stderr, "\nbad test JSON: %s\n", extra);
        return -101;
    }
    json_object_set_new(o, "catalog", json_string(path));
    if (entry)
        json_object_set_new(o, "entry", json_string(entry));
    int rc = plug_init(p, entry ? entry : "prov", o, NULL, err);
    json_decref(o);
    return rc;
}

#define ENTRY(p, path, entry, extra)                                                             \
    do {                                                                                         \
        int rc_ = plug_entry(&(p), path, entry, extra, NULL);                                    \
        CU_ASSERT_EQUAL_FATAL(rc_, 0);                                                           \
    } while (0)

static char *write_catalog(const char *name, const char *text)
{
    char *path = pbt_path(name);
    if (pbt_write_file(path, text) != 0)
        fprintf(stderr, "\ncannot write %s\n", path);
    return path;
}

static int64_t fixed_now(void)
{
    return NOW_MS;
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- credentials and requests ------------------------------------------------ */

struct cred {
    struct pb_credentials c;
    json_t *meta;
};

static void cred_init(struct cred *k, const char *type, const char *meta)
{
    memset(k, 0, sizeof *k);
    k->meta = json_loads(meta ? meta : "{}", 0, NULL);
    k->c.struct_size = sizeof k->c;
    k->c.auth_type = type;
    k->c.metadata = k->meta;
}

static void cred_done(struct cred *k)
{
    json_decref(k->meta);
}

static int str_matches(const char *got, const char *want)
{
    int ok = got && want && strcmp(got, want) == 0;
    if (!ok)
        fprintf(stderr, "\n  string mismatch\n    got:  %s\n    want: %s\n",
                got ? got : "(null)", want ? want : "(null)");
    return ok;
}

#define CHECK_STR(got, want) CU_ASSERT(str_matches((got), (want)))

static int contains(const char *hay, const char *needle)
{
    int ok = hay && strstr(hay, needle);
    if (!ok)
        fprintf(stderr, "\n  '%s'\n  does not contain '%s'\n", hay ? hay : "(null)", needle);
    return ok;
}

#define CHECK_HAS(hay, needle) CU_ASSERT(contains((hay), (needle)))

static int base(struct plug *p, struct cred *k, char *buf, size_t len, struct pb_error *err)
{
    pb_error_clear(err);
    buf[0] = '\0';
    return p->vt->base_url(p->st, &k->c, buf, len, err);
}

/* apply_credentials on a fresh request (caller frees). */
static struct pb_http_request *apply(struct plug *p, struct cred *k, int *rc,
                                     struct pb_error *err)
{
    struct pb_http_request *r = pb_req_new();
    pb_error_clear(err);
    *rc = p->vt->apply_credentials(p->st, &k->c, r, err);
    return r;
}

static struct pb_http_request *refresh_req(struct plug *p, struct cred *k, int *rc,
                                           struct pb_error *err)
{
    struct pb_http_request *r = pb_req_new();
    pb_error_clear(err);
    *rc = p->vt->build_token_refresh(p->st, &k->c, r, err);
    return r;
}

static const char *body_of(struct pb_http_request *r)
{
    size_t len;
    return pb_req_body(r, &len);
}

static struct pb_http_response *resp(int status, const char *body, const char *ctype)
{
    struct pb_http_response *r = pb_resp_new(status);
    if (body)
        pb_resp_set_body(r, body, strlen(body));
    if (ctype)
        pb_resp_add_header(r, "Content-Type", ctype);
    return r;
}

static struct pb_classification classify(struct plug *p, struct pb_http_response *r)
{
    /* The core's defaults first, as the proxy fills them. */
    struct pb_classification c = {.struct_size = sizeof c};
    c.retryable = r->status == 429 || r->status >= 500;
    c.rate_limited = r->status == 429;
    c.auth_invalid = r->status == 401;
    p->vt->classify(p->st, r, &c);
    return c;
}

/* ---- the shipped catalog --------------------------------------------------- */

struct shipped {
    char name[64], mode[16], alias[64];
};

/* Top-level keys, their auth_mode and alias, read from the file's text
 * (the shipped file keeps one simple layout). */
static size_t shipped_entries(const char *text, struct shipped *out, size_t max)
{
    size_t n = 0;
    for (const char *line = text; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        const char *eol = strchr(line, '\n');
        size_t len = eol ? (size_t)(eol - line) : strlen(line);
        if (len > 1 && line[0] != ' ' && line[0] != '#' && line[len - 1] == ':' && n < max) {
            memset(&out[n], 0, sizeof out[n]);
            snprintf(out[n].name, sizeof out[n].name, "%.*s", (int)(len - 1), line);
            n++;
        } else if (n && strncmp(line, "  auth_mode: ", 13) == 0) {
            snprintf(out[n - 1].mode, sizeof out[n - 1].mode, "%.*s", (int)(len - 13), line + 13);
        } else if (n && strncmp(line, "  alias: ", 9) == 0) {
            snprintf(out[n - 1].alias, sizeof out[n - 1].alias, "%.*s", (int)(len - 9), line + 9);
        }
    }
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n && !out[i].mode[0]; j++)
            if (strcmp(out[j].name, out[i].alias) == 0)
                memcpy(out[i].mode, out[j].mode, sizeof out[i].mode);
    return n;
}

/* Every connectionConfig key the shipped catalog uses, with usable values. */
#define SHIPPED_META                                                                             \
    "{\"subdomain\":{\"value\":\"acme\"},\"dc\":{\"value\":\"us21\"},"                          \
    "\"site\":{\"value\":\"acme\"},\"app_id\":{\"value\":\"ACME1\"},"                            \
    "\"domain\":{\"value\":\"acme.example.com\"},\"tenant\":{\"value\":\"t1\"},"                 \
    "\"language\":{\"value\":\"de\"},\"account_id\":{\"value\":\"a1\"},"                         \
    "\"store_url\":{\"value\":\"https://shop.example.com\"},"                                    \
    "\"instance_url\":{\"value\":\"https://acme.my.salesforce.com\"},"                           \
    "\"api_base_url\":{\"value\":\"https://api.eu.mailgun.net\"}}"

static void test_shipped_catalog_every_entry(void)
{
    char path[1024];
    const char *src = getenv("PB_SRCDIR") ? getenv("PB_SRCDIR") : ".";
    snprintf(path, sizeof path, "%s/examples/catalog/providers.yaml", src);
    char *text = pbt_read_file(path, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    static struct shipped e[200];
    size_t n = shipped_entries(text, e, 200);
    free(text);
    const char *modes[] = {"API_KEY", "BASIC", "OAUTH2", "OAUTH2_CC", "NONE"};
    size_t per_mode[5] = {0};
    double t0 = mono_s();
    log_clear();
    for (size_t i = 0; i < n; i++) {
        struct plug p;
        struct pb_error err;
        int rc = plug_entry(&p, path, e[i].name,
                            "{\"client_id\": \"cid\", \"client_secret\": \"csecret\"}", &err);
        if (rc != 0)
            fprintf(stderr, "\n  entry %s: %s\n", e[i].name, err.message);
        CU_ASSERT_EQUAL(rc, 0);
        int m = -1;
        for (int j = 0; j < 5; j++)
            if (strcmp(e[i].mode, modes[j]) == 0)
                m = j;
        CU_ASSERT(m >= 0);
        if (rc != 0 || m < 0) {
            plug_close(&p);
            continue;
        }
        per_mode[m]++;
        /* A connection with every connectionConfig value: a real URL. */
        static const char *types[] = {"api_key", "basic", "oauth2", "oauth2_cc", "none"};
        struct cred k;
        cred_init(&k, types[m], SHIPPED_META);
        k.c.api_key = "key-1";
        k.c.username = "user";
        k.c.password = "pass";
        k.c.access_token = "tok";
        k.c.client_id = "conn-client";
        k.c.client_secret = "conn-secret";
        char buf[512];
        CU_ASSERT_EQUAL(base(&p, &k, buf, sizeof buf, &err), 0);
        CU_ASSERT(strncmp(buf, "https://", 8) == 0);
        int arc;
        struct pb_http_request *r = apply(&p, &k, &arc, &err);
        if (arc != 0)
            fprintf(stderr, "\n  entry %s: apply: %s\n", e[i].name, err.message);
        CU_ASSERT_EQUAL(arc, 0);
        CU_ASSERT(r->n_headers + (r->query ? 1 : 0) >= (m == 4 ? 0u : 1u));
        pb_req_free(r);
        if (m == 2 || m == 3) {
            if (m == 2)
                k.c.refresh_token = "rt";
            r = refresh_req(&p, &k, &arc, &err);
            if (arc != 0)
                fprintf(stderr, "\n  entry %s: refresh: %s\n", e[i].name, err.message);
            CU_ASSERT_EQUAL(arc, 0);
            CU_ASSERT(strncmp(r->url ? r->url : "", "https://", 8) == 0);
            pb_req_free(r);
        }
        /* Without the connection's values: a clear problem or a fallback. */
        cred_done(&k);
        cred_init(&k, types[m], NULL);
        k.c.api_key = "key-1";
        rc = base(&p, &k, buf, sizeof buf, &err);
        if (rc != 0)
            CHECK_HAS(err.message, "${connectionConfig.");
        cred_done(&k);
        plug_close(&p);
    }
    double dt = mono_s() - t0;
    fprintf(stderr, "\n  shipped catalog: %zu entries, each enabled in turn: %.1f ms in all\n", n,
            dt * 1000.0);
    for (int j = 0; j < 5; j++) {
        if (per_mode[j] < 12)
            fprintf(stderr, "\n  only %zu %s entries\n", per_mode[j], modes[j]);
        CU_ASSERT(per_mode[j] >= 12);
    }
    /* Only supported modes ship: nothing to warn about. */
    CU_ASSERT_EQUAL(log_count("does not support"), 0);
}

/* ---- a large synthetic catalog ------------------------------------------------ */

static char *synthetic_catalog(size_t n)
{
    static const char *modes[] = {"API_KEY", "BASIC", "OAUTH2", "OAUTH2_CC", "NONE"};
    size_t cap = n * 1200 + 1024, len = 0;
    char *t = malloc(cap);
    len += (size_t)snprintf(t + len, cap - len, "# generated\n");
    for (size_t i = 0; i < n; i++) {
        const char *mode = i % 50 == 7 ? "OAUTH1" : modes[i % 5];
        if (i % 25 == 24) {
            len += (size_t)snprintf(t + len, cap - len,
                                    "p%04zu:\n  display_name: Provider %zu (alias)\n"
                                    "  alias: p%04zu\n  categories: [crm, other]\n",
                                    i, i, i - 1);
            continue;
        }
        len += (size_t)snprintf(
            t + len, cap - len,
            "p%04zu:\n"
            "  display_name: Provider %zu\n"
            "  categories:\n    - crm\n    - marketing\n"
            "  auth_mode: %s\n"
            "  docs: https://docs.example.com/p%04zu\n"
            "  authorization_url: https://auth%zu.example.com/oauth/authorize\n"
            "  token_url: https://auth%zu.example.com/oauth/token\n"
            "  authorization_params:\n    access_type: offline\n"
            "  proxy:\n"
            "    base_url: https://${connectionConfig.subdomain}.api%zu.example.com || "
            "https://api%zu.example.com\n"
            "    headers:\n      x-provider: p%04zu\n"
            "    retry:\n      after: retry-after\n"
            "    paginate:\n      type: cursor\n      cursor_path_in_response: next\n"
            "  connection_config:\n    subdomain:\n      type: string\n"
            "      title: Subdomain\n      description: The subdomain of your account\n"
            "      pattern: '^[a-z0-9-]+$'\n",
            i, i, mode, i, i, i, i, i, i);
    }
    return t;
}

static void test_synthetic_1000_entries(void)
{
    char *text = synthetic_catalog(1000);
    char *path = write_catalog("synthetic.yaml", text);
    free(text);
    struct plug p;
    struct pb_error err;
    struct cred k;
    char buf[256];
    log_clear();
    double t0 = mono_s();
    int rc = plug_entry(&p, path, "p0998", NULL, &err);
    double dt = mono_s() - t0;
    fprintf(stderr, "\n  1,000-entry catalog read and entry p0998 enabled in %.1f ms\n",
            dt * 1000.0);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    cred_init(&k, "oauth2", "{\"subdomain\": {\"value\": \"acme\"}}");
    CU_ASSERT_EQUAL(base(&p, &k, buf, sizeof buf, &err), 0);
    CHECK_STR(buf, "https://acme.api998.example.com");
    cred_done(&k);
    plug_close(&p);
    /* 20 OAUTH1 entries: ten named, the rest counted. */
    CU_ASSERT_EQUAL(log_count("uses auth_mode OAUTH1, which plugboard does not support"), 10);
    CU_ASSERT_EQUAL(log_count("10 more entries use auth modes plugboard does not support"), 1);
    CHECK_HAS(logbuf, "entry 'p0007' uses auth_mode OAUTH1");

    /* An alias at the end of the file, and the last entry. */
    t0 = mono_s();
    rc = plug_entry(&p, path, "p0999", NULL, &err);
    dt = mono_s() - t0;
    fprintf(stderr, "  ... alias p0999 enabled in %.1f ms\n", dt * 1000.0);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    cred_init(&k, "basic", NULL);
    CU_ASSERT_EQUAL(base(&p, &k, buf, sizeof buf, &err), 0);
    CHECK_STR(buf, "https://api998.example.com");
    cred_done(&k);
    plug_close(&p);

    rc = plug_entry(&p, path, "p0057", NULL, &err);
    CU_ASSERT_EQUAL(rc, PB_ECONFIG);
    CU_ASSERT(strncmp(err.message, "catalog ", 8) == 0);
    CHECK_HAS(err.message, "entry 'p0057' uses auth_mode OAUTH1, which plugboard does not support");
    plug_close(&p);
    free(path);
}

/* ---- errors ---------------------------------------------------------------------- */

static void test_unsupported_modes(void)
{
    char *path = write_catalog("unsupported.yaml",
                               "twitter:\n  auth_mode: OAUTH1\n  proxy: {base_url: https://api.twitter.com}\n"
                               "shopify-app:\n  auth_mode: APP\n"
                               "weird:\n  auth_mode: KERBEROS\n"
                               "nomode:\n  proxy: {base_url: https://x.example.com}\n"
                               "fine:\n  auth_mode: API_KEY\n  proxy: {base_url: https://api.fine.io}\n");
    struct plug p;
    struct pb_error err;
    char want[1400];
    log_clear();
    ENTRY(p, path, "fine", NULL);
    plug_close(&p);
    snprintf(want, sizeof want,
             "catalog %s: entry 'twitter' uses auth_mode OAUTH1, which plugboard does not "
             "support; it is loaded as unsupported and cannot be enabled",
             path);
    CHECK_HAS(logbuf, want);
    CHECK_HAS(logbuf, "entry 'shopify-app' uses auth_mode APP");
    CHECK_HAS(logbuf, "entry 'weird' uses auth_mode KERBEROS");
    CHECK_HAS(logbuf, "entry 'nomode' has no auth_mode");
    CU_ASSERT_EQUAL(log_count("cannot be enabled"), 4);
    CHECK_HAS(logbuf, "2 fine: "); /* warnings, under the provider's name */

    CU_ASSERT_EQUAL(plug_entry(&p, path, "twitter", NULL, &err), PB_ECONFIG);
    snprintf(want, sizeof want,
             "catalog %s: entry 'twitter' uses auth_mode OAUTH1, which plugboard does not support "
             "(supported: API_KEY, BASIC, OAUTH2, OAUTH2_CC, NONE)",
             path);
    CHECK_STR(err.message, want);
    CU_ASSERT_PTR_NULL(p.st);
    plug_close(&p);
    CU_ASSERT_EQUAL(plug_entry(&p, path, "shopify-app", NULL, &err), PB_ECONFIG);
    CHECK_HAS(err.message, "entry 'shopify-app' uses auth_mode APP, which plugboard does not support");
    plug_close(&p);
    CU_ASSERT_EQUAL(plug_entry(&p, path, "nomode", NULL, &err), PB_ECONFIG);
    CHECK_HAS(err.message, "entry 'nomode': auth_mode is missing");
    plug_close(&p);
    free(path);
}

struct bad_case {
    const char *yaml, *entry, *extra, *want;
};

static void test_catalog_errors(void)
{
    static const struct bad_case cases[] = {
        {"a:\n  auth_mode: NONE\n  proxy: {base_url: https://a.io}\n", "foo", NULL,
         "entry 'foo' not found"},
        {"a:\n  auth_mode: NONE\n  proxy: {base_url: https://a.io\n", "a", NULL,
         ":4:1: did not find expected ',' or '}' while parsing a flow mapping"},
        {"a: [1, 2\n", "a", NULL, ":2:1: did not find expected ',' or ']'"},
        {"", "a", NULL, "the file is empty"},
        {"- a\n- b\n", "a", NULL, ":1:1: the top level must be a mapping of provider names"},
        {"a: 1\n", "a", NULL, "entry 'a' is not a mapping"},
        {"a:\n  alias: b\nb:\n  alias: c\nc:\n  alias: a\n", "a", NULL,
         "entry 'a' has an alias loop: 'a' -> 'b' -> 'c' -> 'a'"},
        {"a:\n  alias: gone\n", "a", NULL,
         "entry 'a' is an alias of 'gone', which is not in the catalog"},
        {"a:\n  auth_mode: API_KEY\n  proxy:\n    base_url: https://a.io\n    headers:\n"
         "      'bad header': x\n",
         "a", NULL, "entry 'a': 'bad header' is not a valid HTTP header name"},
        {"a:\n  auth_mode: API_KEY\n  proxy:\n    base_url: https://a.io\n    headers:\n"
         "      x-key: ${secretKey}\n",
         "a", NULL, "entry 'a': proxy.headers.x-key: unknown variable ${secretKey}"},
        {"a:\n  auth_mode: API_KEY\n  proxy:\n    base_url: https://a.io\n    query:\n"
         "      k: ${apiKey\n",
         "a", NULL, "entry 'a': proxy.query.k: unterminated '${'"},
        {"a:\n  auth_mode: API_KEY\n  proxy:\n    base_url: https://a.io\n    headers:\n"
         "      authorization: 'Basic base64(${apiKey}:'\n",
         "a", NULL, "unterminated 'base64('"},
        {"a:\n  auth_mode: NONE\n", "a", NULL, "entry 'a' has no proxy.base_url: set base_url"},
        {"a:\n  auth_mode: NONE\n  proxy: {base_url: 'ftp://a.io'}\n", "a", NULL,
         "entry 'a': proxy.base_url must be an http:// or https:// URL without a query"},
        {"a:\n  auth_mode: NONE\n  proxy: {base_url: '${connectionConfig.x} || https://a.io?q=1'}\n",
         "a", NULL, "proxy.base_url must be an http:// or https:// URL without a query"},
        {"a:\n  auth_mode: OAUTH2\n  token_url: https://a.io/token\n  proxy: {base_url: https://a.io}\n",
         "a", NULL, "entry 'a': auth_mode OAUTH2 needs authorization_url"},
        {"a:\n  auth_mode: OAUTH2_CC\n  proxy: {base_url: https://a.io}\n", "a", NULL,
         "entry 'a': auth_mode OAUTH2_CC needs token_url"},
        {"a:\n  auth_mode: BASIC\n  proxy: {base_url: https://a.io}\n", "a",
         "{\"auth_header\": \"X-Key\"}",
         "options auth_header and auth_scheme apply to API_KEY entries"},
        {"a:\n  auth_mode: NONE\n  proxy: {base_url: https://a.io, retry: {error_code: often}}\n",
         "a", NULL, "proxy.retry.error_code must be an HTTP status from 400 to 599"},
        {"a:\n  auth_mode: NONE\n  proxy: {base_url: https://a.io, headers: [x]}\n", "a", NULL,
         "entry 'a': proxy.headers must be a mapping"},
        {"a:\n  auth_mode: OAUTH2_CC\n  token_url: https://a.io/t\n  token_request_auth_method: "
         "jwt\n  proxy: {base_url: https://a.io}\n",
         "a", NULL, "token_request_auth_method must be 'basic'"},
        {"a:\n  auth_mode: NONE\n  proxy: {base_url: https://a.io, headers: {x: *nowhere}}\n", "a",
         NULL, ":3:48: unknown anchor '*nowhere'"},
        {"a:\n  auth_mode: NONE\n  proxy: {base_url: https://a.io}\n---\nb: {}\n", "a", NULL,
         "a catalog is a single YAML document"},
        {"a:\n  auth_mode: NONE\n  proxy: {base_url: https://a.io}\n", "a",
         "{\"base_url\": \"https://x.io?q\"}",
         "option base_url must be an http:// or https:// URL without a query"},
        {"a:\n  auth_mode: NONE\n  proxy: {base_url: https://a.io}\n", "a",
         "{\"scopes\": {\"a\": 1}}", "option scopes must be a string or a list of strings"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "bad%zu.yaml", i);
        char *path = write_catalog(name, cases[i].yaml);
        struct plug p;
        struct pb_error err;
        int rc = plug_entry(&p, path, cases[i].entry, cases[i].extra, &err);
        if (rc != PB_ECONFIG || !strstr(err.message, cases[i].want))
            fprintf(stderr, "\n  case %zu: rc %d\n    got:  %s\n    want: ...%s...\n", i, rc,
                    err.message, cases[i].want);
        CU_ASSERT_EQUAL(rc, PB_ECONFIG);
        CU_ASSERT_PTR_NOT_NULL(strstr(err.message, cases[i].want));
        /* Catalog problems name the file. */
        if (!cases[i].extra || strstr(cases[i].want, "option") == NULL)
            CU_ASSERT(strncmp(err.message, "catalog ", 8) == 0 ||
                      strncmp(err.message, "options ", 8) == 0);
        CU_ASSERT_PTR_NULL(p.st);
        plug_close(&p);
        free(path);
    }
}

static void test_catalog_path_resolution(void)
{
    char dir[700], cfgdir[800], cwddir[800], old[4096];
    snprintf(dir, sizeof dir, "%s/paths", pbt_tmpdir());
    snprintf(cfgdir, sizeof cfgdir, "%s/etc", dir);
    snprintf(cwddir, sizeof cwddir, "%s/work", dir);
    CU_ASSERT_EQUAL_FATAL(mkdir(dir, 0700), 0);
    CU_ASSERT_EQUAL_FATAL(mkdir(cfgdir, 0700), 0);
    CU_ASSERT_EQUAL_FATAL(mkdir(cwddir, 0700), 0);
    char a[900], b[900];
    snprintf(a, sizeof a, "%s/cat.yaml", cfgdir);
    snprintf(b, sizeof b, "%s/cat.yaml", cwddir);
    pbt_write_file(a, "beside-config:\n  auth_mode: NONE\n  proxy: {base_url: https://cfg.example.com}\n");
    pbt_write_file(b, "in-cwd:\n  auth_mode: NONE\n  proxy: {base_url: https://cwd.example.com}\n");
    CU_ASSERT_PTR_NOT_NULL_FATAL(getcwd(old, sizeof old));
    struct plug p;
    struct pb_error err;
    struct cred k;
    char buf[128];
    cred_init(&k, "none", NULL);

    /* Not in the working directory: found beside plugboard.yaml. */
    json_t *o = json_pack("{s:s, s:s}", "catalog", "./cat.yaml", "entry", "beside-config");
    CU_ASSERT_EQUAL(plug_init(&p, "x", o, cfgdir, &err), 0);
    CU_ASSERT_EQUAL(base(&p, &k, buf, sizeof buf, &err), 0);
    CHECK_STR(buf, "https://cfg.example.com");
    plug_close(&p);
    json_decref(o);

    /* In the working directory: that one wins. */
    CU_ASSERT_EQUAL_FATAL(chdir(cwddir), 0);
    o = json_pack("{s:s, s:s}", "catalog", "cat.yaml", "entry", "in-cwd");
    CU_ASSERT_EQUAL(plug_init(&p, "x", o, cfgdir, &err), 0);
    CU_ASSERT_EQUAL(base(&p, &k, buf, sizeof buf, &err), 0);
    CHECK_STR(buf, "https://cwd.example.com");
    plug_close(&p);
    json_decref(o);
    /* ... and errors name the file that was read. */
    o = json_pack("{s:s, s:s}", "catalog", "cat.yaml", "entry", "beside-config");
    CU_ASSERT_EQUAL(plug_init(&p, "x", o, cfgdir, &err), PB_ECONFIG);
    CHECK_STR(err.message, "catalog cat.yaml: entry 'beside-config' not found");
    plug_close(&p);
    json_decref(o);
    CU_ASSERT_EQUAL(chdir(old), 0);

    /* Absolute paths are used as they are; `entry` defaults to the name. */
    o = json_pack("{s:s}", "catalog", a);
    CU_ASSERT_EQUAL(plug_init(&p, "beside-config", o, "/nonexistent", &err), 0);
    plug_close(&p);
    CU_ASSERT_EQUAL(plug_init(&p, "other-name", o, "/nonexistent", &err), PB_ECONFIG);
    CHECK_HAS(err.message, "entry 'other-name' not found");
    plug_close(&p);
    json_decref(o);
    cred_done(&k);
}

/* ---- aliases, YAML features ---------------------------------------------------------- */

static void test_alias_resolution(void)
{
    char *path = write_catalog(
        "alias.yaml",
        "base:\n"
        "  auth_mode: API_KEY\n"
        "  docs: https://ignored.example.com\n"
        "  proxy:\n"
        "    base_url: https://api.base.io\n"
        "    headers:\n"
        "      x-key: ${apiKey}\n"
        "      x-version: '1'\n"
        "    retry: {after: x-wait}\n"
        "child:\n"
        "  alias: base\n"
        "  proxy:\n"
        "    base_url: https://eu.api.base.io\n"
        "    headers:\n"
        "      x-version: '2'\n"
        "grandchild:\n"
        "  alias: child\n"
        "  auth_mode: BASIC\n"
        "  proxy:\n"
        "    headers:\n"
        "      x-key: ~\n");
    struct plug p;
    struct pb_error err;
    struct cred k;
    char buf[128];
    int rc;

    /* The alias's fields, then the entry's own; mappings merge key by key. */
    ENTRY(p, path, "child", NULL);
    cred_init(&k, "api_key", NULL);
    k.c.api_key = "K1";
    CU_ASSERT_EQUAL(base(&p, &k, buf, sizeof buf, &err), 0);
    CHECK_STR(buf, "https://eu.api.base.io");
    struct pb_http_request *r = apply(&p, &k, &rc, &err);
    CU_ASSERT_EQUAL(rc, 0);
    CHECK_STR(pb_req_header(r, "x-key"), "K1");
    CHECK_STR(pb_req_header(r, "x-version"), "2");
    CU_ASSERT_PTR_NULL(pb_req_header(r, "Authorization"));
    CU_ASSERT_EQUAL(r->n_headers, 2);
    pb_req_free(r);
    cred_done(&k);
    plug_close(&p);

    /* Two levels; a null value removes an inherited header. */
    ENTRY(p, path, "grandchild", NULL);
    cred_init(&k, "basic", NULL);
    k.c.username = "u";
    k.c.password = "p";
    CU_ASSERT_EQUAL(base(&p, &k, buf, sizeof buf, &err), 0);
    CHECK_STR(buf, "https://eu.api.base.io");
    r = apply(&p, &k, &rc, &err);
    CU_ASSERT_EQUAL(rc, 0);
    CHECK_STR(pb_req_header(r, "Authorization"), "Basic dTpw");
    CHECK_STR(pb_req_header(r, "x-version"), "2");
    CU_ASSERT_PTR_NULL(pb_req_header(r, "x-key"));
    pb_req_free(r);
    cred_done(&k);
    plug_close(&p);
    free(path);

    /* YAML anchors and merge keys, unknown keys ignored, flow style. */
    path = write_catalog("anchors.yaml",
                         "common: &common\n"
                         "  auth_mode: API_KEY\n"
                         "  categories: [a, b]\n"
                         "  proxy: &proxy\n"
                         "    base_url: https://common.example.com\n"
                         "    headers: {x-token: '${apiKey}', x-shared: &shared shared-value}\n"
                         "    verification: {method: GET, endpoints: [/me]}\n"
                         "merged:\n"
                         "  <<: *common\n"
                         "  display_name: Merged\n"
                         "  proxy:\n"
                         "    <<: *proxy\n"
                         "    base_url: https://merged.example.com\n"
                         "    query: {tag: *shared, empty: null}\n"
                         "  future_key: {anything: [1, 2, {deep: true}]}\n");
    ENTRY(p, path, "merged", NULL);
    cred_init(&k, "api_key", NULL);
    k.c.api_key = "K2";
    CU_ASSERT_EQUAL(base(&p, &k, buf, sizeof buf, &err), 0);
    CHECK_STR(buf, "https://merged.example.com");
    r = apply(&p, &k, &rc, &err);
    CU_ASSERT_EQUAL(rc, 0);
    CHECK_STR(pb_req_header(r, "x-token"), "K2");
    CHECK_STR(pb_req_header(r, "x-shared"), "shared-value");
    CHECK_STR(r->query, "tag=shared-value");
    pb_req_free(r);
    cred_done(&k);
    plug_close(&p);
    free(path);
}

/* ---- templates ---------------------------------------------------------------------- */

static void test_base_url_interpolation_and_fallback(void)
{
    char *path = write_catalog(
        "urls.yaml",
        "tenant:\n  auth_mode: NONE\n"
        "  proxy: {base_url: 'https://${connectionConfig.subdomain}.example.com/api/${connectionConfig.version}/'}\n"
        "instance:\n  auth_mode: NONE\n"
        "  proxy: {base_url: '${connectionConfig.instance_url} || https://default.example.com'}\n"
        "chain:\n  auth_mode: NONE\n"
        "  proxy: {base_url: 'https://${connectionConfig.a}.example.com || "
        "https://${connectionConfig.b}.example.org || https://c.example.net'}\n"
        "nofallback:\n  auth_mode: NONE\n"
        "  proxy: {base_url: '${connectionConfig.instance_url} || https://${connectionConfig.host}'}\n");
    struct plug p;
    struct pb_error err;
    struct cred k;
    char buf[256];

    ENTRY(p, path, "tenant", NULL);
    cred_init(&k, "none",
              "{\"subdomain\": {\"value\": \"acme\"}, \"version\": {\"value\": \"v2\"}}");
    CU_ASSERT_EQUAL(base(&p, &k, buf, sizeof buf, &err), 0);
    CHECK_STR(buf, "https://acme.example.com/api/v2");
    cred_done(&k);
    /* Missing: a problem naming the variable, never a URL with a hole. */
    cred_init(&k, "none", "{\"version\": {\"value\": \"v2\"}}");
    CU_ASSERT_EQUAL(base(&p, &k, buf, sizeof buf, &err), PB_EINVAL);
    CHECK_STR(err.message,
              "missing value for ${connectionConfig.subdomain}: the connection's "
              "providerMetadata has no 'subdomain' (set providerMetadata.subdomain.value)");
    CHECK_STR(buf, "");
    cred_done(&k);
    cred_init(&k, "none", "{\"subdomain\": {\"value\": \"\"}, \"version\": {\"value\": \"v2\"}}");
    CU_ASSERT_EQUAL(base(&p, &k, buf, sizeof buf, &err), PB_EINVAL);
    CHECK_HAS(err.message, "${connectionConfig.subdomain}");
    cred_done(&k);
    /* Values may not reshape the URL. */
    const char *evil[] = {"evil.com/x", "a@evil.com", "x?y=1", "x#f", "a b", "a\\b", NULL};
    for (int i = 0; evil[i]; i++) {
        json_t *m = json_pack("{s:{s:s}, s:{s:s}}", "subdomain", "value", evil[i], "version",
                              "value", "v1");
        char *t = json_dumps(m, 0);
        cred_init(&k, "none", t);
        free(t);
        json_decref(m);
        CU_ASSERT_EQUAL(base(&p, &k, buf, sizeof buf, &err), PB_EINVAL);
        CHECK_HAS(err.message, "the value of ${connectionConfig.subdomain} cannot be used in a URL");
        cred_done(&k);
    }
    plug_close(&p);

    ENTRY(p, path, "instance", NULL);
    cred_init(&k, "none", "{\"instance_url\": {\"value\": \"https://acme.my.example.com/\"}}");
    CU_ASSERT_EQUAL(base(&p, &k, buf, sizeof buf, &err), 0);
    CHECK_STR(buf, "https://acme.my.example.com");
    cred_done(&k);
    cred_init(&k, "none", NULL);
    CU_ASSERT_EQUAL(base(&p, &k, buf, sizeof buf, &err), 0);
    CHECK_STR(buf, "https://default.example.com");
    cred_done(&k);
    /* A whole URL may lead, but it must still be one. */
    cred_init(&k, "none", "{\"instance_url\": {\"value\": \"javascript:alert(1)\"}}");
    CU_ASSERT_EQUAL(base(&p, &k, buf, sizeof buf, &err), PB_EINVAL);
    cred_done(&k);
    cred_init(&k, "none", "{\"instance_url\": {\"value\": \"notaurl\"}}");
    CU_ASSERT_EQUAL(base(&p, &k, buf, sizeof buf, &err), PB_EINVAL);
    CHECK_HAS(err.message, "is not an http:// or https:// URL without a query once filled in");
    cred_done(&k);
    plug_close(&p);

    ENTRY(p, path, "chain", NULL);
    cred_init(&k, "none", "{\"b\": {\"value\": \"bee\"}}");
    CU_ASSERT_EQUAL(base(&p, &k, buf, sizeof buf, &err), 0);
    CHECK_STR(buf, "https://bee.example.org");
    cred_done(&k);
    cred_init(&k, "none", NULL);
    CU_ASSERT_EQUAL(base(&p, &k, buf, sizeof buf, &err), 0);
    CHECK_STR(buf, "https://c.example.net");
    cred_done(&k);
    plug_close(&p);

    /* No alternative can be filled: the first one's variable is named. */
    ENTRY(p, path, "nofallback", NULL);
    cred_init(&k, "none", NULL);
    CU_ASSERT_EQUAL(base(&p, &k, buf, sizeof buf, &err), PB_EINVAL);
    CHECK_HAS(err.message, "missing value for ${connectionConfig.instance_url}");
    cred_done(&k);
    /* Too small a buffer is refused, not truncated. */
    cred_init(&k, "none", "{\"host\": {\"value\": \"h.example.com\"}}");
    CU_ASSERT_EQUAL(base(&p, &k, buf, 10, &err), PB_EINVAL);
    CU_ASSERT_EQUAL(base(&p, &k, buf, sizeof buf, &err), 0);
    CHECK_STR(buf, "https://h.example.com");
    cred_done(&k);
    plug_close(&p);
    free(path);
}

static void test_headers_query_base64(void)
{
    char *path = write_catalog(
        "headers.yaml",
        "key-default:\n  auth_mode: API_KEY\n  proxy: {base_url: https://a.io}\n"
        "key-query:\n  auth_mode: API_KEY\n"
        "  proxy: {base_url: https://a.io, query: {api_key: '${apiKey}', v: '2'}}\n"
        "key-b64:\n  auth_mode: API_KEY\n"
        "  proxy:\n    base_url: https://a.io\n    headers:\n"
        "      authorization: 'Basic ${base64(${apiKey}:)}'\n"
        "      x-tenant: '${connectionConfig.tenant}'\n"
        "basic-default:\n  auth_mode: BASIC\n"
        "  proxy: {base_url: https://a.io, headers: {accept: application/json}}\n"
        "basic-explicit:\n  auth_mode: BASIC\n"
        "  proxy: {base_url: https://a.io, headers: {authorization: "
        "'Basic base64(${credentials.username}:${credentials.password})', x-user: "
        "'${credentials.username}'}}\n"
        "oauth:\n  auth_mode: OAUTH2\n  authorization_url: https://a.io/auth\n"
        "  token_url: https://a.io/token\n"
        "  proxy: {base_url: https://a.io, headers: {notion-version: '2022-06-28'}}\n"
        "oauth-query:\n  auth_mode: OAUTH2_CC\n  token_url: https://a.io/token\n"
        "  proxy: {base_url: https://a.io, query: {access_token: '${accessToken}'}}\n"
        "none:\n  auth_mode: NONE\n  proxy: {base_url: https://a.io, query: {client: pb}}\n");
    struct plug p;
    struct pb_error err;
    struct cred k;
    int rc;
    struct pb_http_request *r;

    /* API_KEY without headers of its own: Authorization: Bearer. */
    ENTRY(p, path, "key-default", NULL);
    cred_init(&k, "api_key", NULL);
    k.c.api_key = "SG.abc";
    r = apply(&p, &k, &rc, &err);
    CU_ASSERT_EQUAL(rc, 0);
    CHECK_STR(pb_req_header(r, "Authorization"), "Bearer SG.abc");
    CU_ASSERT_EQUAL(r->n_headers, 1);
    pb_req_free(r);
    k.c.api_key = NULL;
    r = apply(&p, &k, &rc, &err);
    CU_ASSERT_EQUAL(rc, PB_EAUTH);
    CHECK_HAS(err.message, "missing value for ${apiKey}: the connection has no API key");
    CU_ASSERT_EQUAL(r->n_headers, 0);
    pb_req_free(r);
    /* Header breaking values are refused. */
    k.c.api_key = "a\r\nX-Evil: 1";
    r = apply(&p, &k, &rc, &err);
    CU_ASSERT_EQUAL(rc, PB_EAUTH);
    CU_ASSERT_EQUAL(r->n_headers, 0);
    pb_req_free(r);
    cred_done(&k);
    plug_close(&p);
    /* ... with auth_header / auth_scheme overrides. */
    ENTRY(p, path, "key-default", "{\"auth_header\": \"X-Api-Key\", \"auth_scheme\": \"\"}");
    cred_init(&k, "api_key", NULL);
    k.c.api_key = "raw";
    r = apply(&p, &k, &rc, &err);
    CU_ASSERT_EQUAL(rc, 0);
    CHECK_STR(pb_req_header(r, "X-Api-Key"), "raw");
    CU_ASSERT_PTR_NULL(pb_req_header(r, "Authorization"));
    pb_req_free(r);
    cred_done(&k);
    plug_close(&p);

    /* The key in the query only: no Authorization header. */
    ENTRY(p, path, "key-query", NULL);
    cred_init(&k, "api_key", NULL);
    k.c.api_key = "q k&y";
    r = apply(&p, &k, &rc, &err);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_EQUAL(r->n_headers, 0);
    CHECK_STR(r->query, "api_key=q%20k%26y&v=2");
    pb_req_free(r);
    cred_done(&k);
    plug_close(&p);

    /* ${base64(...)} and connectionConfig in headers. */
    ENTRY(p, path, "key-b64", NULL);
    cred_init(&k, "api_key", "{\"tenant\": {\"value\": \"t-9\"}}");
    k.c.api_key = "KEY";
    r = apply(&p, &k, &rc, &err);
    CU_ASSERT_EQUAL(rc, 0);
    CHECK_STR(pb_req_header(r, "authorization"), "Basic S0VZOg==");
    CHECK_STR(pb_req_header(r, "x-tenant"), "t-9");
    CU_ASSERT_EQUAL(r->n_headers, 2);
    pb_req_free(r);
    cred_done(&k);
    /* A missing value adds nothing and names the variable and header. */
    cred_init(&k, "api_key", NULL);
    k.c.api_key = "KEY";
    r = apply(&p, &k, &rc, &err);
    CU_ASSERT_EQUAL(rc, PB_EAUTH);
    CHECK_STR(err.message,
              "missing value for ${connectionConfig.tenant}: the connection's providerMetadata "
              "has no 'tenant' (set providerMetadata.tenant.value) (proxy.headers.x-tenant of "
              "provider 'key-b64')");
    CU_ASSERT_EQUAL(r->n_headers, 0);
    pb_req_free(r);
    cred_done(&k);
    plug_close(&p);

    /* BASIC: the default header beside the entry's own headers. */
    ENTRY(p, path, "basic-default", NULL);
    cred_init(&k, "basic", NULL);
    k.c.username = "Aladdin";
    k.c.password = "open sesame";
    r = apply(&p, &k, &rc, &err);
    CU_ASSERT_EQUAL(rc, 0);
    CHECK_STR(pb_req_header(r, "Authorization"), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
    CHECK_STR(pb_req_header(r, "accept"), "application/json");
    pb_req_free(r);
    cred_done(&k);
    cred_init(&k, "api_key", NULL);
    r = apply(&p, &k, &rc, &err);
    CU_ASSERT_EQUAL(rc, PB_EAUTH);
    CHECK_HAS(err.message, "connection has no username or password");
    pb_req_free(r);
    cred_done(&k);
    plug_close(&p);

    /* BASIC with its own header: bare base64(...), empty password allowed. */
    ENTRY(p, path, "basic-explicit", NULL);
    cred_init(&k, "basic", NULL);
    k.c.username = "Aladdin";
    k.c.password = "";
    r = apply(&p, &k, &rc, &err);
    CU_ASSERT_EQUAL(rc, 0);
    CHECK_STR(pb_req_header(r, "authorization"), "Basic QWxhZGRpbjo=");
    CHECK_STR(pb_req_header(r, "x-user"), "Aladdin");
    CU_ASSERT_EQUAL(r->n_headers, 2);
    pb_req_free(r);
    k.c.password = NULL;
    r = apply(&p, &k, &rc, &err);
    CU_ASSERT_EQUAL(rc, PB_EAUTH);
    CHECK_HAS(err.message, "missing value for ${credentials.password}: the connection has no password");
    pb_req_free(r);
    cred_done(&k);
    plug_close(&p);

    /* OAuth: Bearer plus the entry's headers; or the token in the query. */
    ENTRY(p, path, "oauth", NULL);
    cred_init(&k, "oauth2", NULL);
    k.c.access_token = "tok";
    r = apply(&p, &k, &rc, &err);
    CU_ASSERT_EQUAL(rc, 0);
    CHECK_STR(pb_req_header(r, "Authorization"), "Bearer tok");
    CHECK_STR(pb_req_header(r, "notion-version"), "2022-06-28");
    pb_req_free(r);
    k.c.access_token = NULL;
    r = apply(&p, &k, &rc, &err);
    CU_ASSERT_EQUAL(rc, PB_EAUTH);
    CHECK_HAS(err.message, "missing value for ${accessToken}");
    pb_req_free(r);
    cred_done(&k);
    plug_close(&p);
    ENTRY(p, path, "oauth-query", NULL);
    cred_init(&k, "oauth2_cc", NULL);
    k.c.access_token = "tok";
    r = apply(&p, &k, &rc, &err);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_EQUAL(r->n_headers, 0);
    CHECK_STR(r->query, "access_token=tok");
    pb_req_free(r);
    cred_done(&k);
    plug_close(&p);

    /* NONE: whatever the connection holds, only the entry's own parts. */
    ENTRY(p, path, "none", NULL);
    cred_init(&k, "api_key", NULL);
    k.c.api_key = "unused";
    r = apply(&p, &k, &rc, &err);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_EQUAL(r->n_headers, 0);
    CHECK_STR(r->query, "client=pb");
    pb_req_free(r);
    cred_done(&k);
    plug_close(&p);
    free(path);
}

/* ---- OAuth requests -------------------------------------------------------------------- */

static void test_token_refresh_requests(void)
{
    char *path = write_catalog(
        "oauth.yaml",
        "code:\n  auth_mode: OAUTH2\n"
        "  authorization_url: https://auth.example.com/${connectionConfig.tenant}/authorize\n"
        "  token_url: https://auth.example.com/${connectionConfig.tenant}/token\n"
        "  token_params: {grant_type: authorization_code, resource: 'https://api.example.com'}\n"
        "  proxy: {base_url: https://api.example.com}\n"
        "code-refresh:\n  alias: code\n"
        "  refresh_url: https://auth.example.com/refresh\n"
        "  refresh_params: {grant_type: refresh_token, extra: yes}\n"
        "basic-json:\n  auth_mode: OAUTH2\n  authorization_url: https://a.io/auth\n"
        "  token_url: https://a.io/token\n  token_request_auth_method: basic\n"
        "  body_format: json\n  proxy: {base_url: https://a.io}\n"
        "cc:\n  auth_mode: OAUTH2_CC\n  token_url: https://a.io/token\n"
        "  scope_separator: ','\n  default_scopes: [read, write]\n"
        "  token_params: {audience: 'https://${connectionConfig.tenant}.a.io'}\n"
        "  proxy: {base_url: https://a.io}\n"
        "cc-grant:\n  auth_mode: OAUTH2_CC\n  token_url: https://zoom.example.com/oauth/token\n"
        "  token_request_auth_method: basic\n"
        "  token_params: {grant_type: account_credentials, account_id: '${connectionConfig.account_id}'}\n"
        "  proxy: {base_url: https://a.io}\n"
        "key:\n  auth_mode: API_KEY\n  proxy: {base_url: https://a.io}\n");
    struct plug p;
    struct pb_error err;
    struct cred k;
    int rc;
    struct pb_http_request *r;

    /* refresh_token grant; token_params without their grant_type. */
    ENTRY(p, path, "code", "{\"client_id\": 12345, \"client_secret\": \"sec\"}");
    cred_init(&k, "oauth2", "{\"tenant\": {\"value\": \"t1\"}}");
    k.c.refresh_token = "rt-1";
    r = refresh_req(&p, &k, &rc, &err);
    CU_ASSERT_EQUAL(rc, 0);
    CHECK_STR(r->method, "POST");
    CHECK_STR(r->url, "https://auth.example.com/t1/token");
    CHECK_STR(pb_req_header(r, "Accept"), "application/json");
    CHECK_STR(body_of(r), "grant_type=refresh_token&refresh_token=rt-1&client_id=12345&"
                          "client_secret=sec&resource=https%3A%2F%2Fapi.example.com");
    CHECK_STR(r->content_type, "application/x-www-form-urlencoded");
    pb_req_free(r);
    /* The connection's own client wins over the configured one. */
    k.c.client_id = "conn-id";
    k.c.client_secret = "conn-secret";
    r = refresh_req(&p, &k, &rc, &err);
    CU_ASSERT_EQUAL(rc, 0);
    CHECK_HAS(body_of(r), "client_id=conn-id&client_secret=conn-secret");
    pb_req_free(r);
    k.c.refresh_token = NULL;
    r = refresh_req(&p, &k, &rc, &err);
    CU_ASSERT_EQUAL(rc, PB_EAUTH);
    CHECK_STR(err.message, "connection has no refresh token");
    pb_req_free(r);
    /* A client-credentials connection of an OAUTH2 entry: the entry's code
     * grant_type does not replace client_credentials. */
    k.c.auth_type = "oauth2_cc";
    r = refresh_req(&p, &k, &rc, &err);
    CU_ASSERT_EQUAL(rc, 0);
    CHECK_STR(body_of(r), "grant_type=client_credentials&client_id=conn-id&"
                          "client_secret=conn-secret&resource=https%3A%2F%2Fapi.example.com");
    pb_req_free(r);
    cred_done(&k);
    /* The token URL needs the tenant: a problem naming it. */
    cred_init(&k, "oauth2", NULL);
    k.c.refresh_token = "rt-1";
    r = refresh_req(&p, &k, &rc, &err);
    CU_ASSERT_EQUAL(rc, PB_EAUTH);
    CHECK_HAS(err.message, "the token URL of provider 'code': missing value for "
                           "${connectionConfig.tenant}");
    pb_req_free(r);
    cred_done(&k);
    plug_close(&p);

    /* refresh_url and refresh_params. */
    ENTRY(p, path, "code-refresh", "{\"client_id\": \"cid\"}");
    cred_init(&k, "oauth2", NULL);
    k.c.refresh_token = "rt-2";
    r = refresh_req(&p, &k, &rc, &err);
    CU_ASSERT_EQUAL(rc, 0);
    CHECK_STR(r->url, "https://auth.example.com/refresh");
    CHECK_STR(body_of(r), "grant_type=refresh_token&refresh_token=rt-2&client_id=cid&extra=yes");
    pb_req_free(r);
    cred_done(&k);
    plug_close(&p);
    /* No client id anywhere: a configuration problem. */
    ENTRY(p, path, "code-refresh", NULL);
    cred_init(&k, "oauth2", NULL);
    k.c.refresh_token = "rt-2";
    r = refresh_req(&p, &k, &rc, &err);
    CU_ASSERT_EQUAL(rc, PB_ECONFIG);
    CHECK_STR(err.field, "client_id");
    pb_req_free(r);
    cred_done(&k);
    plug_close(&p);

    /* Client authentication in a Basic header, JSON body. */
    ENTRY(p, path, "basic-json", "{\"client_id\": \"cid\", \"client_secret\": \"cs\"}");
    cred_init(&k, "oauth2", NULL);
    k.c.refresh_token = "rt-3";
    r = refresh_req(&p, &k, &rc, &err);
    CU_ASSERT_EQUAL(rc, 0);
    CHECK_STR(pb_req_header(r, "Authorization"), "Basic Y2lkOmNz");
    CHECK_STR(body_of(r), "{\"grant_type\":\"refresh_token\",\"refresh_token\":\"rt-3\"}");
    CHECK_STR(r->content_type, "application/json");
    pb_req_free(r);
    cred_done(&k);
    plug_close(&p);

    /* Client credentials: the connection's client, default scopes joined
     * with the entry's separator, token_params filled from the connection. */
    ENTRY(p, path, "cc", "{\"client_id\": \"cfg-id\", \"client_secret\": \"cfg-secret\"}");
    cred_init(&k, "oauth2_cc", "{\"tenant\": {\"value\": \"acme\"}}");
    k.c.client_id = "cc-id";
    k.c.client_secret = "cc-secret";
    r = refresh_req(&p, &k, &rc, &err);
    CU_ASSERT_EQUAL(rc, 0);
    CHECK_STR(r->url, "https://a.io/token");
    CHECK_STR(body_of(r), "grant_type=client_credentials&client_id=cc-id&client_secret=cc-secret&"
                          "scope=read%2Cwrite&audience=https%3A%2F%2Facme.a.io");
    pb_req_free(r);
    /* Scopes the connection was granted are asked for again. */
    k.c.scopes = "admin audit";
    k.c.client_id = NULL;
    k.c.client_secret = NULL;
    r = refresh_req(&p, &k, &rc, &err);
    CU_ASSERT_EQUAL(rc, 0);
    CHECK_STR(body_of(r), "grant_type=client_credentials&client_id=cfg-id&"
                          "client_secret=cfg-secret&scope=admin%2Caudit&"
                          "audience=https%3A%2F%2Facme.a.io");
    pb_req_free(r);
    cred_done(&k);
    plug_close(&p);
    /* Configured scopes beat the defaults; no client at all is refused. */
    ENTRY(p, path, "cc", "{\"scopes\": [\"one\", \"two\"]}");
    cred_init(&k, "oauth2_cc", "{\"tenant\": {\"value\": \"acme\"}}");
    k.c.client_id = "cc-id";
    k.c.client_secret = "cc-secret";
    r = refresh_req(&p, &k, &rc, &err);
    CU_ASSERT_EQUAL(rc, 0);
    CHECK_HAS(body_of(r), "&scope=one%2Ctwo&");
    pb_req_free(r);
    k.c.client_secret = NULL;
    r = refresh_req(&p, &k, &rc, &err);
    CU_ASSERT_EQUAL(rc, PB_ECONFIG);
    CHECK_HAS(err.message, "needs client_id and client_secret for the client-credentials grant");
    pb_req_free(r);
    cred_done(&k);
    plug_close(&p);
    /* token_params may name another grant (Zoom's account credentials). */
    ENTRY(p, path, "cc-grant", NULL);
    cred_init(&k, "oauth2_cc", "{\"account_id\": {\"value\": \"acc-7\"}}");
    k.c.client_id = "z";
    k.c.client_secret = "s";
    r = refresh_req(&p, &k, &rc, &err);
    CU_ASSERT_EQUAL(rc, 0);
    CHECK_STR(pb_req_header(r, "Authorization"), "Basic ejpz");
    CHECK_STR(body_of(r), "grant_type=account_credentials&account_id=acc-7");
    pb_req_free(r);
    cred_done(&k);
    plug_close(&p);

    /* Entries without OAuth, and plain mode without a token_url. */
    ENTRY(p, path, "key", NULL);
    cred_init(&k, "oauth2", NULL);
    k.c.refresh_token = "rt";
    r = refresh_req(&p, &k, &rc, &err);
    CU_ASSERT_EQUAL(rc, PB_EUNSUPPORTED);
    CHECK_STR(err.message,
              "provider 'key' (catalog entry 'key', auth_mode API_KEY) has no token endpoint");
    pb_req_free(r);
    plug_close(&p);
    json_t *o = json_pack("{s:s}", "base_url", "https://plain.example.com");
    CU_ASSERT_EQUAL_FATAL(plug_init(&p, "plain", o, NULL, &err), 0);
    r = refresh_req(&p, &k, &rc, &err);
    CU_ASSERT_EQUAL(rc, PB_EUNSUPPORTED);
    CHECK_HAS(err.message, "provider 'plain' has no token endpoint: configure token_url");
    pb_req_free(r);
    plug_close(&p);
    json_decref(o);
    o = json_pack("{s:s, s:s, s:s}", "base_url", "https://plain.example.com", "token_url",
                  "https://plain.example.com/oauth/token", "client_id", "pc");
    CU_ASSERT_EQUAL_FATAL(plug_init(&p, "plain", o, NULL, &err), 0);
    r = refresh_req(&p, &k, &rc, &err);
    CU_ASSERT_EQUAL(rc, 0);
    CHECK_STR(r->url, "https://plain.example.com/oauth/token");
    CHECK_STR(body_of(r), "grant_type=refresh_token&refresh_token=rt&client_id=pc");
    pb_req_free(r);
    plug_close(&p);
    json_decref(o);
    cred_done(&k);
    free(path);
}

static json_t *parse_tok(struct plug *p, int status, const char *body, const char *ctype,
                         int *rc, struct pb_error *err)
{
    struct pb_http_response *r = resp(status, body, ctype);
    json_t *out = NULL;
    pb_error_clear(err);
    *rc = p->vt->parse_token_response(p->st, r, &out, err);
    pb_resp_free(r);
    return out;
}

static int json_is(json_t *got, const char *want_text)
{
    json_t *want = json_loads(want_text, 0, NULL);
    int ok = got && want && json_equal(got, want);
    if (!ok) {
        char *g = got ? json_dumps(got, JSON_SORT_KEYS | JSON_COMPACT) : NULL;
        fprintf(stderr, "\n  JSON mismatch\n    got:  %s\n    want: %s\n", g ? g : "(null)",
                want_text);
        free(g);
    }
    json_decref(want);
    return ok;
}

static void test_parse_token_responses(void)
{
    char *path = write_catalog(
        "tokens.yaml",
        "slack:\n  auth_mode: OAUTH2\n  authorization_url: https://a.io/auth\n"
        "  token_url: https://a.io/token\n"
        "  token_response_metadata: [team.id, bot_user_id, instance_url, missing, port]\n"
        "  proxy: {base_url: https://a.io}\n");
    struct plug p;
    struct pb_error err;
    int rc;
    ENTRY(p, path, "slack", NULL);
    json_t *t = parse_tok(&p, 200,
                          "{\"access_token\":\"xoxb-1\",\"refresh_token\":\"r1\",\"expires_in\":"
                          "\"3600\",\"scope\":\"chat:write,channels:read\",\"team\":{\"id\":"
                          "\"T1\"},\"bot_user_id\":\"U9\",\"instance_url\":\"https://x\","
                          "\"port\":8443}",
                          "application/json", &rc, &err);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT(json_is(t, "{\"access_token\":\"xoxb-1\",\"refresh_token\":\"r1\",\"expires_in\":3600,"
                         "\"scopes\":\"chat:write,channels:read\",\"metadata\":{\"team.id\":\"T1\","
                         "\"bot_user_id\":\"U9\",\"instance_url\":\"https://x\",\"port\":\"8443\"}}"));
    json_decref(t);
    /* Form-encoded answers (GitHub without Accept) and scope arrays. */
    t = parse_tok(&p, 200, "access_token=gho_16&scope=repo%2Cgist&token_type=bearer", "text/plain",
                  &rc, &err);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT(json_is(t, "{\"access_token\":\"gho_16\",\"scopes\":\"repo,gist\"}"));
    json_decref(t);
    t = parse_tok(&p, 200, "{\"access_token\":\"a\",\"expires_in\":60.5,\"scope\":[\"x\",\"y\"]}",
                  "application/json", &rc, &err);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT(json_is(t, "{\"access_token\":\"a\",\"expires_in\":60,\"scopes\":\"x y\"}"));
    json_decref(t);
    /* Refusals and outages. */
    t = parse_tok(&p, 400, "{\"error\":\"invalid_grant\",\"error_description\":\"Token revoked\"}",
                  "application/json", &rc, &err);
    CU_ASSERT_EQUAL(rc, PB_EAUTH);
    CU_ASSERT_PTR_NULL(t);
    CHECK_STR(err.message, "token endpoint of provider 'slack' (HTTP 400): Token revoked");
    t = parse_tok(&p, 200, "{\"ok\":false,\"error\":\"invalid_code\"}", "application/json", &rc,
                  &err);
    CU_ASSERT_EQUAL(rc, PB_EAUTH);
    CHECK_STR(err.message, "token endpoint of provider 'slack' gave no access_token: invalid_code");
    t = parse_tok(&p, 503, "upstream down", "text/plain", &rc, &err);
    CU_ASSERT_EQUAL(rc, PB_EPROVIDER);
    CHECK_STR(err.message, "token endpoint of provider 'slack' answered HTTP 503");
    t = parse_tok(&p, 200, "{}", "application/json", &rc, &err);
    CU_ASSERT_EQUAL(rc, PB_EPROVIDER);
    plug_close(&p);
    free(path);
}

static char *query_param(const char *url, const char *name)
{
    const char *q = strchr(url, '?');
    size_t n = strlen(name);
    for (const char *p = q; p; p = strchr(p + 1, '&')) {
        if (strncmp(p + 1, name, n) == 0 && p[1 + n] == '=') {
            const char *v = p + 2 + n, *e = strchr(v, '&');
            size_t len = e ? (size_t)(e - v) : strlen(v);
            int outlen;
            char *d = curl_easy_unescape(NULL, v, (int)len, &outlen);
            char *r = strdup(d);
            curl_free(d);
            return r;
        }
    }
    return NULL;
}

static void test_oauth_connect_urls(void)
{
    char *path = write_catalog(
        "connect.yaml",
        "ms:\n  auth_mode: OAUTH2\n"
        "  authorization_url: 'https://login.example.com/${connectionConfig.tenant}/authorize || "
        "https://login.example.com/common/authorize'\n"
        "  token_url: https://login.example.com/${connectionConfig.tenant}/token || "
        "https://login.example.com/common/token\n"
        "  authorization_params: {prompt: consent, response_type: code id_token, state: evil}\n"
        "  token_params: {grant_type: authorization_code, code: evil, audience: api}\n"
        "  scope_separator: '+'\n  default_scopes: [offline_access, User.Read]\n"
        "  proxy: {base_url: https://graph.example.com}\n"
        "cc:\n  auth_mode: OAUTH2_CC\n  token_url: https://a.io/token\n  proxy: {base_url: https://a.io}\n");
    struct plug p;
    struct pb_error err;
    char url[2048];
    ENTRY(p, path, "ms", "{\"client_id\": \"app-1\", \"client_secret\": \"s3\"}");
    json_t *md = json_loads("{\"tenant\": {\"value\": \"contoso\"}}", 0, NULL);
    struct pb_oauth_params op = {.struct_size = sizeof op,
                                 .redirect_uri = "https://pb.example.com/callbacks/v1/oauth",
                                 .state = "st_123", .scopes = NULL, .metadata = md};
    pb_error_clear(&err);
    CU_ASSERT_EQUAL(p.vt->authorize_url(p.st, &op, url, sizeof url, &err), 0);
    CHECK_STR(url, "https://login.example.com/contoso/authorize?client_id=app-1&redirect_uri="
                   "https%3A%2F%2Fpb.example.com%2Fcallbacks%2Fv1%2Foauth&response_type="
                   "code%20id_token&scope=offline_access%2BUser.Read&prompt=consent&state=st_123");
    /* Scopes asked for at connect time; no tenant: the fallback URL. */
    op.scopes = "Mail.Read Files.Read";
    op.metadata = NULL;
    CU_ASSERT_EQUAL(p.vt->authorize_url(p.st, &op, url, sizeof url, &err), 0);
    CU_ASSERT(strncmp(url, "https://login.example.com/common/authorize?", 42) == 0);
    char *scope = query_param(url, "scope");
    CHECK_STR(scope, "Mail.Read+Files.Read");
    free(scope);
    char *state = query_param(url, "state");
    CHECK_STR(state, "st_123");
    free(state);
    CU_ASSERT_EQUAL(p.vt->authorize_url(p.st, &op, url, 40, &err), PB_EINVAL);
    /* The code exchange. */
    op.metadata = md;
    struct pb_http_request *r = pb_req_new();
    CU_ASSERT_EQUAL(p.vt->build_code_exchange(p.st, &op, "c0de", r, &err), 0);
    CHECK_STR(r->method, "POST");
    CHECK_STR(r->url, "https://login.example.com/contoso/token");
    CHECK_STR(body_of(r), "grant_type=authorization_code&code=c0de&redirect_uri=https%3A%2F%2F"
                          "pb.example.com%2Fcallbacks%2Fv1%2Foauth&client_id=app-1&"
                          "client_secret=s3&audience=api");
    pb_req_free(r);
    plug_close(&p);
    /* No client id: a configuration problem, named. */
    ENTRY(p, path, "ms", NULL);
    CU_ASSERT_EQUAL(p.vt->authorize_url(p.st, &op, url, sizeof url, &err), PB_ECONFIG);
    CHECK_STR(err.message, "provider 'ms' needs client_id for OAuth");
    plug_close(&p);
    /* Client credentials entries have no authorization-code flow. */
    ENTRY(p, path, "cc", "{\"client_id\": \"x\"}");
    CU_ASSERT_EQUAL(p.vt->authorize_url(p.st, &op, url, sizeof url, &err), PB_EUNSUPPORTED);
    CHECK_STR(err.message, "provider 'cc' (catalog entry 'cc', auth_mode OAUTH2_CC) has no OAuth "
                           "authorization-code flow");
    r = pb_req_new();
    CU_ASSERT_EQUAL(p.vt->build_code_exchange(p.st, &op, "c", r, &err), PB_EUNSUPPORTED);
    pb_req_free(r);
    plug_close(&p);
    json_decref(md);
    free(path);
}

/* ---- rate limits ------------------------------------------------------------------------ */

static void test_classify_retry_headers(void)
{
    char *path = write_catalog(
        "retry.yaml",
        "gh:\n  auth_mode: API_KEY\n  proxy:\n    base_url: https://api.github.com\n"
        "    retry:\n      at: [x-ratelimit-reset, x-reset-ms]\n      after: [x-wait, retry-after]\n"
        "      remaining: x-ratelimit-remaining\n      error_code: 403\n"
        "plain:\n  auth_mode: API_KEY\n  proxy: {base_url: https://a.io}\n");
    struct plug p;
    pb_set_clock(fixed_now);
    ENTRY(p, path, "gh", NULL);
    struct pb_http_response *r;
    struct pb_classification c;

    /* after: seconds; the longest wait of several headers wins. */
    r = resp(429, "{}", NULL);
    pb_resp_add_header(r, "X-Wait", "2.5");
    pb_resp_add_header(r, "Retry-After", "1");
    c = classify(&p, r);
    CU_ASSERT_EQUAL(c.rate_limited, 1);
    CU_ASSERT_EQUAL(c.retryable, 1);
    CU_ASSERT_EQUAL(c.retry_at_ms, NOW_MS + 2500);
    pb_resp_free(r);
    /* at: epoch seconds, epoch ms, an HTTP date; after: an HTTP date. */
    r = resp(429, "{}", NULL);
    pb_resp_add_header(r, "x-ratelimit-reset", "1750000060");
    c = classify(&p, r);
    CU_ASSERT_EQUAL(c.retry_at_ms, INT64_C(1750000060000));
    pb_resp_add_header(r, "x-reset-ms", "1750000090500");
    c = classify(&p, r);
    CU_ASSERT_EQUAL(c.retry_at_ms, INT64_C(1750000090500));
    pb_resp_free(r);
    r = resp(429, "{}", NULL);
    pb_resp_add_header(r, "x-ratelimit-reset", "Sun, 15 Jun 2025 15:08:20 GMT");
    c = classify(&p, r);
    CU_ASSERT_EQUAL(c.retry_at_ms, INT64_C(1750000100000));
    pb_resp_add_header(r, "x-wait", "Sun, 15 Jun 2025 15:10:00 GMT");
    c = classify(&p, r);
    CU_ASSERT_EQUAL(c.retry_at_ms, INT64_C(1750000200000));
    pb_resp_free(r);
    /* at: a small number counts down from now. */
    r = resp(429, "{}", NULL);
    pb_resp_add_header(r, "x-ratelimit-reset", "30");
    c = classify(&p, r);
    CU_ASSERT_EQUAL(c.retry_at_ms, NOW_MS + 30000);
    pb_resp_free(r);
    /* error_code 403 with nothing left: rate limited; with calls left: not. */
    r = resp(403, "{\"message\":\"API rate limit exceeded\"}", NULL);
    pb_resp_add_header(r, "x-ratelimit-remaining", "0");
    pb_resp_add_header(r, "x-ratelimit-reset", "1750000030");
    c = classify(&p, r);
    CU_ASSERT_EQUAL(c.rate_limited, 1);
    CU_ASSERT_EQUAL(c.retryable, 1);
    CU_ASSERT_EQUAL(c.retry_at_ms, INT64_C(1750000030000));
    pb_resp_free(r);
    r = resp(403, "{\"message\":\"Resource not accessible\"}", NULL);
    pb_resp_add_header(r, "x-ratelimit-remaining", "4999");
    pb_resp_add_header(r, "x-ratelimit-reset", "1750000030");
    c = classify(&p, r);
    CU_ASSERT_EQUAL(c.rate_limited, 0);
    CU_ASSERT_EQUAL(c.retryable, 0);
    CU_ASSERT_EQUAL(c.retry_at_ms, 0);
    pb_resp_free(r);
    r = resp(403, "{}", NULL);
    c = classify(&p, r);
    CU_ASSERT_EQUAL(c.rate_limited, 1);
    pb_resp_free(r);
    /* Other statuses keep the core's reading; junk and past times add nothing. */
    r = resp(500, "{}", NULL);
    pb_resp_add_header(r, "x-ratelimit-remaining", "0");
    pb_resp_add_header(r, "x-ratelimit-reset", "1750000030");
    c = classify(&p, r);
    CU_ASSERT_EQUAL(c.rate_limited, 0);
    CU_ASSERT_EQUAL(c.retryable, 1);
    CU_ASSERT_EQUAL(c.retry_at_ms, 0);
    pb_resp_free(r);
    r = resp(429, "{}", NULL);
    pb_resp_add_header(r, "x-wait", "soon");
    pb_resp_add_header(r, "x-ratelimit-reset", "1600000000");
    c = classify(&p, r);
    CU_ASSERT_EQUAL(c.rate_limited, 1);
    CU_ASSERT_EQUAL(c.retry_at_ms, 0);
    pb_resp_free(r);
    plug_close(&p);

    /* No retry block: the core's classification stands. */
    ENTRY(p, path, "plain", NULL);
    r = resp(403, "{}", NULL);
    pb_resp_add_header(r, "x-ratelimit-remaining", "0");
    c = classify(&p, r);
    CU_ASSERT_EQUAL(c.rate_limited, 0);
    pb_resp_free(r);
    plug_close(&p);
    pb_set_clock(NULL);
    free(path);
}

/* ==== end to end ========================================================================== */

static struct pb_app *app;
static char pbbase[128];
static struct fake *echo, *hs;
static char key[128], project_id[64];
static struct MHD_Daemon *rl;
static int rl_port;
static atomic_int rl_calls;

/* A tiny upstream that rate-limits with its own headers. */
static enum MHD_Result rl_handler(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    static int first;
    (void)cls;
    (void)method;
    (void)version;
    (void)upload;
    if (*con_cls == NULL) {
        *con_cls = &first;
        return MHD_YES;
    }
    *upload_size = 0;
    atomic_fetch_add(&rl_calls, 1);
    static const char body[] = "{\"error\":\"slow down\"}";
    struct MHD_Response *r =
        MHD_create_response_from_buffer(sizeof body - 1, (void *)body, MHD_RESPMEM_PERSISTENT);
    unsigned status = 200;
    char reset[32];
    if (strncmp(url, "/limited", 8) == 0) {
        /* Two hints: wait 1 s, or the window resets in 3 s; the later wins. */
        status = 429;
        snprintf(reset, sizeof reset, "%lld", (long long)time(NULL) + 3);
        MHD_add_response_header(r, "X-Wait-Seconds", "1");
        MHD_add_response_header(r, "X-RateLimit-Reset", reset);
    } else if (strncmp(url, "/forbidden", 10) == 0) {
        status = 403;
        MHD_add_response_header(r, "X-RateLimit-Remaining", "0");
        MHD_add_response_header(r, "X-Wait-Seconds", "2");
    } else if (strncmp(url, "/denied", 7) == 0) {
        status = 403;
        MHD_add_response_header(r, "X-RateLimit-Remaining", "41");
    }
    MHD_add_response_header(r, "Content-Type", "application/json");
    enum MHD_Result rc = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return rc;
}

static int rl_start(void)
{
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    rl = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL,
                          rl_handler, NULL, MHD_OPTION_SOCK_ADDR, &a, MHD_OPTION_END);
    if (!rl)
        return -1;
    const union MHD_DaemonInfo *i = MHD_get_daemon_info(rl, MHD_DAEMON_INFO_BIND_PORT);
    rl_port = i ? i->port : 0;
    return rl_port ? 0 : -1;
}

/* Installations by integration and group. */
struct inst {
    const char *integration, *group;
    char id[64];
};
static struct inst insts[32];
static size_t n_insts;

static const char *inst_of(const char *integration, const char *group)
{
    for (size_t i = 0; i < n_insts; i++)
        if (strcmp(insts[i].integration, integration) == 0 && strcmp(insts[i].group, group) == 0)
            return insts[i].id;
    return "missing";
}

static int add_connection(const char *integration, const char *group, const char *body_text)
{
    struct pb_problem p = {0};
    json_t *body = json_loads(body_text, 0, NULL), *conn = NULL, *inst = NULL;
    if (!body) {
        fprintf(stderr, "bad connection JSON: %s\n", body_text);
        return -1;
    }
    if (pb_ctl_connection_generate(app, project_id, body, &conn, &p) != 0) {
        fprintf(stderr, "connection %s/%s: %s\n", integration, group, p.detail);
        return -1;
    }
    json_t *ib = json_pack("{s:s, s:O, s:{}}", "groupRef", group, "connectionId",
                           json_object_get(conn, "id"), "config");
    if (pb_ctl_installation_create(app, project_id, integration, ib, &inst, &p) != 0) {
        fprintf(stderr, "installation %s/%s: %s\n", integration, group, p.detail);
        return -1;
    }
    insts[n_insts].integration = integration;
    insts[n_insts].group = group;
    snprintf(insts[n_insts].id, sizeof insts[n_insts].id, "%s",
             json_string_value(json_object_get(inst, "id")));
    n_insts++;
    json_decref(body);
    json_decref(conn);
    json_decref(inst);
    json_decref(ib);
    return 0;
}

static long call(const char *method, const char *path, const char *const *headers,
                 struct pbt_resp *out)
{
    char url[2048];
    snprintf(url, sizeof url, "%s%s", pbbase, path);
    pbt_http(method, url, headers, NULL, out);
    return out->status;
}

/* Ampersand-style proxy call to the installation of integration/group. */
static long amp(const char *integration, const char *group, const char *path, int throttle,
                struct pbt_resp *out)
{
    char k[200], p[200], i[200];
    snprintf(k, sizeof k, "x-api-key: %s", key);
    snprintf(p, sizeof p, "x-amp-project-id: %s", project_id);
    snprintf(i, sizeof i, "x-amp-installation-id: %s", inst_of(integration, group));
    const char *h[] = {"x-amp-proxy-version: 1", k, p, i,
                       throttle ? "X-Amp-Rate-Limiter-Mode: throttle" : NULL, NULL};
    return call("GET", path, h, out);
}

static json_t *echoed(struct pbt_resp *r)
{
    return json_loads(r->body, 0, NULL);
}

static const char *jstr(json_t *j, const char *k)
{
    return json_string_value(json_object_get(j, k));
}

static const char *echoed_header(json_t *j, const char *name)
{
    return json_string_value(json_object_get(json_object_get(j, "headers"), name));
}

static void test_e2e_api_key_headers_and_query(void)
{
    struct pbt_resp r;
    CU_ASSERT_EQUAL(amp("key-int", "customer-1", "/v1/things?x=1", 0, &r), 200);
    json_t *j = echoed(&r);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CHECK_STR(jstr(j, "path"), "/api/v1/things");
    CHECK_STR(jstr(j, "query"), "x=1&api_version=2024-01");
    CHECK_STR(echoed_header(j, "x-api-key"), "k-123");
    CHECK_STR(echoed_header(j, "x-static"), "fixed");
    CU_ASSERT_PTR_NULL(echoed_header(j, "authorization"));
    json_decref(j);
    pbt_resp_free(&r);
    /* The same provider through the Nango-style route. */
    char auth[200];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", key);
    const char *h[] = {auth, "Provider-Config-Key: key-int", "Connection-Id: customer-1", NULL};
    CU_ASSERT_EQUAL(call("GET", "/proxy/v2/items?limit=5", h, &r), 200);
    j = echoed(&r);
    CHECK_STR(jstr(j, "path"), "/api/v2/items");
    CHECK_STR(jstr(j, "query"), "limit=5&api_version=2024-01");
    CHECK_STR(echoed_header(j, "x-api-key"), "k-123");
    json_decref(j);
    pbt_resp_free(&r);
}

static void test_e2e_bearer_basic_base64(void)
{
    struct pbt_resp r;
    CU_ASSERT_EQUAL(amp("bearer-int", "customer-1", "/me", 0, &r), 200);
    json_t *j = echoed(&r);
    CHECK_STR(echoed_header(j, "authorization"), "Bearer bearer-key");
    json_decref(j);
    pbt_resp_free(&r);
    CU_ASSERT_EQUAL(amp("basic-int", "customer-1", "/me", 0, &r), 200);
    j = echoed(&r);
    CHECK_STR(echoed_header(j, "authorization"), "Basic YWRhOnMzY3JldA==");
    json_decref(j);
    pbt_resp_free(&r);
    CU_ASSERT_EQUAL(amp("b64-int", "customer-1", "/me", 0, &r), 200);
    j = echoed(&r);
    CHECK_STR(echoed_header(j, "authorization"), "Basic YjY0LWtleTo=");
    json_decref(j);
    pbt_resp_free(&r);
}

static void test_e2e_interpolated_base_url(void)
{
    struct pbt_resp r;
    CU_ASSERT_EQUAL(amp("tenant-int", "customer-1", "/users?page=2", 0, &r), 200);
    json_t *j = echoed(&r);
    CHECK_STR(jstr(j, "path"), "/t/acme/api/users");
    CHECK_STR(jstr(j, "query"), "page=2");
    CHECK_STR(echoed_header(j, "authorization"), "Bearer tenant-key");
    json_decref(j);
    pbt_resp_free(&r);
    /* `a || b`: the connection's instance URL, else the fallback. */
    CU_ASSERT_EQUAL(amp("instance-int", "customer-1", "/x", 0, &r), 200);
    j = echoed(&r);
    CHECK_STR(jstr(j, "path"), "/inst/x");
    CHECK_STR(jstr(j, "query"), "client=plugboard");
    CU_ASSERT_PTR_NULL(echoed_header(j, "authorization"));
    json_decref(j);
    pbt_resp_free(&r);
    CU_ASSERT_EQUAL(amp("instance-int", "customer-2", "/x", 0, &r), 200);
    j = echoed(&r);
    CHECK_STR(jstr(j, "path"), "/default/x");
    json_decref(j);
    pbt_resp_free(&r);
}

static void test_e2e_missing_connection_config(void)
{
    size_t before = fake_count(echo, NULL, NULL);
    struct pbt_resp r;
    CU_ASSERT_EQUAL(amp("tenant-int", "customer-2", "/users", 0, &r), 424);
    CHECK_HAS(r.headers, "application/problem+json");
    json_t *j = echoed(&r);
    CHECK_HAS(jstr(j, "detail"), "connectionConfig.subdomain");
    CHECK_HAS(jstr(j, "detail"), "provider 'tenant-api'");
    json_decref(j);
    pbt_resp_free(&r);
    CU_ASSERT_EQUAL(fake_count(echo, NULL, NULL), before);
}

static void test_e2e_oauth2_refresh(void)
{
    size_t calls = fake_token_calls(hs);
    struct pbt_resp r;
    CU_ASSERT_EQUAL(amp("oauth-int", "customer-1", "/profile", 0, &r), 200);
    CU_ASSERT_EQUAL(fake_token_calls(hs), calls + 1);
    char *issued = fake_last_issued_token(hs);
    CU_ASSERT_PTR_NOT_NULL_FATAL(issued);
    char want[128];
    snprintf(want, sizeof want, "Bearer %s", issued);
    json_t *j = echoed(&r);
    CHECK_STR(jstr(j, "path"), "/profile");
    CHECK_STR(echoed_header(j, "authorization"), want);
    json_decref(j);
    pbt_resp_free(&r);
    struct fake_req fr;
    CU_ASSERT_EQUAL_FATAL(fake_last(hs, "POST", "/oauth/v1/token", &fr), 0);
    char *gt = fake_req_param(&fr, "grant_type"), *rt = fake_req_param(&fr, "refresh_token"),
         *cid = fake_req_param(&fr, "client_id");
    CHECK_STR(gt, "refresh_token");
    CHECK_STR(rt, "gen-refresh-1");
    CHECK_STR(cid, "gen-client");
    free(gt);
    free(rt);
    free(cid);
    fake_req_free(&fr);
    /* Fresh now: the next call needs no token call. */
    CU_ASSERT_EQUAL(amp("oauth-int", "customer-1", "/profile", 0, &r), 200);
    j = echoed(&r);
    CHECK_STR(echoed_header(j, "authorization"), want);
    json_decref(j);
    pbt_resp_free(&r);
    CU_ASSERT_EQUAL(fake_token_calls(hs), calls + 1);
    free(issued);
}

static void test_e2e_oauth2_connect(void)
{
    struct pb_problem p = {0};
    json_t *body = json_pack("{s:s, s:s, s:[s, s]}", "groupRef", "customer-3", "provider",
                             "oauth-api", "scopes", "contacts", "content");
    char *url = NULL;
    CU_ASSERT_EQUAL_FATAL(pb_ctl_oauth_connect(app, project_id, body, &url, &p), 0);
    json_decref(body);
    char prefix[256];
    snprintf(prefix, sizeof prefix, "%s/oauth/authorize?client_id=gen-client&redirect_uri=",
             fake_base_url(hs));
    CU_ASSERT(strncmp(url, prefix, strlen(prefix)) == 0);
    CHECK_HAS(url, "&response_type=code&scope=contacts%20content&prompt=consent&state=st_");
    char *state = query_param(url, "state");
    free(url);
    fake_add_code(hs, "code-xyz");
    json_t *conn = NULL;
    int rc = pb_ctl_oauth_callback(app, "code-xyz", state, NULL, &conn, &p);
    if (rc != 0)
        fprintf(stderr, "\n  callback: %s\n", p.detail);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    free(state);
    struct fake_req fr;
    CU_ASSERT_EQUAL_FATAL(fake_last(hs, "POST", "/oauth/v1/token", &fr), 0);
    char *gt = fake_req_param(&fr, "grant_type"), *code = fake_req_param(&fr, "code"),
         *ru = fake_req_param(&fr, "redirect_uri");
    CHECK_STR(gt, "authorization_code");
    CHECK_STR(code, "code-xyz");
    CHECK_HAS(ru, "/callbacks/v1/oauth");
    free(gt);
    free(code);
    free(ru);
    fake_req_free(&fr);
    /* The new connection works through the proxy. */
    json_t *ib = json_pack("{s:s, s:O, s:{}}", "groupRef", "customer-3", "connectionId",
                           json_object_get(conn, "id"), "config");
    json_t *inst = NULL;
    CU_ASSERT_EQUAL_FATAL(pb_ctl_installation_create(app, project_id, "oauth-int", ib, &inst, &p),
                          0);
    insts[n_insts].integration = "oauth-int";
    insts[n_insts].group = "customer-3";
    snprintf(insts[n_insts].id, sizeof insts[n_insts].id, "%s",
             json_string_value(json_object_get(inst, "id")));
    n_insts++;
    char *issued = fake_last_issued_token(hs);
    char want[128];
    snprintf(want, sizeof want, "Bearer %s", issued);
    struct pbt_resp r;
    CU_ASSERT_EQUAL(amp("oauth-int", "customer-3", "/me", 0, &r), 200);
    json_t *j = echoed(&r);
    CHECK_STR(echoed_header(j, "authorization"), want);
    json_decref(j);
    pbt_resp_free(&r);
    free(issued);
    json_decref(conn);
    json_decref(ib);
    json_decref(inst);
}

static void test_e2e_oauth2_cc_first_use(void)
{
    struct fake_fault tok = {.status = 200,
                             .body = "{\"access_token\":\"cc-1\",\"expires_in\":3600,"
                                     "\"token_type\":\"Bearer\"}"};
    fake_inject(echo, "POST", "/oauth/token", &tok, 1);
    size_t before = fake_count(echo, "POST", "/oauth/token");
    struct pbt_resp r;
    CU_ASSERT_EQUAL(amp("cc-int", "customer-1", "/reports", 0, &r), 200);
    json_t *j = echoed(&r);
    CHECK_STR(jstr(j, "path"), "/reports");
    CHECK_STR(echoed_header(j, "authorization"), "Bearer cc-1");
    json_decref(j);
    pbt_resp_free(&r);
    CU_ASSERT_EQUAL(fake_count(echo, "POST", "/oauth/token"), before + 1);
    struct fake_req fr;
    CU_ASSERT_EQUAL_FATAL(fake_last(echo, "POST", "/oauth/token", &fr), 0);
    char *gt = fake_req_param(&fr, "grant_type"), *cid = fake_req_param(&fr, "client_id"),
         *cs = fake_req_param(&fr, "client_secret"), *sc = fake_req_param(&fr, "scope"),
         *aud = fake_req_param(&fr, "audience");
    CHECK_STR(gt, "client_credentials");
    CHECK_STR(cid, "cc-client");
    CHECK_STR(cs, "cc-secret");
    CHECK_STR(sc, "read,write");
    CHECK_STR(aud, "https://acme.example.com");
    free(gt);
    free(cid);
    free(cs);
    free(sc);
    free(aud);
    fake_req_free(&fr);
    /* Cached until it expires. */
    CU_ASSERT_EQUAL(amp("cc-int", "customer-1", "/reports", 0, &r), 200);
    j = echoed(&r);
    CHECK_STR(echoed_header(j, "authorization"), "Bearer cc-1");
    json_decref(j);
    pbt_resp_free(&r);
    CU_ASSERT_EQUAL(fake_count(echo, "POST", "/oauth/token"), before + 1);
}

static int64_t header_time_ms(struct pbt_resp *r, const char *name)
{
    char *v = pbt_resp_header(r, name);
    int64_t t = v ? (int64_t)curl_getdate(v, NULL) * 1000 : -1;
    free(v);
    return t;
}

static void test_e2e_throttle_from_retry_headers(void)
{
    struct pbt_resp r;
    /* 403 with calls left is not a rate limit: relayed, nothing blocked. */
    int before = atomic_load(&rl_calls);
    CU_ASSERT_EQUAL(amp("limited-int", "customer-2", "/denied", 1, &r), 403);
    CU_ASSERT_PTR_NULL(strstr(r.headers, "X-Amp-Retry-After"));
    pbt_resp_free(&r);
    CU_ASSERT_EQUAL(amp("limited-int", "customer-2", "/ok", 1, &r), 200);
    pbt_resp_free(&r);
    CU_ASSERT_EQUAL(atomic_load(&rl_calls), before + 2);

    /* 429 with the provider's own headers: the later of the two times. */
    int64_t now = (int64_t)time(NULL) * 1000;
    before = atomic_load(&rl_calls);
    CU_ASSERT_EQUAL(amp("limited-int", "customer-1", "/limited", 1, &r), 429);
    int64_t until = header_time_ms(&r, "X-Amp-Retry-After");
    char *retryable = pbt_resp_header(&r, "X-Amp-Retryable");
    CHECK_STR(retryable, "true");
    free(retryable);
    if (until < now + 2000 || until > now + 5000)
        fprintf(stderr, "\n  X-Amp-Retry-After %lld, now %lld\n", (long long)until,
                (long long)now);
    CU_ASSERT(until >= now + 2000 && until <= now + 5000);
    pbt_resp_free(&r);
    /* Blocked: plugboard answers itself, the provider sees nothing. */
    CU_ASSERT_EQUAL(amp("limited-int", "customer-1", "/ok", 1, &r), 429);
    CU_ASSERT_EQUAL(header_time_ms(&r, "X-Amp-Retry-After"), until);
    pbt_resp_free(&r);
    CU_ASSERT_EQUAL(atomic_load(&rl_calls), before + 1);

    /* 403 + remaining 0 with error_code 403: throttled too. */
    before = atomic_load(&rl_calls);
    CU_ASSERT_EQUAL(amp("limited-int", "customer-2", "/forbidden", 1, &r), 429);
    until = header_time_ms(&r, "X-Amp-Retry-After");
    CU_ASSERT(until >= now + 1000 && until <= now + 4000);
    pbt_resp_free(&r);
    CU_ASSERT_EQUAL(amp("limited-int", "customer-2", "/ok", 1, &r), 429);
    pbt_resp_free(&r);
    CU_ASSERT_EQUAL(atomic_load(&rl_calls), before + 1);
}

static int setup(void)
{
    struct fake_opts hs_opts = {.client_id = "gen-client", .client_secret = "gen-secret"};
    echo = fake_start(FAKE_ECHO, NULL);
    hs = fake_start(FAKE_HUBSPOT, &hs_opts);
    if (!echo || !hs || rl_start() != 0)
        return -1;
    const char *e = fake_base_url(echo), *h = fake_base_url(hs);
    char cat[8192];
    snprintf(cat, sizeof cat,
             "# the e2e catalog: every entry points at the fakes\n"
             "echo-key:\n  auth_mode: API_KEY\n  proxy:\n    base_url: %s/api\n"
             "    headers:\n      x-api-key: ${apiKey}\n      x-static: fixed\n"
             "    query:\n      api_version: '2024-01'\n"
             "echo-bearer:\n  auth_mode: API_KEY\n  proxy: {base_url: '%s'}\n"
             "echo-basic:\n  auth_mode: BASIC\n  proxy: {base_url: '%s'}\n"
             "echo-b64:\n  auth_mode: API_KEY\n  proxy:\n    base_url: %s\n"
             "    headers: {authorization: 'Basic ${base64(${apiKey}:)}'}\n"
             "echo-tenant:\n  auth_mode: API_KEY\n"
             "  proxy: {base_url: 'http://127.0.0.1:%d/t/${connectionConfig.subdomain}/api'}\n"
             "echo-instance:\n  auth_mode: NONE\n"
             "  proxy:\n    base_url: ${connectionConfig.instance_url} || %s/default\n"
             "    query: {client: plugboard}\n"
             "echo-oauth:\n  auth_mode: OAUTH2\n"
             "  authorization_url: %s/oauth/authorize\n  token_url: %s/oauth/v1/token\n"
             "  default_scopes: [contacts]\n  authorization_params: {prompt: consent}\n"
             "  proxy: {base_url: '%s'}\n"
             "echo-cc:\n  auth_mode: OAUTH2_CC\n  token_url: %s/oauth/token\n"
             "  scope_separator: ','\n  default_scopes: [read, write]\n"
             "  token_params: {audience: 'https://${connectionConfig.tenant}.example.com'}\n"
             "  proxy: {base_url: '%s'}\n"
             "limited-int-entry:\n  auth_mode: API_KEY\n"
             "  proxy:\n    base_url: http://127.0.0.1:%d\n    headers: {x-key: '${apiKey}'}\n"
             "    retry:\n      after: x-wait-seconds\n      at: [x-ratelimit-reset]\n"
             "      remaining: x-ratelimit-remaining\n      error_code: 403\n"
             "limited:\n  alias: limited-int-entry\n"
             "unsupported-one:\n  auth_mode: OAUTH1\n",
             e, e, e, e, fake_port(echo), e, h, h, e, e, e, rl_port);
    char *catpath = write_catalog("e2e-catalog.yaml", cat);
    char yaml[4096];
    snprintf(yaml, sizeof yaml,
             "egress:\n  allow_private: true\n"
             "providers:\n"
             "  key-api: {plugin: generic, catalog: '%s', entry: echo-key}\n"
             "  bearer-api: {plugin: generic, catalog: '%s', entry: echo-bearer}\n"
             "  basic-api: {plugin: generic, catalog: '%s', entry: echo-basic}\n"
             "  b64-api: {plugin: generic, catalog: '%s', entry: echo-b64}\n"
             "  tenant-api: {plugin: generic, catalog: '%s', entry: echo-tenant}\n"
             "  instance-api: {plugin: generic, catalog: '%s', entry: echo-instance}\n"
             "  oauth-api: {plugin: generic, catalog: '%s', entry: echo-oauth,\n"
             "              client_id: gen-client, client_secret: gen-secret}\n"
             "  cc-api: {plugin: generic, catalog: '%s', entry: echo-cc}\n"
             "  limited: {plugin: generic, catalog: '%s'}\n",
             catpath, catpath, catpath, catpath, catpath, catpath, catpath, catpath, catpath);
    free(catpath);
    app = pbt_start(yaml, pbbase, sizeof pbbase);
    if (!app)
        return -1;
    struct pb_problem p = {0};
    json_t *out = NULL;
    if (pb_ctl_project_create(app, "generic-test", &out, &p) != 0)
        return -1;
    snprintf(key, sizeof key, "%s", jstr(out, "apiKey"));
    snprintf(project_id, sizeof project_id, "%s", jstr(out, "id"));
    json_decref(out);
    const char *manifest = "specVersion: 1.0.0\n"
                           "integrations:\n"
                           "  - {name: key-int, provider: key-api, proxy: {enabled: true}}\n"
                           "  - {name: bearer-int, provider: bearer-api, proxy: {enabled: true}}\n"
                           "  - {name: basic-int, provider: basic-api, proxy: {enabled: true}}\n"
                           "  - {name: b64-int, provider: b64-api, proxy: {enabled: true}}\n"
                           "  - {name: tenant-int, provider: tenant-api, proxy: {enabled: true}}\n"
                           "  - {name: instance-int, provider: instance-api, proxy: {enabled: true}}\n"
                           "  - {name: oauth-int, provider: oauth-api, proxy: {enabled: true}}\n"
                           "  - {name: cc-int, provider: cc-api, proxy: {enabled: true}}\n"
                           "  - {name: limited-int, provider: limited, proxy: {enabled: true}}\n";
    if (pb_ctl_manifest_apply(app, project_id, manifest, strlen(manifest), "amp.yaml", &out,
                              &p) != 0) {
        fprintf(stderr, "manifest: %s\n", p.detail);
        return -1;
    }
    json_decref(out);
    fake_add_token(hs, NULL, "gen-refresh-1", 0);
    char instance[256];
    snprintf(instance, sizeof instance,
             "{\"groupRef\":\"customer-1\",\"provider\":\"instance-api\",\"providerMetadata\":"
             "{\"instance_url\":{\"value\":\"%s/inst\"}}}",
             e);
    struct {
        const char *integration, *group, *body;
    } conns[] = {
        {"key-int", "customer-1",
         "{\"groupRef\":\"customer-1\",\"provider\":\"key-api\",\"apiKey\":\"k-123\"}"},
        {"bearer-int", "customer-1",
         "{\"groupRef\":\"customer-1\",\"provider\":\"bearer-api\",\"apiKey\":\"bearer-key\"}"},
        {"basic-int", "customer-1",
         "{\"groupRef\":\"customer-1\",\"provider\":\"basic-api\",\"basicAuth\":"
         "{\"username\":\"ada\",\"password\":\"s3cret\"}}"},
        {"b64-int", "customer-1",
         "{\"groupRef\":\"customer-1\",\"provider\":\"b64-api\",\"apiKey\":\"b64-key\"}"},
        {"tenant-int", "customer-1",
         "{\"groupRef\":\"customer-1\",\"provider\":\"tenant-api\",\"apiKey\":\"tenant-key\","
         "\"providerMetadata\":{\"subdomain\":{\"value\":\"acme\"}}}"},
        {"tenant-int", "customer-2",
         "{\"groupRef\":\"customer-2\",\"provider\":\"tenant-api\",\"apiKey\":\"tenant-key\"}"},
        {"instance-int", "customer-1", instance},
        {"instance-int", "customer-2", "{\"groupRef\":\"customer-2\",\"provider\":\"instance-api\"}"},
        {"oauth-int", "customer-1",
         "{\"groupRef\":\"customer-1\",\"provider\":\"oauth-api\",\"oauth2AuthorizationCode\":"
         "{\"accessToken\":{\"token\":\"old-token\",\"expiresAt\":\"2001-01-01T00:00:00Z\"},"
         "\"refreshToken\":{\"token\":\"gen-refresh-1\"}}}"},
        {"cc-int", "customer-1",
         "{\"groupRef\":\"customer-1\",\"provider\":\"cc-api\",\"providerMetadata\":"
         "{\"tenant\":{\"value\":\"acme\"}},\"oauth2ClientCredentials\":"
         "{\"clientId\":\"cc-client\",\"clientSecret\":\"cc-secret\"}}"},
        {"limited-int", "customer-1",
         "{\"groupRef\":\"customer-1\",\"provider\":\"limited\",\"apiKey\":\"l-1\"}"},
        {"limited-int", "customer-2",
         "{\"groupRef\":\"customer-2\",\"provider\":\"limited\",\"apiKey\":\"l-2\"}"},
    };
    for (size_t i = 0; i < sizeof conns / sizeof conns[0]; i++)
        if (add_connection(conns[i].integration, conns[i].group, conns[i].body) != 0)
            return -1;
    return 0;
}

static CU_TestInfo tests[] = {
    {"shipped_catalog_every_entry", test_shipped_catalog_every_entry},
    {"synthetic_1000_entries", test_synthetic_1000_entries},
    {"unsupported_modes", test_unsupported_modes},
    {"catalog_errors", test_catalog_errors},
    {"catalog_path_resolution", test_catalog_path_resolution},
    {"alias_resolution", test_alias_resolution},
    {"base_url_interpolation_and_fallback", test_base_url_interpolation_and_fallback},
    {"headers_query_base64", test_headers_query_base64},
    {"token_refresh_requests", test_token_refresh_requests},
    {"parse_token_responses", test_parse_token_responses},
    {"oauth_connect_urls", test_oauth_connect_urls},
    {"classify_retry_headers", test_classify_retry_headers},
    {"e2e_api_key_headers_and_query", test_e2e_api_key_headers_and_query},
    {"e2e_bearer_basic_base64", test_e2e_bearer_basic_base64},
    {"e2e_interpolated_base_url", test_e2e_interpolated_base_url},
    {"e2e_missing_connection_config", test_e2e_missing_connection_config},
    {"e2e_oauth2_refresh", test_e2e_oauth2_refresh},
    {"e2e_oauth2_connect", test_e2e_oauth2_connect},
    {"e2e_oauth2_cc_first_use", test_e2e_oauth2_cc_first_use},
    {"e2e_throttle_from_retry_headers", test_e2e_throttle_from_retry_headers},
    CU_TEST_INFO_NULL,
};

int main(int argc, char **argv)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (setup() != 0) {
        fprintf(stderr, "test_generic: set-up failed\n");
        return 99;
    }
    int rc = pbt_main(argc, argv, "generic", tests);
    pbt_stop(app);
    fake_stop(echo);
    fake_stop(hs);
    MHD_stop_daemon(rl);
    curl_global_cleanup();
    return rc;
}
