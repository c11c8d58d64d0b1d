/* pb_json_patch with the invariants its callers rely on; shared by the
 * json_patch and write_body targets. */
#ifndef PB_TESTS_FUZZ_PATCH_CHECK_H
#define PB_TESTS_FUZZ_PATCH_CHECK_H
#include "fuzz.h"

#include <jansson.h>

#include "control.h"
#include "problem.h"

/* doc and ops are borrowed and must come back unchanged. */
static inline void patch_check(const json_t *doc, const json_t *ops)
{
    json_t *doc0 = json_deep_copy(doc), *ops0 = json_deep_copy(ops);
    struct pb_problem p = {0};
    json_t *r = pb_json_patch(doc, ops, &p);
    if (r) {
        FUZZ_CHECK(p.status == 0);
        /* A copy (jansson shares only its null/true/false singletons). */
        FUZZ_CHECK(r != doc || !(json_is_object(doc) || json_is_array(doc)));
        char *s = json_dumps(r, JSON_COMPACT | JSON_ENCODE_ANY);
        FUZZ_CHECK(s != NULL);
        free(s);
        json_decref(r);
    } else {
        FUZZ_CHECK(p.status == 400);
        FUZZ_CHECK(p.detail[0] != '\0');
    }
    pb_problem_free(&p);
    FUZZ_CHECK(json_equal(doc, doc0));
    FUZZ_CHECK(json_equal(ops, ops0));
    json_decref(doc0);
    json_decref(ops0);
}
#endif
