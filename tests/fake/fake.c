/* Fake provider servers: daemon, request recording, faults, tokens. */
#define FAKE_INTERNAL
#include "fake.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

struct fault_ent {
    char *method, *prefix;
    struct fake_fault f;  /* strings owned */
    int times;
};

struct token_ent {
    char *access;
    double expires_at;    /* 0 = never */
    int expired;
};

struct strlist {
    char **v;
    size_t n;
};

struct fake {
    enum fake_kind kind;
    struct MHD_Daemon *d;
    int port;
    int tls;
    char base[64];
    struct fake_priv_opts o;
    char *cert_pem, *key_pem;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stopping;

    struct fake_req *recs;
    size_t nrecs, caprecs;
    struct fault_ent *faults;
    size_t nfaults;
    struct token_ent *toks;
    size_t ntoks;
    struct strlist refresh, codes;
    size_t token_calls;
    unsigned long next_token, next_id, next_corr;
    char *last_issued;
    json_t *store;
};

/* ---- small helpers ------------------------------------------------------------ */

static char *xstrdup(const char *s)
{
    if (!s)
        return NULL;
    char *p = strdup(s);
    if (!p)
        abort();
    return p;
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p)
        abort();
    return p;
}

static char *xstrndup(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (!p)
        abort();
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

double fake_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

long long fake_epoch_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void fake_iso_now(char out[40], int hubspot)
{
    long long ms = fake_epoch_ms();
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    char b[24];
    strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%S", &tm);
    if (hubspot)
        snprintf(out, 40, "%s.%03dZ", b, (int)(ms % 1000));
    else
        snprintf(out, 40, "%s.000+0000", b);
}

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

char *fake_urldecode(const char *s, size_t n, int form)
{
    char *out = malloc(n + 1);
    if (!out)
        abort();
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n) {
            int h = hexval((unsigned char)s[i + 1]);
            int l = hexval((unsigned char)s[i + 2]);
            if (h >= 0 && l >= 0) {
                out[j++] = (char)(h * 16 + l);
                i += 2;
                continue;
            }
        }
        out[j++] = (form && s[i] == '+') ? ' ' : s[i];
    }
    out[j] = '\0';
    return out;
}

/* Looks `name` up in an "a=b&c=d" string; decoded copy or NULL. */
static char *form_lookup(const char *s, const char *name)
{
    if (!s)
        return NULL;
    size_t nl = strlen(name);
    const char *p = s;
    while (*p) {
        const char *amp = strchr(p, '&');
        size_t seg = amp ? (size_t)(amp - p) : strlen(p);
        const char *eq = memchr(p, '=', seg);
        size_t klen = eq ? (size_t)(eq - p) : seg;
        char *k = fake_urldecode(p, klen, 1);
        int hit = strlen(k) == nl && memcmp(k, name, nl) == 0;
        free(k);
        if (hit) {
            if (!eq)
                return xstrdup("");
            return fake_urldecode(eq + 1, seg - klen - 1, 1);
        }
        if (!amp)
            break;
        p = amp + 1;
    }
    return NULL;
}

static int prefix_match(const char *s, const char *prefix)
{
    return !prefix || strncmp(s, prefix, strlen(prefix)) == 0;
}

static int req_match(const struct fake_req *r, const char *method, const char *prefix)
{
    return (!method || strcasecmp(r->method, method) == 0) && prefix_match(r->path, prefix);
}

static void req_copy(struct fake_req *dst, const struct fake_req *src)
{
    *dst = *src;
    dst->method = xstrdup(src->method);
    dst->path = xstrdup(src->path);
    dst->query = xstrdup(src->query);
    dst->body = xstrndup(src->body ? src->body : "", src->body ? src->body_len : 0);
    dst->headers = NULL;
    if (src->nheaders) {
        dst->headers = calloc(src->nheaders, sizeof *dst->headers);
        if (!dst->headers)
            abort();
        for (size_t i = 0; i < src->nheaders; i++) {
            dst->headers[i].name = xstrdup(src->headers[i].name);
            dst->headers[i].value = xstrdup(src->headers[i].value);
        }
    }
}

void fake_req_free(struct fake_req *r)
{
    if (!r)
        return;
    free(r->method);
    free(r->path);
    free(r->query);
    free(r->body);
    for (size_t i = 0; i < r->nheaders; i++) {
        free(r->headers[i].name);
        free(r->headers[i].value);
    }
    free(r->headers);
    memset(r, 0, sizeof *r);
}

const char *fake_req_header(const struct fake_req *r, const char *name)
{
    for (size_t i = 0; i < r->nheaders; i++)
        if (strcasecmp(r->headers[i].name, name) == 0)
            return r->headers[i].value;
    return NULL;
}

char *fake_req_param(const struct fake_req *r, const char *name)
{
    const char *ct = fake_req_header(r, "Content-Type");
    if (r->body && r->body_len && (!ct || strncasecmp(ct, "application/x-www-form-urlencoded", 33) == 0)) {
        char *v = form_lookup(r->body, name);
        if (v)
            return v;
    }
    return form_lookup(r->query, name);
}

json_t *fake_req_json(const struct fake_req *r)
{
    if (!r->body || !r->body_len)
        return NULL;
    return json_loadb(r->body, r->body_len, JSON_DECODE_ANY, NULL);
}

/* ---- locking / accessors ----------------------------------------------------- */

void fake_lock(struct fake *f) { pthread_mutex_lock(&f->mu); }
void fake_unlock(struct fake *f) { pthread_mutex_unlock(&f->mu); }
enum fake_kind fake_kind_of(const struct fake *f) { return f->kind; }
const struct fake_priv_opts *fake_opts_of(const struct fake *f) { return &f->o; }
int fake_port(const struct fake *f) { return f->port; }
const char *fake_base_url(const struct fake *f) { return f->base; }

json_t *fake_store(struct fake *f, const char *obj, int create)
{
    json_t *o = json_object_get(f->store, obj);
    if (!o && create) {
        o = json_object();
        json_object_set_new(f->store, obj, o);
    }
    return o;
}

json_t *fake_store_root(struct fake *f) { return f->store; }

unsigned long fake_next_id(struct fake *f) { return ++f->next_id; }

void fake_correlation_id(struct fake *f, char out[37])
{
    fake_lock(f);
    unsigned long n = ++f->next_corr;
    fake_unlock(f);
    uint64_t h = 0xcbf29ce484222325ULL ^ (uint64_t)(uintptr_t)f;
    for (int i = 0; i < 8; i++) {
        h ^= (n >> (i * 8)) & 0xff;
        h *= 0x100000001b3ULL;
    }
    uint64_t h2 = h * 0x9E3779B97F4A7C15ULL + n;
    snprintf(out, 37, "%08x-%04x-4%03x-a%03x-%012llx", (unsigned)(h >> 32), (unsigned)(h >> 16) & 0xffff,
             (unsigned)h & 0xfff, (unsigned)(h2 >> 52) & 0xfff,
             (unsigned long long)(h2 & 0xffffffffffffULL));
}

int fake_sleep_ms(struct fake *f, long ms)
{
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += ms / 1000;
    dl.tv_nsec += (ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    int rc = 0;
    fake_lock(f);
    while (!f->stopping) {
        if (pthread_cond_timedwait(&f->cv, &f->mu, &dl) == ETIMEDOUT)
            break;
    }
    if (f->stopping)
        rc = -1;
    fake_unlock(f);
    return rc;
}

/* ---- responses --------------------------------------------------------------- */

void fake_out_header(struct fake_out *o, const char *name, const char *value)
{
    if (o->nh >= FAKE_OUT_MAXH)
        return;
    o->hname[o->nh] = xstrdup(name);
    o->hval[o->nh] = xstrdup(value);
    o->nh++;
}

void fake_out_json(struct fake_out *o, int status, json_t *body)
{
    o->status = status;
    json_decref(o->json);
    o->json = body;
}

static void out_free(struct fake_out *o)
{
    json_decref(o->json);
    free(o->raw);
    if (o->resp)
        MHD_destroy_response(o->resp);
    for (int i = 0; i < o->nh; i++) {
        free(o->hname[i]);
        free(o->hval[i]);
    }
    memset(o, 0, sizeof *o);
}

const char *fake_arg(struct fake_conn *c, const char *name)
{
    return MHD_lookup_connection_value(c->conn, MHD_GET_ARGUMENT_KIND, name);
}

/* Partial body: half of `data`, then the connection is dropped. */
struct partial {
    char *data;
    size_t len;
};

static ssize_t partial_cb(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct partial *p = cls;
    size_t half = p->len / 2;
    if (pos >= half)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    size_t n = half - (size_t)pos;
    if (n > max)
        n = max;
    memcpy(buf, p->data + pos, n);
    return (ssize_t)n;
}

static void partial_free(void *cls)
{
    struct partial *p = cls;
    free(p->data);
    free(p);
}

/* Builds the MHD response for `o`; partial: only half the body is sent. */
static struct MHD_Response *build_response(struct fake_out *o, int partial)
{
    struct MHD_Response *r = NULL;
    if (o->resp) {
        r = o->resp;
        o->resp = NULL;
    } else {
        char *data = NULL;
        size_t len = 0;
        if (o->json) {
            data = json_dumps(o->json, JSON_COMPACT | JSON_ENCODE_ANY);
            len = data ? strlen(data) : 0;
        } else if (o->raw) {
            data = o->raw;
            len = o->raw_len;
            o->raw = NULL;
        }
        if (partial) {
            if (len < 64) {
                /* make sure there is something to cut */
                data = xrealloc(data, 65);
                memset(data + len, ' ', 64 - len);
                len = 64;
            }
            struct partial *p = calloc(1, sizeof *p);
            if (!p)
                abort();
            p->data = data;
            p->len = len;
            r = MHD_create_response_from_callback(len, 4096, partial_cb, p, partial_free);
        } else if (data) {
            r = MHD_create_response_from_buffer(len, data, MHD_RESPMEM_MUST_FREE);
        } else {
            r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
        }
        if (r && (o->json || data) && o->status != 204 && o->status != 304)
            MHD_add_response_header(r, "Content-Type", o->ctype ? o->ctype : "application/json");
    }
    if (!r)
        return NULL;
    for (int i = 0; i < o->nh; i++)
        MHD_add_response_header(r, o->hname[i], o->hval[i]);
    return r;
}

/* ---- tokens ------------------------------------------------------------------ */

static void strlist_add(struct strlist *l, const char *s)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i], s) == 0)
            return;
    l->v = xrealloc(l->v, (l->n + 1) * sizeof *l->v);
    l->v[l->n++] = xstrdup(s);
}

static int strlist_has(const struct strlist *l, const char *s)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i], s) == 0)
            return 1;
    return 0;
}

static int strlist_remove(struct strlist *l, const char *s)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i], s) == 0) {
            free(l->v[i]);
            l->v[i] = l->v[--l->n];
            return 1;
        }
    return 0;
}

static void strlist_free(struct strlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

static struct token_ent *token_find(struct fake *f, const char *access)
{
    for (size_t i = 0; i < f->ntoks; i++)
        if (strcmp(f->toks[i].access, access) == 0)
            return &f->toks[i];
    return NULL;
}

static void token_add_locked(struct fake *f, const char *access, int ttl_s)
{
    struct token_ent *t = token_find(f, access);
    if (!t) {
        f->toks = xrealloc(f->toks, (f->ntoks + 1) * sizeof *f->toks);
        t = &f->toks[f->ntoks++];
        t->access = xstrdup(access);
    }
    t->expired = ttl_s < 0;
    t->expires_at = ttl_s > 0 ? fake_now() + ttl_s : 0;
}

void fake_add_token(struct fake *f, const char *access_token, const char *refresh_token, int ttl_s)
{
    fake_lock(f);
    if (access_token)
        token_add_locked(f, access_token, ttl_s);
    if (refresh_token)
        strlist_add(&f->refresh, refresh_token);
    fake_unlock(f);
}

void fake_expire_token(struct fake *f, const char *access_token)
{
    fake_lock(f);
    struct token_ent *t = token_find(f, access_token);
    if (t)
        t->expired = 1;
    fake_unlock(f);
}

void fake_revoke_refresh(struct fake *f, const char *refresh_token)
{
    fake_lock(f);
    strlist_remove(&f->refresh, refresh_token);
    fake_unlock(f);
}

void fake_add_code(struct fake *f, const char *code)
{
    fake_lock(f);
    strlist_add(&f->codes, code);
    fake_unlock(f);
}

size_t fake_token_calls(struct fake *f)
{
    fake_lock(f);
    size_t n = f->token_calls;
    fake_unlock(f);
    return n;
}

char *fake_last_issued_token(struct fake *f)
{
    fake_lock(f);
    char *s = xstrdup(f->last_issued);
    fake_unlock(f);
    return s;
}

enum fake_auth_result fake_auth(struct fake_conn *c)
{
    const char *h = fake_req_header(&c->req, "Authorization");
    if (!h)
        return FAKE_AUTH_MISSING;
    if (strncasecmp(h, "Bearer ", 7) != 0)
        return FAKE_AUTH_INVALID;
    const char *tok = h + 7;
    while (*tok == ' ')
        tok++;
    enum fake_auth_result rc = FAKE_AUTH_INVALID;
    fake_lock(c->f);
    struct token_ent *t = token_find(c->f, tok);
    if (t) {
        if (t->expired || (t->expires_at > 0 && fake_now() >= t->expires_at))
            rc = FAKE_AUTH_EXPIRED;
        else
            rc = FAKE_AUTH_OK;
    }
    fake_unlock(c->f);
    return rc;
}

static int b64val(int ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '+' || ch == '-')
        return 62;
    if (ch == '/' || ch == '_')
        return 63;
    return -1;
}

static char *b64decode(const char *s)
{
    size_t n = strlen(s);
    char *out = malloc(n + 1);
    if (!out)
        abort();
    size_t j = 0;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64val((unsigned char)s[i]);
        if (v < 0)
            continue;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[j++] = (char)((acc >> bits) & 0xff);
        }
    }
    out[j] = '\0';
    return out;
}

void fake_oauth_grant(struct fake_conn *c, struct fake_grant *g)
{
    struct fake *f = c->f;
    memset(g, 0, sizeof *g);
    char *cid = fake_req_param(&c->req, "client_id");
    char *csec = fake_req_param(&c->req, "client_secret");
    const char *auth = fake_req_header(&c->req, "Authorization");
    if (auth && strncasecmp(auth, "Basic ", 6) == 0 && !cid) {
        char *dec = b64decode(auth + 6);
        char *colon = strchr(dec, ':');
        if (colon) {
            *colon = '\0';
            cid = fake_urldecode(dec, strlen(dec), 1);
            free(csec);
            csec = fake_urldecode(colon + 1, strlen(colon + 1), 1);
        }
        free(dec);
    }
    char *type = fake_req_param(&c->req, "grant_type");
    char *code = fake_req_param(&c->req, "code");
    char *rt = fake_req_param(&c->req, "refresh_token");

    fake_lock(f);
    g->expires_in = f->o.ttl;
    if (f->o.client_id && (!cid || strcmp(cid, f->o.client_id) != 0)) {
        g->result = FAKE_GRANT_BAD_CLIENT_ID;
    } else if (f->o.client_secret && (!csec || strcmp(csec, f->o.client_secret) != 0)) {
        g->result = FAKE_GRANT_BAD_SECRET;
    } else if (type && strcmp(type, "authorization_code") == 0) {
        g->authorization_code = 1;
        if (!code || !strlist_remove(&f->codes, code)) {
            g->result = FAKE_GRANT_BAD_CODE;
        } else {
            unsigned long n = ++f->next_token;
            snprintf(g->access, sizeof g->access, "at-%lu", n);
            snprintf(g->refresh, sizeof g->refresh, "rt-%lu", n);
            strlist_add(&f->refresh, g->refresh);
        }
    } else if (type && strcmp(type, "refresh_token") == 0) {
        if (!rt || !strlist_has(&f->refresh, rt)) {
            g->result = FAKE_GRANT_BAD_REFRESH;
        } else {
            snprintf(g->access, sizeof g->access, "at-%lu", ++f->next_token);
            snprintf(g->refresh, sizeof g->refresh, "%s", rt);
        }
    } else {
        g->result = FAKE_GRANT_BAD_TYPE;
    }
    if (g->result == FAKE_GRANT_OK) {
        token_add_locked(f, g->access, g->expires_in);
        free(f->last_issued);
        f->last_issued = xstrdup(g->access);
    }
    fake_unlock(f);
    free(cid);
    free(csec);
    free(type);
    free(code);
    free(rt);
}

/* ---- recording API ------------------------------------------------------------ */

size_t fake_count(struct fake *f, const char *method, const char *path_prefix)
{
    size_t n = 0;
    fake_lock(f);
    for (size_t i = 0; i < f->nrecs; i++)
        if (req_match(&f->recs[i], method, path_prefix))
            n++;
    fake_unlock(f);
    return n;
}

int fake_last(struct fake *f, const char *method, const char *path_prefix, struct fake_req *out)
{
    int rc = -1;
    memset(out, 0, sizeof *out);
    fake_lock(f);
    for (size_t i = f->nrecs; i-- > 0;)
        if (req_match(&f->recs[i], method, path_prefix)) {
            req_copy(out, &f->recs[i]);
            rc = 0;
            break;
        }
    fake_unlock(f);
    return rc;
}

int fake_nth(struct fake *f, const char *method, const char *path_prefix, size_t n,
             struct fake_req *out)
{
    int rc = -1;
    memset(out, 0, sizeof *out);
    fake_lock(f);
    size_t k = 0;
    for (size_t i = 0; i < f->nrecs; i++)
        if (req_match(&f->recs[i], method, path_prefix) && k++ == n) {
            req_copy(out, &f->recs[i]);
            rc = 0;
            break;
        }
    fake_unlock(f);
    return rc;
}

static void fault_free(struct fault_ent *e)
{
    free(e->method);
    free(e->prefix);
    free((char *)e->f.retry_after);
    free((char *)e->f.body);
}

void fake_reset(struct fake *f)
{
    fake_lock(f);
    for (size_t i = 0; i < f->nrecs; i++)
        fake_req_free(&f->recs[i]);
    f->nrecs = 0;
    for (size_t i = 0; i < f->nfaults; i++)
        fault_free(&f->faults[i]);
    f->nfaults = 0;
    f->token_calls = 0;
    fake_unlock(f);
}

void fake_inject(struct fake *f, const char *method, const char *path_prefix,
                 const struct fake_fault *fault, int times)
{
    if (times == 0 || !fault)
        return;
    fake_lock(f);
    f->faults = xrealloc(f->faults, (f->nfaults + 1) * sizeof *f->faults);
    struct fault_ent *e = &f->faults[f->nfaults++];
    e->method = xstrdup(method);
    e->prefix = xstrdup(path_prefix);
    e->f = *fault;
    e->f.retry_after = xstrdup(fault->retry_after);
    e->f.body = xstrdup(fault->body);
    e->times = times;
    fake_unlock(f);
}

/* Takes the first matching fault (copy in *out, strings owned); 0 when none. */
static int fault_take(struct fake *f, const struct fake_req *r, struct fake_fault *out)
{
    int hit = 0;
    fake_lock(f);
    for (size_t i = 0; i < f->nfaults; i++) {
        struct fault_ent *e = &f->faults[i];
        if ((!e->method || strcasecmp(e->method, r->method) == 0) && prefix_match(r->path, e->prefix)) {
            *out = e->f;
            out->retry_after = xstrdup(e->f.retry_after);
            out->body = xstrdup(e->f.body);
            hit = 1;
            if (e->times > 0 && --e->times == 0) {
                fault_free(e);
                memmove(e, e + 1, (f->nfaults - i - 1) * sizeof *e);
                f->nfaults--;
            }
            break;
        }
    }
    fake_unlock(f);
    return hit;
}

/* ---- stored records ----------------------------------------------------------- */

size_t fake_salesforce_count(struct fake *f, const char *obj)
{
    fake_lock(f);
    json_t *o = fake_store(f, obj, 0);
    size_t n = o ? json_object_size(o) : 0;
    fake_unlock(f);
    return n;
}

json_t *fake_salesforce_record(struct fake *f, const char *obj, const char *id)
{
    fake_lock(f);
    json_t *o = fake_store(f, obj, 0);
    json_t *r = o ? json_deep_copy(json_object_get(o, id)) : NULL;
    fake_unlock(f);
    return r;
}

/* ---- MHD callbacks ------------------------------------------------------------ */

static int is_token_path(const struct fake *f, const char *path)
{
    if (f->kind == FAKE_HUBSPOT)
        return strcmp(path, "/oauth/v1/token") == 0;
    if (f->kind == FAKE_SALESFORCE)
        return strcmp(path, "/services/oauth2/token") == 0;
    return 0;
}

static void *uri_cb(void *cls, const char *uri, struct MHD_Connection *con)
{
    struct fake_conn *c = calloc(1, sizeof *c);
    if (!c)
        abort();
    c->f = cls;
    c->conn = con;
    c->req.at = fake_now();
    const char *q = strchr(uri, '?');
    if (q) {
        c->req.path = xstrndup(uri, (size_t)(q - uri));
        c->req.query = xstrdup(q + 1);
    } else {
        c->req.path = xstrdup(uri);
        c->req.query = xstrdup("");
    }
    c->req.body_checksum = 0xcbf29ce484222325ULL;
    return c;
}

static void conn_free(struct fake_conn *c)
{
    fake_req_free(&c->req);
    free(c);
}

static void completed_cb(void *cls, struct MHD_Connection *con, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)con;
    (void)toe;
    if (*req_cls) {
        conn_free(*req_cls);
        *req_cls = NULL;
    }
}

static enum MHD_Result header_cb(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *value)
{
    (void)kind;
    struct fake_req *r = cls;
    r->headers = xrealloc(r->headers, (r->nheaders + 1) * sizeof *r->headers);
    r->headers[r->nheaders].name = xstrdup(key);
    r->headers[r->nheaders].value = xstrdup(value ? value : "");
    r->nheaders++;
    return MHD_YES;
}

static void fault_response(struct fake_conn *c, const struct fake_fault *ft, struct fake_out *o)
{
    int status = ft->status ? ft->status : 200;
    switch (c->f->kind) {
    case FAKE_HUBSPOT: fake_hubspot_error(c, status, o); break;
    case FAKE_SALESFORCE: fake_salesforce_error(c, status, o); break;
    case FAKE_ECHO: fake_echo_error(c, status, o); break;
    }
    o->status = status;
    if (ft->body) {
        json_decref(o->json);
        o->json = NULL;
        o->raw = xstrdup(ft->body);
        o->raw_len = strlen(ft->body);
        if (!o->ctype)
            o->ctype = "application/json";
    }
    if (ft->retry_after)
        fake_out_header(o, "Retry-After", ft->retry_after);
}

static enum MHD_Result access_cb(void *cls, struct MHD_Connection *con, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **req_cls)
{
    struct fake *f = cls;
    (void)url;
    (void)version;
    struct fake_conn *c = *req_cls;
    if (!c) { /* should not happen: uri_cb always allocates */
        c = uri_cb(f, url, con);
        *req_cls = c;
    }
    if (c->phase == 0) {
        c->phase = 1;
        c->conn = con;
        c->req.method = xstrdup(method);
        MHD_get_connection_values(con, MHD_HEADER_KIND, header_cb, &c->req);
        c->req.body = xstrdup("");
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        const unsigned char *d = (const unsigned char *)upload_data;
        uint64_t h = c->req.body_checksum;
        for (size_t i = 0; i < n; i++) {
            h ^= d[i];
            h *= 0x100000001b3ULL;
        }
        c->req.body_checksum = h;
        c->req.body_total += n;
        if (c->req.body_len < FAKE_BODY_MAX) {
            size_t take = FAKE_BODY_MAX - c->req.body_len;
            if (take > n)
                take = n;
            if (c->req.body_len + take + 1 > c->cap) {
                size_t nc = c->cap ? c->cap : 4096;
                while (nc < c->req.body_len + take + 1)
                    nc *= 2;
                if (nc > FAKE_BODY_MAX + 1)
                    nc = FAKE_BODY_MAX + 1;
                c->req.body = xrealloc(c->req.body, nc);
                c->cap = nc;
            }
            memcpy(c->req.body + c->req.body_len, upload_data, take);
            c->req.body_len += take;
            c->req.body[c->req.body_len] = '\0';
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (c->phase == 2)
        return MHD_NO; /* already answered */
    c->phase = 2;

    /* the whole request is in: record it */
    fake_lock(f);
    if (f->nrecs == f->caprecs) {
        f->caprecs = f->caprecs ? f->caprecs * 2 : 64;
        f->recs = xrealloc(f->recs, f->caprecs * sizeof *f->recs);
    }
    req_copy(&f->recs[f->nrecs++], &c->req);
    if (is_token_path(f, c->req.path))
        f->token_calls++;
    fake_unlock(f);

    struct fake_out o;
    memset(&o, 0, sizeof o);
    struct fake_fault ft;
    int partial = 0;
    if (fault_take(f, &c->req, &ft)) {
        int stopping = 0;
        if (ft.delay_ms > 0)
            stopping = fake_sleep_ms(f, ft.delay_ms) != 0;
        if (ft.reset || stopping) {
            free((char *)ft.retry_after);
            free((char *)ft.body);
            return MHD_NO;
        }
        if (ft.status || ft.body || ft.partial_body) {
            fault_response(c, &ft, &o);
            partial = ft.partial_body;
        }
        free((char *)ft.retry_after);
        free((char *)ft.body);
    }
    if (!o.status) {
        switch (f->kind) {
        case FAKE_HUBSPOT: fake_hubspot_handle(c, &o); break;
        case FAKE_SALESFORCE: fake_salesforce_handle(c, &o); break;
        case FAKE_ECHO: fake_echo_handle(c, &o); break;
        }
    }
    if (!o.status) {
        out_free(&o);
        return MHD_NO;
    }
    struct MHD_Response *r = build_response(&o, partial);
    enum MHD_Result rc = MHD_NO;
    if (r) {
        rc = MHD_queue_response(con, (unsigned)o.status, r);
        MHD_destroy_response(r);
    }
    out_free(&o);
    return rc;
}

/* ---- lifecycle ---------------------------------------------------------------- */

static char *read_all(const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    size_t cap = 4096, n = 0, r;
    char *b = malloc(cap + 1);
    if (!b)
        abort();
    while ((r = fread(b + n, 1, cap - n, fp)) > 0) {
        n += r;
        if (n == cap) {
            cap *= 2;
            b = xrealloc(b, cap + 1);
        }
    }
    fclose(fp);
    b[n] = '\0';
    return b;
}

static void fake_free(struct fake *f)
{
    for (size_t i = 0; i < f->nrecs; i++)
        fake_req_free(&f->recs[i]);
    free(f->recs);
    for (size_t i = 0; i < f->nfaults; i++)
        fault_free(&f->faults[i]);
    free(f->faults);
    for (size_t i = 0; i < f->ntoks; i++)
        free(f->toks[i].access);
    free(f->toks);
    strlist_free(&f->refresh);
    strlist_free(&f->codes);
    free(f->last_issued);
    json_decref(f->store);
    free(f->o.client_id);
    free(f->o.client_secret);
    free(f->o.instance_url);
    free(f->cert_pem);
    free(f->key_pem);
    pthread_mutex_destroy(&f->mu);
    pthread_cond_destroy(&f->cv);
    free(f);
}

struct fake *fake_start(enum fake_kind kind, const struct fake_opts *opts)
{
    struct fake_opts none;
    memset(&none, 0, sizeof none);
    if (!opts)
        opts = &none;
    struct fake *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->kind = kind;
    pthread_mutex_init(&f->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&f->cv, &ca);
    pthread_condattr_destroy(&ca);
    f->o.client_id = xstrdup(opts->client_id);
    f->o.client_secret = xstrdup(opts->client_secret);
    f->o.instance_url = xstrdup(opts->instance_url);
    f->o.ttl = opts->token_ttl_s > 0 ? opts->token_ttl_s : 1800;
    f->store = json_object();
    f->next_id = 100000;

    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO;
    if (getenv("FAKE_DEBUG"))
        flags |= MHD_USE_ERROR_LOG;
    if (opts->tls_cert_file || opts->tls_key_file) {
        if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
            fprintf(stderr, "fake: libmicrohttpd built without TLS\n");
            fake_free(f);
            return NULL;
        }
        f->cert_pem = opts->tls_cert_file ? read_all(opts->tls_cert_file) : NULL;
        f->key_pem = opts->tls_key_file ? read_all(opts->tls_key_file) : NULL;
        if (!f->cert_pem || !f->key_pem) {
            fprintf(stderr, "fake: cannot read %s / %s\n", opts->tls_cert_file ? opts->tls_cert_file : "(none)",
                    opts->tls_key_file ? opts->tls_key_file : "(none)");
            fake_free(f);
            return NULL;
        }
        flags |= MHD_USE_TLS;
        f->tls = 1;
    }
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = 0;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    if (f->tls)
        f->d = MHD_start_daemon(flags, 0, NULL, NULL, access_cb, f,
                                MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                                MHD_OPTION_URI_LOG_CALLBACK, uri_cb, f,
                                MHD_OPTION_NOTIFY_COMPLETED, completed_cb, f,
                                MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120,
                                MHD_OPTION_HTTPS_MEM_CERT, f->cert_pem,
                                MHD_OPTION_HTTPS_MEM_KEY, f->key_pem,
                                MHD_OPTION_END);
    else
        f->d = MHD_start_daemon(flags, 0, NULL, NULL, access_cb, f,
                                MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                                MHD_OPTION_URI_LOG_CALLBACK, uri_cb, f,
                                MHD_OPTION_NOTIFY_COMPLETED, completed_cb, f,
                                MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120,
                                MHD_OPTION_END);
    if (!f->d) {
        fprintf(stderr, "fake: MHD_start_daemon failed\n");
        fake_free(f);
        return NULL;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(f->d, MHD_DAEMON_INFO_BIND_PORT);
    f->port = di ? di->port : 0;
    if (!f->port) {
        fprintf(stderr, "fake: cannot learn the bound port\n");
        MHD_stop_daemon(f->d);
        fake_free(f);
        return NULL;
    }
    snprintf(f->base, sizeof f->base, "%s://127.0.0.1:%d", f->tls ? "https" : "http", f->port);
    return f;
}

void fake_stop(struct fake *f)
{
    if (!f)
        return;
    fake_lock(f);
    f->stopping = 1;
    pthread_cond_broadcast(&f->cv);
    fake_unlock(f);
    MHD_stop_daemon(f->d);
    fake_free(f);
}
