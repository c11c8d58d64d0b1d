/* The proxy (SPEC.md §2): three request styles, credentials from the
 * plugin, the upstream URL kept on the provider's host, bodies streamed
 * both ways, 401 refresh-and-retry, Nango-style retries, Ampersand-style
 * throttling and the activity log. */
#include "activity.h"
#include "app.h"
#include "auth.h"
#include "cache.h"
#include "control.h"
#include "egress.h"
#include "http.h"
#include "loader.h"
#include "log.h"
#include "proxy.h"
#include "routes.h"
#include "secrets.h"
#include "store.h"
#include "stream.h"
#include "tokens.h"
#include "util.h"
#include <curl/curl.h>
#include <ctype.h>
#include <microhttpd.h>
#include <sodium.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define REPLAY_MAX (1024 * 1024)     /* bodies up to this size can be sent again */
#define CLASSIFY_BODY_MAX (64 * 1024) /* error bodies read for classification */
#define MAX_RETRIES 10

enum style { STYLE_AMP, STYLE_NANGO, STYLE_SDK };

struct call {
    struct pb_request *r;
    enum style style;
    json_t *installation, *integration;
    const struct pb_provider *prov;
    struct pb_cred_lease *lease;
    char base_url[1024];
    char *target;             /* path and query appended to the base URL */
    char *log_path;           /* path without query, for the activity log */
    struct pb_header *fwd;
    size_t n_fwd;
    int has_body;
    int64_t body_len;
    struct pb_buf replay;
    int replayable;
    struct pb_stream *stream;
    struct pb_http_response *buffered; /* a response read whole (errors) */
    size_t buffered_off;
    int retries;
    int retry_on[16];
    size_t n_retry_on;
    int throttle;
    int decompress;
    int attempts;
    int upload_failed;
    const char *bad_header;   /* a header not fit to forward (see collect_header) */
    size_t bytes_out, bytes_in;
    int upstream_status;
    char error[128];
};

/* ---- throttle state ------------------------------------------------------ */

struct block {
    char installation[64];
    int64_t until_ms;
    int attempts;
    int retryable;
};

static pthread_mutex_t blocks_mu = PTHREAD_MUTEX_INITIALIZER;
static struct block blocks[1024];

static struct block *block_slot(const char *inst)
{
    size_t h = 5381;
    for (const char *p = inst; *p; p++)
        h = h * 33 + (unsigned char)*p;
    return &blocks[h % (sizeof blocks / sizeof blocks[0])];
}

/* 1 and the block when the installation is inside a throttle window. */
static int blocked(const char *inst, struct block *out)
{
    pthread_mutex_lock(&blocks_mu);
    struct block *b = block_slot(inst);
    int hit = strcmp(b->installation, inst) == 0 && b->until_ms > pb_now_ms();
    if (hit)
        *out = *b;
    pthread_mutex_unlock(&blocks_mu);
    return hit;
}

static int block_until(struct pb_app *app, const char *inst, int64_t until, int retryable)
{
    pthread_mutex_lock(&blocks_mu);
    struct block *b = block_slot(inst);
    if (strcmp(b->installation, inst) != 0) {
        memset(b, 0, sizeof *b);
        snprintf(b->installation, sizeof b->installation, "%s", inst);
    }
    b->attempts++;
    if (until <= 0) {
        /* No hint from the provider: back off exponentially. */
        int64_t wait = 1000LL << (b->attempts < 8 ? b->attempts - 1 : 7);
        until = pb_now_ms() + wait;
    }
    b->until_ms = until;
    b->retryable = retryable;
    int attempts = b->attempts;
    pthread_mutex_unlock(&blocks_mu);
    pb_store_rate_limit_set(app->store, inst, until, attempts, retryable);
    return attempts;
}

static void block_clear(const char *inst)
{
    pthread_mutex_lock(&blocks_mu);
    struct block *b = block_slot(inst);
    if (strcmp(b->installation, inst) == 0)
        b->attempts = 0;
    pthread_mutex_unlock(&blocks_mu);
}

static void add_retry_headers(struct pb_request *r, int64_t until, int retryable)
{
    char when[64];
    pb_fmt_retry_after(until, when, sizeof when);
    pb_reply_add_header(r, "X-Amp-Retry-After", when);
    pb_reply_add_header(r, "X-Amp-Retryable", retryable ? "true" : "false");
}

/* ---- errors in each style ------------------------------------------------ */

static const char *nango_code(unsigned status, const char *slug)
{
    if (status == 401)
        return "unauthorized";
    if (strcmp(slug, "unknown-connection") == 0)
        return "unknown_connection";
    if (strcmp(slug, "unknown-integration") == 0)
        return "unknown_provider_config";
    if (strcmp(slug, "missing-header") == 0)
        return "missing_required_header";
    if (status == 429)
        return "rate_limit_exceeded";
    if (status >= 500)
        return "upstream_error";
    return slug;
}

static int fail(struct call *c, unsigned status, const char *slug, const char *title,
                const char *header, const char *fmt, ...) PB_PRINTF(6, 7);
static int fail(struct call *c, unsigned status, const char *slug, const char *title,
                const char *header, const char *fmt, ...)
{
    char detail[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    /* A detail quoting a header or path that is not UTF-8 could not become
     * JSON, and the caller would get no answer at all. */
    json_t *utf8 = json_string(detail);
    for (char *q = detail; !utf8 && *q; q++)
        if ((unsigned char)*q >= 0x80)
            *q = '?';
    json_decref(utf8);
    snprintf(c->error, sizeof c->error, "%s", title);
    if (c->style == STYLE_NANGO) {
        json_t *e = json_pack("{s:{s:s, s:s}}", "error", "code", nango_code(status, slug),
                              "message", detail);
        return pb_reply_json(c->r, status, e);
    }
    json_t *issues = header ? json_pack("[o]", pb_issue("header", header, detail)) : NULL;
    return pb_reply_problem(c->r, status, slug, title, detail,
                            status == 429 || status == 502 || status == 503 || status == 504,
                            issues);
}

/* ---- request analysis ---------------------------------------------------- */

static const char *const hop_by_hop[] = {"connection", "keep-alive", "proxy-authenticate",
                                         "proxy-authorization", "te", "trailer", "trailers",
                                         "transfer-encoding", "upgrade", "proxy-connection",
                                         NULL};

static int is_hop_by_hop(const char *name, const char *connection_value)
{
    for (const char *const *h = hop_by_hop; *h; h++)
        if (strcasecmp(name, *h) == 0)
            return 1;
    /* Headers the Connection header names are hop-by-hop too. */
    if (connection_value) {
        size_t n = strlen(name);
        for (const char *p = connection_value; *p;) {
            while (*p == ' ' || *p == ',')
                p++;
            const char *e = p;
            while (*e && *e != ',' && *e != ' ')
                e++;
            if ((size_t)(e - p) == n && strncasecmp(p, name, n) == 0)
                return 1;
            p = e;
        }
    }
    return 0;
}

static void fwd_add(struct call *c, const char *name, const char *value)
{
    c->fwd = pb_xrealloc(c->fwd, (c->n_fwd + 1) * sizeof *c->fwd);
    c->fwd[c->n_fwd].name = pb_xstrdup(name);
    c->fwd[c->n_fwd].value = pb_xstrdup(value);
    c->n_fwd++;
}

struct collect_ctx {
    struct call *c;
    const char *connection;
};

static enum MHD_Result collect_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                      const char *value)
{
    struct collect_ctx *x = cls;
    struct call *c = x->c;
    (void)kind;
    if (!key || !value)
        return MHD_YES;
    /* A name with spaces or controls ("Transfer-Encoding : chunked") or a
     * value with CR or LF is refused (RFC 9112 5.1, RFC 9110 5.5): sent on,
     * an upstream may read the header block differently than we did. */
    int bad_name = !*key;
    for (const char *p = key; *p; p++)
        bad_name |= (unsigned char)*p <= 32 || (unsigned char)*p >= 127 || *p == ':';
    if (bad_name || strpbrk(value, "\r\n")) {
        if (!c->bad_header)
            c->bad_header = bad_name ? "(a header name)" : key;
        return MHD_YES;
    }
    if (is_hop_by_hop(key, x->connection) || strcasecmp(key, "host") == 0 ||
        strcasecmp(key, "content-length") == 0 || strcasecmp(key, "expect") == 0 ||
        strcasecmp(key, "authorization") == 0 || strcasecmp(key, "x-api-key") == 0 ||
        strncasecmp(key, "x-amp-", 6) == 0)
        return MHD_YES;
    if (c->style == STYLE_NANGO) {
        /* Only Nango-Proxy-<Name> travels, as <Name>; the body's type too. */
        if (strncasecmp(key, "nango-proxy-", 12) == 0 && key[12]) {
            const char *name = key + 12;
            if (strcasecmp(name, "authorization") != 0 && !is_hop_by_hop(name, NULL) &&
                strcasecmp(name, "host") != 0 && strcasecmp(name, "content-length") != 0)
                fwd_add(c, name, value);
        } else if (strcasecmp(key, "content-type") == 0) {
            fwd_add(c, key, value);
        }
        return MHD_YES;
    }
    fwd_add(c, key, value);
    return MHD_YES;
}

/* The path must stay on the provider's host: no authority tricks, no
 * dot-segments, no control characters, nothing encoded that decodes into
 * one of those. */
const char *pb_proxy_check_target(const char *path)
{
    if (path[0] != '/')
        return "the path must start with '/'";
    if (path[1] == '/' || path[1] == '\\')
        return "the path must not start with '//'";
    for (const char *p = path; *p; p++) {
        unsigned char ch = (unsigned char)*p;
        /* '#' would end the path: "/..#" is a dot-segment once cut there. */
        if (ch < 0x20 || ch == 0x7f || ch == '\\' || ch == ' ' || ch == '#')
            return "the path contains a control character, backslash, space or '#'";
    }
    int len = 0;
    char *dec = curl_easy_unescape(NULL, path, 0, &len);
    if (!dec)
        return "the path is not valid";
    const char *why = NULL;
    if ((int)strlen(dec) != len)
        why = "the path contains an encoded NUL";
    for (int i = 0; !why && i < len; i++) {
        unsigned char ch = (unsigned char)dec[i];
        if (ch < 0x20 || ch == 0x7f || ch == '\\')
            why = "the path contains an encoded control character or backslash";
    }
    if (!why && (strncmp(dec, "//", 2) == 0 || strstr(dec, "/../") || strstr(dec, "/./") ||
                 (len >= 3 && strcmp(dec + len - 3, "/..") == 0) ||
                 (len >= 2 && strcmp(dec + len - 2, "/.") == 0)))
        why = "the path contains '//' or a dot-segment";
    if (!why && strchr(dec, '@') && strchr(dec, '@') < strchr(dec + 1, '/') )
        why = "the path contains '@' in its first segment";
    curl_free(dec);
    return why;
}

/* Joins base and target and checks the result's origin is the base's. */
char *pb_proxy_join_url(const char *base, const char *target, const char **why)
{
    char *url = pb_xasprintf("%s%s", base, target);
    CURLU *b = curl_url(), *u = curl_url();
    char *bh = NULL, *uh = NULL, *bs = NULL, *us = NULL, *bp = NULL, *up = NULL, *uu = NULL;
    int ok = curl_url_set(b, CURLUPART_URL, base, 0) == CURLUE_OK &&
             curl_url_set(u, CURLUPART_URL, url, CURLU_PATH_AS_IS) == CURLUE_OK &&
             curl_url_get(b, CURLUPART_HOST, &bh, 0) == CURLUE_OK &&
             curl_url_get(u, CURLUPART_HOST, &uh, 0) == CURLUE_OK &&
             curl_url_get(b, CURLUPART_SCHEME, &bs, 0) == CURLUE_OK &&
             curl_url_get(u, CURLUPART_SCHEME, &us, 0) == CURLUE_OK &&
             curl_url_get(b, CURLUPART_PORT, &bp, CURLU_DEFAULT_PORT) == CURLUE_OK &&
             curl_url_get(u, CURLUPART_PORT, &up, CURLU_DEFAULT_PORT) == CURLUE_OK;
    ok = ok && strcasecmp(bh, uh) == 0 && strcasecmp(bs, us) == 0 && strcmp(bp, up) == 0 &&
         curl_url_get(u, CURLUPART_USER, &uu, 0) != CURLUE_OK;
    curl_free(bh);
    curl_free(uh);
    curl_free(bs);
    curl_free(us);
    curl_free(bp);
    curl_free(up);
    curl_free(uu);
    curl_url_cleanup(b);
    curl_url_cleanup(u);
    if (!ok) {
        *why = "the request would leave the provider's host";
        free(url);
        return NULL;
    }
    return url;
}

/* ---- credentials ----------------------------------------------------------- */

static int apply_credentials(struct call *c, struct pb_http_request *creq)
{
    struct pb_error err;
    pb_error_clear(&err);
    if (c->prov->vt->apply_credentials(c->prov->state, &c->lease->view, creq, &err) != 0)
        return fail(c, 424, "credentials-unusable", "Credentials unusable", NULL,
                    "provider '%s' could not use the connection's credentials: %s", c->prov->name,
                    err.message), -1;
    return 0;
}

/* ---- attempts ----------------------------------------------------------- */

static int start_attempt(struct call *c, const char **why)
{
    struct pb_http_request *creq = pb_req_new();
    if (apply_credentials(c, creq) != 0) {
        pb_req_free(creq);
        return -2;
    }
    char *url = NULL;
    *why = NULL;
    /* The plugin may add query parameters (API keys in the query). */
    if (creq->query) {
        char *t = pb_xasprintf("%s%s%s", c->target, strchr(c->target, '?') ? "&" : "?", creq->query);
        url = pb_proxy_join_url(c->base_url, t, why);
        free(t);
    } else {
        url = pb_proxy_join_url(c->base_url, c->target, why);
    }
    if (!url) {
        pb_req_free(creq);
        return -1;
    }
    size_t n = c->n_fwd + creq->n_headers;
    struct pb_header *h = pb_xcalloc(n ? n : 1, sizeof *h);
    size_t k = 0;
    for (size_t i = 0; i < c->n_fwd; i++) {
        int replaced = 0;
        for (size_t j = 0; j < creq->n_headers; j++)
            replaced |= strcasecmp(c->fwd[i].name, creq->headers[j].name) == 0;
        if (!replaced)
            h[k++] = c->fwd[i];
    }
    for (size_t j = 0; j < creq->n_headers; j++)
        h[k++] = creq->headers[j];
    struct pb_stream_opts o = {.method = c->r->method, .url = url, .headers = h, .n_headers = k,
                               .has_body = c->has_body, .body_len = c->body_len,
                               .decompress = c->decompress};
    c->stream = pb_stream_start(c->r->app->egress, &o);
    c->attempts++;
    free(h);
    free(url);
    pb_req_free(creq);
    return c->stream ? 0 : -1;
}

static void end_attempt(struct call *c)
{
    if (c->stream) {
        size_t out, in;
        pb_stream_counts(c->stream, &out, &in);
        c->bytes_out += out;
        c->bytes_in += in;
        pb_stream_free(c->stream);
        c->stream = NULL;
    }
    pb_resp_free(c->buffered);
    c->buffered = NULL;
    c->buffered_off = 0;
}

/* ---- the call's lifetime ---------------------------------------------------- */

static void call_free(void *arg)
{
    struct call *c = arg;
    struct pb_request *r = c->r;
    end_attempt(c);
    if (r->app->activity && r->project_id[0]) {
        json_t *rec = json_pack("{s:I, s:s, s:s, s:s, s:i, s:I, s:I, s:I, s:s}", "time",
                                (json_int_t)pb_wall_ms(), "projectId", r->project_id, "method",
                                r->method, "path", c->log_path ? c->log_path : r->path, "attempts",
                                c->attempts, "durationMs",
                                (json_int_t)(pb_mono_ms() - r->start_ms), "bytesIn",
                                (json_int_t)c->bytes_out, "bytesOut", (json_int_t)c->bytes_in,
                                "requestId", r->request_id);
        if (c->installation)
            json_object_set(rec, "installationId", json_object_get(c->installation, "id"));
        if (c->prov)
            json_object_set_new(rec, "provider", json_string(c->prov->name));
        if (c->upstream_status)
            json_object_set_new(rec, "status", json_integer(c->upstream_status));
        if (c->error[0])
            json_object_set_new(rec, "error", json_string(c->error));
        pb_activity_add(r->app->activity, rec);
    }
    if (c->lease)
        pb_tokens_release(c->lease);
    json_decref(c->installation);
    json_decref(c->integration);
    for (size_t i = 0; i < c->n_fwd; i++) {
        free(c->fwd[i].name);
        free(c->fwd[i].value);
    }
    free(c->fwd);
    free(c->target);
    free(c->log_path);
    pb_buf_free(&c->replay);
    free(c);
}

static const char *header(struct call *c, const char *name)
{
    return pb_req_get_header(c->r, name);
}

/* The caller's API key from x-api-key or Authorization: Bearer. */
static const char *api_key_of(struct call *c)
{
    const char *k = header(c, "x-api-key");
    if (k && *k && c->style == STYLE_AMP)
        return k;
    const char *auth = header(c, "Authorization");
    if (auth && strncasecmp(auth, "Bearer ", 7) == 0 && auth[7])
        return auth + 7;
    return k && *k ? k : NULL;
}

static int parse_retry_options(struct call *c)
{
    const char *rt = header(c, "Retries");
    if (rt && *rt) {
        char *end;
        long n = strtol(rt, &end, 10);
        if (*end || n < 0 || n > MAX_RETRIES)
            return fail(c, 400, "invalid-header", "Invalid header", "Retries",
                        "Retries must be a whole number from 0 to %d", MAX_RETRIES), -1;
        c->retries = (int)n;
    }
    const char *ro = header(c, "Retry-On");
    if (ro && *ro) {
        char *copy = pb_xstrdup(ro), *save = NULL;
        for (char *t = strtok_r(copy, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
            char *end;
            long code = strtol(t, &end, 10);
            if (*end || code < 100 || code > 599 || c->n_retry_on >= 16) {
                free(copy);
                return fail(c, 400, "invalid-header", "Invalid header", "Retry-On",
                            "Retry-On must list HTTP status codes, such as 401,403"), -1;
            }
            c->retry_on[c->n_retry_on++] = (int)code;
        }
        free(copy);
    }
    const char *dz = header(c, "Decompress");
    c->decompress = dz && strcasecmp(dz, "true") == 0;
    return 0;
}

/* Finds the installation for the request's style. */
static int resolve_installation(struct call *c, const char *inst_id)
{
    struct pb_app *app = c->r->app;
    const char *pid = c->r->project_id;
    int rc;
    if (inst_id) {
        rc = pb_cache_installation(app->cache, pid, inst_id, &c->installation, &c->integration);
        if (rc == PB_STORE_NOTFOUND)
            return fail(c, 404, "unknown-installation", "Unknown installation",
                        c->style == STYLE_AMP ? "x-amp-installation-id" : NULL,
                        "installation '%s' not found", inst_id), -1;
        if (rc != 0)
            return fail(c, 503, "store-unavailable", "Store unavailable", NULL,
                        "the installation could not be read"), -1;
        return 0;
    }
    const char *name_h = c->style == STYLE_AMP ? "x-amp-integration-name" : "Provider-Config-Key";
    const char *group_h = c->style == STYLE_AMP ? "x-amp-group-ref" : "Connection-Id";
    const char *name = header(c, name_h), *group = header(c, group_h);
    if (!name || !*name)
        return fail(c, 400, "missing-header", "Missing header", name_h,
                    c->style == STYLE_AMP
                        ? "send x-amp-installation-id, or x-amp-integration-name with x-amp-group-ref"
                        : "send Provider-Config-Key with the integration name"),
               -1;
    if (!group || !*group)
        return fail(c, 400, "missing-header", "Missing header", group_h, "%s is required",
                    group_h), -1;
    int missing = 0;
    rc = pb_cache_installation_by_group(app->cache, pid, name, group, &c->installation,
                                        &c->integration, &missing);
    if (rc == PB_STORE_NOTFOUND && missing == 1)
        return fail(c, 404, "unknown-integration", "Unknown integration", name_h,
                    "integration '%s' not found", name), -1;
    if (rc == PB_STORE_NOTFOUND)
        return fail(c, 404, "unknown-connection", "Unknown installation", group_h,
                    "no installation of '%s' for group '%s'", name, group), -1;
    if (rc != 0)
        return fail(c, 503, "store-unavailable", "Store unavailable", NULL,
                    "the installation could not be read"), -1;
    return 0;
}

/* Everything decided from the request head; replies itself on failure. */
static int prepare(struct call *c, const char *inst_id, const char *target)
{
    struct pb_request *r = c->r;
    struct pb_app *app = r->app;
    const char *key = api_key_of(c);
    if (!key)
        return fail(c, 401, "unauthenticated", "Unauthenticated",
                    c->style == STYLE_AMP ? "x-api-key" : "Authorization",
                    "send an API key (%s)", c->style == STYLE_AMP ? "x-api-key" : "Authorization: Bearer"), -1;
    int krc = pb_cache_key_project(app->cache, key, r->project_id, sizeof r->project_id);
    if (krc == PB_STORE_ERR) {
        r->project_id[0] = '\0';
        return fail(c, 503, "store-unavailable", "Store unavailable", NULL,
                    "the API key could not be checked; try again"), -1;
    }
    if (krc != 0) {
        r->project_id[0] = '\0';
        return fail(c, 401, "unauthenticated", "Unauthenticated",
                    c->style == STYLE_AMP ? "x-api-key" : "Authorization",
                    "the API key is not valid"), -1;
    }
    if (c->style == STYLE_AMP) {
        const char *ver = header(c, "x-amp-proxy-version");
        if (!ver || strcmp(ver, "1") != 0)
            return fail(c, 400, "invalid-header", "Invalid header", "x-amp-proxy-version",
                        "x-amp-proxy-version must be 1"), -1;
        const char *proj = header(c, "x-amp-project-id");
        if (!proj || !*proj)
            return fail(c, 400, "missing-header", "Missing header", "x-amp-project-id",
                        "x-amp-project-id is required"), -1;
        json_t *pj = NULL;
        /* Another project's id answers as if it did not exist. */
        if (pb_cache_project(app->cache, proj, &pj) != 0 ||
            strcmp(json_string_value(json_object_get(pj, "id")), r->project_id) != 0) {
            json_decref(pj);
            return fail(c, 404, "not-found", "Not found", "x-amp-project-id",
                        "project '%s' not found", proj), -1;
        }
        json_decref(pj);
        const char *id = header(c, "x-amp-installation-id");
        if (id && *id)
            inst_id = id;
        const char *mode = header(c, "X-Amp-Rate-Limiter-Mode");
        c->throttle = mode && strcasecmp(mode, "throttle") == 0;
    }
    if (c->style == STYLE_NANGO && parse_retry_options(c) != 0)
        return -1;
    if (resolve_installation(c, inst_id) != 0)
        return -1;
    const char *inst = json_string_value(json_object_get(c->installation, "id"));
    if (!json_is_true(json_object_get(json_object_get(c->integration, "proxy"), "enabled")))
        return fail(c, 403, "proxy-disabled", "Proxy disabled", NULL,
                    "integration '%s' does not have proxy.enabled",
                    json_string_value(json_object_get(c->integration, "name"))), -1;
    const char *provider = json_string_value(json_object_get(c->integration, "provider"));
    c->prov = pb_registry_find(app->reg, provider);
    if (!c->prov)
        return fail(c, 503, "provider-disabled", "Provider not enabled", NULL,
                    "provider '%s' is not enabled in plugboard.yaml", provider), -1;
    struct block b;
    if (c->throttle && blocked(inst, &b)) {
        add_retry_headers(r, b.until_ms, b.retryable);
        return fail(c, 429, "rate-limited", "Rate limited", NULL,
                    "the provider is rate limiting installation '%s'; retry after the time in "
                    "X-Amp-Retry-After", inst), -1;
    }
    const char *why = pb_proxy_check_target(target);
    if (why)
        return fail(c, 400, "invalid-path", "Invalid path", NULL, "%s", why), -1;
    const char *override = header(c, "Base-Url-Override");
    if (c->style == STYLE_NANGO && override && *override)
        return fail(c, 400, "base-url-override-refused", "Base URL override refused",
                    "Base-Url-Override",
                    "integration '%s' does not allow a base URL override",
                    json_string_value(json_object_get(c->integration, "name"))), -1;
    const char *conn_id = json_string_value(json_object_get(c->installation, "connectionId"));
    if (!conn_id)
        return fail(c, 424, "no-connection", "No connection", NULL,
                    "installation '%s' has no connection", inst), -1;
    struct pb_problem p = {0};
    if (pb_tokens_acquire(app->tokens, r->project_id, conn_id, c->prov, &c->lease, &p) != 0) {
        fail(c, p.status, p.slug, p.title, NULL, "%s", p.detail);
        pb_problem_free(&p);
        return -1;
    }
    struct pb_error err;
    pb_error_clear(&err);
    if (c->prov->vt->base_url(c->prov->state, &c->lease->view, c->base_url, sizeof c->base_url,
                              &err) != 0)
        return fail(c, 424, "no-base-url", "No base URL", NULL,
                    "provider '%s' has no base URL for this connection: %s", provider,
                    err.message), -1;
    const char *q = strchr(r->raw_uri, '?');
    c->target = q ? pb_xasprintf("%s%s", target, q) : pb_xstrdup(target);
    c->log_path = pb_xstrdup(target);
    const char *cl = header(c, "Content-Length"), *te = header(c, "Transfer-Encoding");
    c->body_len = -1;
    /* Transfer-Encoding overrides Content-Length (RFC 9112 6.3): the body
     * arrives as the server decoded it, of a length not known yet. */
    if (te) {
        c->has_body = 1;
    } else if (cl) {
        c->body_len = strtoll(cl, NULL, 10);
        c->has_body = c->body_len > 0 || strcmp(r->method, "GET") != 0;
    }
    if (strcmp(r->method, "GET") == 0 && c->body_len <= 0 && !te)
        c->has_body = 0;
    c->replayable = 1;
    struct collect_ctx x = {c, header(c, "Connection")};
    MHD_get_connection_values(r->conn, MHD_HEADER_KIND, collect_header, &x);
    if (c->bad_header)
        return fail(c, 400, "invalid-header", "Invalid header", c->bad_header,
                    "header '%.100s' has a malformed name or a value with CR or LF",
                    c->bad_header), -1;
    if (start_attempt(c, &why) != 0) {
        if (why)
            return fail(c, 400, "invalid-path", "Invalid path", NULL, "%s", why), -1;
        return -1;
    }
    return 0;
}

static int on_headers(struct pb_request *r)
{
    struct call *c = pb_xcalloc(1, sizeof *c);
    c->r = r;
    r->route_state = c;
    r->route_state_free = call_free;
    const char *target = r->path;
    const char *inst_id = NULL;
    char idbuf[128] = "";
    if (r->route == &pb_route_amp_proxy) {
        c->style = STYLE_AMP;
    } else if (strncmp(r->path, "/proxy", 6) == 0) {
        c->style = STYLE_NANGO;
        target = r->path + 6;
    } else {
        c->style = STYLE_SDK;
        const char *id = r->path + 5; /* after "/sdk/" */
        const char *slash = strchr(id, '/');
        size_t n = slash ? (size_t)(slash - id) : strlen(id);
        snprintf(idbuf, sizeof idbuf, "%.*s", (int)(n < sizeof idbuf ? n : sizeof idbuf - 1), id);
        inst_id = idbuf;
        target = slash ? slash : "/";
    }
    if (!*target)
        target = "/";
    prepare(c, inst_id, target);
    return MHD_YES;
}

static int on_upload(struct pb_request *r, const char *data, size_t len)
{
    struct call *c = r->route_state;
    if (!c || !c->stream)
        return -1;
    if (c->replayable) {
        if (c->replay.len + len <= REPLAY_MAX) {
            pb_buf_append(&c->replay, data, len);
        } else {
            c->replayable = 0;
            pb_buf_free(&c->replay);
        }
    }
    if (pb_stream_feed(c->stream, data, len) != 0) {
        c->upload_failed = 1;
        return -1;
    }
    return 0;
}

/* ---- the response ------------------------------------------------------------ */

static long read_body(void *ctx, char *buf, size_t max)
{
    struct call *c = ctx;
    if (c->buffered) {
        size_t left = c->buffered->body_len - c->buffered_off;
        size_t n = left < max ? left : max;
        memcpy(buf, c->buffered->body + c->buffered_off, n);
        c->buffered_off += n;
        return (long)n;
    }
    return pb_stream_read(c->stream, buf, max);
}

static int relay(struct call *c)
{
    size_t n;
    const struct pb_header *h;
    struct pb_header *out = NULL;
    size_t k = 0;
    const char *conn_hdr = NULL;
    if (c->buffered) {
        h = c->buffered->headers;
        n = c->buffered->n_headers;
    } else {
        h = pb_stream_headers(c->stream, &n);
    }
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(h[i].name, "connection") == 0)
            conn_hdr = h[i].value;
    out = pb_xcalloc(n ? n : 1, sizeof *out);
    for (size_t i = 0; i < n; i++) {
        if (is_hop_by_hop(h[i].name, conn_hdr) || strcasecmp(h[i].name, "content-length") == 0 ||
            strcasecmp(h[i].name, "x-request-id") == 0)
            continue;
        /* A decoded body no longer has the upstream's encoding. */
        if (c->decompress && strcasecmp(h[i].name, "content-encoding") == 0)
            continue;
        out[k++] = h[i];
    }
    int64_t len;
    if (c->buffered)
        len = (int64_t)c->buffered->body_len;
    else if (c->decompress && pb_stream_header(c->stream, "content-encoding"))
        len = -1;
    else
        len = pb_stream_content_length(c->stream);
    int rc = pb_reply_stream(c->r, (unsigned)c->upstream_status, out, k, len, read_body, c);
    free(out);
    return rc;
}

/* The core's default reading of a response, refined by the plugin. */
static void classify(struct call *c, struct pb_http_response *resp, struct pb_classification *cl)
{
    memset(cl, 0, sizeof *cl);
    cl->struct_size = sizeof *cl;
    int st = resp->status;
    cl->retryable = st == 429 || st >= 500;
    cl->rate_limited = st == 429;
    cl->auth_invalid = st == 401;
    const char *ra = NULL;
    for (size_t i = 0; i < resp->n_headers; i++)
        if (strcasecmp(resp->headers[i].name, "retry-after") == 0)
            ra = resp->headers[i].value;
    if (ra) {
        char *end;
        long secs = strtol(ra, &end, 10);
        if (*ra && !*end && secs >= 0)
            cl->retry_at_ms = pb_now_ms() + secs * 1000LL;
        else if (pb_parse_http_date(ra) > 0)
            cl->retry_at_ms = pb_parse_http_date(ra);
    }
    if (c->prov->vt->classify)
        c->prov->vt->classify(c->prov->state, resp, cl);
}

static int wants_retry(struct call *c, int status, const struct pb_classification *cl)
{
    if (c->attempts > c->retries)
        return 0;
    for (size_t i = 0; i < c->n_retry_on; i++)
        if (c->retry_on[i] == status)
            return 1;
    return status == 429 || status >= 500 || cl->retryable;
}

/* Sleeps before the next attempt: the provider's time, else exponential
 * backoff with jitter; 0 when that would pass the egress deadline. */
static int backoff(struct call *c, int64_t retry_at, int64_t deadline)
{
    int64_t now = pb_now_ms();
    int64_t wait;
    if (retry_at > now) {
        wait = retry_at - now;
    } else {
        int64_t base = 200LL << (c->attempts < 8 ? c->attempts - 1 : 7);
        wait = base / 2 + (int64_t)(randombytes_uniform((uint32_t)(base / 2 + 1)));
    }
    if (pb_mono_ms() + wait > deadline)
        return 0;
    struct timespec ts = {(time_t)(wait / 1000), (long)(wait % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    return 1;
}

static int restart(struct call *c)
{
    end_attempt(c);
    const char *why;
    if (start_attempt(c, &why) != 0)
        return -1;
    if (c->has_body && c->replay.len && pb_stream_feed(c->stream, c->replay.data, c->replay.len) != 0)
        return -1;
    return 0;
}

static int finish(struct pb_request *r)
{
    struct call *c = r->route_state;
    if (!c || !c->stream)
        return MHD_NO; /* already answered in on_headers */
    struct pb_app *app = r->app;
    int64_t deadline = pb_mono_ms() + pb_egress_timeout_ms(app->egress);
    int refreshed = 0;
    const char *inst = json_string_value(json_object_get(c->installation, "id"));
    for (;;) {
        struct pb_egress_result res;
        if (c->upload_failed || pb_stream_wait_headers(c->stream, &res) != 0) {
            if (c->upload_failed)
                pb_stream_wait_headers(c->stream, &res);
            if (res.fail != PB_EGRESS_POLICY && c->replayable && c->attempts <= c->retries &&
                backoff(c, 0, deadline) && restart(c) == 0)
                continue;
            if (res.fail == PB_EGRESS_POLICY)
                return fail(c, 403, "egress-refused", "Destination refused", NULL, "%s",
                            res.message);
            return fail(c, res.fail == PB_EGRESS_TIMEOUT ? 504 : 502,
                        res.fail == PB_EGRESS_TIMEOUT ? "provider-timeout" : "provider-unreachable",
                        res.fail == PB_EGRESS_TIMEOUT ? "Provider timeout" : "Provider unreachable",
                        NULL, "%s", res.message);
        }
        c->upstream_status = pb_stream_status(c->stream);
        int st = c->upstream_status;
        if (st < 400) {
            if (c->throttle)
                block_clear(inst);
            return relay(c);
        }
        /* Error bodies are small: read them so the plugin can classify. */
        c->buffered = pb_stream_buffer(c->stream, CLASSIFY_BODY_MAX);
        /* That read to the end: of the body, or of a transfer that broke
         * off? A cut body must not go out as a complete answer. */
        char more;
        if (pb_stream_read(c->stream, &more, 1) < 0) {
            if (c->replayable && c->attempts <= c->retries && backoff(c, 0, deadline) &&
                restart(c) == 0)
                continue;
            return fail(c, 502, "provider-unreachable", "Provider unreachable", NULL,
                        "the provider's answer (HTTP %d) broke off before its end", st);
        }
        struct pb_classification cl;
        classify(c, c->buffered, &cl);
        if (cl.auth_invalid && !refreshed && c->replayable &&
            (pb_provider_caps(c->prov) & PB_CAP_OAUTH2_REFRESH)) {
            refreshed = 1;
            struct pb_cred_lease *fresh = NULL;
            struct pb_problem p = {0};
            if (pb_tokens_refresh_after_401(app->tokens, c->lease, c->prov, &fresh, &p) == 0) {
                /* Same version: nothing new to try (an API key, say). */
                if (fresh->version == c->lease->version) {
                    pb_tokens_release(fresh);
                    return relay(c);
                }
                pb_tokens_release(c->lease);
                c->lease = fresh;
                if (restart(c) == 0)
                    continue;
                return fail(c, 502, "provider-unreachable", "Provider unreachable", NULL,
                            "the retry after refreshing the token could not be sent");
            }
            int rc = fail(c, p.status, p.slug, p.title, NULL, "%s", p.detail);
            pb_problem_free(&p);
            return rc;
        }
        if (c->style == STYLE_NANGO && c->replayable && wants_retry(c, st, &cl) &&
            backoff(c, cl.retry_at_ms, deadline) && restart(c) == 0)
            continue;
        if (c->throttle && (st == 429 || cl.rate_limited)) {
            int64_t until = cl.retry_at_ms;
            block_until(app, inst, until, cl.retryable || st == 429);
            struct block b;
            if (blocked(inst, &b))
                add_retry_headers(r, b.until_ms, b.retryable);
            c->upstream_status = 429;
        }
        return relay(c);
    }
}

/* GET /v1/projects/{project}/activity?installationId=&limit= */
static int activity_list(struct pb_request *r)
{
    int rc;
    if (pb_auth_project(r, &rc) != 0)
        return rc;
    int limit = 100;
    const char *ls = pb_req_query(r, "limit");
    if (ls) {
        char *end;
        long v = strtol(ls, &end, 10);
        if (!*ls || *end || v < 1 || v > 1000)
            return pb_reply_problem(r, 400, "invalid-request", "Invalid request",
                                    "limit must be a whole number from 1 to 1000", 0,
                                    json_pack("[o]", pb_issue("query", "limit", "1 to 1000")));
        limit = (int)v;
    }
    pb_activity_flush(r->app->activity);
    json_t *out = NULL;
    if (pb_store_activity_list(r->app->store, r->project_id, pb_req_query(r, "installationId"),
                               limit, &out) != 0)
        return pb_reply_problem(r, 503, "store-unavailable", "Store unavailable",
                                "the store failed; try again", 1, NULL);
    return pb_reply_json(r, 200, json_pack("{s:o}", "activity", out));
}

const struct pb_route pb_route_amp_proxy = {"*", "/", finish, PB_ROUTE_STREAM, on_headers,
                                            on_upload};

const struct pb_route pb_routes_proxy[] = {
    {"*", "/proxy/*", finish, PB_ROUTE_STREAM | PB_ROUTE_PREFIX, on_headers, on_upload},
    {"*", "/sdk/{installation}/*", finish, PB_ROUTE_STREAM | PB_ROUTE_PREFIX, on_headers,
     on_upload},
    {"GET", "/v1/projects/{project}/activity", activity_list, 0},
    {NULL, NULL, NULL, 0, NULL, NULL},
};
