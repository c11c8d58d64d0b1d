/* A fixed number of HTTP requests, at most C in flight, on loopback; one JSON
 * line with each request's latency percentiles and the answers' statuses.
 * scripts/bench uses it where a count matters more than a duration (500
 * concurrent calls with an expired token, 10,000 auto-batched writes).
 *
 *   burst -n N -c C [-X METHOD] [-H "Name: value"]... [-d BODY|@FILE] URL
 *
 * "@N@" in the body becomes the request's number (unique records). Each
 * request has its own connection when C >= N, so all C start together. */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct req {
    CURL *h;
    char *body;
    double start;
    long status;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t discard(char *p, size_t s, size_t n, void *u)
{
    (void)p;
    (void)u;
    return s * n;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    if (b)
        b[n] = '\0';
    fclose(f);
    return b;
}

/* The body with each "@N@" replaced by i. */
static char *body_for(const char *tmpl, long i)
{
    char num[32];
    int nl = snprintf(num, sizeof num, "%ld", i);
    size_t cap = strlen(tmpl) + 1, count = 0;
    for (const char *p = tmpl; (p = strstr(p, "@N@")); p += 3)
        count++;
    cap += count * (size_t)nl;
    char *out = malloc(cap), *o = out;
    for (const char *p = tmpl; *p;) {
        if (strncmp(p, "@N@", 3) == 0) {
            memcpy(o, num, (size_t)nl);
            o += nl;
            p += 3;
        } else {
            *o++ = *p++;
        }
    }
    *o = '\0';
    return out;
}

static double pct(const double *v, long n, double p)
{
    if (n == 0)
        return 0;
    long i = (long)(p / 100.0 * (double)(n - 1) + 0.5);
    return v[i];
}

int main(int argc, char **argv)
{
    long n = 1, c = 1;
    const char *method = NULL, *url = NULL;
    char *body = NULL;
    struct curl_slist *hdrs = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-n") == 0 && i + 1 < argc)
            n = atol(argv[++i]);
        else if (strcmp(argv[i], "-c") == 0 && i + 1 < argc)
            c = atol(argv[++i]);
        else if (strcmp(argv[i], "-X") == 0 && i + 1 < argc)
            method = argv[++i];
        else if (strcmp(argv[i], "-H") == 0 && i + 1 < argc)
            hdrs = curl_slist_append(hdrs, argv[++i]);
        else if (strcmp(argv[i], "-d") == 0 && i + 1 < argc) {
            const char *d = argv[++i];
            body = d[0] == '@' ? read_file(d + 1) : strdup(d);
            if (!body) {
                fprintf(stderr, "burst: cannot read %s\n", d + 1);
                return 2;
            }
        } else if (argv[i][0] != '-' && !url)
            url = argv[i];
        else {
            fprintf(stderr, "usage: burst -n N -c C [-X M] [-H h]... [-d BODY|@FILE] URL\n");
            return 2;
        }
    }
    if (!url || n < 1 || c < 1)
        return 2;
    if (body)
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    hdrs = curl_slist_append(hdrs, "Expect:");
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURLM *m = curl_multi_init();
    curl_multi_setopt(m, CURLMOPT_MAX_TOTAL_CONNECTIONS, c);
    curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, c);
    struct req *rs = calloc((size_t)n, sizeof *rs);
    double *lat = calloc((size_t)n, sizeof *lat);
    long next = 0, done = 0, nlat = 0, in_flight = 0;
    long statuses[6] = {0}; /* 0 (no answer), 1xx..5xx */
    double t0 = now_s();
    while (done < n) {
        while (next < n && in_flight < c) {
            struct req *r = &rs[next];
            r->h = curl_easy_init();
            curl_easy_setopt(r->h, CURLOPT_URL, url);
            curl_easy_setopt(r->h, CURLOPT_HTTPHEADER, hdrs);
            curl_easy_setopt(r->h, CURLOPT_WRITEFUNCTION, discard);
            curl_easy_setopt(r->h, CURLOPT_PRIVATE, r);
            curl_easy_setopt(r->h, CURLOPT_TIMEOUT, 60L);
            curl_easy_setopt(r->h, CURLOPT_NOSIGNAL, 1L);
            if (body) {
                r->body = body_for(body, next);
                curl_easy_setopt(r->h, CURLOPT_POSTFIELDS, r->body);
            }
            if (method)
                curl_easy_setopt(r->h, CURLOPT_CUSTOMREQUEST, method);
            r->start = now_s();
            curl_multi_add_handle(m, r->h);
            next++;
            in_flight++;
        }
        int running;
        curl_multi_perform(m, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left))) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            struct req *r;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
            double t = now_s() - r->start;
            curl_easy_getinfo(r->h, CURLINFO_RESPONSE_CODE, &r->status);
            long k = msg->data.result == CURLE_OK ? r->status / 100 : 0;
            statuses[k >= 1 && k <= 5 ? k : 0]++;
            lat[nlat++] = t;
            curl_multi_remove_handle(m, r->h);
            curl_easy_cleanup(r->h);
            free(r->body);
            r->h = NULL;
            done++;
            in_flight--;
        }
        if (done < n)
            curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    double wall = now_s() - t0;
    qsort(lat, (size_t)nlat, sizeof *lat, cmp_double);
    printf("{\"n\":%ld,\"c\":%ld,\"wall_ms\":%.3f,\"rps\":%.1f,\"p50_ms\":%.3f,\"p90_ms\":%.3f,"
           "\"p99_ms\":%.3f,\"max_ms\":%.3f,\"s0\":%ld,\"s2xx\":%ld,\"s3xx\":%ld,\"s4xx\":%ld,"
           "\"s5xx\":%ld}\n",
           n, c, wall * 1e3, (double)n / wall, pct(lat, nlat, 50) * 1e3, pct(lat, nlat, 90) * 1e3,
           pct(lat, nlat, 99) * 1e3, nlat ? lat[nlat - 1] * 1e3 : 0, statuses[0], statuses[2],
           statuses[3], statuses[4], statuses[5]);
    free(lat);
    free(rs);
    free(body);
    curl_slist_free_all(hdrs);
    curl_multi_cleanup(m);
    curl_global_cleanup();
    return statuses[0] ? 1 : 0;
}
