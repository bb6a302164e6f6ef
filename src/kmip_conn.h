/*
 * kmip_conn.h
 *		One TLS connection to a KMIP server, with a deadline (kmip_conn.c).
 */
#ifndef ATREST_KMIP_CONN_H
#define ATREST_KMIP_CONN_H

/* Where the server is and how to authenticate to it (the provider's settings). */
typedef struct KmipServer
{
	const char *host;
	int			port;
	const char *client_cert;
	const char *client_key;
	const char *ca_cert;		/* NULL or empty: the system's CA certificates */
	int			timeout;		/* seconds, for everything from connect to the last answer */
} KmipServer;

/* Why something failed: a reason anyone may see, details for the server log. */
typedef struct KmipFailure
{
	const char *reason;			/* no host, path or server text */
	char	   *detail;			/* for the server log only, may be NULL */
} KmipFailure;

/*
 * Connect and complete the TLS handshake; the deadline for everything that
 * follows starts now.  srv must stay valid until KmipConnClose.  The
 * caller must call KmipConnClose on every path, ERROR included.
 */
extern bool KmipConnOpen(const KmipServer *srv, KmipFailure *f);

/* Send one request and read one response message (palloc'd) of at most max_response bytes. */
extern bool KmipConnExchange(const unsigned char *req, size_t reqlen, size_t max_response,
							 unsigned char **resp, size_t *resplen, KmipFailure *f);

/* Close the connection, if any. Safe to call at any time. */
extern void KmipConnClose(void);

#endif							/* ATREST_KMIP_CONN_H */
