/**
 * The Helm charts: helm/pavilion-sidecar (a library chart that adds the sidecar to another
 * chart's pod) and helm/broker-example (a broker Deployment with Pavilion beside it, wired
 * into Istio). Lints both with --strict, renders the example with its default and its
 * production values, and checks the manifests that matter: the sidecar container, its
 * config (parsed by the sidecar's own config parser), the Istio objects, and that typos and
 * contradictory values fail the render.
 *
 * helm comes from .tools/bin/helm; `before` runs scripts/install-helm.sh, which is quiet
 * when helm v3.22 is there and builds it with `go install` (a few minutes) when not. The
 * alerts are evaluated by promtool (.tools/bin/promtool, scripts/install-promtool.sh, the
 * same way).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { defaultConfig, parseConfig } from '../sidecar/src/config/index.ts';
import { Metrics } from '../sidecar/src/telemetry/index.ts';
import { parser as promqlParser } from '@prometheus-io/lezer-promql';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const HELM = join(ROOT, '.tools', 'bin', 'helm');
const LIB_CHART = join(ROOT, 'helm', 'pavilion-sidecar');
const APP_CHART = join(ROOT, 'helm', 'broker-example');
const PROD_VALUES = join(APP_CHART, 'values-production.yaml');
const RELEASE = 'broker';
const NAMESPACE = 'brokers';

// ---- Kubernetes shapes the assertions read ----------------------------------------------

interface Metadata {
  name: string;
  namespace?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
interface Manifest {
  apiVersion: string;
  kind: string;
  metadata: Metadata;
  spec?: unknown;
  data?: Record<string, string>;
}
interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { secretKeyRef?: { name: string; key: string } };
}
interface Probe {
  httpGet?: { path: string; port: string | number };
  exec?: { command: string[] };
  periodSeconds?: number;
  failureThreshold?: number;
}
interface Container {
  name: string;
  image: string;
  command?: string[];
  env?: EnvVar[];
  ports?: { name: string; containerPort: number; protocol?: string }[];
  startupProbe?: Probe;
  livenessProbe?: Probe;
  readinessProbe?: Probe;
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  securityContext?: {
    runAsNonRoot?: boolean;
    runAsUser?: number;
    readOnlyRootFilesystem?: boolean;
    allowPrivilegeEscalation?: boolean;
    capabilities?: { drop?: string[]; add?: string[] };
    seccompProfile?: { type: string };
  };
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean; subPath?: string }[];
}
interface Volume {
  name: string;
  configMap?: { name: string };
  emptyDir?: { sizeLimit?: string; medium?: string };
  secret?: { secretName: string; defaultMode?: number };
  hostPath?: { path: string };
  csi?: { driver: string; readOnly?: boolean };
  persistentVolumeClaim?: { claimName: string; readOnly?: boolean };
  ephemeral?: { volumeClaimTemplate: { spec: { accessModes?: string[]; resources: { requests: { storage: string } } } } };
}
interface DeploymentSpec {
  replicas: number;
  selector: { matchLabels: Record<string, string> };
  template: {
    metadata: { labels: Record<string, string>; annotations?: Record<string, string> };
    spec: { containers: Container[]; volumes: Volume[]; securityContext?: { fsGroup?: number } };
  };
}
interface Operation {
  ports?: string[];
  paths?: string[];
  notPaths?: string[];
  methods?: string[];
}
interface AuthorizationPolicySpec {
  selector: { matchLabels: Record<string, string> };
  action: string;
  provider?: { name: string };
  rules: { to?: { operation: Operation }[]; from?: { source: { principals?: string[] } }[] }[];
}
interface ServiceEntrySpec {
  hosts: string[];
  exportTo?: string[];
  endpoints: { address: string }[];
  ports: { name: string; number: number; protocol: string }[];
  resolution: string;
  addresses?: string[];
}
interface NetworkPolicyPeer {
  namespaceSelector?: { matchLabels?: Record<string, string>; matchExpressions?: { key: string; operator: string; values: string[] }[] };
  podSelector?: unknown;
  ipBlock?: unknown;
}
interface NetworkPolicySpec {
  podSelector: { matchLabels: Record<string, string> };
  policyTypes: string[];
  ingress: { from: NetworkPolicyPeer[]; ports: { port: number | string; protocol: string }[] }[];
}
interface ServiceSpec {
  clusterIP?: string;
  selector: Record<string, string>;
  ports: { name: string; port: number; targetPort: number | string }[];
}
interface ServiceMonitorSpec {
  selector: { matchLabels: Record<string, string> };
  endpoints: { port: string; path: string }[];
}

// ---- running helm -----------------------------------------------------------------------

const helmHome = mkdtempSync(join(tmpdir(), 'pavilion-helm-test-'));

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

function helm(args: readonly string[], cwd: string = ROOT): Run {
  const result = spawnSync(HELM, args, {
    cwd,
    encoding: 'utf8',
    timeout: 120_000,
    env: {
      ...process.env,
      // Keep helm's repository config and caches out of the developer's home.
      HELM_CACHE_HOME: join(helmHome, 'cache'),
      HELM_CONFIG_HOME: join(helmHome, 'config'),
      HELM_DATA_HOME: join(helmHome, 'data'),
    },
  });
  if (result.error !== undefined) throw result.error;
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

function helmOk(args: readonly string[], cwd?: string): string {
  const run = helm(args, cwd);
  assert.equal(run.status, 0, `helm ${args.join(' ')} failed:\n${run.stderr}${run.stdout}`);
  return run.stdout;
}

function parseManifests(text: string): Manifest[] {
  const manifests: Manifest[] = [];
  for (const doc of parseAllDocuments(text)) {
    assert.deepEqual(doc.errors, [], 'every rendered document is valid YAML');
    const value: unknown = doc.toJS();
    if (value === null || value === undefined) continue;
    const m = value as Manifest;
    assert.equal(typeof m.kind, 'string', 'every rendered document has a kind');
    assert.equal(typeof m.metadata?.name, 'string', `${m.kind} has a name`);
    manifests.push(m);
  }
  return manifests;
}

function render(extraArgs: readonly string[] = [], chart: string = APP_CHART, cwd?: string): Manifest[] {
  return parseManifests(helmOk(['template', RELEASE, chart, '--namespace', NAMESPACE, ...extraArgs], cwd));
}

function the(manifests: readonly Manifest[], kind: string, nameSuffix = ''): Manifest {
  const found = manifests.filter((m) => m.kind === kind && m.metadata.name.endsWith(nameSuffix));
  assert.equal(found.length, 1, `exactly one ${kind}${nameSuffix ? ` named *${nameSuffix}` : ''} (found ${found.length})`);
  return found[0] as Manifest;
}

function kinds(manifests: readonly Manifest[]): string[] {
  return manifests.map((m) => m.kind).sort();
}

function deployment(manifests: readonly Manifest[]): DeploymentSpec {
  return the(manifests, 'Deployment').spec as DeploymentSpec;
}

function container(manifests: readonly Manifest[], name: string): Container {
  const found = deployment(manifests).template.spec.containers.find((c) => c.name === name);
  assert.ok(found, `the Deployment has a container named ${name}`);
  return found;
}

function env(c: Container, name: string): EnvVar | undefined {
  return c.env?.find((e) => e.name === name);
}

/** The container's literal environment (values from Secrets are not known at render time). */
function literalEnv(c: Container): Record<string, string> {
  return Object.fromEntries((c.env ?? []).flatMap((e) => (e.value === undefined ? [] : [[e.name, e.value]])));
}

function mount(c: Container, mountPath: string): { name: string; readOnly?: boolean; subPath?: string } | undefined {
  return c.volumeMounts?.find((m) => m.mountPath === mountPath);
}

function volume(manifests: readonly Manifest[], name: string): Volume {
  const found = deployment(manifests).template.spec.volumes.find((v) => v.name === name);
  assert.ok(found, `the pod has a volume named ${name}`);
  return found;
}

function renderedConfig(manifests: readonly Manifest[]): Record<string, unknown> {
  const text = the(manifests, 'ConfigMap', '-pavilion-config').data?.['config.json'];
  assert.equal(typeof text, 'string', 'the ConfigMap has config.json');
  return JSON.parse(text as string) as Record<string, unknown>;
}

/** `expr` parses as PromQL (Prometheus' own grammar, @prometheus-io/lezer-promql): no error node anywhere in its tree. */
function assertPromQl(expr: string, what: string): void {
  const errors: string[] = [];
  promqlParser.parse(expr).iterate({
    enter: (node) => {
      if (node.type.isError) errors.push(`at ${node.from}: ${JSON.stringify(expr.slice(node.from, node.from + 24))}`);
    },
  });
  assert.deepEqual(errors, [], `${what}: not PromQL`);
}

/** helm template with extra args must fail, and its error output must match `pattern`. */
function renderFails(args: readonly string[], pattern: RegExp): void {
  const run = helm(['template', RELEASE, APP_CHART, '--namespace', NAMESPACE, ...args]);
  assert.notEqual(run.status, 0, `helm template ${args.join(' ')} should fail`);
  assert.match(run.stderr, pattern);
}

/** A values file (in the test's temporary directory) for values --set cannot spell. */
let valuesFiles = 0;
function valuesFile(text: string): string {
  const file = join(helmHome, `values-${++valuesFiles}.yaml`);
  writeFileSync(file, text);
  return file;
}

/** A Kubernetes quantity ("10Gi", "4Gi", "512Mi") in bytes. */
function bytesOf(quantity: string): number {
  const m = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti)?$/.exec(quantity);
  assert.ok(m, `${quantity} is a quantity`);
  return Number(m[1]) * ({ '': 1, Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3, Ti: 1024 ** 4 } as Record<string, number>)[m[2] ?? '']!;
}

// The JSON schemas, read as plain objects.
interface Schema {
  type?: string | string[];
  additionalProperties?: boolean | Schema;
  properties?: Record<string, Schema>;
}
function readSchema(chart: string): Schema {
  return JSON.parse(readFileSync(join(chart, 'values.schema.json'), 'utf8')) as Schema;
}

// The fields of Istio's MeshConfig.ExtensionProvider (name + envoyExtAuthzGrpc) and of
// EnvoyExternalAuthorizationGrpcProvider / EnvoyExternalAuthorizationRequestBody, in the
// JSON (camelCase) form meshConfig uses (istio/api mesh/v1alpha1/config.proto).
const EXTENSION_PROVIDER_FIELDS = new Set(['name', 'envoyExtAuthzGrpc']);
const GRPC_PROVIDER_FIELDS = new Set(['service', 'port', 'timeout', 'failOpen', 'statusOnError', 'includeRequestBodyInCheck']);
const REQUEST_BODY_FIELDS = new Set(['maxRequestBytes', 'allowPartialMessage', 'packAsBytes']);

function assertIstioProviderShape(provider: Record<string, unknown>, where: string): Record<string, unknown> {
  for (const key of Object.keys(provider)) assert.ok(EXTENSION_PROVIDER_FIELDS.has(key), `${where}: unknown ExtensionProvider field ${key}`);
  const grpc = provider['envoyExtAuthzGrpc'] as Record<string, unknown> | undefined;
  assert.ok(grpc, `${where}: has envoyExtAuthzGrpc`);
  for (const key of Object.keys(grpc)) assert.ok(GRPC_PROVIDER_FIELDS.has(key), `${where}: unknown envoyExtAuthzGrpc field ${key}`);
  const body = grpc['includeRequestBodyInCheck'] as Record<string, unknown> | undefined;
  for (const key of Object.keys(body ?? {})) assert.ok(REQUEST_BODY_FIELDS.has(key), `${where}: unknown includeRequestBodyInCheck field ${key}`);
  return grpc;
}

// ---- setup ------------------------------------------------------------------------------

let byDefault: Manifest[] = [];
let production: Manifest[] = [];

before(() => {
  const install = spawnSync('bash', [join(ROOT, 'scripts', 'install-helm.sh')], { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'] });
  assert.equal(install.status, 0, 'scripts/install-helm.sh installs helm');
  assert.ok(existsSync(HELM), `helm is at ${HELM}`);
  // charts/ is not committed: vendor the library chart from ../pavilion-sidecar (Chart.lock).
  helmOk(['dependency', 'build', APP_CHART]);
  byDefault = render();
  production = render(['--values', PROD_VALUES]);
});

after(() => {
  rmSync(helmHome, { recursive: true, force: true });
});

// ---- tests ------------------------------------------------------------------------------

describe('helm lint --strict', () => {
  test('the library chart pavilion-sidecar lints clean', () => {
    helmOk(['lint', '--strict', LIB_CHART]);
  });

  test('broker-example lints clean with its default values', () => {
    helmOk(['lint', '--strict', APP_CHART, '--namespace', NAMESPACE]);
  });

  test('broker-example lints clean with values-production.yaml', () => {
    helmOk(['lint', '--strict', APP_CHART, '--namespace', NAMESPACE, '--values', PROD_VALUES]);
  });
});

describe('broker-example, default values', () => {
  test('renders the broker, its Service, the sidecar ConfigMap and the Istio objects, and nothing opt-in', () => {
    assert.deepEqual(kinds(byDefault), [
      'AuthorizationPolicy', 'ConfigMap', 'Deployment', 'PeerAuthentication', 'Service', 'ServiceAccount', 'ServiceEntry',
    ]);
  });

  test('the broker Deployment runs the broker and the pavilion sidecar', () => {
    const names = deployment(byDefault).template.spec.containers.map((c) => c.name);
    assert.deepEqual(names, ['broker', 'pavilion']);
    assert.equal(container(byDefault, 'broker').image, 'ghcr.io/example/broker:1.0.0');
    assert.equal(container(byDefault, 'pavilion').image, 'ghcr.io/example/pavilion-sidecar:0.1.0');
  });

  test('the sidecar runs the compiled entry point by default', () => {
    assert.deepEqual(container(byDefault, 'pavilion').command, ['node', 'dist/sidecar/src/main.js']);
  });

  test('the sidecar declares http-pavilion 8181 and grpc-authz 9191', () => {
    const ports = container(byDefault, 'pavilion').ports?.map((p) => [p.name, p.containerPort, p.protocol]);
    assert.deepEqual(ports, [['http-pavilion', 8181, 'TCP'], ['grpc-authz', 9191, 'TCP']]);
  });

  test('startup and liveness probe GET /health/live, readiness GET /health/ready, on the http port', () => {
    const c = container(byDefault, 'pavilion');
    assert.deepEqual(c.startupProbe?.httpGet, { path: '/health/live', port: 'http-pavilion' });
    assert.deepEqual(c.livenessProbe?.httpGet, { path: '/health/live', port: 'http-pavilion' });
    assert.deepEqual(c.readinessProbe?.httpGet, { path: '/health/ready', port: 'http-pavilion' });
  });

  test('the sidecar bound to 127.0.0.1 is probed through Istio, which is told to probe localhost', () => {
    // The kubelet probes the pod IP; the istio-agent (after the injector's probe rewrite)
    // probes localhost only with REWRITE_PROBE_LEGACY_LOCALHOST_DESTINATION.
    const annotations = deployment(byDefault).template.metadata.annotations ?? {};
    assert.equal(annotations['sidecar.istio.io/rewriteAppHTTPProbers'], 'true');
    const proxyConfig = JSON.parse(annotations['proxy.istio.io/config'] ?? '{}') as { proxyMetadata?: Record<string, string> };
    assert.equal(proxyConfig.proxyMetadata?.['REWRITE_PROBE_LEGACY_LOCALHOST_DESTINATION'], 'true');
    assert.equal(deployment(byDefault).template.metadata.labels['sidecar.istio.io/inject'], 'true');
  });

  test('the sidecar runs as 10001, non-root, read-only root, no privilege escalation, ALL capabilities dropped, RuntimeDefault seccomp', () => {
    const sc = container(byDefault, 'pavilion').securityContext;
    assert.equal(sc?.runAsNonRoot, true);
    assert.equal(sc?.runAsUser, 10001);
    assert.equal(sc?.readOnlyRootFilesystem, true);
    assert.equal(sc?.allowPrivilegeEscalation, false);
    assert.deepEqual(sc?.capabilities, { drop: ['ALL'] });
    assert.deepEqual(sc?.seccompProfile, { type: 'RuntimeDefault' });
  });

  test('the hardening cannot be values-ed away: root, a writable root, privilege escalation, privileged, an added capability, another seccomp or procMount, or a guard removed with null fail the render; another UID merges over the rest', () => {
    for (const [setting, message] of [
      ['pavilion.securityContext.runAsNonRoot=false', /runAsNonRoot': value must be true/],
      ['pavilion.securityContext.readOnlyRootFilesystem=false', /readOnlyRootFilesystem': value must be true/],
      ['pavilion.securityContext.allowPrivilegeEscalation=true', /allowPrivilegeEscalation': value must be false/],
      ['pavilion.securityContext.privileged=true', /privileged': value must be false/],
      ['pavilion.securityContext.capabilities.add[0]=NET_ADMIN', /capabilities\/add': maxItems/],
      ['pavilion.securityContext.seccompProfile.type=Unconfined', /seccompProfile\/type': value must be one of/],
      ['pavilion.securityContext.procMount=Unmasked', /procMount': value must be 'Default'/],
      // null deletes a key in Helm's merge: removing a guard is refused like turning it off
      ['pavilion.securityContext.readOnlyRootFilesystem=null', /missing property 'readOnlyRootFilesystem'/],
      ['pavilion.securityContext.capabilities.drop=null', /missing property 'drop'/],
      ['pavilion.securityContext=null', /pavilion.securityContext must not be removed/],
    ] as const) {
      renderFails(['--set', setting], message);
    }
    const sc = container(render(['--set', 'pavilion.securityContext.runAsUser=2000']), 'pavilion').securityContext;
    assert.equal(sc?.runAsUser, 2000);
    assert.equal(sc?.runAsNonRoot, true, 'the other defaults stay');
    assert.equal(sc?.readOnlyRootFilesystem, true);
  });

  test('the sidecar requests 200m/256Mi and is limited to 1 CPU/512Mi', () => {
    assert.deepEqual(container(byDefault, 'pavilion').resources, {
      requests: { cpu: '200m', memory: '256Mi' },
      limits: { cpu: '1', memory: '512Mi' },
    });
  });

  test('PAVILION_CONFIG names the mounted config; no HSM PIN, NATS or Redis without values', () => {
    const c = container(byDefault, 'pavilion');
    assert.deepEqual(env(c, 'PAVILION_CONFIG'), { name: 'PAVILION_CONFIG', value: '/etc/pavilion/config.json' });
    for (const name of ['PAVILION_HSM_PIN', 'PAVILION_NATS_URL', 'PAVILION_REDIS_URL', 'PAVILION_REDIS_PASSWORD']) {
      assert.equal(env(c, name), undefined, `${name} is not set by default`);
    }
  });

  test('the config is mounted read-only from the ConfigMap; /var/lib/pavilion and /tmp are emptyDirs, the only writable paths', () => {
    const c = container(byDefault, 'pavilion');
    assert.deepEqual(mount(c, '/etc/pavilion/config.json'), {
      name: 'pavilion-config', mountPath: '/etc/pavilion/config.json', subPath: 'config.json', readOnly: true,
    });
    assert.equal(volume(byDefault, 'pavilion-config').configMap?.name, `${RELEASE}-pavilion-config`);
    assert.equal(mount(c, '/var/lib/pavilion')?.name, 'pavilion-data');
    assert.equal(mount(c, '/tmp')?.name, 'pavilion-tmp');
    assert.deepEqual(volume(byDefault, 'pavilion-data').emptyDir, { sizeLimit: '1Gi' });
    assert.ok(volume(byDefault, 'pavilion-tmp').emptyDir, 'tmp is an emptyDir');
    const writable = (c.volumeMounts ?? []).filter((m) => m.readOnly !== true).map((m) => m.mountPath).sort();
    assert.deepEqual(writable, ['/tmp', '/var/lib/pavilion']);
  });

  test('the ConfigMap holds the production defaults, the tenants and the ext_authz port, and the sidecar parses it', () => {
    const raw = renderedConfig(byDefault);
    assert.deepEqual(raw['http'], { host: '127.0.0.1', port: 8181 });
    assert.deepEqual(raw['bundles'], { directory: '/var/lib/pavilion/bundles', persistDirectory: '/var/lib/pavilion/last-known-good' });
    assert.deepEqual(raw['decisionLog'], {
      sink: 'audit',
      audit: { directory: '/var/lib/pavilion/audit', maxDiskBytes: 805306368 },
      privacy: { pseudonymKeyDirectory: '/var/lib/pavilion/pseudonym-keys' },
    });
    assert.deepEqual(raw['tenants'], [{ id: 'bank', namespace: 'bank' }]);
    assert.deepEqual(raw['labels'], { id: `${RELEASE}-pavilion`, version: '0.1.0' });
    const config = parseConfig(raw, '/etc/pavilion');
    assert.equal(config.engine.workers, 2);
    // the audit log, its software checkpoint key and its anchor file all on the data volume
    assert.equal(config.decisionLog.audit?.directory, '/var/lib/pavilion/audit');
    assert.deepEqual(config.decisionLog.audit?.signer, { kind: 'software', keyFile: '/var/lib/pavilion/audit/checkpoint-key.pem' });
    assert.deepEqual(config.decisionLog.audit?.anchor, { kind: 'file', path: '/var/lib/pavilion/audit/anchors.jsonl' });
    assert.ok(config.decisionLog.audit!.maxDiskBytes < 1024 ** 3, 'the disk budget fits the 1Gi data emptyDir');
    // every path the sidecar writes is on the data volume (the root filesystem is read-only)
    assert.equal(config.decisionLog.privacy.pseudonymKeyDirectory, '/var/lib/pavilion/pseudonym-keys');
    assert.equal(config.bundles.persistDirectory, '/var/lib/pavilion/last-known-good');
    assert.equal(config.extAuthz?.grpc.port, 9191);
    assert.deepEqual(config.tenants.map((t) => t.id), ['bank']);
  });

  test('decisionLog.sink file drops the chart\'s default audit block, so the sidecar parses what it gets', () => {
    const raw = renderedConfig(render(['--set', 'pavilion.config.decisionLog.sink=file', '--set', 'pavilion.config.decisionLog.path=/var/lib/pavilion/decisions.ndjson']));
    assert.deepEqual(raw['decisionLog'], { sink: 'file', path: '/var/lib/pavilion/decisions.ndjson', privacy: { pseudonymKeyDirectory: '/var/lib/pavilion/pseudonym-keys' } });
    assert.equal(parseConfig(raw, '/etc/pavilion').decisionLog.sink, 'file');
  });

  test('a config change rolls the pods: the pod template carries a checksum of the config', () => {
    const before = deployment(byDefault).template.metadata.annotations?.['checksum/pavilion-config'];
    const changed = deployment(render(['--set', 'pavilion.config.engine.workers=3'])).template.metadata.annotations?.['checksum/pavilion-config'];
    assert.match(before ?? '', /^[0-9a-f]{64}$/);
    assert.notEqual(changed, before);
  });

  test('metrics reach Prometheus through the istio-agent merge, the sidecar staying on loopback', () => {
    const annotations = deployment(byDefault).template.metadata.annotations ?? {};
    assert.equal(annotations['prometheus.io/scrape'], 'true');
    assert.equal(annotations['prometheus.io/port'], '8181');
    assert.equal(annotations['prometheus.io/path'], '/metrics');
    assert.equal(annotations['traffic.sidecar.istio.io/excludeInboundPorts'], undefined);
  });

  test('the AuthorizationPolicy is CUSTOM with provider pavilion-ext-authz, on the broker pods and port, all paths and methods', () => {
    const spec = the(byDefault, 'AuthorizationPolicy').spec as AuthorizationPolicySpec;
    assert.equal(spec.action, 'CUSTOM');
    assert.deepEqual(spec.provider, { name: 'pavilion-ext-authz' });
    assert.deepEqual(spec.selector.matchLabels, deployment(byDefault).selector.matchLabels);
    assert.deepEqual(spec.rules, [{ to: [{ operation: { ports: ['8080'] } }] }]);
  });

  test('the ServiceEntry maps pavilion-ext-authz.local:9191 (GRPC, STATIC) to 127.0.0.1', () => {
    const spec = the(byDefault, 'ServiceEntry').spec as ServiceEntrySpec;
    assert.deepEqual(spec.hosts, ['pavilion-ext-authz.local']);
    assert.deepEqual(spec.endpoints, [{ address: '127.0.0.1' }]);
    assert.deepEqual(spec.ports, [{ name: 'grpc-authz', number: 9191, protocol: 'GRPC' }]);
    assert.equal(spec.resolution, 'STATIC');
    assert.deepEqual(spec.exportTo, ['.']);
  });

  test('PeerAuthentication requires STRICT mTLS for the broker pods', () => {
    const pa = the(byDefault, 'PeerAuthentication');
    const spec = pa.spec as { selector: { matchLabels: Record<string, string> }; mtls: { mode: string } };
    assert.equal(pa.apiVersion, 'security.istio.io/v1');
    assert.deepEqual(spec.selector.matchLabels, deployment(byDefault).selector.matchLabels);
    assert.deepEqual(spec.mtls, { mode: 'STRICT' });
  });

  test('the Service exposes the broker port only, never the sidecar ports', () => {
    const spec = the(byDefault, 'Service').spec as ServiceSpec;
    assert.deepEqual(spec.ports.map((p) => [p.name, p.port, p.targetPort]), [['http', 80, 'http-broker']]);
  });

  test('each Istio object can be switched off on its own, and all at once', () => {
    assert.ok(!kinds(render(['--set', 'istio.serviceEntry.enabled=false'])).includes('ServiceEntry'));
    assert.ok(!kinds(render(['--set', 'istio.peerAuthentication.enabled=false'])).includes('PeerAuthentication'));
    assert.ok(!kinds(render(['--set', 'istio.authorizationPolicy.enabled=false'])).includes('AuthorizationPolicy'));
    const off = render(['--set', 'istio.enabled=false']);
    for (const kind of ['AuthorizationPolicy', 'ServiceEntry', 'PeerAuthentication']) assert.ok(!kinds(off).includes(kind), `${kind} is off`);
    assert.equal(deployment(off).template.metadata.labels['sidecar.istio.io/inject'], undefined);
  });
});

describe('broker-example, values-production.yaml', () => {
  test('adds the NetworkPolicy, the PodDisruptionBudget, the ServiceMonitor and its metrics Service, the PrometheusRule', () => {
    assert.deepEqual(kinds(production), [
      'AuthorizationPolicy', 'AuthorizationPolicy', 'ConfigMap', 'Deployment', 'NetworkPolicy', 'PeerAuthentication', 'PodDisruptionBudget',
      'PrometheusRule', 'Service', 'Service', 'ServiceAccount', 'ServiceEntry', 'ServiceMonitor',
    ]);
  });

  test("the PrometheusRule's alerts are PromQL that parses, on metrics the sidecar exports, in the release's namespace", async () => {
    const rule = the(production, 'PrometheusRule');
    assert.equal(rule.apiVersion, 'monitoring.coreos.com/v1');
    assert.equal(rule.metadata.labels?.['release'], 'kube-prometheus-stack', "the labels Prometheus' ruleSelector matches");
    const rules = (rule.spec as { groups: { name: string; rules: { alert: string; expr: string; for?: string; labels: { severity: string } }[] }[] }).groups.flatMap((g) => g.rules);
    assert.deepEqual(rules.map((r) => r.alert).sort(), [
      'PavilionAuditCheckpointStale', 'PavilionAuditEventsRefused', 'PavilionAuditLogNearBudget', 'PavilionAuditLogState', 'PavilionAuditStreamBacklog',
      'PavilionBundleRefused', 'PavilionConnectionsRefused', 'PavilionDistributionDisconnected', 'PavilionEvaluationWorkerRestarts',
    ]);
    // every metric an alert reads is one the sidecar declares (with the audit log and NATS distribution)
    const metrics = new Metrics();
    metrics.registerDistributionMetrics();
    metrics.registerAuditLogMetrics(() => new Map());
    metrics.registerAuditStreamMetrics(() => ({}));
    const exported = new Set((await metrics.registry.metrics()).split('\n').filter((l) => l.startsWith('# TYPE ')).map((l) => l.split(' ')[2]));
    for (const r of rules) {
      const names = [...r.expr.matchAll(/\b(pavilion_[a-z_]+)\b/g)].map((m) => m[1] as string);
      assert.ok(names.length > 0, `${r.alert} reads a pavilion metric`);
      for (const name of names) assert.ok(exported.has(name), `${r.alert}: ${name} is not a metric the sidecar exports`);
      // each selector is confined to the release's namespace
      const selectors = [...r.expr.matchAll(/pavilion_[a-z_]+\{([^}]*)\}/g)].map((m) => m[1]);
      assert.equal(selectors.length, names.length, `${r.alert}: every metric has a selector`);
      for (const selector of selectors) assert.match(selector ?? '', new RegExp(`^namespace="${NAMESPACE}"`), r.alert);
      assert.ok(['critical', 'warning'].includes(r.labels.severity), r.alert);
      assertPromQl(r.expr, r.alert);
    }
    assert.match(rules.find((r) => r.alert === 'PavilionAuditLogNearBudget')?.expr ?? '', /> 0\.8$/, 'the default ratio');
    // and the check can fail: a parenthesis short, a selector cut off
    for (const broken of ['sum by (pod (increase(pavilion_audit_events_refused_total[5m])) > 0', 'max(pavilion_audit_log_state{namespace="brokers",state=}) == 1']) {
      assert.throws(() => assertPromQl(broken, 'broken'), /not PromQL/, broken);
    }
  });

  test('the PrometheusRule follows its values, and needs the metrics exposed', () => {
    const on = ['--set', 'prometheusRule.enabled=true', '--set', 'serviceMonitor.enabled=true'];
    const tuned = render([...on, '--set-json', 'prometheusRule.auditBudgetRatio=0.9', '--set', 'prometheusRule.checkpointStaleSeconds=120']);
    const exprs = (the(tuned, 'PrometheusRule').spec as { groups: { rules: { alert: string; expr: string }[] }[] }).groups.flatMap((g) => g.rules);
    assert.match(exprs.find((r) => r.alert === 'PavilionAuditLogNearBudget')?.expr ?? '', /> 0\.9$/);
    assert.match(exprs.find((r) => r.alert === 'PavilionAuditCheckpointStale')?.expr ?? '', /\) > 120\n/);
    assert.ok(!kinds(byDefault).includes('PrometheusRule'), 'off by default');
    renderFails([...on, '--set', 'pavilion.metrics.mode=none'], /(serviceMonitor|prometheusRule).enabled needs pavilion.metrics.mode/);
    renderFails(['--set', 'prometheusRule.enabled=true'], /prometheusRule.enabled needs serviceMonitor.enabled/);
    renderFails([...on, '--set', 'prometheusRule.auditBudgetRatio=2'], /auditBudgetRatio/);
    renderFails([...on, '--set', 'prometheusRule.workerRestarts=null'], /workerRestarts/);
    // a quiet tenant's leaves wait checkpointIntervalMs for their checkpoint: the alert must wait longer
    renderFails([...on, '--set', 'prometheusRule.checkpointStaleSeconds=60', '--set', 'pavilion.config.decisionLog.audit.checkpointIntervalMs=60000'], /checkpointStaleSeconds \(60\) must be longer than the audit log's checkpointIntervalMs \(60000 ms\)/);
    // numbers from a values file render as integers, not floats (1e+06)
    const big = render([...on, '--values', valuesFile('prometheusRule:\n  streamBacklogEvents: 1000000\n')]);
    const backlog = (the(big, 'PrometheusRule').spec as { groups: { rules: { alert: string; expr: string }[] }[] }).groups.flatMap((g) => g.rules).find((r) => r.alert === 'PavilionAuditStreamBacklog');
    assert.match(backlog?.expr ?? '', / > 1000000$/);
  });

  test('the PrometheusRule fires, and stays quiet, as Prometheus evaluates it (promtool test rules on series for each alert)', () => {
    const install = spawnSync('bash', [join(ROOT, 'scripts', 'install-promtool.sh')], { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'] });
    assert.equal(install.status, 0, 'scripts/install-promtool.sh installs promtool');
    const groups = (the(production, 'PrometheusRule').spec as { groups: { rules: { alert: string; annotations: Record<string, string>; labels: Record<string, string> }[] }[] }).groups;
    const rules = new Map(groups.flatMap((g) => g.rules).map((r) => [r.alert, r]));
    // the alert a series should raise: its labels (alertname and severity from the rule) and
    // its annotations, the rule's templates filled as Prometheus fills them
    const alert = (name: string, labels: Record<string, string>, value?: string): { exp_labels: Record<string, string>; exp_annotations: Record<string, string> } => {
      const rule = rules.get(name);
      assert.ok(rule, `${name} is a rule`);
      const fill = (template: string): string => template.replace(/\{\{ \$(labels\.(\w+)|value)( \| humanizePercentage)? \}\}/g, (_m, _what: string, label: string | undefined, humanize: string | undefined) => {
        if (label !== undefined) return labels[label] ?? assert.fail(`${name}: no label ${label}`);
        assert.ok(value !== undefined, `${name} shows its value`);
        return humanize === undefined ? value : `${Number(value) * 100}%`;
      });
      return { exp_labels: { ...labels, ...rule.labels }, exp_annotations: Object.fromEntries(Object.entries(rule.annotations).map(([k, v]) => [k, fill(v)])) };
    };
    const at = (minutes: number, name: string, ...alerts: ReturnType<typeof alert>[]): Record<string, unknown> => ({ eval_time: `${minutes}m`, alertname: name, exp_alerts: alerts });
    const series = (name: string, labels: Record<string, string>, values: string): { series: string; values: string } => ({
      series: `${name}{${Object.entries({ namespace: NAMESPACE, pod: 'broker-0', ...labels }).map(([k, v]) => `${k}="${v}"`).join(',')}}`,
      values,
    });
    const pod = { namespace: NAMESPACE, pod: 'broker-0' };
    const tests = [
      {
        // a refused event's series appears at 1 (prom-client exports a labelled counter at its
        // first increment): it fires at once and for 5 minutes; one that was there at 0 fires
        // when it grows; the same refusal in another namespace is not this release's
        interval: '1m',
        input_series: [
          series('pavilion_audit_events_refused_total', { tenant: 'bank', code: 'ERR_AUDIT_LOG_FULL' }, '_ _ _ 1x20'),
          series('pavilion_audit_events_refused_total', { tenant: 'shop', code: 'ERR_AUDIT_DISK_FULL' }, '0x7 1x20'),
          { series: 'pavilion_audit_events_refused_total{namespace="other",pod="broker-0",tenant="bank",code="ERR_AUDIT_LOG_FULL"}', values: '_ _ _ 1x20' },
        ],
        alert_rule_test: [
          at(2, 'PavilionAuditEventsRefused'),
          at(4, 'PavilionAuditEventsRefused', alert('PavilionAuditEventsRefused', { ...pod, tenant: 'bank', code: 'ERR_AUDIT_LOG_FULL' })),
          at(9, 'PavilionAuditEventsRefused', alert('PavilionAuditEventsRefused', { ...pod, tenant: 'shop', code: 'ERR_AUDIT_DISK_FULL' })),
          at(20, 'PavilionAuditEventsRefused'),
        ],
      },
      {
        interval: '1m',
        input_series: [
          series('pavilion_audit_log_state', { tenant: 'bank', state: 'ERROR' }, '0 0 1 1 1 1 0 0'),
          series('pavilion_audit_log_state', { tenant: 'bank', state: 'OK' }, '1 1 0 0 0 0 1 1'),
          // the budget: 90% for bank, 50% for shop
          series('pavilion_audit_log_bytes', { tenant: 'bank' }, '900x20'),
          series('pavilion_audit_log_max_bytes', { tenant: 'bank' }, '1000x20'),
          series('pavilion_audit_log_bytes', { tenant: 'shop' }, '500x20'),
          series('pavilion_audit_log_max_bytes', { tenant: 'shop' }, '1000x20'),
        ],
        alert_rule_test: [
          at(2, 'PavilionAuditLogState'),
          at(3, 'PavilionAuditLogState', alert('PavilionAuditLogState', { ...pod, tenant: 'bank' })),
          at(7, 'PavilionAuditLogState'),
          at(4, 'PavilionAuditLogNearBudget'),
          at(6, 'PavilionAuditLogNearBudget', alert('PavilionAuditLogNearBudget', { ...pod, tenant: 'bank' }, '0.9')),
        ],
      },
      {
        // checkpoints (staleness 300 s, for 5 minutes): bank's signer stopped at time 0 while
        // leaves keep coming; shop's keeps signing; never's log was never signed; quiet's is
        // old but has nothing waiting
        interval: '1m',
        input_series: [
          series('pavilion_audit_log_leaves', { tenant: 'bank' }, '100+10x40'),
          series('pavilion_audit_log_checkpointed_leaves', { tenant: 'bank' }, '100x40'),
          series('pavilion_audit_log_last_checkpoint_timestamp_seconds', { tenant: 'bank' }, '0x40'),
          series('pavilion_audit_log_leaves', { tenant: 'shop' }, '100+10x40'),
          series('pavilion_audit_log_checkpointed_leaves', { tenant: 'shop' }, '95+10x40'),
          series('pavilion_audit_log_last_checkpoint_timestamp_seconds', { tenant: 'shop' }, '0+60x40'),
          series('pavilion_audit_log_leaves', { tenant: 'never' }, '5x40'),
          series('pavilion_audit_log_checkpointed_leaves', { tenant: 'never' }, '0x40'),
          series('pavilion_audit_log_leaves', { tenant: 'quiet' }, '50x40'),
          series('pavilion_audit_log_checkpointed_leaves', { tenant: 'quiet' }, '50x40'),
          series('pavilion_audit_log_last_checkpoint_timestamp_seconds', { tenant: 'quiet' }, '0x40'),
        ],
        alert_rule_test: [
          at(4, 'PavilionAuditCheckpointStale'),
          at(6, 'PavilionAuditCheckpointStale', alert('PavilionAuditCheckpointStale', { ...pod, tenant: 'never' })),
          at(10, 'PavilionAuditCheckpointStale', alert('PavilionAuditCheckpointStale', { ...pod, tenant: 'never' })),
          at(12, 'PavilionAuditCheckpointStale', alert('PavilionAuditCheckpointStale', { ...pod, tenant: 'bank' }), alert('PavilionAuditCheckpointStale', { ...pod, tenant: 'never' })),
        ],
      },
      {
        interval: '1m',
        input_series: [
          series('pavilion_audit_stream_backlog', { tenant: 'bank' }, '20000x30'),
          series('pavilion_audit_stream_backlog', { tenant: 'shop' }, '10000x30'),
          series('pavilion_bundle_activations_total', { tenant: 'bank', outcome: 'ok' }, '0+1x30'),
          series('pavilion_bundle_activations_total', { tenant: 'bank', outcome: 'ERR_BUNDLE_SIGNATURE_INVALID' }, '_ _ 1x30'),
          series('pavilion_distribution_connected', {}, '1 1 0 0 0 0 1 1'),
          // 5 workers replaced between 10 and 15 minutes; increase() over 10 minutes at 20m
          // extrapolates Prometheus' way: (5 - 1) x 600 s / 540 s
          series('pavilion_engine_worker_restarts_total', { reason: 'timeout' }, '0x10 1 2 3 4 5x10'),
          series('pavilion_connections_refused_total', { listener: 'http' }, '_ _ 1x20'),
          // a series there before, growing at 10 minutes; another namespace's refusals
          series('pavilion_connections_refused_total', { listener: 'grpc' }, '0x9 3x20'),
          { series: 'pavilion_connections_refused_total{namespace="other",pod="broker-0",listener="http"}', values: '_ _ 1x20' },
        ],
        alert_rule_test: [
          at(9, 'PavilionAuditStreamBacklog'),
          at(11, 'PavilionAuditStreamBacklog', alert('PavilionAuditStreamBacklog', { ...pod, tenant: 'bank' }, '20000')),
          at(3, 'PavilionBundleRefused', alert('PavilionBundleRefused', { ...pod, tenant: 'bank', outcome: 'ERR_BUNDLE_SIGNATURE_INVALID' })),
          at(20, 'PavilionBundleRefused'),
          at(3, 'PavilionDistributionDisconnected'),
          at(4, 'PavilionDistributionDisconnected', alert('PavilionDistributionDisconnected', pod)),
          at(6, 'PavilionDistributionDisconnected'),
          at(12, 'PavilionEvaluationWorkerRestarts'),
          at(20, 'PavilionEvaluationWorkerRestarts', alert('PavilionEvaluationWorkerRestarts', { ...pod, reason: 'timeout' }, String((4 * 600) / 540))),
          at(3, 'PavilionConnectionsRefused', alert('PavilionConnectionsRefused', { ...pod, listener: 'http' })),
          at(11, 'PavilionConnectionsRefused', alert('PavilionConnectionsRefused', { ...pod, listener: 'grpc' })),
          at(20, 'PavilionConnectionsRefused'),
        ],
      },
    ];
    // every alert is made to fire somewhere above
    const fired = new Set(tests.flatMap((t) => t.alert_rule_test).filter((a) => (a['exp_alerts'] as unknown[]).length > 0).map((a) => a['alertname']));
    assert.deepEqual([...fired].sort(), [...rules.keys()].sort());
    const dir = mkdtempSync(join(tmpdir(), 'pavilion-alerts-'));
    try {
      // a rule file is a PrometheusRule's spec; JSON is YAML to promtool
      writeFileSync(join(dir, 'rules.json'), JSON.stringify({ groups }));
      writeFileSync(join(dir, 'tests.json'), JSON.stringify({ rule_files: ['rules.json'], evaluation_interval: '1m', tests }));
      const promtool = (args: readonly string[]): { status: number | null; output: string } => {
        const run = spawnSync(join(ROOT, '.tools', 'bin', 'promtool'), args, { cwd: dir, encoding: 'utf8', timeout: 120_000 });
        return { status: run.status, output: `${run.stdout}${run.stderr}` };
      };
      const checked = promtool(['check', 'rules', 'rules.json']);
      assert.equal(checked.status, 0, checked.output);
      const ran = promtool(['test', 'rules', 'tests.json']);
      assert.equal(ran.status, 0, ran.output);
      // and it can fail: the near-budget alert expected from tenant shop instead
      const wrong = tests.map((t) => ({ ...t, alert_rule_test: t.alert_rule_test.map((a) => (a['alertname'] === 'PavilionAuditLogNearBudget' && (a['exp_alerts'] as unknown[]).length > 0
        ? at(6, 'PavilionAuditLogNearBudget', alert('PavilionAuditLogNearBudget', { ...pod, tenant: 'shop' }, '0.5'))
        : a)) }));
      writeFileSync(join(dir, 'tests.json'), JSON.stringify({ rule_files: ['rules.json'], evaluation_interval: '1m', tests: wrong }));
      const failed = promtool(['test', 'rules', 'tests.json']);
      assert.equal(failed.status, 1, failed.output);
      assert.match(failed.output, /PavilionAuditLogNearBudget/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('runs 3 replicas, keeps 2 available through disruptions, spread over zones', () => {
    const spec = deployment(production);
    assert.equal(spec.replicas, 3);
    const pdb = the(production, 'PodDisruptionBudget');
    assert.equal(pdb.apiVersion, 'policy/v1');
    assert.deepEqual(pdb.spec, { minAvailable: 2, selector: { matchLabels: spec.selector.matchLabels } });
  });

  test('raises the sidecar resources for three tenants', () => {
    assert.deepEqual(container(production, 'pavilion').resources, {
      requests: { cpu: '500m', memory: '768Mi' },
      limits: { cpu: '2', memory: '1536Mi' },
    });
  });

  test('the HSM PIN comes from a Secret via secretKeyRef, the PKCS#11 module from a read-only volume at /opt/pkcs11', () => {
    const c = container(production, 'pavilion');
    assert.deepEqual(env(c, 'PAVILION_HSM_PIN'), {
      name: 'PAVILION_HSM_PIN', valueFrom: { secretKeyRef: { name: 'pavilion-hsm', key: 'pin' } },
    });
    // the chart points the audit log's checkpoint signer at the token; the PIN stays in the Secret
    const config = parseConfig(renderedConfig(production), '/etc/pavilion', literalEnv(c));
    assert.deepEqual(config.decisionLog.audit?.signer, {
      kind: 'pkcs11', modulePath: '/opt/pkcs11/libvendor-pkcs11.so', tokenLabel: 'pavilion', keyLabel: 'checkpoints-2026', pinEnv: 'PAVILION_HSM_PIN', generateKey: false, allowImportedKey: false, operationTimeoutMs: 10_000,
    });
    assert.equal(config.decisionLog.audit?.fsync, 'always');
    assert.equal(config.decisionLog.audit?.stream.enabled, true);
    assert.equal(env(c, 'PAVILION_HSM_MODULE'), undefined, 'the module path is in the config, not in a variable nothing reads');
    assert.deepEqual(mount(c, '/opt/pkcs11'), { name: 'pavilion-pkcs11', mountPath: '/opt/pkcs11', readOnly: true });
    assert.deepEqual(volume(production, 'pavilion-pkcs11').csi?.driver, 'pkcs11.csi.example.com');
    // No secret value anywhere in the rendered manifests: only references.
    assert.ok(!production.some((m) => m.kind === 'Secret'), 'the chart renders no Secret');
  });

  test('bundle verification keys and NATS credentials are read-only Secret mounts', () => {
    const c = container(production, 'pavilion');
    assert.deepEqual(mount(c, '/etc/pavilion/keys'), { name: 'pavilion-bundle-keys', mountPath: '/etc/pavilion/keys', readOnly: true });
    assert.equal(volume(production, 'pavilion-bundle-keys').secret?.secretName, 'pavilion-bundle-keys');
    assert.deepEqual(mount(c, '/etc/pavilion/nats'), { name: 'pavilion-nats-creds', mountPath: '/etc/pavilion/nats', readOnly: true });
    assert.equal(volume(production, 'pavilion-nats-creds').secret?.secretName, 'pavilion-nats');
    assert.equal(env(c, 'PAVILION_NATS_CREDS')?.value, '/etc/pavilion/nats/pavilion.creds');
    assert.equal(env(c, 'PAVILION_BUNDLE_KEYS_DIR')?.value, '/etc/pavilion/keys');
  });

  test('API tokens: a read-only Secret mount, each tenant pointing at its file, and authentication token', () => {
    const c = container(production, 'pavilion');
    assert.deepEqual(mount(c, '/etc/pavilion/api-tokens'), { name: 'pavilion-api-tokens', mountPath: '/etc/pavilion/api-tokens', readOnly: true });
    assert.equal(volume(production, 'pavilion-api-tokens').secret?.secretName, 'pavilion-api-tokens');
    const config = parseConfig(renderedConfig(production), '/etc/pavilion', literalEnv(c));
    assert.equal(config.http.authentication, 'token');
    assert.deepEqual(config.tenants.map((t) => t.apiTokensFile), ['/etc/pavilion/api-tokens/bank', '/etc/pavilion/api-tokens/hospital', '/etc/pavilion/api-tokens/agency']);
    assert.equal(mount(container(render(), 'pavilion'), '/etc/pavilion/api-tokens'), undefined, 'not mounted by default');
    renderFails(['--set', 'pavilion.apiTokens.enabled=true'], /pavilion\.apiTokens\.enabled needs pavilion\.apiTokens\.secretName/);
  });

  test('NATS and Redis endpoints are env vars, the Redis password a secretKeyRef', () => {
    const c = container(production, 'pavilion');
    assert.equal(env(c, 'PAVILION_NATS_URL')?.value, 'tls://nats.nats.svc.cluster.local:4222');
    assert.equal(env(c, 'PAVILION_REDIS_URL')?.value, 'rediss://redis-master.redis.svc.cluster.local:6380/0');
    assert.deepEqual(env(c, 'PAVILION_REDIS_PASSWORD')?.valueFrom, { secretKeyRef: { name: 'pavilion-redis', key: 'password' } });
  });

  test('the config holds the three tenants and the sidecar parses it', () => {
    const raw = renderedConfig(production);
    // as the sidecar reads it: the config file plus the container's environment (the NATS URL)
    const config = parseConfig(raw, '/etc/pavilion', literalEnv(container(production, 'pavilion')));
    assert.deepEqual(config.tenants.map((t) => t.id), ['bank', 'hospital', 'agency']);
    assert.equal(config.decisionLog.sink, 'audit');
    assert.deepEqual(config.nats?.servers, ['tls://nats.nats.svc.cluster.local:4222']);
    assert.equal(config.http.host, '127.0.0.1');
    assert.equal(config.extAuthz?.grpc.port, 9191);
    assert.equal(config.extAuthz?.defaults.timeoutMs, 150);
  });

  test('the NetworkPolicy admits ingress to the broker port only, plus Prometheus to the istio-agent metrics port', () => {
    const spec = the(production, 'NetworkPolicy').spec as NetworkPolicySpec;
    assert.deepEqual(spec.podSelector.matchLabels, deployment(production).selector.matchLabels);
    assert.deepEqual(spec.policyTypes, ['Ingress']);
    assert.equal(spec.ingress.length, 2);
    const [broker, metrics] = spec.ingress;
    assert.deepEqual(broker?.ports, [{ port: 8080, protocol: 'TCP' }]);
    assert.deepEqual(broker?.from.map((p) => Object.keys(p)), [['namespaceSelector'], ['namespaceSelector']], 'namespaces only');
    assert.deepEqual(metrics?.ports, [{ port: 15020, protocol: 'TCP' }]);
    assert.deepEqual(metrics?.from[0]?.namespaceSelector?.matchExpressions?.[0]?.values, ['monitoring']);
    const open = spec.ingress.flatMap((rule) => rule.ports.map((p) => Number(p.port)));
    for (const port of [8181, 9191]) assert.ok(!open.includes(port), `sidecar port ${port} is not reachable from other pods`);
  });

  test('the ServiceMonitor scrapes the merged metrics at :15020/stats/prometheus through a headless metrics Service', () => {
    const sm = the(production, 'ServiceMonitor');
    assert.equal(sm.apiVersion, 'monitoring.coreos.com/v1');
    assert.equal(sm.metadata.labels?.['release'], 'kube-prometheus-stack');
    const spec = sm.spec as ServiceMonitorSpec;
    assert.deepEqual(spec.endpoints.map((e) => [e.port, e.path]), [['http-metrics', '/stats/prometheus']]);
    const svc = the(production, 'Service', '-metrics');
    const svcSpec = svc.spec as ServiceSpec;
    assert.equal(svcSpec.clusterIP, 'None');
    assert.deepEqual(svcSpec.ports.map((p) => [p.name, p.port]), [['http-metrics', 15020]]);
    for (const [key, value] of Object.entries(spec.selector.matchLabels)) assert.equal(svc.metadata.labels?.[key], value);
    const broker = the(production, 'Service', `${RELEASE}-broker-example`);
    assert.notEqual(broker.metadata.labels?.['app.kubernetes.io/component'], 'metrics', 'the broker Service is not scraped');
  });

  test('the AuthorizationPolicy leaves out the configured notPaths', () => {
    const spec = the(production, 'AuthorizationPolicy', '-ext-authz').spec as AuthorizationPolicySpec;
    assert.deepEqual(spec.rules[0]?.to?.[0]?.operation, { ports: ['8080'], notPaths: ['/healthz', '/readyz'] });
  });

  test('the tenant comes from a header, so only the ingress gateway may call the broker (ALLOW policy for its principal)', () => {
    const gateway = 'cluster.local/ns/istio-ingress/sa/istio-ingressgateway';
    const config = parseConfig(renderedConfig(production), '/etc/pavilion', literalEnv(container(production, 'pavilion')));
    assert.deepEqual(config.extAuthz?.tenantFrom, { kind: 'header', header: 'x-pavilion-tenant' });
    const allow = the(production, 'AuthorizationPolicy', '-allowed-callers').spec as AuthorizationPolicySpec;
    assert.equal(allow.action, 'ALLOW');
    assert.deepEqual(allow.selector.matchLabels, deployment(production).selector.matchLabels);
    assert.deepEqual(allow.rules, [{ from: [{ source: { principals: [gateway] } }], to: [{ operation: { ports: ['8080'] } }] }]);
    // other callers are not even checked (no decision logged under a tenant they picked)
    const custom = the(production, 'AuthorizationPolicy', '-ext-authz').spec as AuthorizationPolicySpec;
    assert.deepEqual(custom.rules[0]?.from, [{ source: { principals: [gateway] } }]);
    // off by default, and refused without principals (it would deny everything)
    assert.ok(!byDefault.some((m) => m.kind === 'AuthorizationPolicy' && (m.spec as AuthorizationPolicySpec).action === 'ALLOW'));
    renderFails(['--set', 'istio.allowedCallers.enabled=true'], /istio.allowedCallers.enabled needs istio.allowedCallers.principals/);
  });

  test('the data volume is a claim per pod, sized for every tenant\'s audit log (maxDiskBytes is per tenant)', () => {
    const data = volume(production, 'pavilion-data');
    assert.equal(data.emptyDir, undefined, 'not an emptyDir: the kubelet would evict the pod beyond its sizeLimit');
    const claim = data.ephemeral?.volumeClaimTemplate.spec;
    assert.ok(claim, 'a generic ephemeral volume (a PVC per pod)');
    assert.deepEqual(claim.accessModes, ['ReadWriteOnce']);
    const config = parseConfig(renderedConfig(production), '/etc/pavilion', literalEnv(container(production, 'pavilion')));
    const needed = config.tenants.length * config.decisionLog.audit!.maxDiskBytes + 256 * 1024 ** 2;
    assert.ok(bytesOf(claim.resources.requests.storage) >= needed, `${claim.resources.requests.storage} holds ${config.tenants.length} x maxDiskBytes + headroom`);
    assert.equal(mount(container(production, 'pavilion'), '/var/lib/pavilion')?.name, 'pavilion-data');
  });

  test('the HSM is a vendor PKCS#11 module, not SoftHSM2 (development only)', () => {
    const config = parseConfig(renderedConfig(production), '/etc/pavilion', literalEnv(container(production, 'pavilion')));
    const signer = config.decisionLog.audit?.signer;
    assert.equal(signer?.kind, 'pkcs11');
    assert.doesNotMatch(signer?.kind === 'pkcs11' ? signer.modulePath : '', /softhsm/i);
    assert.doesNotMatch(JSON.stringify(deployment(production)), /softhsm/i);
    assert.match(readFileSync(PROD_VALUES, 'utf8'), /SoftHSM2 .*\n.*development and tests only/);
  });

  test('the sidecar receives on its own NATS inbox prefix, the one docs/nats-permissions.conf lets it subscribe to, and the conf grants every tenant\'s bundles', () => {
    const config = parseConfig(renderedConfig(production), '/etc/pavilion', literalEnv(container(production, 'pavilion')));
    assert.equal(config.nats?.inboxPrefix, '_INBOX_sidecar');
    const conf = readFileSync(join(ROOT, 'docs', 'nats-permissions.conf'), 'utf8');
    const sidecarUser = conf.slice(conf.indexOf('user: sidecar'), conf.indexOf('user: team_'));
    assert.match(sidecarUser, /subscribe: \{ allow: \["_INBOX_sidecar\.>"\] \}/);
    assert.doesNotMatch(conf.replace(/^#.*$/gm, ''), /"_INBOX\.>"/, 'no user shares the default inbox');
    const grants = conf.slice(conf.indexOf('SIDECAR_PUBLISH = ['), conf.indexOf(']', conf.indexOf('SIDECAR_PUBLISH = [')));
    for (const tenant of config.tenants.map((t) => t.id)) {
      for (const grant of [
        `"$JS.API.STREAM.INFO.OBJ_pavilion-bundle-${tenant}"`,
        `"$JS.API.CONSUMER.CREATE.OBJ_pavilion-bundle-${tenant}.*.$O.pavilion-bundle-${tenant}.C.>"`,
      ]) assert.ok(grants.includes(grant), `the sidecar user may download ${tenant}'s bundles: ${grant}`);
    }
  });
});

describe('other modes', () => {
  test('probes.mode exec probes 127.0.0.1 from inside the container, with no Istio probe annotations', () => {
    const manifests = render(['--set', 'pavilion.probes.mode=exec']);
    const c = container(manifests, 'pavilion');
    assert.equal(c.livenessProbe?.httpGet, undefined);
    assert.match(c.livenessProbe?.exec?.command.join(' ') ?? '', /^node -e .*http:\/\/127\.0\.0\.1:8181\/health\/live/);
    assert.match(c.readinessProbe?.exec?.command.join(' ') ?? '', /http:\/\/127\.0\.0\.1:8181\/health\/ready/);
    assert.equal(deployment(manifests).template.metadata.annotations?.['proxy.istio.io/config'], undefined);
  });

  test('metrics.mode direct binds 0.0.0.0, keeps 8181 out of Envoy, and scrapes /metrics on the sidecar port', () => {
    const manifests = render([
      '--set', 'pavilion.metrics.mode=direct', '--set', 'pavilion.config.http.host=0.0.0.0',
      '--set', 'serviceMonitor.enabled=true', '--set', 'networkPolicy.enabled=true',
    ]);
    const annotations = deployment(manifests).template.metadata.annotations ?? {};
    assert.equal(annotations['traffic.sidecar.istio.io/excludeInboundPorts'], '8181');
    assert.equal(annotations['prometheus.io/scrape'], undefined);
    assert.equal(annotations['proxy.istio.io/config'], undefined, 'no localhost probe rewrite needed on 0.0.0.0');
    const spec = the(manifests, 'ServiceMonitor').spec as ServiceMonitorSpec;
    assert.deepEqual(spec.endpoints.map((e) => [e.port, e.path]), [['http-metrics', '/metrics']]);
    const np = the(manifests, 'NetworkPolicy').spec as NetworkPolicySpec;
    assert.deepEqual(np.ingress[1]?.ports, [{ port: 8181, protocol: 'TCP' }]);
  });

  test('the PKCS#11 module can come from a hostPath or a PersistentVolumeClaim', () => {
    const hsm = ['--set', 'pavilion.hsm.enabled=true', '--set', 'pavilion.hsm.pin.secretName=hsm'];
    assert.equal(volume(render([...hsm]), 'pavilion-pkcs11').hostPath?.path, '/usr/lib/pkcs11');
    const pvc = render([...hsm, '--set', 'pavilion.hsm.module.type=persistentVolumeClaim', '--set', 'pavilion.hsm.module.persistentVolumeClaim.claimName=pkcs11']);
    assert.deepEqual(volume(pvc, 'pavilion-pkcs11').persistentVolumeClaim, { claimName: 'pkcs11', readOnly: true });
  });
});

describe('pod annotations of the including chart', () => {
  const LOCALHOST = 'REWRITE_PROBE_LEGACY_LOCALHOST_DESTINATION';

  test('a broker proxy.istio.io/config is merged with the sidecar\'s probe setting, not replacing it', () => {
    const manifests = render(['--values', valuesFile([
      'broker:',
      '  podAnnotations:',
      '    team: payments',
      '    proxy.istio.io/config: |',
      '      holdApplicationUntilProxyStarts: true',
      '      proxyMetadata:',
      '        ISTIO_META_DNS_CAPTURE: "true"',
    ].join('\n'))]);
    const annotations = deployment(manifests).template.metadata.annotations ?? {};
    assert.equal(annotations['team'], 'payments');
    assert.deepEqual(JSON.parse(annotations['proxy.istio.io/config'] ?? '{}'), {
      holdApplicationUntilProxyStarts: true,
      proxyMetadata: { ISTIO_META_DNS_CAPTURE: 'true', [LOCALHOST]: 'true' },
    });
    assert.equal(annotations['sidecar.istio.io/rewriteAppHTTPProbers'], 'true');
    assert.match(annotations['checksum/pavilion-config'] ?? '', /^[0-9a-f]{64}$/);
  });

  test('a broker annotation that contradicts the sidecar\'s fails the render, naming it', () => {
    renderFails(['--values', valuesFile(`broker:\n  podAnnotations:\n    proxy.istio.io/config: '{"proxyMetadata":{"${LOCALHOST}":"false"}}'\n`)],
      new RegExp(`broker.podAnnotations."proxy.istio.io/config" sets proxyMetadata.${LOCALHOST} to "false"`));
    renderFails(['--values', valuesFile('broker:\n  podAnnotations:\n    sidecar.istio.io/rewriteAppHTTPProbers: "false"\n')],
      /broker.podAnnotations."sidecar.istio.io\/rewriteAppHTTPProbers" is "false", but the Pavilion sidecar needs "true"/);
    renderFails(['--values', valuesFile("broker:\n  podAnnotations:\n    proxy.istio.io/config: 'not: [valid'\n")],
      /broker.podAnnotations."proxy.istio.io\/config" must be a ProxyConfig/);
  });
});

describe('the data volume', () => {
  test('is an emptyDir by default, or the volume source dataVolume.volume names', () => {
    assert.deepEqual(volume(byDefault, 'pavilion-data').emptyDir, { sizeLimit: '1Gi' });
    const pvc = render(['--set', 'pavilion.dataVolume.volume.persistentVolumeClaim.claimName=pavilion-data']);
    assert.deepEqual(volume(pvc, 'pavilion-data'), { name: 'pavilion-data', persistentVolumeClaim: { claimName: 'pavilion-data' } });
    const ephemeral = render(['--values', valuesFile([
      'pavilion:',
      '  dataVolume:',
      '    volume:',
      '      ephemeral:',
      '        volumeClaimTemplate:',
      '          spec: { accessModes: [ReadWriteOnce], resources: { requests: { storage: 2Gi } } }',
    ].join('\n'))]);
    assert.equal(volume(ephemeral, 'pavilion-data').ephemeral?.volumeClaimTemplate.spec.resources.requests.storage, '2Gi');
  });

  test('with rotation the data volume also holds the archived epochs kept; rotation without retention fails the render', () => {
    renderFails(['--set', 'pavilion.config.decisionLog.audit.rotateAtBytes=402653184'], /rotateAtBytes without keepArchivedEpochs keeps every sealed epoch: the archive grows without bound/);
    // rotation by age seals epochs too; keepArchivedDays bounds them in time, not in bytes
    renderFails(['--set', 'pavilion.config.decisionLog.audit.rotateAfterMs=86400000', '--set', 'pavilion.config.decisionLog.audit.keepArchivedDays=400'],
      /rotateAfterMs without keepArchivedEpochs keeps every sealed epoch: .*keepArchivedDays bounds the archive in time, not in bytes/);
    // the sidecar's own refusals, at render time
    renderFails(['--set', 'pavilion.config.decisionLog.audit.keepArchivedDays=30', '--set', 'pavilion.config.decisionLog.audit.keepArchivedEpochs=2'], /keepArchivedDays needs rotateAfterMs/);
    renderFails(['--set', 'pavilion.config.decisionLog.audit.rotateAfterMs=59999', '--set', 'pavilion.config.decisionLog.audit.keepArchivedEpochs=2'], /rotateAfterMs = 59999: must be 0 \(never by age\) or at least 60000/);
    renderFails(['--set', 'pavilion.config.decisionLog.audit.rotateAfterMs=86400000', '--set', 'pavilion.config.decisionLog.audit.keepArchivedEpochs=2', '--set', 'pavilion.dataVolume.sizeLimit=2559Mi'],
      /is below 1 tenant\(s\) x \(1 live \+ 2 archived epoch\(s\) kept\)/);
    // 1 tenant x (1 live + 2 kept) x 768Mi + 256Mi headroom = 2.5Gi; 2559Mi does not hold them
    const rotating = ['--set', 'pavilion.config.decisionLog.audit.rotateAtBytes=402653184', '--set', 'pavilion.config.decisionLog.audit.keepArchivedEpochs=2'];
    renderFails([...rotating, '--set', 'pavilion.dataVolume.sizeLimit=2559Mi'], /is below 1 tenant\(s\) x \(1 live \+ 2 archived epoch\(s\) kept\) x pavilion.config.decisionLog.audit.maxDiskBytes \(805306368, a budget per tenant\) .* lower maxDiskBytes or keepArchivedEpochs/);
    // with ext_authz the headroom holds the _unrouted log's kept epochs too: 3 x 64Mi
    renderFails([...rotating, '--set', 'pavilion.dataVolume.sizeLimit=2.5Gi', '--set', 'pavilion.config.extAuthz.tenantFrom.fixed=bank', '--set', 'pavilion.dataVolume.headroom=191Mi'],
      /headroom \(200278016 bytes\) must hold the _unrouted audit log \(up to 64Mi, and as many again for each of its 2 archived epochs kept.*at least 192Mi/);
    // keepArchivedEpochs without rotation keeps nothing, so it asks for no room
    assert.ok(render(['--set', 'pavilion.config.decisionLog.audit.keepArchivedEpochs=2']).length > 0);
    const config = parseConfig(renderedConfig(render([...rotating, '--set', 'pavilion.dataVolume.sizeLimit=2.5Gi'])), '/etc/pavilion');
    assert.equal(config.decisionLog.audit?.rotateAtBytes, 402653184);
    assert.equal(config.decisionLog.audit?.keepArchivedEpochs, 2);
  });

  test('an emptyDir sizeLimit (or an ephemeral claim) below tenants x maxDiskBytes + headroom fails the render', () => {
    // 768Mi x 1 tenant + 256Mi headroom = 1Gi: the default fits exactly; 1023Mi does not
    renderFails(['--set', 'pavilion.dataVolume.sizeLimit=1023Mi'], /pavilion.dataVolume.sizeLimit .* = 1023Mi \(1072693248 bytes\) is below 1 tenant\(s\) x pavilion.config.decisionLog.audit.maxDiskBytes \(805306368, a budget per tenant\)/);
    // a second tenant doubles the audit logs
    renderFails(['--set', 'pavilion.tenants[0].id=bank', '--set', 'pavilion.tenants[1].id=hospital'], /is below 2 tenant\(s\)/);
    renderFails(['--set', 'pavilion.config.decisionLog.audit.maxDiskBytes=2147483648'], /is below 1 tenant\(s\)/);
    // production's 3 tenants x 3 GiB on an emptyDir of 4Gi (the review's finding)
    renderFails(['--values', PROD_VALUES, '--set', 'pavilion.dataVolume.volume=null', '--set', 'pavilion.dataVolume.sizeLimit=4Gi'], /is below 3 tenant\(s\)/);
    renderFails(['--values', PROD_VALUES, '--set', 'pavilion.dataVolume.volume.ephemeral.volumeClaimTemplate.spec.resources.requests.storage=8Gi'], /volumeClaimTemplate storage request = 8Gi .* is below 3 tenant\(s\)/);
    renderFails(['--set', 'pavilion.dataVolume.sizeLimit=lots'], /pavilion.dataVolume.sizeLimit .*\(lots\) is not a Kubernetes quantity/);
    // with ext_authz the headroom also holds the _unrouted log (64 MiB at most)
    renderFails(['--set', 'pavilion.config.extAuthz.tenantFrom.fixed=bank', '--set', 'pavilion.dataVolume.headroom=32Mi'], /pavilion.dataVolume.headroom \(33554432 bytes\) must hold the _unrouted audit log/);
    assert.ok(render(['--set', 'pavilion.config.extAuthz.tenantFrom.fixed=bank', '--set', 'pavilion.dataVolume.headroom=64Mi']).length > 0);
    // enough room, in any spelling of the quantity
    assert.deepEqual(volume(render(['--set', 'pavilion.tenants[0].id=bank', '--set', 'pavilion.tenants[1].id=hospital', '--set', 'pavilion.dataVolume.sizeLimit=1.75Gi']), 'pavilion-data').emptyDir, { sizeLimit: '1.75Gi' });
    assert.deepEqual(volume(render(['--set', 'pavilion.dataVolume.sizeLimit=1073741824']), 'pavilion-data').emptyDir, { sizeLimit: '1073741824' });
  });

  test('one persistentVolumeClaim for several replicas (sidecars sharing an audit log) fails the render', () => {
    renderFails(['--set', 'broker.replicas=2', '--set', 'pavilion.dataVolume.volume.persistentVolumeClaim.claimName=pavilion-data'], /one claim for all 2 replicas/);
  });
});

describe('values are validated', () => {
  test('a typo in the pavilion block (pavilion.confg.x) fails helm template and helm lint through the schema', () => {
    renderFails(['--set', 'pavilion.confg.x=1'], /additional properties 'confg' not allowed/);
    const lint = helm(['lint', '--strict', APP_CHART, '--set', 'pavilion.confg.x=1']);
    assert.notEqual(lint.status, 0, 'helm lint fails');
    assert.match(lint.stdout + lint.stderr, /additional properties 'confg' not allowed/);
  });

  test('typos inside pavilion.config, at the top level and a bad tenant id fail through the schema', () => {
    renderFails(['--set', 'pavilion.config.engine.wokers=2'], /additional properties 'wokers' not allowed/);
    renderFails(['--set', 'pavilon.tenants=null'], /additional properties 'pavilon' not allowed/);
    renderFails(['--set', 'pavilion.tenants[0].id=Bank'], /does not match pattern/);
    renderFails(['--set', 'istio.extensionProvider.timout=1s'], /additional properties 'timout' not allowed/);
  });

  test('contradictory values fail the render with a message naming what to change', () => {
    renderFails(['--set', 'pavilion.probes.istioLocalhostRewrite=false'], /kubelet probes the pod IP/);
    renderFails(['--set', 'pavilion.metrics.mode=direct'], /metrics.mode direct needs pavilion.config.http.host 0.0.0.0/);
    renderFails(['--set', 'pavilion.config.http.port=9000'], /must equal pavilion.ports.http.containerPort/);
    renderFails(['--set', 'pavilion.config.extAuthz.grpc.port=9000'], /must equal pavilion.ports.grpc.containerPort/);
    renderFails(['--set', 'pavilion.hsm.enabled=true'], /needs pavilion.hsm.pin.secretName/);
    renderFails(['--set', 'pavilion.config.decisionLog.sink=file', '--set', 'pavilion.config.decisionLog.path=/etc/decisions.ndjson'], /decisionLog.path .* must be under a writable mount/);
    renderFails(['--set', 'pavilion.config.decisionLog.audit.directory=/etc/audit'], /decisionLog.audit.directory .* must be under a writable mount/);
    renderFails(['--set', 'pavilion.config.decisionLog.audit.anchor.kind=file', '--set', 'pavilion.config.decisionLog.audit.anchor.path=/etc/anchors.jsonl'], /decisionLog.audit.anchor.path .* must be under a writable mount/);
    renderFails(['--set', 'pavilion.hsm.enabled=true', '--set', 'pavilion.hsm.pin.secretName=hsm', '--set', 'pavilion.config.decisionLog.sink=none'], /hsm.enabled signs the audit log's checkpoints/);
    renderFails(['--set', 'pavilion.config.extAuthz=null'], /ext_authz gRPC port/);
  });

  test('pseudonymisation keys and last known good bundles must be on a writable mount, not the image\'s read-only /app/var', () => {
    renderFails(['--set', 'pavilion.config.decisionLog.privacy.pseudonymKeyDirectory=/app/var/pseudonym-keys'], /decisionLog.privacy.pseudonymKeyDirectory .* must be under a writable mount/);
    renderFails(['--set', 'pavilion.config.bundles.persistDirectory=/app/var/bundles'], /bundles.persistDirectory .* must be under a writable mount/);
    // unset, the sidecar falls back to /app/var/...: refused when the feature is in use
    renderFails(['--set', 'pavilion.config.decisionLog.privacy.pseudonymKeyDirectory=null', '--set', 'pavilion.config.decisionLog.privacy.pseudonymiseFields[0]=/input/user'], /pseudonymKeyDirectory \(unset: the image default\) .* must be under a writable mount/);
    renderFails(['--set', 'pavilion.config.bundles.persistDirectory=null', '--set', 'pavilion.nats.url=nats://nats:4222'], /persistDirectory \(unset: the image default\) .* must be under a writable mount/);
    render(['--set', 'pavilion.config.decisionLog.privacy.pseudonymKeyDirectory=/tmp/pseudonym-keys']);
  });

  test('the library chart and the example chart validate the pavilion block with the same schema', () => {
    assert.deepEqual(readSchema(APP_CHART).properties?.['pavilion'], readSchema(LIB_CHART).properties?.['pavilion']);
  });

  test('the schema of pavilion.config has exactly the sidecar config sections and keys (sidecar/src/config)', () => {
    // A key the sidecar gains must be settable from values, and the schema must not allow a
    // key the sidecar refuses. tenants come from pavilion.tenants; extAuthz (optional, not
    // in the defaults) is checked by the sidecar's parser on the rendered config above.
    const schema = readSchema(APP_CHART).properties?.['pavilion']?.properties?.['config'];
    assert.ok(schema);
    const compare = (value: Record<string, unknown>, node: Schema, path: string): void => {
      assert.equal(node.additionalProperties, false, `${path} refuses unknown keys`);
      // decisionLog.audit has its own test below (its signer and anchor are unions of kinds)
      const ownTest = (k: string): boolean => path === 'config.decisionLog' && k === 'audit';
      const expected = Object.keys(value).filter((k) => !ownTest(k)).sort();
      // Optional sections absent from the defaults: OPTIONAL_SECTIONS.
      const optional = (k: string): boolean => (path === 'config' && OPTIONAL_SECTIONS.includes(k)) || ownTest(k);
      const actual = Object.keys(node.properties ?? {}).filter((k) => !optional(k)).sort();
      assert.deepEqual(actual, expected, `keys of ${path} (update helm/*/values.schema.json)`);
      for (const [key, child] of Object.entries(value)) {
        if (ownTest(key)) continue;
        if (path === 'config' && key === 'keys') {
          // a map of key id -> key: its entries are checked, not its (free) names
          assert.equal(typeof node.properties?.['keys']?.additionalProperties, 'object', 'config.keys is a map');
          continue;
        }
        if (typeof child === 'object' && child !== null && !Array.isArray(child)) {
          compare(child as Record<string, unknown>, node.properties?.[key] ?? {}, `${path}.${key}`);
        }
      }
    };
    const OPTIONAL_SECTIONS = ['extAuthz', 'nats', 'credentials', 'redis'];
    const { tenants: _tenants, ...sections } = defaultConfig();
    compare(sections as unknown as Record<string, unknown>, schema, 'config');
  });

  test('the schema of decisionLog.audit (optional, so not in the defaults) has exactly the sidecar keys, stream included', () => {
    const audit = readSchema(APP_CHART).properties?.['pavilion']?.properties?.['config']?.properties?.['decisionLog']?.properties?.['audit'];
    // rotateAtBytes is left out of the parsed section when absent: set, so every key is there
    const parsed = parseConfig({ decisionLog: { sink: 'audit', audit: { rotateAtBytes: 65536 } } }).decisionLog.audit;
    assert.ok(audit !== undefined && parsed !== undefined);
    assert.equal(audit.additionalProperties, false);
    assert.deepEqual(Object.keys(audit.properties ?? {}).sort(), Object.keys(parsed).sort());
    const stream = audit.properties?.['stream'];
    assert.equal(stream?.additionalProperties, false, 'decisionLog.audit.stream refuses unknown keys');
    assert.deepEqual(Object.keys(stream?.properties ?? {}).sort(), Object.keys(parsed.stream).sort());
  });
});

describe('Istio extension provider documentation', () => {
  test('NOTES.txt prints a meshConfig extensionProviders entry with only Istio field names and this release\'s values', () => {
    // NOTES.txt is not part of `helm template` output: render it through a copy of the chart.
    const copy = mkdtempSync(join(tmpdir(), 'pavilion-notes-'));
    try {
      cpSync(APP_CHART, copy, { recursive: true });
      writeFileSync(
        join(copy, 'templates', 'zz-notes.yaml'),
        'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: {{ include "broker-example/templates/NOTES.txt" . | quote }}\n',
      );
      const notes = the(render(['--show-only', 'templates/zz-notes.yaml'], copy), 'ConfigMap').data?.['notes'] ?? '';
      const snippet = notes.slice(notes.indexOf('meshConfig:'), notes.indexOf('\n\n', notes.indexOf('meshConfig:')));
      const parsed = parseYaml(snippet) as { meshConfig: { extensionProviders: Record<string, unknown>[] } };
      const provider = parsed.meshConfig.extensionProviders[0];
      assert.ok(provider);
      assert.equal(provider['name'], 'pavilion-ext-authz');
      const grpc = assertIstioProviderShape(provider, 'NOTES.txt');
      assert.deepEqual(grpc, {
        service: `${NAMESPACE}/pavilion-ext-authz.local`,
        port: 9191,
        timeout: '0.2s',
        failOpen: false,
        statusOnError: '403',
        includeRequestBodyInCheck: { maxRequestBytes: 65536, allowPartialMessage: false, packAsBytes: false },
      });
    } finally {
      rmSync(copy, { recursive: true, force: true });
    }
  });

  test('docs/istio.md gives a meshConfig envoyExtAuthzGrpc snippet with only Istio field names, matching the chart', () => {
    const doc = readFileSync(join(ROOT, 'docs', 'istio.md'), 'utf8');
    const blocks = [...doc.matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1] ?? '');
    const mesh = blocks.map((b) => parseYaml(b) as unknown).find(
      (v): v is { meshConfig: { extensionProviders: Record<string, unknown>[] } } =>
        typeof v === 'object' && v !== null && 'meshConfig' in v,
    );
    assert.ok(mesh, 'docs/istio.md has a yaml block with meshConfig');
    const provider = mesh.meshConfig.extensionProviders[0];
    assert.ok(provider);
    const grpc = assertIstioProviderShape(provider, 'docs/istio.md');
    assert.equal(provider['name'], 'pavilion-ext-authz');
    assert.equal(grpc['service'], 'pavilion-ext-authz.local');
    assert.equal(grpc['port'], 9191);
    assert.equal(grpc['timeout'], '0.2s');
    assert.equal(grpc['failOpen'], false);
    assert.equal(grpc['statusOnError'], '403');
    assert.ok(grpc['includeRequestBodyInCheck'], 'includes the request body');
  });
});

// ---- the Dockerfile and its build context --------------------------------------------

/** The Dockerfile's instructions, continuation lines joined, comments dropped. */
function dockerInstructions(): string[] {
  const text = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
  return text.split('\n').filter((l) => !/^\s*#/.test(l)).join('\n').replace(/\\\n/g, ' ').split('\n').map((l) => l.trim()).filter((l) => l !== '');
}

interface Stage { name: string; from: string; instructions: string[] }
function dockerStages(): Stage[] {
  const stages: Stage[] = [];
  for (const line of dockerInstructions()) {
    const from = /^FROM\s+(\S+)(?:\s+AS\s+(\S+))?/i.exec(line);
    if (from) stages.push({ from: from[1]!, name: from[2] ?? String(stages.length), instructions: [] });
    else stages.at(-1)?.instructions.push(line);
  }
  return stages;
}

/** A .dockerignore pattern as a RegExp (Docker's rules: `*` within a segment, `**` any depth). */
function dockerGlob(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === '*' && glob[i + 1] === '*') {
      i++;
      if (glob[i + 1] === '/') { i++; re += '(?:.*/)?'; } else re += '.*';
    } else if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

/** Whether .dockerignore keeps `path` out of the build context: the last pattern matching it or a parent decides. */
function dockerIgnored(path: string): boolean {
  const patterns = readFileSync(join(ROOT, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
  const parents = path.split('/').map((_, i, parts) => parts.slice(0, i + 1).join('/'));
  let ignored = false;
  for (const line of patterns) {
    const negate = line.startsWith('!');
    const re = dockerGlob((negate ? line.slice(1) : line).replace(/^\/+|\/+$/g, ''));
    if (parents.some((p) => re.test(p))) ignored = !negate;
  }
  return ignored;
}

function filesUnder(dir: string): string[] {
  return readdirSync(join(ROOT, dir), { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? filesUnder(`${dir}/${e.name}`) : [`${dir}/${e.name}`]));
}

describe('image', () => {
  test('every file the Dockerfile COPYs from the build context is in it (.dockerignore re-includes it)', () => {
    const copies = dockerInstructions().filter((l) => /^COPY\s/i.test(l) && !/--from=/i.test(l));
    assert.ok(copies.length >= 3);
    const sources = copies.flatMap((l) => l.split(/\s+/).slice(1, -1).filter((a) => !a.startsWith('--')));
    assert.ok(sources.includes('tsconfig.build.json'), 'the build compiles with tsconfig.build.json');
    for (const source of sources) {
      assert.ok(existsSync(join(ROOT, source)), `${source} exists`);
      const files = statSync(join(ROOT, source)).isDirectory() ? filesUnder(source) : [source];
      const kept = files.filter((f) => !dockerIgnored(f));
      assert.ok(kept.length > 0, `${source} is in the build context (.dockerignore)`);
      // left out on purpose: tests and Finder litter, nothing the build reads
      assert.deepEqual(files.filter((f) => dockerIgnored(f) && !/(\.test\.ts|\/\.DS_Store)$/.test(f)), [], `all of ${source} is in the build context`);
    }
    assert.ok(dockerIgnored('node_modules/yaml/package.json') && dockerIgnored('test/helm.test.ts') && dockerIgnored('.tools/bin/helm'), 'the rest stays out');
  });

  test('pkcs11js (native) is compiled in a stage with a C++ toolchain on the runtime\'s base, and the image build checks that it loads', () => {
    const stages = dockerStages();
    const runtime = stages.at(-1)!;
    const from = /^COPY\s+--from=(\S+)\s+\/app\/node_modules\s/i.exec(runtime.instructions.find((l) => /node_modules/.test(l) && /^COPY/i.test(l)) ?? '');
    assert.ok(from, 'the runtime copies node_modules from a build stage');
    const deps = stages.find((s) => s.name === from[1]);
    assert.ok(deps, `stage ${from[1]}`);
    assert.equal(deps.from, runtime.from, 'same base image as the runtime (same glibc, same Node ABI)');
    const run = deps.instructions.filter((l) => /^RUN\s/i.test(l)).join(' ; ');
    assert.match(run, /apt-get install[^;]*\bpython3\b/);
    assert.match(run, /apt-get install[^;]*\bmake\b/);
    assert.match(run, /apt-get install[^;]*\bg\+\+/);
    const npmCi = /npm ci[^&;]*/.exec(run)?.[0] ?? '';
    assert.match(npmCi, /--omit=dev/);
    if (/--ignore-scripts/.test(npmCi)) assert.match(run, /npm rebuild pkcs11js/, 'install scripts off: pkcs11js is rebuilt on its own');
    const check = `node -e "require('pkcs11js')"`;
    assert.ok(run.includes(check), `the ${deps.name} stage checks the add-on loads`);
    assert.ok(runtime.instructions.some((l) => /^RUN\s/i.test(l) && l.includes(check)), 'the runtime stage checks it loads there too');
  });

  test('the Dockerfile starts the same command the chart runs, as 10001, exposing 8181 and 9191', () => {
    const dockerfile = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
    const cmd = /^CMD (\[.*\])$/m.exec(dockerfile)?.[1];
    assert.ok(cmd, 'the Dockerfile has an exec-form CMD');
    assert.deepEqual(JSON.parse(cmd), container(byDefault, 'pavilion').command);
    assert.match(dockerfile, /^USER 10001:10001$/m);
    assert.match(dockerfile, /^EXPOSE 8181 9191$/m);
  });
});
