/* Fake Salesforce: OAuth token endpoint, sObject REST and composite sObject
 * collections under /services/data/vNN.N/. */
#define FAKE_INTERNAL
#include "fake.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define SF_MAX_COLLECTION 200
#define SF_CT "application/json;charset=UTF-8"
#define SF_ROLLBACK_MSG \
    "Record rolled back because not all records were valid and the request was using AllOrNone header"

/* ---- ids ------------------------------------------------------------------- */

static const struct {
    const char *obj, *prefix;
} sf_prefixes[] = {
    {"Account", "001"},     {"Note", "002"},        {"Contact", "003"},      {"User", "005"},
    {"Opportunity", "006"}, {"Lead", "00Q"},        {"Task", "00T"},         {"Event", "00U"},
    {"Attachment", "00P"},  {"Case", "500"},        {"Campaign", "701"},     {"Product2", "01t"},
    {"Pricebook2", "01s"},  {"Order", "801"},       {"Contract", "800"},     {"ContentVersion", "068"},
    {"CampaignMember", "00v"}, {"OpportunityLineItem", "00k"},
};

static const char b62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

static void sf_prefix(const char *obj, char out[4])
{
    for (size_t i = 0; i < sizeof sf_prefixes / sizeof sf_prefixes[0]; i++)
        if (strcasecmp(obj, sf_prefixes[i].obj) == 0) {
            memcpy(out, sf_prefixes[i].prefix, 4);
            return;
        }
    unsigned h = 5381;
    for (const char *p = obj; *p; p++)
        h = h * 33 + (unsigned char)tolower((unsigned char)*p);
    out[0] = 'a';
    out[1] = b62[(h / 62) % 10];
    out[2] = b62[h % 62];
    out[3] = '\0';
}

/* 15-char id + the 3-char case-safety suffix Salesforce appends. */
static void sf_make_id(struct fake *f, const char *obj, char out[19])
{
    char pre[4];
    sf_prefix(obj, pre);
    unsigned long n = fake_next_id(f);
    memcpy(out, pre, 3);
    out[3] = '5';
    out[4] = 'g';
    out[5] = '0';
    for (int i = 14; i >= 6; i--) {
        out[i] = b62[n % 62];
        n /= 62;
    }
    static const char map[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
    for (int k = 0; k < 3; k++) {
        int bits = 0;
        for (int j = 0; j < 5; j++) {
            char ch = out[k * 5 + j];
            if (ch >= 'A' && ch <= 'Z')
                bits |= 1 << j;
        }
        out[15 + k] = map[bits];
    }
    out[18] = '\0';
}

static char *b64encode(const unsigned char *d, size_t n)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc((n + 2) / 3 * 4 + 1);
    size_t j = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)d[i] << 16;
        if (i + 1 < n)
            v |= (unsigned)d[i + 1] << 8;
        if (i + 2 < n)
            v |= d[i + 2];
        out[j++] = tbl[(v >> 18) & 63];
        out[j++] = tbl[(v >> 12) & 63];
        out[j++] = i + 1 < n ? tbl[(v >> 6) & 63] : '=';
        out[j++] = i + 2 < n ? tbl[v & 63] : '=';
    }
    out[j] = '\0';
    return out;
}

/* ---- responses --------------------------------------------------------------- */

static void sf_begin(struct fake_out *o)
{
    o->ctype = SF_CT;
    fake_out_header(o, "Sforce-Limit-Info", "api-usage=1/15000");
}

static json_t *sf_err1(const char *msg, const char *code)
{
    return json_pack("[{s:s, s:s}]", "message", msg, "errorCode", code);
}

static void sf_error(struct fake_out *o, int status, const char *msg, const char *code)
{
    fake_out_json(o, status, sf_err1(msg, code));
}

static void sf_not_found(struct fake_out *o)
{
    fake_out_json(o, 404, json_pack("[{s:s, s:s}]", "errorCode", "NOT_FOUND", "message",
                                    "The requested resource does not exist"));
}

static void sf_unauthorized(struct fake_out *o)
{
    fake_out_header(o, "WWW-Authenticate", "Token");
    sf_error(o, 401, "Session expired or invalid", "INVALID_SESSION_ID");
}

void fake_salesforce_error(struct fake_conn *c, int status, struct fake_out *o)
{
    (void)c;
    sf_begin(o);
    switch (status) {
    case 400: sf_error(o, status, "The request could not be processed", "INVALID_FIELD"); return;
    case 401: sf_unauthorized(o); return;
    case 403: sf_error(o, status, "TotalRequests Limit exceeded.", "REQUEST_LIMIT_EXCEEDED"); return;
    case 404: sf_not_found(o); return;
    case 429:
        sf_error(o, status, "ConcurrentPerOrgLongTxn Limit exceeded.", "REQUEST_LIMIT_EXCEEDED");
        return;
    case 503: sf_error(o, status, "Server temporarily unavailable.", "SERVER_UNAVAILABLE"); return;
    default:
        if (status >= 400)
            sf_error(o, status,
                     "An unexpected error occurred. Please include this ErrorId if you contact "
                     "support: 1234567890-12345 (-1234567890)",
                     "UNKNOWN_EXCEPTION");
        else
            fake_out_json(o, status, json_pack("{s:i, s:b, s:[]}", "totalSize", 0, "done", 1, "records"));
        return;
    }
}

/* ---- OAuth ----------------------------------------------------------------------- */

static void sf_token(struct fake_conn *c, struct fake_out *o)
{
    if (strcasecmp(c->req.method, "POST") != 0) {
        fake_out_json(o, 405, json_pack("{s:s, s:s}", "error", "invalid_request", "error_description",
                                        "must use HTTP POST"));
        return;
    }
    struct fake_grant g;
    fake_oauth_grant(c, &g);
    const char *err = NULL, *desc = NULL;
    switch (g.result) {
    case FAKE_GRANT_OK: break;
    case FAKE_GRANT_BAD_CLIENT_ID: err = "invalid_client_id"; desc = "client identifier invalid"; break;
    case FAKE_GRANT_BAD_SECRET: err = "invalid_client"; desc = "invalid client credentials"; break;
    case FAKE_GRANT_BAD_CODE: err = "invalid_grant"; desc = "invalid authorization code"; break;
    case FAKE_GRANT_BAD_REFRESH: err = "invalid_grant"; desc = "expired access/refresh token"; break;
    case FAKE_GRANT_BAD_TYPE: err = "unsupported_grant_type"; desc = "grant type not supported"; break;
    }
    if (err) {
        fake_out_json(o, 400, json_pack("{s:s, s:s}", "error", err, "error_description", desc));
        return;
    }
    struct fake *f = c->f;
    const struct fake_priv_opts *op = fake_opts_of(f);
    const char *inst = op->instance_url ? op->instance_url : fake_base_url(f);
    char id[512], issued[32];
    snprintf(id, sizeof id, "%s/id/00D5g000004AbcdEAC/0055g000003XyZ1AAK", fake_base_url(f));
    snprintf(issued, sizeof issued, "%lld", fake_epoch_ms());
    unsigned char sig[32];
    unsigned long long hsh = 0xcbf29ce484222325ULL;
    const char *parts[] = {id, issued, g.access};
    for (int k = 0; k < 3; k++)
        for (const char *p = parts[k]; *p; p++) {
            hsh ^= (unsigned char)*p;
            hsh *= 0x100000001b3ULL;
        }
    for (int i = 0; i < 32; i++) {
        hsh ^= (unsigned)i;
        hsh *= 0x100000001b3ULL;
        sig[i] = (unsigned char)(hsh >> 24);
    }
    char *sigs = b64encode(sig, sizeof sig);
    json_t *out = json_pack("{s:s}", "access_token", g.access);
    if (g.authorization_code)
        json_object_set_new(out, "refresh_token", json_string(g.refresh));
    json_object_set_new(out, "signature", json_string(sigs));
    json_object_set_new(out, "scope", json_string("refresh_token api"));
    json_object_set_new(out, "instance_url", json_string(inst));
    json_object_set_new(out, "id", json_string(id));
    json_object_set_new(out, "token_type", json_string("Bearer"));
    json_object_set_new(out, "issued_at", json_string(issued));
    free(sigs);
    fake_out_json(o, 200, out);
}

/* ---- records ---------------------------------------------------------------------- */

/* NULL when the fields are acceptable; else the invalid field names. */
static json_t *sf_bad_fields(json_t *rec)
{
    json_t *bad = NULL;
    const char *k;
    json_t *v;
    json_object_foreach(rec, k, v)
    {
        if (strcmp(k, "attributes") == 0)
            continue;
        if (json_is_string(v) && strcmp(json_string_value(v), "INVALID") == 0) {
            if (!bad)
                bad = json_array();
            json_array_append_new(bad, json_string(k));
        }
    }
    return bad;
}

static json_t *sf_validation_errors(json_t *bad, int collection)
{
    json_t *errs = json_array();
    size_t i;
    json_t *n;
    json_array_foreach(bad, i, n)
    {
        char m[300];
        snprintf(m, sizeof m, "%s: value INVALID is not allowed", json_string_value(n));
        json_array_append_new(errs, json_pack("{s:s, s:s, s:[O]}", "message", m,
                                              collection ? "statusCode" : "errorCode",
                                              "FIELD_CUSTOM_VALIDATION_EXCEPTION", "fields", n));
    }
    return errs;
}

static json_t *sf_coll_error(const char *code, const char *msg)
{
    return json_pack("{s:s, s:s, s:[]}", "statusCode", code, "message", msg, "fields");
}

static int sf_skip_field(const char *k)
{
    return strcmp(k, "attributes") == 0 || strcasecmp(k, "Id") == 0 || strcmp(k, "CreatedDate") == 0 ||
           strcmp(k, "LastModifiedDate") == 0 || strcmp(k, "SystemModstamp") == 0;
}

static void sf_apply(json_t *rec, json_t *fields)
{
    char now[40];
    fake_iso_now(now, 0);
    const char *k;
    json_t *v;
    json_object_foreach(fields, k, v)
    {
        if (!sf_skip_field(k))
            json_object_set(rec, k, v);
    }
    json_object_set_new(rec, "LastModifiedDate", json_string(now));
    json_object_set_new(rec, "SystemModstamp", json_string(now));
}

/* Lock held. Returns the new id (static buffer in caller). */
static void sf_insert(struct fake *f, const char *ver, const char *obj, json_t *fields, char id[19])
{
    sf_make_id(f, obj, id);
    char url[256], now[40];
    snprintf(url, sizeof url, "/services/data/%s/sobjects/%s/%s", ver, obj, id);
    fake_iso_now(now, 0);
    json_t *rec = json_pack("{s:{s:s, s:s}, s:s, s:s}", "attributes", "type", obj, "url", url, "Id", id,
                            "CreatedDate", now);
    sf_apply(rec, fields);
    json_object_set_new(fake_store(f, obj, 1), id, rec);
}

/* Lock held: the record for an 18-char id or its 15-char form, or NULL. */
static json_t *sf_get(json_t *store, const char *id)
{
    json_t *r = id ? json_object_get(store, id) : NULL;
    if (r || !id || strlen(id) != 15)
        return r;
    const char *k;
    json_t *v;
    json_object_foreach(store, k, v)
    {
        if (strncmp(k, id, 15) == 0)
            return v;
    }
    return NULL;
}

/* Lock held. The object type whose store holds `id`, or NULL. */
static const char *sf_find_any(struct fake *f, const char *id)
{
    const char *k;
    json_t *st;
    json_object_foreach(fake_store_root(f), k, st)
    {
        if (sf_get(st, id))
            return k;
    }
    return NULL;
}

/* ---- request context ----------------------------------------------------------- */

struct sf_ctx {
    struct fake_conn *c;
    struct fake_out *o;
    struct fake *f;
    char ver[16];
};

static json_t *sf_body(struct sf_ctx *s, int want_object)
{
    struct fake_conn *c = s->c;
    json_error_t err;
    memset(&err, 0, sizeof err);
    json_t *b = c->req.body_len ? json_loadb(c->req.body, c->req.body_len, 0, &err) : NULL;
    if (!b || (want_object && !json_is_object(b))) {
        char m[300];
        if (!b)
            snprintf(m, sizeof m, "%s at [line:%d, column:%d]",
                     c->req.body_len ? err.text : "No content to map due to end-of-input", err.line,
                     err.column);
        else
            snprintf(m, sizeof m, "Expected an object at [line:1, column:1]");
        sf_error(s->o, 400, m, "JSON_PARSER_ERROR");
        json_decref(b);
        return NULL;
    }
    return b;
}

static json_t *sf_public(json_t *rec, const char *fields)
{
    if (!fields || !*fields)
        return json_deep_copy(rec);
    json_t *out = json_pack("{s:O}", "attributes", json_object_get(rec, "attributes"));
    const char *p = fields;
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)(n < 255 ? n : 255), p);
        if (*name) {
            json_t *v = json_object_get(rec, name);
            json_object_set_new(out, name, v ? json_incref(v) : json_null());
        }
        if (!comma)
            break;
        p = comma + 1;
    }
    return out;
}

static void sf_create(struct sf_ctx *s, const char *obj)
{
    json_t *b = sf_body(s, 1);
    if (!b)
        return;
    json_t *bad = sf_bad_fields(b);
    if (bad) {
        fake_out_json(s->o, 400, sf_validation_errors(bad, 0));
        json_decref(bad);
        json_decref(b);
        return;
    }
    char id[19];
    fake_lock(s->f);
    sf_insert(s->f, s->ver, obj, b, id);
    fake_unlock(s->f);
    json_decref(b);
    char loc[256];
    snprintf(loc, sizeof loc, "/services/data/%s/sobjects/%s/%s", s->ver, obj, id);
    fake_out_header(s->o, "Location", loc);
    fake_out_json(s->o, 201, json_pack("{s:s, s:b, s:[]}", "id", id, "success", 1, "errors"));
}

static void sf_one(struct sf_ctx *s, const char *obj, const char *id)
{
    const char *m = s->c->req.method;
    struct fake *f = s->f;
    if (strcasecmp(m, "GET") == 0 || strcasecmp(m, "HEAD") == 0) {
        fake_lock(f);
        json_t *rec = sf_get(fake_store(f, obj, 0), id);
        json_t *pub = rec ? sf_public(rec, fake_arg(s->c, "fields")) : NULL;
        fake_unlock(f);
        if (!pub)
            sf_not_found(s->o);
        else
            fake_out_json(s->o, 200, pub);
    } else if (strcasecmp(m, "PATCH") == 0) {
        json_t *b = sf_body(s, 1);
        if (!b)
            return;
        json_t *bad = sf_bad_fields(b);
        if (bad) {
            fake_out_json(s->o, 400, sf_validation_errors(bad, 0));
            json_decref(bad);
            json_decref(b);
            return;
        }
        fake_lock(f);
        json_t *rec = sf_get(fake_store(f, obj, 0), id);
        if (rec)
            sf_apply(rec, b);
        fake_unlock(f);
        json_decref(b);
        if (!rec)
            sf_not_found(s->o);
        else
            s->o->status = 204;
    } else if (strcasecmp(m, "DELETE") == 0) {
        fake_lock(f);
        json_t *st = fake_store(f, obj, 0);
        json_t *rec = sf_get(st, id);
        int found = rec != NULL;
        if (found)
            json_object_del(st, json_string_value(json_object_get(rec, "Id")));
        fake_unlock(f);
        if (!found)
            sf_not_found(s->o);
        else
            s->o->status = 204;
    } else {
        sf_error(s->o, 405, "HTTP Method not allowed. Allowed are GET,PATCH,DELETE",
                 "METHOD_NOT_ALLOWED");
    }
}

/* /sobjects/{obj}/{field}/{value}: external id access and upsert */
static void sf_by_field(struct sf_ctx *s, const char *obj, const char *field, const char *value)
{
    struct fake *f = s->f;
    const char *m = s->c->req.method;
    json_t *b = NULL;
    if (strcasecmp(m, "PATCH") == 0) {
        b = sf_body(s, 1);
        if (!b)
            return;
        json_t *bad = sf_bad_fields(b);
        if (bad) {
            fake_out_json(s->o, 400, sf_validation_errors(bad, 0));
            json_decref(bad);
            json_decref(b);
            return;
        }
    } else if (strcasecmp(m, "GET") != 0 && strcasecmp(m, "DELETE") != 0) {
        sf_error(s->o, 405, "HTTP Method not allowed. Allowed are GET,PATCH,DELETE", "METHOD_NOT_ALLOWED");
        return;
    }
    fake_lock(f);
    json_t *st = fake_store(f, obj, strcasecmp(m, "PATCH") == 0);
    json_t *hits = json_array();
    const char *k;
    json_t *rec;
    json_object_foreach(st, k, rec)
    {
        json_t *v = json_object_get(rec, field);
        if (json_is_string(v) && strcmp(json_string_value(v), value) == 0)
            json_array_append(hits, rec);
    }
    size_t nh = json_array_size(hits);
    if (nh > 1) {
        json_t *urls = json_array();
        size_t i;
        json_t *r;
        json_array_foreach(hits, i, r)
        {
            json_array_append(urls, json_object_get(json_object_get(r, "attributes"), "url"));
        }
        fake_out_json(s->o, 300, urls);
    } else if (strcasecmp(m, "GET") == 0) {
        if (nh)
            fake_out_json(s->o, 200, json_deep_copy(json_array_get(hits, 0)));
        else
            sf_not_found(s->o);
    } else if (strcasecmp(m, "DELETE") == 0) {
        if (nh) {
            json_object_del(st, json_string_value(json_object_get(json_array_get(hits, 0), "Id")));
            s->o->status = 204;
        } else {
            sf_not_found(s->o);
        }
    } else if (nh) {
        json_t *r = json_array_get(hits, 0);
        sf_apply(r, b);
        fake_out_json(s->o, 200, json_pack("{s:O, s:b, s:[], s:b}", "id", json_object_get(r, "Id"), "success", 1,
                                           "errors", "created", 0));
    } else {
        char id[19];
        json_t *fields = json_deep_copy(b);
        json_object_set_new(fields, field, json_string(value));
        sf_insert(f, s->ver, obj, fields, id);
        json_decref(fields);
        fake_out_json(s->o, 201, json_pack("{s:s, s:b, s:[], s:b}", "id", id, "success", 1, "errors",
                                           "created", 1));
    }
    fake_unlock(f);
    json_decref(hits);
    json_decref(b);
}

/* ---- composite sObject collections ------------------------------------------------- */

static void sf_collection(struct sf_ctx *s)
{
    struct fake *f = s->f;
    const char *m = s->c->req.method;
    int is_create = strcasecmp(m, "POST") == 0, is_update = strcasecmp(m, "PATCH") == 0,
        is_delete = strcasecmp(m, "DELETE") == 0;
    if (!is_create && !is_update && !is_delete) {
        sf_error(s->o, 405, "HTTP Method not allowed. Allowed are POST,PATCH,DELETE", "METHOD_NOT_ALLOWED");
        return;
    }
    json_t *b = NULL, *records = NULL;
    int all_or_none = 0;
    if (is_delete) {
        const char *ids = fake_arg(s->c, "ids");
        const char *aon = fake_arg(s->c, "allOrNone");
        all_or_none = aon && strcasecmp(aon, "true") == 0;
        records = json_array();
        for (const char *p = ids ? ids : ""; *p;) {
            const char *comma = strchr(p, ',');
            size_t n = comma ? (size_t)(comma - p) : strlen(p);
            if (n)
                json_array_append_new(records, json_pack("{s:s%}", "id", p, n));
            if (!comma)
                break;
            p = comma + 1;
        }
        if (!json_array_size(records)) {
            json_decref(records);
            sf_error(s->o, 400, "Required field is missing: ids", "MISSING_ARGUMENT");
            return;
        }
    } else {
        b = sf_body(s, 1);
        if (!b)
            return;
        records = json_incref(json_object_get(b, "records"));
        all_or_none = json_is_true(json_object_get(b, "allOrNone"));
        if (!json_is_array(records)) {
            json_decref(records);
            json_decref(b);
            sf_error(s->o, 400, "Required field is missing: records", "MISSING_ARGUMENT");
            return;
        }
    }
    size_t n = json_array_size(records);
    if (n > SF_MAX_COLLECTION) {
        json_decref(records);
        json_decref(b);
        sf_error(s->o, 400, "record limit reached. cannot submit more than 200 records into this call",
                 "EXCEEDED_ID_LIMIT");
        return;
    }

    fake_lock(f);
    /* pass 1: find each record's errors (and target) */
    json_t *errs = json_array();   /* per record: array of errors or null */
    json_t *targets = json_array(); /* per record: object store name or null */
    int any_error = 0;
    size_t i;
    json_t *r;
    json_array_foreach(records, i, r)
    {
        json_t *e = NULL;
        const char *type = json_string_value(json_object_get(json_object_get(r, "attributes"), "type"));
        const char *id = json_string_value(json_object_get(r, "id"));
        if (!id)
            id = json_string_value(json_object_get(r, "Id"));
        char found_type[128] = "";
        if (!json_is_object(r)) {
            e = json_pack("[o]", sf_coll_error("INVALID_FIELD", "Each record must be an object"));
        } else if (is_create) {
            if (!type)
                e = json_pack("[o]", sf_coll_error("INVALID_TYPE", "Must send a concrete entity type."));
            else if (id)
                e = json_pack("[o]", sf_coll_error("INVALID_FIELD", "cannot specify Id in an insert call"));
            else
                snprintf(found_type, sizeof found_type, "%s", type);
        } else {
            if (!id) {
                e = json_pack("[o]", sf_coll_error("MISSING_ARGUMENT", "Id not specified in an update call"));
            } else {
                /* find the record: by the given type, else in every object store */
                const char *on = type ? (sf_get(fake_store(f, type, 0), id) ? type : NULL)
                                      : sf_find_any(f, id);
                if (on)
                    snprintf(found_type, sizeof found_type, "%s", on);
                if (!found_type[0])
                    e = json_pack("[o]", is_delete ? sf_coll_error("ENTITY_IS_DELETED", "entity is deleted")
                                                   : sf_coll_error("INVALID_CROSS_REFERENCE_KEY",
                                                                   "invalid cross reference id"));
            }
        }
        if (!e && !is_delete) {
            json_t *bad = sf_bad_fields(r);
            if (bad) {
                e = sf_validation_errors(bad, 1);
                json_decref(bad);
            }
        }
        if (e)
            any_error = 1;
        json_array_append_new(errs, e ? e : json_null());
        json_array_append_new(targets, found_type[0] ? json_string(found_type) : json_null());
    }
    /* pass 2: apply, unless allOrNone failed */
    int rollback = all_or_none && any_error;
    json_t *out = json_array();
    json_array_foreach(records, i, r)
    {
        json_t *e = json_array_get(errs, i);
        const char *type = json_string_value(json_array_get(targets, i));
        const char *id = json_string_value(json_object_get(r, "id"));
        if (!id)
            id = json_string_value(json_object_get(r, "Id"));
        json_t *res = json_object();
        if (!json_is_null(e) || rollback) {
            if (id && !is_create)
                json_object_set_new(res, "id", json_string(id));
            json_object_set_new(res, "success", json_false());
            if (!json_is_null(e))
                json_object_set(res, "errors", e);
            else
                json_object_set_new(res, "errors",
                                    json_pack("[o]", sf_coll_error("ALL_OR_NONE_OPERATION_ROLLED_BACK",
                                                                   SF_ROLLBACK_MSG)));
        } else {
            char newid[19] = "";
            json_t *cur = NULL;
            if (is_create) {
                sf_insert(f, s->ver, type, r, newid);
            } else {
                json_t *st = fake_store(f, type, 0);
                cur = sf_get(st, id);
                if (cur) {
                    snprintf(newid, sizeof newid, "%s", json_string_value(json_object_get(cur, "Id")));
                    if (is_update)
                        sf_apply(cur, r);
                    else
                        json_object_del(st, newid);
                }
            }
            if (is_create || cur) {
                json_object_set_new(res, "id", json_string(newid));
                json_object_set_new(res, "success", json_true());
                json_object_set_new(res, "errors", json_array());
            } else { /* the same id twice in one call */
                json_object_set_new(res, "id", json_string(id));
                json_object_set_new(res, "success", json_false());
                json_object_set_new(res, "errors",
                                    json_pack("[o]", sf_coll_error("ENTITY_IS_DELETED", "entity is deleted")));
            }
        }
        json_array_append_new(out, res);
    }
    fake_unlock(f);
    json_decref(errs);
    json_decref(targets);
    json_decref(records);
    json_decref(b);
    fake_out_json(s->o, 200, out);
}

/* ---- routing ----------------------------------------------------------------------- */

/* "/services/data/vNN.N" + rest; NULL when not a data path. */
static const char *sf_data_rest(const char *path, char ver[16])
{
    static const char pre[] = "/services/data/";
    if (strncmp(path, pre, sizeof pre - 1) != 0)
        return NULL;
    const char *p = path + sizeof pre - 1;
    if (*p != 'v')
        return NULL;
    const char *q = p + 1;
    if (!isdigit((unsigned char)*q))
        return NULL;
    while (isdigit((unsigned char)*q))
        q++;
    if (*q != '.')
        return NULL;
    q++;
    if (!isdigit((unsigned char)*q))
        return NULL;
    while (isdigit((unsigned char)*q))
        q++;
    if (*q && *q != '/')
        return NULL;
    if ((size_t)(q - p) >= 16)
        return NULL;
    memcpy(ver, p, (size_t)(q - p));
    ver[q - p] = '\0';
    return q;
}

void fake_salesforce_handle(struct fake_conn *c, struct fake_out *o)
{
    const char *path = c->req.path;
    sf_begin(o);
    if (strcmp(path, "/services/oauth2/token") == 0) {
        sf_token(c, o);
        return;
    }
    if (strcmp(path, "/services/data") == 0 || strcmp(path, "/services/data/") == 0) {
        fake_out_json(o, 200, json_pack("[{s:s, s:s, s:s}]", "label", "Spring '25", "url",
                                        "/services/data/v63.0", "version", "63.0"));
        return;
    }
    struct sf_ctx s = {c, o, c->f, ""};
    const char *rest = sf_data_rest(path, s.ver);
    if (!rest) {
        sf_not_found(o);
        return;
    }
    if (fake_auth(c) != FAKE_AUTH_OK) {
        sf_unauthorized(o);
        return;
    }
    char *seg[5] = {0};
    int nseg = 0;
    const char *p = *rest == '/' ? rest + 1 : rest;
    while (*p && nseg < 5) {
        const char *sl = strchr(p, '/');
        size_t n = sl ? (size_t)(sl - p) : strlen(p);
        if (n)
            seg[nseg++] = fake_urldecode(p, n, 0);
        if (!sl)
            break;
        p = sl + 1;
    }
    const char *m = c->req.method;
    if (nseg == 0) {
        char b1[128], b2[128], b3[128];
        snprintf(b1, sizeof b1, "/services/data/%s/sobjects", s.ver);
        snprintf(b2, sizeof b2, "/services/data/%s/composite", s.ver);
        snprintf(b3, sizeof b3, "/services/data/%s/limits", s.ver);
        fake_out_json(o, 200, json_pack("{s:s, s:s, s:s}", "sobjects", b1, "composite", b2, "limits", b3));
    } else if (strcmp(seg[0], "limits") == 0 && nseg == 1) {
        fake_out_json(o, 200, json_pack("{s:{s:i, s:i}}", "DailyApiRequests", "Max", 15000, "Remaining", 14999));
    } else if (strcmp(seg[0], "sobjects") == 0 && nseg == 2) {
        if (strcasecmp(m, "POST") == 0) {
            sf_create(&s, seg[1]);
        } else if (strcasecmp(m, "GET") == 0) {
            char pre[4], url[256];
            sf_prefix(seg[1], pre);
            snprintf(url, sizeof url, "/services/data/%s/sobjects/%s", s.ver, seg[1]);
            fake_out_json(o, 200, json_pack("{s:{s:s, s:s, s:s, s:{s:s}}, s:[]}", "objectDescribe", "name",
                                            seg[1], "label", seg[1], "keyPrefix", pre, "urls", "sobject",
                                            url, "recentItems"));
        } else {
            sf_error(o, 405, "HTTP Method not allowed. Allowed are GET,POST", "METHOD_NOT_ALLOWED");
        }
    } else if (strcmp(seg[0], "sobjects") == 0 && nseg == 3) {
        sf_one(&s, seg[1], seg[2]);
    } else if (strcmp(seg[0], "sobjects") == 0 && nseg == 4) {
        sf_by_field(&s, seg[1], seg[2], seg[3]);
    } else if (strcmp(seg[0], "composite") == 0 && nseg == 2 && strcmp(seg[1], "sobjects") == 0) {
        sf_collection(&s);
    } else {
        sf_not_found(o);
    }
    for (int i = 0; i < nseg; i++)
        free(seg[i]);
}
