/* dlms.c - the DLMS general-global-cipher envelope (see p1/dlms.h): header inspection,
 * AES-128-GCM decryption with a 12-byte tag, unauthenticated GCM-keystream decryption for
 * security byte 0x20, and building envelopes for the simulator and tests. It owns one
 * struct p1_dlms per configured meter key: the encryption key, the AAD (0x30 || authentication
 * key) and one OpenSSL cipher context allocated in p1_dlms_new and re-initialised for every
 * frame, so decrypting allocates nothing. Like all of libp1 it never does I/O, never logs and
 * keeps no state besides that object; the framer calls p1_dlms_header while bytes arrive and
 * the decoder calls p1_dlms_decrypt on a whole envelope. */
#include "p1/dlms.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#define DLMS_TAG 0xDB /* general-glo-ciphering */
#define DLMS_TITLE_LEN 8
#define DLMS_LEN_OFF 10       /* first length byte, after tag, title length and title */
#define DLMS_SC_AUTH_ENC 0x30 /* security suite 0, authenticated and encrypted */
#define DLMS_SC_ENC 0x20      /* security suite 0, encrypted only, no tag */
#define DLMS_FC_LEN 4
#define DLMS_IV_LEN (DLMS_TITLE_LEN + DLMS_FC_LEN)
#define DLMS_AAD_LEN (1 + P1_DLMS_KEY_LEN)
#define DLMS_MAX_TOTAL (1024 * 1024) /* bytes; no real envelope comes near this */
#define DLMS_ENC_HEADER_LEN 18       /* header p1_dlms_encrypt writes: 0x82 long form */
#define DLMS_ENC_MAX_L 0xFFFF        /* largest L the 0x82 form can carry */

/* Length forms accepted are short (< 0x80), 0x81 LL and 0x82 LL LL, so the total length is at
 * most 13 + 0xFFFF bytes and the 1 MiB bound can never be exceeded. Should a longer form ever be
 * accepted, p1_dlms_header has to check the bound at run time. */
_Static_assert(DLMS_LEN_OFF + 3 + 0xFFFF <= DLMS_MAX_TOTAL, "envelope bound");

const uint8_t p1_dlms_default_ak[P1_DLMS_KEY_LEN] = {0x00, 0x11, 0x22, 0x33, 0x44, 0x55,
                                                     0x66, 0x77, 0x88, 0x99, 0xAA, 0xBB,
                                                     0xCC, 0xDD, 0xEE, 0xFF};

struct p1_dlms {
	EVP_CIPHER_CTX *ctx; /* AES-128-GCM, fully initialised once in _new */
	uint8_t key[P1_DLMS_KEY_LEN];
	uint8_t aad[DLMS_AAD_LEN]; /* 0x30 || authentication key */
};

int p1_dlms_header(const uint8_t *buf, size_t n, struct p1_dlms_info *ret)
{
	size_t len_bytes, l, sc_off, min_l;

	if (n < 1)
		return 0;
	if (buf[0] != DLMS_TAG)
		return -1;
	if (n < 2)
		return 0;
	if (buf[1] != DLMS_TITLE_LEN)
		return -1;
	if (n <= DLMS_LEN_OFF)
		return 0;

	if (buf[DLMS_LEN_OFF] < 0x80)
		len_bytes = 0;
	else if (buf[DLMS_LEN_OFF] == 0x81)
		len_bytes = 1;
	else if (buf[DLMS_LEN_OFF] == 0x82)
		len_bytes = 2;
	else
		return -1; /* indefinite (0x80) or longer than this envelope can be */
	sc_off = DLMS_LEN_OFF + 1 + len_bytes;
	if (n < sc_off)
		return 0;
	if (len_bytes == 0)
		l = buf[DLMS_LEN_OFF];
	else if (len_bytes == 1)
		l = buf[DLMS_LEN_OFF + 1];
	else
		l = (size_t)buf[DLMS_LEN_OFF + 1] << 8 | buf[DLMS_LEN_OFF + 2];
	if (l < 1 + DLMS_FC_LEN)
		return -1; /* too short for any security byte */
	if (n <= sc_off)
		return 0;

	if (buf[sc_off] == DLMS_SC_AUTH_ENC)
		min_l = 1 + DLMS_FC_LEN + P1_DLMS_TAG_LEN;
	else if (buf[sc_off] == DLMS_SC_ENC)
		min_l = 1 + DLMS_FC_LEN;
	else
		return -1;
	if (l < min_l)
		return -1;
	if (n < sc_off + 1 + DLMS_FC_LEN)
		return 0;

	if (ret) {
		const uint8_t *fc = buf + sc_off + 1;

		memcpy(ret->system_title, buf + 2, DLMS_TITLE_LEN);
		ret->security = buf[sc_off];
		ret->frame_counter = (uint32_t)fc[0] << 24 | (uint32_t)fc[1] << 16 |
		                     (uint32_t)fc[2] << 8 | fc[3];
		ret->header_len = sc_off + 1 + DLMS_FC_LEN;
		ret->total_len = sc_off + l;
	}
	return 1;
}

struct p1_dlms *p1_dlms_new(const uint8_t *key, const uint8_t *ak)
{
	static const uint8_t zero_iv[DLMS_IV_LEN];
	struct p1_dlms *d;

	if (!key)
		return NULL;
	d = calloc(1, sizeof(*d));
	if (!d)
		return NULL;
	memcpy(d->key, key, P1_DLMS_KEY_LEN);
	d->aad[0] = DLMS_SC_AUTH_ENC;
	memcpy(d->aad + 1, ak ? ak : p1_dlms_default_ak, P1_DLMS_KEY_LEN);

	/* The one full initialisation: cipher, IV length (12 is GCM's default, set anyway so a
	 * different default could never change the IV) and a first key, so that every later
	 * EVP_*Init_ex(ctx, NULL, NULL, key, iv) only re-keys the existing state. */
	d->ctx = EVP_CIPHER_CTX_new();
	if (!d->ctx || !EVP_DecryptInit_ex(d->ctx, EVP_aes_128_gcm(), NULL, NULL, NULL) ||
	    !EVP_CIPHER_CTX_ctrl(d->ctx, EVP_CTRL_AEAD_SET_IVLEN, DLMS_IV_LEN, NULL) ||
	    !EVP_DecryptInit_ex(d->ctx, NULL, NULL, d->key, zero_iv)) {
		ERR_clear_error();
		return p1_dlms_free(d);
	}
	return d;
}

struct p1_dlms *p1_dlms_free(struct p1_dlms *d)
{
	if (!d)
		return NULL;
	EVP_CIPHER_CTX_free(d->ctx); /* clears its copy of the key schedule */
	OPENSSL_cleanse(d, sizeof(*d));
	free(d);
	return NULL;
}

static void make_iv(uint8_t iv[DLMS_IV_LEN], const uint8_t title[DLMS_TITLE_LEN], uint32_t fc)
{
	memcpy(iv, title, DLMS_TITLE_LEN);
	iv[8] = (uint8_t)(fc >> 24);
	iv[9] = (uint8_t)(fc >> 16);
	iv[10] = (uint8_t)(fc >> 8);
	iv[11] = (uint8_t)fc;
}

/* Decrypt n bytes at ct into out. With tag != NULL the GCM tag over d->aad and ct must verify;
 * with tag == NULL (security byte 0x20) the GCM keystream alone is applied, which is AES-CTR
 * from the counter block IV || 00000002, and nothing is verified. Returns true on success. */
static bool gcm_open(struct p1_dlms *d, const uint8_t iv[DLMS_IV_LEN], const uint8_t *ct, size_t n,
                     const uint8_t *tag, uint8_t *out)
{
	uint8_t tag_copy[P1_DLMS_TAG_LEN], final_out[16];
	int outl;

	if (!EVP_DecryptInit_ex(d->ctx, NULL, NULL, d->key, iv))
		return false;
	if (tag && !EVP_DecryptUpdate(d->ctx, NULL, &outl, d->aad, DLMS_AAD_LEN))
		return false;
	if (n > 0 && (!EVP_DecryptUpdate(d->ctx, out, &outl, ct, (int)n) || (size_t)outl != n))
		return false;
	/* Without a tag there is nothing for Final to check; the next Init resets the state. */
	if (!tag)
		return true;
	memcpy(tag_copy, tag, P1_DLMS_TAG_LEN); /* the ctrl takes a non-const pointer */
	if (!EVP_CIPHER_CTX_ctrl(d->ctx, EVP_CTRL_AEAD_SET_TAG, P1_DLMS_TAG_LEN, tag_copy))
		return false;
	return EVP_DecryptFinal_ex(d->ctx, final_out, &outl) > 0;
}

enum p1_error p1_dlms_decrypt(struct p1_dlms *d, const uint8_t *frame, size_t len, uint8_t *out,
                              size_t cap, size_t *ret_len, struct p1_dlms_info *ret_info)
{
	struct p1_dlms_info info;
	uint8_t iv[DLMS_IV_LEN];
	size_t tag_len, n;
	bool ok;

	if (!d)
		return P1_ERR_NO_KEY;
	if (!frame || p1_dlms_header(frame, len, &info) != 1 || len != info.total_len)
		return P1_ERR_ENVELOPE;
	tag_len = info.security == DLMS_SC_AUTH_ENC ? P1_DLMS_TAG_LEN : 0;
	n = info.total_len - info.header_len - tag_len;
	if (n > cap)
		return P1_ERR_TOO_LONG;

	make_iv(iv, info.system_title, info.frame_counter);
	/* OpenSSL may queue an error on failure; drop exactly what we added so that a later
	 * SSL_get_error() elsewhere in the same thread (MQTT over TLS) is not misled. */
	ERR_set_mark();
	ok = gcm_open(d, iv, frame + info.header_len, n,
	              tag_len ? frame + info.header_len + n : NULL, out);
	if (!ok) {
		ERR_pop_to_mark();
		if (n > 0)
			OPENSSL_cleanse(out, n); /* never leave unauthenticated plaintext behind */
		return P1_ERR_AUTH;
	}
	ERR_clear_last_mark();
	if (ret_len)
		*ret_len = n;
	if (ret_info)
		*ret_info = info;
	return P1_OK;
}

enum p1_error p1_dlms_encrypt(struct p1_dlms *d, const uint8_t system_title[8],
                              uint32_t frame_counter, const uint8_t *plain, size_t len,
                              uint8_t *out, size_t cap, size_t *ret_len)
{
	uint8_t iv[DLMS_IV_LEN], final_out[16];
	size_t l, total;
	int outl;
	bool ok;

	if (!d)
		return P1_ERR_NO_KEY;
	if (len > DLMS_ENC_MAX_L - (1 + DLMS_FC_LEN + P1_DLMS_TAG_LEN))
		return P1_ERR_TOO_LONG;
	l = 1 + DLMS_FC_LEN + len + P1_DLMS_TAG_LEN;
	total = DLMS_ENC_HEADER_LEN - 1 - DLMS_FC_LEN + l;
	if (!out || cap < total)
		return P1_ERR_TOO_LONG;

	/* Always the 0x82 long form, as Smarty meters send it even for short telegrams. */
	out[0] = DLMS_TAG;
	out[1] = DLMS_TITLE_LEN;
	memcpy(out + 2, system_title, DLMS_TITLE_LEN);
	out[10] = 0x82;
	out[11] = (uint8_t)(l >> 8);
	out[12] = (uint8_t)l;
	out[13] = DLMS_SC_AUTH_ENC;
	make_iv(iv, system_title, frame_counter);
	memcpy(out + 14, iv + DLMS_TITLE_LEN, DLMS_FC_LEN);

	ERR_set_mark();
	ok = EVP_EncryptInit_ex(d->ctx, NULL, NULL, d->key, iv) &&
	     EVP_EncryptUpdate(d->ctx, NULL, &outl, d->aad, DLMS_AAD_LEN) &&
	     (len == 0 ||
	      (EVP_EncryptUpdate(d->ctx, out + DLMS_ENC_HEADER_LEN, &outl, plain, (int)len) &&
	       (size_t)outl == len)) &&
	     EVP_EncryptFinal_ex(d->ctx, final_out, &outl) &&
	     EVP_CIPHER_CTX_ctrl(d->ctx, EVP_CTRL_AEAD_GET_TAG, P1_DLMS_TAG_LEN,
	                         out + DLMS_ENC_HEADER_LEN + len);
	if (!ok) {
		/* Not reachable with a context _new accepted: an envelope we could not build. */
		ERR_pop_to_mark();
		OPENSSL_cleanse(out, total);
		return P1_ERR_ENVELOPE;
	}
	ERR_clear_last_mark();
	if (ret_len)
		*ret_len = total;
	return P1_OK;
}

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

bool p1_dlms_parse_key(const char *s, uint8_t key[P1_DLMS_KEY_LEN])
{
	uint8_t tmp[P1_DLMS_KEY_LEN];
	size_t i;

	if (!s || !key)
		return false;
	/* hex_digit('\0') is -1, so a short string stops the loop before reading past its end. */
	for (i = 0; i < 2 * sizeof(tmp); i++) {
		int v = hex_digit(s[i]);

		if (v < 0) {
			OPENSSL_cleanse(tmp, sizeof(tmp));
			return false;
		}
		if (i % 2 == 0)
			tmp[i / 2] = (uint8_t)(v << 4);
		else
			tmp[i / 2] |= (uint8_t)v;
	}
	if (s[2 * sizeof(tmp)] != '\0') {
		OPENSSL_cleanse(tmp, sizeof(tmp));
		return false;
	}
	memcpy(key, tmp, sizeof(tmp));
	OPENSSL_cleanse(tmp, sizeof(tmp));
	return true;
}
