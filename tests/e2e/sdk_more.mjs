// The rest of the API through the official SDKs, against a running llmproxy:
// npm `openai` (Responses, audio, images) and npm `@anthropic-ai/sdk`
// (Messages), both pinned in package.json. Driven by tests/e2e/test_sdk.py.
//
// usage: node sdk_more.mjs --port PORT [--key K] CASE...
// Models the cases use (test_sdk.py routes them): gpt (Responses), gpt-cut
// (a Responses stream broken after 2 deltas), whisper (audio and images),
// claude and claude-cut (Anthropic backends), claude-429 (rate limited).
// Prints TAP and exits 1 when a check failed.
import OpenAI, { toFile } from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { parseArgs } from 'node:util';
import { createHash } from 'node:crypto';
import { check, runCases } from './tap.mjs';

const { values: opt, positionals: cases } = parseArgs({
  allowPositionals: true,
  options: { port: { type: 'string' }, key: { type: 'string', default: 'sk-keyless-anything' } },
});

async function threw(fn) {
  try {
    await fn();
    return null;
  } catch (e) {
    return e;
  }
}

const openai = new OpenAI({ baseURL: `http://127.0.0.1:${opt.port}/v1`, apiKey: opt.key, timeout: 15000, maxRetries: 0 });
// what Claude Code and the SDK do with ANTHROPIC_BASE_URL: the host, /v1/messages appended
const anthropic = new Anthropic({ baseURL: `http://127.0.0.1:${opt.port}`, apiKey: opt.key, timeout: 15000, maxRetries: 0 });
const AUDIO = Buffer.concat([Buffer.from([...Array(256).keys()]), Buffer.from('\r\n--boundary-like\r\n'), Buffer.alloc(5000, 7)]);
const sha = (b) => createHash('sha256').update(b).digest('hex');

const CASES = {
  async responses() {
    const r = await openai.responses.create({ model: 'gpt', input: 'hi' });
    check(r.id.startsWith('resp_') && r.output_text === 'hello from sdk-resp', 'responses: create, output_text', r);
    const again = await openai.responses.retrieve(r.id);
    check(again.id === r.id, 'responses: retrieve reaches the backend that made it', again);
    const items = await openai.responses.inputItems.list(r.id, { limit: 5 });
    check(items.data.length === 1 && items.data[0].type === 'message', 'responses: inputItems.list', items);
    const next = await openai.responses.create({ model: 'gpt', input: 'more', previous_response_id: r.id });
    check(next.previous_response_id === r.id, 'responses: previous_response_id follows it', next);
    const gone = await threw(() => openai.responses.retrieve('resp_unknown'));
    check(gone instanceof OpenAI.NotFoundError, 'responses: an unknown id is NotFoundError', gone);
    await openai.responses.del(r.id);
    const deleted = await threw(() => openai.responses.retrieve(r.id));
    check(deleted instanceof OpenAI.NotFoundError, 'responses: deleted, then NotFoundError from the backend', deleted);
  },

  async responses_stream() {
    const stream = await openai.responses.create({ model: 'gpt', input: 'hi', stream: true });
    const types = [];
    let text = '';
    let id = null;
    for await (const ev of stream) {
      types.push(ev.type);
      if (ev.type === 'response.created') id = ev.response.id;
      if (ev.type === 'response.output_text.delta') text += ev.delta;
    }
    check(types[0] === 'response.created' && types.at(-1) === 'response.completed', 'responses_stream: typed events', types);
    check(text === 'tok0 tok1 tok2 ', 'responses_stream: the deltas', text);
    const r = await openai.responses.retrieve(id);
    check(r.id === id, 'responses_stream: its id is retrievable at once', r);
    const s = await openai.responses.create({ model: 'gpt-cut', input: 'hi', stream: true });
    let deltas = 0;
    const e = await threw(async () => {
      for await (const ev of s) if (ev.type === 'response.output_text.delta') deltas++;
    });
    check(e instanceof OpenAI.APIError && /interrupted/.test(e.message) && deltas === 2,
      'responses_stream: a broken stream ends in an APIError after what came', e ?? `deltas ${deltas}`);
  },

  async audio_images() {
    const t = await openai.audio.transcriptions.create({ model: 'whisper', file: await toFile(AUDIO, 'a.wav'), prompt: 'ünï' });
    check(t.text === 'transcribed by sdk-mp', 'audio_images: transcription', t);
    const tr = await openai.audio.translations.create({ model: 'whisper', file: await toFile(AUDIO, 'a.wav') });
    check(tr.text === 'transcribed by sdk-mp', 'audio_images: translation', tr);
    const ed = await openai.images.edit({ model: 'whisper', image: await toFile(AUDIO, 'a.png'), prompt: 'a hat' });
    check(ed.data[0].b64_json === 'aGVsbG8=', 'audio_images: image edit', ed);
    const gen = await openai.images.generate({ model: 'whisper', prompt: 'a cat' });
    check(Array.isArray(gen.choices) || gen.backend === 'sdk-mp', 'audio_images: image generation routed', gen);
    const sp = await openai.audio.speech.create({ model: 'whisper', voice: 'alloy', input: 'hello' });
    const bytes = Buffer.from(await sp.arrayBuffer());
    check(sp.headers.get('content-type') === 'audio/mpeg' && bytes.includes(Buffer.from('sdk-mp')) && bytes.length > 5000,
      'audio_images: speech bytes with their content type', `${sp.headers.get('content-type')} ${bytes.length}`);
    check(sha(AUDIO).length === 64, 'audio_images: file hashed');
  },

  async anthropic_messages() {
    const m = await anthropic.messages.create({ model: 'claude', max_tokens: 64, messages: [{ role: 'user', content: 'hi' }] });
    check(m.type === 'message' && m.content[0].text === 'hello from sdk-ant', 'anthropic_messages: create', m);
    check(m.usage.input_tokens === 10 && m.usage.output_tokens === 20, 'anthropic_messages: usage as the backend said', m.usage);
    const stream = anthropic.messages.stream({ model: 'claude', max_tokens: 64, messages: [{ role: 'user', content: 'hi' }] });
    let text = '';
    stream.on('text', (d) => { text += d; });
    const fin = await stream.finalMessage();
    check(text === 'tok0 tok1 tok2 ' && fin.stop_reason === 'end_turn', 'anthropic_messages: stream, finalMessage', { text, fin });
    const ct = await anthropic.messages.countTokens({ model: 'claude', messages: [{ role: 'user', content: 'hi' }] });
    check(ct.input_tokens === 42, 'anthropic_messages: countTokens', ct);
    const bad = new Anthropic({ baseURL: `http://127.0.0.1:${opt.port}`, apiKey: 'sk-llmp-' + 'x'.repeat(40), maxRetries: 0 });
    const e = await threw(() => bad.messages.create({ model: 'claude', max_tokens: 5, messages: [] }));
    check(opt.key === 'sk-keyless-anything' || (e instanceof Anthropic.AuthenticationError && e.error?.error?.type === 'authentication_error'),
      'anthropic_messages: a wrong key is AuthenticationError', e);
    const nf = await threw(() => anthropic.messages.create({ model: 'nope', max_tokens: 5, messages: [] }));
    check(nf instanceof Anthropic.NotFoundError && nf.error?.error?.type === 'not_found_error', 'anthropic_messages: an unknown model is NotFoundError', nf);
    const rl = await threw(() => anthropic.messages.create({ model: 'claude-429', max_tokens: 5, messages: [] }));
    check(rl instanceof Anthropic.RateLimitError && rl.headers?.['retry-after'] === '7', 'anthropic_messages: all rate limited is RateLimitError with retry-after', rl);
    const cut = anthropic.messages.stream({ model: 'claude-cut', max_tokens: 64, messages: [] });
    let got = '';
    cut.on('text', (d) => { got += d; });
    const ce = await threw(() => cut.finalMessage());
    check(ce instanceof Anthropic.APIError && got === 'tok0 tok1 ', 'anthropic_messages: a broken stream ends in an APIError after what came', ce ?? got);
  },
};

console.log(`# node ${process.version}, port ${opt.port}`);
await runCases(CASES, cases);
