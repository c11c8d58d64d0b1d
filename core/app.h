/* The process-wide context: config, plugins, store and server, opened and
 * closed in one place so the CLI and the tests share the start-up path. */
#ifndef PB_CORE_APP_H
#define PB_CORE_APP_H
#include <stddef.h>
#include "config.h"
#include "loader.h"
#include "store.h"

struct pb_server;
struct pb_egress;
struct pb_tokens;
struct pb_activity;
struct pb_writer;
struct pb_cache;

struct pb_app {
    struct pb_config *cfg;
    struct pb_registry *reg;
    pb_store *store;
    struct pb_server *server;
    struct pb_egress *egress;
    struct pb_tokens *tokens;
    struct pb_activity *activity;
    struct pb_writer *writer;  /* asynchronous write workers (serve) */
    struct pb_cache *cache;    /* hot-path lookups */
};

enum pb_app_flags {
    PB_APP_PLUGINS = 1 << 0, /* load the enabled plugins */
    PB_APP_STORE = 1 << 1,   /* open the store and the master key */
    PB_APP_EGRESS = 1 << 2,  /* set up outbound HTTP */
    PB_APP_ALL = PB_APP_PLUGINS | PB_APP_STORE | PB_APP_EGRESS
};

/* Returns 0, or the exit code the CLI should use (2 bad config or plugin,
 * 1 runtime failure) with one line in err. */
int pb_app_open(const char *config_path, unsigned flags, struct pb_app **out, char *err,
                size_t err_len);
void pb_app_close(struct pb_app *app);
#endif
