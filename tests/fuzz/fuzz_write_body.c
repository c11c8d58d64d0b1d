/* Fuzzes what a Write API body (SPEC.md §3) reaches without a store: the
 * server's JSON parse (JSON_REJECT_DUPLICATES, as core/server.c), RFC 3339
 * timestamps (pb_parse_rfc3339) on every string in the body and on the raw
 * input, and JSON Patch (pb_json_patch) of the record by the body's
 * "changes", or by operations built from the body. */
#include "fuzz.h"

#include "patch_check.h"
#include "util.h"

static void check_time(const char *s)
{
    int64_t ms = pb_parse_rfc3339(s);
    /* What parsed prints back as a timestamp that parses to the same second
     * (within the four-digit years the format allows). */
    if (ms >= 0 && ms < 253402300800000LL) {
        char buf[64];
        pb_fmt_rfc3339(ms, buf, sizeof buf);
        int64_t again = pb_parse_rfc3339(buf);
        FUZZ_CHECK(again >= 0 && again / 1000 == ms / 1000);
    }
}

static void walk(const json_t *v, int depth)
{
    if (depth > 64)
        return;
    if (json_is_string(v)) {
        check_time(json_string_value(v));
    } else if (json_is_object(v)) {
        const char *k;
        json_t *x;
        json_object_foreach((json_t *)v, k, x) {
            check_time(k);
            walk(x, depth + 1);
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) walk(x, depth + 1);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = fuzz_strndup(data, size);
    check_time(s);
    free(s);

    json_error_t e;
    json_t *body = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &e);
    if (!body)
        return 0;
    walk(body, 0);
    json_t *record = json_object_get(body, "record");
    json_t *changes = json_object_get(body, "changes");
    if (changes)
        patch_check(record ? record : body, changes);
    /* Every key of the record added, replaced and removed again. */
    if (json_is_object(record)) {
        json_t *ops = json_array();
        const char *k;
        json_t *v;
        json_object_foreach(record, k, v) {
            char *pk = pb_xasprintf("/%s", k);
            json_t *a = json_pack("{s:s, s:s, s:O}", "op", "add", "path", pk, "value", v);
            json_t *r = json_pack("{s:s, s:s, s:O}", "op", "replace", "path", pk, "value", body);
            json_t *d = json_pack("{s:s, s:s}", "op", "remove", "path", pk);
            free(pk);
            if (a)
                json_array_append_new(ops, a);
            if (r)
                json_array_append_new(ops, r);
            if (d)
                json_array_append_new(ops, d);
        }
        patch_check(body, ops);
        json_decref(ops);
    }
    json_decref(body);
    return 0;
}
