/* plugboard.yaml: loaded with libyaml's document API, validated key by key.
 * Every error names FILE:LINE:COL (1-based) of the offending node, and a
 * failed load never hands out a partly built config. */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#ifndef PB_DEFAULT_PLUGIN_DIR
#define PB_DEFAULT_PLUGIN_DIR "/usr/local/lib/plugboard/plugins"
#endif

#define PROVIDER_NAME_MAX 64
/* Provider options may use anchors/aliases; these bound what a cyclic or
 * exponentially aliased document can make us build. */
#define OPTION_DEPTH_MAX 64
#define OPTION_NODES_MAX 100000

#if defined(__GNUC__)
#define CFG_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define CFG_PRINTF(f, a)
#endif

struct ctx {
    const char *path;
    yaml_document_t *doc;
    char *err;
    size_t err_len;
    size_t option_nodes;
};

/* ---- errors ------------------------------------------------------------ */

static int failv(struct ctx *c, bool has_pos, size_t line, size_t col, const char *fmt,
                 va_list ap) CFG_PRINTF(5, 0);
static int failv(struct ctx *c, bool has_pos, size_t line, size_t col, const char *fmt, va_list ap)
{
    if (!c->err || c->err_len == 0)
        return -1;
    int n = has_pos ? snprintf(c->err, c->err_len, "%s:%zu:%zu: ", c->path, line, col)
                    : snprintf(c->err, c->err_len, "%s: ", c->path);
    if (n >= 0 && (size_t)n < c->err_len)
        vsnprintf(c->err + n, c->err_len - (size_t)n, fmt, ap);
    /* One line, whatever a quoted key or an env value contained. */
    for (char *p = c->err; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    return -1;
}

/* Error at a libyaml mark (0-based line and column). */
static int fail_mark(struct ctx *c, yaml_mark_t m, const char *fmt, ...) CFG_PRINTF(3, 4);
static int fail_mark(struct ctx *c, yaml_mark_t m, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    failv(c, true, m.line + 1, m.column + 1, fmt, ap);
    va_end(ap);
    return -1;
}

/* Error at a node, or about the whole file when n is NULL. */
static int fail(struct ctx *c, const yaml_node_t *n, const char *fmt, ...) CFG_PRINTF(3, 4);
static int fail(struct ctx *c, const yaml_node_t *n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (n)
        failv(c, true, n->start_mark.line + 1, n->start_mark.column + 1, fmt, ap);
    else
        failv(c, false, 0, 0, fmt, ap);
    va_end(ap);
    return -1;
}

static int oom(struct ctx *c)
{
    return fail(c, NULL, "out of memory");
}

/* ---- small string helpers ---------------------------------------------- */

struct buf {
    char *p;
    size_t len, cap;
};

static int buf_add(struct buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return -1;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

static char *concat(const char *a, const char *b, const char *c3)
{
    size_t la = strlen(a), lb = strlen(b), lc = strlen(c3);
    char *s = malloc(la + lb + lc + 1);
    if (!s)
        return NULL;
    memcpy(s, a, la);
    memcpy(s + la, b, lb);
    memcpy(s + la + lb, c3, lc + 1);
    return s;
}

/* dir + "/" + name, without doubling a trailing slash of dir. */
static char *path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir);
    return concat(dir, n && dir[n - 1] == '/' ? "" : "/", name);
}

static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return strdup(".");
    if (slash == path)
        return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

static bool all_digits(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

/* A TCP port written as 1-5 decimal digits, 0..65535. */
static bool parse_port(const char *s, size_t n, int *port)
{
    if (n > 5 || !all_digits(s, n))
        return false;
    long v = 0;
    for (size_t i = 0; i < n; i++)
        v = v * 10 + (s[i] - '0');
    if (v > 65535)
        return false;
    *port = (int)v;
    return true;
}

static bool host_char(char ch, bool bracketed)
{
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'))
        return true;
    if (ch == '.' || ch == '-' || ch == '_')
        return true;
    return bracketed && (ch == ':' || ch == '%');
}

static bool valid_host(const char *s, size_t n, bool bracketed)
{
    for (size_t i = 0; i < n; i++)
        if (!host_char(s[i], bracketed))
            return false;
    return true;
}

/* One host field of "host:port"-like text: "[v6]" or a name without ':'.
 * Advances *s past the field; *host and *hlen get the text without brackets. */
static bool take_host(const char **s, const char **host, size_t *hlen)
{
    const char *p = *s;
    if (*p == '[') {
        const char *end = strchr(p, ']');
        if (!end || end == p + 1 || !memchr(p + 1, ':', (size_t)(end - p - 1)) ||
            !valid_host(p + 1, (size_t)(end - p - 1), true))
            return false;
        *host = p + 1;
        *hlen = (size_t)(end - p - 1);
        *s = end + 1;
        return true;
    }
    size_t n = strcspn(p, ":");
    if (!valid_host(p, n, false))
        return false;
    *host = p;
    *hlen = n;
    *s = p + n;
    return true;
}

/* "host:port" or "[v6addr]:port"; the host is returned without brackets. */
static bool parse_listen(const char *s, char **host, int *port)
{
    const char *h;
    size_t hlen;
    if (!take_host(&s, &h, &hlen) || hlen == 0 || *s != ':')
        return false;
    s++;
    if (!parse_port(s, strlen(s), port))
        return false;
    *host = strndup(h, hlen);
    return *host != NULL;
}

/* curl's --connect-to syntax "HOST1:PORT1:HOST2:PORT2": four fields, hosts
 * may be [v6] and, as in curl, any field may be empty ("match any"/"keep"). */
static bool valid_connect_to(const char *s)
{
    for (int field = 0; field < 4; field++) {
        if (field % 2 == 0) {
            const char *h;
            size_t hlen;
            if (!take_host(&s, &h, &hlen))
                return false;
        } else {
            size_t n = strcspn(s, ":");
            int port;
            if (n && (!parse_port(s, n, &port) || port == 0))
                return false;
            s += n;
        }
        if (field < 3) {
            if (*s != ':')
                return false;
            s++;
        }
    }
    return *s == '\0';
}

/* ---- YAML node access -------------------------------------------------- */

static yaml_node_t *node_at(struct ctx *c, int index)
{
    return yaml_document_get_node(c->doc, index);
}

static bool is_scalar(const yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE;
}

static const char *sval(const yaml_node_t *n)
{
    return (const char *)n->data.scalar.value;
}

static bool is_plain(const yaml_node_t *n)
{
    return is_scalar(n) && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

/* YAML core-schema null: an unquoted ~, null or nothing at all. */
static bool is_null(const yaml_node_t *n)
{
    if (!is_plain(n))
        return false;
    const char *s = sval(n);
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

/* Scalars become C strings: an escaped NUL ("\0") would silently cut them. */
static int check_scalar(struct ctx *c, const yaml_node_t *n)
{
    if (strlen(sval(n)) != n->data.scalar.length)
        return fail(c, n, "strings must not contain NUL characters");
    return 0;
}

static bool env_name_ok(const char *s, size_t n)
{
    if (n == 0 || (s[0] >= '0' && s[0] <= '9'))
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_'))
            return false;
    }
    return true;
}

/* The scalar's text with every ${NAME} replaced by the environment value. */
static int expand(struct ctx *c, const yaml_node_t *n, char **out)
{
    *out = NULL;
    if (check_scalar(c, n))
        return -1;
    const char *s = sval(n);
    struct buf b = {0};
    if (buf_add(&b, "", 0))
        return oom(c);
    for (;;) {
        const char *ref = strstr(s, "${");
        if (!ref) {
            if (buf_add(&b, s, strlen(s)))
                goto nomem;
            break;
        }
        if (buf_add(&b, s, (size_t)(ref - s)))
            goto nomem;
        const char *name = ref + 2, *end = strchr(name, '}');
        if (!end) {
            free(b.p);
            return fail(c, n, "unterminated '${' (missing '}')");
        }
        size_t nlen = (size_t)(end - name);
        if (!env_name_ok(name, nlen)) {
            free(b.p);
            return fail(c, n, "invalid environment variable reference '${%.*s}'",
                        (int)(nlen > 64 ? 64 : nlen), name);
        }
        char *var = strndup(name, nlen);
        if (!var)
            goto nomem;
        const char *val = getenv(var);
        if (!val) {
            fail(c, n, "environment variable %s is not set", var);
            free(var);
            free(b.p);
            return -1;
        }
        free(var);
        if (buf_add(&b, val, strlen(val)))
            goto nomem;
        s = end + 1;
    }
    *out = b.p;
    return 0;
nomem:
    free(b.p);
    return oom(c);
}

/* Key of `pair` in mapping `map`: must be a scalar and not repeat an earlier
 * key. `prefix` ("" or "egress.") names it in messages. Duplicates are found
 * through `seen` when given (large option maps), else by a scan. */
static int map_key(struct ctx *c, const yaml_node_t *map, const yaml_node_pair_t *pair,
                   const char *prefix, json_t *seen, const yaml_node_t **kn, const char **key)
{
    const yaml_node_t *k = node_at(c, pair->key);
    if (!is_scalar(k))
        return fail(c, k, "keys must be strings");
    if (check_scalar(c, k))
        return -1;
    bool dup = false;
    if (seen) {
        dup = json_object_get(seen, sval(k)) != NULL;
    } else {
        for (const yaml_node_pair_t *p = map->data.mapping.pairs.start; p < pair && !dup; p++) {
            const yaml_node_t *o = node_at(c, p->key);
            dup = is_scalar(o) && !strcmp(sval(o), sval(k));
        }
    }
    if (dup)
        return fail(c, k, "duplicate key '%s%s'", prefix, sval(k));
    *kn = k;
    *key = sval(k);
    return 0;
}

#define FOR_PAIRS(p, map)                                                                   \
    for (yaml_node_pair_t *p = (map)->data.mapping.pairs.start; p < (map)->data.mapping.pairs.top; \
         p++)

/* ---- typed values ------------------------------------------------------ */

static void set_str(char **dst, char *v)
{
    free(*dst);
    *dst = v;
}

/* A non-empty string (or, when nullable, null) into *dst. */
static int get_str(struct ctx *c, const yaml_node_t *n, const char *name, bool nullable, char **dst)
{
    if (nullable && is_null(n)) {
        set_str(dst, NULL);
        return 0;
    }
    if (!is_scalar(n) || is_null(n))
        return fail(c, n, nullable ? "'%s' must be a string or null" : "'%s' must be a string",
                    name);
    char *v;
    if (expand(c, n, &v))
        return -1;
    if (!*v) {
        free(v);
        return fail(c, n, "'%s' must not be empty", name);
    }
    set_str(dst, v);
    return 0;
}

/* A decimal integer >= min; ${ENV} may supply it. */
static int get_long(struct ctx *c, const yaml_node_t *n, const char *name, long min, long *dst)
{
    const char *what = min > 0 ? "positive" : "non-negative";
    if (!is_scalar(n))
        return fail(c, n, "'%s' must be a %s integer", name, what);
    char *v;
    if (expand(c, n, &v))
        return -1;
    bool ok = all_digits(v, strlen(v));
    long val = 0;
    if (ok) {
        errno = 0;
        val = strtol(v, NULL, 10);
        ok = errno == 0 && val >= min;
    }
    free(v);
    if (!ok)
        return fail(c, n, "'%s' must be a %s integer", name, what);
    *dst = val;
    return 0;
}

static bool bool_text(const char *s, int *val)
{
    if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE"))
        *val = 1;
    else if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE"))
        *val = 0;
    else
        return false;
    return true;
}

static int get_bool(struct ctx *c, const yaml_node_t *n, const char *name, int *dst)
{
    if (!is_scalar(n))
        return fail(c, n, "'%s' must be true or false", name);
    char *v;
    if (expand(c, n, &v))
        return -1;
    bool ok = bool_text(v, dst);
    free(v);
    return ok ? 0 : fail(c, n, "'%s' must be true or false", name);
}

/* One of `allowed` (NULL-terminated); `list` spells them for the message. */
static int get_enum(struct ctx *c, const yaml_node_t *n, const char *name,
                    const char *const *allowed, const char *list, char **dst)
{
    char *v = NULL;
    if (is_scalar(n) && !is_null(n) && expand(c, n, &v))
        return -1;
    for (size_t i = 0; v && allowed[i]; i++) {
        if (!strcmp(v, allowed[i])) {
            set_str(dst, v);
            return 0;
        }
    }
    free(v);
    return fail(c, n, "'%s' must be %s", name, list);
}

/* 1 when n is a mapping, 0 when null (treated as empty), -1 otherwise. */
static int section(struct ctx *c, const yaml_node_t *n, const char *name)
{
    if (n->type == YAML_MAPPING_NODE)
        return 1;
    if (is_null(n))
        return 0;
    return fail(c, n, "'%s' must be a mapping", name);
}

/* ---- sections ------------------------------------------------------------ */

static int load_log(struct ctx *c, struct pb_config *cfg, const yaml_node_t *map)
{
    static const char *const levels[] = {"debug", "info", "warn", "error", NULL};
    static const char *const formats[] = {"json", "text", NULL};
    FOR_PAIRS(p, map) {
        const yaml_node_t *kn, *v = node_at(c, p->value);
        const char *key;
        if (map_key(c, map, p, "log.", NULL, &kn, &key))
            return -1;
        int rc;
        if (!strcmp(key, "level"))
            rc = get_enum(c, v, "log.level", levels, "one of debug, info, warn, error",
                          &cfg->log_level);
        else if (!strcmp(key, "format"))
            rc = get_enum(c, v, "log.format", formats, "json or text", &cfg->log_format);
        else
            rc = fail(c, kn, "unknown key 'log.%s'", key);
        if (rc)
            return -1;
    }
    return 0;
}

static int load_connect_to(struct ctx *c, struct pb_config *cfg, const yaml_node_t *n)
{
    if (is_null(n))
        return 0;
    if (n->type != YAML_SEQUENCE_NODE)
        return fail(c, n, "'egress.connect_to' must be a list of strings");
    size_t count = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    char **list = calloc(count + 1, sizeof *list);
    if (!list)
        return oom(c);
    /* Replace the default empty list up front so `list` is always owned. */
    for (size_t i = 0; i < cfg->egress.n_connect_to; i++)
        free(cfg->egress.connect_to[i]);
    free(cfg->egress.connect_to);
    cfg->egress.connect_to = list;
    cfg->egress.n_connect_to = 0;
    for (size_t i = 0; i < count; i++) {
        const yaml_node_t *item = node_at(c, n->data.sequence.items.start[i]);
        if (!is_scalar(item) || is_null(item))
            return fail(c, item, "'egress.connect_to[%zu]' must be a string", i);
        char *v;
        if (expand(c, item, &v))
            return -1;
        list[i] = v;
        cfg->egress.n_connect_to = i + 1;
        if (!valid_connect_to(v))
            return fail(c, item, "'egress.connect_to[%zu]' must be host:port:addr:port, got '%s'",
                        i, v);
    }
    return 0;
}

static int load_egress(struct ctx *c, struct pb_config *cfg, const yaml_node_t *map)
{
    FOR_PAIRS(p, map) {
        const yaml_node_t *kn, *v = node_at(c, p->value);
        const char *key;
        if (map_key(c, map, p, "egress.", NULL, &kn, &key))
            return -1;
        int rc;
        if (!strcmp(key, "timeout_ms"))
            rc = get_long(c, v, "egress.timeout_ms", 1, &cfg->egress.timeout_ms);
        else if (!strcmp(key, "ca_file"))
            rc = get_str(c, v, "egress.ca_file", true, &cfg->egress.ca_file);
        else if (!strcmp(key, "connect_to"))
            rc = load_connect_to(c, cfg, v);
        else if (!strcmp(key, "http_proxy"))
            rc = get_str(c, v, "egress.http_proxy", true, &cfg->egress.http_proxy);
        else if (!strcmp(key, "allow_private"))
            rc = get_bool(c, v, "egress.allow_private", &cfg->egress.allow_private);
        else
            rc = fail(c, kn, "unknown key 'egress.%s'", key);
        if (rc)
            return -1;
    }
    return 0;
}

static int load_server(struct ctx *c, struct pb_config *cfg, const yaml_node_t *map)
{
    FOR_PAIRS(p, map) {
        const yaml_node_t *kn, *v = node_at(c, p->value);
        const char *key;
        if (map_key(c, map, p, "server.", NULL, &kn, &key))
            return -1;
        long *dst = !strcmp(key, "max_body_bytes")         ? &cfg->server.max_body_bytes
                    : !strcmp(key, "connection_limit")     ? &cfg->server.connection_limit
                    : !strcmp(key, "connection_timeout_s") ? &cfg->server.connection_timeout_s
                    : !strcmp(key, "drain_timeout_s")      ? &cfg->server.drain_timeout_s
                                                           : NULL;
        if (!dst)
            return fail(c, kn, "unknown key 'server.%s'", key);
        char name[64];
        snprintf(name, sizeof name, "server.%s", key);
        if (get_long(c, v, name, 1, dst))
            return -1;
    }
    return 0;
}

static int load_tokens(struct ctx *c, struct pb_config *cfg, const yaml_node_t *map)
{
    FOR_PAIRS(p, map) {
        const yaml_node_t *kn, *v = node_at(c, p->value);
        const char *key;
        if (map_key(c, map, p, "tokens.", NULL, &kn, &key))
            return -1;
        if (strcmp(key, "refresh_margin_s"))
            return fail(c, kn, "unknown key 'tokens.%s'", key);
        if (get_long(c, v, "tokens.refresh_margin_s", 0, &cfg->tokens.refresh_margin_s))
            return -1;
    }
    return 0;
}

/* ---- providers --------------------------------------------------------- */

/* Option values: plain true/false, integers and null are typed, everything
 * else (quoted scalars included) is a string with ${ENV} expanded. */
static json_t *scalar_json(struct ctx *c, const yaml_node_t *n)
{
    if (check_scalar(c, n))
        return NULL;
    if (is_plain(n)) {
        const char *s = sval(n);
        int b;
        if (is_null(n))
            return json_null();
        if (bool_text(s, &b))
            return json_boolean(b);
        const char *digits = (*s == '-' || *s == '+') ? s + 1 : s;
        if (all_digits(digits, strlen(digits))) {
            errno = 0;
            long long v = strtoll(s, NULL, 10);
            if (errno == 0)
                return json_integer((json_int_t)v);
            /* Out of range: falls through and stays a string. */
        }
    }
    char *v;
    if (expand(c, n, &v))
        return NULL;
    json_t *j = json_string(v);
    free(v);
    if (!j)
        fail(c, n, "invalid UTF-8 in string");
    return j;
}

static json_t *node_json(struct ctx *c, const yaml_node_t *n, const char *path, int depth);

static json_t *mapping_json(struct ctx *c, const yaml_node_t *n, const char *path, int depth)
{
    json_t *obj = json_object();
    char *prefix = concat(path, ".", "");
    if (!obj || !prefix)
        goto nomem;
    FOR_PAIRS(p, n) {
        const yaml_node_t *kn;
        const char *key;
        if (map_key(c, n, p, prefix, obj, &kn, &key))
            goto fail;
        char *sub = concat(prefix, key, "");
        if (!sub)
            goto nomem;
        json_t *v = node_json(c, node_at(c, p->value), sub, depth + 1);
        free(sub);
        if (!v)
            goto fail;
        if (json_object_set_new(obj, key, v)) {
            fail(c, kn, "invalid key '%s%s'", prefix, key);
            goto fail;
        }
    }
    free(prefix);
    return obj;
nomem:
    oom(c);
fail:
    free(prefix);
    json_decref(obj);
    return NULL;
}

static json_t *sequence_json(struct ctx *c, const yaml_node_t *n, const char *path, int depth)
{
    json_t *arr = json_array();
    if (!arr) {
        oom(c);
        return NULL;
    }
    size_t count = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    for (size_t i = 0; i < count; i++) {
        char sub[32];
        snprintf(sub, sizeof sub, "[%zu]", i);
        char *subpath = concat(path, sub, "");
        json_t *v = subpath ? node_json(c, node_at(c, n->data.sequence.items.start[i]), subpath,
                                        depth + 1)
                            : NULL;
        if (!subpath)
            oom(c);
        free(subpath);
        if (!v || json_array_append_new(arr, v)) {
            if (v)
                oom(c);
            json_decref(arr);
            return NULL;
        }
    }
    return arr;
}

static json_t *node_json(struct ctx *c, const yaml_node_t *n, const char *path, int depth)
{
    if (++c->option_nodes > OPTION_NODES_MAX) {
        fail(c, n, "provider options have too many nodes (alias expansion?)");
        return NULL;
    }
    if (depth > OPTION_DEPTH_MAX) {
        fail(c, n, "provider options are nested too deeply (alias cycle?)");
        return NULL;
    }
    switch (n->type) {
    case YAML_SCALAR_NODE:
        return scalar_json(c, n);
    case YAML_SEQUENCE_NODE:
        return sequence_json(c, n, path, depth);
    case YAML_MAPPING_NODE:
        return mapping_json(c, n, path, depth);
    default:
        fail(c, n, "'%s': unsupported YAML node", path);
        return NULL;
    }
}

static bool provider_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > PROVIDER_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
                  (i > 0 && (ch == '_' || ch == '-'));
        if (!ok)
            return false;
    }
    return true;
}

static void provider_free(struct pb_provider_cfg *p)
{
    free(p->name);
    free(p->plugin);
    json_decref(p->options);
    json_decref(p->positions);
}

/* One provider block into *p (zeroed by the caller; freed by it on error). */
static int load_provider(struct ctx *c, const yaml_node_t *kn, const yaml_node_t *block,
                         struct pb_provider_cfg *p)
{
    const char *name = sval(kn);
    p->line = (int)kn->start_mark.line + 1;
    p->column = (int)kn->start_mark.column + 1;
    if (!(p->name = strdup(name)) || !(p->options = json_object()) ||
        !(p->positions = json_object()))
        return oom(c);
    if (block->type != YAML_MAPPING_NODE)
        return fail(c, block, "provider '%s' must be a mapping", name);
    char *prefix = concat("providers.", name, ".");
    if (!prefix)
        return oom(c);
    int rc = 0;
    FOR_PAIRS(pair, block) {
        const yaml_node_t *okn, *v = node_at(c, pair->value);
        const char *key;
        if ((rc = map_key(c, block, pair, prefix, p->positions, &okn, &key)))
            break;
        json_t *pos = json_pack("[ii]", (int)okn->start_mark.line + 1,
                                (int)okn->start_mark.column + 1);
        if (!pos || json_object_set_new(p->positions, key, pos)) {
            rc = fail(c, okn, "invalid key '%s%s'", prefix, key);
            break;
        }
        if (!strcmp(key, "plugin")) {
            char *field = concat(prefix, "plugin", "");
            rc = field ? get_str(c, v, field, false, &p->plugin) : oom(c);
            free(field);
            if (rc)
                break;
            continue;
        }
        char *sub = concat(prefix, key, "");
        json_t *j = sub ? node_json(c, v, sub, 1) : NULL;
        if (!sub)
            oom(c);
        free(sub);
        if (!j || json_object_set_new(p->options, key, j)) {
            rc = j ? oom(c) : -1;
            break;
        }
    }
    free(prefix);
    if (rc)
        return -1;
    if (!p->plugin)
        return fail(c, kn, "provider '%s' has no 'plugin' key", name);
    return 0;
}

static int load_providers(struct ctx *c, struct pb_config *cfg, const yaml_node_t *map)
{
    size_t count = (size_t)(map->data.mapping.pairs.top - map->data.mapping.pairs.start);
    if (count == 0)
        return 0;
    cfg->providers = calloc(count, sizeof *cfg->providers);
    if (!cfg->providers)
        return oom(c);
    FOR_PAIRS(pair, map) {
        const yaml_node_t *kn;
        const char *key;
        if (map_key(c, map, pair, "providers.", NULL, &kn, &key))
            return -1;
        if (!provider_name_ok(key))
            return fail(c, kn,
                        "invalid provider name '%s': must match [a-z0-9][a-z0-9_-]* and be at "
                        "most %d characters",
                        key, PROVIDER_NAME_MAX);
        struct pb_provider_cfg p = {0};
        if (load_provider(c, kn, node_at(c, pair->value), &p)) {
            provider_free(&p);
            return -1;
        }
        cfg->providers[cfg->n_providers++] = p;
    }
    return 0;
}

/* ---- top level ----------------------------------------------------------- */

static int load_root(struct ctx *c, struct pb_config *cfg, const yaml_node_t *root,
                     char **listen_raw)
{
    FOR_PAIRS(p, root) {
        const yaml_node_t *kn, *v = node_at(c, p->value);
        const char *key;
        if (map_key(c, root, p, "", NULL, &kn, &key))
            return -1;
        int rc, sec;
        if (!strcmp(key, "listen")) {
            if ((rc = get_str(c, v, "listen", false, listen_raw)) == 0) {
                free(cfg->listen_host);
                cfg->listen_host = NULL;
                if (!parse_listen(*listen_raw, &cfg->listen_host, &cfg->listen_port))
                    rc = fail(c, v,
                              "'listen' must be host:port or [ipv6]:port with a port from 0 to "
                              "65535, got '%s'",
                              *listen_raw);
            }
        } else if (!strcmp(key, "public_url")) {
            rc = get_str(c, v, "public_url", false, &cfg->public_url);
            if (!rc && strncmp(cfg->public_url, "http://", 7) &&
                strncmp(cfg->public_url, "https://", 8))
                rc = fail(c, v, "'public_url' must start with http:// or https://");
        } else if (!strcmp(key, "data_dir")) {
            rc = get_str(c, v, "data_dir", false, &cfg->data_dir);
        } else if (!strcmp(key, "store")) {
            rc = get_str(c, v, "store", false, &cfg->store);
        } else if (!strcmp(key, "master_key_file")) {
            rc = get_str(c, v, "master_key_file", false, &cfg->master_key_file);
        } else if (!strcmp(key, "plugin_dir")) {
            rc = get_str(c, v, "plugin_dir", false, &cfg->plugin_dir);
        } else if (!strcmp(key, "log")) {
            rc = (sec = section(c, v, "log")) > 0 ? load_log(c, cfg, v) : sec;
        } else if (!strcmp(key, "egress")) {
            rc = (sec = section(c, v, "egress")) > 0 ? load_egress(c, cfg, v) : sec;
        } else if (!strcmp(key, "server")) {
            rc = (sec = section(c, v, "server")) > 0 ? load_server(c, cfg, v) : sec;
        } else if (!strcmp(key, "tokens")) {
            rc = (sec = section(c, v, "tokens")) > 0 ? load_tokens(c, cfg, v) : sec;
        } else if (!strcmp(key, "providers")) {
            rc = (sec = section(c, v, "providers")) > 0 ? load_providers(c, cfg, v) : sec;
        } else {
            rc = fail(c, kn, "unknown key '%s'", key);
        }
        if (rc)
            return -1;
    }
    return 0;
}

/* Fills whatever the file left out; derived defaults follow data_dir/listen. */
static int apply_defaults(struct ctx *c, struct pb_config *cfg, const char *listen_raw)
{
    if (!cfg->listen_host) {
        cfg->listen_host = strdup("127.0.0.1");
        cfg->listen_port = 8080;
    }
    if (!cfg->public_url)
        cfg->public_url = concat("http://", listen_raw ? listen_raw : "127.0.0.1:8080", "");
    if (!cfg->data_dir)
        cfg->data_dir = strdup("./var");
    if (!cfg->data_dir)
        return oom(c);
    if (!cfg->store) {
        char *db = path_join(cfg->data_dir, "plugboard.db");
        cfg->store = db ? concat("sqlite:", db, "") : NULL;
        free(db);
    }
    if (!cfg->master_key_file)
        cfg->master_key_file = path_join(cfg->data_dir, "master.key");
    if (!cfg->plugin_dir)
        cfg->plugin_dir = strdup(PB_DEFAULT_PLUGIN_DIR);
    if (!cfg->log_level)
        cfg->log_level = strdup("info");
    if (!cfg->log_format)
        cfg->log_format = strdup("json");
    if (!cfg->listen_host || !cfg->public_url || !cfg->store || !cfg->master_key_file ||
        !cfg->plugin_dir || !cfg->log_level || !cfg->log_format)
        return oom(c);
    return 0;
}

static int read_file(struct ctx *c, char **data, size_t *len)
{
    FILE *f = fopen(c->path, "rb");
    if (!f)
        return fail(c, NULL, "cannot read: %s", strerror(errno));
    struct buf b = {0};
    char chunk[8192];
    size_t n;
    int rc = 0;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (buf_add(&b, chunk, n)) {
            rc = oom(c);
            break;
        }
    }
    if (!rc && ferror(f))
        rc = fail(c, NULL, "cannot read: %s", strerror(errno ? errno : EIO));
    fclose(f);
    if (!rc && !b.p && buf_add(&b, "", 0))
        rc = oom(c);
    if (rc) {
        free(b.p);
        return -1;
    }
    *data = b.p;
    *len = b.len;
    return 0;
}

/* libyaml's reader reports a byte offset only; turn it into line:col. */
static yaml_mark_t offset_mark(const char *data, size_t len, size_t offset)
{
    yaml_mark_t m = {0};
    for (size_t i = 0; i < offset && i < len; i++) {
        if (data[i] == '\n') {
            m.line++;
            m.column = 0;
        } else {
            m.column++;
        }
    }
    return m;
}

static int yaml_error(struct ctx *c, const yaml_parser_t *parser, const char *data, size_t len)
{
    const char *problem = parser->problem ? parser->problem : "invalid YAML";
    switch (parser->error) {
    case YAML_MEMORY_ERROR:
        return oom(c);
    case YAML_READER_ERROR:
        return fail_mark(c, offset_mark(data, len, parser->problem_offset), "%s", problem);
    default:
        if (parser->context)
            return fail_mark(c, parser->problem_mark, "%s (%s)", problem, parser->context);
        return fail_mark(c, parser->problem_mark, "%s", problem);
    }
}

/* Parses the first document into *doc and rejects any that follow. */
static int parse(struct ctx *c, const char *data, size_t len, yaml_document_t *doc)
{
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser))
        return oom(c);
    yaml_parser_set_input_string(&parser, (const unsigned char *)data, len);
    int rc = 0;
    if (!yaml_parser_load(&parser, doc)) {
        rc = yaml_error(c, &parser, data, len);
        yaml_parser_delete(&parser);
        return rc;
    }
    if (yaml_document_get_root_node(doc)) {
        yaml_document_t next;
        if (!yaml_parser_load(&parser, &next)) {
            rc = yaml_error(c, &parser, data, len);
        } else {
            const yaml_node_t *root = yaml_document_get_root_node(&next);
            if (root)
                rc = fail(c, root, "only one YAML document is allowed");
            yaml_document_delete(&next);
        }
        if (rc)
            yaml_document_delete(doc);
    }
    yaml_parser_delete(&parser);
    return rc;
}

int pb_config_load(const char *path, struct pb_config **out, char *err, size_t err_len)
{
    struct ctx c = {.path = path ? path : "(null)", .err = err, .err_len = err_len};
    if (err && err_len)
        err[0] = '\0';
    if (!out)
        return fail(&c, NULL, "no output pointer");
    *out = NULL;
    if (!path)
        return fail(&c, NULL, "no configuration file given");

    char *data;
    size_t len;
    if (read_file(&c, &data, &len))
        return -1;
    yaml_document_t doc;
    int rc = parse(&c, data, len, &doc);
    if (rc) {
        free(data);
        return -1;
    }
    c.doc = &doc;

    struct pb_config *cfg = calloc(1, sizeof *cfg);
    char *listen_raw = NULL;
    if (!cfg) {
        rc = oom(&c);
        goto done;
    }
    cfg->egress.timeout_ms = 30000;
    cfg->server.max_body_bytes = 10L * 1024 * 1024;
    cfg->server.connection_limit = 1024;
    cfg->server.connection_timeout_s = 60;
    cfg->server.drain_timeout_s = 30;
    cfg->tokens.refresh_margin_s = 300;
    if (!(cfg->path = strdup(path)) || !(cfg->dir = dir_of(path)) ||
        !(cfg->egress.connect_to = calloc(1, sizeof(char *)))) {
        rc = oom(&c);
        goto done;
    }

    /* An empty file (or a bare null document) means "all defaults". */
    const yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root && root->type != YAML_MAPPING_NODE && !is_null(root))
        rc = fail(&c, root, "the top level must be a mapping of settings");
    else if (root && root->type == YAML_MAPPING_NODE)
        rc = load_root(&c, cfg, root, &listen_raw);
    if (!rc)
        rc = apply_defaults(&c, cfg, listen_raw);

done:
    free(listen_raw);
    yaml_document_delete(&doc);
    free(data);
    if (rc) {
        pb_config_free(cfg);
        return -1;
    }
    *out = cfg;
    return 0;
}

void pb_config_free(struct pb_config *cfg)
{
    if (!cfg)
        return;
    free(cfg->path);
    free(cfg->dir);
    free(cfg->listen_host);
    free(cfg->public_url);
    free(cfg->data_dir);
    free(cfg->store);
    free(cfg->master_key_file);
    free(cfg->plugin_dir);
    free(cfg->log_level);
    free(cfg->log_format);
    free(cfg->egress.ca_file);
    if (cfg->egress.connect_to)
        for (size_t i = 0; cfg->egress.connect_to[i]; i++)
            free(cfg->egress.connect_to[i]);
    free(cfg->egress.connect_to);
    free(cfg->egress.http_proxy);
    for (size_t i = 0; i < cfg->n_providers; i++)
        provider_free(&cfg->providers[i]);
    free(cfg->providers);
    free(cfg);
}

const struct pb_provider_cfg *pb_config_provider(const struct pb_config *cfg, const char *name)
{
    if (!cfg || !name)
        return NULL;
    for (size_t i = 0; i < cfg->n_providers; i++)
        if (!strcmp(cfg->providers[i].name, name))
            return &cfg->providers[i];
    return NULL;
}
