/**
 * `pavilion credential ...`: issue, present and verify the sample tenants' credentials, and
 * print the accumulator's sizes. Everything is offline and deterministic for a given --now.
 *
 *   pavilion credential parties  --tenant bank|hospital
 *   pavilion credential policy   --tenant bank|hospital
 *   pavilion credential context                     (the sample JSON-LD context the policies pin)
 *   pavilion credential issue    --tenant bank|hospital [--format di|vc-jwt|sd-jwt] [--valid-days N] [--now ISO]
 *   pavilion credential present  --tenant bank|hospital --credential <file> --challenge C --domain D [--disclose a,b] [--now ISO]
 *   pavilion credential verify   --tenant bank|hospital --credential <file> [--challenge C --domain D] [--now ISO]
 *   pavilion credential accumulator-sizes [--members N]
 *
 * Exit codes as `pavilion audit verify`: 0 verified, 1 refused (`verify` still prints its JSON,
 * `credentials` and `errors`; exit 1 when any error or no credential verified), 2 usage.
 */
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { AccumulatorIssuer, CredentialVerifier, PUBLIC_KEY_BYTES, VALUE_BYTES, WITNESS_BYTES, elementFor, encodeWitness, verifyMembership, prepareAccumulatorKey, createDocumentLoader, DidResolver, pinContexts } from '../credentials/index.ts';
import { assertSampleTenant, issueSampleCredential, presentDataIntegrity, presentSdJwtVc, sampleParties, sampleTenantPolicy, sampleTenantPolicyJson, sampleContext, type SampleFormat } from '../credentials/samples.ts';

export const CREDENTIAL_USAGE = `  pavilion credential parties  --tenant bank|hospital
  pavilion credential policy   --tenant bank|hospital
  pavilion credential context
  pavilion credential issue    --tenant bank|hospital [--format di|vc-jwt|sd-jwt] [--valid-days N] [--now ISO]
  pavilion credential present  --tenant bank|hospital --credential <file> --challenge C --domain D [--disclose a,b] [--now ISO]
  pavilion credential verify   --tenant bank|hospital --credential <file> [--challenge C --domain D] [--now ISO]
  pavilion credential accumulator-sizes [--members N]`;

const out = (value: unknown): void => {
  process.stdout.write(`${typeof value === 'string' ? value : JSON.stringify(value, null, 2)}\n`);
};

function nowFrom(text: string | undefined): Date {
  const now = text === undefined ? new Date() : new Date(text);
  if (Number.isNaN(now.getTime())) throw new Error(`--now ${text} is not a date`);
  return now;
}

async function readCredential(file: string | undefined): Promise<unknown> {
  if (file === undefined) throw new Error('--credential <file> is required');
  const text = (await readFile(file, 'utf8')).trim();
  return text.startsWith('{') ? JSON.parse(text) : text;
}

export async function credentialCommand(command: string | undefined, args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      tenant: { type: 'string' },
      format: { type: 'string', default: 'di' },
      'valid-days': { type: 'string', default: '365' },
      now: { type: 'string' },
      credential: { type: 'string' },
      challenge: { type: 'string' },
      domain: { type: 'string' },
      disclose: { type: 'string' },
      members: { type: 'string', default: '1000' },
    },
  });
  if (command === 'accumulator-sizes') return accumulatorSizes(Number(values.members));
  if (command === 'context') {
    // exactly the pinned bytes: save as samples-v1.jsonld next to a config using `policy`'s output
    process.stdout.write(sampleContext().bytes);
    return 0;
  }
  // read when a command needs it: an unknown command is a usage error whatever --tenant says
  const tenant = (): ReturnType<typeof assertSampleTenant> => assertSampleTenant(values.tenant ?? '');
  switch (command) {
    case 'parties': {
      const parties = await sampleParties(tenant());
      out({ anchor: parties.anchor.did, issuer: parties.issuer.did, holder: parties.holder.did });
      return 0;
    }
    case 'policy':
      out(await sampleTenantPolicyJson(tenant()));
      return 0;
    case 'issue': {
      const format = values.format as SampleFormat;
      if (!['di', 'vc-jwt', 'sd-jwt'].includes(format)) throw new Error('--format must be di, vc-jwt or sd-jwt');
      out(await issueSampleCredential(tenant(), { format, issuedAt: nowFrom(values.now), validDays: Number(values['valid-days']) }));
      return 0;
    }
    case 'present': {
      const credential = await readCredential(values.credential);
      const { challenge, domain } = values;
      if (challenge === undefined || domain === undefined) throw new Error('--challenge and --domain are required');
      const { holder } = await sampleParties(tenant());
      if (typeof credential === 'string') {
        const disclose = (values.disclose ?? '').split(',').filter((s) => s !== '');
        out(await presentSdJwtVc(credential, disclose, holder, { nonce: challenge, aud: domain, iatSeconds: Math.floor(nowFrom(values.now).getTime() / 1000) }));
      } else {
        const loader = createDocumentLoader({ contexts: pinContexts([sampleContext()]), dids: new DidResolver() });
        out(await presentDataIntegrity([credential as Record<string, unknown>], holder, { challenge, domain }, loader));
      }
      return 0;
    }
    case 'verify': {
      const id = tenant();
      const credential = await readCredential(values.credential);
      const now = nowFrom(values.now).getTime();
      const verifier = await CredentialVerifier.create([await sampleTenantPolicy(id)], { clock: () => now });
      const options = {
        ...(values.challenge === undefined ? {} : { challenge: values.challenge }),
        ...(values.domain === undefined ? {} : { domain: values.domain }),
      };
      const result = await verifier.verifyEach(id, [credential], options);
      out(result);
      // as `pavilion audit verify`: a refusal is exit 1 (the JSON above says why), so scripts can gate on it
      if (result.errors.length === 0 && result.credentials.length > 0) return 0;
      const first = result.errors[0];
      const more = result.errors.length > 1 ? ` (and ${result.errors.length - 1} more)` : '';
      process.stderr.write(`verification FAILED ${first === undefined ? 'no credential verified' : `[${first.code}] ${first.message}`}${more}\n`);
      return 1;
    }
    default:
      process.stderr.write(`usage:\n${CREDENTIAL_USAGE}\n`);
      return 2;
  }
}

/** Sizes of the accumulator's public values and witnesses, and one witness check's time. */
function accumulatorSizes(members: number): number {
  if (!Number.isInteger(members) || members < 1 || members > 100_000) throw new Error('--members must be 1..100000');
  const acc = AccumulatorIssuer.create('urn:accumulator:sizes', randomBytes);
  let last = acc.add('member-0');
  for (let i = 1; i < members; i++) last = acc.add(`member-${i}`);
  const value = new Uint8Array(Buffer.from(acc.state().value, 'hex'));
  const key = prepareAccumulatorKey(acc.publicKey);
  verifyMembership(value, key, elementFor(`member-${members - 1}`), last.point);
  const times: number[] = [];
  let ok = true;
  for (let i = 0; i < 5; i++) {
    const started = performance.now();
    ok &&= verifyMembership(value, key, elementFor(`member-${members - 1}`), last.point);
    times.push(performance.now() - started);
  }
  const checkMs = times.sort((a, b) => a - b)[2]!;
  out({
    members,
    accumulatorValueBytes: VALUE_BYTES,
    publicKeyBytes: PUBLIC_KEY_BYTES,
    witnessBytes: WITNESS_BYTES,
    encodedWitnessBytes: encodeWitness(last).length,
    witnessCheckMedianMs: Math.round(checkMs * 10) / 10,
    verified: ok,
    anonCredsTailsFileBytesEstimate: Math.round((members / 5000) * 1.6e6),
    note: 'AnonCreds v1 tails files are about 1.6 MB per 5,000 credentials and every holder downloads one; here every holder keeps a 52-byte witness and verifiers keep 48 + 96 bytes.',
  });
  if (ok) return 0;
  process.stderr.write('verification FAILED: the last member\'s witness did not verify against the accumulator\n');
  return 1;
}
