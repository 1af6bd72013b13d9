/**
 * Policy revisions built with the real opa CLI, and the bundle server OPA polls: what the
 * rollout and soak benchmarks deliver to both sides.
 */
import { execFile } from 'node:child_process';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { signBundle } from '../../sidecar/src/bundles/index.ts';
import { findOpa } from '../../sidecar/src/lib/tools.ts';

const exec = promisify(execFile);

/** The bank policy of revision `rev`: allows alice, and reports its revision at `bank/authz/rev`. */
function moduleFor(rev: string): string {
  return `package bank.authz\n\nallow if input.user == "alice"\n\nrev := "${rev}"\n`;
}

/** Build revision `rev` with the real opa CLI: a signed Wasm bundle (Pavilion) and a signed rego bundle (OPA). */
export async function buildRevision(work: string, rev: string, keyFile: string, keyPem: string): Promise<{ wasm: Buffer; rego: Buffer }> {
  const src = join(work, `src-${rev}`);
  await mkdir(join(src, 'bank'), { recursive: true });
  await writeFile(join(src, 'bank', 'authz.rego'), moduleFor(rev));
  await writeFile(join(src, '.manifest'), JSON.stringify({ revision: rev, roots: ['bank'] }));
  await writeFile(join(work, 'claims.json'), JSON.stringify({ scope: 'bank' }));
  const opa = findOpa();
  await exec(opa, ['build', '-t', 'wasm', '-b', src, '-e', 'bank/authz/allow', '-e', 'bank/authz/rev', '--revision', rev, '-o', join(work, `${rev}.wasm.tar.gz`)]);
  await exec(opa, ['build', '-b', src, '--revision', rev, '--signing-key', keyFile, '--signing-alg', 'ES256', '--claims-file', join(work, 'claims.json'), '-o', join(work, `${rev}.rego.tar.gz`)]);
  const wasm = await signBundle(await readFile(join(work, `${rev}.wasm.tar.gz`)), { key: keyPem, algorithm: 'ES256', keyId: 'bank', scope: 'bank' });
  return { wasm, rego: await readFile(join(work, `${rev}.rego.tar.gz`)) };
}

export interface BundleServer {
  readonly url: string;
  /** Serve `bundle` from now on, waking the long polls waiting for a change. */
  publish(bundle: Buffer, etag: string): void;
  close(): Promise<void>;
}

/** OPA's bundle service for the peer: one bundle, with ETags and long polling (`Prefer: wait=N`): a 304 is held until a new bundle exists. */
export function startBundleServer(): Promise<BundleServer> {
  let current: { bundle: Buffer; etag: string } | undefined;
  let waiters: Array<() => void> = [];
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const send = (): void => {
      if (current === undefined) {
        res.writeHead(404).end();
        return;
      }
      if (req.headers['if-none-match'] === current.etag) {
        res.writeHead(304, { etag: current.etag, 'content-type': 'application/vnd.openpolicyagent.bundles' }).end();
        return;
      }
      res.writeHead(200, { etag: current.etag, 'content-type': 'application/vnd.openpolicyagent.bundles' }).end(current.bundle);
    };
    const wait = /wait=(\d+)/.exec(String(req.headers['prefer'] ?? ''));
    if (wait !== null && current !== undefined && req.headers['if-none-match'] === current.etag) {
      const timer = setTimeout(() => {
        waiters = waiters.filter((w) => w !== wake);
        send();
      }, Number(wait[1]) * 1000);
      const wake = (): void => {
        clearTimeout(timer);
        send();
      };
      waiters.push(wake);
      return;
    }
    send();
  });
  server.keepAliveTimeout = 120_000;
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      resolve({
        url: `http://127.0.0.1:${port}`,
        publish(bundle, etag) {
          current = { bundle, etag };
          const woken = waiters;
          waiters = [];
          for (const wake of woken) wake();
        },
        close: () => new Promise((done) => {
          server.closeAllConnections();
          server.close(() => done());
        }),
      });
    });
  });
}

/** OPA's configuration for `bank` from `bundleServerUrl`, long polling, verified with the team's ES256 key `bank`. */
export function opaBundleConfig(bundleServerUrl: string, publicKeyPem: string): string {
  return [
    'services:',
    '  bundles:',
    `    url: ${bundleServerUrl}`,
    'bundles:',
    '  bank:',
    '    service: bundles',
    '    resource: bank.tar.gz',
    '    polling:',
    '      min_delay_seconds: 1',
    '      max_delay_seconds: 1',
    '      long_polling_timeout_seconds: 60',
    '    signing:',
    '      keyid: bank',
    '      scope: bank',
    'keys:',
    '  bank:',
    '    algorithm: ES256',
    '    key: |',
    ...publicKeyPem.trim().split('\n').map((l) => `      ${l}`),
    '',
  ].join('\n');
}
