/* The store: the only way the core reaches persistent state. No SQL lives
 * outside the store's own files (store_*.c). Entities travel as jansson
 * objects shaped like their API representation. */
#ifndef PB_CORE_STORE_H
#define PB_CORE_STORE_H
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

typedef struct pb_store pb_store;

enum pb_store_rc {
    PB_STORE_OK = 0,
    PB_STORE_ERR = -1,       /* I/O or database failure (detail logged) */
    PB_STORE_NOTFOUND = -2,
    PB_STORE_CONFLICT = -3   /* a unique constraint would be broken */
};

/* Opens "sqlite:PATH" (PATH created with its directory if absent), applies
 * pending numbered migrations in one transaction each. */
int pb_store_open(const char *url, pb_store **out, char *err, size_t err_len);
void pb_store_close(pb_store *st);
/* 0 when the store answers a trivial query. */
int pb_store_ping(pb_store *st);
/* Highest applied migration number. */
int pb_store_schema_version(pb_store *st);

/* Projects: {"id", "name", "createTime"} (createTime RFC 3339 UTC). */
int pb_store_project_create(pb_store *st, const char *id, const char *name, json_t **out);
/* Finds by id first, then by name. *out is a new reference. */
int pb_store_project_get(pb_store *st, const char *id_or_name, json_t **out);
/* *out: new array of projects ordered by createTime. */
int pb_store_project_list(pb_store *st, json_t **out);

/* API keys are stored only as keyed hashes (hex). `prefix` is a short
 * non-secret display prefix. */
int pb_store_api_key_add(pb_store *st, const char *key_id, const char *project_id,
                         const char *hash_hex, const char *prefix);
/* Writes the owning project id into project_id_out (size >= 64). */
int pb_store_api_key_lookup(pb_store *st, const char *hash_hex, char *project_id_out,
                            size_t out_len);
/* Creates a project and its first API key in one transaction. */
int pb_store_project_create_with_key(pb_store *st, const char *id, const char *name,
                                     const char *key_id, const char *hash_hex,
                                     const char *prefix, json_t **out);
/* Added with the SQLite store. */
/* Highest migration this build knows for st's backend; after a successful
 * open, pb_store_schema_version() equals it. */
int pb_store_schema_latest(pb_store *st);
/* Where database failures are reported (the operation and the database's
 * message; never bound values). Default, or fn == NULL: one JSON line on
 * stderr. Set once at startup, before stores are used from other threads. */
typedef void (*pb_store_log_fn)(const char *msg);
void pb_store_set_log(pb_store_log_fn fn);
#endif
