/* main.c — the command line: parse options, find the password, open the
 * cache, log in and list the folders, and only then mount and daemonize,
 * so that every refusal is one line on stderr and nothing is mounted. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <pwd.h>
#include <unistd.h>
#include <curl/curl.h>
#include <glib.h>
#include "fs.h"
#include <fuse_lowlevel.h>
#include "log.h"
#include "mailbox.h"
#include "mime.h"
#include "net.h"
#include "secret.h"
#include "store.h"
#include "sync.h"

struct main_opts {
	char *password_command, *password_file, *oauth_command;
	char *tls, *cafile, *cache_dir, *cache_size, *names, *trash, *logfile;
	int insecure, mark_seen, show_deleted, offline, readonly, debug;
	int refresh, connections, timeout;
	int show_help, show_version;
	char *url;
	int nonopt;
};

enum { KEY_HELP, KEY_VERSION, KEY_RO };

#define MAIN_OPT(t, p, v) { t, offsetof(struct main_opts, p), v }
static const struct fuse_opt main_opt_spec[] = {
	MAIN_OPT("password_command=%s", password_command, 0),
	MAIN_OPT("password_file=%s", password_file, 0),
	MAIN_OPT("oauth_command=%s", oauth_command, 0),
	MAIN_OPT("tls=%s", tls, 0),
	MAIN_OPT("cafile=%s", cafile, 0),
	MAIN_OPT("insecure", insecure, 1),
	MAIN_OPT("cache_dir=%s", cache_dir, 0),
	MAIN_OPT("cache_size=%s", cache_size, 0),
	MAIN_OPT("names=%s", names, 0),
	MAIN_OPT("mark_seen", mark_seen, 1),
	MAIN_OPT("refresh=%d", refresh, 0),
	MAIN_OPT("connections=%d", connections, 0),
	MAIN_OPT("trash=%s", trash, 0),
	MAIN_OPT("show_deleted", show_deleted, 1),
	MAIN_OPT("offline", offline, 1),
	MAIN_OPT("timeout=%d", timeout, 0),
	MAIN_OPT("logfile=%s", logfile, 0),
	MAIN_OPT("debug", debug, 1),
	FUSE_OPT_KEY("ro", KEY_RO),
	FUSE_OPT_KEY("-h", KEY_HELP),
	FUSE_OPT_KEY("--help", KEY_HELP),
	FUSE_OPT_KEY("-V", KEY_VERSION),
	FUSE_OPT_KEY("--version", KEY_VERSION),
	FUSE_OPT_END
};

static void main_usage(FILE *out)
{
	fprintf(out,
"usage: mailfs [options] URL MOUNTPOINT\n"
"       mailfs --version | --help\n"
"\n"
"Mounts a mail account: folders are directories, messages are files whose\n"
"bodies are fetched when read. URL: imap[s]://[user@]host[:port][/], or\n"
"pop3[s]://[user@]host[:port][/] for a POP3 inbox (mounted read-only)\n"
"\n"
"Login (a password is never taken from the command line):\n"
"    -o password_command=CMD  run CMD with sh -c; first line of output is the password\n"
"    -o password_file=FILE    first line of FILE (must not be group/other readable)\n"
"    MAILFS_PASSWORD=...      the password, from the environment\n"
"    ~/.netrc                 used when none of the above is given\n"
"    -o oauth_command=CMD     CMD prints an OAuth2 access token (XOAUTH2)\n"
"TLS:\n"
"    -o tls=implicit|starttls|none   default: implicit for imaps/pop3s, starttls for imap/pop3\n"
"    -o cafile=FILE           trust this CA\n"
"    -o insecure              do not verify the certificate (warns)\n"
"Cache:\n"
"    -o cache_dir=DIR         default $XDG_CACHE_HOME/mailfs/USER@HOST\n"
"    -o cache_size=SIZE       cap on cached bodies, e.g. 500M, 2G (default 1G)\n"
"    -o refresh=SECONDS       re-check a folder older than this (default 30)\n"
"    -o offline               never connect; serve the cache, read-only\n"
"Behaviour:\n"
"    -o names=subject|uid     file names (default subject; POP3: always subject)\n"
"    -o mark_seen             reading a message sets \\Seen (default: it does not)\n"
"    -o show_deleted          list messages flagged \\Deleted too\n"
"    -o trash=FOLDER          rm moves messages to FOLDER\n"
"    -o connections=N         IMAP connections in parallel (default 4)\n"
"    -o timeout=SECONDS       bound on every network wait (default 60)\n"
"    -o ro                    read-only (always on for POP3)\n"
"    -o logfile=FILE          log here (default: stderr with -f, else syslog)\n"
"    -o debug                 protocol trace in the log (credentials never shown)\n"
"FUSE:\n"
"    -f                       stay in the foreground\n"
"    -d                       FUSE debug output (implies -f)\n"
"    -s                       single-threaded\n"
"    -o allow_other, ...      the other libfuse mount options\n"
"\n"
"See mailfs(1).\n");
}

static int main_opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct main_opts *mo = data;

	switch (key) {
	case KEY_HELP:
		mo->show_help = 1;
		return 0;
	case KEY_VERSION:
		mo->show_version = 1;
		return 0;
	case KEY_RO:
		mo->readonly = 1;
		return 1;  /* libfuse mounts read-only too */
	case FUSE_OPT_KEY_NONOPT:
		if (mo->nonopt++ == 0) {
			mo->url = g_strdup(arg);
			return 0;
		}
		return 1;  /* the mount point, for fuse_parse_cmdline */
	default:
		return 1;
	}
}

static int main_fail(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static int main_fail(const char *fmt, ...)
{
	va_list ap;
	char *msg;

	va_start(ap, fmt);
	msg = g_strdup_vprintf(fmt, ap);
	va_end(ap);
	/* One line, whatever the message held. */
	g_strdelimit(msg, "\r\n", ' ');
	fprintf(stderr, "mailfs: %s\n", msg);
	g_free(msg);
	return 1;
}

static int main_parse_size(const char *s, uint64_t *out)
{
	char *end;
	double v;

	errno = 0;
	v = g_ascii_strtod(s, &end);
	if (errno || end == s || v < 0)
		return -1;
	switch (g_ascii_toupper(*end)) {
	case 0:   break;
	case 'K': v *= 1024.0; end++; break;
	case 'M': v *= 1024.0 * 1024; end++; break;
	case 'G': v *= 1024.0 * 1024 * 1024; end++; break;
	case 'T': v *= 1024.0 * 1024 * 1024 * 1024; end++; break;
	default:  return -1;
	}
	if (g_ascii_toupper(*end) == 'B' || g_ascii_toupper(*end) == 'I')
		end++;
	if (*end)
		return -1;
	*out = (uint64_t)v;
	return 0;
}

/* Splits imap[s]://[user@]host[:port][/] with libcurl's URL parser. */
static int main_parse_url(const char *url, struct mf_config *cfg, char **err)
{
	CURLU *u = curl_url();
	char *scheme = NULL, *host = NULL, *user = NULL, *port = NULL, *path = NULL;
	int rc = -1;

	if (curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
		*err = g_strdup_printf("bad URL '%s': expected imaps://[user@]host[:port]/", url);
		goto out;
	}
	if (curl_url_get(u, CURLUPART_PASSWORD, &path, 0) == CURLUE_OK) {
		*err = g_strdup("a password in the URL is refused: use password_command, password_file, MAILFS_PASSWORD or ~/.netrc");
		goto out;
	}
	if (strcmp(scheme, "imap") == 0 || strcmp(scheme, "imaps") == 0) {
		cfg->protocol = MF_PROTO_IMAP;
	} else if (strcmp(scheme, "pop3") == 0 || strcmp(scheme, "pop3s") == 0) {
		cfg->protocol = MF_PROTO_POP3;
	} else {
		*err = g_strdup_printf("unsupported URL scheme '%s': use imaps, imap, pop3s or pop3", scheme);
		goto out;
	}
	cfg->scheme = g_strdup(scheme);
	cfg->tls = scheme[strlen(scheme) - 1] == 's' ? MF_TLS_IMPLICIT : MF_TLS_STARTTLS;
	cfg->host = g_strdup(host);
	if (curl_url_get(u, CURLUPART_USER, &user, CURLU_URLDECODE) == CURLUE_OK && *user)
		cfg->user = g_strdup(user);
	if (curl_url_get(u, CURLUPART_PORT, &port, 0) == CURLUE_OK)
		cfg->port = atoi(port);
	rc = 0;
out:
	curl_free(scheme);
	curl_free(host);
	curl_free(user);
	curl_free(port);
	curl_free(path);
	curl_url_cleanup(u);
	return rc;
}

/* Does ~/.netrc name this host (or a default)? */
static int main_netrc_has(const char *host)
{
	const char *home = g_getenv("HOME");
	char *path, *text = NULL;
	int found = 0;

	if (!home)
		return 0;
	path = g_build_filename(home, ".netrc", NULL);
	if (g_file_get_contents(path, &text, NULL, NULL)) {
		char **tok = g_strsplit_set(text, " \t\r\n", -1);
		for (char **t = tok; *t; t++) {
			if (strcmp(*t, "default") == 0 ||
			    (strcmp(*t, "machine") == 0 && t[1] && strcmp(t[1], host) == 0))
				found = 1;
		}
		g_strfreev(tok);
		explicit_bzero(text, strlen(text));
		g_free(text);
	}
	g_free(path);
	return found;
}

static char *main_default_cache_dir(const struct mf_config *cfg)
{
	char *who, *dir;

	if (cfg->port)
		who = g_strdup_printf("%s@%s:%d", cfg->user ? cfg->user : "netrc", cfg->host, cfg->port);
	else
		who = g_strdup_printf("%s@%s", cfg->user ? cfg->user : "netrc", cfg->host);
	g_strdelimit(who, "/", '_');
	dir = g_build_filename(g_get_user_cache_dir(), "mailfs", who, NULL);
	g_free(who);
	return dir;
}

/* Runs f with stderr captured, so that libfuse's own complaints become
 * our one line. Returns what f wrote (g_free), or NULL. */
static char *main_capture_stderr_begin(int *saved, int pipefd[2])
{
	*saved = -1;
	if (pipe2(pipefd, O_CLOEXEC | O_NONBLOCK) < 0)
		return NULL;
	fflush(stderr);
	*saved = dup(STDERR_FILENO);
	dup2(pipefd[1], STDERR_FILENO);
	return NULL;
}

static char *main_capture_stderr_end(int saved, int pipefd[2])
{
	char buf[1024];
	ssize_t n;

	if (saved < 0)
		return NULL;
	fflush(stderr);
	dup2(saved, STDERR_FILENO);
	close(saved);
	close(pipefd[1]);
	n = read(pipefd[0], buf, sizeof buf - 1);
	close(pipefd[0]);
	if (n <= 0)
		return NULL;
	buf[n] = 0;
	g_strstrip(buf);
	g_strdelimit(buf, "\r\n", ' ');
	return g_strdup(buf);
}

static int main_build_config(struct main_opts *mo, struct mf_config *cfg)
{
	char *err = NULL;

	if (!mo->url)
		return main_fail("no URL given (try mailfs --help)");
	if (main_parse_url(mo->url, cfg, &err) != 0) {
		main_fail("%s", err);
		g_free(err);
		return 1;
	}
	if (mo->tls) {
		if (strcmp(mo->tls, "implicit") == 0)
			cfg->tls = MF_TLS_IMPLICIT;
		else if (strcmp(mo->tls, "starttls") == 0)
			cfg->tls = MF_TLS_STARTTLS;
		else if (strcmp(mo->tls, "none") == 0)
			cfg->tls = MF_TLS_NONE;
		else
			return main_fail("bad option tls=%s: use implicit, starttls or none", mo->tls);
	}
	cfg->cafile = g_strdup(mo->cafile);
	if (cfg->cafile && access(cfg->cafile, R_OK) != 0)
		return main_fail("cafile %s: %s", cfg->cafile, g_strerror(errno));
	cfg->insecure = mo->insecure;
	cfg->cache_size = 1024ULL * 1024 * 1024;
	if (mo->cache_size && main_parse_size(mo->cache_size, &cfg->cache_size) != 0)
		return main_fail("bad option cache_size=%s: use a size such as 500M or 2G", mo->cache_size);
	cfg->names_uid = 0;
	/* POP3 message numbers are not stable: POP3 always uses subject names. */
	if (mo->names && strcmp(mo->names, "uid") == 0)
		cfg->names_uid = cfg->protocol != MF_PROTO_POP3;
	else if (mo->names && strcmp(mo->names, "subject") != 0)
		return main_fail("bad option names=%s: use subject or uid", mo->names);
	cfg->mark_seen = mo->mark_seen;
	if (mo->refresh < 0)
		return main_fail("bad option refresh=%d", mo->refresh);
	cfg->refresh = mo->refresh;
	if (mo->connections < 1 || mo->connections > 64)
		return main_fail("bad option connections=%d: use 1 to 64", mo->connections);
	cfg->connections = mo->connections;
	if (mo->timeout < 1)
		return main_fail("bad option timeout=%d: use 1 or more seconds", mo->timeout);
	cfg->timeout = mo->timeout;
	cfg->trash = g_strdup(mo->trash);
	cfg->show_deleted = mo->show_deleted;
	cfg->offline = mo->offline;
	cfg->readonly = mo->readonly || mo->offline;
	if (cfg->protocol == MF_PROTO_POP3)
		cfg->readonly = 1;  /* nothing on a POP3 server is ever changed */
	cfg->debug = mo->debug;
	cfg->oauth_command = g_strdup(mo->oauth_command);
	cfg->cache_dir = mo->cache_dir ? g_strdup(mo->cache_dir) : main_default_cache_dir(cfg);
	if (cfg->insecure)
		fprintf(stderr, "mailfs: warning: -o insecure: the server's certificate is not checked\n");
	return 0;
}

/* MAILFS_PASSWORD leaves the environment (children, /proc/PID/environ):
 * unsetenv alone leaves the bytes where the kernel reads environ from. */
static char *main_take_env_password(void)
{
	char *env = getenv("MAILFS_PASSWORD");
	char *copy = env && *env ? g_strdup(env) : NULL;

	if (env)
		explicit_bzero(env, strlen(env));
	unsetenv("MAILFS_PASSWORD");
	return copy;
}

static int main_get_password(struct main_opts *mo, struct mf_config *cfg)
{
	char *err = NULL;
	char *env;

	/* No core dump (an abort, a signal) and no ptrace by other users
	 * while a password or token is in memory. */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	env = main_take_env_password();
	if (cfg->offline || cfg->oauth_command) {
		secret_free(env);
		return 0;
	}
	if (mo->password_command || mo->password_file) {
		secret_free(env);  /* those come first */
		env = NULL;
	}
	if (mo->password_command) {
		cfg->password = secret_from_command(mo->password_command, cfg->timeout, &err);
		if (!cfg->password) {
			main_fail("password_command: %s", err);
			g_free(err);
			return 1;
		}
	} else if (mo->password_file) {
		cfg->password = secret_from_file(mo->password_file, &err);
		if (!cfg->password) {
			main_fail("password_file: %s", err);
			g_free(err);
			return 1;
		}
	} else if (env) {
		cfg->password = env;
		env = NULL;
	} else if (!main_netrc_has(cfg->host)) {
		return main_fail("no password for %s: give -o password_command=CMD, -o password_file=FILE, "
		                 "MAILFS_PASSWORD, or a ~/.netrc entry", cfg->host);
	}
	if (!cfg->user && cfg->password)
		return main_fail("no user name: put it in the URL (imaps://USER@%s/)", cfg->host);
	return 0;
}

/* mount(8) and mount.fuse3 run a user's fstab mount with HOME unset or
 * set to root's: the cache, ~/.netrc and a password_command such as
 * pass(1) must still find the user's home. */
static void main_fix_home(void)
{
	const char *home = g_getenv("HOME");
	struct passwd *pw = getpwuid(getuid());
	struct stat st;

	if (!pw || !pw->pw_dir)
		return;
	if (!home || !*home || stat(home, &st) != 0 || st.st_uid != getuid())
		g_setenv("HOME", pw->pw_dir, TRUE);
}

static void main_config_clear(struct mf_config *cfg)
{
	g_free(cfg->scheme);
	g_free(cfg->host);
	g_free(cfg->user);
	secret_free(cfg->password);
	g_free(cfg->oauth_command);
	g_free(cfg->cafile);
	g_free(cfg->cache_dir);
	g_free(cfg->trash);
}

/* Whether the command line names an fsname of its own (-o fsname=...). */
static int main_has_fsname(const struct fuse_args *args)
{
	for (int i = 1; i < args->argc; i++) {
		const char *opts = NULL;
		if (strcmp(args->argv[i], "-o") == 0 && i + 1 < args->argc)
			opts = args->argv[++i];
		else if (strncmp(args->argv[i], "-o", 2) == 0)
			opts = args->argv[i] + 2;
		for (const char *p = opts; p && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
			if (strncmp(p, "fsname=", 7) == 0)
				return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct main_opts mo = { .refresh = 30, .connections = 4, .timeout = 60 };
	struct fuse_cmdline_opts cmd = { 0 };
	struct mf_config cfg = { 0 };
	struct store *store = NULL;
	struct mailbox *mb = NULL;
	struct sync_ctx *sync = NULL;
	struct fs_ctx *fsctx = NULL;
	struct fuse *fuse = NULL;
	char *err = NULL, *fsname = NULL;
	int saved_stderr, pipefd[2];
	int rc = 1, mounted = 0;
	enum mf_status st;

	signal(SIGPIPE, SIG_IGN);
	main_fix_home();
	if (fuse_opt_parse(&args, &mo, main_opt_spec, main_opt_proc) != 0) {
		main_fail("cannot parse the options (try mailfs --help)");
		goto out;
	}
	if (mo.show_help) {
		main_usage(stdout);
		rc = 0;
		goto out;
	}
	if (mo.show_version) {
		printf("mailfs %s (libfuse %d, %s)\n", MAILFS_VERSION, fuse_version(),
		       curl_version());
		rc = 0;
		goto out;
	}
	if (fuse_parse_cmdline(&args, &cmd) != 0) {
		main_fail("cannot parse the options (try mailfs --help)");
		goto out;
	}
	if (!mo.url || !cmd.mountpoint) {
		main_fail("usage: mailfs [options] URL MOUNTPOINT (try mailfs --help)");
		goto out;
	}
	if (mo.nonopt > 2) {
		main_fail("too many arguments (try mailfs --help)");
		goto out;
	}
	net_global_init();
	if (main_build_config(&mo, &cfg) != 0)
		goto out;
	if (main_get_password(&mo, &cfg) != 0)
		goto out;
	if (log_setup(mo.logfile, mo.debug) != 0) {
		main_fail("cannot open the log file %s: %s", mo.logfile, g_strerror(errno));
		goto out;
	}

	/* libfuse checks its own options here: before any connection. What
	 * mount and df show: the user's -o fsname, else user@host[:port],
	 * as sshfs shows user@host:path (two accounts on one server differ). */
	if (!main_has_fsname(&args)) {
		char *who = g_strdup_printf("%s%s%s", cfg.user ? cfg.user : "", cfg.user ? "@" : "",
		                            cfg.host);
		int def = strcmp(cfg.scheme, "imaps") == 0 ? 993 : strcmp(cfg.scheme, "imap") == 0 ? 143
		        : strcmp(cfg.scheme, "pop3s") == 0 ? 995 : 110;
		char *port = cfg.port && cfg.port != def ? g_strdup_printf(":%d", cfg.port)
		                                         : g_strdup("");
		fsname = g_strdup_printf("-ofsname=%s%s", who, port);
		g_strdelimit(fsname + 2, ",", '_');  /* a comma would end the option */
		fuse_opt_add_arg(&args, fsname);
		g_free(who);
		g_free(port);
	}
	fuse_opt_add_arg(&args, "-osubtype=mailfs");
	if (cmd.debug)
		cmd.foreground = 1;
	main_capture_stderr_begin(&saved_stderr, pipefd);
	fsctx = fs_new(&cfg);
	fuse = fuse_new(&args, fs_operations(), sizeof(struct fuse_operations), fsctx);
	err = main_capture_stderr_end(saved_stderr, pipefd);
	if (!fuse) {
		main_fail("bad option: %s", err ? err : "rejected by libfuse");
		goto out;
	}
	if (err && *err)
		fprintf(stderr, "%s\n", err);
	g_clear_pointer(&err, g_free);

	mime_init();
	if (cfg.offline) {
		char *db = g_build_filename(cfg.cache_dir, "cache.sqlite", NULL);
		int have = g_file_test(db, G_FILE_TEST_EXISTS);
		g_free(db);
		if (!have) {
			main_fail("offline: no cache in %s to serve", cfg.cache_dir);
			goto out;
		}
	}
	store = store_open(cfg.cache_dir, cfg.cache_size, &err);
	if (!store) {
		main_fail("cache %s: %s", cfg.cache_dir, err ? err : "cannot open");
		goto out;
	}
	if (!cfg.offline) {
		st = cfg.protocol == MF_PROTO_POP3 ? pop3_mailbox_open(&cfg, &mb, &err)
		                                   : imap_mailbox_open(&cfg, &mb, &err);
		if (st != MF_OK) {
			main_fail("%s", err ? err : mf_status_str(st));
			goto out;
		}
	}
	sync = sync_new(&cfg, store, mb);
	if (mb) {
		st = sync_folders(sync);
		if (st != MF_OK) {
			main_fail("cannot list the folders of %s: %s", cfg.host, mf_status_str(st));
			goto out;
		}
	}

	fs_attach(fsctx, store, sync);

	main_capture_stderr_begin(&saved_stderr, pipefd);
	int mrc = fuse_mount(fuse, cmd.mountpoint);
	err = main_capture_stderr_end(saved_stderr, pipefd);
	if (mrc != 0) {
		main_fail("cannot mount on %s: %s", cmd.mountpoint, err ? err : "fuse_mount failed");
		goto out;
	}
	g_clear_pointer(&err, g_free);
	mounted = 1;
	if (fuse_daemonize(cmd.foreground) != 0) {
		main_fail("cannot daemonize");
		goto out;
	}
	store_claim(store);  /* the cache's lock names the process that stays */
	if (!cmd.foreground && !mo.logfile)
		log_use_syslog();
	log_info("mounted %s://%s on %s", cfg.scheme, cfg.host, cmd.mountpoint);
	if (fuse_set_signal_handlers(fuse_get_session(fuse)) != 0) {
		log_error("cannot set signal handlers");
		goto out;
	}
	if (cmd.singlethread)
		rc = fuse_loop(fuse);
	else
		rc = fuse_loop_mt(fuse, 0);
	rc = rc != 0;
	fuse_remove_signal_handlers(fuse_get_session(fuse));
	log_info("unmounted %s", cmd.mountpoint);
out:
	if (mounted)
		fuse_unmount(fuse);
	if (fuse)
		fuse_destroy(fuse);
	sync_free(sync);
	fs_free(fsctx);
	if (mb)
		mb->ops->destroy(mb);
	if (store)
		store_close(store);
	g_free(err);
	g_free(fsname);
	free(cmd.mountpoint);
	fuse_opt_free_args(&args);
	main_config_clear(&cfg);
	g_free(mo.url);
	g_free(mo.password_command);
	g_free(mo.password_file);
	g_free(mo.oauth_command);
	g_free(mo.tls);
	g_free(mo.cafile);
	g_free(mo.cache_dir);
	g_free(mo.cache_size);
	g_free(mo.names);
	g_free(mo.trash);
	g_free(mo.logfile);
	return rc;
}
