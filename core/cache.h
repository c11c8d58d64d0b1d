/* Read-through caches for what every proxied call looks up (an API key's
 * project, a project by id or name, an installation with its
 * integration), so the hot path does not touch the store. Everything is
 * dropped when the store's generation moves. */
#ifndef PB_CORE_CACHE_H
#define PB_CORE_CACHE_H
#include <jansson.h>
#include "store.h"

struct pb_cache;

struct pb_cache *pb_cache_new(pb_store *st);
void pb_cache_free(struct pb_cache *c);

/* The project id an API key belongs to: 0, PB_STORE_NOTFOUND for an
 * unknown key (never cached), PB_STORE_ERR when the store failed. */
int pb_cache_key_project(struct pb_cache *c, const char *api_key, char *project_id, size_t len);
/* A project by id or name (new reference), as pb_store_project_get. */
int pb_cache_project(struct pb_cache *c, const char *id_or_name, json_t **out);
/* An installation by id, and its integration (new references). */
int pb_cache_installation(struct pb_cache *c, const char *project_id, const char *inst_id,
                          json_t **inst, json_t **integration);
/* An installation by integration name (or id) and group ref. On
 * PB_STORE_NOTFOUND, *missing says what: 1 the integration, 2 the
 * installation. */
int pb_cache_installation_by_group(struct pb_cache *c, const char *project_id,
                                   const char *integration_name, const char *group_ref,
                                   json_t **inst, json_t **integration, int *missing);
#endif
