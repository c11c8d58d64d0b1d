/* Every outbound call to a provider: libcurl with shared connections, TLS
 * verification always on, timeouts, connect_to overrides, an outbound proxy
 * and the private-address policy checked on the address actually used. */
#ifndef PB_CORE_EGRESS_H
#define PB_CORE_EGRESS_H
#include <stddef.h>
#include "config.h"
#include "http.h"

struct pb_egress;

enum pb_egress_fail {
    PB_EGRESS_OK = 0,
    PB_EGRESS_NETWORK = 1,   /* connect, reset, TLS, DNS: retryable */
    PB_EGRESS_TIMEOUT = 2,   /* retryable */
    PB_EGRESS_POLICY = 3,    /* destination refused by egress policy */
    PB_EGRESS_BAD_URL = 4,   /* not an http(s) URL */
    PB_EGRESS_TOO_LARGE = 5  /* buffered response over the limit */
};

struct pb_egress_result {
    enum pb_egress_fail fail;
    char message[256];       /* no secrets: host and reason only */
    long duration_ms;
    size_t bytes_out, bytes_in;
};

int pb_egress_init(const struct pb_config *cfg, struct pb_egress **out, char *err, size_t len);
void pb_egress_free(struct pb_egress *e);

/* Sends `req` (relative URLs are joined to base_url) and buffers the whole
 * response (up to 64 MiB). Returns 0 with *resp set when any HTTP response
 * arrived, -1 with res->fail otherwise. */
int pb_egress_send(struct pb_egress *e, struct pb_http_request *req, const char *base_url,
                   struct pb_http_response **resp, struct pb_egress_result *res);

/* 1 when addr (a struct sockaddr) is loopback, private, link-local,
 * unspecified, CGNAT or multicast. */
int pb_addr_is_private(const void *sockaddr);

/* The private-address policy of one transfer; `hit` becomes 1 when it
 * refused an address. Must outlive the transfer. */
struct pb_egress_policy {
    int allow_private;
    int hit;
};
/* Applies the shared settings (TLS, proxy, connect_to, timeouts, policy) to
 * a curl easy handle, for callers that drive curl themselves (streaming). */
void pb_egress_setup_handle(struct pb_egress *e, void *curl, struct pb_egress_policy *pol);
long pb_egress_timeout_ms(const struct pb_egress *e);
/* A curl multi handle and easy handle pair from the pool, so consecutive
 * calls reuse upstream connections (libcurl keeps them in the multi
 * handle). The easy handle comes reset; give both back with put. */
void pb_egress_pair_get(struct pb_egress *e, void **multi, void **easy);
void pb_egress_pair_put(struct pb_egress *e, void *multi, void *easy);
#endif
