/* Shared helpers for the CUnit test programs. */
#ifndef PB_TESTUTIL_H
#define PB_TESTUTIL_H
#include <CUnit/CUnit.h>
#include <stddef.h>

/* A fresh directory under $TMPDIR (or /tmp); removed by pbt_cleanup(). */
const char *pbt_tmpdir(void);
/* Joins the temp dir and `name` into a static-ish malloc'd path. */
char *pbt_path(const char *name);
/* Writes `content` to `path`; returns 0 on success. */
int pbt_write_file(const char *path, const char *content);
/* Reads a whole file, NUL-terminated (malloc'd), NULL when missing. */
char *pbt_read_file(const char *path, size_t *len);
/* Path of a built module, e.g. pbt_built_plugin("hubspot") ->
 * $PB_BUILDDIR/plugins/hubspot/.libs/hubspot.so; "tests/plugins/abi_newer"
 * style names are looked up the same way. malloc'd. */
char *pbt_built_plugin(const char *name);
/* Copies a built module into `dir` as `<as>.so`. Returns 0 on success. */
int pbt_install_plugin(const char *name, const char *dir, const char *as);
/* Runs the suite (NULL-terminated CU_TestInfo array) and returns the exit
 * status for main(): 0 when everything passed. Honors argv[1] as a single
 * test name to run. */
int pbt_main(int argc, char **argv, const char *suite, CU_TestInfo *tests);
void pbt_cleanup(void);
#endif

/* ---- HTTP over loopback ---------------------------------------------------- */
struct pbt_resp {
    long status;
    char *body;       /* NUL-terminated */
    size_t body_len;
    char *headers;    /* raw header block */
};
/* Performs one request with libcurl. headers: NULL-terminated "Name: value"
 * strings or NULL; body may be NULL. Returns 0 when a response arrived. */
int pbt_http(const char *method, const char *url, const char *const *headers, const char *body,
             struct pbt_resp *out);
/* A response header's value (malloc'd) or NULL. */
char *pbt_resp_header(const struct pbt_resp *r, const char *name);
void pbt_resp_free(struct pbt_resp *r);

/* ---- an in-process plugboard --------------------------------------------- */
struct pb_app;
/* Writes a config (listen 127.0.0.1:0, store and key in the temp dir, the
 * in-tree plugins copied to a plugin dir) followed by `extra_yaml`, opens
 * the app and starts its server. base_url gets "http://127.0.0.1:PORT". */
struct pb_app *pbt_start(const char *extra_yaml, char *base_url, size_t len);
void pbt_stop(struct pb_app *app);
