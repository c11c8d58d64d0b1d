/* amp.yaml: libyaml events are built into a small tree that keeps every node's
 * position, then walked key by key into normalized JSON. Every error names
 * SOURCE:LINE:COL of the offending node; a failed parse hands out nothing.
 *
 * Bounds: the input size (PB_MANIFEST_MAX_BYTES), nesting depth counted
 * through aliases (PB_MANIFEST_MAX_DEPTH), and the work that aliases and
 * merge keys can multiply (EXPAND_NODES_MAX nodes, EXPAND_BYTES_MAX bytes of
 * scalars converted generically). Anchors are registered when their node is
 * complete, so an alias can never refer to a node that contains it. */
#include "manifest.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#define EXPAND_NODES_MAX 1000000
#define EXPAND_BYTES_MAX (16 * 1024 * 1024)
#define YAML_MERGE_TAG "tag:yaml.org,2002:merge"

#if defined(__GNUC__)
#define MF_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define MF_PRINTF(f, a)
#endif

enum kind { K_SCALAR, K_SEQ, K_MAP, K_ALIAS };

struct node {
    enum kind kind;
    yaml_mark_t mark;    /* start of the node (of the alias, for K_ALIAS) */
    char *tag;           /* explicit tag, NULL when none */
    bool plain;          /* scalar written without quotes */
    size_t len;          /* of text */
    struct node **items; /* sequence items; mapping key, value, key, value... */
    size_t n, cap;
    struct node *target; /* K_ALIAS */
    int height;          /* nesting levels of collections, 0 for a scalar */
    struct node *next;   /* every node, for freeing */
    char text[];         /* scalar value, NUL-terminated ("" for others) */
};

struct frame {
    struct node *node;
    char *anchor;
};

struct ctx {
    const char *source;
    char *err;
    size_t err_len;
    int line, col;
    bool failed;
    struct node *all;
    struct frame stack[PB_MANIFEST_MAX_DEPTH];
    size_t depth;
    struct node *root;
    int docs;
    json_t *anchor_idx; /* anchor name -> index into anchors */
    struct node **anchors;
    size_t n_anchors, cap_anchors;
    size_t spent_nodes, spent_bytes;
    int (*provider_ok)(const char *, void *);
    void *provider_ctx;
    char clipbuf[4][104];
    unsigned clip_i;
};

/* ---- errors ------------------------------------------------------------ */

static int failv(struct ctx *c, size_t line, size_t col, const char *fmt, va_list ap)
    MF_PRINTF(4, 0);
static int failv(struct ctx *c, size_t line, size_t col, const char *fmt, va_list ap)
{
    if (c->failed)
        return -1;
    c->failed = true;
    c->line = line > INT32_MAX ? INT32_MAX : (int)line;
    c->col = col > INT32_MAX ? INT32_MAX : (int)col;
    if (!c->err || c->err_len == 0)
        return -1;
    int n = snprintf(c->err, c->err_len, "%s:%zu:%zu: ", c->source, line, col);
    if (n >= 0 && (size_t)n < c->err_len)
        vsnprintf(c->err + n, c->err_len - (size_t)n, fmt, ap);
    for (char *p = c->err; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    return -1;
}

/* Error at a libyaml mark (0-based). */
static int fail_at(struct ctx *c, yaml_mark_t m, const char *fmt, ...) MF_PRINTF(3, 4);
static int fail_at(struct ctx *c, yaml_mark_t m, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    failv(c, m.line + 1, m.column + 1, fmt, ap);
    va_end(ap);
    return -1;
}

static int fail(struct ctx *c, const struct node *n, const char *fmt, ...) MF_PRINTF(3, 4);
static int fail(struct ctx *c, const struct node *n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (n)
        failv(c, n->mark.line + 1, n->mark.column + 1, fmt, ap);
    else
        failv(c, 1, 1, fmt, ap);
    va_end(ap);
    return -1;
}

static int oom(struct ctx *c, const struct node *n)
{
    return fail(c, n, "out of memory");
}

/* User text for a message: at most ~80 bytes, cut on a UTF-8 boundary. Four
 * rotating buffers, so one message can quote up to four values. */
static const char *clip(struct ctx *c, const char *s)
{
    char *b = c->clipbuf[c->clip_i++ % 4];
    size_t n = strlen(s), max = 80;
    if (n <= max)
        return memcpy(b, s, n + 1);
    while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80)
        max--;
    memcpy(b, s, max);
    memcpy(b + max, "...", 4);
    return b;
}

/* ---- the node tree ----------------------------------------------------- */

static const struct node *res(const struct node *n)
{
    return n && n->kind == K_ALIAS ? n->target : n;
}

static struct node *new_node(struct ctx *c, enum kind kind, yaml_mark_t mark, const char *tag,
                             const void *text, size_t len)
{
    if (len > PB_MANIFEST_MAX_BYTES)
        return NULL;
    struct node *n = calloc(1, sizeof *n + len + 1);
    if (!n)
        return NULL;
    if (len)
        memcpy(n->text, text, len);
    n->len = len;
    n->kind = kind;
    n->mark = mark;
    n->next = c->all;
    c->all = n;
    /* "!" (non-specific) on a scalar means "a string"; record it as such. */
    if (tag && !strcmp(tag, "!"))
        tag = kind == K_SCALAR ? YAML_STR_TAG : NULL;
    if (tag && !(n->tag = strdup(tag)))
        return NULL;
    return n;
}

static void free_nodes(struct ctx *c)
{
    for (struct node *n = c->all, *next; n; n = next) {
        next = n->next;
        free(n->tag);
        free(n->items);
        free(n);
    }
    c->all = NULL;
}

static int push_item(struct node *parent, struct node *child)
{
    if (parent->n == parent->cap) {
        size_t cap = parent->cap ? parent->cap * 2 : 8;
        struct node **items = realloc(parent->items, cap * sizeof *items);
        if (!items)
            return -1;
        parent->items = items;
        parent->cap = cap;
    }
    parent->items[parent->n++] = child;
    return 0;
}

/* Work that aliases and merges can multiply. */
static int spend(struct ctx *c, const struct node *at, size_t nodes, size_t bytes)
{
    c->spent_nodes += nodes;
    c->spent_bytes += bytes;
    if (c->spent_nodes > EXPAND_NODES_MAX || c->spent_bytes > EXPAND_BYTES_MAX)
        return fail(c, at, "the manifest expands to too much data (aliases?)");
    return 0;
}

/* Where the node about to be added to the top of the stack sits, as
 * " in a.b[2]" or " at the top level". */
static void build_where(struct ctx *c, char *buf, size_t size)
{
    char path[256];
    size_t len = 0;
    path[0] = '\0';
    for (size_t i = 0; i < c->depth && len < sizeof path; i++) {
        const struct node *f = c->stack[i].node;
        int w;
        if (f->kind == K_SEQ) {
            w = snprintf(path + len, sizeof path - len, "[%zu]", f->n);
        } else {
            const struct node *k = f->n % 2 ? res(f->items[f->n - 1]) : NULL;
            const char *key = k && k->kind == K_SCALAR ? clip(c, k->text) : "?";
            w = snprintf(path + len, sizeof path - len, "%s%s", len ? "." : "", key);
        }
        if (w < 0)
            break;
        len += (size_t)w;
    }
    snprintf(buf, size, "%s%s", path[0] ? " in " : " at the top level", path);
}

static bool is_merge_key(const struct node *k)
{
    if (k->kind != K_SCALAR || strcmp(k->text, "<<"))
        return false;
    return k->tag ? !strcmp(k->tag, YAML_MERGE_TAG) : k->plain;
}

/* A finished mapping: scalar keys, no duplicates, "<<" merges resolved
 * (explicit keys win; among merged mappings the first listed wins). */
static int finish_map(struct ctx *c, struct node *m)
{
    char where[320];
    json_t *seen = json_object();
    if (!seen)
        return oom(c, m);
    bool merges = false;
    int rc = 0;
    for (size_t i = 0; i + 1 < m->n && !rc; i += 2) {
        const struct node *k = res(m->items[i]);
        if (k->kind != K_SCALAR) {
            build_where(c, where, sizeof where);
            rc = fail(c, m->items[i], "mapping keys must be strings%s", where);
        } else if (strlen(k->text) != k->len) {
            build_where(c, where, sizeof where);
            rc = fail(c, m->items[i], "keys must not contain NUL characters%s", where);
        } else if (json_object_get(seen, k->text)) {
            build_where(c, where, sizeof where);
            rc = fail(c, m->items[i], "duplicate key '%s'%s", clip(c, k->text), where);
        } else if (json_object_set_new(seen, k->text, json_true())) {
            rc = oom(c, m->items[i]);
        }
        if (m->items[i]->kind != K_ALIAS && is_merge_key(m->items[i]))
            merges = true;
    }
    if (rc || !merges) {
        json_decref(seen);
        return rc;
    }
    struct node tmp = {0};
    for (size_t i = 0; i + 1 < m->n && !rc; i += 2) {
        struct node *k = m->items[i], *v = m->items[i + 1];
        if (k->kind == K_ALIAS || !is_merge_key(k)) {
            if (push_item(&tmp, k) || push_item(&tmp, v))
                rc = oom(c, k);
            continue;
        }
        const struct node *rv = res(v);
        size_t nsrc = rv->kind == K_SEQ ? rv->n : 1;
        for (size_t s = 0; s < nsrc && !rc; s++) {
            const struct node *src = rv->kind == K_SEQ ? res(rv->items[s]) : rv;
            if (src->kind != K_MAP) {
                build_where(c, where, sizeof where);
                rc = fail(c, rv->kind == K_SEQ ? rv->items[s] : v,
                          "'<<' takes a mapping or a sequence of mappings%s", where);
                break;
            }
            for (size_t j = 0; j + 1 < src->n && !rc; j += 2) {
                const struct node *sk = res(src->items[j]);
                if (spend(c, v, 1, 0))
                    rc = -1;
                else if (json_object_get(seen, sk->text))
                    continue;
                else if (json_object_set_new(seen, sk->text, json_true()) ||
                         push_item(&tmp, src->items[j]) || push_item(&tmp, src->items[j + 1]))
                    rc = oom(c, v);
            }
        }
    }
    json_decref(seen);
    if (rc) {
        free(tmp.items);
        return rc;
    }
    free(m->items);
    m->items = tmp.items;
    m->n = tmp.n;
    m->cap = tmp.cap;
    return 0;
}

static int add_child(struct ctx *c, struct node *n)
{
    if (c->depth == 0) {
        c->root = n;
        return 0;
    }
    if (n->kind == K_ALIAS && c->depth + (size_t)n->target->height > PB_MANIFEST_MAX_DEPTH)
        return fail(c, n, "nesting deeper than %d levels (through an alias)",
                    PB_MANIFEST_MAX_DEPTH);
    if (push_item(c->stack[c->depth - 1].node, n))
        return oom(c, n);
    return 0;
}

static int add_anchor(struct ctx *c, const char *name, struct node *n)
{
    if (!name)
        return 0;
    if (c->n_anchors == c->cap_anchors) {
        size_t cap = c->cap_anchors ? c->cap_anchors * 2 : 16;
        struct node **a = realloc(c->anchors, cap * sizeof *a);
        if (!a)
            return oom(c, n);
        c->anchors = a;
        c->cap_anchors = cap;
    }
    /* A redefined anchor refers to its latest node from here on. */
    if (json_object_set_new(c->anchor_idx, name, json_integer((json_int_t)c->n_anchors)))
        return oom(c, n);
    c->anchors[c->n_anchors++] = n;
    return 0;
}

static int on_event(struct ctx *c, yaml_event_t *ev)
{
    switch (ev->type) {
    case YAML_DOCUMENT_START_EVENT:
        if (++c->docs > 1)
            return fail_at(c, ev->start_mark, "a manifest is a single YAML document");
        return 0;
    case YAML_ALIAS_EVENT: {
        const char *name = (const char *)ev->data.alias.anchor;
        json_t *idx = json_object_get(c->anchor_idx, name);
        if (!idx)
            return fail_at(c, ev->start_mark, "unknown alias '*%s'", clip(c, name));
        struct node *n = new_node(c, K_ALIAS, ev->start_mark, NULL, NULL, 0);
        if (!n)
            return oom(c, NULL);
        n->target = c->anchors[json_integer_value(idx)];
        return add_child(c, n);
    }
    case YAML_SCALAR_EVENT: {
        struct node *n = new_node(c, K_SCALAR, ev->start_mark, (const char *)ev->data.scalar.tag,
                                  ev->data.scalar.value, ev->data.scalar.length);
        if (!n)
            return oom(c, NULL);
        n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
        if (add_anchor(c, (const char *)ev->data.scalar.anchor, n))
            return -1;
        return add_child(c, n);
    }
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT: {
        bool seq = ev->type == YAML_SEQUENCE_START_EVENT;
        if (c->depth >= PB_MANIFEST_MAX_DEPTH)
            return fail_at(c, ev->start_mark, "nesting deeper than %d levels",
                           PB_MANIFEST_MAX_DEPTH);
        const char *tag = (const char *)(seq ? ev->data.sequence_start.tag
                                             : ev->data.mapping_start.tag);
        const char *anchor = (const char *)(seq ? ev->data.sequence_start.anchor
                                                : ev->data.mapping_start.anchor);
        struct node *n = new_node(c, seq ? K_SEQ : K_MAP, ev->start_mark, tag, NULL, 0);
        if (!n)
            return oom(c, NULL);
        char *a = anchor ? strdup(anchor) : NULL;
        if (anchor && !a)
            return oom(c, n);
        c->stack[c->depth].node = n;
        c->stack[c->depth].anchor = a;
        c->depth++;
        return 0;
    }
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT: {
        struct frame f = c->stack[--c->depth];
        struct node *n = f.node;
        int rc = n->kind == K_MAP ? finish_map(c, n) : 0;
        for (size_t i = 0; i < n->n && !rc; i++) {
            int h = res(n->items[i])->height;
            if (h > n->height)
                n->height = h;
        }
        n->height++;
        if (!rc)
            rc = add_anchor(c, f.anchor, n);
        free(f.anchor);
        if (!rc)
            rc = add_child(c, n);
        return rc;
    }
    default:
        return 0;
    }
}

/* libyaml's message, at its position. Reader errors (bad encoding, control
 * characters) only carry a byte offset. */
static int syntax_error(struct ctx *c, const yaml_parser_t *p, const char *text, size_t len)
{
    const char *problem = p->problem ? p->problem : "cannot parse the document";
    if (p->error == YAML_MEMORY_ERROR)
        return oom(c, NULL);
    if (p->error == YAML_READER_ERROR) {
        size_t line = 1, col = 1, end = p->problem_offset < len ? p->problem_offset : len;
        for (size_t i = 0; i < end; i++) {
            if (text[i] == '\n') {
                line++;
                col = 1;
            } else if (((unsigned char)text[i] & 0xC0) != 0x80) {
                col++;
            }
        }
        return fail_at(c, (yaml_mark_t){0, line - 1, col - 1}, "invalid YAML: %s", problem);
    }
    if (p->context && (p->context_mark.line != p->problem_mark.line ||
                       p->context_mark.column != p->problem_mark.column))
        return fail_at(c, p->problem_mark, "invalid YAML: %s %s that starts at %zu:%zu",
                       problem, p->context, p->context_mark.line + 1,
                       p->context_mark.column + 1);
    return fail_at(c, p->problem_mark, "invalid YAML: %s", problem);
}

static int build(struct ctx *c, const char *text, size_t len)
{
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p))
        return oom(c, NULL);
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    int rc = 0;
    for (bool done = false; !done && !rc;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&p, &ev)) {
            rc = syntax_error(c, &p, text, len);
            break;
        }
        done = ev.type == YAML_STREAM_END_EVENT;
        rc = on_event(c, &ev);
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&p);
    while (c->depth > 0)
        free(c->stack[--c->depth].anchor);
    return rc;
}

/* ---- scalars ----------------------------------------------------------- */

static bool in_list(const char *s, const char *const *list)
{
    for (; *list; list++)
        if (!strcmp(s, *list))
            return true;
    return false;
}

static const char *const NULLS[] = {"", "~", "null", "Null", "NULL", NULL};
static const char *const TRUES[] = {"true", "True", "TRUE", NULL};
static const char *const FALSES[] = {"false", "False", "FALSE", NULL};

static bool tag_is(const struct node *r, const char *tag)
{
    return r->tag && !strcmp(r->tag, tag);
}

/* Core schema: an untagged plain scalar, or one tagged with the type itself. */
static bool resolves(const struct node *r, const char *tag)
{
    return r->tag ? !strcmp(r->tag, tag) : r->plain;
}

static bool is_null(const struct node *n)
{
    const struct node *r = res(n);
    return r->kind == K_SCALAR && resolves(r, YAML_NULL_TAG) && in_list(r->text, NULLS);
}

static bool digits(const char *s, const char *set)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!strchr(set, *s))
            return false;
    return true;
}

static bool int_text(const char *s)
{
    if (!strncmp(s, "0x", 2))
        return digits(s + 2, "0123456789abcdefABCDEF");
    if (!strncmp(s, "0o", 2))
        return digits(s + 2, "01234567");
    if (*s == '-' || *s == '+')
        s++;
    return digits(s, "0123456789");
}

static bool float_text(const char *s)
{
    size_t i = 0, d = 0;
    if (s[i] == '-' || s[i] == '+')
        i++;
    for (; s[i] >= '0' && s[i] <= '9'; i++)
        d++;
    if (s[i] == '.')
        for (i++; s[i] >= '0' && s[i] <= '9'; i++)
            d++;
    if (!d)
        return false;
    if (s[i] == 'e' || s[i] == 'E') {
        i++;
        if (s[i] == '-' || s[i] == '+')
            i++;
        if (s[i] < '0' || s[i] > '9')
            return false;
        while (s[i] >= '0' && s[i] <= '9')
            i++;
    }
    return s[i] == '\0';
}

static json_t *number(const char *s, bool is_int)
{
    if (is_int) {
        errno = 0;
        char *end;
        long long v;
        if (!strncmp(s, "0x", 2))
            v = strtoll(s + 2, &end, 16);
        else if (!strncmp(s, "0o", 2))
            v = strtoll(s + 2, &end, 8);
        else
            v = strtoll(s, &end, 10);
        if (errno != ERANGE && !*end)
            return json_integer((json_int_t)v);
        if (strncmp(s, "0x", 2) && strncmp(s, "0o", 2))
            return json_real(strtod(s, NULL));
        return NULL;
    }
    return json_real(strtod(s, NULL));
}

/* ---- generic conversion (delivery, backfill) --------------------------- */

/* "tag:yaml.org,2002:int" as "!!int", clipped for a message. */
static const char *short_tag(struct ctx *c, const char *tag)
{
    const char *p = "tag:yaml.org,2002:";
    size_t n = strlen(p);
    if (strncmp(tag, p, n))
        return clip(c, tag);
    char tmp[96];
    snprintf(tmp, sizeof tmp, "!!%s", tag + n);
    return clip(c, tmp);
}

static json_t *scalar_json(struct ctx *c, const struct node *n, const char *path)
{
    const struct node *r = res(n);
    if (tag_is(r, YAML_STR_TAG) || (!r->tag && !r->plain)) {
        json_t *s = json_stringn(r->text, r->len);
        if (!s)
            oom(c, n);
        return s;
    }
    if (r->tag && !tag_is(r, YAML_NULL_TAG) && !tag_is(r, YAML_BOOL_TAG) &&
        !tag_is(r, YAML_INT_TAG) && !tag_is(r, YAML_FLOAT_TAG)) {
        fail(c, n, "unsupported tag '%s' in %s", short_tag(c, r->tag), path);
        return NULL;
    }
    json_t *v = NULL;
    bool matched = true;
    if (resolves(r, YAML_NULL_TAG) && in_list(r->text, NULLS))
        v = json_null();
    else if (resolves(r, YAML_BOOL_TAG) && in_list(r->text, TRUES))
        v = json_true();
    else if (resolves(r, YAML_BOOL_TAG) && in_list(r->text, FALSES))
        v = json_false();
    else if ((resolves(r, YAML_INT_TAG) || resolves(r, YAML_FLOAT_TAG)) && int_text(r->text))
        v = number(r->text, !tag_is(r, YAML_FLOAT_TAG));
    else if (resolves(r, YAML_FLOAT_TAG) && float_text(r->text))
        v = number(r->text, false);
    else if (!r->tag)
        v = json_stringn(r->text, r->len);
    else
        matched = false;
    if (!matched) {
        fail(c, n, "'%s' is not a valid %s in %s", clip(c, r->text), short_tag(c, r->tag), path);
        return NULL;
    }
    if (!v)
        fail(c, n, "'%s' cannot be represented in JSON (in %s)", clip(c, r->text), path);
    return v;
}

/* Any YAML value as JSON. Depth is bounded by the tree's construction. */
static json_t *to_json(struct ctx *c, const struct node *n, const char *path)
{
    const struct node *r = res(n);
    if (spend(c, n, 1, r->kind == K_SCALAR ? r->len : 0))
        return NULL;
    if (r->kind == K_SCALAR)
        return scalar_json(c, n, path);
    if (r->tag && !tag_is(r, r->kind == K_SEQ ? YAML_SEQ_TAG : YAML_MAP_TAG)) {
        fail(c, n, "unsupported tag '%s' in %s", short_tag(c, r->tag), path);
        return NULL;
    }
    json_t *out = r->kind == K_SEQ ? json_array() : json_object();
    if (!out) {
        oom(c, n);
        return NULL;
    }
    if (r->kind == K_SEQ) {
        for (size_t i = 0; i < r->n; i++) {
            json_t *v = to_json(c, r->items[i], path);
            if (!v || json_array_append_new(out, v)) {
                if (v)
                    oom(c, r->items[i]);
                json_decref(out);
                return NULL;
            }
        }
        return out;
    }
    for (size_t i = 0; i + 1 < r->n; i += 2) {
        const struct node *k = res(r->items[i]);
        json_t *v = spend(c, r->items[i], 0, k->len) ? NULL : to_json(c, r->items[i + 1], path);
        if (!v || json_object_set_new(out, k->text, v)) {
            if (v)
                oom(c, r->items[i]);
            json_decref(out);
            return NULL;
        }
    }
    return out;
}

/* ---- typed values ------------------------------------------------------ */

/* A string field: any non-null scalar, its text. nonempty refuses "". */
static int get_str(struct ctx *c, const struct node *n, const char *path, bool nonempty,
                   const char **out)
{
    const struct node *r = res(n);
    if (r->kind != K_SCALAR || is_null(n))
        return fail(c, n, "%s must be a string", path);
    if (strlen(r->text) != r->len)
        return fail(c, n, "%s must not contain NUL characters", path);
    if (nonempty && !r->len)
        return fail(c, n, "%s must not be empty", path);
    *out = r->text;
    return 0;
}

static int get_bool(struct ctx *c, const struct node *n, const char *path, bool *out)
{
    const struct node *r = res(n);
    if (r->kind == K_SCALAR && resolves(r, YAML_BOOL_TAG)) {
        if (in_list(r->text, TRUES)) {
            *out = true;
            return 0;
        }
        if (in_list(r->text, FALSES)) {
            *out = false;
            return 0;
        }
    }
    return fail(c, n, "%s must be true or false", path);
}

/* A mapping, or NULL (absent) for an explicit null when optional. */
static int get_map(struct ctx *c, const struct node *n, const char *path, bool optional,
                   const struct node **out)
{
    *out = NULL;
    if (optional && is_null(n))
        return 0;
    if (res(n)->kind != K_MAP)
        return fail(c, n, "%s must be a mapping", path);
    *out = res(n);
    return 0;
}

static int get_seq(struct ctx *c, const struct node *n, const char *path, bool optional,
                   const struct node **out)
{
    *out = NULL;
    if (optional && is_null(n))
        return 0;
    if (res(n)->kind != K_SEQ)
        return fail(c, n, "%s must be a sequence", path);
    *out = res(n);
    return 0;
}

/* Sorts a mapping's values into vals[] by the index of their key in keys[]
 * (NULL-terminated); any other key is an error. kn[] gets the key nodes. */
static int take_keys(struct ctx *c, const struct node *m, const char *path,
                     const char *const *keys, const struct node **vals, const struct node **kn)
{
    size_t nkeys = 0;
    while (keys[nkeys])
        nkeys++;
    for (size_t i = 0; i < nkeys; i++)
        vals[i] = kn[i] = NULL;
    for (size_t i = 0; i + 1 < m->n; i += 2) {
        const struct node *k = res(m->items[i]);
        if (spend(c, m->items[i], 1, 0))
            return -1;
        size_t j = 0;
        while (j < nkeys && strcmp(keys[j], k->text))
            j++;
        if (j == nkeys)
            return path[0] ? fail(c, m->items[i], "unknown key '%s' in %s", clip(c, k->text), path)
                           : fail(c, m->items[i], "unknown key '%s' at the top level",
                                  clip(c, k->text));
        vals[j] = m->items[i + 1];
        kn[j] = m->items[i];
    }
    return 0;
}

static int set(struct ctx *c, const struct node *at, json_t *obj, const char *key, json_t *v)
{
    if (!v || json_object_set_new(obj, key, v))
        return oom(c, at);
    return 0;
}

static int set_str(struct ctx *c, const struct node *at, json_t *obj, const char *key,
                   const char *s)
{
    return set(c, at, obj, key, json_string(s));
}

/* Remembers `name` in `seen` with the node's position; when it is already
 * there, *first gets that position's "L:C" and 1 is returned. */
static int remember(struct ctx *c, json_t *seen, const char *name, const struct node *n,
                    char *first, size_t first_len)
{
    json_t *pos = json_object_get(seen, name);
    if (pos) {
        snprintf(first, first_len, "%lld:%lld",
                 (long long)json_integer_value(json_array_get(pos, 0)),
                 (long long)json_integer_value(json_array_get(pos, 1)));
        return 1;
    }
    if (json_object_set_new(seen, name,
                            json_pack("[II]", (json_int_t)n->mark.line + 1,
                                      (json_int_t)n->mark.column + 1)))
        return oom(c, n);
    return 0;
}

/* ---- the manifest ------------------------------------------------------ */

static int append(struct ctx *c, const struct node *at, json_t *list, json_t *v)
{
    if (!v || json_array_append_new(list, v))
        return oom(c, at);
    return 0;
}

static const char *const FIELD_KEYS[] = {"fieldName", "mapToName", "mapToDisplayName", NULL};

/* One entry of requiredFields/optionalFields into `list`; `names` and
 * `mapped` catch a field or a mapped name used twice in the object. */
static int walk_field(struct ctx *c, const struct node *n, const char *path, const char *obj_path,
                      json_t *names, json_t *mapped, json_t *list)
{
    const struct node *r = res(n);
    const char *field = NULL, *map_to = NULL, *display = NULL;
    const struct node *fnode = n, *mnode = NULL;
    char p[256], first[48]; /* path: up to 223 */
    if (r->kind == K_SCALAR && !is_null(n)) {
        if (get_str(c, n, path, true, &field))
            return -1;
    } else if (r->kind != K_MAP) {
        return fail(c, n, "%s must be a field name or a mapping", path);
    } else {
        const struct node *m = r, *v[3], *k[3];
        if (take_keys(c, m, path, FIELD_KEYS, v, k))
            return -1;
        if (!v[0] && !v[1])
            return fail(c, n, "%s needs fieldName or mapToName", path);
        if (v[0]) {
            snprintf(p, sizeof p, "%s.fieldName", path);
            if (get_str(c, v[0], p, true, &field))
                return -1;
            fnode = v[0];
        }
        if (v[1]) {
            snprintf(p, sizeof p, "%s.mapToName", path);
            if (get_str(c, v[1], p, true, &map_to))
                return -1;
            mnode = v[1];
        }
        if (v[2]) {
            if (!v[1])
                return fail(c, k[2], "%s.mapToDisplayName needs mapToName", path);
            snprintf(p, sizeof p, "%s.mapToDisplayName", path);
            if (get_str(c, v[2], p, false, &display))
                return -1;
        }
    }
    int dup;
    if (field && (dup = remember(c, names, field, fnode, first, sizeof first)))
        return dup < 0 ? -1
                       : fail(c, fnode, "field '%s' is listed twice in %s (first at %s)",
                              clip(c, field), obj_path, first);
    if (map_to && (dup = remember(c, mapped, map_to, mnode, first, sizeof first)))
        return dup < 0 ? -1
                       : fail(c, mnode, "mapToName '%s' is used twice in %s (first at %s)",
                              clip(c, map_to), obj_path, first);
    json_t *out = json_object();
    if (!out)
        return oom(c, n);
    if ((field && set_str(c, n, out, "fieldName", field)) ||
        (map_to && set_str(c, n, out, "mapToName", map_to)) ||
        (display && set_str(c, n, out, "mapToDisplayName", display))) {
        json_decref(out);
        return -1;
    }
    return append(c, n, list, out);
}

static const char *const WRITE_OBJ_KEYS[] = {"objectName", "inheritMapping", NULL};
/* Keys from delivery on are kept as generic JSON: Ampersand manifests use
 * them and plugboard does not interpret them yet. */
static const char *const READ_OBJ_KEYS[] = {"objectName",     "destination", "schedule",
                                            "requiredFields", "optionalFields", "delivery",
                                            "backfill",       "optionalFieldsAuto",
                                            "mapToName",      "mapToDisplayName", NULL};
enum { R_NAME, R_DEST, R_SCHED, R_REQ, R_OPT, R_DELIVERY, R_BACKFILL, R_OPT_AUTO, R_MAP_NAME,
       R_MAP_DISPLAY, R_N };

static int walk_object(struct ctx *c, const struct node *n, const char *path, bool is_read,
                       json_t *seen, const char *list_path, json_t *out)
{
    const struct node *m, *v[R_N], *k[R_N];
    const char *name;
    char p[192], first[48]; /* path: up to 159 */
    if (get_map(c, n, path, false, &m) ||
        take_keys(c, m, path, is_read ? READ_OBJ_KEYS : WRITE_OBJ_KEYS, v, k))
        return -1;
    if (!v[R_NAME])
        return fail(c, n, "%s.objectName is missing", path);
    snprintf(p, sizeof p, "%s.objectName", path);
    if (get_str(c, v[R_NAME], p, true, &name))
        return -1;
    int dup = remember(c, seen, name, v[R_NAME], first, sizeof first);
    if (dup)
        return dup < 0 ? -1
                       : fail(c, v[R_NAME], "duplicate objectName '%s' in %s (first at %s)",
                              clip(c, name), list_path, first);
    if (set_str(c, n, out, "objectName", name))
        return -1;
    if (!is_read) {
        bool inherit = false;
        snprintf(p, sizeof p, "%s.inheritMapping", path);
        if (v[1] && get_bool(c, v[1], p, &inherit))
            return -1;
        return set(c, n, out, "inheritMapping", json_boolean(inherit));
    }
    static const char *const str_keys[] = {"objectName", "destination", "schedule"};
    for (int i = R_DEST; i <= R_SCHED; i++) {
        const char *s;
        if (!v[i])
            continue;
        snprintf(p, sizeof p, "%s.%s", path, str_keys[i]);
        if (get_str(c, v[i], p, false, &s) || set_str(c, v[i], out, str_keys[i], s))
            return -1;
    }
    json_t *names = json_object(), *mapped = json_object();
    int rc = names && mapped ? 0 : oom(c, n);
    for (int i = R_REQ; i <= R_OPT && !rc; i++) {
        const char *key = i == R_REQ ? "requiredFields" : "optionalFields";
        const struct node *seq = NULL;
        json_t *list = json_array();
        snprintf(p, sizeof p, "%s.%s", path, key);
        if (!list)
            rc = oom(c, n);
        else if (v[i])
            rc = get_seq(c, v[i], p, true, &seq);
        for (size_t j = 0; seq && j < seq->n && !rc; j++) {
            char fp[224];
            snprintf(fp, sizeof fp, "%s[%zu]", p, j);
            rc = spend(c, seq->items[j], 1, 0) ||
                 walk_field(c, seq->items[j], fp, path, names, mapped, list);
        }
        if (rc)
            json_decref(list);
        else
            rc = set(c, n, out, key, list);
    }
    json_decref(names);
    json_decref(mapped);
    for (int i = R_DELIVERY; is_read && i < R_N && !rc; i++) {
        if (!v[i])
            continue;
        const char *key = READ_OBJ_KEYS[i];
        snprintf(p, sizeof p, "%s.%s", path, key);
        json_t *j = to_json(c, v[i], p);
        rc = j ? set(c, v[i], out, key, j) : -1;
    }
    return rc ? -1 : 0;
}

/* write: or read: {objects: [...]}; absent or null is {"objects": []}. */
static int walk_objects_section(struct ctx *c, const struct node *n, const char *path,
                                bool is_read, json_t *integ)
{
    static const char *const keys[] = {"objects", NULL};
    const struct node *m = NULL, *v[1], *k[1], *seq = NULL;
    char p[128], op[160]; /* path: up to 95 */
    if (n && (get_map(c, n, path, true, &m) || (m && take_keys(c, m, path, keys, v, k))))
        return -1;
    snprintf(p, sizeof p, "%s.objects", path);
    if (m && v[0] && get_seq(c, v[0], p, true, &seq))
        return -1;
    json_t *list = json_array(), *seen = json_object();
    int rc = list && seen ? 0 : oom(c, n);
    for (size_t i = 0; seq && i < seq->n && !rc; i++) {
        json_t *obj = json_object();
        snprintf(op, sizeof op, "%s[%zu]", p, i);
        if (!obj)
            rc = oom(c, seq->items[i]);
        else if (spend(c, seq->items[i], 1, 0) ||
                 walk_object(c, seq->items[i], op, is_read, seen, p, obj))
            rc = -1;
        if (rc)
            json_decref(obj);
        else
            rc = append(c, seq->items[i], list, obj);
    }
    json_decref(seen);
    json_t *section = rc ? NULL : json_object();
    if (!rc && (!section || json_object_set(section, "objects", list)))
        rc = oom(c, n);
    json_decref(list);
    if (!rc)
        return set(c, n, integ, is_read ? "read" : "write", section);
    json_decref(section);
    return rc;
}

static bool valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > PB_MANIFEST_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        bool alnum = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
        if (!alnum && (i == 0 || (ch != '_' && ch != '-')))
            return false;
    }
    return true;
}

static const char *const INTEG_KEYS[] = {"name", "provider", "displayName", "proxy",
                                         "write", "read",    NULL};
enum { I_NAME, I_PROVIDER, I_DISPLAY, I_PROXY, I_WRITE, I_READ, I_N };

static int walk_integration(struct ctx *c, const struct node *n, const char *path, json_t *names,
                            json_t *out)
{
    const struct node *m, *v[I_N], *k[I_N];
    const char *name, *provider, *display;
    char p[96], first[48]; /* path: up to 47 */
    if (get_map(c, n, path, false, &m) || take_keys(c, m, path, INTEG_KEYS, v, k))
        return -1;

    if (!v[I_NAME])
        return fail(c, n, "%s.name is missing", path);
    snprintf(p, sizeof p, "%s.name", path);
    if (get_str(c, v[I_NAME], p, true, &name))
        return -1;
    if (!valid_name(name))
        return fail(c, v[I_NAME],
                    "%s '%s' is not a valid name (letters, digits, '_' and '-', starting with a "
                    "letter or digit, at most %d characters)",
                    p, clip(c, name), PB_MANIFEST_NAME_MAX);
    int dup = remember(c, names, name, v[I_NAME], first, sizeof first);
    if (dup)
        return dup < 0 ? -1
                       : fail(c, v[I_NAME], "duplicate integration name '%s' (first at %s)", name,
                              first);
    if (set_str(c, n, out, "name", name))
        return -1;

    if (!v[I_PROVIDER])
        return fail(c, n, "%s.provider is missing", path);
    snprintf(p, sizeof p, "%s.provider", path);
    if (get_str(c, v[I_PROVIDER], p, true, &provider))
        return -1;
    if (c->provider_ok && !c->provider_ok(provider, c->provider_ctx))
        return fail(c, v[I_PROVIDER], "provider '%s' is not enabled in plugboard.yaml",
                    clip(c, provider));
    if (set_str(c, n, out, "provider", provider))
        return -1;

    if (v[I_DISPLAY]) {
        snprintf(p, sizeof p, "%s.displayName", path);
        if (get_str(c, v[I_DISPLAY], p, false, &display) ||
            set_str(c, v[I_DISPLAY], out, "displayName", display))
            return -1;
    }

    bool enabled = false;
    if (v[I_PROXY]) {
        static const char *const keys[] = {"enabled", NULL};
        const struct node *pm, *pv[1], *pk[1];
        snprintf(p, sizeof p, "%s.proxy", path);
        if (get_map(c, v[I_PROXY], p, true, &pm) || (pm && take_keys(c, pm, p, keys, pv, pk)))
            return -1;
        snprintf(p, sizeof p, "%s.proxy.enabled", path);
        if (pm && pv[0] && get_bool(c, pv[0], p, &enabled))
            return -1;
    }
    json_t *proxy = json_pack("{sb}", "enabled", enabled);
    if (set(c, n, out, "proxy", proxy))
        return -1;

    snprintf(p, sizeof p, "%s.write", path);
    if (walk_objects_section(c, v[I_WRITE], p, false, out))
        return -1;
    snprintf(p, sizeof p, "%s.read", path);
    return walk_objects_section(c, v[I_READ], p, true, out);
}

static json_t *walk(struct ctx *c)
{
    static const char *const keys[] = {"specVersion", "integrations", NULL};
    const struct node *root = c->root, *m, *v[2], *k[2], *seq;
    const char *version;
    if (!root || is_null(root)) {
        fail(c, root, "the manifest is empty");
        return NULL;
    }
    if (res(root)->kind != K_MAP) {
        fail(c, root, "the manifest must be a mapping");
        return NULL;
    }
    m = res(root);
    if (take_keys(c, m, "", keys, v, k))
        return NULL;
    if (!v[0]) {
        fail(c, root, "specVersion is missing");
        return NULL;
    }
    if (get_str(c, v[0], "specVersion", false, &version))
        return NULL;
    if (strcmp(version, "1.0.0")) {
        fail(c, v[0], "unsupported specVersion '%s' (expected 1.0.0)", clip(c, version));
        return NULL;
    }
    if (!v[1]) {
        fail(c, root, "integrations is missing");
        return NULL;
    }
    if (get_seq(c, v[1], "integrations", false, &seq))
        return NULL;
    if (seq->n == 0) {
        fail(c, v[1], "integrations must not be empty");
        return NULL;
    }
    json_t *list = json_array(), *names = json_object();
    int rc = list && names ? 0 : oom(c, root);
    for (size_t i = 0; i < seq->n && !rc; i++) {
        char p[48];
        snprintf(p, sizeof p, "integrations[%zu]", i);
        json_t *integ = json_object();
        if (!integ)
            rc = oom(c, seq->items[i]);
        else if (spend(c, seq->items[i], 1, 0) ||
                 walk_integration(c, seq->items[i], p, names, integ))
            rc = -1;
        if (rc)
            json_decref(integ);
        else
            rc = append(c, seq->items[i], list, integ);
    }
    json_decref(names);
    if (rc) {
        json_decref(list);
        return NULL;
    }
    json_t *doc = json_object();
    if (!doc || json_object_set_new(doc, "specVersion", json_string("1.0.0")) ||
        json_object_set(doc, "integrations", list)) {
        oom(c, root);
        json_decref(doc);
        doc = NULL;
    }
    json_decref(list);
    return doc;
}

int pb_manifest_parse(const char *text, size_t len, const char *source,
                      int (*provider_ok)(const char *provider, void *ctx), void *ctx,
                      json_t **out, char *err, size_t err_len, int *line, int *col)
{
    struct ctx c = {
        .source = source ? source : "amp.yaml",
        .err = err,
        .err_len = err_len,
        .provider_ok = provider_ok,
        .provider_ctx = ctx,
    };
    json_t *doc = NULL;
    if (err && err_len)
        err[0] = '\0';
    if (line)
        *line = 0;
    if (col)
        *col = 0;
    if (out)
        *out = NULL;
    if (!out || (!text && len)) {
        fail(&c, NULL, "invalid arguments");
    } else if (len > PB_MANIFEST_MAX_BYTES) {
        fail(&c, NULL, "the manifest is too large (%zu bytes; the limit is 1 MiB)", len);
    } else if (!(c.anchor_idx = json_object())) {
        oom(&c, NULL);
    } else if (build(&c, text ? text : "", len) == 0) {
        doc = walk(&c);
    }
    free_nodes(&c);
    free(c.anchors);
    json_decref(c.anchor_idx);
    if (!doc) {
        if (!c.failed)
            fail(&c, NULL, "out of memory");
        if (line)
            *line = c.line;
        if (col)
            *col = c.col;
        return -1;
    }
    *out = doc;
    return 0;
}
