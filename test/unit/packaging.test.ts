/**
 * The Dockerfile and the Kubernetes manifests agree with each other and
 * with the code. No Docker engine and no cluster: both are parsed (dockerfile-ast, yaml) and checked
 * against src/config.ts, package.json and the config files they ship.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DockerfileParser, type Copy, type Instruction } from 'dockerfile-ast';
import { parseAllDocuments } from 'yaml';
import { afterAll, describe, expect, it } from 'vitest';
import { configKeys, configSchema, loadConfig, type BridgeConfig } from '../../src/config.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const K8S_DIR = path.join(ROOT, 'config/kubernetes');
const HTTP_PORT: number = configSchema.http.port.default;
const CONFIG_ENV = 'PG_WEBHOOK_BRIDGE_CONFIG';

const scratch = mkdtempSync(path.join(tmpdir(), 'pgwb-packaging-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

function readJson(file: string): any {
  return JSON.parse(readFileSync(path.join(ROOT, file), 'utf8'));
}

/** loadConfig() on a JSON text, with an empty environment (nothing from this machine leaks in). */
function loadConfigText(text: string, env: NodeJS.ProcessEnv = {}): BridgeConfig {
  const file = path.join(scratch, `config-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(file, text);
  return loadConfig({ file, env });
}

// ---------------------------------------------------------------------------------------------------
// Dockerfile

const dockerfile = DockerfileParser.parse(readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8'));

interface Stage {
  name: string | null;
  image: string;
  instructions: Instruction[];
}

/** Instructions grouped by the FROM that starts their stage. */
function stages(): Stage[] {
  const out: Stage[] = [];
  for (const instruction of dockerfile.getInstructions()) {
    if (instruction.getKeyword() === 'FROM') {
      const args = instruction.getArguments().map((a) => a.getValue());
      const as = args.findIndex((a) => a.toUpperCase() === 'AS');
      out.push({ name: as >= 0 ? args[as + 1] : null, image: args[0], instructions: [] });
    } else {
      out.at(-1)?.instructions.push(instruction);
    }
  }
  return out;
}

const STAGES = stages();
const FINAL = STAGES.at(-1)!;

function ofKeyword(stage: Stage, keyword: string): Instruction[] {
  return stage.instructions.filter((i) => i.getKeyword() === keyword);
}

function finalCopies(): Copy[] {
  return dockerfile.getCOPYs().filter((c) => FINAL.instructions.includes(c));
}

function jsonForm(instruction: Instruction): string[] {
  return JSON.parse(instruction.getArgumentsContent() ?? 'null');
}

/** `npm ci` / `npm install` commands of a stage, one string each (a RUN may chain several with &&). */
function npmInstalls(stage: Stage): string[] {
  return ofKeyword(stage, 'RUN')
    .flatMap((run) => (run.getArgumentsContent() ?? '').split(/&&|;|\|\|/))
    .map((command) => command.trim())
    .filter((command) => /^npm\s+(ci|install|i)\b/.test(command));
}

function finalEnv(): Map<string, string> {
  const env = new Map<string, string>();
  for (const instruction of dockerfile.getENVs()) {
    if (!FINAL.instructions.includes(instruction)) continue;
    for (const property of instruction.getProperties()) env.set(property.getName(), property.getValue() ?? '');
  }
  return env;
}

const IMAGE_CONFIG_PATH = finalEnv().get(CONFIG_ENV);

describe('Dockerfile', () => {
  it('is multi-stage, every stage on Node 24 (an LTS line still supported; Node 20 is past its end of life)', () => {
    expect(STAGES.length).toBeGreaterThanOrEqual(2);
    for (const stage of STAGES) expect(stage.image).toMatch(/^node:24(\.|-|$)/);
  });

  it('leaves package.json engines at >=20.18.1: the image chooses its Node, users keep theirs', () => {
    expect(readJson('package.json').engines.node).toBe('>=20.18.1');
  });

  it('runs the final stage as a non-root user with a numeric uid (Kubernetes can verify runAsNonRoot)', () => {
    const users = ofKeyword(FINAL, 'USER');
    expect(users.length).toBeGreaterThan(0);
    const [user] = (users.at(-1)!.getArgumentsContent() ?? '').split(':');
    expect(user).toMatch(/^\d+$/);
    expect(Number(user)).toBeGreaterThan(0);
  });

  it('installs no dev dependency in the final image, and no install script runs there', () => {
    // node_modules reach the final stage either by an install in it or by COPY --from a stage.
    const sources: Stage[] = [FINAL];
    for (const copy of finalCopies()) {
      const from = copy.getFromFlag()?.getValue();
      if (!from) continue;
      const copied = copy.getArguments().map((a) => a.getValue());
      if (copied.some((p) => p.includes('node_modules'))) sources.push(STAGES.find((s) => s.name === from)!);
    }
    const installs = sources.flatMap(npmInstalls);
    expect(installs.length).toBeGreaterThan(0);
    for (const install of installs) {
      expect(install).toMatch(/^npm ci\b/); // the lock file, nothing resolved anew
      expect(install).toMatch(/--omit[= ]dev\b/);
      expect(install).toContain('--ignore-scripts');
    }
    // --ignore-scripts is safe only while no production dependency needs an install script.
    const lock = readJson('package-lock.json');
    const scripted = Object.entries<any>(lock.packages).filter(([name, p]) => name && p.hasInstallScript && !p.dev);
    expect(scripted.map(([name]) => name)).toEqual([]);
    // Neither the sources, the tests nor a full node_modules are copied from the build context.
    for (const copy of ofKeyword(FINAL, 'COPY')) {
      const args = copy.getArguments().map((a) => a.getValue());
      expect(args.slice(0, -1).filter((p) => ['.', './', 'src', 'test', 'node_modules'].includes(p.replace(/\/$/, '') || '.'))).toEqual([]);
    }
  });

  it('ships dist/, bin/, sql/ and package.json in the final image', () => {
    const copied = ofKeyword(FINAL, 'COPY').flatMap((c) =>
      c
        .getArguments()
        .slice(0, -1)
        .map((a) => a.getValue()),
    );
    for (const needed of ['dist', 'bin', 'sql', 'package.json']) expect(copied.some((p) => p.endsWith(needed))).toBe(true);
  });

  it('ENTRYPOINT is the CLI through node, CMD is start, and the http port is exposed', () => {
    const entrypoint = ofKeyword(FINAL, 'ENTRYPOINT');
    expect(entrypoint).toHaveLength(1);
    expect(jsonForm(entrypoint[0])).toEqual(['node', readJson('package.json').bin['pg-webhook-bridge']]);
    expect(jsonForm(ofKeyword(FINAL, 'CMD').at(-1)!)).toEqual(['start']);
    const exposed = ofKeyword(FINAL, 'EXPOSE').flatMap((e) => e.getArguments().map((a) => a.getValue().split('/')[0]));
    expect(exposed).toContain(String(HTTP_PORT));
  });

  it('points PG_WEBHOOK_BRIDGE_CONFIG at a config file the image contains and that loads', () => {
    expect(IMAGE_CONFIG_PATH).toBe('/etc/pg-webhook-bridge/config.json');
    const copy = ofKeyword(FINAL, 'COPY')
      .map((c) => c.getArguments().map((a) => a.getValue()))
      .find((args) => args.at(-1) === IMAGE_CONFIG_PATH);
    expect(copy, `a COPY to ${IMAGE_CONFIG_PATH}`).toBeDefined();
    const config = loadConfigText(readFileSync(path.join(ROOT, copy![0]), 'utf8'));
    expect(config.http.port).toBe(HTTP_PORT);
  });

  describe('HEALTHCHECK', () => {
    const checks = ofKeyword(FINAL, 'HEALTHCHECK');
    const command = (): string[] => JSON.parse((checks[0].getArgumentsContent() ?? '').replace(/^CMD\s+/, ''));

    it('runs node (slim images have no curl) against /healthz on the default port', () => {
      expect(checks).toHaveLength(1);
      const [program, ...args] = command();
      expect(program).toBe('node');
      expect(args.join(' ')).toContain('/healthz');
      expect(args.join(' ')).toContain(String(HTTP_PORT));
    });

    // The command is real JavaScript in a JSON string in a Dockerfile: run it against a stub server.
    it.each([
      [200, 0],
      [503, 1],
    ])('exits %s -> %s', async (status, expectedExit) => {
      const server = http.createServer((req, res) => res.writeHead(req.url === '/healthz' ? status : 404).end());
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      try {
        const [program, ...args] = command();
        const port = (server.address() as AddressInfo).port;
        const child = spawn(program === 'node' ? process.execPath : program, args, {
          env: { ...process.env, PG_WEBHOOK_BRIDGE_HTTP_PORT: String(port) },
          stdio: 'ignore',
        });
        const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
        expect(code).toBe(expectedExit);
      } finally {
        await new Promise((resolve) => server.close(resolve));
      }
    });
  });

  it('.dockerignore keeps node_modules, dist, .git and tests out, and nothing the Dockerfile copies', () => {
    const ignored = readFileSync(path.join(ROOT, '.dockerignore'), 'utf8')
      .split('\n')
      .map((line) => line.trim().replace(/^\/|\/$/g, ''))
      .filter((line) => line && !line.startsWith('#'));
    for (const entry of ['node_modules', 'dist', '.git', 'test']) expect(ignored).toContain(entry);
    const fromContext = dockerfile
      .getCOPYs()
      .filter((c) => !c.getFromFlag())
      .flatMap((c) =>
        c
          .getArguments()
          .slice(0, -1)
          .map((a) => a.getValue().replace(/^\.\/|\/$/g, '')),
      );
    for (const source of fromContext) {
      const hit = ignored.find((pattern) => source === pattern || source.startsWith(`${pattern}/`));
      expect(hit, `${source} is copied but .dockerignore drops it`).toBeUndefined();
    }
  });
});

// ---------------------------------------------------------------------------------------------------
// Kubernetes manifests

interface Manifest {
  file: string;
  kind: string;
  doc: any;
}

const YAML_FILES = readdirSync(K8S_DIR)
  .filter((f) => /\.ya?ml$/.test(f))
  .sort();
const MANIFESTS: Manifest[] = YAML_FILES.flatMap((file) =>
  parseAllDocuments(readFileSync(path.join(K8S_DIR, file), 'utf8')).map((document) => {
    if (document.errors.length > 0) throw new Error(`${file}: ${document.errors.map((e) => e.message).join('; ')}`);
    const doc = document.toJS();
    return { file, kind: doc?.kind, doc };
  }),
);

function only(kind: string): any {
  const found = MANIFESTS.filter((m) => m.kind === kind);
  expect(
    found.map((m) => m.file),
    `exactly one ${kind}`,
  ).toHaveLength(1);
  return found[0].doc;
}

const deployment = only('Deployment');
const job = only('Job');
const podTemplate = deployment.spec.template;
const container = podTemplate.spec.containers[0];

/** A probe's or Service's port, named or numbered, as the container port number. */
function portNumber(port: number | string, ports: Array<{ name?: string; containerPort: number }> = container.ports): number {
  if (typeof port === 'number') return port;
  const named = ports.find((p) => p.name === port);
  expect(named, `container port named "${port}"`).toBeDefined();
  return named!.containerPort;
}

function matches(selector: Record<string, string>, labels: Record<string, string>): boolean {
  return Object.entries(selector).every(([k, v]) => labels?.[k] === v);
}

/** Where the ConfigMap's file appears in a pod spec's container, and which ConfigMap key it is. */
function mountedConfig(podSpec: any, c: any): { path: string; configMap: string; key: string }[] {
  const out: { path: string; configMap: string; key: string }[] = [];
  for (const mount of c.volumeMounts ?? []) {
    const volume = podSpec.volumes?.find((v: any) => v.name === mount.name);
    if (!volume?.configMap) continue;
    const items: Array<{ key: string; path: string }> = volume.configMap.items ?? [];
    if (mount.subPath) {
      const item = items.find((i) => i.path === mount.subPath);
      out.push({ path: mount.mountPath, configMap: volume.configMap.name, key: item?.key ?? mount.subPath });
    } else {
      for (const item of items) out.push({ path: path.posix.join(mount.mountPath, item.path), configMap: volume.configMap.name, key: item.key });
    }
  }
  return out;
}

function configMapFile(podSpec: any, c: any): string {
  const mounted = mountedConfig(podSpec, c).find((m) => m.path === IMAGE_CONFIG_PATH);
  expect(mounted, `a ConfigMap file mounted at ${IMAGE_CONFIG_PATH}`).toBeDefined();
  const configMap = MANIFESTS.find((m) => m.kind === 'ConfigMap' && m.doc.metadata.name === mounted!.configMap);
  expect(configMap, `ConfigMap ${mounted!.configMap}`).toBeDefined();
  const text = configMap!.doc.data?.[mounted!.key];
  expect(typeof text, `key ${mounted!.key} in ConfigMap ${mounted!.configMap}`).toBe('string');
  return text;
}

function databaseUrlRef(c: any): { name: string; key: string } {
  const env = (c.env ?? []).find((e: any) => e.name === configSchema.database.url.env);
  expect(env?.valueFrom?.secretKeyRef, `${configSchema.database.url.env} from a Secret`).toBeDefined();
  return env.valueFrom.secretKeyRef;
}

function secretOf(ref: { name: string }): Manifest {
  const secret = MANIFESTS.find((m) => m.kind === 'Secret' && m.doc.metadata.name === ref.name);
  expect(secret, `Secret ${ref.name}`).toBeDefined();
  return secret!;
}

function secretValue(ref: { name: string; key: string }): string {
  const { doc } = secretOf(ref);
  return doc.stringData?.[ref.key] ?? Buffer.from(doc.data?.[ref.key] ?? '', 'base64').toString();
}

/** Every Secret a pod spec can read: env, envFrom and volumes, of every container. */
function secretsReferenced(podSpec: any): string[] {
  const names: string[] = [];
  for (const c of [...(podSpec.initContainers ?? []), ...podSpec.containers]) {
    for (const e of c.env ?? []) if (e.valueFrom?.secretKeyRef) names.push(e.valueFrom.secretKeyRef.name);
    for (const e of c.envFrom ?? []) if (e.secretRef) names.push(e.secretRef.name);
  }
  for (const v of podSpec.volumes ?? []) {
    if (v.secret) names.push(v.secret.secretName);
    for (const source of v.projected?.sources ?? []) if (source.secret) names.push(source.secret.name);
  }
  return names;
}

/** `\set role <name>`: the role the script makes when no -v role= is given. */
const LEAST_PRIVILEGE_DEFAULT_ROLE = /^\\set role (\S+)$/m.exec(readFileSync(path.join(ROOT, 'sql/least_privilege_role.sql'), 'utf8'))![1];

describe('Kubernetes manifests', () => {
  it('all parse, and kustomization.yaml lists every other manifest', () => {
    expect(MANIFESTS.every((m) => typeof m.kind === 'string')).toBe(true);
    const kustomization = only('Kustomization');
    expect([...kustomization.resources].sort()).toEqual(YAML_FILES.filter((f) => f !== 'kustomization.yaml'));
    for (const kind of ['Deployment', 'ConfigMap', 'Service', 'PodDisruptionBudget', 'Job']) only(kind);
    // One Secret for the daemon's role, one for the migrate Job's admin.
    expect(
      MANIFESTS.filter((m) => m.kind === 'Secret')
        .map((m) => m.file)
        .sort(),
    ).toEqual(['migrate-secret.yaml', 'secret.yaml']);
  });

  it('Deployment: 2 replicas; probes on /readyz and /healthz at http.port', () => {
    expect(deployment.spec.replicas).toBe(2);
    expect(container.ports.map((p: any) => p.containerPort)).toContain(HTTP_PORT);
    expect(container.readinessProbe.httpGet.path).toBe('/readyz');
    expect(portNumber(container.readinessProbe.httpGet.port)).toBe(HTTP_PORT);
    expect(container.livenessProbe.httpGet.path).toBe('/healthz');
    expect(portNumber(container.livenessProbe.httpGet.port)).toBe(HTTP_PORT);
    if (container.startupProbe) {
      expect(container.startupProbe.httpGet.path).toBe('/healthz');
      expect(portNumber(container.startupProbe.httpGet.port)).toBe(HTTP_PORT);
    }
    expect(container.resources.requests).toMatchObject({ cpu: expect.anything(), memory: expect.anything() });
    expect(container.resources.limits.memory).toBeDefined();
  });

  it("Deployment: waits for the daemon's graceful stop (within 10 s of SIGTERM)", () => {
    expect(podTemplate.spec.terminationGracePeriodSeconds).toBeGreaterThanOrEqual(10);
  });

  it('Deployment: non-root, read-only root filesystem, no privilege escalation, no capabilities', () => {
    const pod = podTemplate.spec.securityContext ?? {};
    const own = container.securityContext ?? {};
    expect(own.runAsNonRoot ?? pod.runAsNonRoot).toBe(true);
    const uid = own.runAsUser ?? pod.runAsUser;
    if (uid !== undefined) expect(uid).toBeGreaterThan(0);
    expect(own.readOnlyRootFilesystem).toBe(true);
    expect(own.allowPrivilegeEscalation).toBe(false);
    expect(own.capabilities?.drop).toContain('ALL');
    expect(own.privileged ?? false).toBe(false);
  });

  it('Deployment: the ConfigMap file is mounted where the image looks for the config', () => {
    configMapFile(podTemplate.spec, container);
    const override = (container.env ?? []).find((e: any) => e.name === CONFIG_ENV);
    if (override) expect(override.value).toBe(IMAGE_CONFIG_PATH);
  });

  it('the ConfigMap config loads with loadConfig and serves on the probed port', () => {
    const config = loadConfigText(configMapFile(podTemplate.spec, container));
    expect(config.http.port).toBe(HTTP_PORT);
    expect(Object.keys(config.source.tables).length).toBeGreaterThan(0);
  });

  it('DATABASE_URL comes from a key of secret.yaml, named DATABASE_URL, holding a marked placeholder', () => {
    const ref = databaseUrlRef(container);
    expect(ref.key).toBe('DATABASE_URL');
    expect(secretOf(ref).file).toBe('secret.yaml');
    const value = secretValue(ref);
    expect(value).toMatch(/REPLACE_ME|CHANGE_ME/);
    // The placeholder has the shape of a real URL: replacing its parts yields a valid config.
    expect(loadConfigText('{}', { DATABASE_URL: value }).database.url).toBe(value);
  });

  it("the daemon connects as the least-privilege role, never with the migrate Job's admin Secret", () => {
    const daemonRef = databaseUrlRef(container);
    const migrateRef = databaseUrlRef(job.spec.template.spec.containers[0]);
    expect(migrateRef.name).not.toBe(daemonRef.name);
    // No way into the admin Secret from the daemon's pods: env, envFrom or a volume.
    expect(secretsReferenced(podTemplate.spec)).not.toContain(migrateRef.name);
    expect(secretsReferenced(job.spec.template.spec)).not.toContain(daemonRef.name);
    // The daemon's URL names the role that sql/least_privilege_role.sql creates by default.
    expect(decodeURIComponent(new URL(secretValue(daemonRef)).username)).toBe(LEAST_PRIVILEGE_DEFAULT_ROLE);
    const admin = secretValue(migrateRef);
    expect(admin).toMatch(/REPLACE_ME|CHANGE_ME/);
    expect(decodeURIComponent(new URL(admin).username)).not.toBe(LEAST_PRIVILEGE_DEFAULT_ROLE);
    expect(loadConfigText('{}', { DATABASE_URL: admin }).database.url).toBe(admin);
  });

  it("Service targets the metrics port of the Deployment's pods", () => {
    const service = only('Service');
    expect(matches(service.spec.selector, podTemplate.metadata.labels)).toBe(true);
    const metrics = service.spec.ports.find((p: any) => p.name === 'metrics');
    expect(metrics).toBeDefined();
    expect(portNumber(metrics.targetPort ?? metrics.port)).toBe(HTTP_PORT);
  });

  it("PodDisruptionBudget selects the Deployment's pods and lets one go at a time", () => {
    const pdb = only('PodDisruptionBudget');
    expect(pdb.spec.selector.matchLabels).toEqual(deployment.spec.selector.matchLabels);
    expect(matches(pdb.spec.selector.matchLabels, podTemplate.metadata.labels)).toBe(true);
    if (pdb.spec.minAvailable !== undefined) expect(pdb.spec.minAvailable).toBeLessThan(deployment.spec.replicas);
  });

  it('migrate Job: same image and config as the Deployment, its own Secret; its pod is not one of the daemons', () => {
    const spec = job.spec.template.spec;
    const migrate = spec.containers[0];
    expect(migrate.args ?? migrate.command).toEqual(['migrate']);
    expect(migrate.image).toBe(container.image);
    expect(databaseUrlRef(migrate).key).toBe('DATABASE_URL');
    expect(configMapFile(spec, migrate)).toBe(configMapFile(podTemplate.spec, container));
    expect(['Never', 'OnFailure']).toContain(spec.restartPolicy);
    expect(matches(deployment.spec.selector.matchLabels, job.spec.template.metadata.labels)).toBe(false);
    expect((migrate.securityContext ?? {}).readOnlyRootFilesystem).toBe(true);
    expect((migrate.securityContext ?? {}).runAsNonRoot ?? spec.securityContext?.runAsNonRoot).toBe(true);
  });

  it('the pods run as the uid the Dockerfile sets', () => {
    const [user] = (ofKeyword(FINAL, 'USER').at(-1)!.getArgumentsContent() ?? '').split(':');
    for (const spec of [podTemplate.spec, job.spec.template.spec]) {
      const uid = spec.containers[0].securityContext?.runAsUser ?? spec.securityContext?.runAsUser;
      if (uid !== undefined) expect(String(uid)).toBe(user);
    }
  });
});

// ---------------------------------------------------------------------------------------------------
// Shipped config files

describe('config files', () => {
  it('config/default.json loads', () => {
    expect(loadConfigText(readFileSync(path.join(ROOT, 'config/default.json'), 'utf8')).http.port).toBe(HTTP_PORT);
  });

  it('config/example.json loads and spells out every key with its default', () => {
    const text = readFileSync(path.join(ROOT, 'config/example.json'), 'utf8');
    const config = loadConfigText(text);
    const example = JSON.parse(text);
    for (const { key, default: value } of configKeys()) {
      const written = key.split('.').reduce((node: any, part) => node?.[part], example);
      expect(written, key).not.toBeUndefined();
      const loaded = key.split('.').reduce((node: any, part) => node?.[part], config);
      // Empty defaults that depend on source.mode are settled when the config is loaded.
      const settled: Record<string, unknown> = { 'webhooks.table': 'webhook_bridge.webhooks', 'payload.format': 'event' };
      const expected =
        key === 'source.tables'
          ? Object.fromEntries((value as Array<{ table: string; object: string }>).map((p) => [p.table, p.object]))
          : key in settled
            ? settled[key]
            : value;
      expect(loaded, key).toEqual(expected);
    }
  });
});
