/* The proxy's request checks, exposed for tests and fuzzing. */
#ifndef PB_CORE_PROXY_H
#define PB_CORE_PROXY_H

/* NULL when `path` (the caller's path, before the query) may be appended
 * to a provider's base URL; otherwise why not. */
const char *pb_proxy_check_target(const char *path);
/* base + target joined, or NULL (why set) when the result would leave the
 * base URL's scheme, host or port. malloc'd. */
char *pb_proxy_join_url(const char *base, const char *target, const char **why);
#endif
