/* fuzz_mime_headers.c — libFuzzer target for mime.c: any bytes, taken as a
 * header block or a whole message, must parse without a crash or leak,
 * give valid UTF-8 fields, derive a name of the documented form
 * "YYYYMMDD-HHMM_<slug>_<h8>", and derive the same name from the header
 * block alone. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>

#include "mime.h"

static gboolean fuzz_is_utf8_or_null(const char *s)
{
	return s == NULL || g_utf8_validate(s, -1, NULL);
}

/* The form, checked by hand: a GRegex per input would dominate the run. */
static gboolean fuzz_name_has_form(const char *name)
{
	size_t len = strlen(name), i;
	const char *slug, *last;

	if (len < 13 + 1 + 1 + 1 + 8 || !g_utf8_validate(name, -1, NULL))
		return FALSE;
	for (i = 0; i < 13; i++) {
		if (i == 8 ? name[i] != '-' : !g_ascii_isdigit(name[i]))
			return FALSE;
	}
	if (name[13] != '_')
		return FALSE;
	last = name + len - 9;
	if (*last != '_')
		return FALSE;
	for (i = 1; i <= 8; i++) {
		if (!g_ascii_isdigit(last[i]) && !(last[i] >= 'a' && last[i] <= 'f'))
			return FALSE;
	}
	slug = name + 14;
	if (slug == last || last - slug > 60)
		return FALSE;
	for (; slug < last; slug++) {
		if (*slug == '/' || *slug == '_' || *slug == ' ')
			return FALSE;
	}
	return TRUE;
}

/* Where the header block ends: after the first empty line (LF or CRLF). */
static size_t fuzz_header_length(const uint8_t *data, size_t size)
{
	size_t i;

	for (i = 0; i < size; i++) {
		if (i > 0 && data[i - 1] != '\n')
			continue;
		if (data[i] == '\n')
			return i + 1;
		if (data[i] == '\r' && i + 1 < size && data[i + 1] == '\n')
			return i + 2;
	}
	return size;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static gboolean initialized;
	struct mime_header_info info, top;
	char *name, *name_top, *slug;

	if (!initialized) {
		mime_init();
		initialized = TRUE;
	}

	mime_parse_headers((const char *)data, size, &info);
	if (!fuzz_is_utf8_or_null(info.subject) || !fuzz_is_utf8_or_null(info.from) ||
	    !fuzz_is_utf8_or_null(info.message_id) || !fuzz_is_utf8_or_null(info.date_header))
		abort();

	name = mime_name_base(&info, 1700000000);
	if (!fuzz_name_has_form(name))
		abort();
	/* The header block alone (POP3 TOP n 0) names it the same. */
	mime_parse_headers((const char *)data, fuzz_header_length(data, size), &top);
	name_top = mime_name_base(&top, 1700000000);
	if (strcmp(name, name_top) != 0)
		abort();
	g_free(name_top);
	mime_header_info_clear(&top);
	g_free(name);
	/* Without any date the name must still have the form. */
	name = mime_name_base(&info, MIME_NO_DATE);
	if (!fuzz_name_has_form(name))
		abort();
	g_free(name);

	slug = mime_slug(info.subject);
	if (strlen(slug) == 0 || strlen(slug) > 60 || !g_utf8_validate(slug, -1, NULL))
		abort();
	g_free(slug);
	/* The raw bytes as a subject: invalid UTF-8 and all. */
	if (size > 0 && memchr(data, '\0', size) == NULL) {
		char *raw = g_strndup((const char *)data, size);

		slug = mime_slug(raw);
		if (strlen(slug) == 0 || strlen(slug) > 60 || !g_utf8_validate(slug, -1, NULL))
			abort();
		g_free(slug);
		g_free(raw);
	}

	mime_validate_message((const char *)data, size);
	mime_header_info_clear(&info);
	return 0;
}
