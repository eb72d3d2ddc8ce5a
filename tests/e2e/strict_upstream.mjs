// strict_upstream.mjs - a backend on a second, independent HTTP stack: Node's
// http server (llhttp, which refuses malformed requests as production servers
// do). It also refuses a header sent twice, answers chat completions and
// streams, and lists what it received at GET /_log.
// Usage: node strict_upstream.mjs   (prints its port)
import http from 'node:http';

const log = [];
const srv = http.createServer({ requireHostHeader: true }, (req, res) => {
  if (req.method === 'GET' && req.url === '/_log') {
    res.writeHead(200, { 'content-type': 'application/json' });
    return res.end(JSON.stringify(log));
  }
  let body = '';
  req.setEncoding('utf8');
  req.on('data', (d) => (body += d));
  req.on('end', () => {
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
    let j;
    try { j = JSON.parse(body); } catch { return fail('body is not JSON'); }
    if (j.stream) {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      for (let i = 0; i < 3; i++) {
        res.write(`data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"w${i} "}}]}\n\n`);
      }
      return res.end('data: [DONE]\n\n');
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ id: 'x', object: 'chat.completion', model: j.model,
      choices: [{ index: 0, message: { role: 'assistant', content: 'strict-ok' }, finish_reason: 'stop' }] }));
  });
});
srv.listen(0, '127.0.0.1', () => console.log(srv.address().port));
