#include "egress.h"
#include "log.h"
#include "util.h"
#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define PB_EGRESS_MAX_BUFFERED (64L * 1024 * 1024)

#define PB_POOL_MAX 512

struct pb_pair {
    CURLM *multi;
    CURL *easy;
};

struct pb_egress {
    CURLSH *share;
    pthread_mutex_t pool_lock;
    struct pb_pair pool[PB_POOL_MAX];
    size_t pool_len;
    pthread_mutex_t locks[CURL_LOCK_DATA_LAST];
    struct curl_slist *connect_to;
    char *ca_blob;          /* system bundle + egress.ca_file, PEM */
    size_t ca_blob_len;
    char *http_proxy;
    long timeout_ms;
    int allow_private;
};

static void share_lock(CURL *h, curl_lock_data data, curl_lock_access a, void *u)
{
    (void)h;
    (void)a;
    struct pb_egress *e = u;
    pthread_mutex_lock(&e->locks[data]);
}

static void share_unlock(CURL *h, curl_lock_data data, void *u)
{
    (void)h;
    struct pb_egress *e = u;
    pthread_mutex_unlock(&e->locks[data]);
}

static int read_all(const char *path, struct pb_buf *b)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        pb_buf_append(b, chunk, n);
    fclose(f);
    return 0;
}

/* libcurl's CAINFO replaces the default bundle; egress.ca_file adds to it,
 * so both are joined into one in-memory bundle. */
static int build_ca_blob(struct pb_egress *e, const char *ca_file, char *err, size_t len)
{
    struct pb_buf b = {0};
    CURL *c = curl_easy_init();
    char *def = NULL;
    if (c && curl_easy_getinfo(c, CURLINFO_CAINFO, &def) == CURLE_OK && def)
        read_all(def, &b);
    if (c)
        curl_easy_cleanup(c);
    if (!b.len)
        read_all("/etc/ssl/certs/ca-certificates.crt", &b);
    pb_buf_appends(&b, "\n");
    if (read_all(ca_file, &b) != 0) {
        snprintf(err, len, "egress.ca_file %s: cannot read", ca_file);
        pb_buf_free(&b);
        return -1;
    }
    e->ca_blob = b.data;
    e->ca_blob_len = b.len;
    return 0;
}

static void global_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

int pb_egress_init(const struct pb_config *cfg, struct pb_egress **out, char *err, size_t len)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, global_init);
    struct pb_egress *e = pb_xcalloc(1, sizeof *e);
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_init(&e->locks[i], NULL);
    pthread_mutex_init(&e->pool_lock, NULL);
    e->timeout_ms = cfg->egress.timeout_ms;
    e->allow_private = cfg->egress.allow_private;
    e->http_proxy = pb_xstrdup(cfg->egress.http_proxy);
    for (size_t i = 0; i < cfg->egress.n_connect_to; i++)
        e->connect_to = curl_slist_append(e->connect_to, cfg->egress.connect_to[i]);
    if (cfg->egress.ca_file && build_ca_blob(e, cfg->egress.ca_file, err, len) != 0) {
        pb_egress_free(e);
        return -1;
    }
    e->share = curl_share_init();
    curl_share_setopt(e->share, CURLSHOPT_LOCKFUNC, share_lock);
    curl_share_setopt(e->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
    curl_share_setopt(e->share, CURLSHOPT_USERDATA, e);
    curl_share_setopt(e->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_share_setopt(e->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    *out = e;
    return 0;
}

void pb_egress_free(struct pb_egress *e)
{
    if (!e)
        return;
    for (size_t i = 0; i < e->pool_len; i++) {
        curl_easy_cleanup(e->pool[i].easy);
        curl_multi_cleanup(e->pool[i].multi);
    }
    pthread_mutex_destroy(&e->pool_lock);
    if (e->share)
        curl_share_cleanup(e->share);
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_destroy(&e->locks[i]);
    curl_slist_free_all(e->connect_to);
    free(e->ca_blob);
    free(e->http_proxy);
    free(e);
}

int pb_addr_is_private(const void *sa_)
{
    const struct sockaddr *sa = sa_;
    if (sa->sa_family == AF_INET) {
        uint32_t a = ntohl(((const struct sockaddr_in *)sa_)->sin_addr.s_addr);
        return (a >> 24) == 127 || (a >> 24) == 10 || (a >> 24) == 0 ||
               (a & 0xFFF00000u) == 0xAC100000u ||  /* 172.16/12 */
               (a & 0xFFFF0000u) == 0xC0A80000u ||  /* 192.168/16 */
               (a & 0xFFFF0000u) == 0xA9FE0000u ||  /* 169.254/16 */
               (a & 0xFFC00000u) == 0x64400000u ||  /* 100.64/10 */
               (a >> 28) == 0xE || a == 0xFFFFFFFFu;
    }
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa_)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a) || IN6_IS_ADDR_V4COMPAT(a)) {
            struct sockaddr_in v4 = {.sin_family = AF_INET};
            memcpy(&v4.sin_addr, &a->s6_addr[12], 4);
            return pb_addr_is_private(&v4);
        }
        return IN6_IS_ADDR_LOOPBACK(a) || IN6_IS_ADDR_UNSPECIFIED(a) ||
               IN6_IS_ADDR_LINKLOCAL(a) || IN6_IS_ADDR_MULTICAST(a) ||
               IN6_IS_ADDR_SITELOCAL(a) || (a->s6_addr[0] & 0xFE) == 0xFC;
    }
    return 1; /* unknown families are never a provider */
}

static curl_socket_t open_socket(void *u, curlsocktype purpose, struct curl_sockaddr *addr)
{
    struct pb_egress_policy *p = u;
    /* The proxy itself may be local; the policy is about provider hosts. */
    if (purpose == CURLSOCKTYPE_IPCXN && !p->allow_private && pb_addr_is_private(&addr->addr)) {
        p->hit = 1;
        return CURL_SOCKET_BAD;
    }
    return socket(addr->family, addr->socktype, addr->protocol);
}

void pb_egress_setup_handle(struct pb_egress *e, void *curl, struct pb_egress_policy *pol)
{
    CURL *c = curl;
    curl_easy_setopt(c, CURLOPT_SHARE, e->share);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, e->timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, e->timeout_ms);
    if (e->ca_blob) {
        struct curl_blob blob = {.data = e->ca_blob, .len = e->ca_blob_len,
                                 .flags = CURL_BLOB_NOCOPY};
        curl_easy_setopt(c, CURLOPT_CAINFO_BLOB, &blob);
    }
    if (e->connect_to)
        curl_easy_setopt(c, CURLOPT_CONNECT_TO, e->connect_to);
    curl_easy_setopt(c, CURLOPT_PROXY, e->http_proxy ? e->http_proxy : "");
    pol->allow_private = e->allow_private;
    pol->hit = 0;
    curl_easy_setopt(c, CURLOPT_OPENSOCKETFUNCTION, open_socket);
    curl_easy_setopt(c, CURLOPT_OPENSOCKETDATA, pol);
}

void pb_egress_pair_get(struct pb_egress *e, void **multi, void **easy)
{
    pthread_mutex_lock(&e->pool_lock);
    if (e->pool_len > 0) {
        struct pb_pair p = e->pool[--e->pool_len];
        pthread_mutex_unlock(&e->pool_lock);
        *multi = p.multi;
        *easy = p.easy;
        return;
    }
    pthread_mutex_unlock(&e->pool_lock);
    *multi = curl_multi_init();
    *easy = curl_easy_init();
}

void pb_egress_pair_put(struct pb_egress *e, void *multi, void *easy)
{
    if (!multi || !easy) {
        if (easy)
            curl_easy_cleanup(easy);
        if (multi)
            curl_multi_cleanup(multi);
        return;
    }
    curl_multi_remove_handle(multi, easy);
    curl_easy_reset(easy);
    pthread_mutex_lock(&e->pool_lock);
    if (e->pool_len < PB_POOL_MAX) {
        e->pool[e->pool_len].multi = multi;
        e->pool[e->pool_len].easy = easy;
        e->pool_len++;
        multi = easy = NULL;
    }
    pthread_mutex_unlock(&e->pool_lock);
    if (easy)
        curl_easy_cleanup(easy);
    if (multi)
        curl_multi_cleanup(multi);
}

long pb_egress_timeout_ms(const struct pb_egress *e)
{
    return e->timeout_ms;
}

struct collect {
    struct pb_http_response *resp;
    size_t max;
    int too_large;
};

static size_t on_body(char *data, size_t size, size_t n, void *u)
{
    struct collect *c = u;
    size_t len = size * n;
    if (c->resp->body_len + len > c->max) {
        c->too_large = 1;
        return 0;
    }
    pb_resp_append_body(c->resp, data, len);
    return len;
}

static size_t on_header(char *data, size_t size, size_t n, void *u)
{
    struct collect *c = u;
    size_t len = size * n;
    /* A new status line (after 1xx) starts a fresh header set. */
    if (len >= 5 && strncmp(data, "HTTP/", 5) == 0) {
        for (size_t i = 0; i < c->resp->n_headers; i++) {
            free(c->resp->headers[i].name);
            free(c->resp->headers[i].value);
        }
        c->resp->n_headers = 0;
        return len;
    }
    const char *colon = memchr(data, ':', len);
    if (!colon)
        return len;
    char *name = strndup(data, (size_t)(colon - data));
    const char *v = colon + 1, *end = data + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
        end--;
    char *value = strndup(v, (size_t)(end - v));
    pb_resp_add_header(c->resp, name, value);
    free(name);
    free(value);
    return len;
}

int pb_egress_send(struct pb_egress *e, struct pb_http_request *req, const char *base_url,
                   struct pb_http_response **resp, struct pb_egress_result *res)
{
    memset(res, 0, sizeof *res);
    *resp = NULL;
    char *url = pb_req_full_url(req, base_url);
    if (strncasecmp(url, "https://", 8) != 0 && strncasecmp(url, "http://", 7) != 0) {
        res->fail = PB_EGRESS_BAD_URL;
        snprintf(res->message, sizeof res->message, "not an http(s) URL");
        free(url);
        return -1;
    }
    CURL *c = curl_easy_init();
    struct pb_egress_policy pol;
    pb_egress_setup_handle(e, c, &pol);
    size_t body_len = 0;
    const char *body = pb_req_body(req, &body_len);
    struct curl_slist *hdrs = NULL;
    for (size_t i = 0; i < req->n_headers; i++) {
        char *line = pb_xasprintf("%s: %s", req->headers[i].name, req->headers[i].value);
        hdrs = curl_slist_append(hdrs, line);
        free(line);
    }
    if (req->content_type && !pb_req_header(req, "Content-Type")) {
        char *line = pb_xasprintf("Content-Type: %s", req->content_type);
        hdrs = curl_slist_append(hdrs, line);
        free(line);
    }
    hdrs = curl_slist_append(hdrs, "Expect:");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, req->method);
    if (strcmp(req->method, "HEAD") == 0)
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    struct collect col = {.resp = pb_resp_new(0), .max = PB_EGRESS_MAX_BUFFERED};
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &col);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &col);
    int64_t t0 = pb_mono_ms();
    CURLcode rc = curl_easy_perform(c);
    res->duration_ms = (long)(pb_mono_ms() - t0);
    res->bytes_out = body_len;
    res->bytes_in = col.resp->body_len;
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    char *host = NULL;
    CURLU *u = curl_url();
    if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK)
        curl_url_get(u, CURLUPART_HOST, &host, 0);
    curl_url_cleanup(u);
    int ret = 0;
    if (rc != CURLE_OK) {
        ret = -1;
        if (pol.hit) {
            res->fail = PB_EGRESS_POLICY;
            snprintf(res->message, sizeof res->message,
                     "%s resolves to a private or loopback address and egress.allow_private is false",
                     host ? host : "host");
        } else if (col.too_large) {
            res->fail = PB_EGRESS_TOO_LARGE;
            snprintf(res->message, sizeof res->message, "response from %s is larger than %ld bytes",
                     host ? host : "host", PB_EGRESS_MAX_BUFFERED);
        } else if (rc == CURLE_OPERATION_TIMEDOUT) {
            res->fail = PB_EGRESS_TIMEOUT;
            snprintf(res->message, sizeof res->message, "%s did not answer within %ld ms",
                     host ? host : "host", e->timeout_ms);
        } else {
            res->fail = PB_EGRESS_NETWORK;
            snprintf(res->message, sizeof res->message, "%s: %s", host ? host : "host",
                     curl_easy_strerror(rc));
        }
        pb_resp_free(col.resp);
    } else {
        col.resp->status = (int)status;
        *resp = col.resp;
    }
    curl_free(host);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(c);
    free(url);
    return ret;
}
