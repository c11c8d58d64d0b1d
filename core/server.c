#include "server.h"
#include "app.h"
#include "log.h"
#include "routes.h"
#include "secrets.h"
#include "http.h"
#include <curl/curl.h>
#include <microhttpd.h>
#include <netdb.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <pthread.h>
#include <sys/socket.h>

/* One client connection, tracked so that a request head that trickles in
 * (never idle, so never timed out by libmicrohttpd) is still cut off. */
struct conn_track {
    int fd;
    int64_t head_started_ms;  /* 0 while a request is being handled */
    int cut;
    struct conn_track *prev, *next;
};

struct pb_server {
    struct pb_app *app;
    struct MHD_Daemon *daemon;
    int port;
    atomic_int in_flight;
    pthread_mutex_t conns_mu;
    struct conn_track *conns;
    pthread_t watchdog;
    int watchdog_running;
    atomic_int stopping;
};

/* ---- routing ---------------------------------------------------------------- */

/* Matches `path` against `pattern`, filling {params}. 1 on match. */
static int match_pattern(const char *pattern, unsigned flags, const char *path,
                         struct pb_request *r)
{
    const char *p = pattern, *u = path;
    r->n_params = 0;
    while (*p) {
        if ((flags & PB_ROUTE_PREFIX) && strcmp(p, "/*") == 0)
            return *u == '/' || *u == '\0';
        if (*p == '{') {
            const char *close = strchr(p, '}');
            if (!close || r->n_params >= PB_MAX_PARAMS)
                return 0;
            const char *end = u;
            /* A parameter spans one segment; ":" ends it too, for ids
             * followed by a custom verb like "connections:generate". */
            while (*end && *end != '/' && !(close[1] == ':' && *end == ':'))
                end++;
            if (end == u)
                return 0;
            static const char *const names[] = {"project", "integration", "installation",
                                                "object", "operation", "connection", "id"};
            const char *name = NULL;
            for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
                if (strlen(names[i]) == (size_t)(close - p - 1) &&
                    strncmp(names[i], p + 1, (size_t)(close - p - 1)) == 0)
                    name = names[i];
            if (!name)
                return 0;
            int outlen = 0;
            char *dec = curl_easy_unescape(NULL, u, (int)(end - u), &outlen);
            if (!dec)
                return 0;
            r->param_names[r->n_params] = name;
            r->param_values[r->n_params] = pb_xstrdup(dec);
            curl_free(dec);
            r->n_params++;
            p = close + 1;
            u = end;
            continue;
        }
        if (*p != *u)
            return 0;
        p++;
        u++;
    }
    return *u == '\0';
}

static void clear_params(struct pb_request *r)
{
    for (size_t i = 0; i < r->n_params; i++)
        free(r->param_values[i]);
    r->n_params = 0;
}

/* Returns the route for method+path; *path_known tells whether some route
 * matches the path with another method (for 405). */
static const struct pb_route *find_route(struct pb_request *r, int *path_known)
{
    *path_known = 0;
    for (const struct pb_route *const *t = pb_route_tables; *t; t++) {
        for (const struct pb_route *rt = *t; rt->pattern; rt++) {
            if (!match_pattern(rt->pattern, rt->flags, r->path, r)) {
                clear_params(r);
                continue;
            }
            if (strcmp(rt->method, "*") == 0 || strcmp(rt->method, r->method) == 0)
                return rt;
            *path_known = 1;
            clear_params(r);
        }
    }
    return NULL;
}

/* ---- request accessors ------------------------------------------------------ */

const char *pb_req_param(const struct pb_request *r, const char *name)
{
    for (size_t i = 0; i < r->n_params; i++)
        if (strcmp(r->param_names[i], name) == 0)
            return r->param_values[i];
    return NULL;
}

const char *pb_req_get_header(const struct pb_request *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

const char *pb_req_query(const struct pb_request *r, const char *name)
{
    /* Arguments arrive still escaped (see keep_escaped); decode once and
     * keep the copy with the request. */
    const char *raw = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
    if (!raw)
        return NULL;
    struct pb_request *rw = (struct pb_request *)r;
    char *plus = pb_xstrdup(raw);
    for (char *p = plus; *p; p++)
        if (*p == '+')
            *p = ' ';
    int len = 0;
    char *dec = curl_easy_unescape(NULL, plus, 0, &len);
    free(plus);
    if (!dec)
        return NULL;
    if ((size_t)len != strlen(dec)) {
        /* An encoded NUL: refuse the value rather than truncate it. */
        curl_free(dec);
        return NULL;
    }
    rw->decoded = pb_xrealloc(rw->decoded, (rw->n_decoded + 1) * sizeof *rw->decoded);
    rw->decoded[rw->n_decoded++] = pb_xstrdup(dec);
    curl_free(dec);
    return rw->decoded[rw->n_decoded - 1];
}

json_t *pb_req_json_body(struct pb_request *r, int *rc)
{
    if (!r->body.len) {
        *rc = pb_reply_problem(r, 400, "invalid-request", "Invalid request",
                               "the request body must be a JSON object", 0,
                               json_pack("[o]", pb_issue("body", "body", "missing body")));
        return NULL;
    }
    json_error_t e;
    json_t *j = json_loadb(r->body.data, r->body.len, JSON_REJECT_DUPLICATES, &e);
    if (!j) {
        char detail[300];
        snprintf(detail, sizeof detail, "malformed JSON at line %d column %d: %s", e.line,
                 e.column, e.text);
        *rc = pb_reply_problem(r, 400, "invalid-json", "Malformed JSON", detail, 0,
                               json_pack("[o]", pb_issue("body", "body", detail)));
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        *rc = pb_reply_problem(r, 400, "invalid-request", "Invalid request",
                               "the request body must be a JSON object", 0,
                               json_pack("[o]", pb_issue("body", "body", "not an object")));
        return NULL;
    }
    return j;
}

/* ---- replies ---------------------------------------------------------------- */

static int queue(struct pb_request *r, unsigned status, const char *ctype, char *body,
                 size_t len)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(resp, "X-Request-Id", r->request_id);
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    for (size_t i = 0; i < r->n_extra; i++)
        MHD_add_response_header(resp, r->extra[i].name, r->extra[i].value);
    r->status = status;
    enum MHD_Result rc = MHD_queue_response(r->conn, status, resp);
    MHD_destroy_response(resp);
    return rc;
}

void pb_reply_add_header(struct pb_request *r, const char *name, const char *value)
{
    r->extra = pb_xrealloc(r->extra, (r->n_extra + 1) * sizeof *r->extra);
    r->extra[r->n_extra].name = pb_xstrdup(name);
    r->extra[r->n_extra].value = pb_xstrdup(value);
    r->n_extra++;
}

struct stream_reply {
    pb_body_reader read;
    void *ctx;
};

static ssize_t stream_cb(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct stream_reply *sr = cls;
    (void)pos;
    long n = sr->read(sr->ctx, buf, max);
    if (n > 0)
        return (ssize_t)n;
    return n == 0 ? MHD_CONTENT_READER_END_OF_STREAM : MHD_CONTENT_READER_END_WITH_ERROR;
}

int pb_reply_stream(struct pb_request *r, unsigned status, const struct pb_header *headers,
                    size_t n_headers, int64_t length, pb_body_reader read, void *ctx)
{
    struct stream_reply *sr = pb_xcalloc(1, sizeof *sr);
    sr->read = read;
    sr->ctx = ctx;
    /* MHD callocs the block: size it to a small body, not 64 KB each time. */
    size_t block = 64 * 1024;
    if (length >= 0 && length < (int64_t)block)
        block = length < 1024 ? 1024 : (size_t)length;
    struct MHD_Response *resp = MHD_create_response_from_callback(
        length >= 0 ? (uint64_t)length : MHD_SIZE_UNKNOWN, block, stream_cb, sr, free);
    if (!resp) {
        free(sr);
        return MHD_NO;
    }
    for (size_t i = 0; i < n_headers; i++)
        MHD_add_response_header(resp, headers[i].name, headers[i].value);
    MHD_add_response_header(resp, "X-Request-Id", r->request_id);
    for (size_t i = 0; i < r->n_extra; i++)
        MHD_add_response_header(resp, r->extra[i].name, r->extra[i].value);
    r->status = status;
    enum MHD_Result rc = MHD_queue_response(r->conn, status, resp);
    MHD_destroy_response(resp);
    return rc;
}

int pb_reply_json(struct pb_request *r, unsigned status, json_t *body)
{
    char *s = json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(body);
    if (!s)
        return MHD_NO;
    return queue(r, status, "application/json", s, strlen(s));
}

int pb_reply_text(struct pb_request *r, unsigned status, const char *ctype, const char *text)
{
    char *s = pb_xstrdup(text);
    return queue(r, status, ctype, s, strlen(s));
}

json_t *pb_issue(const char *in, const char *name, const char *detail)
{
    return json_pack("{s:s, s:s, s:s}", "in", in, "name", name, "detail", detail);
}

int pb_reply_problem(struct pb_request *r, unsigned status, const char *slug, const char *title,
                     const char *detail, int retryable, json_t *issues)
{
    char type[128];
    snprintf(type, sizeof type, "urn:plugboard:problem:%s", slug);
    json_t *p = json_pack("{s:s, s:s, s:i, s:s, s:s, s:b}", "type", type, "title", title,
                          "status", (int)status, "detail", detail ? detail : title, "requestId",
                          r->request_id, "retryable", retryable);
    if (!p) {
        /* The detail quotes input that is not UTF-8: answer without those bytes
         * rather than not at all. */
        char *d = pb_xstrdup(detail ? detail : title);
        for (char *q = d; *q; q++)
            if ((unsigned char)*q >= 0x80)
                *q = '?';
        p = json_pack("{s:s, s:s, s:i, s:s, s:s, s:b}", "type", type, "title", title, "status",
                      (int)status, "detail", d, "requestId", r->request_id, "retryable",
                      retryable);
        free(d);
    }
    if (!p) {
        json_decref(issues);
        return MHD_NO;
    }
    if (issues && json_array_size(issues))
        json_object_set(p, "issues", issues);
    json_decref(issues);
    char *s = json_dumps(p, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(p);
    if (!s)
        return MHD_NO;
    return queue(r, status, "application/problem+json", s, strlen(s));
}

/* ---- libmicrohttpd callbacks ----------------------------------------------- */

static int valid_request_id(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 40)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.'))
            return 0;
    }
    return 1;
}

/* Marks the connection's request head complete (ms 0) or a new one begun. */
static void head_mark(struct pb_server *s, struct MHD_Connection *conn, int64_t started_ms)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    if (!ci || !ci->socket_context)
        return;
    struct conn_track *t = ci->socket_context;
    pthread_mutex_lock(&s->conns_mu);
    t->head_started_ms = started_ms;
    pthread_mutex_unlock(&s->conns_mu);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_size, void **con_cls)
{
    struct pb_server *s = cls;
    struct pb_request *r = *con_cls;
    (void)version;
    if (!r || !r->started) {
        if (!r) {
            r = pb_xcalloc(1, sizeof *r);
            r->raw_uri = pb_xstrdup(url);
        }
        r->started = 1;
        r->conn = conn;
        head_mark(s, conn, 0);
        r->app = s->app;
        r->method = method;
        r->path = url;
        r->start_ms = pb_mono_ms();
        const char *given = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-Id");
        if (valid_request_id(given))
            snprintf(r->request_id, sizeof r->request_id, "%s", given);
        else
            pb_random_id("req_", r->request_id, sizeof r->request_id);
        atomic_fetch_add(&s->in_flight, 1);
        *con_cls = r;
        int path_known = 0;
        if (MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "x-amp-proxy-version"))
            r->route = &pb_route_amp_proxy;
        else
            r->route = find_route(r, &path_known);
        if (!r->route)
            r->status = path_known ? 405 : 404;
        else if ((r->route->flags & PB_ROUTE_STREAM) && r->route->on_headers)
            return (enum MHD_Result)r->route->on_headers(r);
        return MHD_YES;
    }
    if (r->status && r->route) {
        /* Answered early: the rest of the body is not wanted. */
        *upload_size = 0;
        return MHD_YES;
    }
    if (*upload_size) {
        if (r->route && (r->route->flags & PB_ROUTE_STREAM)) {
            if (!r->upload_stopped && r->route->on_upload &&
                r->route->on_upload(r, upload_data, *upload_size) != 0)
                r->upload_stopped = 1;
        } else if (r->route && (r->route->flags & PB_ROUTE_BODY) && !r->body_too_large) {
            long max = s->app->cfg->server.max_body_bytes;
            if (r->body.len + *upload_size > (size_t)max) {
                r->body_too_large = 1;
                pb_buf_free(&r->body);
            } else {
                pb_buf_append(&r->body, upload_data, *upload_size);
            }
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (!r->route) {
        char detail[256];
        snprintf(detail, sizeof detail, "%s %.200s %s", method, r->path,
                 r->status == 405 ? "is not allowed on this path" : "matches no route");
        return (enum MHD_Result)pb_reply_problem(
            r, r->status, r->status == 405 ? "method-not-allowed" : "not-found",
            r->status == 405 ? "Method not allowed" : "Not found", detail, 0, NULL);
    }
    if (r->body_too_large) {
        char detail[128];
        snprintf(detail, sizeof detail, "the request body exceeds %ld bytes",
                 s->app->cfg->server.max_body_bytes);
        return (enum MHD_Result)pb_reply_problem(r, 413, "body-too-large", "Request body too large",
                                                 detail, 0, NULL);
    }
    return (enum MHD_Result)r->route->fn(r);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct pb_server *s = cls;
    struct pb_request *r = *con_cls;
    if (!r)
        return;
    if (!r->started) {
        free(r->raw_uri);
        free(r);
        *con_cls = NULL;
        return;
    }
    /* The next request head on this keep-alive connection starts now. */
    head_mark(s, conn, pb_mono_ms());
    /* The path only: query strings may carry secrets. */
    pb_log_json(PB_LOG_INFO, "request",
                json_pack("{s:s, s:s, s:s, s:i, s:I, s:b}", "requestId", r->request_id, "method",
                          r->method, "path", r->path, "status", (int)r->status, "durationMs",
                          (json_int_t)(pb_mono_ms() - r->start_ms), "completed",
                          toe == MHD_REQUEST_TERMINATED_COMPLETED_OK));
    if (r->route_state_free)
        r->route_state_free(r->route_state);
    for (size_t i = 0; i < r->n_extra; i++) {
        free(r->extra[i].name);
        free(r->extra[i].value);
    }
    free(r->extra);
    free(r->raw_uri);
    for (size_t i = 0; i < r->n_decoded; i++)
        free(r->decoded[i]);
    free(r->decoded);
    clear_params(r);
    pb_buf_free(&r->body);
    free(r);
    *con_cls = NULL;
    atomic_fetch_sub(&s->in_flight, 1);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    (void)cls;
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    pb_log_json(PB_LOG_WARN, msg, json_pack("{s:s}", "component", "http"));
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    struct pb_server *s = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        struct conn_track *t = pb_xcalloc(1, sizeof *t);
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        t->fd = ci ? ci->connect_fd : -1;
        t->head_started_ms = pb_mono_ms();
        pthread_mutex_lock(&s->conns_mu);
        t->next = s->conns;
        if (s->conns)
            s->conns->prev = t;
        s->conns = t;
        pthread_mutex_unlock(&s->conns_mu);
        *socket_context = t;
    } else if (*socket_context) {
        struct conn_track *t = *socket_context;
        pthread_mutex_lock(&s->conns_mu);
        if (t->prev)
            t->prev->next = t->next;
        else
            s->conns = t->next;
        if (t->next)
            t->next->prev = t->prev;
        pthread_mutex_unlock(&s->conns_mu);
        free(t);
        *socket_context = NULL;
    }
}

/* A request head must arrive within connection_timeout_s of its first
 * byte (or of the previous answer): a client that trickles it byte by byte
 * is never idle, so libmicrohttpd's own timeout would not close it. */
static void *watchdog(void *arg)
{
    struct pb_server *s = arg;
    int64_t limit = s->app->cfg->server.connection_timeout_s * 1000;
    while (!atomic_load(&s->stopping)) {
        struct timespec ts = {0, 250 * 1000 * 1000};
        nanosleep(&ts, NULL);
        int64_t now = pb_mono_ms();
        pthread_mutex_lock(&s->conns_mu);
        for (struct conn_track *t = s->conns; t; t = t->next) {
            if (!t->cut && t->fd >= 0 && t->head_started_ms && now - t->head_started_ms > limit) {
                shutdown(t->fd, SHUT_RDWR);
                t->cut = 1;
            }
        }
        pthread_mutex_unlock(&s->conns_mu);
    }
    return NULL;
}

/* Keeps the request target exactly as sent (the proxy forwards the query
 * verbatim); its return value becomes the request's context. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *c)
{
    (void)cls;
    (void)c;
    struct pb_request *r = pb_xcalloc(1, sizeof *r);
    r->raw_uri = pb_xstrdup(uri ? uri : "");
    return r;
}

/* Keeps the path as sent so the proxy forwards it unchanged; route params
 * and query values are decoded where they are read. */
static size_t keep_escaped(void *cls, struct MHD_Connection *c, char *s)
{
    (void)cls;
    (void)c;
    return strlen(s);
}

int pb_server_start(struct pb_app *app, struct pb_server **out, char *err, size_t err_len)
{
    const struct pb_config *cfg = app->cfg;
    if (sodium_init() < 0) {
        snprintf(err, err_len, "libsodium failed to initialize");
        return -1;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    char port[16];
    snprintf(port, sizeof port, "%d", cfg->listen_port);
    int gai = getaddrinfo(cfg->listen_host, port, &hints, &ai);
    if (gai != 0 || !ai) {
        snprintf(err, err_len, "%s: listen: cannot resolve '%s': %s", cfg->path,
                 cfg->listen_host, gai_strerror(gai));
        return -1;
    }
    struct pb_server *s = pb_xcalloc(1, sizeof *s);
    s->app = app;
    atomic_init(&s->in_flight, 0);
    atomic_init(&s->stopping, 0);
    pthread_mutex_init(&s->conns_mu, NULL);
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_ITC | MHD_USE_POLL | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    s->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL,
        MHD_OPTION_SOCK_ADDR, ai->ai_addr, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_URI_LOG_CALLBACK, on_uri, NULL, MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
        MHD_OPTION_UNESCAPE_CALLBACK, keep_escaped, NULL, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)cfg->server.connection_limit, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)cfg->server.connection_timeout_s, MHD_OPTION_THREAD_STACK_SIZE,
        (size_t)(512 * 1024), MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!s->daemon) {
        snprintf(err, err_len, "%s: cannot listen on %s:%d (address in use or not permitted)",
                 cfg->path, cfg->listen_host, cfg->listen_port);
        free(s);
        return -1;
    }
    s->watchdog_running = pthread_create(&s->watchdog, NULL, watchdog, s) == 0;
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : cfg->listen_port;
    /* A default public URL made from "port 0" names the port bound. */
    char zero[300];
    snprintf(zero, sizeof zero, "http://%s:0", cfg->listen_host);
    if (cfg->listen_port == 0 && app->cfg->public_url && strcmp(app->cfg->public_url, zero) == 0) {
        free(app->cfg->public_url);
        app->cfg->public_url = pb_xasprintf("http://%s:%d", cfg->listen_host, s->port);
    }
    app->server = s;
    *out = s;
    return 0;
}

int pb_server_port(const struct pb_server *s)
{
    return s->port;
}

int pb_server_in_flight(const struct pb_server *s)
{
    return atomic_load(&((struct pb_server *)s)->in_flight);
}

void pb_server_stop(struct pb_server *s)
{
    if (!s)
        return;
    /* Stop accepting first, then let in-flight requests finish. */
    MHD_socket lsock = MHD_quiesce_daemon(s->daemon);
    if (lsock != MHD_INVALID_SOCKET)
        close(lsock);
    int64_t deadline = pb_mono_ms() + s->app->cfg->server.drain_timeout_s * 1000;
    while (atomic_load(&s->in_flight) > 0 && pb_mono_ms() < deadline) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    int left = atomic_load(&s->in_flight);
    if (left > 0)
        pb_logf(PB_LOG_WARN, "drain timeout: %d requests still running", left);
    atomic_store(&s->stopping, 1);
    if (s->watchdog_running)
        pthread_join(s->watchdog, NULL);
    MHD_stop_daemon(s->daemon);
    pthread_mutex_destroy(&s->conns_mu);
    if (s->app->server == s)
        s->app->server = NULL;
    free(s);
}
