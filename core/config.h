/* plugboard.yaml: parsed with libyaml; every error names file:line:column. */
#ifndef PB_CORE_CONFIG_H
#define PB_CORE_CONFIG_H
#include <stddef.h>
#include <jansson.h>

struct pb_provider_cfg {
    char *name;        /* key under providers: */
    char *plugin;      /* value of plugin: */
    json_t *options;   /* every other key of the block, ${ENV} expanded */
    json_t *positions; /* {"<key>": [line, column]} for each key of the block */
    int line, column;  /* position of the provider's key */
};

struct pb_config {
    char *path;              /* the file as given */
    char *dir;               /* its directory */
    char *listen_host;       /* default 127.0.0.1 */
    int listen_port;         /* default 8080; 0 picks a free port */
    char *public_url;        /* default http://<listen> : base of OAuth callbacks */
    char *data_dir;          /* default ./var */
    char *store;             /* default sqlite:<data_dir>/plugboard.db */
    char *master_key_file;   /* default <data_dir>/master.key */
    char *plugin_dir;        /* default PB_DEFAULT_PLUGIN_DIR */
    char *log_level;         /* debug|info|warn|error, default info */
    char *log_format;        /* json|text, default json */
    struct {
        long timeout_ms;     /* default 30000 */
        char *ca_file;       /* NULL */
        char **connect_to;   /* NULL-terminated, may be empty */
        size_t n_connect_to;
        char *http_proxy;
        int allow_private;   /* default 0 */
    } egress;
    struct {
        long max_body_bytes;       /* control-plane / write JSON bodies, default 10 MiB */
        long connection_limit;     /* default 1024 */
        long connection_timeout_s; /* idle client connection timeout, default 60 */
        long drain_timeout_s;      /* SIGTERM drain bound, default 30 */
    } server;
    struct {
        long refresh_margin_s;     /* refresh ahead of expiry, default 300 */
    } tokens;
    struct pb_provider_cfg *providers;
    size_t n_providers;
};

/* Loads and validates `path`. On failure returns -1 and writes one line
 * "FILE:LINE:COL: what" (or "FILE: what") into err. */
int pb_config_load(const char *path, struct pb_config **out, char *err, size_t err_len);
void pb_config_free(struct pb_config *cfg);
const struct pb_provider_cfg *pb_config_provider(const struct pb_config *cfg, const char *name);
#endif
