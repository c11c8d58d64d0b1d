/* Link with core/util.c and core/log.c (and -lcurl -lsodium -ljansson). */
/* The core services table handed to plugins, and the request/response
 * objects it builds and reads. */
#include "http.h"
#include "log.h"
#include "util.h"
#include <curl/curl.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int64_t (*clock_fn)(void);

void pb_set_clock(int64_t (*now_ms)(void))
{
    clock_fn = now_ms;
}

int64_t pb_now_ms(void)
{
    return clock_fn ? clock_fn() : pb_wall_ms();
}

/* ---- errors --------------------------------------------------------------- */

void pb_error_clear(struct pb_error *err)
{
    if (!err)
        return;
    err->code = PB_OK;
    err->field[0] = '\0';
    err->message[0] = '\0';
}

static void error_vset(pb_error *err, enum pb_errcode code, const char *field, const char *fmt,
                       va_list ap)
{
    if (!err)
        return;
    err->code = code;
    snprintf(err->field, sizeof err->field, "%s", field ? field : "");
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    /* One line, whatever input a plugin quoted into it. */
    for (char *p = err->message; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
}

void pb_error_setf(struct pb_error *err, enum pb_errcode code, const char *field,
                   const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    error_vset(err, code, field, fmt, ap);
    va_end(ap);
}

/* ---- requests ------------------------------------------------------------- */

/* Header names and values must not be able to start another header. */
static int unsafe_text(const char *s)
{
    return !s || strpbrk(s, "\r\n") != NULL;
}

static int valid_header_name(const char *s)
{
    if (!s || !*s)
        return 0;
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c <= 32 || c >= 127 || c == ':')
            return 0;
    }
    return 1;
}

struct pb_http_request *pb_req_new(void)
{
    struct pb_http_request *r = pb_xcalloc(1, sizeof *r);
    r->method = pb_xstrdup("GET");
    return r;
}

void pb_req_free(struct pb_http_request *r)
{
    if (!r)
        return;
    free(r->method);
    free(r->url);
    free(r->query);
    for (size_t i = 0; i < r->n_headers; i++) {
        free(r->headers[i].name);
        free(r->headers[i].value);
    }
    free(r->headers);
    free(r->form);
    json_decref(r->json);
    free(r->body);
    free(r->content_type);
    free(r);
}

static int req_set_method(pb_http_request *r, const char *method)
{
    if (!method || !*method || strpbrk(method, " \r\n\t"))
        return PB_EINVAL;
    free(r->method);
    r->method = pb_xstrdup(method);
    return PB_OK;
}

static int req_set_url(pb_http_request *r, const char *url)
{
    if (!url || unsafe_text(url) || strchr(url, ' '))
        return PB_EINVAL;
    free(r->url);
    r->url = pb_xstrdup(url);
    return PB_OK;
}

static void headers_add(struct pb_header **h, size_t *n, size_t *cap, const char *name,
                        const char *value)
{
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 8;
        *h = pb_xrealloc(*h, *cap * sizeof **h);
    }
    (*h)[*n].name = pb_xstrdup(name);
    (*h)[*n].value = pb_xstrdup(value);
    (*n)++;
}

static int req_add_header(pb_http_request *r, const char *name, const char *value)
{
    if (!valid_header_name(name) || unsafe_text(value))
        return PB_EINVAL;
    headers_add(&r->headers, &r->n_headers, &r->cap_headers, name, value);
    if (pb_strieq(name, "Content-Type")) {
        free(r->content_type);
        r->content_type = pb_xstrdup(value);
    }
    return PB_OK;
}

const char *pb_req_header(const struct pb_http_request *r, const char *name)
{
    for (size_t i = r->n_headers; i-- > 0;)
        if (pb_strieq(r->headers[i].name, name))
            return r->headers[i].value;
    return NULL;
}

static char *url_escape(const char *s)
{
    if (!s)
        return NULL;
    /* libcurl ignores the handle argument for escaping since 7.82. */
    char *e = curl_easy_escape(NULL, s, 0);
    if (!e)
        return NULL;
    char *out = pb_xstrdup(e);
    curl_free(e);
    return out;
}

static int append_pair(char **dst, const char *name, const char *value)
{
    if (!name || !value)
        return PB_EINVAL;
    char *n = url_escape(name), *v = url_escape(value);
    if (!n || !v) {
        free(n);
        free(v);
        return PB_ENOMEM;
    }
    char *joined = pb_xasprintf("%s%s%s=%s", *dst ? *dst : "", *dst ? "&" : "", n, v);
    free(*dst);
    *dst = joined;
    free(n);
    free(v);
    return PB_OK;
}

static int req_add_query(pb_http_request *r, const char *name, const char *value)
{
    return append_pair(&r->query, name, value);
}

static int req_add_form(pb_http_request *r, const char *name, const char *value)
{
    return append_pair(&r->form, name, value);
}

static int req_set_json(pb_http_request *r, json_t *body)
{
    if (!body)
        return PB_EINVAL;
    json_decref(r->json);
    r->json = body;
    return PB_OK;
}

static json_t *req_get_json(pb_http_request *r)
{
    return r->json;
}

static int req_set_body(pb_http_request *r, const void *data, size_t len, const char *ctype)
{
    if (ctype && unsafe_text(ctype))
        return PB_EINVAL;
    free(r->body);
    r->body = pb_xmalloc(len + 1);
    if (len)
        memcpy(r->body, data, len);
    r->body[len] = '\0';
    r->body_len = len;
    if (ctype) {
        free(r->content_type);
        r->content_type = pb_xstrdup(ctype);
    }
    return PB_OK;
}

const char *pb_req_body(struct pb_http_request *r, size_t *len)
{
    if (r->json) {
        char *s = json_dumps(r->json, JSON_COMPACT);
        if (!s)
            return NULL;
        free(r->body);
        r->body = s;
        r->body_len = strlen(s);
        if (!r->content_type)
            r->content_type = pb_xstrdup("application/json");
    } else if (r->form) {
        free(r->body);
        r->body = pb_xstrdup(r->form);
        r->body_len = strlen(r->form);
        if (!r->content_type)
            r->content_type = pb_xstrdup("application/x-www-form-urlencoded");
    }
    if (len)
        *len = r->body ? r->body_len : 0;
    return r->body;
}

static int is_absolute(const char *u)
{
    return u && (strncasecmp(u, "https://", 8) == 0 || strncasecmp(u, "http://", 7) == 0);
}

char *pb_req_full_url(const struct pb_http_request *r, const char *base_url)
{
    const char *u = r->url ? r->url : "";
    struct pb_buf b = {0};
    if (!is_absolute(u)) {
        if (base_url) {
            size_t bl = strlen(base_url);
            while (bl > 0 && base_url[bl - 1] == '/')
                bl--;
            pb_buf_append(&b, base_url, bl);
        }
        if (*u && *u != '/' && *u != '?')
            pb_buf_appends(&b, "/");
    }
    pb_buf_appends(&b, u);
    if (r->query) {
        pb_buf_appends(&b, strchr(u, '?') ? "&" : "?");
        pb_buf_appends(&b, r->query);
    }
    if (!b.data)
        pb_buf_appends(&b, "");
    return b.data;
}

/* ---- responses ------------------------------------------------------------ */

struct pb_http_response *pb_resp_new(int status)
{
    struct pb_http_response *r = pb_xcalloc(1, sizeof *r);
    r->status = status;
    r->body = pb_xstrdup("");
    return r;
}

int pb_resp_add_header(struct pb_http_response *r, const char *name, const char *value)
{
    headers_add(&r->headers, &r->n_headers, &r->cap_headers, name, value ? value : "");
    return PB_OK;
}

int pb_resp_set_body(struct pb_http_response *r, const char *data, size_t len)
{
    free(r->body);
    r->body = pb_xmalloc(len + 1);
    if (len)
        memcpy(r->body, data, len);
    r->body[len] = '\0';
    r->body_len = len;
    json_decref(r->json);
    r->json = NULL;
    r->json_tried = 0;
    return PB_OK;
}

int pb_resp_append_body(struct pb_http_response *r, const char *data, size_t len)
{
    r->body = pb_xrealloc(r->body, r->body_len + len + 1);
    memcpy(r->body + r->body_len, data, len);
    r->body_len += len;
    r->body[r->body_len] = '\0';
    return PB_OK;
}

void pb_resp_free(struct pb_http_response *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_headers; i++) {
        free(r->headers[i].name);
        free(r->headers[i].value);
    }
    free(r->headers);
    free(r->body);
    json_decref(r->json);
    free(r);
}

static int resp_status(const pb_http_response *r)
{
    return r ? r->status : 0;
}

static const char *resp_header(const pb_http_response *r, const char *name)
{
    for (size_t i = 0; r && i < r->n_headers; i++)
        if (pb_strieq(r->headers[i].name, name))
            return r->headers[i].value;
    return NULL;
}

static const char *resp_body(const pb_http_response *r, size_t *len)
{
    if (len)
        *len = r ? r->body_len : 0;
    return r ? r->body : NULL;
}

static json_t *resp_json(const pb_http_response *cr)
{
    /* Parsed once on first use; a response belongs to one thread. */
    struct pb_http_response *r = (struct pb_http_response *)cr;
    if (!r)
        return NULL;
    if (!r->json_tried) {
        r->json_tried = 1;
        if (r->body_len)
            r->json = json_loadb(r->body, r->body_len, JSON_DECODE_ANY, NULL);
    }
    return r->json;
}

/* ---- helpers -------------------------------------------------------------- */

static char *base64_encode(const void *data, size_t len)
{
    size_t n = sodium_base64_encoded_len(len, sodium_base64_VARIANT_ORIGINAL);
    char *out = pb_xmalloc(n);
    sodium_bin2base64(out, n, data, len, sodium_base64_VARIANT_ORIGINAL);
    return out;
}

static void str_free(char *s)
{
    free(s);
}

static int str_format(char *out, size_t out_len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, out_len, fmt, ap);
    va_end(ap);
    return (n < 0 || (size_t)n >= out_len) ? PB_EINVAL : PB_OK;
}

static const char *cred_meta(const struct pb_credentials *cred, const char *key)
{
    if (!cred || !cred->metadata || !key)
        return NULL;
    json_t *v = json_object_get(cred->metadata, key);
    if (json_is_object(v))
        v = json_object_get(v, "value");
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static void svc_error_set(pb_error *err, enum pb_errcode code, const char *field,
                          const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    error_vset(err, code, field, fmt, ap);
    va_end(ap);
}

static const struct pb_core_services services = {
    .abi_major = PB_PLUGIN_ABI_MAJOR,
    .abi_minor = PB_PLUGIN_ABI_MINOR,
    .struct_size = sizeof(struct pb_core_services),
    .log = pb_log_provider,
    .error_set = svc_error_set,
    .req_set_method = req_set_method,
    .req_set_url = req_set_url,
    .req_add_header = req_add_header,
    .req_add_query = req_add_query,
    .req_add_form = req_add_form,
    .req_set_json = req_set_json,
    .req_get_json = req_get_json,
    .req_set_body = req_set_body,
    .resp_status = resp_status,
    .resp_header = resp_header,
    .resp_body = resp_body,
    .resp_json = resp_json,
    .url_escape = url_escape,
    .base64_encode = base64_encode,
    .str_free = str_free,
    .str_format = str_format,
    .parse_http_date = pb_parse_http_date,
    .now_ms = pb_now_ms,
    .cred_meta = cred_meta,
};

const struct pb_core_services *pb_services(void)
{
    return &services;
}
