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
/* ---- Control plane ----------------------------------------------------
 * Every function scopes by project: an id from another project is
 * PB_STORE_NOTFOUND. Times in API shapes are RFC 3339 UTC strings; *_ms
 * arguments are unix milliseconds. *out values are new references. */

/* Bumped on every write to api_keys, integrations, connections or
 * installations, so in-memory caches know when to drop entries. */
uint64_t pb_store_generation(pb_store *st);

/* Creates or updates (matched by name) the project's integrations from a
 * parsed manifest's "integrations" array, in one transaction; integrations
 * absent from the array are kept. *out: the project's integrations. API
 * shape: {"id","projectId","name","provider","displayName"?,"proxy":{...},
 * "write":{...},"read":{...},"createTime","updateTime"}. */
int pb_store_integrations_apply(pb_store *st, const char *project_id, const json_t *integrations,
                                json_t **out);
int pb_store_integration_list(pb_store *st, const char *project_id, json_t **out);
int pb_store_integration_get(pb_store *st, const char *project_id, const char *id_or_name,
                             json_t **out);

/* conn: {"id","provider","groupRef","consumerRef"?,"authType",
 * "providerMetadata"?:{...},"scopes"?:[str],"expiresAt"?:ms}. sealed is
 * pb_secret_seal() of the credentials JSON. API shape (never secrets):
 * {"id","projectId","provider","groupRef","consumerRef"?,"authScheme",
 * "providerMetadata","scopes"?,"status","accessTokenExpiresAt"?,
 * "createTime","updateTime","version"}. */
int pb_store_connection_create(pb_store *st, const char *project_id, const json_t *conn,
                               const char *sealed, json_t **out);
/* sealed_out (may be NULL) gets a malloc'd copy of the sealed credentials. */
int pb_store_connection_get(pb_store *st, const char *project_id, const char *id, json_t **out,
                            char **sealed_out);
int pb_store_connection_list(pb_store *st, const char *project_id, const char *group_ref,
                             json_t **out);
/* PB_STORE_CONFLICT while an installation uses it. */
int pb_store_connection_delete(pb_store *st, const char *project_id, const char *id);
/* After a token refresh: new sealed credentials and expiry, metadata merged
 * (may be NULL), status back to "working", failures reset. Compare-and-set
 * on version: PB_STORE_CONFLICT when another writer got there first.
 * expires_at_ms 0 clears the expiry. */
int pb_store_connection_update_credentials(pb_store *st, const char *id,
                                           long long expected_version, const char *sealed,
                                           int64_t expires_at_ms, const json_t *metadata_merge,
                                           long long *new_version);
/* Records a failed refresh: failures + 1, refresh_retry_at, status. */
int pb_store_connection_refresh_failed(pb_store *st, const char *id, int64_t retry_at_ms,
                                       const char *status);

int pb_store_oauth_state_put(pb_store *st, const char *state, const char *project_id,
                             const json_t *payload, int64_t expires_at_ms);
/* Single use: removes the state and returns it. PB_STORE_NOTFOUND when
 * unknown, already used or expired (expired rows are removed too). */
int pb_store_oauth_state_take(pb_store *st, const char *state, int64_t now_ms,
                              char *project_id_out, size_t len, json_t **payload);

/* inst: {"id","integrationId","groupRef","connectionId"?,"config":{...}}.
 * PB_STORE_CONFLICT when the group already has an installation of that
 * integration; PB_STORE_NOTFOUND when the integration or connection is not
 * in this project. API shape: {"id","projectId","integrationId","groupRef",
 * "connectionId"?,"config":{...},"createTime","updateTime"}. */
int pb_store_installation_create(pb_store *st, const char *project_id, const json_t *inst,
                                 json_t **out);
int pb_store_installation_get(pb_store *st, const char *project_id, const char *id,
                              json_t **out);
int pb_store_installation_find(pb_store *st, const char *project_id, const char *integration_id,
                               const char *group_ref, json_t **out);
/* integration_id and group_ref filter when non-NULL; ordered by creation. */
int pb_store_installation_list(pb_store *st, const char *project_id, const char *integration_id,
                               const char *group_ref, json_t **out);
/* Replaces connection_id (NULL clears) and the whole config. */
int pb_store_installation_update(pb_store *st, const char *project_id, const char *id,
                                 const char *connection_id, const json_t *config, json_t **out);
int pb_store_installation_delete(pb_store *st, const char *project_id, const char *id);
/* ---- Proxy --------------------------------------------------------------- */

/* Appends activity records in one transaction. Each element:
 * {"time": ms, "projectId", "installationId"?, "provider"?, "method",
 * "path", "status"?: int (absent: no provider answer), "attempts",
 * "durationMs", "bytesIn", "bytesOut", "requestId", "error"?}. */
int pb_store_activity_append(pb_store *st, const json_t *records);
/* Newest first; installation_id filters when non-NULL; limit 1..1000.
 * Elements: {"id","time" (RFC 3339 with milliseconds),"projectId",
 * "installationId"?,"provider"?,"method","path","status"?,"attempts",
 * "durationMs","bytesIn","bytesOut","requestId","error"?}. */
int pb_store_activity_list(pb_store *st, const char *project_id, const char *installation_id,
                           int limit, json_t **out);

/* Throttle state of an installation (X-Amp-Rate-Limiter-Mode: throttle). */
int pb_store_rate_limit_set(pb_store *st, const char *installation_id,
                            int64_t blocked_until_ms, int attempts, int retryable);
/* PB_STORE_NOTFOUND when no state was recorded. */
int pb_store_rate_limit_get(pb_store *st, const char *installation_id,
                            int64_t *blocked_until_ms, int *attempts, int *retryable);
/* ---- Write API: operations and the auto-batch queue -----------------------
 * An operation is one write (or one batch). Synchronous writes are recorded
 * finished; asynchronous ones are durable work: in_progress with a
 * next_attempt_at, claimed by a worker, retried, finished. */

/* op: {"id","integrationId","installationId","status","result"?,
 * "metadata"?:{...},"request"?:{...},"nextAttemptAt"?:ms,"deadlineAt"?:ms}.
 * *out (may be NULL) gets the API shape. */
int pb_store_operation_create(pb_store *st, const char *project_id, const json_t *op,
                              json_t **out);
/* API shape: {"id","projectId","integrationId","installationId",
 * "actionType":"write","status","result"?,"metadata":{...,"retry":
 * {"attempts","lastAttempt"?}},"createTime","updateTime"}. */
int pb_store_operation_get(pb_store *st, const char *project_id, const char *id, json_t **out);
/* Newest first, page_size 1..100; page_token is what a previous page gave
 * as "nextPageToken" (opaque) or NULL. *out: {"operations":[...],
 * "nextPageToken"?}. A malformed token is PB_STORE_NOTFOUND. */
int pb_store_operation_list(pb_store *st, const char *project_id, const char *installation_id,
                            int page_size, const char *page_token, json_t **out);
/* Claims up to max due operations (in_progress, next_attempt_at <= now,
 * unclaimed or claim expired) for `owner` until claim_until_ms; an
 * auto-batch operation's queued writes move from 'open' to 'sending' in
 * the same transaction, so no later write joins it. *out: array of
 * {"id","projectId","integrationId","installationId","request":{...},
 * "attempts","deadlineAt"}. */
int pb_store_operation_claim(pb_store *st, const char *owner, int64_t now_ms,
                             int64_t claim_until_ms, int max, json_t **out);
/* Ends an operation: status "success" or "failure", result text, metadata
 * keys merged (successfulRecordIds, objects, errors...), attempts and the
 * last attempt time; claim and next attempt cleared. */
int pb_store_operation_finish(pb_store *st, const char *id, const char *status,
                              const char *result, const json_t *metadata, int attempts,
                              int64_t now_ms);
/* Releases the claim and schedules another attempt. */
int pb_store_operation_retry(pb_store *st, const char *id, int attempts,
                             int64_t next_attempt_ms, const char *last_error, int64_t now_ms);

/* Adds one asynchronous single-record write to the open bucket for
 * bucket_key (installation, object, type), in one transaction: when no
 * bucket is open (or the open one holds 100), a new operation is created
 * with id new_op_id, request {"kind":"autobatch","object","type"},
 * next_attempt_at = flush_at_ms and deadline_at = deadline_ms; the 100th
 * write makes its operation due now. op_id_out gets the operation the
 * write joined. */
int pb_store_queue_add(pb_store *st, const char *project_id, const char *integration_id,
                       const char *installation_id, const char *object, const char *write_type,
                       const json_t *record, const char *bucket_key, const char *new_op_id,
                       int64_t now_ms, int64_t flush_at_ms, int64_t deadline_ms,
                       char *op_id_out, size_t len);
/* The queued writes of an operation in arrival order: [{"id": int,
 * "record": {...}}]. */
int pb_store_queue_items(pb_store *st, const char *operation_id, json_t **out);
/* Start-up recovery: operations claimed by workers of an earlier run (a
 * process killed before it finished them) become due at now_ms instead of
 * when their claims expire; *released (may be NULL) gets how many. Call
 * before this process's workers claim anything. The embedded store is one
 * node's alone, so every claim in it is such a leftover. */
int pb_store_operation_release_claims(pb_store *st, int64_t now_ms, int *released);
/* Group commit: pb_store_operation_create, _claim, _finish, _retry and
 * pb_store_queue_add from concurrent callers share transactions; each
 * still returns only once the transaction holding its change is committed
 * (synchronous=FULL), and a call that fails leaves the others' changes in. */

/* Testing only (tests/test_store.c): not for the server. */
/* Write transactions committed on st's connection since it was opened. */
uint64_t pb_store_testing_commits(pb_store *st);
/* hold != 0: creates and queued writes wait, none taken, until called
 * again with 0 (so a test can gather a group of known members). */
void pb_store_testing_hold_commits(pb_store *st, int hold);
/* Creates and queued writes waiting to be taken into a group. */
int pb_store_testing_queued(pb_store *st);
#endif
