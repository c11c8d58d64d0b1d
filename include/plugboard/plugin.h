/*
 * plugboard provider plugin ABI, version 1 (minor 1: the read slots).
 *
 * This header is the whole contract between the plugboard core and a provider
 * plugin. A plugin is a shared object that exports exactly one symbol,
 * PB_PLUGIN_ENTRY_SYMBOL ("pb_plugin_entry"), a function returning a pointer
 * to a `static const struct pb_plugin`.
 *
 * Build out of tree:
 *   cc -shared -fPIC $(pkg-config --cflags plugboard-plugin) -o x.so x.c
 *
 * Rules that hold for every slot:
 *   - Plugins translate, the core does I/O. A plugin never opens a socket,
 *     starts a thread, sleeps or touches the disk after init. It turns an
 *     operation into an HTTP request description (built through the core's
 *     request builders) and an HTTP response into a result.
 *   - Arguments are borrowed for the duration of the call. Nothing a plugin
 *     receives may be kept after the call returns.
 *   - `json_t` values follow jansson's reference rules; each parameter says
 *     whether it is borrowed or whether a new reference is returned.
 *   - Strings a slot hands back are written into a caller-provided buffer or
 *     built as core-owned objects through the services table.
 *   - Plugin state is created by init(), is read-only afterwards (slots are
 *     called from many threads at once) and is freed by fini().
 *   - A slot returns 0 on success and a negative PB_E* code on failure; the
 *     human-readable detail goes through services->error_set().
 *   - An optional slot left NULL means "this provider cannot"; the core
 *     refuses such requests with a problem naming the provider and the
 *     capability.
 *
 * Growth: structs only grow at their end. Each versioned struct starts with
 * its own size so the reader treats fields past it as absent. The loader
 * rejects a plugin whose ABI major differs from the core's in either
 * direction; a newer minor is accepted and its extra fields are ignored.
 */
#ifndef PLUGBOARD_PLUGIN_H
#define PLUGBOARD_PLUGIN_H

#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>
#include <jansson.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PB_PLUGIN_ABI_MAJOR 1
#define PB_PLUGIN_ABI_MINOR 1
#define PB_PLUGIN_ENTRY_SYMBOL "pb_plugin_entry"

#if defined(__GNUC__)
#define PB_PLUGIN_EXPORT __attribute__((visibility("default")))
#define PB_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define PB_PLUGIN_EXPORT
#define PB_PRINTF(f, a)
#endif

/* Error codes returned by slots and services. */
enum pb_errcode {
    PB_OK = 0,
    PB_EINVAL = -1,       /* bad input from the caller (maps to 400/422) */
    PB_ENOMEM = -2,
    PB_EUNSUPPORTED = -3, /* the provider cannot do this (422) */
    PB_EPROVIDER = -4,    /* the provider answered something unusable (502) */
    PB_ECONFIG = -5,      /* the plugin's configuration is wrong */
    PB_EAUTH = -6         /* credentials missing or unusable */
};

enum pb_log_level { PB_LOG_DEBUG = 0, PB_LOG_INFO = 1, PB_LOG_WARN = 2, PB_LOG_ERROR = 3 };

/* ---- Core-owned opaque objects ---------------------------------------- */

/* An HTTP request description the plugin fills through the services table.
 * Owned by the core; valid only during the slot call that received it. */
typedef struct pb_http_request pb_http_request;

/* A received HTTP response, read through the services table. Owned by the
 * core; valid only during the slot call that received it. */
typedef struct pb_http_response pb_http_response;

/* Error detail sink. Owned by the core. */
typedef struct pb_error pb_error;

/* ---- Plain data passed to slots (all borrowed) ------------------------- */

/* What the core knows about one provider instance from plugboard.yaml. */
struct pb_plugin_config {
    size_t struct_size;
    const char *provider_name; /* the key under `providers:`, e.g. "crm-eu" */
    const char *config_file;   /* path of plugboard.yaml, for messages */
    const json_t *options;     /* borrowed: every key of the provider block
                                  except `plugin`, values as in YAML
                                  (strings, numbers, booleans, objects) with
                                  ${ENV} already expanded */
    const char *config_dir;    /* directory of plugboard.yaml: resolve
                                  relative paths (catalogs) against it */
};

/* A connection's credentials, decrypted for the duration of one call. */
struct pb_credentials {
    size_t struct_size;
    const char *auth_type;     /* "oauth2", "oauth2_cc", "api_key", "basic", "none" */
    const char *access_token;  /* NULL when absent */
    const char *refresh_token;
    int64_t expires_at;        /* unix seconds; 0 when unknown */
    const char *api_key;
    const char *username;
    const char *password;
    const char *client_id;     /* connection-level client credentials */
    const char *client_secret;
    const char *scopes;        /* space separated, may be NULL */
    const json_t *metadata;    /* borrowed: providerMetadata object, shape
                                  {"<key>": {"value": "<string>"}}; never NULL */
};

/* Parameters of an OAuth authorization-code flow. */
struct pb_oauth_params {
    size_t struct_size;
    const char *redirect_uri;  /* the core's callback URL */
    const char *state;         /* opaque single-use value the core checks */
    const char *scopes;        /* space separated or NULL */
    const json_t *metadata;    /* borrowed: providerMetadata given at connect */
};

enum pb_write_type { PB_WRITE_CREATE = 1, PB_WRITE_UPDATE = 2, PB_WRITE_DELETE = 3 };

/* One record write. */
struct pb_write {
    size_t struct_size;
    const char *object;        /* provider object name, e.g. "contacts" */
    enum pb_write_type type;
    const char *record_id;     /* required for update and delete, else NULL */
    const json_t *record;      /* borrowed: field -> value, without "id" */
    const json_t *associations;/* borrowed: Write API associations array or NULL */
};

/* A batch of records of one object and type (create or update). */
struct pb_batch {
    size_t struct_size;
    const char *object;
    enum pb_write_type type;
    const json_t *items;       /* borrowed: array of {"id"?: str, "record": {...},
                                  "associations"?: [...]} in input order */
    int all_or_none;           /* 1: the provider must write all or nothing */
};

/* How the core should treat a provider response. The core fills defaults
 * first (429/5xx retryable, Retry-After honoured, 401 auth_invalid); the
 * classify slot may then refine them. */
struct pb_classification {
    size_t struct_size;
    int retryable;             /* 1: the same request may succeed later */
    int rate_limited;          /* 1: the provider is throttling this account */
    int64_t retry_at_ms;       /* unix ms before which not to retry; 0 none */
    int auth_invalid;          /* 1: credentials rejected; refresh may help */
};

/* ---- Services the core hands to the plugin at init --------------------- */

struct pb_core_services {
    uint32_t abi_major;
    uint32_t abi_minor;
    size_t struct_size;

    /* Logging. Never pass secrets. Thread-safe. */
    void (*log)(enum pb_log_level level, const char *provider, const char *fmt, ...) PB_PRINTF(3, 4);

    /* Error reporting: set the kind and a one-line message on `err`.
     * `field` names the offending input field or config key, or NULL. */
    void (*error_set)(pb_error *err, enum pb_errcode code, const char *field,
                      const char *fmt, ...) PB_PRINTF(4, 5);

    /* Request builders. Strings are copied. Return 0 or PB_ENOMEM/PB_EINVAL. */
    int (*req_set_method)(pb_http_request *req, const char *method);
    /* A path (and optional query) relative to the provider's base URL, or an
     * absolute https:// URL (token endpoints). */
    int (*req_set_url)(pb_http_request *req, const char *path_or_url);
    /* Adds a header; names and values with CR, LF or NUL are refused. */
    int (*req_add_header)(pb_http_request *req, const char *name, const char *value);
    /* Appends name=value to the query string, URL-encoding both. */
    int (*req_add_query)(pb_http_request *req, const char *name, const char *value);
    /* Appends a field to an application/x-www-form-urlencoded body. */
    int (*req_add_form)(pb_http_request *req, const char *name, const char *value);
    /* Sets a JSON body; steals the reference to `body`. */
    int (*req_set_json)(pb_http_request *req, json_t *body);
    /* Borrowed reference to the JSON body set earlier, or NULL. */
    json_t *(*req_get_json)(pb_http_request *req);
    /* Sets a raw body (copied) with its content type. */
    int (*req_set_body)(pb_http_request *req, const void *data, size_t len, const char *content_type);

    /* Response readers. */
    int (*resp_status)(const pb_http_response *resp);
    /* Case-insensitive lookup; borrowed, NULL when absent. */
    const char *(*resp_header)(const pb_http_response *resp, const char *name);
    /* Borrowed body bytes (NUL-terminated for convenience) and length. */
    const char *(*resp_body)(const pb_http_response *resp, size_t *len);
    /* Borrowed parsed JSON body, NULL when the body is not JSON. */
    json_t *(*resp_json)(const pb_http_response *resp);

    /* Helpers. Returned strings are owned by the caller: free with str_free. */
    char *(*url_escape)(const char *s);
    char *(*base64_encode)(const void *data, size_t len);
    void (*str_free)(char *s);
    /* Formats into a caller buffer; returns PB_EINVAL when it does not fit. */
    int (*str_format)(char *out, size_t out_len, const char *fmt, ...) PB_PRINTF(3, 4);
    /* Unix ms from an HTTP date (RFC 7231 forms), -1 when unparseable. */
    int64_t (*parse_http_date)(const char *s);
    /* Current time in unix ms (injectable by the core in tests). */
    int64_t (*now_ms)(void);
    /* Borrowed providerMetadata.<key>.value string, or NULL. */
    const char *(*cred_meta)(const struct pb_credentials *cred, const char *key);
};

/* ---- The vtable a plugin exports --------------------------------------- */

struct pb_plugin {
    /* Read by the loader before anything else. */
    uint32_t abi_major;        /* PB_PLUGIN_ABI_MAJOR */
    uint32_t abi_minor;        /* PB_PLUGIN_ABI_MINOR */
    size_t struct_size;        /* sizeof(struct pb_plugin) as compiled */

    const char *name;          /* plugin name referenced by `plugin:` in config */
    const char *version;       /* free-form plugin version */
    const char *description;

    /* NULL-terminated list of option keys this plugin accepts in its
     * provider block (besides `plugin`); the core reports any other key with
     * file:line:column. NULL means the plugin validates options in init. */
    const char *const *config_keys;

    /* Largest batch the provider accepts; 0 when batch is unsupported. */
    size_t max_batch_size;

    /* Required. Creates per-provider state. `svc` stays valid until fini.
     * On failure set `err` (it becomes the loader's message) and return <0. */
    int (*init)(const struct pb_core_services *svc, const struct pb_plugin_config *cfg,
                void **state, pb_error *err);
    /* Required. Frees what init made. `state` may be NULL. */
    void (*fini)(void *state);

    /* Required. Writes the base URL (scheme://host[:port][/prefix], no
     * trailing slash) for this connection into `out`. */
    int (*base_url)(void *state, const struct pb_credentials *cred, char *out, size_t out_len,
                    pb_error *err);

    /* Required. Adds the provider credentials (header or query) to `req`. */
    int (*apply_credentials)(void *state, const struct pb_credentials *cred, pb_http_request *req,
                             pb_error *err);

    /* Optional: OAuth2 token refresh (and client-credentials grants). */
    int (*build_token_refresh)(void *state, const struct pb_credentials *cred, pb_http_request *req,
                               pb_error *err);
    /* Parses a token endpoint response (refresh or code exchange). On success
     * *out is a new reference to {"access_token": str, "refresh_token"?: str,
     * "expires_in"?: int seconds, "scopes"?: str, "metadata"?: {k: str}}. */
    int (*parse_token_response)(void *state, const pb_http_response *resp, json_t **out,
                                pb_error *err);

    /* Optional: OAuth2 authorization-code flow. */
    int (*authorize_url)(void *state, const struct pb_oauth_params *params, char *out,
                         size_t out_len, pb_error *err);
    int (*build_code_exchange)(void *state, const struct pb_oauth_params *params, const char *code,
                               pb_http_request *req, pb_error *err);

    /* Optional: single record create/update. decode_write sets *out to a new
     * reference: {"success": bool, "recordId"?: str, "data"?: {...},
     * "errors"?: [{"message": str, ...}]}. */
    int (*encode_write)(void *state, const struct pb_write *w, pb_http_request *req,
                        pb_error *err);
    int (*decode_write)(void *state, const struct pb_write *w, const pb_http_response *resp,
                        json_t **out, pb_error *err);

    /* Optional: batch create/update (needs max_batch_size > 0). decode_batch
     * sets *out to a new reference to an array with one entry per input item,
     * in input order, each shaped like decode_write's result. */
    int (*encode_batch)(void *state, const struct pb_batch *b, pb_http_request *req,
                        pb_error *err);
    int (*decode_batch)(void *state, const struct pb_batch *b, const pb_http_response *resp,
                        json_t **out, pb_error *err);

    /* Optional: delete one record. The response is read by decode_write. */
    int (*encode_delete)(void *state, const struct pb_write *w, pb_http_request *req,
                         pb_error *err);

    /* Optional: associations. Called after encode_write/encode_batch with
     * the same request; merges `associations` (borrowed, Write API shape)
     * into the JSON body in the provider's shape. */
    int (*encode_associations)(void *state, const struct pb_write *w, const json_t *associations,
                               pb_http_request *req, pb_error *err);

    /* Optional: header passthrough. Returns 1 when a caller-supplied header
     * may be forwarded on a write call, 0 otherwise. */
    int (*header_allowed)(void *state, const char *name);

    /* Optional: refine the core's default classification of a response. */
    void (*classify)(void *state, const pb_http_response *resp, struct pb_classification *out);

    /* ABI 1.1. Optional: the current values of some fields of one record, so
     * the core can honour writeOnUpdate: ifEmpty. encode_read builds the
     * request for record w->record_id of w->object asking for at least the
     * provider fields in `fields` (borrowed array of strings). decode_read
     * sets *out to a new reference to {field: value} (absent or null: no
     * value), or NULL when the record does not exist; PB_EPROVIDER when the
     * answer cannot be read. Without these slots such an update is refused. */
    int (*encode_read)(void *state, const struct pb_write *w, const json_t *fields,
                       pb_http_request *req, pb_error *err);
    int (*decode_read)(void *state, const struct pb_write *w, const pb_http_response *resp,
                       json_t **out, pb_error *err);
    /* ABI 1.1. Optional: the same for an update batch in one call; *out is an
     * array in input order of decode_read's results (null: no such record).
     * Without them an update batch (or auto batch) with such fields is
     * refused. */
    int (*encode_read_batch)(void *state, const struct pb_batch *b, const json_t *fields,
                             pb_http_request *req, pb_error *err);
    int (*decode_read_batch)(void *state, const struct pb_batch *b, const pb_http_response *resp,
                             json_t **out, pb_error *err);
};

/* The one exported symbol. */
typedef const struct pb_plugin *(*pb_plugin_entry_fn)(void);

/* Declares the entry point: PB_PLUGIN_DEFINE(my_plugin_vtable) */
#define PB_PLUGIN_DEFINE(vtable) \
    PB_PLUGIN_EXPORT const struct pb_plugin *pb_plugin_entry(void); \
    PB_PLUGIN_EXPORT const struct pb_plugin *pb_plugin_entry(void) { return &(vtable); }

/* Initializer for the fixed head of the vtable; every other slot is NULL
 * unless the plugin names it. */
#define PB_PLUGIN_HEAD \
    .abi_major = PB_PLUGIN_ABI_MAJOR, .abi_minor = PB_PLUGIN_ABI_MINOR, \
    .struct_size = sizeof(struct pb_plugin)

#ifdef __cplusplus
}
#endif
#endif /* PLUGBOARD_PLUGIN_H */
