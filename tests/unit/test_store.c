/* test_store.c - unit tests of store.c: atomic updates, validation, corrupt files, sweeping */
/* SPDX-License-Identifier: MIT */
#include "../../fcgi/store.c"
#include "tap.h"

static char dir[] = "/tmp/llmproxy-store-XXXXXX";

static int add_model(cJSON *root, void *ud, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    cJSON *m = cJSON_Parse((const char *)ud);
    if (m == NULL) {
        return STORE_REJECTED;
    }
    cJSON_AddItemToObject(cJSON_GetObjectItemCaseSensitive(root, "Models"), "m", m);
    return STORE_OK;
}

static int refuse(cJSON *root, void *ud, char *err, size_t errlen)
{
    (void)root;
    (void)ud;
    snprintf(err, errlen, "no");
    return STORE_NOT_FOUND;
}

static char *file_text(void)
{
    static char buf[65536];
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, STORE_FILE);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

int main(void)
{
    ok(mkdtemp(dir) != NULL, "temp dir");
    char err[1024] = "";
    enum store_status st;
    cJSON *root = store_read(dir, &st, err, sizeof(err));
    ok(root != NULL && st == STORE_OK && cJSON_GetObjectItem(root, "Models") != NULL,
       "a missing file reads as no models");
    cJSON_Delete(root);
    const char *good = "{\"Backends\":[{\"Name\":\"a\",\"BaseUrl\":\"http://h/v1\",\"X\":1}]}";
    ok(store_update(dir, add_model, (void *)good, err, sizeof(err)) == STORE_OK,
       "update writes: %s", err);
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, STORE_FILE);
    struct stat sb;
    ok(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0600, "file is 0600");
    ok(strstr(file_text(), "\"X\":\t1") != NULL, "unknown fields written");
    char before[65536];
    snprintf(before, sizeof(before), "%s", file_text());
    const char *bad = "{\"Backends\":[{\"Name\":\"a\",\"BaseUrl\":\"gopher://h\"}]}";
    ok(store_update(dir, add_model, (void *)bad, err, sizeof(err)) == STORE_REJECTED &&
           strstr(err, "BaseUrl") != NULL,
       "invalid change rejected: %s", err);
    ok(strcmp(before, file_text()) == 0, "and nothing changed");
    ok(store_update(dir, refuse, NULL, err, sizeof(err)) == STORE_NOT_FOUND &&
           strcmp(before, file_text()) == 0,
       "a callback's refusal changes nothing");
    /* a corrupt file is never written over */
    FILE *f = fopen(path, "w");
    fputs("{ not json", f);
    fclose(f);
    ok(store_update(dir, add_model, (void *)good, err, sizeof(err)) == STORE_CORRUPT &&
           strstr(err, "invalid") != NULL,
       "corrupt file: refused (%s)", err);
    ok(strcmp(file_text(), "{ not json") == 0, "corrupt file left as it is");
    ok(store_read(dir, &st, err, sizeof(err)) == NULL && st == STORE_CORRUPT, "read reports it");
    f = fopen(path, "w");
    fclose(f);
    ok(store_read(dir, &st, err, sizeof(err)) == NULL && st == STORE_CORRUPT,
       "an empty file is corrupt too");
    unlink(path);
    /* leftovers of a killed writer are swept by the next writer */
    char tmp[512];
    snprintf(tmp, sizeof(tmp), "%s/%sabc123", dir, STORE_TMP_PREFIX);
    f = fopen(tmp, "w");
    fputs("partial", f);
    fclose(f);
    ok(store_update(dir, add_model, (void *)good, err, sizeof(err)) == STORE_OK &&
           access(tmp, F_OK) != 0,
       "stale temp file swept");
    f = fopen(tmp, "w");
    fclose(f);
    store_sweep(dir);
    ok(access(tmp, F_OK) != 0, "store_sweep removes it too");
    /* comments in a hand-written file are accepted */
    f = fopen(path, "w");
    fputs("{ // hand written\n \"Models\": {} }", f);
    fclose(f);
    root = store_read(dir, &st, err, sizeof(err));
    ok(root != NULL, "file with comments reads");
    cJSON_Delete(root);
    unlink(path);
    snprintf(tmp, sizeof(tmp), "%s/%s", dir, STORE_LOCK);
    unlink(tmp);
    rmdir(dir);
    return tap_done();
}
