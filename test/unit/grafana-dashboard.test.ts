/**
 * grafana/pgha-dashboard.json is a dashboard Grafana can import: a schemaVersion, a datasource
 * variable every panel and target points at, panels with a type, a place on the grid and PromQL
 * targets, unique ids, and only pgha metrics that exist in the source (the real scrape of a running
 * proxy and agent is test/proxy/metrics-dashboard.test.ts).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { dashboardQueries, DASHBOARD_FILE, metricNames, readDashboard } from '../support/grafana.js';

const PANEL_TYPES = new Set(['row', 'timeseries', 'stat', 'state-timeline', 'bargauge', 'table', 'gauge', 'text']);

describe('the Grafana dashboard (grafana/pgha-dashboard.json)', () => {
  const d = readDashboard();

  it('is a dashboard: title, uid, schemaVersion, panels, a Prometheus datasource variable', () => {
    expect(typeof d.title).toBe('string');
    expect(d.uid).toMatch(/^[A-Za-z0-9_-]{1,40}$/);
    expect(Number.isInteger(d.schemaVersion) && d.schemaVersion >= 36).toBe(true);
    expect(Array.isArray(d.panels) && d.panels.length > 10).toBe(true);
    const ds = d.templating.list.find((v: { type: string }) => v.type === 'datasource');
    expect(ds).toMatchObject({ name: 'datasource', query: 'prometheus' });
  });

  it('every panel has a known type, an id of its own and a place on the 24-column grid; every data panel reads the datasource variable', () => {
    const ids = new Set<number>();
    for (const p of d.panels) {
      const where = `panel ${p.id} "${p.title}"`;
      expect(PANEL_TYPES.has(p.type), `${where}: type ${p.type}`).toBe(true);
      expect(ids.has(p.id), `${where}: id used twice`).toBe(false);
      ids.add(p.id);
      const g = p.gridPos;
      expect(g.x >= 0 && g.w > 0 && g.x + g.w <= 24 && g.h > 0 && g.y >= 0, `${where}: gridPos ${JSON.stringify(g)}`).toBe(true);
      if (p.type === 'row') continue;
      expect(p.datasource, where).toEqual({ type: 'prometheus', uid: '${datasource}' });
      expect(p.targets.length, `${where}: no target`).toBeGreaterThan(0);
      const refIds = new Set<string>();
      for (const t of p.targets) {
        expect(t.datasource, `${where} ${t.refId}`).toEqual(p.datasource);
        expect(typeof t.expr === 'string' && t.expr.length > 0, `${where} ${t.refId}: expr`).toBe(true);
        expect(refIds.has(t.refId), `${where}: refId ${t.refId} twice`).toBe(false);
        refIds.add(t.refId);
      }
    }
  });

  it('panels do not overlap on the grid', () => {
    const cells = new Map<string, string>();
    for (const p of d.panels) {
      const g = p.gridPos;
      for (let y = g.y; y < g.y + g.h; y++)
        for (let x = g.x; x < g.x + g.w; x++) {
          const k = `${x},${y}`;
          expect(cells.get(k), `"${p.title}" overlaps "${cells.get(k)}" at ${k}`).toBeUndefined();
          cells.set(k, p.title);
        }
    }
  });

  it('every pgha metric a query reads is defined in proxy/admin/metrics.ts or the agent (src/agent/server.ts)', () => {
    const root = join(DASHBOARD_FILE, '..', '..');
    const source = ['proxy/admin/metrics.ts', 'src/agent/server.ts'].map((f) => readFileSync(join(root, f), 'utf8')).join('\n');
    const defined = new Set([...source.matchAll(/name: '(pgha_[a-z0-9_]+)'|\('(pgha_[a-z0-9_]+)'/g)].map((m) => m[1] ?? m[2]));
    const used = dashboardQueries(d).flatMap((q) => metricNames(q.expr).map((n) => ({ n, where: q.where })));
    expect(used.length).toBeGreaterThan(20);
    for (const { n, where } of used) {
      const base = n.replace(/_(bucket|sum|count)$/, '');
      expect(defined.has(n) || defined.has(base), `${where}: ${n} is not defined`).toBe(true);
    }
  });
});
