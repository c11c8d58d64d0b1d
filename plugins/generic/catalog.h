/*
 * Reading a providers.yaml catalog (the format the Nango project publishes)
 * for the generic plugin: one streaming libyaml pass at init, after which
 * only the enabled entry, merged over its alias chain, is kept.
 */
#ifndef PB_GENERIC_CATALOG_H
#define PB_GENERIC_CATALOG_H
#include <plugboard/plugin.h>
#include <stdio.h>

/* 1 when plugboard can enable an entry with this auth_mode: API_KEY, BASIC,
 * OAUTH2, OAUTH2_CC or NONE. */
int gen_mode_supported(const char *mode);

/* Reads the catalog from `fp` (`path` is only for messages) and sets *out to
 * a new reference to entry `name`: the fields of its alias chain, the
 * furthest first, each overlaid (mappings merged key by key) by the next and
 * finally by the entry's own, without `alias`. Only the keys the generic
 * plugin reads are kept (display_name, auth_mode, proxy.{base_url, headers,
 * query, retry}, the OAuth URLs and parameters, scopes, token response
 * metadata); unknown keys are skipped. Scalars become JSON strings (or null).
 * Other entries whose auth_mode plugboard does not support are logged as
 * warnings through svc->log, naming entry and mode. On failure returns
 * PB_ECONFIG or PB_ENOMEM with a one-line message in msg that starts with
 * "catalog <path>". */
int gen_catalog_load(const struct pb_core_services *svc, const char *provider, const char *path,
                     FILE *fp, const char *name, json_t **out, char *msg, size_t msg_len);
#endif
