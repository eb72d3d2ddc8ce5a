/* metrics.c - request metrics as counters and histograms in the shared state */
/* SPDX-License-Identifier: MIT */
#include "common.h"
#include "metrics.h"
#include "utf8.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const uint64_t ttfb_le[METRICS_TTFB_BUCKETS] = {
    1000,   2500,    5000,    10000,   25000,    50000,    100000,  250000,
    500000, 1000000, 2500000, 5000000, 10000000, 30000000, 60000000};
static const uint64_t duration_le[METRICS_DURATION_BUCKETS] = {
    5000,    10000,   25000,    50000,    100000,   250000,    500000,    1000000,
    2500000, 5000000, 10000000, 30000000, 60000000, 120000000, 300000000, 600000000};

/* Slot names (ns, a, b, c): the third string tells the kinds apart (the
 * state hashes the three strings with separators). */
#define K_REQ "req"
#define K_ATT "att:"
#define K_USE "use:"
#define K_ACTIVE "active"
#define ACTIVE_NAME "active-requests"
static const char *const hist_kind[] = {"ttfb", "duration"};
/* a histogram's words: [0] sum, then the buckets, over slots of STATE_WORDS */
#define HIST_SLOTS(n) (((n) + 2 + STATE_WORDS - 1) / STATE_WORDS)
_Static_assert(HIST_SLOTS(METRICS_DURATION_BUCKETS) <= 4, "a histogram takes at most 4 slots");

const uint64_t *metrics_bounds(enum metrics_hist h, int *n)
{
    *n = h == METRICS_TTFB ? METRICS_TTFB_BUCKETS : METRICS_DURATION_BUCKETS;
    return h == METRICS_TTFB ? ttfb_le : duration_le;
}

int metrics_bucket(enum metrics_hist h, uint64_t us)
{
    int n;
    const uint64_t *le = metrics_bounds(h, &n);
    int lo = 0, hi = n; /* the first bound >= us */
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (le[mid] >= us) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    return lo;
}

/* prefix then n in decimal into out (n small; out holds 32 bytes) */
static const char *join(char *out, const char *prefix, unsigned n)
{
    size_t k = strlen(prefix);
    memcpy(out, prefix, k);
    char digits[12];
    int d = 0;
    do {
        digits[d++] = (char)('0' + n % 10);
        n /= 10;
    } while (n > 0 && d < 10);
    while (d > 0) {
        out[k++] = digits[--d];
    }
    out[k] = '\0';
    return out;
}

static const char *m(const char *model)
{
    return model != NULL ? model : "";
}

void metrics_request(struct state *st, const char *model, int status)
{
    char s[32];
    join(s, "", status >= 100 && status <= 599 ? (unsigned)status : 0);
    uint64_t *w = state_words(st, STATE_NS_METRIC, m(model), s, K_REQ);
    if (w != NULL) {
        __atomic_add_fetch(&w[0], 1, __ATOMIC_RELAXED);
    }
}

uint64_t metrics_requests(struct state *st, const char *model, int status)
{
    char s[32];
    join(s, "", status >= 0 ? (unsigned)status : 0);
    const uint64_t *w = state_find(st, STATE_NS_METRIC, m(model), s, K_REQ);
    return w != NULL ? __atomic_load_n(&w[0], __ATOMIC_RELAXED) : 0;
}

static void att_name(char *out, size_t n, const char *outcome)
{
    size_t k = sizeof(K_ATT) - 1, len = strlen(outcome);
    len = len < n - k - 1 ? len : n - k - 1;
    memcpy(out, K_ATT, k);
    memcpy(out + k, outcome, len);
    out[k + len] = '\0';
}

void metrics_attempt(struct state *st, const char *model, const char *backend, const char *outcome)
{
    char c[64];
    att_name(c, sizeof(c), outcome);
    uint64_t *w = state_words(st, STATE_NS_METRIC, m(model), backend, c);
    if (w != NULL) {
        __atomic_add_fetch(&w[0], 1, __ATOMIC_RELAXED);
    }
}

uint64_t metrics_attempts(struct state *st, const char *model, const char *backend,
                          const char *outcome)
{
    char c[64];
    att_name(c, sizeof(c), outcome);
    const uint64_t *w = state_find(st, STATE_NS_METRIC, m(model), backend, c);
    return w != NULL ? __atomic_load_n(&w[0], __ATOMIC_RELAXED) : 0;
}

/* (model, backend + key): the key name may hold any printable character, so
 * it goes in its own string with the kind before it */
static void use_name(char *out, size_t n, const char *key)
{
    size_t k = sizeof(K_USE) - 1, len = key != NULL ? strlen(key) : 0;
    len = len < n - k - 1 ? len : n - k - 1;
    memcpy(out, K_USE, k);
    memcpy(out + k, key != NULL ? key : "", len);
    out[k + len] = '\0';
}

void metrics_usage(struct state *st, const char *model, const char *backend, const char *key,
                   uint64_t prompt, uint64_t completion, uint64_t cost_micro)
{
    char c[sizeof(K_USE) + 4 * 64 + 8]; /* a key name: 64 characters of up to 4 bytes */
    use_name(c, sizeof(c), key);
    uint64_t *w = state_words(st, STATE_NS_METRIC, m(model), backend, c);
    if (w == NULL) {
        return;
    }
    if (prompt > 0) {
        __atomic_add_fetch(&w[0], prompt, __ATOMIC_RELAXED);
    }
    if (completion > 0) {
        __atomic_add_fetch(&w[1], completion, __ATOMIC_RELAXED);
    }
    if (cost_micro > 0) {
        __atomic_add_fetch(&w[2], cost_micro, __ATOMIC_RELAXED);
    }
}

bool metrics_usage_get(struct state *st, const char *model, const char *backend, const char *key,
                       uint64_t out[3])
{
    char c[sizeof(K_USE) + 4 * 64 + 8]; /* a key name: 64 characters of up to 4 bytes */
    use_name(c, sizeof(c), key);
    const uint64_t *w = state_find(st, STATE_NS_METRIC, m(model), backend, c);
    for (int i = 0; i < 3; i++) {
        out[i] = w != NULL ? __atomic_load_n(&w[i], __ATOMIC_RELAXED) : 0;
    }
    return w != NULL;
}

static uint64_t *hist_slot(struct state *st, enum metrics_hist h, const char *model, int slot,
                           bool claim)
{
    static const char *const part[] = {"0", "1", "2", "3"};
    const char *b = part[slot];
    return claim ? state_words(st, STATE_NS_METRIC, m(model), b, hist_kind[h])
                 : state_find(st, STATE_NS_METRIC, m(model), b, hist_kind[h]);
}

void metrics_observe(struct state *st, enum metrics_hist h, const char *model, uint64_t us)
{
    int word = 1 + metrics_bucket(h, us);
    uint64_t *w0 = hist_slot(st, h, model, 0, true);
    if (w0 == NULL) {
        return;
    }
    __atomic_add_fetch(&w0[0], us, __ATOMIC_RELAXED);
    uint64_t *w = word < STATE_WORDS ? w0 : hist_slot(st, h, model, word / STATE_WORDS, true);
    if (w != NULL) {
        __atomic_add_fetch(&w[word % STATE_WORDS], 1, __ATOMIC_RELAXED);
    }
}

bool metrics_hist_get(struct state *st, enum metrics_hist h, const char *model, uint64_t *counts,
                      uint64_t *sum_us)
{
    int n;
    metrics_bounds(h, &n);
    bool any = false;
    *sum_us = 0;
    for (int i = 0; i <= n; i++) {
        counts[i] = 0;
    }
    for (int s = 0; s < HIST_SLOTS(n); s++) {
        const uint64_t *w = hist_slot(st, h, model, s, false);
        if (w == NULL) {
            continue;
        }
        any = true;
        for (int j = 0; j < STATE_WORDS; j++) {
            int word = s * STATE_WORDS + j;
            uint64_t v = __atomic_load_n(&w[j], __ATOMIC_RELAXED);
            if (word == 0) {
                *sum_us = v;
            } else if (word - 1 <= n) {
                counts[word - 1] = v;
            }
        }
    }
    return any;
}

/* (model, backend, "last"): [0] last success ms, [1] last error ms,
 * [2] its outcome + 1, [3] its HTTP status */
#define K_LAST "last"

void metrics_backend_ok(struct state *st, const char *model, const char *backend, uint64_t now_ms)
{
    uint64_t *w = state_words(st, STATE_NS_METRIC, m(model), backend, K_LAST);
    if (w != NULL && __atomic_load_n(&w[0], __ATOMIC_RELAXED) != now_ms) {
        __atomic_store_n(&w[0], now_ms, __ATOMIC_RELAXED);
    }
}

void metrics_backend_error(struct state *st, const char *model, const char *backend,
                           uint64_t now_ms, int outcome, int status)
{
    uint64_t *w = state_words(st, STATE_NS_METRIC, m(model), backend, K_LAST);
    if (w != NULL) {
        __atomic_store_n(&w[2], (uint64_t)(outcome + 1), __ATOMIC_RELAXED);
        __atomic_store_n(&w[3], (uint64_t)(status > 0 ? status : 0), __ATOMIC_RELAXED);
        __atomic_store_n(&w[1], now_ms, __ATOMIC_RELEASE);
    }
}

void metrics_last_get(struct state *st, const char *model, const char *backend,
                      struct metrics_last *out)
{
    const uint64_t *w = state_find(st, STATE_NS_METRIC, m(model), backend, K_LAST);
    out->ok_ms = w != NULL ? __atomic_load_n(&w[0], __ATOMIC_RELAXED) : 0;
    out->error_ms = w != NULL ? __atomic_load_n(&w[1], __ATOMIC_ACQUIRE) : 0;
    out->outcome = w != NULL ? (int)__atomic_load_n(&w[2], __ATOMIC_RELAXED) - 1 : -1;
    out->status = w != NULL ? (int)__atomic_load_n(&w[3], __ATOMIC_RELAXED) : 0;
}

/* ---- the recent past ---- */

#define RECENT_BUCKETS 14
static const uint64_t recent_le_ms[RECENT_BUCKETS - 1] = {5,    10,   25,   50,    100,   250,  500,
                                                          1000, 2500, 5000, 10000, 30000, 60000};
#define RING_LAT 6 /* minutes kept of the distributions: the window and the current one */
#define LAT_PARTS ((1 + RECENT_BUCKETS + STATE_WORDS - 1) / STATE_WORDS)

/* The slot of a minute in a ring, reset when the ring comes round to it:
 * word 0 holds the minute + 1 (0: never used). parts > 1: the first part's
 * stamp stands for all. */
static uint64_t *ring_slot(struct state *st, const char *model, const char *backend,
                           const char *kind, uint64_t minute, unsigned ring, unsigned part,
                           bool claim)
{
    /* kind, the minute's place in the ring, '.', the part: "r17.0" */
    char name[32];
    join(name, kind, (unsigned)(minute % ring));
    size_t k = strlen(name);
    name[k] = '.';
    name[k + 1] = (char)('0' + part % 10);
    name[k + 2] = '\0';
    return claim ? state_words(st, STATE_NS_METRIC, m(model), backend, name)
                 : state_find(st, STATE_NS_METRIC, m(model), backend, name);
}

/* The first part of a minute's slot, moved to this minute if it held an
 * older one (or, after the clock stepped back, a later one); NULL when it
 * cannot be used now (no room, or another caller is a minute ahead). */
static uint64_t *ring_current(struct state *st, const char *model, const char *backend,
                              const char *kind, uint64_t minute, unsigned ring, unsigned parts)
{
    uint64_t *w0 = ring_slot(st, model, backend, kind, minute, ring, 0, true);
    if (w0 == NULL) {
        return NULL;
    }
    uint64_t stamp = __atomic_load_n(&w0[0], __ATOMIC_ACQUIRE);
    if (stamp == minute + 1) {
        return w0;
    }
    /* an older minute's, or (the clock stepped back) a later one's: callers
     * a minute apart use other places in the ring, so this is stale */
    if (!__atomic_compare_exchange_n(&w0[0], &stamp, minute + 1, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE)) {
        return stamp == minute + 1 || __atomic_load_n(&w0[0], __ATOMIC_ACQUIRE) == minute + 1
                   ? w0
                   : NULL;
    }
    /* this caller moved the slot to the new minute: clear the old counts */
    for (unsigned p = 0; p < parts; p++) {
        uint64_t *w = p == 0 ? w0 : ring_slot(st, model, backend, kind, minute, ring, p, true);
        for (int i = p == 0 ? 1 : 0; w != NULL && i < STATE_WORDS; i++) {
            __atomic_store_n(&w[i], 0, __ATOMIC_RELAXED);
        }
    }
    return w0;
}

void metrics_recent_attempt(struct state *st, const char *model, const char *backend, bool failed,
                            uint64_t now_ms)
{
    uint64_t minute = now_ms / 60000;
    uint64_t *w = ring_current(st, model, backend, "r", minute, METRICS_RECENT_MINUTES, 1);
    if (w == NULL) {
        return;
    }
    __atomic_add_fetch(&w[1], 1, __ATOMIC_RELAXED);
    if (failed) {
        __atomic_add_fetch(&w[2], 1, __ATOMIC_RELAXED);
    }
}

static int recent_bucket(uint64_t ms)
{
    int i = 0;
    while (i < RECENT_BUCKETS - 1 && ms > recent_le_ms[i]) {
        i++;
    }
    return i;
}

static void recent_add(struct state *st, const char *model, const char *backend, const char *kind,
                       uint64_t minute, uint64_t us)
{
    uint64_t *w0 = ring_current(st, model, backend, kind, minute, RING_LAT, LAT_PARTS);
    if (w0 == NULL) {
        return;
    }
    int word = 1 + recent_bucket((us + 999) / 1000);
    uint64_t *w = word < STATE_WORDS ? w0
                                     : ring_slot(st, model, backend, kind, minute, RING_LAT,
                                                 (unsigned)(word / STATE_WORDS), true);
    if (w != NULL) {
        __atomic_add_fetch(&w[word % STATE_WORDS], 1, __ATOMIC_RELAXED);
    }
}

void metrics_recent_answer(struct state *st, const char *model, const char *backend,
                           uint64_t total_us, uint64_t ttfb_us, uint64_t now_ms)
{
    uint64_t minute = now_ms / 60000;
    recent_add(st, model, backend, "l", minute, total_us);
    if (ttfb_us > 0) {
        recent_add(st, model, backend, "t", minute, ttfb_us);
    }
}

double metrics_recent_quantile(const uint64_t *counts, double q)
{
    uint64_t total = 0;
    for (int i = 0; i < RECENT_BUCKETS; i++) {
        total += counts[i];
    }
    if (total == 0) {
        return -1;
    }
    double want = q * (double)total, cum = 0;
    for (int i = 0; i < RECENT_BUCKETS; i++) {
        if (counts[i] > 0 && cum + (double)counts[i] >= want) {
            double lo = i == 0 ? 0 : (double)recent_le_ms[i - 1];
            double hi = i < RECENT_BUCKETS - 1 ? (double)recent_le_ms[i] : lo * 2;
            return lo + (hi - lo) * ((want - cum) / (double)counts[i]);
        }
        cum += (double)counts[i];
    }
    return (double)recent_le_ms[RECENT_BUCKETS - 2];
}

static void recent_dist(struct state *st, const char *model, const char *backend, const char *kind,
                        uint64_t now_min, uint64_t *counts)
{
    for (int i = 0; i < RECENT_BUCKETS; i++) {
        counts[i] = 0;
    }
    for (uint64_t k = 0; k < METRICS_RECENT_WINDOW && k <= now_min; k++) {
        uint64_t minute = now_min - k;
        for (unsigned p = 0; p < LAT_PARTS; p++) {
            const uint64_t *w = ring_slot(st, model, backend, kind, minute, RING_LAT, p, false);
            if (w == NULL) {
                break;
            }
            if (p == 0 && __atomic_load_n(&w[0], __ATOMIC_ACQUIRE) != minute + 1) {
                break; /* an older minute's, or never used */
            }
            for (int j = 0; j < STATE_WORDS; j++) {
                int word = (int)p * STATE_WORDS + j;
                if (word >= 1 && word <= RECENT_BUCKETS) {
                    counts[word - 1] += __atomic_load_n(&w[j], __ATOMIC_RELAXED);
                }
            }
        }
    }
}

void metrics_recent_get(struct state *st, const char *model, const char *backend, uint64_t now_ms,
                        struct metrics_recent *out)
{
    memset(out, 0, sizeof(*out));
    uint64_t now_min = now_ms / 60000;
    for (unsigned k = 0; k < METRICS_RECENT_MINUTES && k <= now_min; k++) {
        uint64_t minute = now_min - k;
        const uint64_t *w =
            ring_slot(st, model, backend, "r", minute, METRICS_RECENT_MINUTES, 0, false);
        if (w == NULL || __atomic_load_n(&w[0], __ATOMIC_ACQUIRE) != minute + 1) {
            continue;
        }
        uint64_t a = __atomic_load_n(&w[1], __ATOMIC_RELAXED);
        out->per_minute[METRICS_RECENT_MINUTES - 1 - k] = a;
        if (k < METRICS_RECENT_WINDOW) {
            out->attempts += a;
            out->errors += __atomic_load_n(&w[2], __ATOMIC_RELAXED);
        }
    }
    uint64_t counts[RECENT_BUCKETS];
    recent_dist(st, model, backend, "l", now_min, counts);
    out->latency_p50 = metrics_recent_quantile(counts, 0.5);
    out->latency_p95 = metrics_recent_quantile(counts, 0.95);
    recent_dist(st, model, backend, "t", now_min, counts);
    out->ttfb_p50 = metrics_recent_quantile(counts, 0.5);
    out->ttfb_p95 = metrics_recent_quantile(counts, 0.95);
}

/* Requests in flight, one slot per process ([0] its pid, [1] its count):
 * a process that dies with requests in flight leaves a count that a scrape
 * no longer adds (its pid is gone), and the next process takes the slot. */
#define ACTIVE_SLOTS 64
static pthread_mutex_t active_mu = PTHREAD_MUTEX_INITIALIZER;
static int active_idx = -1; /* this process's slot, once claimed */
static uint64_t active_pid;

/* a child of a process that claimed a slot claims its own */
static void active_forked(void)
{
    active_idx = -1;
    active_pid = 0;
    pthread_mutex_init(&active_mu, NULL);
}

static bool pid_alive(uint64_t pid)
{
    return pid != 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM);
}

static uint64_t *active_slot(struct state *st, int i, bool claim)
{
    char name[32];
    join(name, "", (unsigned)i);
    return claim ? state_words(st, STATE_NS_METRIC, ACTIVE_NAME, name, K_ACTIVE)
                 : state_find(st, STATE_NS_METRIC, ACTIVE_NAME, name, K_ACTIVE);
}

static uint64_t *active_words(struct state *st)
{
    int idx = __atomic_load_n(&active_idx, __ATOMIC_ACQUIRE);
    if (idx >= 0) {
        uint64_t *w = active_slot(st, idx, true);
        if (w != NULL && __atomic_load_n(&w[0], __ATOMIC_RELAXED) == active_pid) {
            return w;
        }
    }
    pthread_mutex_lock(&active_mu);
    if (active_pid == 0) {
        static bool registered;
        if (!registered) {
            pthread_atfork(NULL, NULL, active_forked);
            registered = true;
        }
        active_pid = (uint64_t)getpid();
    }
    uint64_t *found = NULL;
    for (int i = 0; i < ACTIVE_SLOTS && found == NULL; i++) {
        uint64_t *w = active_slot(st, i, true);
        if (w == NULL) {
            continue;
        }
        uint64_t p = __atomic_load_n(&w[0], __ATOMIC_ACQUIRE);
        if (p == active_pid) {
            found = w;
        } else if ((p == 0 || !pid_alive(p)) &&
                   __atomic_compare_exchange_n(&w[0], &p, active_pid, false, __ATOMIC_ACQ_REL,
                                               __ATOMIC_ACQUIRE)) {
            __atomic_store_n(&w[1], 0, __ATOMIC_RELEASE);
            found = w;
        }
        if (found != NULL) {
            __atomic_store_n(&active_idx, i, __ATOMIC_RELEASE);
        }
    }
    pthread_mutex_unlock(&active_mu);
    return found; /* NULL: 64 live processes hold every slot (not counted) */
}

void metrics_active(struct state *st, int delta)
{
    uint64_t *w = active_words(st);
    if (w != NULL) {
        __atomic_add_fetch(&w[1], (uint64_t)(int64_t)delta, __ATOMIC_RELAXED);
    }
}

int64_t metrics_active_get(struct state *st)
{
    int64_t sum = 0;
    for (int i = 0; i < ACTIVE_SLOTS; i++) {
        const uint64_t *w = active_slot(st, i, false);
        if (w == NULL || !pid_alive(__atomic_load_n(&w[0], __ATOMIC_ACQUIRE))) {
            continue;
        }
        int64_t v = (int64_t)__atomic_load_n(&w[1], __ATOMIC_RELAXED);
        sum += v > 0 ? v : 0;
    }
    return sum;
}

void metrics_label(struct buf *out, const char *value)
{
    for (const char *p = value != NULL ? value : ""; *p != '\0'; p++) {
        if (*p == '\\') {
            buf_append_str(out, "\\\\");
        } else if (*p == '"') {
            buf_append_str(out, "\\\"");
        } else if (*p == '\n') {
            buf_append_str(out, "\\n");
        } else if ((unsigned char)*p >= 0x80) {
            /* Prometheus refuses a scrape with invalid UTF-8 anywhere */
            size_t n = utf8_len((const unsigned char *)p);
            if (n == 0) {
                buf_append_str(out, "\xef\xbf\xbd");
            } else {
                buf_append(out, p, n);
                p += n - 1;
            }
        } else {
            buf_append(out, p, 1);
        }
    }
}
