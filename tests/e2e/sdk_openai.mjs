// Client keys through the official OpenAI Node SDK (npm `openai`, pinned in
// package.json), against a running llmproxy. Driven by tests/e2e/test_sdk.py.
//
// usage: node sdk_openai.mjs --base http://127.0.0.1:PORT/v1 [options] CASE...
//   --key K         the client key the cases use (keyless: any string)
//   --keyless       no client key exists (the upstream's rate limit headers pass)
//   --model M       a model the key may use        --other M  one it may not
//   --expect S      what the answer's content starts with ("hello from NAME")
//   --models a,b    what models.list() must list, in any order
//   --chunks N      data chunks a stream carries    --ptok N --ctok N  its usage
// Prints TAP ("ok N - CASE: check" / "not ok N - ..." with "# " diagnostics)
// and exits 1 when a check failed.
import OpenAI from 'openai';
import { VERSION } from 'openai/version';
import { fetch as sdkFetch } from 'openai/_shims/index';
import { parseArgs } from 'node:util';
import { check, runCases } from './tap.mjs';

const { values: opt, positionals: cases } = parseArgs({
  allowPositionals: true,
  options: {
    base: { type: 'string' },
    key: { type: 'string', default: 'sk-keyless-anything' },
    keyless: { type: 'boolean', default: false },
    model: { type: 'string', default: 'm' },
    other: { type: 'string', default: 'other' },
    expect: { type: 'string', default: 'hello from ' },
    models: { type: 'string', default: '' },
    chunks: { type: 'string', default: '3' },
    ptok: { type: 'string', default: '10' },
    ctok: { type: 'string', default: '20' },
  },
});

// Every HTTP request the SDK makes goes through the SDK's own fetch, counted.
let sent = 0;
function client(apiKey, extra = {}) {
  return new OpenAI({
    baseURL: opt.base,
    apiKey,
    timeout: 10000,
    fetch: (url, init) => {
      sent++;
      return sdkFetch(url, init);
    },
    ...extra,
  });
}

const messages = [{ role: 'user', content: 'hi' }];

function describe(e) {
  if (!(e instanceof Error)) return String(e);
  const h = e.headers ? JSON.stringify({ ...e.headers }) : '';
  return `${e.constructor.name} status=${e.status} code=${e.code} type=${e.type} ${e.message}\n${h}\n${e.stack}`;
}

// Runs fn; returns [error, ms] when it threw, [null, ms, result] when it did not.
async function refused(fn) {
  const t0 = Date.now();
  try {
    const got = await fn();
    return [null, Date.now() - t0, got];
  } catch (e) {
    return [e, Date.now() - t0];
  }
}

async function streamChunks(c, extra) {
  const stream = await c.chat.completions.create({ model: opt.model, messages, stream: true, ...extra });
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  return chunks;
}

const CASES = {
  // a valid key (or keyless mode): an answer with content
  async chat() {
    const c = client(opt.key);
    const { data: r, response } = await c.chat.completions.create({ model: opt.model, messages }).withResponse();
    const content = r.choices?.[0]?.message?.content;
    check(typeof content === 'string' && content.startsWith(opt.expect),
      `chat: content starts with "${opt.expect}"`, r);
    check(r.usage?.prompt_tokens === Number(opt.ptok) && r.usage?.completion_tokens === Number(opt.ctok),
      'chat: usage as the backend reported it', r.usage);
    // the fake upstream sends x-ratelimit-remaining-requests: 99; a keyed client never sees it
    const upstreams = response.headers.get('x-ratelimit-remaining-requests') === '99';
    check(opt.keyless ? upstreams : !upstreams,
      opt.keyless ? "chat: keyless, the upstream's x-ratelimit-* headers pass" :
        "chat: the upstream's x-ratelimit-* headers do not reach a keyed client",
      JSON.stringify([...response.headers]));
  },

  async wrong_key() {
    const c = client('sk-llmp-' + 'x'.repeat(40));
    const [e] = await refused(() => c.chat.completions.create({ model: opt.model, messages }));
    check(e instanceof OpenAI.AuthenticationError, 'wrong_key: AuthenticationError', describe(e));
    check(e?.status === 401 && e?.code === 'invalid_api_key', 'wrong_key: 401 invalid_api_key', describe(e));
    check(typeof e?.error?.message === 'string' && e.error.message.length > 0,
      'wrong_key: the error has a message', describe(e));
    const [s] = await refused(() => c.chat.completions.create({ model: opt.model, messages, stream: true }));
    check(s instanceof OpenAI.AuthenticationError && s.status === 401 && s.code === 'invalid_api_key',
      'wrong_key: a stream request too', describe(s));
  },

  async model_not_allowed() {
    const c = client(opt.key);
    const [e] = await refused(() => c.chat.completions.create({ model: opt.other, messages }));
    check(e instanceof OpenAI.PermissionDeniedError, 'model_not_allowed: PermissionDeniedError', describe(e));
    check(e?.status === 403 && e?.code === 'model_not_allowed', 'model_not_allowed: 403 model_not_allowed',
      describe(e));
    const [s] = await refused(() => c.chat.completions.create({ model: opt.other, messages, stream: true }));
    check(s instanceof OpenAI.PermissionDeniedError && s.status === 403 && s.code === 'model_not_allowed',
      'model_not_allowed: a stream request too', describe(s));
  },

  async models_list() {
    const c = client(opt.key);
    const ids = [];
    for await (const m of c.models.list()) ids.push(m.id);
    const want = opt.models.split(',').filter(Boolean).sort();
    check(JSON.stringify(ids.slice().sort()) === JSON.stringify(want),
      `models_list: lists exactly ${want.join(',')}`, ids);
  },

  // not asked for usage: no chunk with empty choices, none with usage
  async stream_plain() {
    const c = client(opt.key);
    const chunks = await streamChunks(c, {});
    let text = '';
    let bad = null;
    try {
      for (const chunk of chunks) text += chunk.choices[0].delta.content ?? '';
    } catch (e) {
      bad = e;
    }
    check(bad === null, 'stream_plain: chunk.choices[0].delta works on every chunk', describe(bad));
    check(chunks.length === Number(opt.chunks) && chunks.every((x) => x.choices.length > 0),
      `stream_plain: ${opt.chunks} chunks, none with empty choices`, chunks);
    check(chunks.every((x) => x.usage == null), 'stream_plain: no chunk carries usage', chunks);
    check(text.startsWith('tok0 '), 'stream_plain: the content arrives', text);
  },

  // asked for usage: exactly one usage chunk, empty choices, the last one
  async stream_usage() {
    const c = client(opt.key);
    const chunks = await streamChunks(c, { stream_options: { include_usage: true } });
    const withUsage = chunks.map((x, i) => [x, i]).filter(([x]) => x.usage != null);
    check(withUsage.length === 1, 'stream_usage: exactly one chunk with usage', chunks);
    const [u, at] = withUsage[0] || [];
    check(at === chunks.length - 1, 'stream_usage: it is the last chunk', chunks);
    check(Array.isArray(u?.choices) && u.choices.length === 0, 'stream_usage: its choices are empty', u);
    check(u?.usage?.prompt_tokens === Number(opt.ptok) && u?.usage?.completion_tokens === Number(opt.ctok),
      'stream_usage: the usage the backend reported', u);
    check(chunks.length === Number(opt.chunks) + 1 && chunks.slice(0, -1).every((x) => x.choices.length > 0),
      `stream_usage: ${opt.chunks} content chunks before it`, chunks);
  },

  // a key with Rpm 2: the third request at once is refused, with Retry-After
  async rate_limit() {
    const c = client(opt.key, { maxRetries: 0 });
    for (let i = 0; i < 2; i++) {
      const [e, , r] = await refused(() => c.chat.completions.create({ model: opt.model, messages }).withResponse());
      check(e === null && r?.data?.choices?.length === 1, `rate_limit: request ${i + 1} of 2 answered`,
        describe(e));
      const h = (name) => r?.response?.headers?.get(name);
      check(h('x-ratelimit-limit-requests') === '2' && h('x-ratelimit-remaining-requests') === String(1 - i),
        `rate_limit: request ${i + 1} says ${1 - i} of 2 remain`,
        r ? JSON.stringify([...r.response.headers]) : describe(e));
    }
    sent = 0;
    const [e] = await refused(() => c.chat.completions.create({ model: opt.model, messages }));
    check(e instanceof OpenAI.RateLimitError, 'rate_limit: third request RateLimitError', describe(e));
    check(e?.status === 429 && e?.code === 'rate_limit_exceeded', 'rate_limit: 429 rate_limit_exceeded',
      describe(e));
    const ra = e?.headers?.['retry-after'];
    check(/^\d+$/.test(ra ?? '') && Number(ra) >= 1, 'rate_limit: retry-after is whole seconds >= 1',
      describe(e));
    check(sent === 1, 'rate_limit: maxRetries 0 sends it once', `sent ${sent}`);
  },

  // a spent budget: 429 insufficient_quota that the SDK (maxRetries 2) does not retry
  async budget() {
    const c = client(opt.key);
    check(c.maxRetries === 2, 'budget: the SDK retries twice by default', `maxRetries ${c.maxRetries}`);
    const [e0] = await refused(() => c.chat.completions.create({ model: opt.model, messages }));
    check(e0 === null, 'budget: the first request is admitted (and spends the budget)', describe(e0));
    sent = 0;
    const [e, ms] = await refused(() => c.chat.completions.create({ model: opt.model, messages }));
    check(e instanceof OpenAI.RateLimitError, 'budget: RateLimitError', describe(e));
    check(e?.status === 429 && e?.code === 'insufficient_quota', 'budget: 429 insufficient_quota', describe(e));
    check(e?.headers?.['x-should-retry'] === 'false', 'budget: x-should-retry: false', describe(e));
    check(sent === 1, 'budget: not retried (one HTTP request)', `sent ${sent}`);
    check(ms < 350, 'budget: refused at once (a retry waits 375 ms or more)', `${ms} ms`);
  },
};

const t0 = Date.now();
console.log(`# openai ${VERSION}, node ${process.version}, ${opt.base}`);
await runCases(CASES, cases, describe);
console.log(`# ${Date.now() - t0} ms`);
