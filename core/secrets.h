/* Secrets with libsodium: the master key file, secretbox for credentials at
 * rest, keyed hashes for API keys, random ids. */
#ifndef PB_CORE_SECRETS_H
#define PB_CORE_SECRETS_H
#include <stddef.h>

/* Loads the 32-byte master key, creating it (mode 0600, directory 0700)
 * when absent. Refuses a key file readable by group or others. */
int pb_secrets_init(const char *master_key_file, char *err, size_t err_len);
void pb_secrets_shutdown(void);
/* Encrypts `plain` (len bytes) into a base64 string: nonce || box.
 * Free the result with free(). */
char *pb_secret_seal(const void *plain, size_t len);
/* Decrypts what pb_secret_seal made; NULL when forged or corrupt. The
 * result is NUL-terminated, *len (may be NULL) gets its length; free with
 * pb_secret_free. */
char *pb_secret_unseal(const char *sealed, size_t *len);
void pb_secret_free(char *plain);
/* Keyed BLAKE2b of an API key, lowercase hex into out (65 bytes). */
void pb_key_hash(const char *api_key, char out[65]);
/* Constant-time comparison of two equal-length strings; 1 when equal. */
int pb_secret_equal(const char *a, const char *b);
/* A random id "<prefix><26 base32 chars>" into out (size >= prefix+27). */
void pb_random_id(const char *prefix, char *out, size_t out_len);
/* A new API key "pbk_<43 url-safe base64 chars>"; free with free(). */
char *pb_api_key_new(void);
#endif
