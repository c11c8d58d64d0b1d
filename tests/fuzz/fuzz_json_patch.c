/* Fuzzes RFC 6902 patching (core/control.h pb_json_patch). The input is a
 * JSON document followed by a JSON array of operations:
 *   {"a": 1} [{"op": "add", "path": "/b", "value": 2}]
 * When it does not split that way, the whole input is tried as the
 * operations over a fixed document, and as a document with fixed ops. */
#include "fuzz.h"

#include "patch_check.h"

static const char base_doc[] =
    "{\"deletionSettings\": {\"enabled\": true}, \"fields\": [\"a\", \"b\", {\"c\": null}],"
    " \"a/b\": 1, \"m~n\": 2, \"\": 3}";
static const char base_ops[] =
    "[{\"op\": \"replace\", \"path\": \"/deletionSettings/enabled\", \"value\": false},"
    " {\"op\": \"add\", \"path\": \"/fields/-\", \"value\": {}},"
    " {\"op\": \"remove\", \"path\": \"/fields/0\"}]";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_error_t e;
    json_t *doc = json_loadb((const char *)data, size,
                             JSON_DECODE_ANY | JSON_DISABLE_EOF_CHECK, &e);
    if (doc) {
        size_t used = (size_t)e.position;
        if (used > size)
            used = size;
        json_t *ops = json_loadb((const char *)data + used, size - used, JSON_DECODE_ANY, NULL);
        if (ops) {
            patch_check(doc, ops);
            json_decref(ops);
        }
        json_t *fixed = json_loads(base_ops, 0, NULL);
        patch_check(doc, fixed);
        json_decref(fixed);
        json_t *bdoc = json_loads(base_doc, 0, NULL);
        patch_check(bdoc, doc);
        json_decref(bdoc);
        json_decref(doc);
    }
    /* NULL and odd documents. */
    json_t *ops = json_loadb((const char *)data, size, JSON_DECODE_ANY, NULL);
    if (ops) {
        struct pb_problem p = {0};
        json_t *r = pb_json_patch(NULL, ops, &p);
        json_decref(r);
        pb_problem_free(&p);
        json_decref(ops);
    }
    return 0;
}
