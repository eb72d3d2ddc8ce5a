// Start the Portkey gateway bound to 127.0.0.1 (its own serve() call passes no
// hostname, so it would listen on *:PORT). Usage:
//   node start.mjs [PORT]        (run with cwd = the directory holding node_modules)
import net from 'node:net';
const port = process.argv[2] || process.env.PORT || '8787';
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === 'number' && typeof args[1] !== 'string') args.splice(1, 0, '127.0.0.1');
  return listen.apply(this, args);
};
process.argv = [process.argv[0], 'start-server.js', `--port=${port}`, '--headless'];
process.env.NODE_ENV ||= 'production';
await import('@portkey-ai/gateway/build/start-server.js');
