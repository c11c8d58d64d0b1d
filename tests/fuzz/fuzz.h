/* Shared by the fuzz targets. Each tests/fuzz/fuzz_<name>.c defines
 * LLVMFuzzerTestOneInput (and LLVMFuzzerInitialize when it needs set-up).
 * With --enable-fuzzing they link against libFuzzer; otherwise against
 * replay.c, a main() that feeds each file named on the command line to the
 * target once, so `make check` replays the corpora with any compiler. */
#ifndef PB_TESTS_FUZZ_H
#define PB_TESTS_FUZZ_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* An invariant of the code under test: unlike assert(), never compiled out. */
#define FUZZ_CHECK(cond)                                                                    \
    do {                                                                                    \
        if (!(cond)) {                                                                      \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);  \
            abort();                                                                        \
        }                                                                                   \
    } while (0)

/* A NUL-terminated copy of the input (malloc'd; aborts on OOM). */
static inline char *fuzz_strndup(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        abort();
    if (size)
        memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

/* The build directory (plugins are dlopen'd from it): $PB_BUILDDIR, else
 * the one the target was built in. */
static inline const char *fuzz_builddir(void)
{
    const char *b = getenv("PB_BUILDDIR");
#ifdef PB_FUZZ_BUILDDIR
    if (!b || !*b)
        b = PB_FUZZ_BUILDDIR;
#endif
    return b && *b ? b : ".";
}
#endif
