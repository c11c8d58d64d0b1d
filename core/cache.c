#include "cache.h"
#include "secrets.h"
#include "util.h"
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define CACHE_MAX 20000 /* entries; beyond it the cache starts over */

struct pb_cache {
    pb_store *store;
    pthread_mutex_t mu;
    json_t *map;        /* key -> cached value */
    uint64_t generation;
};

struct pb_cache *pb_cache_new(pb_store *st)
{
    struct pb_cache *c = pb_xcalloc(1, sizeof *c);
    c->store = st;
    c->map = json_object();
    pthread_mutex_init(&c->mu, NULL);
    c->generation = pb_store_generation(st);
    return c;
}

void pb_cache_free(struct pb_cache *c)
{
    if (!c)
        return;
    json_decref(c->map);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* A new reference to the cached value, or NULL. */
static json_t *get(struct pb_cache *c, const char *key)
{
    uint64_t gen = pb_store_generation(c->store);
    pthread_mutex_lock(&c->mu);
    if (gen != c->generation) {
        json_object_clear(c->map);
        c->generation = gen;
    }
    json_t *v = json_incref(json_object_get(c->map, key));
    pthread_mutex_unlock(&c->mu);
    return v;
}

/* Stores value (borrowed) under key, unless the store changed since
 * `gen` was read (then the value may already be stale). */
static void put(struct pb_cache *c, const char *key, json_t *value, uint64_t gen)
{
    pthread_mutex_lock(&c->mu);
    if (gen == c->generation) {
        if (json_object_size(c->map) >= CACHE_MAX)
            json_object_clear(c->map);
        json_object_set(c->map, key, value);
    }
    pthread_mutex_unlock(&c->mu);
}

int pb_cache_key_project(struct pb_cache *c, const char *api_key, char *project_id, size_t len)
{
    char hash[65], key[80];
    if (!api_key || !*api_key || strlen(api_key) > 256)
        return PB_STORE_NOTFOUND;
    pb_key_hash(api_key, hash);
    if (!hash[0])
        return PB_STORE_ERR;
    snprintf(key, sizeof key, "k:%s", hash);
    json_t *v = get(c, key);
    if (!v) {
        uint64_t gen = pb_store_generation(c->store);
        char pid[64];
        int rc = pb_store_api_key_lookup(c->store, hash, pid, sizeof pid);
        if (rc != 0)
            return rc;
        v = json_string(pid);
        put(c, key, v, gen);
    }
    snprintf(project_id, len, "%s", json_string_value(v));
    json_decref(v);
    return 0;
}

int pb_cache_project(struct pb_cache *c, const char *id_or_name, json_t **out)
{
    char *key = pb_xasprintf("p:%s", id_or_name);
    json_t *v = get(c, key);
    int rc = 0;
    if (!v) {
        uint64_t gen = pb_store_generation(c->store);
        rc = pb_store_project_get(c->store, id_or_name, &v);
        if (rc == 0)
            put(c, key, v, gen);
    }
    free(key);
    *out = v;
    return rc;
}

/* Caches {"inst": ..., "integration": ...} pairs. */
static int pair(struct pb_cache *c, const char *key, json_t *v, json_t **inst, json_t **integ)
{
    *inst = json_incref(json_object_get(v, "inst"));
    *integ = json_incref(json_object_get(v, "integration"));
    json_decref(v);
    (void)c;
    (void)key;
    return 0;
}

int pb_cache_installation(struct pb_cache *c, const char *project_id, const char *inst_id,
                          json_t **inst, json_t **integration)
{
    char *key = pb_xasprintf("i:%s:%s", project_id, inst_id);
    json_t *v = get(c, key);
    if (!v) {
        uint64_t gen = pb_store_generation(c->store);
        json_t *i = NULL, *g = NULL;
        int rc = pb_store_installation_get(c->store, project_id, inst_id, &i);
        if (rc == 0)
            rc = pb_store_integration_get(c->store, project_id,
                                          json_string_value(json_object_get(i, "integrationId")), &g);
        if (rc != 0) {
            json_decref(i);
            free(key);
            return rc;
        }
        v = json_pack("{s:o, s:o}", "inst", i, "integration", g);
        put(c, key, v, gen);
    }
    free(key);
    return pair(c, NULL, v, inst, integration);
}

int pb_cache_installation_by_group(struct pb_cache *c, const char *project_id,
                                   const char *integration, const char *group_ref,
                                   json_t **inst, json_t **integ_out, int *missing)
{
    *missing = 0;
    /* Names and refs cannot contain NUL; '\n' separates them safely. */
    char *key = pb_xasprintf("g:%s\n%s\n%s", project_id, integration, group_ref);
    json_t *v = get(c, key);
    if (!v) {
        uint64_t gen = pb_store_generation(c->store);
        json_t *i = NULL, *g = NULL;
        int rc = pb_store_integration_get(c->store, project_id, integration, &g);
        if (rc == 0)
            rc = pb_store_installation_find(c->store, project_id,
                                            json_string_value(json_object_get(g, "id")), group_ref,
                                            &i);
        if (rc != 0) {
            /* Tell "no such integration" from "no such installation". */
            *missing = g ? 2 : 1;
            json_decref(g);
            free(key);
            return rc;
        }
        v = json_pack("{s:o, s:o}", "inst", i, "integration", g);
        put(c, key, v, gen);
    }
    free(key);
    return pair(c, NULL, v, inst, integ_out);
}
