/**
 * systemd unit files for the daemons, hardened: each runs as its own unprivileged user with no way
 * to gain privileges, the file system read-only but for what it must write, no capabilities, its
 * own /tmp and no home directories. One renderer makes the units `pgha init --systemd DIR` writes
 * (this cluster's paths) and the templates under packaging/systemd (`%i`: the node or proxy name).
 */
import { dirname } from 'node:path';

export interface UnitSpec {
  description: string;
  user: string;
  group: string;
  execStart: string[];
  /** commands run before, failures ignored ("-" prefix) */
  execStartPre?: string[][];
  /** the only paths it may write (ProtectSystem=strict makes the rest read-only) */
  readWritePaths: string[];
  /** the main process only: what it started (PostgreSQL, through pg_ctl) outlives its restart */
  killMainOnly?: boolean;
  /** `systemctl reload` sends SIGHUP to the main process */
  reloadWithHup?: boolean;
  environment?: Record<string, string>;
  timeoutStartSec?: number;
  comment?: string[];
}

/** a word of ExecStart=: quoted when it has to be, `%` doubled unless it is a specifier we mean */
function execWord(w: string): string {
  const escaped = w.replace(/%(?!i\b|i$|I\b|I$)/g, '%%').replace(/\\/g, '\\\\');
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(escaped) ? escaped : `"${escaped.replace(/"/g, '\\"')}"`;
}

const HARDENING = [
  'NoNewPrivileges=yes',
  'ProtectSystem=strict',
  'ProtectHome=yes',
  'PrivateTmp=yes',
  'PrivateDevices=yes',
  'ProtectKernelTunables=yes',
  'ProtectKernelModules=yes',
  'ProtectKernelLogs=yes',
  'ProtectControlGroups=yes',
  'ProtectClock=yes',
  'ProtectHostname=yes',
  'ProtectProc=invisible',
  'RestrictSUIDSGID=yes',
  'RestrictRealtime=yes',
  'RestrictNamespaces=yes',
  'LockPersonality=yes',
  // no RemoveIPC=yes: it would remove the shared memory of the PostgreSQL the agent started (same user)
  'CapabilityBoundingSet=',
  'AmbientCapabilities=',
  'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK',
  'SystemCallArchitectures=native',
  'SystemCallFilter=@system-service',
  'SystemCallErrorNumber=EPERM',
  'UMask=0077',
];

export function renderUnit(u: UnitSpec): string {
  const lines = [
    ...(u.comment ?? []).map((c) => `# ${c}`),
    '[Unit]',
    `Description=${u.description}`,
    'After=network-online.target',
    'Wants=network-online.target',
    '',
    '[Service]',
    'Type=simple',
    `User=${u.user}`,
    `Group=${u.group}`,
    ...(u.execStartPre ?? []).map((argv) => `ExecStartPre=-${argv.map(execWord).join(' ')}`),
    `ExecStart=${u.execStart.map(execWord).join(' ')}`,
    ...(u.reloadWithHup ? ['ExecReload=/bin/kill -HUP $MAINPID'] : []),
    'Restart=on-failure',
    'RestartSec=2s',
    ...(u.timeoutStartSec ? [`TimeoutStartSec=${u.timeoutStartSec}`] : []),
    'TimeoutStopSec=30s',
    ...(u.killMainOnly ? ['KillMode=process'] : []),
    ...Object.entries(u.environment ?? {}).map(([k, v]) => `Environment=${k}=${v}`),
    'LimitNOFILE=65536',
    ...HARDENING,
    `ReadWritePaths=${[...new Set(u.readWritePaths)].join(' ')}`,
    '',
    '[Install]',
    'WantedBy=multi-user.target',
    '',
  ];
  return lines.join('\n');
}

export interface AgentUnitInput {
  /** the node's name, or `%i` for a template */
  node: string;
  dataDir: string;
  /** unix_socket_directories of the node */
  socketDir: string;
  pgBin: string;
  user: string;
  group: string;
  /** argv of `pgha` (e.g. /usr/bin/pgha, or node + dist/src/cli/pgha.js) */
  pgha: string[];
  configFile: string;
  /** the first comment line's tail: who wrote it */
  origin?: string;
}

/**
 * The agent of one node. Before it starts, PostgreSQL is started if it is not running (pg_ctl
 * refuses when it runs: the "-" ignores that), so a booted machine has both; the server runs in
 * the agent's unit and, with KillMode=process, outlives a restart of the agent. A fenced node
 * comes up in recovery (its data directory says so), an old primary is stopped and rejoined by its
 * agent. It writes the data directory, the files beside it (server log, lost-transaction reports,
 * a re-cloned directory moved aside) and the socket directory.
 */
export function agentUnit(a: AgentUnitInput): string {
  const parent = dirname(a.dataDir);
  return renderUnit({
    comment: [`pgha agent beside ${a.node === '%i' ? 'node %i' : a.node} (${a.dataDir}); ${a.origin ?? 'written by pgha init'}`, 'the PostgreSQL it starts stays up when the agent restarts (KillMode=process)'],
    description: `pgha agent for node ${a.node}`,
    user: a.user,
    group: a.group,
    execStartPre: [[`${a.pgBin}/pg_ctl`, '-D', a.dataDir, '-l', `${a.dataDir}.server.log`, '-w', '-t', '600', 'start']],
    execStart: [...a.pgha, 'agent', '--config', a.configFile, '--name', a.node],
    readWritePaths: [parent, a.socketDir],
    killMainOnly: true,
    timeoutStartSec: 660,
    environment: { PGHA_LOG_LEVEL: 'info' },
  });
}

export interface ProxyUnitInput {
  /** the proxy's name, or `%i` for a template */
  proxy: string;
  user: string;
  group: string;
  proxyCommand: string[];
  configFile: string;
  origin?: string;
}

/** pgha-proxy writes nothing on disk: ProtectSystem=strict with no writable path at all; `systemctl reload` re-reads its auth file (SIGHUP) */
export function proxyUnit(p: ProxyUnitInput): string {
  return renderUnit({
    comment: [`pgha-proxy ${p.proxy}; ${p.origin ?? 'written by pgha init'}`, 'it writes nothing on disk: the whole file system is read-only for it'],
    description: `pgha-proxy ${p.proxy}`,
    user: p.user,
    group: p.group,
    execStart: [...p.proxyCommand, '--config', p.configFile, '--name', p.proxy],
    reloadWithHup: true,
    readWritePaths: [],
    environment: { PGHA_LOG_LEVEL: 'info' },
  }).replace(/^ReadWritePaths=\n/m, '');
}

/** what packaging/systemd holds: the templates for an installed pgha (instance %i: node or proxy name) */
export const PACKAGED = {
  config: '/etc/pgha/pgha.yaml',
  pgha: '/usr/local/bin/pgha',
  proxy: '/usr/local/bin/pgha-proxy',
  dataDirs: '/var/lib/pgha',
  pgBin: '/usr/lib/postgresql/15/bin',
};

export function packagedUnits(): Record<string, string> {
  const origin = 'packaging/systemd, made by src/init/systemd.ts (node packaging/render-units.mjs)';
  return {
    'pgha-agent@.service': agentUnit({
      node: '%i',
      dataDir: `${PACKAGED.dataDirs}/%i`,
      socketDir: PACKAGED.dataDirs,
      pgBin: PACKAGED.pgBin,
      user: 'postgres',
      group: 'postgres',
      pgha: [PACKAGED.pgha],
      configFile: PACKAGED.config,
      origin,
    }),
    'pgha-proxy@.service': proxyUnit({ proxy: '%i', user: 'pgha', group: 'pgha', proxyCommand: [PACKAGED.proxy], configFile: PACKAGED.config, origin }),
  };
}
