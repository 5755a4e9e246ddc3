/**
 * The admin port's status page (GET /) in a real headless Chromium (Debian's chromium, driven by
 * playwright-core; no browser is downloaded): a 3-node cluster with agents behind one pgha-proxy
 * with --auto-failover. The page must show every node with the role PostgreSQL itself reports
 * (pg_is_in_recovery() asked on each node), then, after kill -9 of the primary, the node that now
 * answers as the primary and the failover in the timeline. It is served without the admin token
 * (as /status), under a Content-Security-Policy that lets only its own script run, and values that
 * hold markup are shown as text. A screenshot is written to .tmp/status-page.png.
 */
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll, waitFor } from '../harness/cluster.js';
import { stopAgentProcesses } from '../support/agents.js';
import { askInRecovery, HaCluster, type HaNode } from '../support/ha-cluster.js';
import { pgha } from '../support/cli.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const SCREENSHOT = join(ROOT, '.tmp', 'status-page.png');

let ha: HaCluster | null = null;
let browser: Browser | null = null;

beforeAll(async () => {
  // chromium runs as root here: no sandbox (playwright passes --no-sandbox unless asked for one)
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, chromiumSandbox: false });
  ha = await HaCluster.start({ name: 'statuspage' });
}, 300_000);

afterAll(async () => {
  await browser?.close().catch(() => undefined);
  await ha?.stop();
  await stopAgentProcesses();
  await cleanupAll();
}, 120_000);

/** what the page shows: each node card's name and role */
async function shownRoles(page: Page): Promise<Record<string, string>> {
  return page.$$eval('#topology .node', (cards) => Object.fromEntries(cards.map((c) => [c.getAttribute('data-node') ?? '', c.getAttribute('data-role') ?? ''])));
}

/** the node that answers pg_is_in_recovery() = false, asked on each node directly */
async function primaryBySql(nodes: HaNode[]): Promise<HaNode[]> {
  const out: HaNode[] = [];
  for (const n of nodes) if ((await askInRecovery(n)) === 'false') out.push(n);
  return out;
}

describe('status page on the admin port (headless Chromium)', () => {
  it('is served at / without the admin token, as /status is, with a policy that allows only its own script', async () => {
    const admin = ha!.proxy.admin;
    // the proxy has an admin token (PGHA_TOKEN): what needs it is refused without it…
    expect((await fetch(`${admin}/sessions`)).status).toBe(401);
    expect((await fetch(`${admin}/switchover`, { method: 'POST' })).status).toBe(401);
    // …while the page, like /status, is not
    expect((await fetch(`${admin}/status`)).status).toBe(200);
    const r = await fetch(`${admin}/`);
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toMatch(/^text\/html/);
    const csp = r.headers.get('content-security-policy') ?? '';
    expect(csp).toMatch(/default-src 'none'/);
    expect(csp).toMatch(/script-src 'sha256-[A-Za-z0-9+/=]+'/);
    expect(csp).not.toMatch(/unsafe-inline|unsafe-eval/);
    const html = await r.text();
    // nothing from elsewhere: no external script, style sheet or font
    expect(html).not.toMatch(/<script[^>]+src=|<link[^>]+stylesheet|https?:\/\//);
  });

  it('shows every node with the role PostgreSQL reports, and after kill -9 of the primary the new one and the failover', async () => {
    const page = await browser!.newPage({ viewport: { width: 1280, height: 900 } });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(m.text());
    });
    await page.goto(`${ha!.proxy.admin}/`);
    await page.waitForSelector('#topology .node', { timeout: 15_000 });
    await waitFor(async () => Object.keys(await shownRoles(page)).length === 3, 15_000, 'three nodes on the page');

    const [p0] = await primaryBySql(ha!.nodes);
    expect(p0, 'one node answers as a primary').toBeDefined();
    // each node's role on the page is what its own server says (waiting for the standbys' first full check)
    await waitFor(
      async () => {
        const roles = await shownRoles(page);
        for (const n of ha!.nodes) {
          const rec = await askInRecovery(n);
          if (roles[n.address] !== (rec === 'false' ? 'primary' : 'standby')) return false;
        }
        return true;
      },
      15_000,
      'roles on the page as pg_is_in_recovery() says',
    );
    expect(await page.textContent('#primary b')).toBe(p0.address);
    // the standbys stream, as the primary's pg_stat_replication says
    const streamingBySql = Number(await p0.pg.sql("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"));
    expect(streamingBySql).toBe(2);
    await waitFor(async () => (await page.$$('#topology .node[data-role=standby] dd')).length > 0, 10_000, 'standby details');
    const standbyText = await page.$$eval('#topology .node[data-role=standby]', (cards) => cards.map((c) => c.textContent ?? ''));
    for (const t of standbyText) {
      expect(t).toMatch(/streaming\s*yes from/);
      expect(t).toContain(p0.address);
    }
    expect(await page.textContent('#failovers')).toMatch(/no failover/);

    // kill -9 of the primary: the proxy fails over by itself
    await p0.pg.kill9({ waitOrphans: false });
    let p1: HaNode | undefined;
    await waitFor(
      async () => {
        const roles = await shownRoles(page);
        const shown = Object.entries(roles).find(([, r]) => r === 'primary')?.[0];
        if (!shown || shown === p0.address) return false;
        [p1] = await primaryBySql(ha!.nodes.filter((n) => n !== p0));
        return p1?.address === shown;
      },
      60_000,
      'the new primary on the page',
    );
    expect(await page.textContent('#primary b')).toBe(p1!.address);
    // the failover in the timeline: from the old primary to the new one, with its phases
    await page.waitForSelector(`#failovers .failover[data-from="${p0.address}"]`, { timeout: 30_000 });
    const row = page.locator(`#failovers .failover[data-from="${p0.address}"]`);
    expect(await row.getAttribute('data-to')).toBe(p1!.address);
    await waitFor(async () => /promoted/.test((await row.textContent()) ?? ''), 30_000, 'failover promoted on the page');
    const rowText = (await row.textContent()) ?? '';
    for (const phase of ['detect', 'confirm', 'promote', 'reroute']) expect(rowText).toContain(phase);
    expect(await row.locator('.bar span').count()).toBeGreaterThanOrEqual(4);
    // the old primary is shown as what it is now: down or fenced, then back as a standby
    const oldRole = (await shownRoles(page))[p0.address];
    expect(['down', 'fenced', 'standby']).toContain(oldRole);
    if (oldRole === 'standby') expect(await askInRecovery(p0)).toBe('true');

    // the same in the terminal: pgha list (pgha status), and its JSON
    const list = await pgha(['list', '--proxy', ha!.proxy.admin]);
    expect(list.status, list.stderr).toBe(0);
    expect(list.stdout).toContain(`primary: ${p1!.address}`);
    const lineOf = (addr: string) => list.stdout.split('\n').find((l) => l.startsWith(addr + ' ')) ?? '';
    expect(lineOf(p1!.address)).toMatch(/\bprimary\b/);
    expect(list.stdout).toMatch(new RegExp(`failover \\(auto\\) \\S+: ${p0.address.replace(/\./g, '\\.')} -> ${p1!.address.replace(/\./g, '\\.')} promoted in`));
    expect(list.stdout).toMatch(/^ {4}detect \d+ ms · confirm \d+ ms · fence \d+ ms · prepare \d+ ms · promote \d+ ms · reroute \d+ ms/m);
    const json = await pgha(['status', '--json', '--proxy', ha!.proxy.admin]);
    const s = JSON.parse(json.stdout) as { failovers: Array<{ from: string; to: string; phases: Array<{ name: string; ms: number }> }> };
    const f = s.failovers.find((x) => x.from === p0.address)!;
    expect(f.to).toBe(p1!.address);
    expect(f.phases.slice(0, 6).map((x) => x.name)).toEqual(['detect', 'confirm', 'fence', 'prepare', 'promote', 'reroute']);

    // wait (a while) for the automatic rejoin, so the picture shows the whole cluster again
    await ha!.waitHealthy(90_000).catch(() => undefined);
    await page.waitForTimeout(2500);
    mkdirSync(dirname(SCREENSHOT), { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    expect(errors).toEqual([]);
    await page.close();
  });

  it('shows values holding markup as text: nothing injected runs, and the policy blocks inline handlers', async () => {
    const page = await browser!.newPage();
    await page.goto(`${ha!.proxy.admin}/`);
    await page.waitForSelector('#topology .node', { timeout: 15_000 });
    // the status the proxy serves, with hostile text in every string a node, member or error can carry
    const status = await (await fetch(`${ha!.proxy.admin}/status`)).json();
    const evil = (what: string) => `<img src=x onerror="window.__pwned='${what}'"><script>window.__pwned='${what}'</script>`;
    status.backends[0].name = evil('name');
    status.backends[0].member = evil('member');
    status.backends[0].reason = evil('reason');
    status.primary = evil('primary');
    status.failovers = [{ kind: 'failover', trigger: 'auto', from: evil('from'), to: evil('to'), startedAt: evil('at'), promotedAt: null, ms: 5, via: null, fenced: 'agent', error: evil('error'), pauseMs: null, phases: [{ name: evil('phase'), ms: 5 }] }];
    // stop the page's own refresh from drawing the real status over it: render, then read at once
    const shown = await page.evaluate((s) => {
      (window as unknown as { pghaRender: (s: unknown, when: string) => void }).pghaRender(s, 'test');
      return {
        imgs: document.querySelectorAll('main img, header img').length,
        scripts: document.querySelectorAll('main script, header script').length,
        pwned: (window as unknown as { __pwned?: string }).__pwned ?? null,
        text: document.body.textContent ?? '',
        node: document.querySelector('#topology .node')?.getAttribute('data-node') ?? null,
      };
    }, status);
    expect(shown.imgs).toBe(0);
    expect(shown.scripts).toBe(0);
    expect(shown.pwned).toBeNull();
    for (const what of ['name', 'member', 'reason', 'primary', 'from', 'to', 'error', 'phase']) expect(shown.text).toContain(evil(what));
    // markup that did get in through another path: its inline handler is refused by the policy
    const violations: string[] = [];
    page.on('console', (m) => violations.push(m.text()));
    const ran = await page.evaluate(async () => {
      document.body.insertAdjacentHTML('beforeend', '<img src="data:," onload="window.__csp=1"><img src="x" onerror="window.__csp=2">');
      await new Promise((r) => setTimeout(r, 500));
      return (window as unknown as { __csp?: number }).__csp ?? null;
    });
    expect(ran).toBeNull();
    expect(violations.join('\n')).toMatch(/Content Security Policy/);
    await page.close();
  });
});
