/* Secrets with libsodium: the master key file, secretbox for credentials at
 * rest, keyed hashes for API keys, random ids.
 *
 * The master key is never used directly: two subkeys are derived from it
 * (crypto_kdf, one per purpose) so that the secretbox key and the API-key
 * hashing key are independent. All three live in one sodium_malloc'd,
 * read-only block; after pb_secrets_init everything here only reads it, so
 * the functions are safe to call from many threads at once. */
#include "secrets.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sodium.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MASTER_KEY_BYTES 32
#define B64_VARIANT sodium_base64_VARIANT_URLSAFE_NO_PADDING

_Static_assert(crypto_secretbox_KEYBYTES == MASTER_KEY_BYTES, "secretbox key size");
_Static_assert(crypto_kdf_KEYBYTES == MASTER_KEY_BYTES, "kdf key size");

struct pb_keys {
    unsigned char master[MASTER_KEY_BYTES];
    unsigned char box[crypto_secretbox_KEYBYTES];
    unsigned char hash[crypto_generichash_KEYBYTES];
};

static struct pb_keys *g_keys;

/* Length header in front of unsealed plaintext so pb_secret_free can wipe
 * exactly what was allocated (the plaintext may contain NUL bytes). */
union plain_hdr {
    size_t n;
    max_align_t align;
};

static pthread_once_t sodium_once = PTHREAD_ONCE_INIT;
static int sodium_ready;

static void sodium_start(void)
{
    sodium_ready = sodium_init() >= 0;
}

static int ensure_sodium(void)
{
    pthread_once(&sodium_once, sodium_start);
    return sodium_ready;
}

__attribute__((format(printf, 3, 4)))
static void seterr(char *err, size_t err_len, const char *fmt, ...)
{
    if (!err || !err_len)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}

/* Creates every missing directory above `path` with mode 0700. */
static int make_parent_dirs(const char *path, char *err, size_t err_len)
{
    char *dir = strdup(path);
    if (!dir) {
        seterr(err, err_len, "out of memory");
        return -1;
    }
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir) {
        free(dir);
        return 0;
    }
    *slash = '\0';
    for (char *p = dir + 1; ; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char saved = *p;
        *p = '\0';
        if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
            seterr(err, err_len, "cannot create directory %s for master key file %s: %s", dir,
                   path, strerror(errno));
            free(dir);
            return -1;
        }
        *p = saved;
        if (saved == '\0')
            break;
    }
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        seterr(err, err_len, "cannot use %s as the directory of master key file %s: not a directory",
               dir, path);
        free(dir);
        return -1;
    }
    free(dir);
    return 0;
}

static int write_all(int fd, const unsigned char *buf, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, buf, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        buf += w;
        len -= (size_t)w;
    }
    return 0;
}

static int read_all(int fd, unsigned char *buf, size_t len)
{
    while (len > 0) {
        ssize_t r = read(fd, buf, len);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (r == 0)
            return -2;
        buf += r;
        len -= (size_t)r;
    }
    return 0;
}

static void sync_parent_dir(const char *path)
{
    char *dir = strdup(path);
    if (!dir)
        return;
    char *slash = strrchr(dir, '/');
    const char *d = ".";
    if (slash == dir)
        d = "/";
    else if (slash) {
        *slash = '\0';
        d = dir;
    }
    int fd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(dir);
}

/* Writes a fresh key with O_EXCL. Returns 0 on success or when another
 * starter created the file first (EEXIST), -1 otherwise. */
static int write_new_key_exclusive(const char *path, const unsigned char *key, char *err,
                                   size_t err_len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        if (errno == EEXIST)
            return 0;
        seterr(err, err_len, "cannot create master key file %s: %s", path, strerror(errno));
        return -1;
    }
    int rc = 0;
    if (fchmod(fd, 0600) != 0 || write_all(fd, key, MASTER_KEY_BYTES) != 0 || fsync(fd) != 0) {
        seterr(err, err_len, "cannot write master key file %s: %s", path, strerror(errno));
        rc = -1;
    }
    if (close(fd) != 0 && rc == 0) {
        seterr(err, err_len, "cannot write master key file %s: %s", path, strerror(errno));
        rc = -1;
    }
    if (rc != 0)
        unlink(path);
    return rc;
}

/* Creates the key file so that no reader ever sees it half written: the key
 * goes to an O_EXCL temporary file beside it, which is then hard-linked into
 * place; link() fails with EEXIST when another starter won the race, and
 * then its key is used. Where hard links are unsupported, the key is written
 * directly with O_EXCL. */
static int create_key_file(const char *path, char *err, size_t err_len)
{
    if (make_parent_dirs(path, err, err_len) != 0)
        return -1;

    unsigned char key[MASTER_KEY_BYTES];
    randombytes_buf(key, sizeof key);

    unsigned char rnd[8];
    char hex[2 * sizeof rnd + 1];
    randombytes_buf(rnd, sizeof rnd);
    sodium_bin2hex(hex, sizeof hex, rnd, sizeof rnd);
    size_t tmp_len = strlen(path) + sizeof hex + 8;
    char *tmp = malloc(tmp_len);
    if (!tmp) {
        sodium_memzero(key, sizeof key);
        seterr(err, err_len, "out of memory");
        return -1;
    }
    snprintf(tmp, tmp_len, "%s.tmp-%s", path, hex);

    int rc = -1;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        seterr(err, err_len, "cannot create master key file %s: %s", path, strerror(errno));
        goto out;
    }
    if (fchmod(fd, 0600) != 0 || write_all(fd, key, sizeof key) != 0 || fsync(fd) != 0) {
        seterr(err, err_len, "cannot write master key file %s: %s", path, strerror(errno));
        close(fd);
        unlink(tmp);
        goto out;
    }
    if (close(fd) != 0) {
        seterr(err, err_len, "cannot write master key file %s: %s", path, strerror(errno));
        unlink(tmp);
        goto out;
    }
    if (link(tmp, path) == 0 || errno == EEXIST) {
        rc = 0;
        unlink(tmp);
    } else {
        unlink(tmp);
        rc = write_new_key_exclusive(path, key, err, err_len);
    }
    if (rc == 0)
        sync_parent_dir(path);
out:
    sodium_memzero(key, sizeof key);
    free(tmp);
    return rc;
}

/* Reads and checks the key file into keys->master. */
static int load_key_file(const char *path, struct pb_keys *keys, char *err, size_t err_len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        if (create_key_file(path, err, err_len) != 0)
            return -1;
        fd = open(path, O_RDONLY | O_CLOEXEC);
    }
    if (fd < 0) {
        seterr(err, err_len, "cannot open master key file %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat sb;
    int rc = -1, rr = 0;
    if (fstat(fd, &sb) != 0) {
        seterr(err, err_len, "cannot stat master key file %s: %s", path, strerror(errno));
    } else if (!S_ISREG(sb.st_mode)) {
        seterr(err, err_len, "master key file %s is not a regular file", path);
    } else if (sb.st_mode & (S_IRWXG | S_IRWXO)) {
        seterr(err, err_len,
               "master key file %s has mode %04o: it must not be accessible by group or others "
               "(chmod 600 %s)",
               path, (unsigned)(sb.st_mode & 07777), path);
    } else if (sb.st_size != MASTER_KEY_BYTES) {
        seterr(err, err_len, "master key file %s has %lld bytes: a master key is exactly %d bytes",
               path, (long long)sb.st_size, MASTER_KEY_BYTES);
    } else if ((rr = read_all(fd, keys->master, MASTER_KEY_BYTES)) != 0) {
        seterr(err, err_len, "cannot read master key file %s: %s", path,
               rr == -2 ? "file shrank while reading" : strerror(errno));
    } else {
        rc = 0;
    }
    close(fd);
    return rc;
}

int pb_secrets_init(const char *master_key_file, char *err, size_t err_len)
{
    if (!master_key_file || !*master_key_file) {
        seterr(err, err_len, "no master key file configured");
        return -1;
    }
    if (!ensure_sodium()) {
        seterr(err, err_len, "libsodium failed to initialize");
        return -1;
    }
    struct pb_keys *keys = sodium_malloc(sizeof *keys);
    if (!keys) {
        seterr(err, err_len, "cannot allocate protected memory for the master key");
        return -1;
    }
    if (load_key_file(master_key_file, keys, err, err_len) != 0) {
        sodium_free(keys);
        return -1;
    }
    if (crypto_kdf_derive_from_key(keys->box, sizeof keys->box, 1, "pbsecbox", keys->master) != 0 ||
        crypto_kdf_derive_from_key(keys->hash, sizeof keys->hash, 1, "pbapikey", keys->master) !=
            0) {
        seterr(err, err_len, "cannot derive keys from master key file %s", master_key_file);
        sodium_free(keys);
        return -1;
    }
    sodium_mprotect_readonly(keys);
    struct pb_keys *old = g_keys;
    g_keys = keys;
    if (old)
        sodium_free(old);
    return 0;
}

void pb_secrets_shutdown(void)
{
    struct pb_keys *old = g_keys;
    g_keys = NULL;
    if (old)
        sodium_free(old); /* wipes before unmapping */
}

char *pb_secret_seal(const void *plain, size_t len)
{
    static const unsigned char empty[1];
    const struct pb_keys *k = g_keys;
    if (!k || (!plain && len))
        return NULL;
    if (!plain)
        plain = empty;
    const size_t overhead = crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES;
    if (len > (SIZE_MAX / 4) - overhead)
        return NULL;
    size_t bin_len = overhead + len;
    unsigned char *bin = malloc(bin_len);
    if (!bin)
        return NULL;
    randombytes_buf(bin, crypto_secretbox_NONCEBYTES);
    crypto_secretbox_easy(bin + crypto_secretbox_NONCEBYTES, plain, len, bin, k->box);
    size_t out_len = sodium_base64_ENCODED_LEN(bin_len, B64_VARIANT);
    char *out = malloc(out_len);
    if (out)
        sodium_bin2base64(out, out_len, bin, bin_len, B64_VARIANT);
    free(bin);
    return out;
}

char *pb_secret_unseal(const char *sealed, size_t *len)
{
    const struct pb_keys *k = g_keys;
    if (!k || !sealed)
        return NULL;
    size_t slen = strlen(sealed);
    size_t max_bin = slen / 4 * 3 + 3;
    unsigned char *bin = malloc(max_bin);
    if (!bin)
        return NULL;
    size_t bin_len = 0;
    const size_t overhead = crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES;
    if (sodium_base642bin(bin, max_bin, sealed, slen, NULL, &bin_len, NULL, B64_VARIANT) != 0 ||
        bin_len < overhead) {
        free(bin);
        return NULL;
    }
    size_t plen = bin_len - overhead;
    union plain_hdr *h = malloc(sizeof *h + plen + 1);
    if (!h) {
        free(bin);
        return NULL;
    }
    h->n = plen + 1;
    unsigned char *p = (unsigned char *)(h + 1);
    if (crypto_secretbox_open_easy(p, bin + crypto_secretbox_NONCEBYTES,
                                   bin_len - crypto_secretbox_NONCEBYTES, bin, k->box) != 0) {
        sodium_memzero(h, sizeof *h + plen + 1);
        free(h);
        free(bin);
        return NULL;
    }
    free(bin);
    p[plen] = '\0';
    if (len)
        *len = plen;
    return (char *)p;
}

void pb_secret_free(char *plain)
{
    if (!plain)
        return;
    union plain_hdr *h = (union plain_hdr *)(void *)plain - 1;
    sodium_memzero(h, sizeof *h + h->n);
    free(h);
}

void pb_key_hash(const char *api_key, char out[65])
{
    const struct pb_keys *k = g_keys;
    out[0] = '\0';
    if (!k || !api_key)
        return;
    unsigned char h[32];
    crypto_generichash(h, sizeof h, (const unsigned char *)api_key, strlen(api_key), k->hash,
                       sizeof k->hash);
    sodium_bin2hex(out, 65, h, sizeof h);
}

int pb_secret_equal(const char *a, const char *b)
{
    if (!a || !b)
        return 0;
    size_t n = strlen(a);
    if (strlen(b) != n)
        return 0;
    return sodium_memcmp(a, b, n) == 0;
}

void pb_random_id(const char *prefix, char *out, size_t out_len)
{
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
    if (!out || !out_len)
        return;
    if (!prefix)
        prefix = "";
    size_t pl = strlen(prefix);
    if (out_len < pl + 27) {
        out[0] = '\0';
        return;
    }
    ensure_sodium();
    unsigned char b[16];
    randombytes_buf(b, sizeof b);
    memcpy(out, prefix, pl);
    size_t o = pl;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < sizeof b; i++) {
        acc = ((acc << 8) | b[i]) & 0xfffu;
        bits += 8;
        while (bits >= 5) {
            out[o++] = alphabet[(acc >> (bits - 5)) & 31u];
            bits -= 5;
        }
    }
    if (bits > 0)
        out[o++] = alphabet[(acc << (5 - bits)) & 31u];
    out[o] = '\0';
}

char *pb_api_key_new(void)
{
    ensure_sodium();
    unsigned char r[32];
    randombytes_buf(r, sizeof r);
    size_t b64 = sodium_base64_ENCODED_LEN(sizeof r, B64_VARIANT);
    char *out = malloc(4 + b64);
    if (out) {
        memcpy(out, "pbk_", 4);
        sodium_bin2base64(out + 4, b64, r, sizeof r, B64_VARIANT);
    }
    sodium_memzero(r, sizeof r);
    return out;
}
