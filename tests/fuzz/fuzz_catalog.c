/* Fuzzes the generic plugin's providers.yaml catalog: the input is written
 * to a memfd and generic.so's init is given {catalog: /proc/self/fd/N,
 * entry: <the input's first top-level key, or "x">}. When init accepts the
 * entry, its templates are evaluated the way a call would: base_url,
 * apply_credentials, the OAuth slots and classify, for a few connections. */
#include "fuzz.h"

#include <ctype.h>
#include <sys/mman.h>
#include <unistd.h>

#include "log.h"
#include "plugin_load.h"

static struct fuzz_plugin generic;
static int fd = -1;
static char path[64];
static json_t *meta;

static int64_t fixed_clock(void)
{
    return 1767225600000LL; /* 2026-01-01T00:00:00Z */
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    pb_set_clock(fixed_clock);
    pb_log_setup("error", "json"); /* unsupported entries are warnings */
    fuzz_plugin_open("generic", &generic);
    fd = memfd_create("providers.yaml", MFD_CLOEXEC);
    if (fd < 0) {
        perror("fuzz_catalog: memfd_create");
        abort();
    }
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    meta = json_pack("{s:{s:s}, s:{s:s}, s:{s:s}}", "subdomain", "value", "acme", "region",
                     "value", "eu", "instance_url", "value", "https://acme.example.com");
    return 0;
}

/* The first top-level key: a line that starts with a name and a colon. */
static char *first_key(const uint8_t *data, size_t size)
{
    size_t i = 0;
    while (i < size) {
        size_t start = i, end;
        while (i < size && data[i] != '\n')
            i++;
        end = i++;
        if (start == end || isspace(data[start]) || data[start] == '#' || data[start] == '-')
            continue;
        size_t k = start;
        char quote = 0;
        if (data[k] == '"' || data[k] == '\'')
            quote = (char)data[k++];
        size_t ks = k;
        while (k < end && data[k] != ':' && (!quote || data[k] != quote))
            k++;
        if (k > ks && k < end)
            return fuzz_strndup(data + ks, k - ks);
    }
    return fuzz_strndup((const uint8_t *)"x", 1);
}

static void check_base_url(const char *url)
{
    FUZZ_CHECK(strncmp(url, "http://", 7) == 0 || strncmp(url, "https://", 8) == 0);
    for (const char *p = url; *p; p++)
        FUZZ_CHECK((unsigned char)*p > 0x20 && *p != 0x7f);
}

static void exercise(void *st)
{
    static const struct pb_credentials creds[] = {
        {.struct_size = sizeof creds[0], .auth_type = "api_key", .api_key = "k3y"},
        {.struct_size = sizeof creds[0], .auth_type = "oauth2", .access_token = "at",
         .refresh_token = "rt", .expires_at = 1767229200},
        {.struct_size = sizeof creds[0], .auth_type = "basic", .username = "u",
         .password = "p:w"},
        {.struct_size = sizeof creds[0], .auth_type = "oauth2_cc", .client_id = "cid",
         .client_secret = "cs", .scopes = "a b"},
        {.struct_size = sizeof creds[0], .auth_type = "none"},
    };
    const struct pb_plugin *vt = generic.vt;
    struct pb_error err;
    for (size_t i = 0; i < sizeof creds / sizeof creds[0]; i++) {
        struct pb_credentials c = creds[i];
        c.metadata = meta;
        char url[2048];
        pb_error_clear(&err);
        if (vt->base_url(st, &c, url, sizeof url, &err) == PB_OK)
            check_base_url(url);
        else
            FUZZ_CHECK(err.message[0] != '\0');
        struct pb_http_request *req = pb_req_new();
        pb_error_clear(&err);
        if (vt->apply_credentials(st, &c, req, &err) == PB_OK) {
            for (size_t h = 0; h < req->n_headers; h++)
                FUZZ_CHECK(!strpbrk(req->headers[h].name, "\r\n:") &&
                           !strpbrk(req->headers[h].value, "\r\n"));
        }
        pb_req_free(req);
        if (vt->build_token_refresh) {
            req = pb_req_new();
            pb_error_clear(&err);
            vt->build_token_refresh(st, &c, req, &err);
            size_t len;
            pb_req_body(req, &len);
            pb_req_free(req);
        }
    }
    struct pb_oauth_params op = {.struct_size = sizeof op,
                                 .redirect_uri = "http://127.0.0.1:8080/callbacks/v1/oauth",
                                 .state = "st_123",
                                 .scopes = "read write",
                                 .metadata = meta};
    if (vt->authorize_url) {
        char url[4096];
        pb_error_clear(&err);
        if (vt->authorize_url(st, &op, url, sizeof url, &err) == PB_OK)
            check_base_url(url);
    }
    if (vt->build_code_exchange) {
        struct pb_http_request *req = pb_req_new();
        pb_error_clear(&err);
        vt->build_code_exchange(st, &op, "c0de", req, &err);
        pb_req_free(req);
    }
    if (vt->classify) {
        static const char *const hdrs[][2] = {
            {"Retry-After", "30"},
            {"X-RateLimit-Reset", "1767225700"},
            {"x-ratelimit-remaining", "0"},
            {"RateLimit-Reset", "Thu, 01 Jan 2026 00:01:00 GMT"},
        };
        for (int status = 200; status <= 503; status += 101) {
            struct pb_http_response *resp = pb_resp_new(status == 402 ? 429 : status);
            for (size_t h = 0; h < sizeof hdrs / sizeof hdrs[0]; h++)
                pb_resp_add_header(resp, hdrs[h][0], hdrs[h][1]);
            struct pb_classification cl = {.struct_size = sizeof cl};
            vt->classify(st, resp, &cl);
            FUZZ_CHECK(cl.retry_at_ms >= 0);
            pb_resp_free(resp);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (fd < 0)
        LLVMFuzzerInitialize(NULL, NULL);
    if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != (ssize_t)size)
        abort();
    char *entry = first_key(data, size);
    json_t *opts = json_pack("{s:s, s:s}", "catalog", path, "entry", entry);
    void *st = NULL;
    struct pb_error err;
    int rc = fuzz_plugin_init(&generic, "fuzzed", opts, "/nonexistent", &st, &err);
    if (rc == PB_OK) {
        FUZZ_CHECK(st != NULL);
        exercise(st);
    } else {
        FUZZ_CHECK(st == NULL);
        FUZZ_CHECK(err.message[0] != '\0');
        if (strpbrk(err.message, "\r\n")) {
            fprintf(stderr, "init's message is not one line: %s\n", err.message);
            abort();
        }
    }
    generic.vt->fini(st);
    json_decref(opts);
    free(entry);
    return 0;
}
