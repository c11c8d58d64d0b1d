/* The project's fake HubSpot (tests/fake) as a standalone loopback server for
 * scripts/bench: the token endpoint for the refresh benchmark and the CRM
 * API for the Write API benchmarks.
 *
 *   fakehub ACCESS_TOKEN REFRESH_TOKEN
 *
 * Prints "READY http://127.0.0.1:PORT" once it listens, then answers one line
 * on stdout for each command line on stdin:
 *   tokens                  calls that reached the token endpoint
 *   count METHOD PREFIX     recorded requests (METHOD or PREFIX "-" = any)
 *   records OBJECT          records the fake stores for that object
 *   reset                   forget recorded requests and the token call count
 *   delay MS                the next token calls each wait MS first ("delay 0" stops it)
 *   quit                    (or end of input) stop
 * scripts/bench compiles it with the fake sources in tests/fake. */
#include "fake/fake.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: fakehub ACCESS_TOKEN REFRESH_TOKEN\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct fake *f = fake_start(FAKE_HUBSPOT, NULL);
    if (!f)
        return 1;
    fake_add_token(f, argv[1], argv[2], 0);
    printf("READY %s\n", fake_base_url(f));
    fflush(stdout);
    char line[512];
    while (fgets(line, sizeof line, stdin)) {
        char a[128] = "", b[256] = "";
        line[strcspn(line, "\r\n")] = '\0';
        if (strcmp(line, "tokens") == 0) {
            printf("%zu\n", fake_token_calls(f));
        } else if (sscanf(line, "count %127s %255s", a, b) == 2) {
            printf("%zu\n", fake_count(f, strcmp(a, "-") ? a : NULL, strcmp(b, "-") ? b : NULL));
        } else if (sscanf(line, "records %127s", a) == 1) {
            printf("%zu\n", fake_hubspot_count(f, a));
        } else if (strcmp(line, "reset") == 0) {
            fake_reset(f);
            printf("ok\n");
        } else if (sscanf(line, "delay %127s", a) == 1) {
            struct fake_fault fault = {.delay_ms = atoi(a)};
            fake_reset(f);
            if (fault.delay_ms > 0)
                fake_inject(f, "POST", "/oauth/v1/token", &fault, -1);
            printf("ok\n");
        } else if (strcmp(line, "quit") == 0) {
            break;
        } else {
            printf("? %s\n", line);
        }
        fflush(stdout);
    }
    fake_stop(f);
    return 0;
}
