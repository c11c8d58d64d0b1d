/*
 * Generic REST provider plugin: any API described by an entry of a
 * providers.yaml catalog (the format the Nango project publishes), or, with
 * no catalog, a fixed base URL and the connection's credentials as a header.
 *
 * Catalog mode (`catalog: FILE`, `entry: KEY` defaulting to the provider's
 * name): the file is read once in init (catalog.c) and only the enabled
 * entry, merged over its alias chain, is kept. A relative FILE is tried as
 * given (relative to the working directory, like plugboard's other paths)
 * first, then relative to the directory of plugboard.yaml. Supported
 * auth_modes: API_KEY, BASIC, OAUTH2 (authorization code + refresh),
 * OAUTH2_CC (client credentials) and NONE. The entry's proxy.base_url,
 * proxy.headers and proxy.query are templates (template.c) evaluated per call
 * from the connection: ${apiKey}, ${accessToken}, ${connectionConfig.x}
 * (providerMetadata.x.value), ${credentials.username|password|...},
 * base64(...), and `a || b` alternatives in URLs. Without a header of its
 * own the entry's credentials go out as `Authorization: Bearer <key|token>`
 * (API_KEY, OAuth) or `Authorization: Basic` (BASIC). proxy.retry tells
 * classify which headers carry rate-limit times.
 *
 * Options that override the entry: base_url, auth_header / auth_scheme
 * (API_KEY: where and how the key goes), client_id, client_secret, scopes,
 * authorization_url, token_url.
 *
 * It only translates; the core performs every call.
 */
#include <plugboard/plugin.h>

#include "catalog.h"
#include "template.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum gen_mode { MODE_PLAIN, MODE_API_KEY, MODE_BASIC, MODE_OAUTH2, MODE_OAUTH2_CC, MODE_NONE };

static const char *const mode_names[] = {"(none)", "API_KEY", "BASIC", "OAUTH2", "OAUTH2_CC",
                                         "NONE"};

struct kv {
    char *name;
    char *tpl;
};

struct kvlist {
    struct kv *v;
    size_t n;
};

struct strlist {
    char **v;
    size_t n;
};

struct gen_state {
    const struct pb_core_services *svc;
    char *provider;
    char *catalog;          /* the catalog file opened; NULL in plain mode */
    char *entry;            /* its entry key */
    enum gen_mode mode;
    char *base_url;         /* plain mode and the base_url option: a URL; else a template */
    int base_is_template;
    char *auth_header;      /* API_KEY (and plain mode): where the key goes */
    char *auth_scheme;
    int key_override;       /* auth_header or auth_scheme was configured */
    int default_auth;       /* add the mode's own Authorization header */
    struct kvlist headers, query;
    char *authorization_url, *token_url, *refresh_url; /* templates */
    struct kvlist auth_params, token_params, refresh_params;
    int has_refresh_params;
    char *scope_sep;
    struct strlist default_scopes, cfg_scopes, token_meta;
    int token_basic;        /* client credentials in an Authorization: Basic header */
    int token_json;         /* token request bodies as JSON */
    struct strlist retry_after, retry_at;
    char *retry_remaining;
    long retry_error_code;
    char *client_id, *client_secret;
};

static const char *const gen_config_keys[] = {
    "catalog",       "entry",  "base_url",          "auth_header", "auth_scheme", "client_id",
    "client_secret", "scopes", "authorization_url", "token_url",   NULL};

/* ---- small helpers --------------------------------------------------------- */

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p)
        memcpy(p, s, n);
    return p;
}

static int nonempty(const char *s)
{
    return s && *s;
}

/* Clears a buffer that held a secret; volatile so the store stays. */
static void wipe(char *p, size_t n)
{
    volatile char *v = p;
    while (n--)
        *v++ = 0;
}

static void free_secret(char *p)
{
    if (p) {
        wipe(p, strlen(p));
        free(p);
    }
}

/* http(s)://host[:port][/prefix] with no query, fragment, whitespace or
 * control characters. */
static int valid_base_url(const char *u)
{
    const char *rest;
    if (strncmp(u, "https://", 8) == 0)
        rest = u + 8;
    else if (strncmp(u, "http://", 7) == 0)
        rest = u + 7;
    else
        return 0;
    if (!*rest || *rest == '/' || *rest == ':')
        return 0;
    for (const unsigned char *p = (const unsigned char *)u; *p; p++)
        if (*p <= 32 || *p == 127 || *p == '?' || *p == '#')
            return 0;
    return 1;
}

/* An absolute http(s) endpoint (token, authorization): a query is fine. */
static int valid_endpoint(const char *u)
{
    const char *rest;
    if (strncmp(u, "https://", 8) == 0)
        rest = u + 8;
    else if (strncmp(u, "http://", 7) == 0)
        rest = u + 7;
    else
        return 0;
    if (!*rest || *rest == '/' || *rest == ':' || *rest == '?')
        return 0;
    for (const unsigned char *p = (const unsigned char *)u; *p; p++)
        if (*p <= 32 || *p == 127 || *p == '#')
            return 0;
    return 1;
}

/* An HTTP header name (RFC 9110 token). */
static int valid_header_name(const char *s)
{
    if (!nonempty(s))
        return 0;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              strchr("!#$%&'*+-.^_`|~", *p)))
            return 0;
    return 1;
}

static int printable(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 32 || *p == 127)
            return 0;
    return 1;
}

static void strip_trailing_slashes(char *s)
{
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == '/')
        s[--n] = '\0';
}

/* A growable string; `oom` records a failed allocation. */
struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
};

static void sb_addn(struct sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 128;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_add(struct sbuf *b, const char *s)
{
    sb_addn(b, s, strlen(s));
}

static void strlist_free(struct strlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

static int strlist_add(struct strlist *l, const char *s, size_t n)
{
    char **v = realloc(l->v, (l->n + 1) * sizeof *v);
    if (!v)
        return PB_ENOMEM;
    l->v = v;
    char *c = malloc(n + 1);
    if (!c)
        return PB_ENOMEM;
    memcpy(c, s, n);
    c[n] = '\0';
    l->v[l->n++] = c;
    return PB_OK;
}

/* Splits on spaces and commas (how scopes are written). */
static int strlist_split(struct strlist *l, const char *s)
{
    while (s && *s) {
        while (*s == ' ' || *s == ',' || *s == '\t')
            s++;
        const char *e = s;
        while (*e && *e != ' ' && *e != ',' && *e != '\t')
            e++;
        if (e > s && strlist_add(l, s, (size_t)(e - s)) != PB_OK)
            return PB_ENOMEM;
        s = e;
    }
    return PB_OK;
}

static void kvlist_free(struct kvlist *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i].name);
        free(l->v[i].tpl);
    }
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

/* ---- options ------------------------------------------------------------------ */

/* A string option, or NULL when absent; other types are refused. */
static int opt_string(const struct pb_core_services *svc, const json_t *opts, const char *key,
                      const char **out, pb_error *err)
{
    json_t *v = opts ? json_object_get(opts, key) : NULL;
    *out = NULL;
    if (!v || json_is_null(v))
        return PB_OK;
    if (!json_is_string(v)) {
        svc->error_set(err, PB_ECONFIG, key, "option %s must be a string", key);
        return PB_ECONFIG;
    }
    *out = json_string_value(v);
    return PB_OK;
}

/* client_id / client_secret: text, or a number (some providers' ids are). */
static int opt_ident(const struct pb_core_services *svc, const json_t *opts, const char *key,
                     char **out, pb_error *err)
{
    json_t *v = opts ? json_object_get(opts, key) : NULL;
    char buf[32];
    *out = NULL;
    if (!v || json_is_null(v))
        return PB_OK;
    if (json_is_integer(v)) {
        snprintf(buf, sizeof buf, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        *out = dup_str(buf);
    } else if (json_is_string(v)) {
        *out = dup_str(json_string_value(v));
    } else {
        svc->error_set(err, PB_ECONFIG, key, "option %s must be a string", key);
        return PB_ECONFIG;
    }
    return *out ? PB_OK : PB_ENOMEM;
}

static int opt_scopes(const struct pb_core_services *svc, const json_t *opts, struct strlist *l,
                      pb_error *err)
{
    json_t *v = opts ? json_object_get(opts, "scopes") : NULL;
    if (!v || json_is_null(v))
        return PB_OK;
    if (json_is_string(v))
        return strlist_split(l, json_string_value(v));
    if (json_is_array(v)) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) {
            if (!json_is_string(e)) {
                svc->error_set(err, PB_ECONFIG, "scopes",
                               "option scopes must be a string or a list of strings");
                return PB_ECONFIG;
            }
            if (strlist_add(l, json_string_value(e), json_string_length(e)) != PB_OK)
                return PB_ENOMEM;
        }
        return PB_OK;
    }
    svc->error_set(err, PB_ECONFIG, "scopes", "option scopes must be a string or a list of strings");
    return PB_ECONFIG;
}

/* ---- lifecycle ------------------------------------------------------------------ */

static void gen_fini(void *state)
{
    struct gen_state *s = state;
    if (!s)
        return;
    free(s->provider);
    free(s->catalog);
    free(s->entry);
    free(s->base_url);
    free(s->auth_header);
    free(s->auth_scheme);
    kvlist_free(&s->headers);
    kvlist_free(&s->query);
    free(s->authorization_url);
    free(s->token_url);
    free(s->refresh_url);
    kvlist_free(&s->auth_params);
    kvlist_free(&s->token_params);
    kvlist_free(&s->refresh_params);
    free(s->scope_sep);
    strlist_free(&s->default_scopes);
    strlist_free(&s->cfg_scopes);
    strlist_free(&s->token_meta);
    strlist_free(&s->retry_after);
    strlist_free(&s->retry_at);
    free(s->retry_remaining);
    free(s->client_id);
    free_secret(s->client_secret);
    free(s);
}

/* A configuration problem in the catalog entry, with its file and key. */
static int bad_entry(const struct gen_state *s, pb_error *err, const char *field, const char *fmt,
                     ...) PB_PRINTF(4, 5);

static int bad_entry(const struct gen_state *s, pb_error *err, const char *field, const char *fmt,
                     ...)
{
    char what[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    s->svc->error_set(err, PB_ECONFIG, field, "catalog %s: entry '%s': %s", s->catalog, s->entry,
                      what);
    return PB_ECONFIG;
}

static int oom(const struct gen_state *s, pb_error *err)
{
    s->svc->error_set(err, PB_ENOMEM, NULL, "out of memory");
    return PB_ENOMEM;
}

/* A template field (string or absent) of the entry, checked. */
static int entry_tpl(struct gen_state *s, const json_t *v, const char *field, int fallback,
                     char **out, pb_error *err)
{
    *out = NULL;
    if (!v || json_is_null(v))
        return PB_OK;
    if (!json_is_string(v))
        return bad_entry(s, err, field, "%s must be text", field);
    struct gen_tpl_err te;
    if (gen_tpl_check(json_string_value(v), fallback, &te) != 0)
        return bad_entry(s, err, field, "%s: %s", field, te.msg);
    *out = dup_str(json_string_value(v));
    return *out ? PB_OK : oom(s, err);
}

/* A mapping of name -> template (null values skipped). */
static int entry_kvlist(struct gen_state *s, const json_t *m, const char *field, int headers,
                        struct kvlist *l, pb_error *err)
{
    if (!m || json_is_null(m))
        return PB_OK;
    if (!json_is_object(m))
        return bad_entry(s, err, field, "%s must be a mapping", field);
    const char *k;
    json_t *v;
    char sub[200];
    json_object_foreach((json_t *)m, k, v) {
        snprintf(sub, sizeof sub, "%s.%s", field, k);
        if (json_is_null(v))
            continue;
        if (headers && !valid_header_name(k))
            return bad_entry(s, err, sub, "'%s' is not a valid HTTP header name", k);
        if (!*k)
            return bad_entry(s, err, field, "%s has an empty name", field);
        char *tpl;
        int rc = entry_tpl(s, v, sub, 0, &tpl, err);
        if (rc != PB_OK)
            return rc;
        struct kv *nv = realloc(l->v, (l->n + 1) * sizeof *nv);
        char *name = dup_str(k);
        if (!nv || !name) {
            if (nv)
                l->v = nv;
            free(tpl);
            free(name);
            return oom(s, err);
        }
        l->v = nv;
        l->v[l->n].name = name;
        l->v[l->n].tpl = tpl;
        l->n++;
    }
    return PB_OK;
}

/* A list of strings, or one string. */
static int entry_strlist(struct gen_state *s, const json_t *v, const char *field,
                         struct strlist *l, pb_error *err)
{
    if (!v || json_is_null(v))
        return PB_OK;
    if (json_is_string(v))
        return strlist_add(l, json_string_value(v), json_string_length(v)) == PB_OK
                   ? PB_OK
                   : oom(s, err);
    if (!json_is_array(v))
        return bad_entry(s, err, field, "%s must be text or a list of text", field);
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e) {
        if (json_is_null(e))
            continue;
        if (!json_is_string(e))
            return bad_entry(s, err, field, "%s must be text or a list of text", field);
        if (strlist_add(l, json_string_value(e), json_string_length(e)) != PB_OK)
            return oom(s, err);
    }
    return PB_OK;
}

/* A URL template whose fully literal alternative (if any) must be valid. */
static int check_url_tpl(struct gen_state *s, const char *tpl, const char *field, int base,
                         pb_error *err)
{
    char *lit = NULL;
    struct gen_tpl_err te;
    if (!tpl)
        return PB_OK;
    if (gen_tpl_eval(tpl, GEN_TPL_URL, 1, s->svc, NULL, &lit, &te) != 0)
        return PB_OK; /* every alternative needs the connection: checked per call */
    int ok = base ? valid_base_url(lit) : valid_endpoint(lit);
    free(lit);
    if (!ok)
        return bad_entry(s, err, field, "%s must be an http:// or https:// URL%s", field,
                         base ? " without a query" : "");
    return PB_OK;
}

/* Nango writes token_url either as a URL or as {AUTH_MODE: URL}. */
static const json_t *pick_by_mode(const json_t *v, enum gen_mode mode)
{
    if (json_is_object(v))
        return json_object_get(v, mode_names[mode]);
    return v;
}

static int kv_has(const struct kvlist *l, const char *name)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcasecmp(l->v[i].name, name) == 0)
            return 1;
    return 0;
}

static int kv_uses(const struct kvlist *l, const char *const *vars)
{
    for (size_t i = 0; i < l->n; i++)
        for (const char *const *v = vars; *v; v++)
            if (gen_tpl_uses(l->v[i].tpl, *v))
                return 1;
    return 0;
}

static int parse_long(const char *s, long *out)
{
    char *end;
    if (!s || !*s)
        return 0;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end)
        return 0;
    *out = v;
    return 1;
}

/* The merged catalog entry -> state. */
static int compile_entry(struct gen_state *s, json_t *e, const char *opt_base,
                         const char *opt_auth_url, const char *opt_token_url, pb_error *err)
{
    static const char *const key_vars[] = {"apiKey", "credentials.apiKey", "credentials.api_key",
                                           NULL};
    static const char *const token_vars[] = {"accessToken", "credentials.accessToken",
                                             "credentials.access_token", NULL};
    const struct pb_core_services *svc = s->svc;
    json_t *mode = json_object_get(e, "auth_mode");
    if (!mode || json_is_null(mode))
        return bad_entry(s, err, "auth_mode", "auth_mode is missing");
    if (!json_is_string(mode))
        return bad_entry(s, err, "auth_mode", "auth_mode must be text");
    const char *m = json_string_value(mode);
    if (!gen_mode_supported(m)) {
        svc->error_set(err, PB_ECONFIG, "entry",
                       "catalog %s: entry '%s' uses auth_mode %s, which plugboard does not "
                       "support (supported: API_KEY, BASIC, OAUTH2, OAUTH2_CC, NONE)",
                       s->catalog, s->entry, m);
        return PB_ECONFIG;
    }
    for (int i = MODE_API_KEY; i <= MODE_NONE; i++)
        if (strcmp(m, mode_names[i]) == 0)
            s->mode = (enum gen_mode)i;
    if (s->key_override && s->mode != MODE_API_KEY) {
        svc->error_set(err, PB_ECONFIG, s->auth_header ? "auth_header" : "auth_scheme",
                       "options auth_header and auth_scheme apply to API_KEY entries; catalog "
                       "%s: entry '%s' uses auth_mode %s",
                       s->catalog, s->entry, m);
        return PB_ECONFIG;
    }

    json_t *proxy = json_object_get(e, "proxy");
    if (proxy && !json_is_null(proxy) && !json_is_object(proxy))
        return bad_entry(s, err, "proxy", "proxy must be a mapping");
    int rc;
    if (opt_base) {
        if (!valid_base_url(opt_base)) {
            svc->error_set(err, PB_ECONFIG, "base_url",
                           "option base_url must be an http:// or https:// URL without a query");
            return PB_ECONFIG;
        }
        s->base_url = dup_str(opt_base);
        if (!s->base_url)
            return oom(s, err);
        strip_trailing_slashes(s->base_url);
    } else {
        if ((rc = entry_tpl(s, json_object_get(proxy, "base_url"), "proxy.base_url", 1,
                            &s->base_url, err)) != PB_OK)
            return rc;
        if (!s->base_url) {
            svc->error_set(err, PB_ECONFIG, "base_url",
                           "catalog %s: entry '%s' has no proxy.base_url: set base_url for "
                           "provider '%s' in the configuration",
                           s->catalog, s->entry, s->provider);
            return PB_ECONFIG;
        }
        s->base_is_template = 1;
        if ((rc = check_url_tpl(s, s->base_url, "proxy.base_url", 1, err)) != PB_OK)
            return rc;
    }
    if ((rc = entry_kvlist(s, json_object_get(proxy, "headers"), "proxy.headers", 1, &s->headers,
                           err)) != PB_OK ||
        (rc = entry_kvlist(s, json_object_get(proxy, "query"), "proxy.query", 0, &s->query,
                           err)) != PB_OK)
        return rc;

    json_t *retry = json_object_get(proxy, "retry");
    if (retry && !json_is_null(retry)) {
        if (!json_is_object(retry))
            return bad_entry(s, err, "proxy.retry", "proxy.retry must be a mapping");
        if ((rc = entry_strlist(s, json_object_get(retry, "after"), "proxy.retry.after",
                                &s->retry_after, err)) != PB_OK ||
            (rc = entry_strlist(s, json_object_get(retry, "at"), "proxy.retry.at", &s->retry_at,
                                err)) != PB_OK)
            return rc;
        for (size_t i = 0; i < s->retry_after.n + s->retry_at.n; i++) {
            const char *h = i < s->retry_after.n ? s->retry_after.v[i]
                                                 : s->retry_at.v[i - s->retry_after.n];
            if (!valid_header_name(h))
                return bad_entry(s, err, "proxy.retry", "'%s' is not a valid HTTP header name", h);
        }
        json_t *rem = json_object_get(retry, "remaining");
        if (rem && !json_is_null(rem)) {
            if (!json_is_string(rem) || !valid_header_name(json_string_value(rem)))
                return bad_entry(s, err, "proxy.retry.remaining",
                                 "proxy.retry.remaining must be an HTTP header name");
            if (!(s->retry_remaining = dup_str(json_string_value(rem))))
                return oom(s, err);
        }
        json_t *code = json_object_get(retry, "error_code");
        if (code && !json_is_null(code)) {
            long c = 0;
            if (!json_is_string(code) || !parse_long(json_string_value(code), &c) || c < 400 ||
                c > 599)
                return bad_entry(s, err, "proxy.retry.error_code",
                                 "proxy.retry.error_code must be an HTTP status from 400 to 599");
            s->retry_error_code = c;
        }
    }

    /* OAuth endpoints and parameters. */
    if (opt_auth_url) {
        if (!valid_endpoint(opt_auth_url)) {
            svc->error_set(err, PB_ECONFIG, "authorization_url",
                           "option authorization_url must be an http:// or https:// URL");
            return PB_ECONFIG;
        }
        if (!(s->authorization_url = dup_str(opt_auth_url)))
            return oom(s, err);
    } else if ((rc = entry_tpl(s, pick_by_mode(json_object_get(e, "authorization_url"), s->mode),
                               "authorization_url", 1, &s->authorization_url, err)) != PB_OK ||
               (rc = check_url_tpl(s, s->authorization_url, "authorization_url", 0, err)) !=
                   PB_OK) {
        return rc;
    }
    if (opt_token_url) {
        if (!valid_endpoint(opt_token_url)) {
            svc->error_set(err, PB_ECONFIG, "token_url",
                           "option token_url must be an http:// or https:// URL");
            return PB_ECONFIG;
        }
        if (!(s->token_url = dup_str(opt_token_url)))
            return oom(s, err);
    } else if ((rc = entry_tpl(s, pick_by_mode(json_object_get(e, "token_url"), s->mode),
                               "token_url", 1, &s->token_url, err)) != PB_OK ||
               (rc = check_url_tpl(s, s->token_url, "token_url", 0, err)) != PB_OK) {
        return rc;
    }
    if ((rc = entry_tpl(s, json_object_get(e, "refresh_url"), "refresh_url", 1, &s->refresh_url,
                        err)) != PB_OK ||
        (rc = check_url_tpl(s, s->refresh_url, "refresh_url", 0, err)) != PB_OK ||
        (rc = entry_kvlist(s, json_object_get(e, "authorization_params"), "authorization_params",
                           0, &s->auth_params, err)) != PB_OK ||
        (rc = entry_kvlist(s, json_object_get(e, "token_params"), "token_params", 0,
                           &s->token_params, err)) != PB_OK ||
        (rc = entry_kvlist(s, json_object_get(e, "refresh_params"), "refresh_params", 0,
                           &s->refresh_params, err)) != PB_OK ||
        (rc = entry_strlist(s, json_object_get(e, "default_scopes"), "default_scopes",
                            &s->default_scopes, err)) != PB_OK ||
        (rc = entry_strlist(s, json_object_get(e, "token_response_metadata"),
                            "token_response_metadata", &s->token_meta, err)) != PB_OK)
        return rc;
    json_t *rp = json_object_get(e, "refresh_params");
    s->has_refresh_params = rp && !json_is_null(rp);
    json_t *sep = json_object_get(e, "scope_separator");
    if (sep && !json_is_null(sep) && !json_is_string(sep))
        return bad_entry(s, err, "scope_separator", "scope_separator must be text");
    free(s->scope_sep); /* init's default */
    if (!(s->scope_sep = dup_str(json_is_string(sep) ? json_string_value(sep) : " ")))
        return oom(s, err);
    json_t *am = json_object_get(e, "token_request_auth_method");
    if (am && !json_is_null(am)) {
        if (!json_is_string(am) || strcmp(json_string_value(am), "basic") != 0)
            return bad_entry(s, err, "token_request_auth_method",
                             "token_request_auth_method must be 'basic' (the default sends the "
                             "client credentials in the body)");
        s->token_basic = 1;
    }
    json_t *bf = json_object_get(e, "body_format");
    if (bf && !json_is_null(bf)) {
        const char *f = json_string_value(bf);
        if (!f || (strcmp(f, "json") != 0 && strcmp(f, "form") != 0))
            return bad_entry(s, err, "body_format", "body_format must be 'form' or 'json'");
        s->token_json = strcmp(f, "json") == 0;
    }
    if ((s->mode == MODE_OAUTH2 || s->mode == MODE_OAUTH2_CC) && !s->token_url)
        return bad_entry(s, err, "token_url", "auth_mode %s needs token_url", m);
    if (s->mode == MODE_OAUTH2 && !s->authorization_url)
        return bad_entry(s, err, "authorization_url", "auth_mode OAUTH2 needs authorization_url");

    /* Where the credentials go when the entry does not place them itself. */
    switch (s->mode) {
    case MODE_API_KEY:
        s->default_auth = s->key_override || !(kv_uses(&s->headers, key_vars) ||
                                               kv_uses(&s->query, key_vars));
        break;
    case MODE_BASIC: s->default_auth = !kv_has(&s->headers, "Authorization"); break;
    case MODE_OAUTH2:
    case MODE_OAUTH2_CC:
        s->default_auth = !kv_has(&s->headers, "Authorization") &&
                          !kv_uses(&s->headers, token_vars) && !kv_uses(&s->query, token_vars);
        break;
    default: s->default_auth = 0; break;
    }
    return PB_OK;
}

/* Opens the catalog: as given first (the working directory, as plugboard
 * resolves its other paths), then relative to plugboard.yaml's directory. */
static FILE *open_catalog(const struct gen_state *s, const char *path,
                          const struct pb_plugin_config *cfg, char **opened, pb_error *err)
{
    *opened = NULL;
    FILE *fp = fopen(path, "rb");
    if (fp) {
        *opened = dup_str(path);
        return fp;
    }
    int e1 = errno;
    char alt[4096] = "";
    if (path[0] != '/' && cfg && nonempty(cfg->config_dir)) {
        s->svc->str_format(alt, sizeof alt, "%s/%s", cfg->config_dir,
                           strncmp(path, "./", 2) == 0 ? path + 2 : path);
        if (alt[0] && (fp = fopen(alt, "rb")) != NULL) {
            *opened = dup_str(alt);
            return fp;
        }
    }
    if (alt[0])
        s->svc->error_set(err, PB_ECONFIG, "catalog",
                          "catalog %s: cannot open it (%s; also tried %s: %s)", path,
                          strerror(e1), alt, strerror(errno));
    else
        s->svc->error_set(err, PB_ECONFIG, "catalog", "catalog %s: cannot open it (%s)", path,
                          strerror(e1));
    return NULL;
}

static int gen_init(const struct pb_core_services *svc, const struct pb_plugin_config *cfg,
                    void **state, pb_error *err)
{
    *state = NULL;
    if (!svc || svc->abi_major != PB_PLUGIN_ABI_MAJOR)
        return PB_ECONFIG;
    const json_t *opts = cfg ? cfg->options : NULL;
    if (opts && !json_is_object(opts)) {
        svc->error_set(err, PB_ECONFIG, NULL, "the provider block must be a mapping");
        return PB_ECONFIG;
    }
    const char *catalog, *entry, *base, *header, *scheme, *auth_url, *token_url;
    int rc;
    if ((rc = opt_string(svc, opts, "catalog", &catalog, err)) != PB_OK ||
        (rc = opt_string(svc, opts, "entry", &entry, err)) != PB_OK ||
        (rc = opt_string(svc, opts, "base_url", &base, err)) != PB_OK ||
        (rc = opt_string(svc, opts, "auth_header", &header, err)) != PB_OK ||
        (rc = opt_string(svc, opts, "auth_scheme", &scheme, err)) != PB_OK ||
        (rc = opt_string(svc, opts, "authorization_url", &auth_url, err)) != PB_OK ||
        (rc = opt_string(svc, opts, "token_url", &token_url, err)) != PB_OK)
        return rc;
    if (header && !valid_header_name(header)) {
        svc->error_set(err, PB_ECONFIG, "auth_header",
                       "option auth_header must be an HTTP header name");
        return PB_ECONFIG;
    }
    if (scheme && !printable(scheme)) {
        svc->error_set(err, PB_ECONFIG, "auth_scheme",
                       "option auth_scheme must not hold control characters");
        return PB_ECONFIG;
    }
    if (catalog && !*catalog) {
        svc->error_set(err, PB_ECONFIG, "catalog", "option catalog must name a file");
        return PB_ECONFIG;
    }
    if (entry && !catalog) {
        svc->error_set(err, PB_ECONFIG, "entry", "option entry needs option catalog");
        return PB_ECONFIG;
    }
    struct gen_state *s = calloc(1, sizeof *s);
    if (!s)
        return PB_ENOMEM;
    s->svc = svc;
    s->mode = MODE_PLAIN;
    s->key_override = header || scheme;
    s->provider = dup_str(cfg && cfg->provider_name ? cfg->provider_name : "generic");
    s->auth_header = dup_str(header ? header : "Authorization");
    s->auth_scheme = dup_str(scheme ? scheme : "Bearer");
    s->scope_sep = dup_str(" ");
    if (!s->provider || !s->auth_header || !s->auth_scheme || !s->scope_sep) {
        rc = oom(s, err);
        goto fail;
    }
    if ((rc = opt_ident(svc, opts, "client_id", &s->client_id, err)) != PB_OK ||
        (rc = opt_ident(svc, opts, "client_secret", &s->client_secret, err)) != PB_OK ||
        (rc = opt_scopes(svc, opts, &s->cfg_scopes, err)) != PB_OK) {
        if (rc == PB_ENOMEM)
            oom(s, err);
        goto fail;
    }

    if (!catalog) {
        /* Plain mode: a fixed base URL, credentials by the connection's type. */
        if (!nonempty(base)) {
            svc->error_set(err, PB_ECONFIG, "base_url", "option base_url is required (or catalog)");
            rc = PB_ECONFIG;
            goto fail;
        }
        if (!valid_base_url(base)) {
            svc->error_set(err, PB_ECONFIG, "base_url",
                           "option base_url must be an http:// or https:// URL without a query");
            rc = PB_ECONFIG;
            goto fail;
        }
        const char *urls[2] = {auth_url, token_url};
        const char *names[2] = {"authorization_url", "token_url"};
        for (int i = 0; i < 2; i++) {
            if (urls[i] && !valid_endpoint(urls[i])) {
                svc->error_set(err, PB_ECONFIG, names[i],
                               "option %s must be an http:// or https:// URL", names[i]);
                rc = PB_ECONFIG;
                goto fail;
            }
        }
        s->base_url = dup_str(base);
        s->authorization_url = auth_url ? dup_str(auth_url) : NULL;
        s->token_url = token_url ? dup_str(token_url) : NULL;
        if (!s->base_url || (auth_url && !s->authorization_url) || (token_url && !s->token_url)) {
            rc = oom(s, err);
            goto fail;
        }
        strip_trailing_slashes(s->base_url);
        *state = s;
        return PB_OK;
    }

    s->entry = dup_str(entry ? entry : s->provider);
    if (!s->entry) {
        rc = oom(s, err);
        goto fail;
    }
    FILE *fp = open_catalog(s, catalog, cfg, &s->catalog, err);
    if (!fp) {
        rc = PB_ECONFIG;
        goto fail;
    }
    if (!s->catalog) {
        fclose(fp);
        rc = oom(s, err);
        goto fail;
    }
    char msg[512];
    json_t *e = NULL;
    rc = gen_catalog_load(svc, s->provider, s->catalog, fp, s->entry, &e, msg, sizeof msg);
    fclose(fp);
    if (rc != PB_OK) {
        svc->error_set(err, rc, "catalog", "%s", msg);
        goto fail;
    }
    rc = compile_entry(s, e, base, auth_url, token_url, err);
    json_decref(e);
    if (rc != PB_OK)
        goto fail;
    *state = s;
    return PB_OK;
fail:
    gen_fini(s);
    return rc;
}

/* ---- connection ------------------------------------------------------------------ */

/* Evaluates a URL template for this connection and checks the result. */
static int eval_url(const struct gen_state *s, const char *tpl, const char *what, int base,
                    const struct pb_credentials *cred, char **out, pb_error *err)
{
    struct gen_tpl_err te;
    *out = NULL;
    if (gen_tpl_eval(tpl, GEN_TPL_URL, 1, s->svc, cred, out, &te) != 0) {
        /* The core already says "no base URL"; other URLs need naming. */
        if (base)
            s->svc->error_set(err, PB_EINVAL, NULL, "%s", te.msg);
        else
            s->svc->error_set(err, PB_EINVAL, NULL, "%s of provider '%s': %s", what, s->provider,
                              te.msg);
        return te.code == PB_ENOMEM ? PB_ENOMEM : PB_EINVAL;
    }
    if (base)
        strip_trailing_slashes(*out);
    if (!(base ? valid_base_url(*out) : valid_endpoint(*out))) {
        s->svc->error_set(err, PB_EINVAL, NULL,
                          "%s of provider '%s' is not an http:// or https:// URL%s once filled in "
                          "from the connection",
                          what, s->provider, base ? " without a query" : "");
        free(*out);
        *out = NULL;
        return PB_EINVAL;
    }
    return PB_OK;
}

static int gen_base_url(void *state, const struct pb_credentials *cred, char *out, size_t out_len,
                        pb_error *err)
{
    const struct gen_state *s = state;
    char *url = NULL;
    const char *u = s->base_url;
    if (s->base_is_template) {
        int rc = eval_url(s, s->base_url, "the base URL", 1, cred, &url, err);
        if (rc != PB_OK)
            return rc;
        u = url;
    }
    int rc = PB_OK;
    if (s->svc->str_format(out, out_len, "%s", u) != PB_OK) {
        s->svc->error_set(err, PB_EINVAL, NULL, "base URL does not fit in %zu bytes", out_len);
        rc = PB_EINVAL;
    }
    free(url);
    return rc;
}

/* Adds `name: prefix[ ]secret`. */
static int add_secret_header(const struct gen_state *s, pb_http_request *req, const char *name,
                             const char *prefix, const char *secret, pb_error *err)
{
    size_t n = strlen(prefix) + strlen(secret) + 2;
    char *value = malloc(n);
    if (!value)
        return PB_ENOMEM;
    snprintf(value, n, "%s%s%s", prefix, *prefix ? " " : "", secret);
    int rc = s->svc->req_add_header(req, name, value);
    wipe(value, n);
    free(value);
    if (rc != PB_OK) {
        s->svc->error_set(err, PB_EAUTH, NULL, "the credentials cannot be sent in a header");
        return PB_EAUTH;
    }
    return PB_OK;
}

/* base64(user:pass), caller frees with free_secret(). */
static char *basic_pair(const struct gen_state *s, const char *user, const char *pass)
{
    size_t n = strlen(user) + strlen(pass) + 2;
    char *pair = malloc(n);
    if (!pair)
        return NULL;
    snprintf(pair, n, "%s:%s", user, pass);
    char *b64 = s->svc->base64_encode(pair, n - 1);
    wipe(pair, n);
    free(pair);
    if (!b64)
        return NULL;
    char *copy = dup_str(b64);
    wipe(b64, strlen(b64));
    s->svc->str_free(b64);
    return copy;
}

static int plain_apply(const struct gen_state *s, const struct pb_credentials *cred,
                       pb_http_request *req, pb_error *err)
{
    const struct pb_core_services *svc = s->svc;
    const char *type = cred && cred->auth_type ? cred->auth_type : "none";
    if (strcmp(type, "none") == 0)
        return PB_OK;
    if (strcmp(type, "api_key") == 0) {
        if (!nonempty(cred->api_key)) {
            svc->error_set(err, PB_EAUTH, NULL, "connection has no API key");
            return PB_EAUTH;
        }
        return add_secret_header(s, req, s->auth_header, s->auth_scheme, cred->api_key, err);
    }
    if (strcmp(type, "oauth2") == 0 || strcmp(type, "oauth2_cc") == 0) {
        if (!nonempty(cred->access_token)) {
            svc->error_set(err, PB_EAUTH, NULL, "connection has no access token");
            return PB_EAUTH;
        }
        return add_secret_header(s, req, "Authorization", "Bearer", cred->access_token, err);
    }
    if (strcmp(type, "basic") == 0) {
        const char *user = cred->username ? cred->username : "";
        const char *pass = cred->password ? cred->password : "";
        if (!*user && !*pass) {
            svc->error_set(err, PB_EAUTH, NULL, "connection has no username or password");
            return PB_EAUTH;
        }
        char *b64 = basic_pair(s, user, pass);
        if (!b64)
            return PB_ENOMEM;
        int rc = add_secret_header(s, req, "Authorization", "Basic", b64, err);
        free_secret(b64);
        return rc;
    }
    svc->error_set(err, PB_EAUTH, NULL, "unsupported connection auth type '%s'", type);
    return PB_EAUTH;
}

/* Evaluated headers and query parameters, added only when all are ready. */
struct pending {
    char *name[64], *value[64];
    int is_query[64];
    size_t n;
};

static void pending_free(struct pending *p)
{
    for (size_t i = 0; i < p->n; i++) {
        free(p->name[i]);
        free_secret(p->value[i]);
    }
    p->n = 0;
}

static int pending_add(const struct gen_state *s, struct pending *p, const char *name,
                       char *value, int is_query, pb_error *err)
{
    if (p->n == 64) {
        free_secret(value);
        s->svc->error_set(err, PB_ECONFIG, NULL, "too many headers and query parameters");
        return PB_ECONFIG;
    }
    char *n = dup_str(name);
    if (!n) {
        free_secret(value);
        return PB_ENOMEM;
    }
    p->name[p->n] = n;
    p->value[p->n] = value;
    p->is_query[p->n] = is_query;
    p->n++;
    return PB_OK;
}

/* `prefix secret` as a new string. */
static char *join_secret(const char *prefix, const char *secret)
{
    size_t n = strlen(prefix) + strlen(secret) + 2;
    char *v = malloc(n);
    if (v)
        snprintf(v, n, "%s%s%s", prefix, *prefix ? " " : "", secret);
    return v;
}

static int eval_list(const struct gen_state *s, const struct kvlist *l, int is_query,
                     const char *field, const struct pb_credentials *cred, struct pending *p,
                     pb_error *err)
{
    for (size_t i = 0; i < l->n; i++) {
        if (!is_query && s->key_override && strcasecmp(l->v[i].name, s->auth_header) == 0)
            continue;
        char *v = NULL;
        struct gen_tpl_err te;
        if (gen_tpl_eval(l->v[i].tpl, GEN_TPL_TEXT, 0, s->svc, cred, &v, &te) != 0) {
            if (te.code == PB_ENOMEM)
                return PB_ENOMEM;
            s->svc->error_set(err, PB_EAUTH, NULL, "%s (%s.%s of provider '%s')", te.msg, field,
                              l->v[i].name, s->provider);
            return PB_EAUTH;
        }
        if (!is_query && !printable(v)) {
            free_secret(v);
            s->svc->error_set(err, PB_EAUTH, NULL,
                              "%s.%s of provider '%s' would hold control characters", field,
                              l->v[i].name, s->provider);
            return PB_EAUTH;
        }
        int rc = pending_add(s, p, l->v[i].name, v, is_query, err);
        if (rc != PB_OK)
            return rc;
    }
    return PB_OK;
}

/* The mode's own credential header, when the entry does not place it. */
static int default_header(const struct gen_state *s, const struct pb_credentials *cred,
                          struct pending *p, pb_error *err)
{
    const struct pb_core_services *svc = s->svc;
    char *v = NULL;
    const char *name = "Authorization";
    switch (s->mode) {
    case MODE_API_KEY:
        if (!cred || !nonempty(cred->api_key)) {
            svc->error_set(err, PB_EAUTH, NULL,
                           "missing value for ${apiKey}: the connection has no API key "
                           "(provider '%s' uses auth_mode API_KEY)",
                           s->provider);
            return PB_EAUTH;
        }
        name = s->auth_header;
        v = join_secret(s->auth_scheme, cred->api_key);
        break;
    case MODE_BASIC: {
        const char *user = cred && cred->username ? cred->username : "";
        const char *pass = cred && cred->password ? cred->password : "";
        if (!*user && !*pass) {
            svc->error_set(err, PB_EAUTH, NULL,
                           "connection has no username or password (provider '%s' uses "
                           "auth_mode BASIC)",
                           s->provider);
            return PB_EAUTH;
        }
        char *b64 = basic_pair(s, user, pass);
        if (!b64)
            return PB_ENOMEM;
        v = join_secret("Basic", b64);
        free_secret(b64);
        break;
    }
    case MODE_OAUTH2:
    case MODE_OAUTH2_CC:
        if (!cred || !nonempty(cred->access_token)) {
            svc->error_set(err, PB_EAUTH, NULL,
                           "missing value for ${accessToken}: the connection has no access token "
                           "(provider '%s' uses auth_mode %s)",
                           s->provider, mode_names[s->mode]);
            return PB_EAUTH;
        }
        v = join_secret("Bearer", cred->access_token);
        break;
    default: return PB_OK;
    }
    if (!v)
        return PB_ENOMEM;
    if (!printable(v)) {
        free_secret(v);
        svc->error_set(err, PB_EAUTH, NULL, "the credentials cannot be sent in a header");
        return PB_EAUTH;
    }
    return pending_add(s, p, name, v, 0, err);
}

static int gen_apply_credentials(void *state, const struct pb_credentials *cred,
                                 pb_http_request *req, pb_error *err)
{
    const struct gen_state *s = state;
    if (s->mode == MODE_PLAIN)
        return plain_apply(s, cred, req, err);
    struct pending p = {.n = 0};
    int rc = PB_OK;
    if (s->default_auth)
        rc = default_header(s, cred, &p, err);
    if (rc == PB_OK)
        rc = eval_list(s, &s->headers, 0, "proxy.headers", cred, &p, err);
    if (rc == PB_OK)
        rc = eval_list(s, &s->query, 1, "proxy.query", cred, &p, err);
    for (size_t i = 0; rc == PB_OK && i < p.n; i++) {
        rc = p.is_query[i] ? s->svc->req_add_query(req, p.name[i], p.value[i])
                           : s->svc->req_add_header(req, p.name[i], p.value[i]);
        if (rc != PB_OK) {
            s->svc->error_set(err, PB_EAUTH, NULL, "%s '%s' of provider '%s' cannot be sent",
                              p.is_query[i] ? "query parameter" : "header", p.name[i],
                              s->provider);
            rc = PB_EAUTH;
        }
    }
    if (rc == PB_ENOMEM)
        s->svc->error_set(err, PB_ENOMEM, NULL, "out of memory");
    pending_free(&p);
    return rc;
}

/* ---- OAuth2 ------------------------------------------------------------------------ */

/* Ordered request parameters; setting a name again replaces its value. */
struct plist {
    char **name, **value;
    size_t n;
    int oom;
};

static void pl_set(struct plist *l, const char *name, const char *value)
{
    if (l->oom)
        return;
    for (size_t i = 0; i < l->n; i++) {
        if (strcmp(l->name[i], name) == 0) {
            char *v = dup_str(value);
            if (!v) {
                l->oom = 1;
                return;
            }
            free_secret(l->value[i]);
            l->value[i] = v;
            return;
        }
    }
    char **nn = realloc(l->name, (l->n + 1) * sizeof *nn);
    if (nn)
        l->name = nn;
    char **nv = realloc(l->value, (l->n + 1) * sizeof *nv);
    if (nv)
        l->value = nv;
    char *a = dup_str(name), *b = dup_str(value);
    if (!nn || !nv || !a || !b) {
        free(a);
        free_secret(b);
        l->oom = 1;
        return;
    }
    l->name[l->n] = a;
    l->value[l->n] = b;
    l->n++;
}

static void pl_free(struct plist *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->name[i]);
        free_secret(l->value[i]);
    }
    free(l->name);
    free(l->value);
    memset(l, 0, sizeof *l);
}

/* Evaluates catalog parameters into l; `skip` names one key to leave out. */
static int pl_apply(const struct gen_state *s, struct plist *l, const struct kvlist *kv,
                    const char *field, const char *const *skip,
                    const struct pb_credentials *cred, pb_error *err)
{
    for (size_t i = 0; i < kv->n; i++) {
        int skipped = 0;
        for (const char *const *k = skip; k && *k; k++)
            skipped |= strcmp(kv->v[i].name, *k) == 0;
        if (skipped)
            continue;
        char *v = NULL;
        struct gen_tpl_err te;
        if (gen_tpl_eval(kv->v[i].tpl, GEN_TPL_TEXT, 0, s->svc, cred, &v, &te) != 0) {
            if (te.code == PB_ENOMEM)
                return PB_ENOMEM;
            s->svc->error_set(err, PB_EAUTH, NULL, "%s (%s.%s of provider '%s')", te.msg, field,
                              kv->v[i].name, s->provider);
            return PB_EAUTH;
        }
        pl_set(l, kv->v[i].name, v);
        free_secret(v);
    }
    return l->oom ? PB_ENOMEM : PB_OK;
}

/* Scopes joined with the entry's separator: from `given` (space or comma
 * separated), else the configured ones, else the entry's defaults. NULL
 * when there are none; caller frees. */
static char *scope_string(const struct gen_state *s, const char *given, int *oom_out)
{
    struct strlist tmp = {0};
    const struct strlist *use = NULL;
    *oom_out = 0;
    if (nonempty(given)) {
        if (strlist_split(&tmp, given) != PB_OK) {
            strlist_free(&tmp);
            *oom_out = 1;
            return NULL;
        }
        use = &tmp;
    }
    if (!use || use->n == 0)
        use = s->cfg_scopes.n ? &s->cfg_scopes : &s->default_scopes;
    struct sbuf b = {0};
    for (size_t i = 0; i < use->n; i++) {
        if (i)
            sb_add(&b, s->scope_sep);
        sb_add(&b, use->v[i]);
    }
    strlist_free(&tmp);
    if (b.oom) {
        free(b.p);
        *oom_out = 1;
        return NULL;
    }
    return b.p;
}

/* Method, URL, Accept, client authentication and the body of a token call. */
static int emit_token_request(const struct gen_state *s, pb_http_request *req, const char *url,
                              struct plist *l, const char *id, const char *secret, pb_error *err)
{
    const struct pb_core_services *svc = s->svc;
    int rc = svc->req_set_method(req, "POST");
    if (rc == PB_OK)
        rc = svc->req_set_url(req, url);
    if (rc == PB_OK)
        rc = svc->req_add_header(req, "Accept", "application/json");
    if (rc == PB_OK && s->token_basic) {
        char *b64 = basic_pair(s, id, secret ? secret : "");
        if (!b64)
            return PB_ENOMEM;
        rc = add_secret_header(s, req, "Authorization", "Basic", b64, err);
        free_secret(b64);
    }
    if (rc == PB_OK && s->token_json) {
        json_t *body = json_object();
        for (size_t i = 0; body && i < l->n; i++)
            if (json_object_set_new(body, l->name[i], json_string(l->value[i])) != 0) {
                json_decref(body);
                body = NULL;
            }
        rc = body ? svc->req_set_json(req, body) : PB_ENOMEM;
    } else {
        for (size_t i = 0; rc == PB_OK && i < l->n; i++)
            rc = svc->req_add_form(req, l->name[i], l->value[i]);
    }
    if (rc != PB_OK && rc != PB_EAUTH)
        svc->error_set(err, rc, NULL, "cannot build the token request of provider '%s'",
                       s->provider);
    return rc;
}

static int no_oauth(const struct gen_state *s, pb_error *err, const char *what)
{
    int token = strcmp(what, "token endpoint") == 0;
    if (s->mode == MODE_PLAIN)
        s->svc->error_set(err, PB_EUNSUPPORTED, NULL,
                          "provider '%s' has no %s: configure %s, or use a catalog entry with "
                          "auth_mode %s",
                          s->provider, what, token ? "token_url" : "authorization_url and token_url",
                          token ? "OAUTH2 or OAUTH2_CC" : "OAUTH2");
    else
        s->svc->error_set(err, PB_EUNSUPPORTED, NULL,
                          "provider '%s' (catalog entry '%s', auth_mode %s) has no %s",
                          s->provider, s->entry, mode_names[s->mode], what);
    return PB_EUNSUPPORTED;
}

static int oauth_capable(const struct gen_state *s)
{
    return s->mode == MODE_OAUTH2 || s->mode == MODE_OAUTH2_CC ||
           (s->mode == MODE_PLAIN && s->token_url);
}

static int gen_build_token_refresh(void *state, const struct pb_credentials *cred,
                                   pb_http_request *req, pb_error *err)
{
    const struct gen_state *s = state;
    const struct pb_core_services *svc = s->svc;
    if (!oauth_capable(s) || !s->token_url)
        return no_oauth(s, err, "token endpoint");
    int cc = (cred && cred->auth_type && strcmp(cred->auth_type, "oauth2_cc") == 0) ||
             (s->mode == MODE_OAUTH2_CC && !(cred && nonempty(cred->refresh_token)));
    const char *id = cred && nonempty(cred->client_id) ? cred->client_id : s->client_id;
    const char *secret =
        cred && nonempty(cred->client_secret) ? cred->client_secret : s->client_secret;
    if (!nonempty(id) || ((cc || s->token_basic) && !nonempty(secret))) {
        svc->error_set(err, PB_ECONFIG, nonempty(id) ? "client_secret" : "client_id",
                       "provider '%s' needs client_id%s for %s (from the connection's "
                       "oauth2ClientCredentials or the provider's configuration)",
                       s->provider, cc || s->token_basic ? " and client_secret" : "",
                       cc ? "the client-credentials grant" : "a token refresh");
        return PB_ECONFIG;
    }
    if (!cc && !(cred && nonempty(cred->refresh_token))) {
        svc->error_set(err, PB_EAUTH, NULL, "connection has no refresh token");
        return PB_EAUTH;
    }
    char *url = NULL;
    const char *tpl = !cc && s->refresh_url ? s->refresh_url : s->token_url;
    int rc = eval_url(s, tpl, "the token URL", 0, cred, &url, err);
    if (rc != PB_OK)
        return rc == PB_EINVAL ? PB_EAUTH : rc;
    struct plist l = {0};
    static const char *const no_grant[] = {"grant_type", NULL};
    if (cc) {
        pl_set(&l, "grant_type", "client_credentials");
        if (!s->token_basic) {
            pl_set(&l, "client_id", id);
            pl_set(&l, "client_secret", secret);
        }
        int o;
        char *scope = scope_string(s, cred ? cred->scopes : NULL, &o);
        if (scope)
            pl_set(&l, "scope", scope);
        free(scope);
        if (o)
            l.oom = 1;
        /* An OAUTH2_CC entry's token_params may change the grant (Zoom's
         * account_credentials); an OAUTH2 entry's name the code grant. */
        rc = pl_apply(s, &l, &s->token_params, "token_params",
                      s->mode == MODE_OAUTH2_CC ? NULL : no_grant, cred, err);
    } else {
        pl_set(&l, "grant_type", "refresh_token");
        pl_set(&l, "refresh_token", cred->refresh_token);
        if (!s->token_basic) {
            pl_set(&l, "client_id", id);
            if (nonempty(secret))
                pl_set(&l, "client_secret", secret);
        }
        if (s->has_refresh_params)
            rc = pl_apply(s, &l, &s->refresh_params, "refresh_params", NULL, cred, err);
        else
            rc = pl_apply(s, &l, &s->token_params, "token_params", no_grant, cred, err);
    }
    if (rc == PB_OK && l.oom)
        rc = PB_ENOMEM;
    if (rc == PB_OK)
        rc = emit_token_request(s, req, url, &l, id, secret, err);
    if (rc == PB_ENOMEM)
        svc->error_set(err, PB_ENOMEM, NULL, "out of memory");
    pl_free(&l);
    free(url);
    return rc;
}

/* Percent-decoding of one form field ('+' is a space); malloc'd. */
static char *form_decode(const char *s, size_t n)
{
    char *out = malloc(n + 1), *w = out;
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '+') {
            *w++ = ' ';
        } else if (s[i] == '%' && i + 2 < n && isxdigit((unsigned char)s[i + 1]) &&
                   isxdigit((unsigned char)s[i + 2])) {
            char hex[3] = {s[i + 1], s[i + 2], 0};
            *w++ = (char)strtol(hex, NULL, 16);
            i += 2;
        } else {
            *w++ = s[i];
        }
    }
    *w = '\0';
    return out;
}

/* A form-encoded token answer (a=b&c=d) as a JSON object, or NULL. */
static json_t *form_json(const char *body, size_t len)
{
    if (!body || !len || !memchr(body, '=', len))
        return NULL;
    json_t *o = json_object();
    const char *p = body, *end = body + len;
    while (o && p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *fe = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(fe - p));
        if (eq) {
            char *k = form_decode(p, (size_t)(eq - p));
            char *v = form_decode(eq + 1, (size_t)(fe - eq - 1));
            json_t *js = v ? json_string(v) : NULL;
            if (k && js)
                json_object_set_new(o, k, js);
            else
                json_decref(js);
            free(k);
            free_secret(v);
        }
        p = fe + 1;
    }
    return o;
}

/* Dotted paths into the token response (team.id) as strings. */
static json_t *lookup_path(json_t *body, const char *path)
{
    char buf[256];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return NULL;
    json_t *v = json_object_get(body, buf); /* a literal dotted key first */
    if (v)
        return v;
    v = body;
    char *save = NULL;
    for (char *t = strtok_r(buf, ".", &save); t && v; t = strtok_r(NULL, ".", &save))
        v = json_object_get(v, t);
    return v;
}

static int gen_parse_token_response(void *state, const pb_http_response *resp, json_t **out,
                                    pb_error *err)
{
    const struct gen_state *s = state;
    const struct pb_core_services *svc = s->svc;
    int status = svc->resp_status(resp);
    json_t *body = svc->resp_json(resp);
    json_t *owned = NULL;
    *out = NULL;
    if (!json_is_object(body)) {
        size_t len = 0;
        const char *raw = svc->resp_body(resp, &len);
        body = owned = form_json(raw, len);
    }
    const char *emsg = json_string_value(json_object_get(body, "error_description"));
    if (!emsg)
        emsg = json_string_value(json_object_get(body, "message"));
    if (!emsg)
        emsg = json_string_value(json_object_get(body, "error"));
    if (status < 200 || status >= 300) {
        enum pb_errcode code = (status >= 400 && status < 500 && status != 429) ? PB_EAUTH
                                                                               : PB_EPROVIDER;
        if (emsg)
            svc->error_set(err, code, NULL, "token endpoint of provider '%s' (HTTP %d): %.200s",
                           s->provider, status, emsg);
        else
            svc->error_set(err, code, NULL, "token endpoint of provider '%s' answered HTTP %d",
                           s->provider, status);
        json_decref(owned);
        return code;
    }
    const char *access = json_string_value(json_object_get(body, "access_token"));
    if (!nonempty(access)) {
        if (emsg)
            svc->error_set(err, PB_EAUTH, NULL,
                           "token endpoint of provider '%s' gave no access_token: %.200s",
                           s->provider, emsg);
        else
            svc->error_set(err, PB_EPROVIDER, NULL,
                           "token response of provider '%s' has no access_token", s->provider);
        json_decref(owned);
        return emsg ? PB_EAUTH : PB_EPROVIDER;
    }
    json_t *r = json_object();
    if (!r) {
        json_decref(owned);
        return PB_ENOMEM;
    }
    json_object_set_new(r, "access_token", json_string(access));
    const char *refresh = json_string_value(json_object_get(body, "refresh_token"));
    if (nonempty(refresh))
        json_object_set_new(r, "refresh_token", json_string(refresh));
    json_t *exp = json_object_get(body, "expires_in");
    long long secs = 0;
    if (json_is_integer(exp)) {
        secs = json_integer_value(exp);
    } else if (json_is_real(exp)) {
        secs = (long long)json_real_value(exp);
    } else if (json_is_string(exp)) {
        char *end;
        errno = 0;
        long long v = strtoll(json_string_value(exp), &end, 10);
        if (errno == 0 && *end == '\0')
            secs = v;
    }
    if (secs > 0)
        json_object_set_new(r, "expires_in", json_integer(secs));
    json_t *scope = json_object_get(body, "scope");
    if (json_is_string(scope) && json_string_length(scope) > 0) {
        json_object_set_new(r, "scopes", json_string(json_string_value(scope)));
    } else if (json_is_array(scope)) {
        struct sbuf b = {0};
        size_t i;
        json_t *e;
        json_array_foreach(scope, i, e) {
            if (!json_is_string(e))
                continue;
            if (b.len)
                sb_add(&b, " ");
            sb_add(&b, json_string_value(e));
        }
        if (b.p && !b.oom)
            json_object_set_new(r, "scopes", json_string(b.p));
        free(b.p);
    }
    json_t *md = NULL;
    for (size_t i = 0; i < s->token_meta.n; i++) {
        json_t *v = lookup_path(body, s->token_meta.v[i]);
        char num[64];
        const char *text = NULL;
        if (json_is_string(v)) {
            text = json_string_value(v);
        } else if (json_is_integer(v)) {
            snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
            text = num;
        } else if (json_is_real(v)) {
            snprintf(num, sizeof num, "%.17g", json_real_value(v));
            text = num;
        } else if (json_is_boolean(v)) {
            text = json_is_true(v) ? "true" : "false";
        }
        if (!text)
            continue;
        if (!md && !(md = json_object()))
            break;
        json_object_set_new(md, s->token_meta.v[i], json_string(text));
    }
    if (md)
        json_object_set_new(r, "metadata", md);
    json_decref(owned);
    *out = r;
    return PB_OK;
}

/* Credentials that carry only connection metadata (connect time). */
static void meta_view(struct pb_credentials *c, const json_t *metadata, json_t *fallback)
{
    memset(c, 0, sizeof *c);
    c->struct_size = sizeof *c;
    c->auth_type = "oauth2";
    c->metadata = metadata && json_is_object(metadata) ? metadata : fallback;
}

static int gen_authorize_url(void *state, const struct pb_oauth_params *p, char *out,
                             size_t out_len, pb_error *err)
{
    const struct gen_state *s = state;
    const struct pb_core_services *svc = s->svc;
    if (!(s->mode == MODE_OAUTH2 || (s->mode == MODE_PLAIN && s->authorization_url)) ||
        !s->authorization_url || !s->token_url)
        return no_oauth(s, err, "OAuth authorization-code flow");
    if (!nonempty(s->client_id)) {
        svc->error_set(err, PB_ECONFIG, "client_id", "provider '%s' needs client_id for OAuth",
                       s->provider);
        return PB_ECONFIG;
    }
    if (!p || !nonempty(p->redirect_uri) || !nonempty(p->state)) {
        svc->error_set(err, PB_EINVAL, NULL, "authorize URL needs redirect_uri and state");
        return PB_EINVAL;
    }
    json_t *empty = json_object();
    struct pb_credentials view;
    meta_view(&view, p->metadata, empty);
    char *url = NULL;
    int rc = eval_url(s, s->authorization_url, "the authorization URL", 0, &view, &url, err);
    struct plist l = {0};
    if (rc == PB_OK) {
        static const char *const fixed[] = {"client_id", "redirect_uri", "state", NULL};
        pl_set(&l, "client_id", s->client_id);
        pl_set(&l, "redirect_uri", p->redirect_uri);
        pl_set(&l, "response_type", "code");
        int o;
        char *scope = scope_string(s, p->scopes, &o);
        if (scope)
            pl_set(&l, "scope", scope);
        free(scope);
        if (o)
            l.oom = 1;
        rc = pl_apply(s, &l, &s->auth_params, "authorization_params", fixed, &view, err);
        pl_set(&l, "state", p->state);
        if (rc == PB_OK && l.oom)
            rc = PB_ENOMEM;
    }
    if (rc == PB_OK) {
        struct sbuf b = {0};
        sb_add(&b, url);
        for (size_t i = 0; i < l.n; i++) {
            char *en = svc->url_escape(l.name[i]), *ev = svc->url_escape(l.value[i]);
            if (!en || !ev)
                b.oom = 1;
            else {
                sb_add(&b, i == 0 ? (strchr(url, '?') ? "&" : "?") : "&");
                sb_add(&b, en);
                sb_add(&b, "=");
                sb_add(&b, ev);
            }
            svc->str_free(en);
            svc->str_free(ev);
        }
        if (b.oom) {
            rc = PB_ENOMEM;
        } else if (svc->str_format(out, out_len, "%s", b.p) != PB_OK) {
            svc->error_set(err, PB_EINVAL, NULL, "authorize URL does not fit in %zu bytes",
                           out_len);
            rc = PB_EINVAL;
        }
        free(b.p);
    }
    if (rc == PB_ENOMEM)
        svc->error_set(err, PB_ENOMEM, NULL, "out of memory");
    pl_free(&l);
    free(url);
    json_decref(empty);
    return rc;
}

static int gen_build_code_exchange(void *state, const struct pb_oauth_params *p, const char *code,
                                   pb_http_request *req, pb_error *err)
{
    const struct gen_state *s = state;
    const struct pb_core_services *svc = s->svc;
    if (!(s->mode == MODE_OAUTH2 || (s->mode == MODE_PLAIN && s->authorization_url)) ||
        !s->token_url)
        return no_oauth(s, err, "OAuth authorization-code flow");
    if (!nonempty(s->client_id) || (s->token_basic && !nonempty(s->client_secret))) {
        svc->error_set(err, PB_ECONFIG, nonempty(s->client_id) ? "client_secret" : "client_id",
                       "provider '%s' needs client_id%s for OAuth", s->provider,
                       s->token_basic ? " and client_secret" : "");
        return PB_ECONFIG;
    }
    if (!nonempty(code) || !p || !nonempty(p->redirect_uri)) {
        svc->error_set(err, PB_EINVAL, "code", "code exchange needs a code and redirect_uri");
        return PB_EINVAL;
    }
    json_t *empty = json_object();
    struct pb_credentials view;
    meta_view(&view, p->metadata, empty);
    char *url = NULL;
    int rc = eval_url(s, s->token_url, "the token URL", 0, &view, &url, err);
    struct plist l = {0};
    if (rc == PB_OK) {
        static const char *const fixed[] = {"code", "redirect_uri", NULL};
        pl_set(&l, "grant_type", "authorization_code");
        pl_set(&l, "code", code);
        pl_set(&l, "redirect_uri", p->redirect_uri);
        if (!s->token_basic) {
            pl_set(&l, "client_id", s->client_id);
            if (nonempty(s->client_secret))
                pl_set(&l, "client_secret", s->client_secret);
        }
        rc = pl_apply(s, &l, &s->token_params, "token_params", fixed, &view, err);
        if (rc == PB_OK && l.oom)
            rc = PB_ENOMEM;
    }
    if (rc == PB_OK)
        rc = emit_token_request(s, req, url, &l, s->client_id, s->client_secret, err);
    if (rc == PB_ENOMEM)
        svc->error_set(err, PB_ENOMEM, NULL, "out of memory");
    pl_free(&l);
    free(url);
    json_decref(empty);
    return rc;
}

/* ---- rate limits -------------------------------------------------------------------- */

static int parse_number(const char *s, double *out)
{
    char *end;
    if (!s)
        return 0;
    while (*s == ' ' || *s == '\t')
        s++;
    if (!*s)
        return 0;
    errno = 0;
    double v = strtod(s, &end);
    while (*end == ' ' || *end == '\t')
        end++;
    if (errno || *end || !isfinite(v) || v < 0)
        return 0;
    *out = v;
    return 1;
}

/* A wait in seconds (or an HTTP date) -> unix ms; 0 when unreadable. */
static int64_t after_ms(const struct pb_core_services *svc, const char *v, int64_t now)
{
    double d;
    if (parse_number(v, &d))
        return d > 1e9 ? 0 : now + (int64_t)(d * 1000.0);
    int64_t t = svc->parse_http_date(v);
    return t > 0 ? t : 0;
}

/* A point in time: epoch ms, epoch seconds or an HTTP date; small numbers
 * are read as seconds from now (many "reset" headers count down). */
static int64_t at_ms(const struct pb_core_services *svc, const char *v, int64_t now)
{
    double d;
    if (parse_number(v, &d)) {
        if (d >= 1e11)
            return (int64_t)d;
        if (d >= 1e9)
            return (int64_t)(d * 1000.0);
        return now + (int64_t)(d * 1000.0);
    }
    int64_t t = svc->parse_http_date(v);
    return t > 0 ? t : 0;
}

static void gen_classify(void *state, const pb_http_response *resp, struct pb_classification *out)
{
    const struct gen_state *s = state;
    const struct pb_core_services *svc = s->svc;
    if (!s->retry_after.n && !s->retry_at.n && !s->retry_remaining && !s->retry_error_code)
        return;
    int status = svc->resp_status(resp);
    int limited = status == 429 || out->rate_limited;
    double rem = -1;
    int have_rem = s->retry_remaining &&
                   parse_number(svc->resp_header(resp, s->retry_remaining), &rem);
    if (s->retry_error_code && status == s->retry_error_code)
        limited = !have_rem || rem < 1;
    else if (have_rem && rem < 1 && (status == 403 || status == 429))
        limited = 1;
    if (!limited)
        return;
    out->rate_limited = 1;
    out->retryable = 1;
    int64_t now = svc->now_ms(), best = 0;
    for (size_t i = 0; i < s->retry_after.n; i++) {
        int64_t t = after_ms(svc, svc->resp_header(resp, s->retry_after.v[i]), now);
        if (t > best)
            best = t;
    }
    for (size_t i = 0; i < s->retry_at.n; i++) {
        int64_t t = at_ms(svc, svc->resp_header(resp, s->retry_at.v[i]), now);
        if (t > best)
            best = t;
    }
    /* The longest wait wins, the core's own Retry-After reading included. */
    if (best > now && best > out->retry_at_ms)
        out->retry_at_ms = best;
}

/* ---- vtable ------------------------------------------------------------------------ */

static const struct pb_plugin generic_plugin = {
    PB_PLUGIN_HEAD,
    .name = "generic",
    .version = "0.2.0",
    .description = "Any REST API from a providers.yaml catalog entry (API key, Basic, OAuth2, "
                   "client credentials, none), or a fixed base URL",
    .config_keys = gen_config_keys,
    .max_batch_size = 0,
    .init = gen_init,
    .fini = gen_fini,
    .base_url = gen_base_url,
    .apply_credentials = gen_apply_credentials,
    .build_token_refresh = gen_build_token_refresh,
    .parse_token_response = gen_parse_token_response,
    .authorize_url = gen_authorize_url,
    .build_code_exchange = gen_build_code_exchange,
    .classify = gen_classify,
};

PB_PLUGIN_DEFINE(generic_plugin)
