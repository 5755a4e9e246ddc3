/**
 * Prometheus metrics (prom-client). Byte counters are plain numbers in the relay's hot path and are
 * read at scrape time, so relaying a chunk costs no label lookup.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { ProxyServer } from '../server.js';

export function proxyMetrics(proxy: ProxyServer): { registry: Registry; healthLatency: Histogram<'backend' | 'ok'>; failovers: Counter<'result'> } {
  const registry = new Registry();
  new Gauge({
    name: 'pgha_proxy_client_connections',
    help: 'client connections open, by port (rw/ro) and phase',
    labelNames: ['port', 'phase'],
    registers: [registry],
    collect() {
      this.reset();
      for (const s of proxy.sessions) this.inc({ port: s.kind, phase: s.phase });
    },
  });
  new Gauge({
    name: 'pgha_proxy_client_connections_accepted',
    help: 'client connections accepted since start (a counter)',
    labelNames: ['port'],
    registers: [registry],
    collect() {
      this.set({ port: 'rw' }, proxy.accepted.rw);
      this.set({ port: 'ro' }, proxy.accepted.ro);
    },
  });
  new Gauge({
    name: 'pgha_proxy_bytes',
    help: 'bytes relayed since start (a counter), by direction',
    labelNames: ['direction'],
    registers: [registry],
    collect() {
      const [fromClients, toClients] = proxy.relay?.counters() ?? [0, 0];
      this.set({ direction: 'client_to_server' }, proxy.stats.bytesFromClients + fromClients);
      this.set({ direction: 'server_to_client' }, proxy.stats.bytesToClients + toClients);
    },
  });
  new Gauge({
    name: 'pgha_proxy_backend_role',
    help: '1 for the role each backend has now (primary, standby, down, fenced, unknown)',
    labelNames: ['backend', 'role'],
    registers: [registry],
    collect() {
      this.reset();
      for (const b of proxy.monitor.backends) {
        for (const role of ['primary', 'standby', 'down', 'fenced', 'unknown']) this.set({ backend: b.name, role }, b.role === role ? 1 : 0);
      }
    },
  });
  new Gauge({
    name: 'pgha_proxy_backend_sessions',
    help: 'client sessions attached to each backend',
    labelNames: ['backend'],
    registers: [registry],
    collect() {
      this.reset();
      for (const b of proxy.monitor.backends) this.set({ backend: b.name }, proxy.sessionsOn(b.name));
    },
  });
  new Gauge({
    name: 'pgha_proxy_timeline',
    help: 'newest timeline seen on any backend',
    registers: [registry],
    collect() {
      this.set(proxy.monitor.timeline);
    },
  });
  new Gauge({
    name: 'pgha_proxy_sessions_terminated',
    help: 'sessions ended by the proxy with an ErrorResponse (a counter)',
    registers: [registry],
    collect() {
      this.set(proxy.stats.terminated);
    },
  });
  new Gauge({
    name: 'pgha_proxy_protocol_errors',
    help: 'clients refused for breaking the protocol or timing out in startup (a counter)',
    registers: [registry],
    collect() {
      this.set(proxy.stats.protocolErrors);
    },
  });
  new Gauge({
    name: 'pgha_proxy_cancel_requests',
    help: 'cancel requests, forwarded or with an unknown key (a counter)',
    labelNames: ['result'],
    registers: [registry],
    collect() {
      this.set({ result: 'forwarded' }, proxy.stats.cancelsForwarded);
      this.set({ result: 'unknown_key' }, proxy.stats.cancelsUnknown);
    },
  });
  const healthLatency = new Histogram({
    name: 'pgha_proxy_health_check_seconds',
    help: 'health check latency by backend and outcome',
    labelNames: ['backend', 'ok'],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [registry],
  });
  const failovers = new Counter({
    name: 'pgha_proxy_failovers_total',
    help: 'automatic failovers run by this proxy, by result, plus primary changes it followed',
    labelNames: ['result'],
    registers: [registry],
  });
  return { registry, healthLatency, failovers };
}
