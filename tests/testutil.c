#include "testutil.h"
#include <CUnit/Basic.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <ftw.h>
#include <strings.h>

static char tmpdir[512];

const char *pbt_tmpdir(void)
{
    if (!tmpdir[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(tmpdir, sizeof tmpdir, "%s/pbtest-XXXXXX", base && *base ? base : "/tmp");
        if (!mkdtemp(tmpdir)) {
            perror("mkdtemp");
            exit(99);
        }
    }
    return tmpdir;
}

char *pbt_path(const char *name)
{
    size_t n = strlen(pbt_tmpdir()) + strlen(name) + 2;
    char *p = malloc(n);
    snprintf(p, n, "%s/%s", pbt_tmpdir(), name);
    return p;
}

int pbt_write_file(const char *path, const char *content)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t n = strlen(content);
    int rc = fwrite(content, 1, n, f) == n ? 0 : -1;
    if (fclose(f) != 0)
        rc = -1;
    return rc;
}

char *pbt_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    size_t r;
    while ((r = fread(buf + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
        }
    }
    fclose(f);
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

char *pbt_built_plugin(const char *name)
{
    const char *b = getenv("PB_BUILDDIR");
    if (!b)
        b = ".";
    const char *base = strrchr(name, '/');
    base = base ? base + 1 : name;
    size_t n = strlen(b) + 2 * strlen(name) + 64;
    char *p = malloc(n);
    if (strchr(name, '/'))
        snprintf(p, n, "%s/%.*s.libs/%s.so", b, (int)(base - name), name, base);
    else
        snprintf(p, n, "%s/plugins/%s/.libs/%s.so", b, name, name);
    return p;
}

int pbt_install_plugin(const char *name, const char *dir, const char *as)
{
    char *src = pbt_built_plugin(name);
    size_t len;
    char *data = pbt_read_file(src, &len);
    if (!data) {
        fprintf(stderr, "missing built plugin %s\n", src);
        free(src);
        return -1;
    }
    free(src);
    char dst[1024];
    snprintf(dst, sizeof dst, "%s/%s.so", dir, as);
    FILE *f = fopen(dst, "wb");
    int rc = -1;
    if (f) {
        rc = fwrite(data, 1, len, f) == len ? 0 : -1;
        fclose(f);
    }
    free(data);
    return rc;
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb; (void)flag; (void)ftw;
    return remove(p);
}

void pbt_cleanup(void)
{
    if (tmpdir[0] && !getenv("PB_KEEP_TMP"))
        nftw(tmpdir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    tmpdir[0] = '\0';
}

int pbt_main(int argc, char **argv, const char *suite, CU_TestInfo *tests)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 99;
    CU_SuiteInfo suites[] = {{(char *)suite, NULL, NULL, NULL, NULL, tests}, CU_SUITE_INFO_NULL};
    if (CU_register_suites(suites) != CUE_SUCCESS)
        return 99;
    CU_basic_set_mode(CU_BRM_VERBOSE);
    if (argc > 1) {
        CU_pSuite s = CU_get_suite((char *)suite);
        CU_pTest t = s ? CU_get_test(s, argv[1]) : NULL;
        if (!t) {
            fprintf(stderr, "no test named %s\n", argv[1]);
            return 2;
        }
        CU_basic_run_test(s, t);
    } else {
        CU_basic_run_tests();
    }
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    unsigned ran = CU_get_number_of_tests_run();
    CU_cleanup_registry();
    pbt_cleanup();
    if (ran == 0)
        return 1;
    return failed ? 1 : 0;
}
