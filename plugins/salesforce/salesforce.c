/*
 * Salesforce provider plugin: OAuth2 web-server and client-credentials
 * flows, REST sObject writes, composite batch create/update, deletes, the
 * Sforce-* request headers, and reads of current values (one record or an
 * sObject collection) for writeOnUpdate: ifEmpty. The base URL is the
 * connection's instance_url.
 * It only translates; the core performs every call.
 */
#include <plugboard/plugin.h>

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define SF_DEFAULT_LOGIN_URL "https://login.salesforce.com"
#define SF_DEFAULT_API_VERSION "v60.0"
#define SF_MAX_BATCH 200
/* Salesforce gives no reset time for its request limits. */
#define SF_LIMIT_BACKOFF_MS 60000

struct sf_state {
    const struct pb_core_services *svc;
    char *provider;
    char *client_id;
    char *client_secret;
    char *login_url;
    char *api_version; /* "v60.0" */
    char *scopes;
};

static const char *const sf_config_keys[] = {"client_id", "client_secret", "login_url",
                                             "api_version", "scopes", NULL};

/* Request headers a caller may pass through on writes. */
static const char *const sf_passthrough_headers[] = {
    "Sforce-Duplicate-Rule-Header", "Sforce-Auto-Assign", "Sforce-Call-Options", "Sforce-Mru",
    "Sforce-Query-Options",
};

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

static size_t trimmed_len(const char *s)
{
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == '/')
        n--;
    return n;
}

/* Reads a string option (or, for lists, an array of strings joined by
 * spaces); NULL or absent yields a copy of `def` (which may be NULL). */
static int opt_string(const struct pb_core_services *svc, const json_t *opts, const char *key,
                      const char *def, int allow_list, char **out, pb_error *err)
{
    json_t *v = opts ? json_object_get(opts, key) : NULL;
    *out = NULL;
    if (!v || json_is_null(v)) {
        if (!def)
            return PB_OK;
        *out = dup_str(def);
        return *out ? PB_OK : PB_ENOMEM;
    }
    if (json_is_string(v)) {
        *out = dup_str(json_string_value(v));
        return *out ? PB_OK : PB_ENOMEM;
    }
    if (allow_list && json_is_array(v)) {
        size_t len = 1, i;
        json_t *e;
        json_array_foreach(v, i, e) {
            if (!json_is_string(e)) {
                svc->error_set(err, PB_ECONFIG, key,
                               "option %s must be a string or a list of strings", key);
                return PB_ECONFIG;
            }
            len += json_string_length(e) + 1;
        }
        char *s = malloc(len);
        if (!s)
            return PB_ENOMEM;
        s[0] = '\0';
        json_array_foreach(v, i, e) {
            if (i)
                strcat(s, " ");
            strcat(s, json_string_value(e));
        }
        *out = s;
        return PB_OK;
    }
    svc->error_set(err, PB_ECONFIG, key, "option %s must be a string", key);
    return PB_ECONFIG;
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

/* Appends the URL-escaped `value`. */
static void sb_escaped(const struct pb_core_services *svc, struct sbuf *b, const char *value)
{
    char *e = svc->url_escape(value);
    if (!e) {
        b->oom = 1;
        return;
    }
    sb_add(b, e);
    svc->str_free(e);
}

static void sb_param(const struct pb_core_services *svc, struct sbuf *b, const char *sep,
                     const char *name, const char *value)
{
    sb_add(b, sep);
    sb_add(b, name);
    sb_add(b, "=");
    sb_escaped(svc, b, value);
}

/* An id as a JSON string: strings as they are, integers formatted. */
static json_t *id_json(const json_t *v)
{
    char buf[32];
    if (json_is_string(v) && json_string_length(v) > 0)
        return json_string(json_string_value(v));
    if (json_is_integer(v)) {
        snprintf(buf, sizeof buf, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return json_string(buf);
    }
    return NULL;
}

/* Sets a URL under /services/data/{version}/: `tail` then the escaped
 * object and id segments when given. */
static int set_data_url(const struct sf_state *s, pb_http_request *req, const char *tail,
                        const char *object, const char *id, pb_error *err)
{
    const struct pb_core_services *svc = s->svc;
    struct sbuf b = {0};
    sb_add(&b, "/services/data/");
    sb_add(&b, s->api_version);
    sb_add(&b, tail);
    if (object) {
        sb_add(&b, "/");
        sb_escaped(svc, &b, object);
    }
    if (id) {
        sb_add(&b, "/");
        sb_escaped(svc, &b, id);
    }
    int rc = b.oom ? PB_ENOMEM : svc->req_set_url(req, b.p);
    free(b.p);
    if (rc != PB_OK && rc != PB_ENOMEM)
        svc->error_set(err, rc, "object", "cannot build the request URL");
    return rc;
}

static int check_object(const struct sf_state *s, const char *object, pb_error *err)
{
    if (nonempty(object))
        return PB_OK;
    s->svc->error_set(err, PB_EINVAL, "object", "an object name is required");
    return PB_EINVAL;
}

/* ---- lifecycle ------------------------------------------------------------- */

static void sf_fini(void *state)
{
    struct sf_state *s = state;
    if (!s)
        return;
    free(s->provider);
    free(s->client_id);
    free(s->client_secret);
    free(s->login_url);
    free(s->api_version);
    free(s->scopes);
    free(s);
}

/* "v60.0" or "60.0" -> "v60.0"; anything else is refused. */
static int normalize_version(char **v)
{
    const char *p = *v;
    if (*p == 'v' || *p == 'V')
        p++;
    const char *num = p;
    if (!isdigit((unsigned char)*p))
        return PB_ECONFIG;
    while (isdigit((unsigned char)*p))
        p++;
    if (*p++ != '.' || !isdigit((unsigned char)*p))
        return PB_ECONFIG;
    while (isdigit((unsigned char)*p))
        p++;
    if (*p)
        return PB_ECONFIG;
    size_t n = strlen(num) + 2;
    char *out = malloc(n);
    if (!out)
        return PB_ENOMEM;
    snprintf(out, n, "v%s", num);
    free(*v);
    *v = out;
    return PB_OK;
}

static int sf_init(const struct pb_core_services *svc, const struct pb_plugin_config *cfg,
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
    struct sf_state *s = calloc(1, sizeof *s);
    if (!s)
        return PB_ENOMEM;
    s->svc = svc;
    int rc = PB_OK;
    s->provider = dup_str(cfg && cfg->provider_name ? cfg->provider_name : "salesforce");
    if (!s->provider)
        rc = PB_ENOMEM;
    if (rc == PB_OK)
        rc = opt_string(svc, opts, "client_id", NULL, 0, &s->client_id, err);
    if (rc == PB_OK)
        rc = opt_string(svc, opts, "client_secret", NULL, 0, &s->client_secret, err);
    if (rc == PB_OK)
        rc = opt_string(svc, opts, "scopes", NULL, 1, &s->scopes, err);
    if (rc == PB_OK)
        rc = opt_string(svc, opts, "login_url", SF_DEFAULT_LOGIN_URL, 0, &s->login_url, err);
    if (rc == PB_OK && !valid_base_url(s->login_url)) {
        svc->error_set(err, PB_ECONFIG, "login_url",
                       "option login_url must be an http:// or https:// URL without a query");
        rc = PB_ECONFIG;
    }
    if (rc == PB_OK)
        s->login_url[trimmed_len(s->login_url)] = '\0';
    if (rc == PB_OK)
        rc = opt_string(svc, opts, "api_version", SF_DEFAULT_API_VERSION, 0, &s->api_version,
                        err);
    if (rc == PB_OK && (rc = normalize_version(&s->api_version)) == PB_ECONFIG)
        svc->error_set(err, PB_ECONFIG, "api_version",
                       "option api_version must look like v60.0, not '%s'", s->api_version);
    if (rc != PB_OK) {
        if (rc == PB_ENOMEM)
            svc->error_set(err, PB_ENOMEM, NULL, "out of memory");
        sf_fini(s);
        return rc;
    }
    *state = s;
    return PB_OK;
}

/* ---- connection ------------------------------------------------------------ */

static int sf_base_url(void *state, const struct pb_credentials *cred, char *out, size_t out_len,
                       pb_error *err)
{
    const struct sf_state *s = state;
    const struct pb_core_services *svc = s->svc;
    const char *iu = cred ? svc->cred_meta(cred, "instance_url") : NULL;
    if (!nonempty(iu)) {
        svc->error_set(err, PB_EAUTH, "instance_url", "connection has no instance_url");
        return PB_EAUTH;
    }
    if (!valid_base_url(iu)) {
        svc->error_set(err, PB_EAUTH, "instance_url",
                       "connection's instance_url is not an http:// or https:// URL");
        return PB_EAUTH;
    }
    if (svc->str_format(out, out_len, "%.*s", (int)trimmed_len(iu), iu) != PB_OK) {
        svc->error_set(err, PB_EINVAL, "instance_url", "instance_url does not fit in %zu bytes",
                       out_len);
        return PB_EINVAL;
    }
    return PB_OK;
}

static int sf_apply_credentials(void *state, const struct pb_credentials *cred,
                                pb_http_request *req, pb_error *err)
{
    const struct sf_state *s = state;
    const struct pb_core_services *svc = s->svc;
    const char *type = cred && cred->auth_type ? cred->auth_type : "none";
    if (strcmp(type, "oauth2") != 0 && strcmp(type, "oauth2_cc") != 0) {
        svc->error_set(err, PB_EAUTH, NULL, "salesforce needs an oauth2 connection, not '%s'",
                       type);
        return PB_EAUTH;
    }
    if (!nonempty(cred->access_token)) {
        svc->error_set(err, PB_EAUTH, NULL, "connection has no access token");
        return PB_EAUTH;
    }
    size_t n = strlen(cred->access_token) + sizeof "Bearer ";
    char *value = malloc(n);
    if (!value)
        return PB_ENOMEM;
    snprintf(value, n, "Bearer %s", cred->access_token);
    int rc = svc->req_add_header(req, "Authorization", value);
    free(value);
    if (rc != PB_OK) {
        svc->error_set(err, PB_EAUTH, NULL, "the access token cannot be sent in a header");
        return PB_EAUTH;
    }
    return PB_OK;
}

/* ---- OAuth2 ---------------------------------------------------------------- */

static int client_creds(const struct sf_state *s, const struct pb_credentials *cred,
                        const char **id, const char **secret, pb_error *err)
{
    *id = cred && nonempty(cred->client_id) ? cred->client_id : s->client_id;
    *secret = cred && nonempty(cred->client_secret) ? cred->client_secret : s->client_secret;
    if (!nonempty(*id) || !nonempty(*secret)) {
        s->svc->error_set(err, PB_ECONFIG, nonempty(*id) ? "client_secret" : "client_id",
                          "provider '%s' needs client_id and client_secret for OAuth",
                          s->provider);
        return PB_ECONFIG;
    }
    return PB_OK;
}

/* POST {host}/services/oauth2/token, host without trailing slashes. */
static int token_request(const struct sf_state *s, const char *host, pb_http_request *req)
{
    const struct pb_core_services *svc = s->svc;
    struct sbuf b = {0};
    sb_addn(&b, host, trimmed_len(host));
    sb_add(&b, "/services/oauth2/token");
    int rc = b.oom ? PB_ENOMEM : svc->req_set_method(req, "POST");
    if (rc == PB_OK)
        rc = svc->req_set_url(req, b.p);
    if (rc == PB_OK)
        rc = svc->req_add_header(req, "Accept", "application/json");
    free(b.p);
    return rc;
}

static int sf_build_token_refresh(void *state, const struct pb_credentials *cred,
                                  pb_http_request *req, pb_error *err)
{
    const struct sf_state *s = state;
    const struct pb_core_services *svc = s->svc;
    const char *id, *secret;
    int rc;
    if (cred && cred->auth_type && strcmp(cred->auth_type, "oauth2_cc") == 0) {
        /* The client-credentials flow must use the org's own (My Domain) host. */
        const char *iu = svc->cred_meta(cred, "instance_url");
        const char *host = nonempty(iu) && valid_base_url(iu) ? iu : s->login_url;
        if ((rc = client_creds(s, cred, &id, &secret, err)) != PB_OK)
            return rc;
        if ((rc = token_request(s, host, req)) != PB_OK ||
            (rc = svc->req_add_form(req, "grant_type", "client_credentials")) != PB_OK ||
            (rc = svc->req_add_form(req, "client_id", id)) != PB_OK ||
            (rc = svc->req_add_form(req, "client_secret", secret)) != PB_OK)
            svc->error_set(err, rc, NULL, "cannot build the token request");
        return rc;
    }
    if (!cred || !nonempty(cred->refresh_token)) {
        svc->error_set(err, PB_EAUTH, NULL, "connection has no refresh token");
        return PB_EAUTH;
    }
    if ((rc = client_creds(s, cred, &id, &secret, err)) != PB_OK)
        return rc;
    if ((rc = token_request(s, s->login_url, req)) != PB_OK ||
        (rc = svc->req_add_form(req, "grant_type", "refresh_token")) != PB_OK ||
        (rc = svc->req_add_form(req, "client_id", id)) != PB_OK ||
        (rc = svc->req_add_form(req, "client_secret", secret)) != PB_OK ||
        (rc = svc->req_add_form(req, "refresh_token", cred->refresh_token)) != PB_OK)
        svc->error_set(err, rc, NULL, "cannot build the token refresh request");
    return rc;
}

static int sf_parse_token_response(void *state, const pb_http_response *resp, json_t **out,
                                   pb_error *err)
{
    const struct sf_state *s = state;
    const struct pb_core_services *svc = s->svc;
    int status = svc->resp_status(resp);
    json_t *body = svc->resp_json(resp);
    *out = NULL;
    if (status < 200 || status >= 300) {
        const char *code_s = json_string_value(json_object_get(body, "error"));
        const char *desc = json_string_value(json_object_get(body, "error_description"));
        /* A rejected grant is an auth problem; an outage is not. */
        enum pb_errcode code = (status >= 400 && status < 500 && status != 429) ? PB_EAUTH
                                                                               : PB_EPROVIDER;
        if (code_s && desc)
            svc->error_set(err, code, NULL, "salesforce token endpoint (HTTP %d): %s: %s", status,
                           code_s, desc);
        else if (code_s || desc)
            svc->error_set(err, code, NULL, "salesforce token endpoint (HTTP %d): %s", status,
                           code_s ? code_s : desc);
        else
            svc->error_set(err, code, NULL, "salesforce token endpoint answered HTTP %d", status);
        return code;
    }
    const char *access = json_string_value(json_object_get(body, "access_token"));
    if (!json_is_object(body) || !nonempty(access)) {
        svc->error_set(err, PB_EPROVIDER, NULL, "salesforce token response has no access_token");
        return PB_EPROVIDER;
    }
    const char *iu = json_string_value(json_object_get(body, "instance_url"));
    if (iu && !valid_base_url(iu)) {
        svc->error_set(err, PB_EPROVIDER, NULL,
                       "salesforce token response has an unusable instance_url");
        return PB_EPROVIDER;
    }
    json_t *r = json_object();
    json_t *meta = json_object();
    if (!r || !meta) {
        json_decref(r);
        json_decref(meta);
        return PB_ENOMEM;
    }
    json_object_set_new(r, "access_token", json_string(access));
    const char *refresh = json_string_value(json_object_get(body, "refresh_token"));
    if (nonempty(refresh))
        json_object_set_new(r, "refresh_token", json_string(refresh));
    const char *scope = json_string_value(json_object_get(body, "scope"));
    if (nonempty(scope))
        json_object_set_new(r, "scopes", json_string(scope));
    if (iu)
        json_object_set_new(meta, "instance_url", json_stringn(iu, trimmed_len(iu)));
    json_t *issued = id_json(json_object_get(body, "issued_at"));
    if (issued)
        json_object_set_new(meta, "issued_at", issued);
    /* No expires_in: Salesforce sessions end by policy, seen as a 401. */
    if (json_object_size(meta) > 0)
        json_object_set_new(r, "metadata", meta);
    else
        json_decref(meta);
    *out = r;
    return PB_OK;
}

static int sf_authorize_url(void *state, const struct pb_oauth_params *p, char *out,
                            size_t out_len, pb_error *err)
{
    const struct sf_state *s = state;
    const struct pb_core_services *svc = s->svc;
    if (!nonempty(s->client_id)) {
        svc->error_set(err, PB_ECONFIG, "client_id", "provider '%s' needs client_id for OAuth",
                       s->provider);
        return PB_ECONFIG;
    }
    if (!p || !nonempty(p->redirect_uri) || !nonempty(p->state)) {
        svc->error_set(err, PB_EINVAL, NULL, "authorize URL needs redirect_uri and state");
        return PB_EINVAL;
    }
    const char *scopes = nonempty(p->scopes) ? p->scopes : s->scopes;
    struct sbuf b = {0};
    sb_add(&b, s->login_url);
    sb_add(&b, "/services/oauth2/authorize?response_type=code");
    sb_param(svc, &b, "&", "client_id", s->client_id);
    sb_param(svc, &b, "&", "redirect_uri", p->redirect_uri);
    sb_param(svc, &b, "&", "state", p->state);
    if (nonempty(scopes))
        sb_param(svc, &b, "&", "scope", scopes);
    int rc = PB_OK;
    if (b.oom) {
        rc = PB_ENOMEM;
    } else if (svc->str_format(out, out_len, "%s", b.p) != PB_OK) {
        svc->error_set(err, PB_EINVAL, NULL, "authorize URL does not fit in %zu bytes", out_len);
        rc = PB_EINVAL;
    }
    free(b.p);
    return rc;
}

static int sf_build_code_exchange(void *state, const struct pb_oauth_params *p, const char *code,
                                  pb_http_request *req, pb_error *err)
{
    const struct sf_state *s = state;
    const struct pb_core_services *svc = s->svc;
    const char *id, *secret;
    int rc = client_creds(s, NULL, &id, &secret, err);
    if (rc != PB_OK)
        return rc;
    if (!nonempty(code) || !p || !nonempty(p->redirect_uri)) {
        svc->error_set(err, PB_EINVAL, "code", "code exchange needs a code and redirect_uri");
        return PB_EINVAL;
    }
    if ((rc = token_request(s, s->login_url, req)) != PB_OK ||
        (rc = svc->req_add_form(req, "grant_type", "authorization_code")) != PB_OK ||
        (rc = svc->req_add_form(req, "code", code)) != PB_OK ||
        (rc = svc->req_add_form(req, "client_id", id)) != PB_OK ||
        (rc = svc->req_add_form(req, "client_secret", secret)) != PB_OK ||
        (rc = svc->req_add_form(req, "redirect_uri", p->redirect_uri)) != PB_OK)
        svc->error_set(err, rc, NULL, "cannot build the code exchange request");
    return rc;
}

/* ---- results --------------------------------------------------------------- */

/* Salesforce errors (an array, or one object) -> Write API errors
 * [{message, errorCode, fields?}]. Composite results say statusCode where
 * the REST API says errorCode. */
static void append_error(json_t *out, const json_t *e)
{
    const char *msg = json_string_value(json_object_get(e, "message"));
    const char *code = json_string_value(json_object_get(e, "errorCode"));
    if (!code)
        code = json_string_value(json_object_get(e, "statusCode"));
    if (!msg && !code)
        return;
    json_t *r = json_object();
    json_object_set_new(r, "message", json_string(msg ? msg : code));
    if (code)
        json_object_set_new(r, "errorCode", json_string(code));
    json_t *fields = json_object_get(e, "fields");
    if (json_is_array(fields))
        json_object_set_new(r, "fields", json_deep_copy(fields));
    json_array_append_new(out, r);
}

static json_t *sf_errors(const json_t *in, int status)
{
    json_t *out = json_array();
    size_t i;
    json_t *e;
    if (json_is_object(in))
        append_error(out, in);
    json_array_foreach(in, i, e) {
        append_error(out, e);
    }
    if (json_array_size(out) == 0) {
        char buf[64];
        snprintf(buf, sizeof buf, "salesforce answered HTTP %d", status);
        json_t *r = json_object();
        json_object_set_new(r, "message", json_string(buf));
        json_array_append_new(out, r);
    }
    return out;
}

/* Steals `errors` and `record_id` (which may be NULL). */
static json_t *failure(json_t *errors, json_t *record_id)
{
    json_t *r = json_object();
    json_object_set_new(r, "success", json_false());
    if (record_id)
        json_object_set_new(r, "recordId", record_id);
    json_object_set_new(r, "errors", errors);
    return r;
}

/* Steals `record_id`; copies `data`. */
static json_t *success(json_t *record_id, const json_t *data)
{
    json_t *r = json_object();
    json_object_set_new(r, "success", json_true());
    if (record_id)
        json_object_set_new(r, "recordId", record_id);
    if (data)
        json_object_set_new(r, "data", json_deep_copy(data));
    return r;
}

static int provider_error(const struct sf_state *s, int status, const json_t *body, pb_error *err)
{
    json_t *errs = sf_errors(body, status);
    s->svc->error_set(err, PB_EPROVIDER, NULL, "salesforce answered HTTP %d: %s", status,
                      json_string_value(json_object_get(json_array_get(errs, 0), "message")));
    json_decref(errs);
    return PB_EPROVIDER;
}

/* ---- single writes --------------------------------------------------------- */

static int sf_encode_write(void *state, const struct pb_write *w, pb_http_request *req,
                           pb_error *err)
{
    const struct sf_state *s = state;
    const struct pb_core_services *svc = s->svc;
    int rc = check_object(s, w->object, err);
    if (rc != PB_OK)
        return rc;
    if (w->type != PB_WRITE_CREATE && w->type != PB_WRITE_UPDATE) {
        svc->error_set(err, PB_EINVAL, "type", "encode_write takes create or update writes");
        return PB_EINVAL;
    }
    if (w->type == PB_WRITE_UPDATE && !nonempty(w->record_id)) {
        svc->error_set(err, PB_EINVAL, "record.id", "an update needs record.id");
        return PB_EINVAL;
    }
    if (w->record && !json_is_object(w->record)) {
        svc->error_set(err, PB_EINVAL, "record", "record must be an object");
        return PB_EINVAL;
    }
    if (w->associations && json_array_size(w->associations) > 0) {
        svc->error_set(err, PB_EUNSUPPORTED, "associations",
                       "salesforce does not take associations");
        return PB_EUNSUPPORTED;
    }
    json_t *body = w->record ? json_deep_copy(w->record) : json_object();
    if (!body)
        return PB_ENOMEM;
    rc = svc->req_set_method(req, w->type == PB_WRITE_CREATE ? "POST" : "PATCH");
    if (rc == PB_OK)
        rc = set_data_url(s, req, "/sobjects", w->object,
                          w->type == PB_WRITE_UPDATE ? w->record_id : NULL, err);
    if (rc != PB_OK) {
        json_decref(body);
        return rc;
    }
    return svc->req_set_json(req, body);
}

static int sf_encode_delete(void *state, const struct pb_write *w, pb_http_request *req,
                            pb_error *err)
{
    const struct sf_state *s = state;
    const struct pb_core_services *svc = s->svc;
    int rc = check_object(s, w->object, err);
    if (rc != PB_OK)
        return rc;
    if (!nonempty(w->record_id)) {
        svc->error_set(err, PB_EINVAL, "record.id", "a delete needs record.id");
        return PB_EINVAL;
    }
    rc = svc->req_set_method(req, "DELETE");
    if (rc == PB_OK)
        rc = set_data_url(s, req, "/sobjects", w->object, w->record_id, err);
    return rc;
}

static int sf_decode_write(void *state, const struct pb_write *w, const pb_http_response *resp,
                           json_t **out, pb_error *err)
{
    const struct sf_state *s = state;
    const struct pb_core_services *svc = s->svc;
    int status = svc->resp_status(resp);
    json_t *body = svc->resp_json(resp);
    json_t *rid = nonempty(w->record_id) ? json_string(w->record_id) : NULL;
    *out = NULL;
    if (status >= 200 && status < 300) {
        /* Updates and deletes answer 204 with no body. */
        if (w->type == PB_WRITE_DELETE || status == 204 || !json_is_object(body)) {
            if (!rid) {
                svc->error_set(err, PB_EPROVIDER, NULL,
                               "salesforce answered HTTP %d without the record's id", status);
                return PB_EPROVIDER;
            }
            *out = success(rid, NULL);
            return PB_OK;
        }
        json_t *id = id_json(json_object_get(body, "id"));
        if (id) {
            json_decref(rid);
            rid = id;
        }
        if (json_is_false(json_object_get(body, "success"))) {
            *out = failure(sf_errors(json_object_get(body, "errors"), status), rid);
            return PB_OK;
        }
        if (!rid) {
            svc->error_set(err, PB_EPROVIDER, NULL,
                           "salesforce answered HTTP %d without the record's id", status);
            return PB_EPROVIDER;
        }
        *out = success(rid, body);
        return PB_OK;
    }
    if (status >= 400 && status < 500) {
        *out = failure(sf_errors(body, status), rid);
        return PB_OK;
    }
    json_decref(rid);
    return provider_error(s, status, body, err);
}

/* ---- batches --------------------------------------------------------------- */

static int sf_encode_batch(void *state, const struct pb_batch *b, pb_http_request *req,
                           pb_error *err)
{
    const struct sf_state *s = state;
    const struct pb_core_services *svc = s->svc;
    char field[64];
    int rc = check_object(s, b->object, err);
    if (rc != PB_OK)
        return rc;
    if (b->type != PB_WRITE_CREATE && b->type != PB_WRITE_UPDATE) {
        svc->error_set(err, PB_EINVAL, "type", "a batch is create or update");
        return PB_EINVAL;
    }
    size_t n = json_array_size(b->items);
    if (!json_is_array(b->items) || n == 0 || n > SF_MAX_BATCH) {
        svc->error_set(err, PB_EINVAL, "batch", "a salesforce batch holds 1 to %d records",
                       SF_MAX_BATCH);
        return PB_EINVAL;
    }
    json_t *records = json_array();
    json_t *body = json_object();
    if (!records || !body) {
        json_decref(records);
        json_decref(body);
        return PB_ENOMEM;
    }
    json_object_set_new(body, "allOrNone", json_boolean(b->all_or_none));
    json_object_set_new(body, "records", records);
    size_t i;
    json_t *item;
    json_array_foreach(b->items, i, item) {
        json_t *rec = json_object_get(item, "record");
        if (!json_is_object(item) || (rec && !json_is_object(rec))) {
            snprintf(field, sizeof field, "batch[%zu].record", i);
            svc->error_set(err, PB_EINVAL, field, "%s must be an object", field);
            rc = PB_EINVAL;
            break;
        }
        json_t *assoc = json_object_get(item, "associations");
        if (assoc && !(json_is_array(assoc) && json_array_size(assoc) == 0)) {
            snprintf(field, sizeof field, "batch[%zu].associations", i);
            svc->error_set(err, PB_EUNSUPPORTED, field, "salesforce does not take associations");
            rc = PB_EUNSUPPORTED;
            break;
        }
        json_t *r = json_object();
        json_array_append_new(records, r);
        json_t *attrs = json_object();
        json_object_set_new(attrs, "type", json_string(b->object));
        json_object_set_new(r, "attributes", attrs);
        if (b->type == PB_WRITE_UPDATE) {
            json_t *id = id_json(json_object_get(item, "id"));
            if (!id) {
                snprintf(field, sizeof field, "batch[%zu].record.id", i);
                svc->error_set(err, PB_EINVAL, field, "an update needs %s", field);
                rc = PB_EINVAL;
                break;
            }
            json_object_set_new(r, "id", id);
        }
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)rec, k, v) {
            if (strcmp(k, "attributes") == 0 || (b->type == PB_WRITE_UPDATE && strcmp(k, "id") == 0))
                continue;
            json_object_set_new(r, k, json_deep_copy(v));
        }
    }
    if (rc == PB_OK)
        rc = svc->req_set_method(req, b->type == PB_WRITE_CREATE ? "POST" : "PATCH");
    if (rc == PB_OK)
        rc = set_data_url(s, req, "/composite/sobjects", NULL, NULL, err);
    if (rc != PB_OK) {
        json_decref(body);
        return rc;
    }
    return svc->req_set_json(req, body);
}

static int sf_decode_batch(void *state, const struct pb_batch *b, const pb_http_response *resp,
                           json_t **out, pb_error *err)
{
    const struct sf_state *s = state;
    const struct pb_core_services *svc = s->svc;
    int status = svc->resp_status(resp);
    json_t *body = svc->resp_json(resp);
    size_t n = json_array_size(b->items), i;
    *out = NULL;
    if (status < 200 || (status >= 300 && status < 400) || status >= 500)
        return provider_error(s, status, body, err);
    json_t *res = json_array();
    if (!res)
        return PB_ENOMEM;
    for (i = 0; i < n; i++) {
        json_t *item_id = b->type == PB_WRITE_UPDATE
                              ? id_json(json_object_get(json_array_get(b->items, i), "id"))
                              : NULL;
        if (status >= 400) {
            /* The whole request was refused. */
            json_array_append_new(res, failure(sf_errors(body, status), item_id));
            continue;
        }
        /* Composite results come back in input order, one per record. */
        json_t *r = json_array_get(body, i);
        if (!json_is_array(body) || json_array_size(body) != n || !json_is_object(r)) {
            json_decref(item_id);
            json_decref(res);
            svc->error_set(err, PB_EPROVIDER, NULL,
                           "salesforce answered %zu results for %zu records",
                           json_array_size(body), n);
            return PB_EPROVIDER;
        }
        json_t *id = id_json(json_object_get(r, "id"));
        if (id) {
            json_decref(item_id);
            item_id = id;
        }
        if (json_is_true(json_object_get(r, "success")))
            json_array_append_new(res, success(item_id, r));
        else
            json_array_append_new(res, failure(sf_errors(json_object_get(r, "errors"), status),
                                               item_id));
    }
    *out = res;
    return PB_OK;
}

/* ---- reads (writeOnUpdate: ifEmpty) ---------------------------------------- */

/* Appends name=, then the escaped strings of `list` joined by commas (kept
 * literal, as Salesforce documents its list parameters). */
static void sb_list(const struct pb_core_services *svc, struct sbuf *b, const char *sep,
                    const char *name, const json_t *list)
{
    size_t i;
    json_t *v;
    sb_add(b, sep);
    sb_add(b, name);
    sb_add(b, "=");
    json_array_foreach(list, i, v) {
        if (i)
            sb_add(b, ",");
        sb_escaped(svc, b, json_string_value(v));
    }
}

/* `fields` must be a non-empty array of non-empty strings. */
static int check_fields(const struct sf_state *s, const json_t *fields, pb_error *err)
{
    size_t i;
    json_t *f;
    int ok = json_is_array(fields) && json_array_size(fields) > 0;
    json_array_foreach(fields, i, f) ok &= json_is_string(f) && json_string_length(f) > 0;
    if (!ok) {
        s->svc->error_set(err, PB_EINVAL, "fields", "a read needs a list of field names");
        return PB_EINVAL;
    }
    return PB_OK;
}

/* Sets a URL under /services/data/{version}/ with the sbuf's text after it. */
static int set_data_url_query(const struct sf_state *s, pb_http_request *req, struct sbuf *path,
                              pb_error *err)
{
    const struct pb_core_services *svc = s->svc;
    int rc = path->oom ? PB_ENOMEM : svc->req_set_url(req, path->p);
    free(path->p);
    if (rc != PB_OK && rc != PB_ENOMEM)
        svc->error_set(err, rc, "object", "cannot build the request URL");
    return rc;
}

static int sf_encode_read(void *state, const struct pb_write *w, const json_t *fields,
                          pb_http_request *req, pb_error *err)
{
    const struct sf_state *s = state;
    const struct pb_core_services *svc = s->svc;
    int rc = check_object(s, w->object, err);
    if (rc != PB_OK)
        return rc;
    if (!nonempty(w->record_id)) {
        svc->error_set(err, PB_EINVAL, "record.id", "a read needs record.id");
        return PB_EINVAL;
    }
    if ((rc = check_fields(s, fields, err)) != PB_OK)
        return rc;
    if ((rc = svc->req_set_method(req, "GET")) != PB_OK)
        return rc;
    struct sbuf b = {0};
    sb_add(&b, "/services/data/");
    sb_add(&b, s->api_version);
    sb_add(&b, "/sobjects/");
    sb_escaped(svc, &b, w->object);
    sb_add(&b, "/");
    sb_escaped(svc, &b, w->record_id);
    sb_list(svc, &b, "?", "fields", fields);
    return set_data_url_query(s, req, &b, err);
}

/* An sObject's fields without its "attributes" (new reference) or NULL. */
static json_t *sobject_fields(const json_t *rec)
{
    if (!json_is_object(rec))
        return NULL;
    json_t *out = json_deep_copy(rec);
    json_object_del(out, "attributes");
    return out;
}

static int sf_decode_read(void *state, const struct pb_write *w, const pb_http_response *resp,
                          json_t **out, pb_error *err)
{
    const struct sf_state *s = state;
    const struct pb_core_services *svc = s->svc;
    int status = svc->resp_status(resp);
    json_t *body = svc->resp_json(resp);
    (void)w;
    *out = NULL;
    if (status == 404)
        return PB_OK;
    if (status < 200 || status >= 300)
        return provider_error(s, status, body, err);
    *out = sobject_fields(body);
    if (*out)
        return PB_OK;
    svc->error_set(err, PB_EPROVIDER, NULL, "salesforce answered HTTP %d without a record",
                   status);
    return PB_EPROVIDER;
}

/* The distinct ids of an update batch, in first-seen order (new array). */
static int distinct_ids(const struct sf_state *s, const struct pb_batch *b, json_t **out,
                        pb_error *err)
{
    json_t *ids = json_array();
    size_t i, j;
    json_t *item, *seen;
    *out = NULL;
    if (!ids)
        return PB_ENOMEM;
    json_array_foreach(b->items, i, item) {
        json_t *id = id_json(json_object_get(item, "id"));
        if (!id) {
            char field[64];
            snprintf(field, sizeof field, "batch[%zu].record.id", i);
            s->svc->error_set(err, PB_EINVAL, field, "a read needs %s", field);
            json_decref(ids);
            return PB_EINVAL;
        }
        int dup = 0;
        json_array_foreach(ids, j, seen) dup |= json_equal(seen, id);
        if (dup)
            json_decref(id);
        else
            json_array_append_new(ids, id);
    }
    *out = ids;
    return PB_OK;
}

static int sf_encode_read_batch(void *state, const struct pb_batch *b, const json_t *fields,
                                pb_http_request *req, pb_error *err)
{
    const struct sf_state *s = state;
    const struct pb_core_services *svc = s->svc;
    int rc = check_object(s, b->object, err);
    if (rc != PB_OK)
        return rc;
    size_t n = json_array_size(b->items);
    if (!json_is_array(b->items) || n == 0 || n > SF_MAX_BATCH) {
        svc->error_set(err, PB_EINVAL, "batch", "a salesforce batch holds 1 to %d records",
                       SF_MAX_BATCH);
        return PB_EINVAL;
    }
    if ((rc = check_fields(s, fields, err)) != PB_OK)
        return rc;
    json_t *ids;
    if ((rc = distinct_ids(s, b, &ids, err)) != PB_OK)
        return rc;
    if ((rc = svc->req_set_method(req, "GET")) != PB_OK) {
        json_decref(ids);
        return rc;
    }
    /* sObject Collections retrieve: one record (or null) per id, in order. */
    struct sbuf u = {0};
    sb_add(&u, "/services/data/");
    sb_add(&u, s->api_version);
    sb_add(&u, "/composite/sobjects/");
    sb_escaped(svc, &u, b->object);
    sb_list(svc, &u, "?", "ids", ids);
    sb_list(svc, &u, "&", "fields", fields);
    json_decref(ids);
    return set_data_url_query(s, req, &u, err);
}

static int sf_decode_read_batch(void *state, const struct pb_batch *b,
                                const pb_http_response *resp, json_t **out, pb_error *err)
{
    const struct sf_state *s = state;
    const struct pb_core_services *svc = s->svc;
    int status = svc->resp_status(resp);
    json_t *body = svc->resp_json(resp);
    *out = NULL;
    if (status < 200 || status >= 300)
        return provider_error(s, status, body, err);
    json_t *ids;
    int rc = distinct_ids(s, b, &ids, err);
    if (rc != PB_OK)
        return rc;
    if (!json_is_array(body) || json_array_size(body) != json_array_size(ids)) {
        svc->error_set(err, PB_EPROVIDER, NULL, "salesforce answered %zu records for %zu ids",
                       json_array_size(body), json_array_size(ids));
        json_decref(ids);
        return PB_EPROVIDER;
    }
    json_t *res = json_array();
    size_t i, j;
    json_t *item, *id;
    json_array_foreach(b->items, i, item) {
        json_t *mine = id_json(json_object_get(item, "id"));
        json_t *rec = NULL;
        json_array_foreach(ids, j, id) {
            if (json_equal(id, mine)) {
                rec = json_array_get(body, j);
                break;
            }
        }
        json_decref(mine);
        if (json_is_null(rec)) {
            json_array_append_new(res, json_null()); /* no such record, or not visible */
            continue;
        }
        json_t *fields = sobject_fields(rec);
        if (!fields) {
            svc->error_set(err, PB_EPROVIDER, NULL, "salesforce answered a record that is not "
                                                    "an object");
            json_decref(res);
            json_decref(ids);
            return PB_EPROVIDER;
        }
        json_array_append_new(res, fields);
    }
    json_decref(ids);
    *out = res;
    return PB_OK;
}

/* ---- headers and classification -------------------------------------------- */

static int sf_header_allowed(void *state, const char *name)
{
    (void)state;
    if (!name)
        return 0;
    for (size_t i = 0; i < sizeof sf_passthrough_headers / sizeof sf_passthrough_headers[0]; i++)
        if (strcasecmp(name, sf_passthrough_headers[i]) == 0)
            return 1;
    return 0;
}

static int has_error_code(const json_t *body, const char *code)
{
    size_t i;
    json_t *e;
    if (json_is_object(body)) {
        const char *c = json_string_value(json_object_get(body, "errorCode"));
        return c && strcmp(c, code) == 0;
    }
    json_array_foreach(body, i, e) {
        const char *c = json_string_value(json_object_get(e, "errorCode"));
        if (c && strcmp(c, code) == 0)
            return 1;
    }
    return 0;
}

/* Unix ms from Retry-After (seconds or an HTTP date), 0 when absent. */
static int64_t retry_after_ms(const struct pb_core_services *svc, const pb_http_response *resp)
{
    const char *ra = svc->resp_header(resp, "Retry-After");
    if (!ra)
        return 0;
    while (*ra == ' ')
        ra++;
    if (isdigit((unsigned char)*ra)) {
        char *end;
        errno = 0;
        long long secs = strtoll(ra, &end, 10);
        while (*end == ' ')
            end++;
        if (!errno && !*end)
            return svc->now_ms() + (secs < 1000000000000LL ? secs : 1000000000000LL) * 1000;
    }
    int64_t t = svc->parse_http_date(ra);
    return t > 0 ? t : 0;
}

static void sf_classify(void *state, const pb_http_response *resp, struct pb_classification *out)
{
    const struct sf_state *s = state;
    const struct pb_core_services *svc = s->svc;
    int status = svc->resp_status(resp);
    json_t *body = svc->resp_json(resp);
    if (status == 403 && has_error_code(body, "REQUEST_LIMIT_EXCEEDED")) {
        out->rate_limited = 1;
        out->retryable = 1;
        int64_t at = retry_after_ms(svc, resp);
        out->retry_at_ms = at ? at : svc->now_ms() + SF_LIMIT_BACKOFF_MS;
    }
    if (status == 401 && has_error_code(body, "INVALID_SESSION_ID"))
        out->auth_invalid = 1;
    /* Row lock contention clears by itself. */
    if (status >= 400 && status < 500 && has_error_code(body, "UNABLE_TO_LOCK_ROW"))
        out->retryable = 1;
}

/* ---- vtable ---------------------------------------------------------------- */

static const struct pb_plugin salesforce_plugin = {
    PB_PLUGIN_HEAD,
    .name = "salesforce",
    .version = "1.1.0",
    .description = "Salesforce REST API: OAuth2, sObject writes, composite batches, deletes, "
                   "Sforce-* headers, reads for ifEmpty",
    .config_keys = sf_config_keys,
    .max_batch_size = SF_MAX_BATCH,
    .init = sf_init,
    .fini = sf_fini,
    .base_url = sf_base_url,
    .apply_credentials = sf_apply_credentials,
    .build_token_refresh = sf_build_token_refresh,
    .parse_token_response = sf_parse_token_response,
    .authorize_url = sf_authorize_url,
    .build_code_exchange = sf_build_code_exchange,
    .encode_write = sf_encode_write,
    .decode_write = sf_decode_write,
    .encode_batch = sf_encode_batch,
    .decode_batch = sf_decode_batch,
    .encode_delete = sf_encode_delete,
    .header_allowed = sf_header_allowed,
    .classify = sf_classify,
    .encode_read = sf_encode_read,
    .decode_read = sf_decode_read,
    .encode_read_batch = sf_encode_read_batch,
    .decode_read_batch = sf_decode_read_batch,
};

PB_PLUGIN_DEFINE(salesforce_plugin)
