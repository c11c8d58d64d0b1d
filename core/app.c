#include "app.h"
#include "log.h"
#include "secrets.h"
#include "server.h"
#include "util.h"
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>

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
        if (pb_secrets_init(app->cfg->master_key_file, err, err_len) != 0)
            goto fail;
        if (pb_store_open(app->cfg->store, &app->store, err, err_len) != 0)
            goto fail;
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
    if (app->store)
        pb_store_close(app->store);
    pb_secrets_shutdown(); /* a no-op when the key was never loaded */
    pb_registry_free(app->reg);
    pb_config_free(app->cfg);
    free(app);
}
