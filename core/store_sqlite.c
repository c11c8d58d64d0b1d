/* The embedded SQLite store. All SQL of the embedded backend lives here.
 *
 * One connection per store, opened SQLITE_OPEN_FULLMUTEX, plus a store mutex
 * held for each call: the connection's own mutex makes single API calls
 * safe, the store mutex keeps a multi-statement transaction (and the error
 * message read after a failed step) from interleaving with another
 * thread's statements. SQLite admits one writer at a time anyway, and the
 * hot path does not come here (DESIGN.md principle 8).
 *
 * Prepared statements are cached per SQL text (prepare() / stmt_done()),
 * under the store mutex like everything else.
 *
 * Durability: WAL with synchronous=FULL, so a committed transaction (an
 * acknowledged asynchronous write) survives kill -9 and power loss.
 * The Write API's writes (operation create, claim, finish, retry, queued
 * writes) go through the group committer (gc_submit): concurrent callers
 * share one transaction and one fsync, and each still returns only after
 * the transaction holding its change committed.
 *
 * Schema conventions (see migration 1):
 *  - Times are INTEGER unix milliseconds, UTC, in columns named *_at (and
 *    activity.time, rate_limits.blocked_until_ms). The API shows them as
 *    RFC 3339 ("2026-11-26T12:00:00Z"); conversion happens here.
 *  - JSON documents are TEXT checked with json_valid() (jsonb on PostgreSQL).
 *  - Booleans are INTEGER 0/1.
 *  - Entity ids are TEXT made by pb_random_id(); append-only logs use
 *    INTEGER PRIMARY KEY, whose order is insertion order.
 *  - Rows that belong to a project carry project_id, and point at other
 *    project-owned rows through (project_id, id), so no row can reference
 *    another tenant's row.
 *  - Secrets are stored only sealed (connections.credentials_sealed,
 *    pb_secret_seal) or hashed (api_keys.key_hash, pb_key_hash).
 *  - Only features of SQLite >= 3.31 (configure's minimum): no STRICT
 *    tables, no RETURNING.
 */
#include "store.h"

#include "secrets.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Prepared-statement cache: open addressing over STMT_SLOTS slots keyed by
 * the SQL text; at most STMT_CACHE_MAX statements are kept (the store's SQL
 * is a fixed set of literals, far fewer). */
#define STMT_SLOTS 512
#define STMT_CACHE_MAX 256

struct stmt_slot {
    char *sql;          /* owned copy; NULL: empty slot */
    uint64_t hash;
    sqlite3_stmt *stmt;
    int in_use;         /* handed out by prepare(), not yet back in stmt_done() */
};

/* One caller's write waiting for the group committer (see gc_submit). */
struct gc_job {
    /* Runs the job's statements inside the group's transaction (store
     * mutex held); may run again when the group has to start over. */
    int (*run)(pb_store *st, struct gc_job *j);
    struct gc_job *next;
    int rc;
    int failed; /* rolled back alone: rc is final */
    int done;   /* under gc_mu: rc is the outcome */
};

struct pb_store {
    sqlite3 *db;
    pthread_mutex_t mu;
    char *path;
    struct stmt_slot *stmts; /* STMT_SLOTS, under mu */
    int n_stmts;
    /* Group committer: jobs queue here; one caller at a time (the leader)
     * takes them all and commits them in one transaction. */
    pthread_mutex_t gc_mu;
    pthread_cond_t gc_cv;
    struct gc_job *gc_head, *gc_tail;
    int gc_queued; /* jobs in the queue, not yet taken */
    int gc_busy;   /* a leader is committing */
    int gc_hold;   /* testing: nobody takes the queue */
    _Atomic uint64_t commits; /* write transactions committed (commit hook) */
    /* pb_store_generation(): bumped after each committed write to api_keys,
     * integrations, connections or installations (and projects). */
    _Atomic uint64_t generation;
    /* Commits by other processes (the CLI beside a running server) are
     * seen through PRAGMA data_version, polled at most twice a second. */
    _Atomic int64_t data_version_checked_ms;
    int64_t data_version;
};

/* Numbered migrations: migrations[i] is version i + 1, a NULL-terminated
 * list of statements. Never edit an applied migration; append a new one.
 * Each runs in its own transaction with foreign_keys on (a migration that
 * rebuilds a table must say so). */
/* 1: the whole schema of the first release. */
static const char *const migration_1[] = {
    "CREATE TABLE projects ("
    "  id         TEXT PRIMARY KEY NOT NULL,"
    "  name       TEXT NOT NULL UNIQUE,"
    "  created_at INTEGER NOT NULL"
    ")",

    /* Keys are stored as keyed hashes only; prefix is a non-secret hint
     * shown in listings. A revoked key stays for audit. */
    "CREATE TABLE api_keys ("
    "  id         TEXT PRIMARY KEY NOT NULL,"
    "  project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,"
    "  key_hash   TEXT NOT NULL UNIQUE,"
    "  prefix     TEXT NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  revoked_at INTEGER"
    ")",
    "CREATE INDEX api_keys_project ON api_keys(project_id)",

    /* One amp.yaml integration; definition is its manifest entry as JSON
     * (proxy, read and write objects), the columns are what queries need. */
    "CREATE TABLE integrations ("
    "  id            TEXT PRIMARY KEY NOT NULL,"
    "  project_id    TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,"
    "  name          TEXT NOT NULL,"
    "  provider      TEXT NOT NULL,"
    "  display_name  TEXT,"
    "  proxy_enabled INTEGER NOT NULL DEFAULT 0 CHECK (proxy_enabled IN (0, 1)),"
    "  definition    TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(definition)),"
    "  created_at    INTEGER NOT NULL,"
    "  updated_at    INTEGER NOT NULL,"
    "  UNIQUE (project_id, name),"
    "  UNIQUE (project_id, id)"
    ")",

    /* A customer's credentials for one provider.
     * auth_type: oauth2_authorization_code | oauth2_client_credentials |
     *   api_key | basic (no CHECK: plugins may bring more).
     * credentials_sealed: pb_secret_seal() of the credentials JSON (tokens,
     *   client secret, password, api key); nothing secret elsewhere.
     * provider_metadata: {"instance_url": {"value": ...}, ...}.
     * status: working | bad_credentials.
     * expires_at: when the access token expires (NULL: does not).
     * refresh_failures / refresh_retry_at: backoff after a failed refresh.
     * version: bumped on every credential change, so a token refresh is
     *   a compare-and-swap and concurrent refreshers (threads or nodes)
     *   keep one result. */
    "CREATE TABLE connections ("
    "  id                 TEXT PRIMARY KEY NOT NULL,"
    "  project_id         TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,"
    "  provider           TEXT NOT NULL,"
    "  group_ref          TEXT NOT NULL,"
    "  consumer_ref       TEXT,"
    "  auth_type          TEXT NOT NULL,"
    "  credentials_sealed TEXT NOT NULL,"
    "  scopes             TEXT CHECK (scopes IS NULL OR json_valid(scopes)),"
    "  provider_metadata  TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(provider_metadata)),"
    "  status             TEXT NOT NULL DEFAULT 'working',"
    "  expires_at         INTEGER,"
    "  refresh_failures   INTEGER NOT NULL DEFAULT 0,"
    "  refresh_retry_at   INTEGER,"
    "  version            INTEGER NOT NULL DEFAULT 1,"
    "  created_at         INTEGER NOT NULL,"
    "  updated_at         INTEGER NOT NULL,"
    "  UNIQUE (project_id, id)"
    ")",
    "CREATE INDEX connections_group ON connections(project_id, provider, group_ref)",

    /* OAuth authorization-code flow in progress. Single use: the callback
     * deletes the row it reads, in one transaction. payload: {groupRef,
     * consumerRef, provider, providerMetadata, redirect, ...}; a PKCE
     * verifier in it is sealed. */
    "CREATE TABLE oauth_states ("
    "  state      TEXT PRIMARY KEY NOT NULL,"
    "  project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,"
    "  payload    TEXT NOT NULL CHECK (json_valid(payload)),"
    "  created_at INTEGER NOT NULL,"
    "  expires_at INTEGER NOT NULL"
    ")",
    "CREATE INDEX oauth_states_expiry ON oauth_states(expires_at)",

    /* One customer (group_ref) of one integration. config is the API's
     * config object ({content: {read, write, proxy}}). Deleting an
     * integration or a connection still used here fails; the store
     * function doing it decides what to do first. */
    "CREATE TABLE installations ("
    "  id             TEXT PRIMARY KEY NOT NULL,"
    "  project_id     TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,"
    "  integration_id TEXT NOT NULL,"
    "  group_ref      TEXT NOT NULL,"
    "  connection_id  TEXT,"
    "  config         TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(config)),"
    "  created_at     INTEGER NOT NULL,"
    "  updated_at     INTEGER NOT NULL,"
    "  UNIQUE (integration_id, group_ref),"
    "  UNIQUE (project_id, id),"
    "  FOREIGN KEY (project_id, integration_id) REFERENCES integrations(project_id, id),"
    "  FOREIGN KEY (project_id, connection_id) REFERENCES connections(project_id, id)"
    ")",
    "CREATE INDEX installations_integration ON installations(project_id, integration_id)",
    "CREATE INDEX installations_connection ON installations(project_id, connection_id)"
    "  WHERE connection_id IS NOT NULL",
    "CREATE INDEX installations_group ON installations(project_id, group_ref)",

    /* Writes (action_type 'write'), synchronous ones as a record,
     * asynchronous ones as durable work.
     * status: in_progress | success | failure; result: short text.
     * metadata: {objects, successfulRecordIds, retry: {attempts,
     *   lastAttempt}}, as the API shows it.
     * request: the accepted write to replay (async), NULL otherwise.
     * next_attempt_at: when a worker should (re)try; NULL when there is
     *   nothing to do (finished, synchronous, or waiting in an auto-batch
     *   bucket). A claim sets claimed_by/claimed_until and moves
     *   next_attempt_at to claimed_until, so an expired claim is simply due
     *   again; on PostgreSQL claims use FOR UPDATE SKIP LOCKED.
     * deadline_at: no retry after it. */
    "CREATE TABLE operations ("
    "  id              TEXT PRIMARY KEY NOT NULL,"
    "  project_id      TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,"
    "  integration_id  TEXT NOT NULL,"
    "  installation_id TEXT NOT NULL,"
    "  action_type     TEXT NOT NULL DEFAULT 'write',"
    "  status          TEXT NOT NULL DEFAULT 'in_progress'"
    "                  CHECK (status IN ('in_progress', 'success', 'failure')),"
    "  result          TEXT,"
    "  metadata        TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata)),"
    "  request         TEXT CHECK (request IS NULL OR json_valid(request)),"
    "  attempts        INTEGER NOT NULL DEFAULT 0,"
    "  last_attempt_at INTEGER,"
    "  next_attempt_at INTEGER,"
    "  deadline_at     INTEGER,"
    "  claimed_by      TEXT,"
    "  claimed_until   INTEGER,"
    "  created_at      INTEGER NOT NULL,"
    "  updated_at      INTEGER NOT NULL,"
    "  UNIQUE (project_id, id),"
    "  FOREIGN KEY (project_id, installation_id) REFERENCES installations(project_id, id)"
    "    ON DELETE CASCADE,"
    "  FOREIGN KEY (project_id, integration_id) REFERENCES integrations(project_id, id)"
    ")",
    "CREATE INDEX operations_due ON operations(next_attempt_at)"
    "  WHERE status = 'in_progress' AND next_attempt_at IS NOT NULL",
    "CREATE INDEX operations_installation ON operations(project_id, installation_id, created_at, id)",
    "CREATE INDEX operations_integration ON operations(project_id, integration_id)",

    /* Auto-batch buckets: accepted asynchronous single-record writes waiting
     * to be sent together. A bucket is the open rows sharing an
     * operation_id (the batch's operation, which every write in it reports)
     * and a bucket_key (installation, object, write type); it holds at most
     * 100 rows and is sent at flush_at (the first write's enqueue time plus
     * its maxDelayMinutes) or when full. deadline_at is the first write's
     * retry deadline. record: the batch item {record, associations?};
     * result: that item's outcome once sent.
     * state: open | sending | done. */
    "CREATE TABLE write_queue ("
    "  id                INTEGER PRIMARY KEY,"
    "  operation_id      TEXT NOT NULL REFERENCES operations(id) ON DELETE CASCADE,"
    "  installation_id   TEXT NOT NULL REFERENCES installations(id) ON DELETE CASCADE,"
    "  object_name       TEXT NOT NULL,"
    "  write_type        TEXT NOT NULL,"
    "  record            TEXT NOT NULL CHECK (json_valid(record)),"
    "  bucket_key        TEXT NOT NULL,"
    "  first_enqueued_at INTEGER NOT NULL,"
    "  flush_at          INTEGER NOT NULL,"
    "  deadline_at       INTEGER NOT NULL,"
    "  state             TEXT NOT NULL DEFAULT 'open'"
    "                    CHECK (state IN ('open', 'sending', 'done')),"
    "  result            TEXT CHECK (result IS NULL OR json_valid(result)),"
    "  created_at        INTEGER NOT NULL"
    ")",
    "CREATE INDEX write_queue_open ON write_queue(bucket_key, operation_id) WHERE state = 'open'",
    "CREATE INDEX write_queue_flush ON write_queue(flush_at) WHERE state = 'open'",
    "CREATE INDEX write_queue_operation ON write_queue(operation_id, id)",
    "CREATE INDEX write_queue_installation ON write_queue(installation_id)",

    /* Throttle state per installation (X-Amp-Rate-Limiter-Mode: throttle):
     * answer 429 ourselves until blocked_until_ms, with the same
     * X-Amp-Retryable. */
    "CREATE TABLE rate_limits ("
    "  installation_id  TEXT PRIMARY KEY NOT NULL"
    "                   REFERENCES installations(id) ON DELETE CASCADE,"
    "  blocked_until_ms INTEGER NOT NULL,"
    "  backoff_attempts INTEGER NOT NULL DEFAULT 0,"
    "  retryable        INTEGER NOT NULL DEFAULT 1 CHECK (retryable IN (0, 1)),"
    "  updated_at       INTEGER NOT NULL"
    ")",

    /* Proxied calls, appended in batches. No foreign keys: a log outlives
     * what it mentions and its inserts stay cheap. path has no query
     * string (queries can carry keys). status NULL: no provider answer;
     * error: plugboard's own problem title, if any. */
    "CREATE TABLE activity ("
    "  id              INTEGER PRIMARY KEY,"
    "  time            INTEGER NOT NULL,"
    "  project_id      TEXT NOT NULL,"
    "  installation_id TEXT,"
    "  provider        TEXT,"
    "  method          TEXT NOT NULL,"
    "  path            TEXT NOT NULL,"
    "  status          INTEGER,"
    "  attempts        INTEGER NOT NULL DEFAULT 1,"
    "  duration_ms     INTEGER NOT NULL DEFAULT 0,"
    "  bytes_in        INTEGER NOT NULL DEFAULT 0,"
    "  bytes_out       INTEGER NOT NULL DEFAULT 0,"
    "  request_id      TEXT,"
    "  error           TEXT"
    ")",
    "CREATE INDEX activity_project ON activity(project_id, id)",
    "CREATE INDEX activity_installation ON activity(installation_id, id)"
    "  WHERE installation_id IS NOT NULL",
    "CREATE INDEX activity_time ON activity(time)",
    NULL,
};

static const char *const *const migrations[] = {
    migration_1,
};

#define N_MIGRATIONS ((int)(sizeof migrations / sizeof migrations[0]))

static pb_store_log_fn g_log;

void pb_store_set_log(pb_store_log_fn fn)
{
    g_log = fn;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* RFC 3339 UTC with seconds: "2026-11-26T12:00:00Z". */
static void fmt_time(int64_t ms, char out[32])
{
    time_t secs = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
    struct tm tm;
    if (!gmtime_r(&secs, &tm) || strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, 32, "1970-01-01T00:00:00Z");
}

static void store_log(const char *msg)
{
    if (g_log) {
        g_log(msg);
        return;
    }
    char ts[32];
    fmt_time(now_ms(), ts);
    json_t *o = json_pack("{s:s, s:s, s:s}", "ts", ts, "level", "error", "msg", msg);
    char *line = o ? json_dumps(o, JSON_COMPACT) : NULL;
    fprintf(stderr, "%s\n", line ? line : msg);
    free(line);
    json_decref(o);
}

__attribute__((format(printf, 3, 4)))
static void seterr(char *err, size_t err_len, const char *fmt, ...)
{
    if (!err || !err_len)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}

/* Logs a database failure (never bound values) and returns PB_STORE_ERR. */
static int db_fail(pb_store *st, const char *what)
{
    char buf[768];
    snprintf(buf, sizeof buf, "store %s: %s: %s", st->path, what, sqlite3_errmsg(st->db));
    store_log(buf);
    return PB_STORE_ERR;
}

/* Maps the result of sqlite3_step. */
static int step_rc(pb_store *st, int rc, const char *what)
{
    if (rc == SQLITE_DONE || rc == SQLITE_ROW)
        return PB_STORE_OK;
    if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY)
        return PB_STORE_CONFLICT;
    if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
        return PB_STORE_NOTFOUND;
    return db_fail(st, what);
}

/* FNV-1a over the SQL text. */
static uint64_t sql_hash(const char *sql)
{
    uint64_t h = 1469598103934665603ULL;
    for (const unsigned char *p = (const unsigned char *)sql; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    return h;
}

/* The slot holding sql, or the empty slot where it would go (NULL when the
 * table is full and sql is not in it). Caller holds the mutex. */
static struct stmt_slot *stmt_slot(pb_store *st, const char *sql, uint64_t h)
{
    if (!st->stmts)
        return NULL;
    for (size_t i = 0; i < STMT_SLOTS; i++) {
        struct stmt_slot *sl = &st->stmts[(h + i) & (STMT_SLOTS - 1)];
        if (!sl->sql || (sl->hash == h && strcmp(sl->sql, sql) == 0))
            return sl;
    }
    return NULL;
}

/* A prepared statement for sql, bindings clear, to be handed back with
 * stmt_done() (never sqlite3_finalize). Comes from the cache, compiled
 * once per store (SQLITE_PREPARE_PERSISTENT); a text whose cached
 * statement is still out (a nested use) gets a one-off statement. Caller
 * holds the mutex. */
static int prepare(pb_store *st, const char *sql, sqlite3_stmt **stmt, const char *what)
{
    uint64_t h = sql_hash(sql);
    struct stmt_slot *sl = stmt_slot(st, sql, h);
    if (sl && sl->sql && !sl->in_use) {
        sl->in_use = 1;
        *stmt = sl->stmt;
        return PB_STORE_OK;
    }
    int keep = sl && !sl->sql && st->n_stmts < STMT_CACHE_MAX;
    if (sqlite3_prepare_v3(st->db, sql, -1, keep ? SQLITE_PREPARE_PERSISTENT : 0, stmt, NULL) !=
        SQLITE_OK) {
        *stmt = NULL;
        return db_fail(st, what);
    }
    if (keep && (sl->sql = strdup(sql)) != NULL) {
        sl->hash = h;
        sl->stmt = *stmt;
        sl->in_use = 1;
        st->n_stmts++;
    }
    return PB_STORE_OK;
}

/* Hands back a statement from prepare(): a cached one is reset (ending
 * any read it had open) with its bindings cleared, a one-off finalized.
 * NULL is ignored. */
static void stmt_done(pb_store *st, sqlite3_stmt *s)
{
    if (!s)
        return;
    const char *sql = sqlite3_sql(s);
    struct stmt_slot *sl = sql ? stmt_slot(st, sql, sql_hash(sql)) : NULL;
    if (sl && sl->sql && sl->stmt == s) {
        sqlite3_reset(s);
        sqlite3_clear_bindings(s);
        sl->in_use = 0;
        return;
    }
    sqlite3_finalize(s);
}

static void stmt_cache_free(pb_store *st)
{
    if (!st->stmts)
        return;
    for (size_t i = 0; i < STMT_SLOTS; i++) {
        sqlite3_finalize(st->stmts[i].stmt);
        free(st->stmts[i].sql);
    }
    free(st->stmts);
    st->stmts = NULL;
    st->n_stmts = 0;
}

/* Runs one statement without parameters (a cached one). */
static int exec_sql(pb_store *st, const char *sql, const char *what)
{
    sqlite3_stmt *s;
    int rc = prepare(st, sql, &s, what);
    if (rc != PB_STORE_OK)
        return rc;
    int r = sqlite3_step(s);
    if (r != SQLITE_DONE && r != SQLITE_ROW)
        rc = db_fail(st, what);
    stmt_done(st, s);
    return rc;
}

static void tx_rollback(pb_store *st)
{
    if (!sqlite3_get_autocommit(st->db))
        sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
}

/* IMMEDIATE takes the write lock up front, so a transaction never has to
 * upgrade a read lock and fail with SQLITE_BUSY halfway. */
static int tx_begin(pb_store *st)
{
    return exec_sql(st, "BEGIN IMMEDIATE", "begin transaction");
}

static int tx_commit(pb_store *st)
{
    int rc = exec_sql(st, "COMMIT", "commit");
    if (rc != PB_STORE_OK)
        tx_rollback(st);
    return rc;
}

static int bind_text(sqlite3_stmt *s, int i, const char *v)
{
    return sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC);
}

static const char *col_text(sqlite3_stmt *s, int i)
{
    const unsigned char *t = sqlite3_column_text(s, i);
    return t ? (const char *)t : "";
}

/* After a committed write that callers' caches may hold (see
 * pb_store_generation). */
static void gen_bump(pb_store *st)
{
    atomic_fetch_add_explicit(&st->generation, 1, memory_order_acq_rel);
}

/* ---- opening and migrations ---------------------------------------------- */

/* "sqlite:PATH" or "sqlite://PATH" (so "sqlite:///abs/path" works too). */
static const char *url_path(const char *url)
{
    if (!url || strncmp(url, "sqlite:", 7) != 0)
        return NULL;
    const char *p = url + 7;
    if (p[0] == '/' && p[1] == '/')
        p += 2;
    return *p ? p : NULL;
}

/* Creates the missing directories above `path` (mode 0700: the data
 * directory holds credentials, sealed or not). */
static int make_parent_dirs(const char *path, char *err, size_t err_len)
{
    char *dir = strdup(path);
    if (!dir) {
        seterr(err, err_len, "store %s: out of memory", path);
        return -1;
    }
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir) {
        free(dir);
        return 0;
    }
    *slash = '\0';
    for (char *p = dir + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char saved = *p;
        *p = '\0';
        if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
            seterr(err, err_len, "store %s: cannot create directory %s: %s", path, dir,
                   strerror(errno));
            free(dir);
            return -1;
        }
        *p = saved;
        if (!saved)
            break;
    }
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        seterr(err, err_len, "store %s: %s is not a directory", path, dir);
        free(dir);
        return -1;
    }
    free(dir);
    return 0;
}

/* The database file is created 0600 before SQLite sees it (SQLite gives its
 * -wal and -shm files the same mode). */
static int precreate_file(const char *path, char *err, size_t err_len)
{
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) {
        close(fd);
        return 0;
    }
    if (errno == EEXIST)
        return 0;
    seterr(err, err_len, "store %s: cannot create the database file: %s", path, strerror(errno));
    return -1;
}

static int open_fail(pb_store *st, const char *what, char *err, size_t err_len)
{
    seterr(err, err_len, "store %s: %s: %s", st->path, what, sqlite3_errmsg(st->db));
    return -1;
}

/* Reads a one-row pragma or query into text (NULL when no row). */
static char *query_text(pb_store *st, const char *sql)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(st->db, sql, -1, &s, NULL) != SQLITE_OK)
        return NULL;
    char *v = NULL;
    if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_text(s, 0))
        v = strdup((const char *)sqlite3_column_text(s, 0));
    sqlite3_finalize(s);
    return v;
}

/* Highest applied version, -1 on failure. */
static int applied_version(pb_store *st)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(st->db, "SELECT coalesce(max(version), 0) FROM schema_migrations", -1,
                           &s, NULL) != SQLITE_OK)
        return -1;
    int v = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int(s, 0) : -1;
    sqlite3_finalize(s);
    return v;
}

/* Applies migration `version` unless present; the check runs inside the
 * write transaction, so two processes opening one file apply it once. */
static int apply_migration(pb_store *st, int version, char *err, size_t err_len)
{
    char what[64];
    snprintf(what, sizeof what, "migration %d", version);
    if (sqlite3_exec(st->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return open_fail(st, what, err, err_len);

    sqlite3_stmt *s = NULL;
    int present = -1;
    if (sqlite3_prepare_v2(st->db, "SELECT 1 FROM schema_migrations WHERE version = ?1", -1, &s,
                           NULL) == SQLITE_OK &&
        sqlite3_bind_int(s, 1, version) == SQLITE_OK) {
        int rc = sqlite3_step(s);
        present = rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
    }
    sqlite3_finalize(s);
    s = NULL;
    if (present < 0)
        goto fail;
    if (!present) {
        for (const char *const *sql = migrations[version - 1]; *sql; sql++)
            if (sqlite3_exec(st->db, *sql, NULL, NULL, NULL) != SQLITE_OK)
                goto fail;
        if (sqlite3_prepare_v2(st->db,
                               "INSERT INTO schema_migrations(version, applied_at) VALUES (?1, ?2)",
                               -1, &s, NULL) != SQLITE_OK ||
            sqlite3_bind_int(s, 1, version) != SQLITE_OK ||
            sqlite3_bind_int64(s, 2, now_ms()) != SQLITE_OK || sqlite3_step(s) != SQLITE_DONE)
            goto fail;
        sqlite3_finalize(s);
        s = NULL;
    }
    if (sqlite3_exec(st->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        goto fail;
    return 0;
fail:
    open_fail(st, what, err, err_len);
    sqlite3_finalize(s);
    tx_rollback(st);
    return -1;
}

static int migrate(pb_store *st, char *err, size_t err_len)
{
    if (sqlite3_exec(st->db,
                     "CREATE TABLE IF NOT EXISTS schema_migrations ("
                     "  version    INTEGER PRIMARY KEY,"
                     "  applied_at INTEGER NOT NULL)",
                     NULL, NULL, NULL) != SQLITE_OK)
        return open_fail(st, "create schema_migrations", err, err_len);
    int have = applied_version(st);
    if (have < 0)
        return open_fail(st, "read schema version", err, err_len);
    if (have > N_MIGRATIONS) {
        seterr(err, err_len,
               "store %s: schema version %d is newer than this plugboard knows (%d); "
               "run a newer plugboard",
               st->path, have, N_MIGRATIONS);
        return -1;
    }
    for (int v = have + 1; v <= N_MIGRATIONS; v++)
        if (apply_migration(st, v, err, err_len) != 0)
            return -1;
    return 0;
}

static int configure_connection(pb_store *st, int in_memory, char *err, size_t err_len)
{
    sqlite3_extended_result_codes(st->db, 1);
    if (sqlite3_busy_timeout(st->db, 30000) != SQLITE_OK)
        return open_fail(st, "set busy timeout", err, err_len);

    char *mode = query_text(st, "PRAGMA journal_mode=WAL");
    int ok = mode && strcmp(mode, in_memory ? "memory" : "wal") == 0;
    if (!ok) {
        if (mode)
            seterr(err, err_len, "store %s: cannot use WAL journal mode (got %s)", st->path, mode);
        else
            open_fail(st, "set journal mode", err, err_len);
        free(mode);
        return -1;
    }
    free(mode);

    if (sqlite3_exec(st->db, "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON", NULL, NULL,
                     NULL) != SQLITE_OK)
        return open_fail(st, "set pragmas", err, err_len);
    char *fk = query_text(st, "PRAGMA foreign_keys");
    ok = fk && strcmp(fk, "1") == 0;
    free(fk);
    if (!ok) {
        seterr(err, err_len, "store %s: this SQLite does not enforce foreign keys", st->path);
        return -1;
    }
    return 0;
}

/* sqlite3_commit_hook: counts committed write transactions (for
 * pb_store_testing_commits). Returning 0 lets the commit go ahead. */
static int count_commit(void *arg)
{
    pb_store *st = arg;
    atomic_fetch_add_explicit(&st->commits, 1, memory_order_relaxed);
    return 0;
}

int pb_store_open(const char *url, pb_store **out, char *err, size_t err_len)
{
    if (!out)
        return PB_STORE_ERR;
    *out = NULL;
    const char *path = url_path(url);
    if (!path) {
        seterr(err, err_len, "store %s: unsupported store URL (expected sqlite:PATH)",
               url ? url : "(none)");
        return PB_STORE_ERR;
    }
    int in_memory = strcmp(path, ":memory:") == 0;
    if (!in_memory && (make_parent_dirs(path, err, err_len) != 0 ||
                       precreate_file(path, err, err_len) != 0))
        return PB_STORE_ERR;

    pb_store *st = calloc(1, sizeof *st);
    if (!st || !(st->path = strdup(path))) {
        free(st);
        seterr(err, err_len, "store %s: out of memory", path);
        return PB_STORE_ERR;
    }
    /* Starts at 1, so a cache stamped 0 never looks current. */
    atomic_init(&st->generation, 1);
    atomic_init(&st->data_version_checked_ms, 0);
    st->stmts = calloc(STMT_SLOTS, sizeof *st->stmts);
    if (!st->stmts || pthread_mutex_init(&st->mu, NULL) != 0) {
        free(st->stmts);
        free(st->path);
        free(st);
        seterr(err, err_len, "store %s: cannot create mutex", path);
        return PB_STORE_ERR;
    }
    if (pthread_mutex_init(&st->gc_mu, NULL) != 0) {
        pthread_mutex_destroy(&st->mu);
        free(st->stmts);
        free(st->path);
        free(st);
        seterr(err, err_len, "store %s: cannot create mutex", path);
        return PB_STORE_ERR;
    }
    if (pthread_cond_init(&st->gc_cv, NULL) != 0) {
        pthread_mutex_destroy(&st->gc_mu);
        pthread_mutex_destroy(&st->mu);
        free(st->stmts);
        free(st->path);
        free(st);
        seterr(err, err_len, "store %s: cannot create condition variable", path);
        return PB_STORE_ERR;
    }
    atomic_init(&st->commits, 0);
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX;
    int rc = sqlite3_open_v2(path, &st->db, flags, NULL);
    if (rc != SQLITE_OK) {
        if (st->db)
            open_fail(st, "cannot open", err, err_len);
        else
            seterr(err, err_len, "store %s: cannot open: %s", path, sqlite3_errstr(rc));
        pb_store_close(st);
        return PB_STORE_ERR;
    }
    sqlite3_commit_hook(st->db, count_commit, st);
    if (configure_connection(st, in_memory, err, err_len) != 0 || migrate(st, err, err_len) != 0) {
        pb_store_close(st);
        return PB_STORE_ERR;
    }
    *out = st;
    return PB_STORE_OK;
}

void pb_store_close(pb_store *st)
{
    if (!st)
        return;
    stmt_cache_free(st);
    if (st->db)
        sqlite3_close_v2(st->db);
    pthread_cond_destroy(&st->gc_cv);
    pthread_mutex_destroy(&st->gc_mu);
    pthread_mutex_destroy(&st->mu);
    free(st->path);
    free(st);
}

int pb_store_schema_latest(pb_store *st)
{
    (void)st;
    return N_MIGRATIONS;
}

int pb_store_ping(pb_store *st)
{
    if (!st)
        return PB_STORE_ERR;
    pthread_mutex_lock(&st->mu);
    sqlite3_stmt *s;
    int rc = prepare(st, "SELECT 1", &s, "ping");
    if (rc == PB_STORE_OK) {
        if (sqlite3_step(s) != SQLITE_ROW)
            rc = db_fail(st, "ping");
        stmt_done(st, s);
    }
    pthread_mutex_unlock(&st->mu);
    return rc;
}

int pb_store_schema_version(pb_store *st)
{
    if (!st)
        return -1;
    pthread_mutex_lock(&st->mu);
    int v = applied_version(st);
    if (v < 0)
        db_fail(st, "read schema version");
    pthread_mutex_unlock(&st->mu);
    return v;
}

/* ---- projects and API keys ------------------------------------------------ */

static json_t *project_json(const char *id, const char *name, int64_t created_ms)
{
    char ts[32];
    fmt_time(created_ms, ts);
    return json_pack("{s:s, s:s, s:s}", "id", id, "name", name, "createTime", ts);
}

static int insert_project(pb_store *st, const char *id, const char *name, int64_t now)
{
    sqlite3_stmt *s;
    int rc = prepare(st, "INSERT INTO projects(id, name, created_at) VALUES (?1, ?2, ?3)", &s,
                     "insert project");
    if (rc != PB_STORE_OK)
        return rc;
    if (bind_text(s, 1, id) | bind_text(s, 2, name) | sqlite3_bind_int64(s, 3, now))
        rc = db_fail(st, "insert project");
    else
        rc = step_rc(st, sqlite3_step(s), "insert project");
    stmt_done(st, s);
    return rc;
}

static int insert_api_key(pb_store *st, const char *key_id, const char *project_id,
                          const char *hash_hex, const char *prefix, int64_t now)
{
    sqlite3_stmt *s;
    int rc = prepare(st,
                     "INSERT INTO api_keys(id, project_id, key_hash, prefix, created_at)"
                     " VALUES (?1, ?2, ?3, ?4, ?5)",
                     &s, "insert api key");
    if (rc != PB_STORE_OK)
        return rc;
    if (bind_text(s, 1, key_id) | bind_text(s, 2, project_id) | bind_text(s, 3, hash_hex) |
        bind_text(s, 4, prefix) | sqlite3_bind_int64(s, 5, now))
        rc = db_fail(st, "insert api key");
    else
        rc = step_rc(st, sqlite3_step(s), "insert api key");
    stmt_done(st, s);
    return rc;
}

int pb_store_project_create(pb_store *st, const char *id, const char *name, json_t **out)
{
    if (out)
        *out = NULL;
    if (!st || !id || !*id || !name || !*name)
        return PB_STORE_ERR;
    int64_t now = now_ms();
    /* Built first: a name jansson refuses (not UTF-8) is never stored. */
    json_t *p = project_json(id, name, now);
    if (!p)
        return PB_STORE_ERR;
    pthread_mutex_lock(&st->mu);
    int rc = insert_project(st, id, name, now);
    if (rc == PB_STORE_OK)
        gen_bump(st);
    pthread_mutex_unlock(&st->mu);
    if (rc == PB_STORE_OK && out)
        *out = p;
    else
        json_decref(p);
    return rc;
}

int pb_store_project_get(pb_store *st, const char *id_or_name, json_t **out)
{
    if (out)
        *out = NULL;
    if (!st || !id_or_name || !out)
        return PB_STORE_ERR;
    pthread_mutex_lock(&st->mu);
    sqlite3_stmt *s;
    int rc = prepare(st,
                     "SELECT id, name, created_at, 0 AS pri FROM projects WHERE id = ?1"
                     " UNION ALL"
                     " SELECT id, name, created_at, 1 AS pri FROM projects WHERE name = ?1"
                     " ORDER BY pri LIMIT 1",
                     &s, "get project");
    if (rc == PB_STORE_OK) {
        if (bind_text(s, 1, id_or_name)) {
            rc = db_fail(st, "get project");
        } else {
            int r = sqlite3_step(s);
            if (r == SQLITE_ROW) {
                *out = project_json(col_text(s, 0), col_text(s, 1), sqlite3_column_int64(s, 2));
                rc = *out ? PB_STORE_OK : PB_STORE_ERR;
            } else if (r == SQLITE_DONE) {
                rc = PB_STORE_NOTFOUND;
            } else {
                rc = db_fail(st, "get project");
            }
        }
        stmt_done(st, s);
    }
    pthread_mutex_unlock(&st->mu);
    return rc;
}

int pb_store_project_list(pb_store *st, json_t **out)
{
    if (out)
        *out = NULL;
    if (!st || !out)
        return PB_STORE_ERR;
    json_t *arr = json_array();
    if (!arr)
        return PB_STORE_ERR;
    pthread_mutex_lock(&st->mu);
    sqlite3_stmt *s;
    /* rowid breaks ties between projects created in the same millisecond. */
    int rc = prepare(st, "SELECT id, name, created_at FROM projects ORDER BY created_at, rowid", &s,
                     "list projects");
    if (rc == PB_STORE_OK) {
        int r;
        while ((r = sqlite3_step(s)) == SQLITE_ROW) {
            json_t *p = project_json(col_text(s, 0), col_text(s, 1), sqlite3_column_int64(s, 2));
            if (!p || json_array_append_new(arr, p) != 0) {
                rc = PB_STORE_ERR;
                break;
            }
        }
        if (rc == PB_STORE_OK && r != SQLITE_DONE)
            rc = db_fail(st, "list projects");
        stmt_done(st, s);
    }
    pthread_mutex_unlock(&st->mu);
    if (rc == PB_STORE_OK)
        *out = arr;
    else
        json_decref(arr);
    return rc;
}

int pb_store_api_key_add(pb_store *st, const char *key_id, const char *project_id,
                         const char *hash_hex, const char *prefix)
{
    if (!st || !key_id || !*key_id || !project_id || !hash_hex || !*hash_hex || !prefix)
        return PB_STORE_ERR;
    pthread_mutex_lock(&st->mu);
    /* An unknown project_id fails the foreign key: PB_STORE_NOTFOUND. */
    int rc = insert_api_key(st, key_id, project_id, hash_hex, prefix, now_ms());
    if (rc == PB_STORE_OK)
        gen_bump(st);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

int pb_store_api_key_lookup(pb_store *st, const char *hash_hex, char *project_id_out,
                            size_t out_len)
{
    if (project_id_out && out_len)
        project_id_out[0] = '\0';
    if (!st || !hash_hex || !project_id_out || !out_len)
        return PB_STORE_ERR;
    pthread_mutex_lock(&st->mu);
    sqlite3_stmt *s;
    int rc = prepare(st, "SELECT project_id FROM api_keys WHERE key_hash = ?1 AND revoked_at IS NULL",
                     &s, "look up api key");
    if (rc == PB_STORE_OK) {
        if (bind_text(s, 1, hash_hex)) {
            rc = db_fail(st, "look up api key");
        } else {
            int r = sqlite3_step(s);
            if (r == SQLITE_ROW) {
                const char *pid = col_text(s, 0);
                size_t n = strlen(pid);
                if (n >= out_len) {
                    rc = PB_STORE_ERR;
                } else {
                    memcpy(project_id_out, pid, n + 1);
                }
            } else if (r == SQLITE_DONE) {
                rc = PB_STORE_NOTFOUND;
            } else {
                rc = db_fail(st, "look up api key");
            }
        }
        stmt_done(st, s);
    }
    pthread_mutex_unlock(&st->mu);
    return rc;
}

int pb_store_project_create_with_key(pb_store *st, const char *id, const char *name,
                                     const char *key_id, const char *hash_hex,
                                     const char *prefix, json_t **out)
{
    if (out)
        *out = NULL;
    if (!st || !id || !*id || !name || !*name || !key_id || !*key_id || !hash_hex ||
        !*hash_hex || !prefix)
        return PB_STORE_ERR;
    int64_t now = now_ms();
    json_t *p = project_json(id, name, now);
    if (!p)
        return PB_STORE_ERR;
    pthread_mutex_lock(&st->mu);
    int rc = tx_begin(st);
    if (rc == PB_STORE_OK)
        rc = insert_project(st, id, name, now);
    if (rc == PB_STORE_OK)
        rc = insert_api_key(st, key_id, id, hash_hex, prefix, now);
    if (rc == PB_STORE_OK)
        rc = tx_commit(st);
    else
        tx_rollback(st);
    if (rc == PB_STORE_OK)
        gen_bump(st);
    pthread_mutex_unlock(&st->mu);
    if (rc == PB_STORE_OK && out)
        *out = p;
    else
        json_decref(p);
    return rc;
}

/* ---- control plane --------------------------------------------------------
 *
 * Reads and single-statement writes run under the store mutex alone; a write
 * that needs more than one statement (or checks before it writes, so that it
 * can tell NOTFOUND from CONFLICT) runs in BEGIN IMMEDIATE and rolls back on
 * any failure. gen_bump() follows each successful commit that changed a row
 * of api_keys, integrations, connections or installations. */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Bumps the generation when another connection committed since the last
 * look; one caller at a time does the look. */
static void poll_data_version(pb_store *st)
{
    int64_t now = mono_ms();
    int64_t last = atomic_load_explicit(&st->data_version_checked_ms, memory_order_acquire);
    if (now - last < 500 ||
        !atomic_compare_exchange_strong(&st->data_version_checked_ms, &last, now))
        return;
    /* The proxy's hot path comes here: never wait behind a store call that
     * is itself waiting out a lock held elsewhere (busy timeout). The next
     * caller looks again. */
    if (pthread_mutex_trylock(&st->mu) != 0) {
        atomic_store_explicit(&st->data_version_checked_ms, last, memory_order_release);
        return;
    }
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(st->db, "PRAGMA data_version", -1, &s, NULL) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW) {
        int64_t v = sqlite3_column_int64(s, 0);
        if (st->data_version && v != st->data_version)
            atomic_fetch_add_explicit(&st->generation, 1, memory_order_acq_rel);
        st->data_version = v;
    }
    sqlite3_finalize(s);
    pthread_mutex_unlock(&st->mu);
}

uint64_t pb_store_generation(pb_store *st)
{
    if (!st)
        return 0;
    poll_data_version(st);
    return atomic_load_explicit(&st->generation, memory_order_acquire);
}

/* A non-empty string member, or NULL. */
static const char *req_str(const json_t *o, const char *key)
{
    const char *v = json_string_value(json_object_get(o, key));
    return v && *v ? v : NULL;
}

/* An optional string member: NULL when absent or null; *bad set when it is
 * something else. */
static const char *opt_str(const json_t *o, const char *key, int *bad)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return NULL;
    if (!json_is_string(v)) {
        *bad = 1;
        return NULL;
    }
    return json_string_value(v);
}

/* An optional object member: NULL when absent or null; *bad set when it is
 * something else. */
static json_t *opt_obj(const json_t *o, const char *key, int *bad)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return NULL;
    if (!json_is_object(v))
        *bad = 1;
    return json_is_object(v) ? v : NULL;
}

/* Compact JSON for a TEXT column (free()); NULL on failure. */
static char *dump_json(const json_t *v)
{
    return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
}

/* A JSON TEXT column as a new reference; NULL when SQL NULL or invalid. */
static json_t *col_json(sqlite3_stmt *s, int i)
{
    const unsigned char *t = sqlite3_column_text(s, i);
    return t ? json_loads((const char *)t, JSON_DECODE_ANY, NULL) : NULL;
}

/* json_object_set_new that counts failures (a NULL value is one). */
static void put(json_t *o, const char *key, json_t *v, int *bad)
{
    if (json_object_set_new(o, key, v) != 0)
        *bad = 1;
}

static void put_str(json_t *o, const char *key, sqlite3_stmt *s, int col, int *bad)
{
    put(o, key, json_string(col_text(s, col)), bad);
}

/* Only when the column is not NULL. */
static void put_opt_str(json_t *o, const char *key, sqlite3_stmt *s, int col, int *bad)
{
    if (sqlite3_column_type(s, col) != SQLITE_NULL)
        put_str(o, key, s, col, bad);
}

static void put_time(json_t *o, const char *key, sqlite3_stmt *s, int col, int *bad)
{
    char ts[32];
    fmt_time(sqlite3_column_int64(s, col), ts);
    put(o, key, json_string(ts), bad);
}

static json_t *finish(json_t *o, int bad)
{
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* Binds ?1..?n to the strings given (NULL binds SQL NULL). */
static int bind_texts(sqlite3_stmt *s, int n, va_list ap)
{
    int rc = SQLITE_OK;
    for (int i = 1; i <= n; i++) {
        const char *v = va_arg(ap, const char *);
        if (rc == SQLITE_OK)
            rc = bind_text(s, i, v);
    }
    return rc;
}

/* Prepares sql with n text parameters. */
static int prep_bind(pb_store *st, const char *sql, sqlite3_stmt **s, const char *what, int n,
                     ...)
{
    int rc = prepare(st, sql, s, what);
    if (rc != PB_STORE_OK)
        return rc;
    va_list ap;
    va_start(ap, n);
    int b = bind_texts(*s, n, ap);
    va_end(ap);
    if (b != SQLITE_OK) {
        rc = db_fail(st, what);
        stmt_done(st, *s);
        *s = NULL;
    }
    return rc;
}

typedef json_t *(*row_fn)(sqlite3_stmt *s);

/* The first row through fn into *out; PB_STORE_NOTFOUND when none. */
static int one_row(pb_store *st, sqlite3_stmt *s, row_fn fn, json_t **out, const char *what)
{
    int r = sqlite3_step(s);
    if (r == SQLITE_DONE)
        return PB_STORE_NOTFOUND;
    if (r != SQLITE_ROW)
        return db_fail(st, what);
    *out = fn(s);
    return *out ? PB_STORE_OK : PB_STORE_ERR;
}

/* Every row through fn, appended to arr. */
static int all_rows(pb_store *st, sqlite3_stmt *s, row_fn fn, json_t *arr, const char *what)
{
    int r;
    while ((r = sqlite3_step(s)) == SQLITE_ROW) {
        if (json_array_append_new(arr, fn(s)) != 0)
            return PB_STORE_ERR;
    }
    return r == SQLITE_DONE ? PB_STORE_OK : db_fail(st, what);
}

/* Runs a query with n text parameters and builds one object (or
 * PB_STORE_NOTFOUND). Caller holds the mutex. */
static int fetch_one(pb_store *st, const char *sql, row_fn fn, json_t **out, const char *what,
                     int n, ...)
{
    sqlite3_stmt *s;
    int rc = prepare(st, sql, &s, what);
    if (rc != PB_STORE_OK)
        return rc;
    va_list ap;
    va_start(ap, n);
    int b = bind_texts(s, n, ap);
    va_end(ap);
    rc = b != SQLITE_OK ? db_fail(st, what) : one_row(st, s, fn, out, what);
    stmt_done(st, s);
    return rc;
}

/* Same, every row into a new array. */
static int fetch_all(pb_store *st, const char *sql, row_fn fn, json_t **out, const char *what,
                     int n, ...)
{
    json_t *arr = json_array();
    if (!arr)
        return PB_STORE_ERR;
    sqlite3_stmt *s;
    int rc = prepare(st, sql, &s, what);
    if (rc == PB_STORE_OK) {
        va_list ap;
        va_start(ap, n);
        int b = bind_texts(s, n, ap);
        va_end(ap);
        rc = b != SQLITE_OK ? db_fail(st, what) : all_rows(st, s, fn, arr, what);
        stmt_done(st, s);
    }
    if (rc == PB_STORE_OK)
        *out = arr;
    else
        json_decref(arr);
    return rc;
}

/* PB_STORE_OK when the query (n text parameters) yields a row,
 * PB_STORE_NOTFOUND when it does not. */
static int exists(pb_store *st, const char *sql, const char *what, int n, ...)
{
    sqlite3_stmt *s;
    int rc = prepare(st, sql, &s, what);
    if (rc != PB_STORE_OK)
        return rc;
    va_list ap;
    va_start(ap, n);
    int b = bind_texts(s, n, ap);
    va_end(ap);
    if (b != SQLITE_OK) {
        rc = db_fail(st, what);
    } else {
        int r = sqlite3_step(s);
        rc = r == SQLITE_ROW ? PB_STORE_OK : r == SQLITE_DONE ? PB_STORE_NOTFOUND
                                                              : db_fail(st, what);
    }
    stmt_done(st, s);
    return rc;
}

/* Ends a transaction: commits when rc is PB_STORE_OK (and bumps the
 * generation when `bump`), rolls back otherwise. */
static int tx_end(pb_store *st, int rc, int bump)
{
    if (rc == PB_STORE_OK) {
        rc = tx_commit(st);
        if (rc == PB_STORE_OK && bump)
            gen_bump(st);
    } else {
        tx_rollback(st);
    }
    return rc;
}

/* ---- integrations ---- */

#define INTEGRATION_COLS                                                                       \
    "id, project_id, name, provider, display_name, definition, created_at, updated_at"

/* A definition part (proxy, write, read) of a manifest entry or stored
 * definition as a new reference, or the manifest's default for it. */
static json_t *def_part(const json_t *def, const char *key)
{
    json_t *v = json_object_get(def, key);
    if (json_is_object(v))
        return json_incref(v);
    if (strcmp(key, "proxy") == 0)
        return json_pack("{s:b}", "enabled", 0);
    return json_pack("{s:[]}", "objects");
}

static json_t *integration_row(sqlite3_stmt *s)
{
    json_t *o = json_object();
    json_t *def = col_json(s, 5);
    int bad = !o;
    put_str(o, "id", s, 0, &bad);
    put_str(o, "projectId", s, 1, &bad);
    put_str(o, "name", s, 2, &bad);
    put_str(o, "provider", s, 3, &bad);
    put_opt_str(o, "displayName", s, 4, &bad);
    put(o, "proxy", def_part(def, "proxy"), &bad);
    put(o, "write", def_part(def, "write"), &bad);
    put(o, "read", def_part(def, "read"), &bad);
    put_time(o, "createTime", s, 6, &bad);
    put_time(o, "updateTime", s, 7, &bad);
    json_decref(def);
    return finish(o, bad);
}

static int list_integrations(pb_store *st, const char *project_id, json_t **out)
{
    return fetch_all(st,
                     "SELECT " INTEGRATION_COLS " FROM integrations WHERE project_id = ?1"
                     " ORDER BY created_at, rowid",
                     integration_row, out, "list integrations", 1, project_id);
}

/* One manifest entry, checked and prepared for the columns. */
struct int_entry {
    const char *name, *provider, *display_name;
    int proxy_enabled;
    char *definition;
};

static int prepare_entry(const json_t *e, struct int_entry *ie)
{
    int bad = !json_is_object(e);
    ie->name = req_str(e, "name");
    ie->provider = req_str(e, "provider");
    ie->display_name = opt_str(e, "displayName", &bad);
    json_t *proxy = opt_obj(e, "proxy", &bad);
    opt_obj(e, "write", &bad);
    opt_obj(e, "read", &bad);
    if (bad || !ie->name || !ie->provider)
        return -1;
    ie->proxy_enabled = json_is_true(json_object_get(proxy, "enabled"));
    json_t *def = json_object();
    int dbad = !def;
    put(def, "proxy", def_part(e, "proxy"), &dbad);
    put(def, "write", def_part(e, "write"), &dbad);
    put(def, "read", def_part(e, "read"), &dbad);
    ie->definition = dbad ? NULL : dump_json(def);
    json_decref(def);
    return ie->definition ? 0 : -1;
}

static int apply_entry(pb_store *st, sqlite3_stmt *sel, sqlite3_stmt *upd, sqlite3_stmt *ins,
                       const char *project_id, const struct int_entry *ie, int64_t now)
{
    const char *what = "apply integrations";
    sqlite3_reset(sel);
    sqlite3_reset(upd);
    sqlite3_reset(ins);
    if (bind_text(sel, 1, project_id) | bind_text(sel, 2, ie->name))
        return db_fail(st, what);
    int r = sqlite3_step(sel);
    if (r == SQLITE_ROW) {
        if (bind_text(upd, 1, col_text(sel, 0)) | bind_text(upd, 2, ie->provider) |
            bind_text(upd, 3, ie->display_name) | sqlite3_bind_int(upd, 4, ie->proxy_enabled) |
            bind_text(upd, 5, ie->definition) | sqlite3_bind_int64(upd, 6, now))
            return db_fail(st, what);
        /* sel's row (the bound id) stays valid until sel is reset. */
        return step_rc(st, sqlite3_step(upd), what);
    }
    if (r != SQLITE_DONE)
        return db_fail(st, what);
    char id[64];
    pb_random_id("int_", id, sizeof id);
    if (bind_text(ins, 1, id) | bind_text(ins, 2, project_id) | bind_text(ins, 3, ie->name) |
        bind_text(ins, 4, ie->provider) | bind_text(ins, 5, ie->display_name) |
        sqlite3_bind_int(ins, 6, ie->proxy_enabled) | bind_text(ins, 7, ie->definition) |
        sqlite3_bind_int64(ins, 8, now))
        return db_fail(st, what);
    return step_rc(st, sqlite3_step(ins), what);
}

int pb_store_integrations_apply(pb_store *st, const char *project_id, const json_t *integrations,
                                json_t **out)
{
    if (out)
        *out = NULL;
    if (!st || !project_id || !json_is_array(integrations))
        return PB_STORE_ERR;
    size_t n = json_array_size(integrations);
    struct int_entry *ents = calloc(n ? n : 1, sizeof *ents);
    if (!ents)
        return PB_STORE_ERR;
    int rc = PB_STORE_OK;
    /* Checked and serialized before anything is written. */
    for (size_t i = 0; i < n && rc == PB_STORE_OK; i++)
        if (prepare_entry(json_array_get(integrations, i), &ents[i]) != 0)
            rc = PB_STORE_ERR;
    if (rc != PB_STORE_OK)
        goto done;

    const char *what = "apply integrations";
    int64_t now = now_ms();
    json_t *list = NULL;
    sqlite3_stmt *sel = NULL, *upd = NULL, *ins = NULL;
    pthread_mutex_lock(&st->mu);
    rc = tx_begin(st);
    if (rc == PB_STORE_OK)
        rc = exists(st, "SELECT 1 FROM projects WHERE id = ?1", what, 1, project_id);
    if (rc == PB_STORE_OK)
        rc = prepare(st, "SELECT id FROM integrations WHERE project_id = ?1 AND name = ?2", &sel,
                     what);
    if (rc == PB_STORE_OK)
        rc = prepare(st,
                     "UPDATE integrations SET provider = ?2, display_name = ?3,"
                     " proxy_enabled = ?4, definition = ?5, updated_at = ?6 WHERE id = ?1",
                     &upd, what);
    if (rc == PB_STORE_OK)
        rc = prepare(st,
                     "INSERT INTO integrations(id, project_id, name, provider, display_name,"
                     " proxy_enabled, definition, created_at, updated_at)"
                     " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
                     &ins, what);
    for (size_t i = 0; i < n && rc == PB_STORE_OK; i++)
        rc = apply_entry(st, sel, upd, ins, project_id, &ents[i], now);
    stmt_done(st, sel);
    stmt_done(st, upd);
    stmt_done(st, ins);
    if (rc == PB_STORE_OK && out)
        rc = list_integrations(st, project_id, &list);
    rc = tx_end(st, rc, n > 0);
    pthread_mutex_unlock(&st->mu);
    if (rc == PB_STORE_OK && out)
        *out = list;
    else
        json_decref(list);
done:
    for (size_t i = 0; i < n; i++)
        free(ents[i].definition);
    free(ents);
    return rc;
}

int pb_store_integration_list(pb_store *st, const char *project_id, json_t **out)
{
    if (out)
        *out = NULL;
    if (!st || !project_id || !out)
        return PB_STORE_ERR;
    pthread_mutex_lock(&st->mu);
    int rc = list_integrations(st, project_id, out);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

int pb_store_integration_get(pb_store *st, const char *project_id, const char *id_or_name,
                             json_t **out)
{
    if (out)
        *out = NULL;
    if (!st || !project_id || !id_or_name || !out)
        return PB_STORE_ERR;
    pthread_mutex_lock(&st->mu);
    /* By id first, then by name (an id never collides with another
     * integration's name in practice, but the order is defined). */
    int rc = fetch_one(st,
                       "SELECT " INTEGRATION_COLS ", 0 AS pri FROM integrations"
                       " WHERE project_id = ?1 AND id = ?2"
                       " UNION ALL"
                       " SELECT " INTEGRATION_COLS ", 1 AS pri FROM integrations"
                       " WHERE project_id = ?1 AND name = ?2"
                       " ORDER BY pri LIMIT 1",
                       integration_row, out, "get integration", 2, project_id, id_or_name);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

/* ---- connections ---- */

#define CONNECTION_COLS                                                                        \
    "id, project_id, provider, group_ref, consumer_ref, auth_type, provider_metadata, scopes,"  \
    " status, expires_at, created_at, updated_at, version"

static json_t *connection_row(sqlite3_stmt *s)
{
    json_t *o = json_object();
    int bad = !o;
    put_str(o, "id", s, 0, &bad);
    put_str(o, "projectId", s, 1, &bad);
    put_str(o, "provider", s, 2, &bad);
    put_str(o, "groupRef", s, 3, &bad);
    put_opt_str(o, "consumerRef", s, 4, &bad);
    put_str(o, "authScheme", s, 5, &bad);
    put(o, "providerMetadata", col_json(s, 6), &bad);
    if (sqlite3_column_type(s, 7) != SQLITE_NULL)
        put(o, "scopes", col_json(s, 7), &bad);
    put_str(o, "status", s, 8, &bad);
    if (sqlite3_column_type(s, 9) != SQLITE_NULL)
        put_time(o, "accessTokenExpiresAt", s, 9, &bad);
    put_time(o, "createTime", s, 10, &bad);
    put_time(o, "updateTime", s, 11, &bad);
    put(o, "version", json_integer(sqlite3_column_int64(s, 12)), &bad);
    return finish(o, bad);
}

/* One connection of the project, and its sealed credentials when asked.
 * Caller holds the mutex. */
static int get_connection(pb_store *st, const char *project_id, const char *id, json_t **out,
                          char **sealed_out)
{
    const char *what = "get connection";
    sqlite3_stmt *s;
    int rc = prep_bind(st,
                       "SELECT " CONNECTION_COLS ", credentials_sealed FROM connections"
                       " WHERE project_id = ?1 AND id = ?2",
                       &s, what, 2, project_id, id);
    if (rc != PB_STORE_OK)
        return rc;
    rc = one_row(st, s, connection_row, out, what);
    if (rc == PB_STORE_OK && sealed_out) {
        *sealed_out = strdup(col_text(s, 13));
        if (!*sealed_out) {
            json_decref(*out);
            *out = NULL;
            rc = PB_STORE_ERR;
        }
    }
    stmt_done(st, s);
    return rc;
}

int pb_store_connection_create(pb_store *st, const char *project_id, const json_t *conn,
                               const char *sealed, json_t **out)
{
    if (out)
        *out = NULL;
    if (!st || !project_id || !json_is_object(conn) || !sealed || !*sealed)
        return PB_STORE_ERR;
    int bad = 0;
    const char *id = req_str(conn, "id");
    const char *provider = req_str(conn, "provider");
    const char *group_ref = req_str(conn, "groupRef");
    const char *auth_type = req_str(conn, "authType");
    const char *consumer_ref = opt_str(conn, "consumerRef", &bad);
    json_t *md = opt_obj(conn, "providerMetadata", &bad);
    json_t *scopes = json_object_get(conn, "scopes");
    if (json_is_null(scopes))
        scopes = NULL;
    if (scopes) {
        size_t i;
        json_t *v;
        if (!json_is_array(scopes))
            bad = 1;
        json_array_foreach(scopes, i, v)
        {
            if (!json_is_string(v))
                bad = 1;
        }
    }
    json_t *exp = json_object_get(conn, "expiresAt");
    int64_t expires_at = 0;
    if (exp && !json_is_null(exp)) {
        if (!json_is_integer(exp) || json_integer_value(exp) < 0)
            bad = 1;
        else
            expires_at = json_integer_value(exp);
    }
    if (bad || !id || !provider || !group_ref || !auth_type)
        return PB_STORE_ERR;
    char *md_text = md ? dump_json(md) : strdup("{}");
    char *scopes_text = scopes ? dump_json(scopes) : NULL;
    if (!md_text || (scopes && !scopes_text)) {
        free(md_text);
        free(scopes_text);
        return PB_STORE_ERR;
    }

    const char *what = "create connection";
    int64_t now = now_ms();
    json_t *c = NULL;
    sqlite3_stmt *s = NULL;
    pthread_mutex_lock(&st->mu);
    int rc = tx_begin(st);
    if (rc == PB_STORE_OK)
        rc = prepare(st,
                     "INSERT INTO connections(id, project_id, provider, group_ref, consumer_ref,"
                     " auth_type, credentials_sealed, scopes, provider_metadata, status,"
                     " expires_at, version, created_at, updated_at)"
                     " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'working', ?10, 1, ?11, ?11)",
                     &s, what);
    if (rc == PB_STORE_OK) {
        if (bind_text(s, 1, id) | bind_text(s, 2, project_id) | bind_text(s, 3, provider) |
            bind_text(s, 4, group_ref) | bind_text(s, 5, consumer_ref) |
            bind_text(s, 6, auth_type) | bind_text(s, 7, sealed) | bind_text(s, 8, scopes_text) |
            bind_text(s, 9, md_text) |
            (expires_at > 0 ? sqlite3_bind_int64(s, 10, expires_at) : sqlite3_bind_null(s, 10)) |
            sqlite3_bind_int64(s, 11, now))
            rc = db_fail(st, what);
        else
            rc = step_rc(st, sqlite3_step(s), what);
        stmt_done(st, s);
    }
    if (rc == PB_STORE_OK && out)
        rc = get_connection(st, project_id, id, &c, NULL);
    rc = tx_end(st, rc, 1);
    pthread_mutex_unlock(&st->mu);
    free(md_text);
    free(scopes_text);
    if (rc == PB_STORE_OK && out)
        *out = c;
    else
        json_decref(c);
    return rc;
}

int pb_store_connection_get(pb_store *st, const char *project_id, const char *id, json_t **out,
                            char **sealed_out)
{
    if (out)
        *out = NULL;
    if (sealed_out)
        *sealed_out = NULL;
    if (!st || !project_id || !id || !out)
        return PB_STORE_ERR;
    pthread_mutex_lock(&st->mu);
    int rc = get_connection(st, project_id, id, out, sealed_out);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

int pb_store_connection_list(pb_store *st, const char *project_id, const char *group_ref,
                             json_t **out)
{
    if (out)
        *out = NULL;
    if (!st || !project_id || !out)
        return PB_STORE_ERR;
    pthread_mutex_lock(&st->mu);
    int rc = fetch_all(st,
                       "SELECT " CONNECTION_COLS " FROM connections WHERE project_id = ?1"
                       " AND (?2 IS NULL OR group_ref = ?2) ORDER BY created_at, rowid",
                       connection_row, out, "list connections", 2, project_id, group_ref);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

int pb_store_connection_delete(pb_store *st, const char *project_id, const char *id)
{
    if (!st || !project_id || !id)
        return PB_STORE_ERR;
    const char *what = "delete connection";
    pthread_mutex_lock(&st->mu);
    int rc = tx_begin(st);
    if (rc == PB_STORE_OK)
        rc = exists(st, "SELECT 1 FROM connections WHERE project_id = ?1 AND id = ?2", what, 2,
                    project_id, id);
    if (rc == PB_STORE_OK) {
        int used = exists(st,
                          "SELECT 1 FROM installations WHERE project_id = ?1"
                          " AND connection_id = ?2 LIMIT 1",
                          what, 2, project_id, id);
        rc = used == PB_STORE_OK ? PB_STORE_CONFLICT
             : used == PB_STORE_NOTFOUND ? PB_STORE_OK
                                         : used;
    }
    if (rc == PB_STORE_OK) {
        sqlite3_stmt *s;
        rc = prep_bind(st, "DELETE FROM connections WHERE project_id = ?1 AND id = ?2", &s, what,
                       2, project_id, id);
        if (rc == PB_STORE_OK) {
            rc = step_rc(st, sqlite3_step(s), what);
            stmt_done(st, s);
        }
    }
    rc = tx_end(st, rc, 1);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

/* provider_metadata with merge's members set on top (a null member
 * removes the key); a new string or NULL. */
static char *merge_metadata(const char *current, const json_t *merge)
{
    json_t *md = json_loads(current, 0, NULL);
    if (!json_is_object(md)) {
        json_decref(md);
        md = json_object();
    }
    const char *k;
    json_t *v;
    int bad = !md;
    json_object_foreach((json_t *)merge, k, v)
    {
        if (json_is_null(v))
            json_object_del(md, k);
        else if (json_object_set(md, k, v) != 0)
            bad = 1;
    }
    char *out = bad ? NULL : dump_json(md);
    json_decref(md);
    return out;
}

int pb_store_connection_update_credentials(pb_store *st, const char *id,
                                           long long expected_version, const char *sealed,
                                           int64_t expires_at_ms, const json_t *metadata_merge,
                                           long long *new_version)
{
    if (!st || !id || !sealed || !*sealed || expires_at_ms < 0 ||
        (metadata_merge && !json_is_object(metadata_merge)))
        return PB_STORE_ERR;
    const char *what = "update connection credentials";
    char *md = NULL;
    sqlite3_stmt *s = NULL;
    pthread_mutex_lock(&st->mu);
    int rc = tx_begin(st);
    if (rc == PB_STORE_OK)
        rc = prep_bind(st, "SELECT version, provider_metadata FROM connections WHERE id = ?1", &s,
                       what, 1, id);
    if (rc == PB_STORE_OK) {
        int r = sqlite3_step(s);
        if (r == SQLITE_DONE)
            rc = PB_STORE_NOTFOUND;
        else if (r != SQLITE_ROW)
            rc = db_fail(st, what);
        else if (sqlite3_column_int64(s, 0) != expected_version)
            rc = PB_STORE_CONFLICT;
        else if (!(md = metadata_merge ? merge_metadata(col_text(s, 1), metadata_merge)
                                       : strdup(col_text(s, 1))))
            rc = PB_STORE_ERR;
        stmt_done(st, s);
        s = NULL;
    }
    if (rc == PB_STORE_OK)
        rc = prepare(st,
                     "UPDATE connections SET credentials_sealed = ?2, expires_at = ?3,"
                     " provider_metadata = ?4, status = 'working', refresh_failures = 0,"
                     " refresh_retry_at = NULL, version = version + 1, updated_at = ?5"
                     " WHERE id = ?1 AND version = ?6",
                     &s, what);
    if (rc == PB_STORE_OK) {
        if (bind_text(s, 1, id) | bind_text(s, 2, sealed) |
            (expires_at_ms > 0 ? sqlite3_bind_int64(s, 3, expires_at_ms)
                               : sqlite3_bind_null(s, 3)) |
            bind_text(s, 4, md) | sqlite3_bind_int64(s, 5, now_ms()) |
            sqlite3_bind_int64(s, 6, expected_version))
            rc = db_fail(st, what);
        else
            rc = step_rc(st, sqlite3_step(s), what);
        /* The write lock is held since the check: the row cannot move. */
        if (rc == PB_STORE_OK && sqlite3_changes(st->db) != 1)
            rc = PB_STORE_CONFLICT;
        stmt_done(st, s);
    }
    rc = tx_end(st, rc, 1);
    pthread_mutex_unlock(&st->mu);
    free(md);
    if (rc == PB_STORE_OK && new_version)
        *new_version = expected_version + 1;
    return rc;
}

int pb_store_connection_refresh_failed(pb_store *st, const char *id, int64_t retry_at_ms,
                                       const char *status)
{
    if (!st || !id)
        return PB_STORE_ERR;
    const char *what = "record failed refresh";
    sqlite3_stmt *s;
    pthread_mutex_lock(&st->mu);
    /* status NULL keeps the current one; retry_at_ms 0 clears the time. */
    int rc = prepare(st,
                     "UPDATE connections SET refresh_failures = refresh_failures + 1,"
                     " refresh_retry_at = ?2, status = coalesce(?3, status), updated_at = ?4"
                     " WHERE id = ?1",
                     &s, what);
    if (rc == PB_STORE_OK) {
        if (bind_text(s, 1, id) |
            (retry_at_ms > 0 ? sqlite3_bind_int64(s, 2, retry_at_ms) : sqlite3_bind_null(s, 2)) |
            bind_text(s, 3, status) | sqlite3_bind_int64(s, 4, now_ms()))
            rc = db_fail(st, what);
        else
            rc = step_rc(st, sqlite3_step(s), what);
        if (rc == PB_STORE_OK && sqlite3_changes(st->db) == 0)
            rc = PB_STORE_NOTFOUND;
        stmt_done(st, s);
    }
    if (rc == PB_STORE_OK)
        gen_bump(st);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

/* ---- OAuth states ---- */

int pb_store_oauth_state_put(pb_store *st, const char *state, const char *project_id,
                             const json_t *payload, int64_t expires_at_ms)
{
    if (!st || !state || !*state || !project_id || !payload)
        return PB_STORE_ERR;
    char *text = dump_json(payload);
    if (!text)
        return PB_STORE_ERR;
    const char *what = "put oauth state";
    sqlite3_stmt *s;
    pthread_mutex_lock(&st->mu);
    int rc = prepare(st,
                     "INSERT INTO oauth_states(state, project_id, payload, created_at, expires_at)"
                     " VALUES (?1, ?2, ?3, ?4, ?5)",
                     &s, what);
    if (rc == PB_STORE_OK) {
        if (bind_text(s, 1, state) | bind_text(s, 2, project_id) | bind_text(s, 3, text) |
            sqlite3_bind_int64(s, 4, now_ms()) | sqlite3_bind_int64(s, 5, expires_at_ms))
            rc = db_fail(st, what);
        else
            rc = step_rc(st, sqlite3_step(s), what);
        stmt_done(st, s);
    }
    pthread_mutex_unlock(&st->mu);
    free(text);
    return rc;
}

/* Runs a DELETE with one text parameter or one integer (when text is
 * NULL). */
static int delete_where(pb_store *st, const char *sql, const char *text, int64_t num,
                        const char *what)
{
    sqlite3_stmt *s;
    int rc = prepare(st, sql, &s, what);
    if (rc != PB_STORE_OK)
        return rc;
    if (text ? bind_text(s, 1, text) : sqlite3_bind_int64(s, 1, num))
        rc = db_fail(st, what);
    else
        rc = step_rc(st, sqlite3_step(s), what);
    stmt_done(st, s);
    return rc;
}

int pb_store_oauth_state_take(pb_store *st, const char *state, int64_t now, char *project_id_out,
                              size_t len, json_t **payload)
{
    if (project_id_out && len)
        project_id_out[0] = '\0';
    if (payload)
        *payload = NULL;
    if (!st || !state || (project_id_out && !len))
        return PB_STORE_ERR;
    const char *what = "take oauth state";
    json_t *p = NULL;
    int found = 0;
    sqlite3_stmt *s;
    pthread_mutex_lock(&st->mu);
    int rc = tx_begin(st);
    if (rc == PB_STORE_OK)
        rc = prep_bind(st, "SELECT project_id, payload, expires_at FROM oauth_states"
                           " WHERE state = ?1",
                       &s, what, 1, state);
    if (rc == PB_STORE_OK) {
        int r = sqlite3_step(s);
        if (r == SQLITE_ROW) {
            found = 1;
            /* Expired at expires_at itself. */
            if (sqlite3_column_int64(s, 2) <= now) {
                found = 0;
            } else if (project_id_out && strlen(col_text(s, 0)) >= len) {
                rc = PB_STORE_ERR; /* kept for a caller with a proper buffer */
            } else {
                if (project_id_out)
                    memcpy(project_id_out, col_text(s, 0), strlen(col_text(s, 0)) + 1);
                if (payload && !(p = col_json(s, 1)))
                    rc = PB_STORE_ERR;
            }
        } else if (r != SQLITE_DONE) {
            rc = db_fail(st, what);
        }
        stmt_done(st, s);
    }
    if (rc == PB_STORE_OK)
        rc = delete_where(st, "DELETE FROM oauth_states WHERE state = ?1", state, 0, what);
    /* Sweeps whatever else has expired. */
    if (rc == PB_STORE_OK)
        rc = delete_where(st, "DELETE FROM oauth_states WHERE expires_at <= ?1", NULL, now, what);
    rc = tx_end(st, rc, 0);
    pthread_mutex_unlock(&st->mu);
    if (rc == PB_STORE_OK && !found)
        rc = PB_STORE_NOTFOUND;
    if (rc == PB_STORE_OK) {
        if (payload)
            *payload = p;
        else
            json_decref(p);
    } else {
        json_decref(p);
        if (project_id_out && len)
            project_id_out[0] = '\0';
    }
    return rc;
}

/* ---- installations ---- */

#define INSTALLATION_COLS                                                                      \
    "id, project_id, integration_id, group_ref, connection_id, config, created_at, updated_at"

static json_t *installation_row(sqlite3_stmt *s)
{
    json_t *o = json_object();
    int bad = !o;
    put_str(o, "id", s, 0, &bad);
    put_str(o, "projectId", s, 1, &bad);
    put_str(o, "integrationId", s, 2, &bad);
    put_str(o, "groupRef", s, 3, &bad);
    put_opt_str(o, "connectionId", s, 4, &bad);
    put(o, "config", col_json(s, 5), &bad);
    put_time(o, "createTime", s, 6, &bad);
    put_time(o, "updateTime", s, 7, &bad);
    return finish(o, bad);
}

static int get_installation(pb_store *st, const char *project_id, const char *id, json_t **out)
{
    return fetch_one(st,
                     "SELECT " INSTALLATION_COLS " FROM installations"
                     " WHERE project_id = ?1 AND id = ?2",
                     installation_row, out, "get installation", 2, project_id, id);
}

static int connection_in_project(pb_store *st, const char *project_id, const char *id,
                                 const char *what)
{
    return exists(st, "SELECT 1 FROM connections WHERE project_id = ?1 AND id = ?2", what, 2,
                  project_id, id);
}

int pb_store_installation_create(pb_store *st, const char *project_id, const json_t *inst,
                                 json_t **out)
{
    if (out)
        *out = NULL;
    if (!st || !project_id || !json_is_object(inst))
        return PB_STORE_ERR;
    int bad = 0;
    const char *id = req_str(inst, "id");
    const char *integration_id = req_str(inst, "integrationId");
    const char *group_ref = req_str(inst, "groupRef");
    const char *connection_id = opt_str(inst, "connectionId", &bad);
    json_t *config = opt_obj(inst, "config", &bad);
    if (bad || !id || !integration_id || !group_ref)
        return PB_STORE_ERR;
    char *config_text = config ? dump_json(config) : strdup("{}");
    if (!config_text)
        return PB_STORE_ERR;

    const char *what = "create installation";
    int64_t now = now_ms();
    json_t *i = NULL;
    sqlite3_stmt *s;
    pthread_mutex_lock(&st->mu);
    int rc = tx_begin(st);
    /* Checked first so that a missing integration or connection is told
     * apart from a second installation for the group. */
    if (rc == PB_STORE_OK)
        rc = exists(st, "SELECT 1 FROM integrations WHERE project_id = ?1 AND id = ?2", what, 2,
                    project_id, integration_id);
    if (rc == PB_STORE_OK && connection_id)
        rc = connection_in_project(st, project_id, connection_id, what);
    if (rc == PB_STORE_OK)
        rc = prepare(st,
                     "INSERT INTO installations(id, project_id, integration_id, group_ref,"
                     " connection_id, config, created_at, updated_at)"
                     " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
                     &s, what);
    if (rc == PB_STORE_OK) {
        if (bind_text(s, 1, id) | bind_text(s, 2, project_id) | bind_text(s, 3, integration_id) |
            bind_text(s, 4, group_ref) | bind_text(s, 5, connection_id) |
            bind_text(s, 6, config_text) | sqlite3_bind_int64(s, 7, now))
            rc = db_fail(st, what);
        else
            rc = step_rc(st, sqlite3_step(s), what);
        stmt_done(st, s);
    }
    if (rc == PB_STORE_OK && out)
        rc = get_installation(st, project_id, id, &i);
    rc = tx_end(st, rc, 1);
    pthread_mutex_unlock(&st->mu);
    free(config_text);
    if (rc == PB_STORE_OK && out)
        *out = i;
    else
        json_decref(i);
    return rc;
}

int pb_store_installation_get(pb_store *st, const char *project_id, const char *id,
                              json_t **out)
{
    if (out)
        *out = NULL;
    if (!st || !project_id || !id || !out)
        return PB_STORE_ERR;
    pthread_mutex_lock(&st->mu);
    int rc = get_installation(st, project_id, id, out);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

int pb_store_installation_find(pb_store *st, const char *project_id, const char *integration_id,
                               const char *group_ref, json_t **out)
{
    if (out)
        *out = NULL;
    if (!st || !project_id || !integration_id || !group_ref || !out)
        return PB_STORE_ERR;
    pthread_mutex_lock(&st->mu);
    int rc = fetch_one(st,
                       "SELECT " INSTALLATION_COLS " FROM installations WHERE project_id = ?1"
                       " AND integration_id = ?2 AND group_ref = ?3",
                       installation_row, out, "find installation", 3, project_id,
                       integration_id, group_ref);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

int pb_store_installation_list(pb_store *st, const char *project_id, const char *integration_id,
                               const char *group_ref, json_t **out)
{
    if (out)
        *out = NULL;
    if (!st || !project_id || !out)
        return PB_STORE_ERR;
    pthread_mutex_lock(&st->mu);
    int rc = fetch_all(st,
                       "SELECT " INSTALLATION_COLS " FROM installations WHERE project_id = ?1"
                       " AND (?2 IS NULL OR integration_id = ?2)"
                       " AND (?3 IS NULL OR group_ref = ?3) ORDER BY created_at, rowid",
                       installation_row, out, "list installations", 3, project_id,
                       integration_id, group_ref);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

int pb_store_installation_update(pb_store *st, const char *project_id, const char *id,
                                 const char *connection_id, const json_t *config, json_t **out)
{
    if (out)
        *out = NULL;
    if (!st || !project_id || !id || !json_is_object(config))
        return PB_STORE_ERR;
    char *config_text = dump_json(config);
    if (!config_text)
        return PB_STORE_ERR;
    const char *what = "update installation";
    json_t *i = NULL;
    sqlite3_stmt *s;
    pthread_mutex_lock(&st->mu);
    int rc = tx_begin(st);
    if (rc == PB_STORE_OK)
        rc = exists(st, "SELECT 1 FROM installations WHERE project_id = ?1 AND id = ?2", what, 2,
                    project_id, id);
    if (rc == PB_STORE_OK && connection_id)
        rc = connection_in_project(st, project_id, connection_id, what);
    if (rc == PB_STORE_OK)
        rc = prepare(st,
                     "UPDATE installations SET connection_id = ?3, config = ?4, updated_at = ?5"
                     " WHERE project_id = ?1 AND id = ?2",
                     &s, what);
    if (rc == PB_STORE_OK) {
        if (bind_text(s, 1, project_id) | bind_text(s, 2, id) | bind_text(s, 3, connection_id) |
            bind_text(s, 4, config_text) | sqlite3_bind_int64(s, 5, now_ms()))
            rc = db_fail(st, what);
        else
            rc = step_rc(st, sqlite3_step(s), what);
        stmt_done(st, s);
    }
    if (rc == PB_STORE_OK && out)
        rc = get_installation(st, project_id, id, &i);
    rc = tx_end(st, rc, 1);
    pthread_mutex_unlock(&st->mu);
    free(config_text);
    if (rc == PB_STORE_OK && out)
        *out = i;
    else
        json_decref(i);
    return rc;
}

int pb_store_installation_delete(pb_store *st, const char *project_id, const char *id)
{
    if (!st || !project_id || !id)
        return PB_STORE_ERR;
    const char *what = "delete installation";
    sqlite3_stmt *s;
    pthread_mutex_lock(&st->mu);
    /* Its operations, queued writes and throttle state go with it
     * (ON DELETE CASCADE). */
    int rc = prep_bind(st, "DELETE FROM installations WHERE project_id = ?1 AND id = ?2", &s,
                       what, 2, project_id, id);
    if (rc == PB_STORE_OK) {
        rc = step_rc(st, sqlite3_step(s), what);
        if (rc == PB_STORE_OK && sqlite3_changes(st->db) == 0)
            rc = PB_STORE_NOTFOUND;
        stmt_done(st, s);
    }
    if (rc == PB_STORE_OK)
        gen_bump(st);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

/* ---- proxy: activity log and throttle state --------------------------------
 *
 * Neither table is one that caches hold (see pb_store_generation), so these
 * writes never bump the generation. */

/* RFC 3339 UTC with milliseconds: "2026-11-26T12:00:00.123Z". */
static void fmt_time_ms(int64_t ms, char out[40])
{
    int64_t secs = ms >= 0 ? ms / 1000 : (ms - 999) / 1000;
    int frac = (int)(ms - secs * 1000);
    time_t t = (time_t)secs;
    struct tm tm;
    char base[32];
    if (!gmtime_r(&t, &tm) || strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm) == 0) {
        snprintf(base, sizeof base, "1970-01-01T00:00:00");
        frac = 0;
    }
    snprintf(out, 40, "%s.%03dZ", base, frac);
}

/* One activity record, checked before anything is written. Strings point
 * into the caller's JSON. */
struct act_rec {
    int64_t time, attempts, duration_ms, bytes_in, bytes_out;
    int64_t status; /* -1: no provider answer */
    const char *project_id, *installation_id, *provider, *method, *path, *request_id, *error;
};

/* A string member without NUL bytes: *out stays NULL when absent or null
 * (allowed only when `optional`), *bad set otherwise; required ones must
 * be non-empty. */
static void act_str(const json_t *o, const char *key, int optional, const char **out, int *bad)
{
    json_t *v = json_object_get(o, key);
    *out = NULL;
    if (!v || json_is_null(v)) {
        if (!optional)
            *bad = 1;
        return;
    }
    if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v) ||
        (!optional && json_string_length(v) == 0)) {
        *bad = 1;
        return;
    }
    *out = json_string_value(v);
}

/* An integer member in [min, max]; absent or null sets *bad unless
 * `optional` (then *out is -1). */
static void act_int(const json_t *o, const char *key, int optional, int64_t min, int64_t max,
                    int64_t *out, int *bad)
{
    json_t *v = json_object_get(o, key);
    *out = -1;
    if (!v || json_is_null(v)) {
        if (!optional)
            *bad = 1;
        return;
    }
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max) {
        *bad = 1;
        return;
    }
    *out = json_integer_value(v);
}

static int act_check(const json_t *e, struct act_rec *r)
{
    if (!json_is_object(e))
        return -1;
    int bad = 0;
    act_int(e, "time", 0, 0, INT64_MAX, &r->time, &bad);
    act_str(e, "projectId", 0, &r->project_id, &bad);
    act_str(e, "installationId", 1, &r->installation_id, &bad);
    act_str(e, "provider", 1, &r->provider, &bad);
    act_str(e, "method", 0, &r->method, &bad);
    act_str(e, "path", 0, &r->path, &bad);
    act_int(e, "status", 1, 100, 999, &r->status, &bad);
    act_int(e, "attempts", 0, 0, INT64_MAX, &r->attempts, &bad);
    act_int(e, "durationMs", 0, 0, INT64_MAX, &r->duration_ms, &bad);
    act_int(e, "bytesIn", 0, 0, INT64_MAX, &r->bytes_in, &bad);
    act_int(e, "bytesOut", 0, 0, INT64_MAX, &r->bytes_out, &bad);
    act_str(e, "requestId", 0, &r->request_id, &bad);
    act_str(e, "error", 1, &r->error, &bad);
    return bad ? -1 : 0;
}

static int act_insert(pb_store *st, sqlite3_stmt *s, const struct act_rec *r)
{
    const char *what = "append activity";
    sqlite3_reset(s);
    if (sqlite3_bind_int64(s, 1, r->time) | bind_text(s, 2, r->project_id) |
        bind_text(s, 3, r->installation_id) | bind_text(s, 4, r->provider) |
        bind_text(s, 5, r->method) | bind_text(s, 6, r->path) |
        (r->status >= 0 ? sqlite3_bind_int64(s, 7, r->status) : sqlite3_bind_null(s, 7)) |
        sqlite3_bind_int64(s, 8, r->attempts) | sqlite3_bind_int64(s, 9, r->duration_ms) |
        sqlite3_bind_int64(s, 10, r->bytes_in) | sqlite3_bind_int64(s, 11, r->bytes_out) |
        bind_text(s, 12, r->request_id) | bind_text(s, 13, r->error))
        return db_fail(st, what);
    return step_rc(st, sqlite3_step(s), what);
}

int pb_store_activity_append(pb_store *st, const json_t *records)
{
    if (!st || !json_is_array(records))
        return PB_STORE_ERR;
    size_t n = json_array_size(records);
    if (n == 0)
        return PB_STORE_OK;
    struct act_rec *recs = calloc(n, sizeof *recs);
    if (!recs)
        return PB_STORE_ERR;
    /* Every element is checked before anything is written. */
    for (size_t i = 0; i < n; i++) {
        if (act_check(json_array_get(records, i), &recs[i]) != 0) {
            free(recs);
            return PB_STORE_ERR;
        }
    }
    const char *what = "append activity";
    sqlite3_stmt *s = NULL;
    pthread_mutex_lock(&st->mu);
    int rc = tx_begin(st);
    if (rc == PB_STORE_OK)
        rc = prepare(st,
                     "INSERT INTO activity(time, project_id, installation_id, provider, method,"
                     " path, status, attempts, duration_ms, bytes_in, bytes_out, request_id,"
                     " error) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                     &s, what);
    for (size_t i = 0; i < n && rc == PB_STORE_OK; i++)
        rc = act_insert(st, s, &recs[i]);
    stmt_done(st, s);
    rc = tx_end(st, rc, 0);
    pthread_mutex_unlock(&st->mu);
    free(recs);
    return rc;
}

#define ACTIVITY_COLS                                                                          \
    "id, time, project_id, installation_id, provider, method, path, status, attempts,"        \
    " duration_ms, bytes_in, bytes_out, request_id, error"

/* "id" is the log's integer sequence number (JSON integer). */
static json_t *activity_row(sqlite3_stmt *s)
{
    json_t *o = json_object();
    int bad = !o;
    char ts[40];
    fmt_time_ms(sqlite3_column_int64(s, 1), ts);
    put(o, "id", json_integer(sqlite3_column_int64(s, 0)), &bad);
    put(o, "time", json_string(ts), &bad);
    put_str(o, "projectId", s, 2, &bad);
    put_opt_str(o, "installationId", s, 3, &bad);
    put_opt_str(o, "provider", s, 4, &bad);
    put_str(o, "method", s, 5, &bad);
    put_str(o, "path", s, 6, &bad);
    if (sqlite3_column_type(s, 7) != SQLITE_NULL)
        put(o, "status", json_integer(sqlite3_column_int64(s, 7)), &bad);
    put(o, "attempts", json_integer(sqlite3_column_int64(s, 8)), &bad);
    put(o, "durationMs", json_integer(sqlite3_column_int64(s, 9)), &bad);
    put(o, "bytesIn", json_integer(sqlite3_column_int64(s, 10)), &bad);
    put(o, "bytesOut", json_integer(sqlite3_column_int64(s, 11)), &bad);
    put_opt_str(o, "requestId", s, 12, &bad);
    put_opt_str(o, "error", s, 13, &bad);
    return finish(o, bad);
}

int pb_store_activity_list(pb_store *st, const char *project_id, const char *installation_id,
                           int limit, json_t **out)
{
    if (out)
        *out = NULL;
    if (!st || !project_id || !out)
        return PB_STORE_ERR;
    if (limit < 1)
        limit = 1;
    if (limit > 1000)
        limit = 1000;
    json_t *arr = json_array();
    if (!arr)
        return PB_STORE_ERR;
    const char *what = "list activity";
    sqlite3_stmt *s;
    pthread_mutex_lock(&st->mu);
    /* Two statements, so each walks its own index backwards
     * (activity_installation or activity_project) and stops at the limit. */
    int rc = installation_id
                 ? prep_bind(st,
                             "SELECT " ACTIVITY_COLS " FROM activity WHERE installation_id = ?1"
                             " AND project_id = ?2 ORDER BY id DESC LIMIT ?3",
                             &s, what, 2, installation_id, project_id)
                 : prep_bind(st,
                             "SELECT " ACTIVITY_COLS " FROM activity WHERE project_id = ?1"
                             " ORDER BY id DESC LIMIT ?2",
                             &s, what, 1, project_id);
    if (rc == PB_STORE_OK) {
        if (sqlite3_bind_int(s, installation_id ? 3 : 2, limit) != SQLITE_OK)
            rc = db_fail(st, what);
        else
            rc = all_rows(st, s, activity_row, arr, what);
        stmt_done(st, s);
    }
    pthread_mutex_unlock(&st->mu);
    if (rc == PB_STORE_OK)
        *out = arr;
    else
        json_decref(arr);
    return rc;
}

int pb_store_rate_limit_set(pb_store *st, const char *installation_id,
                            int64_t blocked_until_ms, int attempts, int retryable)
{
    if (!st || !installation_id || !*installation_id || blocked_until_ms < 0 || attempts < 0)
        return PB_STORE_ERR;
    const char *what = "set rate limit";
    sqlite3_stmt *s;
    pthread_mutex_lock(&st->mu);
    /* An unknown installation fails the foreign key: PB_STORE_NOTFOUND. */
    int rc = prepare(st,
                     "INSERT INTO rate_limits(installation_id, blocked_until_ms,"
                     " backoff_attempts, retryable, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)"
                     " ON CONFLICT(installation_id) DO UPDATE SET"
                     " blocked_until_ms = excluded.blocked_until_ms,"
                     " backoff_attempts = excluded.backoff_attempts,"
                     " retryable = excluded.retryable, updated_at = excluded.updated_at",
                     &s, what);
    if (rc == PB_STORE_OK) {
        if (bind_text(s, 1, installation_id) | sqlite3_bind_int64(s, 2, blocked_until_ms) |
            sqlite3_bind_int(s, 3, attempts) | sqlite3_bind_int(s, 4, retryable ? 1 : 0) |
            sqlite3_bind_int64(s, 5, now_ms()))
            rc = db_fail(st, what);
        else
            rc = step_rc(st, sqlite3_step(s), what);
        stmt_done(st, s);
    }
    pthread_mutex_unlock(&st->mu);
    return rc;
}

int pb_store_rate_limit_get(pb_store *st, const char *installation_id,
                            int64_t *blocked_until_ms, int *attempts, int *retryable)
{
    if (!st || !installation_id)
        return PB_STORE_ERR;
    const char *what = "get rate limit";
    sqlite3_stmt *s;
    pthread_mutex_lock(&st->mu);
    int rc = prep_bind(st,
                       "SELECT blocked_until_ms, backoff_attempts, retryable FROM rate_limits"
                       " WHERE installation_id = ?1",
                       &s, what, 1, installation_id);
    if (rc == PB_STORE_OK) {
        int r = sqlite3_step(s);
        if (r == SQLITE_ROW) {
            if (blocked_until_ms)
                *blocked_until_ms = sqlite3_column_int64(s, 0);
            if (attempts)
                *attempts = sqlite3_column_int(s, 1);
            if (retryable)
                *retryable = sqlite3_column_int(s, 2);
        } else {
            rc = r == SQLITE_DONE ? PB_STORE_NOTFOUND : db_fail(st, what);
        }
        stmt_done(st, s);
    }
    pthread_mutex_unlock(&st->mu);
    return rc;
}

/* ---- Write API: operations and the auto-batch queue -------------------------
 *
 * Claiming is one short write transaction: select the due ids (in_progress,
 * next_attempt_at <= now, claim absent or expired) in next_attempt_at order,
 * then mark each one claimed. A claim also moves next_attempt_at to
 * claimed_until, so an abandoned claim comes due again by itself. On
 * PostgreSQL the same select takes FOR UPDATE SKIP LOCKED; here BEGIN
 * IMMEDIATE serializes claimers, threads and processes alike.
 *
 * An auto-batch bucket is an in_progress, unclaimed operation with 'open'
 * write_queue rows for a bucket_key. Its next_attempt_at is the flush time
 * (now once the 100th write joins), so the ordinary claim sends it.
 * Claiming turns its rows 'sending', so no later write joins a batch being
 * sent (a retried batch stays closed too); finishing turns them 'done'.
 *
 * Finish and retry act only on an in_progress operation (otherwise
 * PB_STORE_CONFLICT), so a worker whose claim expired cannot overwrite
 * another worker's outcome. Operations are not cached data: no generation
 * bump. */

#define OPERATION_COLS                                                                         \
    "id, project_id, integration_id, installation_id, action_type, status, result, metadata,"  \
    " attempts, last_attempt_at, created_at, updated_at"

#define QUEUE_BUCKET_MAX 100
/* A page token carries at most this many bytes ("ms:id"). */
#define PAGE_TOKEN_MAX 256

/* The API shape; metadata.retry is built from the attempt columns. */
static json_t *operation_row(sqlite3_stmt *s)
{
    json_t *o = json_object();
    json_t *md = col_json(s, 7);
    int bad = !o;
    if (!json_is_object(md)) {
        json_decref(md);
        md = json_object();
    }
    json_t *retry = json_object();
    put(retry, "attempts", json_integer(sqlite3_column_int64(s, 8)), &bad);
    if (sqlite3_column_type(s, 9) != SQLITE_NULL)
        put_time(retry, "lastAttempt", s, 9, &bad);
    put(md, "retry", retry, &bad);
    put_str(o, "id", s, 0, &bad);
    put_str(o, "projectId", s, 1, &bad);
    put_str(o, "integrationId", s, 2, &bad);
    put_str(o, "installationId", s, 3, &bad);
    put_str(o, "actionType", s, 4, &bad);
    put_str(o, "status", s, 5, &bad);
    put_opt_str(o, "result", s, 6, &bad);
    put(o, "metadata", md, &bad);
    put_time(o, "createTime", s, 10, &bad);
    put_time(o, "updateTime", s, 11, &bad);
    return finish(o, bad);
}

static int get_operation(pb_store *st, const char *project_id, const char *id, json_t **out)
{
    return fetch_one(st,
                     "SELECT " OPERATION_COLS " FROM operations WHERE project_id = ?1 AND id = ?2",
                     operation_row, out, "get operation", 2, project_id, id);
}

static int bind_ms_or_null(sqlite3_stmt *s, int i, int64_t v)
{
    return v >= 0 ? sqlite3_bind_int64(s, i, v) : sqlite3_bind_null(s, i);
}

/* The installation exists in the project and belongs to the integration
 * (the foreign keys check each alone). */
static int installation_of(pb_store *st, const char *project_id, const char *integration_id,
                           const char *installation_id, const char *what)
{
    return exists(st,
                  "SELECT 1 FROM installations WHERE project_id = ?1 AND id = ?2"
                  " AND integration_id = ?3",
                  what, 3, project_id, installation_id, integration_id);
}

struct op_insert {
    const char *id, *project_id, *integration_id, *installation_id, *status, *result;
    const char *metadata, *request; /* JSON text; request may be NULL */
    int64_t next_attempt_at, deadline_at; /* -1: NULL */
    int64_t now;
};

static int insert_operation(pb_store *st, const struct op_insert *op, const char *what)
{
    sqlite3_stmt *s;
    int rc = prepare(st,
                     "INSERT INTO operations(id, project_id, integration_id, installation_id,"
                     " status, result, metadata, request, next_attempt_at, deadline_at,"
                     " created_at, updated_at)"
                     " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11)",
                     &s, what);
    if (rc != PB_STORE_OK)
        return rc;
    if (bind_text(s, 1, op->id) | bind_text(s, 2, op->project_id) |
        bind_text(s, 3, op->integration_id) | bind_text(s, 4, op->installation_id) |
        bind_text(s, 5, op->status) | bind_text(s, 6, op->result) |
        bind_text(s, 7, op->metadata) | bind_text(s, 8, op->request) |
        bind_ms_or_null(s, 9, op->next_attempt_at) | bind_ms_or_null(s, 10, op->deadline_at) |
        sqlite3_bind_int64(s, 11, op->now))
        rc = db_fail(st, what);
    else
        rc = step_rc(st, sqlite3_step(s), what);
    stmt_done(st, s);
    return rc;
}

static int valid_status(const char *status)
{
    return strcmp(status, "in_progress") == 0 || strcmp(status, "success") == 0 ||
           strcmp(status, "failure") == 0;
}

/* ---- the group committer ----
 *
 * Operation creates and queued writes are the Write API's acknowledged
 * writes: each must be committed (synchronous=FULL) before its caller
 * answers, and one fsync per write is what bounded throughput; the workers'
 * claims, finishes and retries come just as often. So a caller of any of
 * these queues its statements as a job and waits; whoever finds no commit
 * running becomes the leader, takes every queued job (up to GC_MAX), runs them in
 * ONE BEGIN IMMEDIATE ... COMMIT, each job inside its own SAVEPOINT, and
 * wakes the waiters with their own results. While the leader waits for its
 * fsync the next group gathers, so the group size follows the load and a
 * lone caller waits for nobody.
 *
 * A job that fails is rolled back to its savepoint: it alone gets its
 * error, the rest commit. When SQLite abandons the whole transaction (an
 * I/O error, a full disk), the group starts over without the failed job,
 * so an error still reaches only the caller whose statement met it, unless
 * the COMMIT itself fails: then nothing of the group was stored and every
 * member gets PB_STORE_ERR. */

#define GC_MAX 256

static void gc_run(pb_store *st, struct gc_job *batch)
{
    const char *what = "group commit";
    struct gc_job *j;
    for (j = batch; j; j = j->next) {
        j->failed = 0;
        j->rc = PB_STORE_ERR;
    }
    pthread_mutex_lock(&st->mu);
    for (;;) {
        int rc = tx_begin(st), restart = 0;
        for (j = batch; j && rc == PB_STORE_OK; j = j->next) {
            if (j->failed)
                continue;
            rc = exec_sql(st, "SAVEPOINT pb_job", what);
            if (rc != PB_STORE_OK)
                break;
            int r = j->run(st, j);
            if (r == PB_STORE_OK) {
                rc = exec_sql(st, "RELEASE pb_job", what);
                continue;
            }
            j->failed = 1;
            j->rc = r;
            /* SQLite may have rolled the whole transaction back itself. */
            if (sqlite3_get_autocommit(st->db) ||
                exec_sql(st, "ROLLBACK TO pb_job", what) != PB_STORE_OK ||
                exec_sql(st, "RELEASE pb_job", what) != PB_STORE_OK) {
                restart = 1;
                break;
            }
        }
        if (restart) {
            /* Nothing of this attempt is kept; the others run again. */
            tx_rollback(st);
            continue;
        }
        if (rc == PB_STORE_OK)
            rc = tx_commit(st); /* rolls back when it fails */
        else
            tx_rollback(st);
        for (j = batch; j; j = j->next)
            if (!j->failed)
                j->rc = rc;
        break;
    }
    pthread_mutex_unlock(&st->mu);
}

/* Queues j, and returns its result once the group that held it committed
 * (or failed). */
static int gc_submit(pb_store *st, struct gc_job *j)
{
    j->next = NULL;
    j->done = 0;
    pthread_mutex_lock(&st->gc_mu);
    if (st->gc_tail)
        st->gc_tail->next = j;
    else
        st->gc_head = j;
    st->gc_tail = j;
    st->gc_queued++;
    while (!j->done) {
        if (st->gc_busy || st->gc_hold || !st->gc_head) {
            pthread_cond_wait(&st->gc_cv, &st->gc_mu);
            continue;
        }
        /* Lead: take the queue (our own job is in it, or in a later
         * group this thread leads too). */
        struct gc_job *batch = st->gc_head, *last = batch;
        int n = 1;
        while (last->next && n < GC_MAX) {
            last = last->next;
            n++;
        }
        st->gc_head = last->next;
        if (!st->gc_head)
            st->gc_tail = NULL;
        last->next = NULL;
        st->gc_queued -= n;
        st->gc_busy = 1;
        pthread_mutex_unlock(&st->gc_mu);
        gc_run(st, batch);
        pthread_mutex_lock(&st->gc_mu);
        for (struct gc_job *b = batch, *nx; b; b = nx) {
            nx = b->next;
            b->done = 1;
        }
        st->gc_busy = 0;
        pthread_cond_broadcast(&st->gc_cv);
    }
    int rc = j->rc;
    pthread_mutex_unlock(&st->gc_mu);
    return rc;
}

uint64_t pb_store_testing_commits(pb_store *st)
{
    return st ? atomic_load_explicit(&st->commits, memory_order_relaxed) : 0;
}

void pb_store_testing_hold_commits(pb_store *st, int hold)
{
    if (!st)
        return;
    pthread_mutex_lock(&st->gc_mu);
    st->gc_hold = hold != 0;
    pthread_cond_broadcast(&st->gc_cv);
    pthread_mutex_unlock(&st->gc_mu);
}

int pb_store_testing_queued(pb_store *st)
{
    if (!st)
        return 0;
    pthread_mutex_lock(&st->gc_mu);
    int n = st->gc_queued;
    pthread_mutex_unlock(&st->gc_mu);
    return n;
}

struct create_job {
    struct gc_job base;
    const char *project_id;
    struct op_insert ins;
    int want_out;
    json_t *out;
};

static int create_run(pb_store *st, struct gc_job *j)
{
    struct create_job *c = (struct create_job *)j;
    const char *what = "create operation";
    json_decref(c->out);
    c->out = NULL;
    int rc = installation_of(st, c->project_id, c->ins.integration_id, c->ins.installation_id,
                             what);
    if (rc == PB_STORE_OK)
        rc = insert_operation(st, &c->ins, what);
    if (rc == PB_STORE_OK && c->want_out)
        rc = get_operation(st, c->project_id, c->ins.id, &c->out);
    return rc;
}

int pb_store_operation_create(pb_store *st, const char *project_id, const json_t *op,
                              json_t **out)
{
    if (out)
        *out = NULL;
    if (!st || !project_id || !json_is_object(op))
        return PB_STORE_ERR;
    int bad = 0;
    struct op_insert ins = {
        .id = req_str(op, "id"),
        .project_id = project_id,
        .integration_id = req_str(op, "integrationId"),
        .installation_id = req_str(op, "installationId"),
        .status = opt_str(op, "status", &bad),
        .result = opt_str(op, "result", &bad),
    };
    json_t *md = opt_obj(op, "metadata", &bad);
    json_t *req = opt_obj(op, "request", &bad);
    act_int(op, "nextAttemptAt", 1, 0, INT64_MAX, &ins.next_attempt_at, &bad);
    act_int(op, "deadlineAt", 1, 0, INT64_MAX, &ins.deadline_at, &bad);
    if (!ins.status)
        ins.status = "in_progress";
    /* A finished operation has nothing left to attempt. */
    if (bad || !ins.id || !ins.integration_id || !ins.installation_id ||
        !valid_status(ins.status) ||
        (strcmp(ins.status, "in_progress") != 0 && ins.next_attempt_at >= 0))
        return PB_STORE_ERR;
    char *md_text = md ? dump_json(md) : strdup("{}");
    char *req_text = req ? dump_json(req) : NULL;
    if (!md_text || (req && !req_text)) {
        free(md_text);
        free(req_text);
        return PB_STORE_ERR;
    }
    ins.metadata = md_text;
    ins.request = req_text;
    ins.now = now_ms();

    /* Committed (WAL, synchronous=FULL) before this returns. */
    struct create_job c = {
        .base = {.run = create_run},
        .project_id = project_id,
        .ins = ins,
        .want_out = out != NULL,
    };
    int rc = gc_submit(st, &c.base);
    free(md_text);
    free(req_text);
    if (rc == PB_STORE_OK && out)
        *out = c.out;
    else
        json_decref(c.out);
    return rc;
}

int pb_store_operation_get(pb_store *st, const char *project_id, const char *id, json_t **out)
{
    if (out)
        *out = NULL;
    if (!st || !project_id || !id || !out)
        return PB_STORE_ERR;
    pthread_mutex_lock(&st->mu);
    int rc = get_operation(st, project_id, id, out);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

/* Page tokens: lowercase hex of "<created_at ms>:<id>" of the last
 * operation shown. Opaque to clients, and keyset paging stays exact while
 * new operations arrive. */
static char *page_token_encode(int64_t created_ms, const char *id)
{
    char raw[PAGE_TOKEN_MAX + 1];
    int n = snprintf(raw, sizeof raw, "%lld:%s", (long long)created_ms, id);
    if (n < 0 || n > PAGE_TOKEN_MAX)
        return NULL;
    char *tok = malloc((size_t)n * 2 + 1);
    if (!tok)
        return NULL;
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < n; i++) {
        tok[2 * i] = hex[(unsigned char)raw[i] >> 4];
        tok[2 * i + 1] = hex[(unsigned char)raw[i] & 15];
    }
    tok[2 * n] = '\0';
    return tok;
}

static int hex_val(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* 0 and the position, or -1 when the token is not one we made. */
static int page_token_decode(const char *tok, int64_t *created_ms, char id[PAGE_TOKEN_MAX + 1])
{
    size_t len = strlen(tok);
    if (len == 0 || len % 2 != 0 || len / 2 > PAGE_TOKEN_MAX)
        return -1;
    char raw[PAGE_TOKEN_MAX + 1];
    size_t n = len / 2;
    for (size_t i = 0; i < n; i++) {
        int hi = hex_val(tok[2 * i]), lo = hex_val(tok[2 * i + 1]);
        if (hi < 0 || lo < 0 || (hi | lo) == 0)
            return -1; /* not hex, or a NUL byte */
        raw[i] = (char)(hi << 4 | lo);
    }
    raw[n] = '\0';
    char *colon = strchr(raw, ':');
    if (!colon || colon == raw || colon - raw > 18 || colon[1] == '\0')
        return -1;
    int64_t ms = 0;
    for (const char *p = raw; p < colon; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        ms = ms * 10 + (*p - '0');
    }
    *created_ms = ms;
    memcpy(id, colon + 1, strlen(colon + 1) + 1);
    return 0;
}

int pb_store_operation_list(pb_store *st, const char *project_id, const char *installation_id,
                            int page_size, const char *page_token, json_t **out)
{
    if (out)
        *out = NULL;
    if (!st || !project_id || !installation_id || !out)
        return PB_STORE_ERR;
    if (page_size < 1)
        page_size = 1;
    if (page_size > 100)
        page_size = 100;
    int64_t after_ms = 0;
    char after_id[PAGE_TOKEN_MAX + 1];
    int after = page_token && *page_token;
    if (after && page_token_decode(page_token, &after_ms, after_id) != 0)
        return PB_STORE_NOTFOUND;

    json_t *ops = json_array();
    json_t *res = json_object();
    if (!ops || !res || json_object_set(res, "operations", ops) != 0) {
        json_decref(ops);
        json_decref(res);
        return PB_STORE_ERR;
    }
    const char *what = "list operations";
    char *next = NULL;
    sqlite3_stmt *s;
    pthread_mutex_lock(&st->mu);
    /* One row more than the page tells whether another page exists; the
     * row-value bound walks operations_installation. */
    int rc = after ? prep_bind(st,
                               "SELECT " OPERATION_COLS " FROM operations WHERE project_id = ?1"
                               " AND installation_id = ?2 AND (created_at, id) < (?4, ?3)"
                               " ORDER BY created_at DESC, id DESC LIMIT ?5",
                               &s, what, 3, project_id, installation_id, after_id)
                   : prep_bind(st,
                               "SELECT " OPERATION_COLS " FROM operations WHERE project_id = ?1"
                               " AND installation_id = ?2"
                               " ORDER BY created_at DESC, id DESC LIMIT ?5",
                               &s, what, 2, project_id, installation_id);
    if (rc == PB_STORE_OK) {
        if ((after && sqlite3_bind_int64(s, 4, after_ms) != SQLITE_OK) ||
            sqlite3_bind_int(s, 5, page_size + 1) != SQLITE_OK) {
            rc = db_fail(st, what);
        } else {
            int r = SQLITE_DONE, n = 0;
            int64_t last_ms = 0;
            char *last_id = NULL;
            while (rc == PB_STORE_OK && (r = sqlite3_step(s)) == SQLITE_ROW) {
                if (n == page_size) {
                    if (!(next = page_token_encode(last_ms, last_id)))
                        rc = PB_STORE_ERR;
                    break;
                }
                free(last_id);
                last_ms = sqlite3_column_int64(s, 10);
                last_id = strdup(col_text(s, 0));
                if (!last_id || json_array_append_new(ops, operation_row(s)) != 0)
                    rc = PB_STORE_ERR;
                n++;
            }
            if (rc == PB_STORE_OK && !next && r != SQLITE_DONE)
                rc = db_fail(st, what);
            free(last_id);
        }
        stmt_done(st, s);
    }
    pthread_mutex_unlock(&st->mu);
    if (rc == PB_STORE_OK && next && json_object_set_new(res, "nextPageToken", json_string(next)))
        rc = PB_STORE_ERR;
    free(next);
    json_decref(ops);
    if (rc == PB_STORE_OK)
        *out = res;
    else
        json_decref(res);
    return rc;
}

static json_t *claim_row(sqlite3_stmt *s)
{
    json_t *o = json_object();
    int bad = !o;
    put_str(o, "id", s, 0, &bad);
    put_str(o, "projectId", s, 1, &bad);
    put_str(o, "integrationId", s, 2, &bad);
    put_str(o, "installationId", s, 3, &bad);
    if (sqlite3_column_type(s, 4) != SQLITE_NULL)
        put(o, "request", col_json(s, 4), &bad);
    else
        put(o, "request", json_null(), &bad);
    put(o, "attempts", json_integer(sqlite3_column_int64(s, 5)), &bad);
    if (sqlite3_column_type(s, 6) != SQLITE_NULL)
        put(o, "deadlineAt", json_integer(sqlite3_column_int64(s, 6)), &bad);
    else
        put(o, "deadlineAt", json_null(), &bad);
    return finish(o, bad);
}

/* Marks the claimed operations (the ids in arr) for owner. */
static int mark_claimed(pb_store *st, const json_t *arr, const char *owner, int64_t until)
{
    const char *what = "claim operations";
    sqlite3_stmt *op = NULL, *q = NULL;
    int rc = prepare(st,
                     "UPDATE operations SET claimed_by = ?2, claimed_until = ?3,"
                     " next_attempt_at = ?3 WHERE id = ?1",
                     &op, what);
    if (rc == PB_STORE_OK)
        rc = prepare(st,
                     "UPDATE write_queue SET state = 'sending'"
                     " WHERE operation_id = ?1 AND state = 'open'",
                     &q, what);
    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e)
    {
        if (rc != PB_STORE_OK)
            break;
        const char *id = json_string_value(json_object_get(e, "id"));
        sqlite3_reset(op);
        sqlite3_reset(q);
        if (bind_text(op, 1, id) | bind_text(op, 2, owner) | sqlite3_bind_int64(op, 3, until) |
            bind_text(q, 1, id))
            rc = db_fail(st, what);
        if (rc == PB_STORE_OK)
            rc = step_rc(st, sqlite3_step(op), what);
        if (rc == PB_STORE_OK)
            rc = step_rc(st, sqlite3_step(q), what);
    }
    stmt_done(st, op);
    stmt_done(st, q);
    return rc;
}

struct claim_job {
    struct gc_job base;
    const char *owner;
    int64_t now, until;
    int max;
    json_t *arr;
};

static int claim_run(pb_store *st, struct gc_job *j)
{
    struct claim_job *c = (struct claim_job *)j;
    const char *what = "claim operations";
    json_decref(c->arr);
    if (!(c->arr = json_array()))
        return PB_STORE_ERR;
    /* Rows are collected before any is updated: an update moves the row in
     * operations_due, which the select walks. */
    sqlite3_stmt *s = NULL;
    int rc = prepare(st,
                     "SELECT id, project_id, integration_id, installation_id, request, attempts,"
                     " deadline_at FROM operations WHERE status = 'in_progress'"
                     " AND next_attempt_at IS NOT NULL AND next_attempt_at <= ?1"
                     " AND (claimed_until IS NULL OR claimed_until <= ?1)"
                     " ORDER BY next_attempt_at LIMIT ?2",
                     &s, what);
    if (rc == PB_STORE_OK) {
        if (sqlite3_bind_int64(s, 1, c->now) | sqlite3_bind_int(s, 2, c->max))
            rc = db_fail(st, what);
        else
            rc = all_rows(st, s, claim_row, c->arr, what);
        stmt_done(st, s);
    }
    if (rc == PB_STORE_OK)
        rc = mark_claimed(st, c->arr, c->owner, c->until);
    return rc;
}

int pb_store_operation_claim(pb_store *st, const char *owner, int64_t now, int64_t claim_until_ms,
                             int max, json_t **out)
{
    if (out)
        *out = NULL;
    /* A claim that has already expired is a caller's mistake. */
    if (!st || !owner || !*owner || !out || claim_until_ms <= now)
        return PB_STORE_ERR;
    if (max < 1) {
        *out = json_array();
        return *out ? PB_STORE_OK : PB_STORE_ERR;
    }
    /* Through the group committer: a worker's claim shares the commit of
     * the writes being accepted meanwhile. */
    struct claim_job c = {
        .base = {.run = claim_run},
        .owner = owner,
        .now = now,
        .until = claim_until_ms,
        .max = max,
    };
    int rc = gc_submit(st, &c.base);
    if (rc == PB_STORE_OK)
        *out = c.arr;
    else
        json_decref(c.arr);
    return rc;
}

/* The stored metadata of an in_progress operation (malloc'd); NOTFOUND or
 * CONFLICT (already finished) otherwise. Inside the caller's transaction. */
static int load_in_progress(pb_store *st, const char *id, char **md_out, const char *what)
{
    sqlite3_stmt *s;
    int rc = prep_bind(st, "SELECT status, metadata FROM operations WHERE id = ?1", &s, what, 1,
                       id);
    if (rc != PB_STORE_OK)
        return rc;
    int r = sqlite3_step(s);
    if (r == SQLITE_DONE)
        rc = PB_STORE_NOTFOUND;
    else if (r != SQLITE_ROW)
        rc = db_fail(st, what);
    else if (strcmp(col_text(s, 0), "in_progress") != 0)
        rc = PB_STORE_CONFLICT;
    else if (!(*md_out = strdup(col_text(s, 1))))
        rc = PB_STORE_ERR;
    stmt_done(st, s);
    return rc;
}

/* Length of the valid UTF-8 sequence at p (RFC 3629), 0 when invalid. */
static size_t utf8_seq(const unsigned char *p)
{
    unsigned c = p[0];
    size_t n;
    unsigned lo = 0x80, hi = 0xBF;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        n = 3;
    else if (c >= 0xF0 && c <= 0xF4)
        n = 4;
    else
        return 0;
    if (c == 0xE0)
        lo = 0xA0;
    else if (c == 0xED)
        hi = 0x9F;
    else if (c == 0xF0)
        lo = 0x90;
    else if (c == 0xF4)
        hi = 0x8F;
    if (p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
    return n;
}

/* A copy of text with bytes that are not UTF-8 replaced by '?' (malloc'd;
 * NULL for NULL or out of memory). Provider error texts end up here, and a
 * retry or a result must not be lost, or a row made unshowable, over an
 * odd byte. */
static char *utf8_clean(const char *text)
{
    if (!text)
        return NULL;
    char *out = strdup(text);
    if (!out)
        return NULL;
    unsigned char *p = (unsigned char *)out;
    while (*p) {
        size_t n = utf8_seq(p);
        if (n == 0) {
            *p++ = '?';
            continue;
        }
        p += n;
    }
    return out;
}

struct finish_job {
    struct gc_job base;
    const char *id, *status, *result;
    const json_t *metadata;
    int attempts;
    int64_t now;
};

static int finish_run(pb_store *st, struct gc_job *j)
{
    struct finish_job *f = (struct finish_job *)j;
    const char *what = "finish operation";
    char *cur = NULL, *md = NULL;
    sqlite3_stmt *s;
    int rc = load_in_progress(st, f->id, &cur, what);
    if (rc == PB_STORE_OK && !(md = f->metadata ? merge_metadata(cur, f->metadata) : strdup(cur)))
        rc = PB_STORE_ERR;
    if (rc == PB_STORE_OK)
        rc = prepare(st,
                     "UPDATE operations SET status = ?2, result = ?3, metadata = ?4,"
                     " attempts = ?5, last_attempt_at = ?6, next_attempt_at = NULL,"
                     " claimed_by = NULL, claimed_until = NULL, updated_at = ?6 WHERE id = ?1",
                     &s, what);
    if (rc == PB_STORE_OK) {
        if (bind_text(s, 1, f->id) | bind_text(s, 2, f->status) | bind_text(s, 3, f->result) |
            bind_text(s, 4, md) | sqlite3_bind_int(s, 5, f->attempts) |
            sqlite3_bind_int64(s, 6, f->now))
            rc = db_fail(st, what);
        else
            rc = step_rc(st, sqlite3_step(s), what);
        stmt_done(st, s);
    }
    if (rc == PB_STORE_OK) {
        rc = prep_bind(st,
                       "UPDATE write_queue SET state = 'done'"
                       " WHERE operation_id = ?1 AND state <> 'done'",
                       &s, what, 1, f->id);
        if (rc == PB_STORE_OK) {
            rc = step_rc(st, sqlite3_step(s), what);
            stmt_done(st, s);
        }
    }
    free(cur);
    free(md);
    return rc;
}

int pb_store_operation_finish(pb_store *st, const char *id, const char *status,
                              const char *result, const json_t *metadata, int attempts,
                              int64_t now)
{
    if (!st || !id || !status ||
        (strcmp(status, "success") != 0 && strcmp(status, "failure") != 0) || attempts < 0 ||
        (metadata && !json_is_object(metadata)))
        return PB_STORE_ERR;
    char *res = utf8_clean(result);
    if (result && !res)
        return PB_STORE_ERR;
    struct finish_job f = {
        .base = {.run = finish_run},
        .id = id,
        .status = status,
        .result = res,
        .metadata = metadata,
        .attempts = attempts,
        .now = now,
    };
    int rc = gc_submit(st, &f.base);
    free(res);
    return rc;
}

struct retry_job {
    struct gc_job base;
    const char *id;
    const json_t *merge;
    int attempts;
    int64_t next_attempt_ms, now;
};

static int retry_run(pb_store *st, struct gc_job *j)
{
    struct retry_job *r = (struct retry_job *)j;
    const char *what = "retry operation";
    char *cur = NULL, *md = NULL;
    sqlite3_stmt *s;
    int rc = load_in_progress(st, r->id, &cur, what);
    if (rc == PB_STORE_OK && !(md = r->merge ? merge_metadata(cur, r->merge) : strdup(cur)))
        rc = PB_STORE_ERR;
    if (rc == PB_STORE_OK)
        rc = prepare(st,
                     "UPDATE operations SET attempts = ?2, last_attempt_at = ?3,"
                     " next_attempt_at = ?4, claimed_by = NULL, claimed_until = NULL,"
                     " metadata = ?5, updated_at = ?3 WHERE id = ?1",
                     &s, what);
    if (rc == PB_STORE_OK) {
        if (bind_text(s, 1, r->id) | sqlite3_bind_int(s, 2, r->attempts) |
            sqlite3_bind_int64(s, 3, r->now) | sqlite3_bind_int64(s, 4, r->next_attempt_ms) |
            bind_text(s, 5, md))
            rc = db_fail(st, what);
        else
            rc = step_rc(st, sqlite3_step(s), what);
        stmt_done(st, s);
    }
    free(cur);
    free(md);
    return rc;
}

int pb_store_operation_retry(pb_store *st, const char *id, int attempts, int64_t next_attempt_ms,
                             const char *last_error, int64_t now)
{
    if (!st || !id || attempts < 0 || next_attempt_ms < 0)
        return PB_STORE_ERR;
    char *err_text = utf8_clean(last_error);
    json_t *merge = err_text ? json_pack("{s:s}", "lastError", err_text) : NULL;
    free(err_text);
    if (last_error && !merge)
        return PB_STORE_ERR;
    struct retry_job r = {
        .base = {.run = retry_run},
        .id = id,
        .merge = merge,
        .attempts = attempts,
        .next_attempt_ms = next_attempt_ms,
        .now = now,
    };
    int rc = gc_submit(st, &r.base);
    json_decref(merge);
    return rc;
}

/* The bucket a new write joins, as found (or made) by queue_add. */
struct bucket {
    char *op_id;
    int64_t first_enqueued_at, flush_at, deadline_at;
    int rows;
};

/* The open bucket for key with room left, if any (b->op_id NULL when
 * none). Only an in_progress, unclaimed operation of this installation
 * takes writes. */
static int find_bucket(pb_store *st, const char *project_id, const char *installation_id,
                       const char *bucket_key, int64_t flush_at, int64_t deadline_at,
                       struct bucket *b, const char *what)
{
    sqlite3_stmt *s;
    int rc = prep_bind(st,
                       "SELECT o.id, min(q.first_enqueued_at), coalesce(o.next_attempt_at, ?4),"
                       " coalesce(o.deadline_at, ?5), count(*)"
                       " FROM write_queue q JOIN operations o ON o.id = q.operation_id"
                       " WHERE q.bucket_key = ?1 AND q.state = 'open' AND o.project_id = ?2"
                       " AND o.installation_id = ?3 AND o.status = 'in_progress'"
                       " AND o.claimed_by IS NULL"
                       " GROUP BY o.id HAVING count(*) < ?6 ORDER BY min(q.id) LIMIT 1",
                       &s, what, 3, bucket_key, project_id, installation_id);
    if (rc != PB_STORE_OK)
        return rc;
    if (sqlite3_bind_int64(s, 4, flush_at) | sqlite3_bind_int64(s, 5, deadline_at) |
        sqlite3_bind_int(s, 6, QUEUE_BUCKET_MAX)) {
        rc = db_fail(st, what);
    } else {
        int r = sqlite3_step(s);
        if (r == SQLITE_ROW) {
            b->op_id = strdup(col_text(s, 0));
            b->first_enqueued_at = sqlite3_column_int64(s, 1);
            b->flush_at = sqlite3_column_int64(s, 2);
            b->deadline_at = sqlite3_column_int64(s, 3);
            b->rows = sqlite3_column_int(s, 4);
            if (!b->op_id)
                rc = PB_STORE_ERR;
        } else if (r != SQLITE_DONE) {
            rc = db_fail(st, what);
        }
    }
    stmt_done(st, s);
    return rc;
}

struct queue_row {
    const char *operation_id, *installation_id, *object, *write_type, *record, *bucket_key;
    int64_t first_enqueued_at, flush_at, deadline_at, now;
};

static int insert_queue_row(pb_store *st, const struct queue_row *r, const char *what)
{
    sqlite3_stmt *s;
    int rc = prepare(st,
                     "INSERT INTO write_queue(operation_id, installation_id, object_name,"
                     " write_type, record, bucket_key, first_enqueued_at, flush_at, deadline_at,"
                     " state, created_at)"
                     " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'open', ?10)",
                     &s, what);
    if (rc != PB_STORE_OK)
        return rc;
    if (bind_text(s, 1, r->operation_id) | bind_text(s, 2, r->installation_id) |
        bind_text(s, 3, r->object) | bind_text(s, 4, r->write_type) |
        bind_text(s, 5, r->record) | bind_text(s, 6, r->bucket_key) |
        sqlite3_bind_int64(s, 7, r->first_enqueued_at) | sqlite3_bind_int64(s, 8, r->flush_at) |
        sqlite3_bind_int64(s, 9, r->deadline_at) | sqlite3_bind_int64(s, 10, r->now))
        rc = db_fail(st, what);
    else
        rc = step_rc(st, sqlite3_step(s), what);
    stmt_done(st, s);
    return rc;
}

/* A full bucket is due now. */
static int make_due(pb_store *st, const char *op_id, int64_t now, const char *what)
{
    sqlite3_stmt *s;
    int rc = prep_bind(st, "UPDATE operations SET next_attempt_at = ?2 WHERE id = ?1", &s, what,
                       1, op_id);
    if (rc != PB_STORE_OK)
        return rc;
    if (sqlite3_bind_int64(s, 2, now) != SQLITE_OK)
        rc = db_fail(st, what);
    else
        rc = step_rc(st, sqlite3_step(s), what);
    stmt_done(st, s);
    return rc;
}

struct queue_job {
    struct gc_job base;
    const char *project_id, *integration_id, *installation_id, *object, *write_type;
    const char *bucket_key, *new_op_id, *rec, *req_text, *md_text;
    int64_t now, flush_at_ms, deadline_ms;
    size_t len;
    struct bucket b; /* the bucket joined; b.op_id malloc'd */
};

static int queue_run(pb_store *st, struct gc_job *j)
{
    struct queue_job *q = (struct queue_job *)j;
    const char *what = "queue write";
    free(q->b.op_id);
    q->b = (struct bucket){0};
    struct bucket *b = &q->b;
    int rc = find_bucket(st, q->project_id, q->installation_id, q->bucket_key, q->flush_at_ms,
                         q->deadline_ms, b, what);
    if (rc == PB_STORE_OK && !b->op_id) {
        struct op_insert op = {
            .id = q->new_op_id,
            .project_id = q->project_id,
            .integration_id = q->integration_id,
            .installation_id = q->installation_id,
            .status = "in_progress",
            .metadata = q->md_text,
            .request = q->req_text,
            .next_attempt_at = q->flush_at_ms,
            .deadline_at = q->deadline_ms,
            .now = q->now,
        };
        *b = (struct bucket){strdup(q->new_op_id), q->now, q->flush_at_ms, q->deadline_ms, 0};
        rc = b->op_id ? installation_of(st, q->project_id, q->integration_id, q->installation_id,
                                        what)
                      : PB_STORE_ERR;
        if (rc == PB_STORE_OK)
            rc = insert_operation(st, &op, what);
    }
    if (rc == PB_STORE_OK && strlen(b->op_id) >= q->len)
        rc = PB_STORE_ERR;
    if (rc == PB_STORE_OK) {
        struct queue_row row = {
            .operation_id = b->op_id,
            .installation_id = q->installation_id,
            .object = q->object,
            .write_type = q->write_type,
            .record = q->rec,
            .bucket_key = q->bucket_key,
            .first_enqueued_at = b->first_enqueued_at,
            .flush_at = b->flush_at,
            .deadline_at = b->deadline_at,
            .now = q->now,
        };
        rc = insert_queue_row(st, &row, what);
    }
    if (rc == PB_STORE_OK && b->rows + 1 >= QUEUE_BUCKET_MAX)
        rc = make_due(st, b->op_id, q->now, what);
    return rc;
}

int pb_store_queue_add(pb_store *st, const char *project_id, const char *integration_id,
                       const char *installation_id, const char *object, const char *write_type,
                       const json_t *record, const char *bucket_key, const char *new_op_id,
                       int64_t now, int64_t flush_at_ms, int64_t deadline_ms, char *op_id_out,
                       size_t len)
{
    if (op_id_out && len)
        op_id_out[0] = '\0';
    if (!st || !project_id || !integration_id || !installation_id || !object || !*object ||
        !write_type || !*write_type || !json_is_object(record) || !bucket_key ||
        !*bucket_key || !new_op_id || !*new_op_id || !op_id_out || strlen(new_op_id) >= len ||
        now < 0 || flush_at_ms < 0 || deadline_ms < 0)
        return PB_STORE_ERR;
    char *rec = dump_json(record);
    json_t *req = json_pack("{s:s, s:s, s:s}", "kind", "autobatch", "object", object, "type",
                            write_type);
    json_t *md = json_pack("{s:[s]}", "objects", object);
    char *req_text = req ? dump_json(req) : NULL;
    char *md_text = md ? dump_json(md) : NULL;
    json_decref(req);
    json_decref(md);
    if (!rec || !req_text || !md_text) {
        free(rec);
        free(req_text);
        free(md_text);
        return PB_STORE_ERR;
    }

    /* Committed (WAL, synchronous=FULL) before the caller acknowledges. */
    struct queue_job q = {
        .base = {.run = queue_run},
        .project_id = project_id,
        .integration_id = integration_id,
        .installation_id = installation_id,
        .object = object,
        .write_type = write_type,
        .bucket_key = bucket_key,
        .new_op_id = new_op_id,
        .rec = rec,
        .req_text = req_text,
        .md_text = md_text,
        .now = now,
        .flush_at_ms = flush_at_ms,
        .deadline_ms = deadline_ms,
        .len = len,
    };
    int rc = gc_submit(st, &q.base);
    if (rc == PB_STORE_OK)
        memcpy(op_id_out, q.b.op_id, strlen(q.b.op_id) + 1);
    free(q.b.op_id);
    free(rec);
    free(req_text);
    free(md_text);
    return rc;
}

static json_t *queue_item_row(sqlite3_stmt *s)
{
    json_t *o = json_object();
    int bad = !o;
    put(o, "id", json_integer(sqlite3_column_int64(s, 0)), &bad);
    put(o, "record", col_json(s, 1), &bad);
    return finish(o, bad);
}

int pb_store_queue_items(pb_store *st, const char *operation_id, json_t **out)
{
    if (out)
        *out = NULL;
    if (!st || !operation_id || !out)
        return PB_STORE_ERR;
    const char *what = "list queued writes";
    pthread_mutex_lock(&st->mu);
    int rc = exists(st, "SELECT 1 FROM operations WHERE id = ?1", what, 1, operation_id);
    if (rc == PB_STORE_OK)
        rc = fetch_all(st,
                       "SELECT id, record FROM write_queue WHERE operation_id = ?1 ORDER BY id",
                       queue_item_row, out, what, 1, operation_id);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

int pb_store_operation_release_claims(pb_store *st, int64_t now_ms, int *released)
{
    if (released)
        *released = 0;
    if (!st)
        return PB_STORE_ERR;
    pthread_mutex_lock(&st->mu);
    sqlite3_stmt *s = NULL;
    int rc = prepare(st,
                     "UPDATE operations SET claimed_by = NULL, claimed_until = NULL,"
                     " next_attempt_at = ?1"
                     " WHERE status = 'in_progress' AND claimed_by IS NOT NULL",
                     &s, "release claims");
    if (rc == PB_STORE_OK) {
        if (sqlite3_bind_int64(s, 1, now_ms) != SQLITE_OK)
            rc = db_fail(st, "release claims");
        else
            rc = step_rc(st, sqlite3_step(s), "release claims");
        if (rc == PB_STORE_OK && released)
            *released = sqlite3_changes(st->db);
        stmt_done(st, s);
    }
    pthread_mutex_unlock(&st->mu);
    return rc;
}
