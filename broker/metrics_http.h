/* `coordd --metrics-listen ADDR:PORT`: the metrics text served over
 * HTTP/1.0 inside the broker's loop, never blocking it (metrics_http.c). */
#ifndef COORD_METRICS_HTTP_H
#define COORD_METRICS_HTTP_H

#include <stddef.h>

struct broker;

/* Checks and keeps the address of --metrics-listen: a numeric IPv4
 * address or a bracketed IPv6 one, a colon and a port (0: any free one).
 * Returns 0, or -1 (not such an address). */
int metrics_http_parse(const char *addr);

/* Listens on the kept address, if any, in b's loop.  Returns 0 or
 * COORD_ESYS with the reason in err. */
int metrics_http_listen(struct broker *b, char *err, size_t errsize);

/* Closes the listener and every connection. */
void metrics_http_close(void);

#endif
