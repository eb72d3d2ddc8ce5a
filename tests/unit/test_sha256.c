/* test_sha256.c - unit tests of sha256.c: the FIPS 180-4 / NIST examples */
/* SPDX-License-Identifier: MIT */
#include "../../fcgi/sha256.c"
#include "tap.h"

#include <stdio.h>
#include <stdlib.h>

int main(void)
{
    char hex[65];
    sha256_hex("", 0, hex);
    ok(strcmp(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") == 0,
       "empty message");
    sha256_hex("abc", 3, hex);
    ok(strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0,
       "\"abc\"");
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    sha256_hex(m, strlen(m), hex);
    ok(strcmp(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1") == 0,
       "448-bit message (two blocks of padding)");
    char *a = malloc(1000000);
    memset(a, 'a', 1000000);
    sha256_hex(a, 1000000, hex);
    free(a);
    ok(strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0") == 0,
       "a million 'a'");
    /* every length around the block edges hashes without trouble and differently */
    char seen[130][65];
    char buf[130];
    memset(buf, 'x', sizeof(buf));
    int distinct = 1;
    for (int n = 0; n < 130; n++) {
        sha256_hex(buf, (size_t)n, seen[n]);
        for (int k = 0; k < n; k++) {
            distinct &= strcmp(seen[k], seen[n]) != 0;
        }
    }
    ok(distinct, "lengths 0..129: all digests distinct");
    /* the padding edges, against Python's hashlib */
    static const struct {
        size_t n;
        const char *hex;
    } edges[] = {
        {55, "d5e285683cd4efc02d021a5c62014694958901005d6f71e89e0989fac77e4072"},
        {56, "04c26261370ee7541549d16dee320c723e3fd14671e66a099afe0a377c16888e"},
        {63, "75220b47218278e656f2013bb8f0c455a25eaf01e86c64924e9d48d89776d6f2"},
        {64, "7ce100971f64e7001e8fe5a51973ecdfe1ced42befe7ee8d5fd6219506b5393c"},
        {65, "9537c5fdf120482f7d58d25e9ed583f52c02b4e304ea814db1633ad565aed7e9"},
        {119, "000b48d4edf0fa7bee3c6236ecd2785baa5db4eeb8bb54341b029e0d9fa5fb0c"},
        {120, "13f05a0b594787f5ecd315edc96141bd3243203d1b7d4f0836f37308b276ba98"},
    };
    for (size_t i = 0; i < ARRAY_LEN(edges); i++) {
        sha256_hex(buf, edges[i].n, hex);
        ok(strcmp(hex, edges[i].hex) == 0, "%zu bytes of 'x'", edges[i].n);
    }
    return tap_done();
}
