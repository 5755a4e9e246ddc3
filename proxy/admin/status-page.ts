/**
 * The read-only status page of the admin port (GET /): one HTML document with its CSS and script
 * inline (nothing from a CDN), which fetches /status every few seconds and draws the cluster's
 * topology (each node's role, timeline, streaming, lag, fencing) and the failover timeline (each
 * failover's phases as a bar). Every value goes into the page as text (textContent, never
 * innerHTML), and a Content-Security-Policy allows only this script and this style (by hash), so a
 * node name or an error message holding markup is shown, never run. It needs no token: it shows
 * what GET /status shows, to whoever may ask /status.
 */
import { createHash } from 'node:crypto';

const STYLE = `
:root { --bg:#f6f7f9; --card:#fff; --ink:#1d2330; --muted:#667085; --line:#d0d5dd;
  --primary:#12805c; --standby:#2563eb; --down:#c0262d; --fenced:#c2410c; --unknown:#6b7280; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; background:var(--bg); color:var(--ink); }
header { display:flex; flex-wrap:wrap; align-items:baseline; gap:8px 24px; padding:14px 24px; background:var(--ink); color:#fff; }
header h1 { font-size:18px; margin:0; }
#summary { display:flex; flex-wrap:wrap; gap:4px 20px; }
header .fact b { font-weight:600; }
header .stale { color:#fca5a5; }
main { padding:16px 24px; max-width:1280px; }
h2 { font-size:15px; margin:20px 0 8px; color:var(--muted); text-transform:uppercase; letter-spacing:.04em; }
.tier { display:flex; flex-wrap:wrap; gap:12px; margin-bottom:12px; }
.tier-label { width:100%; font-size:12px; color:var(--muted); }
.node { background:var(--card); border:1px solid var(--line); border-left:6px solid var(--unknown); border-radius:6px; padding:10px 12px; min-width:250px; }
.node[data-role=primary] { border-left-color:var(--primary); }
.node[data-role=standby] { border-left-color:var(--standby); }
.node[data-role=down] { border-left-color:var(--down); }
.node[data-role=fenced] { border-left-color:var(--fenced); }
.node .name { font-weight:600; font-family:ui-monospace,Menlo,Consolas,monospace; word-break:break-all; }
.node .role { display:inline-block; margin-left:6px; padding:0 6px; border-radius:4px; color:#fff; font-size:12px; background:var(--unknown); }
.node[data-role=primary] .role { background:var(--primary); }
.node[data-role=standby] .role { background:var(--standby); }
.node[data-role=down] .role { background:var(--down); }
.node[data-role=fenced] .role { background:var(--fenced); }
.node dl { display:grid; grid-template-columns:auto 1fr; gap:2px 10px; margin:8px 0 0; font-size:13px; }
.node dt { color:var(--muted); }
.node dd { margin:0; word-break:break-word; }
.warn { color:var(--down); font-weight:600; }
.failover { background:var(--card); border:1px solid var(--line); border-radius:6px; padding:10px 12px; margin-bottom:10px; }
.failover .what { font-weight:600; }
.failover .error { color:var(--down); }
.bar { display:flex; height:22px; margin-top:8px; border-radius:4px; overflow:hidden; background:#eef0f3; }
.bar span { min-width:3px; color:#fff; font-size:11px; line-height:22px; padding:0 4px; white-space:nowrap; overflow:hidden; }
.phases { font-size:12px; color:var(--muted); margin-top:4px; }
.empty { color:var(--muted); }
footer { padding:8px 24px 24px; color:var(--muted); font-size:12px; }
`;

const SCRIPT = `
(function () {
  'use strict';
  var REFRESH_MS = 2000;
  var PHASE_COLORS = { detect:'#7c3aed', confirm:'#9333ea', fence:'#c2410c', prepare:'#0891b2', stop:'#c2410c', 'catch-up':'#0e7490',
    promote:'#12805c', reroute:'#2563eb', repoint:'#64748b', 'fence-old':'#b45309', 'rejoin-old':'#475569' };
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function fmtBytes(n) {
    if (n === null || n === undefined) return '-';
    if (n < 1024) return n + ' B';
    if (n < 1048576) return (n / 1024).toFixed(1) + ' KiB';
    return (n / 1048576).toFixed(1) + ' MiB';
  }
  function fmtMs(ms) { return ms < 10000 ? ms + ' ms' : (ms / 1000).toFixed(1) + ' s'; }
  function fact(parent, label, value, cls) {
    var s = el('span', 'fact' + (cls ? ' ' + cls : ''));
    s.appendChild(document.createTextNode(label + ': '));
    s.appendChild(el('b', null, value));
    parent.appendChild(s);
    return s;
  }
  function nodeCard(b, s) {
    var card = el('div', 'node');
    card.setAttribute('data-node', b.name);
    card.setAttribute('data-role', b.role);
    var head = el('div');
    head.appendChild(el('span', 'name', b.name));
    head.appendChild(el('span', 'role', b.role));
    card.appendChild(head);
    var dl = el('dl');
    function row(k, v, cls) { dl.appendChild(el('dt', null, k)); dl.appendChild(el('dd', cls || null, v)); }
    if (b.member) row('member', b.member);
    row('timeline', b.timeline === null ? '-' : b.timeline);
    row('lsn', b.lsn || '-');
    if (b.role === 'standby') {
      row('streaming', b.streaming ? 'yes' + (b.upstream ? ' from ' + b.upstream : '') : 'NO', b.streaming ? null : 'warn');
      row('sync', b.syncState || 'async');
      row('lag', fmtBytes(b.lagBytes) + ' / ' + (b.lagSeconds === null || b.lagSeconds === undefined ? '-' : b.lagSeconds.toFixed(1) + ' s'));
    }
    row('fenced', b.fenced || b.role === 'fenced' ? 'FENCED' : 'no', b.fenced || b.role === 'fenced' ? 'warn' : null);
    row('sessions', b.sessions);
    row('check', b.latencyMs === null ? '-' : b.latencyMs + ' ms');
    var note = b.reason || b.lastError;
    if (note) row('note', note);
    card.appendChild(dl);
    return card;
  }
  function tier(label, nodes, s) {
    var t = el('div', 'tier');
    t.appendChild(el('div', 'tier-label', label));
    for (var i = 0; i < nodes.length; i++) t.appendChild(nodeCard(nodes[i], s));
    return t;
  }
  function failoverRow(f) {
    var box = el('div', 'failover');
    box.setAttribute('data-from', f.from);
    box.setAttribute('data-to', f.to || '');
    var result = f.error ? 'FAILED' : (f.promotedAt ? 'promoted' : 'running');
    box.appendChild(el('div', 'what', (f.kind || 'failover') + ' (' + (f.trigger || 'auto') + ') ' + f.from + ' \\u2192 ' + (f.to || '-') + ': ' + result + ' in ' + fmtMs(f.ms)));
    box.appendChild(el('div', 'phases', 'started ' + f.startedAt + (f.via ? ', promoted via ' + f.via : '') + ', old primary ' + f.fenced +
      (f.pauseMs !== null && f.pauseMs !== undefined ? ', writes paused ' + f.pauseMs + ' ms' : '')));
    if (f.error) box.appendChild(el('div', 'error', f.error));
    var phases = f.phases || [];
    var total = 0;
    for (var i = 0; i < phases.length; i++) total += phases[i].ms;
    if (phases.length > 0) {
      var bar = el('div', 'bar');
      for (var j = 0; j < phases.length; j++) {
        var p = phases[j];
        var seg = el('span', null, p.name + ' ' + fmtMs(p.ms));
        seg.title = p.name + ': ' + p.ms + ' ms';
        seg.style.flexGrow = String(Math.max(p.ms, 1));
        seg.style.flexBasis = '0';
        seg.style.background = PHASE_COLORS[p.name] || '#6b7280';
        bar.appendChild(seg);
      }
      box.appendChild(bar);
      box.appendChild(el('div', 'phases', phases.map(function (p) { return p.name + ' ' + fmtMs(p.ms); }).join(' \\u00b7 ') + '  (' + fmtMs(total) + ')'));
    }
    return box;
  }
  /** draws one /status answer; also called by the tests with hostile values */
  function render(s, when) {
    var head = document.getElementById('summary');
    head.replaceChildren();
    fact(head, 'primary', s.primary || 'NONE', s.primary ? null : 'stale').id = 'primary';
    fact(head, 'timeline', s.timeline);
    fact(head, 'auto-failover', s.autoFailover ? 'on' : 'off');
    if (s.failoverRunning) fact(head, 'failover', 'RUNNING', 'stale');
    if (s.leader) {
      var l = s.leader.leader;
      fact(head, 'leader proxy', l ? l.id + (l.admin ? ' (' + l.admin + ')' : '') : 'NONE').id = 'leader';
      fact(head, 'this proxy', s.leader.isLeader ? 'leader' : 'follower');
    }
    if (s.dcs && s.dcs.safeMode) fact(head, 'etcd', 'SAFE MODE: not deciding', 'stale');
    fact(head, 'clients', s.clients.rw + ' rw, ' + s.clients.ro + ' ro');
    fact(head, 'updated', when || new Date().toLocaleTimeString()).id = 'updated';
    var topo = document.getElementById('topology');
    topo.replaceChildren();
    var primaries = [], standbys = [], others = [];
    for (var i = 0; i < s.backends.length; i++) {
      var b = s.backends[i];
      (b.role === 'primary' ? primaries : b.role === 'standby' ? standbys : others).push(b);
    }
    topo.appendChild(tier('primary', primaries, s));
    if (standbys.length) topo.appendChild(tier('standbys', standbys, s));
    if (others.length) topo.appendChild(tier('down, fenced or not checked yet', others, s));
    var fl = document.getElementById('failovers');
    fl.replaceChildren();
    var list = (s.failovers || []).slice().reverse();
    if (list.length === 0) fl.appendChild(el('div', 'empty', 'no failover or switchover since this proxy started'));
    for (var k = 0; k < list.length; k++) fl.appendChild(failoverRow(list[k]));
  }
  window.pghaRender = render;
  function refresh() {
    fetch('status', { cache: 'no-store', headers: { accept: 'application/json' } })
      .then(function (r) { if (!r.ok) throw new Error('HTTP ' + r.status); return r.json(); })
      .then(function (s) { render(s); document.body.setAttribute('data-loaded', String(Date.now())); },
            function (e) { var u = document.getElementById('updated'); var msg = 'cannot reach /status: ' + e.message;
              if (u) u.lastChild.textContent = msg; else document.getElementById('summary').replaceChildren(el('span', 'fact stale', msg)); })
      .then(function () { setTimeout(refresh, REFRESH_MS); });
  }
  refresh();
})();
`;

const sha256 = (s: string) => `'sha256-${createHash('sha256').update(s, 'utf8').digest('base64')}'`;

export const STATUS_PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>pgha — cluster status</title>
<link rel="icon" href="data:,">
<style>${STYLE}</style>
</head>
<body>
<header><h1>pgha</h1><div id="summary"><span class="fact">loading /status…</span></div></header>
<main>
<h2>Topology</h2>
<div id="topology"></div>
<h2>Failover timeline</h2>
<div id="failovers"></div>
</main>
<footer>Read-only view of this pgha-proxy's <a href="status">/status</a> (JSON) and <a href="metrics">/metrics</a>, refreshed every 2 s. Actions: <code>pgha switchover</code>, <code>pgha failover</code>.</footer>
<script>${SCRIPT}</script>
</body>
</html>
`;

/** headers of the page: only its own inline script and style may run, it may only fetch its own origin */
export const STATUS_PAGE_HEADERS: Record<string, string> = {
  'content-type': 'text/html; charset=utf-8',
  'content-security-policy': `default-src 'none'; script-src ${sha256(SCRIPT)}; style-src ${sha256(STYLE)}; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`,
  'x-content-type-options': 'nosniff',
  'cache-control': 'no-store',
  'referrer-policy': 'no-referrer',
};
