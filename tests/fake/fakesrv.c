/* A fake provider as its own process, for shell tests that need an upstream
 * outside the plugboard process (e.g. one that survives `kill -9` of it).
 *
 *   fakesrv hubspot|salesforce|echo [--token ACCESS]...
 *           [--fault METHOD:PATH_PREFIX:STATUS:DELAY_MS:TIMES]...
 *
 * Plain HTTP on 127.0.0.1, port chosen by the kernel and printed as the
 * first line on stdout. Each --token is a valid access token that never
 * expires. Each --fault is fake_inject() (STATUS 0: only the delay; TIMES
 * -1: every matching request). Stays up until stdin closes or SIGTERM or
 * SIGINT arrives, then stops the fake and exits 0. */
#include "fake/fake.h"
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(void)
{
    fprintf(stderr, "usage: fakesrv hubspot|salesforce|echo [--token ACCESS]... "
                    "[--fault METHOD:PATH_PREFIX:STATUS:DELAY_MS:TIMES]...\n");
    exit(2);
}

/* Reads stdin until it closes, then asks main to stop. */
static void *stdin_watch(void *arg)
{
    (void)arg;
    char buf[256];
    while (read(STDIN_FILENO, buf, sizeof buf) > 0)
        ;
    kill(getpid(), SIGTERM);
    return NULL;
}

static int add_fault(struct fake *f, char *spec)
{
    char *parts[5];
    int n = 0;
    for (char *save = NULL, *t = strtok_r(spec, ":", &save); t && n < 5;
         t = strtok_r(NULL, ":", &save))
        parts[n++] = t;
    if (n != 5)
        return -1;
    char *end;
    struct fake_fault ft = {0};
    ft.status = (int)strtol(parts[2], &end, 10);
    if (*end)
        return -1;
    ft.delay_ms = (int)strtol(parts[3], &end, 10);
    if (*end)
        return -1;
    int times = (int)strtol(parts[4], &end, 10);
    if (*end || times == 0)
        return -1;
    fake_inject(f, strcmp(parts[0], "*") == 0 ? NULL : parts[0], parts[1], &ft, times);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        usage();
    enum fake_kind kind;
    if (strcmp(argv[1], "hubspot") == 0)
        kind = FAKE_HUBSPOT;
    else if (strcmp(argv[1], "salesforce") == 0)
        kind = FAKE_SALESFORCE;
    else if (strcmp(argv[1], "echo") == 0)
        kind = FAKE_ECHO;
    else
        usage();
    /* Every thread (the fake's too) inherits the mask; main takes the
     * signals with sigwait. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    struct fake *f = fake_start(kind, NULL);
    if (!f) {
        fprintf(stderr, "fakesrv: cannot start the fake\n");
        return 1;
    }
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--token") == 0 && i + 1 < argc) {
            fake_add_token(f, argv[++i], NULL, 0);
        } else if (strcmp(argv[i], "--fault") == 0 && i + 1 < argc) {
            if (add_fault(f, argv[++i]) != 0) {
                fake_stop(f);
                usage();
            }
        } else {
            fake_stop(f);
            usage();
        }
    }
    printf("%d\n", fake_port(f));
    fflush(stdout);
    pthread_t t;
    if (pthread_create(&t, NULL, stdin_watch, NULL) != 0) {
        fake_stop(f);
        return 1;
    }
    pthread_detach(t);
    int sig;
    sigwait(&set, &sig);
    fake_stop(f);
    return 0;
}
