#include "app.h"
#include "activity.h"
#include "cache.h"
#include "egress.h"
#include "tokens.h"
#include "write.h"
#include "log.h"
#include "secrets.h"
#include "server.h"
#include "util.h"
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>

static void store_log(const char *msg)
{
    pb_log_json(PB_LOG_ERROR, msg, json_pack("{s:s}", "component", "store"));
}

int pb_app_open(const char *config_path, unsigned flags, struct pb_app **out, char *err,
                size_t err_len)
{
    struct pb_app *app = pb_xcalloc(1, sizeof *app);
    int rc = 2;
    *out = NULL;
    if (pb_config_load(config_path, &app->cfg, err, err_len) != 0)
        goto fail;
    if (pb_log_setup(app->cfg->log_level, app->cfg->log_format) != 0) {
        snprintf(err, err_len, "%s: bad log settings", config_path);
        goto fail;
    }
    if ((flags & PB_APP_PLUGINS) && pb_registry_load(app->cfg, &app->reg, err, err_len) != 0)
        goto fail;
    if (flags & PB_APP_STORE) {
        rc = 1;
        pb_store_set_log(store_log);
        if (pb_secrets_init(app->cfg->master_key_file, err, err_len) != 0)
            goto fail;
        if (pb_store_open(app->cfg->store, &app->store, err, err_len) != 0)
            goto fail;
    }
    if ((flags & PB_APP_EGRESS) && pb_egress_init(app->cfg, &app->egress, err, err_len) != 0) {
        rc = 2;
        goto fail;
    }
    if ((flags & PB_APP_ALL) == PB_APP_ALL) {
        if (pb_tokens_init(app, &app->tokens) != 0) {
            snprintf(err, err_len, "cannot set up the credential cache");
            rc = 1;
            goto fail;
        }
        app->activity = pb_activity_start(app->store);
        app->cache = pb_cache_new(app->store);
    }
    *out = app;
    return 0;
fail:
    pb_app_close(app);
    return rc;
}

void pb_app_close(struct pb_app *app)
{
    if (!app)
        return;
    if (app->server)
        pb_server_stop(app->server);
    pb_writer_stop(app->writer);
    pb_activity_stop(app->activity);
    pb_tokens_free(app->tokens);
    pb_cache_free(app->cache);
    pb_egress_free(app->egress);
    if (app->store)
        pb_store_close(app->store);
    pb_secrets_shutdown(); /* a no-op when the key was never loaded */
    pb_registry_free(app->reg);
    pb_config_free(app->cfg);
    free(app);
}
