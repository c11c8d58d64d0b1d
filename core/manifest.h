/* amp.yaml: the project manifest (SPEC §4), parsed with libyaml into normalized JSON.
 *
 * Output shape (keys in this order; optional keys omitted when absent):
 *   {"specVersion": "1.0.0",
 *    "integrations": [{"name", "provider", "displayName"?,
 *      "proxy": {"enabled": bool},                         default {"enabled": false}
 *      "write": {"objects": [{"objectName", "inheritMapping": bool}]},   default {"objects": []}
 *      "read":  {"objects": [{"objectName", "destination"?, "schedule"?,
 *                             "requiredFields": [FIELD], "optionalFields": [FIELD],
 *                             "delivery"?, "backfill"?}]}}]}             default {"objects": []}
 *   FIELD = {"fieldName"?, "mapToName"?, "mapToDisplayName"?} with fieldName or mapToName;
 *   the short form "- email" is {"fieldName": "email"}. delivery and backfill are kept as
 *   generic JSON (YAML core schema: null, booleans, integers, floats, strings).
 *
 * Anchors, aliases and "<<" merge keys work as in YAML; what they expand to is bounded,
 * as are the input size and the nesting depth. */
#ifndef PB_CORE_MANIFEST_H
#define PB_CORE_MANIFEST_H
#include <stddef.h>
#include <jansson.h>

#define PB_MANIFEST_MAX_BYTES (1024 * 1024) /* larger input is refused */
#define PB_MANIFEST_MAX_DEPTH 64            /* nested mappings/sequences, aliases included */
#define PB_MANIFEST_NAME_MAX 64             /* integration names: [A-Za-z0-9][A-Za-z0-9_-]{0,63} */

/* Parses an amp.yaml manifest. `source` names it in messages ("amp.yaml" or a path).
 * provider_ok (may be NULL) is asked for each integration's provider; when it returns 0 the
 * parse fails with "<source>:L:C: provider 'x' is not enabled in plugboard.yaml".
 * On success returns 0 and *out is a new reference; on failure returns -1, *out NULL, err
 * holds one line "<source>:LINE:COL: message" and *line and *col (may be NULL) get the position
 * (1-based). err may be NULL when err_len is 0. */
int pb_manifest_parse(const char *text, size_t len, const char *source,
                      int (*provider_ok)(const char *provider, void *ctx), void *ctx,
                      json_t **out, char *err, size_t err_len, int *line, int *col);
#endif
