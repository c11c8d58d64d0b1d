/* The control plane's logic, shared by the HTTP routes and the CLI:
 * projects, API keys, manifests, connections, installations, OAuth. Each
 * function returns 0 with *out set (a new reference), or -1 with the
 * problem filled. */
#ifndef PB_CORE_CONTROL_H
#define PB_CORE_CONTROL_H
#include <jansson.h>
#include "problem.h"

struct pb_app;

/* 0 when `name` may name a project. */
int pb_ctl_project_name_check(const char *name, struct pb_problem *p);
/* {"id","name","createTime","apiKey"}: the key appears only here. */
int pb_ctl_project_create(struct pb_app *app, const char *name, json_t **out,
                          struct pb_problem *p);
/* {"id","projectId","prefix","apiKey","createTime"}. */
int pb_ctl_api_key_create(struct pb_app *app, const char *project_id, json_t **out,
                          struct pb_problem *p);
/* The project named by id or name, provided it is `key_project` (any other
 * project answers 404 as if it did not exist). */
int pb_ctl_project_resolve(struct pb_app *app, const char *id_or_name, const char *key_project,
                           json_t **out, struct pb_problem *p);
/* The project an API key belongs to, into project_id (>= 64 bytes). */
int pb_ctl_authenticate(struct pb_app *app, const char *api_key, char *project_id, size_t len);

/* PUT .../manifest: {"integrations": [...]} after creating or updating. */
int pb_ctl_manifest_apply(struct pb_app *app, const char *project_id, const char *text,
                          size_t len, const char *source, json_t **out, struct pb_problem *p);
int pb_ctl_integration_get(struct pb_app *app, const char *project_id, const char *id_or_name,
                           json_t **out, struct pb_problem *p);

/* POST .../connections:generate. */
int pb_ctl_connection_generate(struct pb_app *app, const char *project_id, const json_t *body,
                               json_t **out, struct pb_problem *p);

int pb_ctl_installation_create(struct pb_app *app, const char *project_id,
                               const char *integration, const json_t *body, json_t **out,
                               struct pb_problem *p);
int pb_ctl_installation_patch(struct pb_app *app, const char *project_id,
                              const char *integration, const char *installation,
                              const json_t *body, json_t **out, struct pb_problem *p);
int pb_ctl_config_content_patch(struct pb_app *app, const char *project_id,
                                const char *integration, const char *object,
                                const json_t *body, json_t **out, struct pb_problem *p);
/* The installation `installation` of integration `integration` (id or
 * name) in the project; 404 when any of them is not there. */
int pb_ctl_installation_get(struct pb_app *app, const char *project_id, const char *integration,
                            const char *installation, json_t **integration_out, json_t **out,
                            struct pb_problem *p);

/* POST /v1/oauth-connect: the provider's authorize URL (malloc'd). */
int pb_ctl_oauth_connect(struct pb_app *app, const char *project_id, const json_t *body,
                         char **url_out, struct pb_problem *p);
/* GET /callbacks/v1/oauth: exchanges the code and stores the connection;
 * *out is the connection. */
int pb_ctl_oauth_callback(struct pb_app *app, const char *code, const char *state,
                          const char *provider_error, json_t **out, struct pb_problem *p);

/* Unix ms from an RFC 3339 timestamp, -1 when malformed. */
int64_t pb_parse_rfc3339(const char *s);
/* Applies RFC 6902 add/remove/replace operations to a copy of doc. On
 * failure returns NULL with the problem naming the operation. */
json_t *pb_json_patch(const json_t *doc, const json_t *ops, struct pb_problem *p);
#endif
