/**
 * Service files in the repository (packaging/): the systemd templates are what the one renderer
 * (src/init/systemd.ts, also behind `pgha init --systemd`) makes, and systemd's own checker,
 * `systemd-analyze verify`, finds nothing to say about them (unknown keys, bad values, missing
 * binaries). The only change for the check: ExecStart's /usr/local/bin/pgha(-proxy) — not
 * installed here — becomes this checkout's built CLI. The Dockerfile runs as a user of its own.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { PACKAGED, packagedUnits } from '../../src/init/systemd.js';
import { PGHA, ROOT } from '../support/cli.js';

const PROXY_CLI = join(ROOT, 'dist', 'proxy', 'cli.js');
const dir = mkdtempSync(join(tmpdir(), 'pgha-units-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function verify(name: string, text: string): { status: number; stderr: string } {
  const f = join(dir, name);
  writeFileSync(f, text);
  const r = spawnSync('systemd-analyze', ['verify', f], { encoding: 'utf8' });
  return { status: r.status ?? -1, stderr: r.stderr };
}

const runnable = (text: string) => text.replaceAll(PACKAGED.proxy, `${process.execPath} ${PROXY_CLI}`).replaceAll(PACKAGED.pgha, `${process.execPath} ${PGHA}`);

describe('packaging/systemd', () => {
  const units = packagedUnits();

  it('holds exactly what the renderer makes (node packaging/render-units.mjs)', () => {
    expect(Object.keys(units).sort()).toEqual(['pgha-agent@.service', 'pgha-proxy@.service']);
    for (const [name, text] of Object.entries(units)) expect(readFileSync(join(ROOT, 'packaging', 'systemd', name), 'utf8'), name).toBe(text);
  });

  it('systemd-analyze verify: nothing to say', () => {
    for (const [name, text] of Object.entries(units)) {
      const instance = name.replace('@.', '@n1.');
      const r = verify(name, runnable(readFileSync(join(ROOT, 'packaging', 'systemd', name), 'utf8')));
      expect(r.stderr, name).toBe('');
      expect(r.status, name).toBe(0);
      // an instance of the template too
      const i = spawnSync('systemd-analyze', ['verify', `${join(dir, name)}:${instance}`], { encoding: 'utf8' });
      expect(i.stderr, instance).toBe('');
      void text;
    }
  });

  it('the check can fail: a misspelt key, a missing binary', () => {
    const agent = runnable(units['pgha-agent@.service']);
    expect(verify('typo@.service', agent.replace('ProtectSystem=strict', 'ProtectSytem=strict')).stderr).toMatch(/Unknown key 'ProtectSytem'/);
    const missing = verify('missing@.service', units['pgha-agent@.service'].replaceAll(PACKAGED.pgha, '/nonexistent/pgha'));
    expect(missing.status).not.toBe(0);
    expect(missing.stderr).toMatch(/\/nonexistent\/pgha is not executable/);
  });

  it('hardened: own user, no new privileges, read-only system but the data, no capabilities', () => {
    const agent = units['pgha-agent@.service'];
    const proxy = units['pgha-proxy@.service'];
    for (const u of [agent, proxy]) {
      for (const line of ['NoNewPrivileges=yes', 'ProtectSystem=strict', 'ProtectHome=yes', 'PrivateTmp=yes', 'PrivateDevices=yes', 'CapabilityBoundingSet=', 'RestrictSUIDSGID=yes', 'SystemCallFilter=@system-service', 'UMask=0077'])
        expect(u.split('\n')).toContain(line);
      expect(u).not.toMatch(/^User=root$/m);
      expect(u).not.toMatch(/^RemoveIPC=yes$/m); // would take the shared memory of the PostgreSQL the agent started
    }
    expect(agent).toMatch(/^User=postgres$/m);
    expect(agent).toMatch(/^ReadWritePaths=\/var\/lib\/pgha$/m);
    expect(agent).toMatch(/^KillMode=process$/m);
    expect(agent).toMatch(/^ExecStartPre=-\/usr\/lib\/postgresql\/15\/bin\/pg_ctl -D \/var\/lib\/pgha\/%i -l \/var\/lib\/pgha\/%i\.server\.log -w -t 600 start$/m);
    expect(agent).toMatch(/^ExecStart=\/usr\/local\/bin\/pgha agent --config \/etc\/pgha\/pgha\.yaml --name %i$/m);
    expect(proxy).toMatch(/^User=pgha$/m);
    expect(proxy).not.toMatch(/^ReadWritePaths=/m);
    expect(proxy).toMatch(/^ExecStart=\/usr\/local\/bin\/pgha-proxy --config \/etc\/pgha\/pgha\.yaml --name %i$/m);
    // systemctl reload: the proxy re-reads its auth file on SIGHUP; the agent has nothing to reload
    expect(proxy).toMatch(/^ExecReload=\/bin\/kill -HUP \$MAINPID$/m);
    expect(agent).not.toMatch(/^ExecReload=/m);
  });
});

describe('packaging/Dockerfile', () => {
  it('runs as a user of its own, with the CLIs on PATH', () => {
    const text = readFileSync(join(ROOT, 'packaging', 'Dockerfile'), 'utf8');
    const stages = text.split(/^FROM /m).slice(1);
    const final = stages[stages.length - 1];
    const users = [...final.matchAll(/^USER\s+(\S+)/gm)].map((m) => m[1]);
    expect(users).toEqual(['pgha']);
    expect(final).toMatch(/useradd --system .* pgha \\$/m);
    for (const bin of ['pgha', 'pgha-proxy', 'pgwal']) expect(final).toContain(`/usr/local/bin/${bin}`);
    // what it copies from the build stage is what the build makes here
    for (const m of final.matchAll(/^COPY --from=build \/src\/(\S+)/gm)) expect(['package.json', 'node_modules', 'dist/src', 'dist/proxy', 'native/*.node']).toContain(m[1]);
  });
});
