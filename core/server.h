/* The HTTP server: libmicrohttpd, one route table, problem+json errors, a
 * request id on every answer, and a drain on stop. */
#ifndef PB_CORE_SERVER_H
#define PB_CORE_SERVER_H
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "util.h"

struct pb_app;
struct pb_server;
struct MHD_Connection;

#define PB_MAX_PARAMS 6

struct pb_request {
    struct MHD_Connection *conn;
    struct pb_app *app;
    const struct pb_route *route;
    char request_id[48];
    const char *method;
    const char *path;             /* decoded path, no query */
    const char *param_names[PB_MAX_PARAMS];
    char *param_values[PB_MAX_PARAMS];
    size_t n_params;
    struct pb_buf body;           /* buffered body for PB_ROUTE_BODY routes */
    int body_too_large;
    int64_t start_ms;
    unsigned status;              /* the status answered, for the access log */
    char project_id[64];          /* set once an API key was accepted */
    void *route_state;            /* a streaming route's own state */
    void (*route_state_free)(void *state);
    int upload_stopped;           /* on_upload asked to drop the rest */
    int started;
    char *raw_uri;                /* the request target as sent, with its query */
    char **decoded;               /* query values handed out by pb_req_query */
    size_t n_decoded;
    struct pb_header *extra;      /* headers for the next reply */
    size_t n_extra;
};

typedef int (*pb_route_fn)(struct pb_request *r);

enum pb_route_flags {
    PB_ROUTE_BODY = 1 << 0,       /* buffer the body (up to server.max_body_bytes) */
    PB_ROUTE_PREFIX = 1 << 1,     /* pattern ends with a slash and star: matches any rest */
    PB_ROUTE_STREAM = 1 << 2      /* on_headers, then on_upload per chunk, then fn */
};

struct pb_route {
    const char *method;           /* "GET", ... or "*" for any */
    const char *pattern;          /* "/v1/projects/{project}/api-keys" */
    pb_route_fn fn;               /* called once the whole request is in */
    unsigned flags;
    /* PB_ROUTE_STREAM only. on_headers runs before any body byte is read;
     * it may reply at once (r->status is then set). on_upload gets each
     * body chunk; it returns 0, or -1 to drop the rest of the body. */
    pb_route_fn on_headers;
    int (*on_upload)(struct pb_request *r, const char *data, size_t len);
};

/* Requests carrying this header are proxied Ampersand-style, whatever
 * their path (SPEC.md 2a). */
extern const struct pb_route pb_route_amp_proxy;

/* Starts listening; on failure returns -1 with one line in err. */
int pb_server_start(struct pb_app *app, struct pb_server **out, char *err, size_t err_len);
/* The port actually bound (useful with listen port 0). */
int pb_server_port(const struct pb_server *s);
/* Stops accepting, waits for in-flight requests (up to the drain timeout),
 * then shuts down. */
void pb_server_stop(struct pb_server *s);
/* Requests currently being handled. */
int pb_server_in_flight(const struct pb_server *s);

/* ---- for route handlers -------------------------------------------------- */
const char *pb_req_param(const struct pb_request *r, const char *name);
const char *pb_req_get_header(const struct pb_request *r, const char *name);
/* A query argument, percent-decoded ('+' as space); NULL when absent. */
const char *pb_req_query(const struct pb_request *r, const char *name);
/* Parses the buffered body as a JSON object; on failure answers a 400
 * problem itself and returns NULL with *rc set to the handler's return. */
json_t *pb_req_json_body(struct pb_request *r, int *rc);

/* Each reply function queues the response and returns what the handler
 * should return. Bodies passed as json_t are stolen. */
int pb_reply_json(struct pb_request *r, unsigned status, json_t *body);
int pb_reply_text(struct pb_request *r, unsigned status, const char *ctype, const char *text);
/* An RFC 9457 problem: `slug` becomes the type URI; issues (stolen, may be
 * NULL) is an array of {in, name, value?, detail}. */
int pb_reply_problem(struct pb_request *r, unsigned status, const char *slug, const char *title,
                     const char *detail, int retryable, json_t *issues);
/* Streams a response body: read returns >0 bytes, 0 at the end, -1 when
 * the body broke off. length -1 means unknown (chunked). headers are
 * copied; the caller keeps ctx alive until the request completes. */
typedef long (*pb_body_reader)(void *ctx, char *buf, size_t max);
struct pb_header;
int pb_reply_stream(struct pb_request *r, unsigned status, const struct pb_header *headers,
                    size_t n_headers, int64_t length, pb_body_reader read, void *ctx);
/* Adds a header to the response the next reply queues (e.g. X-Amp-*). */
void pb_reply_add_header(struct pb_request *r, const char *name, const char *value);

/* One validation issue for pb_reply_problem. */
json_t *pb_issue(const char *in, const char *name, const char *detail);
#endif
