/* Fuzzes the proxy's path checks (core/proxy.h). The first byte picks a
 * provider base URL, the rest is the caller's path, with an optional
 * "?query" that is appended unchecked, as the proxy does with the raw
 * query. Invariant: whenever pb_proxy_check_target accepts the path and
 * pb_proxy_join_url returns a URL, libcurl parses that URL to the base's
 * scheme, host and port, with no user info, a path under the base's path
 * (dot-segments resolved) and no CR, LF or NUL in it. */
#include "fuzz.h"

#include <curl/curl.h>
#include <strings.h>

#include "proxy.h"

static const char *const bases[] = {
    "https://api.hubapi.com",
    "https://acme.my.salesforce.com",
    "https://api.example.com/v3",
    "http://127.0.0.1:8443/base/path",
    "https://[::1]:9443/x",
    "http://localhost:8080",
};
#define N_BASES (sizeof bases / sizeof bases[0])

struct parts {
    char *scheme, *host, *port, *path, *user, *password;
};

static void parts_free(struct parts *p)
{
    curl_free(p->scheme);
    curl_free(p->host);
    curl_free(p->port);
    curl_free(p->path);
    curl_free(p->user);
    curl_free(p->password);
    memset(p, 0, sizeof *p);
}

static int parse(const char *url, unsigned flags, struct parts *p)
{
    CURLU *u = curl_url();
    memset(p, 0, sizeof *p);
    int ok = u && curl_url_set(u, CURLUPART_URL, url, flags) == CURLUE_OK &&
             curl_url_get(u, CURLUPART_SCHEME, &p->scheme, 0) == CURLUE_OK &&
             curl_url_get(u, CURLUPART_HOST, &p->host, 0) == CURLUE_OK &&
             curl_url_get(u, CURLUPART_PORT, &p->port, CURLU_DEFAULT_PORT) == CURLUE_OK &&
             curl_url_get(u, CURLUPART_PATH, &p->path, 0) == CURLUE_OK;
    if (ok) {
        curl_url_get(u, CURLUPART_USER, &p->user, 0);
        curl_url_get(u, CURLUPART_PASSWORD, &p->password, 0);
    }
    curl_url_cleanup(u);
    return ok ? 0 : -1;
}

/* The base path ("" for "/") the joined path must stay under. */
static int under(const char *path, const char *base_path)
{
    size_t n = strlen(base_path);
    while (n && base_path[n - 1] == '/')
        n--;
    return strncmp(path, base_path, n) == 0 && (path[n] == '/' || path[n] == '\0');
}

static void check_url(const char *base, const char *url)
{
    static const unsigned flag_sets[] = {0, CURLU_PATH_AS_IS,
                                         CURLU_NON_SUPPORT_SCHEME | CURLU_PATH_AS_IS};
    struct parts b, u;
    FUZZ_CHECK(parse(base, 0, &b) == 0);
    FUZZ_CHECK(strpbrk(url, "\r\n") == NULL);
    for (size_t i = 0; i < sizeof flag_sets / sizeof flag_sets[0]; i++) {
        if (parse(url, flag_sets[i], &u) != 0) {
            fprintf(stderr, "joined URL does not parse: %s\n", url);
            abort();
        }
        if (strcasecmp(u.scheme, b.scheme) != 0 || strcasecmp(u.host, b.host) != 0 ||
            strcmp(u.port, b.port) != 0 || u.user || u.password) {
            fprintf(stderr, "joined URL leaves %s://%s:%s: %s -> %s://%s:%s\n", b.scheme,
                    b.host, b.port, url, u.scheme, u.host, u.port);
            abort();
        }
        FUZZ_CHECK(strpbrk(u.path, "\r\n") == NULL);
        if (!(flag_sets[i] & CURLU_PATH_AS_IS) && !under(u.path, b.path)) {
            fprintf(stderr, "joined URL leaves the base path %s: %s -> %s\n", b.path, url,
                    u.path);
            abort();
        }
        parts_free(&u);
    }
    parts_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *base = bases[data[0] % N_BASES];
    /* Paths are C strings: what follows a NUL never reaches the checks. */
    char *target = fuzz_strndup(data + 1, size - 1);
    char *q = strchr(target, '?');
    /* The request line carries no space, CR or LF in its query. */
    if (q && strpbrk(q, " \r\n"))
        q = NULL;
    if (q)
        *q = '\0';
    const char *why = pb_proxy_check_target(target);
    if (!why) {
        if (q)
            *q = '?';
        const char *why2 = NULL;
        char *url = pb_proxy_join_url(base, target, &why2);
        if (url) {
            FUZZ_CHECK(strncmp(url, base, strlen(base)) == 0);
            check_url(base, url);
            free(url);
        } else {
            FUZZ_CHECK(why2 != NULL);
        }
    }
    free(target);
    return 0;
}
