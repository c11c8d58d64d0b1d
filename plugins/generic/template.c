/*
 * Templates of providers.yaml entries: ${...} variables, base64(...) and
 * `a || b` alternatives in URLs. See template.h.
 */
#include "template.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_NESTING 8

/* ---- a growable buffer that wipes what it held (values may be secrets) ---- */

struct buf {
    char *p;
    size_t len, cap;
    int oom;
};

static void b_add(struct buf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = malloc(cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        if (b->p) {
            memcpy(p, b->p, b->len);
            volatile char *v = b->p;
            for (size_t i = 0; i < b->cap; i++)
                v[i] = 0;
            free(b->p);
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void b_free(struct buf *b)
{
    if (b->p) {
        volatile char *v = b->p;
        for (size_t i = 0; i < b->cap; i++)
            v[i] = 0;
        free(b->p);
    }
    memset(b, 0, sizeof *b);
}

static void set_err(struct gen_tpl_err *err, enum pb_errcode code, const char *fmt, ...)
    PB_PRINTF(3, 4);

static void set_err(struct gen_tpl_err *err, enum pb_errcode code, const char *fmt, ...)
{
    if (!err)
        return;
    va_list ap;
    va_start(ap, fmt);
    err->code = code;
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
}

/* ---- syntax ------------------------------------------------------------------ */

static int starts(const char *p, const char *end, const char *lit)
{
    size_t n = strlen(lit);
    return (size_t)(end - p) >= n && memcmp(p, lit, n) == 0;
}

static int elem_start(const char *p, const char *end)
{
    return starts(p, end, "${") || starts(p, end, "base64(");
}

static const char *paren_end(const char *p, const char *end, int depth);

/* p at "${" or "base64(": just past the element, NULL when unterminated. */
static const char *elem_end(const char *p, const char *end, int depth)
{
    if (depth > MAX_NESTING)
        return NULL;
    if (starts(p, end, "${base64(")) {
        const char *q = paren_end(p + 9, end, depth + 1);
        return q && q + 1 < end && q[1] == '}' ? q + 2 : NULL;
    }
    if (starts(p, end, "${")) {
        const char *q = memchr(p + 2, '}', (size_t)(end - p - 2));
        return q ? q + 1 : NULL;
    }
    const char *q = paren_end(p + 7, end, depth + 1);
    return q ? q + 1 : NULL;
}

/* p just past '(': the matching ')', NULL when there is none. */
static const char *paren_end(const char *p, const char *end, int depth)
{
    int level = 1;
    while (p < end) {
        if (elem_start(p, end)) {
            p = elem_end(p, end, depth);
            if (!p)
                return NULL;
            continue;
        }
        if (*p == '(')
            level++;
        else if (*p == ')' && --level == 0)
            return p;
        p++;
    }
    return NULL;
}

/* ---- variables --------------------------------------------------------------- */

enum field { F_KEY, F_TOKEN, F_USER, F_PASS, F_CID, F_CSECRET, F_META };

static const struct {
    const char *name;
    enum field f;
} cred_fields[] = {
    {"username", F_USER},     {"password", F_PASS},           {"apiKey", F_KEY},
    {"api_key", F_KEY},       {"accessToken", F_TOKEN},       {"access_token", F_TOKEN},
    {"clientId", F_CID},      {"client_id", F_CID},           {"clientSecret", F_CSECRET},
    {"client_secret", F_CSECRET},
};

static const char *field_what(enum field f)
{
    switch (f) {
    case F_KEY: return "API key";
    case F_TOKEN: return "access token";
    case F_USER: return "username";
    case F_PASS: return "password";
    case F_CID: return "client id";
    case F_CSECRET: return "client secret";
    default: return "value";
    }
}

static int name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '-' || c == '.';
}

static int name_is(const char *s, size_t n, const char *lit)
{
    return strlen(lit) == n && memcmp(s, lit, n) == 0;
}

/* What ${name} reads; for F_META, key and klen give the metadata key. */
static int classify_var(const char *s, size_t n, enum field *f, const char **key, size_t *klen)
{
    for (size_t i = 0; i < n; i++)
        if (!name_char(s[i]))
            return -1;
    if (name_is(s, n, "apiKey")) {
        *f = F_KEY;
        return 0;
    }
    if (name_is(s, n, "accessToken")) {
        *f = F_TOKEN;
        return 0;
    }
    if (n > 17 && memcmp(s, "connectionConfig.", 17) == 0) {
        *f = F_META;
        *key = s + 17;
        *klen = n - 17;
        return 0;
    }
    if (n > 12 && memcmp(s, "credentials.", 12) == 0) {
        for (size_t i = 0; i < sizeof cred_fields / sizeof cred_fields[0]; i++)
            if (name_is(s + 12, n - 12, cred_fields[i].name)) {
                *f = cred_fields[i].f;
                return 0;
            }
    }
    return -1;
}

static const char *field_value(const struct pb_credentials *c, enum field f)
{
    if (!c)
        return NULL;
    switch (f) {
    case F_KEY: return c->api_key;
    case F_TOKEN: return c->access_token;
    case F_USER: return c->username;
    case F_PASS: return c->password;
    case F_CID: return c->client_id;
    case F_CSECRET: return c->client_secret;
    default: return NULL;
    }
}

/* ---- evaluation ---------------------------------------------------------------- */

#define MISSING (-2)

struct ev {
    const struct pb_core_services *svc;
    const struct pb_credentials *cred;
    int check; /* syntax and names only */
    struct gen_tpl_err *err;
};

/* A substituted value may not reshape a URL: no userinfo, query, fragment,
 * spaces or backslashes, and no '/' except when it starts the URL (a whole
 * instance URL such as ${connectionConfig.instance_url}). */
static int url_value_ok(const char *v, int leading)
{
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        if (*p <= 0x20 || *p >= 0x7f || strchr("@?#\\\"<>{}|^`", *p))
            return 0;
        if (*p == '/' && !leading)
            return 0;
    }
    return 1;
}

static int put_value(struct ev *e, enum gen_tpl_ctx ctx, struct buf *out, const char *v,
                     const char *label, size_t label_len)
{
    if (ctx == GEN_TPL_URL && !url_value_ok(v, out->len == 0)) {
        set_err(e->err, PB_EINVAL,
                "the value of ${%.*s} cannot be used in a URL (it holds '/', '@', '?', '#', "
                "spaces or other characters that would change the address)",
                (int)label_len, label);
        return -1;
    }
    b_add(out, v, strlen(v));
    return 0;
}

static int eval_span(struct ev *e, const char *p, const char *end, enum gen_tpl_ctx ctx,
                     struct buf *out, int depth);

static int eval_var(struct ev *e, const char *name, size_t n, enum gen_tpl_ctx ctx,
                    struct buf *out)
{
    enum field f;
    const char *key = NULL;
    size_t klen = 0;
    if (classify_var(name, n, &f, &key, &klen) != 0) {
        set_err(e->err, PB_ECONFIG,
                "unknown variable ${%.*s} (known: apiKey, accessToken, connectionConfig.<key>, "
                "credentials.username, credentials.password, credentials.apiKey)",
                (int)(n > 80 ? 80 : n), name);
        return -1;
    }
    if (e->check)
        return 0;
    const char *v;
    if (f == F_META) {
        char k[256];
        if (klen >= sizeof k) {
            set_err(e->err, PB_ECONFIG, "variable name ${%.*s...} is too long", 40, name);
            return -1;
        }
        memcpy(k, key, klen);
        k[klen] = '\0';
        v = e->cred ? e->svc->cred_meta(e->cred, k) : NULL;
        if (!v || !*v) {
            set_err(e->err, PB_EAUTH,
                    "missing value for ${%.*s}: the connection's providerMetadata has no '%s' "
                    "(set providerMetadata.%s.value)",
                    (int)n, name, k, k);
            return MISSING;
        }
    } else {
        v = field_value(e->cred, f);
        if (!v || (!*v && f != F_PASS)) {
            set_err(e->err, PB_EAUTH, "missing value for ${%.*s}: the connection has no %s",
                    (int)n, name, field_what(f));
            return MISSING;
        }
    }
    return put_value(e, ctx, out, v, name, n);
}

static int eval_base64(struct ev *e, const char *p, const char *end, enum gen_tpl_ctx ctx,
                       struct buf *out, int depth, const char **next)
{
    int braced = *p == '$';
    const char *inner = p + (braced ? 9 : 7);
    const char *q = paren_end(inner, end, depth + 1);
    if (!q || (braced && (q + 1 >= end || q[1] != '}'))) {
        set_err(e->err, PB_ECONFIG, "unterminated %s", braced ? "'${base64('" : "'base64('");
        return -1;
    }
    *next = braced ? q + 2 : q + 1;
    struct buf in = {0};
    int rc = eval_span(e, inner, q, GEN_TPL_TEXT, &in, depth + 1);
    if (rc != 0 || e->check) {
        b_free(&in);
        return rc;
    }
    if (in.oom) {
        b_free(&in);
        set_err(e->err, PB_ENOMEM, "out of memory");
        return -1;
    }
    char *enc = e->svc->base64_encode(in.p ? in.p : "", in.len);
    b_free(&in);
    if (!enc) {
        set_err(e->err, PB_ENOMEM, "out of memory");
        return -1;
    }
    rc = put_value(e, ctx, out, enc, "base64(...)", 11);
    volatile char *v = enc;
    for (size_t i = 0; enc[i]; i++)
        v[i] = 0;
    e->svc->str_free(enc);
    return rc;
}

static int eval_span(struct ev *e, const char *p, const char *end, enum gen_tpl_ctx ctx,
                     struct buf *out, int depth)
{
    if (depth > MAX_NESTING) {
        set_err(e->err, PB_ECONFIG, "base64() nested too deeply");
        return -1;
    }
    while (p < end) {
        if (starts(p, end, "${base64(") || starts(p, end, "base64(")) {
            const char *next;
            int rc = eval_base64(e, p, end, ctx, out, depth, &next);
            if (rc != 0)
                return rc;
            p = next;
            continue;
        }
        if (starts(p, end, "${")) {
            const char *q = memchr(p + 2, '}', (size_t)(end - p - 2));
            if (!q) {
                set_err(e->err, PB_ECONFIG, "unterminated '${' (missing '}')");
                return -1;
            }
            int rc = eval_var(e, p + 2, (size_t)(q - p - 2), ctx, out);
            if (rc != 0)
                return rc;
            p = q + 1;
            continue;
        }
        const char *run = p + 1;
        while (run < end && !elem_start(run, end))
            run++;
        b_add(out, p, (size_t)(run - p));
        p = run;
    }
    return 0;
}

/* The alternatives of `a || b || c`, trimmed; outside ${...} and base64(). */
struct alt {
    const char *p, *end;
};

static int split_alts(const char *tpl, int fallback, struct alt *alts, size_t max, size_t *n,
                      struct gen_tpl_err *err)
{
    const char *end = tpl + strlen(tpl), *start = tpl, *p = tpl;
    *n = 0;
    while (1) {
        int at_end = p >= end;
        if (!at_end && elem_start(p, end)) {
            const char *q = elem_end(p, end, 0);
            if (!q) {
                set_err(err, PB_ECONFIG, "unterminated '%s'", *p == '$' ? "${" : "base64(");
                return -1;
            }
            p = q;
            continue;
        }
        if (at_end || (fallback && starts(p, end, "||"))) {
            const char *a = start, *b = p;
            while (a < b && (*a == ' ' || *a == '\t'))
                a++;
            while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
                b--;
            if (a == b && (fallback && (*n > 0 || !at_end))) {
                set_err(err, PB_ECONFIG, "empty alternative around '||'");
                return -1;
            }
            if (*n == max) {
                set_err(err, PB_ECONFIG, "too many '||' alternatives");
                return -1;
            }
            alts[*n].p = a;
            alts[*n].end = b;
            (*n)++;
            if (at_end)
                return 0;
            p += 2;
            start = p;
            continue;
        }
        p++;
    }
}

int gen_tpl_check(const char *tpl, int fallback, struct gen_tpl_err *err)
{
    struct alt alts[8];
    size_t n;
    if (!tpl) {
        set_err(err, PB_ECONFIG, "missing template");
        return -1;
    }
    if (split_alts(tpl, fallback, alts, 8, &n, err) != 0)
        return -1;
    struct ev e = {.check = 1, .err = err};
    for (size_t i = 0; i < n; i++) {
        struct buf out = {0};
        int rc = eval_span(&e, alts[i].p, alts[i].end, GEN_TPL_TEXT, &out, 0);
        b_free(&out);
        if (rc != 0)
            return -1;
    }
    return 0;
}

int gen_tpl_uses(const char *tpl, const char *name)
{
    if (!tpl || !name)
        return 0;
    size_t n = strlen(name);
    for (const char *p = strstr(tpl, "${"); p; p = strstr(p + 2, "${"))
        if (strncmp(p + 2, name, n) == 0 && p[2 + n] == '}')
            return 1;
    return 0;
}

int gen_tpl_has_vars(const char *tpl)
{
    return tpl && (strstr(tpl, "${") || strstr(tpl, "base64("));
}

int gen_tpl_eval(const char *tpl, enum gen_tpl_ctx ctx, int fallback,
                 const struct pb_core_services *svc, const struct pb_credentials *cred,
                 char **out, struct gen_tpl_err *err)
{
    struct alt alts[8];
    size_t n;
    *out = NULL;
    if (!tpl) {
        set_err(err, PB_ECONFIG, "missing template");
        return -1;
    }
    if (split_alts(tpl, fallback, alts, 8, &n, err) != 0)
        return -1;
    struct gen_tpl_err first = {0};
    int have_first = 0;
    struct ev e = {.svc = svc, .cred = cred, .err = err};
    for (size_t i = 0; i < n; i++) {
        struct buf b = {0};
        int rc = eval_span(&e, alts[i].p, alts[i].end, ctx, &b, 0);
        if (rc == 0 && b.oom) {
            b_free(&b);
            set_err(err, PB_ENOMEM, "out of memory");
            return -1;
        }
        if (rc == 0 && b.len > 0) {
            *out = b.p;
            return 0;
        }
        b_free(&b);
        if (rc == -1)
            return -1;
        if (!have_first) {
            if (rc == MISSING)
                first = *err;
            else
                set_err(&first, PB_EAUTH, "the template evaluates to nothing");
            have_first = 1;
        }
    }
    if (err)
        *err = first;
    return -1;
}
