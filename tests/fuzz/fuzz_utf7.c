/* fuzz_utf7.c — libFuzzer target for modified UTF-7: whatever decodes
 * must encode and decode back to the same UTF-8, and any valid UTF-8 must
 * survive encode + decode. Calls only utf7.h, so it links alone. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <glib.h>
#include "utf7.h"

/* Encoded names are printable ASCII only. */
static void fuzz_check_ascii(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
			abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *input = g_strndup((const char *)data, size);
	char *decoded = imap_utf7_decode(input);
	char *encoded, *again;

	if (decoded) {
		if (!g_utf8_validate(decoded, -1, NULL))
			abort();
		encoded = imap_utf7_encode(decoded);
		if (!encoded)
			abort();
		fuzz_check_ascii(encoded);
		again = imap_utf7_decode(encoded);
		if (!again || strcmp(again, decoded) != 0)
			abort();
		g_free(again);
		g_free(encoded);
		g_free(decoded);
	}

	encoded = imap_utf7_encode(input);
	if (g_utf8_validate(input, -1, NULL) != (encoded != NULL))
		abort();
	if (encoded) {
		fuzz_check_ascii(encoded);
		again = imap_utf7_decode(encoded);
		if (!again || strcmp(again, input) != 0)
			abort();
		g_free(again);
		g_free(encoded);
	}
	g_free(input);
	return 0;
}
