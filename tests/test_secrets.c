/* Tests for core/secrets.c: the master key file, sealing, key hashes, ids. */
#include "secrets.h"
#include "testutil.h"

#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char err[512];

/* Initializes with a fresh key file named `name` in the temp dir. */
static void init_fresh(const char *name)
{
    char *path = pbt_path(name);
    unlink(path);
    err[0] = '\0';
    CU_ASSERT_EQUAL_FATAL(pb_secrets_init(path, err, sizeof err), 0);
    free(path);
}

static int write_bytes(const char *path, const unsigned char *b, size_t n, mode_t mode)
{
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    if (fd < 0)
        return -1;
    int rc = write(fd, b, n) == (ssize_t)n ? 0 : -1;
    close(fd);
    return rc == 0 ? chmod(path, mode) : -1;
}

static void test_key_file_created(void)
{
    char *path = pbt_path("keys/sub/master.key");
    CU_ASSERT_EQUAL(pb_secrets_init(path, err, sizeof err), 0);
    struct stat sb;
    CU_ASSERT_EQUAL_FATAL(stat(path, &sb), 0);
    CU_ASSERT_TRUE(S_ISREG(sb.st_mode));
    CU_ASSERT_EQUAL(sb.st_mode & 0777, 0600);
    CU_ASSERT_EQUAL(sb.st_size, 32);
    char *dir = pbt_path("keys/sub");
    CU_ASSERT_EQUAL(stat(dir, &sb), 0);
    CU_ASSERT_TRUE(S_ISDIR(sb.st_mode));
    CU_ASSERT_EQUAL(sb.st_mode & 0777, 0700);
    free(dir);
    /* No temporary file is left beside it. */
    char *keys = pbt_path("keys/sub");
    DIR *d = opendir(keys);
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    int entries = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            entries++;
    closedir(d);
    CU_ASSERT_EQUAL(entries, 1);
    free(keys);
    free(path);
    pb_secrets_shutdown();
}

static void test_reinit_same_key(void)
{
    char *path = pbt_path("reinit.key");
    CU_ASSERT_EQUAL_FATAL(pb_secrets_init(path, err, sizeof err), 0);
    size_t len1;
    char *before = pbt_read_file(path, &len1);
    char *sealed = pb_secret_seal("hello", 5);
    CU_ASSERT_PTR_NOT_NULL_FATAL(sealed);
    char h1[65];
    pb_key_hash("pbk_abc", h1);
    pb_secrets_shutdown();
    CU_ASSERT_PTR_NULL(pb_secret_unseal(sealed, NULL)); /* no key loaded */

    CU_ASSERT_EQUAL_FATAL(pb_secrets_init(path, err, sizeof err), 0);
    size_t len2;
    char *after = pbt_read_file(path, &len2);
    CU_ASSERT_EQUAL(len1, 32);
    CU_ASSERT_EQUAL(len2, 32);
    CU_ASSERT_EQUAL(memcmp(before, after, 32), 0);
    size_t n = 0;
    char *plain = pb_secret_unseal(sealed, &n);
    CU_ASSERT_PTR_NOT_NULL(plain);
    CU_ASSERT_EQUAL(n, 5);
    if (plain)
        CU_ASSERT_STRING_EQUAL(plain, "hello");
    char h2[65];
    pb_key_hash("pbk_abc", h2);
    CU_ASSERT_STRING_EQUAL(h1, h2);
    pb_secret_free(plain);
    free(sealed);
    free(before);
    free(after);
    free(path);
    pb_secrets_shutdown();
}

static void test_refuses_group_readable(void)
{
    char *path = pbt_path("open.key");
    unsigned char key[32] = {1, 2, 3};
    CU_ASSERT_EQUAL_FATAL(write_bytes(path, key, sizeof key, 0644), 0);
    err[0] = '\0';
    CU_ASSERT_NOT_EQUAL(pb_secrets_init(path, err, sizeof err), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, path));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "group or others"));
    CU_ASSERT_PTR_NULL(pb_secret_seal("x", 1)); /* nothing loaded */

    CU_ASSERT_EQUAL(chmod(path, 0640), 0);
    CU_ASSERT_NOT_EQUAL(pb_secrets_init(path, err, sizeof err), 0);
    CU_ASSERT_EQUAL(chmod(path, 0604), 0);
    CU_ASSERT_NOT_EQUAL(pb_secrets_init(path, err, sizeof err), 0);
    /* 0400 is fine. */
    CU_ASSERT_EQUAL(chmod(path, 0400), 0);
    CU_ASSERT_EQUAL(pb_secrets_init(path, err, sizeof err), 0);
    pb_secrets_shutdown();
    free(path);
}

static void test_refuses_wrong_size(void)
{
    char *path = pbt_path("short.key");
    unsigned char key[33] = {0};
    CU_ASSERT_EQUAL_FATAL(write_bytes(path, key, 16, 0600), 0);
    err[0] = '\0';
    CU_ASSERT_NOT_EQUAL(pb_secrets_init(path, err, sizeof err), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, path));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "16 bytes"));

    CU_ASSERT_EQUAL_FATAL(write_bytes(path, key, 33, 0600), 0);
    CU_ASSERT_NOT_EQUAL(pb_secrets_init(path, err, sizeof err), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, path));

    CU_ASSERT_EQUAL_FATAL(write_bytes(path, key, 0, 0600), 0);
    CU_ASSERT_NOT_EQUAL(pb_secrets_init(path, err, sizeof err), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, path));
    free(path);
}

static void test_refuses_directory_and_bad_parent(void)
{
    char *dir = pbt_path("adir.key");
    CU_ASSERT_EQUAL_FATAL(mkdir(dir, 0700), 0);
    err[0] = '\0';
    CU_ASSERT_NOT_EQUAL(pb_secrets_init(dir, err, sizeof err), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, dir));

    char *file = pbt_path("plainfile");
    CU_ASSERT_EQUAL_FATAL(pbt_write_file(file, "x"), 0);
    char *under = pbt_path("plainfile/master.key");
    err[0] = '\0';
    CU_ASSERT_NOT_EQUAL(pb_secrets_init(under, err, sizeof err), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, under));
    CU_ASSERT_NOT_EQUAL(pb_secrets_init("", err, sizeof err), 0);
    free(dir);
    free(file);
    free(under);
}

/* Several processes starting at once on a missing key file end up with one
 * key between them. */
static void test_concurrent_creation(void)
{
    char *path = pbt_path("race/master.key");
    enum { N = 6 };
    int fds[N][2];
    pid_t pids[N];
    for (int i = 0; i < N; i++) {
        CU_ASSERT_EQUAL_FATAL(pipe(fds[i]), 0);
        pids[i] = fork();
        CU_ASSERT_FATAL(pids[i] >= 0);
        if (pids[i] == 0) {
            char e[256], h[65] = "";
            if (pb_secrets_init(path, e, sizeof e) == 0)
                pb_key_hash("k", h);
            ssize_t w = write(fds[i][1], h, sizeof h);
            _exit(w == (ssize_t)sizeof h ? 0 : 1);
        }
        close(fds[i][1]);
    }
    char hashes[N][65];
    for (int i = 0; i < N; i++) {
        memset(hashes[i], 0, sizeof hashes[i]);
        ssize_t r = read(fds[i][0], hashes[i], sizeof hashes[i]);
        CU_ASSERT_EQUAL(r, 65);
        close(fds[i][0]);
        int status = 0;
        waitpid(pids[i], &status, 0);
        CU_ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    for (int i = 0; i < N; i++) {
        CU_ASSERT_EQUAL(strlen(hashes[i]), 64);
        CU_ASSERT_STRING_EQUAL(hashes[i], hashes[0]);
    }
    CU_ASSERT_EQUAL_FATAL(pb_secrets_init(path, err, sizeof err), 0);
    char h[65];
    pb_key_hash("k", h);
    CU_ASSERT_STRING_EQUAL(h, hashes[0]);
    pb_secrets_shutdown();
    free(path);
}

static void test_seal_roundtrip(void)
{
    init_fresh("seal.key");
    const char *plain = "{\"access_token\":\"sekrit-token-value-123\"}";
    char *a = pb_secret_seal(plain, strlen(plain));
    char *b = pb_secret_seal(plain, strlen(plain));
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    CU_ASSERT_STRING_NOT_EQUAL(a, b);
    CU_ASSERT_PTR_NULL(strstr(a, "sekrit"));
    CU_ASSERT_PTR_NULL(strstr(a, "access_token"));
    for (const char *p = a; *p; p++)
        CU_ASSERT_TRUE(isalnum((unsigned char)*p) || *p == '-' || *p == '_');

    size_t n = 0;
    char *out = pb_secret_unseal(a, &n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    CU_ASSERT_EQUAL(n, strlen(plain));
    CU_ASSERT_STRING_EQUAL(out, plain);
    pb_secret_free(out);
    out = pb_secret_unseal(b, NULL);
    CU_ASSERT_PTR_NOT_NULL(out);
    if (out)
        CU_ASSERT_STRING_EQUAL(out, plain);
    pb_secret_free(out);
    pb_secret_free(NULL);

    /* Empty and binary plaintexts. */
    char *e = pb_secret_seal("", 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(e);
    out = pb_secret_unseal(e, &n);
    CU_ASSERT_PTR_NOT_NULL(out);
    CU_ASSERT_EQUAL(n, 0);
    if (out)
        CU_ASSERT_EQUAL(out[0], '\0');
    pb_secret_free(out);
    free(e);
    unsigned char bin[300];
    for (size_t i = 0; i < sizeof bin; i++)
        bin[i] = (unsigned char)i;
    char *sb = pb_secret_seal(bin, sizeof bin);
    CU_ASSERT_PTR_NOT_NULL_FATAL(sb);
    out = pb_secret_unseal(sb, &n);
    CU_ASSERT_PTR_NOT_NULL(out);
    CU_ASSERT_EQUAL(n, sizeof bin);
    if (out)
        CU_ASSERT_EQUAL(memcmp(out, bin, sizeof bin), 0);
    pb_secret_free(out);
    free(sb);
    free(a);
    free(b);
    pb_secrets_shutdown();
}

static void test_unseal_rejects_forgery(void)
{
    init_fresh("forge.key");
    const char *plain = "refresh-token";
    char *s = pb_secret_seal(plain, strlen(plain));
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    size_t len = strlen(s);
    /* Flip each position in turn: every change is detected. */
    for (size_t i = 0; i < len; i++) {
        char *t = strdup(s);
        t[i] = t[i] == 'A' ? 'B' : 'A';
        char *out = pb_secret_unseal(t, NULL);
        CU_ASSERT_PTR_NULL(out);
        pb_secret_free(out);
        free(t);
    }
    char *t = strdup(s);
    t[len - 5] = '\0'; /* truncated */
    CU_ASSERT_PTR_NULL(pb_secret_unseal(t, NULL));
    free(t);
    CU_ASSERT_PTR_NULL(pb_secret_unseal("", NULL));
    CU_ASSERT_PTR_NULL(pb_secret_unseal("not base64 !!", NULL));
    CU_ASSERT_PTR_NULL(pb_secret_unseal("AAAA", NULL));
    CU_ASSERT_PTR_NULL(pb_secret_unseal(NULL, NULL));

    /* Another master key cannot open it. */
    init_fresh("forge2.key");
    CU_ASSERT_PTR_NULL(pb_secret_unseal(s, NULL));
    free(s);
    pb_secrets_shutdown();
}

static int is_lower_hex(const char *s)
{
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
            return 0;
    return 1;
}

static void test_key_hash(void)
{
    init_fresh("hash1.key");
    char a[65], a2[65], b[65];
    pb_key_hash("pbk_one", a);
    pb_key_hash("pbk_one", a2);
    pb_key_hash("pbk_two", b);
    CU_ASSERT_EQUAL(strlen(a), 64);
    CU_ASSERT_TRUE(is_lower_hex(a));
    CU_ASSERT_STRING_EQUAL(a, a2);
    CU_ASSERT_STRING_NOT_EQUAL(a, b);
    CU_ASSERT_PTR_NULL(strstr(a, "pbk_one"));

    init_fresh("hash2.key");
    char c[65];
    pb_key_hash("pbk_one", c);
    CU_ASSERT_EQUAL(strlen(c), 64);
    CU_ASSERT_STRING_NOT_EQUAL(a, c);
    pb_secrets_shutdown();

    char d[65] = "junk";
    pb_key_hash("pbk_one", d); /* no key: empty, never an unkeyed hash */
    CU_ASSERT_STRING_EQUAL(d, "");
}

static void test_secret_equal(void)
{
    CU_ASSERT_TRUE(pb_secret_equal("abc", "abc"));
    CU_ASSERT_TRUE(pb_secret_equal("", ""));
    CU_ASSERT_FALSE(pb_secret_equal("abc", "abd"));
    CU_ASSERT_FALSE(pb_secret_equal("abc", "abcd"));
    CU_ASSERT_FALSE(pb_secret_equal("abcd", "abc"));
    CU_ASSERT_FALSE(pb_secret_equal("abc", ""));
    CU_ASSERT_FALSE(pb_secret_equal(NULL, "abc"));
    CU_ASSERT_FALSE(pb_secret_equal("abc", NULL));
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_random_ids(void)
{
    enum { N = 1000 };
    char *ids[N];
    for (int i = 0; i < N; i++) {
        char buf[64];
        pb_random_id("op_", buf, sizeof buf);
        CU_ASSERT_EQUAL(strlen(buf), 3 + 26);
        CU_ASSERT_EQUAL(strncmp(buf, "op_", 3), 0);
        CU_ASSERT_EQUAL(strspn(buf + 3, "abcdefghijklmnopqrstuvwxyz234567"), 26);
        ids[i] = strdup(buf);
    }
    qsort(ids, N, sizeof ids[0], cmp_str);
    for (int i = 1; i < N; i++)
        CU_ASSERT_STRING_NOT_EQUAL(ids[i - 1], ids[i]);
    for (int i = 0; i < N; i++)
        free(ids[i]);

    char exact[5 + 27];
    pb_random_id("proj_", exact, sizeof exact); /* exactly large enough */
    CU_ASSERT_EQUAL(strlen(exact), 31);
    char small[5 + 26] = "junk";
    pb_random_id("proj_", small, sizeof small); /* one byte short */
    CU_ASSERT_STRING_EQUAL(small, "");
    char bare[27];
    pb_random_id(NULL, bare, sizeof bare);
    CU_ASSERT_EQUAL(strlen(bare), 26);
}

static void test_api_keys(void)
{
    enum { N = 200 };
    char *keys[N];
    for (int i = 0; i < N; i++) {
        keys[i] = pb_api_key_new();
        CU_ASSERT_PTR_NOT_NULL_FATAL(keys[i]);
        CU_ASSERT_EQUAL(strncmp(keys[i], "pbk_", 4), 0);
        CU_ASSERT_EQUAL(strlen(keys[i]), 4 + 43);
        CU_ASSERT_EQUAL(strspn(keys[i] + 4, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                            "0123456789-_"),
                        43);
    }
    qsort(keys, N, sizeof keys[0], cmp_str);
    for (int i = 1; i < N; i++)
        CU_ASSERT_STRING_NOT_EQUAL(keys[i - 1], keys[i]);
    for (int i = 0; i < N; i++)
        free(keys[i]);
}

int main(int argc, char **argv)
{
    CU_TestInfo tests[] = {
        {"key_file_created", test_key_file_created},
        {"reinit_same_key", test_reinit_same_key},
        {"refuses_group_readable", test_refuses_group_readable},
        {"refuses_wrong_size", test_refuses_wrong_size},
        {"refuses_directory_and_bad_parent", test_refuses_directory_and_bad_parent},
        {"concurrent_creation", test_concurrent_creation},
        {"seal_roundtrip", test_seal_roundtrip},
        {"unseal_rejects_forgery", test_unseal_rejects_forgery},
        {"key_hash", test_key_hash},
        {"secret_equal", test_secret_equal},
        {"random_ids", test_random_ids},
        {"api_keys", test_api_keys},
        CU_TEST_INFO_NULL,
    };
    return pbt_main(argc, argv, "secrets", tests);
}
