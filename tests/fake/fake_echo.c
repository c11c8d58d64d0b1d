/* Fake echo server: answers every request with a JSON description of it,
 * plus a few helpers (/bytes/N, /status/CODE, /headers/NAME/VALUE, /slow/MS). */
#define FAKE_INTERNAL
#include "fake.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static void echo_status(struct fake_out *o, int status)
{
    const char *reason = MHD_get_reason_phrase_for((unsigned)status);
    if (status == 204 || status == 304) {
        o->status = status;
        return;
    }
    fake_out_json(o, status, json_pack("{s:i, s:s}", "status", status, "error", reason ? reason : ""));
}

void fake_echo_error(struct fake_conn *c, int status, struct fake_out *o)
{
    (void)c;
    o->ctype = "application/json";
    echo_status(o, status);
}

/* ---- /bytes/N ------------------------------------------------------------------ */

static ssize_t bytes_cb(void *cls, uint64_t pos, char *buf, size_t max)
{
    uint64_t total = *(uint64_t *)cls;
    if (pos >= total)
        return MHD_CONTENT_READER_END_OF_STREAM;
    uint64_t left = total - pos;
    size_t n = left < max ? (size_t)left : max;
    unsigned v = (unsigned)(pos % 251);
    for (size_t i = 0; i < n; i++) {
        buf[i] = (char)v;
        if (++v == 251)
            v = 0;
    }
    return (ssize_t)n;
}

static int parse_u64(const char *s, uint64_t *out)
{
    if (!*s)
        return -1;
    uint64_t v = 0;
    for (; *s; s++) {
        if (!isdigit((unsigned char)*s))
            return -1;
        if (v > (UINT64_MAX - 9) / 10)
            return -1;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *out = v;
    return 0;
}

/* ---- the echo ------------------------------------------------------------------- */


static void echo(struct fake_conn *c, struct fake_out *o)
{
    const struct fake_req *r = &c->req;
    json_t *hdrs = json_object();
    for (size_t i = 0; i < r->nheaders; i++) {
        char name[256];
        snprintf(name, sizeof name, "%s", r->headers[i].name);
        for (char *p = name; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        json_t *old = json_object_get(hdrs, name);
        if (old) {
            size_t n = strlen(json_string_value(old)) + strlen(r->headers[i].value) + 3;
            char *j = malloc(n);
            snprintf(j, n, "%s, %s", json_string_value(old), r->headers[i].value);
            json_object_set_new(hdrs, name, json_string(j));
            free(j);
        } else {
            json_t *v = json_string(r->headers[i].value);
            json_object_set_new(hdrs, name, v ? v : json_null());
        }
    }
    json_t *body = json_null();
    if (r->body_total < FAKE_BODY_MAX && r->body_len == r->body_total) {
        json_t *s = json_stringn(r->body, r->body_len); /* NULL when not UTF-8 */
        if (s) {
            json_decref(body);
            body = s;
        }
    }
    char sum[17];
    snprintf(sum, sizeof sum, "%016llx", (unsigned long long)r->body_checksum);
    json_t *out = json_pack("{s:s, s:s, s:s, s:o, s:o, s:I, s:s}", "method", r->method, "path", r->path,
                            "query", r->query, "headers", hdrs, "body", body, "bodyBytes",
                            (json_int_t)r->body_total, "bodyChecksum", sum);
    fake_out_json(o, 200, out);
}

void fake_echo_handle(struct fake_conn *c, struct fake_out *o)
{
    const char *path = c->req.path;
    int get = strcasecmp(c->req.method, "GET") == 0 || strcasecmp(c->req.method, "HEAD") == 0;
    o->ctype = "application/json";
    if (get && strncmp(path, "/bytes/", 7) == 0) {
        uint64_t n;
        if (parse_u64(path + 7, &n) != 0) {
            echo_status(o, 400);
            return;
        }
        uint64_t *cls = malloc(sizeof *cls);
        *cls = n;
        o->resp = MHD_create_response_from_callback(n, 64 * 1024, bytes_cb, cls, free);
        MHD_add_response_header(o->resp, "Content-Type", "application/octet-stream");
        o->status = 200;
        return;
    }
    if (get && strncmp(path, "/status/", 8) == 0) {
        uint64_t code;
        if (parse_u64(path + 8, &code) != 0 || code < 200 || code > 599) {
            echo_status(o, 400);
            return;
        }
        echo_status(o, (int)code);
        return;
    }
    if (get && strncmp(path, "/headers/", 9) == 0) {
        const char *sl = strchr(path + 9, '/');
        if (!sl || sl == path + 9) {
            echo_status(o, 400);
            return;
        }
        char *name = fake_urldecode(path + 9, (size_t)(sl - path - 9), 0);
        char *value = fake_urldecode(sl + 1, strlen(sl + 1), 0);
        int ok = 1;
        for (char *p = name; *p; p++)
            if (!(isalnum((unsigned char)*p) || strchr("!#$%&'*+-.^_`|~", *p)))
                ok = 0;
        for (char *p = value; *p; p++)
            if (*p == '\r' || *p == '\n')
                ok = 0;
        if (ok) {
            fake_out_header(o, name, value);
            fake_out_json(o, 200, json_pack("{s:s, s:s}", "name", name, "value", value));
        } else {
            echo_status(o, 400);
        }
        free(name);
        free(value);
        return;
    }
    if (get && strncmp(path, "/slow/", 6) == 0) {
        uint64_t ms;
        if (parse_u64(path + 6, &ms) != 0 || ms > 600000) {
            echo_status(o, 400);
            return;
        }
        if (fake_sleep_ms(c->f, (long)ms) != 0)
            return; /* stopping: no answer */
        fake_out_json(o, 200, json_pack("{s:I}", "sleptMs", (json_int_t)ms));
        return;
    }
    echo(c, o);
}
