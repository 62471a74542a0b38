/* utf7.c — modified UTF-7 (RFC 3501 section 5.1.3), the encoding of IMAP
 * folder names, to and from UTF-8. Pure functions. Decoding is strict:
 * a name that could be spelled two ways would map two server folders to
 * one directory name, so anything non-canonical is refused. */
#include <stdint.h>
#include <string.h>
#include <glib.h>
#include "utf7.h"

static const char imap_utf7_alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

/* Value of a modified base64 character, or -1. */
static int imap_utf7_b64_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == ',')
		return 63;
	return -1;
}

/* Appends one UTF-16 code unit to a shifted run being encoded. */
static void imap_utf7_push_unit(GString *out, uint32_t unit, uint32_t *bits,
                                int *n_bits)
{
	*bits = (*bits << 16) | unit;
	*n_bits += 16;
	while (*n_bits >= 6) {
		*n_bits -= 6;
		g_string_append_c(out, imap_utf7_alphabet[(*bits >> *n_bits) & 0x3f]);
	}
	*bits &= (1u << *n_bits) - 1;
}

char *imap_utf7_encode(const char *utf8)
{
	GString *out;
	const char *p;
	uint32_t bits = 0;
	int n_bits = 0, shifted = 0;

	if (!utf8 || !g_utf8_validate(utf8, -1, NULL))
		return NULL;
	out = g_string_sized_new(strlen(utf8) + 8);
	for (p = utf8; *p; p = g_utf8_next_char(p)) {
		gunichar c = g_utf8_get_char(p);

		if (c >= 0x20 && c <= 0x7e) {
			if (shifted) {
				if (n_bits > 0)
					g_string_append_c(out, imap_utf7_alphabet[(bits << (6 - n_bits)) & 0x3f]);
				g_string_append_c(out, '-');
				shifted = 0;
				bits = 0;
				n_bits = 0;
			}
			if (c == '&')
				g_string_append(out, "&-");
			else
				g_string_append_c(out, (char)c);
			continue;
		}
		if (!shifted) {
			g_string_append_c(out, '&');
			shifted = 1;
		}
		if (c > 0xffff) {
			c -= 0x10000;
			imap_utf7_push_unit(out, 0xd800 | (c >> 10), &bits, &n_bits);
			imap_utf7_push_unit(out, 0xdc00 | (c & 0x3ff), &bits, &n_bits);
		} else {
			imap_utf7_push_unit(out, c, &bits, &n_bits);
		}
	}
	if (shifted) {
		if (n_bits > 0)
			g_string_append_c(out, imap_utf7_alphabet[(bits << (6 - n_bits)) & 0x3f]);
		g_string_append_c(out, '-');
	}
	return g_string_free(out, FALSE);
}

/* Decodes the shifted run starting at *p (just after '&') up to its '-',
 * appending UTF-8 to out and advancing *p past the '-'. */
static int imap_utf7_decode_run(const char **p, GString *out)
{
	const char *s = *p;
	uint32_t bits = 0, high = 0;
	int n_bits = 0, value;

	for (; *s != '-'; s++) {
		value = imap_utf7_b64_value(*s);
		if (value < 0)
			return -1; /* bad character, or the end: unterminated */
		bits = (bits << 6) | (uint32_t)value;
		n_bits += 6;
		if (n_bits < 16)
			continue;
		n_bits -= 16;
		uint32_t unit = (bits >> n_bits) & 0xffff;
		bits &= (1u << n_bits) - 1;
		if (high) {
			if (unit < 0xdc00 || unit > 0xdfff)
				return -1;
			g_string_append_unichar(out, 0x10000 + ((high - 0xd800) << 10) + (unit - 0xdc00));
			high = 0;
		} else if (unit >= 0xd800 && unit <= 0xdbff) {
			high = unit;
		} else if (unit >= 0xdc00 && unit <= 0xdfff) {
			return -1;
		} else if (unit == 0 || (unit >= 0x20 && unit <= 0x7e)) {
			/* Printable ASCII must be sent as itself; NUL never. */
			return -1;
		} else {
			g_string_append_unichar(out, unit);
		}
	}
	/* Leftover padding must be short and zero; an empty run is "&-" only
	 * when nothing was shifted, which the caller handles. */
	if (high || n_bits >= 6 || bits != 0 || s == *p)
		return -1;
	*p = s + 1;
	return 0;
}

char *imap_utf7_decode(const char *mutf7)
{
	GString *out;
	const char *p;

	if (!mutf7)
		return NULL;
	out = g_string_sized_new(strlen(mutf7) + 8);
	for (p = mutf7; *p;) {
		unsigned char c = (unsigned char)*p;

		if (c < 0x20 || c > 0x7e)
			goto fail;
		if (c != '&') {
			g_string_append_c(out, (char)c);
			p++;
			continue;
		}
		p++;
		if (*p == '-') {
			g_string_append_c(out, '&');
			p++;
			continue;
		}
		if (imap_utf7_decode_run(&p, out) < 0)
			goto fail;
	}
	return g_string_free(out, FALSE);
fail:
	g_string_free(out, TRUE);
	return NULL;
}
