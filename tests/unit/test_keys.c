/* test_keys.c - unit tests of keys.c: validation, secrets, lookup, budget periods */
/* SPDX-License-Identifier: MIT */
#include "../../fcgi/keys.c"
#include "tap.h"

/* keys_apply on a fresh object; returns it (NULL when refused, err set). */
static cJSON *create(const char *posted, const cJSON *all, char *err, size_t n)
{
    cJSON *p = cJSON_Parse(posted);
    cJSON *stored = cJSON_CreateObject();
    int rc = keys_apply(stored, p, true, all, err, n);
    cJSON_Delete(p);
    if (rc != 0) {
        cJSON_Delete(stored);
        return NULL;
    }
    return stored;
}

static bool refused(const char *posted, const char *word)
{
    char err[300] = "";
    cJSON *all = cJSON_CreateArray();
    cJSON *k = create(posted, all, err, sizeof(err));
    bool r = k == NULL && strstr(err, word) != NULL;
    cJSON_Delete(k);
    cJSON_Delete(all);
    return r;
}

static void validation(void)
{
    char err[300];
    cJSON *all = cJSON_CreateArray();
    cJSON *k = create("{\"Name\":\"team-a\"}", all, err, sizeof(err));
    ok(k != NULL && cJSON_IsArray(cJSON_GetObjectItem(k, "Models")) &&
           cJSON_GetObjectItem(k, "Rpm")->valuedouble == 0 &&
           cJSON_IsNull(cJSON_GetObjectItem(k, "BudgetUsd")) &&
           strcmp(cJSON_GetObjectItem(k, "BudgetPeriod")->valuestring, "month") == 0 &&
           cJSON_IsTrue(cJSON_GetObjectItem(k, "Enabled")) &&
           cJSON_IsString(cJSON_GetObjectItem(k, "CreatedAt")),
       "only Name is required; the rest takes its defaults");
    cJSON_AddItemToArray(all, k);
    ok(create("{\"Name\":\"team-a\"}", all, err, sizeof(err)) == NULL && strstr(err, "unique"),
       "names are unique (%s)", err);
    cJSON *p = cJSON_Parse("{\"Name\":\"team-a\",\"Rpm\":5}");
    ok(keys_apply(k, p, false, all, err, sizeof(err)) == 0 &&
           cJSON_GetObjectItem(k, "Rpm")->valuedouble == 5,
       "a key may keep its own name when changed");
    cJSON_Delete(p);
    p = cJSON_Parse("{\"Rpm\":null,\"Models\":null,\"Id\":\"x\",\"Usage\":{}}");
    ok(keys_apply(k, p, false, all, err, sizeof(err)) == 0 &&
           cJSON_GetObjectItem(k, "Rpm")->valuedouble == 0 &&
           cJSON_IsArray(cJSON_GetObjectItem(k, "Models")) && cJSON_GetObjectItem(k, "Id") == NULL,
       "null Rpm and Models mean none; read-only fields are ignored");
    cJSON_Delete(p);
    cJSON_Delete(all);

    ok(refused("{}", "Name is required"), "no Name on create");
    ok(refused("{\"Name\":\"\"}", "Name"), "empty Name");
    char longname[80];
    memset(longname, 'n', 65);
    longname[65] = '\0';
    char body[120];
    snprintf(body, sizeof(body), "{\"Name\":\"%s\"}", longname);
    ok(refused(body, "Name"), "a 65-character Name");
    ok(refused("{\"Name\":\"a\\u0001b\"}", "Name"), "a control character in Name");
    ok(!refused("{\"Name\":\"\xc3\xa9quipe \xe2\x82\xac\"}", "Name"), "UTF-8 names are fine");
    ok(refused("{\"Name\":\"a\",\"Key\":\"sk-llmp-x\"}", "llmproxy makes the key"),
       "Key cannot be set");
    ok(refused("{\"Name\":\"a\",\"Hash\":\"00\"}", "Hash"), "Hash cannot be set");
    ok(refused("{\"Name\":\"a\",\"Rmp\":5}", "unknown field 'Rmp'"), "a misspelt field");
    ok(refused("{\"Name\":\"a\",\"Rpm\":1.5}", "Rpm"), "Rpm must be whole");
    ok(refused("{\"Name\":\"a\",\"Tpm\":-1}", "Tpm"), "Tpm must not be negative");
    ok(refused("{\"Name\":\"a\",\"BudgetUsd\":-0.01}", "BudgetUsd"), "a negative budget");
    ok(refused("{\"Name\":\"a\",\"BudgetUsd\":\"10\"}", "BudgetUsd"), "a budget as a string");
    ok(refused("{\"Name\":\"a\",\"BudgetTokens\":2.5}", "BudgetTokens"), "tokens must be whole");
    ok(refused("{\"Name\":\"a\",\"BudgetPeriod\":\"week\"}", "BudgetPeriod"), "no weekly period");
    ok(refused("{\"Name\":\"a\",\"ExpiresAt\":\"tomorrow\"}", "RFC 3339"), "a bad ExpiresAt");
    ok(refused("{\"Name\":\"a\",\"Enabled\":1}", "Enabled"), "Enabled must be a boolean");
    ok(refused("{\"Name\":\"a\",\"Models\":[\"\"]}", "Models[0]"), "an empty model name");
    ok(refused("{\"Name\":\"a\",\"Models\":\"gpt-4o\"}", "Models"), "Models must be an array");
    ok(refused("[1]", "object"), "the body must be an object");
    ok(!refused("{\"Name\":\"a\",\"BudgetUsd\":0,\"BudgetTokens\":0,\"ExpiresAt\":null,"
                "\"BudgetPeriod\":\"total\",\"Models\":[\"m\"],\"Rpm\":60,\"Tpm\":100000}",
                ""),
       "every field at once");
}

static void secrets_and_lookup(void)
{
    char err[300];
    cJSON *root = cJSON_Parse("{\"Keys\":[]}");
    cJSON *arr = cJSON_GetObjectItem(root, "Keys");
    char secrets[3][64];
    const char *names[] = {"a", "b", "c"};
    bool shaped = true;
    for (int i = 0; i < 3; i++) {
        char posted[200];
        snprintf(posted, sizeof(posted),
                 "{\"Name\":\"%s\",\"Models\":[\"m%d\"],\"Enabled\":%s,\"ExpiresAt\":%s}", names[i],
                 i, i == 1 ? "false" : "true", i == 2 ? "\"2000-01-01T00:00:00Z\"" : "null");
        cJSON *k = create(posted, arr, err, sizeof(err));
        shaped &= k != NULL && keys_make_secret(k, secrets[i], sizeof(secrets[i])) == 0;
        shaped &= strncmp(secrets[i], KEYS_PREFIX, strlen(KEYS_PREFIX)) == 0 &&
                  strlen(secrets[i]) == strlen(KEYS_PREFIX) + KEYS_SECRET_CHARS;
        for (const char *c = secrets[i] + strlen(KEYS_PREFIX); *c; c++) {
            shaped &= strchr(base62, *c) != NULL;
        }
        shaped &= strncmp(cJSON_GetObjectItem(k, "Prefix")->valuestring, secrets[i], 12) == 0;
        cJSON_AddItemToArray(arr, k);
    }
    ok(shaped, "secrets are sk-llmp- and 40 base62 characters; the Prefix is their first 12");
    ok(strcmp(secrets[0], secrets[1]) != 0 && strcmp(secrets[1], secrets[2]) != 0,
       "every secret is new");
    char *text = cJSON_PrintUnformatted(root);
    bool stored_plain = false;
    for (int i = 0; i < 3; i++) {
        stored_plain |= strstr(text, secrets[i]) != NULL;
    }
    ok(!stored_plain, "the stored file holds no secret, only its hash");
    struct keyring *r = keys_parse(text, strlen(text), err, sizeof(err));
    ok(r != NULL && r->n == 3, "the keys file parses (%s)", r == NULL ? err : "");
    const struct client_key *ka = keys_find(r, secrets[0]);
    const struct client_key *kb = keys_find(r, secrets[1]);
    const struct client_key *kc = keys_find(r, secrets[2]);
    ok(ka != NULL && strcmp(ka->name, "a") == 0 && kb != NULL && strcmp(kb->name, "b") == 0 &&
           kc != NULL && strcmp(kc->name, "c") == 0,
       "each secret finds its key");
    ok(!kb->enabled && ka->enabled && kc->expires_at == 946684800 && ka->expires_at == 0,
       "Enabled and ExpiresAt are read");
    char wrong[64];
    snprintf(wrong, sizeof(wrong), "%s", secrets[0]);
    wrong[strlen(wrong) - 1] ^= 1;
    ok(keys_find(r, wrong) == NULL && keys_find(r, "") == NULL && keys_find(r, NULL) == NULL,
       "a secret off by one bit finds nothing");
    ok(keys_model_ok(ka, "m0") && !keys_model_ok(ka, "m1"), "Models limits the key");
    keys_free(r);

    /* a file with the same hash twice, or a broken entry, is refused whole */
    cJSON_AddItemToArray(arr, cJSON_Duplicate(cJSON_GetArrayItem(arr, 0), true));
    cJSON_ReplaceItemInObject(cJSON_GetArrayItem(arr, 3), "Name", cJSON_CreateString("d"));
    char *twice = cJSON_PrintUnformatted(root);
    ok(keys_parse(twice, strlen(twice), err, sizeof(err)) == NULL && strstr(err, "same Hash"),
       "two keys with one hash: refused (%s)", err);
    cJSON_DeleteItemFromArray(arr, 3);
    cJSON_ReplaceItemInObject(cJSON_GetArrayItem(arr, 1), "Rpm", cJSON_CreateString("x"));
    char *broken = cJSON_PrintUnformatted(root);
    ok(keys_parse(broken, strlen(broken), err, sizeof(err)) == NULL && strstr(err, "Keys[1]"),
       "a bad field names its entry (%s)", err);
    ok(keys_parse("{\"Keys\":{}}", 11, err, sizeof(err)) == NULL, "Keys must be an array");
    ok(keys_parse("not json", 8, err, sizeof(err)) == NULL, "not JSON");
    struct keyring *none = keys_parse("{\"Keys\":[]}", 11, err, sizeof(err));
    ok(none != NULL && none->n == 0 && keys_find(none, secrets[0]) == NULL,
       "an empty file: no keys (keyless)");
    keys_free(none);
    free(text);
    free(twice);
    free(broken);
    cJSON_Delete(root);
}

static void periods(void)
{
    int64_t t = 1796169600 + 3600 * 5 + 17; /* 2026-12-02T05:00:17Z */
    char name[32];
    ok(keys_period_start(KEY_PERIOD_DAY, t) == 1796169600 &&
           keys_period_end(KEY_PERIOD_DAY, t) == 1796169600 + 86400,
       "a day: UTC midnight to midnight");
    ok(keys_period_start(KEY_PERIOD_MONTH, t) == 1796083200 &&
           keys_period_end(KEY_PERIOD_MONTH, t) == 1798761600,
       "December 2026: from its 1st to January 1st 2027");
    int64_t feb = 1803772800; /* 2027-02-28T00:00:00Z */
    ok(keys_period_end(KEY_PERIOD_MONTH, feb) == 1803859200, "February ends on March 1st");
    int64_t jan31 = 1801439999; /* 2027-01-31T23:59:59Z */
    ok(keys_period_end(KEY_PERIOD_MONTH, jan31) == 1801440000, "one second before the month ends");
    ok(keys_period_start(KEY_PERIOD_TOTAL, t) == 0 && keys_period_end(KEY_PERIOD_TOTAL, t) == 0,
       "total: from the start, never ends");
    keys_period_name(KEY_PERIOD_DAY, t, name, sizeof(name));
    ok(strcmp(name, "d2026-12-02") == 0, "day counters are named by date (%s)", name);
    keys_period_name(KEY_PERIOD_MONTH, t, name, sizeof(name));
    ok(strcmp(name, "m2026-12") == 0, "month counters by month (%s)", name);
    keys_period_name(KEY_PERIOD_TOTAL, t, name, sizeof(name));
    ok(strcmp(name, "total") == 0, "one total");
}

int main(void)
{
    validation();
    secrets_and_lookup();
    periods();
    return tap_done();
}
