/* One proxied upstream transfer driven from the calling thread with a
 * private curl multi handle: the request body is fed as it arrives and the
 * response body is pulled as the client can take it, so memory stays
 * bounded whatever the body sizes. */
#ifndef PB_CORE_STREAM_H
#define PB_CORE_STREAM_H
#include <stddef.h>
#include <stdint.h>
#include "egress.h"
#include "http.h"

struct pb_stream;

struct pb_stream_opts {
    const char *method;
    const char *url;                  /* absolute */
    const struct pb_header *headers;  /* sent as given */
    size_t n_headers;
    int has_body;                     /* the caller sends a body */
    int64_t body_len;                 /* -1 unknown (chunked) */
    int decompress;                   /* let curl decode Content-Encoding */
};

/* Starts the transfer (connect, send headers). Returns NULL only on
 * allocation failure; errors surface through pb_stream_wait_headers. */
struct pb_stream *pb_stream_start(struct pb_egress *e, const struct pb_stream_opts *o);
/* Hands request body bytes to the transfer, returning once they are taken
 * (or the transfer ended). -1 when the transfer has failed. */
int pb_stream_feed(struct pb_stream *s, const char *data, size_t len);
/* Marks the request body complete and waits for the response head.
 * Returns 0 with the status and headers available, -1 on failure with
 * *res describing it. */
int pb_stream_wait_headers(struct pb_stream *s, struct pb_egress_result *res);
int pb_stream_status(const struct pb_stream *s);
/* Response headers as received (after the last 1xx). */
const struct pb_header *pb_stream_headers(const struct pb_stream *s, size_t *n);
const char *pb_stream_header(const struct pb_stream *s, const char *name);
/* Content length announced by the response, -1 when unknown. */
int64_t pb_stream_content_length(const struct pb_stream *s);
/* Copies up to max body bytes into buf: >0 bytes, 0 at the end, -1 when
 * the transfer failed midway. */
long pb_stream_read(struct pb_stream *s, char *buf, size_t max);
/* Reads the whole remaining body into a response object (for small error
 * bodies a plugin must classify); at most max bytes are kept. */
struct pb_http_response *pb_stream_buffer(struct pb_stream *s, size_t max);
void pb_stream_counts(const struct pb_stream *s, size_t *bytes_out, size_t *bytes_in);
void pb_stream_free(struct pb_stream *s);
#endif
