/* p1/dlms.h - the DLMS general-global-cipher envelope (Luxembourg Smarty, Austrian
 * T210-D-r): AES-128-GCM with a 12-byte tag, IV = system title || frame counter,
 * AAD = security byte || authentication key.
 *
 * Backed by OpenSSL libcrypto through one context allocated at _new and reused.
 *
 * Security byte 0x20 (encrypted, not authenticated; Austrian M-Bus) is decrypted without a
 * tag. Anyone on the wire could turn a 0x30 frame into a 0x20 one, so such a plaintext is
 * trusted only as far as its own CRC: the decoder always runs it through the text framer.
 * On failure out is wiped and *ret_len / *ret_info are left unchanged; both may be NULL.
 */
#ifndef P1_DLMS_H
#define P1_DLMS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "p1/error.h"

#define P1_DLMS_KEY_LEN 16
#define P1_DLMS_TAG_LEN 12

/* Authentication key every Smarty uses. */
extern const uint8_t p1_dlms_default_ak[P1_DLMS_KEY_LEN];

/* Header facts of an envelope. */
struct p1_dlms_info {
	uint8_t system_title[8];
	uint8_t security;        /* 0x30 authenticated+encrypted, 0x20 encrypted only */
	uint32_t frame_counter;
	size_t header_len;       /* bytes before the ciphertext */
	size_t total_len;        /* whole envelope */
};

/* Inspect the first n bytes of a possible envelope (starting with 0xDB).
 * Returns 1 with *ret filled when the header is complete and plausible, 0 when more bytes are
 * needed to tell, -1 when these bytes cannot start an envelope. Pure, no crypto. */
int p1_dlms_header(const uint8_t *buf, size_t n, struct p1_dlms_info *ret);

struct p1_dlms;

/* key: 16 bytes. ak: 16 bytes, or NULL for the Smarty default. NULL on failure. */
struct p1_dlms *p1_dlms_new(const uint8_t *key, const uint8_t *ak);
struct p1_dlms *p1_dlms_free(struct p1_dlms *d);

/* Decrypt one whole envelope into out (cap bytes). Returns P1_OK with *ret_len set,
 * P1_ERR_ENVELOPE for a bad header or length, P1_ERR_TOO_LONG when out is too small,
 * P1_ERR_AUTH when the tag does not verify (wrong key, wrong authentication key, damage). */
enum p1_error p1_dlms_decrypt(struct p1_dlms *d, const uint8_t *frame, size_t len, uint8_t *out,
			      size_t cap, size_t *ret_len, struct p1_dlms_info *ret_info);

/* Build an envelope around plaintext (for the simulator and tests). Returns P1_OK with
 * *ret_len, or P1_ERR_TOO_LONG when out is too small. */
enum p1_error p1_dlms_encrypt(struct p1_dlms *d, const uint8_t system_title[8],
			      uint32_t frame_counter, const uint8_t *plain, size_t len,
			      uint8_t *out, size_t cap, size_t *ret_len);

/* Parse 32 hex digits into 16 bytes. Returns false when s is not exactly that. */
bool p1_dlms_parse_key(const char *s, uint8_t key[P1_DLMS_KEY_LEN]);

#endif
