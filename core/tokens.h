/* Credentials for proxied and written calls: decrypted once and kept in
 * memory, refreshed ahead of expiry through the provider's plugin, one
 * refresh per connection at a time however many callers need it. */
#ifndef PB_CORE_TOKENS_H
#define PB_CORE_TOKENS_H
#include <stdint.h>
#include "plugboard/plugin.h"
#include "problem.h"

struct pb_app;
struct pb_provider;
struct pb_tokens;

/* A caller's hold on one immutable snapshot of a connection's credentials.
 * `view` and everything it points to stay valid until pb_tokens_release. */
struct pb_cred_lease {
    struct pb_credentials view;
    const char *connection_id;
    long long version;          /* the store version this snapshot came from */
    void *snapshot;             /* internal */
};

int pb_tokens_init(struct pb_app *app, struct pb_tokens **out);
void pb_tokens_free(struct pb_tokens *t);

/* Credentials of a project's connection for `prov`. When the access token
 * expires within tokens.refresh_margin_s (or an oauth2_cc connection has no
 * token yet) and the plugin can refresh, refreshes first: concurrent callers
 * for the same connection share that one refresh. The new tokens are in the
 * store before any caller uses them. On failure fills p: 404 connection not
 * found, 424 "reauthorization-required" when the provider refused the
 * refresh (further attempts back off; callers in the back-off window get
 * the same problem without a provider call), 502 when the token endpoint
 * could not be reached, 503 store trouble. */
int pb_tokens_acquire(struct pb_tokens *t, const char *project_id, const char *connection_id,
                      const struct pb_provider *prov, struct pb_cred_lease **lease,
                      struct pb_problem *p);

/* After the provider answered 401 to a call made with `old`: refreshes once
 * unless another caller already replaced that snapshot, and returns the
 * current credentials. `old` stays valid; release both. */
int pb_tokens_refresh_after_401(struct pb_tokens *t, const struct pb_cred_lease *old,
                                const struct pb_provider *prov, struct pb_cred_lease **fresh,
                                struct pb_problem *p);

void pb_tokens_release(struct pb_cred_lease *lease);

/* Upstream refresh calls made since start (for tests and benchmarks). */
uint64_t pb_tokens_refresh_count(const struct pb_tokens *t);
#endif
