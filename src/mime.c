/* mime.c — GMime glue: decodes the few header fields mailfs needs, derives
 * the content-based file name of DESIGN.md "File names", and tells a mail
 * message from junk before an APPEND.
 *
 * Pure: bytes in, strings out. No I/O, no globals besides the init flag.
 * Every GMime object is created and released inside one call, because
 * GMime objects are not thread-safe. */
#include "mime.h"
#include "civil.h"

#include <string.h>

#include <glib.h>
#include <gmime/gmime.h>

#define MIME_SLUG_MAX 60

static GMutex mime_init_lock;
static gboolean mime_initialized;

void mime_init(void)
{
	g_mutex_lock(&mime_init_lock);
	if (!mime_initialized) {
		g_mime_init();
		mime_initialized = TRUE;
	}
	g_mutex_unlock(&mime_init_lock);
}

void mime_shutdown(void)
{
	g_mutex_lock(&mime_init_lock);
	if (mime_initialized) {
		g_mime_shutdown();
		mime_initialized = FALSE;
	}
	g_mutex_unlock(&mime_init_lock);
}

void mime_header_info_clear(struct mime_header_info *info)
{
	if (info == NULL)
		return;
	g_free(info->subject);
	g_free(info->from);
	g_free(info->message_id);
	g_free(info->date_header);
	g_free(info->from_raw);
	g_free(info->date_raw);
	memset(info, 0, sizeof(*info));
	info->date = MIME_NO_DATE;
}

/* The first 8 hex digits of SHA-256 over len bytes of data into out[9]. */
static void mime_hash8(const char *data, gssize len, char out[9])
{
	GChecksum *sum = g_checksum_new(G_CHECKSUM_SHA256);

	g_checksum_update(sum, (const guchar *)data, len);
	memcpy(out, g_checksum_get_string(sum), 8);
	out[8] = '\0';
	g_checksum_free(sum);
}

/* The h8 of a message with no Date, From, Subject or Message-ID. */
static void mime_hash8_empty(char out[9])
{
	mime_hash8("\n\n", 2, out);
}

/* A g_malloc'd valid UTF-8 copy of s, or NULL; these strings end up in
 * SQLite and in xattrs, where invalid UTF-8 would cause trouble. */
static char *mime_utf8_dup(const char *s)
{
	if (s == NULL)
		return NULL;
	return g_utf8_make_valid(s, -1);
}

/* Like mime_utf8_dup, but trimmed, and NULL when nothing is left. */
static char *mime_utf8_dup_trimmed(const char *s)
{
	char *copy;

	if (s == NULL)
		return NULL;
	copy = g_strstrip(g_utf8_make_valid(s, -1));
	if (copy[0] == '\0') {
		g_free(copy);
		return NULL;
	}
	return copy;
}

/* The first header called name (any case), or NULL. */
static GMimeHeader *mime_first_header(GMimeObject *object, const char *name)
{
	GMimeHeaderList *list = g_mime_object_get_header_list(object);
	int count = g_mime_header_list_get_count(list);
	int i;

	for (i = 0; i < count; i++) {
		GMimeHeader *header = g_mime_header_list_get_header_at(list, i);
		const char *header_name = g_mime_header_get_name(header);

		if (header_name != NULL && g_ascii_strcasecmp(header_name, name) == 0)
			return header;
	}
	return NULL;
}

/* n bytes of a raw value with the CR and LF of folding removed and outer
 * white space trimmed (g_strstrip), g_malloc'd. */
static char *mime_unfold_trim(const char *raw, size_t n)
{
	char *copy = g_malloc(n + 1), *dst = copy;

	for (size_t i = 0; i < n; i++)
		if (raw[i] != '\r' && raw[i] != '\n')
			*dst++ = raw[i];
	*dst = '\0';
	return g_strstrip(copy);
}

/* n bytes of a raw value without the line end that closes it (what
 * from_raw and date_raw hold), g_malloc'd. */
static char *mime_raw_chomp(const char *raw, size_t n)
{
	while (n > 0 && (raw[n - 1] == '\n' || raw[n - 1] == '\r'))
		n--;
	return g_strndup(raw, n);
}

/* The raw value of the first header called name, without its final line
 * end; NULL when absent. Raw bytes, not decoded: the hash must not depend
 * on GMime's charset guesses. */
static char *mime_raw_value(GMimeObject *object, const char *name)
{
	GMimeHeader *header = mime_first_header(object, name);
	const char *raw;

	if (header == NULL || (raw = g_mime_header_get_raw_value(header)) == NULL)
		return NULL;
	return mime_raw_chomp(raw, strlen(raw));
}

/* The unfolded, trimmed form of a raw value, the hash's input; "" for NULL. */
static char *mime_hash_form(const char *raw)
{
	return raw ? mime_unfold_trim(raw, strlen(raw)) : g_strdup("");
}

/* The h8 of a message without Message-ID: over the Date, From and Subject
 * values as sent. */
static void mime_hash8_fields(const char *date_raw, const char *from_raw,
                              const char *subject_raw, char out[9])
{
	char *d = mime_hash_form(date_raw), *f = mime_hash_form(from_raw);
	char *s = mime_hash_form(subject_raw);
	char *joined = g_strconcat(d, "\n", f, "\n", s, NULL);

	mime_hash8(joined, -1, out);
	g_free(joined);
	g_free(d);
	g_free(f);
	g_free(s);
}

/* The fields mailfs decodes: what it asks an IMAP server for with
 * BODY.PEEK[HEADER.FIELDS (DATE FROM SUBJECT MESSAGE-ID)]. */
static const char *const mime_wanted_fields[] = { "Date", "From", "Subject", "Message-ID" };

/* Whether a header line (not a continuation) starts one of the wanted
 * fields. The name ends at the first ':'; white space before the ':'
 * (obsolete syntax) is dropped, as GMime and IMAP servers do. */
static gboolean mime_is_wanted_field(const char *line, size_t len)
{
	const char *colon = memchr(line, ':', len);
	size_t name_len, i;

	if (colon == NULL)
		return FALSE;
	name_len = colon - line;
	while (name_len > 0 && (line[name_len - 1] == ' ' || line[name_len - 1] == '\t'))
		name_len--;
	for (i = 0; i < G_N_ELEMENTS(mime_wanted_fields); i++) {
		if (strlen(mime_wanted_fields[i]) == name_len &&
		    g_ascii_strncasecmp(line, mime_wanted_fields[i], name_len) == 0)
			return TRUE;
	}
	return FALSE;
}

/* Copies the wanted fields, with their continuation lines and in their
 * order, from the header block (up to the first empty line, LF or CRLF)
 * and ends the copy with an empty line: what an IMAP server returns for
 * HEADER.FIELDS. Parsing this rather than the block as given makes a
 * whole message (POP3 TOP) and an IMAP answer give the same result even
 * where GMime would read the whole block differently (an mbox "From "
 * line, a first line of blanks or without a colon, which make GMime give
 * up), and it skips the bulk of a header (Received, DKIM) for free.
 * Sets *found when at least one field was copied. */
static GString *mime_extract_fields(const char *data, size_t len, gboolean *found)
{
	GString *out = g_string_new(NULL);
	gboolean keep = FALSE;
	size_t pos = 0;

	*found = FALSE;
	while (pos < len) {
		const char *line = data + pos;
		const char *newline = memchr(line, '\n', len - pos);
		size_t line_len = newline != NULL ? (size_t)(newline - line) + 1 : len - pos;
		size_t text_len = line_len;

		if (text_len > 0 && line[text_len - 1] == '\n')
			text_len--;
		if (text_len > 0 && line[text_len - 1] == '\r')
			text_len--;
		if (text_len == 0)
			break;
		/* A continuation line belongs to the field before it. */
		if (line[0] != ' ' && line[0] != '\t')
			keep = mime_is_wanted_field(line, text_len);
		if (keep) {
			g_string_append_len(out, line, line_len);
			*found = TRUE;
		}
		pos += line_len;
	}
	if (out->len > 0 && out->str[out->len - 1] != '\n')
		g_string_append_c(out, '\n');
	g_string_append_c(out, '\n');
	return out;
}

/* The length of the header block: up to and including the first empty
 * line (LF or CRLF), or all of data when there is none. */
static size_t mime_header_block_length(const char *data, size_t len)
{
	size_t i;

	if (len >= 1 && data[0] == '\n')
		return 1;
	if (len >= 2 && data[0] == '\r' && data[1] == '\n')
		return 2;
	for (i = 0; i + 1 < len; i++) {
		if (data[i] != '\n')
			continue;
		if (data[i + 1] == '\n')
			return i + 2;
		if (data[i + 1] == '\r' && i + 2 < len && data[i + 2] == '\n')
			return i + 3;
	}
	return len;
}

/* Parses len bytes as a message; NULL when GMime cannot. */
static GMimeMessage *mime_construct(const char *data, size_t len)
{
	GMimeStream *stream;
	GMimeParser *parser;
	GMimeMessage *message;

	/* The mem stream copies the bytes, so data need not outlive it nor
	 * be NUL-terminated. */
	stream = g_mime_stream_mem_new_with_buffer(len > 0 ? data : "", len);
	parser = g_mime_parser_new_with_stream(stream);
	message = g_mime_parser_construct_message(parser, NULL);
	g_object_unref(parser);
	g_object_unref(stream);
	return message;
}

/* The From header for display: the parsed address list, or when GMime
 * found no address in it, the decoded text. */
static char *mime_from_display(GMimeMessage *message)
{
	InternetAddressList *list = g_mime_message_get_from(message);
	char *text = NULL, *result;

	if (list != NULL && internet_address_list_length(list) > 0)
		text = internet_address_list_to_string(list, NULL, FALSE);
	result = mime_utf8_dup_trimmed(text);
	g_free(text);
	if (result == NULL)
		result = mime_utf8_dup_trimmed(
			g_mime_object_get_header((GMimeObject *)message, "From"));
	return result;
}

int mime_parse_headers_full(const char *data, size_t len, struct mime_header_info *out)
{
	GMimeMessage *message;
	GMimeObject *object;
	GDateTime *date;
	GString *fields;
	gboolean found;
	const char *message_id;
	char *id_trimmed;

	memset(out, 0, sizeof(*out));
	out->date = MIME_NO_DATE;
	mime_hash8_empty(out->h8);
	if (data == NULL)
		len = 0;

	fields = mime_extract_fields(data, len, &found);
	message = found ? mime_construct(fields->str, fields->len) : NULL;
	g_string_free(fields, TRUE);
	if (message == NULL)
		return -1;
	object = (GMimeObject *)message;

	out->subject = mime_utf8_dup(g_mime_message_get_subject(message));
	out->from = mime_from_display(message);
	out->date_header = mime_utf8_dup_trimmed(g_mime_object_get_header(object, "Date"));
	out->from_raw = mime_raw_value(object, "From");
	out->date_raw = mime_raw_value(object, "Date");
	date = g_mime_message_get_date(message);
	if (date != NULL)
		out->date = g_date_time_to_unix(date);

	/* The hash is over GMime's bytes as they are; only the stored copy
	 * is made valid UTF-8. */
	message_id = g_mime_message_get_message_id(message);
	id_trimmed = g_strstrip(g_strdup(message_id != NULL ? message_id : ""));
	if (id_trimmed[0] != '\0') {
		mime_hash8(id_trimmed, -1, out->h8);
		out->message_id = mime_utf8_dup(id_trimmed);
	} else {
		char *subject_raw = mime_raw_value(object, "Subject");
		mime_hash8_fields(out->date_raw, out->from_raw, subject_raw, out->h8);
		g_free(subject_raw);
	}
	g_free(id_trimmed);

	g_object_unref(message);
	return 0;
}

/* ---- the fast path ----
 *
 * Building a GMimeMessage costs some fifty GObjects; a folder of 10,000
 * messages is listed in one go, so for the common header the fields are
 * decoded with the GMime functions GMimeMessage itself uses on them. A
 * header that is not common (a field twice, 8-bit bytes, a NUL) takes the
 * full path. Unit tests check that both agree on every corpus message. */

struct mime_raw_fields {
	const char *value[4];     /* raw value after the colon, continuation lines included */
	size_t len[4];
};

/* Fills raw values from an extracted block (mime_extract_fields). 0, or
 * -1 when the block is not for the fast path. */
static int mime_split_fields(const char *block, size_t len, struct mime_raw_fields *raw)
{
	size_t pos = 0;
	int cur = -1;

	memset(raw, 0, sizeof *raw);
	/* 8-bit bytes and controls other than tab and line ends: GMime. */
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)block[i];
		if (c >= 0x7f || (c < 0x20 && c != '\t' && c != '\r' && c != '\n'))
			return -1;
	}
	while (pos < len) {
		const char *line = block + pos;
		const char *nl = memchr(line, '\n', len - pos);
		size_t line_len = nl ? (size_t)(nl - line) + 1 : len - pos;

		if (line_len <= 2 && (line[0] == '\n' || line[0] == '\r'))
			break;
		if (line[0] == ' ' || line[0] == '\t') {
			if (cur < 0)
				return -1;
			raw->len[cur] += line_len;
		} else {
			const char *colon = memchr(line, ':', line_len);
			size_t name_len;
			cur = -1;
			if (!colon)
				return -1;
			name_len = colon - line;
			while (name_len > 0 && (line[name_len - 1] == ' ' || line[name_len - 1] == '\t'))
				name_len--;
			for (int k = 0; k < 4; k++)
				if (strlen(mime_wanted_fields[k]) == name_len &&
				    g_ascii_strncasecmp(line, mime_wanted_fields[k], name_len) == 0)
					cur = k;
			if (cur < 0 || raw->value[cur])
				return -1;  /* a field twice: GMime's own rules apply */
			raw->value[cur] = colon + 1;
			raw->len[cur] = line_len - (size_t)(colon + 1 - line);
		}
		pos += line_len;
	}
	return 0;
}

/* The decoded value, as g_mime_header_get_value() gives it. */
static char *mime_decoded(GMimeParserOptions *options, const char *raw)
{
	char *unfolded, *decoded;

	if (!raw)
		return NULL;
	unfolded = g_mime_utils_header_unfold(raw);
	decoded = g_mime_utils_header_decode_text(options, unfolded);
	g_free(unfolded);
	return decoded;
}

/* Whether an unfolded, trimmed value is printable ASCII (tabs allowed)
 * with no encoded word: GMime's unfolding and decoding give it back as
 * it is, so it needs neither. */
static gboolean mime_is_plain(const char *s)
{
	for (const char *p = s; *p; p++) {
		if ((*p < 0x20 && *p != '\t') || *p > 0x7e)
			return FALSE;
		if (p[0] == '=' && p[1] == '?')
			return FALSE;
	}
	return TRUE;
}

/* The RFC 5322 date of nearly every message, "[Www, ]D[D] Mon YYYY
 * HH:MM[:SS] +HHMM[ (comment)]" with single spaces, as Unix time; FALSE
 * for anything else, which GMime then reads with its own leniencies (two-
 * digit years, zone names, out-of-range zones taken as UTC). Within this
 * form both agree; a unit test compares them. */
static gboolean mime_date_fast(const char *s, int64_t *out)
{
	static const char wdays[] = "MonTueWedThuFriSatSun";
	int day, month, year, hour, minute, second = 0, zh, zm, sign;
	const char *p = s;
	size_t n;

	if (g_ascii_isalpha(p[0])) {
		const char *w;
		for (w = wdays; *w; w += 3)
			if (strncmp(p, w, 3) == 0)
				break;
		if (!*w || p[3] != ',' || p[4] != ' ')
			return FALSE;
		p += 5;
	}
	n = p[0] && g_ascii_isdigit(p[1]) ? 2 : 1;  /* p[1] only past a non-NUL */
	if (!civil_digits(p, (int)n, &day) || p[n] != ' ')
		return FALSE;
	p += n + 1;
	month = civil_month(p);
	if (!month || p[3] != ' ')
		return FALSE;
	p += 4;
	if (!civil_digits(p, 4, &year) || p[4] != ' ' || year < 1970)
		return FALSE;
	p += 5;
	if (!civil_digits(p, 2, &hour) || p[2] != ':' || !civil_digits(p + 3, 2, &minute))
		return FALSE;
	p += 5;
	if (p[0] == ':') {
		if (!civil_digits(p + 1, 2, &second))
			return FALSE;
		p += 3;
	}
	if (p[0] != ' ' || (p[1] != '+' && p[1] != '-') || !civil_digits(p + 2, 2, &zh) ||
	    !civil_digits(p + 4, 2, &zm))
		return FALSE;
	sign = p[1] == '-' ? -1 : 1;
	p += 6;
	if (p[0] != '\0') {
		/* One comment of plain text: "(UTC)", "(CET)". */
		if (p[0] != ' ' || p[1] != '(')
			return FALSE;
		for (p += 2; *p && *p != ')'; p++)
			if (*p == '(' || *p == '\\')
				return FALSE;
		if (p[0] != ')' || p[1] != '\0')
			return FALSE;
	}
	if (day < 1 || day > civil_days_in_month(year, month) || hour > 23 || minute > 59 ||
	    second > 59 || zh > 12 || zm > 59)
		return FALSE;
	*out = civil_days_from(year, month, day) * 86400 + hour * 3600 + minute * 60 +
	       second - sign * (zh * 3600 + zm * 60);
	return TRUE;
}

/* The addr-spec of a plain "<local@domain>" Message-ID, g_malloc'd; NULL
 * for anything else (comments, quotes, spaces, several ids), which
 * g_mime_utils_decode_message_id() reads. */
static char *mime_message_id_fast(const char *s)
{
	size_t n = strlen(s);
	const char *at;

	if (n < 5 || s[0] != '<' || s[n - 1] != '>')
		return NULL;
	for (size_t i = 1; i + 1 < n; i++)
		if (s[i] <= ' ' || s[i] > '~' || strchr("<>()\"\\,;:[]", s[i]))
			return NULL;
	at = memchr(s + 1, '@', n - 2);
	if (at == NULL || at == s + 1 || at == s + n - 2 || memchr(at + 1, '@', s + n - 2 - at))
		return NULL;
	/* Dots at either end of a part, or two in a row, GMime tidies. */
	if (s[1] == '.' || at[-1] == '.' || at[1] == '.' || s[n - 2] == '.' ||
	    g_strstr_len(s, (gssize)n, ".."))
		return NULL;
	return g_strndup(s + 1, n - 2);
}

char *mime_decode_from(const char *from_raw)
{
	GMimeParserOptions *options = g_mime_parser_options_get_default();
	InternetAddressList *list;
	char *text = NULL, *result, *value;

	if (from_raw == NULL)
		return NULL;
	list = internet_address_list_parse(options, from_raw);
	if (list && internet_address_list_length(list) > 0)
		text = internet_address_list_to_string(list, NULL, FALSE);
	result = mime_utf8_dup_trimmed(text);
	g_free(text);
	if (list)
		g_object_unref(list);
	if (!result) {
		value = mime_decoded(options, from_raw);
		result = mime_utf8_dup_trimmed(value);
		g_free(value);
	}
	return result;
}

char *mime_decode_date(const char *date_raw)
{
	char *value, *result;

	if (date_raw == NULL)
		return NULL;
	value = mime_unfold_trim(date_raw, strlen(date_raw));
	if (value[0] != '\0' && mime_is_plain(value))
		return value;
	g_free(value);
	value = mime_decoded(g_mime_parser_options_get_default(), date_raw);
	result = mime_utf8_dup_trimmed(value);
	g_free(value);
	return result;
}


static int mime_parse_fast(const char *block, size_t len, struct mime_header_info *out,
                           gboolean lazy)
{
	GMimeParserOptions *options = g_mime_parser_options_get_default();
	struct mime_raw_fields raw;
	char *subject_raw = NULL, *subject = NULL, *date = NULL, *id_raw = NULL;
	char *value, *id = NULL;

	if (mime_split_fields(block, len, &raw) != 0)
		return -1;
	if (raw.value[0]) {
		out->date_raw = mime_raw_chomp(raw.value[0], raw.len[0]);
		date = mime_unfold_trim(raw.value[0], raw.len[0]);
	}
	if (raw.value[1])
		out->from_raw = mime_raw_chomp(raw.value[1], raw.len[1]);
	if (raw.value[2]) {
		subject_raw = mime_raw_chomp(raw.value[2], raw.len[2]);
		subject = mime_unfold_trim(raw.value[2], raw.len[2]);
	}
	if (raw.value[3])
		id_raw = mime_unfold_trim(raw.value[3], raw.len[3]);

	if (subject && mime_is_plain(subject)) {
		out->subject = subject;
		subject = NULL;
	} else if (subject_raw) {
		value = mime_decoded(options, subject_raw);
		out->subject = mime_utf8_dup(value);
		g_free(value);
	}

	if (!lazy) {
		out->from = mime_decode_from(out->from_raw);
		out->date_header = mime_decode_date(out->date_raw);
	}
	if (date && !(mime_is_plain(date) && mime_date_fast(date, &out->date))) {
		value = mime_decoded(options, out->date_raw);
		GDateTime *dt = value ? g_mime_utils_header_decode_date(value) : NULL;
		if (dt) {
			out->date = g_date_time_to_unix(dt);
			g_date_time_unref(dt);
		}
		g_free(value);
	}

	if (id_raw) {
		id = mime_is_plain(id_raw) ? mime_message_id_fast(id_raw) : NULL;
		if (!id) {
			value = mime_decoded(options, id_raw);
			id = value ? g_mime_utils_decode_message_id(value) : NULL;
			g_free(value);
		}
	}
	if (id)
		g_strstrip(id);
	if (id && id[0] != '\0') {
		mime_hash8(id, -1, out->h8);
		out->message_id = mime_utf8_dup(id);
	} else {
		mime_hash8_fields(out->date_raw, out->from_raw, subject_raw, out->h8);
	}
	g_free(id);
	g_free(subject_raw);
	g_free(subject);
	g_free(date);
	g_free(id_raw);
	return 0;
}

static int mime_parse(const char *data, size_t len, struct mime_header_info *out, gboolean lazy)
{
	GString *fields;
	gboolean found;
	int rc;

	memset(out, 0, sizeof(*out));
	out->date = MIME_NO_DATE;
	mime_hash8_empty(out->h8);
	if (data == NULL)
		len = 0;
	fields = mime_extract_fields(data, len, &found);
	if (!found) {
		g_string_free(fields, TRUE);
		return -1;
	}
	rc = mime_parse_fast(fields->str, fields->len, out, lazy);
	g_string_free(fields, TRUE);
	if (rc == 0)
		return 0;
	mime_header_info_clear(out);
	rc = mime_parse_headers_full(data, len, out);
	if (lazy) {
		g_clear_pointer(&out->from, g_free);
		g_clear_pointer(&out->date_header, g_free);
	}
	return rc;
}

int mime_parse_headers(const char *data, size_t len, struct mime_header_info *out)
{
	return mime_parse(data, len, out, FALSE);
}

int mime_parse_headers_lazy(const char *data, size_t len, struct mime_header_info *out)
{
	return mime_parse(data, len, out, TRUE);
}

/* mime_slug of a subject that is plain ASCII: NFC leaves it as it is,
 * and the letters and digits are the ASCII ones. */
static char *mime_slug_ascii(const char *subject)
{
	size_t n = strlen(subject), len = 0;
	char *slug = g_malloc(n + sizeof "no-subject");
	gboolean pending_dash = FALSE;

	for (const char *p = subject; *p != '\0' && len <= MIME_SLUG_MAX; p++) {
		if (g_ascii_isalnum(*p)) {
			if (pending_dash && len > 0)
				slug[len++] = '-';
			pending_dash = FALSE;
			slug[len++] = *p;
		} else {
			pending_dash = TRUE;
		}
	}
	if (len > MIME_SLUG_MAX) {
		len = MIME_SLUG_MAX;
		while (len > 0 && slug[len - 1] == '-')
			len--;
	}
	if (len == 0)
		return strcpy(slug, "no-subject");
	slug[len] = '\0';
	return slug;
}

char *mime_slug(const char *subject)
{
	GString *slug;
	gboolean pending_dash = FALSE;
	const char *q = subject;

	while (q != NULL && *q != '\0' && (unsigned char)*q < 0x80)
		q++;
	if (q != NULL && *q == '\0')
		return mime_slug_ascii(subject);
	slug = g_string_new(NULL);
	/* NFC first: a mailer that sends "e" + U+0301 means the letter "é",
	 * and a combining mark alone is not a letter. */
	char *nfc = subject != NULL && g_utf8_validate(subject, -1, NULL)
	            ? g_utf8_normalize(subject, -1, G_NORMALIZE_NFC) : NULL;
	const char *p = nfc != NULL ? nfc : subject != NULL ? subject : "";
	size_t cut;

	while (*p != '\0') {
		gunichar c = g_utf8_get_char_validated(p, -1);

		if (c == (gunichar)-1 || c == (gunichar)-2) {
			/* An invalid byte is not a letter: it separates. */
			pending_dash = TRUE;
			p++;
			continue;
		}
		/* g_unichar_isalnum() is true for the general categories L*
		 * (letters) and Nd, Nl, No (digits and other numbers); marks,
		 * punctuation, symbols (emoji) and separators are dropped. */
		if (g_unichar_isalnum(c)) {
			if (pending_dash && slug->len > 0)
				g_string_append_c(slug, '-');
			pending_dash = FALSE;
			g_string_append_len(slug, p, g_utf8_next_char(p) - p);
			/* Past the limit the rest cannot change what is kept. */
			if (slug->len > MIME_SLUG_MAX)
				break;
		} else {
			pending_dash = TRUE;
		}
		p = g_utf8_next_char(p);
	}

	/* Leading '-' are never emitted and trailing ones stay pending, so
	 * only the cut can leave a '-' at the end. */
	if (slug->len > MIME_SLUG_MAX) {
		cut = MIME_SLUG_MAX;
		while (cut > 0 && ((guchar)slug->str[cut] & 0xC0) == 0x80)
			cut--;
		g_string_truncate(slug, cut);
		while (slug->len > 0 && slug->str[slug->len - 1] == '-')
			g_string_truncate(slug, slug->len - 1);
	}
	if (slug->len == 0)
		g_string_assign(slug, "no-subject");
	g_free(nfc);
	return g_string_free(slug, FALSE);
}

static gboolean mime_h8_is_valid(const char *h8)
{
	int i;

	for (i = 0; i < 8; i++) {
		if (!g_ascii_isdigit(h8[i]) && !(h8[i] >= 'a' && h8[i] <= 'f'))
			return FALSE;
	}
	return h8[8] == '\0';
}

/* "YYYYMMDD-HHMM" of t in UTC, or NULL outside the years 1..9999 (those
 * of GDateTime, which this once used). */
static char *mime_format_date(int64_t t)
{
	int64_t days, secs, year;
	int month, day;

	if (t == MIME_NO_DATE)
		return NULL;
	days = t / 86400 - (t % 86400 < 0);
	secs = t - days * 86400;
	civil_from_days(days, &year, &month, &day);
	if (year < 1 || year > 9999)
		return NULL;
	return g_strdup_printf("%04d%02d%02d-%02d%02d", (int)year, month, day,
	                       (int)(secs / 3600), (int)(secs / 60 % 60));
}

char *mime_name_base(const struct mime_header_info *info, int64_t fallback_date)
{
	char *date = NULL, *slug, *name;
	char h8[9];

	if (info != NULL)
		date = mime_format_date(info->date);
	if (date == NULL)
		date = mime_format_date(fallback_date);
	if (date == NULL)
		date = g_strdup("00000000-0000");

	slug = mime_slug(info != NULL ? info->subject : NULL);
	/* A struct that did not come from mime_parse_headers still gets a
	 * name of the documented form. */
	if (info != NULL && mime_h8_is_valid(info->h8))
		memcpy(h8, info->h8, sizeof(h8));
	else
		mime_hash8_empty(h8);

	name = g_strdup_printf("%s_%s_%s", date, slug, h8);
	g_free(date);
	g_free(slug);
	return name;
}

/* Whether the first line starts like a header field: a name of printable
 * ASCII other than ':' (RFC 5322 ftext), optional obsolete white space,
 * then ':'. GMime alone is too lenient: it skips an mbox "From " line. */
static gboolean mime_first_line_is_field(const char *data, size_t len)
{
	size_t i = 0;

	while (i < len && (guchar)data[i] >= 33 && (guchar)data[i] <= 126 && data[i] != ':')
		i++;
	if (i == 0)
		return FALSE;
	while (i < len && (data[i] == ' ' || data[i] == '\t'))
		i++;
	return i < len && data[i] == ':';
}

int mime_validate_message(const char *data, size_t len)
{
	GMimeMessage *message;
	GMimeObject *part;
	int count;

	if (data == NULL || len == 0 || !mime_first_line_is_field(data, len))
		return -1;
	/* GMime's verdict rests on the header alone (a body never makes it
	 * fail), so the body, maybe megabytes, need not be parsed. */
	message = mime_construct(data, mime_header_block_length(data, len));
	if (message == NULL)
		return -1;
	/* GMime files the Content-* fields under the body part, not under
	 * the message. */
	count = g_mime_header_list_get_count(g_mime_object_get_header_list((GMimeObject *)message));
	part = g_mime_message_get_mime_part(message);
	if (part != NULL)
		count += g_mime_header_list_get_count(g_mime_object_get_header_list(part));
	g_object_unref(message);
	return count > 0 ? 0 : -1;
}
