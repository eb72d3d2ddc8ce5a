// strict_upstream.mjs - a backend on a second, independent HTTP stack: Node's
// http server (llhttp, which refuses malformed requests as production servers
// do). It also refuses a header sent twice, answers chat completions and
// streams, Responses (by id too), Anthropic Messages (x-api-key and
// anthropic-version required) and multipart forms (parsed by undici's
// FormData, another parser nobody on the team wrote), and lists what it
// received at GET /_log.
// Usage: node strict_upstream.mjs   (prints its port)
import http from 'node:http';

const log = [];
const srv = http.createServer({ requireHostHeader: true }, (req, res) => {
  if (req.method === 'GET' && req.url === '/_log') {
    res.writeHead(200, { 'content-type': 'application/json' });
    return res.end(JSON.stringify(log));
  }
  const parts = [];
  req.on('data', (d) => parts.push(d));
  req.on('end', async () => {
    const raw = Buffer.concat(parts);
    const body = raw.toString('utf8');
    const names = [];
    for (let i = 0; i < req.rawHeaders.length; i += 2) names.push(req.rawHeaders[i]);
    const lower = names.map((n) => n.toLowerCase());
    const dup = lower.filter((n, i) => lower.indexOf(n) !== i);
    log.push({ url: req.url, names, body });
    const fail = (why) => {
      res.writeHead(400, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { message: why, type: 'invalid_request_error', param: null, code: null } }));
    };
    if (dup.length) return fail(`duplicate headers: ${dup}`);
    const json = (obj) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(obj));
    };
    const ct = req.headers['content-type'] || '';
    if (ct.startsWith('multipart/')) {
      let form;
      try {
        form = await new Request('http://strict/', { method: 'POST', headers: { 'content-type': ct }, body: raw }).formData();
      } catch (e) {
        return fail(`multipart: ${e.message}`);
      }
      const file = form.get('file');
      const bytes = file && typeof file !== 'string' ? Buffer.from(await file.arrayBuffer()) : null;
      log[log.length - 1].form = [...form.keys()];
      return json({ text: 'strict-mp', model: form.get('model'), models: form.getAll('model').length,
        file_bytes: bytes ? bytes.length : -1, file_sum: bytes ? bytes.reduce((a, b) => (a + b) % 65521, 0) : -1 });
    }
    const m = req.url.match(/\/responses\/([^/?]+)/);
    if (m) {
      if (ct !== '' || body !== '') return fail('a follow-up carries no body');
      return json({ id: m[1], object: 'response', method: req.method, status: 'completed' });
    }
    if (req.url.endsWith('/messages')) {
      if (!req.headers['x-api-key'] || !req.headers['anthropic-version'] || req.headers.authorization) {
        res.writeHead(401, { 'content-type': 'application/json' });
        return res.end(JSON.stringify({ type: 'error', error: { type: 'authentication_error', message: 'x-api-key' } }));
      }
    }
    let j;
    try { j = JSON.parse(body); } catch { return fail('body is not JSON'); }
    if (j.stream) {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      for (let i = 0; i < 3; i++) {
        res.write(`data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"w${i} "}}]}\n\n`);
      }
      return res.end('data: [DONE]\n\n');
    }
    if (req.url.endsWith('/messages')) {
      return json({ id: 'msg_strict', type: 'message', role: 'assistant', model: j.model,
        content: [{ type: 'text', text: 'strict-ant' }], usage: { input_tokens: 3, output_tokens: 4 } });
    }
    if (req.url.endsWith('/responses')) {
      return json({ id: 'resp_strict_' + log.length, object: 'response', model: j.model, status: 'completed',
        output: [], usage: { input_tokens: 3, output_tokens: 4 } });
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ id: 'x', object: 'chat.completion', model: j.model,
      choices: [{ index: 0, message: { role: 'assistant', content: 'strict-ok' }, finish_reason: 'stop' }] }));
  });
});
srv.listen(0, '127.0.0.1', () => console.log(srv.address().port));
