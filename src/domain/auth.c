/*
 * auth.c — base64url, JWT HS256, CSRF tokens and bcrypt (see auth.h).
 *
 * The JWT codec is deliberately narrow: the header must say alg HS256 (an
 * "alg":"none" or RS256 token is malformed, not "unsigned"), the signature
 * is compared in constant time before the claims are even parsed, and exp
 * is mandatory.  Claims are small JSON objects built and read with cJSON.
 */
#include "auth.h"

#include "json.h"

#include <cjson/cJSON.h>
#include <crypt.h>
#include <errno.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

int b64url_encode(const void *in, size_t len, char *out, size_t outlen)
{
    const unsigned char *p = in;
    size_t need = (len / 3) * 4 + (len % 3 ? len % 3 + 1 : 0);
    if (need + 1 > outlen)
        return -E2BIG;
    size_t o = 0;
    size_t i = 0;
    for (; i + 2 < len; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8 | p[i + 2];
        out[o++] = b64url_alphabet[(v >> 18) & 63];
        out[o++] = b64url_alphabet[(v >> 12) & 63];
        out[o++] = b64url_alphabet[(v >> 6) & 63];
        out[o++] = b64url_alphabet[v & 63];
    }
    if (len - i == 1) {
        unsigned v = (unsigned)p[i] << 16;
        out[o++] = b64url_alphabet[(v >> 18) & 63];
        out[o++] = b64url_alphabet[(v >> 12) & 63];
    } else if (len - i == 2) {
        unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8;
        out[o++] = b64url_alphabet[(v >> 18) & 63];
        out[o++] = b64url_alphabet[(v >> 12) & 63];
        out[o++] = b64url_alphabet[(v >> 6) & 63];
    }
    out[o] = '\0';
    return (int)o;
}

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

int b64url_decode(const char *in, size_t len, unsigned char *out, size_t outlen)
{
    while (len && in[len - 1] == '=')
        len--;
    if (len % 4 == 1)
        return -EINVAL;
    size_t need = len / 4 * 3 + (len % 4 ? len % 4 - 1 : 0);
    if (need > outlen)
        return -E2BIG;
    size_t o = 0;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64_value((unsigned char)in[i]);
        if (v < 0)
            return -EINVAL;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)((acc >> bits) & 0xff);
        }
    }
    /* Leftover bits must be zero (canonical encoding). */
    if (bits && (acc & ((1u << bits) - 1)))
        return -EINVAL;
    return (int)o;
}

int auth_hmac_sha256(const void *key, size_t keylen, const void *data, size_t len,
                     unsigned char mac[32])
{
    unsigned int maclen = 0;
    if (!HMAC(EVP_sha256(), key, (int)keylen, data, len, mac, &maclen) || maclen != 32)
        return -EIO;
    return 0;
}

bool auth_str_equal(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned char diff = (unsigned char)(la != lb);
    for (size_t i = 0; i < lb; i++) {
        unsigned char ca = i < la ? (unsigned char)a[i] : 0;
        diff |= (unsigned char)(ca ^ (unsigned char)b[i]);
    }
    return diff == 0;
}

static void to_hex(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

int auth_random_hex(char *out, size_t n)
{
    unsigned char buf[64];
    if (n > sizeof(buf))
        return -E2BIG;
    if (RAND_bytes(buf, (int)n) != 1)
        return -EIO;
    to_hex(buf, n, out);
    return 0;
}

/* ---- JWT ---- */

static const char jwt_header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";

int jwt_encode(const char *secret, const struct jwt_claims *claims, char **token)
{
    cJSON *c = cJSON_CreateObject();
    if (!c)
        return -ENOMEM;
    int ok = cJSON_AddStringToObject(c, "sub", claims->sub) &&
             cJSON_AddStringToObject(c, "role", claims->role) &&
             cJSON_AddNumberToObject(c, "exp", (double)claims->exp) &&
             cJSON_AddNumberToObject(c, "iat", (double)claims->iat) &&
             cJSON_AddStringToObject(c, "jti", claims->jti);
    char *payload = ok ? cJSON_PrintUnformatted(c) : NULL;
    cJSON_Delete(c);
    if (!payload)
        return -ENOMEM;
    size_t plen = strlen(payload);
    size_t cap = (sizeof(jwt_header) + plen) * 4 / 3 + 64;
    char *out = malloc(cap);
    if (!out) {
        cJSON_free(payload);
        return -ENOMEM;
    }
    int n1 = b64url_encode(jwt_header, sizeof(jwt_header) - 1, out, cap);
    int n2 = -E2BIG;
    if (n1 >= 0) {
        out[n1] = '.';
        n2 = b64url_encode(payload, plen, out + n1 + 1, cap - (size_t)n1 - 1);
    }
    cJSON_free(payload);
    if (n1 < 0 || n2 < 0) {
        free(out);
        return -E2BIG;
    }
    size_t signed_len = (size_t)n1 + 1 + (size_t)n2;
    unsigned char mac[32];
    if (auth_hmac_sha256(secret, strlen(secret), out, signed_len, mac) != 0) {
        free(out);
        return -EIO;
    }
    out[signed_len] = '.';
    if (b64url_encode(mac, sizeof(mac), out + signed_len + 1, cap - signed_len - 1) < 0) {
        free(out);
        return -E2BIG;
    }
    *token = out;
    return 0;
}

static int claim_str(const cJSON *c, const char *name, char *out, size_t len, int required)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c, name);
    if (!v) {
        out[0] = '\0';
        return required ? -EINVAL : 0;
    }
    if (!cJSON_IsString(v) || strlen(v->valuestring) >= len)
        return -EINVAL;
    memcpy(out, v->valuestring, strlen(v->valuestring) + 1);
    return 0;
}

int jwt_verify(const char *secret, const char *token, int64_t now_s, struct jwt_claims *out)
{
    size_t tlen = strlen(token);
    if (tlen == 0 || tlen > 4096)
        return -EINVAL;
    const char *d1 = strchr(token, '.');
    const char *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
    if (!d1 || !d2 || strchr(d2 + 1, '.'))
        return -EINVAL;

    unsigned char buf[3072];
    int n = b64url_decode(token, (size_t)(d1 - token), buf, sizeof(buf) - 1);
    if (n < 0)
        return -EINVAL;
    cJSON *h = NULL;
    size_t err_at;
    if (json_parse_bounded((const char *)buf, (size_t)n, 4, &h, &err_at) != 0)
        return -EINVAL;
    const cJSON *alg = cJSON_GetObjectItemCaseSensitive(h, "alg");
    int alg_ok = cJSON_IsString(alg) && strcmp(alg->valuestring, "HS256") == 0;
    cJSON_Delete(h);
    if (!alg_ok)
        return -EINVAL;

    unsigned char sig[64];
    int ns = b64url_decode(d2 + 1, strlen(d2 + 1), sig, sizeof(sig));
    if (ns != 32)
        return -EINVAL;
    unsigned char mac[32];
    if (auth_hmac_sha256(secret, strlen(secret), token, (size_t)(d2 - token), mac) != 0)
        return -EIO;
    unsigned char diff = 0;
    for (int i = 0; i < 32; i++)
        diff |= (unsigned char)(mac[i] ^ sig[i]);
    if (diff)
        return -EACCES;

    n = b64url_decode(d1 + 1, (size_t)(d2 - d1 - 1), buf, sizeof(buf) - 1);
    if (n < 0)
        return -EINVAL;
    cJSON *c = NULL;
    if (json_parse_bounded((const char *)buf, (size_t)n, 4, &c, &err_at) != 0)
        return -EINVAL;
    if (!cJSON_IsObject(c)) {
        cJSON_Delete(c);
        return -EINVAL;
    }
    struct jwt_claims cl = {0};
    int rc = claim_str(c, "sub", cl.sub, sizeof(cl.sub), 1);
    if (!rc)
        rc = claim_str(c, "role", cl.role, sizeof(cl.role), 0);
    if (!rc)
        rc = claim_str(c, "jti", cl.jti, sizeof(cl.jti), 0);
    const cJSON *exp = cJSON_GetObjectItemCaseSensitive(c, "exp");
    const cJSON *iat = cJSON_GetObjectItemCaseSensitive(c, "iat");
    if (!rc && !cJSON_IsNumber(exp))
        rc = -EINVAL;
    if (!rc) {
        cl.exp = (int64_t)exp->valuedouble;
        cl.iat = cJSON_IsNumber(iat) ? (int64_t)iat->valuedouble : 0;
    }
    cJSON_Delete(c);
    if (rc)
        return rc;
    if (cl.sub[0] == '\0')
        return -EINVAL;
    if (now_s >= cl.exp)
        return -EKEYEXPIRED;
    *out = cl;
    return 0;
}

/* ---- CSRF ---- */

int csrf_token_make(const char *secret, const char *nonce, const char *access_token, char *out,
                    size_t outlen)
{
    size_t nl = strlen(nonce), al = strlen(access_token);
    if (nl == 0 || nl > 64 || strchr(nonce, '.') || strchr(nonce, ':'))
        return -EINVAL;
    if (nl + 1 + 64 + 1 > outlen)
        return -E2BIG;
    char *msg = malloc(nl + 1 + al + 1);
    if (!msg)
        return -ENOMEM;
    memcpy(msg, nonce, nl);
    msg[nl] = ':';
    memcpy(msg + nl + 1, access_token, al + 1);
    unsigned char mac[32];
    int rc = auth_hmac_sha256(secret, strlen(secret), msg, nl + 1 + al, mac);
    free(msg);
    if (rc)
        return rc;
    memcpy(out, nonce, nl);
    out[nl] = '.';
    to_hex(mac, sizeof(mac), out + nl + 1);
    return 0;
}

bool csrf_token_verify(const char *secret, const char *token, const char *access_token)
{
    const char *dot = strchr(token, '.');
    if (!dot || dot == token || (size_t)(dot - token) > 64 || strlen(dot + 1) != 64)
        return false;
    char nonce[65];
    memcpy(nonce, token, (size_t)(dot - token));
    nonce[dot - token] = '\0';
    char expect[AUTH_CSRF_LEN + 64];
    if (csrf_token_make(secret, nonce, access_token, expect, sizeof(expect)) != 0)
        return false;
    return auth_str_equal(token, expect);
}

/* ---- bcrypt ---- */

int auth_password_hash(const char *password, int cost, char *out, size_t outlen)
{
    char salt[CRYPT_GENSALT_OUTPUT_SIZE];
    if (cost < 4 || cost > 31)
        return -EINVAL;
    if (!crypt_gensalt_rn("$2b$", (unsigned long)cost, NULL, 0, salt, (int)sizeof(salt)))
        return errno == ENOMEM ? -ENOMEM : -EIO;
    struct crypt_data *cd = calloc(1, sizeof(*cd));
    if (!cd)
        return -ENOMEM;
    int rc = 0;
    const char *h = crypt_rn(password, salt, cd, (int)sizeof(*cd));
    if (!h || h[0] == '*')
        rc = -EIO;
    else if (strlen(h) + 1 > outlen)
        rc = -E2BIG;
    else
        memcpy(out, h, strlen(h) + 1);
    explicit_bzero(cd, sizeof(*cd));
    free(cd);
    return rc;
}

int auth_password_check(const char *password, const char *hash)
{
    if (strncmp(hash, "$2", 2) != 0 || strlen(hash) < 59)
        return -EINVAL;
    struct crypt_data *cd = calloc(1, sizeof(*cd));
    if (!cd)
        return -ENOMEM;
    const char *h = crypt_rn(password, hash, cd, (int)sizeof(*cd));
    int rc;
    if (!h || h[0] == '*')
        rc = -EINVAL;
    else
        rc = auth_str_equal(h, hash) ? 0 : -EACCES;
    explicit_bzero(cd, sizeof(*cd));
    free(cd);
    return rc;
}
