#include "write.h"
#include "app.h"
#include "cache.h"
#include "control.h"
#include "egress.h"
#include "http.h"
#include "loader.h"
#include "log.h"
#include "secrets.h"
#include "store.h"
#include "tokens.h"
#include "util.h"
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BATCH_LIMIT 100
/* A claim must outlive the longest run of one operation: a token refresh,
 * then for the read of current values (writeOnUpdate: ifEmpty) and for the
 * write each: the call, a refresh after a 401 and the call again; every
 * call bounded by the egress timeout, plus the store's own work. */
#define CLAIM_CALLS 7
#define CLAIM_MARGIN_MS (5 * 1000)
#define MAX_BACKOFF_MS (5 * 60 * 1000)

/* ---- validation --------------------------------------------------------- */

/* A record id: a non-empty string or an integer, as text into out. */
static int record_id(const json_t *record, char *out, size_t len)
{
    json_t *id = json_object_get(record, "id");
    if (json_is_string(id) && json_string_length(id) > 0 && json_string_length(id) < len) {
        snprintf(out, len, "%s", json_string_value(id));
        return 0;
    }
    if (json_is_integer(id)) {
        snprintf(out, len, "%lld", (long long)json_integer_value(id));
        return 0;
    }
    return -1;
}

static int int_in(const json_t *obj, const char *key, const char *path, int lo, int hi,
                  int required, int *out, struct pb_problem *p)
{
    json_t *v = json_object_get(obj, key);
    if (!v) {
        if (required) {
            pb_problem_invalid(p, "body", path, "is required");
            return -1;
        }
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        pb_problem_invalid(p, "body", path, "must be a whole number from %d to %d", lo, hi);
        return -1;
    }
    *out = (int)json_integer_value(v);
    return 0;
}

static int check_associations(const json_t *a, const char *path, struct pb_problem *p)
{
    if (!json_is_array(a)) {
        pb_problem_invalid(p, "body", path, "must be an array of {to: {id}, types: [...]}");
        return -1;
    }
    size_t i;
    json_t *e;
    json_array_foreach(a, i, e) {
        char sub[160];
        snprintf(sub, sizeof sub, "%s[%zu]", path, i);
        json_t *to = json_object_get(e, "to"), *types = json_object_get(e, "types");
        char id[128];
        if (!json_is_object(e) || !json_is_object(to) || record_id(to, id, sizeof id) != 0 ||
            !json_is_array(types) || json_array_size(types) == 0) {
            pb_problem_invalid(p, "body", sub, "needs to.id and a non-empty types array");
            return -1;
        }
        size_t j;
        json_t *t;
        json_array_foreach(types, j, t) {
            if (!json_is_string(json_object_get(t, "associationCategory")) ||
                !json_is_integer(json_object_get(t, "associationTypeId"))) {
                snprintf(sub, sizeof sub, "%s[%zu].types[%zu]", path, i, j);
                pb_problem_invalid(p, "body", sub,
                                   "needs associationCategory (string) and associationTypeId "
                                   "(integer)");
                return -1;
            }
        }
    }
    return 0;
}

static void unsupported(struct pb_problem *p, const char *provider, const char *feature,
                        const char *field)
{
    json_t *issues = json_pack("[{s:s, s:s, s:s}]", "in", "body", "name", field, "detail",
                               "not supported by this provider");
    pb_problem_set(p, 422, "unsupported-capability", "Unsupported capability", issues,
                   "provider '%s' does not support %s", provider, feature);
}

/* ---- field settings and mappings --------------------------------------- */

/* Manifest read fields of `object`: mapToName -> fieldName (may be null). */
static json_t *mappable_fields(const json_t *integration, const char *object)
{
    json_t *out = json_object();
    size_t i;
    json_t *o;
    json_array_foreach(json_object_get(json_object_get(integration, "read"), "objects"), i, o) {
        const char *name = json_string_value(json_object_get(o, "objectName"));
        if (!name || strcmp(name, object) != 0)
            continue;
        static const char *const lists[] = {"requiredFields", "optionalFields"};
        for (size_t l = 0; l < 2; l++) {
            size_t j;
            json_t *f;
            json_array_foreach(json_object_get(o, lists[l]), j, f) {
                json_t *to = json_object_get(f, "mapToName");
                if (json_is_string(to))
                    json_object_set(out, json_string_value(to),
                                    json_object_get(f, "fieldName") ? json_object_get(f, "fieldName")
                                                                    : json_null());
            }
        }
    }
    return out;
}

/* inheritMapping: record keys are read-side mapToName names; they become
 * the provider fields this installation mapped them to; a mappable name
 * left unmapped is dropped. Other keys pass unchanged. */
static json_t *apply_mapping(const json_t *integration, const json_t *installation,
                             const char *object, const json_t *record)
{
    json_t *mappable = mappable_fields(integration, object);
    json_t *chosen = json_object_get(
        json_object_get(json_object_get(json_object_get(json_object_get(json_object_get(
                                                            installation, "config"),
                                                        "content"),
                                                    "read"),
                                    "objects"),
                        object),
        "selectedFieldMappings");
    json_t *out = json_object();
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)record, k, v) {
        json_t *sel = json_object_get(chosen, k);
        json_t *fixed = json_object_get(mappable, k);
        if (json_is_string(sel))
            json_object_set(out, json_string_value(sel), v);
        else if (json_is_string(fixed))
            json_object_set(out, json_string_value(fixed), v);
        else if (!fixed && strcmp(k, "id") != 0)
            json_object_set(out, k, v);
        else if (strcmp(k, "id") == 0)
            json_object_set(out, k, v);
        /* else: a mapped name this installation did not map: dropped */
    }
    json_decref(mappable);
    return out;
}

/* Defaults fill missing fields; never drops a field for that write type. */
static json_t *apply_field_settings(const json_t *object_cfg, enum pb_write_type type,
                                    const json_t *record)
{
    json_t *out = json_deep_copy(record);
    const char *field;
    json_t *s;
    json_object_foreach(json_object_get(object_cfg, "selectedFieldSettings"), field, s) {
        const char *woc = json_string_value(json_object_get(s, "writeOnCreate"));
        const char *wou = json_string_value(json_object_get(s, "writeOnUpdate"));
        int never = (type == PB_WRITE_CREATE && woc && strcmp(woc, "never") == 0) ||
                    (type == PB_WRITE_UPDATE && wou && strcmp(wou, "never") == 0);
        if (never) {
            json_object_del(out, field);
            continue;
        }
        json_t *d = json_object_get(s, "default");
        json_t *dv = json_object_get(d, "stringValue");
        if (!dv)
            dv = json_object_get(d, "integerValue");
        if (!dv)
            dv = json_object_get(d, "booleanValue");
        /* Updates take defaults only where the settings ask for it; an
         * ifEmpty default is kept later only where the provider has none. */
        int applies = type == PB_WRITE_CREATE ||
                      (wou && (strcmp(wou, "always") == 0 || strcmp(wou, "ifEmpty") == 0));
        if (dv && applies && !json_object_get(out, field))
            json_object_set(out, field, dv);
    }
    return out;
}

/* ---- executing one write ---------------------------------------------- */

enum outcome { OUT_DONE, OUT_RETRY, OUT_FAIL };

struct exec_result {
    json_t *result;      /* single: {success,...}; batch: array */
    int64_t retry_at;
    char error[512];
    unsigned status;     /* problem status for OUT_FAIL / OUT_RETRY */
    char slug[48];
};

static void exec_fail(struct exec_result *x, unsigned status, const char *slug, const char *fmt,
                      ...) PB_PRINTF(4, 5);
static void exec_fail(struct exec_result *x, unsigned status, const char *slug, const char *fmt,
                      ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(x->error, sizeof x->error, fmt, ap);
    va_end(ap);
    x->status = status;
    snprintf(x->slug, sizeof x->slug, "%s", slug);
}

static enum pb_write_type type_of(const char *t)
{
    if (strcmp(t, "create") == 0)
        return PB_WRITE_CREATE;
    if (strcmp(t, "update") == 0)
        return PB_WRITE_UPDATE;
    return PB_WRITE_DELETE;
}

/* Builds the provider request for a normalized write request. */
static int build(const struct pb_provider *prov, const json_t *req, struct pb_http_request *hr,
                 struct pb_error *err)
{
    const char *kind = json_string_value(json_object_get(req, "kind"));
    const char *object = json_string_value(json_object_get(req, "object"));
    enum pb_write_type type = type_of(json_string_value(json_object_get(req, "type")));
    int rc;
    if (strcmp(kind, "batch") == 0) {
        struct pb_batch b = {.struct_size = sizeof b, .object = object, .type = type,
                             .items = json_object_get(req, "items"),
                             .all_or_none = json_is_true(json_object_get(req, "allOrNone"))};
        rc = prov->vt->encode_batch(prov->state, &b, hr, err);
    } else {
        struct pb_write w = {.struct_size = sizeof w, .object = object, .type = type,
                             .record_id = json_string_value(json_object_get(req, "recordId")),
                             .record = json_object_get(req, "record"),
                             .associations = json_object_get(req, "associations")};
        if (type == PB_WRITE_DELETE)
            rc = prov->vt->encode_delete(prov->state, &w, hr, err);
        else
            rc = prov->vt->encode_write(prov->state, &w, hr, err);
        if (rc == 0 && json_array_size(w.associations) && prov->vt->encode_associations)
            rc = prov->vt->encode_associations(prov->state, &w, w.associations, hr, err);
    }
    size_t i;
    json_t *h;
    json_array_foreach(json_object_get(req, "headers"), i, h) {
        if (rc == 0)
            rc = pb_services()->req_add_header(hr, json_string_value(json_object_get(h, "key")),
                                               json_string_value(json_object_get(h, "value")));
    }
    return rc;
}

static int decode(const struct pb_provider *prov, const json_t *req,
                  const struct pb_http_response *resp, json_t **out, struct pb_error *err)
{
    const char *kind = json_string_value(json_object_get(req, "kind"));
    const char *object = json_string_value(json_object_get(req, "object"));
    enum pb_write_type type = type_of(json_string_value(json_object_get(req, "type")));
    if (strcmp(kind, "batch") == 0) {
        struct pb_batch b = {.struct_size = sizeof b, .object = object, .type = type,
                             .items = json_object_get(req, "items"),
                             .all_or_none = json_is_true(json_object_get(req, "allOrNone"))};
        return prov->vt->decode_batch(prov->state, &b, resp, out, err);
    }
    struct pb_write w = {.struct_size = sizeof w, .object = object, .type = type,
                         .record_id = json_string_value(json_object_get(req, "recordId")),
                         .record = json_object_get(req, "record"),
                         .associations = json_object_get(req, "associations")};
    return prov->vt->decode_write(prov->state, &w, resp, out, err);
}

static void classify(const struct pb_provider *prov, const struct pb_http_response *resp,
                     struct pb_classification *cl)
{
    memset(cl, 0, sizeof *cl);
    cl->struct_size = sizeof *cl;
    cl->retryable = resp->status == 429 || resp->status >= 500;
    cl->rate_limited = resp->status == 429;
    cl->auth_invalid = resp->status == 401;
    const char *ra = pb_services()->resp_header(resp, "Retry-After");
    if (ra) {
        char *end;
        long secs = strtol(ra, &end, 10);
        if (*ra && !*end && secs >= 0)
            cl->retry_at_ms =
                pb_now_ms() + (secs < 1000000000000L ? secs : 1000000000000L) * 1000LL;
        else if (pb_parse_http_date(ra) > 0)
            cl->retry_at_ms = pb_parse_http_date(ra);
    }
    if (prov->vt->classify)
        prov->vt->classify(prov->state, resp, cl);
}

/* One provider call: how its request is built and its answer read. The
 * write and the read of current values (writeOnUpdate: ifEmpty) share the
 * path below: credentials, egress, classification, refresh after a 401. */
struct call {
    const json_t *req;    /* the normalized write request */
    const json_t *fields; /* reads: the provider fields wanted */
    const char *during;   /* appended to messages: "" for the write itself */
    int null_ok;          /* the answer may be "no such record" */
    int (*encode)(const struct pb_provider *prov, const struct call *c,
                  struct pb_http_request *hr, struct pb_error *err);
    int (*decode)(const struct pb_provider *prov, const struct call *c,
                  const struct pb_http_response *resp, json_t **out, struct pb_error *err);
};

static int encode_write_call(const struct pb_provider *prov, const struct call *c,
                             struct pb_http_request *hr, struct pb_error *err)
{
    return build(prov, c->req, hr, err);
}

static int decode_write_call(const struct pb_provider *prov, const struct call *c,
                             const struct pb_http_response *resp, json_t **out,
                             struct pb_error *err)
{
    return decode(prov, c->req, resp, out, err);
}

static int is_batch(const json_t *req)
{
    const char *kind = json_string_value(json_object_get(req, "kind"));
    return kind && strcmp(kind, "batch") == 0;
}

static int encode_read_call(const struct pb_provider *prov, const struct call *c,
                            struct pb_http_request *hr, struct pb_error *err)
{
    const char *object = json_string_value(json_object_get(c->req, "object"));
    if (is_batch(c->req)) {
        struct pb_batch b = {.struct_size = sizeof b, .object = object, .type = PB_WRITE_UPDATE,
                             .items = json_object_get(c->req, "items"),
                             .all_or_none = json_is_true(json_object_get(c->req, "allOrNone"))};
        return prov->vt->encode_read_batch(prov->state, &b, c->fields, hr, err);
    }
    struct pb_write w = {.struct_size = sizeof w, .object = object, .type = PB_WRITE_UPDATE,
                         .record_id = json_string_value(json_object_get(c->req, "recordId")),
                         .record = json_object_get(c->req, "record"),
                         .associations = json_object_get(c->req, "associations")};
    return prov->vt->encode_read(prov->state, &w, c->fields, hr, err);
}

static int decode_read_call(const struct pb_provider *prov, const struct call *c,
                            const struct pb_http_response *resp, json_t **out,
                            struct pb_error *err)
{
    const char *object = json_string_value(json_object_get(c->req, "object"));
    int rc;
    if (!is_batch(c->req)) {
        struct pb_write w = {.struct_size = sizeof w, .object = object, .type = PB_WRITE_UPDATE,
                             .record_id = json_string_value(json_object_get(c->req, "recordId")),
                             .record = json_object_get(c->req, "record"),
                             .associations = json_object_get(c->req, "associations")};
        rc = prov->vt->decode_read(prov->state, &w, resp, out, err);
        if (rc == 0 && *out && !json_is_object(*out)) {
            json_decref(*out);
            *out = NULL;
            pb_services()->error_set(err, PB_EPROVIDER, NULL,
                                     "the plugin read no record object");
            return PB_EPROVIDER;
        }
        return rc;
    }
    json_t *items = json_object_get(c->req, "items");
    struct pb_batch b = {.struct_size = sizeof b, .object = object, .type = PB_WRITE_UPDATE,
                         .items = items,
                         .all_or_none = json_is_true(json_object_get(c->req, "allOrNone"))};
    rc = prov->vt->decode_read_batch(prov->state, &b, resp, out, err);
    if (rc != 0 || !*out)
        return rc;
    int ok = json_is_array(*out) && json_array_size(*out) == json_array_size(items);
    size_t i;
    json_t *v;
    json_array_foreach(*out, i, v) ok &= json_is_null(v) || json_is_object(v);
    if (!ok) {
        pb_services()->error_set(err, PB_EPROVIDER, NULL,
                                 "the plugin read %zu records for a batch of %zu",
                                 json_array_size(*out), json_array_size(items));
        json_decref(*out);
        *out = NULL;
        return PB_EPROVIDER;
    }
    return 0;
}

/* Makes one call with *lease (replaced when a 401 leads to a refresh). On
 * OUT_DONE *out holds the decoded answer (NULL only where c->null_ok). */
static enum outcome call_provider(struct pb_app *app, const struct pb_provider *prov,
                                  struct pb_cred_lease **leasep, const struct call *c,
                                  json_t **out, struct exec_result *x)
{
    struct pb_cred_lease *lease = *leasep;
    struct pb_problem p = {0};
    enum outcome oc = OUT_FAIL;
    *out = NULL;
    for (int attempt = 0; attempt < 2; attempt++) {
        struct pb_http_request *hr = pb_req_new();
        struct pb_http_response *resp = NULL;
        struct pb_error err;
        pb_error_clear(&err);
        char base[1024];
        if (prov->vt->base_url(prov->state, &lease->view, base, sizeof base, &err) != 0) {
            exec_fail(x, 424, "no-base-url", "provider '%s' has no base URL: %s", prov->name,
                      err.message);
            pb_req_free(hr);
            break;
        }
        if (c->encode(prov, c, hr, &err) != 0) {
            if (err.code == PB_EUNSUPPORTED) {
                exec_fail(x, 422, "unsupported-capability", "provider '%s'%s: %s", prov->name,
                          c->during, err.message);
            } else {
                exec_fail(x, 400, "invalid-request", "%s%s%s%s", err.field[0] ? err.field : "",
                          err.field[0] ? ": " : "", err.message, c->during);
            }
            pb_req_free(hr);
            break;
        }
        if (prov->vt->apply_credentials(prov->state, &lease->view, hr, &err) != 0) {
            exec_fail(x, 424, "credentials-unusable", "provider '%s' could not use the credentials: %s",
                      prov->name, err.message);
            pb_req_free(hr);
            break;
        }
        struct pb_egress_result res;
        if (pb_egress_send(app->egress, hr, base, &resp, &res) != 0) {
            pb_req_free(hr);
            exec_fail(x, res.fail == PB_EGRESS_POLICY ? 403 : 502,
                      res.fail == PB_EGRESS_POLICY ? "egress-refused" : "provider-unreachable",
                      "%s%s", res.message, c->during);
            oc = res.fail == PB_EGRESS_POLICY ? OUT_FAIL : OUT_RETRY;
            break;
        }
        pb_req_free(hr);
        struct pb_classification cl;
        classify(prov, resp, &cl);
        if (cl.auth_invalid && attempt == 0 && (pb_provider_caps(prov) & PB_CAP_OAUTH2_REFRESH)) {
            struct pb_cred_lease *fresh = NULL;
            if (pb_tokens_refresh_after_401(app->tokens, lease, prov, &fresh, &p) == 0 &&
                fresh->version != lease->version) {
                pb_tokens_release(lease);
                lease = fresh;
                pb_resp_free(resp);
                continue;
            }
            if (fresh)
                pb_tokens_release(fresh);
            pb_problem_free(&p);
        }
        if (cl.retryable || cl.rate_limited) {
            x->retry_at = cl.retry_at_ms;
            exec_fail(x, cl.rate_limited ? 429 : 502,
                      cl.rate_limited ? "rate-limited" : "provider-error",
                      "provider '%s' answered %d%s", prov->name, resp->status, c->during);
            pb_resp_free(resp);
            oc = OUT_RETRY;
            break;
        }
        pb_error_clear(&err);
        if (c->decode(prov, c, resp, out, &err) != 0 || (!*out && !c->null_ok)) {
            json_decref(*out);
            *out = NULL;
            exec_fail(x, 502, "provider-error", "provider '%s' answered %d%s: %s", prov->name,
                      resp->status, c->during,
                      err.message[0] ? err.message : "an unreadable response");
            pb_resp_free(resp);
            break;
        }
        pb_resp_free(resp);
        oc = OUT_DONE;
        break;
    }
    *leasep = lease;
    return oc;
}

/* ---- writeOnUpdate: ifEmpty --------------------------------------------- */

/* The installation's selectedFieldSettings of `object` (borrowed or NULL). */
static json_t *field_settings(const json_t *installation, const char *object)
{
    json_t *v = json_object_get(installation, "config");
    static const char *const path[] = {"content", "write", "objects"};
    for (size_t i = 0; i < sizeof path / sizeof path[0]; i++)
        v = json_object_get(v, path[i]);
    return json_object_get(json_object_get(v, object), "selectedFieldSettings");
}

static int is_if_empty(const json_t *setting)
{
    const char *wou = json_string_value(json_object_get(setting, "writeOnUpdate"));
    return wou && strcmp(wou, "ifEmpty") == 0;
}

/* Appends to `fields` (once each) the ifEmpty fields `record` carries. */
static void if_empty_present(const json_t *settings, const json_t *record, json_t *fields)
{
    const char *field;
    json_t *s;
    json_object_foreach((json_t *)settings, field, s) {
        if (!is_if_empty(s) || !json_object_get(record, field))
            continue;
        int seen = 0;
        size_t i;
        json_t *f;
        json_array_foreach(fields, i, f) seen |= strcmp(json_string_value(f), field) == 0;
        if (!seen)
            json_array_append_new(fields, json_string(field));
    }
}

/* Absent, null and "" are empty; anything else (0, false included) is a value. */
static int value_is_empty(const json_t *v)
{
    return !v || json_is_null(v) || (json_is_string(v) && json_string_length(v) == 0);
}

/* Keeps each ifEmpty field of `record` only where `current` (the record's
 * values; NULL or null when it does not exist) has no value. */
static void keep_if_empty(const json_t *settings, json_t *record, const json_t *current)
{
    const char *field;
    json_t *s;
    json_object_foreach((json_t *)settings, field, s) {
        if (is_if_empty(s) && json_is_object(current) &&
            !value_is_empty(json_object_get(current, field)))
            json_object_del(record, field);
    }
}

/* 1 when the provider can read the current values a write needs. */
static int can_read(const struct pb_provider *prov, int batch)
{
    if (batch)
        return prov->vt->encode_read_batch && prov->vt->decode_read_batch;
    return (pb_provider_caps(prov) & PB_CAP_READ) != 0;
}

/* An update carrying writeOnUpdate: ifEmpty fields reads the record's
 * current values first (same credentials, egress and classification as the
 * write) and keeps each such field only where the value is empty; *filtered
 * is then the request to send. The read and the write are two calls, not
 * one transaction: a value set in between can still be overwritten. A read
 * failure fails (or retries) the write like a failed write call would. */
static enum outcome if_empty_apply(struct pb_app *app, const json_t *installation,
                                   const struct pb_provider *prov, struct pb_cred_lease **lease,
                                   const json_t *req, json_t **filtered, struct exec_result *x)
{
    *filtered = NULL;
    if (type_of(json_string_value(json_object_get(req, "type"))) != PB_WRITE_UPDATE)
        return OUT_DONE;
    const json_t *settings =
        field_settings(installation, json_string_value(json_object_get(req, "object")));
    if (!json_object_size(settings))
        return OUT_DONE;
    int batch = is_batch(req);
    json_t *fields = json_array();
    size_t i;
    json_t *item;
    if (batch) {
        json_array_foreach(json_object_get(req, "items"), i, item)
            if_empty_present(settings, json_object_get(item, "record"), fields);
    } else {
        if_empty_present(settings, json_object_get(req, "record"), fields);
    }
    if (json_array_size(fields) == 0) {
        json_decref(fields);
        return OUT_DONE;
    }
    if (!can_read(prov, batch)) {
        /* Validation refuses these; the plugin may have changed since. */
        exec_fail(x, 422, "unsupported-capability",
                  "provider '%s' does not support reading the current record%s, which "
                  "writeOnUpdate: ifEmpty of field '%s' needs",
                  prov->name, batch ? "s of a batch" : "",
                  json_string_value(json_array_get(fields, 0)));
        json_decref(fields);
        return OUT_FAIL;
    }
    struct call c = {.req = req, .fields = fields,
                     .during = " while reading the current values (writeOnUpdate: ifEmpty)",
                     .null_ok = 1, .encode = encode_read_call, .decode = decode_read_call};
    json_t *current = NULL;
    enum outcome oc = call_provider(app, prov, lease, &c, &current, x);
    if (oc == OUT_DONE) {
        *filtered = json_deep_copy(req);
        if (batch) {
            json_array_foreach(json_object_get(*filtered, "items"), i, item)
                keep_if_empty(settings, json_object_get(item, "record"),
                              json_array_get(current, i));
        } else {
            keep_if_empty(settings, json_object_get(*filtered, "record"), current);
        }
    }
    json_decref(current);
    json_decref(fields);
    return oc;
}

static enum outcome execute(struct pb_app *app, const char *project_id,
                            const json_t *installation, const struct pb_provider *prov,
                            const json_t *req, struct exec_result *x)
{
    memset(x, 0, sizeof *x);
    const char *conn = json_string_value(json_object_get(installation, "connectionId"));
    if (!conn) {
        exec_fail(x, 424, "no-connection", "the installation has no connection");
        return OUT_FAIL;
    }
    struct pb_cred_lease *lease = NULL;
    struct pb_problem p = {0};
    if (pb_tokens_acquire(app->tokens, project_id, conn, prov, &lease, &p) != 0) {
        exec_fail(x, p.status, p.slug, "%s", p.detail);
        int retry = p.retryable;
        pb_problem_free(&p);
        return retry ? OUT_RETRY : OUT_FAIL;
    }
    json_t *filtered = NULL;
    enum outcome oc = if_empty_apply(app, installation, prov, &lease, req, &filtered, x);
    if (oc == OUT_DONE) {
        struct call c = {.req = filtered ? filtered : req, .during = "",
                         .encode = encode_write_call, .decode = decode_write_call};
        oc = call_provider(app, prov, &lease, &c, &x->result, x);
    }
    json_decref(filtered);
    pb_tokens_release(lease);
    return oc;
}

/* Counts and ids of a batch or single result. */
static void summarize(const json_t *result, int batch, int *ok, int *bad, json_t *ids,
                      json_t *errors)
{
    *ok = *bad = 0;
    if (!batch) {
        if (json_is_true(json_object_get(result, "success"))) {
            (*ok)++;
            if (json_object_get(result, "recordId"))
                json_array_append(ids, json_object_get(result, "recordId"));
        } else {
            (*bad)++;
            json_array_extend(errors, json_object_get(result, "errors"));
        }
        return;
    }
    size_t i;
    json_t *r;
    json_array_foreach(result, i, r) {
        if (json_is_true(json_object_get(r, "success"))) {
            (*ok)++;
            if (json_object_get(r, "recordId"))
                json_array_append(ids, json_object_get(r, "recordId"));
        } else {
            (*bad)++;
            json_t *errs = json_object_get(r, "errors");
            size_t j;
            json_t *e;
            json_array_foreach(errs, j, e) {
                json_t *copy = json_deep_copy(e);
                json_object_set_new(copy, "index", json_integer((json_int_t)i));
                json_array_append_new(errors, copy);
            }
        }
    }
}

/* The operation's result text: counts, and the first error when any. */
static void result_text(char *out, size_t len, int ok, int bad, const json_t *errors)
{
    const char *msg = json_string_value(json_object_get(json_array_get(errors, 0), "message"));
    snprintf(out, len, "%d of %d records written%s%.400s", ok, ok + bad, msg ? ": " : "",
             msg ? msg : "");
}

/* ---- the request -------------------------------------------------------- */

/* writeOnUpdate: ifEmpty writes a field only where the provider's current
 * value is empty, which needs the current record (read at execution time,
 * see if_empty_apply). A provider that cannot read it (a 1.0 plugin, or
 * one without the batch form for a batch) is refused here rather than
 * allowed to overwrite a value the customer chose to keep. */
static int refuse_if_empty(const json_t *object_cfg, const json_t *record, const char *path,
                           const char *provider, struct pb_problem *p)
{
    const char *field;
    json_t *s;
    json_object_foreach(json_object_get(object_cfg, "selectedFieldSettings"), field, s) {
        if (!is_if_empty(s) || !json_object_get(record, field))
            continue;
        char name[200];
        snprintf(name, sizeof name, "%s.%.100s", path, field);
        json_t *issues = json_pack("[{s:s, s:s, s:s}]", "in", "body", "name", name, "detail",
                                   "writeOnUpdate: ifEmpty needs the current record");
        pb_problem_set(p, 422, "unsupported-capability", "Unsupported capability", issues,
                       "provider '%s' does not support reading the current record, which "
                       "writeOnUpdate: ifEmpty of field '%s' needs; leave the field out of "
                       "updates or change the setting",
                       provider, field);
        return -1;
    }
    return 0;
}

/* Builds the provider request once without sending it, so what the plugin
 * refuses (an all-or-none batch where the provider has none, associations
 * on an update...) is answered before anything is stored or sent. An
 * auto-batched write is checked as the batch of one it will travel in. */
static int dry_encode(const struct pb_provider *prov, const json_t *req, int as_batch,
                      struct pb_problem *p)
{
    json_t *probe = json_deep_copy(req);
    if (as_batch) {
        json_t *item = json_pack("{s:O}", "record", json_object_get(req, "record"));
        if (json_object_get(req, "recordId"))
            json_object_set(item, "id", json_object_get(req, "recordId"));
        if (json_object_get(req, "associations"))
            json_object_set(item, "associations", json_object_get(req, "associations"));
        json_object_set_new(probe, "kind", json_string("batch"));
        json_object_set_new(probe, "items", json_pack("[o]", item));
        json_object_set_new(probe, "allOrNone", json_false());
    }
    struct pb_http_request *hr = pb_req_new();
    struct pb_error err;
    pb_error_clear(&err);
    int rc = build(prov, probe, hr, &err);
    pb_req_free(hr);
    json_decref(probe);
    if (rc == 0)
        return 0;
    const char *field = err.field[0] ? err.field : "record";
    if (rc == PB_EUNSUPPORTED || err.code == PB_EUNSUPPORTED) {
        json_t *issues = json_pack("[{s:s, s:s, s:s}]", "in", "body", "name", field, "detail",
                                   err.message[0] ? err.message : "not supported");
        pb_problem_set(p, 422, "unsupported-capability", "Unsupported capability", issues,
                       "provider '%s' does not support %s: %s", prov->name, field, err.message);
    } else if (rc == PB_ENOMEM) {
        pb_problem_set(p, 503, "out-of-memory", "Out of memory", NULL, "try again");
        p->retryable = 1;
    } else {
        pb_problem_invalid(p, "body", field, "%s", err.message[0] ? err.message : "is not valid");
    }
    return -1;
}

struct accepted {
    json_t *integration, *installation;
    const struct pb_provider *prov;
    json_t *req;     /* normalized request */
    int async;
    int deadline_hours;
    int autobatch_minutes, autobatch_deadline_hours;
};

static void accepted_free(struct accepted *a)
{
    json_decref(a->integration);
    json_decref(a->installation);
    json_decref(a->req);
}

static int validate(struct pb_app *app, const char *project_id, const char *integration,
                    const char *object, const json_t *body, struct accepted *a,
                    struct pb_problem *p)
{
    static const char *const keys[] = {"groupRef", "type", "mode", "record", "batch",
                                       "batchPolicy", "associations", "headers", "retryPolicy",
                                       "autoBatchPolicy", NULL};
    if (!json_is_object(body)) {
        pb_problem_invalid(p, "body", "body", "must be a JSON object");
        return -1;
    }
    if (pb_problem_only_keys(body, "", keys, p) != 0)
        return -1;
    const char *group = json_string_value(json_object_get(body, "groupRef"));
    if (!group || !*group) {
        pb_problem_invalid(p, "body", "groupRef", "is required");
        return -1;
    }
    const char *type = json_string_value(json_object_get(body, "type"));
    if (!type || (strcmp(type, "create") != 0 && strcmp(type, "update") != 0 &&
                  strcmp(type, "delete") != 0)) {
        pb_problem_invalid(p, "body", "type", "must be create, update or delete");
        return -1;
    }
    json_t *modej = json_object_get(body, "mode");
    const char *mode = modej ? json_string_value(modej) : "synchronous";
    if (!mode || (strcmp(mode, "synchronous") != 0 && strcmp(mode, "asynchronous") != 0)) {
        pb_problem_invalid(p, "body", "mode", "must be synchronous or asynchronous");
        return -1;
    }
    a->async = strcmp(mode, "asynchronous") == 0;
    enum pb_write_type wt = type_of(type);
    json_t *record = json_object_get(body, "record"), *batch = json_object_get(body, "batch");
    if (record && batch) {
        pb_problem_invalid(p, "body", "batch", "record and batch cannot both be given");
        return -1;
    }
    if (!record && !batch) {
        pb_problem_invalid(p, "body", "record", "record or batch is required");
        return -1;
    }
    if (record && !json_is_object(record)) {
        pb_problem_invalid(p, "body", "record", "must be an object");
        return -1;
    }
    char rid[256];
    if (record && wt != PB_WRITE_CREATE && record_id(record, rid, sizeof rid) != 0) {
        pb_problem_invalid(p, "body", "record.id", "is required for %s", type);
        return -1;
    }
    if (batch) {
        if (wt == PB_WRITE_DELETE) {
            pb_problem_invalid(p, "body", "batch", "delete takes one record, not a batch");
            return -1;
        }
        if (!json_is_array(batch) || json_array_size(batch) < 1 ||
            json_array_size(batch) > BATCH_LIMIT) {
            pb_problem_invalid(p, "body", "batch", "must hold 1 to %d items", BATCH_LIMIT);
            return -1;
        }
        size_t i;
        json_t *it;
        json_array_foreach(batch, i, it) {
            char path[64];
            snprintf(path, sizeof path, "batch[%zu]", i);
            static const char *const ikeys[] = {"record", "associations", NULL};
            if (!json_is_object(it)) {
                pb_problem_invalid(p, "body", path, "must be an object with record");
                return -1;
            }
            if (pb_problem_only_keys(it, path, ikeys, p) != 0)
                return -1;
            snprintf(path, sizeof path, "batch[%zu].record", i);
            if (!json_is_object(json_object_get(it, "record"))) {
                pb_problem_invalid(p, "body", path, "must be an object");
                return -1;
            }
            snprintf(path, sizeof path, "batch[%zu].record.id", i);
            if (wt == PB_WRITE_UPDATE && record_id(json_object_get(it, "record"), rid, sizeof rid) != 0) {
                pb_problem_invalid(p, "body", path, "is required for update");
                return -1;
            }
            snprintf(path, sizeof path, "batch[%zu].associations", i);
            if (json_object_get(it, "associations") &&
                check_associations(json_object_get(it, "associations"), path, p) != 0)
                return -1;
        }
    }
    if (wt == PB_WRITE_DELETE && a->async) {
        pb_problem_invalid(p, "body", "mode", "delete is synchronous only");
        return -1;
    }
    json_t *bp = json_object_get(body, "batchPolicy");
    if (bp) {
        static const char *const bkeys[] = {"allOrNone", NULL};
        if (!json_is_object(bp) || pb_problem_only_keys(bp, "batchPolicy", bkeys, p) != 0 ||
            (json_object_get(bp, "allOrNone") && !json_is_boolean(json_object_get(bp, "allOrNone")))) {
            if (!p->status)
                pb_problem_invalid(p, "body", "batchPolicy.allOrNone", "must be true or false");
            return -1;
        }
    }
    json_t *assoc = json_object_get(body, "associations");
    if (assoc && batch) {
        pb_problem_invalid(p, "body", "associations",
                           "with a batch, give associations per item (batch[i].associations)");
        return -1;
    }
    if (assoc && check_associations(assoc, "associations", p) != 0)
        return -1;
    json_t *headers = json_object_get(body, "headers");
    if (headers) {
        if (!json_is_array(headers)) {
            pb_problem_invalid(p, "body", "headers", "must be an array of {key, value}");
            return -1;
        }
        size_t i;
        json_t *h;
        json_array_foreach(headers, i, h) {
            char path[48];
            snprintf(path, sizeof path, "headers[%zu]", i);
            const char *k = json_string_value(json_object_get(h, "key"));
            const char *v = json_string_value(json_object_get(h, "value"));
            if (!k || !*k || !v || strpbrk(k, "\r\n: ") || strpbrk(v, "\r\n")) {
                pb_problem_invalid(p, "body", path, "needs a header name (key) and a value");
                return -1;
            }
        }
    }
    a->deadline_hours = 1;
    json_t *rp = json_object_get(body, "retryPolicy");
    if (rp) {
        static const char *const rkeys[] = {"deadlineHours", NULL};
        if (!a->async) {
            pb_problem_invalid(p, "body", "retryPolicy", "applies to asynchronous writes only");
            return -1;
        }
        if (!json_is_object(rp) || pb_problem_only_keys(rp, "retryPolicy", rkeys, p) != 0 ||
            int_in(rp, "deadlineHours", "retryPolicy.deadlineHours", 1, 48, 0, &a->deadline_hours, p) != 0) {
            if (!p->status)
                pb_problem_invalid(p, "body", "retryPolicy", "must be an object");
            return -1;
        }
    }
    json_t *abp = json_object_get(body, "autoBatchPolicy");
    if (abp && headers) {
        /* Writes gathered into one provider call cannot each keep their
         * own headers. */
        pb_problem_invalid(p, "body", "headers", "cannot be combined with autoBatchPolicy");
        return -1;
    }
    if (abp) {
        static const char *const akeys[] = {"maxDelayMinutes", "retryDeadlineHours", NULL};
        if (!a->async || batch || wt == PB_WRITE_DELETE) {
            pb_problem_invalid(p, "body", "autoBatchPolicy",
                               "applies to asynchronous single-record create or update only");
            return -1;
        }
        a->autobatch_deadline_hours = a->deadline_hours;
        if (!json_is_object(abp) || pb_problem_only_keys(abp, "autoBatchPolicy", akeys, p) != 0 ||
            int_in(abp, "maxDelayMinutes", "autoBatchPolicy.maxDelayMinutes", 1, 1440, 1,
                   &a->autobatch_minutes, p) != 0 ||
            int_in(abp, "retryDeadlineHours", "autoBatchPolicy.retryDeadlineHours", 1, 48, 0,
                   &a->autobatch_deadline_hours, p) != 0) {
            if (!p->status)
                pb_problem_invalid(p, "body", "autoBatchPolicy", "must be an object");
            return -1;
        }
    }
    /* The integration, its write object, the group's installation: from
     * the control-plane cache when both are there (read-only, shared),
     * otherwise from the store, which also tells what is missing. */
    int cached = app->cache &&
                 pb_cache_installation_by_group(app->cache, project_id, integration, group,
                                                &a->installation, &a->integration,
                                                &(int){0}) == 0;
    if (!cached) {
        json_decref(a->installation);
        json_decref(a->integration);
        a->installation = a->integration = NULL;
    }
    if (!cached && pb_ctl_integration_get(app, project_id, integration, &a->integration, p) != 0)
        return -1;
    json_t *wobj = NULL;
    size_t i;
    json_t *o;
    json_array_foreach(json_object_get(json_object_get(a->integration, "write"), "objects"), i, o) {
        const char *n = json_string_value(json_object_get(o, "objectName"));
        if (n && strcmp(n, object) == 0)
            wobj = o;
    }
    if (!wobj) {
        pb_problem_set(p, 404, "not-found", "Not found", NULL,
                       "'%s' is not a write object of integration '%s'", object,
                       json_string_value(json_object_get(a->integration, "name")));
        return -1;
    }
    if (!cached &&
        pb_store_installation_find(app->store, project_id,
                                   json_string_value(json_object_get(a->integration, "id")), group,
                                   &a->installation) != 0) {
        json_t *issues = json_pack("[{s:s, s:s, s:s}]", "in", "body", "name", "groupRef",
                                   "detail", "no installation");
        pb_problem_set(p, 404, "not-found", "Not found", issues,
                       "groupRef '%s' has no installation of integration '%s'", group,
                       json_string_value(json_object_get(a->integration, "name")));
        return -1;
    }
    const char *provider = json_string_value(json_object_get(a->integration, "provider"));
    a->prov = pb_registry_find(app->reg, provider);
    if (!a->prov) {
        pb_problem_set(p, 503, "provider-disabled", "Provider not enabled", NULL,
                       "provider '%s' is not enabled in plugboard.yaml", provider);
        return -1;
    }
    unsigned caps = pb_provider_caps(a->prov);
    if (wt != PB_WRITE_DELETE && !(caps & PB_CAP_WRITE)) {
        unsupported(p, provider, "writes", "type");
        return -1;
    }
    if (batch && !(caps & PB_CAP_BATCH)) {
        unsupported(p, provider, "batch writes", "batch");
        return -1;
    }
    if (abp && !(caps & PB_CAP_BATCH)) {
        unsupported(p, provider, "batch writes (auto batching)", "autoBatchPolicy");
        return -1;
    }
    /* A gathered batch is sent as one call of up to BATCH_LIMIT writes. */
    if (abp && a->prov->vt->max_batch_size < BATCH_LIMIT) {
        unsupported(p, provider, "batches of 100 (auto batching)", "autoBatchPolicy");
        return -1;
    }
    if (batch && json_array_size(batch) > a->prov->vt->max_batch_size) {
        pb_problem_invalid(p, "body", "batch", "provider '%s' takes at most %zu records per batch",
                           provider, a->prov->vt->max_batch_size);
        return -1;
    }
    int has_assoc = json_array_size(assoc) > 0;
    json_array_foreach(batch, i, o) has_assoc |= json_array_size(json_object_get(o, "associations")) > 0;
    if (has_assoc && !(caps & PB_CAP_ASSOCIATIONS)) {
        unsupported(p, provider, "associations", "associations");
        return -1;
    }
    if (json_array_size(headers) && !(caps & PB_CAP_HEADER_PASSTHROUGH)) {
        unsupported(p, provider, "header passthrough", "headers");
        return -1;
    }
    json_array_foreach(headers, i, o) {
        const char *k = json_string_value(json_object_get(o, "key"));
        if (!a->prov->vt->header_allowed(a->prov->state, k)) {
            char path[48];
            snprintf(path, sizeof path, "headers[%zu].key", i);
            json_t *issues = json_pack("[{s:s, s:s, s:s, s:s}]", "in", "body", "name", path,
                                       "value", k, "detail", "not forwarded by this provider");
            pb_problem_set(p, 422, "unsupported-header", "Header not allowed", issues,
                           "provider '%s' does not forward the header '%s'", provider, k);
            return -1;
        }
    }
    json_t *object_cfg = json_object_get(
        json_object_get(json_object_get(json_object_get(json_object_get(a->installation, "config"),
                                                        "content"),
                                        "write"),
                        "objects"),
        object);
    if (wt == PB_WRITE_DELETE) {
        if (!(caps & PB_CAP_DELETE)) {
            unsupported(p, provider, "deletes", "type");
            return -1;
        }
        if (!json_is_true(json_object_get(json_object_get(object_cfg, "deletionSettings"), "enabled"))) {
            pb_problem_set(p, 403, "delete-not-enabled", "Deletes not enabled", NULL,
                           "deletes of '%s' are not enabled for this installation: set "
                           "config.content.write.objects.%s.deletionSettings.enabled to true",
                           object, object);
            return -1;
        }
    }
    /* The normalized request the provider call is built from. */
    int inherit = json_is_true(json_object_get(wobj, "inheritMapping"));
    a->req = json_pack("{s:s, s:s, s:s, s:s}", "kind", batch ? "batch" : "single", "type", type,
                       "object", object, "groupRef", group);
    if (record) {
        json_t *mapped = inherit ? apply_mapping(a->integration, a->installation, object, record)
                                 : json_deep_copy(record);
        if (wt != PB_WRITE_CREATE) {
            record_id(record, rid, sizeof rid);
            json_object_set_new(a->req, "recordId", json_string(rid));
        }
        json_object_del(mapped, "id");
        json_t *final = wt == PB_WRITE_DELETE ? json_object()
                                              : apply_field_settings(object_cfg, wt, mapped);
        json_decref(mapped);
        json_object_set_new(a->req, "record", final);
        if (assoc)
            json_object_set(a->req, "associations", assoc);
    } else {
        json_t *items = json_array();
        json_array_foreach(batch, i, o) {
            json_t *rec = json_object_get(o, "record");
            json_t *mapped = inherit ? apply_mapping(a->integration, a->installation, object, rec)
                                     : json_deep_copy(rec);
            json_t *item = json_object();
            if (record_id(rec, rid, sizeof rid) == 0)
                json_object_set_new(item, "id", json_string(rid));
            json_object_del(mapped, "id");
            json_object_set_new(item, "record", apply_field_settings(object_cfg, wt, mapped));
            json_decref(mapped);
            if (json_object_get(o, "associations"))
                json_object_set(item, "associations", json_object_get(o, "associations"));
            json_array_append_new(items, item);
        }
        json_object_set_new(a->req, "items", items);
        json_object_set_new(a->req, "allOrNone",
                            json_boolean(json_is_true(json_object_get(bp, "allOrNone"))));
    }
    if (headers)
        json_object_set(a->req, "headers", headers);
    /* An auto-batched write travels in a batch and is read as one. */
    if (wt == PB_WRITE_UPDATE && !can_read(a->prov, batch || a->autobatch_minutes > 0)) {
        if (record && refuse_if_empty(object_cfg, json_object_get(a->req, "record"), "record",
                                      provider, p) != 0)
            return -1;
        json_array_foreach(json_object_get(a->req, "items"), i, o) {
            char path[48];
            snprintf(path, sizeof path, "batch[%zu].record", i);
            if (refuse_if_empty(object_cfg, json_object_get(o, "record"), path, provider, p) != 0)
                return -1;
        }
    }
    return dry_encode(a->prov, a->req, a->autobatch_minutes > 0, p);
}

/* Metadata recorded with a finished operation. */
static json_t *finished_metadata(const char *object, json_t *ids, json_t *errors)
{
    json_t *m = json_pack("{s:[s], s:O}", "objects", object, "successfulRecordIds", ids);
    if (json_array_size(errors))
        json_object_set(m, "errors", errors);
    return m;
}

static int sync_write(struct pb_app *app, const char *project_id, struct accepted *a,
                      unsigned *status, json_t **out, struct pb_problem *p)
{
    char op_id[64];
    pb_random_id("op_", op_id, sizeof op_id);
    struct exec_result x;
    const char *inst_id = json_string_value(json_object_get(a->installation, "id"));
    const char *object = json_string_value(json_object_get(a->req, "object"));
    int batch = strcmp(json_string_value(json_object_get(a->req, "kind")), "batch") == 0;
    enum outcome oc = execute(app, project_id, a->installation, a->prov, a->req, &x);
    json_t *ids = json_array(), *errors = json_array();
    int ok = 0, bad = 0;
    const char *st = "failure";
    char result[600];
    if (oc == OUT_DONE) {
        summarize(x.result, batch, &ok, &bad, ids, errors);
        st = bad == 0 ? "success" : "failure";
        result_text(result, sizeof result, ok, bad, errors);
    } else {
        snprintf(result, sizeof result, "%s", x.error);
    }
    json_t *op = json_pack("{s:s, s:O, s:s, s:s, s:s, s:o}", "id", op_id, "integrationId",
                           json_object_get(a->integration, "id"), "installationId", inst_id,
                           "status", st, "result", result, "metadata",
                           finished_metadata(object, ids, errors));
    if (pb_store_operation_create(app->store, project_id, op, NULL) != 0)
        pb_logf(PB_LOG_WARN, "operation %s could not be recorded", op_id);
    json_decref(op);
    int rc = 0;
    if (oc != OUT_DONE) {
        json_t *issues = NULL;
        pb_problem_set(p, x.status ? x.status : 502, x.slug[0] ? x.slug : "provider-error",
                       x.status == 429 ? "Rate limited" : "Write failed", issues,
                       "operation %s: %s", op_id, x.error);
        p->retryable = oc == OUT_RETRY;
        rc = -1;
    } else if (!batch) {
        if (json_is_true(json_object_get(x.result, "success"))) {
            json_t *res = json_pack("{s:b}", "success", 1);
            if (json_object_get(x.result, "recordId"))
                json_object_set(res, "recordId", json_object_get(x.result, "recordId"));
            if (json_object_get(x.result, "data"))
                json_object_set(res, "data", json_object_get(x.result, "data"));
            *out = json_pack("{s:s, s:o}", "operationId", op_id, "result", res);
            *status = 200;
        } else {
            json_t *errs = json_object_get(x.result, "errors");
            *out = json_pack("{s:s, s:O, s:{s:b}}", "operationId", op_id, "errors",
                             errs ? errs : json_array(), "result", "success", 0);
            *status = 422;
        }
    } else {
        json_t *results = json_array();
        size_t i;
        json_t *r;
        json_array_foreach(x.result, i, r) {
            json_t *e = json_pack("{s:b}", "success", json_is_true(json_object_get(r, "success")));
            if (json_object_get(r, "recordId"))
                json_object_set(e, "recordId", json_object_get(r, "recordId"));
            if (json_object_get(r, "errors"))
                json_object_set(e, "errors", json_object_get(r, "errors"));
            json_array_append_new(results, e);
        }
        *out = json_pack("{s:s, s:i, s:i, s:o}", "operationId", op_id, "successCount", ok,
                         "failureCount", bad, "results", results);
        if (json_array_size(errors))
            json_object_set(*out, "errors", errors);
        *status = (json_is_true(json_object_get(a->req, "allOrNone")) && bad) ? 422 : 200;
    }
    json_decref(ids);
    json_decref(errors);
    json_decref(x.result);
    return rc;
}

int pb_write_request(struct pb_app *app, const char *project_id, const char *integration,
                     const char *object, const json_t *body, unsigned *status, json_t **out,
                     struct pb_problem *p)
{
    struct accepted a = {0};
    if (validate(app, project_id, integration, object, body, &a, p) != 0) {
        accepted_free(&a);
        return -1;
    }
    int rc = 0;
    if (!a.async) {
        rc = sync_write(app, project_id, &a, status, out, p);
        accepted_free(&a);
        return rc;
    }
    char op_id[64];
    pb_random_id("op_", op_id, sizeof op_id);
    int64_t now = pb_now_ms();
    const char *inst_id = json_string_value(json_object_get(a.installation, "id"));
    if (a.autobatch_minutes) {
        char key[300], joined[64];
        const char *type = json_string_value(json_object_get(a.req, "type"));
        snprintf(key, sizeof key, "%s|%s|%s", inst_id, object, type);
        json_t *item = json_pack("{s:O}", "record", json_object_get(a.req, "record"));
        if (json_object_get(a.req, "recordId"))
            json_object_set(item, "id", json_object_get(a.req, "recordId"));
        if (json_object_get(a.req, "associations"))
            json_object_set(item, "associations", json_object_get(a.req, "associations"));
        int s = pb_store_queue_add(app->store, project_id,
                                   json_string_value(json_object_get(a.integration, "id")), inst_id,
                                   object, type, item, key, op_id, now,
                                   now + a.autobatch_minutes * 60000LL,
                                   now + a.autobatch_deadline_hours * 3600000LL, joined,
                                   sizeof joined);
        json_decref(item);
        if (s != 0) {
            pb_problem_set(p, 503, "store-unavailable", "Store unavailable", NULL,
                           "the write could not be stored; it was not accepted");
            p->retryable = 1;
            rc = -1;
        } else {
            *out = json_pack("{s:s}", "operationId", joined);
            *status = 200;
        }
    } else {
        json_t *op = json_pack("{s:s, s:O, s:s, s:s, s:{s:[s]}, s:O, s:I, s:I}", "id", op_id,
                               "integrationId", json_object_get(a.integration, "id"),
                               "installationId", inst_id, "status", "in_progress", "metadata",
                               "objects", object, "request", a.req, "nextAttemptAt",
                               (json_int_t)now, "deadlineAt",
                               (json_int_t)(now + a.deadline_hours * 3600000LL));
        if (pb_store_operation_create(app->store, project_id, op, NULL) != 0) {
            pb_problem_set(p, 503, "store-unavailable", "Store unavailable", NULL,
                           "the write could not be stored; it was not accepted");
            p->retryable = 1;
            rc = -1;
        } else {
            *out = json_pack("{s:s}", "operationId", op_id);
            *status = 200;
        }
        json_decref(op);
    }
    accepted_free(&a);
    if (rc == 0 && app->writer)
        pb_writer_kick(app->writer);
    return rc;
}

/* ---- workers ----------------------------------------------------------- */

struct pb_writer {
    struct pb_app *app;
    pthread_t *threads;
    int n;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    unsigned long kicks;
    int64_t lease_ms;
    char owner[64];
};

static int64_t backoff_ms(int attempts)
{
    int64_t cap = 1000LL << (attempts < 12 ? attempts : 12);
    if (cap > MAX_BACKOFF_MS)
        cap = MAX_BACKOFF_MS;
    /* Full jitter keeps many failed writes from retrying in step. */
    return cap / 2 + randombytes_uniform((uint32_t)(cap / 2 + 1));
}

static void finish_failed(struct pb_app *app, const char *id, const char *result,
                          const char *last_error, int attempts, int64_t now)
{
    json_t *md = json_pack("{s:s}", "lastError", last_error);
    pb_store_operation_finish(app->store, id, "failure", result, md, attempts, now);
    json_decref(md);
}

static void run_operation(struct pb_writer *w, const json_t *op)
{
    struct pb_app *app = w->app;
    const char *id = json_string_value(json_object_get(op, "id"));
    const char *project = json_string_value(json_object_get(op, "projectId"));
    int attempts = (int)json_integer_value(json_object_get(op, "attempts")) + 1;
    int64_t deadline = json_integer_value(json_object_get(op, "deadlineAt"));
    json_t *req = json_deep_copy(json_object_get(op, "request"));
    json_t *inst = NULL, *integ = NULL;
    int64_t now = pb_now_ms();
    if (pb_store_installation_get(app->store, project,
                                  json_string_value(json_object_get(op, "installationId")), &inst) != 0 ||
        pb_store_integration_get(app->store, project,
                                 json_string_value(json_object_get(op, "integrationId")), &integ) != 0) {
        pb_store_operation_finish(app->store, id, "failure",
                                  "the installation or integration no longer exists", NULL,
                                  attempts, now);
        goto out;
    }
    const char *provider = json_string_value(json_object_get(integ, "provider"));
    const struct pb_provider *prov = pb_registry_find(app->reg, provider);
    if (!prov) {
        /* Configuration may come back (a restart with the provider enabled)
         * until the deadline. */
        char why[200];
        snprintf(why, sizeof why, "provider '%.100s' is not enabled in plugboard.yaml",
                 provider ? provider : "?");
        if (deadline > now + 60000)
            pb_store_operation_retry(app->store, id, attempts - 1, now + 60000, why, now);
        else
            finish_failed(app, id, why, why, attempts, now);
        goto out;
    }
    int batch = 0;
    const char *kind = json_string_value(json_object_get(req, "kind"));
    if (kind && strcmp(kind, "autobatch") == 0) {
        json_t *items = NULL;
        if (pb_store_queue_items(app->store, id, &items) != 0) {
            pb_store_operation_retry(app->store, id, attempts, now + backoff_ms(attempts),
                                     "queued writes could not be read", now);
            goto out;
        }
        json_t *list = json_array();
        size_t i;
        json_t *it;
        json_array_foreach(items, i, it) json_array_append(list, json_object_get(it, "record"));
        json_decref(items);
        json_object_set_new(req, "kind", json_string("batch"));
        json_object_set_new(req, "items", list);
        json_object_set_new(req, "allOrNone", json_false());
        batch = 1;
    } else {
        batch = kind && strcmp(kind, "batch") == 0;
    }
    struct exec_result x;
    enum outcome oc = execute(app, project, inst, prov, req, &x);
    now = pb_now_ms();
    const char *object = json_string_value(json_object_get(req, "object"));
    if (oc == OUT_DONE) {
        json_t *ids = json_array(), *errors = json_array();
        int ok, bad;
        summarize(x.result, batch, &ok, &bad, ids, errors);
        char result[600];
        result_text(result, sizeof result, ok, bad, errors);
        json_t *md = finished_metadata(object, ids, errors);
        pb_store_operation_finish(app->store, id, bad ? "failure" : "success", result, md,
                                  attempts, now);
        json_decref(md);
        json_decref(ids);
        json_decref(errors);
        json_decref(x.result);
    } else if (oc == OUT_RETRY && deadline > now) {
        int64_t next = now + backoff_ms(attempts);
        if (x.retry_at > next)
            next = x.retry_at;
        if (next > deadline)
            next = deadline;
        pb_store_operation_retry(app->store, id, attempts, next, x.error, now);
    } else {
        char result[700];
        snprintf(result, sizeof result, "%s%s", oc == OUT_RETRY ? "retry deadline passed: " : "",
                 x.error);
        finish_failed(app, id, result, x.error, attempts, now);
    }
out:
    json_decref(req);
    json_decref(inst);
    json_decref(integ);
}

static void *worker(void *arg)
{
    struct pb_writer *w = arg;
    for (;;) {
        pthread_mutex_lock(&w->mu);
        int stop = w->stop;
        unsigned long seen = w->kicks;
        pthread_mutex_unlock(&w->mu);
        if (stop)
            break;
        json_t *ops = NULL;
        int64_t now = pb_now_ms();
        /* One at a time: an operation claimed but waiting behind others
         * could see its lease run out and be run twice. */
        if (pb_store_operation_claim(w->app->store, w->owner, now, now + w->lease_ms, 1,
                                     &ops) == 0 &&
            json_array_size(ops) > 0) {
            run_operation(w, json_array_get(ops, 0));
            json_decref(ops);
            continue;
        }
        json_decref(ops);
        pthread_mutex_lock(&w->mu);
        if (!w->stop && w->kicks == seen) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 250 * 1000 * 1000;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&w->cv, &w->mu, &ts);
        }
        pthread_mutex_unlock(&w->mu);
    }
    return NULL;
}

int pb_writer_start(struct pb_app *app, int workers, struct pb_writer **out)
{
    struct pb_writer *w = pb_xcalloc(1, sizeof *w);
    w->app = app;
    w->n = workers > 0 ? workers : 2;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    pb_random_id("wrk_", w->owner, sizeof w->owner);
    long timeout = app->egress ? pb_egress_timeout_ms(app->egress) : 30000;
    w->lease_ms = CLAIM_CALLS * (int64_t)(timeout > 0 ? timeout : 30000) + CLAIM_MARGIN_MS;
    /* Claims left by a previous run of this node (killed mid-write) are
     * released now rather than when their leases run out. */
    int released = 0;
    if (pb_store_operation_release_claims(app->store, pb_now_ms(), &released) != 0)
        pb_logf(PB_LOG_WARN, "could not release the claims of an earlier run");
    else if (released > 0)
        pb_logf(PB_LOG_INFO, "%d interrupted asynchronous writes are due again", released);
    w->threads = pb_xcalloc((size_t)w->n, sizeof *w->threads);
    for (int i = 0; i < w->n; i++) {
        if (pthread_create(&w->threads[i], NULL, worker, w) != 0) {
            w->n = i;
            pb_writer_stop(w);
            return -1;
        }
    }
    *out = w;
    return 0;
}

void pb_writer_kick(struct pb_writer *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->kicks++;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

void pb_writer_stop(struct pb_writer *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    for (int i = 0; i < w->n; i++)
        pthread_join(w->threads[i], NULL);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w->threads);
    free(w);
}
