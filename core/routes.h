/* Every route table the server dispatches to, in match order. */
#ifndef PB_CORE_ROUTES_H
#define PB_CORE_ROUTES_H
#include "server.h"

extern const struct pb_route pb_routes_health[];
extern const struct pb_route pb_routes_control[];
extern const struct pb_route pb_routes_proxy[];
extern const struct pb_route pb_routes_write[];

/* NULL-terminated list of the tables above. */
extern const struct pb_route *const pb_route_tables[];
#endif
