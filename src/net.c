/* net.c — libcurl as the transport (NOTES.md): CURLOPT_CONNECT_ONLY does
 * the connect, TLS or STARTTLS, certificate checks and the login; then
 * curl_easy_send/curl_easy_recv carry the protocol engine's bytes.
 * Must not: speak IMAP or POP3 itself, log secrets, wait without bound. */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <curl/curl.h>
#include <glib.h>
#include "log.h"
#include "net.h"
#include "secret.h"
#include "stats.h"

struct net_conn {
	CURL *curl;
	curl_socket_t sock;
	int timeout_ms;
	gint64 deadline;  /* monotonic µs an operation must end by; 0: none */
	GString *login_reply;/* the server's lines since the client's last
	                        one at the login: its answer to it */
	int login_reply_cut; /* more than NET_LOGIN_REPLY_MAX of them */
};

void net_global_init(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

void net_global_cleanup(void)
{
	curl_global_cleanup();
}

static const char *net_default_port(const struct mf_config *cfg)
{
	if (cfg->protocol == MF_PROTO_IMAP)
		return cfg->tls == MF_TLS_IMPLICIT ? "993" : "143";
	return cfg->tls == MF_TLS_IMPLICIT ? "995" : "110";
}

static enum mf_status net_status_from_curl(CURLcode rc)
{
	switch (rc) {
	case CURLE_LOGIN_DENIED:
		return MF_ERR_AUTH;
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CIPHER:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_USE_SSL_FAILED:
	case CURLE_SSL_ISSUER_ERROR:
		return MF_ERR_TLS;
	case CURLE_OPERATION_TIMEDOUT:
		return MF_ERR_TIMEOUT;
	default:
		return MF_ERR_IO;
	}
}

#define NET_LOGIN_REPLY_MAX ((size_t)64 * 1024)

/* Only curl's informational text reaches the log: its data and header
 * traces would carry the AUTHENTICATE exchange. The server's lines since
 * the client's last line are kept (never the client's, which hold the
 * password): the login's answer, which may name the capabilities after
 * it. */
static int net_curl_trace(CURL *h, curl_infotype type, char *data, size_t size, void *ud)
{
	struct net_conn *c = ud;

	if (type == CURLINFO_TEXT && log_debug_enabled()) {
		while (size > 0 && (data[size - 1] == '\n' || data[size - 1] == '\r'))
			size--;
		log_debug("curl: %.*s", (int)size, data);
	} else if (type == CURLINFO_HEADER_OUT) {
		g_string_truncate(c->login_reply, 0);
		c->login_reply_cut = 0;
	} else if (type == CURLINFO_HEADER_IN && size > 0) {
		if (c->login_reply->len + size + 2 > NET_LOGIN_REPLY_MAX) {
			c->login_reply_cut = 1;
		} else {
			g_string_append_len(c->login_reply, data, (gssize)size);
			if (data[size - 1] != '\n')
				g_string_append(c->login_reply, "\r\n");
		}
	}
	return 0;
}

enum mf_status net_connect(const struct mf_config *cfg, struct net_conn **out, char **err)
{
	char errbuf[CURL_ERROR_SIZE] = "";
	struct net_conn *c = g_new0(struct net_conn, 1);
	const char *scheme;
	char *url = NULL, *token = NULL;
	enum mf_status st = MF_OK;
	CURLcode rc;
	int login_timeout = cfg->timeout < 15 ? cfg->timeout : 15;

	*out = NULL;
	if (cfg->protocol == MF_PROTO_IMAP)
		scheme = cfg->tls == MF_TLS_IMPLICIT ? "imaps" : "imap";
	else
		scheme = cfg->tls == MF_TLS_IMPLICIT ? "pop3s" : "pop3";
	if (cfg->port)
		url = g_strdup_printf("%s://%s:%d/", scheme, cfg->host, cfg->port);
	else
		url = g_strdup_printf("%s://%s:%s/", scheme, cfg->host, net_default_port(cfg));

	c->timeout_ms = cfg->timeout * 1000;
	c->login_reply = g_string_new(NULL);
	c->curl = curl_easy_init();
	if (!c->curl) {
		st = MF_ERR_NOMEM;
		*err = g_strdup("cannot initialise libcurl");
		goto out;
	}
	curl_easy_setopt(c->curl, CURLOPT_URL, url);
	curl_easy_setopt(c->curl, CURLOPT_CONNECT_ONLY, 1L);
	curl_easy_setopt(c->curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c->curl, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(c->curl, CURLOPT_CONNECTTIMEOUT, (long)(login_timeout < 10 ? login_timeout : 10));
	curl_easy_setopt(c->curl, CURLOPT_TIMEOUT, (long)login_timeout);
	curl_easy_setopt(c->curl, CURLOPT_USE_SSL,
	                 cfg->tls == MF_TLS_NONE ? (long)CURLUSESSL_NONE : (long)CURLUSESSL_ALL);
	if (cfg->cafile)
		curl_easy_setopt(c->curl, CURLOPT_CAINFO, cfg->cafile);
	if (cfg->insecure) {
		curl_easy_setopt(c->curl, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(c->curl, CURLOPT_SSL_VERIFYHOST, 0L);
	}
	if (cfg->user)
		curl_easy_setopt(c->curl, CURLOPT_USERNAME, cfg->user);
	if (cfg->oauth_command) {
		token = secret_from_command(cfg->oauth_command, login_timeout, err);
		if (!token) {
			char *why = *err;
			*err = g_strdup_printf("oauth_command: %s", why);
			g_free(why);
			st = MF_ERR_AUTH;
			goto out;
		}
		curl_easy_setopt(c->curl, CURLOPT_XOAUTH2_BEARER, token);
		curl_easy_setopt(c->curl, CURLOPT_LOGIN_OPTIONS, "AUTH=XOAUTH2");
	} else if (cfg->password) {
		curl_easy_setopt(c->curl, CURLOPT_PASSWORD, cfg->password);
	} else {
		curl_easy_setopt(c->curl, CURLOPT_NETRC, (long)CURL_NETRC_REQUIRED);
	}
	curl_easy_setopt(c->curl, CURLOPT_DEBUGFUNCTION, net_curl_trace);
	curl_easy_setopt(c->curl, CURLOPT_DEBUGDATA, c);
	curl_easy_setopt(c->curl, CURLOPT_VERBOSE, 1L);

	rc = curl_easy_perform(c->curl);
	if (!log_debug_enabled())
		curl_easy_setopt(c->curl, CURLOPT_VERBOSE, 0L);
	/* The token and password must not stay in the handle's copies. */
	curl_easy_setopt(c->curl, CURLOPT_PASSWORD, "");
	curl_easy_setopt(c->curl, CURLOPT_XOAUTH2_BEARER, "");
	if (rc != CURLE_OK) {
		st = net_status_from_curl(rc);
		if (st == MF_ERR_AUTH)
			*err = g_strdup_printf("login failed for %s@%s (%s)",
			                       cfg->user ? cfg->user : "(netrc user)", cfg->host,
			                       cfg->protocol == MF_PROTO_POP3
			                       ? "wrong user name or password, or the mailbox is in use by another POP3 client?"
			                       : "wrong user name or password?");
		else if (rc == CURLE_USE_SSL_FAILED)
			*err = g_strdup_printf("%s does not offer %s (use %s://, or -o tls=none to send the password in clear)",
			                       cfg->host, cfg->protocol == MF_PROTO_POP3 ? "STLS" : "STARTTLS",
			                       cfg->protocol == MF_PROTO_POP3 ? "pop3s" : "imaps");
		else if (st == MF_ERR_TLS)
			*err = g_strdup_printf("TLS with %s failed: %s (use -o cafile=FILE to trust a CA)",
			                       cfg->host, errbuf[0] ? errbuf : curl_easy_strerror(rc));
		else
			*err = g_strdup_printf("cannot connect to %s: %s", cfg->host,
			                       errbuf[0] ? errbuf : curl_easy_strerror(rc));
		goto out;
	}
	rc = curl_easy_getinfo(c->curl, CURLINFO_ACTIVESOCKET, &c->sock);
	if (rc != CURLE_OK || c->sock == CURL_SOCKET_BAD) {
		st = MF_ERR_IO;
		*err = g_strdup("libcurl gave no socket");
		goto out;
	}
	curl_easy_setopt(c->curl, CURLOPT_ERRORBUFFER, NULL);
	stats_add(connections_open, 1);
	*out = c;
	c = NULL;
out:
	if (c) {
		if (c->curl) {
			curl_easy_setopt(c->curl, CURLOPT_ERRORBUFFER, NULL);
			curl_easy_cleanup(c->curl);
		}
		g_string_free(c->login_reply, TRUE);
		g_free(c);
	}
	secret_free(token);
	g_free(url);
	return st;
}

void net_set_deadline(struct net_conn *c, gint64 deadline)
{
	c->deadline = deadline;
}

gint64 net_get_deadline(const struct net_conn *c)
{
	return c->deadline;
}

gint64 net_deadline_from_now(const struct net_conn *c)
{
	return g_get_monotonic_time() + (gint64)c->timeout_ms * 1000;
}

/* Waits for the socket: at most timeout, and never past the deadline,
 * however the bytes trickle in. */
static enum mf_status net_wait(struct net_conn *c, short events)
{
	struct pollfd pfd = { .fd = c->sock, .events = events };
	int rc;

	do {
		int wait_ms = c->timeout_ms;
		if (c->deadline) {
			gint64 left = (c->deadline - g_get_monotonic_time() + 999) / 1000;
			if (left <= 0)
				return MF_ERR_TIMEOUT;
			if (left < wait_ms)
				wait_ms = (int)left;
		}
		rc = poll(&pfd, 1, wait_ms);
	} while (rc < 0 && errno == EINTR);
	if (rc == 0)
		return MF_ERR_TIMEOUT;
	if (rc < 0)
		return MF_ERR_IO;
	return MF_OK;
}

enum mf_status net_send(struct net_conn *c, const void *data, size_t len)
{
	const char *p = data;

	while (len > 0) {
		size_t sent = 0;
		CURLcode rc = curl_easy_send(c->curl, p, len, &sent);
		if (rc == CURLE_AGAIN) {
			enum mf_status st = net_wait(c, POLLOUT);
			if (st != MF_OK)
				return st;
			continue;
		}
		if (rc != CURLE_OK)
			return MF_ERR_IO;
		p += sent;
		len -= sent;
		stats_add(bytes_sent, sent);
	}
	return MF_OK;
}

enum mf_status net_recv(struct net_conn *c, void *buf, size_t cap, size_t *got)
{
	for (;;) {
		size_t n = 0;
		/* Read first, poll only on CURLE_AGAIN: TLS may hold decrypted bytes. */
		CURLcode rc = curl_easy_recv(c->curl, buf, cap, &n);
		if (rc == CURLE_AGAIN) {
			enum mf_status st = net_wait(c, POLLIN);
			if (st != MF_OK)
				return st;
			continue;
		}
		if (rc != CURLE_OK || n == 0)
			return MF_ERR_IO;
		stats_add(bytes_received, n);
		*got = n;
		return MF_OK;
	}
}

int net_peek_closed(struct net_conn *c, void *buf, size_t cap, size_t *got)
{
	struct pollfd pfd = { .fd = c->sock, .events = POLLIN };
	size_t n = 0;
	CURLcode rc;

	*got = 0;
	if (poll(&pfd, 1, 0) <= 0)
		return 0;  /* nothing waiting: alive as far as anyone can tell */
	rc = curl_easy_recv(c->curl, buf, cap, &n);
	if (rc == CURLE_AGAIN)
		return 0;
	if (rc != CURLE_OK || n == 0)
		return 1;
	stats_add(bytes_received, n);
	*got = n;
	return 0;
}

int net_socket(const struct net_conn *c)
{
	return c ? (int)c->sock : -1;
}

void net_close(struct net_conn *c)
{
	if (!c)
		return;
	curl_easy_cleanup(c->curl);
	stats_sub(connections_open, 1);
	g_string_free(c->login_reply, TRUE);
	g_free(c);
}

const char *net_login_reply(const struct net_conn *c)
{
	return c->login_reply->len > 0 && !c->login_reply_cut ? c->login_reply->str : NULL;
}
