/*
 * providers.yaml reader for the generic plugin. One pass over libyaml's
 * event stream (no document tree): each top-level entry becomes a small
 * JSON object holding only the keys the plugin reads, the enabled entry is
 * merged over its alias chain, and everything else is dropped before init
 * returns. See catalog.h.
 */
#include "catalog.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#define MAX_DEPTH 64
#define MAX_ANCHORS 100000
#define MAX_CHAIN 16
#define WARN_NAMED 10 /* unsupported entries named one by one; the rest counted */

static const char *const supported_modes[] = {"API_KEY", "BASIC", "OAUTH2", "OAUTH2_CC", "NONE",
                                              NULL};

int gen_mode_supported(const char *mode)
{
    for (size_t i = 0; mode && supported_modes[i]; i++)
        if (strcmp(mode, supported_modes[i]) == 0)
            return 1;
    return 0;
}

/* Which keys of a mapping are kept; a key with child NULL keeps its whole
 * value. A NULL spec keeps every key. */
struct keyspec {
    const char *key;
    const struct keyspec *child;
};

static const struct keyspec proxy_spec[] = {
    {"base_url", NULL}, {"headers", NULL}, {"query", NULL}, {"retry", NULL}, {NULL, NULL}};

static const struct keyspec entry_spec[] = {
    {"display_name", NULL},
    {"auth_mode", NULL},
    {"alias", NULL},
    {"proxy", proxy_spec},
    {"authorization_url", NULL},
    {"token_url", NULL},
    {"refresh_url", NULL},
    {"authorization_params", NULL},
    {"token_params", NULL},
    {"refresh_params", NULL},
    {"scope_separator", NULL},
    {"default_scopes", NULL},
    {"token_response_metadata", NULL},
    {"token_request_auth_method", NULL},
    {"body_format", NULL},
    {NULL, NULL},
};

static const struct keyspec *spec_find(const struct keyspec *spec, const char *key)
{
    for (; spec && spec->key; spec++)
        if (strcmp(spec->key, key) == 0)
            return spec;
    return NULL;
}

/* ---- the event reader ------------------------------------------------------ */

struct rd {
    yaml_parser_t p;
    const char *path;
    json_t *anchors; /* anchor -> value, for *alias references */
    size_t n_anchors;
    char *msg;
    size_t len;
    int code;
};

static void rd_fail(struct rd *r, const yaml_mark_t *m, enum pb_errcode code, const char *fmt,
                    ...) PB_PRINTF(4, 5);

static void rd_fail(struct rd *r, const yaml_mark_t *m, enum pb_errcode code, const char *fmt,
                    ...)
{
    char what[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (m)
        snprintf(r->msg, r->len, "catalog %s:%zu:%zu: %s", r->path, m->line + 1, m->column + 1,
                 what);
    else
        snprintf(r->msg, r->len, "catalog %s: %s", r->path, what);
    r->code = code;
}

static int rd_next(struct rd *r, yaml_event_t *ev)
{
    if (yaml_parser_parse(&r->p, ev))
        return 0;
    const char *problem = r->p.problem ? r->p.problem : "cannot be parsed";
    if (r->p.error == YAML_READER_ERROR)
        rd_fail(r, NULL, PB_ECONFIG, "%s at byte %zu", problem, r->p.problem_offset);
    else if (r->p.context)
        rd_fail(r, &r->p.problem_mark, PB_ECONFIG, "%s %s", problem, r->p.context);
    else
        rd_fail(r, &r->p.problem_mark, PB_ECONFIG, "%s", problem);
    return -1;
}

static json_t *scalar_json(const yaml_event_t *ev)
{
    const char *s = (const char *)ev->data.scalar.value;
    size_t n = ev->data.scalar.length;
    if (ev->data.scalar.plain_implicit &&
        (n == 0 || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 || strcmp(s, "Null") == 0 ||
         strcmp(s, "NULL") == 0))
        return json_null();
    return json_stringn(s, n); /* NULL when not UTF-8 */
}

static const char *anchor_of(const yaml_event_t *ev)
{
    switch (ev->type) {
    case YAML_SCALAR_EVENT: return (const char *)ev->data.scalar.anchor;
    case YAML_SEQUENCE_START_EVENT: return (const char *)ev->data.sequence_start.anchor;
    case YAML_MAPPING_START_EVENT: return (const char *)ev->data.mapping_start.anchor;
    default: return NULL;
    }
}

static int rd_node(struct rd *r, const yaml_event_t *ev, const struct keyspec *spec,
                   json_t **out, int depth);

static int rd_sequence(struct rd *r, json_t *val, int depth)
{
    for (;;) {
        yaml_event_t e;
        if (rd_next(r, &e) != 0)
            return -1;
        if (e.type == YAML_SEQUENCE_END_EVENT) {
            yaml_event_delete(&e);
            return 0;
        }
        json_t *item = NULL;
        int rc = rd_node(r, &e, NULL, val ? &item : NULL, depth + 1);
        yaml_event_delete(&e);
        if (rc != 0)
            return -1;
        if (val && json_array_append_new(val, item) != 0) {
            rd_fail(r, NULL, PB_ENOMEM, "out of memory");
            return -1;
        }
    }
}

/* YAML merge keys (<<: *base) fill the keys the mapping does not set. */
static void apply_merge(json_t *val, json_t *src, const struct keyspec *spec)
{
    const char *k;
    json_t *v;
    if (json_is_array(src)) {
        size_t i;
        json_array_foreach(src, i, v) apply_merge(val, v, spec);
        return;
    }
    json_object_foreach(src, k, v) {
        if (!json_object_get(val, k) && (!spec || spec_find(spec, k)))
            json_object_set(val, k, v);
    }
}

static int rd_mapping(struct rd *r, json_t *val, const struct keyspec *spec, int depth)
{
    json_t *merges = NULL;
    int rc = -1;
    for (;;) {
        yaml_event_t k, v;
        if (rd_next(r, &k) != 0)
            goto out;
        if (k.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&k);
            break;
        }
        if (k.type != YAML_SCALAR_EVENT) {
            if (val) {
                rd_fail(r, &k.start_mark, PB_ECONFIG, "mapping keys must be plain text");
                yaml_event_delete(&k);
                goto out;
            }
            int krc = rd_node(r, &k, NULL, NULL, depth + 1);
            yaml_event_delete(&k);
            if (krc != 0 || rd_next(r, &v) != 0)
                goto out;
            krc = rd_node(r, &v, NULL, NULL, depth + 1);
            yaml_event_delete(&v);
            if (krc != 0)
                goto out;
            continue;
        }
        char *key = strdup((const char *)k.data.scalar.value);
        int merge_key = k.data.scalar.plain_implicit && key && strcmp(key, "<<") == 0;
        yaml_event_delete(&k);
        if (!key) {
            rd_fail(r, NULL, PB_ENOMEM, "out of memory");
            goto out;
        }
        if (rd_next(r, &v) != 0) {
            free(key);
            goto out;
        }
        const struct keyspec *ks = spec ? spec_find(spec, key) : NULL;
        int keep = val && (merge_key || !spec || ks);
        json_t *cv = NULL;
        int vrc = rd_node(r, &v, merge_key ? spec : ks ? ks->child : NULL, keep ? &cv : NULL,
                          depth + 1);
        yaml_event_delete(&v);
        if (vrc == 0 && keep) {
            if (merge_key) {
                if (!merges)
                    merges = json_array();
                if (!merges || json_array_append_new(merges, cv) != 0)
                    vrc = -1;
            } else if (json_object_set_new(val, key, cv) != 0) {
                vrc = -1;
            }
            if (vrc != 0)
                rd_fail(r, NULL, PB_ENOMEM, "out of memory");
        }
        free(key);
        if (vrc != 0)
            goto out;
    }
    if (merges) {
        size_t i;
        json_t *m;
        json_array_foreach(merges, i, m) apply_merge(val, m, spec);
    }
    rc = 0;
out:
    json_decref(merges);
    return rc;
}

/* Reads the node that `ev` starts. With out == NULL the node is skipped,
 * except that anchored nodes are always built (a later *alias may need
 * them). `spec` filters the keys of a mapping. */
static int rd_node(struct rd *r, const yaml_event_t *ev, const struct keyspec *spec,
                   json_t **out, int depth)
{
    if (out)
        *out = NULL;
    if (depth > MAX_DEPTH) {
        rd_fail(r, &ev->start_mark, PB_ECONFIG, "nesting deeper than %d levels", MAX_DEPTH);
        return -1;
    }
    if (ev->type == YAML_ALIAS_EVENT) {
        json_t *a = json_object_get(r->anchors, (const char *)ev->data.alias.anchor);
        if (!a) {
            rd_fail(r, &ev->start_mark, PB_ECONFIG, "unknown anchor '*%s'",
                    (const char *)ev->data.alias.anchor);
            return -1;
        }
        /* Shared, never modified: no expansion, however often it is used. */
        if (out)
            *out = json_incref(a);
        return 0;
    }
    const char *anchor = anchor_of(ev);
    int build = out != NULL || anchor != NULL;
    json_t *val = NULL;
    int rc = 0;
    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        if (build) {
            val = scalar_json(ev);
            if (!val) {
                rd_fail(r, &ev->start_mark, PB_ECONFIG, "text is not valid UTF-8");
                return -1;
            }
        }
        break;
    case YAML_SEQUENCE_START_EVENT:
        if (build && !(val = json_array())) {
            rd_fail(r, NULL, PB_ENOMEM, "out of memory");
            return -1;
        }
        rc = rd_sequence(r, val, depth);
        break;
    case YAML_MAPPING_START_EVENT:
        if (build && !(val = json_object())) {
            rd_fail(r, NULL, PB_ENOMEM, "out of memory");
            return -1;
        }
        rc = rd_mapping(r, val, spec, depth);
        break;
    default:
        rd_fail(r, &ev->start_mark, PB_ECONFIG, "unexpected YAML structure");
        return -1;
    }
    if (rc != 0) {
        json_decref(val);
        return -1;
    }
    if (anchor) {
        if (++r->n_anchors > MAX_ANCHORS) {
            json_decref(val);
            rd_fail(r, &ev->start_mark, PB_ECONFIG, "more than %d anchors", MAX_ANCHORS);
            return -1;
        }
        json_object_set(r->anchors, anchor, val);
    }
    if (out)
        *out = val;
    else
        json_decref(val);
    return 0;
}

/* ---- entries, aliases ------------------------------------------------------- */

/* A new object: base's keys, overlaid by over's; mappings present in both
 * are merged the same way. Neither input is modified. */
static json_t *merge(json_t *base, json_t *over)
{
    json_t *r = json_object();
    const char *k;
    json_t *v;
    if (!r)
        return NULL;
    json_object_foreach(base, k, v) {
        json_t *o = json_object_get(over, k);
        if (o && json_is_object(o) && json_is_object(v)) {
            json_t *m = merge(v, o);
            if (!m || json_object_set_new(r, k, m) != 0) {
                json_decref(r);
                return NULL;
            }
        } else if (json_object_set(r, k, o ? o : v) != 0) {
            json_decref(r);
            return NULL;
        }
    }
    json_object_foreach(over, k, v) {
        if (!json_object_get(base, k) && json_object_set(r, k, v) != 0) {
            json_decref(r);
            return NULL;
        }
    }
    return r;
}

/* The auth_mode an entry ends up with, following aliases; NULL when none. */
static const char *effective_mode(json_t *entries, json_t *e)
{
    for (int i = 0; i < MAX_CHAIN && json_is_object(e); i++) {
        const char *m = json_string_value(json_object_get(e, "auth_mode"));
        if (m)
            return m;
        const char *a = json_string_value(json_object_get(e, "alias"));
        if (!a)
            return NULL;
        e = json_object_get(entries, a);
    }
    return NULL;
}

static void warn_unsupported(const struct pb_core_services *svc, const char *provider,
                             const char *path, json_t *entries, const char *enabled)
{
    size_t extra = 0, named = 0;
    const char *k;
    json_t *e;
    json_object_foreach(entries, k, e) {
        if (strcmp(k, enabled) == 0 || !json_is_object(e))
            continue;
        const char *mode = effective_mode(entries, e);
        if (gen_mode_supported(mode))
            continue;
        if (named < WARN_NAMED) {
            named++;
            if (mode)
                svc->log(PB_LOG_WARN, provider,
                         "catalog %s: entry '%s' uses auth_mode %s, which plugboard does not "
                         "support; it is loaded as unsupported and cannot be enabled",
                         path, k, mode);
            else
                svc->log(PB_LOG_WARN, provider,
                         "catalog %s: entry '%s' has no auth_mode; it is loaded as unsupported "
                         "and cannot be enabled",
                         path, k);
        } else {
            extra++;
        }
    }
    if (extra)
        svc->log(PB_LOG_WARN, provider,
                 "catalog %s: %zu more entries use auth modes plugboard does not support and "
                 "cannot be enabled",
                 path, extra);
}

/* The enabled entry over its alias chain (new reference) or NULL + msg. */
static json_t *resolve(struct rd *r, json_t *entries, const char *name)
{
    const char *chain[MAX_CHAIN];
    json_t *objs[MAX_CHAIN];
    size_t n = 0;
    const char *cur = name;
    for (;;) {
        json_t *e = json_object_get(entries, cur);
        if (!e) {
            if (n == 0)
                rd_fail(r, NULL, PB_ECONFIG, "entry '%s' not found", name);
            else
                rd_fail(r, NULL, PB_ECONFIG,
                        "entry '%s' is an alias of '%s', which is not in the catalog",
                        chain[n - 1], cur);
            return NULL;
        }
        if (!json_is_object(e)) {
            rd_fail(r, NULL, PB_ECONFIG, "entry '%s' is not a mapping", cur);
            return NULL;
        }
        for (size_t i = 0; i < n; i++) {
            if (strcmp(chain[i], cur) == 0) {
                char loop[400] = "";
                size_t used = 0;
                for (size_t j = 0; j < n && used < sizeof loop; j++)
                    used += (size_t)snprintf(loop + used, sizeof loop - used, "'%s' -> ", chain[j]);
                rd_fail(r, NULL, PB_ECONFIG, "entry '%s' has an alias loop: %s'%s'", name, loop,
                        cur);
                return NULL;
            }
        }
        if (n == MAX_CHAIN) {
            rd_fail(r, NULL, PB_ECONFIG, "entry '%s' has more than %d aliases in a chain", name,
                    MAX_CHAIN);
            return NULL;
        }
        chain[n] = cur;
        objs[n++] = e;
        json_t *a = json_object_get(e, "alias");
        if (!a || json_is_null(a))
            break;
        if (!json_is_string(a)) {
            rd_fail(r, NULL, PB_ECONFIG, "entry '%s': alias must be an entry name", cur);
            return NULL;
        }
        cur = json_string_value(a);
    }
    json_t *m = json_incref(objs[n - 1]);
    for (size_t i = n - 1; i-- > 0;) {
        json_t *next = merge(m, objs[i]);
        json_decref(m);
        if (!(m = next)) {
            rd_fail(r, NULL, PB_ENOMEM, "out of memory");
            return NULL;
        }
    }
    if (n > 1)
        json_object_del(m, "alias");
    return m;
}

int gen_catalog_load(const struct pb_core_services *svc, const char *provider, const char *path,
                     FILE *fp, const char *name, json_t **out, char *msg, size_t msg_len)
{
    struct rd r;
    memset(&r, 0, sizeof r);
    r.path = path;
    r.msg = msg;
    r.len = msg_len;
    r.code = PB_ECONFIG;
    *out = NULL;
    msg[0] = '\0';
    json_t *entries = json_object();
    r.anchors = json_object();
    if (!entries || !r.anchors || !yaml_parser_initialize(&r.p)) {
        json_decref(entries);
        json_decref(r.anchors);
        snprintf(msg, msg_len, "catalog %s: out of memory", path);
        return PB_ENOMEM;
    }
    yaml_parser_set_input_file(&r.p, fp);
    int ok = 0;
    size_t count = 0;
    yaml_event_t ev;
    /* stream start, document start, the top-level mapping */
    if (rd_next(&r, &ev) != 0)
        goto done;
    yaml_event_delete(&ev);
    if (rd_next(&r, &ev) != 0)
        goto done;
    if (ev.type != YAML_DOCUMENT_START_EVENT) {
        yaml_event_delete(&ev);
        rd_fail(&r, NULL, PB_ECONFIG, "the file is empty: a catalog maps provider names to entries");
        goto done;
    }
    yaml_event_delete(&ev);
    if (rd_next(&r, &ev) != 0)
        goto done;
    if (ev.type != YAML_MAPPING_START_EVENT) {
        rd_fail(&r, &ev.start_mark, PB_ECONFIG,
                "the top level must be a mapping of provider names to entries");
        yaml_event_delete(&ev);
        goto done;
    }
    yaml_event_delete(&ev);
    for (;;) {
        yaml_event_t k, v;
        if (rd_next(&r, &k) != 0)
            goto done;
        if (k.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&k);
            break;
        }
        if (k.type != YAML_SCALAR_EVENT) {
            rd_fail(&r, &k.start_mark, PB_ECONFIG, "provider names must be plain text");
            yaml_event_delete(&k);
            goto done;
        }
        char *key = strdup((const char *)k.data.scalar.value);
        yaml_event_delete(&k);
        if (!key) {
            rd_fail(&r, NULL, PB_ENOMEM, "out of memory");
            goto done;
        }
        if (rd_next(&r, &v) != 0) {
            free(key);
            goto done;
        }
        json_t *val = NULL;
        int rc = rd_node(&r, &v, entry_spec, &val, 1);
        yaml_event_delete(&v);
        if (rc == 0 && json_object_set_new(entries, key, val ? val : json_null()) != 0) {
            rd_fail(&r, NULL, PB_ENOMEM, "out of memory");
            rc = -1;
        }
        free(key);
        if (rc != 0)
            goto done;
        count++;
    }
    if (rd_next(&r, &ev) != 0) /* document end */
        goto done;
    yaml_event_delete(&ev);
    if (rd_next(&r, &ev) != 0)
        goto done;
    if (ev.type != YAML_STREAM_END_EVENT) {
        rd_fail(&r, &ev.start_mark, PB_ECONFIG, "a catalog is a single YAML document");
        yaml_event_delete(&ev);
        goto done;
    }
    yaml_event_delete(&ev);
    ok = 1;
done:
    yaml_parser_delete(&r.p);
    json_decref(r.anchors);
    r.anchors = NULL;
    if (ok) {
        *out = resolve(&r, entries, name);
        if (*out) {
            warn_unsupported(svc, provider, path, entries, name);
            svc->log(PB_LOG_DEBUG, provider, "catalog %s: %zu entries read, using '%s'", path,
                     count, name);
        }
    }
    json_decref(entries);
    if (*out)
        return PB_OK;
    return r.code ? r.code : PB_ECONFIG;
}
