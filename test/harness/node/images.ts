// Container images for the real node, made without a registry or a Docker engine: each is an OCI image layout
// archive of plain tar layers, cached in .cache/images/ under a hash of everything that goes into it, and imported
// into the node's containerd with `ctr images import --local` (nothing is ever pulled).
//
//   pause     the pod sandbox: pause.c compiled static, one file
//   hookyard  the Dockerfile's final stage: Node 24 at /nodejs/bin/node, dist/ at /app, its USER, ENV and ENTRYPOINT
//   sink      the same Node layer and sink.ts: the recording HTTP server that targets are in the tests
//   nats      the static nats-server binary
//
// Where hookyard differs from the Dockerfile's gcr.io/distroless/nodejs24-debian12 base: the Node binary is the npm
// `node` package's (the same Node 24 the tests run), and the base is only what that binary needs: the shared
// libraries `ldd` lists, copied from this machine's Debian, the CA bundle, /etc/passwd and /etc/group with root and
// nonroot (65532), /home/nonroot and /tmp. No tzdata, no os-release, no licences: not distroless byte for byte.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { binDir, root, tempDir } from '../servers.ts';

/** One file or folder of a layer: copied from `from` (a file or a folder), or written from `text`. */
export interface Entry {
  path: string;
  from?: string;
  text?: string;
  /** A folder with nothing in it. */
  dir?: boolean;
  mode?: number;
  owner?: number;
}

export interface ImageSpec {
  name: string;
  layers: Entry[][];
  config: { User?: string; Env?: string[]; Entrypoint: string[]; WorkingDir?: string };
}

export interface BuiltImage {
  /** The name containerd knows it by, e.g. hookyard.local/sink:0123456789ab. */
  ref: string;
  repository: string;
  tag: string;
  archive: string;
}

const imagesDir = join(root, '.cache/images');
const nodeBinary = join(root, '.cache/node24/node_modules/node/bin/node');
const NONROOT = 65532;

function sha256(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

/** A hash of a file's or a folder's content, names and modes. */
function contentHash(path: string): string {
  const stat = statSync(path);
  if (!stat.isDirectory()) return sha256(readFileSync(path)) + (stat.mode & 0o777).toString(8);
  const names = readdirSync(path).sort();
  return sha256(names.map((n) => `${n}:${contentHash(join(path, n))}`).join('\n'));
}

function specHash(spec: ImageSpec): string {
  const layers = spec.layers.map((l) =>
    l.map((e) => ({ ...e, from: e.from ? contentHash(e.from) : undefined, text: e.text && sha256(e.text) })),
  );
  return sha256(JSON.stringify({ layers, config: spec.config })).slice(0, 12);
}

/** Writes the layer's files into a folder as they will be in the image, then tars them. */
function writeLayer(entries: Entry[], out: string): void {
  const staging = tempDir('hookyard-layer-');
  try {
    for (const e of entries) {
      const at = join(staging.path, e.path);
      mkdirSync(dirname(at), { recursive: true });
      if (e.dir) mkdirSync(at, { recursive: true });
      else if (e.text !== undefined) writeFileSync(at, e.text);
      else if (e.from) cpSync(e.from, at, { recursive: true, dereference: true });
      if (e.mode !== undefined) chmodSync(at, e.mode);
      if (e.owner !== undefined) chownSync(at, e.owner, e.owner);
    }
    const top = readdirSync(staging.path).sort();
    execFileSync('tar', ['--sort=name', '--mtime=@0', '--numeric-owner', '-C', staging.path, '-cf', out, ...top]);
  } finally {
    staging.remove();
  }
}

/** Builds the OCI image layout archive of `spec` unless .cache/images/ has it already. */
export function buildImage(spec: ImageSpec): BuiltImage {
  const tag = specHash(spec);
  const repository = `hookyard.local/${spec.name}`;
  const ref = `${repository}:${tag}`;
  const archive = join(imagesDir, `${spec.name}-${tag}.tar`);
  if (existsSync(archive)) return { ref, repository, tag, archive };

  mkdirSync(imagesDir, { recursive: true });
  const layout = tempDir('hookyard-oci-');
  try {
    const blobs = join(layout.path, 'blobs/sha256');
    mkdirSync(blobs, { recursive: true });
    const addBlob = (data: Buffer | string, mediaType: string) => {
      const digest = sha256(data);
      writeFileSync(join(blobs, digest), data);
      return { mediaType, digest: `sha256:${digest}`, size: Buffer.byteLength(data) };
    };
    const layers = spec.layers.map((entries, i) => {
      const file = join(layout.path, `layer-${i}.tar`);
      writeLayer(entries, file);
      const data = readFileSync(file);
      return addBlob(data, 'application/vnd.oci.image.layer.v1.tar');
    });
    const platform = { architecture: 'amd64', os: 'linux' };
    const config = addBlob(
      JSON.stringify({
        ...platform,
        config: { WorkingDir: '/', ...spec.config },
        rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) },
      }),
      'application/vnd.oci.image.config.v1+json',
    );
    const manifest = addBlob(
      JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config, layers }),
      'application/vnd.oci.image.manifest.v1+json',
    );
    const annotations = { 'io.containerd.image.name': ref, 'org.opencontainers.image.ref.name': tag };
    writeFileSync(
      join(layout.path, 'index.json'),
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.index.v1+json',
        manifests: [{ ...manifest, platform, annotations }],
      }),
    );
    writeFileSync(join(layout.path, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
    execFileSync('tar', ['-C', layout.path, '-cf', `${archive}.tmp`, 'oci-layout', 'index.json', 'blobs']);
    renameSync(`${archive}.tmp`, archive);
    for (const old of readdirSync(imagesDir)) {
      if (old.startsWith(`${spec.name}-`) && join(imagesDir, old) !== archive) rmSync(join(imagesDir, old));
    }
  } finally {
    layout.remove();
  }
  return { ref, repository, tag, archive };
}

/** The final stage of the Dockerfile: its USER, ENV and ENTRYPOINT, and where it copies dist/ to. */
export function dockerfileFinalStage(): { user: string; env: string[]; entrypoint: string[]; distDest: string } {
  const text = readFileSync(join(root, 'Dockerfile'), 'utf8').replace(/\\\n/g, ' ');
  const stage = text.slice(text.lastIndexOf('\nFROM '));
  const value = (instruction: string) => {
    const line = stage.split('\n').find((l) => l.startsWith(`${instruction} `));
    if (!line) throw new Error(`the Dockerfile's final stage has no ${instruction}`);
    return line.slice(instruction.length + 1).trim();
  };
  const distDest = value('COPY').match(/\/dist\/?\s+(\S+)$/)?.[1];
  if (!distDest) throw new Error("the Dockerfile's final stage does not copy dist/");
  return {
    user: value('USER'),
    env: [value('ENV').replace(/^(\w+)\s+/, '$1=')],
    entrypoint: JSON.parse(value('ENTRYPOINT')) as string[],
    distDest,
  };
}

/** Node 24 and what it needs to run as nonroot: the base layer of the hookyard and sink images. */
function nodeLayer(nodePath: string): Entry[] {
  const ldd = execFileSync('ldd', [nodeBinary], { encoding: 'utf8' });
  const libraries = [...ldd.matchAll(/(?:=>\s*)?(\/\S+)\s+\(0x/g)].map((m) => m[1] as string);
  return [
    { path: nodePath, from: nodeBinary, mode: 0o755 },
    ...libraries.map((lib) => ({ path: lib, from: lib, mode: 0o755 })),
    { path: '/etc/ssl/certs/ca-certificates.crt', from: '/etc/ssl/certs/ca-certificates.crt', mode: 0o644 },
    {
      path: '/etc/passwd',
      text: `root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:${NONROOT}:${NONROOT}:nonroot:/home/nonroot:/sbin/nologin\n`,
    },
    { path: '/etc/group', text: `root:x:0:\nnonroot:x:${NONROOT}:\n` },
    { path: '/home/nonroot', dir: true, mode: 0o700, owner: NONROOT },
    { path: '/tmp', dir: true, mode: 0o1777 },
  ];
}

const baseEnv = ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'];

export function imageSpecs(): Record<'pause' | 'hookyard' | 'sink' | 'nats', ImageSpec> {
  const stage = dockerfileFinalStage();
  const nodePath = stage.entrypoint[0] as string;
  const node = nodeLayer(nodePath);
  const pauseBuild = tempDir('hookyard-pause-');
  const pause = join(pauseBuild.path, 'pause');
  execFileSync('gcc', ['-static', '-Os', '-s', '-o', pause, join(import.meta.dirname, 'pause.c')]);
  process.on('exit', () => pauseBuild.remove());
  const caBundle = 'SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt';
  return {
    pause: {
      name: 'pause',
      layers: [[{ path: '/pause', from: pause, mode: 0o755 }]],
      config: { User: '65535:65535', Entrypoint: ['/pause'] },
    },
    hookyard: {
      name: 'hookyard',
      layers: [node, [{ path: stage.distDest, from: join(root, 'dist') }]],
      config: { User: stage.user, Env: [...baseEnv, caBundle, ...stage.env], Entrypoint: stage.entrypoint },
    },
    sink: {
      name: 'sink',
      layers: [node, [{ path: '/sink/sink.ts', from: join(import.meta.dirname, 'sink.ts'), mode: 0o644 }]],
      config: { User: `${NONROOT}:${NONROOT}`, Env: baseEnv, Entrypoint: [nodePath, '/sink/sink.ts'] },
    },
    nats: {
      name: 'nats',
      layers: [[{ path: '/nats-server', from: join(binDir, 'nats-server'), mode: 0o755 }]],
      config: { User: `${NONROOT}:${NONROOT}`, Entrypoint: ['/nats-server'] },
    },
  };
}

export type Images = Record<keyof ReturnType<typeof imageSpecs>, BuiltImage>;

export function buildImages(): Images {
  if (!existsSync(join(root, 'dist/cli.mjs'))) throw new Error('dist/cli.mjs is missing: run npm run build first');
  const specs = imageSpecs();
  return Object.fromEntries(Object.entries(specs).map(([k, spec]) => [k, buildImage(spec)])) as Images;
}
