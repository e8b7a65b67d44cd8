// A single-node Kubernetes cluster inside the node's namespaces (host.ts): etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler, containerd with runc and the CNI bridge, kubelet, kube-proxy (iptables
// mode), CoreDNS as a process (no forward plugin: no name outside the cluster resolves) and Traefik as the Ingress
// controller. Every daemon is started through nsenter, which execs it, so the recorded PID is the daemon's.
// The images are imported before the kubelet starts; nothing is ever pulled.
//
// Every component authenticates with the one admin token (system:masters): the node is a test fixture, not a
// model of a hardened cluster. The kubelet accepts the API server's calls (logs, exec, port-forward) unauthenticated
// on the node address, which only the host and the node's own namespaces can reach.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Agent, fetch, type RequestInit, type Response } from 'undici';
import { binDir, root, type Server, startProcess, waitUntil } from '../servers.ts';
import { CGROUP_ROOT, CLUSTER_IP_KUBERNETES, NODE_IP, NodeHost, POD_CIDR, SERVICE_CIDR } from './host.ts';
import type { Images } from './images.ts';

export const NODE_NAME = 'hookyard-node';
export const API_SERVER = `https://${NODE_IP}:6443`;
/** Where Traefik serves Ingresses: what `status.url` of a ProviderEndpoint points at. */
export const INGRESS_URL = `http://${NODE_IP}`;
const cniBinDir = join(binDir, 'cni-plugins');
const testLogs = join(root, '.cache/test-logs');
/** Each daemon's output, as node/<daemon>.log; pods' logs are copied to pods/ at the end. */
export const logDir = join(testLogs, 'node');

export interface RunningNode {
  kubeconfig: string;
  /** Folders for local PersistentVolumes: in the node's state, removed with it. */
  volumesDir: string;
  caFile: string;
  token: string;
  /** Stops every daemon by its PID, then removes the namespaces, cgroups and state; returns what went wrong. */
  stop(): Promise<string[]>;
  leftovers(): string[];
  /** Resident memory in KiB by what the process is (NodeHost.memoryKiB). */
  memoryKiB(): Map<string, { kib: number; processes: number }>;
}

/** A CA, the API server's serving certificate and the service-account key pair, made with openssl. */
function makePki(dir: string): void {
  mkdirSync(dir, { recursive: true });
  const f = (name: string) => join(dir, name);
  const run = (args: string[]) => execFileSync('openssl', args, { stdio: 'ignore' });
  const key = (name: string) => ['-newkey', 'rsa:2048', '-nodes', '-keyout', f(`${name}.key`)];
  run(['req', '-x509', ...key('ca'), '-days', '2', '-subj', '/CN=hookyard-node-ca', '-out', f('ca.crt')]);
  run(['req', ...key('apiserver'), '-subj', '/CN=kube-apiserver', '-out', f('apiserver.csr')]);
  const names = ['kubernetes', 'kubernetes.default', 'kubernetes.default.svc', 'kubernetes.default.svc.cluster.local'];
  const sans = [`IP:${NODE_IP}`, `IP:${CLUSTER_IP_KUBERNETES}`, 'IP:127.0.0.1', ...names.map((n) => `DNS:${n}`)];
  writeFileSync(f('ext.cnf'), `subjectAltName=${sans.join(',')}\n`);
  const ca = ['-CA', f('ca.crt'), '-CAkey', f('ca.key'), '-CAcreateserial', '-days', '2'];
  run(['x509', '-req', '-in', f('apiserver.csr'), ...ca, '-extfile', f('ext.cnf'), '-out', f('apiserver.crt')]);
  run(['genrsa', '-out', f('sa.key'), '2048']);
  run(['rsa', '-in', f('sa.key'), '-pubout', '-out', f('sa.pub')]);
}

function containerdConfig(state: string, images: Images): string {
  return `version = 3
root = "${state}/containerd/root"
state = "${state}/containerd/state"
imports = []

[grpc]
  address = "${state}/containerd.sock"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "${images.pause.ref}"

[plugins.'io.containerd.cri.v1.runtime']
  enable_selinux = false
  disable_apparmor = true
  # The host's capability bounding set lacks CAP_SYS_RESOURCE: no process may lower its oom_score_adj.
  restrict_oom_score_adj = true
  # Pods' network namespaces are bind-mounted in the state folder (in the node's mount namespace), not /run/netns.
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "${join(binDir, 'runc')}"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["${cniBinDir}"]
    conf_dir = "${state}/cni/net.d"

[plugins.'io.containerd.grpc.v1.cri']
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"

# Both would otherwise make folders on the host (/opt/containerd, /opt/nri).
[plugins.'io.containerd.internal.v1.opt']
  path = "${state}/containerd/opt"
[plugins.'io.containerd.nri.v1.nri']
  disable = true
`;
}

function cniConfig(state: string): string {
  return JSON.stringify({
    cniVersion: '1.0.0',
    name: 'hookyard-node',
    plugins: [
      {
        type: 'bridge',
        bridge: 'cni0',
        isGateway: true,
        ipMasq: false,
        hairpinMode: true,
        ipam: {
          type: 'host-local',
          ranges: [[{ subnet: POD_CIDR }]],
          routes: [{ dst: '0.0.0.0/0' }],
          dataDir: join(state, 'cni/ipam'),
        },
      },
      { type: 'portmap', capabilities: { portMappings: true } },
    ],
  });
}

function kubeletConfig(state: string): object {
  return {
    apiVersion: 'kubelet.config.k8s.io/v1beta1',
    kind: 'KubeletConfiguration',
    // Kubernetes 1.37 runs on this machine's cgroup v1 only when told so.
    failCgroupV1: false,
    cgroupDriver: 'cgroupfs',
    cgroupRoot: CGROUP_ROOT,
    // Check the kernel settings (bind-mounted in the node's mount namespace) instead of writing the host's.
    protectKernelDefaults: true,
    oomScoreAdj: 0,
    containerRuntimeEndpoint: `unix://${state}/containerd.sock`,
    address: NODE_IP,
    readOnlyPort: 0,
    healthzBindAddress: '127.0.0.1',
    authentication: { anonymous: { enabled: true }, webhook: { enabled: false } },
    authorization: { mode: 'AlwaysAllow' },
    clusterDNS: [NODE_IP],
    clusterDomain: 'cluster.local',
    resolvConf: join(state, 'resolv.conf'),
    podLogsDir: join(state, 'pod-logs'),
    failSwapOn: false,
    // The host's disk is shared with everything else: evict only when it is really full, and never GC the
    // imported images (they cannot be pulled back).
    evictionHard: { 'memory.available': '100Mi', 'nodefs.available': '1%', 'imagefs.available': '1%' },
    imageGCHighThresholdPercent: 100,
    imageGCLowThresholdPercent: 99,
    serializeImagePulls: false,
  };
}

function kubeProxyConfig(kubeconfig: string): object {
  return {
    apiVersion: 'kubeproxy.config.k8s.io/v1alpha1',
    kind: 'KubeProxyConfiguration',
    mode: 'iptables',
    clientConnection: { kubeconfig },
    hostnameOverride: NODE_NAME,
    clusterCIDR: POD_CIDR,
    healthzBindAddress: '127.0.0.1:10256',
    metricsBindAddress: '127.0.0.1:10249',
    // Zero: leave nf_conntrack_max (global to the machine) and the timeouts as they are.
    conntrack: { maxPerCore: 0, min: 0, tcpEstablishedTimeout: '0s', tcpCloseWaitTimeout: '0s' },
    iptables: { localhostNodePorts: false },
  };
}

function corefile(kubeconfig: string): string {
  // No bind plugin in this CoreDNS build: it listens on every address of the node's namespace.
  return `.:53 {
    errors
    ready ${NODE_IP}:8181
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig ${kubeconfig} node
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }
    cache 5
    loop
    loadbalance
}
`;
}

function traefikConfig(token: string, caFile: string): string {
  return JSON.stringify({
    global: { checkNewVersion: false, sendAnonymousUsage: false },
    entryPoints: { web: { address: `${NODE_IP}:80` }, traefik: { address: `${NODE_IP}:8080` } },
    ping: {},
    log: { level: 'INFO' },
    accessLog: {},
    providers: { kubernetesIngress: { endpoint: API_SERVER, token, certAuthFilePath: caFile } },
  });
}

const binaries = ['etcd', 'kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kube-proxy', 'kubelet'];
binaries.push('containerd', 'containerd-shim-runc-v2', 'ctr', 'runc', 'coredns', 'traefik', 'cni-plugins/bridge');

/**
 * The node, not started yet: `start` brings the daemons up in order, each waiting for what it needs; `stop` (also
 * after a failed start) stops each daemon by its PID and removes everything the node made.
 */
export function createNode(state: string): RunningNode & { start(images: Images): Promise<void> } {
  const daemons: Server[] = [];
  const host = new NodeHost(state);
  let stopped: Promise<string[]> | undefined;
  const node = {
    kubeconfig: '',
    volumesDir: join(state, 'volumes'),
    caFile: '',
    token: '',
    async start(images: Images) {
      const missing = binaries.filter((b) => !existsSync(join(binDir, b)));
      if (missing.length) throw new Error(`missing in .cache/bin: ${missing.join(', ')}; run make tools`);
      NodeHost.checkHostIsFree();
      rmSync(join(logDir, 'pods'), { recursive: true, force: true });
      mkdirSync(logDir, { recursive: true });
      await host.create();
      await startDaemons(host, state, images, daemons, node);
    },
    stop() {
      stopped ??= (async () => {
        for (const d of [...daemons].reverse()) await d.stop();
        const errors = await host.remove();
        const podLogs = join(state, 'pod-logs');
        if (existsSync(podLogs)) cpSync(podLogs, join(logDir, 'pods'), { recursive: true });
        rmSync(state, { recursive: true, force: true });
        return errors;
      })();
      return stopped;
    },
    leftovers: () => host.leftovers(),
    memoryKiB: () => host.memoryKiB(),
  };
  return node;
}

async function startDaemons(
  host: NodeHost,
  state: string,
  images: Images,
  daemons: Server[],
  node: RunningNode,
): Promise<void> {
  const pki = join(state, 'pki');
  makePki(pki);
  const token = randomBytes(24).toString('hex');
  writeFileSync(join(pki, 'tokens.csv'), `${token},hookyard-node-admin,1,"system:masters"\n`);
  const caFile = join(pki, 'ca.crt');
  const kubeconfig = join(state, 'kubeconfig');
  writeFileSync(kubeconfig, kubeconfigFor(token, caFile));
  Object.assign(node, { kubeconfig, caFile, token });
  const env = { ...process.env, PATH: `${binDir}:${process.env.PATH}` };
  const start = (name: string, binary: string, args: string[]) => {
    const cmd = host.daemon(join(binDir, binary), args);
    const server = startProcess(`node/${name}`, cmd.command, cmd.args, testLogs, env);
    daemons.push(server);
    return server;
  };
  const ca = new Agent({ connect: { ca: readFileSync(caFile) } });
  const api = (path: string, init: RequestInit = {}) =>
    fetch(`${API_SERVER}${path}`, {
      ...init,
      dispatcher: ca,
      headers: { ...(init.headers as Record<string, string>), authorization: `Bearer ${token}` },
    });

  const etcd = start('etcd', 'etcd', [
    `--data-dir=${join(state, 'etcd')}`,
    '--listen-client-urls=http://127.0.0.1:2379',
    '--advertise-client-urls=http://127.0.0.1:2379',
    '--listen-peer-urls=http://127.0.0.1:2380',
    '--unsafe-no-fsync',
    '--log-level=warn',
  ]);
  const apiserver = start('kube-apiserver', 'kube-apiserver', [
    '--etcd-servers=http://127.0.0.1:2379',
    `--bind-address=${NODE_IP}`,
    `--advertise-address=${NODE_IP}`,
    '--secure-port=6443',
    `--cert-dir=${join(state, 'apiserver-certs')}`,
    `--tls-cert-file=${join(pki, 'apiserver.crt')}`,
    `--tls-private-key-file=${join(pki, 'apiserver.key')}`,
    `--service-cluster-ip-range=${SERVICE_CIDR}`,
    '--authorization-mode=RBAC',
    '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
    `--service-account-key-file=${join(pki, 'sa.pub')}`,
    `--service-account-signing-key-file=${join(pki, 'sa.key')}`,
    `--token-auth-file=${join(pki, 'tokens.csv')}`,
    '--kubelet-preferred-address-types=InternalIP',
    '--allow-privileged=true',
    '--enable-priority-and-fairness=false',
  ]);
  await waitUntil(apiserver, 'kube-apiserver ready', async () => (await api('/readyz')).ok);
  if (etcd.process.exitCode !== null) throw new Error('etcd exited: see .cache/test-logs/node/etcd.log');

  for (const dir of ['cni/net.d', 'volume-plugins', 'pod-logs']) mkdirSync(join(state, dir), { recursive: true });
  writeFileSync(join(state, 'containerd.toml'), containerdConfig(state, images));
  writeFileSync(join(state, 'cni/net.d/10-bridge.conflist'), cniConfig(state));
  const containerd = start('containerd', 'containerd', ['--config', join(state, 'containerd.toml')]);
  const ctr = (...args: string[]) =>
    host.exec(join(binDir, 'ctr'), ['--address', join(state, 'containerd.sock'), '-n', 'k8s.io', ...args]);
  await waitUntil(containerd, 'containerd serving', async () => (await ctr('version')).includes('Server'));
  for (const image of Object.values(images)) await ctr('images', 'import', '--local', image.archive);

  start('kube-controller-manager', 'kube-controller-manager', [
    `--kubeconfig=${kubeconfig}`,
    `--root-ca-file=${caFile}`,
    `--service-account-private-key-file=${join(pki, 'sa.key')}`,
    '--leader-elect=false',
    '--bind-address=127.0.0.1',
    `--flex-volume-plugin-dir=${join(state, 'volume-plugins')}`,
  ]);
  start('kube-scheduler', 'kube-scheduler', [
    `--kubeconfig=${kubeconfig}`,
    '--leader-elect=false',
    '--bind-address=127.0.0.1',
  ]);
  writeFileSync(join(state, 'kube-proxy.json'), JSON.stringify(kubeProxyConfig(kubeconfig)));
  start('kube-proxy', 'kube-proxy', [`--config=${join(state, 'kube-proxy.json')}`]);
  writeFileSync(join(state, 'resolv.conf'), `nameserver ${NODE_IP}\n`);
  writeFileSync(join(state, 'kubelet.json'), JSON.stringify(kubeletConfig(state)));
  const kubelet = start('kubelet', 'kubelet', [
    `--config=${join(state, 'kubelet.json')}`,
    `--kubeconfig=${kubeconfig}`,
    `--hostname-override=${NODE_NAME}`,
    `--node-ip=${NODE_IP}`,
    `--root-dir=${join(state, 'kubelet')}`,
    `--volume-plugin-dir=${join(state, 'volume-plugins')}`,
  ]);
  await waitUntil(kubelet, 'the node Ready', async () => {
    const res = await api(`/api/v1/nodes/${NODE_NAME}`);
    const body = (await res.json()) as { status?: { conditions?: { type: string; status: string }[] } };
    return body.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') === true;
  });

  writeFileSync(join(state, 'Corefile'), corefile(kubeconfig));
  const coredns = start('coredns', 'coredns', ['-conf', join(state, 'Corefile')]);
  writeFileSync(join(state, 'traefik.json'), traefikConfig(token, caFile));
  const traefik = start('traefik', 'traefik', [`--configFile=${join(state, 'traefik.json')}`]);
  await waitUntil(coredns, 'CoreDNS ready', async () => (await fetch(`http://${NODE_IP}:8181/ready`)).ok);
  await waitUntil(traefik, 'Traefik ping', async () => (await fetch(`http://${NODE_IP}:8080/ping`)).ok);
  await createIngressClass(api);
  await waitUntil(
    kubelet,
    'the default ServiceAccount',
    async () => (await api('/api/v1/namespaces/default/serviceaccounts/default')).ok,
  );
  await ca.close();
}

/** Traefik's IngressClass, the cluster's default: Ingresses without a class go to Traefik too. */
async function createIngressClass(api: (path: string, init?: RequestInit) => Promise<Response>): Promise<void> {
  const body = {
    apiVersion: 'networking.k8s.io/v1',
    kind: 'IngressClass',
    metadata: { name: 'traefik', annotations: { 'ingressclass.kubernetes.io/is-default-class': 'true' } },
    spec: { controller: 'traefik.io/ingress-controller' },
  };
  const res = await api('/apis/networking.k8s.io/v1/ingressclasses', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  if (!res.ok) throw new Error(`creating the IngressClass traefik: ${res.status} ${await res.text()}`);
}

function kubeconfigFor(token: string, caFile: string): string {
  return JSON.stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [
      {
        name: 'node',
        cluster: { server: API_SERVER, 'certificate-authority-data': readFileSync(caFile).toString('base64') },
      },
    ],
    users: [{ name: 'admin', user: { token } }],
    contexts: [{ name: 'node', context: { cluster: 'node', user: 'admin', namespace: 'default' } }],
    'current-context': 'node',
  });
}
