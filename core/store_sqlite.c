/* The embedded SQLite store. All SQL of the embedded backend lives here.
 *
 * One connection per store, opened SQLITE_OPEN_FULLMUTEX, plus a store mutex
 * held for each call: the connection's own mutex makes single API calls
 * safe, the store mutex keeps a multi-statement transaction (and the error
 * message read after a failed step) from interleaving with another
 * thread's statements. SQLite admits one writer at a time anyway, and the
 * hot path does not come here (DESIGN.md principle 8).
 *
 * Durability: WAL with synchronous=FULL, so a committed transaction (an
 * acknowledged asynchronous write) survives kill -9 and power loss.
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

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct pb_store {
    sqlite3 *db;
    pthread_mutex_t mu;
    char *path;
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

static int prepare(pb_store *st, const char *sql, sqlite3_stmt **stmt, const char *what)
{
    if (sqlite3_prepare_v2(st->db, sql, -1, stmt, NULL) != SQLITE_OK) {
        *stmt = NULL;
        return db_fail(st, what);
    }
    return PB_STORE_OK;
}

static int exec_sql(pb_store *st, const char *sql, const char *what)
{
    if (sqlite3_exec(st->db, sql, NULL, NULL, NULL) != SQLITE_OK)
        return db_fail(st, what);
    return PB_STORE_OK;
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
    if (sqlite3_busy_timeout(st->db, 5000) != SQLITE_OK)
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
    if (pthread_mutex_init(&st->mu, NULL) != 0) {
        free(st->path);
        free(st);
        seterr(err, err_len, "store %s: cannot create mutex", path);
        return PB_STORE_ERR;
    }
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
    if (st->db)
        sqlite3_close_v2(st->db);
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
        sqlite3_finalize(s);
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
    sqlite3_finalize(s);
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
    sqlite3_finalize(s);
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
        sqlite3_finalize(s);
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
        sqlite3_finalize(s);
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
        sqlite3_finalize(s);
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
    pthread_mutex_unlock(&st->mu);
    if (rc == PB_STORE_OK && out)
        *out = p;
    else
        json_decref(p);
    return rc;
}
