/*
 * Generic REST provider plugin: a fixed base URL and the connection's
 * credentials as a header (API key, HTTP Basic or OAuth2 bearer token).
 * Catalog (providers.yaml) entries are accepted in the configuration but not
 * read yet. It only translates; the core performs every call.
 */
#include <plugboard/plugin.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct gen_state {
    const struct pb_core_services *svc;
    char *base_url;
    char *auth_header; /* header carrying an API key, default Authorization */
    char *auth_scheme; /* prefix of the API key, default Bearer; "" for none */
};

static const char *const gen_config_keys[] = {"catalog",     "entry",     "base_url",
                                              "auth_header", "auth_scheme", "client_id",
                                              "client_secret", NULL};

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

static void gen_fini(void *state)
{
    struct gen_state *s = state;
    if (!s)
        return;
    free(s->base_url);
    free(s->auth_header);
    free(s->auth_scheme);
    free(s);
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
    const char *catalog, *entry, *base, *header, *scheme, *cid, *csecret;
    int rc;
    if ((rc = opt_string(svc, opts, "catalog", &catalog, err)) != PB_OK ||
        (rc = opt_string(svc, opts, "entry", &entry, err)) != PB_OK ||
        (rc = opt_string(svc, opts, "base_url", &base, err)) != PB_OK ||
        (rc = opt_string(svc, opts, "auth_header", &header, err)) != PB_OK ||
        (rc = opt_string(svc, opts, "auth_scheme", &scheme, err)) != PB_OK ||
        (rc = opt_string(svc, opts, "client_id", &cid, err)) != PB_OK ||
        (rc = opt_string(svc, opts, "client_secret", &csecret, err)) != PB_OK)
        return rc;
    if (!nonempty(base)) {
        if (catalog)
            svc->error_set(err, PB_ECONFIG, "catalog",
                           "catalog support is not implemented yet: set base_url");
        else
            svc->error_set(err, PB_ECONFIG, "base_url", "option base_url is required");
        return PB_ECONFIG;
    }
    if (!valid_base_url(base)) {
        svc->error_set(err, PB_ECONFIG, "base_url",
                       "option base_url must be an http:// or https:// URL without a query");
        return PB_ECONFIG;
    }
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
    struct gen_state *s = calloc(1, sizeof *s);
    if (!s)
        return PB_ENOMEM;
    s->svc = svc;
    s->base_url = dup_str(base);
    s->auth_header = dup_str(header ? header : "Authorization");
    s->auth_scheme = dup_str(scheme ? scheme : "Bearer");
    if (!s->base_url || !s->auth_header || !s->auth_scheme) {
        gen_fini(s);
        svc->error_set(err, PB_ENOMEM, NULL, "out of memory");
        return PB_ENOMEM;
    }
    size_t n = strlen(s->base_url);
    while (n > 0 && s->base_url[n - 1] == '/')
        s->base_url[--n] = '\0';
    *state = s;
    return PB_OK;
}

static int gen_base_url(void *state, const struct pb_credentials *cred, char *out, size_t out_len,
                        pb_error *err)
{
    const struct gen_state *s = state;
    (void)cred;
    if (s->svc->str_format(out, out_len, "%s", s->base_url) != PB_OK) {
        s->svc->error_set(err, PB_EINVAL, NULL, "base URL does not fit in %zu bytes", out_len);
        return PB_EINVAL;
    }
    return PB_OK;
}

/* Clears a buffer that held a secret; volatile so the store stays. */
static void wipe(char *p, size_t n)
{
    volatile char *v = p;
    while (n--)
        *v++ = 0;
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

static int gen_apply_credentials(void *state, const struct pb_credentials *cred,
                                 pb_http_request *req, pb_error *err)
{
    const struct gen_state *s = state;
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
        size_t n = strlen(user) + strlen(pass) + 2;
        char *pair = malloc(n);
        if (!pair)
            return PB_ENOMEM;
        snprintf(pair, n, "%s:%s", user, pass);
        char *b64 = svc->base64_encode(pair, n - 1);
        wipe(pair, n);
        free(pair);
        if (!b64)
            return PB_ENOMEM;
        int rc = add_secret_header(s, req, "Authorization", "Basic", b64, err);
        svc->str_free(b64);
        return rc;
    }
    svc->error_set(err, PB_EAUTH, NULL, "unsupported connection auth type '%s'", type);
    return PB_EAUTH;
}

static const struct pb_plugin generic_plugin = {
    PB_PLUGIN_HEAD,
    .name = "generic",
    .version = "0.1.0",
    .description = "Any REST API: fixed base URL, API key, Basic or bearer-token auth",
    .config_keys = gen_config_keys,
    .max_batch_size = 0,
    .init = gen_init,
    .fini = gen_fini,
    .base_url = gen_base_url,
    .apply_credentials = gen_apply_credentials,
};

PB_PLUGIN_DEFINE(generic_plugin)
