/* The concrete request descriptions and responses behind the plugin ABI's
 * opaque pb_http_request / pb_http_response, and the services table. */
#ifndef PB_CORE_HTTP_H
#define PB_CORE_HTTP_H
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "plugboard/plugin.h"

struct pb_header {
    char *name;
    char *value;
};

struct pb_http_request {
    char *method;            /* default "GET" */
    char *url;               /* relative path[?query] or absolute URL */
    char *query;             /* extra query built by req_add_query, no '?' */
    struct pb_header *headers;
    size_t n_headers, cap_headers;
    char *form;              /* x-www-form-urlencoded body being built */
    json_t *json;            /* JSON body, owned */
    char *body;              /* raw body, owned */
    size_t body_len;
    char *content_type;
};

struct pb_http_response {
    int status;
    struct pb_header *headers;
    size_t n_headers, cap_headers;
    char *body;              /* NUL-terminated */
    size_t body_len;
    json_t *json;            /* parsed lazily */
    int json_tried;
};

struct pb_error {
    enum pb_errcode code;
    char field[128];
    char message[512];
};

const struct pb_core_services *pb_services(void);

struct pb_http_request *pb_req_new(void);
void pb_req_free(struct pb_http_request *req);
const char *pb_req_header(const struct pb_http_request *req, const char *name);
/* Serialized body for sending (JSON, form or raw); borrowed. Sets the
 * content type the body needs when it has not been set. */
const char *pb_req_body(struct pb_http_request *req, size_t *len);
/* The final URL: base + url (unless absolute) + query. malloc'd. */
char *pb_req_full_url(const struct pb_http_request *req, const char *base_url);

struct pb_http_response *pb_resp_new(int status);
int pb_resp_add_header(struct pb_http_response *resp, const char *name, const char *value);
int pb_resp_set_body(struct pb_http_response *resp, const char *data, size_t len);
int pb_resp_append_body(struct pb_http_response *resp, const char *data, size_t len);
void pb_resp_free(struct pb_http_response *resp);

void pb_error_clear(struct pb_error *err);
void pb_error_setf(struct pb_error *err, enum pb_errcode code, const char *field,
                   const char *fmt, ...) PB_PRINTF(4, 5);

/* Tests may replace the clock behind services->now_ms. NULL restores it. */
void pb_set_clock(int64_t (*now_ms)(void));
int64_t pb_now_ms(void);
#endif
