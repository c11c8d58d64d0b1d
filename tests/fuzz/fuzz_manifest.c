/* Fuzzes amp.yaml parsing (core/manifest.h pb_manifest_parse), in memory,
 * once without and once with a provider_ok callback. */
#include "fuzz.h"

#include "manifest.h"

static int provider_ok(const char *provider, void *ctx)
{
    int *calls = ctx;
    ++*calls;
    FUZZ_CHECK(provider != NULL);
    return strcmp(provider, "hubspot") == 0 || strcmp(provider, "salesforce") == 0;
}

static void check(const uint8_t *data, size_t size, int with_cb)
{
    json_t *out = (json_t *)1;
    char err[300];
    int line = -7, col = -7, calls = 0;
    int rc = pb_manifest_parse((const char *)data, size, "amp.yaml",
                               with_cb ? provider_ok : NULL, &calls, &out, err, sizeof err,
                               &line, &col);
    if (rc == 0) {
        FUZZ_CHECK(json_is_object(out));
        json_t *ints = json_object_get(out, "integrations");
        FUZZ_CHECK(json_is_array(ints));
        size_t i;
        json_t *in;
        json_array_foreach(ints, i, in) {
            FUZZ_CHECK(json_is_string(json_object_get(in, "name")));
            FUZZ_CHECK(json_is_string(json_object_get(in, "provider")));
        }
        if (with_cb)
            FUZZ_CHECK((size_t)calls >= json_array_size(ints));
        char *s = json_dumps(out, JSON_COMPACT);
        FUZZ_CHECK(s != NULL);
        free(s);
        json_decref(out);
    } else {
        FUZZ_CHECK(rc == -1 && out == NULL);
        FUZZ_CHECK(strncmp(err, "amp.yaml", 8) == 0);
        FUZZ_CHECK(strchr(err, '\n') == NULL);
        FUZZ_CHECK(line >= 1 && col >= 1);
    }
    /* err may be NULL when err_len is 0. */
    out = NULL;
    rc = pb_manifest_parse((const char *)data, size, "amp.yaml", with_cb ? provider_ok : NULL,
                           &calls, &out, NULL, 0, NULL, NULL);
    json_decref(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check(data, size, 0);
    check(data, size, 1);
    return 0;
}
