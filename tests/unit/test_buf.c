/* test_buf.c - unit tests of buf.c: caps, growth, JSON escaping */
/* SPDX-License-Identifier: MIT */
#include "../../fcgi/buf.c"
#include "tap.h"

int main(void)
{
    struct buf b;
    buf_init(&b, 10);
    ok(buf_append_str(&b, "0123456789") == BUF_OK && b.len == 10, "fills to the cap");
    ok(buf_append_str(&b, "x") == BUF_TOOBIG && b.len == 10, "past the cap fails, unchanged");
    ok(strcmp(b.data, "0123456789") == 0, "NUL-terminated");
    buf_reset(&b);
    ok(b.len == 0 && b.data[0] == '\0', "reset");
    ok(buf_printf(&b, "%d-%s", 42, "ab") == BUF_OK && strcmp(b.data, "42-ab") == 0, "printf");
    ok(buf_printf(&b, "%s", "toolong") == BUF_TOOBIG, "printf past the cap");
    buf_cleanup(&b);
    buf_init(&b, 1 << 20);
    char big[1000];
    memset(big, 'a', sizeof(big));
    for (int i = 0; i < 500; i++) {
        buf_append(&b, big, sizeof(big));
    }
    ok(b.len == 500000, "grows");
    buf_reset(&b);
    ok(buf_printf(&b, "%0300d", 1) == BUF_OK && b.len == 300, "long printf");
    buf_reset(&b);
    buf_append_json_str(&b, "a\"b\\c\n\x01\x7f");
    ok(strcmp(b.data, "a\\\"b\\\\c\\n\\u0001\\u007f") == 0, "JSON escaping: %s", b.data);
    size_t n;
    char *s = buf_steal(&b, &n);
    ok(b.data == NULL && n > 0, "steal empties the buffer");
    free(s);
    buf_cleanup(&b);
    buf_cleanup(&b);
    ok(1, "cleanup twice is harmless");
    return tap_done();
}
