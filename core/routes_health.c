/* GET /healthz (process up) and GET /readyz (store reachable, plugins
 * loaded), plus the table of route tables. */
#include "app.h"
#include "routes.h"
#include "store.h"

static int healthz(struct pb_request *r)
{
    return pb_reply_json(r, 200, json_pack("{s:s}", "status", "ok"));
}

static int readyz(struct pb_request *r)
{
    struct pb_app *app = r->app;
    int store_ok = app->store && pb_store_ping(app->store) == 0;
    int plugins_ok = app->reg && app->reg->n == app->cfg->n_providers;
    if (!store_ok || !plugins_ok)
        return pb_reply_problem(r, 503, "not-ready", "Not ready",
                                !store_ok ? "the store does not answer" : "plugins are not loaded",
                                1, NULL);
    return pb_reply_json(r, 200,
                         json_pack("{s:s, s:s, s:I}", "status", "ready", "store", "ok", "plugins",
                                   (json_int_t)app->reg->n));
}

const struct pb_route pb_routes_health[] = {
    {"GET", "/healthz", healthz, 0},
    {"GET", "/readyz", readyz, 0},
    {NULL, NULL, NULL, 0},
};

const struct pb_route *const pb_route_tables[] = {pb_routes_health, pb_routes_control,
                                                     pb_routes_proxy, pb_routes_write, NULL};
