/*
 * HubSpot provider plugin: OAuth2 (or private-app tokens), CRM v3 object
 * writes, batch create/update, deletes, associations on create, and reads
 * of current values (single and batch) for writeOnUpdate: ifEmpty.
 * It only translates; the core performs every call.
 */
#include <plugboard/plugin.h>

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HS_DEFAULT_BASE_URL "https://api.hubapi.com"
#define HS_DEFAULT_AUTH_URL "https://app.hubspot.com/oauth/authorize"
#define HS_DEFAULT_TOKEN_URL "https://api.hubapi.com/oauth/v1/token"
#define HS_MAX_BATCH 100

struct hs_state {
    const struct pb_core_services *svc;
    char *provider;
    char *client_id;
    char *client_secret;
    char *scopes;
    char *base_url;
    char *auth_url;
    char *token_url;
};

static const char *const hs_config_keys[] = {"client_id", "client_secret", "scopes", "base_url",
                                             "auth_url", "token_url", NULL};

/* ---- small helpers --------------------------------------------------------- */

static char *hs_strdup(const char *s)
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

/* scheme://host[...] with only http or https, no whitespace or controls. */
static int valid_http_url(const char *u)
{
    const char *rest;
    if (strncmp(u, "https://", 8) == 0)
        rest = u + 8;
    else if (strncmp(u, "http://", 7) == 0)
        rest = u + 7;
    else
        return 0;
    if (!*rest || *rest == '/' || *rest == '?' || *rest == '#')
        return 0;
    for (const unsigned char *p = (const unsigned char *)u; *p; p++)
        if (*p <= 32 || *p == 127)
            return 0;
    return 1;
}

static void strip_trailing_slashes(char *s)
{
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == '/')
        s[--n] = '\0';
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
        *out = hs_strdup(def);
        return *out ? PB_OK : PB_ENOMEM;
    }
    if (json_is_string(v)) {
        *out = hs_strdup(json_string_value(v));
        return *out ? PB_OK : PB_ENOMEM;
    }
    if (allow_list && json_is_array(v)) {
        size_t len = 1, i;
        json_t *e;
        json_array_foreach(v, i, e) {
            if (!json_is_string(e)) {
                svc->error_set(err, PB_ECONFIG, key, "option %s must be a string or a list of strings",
                               key);
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

static int opt_url(const struct pb_core_services *svc, const json_t *opts, const char *key,
                   const char *def, char **out, pb_error *err)
{
    int rc = opt_string(svc, opts, key, def, 0, out, err);
    if (rc != PB_OK)
        return rc;
    if (!valid_http_url(*out)) {
        svc->error_set(err, PB_ECONFIG, key, "option %s must be an http:// or https:// URL", key);
        return PB_ECONFIG;
    }
    strip_trailing_slashes(*out);
    return PB_OK;
}

/* A growable string; `oom` records a failed allocation. */
struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
};

static void sb_add(struct sbuf *b, const char *s)
{
    size_t n = strlen(s);
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
    memcpy(b->p + b->len, s, n + 1);
    b->len += n;
}

/* Appends sep, name, '=', and the URL-escaped value. */
static void sb_param(const struct pb_core_services *svc, struct sbuf *b, const char *sep,
                     const char *name, const char *value)
{
    char *e = svc->url_escape(value);
    if (!e) {
        b->oom = 1;
        return;
    }
    sb_add(b, sep);
    sb_add(b, name);
    sb_add(b, "=");
    sb_add(b, e);
    svc->str_free(e);
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

/* The path segment of a write: /crm/v3/objects/{object}[/{id}][suffix]. */
static int set_object_url(const struct hs_state *s, pb_http_request *req, const char *object,
                          const char *id, const char *suffix, pb_error *err)
{
    const struct pb_core_services *svc = s->svc;
    char *eo = svc->url_escape(object);
    char *ei = id ? svc->url_escape(id) : NULL;
    if (!eo || (id && !ei)) {
        svc->str_free(eo);
        svc->str_free(ei);
        return PB_ENOMEM;
    }
    struct sbuf b = {0};
    sb_add(&b, "/crm/v3/objects/");
    sb_add(&b, eo);
    if (ei) {
        sb_add(&b, "/");
        sb_add(&b, ei);
    }
    if (suffix)
        sb_add(&b, suffix);
    svc->str_free(eo);
    svc->str_free(ei);
    int rc = b.oom ? PB_ENOMEM : svc->req_set_url(req, b.p);
    free(b.p);
    if (rc != PB_OK && rc != PB_ENOMEM)
        svc->error_set(err, rc, "object", "cannot build the request URL for object '%s'", object);
    return rc;
}

static int check_object(const struct hs_state *s, const char *object, pb_error *err)
{
    if (nonempty(object))
        return PB_OK;
    s->svc->error_set(err, PB_EINVAL, "object", "an object name is required");
    return PB_EINVAL;
}

/* ---- lifecycle ------------------------------------------------------------- */

static void hs_fini(void *state)
{
    struct hs_state *s = state;
    if (!s)
        return;
    free(s->provider);
    free(s->client_id);
    free(s->client_secret);
    free(s->scopes);
    free(s->base_url);
    free(s->auth_url);
    free(s->token_url);
    free(s);
}

static int hs_init(const struct pb_core_services *svc, const struct pb_plugin_config *cfg,
                   void **state, pb_error *err)
{
    *state = NULL;
    if (!svc || svc->abi_major != PB_PLUGIN_ABI_MAJOR)
        return PB_ECONFIG;
    struct hs_state *s = calloc(1, sizeof *s);
    if (!s)
        return PB_ENOMEM;
    s->svc = svc;
    const json_t *opts = cfg ? cfg->options : NULL;
    if (opts && !json_is_object(opts)) {
        svc->error_set(err, PB_ECONFIG, NULL, "the provider block must be a mapping");
        hs_fini(s);
        return PB_ECONFIG;
    }
    int rc = PB_OK;
    s->provider = hs_strdup(cfg && cfg->provider_name ? cfg->provider_name : "hubspot");
    if (!s->provider)
        rc = PB_ENOMEM;
    if (rc == PB_OK)
        rc = opt_string(svc, opts, "client_id", NULL, 0, &s->client_id, err);
    if (rc == PB_OK)
        rc = opt_string(svc, opts, "client_secret", NULL, 0, &s->client_secret, err);
    if (rc == PB_OK)
        rc = opt_string(svc, opts, "scopes", NULL, 1, &s->scopes, err);
    if (rc == PB_OK)
        rc = opt_url(svc, opts, "base_url", HS_DEFAULT_BASE_URL, &s->base_url, err);
    if (rc == PB_OK)
        rc = opt_url(svc, opts, "auth_url", HS_DEFAULT_AUTH_URL, &s->auth_url, err);
    if (rc == PB_OK)
        rc = opt_url(svc, opts, "token_url", HS_DEFAULT_TOKEN_URL, &s->token_url, err);
    if (rc != PB_OK) {
        if (rc == PB_ENOMEM)
            svc->error_set(err, PB_ENOMEM, NULL, "out of memory");
        hs_fini(s);
        return rc;
    }
    *state = s;
    return PB_OK;
}

/* ---- connection ------------------------------------------------------------ */

static int hs_base_url(void *state, const struct pb_credentials *cred, char *out, size_t out_len,
                       pb_error *err)
{
    const struct hs_state *s = state;
    (void)cred;
    if (s->svc->str_format(out, out_len, "%s", s->base_url) != PB_OK) {
        s->svc->error_set(err, PB_EINVAL, NULL, "base URL does not fit in %zu bytes", out_len);
        return PB_EINVAL;
    }
    return PB_OK;
}

static int hs_apply_credentials(void *state, const struct pb_credentials *cred,
                                pb_http_request *req, pb_error *err)
{
    const struct hs_state *s = state;
    const struct pb_core_services *svc = s->svc;
    const char *type = cred && cred->auth_type ? cred->auth_type : "none";
    const char *token;
    if (strcmp(type, "oauth2") == 0 || strcmp(type, "oauth2_cc") == 0) {
        token = cred->access_token;
        if (!nonempty(token)) {
            svc->error_set(err, PB_EAUTH, NULL, "connection has no access token");
            return PB_EAUTH;
        }
    } else if (strcmp(type, "api_key") == 0) {
        /* Private-app tokens are sent exactly like OAuth access tokens. */
        token = cred->api_key;
        if (!nonempty(token)) {
            svc->error_set(err, PB_EAUTH, NULL, "connection has no API key");
            return PB_EAUTH;
        }
    } else {
        svc->error_set(err, PB_EAUTH, NULL,
                       "hubspot needs an oauth2 or api_key connection, not '%s'", type);
        return PB_EAUTH;
    }
    size_t n = strlen(token) + sizeof "Bearer ";
    char *value = malloc(n);
    if (!value)
        return PB_ENOMEM;
    snprintf(value, n, "Bearer %s", token);
    int rc = svc->req_add_header(req, "Authorization", value);
    free(value);
    if (rc != PB_OK)
        svc->error_set(err, PB_EAUTH, NULL, "the access token cannot be sent in a header");
    return rc == PB_OK ? PB_OK : PB_EAUTH;
}

/* ---- OAuth2 ---------------------------------------------------------------- */

static int client_creds(const struct hs_state *s, const struct pb_credentials *cred,
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

static int token_request(const struct hs_state *s, pb_http_request *req)
{
    const struct pb_core_services *svc = s->svc;
    int rc = svc->req_set_method(req, "POST");
    if (rc == PB_OK)
        rc = svc->req_set_url(req, s->token_url);
    if (rc == PB_OK)
        rc = svc->req_add_header(req, "Accept", "application/json");
    return rc;
}

static int hs_build_token_refresh(void *state, const struct pb_credentials *cred,
                                  pb_http_request *req, pb_error *err)
{
    const struct hs_state *s = state;
    const struct pb_core_services *svc = s->svc;
    const char *id, *secret;
    if (cred && cred->auth_type && strcmp(cred->auth_type, "oauth2_cc") == 0) {
        svc->error_set(err, PB_EUNSUPPORTED, NULL,
                       "hubspot has no client-credentials grant; connect with OAuth or a "
                       "private-app token");
        return PB_EUNSUPPORTED;
    }
    if (!cred || !nonempty(cred->refresh_token)) {
        svc->error_set(err, PB_EAUTH, NULL, "connection has no refresh token");
        return PB_EAUTH;
    }
    int rc = client_creds(s, cred, &id, &secret, err);
    if (rc != PB_OK)
        return rc;
    if ((rc = token_request(s, req)) != PB_OK ||
        (rc = svc->req_add_form(req, "grant_type", "refresh_token")) != PB_OK ||
        (rc = svc->req_add_form(req, "client_id", id)) != PB_OK ||
        (rc = svc->req_add_form(req, "client_secret", secret)) != PB_OK ||
        (rc = svc->req_add_form(req, "refresh_token", cred->refresh_token)) != PB_OK)
        svc->error_set(err, rc, NULL, "cannot build the token refresh request");
    return rc;
}

static int hs_parse_token_response(void *state, const pb_http_response *resp, json_t **out,
                                   pb_error *err)
{
    const struct hs_state *s = state;
    const struct pb_core_services *svc = s->svc;
    int status = svc->resp_status(resp);
    json_t *body = svc->resp_json(resp);
    *out = NULL;
    if (status < 200 || status >= 300) {
        const char *msg = json_string_value(json_object_get(body, "message"));
        if (!msg)
            msg = json_string_value(json_object_get(body, "error_description"));
        if (!msg)
            msg = json_string_value(json_object_get(body, "error"));
        /* A rejected grant is an auth problem; an outage is not. */
        enum pb_errcode code = (status >= 400 && status < 500 && status != 429) ? PB_EAUTH
                                                                               : PB_EPROVIDER;
        const char *st = json_string_value(json_object_get(body, "status"));
        if (msg && st && strcmp(st, "error") != 0)
            svc->error_set(err, code, NULL, "hubspot token endpoint (HTTP %d, %s): %s", status,
                           st, msg);
        else if (msg)
            svc->error_set(err, code, NULL, "hubspot token endpoint (HTTP %d): %s", status, msg);
        else
            svc->error_set(err, code, NULL, "hubspot token endpoint answered HTTP %d", status);
        return code;
    }
    const char *access = json_string_value(json_object_get(body, "access_token"));
    if (!json_is_object(body) || !nonempty(access)) {
        svc->error_set(err, PB_EPROVIDER, NULL, "hubspot token response has no access_token");
        return PB_EPROVIDER;
    }
    json_t *r = json_object();
    if (!r)
        return PB_ENOMEM;
    json_object_set_new(r, "access_token", json_string(access));
    const char *refresh = json_string_value(json_object_get(body, "refresh_token"));
    if (nonempty(refresh))
        json_object_set_new(r, "refresh_token", json_string(refresh));
    json_t *exp = json_object_get(body, "expires_in");
    if (json_is_integer(exp) && json_integer_value(exp) > 0) {
        json_object_set_new(r, "expires_in", json_integer(json_integer_value(exp)));
    } else if (json_is_string(exp)) {
        char *end;
        errno = 0;
        long long v = strtoll(json_string_value(exp), &end, 10);
        if (errno == 0 && *end == '\0' && v > 0)
            json_object_set_new(r, "expires_in", json_integer(v));
    }
    const char *scope = json_string_value(json_object_get(body, "scope"));
    if (nonempty(scope))
        json_object_set_new(r, "scopes", json_string(scope));
    *out = r;
    return PB_OK;
}

static int hs_authorize_url(void *state, const struct pb_oauth_params *p, char *out,
                            size_t out_len, pb_error *err)
{
    const struct hs_state *s = state;
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
    sb_add(&b, s->auth_url);
    sb_param(svc, &b, strchr(s->auth_url, '?') ? "&" : "?", "client_id", s->client_id);
    sb_param(svc, &b, "&", "redirect_uri", p->redirect_uri);
    if (nonempty(scopes))
        sb_param(svc, &b, "&", "scope", scopes);
    sb_param(svc, &b, "&", "state", p->state);
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

static int hs_build_code_exchange(void *state, const struct pb_oauth_params *p, const char *code,
                                  pb_http_request *req, pb_error *err)
{
    const struct hs_state *s = state;
    const struct pb_core_services *svc = s->svc;
    const char *id, *secret;
    int rc = client_creds(s, NULL, &id, &secret, err);
    if (rc != PB_OK)
        return rc;
    if (!nonempty(code) || !p || !nonempty(p->redirect_uri)) {
        svc->error_set(err, PB_EINVAL, "code", "code exchange needs a code and redirect_uri");
        return PB_EINVAL;
    }
    if ((rc = token_request(s, req)) != PB_OK ||
        (rc = svc->req_add_form(req, "grant_type", "authorization_code")) != PB_OK ||
        (rc = svc->req_add_form(req, "client_id", id)) != PB_OK ||
        (rc = svc->req_add_form(req, "client_secret", secret)) != PB_OK ||
        (rc = svc->req_add_form(req, "redirect_uri", p->redirect_uri)) != PB_OK ||
        (rc = svc->req_add_form(req, "code", code)) != PB_OK)
        svc->error_set(err, rc, NULL, "cannot build the code exchange request");
    return rc;
}

/* ---- associations ---------------------------------------------------------- */

/* Write API associations -> HubSpot's create shape (new array). The shapes
 * coincide; converting validates and drops anything HubSpot would reject. */
static int convert_associations(const struct hs_state *s, const json_t *in, const char *where,
                                json_t **out, pb_error *err)
{
    const struct pb_core_services *svc = s->svc;
    char field[160];
    size_t i, j;
    json_t *a, *t;
    *out = NULL;
    if (!json_is_array(in)) {
        svc->error_set(err, PB_EINVAL, where, "%s must be an array", where);
        return PB_EINVAL;
    }
    json_t *arr = json_array();
    if (!arr)
        return PB_ENOMEM;
    json_array_foreach(in, i, a) {
        json_t *id = id_json(json_object_get(json_object_get(a, "to"), "id"));
        if (!id) {
            snprintf(field, sizeof field, "%s[%zu].to.id", where, i);
            svc->error_set(err, PB_EINVAL, field, "%s is required (a record id)", field);
            json_decref(arr);
            return PB_EINVAL;
        }
        json_t *types_in = json_object_get(a, "types");
        json_t *types = json_array();
        json_t *to = json_object();
        json_t *item = json_object();
        json_object_set_new(to, "id", id);
        json_object_set_new(item, "to", to);
        json_object_set_new(item, "types", types);
        json_array_append_new(arr, item);
        if (!json_is_array(types_in) || json_array_size(types_in) == 0) {
            snprintf(field, sizeof field, "%s[%zu].types", where, i);
            svc->error_set(err, PB_EINVAL, field, "%s must be a non-empty array", field);
            json_decref(arr);
            return PB_EINVAL;
        }
        json_array_foreach(types_in, j, t) {
            const char *cat = json_string_value(json_object_get(t, "associationCategory"));
            json_t *tid = json_object_get(t, "associationTypeId");
            json_int_t type_id = 0;
            if (json_is_integer(tid)) {
                type_id = json_integer_value(tid);
            } else if (json_is_string(tid)) {
                char *end;
                errno = 0;
                long long v = strtoll(json_string_value(tid), &end, 10);
                type_id = (errno == 0 && *end == '\0' && end != json_string_value(tid)) ? v : 0;
            }
            if (!nonempty(cat)) {
                snprintf(field, sizeof field, "%s[%zu].types[%zu].associationCategory", where, i,
                         j);
                svc->error_set(err, PB_EINVAL, field,
                               "%s is required (HUBSPOT_DEFINED, USER_DEFINED or "
                               "INTEGRATOR_DEFINED)",
                               field);
                json_decref(arr);
                return PB_EINVAL;
            }
            if (type_id <= 0) {
                snprintf(field, sizeof field, "%s[%zu].types[%zu].associationTypeId", where, i, j);
                svc->error_set(err, PB_EINVAL, field, "%s must be a positive integer", field);
                json_decref(arr);
                return PB_EINVAL;
            }
            json_t *ty = json_object();
            json_object_set_new(ty, "associationCategory", json_string(cat));
            json_object_set_new(ty, "associationTypeId", json_integer(type_id));
            json_array_append_new(types, ty);
        }
    }
    *out = arr;
    return PB_OK;
}

/* Appends the converted associations to obj["associations"]. */
static int add_associations(json_t *obj, const json_t *conv)
{
    json_t *cur = json_object_get(obj, "associations");
    if (!json_is_array(cur)) {
        cur = json_array();
        if (!cur || json_object_set_new(obj, "associations", cur) != 0)
            return PB_ENOMEM;
    }
    size_t i;
    json_t *a;
    json_array_foreach(conv, i, a) {
        if (json_array_append_new(cur, json_deep_copy(a)) != 0)
            return PB_ENOMEM;
    }
    return PB_OK;
}

static int hs_encode_associations(void *state, const struct pb_write *w,
                                  const json_t *associations, pb_http_request *req, pb_error *err)
{
    const struct hs_state *s = state;
    const struct pb_core_services *svc = s->svc;
    if (!associations || (json_is_array(associations) && json_array_size(associations) == 0))
        return PB_OK;
    if (w && w->type != PB_WRITE_CREATE) {
        svc->error_set(err, PB_EUNSUPPORTED, "associations",
                       "hubspot takes associations only when a record is created");
        return PB_EUNSUPPORTED;
    }
    json_t *body = svc->req_get_json(req);
    if (!json_is_object(body)) {
        svc->error_set(err, PB_EINVAL, NULL,
                       "associations need the JSON body that encode_write or encode_batch built");
        return PB_EINVAL;
    }
    json_t *conv;
    int rc = convert_associations(s, associations, "associations", &conv, err);
    if (rc != PB_OK)
        return rc;
    json_t *inputs = json_object_get(body, "inputs");
    if (json_is_array(inputs)) {
        /* A batch: the associations apply to every record created. */
        size_t i;
        json_t *in;
        json_array_foreach(inputs, i, in) {
            if ((rc = add_associations(in, conv)) != PB_OK)
                break;
        }
    } else {
        rc = add_associations(body, conv);
    }
    json_decref(conv);
    return rc;
}

/* ---- single writes --------------------------------------------------------- */

static int hs_encode_write(void *state, const struct pb_write *w, pb_http_request *req,
                           pb_error *err)
{
    const struct hs_state *s = state;
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
    json_t *props = w->record ? json_deep_copy(w->record) : json_object();
    json_t *body = json_object();
    if (!props || !body || json_object_set_new(body, "properties", props) != 0) {
        json_decref(body);
        return PB_ENOMEM;
    }
    if (w->type == PB_WRITE_CREATE)
        rc = svc->req_set_method(req, "POST");
    else
        rc = svc->req_set_method(req, "PATCH");
    if (rc == PB_OK)
        rc = set_object_url(s, req, w->object,
                            w->type == PB_WRITE_UPDATE ? w->record_id : NULL, NULL, err);
    if (rc != PB_OK) {
        json_decref(body);
        return rc;
    }
    return svc->req_set_json(req, body);
}

static int hs_encode_delete(void *state, const struct pb_write *w, pb_http_request *req,
                            pb_error *err)
{
    const struct hs_state *s = state;
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
        rc = set_object_url(s, req, w->object, w->record_id, NULL, err);
    return rc;
}

/* One Write API error from a HubSpot error object (new reference). */
static json_t *hs_error_json(const json_t *e, int status)
{
    char buf[64];
    const char *msg = json_string_value(json_object_get(e, "message"));
    if (!nonempty(msg)) {
        snprintf(buf, sizeof buf, "hubspot answered HTTP %d", status);
        msg = buf;
    }
    json_t *r = json_object();
    json_object_set_new(r, "message", json_string(msg));
    const char *cat = json_string_value(json_object_get(e, "category"));
    if (nonempty(cat))
        json_object_set_new(r, "category", json_string(cat));
    json_t *details = json_object_get(e, "errors");
    if (json_is_array(details) && json_array_size(details) > 0)
        json_object_set_new(r, "details", json_deep_copy(details));
    return r;
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

static json_t *failure1(json_t *error, json_t *record_id)
{
    json_t *errors = json_array();
    json_array_append_new(errors, error);
    return failure(errors, record_id);
}

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

static int hs_decode_write(void *state, const struct pb_write *w, const pb_http_response *resp,
                           json_t **out, pb_error *err)
{
    const struct hs_state *s = state;
    const struct pb_core_services *svc = s->svc;
    int status = svc->resp_status(resp);
    json_t *body = svc->resp_json(resp);
    *out = NULL;
    if (status >= 200 && status < 300) {
        if (w->type == PB_WRITE_DELETE || status == 204) {
            *out = success(nonempty(w->record_id) ? json_string(w->record_id) : NULL, NULL);
            return *out ? PB_OK : PB_ENOMEM;
        }
        json_t *id = json_is_object(body) ? id_json(json_object_get(body, "id")) : NULL;
        if (!id && nonempty(w->record_id))
            id = json_string(w->record_id);
        if (!json_is_object(body) || !id) {
            json_decref(id);
            svc->error_set(err, PB_EPROVIDER, NULL,
                           "hubspot answered HTTP %d without the record's id", status);
            return PB_EPROVIDER;
        }
        *out = success(id, body);
        return *out ? PB_OK : PB_ENOMEM;
    }
    if (status >= 400 && status < 500) {
        *out = failure1(hs_error_json(body, status),
                        nonempty(w->record_id) ? json_string(w->record_id) : NULL);
        return *out ? PB_OK : PB_ENOMEM;
    }
    const char *msg = json_string_value(json_object_get(body, "message"));
    svc->error_set(err, PB_EPROVIDER, NULL, "hubspot answered HTTP %d%s%s", status,
                   msg ? ": " : "", msg ? msg : "");
    return PB_EPROVIDER;
}

/* ---- batches --------------------------------------------------------------- */

static int hs_encode_batch(void *state, const struct pb_batch *b, pb_http_request *req,
                           pb_error *err)
{
    const struct hs_state *s = state;
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
    if (!json_is_array(b->items) || n == 0 || n > HS_MAX_BATCH) {
        svc->error_set(err, PB_EINVAL, "batch", "a hubspot batch holds 1 to %d records",
                       HS_MAX_BATCH);
        return PB_EINVAL;
    }
    if (b->all_or_none) {
        svc->error_set(err, PB_EUNSUPPORTED, "batchPolicy.allOrNone",
                       "hubspot cannot write a batch all-or-none");
        return PB_EUNSUPPORTED;
    }
    json_t *inputs = json_array();
    json_t *body = json_object();
    if (!inputs || !body) {
        json_decref(inputs);
        json_decref(body);
        return PB_ENOMEM;
    }
    json_object_set_new(body, "inputs", inputs);
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
        json_t *in = json_object();
        json_array_append_new(inputs, in);
        if (b->type == PB_WRITE_UPDATE) {
            json_t *id = id_json(json_object_get(item, "id"));
            if (!id) {
                snprintf(field, sizeof field, "batch[%zu].record.id", i);
                svc->error_set(err, PB_EINVAL, field, "an update needs %s", field);
                rc = PB_EINVAL;
                break;
            }
            json_object_set_new(in, "id", id);
        }
        json_object_set_new(in, "properties", rec ? json_deep_copy(rec) : json_object());
        json_t *assoc = json_object_get(item, "associations");
        if (assoc && !(json_is_array(assoc) && json_array_size(assoc) == 0)) {
            if (b->type != PB_WRITE_CREATE) {
                snprintf(field, sizeof field, "batch[%zu].associations", i);
                svc->error_set(err, PB_EUNSUPPORTED, field,
                               "hubspot takes associations only when a record is created");
                rc = PB_EUNSUPPORTED;
                break;
            }
            json_t *conv;
            snprintf(field, sizeof field, "batch[%zu].associations", i);
            if ((rc = convert_associations(s, assoc, field, &conv, err)) != PB_OK)
                break;
            json_object_set_new(in, "associations", conv);
        }
        if (b->type == PB_WRITE_CREATE) {
            /* Lets HubSpot answer 207 per record, and us match results back. */
            snprintf(field, sizeof field, "%zu", i);
            json_object_set_new(in, "objectWriteTraceId", json_string(field));
        }
    }
    if (rc == PB_OK)
        rc = svc->req_set_method(req, "POST");
    if (rc == PB_OK)
        rc = set_object_url(s, req, b->object, NULL,
                            b->type == PB_WRITE_CREATE ? "/batch/create" : "/batch/update", err);
    if (rc != PB_OK) {
        json_decref(body);
        return rc;
    }
    return svc->req_set_json(req, body);
}

/* Index of the input a create trace id names, or -1. */
static long trace_index(const json_t *v, size_t n)
{
    const char *s = json_string_value(v);
    if (!s || !isdigit((unsigned char)*s))
        return -1;
    char *end;
    errno = 0;
    unsigned long i = strtoul(s, &end, 10);
    if (errno || *end || i >= n)
        return -1;
    return (long)i;
}

/* Index of the first still-open input whose id is `id`, or -1. */
static long id_index(const struct pb_batch *b, const json_t *out, const char *id)
{
    size_t i;
    json_t *item;
    if (!id)
        return -1;
    json_array_foreach(b->items, i, item) {
        json_t *iid = id_json(json_object_get(item, "id"));
        int same = iid && strcmp(json_string_value(iid), id) == 0;
        json_decref(iid);
        if (same && json_is_null(json_array_get(out, i)))
            return (long)i;
    }
    return -1;
}

/* The record id of update input i (new reference), NULL for creates. */
static json_t *item_id(const struct pb_batch *b, size_t i)
{
    if (b->type != PB_WRITE_UPDATE)
        return NULL;
    return id_json(json_object_get(json_array_get(b->items, i), "id"));
}

/* Gives error `e` to the open input that context value `v` names: a trace
 * id for creates, a record id for updates. Returns 1 when it did. */
static int map_one(const struct pb_batch *b, json_t *out, const json_t *e, int status,
                   const json_t *v, int is_trace)
{
    long idx;
    if (is_trace)
        idx = b->type == PB_WRITE_CREATE ? trace_index(v, json_array_size(b->items)) : -1;
    else
        idx = b->type == PB_WRITE_UPDATE ? id_index(b, out, json_string_value(v)) : -1;
    if (idx < 0 || !json_is_null(json_array_get(out, (size_t)idx)))
        return 0;
    json_array_set_new(out, (size_t)idx,
                       failure1(hs_error_json(e, status), item_id(b, (size_t)idx)));
    return 1;
}

/* Every input an error's context names gets that error. Returns how many
 * inputs it was given to. */
static size_t map_error(const struct pb_batch *b, json_t *out, const json_t *e, int status)
{
    json_t *ctx = json_object_get(e, "context");
    const char *keys[] = {"objectWriteTraceId", "ids", "id"};
    size_t mapped = 0;
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        json_t *vals = json_object_get(ctx, keys[k]);
        size_t j;
        json_t *v;
        if (json_is_string(vals))
            mapped += (size_t)map_one(b, out, e, status, vals, k == 0);
        json_array_foreach(vals, j, v) {
            mapped += (size_t)map_one(b, out, e, status, v, k == 0);
        }
    }
    return mapped;
}

static int hs_decode_batch(void *state, const struct pb_batch *b, const pb_http_response *resp,
                           json_t **out, pb_error *err)
{
    const struct hs_state *s = state;
    const struct pb_core_services *svc = s->svc;
    int status = svc->resp_status(resp);
    json_t *body = svc->resp_json(resp);
    size_t n = json_array_size(b->items), i;
    *out = NULL;
    if (status >= 500 || status < 200 || (status >= 300 && status < 400)) {
        const char *msg = json_string_value(json_object_get(body, "message"));
        svc->error_set(err, PB_EPROVIDER, NULL, "hubspot answered HTTP %d%s%s", status,
                       msg ? ": " : "", msg ? msg : "");
        return PB_EPROVIDER;
    }
    json_t *res = json_array();
    if (!res)
        return PB_ENOMEM;
    for (i = 0; i < n; i++)
        json_array_append_new(res, json_null());
    if (status >= 400) {
        /* The whole batch was refused. */
        for (i = 0; i < n; i++)
            json_array_set_new(res, i, failure1(hs_error_json(body, status),
                                                item_id(b, i)));
        *out = res;
        return PB_OK;
    }
    if (!json_is_object(body)) {
        json_decref(res);
        svc->error_set(err, PB_EPROVIDER, NULL, "hubspot answered HTTP %d without a JSON object",
                       status);
        return PB_EPROVIDER;
    }
    json_t *unmapped = json_array();
    json_t *e, *r;
    json_array_foreach(json_object_get(body, "errors"), i, e) {
        if (map_error(b, res, e, status) == 0)
            json_array_append_new(unmapped, hs_error_json(e, status));
    }
    json_t *positional = json_array();
    json_array_foreach(json_object_get(body, "results"), i, r) {
        json_t *id = id_json(json_object_get(r, "id"));
        long idx = -1;
        if (b->type == PB_WRITE_CREATE) {
            idx = trace_index(json_object_get(r, "objectWriteTraceId"), n);
            if (idx >= 0 && !json_is_null(json_array_get(res, (size_t)idx)))
                idx = -1;
        } else {
            idx = id_index(b, res, json_string_value(id));
        }
        if (idx >= 0)
            json_array_set_new(res, (size_t)idx, success(id, r));
        else if (b->type == PB_WRITE_CREATE)
            json_array_append_new(positional, success(id, r));
        else
            json_decref(id);
    }
    /* Creates HubSpot did not tag: their results follow the inputs' order. */
    size_t next = 0;
    for (i = 0; i < n && next < json_array_size(positional); i++) {
        if (json_is_null(json_array_get(res, i)))
            json_array_set(res, i, json_array_get(positional, next++));
    }
    for (i = 0; i < n; i++) {
        if (!json_is_null(json_array_get(res, i)))
            continue;
        json_t *errs;
        if (json_array_size(unmapped) > 0) {
            errs = json_deep_copy(unmapped);
        } else {
            errs = json_array();
            json_t *m = json_object();
            json_object_set_new(m, "message", json_string("hubspot returned no result for this "
                                                          "record"));
            json_array_append_new(errs, m);
        }
        json_array_set_new(res, i, failure(errs, item_id(b, i)));
    }
    json_decref(positional);
    json_decref(unmapped);
    *out = res;
    return PB_OK;
}

/* ---- reads (writeOnUpdate: ifEmpty) ---------------------------------------- */

/* `fields` must be a non-empty array of non-empty strings. */
static int check_fields(const struct hs_state *s, const json_t *fields, pb_error *err)
{
    size_t i;
    json_t *f;
    int ok = json_is_array(fields) && json_array_size(fields) > 0;
    json_array_foreach(fields, i, f) ok &= json_is_string(f) && json_string_length(f) > 0;
    if (!ok) {
        s->svc->error_set(err, PB_EINVAL, "fields", "a read needs a list of property names");
        return PB_EINVAL;
    }
    return PB_OK;
}

static int hs_encode_read(void *state, const struct pb_write *w, const json_t *fields,
                          pb_http_request *req, pb_error *err)
{
    const struct hs_state *s = state;
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
    /* ?properties=a,b: each name escaped, the commas kept. */
    struct sbuf q = {0};
    size_t i;
    json_t *f;
    sb_add(&q, "?properties=");
    json_array_foreach(fields, i, f) {
        char *e = svc->url_escape(json_string_value(f));
        if (!e) {
            q.oom = 1;
            break;
        }
        if (i)
            sb_add(&q, ",");
        sb_add(&q, e);
        svc->str_free(e);
    }
    rc = q.oom ? PB_ENOMEM : svc->req_set_method(req, "GET");
    if (rc == PB_OK)
        rc = set_object_url(s, req, w->object, w->record_id, q.p, err);
    free(q.p);
    return rc;
}

/* The properties of a record as HubSpot answers it (new reference) or NULL. */
static json_t *record_properties(const json_t *rec)
{
    json_t *props = json_object_get(rec, "properties");
    return json_is_object(props) ? json_deep_copy(props) : NULL;
}

static int hs_decode_read(void *state, const struct pb_write *w, const pb_http_response *resp,
                          json_t **out, pb_error *err)
{
    const struct hs_state *s = state;
    const struct pb_core_services *svc = s->svc;
    int status = svc->resp_status(resp);
    json_t *body = svc->resp_json(resp);
    (void)w;
    *out = NULL;
    if (status == 404)
        return PB_OK;
    if (status >= 200 && status < 300) {
        *out = record_properties(body);
        if (*out)
            return PB_OK;
        svc->error_set(err, PB_EPROVIDER, NULL, "hubspot answered HTTP %d without properties",
                       status);
        return PB_EPROVIDER;
    }
    const char *msg = json_string_value(json_object_get(body, "message"));
    svc->error_set(err, PB_EPROVIDER, NULL, "hubspot answered HTTP %d%s%s", status,
                   msg ? ": " : "", msg ? msg : "");
    return PB_EPROVIDER;
}

static int hs_encode_read_batch(void *state, const struct pb_batch *b, const json_t *fields,
                                pb_http_request *req, pb_error *err)
{
    const struct hs_state *s = state;
    const struct pb_core_services *svc = s->svc;
    char field[64];
    int rc = check_object(s, b->object, err);
    if (rc != PB_OK)
        return rc;
    size_t n = json_array_size(b->items);
    if (!json_is_array(b->items) || n == 0 || n > HS_MAX_BATCH) {
        svc->error_set(err, PB_EINVAL, "batch", "a hubspot batch holds 1 to %d records",
                       HS_MAX_BATCH);
        return PB_EINVAL;
    }
    if ((rc = check_fields(s, fields, err)) != PB_OK)
        return rc;
    json_t *inputs = json_array();
    json_t *body = json_pack("{s:o, s:o}", "properties", json_deep_copy(fields), "inputs", inputs);
    if (!body)
        return PB_ENOMEM;
    size_t i, j;
    json_t *item, *in;
    json_array_foreach(b->items, i, item) {
        json_t *id = id_json(json_object_get(item, "id"));
        if (!id) {
            snprintf(field, sizeof field, "batch[%zu].record.id", i);
            svc->error_set(err, PB_EINVAL, field, "a read needs %s", field);
            json_decref(body);
            return PB_EINVAL;
        }
        /* HubSpot refuses an id given twice. */
        int seen = 0;
        json_array_foreach(inputs, j, in) seen |= json_equal(json_object_get(in, "id"), id);
        if (seen)
            json_decref(id);
        else
            json_array_append_new(inputs, json_pack("{s:o}", "id", id));
    }
    rc = svc->req_set_method(req, "POST");
    if (rc == PB_OK)
        rc = set_object_url(s, req, b->object, NULL, "/batch/read", err);
    if (rc != PB_OK) {
        json_decref(body);
        return rc;
    }
    return svc->req_set_json(req, body);
}

/* 1 when an OBJECT_NOT_FOUND error of `errors` names record `id`. */
static int reported_missing(const json_t *errors, const char *id)
{
    size_t i, j;
    json_t *e, *v;
    json_array_foreach(errors, i, e) {
        const char *cat = json_string_value(json_object_get(e, "category"));
        if (!cat || strcmp(cat, "OBJECT_NOT_FOUND") != 0)
            continue;
        json_array_foreach(json_object_get(json_object_get(e, "context"), "ids"), j, v) {
            const char *s = json_string_value(v);
            if (s && strcmp(s, id) == 0)
                return 1;
        }
    }
    return 0;
}

static int hs_decode_read_batch(void *state, const struct pb_batch *b,
                                const pb_http_response *resp, json_t **out, pb_error *err)
{
    const struct hs_state *s = state;
    const struct pb_core_services *svc = s->svc;
    int status = svc->resp_status(resp);
    json_t *body = svc->resp_json(resp);
    size_t n = json_array_size(b->items), i, j;
    *out = NULL;
    int missing_all = status == 404;
    if (!missing_all && (status < 200 || status >= 300 || !json_is_object(body))) {
        const char *msg = json_string_value(json_object_get(body, "message"));
        svc->error_set(err, PB_EPROVIDER, NULL, "hubspot answered HTTP %d%s%s", status,
                       msg ? ": " : "", msg ? msg : "");
        return PB_EPROVIDER;
    }
    json_t *res = json_array();
    if (!res)
        return PB_ENOMEM;
    json_t *results = json_object_get(body, "results");
    json_t *errors = json_object_get(body, "errors");
    for (i = 0; i < n; i++) {
        json_t *id = id_json(json_object_get(json_array_get(b->items, i), "id"));
        json_t *found = NULL, *r;
        if (!missing_all) {
            /* Results come in any order: matched by id. */
            json_array_foreach(results, j, r) {
                json_t *rid = id_json(json_object_get(r, "id"));
                int same = id && rid && json_equal(id, rid);
                json_decref(rid);
                if (same) {
                    found = r;
                    break;
                }
            }
        }
        json_t *props = found ? record_properties(found) : NULL;
        if (props) {
            json_array_append_new(res, props);
        } else if (!found && id &&
                   (missing_all || reported_missing(errors, json_string_value(id)))) {
            json_array_append_new(res, json_null());
        } else {
            /* Never guess "empty": that would overwrite a kept value. */
            svc->error_set(err, PB_EPROVIDER, NULL, "hubspot returned no properties for record %s",
                           id ? json_string_value(id) : "?");
            json_decref(id);
            json_decref(res);
            return PB_EPROVIDER;
        }
        json_decref(id);
    }
    *out = res;
    return PB_OK;
}

/* ---- classification -------------------------------------------------------- */

static int parse_i64(const char *s, int64_t *v)
{
    if (!s)
        return 0;
    while (*s == ' ' || *s == '\t')
        s++;
    if (!isdigit((unsigned char)*s))
        return 0;
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    while (*end == ' ' || *end == '\t')
        end++;
    if (errno || *end)
        return 0;
    /* Bounded so that now + v * 1000 cannot overflow. */
    *v = x < 1000000000000LL ? x : 1000000000000LL;
    return 1;
}

/* Unix ms from Retry-After (seconds or an HTTP date), 0 when absent. */
static int64_t retry_after_ms(const struct pb_core_services *svc, const pb_http_response *resp)
{
    const char *ra = svc->resp_header(resp, "Retry-After");
    int64_t secs;
    if (!ra)
        return 0;
    if (parse_i64(ra, &secs))
        return svc->now_ms() + secs * 1000;
    int64_t t = svc->parse_http_date(ra);
    return t > 0 ? t : 0;
}

static void hs_classify(void *state, const pb_http_response *resp, struct pb_classification *out)
{
    const struct hs_state *s = state;
    const struct pb_core_services *svc = s->svc;
    int status = svc->resp_status(resp);
    json_t *body = svc->resp_json(resp);
    const char *category = json_string_value(json_object_get(body, "category"));
    const char *etype = json_string_value(json_object_get(body, "errorType"));
    int limited = status == 429 || (category && strcmp(category, "RATE_LIMITS") == 0) ||
                  (etype && strcmp(etype, "RATE_LIMIT") == 0);
    if (limited) {
        out->rate_limited = 1;
        out->retryable = 1;
        int64_t at = retry_after_ms(svc, resp);
        if (!at) {
            int64_t interval, remaining, secondly;
            int have_rem = parse_i64(svc->resp_header(resp, "X-HubSpot-RateLimit-Remaining"),
                                     &remaining);
            if (parse_i64(svc->resp_header(resp, "X-HubSpot-RateLimit-Interval-Milliseconds"),
                          &interval) &&
                interval > 0 && (!have_rem || remaining <= 0))
                at = svc->now_ms() + interval;
            else if (parse_i64(svc->resp_header(resp, "X-HubSpot-RateLimit-Secondly-Remaining"),
                               &secondly) &&
                     secondly <= 0)
                at = svc->now_ms() + 1000;
        }
        if (at)
            out->retry_at_ms = at;
    }
    if (status == 401)
        out->auth_invalid = 1;
}

/* ---- vtable ---------------------------------------------------------------- */

static const struct pb_plugin hubspot_plugin = {
    PB_PLUGIN_HEAD,
    .name = "hubspot",
    .version = "1.1.0",
    .description = "HubSpot CRM v3: OAuth2 or private-app tokens, writes, batches, deletes, "
                   "associations, reads for ifEmpty",
    .config_keys = hs_config_keys,
    .max_batch_size = HS_MAX_BATCH,
    .init = hs_init,
    .fini = hs_fini,
    .base_url = hs_base_url,
    .apply_credentials = hs_apply_credentials,
    .build_token_refresh = hs_build_token_refresh,
    .parse_token_response = hs_parse_token_response,
    .authorize_url = hs_authorize_url,
    .build_code_exchange = hs_build_code_exchange,
    .encode_write = hs_encode_write,
    .decode_write = hs_decode_write,
    .encode_batch = hs_encode_batch,
    .decode_batch = hs_decode_batch,
    .encode_delete = hs_encode_delete,
    .encode_associations = hs_encode_associations,
    .classify = hs_classify,
    .encode_read = hs_encode_read,
    .decode_read = hs_decode_read,
    .encode_read_batch = hs_encode_read_batch,
    .decode_read_batch = hs_decode_read_batch,
};

PB_PLUGIN_DEFINE(hubspot_plugin)
