/* Connection credentials in memory: one immutable, reference-counted
 * snapshot per connection, reloaded when the store's generation moves and
 * replaced by at most one refresh at a time per connection. The global
 * mutex guards only in-memory state; store and HTTP calls run without it,
 * while the connection's entry is marked busy and later callers for that
 * connection wait on the entry's condition variable. */
#include "tokens.h"
#include "app.h"
#include "config.h"
#include "control.h"
#include "egress.h"
#include "http.h"
#include "loader.h"
#include "log.h"
#include "secrets.h"
#include "store.h"
#include "util.h"
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REFUSED_BACKOFF_MIN_MS 5000LL
#define REFUSED_BACKOFF_MAX_MS (10LL * 60 * 1000)
#define BRIEF_BACKOFF_MS 1000LL
#define RETRY_AFTER_MAX_MS (10LL * 60 * 1000)
#define MAX_EXPIRES_IN_S (10LL * 365 * 24 * 3600)

/* ---- snapshots ------------------------------------------------------------- */

struct snap {
    atomic_int refs;
    struct pb_credentials view;   /* strings point into arena */
    char *id, *project_id, *provider;
    long long version;
    int64_t expires_at_ms;        /* 0: unknown */
    int64_t lifetime_ms;          /* token lifetime when we obtained it; 0: unknown */
    uint64_t gen;                 /* store generation this snapshot is current for */
    char *plain;                  /* decrypted credentials JSON */
    size_t plain_len;
    char *arena;                  /* the view's strings */
    size_t arena_len;
    json_t *metadata;             /* providerMetadata, never NULL, read-only */
};

static void wipe(void *p, size_t n)
{
    if (p && n)
        sodium_memzero(p, n);
}

/* Clears the string values of a parsed credentials object before it is
 * freed (jansson keeps its own copies of them). */
static void wipe_json_strings(json_t *o)
{
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v) {
        if (json_is_string(v))
            wipe((char *)json_string_value(v), json_string_length(v));
    }
}

static void snap_ref(struct snap *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

static void snap_unref(struct snap *s)
{
    if (!s || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    wipe(s->plain, s->plain_len);
    wipe(s->arena, s->arena_len);
    free(s->plain);
    free(s->arena);
    json_decref(s->metadata);
    free(s->id);
    free(s->project_id);
    free(s->provider);
    free(s);
}

static const char *const cred_keys[] = {"auth_type", "access_token", "refresh_token", "api_key",
                                        "username",  "password",     "client_id",     "client_secret",
                                        "scopes"};
#define N_CRED_KEYS (sizeof cred_keys / sizeof cred_keys[0])

/* A snapshot from decrypted credentials JSON (copied) and metadata
 * (stolen). NULL when the JSON is not a credentials object. */
static struct snap *snap_new(const char *id, const char *project_id, const char *provider,
                             long long version, int64_t expires_at_ms, int64_t lifetime_ms,
                             uint64_t gen, const char *plain, size_t plain_len, json_t *metadata)
{
    json_t *c = json_loadb(plain, plain_len, 0, NULL);
    if (!json_is_object(c) || !json_is_string(json_object_get(c, "auth_type"))) {
        if (json_is_object(c))
            wipe_json_strings(c);
        json_decref(c);
        json_decref(metadata);
        return NULL;
    }
    struct snap *s = pb_xcalloc(1, sizeof *s);
    atomic_init(&s->refs, 1);
    s->id = pb_xstrdup(id);
    s->project_id = pb_xstrdup(project_id);
    s->provider = pb_xstrdup(provider ? provider : "");
    s->version = version;
    s->expires_at_ms = expires_at_ms > 0 ? expires_at_ms : 0;
    s->lifetime_ms = lifetime_ms > 0 ? lifetime_ms : 0;
    s->gen = gen;
    s->plain = pb_xmalloc(plain_len + 1);
    memcpy(s->plain, plain, plain_len);
    s->plain[plain_len] = '\0';
    s->plain_len = plain_len;
    s->metadata = json_is_object(metadata) ? metadata : json_object();
    if (s->metadata != metadata)
        json_decref(metadata);

    const char *vals[N_CRED_KEYS];
    size_t total = 0;
    for (size_t i = 0; i < N_CRED_KEYS; i++) {
        vals[i] = json_string_value(json_object_get(c, cred_keys[i]));
        if (vals[i])
            total += strlen(vals[i]) + 1;
    }
    s->arena = pb_xmalloc(total ? total : 1);
    s->arena_len = total;
    const char *ptrs[N_CRED_KEYS];
    char *w = s->arena;
    for (size_t i = 0; i < N_CRED_KEYS; i++) {
        ptrs[i] = NULL;
        if (vals[i]) {
            size_t n = strlen(vals[i]) + 1;
            memcpy(w, vals[i], n);
            ptrs[i] = w;
            w += n;
        }
    }
    wipe_json_strings(c);
    json_decref(c);

    struct pb_credentials *v = &s->view;
    v->struct_size = sizeof *v;
    v->auth_type = ptrs[0];
    v->access_token = ptrs[1];
    v->refresh_token = ptrs[2];
    v->api_key = ptrs[3];
    v->username = ptrs[4];
    v->password = ptrs[5];
    v->client_id = ptrs[6];
    v->client_secret = ptrs[7];
    v->scopes = ptrs[8];
    v->expires_at = s->expires_at_ms / 1000;
    v->metadata = s->metadata;
    return s;
}

/* ---- the cache ------------------------------------------------------------- */

enum fail_kind { FAIL_NONE = 0, FAIL_REFUSED, FAIL_UNAVAILABLE, FAIL_STORE, FAIL_CONFIG };

struct entry {
    struct entry *next;
    char *key;                     /* project id, '\n', connection id */
    struct snap *snap;             /* current snapshot (one ref) or NULL */
    uint64_t missing_gen;          /* the store had no such connection at this generation */
    int busy;                      /* a load or refresh is in flight */
    pthread_cond_t cond;           /* signalled when busy drops */
    /* Back-off after a failed refresh of snapshot version fail_version. */
    int64_t fail_until_ms;
    long long fail_version;
    enum fail_kind fail_kind;
    unsigned refused;              /* consecutive refusals: the back-off exponent */
    struct pb_problem fail;        /* what callers in the window get (no issues) */
};

struct pb_tokens {
    struct pb_app *app;
    int64_t margin_ms;
    pthread_mutex_t mu;
    struct entry **buckets;
    size_t nbuckets, n;
    atomic_uint_fast64_t refreshes;
};

static uint64_t hash_key(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

static void grow(struct pb_tokens *t)
{
    size_t nb = t->nbuckets * 2;
    struct entry **b = pb_xcalloc(nb, sizeof *b);
    for (size_t i = 0; i < t->nbuckets; i++) {
        struct entry *e = t->buckets[i], *next;
        for (; e; e = next) {
            next = e->next;
            size_t j = hash_key(e->key) & (nb - 1);
            e->next = b[j];
            b[j] = e;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = nb;
}

/* The entry for a connection, created empty when new. Lock held. Entries
 * live until pb_tokens_free, so a waiter's entry cannot vanish. */
static struct entry *entry_get(struct pb_tokens *t, const char *project_id, const char *id)
{
    size_t lp = strlen(project_id), li = strlen(id);
    char stackkey[256];
    char *key = lp + li + 2 <= sizeof stackkey ? stackkey : pb_xmalloc(lp + li + 2);
    memcpy(key, project_id, lp);
    key[lp] = '\n';
    memcpy(key + lp + 1, id, li + 1);
    size_t i = hash_key(key) & (t->nbuckets - 1);
    struct entry *e;
    for (e = t->buckets[i]; e; e = e->next)
        if (strcmp(e->key, key) == 0)
            break;
    if (!e) {
        e = pb_xcalloc(1, sizeof *e);
        e->key = pb_xstrdup(key);
        pthread_cond_init(&e->cond, NULL);
        e->next = t->buckets[i];
        t->buckets[i] = e;
        if (++t->n > t->nbuckets)
            grow(t);
    }
    if (key != stackkey)
        free(key);
    return e;
}

int pb_tokens_init(struct pb_app *app, struct pb_tokens **out)
{
    *out = NULL;
    if (!app || !app->cfg || !app->store)
        return -1;
    struct pb_tokens *t = pb_xcalloc(1, sizeof *t);
    t->app = app;
    long margin = app->cfg->tokens.refresh_margin_s;
    t->margin_ms = margin > 0 ? (int64_t)margin * 1000 : 0;
    pthread_mutex_init(&t->mu, NULL);
    t->nbuckets = 64;
    t->buckets = pb_xcalloc(t->nbuckets, sizeof *t->buckets);
    atomic_init(&t->refreshes, 0);
    *out = t;
    return 0;
}

void pb_tokens_free(struct pb_tokens *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->nbuckets; i++) {
        struct entry *e = t->buckets[i], *next;
        for (; e; e = next) {
            next = e->next;
            snap_unref(e->snap);
            pthread_cond_destroy(&e->cond);
            pb_problem_free(&e->fail);
            free(e->key);
            free(e);
        }
    }
    free(t->buckets);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

uint64_t pb_tokens_refresh_count(const struct pb_tokens *t)
{
    return t ? atomic_load((atomic_uint_fast64_t *)&t->refreshes) : 0;
}

/* ---- policy ------------------------------------------------------------------ */

static int is_type(const struct snap *s, const char *type)
{
    return s->view.auth_type && strcmp(s->view.auth_type, type) == 0;
}

static int has_token(const struct snap *s)
{
    return s->view.access_token && *s->view.access_token;
}

static int can_refresh(const struct snap *s, const struct pb_provider *prov)
{
    return prov && (pb_provider_caps(prov) & PB_CAP_OAUTH2_REFRESH) &&
           (is_type(s, "oauth2") || is_type(s, "oauth2_cc"));
}

static int expiring(const struct pb_tokens *t, const struct snap *s, int64_t now)
{
    if (s->expires_at_ms <= 0)
        return 0;
    /* A token we were just given for less than twice the margin is not
     * refreshed again at once: half its lifetime is margin enough. */
    int64_t margin = t->margin_ms;
    if (s->lifetime_ms > 0 && s->lifetime_ms / 2 < margin)
        margin = s->lifetime_ms / 2;
    return now + margin >= s->expires_at_ms;
}

static int needs_refresh(const struct pb_tokens *t, const struct snap *s,
                         const struct pb_provider *prov, int64_t now)
{
    if (!can_refresh(s, prov))
        return 0;
    /* An oauth2 connection stored with only a refresh token needs one too. */
    return !has_token(s) || expiring(t, s, now);
}

/* The access token can still be sent: present and not past its expiry. */
static int usable(const struct snap *s, int64_t now)
{
    return has_token(s) && (s->expires_at_ms <= 0 || now < s->expires_at_ms);
}

static void copy_problem(struct pb_problem *dst, const struct pb_problem *src)
{
    pb_problem_set(dst, src->status, src->slug, src->title, NULL, "%s", src->detail);
    dst->retryable = src->retryable;
}

static void log_event(enum pb_log_level level, const char *msg, const char *id,
                      const char *provider, const char *detail)
{
    if (!pb_log_enabled(level))
        return;
    json_t *f = json_pack("{s:s, s:s, s:s}", "component", "tokens", "connectionId", id,
                          "provider", provider ? provider : "");
    if (detail)
        json_object_set_new(f, "detail", json_string(detail));
    pb_log_json(level, msg, f);
}

/* ---- store I/O (no lock held) ------------------------------------------------- */

/* Loads the connection's snapshot, current for generation `gen` (read
 * before the load). PB_STORE_NOTFOUND leaves p untouched. */
static int load(struct pb_tokens *t, const char *project_id, const char *id, uint64_t gen,
                struct snap **out, struct pb_problem *p)
{
    json_t *conn = NULL;
    char *sealed = NULL;
    *out = NULL;
    int rc = pb_store_connection_get(t->app->store, project_id, id, &conn, &sealed);
    if (rc == PB_STORE_NOTFOUND)
        return rc;
    if (rc != PB_STORE_OK) {
        pb_problem_set(p, 503, "store-unavailable", "Store unavailable", NULL,
                       "the credentials of connection '%s' could not be read; try again", id);
        return PB_STORE_ERR;
    }
    size_t len = 0;
    char *plain = pb_secret_unseal(sealed, &len);
    free(sealed);
    struct snap *s = NULL;
    if (plain) {
        const char *exp = json_string_value(json_object_get(conn, "accessTokenExpiresAt"));
        int64_t exp_ms = exp ? pb_parse_rfc3339(exp) : 0;
        json_t *md = json_object_get(conn, "providerMetadata");
        s = snap_new(id, project_id, json_string_value(json_object_get(conn, "provider")),
                     json_integer_value(json_object_get(conn, "version")), exp_ms, 0, gen, plain,
                     len, json_is_object(md) ? json_deep_copy(md) : json_object());
        pb_secret_free(plain);
    }
    json_decref(conn);
    if (!s) {
        pb_problem_set(p, 500, "credentials-unreadable", "Credentials unreadable", NULL,
                       "the stored credentials of connection '%s' cannot be decrypted or read",
                       id);
        return PB_STORE_ERR;
    }
    *out = s;
    return PB_STORE_OK;
}

struct outcome {
    struct snap *snap;          /* success: the new current snapshot */
    int notfound;               /* the connection disappeared */
    enum fail_kind kind;
    int64_t backoff_ms;
    struct pb_problem prob;
};

static void fail_refused(struct outcome *o, const struct snap *s, int64_t backoff_ms,
                         const char *why, const char *msg)
{
    o->kind = FAIL_REFUSED;
    o->backoff_ms = backoff_ms;
    pb_problem_set(&o->prob, 424, "reauthorization-required", "Reauthorization required", NULL,
                   "connection %s needs re-authorization: %s: %s", s->id, why, msg);
    o->prob.retryable = 0;
}

static void fail_unavailable(struct outcome *o, const struct snap *s, int64_t backoff_ms,
                             int retryable, const char *detail)
{
    o->kind = FAIL_UNAVAILABLE;
    o->backoff_ms = backoff_ms;
    pb_problem_set(&o->prob, 502, "token-refresh-unavailable", "Token refresh unavailable", NULL,
                   "the token of connection %s could not be refreshed: %s", s->id, detail);
    o->prob.retryable = retryable;
}

static int64_t retry_after_ms(const struct pb_http_response *resp, int64_t now)
{
    const char *v = pb_services()->resp_header(resp, "Retry-After");
    if (!v || !*v)
        return 0;
    char *end;
    long long secs = strtoll(v, &end, 10);
    int64_t ms;
    if (end != v && *end == '\0')
        ms = secs <= 0 ? 0 : secs > RETRY_AFTER_MAX_MS / 1000 ? RETRY_AFTER_MAX_MS : secs * 1000;
    else {
        int64_t at = pb_parse_http_date(v);
        ms = at > now ? at - now : 0;
    }
    return ms > RETRY_AFTER_MAX_MS ? RETRY_AFTER_MAX_MS : ms;
}

/* Sets a string member, wiping the value it replaces. */
static void set_secret(json_t *c, const char *key, const char *value)
{
    json_t *old = json_object_get(c, key);
    if (json_is_string(old))
        wipe((char *)json_string_value(old), json_string_length(old));
    json_object_set_new(c, key, json_string(value));
}

/* The new credentials JSON: the old one (unknown keys kept) with the token
 * response applied; the old refresh token stays when none came back. */
static char *updated_plain(const struct snap *s, const json_t *tok)
{
    json_t *c = json_loadb(s->plain, s->plain_len, 0, NULL);
    if (!json_is_object(c)) {
        json_decref(c);
        return NULL;
    }
    set_secret(c, "access_token", json_string_value(json_object_get(tok, "access_token")));
    const char *rt = json_string_value(json_object_get(tok, "refresh_token"));
    if (rt && *rt)
        set_secret(c, "refresh_token", rt);
    const char *sc = json_string_value(json_object_get(tok, "scopes"));
    if (sc && *sc)
        json_object_set_new(c, "scopes", json_string(sc));
    char *plain = json_dumps(c, JSON_COMPACT);
    wipe_json_strings(c);
    json_decref(c);
    return plain;
}

/* One upstream refresh of snapshot s, then the store write. Fills o. */
static void refresh(struct pb_tokens *t, const struct snap *s, const struct pb_provider *prov,
                    unsigned prior_refusals, struct outcome *o)
{
    const struct pb_plugin *vt = prov->vt;
    struct pb_app *app = t->app;
    unsigned shift = prior_refusals > 10 ? 10 : prior_refusals;
    int64_t refused_backoff = REFUSED_BACKOFF_MIN_MS << shift;
    if (refused_backoff > REFUSED_BACKOFF_MAX_MS)
        refused_backoff = REFUSED_BACKOFF_MAX_MS;
    struct pb_error err;
    struct pb_http_request *req = pb_req_new();
    struct pb_http_response *resp = NULL;
    json_t *tok = NULL, *merge = NULL, *md = NULL;
    char *plain = NULL, *sealed = NULL;
    pb_error_clear(&err);

    if (vt->build_token_refresh(prov->state, &s->view, req, &err) != 0) {
        if (err.code == PB_ECONFIG || err.code == PB_ENOMEM) {
            o->kind = FAIL_CONFIG;
            o->backoff_ms = BRIEF_BACKOFF_MS;
            pb_problem_set(&o->prob, 500, "provider-config", "Provider misconfigured", NULL,
                           "provider '%s' cannot refresh the token of connection %s: %s",
                           prov->name, s->id, err.message[0] ? err.message : "plugin error");
        } else {
            fail_refused(o, s, refused_backoff, "the token refresh cannot be made",
                         err.message[0] ? err.message : "the plugin refused");
        }
        goto out;
    }
    char base[2048];
    struct pb_error berr;
    pb_error_clear(&berr);
    /* Token endpoints are absolute URLs; the base only serves relative ones. */
    if (vt->base_url(prov->state, &s->view, base, sizeof base, &berr) != 0)
        base[0] = '\0';
    if (!app->egress) {
        fail_unavailable(o, s, BRIEF_BACKOFF_MS, 0, "outbound HTTP is not set up");
        goto out;
    }
    atomic_fetch_add(&t->refreshes, 1);
    struct pb_egress_result res;
    if (pb_egress_send(app->egress, req, base[0] ? base : NULL, &resp, &res) != 0) {
        char d[400];
        snprintf(d, sizeof d, "the token endpoint of provider '%s' could not be reached: %s",
                 prov->name, res.message);
        fail_unavailable(o, s, BRIEF_BACKOFF_MS,
                         res.fail == PB_EGRESS_NETWORK || res.fail == PB_EGRESS_TIMEOUT, d);
        goto out;
    }
    pb_error_clear(&err);
    int prc = vt->parse_token_response(prov->state, resp, &tok, &err);
    int status = resp->status;
    int64_t now = pb_now_ms();
    if (status >= 500 || status == 429 || status == 408) {
        char d[700];
        snprintf(d, sizeof d, "the token endpoint of provider '%s' answered HTTP %d%s%s",
                 prov->name, status, err.message[0] ? ": " : "", err.message);
        int64_t ra = retry_after_ms(resp, now);
        fail_unavailable(o, s, ra > BRIEF_BACKOFF_MS ? ra : BRIEF_BACKOFF_MS, 1, d);
        goto out;
    }
    if (prc != 0 || !json_is_object(tok) ||
        !json_is_string(json_object_get(tok, "access_token")) ||
        json_string_length(json_object_get(tok, "access_token")) == 0) {
        char d[560];
        if (err.message[0])
            snprintf(d, sizeof d, "%s", err.message);
        else
            snprintf(d, sizeof d, "HTTP %d without an access token", status);
        fail_refused(o, s, refused_backoff, "the provider refused the token refresh", d);
        goto out;
    }

    /* Success upstream: build, seal and store the new credentials. */
    json_t *ein = json_object_get(tok, "expires_in");
    long long expires_in = json_is_integer(ein) ? (long long)json_integer_value(ein)
                           : json_is_real(ein)  ? (long long)json_real_value(ein)
                                                : 0;
    if (expires_in > MAX_EXPIRES_IN_S)
        expires_in = MAX_EXPIRES_IN_S;
    int64_t expires_at = expires_in > 0 ? now + expires_in * 1000 : 0;
    md = json_deep_copy(s->metadata);
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(tok, "metadata"), k, v) {
        if (!json_is_string(v))
            continue;
        if (!merge)
            merge = json_object();
        json_object_set_new(merge, k, json_pack("{s:O}", "value", v));
        json_object_set_new(md, k, json_pack("{s:O}", "value", v));
    }
    plain = updated_plain(s, tok);
    sealed = plain ? pb_secret_seal(plain, strlen(plain)) : NULL;
    if (!sealed) {
        o->kind = FAIL_STORE;
        o->backoff_ms = BRIEF_BACKOFF_MS;
        pb_problem_set(&o->prob, 500, "credentials-unreadable", "Credentials unreadable", NULL,
                       "the refreshed credentials of connection %s could not be sealed", s->id);
        goto out;
    }
    uint64_t g0 = pb_store_generation(app->store);
    long long nv = 0;
    int rc = pb_store_connection_update_credentials(app->store, s->id, s->version, sealed,
                                                    expires_at, merge, &nv);
    uint64_t g1 = pb_store_generation(app->store);
    if (rc == PB_STORE_OK) {
        /* Only our write moved the generation: the snapshot is current. */
        uint64_t gen = g1 == g0 + 1 ? g1 : g0;
        o->snap = snap_new(s->id, s->project_id, s->provider, nv, expires_at, expires_in * 1000,
                           gen, plain, strlen(plain), md);
        md = NULL;
        if (!o->snap) {
            o->kind = FAIL_STORE;
            o->backoff_ms = BRIEF_BACKOFF_MS;
            pb_problem_set(&o->prob, 500, "credentials-unreadable", "Credentials unreadable",
                           NULL, "the refreshed credentials of connection %s are unusable",
                           s->id);
        } else {
            log_event(PB_LOG_INFO, "token refreshed", s->id, s->provider, NULL);
        }
    } else if (rc == PB_STORE_CONFLICT) {
        /* Another writer (another node) stored newer credentials: use them. */
        uint64_t g = pb_store_generation(app->store);
        struct snap *fresh = NULL;
        int lrc = load(t, s->project_id, s->id, g, &fresh, &o->prob);
        if (lrc == PB_STORE_NOTFOUND) {
            o->notfound = 1;
        } else if (lrc != PB_STORE_OK || fresh->version == s->version) {
            snap_unref(fresh);
            if (lrc == PB_STORE_OK)
                pb_problem_set(&o->prob, 503, "store-unavailable", "Store unavailable", NULL,
                               "the refreshed token of connection %s could not be stored; "
                               "try again", s->id);
            o->kind = FAIL_STORE;
            o->backoff_ms = BRIEF_BACKOFF_MS;
        } else {
            o->snap = fresh;
            log_event(PB_LOG_INFO, "token refreshed elsewhere; using the stored one", s->id,
                      s->provider, NULL);
        }
    } else if (rc == PB_STORE_NOTFOUND) {
        o->notfound = 1;
    } else {
        o->kind = FAIL_STORE;
        o->backoff_ms = BRIEF_BACKOFF_MS;
        pb_problem_set(&o->prob, 503, "store-unavailable", "Store unavailable", NULL,
                       "the refreshed token of connection %s could not be stored; try again",
                       s->id);
    }
out:
    if (o->kind == FAIL_REFUSED) {
        int frc = pb_store_connection_refresh_failed(app->store, s->id,
                                                     pb_now_ms() + o->backoff_ms,
                                                     "needs_reauthorization");
        if (frc == PB_STORE_NOTFOUND) {
            o->notfound = 1;
            o->kind = FAIL_NONE;
            pb_problem_clear(&o->prob);
        }
    }
    if (o->kind != FAIL_NONE)
        log_event(PB_LOG_WARN, "token refresh failed", s->id, s->provider, o->prob.detail);
    if (plain) {
        wipe(plain, strlen(plain));
        free(plain);
    }
    free(sealed);
    json_decref(md);
    json_decref(merge);
    if (tok) {
        wipe_json_strings(tok);
        json_decref(tok);
    }
    pb_resp_free(resp);
    pb_req_free(req);
}

/* ---- acquire ------------------------------------------------------------------ */

static struct pb_cred_lease *lease_new(struct snap *s)
{
    struct pb_cred_lease *l = pb_xcalloc(1, sizeof *l);
    snap_ref(s);
    l->view = s->view;
    l->connection_id = s->id;
    l->version = s->version;
    l->snapshot = s;
    return l;
}

static void not_found(struct pb_problem *p, const char *id)
{
    pb_problem_set(p, 404, "not-found", "Not found", NULL, "connection '%s' not found", id);
}

/* Replaces the entry's snapshot (s stolen, may be NULL). Lock held. */
static void entry_set(struct entry *e, struct snap *s)
{
    struct snap *old = e->snap;
    e->snap = s;
    snap_unref(old);
}

/* forced: the caller holds a snapshot of version old_version that the
 * provider rejected. */
static int obtain(struct pb_tokens *t, const char *project_id, const char *id,
                  const struct pb_provider *prov, int forced, long long old_version,
                  struct pb_cred_lease **lease, struct pb_problem *p)
{
    *lease = NULL;
    if (!t || !project_id || !id || !*project_id || !*id) {
        not_found(p, id ? id : "");
        return -1;
    }
    int ret = -1, loaded = 0;
    pthread_mutex_lock(&t->mu);
    struct entry *e = entry_get(t, project_id, id);
    for (;;) {
        while (e->busy)
            pthread_cond_wait(&e->cond, &t->mu);
        uint64_t gen = pb_store_generation(t->app->store);
        int stale = e->snap ? e->snap->gen != gen : e->missing_gen != gen;
        if (stale && !loaded) {
            e->busy = 1;
            pthread_mutex_unlock(&t->mu);
            struct snap *ns = NULL;
            int rc = load(t, project_id, id, gen, &ns, p);
            pthread_mutex_lock(&t->mu);
            e->busy = 0;
            pthread_cond_broadcast(&e->cond);
            loaded = 1;
            if (rc == PB_STORE_OK) {
                /* Same credentials: keep what we know about their lifetime. */
                if (e->snap && e->snap->version == ns->version &&
                    e->snap->expires_at_ms / 1000 == ns->expires_at_ms / 1000)
                    ns->lifetime_ms = e->snap->lifetime_ms;
                entry_set(e, ns);
                e->missing_gen = 0;
            } else if (rc == PB_STORE_NOTFOUND) {
                entry_set(e, NULL);
                e->missing_gen = gen;
            } else {
                break;
            }
            continue;
        }
        struct snap *s = e->snap;
        if (!s) {
            not_found(p, id);
            break;
        }
        if (prov && prov->name && strcmp(s->provider, prov->name) != 0) {
            pb_problem_set(p, 409, "provider-mismatch", "Provider mismatch", NULL,
                           "connection '%s' belongs to provider '%s', not '%s'", id, s->provider,
                           prov->name);
            break;
        }
        int64_t now = pb_now_ms();
        int need;
        if (forced)
            need = s->version == old_version && can_refresh(s, prov);
        else
            need = needs_refresh(t, s, prov, now);
        if (!need) {
            *lease = lease_new(s);
            ret = 0;
            break;
        }
        if (e->fail_kind != FAIL_NONE && e->fail_version == s->version && now < e->fail_until_ms) {
            /* Inside the back-off window: no provider call. A proactive
             * refresh that failed still leaves a token that works. */
            if (!forced && usable(s, now)) {
                *lease = lease_new(s);
                ret = 0;
            } else {
                copy_problem(p, &e->fail);
            }
            break;
        }
        /* Lead the flight for this connection. */
        e->busy = 1;
        snap_ref(s);
        unsigned prior = e->fail_version == s->version && e->fail_kind == FAIL_REFUSED
                             ? e->refused
                             : 0;
        pthread_mutex_unlock(&t->mu);
        struct outcome o;
        memset(&o, 0, sizeof o);
        refresh(t, s, prov, prior, &o);
        pthread_mutex_lock(&t->mu);
        e->busy = 0;
        pthread_cond_broadcast(&e->cond);
        if (o.snap) {
            entry_set(e, o.snap);
            e->missing_gen = 0;
            e->fail_kind = FAIL_NONE;
            e->fail_until_ms = 0;
            e->refused = 0;
            *lease = lease_new(o.snap);
            ret = 0;
        } else if (o.notfound) {
            entry_set(e, NULL);
            e->missing_gen = pb_store_generation(t->app->store);
            not_found(p, id);
        } else {
            e->fail_kind = o.kind;
            e->fail_version = s->version;
            e->fail_until_ms = pb_now_ms() + o.backoff_ms;
            e->refused = o.kind == FAIL_REFUSED ? prior + 1 : 0;
            copy_problem(&e->fail, &o.prob);
            if (!forced && usable(s, now)) {
                *lease = lease_new(s);
                ret = 0;
            } else {
                copy_problem(p, &o.prob);
            }
        }
        pb_problem_free(&o.prob);
        snap_unref(s);
        break;
    }
    pthread_mutex_unlock(&t->mu);
    return ret;
}

int pb_tokens_acquire(struct pb_tokens *t, const char *project_id, const char *connection_id,
                      const struct pb_provider *prov, struct pb_cred_lease **lease,
                      struct pb_problem *p)
{
    return obtain(t, project_id, connection_id, prov, 0, 0, lease, p);
}

int pb_tokens_refresh_after_401(struct pb_tokens *t, const struct pb_cred_lease *old,
                                const struct pb_provider *prov, struct pb_cred_lease **fresh,
                                struct pb_problem *p)
{
    *fresh = NULL;
    if (!old || !old->snapshot) {
        not_found(p, "");
        return -1;
    }
    const struct snap *s = old->snapshot;
    return obtain(t, s->project_id, s->id, prov, 1, old->version, fresh, p);
}

void pb_tokens_release(struct pb_cred_lease *lease)
{
    if (!lease)
        return;
    snap_unref(lease->snapshot);
    free(lease);
}
