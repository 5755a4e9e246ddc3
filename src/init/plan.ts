/**
 * `pgha init`: what bootstrapping the cluster of a config file means, as data. A pure function of
 * the resolved config and what the data directories look like now; `execute.ts` carries the plan
 * out, `systemd.ts` renders the unit files it names. Nothing here touches the machine.
 */
import { dirname } from 'node:path';
import { hostPort, type ClusterConfig, type ClusterNode } from '../config/load.js';
import { memberSlotName } from '../slots/member-slot.js';

export type DirState = 'absent' | 'empty' | 'not-empty' | 'not-a-directory';

export interface InitPlanInput {
  cluster: ClusterConfig;
  /** absolute path of the config file, as the daemons will be given it */
  configFile: string;
  /** each node's data directory as it is now */
  dirState: Record<string, DirState>;
  /** addresses of this machine (a node elsewhere cannot be built here) */
  localAddresses: string[];
  /** how `pgha` and `pgha-proxy` are run: exact argv prefixes, and how to show them */
  pgha: { argv: string[]; shown: string };
  proxy: { argv: string[]; shown: string };
}

export interface PlannedNode {
  name: string;
  role: 'primary' | 'standby';
  dataDir: string;
  host: string;
  pgPort: number;
  /** the physical slot it streams through on the primary (pgha_<name>) */
  slot: string;
  agentUrl: string;
  /** postgresql.conf lines of this node alone (after the cluster's) */
  nodeSettings: Record<string, string | number>;
}

export interface Daemon {
  kind: 'agent' | 'proxy';
  name: string;
  /** exactly what to run */
  argv: string[];
  /** the same, as a person types it */
  command: string;
  /** its systemd unit's file name */
  unit: string;
}

export interface InitPlan {
  configFile: string;
  cluster: string | null;
  /** why it cannot be done (nothing is touched when there is one) */
  refusals: string[];
  /** facts worth a line (not refusals) */
  notes: string[];
  osUser: string;
  superuser: string;
  replicationUser: string;
  pgBin: string;
  nodes: PlannedNode[];
  primary: string;
  initdbArgs: string[];
  /** postgresql.conf lines every node gets (written on the primary, copied by the base backups) */
  settings: Record<string, string | number>;
  /** pg_hba.conf of every node */
  hba: string[];
  /** SQL on the primary after it started (no secrets: a password is set from its file apart) */
  sql: string[];
  /** member slots made on the primary before the base backups */
  slots: string[];
  steps: string[];
  daemons: Daemon[];
}

/** stands for the copy of the superuser's password file initdb reads (made readable by the owner for that run) */
export const PWFILE = '<superuserPasswordFile>';

const sq = (v: string) => `'${v.replace(/'/g, "''")}'`;
const isIpv4 = (h: string) => /^\d+\.\d+\.\d+\.\d+$/.test(h);
const isIpv6 = (h: string) => h.includes(':');
const isLoopback = (h: string) => /^(127\.\d+\.\d+\.\d+|::1|localhost)$/.test(h);

/** an address as pg_hba.conf takes it */
function hbaAddress(host: string): string {
  const h = host.replace(/^\[|\]$/g, '');
  if (isIpv4(h)) return `${h}/32`;
  if (isIpv6(h)) return `${h}/128`;
  return h;
}

/** a shell word (for the commands shown) */
export function shellWord(w: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(w) ? w : `'${w.replace(/'/g, `'\\''`)}'`;
}

/** a PostgreSQL identifier in SQL */
const ident = (s: string) => `"${s.replace(/"/g, '""')}"`;

function listenAddresses(n: ClusterNode): string {
  const h = n.host.replace(/^\[|\]$/g, '');
  if (h === 'localhost' || h === '127.0.0.1') return '127.0.0.1';
  // the agent's own SQL goes to 127.0.0.1
  return isIpv4(h) || isIpv6(h) ? `${h},127.0.0.1` : '*';
}

export function planInit(input: InitPlanInput): InitPlan {
  const { cluster: c } = input;
  const pg = c.postgres;
  const refusals: string[] = [];
  const notes: string[] = [];
  const primaryNode = c.nodes.find((n) => n.name === pg.primary)!;

  c.nodes.forEach((n, i) => {
    const state = input.dirState[n.dataDir] ?? 'absent';
    if (state === 'not-empty') refusals.push(`nodes[${i}] ${n.name}: data directory ${n.dataDir} exists and is not empty`);
    if (state === 'not-a-directory') refusals.push(`nodes[${i}] ${n.name}: ${n.dataDir} exists and is not a directory`);
    const h = n.host.replace(/^\[|\]$/g, '');
    if ((isIpv4(h) || isIpv6(h)) && !isLoopback(h) && !input.localAddresses.includes(h))
      refusals.push(`nodes[${i}] ${n.name}: ${n.host} is not an address of this machine (pgha init builds every node here, where all the data directories are)`);
  });

  const settings: Record<string, string | number> = {
    wal_level: pg.walLevel,
    max_wal_senders: pg.maxWalSenders,
    max_replication_slots: pg.maxReplicationSlots,
    hot_standby: 'on',
    hot_standby_feedback: 'on',
    wal_receiver_timeout: '10s',
    wal_sender_timeout: '10s',
    wal_retrieve_retry_interval: '1s',
  };
  if (!pg.dataChecksums) settings.wal_log_hints = 'on';
  if (pg.auth !== 'trust') settings.password_encryption = pg.auth;
  for (const [k, v] of Object.entries(pg.parameters)) settings[k] = typeof v === 'boolean' ? (v ? 'on' : 'off') : v;

  const nodes: PlannedNode[] = [primaryNode, ...c.nodes.filter((n) => n !== primaryNode)].map((n) => {
    const nodeSettings: Record<string, string | number> = {
      port: n.pgPort,
      listen_addresses: listenAddresses(n),
      cluster_name: n.name,
      unix_socket_directories: pg.socketDir ?? dirname(n.dataDir),
    };
    // parameters the operator set win over ours for this node too
    for (const k of Object.keys(pg.parameters)) if (k in nodeSettings) nodeSettings[k] = settings[k];
    return {
      name: n.name,
      role: n === primaryNode ? 'primary' : 'standby',
      dataDir: n.dataDir,
      host: n.host,
      pgPort: n.pgPort,
      slot: memberSlotName(n.name),
      agentUrl: n.agentUrl,
      nodeSettings,
    } satisfies PlannedNode;
  });
  const slotNames = new Map<string, string>();
  for (const n of nodes) {
    const other = slotNames.get(n.slot);
    if (other) refusals.push(`nodes ${other} and ${n.name} would stream through the same slot ${n.slot}: give them names that differ in more than case and punctuation`);
    slotNames.set(n.slot, n.name);
  }

  // pg_hba: the members (SQL of the agents and proxies, replication), loopback, then the operator's lines
  const method = pg.auth;
  const addresses = [...new Set(['127.0.0.1', '::1', ...c.nodes.map((n) => n.host.replace(/^\[|\]$/g, '')), ...c.proxies.flatMap((p) => (p.settings.listen ? [p.settings.listen.replace(/:\d+$/, '').replace(/^\[|\]$/g, '')] : []))])].filter(
    (h) => h !== '' && h !== '0.0.0.0' && h !== '::' && h !== '*' && h !== 'localhost',
  );
  const users = [...new Set([pg.superuser, pg.replicationUser])];
  const hba = [
    '# TYPE  DATABASE     USER  ADDRESS  METHOD — written by pgha init',
    `local   all          all            ${method === 'trust' ? 'trust' : 'peer'}`,
    `local   replication  all            ${method === 'trust' ? 'trust' : 'peer'}`,
    ...addresses.flatMap((a) => [
      `host    all          all          ${hbaAddress(a)}  ${method}`,
      ...users.map((u) => `host    replication  ${u}  ${hbaAddress(a)}  ${method}`),
    ]),
    ...pg.hba,
  ];

  const sql: string[] = [];
  if (pg.replicationUser !== pg.superuser) sql.push(`CREATE ROLE ${ident(pg.replicationUser)} WITH LOGIN REPLICATION`);
  if (pg.replicationPasswordFile && pg.replicationUser !== pg.superuser) notes.push(`the password of ${pg.replicationUser} is set from ${pg.replicationPasswordFile}`);
  if (method !== 'trust')
    notes.push(
      `pg_hba asks members for a ${method} password: the agents (and the standbys' primary_conninfo after a rejoin) read it from ~${pg.osUser}/.pgpass (mode 0600), the proxies from healthPasswordFile`,
    );

  // pg_hba.conf is replaced before the first start, so initdb's own is never used
  const initdbArgs = ['-D', primaryNode.dataDir, '-U', pg.superuser, '-E', 'UTF8', '--locale=C', '--auth=trust'];
  if (pg.superuserPasswordFile) initdbArgs.push(`--pwfile=${PWFILE}`);
  if (pg.dataChecksums) initdbArgs.push('--data-checksums');
  initdbArgs.push(...pg.initdbArgs);

  const standbys = nodes.filter((n) => n.role === 'standby');
  const steps = [
    `create ${nodes.map((n) => n.dataDir).join(', ')} (mode 0700, owner ${pg.osUser})`,
    `initdb ${initdbArgs.map(shellWord).join(' ')}`,
    `${primaryNode.name}: postgresql.conf: ${Object.entries({ ...settings, ...nodes[0].nodeSettings }).map(([k, v]) => `${k}=${v}`).join(', ')}`,
    `${primaryNode.name}: pg_hba.conf: ${method} for ${users.join(', ')} (replication) and all (SQL) from ${addresses.join(', ')}${pg.hba.length ? `, then ${pg.hba.length} line(s) of postgres.hba` : ''}`,
    `${primaryNode.name}: pg_ctl start (port ${primaryNode.pgPort})`,
    ...sql.map((s) => `${primaryNode.name}: ${s}`),
    ...(pg.replicationPasswordFile && pg.replicationUser !== pg.superuser ? [`${primaryNode.name}: ALTER ROLE ${ident(pg.replicationUser)} PASSWORD (from ${pg.replicationPasswordFile})`] : []),
    ...(standbys.length ? [`${primaryNode.name}: member slots ${standbys.map((s) => s.slot).join(', ')} (pg_create_physical_replication_slot, WAL reserved now)`] : []),
    ...standbys.map(
      (s) =>
        `${s.name}: pg_basebackup -D ${s.dataDir} -h ${primaryNode.host} -p ${primaryNode.pgPort} -U ${pg.replicationUser} -X stream -c fast -R -S ${s.slot} (standby.signal, primary_conninfo, primary_slot_name), then port=${s.pgPort}, cluster_name=${s.name}; pg_ctl start`,
    ),
    ...(standbys.length ? [`wait until ${standbys.map((s) => s.name).join(', ')} stream from ${primaryNode.name} (pg_stat_replication)`] : []),
  ];

  const configWord = shellWord(input.configFile);
  const daemons: Daemon[] = [
    ...c.nodes.map((n) => ({
      kind: 'agent' as const,
      name: n.name,
      argv: [...input.pgha.argv, 'agent', '--config', input.configFile, '--name', n.name],
      command: `${input.pgha.shown} agent --config ${configWord} --name ${shellWord(n.name)}`,
      unit: `pgha-agent@${n.name}.service`,
    })),
    ...c.proxies.map((p) => ({
      kind: 'proxy' as const,
      name: p.name,
      argv: [...input.proxy.argv, '--config', input.configFile, '--name', p.name],
      command: `${input.proxy.shown} --config ${configWord} --name ${shellWord(p.name)}`,
      unit: `pgha-proxy@${p.name}.service`,
    })),
  ];
  if (c.proxies.length === 0) notes.push('the file lists no proxies: clients connect to the primary directly, and nothing fails over');
  if (!c.tokenFile && !c.token) notes.push('no tokenFile in the file: give the daemons the agents\' token in $PGHA_TOKEN');

  return {
    configFile: input.configFile,
    cluster: c.name,
    refusals,
    notes,
    osUser: pg.osUser,
    superuser: pg.superuser,
    replicationUser: pg.replicationUser,
    pgBin: c.pgBin,
    nodes,
    primary: primaryNode.name,
    initdbArgs,
    settings,
    hba,
    sql,
    slots: standbys.map((s) => s.slot),
    steps,
    daemons,
  };
}

/** postgresql.conf lines (appended: the last line of a setting wins) */
export function confBlock(title: string, settings: Record<string, string | number>): string {
  return `\n# ${title}\n${Object.entries(settings)
    .map(([k, v]) => `${k} = ${typeof v === 'number' ? v : sq(v)}`)
    .join('\n')}\n`;
}

/** where the standbys' base backups connect */
export function primaryAddress(plan: InitPlan): string {
  const p = plan.nodes[0];
  return hostPort(p.host, p.pgPort);
}
