/* Tests for core/store_sqlite.c on real SQLite files in the temp dir. The
 * tests also read the files with sqlite3 directly to check what the store
 * wrote. */
#include "store.h"
#include "testutil.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char err[1024];
static int db_counter;

/* A fresh database path (under a directory that does not exist yet). */
static char *fresh_path(void)
{
    char name[64];
    snprintf(name, sizeof name, "db%d/sub/plugboard.db", ++db_counter);
    return pbt_path(name);
}

static char *url_for(const char *path)
{
    size_t n = strlen(path) + 8;
    char *u = malloc(n);
    snprintf(u, n, "sqlite:%s", path);
    return u;
}

static pb_store *open_path(const char *path)
{
    char *url = url_for(path);
    pb_store *st = NULL;
    err[0] = '\0';
    int rc = pb_store_open(url, &st, err, sizeof err);
    free(url);
    if (rc != PB_STORE_OK)
        fprintf(stderr, "open failed: %s\n", err);
    return rc == PB_STORE_OK ? st : NULL;
}

static sqlite3 *raw_open(const char *path)
{
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, 5000);
    return db;
}

/* First column of the first row as an integer; -1 when no row. */
static long long raw_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *s;
    long long v = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK) {
        fprintf(stderr, "prepare %s: %s\n", sql, sqlite3_errmsg(db));
        return -2;
    }
    if (sqlite3_step(s) == SQLITE_ROW)
        v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return v;
}

static char *raw_text(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *s;
    char *v = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK)
        return NULL;
    if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_text(s, 0))
        v = strdup((const char *)sqlite3_column_text(s, 0));
    sqlite3_finalize(s);
    return v;
}

static int raw_exec(sqlite3 *db, const char *sql)
{
    return sqlite3_exec(db, sql, NULL, NULL, NULL);
}

static const char *jstr(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* "YYYY-MM-DDTHH:MM:SSZ" */
static int is_rfc3339_utc(const char *s)
{
    if (!s || strlen(s) != 20)
        return 0;
    const char *pat = "dddd-dd-ddTdd:dd:ddZ";
    for (int i = 0; i < 20; i++) {
        if (pat[i] == 'd' ? !(s[i] >= '0' && s[i] <= '9') : s[i] != pat[i])
            return 0;
    }
    return 1;
}

/* ---- opening and schema ---------------------------------------------------- */

static void test_open_creates_file_and_dir(void)
{
    char *path = fresh_path();
    pb_store *st = open_path(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    struct stat sb;
    CU_ASSERT_EQUAL(stat(path, &sb), 0);
    CU_ASSERT_TRUE(S_ISREG(sb.st_mode));
    CU_ASSERT_EQUAL(sb.st_mode & 077, 0); /* holds sealed credentials */
    char *dir = strdup(path);
    *strrchr(dir, '/') = '\0';
    CU_ASSERT_EQUAL(stat(dir, &sb), 0);
    CU_ASSERT_TRUE(S_ISDIR(sb.st_mode));
    free(dir);
    CU_ASSERT_EQUAL(pb_store_ping(st), 0);
    pb_store_close(st);
    pb_store_close(NULL);
    free(path);
}

static void test_url_forms(void)
{
    char *path = fresh_path();
    size_t n = strlen(path) + 16;
    char *url = malloc(n);
    snprintf(url, n, "sqlite://%s", path); /* path is absolute: sqlite:///abs */
    pb_store *st = NULL;
    CU_ASSERT_EQUAL(pb_store_open(url, &st, err, sizeof err), PB_STORE_OK);
    CU_ASSERT_EQUAL(access(path, F_OK), 0);
    pb_store_close(st);
    free(url);
    free(path);
}

static void test_schema_version(void)
{
    char *path = fresh_path();
    pb_store *st = open_path(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    int latest = pb_store_schema_latest(st);
    CU_ASSERT_TRUE(latest >= 1);
    CU_ASSERT_EQUAL(pb_store_schema_version(st), latest);
    sqlite3 *db = raw_open(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(db);
    CU_ASSERT_EQUAL(raw_int(db, "SELECT count(*) FROM schema_migrations"), latest);
    CU_ASSERT_EQUAL(raw_int(db, "SELECT max(version) FROM schema_migrations"), latest);
    /* applied_at is unix milliseconds, like every other time. */
    CU_ASSERT_TRUE(raw_int(db, "SELECT min(applied_at) FROM schema_migrations") > 1600000000000LL);
    sqlite3_close(db);
    pb_store_close(st);
    free(path);
}

static void test_reopen_idempotent(void)
{
    char *path = fresh_path();
    pb_store *st = open_path(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    int v = pb_store_schema_version(st);
    pb_store_close(st);

    st = open_path(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    CU_ASSERT_EQUAL(pb_store_schema_version(st), v);
    /* A second handle on the same file while the first is open. */
    pb_store *st2 = open_path(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st2);
    CU_ASSERT_EQUAL(pb_store_schema_version(st2), v);
    pb_store_close(st2);
    pb_store_close(st);

    sqlite3 *db = raw_open(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(db);
    CU_ASSERT_EQUAL(raw_int(db, "SELECT count(*) FROM schema_migrations"), v);
    sqlite3_close(db);
    free(path);
}

static void test_journal_mode_wal(void)
{
    char *path = fresh_path();
    pb_store *st = open_path(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    sqlite3 *db = raw_open(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(db);
    char *mode = raw_text(db, "PRAGMA journal_mode");
    CU_ASSERT_PTR_NOT_NULL(mode);
    if (mode)
        CU_ASSERT_STRING_EQUAL(mode, "wal");
    free(mode);
    sqlite3_close(db);
    pb_store_close(st);
    free(path);
}

static void test_tables_exist(void)
{
    char *path = fresh_path();
    pb_store *st = open_path(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    sqlite3 *db = raw_open(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(db);
    static const char *const tables[] = {
        "schema_migrations", "projects",   "api_keys",    "integrations", "connections",
        "oauth_states",      "installations", "operations", "write_queue", "rate_limits",
        "activity",
    };
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++) {
        sqlite3_stmt *s;
        CU_ASSERT_EQUAL_FATAL(sqlite3_prepare_v2(db,
                                                 "SELECT count(*) FROM sqlite_master"
                                                 " WHERE type = 'table' AND name = ?1",
                                                 -1, &s, NULL),
                              SQLITE_OK);
        sqlite3_bind_text(s, 1, tables[i], -1, SQLITE_STATIC);
        CU_ASSERT_EQUAL(sqlite3_step(s), SQLITE_ROW);
        if (sqlite3_column_int(s, 0) != 1)
            fprintf(stderr, "missing table %s\n", tables[i]);
        CU_ASSERT_EQUAL(sqlite3_column_int(s, 0), 1);
        sqlite3_finalize(s);
    }
    /* The queue's due-work indexes. */
    CU_ASSERT_EQUAL(raw_int(db, "SELECT count(*) FROM sqlite_master WHERE type = 'index'"
                                " AND name IN ('operations_due', 'write_queue_flush')"),
                    2);
    /* Every foreign key is satisfiable and the schema is consistent. */
    CU_ASSERT_EQUAL(raw_int(db, "SELECT count(*) FROM pragma_foreign_key_check"), 0);
    char *ok = raw_text(db, "PRAGMA integrity_check");
    CU_ASSERT_PTR_NOT_NULL(ok);
    if (ok)
        CU_ASSERT_STRING_EQUAL(ok, "ok");
    free(ok);
    sqlite3_close(db);
    pb_store_close(st);
    free(path);
}

/* Rows of one project cannot point at another project's rows, and JSON
 * columns take only JSON. Checked on the raw schema. */
static void test_schema_integrity(void)
{
    char *path = fresh_path();
    pb_store *st = open_path(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    CU_ASSERT_EQUAL(pb_store_project_create(st, "p_a", "a", NULL), PB_STORE_OK);
    CU_ASSERT_EQUAL(pb_store_project_create(st, "p_b", "b", NULL), PB_STORE_OK);
    sqlite3 *db = raw_open(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(db);
    CU_ASSERT_EQUAL(raw_exec(db, "PRAGMA foreign_keys=ON"), SQLITE_OK);
    CU_ASSERT_EQUAL(raw_exec(db,
                             "INSERT INTO integrations(id, project_id, name, provider, created_at,"
                             " updated_at) VALUES ('int_a', 'p_a', 'crm', 'hubspot', 1, 1)"),
                    SQLITE_OK);
    CU_ASSERT_EQUAL(raw_exec(db,
                             "INSERT INTO connections(id, project_id, provider, group_ref,"
                             " auth_type, credentials_sealed, created_at, updated_at)"
                             " VALUES ('con_b', 'p_b', 'hubspot', 'g', 'api_key', 'x', 1, 1)"),
                    SQLITE_OK);
    /* Project a's installation using project b's connection. */
    CU_ASSERT_EQUAL(raw_exec(db,
                             "INSERT INTO installations(id, project_id, integration_id, group_ref,"
                             " connection_id, created_at, updated_at)"
                             " VALUES ('ins_1', 'p_a', 'int_a', 'g', 'con_b', 1, 1)"),
                    SQLITE_CONSTRAINT);
    /* Project b's installation of project a's integration. */
    CU_ASSERT_EQUAL(raw_exec(db,
                             "INSERT INTO installations(id, project_id, integration_id, group_ref,"
                             " created_at, updated_at) VALUES ('ins_2', 'p_b', 'int_a', 'g', 1, 1)"),
                    SQLITE_CONSTRAINT);
    CU_ASSERT_EQUAL(raw_exec(db,
                             "INSERT INTO installations(id, project_id, integration_id, group_ref,"
                             " config, created_at, updated_at)"
                             " VALUES ('ins_3', 'p_a', 'int_a', 'g', '{not json', 1, 1)"),
                    SQLITE_CONSTRAINT);
    CU_ASSERT_EQUAL(raw_exec(db,
                             "INSERT INTO installations(id, project_id, integration_id, group_ref,"
                             " created_at, updated_at) VALUES ('ins_4', 'p_a', 'int_a', 'g', 1, 1)"),
                    SQLITE_OK);
    /* One installation per (integration, group). */
    CU_ASSERT_EQUAL(raw_exec(db,
                             "INSERT INTO installations(id, project_id, integration_id, group_ref,"
                             " created_at, updated_at) VALUES ('ins_5', 'p_a', 'int_a', 'g', 1, 1)"),
                    SQLITE_CONSTRAINT);
    CU_ASSERT_EQUAL(raw_exec(db,
                             "INSERT INTO operations(id, project_id, integration_id,"
                             " installation_id, status, created_at, updated_at)"
                             " VALUES ('op_1', 'p_a', 'int_a', 'ins_4', 'bogus', 1, 1)"),
                    SQLITE_CONSTRAINT);
    CU_ASSERT_EQUAL(raw_exec(db,
                             "INSERT INTO operations(id, project_id, integration_id,"
                             " installation_id, next_attempt_at, created_at, updated_at)"
                             " VALUES ('op_2', 'p_a', 'int_a', 'ins_4', 5, 1, 1)"),
                    SQLITE_OK);
    /* The due-work query uses its index. */
    sqlite3_stmt *s;
    CU_ASSERT_EQUAL_FATAL(sqlite3_prepare_v2(db,
                                             "EXPLAIN QUERY PLAN SELECT id FROM operations"
                                             " WHERE status = 'in_progress' AND next_attempt_at"
                                             " IS NOT NULL AND next_attempt_at <= 10"
                                             " ORDER BY next_attempt_at LIMIT 10",
                                             -1, &s, NULL),
                          SQLITE_OK);
    int uses_index = 0;
    while (sqlite3_step(s) == SQLITE_ROW)
        if (strstr((const char *)sqlite3_column_text(s, 3), "operations_due"))
            uses_index = 1;
    sqlite3_finalize(s);
    CU_ASSERT_TRUE(uses_index);
    /* Deleting an installation removes its queued work. */
    CU_ASSERT_EQUAL(raw_exec(db, "DELETE FROM installations WHERE id = 'ins_4'"), SQLITE_OK);
    CU_ASSERT_EQUAL(raw_int(db, "SELECT count(*) FROM operations"), 0);
    sqlite3_close(db);
    pb_store_close(st);
    free(path);
}

static void test_open_errors(void)
{
    pb_store *st = (pb_store *)&st; /* must be reset to NULL */
    err[0] = '\0';
    CU_ASSERT_EQUAL(pb_store_open("postgres://db/x", &st, err, sizeof err), PB_STORE_ERR);
    CU_ASSERT_PTR_NULL(st);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "postgres://db/x"));
    CU_ASSERT_EQUAL(pb_store_open("sqlite:", &st, err, sizeof err), PB_STORE_ERR);
    CU_ASSERT_EQUAL(pb_store_open(NULL, &st, err, sizeof err), PB_STORE_ERR);

    /* A parent that is a regular file. */
    char *file = pbt_path("notadir");
    CU_ASSERT_EQUAL_FATAL(pbt_write_file(file, "x"), 0);
    char *bad = pbt_path("notadir/sub/x.db");
    char *url = url_for(bad);
    err[0] = '\0';
    CU_ASSERT_EQUAL(pb_store_open(url, &st, err, sizeof err), PB_STORE_ERR);
    CU_ASSERT_PTR_NULL(st);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, bad));
    free(url);

    /* A file that is not a database: the path and SQLite's message. */
    char *junk = pbt_path("junk.db");
    CU_ASSERT_EQUAL_FATAL(pbt_write_file(junk, "this is not a database, not at all, no no no no "
                                               "no no no no no no no no no no no no no no no no"),
                          0);
    url = url_for(junk);
    err[0] = '\0';
    CU_ASSERT_EQUAL(pb_store_open(url, &st, err, sizeof err), PB_STORE_ERR);
    CU_ASSERT_PTR_NULL(st);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, junk));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "not a database"));
    free(url);
    free(junk);
    free(file);
    free(bad);
}

static void test_newer_schema_refused(void)
{
    char *path = fresh_path();
    pb_store *st = open_path(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    pb_store_close(st);
    sqlite3 *db = raw_open(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(db);
    CU_ASSERT_EQUAL(raw_exec(db, "INSERT INTO schema_migrations VALUES (999, 0)"), SQLITE_OK);
    sqlite3_close(db);
    char *url = url_for(path);
    err[0] = '\0';
    st = NULL;
    CU_ASSERT_EQUAL(pb_store_open(url, &st, err, sizeof err), PB_STORE_ERR);
    CU_ASSERT_PTR_NULL(st);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, path));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "999"));
    free(url);
    free(path);
}

/* ---- projects ---------------------------------------------------------------- */

static void test_projects(void)
{
    char *path = fresh_path();
    pb_store *st = open_path(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);

    json_t *list = NULL;
    CU_ASSERT_EQUAL(pb_store_project_list(st, &list), PB_STORE_OK);
    CU_ASSERT_TRUE(json_is_array(list) && json_array_size(list) == 0);
    json_decref(list);

    json_t *p = NULL;
    CU_ASSERT_EQUAL(pb_store_project_create(st, "proj_b", "zeta", &p), PB_STORE_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_STRING_EQUAL(jstr(p, "id"), "proj_b");
    CU_ASSERT_STRING_EQUAL(jstr(p, "name"), "zeta");
    CU_ASSERT_TRUE(is_rfc3339_utc(jstr(p, "createTime")));
    CU_ASSERT_EQUAL(json_object_size(p), 3);
    json_decref(p);
    /* Created in this order, within the same millisecond or not. */
    CU_ASSERT_EQUAL(pb_store_project_create(st, "proj_a", "alpha", NULL), PB_STORE_OK);
    CU_ASSERT_EQUAL(pb_store_project_create(st, "proj_c", "mid", NULL), PB_STORE_OK);

    p = NULL;
    CU_ASSERT_EQUAL(pb_store_project_get(st, "proj_a", &p), PB_STORE_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_STRING_EQUAL(jstr(p, "name"), "alpha");
    CU_ASSERT_TRUE(is_rfc3339_utc(jstr(p, "createTime")));
    json_decref(p);
    p = NULL;
    CU_ASSERT_EQUAL(pb_store_project_get(st, "mid", &p), PB_STORE_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_STRING_EQUAL(jstr(p, "id"), "proj_c");
    json_decref(p);

    list = NULL;
    CU_ASSERT_EQUAL(pb_store_project_list(st, &list), PB_STORE_OK);
    CU_ASSERT_EQUAL_FATAL(json_array_size(list), 3);
    CU_ASSERT_STRING_EQUAL(jstr(json_array_get(list, 0), "id"), "proj_b");
    CU_ASSERT_STRING_EQUAL(jstr(json_array_get(list, 1), "id"), "proj_a");
    CU_ASSERT_STRING_EQUAL(jstr(json_array_get(list, 2), "id"), "proj_c");
    json_decref(list);

    /* createTime is the stored time, in UTC. */
    sqlite3 *db = raw_open(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(db);
    CU_ASSERT_EQUAL(raw_exec(db, "UPDATE projects SET created_at = 1795694400123"
                                 " WHERE id = 'proj_a'"),
                    SQLITE_OK);
    sqlite3_close(db);
    p = NULL;
    CU_ASSERT_EQUAL(pb_store_project_get(st, "proj_a", &p), PB_STORE_OK);
    CU_ASSERT_STRING_EQUAL(jstr(p, "createTime"), "2026-11-26T12:00:00Z");
    json_decref(p);

    pb_store_close(st);
    free(path);
}

static void test_project_get_prefers_id(void)
{
    char *path = fresh_path();
    pb_store *st = open_path(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    /* One project's name is another's id. */
    CU_ASSERT_EQUAL(pb_store_project_create(st, "proj_1", "first", NULL), PB_STORE_OK);
    CU_ASSERT_EQUAL(pb_store_project_create(st, "proj_2", "proj_1", NULL), PB_STORE_OK);
    json_t *p = NULL;
    CU_ASSERT_EQUAL(pb_store_project_get(st, "proj_1", &p), PB_STORE_OK);
    CU_ASSERT_STRING_EQUAL(jstr(p, "id"), "proj_1");
    CU_ASSERT_STRING_EQUAL(jstr(p, "name"), "first");
    json_decref(p);
    pb_store_close(st);
    free(path);
}

static void test_project_conflict_and_notfound(void)
{
    char *path = fresh_path();
    pb_store *st = open_path(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    CU_ASSERT_EQUAL(pb_store_project_create(st, "proj_1", "acme", NULL), PB_STORE_OK);
    json_t *p = (json_t *)&p;
    CU_ASSERT_EQUAL(pb_store_project_create(st, "proj_2", "acme", &p), PB_STORE_CONFLICT);
    CU_ASSERT_PTR_NULL(p);
    CU_ASSERT_EQUAL(pb_store_project_create(st, "proj_1", "other", NULL), PB_STORE_CONFLICT);
    json_t *list = NULL;
    CU_ASSERT_EQUAL(pb_store_project_list(st, &list), PB_STORE_OK);
    CU_ASSERT_EQUAL(json_array_size(list), 1);
    json_decref(list);

    p = (json_t *)&p;
    CU_ASSERT_EQUAL(pb_store_project_get(st, "nope", &p), PB_STORE_NOTFOUND);
    CU_ASSERT_PTR_NULL(p);
    CU_ASSERT_EQUAL(pb_store_project_get(st, "", &p), PB_STORE_NOTFOUND);
    /* Bound, never spliced into SQL. */
    CU_ASSERT_EQUAL(pb_store_project_get(st, "x' OR '1'='1", &p), PB_STORE_NOTFOUND);
    CU_ASSERT_EQUAL(pb_store_project_create(st, "proj_3", "a'); DROP TABLE projects; --", NULL),
                    PB_STORE_OK);
    CU_ASSERT_EQUAL(pb_store_project_get(st, "a'); DROP TABLE projects; --", &p), PB_STORE_OK);
    json_decref(p);
    /* Invalid arguments. */
    CU_ASSERT_EQUAL(pb_store_project_create(st, "proj_4", "", NULL), PB_STORE_ERR);
    CU_ASSERT_EQUAL(pb_store_project_create(st, NULL, "n", NULL), PB_STORE_ERR);
    CU_ASSERT_EQUAL(pb_store_project_create(st, "proj_5", "bad\xff utf8", NULL), PB_STORE_ERR);
    CU_ASSERT_EQUAL(pb_store_project_get(st, "proj_5", &p), PB_STORE_NOTFOUND);
    pb_store_close(st);
    free(path);
}

/* ---- API keys ---------------------------------------------------------------- */

static const char HASH_A[] = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
static const char HASH_B[] = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
static const char HASH_C[] = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

static void test_api_keys(void)
{
    char *path = fresh_path();
    pb_store *st = open_path(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    CU_ASSERT_EQUAL(pb_store_project_create(st, "proj_1", "acme", NULL), PB_STORE_OK);
    CU_ASSERT_EQUAL(pb_store_api_key_add(st, "key_1", "proj_1", HASH_A, "pbk_AbC"), PB_STORE_OK);
    CU_ASSERT_EQUAL(pb_store_api_key_add(st, "key_2", "proj_1", HASH_B, "pbk_XyZ"), PB_STORE_OK);

    char pid[64] = "junk";
    CU_ASSERT_EQUAL(pb_store_api_key_lookup(st, HASH_A, pid, sizeof pid), PB_STORE_OK);
    CU_ASSERT_STRING_EQUAL(pid, "proj_1");
    strcpy(pid, "junk");
    CU_ASSERT_EQUAL(pb_store_api_key_lookup(st, HASH_B, pid, sizeof pid), PB_STORE_OK);
    CU_ASSERT_STRING_EQUAL(pid, "proj_1");
    CU_ASSERT_EQUAL(pb_store_api_key_lookup(st, HASH_C, pid, sizeof pid), PB_STORE_NOTFOUND);
    CU_ASSERT_STRING_EQUAL(pid, "");
    /* Too small a buffer is an error, never a truncated id. */
    char tiny[4];
    CU_ASSERT_EQUAL(pb_store_api_key_lookup(st, HASH_A, tiny, sizeof tiny), PB_STORE_ERR);

    /* Same hash twice, same key id twice: conflicts. */
    CU_ASSERT_EQUAL(pb_store_api_key_add(st, "key_3", "proj_1", HASH_A, "pbk_AbC"),
                    PB_STORE_CONFLICT);
    CU_ASSERT_EQUAL(pb_store_api_key_add(st, "key_1", "proj_1", HASH_C, "pbk_Ccc"),
                    PB_STORE_CONFLICT);
    /* Unknown project. */
    CU_ASSERT_EQUAL(pb_store_api_key_add(st, "key_4", "proj_nope", HASH_C, "pbk_Ccc"),
                    PB_STORE_NOTFOUND);

    /* Only the hash is stored. */
    sqlite3 *db = raw_open(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(db);
    CU_ASSERT_EQUAL(raw_int(db, "SELECT count(*) FROM api_keys"), 2);
    /* A revoked key no longer authenticates. */
    CU_ASSERT_EQUAL(raw_exec(db, "UPDATE api_keys SET revoked_at = 1 WHERE id = 'key_2'"),
                    SQLITE_OK);
    sqlite3_close(db);
    CU_ASSERT_EQUAL(pb_store_api_key_lookup(st, HASH_B, pid, sizeof pid), PB_STORE_NOTFOUND);
    CU_ASSERT_EQUAL(pb_store_api_key_lookup(st, HASH_A, pid, sizeof pid), PB_STORE_OK);
    pb_store_close(st);
    free(path);
}

static void test_create_with_key(void)
{
    char *path = fresh_path();
    pb_store *st = open_path(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    json_t *p = NULL;
    CU_ASSERT_EQUAL(pb_store_project_create_with_key(st, "proj_1", "acme", "key_1", HASH_A,
                                                     "pbk_AbC", &p),
                    PB_STORE_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_STRING_EQUAL(jstr(p, "id"), "proj_1");
    CU_ASSERT_STRING_EQUAL(jstr(p, "name"), "acme");
    CU_ASSERT_TRUE(is_rfc3339_utc(jstr(p, "createTime")));
    json_decref(p);
    char pid[64];
    CU_ASSERT_EQUAL(pb_store_api_key_lookup(st, HASH_A, pid, sizeof pid), PB_STORE_OK);
    CU_ASSERT_STRING_EQUAL(pid, "proj_1");

    /* The key insert conflicts (hash reused): the project is not created. */
    p = (json_t *)&p;
    CU_ASSERT_EQUAL(pb_store_project_create_with_key(st, "proj_2", "beta", "key_2", HASH_A,
                                                     "pbk_AbC", &p),
                    PB_STORE_CONFLICT);
    CU_ASSERT_PTR_NULL(p);
    CU_ASSERT_EQUAL(pb_store_project_get(st, "proj_2", &p), PB_STORE_NOTFOUND);
    CU_ASSERT_EQUAL(pb_store_project_get(st, "beta", &p), PB_STORE_NOTFOUND);

    /* The project insert conflicts (name reused): the key is not added. */
    CU_ASSERT_EQUAL(pb_store_project_create_with_key(st, "proj_3", "acme", "key_3", HASH_B,
                                                     "pbk_XyZ", NULL),
                    PB_STORE_CONFLICT);
    CU_ASSERT_EQUAL(pb_store_api_key_lookup(st, HASH_B, pid, sizeof pid), PB_STORE_NOTFOUND);

    sqlite3 *db = raw_open(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(db);
    CU_ASSERT_EQUAL(raw_int(db, "SELECT count(*) FROM projects"), 1);
    CU_ASSERT_EQUAL(raw_int(db, "SELECT count(*) FROM api_keys"), 1);
    CU_ASSERT_EQUAL(raw_int(db, "SELECT count(*) FROM api_keys WHERE id IN ('key_2', 'key_3')"),
                    0);
    sqlite3_close(db);

    /* The store is usable after a rollback. */
    CU_ASSERT_EQUAL(pb_store_project_create_with_key(st, "proj_2", "beta", "key_2", HASH_B,
                                                     "pbk_XyZ", NULL),
                    PB_STORE_OK);
    CU_ASSERT_EQUAL(pb_store_api_key_lookup(st, HASH_B, pid, sizeof pid), PB_STORE_OK);
    CU_ASSERT_STRING_EQUAL(pid, "proj_2");
    pb_store_close(st);
    free(path);
}

static void test_persistence(void)
{
    char *path = fresh_path();
    pb_store *st = open_path(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    CU_ASSERT_EQUAL(pb_store_project_create_with_key(st, "proj_1", "acme", "key_1", HASH_A,
                                                     "pbk_AbC", NULL),
                    PB_STORE_OK);
    CU_ASSERT_EQUAL(pb_store_project_create(st, "proj_2", "beta", NULL), PB_STORE_OK);
    json_t *before = NULL;
    CU_ASSERT_EQUAL(pb_store_project_list(st, &before), PB_STORE_OK);
    pb_store_close(st);

    st = open_path(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    json_t *after = NULL;
    CU_ASSERT_EQUAL(pb_store_project_list(st, &after), PB_STORE_OK);
    CU_ASSERT_TRUE(json_equal(before, after));
    CU_ASSERT_EQUAL(json_array_size(after), 2);
    char pid[64];
    CU_ASSERT_EQUAL(pb_store_api_key_lookup(st, HASH_A, pid, sizeof pid), PB_STORE_OK);
    CU_ASSERT_STRING_EQUAL(pid, "proj_1");
    json_decref(before);
    json_decref(after);
    pb_store_close(st);
    free(path);
}

/* ---- many threads on one store ----------------------------------------------- */

enum { THREADS = 8, PER_THREAD = 25 };

struct worker {
    pb_store *st;
    int n;
    int failures;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        char id[32], name[32], key[32], hash[65], pid[64];
        snprintf(id, sizeof id, "proj_%d_%d", w->n, i);
        snprintf(name, sizeof name, "name-%d-%d", w->n, i);
        snprintf(key, sizeof key, "key_%d_%d", w->n, i);
        snprintf(hash, sizeof hash, "%064d", w->n * 1000 + i);
        if (pb_store_project_create_with_key(w->st, id, name, key, hash, "pbk_x", NULL) != 0)
            w->failures++;
        if (pb_store_api_key_lookup(w->st, hash, pid, sizeof pid) != 0 || strcmp(pid, id) != 0)
            w->failures++;
        /* Everyone also races for one shared name: exactly one wins. */
        char sid[32];
        snprintf(sid, sizeof sid, "shared_%d_%d", w->n, i);
        int rc = pb_store_project_create(w->st, sid, "shared", NULL);
        if (rc != PB_STORE_OK && rc != PB_STORE_CONFLICT)
            w->failures++;
        json_t *p = NULL;
        if (pb_store_project_get(w->st, name, &p) != 0)
            w->failures++;
        json_decref(p);
    }
    return NULL;
}

static void test_threads(void)
{
    char *path = fresh_path();
    pb_store *st = open_path(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    pthread_t th[THREADS];
    struct worker w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct worker){st, i, 0};
        CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        CU_ASSERT_EQUAL(w[i].failures, 0);
    }
    json_t *list = NULL;
    CU_ASSERT_EQUAL(pb_store_project_list(st, &list), PB_STORE_OK);
    CU_ASSERT_EQUAL(json_array_size(list), THREADS * PER_THREAD + 1);
    json_decref(list);
    pb_store_close(st);
    free(path);
}

/* ---- control plane ----------------------------------------------------------- */

/* Parses a JSON literal of the test itself. */
static json_t *J(const char *text)
{
    json_error_t e;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &e);
    if (!v)
        fprintf(stderr, "bad test JSON (%s): %s\n", e.text, text);
    return v;
}

/* 1 when v equals the JSON literal `text`. */
static int jeq(const json_t *v, const char *text)
{
    json_t *w = J(text);
    int eq = v && w && json_equal(v, w);
    if (!eq) {
        char *d = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
        fprintf(stderr, "JSON differs:\n  got  %s\n  want %s\n", d ? d : "(null)", text);
        free(d);
    }
    json_decref(w);
    return eq;
}

static long long jint(json_t *o, const char *key)
{
    return json_integer_value(json_object_get(o, key));
}

static int has(json_t *o, const char *key)
{
    return json_object_get(o, key) != NULL;
}

/* 2026-11-26T12:00:00.123Z */
#define T_FIXED 1795694400123LL
#define T_FIXED_STR "2026-11-26T12:00:00Z"
/* Rows made "long ago" by the tests. */
#define T_OLD_STR "2020-01-01T00:00:00Z"

static int log_count;
static void count_log(const char *msg)
{
    (void)msg;
    log_count++;
}

/* A store with projects p_1 ("one") and p_2 ("two"). */
static pb_store *open_two_projects(char **path_out)
{
    char *path = fresh_path();
    pb_store *st = open_path(path);
    if (st) {
        CU_ASSERT_EQUAL(pb_store_project_create(st, "p_1", "one", NULL), PB_STORE_OK);
        CU_ASSERT_EQUAL(pb_store_project_create(st, "p_2", "two", NULL), PB_STORE_OK);
    }
    *path_out = path;
    return st;
}

static const char MANIFEST_1[] =
    "[{\"name\": \"crm\", \"provider\": \"hubspot\", \"displayName\": \"CRM sync\","
    "  \"proxy\": {\"enabled\": true},"
    "  \"write\": {\"objects\": [{\"objectName\": \"contacts\", \"inheritMapping\": false}]},"
    "  \"read\": {\"objects\": [{\"objectName\": \"deals\", \"destination\": \"hook\","
    "    \"schedule\": \"*/10 * * * *\", \"requiredFields\": [{\"fieldName\": \"amount\"}],"
    "    \"optionalFields\": [{\"fieldName\": \"stage\", \"mapToName\": \"phase\"}]}]}},"
    " {\"name\": \"sales\", \"provider\": \"salesforce\", \"proxy\": {\"enabled\": false},"
    "  \"write\": {\"objects\": []}, \"read\": {\"objects\": []}}]";

/* Applies MANIFEST_1 to p_1 and returns the id of "crm" (static buffer). */
static const char *apply_manifest_1(pb_store *st)
{
    static char id[64];
    json_t *m = J(MANIFEST_1), *out = NULL;
    id[0] = '\0';
    CU_ASSERT_EQUAL(pb_store_integrations_apply(st, "p_1", m, &out), PB_STORE_OK);
    if (json_array_size(out) >= 1)
        snprintf(id, sizeof id, "%s", jstr(json_array_get(out, 0), "id"));
    json_decref(m);
    json_decref(out);
    return id;
}

static void test_integrations_apply(void)
{
    char *path;
    pb_store *st = open_two_projects(&path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);

    json_t *list = NULL;
    CU_ASSERT_EQUAL(pb_store_integration_list(st, "p_1", &list), PB_STORE_OK);
    CU_ASSERT_TRUE(json_is_array(list) && json_array_size(list) == 0);
    json_decref(list);

    json_t *m = J(MANIFEST_1);
    json_t *out = NULL;
    CU_ASSERT_EQUAL_FATAL(pb_store_integrations_apply(st, "p_1", m, &out), PB_STORE_OK);
    json_decref(m);
    CU_ASSERT_EQUAL_FATAL(json_array_size(out), 2);
    json_t *crm = json_array_get(out, 0), *sales = json_array_get(out, 1);
    char crm_id[64], sales_id[64];
    snprintf(crm_id, sizeof crm_id, "%s", jstr(crm, "id"));
    snprintf(sales_id, sizeof sales_id, "%s", jstr(sales, "id"));
    CU_ASSERT_EQUAL(strncmp(crm_id, "int_", 4), 0);
    CU_ASSERT_EQUAL(strlen(crm_id), 4 + 26);
    CU_ASSERT_EQUAL(strncmp(sales_id, "int_", 4), 0);
    CU_ASSERT_STRING_NOT_EQUAL(crm_id, sales_id);
    CU_ASSERT_STRING_EQUAL(jstr(crm, "projectId"), "p_1");
    CU_ASSERT_STRING_EQUAL(jstr(crm, "name"), "crm");
    CU_ASSERT_STRING_EQUAL(jstr(crm, "provider"), "hubspot");
    CU_ASSERT_STRING_EQUAL(jstr(crm, "displayName"), "CRM sync");
    CU_ASSERT_TRUE(jeq(json_object_get(crm, "proxy"), "{\"enabled\": true}"));
    CU_ASSERT_TRUE(jeq(json_object_get(crm, "write"),
                       "{\"objects\": [{\"objectName\": \"contacts\", \"inheritMapping\": false}]}"));
    CU_ASSERT_TRUE(jeq(json_object_get(crm, "read"),
                       "{\"objects\": [{\"objectName\": \"deals\", \"destination\": \"hook\","
                       " \"schedule\": \"*/10 * * * *\", \"requiredFields\": [{\"fieldName\":"
                       " \"amount\"}], \"optionalFields\": [{\"fieldName\": \"stage\","
                       " \"mapToName\": \"phase\"}]}]}"));
    CU_ASSERT_TRUE(is_rfc3339_utc(jstr(crm, "createTime")));
    CU_ASSERT_TRUE(is_rfc3339_utc(jstr(crm, "updateTime")));
    CU_ASSERT_EQUAL(json_object_size(crm), 10);
    CU_ASSERT_STRING_EQUAL(jstr(sales, "name"), "sales");
    CU_ASSERT_STRING_EQUAL(jstr(sales, "provider"), "salesforce");
    CU_ASSERT_FALSE(has(sales, "displayName"));
    CU_ASSERT_TRUE(jeq(json_object_get(sales, "proxy"), "{\"enabled\": false}"));
    CU_ASSERT_EQUAL(json_object_size(sales), 9);

    /* get by id, by name; the list says the same. */
    json_t *g = NULL;
    CU_ASSERT_EQUAL(pb_store_integration_get(st, "p_1", crm_id, &g), PB_STORE_OK);
    CU_ASSERT_TRUE(json_equal(g, crm));
    json_decref(g);
    g = NULL;
    CU_ASSERT_EQUAL(pb_store_integration_get(st, "p_1", "sales", &g), PB_STORE_OK);
    CU_ASSERT_TRUE(json_equal(g, sales));
    json_decref(g);
    list = NULL;
    CU_ASSERT_EQUAL(pb_store_integration_list(st, "p_1", &list), PB_STORE_OK);
    CU_ASSERT_TRUE(json_equal(list, out));
    json_decref(list);
    json_decref(out);

    /* What the columns hold. */
    sqlite3 *db = raw_open(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(db);
    CU_ASSERT_EQUAL(raw_int(db, "SELECT proxy_enabled FROM integrations WHERE name = 'crm'"), 1);
    CU_ASSERT_EQUAL(raw_int(db, "SELECT proxy_enabled FROM integrations WHERE name = 'sales'"), 0);
    CU_ASSERT_EQUAL(raw_int(db, "SELECT json_extract(definition, '$.proxy.enabled')"
                                " FROM integrations WHERE name = 'crm'"),
                    1);
    CU_ASSERT_EQUAL(raw_int(db, "SELECT count(*) FROM integrations WHERE display_name IS NULL"),
                    1);
    /* Pretend both were made long ago. */
    CU_ASSERT_EQUAL(raw_exec(db, "UPDATE integrations SET created_at = 1577836800000,"
                                 " updated_at = 1577836800000"),
                    SQLITE_OK);

    /* Re-apply: crm changes (no displayName, proxy off, no read section),
     * sales is absent and kept, hr is new. */
    m = J("[{\"name\": \"crm\", \"provider\": \"hubspot2\", \"proxy\": {\"enabled\": false},"
          "  \"write\": {\"objects\": [{\"objectName\": \"companies\"}]}},"
          " {\"name\": \"hr\", \"provider\": \"generic\"}]");
    out = NULL;
    CU_ASSERT_EQUAL_FATAL(pb_store_integrations_apply(st, "p_1", m, &out), PB_STORE_OK);
    json_decref(m);
    CU_ASSERT_EQUAL_FATAL(json_array_size(out), 3);
    crm = json_array_get(out, 0);
    sales = json_array_get(out, 1);
    json_t *hr = json_array_get(out, 2);
    CU_ASSERT_STRING_EQUAL(jstr(crm, "id"), crm_id);
    CU_ASSERT_STRING_EQUAL(jstr(crm, "provider"), "hubspot2");
    CU_ASSERT_FALSE(has(crm, "displayName"));
    CU_ASSERT_TRUE(jeq(json_object_get(crm, "proxy"), "{\"enabled\": false}"));
    CU_ASSERT_TRUE(jeq(json_object_get(crm, "write"),
                       "{\"objects\": [{\"objectName\": \"companies\"}]}"));
    /* An absent section is the manifest's default. */
    CU_ASSERT_TRUE(jeq(json_object_get(crm, "read"), "{\"objects\": []}"));
    CU_ASSERT_STRING_EQUAL(jstr(crm, "createTime"), T_OLD_STR);
    CU_ASSERT_STRING_NOT_EQUAL(jstr(crm, "updateTime"), T_OLD_STR);
    CU_ASSERT_STRING_EQUAL(jstr(sales, "id"), sales_id);
    CU_ASSERT_STRING_EQUAL(jstr(sales, "provider"), "salesforce");
    CU_ASSERT_STRING_EQUAL(jstr(sales, "updateTime"), T_OLD_STR);
    CU_ASSERT_STRING_EQUAL(jstr(hr, "name"), "hr");
    CU_ASSERT_EQUAL(strncmp(jstr(hr, "id"), "int_", 4), 0);
    CU_ASSERT_STRING_NOT_EQUAL(jstr(hr, "id"), crm_id);
    CU_ASSERT_STRING_NOT_EQUAL(jstr(hr, "id"), sales_id);
    CU_ASSERT_TRUE(jeq(json_object_get(hr, "proxy"), "{\"enabled\": false}"));
    CU_ASSERT_TRUE(jeq(json_object_get(hr, "write"), "{\"objects\": []}"));
    CU_ASSERT_EQUAL(raw_int(db, "SELECT proxy_enabled FROM integrations WHERE name = 'crm'"), 0);
    json_decref(out);

    /* An empty array changes nothing and answers the list. */
    m = json_array();
    out = NULL;
    CU_ASSERT_EQUAL(pb_store_integrations_apply(st, "p_1", m, &out), PB_STORE_OK);
    CU_ASSERT_EQUAL(json_array_size(out), 3);
    json_decref(out);
    /* out may be NULL. */
    CU_ASSERT_EQUAL(pb_store_integrations_apply(st, "p_1", m, NULL), PB_STORE_OK);
    json_decref(m);

    /* Another project: its own rows, nothing of p_1 visible. */
    list = NULL;
    CU_ASSERT_EQUAL(pb_store_integration_list(st, "p_2", &list), PB_STORE_OK);
    CU_ASSERT_EQUAL(json_array_size(list), 0);
    json_decref(list);
    g = (json_t *)&g;
    CU_ASSERT_EQUAL(pb_store_integration_get(st, "p_2", crm_id, &g), PB_STORE_NOTFOUND);
    CU_ASSERT_PTR_NULL(g);
    CU_ASSERT_EQUAL(pb_store_integration_get(st, "p_2", "crm", &g), PB_STORE_NOTFOUND);
    CU_ASSERT_EQUAL(pb_store_integration_get(st, "p_1", "nope", &g), PB_STORE_NOTFOUND);
    m = J("[{\"name\": \"crm\", \"provider\": \"hubspot\"}]");
    out = NULL;
    CU_ASSERT_EQUAL(pb_store_integrations_apply(st, "p_2", m, &out), PB_STORE_OK);
    CU_ASSERT_EQUAL_FATAL(json_array_size(out), 1);
    CU_ASSERT_STRING_NOT_EQUAL(jstr(json_array_get(out, 0), "id"), crm_id);
    CU_ASSERT_STRING_EQUAL(jstr(json_array_get(out, 0), "projectId"), "p_2");
    json_decref(out);
    g = NULL;
    CU_ASSERT_EQUAL(pb_store_integration_get(st, "p_1", "crm", &g), PB_STORE_OK);
    CU_ASSERT_STRING_EQUAL(jstr(g, "provider"), "hubspot2");
    json_decref(g);
    /* Unknown project. */
    out = (json_t *)&out;
    CU_ASSERT_EQUAL(pb_store_integrations_apply(st, "p_nope", m, &out), PB_STORE_NOTFOUND);
    CU_ASSERT_PTR_NULL(out);
    json_t *empty = json_array();
    CU_ASSERT_EQUAL(pb_store_integrations_apply(st, "p_nope", empty, NULL), PB_STORE_NOTFOUND);
    json_decref(empty);
    json_decref(m);
    CU_ASSERT_EQUAL(raw_int(db, "SELECT count(*) FROM integrations"), 4);
    sqlite3_close(db);
    pb_store_close(st);
    free(path);
}

/* The whole array is one transaction: a bad entry or a failing insert
 * leaves everything as it was. */
static void test_integrations_apply_atomic(void)
{
    char *path;
    pb_store *st = open_two_projects(&path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    const char *crm_id = apply_manifest_1(st);
    CU_ASSERT_EQUAL_FATAL(strlen(crm_id), 30);
    uint64_t gen = pb_store_generation(st);

    static const char *const bad[] = {
        "[{\"name\": \"crm\", \"provider\": \"x\"}, {\"name\": \"n\"}]",
        "[{\"name\": \"crm\", \"provider\": \"x\"}, {\"provider\": \"p\"}]",
        "[{\"name\": \"crm\", \"provider\": \"x\"}, {\"name\": \"\", \"provider\": \"p\"}]",
        "[{\"name\": \"crm\", \"provider\": \"x\", \"displayName\": 5}]",
        "[{\"name\": \"crm\", \"provider\": \"x\", \"proxy\": true}]",
        "[{\"name\": \"crm\", \"provider\": \"x\", \"read\": []}]",
        "[{\"name\": \"crm\", \"provider\": \"x\"}, 7]",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *m = J(bad[i]), *out = (json_t *)&m;
        CU_ASSERT_EQUAL(pb_store_integrations_apply(st, "p_1", m, &out), PB_STORE_ERR);
        CU_ASSERT_PTR_NULL(out);
        json_decref(m);
    }
    json_t *obj = json_object();
    CU_ASSERT_EQUAL(pb_store_integrations_apply(st, "p_1", obj, NULL), PB_STORE_ERR);
    json_decref(obj);

    /* A database failure halfway (a trigger refuses one insert). */
    sqlite3 *db = raw_open(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(db);
    CU_ASSERT_EQUAL(raw_exec(db, "CREATE TRIGGER no_boom BEFORE INSERT ON integrations"
                                 " WHEN NEW.name = 'boom' BEGIN SELECT RAISE(ABORT, 'no'); END"),
                    SQLITE_OK);
    log_count = 0;
    pb_store_set_log(count_log);
    json_t *m = J("[{\"name\": \"crm\", \"provider\": \"changed\"},"
                  " {\"name\": \"fresh\", \"provider\": \"p\"},"
                  " {\"name\": \"boom\", \"provider\": \"p\"}]");
    CU_ASSERT_EQUAL(pb_store_integrations_apply(st, "p_1", m, NULL), PB_STORE_ERR);
    json_decref(m);
    pb_store_set_log(NULL);
    CU_ASSERT_EQUAL(log_count, 1);
    CU_ASSERT_EQUAL(pb_store_generation(st), gen);

    json_t *g = NULL;
    CU_ASSERT_EQUAL(pb_store_integration_get(st, "p_1", "crm", &g), PB_STORE_OK);
    CU_ASSERT_STRING_EQUAL(jstr(g, "provider"), "hubspot");
    CU_ASSERT_STRING_EQUAL(jstr(g, "id"), crm_id);
    json_decref(g);
    CU_ASSERT_EQUAL(pb_store_integration_get(st, "p_1", "fresh", &g), PB_STORE_NOTFOUND);
    CU_ASSERT_EQUAL(raw_int(db, "SELECT count(*) FROM integrations"), 2);
    /* Usable afterwards. */
    CU_ASSERT_EQUAL(raw_exec(db, "DROP TRIGGER no_boom"), SQLITE_OK);
    sqlite3_close(db);
    m = J("[{\"name\": \"boom\", \"provider\": \"p\"}]");
    CU_ASSERT_EQUAL(pb_store_integrations_apply(st, "p_1", m, NULL), PB_STORE_OK);
    json_decref(m);
    CU_ASSERT_TRUE(pb_store_generation(st) > gen);
    pb_store_close(st);
    free(path);
}

static const char CONN_FULL[] =
    "{\"id\": \"con_1\", \"provider\": \"salesforce\", \"groupRef\": \"g1\","
    " \"consumerRef\": \"user-7\", \"authType\": \"oauth2_authorization_code\","
    " \"providerMetadata\": {\"instance_url\": {\"value\": \"https://a.example\"},"
    "   \"keep\": {\"value\": \"k\"}},"
    " \"scopes\": [\"api\", \"refresh_token\"], \"expiresAt\": 1795694400123}";

static void test_connections(void)
{
    char *path;
    pb_store *st = open_two_projects(&path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);

    json_t *c = J(CONN_FULL), *out = NULL;
    CU_ASSERT_EQUAL_FATAL(pb_store_connection_create(st, "p_1", c, "sealed-1", &out),
                          PB_STORE_OK);
    json_decref(c);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    CU_ASSERT_STRING_EQUAL(jstr(out, "id"), "con_1");
    CU_ASSERT_STRING_EQUAL(jstr(out, "projectId"), "p_1");
    CU_ASSERT_STRING_EQUAL(jstr(out, "provider"), "salesforce");
    CU_ASSERT_STRING_EQUAL(jstr(out, "groupRef"), "g1");
    CU_ASSERT_STRING_EQUAL(jstr(out, "consumerRef"), "user-7");
    CU_ASSERT_STRING_EQUAL(jstr(out, "authScheme"), "oauth2_authorization_code");
    CU_ASSERT_TRUE(jeq(json_object_get(out, "providerMetadata"),
                       "{\"instance_url\": {\"value\": \"https://a.example\"},"
                       " \"keep\": {\"value\": \"k\"}}"));
    CU_ASSERT_TRUE(jeq(json_object_get(out, "scopes"), "[\"api\", \"refresh_token\"]"));
    CU_ASSERT_STRING_EQUAL(jstr(out, "status"), "working");
    CU_ASSERT_STRING_EQUAL(jstr(out, "accessTokenExpiresAt"), T_FIXED_STR);
    CU_ASSERT_TRUE(is_rfc3339_utc(jstr(out, "createTime")));
    CU_ASSERT_TRUE(is_rfc3339_utc(jstr(out, "updateTime")));
    CU_ASSERT_TRUE(json_is_integer(json_object_get(out, "version")));
    CU_ASSERT_EQUAL(jint(out, "version"), 1);
    CU_ASSERT_EQUAL(json_object_size(out), 13);
    /* Never a secret in the API shape. */
    char *dump = json_dumps(out, 0);
    CU_ASSERT_PTR_NULL(strstr(dump, "sealed-1"));
    free(dump);

    /* Minimal: no consumerRef, scopes, expiry or metadata. */
    c = J("{\"id\": \"con_2\", \"provider\": \"hubspot\", \"groupRef\": \"g2\","
          " \"authType\": \"api_key\", \"consumerRef\": null}");
    json_t *out2 = NULL;
    CU_ASSERT_EQUAL_FATAL(pb_store_connection_create(st, "p_1", c, "sealed-2", &out2),
                          PB_STORE_OK);
    json_decref(c);
    CU_ASSERT_STRING_EQUAL(jstr(out2, "authScheme"), "api_key");
    CU_ASSERT_TRUE(jeq(json_object_get(out2, "providerMetadata"), "{}"));
    CU_ASSERT_FALSE(has(out2, "consumerRef"));
    CU_ASSERT_FALSE(has(out2, "scopes"));
    CU_ASSERT_FALSE(has(out2, "accessTokenExpiresAt"));
    CU_ASSERT_EQUAL(json_object_size(out2), 10);
    /* out may be NULL. */
    c = J("{\"id\": \"con_3\", \"provider\": \"hubspot\", \"groupRef\": \"g1\","
          " \"authType\": \"basic\"}");
    CU_ASSERT_EQUAL(pb_store_connection_create(st, "p_1", c, "sealed-3", NULL), PB_STORE_OK);
    json_decref(c);

    /* get, with and without the sealed credentials. */
    json_t *g = NULL;
    char *sealed = NULL;
    CU_ASSERT_EQUAL(pb_store_connection_get(st, "p_1", "con_1", &g, &sealed), PB_STORE_OK);
    CU_ASSERT_TRUE(json_equal(g, out));
    CU_ASSERT_PTR_NOT_NULL_FATAL(sealed);
    CU_ASSERT_STRING_EQUAL(sealed, "sealed-1");
    free(sealed);
    json_decref(g);
    g = NULL;
    CU_ASSERT_EQUAL(pb_store_connection_get(st, "p_1", "con_2", &g, NULL), PB_STORE_OK);
    CU_ASSERT_TRUE(json_equal(g, out2));
    json_decref(g);

    /* list, all and by group, in creation order. */
    json_t *list = NULL;
    CU_ASSERT_EQUAL(pb_store_connection_list(st, "p_1", NULL, &list), PB_STORE_OK);
    CU_ASSERT_EQUAL_FATAL(json_array_size(list), 3);
    CU_ASSERT_TRUE(json_equal(json_array_get(list, 0), out));
    CU_ASSERT_TRUE(json_equal(json_array_get(list, 1), out2));
    CU_ASSERT_STRING_EQUAL(jstr(json_array_get(list, 2), "id"), "con_3");
    json_decref(list);
    list = NULL;
    CU_ASSERT_EQUAL(pb_store_connection_list(st, "p_1", "g1", &list), PB_STORE_OK);
    CU_ASSERT_EQUAL_FATAL(json_array_size(list), 2);
    CU_ASSERT_STRING_EQUAL(jstr(json_array_get(list, 0), "id"), "con_1");
    CU_ASSERT_STRING_EQUAL(jstr(json_array_get(list, 1), "id"), "con_3");
    json_decref(list);
    list = NULL;
    CU_ASSERT_EQUAL(pb_store_connection_list(st, "p_1", "g9", &list), PB_STORE_OK);
    CU_ASSERT_EQUAL(json_array_size(list), 0);
    json_decref(list);
    json_decref(out);
    json_decref(out2);

    /* Another project sees none of them. */
    list = NULL;
    CU_ASSERT_EQUAL(pb_store_connection_list(st, "p_2", NULL, &list), PB_STORE_OK);
    CU_ASSERT_EQUAL(json_array_size(list), 0);
    json_decref(list);
    g = (json_t *)&g;
    sealed = (char *)&g;
    CU_ASSERT_EQUAL(pb_store_connection_get(st, "p_2", "con_1", &g, &sealed), PB_STORE_NOTFOUND);
    CU_ASSERT_PTR_NULL(g);
    CU_ASSERT_PTR_NULL(sealed);
    CU_ASSERT_EQUAL(pb_store_connection_get(st, "p_1", "con_nope", &g, &sealed),
                    PB_STORE_NOTFOUND);
    CU_ASSERT_EQUAL(pb_store_connection_delete(st, "p_2", "con_1"), PB_STORE_NOTFOUND);

    /* Conflicts and bad input. */
    c = J(CONN_FULL);
    out = (json_t *)&out;
    CU_ASSERT_EQUAL(pb_store_connection_create(st, "p_1", c, "s", &out), PB_STORE_CONFLICT);
    CU_ASSERT_PTR_NULL(out);
    /* Ids are unique across projects too. */
    CU_ASSERT_EQUAL(pb_store_connection_create(st, "p_2", c, "s", NULL), PB_STORE_CONFLICT);
    json_object_set_new(c, "id", json_string("con_9"));
    CU_ASSERT_EQUAL(pb_store_connection_create(st, "p_nope", c, "s", NULL), PB_STORE_NOTFOUND);
    CU_ASSERT_EQUAL(pb_store_connection_create(st, "p_1", c, "", NULL), PB_STORE_ERR);
    CU_ASSERT_EQUAL(pb_store_connection_create(st, "p_1", c, NULL, NULL), PB_STORE_ERR);
    static const char *const bad_members[][2] = {
        {"authType", "null"},         {"provider", "\"\""},    {"groupRef", "3"},
        {"consumerRef", "1"},         {"scopes", "\"api\""},  {"scopes", "[1]"},
        {"providerMetadata", "[]"},   {"expiresAt", "\"x\""}, {"expiresAt", "-5"},
    };
    for (size_t i = 0; i < sizeof bad_members / sizeof bad_members[0]; i++) {
        json_t *b = json_deep_copy(c);
        json_object_set_new(b, bad_members[i][0], J(bad_members[i][1]));
        CU_ASSERT_EQUAL(pb_store_connection_create(st, "p_1", b, "s", NULL), PB_STORE_ERR);
        json_decref(b);
    }
    json_decref(c);

    sqlite3 *db = raw_open(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(db);
    CU_ASSERT_EQUAL(raw_int(db, "SELECT count(*) FROM connections"), 3);
    char *t = raw_text(db, "SELECT credentials_sealed FROM connections WHERE id = 'con_2'");
    CU_ASSERT_STRING_EQUAL(t, "sealed-2");
    free(t);
    t = raw_text(db, "SELECT auth_type FROM connections WHERE id = 'con_1'");
    CU_ASSERT_STRING_EQUAL(t, "oauth2_authorization_code");
    free(t);
    CU_ASSERT_EQUAL(raw_int(db, "SELECT expires_at FROM connections WHERE id = 'con_1'"),
                    T_FIXED);
    CU_ASSERT_EQUAL(raw_int(db, "SELECT expires_at IS NULL FROM connections WHERE id = 'con_2'"),
                    1);
    sqlite3_close(db);

    /* delete */
    CU_ASSERT_EQUAL(pb_store_connection_delete(st, "p_1", "con_2"), PB_STORE_OK);
    CU_ASSERT_EQUAL(pb_store_connection_get(st, "p_1", "con_2", &g, NULL), PB_STORE_NOTFOUND);
    CU_ASSERT_EQUAL(pb_store_connection_delete(st, "p_1", "con_2"), PB_STORE_NOTFOUND);
    g = NULL;
    CU_ASSERT_EQUAL(pb_store_connection_get(st, "p_1", "con_1", &g, NULL), PB_STORE_OK);
    json_decref(g);
    pb_store_close(st);
    free(path);
}

/* A connection used by an installation cannot be deleted. */
static void test_connection_delete_in_use(void)
{
    char *path;
    pb_store *st = open_two_projects(&path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    const char *int_id = apply_manifest_1(st);
    json_t *c = J(CONN_FULL);
    CU_ASSERT_EQUAL(pb_store_connection_create(st, "p_1", c, "sealed-1", NULL), PB_STORE_OK);
    json_decref(c);
    json_t *inst = json_pack("{s:s, s:s, s:s, s:s, s:{}}", "id", "ins_1", "integrationId", int_id,
                             "groupRef", "g1", "connectionId", "con_1", "config");
    CU_ASSERT_EQUAL(pb_store_installation_create(st, "p_1", inst, NULL), PB_STORE_OK);
    json_decref(inst);
    uint64_t gen = pb_store_generation(st);
    CU_ASSERT_EQUAL(pb_store_connection_delete(st, "p_1", "con_1"), PB_STORE_CONFLICT);
    CU_ASSERT_EQUAL(pb_store_generation(st), gen);
    json_t *g = NULL;
    CU_ASSERT_EQUAL(pb_store_connection_get(st, "p_1", "con_1", &g, NULL), PB_STORE_OK);
    json_decref(g);
    /* Once the installation lets go of it, it can go. */
    json_t *cfg = json_object();
    CU_ASSERT_EQUAL(pb_store_installation_update(st, "p_1", "ins_1", NULL, cfg, NULL),
                    PB_STORE_OK);
    json_decref(cfg);
    CU_ASSERT_EQUAL(pb_store_connection_delete(st, "p_1", "con_1"), PB_STORE_OK);
    CU_ASSERT_TRUE(pb_store_generation(st) > gen);
    CU_ASSERT_EQUAL(pb_store_connection_get(st, "p_1", "con_1", &g, NULL), PB_STORE_NOTFOUND);
    pb_store_close(st);
    free(path);
}

static void test_connection_credentials(void)
{
    char *path;
    pb_store *st = open_two_projects(&path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    json_t *c = J(CONN_FULL);
    CU_ASSERT_EQUAL(pb_store_connection_create(st, "p_1", c, "sealed-1", NULL), PB_STORE_OK);
    json_decref(c);
    sqlite3 *db = raw_open(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(db);
    CU_ASSERT_EQUAL(raw_exec(db, "UPDATE connections SET created_at = 1577836800000,"
                                 " updated_at = 1577836800000"),
                    SQLITE_OK);

    /* A refresh: new credentials and expiry, metadata merged. */
    json_t *merge = J("{\"instance_url\": {\"value\": \"https://b.example\"},"
                      " \"org\": {\"value\": \"o1\"}}");
    long long v = 0;
    uint64_t gen = pb_store_generation(st);
    CU_ASSERT_EQUAL(pb_store_connection_update_credentials(st, "con_1", 1, "sealed-2",
                                                           1795698000000LL, merge, &v),
                    PB_STORE_OK);
    json_decref(merge);
    CU_ASSERT_EQUAL(v, 2);
    CU_ASSERT_TRUE(pb_store_generation(st) > gen);
    json_t *g = NULL;
    char *sealed = NULL;
    CU_ASSERT_EQUAL(pb_store_connection_get(st, "p_1", "con_1", &g, &sealed), PB_STORE_OK);
    CU_ASSERT_STRING_EQUAL(sealed, "sealed-2");
    free(sealed);
    CU_ASSERT_EQUAL(jint(g, "version"), 2);
    CU_ASSERT_STRING_EQUAL(jstr(g, "accessTokenExpiresAt"), "2026-11-26T13:00:00Z");
    CU_ASSERT_TRUE(jeq(json_object_get(g, "providerMetadata"),
                       "{\"instance_url\": {\"value\": \"https://b.example\"},"
                       " \"keep\": {\"value\": \"k\"}, \"org\": {\"value\": \"o1\"}}"));
    CU_ASSERT_STRING_EQUAL(jstr(g, "createTime"), T_OLD_STR);
    CU_ASSERT_STRING_NOT_EQUAL(jstr(g, "updateTime"), T_OLD_STR);
    CU_ASSERT_STRING_EQUAL(jstr(g, "status"), "working");
    json_decref(g);

    /* A second refresher with the old version loses. */
    gen = pb_store_generation(st);
    v = 77;
    CU_ASSERT_EQUAL(pb_store_connection_update_credentials(st, "con_1", 1, "sealed-x", 0, NULL,
                                                           &v),
                    PB_STORE_CONFLICT);
    CU_ASSERT_EQUAL(v, 77);
    CU_ASSERT_EQUAL(pb_store_generation(st), gen);
    char *t = raw_text(db, "SELECT credentials_sealed FROM connections WHERE id = 'con_1'");
    CU_ASSERT_STRING_EQUAL(t, "sealed-2");
    free(t);
    CU_ASSERT_EQUAL(pb_store_connection_update_credentials(st, "con_nope", 1, "s", 0, NULL, &v),
                    PB_STORE_NOTFOUND);

    /* Failed refreshes count up and set the status. */
    CU_ASSERT_EQUAL(pb_store_connection_refresh_failed(st, "con_1", 1795694460000LL,
                                                       "bad_credentials"),
                    PB_STORE_OK);
    CU_ASSERT_TRUE(pb_store_generation(st) > gen);
    CU_ASSERT_EQUAL(pb_store_connection_refresh_failed(st, "con_1", 1795694520000LL,
                                                       "bad_credentials"),
                    PB_STORE_OK);
    CU_ASSERT_EQUAL(raw_int(db, "SELECT refresh_failures FROM connections"), 2);
    CU_ASSERT_EQUAL(raw_int(db, "SELECT refresh_retry_at FROM connections"), 1795694520000LL);
    CU_ASSERT_EQUAL(raw_int(db, "SELECT version FROM connections"), 2);
    g = NULL;
    CU_ASSERT_EQUAL(pb_store_connection_get(st, "p_1", "con_1", &g, NULL), PB_STORE_OK);
    CU_ASSERT_STRING_EQUAL(jstr(g, "status"), "bad_credentials");
    json_decref(g);
    /* NULL status keeps it, 0 clears the retry time. */
    CU_ASSERT_EQUAL(pb_store_connection_refresh_failed(st, "con_1", 0, NULL), PB_STORE_OK);
    CU_ASSERT_EQUAL(raw_int(db, "SELECT refresh_failures FROM connections"), 3);
    CU_ASSERT_EQUAL(raw_int(db, "SELECT refresh_retry_at IS NULL FROM connections"), 1);
    t = raw_text(db, "SELECT status FROM connections");
    CU_ASSERT_STRING_EQUAL(t, "bad_credentials");
    free(t);
    CU_ASSERT_EQUAL(pb_store_connection_refresh_failed(st, "con_nope", 0, "x"),
                    PB_STORE_NOTFOUND);

    /* A successful refresh resets all that; expiry 0 clears it; a null
     * member removes a metadata key. */
    CU_ASSERT_EQUAL(raw_exec(db, "UPDATE connections SET refresh_retry_at = 5"), SQLITE_OK);
    merge = J("{\"org\": null}");
    CU_ASSERT_EQUAL(pb_store_connection_update_credentials(st, "con_1", 2, "sealed-3", 0, merge,
                                                           &v),
                    PB_STORE_OK);
    json_decref(merge);
    CU_ASSERT_EQUAL(v, 3);
    CU_ASSERT_EQUAL(raw_int(db, "SELECT refresh_failures FROM connections"), 0);
    CU_ASSERT_EQUAL(raw_int(db, "SELECT refresh_retry_at IS NULL FROM connections"), 1);
    CU_ASSERT_EQUAL(raw_int(db, "SELECT expires_at IS NULL FROM connections"), 1);
    g = NULL;
    CU_ASSERT_EQUAL(pb_store_connection_get(st, "p_1", "con_1", &g, NULL), PB_STORE_OK);
    CU_ASSERT_STRING_EQUAL(jstr(g, "status"), "working");
    CU_ASSERT_FALSE(has(g, "accessTokenExpiresAt"));
    CU_ASSERT_EQUAL(jint(g, "version"), 3);
    CU_ASSERT_TRUE(jeq(json_object_get(g, "providerMetadata"),
                       "{\"instance_url\": {\"value\": \"https://b.example\"},"
                       " \"keep\": {\"value\": \"k\"}}"));
    json_decref(g);
    /* No metadata: kept as is; new_version may be NULL. */
    CU_ASSERT_EQUAL(pb_store_connection_update_credentials(st, "con_1", 3, "sealed-4", 0, NULL,
                                                           NULL),
                    PB_STORE_OK);
    t = raw_text(db, "SELECT provider_metadata FROM connections");
    json_t *md = J(t);
    CU_ASSERT_TRUE(jeq(md, "{\"instance_url\": {\"value\": \"https://b.example\"},"
                           " \"keep\": {\"value\": \"k\"}}"));
    json_decref(md);
    free(t);
    CU_ASSERT_EQUAL(raw_int(db, "SELECT version FROM connections"), 4);
    /* Bad arguments. */
    json_t *arr = json_array();
    CU_ASSERT_EQUAL(pb_store_connection_update_credentials(st, "con_1", 4, "s", 0, arr, NULL),
                    PB_STORE_ERR);
    json_decref(arr);
    CU_ASSERT_EQUAL(pb_store_connection_update_credentials(st, "con_1", 4, NULL, 0, NULL, NULL),
                    PB_STORE_ERR);
    CU_ASSERT_EQUAL(raw_int(db, "SELECT version FROM connections"), 4);
    sqlite3_close(db);
    pb_store_close(st);
    free(path);
}

/* Many refreshers race on one version: exactly one wins. */
enum { CAS_THREADS = 8 };

struct cas_worker {
    pb_store *st;
    long long expected;
    int n, rc;
};

static void *cas_main(void *arg)
{
    struct cas_worker *w = arg;
    char sealed[32];
    snprintf(sealed, sizeof sealed, "sealed-by-%d", w->n);
    long long v = 0;
    w->rc = pb_store_connection_update_credentials(w->st, "con_1", w->expected, sealed, 0, NULL,
                                                   &v);
    return NULL;
}

static void test_connection_cas_threads(void)
{
    char *path;
    pb_store *st = open_two_projects(&path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    json_t *c = J(CONN_FULL);
    CU_ASSERT_EQUAL(pb_store_connection_create(st, "p_1", c, "sealed-1", NULL), PB_STORE_OK);
    json_decref(c);
    for (long long round = 1; round <= 3; round++) {
        pthread_t th[CAS_THREADS];
        struct cas_worker w[CAS_THREADS];
        for (int i = 0; i < CAS_THREADS; i++) {
            w[i] = (struct cas_worker){st, round, i, -99};
            CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, cas_main, &w[i]), 0);
        }
        int wins = 0, conflicts = 0;
        for (int i = 0; i < CAS_THREADS; i++) {
            pthread_join(th[i], NULL);
            wins += w[i].rc == PB_STORE_OK;
            conflicts += w[i].rc == PB_STORE_CONFLICT;
        }
        CU_ASSERT_EQUAL(wins, 1);
        CU_ASSERT_EQUAL(conflicts, CAS_THREADS - 1);
    }
    json_t *g = NULL;
    CU_ASSERT_EQUAL(pb_store_connection_get(st, "p_1", "con_1", &g, NULL), PB_STORE_OK);
    CU_ASSERT_EQUAL(jint(g, "version"), 4);
    json_decref(g);
    pb_store_close(st);
    free(path);
}

static void test_oauth_states(void)
{
    char *path;
    pb_store *st = open_two_projects(&path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    sqlite3 *db = raw_open(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(db);
    uint64_t gen = pb_store_generation(st);

    json_t *payload = J("{\"groupRef\": \"g1\", \"provider\": \"salesforce\","
                        " \"providerMetadata\": {\"instance_url\": {\"value\": \"u\"}},"
                        " \"verifier\": \"sealed-v\"}");
    CU_ASSERT_EQUAL(pb_store_oauth_state_put(st, "st_1", "p_1", payload, 2000), PB_STORE_OK);
    CU_ASSERT_EQUAL(pb_store_oauth_state_put(st, "st_1", "p_2", payload, 2000),
                    PB_STORE_CONFLICT);
    CU_ASSERT_EQUAL(pb_store_oauth_state_put(st, "st_x", "p_nope", payload, 2000),
                    PB_STORE_NOTFOUND);
    CU_ASSERT_EQUAL(pb_store_oauth_state_put(st, "", "p_1", payload, 2000), PB_STORE_ERR);
    CU_ASSERT_EQUAL(pb_store_oauth_state_put(st, "st_y", "p_1", NULL, 2000), PB_STORE_ERR);
    CU_ASSERT_EQUAL(raw_int(db, "SELECT count(*) FROM oauth_states"), 1);
    CU_ASSERT_EQUAL(raw_int(db, "SELECT expires_at FROM oauth_states"), 2000);

    /* Too small a buffer: an error, and the state is still there. */
    char tiny[3] = "zz";
    json_t *p = (json_t *)&p;
    CU_ASSERT_EQUAL(pb_store_oauth_state_take(st, "st_1", 1000, tiny, sizeof tiny, &p),
                    PB_STORE_ERR);
    CU_ASSERT_PTR_NULL(p);
    CU_ASSERT_STRING_EQUAL(tiny, "");
    CU_ASSERT_EQUAL(raw_int(db, "SELECT count(*) FROM oauth_states"), 1);

    char pid[64] = "junk";
    p = NULL;
    CU_ASSERT_EQUAL(pb_store_oauth_state_take(st, "st_1", 1000, pid, sizeof pid, &p),
                    PB_STORE_OK);
    CU_ASSERT_STRING_EQUAL(pid, "p_1");
    CU_ASSERT_TRUE(json_equal(p, payload));
    json_decref(p);
    /* Single use. */
    strcpy(pid, "junk");
    p = (json_t *)&p;
    CU_ASSERT_EQUAL(pb_store_oauth_state_take(st, "st_1", 1000, pid, sizeof pid, &p),
                    PB_STORE_NOTFOUND);
    CU_ASSERT_PTR_NULL(p);
    CU_ASSERT_STRING_EQUAL(pid, "");
    CU_ASSERT_EQUAL(pb_store_oauth_state_take(st, "never", 1000, pid, sizeof pid, &p),
                    PB_STORE_NOTFOUND);
    CU_ASSERT_EQUAL(raw_int(db, "SELECT count(*) FROM oauth_states"), 0);

    /* Expired (at its expiry time exactly): not found, and removed. */
    CU_ASSERT_EQUAL(pb_store_oauth_state_put(st, "st_2", "p_1", payload, 1500), PB_STORE_OK);
    CU_ASSERT_EQUAL(pb_store_oauth_state_take(st, "st_2", 1500, pid, sizeof pid, &p),
                    PB_STORE_NOTFOUND);
    CU_ASSERT_PTR_NULL(p);
    CU_ASSERT_EQUAL(raw_int(db, "SELECT count(*) FROM oauth_states"), 0);
    CU_ASSERT_EQUAL(pb_store_oauth_state_put(st, "st_2b", "p_1", payload, 1500), PB_STORE_OK);
    CU_ASSERT_EQUAL(pb_store_oauth_state_take(st, "st_2b", 1499, NULL, 0, NULL), PB_STORE_OK);

    /* A take sweeps other expired states, even when its own is unknown. */
    CU_ASSERT_EQUAL(pb_store_oauth_state_put(st, "st_3", "p_1", payload, 100), PB_STORE_OK);
    CU_ASSERT_EQUAL(pb_store_oauth_state_put(st, "st_4", "p_2", payload, 5000), PB_STORE_OK);
    CU_ASSERT_EQUAL(pb_store_oauth_state_put(st, "st_5", "p_2", payload, 150), PB_STORE_OK);
    CU_ASSERT_EQUAL(pb_store_oauth_state_take(st, "st_4", 200, pid, sizeof pid, NULL),
                    PB_STORE_OK);
    CU_ASSERT_STRING_EQUAL(pid, "p_2");
    CU_ASSERT_EQUAL(raw_int(db, "SELECT count(*) FROM oauth_states"), 0);
    CU_ASSERT_EQUAL(pb_store_oauth_state_put(st, "st_6", "p_1", payload, 100), PB_STORE_OK);
    CU_ASSERT_EQUAL(pb_store_oauth_state_take(st, "unknown", 200, pid, sizeof pid, NULL),
                    PB_STORE_NOTFOUND);
    CU_ASSERT_EQUAL(raw_int(db, "SELECT count(*) FROM oauth_states"), 0);
    /* States are not cached data. */
    CU_ASSERT_EQUAL(pb_store_generation(st), gen);
    json_decref(payload);
    sqlite3_close(db);
    pb_store_close(st);
    free(path);
}

static const char CONFIG_1[] =
    "{\"content\": {\"write\": {\"objects\": {\"contacts\": {\"objectName\": \"contacts\"}}},"
    " \"read\": {\"objects\": {}}, \"proxy\": {\"enabled\": true}, \"zeta\": 1, \"alpha\": [2]}}";

static void test_installations(void)
{
    char *path;
    pb_store *st = open_two_projects(&path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    char int_id[64];
    snprintf(int_id, sizeof int_id, "%s", apply_manifest_1(st));
    json_t *ints = NULL;
    CU_ASSERT_EQUAL(pb_store_integration_list(st, "p_1", &ints), PB_STORE_OK);
    char int2_id[64];
    snprintf(int2_id, sizeof int2_id, "%s", jstr(json_array_get(ints, 1), "id"));
    json_decref(ints);
    json_t *m = J("[{\"name\": \"crm\", \"provider\": \"hubspot\"}]"), *o2 = NULL;
    CU_ASSERT_EQUAL(pb_store_integrations_apply(st, "p_2", m, &o2), PB_STORE_OK);
    char int_p2[64];
    snprintf(int_p2, sizeof int_p2, "%s", jstr(json_array_get(o2, 0), "id"));
    json_decref(o2);
    json_decref(m);
    json_t *c = J(CONN_FULL);
    CU_ASSERT_EQUAL(pb_store_connection_create(st, "p_1", c, "s1", NULL), PB_STORE_OK);
    json_object_set_new(c, "id", json_string("con_2"));
    CU_ASSERT_EQUAL(pb_store_connection_create(st, "p_1", c, "s2", NULL), PB_STORE_OK);
    json_object_set_new(c, "id", json_string("con_p2"));
    CU_ASSERT_EQUAL(pb_store_connection_create(st, "p_2", c, "s3", NULL), PB_STORE_OK);
    json_decref(c);

    json_t *cfg = J(CONFIG_1);
    json_t *inst = json_pack("{s:s, s:s, s:s, s:s, s:O}", "id", "ins_1", "integrationId", int_id,
                             "groupRef", "g1", "connectionId", "con_1", "config", cfg);
    json_t *out = NULL;
    uint64_t gen = pb_store_generation(st);
    CU_ASSERT_EQUAL_FATAL(pb_store_installation_create(st, "p_1", inst, &out), PB_STORE_OK);
    CU_ASSERT_TRUE(pb_store_generation(st) > gen);
    CU_ASSERT_STRING_EQUAL(jstr(out, "id"), "ins_1");
    CU_ASSERT_STRING_EQUAL(jstr(out, "projectId"), "p_1");
    CU_ASSERT_STRING_EQUAL(jstr(out, "integrationId"), int_id);
    CU_ASSERT_STRING_EQUAL(jstr(out, "groupRef"), "g1");
    CU_ASSERT_STRING_EQUAL(jstr(out, "connectionId"), "con_1");
    CU_ASSERT_TRUE(json_equal(json_object_get(out, "config"), cfg));
    /* As given, key order included. */
    char *a = json_dumps(json_object_get(out, "config"), JSON_COMPACT);
    char *b = json_dumps(cfg, JSON_COMPACT);
    CU_ASSERT_STRING_EQUAL(a, b);
    free(a);
    free(b);
    CU_ASSERT_TRUE(is_rfc3339_utc(jstr(out, "createTime")));
    CU_ASSERT_TRUE(is_rfc3339_utc(jstr(out, "updateTime")));
    CU_ASSERT_EQUAL(json_object_size(out), 8);

    /* A second installation of the integration for the group. */
    gen = pb_store_generation(st);
    json_object_set_new(inst, "id", json_string("ins_dup"));
    json_t *x = (json_t *)&x;
    CU_ASSERT_EQUAL(pb_store_installation_create(st, "p_1", inst, &x), PB_STORE_CONFLICT);
    CU_ASSERT_PTR_NULL(x);
    json_object_del(inst, "connectionId");
    CU_ASSERT_EQUAL(pb_store_installation_create(st, "p_1", inst, NULL), PB_STORE_CONFLICT);
    /* Same id again. */
    json_object_set_new(inst, "id", json_string("ins_1"));
    json_object_set_new(inst, "groupRef", json_string("g7"));
    CU_ASSERT_EQUAL(pb_store_installation_create(st, "p_1", inst, NULL), PB_STORE_CONFLICT);
    /* Another project's integration or connection, or none at all. */
    json_object_set_new(inst, "id", json_string("ins_x"));
    json_object_set_new(inst, "integrationId", json_string(int_p2));
    CU_ASSERT_EQUAL(pb_store_installation_create(st, "p_1", inst, NULL), PB_STORE_NOTFOUND);
    json_object_set_new(inst, "integrationId", json_string("int_nope"));
    CU_ASSERT_EQUAL(pb_store_installation_create(st, "p_1", inst, NULL), PB_STORE_NOTFOUND);
    json_object_set_new(inst, "integrationId", json_string(int_id));
    json_object_set_new(inst, "connectionId", json_string("con_p2"));
    CU_ASSERT_EQUAL(pb_store_installation_create(st, "p_1", inst, NULL), PB_STORE_NOTFOUND);
    json_object_set_new(inst, "connectionId", json_string("con_nope"));
    CU_ASSERT_EQUAL(pb_store_installation_create(st, "p_1", inst, NULL), PB_STORE_NOTFOUND);
    /* Project p_2 cannot install p_1's integration. */
    json_object_set_new(inst, "connectionId", json_string("con_p2"));
    CU_ASSERT_EQUAL(pb_store_installation_create(st, "p_2", inst, NULL), PB_STORE_NOTFOUND);
    /* The check comes first: NOTFOUND even when the group already has one. */
    json_object_set_new(inst, "groupRef", json_string("g1"));
    json_object_set_new(inst, "connectionId", json_string("con_nope"));
    CU_ASSERT_EQUAL(pb_store_installation_create(st, "p_1", inst, NULL), PB_STORE_NOTFOUND);
    /* Bad input. */
    json_object_set_new(inst, "connectionId", json_integer(5));
    CU_ASSERT_EQUAL(pb_store_installation_create(st, "p_1", inst, NULL), PB_STORE_ERR);
    json_object_del(inst, "connectionId");
    json_object_set_new(inst, "config", json_string("x"));
    CU_ASSERT_EQUAL(pb_store_installation_create(st, "p_1", inst, NULL), PB_STORE_ERR);
    json_object_set_new(inst, "config", json_object());
    json_object_del(inst, "groupRef");
    CU_ASSERT_EQUAL(pb_store_installation_create(st, "p_1", inst, NULL), PB_STORE_ERR);
    json_decref(inst);
    CU_ASSERT_EQUAL(pb_store_generation(st), gen);

    /* No connection; a second integration for the same group. */
    inst = json_pack("{s:s, s:s, s:s, s:{s:{}}}", "id", "ins_2", "integrationId", int_id,
                     "groupRef", "g2", "config", "content");
    json_t *out2 = NULL;
    CU_ASSERT_EQUAL_FATAL(pb_store_installation_create(st, "p_1", inst, &out2), PB_STORE_OK);
    json_decref(inst);
    CU_ASSERT_FALSE(has(out2, "connectionId"));
    CU_ASSERT_TRUE(jeq(json_object_get(out2, "config"), "{\"content\": {}}"));
    CU_ASSERT_EQUAL(json_object_size(out2), 7);
    inst = json_pack("{s:s, s:s, s:s, s:s}", "id", "ins_3", "integrationId", int2_id, "groupRef",
                     "g1", "connectionId", "con_2");
    CU_ASSERT_EQUAL(pb_store_installation_create(st, "p_1", inst, NULL), PB_STORE_OK);
    json_decref(inst);
    inst = json_pack("{s:s, s:s, s:s}", "id", "ins_p2", "integrationId", int_p2, "groupRef", "g1");
    CU_ASSERT_EQUAL(pb_store_installation_create(st, "p_2", inst, NULL), PB_STORE_OK);
    json_decref(inst);

    /* get, find, list. */
    json_t *g = NULL;
    CU_ASSERT_EQUAL(pb_store_installation_get(st, "p_1", "ins_1", &g), PB_STORE_OK);
    CU_ASSERT_TRUE(json_equal(g, out));
    json_decref(g);
    g = NULL;
    CU_ASSERT_EQUAL(pb_store_installation_find(st, "p_1", int_id, "g1", &g), PB_STORE_OK);
    CU_ASSERT_TRUE(json_equal(g, out));
    json_decref(g);
    g = NULL;
    CU_ASSERT_EQUAL(pb_store_installation_find(st, "p_1", int2_id, "g1", &g), PB_STORE_OK);
    CU_ASSERT_STRING_EQUAL(jstr(g, "id"), "ins_3");
    json_decref(g);
    g = (json_t *)&g;
    CU_ASSERT_EQUAL(pb_store_installation_find(st, "p_1", int_id, "g9", &g), PB_STORE_NOTFOUND);
    CU_ASSERT_PTR_NULL(g);
    CU_ASSERT_EQUAL(pb_store_installation_find(st, "p_2", int_id, "g1", &g), PB_STORE_NOTFOUND);
    CU_ASSERT_EQUAL(pb_store_installation_get(st, "p_2", "ins_1", &g), PB_STORE_NOTFOUND);
    CU_ASSERT_EQUAL(pb_store_installation_get(st, "p_1", "ins_p2", &g), PB_STORE_NOTFOUND);
    CU_ASSERT_EQUAL(pb_store_installation_get(st, "p_1", "nope", &g), PB_STORE_NOTFOUND);

    json_t *list = NULL;
    CU_ASSERT_EQUAL(pb_store_installation_list(st, "p_1", NULL, NULL, &list), PB_STORE_OK);
    CU_ASSERT_EQUAL_FATAL(json_array_size(list), 3);
    CU_ASSERT_TRUE(json_equal(json_array_get(list, 0), out));
    CU_ASSERT_TRUE(json_equal(json_array_get(list, 1), out2));
    CU_ASSERT_STRING_EQUAL(jstr(json_array_get(list, 2), "id"), "ins_3");
    json_decref(list);
    list = NULL;
    CU_ASSERT_EQUAL(pb_store_installation_list(st, "p_1", int_id, NULL, &list), PB_STORE_OK);
    CU_ASSERT_EQUAL_FATAL(json_array_size(list), 2);
    CU_ASSERT_STRING_EQUAL(jstr(json_array_get(list, 0), "id"), "ins_1");
    CU_ASSERT_STRING_EQUAL(jstr(json_array_get(list, 1), "id"), "ins_2");
    json_decref(list);
    list = NULL;
    CU_ASSERT_EQUAL(pb_store_installation_list(st, "p_1", NULL, "g1", &list), PB_STORE_OK);
    CU_ASSERT_EQUAL_FATAL(json_array_size(list), 2);
    CU_ASSERT_STRING_EQUAL(jstr(json_array_get(list, 0), "id"), "ins_1");
    CU_ASSERT_STRING_EQUAL(jstr(json_array_get(list, 1), "id"), "ins_3");
    json_decref(list);
    list = NULL;
    CU_ASSERT_EQUAL(pb_store_installation_list(st, "p_1", int_id, "g2", &list), PB_STORE_OK);
    CU_ASSERT_EQUAL_FATAL(json_array_size(list), 1);
    CU_ASSERT_STRING_EQUAL(jstr(json_array_get(list, 0), "id"), "ins_2");
    json_decref(list);
    list = NULL;
    CU_ASSERT_EQUAL(pb_store_installation_list(st, "p_2", NULL, NULL, &list), PB_STORE_OK);
    CU_ASSERT_EQUAL_FATAL(json_array_size(list), 1);
    CU_ASSERT_STRING_EQUAL(jstr(json_array_get(list, 0), "id"), "ins_p2");
    json_decref(list);
    list = NULL;
    CU_ASSERT_EQUAL(pb_store_installation_list(st, "p_2", int_id, NULL, &list), PB_STORE_OK);
    CU_ASSERT_EQUAL(json_array_size(list), 0);
    json_decref(list);
    json_decref(out2);

    /* update: replaces the connection and the whole config. */
    sqlite3 *db = raw_open(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(db);
    CU_ASSERT_EQUAL(raw_exec(db, "UPDATE installations SET created_at = 1577836800000,"
                                 " updated_at = 1577836800000"),
                    SQLITE_OK);
    json_t *cfg2 = J("{\"content\": {\"proxy\": {\"enabled\": false}}}");
    gen = pb_store_generation(st);
    json_t *u = NULL;
    CU_ASSERT_EQUAL(pb_store_installation_update(st, "p_1", "ins_1", "con_2", cfg2, &u),
                    PB_STORE_OK);
    CU_ASSERT_TRUE(pb_store_generation(st) > gen);
    CU_ASSERT_STRING_EQUAL(jstr(u, "id"), "ins_1");
    CU_ASSERT_STRING_EQUAL(jstr(u, "connectionId"), "con_2");
    CU_ASSERT_TRUE(json_equal(json_object_get(u, "config"), cfg2));
    CU_ASSERT_STRING_EQUAL(jstr(u, "createTime"), T_OLD_STR);
    CU_ASSERT_STRING_NOT_EQUAL(jstr(u, "updateTime"), T_OLD_STR);
    CU_ASSERT_STRING_EQUAL(jstr(u, "integrationId"), int_id);
    CU_ASSERT_STRING_EQUAL(jstr(u, "groupRef"), "g1");
    json_decref(u);
    u = NULL;
    CU_ASSERT_EQUAL(pb_store_installation_update(st, "p_1", "ins_1", NULL, cfg, &u), PB_STORE_OK);
    CU_ASSERT_FALSE(has(u, "connectionId"));
    CU_ASSERT_TRUE(json_equal(json_object_get(u, "config"), cfg));
    json_decref(u);
    CU_ASSERT_EQUAL(raw_int(db, "SELECT connection_id IS NULL FROM installations"
                                " WHERE id = 'ins_1'"),
                    1);
    gen = pb_store_generation(st);
    u = (json_t *)&u;
    CU_ASSERT_EQUAL(pb_store_installation_update(st, "p_1", "ins_1", "con_p2", cfg2, &u),
                    PB_STORE_NOTFOUND);
    CU_ASSERT_PTR_NULL(u);
    CU_ASSERT_EQUAL(pb_store_installation_update(st, "p_1", "ins_1", "con_nope", cfg2, NULL),
                    PB_STORE_NOTFOUND);
    CU_ASSERT_EQUAL(pb_store_installation_update(st, "p_1", "nope", NULL, cfg2, NULL),
                    PB_STORE_NOTFOUND);
    CU_ASSERT_EQUAL(pb_store_installation_update(st, "p_2", "ins_1", NULL, cfg2, NULL),
                    PB_STORE_NOTFOUND);
    CU_ASSERT_EQUAL(pb_store_installation_update(st, "p_1", "ins_p2", NULL, cfg2, NULL),
                    PB_STORE_NOTFOUND);
    CU_ASSERT_EQUAL(pb_store_installation_update(st, "p_1", "ins_1", NULL, NULL, NULL),
                    PB_STORE_ERR);
    CU_ASSERT_EQUAL(pb_store_generation(st), gen);
    g = NULL;
    CU_ASSERT_EQUAL(pb_store_installation_get(st, "p_1", "ins_1", &g), PB_STORE_OK);
    CU_ASSERT_TRUE(json_equal(json_object_get(g, "config"), cfg));
    CU_ASSERT_FALSE(has(g, "connectionId"));
    json_decref(g);
    json_decref(cfg2);

    /* delete (its queued work goes with it). */
    CU_ASSERT_EQUAL(raw_exec(db, "INSERT INTO operations(id, project_id, integration_id,"
                                 " installation_id, created_at, updated_at)"
                                 " SELECT 'op_1', 'p_1', integration_id, id, 1, 1"
                                 " FROM installations WHERE id = 'ins_1'"),
                    SQLITE_OK);
    CU_ASSERT_EQUAL(pb_store_installation_delete(st, "p_2", "ins_1"), PB_STORE_NOTFOUND);
    CU_ASSERT_EQUAL(pb_store_installation_delete(st, "p_1", "ins_p2"), PB_STORE_NOTFOUND);
    CU_ASSERT_EQUAL(pb_store_generation(st), gen);
    CU_ASSERT_EQUAL(pb_store_installation_delete(st, "p_1", "ins_1"), PB_STORE_OK);
    CU_ASSERT_TRUE(pb_store_generation(st) > gen);
    CU_ASSERT_EQUAL(pb_store_installation_get(st, "p_1", "ins_1", &g), PB_STORE_NOTFOUND);
    CU_ASSERT_EQUAL(pb_store_installation_delete(st, "p_1", "ins_1"), PB_STORE_NOTFOUND);
    CU_ASSERT_EQUAL(raw_int(db, "SELECT count(*) FROM operations"), 0);
    /* The group can install that integration again. */
    inst = json_pack("{s:s, s:s, s:s}", "id", "ins_1b", "integrationId", int_id, "groupRef", "g1");
    CU_ASSERT_EQUAL(pb_store_installation_create(st, "p_1", inst, NULL), PB_STORE_OK);
    json_decref(inst);
    CU_ASSERT_EQUAL(raw_int(db, "SELECT count(*) FROM installations"), 4);
    sqlite3_close(db);
    json_decref(cfg);
    json_decref(out);
    pb_store_close(st);
    free(path);
}

/* Writes move the generation, reads and failed writes do not. */
/* A commit through another handle (another process, the CLI) moves the
 * generation too, within the polling interval. */
static void test_generation_sees_other_handles(void)
{
    char *path = pbt_path("gen-other.db");
    pb_store *a = open_path(path), *b = open_path(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    uint64_t before = pb_store_generation(a);
    usleep(600 * 1000);
    CU_ASSERT_EQUAL(pb_store_generation(a), before);
    CU_ASSERT_EQUAL(pb_store_project_create(b, "prj_other", "other", NULL), PB_STORE_OK);
    usleep(600 * 1000);
    CU_ASSERT_TRUE(pb_store_generation(a) > before);
    pb_store_close(a);
    pb_store_close(b);
    free(path);
}

static void test_generation(void)
{
    char *path = fresh_path();
    pb_store *st = open_path(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    CU_ASSERT_EQUAL(pb_store_generation(NULL), 0);
    uint64_t g0 = pb_store_generation(st);
#define BUMPS(call)                                                                            \
    do {                                                                                       \
        uint64_t before_ = pb_store_generation(st);                                            \
        CU_ASSERT_EQUAL(call, PB_STORE_OK);                                                    \
        CU_ASSERT_TRUE(pb_store_generation(st) > before_);                                     \
    } while (0)
#define STILL(call, want)                                                                      \
    do {                                                                                       \
        uint64_t before_ = pb_store_generation(st);                                            \
        CU_ASSERT_EQUAL(call, want);                                                           \
        CU_ASSERT_EQUAL(pb_store_generation(st), before_);                                     \
    } while (0)
    BUMPS(pb_store_project_create_with_key(st, "p_1", "one", "key_1", HASH_A, "pbk_a", NULL));
    BUMPS(pb_store_api_key_add(st, "key_2", "p_1", HASH_B, "pbk_b"));
    BUMPS(pb_store_project_create(st, "p_2", "two", NULL));
    STILL(pb_store_api_key_add(st, "key_3", "p_1", HASH_B, "pbk_b"), PB_STORE_CONFLICT);
    STILL(pb_store_project_create_with_key(st, "p_3", "one", "key_4", HASH_C, "pbk_c", NULL),
          PB_STORE_CONFLICT);
    json_t *m = J("[{\"name\": \"crm\", \"provider\": \"hubspot\"}]"), *out = NULL;
    BUMPS(pb_store_integrations_apply(st, "p_1", m, &out));
    json_t *conn = J("{\"id\": \"con_1\", \"provider\": \"hubspot\", \"groupRef\": \"g\","
                     " \"authType\": \"api_key\"}");
    BUMPS(pb_store_connection_create(st, "p_1", conn, "s", NULL));
    STILL(pb_store_connection_create(st, "p_1", conn, "s", NULL), PB_STORE_CONFLICT);
    json_t *inst = json_pack("{s:s, s:s, s:s, s:s}", "id", "ins_1", "integrationId",
                             jstr(json_array_get(out, 0), "id"), "groupRef", "g", "connectionId",
                             "con_1");
    BUMPS(pb_store_installation_create(st, "p_1", inst, NULL));
    STILL(pb_store_installation_create(st, "p_1", inst, NULL), PB_STORE_CONFLICT);

    /* Reads. */
    uint64_t before = pb_store_generation(st);
    char pid[64];
    json_t *r = NULL;
    char *sealed = NULL;
    CU_ASSERT_EQUAL(pb_store_api_key_lookup(st, HASH_A, pid, sizeof pid), PB_STORE_OK);
    CU_ASSERT_EQUAL(pb_store_project_list(st, &r), PB_STORE_OK);
    json_decref(r);
    CU_ASSERT_EQUAL(pb_store_project_get(st, "p_1", &r), PB_STORE_OK);
    json_decref(r);
    CU_ASSERT_EQUAL(pb_store_integration_list(st, "p_1", &r), PB_STORE_OK);
    json_decref(r);
    CU_ASSERT_EQUAL(pb_store_integration_get(st, "p_1", "crm", &r), PB_STORE_OK);
    json_decref(r);
    CU_ASSERT_EQUAL(pb_store_connection_get(st, "p_1", "con_1", &r, &sealed), PB_STORE_OK);
    json_decref(r);
    free(sealed);
    CU_ASSERT_EQUAL(pb_store_connection_list(st, "p_1", NULL, &r), PB_STORE_OK);
    json_decref(r);
    CU_ASSERT_EQUAL(pb_store_installation_get(st, "p_1", "ins_1", &r), PB_STORE_OK);
    json_decref(r);
    CU_ASSERT_EQUAL(pb_store_installation_list(st, "p_1", NULL, NULL, &r), PB_STORE_OK);
    json_decref(r);
    CU_ASSERT_EQUAL(pb_store_installation_find(st, "p_1", jstr(inst, "integrationId"), "g", &r),
                    PB_STORE_OK);
    json_decref(r);
    CU_ASSERT_EQUAL(pb_store_ping(st), PB_STORE_OK);
    CU_ASSERT_EQUAL(pb_store_generation(st), before);

    json_t *cfg = json_object();
    BUMPS(pb_store_installation_update(st, "p_1", "ins_1", "con_1", cfg, NULL));
    STILL(pb_store_installation_update(st, "p_1", "ins_9", "con_1", cfg, NULL),
          PB_STORE_NOTFOUND);
    BUMPS(pb_store_connection_update_credentials(st, "con_1", 1, "s2", 0, NULL, NULL));
    STILL(pb_store_connection_update_credentials(st, "con_1", 1, "s2", 0, NULL, NULL),
          PB_STORE_CONFLICT);
    BUMPS(pb_store_connection_refresh_failed(st, "con_1", 0, "bad_credentials"));
    STILL(pb_store_connection_refresh_failed(st, "con_9", 0, "bad_credentials"),
          PB_STORE_NOTFOUND);
    STILL(pb_store_connection_delete(st, "p_1", "con_1"), PB_STORE_CONFLICT);
    BUMPS(pb_store_installation_delete(st, "p_1", "ins_1"));
    STILL(pb_store_installation_delete(st, "p_1", "ins_1"), PB_STORE_NOTFOUND);
    BUMPS(pb_store_connection_delete(st, "p_1", "con_1"));
    STILL(pb_store_connection_delete(st, "p_1", "con_1"), PB_STORE_NOTFOUND);
#undef BUMPS
#undef STILL
    CU_ASSERT_EQUAL(pb_store_generation(st), g0 + 11); /* one per successful write */
    json_decref(cfg);
    json_decref(inst);
    json_decref(conn);
    json_decref(out);
    json_decref(m);
    pb_store_close(st);
    free(path);
}

static void test_control_plane_persistence(void)
{
    char *path;
    pb_store *st = open_two_projects(&path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    const char *int_id = apply_manifest_1(st);
    json_t *c = J(CONN_FULL);
    CU_ASSERT_EQUAL(pb_store_connection_create(st, "p_1", c, "sealed-1", NULL), PB_STORE_OK);
    json_decref(c);
    json_t *inst = json_pack("{s:s, s:s, s:s, s:s, s:o}", "id", "ins_1", "integrationId", int_id,
                             "groupRef", "g1", "connectionId", "con_1", "config", J(CONFIG_1));
    CU_ASSERT_EQUAL(pb_store_installation_create(st, "p_1", inst, NULL), PB_STORE_OK);
    json_decref(inst);
    json_t *payload = J("{\"groupRef\": \"g1\"}");
    CU_ASSERT_EQUAL(pb_store_oauth_state_put(st, "st_1", "p_1", payload, 4102444800000LL),
                    PB_STORE_OK);
    long long v = 0;
    CU_ASSERT_EQUAL(pb_store_connection_update_credentials(st, "con_1", 1, "sealed-2",
                                                           1795698000000LL, NULL, &v),
                    PB_STORE_OK);

    json_t *ints = NULL, *conns = NULL, *insts = NULL;
    CU_ASSERT_EQUAL(pb_store_integration_list(st, "p_1", &ints), PB_STORE_OK);
    CU_ASSERT_EQUAL(pb_store_connection_list(st, "p_1", NULL, &conns), PB_STORE_OK);
    CU_ASSERT_EQUAL(pb_store_installation_list(st, "p_1", NULL, NULL, &insts), PB_STORE_OK);
    pb_store_close(st);

    st = open_path(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    json_t *r = NULL;
    CU_ASSERT_EQUAL(pb_store_integration_list(st, "p_1", &r), PB_STORE_OK);
    CU_ASSERT_TRUE(json_equal(r, ints));
    CU_ASSERT_EQUAL(json_array_size(r), 2);
    json_decref(r);
    r = NULL;
    CU_ASSERT_EQUAL(pb_store_connection_list(st, "p_1", NULL, &r), PB_STORE_OK);
    CU_ASSERT_TRUE(json_equal(r, conns));
    CU_ASSERT_EQUAL(jint(json_array_get(r, 0), "version"), 2);
    json_decref(r);
    r = NULL;
    CU_ASSERT_EQUAL(pb_store_installation_list(st, "p_1", NULL, NULL, &r), PB_STORE_OK);
    CU_ASSERT_TRUE(json_equal(r, insts));
    CU_ASSERT_EQUAL(json_array_size(r), 1);
    json_decref(r);
    char *sealed = NULL;
    r = NULL;
    CU_ASSERT_EQUAL(pb_store_connection_get(st, "p_1", "con_1", &r, &sealed), PB_STORE_OK);
    CU_ASSERT_STRING_EQUAL(sealed, "sealed-2");
    free(sealed);
    json_decref(r);
    char pid[64];
    r = NULL;
    CU_ASSERT_EQUAL(pb_store_oauth_state_take(st, "st_1", 1795694400123LL, pid, sizeof pid, &r),
                    PB_STORE_OK);
    CU_ASSERT_STRING_EQUAL(pid, "p_1");
    CU_ASSERT_TRUE(json_equal(r, payload));
    json_decref(r);
    /* A re-apply after reopening keeps the ids. */
    json_t *m = J(MANIFEST_1);
    r = NULL;
    CU_ASSERT_EQUAL(pb_store_integrations_apply(st, "p_1", m, &r), PB_STORE_OK);
    CU_ASSERT_EQUAL_FATAL(json_array_size(r), 2);
    CU_ASSERT_STRING_EQUAL(jstr(json_array_get(r, 0), "id"),
                           jstr(json_array_get(ints, 0), "id"));
    CU_ASSERT_STRING_EQUAL(jstr(json_array_get(r, 1), "id"),
                           jstr(json_array_get(ints, 1), "id"));
    json_decref(r);
    json_decref(m);
    json_decref(payload);
    json_decref(ints);
    json_decref(conns);
    json_decref(insts);
    pb_store_close(st);
    free(path);
}

/* ---- proxy: activity log and throttle state ------------------------------- */

/* Three records of p_1 and one of p_2 (which names p_1's installation id,
 * to show the project filter applies with the installation filter). */
static const char ACTIVITY_BATCH[] =
    "[{\"time\": 1795694400123, \"projectId\": \"p_1\", \"installationId\": \"ins_1\","
    "  \"provider\": \"hubspot\", \"method\": \"GET\", \"path\": \"/crm/v3/objects/contacts\","
    "  \"status\": 200, \"attempts\": 1, \"durationMs\": 87, \"bytesIn\": 0,"
    "  \"bytesOut\": 5120, \"requestId\": \"req_1\"},"
    " {\"time\": 1795694400500, \"projectId\": \"p_2\", \"installationId\": \"ins_1\","
    "  \"provider\": \"salesforce\", \"method\": \"POST\", \"path\": \"/services/data\","
    "  \"status\": 201, \"attempts\": 1, \"durationMs\": 12, \"bytesIn\": 40,"
    "  \"bytesOut\": 10, \"requestId\": \"req_2\"},"
    " {\"time\": 1795694401007, \"projectId\": \"p_1\", \"installationId\": null,"
    "  \"provider\": null, \"method\": \"DELETE\", \"path\": \"/x\", \"status\": null,"
    "  \"attempts\": 0, \"durationMs\": 3000, \"bytesIn\": 7, \"bytesOut\": 0,"
    "  \"requestId\": \"req_3\", \"error\": \"Provider unreachable\", \"extra\": true},"
    " {\"time\": 1795694460000, \"projectId\": \"p_1\", \"installationId\": \"ins_2\","
    "  \"provider\": \"hubspot\", \"method\": \"PATCH\", \"path\": \"/crm/v3/objects/deals/9\","
    "  \"status\": 429, \"attempts\": 3, \"durationMs\": 4100, \"bytesIn\": 99,"
    "  \"bytesOut\": 64, \"requestId\": \"req_4\", \"error\": \"Too many requests\"}]";

static const char ACT_1[] =
    "{\"id\": 1, \"time\": \"2026-11-26T12:00:00.123Z\", \"projectId\": \"p_1\","
    " \"installationId\": \"ins_1\", \"provider\": \"hubspot\", \"method\": \"GET\","
    " \"path\": \"/crm/v3/objects/contacts\", \"status\": 200, \"attempts\": 1,"
    " \"durationMs\": 87, \"bytesIn\": 0, \"bytesOut\": 5120, \"requestId\": \"req_1\"}";
static const char ACT_2[] =
    "{\"id\": 2, \"time\": \"2026-11-26T12:00:00.500Z\", \"projectId\": \"p_2\","
    " \"installationId\": \"ins_1\", \"provider\": \"salesforce\", \"method\": \"POST\","
    " \"path\": \"/services/data\", \"status\": 201, \"attempts\": 1, \"durationMs\": 12,"
    " \"bytesIn\": 40, \"bytesOut\": 10, \"requestId\": \"req_2\"}";
static const char ACT_3[] =
    "{\"id\": 3, \"time\": \"2026-11-26T12:00:01.007Z\", \"projectId\": \"p_1\","
    " \"method\": \"DELETE\", \"path\": \"/x\", \"attempts\": 0, \"durationMs\": 3000,"
    " \"bytesIn\": 7, \"bytesOut\": 0, \"requestId\": \"req_3\","
    " \"error\": \"Provider unreachable\"}";
static const char ACT_4[] =
    "{\"id\": 4, \"time\": \"2026-11-26T12:01:00.000Z\", \"projectId\": \"p_1\","
    " \"installationId\": \"ins_2\", \"provider\": \"hubspot\", \"method\": \"PATCH\","
    " \"path\": \"/crm/v3/objects/deals/9\", \"status\": 429, \"attempts\": 3,"
    " \"durationMs\": 4100, \"bytesIn\": 99, \"bytesOut\": 64, \"requestId\": \"req_4\","
    " \"error\": \"Too many requests\"}";

/* "[a, b, ...]" from JSON literals (static buffer). */
static const char *jarr(const char *a, const char *b, const char *c)
{
    static char buf[4096];
    snprintf(buf, sizeof buf, "[%s%s%s%s%s]", a ? a : "", b ? ", " : "", b ? b : "",
             c ? ", " : "", c ? c : "");
    return buf;
}

/* activity_list into a new array (NULL on failure). */
static json_t *act_list(pb_store *st, const char *project_id, const char *installation_id,
                        int limit)
{
    json_t *out = NULL;
    int rc = pb_store_activity_list(st, project_id, installation_id, limit, &out);
    CU_ASSERT_EQUAL(rc, PB_STORE_OK);
    return rc == PB_STORE_OK ? out : NULL;
}

static void test_activity_append_list(void)
{
    char *path;
    pb_store *st = open_two_projects(&path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    json_t *batch = J(ACTIVITY_BATCH);
    CU_ASSERT_PTR_NOT_NULL_FATAL(batch);
    CU_ASSERT_EQUAL(pb_store_activity_append(st, batch), PB_STORE_OK);
    json_decref(batch);

    /* Newest first, exact values, only keys that have values. */
    json_t *l = act_list(st, "p_1", NULL, 100);
    CU_ASSERT_TRUE(jeq(l, jarr(ACT_4, ACT_3, ACT_1)));
    /* Keys in the documented order. */
    static const char *const keys[] = {"id",       "time",       "projectId", "installationId",
                                       "provider", "method",     "path",      "status",
                                       "attempts", "durationMs", "bytesIn",   "bytesOut",
                                       "requestId", "error"};
    const char *k;
    json_t *v;
    size_t at = 0;
    json_object_foreach(json_array_get(l, 0), k, v)
    {
        (void)v;
        while (at < sizeof keys / sizeof keys[0] && strcmp(keys[at], k) != 0)
            at++;
        CU_ASSERT_TRUE(at < sizeof keys / sizeof keys[0]);
    }
    json_decref(l);
    l = act_list(st, "p_2", NULL, 100);
    CU_ASSERT_TRUE(jeq(l, jarr(ACT_2, NULL, NULL)));
    json_decref(l);

    /* By installation, still within the project. */
    l = act_list(st, "p_1", "ins_1", 100);
    CU_ASSERT_TRUE(jeq(l, jarr(ACT_1, NULL, NULL)));
    json_decref(l);
    l = act_list(st, "p_1", "ins_2", 100);
    CU_ASSERT_TRUE(jeq(l, jarr(ACT_4, NULL, NULL)));
    json_decref(l);
    l = act_list(st, "p_2", "ins_1", 100);
    CU_ASSERT_TRUE(jeq(l, jarr(ACT_2, NULL, NULL)));
    json_decref(l);
    l = act_list(st, "p_2", "ins_2", 100);
    CU_ASSERT_TRUE(jeq(l, "[]"));
    json_decref(l);
    l = act_list(st, "p_nope", NULL, 100);
    CU_ASSERT_TRUE(jeq(l, "[]"));
    json_decref(l);

    /* Limits: the newest ones; clamped to 1..1000. */
    l = act_list(st, "p_1", NULL, 2);
    CU_ASSERT_TRUE(jeq(l, jarr(ACT_4, ACT_3, NULL)));
    json_decref(l);
    l = act_list(st, "p_1", NULL, 1);
    CU_ASSERT_TRUE(jeq(l, jarr(ACT_4, NULL, NULL)));
    json_decref(l);
    l = act_list(st, "p_1", NULL, 0);
    CU_ASSERT_TRUE(jeq(l, jarr(ACT_4, NULL, NULL)));
    json_decref(l);
    l = act_list(st, "p_1", NULL, -7);
    CU_ASSERT_TRUE(jeq(l, jarr(ACT_4, NULL, NULL)));
    json_decref(l);
    l = act_list(st, "p_1", NULL, 1000000);
    CU_ASSERT_EQUAL(json_array_size(l), 3);
    json_decref(l);

    json_t *x = (json_t *)&x;
    CU_ASSERT_EQUAL(pb_store_activity_list(st, NULL, NULL, 10, &x), PB_STORE_ERR);
    CU_ASSERT_PTR_NULL(x);
    CU_ASSERT_EQUAL(pb_store_activity_list(NULL, "p_1", NULL, 10, &x), PB_STORE_ERR);
    CU_ASSERT_EQUAL(pb_store_activity_list(st, "p_1", NULL, 10, NULL), PB_STORE_ERR);

    /* Stored as the schema says: ms times, NULL for "no answer". */
    sqlite3 *db = raw_open(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(db);
    CU_ASSERT_EQUAL(raw_int(db, "SELECT count(*) FROM activity"), 4);
    CU_ASSERT_EQUAL(raw_int(db, "SELECT time FROM activity WHERE id = 1"), T_FIXED);
    CU_ASSERT_EQUAL(raw_int(db, "SELECT count(*) FROM activity WHERE id = 3 AND status IS NULL"
                                " AND installation_id IS NULL AND provider IS NULL"),
                    1);
    /* Each list walks an index backwards instead of sorting. */
    static const char *const plans[][2] = {
        {"EXPLAIN QUERY PLAN SELECT id FROM activity WHERE project_id = 'p_1'"
         " ORDER BY id DESC LIMIT 10",
         "activity_project"},
        {"EXPLAIN QUERY PLAN SELECT id FROM activity WHERE installation_id = 'ins_1'"
         " AND project_id = 'p_1' ORDER BY id DESC LIMIT 10",
         "activity_installation"},
    };
    for (size_t i = 0; i < 2; i++) {
        sqlite3_stmt *s;
        CU_ASSERT_EQUAL_FATAL(sqlite3_prepare_v2(db, plans[i][0], -1, &s, NULL), SQLITE_OK);
        int uses_index = 0, sorts = 0;
        while (sqlite3_step(s) == SQLITE_ROW) {
            const char *d = (const char *)sqlite3_column_text(s, 3);
            uses_index |= strstr(d, plans[i][1]) != NULL;
            sorts |= strstr(d, "TEMP B-TREE") != NULL;
        }
        sqlite3_finalize(s);
        CU_ASSERT_TRUE(uses_index);
        CU_ASSERT_FALSE(sorts);
    }
    sqlite3_close(db);

    /* An empty batch is fine; ids keep growing across batches and reopens. */
    json_t *empty = json_array();
    CU_ASSERT_EQUAL(pb_store_activity_append(st, empty), PB_STORE_OK);
    json_decref(empty);
    pb_store_close(st);
    st = open_path(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    l = act_list(st, "p_1", NULL, 10);
    CU_ASSERT_TRUE(jeq(l, jarr(ACT_4, ACT_3, ACT_1)));
    json_decref(l);
    json_t *one = json_pack("[{s:I, s:s, s:s, s:s, s:i, s:i, s:i, s:i, s:s}]", "time",
                            (json_int_t)0, "projectId", "p_1", "method", "GET", "path", "/",
                            "attempts", 1, "durationMs", 0, "bytesIn", 0, "bytesOut", 0,
                            "requestId", "req_5");
    CU_ASSERT_EQUAL(pb_store_activity_append(st, one), PB_STORE_OK);
    json_decref(one);
    l = act_list(st, "p_1", NULL, 1);
    CU_ASSERT_TRUE(jeq(l, "[{\"id\": 5, \"time\": \"1970-01-01T00:00:00.000Z\","
                          " \"projectId\": \"p_1\", \"method\": \"GET\", \"path\": \"/\","
                          " \"attempts\": 1, \"durationMs\": 0, \"bytesIn\": 0,"
                          " \"bytesOut\": 0, \"requestId\": \"req_5\"}]"));
    json_decref(l);
    pb_store_close(st);
    free(path);
}

/* One bad element: PB_STORE_ERR and not a single row written. */
static void test_activity_bad_element(void)
{
    char *path;
    pb_store *st = open_two_projects(&path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    sqlite3 *db = raw_open(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(db);
    static const struct {
        const char *key, *value; /* value NULL: the key removed */
    } cases[] = {
        {"time", NULL},           {"time", "\"2026-11-26\""}, {"time", "1.5"},
        {"time", "-1"},           {"time", "null"},           {"projectId", NULL},
        {"projectId", "\"\""},    {"projectId", "1"},         {"installationId", "7"},
        {"provider", "[]"},       {"method", NULL},           {"method", "\"\""},
        {"path", "{}"},           {"path", NULL},             {"status", "\"200\""},
        {"status", "42"},         {"status", "1000"},         {"status", "200.0"},
        {"attempts", NULL},       {"attempts", "-1"},         {"durationMs", "1.5"},
        {"durationMs", "true"},   {"bytesIn", NULL},          {"bytesIn", "-3"},
        {"bytesOut", "\"1\""},    {"requestId", NULL},        {"requestId", "5"},
        {"error", "5"},           {"error", "{}"},
    };
    json_t *good = J(ACTIVITY_BATCH);
    CU_ASSERT_PTR_NOT_NULL_FATAL(good);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *batch = json_deep_copy(good);
        json_t *e = json_array_get(batch, 2);
        if (cases[i].value)
            json_object_set_new(e, cases[i].key, J(cases[i].value));
        else
            json_object_del(e, cases[i].key);
        int rc = pb_store_activity_append(st, batch);
        if (rc != PB_STORE_ERR)
            fprintf(stderr, "accepted %s = %s\n", cases[i].key,
                    cases[i].value ? cases[i].value : "(absent)");
        CU_ASSERT_EQUAL(rc, PB_STORE_ERR);
        json_decref(batch);
    }
    /* A string with a NUL byte, an element that is no object, no array. */
    json_t *batch = json_deep_copy(good);
    json_object_set_new(json_array_get(batch, 3), "path", json_stringn("/a\0b", 4));
    CU_ASSERT_EQUAL(pb_store_activity_append(st, batch), PB_STORE_ERR);
    json_decref(batch);
    batch = json_deep_copy(good);
    json_array_append_new(batch, json_string("record"));
    CU_ASSERT_EQUAL(pb_store_activity_append(st, batch), PB_STORE_ERR);
    json_decref(batch);
    batch = json_deep_copy(good);
    json_array_insert_new(batch, 0, json_null());
    CU_ASSERT_EQUAL(pb_store_activity_append(st, batch), PB_STORE_ERR);
    json_decref(batch);
    CU_ASSERT_EQUAL(pb_store_activity_append(st, json_array_get(good, 0)), PB_STORE_ERR);
    CU_ASSERT_EQUAL(pb_store_activity_append(st, NULL), PB_STORE_ERR);
    CU_ASSERT_EQUAL(pb_store_activity_append(NULL, good), PB_STORE_ERR);
    CU_ASSERT_EQUAL(raw_int(db, "SELECT count(*) FROM activity"), 0);
    json_t *l = act_list(st, "p_1", NULL, 100);
    CU_ASSERT_EQUAL(json_array_size(l), 0);
    json_decref(l);

    /* The same batch, fixed, goes in whole. */
    CU_ASSERT_EQUAL(pb_store_activity_append(st, good), PB_STORE_OK);
    CU_ASSERT_EQUAL(raw_int(db, "SELECT count(*) FROM activity"), 4);
    json_decref(good);
    sqlite3_close(db);
    pb_store_close(st);
    free(path);
}

/* 10,000 records in batches of 500. */
static void test_activity_bulk(void)
{
    char *path;
    pb_store *st = open_two_projects(&path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    int n = 0;
    for (int b = 0; b < 20; b++) {
        json_t *batch = json_array();
        for (int i = 0; i < 500; i++, n++) {
            char rid[32], p[32];
            snprintf(rid, sizeof rid, "req_%d", n);
            snprintf(p, sizeof p, "/objects/%d", n);
            json_array_append_new(
                batch, json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:i, s:i, s:i, s:i, s:i, s:s}",
                                 "time", (json_int_t)(T_FIXED + n), "projectId", "p_1",
                                 "installationId", n % 2 ? "ins_odd" : "ins_even", "provider",
                                 "hubspot", "method", "GET", "path", p, "status", 200,
                                 "attempts", 1, "durationMs", n % 97, "bytesIn", 0, "bytesOut",
                                 n, "requestId", rid));
        }
        CU_ASSERT_EQUAL_FATAL(json_array_size(batch), 500);
        CU_ASSERT_EQUAL(pb_store_activity_append(st, batch), PB_STORE_OK);
        json_decref(batch);
    }
    CU_ASSERT_EQUAL(n, 10000);
    sqlite3 *db = raw_open(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(db);
    CU_ASSERT_EQUAL(raw_int(db, "SELECT count(*) FROM activity"), 10000);
    CU_ASSERT_EQUAL(raw_int(db, "SELECT count(DISTINCT request_id) FROM activity"), 10000);
    CU_ASSERT_EQUAL(raw_int(db, "SELECT max(id) - min(id) FROM activity"), 9999);
    sqlite3_close(db);

    /* At most 1000 per list, the newest. */
    json_t *l = act_list(st, "p_1", NULL, 5000);
    CU_ASSERT_EQUAL_FATAL(json_array_size(l), 1000);
    CU_ASSERT_STRING_EQUAL(jstr(json_array_get(l, 0), "requestId"), "req_9999");
    CU_ASSERT_STRING_EQUAL(jstr(json_array_get(l, 999), "requestId"), "req_9000");
    CU_ASSERT_STRING_EQUAL(jstr(json_array_get(l, 0), "time"), "2026-11-26T12:00:10.122Z");
    for (size_t i = 1; i < 1000; i++)
        CU_ASSERT_TRUE(jint(json_array_get(l, i - 1), "id") > jint(json_array_get(l, i), "id"));
    json_decref(l);
    l = act_list(st, "p_1", "ins_odd", 1000);
    CU_ASSERT_EQUAL_FATAL(json_array_size(l), 1000);
    CU_ASSERT_STRING_EQUAL(jstr(json_array_get(l, 0), "requestId"), "req_9999");
    CU_ASSERT_STRING_EQUAL(jstr(json_array_get(l, 999), "requestId"), "req_8001");
    json_decref(l);
    l = act_list(st, "p_2", NULL, 1000);
    CU_ASSERT_EQUAL(json_array_size(l), 0);
    json_decref(l);
    pb_store_close(st);
    free(path);
}

/* Activity is not cached data: appends (good or bad) and lists leave the
 * generation alone. */
static void test_activity_generation(void)
{
    char *path;
    pb_store *st = open_two_projects(&path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    uint64_t gen = pb_store_generation(st);
    json_t *batch = J(ACTIVITY_BATCH);
    CU_ASSERT_EQUAL(pb_store_activity_append(st, batch), PB_STORE_OK);
    CU_ASSERT_EQUAL(pb_store_activity_append(st, batch), PB_STORE_OK);
    json_object_del(json_array_get(batch, 1), "method");
    CU_ASSERT_EQUAL(pb_store_activity_append(st, batch), PB_STORE_ERR);
    json_decref(batch);
    json_t *l = act_list(st, "p_1", NULL, 10);
    CU_ASSERT_EQUAL(json_array_size(l), 6);
    json_decref(l);
    CU_ASSERT_EQUAL(pb_store_generation(st), gen);
    pb_store_close(st);
    free(path);
}

static void test_rate_limits(void)
{
    char *path;
    pb_store *st = open_two_projects(&path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    const char *int_id = apply_manifest_1(st);
    json_t *inst = json_pack("{s:s, s:s, s:s}", "id", "ins_1", "integrationId", int_id,
                             "groupRef", "g1");
    CU_ASSERT_EQUAL(pb_store_installation_create(st, "p_1", inst, NULL), PB_STORE_OK);
    json_object_set_new(inst, "id", json_string("ins_2"));
    json_object_set_new(inst, "groupRef", json_string("g2"));
    CU_ASSERT_EQUAL(pb_store_installation_create(st, "p_1", inst, NULL), PB_STORE_OK);
    json_decref(inst);
    sqlite3 *db = raw_open(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(db);
    uint64_t gen = pb_store_generation(st);

    int64_t until = 7;
    int attempts = 7, retryable = 7;
    /* Nothing recorded yet: outputs untouched. */
    CU_ASSERT_EQUAL(pb_store_rate_limit_get(st, "ins_1", &until, &attempts, &retryable),
                    PB_STORE_NOTFOUND);
    CU_ASSERT_EQUAL(until, 7);
    CU_ASSERT_EQUAL(attempts, 7);
    CU_ASSERT_EQUAL(retryable, 7);

    CU_ASSERT_EQUAL(pb_store_rate_limit_set(st, "ins_1", T_FIXED, 1, 1), PB_STORE_OK);
    CU_ASSERT_EQUAL(pb_store_rate_limit_get(st, "ins_1", &until, &attempts, &retryable),
                    PB_STORE_OK);
    CU_ASSERT_EQUAL(until, T_FIXED);
    CU_ASSERT_EQUAL(attempts, 1);
    CU_ASSERT_EQUAL(retryable, 1);
    CU_ASSERT_EQUAL(pb_store_rate_limit_get(st, "ins_2", &until, &attempts, &retryable),
                    PB_STORE_NOTFOUND);

    /* Upsert: the same row, new values; any non-zero retryable is 1. */
    CU_ASSERT_EQUAL(raw_exec(db, "UPDATE rate_limits SET updated_at = 1"), SQLITE_OK);
    CU_ASSERT_EQUAL(pb_store_rate_limit_set(st, "ins_1", T_FIXED + 60000, 4, 0), PB_STORE_OK);
    CU_ASSERT_EQUAL(pb_store_rate_limit_get(st, "ins_1", &until, &attempts, &retryable),
                    PB_STORE_OK);
    CU_ASSERT_EQUAL(until, T_FIXED + 60000);
    CU_ASSERT_EQUAL(attempts, 4);
    CU_ASSERT_EQUAL(retryable, 0);
    CU_ASSERT_EQUAL(raw_int(db, "SELECT count(*) FROM rate_limits"), 1);
    CU_ASSERT_TRUE(raw_int(db, "SELECT updated_at FROM rate_limits") > 1600000000000LL);
    CU_ASSERT_EQUAL(pb_store_rate_limit_set(st, "ins_1", 0, 0, 5), PB_STORE_OK);
    CU_ASSERT_EQUAL(pb_store_rate_limit_get(st, "ins_1", &until, &attempts, &retryable),
                    PB_STORE_OK);
    CU_ASSERT_EQUAL(until, 0);
    CU_ASSERT_EQUAL(attempts, 0);
    CU_ASSERT_EQUAL(retryable, 1);
    CU_ASSERT_EQUAL(pb_store_rate_limit_set(st, "ins_2", 5, 2, 0), PB_STORE_OK);
    CU_ASSERT_EQUAL(raw_int(db, "SELECT count(*) FROM rate_limits"), 2);
    /* Outputs are optional. */
    CU_ASSERT_EQUAL(pb_store_rate_limit_get(st, "ins_2", NULL, &attempts, NULL), PB_STORE_OK);
    CU_ASSERT_EQUAL(attempts, 2);

    /* Unknown installation, bad arguments. */
    CU_ASSERT_EQUAL(pb_store_rate_limit_set(st, "ins_nope", 5, 1, 1), PB_STORE_NOTFOUND);
    CU_ASSERT_EQUAL(pb_store_rate_limit_get(st, "ins_nope", &until, &attempts, &retryable),
                    PB_STORE_NOTFOUND);
    CU_ASSERT_EQUAL(pb_store_rate_limit_set(st, NULL, 5, 1, 1), PB_STORE_ERR);
    CU_ASSERT_EQUAL(pb_store_rate_limit_set(st, "", 5, 1, 1), PB_STORE_ERR);
    CU_ASSERT_EQUAL(pb_store_rate_limit_set(st, "ins_1", -1, 1, 1), PB_STORE_ERR);
    CU_ASSERT_EQUAL(pb_store_rate_limit_set(st, "ins_1", 5, -1, 1), PB_STORE_ERR);
    CU_ASSERT_EQUAL(pb_store_rate_limit_set(NULL, "ins_1", 5, 1, 1), PB_STORE_ERR);
    CU_ASSERT_EQUAL(pb_store_rate_limit_get(st, NULL, &until, &attempts, &retryable),
                    PB_STORE_ERR);
    CU_ASSERT_EQUAL(pb_store_rate_limit_get(NULL, "ins_1", &until, &attempts, &retryable),
                    PB_STORE_ERR);
    CU_ASSERT_EQUAL(raw_int(db, "SELECT count(*) FROM rate_limits"), 2);
    /* Throttle state is not cached data. */
    CU_ASSERT_EQUAL(pb_store_generation(st), gen);

    /* Survives a reopen; goes with its installation. */
    pb_store_close(st);
    st = open_path(path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    CU_ASSERT_EQUAL(pb_store_rate_limit_get(st, "ins_2", &until, &attempts, &retryable),
                    PB_STORE_OK);
    CU_ASSERT_EQUAL(until, 5);
    CU_ASSERT_EQUAL(attempts, 2);
    CU_ASSERT_EQUAL(retryable, 0);
    CU_ASSERT_EQUAL(pb_store_installation_delete(st, "p_1", "ins_2"), PB_STORE_OK);
    CU_ASSERT_EQUAL(pb_store_rate_limit_get(st, "ins_2", &until, &attempts, &retryable),
                    PB_STORE_NOTFOUND);
    CU_ASSERT_EQUAL(raw_int(db, "SELECT count(*) FROM rate_limits"), 1);
    sqlite3_close(db);
    pb_store_close(st);
    free(path);
}

/* ---- write API: operations and the auto-batch queue --------------------------- */

#define MIN_MS 60000LL
#define HOUR_MS 3600000LL

__attribute__((format(printf, 2, 3)))
static long long raw_intf(sqlite3 *db, const char *fmt, ...)
{
    char sql[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    return raw_int(db, sql);
}

__attribute__((format(printf, 2, 3)))
static int raw_execf(sqlite3 *db, const char *fmt, ...)
{
    char sql[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    return raw_exec(db, sql);
}

/* jeq with a printf-formatted literal. */
__attribute__((format(printf, 2, 3)))
static int jeqf(const json_t *v, const char *fmt, ...)
{
    char text[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    return jeq(v, text);
}

/* 1 when the raw JSON column text equals the literal. */
static int raw_json_eq(char *text, const char *want)
{
    json_t *v = text ? J(text) : NULL;
    int eq = jeq(v, want);
    json_decref(v);
    free(text);
    return eq;
}

/* Lowercase hex of s, into a static buffer. */
static const char *hexstr(const char *s)
{
    static char out[1024];
    size_t n = strlen(s);
    for (size_t i = 0; i < n && i < 511; i++)
        snprintf(out + 2 * i, 3, "%02x", (unsigned char)s[i]);
    out[2 * (n < 511 ? n : 511)] = '\0';
    return out;
}

/* The page token for an operation listed last: hex of "ms:id". */
static const char *token_for(long long ms, const char *id)
{
    char raw[256];
    snprintf(raw, sizeof raw, "%lld:%s", ms, id);
    return hexstr(raw);
}

/* Projects p_1 and p_2 with MANIFEST_1 each; installations ins_1 and ins_2
 * (p_1, crm), ins_s (p_1, sales) and ins_9 (p_2, crm). */
struct wfix {
    char *path;
    pb_store *st;
    sqlite3 *db;
    char crm[64], sales[64], crm2[64];
};

static int wfix_open(struct wfix *f)
{
    memset(f, 0, sizeof *f);
    f->st = open_two_projects(&f->path);
    if (!f->st)
        return -1;
    snprintf(f->crm, sizeof f->crm, "%s", apply_manifest_1(f->st));
    json_t *m = J(MANIFEST_1), *out = NULL, *g = NULL;
    CU_ASSERT_EQUAL(pb_store_integrations_apply(f->st, "p_2", m, &out), PB_STORE_OK);
    snprintf(f->crm2, sizeof f->crm2, "%s", jstr(json_array_get(out, 0), "id"));
    CU_ASSERT_EQUAL(pb_store_integration_get(f->st, "p_1", "sales", &g), PB_STORE_OK);
    snprintf(f->sales, sizeof f->sales, "%s", g ? jstr(g, "id") : "");
    json_decref(m);
    json_decref(out);
    json_decref(g);
    struct {
        const char *project, *id, *integration, *group;
    } insts[] = {
        {"p_1", "ins_1", f->crm, "g1"},
        {"p_1", "ins_2", f->crm, "g2"},
        {"p_1", "ins_s", f->sales, "g1"},
        {"p_2", "ins_9", f->crm2, "g1"},
    };
    for (size_t i = 0; i < sizeof insts / sizeof insts[0]; i++) {
        json_t *inst = json_pack("{s:s, s:s, s:s}", "id", insts[i].id, "integrationId",
                                 insts[i].integration, "groupRef", insts[i].group);
        CU_ASSERT_EQUAL(pb_store_installation_create(f->st, insts[i].project, inst, NULL),
                        PB_STORE_OK);
        json_decref(inst);
    }
    f->db = raw_open(f->path);
    return f->db ? 0 : -1;
}

static void wfix_close(struct wfix *f)
{
    sqlite3_close(f->db);
    pb_store_close(f->st);
    free(f->path);
}

/* An asynchronous operation of p_1's crm on `inst`; next_at/deadline < 0
 * leave them out. */
static int mkop(struct wfix *f, const char *id, const char *inst, long long next_at,
                long long deadline)
{
    json_t *op = json_pack("{s:s, s:s, s:s, s:{s:s}}", "id", id, "integrationId", f->crm,
                           "installationId", inst, "request", "kind", "single");
    if (next_at >= 0)
        json_object_set_new(op, "nextAttemptAt", json_integer(next_at));
    if (deadline >= 0)
        json_object_set_new(op, "deadlineAt", json_integer(deadline));
    int rc = pb_store_operation_create(f->st, "p_1", op, NULL);
    json_decref(op);
    return rc;
}

/* The ids of a claim result, in order, joined by ',' (static buffer). */
static const char *claim_ids(json_t *arr)
{
    static char out[4096];
    out[0] = '\0';
    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e)
    {
        size_t n = strlen(out);
        snprintf(out + n, sizeof out - n, "%s%s", i ? "," : "", jstr(e, "id"));
    }
    return out;
}

/* Claims and returns the ids (static buffer); "ERR" on failure. */
static const char *claim(pb_store *st, const char *owner, long long now, long long until, int max)
{
    json_t *c = NULL;
    if (pb_store_operation_claim(st, owner, now, until, max, &c) != PB_STORE_OK)
        return "ERR";
    const char *ids = claim_ids(c);
    json_decref(c);
    return ids;
}

static void test_operation_create_get(void)
{
    struct wfix f;
    CU_ASSERT_EQUAL_FATAL(wfix_open(&f), 0);
    pb_store *st = f.st;

    json_t *op = json_pack("{s:s, s:s, s:s, s:{s:[s]}, s:{s:s, s:s, s:{s:s}}, s:I, s:I}", "id",
                           "op_a", "integrationId", f.crm, "installationId", "ins_1", "metadata",
                           "objects", "contacts", "request", "type", "create", "object",
                           "contacts", "record", "email", "a@x", "nextAttemptAt",
                           (json_int_t)T_FIXED, "deadlineAt", (json_int_t)(T_FIXED + HOUR_MS));
    json_t *out = NULL;
    CU_ASSERT_EQUAL(pb_store_operation_create(st, "p_1", op, &out), PB_STORE_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    CU_ASSERT_TRUE(is_rfc3339_utc(jstr(out, "createTime")));
    CU_ASSERT_TRUE(is_rfc3339_utc(jstr(out, "updateTime")));
    json_object_del(out, "createTime");
    json_object_del(out, "updateTime");
    CU_ASSERT_TRUE(jeqf(out,
                        "{\"id\": \"op_a\", \"projectId\": \"p_1\", \"integrationId\": \"%s\","
                        " \"installationId\": \"ins_1\", \"actionType\": \"write\","
                        " \"status\": \"in_progress\", \"metadata\": {\"objects\": [\"contacts\"],"
                        " \"retry\": {\"attempts\": 0}}}",
                        f.crm));
    json_decref(out);
    /* The request and the schedule are stored, not shown. */
    CU_ASSERT_TRUE(raw_json_eq(raw_text(f.db, "SELECT request FROM operations WHERE id = 'op_a'"),
                               "{\"type\": \"create\", \"object\": \"contacts\","
                               " \"record\": {\"email\": \"a@x\"}}"));
    CU_ASSERT_EQUAL(raw_int(f.db, "SELECT next_attempt_at FROM operations WHERE id = 'op_a'"),
                    T_FIXED);
    CU_ASSERT_EQUAL(raw_int(f.db, "SELECT deadline_at FROM operations WHERE id = 'op_a'"),
                    T_FIXED + HOUR_MS);
    CU_ASSERT_EQUAL(raw_int(f.db, "SELECT count(*) FROM operations WHERE id = 'op_a'"
                                  " AND attempts = 0 AND last_attempt_at IS NULL"
                                  " AND claimed_by IS NULL AND claimed_until IS NULL"),
                    1);

    /* Times come from the columns. */
    CU_ASSERT_EQUAL(raw_execf(f.db,
                              "UPDATE operations SET created_at = 1577836800000,"
                              " updated_at = %lld WHERE id = 'op_a'",
                              T_FIXED),
                    SQLITE_OK);
    CU_ASSERT_EQUAL(pb_store_operation_get(st, "p_1", "op_a", &out), PB_STORE_OK);
    CU_ASSERT_TRUE(jeqf(out,
                        "{\"id\": \"op_a\", \"projectId\": \"p_1\", \"integrationId\": \"%s\","
                        " \"installationId\": \"ins_1\", \"actionType\": \"write\","
                        " \"status\": \"in_progress\", \"metadata\": {\"objects\": [\"contacts\"],"
                        " \"retry\": {\"attempts\": 0}}, \"createTime\": \"" T_OLD_STR "\","
                        " \"updateTime\": \"" T_FIXED_STR "\"}",
                        f.crm));
    json_decref(out);

    /* A finished synchronous write: result shown, nothing to attempt. */
    json_decref(op);
    op = json_pack("{s:s, s:s, s:s, s:s, s:s, s:{s:[s], s:[s]}}", "id", "op_s", "integrationId",
                   f.crm, "installationId", "ins_1", "status", "success", "result", "created",
                   "metadata", "objects", "contacts", "successfulRecordIds", "r1");
    CU_ASSERT_EQUAL(pb_store_operation_create(st, "p_1", op, &out), PB_STORE_OK);
    CU_ASSERT_STRING_EQUAL(jstr(out, "status"), "success");
    CU_ASSERT_STRING_EQUAL(jstr(out, "result"), "created");
    CU_ASSERT_TRUE(jeq(json_object_get(out, "metadata"),
                       "{\"objects\": [\"contacts\"], \"successfulRecordIds\": [\"r1\"],"
                       " \"retry\": {\"attempts\": 0}}"));
    json_decref(out);
    CU_ASSERT_EQUAL(raw_int(f.db, "SELECT count(*) FROM operations WHERE id = 'op_s'"
                                  " AND request IS NULL AND next_attempt_at IS NULL"
                                  " AND deadline_at IS NULL"),
                    1);
    /* Minimal: no metadata, *out optional. */
    json_decref(op);
    op = json_pack("{s:s, s:s, s:s, s:s}", "id", "op_f", "integrationId", f.crm,
                   "installationId", "ins_2", "status", "failure");
    CU_ASSERT_EQUAL(pb_store_operation_create(st, "p_1", op, NULL), PB_STORE_OK);
    CU_ASSERT_EQUAL(pb_store_operation_get(st, "p_1", "op_f", &out), PB_STORE_OK);
    CU_ASSERT_FALSE(has(out, "result"));
    CU_ASSERT_TRUE(jeq(json_object_get(out, "metadata"), "{\"retry\": {\"attempts\": 0}}"));
    json_decref(out);
    /* Another project's operation. */
    json_decref(op);
    op = json_pack("{s:s, s:s, s:s}", "id", "op_9", "integrationId", f.crm2, "installationId",
                   "ins_9");
    CU_ASSERT_EQUAL(pb_store_operation_create(st, "p_2", op, NULL), PB_STORE_OK);

    /* Conflicts and missing references. */
    json_decref(op);
    op = json_pack("{s:s, s:s, s:s}", "id", "op_a", "integrationId", f.crm, "installationId",
                   "ins_1");
    CU_ASSERT_EQUAL(pb_store_operation_create(st, "p_1", op, NULL), PB_STORE_CONFLICT);
    json_object_set_new(op, "id", json_string("op_new"));
    json_object_set_new(op, "installationId", json_string("ins_nope"));
    CU_ASSERT_EQUAL(pb_store_operation_create(st, "p_1", op, NULL), PB_STORE_NOTFOUND);
    /* ins_s belongs to "sales", not "crm". */
    json_object_set_new(op, "installationId", json_string("ins_s"));
    CU_ASSERT_EQUAL(pb_store_operation_create(st, "p_1", op, NULL), PB_STORE_NOTFOUND);
    json_object_set_new(op, "installationId", json_string("ins_1"));
    CU_ASSERT_EQUAL(pb_store_operation_create(st, "p_2", op, NULL), PB_STORE_NOTFOUND);
    CU_ASSERT_EQUAL(pb_store_operation_create(st, "p_nope", op, NULL), PB_STORE_NOTFOUND);

    /* Malformed operations. */
    static const char *const bad[] = {
        "{\"status\": \"bogus\"}",
        "{\"status\": \"success\", \"nextAttemptAt\": 5}",
        "{\"status\": 1}",
        "{\"metadata\": \"x\"}",
        "{\"metadata\": []}",
        "{\"request\": [1]}",
        "{\"result\": 5}",
        "{\"nextAttemptAt\": \"soon\"}",
        "{\"nextAttemptAt\": -5}",
        "{\"deadlineAt\": 1.5}",
        "{\"id\": \"\"}",
        "{\"id\": null}",
        "{\"integrationId\": null}",
        "{\"installationId\": 7}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *b = json_deep_copy(op), *patch = J(bad[i]);
        json_object_update(b, patch);
        if (pb_store_operation_create(st, "p_1", b, &out) != PB_STORE_ERR)
            fprintf(stderr, "accepted: %s\n", bad[i]);
        CU_ASSERT_PTR_NULL(out);
        json_decref(patch);
        json_decref(b);
    }
    json_t *arr = json_array();
    CU_ASSERT_EQUAL(pb_store_operation_create(st, "p_1", arr, NULL), PB_STORE_ERR);
    json_decref(arr);
    CU_ASSERT_EQUAL(pb_store_operation_create(st, "p_1", NULL, NULL), PB_STORE_ERR);
    CU_ASSERT_EQUAL(pb_store_operation_create(st, NULL, op, NULL), PB_STORE_ERR);
    CU_ASSERT_EQUAL(pb_store_operation_create(NULL, "p_1", op, NULL), PB_STORE_ERR);
    CU_ASSERT_EQUAL(raw_int(f.db, "SELECT count(*) FROM operations"), 4);
    json_decref(op);

    /* Scoped by project. */
    out = (json_t *)&out;
    CU_ASSERT_EQUAL(pb_store_operation_get(st, "p_2", "op_a", &out), PB_STORE_NOTFOUND);
    CU_ASSERT_PTR_NULL(out);
    CU_ASSERT_EQUAL(pb_store_operation_get(st, "p_1", "op_9", &out), PB_STORE_NOTFOUND);
    CU_ASSERT_EQUAL(pb_store_operation_get(st, "p_1", "op_nope", &out), PB_STORE_NOTFOUND);
    CU_ASSERT_EQUAL(pb_store_operation_get(st, "p_2", "op_9", &out), PB_STORE_OK);
    CU_ASSERT_STRING_EQUAL(jstr(out, "projectId"), "p_2");
    json_decref(out);
    CU_ASSERT_EQUAL(pb_store_operation_get(st, "p_1", "op_a", NULL), PB_STORE_ERR);
    CU_ASSERT_EQUAL(pb_store_operation_get(st, "p_1", NULL, &out), PB_STORE_ERR);
    CU_ASSERT_EQUAL(pb_store_operation_get(NULL, "p_1", "op_a", &out), PB_STORE_ERR);
    wfix_close(&f);
}

/* One page: its ids joined by ',' into ids (static), the token into tok. */
static int list_page(pb_store *st, const char *project, const char *inst, int size,
                     const char *token, const char **ids, char tok[1024])
{
    json_t *page = NULL;
    int rc = pb_store_operation_list(st, project, inst, size, token, &page);
    tok[0] = '\0';
    *ids = "";
    if (rc != PB_STORE_OK)
        return rc;
    json_t *ops = json_object_get(page, "operations");
    CU_ASSERT_TRUE(json_is_array(ops));
    CU_ASSERT_EQUAL(json_object_size(page), has(page, "nextPageToken") ? 2 : 1);
    *ids = claim_ids(ops);
    if (has(page, "nextPageToken"))
        snprintf(tok, 1024, "%s", jstr(page, "nextPageToken"));
    json_decref(page);
    return rc;
}

/* "op_HI,op_HI-1,...,op_LO" (static buffer). */
static const char *range_ids(int hi, int lo)
{
    static char out[8192];
    out[0] = '\0';
    for (int i = hi; i >= lo; i--) {
        size_t n = strlen(out);
        snprintf(out + n, sizeof out - n, "%sop_%03d", i == hi ? "" : ",", i);
    }
    return out;
}

static void test_operation_list_paging(void)
{
    struct wfix f;
    CU_ASSERT_EQUAL_FATAL(wfix_open(&f), 0);
    pb_store *st = f.st;
    CU_ASSERT_EQUAL(raw_exec(f.db, "BEGIN"), SQLITE_OK);
    for (int i = 0; i < 250; i++) {
        char id[16];
        snprintf(id, sizeof id, "op_%03d", i);
        CU_ASSERT_EQUAL(mkop(&f, id, "ins_1", -1, -1), PB_STORE_OK);
    }
    CU_ASSERT_EQUAL(raw_exec(f.db, "COMMIT"), SQLITE_OK);
    CU_ASSERT_EQUAL(mkop(&f, "op_x2", "ins_2", -1, -1), PB_STORE_OK);
    /* Creation times in groups of three (ties broken by id, descending). */
    CU_ASSERT_EQUAL(raw_execf(f.db,
                              "UPDATE operations SET created_at = %lld +"
                              " (CAST(substr(id, 4) AS INTEGER) / 3) * 1000, updated_at = %lld"
                              " WHERE installation_id = 'ins_1'",
                              T_FIXED, T_FIXED),
                    SQLITE_OK);

    json_t *page = NULL;
    CU_ASSERT_EQUAL(pb_store_operation_list(st, "p_1", "ins_1", 100, NULL, &page), PB_STORE_OK);
    json_t *ops = json_object_get(page, "operations");
    CU_ASSERT_EQUAL_FATAL(json_array_size(ops), 100);
    /* op_249: created T_FIXED + 83 s. */
    CU_ASSERT_TRUE(jeqf(json_array_get(ops, 0),
                        "{\"id\": \"op_249\", \"projectId\": \"p_1\", \"integrationId\": \"%s\","
                        " \"installationId\": \"ins_1\", \"actionType\": \"write\","
                        " \"status\": \"in_progress\","
                        " \"metadata\": {\"retry\": {\"attempts\": 0}},"
                        " \"createTime\": \"2026-11-26T12:01:23Z\","
                        " \"updateTime\": \"" T_FIXED_STR "\"}",
                        f.crm));
    CU_ASSERT_STRING_EQUAL(jstr(page, "nextPageToken"), token_for(T_FIXED + 50000, "op_150"));
    json_decref(page);

    const char *ids;
    char tok[1024], tok2[1024];
    CU_ASSERT_EQUAL(list_page(st, "p_1", "ins_1", 100, NULL, &ids, tok), PB_STORE_OK);
    CU_ASSERT_STRING_EQUAL(ids, range_ids(249, 150));
    CU_ASSERT_STRING_EQUAL(tok, token_for(T_FIXED + 50000, "op_150"));
    /* A newer operation does not shift the pages after the first. */
    CU_ASSERT_EQUAL(mkop(&f, "op_new", "ins_1", -1, -1), PB_STORE_OK);
    CU_ASSERT_EQUAL(raw_execf(f.db, "UPDATE operations SET created_at = %lld WHERE id = 'op_new'",
                              T_FIXED + 10000000),
                    SQLITE_OK);
    CU_ASSERT_EQUAL(list_page(st, "p_1", "ins_1", 100, tok, &ids, tok2), PB_STORE_OK);
    CU_ASSERT_STRING_EQUAL(ids, range_ids(149, 50));
    CU_ASSERT_STRING_EQUAL(tok2, token_for(T_FIXED + 16000, "op_050"));
    CU_ASSERT_EQUAL(list_page(st, "p_1", "ins_1", 100, tok2, &ids, tok), PB_STORE_OK);
    CU_ASSERT_STRING_EQUAL(ids, range_ids(49, 0));
    CU_ASSERT_STRING_EQUAL(tok, ""); /* the last page has no token */
    CU_ASSERT_EQUAL(list_page(st, "p_1", "ins_1", 100, NULL, &ids, tok), PB_STORE_OK);
    CU_ASSERT_EQUAL(strncmp(ids, "op_new,op_249,op_248,", 21), 0);

    /* Small pages walk everything once, in order. */
    char *all = calloc(1, 8192);
    int pages = 0;
    tok[0] = '\0';
    do {
        CU_ASSERT_EQUAL_FATAL(list_page(st, "p_1", "ins_1", 7, *tok ? tok : NULL, &ids, tok),
                              PB_STORE_OK);
        size_t n = strlen(all);
        snprintf(all + n, 8192 - n, "%s%s", n ? "," : "", ids);
        pages++;
    } while (*tok && pages < 100);
    CU_ASSERT_EQUAL(pages, 36); /* 251 = 35 * 7 + 6 */
    CU_ASSERT_STRING_EQUAL(all + strlen("op_new,"), range_ids(249, 0));
    free(all);
    /* Exactly a page's worth left: no token on that page. */
    CU_ASSERT_EQUAL(list_page(st, "p_1", "ins_1", 3, token_for(T_FIXED + 1000, "op_003"), &ids,
                              tok),
                    PB_STORE_OK);
    CU_ASSERT_STRING_EQUAL(ids, "op_002,op_001,op_000");
    CU_ASSERT_STRING_EQUAL(tok, "");
    CU_ASSERT_EQUAL(list_page(st, "p_1", "ins_1", 5, token_for(0, "op_000"), &ids, tok),
                    PB_STORE_OK);
    CU_ASSERT_STRING_EQUAL(ids, "");

    /* Page sizes are clamped to 1..100. */
    CU_ASSERT_EQUAL(list_page(st, "p_1", "ins_1", 0, NULL, &ids, tok), PB_STORE_OK);
    CU_ASSERT_STRING_EQUAL(ids, "op_new");
    CU_ASSERT_STRING_EQUAL(tok, token_for(T_FIXED + 10000000, "op_new"));
    CU_ASSERT_EQUAL(pb_store_operation_list(st, "p_1", "ins_1", 1000, NULL, &page), PB_STORE_OK);
    CU_ASSERT_EQUAL(json_array_size(json_object_get(page, "operations")), 100);
    json_decref(page);
    /* An empty token is the first page. */
    CU_ASSERT_EQUAL(list_page(st, "p_1", "ins_1", 1, "", &ids, tok), PB_STORE_OK);
    CU_ASSERT_STRING_EQUAL(ids, "op_new");

    /* Malformed tokens. */
    char longraw[400];
    memset(longraw, 'a', sizeof longraw - 1);
    longraw[0] = '1';
    longraw[1] = ':';
    longraw[sizeof longraw - 1] = '\0';
    char longtok[1024];
    snprintf(longtok, sizeof longtok, "%s", hexstr(longraw));
    const char *bad_tokens[] = {
        "zz", "abc", "0", "00", "3a6f70", /* ":op" */
        "31323a", /* "12:" */
        "6e6f636f6c6f6e", /* "nocolon" */
        "31783a6f70", /* "1x:op" */
        "2d313a6f70", /* "-1:op" */
        "31003a6f70", /* NUL inside */
        "3939393939393939393939393939393939393939393a6f70", /* 21 digits */
        longtok, "MTIzOm9w",
    };
    for (size_t i = 0; i < sizeof bad_tokens / sizeof bad_tokens[0]; i++) {
        page = (json_t *)&page;
        if (pb_store_operation_list(st, "p_1", "ins_1", 10, bad_tokens[i], &page) !=
            PB_STORE_NOTFOUND)
            fprintf(stderr, "token accepted: %s\n", bad_tokens[i]);
        CU_ASSERT_PTR_NULL(page);
    }
    /* Upper-case hex is still hex. */
    CU_ASSERT_EQUAL(list_page(st, "p_1", "ins_1", 2, "313A6F705F303032", &ids, tok), PB_STORE_OK);

    /* Scoped by installation and project. */
    CU_ASSERT_EQUAL(list_page(st, "p_1", "ins_2", 100, NULL, &ids, tok), PB_STORE_OK);
    CU_ASSERT_STRING_EQUAL(ids, "op_x2");
    CU_ASSERT_STRING_EQUAL(tok, "");
    CU_ASSERT_EQUAL(pb_store_operation_list(st, "p_2", "ins_1", 100, NULL, &page), PB_STORE_OK);
    CU_ASSERT_TRUE(jeq(page, "{\"operations\": []}"));
    json_decref(page);
    CU_ASSERT_EQUAL(pb_store_operation_list(st, "p_1", "ins_nope", 100, NULL, &page),
                    PB_STORE_OK);
    CU_ASSERT_TRUE(jeq(page, "{\"operations\": []}"));
    json_decref(page);
    CU_ASSERT_EQUAL(pb_store_operation_list(st, "p_1", NULL, 100, NULL, &page), PB_STORE_ERR);
    CU_ASSERT_EQUAL(pb_store_operation_list(st, NULL, "ins_1", 100, NULL, &page), PB_STORE_ERR);
    CU_ASSERT_EQUAL(pb_store_operation_list(st, "p_1", "ins_1", 100, NULL, NULL), PB_STORE_ERR);
    wfix_close(&f);
}

/* Start-up recovery: claims of an earlier run become due at once. */
static void test_operation_release_claims(void)
{
    struct wfix f;
    CU_ASSERT_EQUAL_FATAL(wfix_open(&f), 0);
    const long long t = 1800000000000LL;
    CU_ASSERT_EQUAL(mkop(&f, "op_a", "ins_1", t, t + HOUR_MS), PB_STORE_OK);
    CU_ASSERT_EQUAL(mkop(&f, "op_b", "ins_1", t + HOUR_MS, t + 2 * HOUR_MS), PB_STORE_OK);
    CU_ASSERT_STRING_EQUAL(claim(f.st, "dead", t, t + 10 * MIN_MS, 10), "op_a");
    /* Still claimed: nobody else gets it before the lease runs out. */
    CU_ASSERT_STRING_EQUAL(claim(f.st, "new", t + 1, t + 10 * MIN_MS, 10), "");
    int n = -1;
    CU_ASSERT_EQUAL(pb_store_operation_release_claims(f.st, t + 2, &n), PB_STORE_OK);
    CU_ASSERT_EQUAL(n, 1);
    CU_ASSERT_STRING_EQUAL(claim(f.st, "new", t + 2, t + 10 * MIN_MS, 10), "op_a");
    /* An unclaimed, not yet due operation is left alone. */
    CU_ASSERT_EQUAL(pb_store_operation_release_claims(f.st, t + 3, &n), PB_STORE_OK);
    CU_ASSERT_EQUAL(n, 1);
    CU_ASSERT_STRING_EQUAL(claim(f.st, "new", t + 3, t + 10 * MIN_MS, 10), "op_a");
    wfix_close(&f);
}

static void test_operation_claim(void)
{
    struct wfix f;
    CU_ASSERT_EQUAL_FATAL(wfix_open(&f), 0);
    pb_store *st = f.st;
    const long long T = T_FIXED;
    CU_ASSERT_EQUAL(mkop(&f, "d1", "ins_1", T - 3000, T + HOUR_MS), PB_STORE_OK);
    CU_ASSERT_EQUAL(mkop(&f, "d2", "ins_2", T - 2000, -1), PB_STORE_OK);
    CU_ASSERT_EQUAL(mkop(&f, "d3", "ins_1", T - 1000, -1), PB_STORE_OK);
    CU_ASSERT_EQUAL(mkop(&f, "fut", "ins_1", T + MIN_MS, -1), PB_STORE_OK);
    CU_ASSERT_EQUAL(mkop(&f, "idle", "ins_1", -1, -1), PB_STORE_OK);
    json_t *op = json_pack("{s:s, s:s, s:s, s:s}", "id", "sync", "integrationId", f.crm,
                           "installationId", "ins_1", "status", "success");
    CU_ASSERT_EQUAL(pb_store_operation_create(st, "p_1", op, NULL), PB_STORE_OK);
    json_decref(op);

    /* Due ones, oldest first, at most max. */
    json_t *c = NULL;
    CU_ASSERT_EQUAL(pb_store_operation_claim(st, "w_a", T, T + 30000, 2, &c), PB_STORE_OK);
    CU_ASSERT_EQUAL_FATAL(json_array_size(c), 2);
    CU_ASSERT_TRUE(jeqf(json_array_get(c, 0),
                        "{\"id\": \"d1\", \"projectId\": \"p_1\", \"integrationId\": \"%s\","
                        " \"installationId\": \"ins_1\", \"request\": {\"kind\": \"single\"},"
                        " \"attempts\": 0, \"deadlineAt\": %lld}",
                        f.crm, T + HOUR_MS));
    CU_ASSERT_TRUE(jeqf(json_array_get(c, 1),
                        "{\"id\": \"d2\", \"projectId\": \"p_1\", \"integrationId\": \"%s\","
                        " \"installationId\": \"ins_2\", \"request\": {\"kind\": \"single\"},"
                        " \"attempts\": 0, \"deadlineAt\": null}",
                        f.crm));
    json_decref(c);
    CU_ASSERT_EQUAL(raw_intf(f.db,
                             "SELECT count(*) FROM operations WHERE id IN ('d1', 'd2')"
                             " AND claimed_by = 'w_a' AND claimed_until = %lld"
                             " AND next_attempt_at = %lld AND status = 'in_progress'",
                             T + 30000, T + 30000),
                    2);
    /* Already claimed ones are not handed out again. */
    CU_ASSERT_STRING_EQUAL(claim(st, "w_b", T, T + 40000, 10), "d3");
    CU_ASSERT_STRING_EQUAL(claim(st, "w_b", T, T + 40000, 10), "");
    CU_ASSERT_STRING_EQUAL(claim(st, "w_c", T + 29999, T + 50000, 10), "");
    /* Expired claims are due again. */
    const char *one = claim(st, "w_c", T + 30000, T + 90000, 1);
    CU_ASSERT_TRUE(strcmp(one, "d1") == 0 || strcmp(one, "d2") == 0);
    CU_ASSERT_STRING_EQUAL(claim(st, "w_c", T + 30000, T + 90000, 5),
                           strcmp(one, "d1") == 0 ? "d2" : "d1");
    CU_ASSERT_EQUAL(raw_int(f.db, "SELECT count(*) FROM operations WHERE claimed_by = 'w_c'"), 2);
    CU_ASSERT_STRING_EQUAL(claim(st, "w_d", T + MIN_MS, T + 70000, 10), "d3,fut");
    CU_ASSERT_EQUAL(raw_int(f.db, "SELECT count(*) FROM operations WHERE claimed_by = 'w_d'"), 2);
    /* Never: nothing scheduled, or finished. */
    /* Ties in next_attempt_at come in any order. */
    const char *two = claim(st, "w_e", T + 1000000000LL, T + 1000000001LL, 2);
    CU_ASSERT_TRUE(strcmp(two, "d3,fut") == 0 || strcmp(two, "fut,d3") == 0);
    two = claim(st, "w_e", T + 1000000000LL, T + 1000000001LL, 10);
    CU_ASSERT_TRUE(strcmp(two, "d1,d2") == 0 || strcmp(two, "d2,d1") == 0);
    CU_ASSERT_EQUAL(raw_int(f.db, "SELECT count(*) FROM operations WHERE claimed_by IS NOT NULL"
                                  " AND id IN ('idle', 'sync')"),
                    0);

    /* max 0 claims nothing; bad arguments. */
    CU_ASSERT_EQUAL(pb_store_operation_claim(st, "w", T + 2000000000LL, T + 2000000001LL, 0, &c),
                    PB_STORE_OK);
    CU_ASSERT_TRUE(jeq(c, "[]"));
    json_decref(c);
    CU_ASSERT_EQUAL(raw_int(f.db, "SELECT count(*) FROM operations WHERE claimed_by = 'w'"), 0);
    c = (json_t *)&c;
    CU_ASSERT_EQUAL(pb_store_operation_claim(st, "w", T, T, 5, &c), PB_STORE_ERR);
    CU_ASSERT_PTR_NULL(c);
    CU_ASSERT_EQUAL(pb_store_operation_claim(st, NULL, T, T + 1, 5, &c), PB_STORE_ERR);
    CU_ASSERT_EQUAL(pb_store_operation_claim(st, "", T, T + 1, 5, &c), PB_STORE_ERR);
    CU_ASSERT_EQUAL(pb_store_operation_claim(st, "w", T, T + 1, 5, NULL), PB_STORE_ERR);
    CU_ASSERT_EQUAL(pb_store_operation_claim(NULL, "w", T, T + 1, 5, &c), PB_STORE_ERR);
    wfix_close(&f);
}

enum { CLAIM_OPS = 300, CLAIMERS = 4 };

struct claimer {
    pb_store *st;
    char owner[16];
    json_t *ids;
    int failures;
};

static void *claimer_main(void *arg)
{
    struct claimer *w = arg;
    for (;;) {
        json_t *c = NULL;
        if (pb_store_operation_claim(w->st, w->owner, T_FIXED, T_FIXED + HOUR_MS, 3, &c) != 0) {
            w->failures++;
            break;
        }
        size_t n = json_array_size(c), i;
        json_t *e;
        json_array_foreach(c, i, e)
        {
            json_array_append(w->ids, json_object_get(e, "id"));
        }
        json_decref(c);
        if (n == 0)
            break;
    }
    return NULL;
}

/* Two handles on one file, as two processes would have: every due
 * operation is claimed exactly once. */
static void test_operation_claim_two_stores(void)
{
    struct wfix f;
    CU_ASSERT_EQUAL_FATAL(wfix_open(&f), 0);
    CU_ASSERT_EQUAL(raw_exec(f.db, "BEGIN"), SQLITE_OK);
    for (int i = 0; i < CLAIM_OPS; i++) {
        char id[16];
        snprintf(id, sizeof id, "c_%03d", i);
        CU_ASSERT_EQUAL(mkop(&f, id, i % 2 ? "ins_1" : "ins_2", T_FIXED - i, -1), PB_STORE_OK);
    }
    CU_ASSERT_EQUAL(raw_exec(f.db, "COMMIT"), SQLITE_OK);
    pb_store *st2 = open_path(f.path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st2);
    pthread_t th[CLAIMERS];
    struct claimer w[CLAIMERS];
    for (int i = 0; i < CLAIMERS; i++) {
        w[i] = (struct claimer){i % 2 ? st2 : f.st, "", json_array(), 0};
        snprintf(w[i].owner, sizeof w[i].owner, "node_%d", i);
        CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, claimer_main, &w[i]), 0);
    }
    json_t *seen = json_object();
    int total = 0, dups = 0;
    for (int i = 0; i < CLAIMERS; i++) {
        pthread_join(th[i], NULL);
        CU_ASSERT_EQUAL(w[i].failures, 0);
        size_t k;
        json_t *id;
        json_array_foreach(w[i].ids, k, id)
        {
            if (json_object_get(seen, json_string_value(id)))
                dups++;
            json_object_set_new(seen, json_string_value(id), json_true());
            total++;
        }
        /* Each id is recorded as claimed by the one that got it. */
        CU_ASSERT_EQUAL(raw_intf(f.db, "SELECT count(*) FROM operations WHERE claimed_by = '%s'",
                                 w[i].owner),
                        (long long)json_array_size(w[i].ids));
        json_decref(w[i].ids);
    }
    CU_ASSERT_EQUAL(dups, 0);
    CU_ASSERT_EQUAL(total, CLAIM_OPS);
    CU_ASSERT_EQUAL(json_object_size(seen), CLAIM_OPS);
    json_decref(seen);
    CU_ASSERT_STRING_EQUAL(claim(st2, "late", T_FIXED, T_FIXED + 1, 10), "");
    pb_store_close(st2);
    wfix_close(&f);
}

static void test_operation_finish_retry(void)
{
    struct wfix f;
    CU_ASSERT_EQUAL_FATAL(wfix_open(&f), 0);
    pb_store *st = f.st;
    const long long T = T_FIXED;
    json_t *op = json_pack("{s:s, s:s, s:s, s:{s:[s]}, s:I}", "id", "op_r", "integrationId",
                           f.crm, "installationId", "ins_1", "metadata", "objects", "contacts",
                           "nextAttemptAt", (json_int_t)T);
    CU_ASSERT_EQUAL(pb_store_operation_create(st, "p_1", op, NULL), PB_STORE_OK);
    json_decref(op);
    CU_ASSERT_EQUAL(raw_execf(f.db, "UPDATE operations SET created_at = %lld", T), SQLITE_OK);

    CU_ASSERT_STRING_EQUAL(claim(st, "w", T, T + 30000, 10), "op_r");
    CU_ASSERT_EQUAL(pb_store_operation_retry(st, "op_r", 1, T + 5000, "HTTP 503: busy", T + 100),
                    PB_STORE_OK);
    CU_ASSERT_EQUAL(raw_intf(f.db,
                             "SELECT count(*) FROM operations WHERE id = 'op_r'"
                             " AND status = 'in_progress' AND attempts = 1"
                             " AND last_attempt_at = %lld AND next_attempt_at = %lld"
                             " AND claimed_by IS NULL AND claimed_until IS NULL"
                             " AND updated_at = %lld",
                             T + 100, T + 5000, T + 100),
                    1);
    json_t *g = NULL;
    CU_ASSERT_EQUAL(pb_store_operation_get(st, "p_1", "op_r", &g), PB_STORE_OK);
    CU_ASSERT_TRUE(jeq(json_object_get(g, "metadata"),
                       "{\"objects\": [\"contacts\"], \"lastError\": \"HTTP 503: busy\","
                       " \"retry\": {\"attempts\": 1, \"lastAttempt\": \"" T_FIXED_STR "\"}}"));
    CU_ASSERT_STRING_EQUAL(jstr(g, "status"), "in_progress");
    json_decref(g);
    /* Due again at the time given, with its attempts. */
    CU_ASSERT_STRING_EQUAL(claim(st, "w", T + 4999, T + 30000, 10), "");
    json_t *c = NULL;
    CU_ASSERT_EQUAL(pb_store_operation_claim(st, "w", T + 5000, T + 35000, 10, &c), PB_STORE_OK);
    CU_ASSERT_EQUAL(json_array_size(c), 1);
    CU_ASSERT_EQUAL(jint(json_array_get(c, 0), "attempts"), 1);
    json_decref(c);
    /* No new error text: the last one stays. */
    CU_ASSERT_EQUAL(pb_store_operation_retry(st, "op_r", 2, T + 9000, NULL, T + 5100),
                    PB_STORE_OK);
    CU_ASSERT_TRUE(raw_json_eq(raw_text(f.db, "SELECT metadata FROM operations"
                                              " WHERE id = 'op_r'"),
                               "{\"objects\": [\"contacts\"], \"lastError\": \"HTTP 503: busy\"}"));
    CU_ASSERT_STRING_EQUAL(claim(st, "w", T + 9000, T + 40000, 10), "op_r");

    /* Finish: status, result, merged metadata, attempts; claim and
     * schedule cleared. A null member removes the key. */
    json_t *md = J("{\"successfulRecordIds\": [\"r1\"], \"lastError\": null}");
    CU_ASSERT_EQUAL(pb_store_operation_finish(st, "op_r", "success", "written", md, 3, T + 9500),
                    PB_STORE_OK);
    json_decref(md);
    CU_ASSERT_EQUAL(pb_store_operation_get(st, "p_1", "op_r", &g), PB_STORE_OK);
    CU_ASSERT_TRUE(jeqf(g,
                        "{\"id\": \"op_r\", \"projectId\": \"p_1\", \"integrationId\": \"%s\","
                        " \"installationId\": \"ins_1\", \"actionType\": \"write\","
                        " \"status\": \"success\", \"result\": \"written\","
                        " \"metadata\": {\"objects\": [\"contacts\"],"
                        " \"successfulRecordIds\": [\"r1\"], \"retry\": {\"attempts\": 3,"
                        " \"lastAttempt\": \"2026-11-26T12:00:09Z\"}},"
                        " \"createTime\": \"" T_FIXED_STR "\","
                        " \"updateTime\": \"2026-11-26T12:00:09Z\"}",
                        f.crm));
    json_decref(g);
    CU_ASSERT_EQUAL(raw_int(f.db, "SELECT count(*) FROM operations WHERE id = 'op_r'"
                                  " AND next_attempt_at IS NULL AND claimed_by IS NULL"
                                  " AND claimed_until IS NULL"),
                    1);
    CU_ASSERT_STRING_EQUAL(claim(st, "w", T + 1000000000LL, T + 1000000001LL, 10), "");
    /* A finished operation stays finished. */
    CU_ASSERT_EQUAL(pb_store_operation_finish(st, "op_r", "failure", "late", NULL, 4, T + 9600),
                    PB_STORE_CONFLICT);
    CU_ASSERT_EQUAL(pb_store_operation_retry(st, "op_r", 4, T + 9900, "x", T + 9600),
                    PB_STORE_CONFLICT);
    CU_ASSERT_EQUAL(raw_int(f.db, "SELECT attempts FROM operations WHERE id = 'op_r'"), 3);

    /* Failure without result or metadata keeps the metadata. */
    CU_ASSERT_EQUAL(mkop(&f, "op_f", "ins_1", T, -1), PB_STORE_OK);
    CU_ASSERT_EQUAL(pb_store_operation_finish(st, "op_f", "failure", NULL, NULL, 1, T + 10),
                    PB_STORE_OK);
    CU_ASSERT_EQUAL(pb_store_operation_get(st, "p_1", "op_f", &g), PB_STORE_OK);
    CU_ASSERT_STRING_EQUAL(jstr(g, "status"), "failure");
    CU_ASSERT_FALSE(has(g, "result"));
    CU_ASSERT_TRUE(jeq(json_object_get(g, "metadata"),
                       "{\"retry\": {\"attempts\": 1, \"lastAttempt\": \"" T_FIXED_STR "\"}}"));
    json_decref(g);

    /* Texts that are not UTF-8 are kept, odd bytes replaced. */
    CU_ASSERT_EQUAL(mkop(&f, "op_u", "ins_1", T, -1), PB_STORE_OK);
    const char *odd = "bad \xff\xfe \xc3\xa9 \xed\xa0\x80 \xe2\x82";
    CU_ASSERT_EQUAL(pb_store_operation_retry(st, "op_u", 1, T, odd, T), PB_STORE_OK);
    CU_ASSERT_EQUAL(pb_store_operation_get(st, "p_1", "op_u", &g), PB_STORE_OK);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(json_object_get(g, "metadata"),
                                                             "lastError")),
                           "bad ?? \xc3\xa9 ??? ??");
    json_decref(g);
    odd = "\xf4\x90\x80\x80 \xf0\x9f\x98\x80";
    CU_ASSERT_EQUAL(pb_store_operation_finish(st, "op_u", "failure", odd, NULL, 2, T),
                    PB_STORE_OK);
    CU_ASSERT_EQUAL(pb_store_operation_get(st, "p_1", "op_u", &g), PB_STORE_OK);
    CU_ASSERT_STRING_EQUAL(jstr(g, "result"), "???? \xf0\x9f\x98\x80");
    json_decref(g);

    /* Unknown operations and bad arguments. */
    CU_ASSERT_EQUAL(mkop(&f, "op_b", "ins_1", T, -1), PB_STORE_OK);
    CU_ASSERT_EQUAL(pb_store_operation_finish(st, "op_nope", "success", NULL, NULL, 1, T),
                    PB_STORE_NOTFOUND);
    CU_ASSERT_EQUAL(pb_store_operation_retry(st, "op_nope", 1, T, NULL, T), PB_STORE_NOTFOUND);
    json_t *arr = json_array();
    CU_ASSERT_EQUAL(pb_store_operation_finish(st, "op_b", "in_progress", NULL, NULL, 1, T),
                    PB_STORE_ERR);
    CU_ASSERT_EQUAL(pb_store_operation_finish(st, "op_b", NULL, NULL, NULL, 1, T), PB_STORE_ERR);
    CU_ASSERT_EQUAL(pb_store_operation_finish(st, "op_b", "success", NULL, arr, 1, T),
                    PB_STORE_ERR);
    CU_ASSERT_EQUAL(pb_store_operation_finish(st, "op_b", "success", NULL, NULL, -1, T),
                    PB_STORE_ERR);
    CU_ASSERT_EQUAL(pb_store_operation_finish(st, NULL, "success", NULL, NULL, 1, T),
                    PB_STORE_ERR);
    CU_ASSERT_EQUAL(pb_store_operation_finish(NULL, "op_b", "success", NULL, NULL, 1, T),
                    PB_STORE_ERR);
    CU_ASSERT_EQUAL(pb_store_operation_retry(st, "op_b", 1, -1, NULL, T), PB_STORE_ERR);
    CU_ASSERT_EQUAL(pb_store_operation_retry(st, "op_b", -1, T, NULL, T), PB_STORE_ERR);
    CU_ASSERT_EQUAL(pb_store_operation_retry(st, NULL, 1, T, NULL, T), PB_STORE_ERR);
    CU_ASSERT_EQUAL(pb_store_operation_retry(NULL, "op_b", 1, T, NULL, T), PB_STORE_ERR);
    json_decref(arr);
    CU_ASSERT_EQUAL(raw_int(f.db, "SELECT count(*) FROM operations WHERE id = 'op_b'"
                                  " AND status = 'in_progress' AND attempts = 0"),
                    1);
    wfix_close(&f);
}

#define BUCKET "ins_1/contacts/create"

/* Queues write number i of p_1 at T_FIXED + i (flush after a minute,
 * deadline after an hour) with new operation id "aop_<i>"; op_out gets the
 * operation it joined. */
static int queue_one(pb_store *st, const char *integration, const char *inst, const char *type,
                     const char *key, int i, char op_out[64])
{
    char rec[64], new_id[32];
    snprintf(rec, sizeof rec, "{\"record\": {\"email\": \"u%d@x\"}}", i);
    snprintf(new_id, sizeof new_id, "aop_%03d", i);
    json_t *r = J(rec);
    long long now = T_FIXED + i;
    int rc = pb_store_queue_add(st, "p_1", integration, inst, "contacts", type, r, key, new_id,
                                now, now + MIN_MS, now + HOUR_MS, op_out, 64);
    json_decref(r);
    return rc;
}

static void test_queue_add_buckets(void)
{
    struct wfix f;
    CU_ASSERT_EQUAL_FATAL(wfix_open(&f), 0);
    pb_store *st = f.st;
    const long long T = T_FIXED;
    char op[64];
    int wrong = 0;
    for (int i = 0; i < 250; i++) {
        /* The integration is the installation's. */
        char rec[64], new_id[32];
        snprintf(rec, sizeof rec, "{\"record\": {\"email\": \"u%d@x\"}}", i);
        snprintf(new_id, sizeof new_id, "aop_%03d", i);
        json_t *r = J(rec);
        long long now = T + i;
        CU_ASSERT_EQUAL(pb_store_queue_add(st, "p_1", f.crm, "ins_1", "contacts", "create", r,
                                           BUCKET, new_id, now, now + MIN_MS, now + HOUR_MS, op,
                                           sizeof op),
                        PB_STORE_OK);
        json_decref(r);
        const char *want = i < 100 ? "aop_000" : i < 200 ? "aop_100" : "aop_200";
        if (strcmp(op, want) != 0)
            wrong++;
    }
    CU_ASSERT_EQUAL(wrong, 0);
    CU_ASSERT_EQUAL(raw_int(f.db, "SELECT count(*) FROM operations"), 3);
    CU_ASSERT_EQUAL(raw_int(f.db, "SELECT count(*) FROM write_queue"
                                  " WHERE operation_id = 'aop_000'"),
                    100);
    CU_ASSERT_EQUAL(raw_int(f.db, "SELECT count(*) FROM write_queue"
                                  " WHERE operation_id = 'aop_100'"),
                    100);
    CU_ASSERT_EQUAL(raw_int(f.db, "SELECT count(*) FROM write_queue"
                                  " WHERE operation_id = 'aop_200'"),
                    50);
    /* Full buckets are due when the 100th write arrived; the last one at
     * its first write's flush time. Deadlines are the first write's. */
    CU_ASSERT_EQUAL(raw_int(f.db, "SELECT next_attempt_at FROM operations WHERE id = 'aop_000'"),
                    T + 99);
    CU_ASSERT_EQUAL(raw_int(f.db, "SELECT next_attempt_at FROM operations WHERE id = 'aop_100'"),
                    T + 199);
    CU_ASSERT_EQUAL(raw_int(f.db, "SELECT next_attempt_at FROM operations WHERE id = 'aop_200'"),
                    T + 200 + MIN_MS);
    CU_ASSERT_EQUAL(raw_int(f.db, "SELECT deadline_at FROM operations WHERE id = 'aop_100'"),
                    T + 100 + HOUR_MS);
    CU_ASSERT_EQUAL(raw_intf(f.db,
                             "SELECT count(*) FROM write_queue WHERE operation_id = 'aop_100'"
                             " AND first_enqueued_at = %lld AND flush_at = %lld"
                             " AND deadline_at = %lld AND state = 'open'"
                             " AND installation_id = 'ins_1' AND object_name = 'contacts'"
                             " AND write_type = 'create' AND bucket_key = '" BUCKET "'"
                             " AND result IS NULL",
                             T + 100, T + 100 + MIN_MS, T + 100 + HOUR_MS),
                    100);
    CU_ASSERT_EQUAL(raw_int(f.db, "SELECT count(DISTINCT created_at) FROM write_queue"
                                  " WHERE operation_id = 'aop_200'"),
                    50);
    CU_ASSERT_TRUE(raw_json_eq(raw_text(f.db, "SELECT request FROM operations"
                                              " WHERE id = 'aop_000'"),
                               "{\"kind\": \"autobatch\", \"object\": \"contacts\","
                               " \"type\": \"create\"}"));
    json_t *g = NULL;
    CU_ASSERT_EQUAL(pb_store_operation_get(st, "p_1", "aop_200", &g), PB_STORE_OK);
    CU_ASSERT_TRUE(jeqf(g,
                        "{\"id\": \"aop_200\", \"projectId\": \"p_1\", \"integrationId\": \"%s\","
                        " \"installationId\": \"ins_1\", \"actionType\": \"write\","
                        " \"status\": \"in_progress\", \"metadata\": {\"objects\": [\"contacts\"],"
                        " \"retry\": {\"attempts\": 0}}, \"createTime\": \"" T_FIXED_STR "\","
                        " \"updateTime\": \"" T_FIXED_STR "\"}",
                        f.crm));
    json_decref(g);

    /* The queued writes in arrival order. */
    json_t *items = NULL;
    CU_ASSERT_EQUAL(pb_store_queue_items(st, "aop_200", &items), PB_STORE_OK);
    CU_ASSERT_EQUAL_FATAL(json_array_size(items), 50);
    long long first_id = raw_int(f.db, "SELECT min(id) FROM write_queue"
                                       " WHERE operation_id = 'aop_200'");
    CU_ASSERT_TRUE(jeqf(json_array_get(items, 0),
                        "{\"id\": %lld, \"record\": {\"record\": {\"email\": \"u200@x\"}}}",
                        first_id));
    int order_ok = 1;
    for (size_t i = 1; i < 50; i++) {
        json_t *it = json_array_get(items, i), *prev = json_array_get(items, i - 1);
        char want[32];
        snprintf(want, sizeof want, "u%zu@x", 200 + i);
        const char *email =
            json_string_value(json_object_get(json_object_get(json_object_get(it, "record"),
                                                              "record"),
                                              "email"));
        if (jint(it, "id") <= jint(prev, "id") || !email || strcmp(email, want) != 0)
            order_ok = 0;
    }
    CU_ASSERT_TRUE(order_ok);
    json_decref(items);

    /* Full buckets go at once, the partial one at its flush time. */
    CU_ASSERT_STRING_EQUAL(claim(st, "w", T + 250, T + 10 * MIN_MS, 10), "aop_000,aop_100");
    CU_ASSERT_EQUAL(raw_int(f.db, "SELECT count(*) FROM write_queue WHERE state = 'sending'"),
                    200);
    CU_ASSERT_STRING_EQUAL(claim(st, "w", T + 200 + MIN_MS - 1, T + 200 + MIN_MS + 30000, 10), "");
    CU_ASSERT_EQUAL(raw_int(f.db, "SELECT count(*) FROM write_queue WHERE state = 'open'"), 50);
    CU_ASSERT_STRING_EQUAL(claim(st, "w", T + 200 + MIN_MS, T + 200 + MIN_MS + 30000, 10),
                           "aop_200");
    CU_ASSERT_EQUAL(raw_int(f.db, "SELECT count(*) FROM write_queue WHERE state = 'sending'"),
                    250);

    /* Other keys are other buckets. */
    char op2[64], op3[64];
    CU_ASSERT_EQUAL(queue_one(st, f.crm, "ins_1", "update", "ins_1/contacts/update", 300, op2),
                    PB_STORE_OK);
    CU_ASSERT_STRING_EQUAL(op2, "aop_300");
    CU_ASSERT_EQUAL(queue_one(st, f.crm, "ins_2", "create", "ins_2/contacts/create", 301, op3),
                    PB_STORE_OK);
    CU_ASSERT_STRING_EQUAL(op3, "aop_301");
    CU_ASSERT_EQUAL(queue_one(st, f.crm, "ins_1", "update", "ins_1/contacts/update", 302, op2),
                    PB_STORE_OK);
    CU_ASSERT_STRING_EQUAL(op2, "aop_300");
    CU_ASSERT_TRUE(raw_json_eq(raw_text(f.db, "SELECT request FROM operations"
                                              " WHERE id = 'aop_300'"),
                               "{\"kind\": \"autobatch\", \"object\": \"contacts\","
                               " \"type\": \"update\"}"));
    CU_ASSERT_EQUAL(raw_int(f.db, "SELECT count(*) FROM operations"), 5);
    wfix_close(&f);
}

/* A claimed (or retried, or finished) batch takes no more writes. */
static void test_queue_claimed_bucket(void)
{
    struct wfix f;
    CU_ASSERT_EQUAL_FATAL(wfix_open(&f), 0);
    pb_store *st = f.st;
    const long long T = T_FIXED;
    char op[64];
    for (int i = 0; i < 3; i++) {
        CU_ASSERT_EQUAL(queue_one(st, f.crm, "ins_1", "create", BUCKET, i, op), PB_STORE_OK);
        CU_ASSERT_STRING_EQUAL(op, "aop_000");
    }
    CU_ASSERT_STRING_EQUAL(claim(st, "w", T + MIN_MS, T + 2 * MIN_MS, 10), "aop_000");
    CU_ASSERT_EQUAL(raw_int(f.db, "SELECT count(*) FROM write_queue"
                                  " WHERE operation_id = 'aop_000' AND state = 'sending'"),
                    3);
    /* The next write opens a new bucket. */
    CU_ASSERT_EQUAL(queue_one(st, f.crm, "ins_1", "create", BUCKET, 3, op), PB_STORE_OK);
    CU_ASSERT_STRING_EQUAL(op, "aop_003");
    /* Still closed after a retry released the claim. */
    CU_ASSERT_EQUAL(pb_store_operation_retry(st, "aop_000", 1, T + 5 * MIN_MS, "HTTP 502",
                                             T + MIN_MS),
                    PB_STORE_OK);
    CU_ASSERT_EQUAL(queue_one(st, f.crm, "ins_1", "create", BUCKET, 4, op), PB_STORE_OK);
    CU_ASSERT_STRING_EQUAL(op, "aop_003");
    json_t *items = NULL;
    CU_ASSERT_EQUAL(pb_store_queue_items(st, "aop_000", &items), PB_STORE_OK);
    CU_ASSERT_EQUAL(json_array_size(items), 3);
    json_decref(items);
    CU_ASSERT_EQUAL(pb_store_queue_items(st, "aop_003", &items), PB_STORE_OK);
    CU_ASSERT_EQUAL(json_array_size(items), 2);
    json_decref(items);
    /* Its rows stay 'sending' until it ends, then 'done'. */
    CU_ASSERT_EQUAL(raw_int(f.db, "SELECT count(*) FROM write_queue"
                                  " WHERE operation_id = 'aop_000' AND state = 'sending'"),
                    3);
    json_t *md = J("{\"successfulRecordIds\": [\"a\", \"b\", \"c\"]}");
    CU_ASSERT_EQUAL(pb_store_operation_finish(st, "aop_000", "success", "sent", md, 2,
                                              T + 5 * MIN_MS + 10),
                    PB_STORE_OK);
    json_decref(md);
    CU_ASSERT_EQUAL(raw_int(f.db, "SELECT count(*) FROM write_queue"
                                  " WHERE operation_id = 'aop_000' AND state = 'done'"),
                    3);
    CU_ASSERT_EQUAL(raw_int(f.db, "SELECT count(*) FROM write_queue"
                                  " WHERE operation_id = 'aop_003' AND state = 'open'"),
                    2);
    json_t *g = NULL;
    CU_ASSERT_EQUAL(pb_store_operation_get(st, "p_1", "aop_000", &g), PB_STORE_OK);
    CU_ASSERT_TRUE(jeq(json_object_get(g, "metadata"),
                       "{\"objects\": [\"contacts\"], \"lastError\": \"HTTP 502\","
                       " \"successfulRecordIds\": [\"a\", \"b\", \"c\"],"
                       " \"retry\": {\"attempts\": 2,"
                       " \"lastAttempt\": \"2026-11-26T12:05:00Z\"}}"));
    json_decref(g);
    /* A bucket whose operation was finished without a claim is closed too. */
    CU_ASSERT_EQUAL(pb_store_operation_finish(st, "aop_003", "failure", "deadline", NULL, 0, T),
                    PB_STORE_OK);
    CU_ASSERT_EQUAL(queue_one(st, f.crm, "ins_1", "create", BUCKET, 5, op), PB_STORE_OK);
    CU_ASSERT_STRING_EQUAL(op, "aop_005");

    /* Failures write nothing. */
    long long ops = raw_int(f.db, "SELECT count(*) FROM operations");
    long long rows = raw_int(f.db, "SELECT count(*) FROM write_queue");
    CU_ASSERT_EQUAL(queue_one(st, f.crm, "ins_nope", "create", "ins_nope/c", 10, op),
                    PB_STORE_NOTFOUND);
    CU_ASSERT_STRING_EQUAL(op, "");
    CU_ASSERT_EQUAL(queue_one(st, f.crm, "ins_s", "create", "ins_s/c", 11, op),
                    PB_STORE_NOTFOUND);
    CU_ASSERT_EQUAL(queue_one(st, f.crm, "ins_9", "create", "ins_9/c", 12, op),
                    PB_STORE_NOTFOUND);
    /* A new bucket needs a fresh operation id. */
    CU_ASSERT_EQUAL(queue_one(st, f.crm, "ins_2", "create", "ins_2/c", 0, op),
                    PB_STORE_CONFLICT);
    json_t *r = J("{\"record\": {}}"), *arr = J("[]");
    char small[4];
    CU_ASSERT_EQUAL(pb_store_queue_add(st, "p_1", f.crm, "ins_1", "contacts", "create", r,
                                       BUCKET, "aop_900", T, T, T, small, sizeof small),
                    PB_STORE_ERR);
    CU_ASSERT_EQUAL(pb_store_queue_add(st, "p_1", f.crm, "ins_1", "contacts", "create", arr,
                                       BUCKET, "aop_900", T, T, T, op, sizeof op),
                    PB_STORE_ERR);
    CU_ASSERT_EQUAL(pb_store_queue_add(st, "p_1", f.crm, "ins_1", "contacts", "create", r, NULL,
                                       "aop_900", T, T, T, op, sizeof op),
                    PB_STORE_ERR);
    CU_ASSERT_EQUAL(pb_store_queue_add(st, "p_1", f.crm, "ins_1", "contacts", "create", r,
                                       BUCKET, NULL, T, T, T, op, sizeof op),
                    PB_STORE_ERR);
    CU_ASSERT_EQUAL(pb_store_queue_add(st, "p_1", f.crm, "ins_1", "", "create", r, BUCKET,
                                       "aop_900", T, T, T, op, sizeof op),
                    PB_STORE_ERR);
    CU_ASSERT_EQUAL(pb_store_queue_add(st, "p_1", f.crm, "ins_1", "contacts", "create", r,
                                       BUCKET, "aop_900", T, -1, T, op, sizeof op),
                    PB_STORE_ERR);
    CU_ASSERT_EQUAL(pb_store_queue_add(st, "p_1", f.crm, "ins_1", "contacts", "create", r,
                                       BUCKET, "aop_900", T, T, T, NULL, 64),
                    PB_STORE_ERR);
    CU_ASSERT_EQUAL(pb_store_queue_add(NULL, "p_1", f.crm, "ins_1", "contacts", "create", r,
                                       BUCKET, "aop_900", T, T, T, op, sizeof op),
                    PB_STORE_ERR);
    json_decref(r);
    json_decref(arr);
    CU_ASSERT_EQUAL(raw_int(f.db, "SELECT count(*) FROM operations"), ops);
    CU_ASSERT_EQUAL(raw_int(f.db, "SELECT count(*) FROM write_queue"), rows);

    /* Items of unknown operations, and of one without queued writes. */
    items = (json_t *)&items;
    CU_ASSERT_EQUAL(pb_store_queue_items(st, "op_nope", &items), PB_STORE_NOTFOUND);
    CU_ASSERT_PTR_NULL(items);
    CU_ASSERT_EQUAL(mkop(&f, "op_plain", "ins_1", T, -1), PB_STORE_OK);
    CU_ASSERT_EQUAL(pb_store_queue_items(st, "op_plain", &items), PB_STORE_OK);
    CU_ASSERT_TRUE(jeq(items, "[]"));
    json_decref(items);
    CU_ASSERT_EQUAL(pb_store_queue_items(st, NULL, &items), PB_STORE_ERR);
    CU_ASSERT_EQUAL(pb_store_queue_items(st, "op_plain", NULL), PB_STORE_ERR);
    wfix_close(&f);
}

enum { RACE_WRITES = 400 };

struct race {
    struct wfix *f;
    pb_store *st;
    atomic_int done;
    int writer_failures, claimer_failures;
    json_t *joined;  /* operation ids the writer was given */
    json_t *claimed; /* operation id -> item count seen right after the claim */
};

static void *race_writer(void *arg)
{
    struct race *r = arg;
    for (int i = 0; i < RACE_WRITES; i++) {
        char op[64], new_id[32];
        snprintf(new_id, sizeof new_id, "race_%03d", i);
        json_t *rec = json_pack("{s:{s:i}}", "record", "n", i);
        /* Already past its flush time: claimable at once. */
        if (pb_store_queue_add(r->f->st, "p_1", r->f->crm, "ins_1", "contacts", "create", rec,
                               BUCKET, new_id, T_FIXED, T_FIXED - 1, T_FIXED + HOUR_MS, op,
                               sizeof op) != PB_STORE_OK)
            r->writer_failures++;
        else
            json_object_set_new(r->joined, op, json_true());
        json_decref(rec);
        /* Lets the claimer in between writes (SQLite's busy wait backs
         * off in milliseconds). */
        if (i % 8 == 0)
            usleep(2000);
    }
    atomic_store(&r->done, 1);
    return NULL;
}

static void *race_claimer(void *arg)
{
    struct race *r = arg;
    for (;;) {
        int was_done = atomic_load(&r->done);
        json_t *c = NULL;
        if (pb_store_operation_claim(r->st, "claimer", T_FIXED, T_FIXED + HOUR_MS, 10, &c) != 0) {
            r->claimer_failures++;
            break;
        }
        size_t i;
        json_t *e;
        json_array_foreach(c, i, e)
        {
            json_t *items = NULL;
            if (pb_store_queue_items(r->st, jstr(e, "id"), &items) != 0)
                r->claimer_failures++;
            json_object_set_new(r->claimed, jstr(e, "id"),
                                json_integer((json_int_t)json_array_size(items)));
            json_decref(items);
        }
        size_t n = json_array_size(c);
        json_decref(c);
        if (was_done && n == 0)
            break;
        if (n == 0)
            usleep(200);
    }
    return NULL;
}

/* A writer and a claimer on two handles: a write either joins a batch
 * before its claim or lands in a later one; none is lost. */
static void test_queue_claim_race(void)
{
    struct wfix f;
    CU_ASSERT_EQUAL_FATAL(wfix_open(&f), 0);
    pb_store *st2 = open_path(f.path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st2);
    struct race r = {.f = &f, .st = st2, .joined = json_object(), .claimed = json_object()};
    atomic_init(&r.done, 0);
    pthread_t tw, tc;
    CU_ASSERT_EQUAL_FATAL(pthread_create(&tc, NULL, race_claimer, &r), 0);
    CU_ASSERT_EQUAL_FATAL(pthread_create(&tw, NULL, race_writer, &r), 0);
    pthread_join(tw, NULL);
    pthread_join(tc, NULL);
    CU_ASSERT_EQUAL(r.writer_failures, 0);
    CU_ASSERT_EQUAL(r.claimer_failures, 0);
    long long total = 0;
    int grew = 0, missing = 0;
    const char *id;
    json_t *v;
    json_object_foreach(r.claimed, id, v)
    {
        json_t *items = NULL;
        CU_ASSERT_EQUAL(pb_store_queue_items(f.st, id, &items), PB_STORE_OK);
        if ((json_int_t)json_array_size(items) != json_integer_value(v))
            grew++;
        total += json_integer_value(v);
        json_decref(items);
    }
    json_object_foreach(r.joined, id, v)
    {
        if (!json_object_get(r.claimed, id))
            missing++;
    }
    /* Every write sits in some batch of at most 100 (how many partial
     * batches the claimer cut depends on timing). */
    CU_ASSERT_TRUE(json_object_size(r.claimed) >= RACE_WRITES / 100);
    CU_ASSERT_EQUAL(grew, 0);
    CU_ASSERT_EQUAL(missing, 0);
    CU_ASSERT_EQUAL(total, RACE_WRITES);
    CU_ASSERT_EQUAL(raw_int(f.db, "SELECT count(*) FROM write_queue WHERE state = 'sending'"),
                    RACE_WRITES);
    CU_ASSERT_EQUAL(raw_int(f.db, "SELECT max(c) FROM (SELECT count(*) AS c FROM write_queue"
                                  " GROUP BY operation_id)") <= 100,
                    1);
    json_decref(r.joined);
    json_decref(r.claimed);
    pb_store_close(st2);
    wfix_close(&f);
}

/* Everything acknowledged is on disk: another connection sees it at once,
 * and a reopened store carries on where the old one stopped. */
static void test_write_api_persistence(void)
{
    struct wfix f;
    CU_ASSERT_EQUAL_FATAL(wfix_open(&f), 0);
    const long long T = T_FIXED;
    char op[64];
    for (int i = 0; i < 5; i++) {
        CU_ASSERT_EQUAL(queue_one(f.st, f.crm, "ins_1", "create", BUCKET, i, op), PB_STORE_OK);
        /* Committed before the call returned. */
        CU_ASSERT_EQUAL(raw_int(f.db, "SELECT count(*) FROM write_queue"), i + 1);
    }
    CU_ASSERT_EQUAL(mkop(&f, "op_async", "ins_1", T, T + HOUR_MS), PB_STORE_OK);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s}", "id", "op_sync", "integrationId", f.crm,
                          "installationId", "ins_1", "status", "success", "result", "ok");
    CU_ASSERT_EQUAL(pb_store_operation_create(f.st, "p_1", o, NULL), PB_STORE_OK);
    json_decref(o);
    CU_ASSERT_STRING_EQUAL(claim(f.st, "w", T, T + MIN_MS, 10), "op_async");
    CU_ASSERT_EQUAL(mkop(&f, "op_retry", "ins_2", T, -1), PB_STORE_OK);
    CU_ASSERT_STRING_EQUAL(claim(f.st, "w", T, T + MIN_MS, 10), "op_retry");
    CU_ASSERT_EQUAL(pb_store_operation_retry(f.st, "op_retry", 1, T + 2 * MIN_MS, "timeout", T),
                    PB_STORE_OK);

    json_t *list1 = NULL, *list2 = NULL, *items = NULL, *g1 = NULL;
    CU_ASSERT_EQUAL(pb_store_operation_list(f.st, "p_1", "ins_1", 100, NULL, &list1),
                    PB_STORE_OK);
    CU_ASSERT_EQUAL(json_array_size(json_object_get(list1, "operations")), 3);
    CU_ASSERT_EQUAL(pb_store_queue_items(f.st, "aop_000", &items), PB_STORE_OK);
    CU_ASSERT_EQUAL(pb_store_operation_get(f.st, "p_1", "op_retry", &g1), PB_STORE_OK);
    pb_store_close(f.st);

    f.st = open_path(f.path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f.st);
    json_t *v = NULL;
    CU_ASSERT_EQUAL(pb_store_operation_list(f.st, "p_1", "ins_1", 100, NULL, &list2),
                    PB_STORE_OK);
    CU_ASSERT_TRUE(json_equal(list1, list2));
    CU_ASSERT_EQUAL(pb_store_queue_items(f.st, "aop_000", &v), PB_STORE_OK);
    CU_ASSERT_TRUE(json_equal(items, v));
    CU_ASSERT_EQUAL(json_array_size(v), 5);
    json_decref(v);
    CU_ASSERT_EQUAL(pb_store_operation_get(f.st, "p_1", "op_retry", &v), PB_STORE_OK);
    CU_ASSERT_TRUE(json_equal(g1, v));
    json_decref(v);
    /* Claims, schedules and buckets survive too. */
    CU_ASSERT_STRING_EQUAL(claim(f.st, "w2", T + 1, T + MIN_MS, 10), "");
    CU_ASSERT_EQUAL(queue_one(f.st, f.crm, "ins_1", "create", BUCKET, 5, op), PB_STORE_OK);
    CU_ASSERT_STRING_EQUAL(op, "aop_000");
    CU_ASSERT_STRING_EQUAL(claim(f.st, "w2", T + MIN_MS, T + 3 * MIN_MS, 10),
                           "aop_000,op_async");
    CU_ASSERT_STRING_EQUAL(claim(f.st, "w2", T + 2 * MIN_MS, T + 3 * MIN_MS, 10), "op_retry");
    json_decref(list1);
    json_decref(list2);
    json_decref(items);
    json_decref(g1);
    wfix_close(&f);
}

/* ---- group commit ---- */

#define GC_THREADS 64
#define GC_PER_THREAD 200

struct gc_worker {
    struct wfix *f;
    int t;
    int failures; /* calls that did not return PB_STORE_OK */
    int bad_out;  /* returned API shapes that were wrong */
};

/* Thread t's i-th operation: every field follows from (t, i). */
static void *gc_create_main(void *arg)
{
    struct gc_worker *w = arg;
    for (int i = 0; i < GC_PER_THREAD; i++) {
        char id[32];
        snprintf(id, sizeof id, "gc_%02d_%03d", w->t, i);
        long long next = T_FIXED + w->t * 1000LL + i;
        json_t *op = json_pack("{s:s, s:s, s:s, s:{s:[s], s:i}, s:{s:s, s:i, s:i}, s:I, s:I}",
                               "id", id, "integrationId", w->f->crm, "installationId",
                               w->t % 2 ? "ins_1" : "ins_2", "metadata", "objects", "contacts",
                               "t", w->t, "request", "kind", "single", "t", w->t, "i", i,
                               "nextAttemptAt", (json_int_t)next, "deadlineAt",
                               (json_int_t)(next + HOUR_MS));
        /* Some callers ask for the API shape, built inside the group. */
        json_t *out = NULL;
        int rc = pb_store_operation_create(w->f->st, "p_1", op, i % 20 == 0 ? &out : NULL);
        if (rc != PB_STORE_OK)
            w->failures++;
        else if (i % 20 == 0 &&
                 (!out || strcmp(jstr(out, "id"), id) != 0 ||
                  strcmp(jstr(out, "status"), "in_progress") != 0 ||
                  strcmp(jstr(out, "installationId"), w->t % 2 ? "ins_1" : "ins_2") != 0))
            w->bad_out++;
        json_decref(out);
        json_decref(op);
    }
    return NULL;
}

/* 64 threads create 200 asynchronous operations each at once: every one is
 * stored with its own fields, and they shared transactions (far fewer
 * commits than writes). */
static void test_group_commit_concurrent_creates(void)
{
    struct wfix f;
    CU_ASSERT_EQUAL_FATAL(wfix_open(&f), 0);
    uint64_t c0 = pb_store_testing_commits(f.st);
    struct gc_worker w[GC_THREADS];
    pthread_t th[GC_THREADS];
    for (int t = 0; t < GC_THREADS; t++) {
        w[t] = (struct gc_worker){.f = &f, .t = t};
        CU_ASSERT_EQUAL_FATAL(pthread_create(&th[t], NULL, gc_create_main, &w[t]), 0);
    }
    int failures = 0, bad_out = 0;
    for (int t = 0; t < GC_THREADS; t++) {
        pthread_join(th[t], NULL);
        failures += w[t].failures;
        bad_out += w[t].bad_out;
    }
    uint64_t commits = pb_store_testing_commits(f.st) - c0;
    const long long n = GC_THREADS * GC_PER_THREAD;
    CU_ASSERT_EQUAL(failures, 0);
    CU_ASSERT_EQUAL(bad_out, 0);
    CU_ASSERT_EQUAL(raw_int(f.db, "SELECT count(*) FROM operations WHERE substr(id, 1, 3) = 'gc_'"),
                    n);
    /* Each row carries exactly the fields its caller gave. */
    char sql[1400];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM operations, (SELECT json_extract(request, '$.t') AS t,"
             " json_extract(request, '$.i') AS i, id AS rid FROM operations) ON rid = id"
             " WHERE id = printf('gc_%%02d_%%03d', t, i)"
             " AND project_id = 'p_1' AND integration_id = '%s'"
             " AND installation_id = CASE WHEN t %% 2 THEN 'ins_1' ELSE 'ins_2' END"
             " AND action_type = 'write' AND status = 'in_progress' AND result IS NULL"
             " AND json_extract(request, '$.kind') = 'single'"
             " AND json_extract(metadata, '$.t') = t"
             " AND json_extract(metadata, '$.objects[0]') = 'contacts'"
             " AND next_attempt_at = %lld + t * 1000 + i"
             " AND deadline_at = next_attempt_at + %lld AND attempts = 0"
             " AND claimed_by IS NULL AND created_at = updated_at",
             f.crm, (long long)T_FIXED, (long long)HOUR_MS);
    long long good = raw_int(f.db, sql);
    CU_ASSERT_EQUAL(good, n);
    /* Grouped: well under one commit per write. */
    CU_ASSERT_TRUE(commits > 0);
    CU_ASSERT_TRUE(commits * 4 <= (uint64_t)n);
    if (getenv("PBT_VERBOSE") || commits * 4 > (uint64_t)n)
        fprintf(stderr, "\n  %llu commits for %lld writes\n", (unsigned long long)commits, n);
    /* A claim sees them in next_attempt_at order. */
    CU_ASSERT_STRING_EQUAL(claim(f.st, "w", T_FIXED + 1, T_FIXED + MIN_MS, 3),
                           "gc_00_000,gc_00_001");
    wfix_close(&f);
}

#define QG_THREADS 64
#define QG_PER_THREAD 25

struct qg_worker {
    struct wfix *f;
    int t;
    int failures;
    json_t *joined; /* op id -> writes that reported it */
};

static void *qg_main(void *arg)
{
    struct qg_worker *w = arg;
    for (int i = 0; i < QG_PER_THREAD; i++) {
        char rec[64], new_id[32], op[64];
        snprintf(rec, sizeof rec, "{\"record\": {\"email\": \"t%d-%d@x\"}}", w->t, i);
        snprintf(new_id, sizeof new_id, "qg_%02d_%02d", w->t, i);
        json_t *r = json_loads(rec, 0, NULL);
        long long now = T_FIXED + i;
        if (pb_store_queue_add(w->f->st, "p_1", w->f->crm, "ins_1", "contacts", "create", r,
                               BUCKET, new_id, now, now + MIN_MS, now + HOUR_MS, op,
                               sizeof op) != PB_STORE_OK) {
            w->failures++;
        } else {
            json_t *c = json_object_get(w->joined, op);
            json_object_set_new(w->joined, op,
                                json_integer(c ? json_integer_value(c) + 1 : 1));
        }
        json_decref(r);
    }
    return NULL;
}

/* Queued writes from 64 threads into one bucket key: grouped writes see the
 * ones before them in the same transaction, so every batch still holds
 * exactly 100 and is due once full, and each caller was told the batch its
 * write is in. */
static void test_group_commit_queue_buckets(void)
{
    struct wfix f;
    CU_ASSERT_EQUAL_FATAL(wfix_open(&f), 0);
    uint64_t c0 = pb_store_testing_commits(f.st);
    struct qg_worker w[QG_THREADS];
    pthread_t th[QG_THREADS];
    for (int t = 0; t < QG_THREADS; t++) {
        w[t] = (struct qg_worker){.f = &f, .t = t, .joined = json_object()};
        CU_ASSERT_EQUAL_FATAL(pthread_create(&th[t], NULL, qg_main, &w[t]), 0);
    }
    int failures = 0;
    json_t *joined = json_object();
    for (int t = 0; t < QG_THREADS; t++) {
        pthread_join(th[t], NULL);
        failures += w[t].failures;
        const char *id;
        json_t *v;
        json_object_foreach(w[t].joined, id, v)
        {
            json_t *c = json_object_get(joined, id);
            json_object_set_new(joined, id,
                                json_integer((c ? json_integer_value(c) : 0) +
                                             json_integer_value(v)));
        }
        json_decref(w[t].joined);
    }
    const int n = QG_THREADS * QG_PER_THREAD;
    CU_ASSERT_EQUAL(failures, 0);
    CU_ASSERT_EQUAL(raw_int(f.db, "SELECT count(*) FROM write_queue"), n);
    CU_ASSERT_EQUAL(raw_int(f.db, "SELECT count(DISTINCT operation_id) FROM write_queue"),
                    n / 100);
    CU_ASSERT_EQUAL(raw_int(f.db, "SELECT count(*) FROM (SELECT operation_id FROM write_queue"
                                  " GROUP BY operation_id HAVING count(*) <> 100)"),
                    0);
    /* Every full batch was made due at its 100th write's time. */
    CU_ASSERT_EQUAL(raw_int(f.db, "SELECT count(*) FROM operations"
                                  " WHERE next_attempt_at < 1795694400123 + 60000"),
                    n / 100);
    CU_ASSERT_EQUAL(json_object_size(joined), (size_t)(n / 100));
    const char *id;
    json_t *v;
    json_object_foreach(joined, id, v)
    {
        char sql[256];
        snprintf(sql, sizeof sql, "SELECT count(*) FROM write_queue WHERE operation_id = '%s'",
                 id);
        CU_ASSERT_EQUAL(raw_int(f.db, sql), json_integer_value(v));
    }
    CU_ASSERT_TRUE(pb_store_testing_commits(f.st) - c0 < (uint64_t)n);
    json_decref(joined);
    wfix_close(&f);
}

/* One member of a held group, run on its own thread. */
struct gc_member {
    struct wfix *f;
    const char *id, *inst;   /* a create; inst NULL: a queued write instead */
    const char *new_op;      /* queued write: the operation id it would start */
    int want_out;
    int rc;
    json_t *out;
    char joined[64];
};

static void *gc_member_main(void *arg)
{
    struct gc_member *m = arg;
    if (m->inst) {
        json_t *op = json_pack("{s:s, s:s, s:s, s:{s:s}, s:I}", "id", m->id, "integrationId",
                               m->f->crm, "installationId", m->inst, "request", "kind",
                               "single", "nextAttemptAt", (json_int_t)T_FIXED);
        m->rc = pb_store_operation_create(m->f->st, "p_1", op, m->want_out ? &m->out : NULL);
        json_decref(op);
    } else {
        json_t *r = json_pack("{s:{s:s}}", "record", "email", m->id);
        m->rc = pb_store_queue_add(m->f->st, "p_1", m->f->crm, "ins_1", "contacts", "create", r,
                                   BUCKET, m->new_op, T_FIXED, T_FIXED + MIN_MS,
                                   T_FIXED + HOUR_MS, m->joined, sizeof m->joined);
        json_decref(r);
    }
    return NULL;
}

/* A group with bad members: each bad one gets its own error, rolled back
 * alone; the others commit, in one transaction. */
static void test_group_commit_bad_job_fails_alone(void)
{
    struct wfix f;
    CU_ASSERT_EQUAL_FATAL(wfix_open(&f), 0);
    json_t *orig = NULL;
    CU_ASSERT_EQUAL(mkop(&f, "op_taken", "ins_1", T_FIXED + 5, -1), PB_STORE_OK);
    CU_ASSERT_EQUAL(pb_store_operation_get(f.st, "p_1", "op_taken", &orig), PB_STORE_OK);

    struct gc_member m[] = {
        {.f = &f, .id = "op_g1", .inst = "ins_1"},
        {.f = &f, .id = "op_taken", .inst = "ins_2"},   /* duplicate id: CONFLICT */
        {.f = &f, .id = "op_g2", .inst = "ins_2", .want_out = 1},
        {.f = &f, .id = "op_g3", .inst = "ins_9"},      /* p_2's installation: NOTFOUND */
        {.f = &f, .id = "q1@x", .new_op = "op_q1"},
        {.f = &f, .id = "op_g4", .inst = "ins_1"},
        {.f = &f, .id = "q2@x", .new_op = "op_q2"},
        {.f = &f, .id = "op_g2", .inst = "ins_1"},      /* same id as a member before: CONFLICT */
        {.f = &f, .id = "op_g5", .inst = "ins_2", .want_out = 1},
    };
    const int n = (int)(sizeof m / sizeof m[0]);
    pthread_t th[sizeof m / sizeof m[0]];
    pb_store_testing_hold_commits(f.st, 1);
    /* One at a time, so the queue order (and who conflicts) is known. */
    for (int i = 0; i < n; i++) {
        CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, gc_member_main, &m[i]), 0);
        for (int k = 0; k < 5000 && pb_store_testing_queued(f.st) < i + 1; k++)
            usleep(1000);
        CU_ASSERT_EQUAL_FATAL(pb_store_testing_queued(f.st), i + 1);
    }
    /* Held: nothing is written while they wait. */
    usleep(20000);
    CU_ASSERT_EQUAL(raw_int(f.db, "SELECT count(*) FROM operations"), 1);
    uint64_t c0 = pb_store_testing_commits(f.st);
    pb_store_testing_hold_commits(f.st, 0);
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    CU_ASSERT_EQUAL(pb_store_testing_commits(f.st) - c0, 1);
    CU_ASSERT_EQUAL(pb_store_testing_queued(f.st), 0);

    CU_ASSERT_EQUAL(m[0].rc, PB_STORE_OK);
    CU_ASSERT_EQUAL(m[1].rc, PB_STORE_CONFLICT);
    CU_ASSERT_EQUAL(m[2].rc, PB_STORE_OK);
    CU_ASSERT_EQUAL(m[3].rc, PB_STORE_NOTFOUND);
    CU_ASSERT_EQUAL(m[4].rc, PB_STORE_OK);
    CU_ASSERT_EQUAL(m[5].rc, PB_STORE_OK);
    CU_ASSERT_EQUAL(m[6].rc, PB_STORE_OK);
    CU_ASSERT_EQUAL(m[7].rc, PB_STORE_CONFLICT);
    CU_ASSERT_EQUAL(m[8].rc, PB_STORE_OK);
    /* The second queued write joined the bucket the first one opened in
     * the same transaction. */
    CU_ASSERT_STRING_EQUAL(m[4].joined, "op_q1");
    CU_ASSERT_STRING_EQUAL(m[6].joined, "op_q1");
    CU_ASSERT_PTR_NOT_NULL(m[2].out);
    CU_ASSERT_STRING_EQUAL(jstr(m[2].out, "id"), "op_g2");
    CU_ASSERT_STRING_EQUAL(jstr(m[2].out, "installationId"), "ins_2");
    CU_ASSERT_STRING_EQUAL(jstr(m[8].out, "id"), "op_g5");
    /* Stored: the good ones; the bad ones left nothing behind. */
    CU_ASSERT_EQUAL(raw_int(f.db, "SELECT count(*) FROM operations"), 1 + 4 + 1);
    CU_ASSERT_EQUAL(raw_int(f.db, "SELECT count(*) FROM operations WHERE id IN"
                                  " ('op_g1', 'op_g2', 'op_g4', 'op_g5', 'op_q1')"),
                    5);
    CU_ASSERT_EQUAL(raw_int(f.db, "SELECT count(*) FROM operations WHERE id IN ('op_g3', 'op_q2')"),
                    0);
    CU_ASSERT_EQUAL(raw_int(f.db, "SELECT count(*) FROM operations WHERE id = 'op_g2'"
                                  " AND installation_id = 'ins_2'"),
                    1);
    CU_ASSERT_EQUAL(raw_int(f.db, "SELECT count(*) FROM write_queue WHERE operation_id = 'op_q1'"),
                    2);
    json_t *now = NULL;
    CU_ASSERT_EQUAL(pb_store_operation_get(f.st, "p_1", "op_taken", &now), PB_STORE_OK);
    CU_ASSERT_TRUE(json_equal(orig, now));
    for (int i = 0; i < n; i++)
        json_decref(m[i].out);
    json_decref(orig);
    json_decref(now);
    wfix_close(&f);
}

/* Every group member's row is committed before its call returns: another
 * connection sees it at once, and a reopened store has it. */
static void test_group_commit_durable_on_return(void)
{
    struct wfix f;
    CU_ASSERT_EQUAL_FATAL(wfix_open(&f), 0);
    struct gc_member m[8];
    pthread_t th[8];
    char ids[8][16];
    pb_store_testing_hold_commits(f.st, 1);
    for (int i = 0; i < 8; i++) {
        snprintf(ids[i], sizeof ids[i], "op_d%d", i);
        m[i] = (struct gc_member){.f = &f, .id = ids[i], .inst = i % 2 ? "ins_1" : "ins_2"};
        CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, gc_member_main, &m[i]), 0);
    }
    for (int k = 0; k < 5000 && pb_store_testing_queued(f.st) < 8; k++)
        usleep(1000);
    CU_ASSERT_EQUAL(pb_store_testing_queued(f.st), 8);
    pb_store_testing_hold_commits(f.st, 0);
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        CU_ASSERT_EQUAL(m[i].rc, PB_STORE_OK);
        char sql[128];
        snprintf(sql, sizeof sql, "SELECT count(*) FROM operations WHERE id = '%s'", ids[i]);
        CU_ASSERT_EQUAL(raw_int(f.db, sql), 1);
    }
    pb_store_close(f.st);
    f.st = open_path(f.path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f.st);
    /* All eight are there and due (in whatever order they queued). */
    const char *claimed = claim(f.st, "w", T_FIXED, T_FIXED + MIN_MS, 10);
    CU_ASSERT_EQUAL(strlen(claimed), 8 * 5 + 7);
    for (int i = 0; i < 8; i++)
        CU_ASSERT_PTR_NOT_NULL(strstr(claimed, ids[i]));
    wfix_close(&f);
}

int main(int argc, char **argv)
{
    CU_TestInfo tests[] = {
        {"open_creates_file_and_dir", test_open_creates_file_and_dir},
        {"url_forms", test_url_forms},
        {"schema_version", test_schema_version},
        {"reopen_idempotent", test_reopen_idempotent},
        {"journal_mode_wal", test_journal_mode_wal},
        {"tables_exist", test_tables_exist},
        {"schema_integrity", test_schema_integrity},
        {"open_errors", test_open_errors},
        {"newer_schema_refused", test_newer_schema_refused},
        {"projects", test_projects},
        {"project_get_prefers_id", test_project_get_prefers_id},
        {"project_conflict_and_notfound", test_project_conflict_and_notfound},
        {"api_keys", test_api_keys},
        {"create_with_key", test_create_with_key},
        {"persistence", test_persistence},
        {"threads", test_threads},
        {"integrations_apply", test_integrations_apply},
        {"integrations_apply_atomic", test_integrations_apply_atomic},
        {"connections", test_connections},
        {"connection_delete_in_use", test_connection_delete_in_use},
        {"connection_credentials", test_connection_credentials},
        {"connection_cas_threads", test_connection_cas_threads},
        {"oauth_states", test_oauth_states},
        {"installations", test_installations},
        {"generation", test_generation},
        {"control_plane_persistence", test_control_plane_persistence},
        {"activity_append_list", test_activity_append_list},
        {"activity_bad_element", test_activity_bad_element},
        {"activity_bulk", test_activity_bulk},
        {"activity_generation", test_activity_generation},
        {"rate_limits", test_rate_limits},
        {"operation_create_get", test_operation_create_get},
        {"operation_list_paging", test_operation_list_paging},
        {"operation_claim", test_operation_claim},
        {"operation_claim_two_stores", test_operation_claim_two_stores},
        {"operation_finish_retry", test_operation_finish_retry},
        {"queue_add_buckets", test_queue_add_buckets},
        {"queue_claimed_bucket", test_queue_claimed_bucket},
        {"queue_claim_race", test_queue_claim_race},
        {"write_api_persistence", test_write_api_persistence},
        {"generation_sees_other_handles", test_generation_sees_other_handles},
        {"operation_release_claims", test_operation_release_claims},
        {"group_commit_concurrent_creates", test_group_commit_concurrent_creates},
        {"group_commit_queue_buckets", test_group_commit_queue_buckets},
        {"group_commit_bad_job_fails_alone", test_group_commit_bad_job_fails_alone},
        {"group_commit_durable_on_return", test_group_commit_durable_on_return},
        CU_TEST_INFO_NULL,
    };
    return pbt_main(argc, argv, "store", tests);
}
