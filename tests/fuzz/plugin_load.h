/* dlopen()s an in-tree plugin from the build directory and initializes it
 * with the core's services, for the targets that fuzz plugin code. */
#ifndef PB_TESTS_FUZZ_PLUGIN_LOAD_H
#define PB_TESTS_FUZZ_PLUGIN_LOAD_H
#include "fuzz.h"

#include <dlfcn.h>

#include "http.h"

struct fuzz_plugin {
    void *handle;
    const struct pb_plugin *vt;
};

/* Loads plugins/<name>/.libs/<name>.so; aborts when it cannot. */
static inline void fuzz_plugin_open(const char *name, struct fuzz_plugin *fp)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/plugins/%s/.libs/%s.so", fuzz_builddir(), name, name);
    fp->handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!fp->handle) {
        fprintf(stderr, "fuzz: cannot load %s: %s (set PB_BUILDDIR)\n", path, dlerror());
        abort();
    }
    pb_plugin_entry_fn entry = (pb_plugin_entry_fn)dlsym(fp->handle, PB_PLUGIN_ENTRY_SYMBOL);
    fp->vt = entry ? entry() : NULL;
    if (!fp->vt || fp->vt->abi_major != PB_PLUGIN_ABI_MAJOR || !fp->vt->init || !fp->vt->fini) {
        fprintf(stderr, "fuzz: %s is not a plugboard plugin of ABI %d\n", path,
                PB_PLUGIN_ABI_MAJOR);
        abort();
    }
}

/* init with `options` (borrowed); returns the slot's code, *state and err
 * as the slot left them. */
static inline int fuzz_plugin_init(const struct fuzz_plugin *fp, const char *provider,
                                   const json_t *options, const char *config_dir, void **state,
                                   struct pb_error *err)
{
    struct pb_plugin_config cfg = {.struct_size = sizeof cfg,
                                   .provider_name = provider,
                                   .config_file = "plugboard.yaml",
                                   .options = options,
                                   .config_dir = config_dir};
    pb_error_clear(err);
    *state = NULL;
    return fp->vt->init(pb_services(), &cfg, state, err);
}
#endif
