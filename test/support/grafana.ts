/** The Grafana dashboard in grafana/: its JSON, its queries, and the metric names they use. */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const DASHBOARD_FILE = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'grafana', 'pgha-dashboard.json');

export interface DashboardQuery {
  where: string;
  expr: string;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Json = any;

export function readDashboard(): Json {
  return JSON.parse(readFileSync(DASHBOARD_FILE, 'utf8'));
}

/** every PromQL query of the dashboard: panel targets, annotations, template variables */
export function dashboardQueries(d: Json = readDashboard()): DashboardQuery[] {
  const out: DashboardQuery[] = [];
  for (const p of d.panels ?? []) for (const t of p.targets ?? []) out.push({ where: `panel "${p.title}" target ${t.refId}`, expr: t.expr });
  for (const a of d.annotations?.list ?? []) if (a.expr) out.push({ where: `annotation "${a.name}"`, expr: a.expr });
  for (const v of d.templating?.list ?? []) {
    const q = typeof v.query === 'string' ? (v.type === 'query' ? v.query : null) : v.query?.query;
    if (q) out.push({ where: `variable "${v.name}"`, expr: q });
  }
  return out;
}

/** the metric names a query reads (pgha's own: pgha_…) */
export function metricNames(expr: string): string[] {
  return [...new Set(expr.match(/\bpgha_[a-z0-9_]+\b/g) ?? [])];
}

/** a query with Grafana's variables replaced as Grafana would before sending it to Prometheus */
export function withVariables(expr: string, range = '1h'): string {
  return expr.replace(/\$__range\b/g, range).replace(/\$__rate_interval\b/g, '1m').replace(/\$(proxy_job|agent_job)\b/g, '.*');
}

/** metric names with at least one sample in a Prometheus text exposition */
export function exposedNames(text: string): Set<string> {
  const names = new Set<string>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]/.exec(line);
    if (m) names.add(m[1]);
  }
  return names;
}
