/**
 * A minimal decision-shaped endpoint (parse a JSON POST, answer a small JSON body) on
 * node:http or Express, for `npm run bench -- http`. argv: <node|express> <port>.
 */
import { createServer } from 'node:http';
import express from 'express';

const [kind, portText] = process.argv.slice(2);
const port = Number(portText);
const answer = (input: unknown): string => JSON.stringify({ decision_id: 'x', result: { allow: typeof input === 'object' } });

if (kind === 'express') {
  const app = express();
  app.use(express.json({ limit: '1mb' }));
  app.post('/v1/data/*path', (req, res) => {
    res.type('application/json').send(answer((req.body as { input?: unknown }).input));
  });
  app.get('/health', (_req, res) => res.json({}));
  app.listen(port, '127.0.0.1');
} else {
  createServer((req, res) => {
    if (req.method === 'GET') {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      return;
    }
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = JSON.parse(Buffer.concat(chunks).toString()) as { input?: unknown };
      const text = answer(body.input);
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }).end(text);
    });
  }).listen(port, '127.0.0.1');
}
