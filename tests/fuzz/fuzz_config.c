/* Fuzzes plugboard.yaml loading (core/config.h pb_config_load). The
 * loader takes a path, so each input is written to one memfd created at
 * start-up and loaded through /proc/self/fd/N. */
#include "fuzz.h"

#include <sys/mman.h>
#include <unistd.h>

#include "config.h"

static int fd = -1;
static char path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fd = memfd_create("plugboard.yaml", MFD_CLOEXEC);
    if (fd < 0) {
        perror("fuzz_config: memfd_create");
        abort();
    }
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    /* ${NAME} in the inputs resolves to something. */
    setenv("PB_FUZZ_SECRET", "s3cret", 1);
    setenv("PB_FUZZ_EMPTY", "", 1);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (fd < 0)
        LLVMFuzzerInitialize(NULL, NULL);
    if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != (ssize_t)size)
        abort();
    struct pb_config *cfg = NULL;
    char err[512];
    int rc = pb_config_load(path, &cfg, err, sizeof err);
    if (rc == 0) {
        FUZZ_CHECK(cfg != NULL);
        FUZZ_CHECK(cfg->listen_host && cfg->public_url && cfg->store && cfg->data_dir &&
                   cfg->master_key_file && cfg->plugin_dir && cfg->log_level && cfg->log_format);
        for (size_t i = 0; i < cfg->n_providers; i++) {
            const struct pb_provider_cfg *p = &cfg->providers[i];
            FUZZ_CHECK(p->name && p->plugin);
            FUZZ_CHECK(json_is_object(p->options));
            FUZZ_CHECK(pb_config_provider(cfg, p->name) != NULL);
        }
        for (size_t i = 0; i < cfg->egress.n_connect_to; i++)
            FUZZ_CHECK(cfg->egress.connect_to[i] != NULL);
        FUZZ_CHECK(cfg->egress.connect_to[cfg->egress.n_connect_to] == NULL);
        pb_config_free(cfg);
    } else {
        FUZZ_CHECK(cfg == NULL);
        /* One line naming the file. */
        FUZZ_CHECK(strncmp(err, path, strlen(path)) == 0);
        FUZZ_CHECK(strchr(err, '\n') == NULL && strchr(err, '\r') == NULL);
    }
    return 0;
}
