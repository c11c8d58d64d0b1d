/* The in-tree provider plugins, loaded from their built .so files and driven
 * through the ABI with the core's real services, request builders and fake
 * responses: no network. */
#include "http.h"
#include "testutil.h"

#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOW_MS INT64_C(1750000000000)

static int64_t fake_now(void)
{
    return NOW_MS;
}

/* ---- helpers --------------------------------------------------------------- */

struct plug {
    void *dl;
    const struct pb_plugin *vt;
    void *st;
};

static const struct pb_plugin *open_vt(const char *name, void **dl)
{
    char *path = pbt_built_plugin(name);
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

static json_t *J(const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &e);
    if (!j)
        fprintf(stderr, "\nbad test JSON (%s): %s\n", e.text, text);
    return j;
}

/* Loads and initializes `name` with options given as JSON text. Returns the
 * init result; `err` (may be NULL) receives its error. */
static int plug_open(struct plug *p, const char *name, const char *opts, struct pb_error *err)
{
    struct pb_error local;
    if (!err)
        err = &local;
    pb_error_clear(err);
    memset(p, 0, sizeof *p);
    p->vt = open_vt(name, &p->dl);
    if (!p->vt)
        return -100;
    json_t *o = J(opts ? opts : "{}");
    struct pb_plugin_config cfg = {
        .struct_size = sizeof cfg,
        .provider_name = name,
        .config_file = "/etc/plugboard/plugboard.yaml",
        .options = o,
        .config_dir = "/etc/plugboard",
    };
    int rc = p->vt->init(pb_services(), &cfg, &p->st, err);
    /* Options are borrowed for the call only. */
    json_decref(o);
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

#define OPEN(p, name, opts)                                                                      \
    do {                                                                                         \
        int rc_ = plug_open(&(p), name, opts, NULL);                                             \
        CU_ASSERT_EQUAL_FATAL(rc_, 0);                                                           \
    } while (0)

/* Credentials of one auth type; metadata from JSON text (NULL for {}). */
struct cred {
    struct pb_credentials c;
    json_t *meta;
};

static void cred_init(struct cred *k, const char *type, const char *meta)
{
    memset(k, 0, sizeof *k);
    k->meta = J(meta ? meta : "{}");
    k->c.struct_size = sizeof k->c;
    k->c.auth_type = type;
    k->c.metadata = k->meta;
}

static void cred_done(struct cred *k)
{
    json_decref(k->meta);
}

/* Ends resp()'s header list: a typed null pointer, as va_arg reads it. */
#define END ((const char *)NULL)

/* A response with a body and END-terminated header name/value pairs. */
static struct pb_http_response *resp(int status, const char *body, ...)
{
    struct pb_http_response *r = pb_resp_new(status);
    if (body)
        pb_resp_set_body(r, body, strlen(body));
    va_list ap;
    va_start(ap, body);
    const char *n;
    while ((n = va_arg(ap, const char *)) != NULL) {
        const char *v = va_arg(ap, const char *);
        pb_resp_add_header(r, n, v);
    }
    va_end(ap);
    return r;
}

static int json_matches(const json_t *got, const char *want_text)
{
    json_t *want = J(want_text);
    int ok = want && got && json_equal((json_t *)got, want);
    if (!ok) {
        char *g = got ? json_dumps(got, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY) : NULL;
        char *w = want ? json_dumps(want, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY) : NULL;
        fprintf(stderr, "\n  JSON mismatch\n    got:  %s\n    want: %s\n", g ? g : "(null)",
                w ? w : "(null)");
        free(g);
        free(w);
    }
    json_decref(want);
    return ok;
}

#define CHECK_JSON(got, want) CU_ASSERT(json_matches((got), (want)))

static int str_matches(const char *got, const char *want)
{
    int ok = got && want && strcmp(got, want) == 0;
    if (!ok)
        fprintf(stderr, "\n  string mismatch\n    got:  %s\n    want: %s\n",
                got ? got : "(null)", want ? want : "(null)");
    return ok;
}

#define CHECK_STR(got, want) CU_ASSERT(str_matches((got), (want)))

static int url_matches(const struct pb_http_request *r, const char *base, const char *want)
{
    char *u = pb_req_full_url(r, base);
    int ok = str_matches(u, want);
    free(u);
    return ok;
}

#define CHECK_URL(req, base, want) CU_ASSERT(url_matches((req), (base), (want)))

static int form_matches(struct pb_http_request *r, const char *want)
{
    size_t len;
    const char *b = pb_req_body(r, &len);
    return str_matches(b, want) && str_matches(r->content_type, "application/x-www-form-urlencoded");
}

#define CHECK_FORM(req, want) CU_ASSERT(form_matches((req), (want)))

static struct pb_classification classify(struct plug *p, struct pb_http_response *r,
                                         int retryable, int auth_invalid)
{
    struct pb_classification c = {.struct_size = sizeof c, .retryable = retryable,
                                  .auth_invalid = auth_invalid};
    p->vt->classify(p->st, r, &c);
    return c;
}

/* Runs encode_write (or encode_delete) on a fresh request. */
static int encode(struct plug *p, struct pb_write *w, struct pb_http_request **req,
                  struct pb_error *err)
{
    *req = pb_req_new();
    pb_error_clear(err);
    if (w->type == PB_WRITE_DELETE)
        return p->vt->encode_delete(p->st, w, *req, err);
    return p->vt->encode_write(p->st, w, *req, err);
}

/* decode_write of a status and body; *out is a new reference or NULL. */
static int decode(struct plug *p, const struct pb_write *w, int status, const char *body,
                  json_t **out, struct pb_error *err)
{
    struct pb_http_response *r = resp(status, body, END);
    pb_error_clear(err);
    *out = NULL;
    int rc = p->vt->decode_write(p->st, w, r, out, err);
    pb_resp_free(r);
    return rc;
}

static int decode_batch(struct plug *p, const struct pb_batch *b, int status, const char *body,
                        json_t **out, struct pb_error *err)
{
    struct pb_http_response *r = resp(status, body, END);
    pb_error_clear(err);
    *out = NULL;
    int rc = p->vt->decode_batch(p->st, b, r, out, err);
    pb_resp_free(r);
    return rc;
}

static int parse_token(struct plug *p, int status, const char *body, json_t **out,
                       struct pb_error *err)
{
    struct pb_http_response *r = resp(status, body, "Content-Type", "application/json", END);
    pb_error_clear(err);
    *out = NULL;
    int rc = p->vt->parse_token_response(p->st, r, out, err);
    pb_resp_free(r);
    return rc;
}

static int keys_are(const char *const *keys, const char *const *want)
{
    size_t i = 0;
    for (; keys && keys[i] && want[i]; i++)
        if (strcmp(keys[i], want[i]) != 0)
            return 0;
    return keys && !keys[i] && !want[i];
}

#define HS_BASE "https://api.hubapi.com"
#define SF_BASE "https://acme.my.salesforce.com"
#define SF_META "{\"instance_url\": {\"value\": \"https://acme.my.salesforce.com\"}}"

/* ---- hubspot --------------------------------------------------------------- */

static void test_hubspot_vtable(void)
{
    struct plug p;
    OPEN(p, "hubspot", NULL);
    const struct pb_plugin *vt = p.vt;
    CU_ASSERT_EQUAL(vt->abi_major, PB_PLUGIN_ABI_MAJOR);
    CU_ASSERT_EQUAL(vt->abi_minor, PB_PLUGIN_ABI_MINOR);
    CU_ASSERT_EQUAL(vt->struct_size, sizeof(struct pb_plugin));
    CHECK_STR(vt->name, "hubspot");
    CU_ASSERT_PTR_NOT_NULL(vt->version);
    CU_ASSERT_PTR_NOT_NULL(vt->description);
    const char *keys[] = {"client_id", "client_secret", "scopes", "base_url", "auth_url",
                          "token_url", NULL};
    CU_ASSERT(keys_are(vt->config_keys, keys));
    CU_ASSERT_EQUAL(vt->max_batch_size, 100);
    CU_ASSERT_PTR_NOT_NULL(vt->build_token_refresh);
    CU_ASSERT_PTR_NOT_NULL(vt->parse_token_response);
    CU_ASSERT_PTR_NOT_NULL(vt->authorize_url);
    CU_ASSERT_PTR_NOT_NULL(vt->build_code_exchange);
    CU_ASSERT_PTR_NOT_NULL(vt->encode_write);
    CU_ASSERT_PTR_NOT_NULL(vt->decode_write);
    CU_ASSERT_PTR_NOT_NULL(vt->encode_batch);
    CU_ASSERT_PTR_NOT_NULL(vt->decode_batch);
    CU_ASSERT_PTR_NOT_NULL(vt->encode_delete);
    CU_ASSERT_PTR_NOT_NULL(vt->encode_associations);
    CU_ASSERT_PTR_NULL(vt->header_allowed);
    CU_ASSERT_PTR_NOT_NULL(vt->classify);
    CU_ASSERT_PTR_NOT_NULL(vt->encode_read);
    CU_ASSERT_PTR_NOT_NULL(vt->decode_read);
    CU_ASSERT_PTR_NOT_NULL(vt->encode_read_batch);
    CU_ASSERT_PTR_NOT_NULL(vt->decode_read_batch);
    /* Only the entry point is exported. */
    CU_ASSERT_PTR_NULL(dlsym(p.dl, "hs_init"));
    plug_close(&p);
}

static void test_hubspot_init_options(void)
{
    struct plug p;
    struct pb_error err;
    char buf[256];
    struct cred k;
    cred_init(&k, "oauth2", NULL);

    OPEN(p, "hubspot", NULL);
    CU_ASSERT_EQUAL(p.vt->base_url(p.st, &k.c, buf, sizeof buf, &err), 0);
    CHECK_STR(buf, "https://api.hubapi.com");
    CU_ASSERT_EQUAL(p.vt->base_url(p.st, &k.c, buf, 8, &err), PB_EINVAL);
    plug_close(&p);

    OPEN(p, "hubspot", "{\"base_url\": \"http://127.0.0.1:9999/hs/\", \"scopes\": [\"crm.objects."
                       "contacts.read\", \"oauth\"], \"client_id\": \"cid\"}");
    CU_ASSERT_EQUAL(p.vt->base_url(p.st, &k.c, buf, sizeof buf, &err), 0);
    CHECK_STR(buf, "http://127.0.0.1:9999/hs");
    struct pb_oauth_params op = {.struct_size = sizeof op, .redirect_uri = "https://pb/cb",
                                 .state = "s1"};
    CU_ASSERT_EQUAL(p.vt->authorize_url(p.st, &op, buf, sizeof buf, &err), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "&scope=crm.objects.contacts.read%20oauth&"));
    plug_close(&p);

    CU_ASSERT_EQUAL(plug_open(&p, "hubspot", "{\"client_id\": 42}", &err), PB_ECONFIG);
    CHECK_STR(err.field, "client_id");
    CHECK_STR(err.message, "option client_id must be a string");
    CU_ASSERT_PTR_NULL(p.st);
    plug_close(&p);

    CU_ASSERT_EQUAL(plug_open(&p, "hubspot", "{\"token_url\": \"ftp://x\"}", &err), PB_ECONFIG);
    CHECK_STR(err.field, "token_url");
    CHECK_STR(err.message, "option token_url must be an http:// or https:// URL");
    plug_close(&p);
    cred_done(&k);
}

static void test_hubspot_apply_credentials(void)
{
    struct plug p;
    struct pb_error err;
    struct cred k;
    OPEN(p, "hubspot", NULL);

    cred_init(&k, "oauth2", NULL);
    k.c.access_token = "at-1";
    struct pb_http_request *r = pb_req_new();
    CU_ASSERT_EQUAL(p.vt->apply_credentials(p.st, &k.c, r, &err), 0);
    CHECK_STR(pb_req_header(r, "Authorization"), "Bearer at-1");
    CU_ASSERT_EQUAL(r->n_headers, 1);
    pb_req_free(r);
    cred_done(&k);

    cred_init(&k, "api_key", NULL);
    k.c.api_key = "pat-na1-123";
    r = pb_req_new();
    CU_ASSERT_EQUAL(p.vt->apply_credentials(p.st, &k.c, r, &err), 0);
    CHECK_STR(pb_req_header(r, "Authorization"), "Bearer pat-na1-123");
    pb_req_free(r);
    cred_done(&k);

    cred_init(&k, "oauth2", NULL);
    r = pb_req_new();
    pb_error_clear(&err);
    CU_ASSERT_EQUAL(p.vt->apply_credentials(p.st, &k.c, r, &err), PB_EAUTH);
    CHECK_STR(err.message, "connection has no access token");
    CU_ASSERT_EQUAL(r->n_headers, 0);
    pb_req_free(r);
    cred_done(&k);

    cred_init(&k, "basic", NULL);
    k.c.username = "u";
    k.c.password = "p";
    r = pb_req_new();
    CU_ASSERT_EQUAL(p.vt->apply_credentials(p.st, &k.c, r, &err), PB_EAUTH);
    CHECK_STR(err.message, "hubspot needs an oauth2 or api_key connection, not 'basic'");
    pb_req_free(r);
    cred_done(&k);
    plug_close(&p);
}

static void test_hubspot_token_refresh(void)
{
    struct plug p;
    struct pb_error err;
    struct cred k;
    OPEN(p, "hubspot", "{\"client_id\": \"cid\", \"client_secret\": \"c s&\"}");

    cred_init(&k, "oauth2", NULL);
    k.c.access_token = "old";
    k.c.refresh_token = "rt/1";
    struct pb_http_request *r = pb_req_new();
    CU_ASSERT_EQUAL(p.vt->build_token_refresh(p.st, &k.c, r, &err), 0);
    CHECK_STR(r->method, "POST");
    CHECK_URL(r, HS_BASE, "https://api.hubapi.com/oauth/v1/token");
    CHECK_STR(pb_req_header(r, "Accept"), "application/json");
    CU_ASSERT_PTR_NULL(pb_req_header(r, "Authorization"));
    CHECK_FORM(r, "grant_type=refresh_token&client_id=cid&client_secret=c%20s%26&refresh_token=rt%2F1");
    pb_req_free(r);

    /* Connection-level client credentials win over the provider's. */
    k.c.client_id = "conn-id";
    k.c.client_secret = "conn-secret";
    r = pb_req_new();
    CU_ASSERT_EQUAL(p.vt->build_token_refresh(p.st, &k.c, r, &err), 0);
    CHECK_FORM(r, "grant_type=refresh_token&client_id=conn-id&client_secret=conn-secret&"
                  "refresh_token=rt%2F1");
    pb_req_free(r);

    k.c.refresh_token = NULL;
    r = pb_req_new();
    CU_ASSERT_EQUAL(p.vt->build_token_refresh(p.st, &k.c, r, &err), PB_EAUTH);
    CHECK_STR(err.message, "connection has no refresh token");
    pb_req_free(r);

    k.c.auth_type = "oauth2_cc";
    r = pb_req_new();
    CU_ASSERT_EQUAL(p.vt->build_token_refresh(p.st, &k.c, r, &err), PB_EUNSUPPORTED);
    pb_req_free(r);
    cred_done(&k);
    plug_close(&p);

    /* No client secret anywhere: a configuration problem. */
    OPEN(p, "hubspot", "{\"client_id\": \"cid\", \"token_url\": \"https://t.example/tok\"}");
    cred_init(&k, "oauth2", NULL);
    k.c.refresh_token = "rt";
    r = pb_req_new();
    CU_ASSERT_EQUAL(p.vt->build_token_refresh(p.st, &k.c, r, &err), PB_ECONFIG);
    CHECK_STR(err.field, "client_secret");
    CHECK_STR(err.message, "provider 'hubspot' needs client_id and client_secret for OAuth");
    pb_req_free(r);
    k.c.client_secret = "s";
    r = pb_req_new();
    CU_ASSERT_EQUAL(p.vt->build_token_refresh(p.st, &k.c, r, &err), 0);
    CHECK_URL(r, HS_BASE, "https://t.example/tok");
    pb_req_free(r);
    cred_done(&k);
    plug_close(&p);
}

static void test_hubspot_parse_token(void)
{
    struct plug p;
    struct pb_error err;
    json_t *out;
    OPEN(p, "hubspot", NULL);

    CU_ASSERT_EQUAL(parse_token(&p, 200,
                                "{\"token_type\":\"bearer\",\"refresh_token\":\"r2\","
                                "\"access_token\":\"a2\",\"expires_in\":1800}",
                                &out, &err),
                    0);
    CHECK_JSON(out, "{\"access_token\":\"a2\",\"refresh_token\":\"r2\",\"expires_in\":1800}");
    json_decref(out);

    CU_ASSERT_EQUAL(parse_token(&p, 200, "{\"access_token\":\"a3\",\"expires_in\":\"60\"}", &out,
                                &err),
                    0);
    CHECK_JSON(out, "{\"access_token\":\"a3\",\"expires_in\":60}");
    json_decref(out);

    CU_ASSERT_EQUAL(parse_token(&p, 400,
                                "{\"status\":\"BAD_REFRESH_TOKEN\",\"message\":\"missing or "
                                "unknown refresh token\",\"correlationId\":\"c1\"}",
                                &out, &err),
                    PB_EAUTH);
    CU_ASSERT_PTR_NULL(out);
    CU_ASSERT_EQUAL(err.code, PB_EAUTH);
    CHECK_STR(err.message, "hubspot token endpoint (HTTP 400, BAD_REFRESH_TOKEN): missing or "
                           "unknown refresh token");

    CU_ASSERT_EQUAL(parse_token(&p, 400, "{\"status\":\"error\",\"message\":\"bad client\"}",
                                &out, &err),
                    PB_EAUTH);
    CHECK_STR(err.message, "hubspot token endpoint (HTTP 400): bad client");

    CU_ASSERT_EQUAL(parse_token(&p, 503, "upstream down", &out, &err), PB_EPROVIDER);
    CHECK_STR(err.message, "hubspot token endpoint answered HTTP 503");

    CU_ASSERT_EQUAL(parse_token(&p, 200, "{\"refresh_token\":\"r\"}", &out, &err), PB_EPROVIDER);
    CHECK_STR(err.message, "hubspot token response has no access_token");
    CU_ASSERT_PTR_NULL(out);
    plug_close(&p);
}

static void test_hubspot_oauth_connect(void)
{
    struct plug p;
    struct pb_error err;
    char buf[512];
    OPEN(p, "hubspot", "{\"client_id\": \"my id\", \"client_secret\": \"sec\", \"scopes\": "
                       "\"crm.objects.contacts.write oauth\"}");
    struct pb_oauth_params op = {.struct_size = sizeof op,
                                 .redirect_uri = "https://pb.example/callbacks/v1/oauth",
                                 .state = "st+1/2"};
    CU_ASSERT_EQUAL(p.vt->authorize_url(p.st, &op, buf, sizeof buf, &err), 0);
    CHECK_STR(buf, "https://app.hubspot.com/oauth/authorize?client_id=my%20id"
                   "&redirect_uri=https%3A%2F%2Fpb.example%2Fcallbacks%2Fv1%2Foauth"
                   "&scope=crm.objects.contacts.write%20oauth&state=st%2B1%2F2");

    /* Scopes asked for at connect replace the configured ones. */
    op.scopes = "crm.objects.deals.read";
    CU_ASSERT_EQUAL(p.vt->authorize_url(p.st, &op, buf, sizeof buf, &err), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "&scope=crm.objects.deals.read&state="));

    pb_error_clear(&err);
    CU_ASSERT_EQUAL(p.vt->authorize_url(p.st, &op, buf, 40, &err), PB_EINVAL);
    CU_ASSERT_EQUAL(err.code, PB_EINVAL);

    struct pb_http_request *r = pb_req_new();
    CU_ASSERT_EQUAL(p.vt->build_code_exchange(p.st, &op, "code 9", r, &err), 0);
    CHECK_STR(r->method, "POST");
    CHECK_URL(r, HS_BASE, "https://api.hubapi.com/oauth/v1/token");
    CHECK_FORM(r, "grant_type=authorization_code&client_id=my%20id&client_secret=sec"
                  "&redirect_uri=https%3A%2F%2Fpb.example%2Fcallbacks%2Fv1%2Foauth&code=code%209");
    pb_req_free(r);
    plug_close(&p);

    OPEN(p, "hubspot", "{\"auth_url\": \"https://app-eu1.hubspot.com/oauth/authorize\"}");
    CU_ASSERT_EQUAL(p.vt->authorize_url(p.st, &op, buf, sizeof buf, &err), PB_ECONFIG);
    CHECK_STR(err.message, "provider 'hubspot' needs client_id for OAuth");
    r = pb_req_new();
    CU_ASSERT_EQUAL(p.vt->build_code_exchange(p.st, &op, "c", r, &err), PB_ECONFIG);
    pb_req_free(r);
    plug_close(&p);
}

static void test_hubspot_encode_write(void)
{
    struct plug p;
    struct pb_error err;
    struct pb_http_request *r;
    OPEN(p, "hubspot", NULL);
    json_t *rec = J("{\"email\":\"a@example.com\",\"firstname\":\"Ann\"}");

    struct pb_write w = {.struct_size = sizeof w, .object = "contacts", .type = PB_WRITE_CREATE,
                         .record = rec};
    CU_ASSERT_EQUAL(encode(&p, &w, &r, &err), 0);
    CHECK_STR(r->method, "POST");
    CHECK_URL(r, HS_BASE, "https://api.hubapi.com/crm/v3/objects/contacts");
    CHECK_JSON(r->json, "{\"properties\":{\"email\":\"a@example.com\",\"firstname\":\"Ann\"}}");
    /* The record is copied, not shared. */
    CU_ASSERT_PTR_NOT_EQUAL(json_object_get(r->json, "properties"), rec);
    size_t len;
    pb_req_body(r, &len);
    CHECK_STR(r->content_type, "application/json");
    pb_req_free(r);

    w.type = PB_WRITE_UPDATE;
    w.record_id = "51";
    w.object = "2-1234";
    CU_ASSERT_EQUAL(encode(&p, &w, &r, &err), 0);
    CHECK_STR(r->method, "PATCH");
    CHECK_URL(r, HS_BASE, "https://api.hubapi.com/crm/v3/objects/2-1234/51");
    CHECK_JSON(r->json, "{\"properties\":{\"email\":\"a@example.com\",\"firstname\":\"Ann\"}}");
    pb_req_free(r);

    /* Path segments are escaped. */
    w.object = "p_my/obj";
    w.record_id = "a b";
    CU_ASSERT_EQUAL(encode(&p, &w, &r, &err), 0);
    CHECK_URL(r, HS_BASE, "https://api.hubapi.com/crm/v3/objects/p_my%2Fobj/a%20b");
    pb_req_free(r);

    w.record_id = NULL;
    CU_ASSERT_EQUAL(encode(&p, &w, &r, &err), PB_EINVAL);
    CHECK_STR(err.field, "record.id");
    pb_req_free(r);

    w.object = "";
    w.type = PB_WRITE_CREATE;
    CU_ASSERT_EQUAL(encode(&p, &w, &r, &err), PB_EINVAL);
    CHECK_STR(err.message, "an object name is required");
    pb_req_free(r);

    w.object = "contacts";
    w.record = NULL;
    CU_ASSERT_EQUAL(encode(&p, &w, &r, &err), 0);
    CHECK_JSON(r->json, "{\"properties\":{}}");
    pb_req_free(r);

    json_decref(rec);
    plug_close(&p);
}

static void test_hubspot_decode_write(void)
{
    struct plug p;
    struct pb_error err;
    json_t *out;
    OPEN(p, "hubspot", NULL);
    struct pb_write w = {.struct_size = sizeof w, .object = "contacts", .type = PB_WRITE_CREATE};

    const char *created = "{\"id\":\"512\",\"properties\":{\"email\":\"a@example.com\"},"
                          "\"createdAt\":\"2024-01-01T00:00:00Z\",\"archived\":false}";
    CU_ASSERT_EQUAL(decode(&p, &w, 201, created, &out, &err), 0);
    CHECK_JSON(out, "{\"success\":true,\"recordId\":\"512\",\"data\":{\"id\":\"512\","
                    "\"properties\":{\"email\":\"a@example.com\"},\"createdAt\":"
                    "\"2024-01-01T00:00:00Z\",\"archived\":false}}");
    json_decref(out);

    CU_ASSERT_EQUAL(decode(&p, &w, 400,
                           "{\"status\":\"error\",\"message\":\"Property values were not valid: "
                           "email\",\"correlationId\":\"x\",\"category\":\"VALIDATION_ERROR\"}",
                           &out, &err),
                    0);
    CHECK_JSON(out, "{\"success\":false,\"errors\":[{\"message\":\"Property values were not "
                    "valid: email\",\"category\":\"VALIDATION_ERROR\"}]}");
    json_decref(out);

    CU_ASSERT_EQUAL(decode(&p, &w, 409,
                           "{\"status\":\"error\",\"message\":\"Contact already exists. Existing "
                           "ID: 7\",\"category\":\"CONFLICT\",\"errors\":[{\"message\":\"dup\","
                           "\"code\":\"CONFLICT\"}]}",
                           &out, &err),
                    0);
    CHECK_JSON(out, "{\"success\":false,\"errors\":[{\"message\":\"Contact already exists. "
                    "Existing ID: 7\",\"category\":\"CONFLICT\",\"details\":[{\"message\":\"dup\","
                    "\"code\":\"CONFLICT\"}]}]}");
    json_decref(out);

    w.type = PB_WRITE_UPDATE;
    w.record_id = "512";
    CU_ASSERT_EQUAL(decode(&p, &w, 200, created, &out, &err), 0);
    CU_ASSERT(json_is_true(json_object_get(out, "success")));
    CHECK_STR(json_string_value(json_object_get(out, "recordId")), "512");
    json_decref(out);

    CU_ASSERT_EQUAL(decode(&p, &w, 404, "", &out, &err), 0);
    CHECK_JSON(out, "{\"success\":false,\"recordId\":\"512\",\"errors\":[{\"message\":\"hubspot "
                    "answered HTTP 404\"}]}");
    json_decref(out);

    CU_ASSERT_EQUAL(decode(&p, &w, 502, "{\"message\":\"bad gateway\"}", &out, &err),
                    PB_EPROVIDER);
    CHECK_STR(err.message, "hubspot answered HTTP 502: bad gateway");
    CU_ASSERT_PTR_NULL(out);

    w.type = PB_WRITE_CREATE;
    w.record_id = NULL;
    CU_ASSERT_EQUAL(decode(&p, &w, 201, "<html>", &out, &err), PB_EPROVIDER);
    CHECK_STR(err.message, "hubspot answered HTTP 201 without the record's id");
    plug_close(&p);
}

static void test_hubspot_delete(void)
{
    struct plug p;
    struct pb_error err;
    struct pb_http_request *r;
    json_t *out;
    OPEN(p, "hubspot", NULL);
    struct pb_write w = {.struct_size = sizeof w, .object = "deals", .type = PB_WRITE_DELETE,
                         .record_id = "77"};
    CU_ASSERT_EQUAL(encode(&p, &w, &r, &err), 0);
    CHECK_STR(r->method, "DELETE");
    CHECK_URL(r, HS_BASE, "https://api.hubapi.com/crm/v3/objects/deals/77");
    CU_ASSERT_PTR_NULL(r->json);
    pb_req_free(r);

    CU_ASSERT_EQUAL(decode(&p, &w, 204, NULL, &out, &err), 0);
    CHECK_JSON(out, "{\"success\":true,\"recordId\":\"77\"}");
    json_decref(out);

    CU_ASSERT_EQUAL(decode(&p, &w, 404,
                           "{\"status\":\"error\",\"message\":\"Object not found\","
                           "\"category\":\"OBJECT_NOT_FOUND\"}",
                           &out, &err),
                    0);
    CHECK_JSON(out, "{\"success\":false,\"recordId\":\"77\",\"errors\":[{\"message\":\"Object "
                    "not found\",\"category\":\"OBJECT_NOT_FOUND\"}]}");
    json_decref(out);

    w.record_id = NULL;
    CU_ASSERT_EQUAL(encode(&p, &w, &r, &err), PB_EINVAL);
    CHECK_STR(err.message, "a delete needs record.id");
    pb_req_free(r);
    plug_close(&p);
}

static void test_hubspot_associations(void)
{
    struct plug p;
    struct pb_error err;
    struct pb_http_request *r;
    OPEN(p, "hubspot", NULL);
    json_t *rec = J("{\"dealname\":\"Big\"}");
    json_t *assoc = J("[{\"to\":{\"id\":\"101\"},\"types\":[{\"associationCategory\":"
                      "\"HUBSPOT_DEFINED\",\"associationTypeId\":3}]},{\"to\":{\"id\":202},"
                      "\"types\":[{\"associationCategory\":\"USER_DEFINED\","
                      "\"associationTypeId\":\"36\"}]}]");
    struct pb_write w = {.struct_size = sizeof w, .object = "deals", .type = PB_WRITE_CREATE,
                         .record = rec, .associations = assoc};
    CU_ASSERT_EQUAL(encode(&p, &w, &r, &err), 0);
    CU_ASSERT_EQUAL(p.vt->encode_associations(p.st, &w, assoc, r, &err), 0);
    CHECK_JSON(r->json,
               "{\"properties\":{\"dealname\":\"Big\"},\"associations\":["
               "{\"to\":{\"id\":\"101\"},\"types\":[{\"associationCategory\":\"HUBSPOT_DEFINED\","
               "\"associationTypeId\":3}]},"
               "{\"to\":{\"id\":\"202\"},\"types\":[{\"associationCategory\":\"USER_DEFINED\","
               "\"associationTypeId\":36}]}]}");
    pb_req_free(r);

    /* Empty: nothing added. */
    json_t *none = json_array();
    CU_ASSERT_EQUAL(encode(&p, &w, &r, &err), 0);
    CU_ASSERT_EQUAL(p.vt->encode_associations(p.st, &w, none, r, &err), 0);
    CHECK_JSON(r->json, "{\"properties\":{\"dealname\":\"Big\"}}");
    pb_req_free(r);
    json_decref(none);

    json_t *bad = J("[{\"to\":{\"id\":\"1\"},\"types\":[{\"associationTypeId\":3}]}]");
    CU_ASSERT_EQUAL(encode(&p, &w, &r, &err), 0);
    CU_ASSERT_EQUAL(p.vt->encode_associations(p.st, &w, bad, r, &err), PB_EINVAL);
    CHECK_STR(err.field, "associations[0].types[0].associationCategory");
    pb_req_free(r);
    json_decref(bad);

    bad = J("[{\"types\":[{\"associationCategory\":\"HUBSPOT_DEFINED\","
            "\"associationTypeId\":3}]}]");
    CU_ASSERT_EQUAL(encode(&p, &w, &r, &err), 0);
    CU_ASSERT_EQUAL(p.vt->encode_associations(p.st, &w, bad, r, &err), PB_EINVAL);
    CHECK_STR(err.message, "associations[0].to.id is required (a record id)");
    pb_req_free(r);
    json_decref(bad);

    /* HubSpot's update endpoint takes no associations. */
    w.type = PB_WRITE_UPDATE;
    w.record_id = "9";
    CU_ASSERT_EQUAL(encode(&p, &w, &r, &err), 0);
    CU_ASSERT_EQUAL(p.vt->encode_associations(p.st, &w, assoc, r, &err), PB_EUNSUPPORTED);
    CHECK_STR(err.message, "hubspot takes associations only when a record is created");
    pb_req_free(r);

    /* On a batch body the associations go to every input. */
    json_t *items = J("[{\"record\":{\"dealname\":\"A\"}},{\"record\":{\"dealname\":\"B\"},"
                      "\"associations\":[{\"to\":{\"id\":\"5\"},\"types\":[{"
                      "\"associationCategory\":\"HUBSPOT_DEFINED\",\"associationTypeId\":3}]}]}]");
    struct pb_batch b = {.struct_size = sizeof b, .object = "deals", .type = PB_WRITE_CREATE,
                         .items = items};
    json_t *one = J("[{\"to\":{\"id\":\"9\"},\"types\":[{\"associationCategory\":"
                    "\"HUBSPOT_DEFINED\",\"associationTypeId\":5}]}]");
    w.type = PB_WRITE_CREATE;
    w.record_id = NULL;
    r = pb_req_new();
    CU_ASSERT_EQUAL(p.vt->encode_batch(p.st, &b, r, &err), 0);
    CU_ASSERT_EQUAL(p.vt->encode_associations(p.st, &w, one, r, &err), 0);
    CHECK_JSON(r->json,
               "{\"inputs\":["
               "{\"properties\":{\"dealname\":\"A\"},\"objectWriteTraceId\":\"0\","
               "\"associations\":[{\"to\":{\"id\":\"9\"},\"types\":[{\"associationCategory\":"
               "\"HUBSPOT_DEFINED\",\"associationTypeId\":5}]}]},"
               "{\"properties\":{\"dealname\":\"B\"},\"objectWriteTraceId\":\"1\","
               "\"associations\":[{\"to\":{\"id\":\"5\"},\"types\":[{\"associationCategory\":"
               "\"HUBSPOT_DEFINED\",\"associationTypeId\":3}]},{\"to\":{\"id\":\"9\"},\"types\":"
               "[{\"associationCategory\":\"HUBSPOT_DEFINED\",\"associationTypeId\":5}]}]}]}");
    pb_req_free(r);

    /* Without a JSON body there is nothing to merge into. */
    r = pb_req_new();
    CU_ASSERT_EQUAL(p.vt->encode_associations(p.st, &w, one, r, &err), PB_EINVAL);
    pb_req_free(r);

    json_decref(one);
    json_decref(items);
    json_decref(assoc);
    json_decref(rec);
    plug_close(&p);
}

static void test_hubspot_encode_batch(void)
{
    struct plug p;
    struct pb_error err;
    struct pb_http_request *r;
    OPEN(p, "hubspot", NULL);
    json_t *items = J("[{\"record\":{\"email\":\"a@x.io\"}},{\"record\":{\"email\":\"b@x.io\"},"
                      "\"associations\":[{\"to\":{\"id\":\"300\"},\"types\":[{"
                      "\"associationCategory\":\"HUBSPOT_DEFINED\",\"associationTypeId\":279}]}]},"
                      "{\"record\":{\"email\":\"c@x.io\"},\"associations\":[]}]");
    struct pb_batch b = {.struct_size = sizeof b, .object = "contacts", .type = PB_WRITE_CREATE,
                         .items = items};
    r = pb_req_new();
    CU_ASSERT_EQUAL(p.vt->encode_batch(p.st, &b, r, &err), 0);
    CHECK_STR(r->method, "POST");
    CHECK_URL(r, HS_BASE, "https://api.hubapi.com/crm/v3/objects/contacts/batch/create");
    CHECK_JSON(r->json,
               "{\"inputs\":["
               "{\"properties\":{\"email\":\"a@x.io\"},\"objectWriteTraceId\":\"0\"},"
               "{\"properties\":{\"email\":\"b@x.io\"},\"objectWriteTraceId\":\"1\","
               "\"associations\":[{\"to\":{\"id\":\"300\"},\"types\":[{\"associationCategory\":"
               "\"HUBSPOT_DEFINED\",\"associationTypeId\":279}]}]},"
               "{\"properties\":{\"email\":\"c@x.io\"},\"objectWriteTraceId\":\"2\"}]}");
    pb_req_free(r);

    b.all_or_none = 1;
    r = pb_req_new();
    CU_ASSERT_EQUAL(p.vt->encode_batch(p.st, &b, r, &err), PB_EUNSUPPORTED);
    CHECK_STR(err.field, "batchPolicy.allOrNone");
    CHECK_STR(err.message, "hubspot cannot write a batch all-or-none");
    CU_ASSERT_PTR_NULL(r->json);
    pb_req_free(r);
    b.all_or_none = 0;
    json_decref(items);

    items = J("[{\"id\":\"101\",\"record\":{\"phone\":\"1\"}},{\"id\":102,\"record\":{}}]");
    b.items = items;
    b.type = PB_WRITE_UPDATE;
    r = pb_req_new();
    CU_ASSERT_EQUAL(p.vt->encode_batch(p.st, &b, r, &err), 0);
    CHECK_STR(r->method, "POST");
    CHECK_URL(r, HS_BASE, "https://api.hubapi.com/crm/v3/objects/contacts/batch/update");
    CHECK_JSON(r->json, "{\"inputs\":[{\"id\":\"101\",\"properties\":{\"phone\":\"1\"}},"
                        "{\"id\":\"102\",\"properties\":{}}]}");
    pb_req_free(r);
    json_decref(items);

    items = J("[{\"id\":\"1\",\"record\":{}},{\"record\":{\"a\":1}}]");
    b.items = items;
    r = pb_req_new();
    CU_ASSERT_EQUAL(p.vt->encode_batch(p.st, &b, r, &err), PB_EINVAL);
    CHECK_STR(err.field, "batch[1].record.id");
    pb_req_free(r);
    json_decref(items);

    items = J("[{\"id\":\"1\",\"record\":{},\"associations\":[{\"to\":{\"id\":\"2\"},\"types\":"
              "[{\"associationCategory\":\"HUBSPOT_DEFINED\",\"associationTypeId\":1}]}]}]");
    b.items = items;
    r = pb_req_new();
    CU_ASSERT_EQUAL(p.vt->encode_batch(p.st, &b, r, &err), PB_EUNSUPPORTED);
    CHECK_STR(err.field, "batch[0].associations");
    pb_req_free(r);
    json_decref(items);

    /* 1..100 records. */
    items = json_array();
    b.items = items;
    b.type = PB_WRITE_CREATE;
    r = pb_req_new();
    CU_ASSERT_EQUAL(p.vt->encode_batch(p.st, &b, r, &err), PB_EINVAL);
    pb_req_free(r);
    for (int i = 0; i < 101; i++)
        json_array_append_new(items, J("{\"record\":{\"n\":1}}"));
    r = pb_req_new();
    CU_ASSERT_EQUAL(p.vt->encode_batch(p.st, &b, r, &err), PB_EINVAL);
    CHECK_STR(err.message, "a hubspot batch holds 1 to 100 records");
    pb_req_free(r);
    json_array_remove(items, 0);
    r = pb_req_new();
    CU_ASSERT_EQUAL(p.vt->encode_batch(p.st, &b, r, &err), 0);
    CU_ASSERT_EQUAL(json_array_size(json_object_get(r->json, "inputs")), 100);
    pb_req_free(r);
    json_decref(items);
    plug_close(&p);
}

static const char *result_id(const json_t *arr, size_t i)
{
    return json_string_value(json_object_get(json_array_get(arr, i), "recordId"));
}

static int result_ok(const json_t *arr, size_t i)
{
    return json_is_true(json_object_get(json_array_get(arr, i), "success"));
}

static void test_hubspot_decode_batch_create(void)
{
    struct plug p;
    struct pb_error err;
    json_t *out;
    OPEN(p, "hubspot", NULL);
    json_t *items = J("[{\"record\":{\"email\":\"a@x.io\"}},{\"record\":{\"email\":\"b@x.io\"}},"
                      "{\"record\":{\"email\":\"c@x.io\"}}]");
    struct pb_batch b = {.struct_size = sizeof b, .object = "contacts", .type = PB_WRITE_CREATE,
                         .items = items};

    /* Tagged results in any order come back in input order. */
    CU_ASSERT_EQUAL(decode_batch(&p, &b, 201,
                                 "{\"status\":\"COMPLETE\",\"results\":["
                                 "{\"id\":\"13\",\"objectWriteTraceId\":\"2\",\"properties\":"
                                 "{\"email\":\"c@x.io\"}},"
                                 "{\"id\":\"11\",\"objectWriteTraceId\":\"0\",\"properties\":"
                                 "{\"email\":\"a@x.io\"}},"
                                 "{\"id\":\"12\",\"objectWriteTraceId\":\"1\",\"properties\":"
                                 "{\"email\":\"b@x.io\"}}]}",
                                 &out, &err),
                    0);
    CHECK_JSON(out, "[{\"success\":true,\"recordId\":\"11\",\"data\":{\"id\":\"11\","
                    "\"objectWriteTraceId\":\"0\",\"properties\":{\"email\":\"a@x.io\"}}},"
                    "{\"success\":true,\"recordId\":\"12\",\"data\":{\"id\":\"12\","
                    "\"objectWriteTraceId\":\"1\",\"properties\":{\"email\":\"b@x.io\"}}},"
                    "{\"success\":true,\"recordId\":\"13\",\"data\":{\"id\":\"13\","
                    "\"objectWriteTraceId\":\"2\",\"properties\":{\"email\":\"c@x.io\"}}}]");
    json_decref(out);

    /* Untagged results: matched by position. */
    CU_ASSERT_EQUAL(decode_batch(&p, &b, 201,
                                 "{\"status\":\"COMPLETE\",\"results\":[{\"id\":\"7\"},"
                                 "{\"id\":\"8\"},{\"id\":\"9\"}]}",
                                 &out, &err),
                    0);
    CU_ASSERT_EQUAL(json_array_size(out), 3);
    CHECK_STR(result_id(out, 0), "7");
    CHECK_STR(result_id(out, 1), "8");
    CHECK_STR(result_id(out, 2), "9");
    json_decref(out);

    /* 207: one record failed, named by its trace id. */
    CU_ASSERT_EQUAL(decode_batch(&p, &b, 207,
                                 "{\"status\":\"COMPLETE\",\"results\":["
                                 "{\"id\":\"23\",\"objectWriteTraceId\":\"2\"},"
                                 "{\"id\":\"21\",\"objectWriteTraceId\":\"0\"}],"
                                 "\"numErrors\":1,\"errors\":[{\"status\":\"error\","
                                 "\"category\":\"VALIDATION_ERROR\",\"message\":\"Property "
                                 "values were not valid\",\"context\":{\"objectWriteTraceId\":"
                                 "[\"1\"]},\"errors\":[{\"message\":\"bad email\",\"code\":"
                                 "\"INVALID_EMAIL\"}]}]}",
                                 &out, &err),
                    0);
    CU_ASSERT_EQUAL(json_array_size(out), 3);
    CU_ASSERT(result_ok(out, 0));
    CHECK_STR(result_id(out, 0), "21");
    CHECK_JSON(json_array_get(out, 1),
               "{\"success\":false,\"errors\":[{\"message\":\"Property values were not valid\","
               "\"category\":\"VALIDATION_ERROR\",\"details\":[{\"message\":\"bad email\","
               "\"code\":\"INVALID_EMAIL\"}]}]}");
    CU_ASSERT(result_ok(out, 2));
    CHECK_STR(result_id(out, 2), "23");
    json_decref(out);

    /* An error HubSpot did not attribute goes to every record left without a result. */
    CU_ASSERT_EQUAL(decode_batch(&p, &b, 207,
                                 "{\"results\":[{\"id\":\"31\",\"objectWriteTraceId\":\"0\"}],"
                                 "\"errors\":[{\"status\":\"error\",\"message\":\"Duplicate\","
                                 "\"category\":\"CONFLICT\"}]}",
                                 &out, &err),
                    0);
    CU_ASSERT(result_ok(out, 0));
    CHECK_JSON(json_array_get(out, 1), "{\"success\":false,\"errors\":[{\"message\":"
                                       "\"Duplicate\",\"category\":\"CONFLICT\"}]}");
    CHECK_JSON(json_array_get(out, 2), "{\"success\":false,\"errors\":[{\"message\":"
                                       "\"Duplicate\",\"category\":\"CONFLICT\"}]}");
    json_decref(out);

    /* The whole batch refused. */
    CU_ASSERT_EQUAL(decode_batch(&p, &b, 400,
                                 "{\"status\":\"error\",\"message\":\"Invalid input JSON\","
                                 "\"category\":\"VALIDATION_ERROR\"}",
                                 &out, &err),
                    0);
    CU_ASSERT_EQUAL(json_array_size(out), 3);
    for (size_t i = 0; i < 3; i++)
        CHECK_JSON(json_array_get(out, i), "{\"success\":false,\"errors\":[{\"message\":"
                                           "\"Invalid input JSON\",\"category\":"
                                           "\"VALIDATION_ERROR\"}]}");
    json_decref(out);

    CU_ASSERT_EQUAL(decode_batch(&p, &b, 500, "oops", &out, &err), PB_EPROVIDER);
    CHECK_STR(err.message, "hubspot answered HTTP 500");
    CU_ASSERT_PTR_NULL(out);
    CU_ASSERT_EQUAL(decode_batch(&p, &b, 201, "not json", &out, &err), PB_EPROVIDER);
    CU_ASSERT_PTR_NULL(out);

    json_decref(items);
    plug_close(&p);
}

static void test_hubspot_decode_batch_update(void)
{
    struct plug p;
    struct pb_error err;
    json_t *out;
    OPEN(p, "hubspot", NULL);
    json_t *items = J("[{\"id\":\"101\",\"record\":{\"a\":\"1\"}},{\"id\":\"102\",\"record\":"
                      "{\"a\":\"2\"}},{\"id\":\"103\",\"record\":{\"a\":\"3\"}}]");
    struct pb_batch b = {.struct_size = sizeof b, .object = "contacts", .type = PB_WRITE_UPDATE,
                         .items = items};

    CU_ASSERT_EQUAL(decode_batch(&p, &b, 207,
                                 "{\"status\":\"COMPLETE\",\"results\":["
                                 "{\"id\":\"103\",\"properties\":{\"a\":\"3\"}},"
                                 "{\"id\":\"101\",\"properties\":{\"a\":\"1\"}}],"
                                 "\"numErrors\":1,\"errors\":[{\"status\":\"error\","
                                 "\"category\":\"OBJECT_NOT_FOUND\",\"message\":\"Object not "
                                 "found.\",\"context\":{\"ids\":[\"102\"]}}]}",
                                 &out, &err),
                    0);
    CHECK_JSON(out, "[{\"success\":true,\"recordId\":\"101\",\"data\":{\"id\":\"101\","
                    "\"properties\":{\"a\":\"1\"}}},"
                    "{\"success\":false,\"recordId\":\"102\",\"errors\":[{\"message\":\"Object "
                    "not found.\",\"category\":\"OBJECT_NOT_FOUND\"}]},"
                    "{\"success\":true,\"recordId\":\"103\",\"data\":{\"id\":\"103\","
                    "\"properties\":{\"a\":\"3\"}}}]");
    json_decref(out);

    /* A record HubSpot said nothing about is not reported as written. */
    CU_ASSERT_EQUAL(decode_batch(&p, &b, 200,
                                 "{\"status\":\"COMPLETE\",\"results\":[{\"id\":\"102\"},"
                                 "{\"id\":\"101\"}]}",
                                 &out, &err),
                    0);
    CU_ASSERT(result_ok(out, 0));
    CU_ASSERT(result_ok(out, 1));
    CHECK_STR(result_id(out, 1), "102");
    CHECK_JSON(json_array_get(out, 2), "{\"success\":false,\"recordId\":\"103\",\"errors\":[{"
                                       "\"message\":\"hubspot returned no result for this "
                                       "record\"}]}");
    json_decref(out);

    CU_ASSERT_EQUAL(decode_batch(&p, &b, 400, "{\"status\":\"error\",\"message\":\"Duplicate "
                                              "IDs found in batch input\"}",
                                 &out, &err),
                    0);
    CHECK_JSON(json_array_get(out, 1), "{\"success\":false,\"recordId\":\"102\",\"errors\":[{"
                                       "\"message\":\"Duplicate IDs found in batch input\"}]}");
    json_decref(out);
    json_decref(items);
    plug_close(&p);
}

static void test_hubspot_classify(void)
{
    struct plug p;
    OPEN(p, "hubspot", NULL);
    pb_set_clock(fake_now);
    const char *limit_body = "{\"status\":\"error\",\"message\":\"You have reached your "
                             "ten_secondly_rolling limit.\",\"errorType\":\"RATE_LIMIT\","
                             "\"policyName\":\"TEN_SECONDLY_ROLLING\"}";

    struct pb_http_response *r =
        resp(429, limit_body, "X-HubSpot-RateLimit-Interval-Milliseconds", "10000",
             "X-HubSpot-RateLimit-Max", "100", "X-HubSpot-RateLimit-Remaining", "0", END);
    struct pb_classification c = classify(&p, r, 1, 0);
    CU_ASSERT_EQUAL(c.rate_limited, 1);
    CU_ASSERT_EQUAL(c.retryable, 1);
    CU_ASSERT_EQUAL(c.retry_at_ms, NOW_MS + 10000);
    CU_ASSERT_EQUAL(c.auth_invalid, 0);
    pb_resp_free(r);

    /* Retry-After wins over the window headers. */
    r = resp(429, limit_body, "Retry-After", "7", "X-HubSpot-RateLimit-Interval-Milliseconds",
             "10000", END);
    c = classify(&p, r, 1, 0);
    CU_ASSERT_EQUAL(c.retry_at_ms, NOW_MS + 7000);
    pb_resp_free(r);

    r = resp(429, NULL, "Retry-After", "Thu, 06 Mar 2025 22:09:49 GMT", END);
    c = classify(&p, r, 1, 0);
    CU_ASSERT_EQUAL(c.retry_at_ms, INT64_C(1741298989000));
    CU_ASSERT_EQUAL(c.rate_limited, 1);
    pb_resp_free(r);

    r = resp(429, NULL, "X-HubSpot-RateLimit-Secondly-Remaining", "0", END);
    c = classify(&p, r, 1, 0);
    CU_ASSERT_EQUAL(c.retry_at_ms, NOW_MS + 1000);
    pb_resp_free(r);

    /* Window not used up (e.g. a daily limit): leave the time to the core. */
    r = resp(429, limit_body, "X-HubSpot-RateLimit-Interval-Milliseconds", "10000",
             "X-HubSpot-RateLimit-Remaining", "40", END);
    c = classify(&p, r, 1, 0);
    CU_ASSERT_EQUAL(c.rate_limited, 1);
    CU_ASSERT_EQUAL(c.retry_at_ms, 0);
    pb_resp_free(r);

    /* A RATE_LIMITS category marks throttling whatever the status. */
    r = resp(403, "{\"status\":\"error\",\"message\":\"limit\",\"category\":\"RATE_LIMITS\"}",
             END);
    c = classify(&p, r, 0, 0);
    CU_ASSERT_EQUAL(c.rate_limited, 1);
    CU_ASSERT_EQUAL(c.retryable, 1);
    pb_resp_free(r);

    r = resp(401, "{\"status\":\"error\",\"message\":\"Authentication credentials not found.\","
                  "\"category\":\"INVALID_AUTHENTICATION\"}",
             END);
    c = classify(&p, r, 0, 0);
    CU_ASSERT_EQUAL(c.auth_invalid, 1);
    CU_ASSERT_EQUAL(c.rate_limited, 0);
    pb_resp_free(r);

    r = resp(400, "{\"status\":\"error\",\"category\":\"VALIDATION_ERROR\"}", END);
    c = classify(&p, r, 0, 0);
    CU_ASSERT_EQUAL(c.retryable, 0);
    CU_ASSERT_EQUAL(c.rate_limited, 0);
    CU_ASSERT_EQUAL(c.auth_invalid, 0);
    CU_ASSERT_EQUAL(c.retry_at_ms, 0);
    pb_resp_free(r);

    pb_set_clock(NULL);
    plug_close(&p);
}

/* ---- salesforce ------------------------------------------------------------ */

static void test_salesforce_vtable(void)
{
    struct plug p;
    OPEN(p, "salesforce", NULL);
    const struct pb_plugin *vt = p.vt;
    CU_ASSERT_EQUAL(vt->abi_major, PB_PLUGIN_ABI_MAJOR);
    CU_ASSERT_EQUAL(vt->struct_size, sizeof(struct pb_plugin));
    CHECK_STR(vt->name, "salesforce");
    const char *keys[] = {"client_id", "client_secret", "login_url", "api_version", "scopes",
                          NULL};
    CU_ASSERT(keys_are(vt->config_keys, keys));
    CU_ASSERT_EQUAL(vt->max_batch_size, 200);
    CU_ASSERT_PTR_NOT_NULL(vt->build_token_refresh);
    CU_ASSERT_PTR_NOT_NULL(vt->parse_token_response);
    CU_ASSERT_PTR_NOT_NULL(vt->authorize_url);
    CU_ASSERT_PTR_NOT_NULL(vt->build_code_exchange);
    CU_ASSERT_PTR_NOT_NULL(vt->encode_write);
    CU_ASSERT_PTR_NOT_NULL(vt->decode_write);
    CU_ASSERT_PTR_NOT_NULL(vt->encode_batch);
    CU_ASSERT_PTR_NOT_NULL(vt->decode_batch);
    CU_ASSERT_PTR_NOT_NULL(vt->encode_delete);
    CU_ASSERT_PTR_NULL(vt->encode_associations);
    CU_ASSERT_PTR_NOT_NULL(vt->header_allowed);
    CU_ASSERT_PTR_NOT_NULL(vt->classify);
    CU_ASSERT_PTR_NOT_NULL(vt->encode_read);
    CU_ASSERT_PTR_NOT_NULL(vt->decode_read);
    CU_ASSERT_PTR_NOT_NULL(vt->encode_read_batch);
    CU_ASSERT_PTR_NOT_NULL(vt->decode_read_batch);
    plug_close(&p);
}

static void test_salesforce_init_options(void)
{
    struct plug p;
    struct pb_error err;
    struct pb_http_request *r;
    OPEN(p, "salesforce", "{\"api_version\": \"61.0\"}");
    struct pb_write w = {.struct_size = sizeof w, .object = "Account", .type = PB_WRITE_DELETE,
                         .record_id = "001"};
    CU_ASSERT_EQUAL(encode(&p, &w, &r, &err), 0);
    CHECK_URL(r, SF_BASE, SF_BASE "/services/data/v61.0/sobjects/Account/001");
    pb_req_free(r);
    plug_close(&p);

    CU_ASSERT_EQUAL(plug_open(&p, "salesforce", "{\"api_version\": \"latest\"}", &err),
                    PB_ECONFIG);
    CHECK_STR(err.field, "api_version");
    CHECK_STR(err.message, "option api_version must look like v60.0, not 'latest'");
    plug_close(&p);

    CU_ASSERT_EQUAL(plug_open(&p, "salesforce", "{\"login_url\": \"login.salesforce.com\"}", &err),
                    PB_ECONFIG);
    CHECK_STR(err.field, "login_url");
    plug_close(&p);

    CU_ASSERT_EQUAL(plug_open(&p, "salesforce", "{\"scopes\": {\"a\": 1}}", &err), PB_ECONFIG);
    CHECK_STR(err.message, "option scopes must be a string");
    plug_close(&p);
}

static void test_salesforce_base_url(void)
{
    struct plug p;
    struct pb_error err;
    struct cred k;
    char buf[256];
    OPEN(p, "salesforce", NULL);

    cred_init(&k, "oauth2", SF_META);
    CU_ASSERT_EQUAL(p.vt->base_url(p.st, &k.c, buf, sizeof buf, &err), 0);
    CHECK_STR(buf, "https://acme.my.salesforce.com");
    CU_ASSERT_EQUAL(p.vt->base_url(p.st, &k.c, buf, 10, &err), PB_EINVAL);
    cred_done(&k);

    /* http:// is kept when that is what was stored (test orgs, proxies). */
    cred_init(&k, "oauth2", "{\"instance_url\": {\"value\": \"http://127.0.0.1:8443/\"}}");
    CU_ASSERT_EQUAL(p.vt->base_url(p.st, &k.c, buf, sizeof buf, &err), 0);
    CHECK_STR(buf, "http://127.0.0.1:8443");
    cred_done(&k);

    cred_init(&k, "oauth2", NULL);
    pb_error_clear(&err);
    CU_ASSERT_EQUAL(p.vt->base_url(p.st, &k.c, buf, sizeof buf, &err), PB_EAUTH);
    CU_ASSERT_EQUAL(err.code, PB_EAUTH);
    CHECK_STR(err.message, "connection has no instance_url");
    cred_done(&k);

    const char *bad[] = {"ftp://acme.my.salesforce.com", "javascript:alert(1)",
                         "https://", "https://acme.my.salesforce.com/x?y=1",
                         "https://acme evil.com"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *m = json_pack("{s:{s:s}}", "instance_url", "value", bad[i]);
        cred_init(&k, "oauth2", NULL);
        k.c.metadata = m;
        CU_ASSERT_EQUAL(p.vt->base_url(p.st, &k.c, buf, sizeof buf, &err), PB_EAUTH);
        CHECK_STR(err.message, "connection's instance_url is not an http:// or https:// URL");
        json_decref(m);
        cred_done(&k);
    }
    plug_close(&p);
}

static void test_salesforce_apply_credentials(void)
{
    struct plug p;
    struct pb_error err;
    struct cred k;
    OPEN(p, "salesforce", NULL);
    cred_init(&k, "oauth2", SF_META);
    k.c.access_token = "00Dxx!AQ4AQ";
    struct pb_http_request *r = pb_req_new();
    CU_ASSERT_EQUAL(p.vt->apply_credentials(p.st, &k.c, r, &err), 0);
    CHECK_STR(pb_req_header(r, "Authorization"), "Bearer 00Dxx!AQ4AQ");
    pb_req_free(r);

    k.c.access_token = NULL;
    r = pb_req_new();
    CU_ASSERT_EQUAL(p.vt->apply_credentials(p.st, &k.c, r, &err), PB_EAUTH);
    CHECK_STR(err.message, "connection has no access token");
    pb_req_free(r);

    k.c.auth_type = "api_key";
    k.c.api_key = "k";
    r = pb_req_new();
    CU_ASSERT_EQUAL(p.vt->apply_credentials(p.st, &k.c, r, &err), PB_EAUTH);
    CHECK_STR(err.message, "salesforce needs an oauth2 connection, not 'api_key'");
    pb_req_free(r);
    cred_done(&k);
    plug_close(&p);
}

static void test_salesforce_token_refresh(void)
{
    struct plug p;
    struct pb_error err;
    struct cred k;
    OPEN(p, "salesforce", "{\"client_id\": \"3MVG9\", \"client_secret\": \"s3cr3t\", "
                          "\"login_url\": \"https://test.salesforce.com/\"}");
    cred_init(&k, "oauth2", SF_META);
    k.c.refresh_token = "5Aep861";
    struct pb_http_request *r = pb_req_new();
    CU_ASSERT_EQUAL(p.vt->build_token_refresh(p.st, &k.c, r, &err), 0);
    CHECK_STR(r->method, "POST");
    CHECK_URL(r, SF_BASE, "https://test.salesforce.com/services/oauth2/token");
    CHECK_FORM(r, "grant_type=refresh_token&client_id=3MVG9&client_secret=s3cr3t"
                  "&refresh_token=5Aep861");
    pb_req_free(r);

    k.c.refresh_token = NULL;
    r = pb_req_new();
    CU_ASSERT_EQUAL(p.vt->build_token_refresh(p.st, &k.c, r, &err), PB_EAUTH);
    CHECK_STR(err.message, "connection has no refresh token");
    pb_req_free(r);

    /* Client credentials go to the org's own host. */
    k.c.auth_type = "oauth2_cc";
    k.c.client_id = "cc-id";
    k.c.client_secret = "cc-secret";
    r = pb_req_new();
    CU_ASSERT_EQUAL(p.vt->build_token_refresh(p.st, &k.c, r, &err), 0);
    CHECK_URL(r, SF_BASE, "https://acme.my.salesforce.com/services/oauth2/token");
    CHECK_FORM(r, "grant_type=client_credentials&client_id=cc-id&client_secret=cc-secret");
    pb_req_free(r);
    cred_done(&k);
    plug_close(&p);

    OPEN(p, "salesforce", NULL);
    cred_init(&k, "oauth2", SF_META);
    k.c.refresh_token = "rt";
    r = pb_req_new();
    CU_ASSERT_EQUAL(p.vt->build_token_refresh(p.st, &k.c, r, &err), PB_ECONFIG);
    CHECK_STR(err.field, "client_id");
    pb_req_free(r);
    cred_done(&k);
    plug_close(&p);
}

static void test_salesforce_parse_token(void)
{
    struct plug p;
    struct pb_error err;
    json_t *out;
    OPEN(p, "salesforce", NULL);

    CU_ASSERT_EQUAL(parse_token(&p, 200,
                                "{\"access_token\":\"00D!AQ\",\"refresh_token\":\"5Aep\","
                                "\"signature\":\"sig\",\"scope\":\"refresh_token api\","
                                "\"instance_url\":\"https://acme.my.salesforce.com\","
                                "\"id\":\"https://login.salesforce.com/id/00D/005\","
                                "\"token_type\":\"Bearer\",\"issued_at\":\"1278448384422\"}",
                                &out, &err),
                    0);
    CHECK_JSON(out, "{\"access_token\":\"00D!AQ\",\"refresh_token\":\"5Aep\",\"scopes\":"
                    "\"refresh_token api\",\"metadata\":{\"instance_url\":"
                    "\"https://acme.my.salesforce.com\",\"issued_at\":\"1278448384422\"}}");
    CU_ASSERT_PTR_NULL(json_object_get(out, "expires_in"));
    json_decref(out);

    /* A refresh answers no refresh token; the old one stays. */
    CU_ASSERT_EQUAL(parse_token(&p, 200,
                                "{\"access_token\":\"00D!AR\",\"instance_url\":"
                                "\"https://acme.my.salesforce.com/\",\"issued_at\":\"1\"}",
                                &out, &err),
                    0);
    CHECK_JSON(out, "{\"access_token\":\"00D!AR\",\"metadata\":{\"instance_url\":"
                    "\"https://acme.my.salesforce.com\",\"issued_at\":\"1\"}}");
    json_decref(out);

    CU_ASSERT_EQUAL(parse_token(&p, 400,
                                "{\"error\":\"invalid_grant\",\"error_description\":\"expired "
                                "access/refresh token\"}",
                                &out, &err),
                    PB_EAUTH);
    CHECK_STR(err.message, "salesforce token endpoint (HTTP 400): invalid_grant: expired "
                           "access/refresh token");
    CU_ASSERT_PTR_NULL(out);

    CU_ASSERT_EQUAL(parse_token(&p, 503, "", &out, &err), PB_EPROVIDER);
    CU_ASSERT_EQUAL(parse_token(&p, 200, "{\"access_token\":\"x\",\"instance_url\":\"file:///"
                                         "etc/passwd\"}",
                                &out, &err),
                    PB_EPROVIDER);
    CHECK_STR(err.message, "salesforce token response has an unusable instance_url");
    CU_ASSERT_PTR_NULL(out);
    plug_close(&p);
}

static void test_salesforce_oauth_connect(void)
{
    struct plug p;
    struct pb_error err;
    char buf[512];
    OPEN(p, "salesforce", "{\"client_id\": \"3MVG9.x\", \"client_secret\": \"sec\", "
                          "\"scopes\": \"api refresh_token\"}");
    struct pb_oauth_params op = {.struct_size = sizeof op,
                                 .redirect_uri = "https://pb.example/callbacks/v1/oauth",
                                 .state = "abc"};
    CU_ASSERT_EQUAL(p.vt->authorize_url(p.st, &op, buf, sizeof buf, &err), 0);
    CHECK_STR(buf, "https://login.salesforce.com/services/oauth2/authorize?response_type=code"
                   "&client_id=3MVG9.x&redirect_uri=https%3A%2F%2Fpb.example%2Fcallbacks%2Fv1"
                   "%2Foauth&state=abc&scope=api%20refresh_token");

    struct pb_http_request *r = pb_req_new();
    CU_ASSERT_EQUAL(p.vt->build_code_exchange(p.st, &op, "aPrx=", r, &err), 0);
    CHECK_STR(r->method, "POST");
    CHECK_URL(r, SF_BASE, "https://login.salesforce.com/services/oauth2/token");
    CHECK_FORM(r, "grant_type=authorization_code&code=aPrx%3D&client_id=3MVG9.x"
                  "&client_secret=sec&redirect_uri=https%3A%2F%2Fpb.example%2Fcallbacks%2Fv1"
                  "%2Foauth");
    pb_req_free(r);

    r = pb_req_new();
    CU_ASSERT_EQUAL(p.vt->build_code_exchange(p.st, &op, "", r, &err), PB_EINVAL);
    pb_req_free(r);
    plug_close(&p);

    OPEN(p, "salesforce", NULL);
    op.scopes = "api";
    CU_ASSERT_EQUAL(p.vt->authorize_url(p.st, &op, buf, sizeof buf, &err), PB_ECONFIG);
    plug_close(&p);
}

static void test_salesforce_write(void)
{
    struct plug p;
    struct pb_error err;
    struct pb_http_request *r;
    json_t *out;
    OPEN(p, "salesforce", NULL);
    json_t *rec = J("{\"LastName\":\"Doe\",\"Email\":\"d@x.io\"}");
    struct pb_write w = {.struct_size = sizeof w, .object = "Contact", .type = PB_WRITE_CREATE,
                         .record = rec};
    CU_ASSERT_EQUAL(encode(&p, &w, &r, &err), 0);
    CHECK_STR(r->method, "POST");
    CHECK_URL(r, SF_BASE, SF_BASE "/services/data/v60.0/sobjects/Contact");
    CHECK_JSON(r->json, "{\"LastName\":\"Doe\",\"Email\":\"d@x.io\"}");
    pb_req_free(r);

    CU_ASSERT_EQUAL(decode(&p, &w, 201, "{\"id\":\"003xx01\",\"success\":true,\"errors\":[]}",
                           &out, &err),
                    0);
    CHECK_JSON(out, "{\"success\":true,\"recordId\":\"003xx01\",\"data\":{\"id\":\"003xx01\","
                    "\"success\":true,\"errors\":[]}}");
    json_decref(out);

    CU_ASSERT_EQUAL(decode(&p, &w, 400,
                           "[{\"message\":\"Required fields are missing: [LastName]\","
                           "\"errorCode\":\"REQUIRED_FIELD_MISSING\",\"fields\":[\"LastName\"]}]",
                           &out, &err),
                    0);
    CHECK_JSON(out, "{\"success\":false,\"errors\":[{\"message\":\"Required fields are missing: "
                    "[LastName]\",\"errorCode\":\"REQUIRED_FIELD_MISSING\",\"fields\":"
                    "[\"LastName\"]}]}");
    json_decref(out);

    w.type = PB_WRITE_UPDATE;
    w.record_id = "003xx01";
    CU_ASSERT_EQUAL(encode(&p, &w, &r, &err), 0);
    CHECK_STR(r->method, "PATCH");
    CHECK_URL(r, SF_BASE, SF_BASE "/services/data/v60.0/sobjects/Contact/003xx01");
    CHECK_JSON(r->json, "{\"LastName\":\"Doe\",\"Email\":\"d@x.io\"}");
    pb_req_free(r);

    /* An update answers 204 with no body. */
    CU_ASSERT_EQUAL(decode(&p, &w, 204, NULL, &out, &err), 0);
    CHECK_JSON(out, "{\"success\":true,\"recordId\":\"003xx01\"}");
    json_decref(out);

    CU_ASSERT_EQUAL(decode(&p, &w, 404,
                           "[{\"errorCode\":\"NOT_FOUND\",\"message\":\"The requested resource "
                           "does not exist\"}]",
                           &out, &err),
                    0);
    CHECK_JSON(out, "{\"success\":false,\"recordId\":\"003xx01\",\"errors\":[{\"message\":"
                    "\"The requested resource does not exist\",\"errorCode\":\"NOT_FOUND\"}]}");
    json_decref(out);

    CU_ASSERT_EQUAL(decode(&p, &w, 503,
                           "[{\"errorCode\":\"SERVER_UNAVAILABLE\",\"message\":\"down\"}]", &out,
                           &err),
                    PB_EPROVIDER);
    CHECK_STR(err.message, "salesforce answered HTTP 503: down");
    CU_ASSERT_PTR_NULL(out);

    w.record_id = NULL;
    CU_ASSERT_EQUAL(encode(&p, &w, &r, &err), PB_EINVAL);
    pb_req_free(r);

    /* Salesforce has no associations; never silently dropped. */
    json_t *assoc = J("[{\"to\":{\"id\":\"1\"},\"types\":[]}]");
    w.type = PB_WRITE_CREATE;
    w.associations = assoc;
    CU_ASSERT_EQUAL(encode(&p, &w, &r, &err), PB_EUNSUPPORTED);
    pb_req_free(r);
    json_decref(assoc);
    json_decref(rec);
    plug_close(&p);
}

static void test_salesforce_delete(void)
{
    struct plug p;
    struct pb_error err;
    struct pb_http_request *r;
    json_t *out;
    OPEN(p, "salesforce", NULL);
    struct pb_write w = {.struct_size = sizeof w, .object = "Account", .type = PB_WRITE_DELETE,
                         .record_id = "001xx"};
    CU_ASSERT_EQUAL(encode(&p, &w, &r, &err), 0);
    CHECK_STR(r->method, "DELETE");
    CHECK_URL(r, SF_BASE, SF_BASE "/services/data/v60.0/sobjects/Account/001xx");
    CU_ASSERT_PTR_NULL(r->json);
    pb_req_free(r);

    CU_ASSERT_EQUAL(decode(&p, &w, 204, NULL, &out, &err), 0);
    CHECK_JSON(out, "{\"success\":true,\"recordId\":\"001xx\"}");
    json_decref(out);

    CU_ASSERT_EQUAL(decode(&p, &w, 400,
                           "[{\"message\":\"entity is deleted\",\"errorCode\":"
                           "\"ENTITY_IS_DELETED\",\"fields\":[]}]",
                           &out, &err),
                    0);
    CHECK_JSON(out, "{\"success\":false,\"recordId\":\"001xx\",\"errors\":[{\"message\":"
                    "\"entity is deleted\",\"errorCode\":\"ENTITY_IS_DELETED\",\"fields\":[]}]}");
    json_decref(out);
    plug_close(&p);
}

static void test_salesforce_batch(void)
{
    struct plug p;
    struct pb_error err;
    struct pb_http_request *r;
    json_t *out;
    OPEN(p, "salesforce", NULL);
    json_t *items = J("[{\"record\":{\"Name\":\"A\"}},{\"record\":{\"Name\":\"B\","
                      "\"attributes\":{\"type\":\"Evil\"}}},{\"record\":{}}]");
    struct pb_batch b = {.struct_size = sizeof b, .object = "Account", .type = PB_WRITE_CREATE,
                         .items = items, .all_or_none = 1};
    r = pb_req_new();
    CU_ASSERT_EQUAL(p.vt->encode_batch(p.st, &b, r, &err), 0);
    CHECK_STR(r->method, "POST");
    CHECK_URL(r, SF_BASE, SF_BASE "/services/data/v60.0/composite/sobjects");
    CHECK_JSON(r->json, "{\"allOrNone\":true,\"records\":["
                        "{\"attributes\":{\"type\":\"Account\"},\"Name\":\"A\"},"
                        "{\"attributes\":{\"type\":\"Account\"},\"Name\":\"B\"},"
                        "{\"attributes\":{\"type\":\"Account\"}}]}");
    pb_req_free(r);

    CU_ASSERT_EQUAL(decode_batch(&p, &b, 200,
                                 "[{\"id\":\"001A\",\"success\":true,\"errors\":[]},"
                                 "{\"success\":false,\"errors\":[{\"statusCode\":"
                                 "\"REQUIRED_FIELD_MISSING\",\"message\":\"Required fields are "
                                 "missing: [Name]\",\"fields\":[\"Name\"]}]},"
                                 "{\"id\":\"001C\",\"success\":true,\"errors\":[]}]",
                                 &out, &err),
                    0);
    CHECK_JSON(out, "[{\"success\":true,\"recordId\":\"001A\",\"data\":{\"id\":\"001A\","
                    "\"success\":true,\"errors\":[]}},"
                    "{\"success\":false,\"errors\":[{\"message\":\"Required fields are missing: "
                    "[Name]\",\"errorCode\":\"REQUIRED_FIELD_MISSING\",\"fields\":[\"Name\"]}]},"
                    "{\"success\":true,\"recordId\":\"001C\",\"data\":{\"id\":\"001C\","
                    "\"success\":true,\"errors\":[]}}]");
    json_decref(out);

    /* All-or-none roll back: every record reports failure. */
    CU_ASSERT_EQUAL(decode_batch(&p, &b, 200,
                                 "[{\"success\":false,\"errors\":[{\"statusCode\":"
                                 "\"ALL_OR_NONE_OPERATION_ROLLED_BACK\",\"message\":\"Record "
                                 "rolled back\"}]},{\"success\":false,\"errors\":[{\"statusCode\":"
                                 "\"REQUIRED_FIELD_MISSING\",\"message\":\"missing\"}]},"
                                 "{\"success\":false,\"errors\":[{\"statusCode\":"
                                 "\"ALL_OR_NONE_OPERATION_ROLLED_BACK\",\"message\":\"Record "
                                 "rolled back\"}]}]",
                                 &out, &err),
                    0);
    for (size_t i = 0; i < 3; i++)
        CU_ASSERT(!result_ok(out, i));
    CHECK_STR(json_string_value(json_object_get(
                  json_array_get(json_object_get(json_array_get(out, 0), "errors"), 0),
                  "errorCode")),
              "ALL_OR_NONE_OPERATION_ROLLED_BACK");
    json_decref(out);

    CU_ASSERT_EQUAL(decode_batch(&p, &b, 200, "[{\"id\":\"001A\",\"success\":true}]", &out, &err),
                    PB_EPROVIDER);
    CHECK_STR(err.message, "salesforce answered 1 results for 3 records");
    CU_ASSERT_PTR_NULL(out);

    CU_ASSERT_EQUAL(decode_batch(&p, &b, 400,
                                 "[{\"message\":\"Unexpected character\",\"errorCode\":"
                                 "\"JSON_PARSER_ERROR\"}]",
                                 &out, &err),
                    0);
    CU_ASSERT_EQUAL(json_array_size(out), 3);
    CHECK_JSON(json_array_get(out, 2), "{\"success\":false,\"errors\":[{\"message\":"
                                       "\"Unexpected character\",\"errorCode\":"
                                       "\"JSON_PARSER_ERROR\"}]}");
    json_decref(out);
    json_decref(items);

    items = J("[{\"id\":\"001A\",\"record\":{\"Name\":\"A2\"}},{\"id\":\"001B\",\"record\":"
              "{\"Name\":\"B2\"}}]");
    b.items = items;
    b.type = PB_WRITE_UPDATE;
    b.all_or_none = 0;
    r = pb_req_new();
    CU_ASSERT_EQUAL(p.vt->encode_batch(p.st, &b, r, &err), 0);
    CHECK_STR(r->method, "PATCH");
    CHECK_URL(r, SF_BASE, SF_BASE "/services/data/v60.0/composite/sobjects");
    CHECK_JSON(r->json, "{\"allOrNone\":false,\"records\":["
                        "{\"attributes\":{\"type\":\"Account\"},\"id\":\"001A\",\"Name\":\"A2\"},"
                        "{\"attributes\":{\"type\":\"Account\"},\"id\":\"001B\",\"Name\":\"B2\"}]}");
    pb_req_free(r);

    CU_ASSERT_EQUAL(decode_batch(&p, &b, 200,
                                 "[{\"id\":\"001A\",\"success\":true,\"errors\":[]},"
                                 "{\"id\":\"001B\",\"success\":false,\"errors\":[{\"statusCode\":"
                                 "\"ENTITY_IS_DELETED\",\"message\":\"entity is deleted\","
                                 "\"fields\":[]}]}]",
                                 &out, &err),
                    0);
    CU_ASSERT(result_ok(out, 0));
    CHECK_JSON(json_array_get(out, 1), "{\"success\":false,\"recordId\":\"001B\",\"errors\":[{"
                                       "\"message\":\"entity is deleted\",\"errorCode\":"
                                       "\"ENTITY_IS_DELETED\",\"fields\":[]}]}");
    json_decref(out);
    json_decref(items);

    items = J("[{\"record\":{\"Name\":\"A\"}}]");
    b.items = items;
    r = pb_req_new();
    CU_ASSERT_EQUAL(p.vt->encode_batch(p.st, &b, r, &err), PB_EINVAL);
    CHECK_STR(err.field, "batch[0].record.id");
    pb_req_free(r);
    json_decref(items);

    items = json_array();
    for (int i = 0; i < 201; i++)
        json_array_append_new(items, J("{\"id\":\"x\",\"record\":{}}"));
    b.items = items;
    r = pb_req_new();
    CU_ASSERT_EQUAL(p.vt->encode_batch(p.st, &b, r, &err), PB_EINVAL);
    CHECK_STR(err.message, "a salesforce batch holds 1 to 200 records");
    pb_req_free(r);
    json_array_remove(items, 0);
    r = pb_req_new();
    CU_ASSERT_EQUAL(p.vt->encode_batch(p.st, &b, r, &err), 0);
    CU_ASSERT_EQUAL(json_array_size(json_object_get(r->json, "records")), 200);
    pb_req_free(r);
    json_decref(items);
    plug_close(&p);
}

static void test_salesforce_headers(void)
{
    struct plug p;
    OPEN(p, "salesforce", NULL);
    const char *yes[] = {"Sforce-Duplicate-Rule-Header", "sforce-auto-assign",
                         "SFORCE-CALL-OPTIONS", "Sforce-Mru", "Sforce-Query-Options"};
    const char *no[] = {"Authorization", "Sforce-Limit-Info", "X-Sforce-Auto-Assign", "Host",
                        "Sforce-Auto-Assign ", "", "Cookie"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        CU_ASSERT_EQUAL(p.vt->header_allowed(p.st, yes[i]), 1);
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        CU_ASSERT_EQUAL(p.vt->header_allowed(p.st, no[i]), 0);
    plug_close(&p);
}

static void test_salesforce_classify(void)
{
    struct plug p;
    OPEN(p, "salesforce", NULL);
    pb_set_clock(fake_now);
    const char *limit = "[{\"message\":\"TotalRequests Limit exceeded.\",\"errorCode\":"
                        "\"REQUEST_LIMIT_EXCEEDED\"}]";
    struct pb_http_response *r = resp(403, limit, END);
    struct pb_classification c = classify(&p, r, 0, 0);
    CU_ASSERT_EQUAL(c.rate_limited, 1);
    CU_ASSERT_EQUAL(c.retryable, 1);
    CU_ASSERT_EQUAL(c.retry_at_ms, NOW_MS + 60000);
    CU_ASSERT_EQUAL(c.auth_invalid, 0);
    pb_resp_free(r);

    r = resp(403, limit, "Retry-After", "120", END);
    c = classify(&p, r, 0, 0);
    CU_ASSERT_EQUAL(c.retry_at_ms, NOW_MS + 120000);
    pb_resp_free(r);

    r = resp(403, "[{\"message\":\"insufficient access rights\",\"errorCode\":"
                  "\"INSUFFICIENT_ACCESS_OR_READONLY\"}]",
             END);
    c = classify(&p, r, 0, 0);
    CU_ASSERT_EQUAL(c.rate_limited, 0);
    CU_ASSERT_EQUAL(c.retryable, 0);
    CU_ASSERT_EQUAL(c.retry_at_ms, 0);
    pb_resp_free(r);

    r = resp(401, "[{\"message\":\"Session expired or invalid\",\"errorCode\":"
                  "\"INVALID_SESSION_ID\"}]",
             END);
    c = classify(&p, r, 0, 0);
    CU_ASSERT_EQUAL(c.auth_invalid, 1);
    CU_ASSERT_EQUAL(c.rate_limited, 0);
    pb_resp_free(r);

    r = resp(400, "[{\"message\":\"unable to obtain exclusive access to this record\","
                  "\"errorCode\":\"UNABLE_TO_LOCK_ROW\"}]",
             END);
    c = classify(&p, r, 0, 0);
    CU_ASSERT_EQUAL(c.retryable, 1);
    CU_ASSERT_EQUAL(c.rate_limited, 0);
    pb_resp_free(r);

    /* The core's defaults stand when Salesforce says nothing more. */
    r = resp(503, "", END);
    c = classify(&p, r, 1, 0);
    CU_ASSERT_EQUAL(c.retryable, 1);
    CU_ASSERT_EQUAL(c.rate_limited, 0);
    pb_resp_free(r);
    pb_set_clock(NULL);
    plug_close(&p);
}

/* ---- generic --------------------------------------------------------------- */

static void test_generic_vtable(void)
{
    struct plug p;
    OPEN(p, "generic", "{\"base_url\": \"https://api.example.com\"}");
    const struct pb_plugin *vt = p.vt;
    CU_ASSERT_EQUAL(vt->abi_major, PB_PLUGIN_ABI_MAJOR);
    CU_ASSERT_EQUAL(vt->struct_size, sizeof(struct pb_plugin));
    CHECK_STR(vt->name, "generic");
    const char *keys[] = {"catalog",       "entry",  "base_url",          "auth_header",
                          "auth_scheme",   "client_id", "client_secret",  "scopes",
                          "authorization_url", "token_url", NULL};
    CU_ASSERT(keys_are(vt->config_keys, keys));
    CU_ASSERT_EQUAL(vt->max_batch_size, 0);
    /* OAuth and rate-limit slots serve catalog entries (tests/test_generic.c). */
    CU_ASSERT_PTR_NOT_NULL(vt->build_token_refresh);
    CU_ASSERT_PTR_NOT_NULL(vt->parse_token_response);
    CU_ASSERT_PTR_NOT_NULL(vt->authorize_url);
    CU_ASSERT_PTR_NOT_NULL(vt->build_code_exchange);
    CU_ASSERT_PTR_NOT_NULL(vt->classify);
    CU_ASSERT_PTR_NULL(vt->encode_write);
    CU_ASSERT_PTR_NULL(vt->decode_write);
    CU_ASSERT_PTR_NULL(vt->encode_batch);
    CU_ASSERT_PTR_NULL(vt->decode_batch);
    CU_ASSERT_PTR_NULL(vt->encode_delete);
    CU_ASSERT_PTR_NULL(vt->encode_associations);
    CU_ASSERT_PTR_NULL(vt->header_allowed);
    CU_ASSERT_PTR_NULL(vt->encode_read);
    CU_ASSERT_PTR_NULL(vt->decode_read);
    CU_ASSERT_PTR_NULL(vt->encode_read_batch);
    CU_ASSERT_PTR_NULL(vt->decode_read_batch);
    plug_close(&p);
}

static void test_generic_init(void)
{
    struct plug p;
    struct pb_error err;
    struct cred k;
    char buf[128];
    cred_init(&k, "none", NULL);

    OPEN(p, "generic", "{\"base_url\": \"https://api.sendgrid.com/v3/\"}");
    CU_ASSERT_EQUAL(p.vt->base_url(p.st, &k.c, buf, sizeof buf, &err), 0);
    CHECK_STR(buf, "https://api.sendgrid.com/v3");
    CU_ASSERT_EQUAL(p.vt->base_url(p.st, &k.c, buf, 5, &err), PB_EINVAL);
    plug_close(&p);

    /* A catalog entry gives the base URL; base_url overrides it. */
    char opts[1200];
    const char *src = getenv("PB_SRCDIR") ? getenv("PB_SRCDIR") : ".";
    snprintf(opts, sizeof opts,
             "{\"catalog\": \"%s/examples/catalog/providers.yaml\", \"entry\": \"sendgrid\"}", src);
    OPEN(p, "generic", opts);
    CU_ASSERT_EQUAL(p.vt->base_url(p.st, &k.c, buf, sizeof buf, &err), 0);
    CHECK_STR(buf, "https://api.sendgrid.com");
    plug_close(&p);
    snprintf(opts, sizeof opts,
             "{\"catalog\": \"%s/examples/catalog/providers.yaml\", \"entry\": \"sendgrid\", "
             "\"base_url\": \"https://eu.api.sendgrid.com/\"}",
             src);
    OPEN(p, "generic", opts);
    CU_ASSERT_EQUAL(p.vt->base_url(p.st, &k.c, buf, sizeof buf, &err), 0);
    CHECK_STR(buf, "https://eu.api.sendgrid.com");
    plug_close(&p);

    /* A missing catalog names the file and both places it was looked for. */
    CU_ASSERT_EQUAL(plug_open(&p, "generic", "{\"catalog\": \"./catalog/providers.yaml\"}", &err),
                    PB_ECONFIG);
    CHECK_STR(err.field, "catalog");
    CHECK_STR(err.message, "catalog ./catalog/providers.yaml: cannot open it (No such file or "
                           "directory; also tried /etc/plugboard/catalog/providers.yaml: No such "
                           "file or directory)");
    CU_ASSERT_PTR_NULL(p.st);
    plug_close(&p);

    CU_ASSERT_EQUAL(plug_open(&p, "generic", "{\"entry\": \"sendgrid\", \"base_url\": "
                                             "\"https://a.io\"}",
                              &err),
                    PB_ECONFIG);
    CHECK_STR(err.message, "option entry needs option catalog");
    plug_close(&p);

    CU_ASSERT_EQUAL(plug_open(&p, "generic", "{}", &err), PB_ECONFIG);
    CHECK_STR(err.field, "base_url");
    CHECK_STR(err.message, "option base_url is required (or catalog)");
    plug_close(&p);

    CU_ASSERT_EQUAL(plug_open(&p, "generic", "{\"base_url\": \"api.example.com\"}", &err),
                    PB_ECONFIG);
    CHECK_STR(err.message, "option base_url must be an http:// or https:// URL without a query");
    plug_close(&p);

    CU_ASSERT_EQUAL(plug_open(&p, "generic", "{\"base_url\": \"https://a.io\", \"auth_header\": "
                                             "\"X Key:\"}",
                              &err),
                    PB_ECONFIG);
    CHECK_STR(err.field, "auth_header");
    plug_close(&p);

    CU_ASSERT_EQUAL(plug_open(&p, "generic", "{\"base_url\": \"https://a.io\", \"auth_scheme\": "
                                             "true}",
                              &err),
                    PB_ECONFIG);
    CHECK_STR(err.message, "option auth_scheme must be a string");
    plug_close(&p);
    cred_done(&k);
}

static char *apply(struct plug *p, struct cred *k, const char *header, int *rc,
                   struct pb_error *err)
{
    struct pb_http_request *r = pb_req_new();
    pb_error_clear(err);
    *rc = p->vt->apply_credentials(p->st, &k->c, r, err);
    const char *v = pb_req_header(r, header);
    char *out = v ? strdup(v) : NULL;
    /* A failure adds nothing; a success adds exactly the one header. */
    CU_ASSERT_EQUAL(r->n_headers, *rc == 0 ? 1 : 0);
    pb_req_free(r);
    return out;
}

static void test_generic_credentials(void)
{
    struct plug p;
    struct pb_error err;
    struct cred k;
    int rc;
    char *v;

    OPEN(p, "generic", "{\"base_url\": \"https://api.example.com\"}");
    cred_init(&k, "api_key", NULL);
    k.c.api_key = "SG.abc";
    v = apply(&p, &k, "Authorization", &rc, &err);
    CU_ASSERT_EQUAL(rc, 0);
    CHECK_STR(v, "Bearer SG.abc");
    free(v);
    k.c.api_key = NULL;
    v = apply(&p, &k, "Authorization", &rc, &err);
    CU_ASSERT_EQUAL(rc, PB_EAUTH);
    CHECK_STR(err.message, "connection has no API key");
    CU_ASSERT_PTR_NULL(v);
    cred_done(&k);

    cred_init(&k, "basic", NULL);
    k.c.username = "Aladdin";
    k.c.password = "open sesame";
    v = apply(&p, &k, "Authorization", &rc, &err);
    CU_ASSERT_EQUAL(rc, 0);
    CHECK_STR(v, "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
    free(v);
    k.c.username = NULL;
    k.c.password = NULL;
    v = apply(&p, &k, "Authorization", &rc, &err);
    CU_ASSERT_EQUAL(rc, PB_EAUTH);
    CU_ASSERT_PTR_NULL(v);
    cred_done(&k);

    cred_init(&k, "oauth2", NULL);
    k.c.access_token = "tok";
    v = apply(&p, &k, "Authorization", &rc, &err);
    CU_ASSERT_EQUAL(rc, 0);
    CHECK_STR(v, "Bearer tok");
    free(v);
    cred_done(&k);

    cred_init(&k, "none", NULL);
    struct pb_http_request *r = pb_req_new();
    CU_ASSERT_EQUAL(p.vt->apply_credentials(p.st, &k.c, r, &err), 0);
    CU_ASSERT_EQUAL(r->n_headers, 0);
    pb_req_free(r);
    cred_done(&k);

    cred_init(&k, "kerberos", NULL);
    v = apply(&p, &k, "Authorization", &rc, &err);
    CU_ASSERT_EQUAL(rc, PB_EAUTH);
    CHECK_STR(err.message, "unsupported connection auth type 'kerberos'");
    cred_done(&k);
    plug_close(&p);

    /* Custom header and scheme; an empty scheme sends the bare key. */
    OPEN(p, "generic", "{\"base_url\": \"https://api.example.com\", \"auth_header\": "
                       "\"X-Api-Key\", \"auth_scheme\": \"\"}");
    cred_init(&k, "api_key", NULL);
    k.c.api_key = "raw-key";
    v = apply(&p, &k, "X-Api-Key", &rc, &err);
    CU_ASSERT_EQUAL(rc, 0);
    CHECK_STR(v, "raw-key");
    free(v);
    cred_done(&k);
    plug_close(&p);

    OPEN(p, "generic", "{\"base_url\": \"https://api.example.com\", \"auth_scheme\": \"Token\"}");
    cred_init(&k, "api_key", NULL);
    k.c.api_key = "t1";
    v = apply(&p, &k, "Authorization", &rc, &err);
    CHECK_STR(v, "Token t1");
    free(v);
    /* Credentials never reach a header they could break out of. */
    k.c.api_key = "t1\r\nX-Evil: 1";
    v = apply(&p, &k, "Authorization", &rc, &err);
    CU_ASSERT_EQUAL(rc, PB_EAUTH);
    CU_ASSERT_PTR_NULL(v);
    cred_done(&k);
    plug_close(&p);
}

/* ---- reads of current values (ABI 1.1, writeOnUpdate: ifEmpty) -------------- */

static int encode_read(struct plug *p, const struct pb_write *w, const char *fields,
                       struct pb_http_request **req, struct pb_error *err)
{
    json_t *f = J(fields);
    *req = pb_req_new();
    pb_error_clear(err);
    int rc = p->vt->encode_read(p->st, w, f, *req, err);
    json_decref(f);
    return rc;
}

static int encode_read_batch(struct plug *p, const struct pb_batch *b, const char *fields,
                             struct pb_http_request **req, struct pb_error *err)
{
    json_t *f = J(fields);
    *req = pb_req_new();
    pb_error_clear(err);
    int rc = p->vt->encode_read_batch(p->st, b, f, *req, err);
    json_decref(f);
    return rc;
}

static int decode_read(struct plug *p, const struct pb_write *w, int status, const char *body,
                       json_t **out, struct pb_error *err)
{
    struct pb_http_response *r = resp(status, body, END);
    pb_error_clear(err);
    *out = NULL;
    int rc = p->vt->decode_read(p->st, w, r, out, err);
    pb_resp_free(r);
    return rc;
}

static int decode_read_batch(struct plug *p, const struct pb_batch *b, int status,
                             const char *body, json_t **out, struct pb_error *err)
{
    struct pb_http_response *r = resp(status, body, END);
    pb_error_clear(err);
    *out = NULL;
    int rc = p->vt->decode_read_batch(p->st, b, r, out, err);
    pb_resp_free(r);
    return rc;
}

static void test_hubspot_read(void)
{
    struct plug p;
    struct pb_error err;
    struct pb_http_request *r;
    json_t *out;
    OPEN(p, "hubspot", NULL);
    json_t *rec = J("{\"phone\":\"+1\",\"email\":\"a@x.io\"}");
    struct pb_write w = {.struct_size = sizeof w, .object = "contacts", .type = PB_WRITE_UPDATE,
                         .record_id = "101", .record = rec};
    CU_ASSERT_EQUAL(encode_read(&p, &w, "[\"phone\",\"email\"]", &r, &err), 0);
    CHECK_STR(r->method, "GET");
    CHECK_URL(r, HS_BASE, HS_BASE "/crm/v3/objects/contacts/101?properties=phone,email");
    CU_ASSERT_PTR_NULL(r->json);
    pb_req_free(r);

    /* Names and path segments are escaped; the commas stay. */
    w.object = "p_my/obj";
    w.record_id = "a b";
    CU_ASSERT_EQUAL(encode_read(&p, &w, "[\"x&y\",\"z\"]", &r, &err), 0);
    CHECK_URL(r, HS_BASE, HS_BASE "/crm/v3/objects/p_my%2Fobj/a%20b?properties=x%26y,z");
    pb_req_free(r);

    w.object = "contacts";
    w.record_id = NULL;
    CU_ASSERT_EQUAL(encode_read(&p, &w, "[\"phone\"]", &r, &err), PB_EINVAL);
    CHECK_STR(err.field, "record.id");
    pb_req_free(r);
    w.record_id = "101";
    CU_ASSERT_EQUAL(encode_read(&p, &w, "[]", &r, &err), PB_EINVAL);
    pb_req_free(r);
    CU_ASSERT_EQUAL(encode_read(&p, &w, "[\"\"]", &r, &err), PB_EINVAL);
    pb_req_free(r);

    /* The record's properties, null and "" kept as HubSpot says them. */
    CU_ASSERT_EQUAL(decode_read(&p, &w, 200,
                                "{\"id\":\"101\",\"properties\":{\"phone\":null,\"email\":"
                                "\"a@x.io\",\"city\":\"\",\"hs_object_id\":\"101\"},"
                                "\"archived\":false}",
                                &out, &err),
                    0);
    CHECK_JSON(out, "{\"phone\":null,\"email\":\"a@x.io\",\"city\":\"\",\"hs_object_id\":\"101\"}");
    json_decref(out);

    /* No such record: no values, not an error. */
    CU_ASSERT_EQUAL(decode_read(&p, &w, 404,
                                "{\"status\":\"error\",\"message\":\"resource not found\","
                                "\"category\":\"OBJECT_NOT_FOUND\"}",
                                &out, &err),
                    0);
    CU_ASSERT_PTR_NULL(out);

    CU_ASSERT_EQUAL(decode_read(&p, &w, 403,
                                "{\"status\":\"error\",\"message\":\"missing scopes\","
                                "\"category\":\"MISSING_SCOPES\"}",
                                &out, &err),
                    PB_EPROVIDER);
    CHECK_STR(err.message, "hubspot answered HTTP 403: missing scopes");
    CU_ASSERT_PTR_NULL(out);
    CU_ASSERT_EQUAL(decode_read(&p, &w, 200, "{\"id\":\"101\"}", &out, &err), PB_EPROVIDER);
    CU_ASSERT_PTR_NULL(out);
    CU_ASSERT_EQUAL(decode_read(&p, &w, 200, "not json", &out, &err), PB_EPROVIDER);
    CU_ASSERT_PTR_NULL(out);
    json_decref(rec);
    plug_close(&p);
}

static void test_hubspot_read_batch(void)
{
    struct plug p;
    struct pb_error err;
    struct pb_http_request *r;
    json_t *out;
    OPEN(p, "hubspot", NULL);
    json_t *items = J("[{\"id\":\"101\",\"record\":{\"phone\":\"1\"}},"
                      "{\"id\":102,\"record\":{\"phone\":\"2\"}},"
                      "{\"id\":\"103\",\"record\":{\"phone\":\"3\"}},"
                      "{\"id\":\"101\",\"record\":{\"city\":\"Oslo\"}}]");
    struct pb_batch b = {.struct_size = sizeof b, .object = "contacts", .type = PB_WRITE_UPDATE,
                         .items = items};
    CU_ASSERT_EQUAL(encode_read_batch(&p, &b, "[\"phone\",\"city\"]", &r, &err), 0);
    CHECK_STR(r->method, "POST");
    CHECK_URL(r, HS_BASE, HS_BASE "/crm/v3/objects/contacts/batch/read");
    /* Each id once: HubSpot refuses duplicates. */
    CHECK_JSON(r->json, "{\"properties\":[\"phone\",\"city\"],\"inputs\":[{\"id\":\"101\"},"
                        "{\"id\":\"102\"},{\"id\":\"103\"}]}");
    pb_req_free(r);

    /* Results in any order, matched by id; a missing record is null. */
    CU_ASSERT_EQUAL(decode_read_batch(&p, &b, 207,
                                      "{\"status\":\"COMPLETE\",\"results\":["
                                      "{\"id\":\"102\",\"properties\":{\"phone\":\"\",\"city\":null}},"
                                      "{\"id\":\"101\",\"properties\":{\"phone\":\"555\",\"city\":null}}],"
                                      "\"numErrors\":1,\"errors\":[{\"status\":\"error\","
                                      "\"category\":\"OBJECT_NOT_FOUND\",\"message\":\"Could not get "
                                      "some CONTACT objects\",\"context\":{\"ids\":[\"103\"]}}]}",
                                      &out, &err),
                    0);
    CHECK_JSON(out, "[{\"phone\":\"555\",\"city\":null},{\"phone\":\"\",\"city\":null},null,"
                    "{\"phone\":\"555\",\"city\":null}]");
    json_decref(out);

    /* A record left out without a not-found error is never taken as empty. */
    CU_ASSERT_EQUAL(decode_read_batch(&p, &b, 200,
                                      "{\"status\":\"COMPLETE\",\"results\":["
                                      "{\"id\":\"101\",\"properties\":{}},"
                                      "{\"id\":\"102\",\"properties\":{}}]}",
                                      &out, &err),
                    PB_EPROVIDER);
    CHECK_STR(err.message, "hubspot returned no properties for record 103");
    CU_ASSERT_PTR_NULL(out);

    CU_ASSERT_EQUAL(decode_read_batch(&p, &b, 404, "{\"status\":\"error\"}", &out, &err), 0);
    CHECK_JSON(out, "[null,null,null,null]");
    json_decref(out);
    CU_ASSERT_EQUAL(decode_read_batch(&p, &b, 400,
                                      "{\"status\":\"error\",\"message\":\"bad input\"}", &out,
                                      &err),
                    PB_EPROVIDER);
    CHECK_STR(err.message, "hubspot answered HTTP 400: bad input");
    CU_ASSERT_PTR_NULL(out);

    json_t *noid = J("[{\"id\":\"1\",\"record\":{}},{\"record\":{}}]");
    b.items = noid;
    CU_ASSERT_EQUAL(encode_read_batch(&p, &b, "[\"phone\"]", &r, &err), PB_EINVAL);
    CHECK_STR(err.field, "batch[1].record.id");
    pb_req_free(r);
    json_decref(noid);
    json_decref(items);
    plug_close(&p);
}

static void test_salesforce_read(void)
{
    struct plug p;
    struct pb_error err;
    struct pb_http_request *r;
    json_t *out;
    OPEN(p, "salesforce", NULL);
    struct pb_write w = {.struct_size = sizeof w, .object = "Contact", .type = PB_WRITE_UPDATE,
                         .record_id = "003xx01"};
    CU_ASSERT_EQUAL(encode_read(&p, &w, "[\"Phone\",\"Email\"]", &r, &err), 0);
    CHECK_STR(r->method, "GET");
    CHECK_URL(r, SF_BASE, SF_BASE "/services/data/v60.0/sobjects/Contact/003xx01?fields=Phone,Email");
    CU_ASSERT_PTR_NULL(r->json);
    pb_req_free(r);

    w.record_id = "";
    CU_ASSERT_EQUAL(encode_read(&p, &w, "[\"Phone\"]", &r, &err), PB_EINVAL);
    CHECK_STR(err.field, "record.id");
    pb_req_free(r);
    w.record_id = "003xx01";
    CU_ASSERT_EQUAL(encode_read(&p, &w, "[]", &r, &err), PB_EINVAL);
    pb_req_free(r);

    CU_ASSERT_EQUAL(decode_read(&p, &w, 200,
                                "{\"attributes\":{\"type\":\"Contact\",\"url\":\"/services/data/"
                                "v60.0/sobjects/Contact/003xx01\"},\"Phone\":null,\"Email\":"
                                "\"d@x.io\",\"Id\":\"003xx01\"}",
                                &out, &err),
                    0);
    CHECK_JSON(out, "{\"Phone\":null,\"Email\":\"d@x.io\",\"Id\":\"003xx01\"}");
    json_decref(out);

    CU_ASSERT_EQUAL(decode_read(&p, &w, 404,
                                "[{\"errorCode\":\"NOT_FOUND\",\"message\":\"The requested "
                                "resource does not exist\"}]",
                                &out, &err),
                    0);
    CU_ASSERT_PTR_NULL(out);

    CU_ASSERT_EQUAL(decode_read(&p, &w, 400,
                                "[{\"errorCode\":\"INVALID_FIELD\",\"message\":\"No such column "
                                "'Fax2' on entity 'Contact'\"}]",
                                &out, &err),
                    PB_EPROVIDER);
    CHECK_STR(err.message, "salesforce answered HTTP 400: No such column 'Fax2' on entity 'Contact'");
    CU_ASSERT_PTR_NULL(out);
    CU_ASSERT_EQUAL(decode_read(&p, &w, 200, "[1]", &out, &err), PB_EPROVIDER);
    CU_ASSERT_PTR_NULL(out);
    plug_close(&p);
}

static void test_salesforce_read_batch(void)
{
    struct plug p;
    struct pb_error err;
    struct pb_http_request *r;
    json_t *out;
    OPEN(p, "salesforce", NULL);
    json_t *items = J("[{\"id\":\"001A\",\"record\":{\"Phone\":\"1\"}},"
                      "{\"id\":\"001B\",\"record\":{\"Rating\":\"Hot\"}},"
                      "{\"id\":\"001A\",\"record\":{\"Rating\":\"Cold\"}}]");
    struct pb_batch b = {.struct_size = sizeof b, .object = "Account", .type = PB_WRITE_UPDATE,
                         .items = items};
    CU_ASSERT_EQUAL(encode_read_batch(&p, &b, "[\"Phone\",\"Rating\"]", &r, &err), 0);
    CHECK_STR(r->method, "GET");
    CHECK_URL(r, SF_BASE,
              SF_BASE "/services/data/v60.0/composite/sobjects/Account?ids=001A,001B"
                      "&fields=Phone,Rating");
    CU_ASSERT_PTR_NULL(r->json);
    pb_req_free(r);

    /* One entry per distinct id, in order; null for one that does not exist. */
    CU_ASSERT_EQUAL(decode_read_batch(&p, &b, 200,
                                      "[{\"attributes\":{\"type\":\"Account\"},\"Id\":\"001A\","
                                      "\"Phone\":\"555\",\"Rating\":null},null]",
                                      &out, &err),
                    0);
    CHECK_JSON(out, "[{\"Id\":\"001A\",\"Phone\":\"555\",\"Rating\":null},null,"
                    "{\"Id\":\"001A\",\"Phone\":\"555\",\"Rating\":null}]");
    json_decref(out);

    CU_ASSERT_EQUAL(decode_read_batch(&p, &b, 200, "[null]", &out, &err), PB_EPROVIDER);
    CHECK_STR(err.message, "salesforce answered 1 records for 2 ids");
    CU_ASSERT_PTR_NULL(out);
    CU_ASSERT_EQUAL(decode_read_batch(&p, &b, 200, "[null, 7]", &out, &err), PB_EPROVIDER);
    CU_ASSERT_PTR_NULL(out);
    CU_ASSERT_EQUAL(decode_read_batch(&p, &b, 400,
                                      "[{\"errorCode\":\"INVALID_FIELD\",\"message\":\"No such "
                                      "column 'Ratin'\"}]",
                                      &out, &err),
                    PB_EPROVIDER);
    CHECK_STR(err.message, "salesforce answered HTTP 400: No such column 'Ratin'");
    CU_ASSERT_PTR_NULL(out);

    json_t *noid = J("[{\"record\":{}}]");
    b.items = noid;
    CU_ASSERT_EQUAL(encode_read_batch(&p, &b, "[\"Phone\"]", &r, &err), PB_EINVAL);
    CHECK_STR(err.field, "batch[0].record.id");
    pb_req_free(r);
    json_decref(noid);
    json_decref(items);
    plug_close(&p);
}

/* ---- the deliberately broken test plugins ------------------------------------ */

static void test_broken_plugins(void)
{
    void *dl;
    const struct pb_plugin *vt;

    vt = open_vt("tests/plugins/abi_newer", &dl);
    CU_ASSERT_PTR_NOT_NULL_FATAL(vt);
    CU_ASSERT_EQUAL(vt->abi_major, PB_PLUGIN_ABI_MAJOR + 1);
    CHECK_STR(vt->name, "abi_newer");
    dlclose(dl);

    vt = open_vt("tests/plugins/abi_older", &dl);
    CU_ASSERT_PTR_NOT_NULL_FATAL(vt);
    CU_ASSERT_EQUAL(vt->abi_major, 0);
    CHECK_STR(vt->name, "abi_older");
    dlclose(dl);

    vt = open_vt("tests/plugins/no_symbol", &dl);
    CU_ASSERT_PTR_NULL(vt);
    CU_ASSERT_PTR_NOT_NULL(dl);
    if (dl)
        dlclose(dl);

    struct plug p;
    struct pb_error err;
    CU_ASSERT_EQUAL(plug_open(&p, "tests/plugins/init_fails", NULL, &err), PB_ECONFIG);
    CHECK_STR(p.vt ? p.vt->name : NULL, "init_fails");
    CHECK_STR(err.message, "missing api_token option");
    CU_ASSERT_PTR_NULL(p.st);
    plug_close(&p);

    OPEN(p, "tests/plugins/dup_name", NULL);
    CHECK_STR(p.vt->name, "hubspot");
    struct cred k;
    char buf[128];
    cred_init(&k, "api_key", NULL);
    k.c.api_key = "k";
    CU_ASSERT_EQUAL(p.vt->base_url(p.st, &k.c, buf, sizeof buf, &err), 0);
    struct pb_http_request *r = pb_req_new();
    CU_ASSERT_EQUAL(p.vt->apply_credentials(p.st, &k.c, r, &err), 0);
    pb_req_free(r);
    cred_done(&k);
    plug_close(&p);
}

static CU_TestInfo tests[] = {
    {"hubspot_vtable", test_hubspot_vtable},
    {"hubspot_init_options", test_hubspot_init_options},
    {"hubspot_apply_credentials", test_hubspot_apply_credentials},
    {"hubspot_token_refresh", test_hubspot_token_refresh},
    {"hubspot_parse_token", test_hubspot_parse_token},
    {"hubspot_oauth_connect", test_hubspot_oauth_connect},
    {"hubspot_encode_write", test_hubspot_encode_write},
    {"hubspot_decode_write", test_hubspot_decode_write},
    {"hubspot_delete", test_hubspot_delete},
    {"hubspot_associations", test_hubspot_associations},
    {"hubspot_encode_batch", test_hubspot_encode_batch},
    {"hubspot_decode_batch_create", test_hubspot_decode_batch_create},
    {"hubspot_decode_batch_update", test_hubspot_decode_batch_update},
    {"hubspot_classify", test_hubspot_classify},
    {"hubspot_read", test_hubspot_read},
    {"hubspot_read_batch", test_hubspot_read_batch},
    {"salesforce_vtable", test_salesforce_vtable},
    {"salesforce_init_options", test_salesforce_init_options},
    {"salesforce_base_url", test_salesforce_base_url},
    {"salesforce_apply_credentials", test_salesforce_apply_credentials},
    {"salesforce_token_refresh", test_salesforce_token_refresh},
    {"salesforce_parse_token", test_salesforce_parse_token},
    {"salesforce_oauth_connect", test_salesforce_oauth_connect},
    {"salesforce_write", test_salesforce_write},
    {"salesforce_delete", test_salesforce_delete},
    {"salesforce_batch", test_salesforce_batch},
    {"salesforce_headers", test_salesforce_headers},
    {"salesforce_classify", test_salesforce_classify},
    {"salesforce_read", test_salesforce_read},
    {"salesforce_read_batch", test_salesforce_read_batch},
    {"generic_vtable", test_generic_vtable},
    {"generic_init", test_generic_init},
    {"generic_credentials", test_generic_credentials},
    {"broken_plugins", test_broken_plugins},
    CU_TEST_INFO_NULL,
};

int main(int argc, char **argv)
{
    return pbt_main(argc, argv, "plugins", tests);
}
