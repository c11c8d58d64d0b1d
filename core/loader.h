/* Finds, checks and initializes the provider plugins enabled in the config. */
#ifndef PB_CORE_LOADER_H
#define PB_CORE_LOADER_H
#include <stddef.h>
#include "config.h"
#include "plugboard/plugin.h"

struct pb_plugin_file {
    char *path;              /* plugin_dir/<plugin>.so */
    char *plugin;            /* the name used by `plugin:` (file stem) */
    void *dl;                /* dlopen handle */
    struct pb_plugin vt;     /* copy of the vtable; fields past its struct_size are zero */
};

struct pb_provider {
    char *name;                        /* key under providers: */
    const struct pb_plugin *vt;        /* points into its file's copy */
    struct pb_plugin_file *file;
    const struct pb_provider_cfg *cfg; /* borrowed from the config */
    void *state;                       /* from the plugin's init */
};

struct pb_registry {
    struct pb_provider *providers;
    size_t n;
    struct pb_plugin_file **files;
    size_t n_files;
};

/* Loads every provider enabled in cfg. On failure everything loaded so far
 * is finalized and unloaded, *out is NULL and err holds one line naming the
 * file (or config position) and the reason. */
int pb_registry_load(const struct pb_config *cfg, struct pb_registry **out, char *err,
                     size_t err_len);
void pb_registry_free(struct pb_registry *reg);
const struct pb_provider *pb_registry_find(const struct pb_registry *reg, const char *name);

enum pb_capability {
    PB_CAP_WRITE = 1 << 0,
    PB_CAP_BATCH = 1 << 1,
    PB_CAP_ASSOCIATIONS = 1 << 2,
    PB_CAP_DELETE = 1 << 3,
    PB_CAP_HEADER_PASSTHROUGH = 1 << 4,
    PB_CAP_OAUTH2_REFRESH = 1 << 5,
    PB_CAP_OAUTH2_CONNECT = 1 << 6,
    PB_CAP_READ = 1 << 7 /* current values of a record (ABI 1.1): writeOnUpdate: ifEmpty */
};
/* Capabilities follow from which optional slots are set. */
unsigned pb_provider_caps(const struct pb_provider *p);
/* Comma-separated names of caps ("none" when empty) into out. */
void pb_caps_names(unsigned caps, char *out, size_t len);
/* The user-facing name of one capability, e.g. "associations". */
const char *pb_cap_name(enum pb_capability cap);
#endif
