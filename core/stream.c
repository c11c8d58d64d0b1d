#include "stream.h"
#include "util.h"
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define UP_CAP (256 * 1024)
#define DOWN_CAP (256 * 1024)

struct ring {
    char *data;
    size_t cap, start, len;
};

struct pb_stream {
    struct pb_egress *egress;
    CURLM *multi;
    CURL *easy;
    struct curl_slist *hdrs;
    struct pb_egress_policy pol;
    char *url;
    struct ring up, down;
    int up_eof, up_paused, down_paused;
    int running, done;
    CURLcode result;
    int status, head_done;
    struct pb_header *rh;
    size_t n_rh, cap_rh;
    int64_t content_length;
    size_t bytes_out, bytes_in;
    long timeout_ms;
    int64_t started;
};

static size_t ring_put(struct ring *r, const char *d, size_t n)
{
    size_t room = r->cap - r->len, put = n < room ? n : room;
    size_t end = (r->start + r->len) % r->cap;
    size_t first = r->cap - end < put ? r->cap - end : put;
    memcpy(r->data + end, d, first);
    memcpy(r->data, d + first, put - first);
    r->len += put;
    return put;
}

static size_t ring_get(struct ring *r, char *d, size_t n)
{
    size_t got = n < r->len ? n : r->len;
    size_t first = r->cap - r->start < got ? r->cap - r->start : got;
    memcpy(d, r->data + r->start, first);
    memcpy(d + first, r->data, got - first);
    r->start = (r->start + got) % r->cap;
    r->len -= got;
    return got;
}


/* Makes room for `need` more bytes, growing the ring up to `max`: a small
 * body never costs more than a few KB. 0 when it cannot. */
static int ring_reserve(struct ring *r, size_t need, size_t max)
{
    if (r->cap - r->len >= need)
        return 1;
    if (r->cap >= max)
        return 0;
    size_t cap = r->cap ? r->cap * 2 : 16 * 1024;
    while (cap < r->len + need && cap < max)
        cap *= 2;
    if (cap > max)
        cap = max;
    char *d = pb_xmalloc(cap);
    size_t len = r->len;
    if (len)
        ring_get(r, d, len);
    free(r->data);
    r->data = d;
    r->cap = cap;
    r->start = 0;
    r->len = len;
    return r->cap - r->len >= need;
}

static size_t on_read(char *buf, size_t size, size_t n, void *u)
{
    struct pb_stream *s = u;
    if (s->up.len == 0) {
        if (s->up_eof)
            return 0;
        s->up_paused = 1;
        return CURL_READFUNC_PAUSE;
    }
    size_t got = ring_get(&s->up, buf, size * n);
    s->bytes_out += got;
    return got;
}

static size_t on_write(char *data, size_t size, size_t n, void *u)
{
    struct pb_stream *s = u;
    size_t len = size * n;
    /* All or nothing: curl hands the same bytes again after a pause. */
    if (!ring_reserve(&s->down, len, DOWN_CAP)) {
        s->down_paused = 1;
        return CURL_WRITEFUNC_PAUSE;
    }
    ring_put(&s->down, data, len);
    s->bytes_in += len;
    return len;
}

static void clear_headers(struct pb_stream *s)
{
    for (size_t i = 0; i < s->n_rh; i++) {
        free(s->rh[i].name);
        free(s->rh[i].value);
    }
    s->n_rh = 0;
}

static size_t on_header(char *data, size_t size, size_t n, void *u)
{
    struct pb_stream *s = u;
    size_t len = size * n;
    if (len >= 5 && strncmp(data, "HTTP/", 5) == 0) {
        clear_headers(s);
        s->head_done = 0;
        const char *sp = memchr(data, ' ', len);
        s->status = sp ? atoi(sp + 1) : 0;
        return len;
    }
    if (len <= 2 && (data[0] == '\r' || data[0] == '\n')) {
        /* The end of a head; a 1xx head is followed by the real one. */
        if (s->status >= 200)
            s->head_done = 1;
        return len;
    }
    const char *colon = memchr(data, ':', len);
    if (!colon)
        return len;
    const char *v = colon + 1, *end = data + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
        end--;
    if (s->n_rh == s->cap_rh) {
        s->cap_rh = s->cap_rh ? s->cap_rh * 2 : 16;
        s->rh = pb_xrealloc(s->rh, s->cap_rh * sizeof *s->rh);
    }
    s->rh[s->n_rh].name = strndup(data, (size_t)(colon - data));
    s->rh[s->n_rh].value = strndup(v, (size_t)(end - v));
    s->n_rh++;
    return len;
}

/* Runs the transfer until `until` holds or it ends. */
static void drive(struct pb_stream *s, int (*until)(struct pb_stream *))
{
    while (!s->done && !until(s)) {
        curl_multi_perform(s->multi, &s->running);
        int left;
        CURLMsg *m;
        while ((m = curl_multi_info_read(s->multi, &left)) != NULL) {
            if (m->msg == CURLMSG_DONE) {
                s->done = 1;
                s->result = m->data.result;
            }
        }
        if (s->done || until(s))
            break;
        curl_multi_poll(s->multi, NULL, 0, 200, NULL);
    }
}

static int up_drained(struct pb_stream *s)
{
    return s->up.len == 0;
}

static int head_ready(struct pb_stream *s)
{
    return s->head_done;
}

static int down_ready(struct pb_stream *s)
{
    return s->down.len > 0;
}

struct pb_stream *pb_stream_start(struct pb_egress *e, const struct pb_stream_opts *o)
{
    struct pb_stream *s = pb_xcalloc(1, sizeof *s);
    s->egress = e;
    s->content_length = -1;
    s->url = pb_xstrdup(o->url);
    void *m, *ez;
    pb_egress_pair_get(e, &m, &ez);
    s->multi = m;
    s->easy = ez;
    if (!s->multi || !s->easy) {
        pb_stream_free(s);
        return NULL;
    }
    CURL *c = s->easy;
    pb_egress_setup_handle(e, c, &s->pol);
    /* A long transfer is fine; a stalled one is not. */
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 0L);
    s->timeout_ms = pb_egress_timeout_ms(e);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, s->timeout_ms / 1000 > 0 ? s->timeout_ms / 1000 : 1L);
    curl_easy_setopt(c, CURLOPT_URL, o->url);
    curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L);
    for (size_t i = 0; i < o->n_headers; i++) {
        char *line = pb_xasprintf("%s: %s", o->headers[i].name, o->headers[i].value);
        s->hdrs = curl_slist_append(s->hdrs, line);
        free(line);
    }
    /* Keep curl from adding headers the caller did not send. */
    s->hdrs = curl_slist_append(s->hdrs, "Expect:");
    s->hdrs = curl_slist_append(s->hdrs, "Accept:");
    if (strcmp(o->method, "HEAD") == 0) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    } else if (o->has_body) {
        curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
        if (o->body_len >= 0)
            curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)o->body_len);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(c, CURLOPT_READDATA, s);
    }
    if (strcmp(o->method, "GET") != 0 && strcmp(o->method, "HEAD") != 0)
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, o->method);
    if (o->decompress)
        curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, s->hdrs);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, s);
    s->up_eof = !o->has_body;
    s->started = pb_mono_ms();
    curl_multi_add_handle(s->multi, c);
    return s;
}

int pb_stream_feed(struct pb_stream *s, const char *data, size_t len)
{
    while (len > 0 && !s->done) {
        ring_reserve(&s->up, len, UP_CAP);
        size_t put = ring_put(&s->up, data, len);
        data += put;
        len -= put;
        if (s->up_paused) {
            s->up_paused = 0;
            curl_easy_pause(s->easy, CURLPAUSE_CONT);
        }
        drive(s, up_drained);
    }
    return s->done && s->result != CURLE_OK ? -1 : 0;
}

static void describe_failure(struct pb_stream *s, struct pb_egress_result *res)
{
    char *host = NULL;
    CURLU *u = curl_url();
    if (curl_url_set(u, CURLUPART_URL, s->url, 0) == CURLUE_OK)
        curl_url_get(u, CURLUPART_HOST, &host, 0);
    curl_url_cleanup(u);
    if (s->pol.hit) {
        res->fail = PB_EGRESS_POLICY;
        snprintf(res->message, sizeof res->message,
                 "%s resolves to a private or loopback address and egress.allow_private is false",
                 host ? host : "host");
    } else if (s->result == CURLE_OPERATION_TIMEDOUT) {
        res->fail = PB_EGRESS_TIMEOUT;
        snprintf(res->message, sizeof res->message, "%s did not answer within %ld ms",
                 host ? host : "host", s->timeout_ms);
    } else {
        res->fail = PB_EGRESS_NETWORK;
        snprintf(res->message, sizeof res->message, "%s: %s", host ? host : "host",
                 curl_easy_strerror(s->result));
    }
    curl_free(host);
}

int pb_stream_wait_headers(struct pb_stream *s, struct pb_egress_result *res)
{
    memset(res, 0, sizeof *res);
    s->up_eof = 1;
    if (s->up_paused) {
        s->up_paused = 0;
        curl_easy_pause(s->easy, CURLPAUSE_CONT);
    }
    drive(s, head_ready);
    res->duration_ms = (long)(pb_mono_ms() - s->started);
    if (s->head_done || (s->done && s->result == CURLE_OK && s->status > 0)) {
        curl_off_t cl = -1;
        if (curl_easy_getinfo(s->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl) == CURLE_OK)
            s->content_length = cl;
        return 0;
    }
    describe_failure(s, res);
    return -1;
}

int pb_stream_status(const struct pb_stream *s)
{
    return s->status;
}

const struct pb_header *pb_stream_headers(const struct pb_stream *s, size_t *n)
{
    *n = s->n_rh;
    return s->rh;
}

const char *pb_stream_header(const struct pb_stream *s, const char *name)
{
    for (size_t i = 0; i < s->n_rh; i++)
        if (strcasecmp(s->rh[i].name, name) == 0)
            return s->rh[i].value;
    return NULL;
}

int64_t pb_stream_content_length(const struct pb_stream *s)
{
    return s->content_length;
}

long pb_stream_read(struct pb_stream *s, char *buf, size_t max)
{
    if (s->down.len == 0) {
        if (s->down_paused) {
            s->down_paused = 0;
            curl_easy_pause(s->easy, CURLPAUSE_CONT);
        }
        drive(s, down_ready);
    }
    if (s->down.len > 0) {
        long got = (long)ring_get(&s->down, buf, max);
        if (s->down_paused && s->down.cap - s->down.len >= CURL_MAX_WRITE_SIZE) {
            s->down_paused = 0;
            curl_easy_pause(s->easy, CURLPAUSE_CONT);
        }
        return got;
    }
    if (s->done && s->result == CURLE_OK)
        return 0;
    return s->done ? -1 : 0;
}

struct pb_http_response *pb_stream_buffer(struct pb_stream *s, size_t max)
{
    struct pb_http_response *r = pb_resp_new(s->status);
    for (size_t i = 0; i < s->n_rh; i++)
        pb_resp_add_header(r, s->rh[i].name, s->rh[i].value);
    char buf[16384];
    long n;
    while ((n = pb_stream_read(s, buf, sizeof buf)) > 0) {
        if (r->body_len + (size_t)n <= max)
            pb_resp_append_body(r, buf, (size_t)n);
    }
    return r;
}

void pb_stream_counts(const struct pb_stream *s, size_t *bytes_out, size_t *bytes_in)
{
    *bytes_out = s->bytes_out;
    *bytes_in = s->bytes_in;
}

void pb_stream_free(struct pb_stream *s)
{
    if (!s)
        return;
    /* A transfer cut short leaves its connection unusable; curl drops it. */
    pb_egress_pair_put(s->egress, s->multi, s->easy);
    curl_slist_free_all(s->hdrs);
    clear_headers(s);
    free(s->rh);
    free(s->url);
    free(s->up.data);
    free(s->down.data);
    free(s);
}
