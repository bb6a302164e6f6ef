/*
 * kmip_conn.c
 *		One TLS connection to a KMIP server, with a deadline.
 *
 * Connects without blocking, completes a TLS 1.2+ handshake with the client
 * certificate (the server's certificate must chain to the configured CA and
 * name the configured host), sends one request message and reads one
 * response message at a time, refusing an answer larger than the caller's
 * limit from its 8-byte header, before reading it.
 *
 * Invariants: every wait goes through WaitLatchOrSocket with the time left
 * before the deadline set at KmipConnOpen and services interrupts, so a
 * silent server costs at most the timeout and a query cancel ends the wait.
 * At most one connection exists per backend; it lives in static storage so
 * that the caller's PG_FINALLY (or the next KmipConnOpen) can close it
 * whatever happened, ERROR included.  Failures come back as a reason free of
 * host names and paths, and a palloc'd detail for the server log.
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "kmip_conn.h"
#include "kmip_ttlv.h"

/*
 * The connection in progress.  Static so that an ERROR thrown from inside a
 * wait (query cancel) can still close it.
 */
typedef struct KmipConn
{
	int			fd;
	SSL_CTX    *ctx;
	SSL		   *ssl;
	TimestampTz deadline;
} KmipConn;

static KmipConn conn = {-1, NULL, NULL, 0};

/* The server it talks to, for the details of failures. */
static const KmipServer *server = NULL;

void
KmipConnClose(void)
{
	if (conn.ssl != NULL)
	{
		/* No close_notify round trip: the server may be the problem. */
		SSL_free(conn.ssl);
		conn.ssl = NULL;
	}
	if (conn.ctx != NULL)
	{
		SSL_CTX_free(conn.ctx);
		conn.ctx = NULL;
	}
	if (conn.fd >= 0)
	{
		close(conn.fd);
		conn.fd = -1;
	}
	server = NULL;
	ERR_clear_error();
}

/* OpenSSL's queued errors as one line, for the log (palloc'd). */
static char *
OpenSslErrors(void)
{
	StringInfoData buf;
	unsigned long e;

	initStringInfo(&buf);
	while ((e = ERR_get_error()) != 0)
	{
		char		one[256];

		ERR_error_string_n(e, one, sizeof(one));
		if (buf.len > 0)
			appendStringInfoString(&buf, "; ");
		appendStringInfoString(&buf, one);
	}
	if (buf.len == 0)
		appendStringInfoString(&buf, "no OpenSSL error queued");
	return buf.data;
}

/*
 * Wait until the socket is ready for "events" (WL_SOCKET_*), servicing
 * interrupts.  False when the deadline passes first.
 */
static bool
KmipWait(int events)
{
	for (;;)
	{
		long		ms;
		int			rc;

		ms = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), conn.deadline);
		if (ms <= 0)
			return false;
		rc = WaitLatchOrSocket(MyLatch,
							   WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH | events,
							   conn.fd, ms, PG_WAIT_EXTENSION);
		if (rc & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
		}
		if (rc & events)
			return true;
	}
}

/* A non-blocking TCP connection to host:port within the deadline. */
static bool
KmipTcpConnect(KmipFailure *f)
{
	struct addrinfo hints;
	struct addrinfo *res = NULL;
	char		port[16];
	int			rc;
	int			last_errno = 0;
	bool		timed_out = false;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	snprintf(port, sizeof(port), "%d", server->port);
	rc = getaddrinfo(server->host, port, &hints, &res);
	if (rc != 0)
	{
		f->reason = "the KMIP server's host name does not resolve";
		f->detail = psprintf("getaddrinfo(\"%s\"): %s", server->host, gai_strerror(rc));
		return false;
	}

	for (struct addrinfo *ai = res; ai != NULL && !timed_out; ai = ai->ai_next)
	{
		int			fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
								ai->ai_protocol);
		int			one = 1;

		if (fd < 0)
		{
			last_errno = errno;
			continue;
		}
		conn.fd = fd;
		(void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		if (errno == EINPROGRESS)
		{
			if (KmipWait(WL_SOCKET_CONNECTED))
			{
				int			err = 0;
				socklen_t	errlen = sizeof(err);

				if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &errlen) == 0 && err == 0)
					break;
				last_errno = err;
			}
			else
				timed_out = true;
		}
		else
			last_errno = errno;
		close(fd);
		conn.fd = -1;
	}
	freeaddrinfo(res);

	if (conn.fd >= 0)
		return true;
	if (timed_out)
	{
		f->reason = "the KMIP server did not accept a connection within atrest.kmip_timeout";
		f->detail = psprintf("connect to %s:%d timed out after %d s", server->host, server->port, server->timeout);
	}
	else
	{
		f->reason = "the KMIP server refused the connection or cannot be reached";
		f->detail = psprintf("connect to %s:%d: %s", server->host, server->port, strerror(last_errno));
	}
	return false;
}

/* Wait as OpenSSL asks after a WANT_READ/WANT_WRITE; false on timeout. */
static bool
KmipWaitSsl(int sslerr)
{
	return KmipWait(sslerr == SSL_ERROR_WANT_WRITE ? WL_SOCKET_WRITEABLE : WL_SOCKET_READABLE);
}

/* Set up the TLS context: TLS 1.2+, our certificate and key, the CA. */
static bool
KmipTlsContext(KmipFailure *f)
{
	conn.ctx = SSL_CTX_new(TLS_client_method());
	if (conn.ctx == NULL)
	{
		f->reason = "TLS could not be set up";
		f->detail = OpenSslErrors();
		return false;
	}
	SSL_CTX_set_min_proto_version(conn.ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(conn.ctx, SSL_VERIFY_PEER, NULL);
	if (server->ca_cert != NULL && server->ca_cert[0] != '\0')
	{
		if (SSL_CTX_load_verify_locations(conn.ctx, server->ca_cert, NULL) != 1)
		{
			f->reason = "the CA certificate in atrest.kmip_ca_cert cannot be loaded";
			f->detail = psprintf("%s: %s", server->ca_cert, OpenSslErrors());
			return false;
		}
	}
	else if (SSL_CTX_set_default_verify_paths(conn.ctx) != 1)
	{
		f->reason = "the system's CA certificates cannot be loaded";
		f->detail = OpenSslErrors();
		return false;
	}
	if (server->client_cert == NULL || server->client_cert[0] == '\0' ||
		server->client_key == NULL || server->client_key[0] == '\0')
	{
		f->reason = "atrest.kmip_client_cert and atrest.kmip_client_key must be set";
		return false;
	}
	if (SSL_CTX_use_certificate_chain_file(conn.ctx, server->client_cert) != 1)
	{
		f->reason = "the client certificate in atrest.kmip_client_cert cannot be loaded";
		f->detail = psprintf("%s: %s", server->client_cert, OpenSslErrors());
		return false;
	}
	if (SSL_CTX_use_PrivateKey_file(conn.ctx, server->client_key, SSL_FILETYPE_PEM) != 1 ||
		SSL_CTX_check_private_key(conn.ctx) != 1)
	{
		f->reason = "the client key in atrest.kmip_client_key cannot be loaded or does not match the certificate";
		f->detail = psprintf("%s: %s", server->client_key, OpenSslErrors());
		return false;
	}
	return true;
}

/* Connect and complete the TLS handshake, verifying the server's name. */
bool
KmipConnOpen(const KmipServer *srv, KmipFailure *f)
{
	int			rc;
	unsigned char addr[16];
	bool		is_ip;

	KmipConnClose();			/* whatever an earlier call left */
	server = srv;
	if (server->host == NULL || server->host[0] == '\0')
	{
		f->reason = "atrest.kmip_host is not set";
		return false;
	}
	conn.deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), server->timeout * 1000);
	ERR_clear_error();
	if (!KmipTlsContext(f) || !KmipTcpConnect(f))
		return false;

	conn.ssl = SSL_new(conn.ctx);
	if (conn.ssl == NULL || SSL_set_fd(conn.ssl, conn.fd) != 1)
	{
		f->reason = "TLS could not be set up";
		f->detail = OpenSslErrors();
		return false;
	}
	is_ip = inet_pton(AF_INET, server->host, addr) == 1 || inet_pton(AF_INET6, server->host, addr) == 1;
	if (is_ip)
		rc = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(conn.ssl), server->host);
	else
		rc = SSL_set1_host(conn.ssl, server->host) && SSL_set_tlsext_host_name(conn.ssl, server->host);
	if (rc != 1)
	{
		f->reason = "TLS could not be set up";
		f->detail = OpenSslErrors();
		return false;
	}

	for (;;)
	{
		int			err;

		rc = SSL_connect(conn.ssl);
		if (rc == 1)
			return true;
		err = SSL_get_error(conn.ssl, rc);
		if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
		{
			if (!KmipWaitSsl(err))
			{
				f->reason = "the TLS handshake with the KMIP server did not finish within atrest.kmip_timeout";
				f->detail = psprintf("TLS handshake with %s:%d timed out after %d s",
									 server->host, server->port, server->timeout);
				return false;
			}
			continue;
		}
		f->reason = "the TLS handshake with the KMIP server failed (server certificate not trusted, client certificate refused, or no common protocol)";
		if (SSL_get_verify_result(conn.ssl) != X509_V_OK)
			f->detail = psprintf("TLS handshake with %s:%d: server certificate: %s",
								 server->host, server->port,
								 X509_verify_cert_error_string(SSL_get_verify_result(conn.ssl)));
		else
			f->detail = psprintf("TLS handshake with %s:%d: %s", server->host, server->port, OpenSslErrors());
		return false;
	}
}

/* Write all of buf; false (with f set) on failure or timeout. */
static bool
KmipWriteAll(const unsigned char *buf, size_t len, KmipFailure *f)
{
	size_t		done = 0;

	while (done < len)
	{
		int			rc = SSL_write(conn.ssl, buf + done, (int) (len - done));
		int			err;

		if (rc > 0)
		{
			done += rc;
			continue;
		}
		err = SSL_get_error(conn.ssl, rc);
		if ((err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) && KmipWaitSsl(err))
			continue;
		if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
		{
			f->reason = "the KMIP server did not take the request within atrest.kmip_timeout";
			f->detail = psprintf("write to %s:%d timed out", server->host, server->port);
		}
		else
		{
			f->reason = "the connection to the KMIP server failed while sending the request";
			f->detail = psprintf("write to %s:%d: %s", server->host, server->port, OpenSslErrors());
		}
		return false;
	}
	return true;
}

/* Read exactly len bytes; false (with f set) on EOF, failure or timeout. */
static bool
KmipReadAll(unsigned char *buf, size_t len, KmipFailure *f)
{
	size_t		done = 0;

	while (done < len)
	{
		int			rc = SSL_read(conn.ssl, buf + done, (int) (len - done));
		int			err;

		if (rc > 0)
		{
			done += rc;
			continue;
		}
		err = SSL_get_error(conn.ssl, rc);
		if ((err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) && KmipWaitSsl(err))
			continue;
		if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
		{
			f->reason = "the KMIP server did not answer within atrest.kmip_timeout";
			f->detail = psprintf("read from %s:%d timed out after %d s", server->host, server->port, server->timeout);
		}
		else
		{
			/*
			 * A server that rejects our certificate after the handshake
			 * (TLS 1.3) closes here, with an alert in the queue.
			 */
			f->reason = "the KMIP server closed the connection without a complete answer (client certificate refused?)";
			f->detail = psprintf("read from %s:%d after %zu of %zu bytes: %s",
								 server->host, server->port, done, len, OpenSslErrors());
		}
		return false;
	}
	return true;
}

/*
 * Send one request message and read the whole response message, refusing
 * one larger than max_response from its header.  *resp is palloc'd.
 */
bool
KmipConnExchange(const unsigned char *req, size_t reqlen, size_t max_response,
				 unsigned char **resp, size_t *resplen, KmipFailure *f)
{
	unsigned char header[TTLV_HEADER_LEN];
	size_t		total;

	if (!KmipWriteAll(req, reqlen, f) || !KmipReadAll(header, sizeof(header), f))
		return false;
	total = TtlvMessageLength(header);
	if (total == 0 || header[0] != 0x42 || header[1] != 0x00 || header[2] != 0x7B)
	{
		f->reason = "the KMIP server's answer is not a KMIP response message";
		return false;
	}
	if (total > max_response)
	{
		f->reason = "the KMIP server's answer is larger than pg_atrest accepts";
		f->detail = psprintf("response of %zu bytes announced, the limit is %zu", total, max_response);
		return false;
	}
	*resp = palloc(total);
	memcpy(*resp, header, sizeof(header));
	if (!KmipReadAll(*resp + sizeof(header), total - sizeof(header), f))
		return false;
	*resplen = total;
	return true;
}
