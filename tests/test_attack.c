/* Attacks from outside: another project's key against every route of a
 * project it does not own, host escapes and header injection on the three
 * proxy styles, Base-Url-Override towards private addresses, the egress
 * policy, and oversize or malformed input. Two fake echo servers watch:
 * "echo" is the providers' host, "evil" is where an escape would land; its
 * request count must stay zero. Nothing is sent outside loopback.
 *
 * With PB_SECRETS_LOG set, every secret the test makes is appended to that
 * file (one per line) for tests/secrets_scan.sh. */
#include "app.h"
#include "control.h"
#include "fake/fake.h"
#include "log.h"
#include "server.h"
#include "testutil.h"
#include "util.h"
#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define MAX_BODY 262144

static struct pb_app *app, *strict_app;
static char base[128], strict_base[128];
static int port, strict_port;
static struct fake *echo, *evil, *hs;

struct proj {
    char id[64], name[64], key[128], key2[128], key2_id[64];
};
static struct proj A, B, S; /* S: the project on the strict app */

/* B's identifiers and secrets, and A's own. */
static char a_inst_echo[64], a_inst_hs[64], a_conn_echo[64];
static char b_inst_echo[64], b_inst_hs[64], b_inst_only[64];
static char b_conn_echo[64], b_conn_hs[64], b_conn_basic[64];
static char b_int_echo[64], b_int_hs[64], b_int_only[64];
static char b_op[64];
static char s_inst_local[64], s_inst_ip[64], s_inst_hs[64];

#define A_ECHO_SECRET "atk-A-echo-secret-6d1f0c"
#define B_ECHO_SECRET "atk-B-echo-secret-93ab2e"
#define B_HS_ACCESS "atk-B-hs-access-5be71a"
#define B_HS_REFRESH "atk-B-hs-refresh-c0ffee"
#define A_HS_ACCESS "atk-A-hs-access-2a9d44"
#define A_HS_REFRESH "atk-A-hs-refresh-7e1b05"
#define B_BASIC_PASSWORD "atk-B-basic-password-41f9"
#define S_ECHO_SECRET "atk-S-echo-secret-0b7d13"
#define S_HS_ACCESS "atk-S-hs-access-88c1e2"
#define HS_CLIENT_SECRET "atk-hs-client-secret-d3e4"
#define QUERY_SECRET "atk-query-secret-f00d17"
#define B_GROUP "bravo-group-ref-77"
#define B_NAME "bravo-victim-project"
#define B_ONLY_INT "bravo-only-int"

/* ---- helpers ------------------------------------------------------------------ */

static void secret_log(const char *s)
{
    const char *path = getenv("PB_SECRETS_LOG");
    if (!path || !*path || !s || !*s)
        return;
    FILE *f = fopen(path, "a");
    if (!f)
        return;
    fprintf(f, "%s\n", s);
    fclose(f);
}

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    char *s = NULL;
    if (vasprintf(&s, f, ap) < 0)
        abort();
    va_end(ap);
    return s;
}

/* Every occurrence of `from` in s replaced by `to` (malloc'd). */
static char *replace_all(const char *s, const char *from, const char *to)
{
    size_t fl = strlen(from), tl = strlen(to), n = 0;
    for (const char *p = s; (p = strstr(p, from)); p += fl)
        n++;
    char *out = malloc(strlen(s) + n * (tl > fl ? tl - fl : 0) + 1), *o = out;
    for (const char *p = s;;) {
        const char *hit = strstr(p, from);
        if (!hit) {
            strcpy(o, p);
            break;
        }
        memcpy(o, p, (size_t)(hit - p));
        o += hit - p;
        memcpy(o, to, tl);
        o += tl;
        p = hit + fl;
    }
    return out;
}

static int port_of(const char *url)
{
    const char *c = strrchr(url, ':');
    return c ? atoi(c + 1) : 0;
}

struct resp {
    long status;
    char *body;
    char *headers;
    json_t *j;
};

static void resp_free(struct resp *r)
{
    free(r->body);
    free(r->headers);
    json_decref(r->j);
    memset(r, 0, sizeof *r);
}

static void req_on(const char *server, const char *method, const char *path,
                   const char *const *hdrs, const char *body, struct resp *out)
{
    char *url = fmt("%s%s", server, path);
    struct pbt_resp r;
    pbt_http(method, url, hdrs, body, &r);
    free(url);
    out->status = r.status;
    out->body = r.body;
    out->headers = r.headers;
    out->j = json_loads(r.body, JSON_DECODE_ANY, NULL);
}

static void req(const char *method, const char *path, const char *const *hdrs, const char *body,
                struct resp *out)
{
    req_on(base, method, path, hdrs, body, out);
}

static const char *jstr(const json_t *j, const char *key)
{
    return json_string_value(json_object_get(j, key));
}

/* The "type" slug of a problem, or the code of a Nango error. */
static const char *slug_of(const struct resp *r)
{
    const char *t = jstr(r->j, "type");
    if (t && strncmp(t, "urn:plugboard:problem:", 22) == 0)
        return t + 22;
    const char *code = jstr(json_object_get(r->j, "error"), "code");
    return code ? code : "";
}

static int is_problem(const struct resp *r)
{
    return strstr(r->headers, "application/problem+json") != NULL && json_is_object(r->j) &&
           json_integer_value(json_object_get(r->j, "status")) == r->status;
}

#define EXPECT(cond, ...)                                                                    \
    do {                                                                                     \
        int ok_ = !!(cond);                                                                 \
        if (!ok_) {                                                                          \
            fprintf(stderr, "\n    %s:%d: ", __FILE__, __LINE__);                            \
            fprintf(stderr, __VA_ARGS__);                                                    \
            fputc('\n', stderr);                                                             \
        }                                                                                    \
        CU_assertImplementation(ok_ ? CU_TRUE : CU_FALSE, __LINE__, #cond, __FILE__, "",     \
                                CU_FALSE);                                                   \
    } while (0)

/* A string equals the expected one (NULL is a failure, not a crash). */
#define EXPECT_STR(actual, want)                                                             \
    do {                                                                                     \
        const char *a_ = (actual), *w_ = (want);                                             \
        EXPECT(a_ && strcmp(a_, w_) == 0, "%s is '%.300s', want '%.300s'", #actual,          \
               a_ ? a_ : "(null)", w_);                                                      \
    } while (0)

/* ---- raw sockets ---------------------------------------------------------------- */

static int raw_connect(int p)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)p)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    struct timeval tv = {15, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

/* Sends `len` raw bytes and reads until the server closes. The status of
 * the first response (0 when none) and the whole answer in *out. */
static long raw_exchange(int p, const char *data, size_t len, char **out)
{
    *out = NULL;
    int fd = raw_connect(p);
    if (fd < 0)
        return -1;
    size_t off = 0;
    while (off < len) {
        ssize_t w = send(fd, data + off, len - off, MSG_NOSIGNAL);
        if (w <= 0)
            break; /* the server may close early on oversize input */
        off += (size_t)w;
    }
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap + 1);
    for (;;) {
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
        }
        ssize_t r = recv(fd, buf + n, cap - n, 0);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    buf[n] = '\0';
    close(fd);
    *out = buf;
    long status = 0;
    if (n > 12 && strncmp(buf, "HTTP/1.", 7) == 0)
        status = strtol(buf + 9, NULL, 10);
    return status;
}

static long raw(int p, const char *text, char **out)
{
    return raw_exchange(p, text, strlen(text), out);
}

/* The body of a raw answer (after the head), or "". */
static const char *raw_body(const char *answer)
{
    const char *b = answer ? strstr(answer, "\r\n\r\n") : NULL;
    return b ? b + 4 : "";
}

/* ---- identifiers: B's real ones and look-alikes that exist nowhere ---------------- */

struct ident {
    const char *token; /* placeholder in templates */
    const char *real;
    char fake[128];
};
static struct ident idents[] = {
    {"@P@", B.id, ""},          {"@PN@", B.name, ""},         {"@IE@", b_inst_echo, ""},
    {"@IH@", b_inst_hs, ""},    {"@IB@", b_inst_only, ""},    {"@CE@", b_conn_echo, ""},
    {"@CH@", b_conn_hs, ""},    {"@CB@", b_conn_basic, ""},   {"@NE@", b_int_echo, ""},
    {"@NH@", b_int_hs, ""},     {"@NB@", b_int_only, ""},     {"@NBN@", B_ONLY_INT, ""},
    {"@G@", B_GROUP, ""},       {"@O@", b_op, ""},            {"@K@", B.key2_id, ""},
};
#define N_IDENTS (sizeof idents / sizeof idents[0])

static void make_fakes(void)
{
    for (size_t i = 0; i < N_IDENTS; i++) {
        struct ident *d = &idents[i];
        const char *us = strchr(d->real, '_');
        if (us && strlen(us) > 6) {
            snprintf(d->fake, sizeof d->fake, "%s", d->real);
            char *p = d->fake + (us - d->real) + 1;
            p[0] = 'z';
            p[1] = 'q';
            p[2] = 'z';
            p[3] = (char)('a' + i);
        } else {
            snprintf(d->fake, sizeof d->fake, "nope%zu-%s", i, d->real);
        }
    }
}

/* The template with placeholders replaced by B's (fake = 0) or the
 * look-alikes (fake = 1); "@A@" is A's project id. malloc'd. */
static char *expand(const char *tmpl, int fake)
{
    if (!tmpl)
        return NULL;
    char *s = strdup(tmpl);
    /* Longest tokens first so "@PN@" is not eaten by "@P@". */
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < N_IDENTS; i++) {
            if ((strlen(idents[i].token) > 3) != (pass == 0))
                continue;
            char *t = replace_all(s, idents[i].token, fake ? idents[i].fake : idents[i].real);
            free(s);
            s = t;
        }
    char *t = replace_all(s, "@A@", A.id);
    free(s);
    return t;
}

/* The strings of B that A must never see unless A itself sent them. */
static const char *b_secrets[32];
static size_t n_b_secrets;

static void no_leak(const char *sent, const struct resp *r, const char *what)
{
    for (size_t i = 0; i < N_IDENTS; i++) {
        if (strstr(sent, idents[i].real))
            continue;
        EXPECT(!strstr(r->body, idents[i].real) && !strstr(r->headers, idents[i].real),
               "%s: the answer carries B's %s (%s)", what, idents[i].token, r->body);
    }
    for (size_t i = 0; i < n_b_secrets; i++)
        EXPECT(strstr(sent, b_secrets[i]) || (!strstr(r->body, b_secrets[i]) && !strstr(r->headers, b_secrets[i])),
               "%s: the answer carries one of B's secrets", what);
}

/* The body with requestId dropped, keys sorted, and the look-alikes turned
 * back into B's identifiers. malloc'd. */
static char *normalized(const struct resp *r, int fake)
{
    char *s;
    if (json_is_object(r->j)) {
        json_t *c = json_deep_copy(r->j);
        json_object_del(c, "requestId");
        s = json_dumps(c, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
        json_decref(c);
    } else {
        s = strdup(r->body);
    }
    if (fake)
        for (size_t i = 0; i < N_IDENTS; i++) {
            char *t = replace_all(s, idents[i].fake, idents[i].real);
            free(s);
            s = t;
        }
    return s;
}

/* Sends the request made from the templates with B's identifiers and with
 * look-alikes that exist nowhere: both must answer `want`, with the same
 * body (B is indistinguishable from nothing), and never leak B's data. */
static void probe(const char *method, const char *path_t, const char *const *hdr_t,
                  const char *body_t, long want, const char *want_slug)
{
    struct resp r[2];
    char *sent[2];
    for (int fake = 0; fake < 2; fake++) {
        char *path = expand(path_t, fake), *body = expand(body_t, fake);
        char *hdrs[16] = {0};
        size_t nh = 0;
        for (; hdr_t && hdr_t[nh] && nh < 15; nh++)
            hdrs[nh] = expand(hdr_t[nh], fake);
        req(method, path, (const char *const *)hdrs, body, &r[fake]);
        sent[fake] = fmt("%s %s %s", path, body ? body : "", nh ? hdrs[0] : "");
        for (size_t i = 0; i < nh; i++) {
            char *t = fmt("%s %s", sent[fake], hdrs[i]);
            free(sent[fake]);
            sent[fake] = t;
            free(hdrs[i]);
        }
        free(path);
        free(body);
    }
    char what[600];
    snprintf(what, sizeof what, "%s %.500s", method, sent[0]);
    EXPECT(r[0].status == want, "%s: status %ld, want %ld: %s", what, r[0].status, want,
           r[0].body);
    EXPECT(r[1].status == want, "%s (look-alike ids): status %ld, want %ld: %s", what,
           r[1].status, want, r[1].body);
    if (want_slug)
        EXPECT(strcmp(slug_of(&r[0]), want_slug) == 0, "%s: slug %s, want %s", what,
               slug_of(&r[0]), want_slug);
    char *n0 = normalized(&r[0], 0), *n1 = normalized(&r[1], 1);
    EXPECT(strcmp(n0, n1) == 0, "%s: B's answer differs from a non-existent one's:\n  %s\n  %s",
           what, n0, n1);
    no_leak(sent[0], &r[0], what);
    free(n0);
    free(n1);
    for (int i = 0; i < 2; i++) {
        free(sent[i]);
        resp_free(&r[i]);
    }
}

/* ---- set-up ------------------------------------------------------------------ */

static int make_project(struct pb_app *a, const char *name, struct proj *p)
{
    struct pb_problem pr = {0};
    json_t *out = NULL;
    if (pb_ctl_project_create(a, name, &out, &pr) != 0) {
        fprintf(stderr, "project: %s\n", pr.detail);
        return -1;
    }
    snprintf(p->id, sizeof p->id, "%s", jstr(out, "id"));
    snprintf(p->name, sizeof p->name, "%s", name);
    snprintf(p->key, sizeof p->key, "%s", jstr(out, "apiKey"));
    json_decref(out);
    secret_log(p->key);
    if (pb_ctl_api_key_create(a, p->id, &out, &pr) != 0)
        return -1;
    snprintf(p->key2, sizeof p->key2, "%s", jstr(out, "apiKey"));
    snprintf(p->key2_id, sizeof p->key2_id, "%s", jstr(out, "id"));
    json_decref(out);
    secret_log(p->key2);
    return 0;
}

static int manifest(struct pb_app *a, const struct proj *p, const char *text)
{
    struct pb_problem pr = {0};
    json_t *out = NULL;
    if (pb_ctl_manifest_apply(a, p->id, text, strlen(text), "amp.yaml", &out, &pr) != 0) {
        fprintf(stderr, "manifest: %s\n", pr.detail);
        return -1;
    }
    json_decref(out);
    return 0;
}

static int integration_id(struct pb_app *a, const struct proj *p, const char *name, char *out)
{
    struct pb_problem pr = {0};
    json_t *j = NULL;
    if (pb_ctl_integration_get(a, p->id, name, &j, &pr) != 0)
        return -1;
    snprintf(out, 64, "%s", jstr(j, "id"));
    json_decref(j);
    return 0;
}

/* A connection from `body` and an installation of it; ids into conn/inst. */
static int connect_install(struct pb_app *a, const struct proj *p, const char *integration,
                           const char *body, char *conn, char *inst)
{
    struct pb_problem pr = {0};
    json_t *b = json_loads(body, 0, NULL), *c = NULL, *i = NULL;
    if (!b || pb_ctl_connection_generate(a, p->id, b, &c, &pr) != 0) {
        fprintf(stderr, "connection: %s\n", pr.detail);
        return -1;
    }
    if (conn)
        snprintf(conn, 64, "%s", jstr(c, "id"));
    if (inst) {
        json_t *ib = json_pack("{s:O, s:O, s:{s:{}}}", "groupRef", json_object_get(b, "groupRef"),
                               "connectionId", json_object_get(c, "id"), "config", "content");
        int rc = pb_ctl_installation_create(a, p->id, integration, ib, &i, &pr);
        json_decref(ib);
        if (rc != 0) {
            fprintf(stderr, "installation: %s\n", pr.detail);
            return -1;
        }
        snprintf(inst, 64, "%s", jstr(i, "id"));
    }
    json_decref(b);
    json_decref(c);
    json_decref(i);
    return 0;
}

static int setup(void)
{
    struct fake_opts hs_opts = {.client_id = "atk-hs-client", .client_secret = HS_CLIENT_SECRET};
    echo = fake_start(FAKE_ECHO, NULL);
    evil = fake_start(FAKE_ECHO, NULL);
    hs = fake_start(FAKE_HUBSPOT, &hs_opts);
    if (!echo || !evil || !hs)
        return -1;
    secret_log(HS_CLIENT_SECRET);
    char *yaml = fmt("server: {max_body_bytes: %d}\n"
                     "egress: {allow_private: true, timeout_ms: 5000}\n"
                     "providers:\n"
                     "  echo: {plugin: generic, base_url: '%s', auth_header: X-Echo-Key, "
                     "auth_scheme: ''}\n"
                     "  hubspot: {plugin: hubspot, client_id: atk-hs-client, client_secret: %s, "
                     "base_url: '%s', token_url: '%s/oauth/v1/token'}\n",
                     MAX_BODY, fake_base_url(echo), HS_CLIENT_SECRET, fake_base_url(hs),
                     fake_base_url(hs));
    app = pbt_start(yaml, base, sizeof base);
    free(yaml);
    /* The strict app refuses private destinations; every provider of it
     * points at loopback, by name and by address. Both apps start before
     * anything is sealed: the master key is process-wide. */
    yaml = fmt("egress: {allow_private: false, timeout_ms: 5000}\n"
               "providers:\n"
               "  echo-local: {plugin: generic, base_url: 'http://localhost:%d', "
               "auth_header: X-Echo-Key, auth_scheme: ''}\n"
               "  echo-ip: {plugin: generic, base_url: '%s', auth_header: X-Echo-Key, "
               "auth_scheme: ''}\n"
               "  hubspot: {plugin: hubspot, client_id: atk-hs-client, client_secret: %s, "
               "base_url: 'http://localhost:%d', token_url: 'http://localhost:%d/oauth/v1/token'}\n",
               fake_port(echo), fake_base_url(echo), HS_CLIENT_SECRET, fake_port(hs),
               fake_port(hs));
    strict_app = pbt_start(yaml, strict_base, sizeof strict_base);
    free(yaml);
    if (!app || !strict_app)
        return -1;
    port = port_of(base);
    strict_port = port_of(strict_base);
    if (getenv("PB_SECRETS_LOG"))
        pb_log_setup("debug", "json"); /* the scan reads the most verbose logs */

    const char *amp_a = "specVersion: 1.0.0\n"
                        "integrations:\n"
                        "  - {name: echo-int, provider: echo, proxy: {enabled: true}}\n"
                        "  - {name: hs-int, provider: hubspot, proxy: {enabled: true},\n"
                        "     write: {objects: [{objectName: contacts}]}}\n";
    const char *amp_b = "specVersion: 1.0.0\n"
                        "integrations:\n"
                        "  - {name: echo-int, provider: echo, proxy: {enabled: true}}\n"
                        "  - {name: hs-int, provider: hubspot, proxy: {enabled: true},\n"
                        "     write: {objects: [{objectName: contacts}]}}\n"
                        "  - {name: " B_ONLY_INT ", provider: echo, proxy: {enabled: true}}\n";
    if (make_project(app, "alpha-attacker-project", &A) != 0 ||
        make_project(app, B_NAME, &B) != 0 || manifest(app, &A, amp_a) != 0 ||
        manifest(app, &B, amp_b) != 0)
        return -1;
    fake_add_token(hs, A_HS_ACCESS, A_HS_REFRESH, 0);
    fake_add_token(hs, B_HS_ACCESS, B_HS_REFRESH, 0);
    const char *secrets[] = {A_ECHO_SECRET, B_ECHO_SECRET, B_HS_ACCESS, B_HS_REFRESH,
                             A_HS_ACCESS, A_HS_REFRESH, B_BASIC_PASSWORD, S_ECHO_SECRET,
                             S_HS_ACCESS, QUERY_SECRET};
    for (size_t i = 0; i < sizeof secrets / sizeof secrets[0]; i++)
        secret_log(secrets[i]);
    if (connect_install(app, &A, "echo-int",
                        "{\"groupRef\":\"alpha-group\",\"provider\":\"echo\",\"apiKey\":\"" A_ECHO_SECRET "\"}",
                        a_conn_echo, a_inst_echo) != 0 ||
        connect_install(app, &A, "hs-int",
                        "{\"groupRef\":\"alpha-group\",\"provider\":\"hubspot\","
                        "\"oauth2AuthorizationCode\":{\"accessToken\":{\"token\":\"" A_HS_ACCESS "\","
                        "\"expiresAt\":\"2099-01-01T00:00:00Z\"},\"refreshToken\":{\"token\":\"" A_HS_REFRESH "\"}}}",
                        NULL, a_inst_hs) != 0 ||
        connect_install(app, &B, "echo-int",
                        "{\"groupRef\":\"" B_GROUP "\",\"provider\":\"echo\",\"apiKey\":\"" B_ECHO_SECRET "\"}",
                        b_conn_echo, b_inst_echo) != 0 ||
        connect_install(app, &B, "hs-int",
                        "{\"groupRef\":\"" B_GROUP "\",\"provider\":\"hubspot\","
                        "\"oauth2AuthorizationCode\":{\"accessToken\":{\"token\":\"" B_HS_ACCESS "\","
                        "\"expiresAt\":\"2099-01-01T00:00:00Z\"},\"refreshToken\":{\"token\":\"" B_HS_REFRESH "\"}}}",
                        b_conn_hs, b_inst_hs) != 0 ||
        connect_install(app, &B, "echo-int",
                        "{\"groupRef\":\"bravo-basic-group\",\"provider\":\"echo\",\"basicAuth\":"
                        "{\"username\":\"bravo-user\",\"password\":\"" B_BASIC_PASSWORD "\"}}",
                        b_conn_basic, NULL) != 0 ||
        connect_install(app, &B, B_ONLY_INT,
                        "{\"groupRef\":\"" B_GROUP "\",\"provider\":\"echo\",\"apiKey\":\"" B_ECHO_SECRET "\"}",
                        NULL, b_inst_only) != 0)
        return -1;
    if (integration_id(app, &B, "echo-int", b_int_echo) != 0 ||
        integration_id(app, &B, "hs-int", b_int_hs) != 0 ||
        integration_id(app, &B, B_ONLY_INT, b_int_only) != 0)
        return -1;
    /* B's operation: a synchronous write through the Write API. */
    char *kh = fmt("x-api-key: %s", B.key);
    const char *h[] = {kh, "Content-Type: application/json", NULL};
    char *path = fmt("/v1/projects/%s/integrations/hs-int/objects/contacts", B.id);
    struct resp r;
    req("POST", path, h, "{\"groupRef\":\"" B_GROUP "\",\"type\":\"create\","
                         "\"record\":{\"email\":\"bravo@example.com\"}}", &r);
    if (jstr(r.j, "operationId"))
        snprintf(b_op, sizeof b_op, "%s", jstr(r.j, "operationId"));
    else {
        fprintf(stderr, "test_attack: B's write answered %ld %s; using a made-up operation id\n",
                r.status, r.body);
        snprintf(b_op, sizeof b_op, "op_bravonoopbravonoopbravonoop");
    }
    resp_free(&r);
    free(path);
    free(kh);
    /* The strict app's project. */
    if (make_project(strict_app, "strict-project", &S) != 0 ||
        manifest(strict_app, &S,
                 "specVersion: 1.0.0\n"
                 "integrations:\n"
                 "  - {name: local-int, provider: echo-local, proxy: {enabled: true}}\n"
                 "  - {name: ip-int, provider: echo-ip, proxy: {enabled: true}}\n"
                 "  - {name: hs-int, provider: hubspot, proxy: {enabled: true},\n"
                 "     write: {objects: [{objectName: contacts}]}}\n") != 0 ||
        connect_install(strict_app, &S, "local-int",
                        "{\"groupRef\":\"s-group\",\"provider\":\"echo-local\",\"apiKey\":\"" S_ECHO_SECRET "\"}",
                        NULL, s_inst_local) != 0 ||
        connect_install(strict_app, &S, "ip-int",
                        "{\"groupRef\":\"s-group\",\"provider\":\"echo-ip\",\"apiKey\":\"" S_ECHO_SECRET "\"}",
                        NULL, s_inst_ip) != 0 ||
        connect_install(strict_app, &S, "hs-int",
                        "{\"groupRef\":\"s-group\",\"provider\":\"hubspot\","
                        "\"oauth2AuthorizationCode\":{\"accessToken\":{\"token\":\"" S_HS_ACCESS "\","
                        "\"expiresAt\":\"2099-01-01T00:00:00Z\"}}}",
                        NULL, s_inst_hs) != 0)
        return -1;
    fake_add_token(hs, S_HS_ACCESS, NULL, 0);
    make_fakes();
    size_t k = 0;
    b_secrets[k++] = B.key;
    b_secrets[k++] = B.key2;
    b_secrets[k++] = B_ECHO_SECRET;
    b_secrets[k++] = B_HS_ACCESS;
    b_secrets[k++] = B_HS_REFRESH;
    b_secrets[k++] = B_BASIC_PASSWORD;
    b_secrets[k++] = "bravo-user";
    b_secrets[k++] = B_ONLY_INT;
    b_secrets[k++] = "bravo@example.com";
    n_b_secrets = k;
    return 0;
}

/* ---- cross-project isolation ------------------------------------------------------ */

struct route {
    const char *path;
    const char *methods; /* the methods the server has for it */
    const char *body;    /* sent with POST, PUT and PATCH */
};

static const struct route b_routes[] = {
    {"/v1/projects/@P@", "GET", NULL},
    {"/v1/projects/@P@/api-keys", "POST", "{}"},
    {"/v1/projects/@P@/manifest", "PUT", "specVersion: 1.0.0\nintegrations: []\n"},
    {"/v1/projects/@P@/integrations", "GET", NULL},
    {"/v1/projects/@P@/integrations/@NE@", "GET", NULL},
    {"/v1/projects/@P@/integrations/@NBN@", "GET", NULL},
    {"/v1/projects/@P@/connections:generate", "POST",
     "{\"groupRef\":\"@G@\",\"provider\":\"echo\",\"apiKey\":\"atk-attacker-key\"}"},
    {"/v1/projects/@P@/connections", "GET", NULL},
    {"/v1/projects/@P@/connections/@CE@", "GET DELETE", NULL},
    {"/v1/projects/@P@/connections/@CB@", "GET DELETE", NULL},
    {"/v1/projects/@P@/integrations/@NE@/installations", "GET POST",
     "{\"groupRef\":\"@G@\",\"connectionId\":\"@CE@\",\"config\":{\"content\":{}}}"},
    {"/v1/projects/@P@/integrations/@NBN@/installations?groupRef=@G@", "GET POST",
     "{\"groupRef\":\"@G@\",\"config\":{\"content\":{}}}"},
    {"/v1/projects/@P@/integrations/@NE@/installations/@IE@", "GET PATCH DELETE",
     "{\"updateMask\":[\"config.content.proxy.enabled\"],\"installation\":{}}"},
    {"/v1/projects/@P@/integrations/@NB@/installations/@IB@", "GET PATCH DELETE",
     "{\"updateMask\":[\"connectionId\"],\"installation\":{\"connectionId\":\"@CE@\"}}"},
    {"/v1/projects/@P@/integrations/@NH@/objects/contacts/config-content", "PATCH",
     "{\"installationId\":\"@IH@\",\"action\":\"write\",\"changes\":[]}"},
    {"/v1/projects/@P@/integrations/@NH@/objects/contacts", "POST",
     "{\"groupRef\":\"@G@\",\"type\":\"create\",\"record\":{\"email\":\"x@example.com\"}}"},
    {"/v1/projects/@P@/integrations/hs-int/objects/contacts", "POST",
     "{\"groupRef\":\"@G@\",\"type\":\"create\",\"mode\":\"asynchronous\",\"record\":{\"a\":1}}"},
    {"/v1/projects/@P@/operations/@O@", "GET", NULL},
    {"/v1/projects/@P@/integrations/@NH@/installations/@IH@/operations", "GET", NULL},
    {"/v1/projects/@P@/activity?installationId=@IE@", "GET", NULL},
    {"/v1/projects/@P@/activity", "GET", NULL},
};

static const char *const methods[] = {"GET", "POST", "PUT", "PATCH", "DELETE"};

static int has_method(const char *list, const char *m)
{
    size_t n = strlen(m);
    for (const char *p = list; (p = strstr(p, m)); p += n)
        if ((p == list || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0'))
            return 1;
    return 0;
}

static void test_other_key_on_every_route_of_b(void)
{
    size_t echo0 = fake_count(echo, NULL, NULL), hs0 = fake_count(hs, NULL, NULL);
    char *ka = fmt("x-api-key: %s", A.key), *ba = fmt("Authorization: Bearer %s", A.key2);
    const char *hx[] = {ka, NULL}, *hb[] = {ba, NULL};
    for (size_t i = 0; i < sizeof b_routes / sizeof b_routes[0]; i++) {
        const struct route *rt = &b_routes[i];
        for (size_t m = 0; m < 5; m++) {
            int exists = has_method(rt->methods, methods[m]);
            int with_body = !strcmp(methods[m], "POST") || !strcmp(methods[m], "PUT") ||
                            !strcmp(methods[m], "PATCH");
            const char *body = with_body ? (rt->body ? rt->body : "{}") : NULL;
            /* By id and by name, with either way of sending the key. */
            char *by_name = replace_all(rt->path, "@P@", "@PN@");
            probe(methods[m], rt->path, hx, body, exists ? 404 : 405,
                  exists ? "not-found" : "method-not-allowed");
            probe(methods[m], by_name, hb, body, exists ? 404 : 405,
                  exists ? "not-found" : "method-not-allowed");
            /* Without a key: 401 wherever the route exists. */
            probe(methods[m], rt->path, NULL, body, exists ? 401 : 405,
                  exists ? "unauthenticated" : "method-not-allowed");
            free(by_name);
        }
    }
    /* The walk reached nothing upstream and changed nothing of B's. */
    CU_ASSERT_EQUAL(fake_count(echo, NULL, NULL), echo0);
    CU_ASSERT_EQUAL(fake_count(hs, NULL, NULL), hs0);
    free(ka);
    free(ba);
}

static void test_b_routes_work_for_b(void)
{
    /* The positive control: B's own key reaches everything the walk probed. */
    char *kb = fmt("x-api-key: %s", B.key);
    const char *h[] = {kb, NULL};
    for (size_t i = 0; i < sizeof b_routes / sizeof b_routes[0]; i++) {
        if (!has_method(b_routes[i].methods, "GET"))
            continue;
        char *path = expand(b_routes[i].path, 0);
        struct resp r;
        req("GET", path, h, NULL, &r);
        EXPECT(r.status == 200, "B's own GET %s: %ld %s", path, r.status, r.body);
        resp_free(&r);
        free(path);
    }
    free(kb);
}

static void test_other_key_with_b_ids_under_own_project(void)
{
    size_t echo0 = fake_count(echo, NULL, NULL), hs0 = fake_count(hs, NULL, NULL);
    char *ka = fmt("x-api-key: %s", A.key);
    const char *h[] = {ka, NULL};
    char *own_inst = fmt("/v1/projects/@A@/integrations/echo-int/installations/%s", a_inst_echo);
    struct {
        const char *method, *path, *body;
        long want;
        const char *slug;
    } cases[] = {
        {"GET", "/v1/projects/@A@/integrations/@NB@", NULL, 404, "not-found"},
        {"GET", "/v1/projects/@A@/integrations/@NBN@", NULL, 404, "not-found"},
        {"GET", "/v1/projects/@A@/integrations/@NB@/installations", NULL, 404, "not-found"},
        {"GET", "/v1/projects/@A@/connections/@CE@", NULL, 404, "not-found"},
        {"GET", "/v1/projects/@A@/connections/@CB@", NULL, 404, "not-found"},
        {"DELETE", "/v1/projects/@A@/connections/@CH@", NULL, 404, "not-found"},
        {"GET", "/v1/projects/@A@/integrations/echo-int/installations/@IE@", NULL, 404,
         "not-found"},
        {"PATCH", "/v1/projects/@A@/integrations/echo-int/installations/@IE@",
         "{\"updateMask\":[\"config.content.proxy.enabled\"],\"installation\":{}}", 404,
         "not-found"},
        {"DELETE", "/v1/projects/@A@/integrations/echo-int/installations/@IE@", NULL, 404,
         "not-found"},
        {"GET", "/v1/projects/@A@/integrations/echo-int/installations?groupRef=@G@", NULL, 200,
         NULL},
        /* Taking over B's connection: refused exactly as an unknown id. */
        {"POST", "/v1/projects/@A@/integrations/hs-int/installations",
         "{\"groupRef\":\"alpha-new-group\",\"connectionId\":\"@CH@\",\"config\":{\"content\":{}}}",
         400, "invalid-request"},
        {"PATCH", own_inst,
         "{\"updateMask\":[\"connectionId\"],\"installation\":{\"connectionId\":\"@CE@\"}}", 400,
         "invalid-request"},
        {"PATCH", "/v1/projects/@A@/integrations/hs-int/objects/contacts/config-content",
         "{\"installationId\":\"@IH@\",\"action\":\"write\",\"changes\":[]}", 404, "not-found"},
        {"PATCH", "/v1/projects/@A@/integrations/hs-int/objects/contacts/config-content",
         "{\"groupRef\":\"@G@\",\"action\":\"write\",\"changes\":[]}", 404, "not-found"},
        {"POST", "/v1/projects/@A@/integrations/hs-int/objects/contacts",
         "{\"groupRef\":\"@G@\",\"type\":\"create\",\"record\":{\"email\":\"x@example.com\"}}",
         404, "not-found"},
        {"POST", "/v1/projects/@A@/integrations/@NBN@/objects/contacts",
         "{\"groupRef\":\"@G@\",\"type\":\"create\",\"record\":{\"email\":\"x@example.com\"}}",
         404, "not-found"},
        {"GET", "/v1/projects/@A@/operations/@O@", NULL, 404, "not-found"},
        {"GET", "/v1/projects/@A@/integrations/hs-int/installations/@IH@/operations", NULL, 404,
         "not-found"},
        {"GET", "/v1/projects/@A@/activity?installationId=@IE@", NULL, 200, NULL},
        {"POST", "/v1/oauth-connect",
         "{\"projectIdOrName\":\"@P@\",\"groupRef\":\"@G@\",\"provider\":\"hubspot\"}", 404,
         "not-found"},
        {"POST", "/v1/oauth-connect",
         "{\"projectIdOrName\":\"@PN@\",\"groupRef\":\"@G@\",\"provider\":\"hubspot\"}", 404,
         "not-found"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        probe(cases[i].method, cases[i].path, h, cases[i].body, cases[i].want, cases[i].slug);
    /* The lists A may read are empty of B. */
    struct resp r;
    char *p = expand("/v1/projects/@A@/integrations/echo-int/installations?groupRef=@G@", 0);
    req("GET", p, h, NULL, &r);
    CU_ASSERT_EQUAL(json_array_size(r.j), 0);
    CU_ASSERT_TRUE(json_is_array(r.j));
    resp_free(&r);
    free(p);
    p = expand("/v1/projects/@A@/activity?installationId=@IE@", 0);
    req("GET", p, h, NULL, &r);
    CU_ASSERT_TRUE(json_is_array(json_object_get(r.j, "activity")));
    CU_ASSERT_EQUAL(json_array_size(json_object_get(r.j, "activity")), 0);
    resp_free(&r);
    free(p);
    /* GET /v1/projects names A only. */
    req("GET", "/v1/projects", h, NULL, &r);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_EQUAL(json_array_size(r.j), 1);
    EXPECT_STR(jstr(json_array_get(r.j, 0), "id"), A.id);
    no_leak("", &r, "GET /v1/projects");
    resp_free(&r);
    /* A's own installation still has its own connection; B's are all there. */
    char *kb = fmt("x-api-key: %s", B.key);
    const char *hbk[] = {kb, NULL};
    const char *bpaths[] = {"/v1/projects/@P@/connections/@CE@", "/v1/projects/@P@/connections/@CH@",
                            "/v1/projects/@P@/connections/@CB@",
                            "/v1/projects/@P@/integrations/@NE@/installations/@IE@",
                            "/v1/projects/@P@/integrations/@NB@/installations/@IB@"};
    for (size_t i = 0; i < 5; i++) {
        p = expand(bpaths[i], 0);
        req("GET", p, hbk, NULL, &r);
        EXPECT(r.status == 200, "B's %s after the attack: %ld", p, r.status);
        resp_free(&r);
        free(p);
    }
    p = expand(own_inst, 0);
    req("GET", p, h, NULL, &r);
    EXPECT_STR(jstr(r.j, "connectionId"), a_conn_echo);
    resp_free(&r);
    free(p);
    free(kb);
    CU_ASSERT_EQUAL(fake_count(echo, NULL, NULL), echo0);
    CU_ASSERT_EQUAL(fake_count(hs, NULL, NULL), hs0);
    free(own_inst);
    free(ka);
}

static void test_other_key_on_b_through_the_proxy(void)
{
    size_t echo0 = fake_count(echo, NULL, NULL), hs0 = fake_count(hs, NULL, NULL);
    char *ka = fmt("x-api-key: %s", A.key), *ba = fmt("Authorization: Bearer %s", A.key);
    char *pa = fmt("x-amp-project-id: %s", A.id);
    const char *amp_b_proj[] = {"x-amp-proxy-version: 1", ka, "x-amp-project-id: @P@",
                                "x-amp-installation-id: @IE@", NULL};
    const char *amp_b_name[] = {"x-amp-proxy-version: 1", ka, "x-amp-project-id: @PN@",
                                "x-amp-integration-name: echo-int", "x-amp-group-ref: @G@", NULL};
    const char *amp_b_inst[] = {"x-amp-proxy-version: 1", ka, pa, "x-amp-installation-id: @IE@",
                                NULL};
    const char *amp_b_only[] = {"x-amp-proxy-version: 1", ka, pa, "x-amp-installation-id: @IB@",
                                NULL};
    const char *amp_b_hs[] = {"x-amp-proxy-version: 1", ka, pa, "x-amp-installation-id: @IH@",
                              NULL};
    const char *amp_b_group[] = {"x-amp-proxy-version: 1", ka, pa,
                                 "x-amp-integration-name: echo-int", "x-amp-group-ref: @G@",
                                 NULL};
    const char *amp_b_int[] = {"x-amp-proxy-version: 1", ka, pa,
                               "x-amp-integration-name: @NBN@", "x-amp-group-ref: @G@", NULL};
    const char *amp_b_int_id[] = {"x-amp-proxy-version: 1", ka, pa,
                                  "x-amp-integration-name: @NB@", "x-amp-group-ref: @G@", NULL};
    probe("GET", "/ping", amp_b_proj, NULL, 404, "not-found");
    probe("GET", "/ping", amp_b_name, NULL, 404, "not-found");
    probe("POST", "/ping", amp_b_inst, "{}", 404, "unknown-installation");
    probe("GET", "/ping", amp_b_only, NULL, 404, "unknown-installation");
    probe("GET", "/crm/v3/objects/contacts", amp_b_hs, NULL, 404, "unknown-installation");
    probe("DELETE", "/ping", amp_b_group, NULL, 404, "unknown-connection");
    probe("GET", "/ping", amp_b_int, NULL, 404, "unknown-integration");
    probe("GET", "/ping", amp_b_int_id, NULL, 404, "unknown-integration");
    const char *nango_group[] = {ba, "Provider-Config-Key: echo-int", "Connection-Id: @G@", NULL};
    const char *nango_int[] = {ba, "Provider-Config-Key: @NBN@", "Connection-Id: @G@", NULL};
    const char *nango_hs[] = {ba, "Provider-Config-Key: hs-int", "Connection-Id: @G@", NULL};
    probe("GET", "/proxy/ping", nango_group, NULL, 404, "unknown_connection");
    probe("PUT", "/proxy/ping", nango_int, "{}", 404, "unknown_provider_config");
    probe("GET", "/proxy/crm/v3/objects/contacts", nango_hs, NULL, 404, "unknown_connection");
    const char *sdk[] = {ba, NULL};
    probe("GET", "/sdk/@IE@/ping", sdk, NULL, 404, "unknown-installation");
    probe("PATCH", "/sdk/@IH@/crm/v3/objects/contacts/1", sdk, "{}", 404, "unknown-installation");
    probe("GET", "/sdk/@IB@", sdk, NULL, 404, "unknown-installation");
    /* B's key on B's installation, A's key on A's: both work (the control). */
    CU_ASSERT_EQUAL(fake_count(echo, NULL, NULL), echo0);
    CU_ASSERT_EQUAL(fake_count(hs, NULL, NULL), hs0);
    char *kb = fmt("Authorization: Bearer %s", B.key2);
    const char *own_b[] = {kb, NULL};
    struct resp r;
    char *p = fmt("/sdk/%s/ping", b_inst_echo);
    req("GET", p, own_b, NULL, &r);
    CU_ASSERT_EQUAL(r.status, 200);
    EXPECT_STR(jstr(json_object_get(r.j, "headers"), "x-echo-key"), B_ECHO_SECRET);
    resp_free(&r);
    free(p);
    p = fmt("/sdk/%s/ping", a_inst_echo);
    req("GET", p, sdk, NULL, &r);
    CU_ASSERT_EQUAL(r.status, 200);
    EXPECT_STR(jstr(json_object_get(r.j, "headers"), "x-echo-key"), A_ECHO_SECRET);
    resp_free(&r);
    free(p);
    CU_ASSERT_EQUAL(fake_count(echo, NULL, NULL), echo0 + 2);
    /* No request with B's credential came from A's calls. */
    for (size_t i = 0; i < fake_count(echo, NULL, NULL); i++) {
        struct fake_req fr;
        if (fake_nth(echo, NULL, NULL, i, &fr) != 0)
            break;
        const char *k = fake_req_header(&fr, "X-Echo-Key");
        if (i == echo0)
            EXPECT_STR(k, B_ECHO_SECRET);
        fake_req_free(&fr);
    }
    free(kb);
    free(ka);
    free(ba);
    free(pa);
}

/* ---- host escapes and header injection -------------------------------------------- */

/* One raw request in `style` (0 amp, 1 nango, 2 sdk) for `target` (the
 * provider path as the caller writes it), with extra header lines. */
static char *styled_request(int style, const char *method, const char *target,
                            const char *extra)
{
    switch (style) {
    case 0:
        return fmt("%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nx-amp-proxy-version: 1\r\n"
                   "x-api-key: %s\r\nx-amp-project-id: %s\r\nx-amp-installation-id: %s\r\n"
                   "%sConnection: close\r\n\r\n",
                   method, target, port, A.key, A.id, a_inst_echo, extra);
    case 1:
        return fmt("%s /proxy%s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: Bearer %s\r\n"
                   "Provider-Config-Key: echo-int\r\nConnection-Id: alpha-group\r\n"
                   "%sConnection: close\r\n\r\n",
                   method, target, port, A.key, extra);
    default:
        return fmt("%s /sdk/%s%s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: Bearer %s\r\n"
                   "%sConnection: close\r\n\r\n",
                   method, a_inst_echo, target, port, A.key, extra);
    }
}

static const char *const style_names[] = {"amp", "nango", "sdk"};

static void test_host_escapes_on_every_style(void)
{
    int ep = fake_port(evil);
    char *targets[] = {
        fmt("//127.0.0.1:%d/x", ep),
        fmt("/%%2F%%2F127.0.0.1:%d/x", ep),
        fmt("/%%2f%%2f127.0.0.1:%d/x", ep),
        fmt("/@127.0.0.1:%d/x", ep),
        fmt("/a@127.0.0.1:%d/x", ep),
        fmt("/%%40127.0.0.1:%d/x", ep),
        fmt("/..%%2F..%%2F127.0.0.1:%d", ep),
        fmt("/..%%2F.."),
        fmt("/a/%%2e%%2e/"),
        fmt("/a/%%2E%%2E/%%2e%%2e/x"),
        fmt("/a/../../x"),
        fmt("/./x"),
        fmt("/\\\\127.0.0.1:%d/x", ep),
        fmt("/%%5c%%5c127.0.0.1:%d/x", ep),
        fmt("/\\127.0.0.1:%d/x", ep),
        fmt("/x%%0d%%0aHost:%%20127.0.0.1:%d", ep),
        fmt("/x%%0d%%0a%%0d%%0aGET%%20/smuggled%%20HTTP/1.1"),
        fmt("/x%%00y"),
        fmt("/x%%0ay"),
    };
    size_t nt = sizeof targets / sizeof targets[0];
    size_t echo0 = fake_count(echo, NULL, NULL);
    for (int style = 0; style < 3; style++)
        for (size_t i = 0; i < nt; i++) {
            char *rq = styled_request(style, "GET", targets[i], ""), *ans = NULL;
            long st = raw(port, rq, &ans);
            EXPECT(st == 400, "%s %s: %ld %s", style_names[style], targets[i], st, ans);
            if (style != 1)
                EXPECT(strstr(ans, "urn:plugboard:problem:invalid-path") != NULL,
                       "%s %s: %s", style_names[style], targets[i], raw_body(ans));
            else
                EXPECT(strstr(ans, "\"code\":\"invalid-path\"") != NULL, "%s %s: %s",
                       style_names[style], targets[i], raw_body(ans));
            free(rq);
            free(ans);
        }
    /* "\evil" without the leading slash: the amp style sees a path that does
     * not start with '/'; the Nango and SDK prefixes then do not match. */
    char *bs = fmt("\\127.0.0.1:%d/x", ep);
    long want[] = {400, 404, 404};
    for (int style = 0; style < 3; style++) {
        char *ans = NULL, *rq;
        if (style == 0)
            rq = styled_request(0, "GET", bs, "");
        else if (style == 1)
            rq = fmt("GET /proxy%s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                     "Provider-Config-Key: echo-int\r\nConnection-Id: alpha-group\r\n"
                     "Connection: close\r\n\r\n", bs, A.key);
        else
            rq = fmt("GET /sdk/%s%s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                     "Connection: close\r\n\r\n", a_inst_echo, bs, A.key);
        long st = raw(port, rq, &ans);
        EXPECT(st == want[style], "%s %s: %ld %s", style_names[style], bs, st, ans);
        free(rq);
        free(ans);
    }
    free(bs);
    CU_ASSERT_EQUAL(fake_count(echo, NULL, NULL), echo0);
    CU_ASSERT_EQUAL(fake_count(evil, NULL, NULL), 0);
    for (size_t i = 0; i < nt; i++)
        free(targets[i]);
}

static void test_absolute_uri_targets(void)
{
    int ep = fake_port(evil);
    size_t echo0 = fake_count(echo, NULL, NULL);
    char *targets[] = {fmt("http://127.0.0.1:%d/x", ep), fmt("https://127.0.0.1:%d/x", ep),
                       fmt("http://127.0.0.1:%d/proxy/x", port), fmt("127.0.0.1:%d", ep),
                       fmt("*")};
    for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++) {
        /* Amp style: the whole target is the provider path. */
        char *rq = styled_request(0, i == 3 ? "CONNECT" : "GET", targets[i], ""), *ans = NULL;
        long st = raw(port, rq, &ans);
        EXPECT(st == 400, "amp %s: %ld %s", targets[i], st, ans);
        EXPECT(strstr(ans, "the path must start with '/'") != NULL, "amp %s: %s", targets[i],
               raw_body(ans));
        free(rq);
        free(ans);
        /* Nango and SDK headers without the amp header: no route matches. */
        rq = fmt("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: Bearer %s\r\n"
                 "Provider-Config-Key: echo-int\r\nConnection-Id: alpha-group\r\n"
                 "Connection: close\r\n\r\n",
                 targets[i], ep, A.key);
        st = raw(port, rq, &ans);
        EXPECT(st == 404, "nango %s: %ld %s", targets[i], st, ans);
        EXPECT(strstr(ans, "urn:plugboard:problem:not-found") != NULL, "nango %s: %s",
               targets[i], raw_body(ans));
        free(rq);
        free(ans);
        free(targets[i]);
    }
    CU_ASSERT_EQUAL(fake_count(echo, NULL, NULL), echo0);
    CU_ASSERT_EQUAL(fake_count(evil, NULL, NULL), 0);
}

/* The last request the echo fake recorded. */
static int echo_last(struct fake_req *fr)
{
    return fake_last(echo, NULL, NULL, fr);
}

static int no_crlf_in_headers(const struct fake_req *fr)
{
    for (size_t i = 0; i < fr->nheaders; i++)
        if (strpbrk(fr->headers[i].value, "\r\n") || strpbrk(fr->headers[i].name, "\r\n :"))
            return 0;
    return 1;
}

static void test_header_injection(void)
{
    int ep = fake_port(evil);
    char hostline[64];
    snprintf(hostline, sizeof hostline, "127.0.0.1:%d", fake_port(echo));
    struct {
        const char *extra;
        long want; /* encoded CR LF is just text; obs-fold is refused */
    } inj[] = {
        {"X-Enc: a%0d%0aInjected: 1\r\n", 200},
        {"Nango-Proxy-X-Enc: a%0d%0aInjected: 1\r\n", 200},
        {"X-Fold: a\r\n Injected: 1\r\n", 400},
        {"Nango-Proxy-X-Fold: a\r\n\tInjected: 1\r\n", 400},
    };
    for (size_t i = 0; i < sizeof inj / sizeof inj[0]; i++)
        for (int style = 0; style < 3; style++) {
            size_t before = fake_count(echo, NULL, NULL);
            char *rq = styled_request(style, "GET", "/inj", inj[i].extra), *ans = NULL;
            long st = raw(port, rq, &ans);
            EXPECT(st == inj[i].want, "%s %zu: %ld %s", style_names[style], i, st, ans);
            if (st == 200) {
                struct fake_req fr;
                CU_ASSERT_EQUAL_FATAL(echo_last(&fr), 0);
                CU_ASSERT_EQUAL(fake_count(echo, NULL, NULL), before + 1);
                EXPECT(fake_req_header(&fr, "Injected") == NULL, "%s %zu: a header was injected",
                       style_names[style], i);
                CU_ASSERT_TRUE(no_crlf_in_headers(&fr));
                EXPECT_STR(fake_req_header(&fr, "Host"), hostline);
                /* The text arrives as sent where the style forwards it. */
                const char *name = i == 0 ? (style == 1 ? NULL : "X-Enc")
                                          : (style == 1 ? "X-Enc" : "Nango-Proxy-X-Enc");
                if (name)
                    EXPECT_STR(fake_req_header(&fr, name), "a%0d%0aInjected: 1");
                else
                    CU_ASSERT_PTR_NULL(fake_req_header(&fr, "X-Enc"));
                fake_req_free(&fr);
            } else {
                CU_ASSERT_EQUAL(fake_count(echo, NULL, NULL), before);
            }
            free(rq);
            free(ans);
        }
    /* A bare CR inside a value is refused before anything is sent (it would
     * end the header line for many servers); a bare LF ends the line here
     * already, so what follows is just another header of the caller's. */
    struct {
        const char *extra;
        long want;
        const char *bad; /* the header the 400 names */
    } bare[] = {
        {"X-Bare: a\rInjected: 1\r\n", 400, "X-Bare"},
        {"Nango-Proxy-X-Bare: a\rInjected: 1\r\n", 400, "Nango-Proxy-X-Bare"},
        {"X-Bare: a\nHost: evil\r\n", 200, NULL},
        {"Nango-Proxy-X-Bare: a\nInjected: 1\r\n", 200, NULL},
    };
    for (size_t i = 0; i < sizeof bare / sizeof bare[0]; i++)
        for (int style = 0; style < 3; style++) {
            size_t before = fake_count(echo, NULL, NULL);
            char *rq = styled_request(style, "GET", "/bare", bare[i].extra), *ans = NULL;
            long st = raw(port, rq, &ans);
            EXPECT(st == bare[i].want, "bare %zu %s: %ld %s", i, style_names[style], st, ans);
            if (bare[i].want == 400) {
                CU_ASSERT_EQUAL(fake_count(echo, NULL, NULL), before);
                char *want = style == 1 ? fmt("\"code\":\"invalid-header\"")
                                        : fmt("\"name\":\"%s\"", bare[i].bad);
                EXPECT(strstr(raw_body(ans), want) != NULL, "bare %zu %s: %s", i,
                       style_names[style], raw_body(ans));
                free(want);
            } else {
                CU_ASSERT_EQUAL(fake_count(echo, NULL, NULL), before + 1);
                struct fake_req fr;
                CU_ASSERT_EQUAL_FATAL(echo_last(&fr), 0);
                CU_ASSERT_TRUE(no_crlf_in_headers(&fr));
                EXPECT_STR(fake_req_header(&fr, "Host"), hostline);
                if (style == 1)
                    CU_ASSERT_PTR_NULL(fake_req_header(&fr, "Injected"));
                fake_req_free(&fr);
            }
            free(rq);
            free(ans);
        }
    /* Names with whitespace or controls: a server must refuse them (RFC 9112
     * 5.1); forwarded, "Transfer-Encoding : chunked" desyncs upstreams that
     * trim names. */
    const char *names[] = {"Transfer-Encoding : chunked\r\n", "Content-Length : 5\r\n",
                           "X Space: v\r\n", "X-Tab\t: v\r\n", "X-Ctl\x01: v\r\n",
                           "X-\xff: v\r\n", "Nango-Proxy-Transfer-Encoding : chunked\r\n"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        for (int style = 0; style < 3; style++) {
            size_t before = fake_count(echo, NULL, NULL);
            char *rq = styled_request(style, "POST", "/names", names[i]), *ans = NULL;
            char *full = fmt("%.*sContent-Length: 3\r\n\r\nabc", (int)(strlen(rq) - 2), rq);
            long st = raw(port, full, &ans);
            EXPECT(st == 400, "name %zu %s: %ld %s", i, style_names[style], st, ans);
            EXPECT(strstr(raw_body(ans), style == 1 ? "\"code\":\"invalid-header\""
                                                    : "urn:plugboard:problem:invalid-header"),
                   "name %zu %s: %s", i, style_names[style], raw_body(ans));
            CU_ASSERT_EQUAL(fake_count(echo, NULL, NULL), before);
            free(full);
            free(rq);
            free(ans);
        }
    /* The same through libcurl, which sends a bare CR in a value as given. */
    char *k = fmt("x-api-key: %s", A.key), *pj = fmt("x-amp-project-id: %s", A.id),
         *in = fmt("x-amp-installation-id: %s", a_inst_echo);
    const char *lib[] = {"x-amp-proxy-version: 1", k, pj, in, "X-Lib: a\rInjected: 1", NULL};
    size_t before_lib = fake_count(echo, NULL, NULL);
    struct resp lr;
    req("GET", "/lib", lib, NULL, &lr);
    EXPECT(lr.status == 400, "libcurl CR: %ld %s", lr.status, lr.body);
    EXPECT_STR(slug_of(&lr), "invalid-header");
    resp_free(&lr);
    CU_ASSERT_EQUAL(fake_count(echo, NULL, NULL), before_lib);
    free(k);
    free(pj);
    free(in);
    /* Nango-Proxy-Host / -Authorization / framing headers are not forwarded;
     * a caller's Host never picks the destination. */
    char *extra = fmt("Nango-Proxy-Host: 127.0.0.1:%d\r\nNango-Proxy-Authorization: Bearer x\r\n"
                      "Nango-Proxy-X-Echo-Key: attacker\r\nNango-Proxy-Content-Length: 1\r\n"
                      "Nango-Proxy-Transfer-Encoding: chunked\r\nNango-Proxy-Connection: close\r\n"
                      "Nango-Proxy-X-Kept: yes\r\nX-Forwarded-Host: 127.0.0.1:%d\r\n",
                      ep, ep);
    for (int style = 0; style < 3; style++) {
        size_t before = fake_count(echo, NULL, NULL);
        char *rq = styled_request(style, "POST", "/hdr", extra), *ans = NULL;
        /* A body so the framing headers would matter. */
        char *full = fmt("%.*sContent-Length: 11\r\n\r\nhello world", (int)(strlen(rq) - 2), rq);
        long st = raw(port, full, &ans);
        EXPECT(st == 200, "%s: %ld %s", style_names[style], st, ans);
        CU_ASSERT_EQUAL(fake_count(echo, NULL, NULL), before + 1);
        struct fake_req fr;
        CU_ASSERT_EQUAL_FATAL(echo_last(&fr), 0);
        EXPECT_STR(fake_req_header(&fr, "Host"), hostline);
        CU_ASSERT_PTR_NULL(fake_req_header(&fr, "Authorization"));
        EXPECT_STR(fake_req_header(&fr, "X-Echo-Key"), A_ECHO_SECRET);
        CU_ASSERT_EQUAL(fr.body_total, 11);
        EXPECT_STR(fr.body, "hello world");
        if (style == 1) {
            EXPECT_STR(fake_req_header(&fr, "X-Kept"), "yes");
            CU_ASSERT_PTR_NULL(fake_req_header(&fr, "X-Forwarded-Host"));
        }
        CU_ASSERT_PTR_NULL(fake_req_header(&fr, "Transfer-Encoding"));
        fake_req_free(&fr);
        free(full);
        free(rq);
        free(ans);
    }
    free(extra);
    /* The Host header the caller sends to plugboard is not forwarded (amp). */
    char *rq = fmt("GET /h HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nx-amp-proxy-version: 1\r\n"
                   "x-api-key: %s\r\nx-amp-project-id: %s\r\nx-amp-installation-id: %s\r\n"
                   "Connection: close\r\n\r\n",
                   ep, A.key, A.id, a_inst_echo);
    char *ans = NULL;
    CU_ASSERT_EQUAL(raw(port, rq, &ans), 200);
    struct fake_req fr;
    CU_ASSERT_EQUAL_FATAL(echo_last(&fr), 0);
    EXPECT_STR(fake_req_header(&fr, "Host"), hostline);
    fake_req_free(&fr);
    free(rq);
    free(ans);
    CU_ASSERT_EQUAL(fake_count(evil, NULL, NULL), 0);
}

static void test_request_smuggling_framing(void)
{
    /* Content-Length and Transfer-Encoding together: the upstream request
     * must carry the body as the server decoded it, and nothing extra may
     * become a second upstream request. */
    size_t before = fake_count(echo, NULL, NULL);
    for (int style = 0; style < 3; style++) {
        char *rq = styled_request(style, "POST", "/frame", "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n");
        char *full = fmt("%s5\r\nhello\r\n0\r\n\r\n", rq), *ans = NULL;
        long st = raw(port, full, &ans);
        EXPECT(st == 200, "%s: %ld %s", style_names[style], st, ans);
        if (st == 200) {
            struct fake_req fr;
            CU_ASSERT_EQUAL_FATAL(echo_last(&fr), 0);
            EXPECT(fr.body_total == 5 && strcmp(fr.body, "hello") == 0,
                   "%s: upstream body %llu bytes '%s'", style_names[style],
                   (unsigned long long)fr.body_total, fr.body);
            fake_req_free(&fr);
        }
        free(full);
        free(rq);
        free(ans);
    }
    /* Exactly the three calls reached the echo: nothing extra became a
     * request of its own on the pooled upstream connection. */
    CU_ASSERT_EQUAL(fake_count(echo, NULL, NULL), before + 3);
    CU_ASSERT_EQUAL(fake_count(echo, NULL, "/smuggled"), 0);
    CU_ASSERT_EQUAL(fake_count(evil, NULL, NULL), 0);
}

static void test_base_url_override_refused(void)
{
    int ep = fake_port(evil);
    char *auth = fmt("Authorization: Bearer %s", A.key);
    char *vals[] = {fmt("http://127.0.0.1:%d", ep), fmt("http://[::1]:%d", ep),
                    fmt("http://10.0.0.1"), fmt("http://169.254.169.254/latest/meta-data"),
                    fmt("http://localhost:%d", ep), fmt("http://0.0.0.0:%d", ep),
                    fmt("http://2130706433:%d", ep), fmt("http://[::ffff:127.0.0.1]:%d", ep),
                    fmt("%s", fake_base_url(echo))};
    size_t echo0 = fake_count(echo, NULL, NULL);
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        char *o = fmt("Base-Url-Override: %s", vals[i]);
        const char *h[] = {auth, "Provider-Config-Key: echo-int", "Connection-Id: alpha-group", o,
                           NULL};
        struct resp r;
        req("GET", "/proxy/latest/meta-data", h, NULL, &r);
        EXPECT(r.status == 400, "%s: %ld %s", vals[i], r.status, r.body);
        EXPECT_STR(slug_of(&r), "base-url-override-refused");
        resp_free(&r);
        free(o);
    }
    CU_ASSERT_EQUAL(fake_count(echo, NULL, NULL), echo0);
    CU_ASSERT_EQUAL(fake_count(evil, NULL, NULL), 0);
    /* Empty means none. */
    const char *h[] = {auth, "Provider-Config-Key: echo-int", "Connection-Id: alpha-group",
                       "Base-Url-Override;", NULL};
    struct resp r;
    req("GET", "/proxy/ok", h, NULL, &r);
    CU_ASSERT_EQUAL(r.status, 200);
    EXPECT_STR(jstr(r.j, "path"), "/ok");
    resp_free(&r);
    CU_ASSERT_EQUAL(fake_count(echo, NULL, NULL), echo0 + 1);
    /* The other styles do not know the header: it is an ordinary header to
     * the provider's own host. */
    char *o = fmt("Base-Url-Override: http://127.0.0.1:%d", ep);
    char *k = fmt("x-api-key: %s", A.key), *p = fmt("x-amp-project-id: %s", A.id),
         *i = fmt("x-amp-installation-id: %s", a_inst_echo);
    const char *ha[] = {"x-amp-proxy-version: 1", k, p, i, o, NULL};
    req("GET", "/amp-override", ha, NULL, &r);
    CU_ASSERT_EQUAL(r.status, 200);
    EXPECT_STR(jstr(r.j, "path"), "/amp-override");
    resp_free(&r);
    CU_ASSERT_EQUAL(fake_count(echo, NULL, NULL), echo0 + 2);
    CU_ASSERT_EQUAL(fake_count(evil, NULL, NULL), 0);
    free(o);
    free(k);
    free(p);
    free(i);
    for (size_t j = 0; j < sizeof vals / sizeof vals[0]; j++)
        free(vals[j]);
    free(auth);
}

/* ---- the egress policy ------------------------------------------------------------ */

static void test_egress_policy_refuses_loopback(void)
{
    size_t echo0 = fake_count(echo, NULL, NULL), hs0 = fake_count(hs, NULL, NULL);
    char *k = fmt("x-api-key: %s", S.key), *p = fmt("x-amp-project-id: %s", S.id);
    struct {
        const char *inst, *host;
    } cases[] = {{s_inst_local, "localhost"}, {s_inst_ip, "127.0.0.1"}};
    for (size_t c = 0; c < 2; c++) {
        char *i = fmt("x-amp-installation-id: %s", cases[c].inst);
        const char *h[] = {"x-amp-proxy-version: 1", k, p, i, NULL};
        struct resp r;
        req_on(strict_base, "POST", "/v1/things", h, "{\"a\":1}", &r);
        CU_ASSERT_EQUAL(r.status, 403);
        CU_ASSERT_TRUE(is_problem(&r));
        EXPECT_STR(slug_of(&r), "egress-refused");
        char *detail = fmt("%s resolves to a private or loopback address and "
                           "egress.allow_private is false",
                           cases[c].host);
        EXPECT(jstr(r.j, "detail") && strcmp(jstr(r.j, "detail"), detail) == 0, "detail %s",
               jstr(r.j, "detail"));
        CU_ASSERT_TRUE(json_is_false(json_object_get(r.j, "retryable")));
        CU_ASSERT_PTR_NULL(strstr(r.body, S_ECHO_SECRET));
        free(detail);
        resp_free(&r);
        free(i);
    }
    /* The Nango style says the same in its own shape. */
    char *auth = fmt("Authorization: Bearer %s", S.key);
    const char *hn[] = {auth, "Provider-Config-Key: local-int", "Connection-Id: s-group",
                        "Retries: 3", NULL};
    struct resp r;
    req_on(strict_base, "GET", "/proxy/x", hn, NULL, &r);
    CU_ASSERT_EQUAL(r.status, 403);
    EXPECT_STR(slug_of(&r), "egress-refused");
    resp_free(&r);
    /* The Write API and the proxy to a provider whose base URL is loopback. */
    char *path = fmt("/v1/projects/%s/integrations/hs-int/objects/contacts", S.id);
    const char *hw[] = {k, NULL};
    req_on(strict_base, "POST", path, hw,
           "{\"groupRef\":\"s-group\",\"type\":\"create\",\"record\":{\"email\":\"s@example.com\"}}",
           &r);
    CU_ASSERT_EQUAL(r.status, 403);
    CU_ASSERT_TRUE(is_problem(&r));
    EXPECT_STR(slug_of(&r), "egress-refused");
    resp_free(&r);
    free(path);
    path = fmt("/sdk/%s/crm/v3/objects/contacts", s_inst_hs);
    const char *hs_h[] = {auth, NULL};
    req_on(strict_base, "GET", path, hs_h, NULL, &r);
    CU_ASSERT_EQUAL(r.status, 403);
    EXPECT_STR(slug_of(&r), "egress-refused");
    resp_free(&r);
    free(path);
    /* No connection was made: the fakes saw nothing. */
    CU_ASSERT_EQUAL(fake_count(echo, NULL, NULL), echo0);
    CU_ASSERT_EQUAL(fake_count(hs, NULL, NULL), hs0);
    CU_ASSERT_EQUAL(fake_count(evil, NULL, NULL), 0);
    free(auth);
    free(k);
    free(p);
}

/* ---- oversize and malformed input -------------------------------------------------- */

static char *repeat(const char *unit, size_t n, const char *tail_unit)
{
    size_t ul = strlen(unit), tl = tail_unit ? strlen(tail_unit) : 0;
    char *s = malloc(n * (ul + tl) + 1), *o = s;
    for (size_t i = 0; i < n; i++, o += ul)
        memcpy(o, unit, ul);
    for (size_t i = 0; i < n && tl; i++, o += tl)
        memcpy(o, tail_unit, tl);
    *o = '\0';
    return s;
}

static void expect_healthy(void)
{
    struct resp r;
    req("GET", "/healthz", NULL, NULL, &r);
    CU_ASSERT_EQUAL(r.status, 200);
    resp_free(&r);
}

static void test_oversize_header(void)
{
    size_t echo0 = fake_count(echo, NULL, NULL);
    char *big = repeat("a", 64 * 1024, NULL);
    char *h1 = fmt("X-Big: %s", big);
    char *k = fmt("x-api-key: %s", A.key), *p = fmt("x-amp-project-id: %s", A.id),
         *i = fmt("x-amp-installation-id: %s", a_inst_echo);
    const char *amp[] = {"x-amp-proxy-version: 1", k, p, i, h1, NULL};
    struct resp r;
    req("GET", "/big-header", amp, NULL, &r);
    CU_ASSERT_EQUAL(r.status, 431);
    resp_free(&r);
    const char *ctl[] = {k, h1, NULL};
    char *path = fmt("/v1/projects/%s/integrations", A.id);
    req("GET", path, ctl, NULL, &r);
    CU_ASSERT_EQUAL(r.status, 431);
    resp_free(&r);
    /* A 64 KB API key is no key. */
    char *hk = fmt("x-api-key: %s", big);
    const char *kk[] = {hk, NULL};
    req("GET", path, kk, NULL, &r);
    CU_ASSERT_EQUAL(r.status, 431);
    resp_free(&r);
    free(path);
    CU_ASSERT_EQUAL(fake_count(echo, NULL, NULL), echo0);
    expect_healthy();
    free(hk);
    free(h1);
    free(big);
    free(k);
    free(p);
    free(i);
}

static void test_many_headers(void)
{
    char *k = fmt("x-api-key: %s", A.key), *p = fmt("x-amp-project-id: %s", A.id),
         *i = fmt("x-amp-installation-id: %s", a_inst_echo);
    enum { FEW = 300, MANY = 5000 };
    char **h = calloc(MANY + 8, sizeof *h);
    h[0] = "x-amp-proxy-version: 1";
    h[1] = k;
    h[2] = p;
    h[3] = i;
    for (int n = 0; n < MANY; n++)
        h[4 + n] = fmt("X-H-%d: v%d", n, n);
    /* 300 headers fit and all travel. */
    char *saved = h[4 + FEW];
    h[4 + FEW] = NULL;
    size_t echo0 = fake_count(echo, NULL, NULL);
    struct resp r;
    req("GET", "/many", (const char *const *)h, NULL, &r);
    CU_ASSERT_EQUAL(r.status, 200);
    json_t *eh = json_object_get(r.j, "headers");
    EXPECT_STR(jstr(eh, "x-h-0"), "v0");
    EXPECT_STR(jstr(eh, "x-h-299"), "v299");
    resp_free(&r);
    struct fake_req fr;
    CU_ASSERT_EQUAL_FATAL(echo_last(&fr), 0);
    size_t xh = 0;
    for (size_t n = 0; n < fr.nheaders; n++)
        xh += strncasecmp(fr.headers[n].name, "X-H-", 4) == 0;
    CU_ASSERT_EQUAL(xh, FEW);
    fake_req_free(&fr);
    h[4 + FEW] = saved;
    /* 5000 are over the server's header space. */
    req("GET", "/too-many", (const char *const *)h, NULL, &r);
    CU_ASSERT_EQUAL(r.status, 431);
    resp_free(&r);
    CU_ASSERT_EQUAL(fake_count(echo, NULL, NULL), echo0 + 1);
    for (int n = 0; n < MANY; n++)
        free(h[4 + n]);
    free(h);
    free(k);
    free(p);
    free(i);
    expect_healthy();
}

static void test_long_urls(void)
{
    char *k = fmt("x-api-key: %s", A.key), *p = fmt("x-amp-project-id: %s", A.id),
         *i = fmt("x-amp-installation-id: %s", a_inst_echo);
    const char *amp[] = {"x-amp-proxy-version: 1", k, p, i, NULL};
    size_t echo0 = fake_count(echo, NULL, NULL);
    /* 6 KB of path and 6 KB of query travel unchanged. (Not a thousand
     * query arguments: the server's per-connection memory holds a record
     * per argument, see the report.) */
    char *seg = repeat("abcdefgh/", 680, NULL);
    char *qa = repeat("x", 3000, NULL), *qb = repeat("y", 3000, NULL);
    char *q = fmt("a=%s&b=%s&c=%%20", qa, qb);
    free(qa);
    free(qb);
    char *path = fmt("/%s?%s", seg, q);
    struct resp r;
    req("GET", path, amp, NULL, &r);
    EXPECT(r.status == 200, "long url %ld %.300s", r.status, r.body);
    char *want_path = fmt("/%s", seg);
    EXPECT_STR(jstr(r.j, "path"), want_path);
    EXPECT_STR(jstr(r.j, "query"), q);
    resp_free(&r);
    free(want_path);
    free(path);
    /* 100 KB URLs are refused by the server on every kind of route. */
    char *huge = repeat("x", 100 * 1024, NULL);
    path = fmt("/%s", huge);
    req("GET", path, amp, NULL, &r);
    CU_ASSERT_EQUAL(r.status, 414);
    resp_free(&r);
    free(path);
    path = fmt("/v1/projects/%s", huge);
    const char *ctl[] = {k, NULL};
    req("GET", path, ctl, NULL, &r);
    CU_ASSERT_EQUAL(r.status, 414);
    resp_free(&r);
    free(path);
    path = fmt("/proxy/x?%s", huge);
    req("GET", path, ctl, NULL, &r);
    CU_ASSERT_EQUAL(r.status, 414);
    resp_free(&r);
    free(path);
    CU_ASSERT_EQUAL(fake_count(echo, NULL, NULL), echo0 + 1);
    free(huge);
    free(seg);
    free(q);
    free(k);
    free(p);
    free(i);
    expect_healthy();
}

static void test_body_limits(void)
{
    char *k = fmt("x-api-key: %s", A.key);
    const char *h[] = {k, "Content-Type: application/json", NULL};
    /* One byte over max_body_bytes on every JSON route: 413. */
    char *pad = repeat("a", MAX_BODY, NULL);
    char *body = fmt("{\"groupRef\":\"%s\"}", pad);
    const char *routes[][2] = {
        {"POST", "/v1/projects/@A@/connections:generate"},
        {"POST", "/v1/projects/@A@/integrations/echo-int/installations"},
        {"POST", "/v1/projects/@A@/integrations/hs-int/objects/contacts"},
        {"PUT", "/v1/projects/@A@/manifest"},
        {"POST", "/v1/projects/@A@/api-keys"},
        {"POST", "/v1/projects"},
        {"POST", "/v1/oauth-connect"},
        {"PATCH", "/v1/projects/@A@/integrations/hs-int/objects/contacts/config-content"},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        char *path = expand(routes[i][1], 0);
        struct resp r;
        req(routes[i][0], path, h, body, &r);
        EXPECT(r.status == 413, "%s %s: %ld %.200s", routes[i][0], path, r.status, r.body);
        CU_ASSERT_TRUE(is_problem(&r));
        EXPECT_STR(slug_of(&r), "body-too-large");
        resp_free(&r);
        free(path);
    }
    free(body);
    /* Exactly max_body_bytes is read and judged on its content. */
    body = fmt("{\"groupRef\":\"%.*s\"}", MAX_BODY - 16, pad);
    char *path = expand("/v1/projects/@A@/connections:generate", 0);
    struct resp r;
    req("POST", path, h, body, &r);
    CU_ASSERT_EQUAL(r.status, 400);
    EXPECT_STR(slug_of(&r), "invalid-request");
    resp_free(&r);
    free(path);
    free(body);
    free(pad);
    /* The proxy streams: 4 MB through the proxy is fine. */
    size_t n = 4u * 1024 * 1024;
    char *big = repeat("b", n, NULL);
    char *p = fmt("x-amp-project-id: %s", A.id), *i = fmt("x-amp-installation-id: %s", a_inst_echo);
    const char *amp[] = {"x-amp-proxy-version: 1", k, p, i, "Content-Type: text/plain", NULL};
    req("POST", "/big-body", amp, big, &r);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(r.j, "bodyBytes")), (json_int_t)n);
    resp_free(&r);
    free(big);
    free(p);
    free(i);
    free(k);
    expect_healthy();
}

static void test_nesting_bombs(void)
{
    char *k = fmt("x-api-key: %s", A.key);
    const char *h[] = {k, "Content-Type: application/json", NULL};
    char *arrays = repeat("[", 100000, "]");
    char *objects = repeat("{\"a\":", 40000, "}");
    /* 40000 objects have a ":1" hole: fill the innermost. */
    char *obj = malloc(strlen(objects) + 2);
    size_t half = 40000 * 5;
    memcpy(obj, objects, half);
    obj[half] = '1';
    strcpy(obj + half + 1, objects + half);
    char *inner = fmt("{\"groupRef\":\"alpha-group\",\"type\":\"create\",\"record\":{\"x\":%s}}",
                      arrays);
    const char *bodies[] = {arrays, obj, inner};
    const char *routes[][2] = {
        {"POST", "/v1/projects/@A@/integrations/hs-int/objects/contacts"},
        {"POST", "/v1/projects/@A@/connections:generate"},
        {"POST", "/v1/projects/@A@/integrations/echo-int/installations"},
        {"PATCH", "/v1/projects/@A@/integrations/echo-int/installations/@AI@"},
        {"PATCH", "/v1/projects/@A@/integrations/hs-int/objects/contacts/config-content"},
        {"POST", "/v1/projects"},
        {"POST", "/v1/oauth-connect"},
        {"POST", "/v1/projects/@A@/api-keys"},
    };
    size_t hs0 = fake_count(hs, NULL, NULL);
    for (size_t b = 0; b < 3; b++)
        for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
            char *t = replace_all(routes[i][1], "@AI@", a_inst_echo);
            char *path = expand(t, 0);
            struct resp r;
            req(routes[i][0], path, h, bodies[b], &r);
            /* api-keys takes no body it reads: a key is made. */
            long want = strcmp(routes[i][1], "/v1/projects/@A@/api-keys") == 0 ? 201 : 400;
            EXPECT(r.status == want, "bomb %zu %s %s: %ld %.300s", b, routes[i][0], path,
                   r.status, r.body);
            if (want == 400) {
                CU_ASSERT_TRUE(is_problem(&r));
                EXPECT(strcmp(slug_of(&r), b < 2 ? "invalid-json" : "invalid-json") == 0,
                       "bomb %zu %s: slug %s", b, path, slug_of(&r));
            } else {
                secret_log(jstr(r.j, "apiKey"));
            }
            resp_free(&r);
            free(path);
            free(t);
        }
    CU_ASSERT_EQUAL(fake_count(hs, NULL, NULL), hs0);
    /* The same in YAML on the manifest route. */
    char *yaml = repeat("[", 100000, "]");
    char *path = expand("/v1/projects/@A@/manifest", 0);
    const char *hy[] = {k, "Content-Type: application/yaml", NULL};
    struct resp r;
    req("PUT", path, hy, yaml, &r);
    CU_ASSERT_EQUAL(r.status, 400);
    CU_ASSERT_TRUE(is_problem(&r));
    resp_free(&r);
    char *ymap = repeat("{a: ", 40000, "}");
    req("PUT", path, hy, ymap, &r);
    CU_ASSERT_EQUAL(r.status, 400);
    CU_ASSERT_TRUE(is_problem(&r));
    resp_free(&r);
    /* The manifest is unchanged: A's integrations are still there. */
    char *ipath = expand("/v1/projects/@A@/integrations", 0);
    req("GET", ipath, h, NULL, &r);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_EQUAL(json_array_size(r.j), 2);
    resp_free(&r);
    free(ipath);
    free(ymap);
    free(path);
    free(yaml);
    free(inner);
    free(obj);
    free(objects);
    free(arrays);
    free(k);
    expect_healthy();
}

static void test_malformed_requests(void)
{
    /* libmicrohttpd answers these itself (or just closes: 0); plugboard's
     * handlers never see them. What matters: exact answers, no crash. */
    struct {
        const char *req;
        long want;
    } bad[] = {
        {"GARBAGE\r\n\r\n", 0},
        {"GET\r\n\r\n", 0},
        {"GET / HTTP/9.9\r\nHost: x\r\nConnection: close\r\n\r\n", 505},
        {"POST /v1/projects HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\nConnection: close\r\n\r\n",
         400},
        {"POST /v1/projects HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n"
         "Connection: close\r\n\r\n",
         413},
        {"POST /v1/projects HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
         "Connection: close\r\n\r\nzz\r\n",
         400},
        /* Lenient parsing: a name with spaces on a route that forwards
         * nothing is just an unknown header. */
        {"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header Name: v\r\nConnection: close\r\n\r\n",
         200},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *ans = NULL;
        long st = raw(port, bad[i].req, &ans);
        EXPECT(st == bad[i].want, "malformed %zu: %ld, want %ld: %s", i, st, bad[i].want, ans);
        free(ans);
    }
    /* A NUL inside the request line. */
    const char nul[] = "GET /heal\0thz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    char *ans = NULL;
    long st = raw_exchange(port, nul, sizeof nul - 1, &ans);
    /* The server ends the target at the NUL: "/heal", matching nothing. */
    EXPECT(st == 404, "NUL: %ld %s", st, ans);
    EXPECT(strstr(ans, "GET /heal matches no route") != NULL, "NUL: %s", ans);
    free(ans);
    expect_healthy();
}

/* Bytes that are not UTF-8 in the path, the headers and the query still get
 * a problem (they end up in its detail), never a dropped connection. */
static void test_non_utf8_input(void)
{
    size_t echo0 = fake_count(echo, NULL, NULL);
    struct {
        const char *req;
        long want;
        const char *slug;
    } cases[] = {
        {"GET /v1/projects/%FF HTTP/1.1\r\nx-api-key: @K@\r\n", 404, "not-found"},
        {"GET /v1/projects/%C3%28/integrations HTTP/1.1\r\nx-api-key: @K@\r\n", 404,
         "not-found"},
        {"GET /v1/projects/@A@/integrations/%FF%FE HTTP/1.1\r\nx-api-key: @K@\r\n", 404,
         "not-found"},
        {"GET /v1/projects/@A@/connections/%FF HTTP/1.1\r\nx-api-key: @K@\r\n", 404,
         "not-found"},
        {"GET /v1/projects/@A@/operations/%FF HTTP/1.1\r\nx-api-key: @K@\r\n", 404,
         "not-found"},
        {"GET /v1/projects/@A@/integrations/echo-int/installations?groupRef=%FF HTTP/1.1\r\n"
         "x-api-key: @K@\r\n", 200, NULL},
        {"GET /x HTTP/1.1\r\nx-amp-proxy-version: 1\r\nx-api-key: @K@\r\n"
         "x-amp-project-id: \xff\r\nx-amp-installation-id: i\r\n", 404, "not-found"},
        {"GET /x HTTP/1.1\r\nx-amp-proxy-version: 1\r\nx-api-key: @K@\r\n"
         "x-amp-project-id: @A@\r\nx-amp-installation-id: \xff\xfe\r\n", 404,
         "unknown-installation"},
        {"GET /x HTTP/1.1\r\nx-amp-proxy-version: 1\r\nx-api-key: @K@\r\n"
         "x-amp-project-id: @A@\r\nx-amp-integration-name: \xff\r\nx-amp-group-ref: g\r\n",
         404, "unknown-integration"},
        {"GET /proxy/x HTTP/1.1\r\nAuthorization: Bearer @K@\r\n"
         "Provider-Config-Key: echo-int\r\nConnection-Id: \xff\r\n", 404, "unknown_connection"},
        {"GET /sdk/%FF/x HTTP/1.1\r\nAuthorization: Bearer @K@\r\n", 404,
         "unknown-installation"},
        {"GET /sdk/\xff/x HTTP/1.1\r\nAuthorization: Bearer @K@\r\n", 404,
         "unknown-installation"},
        {"GET /nowhere/\xff HTTP/1.1\r\n", 404, "not-found"},
        {"PUT /v1/projects/\xff HTTP/1.1\r\n", 405, "method-not-allowed"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *t = replace_all(cases[i].req, "@K@", A.key);
        char *t2 = replace_all(t, "@A@", A.id);
        char *rq = fmt("%sHost: x\r\nConnection: close\r\n\r\n", t2), *ans = NULL;
        long st = raw(port, rq, &ans);
        EXPECT(st == cases[i].want, "non-UTF-8 %zu: %ld %s", i, st, ans);
        json_t *j = json_loads(raw_body(ans), 0, NULL);
        if (cases[i].slug) {
            const char *ty = jstr(j, "type");
            const char *code = jstr(json_object_get(j, "error"), "code");
            const char *got = ty && strlen(ty) > 22 ? ty + 22 : code;
            EXPECT(got && strcmp(got, cases[i].slug) == 0, "non-UTF-8 %zu: %s", i,
                   raw_body(ans));
        }
        json_decref(j);
        free(rq);
        free(t);
        free(t2);
        free(ans);
    }
    CU_ASSERT_EQUAL(fake_count(echo, NULL, NULL), echo0);
    /* The proxy calls above had paths that are not UTF-8; their activity
     * records cannot be JSON. The activity route still answers (it once
     * waited forever for them) and lists A's other calls. */
    char *k = fmt("x-api-key: %s", A.key);
    const char *h[] = {k, NULL};
    char *path = fmt("/v1/projects/%s/activity?limit=1000", A.id);
    struct resp r;
    int64_t t0 = pb_mono_ms();
    req("GET", path, h, NULL, &r);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_TRUE(json_array_size(json_object_get(r.j, "activity")) > 0);
    CU_ASSERT_TRUE(pb_mono_ms() - t0 < 5000);
    resp_free(&r);
    free(path);
    free(k);
    expect_healthy();
}

static void test_secrets_not_in_answers_or_activity(void)
{
    /* A secret in a proxied query string reaches the provider but never the
     * activity log. */
    char *k = fmt("x-api-key: %s", A.key), *p = fmt("x-amp-project-id: %s", A.id),
         *i = fmt("x-amp-installation-id: %s", a_inst_echo);
    const char *amp[] = {"x-amp-proxy-version: 1", k, p, i, NULL};
    struct resp r;
    req("GET", "/q?token=" QUERY_SECRET, amp, NULL, &r);
    CU_ASSERT_EQUAL(r.status, 200);
    EXPECT_STR(jstr(r.j, "query"), "token=" QUERY_SECRET);
    resp_free(&r);
    char *path = fmt("/v1/projects/%s/activity?limit=1000", A.id);
    const char *h[] = {k, NULL};
    req("GET", path, h, NULL, &r);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_PTR_NULL(strstr(r.body, QUERY_SECRET));
    CU_ASSERT_PTR_NULL(strstr(r.body, A_ECHO_SECRET));
    CU_ASSERT_PTR_NULL(strstr(r.body, A.key));
    CU_ASSERT_PTR_NULL(strstr(r.body, B_ECHO_SECRET));
    resp_free(&r);
    free(path);
    /* Connections never show their credentials. */
    path = fmt("/v1/projects/%s/connections", B.id);
    char *kb = fmt("x-api-key: %s", B.key);
    const char *hb[] = {kb, NULL};
    req("GET", path, hb, NULL, &r);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_EQUAL(json_array_size(r.j), 4);
    for (size_t n = 0; n < n_b_secrets; n++)
        if (strcmp(b_secrets[n], "bravo-user") && strcmp(b_secrets[n], B_ONLY_INT) &&
            strcmp(b_secrets[n], "bravo@example.com"))
            CU_ASSERT_PTR_NULL(strstr(r.body, b_secrets[n]));
    resp_free(&r);
    free(path);
    free(kb);
    free(k);
    free(p);
    free(i);
}

static CU_TestInfo tests[] = {
    {"other_key_on_every_route_of_b", test_other_key_on_every_route_of_b},
    {"b_routes_work_for_b", test_b_routes_work_for_b},
    {"other_key_with_b_ids_under_own_project", test_other_key_with_b_ids_under_own_project},
    {"other_key_on_b_through_the_proxy", test_other_key_on_b_through_the_proxy},
    {"host_escapes_on_every_style", test_host_escapes_on_every_style},
    {"absolute_uri_targets", test_absolute_uri_targets},
    {"header_injection", test_header_injection},
    {"request_smuggling_framing", test_request_smuggling_framing},
    {"base_url_override_refused", test_base_url_override_refused},
    {"egress_policy_refuses_loopback", test_egress_policy_refuses_loopback},
    {"oversize_header", test_oversize_header},
    {"many_headers", test_many_headers},
    {"long_urls", test_long_urls},
    {"body_limits", test_body_limits},
    {"nesting_bombs", test_nesting_bombs},
    {"malformed_requests", test_malformed_requests},
    {"non_utf8_input", test_non_utf8_input},
    {"secrets_not_in_answers_or_activity", test_secrets_not_in_answers_or_activity},
    CU_TEST_INFO_NULL,
};

int main(int argc, char **argv)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (setup() != 0) {
        fprintf(stderr, "test_attack: set-up failed\n");
        return 99;
    }
    int rc = pbt_main(argc, argv, "attack", tests);
    pbt_stop(strict_app);
    pbt_stop(app);
    fake_stop(echo);
    fake_stop(evil);
    fake_stop(hs);
    return rc;
}
