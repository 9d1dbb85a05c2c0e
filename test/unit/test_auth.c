/* test_auth.c — base64url, JWT HS256, CSRF tokens, bcrypt. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"

static const char secret[] = "unit-test-secret-key-0123456789abcdef";

static void test_b64url_roundtrip(void **state)
{
    (void)state;
    char out[64];
    unsigned char back[64];
    /* RFC 4648 vectors, unpadded, url alphabet */
    assert_int_equal(b64url_encode("f", 1, out, sizeof(out)), 2);
    assert_string_equal(out, "Zg");
    assert_int_equal(b64url_encode("foob", 4, out, sizeof(out)), 6);
    assert_string_equal(out, "Zm9vYg");
    assert_int_equal(b64url_encode("foobar", 6, out, sizeof(out)), 8);
    assert_string_equal(out, "Zm9vYmFy");
    unsigned char bin[] = {0xfb, 0xff, 0xfe};
    b64url_encode(bin, 3, out, sizeof(out));
    assert_string_equal(out, "-__-");
    assert_int_equal(b64url_decode("-__-", 4, back, sizeof(back)), 3);
    assert_memory_equal(back, bin, 3);
    assert_int_equal(b64url_decode("Zm9vYg==", 8, back, sizeof(back)), 4);
    assert_memory_equal(back, "foob", 4);
    assert_int_equal(b64url_decode("Z", 1, back, sizeof(back)), -EINVAL);
    assert_int_equal(b64url_decode("Zm+v", 4, back, sizeof(back)), -EINVAL);
    assert_int_equal(b64url_decode("Zh", 2, back, sizeof(back)), -EINVAL); /* non-canonical */
    assert_int_equal(b64url_encode("foobar", 6, out, 8), -E2BIG);
    assert_int_equal(b64url_decode("Zm9vYmFy", 8, back, 5), -E2BIG);
}

static void test_hmac_vector(void **state)
{
    (void)state;
    /* RFC 4231 test case 2 */
    unsigned char mac[32];
    assert_int_equal(auth_hmac_sha256("Jefe", 4, "what do ya want for nothing?", 28, mac), 0);
    static const unsigned char want[8] = {0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e};
    assert_memory_equal(mac, want, 8);
}

static void test_jwt_roundtrip_and_tamper(void **state)
{
    (void)state;
    struct jwt_claims c = {.iat = 1000, .exp = 2000};
    snprintf(c.sub, sizeof(c.sub), "alice");
    snprintf(c.role, sizeof(c.role), "admin");
    snprintf(c.jti, sizeof(c.jti), "abc");
    char *tok = NULL;
    assert_int_equal(jwt_encode(secret, &c, &tok), 0);
    assert_true(strncmp(tok, "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.", 37) == 0);
    struct jwt_claims out;
    assert_int_equal(jwt_verify(secret, tok, 1500, &out), 0);
    assert_string_equal(out.sub, "alice");
    assert_string_equal(out.role, "admin");
    assert_string_equal(out.jti, "abc");
    assert_int_equal(out.exp, 2000);
    assert_int_equal(out.iat, 1000);
    assert_int_equal(jwt_verify(secret, tok, 2000, &out), -EKEYEXPIRED);
    assert_int_equal(jwt_verify("another-secret-key-0123456789abcdef", tok, 1500, &out), -EACCES);
    /* flip one signature char */
    char *bad = strdup(tok);
    size_t n = strlen(bad);
    bad[n - 2] = bad[n - 2] == 'A' ? 'B' : 'A';
    assert_int_equal(jwt_verify(secret, bad, 1500, &out), -EACCES);
    /* change the payload */
    strcpy(bad, tok);
    char *p = strchr(bad, '.') + 1;
    p[3] = p[3] == 'A' ? 'B' : 'A';
    assert_int_not_equal(jwt_verify(secret, bad, 1500, &out), 0);
    free(bad);
    /* alg none and junk */
    assert_int_equal(jwt_verify(secret,
                                "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4IiwiZXhwIjo5OTk5OTk5OTk5fQ.", 1500,
                                &out),
                     -EINVAL);
    assert_int_equal(jwt_verify(secret, "a.b", 1500, &out), -EINVAL);
    assert_int_equal(jwt_verify(secret, "", 1500, &out), -EINVAL);
    assert_int_equal(jwt_verify(secret, "a.b.c.d", 1500, &out), -EINVAL);
    free(tok);
}

static void test_csrf(void **state)
{
    (void)state;
    char tok[AUTH_CSRF_LEN + 8];
    char nonce[33];
    assert_int_equal(auth_random_hex(nonce, 16), 0);
    assert_int_equal(strlen(nonce), 32);
    assert_int_equal(csrf_token_make(secret, nonce, "access.jwt.here", tok, sizeof(tok)), 0);
    assert_int_equal(strlen(tok), 32 + 1 + 64);
    assert_true(csrf_token_verify(secret, tok, "access.jwt.here"));
    assert_false(csrf_token_verify(secret, tok, "other.jwt.here"));
    assert_false(csrf_token_verify("different-secret-0123456789abcdefgh", tok, "access.jwt.here"));
    tok[40] = tok[40] == 'a' ? 'b' : 'a';
    assert_false(csrf_token_verify(secret, tok, "access.jwt.here"));
    assert_false(csrf_token_verify(secret, "", "x"));
    assert_false(csrf_token_verify(secret, "nodot", "x"));
    assert_false(csrf_token_verify(secret, ".abc", "x"));
    assert_int_equal(csrf_token_make(secret, "bad:nonce", "x", tok, sizeof(tok)), -EINVAL);
    assert_true(auth_str_equal("abc", "abc"));
    assert_false(auth_str_equal("abc", "abd"));
    assert_false(auth_str_equal("ab", "abc"));
    assert_false(auth_str_equal("abcd", "abc"));
}

static void test_bcrypt(void **state)
{
    (void)state;
    char h[AUTH_HASH_MAX];
    assert_int_equal(auth_password_hash("correct horse", 4, h, sizeof(h)), 0);
    assert_true(strncmp(h, "$2b$04$", 7) == 0);
    assert_int_equal(strlen(h), 60);
    assert_int_equal(auth_password_check("correct horse", h), 0);
    assert_int_equal(auth_password_check("correct horsf", h), -EACCES);
    char h2[AUTH_HASH_MAX];
    assert_int_equal(auth_password_hash("correct horse", 4, h2, sizeof(h2)), 0);
    assert_string_not_equal(h, h2); /* salted */
    assert_int_equal(auth_password_check("x", "not-a-hash"), -EINVAL);
    assert_int_equal(auth_password_hash("x", 3, h, sizeof(h)), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_b64url_roundtrip),
        cmocka_unit_test(test_hmac_vector),
        cmocka_unit_test(test_jwt_roundtrip_and_tamper),
        cmocka_unit_test(test_csrf),
        cmocka_unit_test(test_bcrypt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
