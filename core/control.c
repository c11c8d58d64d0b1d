#include "control.h"
#include "app.h"
#include "egress.h"
#include "http.h"
#include "loader.h"
#include "log.h"
#include "manifest.h"
#include "secrets.h"
#include "store.h"
#include "util.h"
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define OAUTH_STATE_TTL_MS (10 * 60 * 1000)
#define MAX_REF_LEN 256

/* ---- small validation helpers -------------------------------------------- */

static int store_problem(int rc, struct pb_problem *p, const char *what)
{
    if (rc == PB_STORE_NOTFOUND)
        pb_problem_set(p, 404, "not-found", "Not found", NULL, "%s not found", what);
    else if (rc == PB_STORE_CONFLICT)
        pb_problem_set(p, 409, "conflict", "Conflict", NULL, "%s already exists", what);
    else
        pb_problem_set(p, 503, "store-unavailable", "Store unavailable", NULL,
                       "the store failed; try again");
    return -1;
}

/* Reads an optional string field; -1 with a problem when present but not a
 * non-empty string of at most max bytes. */
static int opt_string(const json_t *obj, const char *key, const char *path, size_t max,
                      const char **out, struct pb_problem *p)
{
    json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v) || json_string_length(v) == 0) {
        pb_problem_invalid(p, "body", path, "must be a non-empty string");
        return -1;
    }
    if (json_string_length(v) > max) {
        pb_problem_invalid(p, "body", path, "must be at most %zu characters", max);
        return -1;
    }
    *out = json_string_value(v);
    return 0;
}

static int req_string(const json_t *obj, const char *key, const char *path, size_t max,
                      const char **out, struct pb_problem *p)
{
    if (opt_string(obj, key, path, max, out, p) != 0)
        return -1;
    if (!*out) {
        pb_problem_invalid(p, "body", path, "is required");
        return -1;
    }
    return 0;
}

/* Refuses keys of `obj` not listed in `allowed` (NULL-terminated). */
static int valid_name(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max || !isalnum((unsigned char)s[0]))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '-' && s[i] != '_' && s[i] != '.')
            return 0;
    return 1;
}

int64_t pb_parse_rfc3339(const char *s)
{
    struct tm tm = {0};
    if (!s)
        return -1;
    /* strptime alone is lenient (spaces, one-digit fields): insist on
     * RFC 3339's fixed-width "YYYY-MM-DDTHH:MM:SS" first. */
    static const char shape[] = "dddd-dd-ddTdd:dd:dd";
    for (size_t i = 0; i < sizeof shape - 1; i++) {
        if (shape[i] == 'd' ? !isdigit((unsigned char)s[i]) : s[i] != shape[i])
            return -1;
    }
    const char *rest = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!rest)
        return -1;
    int64_t ms = 0;
    if (*rest == '.') {
        int digits = 0;
        rest++;
        while (isdigit((unsigned char)*rest)) {
            if (digits < 3) {
                ms = ms * 10 + (*rest - '0');
                digits++;
            }
            rest++;
        }
        if (digits == 0)
            return -1;
        while (digits++ < 3)
            ms *= 10;
    }
    long offset = 0;
    if (*rest == 'Z' || *rest == 'z') {
        rest++;
    } else if (*rest == '+' || *rest == '-') {
        /* Exactly "+HH:MM": a shorter offset must not move rest past the end. */
        const char *o = rest + 1;
        if (!isdigit((unsigned char)o[0]) || !isdigit((unsigned char)o[1]) || o[2] != ':' ||
            !isdigit((unsigned char)o[3]) || !isdigit((unsigned char)o[4]))
            return -1;
        int hh = (o[0] - '0') * 10 + (o[1] - '0'), mm = (o[3] - '0') * 10 + (o[4] - '0');
        if (hh > 23 || mm > 59)
            return -1;
        offset = (hh * 3600L + mm * 60L) * (*rest == '+' ? 1 : -1);
        rest += 6;
    } else {
        return -1;
    }
    if (*rest)
        return -1;
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return -1;
    return ((int64_t)t - offset) * 1000 + ms;
}

/* ---- projects and keys ---------------------------------------------------- */

static void new_key(char *key_id, size_t id_len, char **key, char hash[65], char prefix[16])
{
    pb_random_id("key_", key_id, id_len);
    *key = pb_api_key_new();
    pb_key_hash(*key, hash);
    snprintf(prefix, 16, "%.10s", *key);
}

static void free_key(char *key)
{
    if (key) {
        memset(key, 0, strlen(key));
        free(key);
    }
}

int pb_ctl_project_name_check(const char *name, struct pb_problem *p)
{
    if (!name || !valid_name(name, 64)) {
        pb_problem_invalid(p, "body", "name",
                           "must be 1-64 letters, digits, '-', '_' or '.', starting with a "
                           "letter or digit");
        return -1;
    }
    /* Projects are found by id first, then by name: a name shaped like an
     * id could never be reached by name. */
    if (strncmp(name, "prj_", 4) == 0) {
        pb_problem_invalid(p, "body", "name", "must not start with 'prj_' (project ids do)");
        return -1;
    }
    return 0;
}

int pb_ctl_project_create(struct pb_app *app, const char *name, json_t **out,
                          struct pb_problem *p)
{
    if (pb_ctl_project_name_check(name, p) != 0)
        return -1;
    char id[64], key_id[64], hash[65], prefix[16];
    char *key;
    pb_random_id("prj_", id, sizeof id);
    new_key(key_id, sizeof key_id, &key, hash, prefix);
    json_t *proj = NULL;
    int rc = pb_store_project_create_with_key(app->store, id, name, key_id, hash, prefix, &proj);
    if (rc != 0) {
        free_key(key);
        if (rc == PB_STORE_CONFLICT) {
            pb_problem_set(p, 409, "conflict", "Conflict", NULL, "project '%s' already exists",
                           name);
            return -1;
        }
        return store_problem(rc, p, "project");
    }
    json_object_set_new(proj, "apiKey", json_string(key));
    free_key(key);
    *out = proj;
    return 0;
}

int pb_ctl_api_key_create(struct pb_app *app, const char *project_id, json_t **out,
                          struct pb_problem *p)
{
    char key_id[64], hash[65], prefix[16], ts[40];
    char *key;
    new_key(key_id, sizeof key_id, &key, hash, prefix);
    int rc = pb_store_api_key_add(app->store, key_id, project_id, hash, prefix);
    if (rc != 0) {
        free_key(key);
        return store_problem(rc, p, "project");
    }
    pb_fmt_rfc3339(pb_wall_ms(), ts, sizeof ts);
    *out = json_pack("{s:s, s:s, s:s, s:s, s:s}", "id", key_id, "projectId", project_id, "prefix",
                     prefix, "apiKey", key, "createTime", ts);
    free_key(key);
    return 0;
}

int pb_ctl_authenticate(struct pb_app *app, const char *api_key, char *project_id, size_t len)
{
    if (!api_key || !*api_key || strlen(api_key) > 256)
        return -1;
    char hash[65];
    pb_key_hash(api_key, hash);
    if (!hash[0])
        return -1;
    return pb_store_api_key_lookup(app->store, hash, project_id, len) == 0 ? 0 : -1;
}

int pb_ctl_project_resolve(struct pb_app *app, const char *id_or_name, const char *key_project,
                           json_t **out, struct pb_problem *p)
{
    json_t *proj = NULL;
    int rc = pb_store_project_get(app->store, id_or_name, &proj);
    if (rc == 0 && key_project &&
        strcmp(json_string_value(json_object_get(proj, "id")), key_project) != 0) {
        json_decref(proj);
        rc = PB_STORE_NOTFOUND;
    }
    if (rc != 0) {
        if (rc == PB_STORE_NOTFOUND)
            pb_problem_set(p, 404, "not-found", "Not found", NULL, "project '%s' not found",
                           id_or_name);
        else
            store_problem(rc, p, "project");
        return -1;
    }
    *out = proj;
    return 0;
}

/* ---- manifests and integrations ------------------------------------------ */

static int provider_enabled(const char *provider, void *ctx)
{
    return pb_registry_find(((struct pb_app *)ctx)->reg, provider) != NULL;
}

int pb_ctl_manifest_apply(struct pb_app *app, const char *project_id, const char *text,
                          size_t len, const char *source, json_t **out, struct pb_problem *p)
{
    json_t *m = NULL;
    char err[600];
    int line = 0, col = 0;
    if (pb_manifest_parse(text, len, source, provider_enabled, app, &m, err, sizeof err, &line,
                          &col) != 0) {
        char where[32];
        snprintf(where, sizeof where, "%d:%d", line, col);
        json_t *issues = json_pack("[{s:s, s:s, s:s}]", "in", "body", "name", where, "detail", err);
        pb_problem_set(p, 400, "invalid-manifest", "Invalid manifest", issues, "%s", err);
        return -1;
    }
    json_t *list = NULL;
    int rc = pb_store_integrations_apply(app->store, project_id,
                                         json_object_get(m, "integrations"), &list);
    json_decref(m);
    if (rc != 0)
        return store_problem(rc, p, "project");
    *out = json_pack("{s:o}", "integrations", list);
    return 0;
}

int pb_ctl_integration_get(struct pb_app *app, const char *project_id, const char *id_or_name,
                           json_t **out, struct pb_problem *p)
{
    int rc = pb_store_integration_get(app->store, project_id, id_or_name, out);
    if (rc == PB_STORE_NOTFOUND) {
        pb_problem_set(p, 404, "not-found", "Not found", NULL, "integration '%s' not found",
                       id_or_name);
        return -1;
    }
    return rc == 0 ? 0 : store_problem(rc, p, "integration");
}

/* ---- connections ------------------------------------------------------------ */

/* providerMetadata: {"key": {"value": "str"}} */
static int check_metadata(const json_t *md, struct pb_problem *p)
{
    if (!md || json_is_null(md))
        return 0;
    if (!json_is_object(md)) {
        pb_problem_invalid(p, "body", "providerMetadata", "must be an object");
        return -1;
    }
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)md, key, v) {
        char path[200];
        snprintf(path, sizeof path, "providerMetadata.%.64s.value", key);
        json_t *val = json_object_get(v, "value");
        if (!json_is_object(v) || !json_is_string(val)) {
            pb_problem_invalid(p, "body", path, "must be a string");
            return -1;
        }
        if (json_string_length(val) > 2048) {
            pb_problem_invalid(p, "body", path, "must be at most 2048 characters");
            return -1;
        }
    }
    return 0;
}

static json_t *scopes_array(const json_t *scopes, const char *path, struct pb_problem *p)
{
    if (!scopes || json_is_null(scopes))
        return json_array();
    if (!json_is_array(scopes)) {
        pb_problem_invalid(p, "body", path, "must be an array of strings");
        return NULL;
    }
    size_t i;
    json_t *v;
    json_array_foreach(scopes, i, v) {
        if (!json_is_string(v)) {
            pb_problem_invalid(p, "body", path, "must be an array of strings");
            return NULL;
        }
    }
    return json_deep_copy(scopes);
}

/* Builds {"credentials": {...secret...}, "authType", "expiresAt"?, "scopes"}
 * from the request's one credential block. */
static json_t *read_credentials(const json_t *body, struct pb_problem *p)
{
    static const char *const kinds[] = {"apiKey", "basicAuth", "oauth2ClientCredentials",
                                        "oauth2AuthorizationCode"};
    const char *kind = NULL;
    for (size_t i = 0; i < 4; i++) {
        json_t *v = json_object_get(body, kinds[i]);
        if (v && !json_is_null(v)) {
            if (kind) {
                pb_problem_invalid(p, "body", kinds[i], "only one of apiKey, basicAuth, "
                                   "oauth2ClientCredentials, oauth2AuthorizationCode may be given");
                return NULL;
            }
            kind = kinds[i];
        }
    }
    json_t *creds = json_object();
    json_t *res = json_pack("{s:o}", "credentials", creds);
    const char *s1, *s2;
    if (!kind) {
        json_object_set_new(res, "authType", json_string("none"));
        json_object_set_new(creds, "auth_type", json_string("none"));
    } else if (strcmp(kind, "apiKey") == 0) {
        if (req_string(body, "apiKey", "apiKey", 4096, &s1, p) != 0)
            goto fail;
        json_object_set_new(res, "authType", json_string("apiKey"));
        json_object_set_new(creds, "auth_type", json_string("api_key"));
        json_object_set_new(creds, "api_key", json_string(s1));
    } else if (strcmp(kind, "basicAuth") == 0) {
        json_t *b = json_object_get(body, kind);
        static const char *const keys[] = {"username", "password", NULL};
        if (!json_is_object(b)) {
            pb_problem_invalid(p, "body", "basicAuth", "must be an object");
            goto fail;
        }
        if (pb_problem_only_keys(b, "basicAuth", keys, p) != 0 ||
            req_string(b, "username", "basicAuth.username", 1024, &s1, p) != 0)
            goto fail;
        json_t *pw = json_object_get(b, "password");
        if (pw && !json_is_string(pw)) {
            pb_problem_invalid(p, "body", "basicAuth.password", "must be a string");
            goto fail;
        }
        json_object_set_new(res, "authType", json_string("basic"));
        json_object_set_new(creds, "auth_type", json_string("basic"));
        json_object_set_new(creds, "username", json_string(s1));
        json_object_set_new(creds, "password", json_string(pw ? json_string_value(pw) : ""));
    } else if (strcmp(kind, "oauth2ClientCredentials") == 0) {
        json_t *b = json_object_get(body, kind);
        static const char *const keys[] = {"clientId", "clientSecret", "scopes", NULL};
        if (!json_is_object(b)) {
            pb_problem_invalid(p, "body", kind, "must be an object");
            goto fail;
        }
        if (pb_problem_only_keys(b, kind, keys, p) != 0 ||
            req_string(b, "clientId", "oauth2ClientCredentials.clientId", 1024, &s1, p) != 0 ||
            req_string(b, "clientSecret", "oauth2ClientCredentials.clientSecret", 4096, &s2, p) != 0)
            goto fail;
        json_t *sc = scopes_array(json_object_get(b, "scopes"), "oauth2ClientCredentials.scopes", p);
        if (!sc)
            goto fail;
        json_object_set_new(res, "scopes", sc);
        json_object_set_new(res, "authType", json_string("oauth2/clientCredentials"));
        json_object_set_new(creds, "auth_type", json_string("oauth2_cc"));
        json_object_set_new(creds, "client_id", json_string(s1));
        json_object_set_new(creds, "client_secret", json_string(s2));
    } else {
        json_t *b = json_object_get(body, kind);
        static const char *const keys[] = {"accessToken", "refreshToken", "scopes", NULL};
        static const char *const at_keys[] = {"token", "expiresAt", "issuedAt", NULL};
        static const char *const rt_keys[] = {"token", "expiresAt", "issuedAt", NULL};
        if (!json_is_object(b)) {
            pb_problem_invalid(p, "body", kind, "must be an object");
            goto fail;
        }
        if (pb_problem_only_keys(b, kind, keys, p) != 0)
            goto fail;
        json_t *at = json_object_get(b, "accessToken"), *rt = json_object_get(b, "refreshToken");
        if ((!at || json_is_null(at)) && (!rt || json_is_null(rt))) {
            pb_problem_invalid(p, "body", "oauth2AuthorizationCode",
                               "needs accessToken, refreshToken or both");
            goto fail;
        }
        json_object_set_new(res, "authType", json_string("oauth2/authorizationCode"));
        json_object_set_new(creds, "auth_type", json_string("oauth2"));
        if (at && !json_is_null(at)) {
            if (!json_is_object(at)) {
                pb_problem_invalid(p, "body", "oauth2AuthorizationCode.accessToken", "must be an object");
                goto fail;
            }
            if (pb_problem_only_keys(at, "oauth2AuthorizationCode.accessToken", at_keys, p) != 0 ||
                req_string(at, "token", "oauth2AuthorizationCode.accessToken.token", 8192, &s1, p) != 0 ||
                opt_string(at, "expiresAt", "oauth2AuthorizationCode.accessToken.expiresAt", 64, &s2, p) != 0)
                goto fail;
            json_object_set_new(creds, "access_token", json_string(s1));
            if (s2) {
                int64_t ms = pb_parse_rfc3339(s2);
                if (ms < 0) {
                    pb_problem_invalid(p, "body", "oauth2AuthorizationCode.accessToken.expiresAt",
                                       "must be an RFC 3339 time such as 2026-01-02T15:04:05Z");
                    goto fail;
                }
                json_object_set_new(res, "expiresAt", json_integer(ms));
            }
        }
        if (rt && !json_is_null(rt)) {
            if (!json_is_object(rt)) {
                pb_problem_invalid(p, "body", "oauth2AuthorizationCode.refreshToken", "must be an object");
                goto fail;
            }
            if (pb_problem_only_keys(rt, "oauth2AuthorizationCode.refreshToken", rt_keys, p) != 0 ||
                req_string(rt, "token", "oauth2AuthorizationCode.refreshToken.token", 8192, &s1, p) != 0)
                goto fail;
            json_object_set_new(creds, "refresh_token", json_string(s1));
        }
        json_t *sc = scopes_array(json_object_get(b, "scopes"), "oauth2AuthorizationCode.scopes", p);
        if (!sc)
            goto fail;
        json_object_set_new(res, "scopes", sc);
    }
    return res;
fail:
    json_decref(res);
    return NULL;
}

static int store_connection(struct pb_app *app, const char *project_id, const char *provider,
                            const char *group_ref, const char *consumer_ref, json_t *creds_info,
                            const json_t *metadata, json_t **out, struct pb_problem *p)
{
    json_t *creds = json_object_get(creds_info, "credentials");
    json_t *scopes = json_object_get(creds_info, "scopes");
    if (json_array_size(scopes)) {
        /* The plugin sees scopes as one space-separated string. */
        struct pb_buf b = {0};
        size_t i;
        json_t *v;
        json_array_foreach(scopes, i, v) {
            if (i)
                pb_buf_appends(&b, " ");
            pb_buf_appends(&b, json_string_value(v));
        }
        json_object_set_new(creds, "scopes", json_string(b.data));
        pb_buf_free(&b);
    }
    char *plain = json_dumps(creds, JSON_COMPACT);
    char *sealed = pb_secret_seal(plain, strlen(plain));
    memset(plain, 0, strlen(plain));
    free(plain);
    if (!sealed)
        return store_problem(PB_STORE_ERR, p, "connection");
    char id[64];
    pb_random_id("conn_", id, sizeof id);
    json_t *conn = json_pack("{s:s, s:s, s:s, s:O}", "id", id, "provider", provider, "groupRef",
                             group_ref, "authType", json_object_get(creds_info, "authType"));
    json_object_set_new(conn, "consumerRef", json_string(consumer_ref ? consumer_ref : group_ref));
    json_object_set_new(conn, "providerMetadata",
                        metadata && json_is_object(metadata) ? json_deep_copy(metadata)
                                                             : json_object());
    if (json_array_size(scopes))
        json_object_set(conn, "scopes", scopes);
    if (json_object_get(creds_info, "expiresAt"))
        json_object_set(conn, "expiresAt", json_object_get(creds_info, "expiresAt"));
    int rc = pb_store_connection_create(app->store, project_id, conn, sealed, out);
    json_decref(conn);
    free(sealed);
    return rc == 0 ? 0 : store_problem(rc, p, "connection");
}

int pb_ctl_connection_generate(struct pb_app *app, const char *project_id, const json_t *body,
                               json_t **out, struct pb_problem *p)
{
    static const char *const keys[] = {"groupRef", "consumerRef", "provider", "providerMetadata",
                                       "apiKey", "basicAuth", "oauth2ClientCredentials",
                                       "oauth2AuthorizationCode", "groupName", "consumerName",
                                       NULL};
    const char *group_ref, *consumer_ref, *provider;
    if (pb_problem_only_keys(body, "", keys, p) != 0 ||
        req_string(body, "groupRef", "groupRef", MAX_REF_LEN, &group_ref, p) != 0 ||
        opt_string(body, "consumerRef", "consumerRef", MAX_REF_LEN, &consumer_ref, p) != 0 ||
        req_string(body, "provider", "provider", 64, &provider, p) != 0)
        return -1;
    if (!pb_registry_find(app->reg, provider)) {
        pb_problem_invalid(p, "body", "provider", "provider '%s' is not enabled in plugboard.yaml",
                           provider);
        return -1;
    }
    json_t *md = json_object_get(body, "providerMetadata");
    if (check_metadata(md, p) != 0)
        return -1;
    json_t *creds = read_credentials(body, p);
    if (!creds)
        return -1;
    int rc = store_connection(app, project_id, provider, group_ref, consumer_ref, creds, md, out, p);
    json_decref(creds);
    return rc;
}

/* ---- installations ---------------------------------------------------------- */

static json_t *find_named(const json_t *objects, const char *name)
{
    size_t i;
    json_t *o;
    json_array_foreach(objects, i, o) {
        if (json_is_string(json_object_get(o, "objectName")) &&
            strcmp(json_string_value(json_object_get(o, "objectName")), name) == 0)
            return o;
    }
    return NULL;
}

static int check_field_settings(const json_t *fs, const char *base, struct pb_problem *p)
{
    const char *field;
    json_t *s;
    char path[400];
    if (!json_is_object(fs)) {
        pb_problem_invalid(p, "body", base, "must be an object");
        return -1;
    }
    json_object_foreach((json_t *)fs, field, s) {
        static const char *const keys[] = {"default", "writeOnCreate", "writeOnUpdate", NULL};
        snprintf(path, sizeof path, "%s.%.64s", base, field);
        if (!json_is_object(s)) {
            pb_problem_invalid(p, "body", path, "must be an object");
            return -1;
        }
        if (pb_problem_only_keys(s, path, keys, p) != 0)
            return -1;
        json_t *d = json_object_get(s, "default");
        if (d) {
            json_t *sv = json_object_get(d, "stringValue"), *iv = json_object_get(d, "integerValue"),
                   *bv = json_object_get(d, "booleanValue");
            snprintf(path, sizeof path, "%s.%.64s.default", base, field);
            int n = (sv != NULL) + (iv != NULL) + (bv != NULL);
            if (!json_is_object(d) || n != 1 || json_object_size(d) != 1 ||
                (sv && !json_is_string(sv)) || (iv && !json_is_integer(iv)) ||
                (bv && !json_is_boolean(bv))) {
                pb_problem_invalid(p, "body", path,
                                   "must be exactly one of stringValue (string), integerValue "
                                   "(integer) or booleanValue (boolean)");
                return -1;
            }
        }
        json_t *woc = json_object_get(s, "writeOnCreate"), *wou = json_object_get(s, "writeOnUpdate");
        if (woc && (!json_is_string(woc) || (strcmp(json_string_value(woc), "always") != 0 &&
                                             strcmp(json_string_value(woc), "never") != 0))) {
            snprintf(path, sizeof path, "%s.%.64s.writeOnCreate", base, field);
            pb_problem_invalid(p, "body", path, "must be always or never");
            return -1;
        }
        if (wou && (!json_is_string(wou) || (strcmp(json_string_value(wou), "always") != 0 &&
                                             strcmp(json_string_value(wou), "never") != 0 &&
                                             strcmp(json_string_value(wou), "ifEmpty") != 0))) {
            snprintf(path, sizeof path, "%s.%.64s.writeOnUpdate", base, field);
            pb_problem_invalid(p, "body", path, "must be always, never or ifEmpty");
            return -1;
        }
    }
    return 0;
}

/* Validates an installation config against its integration. `base` is the
 * field path prefix used in messages. */
static int check_config(const json_t *integration, const json_t *config, const char *base,
                        struct pb_problem *p)
{
    char path[400];
    if (!json_is_object(config)) {
        pb_problem_invalid(p, "body", base, "must be an object");
        return -1;
    }
    static const char *const ckeys[] = {"content", "revision", "createTime", "createdBy", NULL};
    if (pb_problem_only_keys(config, base, ckeys, p) != 0)
        return -1;
    json_t *content = json_object_get(config, "content");
    snprintf(path, sizeof path, "%s.content", base);
    if (!content)
        return 0;
    if (!json_is_object(content)) {
        pb_problem_invalid(p, "body", path, "must be an object");
        return -1;
    }
    static const char *const keys[] = {"provider", "read", "write", "proxy", NULL};
    if (pb_problem_only_keys(content, path, keys, p) != 0)
        return -1;
    json_t *proxy = json_object_get(content, "proxy");
    if (proxy) {
        json_t *en = json_object_get(proxy, "enabled");
        snprintf(path, sizeof path, "%s.content.proxy.enabled", base);
        if (!json_is_object(proxy) || (en && !json_is_boolean(en))) {
            pb_problem_invalid(p, "body", path, "must be true or false");
            return -1;
        }
    }
    static const char *const actions[] = {"write", "read"};
    for (size_t a = 0; a < 2; a++) {
        json_t *sect = json_object_get(content, actions[a]);
        if (!sect)
            continue;
        snprintf(path, sizeof path, "%s.content.%s", base, actions[a]);
        json_t *objs = json_object_get(sect, "objects");
        if (!json_is_object(sect) || (objs && !json_is_object(objs))) {
            pb_problem_invalid(p, "body", path, "must be an object with an objects map");
            return -1;
        }
        json_t *defined = json_object_get(json_object_get(integration, actions[a]), "objects");
        const char *name;
        json_t *o;
        json_object_foreach(objs, name, o) {
            snprintf(path, sizeof path, "%s.content.%s.objects.%.64s", base, actions[a], name);
            if (!find_named(defined, name)) {
                pb_problem_invalid(p, "body", path, "'%s' is not a %s object of integration '%s'",
                                   name, actions[a],
                                   json_string_value(json_object_get(integration, "name")));
                return -1;
            }
            if (!json_is_object(o)) {
                pb_problem_invalid(p, "body", path, "must be an object");
                return -1;
            }
            if (a == 0) {
                static const char *const wkeys[] = {"objectName", "deletionSettings",
                                                    "selectedFieldSettings",
                                                    "selectedFieldMappings", NULL};
                if (pb_problem_only_keys(o, path, wkeys, p) != 0)
                    return -1;
                json_t *ds = json_object_get(o, "deletionSettings");
                if (ds && (!json_is_object(ds) ||
                           (json_object_get(ds, "enabled") &&
                            !json_is_boolean(json_object_get(ds, "enabled"))))) {
                    char sub[440];
                    snprintf(sub, sizeof sub, "%s.deletionSettings.enabled", path);
                    pb_problem_invalid(p, "body", sub, "must be true or false");
                    return -1;
                }
                json_t *fs = json_object_get(o, "selectedFieldSettings");
                char sub[440];
                snprintf(sub, sizeof sub, "%s.selectedFieldSettings", path);
                if (fs && check_field_settings(fs, sub, p) != 0)
                    return -1;
            }
            json_t *maps = json_object_get(o, "selectedFieldMappings");
            if (maps) {
                const char *k;
                json_t *v;
                char sub[440];
                snprintf(sub, sizeof sub, "%s.selectedFieldMappings", path);
                if (!json_is_object(maps)) {
                    pb_problem_invalid(p, "body", sub, "must map names to provider fields");
                    return -1;
                }
                json_object_foreach(maps, k, v) {
                    if (!json_is_string(v)) {
                        pb_problem_invalid(p, "body", sub, "'%s' must map to a string", k);
                        return -1;
                    }
                }
            }
        }
    }
    return 0;
}

static int load_integration(struct pb_app *app, const char *project_id, const char *integration,
                            json_t **out, struct pb_problem *p)
{
    return pb_ctl_integration_get(app, project_id, integration, out, p);
}

/* A connection of the project for this provider and group: the given id, or
 * the newest for the group. */
static int pick_connection(struct pb_app *app, const char *project_id, const char *provider,
                           const char *group_ref, const char *connection_id, char *out,
                           size_t len, struct pb_problem *p)
{
    json_t *conn = NULL;
    if (connection_id) {
        if (pb_store_connection_get(app->store, project_id, connection_id, &conn, NULL) != 0) {
            pb_problem_invalid(p, "body", "connectionId", "connection '%s' not found",
                               connection_id);
            return -1;
        }
        const char *cp = json_string_value(json_object_get(conn, "provider"));
        if (!cp || strcmp(cp, provider) != 0) {
            pb_problem_invalid(p, "body", "connectionId",
                               "connection '%s' is for provider '%s', not '%s'", connection_id,
                               cp ? cp : "?", provider);
            json_decref(conn);
            return -1;
        }
        /* One customer's installation must not use another's credentials. */
        const char *cg = json_string_value(json_object_get(conn, "groupRef"));
        if (!cg || strcmp(cg, group_ref) != 0) {
            pb_problem_invalid(p, "body", "connectionId",
                               "connection '%s' belongs to groupRef '%s', not '%s'", connection_id,
                               cg ? cg : "?", group_ref);
            json_decref(conn);
            return -1;
        }
        snprintf(out, len, "%s", connection_id);
        json_decref(conn);
        return 0;
    }
    json_t *list = NULL;
    if (pb_store_connection_list(app->store, project_id, group_ref, &list) != 0)
        return store_problem(PB_STORE_ERR, p, "connection");
    const char *found = NULL;
    size_t i;
    json_t *c;
    json_array_foreach(list, i, c) {
        const char *cp = json_string_value(json_object_get(c, "provider"));
        if (cp && strcmp(cp, provider) == 0)
            found = json_string_value(json_object_get(c, "id"));
    }
    if (!found) {
        pb_problem_invalid(p, "body", "connectionId",
                           "no connection for groupRef '%s' and provider '%s': import one with "
                           "connections:generate or OAuth connect first",
                           group_ref, provider);
        json_decref(list);
        return -1;
    }
    snprintf(out, len, "%s", found);
    json_decref(list);
    return 0;
}

int pb_ctl_installation_create(struct pb_app *app, const char *project_id,
                               const char *integration, const json_t *body, json_t **out,
                               struct pb_problem *p)
{
    static const char *const keys[] = {"groupRef", "connectionId", "config", NULL};
    const char *group_ref, *connection_id;
    if (pb_problem_only_keys(body, "", keys, p) != 0 ||
        req_string(body, "groupRef", "groupRef", MAX_REF_LEN, &group_ref, p) != 0 ||
        opt_string(body, "connectionId", "connectionId", 64, &connection_id, p) != 0)
        return -1;
    json_t *integ = NULL;
    if (load_integration(app, project_id, integration, &integ, p) != 0)
        return -1;
    int ret = -1;
    json_t *config = json_object_get(body, "config");
    if (!config) {
        pb_problem_invalid(p, "body", "config", "is required");
        goto out;
    }
    if (check_config(integ, config, "config", p) != 0)
        goto out;
    char conn_id[64];
    if (pick_connection(app, project_id, json_string_value(json_object_get(integ, "provider")),
                        group_ref, connection_id, conn_id, sizeof conn_id, p) != 0)
        goto out;
    char id[64];
    pb_random_id("inst_", id, sizeof id);
    json_t *inst = json_pack("{s:s, s:O, s:s, s:s, s:O}", "id", id, "integrationId",
                             json_object_get(integ, "id"), "groupRef", group_ref, "connectionId",
                             conn_id, "config", config);
    int rc = pb_store_installation_create(app->store, project_id, inst, out);
    json_decref(inst);
    if (rc == PB_STORE_CONFLICT) {
        pb_problem_set(p, 409, "conflict", "Conflict", NULL,
                       "groupRef '%s' already has an installation of integration '%s'", group_ref,
                       json_string_value(json_object_get(integ, "name")));
        goto out;
    }
    if (rc != 0) {
        store_problem(rc, p, "installation");
        goto out;
    }
    ret = 0;
out:
    json_decref(integ);
    return ret;
}

int pb_ctl_installation_get(struct pb_app *app, const char *project_id, const char *integration,
                            const char *installation, json_t **integration_out, json_t **out,
                            struct pb_problem *p)
{
    json_t *integ = NULL, *inst = NULL;
    if (load_integration(app, project_id, integration, &integ, p) != 0)
        return -1;
    int rc = pb_store_installation_get(app->store, project_id, installation, &inst);
    if (rc == 0 && !json_equal(json_object_get(inst, "integrationId"), json_object_get(integ, "id"))) {
        json_decref(inst);
        rc = PB_STORE_NOTFOUND;
    }
    if (rc != 0) {
        json_decref(integ);
        if (rc == PB_STORE_NOTFOUND)
            pb_problem_set(p, 404, "not-found", "Not found", NULL, "installation '%s' not found",
                           installation);
        else
            store_problem(rc, p, "installation");
        return -1;
    }
    if (integration_out)
        *integration_out = integ;
    else
        json_decref(integ);
    *out = inst;
    return 0;
}

/* Sets (value non-NULL) or removes the dotted path below root, creating
 * objects on the way. */
static void set_path(json_t *root, const char *dotted, json_t *value)
{
    char *copy = pb_xstrdup(dotted);
    json_t *cur = root;
    char *save = NULL;
    char *tok = strtok_r(copy, ".", &save);
    while (tok) {
        char *next = strtok_r(NULL, ".", &save);
        if (!next) {
            if (value)
                json_object_set(cur, tok, value);
            else
                json_object_del(cur, tok);
            break;
        }
        json_t *child = json_object_get(cur, tok);
        if (!json_is_object(child)) {
            if (!value)
                break;
            child = json_object();
            json_object_set_new(cur, tok, child);
        }
        cur = child;
        tok = next;
    }
    free(copy);
}

static json_t *get_path(json_t *root, const char *dotted)
{
    char *copy = pb_xstrdup(dotted);
    json_t *cur = root;
    char *save = NULL;
    for (char *tok = strtok_r(copy, ".", &save); tok && cur; tok = strtok_r(NULL, ".", &save))
        cur = json_object_get(cur, tok);
    free(copy);
    return cur;
}

/* A per-object mask path split at its object name:
 * "config.content.write.objects.a.b" is the map "config.content.write.objects"
 * (into map_out) and the object "a.b" (returned). NULL for other paths.
 * Object names come from amp.yaml and may contain dots themselves. */
static const char *mask_object(const char *path, char *map_out, size_t len)
{
    static const char *const prefixes[] = {"config.content.write.objects.",
                                           "config.content.read.objects.", NULL};
    for (const char *const *pr = prefixes; *pr; pr++) {
        size_t n = strlen(*pr);
        if (strncmp(path, *pr, n) == 0 && path[n]) {
            snprintf(map_out, len, "%.*s", (int)(n - 1), *pr);
            return path + n;
        }
    }
    return NULL;
}

/* The update-mask paths SPEC.md allows; <obj> stands for one object name:
 * one without dots (checked against the integration with the rest of the
 * config), or exactly one of the integration's objects. */
static int mask_allowed(const char *path, const json_t *integ)
{
    static const char *const exact[] = {"connectionId", "config.content.write.objects",
                                        "config.content.proxy.enabled", NULL};
    for (const char *const *e = exact; *e; e++)
        if (strcmp(path, *e) == 0)
            return 1;
    char map[64];
    const char *obj = mask_object(path, map, sizeof map);
    if (!obj)
        return 0;
    if (!strchr(obj, '.'))
        return 1;
    const char *action = strstr(map, ".write.") ? "write" : "read";
    return find_named(json_object_get(json_object_get(integ, action), "objects"), obj) != NULL;
}

/* Copies the masked path from patch into doc; absent or null removes it. */
static void mask_apply(json_t *doc, json_t *patch, const char *path)
{
    char map[64];
    const char *obj = mask_object(path, map, sizeof map);
    if (!obj) {
        json_t *v = get_path(patch, path);
        set_path(doc, path, v && !json_is_null(v) ? v : NULL);
        return;
    }
    /* The object name is one key, dots and all. */
    json_t *v = json_object_get(get_path(patch, map), obj);
    json_t *dst = get_path(doc, map);
    if (v && !json_is_null(v)) {
        if (!json_is_object(dst)) {
            dst = json_object();
            set_path(doc, map, dst);
            json_decref(dst);
        }
        json_object_set(dst, obj, v);
    } else if (json_is_object(dst)) {
        json_object_del(dst, obj);
    }
}

int pb_ctl_installation_patch(struct pb_app *app, const char *project_id,
                              const char *integration, const char *installation,
                              const json_t *body, json_t **out, struct pb_problem *p)
{
    static const char *const keys[] = {"updateMask", "installation", NULL};
    if (pb_problem_only_keys(body, "", keys, p) != 0)
        return -1;
    json_t *mask = json_object_get(body, "updateMask"), *patch = json_object_get(body, "installation");
    if (!json_is_array(mask) || json_array_size(mask) == 0) {
        pb_problem_invalid(p, "body", "updateMask", "must be a non-empty array of paths");
        return -1;
    }
    if (!json_is_object(patch)) {
        pb_problem_invalid(p, "body", "installation", "must be an object");
        return -1;
    }
    size_t i;
    json_t *m;
    json_array_foreach(mask, i, m) {
        if (!json_is_string(m)) {
            char name[48];
            snprintf(name, sizeof name, "updateMask[%zu]", i);
            pb_problem_invalid(p, "body", name, "must be a string");
            return -1;
        }
    }
    json_t *integ = NULL, *inst = NULL;
    if (pb_ctl_installation_get(app, project_id, integration, installation, &integ, &inst, p) != 0)
        return -1;
    int ret = -1;
    json_t *doc = NULL;
    json_array_foreach(mask, i, m) {
        if (!mask_allowed(json_string_value(m), integ)) {
            char name[48];
            snprintf(name, sizeof name, "updateMask[%zu]", i);
            pb_problem_invalid(p, "body", name,
                               "'%s' is not an updatable path (connectionId, "
                               "config.content.write.objects, config.content.write.objects.<obj>, "
                               "config.content.read.objects.<obj>, config.content.proxy.enabled)",
                               json_string_value(m));
            goto out;
        }
    }
    doc = json_pack("{s:O, s:O}", "connectionId",
                            json_object_get(inst, "connectionId") ? json_object_get(inst, "connectionId")
                                                                  : json_null(),
                            "config", json_object_get(inst, "config"));
    json_t *config = json_object_get(doc, "config");
    if (!json_is_object(config)) {
        config = json_object();
        json_object_set_new(doc, "config", config);
    }
    json_array_foreach(mask, i, m)
        mask_apply(doc, patch, json_string_value(m));
    if (check_config(integ, json_object_get(doc, "config"), "installation.config", p) != 0)
        goto out;
    json_t *connv = json_object_get(doc, "connectionId");
    const char *conn = json_string_value(connv);
    char conn_id[64] = "";
    int mask_conn = 0;
    json_array_foreach(mask, i, m)
        mask_conn |= strcmp(json_string_value(m), "connectionId") == 0;
    /* An installation always has a connection (create insists on one), so
     * the mask may re-point it but not clear it. */
    if (mask_conn && (!conn || !*conn || json_string_length(connv) >= sizeof conn_id)) {
        pb_problem_invalid(p, "body", "installation.connectionId", "must be a connection id");
        goto out;
    }
    if (!conn) {
        /* Not in the mask and none stored: keep none. */
    } else if (!json_equal(connv, json_object_get(inst, "connectionId"))) {
        if (pick_connection(app, project_id, json_string_value(json_object_get(integ, "provider")),
                            json_string_value(json_object_get(inst, "groupRef")), conn, conn_id,
                            sizeof conn_id, p) != 0) {
            /* Name the field as the caller sent it, in the detail too. */
            char why[512];
            json_t *issue = json_array_get(p->issues, 0);
            snprintf(why, sizeof why, "%s",
                     issue ? json_string_value(json_object_get(issue, "detail")) : p->detail);
            pb_problem_invalid(p, "body", "installation.connectionId", "%s", why);
            goto out;
        }
    } else {
        snprintf(conn_id, sizeof conn_id, "%s", conn);
    }
    int rc = pb_store_installation_update(app->store, project_id,
                                          json_string_value(json_object_get(inst, "id")),
                                          conn_id[0] ? conn_id : NULL,
                                          json_object_get(doc, "config"), out);
    if (rc != 0) {
        store_problem(rc, p, "installation");
        goto out;
    }
    ret = 0;
out:
    json_decref(doc);
    json_decref(inst);
    json_decref(integ);
    return ret;
}

/* ---- JSON Patch (RFC 6902 add/remove/replace) ------------------------------ */

/* Decodes one RFC 6901 reference token (~1 -> /, ~0 -> ~). */
static char *pointer_token(const char *s, size_t n)
{
    char *out = pb_xmalloc(n + 1);
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '~' && i + 1 < n && (s[i + 1] == '0' || s[i + 1] == '1')) {
            out[j++] = s[i + 1] == '0' ? '~' : '/';
            i++;
        } else if (s[i] == '~') {
            free(out);
            return NULL;
        } else {
            out[j++] = s[i];
        }
    }
    out[j] = '\0';
    return out;
}

static int array_index(const char *tok, size_t size, int allow_end, size_t *idx)
{
    if (allow_end && strcmp(tok, "-") == 0) {
        *idx = size;
        return 0;
    }
    if (!*tok || (tok[0] == '0' && tok[1]) || strspn(tok, "0123456789") != strlen(tok))
        return -1;
    unsigned long long v = strtoull(tok, NULL, 10);
    if (v > size || (!allow_end && v == size))
        return -1;
    *idx = (size_t)v;
    return 0;
}

/* Applies one op; returns NULL on success or a reason. */
static const char *apply_op(json_t *root, const char *op, const char *path, json_t *value)
{
    if (path[0] != '/')
        return "path must start with '/'";
    json_t *parent = root;
    const char *seg = path + 1;
    for (;;) {
        const char *slash = strchr(seg, '/');
        size_t n = slash ? (size_t)(slash - seg) : strlen(seg);
        char *tok = pointer_token(seg, n);
        if (!tok)
            return "path has a bad escape";
        if (slash) {
            json_t *child = NULL;
            size_t idx;
            if (json_is_object(parent))
                child = json_object_get(parent, tok);
            else if (json_is_array(parent) && array_index(tok, json_array_size(parent), 0, &idx) == 0)
                child = json_array_get(parent, idx);
            free(tok);
            if (!child)
                return "path does not exist";
            parent = child;
            seg = slash + 1;
            continue;
        }
        const char *why = NULL;
        if (json_is_object(parent)) {
            int exists = json_object_get(parent, tok) != NULL;
            if (strcmp(op, "add") == 0)
                json_object_set(parent, tok, value);
            else if (!exists)
                why = "path does not exist";
            else if (strcmp(op, "remove") == 0)
                json_object_del(parent, tok);
            else
                json_object_set(parent, tok, value);
        } else if (json_is_array(parent)) {
            size_t idx;
            if (array_index(tok, json_array_size(parent), strcmp(op, "add") == 0, &idx) != 0)
                why = "array index out of range";
            else if (strcmp(op, "add") == 0)
                json_array_insert(parent, idx, value);
            else if (strcmp(op, "remove") == 0)
                json_array_remove(parent, idx);
            else
                json_array_set(parent, idx, value);
        } else {
            why = "path does not exist";
        }
        free(tok);
        return why;
    }
}

json_t *pb_json_patch(const json_t *doc, const json_t *ops, struct pb_problem *p)
{
    if (!json_is_array(ops)) {
        pb_problem_invalid(p, "body", "changes", "must be an array of JSON Patch operations");
        return NULL;
    }
    json_t *copy = json_deep_copy(doc);
    size_t i;
    json_t *o;
    json_array_foreach(ops, i, o) {
        char name[48];
        snprintf(name, sizeof name, "changes[%zu]", i);
        const char *op = json_string_value(json_object_get(o, "op"));
        const char *path = json_string_value(json_object_get(o, "path"));
        /* A copy: later operations may change what this one inserts, and
         * ops is borrowed. */
        json_t *value = json_deep_copy(json_object_get(o, "value"));
        const char *why = NULL;
        if (!json_is_object(o) || !op || !path)
            why = "needs op and path";
        else if (strcmp(op, "add") != 0 && strcmp(op, "remove") != 0 && strcmp(op, "replace") != 0)
            why = "op must be add, remove or replace";
        else if (strcmp(op, "remove") != 0 && !value)
            why = "needs a value";
        else if (strcmp(path, "") == 0)
            why = "cannot change the whole object";
        else
            why = apply_op(copy, op, path, value);
        json_decref(value);
        if (why) {
            pb_problem_invalid(p, "body", name, "%s%s%s", why, path && *path ? ": " : "",
                               path && *path ? path : "");
            json_decref(copy);
            return NULL;
        }
    }
    return copy;
}

int pb_ctl_config_content_patch(struct pb_app *app, const char *project_id,
                                const char *integration, const char *object,
                                const json_t *body, json_t **out, struct pb_problem *p)
{
    static const char *const keys[] = {"groupRef", "installationId", "action", "changes", NULL};
    const char *group_ref, *inst_id, *action;
    if (pb_problem_only_keys(body, "", keys, p) != 0 ||
        opt_string(body, "groupRef", "groupRef", MAX_REF_LEN, &group_ref, p) != 0 ||
        opt_string(body, "installationId", "installationId", 64, &inst_id, p) != 0 ||
        req_string(body, "action", "action", 16, &action, p) != 0)
        return -1;
    if (strcmp(action, "write") != 0 && strcmp(action, "read") != 0) {
        pb_problem_invalid(p, "body", "action", "must be write or read");
        return -1;
    }
    if (!group_ref && !inst_id) {
        pb_problem_invalid(p, "body", "groupRef", "groupRef or installationId is required");
        return -1;
    }
    json_t *integ = NULL, *inst = NULL;
    if (load_integration(app, project_id, integration, &integ, p) != 0)
        return -1;
    int ret = -1;
    json_t *newconf = NULL, *patched = NULL;
    if (!find_named(json_object_get(json_object_get(integ, action), "objects"), object)) {
        pb_problem_set(p, 404, "not-found", "Not found", NULL,
                       "'%s' is not a %s object of integration '%s'", object, action,
                       json_string_value(json_object_get(integ, "name")));
        goto out;
    }
    int rc = inst_id ? pb_store_installation_get(app->store, project_id, inst_id, &inst)
                     : pb_store_installation_find(app->store, project_id,
                                                  json_string_value(json_object_get(integ, "id")),
                                                  group_ref, &inst);
    if (rc == 0 && !json_equal(json_object_get(inst, "integrationId"), json_object_get(integ, "id")))
        rc = PB_STORE_NOTFOUND;
    if (rc != 0) {
        if (rc == PB_STORE_NOTFOUND)
            pb_problem_set(p, 404, "not-found", "Not found", NULL,
                           "no installation of '%s' for %s '%s'", integration,
                           inst_id ? "installationId" : "groupRef", inst_id ? inst_id : group_ref);
        else
            store_problem(rc, p, "installation");
        goto out;
    }
    newconf = json_deep_copy(json_object_get(inst, "config"));
    if (!json_is_object(newconf)) {
        json_decref(newconf);
        newconf = json_object();
    }
    char map[64];
    snprintf(map, sizeof map, "content.%s.objects", action);
    json_t *objects = get_path(newconf, map);
    json_t *current = json_object_get(objects, object);
    json_t *base = current ? json_incref(current) : json_object();
    patched = pb_json_patch(base, json_object_get(body, "changes"), p);
    json_decref(base);
    if (!patched)
        goto out;
    /* The object name is one key: amp.yaml allows dots in it. */
    if (!json_is_object(objects)) {
        objects = json_object();
        set_path(newconf, map, objects);
        json_decref(objects);
    }
    json_object_set(objects, object, patched);
    if (check_config(integ, newconf, "config", p) != 0)
        goto out;
    rc = pb_store_installation_update(app->store, project_id,
                                      json_string_value(json_object_get(inst, "id")),
                                      json_string_value(json_object_get(inst, "connectionId")),
                                      newconf, out);
    if (rc != 0) {
        store_problem(rc, p, "installation");
        goto out;
    }
    ret = 0;
out:
    json_decref(patched);
    json_decref(newconf);
    json_decref(inst);
    json_decref(integ);
    return ret;
}

/* ---- OAuth authorization code ------------------------------------------- */

static void callback_url(struct pb_app *app, char *out, size_t len)
{
    const char *base = app->cfg->public_url;
    size_t n = strlen(base);
    while (n > 0 && base[n - 1] == '/')
        n--;
    snprintf(out, len, "%.*s/callbacks/v1/oauth", (int)n, base);
}

int pb_ctl_oauth_connect(struct pb_app *app, const char *project_id, const json_t *body,
                         char **url_out, struct pb_problem *p)
{
    static const char *const keys[] = {"projectIdOrName", "groupRef", "consumerRef", "provider",
                                       "providerMetadata", "groupName", "consumerName", "scopes",
                                       NULL};
    const char *group_ref, *consumer_ref, *provider;
    if (pb_problem_only_keys(body, "", keys, p) != 0 ||
        req_string(body, "groupRef", "groupRef", MAX_REF_LEN, &group_ref, p) != 0 ||
        opt_string(body, "consumerRef", "consumerRef", MAX_REF_LEN, &consumer_ref, p) != 0 ||
        req_string(body, "provider", "provider", 64, &provider, p) != 0)
        return -1;
    const struct pb_provider *prov = pb_registry_find(app->reg, provider);
    if (!prov) {
        pb_problem_invalid(p, "body", "provider", "provider '%s' is not enabled in plugboard.yaml",
                           provider);
        return -1;
    }
    if (!(pb_provider_caps(prov) & PB_CAP_OAUTH2_CONNECT)) {
        pb_problem_set(p, 422, "unsupported-capability", "Unsupported capability",
                       json_pack("[{s:s, s:s, s:s}]", "in", "body", "name", "provider", "detail",
                                 "no OAuth authorization-code flow"),
                       "provider '%s' does not support oauth2_connect", provider);
        return -1;
    }
    json_t *md = json_object_get(body, "providerMetadata");
    if (check_metadata(md, p) != 0)
        return -1;
    json_t *scopes = scopes_array(json_object_get(body, "scopes"), "scopes", p);
    if (!scopes)
        return -1;
    struct pb_buf sc = {0};
    size_t i;
    json_t *v;
    json_array_foreach(scopes, i, v) {
        if (i)
            pb_buf_appends(&sc, " ");
        pb_buf_appends(&sc, json_string_value(v));
    }
    json_decref(scopes);
    char state[64], redirect[512];
    pb_random_id("st_", state, sizeof state);
    callback_url(app, redirect, sizeof redirect);
    json_t *empty = json_object();
    struct pb_oauth_params params = {.struct_size = sizeof params, .redirect_uri = redirect,
                                     .state = state, .scopes = sc.data,
                                     .metadata = md && json_is_object(md) ? md : empty};
    char url[4096];
    struct pb_error err;
    pb_error_clear(&err);
    int rc = prov->vt->authorize_url(prov->state, &params, url, sizeof url, &err);
    json_decref(empty);
    /* One vtable serves every catalog entry: the slot may exist while this
     * provider has no authorization-code flow. */
    if (rc == PB_EUNSUPPORTED) {
        pb_buf_free(&sc);
        pb_problem_set(p, 422, "unsupported-capability", "Unsupported capability",
                       json_pack("[{s:s, s:s, s:s}]", "in", "body", "name", "provider", "detail",
                                 err.message),
                       "provider '%s' does not support oauth2_connect", provider);
        return -1;
    }
    if (rc != 0) {
        pb_buf_free(&sc);
        pb_problem_set(p, 422, "provider-config", "Provider cannot authorize", NULL,
                       "provider '%s' could not build an authorize URL: %s", provider, err.message);
        return -1;
    }
    json_t *payload = json_pack("{s:s, s:s, s:s, s:s, s:o}", "groupRef", group_ref, "consumerRef",
                                consumer_ref ? consumer_ref : group_ref, "provider", provider,
                                "redirectUri", redirect, "providerMetadata",
                                md && json_is_object(md) ? json_deep_copy(md) : json_object());
    if (sc.data)
        json_object_set_new(payload, "scopes", json_string(sc.data));
    pb_buf_free(&sc);
    int src = pb_store_oauth_state_put(app->store, state, project_id, payload,
                                       pb_wall_ms() + OAUTH_STATE_TTL_MS);
    json_decref(payload);
    if (src != 0)
        return store_problem(src, p, "state");
    *url_out = pb_xstrdup(url);
    return 0;
}

/* Fills a pb_credentials view from a credentials JSON; strings borrowed. */
static void creds_view(const json_t *c, const json_t *metadata, struct pb_credentials *out)
{
    memset(out, 0, sizeof *out);
    out->struct_size = sizeof *out;
    out->auth_type = json_string_value(json_object_get(c, "auth_type"));
    out->access_token = json_string_value(json_object_get(c, "access_token"));
    out->refresh_token = json_string_value(json_object_get(c, "refresh_token"));
    out->api_key = json_string_value(json_object_get(c, "api_key"));
    out->username = json_string_value(json_object_get(c, "username"));
    out->password = json_string_value(json_object_get(c, "password"));
    out->client_id = json_string_value(json_object_get(c, "client_id"));
    out->client_secret = json_string_value(json_object_get(c, "client_secret"));
    out->scopes = json_string_value(json_object_get(c, "scopes"));
    out->metadata = metadata;
}

int pb_ctl_oauth_callback(struct pb_app *app, const char *code, const char *state,
                          const char *provider_error, json_t **out, struct pb_problem *p)
{
    if (!state || !*state) {
        pb_problem_invalid(p, "query", "state", "is required");
        return -1;
    }
    char project_id[64];
    json_t *payload = NULL;
    int rc = pb_store_oauth_state_take(app->store, state, pb_wall_ms(), project_id,
                                       sizeof project_id, &payload);
    if (rc != 0) {
        if (rc == PB_STORE_NOTFOUND)
            pb_problem_invalid(p, "query", "state",
                               "unknown, already used or expired: start the connection again");
        else
            store_problem(rc, p, "state");
        return -1;
    }
    int ret = -1;
    struct pb_http_request *req = NULL;
    struct pb_http_response *resp = NULL;
    json_t *tok = NULL, *creds_info = NULL, *md = NULL;
    const char *provider = json_string_value(json_object_get(payload, "provider"));
    const struct pb_provider *prov = pb_registry_find(app->reg, provider);
    if (provider_error && *provider_error) {
        pb_problem_set(p, 400, "authorization-denied", "Authorization denied", NULL,
                       "the provider answered: %.200s", provider_error);
        goto out;
    }
    if (!code || !*code) {
        pb_problem_invalid(p, "query", "code", "is required");
        goto out;
    }
    if (!prov || !(pb_provider_caps(prov) & PB_CAP_OAUTH2_CONNECT)) {
        pb_problem_set(p, 422, "unsupported-capability", "Unsupported capability", NULL,
                       "provider '%s' is no longer enabled for OAuth", provider ? provider : "?");
        goto out;
    }
    json_t *given_md = json_object_get(payload, "providerMetadata");
    struct pb_oauth_params params = {
        .struct_size = sizeof params,
        .redirect_uri = json_string_value(json_object_get(payload, "redirectUri")),
        .state = state,
        .scopes = json_string_value(json_object_get(payload, "scopes")),
        .metadata = given_md,
    };
    struct pb_error err;
    pb_error_clear(&err);
    req = pb_req_new();
    if (prov->vt->build_code_exchange(prov->state, &params, code, req, &err) != 0) {
        pb_problem_set(p, 502, "provider-error", "Provider error", NULL,
                       "provider '%s' could not build the code exchange: %s", provider, err.message);
        goto out;
    }
    struct pb_credentials none;
    json_t *no_creds = json_object();
    creds_view(no_creds, json_is_object(given_md) ? given_md : no_creds, &none);
    char base[1024] = "";
    /* Token endpoints are absolute URLs; the base only serves relative ones. */
    if (prov->vt->base_url(prov->state, &none, base, sizeof base, &err) != 0)
        base[0] = '\0';
    json_decref(no_creds);
    struct pb_egress_result res;
    if (pb_egress_send(app->egress, req, base[0] ? base : NULL, &resp, &res) != 0) {
        pb_problem_set(p, 502, "provider-unreachable", "Provider unreachable", NULL,
                       "the token endpoint of '%s' could not be reached: %s", provider, res.message);
        goto out;
    }
    pb_error_clear(&err);
    if (prov->vt->parse_token_response(prov->state, resp, &tok, &err) != 0 || !tok ||
        !json_is_string(json_object_get(tok, "access_token"))) {
        pb_problem_set(p, 502, "token-exchange-failed", "Token exchange failed", NULL,
                       "provider '%s' refused the authorization code (HTTP %d): %s", provider,
                       resp->status, err.message[0] ? err.message : "no access token");
        goto out;
    }
    creds_info = json_pack("{s:s, s:{s:s, s:O}}", "authType", "oauth2/authorizationCode",
                           "credentials", "auth_type", "oauth2", "access_token",
                           json_object_get(tok, "access_token"));
    json_t *creds = json_object_get(creds_info, "credentials");
    if (json_is_string(json_object_get(tok, "refresh_token")))
        json_object_set(creds, "refresh_token", json_object_get(tok, "refresh_token"));
    json_t *exp = json_object_get(tok, "expires_in");
    if (json_is_integer(exp) && json_integer_value(exp) > 0)
        json_object_set_new(creds_info, "expiresAt",
                            json_integer(pb_wall_ms() + json_integer_value(exp) * 1000));
    if (json_is_string(json_object_get(tok, "scopes"))) {
        json_t *arr = json_array();
        char *copy = pb_xstrdup(json_string_value(json_object_get(tok, "scopes")));
        char *save = NULL;
        for (char *t = strtok_r(copy, " ", &save); t; t = strtok_r(NULL, " ", &save))
            json_array_append_new(arr, json_string(t));
        free(copy);
        json_object_set_new(creds_info, "scopes", arr);
    }
    /* Metadata the token response carries (an instance URL) joins what the
     * caller gave at connect time, in the providerMetadata shape. */
    md = json_is_object(given_md) ? json_deep_copy(given_md) : json_object();
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(tok, "metadata"), k, v) {
        if (json_is_string(v))
            json_object_set_new(md, k, json_pack("{s:O}", "value", v));
    }
    ret = store_connection(app, project_id, provider,
                           json_string_value(json_object_get(payload, "groupRef")),
                           json_string_value(json_object_get(payload, "consumerRef")), creds_info,
                           md, out, p);
out:
    json_decref(md);
    json_decref(creds_info);
    json_decref(tok);
    pb_resp_free(resp);
    pb_req_free(req);
    json_decref(payload);
    return ret;
}
