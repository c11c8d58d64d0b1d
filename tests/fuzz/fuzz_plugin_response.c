/* Fuzzes how the hubspot and salesforce plugins read provider responses:
 * decode_write (create, update, delete), decode_batch (a fixed create and
 * update batch), parse_token_response and classify, all on one response
 * built from the input:
 *   bytes 0-1  status (big endian, modulo 1000)
 *   byte  2    number of headers (modulo 4), then per header:
 *              a byte picking its name (Retry-After, X-HubSpot-RateLimit-*),
 *              a length byte and that many value bytes
 *   the rest   the body.
 * Each result must have the shape the plugin ABI promises, since the write
 * engine relies on it. */
#include "fuzz.h"

#include "plugin_load.h"

static const char *const header_names[] = {
    "Retry-After",
    "X-HubSpot-RateLimit-Remaining",
    "X-HubSpot-RateLimit-Interval-Milliseconds",
    "X-HubSpot-RateLimit-Secondly-Remaining",
    "X-HubSpot-RateLimit-Max",
    "Content-Type",
};
#define N_HEADER_NAMES (sizeof header_names / sizeof header_names[0])

static const char *const plugin_names[] = {"hubspot", "salesforce"};
#define N_PLUGINS (sizeof plugin_names / sizeof plugin_names[0])

static struct fuzz_plugin plugins[N_PLUGINS];
static void *states[N_PLUGINS];
static json_t *create_items, *update_items;

static int64_t fixed_clock(void)
{
    return 1767225600000LL; /* 2026-01-01T00:00:00Z */
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    pb_set_clock(fixed_clock);
    json_t *opts = json_object();
    for (size_t i = 0; i < N_PLUGINS; i++) {
        struct pb_error err;
        fuzz_plugin_open(plugin_names[i], &plugins[i]);
        if (fuzz_plugin_init(&plugins[i], plugin_names[i], opts, ".", &states[i], &err) != 0) {
            fprintf(stderr, "fuzz: %s init: %s\n", plugin_names[i], err.message);
            abort();
        }
    }
    json_decref(opts);
    create_items = json_loads("[{\"record\": {\"email\": \"a@example.com\"}},"
                              " {\"record\": {\"email\": \"b@example.com\"}},"
                              " {\"record\": {}}]", 0, NULL);
    update_items = json_loads("[{\"id\": \"101\", \"record\": {\"email\": \"a@example.com\"}},"
                              " {\"id\": \"102\", \"record\": {}},"
                              " {\"id\": \"101\", \"record\": {\"x\": 1}}]", 0, NULL);
    if (!create_items || !update_items)
        abort();
    return 0;
}

/* {"success": bool, "recordId"?: str, "data"?: obj, "errors"?: [{"message": str}]} */
static void check_result(const json_t *r)
{
    FUZZ_CHECK(json_is_object(r));
    FUZZ_CHECK(json_is_boolean(json_object_get(r, "success")));
    json_t *id = json_object_get(r, "recordId");
    FUZZ_CHECK(!id || json_is_string(id));
    json_t *errors = json_object_get(r, "errors");
    FUZZ_CHECK(!errors || json_is_array(errors));
    size_t i;
    json_t *e;
    json_array_foreach(errors, i, e) FUZZ_CHECK(json_is_string(json_object_get(e, "message")));
    if (json_is_false(json_object_get(r, "success")))
        FUZZ_CHECK(json_array_size(errors) > 0);
}

static void check_error(int rc, const json_t *out, const struct pb_error *err)
{
    FUZZ_CHECK(rc < 0 && out == NULL);
    FUZZ_CHECK(err->message[0] != '\0');
}

static void run_plugin(size_t i, struct pb_http_response *resp)
{
    const struct pb_plugin *vt = plugins[i].vt;
    void *st = states[i];
    const char *object = i == 0 ? "contacts" : "Contact";
    struct pb_error err;
    json_t *out;
    int rc;

    if (vt->decode_write) {
        static const enum pb_write_type types[] = {PB_WRITE_CREATE, PB_WRITE_UPDATE,
                                                   PB_WRITE_DELETE};
        for (size_t t = 0; t < 3; t++) {
            json_t *record = json_pack("{s:s}", "email", "a@example.com");
            struct pb_write w = {.struct_size = sizeof w,
                                 .object = object,
                                 .type = types[t],
                                 .record_id = types[t] == PB_WRITE_CREATE ? NULL : "101",
                                 .record = types[t] == PB_WRITE_DELETE ? NULL : record};
            pb_error_clear(&err);
            out = NULL;
            rc = vt->decode_write(st, &w, resp, &out, &err);
            if (rc == PB_OK)
                check_result(out);
            else
                check_error(rc, out, &err);
            json_decref(out);
            json_decref(record);
        }
    }
    if (vt->decode_batch) {
        for (int t = 0; t < 2; t++) {
            json_t *items = t ? update_items : create_items;
            struct pb_batch b = {.struct_size = sizeof b,
                                 .object = object,
                                 .type = t ? PB_WRITE_UPDATE : PB_WRITE_CREATE,
                                 .items = items,
                                 .all_or_none = 0};
            pb_error_clear(&err);
            out = NULL;
            rc = vt->decode_batch(st, &b, resp, &out, &err);
            if (rc == PB_OK) {
                FUZZ_CHECK(json_is_array(out));
                FUZZ_CHECK(json_array_size(out) == json_array_size(items));
                size_t k;
                json_t *r;
                json_array_foreach(out, k, r) check_result(r);
            } else {
                check_error(rc, out, &err);
            }
            json_decref(out);
        }
    }
    if (vt->parse_token_response) {
        pb_error_clear(&err);
        out = NULL;
        rc = vt->parse_token_response(st, resp, &out, &err);
        if (rc == PB_OK) {
            FUZZ_CHECK(json_is_object(out));
            const char *at = json_string_value(json_object_get(out, "access_token"));
            FUZZ_CHECK(at && *at);
            json_t *rt = json_object_get(out, "refresh_token");
            FUZZ_CHECK(!rt || json_is_string(rt));
            json_t *ei = json_object_get(out, "expires_in");
            FUZZ_CHECK(!ei || json_is_integer(ei));
            json_t *meta = json_object_get(out, "metadata");
            FUZZ_CHECK(!meta || json_is_object(meta));
            const char *k;
            json_t *v;
            json_object_foreach(meta, k, v) FUZZ_CHECK(json_is_string(v));
        } else {
            check_error(rc, out, &err);
        }
        json_decref(out);
    }
    if (vt->classify) {
        /* The write engine's defaults first, as core/write.c does. */
        struct pb_classification cl = {.struct_size = sizeof cl};
        cl.retryable = resp->status == 429 || resp->status >= 500;
        cl.rate_limited = resp->status == 429;
        cl.auth_invalid = resp->status == 401;
        vt->classify(st, resp, &cl);
        FUZZ_CHECK(cl.struct_size == sizeof cl);
        FUZZ_CHECK(cl.retry_at_ms >= 0);
        FUZZ_CHECK(!cl.rate_limited || cl.retryable);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!create_items)
        LLVMFuzzerInitialize(NULL, NULL);
    if (size < 3)
        return 0;
    int status = ((data[0] << 8) | data[1]) % 1000;
    size_t nh = data[2] % 4, off = 3;
    struct pb_http_response *resp[N_PLUGINS];
    for (size_t i = 0; i < N_PLUGINS; i++)
        resp[i] = pb_resp_new(status);
    for (size_t h = 0; h < nh && off + 2 <= size; h++) {
        const char *name = header_names[data[off] % N_HEADER_NAMES];
        size_t len = data[off + 1];
        off += 2;
        if (len > size - off)
            len = size - off;
        char *value = fuzz_strndup(data + off, len);
        off += len;
        for (size_t i = 0; i < N_PLUGINS; i++)
            pb_resp_add_header(resp[i], name, value);
        free(value);
    }
    for (size_t i = 0; i < N_PLUGINS; i++) {
        pb_resp_set_body(resp[i], (const char *)data + off, size - off);
        run_plugin(i, resp[i]);
        pb_resp_free(resp[i]);
    }
    return 0;
}
