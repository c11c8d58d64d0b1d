/* Fake HubSpot: OAuth token endpoint and the CRM v3 objects API
 * (also under the date-versioned prefix /crm/objects/YYYY-MM/). */
#define FAKE_INTERNAL
#include "fake.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define HS_MAX_BATCH 100
#define HS_AUTH_MSG                                                                                \
    "Authentication credentials not found. This API supports OAuth 2.0 authentication and you " \
    "can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"

/* ---- names ----------------------------------------------------------------- */

static const struct {
    const char *alias, *name;
} hs_aliases[] = {
    {"0-1", "contacts"},   {"contact", "contacts"},   {"0-2", "companies"},
    {"company", "companies"}, {"0-3", "deals"},     {"deal", "deals"},
    {"0-5", "tickets"},    {"ticket", "tickets"},     {"0-7", "products"},
    {"product", "products"}, {"0-8", "line_items"}, {"line_item", "line_items"},
    {"0-14", "quotes"},    {"quote", "quotes"},       {"0-4", "calls"},
    {"call", "calls"},     {"0-46", "notes"},         {"note", "notes"},
    {"0-27", "tasks"},     {"task", "tasks"},         {"0-49", "emails"},
    {"email", "emails"},   {"0-47", "meetings"},      {"meeting", "meetings"},
};

static const char *hs_norm(const char *obj)
{
    for (size_t i = 0; i < sizeof hs_aliases / sizeof hs_aliases[0]; i++)
        if (strcasecmp(obj, hs_aliases[i].alias) == 0 || strcasecmp(obj, hs_aliases[i].name) == 0)
            return hs_aliases[i].name;
    return obj;
}

/* "contacts" -> "contact", "companies" -> "company" (into buf) */
static const char *hs_singular(const char *obj, char *buf, size_t n)
{
    size_t l = strlen(obj);
    if (l > 3 && strcmp(obj + l - 3, "ies") == 0)
        snprintf(buf, n, "%.*sy", (int)(l - 3), obj);
    else if (l > 1 && obj[l - 1] == 's')
        snprintf(buf, n, "%.*s", (int)(l - 1), obj);
    else
        snprintf(buf, n, "%s", obj);
    return buf;
}

static void hs_upper_singular(const char *obj, char *buf, size_t n)
{
    hs_singular(obj, buf, n);
    for (char *p = buf; *p; p++)
        *p = (char)toupper((unsigned char)*p);
}

/* HUBSPOT_DEFINED association type id -> target object type */
static const struct {
    int id;
    const char *to;
    int unlabeled;
} hs_assoc_types[] = {
    {1, "companies", 0},  {279, "companies", 1}, {2, "contacts", 0}, {280, "contacts", 1},
    {3, "contacts", 0},   {4, "deals", 0},       {5, "companies", 0}, {341, "companies", 1},
    {6, "deals", 0},      {342, "deals", 1},     {15, "tickets", 0}, {16, "contacts", 0},
    {25, "tickets", 0},   {26, "companies", 0},  {27, "tickets", 0}, {28, "deals", 0},
    {449, "contacts", 0}, {450, "companies", 0},
};

/* ---- responses -------------------------------------------------------------- */

struct hs_ctx {
    struct fake_conn *c;
    struct fake_out *o;
    char corr[37];
};

static void hs_begin(struct hs_ctx *h, struct fake_conn *c, struct fake_out *o, int api)
{
    h->c = c;
    h->o = o;
    fake_correlation_id(c->f, h->corr);
    o->ctype = "application/json;charset=utf-8";
    fake_out_header(o, "X-HubSpot-Correlation-Id", h->corr);
    if (api) {
        fake_out_header(o, "X-HubSpot-RateLimit-Interval-Milliseconds", "10000");
        fake_out_header(o, "X-HubSpot-RateLimit-Max", "100");
    }
}

static json_t *hs_err_json(struct hs_ctx *h, const char *msg, const char *category)
{
    return json_pack("{s:s, s:s, s:s, s:s}", "status", "error", "message", msg, "correlationId",
                     h->corr, "category", category);
}

static void hs_error(struct hs_ctx *h, int status, const char *msg, const char *category)
{
    fake_out_json(h->o, status, hs_err_json(h, msg, category));
}

static void hs_remaining(struct hs_ctx *h, const char *v)
{
    fake_out_header(h->o, "X-HubSpot-RateLimit-Remaining", v);
}

void fake_hubspot_error(struct fake_conn *c, int status, struct fake_out *o)
{
    struct hs_ctx h;
    hs_begin(&h, c, o, status == 429);
    switch (status) {
    case 429:
        hs_remaining(&h, "0");
        fake_out_json(o, status,
                      json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "status", "error", "message",
                                "You have reached your ten_secondly_rolling limit.", "errorType",
                                "RATE_LIMIT", "correlationId", h.corr, "policyName",
                                "TEN_SECONDLY_ROLLING", "category", "RATE_LIMITS"));
        return;
    case 400: hs_error(&h, status, "Invalid input", "VALIDATION_ERROR"); return;
    case 401: hs_error(&h, status, HS_AUTH_MSG, "INVALID_AUTHENTICATION"); return;
    case 403:
        hs_error(&h, status,
                 "This app hasn't been granted all required scopes to make this call. Read more "
                 "about required scopes here: https://developers.hubspot.com/scopes.",
                 "MISSING_SCOPES");
        return;
    case 404: hs_error(&h, status, "resource not found", "OBJECT_NOT_FOUND"); return;
    case 409: hs_error(&h, status, "Conflict", "CONFLICT"); return;
    case 502:
    case 503:
    case 504: hs_error(&h, status, "The service is temporarily unavailable", "SERVICE_UNAVAILABLE"); return;
    default:
        if (status >= 500)
            hs_error(&h, status, "internal error", "INTERNAL_ERROR");
        else if (status >= 400)
            hs_error(&h, status, "error", "VALIDATION_ERROR");
        else
            fake_out_json(o, status,
                          json_pack("{s:s, s:[], s:s}", "status", "COMPLETE", "results",
                                    "correlationId", h.corr));
        return;
    }
}

/* ---- OAuth ------------------------------------------------------------------ */

static void hs_token(struct hs_ctx *h)
{
    struct fake_conn *c = h->c;
    if (strcasecmp(c->req.method, "POST") != 0) {
        hs_error(h, 405, "HTTP 405 Method Not Allowed", "VALIDATION_ERROR");
        return;
    }
    struct fake_grant g;
    fake_oauth_grant(c, &g);
    const char *st = NULL, *msg = NULL;
    switch (g.result) {
    case FAKE_GRANT_OK:
        fake_out_json(h->o, 200,
                      json_pack("{s:s, s:s, s:s, s:i}", "token_type", "bearer", "refresh_token",
                                g.refresh, "access_token", g.access, "expires_in", g.expires_in));
        return;
    case FAKE_GRANT_BAD_CLIENT_ID: st = "BAD_CLIENT_ID"; msg = "missing or unknown client id"; break;
    case FAKE_GRANT_BAD_SECRET: st = "BAD_CLIENT_SECRET"; msg = "missing or invalid client secret"; break;
    case FAKE_GRANT_BAD_CODE: st = "BAD_AUTH_CODE"; msg = "missing or unknown auth code"; break;
    case FAKE_GRANT_BAD_REFRESH: st = "BAD_REFRESH_TOKEN"; msg = "missing or unknown refresh token"; break;
    case FAKE_GRANT_BAD_TYPE: st = "BAD_GRANT_TYPE"; msg = "missing or invalid grant type"; break;
    }
    fake_out_json(h->o, 400,
                  json_pack("{s:s, s:s, s:s}", "status", st, "message", msg, "correlationId", h->corr));
}

/* ---- properties ------------------------------------------------------------- */

/* HubSpot keeps every property value as a string. NULL for a non-scalar. */
static json_t *hs_prop_value(json_t *v)
{
    if (json_is_string(v))
        return json_incref(v);
    if (json_is_null(v))
        return json_string("");
    if (json_is_true(v))
        return json_string("true");
    if (json_is_false(v))
        return json_string("false");
    if (json_is_number(v)) {
        char *s = json_dumps(v, JSON_ENCODE_ANY);
        json_t *r = json_string(s);
        free(s);
        return r;
    }
    return NULL;
}

/* NULL when every value is acceptable, else the invalid property names. */
static json_t *hs_bad_props(json_t *props)
{
    json_t *bad = NULL;
    const char *k;
    json_t *v;
    json_object_foreach(props, k, v)
    {
        int ok = !(json_is_object(v) || json_is_array(v)) &&
                 !(json_is_string(v) && strcmp(json_string_value(v), "INVALID") == 0);
        if (!ok) {
            if (!bad)
                bad = json_array();
            json_array_append_new(bad, json_string(k));
        }
    }
    return bad;
}

static char *hs_validation_message(json_t *names)
{
    json_t *list = json_array();
    size_t i;
    json_t *n;
    json_array_foreach(names, i, n)
    {
        char m[512];
        snprintf(m, sizeof m, "INVALID was not a valid value for property \"%s\"", json_string_value(n));
        json_array_append_new(list, json_pack("{s:b, s:s, s:s, s:s, s:s}", "isValid", 0, "message", m,
                                              "error", "INVALID_OPTION", "name", json_string_value(n),
                                              "localizedErrorMessage", m));
    }
    char *d = json_dumps(list, JSON_COMPACT);
    json_decref(list);
    size_t len = strlen(d) + 64;
    char *msg = malloc(len);
    snprintf(msg, len, "Property values were not valid: %s", d);
    free(d);
    return msg;
}

/* A batch error entry for invalid properties. */
static json_t *hs_validation_error(json_t *bad, const char *id, json_t *trace)
{
    char *msg = hs_validation_message(bad);
    json_t *ctx = json_object();
    json_object_set(ctx, "propertyName", bad);
    if (id)
        json_object_set_new(ctx, "ids", json_pack("[s]", id));
    if (json_is_string(trace))
        json_object_set_new(ctx, "objectWriteTraceId", json_pack("[O]", trace));
    json_t *e = json_pack("{s:s, s:s, s:s, s:o, s:{}}", "status", "error", "category",
                          "VALIDATION_ERROR", "message", msg, "context", ctx, "links");
    free(msg);
    return e;
}

static void hs_apply_props(json_t *rec, json_t *props, const char *now)
{
    json_t *p = json_object_get(rec, "properties");
    const char *k;
    json_t *v;
    json_object_foreach(props, k, v)
    {
        if (strcmp(k, "hs_object_id") == 0 || strcmp(k, "createdate") == 0)
            continue;
        json_object_set_new(p, k, hs_prop_value(v));
    }
    json_object_set_new(p, "hs_lastmodifieddate", json_string(now));
    json_object_set_new(rec, "updatedAt", json_string(now));
}

/* Normalizes association inputs; NULL when malformed. New reference. */
static json_t *hs_norm_assoc(json_t *assoc)
{
    if (!json_is_array(assoc))
        return NULL;
    json_t *out = json_array();
    size_t i;
    json_t *a;
    json_array_foreach(assoc, i, a)
    {
        json_t *to = json_object_get(a, "to");
        json_t *id = json_object_get(to, "id");
        json_t *types = json_object_get(a, "types");
        char idb[64];
        if (json_is_string(id))
            snprintf(idb, sizeof idb, "%s", json_string_value(id));
        else if (json_is_integer(id))
            snprintf(idb, sizeof idb, "%" JSON_INTEGER_FORMAT, json_integer_value(id));
        else
            goto bad;
        if (!json_is_array(types) || json_array_size(types) == 0)
            goto bad;
        size_t j;
        json_t *t;
        json_array_foreach(types, j, t)
        {
            const char *cat = json_string_value(json_object_get(t, "associationCategory"));
            if (!cat || (strcmp(cat, "HUBSPOT_DEFINED") && strcmp(cat, "USER_DEFINED") &&
                         strcmp(cat, "INTEGRATOR_DEFINED")))
                goto bad;
            if (!json_is_integer(json_object_get(t, "associationTypeId")))
                goto bad;
        }
        json_array_append_new(out, json_pack("{s:{s:s}, s:O}", "to", "id", idb, "types", types));
    }
    return out;
bad:
    json_decref(out);
    return NULL;
}

static json_t *hs_new_record(struct fake *f, json_t *store, json_t *props, json_t *assoc)
{
    char id[32], now[40];
    snprintf(id, sizeof id, "%lu", fake_next_id(f));
    fake_iso_now(now, 1);
    json_t *rec = json_pack("{s:s, s:{s:s, s:s, s:s}, s:s, s:s, s:b}", "id", id, "properties",
                            "createdate", now, "hs_lastmodifieddate", now, "hs_object_id", id,
                            "createdAt", now, "updatedAt", now, "archived", 0);
    hs_apply_props(rec, props, now);
    if (assoc && json_array_size(assoc))
        json_object_set(rec, "associations", assoc);
    json_object_set_new(store, id, rec);
    return rec;
}

/* ---- lookups ---------------------------------------------------------------- */

static json_t *hs_find(json_t *store, const char *id, const char *id_prop)
{
    if (!id)
        return NULL;
    if (!id_prop || !*id_prop || strcmp(id_prop, "hs_object_id") == 0)
        return json_object_get(store, id);
    const char *k;
    json_t *rec;
    json_object_foreach(store, k, rec)
    {
        const char *v = json_string_value(json_object_get(json_object_get(rec, "properties"), id_prop));
        if (v && (strcmp(v, id) == 0 || (strcmp(id_prop, "email") == 0 && strcasecmp(v, id) == 0)))
            return rec;
    }
    return NULL;
}

/* The object type that owns `id`, or NULL. */
static const char *hs_type_of(struct fake *f, const char *id, int type_id)
{
    static const char *const known[] = {"contacts", "companies", "deals", "tickets", "products",
                                        "line_items", "quotes", "calls", "notes", "tasks",
                                        "emails", "meetings"};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        json_t *s = fake_store(f, known[i], 0);
        if (s && json_object_get(s, id))
            return known[i];
    }
    for (size_t i = 0; i < sizeof hs_assoc_types / sizeof hs_assoc_types[0]; i++)
        if (hs_assoc_types[i].id == type_id)
            return hs_assoc_types[i].to;
    return NULL;
}

static int hs_unlabeled(int type_id)
{
    for (size_t i = 0; i < sizeof hs_assoc_types / sizeof hs_assoc_types[0]; i++)
        if (hs_assoc_types[i].id == type_id)
            return hs_assoc_types[i].unlabeled;
    return 0;
}

struct list_ctx {
    json_t *list;
    const char *key;
};

static enum MHD_Result arg_collect(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
    (void)kind;
    struct list_ctx *l = cls;
    if (strcmp(key, l->key) != 0 || !value)
        return MHD_YES;
    const char *p = value;
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        if (n)
            json_array_append_new(l->list, json_stringn(p, n));
        if (!comma)
            break;
        p = comma + 1;
    }
    return MHD_YES;
}

/* All values of a (repeatable, comma-separated) query argument; NULL when absent. */
static json_t *hs_arg_list(struct fake_conn *c, const char *key)
{
    if (!fake_arg(c, key))
        return NULL;
    struct list_ctx l = {json_array(), key};
    MHD_get_connection_values(c->conn, MHD_GET_ARGUMENT_KIND, arg_collect, &l);
    return l.list;
}

/* The record as the API answers it. props: property filter (array) or NULL;
 * assoc: association object types (array) or NULL. */
static json_t *hs_public(struct fake *f, const char *obj, json_t *rec, json_t *props, json_t *assoc)
{
    json_t *out = json_pack("{s:O}", "id", json_object_get(rec, "id"));
    json_t *all = json_object_get(rec, "properties");
    if (props) {
        json_t *p = json_object();
        static const char *const always[] = {"createdate", "hs_lastmodifieddate", "hs_object_id"};
        for (size_t i = 0; i < 3; i++)
            json_object_set(p, always[i], json_object_get(all, always[i]));
        size_t i;
        json_t *n;
        json_array_foreach(props, i, n)
        {
            const char *k = json_string_value(n);
            json_t *v = k ? json_object_get(all, k) : NULL;
            if (k)
                json_object_set_new(p, k, v ? json_incref(v) : json_null());
        }
        json_object_set_new(out, "properties", p);
    } else {
        json_object_set_new(out, "properties", json_deep_copy(all));
    }
    json_object_set(out, "createdAt", json_object_get(rec, "createdAt"));
    json_object_set(out, "updatedAt", json_object_get(rec, "updatedAt"));
    json_object_set(out, "archived", json_object_get(rec, "archived"));
    if (assoc && json_array_size(assoc)) {
        json_t *res = json_object();
        char from[64], to[64];
        hs_singular(obj, from, sizeof from);
        size_t i;
        json_t *want;
        json_array_foreach(assoc, i, want)
        {
            const char *wname = hs_norm(json_string_value(want) ? json_string_value(want) : "");
            json_t *list = json_array();
            size_t j;
            json_t *a;
            json_array_foreach(json_object_get(rec, "associations"), j, a)
            {
                const char *toid = json_string_value(json_object_get(json_object_get(a, "to"), "id"));
                size_t k;
                json_t *t;
                json_array_foreach(json_object_get(a, "types"), k, t)
                {
                    int tid = (int)json_integer_value(json_object_get(t, "associationTypeId"));
                    const char *tt = hs_type_of(f, toid, tid);
                    if (!tt || strcmp(tt, wname) != 0)
                        continue;
                    char type[160];
                    hs_singular(tt, to, sizeof to);
                    const char *cat = json_string_value(json_object_get(t, "associationCategory"));
                    if (cat && strcmp(cat, "HUBSPOT_DEFINED") != 0)
                        snprintf(type, sizeof type, "%d", tid);
                    else
                        snprintf(type, sizeof type, "%s_to_%s%s", from, to,
                                 hs_unlabeled(tid) ? "_unlabeled" : "");
                    json_array_append_new(list, json_pack("{s:s, s:s}", "id", toid, "type", type));
                }
            }
            if (json_array_size(list))
                json_object_set_new(res, wname, json_pack("{s:o}", "results", list));
            else
                json_decref(list);
        }
        if (json_object_size(res))
            json_object_set_new(out, "associations", res);
        else
            json_decref(res);
    }
    return out;
}

/* ---- single-object calls ------------------------------------------------------ */

static json_t *hs_body(struct hs_ctx *h, int required)
{
    struct fake_conn *c = h->c;
    if (!c->req.body_len) {
        if (required)
            hs_error(h, 400, "Invalid input JSON on line 1, column 1: No content to map due to end-of-input",
                     "VALIDATION_ERROR");
        return NULL;
    }
    json_error_t err;
    memset(&err, 0, sizeof err);
    json_t *b = json_loadb(c->req.body, c->req.body_len, 0, &err);
    if (!b || !json_is_object(b)) {
        char m[400];
        snprintf(m, sizeof m, "Invalid input JSON on line %d, column %d: %s", err.line, err.column,
                 b ? "expected an object" : err.text);
        hs_error(h, 400, m, "VALIDATION_ERROR");
        json_decref(b);
        return NULL;
    }
    return b;
}

static void hs_not_found(struct hs_ctx *h)
{
    hs_error(h, 404, "resource not found", "OBJECT_NOT_FOUND");
}

static void hs_create(struct hs_ctx *h, const char *obj)
{
    json_t *b = hs_body(h, 1);
    if (!b)
        return;
    json_t *props = json_object_get(b, "properties");
    json_t *assoc_in = json_object_get(b, "associations");
    json_t *assoc = NULL;
    if (props && !json_is_object(props)) {
        hs_error(h, 400, "Invalid input JSON: properties must be an object", "VALIDATION_ERROR");
        goto out;
    }
    if (assoc_in && !json_is_null(assoc_in) && !(assoc = hs_norm_assoc(assoc_in))) {
        hs_error(h, 400, "Invalid input JSON: invalid associations", "VALIDATION_ERROR");
        goto out;
    }
    json_t *bad = props ? hs_bad_props(props) : NULL;
    if (bad) {
        char *m = hs_validation_message(bad);
        hs_error(h, 400, m, "VALIDATION_ERROR");
        free(m);
        json_decref(bad);
        goto out;
    }
    struct fake *f = h->c->f;
    json_t *empty = json_object();
    fake_lock(f);
    json_t *rec = hs_new_record(f, fake_store(f, obj, 1), props ? props : empty, assoc);
    json_t *pub = hs_public(f, obj, rec, NULL, NULL);
    fake_unlock(f);
    json_decref(empty);
    hs_remaining(h, "99");
    fake_out_json(h->o, 201, pub);
out:
    json_decref(assoc);
    json_decref(b);
}

static void hs_list(struct hs_ctx *h, const char *obj)
{
    struct fake_conn *c = h->c;
    struct fake *f = c->f;
    const char *ls = fake_arg(c, "limit");
    const char *as = fake_arg(c, "after");
    long limit = ls ? strtol(ls, NULL, 10) : 10;
    long after = as ? strtol(as, NULL, 10) : 0;
    if (limit <= 0 || limit > 100)
        limit = limit <= 0 ? 10 : 100;
    if (after < 0)
        after = 0;
    json_t *props = hs_arg_list(c, "properties");
    json_t *assoc = hs_arg_list(c, "associations");
    json_t *results = json_array();
    long idx = 0, more = -1;
    fake_lock(f);
    json_t *store = fake_store(f, obj, 0);
    const char *k;
    json_t *rec;
    json_object_foreach(store, k, rec)
    {
        if (idx >= after) {
            if ((long)json_array_size(results) == limit) {
                more = idx;
                break;
            }
            json_array_append_new(results, hs_public(f, obj, rec, props, assoc));
        }
        idx++;
    }
    fake_unlock(f);
    json_t *out = json_pack("{s:o}", "results", results);
    if (more >= 0) {
        char a[32], link[256];
        snprintf(a, sizeof a, "%ld", more);
        snprintf(link, sizeof link, "%s%s?after=%s", fake_base_url(f), c->req.path, a);
        json_object_set_new(out, "paging", json_pack("{s:{s:s, s:s}}", "next", "after", a, "link", link));
    }
    json_decref(props);
    json_decref(assoc);
    hs_remaining(h, "99");
    fake_out_json(h->o, 200, out);
}

static void hs_one(struct hs_ctx *h, const char *obj, const char *id)
{
    struct fake_conn *c = h->c;
    struct fake *f = c->f;
    const char *m = c->req.method;
    const char *id_prop = fake_arg(c, "idProperty");
    if (strcasecmp(m, "GET") == 0) {
        json_t *props = hs_arg_list(c, "properties");
        json_t *assoc = hs_arg_list(c, "associations");
        fake_lock(f);
        json_t *rec = hs_find(fake_store(f, obj, 0), id, id_prop);
        json_t *pub = rec ? hs_public(f, obj, rec, props, assoc) : NULL;
        fake_unlock(f);
        json_decref(props);
        json_decref(assoc);
        if (!pub) {
            hs_not_found(h);
            return;
        }
        hs_remaining(h, "99");
        fake_out_json(h->o, 200, pub);
    } else if (strcasecmp(m, "PATCH") == 0) {
        json_t *b = hs_body(h, 1);
        if (!b)
            return;
        json_t *props = json_object_get(b, "properties");
        if (!json_is_object(props)) {
            hs_error(h, 400, "Invalid input JSON: properties must be an object", "VALIDATION_ERROR");
            json_decref(b);
            return;
        }
        json_t *bad = hs_bad_props(props);
        if (bad) {
            char *msg = hs_validation_message(bad);
            hs_error(h, 400, msg, "VALIDATION_ERROR");
            free(msg);
            json_decref(bad);
            json_decref(b);
            return;
        }
        char now[40];
        fake_iso_now(now, 1);
        fake_lock(f);
        json_t *rec = hs_find(fake_store(f, obj, 0), id, id_prop);
        json_t *pub = NULL;
        if (rec) {
            hs_apply_props(rec, props, now);
            pub = hs_public(f, obj, rec, NULL, NULL);
        }
        fake_unlock(f);
        json_decref(b);
        if (!pub) {
            hs_not_found(h);
            return;
        }
        hs_remaining(h, "99");
        fake_out_json(h->o, 200, pub);
    } else if (strcasecmp(m, "DELETE") == 0) {
        fake_lock(f);
        json_t *store = fake_store(f, obj, 0);
        json_t *rec = hs_find(store, id, id_prop);
        int found = rec != NULL;
        if (rec)
            json_object_del(store, json_string_value(json_object_get(rec, "id")));
        fake_unlock(f);
        if (!found) {
            hs_not_found(h);
            return;
        }
        hs_remaining(h, "99");
        h->o->status = 204;
    } else {
        hs_error(h, 405, "HTTP 405 Method Not Allowed", "VALIDATION_ERROR");
    }
}

/* ---- search ------------------------------------------------------------------ */

static int hs_filter_match(json_t *rec, json_t *flt)
{
    json_t *props = json_object_get(rec, "properties");
    const char *name = json_string_value(json_object_get(flt, "propertyName"));
    const char *op = json_string_value(json_object_get(flt, "operator"));
    if (!name || !op)
        return 0;
    const char *have = json_string_value(json_object_get(props, name));
    if (strcmp(name, "id") == 0)
        have = json_string_value(json_object_get(rec, "id"));
    json_t *vj = json_object_get(flt, "value");
    json_t *vs = vj ? hs_prop_value(vj) : NULL;
    const char *want = json_string_value(vs);
    int r = 0;
    if (strcmp(op, "HAS_PROPERTY") == 0)
        r = have && *have;
    else if (strcmp(op, "NOT_HAS_PROPERTY") == 0)
        r = !have || !*have;
    else if (strcmp(op, "EQ") == 0)
        r = have && want && strcasecmp(have, want) == 0;
    else if (strcmp(op, "NEQ") == 0)
        r = !(have && want && strcasecmp(have, want) == 0);
    else if (strcmp(op, "CONTAINS_TOKEN") == 0)
        r = have && want && strcasestr(have, want[0] == '*' ? want + 1 : want) != NULL;
    else if (strcmp(op, "IN") == 0 || strcmp(op, "NOT_IN") == 0) {
        size_t i;
        json_t *x;
        json_array_foreach(json_object_get(flt, "values"), i, x)
        {
            json_t *xs = hs_prop_value(x);
            if (have && xs && strcasecmp(have, json_string_value(xs)) == 0)
                r = 1;
            json_decref(xs);
        }
        if (strcmp(op, "NOT_IN") == 0)
            r = !r;
    }
    json_decref(vs);
    return r;
}

static void hs_search(struct hs_ctx *h, const char *obj)
{
    json_t *b = hs_body(h, 0);
    if (!b && h->o->status)
        return;
    struct fake *f = h->c->f;
    json_t *groups = json_object_get(b, "filterGroups");
    json_t *props = json_object_get(b, "properties");
    long limit = json_is_integer(json_object_get(b, "limit")) ? (long)json_integer_value(json_object_get(b, "limit")) : 10;
    const char *as = json_string_value(json_object_get(b, "after"));
    long after = as ? strtol(as, NULL, 10) : (long)json_integer_value(json_object_get(b, "after"));
    if (limit <= 0 || limit > 200)
        limit = 10;
    json_t *results = json_array();
    long total = 0;
    fake_lock(f);
    const char *k;
    json_t *rec;
    json_object_foreach(fake_store(f, obj, 0), k, rec)
    {
        int ok = !json_array_size(groups);
        size_t i;
        json_t *g;
        json_array_foreach(groups, i, g)
        {
            int all = 1;
            size_t j;
            json_t *flt;
            json_array_foreach(json_object_get(g, "filters"), j, flt)
            {
                if (!hs_filter_match(rec, flt))
                    all = 0;
            }
            if (all)
                ok = 1;
        }
        if (!ok)
            continue;
        if (total >= after && (long)json_array_size(results) < limit)
            json_array_append_new(results, hs_public(f, obj, rec, json_is_array(props) ? props : NULL, NULL));
        total++;
    }
    fake_unlock(f);
    json_t *out = json_pack("{s:I, s:o}", "total", (json_int_t)total, "results", results);
    if (after + (long)json_array_size(results) < total) {
        char a[32];
        snprintf(a, sizeof a, "%ld", after + (long)json_array_size(results));
        json_object_set_new(out, "paging", json_pack("{s:{s:s}}", "next", "after", a));
    }
    json_decref(b);
    hs_remaining(h, "99");
    fake_out_json(h->o, 200, out);
}

/* ---- batch ---------------------------------------------------------------------- */

static const char *hs_input_id(json_t *in, char *buf, size_t n)
{
    json_t *id = json_object_get(in, "id");
    if (json_is_string(id))
        return json_string_value(id);
    if (json_is_integer(id)) {
        snprintf(buf, n, "%" JSON_INTEGER_FORMAT, json_integer_value(id));
        return buf;
    }
    return NULL;
}

static void hs_batch(struct hs_ctx *h, const char *obj, const char *op)
{
    struct fake_conn *c = h->c;
    struct fake *f = c->f;
    if (strcasecmp(c->req.method, "POST") != 0) {
        hs_error(h, 405, "HTTP 405 Method Not Allowed", "VALIDATION_ERROR");
        return;
    }
    int is_create = strcmp(op, "create") == 0, is_update = strcmp(op, "update") == 0,
        is_read = strcmp(op, "read") == 0, is_archive = strcmp(op, "archive") == 0,
        is_upsert = strcmp(op, "upsert") == 0;
    if (!is_create && !is_update && !is_read && !is_archive && !is_upsert) {
        hs_not_found(h);
        return;
    }
    json_t *b = hs_body(h, 1);
    if (!b)
        return;
    json_t *inputs = json_object_get(b, "inputs");
    if (!json_is_array(inputs)) {
        hs_error(h, 400, "Invalid input JSON: inputs must be an array", "VALIDATION_ERROR");
        json_decref(b);
        return;
    }
    size_t n = json_array_size(inputs);
    if (n == 0 || n > HS_MAX_BATCH) {
        char m[200];
        snprintf(m, sizeof m, "Invalid input JSON: inputs size must be between 1 and %d (was %zu)",
                 HS_MAX_BATCH, n);
        hs_error(h, 400, m, "VALIDATION_ERROR");
        json_decref(b);
        return;
    }
    /* shape checks that fail the whole call */
    size_t i;
    json_t *in;
    json_array_foreach(inputs, i, in)
    {
        char idb[32];
        json_t *props = json_object_get(in, "properties");
        json_t *assoc = json_object_get(in, "associations");
        json_t *na = NULL;
        const char *why = NULL;
        if (!json_is_object(in))
            why = "each input must be an object";
        else if ((is_create || is_update || is_upsert) && props && !json_is_object(props))
            why = "properties must be an object";
        else if ((is_update || is_read || is_archive || is_upsert) && !hs_input_id(in, idb, sizeof idb))
            why = "id is required";
        else if (is_create && assoc && !json_is_null(assoc) && !(na = hs_norm_assoc(assoc)))
            why = "invalid associations";
        json_decref(na);
        if (why) {
            char m[200];
            snprintf(m, sizeof m, "Invalid input JSON: inputs[%zu]: %s", i, why);
            hs_error(h, 400, m, "VALIDATION_ERROR");
            json_decref(b);
            return;
        }
    }

    char started[40], now[40], idb[32];
    fake_iso_now(started, 1);
    json_t *results = json_array(), *errors = json_array(), *missing = json_array();
    json_t *empty = json_object();
    const char *body_id_prop = json_string_value(json_object_get(b, "idProperty"));
    json_t *read_props = json_object_get(b, "properties");
    fake_lock(f);
    json_t *store = fake_store(f, obj, 1);
    json_array_foreach(inputs, i, in)
    {
        json_t *props = json_object_get(in, "properties");
        if (!props)
            props = empty;
        json_t *trace = json_object_get(in, "objectWriteTraceId");
        const char *id = hs_input_id(in, idb, sizeof idb);
        const char *id_prop = json_string_value(json_object_get(in, "idProperty"));
        if (!id_prop)
            id_prop = body_id_prop;
        if (is_archive) {
            json_t *rec = hs_find(store, id, id_prop);
            if (rec)
                json_object_del(store, json_string_value(json_object_get(rec, "id")));
            continue;
        }
        if (is_read) {
            json_t *rec = hs_find(store, id, id_prop);
            if (rec)
                json_array_append_new(results, hs_public(f, obj, rec, json_is_array(read_props) ? read_props : NULL, NULL));
            else
                json_array_append_new(missing, json_string(id));
            continue;
        }
        json_t *bad = hs_bad_props(props);
        if (bad) {
            json_array_append_new(errors, hs_validation_error(bad, is_create ? NULL : id, trace));
            json_decref(bad);
            continue;
        }
        json_t *rec = NULL, *pub = NULL;
        int created = 0;
        if (is_create) {
            json_t *assoc = json_object_get(in, "associations");
            json_t *na = assoc && !json_is_null(assoc) ? hs_norm_assoc(assoc) : NULL;
            rec = hs_new_record(f, store, props, na);
            json_decref(na);
            created = 1;
        } else {
            rec = hs_find(store, id, id_prop);
            if (!rec && is_upsert) {
                json_t *p2 = json_deep_copy(props);
                if (id_prop && strcmp(id_prop, "hs_object_id") != 0)
                    json_object_set_new(p2, id_prop, json_string(id));
                rec = hs_new_record(f, store, p2, NULL);
                json_decref(p2);
                created = 1;
            } else if (!rec) {
                json_array_append_new(missing, json_string(id));
                continue;
            } else {
                fake_iso_now(now, 1);
                hs_apply_props(rec, props, now);
            }
        }
        pub = hs_public(f, obj, rec, NULL, NULL);
        if (is_upsert)
            json_object_set_new(pub, "new", json_boolean(created));
        if (json_is_string(trace))
            json_object_set(pub, "objectWriteTraceId", trace);
        json_array_append_new(results, pub);
    }
    fake_unlock(f);
    json_decref(empty);
    json_decref(b);
    hs_remaining(h, "99");
    if (is_archive) {
        json_decref(results);
        json_decref(errors);
        json_decref(missing);
        h->o->status = 204;
        return;
    }
    if (json_array_size(missing)) {
        char up[64], m[256];
        hs_upper_singular(obj, up, sizeof up);
        snprintf(m, sizeof m,
                 "Could not get some %s objects, they may be deleted or not exist. Check that ids are valid.",
                 up);
        json_array_append_new(errors, json_pack("{s:s, s:s, s:s, s:{s:O}, s:{}}", "status", "error",
                                                "category", "OBJECT_NOT_FOUND", "message", m, "context",
                                                "ids", missing, "links"));
    }
    json_decref(missing);
    fake_iso_now(now, 1);
    json_t *out = json_pack("{s:s, s:o}", "status", "COMPLETE", "results", results);
    size_t ne = json_array_size(errors);
    if (ne) {
        json_object_set_new(out, "numErrors", json_integer((json_int_t)ne));
        json_object_set(out, "errors", errors);
    }
    json_decref(errors);
    json_object_set_new(out, "startedAt", json_string(started));
    json_object_set_new(out, "completedAt", json_string(now));
    fake_out_json(h->o, ne ? 207 : is_create ? 201 : 200, out);
}

/* ---- routing --------------------------------------------------------------------- */

/* The part after the objects prefix, or NULL. */
static const char *hs_crm_rest(const char *path)
{
    static const char v3[] = "/crm/v3/objects/";
    if (strncmp(path, v3, sizeof v3 - 1) == 0)
        return path + sizeof v3 - 1;
    static const char dated[] = "/crm/objects/";
    if (strncmp(path, dated, sizeof dated - 1) == 0) {
        const char *d = path + sizeof dated - 1;
        /* YYYY-MM/ */
        if (strlen(d) > 8 && isdigit((unsigned char)d[0]) && isdigit((unsigned char)d[1]) &&
            isdigit((unsigned char)d[2]) && isdigit((unsigned char)d[3]) && d[4] == '-' &&
            isdigit((unsigned char)d[5]) && isdigit((unsigned char)d[6]) && d[7] == '/')
            return d + 8;
    }
    return NULL;
}

void fake_hubspot_handle(struct fake_conn *c, struct fake_out *o)
{
    struct hs_ctx h;
    const char *path = c->req.path;
    if (strcmp(path, "/oauth/v1/token") == 0) {
        hs_begin(&h, c, o, 0);
        hs_token(&h);
        return;
    }
    hs_begin(&h, c, o, 1);
    const char *rest = hs_crm_rest(path);
    if (!rest) {
        hs_not_found(&h);
        return;
    }
    switch (fake_auth(c)) {
    case FAKE_AUTH_OK: break;
    case FAKE_AUTH_EXPIRED:
        hs_error(&h, 401, "The OAuth token used to make this call expired 0 hour(s) ago.",
                 "EXPIRED_AUTHENTICATION");
        return;
    default: hs_error(&h, 401, HS_AUTH_MSG, "INVALID_AUTHENTICATION"); return;
    }
    /* split rest into up to 3 decoded segments */
    char *seg[4] = {0};
    int nseg = 0;
    const char *p = rest;
    while (*p && nseg < 4) {
        const char *sl = strchr(p, '/');
        size_t n = sl ? (size_t)(sl - p) : strlen(p);
        if (n)
            seg[nseg++] = fake_urldecode(p, n, 0);
        if (!sl)
            break;
        p = sl + 1;
    }
    const char *m = c->req.method;
    if (nseg == 0 || nseg == 4) {
        hs_not_found(&h);
    } else {
        const char *obj = hs_norm(seg[0]);
        if (nseg == 1) {
            if (strcasecmp(m, "POST") == 0)
                hs_create(&h, obj);
            else if (strcasecmp(m, "GET") == 0)
                hs_list(&h, obj);
            else
                hs_error(&h, 405, "HTTP 405 Method Not Allowed", "VALIDATION_ERROR");
        } else if (nseg == 2 && strcmp(seg[1], "search") == 0 && strcasecmp(m, "POST") == 0) {
            hs_search(&h, obj);
        } else if (nseg == 2) {
            hs_one(&h, obj, seg[1]);
        } else if (strcmp(seg[1], "batch") == 0) {
            hs_batch(&h, obj, seg[2]);
        } else {
            hs_not_found(&h);
        }
    }
    for (int i = 0; i < nseg; i++)
        free(seg[i]);
}

/* ---- assertions --------------------------------------------------------------------- */

json_t *fake_hubspot_record(struct fake *f, const char *obj, const char *id)
{
    fake_lock(f);
    json_t *s = fake_store(f, hs_norm(obj), 0);
    json_t *r = s ? json_deep_copy(json_object_get(s, id)) : NULL;
    fake_unlock(f);
    return r;
}

size_t fake_hubspot_count(struct fake *f, const char *obj)
{
    fake_lock(f);
    json_t *s = fake_store(f, hs_norm(obj), 0);
    size_t n = s ? json_object_size(s) : 0;
    fake_unlock(f);
    return n;
}
