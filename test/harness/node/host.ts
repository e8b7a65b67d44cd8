// The real node's place on this machine, made so that nothing of the host changes: a network namespace of its own
// linked to the host by a veth pair, a holder process that owns a private mount namespace inside it (every daemon
// joins both with `nsenter -t <holder> -m -n`), and a child cgroup in each cgroup v1 hierarchy for the kubelet's
// cgroupRoot. `ip netns exec` cannot be used: it remounts /sys, which hides the cgroup tree from the kubelet.
//
// Addresses, all private and existing only inside what this file makes:
//   172.31.213.0/24  the veth link: the host side is .1, the node .2 (the API server, the Ingress, DNS)
//   10.213.0.0/24    pods, on the CNI bridge inside the namespace
//   10.213.128.0/24  Services (ClusterIPs), routed on the veth inside the namespace only, so that the node's own
//                    processes (the API server calling the admission webhook) go through kube-proxy's rules
//   203.0.113.7      a second address of the host side (TEST-NET-3, never routed anywhere): a test that sends from
//                    it is a provider on a customer network that a sourceCIDRs rule allows
import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmdirSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';

export const NETNS = 'hookyard-node';
export const HOST_VETH = 'hy-host';
const NODE_VETH = 'hy-node';
export const HOST_IP = '172.31.213.1';
export const CUSTOMER_NETWORK_IP = '203.0.113.7';
export const NODE_IP = '172.31.213.2';
export const POD_CIDR = '10.213.0.0/24';
export const SERVICE_CIDR = '10.213.128.0/24';
export const CLUSTER_IP_KUBERNETES = '10.213.128.1';
/** The CPU weight of the node's pods against the host's processes (each 1024). */
const NODE_CPU_SHARES = 8192;

/** The kubelet's cgroupRoot, a child of every cgroup hierarchy's root. */
export const CGROUP_ROOT = '/hookyard-node';

/** What the kubelet checks with protectKernelDefaults and would otherwise write on the host. */
const KERNEL_TUNABLES: Record<string, string> = {
  'vm/overcommit_memory': '1',
  'vm/panic_on_oom': '0',
  'kernel/panic': '10',
  'kernel/panic_on_oops': '1',
  'kernel/keys/root_maxkeys': '1000000',
  'kernel/keys/root_maxbytes': '25000000',
};

const run = (cmd: string, args: string[]) => execFileSync(cmd, args, { encoding: 'utf8', stdio: 'pipe' });
const execFileAsync = promisify(execFile);

/** The namespace inode a process is in, e.g. "net:[4026532281]". */
function nsOf(pid: number | string, kind: 'net' | 'mnt'): string | undefined {
  try {
    return readlinkSync(`/proc/${pid}/ns/${kind}`);
  } catch {
    return undefined;
  }
}

/** What a node process is, from its command line: the program, or the Hookyard role or sink a Node process runs. */
function processKind(args: string[]): string {
  const program = basename(args[0] ?? '');
  if (program !== 'node') return program || 'kernel thread';
  const cli = args.findIndex((a) => a.endsWith('/cli.mjs'));
  if (cli >= 0) return `hookyard ${args[cli + 1] ?? ''}`.trim();
  return args.some((a) => a.endsWith('/sink.ts')) ? 'sink' : 'node';
}

/** Every mounted cgroup hierarchy (v1 controllers, the named systemd one, the unified v2 one). */
function cgroupMounts(): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((l) => / - cgroup2? /.test(l))
    .map((l) => l.split(' ')[4] as string);
}

/** Every cgroup below `dir`, deepest first. */
function cgroupTree(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const children = readdirSync(dir, { withFileTypes: true }).filter((d) => d.isDirectory());
  return [...children.flatMap((c) => cgroupTree(join(dir, c.name))), dir];
}

function cgroupProcs(dir: string): number[] {
  try {
    return readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

const alive = (pid: number) => existsSync(`/proc/${pid}`);

export class NodeHost {
  holder?: ChildProcess;
  private netnsInode?: string;
  private mntInode?: string;
  private created = { netns: false, veth: false, cgroups: [] as string[] };

  readonly stateDir: string;

  constructor(stateDir: string) {
    this.stateDir = stateDir;
  }

  /** Refuses to start over what another run left, or when the host already uses the node's addresses. */
  static checkHostIsFree(): void {
    if (
      run('ip', ['netns', 'list'])
        .split('\n')
        .some((l) => l.split(' ')[0] === NETNS)
    ) {
      throw new Error(`network namespace ${NETNS} exists (an earlier run was killed?): ip netns del ${NETNS}`);
    }
    const routes = run('ip', ['route', 'show']);
    for (const prefix of ['172.31.213.', '10.213.', CUSTOMER_NETWORK_IP]) {
      if (routes.includes(prefix)) throw new Error(`the host already routes ${prefix}x: the node's addresses clash`);
    }
    const leftover = cgroupMounts().filter((m) => existsSync(join(m, CGROUP_ROOT)));
    if (leftover.length) throw new Error(`cgroups left by an earlier run: rmdir ${leftover.join(' ')} (deepest first)`);
  }

  async create(): Promise<void> {
    run('ip', ['netns', 'add', NETNS]);
    this.created.netns = true;
    run('ip', ['link', 'add', HOST_VETH, 'type', 'veth', 'peer', 'name', NODE_VETH, 'netns', NETNS]);
    this.created.veth = true;
    run('ip', ['addr', 'add', `${HOST_IP}/24`, 'dev', HOST_VETH]);
    run('ip', ['addr', 'add', `${CUSTOMER_NETWORK_IP}/32`, 'dev', HOST_VETH]);
    run('ip', ['link', 'set', HOST_VETH, 'up']);
    const inNs = (...args: string[]) => run('ip', ['-n', NETNS, ...args]);
    inNs('link', 'set', 'lo', 'up');
    inNs('addr', 'add', `${NODE_IP}/24`, 'dev', NODE_VETH);
    inNs('link', 'set', NODE_VETH, 'up');
    inNs('route', 'add', SERVICE_CIDR, 'dev', NODE_VETH);
    inNs('route', 'add', `${CUSTOMER_NETWORK_IP}/32`, 'dev', NODE_VETH);

    // sleep is the holder: unshare execs it, so its PID is the spawned one and it owns the mount namespace.
    this.holder = spawn(
      'nsenter',
      [`--net=/run/netns/${NETNS}`, '--', 'unshare', '--mount', '--propagation', 'slave', 'sleep', 'infinity'],
      { stdio: 'ignore' },
    );
    const pid = this.holder.pid as number;
    const ownMnt = nsOf('self', 'mnt');
    for (let i = 0; nsOf(pid, 'mnt') === ownMnt || nsOf(pid, 'mnt') === undefined; i++) {
      if (i > 100 || this.holder.exitCode !== null) throw new Error('the namespace holder did not start');
      await sleep(20);
    }
    this.netnsInode = nsOf(pid, 'net');
    this.mntInode = nsOf(pid, 'mnt');
    await this.prepareMountNamespace();
    this.createCgroups();
  }

  /**
   * Runs a command inside the node's network and mount namespaces; resolves with its stdout. Asynchronous: the
   * daemons' output pipes must keep draining meanwhile, or a chatty daemon blocks on its log.
   */
  async exec(command: string, args: string[]): Promise<string> {
    const nsenter = ['-t', String(this.holder?.pid), '-m', '-n', '--', command, ...args];
    return (await execFileAsync('nsenter', nsenter, { encoding: 'utf8', maxBuffer: 16 << 20 })).stdout;
  }

  /** The command line that runs `command` as a daemon inside the node (nsenter execs it: same PID). */
  daemon(command: string, args: string[]): { command: string; args: string[] } {
    return { command: 'nsenter', args: ['-t', String(this.holder?.pid), '-m', '-n', '--', command, ...args] };
  }

  private async prepareMountNamespace(): Promise<void> {
    // Private, empty /run, /var/lib and /var/log: the paths that containerd (shim sockets), the CNI library
    // (/var/lib/cni), the kubelet (/var/log/containers) and iptables (its lock) write to whatever their
    // configuration says. They vanish with the namespace; the node's own state is in stateDir.
    for (const dir of ['/run', '/var/lib', '/var/log']) {
      await this.exec('mount', ['-t', 'tmpfs', '-o', 'mode=755', 'tmpfs', dir]);
    }
    const sysctls = join(this.stateDir, 'sysctl');
    for (const [name, wanted] of Object.entries(KERNEL_TUNABLES)) {
      if (readFileSync(`/proc/sys/${name}`, 'utf8').trim() === wanted) continue;
      const file = join(sysctls, name.replaceAll('/', '.'));
      mkdirSync(sysctls, { recursive: true });
      writeFileSync(file, `${wanted}\n`);
      await this.exec('mount', ['--bind', file, `/proc/sys/${name}`]);
    }
    // Both are per network namespace: forwarding and bridged traffic through iptables exist only in the node.
    await this.exec('sh', [
      '-c',
      'echo 1 > /proc/sys/net/ipv4/ip_forward && echo 1 > /proc/sys/net/bridge/bridge-nf-call-iptables',
    ]);
  }

  private createCgroups(): void {
    for (const mount of cgroupMounts()) {
      if (mount.endsWith('/unified')) continue; // cgroup v2 is not the kubelet's here; cleaned up if runc used it
      const dir = join(mount, CGROUP_ROOT);
      mkdirSync(dir);
      this.created.cgroups.push(dir);
      if (existsSync(join(mount, 'cpuset.cpus'))) {
        for (const f of ['cpuset.cpus', 'cpuset.mems']) writeFileSync(join(dir, f), readFileSync(join(mount, f)));
      }
      // At the default 1024 every pod of the node together weighs as much as one busy process of the host: on a
      // shared machine (load 25-40 on 2 cores) the pods got too little CPU to answer their probes within 1 s, and
      // the kubelet restarted receivers and dispatchers about every minute. 8192: the node's thirty-odd pod
      // processes weigh as eight host processes (cpu.shares only matters when the CPUs are contended).
      if (existsSync(join(dir, 'cpu.shares'))) writeFileSync(join(dir, 'cpu.shares'), `${NODE_CPU_SHARES}\n`);
    }
  }

  /** Every process in the node: in its network or mount namespace (daemons, shims) or in its cgroups (containers). */
  processes(): number[] {
    const pids = new Set<number>();
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      const net = nsOf(entry, 'net');
      if ((this.netnsInode && net === this.netnsInode) || (this.mntInode && nsOf(entry, 'mnt') === this.mntInode)) {
        pids.add(Number(entry));
      }
    }
    for (const mount of cgroupMounts()) {
      for (const dir of cgroupTree(join(mount, CGROUP_ROOT))) for (const pid of cgroupProcs(dir)) pids.add(pid);
    }
    pids.delete(process.pid);
    return [...pids];
  }

  /**
   * The resident memory of every process in the node (daemons, shims, containers), in KiB by what the process is:
   * its program's name, or for Node the Hookyard role (`hookyard operator`, ...) or `sink`. Pages shared between
   * processes count once in each.
   */
  memoryKiB(): Map<string, { kib: number; processes: number }> {
    const byWhat = new Map<string, { kib: number; processes: number }>();
    for (const pid of this.processes()) {
      try {
        const kib = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
        const what = processKind(readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0'));
        const sum = byWhat.get(what) ?? { kib: 0, processes: 0 };
        byWhat.set(what, { kib: sum.kib + kib, processes: sum.processes + 1 });
      } catch {
        // exited meanwhile
      }
    }
    return byWhat;
  }

  /**
   * Removes all of it: SIGKILLs what still runs in the node (daemons were stopped by PID before), then the cgroups
   * deepest first, the namespace (which takes the veth, the bridge and every iptables rule with it). Idempotent.
   */
  async remove(): Promise<string[]> {
    const errors: string[] = [];
    for (let round = 0; round < 50; round++) {
      const pids = this.processes().filter((p) => p !== this.holder?.pid);
      if (pids.length === 0) break;
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone meanwhile
        }
      }
      await sleep(100);
    }
    if (this.holder?.pid && alive(this.holder.pid)) {
      this.holder.kill('SIGKILL');
      for (let i = 0; i < 50 && alive(this.holder.pid); i++) await sleep(50);
    }
    for (const mount of cgroupMounts()) {
      for (const dir of cgroupTree(join(mount, CGROUP_ROOT))) {
        for (let i = 0; existsSync(dir); i++) {
          try {
            rmdirSync(dir);
          } catch (err) {
            if (i > 50) {
              errors.push(`cannot remove cgroup ${dir}: ${(err as Error).message}`);
              break;
            }
            await sleep(100);
          }
        }
      }
    }
    if (this.created.netns) {
      try {
        run('ip', ['netns', 'del', NETNS]);
        this.created.netns = false;
      } catch (err) {
        errors.push(`ip netns del ${NETNS}: ${(err as Error).message}`);
      }
    }
    return errors;
  }

  /** What is left of the node on the host; empty after remove() did its job. */
  leftovers(): string[] {
    const found: string[] = [];
    for (const pid of this.processes()) found.push(`process ${pid}: ${readFileSync(`/proc/${pid}/cmdline`, 'utf8')}`);
    if (this.holder?.pid && alive(this.holder.pid)) found.push(`the namespace holder ${this.holder.pid}`);
    if (run('ip', ['netns', 'list']).includes(NETNS)) found.push(`network namespace ${NETNS}`);
    if (
      run('ip', ['-br', 'link', 'show'])
        .split('\n')
        .some((l) => l.startsWith(`${HOST_VETH}@`))
    ) {
      found.push(`veth ${HOST_VETH}`);
    }
    for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
      if (line.includes(this.stateDir) || line.includes(`/run/netns/${NETNS}`)) found.push(`mount ${line}`);
    }
    for (const mount of cgroupMounts()) {
      if (existsSync(join(mount, CGROUP_ROOT))) found.push(`cgroup ${join(mount, CGROUP_ROOT)}`);
    }
    found.push(...hostIptablesRules().map((r) => `host iptables rule ${r}`));
    return found;
  }
}

/** The host's iptables rules that would belong to the node (kube-proxy's chains, its addresses, the bridge). */
export function hostIptablesRules(): string[] {
  const rules: string[] = [];
  for (const save of ['iptables-save', 'ip6tables-save']) {
    let out = '';
    try {
      out = run(save, []);
    } catch {
      continue; // not installed: no rules either
    }
    rules.push(...out.split('\n').filter((l) => /KUBE-|CNI-|cni0|hy-host|10\.213\.|172\.31\.213\./.test(l)));
  }
  return rules;
}
