/*
 * auth.h — session tokens and password hashes, pure (no I/O but the
 * kernel's random pool).
 *
 *   base64url         RFC 4648 §5 without padding
 *   JWT HS256         header {"alg":"HS256","typ":"JWT"}, claims sub, role, exp, iat, jti;
 *                     verification checks alg, the signature (constant time) and exp
 *   CSRF token        nonce "." hex(HMAC-SHA256(secret, nonce ":" access_token)), so a token
 *                     is only valid together with the session cookie it was issued for
 *   bcrypt            "$2b$" through libxcrypt's crypt_gensalt_rn / crypt_rn (thread-safe)
 *
 * Errors are negative errno: -EINVAL malformed, -EACCES bad signature or
 * password, -EKEYEXPIRED expired, -E2BIG output does not fit, -ENOMEM.
 */
#ifndef EXECD_AUTH_H
#define EXECD_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AUTH_SUB_MAX 128
#define AUTH_ROLE_MAX 16
#define AUTH_JTI_MAX 64
/* A bcrypt hash is 60 characters. */
#define AUTH_HASH_MAX 128
/* 32 hex nonce + "." + 64 hex MAC. */
#define AUTH_CSRF_LEN 98

struct jwt_claims {
    char sub[AUTH_SUB_MAX];
    char role[AUTH_ROLE_MAX];
    char jti[AUTH_JTI_MAX];
    int64_t iat; /* seconds since the epoch */
    int64_t exp;
};

/* Encodes len bytes; out gets a NUL-terminated string.  Returns the length
 * written or -E2BIG. */
int b64url_encode(const void *in, size_t len, char *out, size_t outlen);
/* Decodes (padding optional); returns the byte count or -EINVAL / -E2BIG. */
int b64url_decode(const char *in, size_t len, unsigned char *out, size_t outlen);

/* HMAC-SHA256 of data into mac[32]. */
int auth_hmac_sha256(const void *key, size_t keylen, const void *data, size_t len,
                     unsigned char mac[32]);
/* Constant-time comparison of two NUL-terminated strings (time depends
 * only on the length of b). */
bool auth_str_equal(const char *a, const char *b);
/* n random bytes as 2n hex chars + NUL from the kernel/OpenSSL CSPRNG. */
int auth_random_hex(char *out, size_t n);

/* Signs claims; *token is malloc'd, caller frees. */
int jwt_encode(const char *secret, const struct jwt_claims *claims, char **token);
/* Verifies token at time now_s (seconds) and fills *out on success:
 * -EINVAL malformed or wrong alg, -EACCES bad signature, -EKEYEXPIRED expired. */
int jwt_verify(const char *secret, const char *token, int64_t now_s, struct jwt_claims *out);

/* CSRF token for nonce (hex, ≤ 64 chars) bound to access_token. */
int csrf_token_make(const char *secret, const char *nonce, const char *access_token, char *out,
                    size_t outlen);
/* true when token has the form nonce.mac and mac matches access_token. */
bool csrf_token_verify(const char *secret, const char *token, const char *access_token);

/* bcrypt hash of password with cost 4..31 into out (≥ AUTH_HASH_MAX). */
int auth_password_hash(const char *password, int cost, char *out, size_t outlen);
/* 0 when password matches hash, -EACCES when not, -EINVAL for a bad hash. */
int auth_password_check(const char *password, const char *hash);

#endif
