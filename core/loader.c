#include "loader.h"
#include "http.h"
#include "log.h"
#include "util.h"
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* The slots every plugin must fill, all before the optional ones. */
#define PB_PLUGIN_MIN_SIZE (offsetof(struct pb_plugin, apply_credentials) + sizeof(void *))

static void file_unload(struct pb_plugin_file *f)
{
    if (!f)
        return;
    if (f->dl)
        dlclose(f->dl);
    free(f->path);
    free(f->plugin);
    free(f);
}

/* Finds <plugin>.so in dir as a regular file; symlinks are refused so that a
 * writable link target elsewhere cannot inject code. */
static int find_file(const char *dir, const char *plugin, const char *provider, char **path,
                     char *err, size_t len)
{
    DIR *d = opendir(dir);
    if (!d) {
        snprintf(err, len, "%s: cannot open plugin_dir: %s", dir, strerror(errno));
        return -1;
    }
    char want[300];
    snprintf(want, sizeof want, "%s.so", plugin);
    struct dirent *e;
    int rc = -1;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, want) != 0)
            continue;
        char *p = pb_xasprintf("%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) != 0) {
            snprintf(err, len, "%s: %s", p, strerror(errno));
        } else if (S_ISLNK(st.st_mode)) {
            snprintf(err, len, "%s: refusing to load a symbolic link", p);
        } else if (!S_ISREG(st.st_mode)) {
            snprintf(err, len, "%s: not a regular file", p);
        } else {
            *path = p;
            p = NULL;
            rc = 0;
        }
        free(p);
        break;
    }
    closedir(d);
    if (rc != 0 && e == NULL)
        snprintf(err, len, "%s/%s: plugin '%s' for provider '%s' not found", dir, want, plugin,
                 provider);
    return rc;
}

static int file_load(const char *path, const char *plugin, struct pb_plugin_file **out,
                     char *err, size_t len)
{
    struct pb_plugin_file *f = pb_xcalloc(1, sizeof *f);
    f->path = pb_xstrdup(path);
    f->plugin = pb_xstrdup(plugin);
    dlerror();
    f->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!f->dl) {
        const char *why = dlerror();
        snprintf(err, len, "%s: not a loadable shared object: %s", path, why ? why : "unknown");
        file_unload(f);
        return -1;
    }
    void *sym = dlsym(f->dl, PB_PLUGIN_ENTRY_SYMBOL);
    if (!sym) {
        snprintf(err, len, "%s: not a plugboard plugin: missing symbol %s", path,
                 PB_PLUGIN_ENTRY_SYMBOL);
        file_unload(f);
        return -1;
    }
    pb_plugin_entry_fn entry;
    memcpy(&entry, &sym, sizeof entry);
    const struct pb_plugin *vt = entry();
    if (!vt) {
        snprintf(err, len, "%s: %s returned no plugin", path, PB_PLUGIN_ENTRY_SYMBOL);
        file_unload(f);
        return -1;
    }
    /* The version fields come first so they can be read from any ABI. */
    if (vt->abi_major != PB_PLUGIN_ABI_MAJOR) {
        snprintf(err, len,
                 "%s: plugin ABI %u.%u is incompatible with plugboard's ABI %d.%d (major version "
                 "differs)",
                 path, vt->abi_major, vt->abi_minor, PB_PLUGIN_ABI_MAJOR, PB_PLUGIN_ABI_MINOR);
        file_unload(f);
        return -1;
    }
    if (vt->struct_size < PB_PLUGIN_MIN_SIZE) {
        snprintf(err, len, "%s: plugin struct_size %zu is smaller than ABI %d requires (%zu)",
                 path, vt->struct_size, PB_PLUGIN_ABI_MAJOR, (size_t)PB_PLUGIN_MIN_SIZE);
        file_unload(f);
        return -1;
    }
    /* Fields past the plugin's struct_size do not exist for it: read as NULL. */
    size_t n = vt->struct_size < sizeof f->vt ? vt->struct_size : sizeof f->vt;
    memcpy(&f->vt, vt, n);
    const char *missing = NULL;
    if (!f->vt.name || !*f->vt.name)
        missing = "name";
    else if (!f->vt.init)
        missing = "init";
    else if (!f->vt.fini)
        missing = "fini";
    else if (!f->vt.base_url)
        missing = "base_url";
    else if (!f->vt.apply_credentials)
        missing = "apply_credentials";
    if (missing) {
        snprintf(err, len, "%s: plugin lacks the required '%s'", path, missing);
        file_unload(f);
        return -1;
    }
    *out = f;
    return 0;
}

static int check_options(const struct pb_config *cfg, const struct pb_provider_cfg *pc,
                         const struct pb_plugin_file *f, char *err, size_t len)
{
    if (!f->vt.config_keys)
        return 0;
    const char *key;
    json_t *v;
    json_object_foreach(pc->options, key, v) {
        int known = 0;
        for (const char *const *k = f->vt.config_keys; *k; k++)
            if (strcmp(*k, key) == 0)
                known = 1;
        if (known)
            continue;
        json_t *pos = json_object_get(pc->positions, key);
        struct pb_buf accepted = {0};
        for (const char *const *k = f->vt.config_keys; *k; k++) {
            if (accepted.len)
                pb_buf_appends(&accepted, ", ");
            pb_buf_appends(&accepted, *k);
        }
        snprintf(err, len, "%s:%d:%d: unknown key '%s' for provider '%s' (plugin '%s' accepts: %s)",
                 cfg->path, (int)json_integer_value(json_array_get(pos, 0)),
                 (int)json_integer_value(json_array_get(pos, 1)), key, pc->name, f->plugin,
                 accepted.data ? accepted.data : "nothing");
        pb_buf_free(&accepted);
        return -1;
    }
    return 0;
}

static struct pb_plugin_file *registry_file(struct pb_registry *reg, const char *plugin)
{
    for (size_t i = 0; i < reg->n_files; i++)
        if (strcmp(reg->files[i]->plugin, plugin) == 0)
            return reg->files[i];
    return NULL;
}

static int add_file(struct pb_registry *reg, const struct pb_config *cfg,
                    const struct pb_provider_cfg *pc, struct pb_plugin_file **out, char *err,
                    size_t len)
{
    struct pb_plugin_file *f = registry_file(reg, pc->plugin);
    if (f) {
        *out = f;
        return 0;
    }
    char *path = NULL;
    if (find_file(cfg->plugin_dir, pc->plugin, pc->name, &path, err, len) != 0)
        return -1;
    int rc = file_load(path, pc->plugin, &f, err, len);
    free(path);
    if (rc != 0)
        return -1;
    for (size_t i = 0; i < reg->n_files; i++) {
        if (strcmp(reg->files[i]->vt.name, f->vt.name) == 0) {
            snprintf(err, len, "%s: duplicate provider plugin name '%s' (already loaded from %s)",
                     f->path, f->vt.name, reg->files[i]->path);
            file_unload(f);
            return -1;
        }
    }
    reg->files = pb_xrealloc(reg->files, (reg->n_files + 1) * sizeof *reg->files);
    reg->files[reg->n_files++] = f;
    *out = f;
    return 0;
}

int pb_registry_load(const struct pb_config *cfg, struct pb_registry **out, char *err,
                     size_t len)
{
    struct pb_registry *reg = pb_xcalloc(1, sizeof *reg);
    reg->providers = pb_xcalloc(cfg->n_providers ? cfg->n_providers : 1, sizeof *reg->providers);
    *out = NULL;
    for (size_t i = 0; i < cfg->n_providers; i++) {
        const struct pb_provider_cfg *pc = &cfg->providers[i];
        struct pb_plugin_file *f;
        if (add_file(reg, cfg, pc, &f, err, len) != 0 || check_options(cfg, pc, f, err, len) != 0)
            goto fail;
        struct pb_plugin_config pcfg = {
            .struct_size = sizeof pcfg,
            .provider_name = pc->name,
            .config_file = cfg->path,
            .options = pc->options,
            .config_dir = cfg->dir,
        };
        struct pb_error perr;
        pb_error_clear(&perr);
        void *state = NULL;
        if (f->vt.init(pb_services(), &pcfg, &state, &perr) != 0) {
            snprintf(err, len, "%s: init failed for provider '%s': %s", f->path, pc->name,
                     perr.message[0] ? perr.message : "no reason given");
            goto fail;
        }
        struct pb_provider *p = &reg->providers[reg->n++];
        p->name = pb_xstrdup(pc->name);
        p->vt = &f->vt;
        p->file = f;
        p->cfg = pc;
        p->state = state;
        pb_logf(PB_LOG_DEBUG, "provider %s loaded from %s", p->name, f->path);
    }
    *out = reg;
    return 0;
fail:
    pb_registry_free(reg);
    return -1;
}

void pb_registry_free(struct pb_registry *reg)
{
    if (!reg)
        return;
    for (size_t i = 0; i < reg->n; i++) {
        reg->providers[i].vt->fini(reg->providers[i].state);
        free(reg->providers[i].name);
    }
    free(reg->providers);
    for (size_t i = 0; i < reg->n_files; i++)
        file_unload(reg->files[i]);
    free(reg->files);
    free(reg);
}

const struct pb_provider *pb_registry_find(const struct pb_registry *reg, const char *name)
{
    for (size_t i = 0; reg && name && i < reg->n; i++)
        if (strcmp(reg->providers[i].name, name) == 0)
            return &reg->providers[i];
    return NULL;
}

unsigned pb_provider_caps(const struct pb_provider *p)
{
    const struct pb_plugin *v = p->vt;
    unsigned caps = 0;
    if (v->encode_write && v->decode_write)
        caps |= PB_CAP_WRITE;
    if (v->encode_batch && v->decode_batch && v->max_batch_size > 0)
        caps |= PB_CAP_BATCH;
    if (v->encode_associations)
        caps |= PB_CAP_ASSOCIATIONS;
    if (v->encode_delete && v->decode_write)
        caps |= PB_CAP_DELETE;
    if (v->header_allowed)
        caps |= PB_CAP_HEADER_PASSTHROUGH;
    if (v->build_token_refresh && v->parse_token_response)
        caps |= PB_CAP_OAUTH2_REFRESH;
    if (v->authorize_url && v->build_code_exchange && v->parse_token_response)
        caps |= PB_CAP_OAUTH2_CONNECT;
    /* Zero for a 1.0 plugin: its struct_size ends before these slots. */
    if (v->encode_read && v->decode_read)
        caps |= PB_CAP_READ;
    return caps;
}

static const struct {
    enum pb_capability cap;
    const char *name;
} cap_names[] = {
    {PB_CAP_WRITE, "write"},
    {PB_CAP_BATCH, "batch"},
    {PB_CAP_ASSOCIATIONS, "associations"},
    {PB_CAP_DELETE, "delete"},
    {PB_CAP_HEADER_PASSTHROUGH, "header_passthrough"},
    {PB_CAP_OAUTH2_REFRESH, "oauth2_refresh"},
    {PB_CAP_OAUTH2_CONNECT, "oauth2_connect"},
    {PB_CAP_READ, "read"},
};

const char *pb_cap_name(enum pb_capability cap)
{
    for (size_t i = 0; i < sizeof cap_names / sizeof cap_names[0]; i++)
        if (cap_names[i].cap == cap)
            return cap_names[i].name;
    return "unknown";
}

void pb_caps_names(unsigned caps, char *out, size_t len)
{
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < sizeof cap_names / sizeof cap_names[0]; i++) {
        if (!(caps & cap_names[i].cap))
            continue;
        int n = snprintf(out + used, len - used, "%s%s", used ? "," : "", cap_names[i].name);
        if (n < 0 || (size_t)n >= len - used)
            break;
        used += (size_t)n;
    }
    if (!used)
        snprintf(out, len, "none");
}
