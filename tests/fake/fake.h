/* In-process fake provider servers for tests (HubSpot, Salesforce, echo).
 *
 * Each fake is its own libmicrohttpd daemon (one thread per connection) on
 * 127.0.0.1, port chosen by the kernel. Plain HTTP, or HTTPS when a
 * certificate is given (see certs.sh). Everything a test needs to assert on
 * is reachable from here: the recorded requests, the provider's stored
 * records, the tokens, the token endpoint call count; and everything it
 * needs to provoke: faults, expired tokens, per-record validation errors
 * (any property / field value "INVALID").
 *
 * All functions are thread-safe. */
#ifndef PB_TESTS_FAKE_H
#define PB_TESTS_FAKE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

enum fake_kind { FAKE_HUBSPOT, FAKE_SALESFORCE, FAKE_ECHO };

struct fake_opts {
    const char *tls_cert_file, *tls_key_file; /* PEM; NULL = plain HTTP */
    const char *client_id, *client_secret;    /* expected on token calls; NULL = accept any */
    int token_ttl_s;                          /* expires_in for issued tokens; <= 0: 1800 */
    const char *instance_url;                 /* Salesforce: instance_url (and "id" host) in token
                                               * answers; NULL = fake_base_url() */
};

struct fake;

/* NULL on failure (reason on stderr). opts may be NULL. */
struct fake *fake_start(enum fake_kind kind, const struct fake_opts *opts);
int fake_port(const struct fake *f);
/* "http://127.0.0.1:PORT" or "https://127.0.0.1:PORT" */
const char *fake_base_url(const struct fake *f);
/* Wakes sleeping handlers (delays, /slow), stops the daemon, frees all. */
void fake_stop(struct fake *f);

/* ---- recording -------------------------------------------------------------- */
/* A request is recorded once it has fully arrived (before it is answered, so
 * a client that got an answer always finds its request here); requests the
 * client abandoned half-way are not recorded. */
struct fake_header {
    char *name;  /* as sent */
    char *value;
};

struct fake_req {
    char *method;
    char *path;            /* raw request path as sent, without the query */
    char *query;           /* raw query without '?', "" when none */
    struct fake_header *headers;
    size_t nheaders;       /* in arrival order */
    char *body;            /* first <= 1 MiB of the body, NUL-terminated ("" when none) */
    size_t body_len;       /* bytes in body */
    uint64_t body_total;   /* bytes received in all */
    uint64_t body_checksum;/* FNV-1a 64 of the whole body */
    double at;             /* arrival (request line), fake_now() clock */
};

/* Seconds on the clock that fake_req.at uses (CLOCK_MONOTONIC). */
double fake_now(void);

/* method / path_prefix: NULL matches any. */
size_t fake_count(struct fake *f, const char *method, const char *path_prefix);
/* 0 and a deep copy in *out of the last matching request, -1 when none. */
int fake_last(struct fake *f, const char *method, const char *path_prefix, struct fake_req *out);
/* The same for the n-th (0-based, in arrival order) matching request. */
int fake_nth(struct fake *f, const char *method, const char *path_prefix, size_t n,
             struct fake_req *out);
void fake_req_free(struct fake_req *r);
/* First header with that name (case-insensitive), or NULL. */
const char *fake_req_header(const struct fake_req *r, const char *name);
/* A parameter from the form-encoded body or else the query, decoded; malloc'd or NULL. */
char *fake_req_param(const struct fake_req *r, const char *name);
/* The body parsed as JSON (new reference) or NULL. */
json_t *fake_req_json(const struct fake_req *r);

/* Clears the recorded requests, the token call count and the injected
 * faults. Stored provider records, tokens and codes stay. */
void fake_reset(struct fake *f);

/* ---- fault injection -------------------------------------------------------- */
struct fake_fault {
    int status;              /* e.g. 429, 500, 503; 0 with only delay_ms: delay, then answer normally */
    const char *retry_after; /* Retry-After header value or NULL */
    const char *body;        /* NULL: the provider's own error shape for that status */
    int delay_ms;            /* sleep before answering */
    int reset;               /* close the connection without an answer */
    int partial_body;        /* send headers (full Content-Length) and half the body, then drop */
};
/* The next `times` requests matching method / path_prefix (NULL = any) get
 * the fault instead of normal handling; times < 0: every one until
 * fake_reset(). Faults are matched in the order they were injected. The
 * strings are copied. */
void fake_inject(struct fake *f, const char *method, const char *path_prefix,
                 const struct fake_fault *fault, int times);

/* ---- OAuth (HubSpot, Salesforce) --------------------------------------------- */
/* Adds a valid access token and/or refresh token (either may be NULL).
 * ttl_s > 0: the access token expires after ttl_s seconds; 0: never;
 * < 0: already expired. */
void fake_add_token(struct fake *f, const char *access_token, const char *refresh_token,
                    int ttl_s);
/* API calls with this access token now get the provider's 401 "expired". */
void fake_expire_token(struct fake *f, const char *access_token);
/* The refresh token is no longer accepted by the token endpoint. */
void fake_revoke_refresh(struct fake *f, const char *refresh_token);
/* A single-use authorization code for grant_type=authorization_code. */
void fake_add_code(struct fake *f, const char *code);
/* Requests that reached the token endpoint (faulted ones included). */
size_t fake_token_calls(struct fake *f);
/* The last access token the token endpoint issued (malloc'd) or NULL. */
char *fake_last_issued_token(struct fake *f);

/* ---- stored provider records -------------------------------------------------- */
/* HubSpot: {"id","properties",...,"associations":[create-body associations]}.
 * obj may be "contacts", "contact" or "0-1" (and so on). New reference or NULL. */
json_t *fake_hubspot_record(struct fake *f, const char *obj, const char *id);
size_t fake_hubspot_count(struct fake *f, const char *obj);
/* Salesforce: the sObject as GET returns it. New reference or NULL. */
json_t *fake_salesforce_record(struct fake *f, const char *obj, const char *id);
size_t fake_salesforce_count(struct fake *f, const char *obj);

/* ======================================================================== */
#ifdef FAKE_INTERNAL
/* Shared between fake.c and the provider files only. */
#include <microhttpd.h>
#include <pthread.h>

#define FAKE_BODY_MAX (1024 * 1024)

struct fake_conn {              /* one request */
    struct fake *f;
    struct MHD_Connection *conn;
    struct fake_req req;
    size_t cap;
    int phase;
};

#define FAKE_OUT_MAXH 16
struct fake_out {
    int status;
    json_t *json;               /* body, owned */
    char *raw;                  /* or a raw body, malloc'd */
    size_t raw_len;
    struct MHD_Response *resp;  /* or a complete body-carrying response */
    const char *ctype;          /* Content-Type for json / raw */
    char *hname[FAKE_OUT_MAXH], *hval[FAKE_OUT_MAXH];
    int nh;
};

enum fake_auth_result { FAKE_AUTH_OK, FAKE_AUTH_MISSING, FAKE_AUTH_INVALID, FAKE_AUTH_EXPIRED };

enum fake_grant_result {
    FAKE_GRANT_OK,
    FAKE_GRANT_BAD_CLIENT_ID,
    FAKE_GRANT_BAD_SECRET,
    FAKE_GRANT_BAD_CODE,
    FAKE_GRANT_BAD_REFRESH,
    FAKE_GRANT_BAD_TYPE,
};
struct fake_grant {
    enum fake_grant_result result;
    int authorization_code;     /* which grant */
    char access[64];
    char refresh[256];          /* refresh token to hand back */
    int expires_in;
};

struct fake_priv_opts {
    char *client_id, *client_secret, *instance_url;
    int ttl;
};

void fake_lock(struct fake *f);
void fake_unlock(struct fake *f);
enum fake_kind fake_kind_of(const struct fake *f);
const struct fake_priv_opts *fake_opts_of(const struct fake *f);
/* The per-provider store: {object: {id: record}} (borrowed; lock held). */
json_t *fake_store(struct fake *f, const char *obj, int create);
json_t *fake_store_root(struct fake *f); /* {object: {id: record}} (borrowed; lock held) */
unsigned long fake_next_id(struct fake *f); /* lock held */
void fake_correlation_id(struct fake *f, char out[37]);
/* Interruptible sleep; returns -1 when the fake is stopping. */
int fake_sleep_ms(struct fake *f, long ms);

void fake_out_header(struct fake_out *o, const char *name, const char *value);
void fake_out_json(struct fake_out *o, int status, json_t *body); /* steals body */
/* Decoded query argument (MHD owned) or NULL. */
const char *fake_arg(struct fake_conn *c, const char *name);
/* Checks "Authorization: Bearer" (takes the lock itself). */
enum fake_auth_result fake_auth(struct fake_conn *c);
/* Runs the token endpoint logic (takes the lock itself). */
void fake_oauth_grant(struct fake_conn *c, struct fake_grant *g);
/* Current time as "2025-03-06T22:09:49.123Z" (hubspot=1) or
 * "2025-03-06T22:09:49.000+0000" (hubspot=0). */
void fake_iso_now(char out[40], int hubspot);
long long fake_epoch_ms(void);
/* Percent-decoding ('+' as space when form != 0); malloc'd. */
char *fake_urldecode(const char *s, size_t n, int form);

void fake_hubspot_handle(struct fake_conn *c, struct fake_out *o);
void fake_hubspot_error(struct fake_conn *c, int status, struct fake_out *o);
void fake_salesforce_handle(struct fake_conn *c, struct fake_out *o);
void fake_salesforce_error(struct fake_conn *c, int status, struct fake_out *o);
void fake_echo_handle(struct fake_conn *c, struct fake_out *o);
void fake_echo_error(struct fake_conn *c, int status, struct fake_out *o);
#endif /* FAKE_INTERNAL */

#endif
