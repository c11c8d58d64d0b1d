/* Tests for core/store_sqlite.c on real SQLite files in the temp dir. The
 * tests also read the files with sqlite3 directly to check what the store
 * wrote. */
#include "store.h"
#include "testutil.h"

#include <pthread.h>
#include <sqlite3.h>
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
        CU_TEST_INFO_NULL,
    };
    return pbt_main(argc, argv, "store", tests);
}
