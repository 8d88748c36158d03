// The jsacc dashboard: a single-page app over the operator API (/v1), served by jsacc itself.
// No build step and no dependencies. Hash routes: #/agents, #/agents/G/N, #/jobs?filters,
// #/jobs/ID, #/run, #/logs/DOMAIN/NAME. The operator token lives in sessionStorage (this tab
// only); live output and logs are Server-Sent Events read with fetch(), since EventSource
// cannot send an Authorization header.
'use strict';

const TOKEN_KEY = 'jsacc.token';
const FINAL = new Set(['OK', 'ERROR', 'TIMEOUT', 'KILLED']);
const STATES = ['QUEUED', 'RUNNING', 'OK', 'ERROR', 'TIMEOUT', 'KILLED'];
const HOST_CPU = 'jsagent.host.cpu_percent';
const HOST_MEM_USED = 'jsagent.host.mem_used';
const HOST_MEM_TOTAL = 'jsagent.host.mem_total';

let me = null; // {name, role} of the signed-in account
let page = null; // {stop()} of the page on screen
const main = document.getElementById('main');

// ---------------------------------------------------------------------------------------------
// DOM helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'value' || k === 'checked') el[k] = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  add(el, children);
  return el;
}

function add(el, children) {
  for (const c of [children].flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

function svg(tag, attrs, ...children) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  return add(el, children);
}

function show(...children) {
  main.replaceChildren();
  add(main, children);
}

const enc = encodeURIComponent;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// Formatting

const pad = (n, w = 2) => String(n).padStart(w, '0');

function fmtTime(ms) {
  if (!ms) return '–';
  const d = new Date(ms);
  const now = new Date();
  const hms = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  if (d.toDateString() === now.toDateString()) return hms;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hms}`;
}

function timeCell(ms) {
  return h('time', { title: ms ? new Date(ms).toString() : null }, fmtTime(ms));
}

function ago(ms) {
  if (!ms) return '–';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 2) return 'just now';
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

function fmtDur(ms) {
  if (ms === null || ms === undefined || ms < 0 || Number.isNaN(ms)) return '–';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${pad(Math.floor(s % 60))} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${pad(Math.floor((s % 3600) / 60))} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

function fmtBytes(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${n.toFixed(i === 0 || n >= 100 ? 0 : 1)} ${units[i]}`;
}

function fmtNum(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return '–';
  const a = Math.abs(n);
  if (a >= 1e9) return `${(n / 1e9).toFixed(1)} G`;
  if (a >= 1e6) return `${(n / 1e6).toFixed(1)} M`;
  if (a >= 1e4) return `${(n / 1e3).toFixed(1)} k`;
  if (Number.isInteger(n)) return String(n);
  return n.toFixed(a < 10 ? 2 : 1);
}

const num = (v) => (v === null || v === undefined || v === '' ? null : Number(v));
const epochMs = (e) => (e < 1e12 ? e * 1000 : e); // stats epochs may be in seconds

function stateBadge(state) {
  const s = state || 'UNKNOWN';
  return h('span', { class: `badge st-${s}` }, s);
}

function dot(online) {
  return h('span', { class: online ? 'dot on' : 'dot', title: online ? 'online' : 'offline' });
}

function quote(arg) {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, "'\\''")}'`;
}

/** The command line a job record's command runs, as one string. */
function cmdText(cmd) {
  if (!cmd) return '–';
  const a = cmd.args || {};
  if (cmd.cmd === 'execute' && a.cmd) return [a.cmd, ...(a.args || [])].map(quote).join(' ');
  if (a.id) return `${cmd.cmd} ${a.id}`;
  return cmd.cmd || JSON.stringify(cmd);
}

function cmdName(cmd) {
  const a = (cmd && cmd.args) || {};
  return a.domain && a.name ? `${a.domain}/${a.name}` : '';
}

function canOperate() {
  return me && (me.role === 'operator' || me.role === 'admin');
}

// ---------------------------------------------------------------------------------------------
// The API

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const token = () => sessionStorage.getItem(TOKEN_KEY) || '';

async function request(path, opts = {}) {
  const headers = { Authorization: `Bearer ${token()}` };
  if (opts.body !== undefined) headers['Content-Type'] = 'application/json';
  if (opts.accept) headers.Accept = opts.accept;
  let res;
  try {
    res = await fetch(path, {
      method: opts.method || 'GET',
      headers,
      body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
      signal: opts.signal,
      cache: 'no-store',
    });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'network', `cannot reach the controller (${e.message})`);
  }
  if (!res.ok) {
    const text = await res.text();
    let body = {};
    try {
      body = JSON.parse(text);
    } catch (_) {
      body = {};
    }
    const err = new ApiError(res.status, body.error || `http_${res.status}`,
      body.message || text || res.statusText);
    if (res.status === 401) signOut(`The controller refused your token (${err.message}). Sign in again.`);
    throw err;
  }
  return res;
}

async function api(path, opts) {
  const res = await request(path, opts);
  const text = await res.text();
  return text ? JSON.parse(text) : null;
}

/** Reads the Server-Sent Events of `path`, calling onEvent(event, data, id) for each. */
async function follow(path, onEvent, signal) {
  const res = await request(path, { accept: 'text/event-stream', signal });
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += decoder.decode(value, { stream: true }).replace(/\r\n/g, '\n');
    let end;
    while ((end = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      let event = 'message';
      let id = null;
      const data = [];
      for (const line of block.split('\n')) {
        if (!line || line.startsWith(':')) continue; // a comment: the keep-alive
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let v = colon < 0 ? '' : line.slice(colon + 1);
        if (v.startsWith(' ')) v = v.slice(1);
        if (field === 'event') event = v;
        else if (field === 'data') data.push(v);
        else if (field === 'id') id = v;
      }
      if (data.length) onEvent(event, data.join('\n'), id);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Banner, header, routing

const banner = document.getElementById('banner');

function say(kind, message) {
  banner.className = kind;
  banner.replaceChildren(h('span', {}, message),
    h('button', { class: 'link', onclick: () => { banner.hidden = true; } }, 'Dismiss'));
  banner.hidden = false;
}

function clearBanner() {
  banner.hidden = true;
}

/** Shows what went wrong while `doing` something (a 401 already went back to sign-in). */
function fail(err, doing) {
  if (!err || err.name === 'AbortError' || err.status === 401) return;
  if (err.status === 403) {
    say('error', `Your role (${me ? me.role : '?'}) may not ${doing}: ${err.message}`);
  } else {
    say('error', `Could not ${doing}: ${err.message}`);
  }
}

function showHeader() {
  document.getElementById('top').hidden = false;
  const who = document.getElementById('who');
  who.replaceChildren(h('span', { class: 'name' }, me.name), h('span', { class: `role r-${me.role}` }, me.role));
  const links = [['#/agents', 'Agents'], ['#/jobs', 'Jobs']];
  if (canOperate()) links.push(['#/run', 'Run']);
  links.push(['#/logs', 'Logs']);
  document.getElementById('nav').replaceChildren(
    ...links.map(([href, text]) => h('a', { href, id: `nav-${text.toLowerCase()}` }, text)));
}

function markNav(hash) {
  for (const a of document.querySelectorAll('#nav a')) {
    const base = a.getAttribute('href');
    a.classList.toggle('active', hash === base || hash.startsWith(`${base}/`) || hash.startsWith(`${base}?`));
  }
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  me = null;
  if (page) page.stop();
  page = null;
  signInPage(message);
}

const routes = [
  [/^#\/agents$/, agentsPage],
  [/^#\/agents\/(\d+)\/(\d+)$/, agentPage],
  [/^#\/jobs(?:\?(.*))?$/, jobsPage],
  [/^#\/jobs\/([^/?]+)$/, jobPage],
  [/^#\/run(?:\?(.*))?$/, runPage],
  [/^#\/logs(?:\/([^/]+)\/([^/?]+))?$/, logsPage],
];

async function route() {
  if (page) page.stop();
  page = null;
  clearBanner();
  if (!token()) {
    signInPage();
    return;
  }
  if (!me) {
    try {
      me = await api('/v1/me');
    } catch (e) {
      if (e.status !== 401) signInPage(`Could not sign in: ${e.message}`);
      return;
    }
    showHeader();
  }
  const hash = location.hash || '#/agents';
  for (const [re, fn] of routes) {
    const m = hash.match(re);
    if (m) {
      markNav(hash);
      page = fn(...m.slice(1).map((x) => (x === undefined ? undefined : decodeURIComponent(x))));
      return;
    }
  }
  location.replace('#/agents');
}

/** Runs `load` now and every `every` ms until stopped; skipped while the tab is hidden. */
function repeat(load, every, doing) {
  let timer = null;
  let stopped = false;
  const run = async () => {
    if (stopped) return;
    if (!document.hidden) {
      try {
        await load();
      } catch (e) {
        if (!stopped) fail(e, doing);
      }
    }
    if (!stopped && every) timer = setTimeout(run, every);
  };
  run();
  return { stop() { stopped = true; clearTimeout(timer); }, now: run };
}

// ---------------------------------------------------------------------------------------------
// Sign in

function signInPage(message) {
  document.getElementById('top').hidden = true;
  clearBanner();
  const input = h('input', {
    id: 'token', type: 'password', autocomplete: 'off', spellcheck: 'false',
    placeholder: 'jso_…', required: true,
  });
  const form = h('form', { class: 'signin card', onsubmit: async (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    me = null;
    if (!location.hash || location.hash === '#/') history.replaceState(null, '', '#/agents');
    await route();
  } },
  h('div', { class: 'logo' }, h('img', { src: 'favicon.svg', alt: '', width: 36, height: 36 }),
    h('div', {}, h('h1', {}, 'jsacc'), h('div', { class: 'muted' }, 'job controller dashboard'))),
  message ? h('p', { class: 'error-text', id: 'signin-error' }, message) : null,
  h('label', { for: 'token' }, 'Operator token'),
  input,
  h('button', { type: 'submit', id: 'signin', class: 'primary' }, 'Sign in'),
  h('p', { class: 'muted small' }, 'An administrator creates accounts with ',
    h('code', {}, 'jsacc user add NAME --role viewer|operator|admin'),
    '. The token is kept in this browser tab only and sent to this controller alone.'));
  show(form);
  input.focus();
  return null;
}

// ---------------------------------------------------------------------------------------------
// Agents

function metric(stats, key) {
  const m = stats && stats[key];
  if (!m) return null;
  return num(m.value !== undefined ? m.value : m.mean !== undefined ? m.mean : m.rate);
}

function bar(fraction, text) {
  const f = Math.max(0, Math.min(1, fraction || 0));
  const meter = h('span', { class: 'meter' }, h('span', { class: f > 0.9 ? 'fill hot' : f > 0.7 ? 'fill warm' : 'fill' }));
  meter.firstChild.style.width = `${(f * 100).toFixed(1)}%`;
  return h('span', { class: 'metered' }, meter, h('span', { class: 'num' }, text));
}

function cpuCell(stats) {
  const cpu = metric(stats, HOST_CPU);
  return cpu === null ? h('span', { class: 'muted' }, '–') : bar(cpu / 100, `${cpu.toFixed(cpu < 10 ? 1 : 0)} %`);
}

function memCell(stats) {
  const used = metric(stats, HOST_MEM_USED);
  const total = metric(stats, HOST_MEM_TOTAL);
  if (used === null) return h('span', { class: 'muted' }, '–');
  if (!total) return h('span', { class: 'num' }, fmtBytes(used));
  return bar(used / total, `${fmtBytes(used)} / ${fmtBytes(total)}`);
}

function roleChips(roles) {
  if (!roles || !roles.length) return h('span', { class: 'muted' }, '–');
  return roles.map((r) => h('span', { class: 'chip' }, r));
}

function agentsPage() {
  const filter = h('input', { type: 'search', placeholder: 'Filter by agent, host, role, os…', class: 'grow' });
  const summary = h('div', { class: 'summary' });
  const body = h('tbody', { id: 'agents' });
  const running = h('div', {});
  let agents = [];
  const render = () => {
    const q = filter.value.trim().toLowerCase();
    const shown = agents.filter((a) => !q || [a.agent, a.hostname, a.os, a.arch, a.version, ...(a.roles || [])]
      .join(' ').toLowerCase().includes(q));
    const online = agents.filter((a) => a.online).length;
    summary.replaceChildren(
      h('div', { class: 'tile' }, h('b', {}, agents.length), ' agents'),
      h('div', { class: 'tile ok' }, h('b', {}, online), ' online'),
      h('div', { class: agents.length - online ? 'tile bad' : 'tile' }, h('b', {}, agents.length - online), ' offline'));
    body.replaceChildren(...shown.map((a) => h('tr', {
      class: a.online ? 'rowlink' : 'rowlink offline', 'data-agent': a.agent,
      onclick: (ev) => { if (!ev.target.closest('a')) location.hash = `#/agents/${a.gid}/${a.nid}`; },
    },
    h('td', { class: 'tight' }, dot(a.online)),
    h('td', {}, h('a', { href: `#/agents/${a.gid}/${a.nid}`, class: 'mono strong' }, a.agent)),
    h('td', {}, a.hostname || '–'),
    h('td', {}, [a.os, a.arch].filter(Boolean).join(' / ') || '–'),
    h('td', {}, roleChips(a.roles)),
    h('td', { class: 'mono muted' }, a.version || '–'),
    h('td', { class: a.online ? '' : 'warn-text', title: fmtTime(a.last_seen) }, ago(a.last_seen)),
    h('td', {}, cpuCell(a.stats)),
    h('td', {}, memCell(a.stats)),
    h('td', { class: 'muted', title: fmtTime(a.started) }, a.started ? ago(a.started).replace(' ago', '') : '–'))));
    if (!shown.length) {
      body.replaceChildren(h('tr', {}, h('td', { colspan: 10, class: 'empty' },
        agents.length ? 'No agent matches the filter.' : 'No agent has said hello yet.')));
    }
  };
  filter.addEventListener('input', render);
  show(
    h('div', { class: 'pagehead' }, h('h2', {}, 'Agents'), summary),
    h('div', { class: 'toolbar' }, filter, h('span', { class: 'muted small' }, 'refreshes every 5 s')),
    h('div', { class: 'card flush' }, h('table', { class: 'grid' },
      h('thead', {}, h('tr', {}, h('th', {}, ''), h('th', {}, 'Agent'), h('th', {}, 'Hostname'),
        h('th', {}, 'OS / arch'), h('th', {}, 'Roles'), h('th', {}, 'Version'), h('th', {}, 'Last seen'),
        h('th', {}, 'CPU'), h('th', {}, 'Memory'), h('th', {}, 'Up'))),
      body)),
    h('h3', {}, 'Running now ', h('a', { class: 'small', href: '#/jobs?state=RUNNING' }, 'all')),
    running);
  return repeat(async () => {
    const [a, r] = await Promise.all([api('/v1/agents'), api('/v1/jobs?state=RUNNING&limit=10')]);
    agents = a.agents || [];
    render();
    running.replaceChildren((r.jobs || []).length ? jobsTable(r.jobs)
      : h('p', { class: 'card empty' }, 'No job is running.'));
  }, 5000, 'list the agents');
}

// ---------------------------------------------------------------------------------------------
// One agent: facts, charts, latest stats, recent jobs

/** The one number to chart for a metric's values. */
function chartValue(m) {
  switch (m.type) {
    case 'gauge': return num(m.value);
    case 'counter': return num(m.rate);
    case 'timer': case 'histogram': return num(m.mean);
    case 'set': return num(m.count);
    default: return num(m.value);
  }
}

function statSummary(m) {
  const f = (k) => fmtNum(num(m[k]));
  switch (m.type) {
    case 'gauge': return f('value');
    case 'counter': return `${f('sum')} (${f('rate')}/s)`;
    case 'timer': case 'histogram': return `n ${f('count')} · mean ${f('mean')} · p50 ${f('p50')} · p99 ${f('p99')}`;
    case 'set': return `${f('count')} distinct`;
    default: return JSON.stringify(m);
  }
}

const isBytes = (key) => /(mem|rss|bytes|memory)/i.test(key);

/** A line chart (inline SVG) of `points` [[ms, value]…]. */
function lineChart(title, points, format) {
  const W = 320; const H = 120; const L = 4; const R = 4; const T = 8; const B = 18;
  const vals = points.map((p) => p[1]);
  let lo = Math.min(...vals); let hi = Math.max(...vals);
  if (lo > 0 && lo < hi * 0.5) lo = 0;
  if (hi === lo) { hi = lo === 0 ? 1 : hi * 1.1; lo = lo === 0 ? 0 : lo * 0.9; }
  const t0 = points[0][0]; const t1 = points[points.length - 1][0] || t0 + 1;
  const x = (t) => L + ((t - t0) / Math.max(1, t1 - t0)) * (W - L - R);
  const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
  const path = points.map((p, i) => `${i ? 'L' : 'M'}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join('');
  const area = `${path}L${x(t1).toFixed(1)},${H - B}L${x(t0).toFixed(1)},${H - B}Z`;
  const last = points[points.length - 1];
  const chart = svg('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img' },
    svg('title', {}, title),
    ...[0, 0.5, 1].map((f) => svg('line', { x1: L, x2: W - R, y1: T + f * (H - T - B), y2: T + f * (H - T - B), class: 'gridline' })),
    svg('path', { d: area, class: 'area' }),
    svg('path', { d: path, class: 'line' }),
    svg('circle', { cx: x(last[0]), cy: y(last[1]), r: 2.5, class: 'last' }),
    svg('text', { x: L, y: H - 4, class: 'axis' }, fmtTime(t0)),
    svg('text', { x: W - R, y: H - 4, class: 'axis end' }, fmtTime(t1)));
  return h('figure', { class: 'card chartcard' },
    h('figcaption', {}, h('span', { class: 'mono' }, title),
      h('span', { class: 'now' }, format(last[1]))),
    h('div', { class: 'range muted small' }, `min ${format(Math.min(...vals))} · max ${format(Math.max(...vals))}`),
    chart);
}

/** Series of each metric over the stats batches, the host metrics first, then the fullest. */
function series(batches) {
  const byKey = new Map();
  for (const b of batches || []) {
    const t = epochMs(b.epoch);
    for (const m of b.metrics || []) {
      const v = chartValue(m);
      if (v === null || Number.isNaN(v)) continue;
      if (!byKey.has(m.key)) byKey.set(m.key, { key: m.key, type: m.type, points: [] });
      byKey.get(m.key).points.push([t, v]);
    }
  }
  const rank = (k) => (k === HOST_CPU ? 0 : k === HOST_MEM_USED ? 1 : k.startsWith('jsagent.host.') ? 2 : 3);
  return [...byKey.values()].filter((s) => s.points.length > 1 && s.key !== HOST_MEM_TOTAL)
    .sort((a, b) => rank(a.key) - rank(b.key) || b.points.length - a.points.length || a.key.localeCompare(b.key));
}

function agentPage(gid, nid) {
  const id = `${gid}:${nid}`;
  const head = h('div', { class: 'pagehead' }, h('h2', {}, 'Agent ', h('span', { class: 'mono' }, id)));
  const facts = h('div', { class: 'card facts' });
  const charts = h('div', { class: 'charts' });
  const stats = h('tbody', {});
  const jobs = h('div', {});
  show(head, facts,
    h('h3', {}, 'Stats', h('span', { class: 'muted small' }, ' over the last batches (counters as rate per second, timers as mean)')),
    charts,
    h('div', { class: 'columns' },
      h('section', {}, h('h3', {}, 'Latest values'), h('div', { class: 'card flush' }, h('table', { class: 'grid' },
        h('thead', {}, h('tr', {}, h('th', {}, 'Metric'), h('th', {}, 'Type'), h('th', {}, 'Value'), h('th', {}, 'Updated'))),
        stats))),
      h('section', {}, h('h3', {}, 'Recent jobs'), jobs)));
  return repeat(async () => {
    const [data, list] = await Promise.all([
      api(`/v1/agents/${gid}/${nid}`),
      api(`/v1/jobs?agent=${enc(id)}&limit=15`),
    ]);
    const a = data.agent;
    head.replaceChildren(h('h2', {}, dot(a.online), ' Agent ', h('span', { class: 'mono' }, a.agent),
      h('span', { class: 'sub' }, a.hostname || '')),
    h('div', { class: 'actions' },
      canOperate() ? h('a', { class: 'button', href: `#/run?agent=${enc(id)}` }, 'Run a command here') : null,
      h('a', { class: 'button ghost', href: `#/jobs?agent=${enc(id)}` }, 'All its jobs')));
    facts.replaceChildren(h('dl', { class: 'kv' },
      h('dt', {}, 'Status'), h('dd', {}, a.online ? h('span', { class: 'ok-text' }, 'online') : h('span', { class: 'warn-text' }, 'offline'),
        h('span', { class: 'muted' }, ` · last seen ${ago(a.last_seen)}`)),
      h('dt', {}, 'Hostname'), h('dd', {}, a.hostname || '–'),
      h('dt', {}, 'OS / arch'), h('dd', {}, [a.os, a.arch].filter(Boolean).join(' / ') || '–'),
      h('dt', {}, 'Agent version'), h('dd', { class: 'mono' }, a.version || '–'),
      h('dt', {}, 'Started'), h('dd', {}, fmtTime(a.started), h('span', { class: 'muted' }, a.started ? ` · up ${ago(a.started).replace(' ago', '')}` : '')),
      h('dt', {}, 'Roles'), h('dd', {}, roleChips(a.roles)),
      h('dt', {}, 'CPU'), h('dd', {}, cpuCell(a.stats)),
      h('dt', {}, 'Memory'), h('dd', {}, memCell(a.stats))));
    const all = series(data.stats_batches);
    charts.replaceChildren(...(all.length ? all.slice(0, 6).map((s) => lineChart(s.key, s.points,
      s.key === HOST_CPU || s.key.endsWith('cpu_percent') ? (v) => `${v.toFixed(1)} %` : isBytes(s.key) ? fmtBytes : fmtNum))
      : [h('p', { class: 'card empty' }, 'No stats batches from this agent yet.')]));
    const latest = Object.entries(a.stats || {}).sort(([x], [y]) => x.localeCompare(y));
    stats.replaceChildren(...(latest.length ? latest.map(([k, m]) => h('tr', {},
      h('td', { class: 'mono' }, k), h('td', { class: 'muted' }, m.type),
      h('td', { class: 'num wrap' }, isBytes(k) && m.type === 'gauge' ? fmtBytes(num(m.value)) : statSummary(m)),
      h('td', { class: 'muted' }, m.epoch ? ago(epochMs(m.epoch)) : '–')))
      : [h('tr', {}, h('td', { colspan: 4, class: 'empty' }, 'No stats reported.'))]));
    jobs.replaceChildren(jobsTable(list.jobs || [], false));
  }, 10000, `show agent ${id}`);
}

// ---------------------------------------------------------------------------------------------
// Jobs

function duration(j) {
  if (!j.started && !j.created) return null;
  const start = j.started || j.created;
  return (j.ended || (FINAL.has(j.state) ? start : Date.now())) - start;
}

function jobsTable(jobs, withTargets = true) {
  if (!jobs.length) return h('p', { class: 'card empty' }, 'No jobs.');
  return h('div', { class: 'card flush' }, h('table', { class: 'grid jobs' },
    h('thead', {}, h('tr', {}, h('th', {}, 'State'), h('th', {}, 'Job'), h('th', {}, 'Command'),
      h('th', {}, 'Name'), withTargets ? h('th', {}, 'Targets') : null, h('th', {}, 'Created'),
      h('th', {}, 'Duration'), withTargets ? h('th', {}, 'By') : null)),
    h('tbody', {}, jobs.map((j) => h('tr', {
      class: 'rowlink', 'data-job': j.id,
      onclick: (ev) => { if (!ev.target.closest('a')) location.hash = `#/jobs/${enc(j.id)}`; },
    },
    h('td', { class: 'tight' }, stateBadge(j.state)),
    h('td', {}, h('a', { href: `#/jobs/${enc(j.id)}`, class: 'mono', title: j.id }, shortId(j.id))),
    h('td', { class: 'mono cmd', title: cmdText(j.cmd) }, cmdText(j.cmd)),
    h('td', { class: 'mono muted' }, cmdName(j.cmd) || '–'),
    withTargets ? h('td', { class: 'mono' }, targetsText(j)) : null,
    h('td', { title: ago(j.created) }, timeCell(j.created)),
    h('td', { class: 'num' }, fmtDur(duration(j))),
    withTargets ? h('td', { class: 'muted' }, j.submitted_by || '–') : null)))));
}

function shortId(id) {
  return id.length > 14 ? `${id.slice(0, 8)}…${id.slice(-4)}` : id;
}

function targetsText(j) {
  const t = j.targets || [];
  const c = j.cmd || {};
  const role = c.role ? `role ${c.role}${c.fanout ? ' (all)' : ''}` : '';
  if (!t.length) return role || '–';
  const list = t.length > 3 ? `${t.slice(0, 3).join(' ')} +${t.length - 3}` : t.join(' ');
  return role ? `${list} · ${role}` : list;
}

function jobsPage(query) {
  const q = new URLSearchParams(query || '');
  const field = (name, attrs) => h('input', { name, value: q.get(name) || '', ...attrs });
  const agent = field('agent', { placeholder: 'G:N', size: 7, pattern: '\\d+:\\d+' });
  const name = field('name', { placeholder: 'domain/name', size: 14 });
  const state = h('select', { name: 'state' }, h('option', { value: '' }, 'any state'),
    STATES.map((s) => h('option', { value: s }, s)));
  state.value = q.get('state') || '';
  const since = h('select', { name: 'since' }, [['', 'any time'], ['15m', 'last 15 min'], ['1h', 'last hour'],
    ['6h', 'last 6 h'], ['1d', 'last day'], ['7d', 'last 7 days']].map(([v, t]) => h('option', { value: v }, t)));
  since.value = q.get('since') || '';
  const limit = h('select', { name: 'limit' }, ['50', '100', '200', '500'].map((v) => h('option', { value: v }, `${v} newest`)));
  limit.value = q.get('limit') || '50';
  const list = h('div', {});
  const note = h('span', { class: 'muted small' }, '');
  let poll = null;
  const params = () => {
    const p = new URLSearchParams();
    for (const el of [agent, state, name, since, limit]) if (el.value.trim()) p.set(el.name, el.value.trim());
    return p;
  };
  const apply = (ev) => {
    if (ev) ev.preventDefault();
    history.replaceState(null, '', `#/jobs${params().toString() ? `?${params()}` : ''}`);
    poll.now();
  };
  for (const el of [state, since, limit]) el.addEventListener('change', apply);
  const form = h('form', { class: 'toolbar filters', onsubmit: apply },
    h('label', {}, 'Agent ', agent), h('label', {}, 'State ', state), h('label', {}, 'Name ', name),
    h('label', {}, 'Created ', since), limit, h('button', { type: 'submit' }, 'Apply'),
    h('a', { href: '#/jobs', class: 'button ghost', onclick: () => { for (const el of [agent, name]) el.value = ''; state.value = ''; since.value = ''; } }, 'Clear'),
    note);
  show(h('div', { class: 'pagehead' }, h('h2', {}, 'Jobs'), h('div', { class: 'actions' },
    canOperate() ? h('a', { class: 'button', href: '#/run' }, 'Run a command') : null)), form, list);
  poll = repeat(async () => {
    const data = await api(`/v1/jobs?${params()}`);
    list.replaceChildren(jobsTable(data.jobs || []));
    note.textContent = data.scan_stopped ? 'The scan stopped early: narrow the filters to see older jobs.' : 'newest first · refreshes every 5 s';
  }, 5000, 'list the jobs');
  return poll;
}

// ---------------------------------------------------------------------------------------------
// One job: record, per-agent results, live output, kill

/** The line protocol's display rules (as jsacc.display.LineDisplay); null hides the line. */
function lineDisplay() {
  const open = new Map(); // "agent/fd" -> level of the open block
  return (l) => {
    const text = String(l.line ?? '');
    const level = Number(l.level || 0);
    if (level === 0) return text;
    const where = `${l.agent}/${l.fd}`;
    if (open.has(where)) {
      if (text.startsWith(':::')) {
        open.delete(where);
        return text.slice(3) || null;
      }
      return text;
    }
    const m = text.match(/^(\d{1,2})(:::?)/);
    if (!m || Number(m[1]) !== level) return text;
    const rest = text.slice(m[0].length);
    if (m[2] === ':::') {
      open.set(where, level);
      return rest || null;
    }
    return level >= 3 ? rest : text;
  };
}

/** An output pane that sticks to its end unless the reader scrolled up. */
function outputPane(id) {
  const pane = h('div', { class: 'output', id, tabindex: 0 });
  const pending = [];
  let queued = false;
  let count = 0;
  const atEnd = () => pane.scrollHeight - pane.scrollTop - pane.clientHeight < 24;
  const flush = () => {
    queued = false;
    const stick = atEnd();
    const empty = pane.querySelector('.placeholder');
    if (empty && pending.length) empty.remove();
    pane.append(...pending.splice(0));
    if (stick) pane.scrollTop = pane.scrollHeight;
  };
  return {
    pane,
    get count() { return count; },
    add(el) {
      count += 1;
      pending.push(el);
      if (!queued) { queued = true; requestAnimationFrame(flush); }
    },
    placeholder(text) {
      pane.replaceChildren(h('div', { class: 'placeholder' }, text));
    },
  };
}

function jobPage(id) {
  let record = null;
  let stopped = false;
  const aborter = new AbortController();
  const head = h('div', { class: 'pagehead' }, h('h2', {}, 'Job ', h('span', { class: 'mono' }, id)));
  const facts = h('div', { class: 'card facts' });
  const agentsBox = h('div', {});
  const out = outputPane('output');
  const status = h('span', { class: 'follow-status muted small', id: 'output-status' }, 'connecting…');
  const lines = h('span', { class: 'muted small' }, '');
  const show0 = lineDisplay();
  out.placeholder('Waiting for output…');
  show(head, facts, agentsBox,
    h('div', { class: 'outhead' }, h('h3', {}, 'Output'), status, lines,
      h('button', { class: 'link small', onclick: () => { out.pane.scrollTop = out.pane.scrollHeight; } }, 'Jump to end')),
    out.pane);

  const renderRecord = () => {
    const r = record;
    const final = FINAL.has(r.state);
    const kill = canOperate() && !final
      ? h('button', { class: 'danger', id: 'kill', onclick: () => confirmKill(r) }, 'Kill') : null;
    head.replaceChildren(h('h2', {}, stateBadge(r.state), ' ', cmdName(r.cmd) ? h('span', { class: 'mono' }, cmdName(r.cmd)) : 'Job',
      h('span', { class: 'sub mono', title: r.id }, r.id)),
    h('div', { class: 'actions' }, kill));
    const c = r.cmd || {};
    facts.replaceChildren(h('dl', { class: 'kv' },
      h('dt', {}, 'Command'), h('dd', { class: 'mono cmdline' }, cmdText(c)),
      h('dt', {}, 'Targets'), h('dd', {}, (r.targets || []).map((t) => {
        const [g, n] = t.split(':');
        return h('a', { class: 'chip mono', href: `#/agents/${g}/${n}` }, t);
      }), c.role ? h('span', { class: 'muted' }, ` role ${c.role}${c.fanout ? ', every agent' : ''}`) : null),
      h('dt', {}, 'Submitted by'), h('dd', {}, r.submitted_by || '–'),
      h('dt', {}, 'Created'), h('dd', {}, fmtTime(r.created), h('span', { class: 'muted' }, r.created ? ` · ${ago(r.created)}` : '')),
      h('dt', {}, 'Started'), h('dd', {}, fmtTime(r.started)),
      h('dt', {}, 'Ended'), h('dd', {}, fmtTime(r.ended)),
      h('dt', {}, 'Duration'), h('dd', {}, fmtDur(duration(r)), final ? '' : h('span', { class: 'muted' }, ' so far'))));
    const rows = Object.entries(r.agents || {}).map(([a, part]) => {
      const res = (part && part.result) || {};
      const [g, n] = a.split(':');
      return h('tr', {},
        h('td', {}, h('a', { class: 'mono', href: `#/agents/${g}/${n}` }, a)),
        h('td', {}, stateBadge((part && part.state) || (final ? r.state : r.state === 'QUEUED' ? 'QUEUED' : 'RUNNING'))),
        h('td', { class: 'num' }, res.exit_code ?? '–'),
        h('td', { class: 'num' }, res.time !== undefined ? fmtDur(num(res.time)) : '–'),
        h('td', {}, res.starttime ? timeCell(res.starttime) : '–'),
        h('td', { class: 'mono crit' }, res.critical || ''));
    });
    agentsBox.replaceChildren(h('div', { class: 'card flush' }, h('table', { class: 'grid' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Agent'), h('th', {}, 'State'), h('th', {}, 'Exit code'),
        h('th', {}, 'Run time'), h('th', {}, 'Started'), h('th', {}, 'Critical'))),
      h('tbody', {}, rows))));
  };

  const loadRecord = async () => {
    record = await api(`/v1/jobs/${enc(id)}`);
    if (!stopped) renderRecord();
  };

  const confirmKill = (r) => {
    const running = Object.entries(r.agents || {}).filter(([, p]) => !(p && p.state)).map(([a]) => a);
    modal(`Kill job ${shortId(r.id)}?`,
      `This kills ${cmdText(r.cmd)} on ${running.join(', ') || 'its agents'}. Its state becomes KILLED.`,
      'Kill job', async () => {
        try {
          const k = await api(`/v1/jobs/${enc(r.id)}`, { method: 'DELETE' });
          say('info', `Kill sent (${(k.kills || []).length} kill command${(k.kills || []).length === 1 ? '' : 's'}).`);
          await loadRecord();
        } catch (e) {
          fail(e, 'kill this job');
        }
      });
  };

  const addLine = (l) => {
    const text = show0(l);
    if (text === null) return;
    const multi = record && (record.targets || []).length > 1;
    const cls = ['ln', l.fd === 2 ? 'err' : '', Number(l.level) === 0 ? 'note' : ''].join(' ').trim();
    out.add(h('div', { class: cls, title: `${fmtTime(l.time)} · ${l.agent} · fd ${l.fd} · level ${l.level}` },
      multi ? h('span', { class: 'who' }, l.agent) : null, text || ' '));
  };

  const showTails = () => {
    // No live lines (output off, or the stream expired): show the results' tails instead.
    for (const [a, part] of Object.entries((record && record.agents) || {})) {
      const s = (part && part.result && part.result.streams) || [];
      s.forEach((tail, i) => {
        if (!tail) return;
        for (const line of String(tail).replace(/\n$/, '').split('\n')) {
          addLine({ agent: a, fd: i + 1, level: 1, line, time: part.result.starttime });
        }
      });
    }
  };

  const followOutput = async () => {
    let after = '0';
    let wait = 1000;
    while (!stopped) {
      let ended = false;
      status.textContent = 'following';
      status.className = 'follow-status live small';
      try {
        await follow(`/v1/jobs/${enc(id)}/output?follow=1&after=${enc(after)}`, (event, data) => {
          if (event === 'line') {
            const l = JSON.parse(data);
            after = l.id;
            addLine(l);
            lines.textContent = `${out.count} line${out.count === 1 ? '' : 's'}`;
          } else if (event === 'end') {
            ended = true;
          }
        }, aborter.signal);
        wait = 1000;
      } catch (e) {
        if (stopped || e.name === 'AbortError' || e.status === 401) return;
        if (e.status === 404) {
          status.textContent = 'no such job';
          status.className = 'follow-status muted small';
          return;
        }
        status.textContent = `reconnecting (${e.message})`;
        status.className = 'follow-status warn-text small';
        await sleep(wait);
        wait = Math.min(wait * 2, 15000);
        continue;
      }
      if (ended) {
        status.textContent = 'ended';
        status.className = 'follow-status muted small';
        try {
          await loadRecord();
        } catch (e) {
          fail(e, 'read the job');
        }
        if (out.count === 0) {
          showTails();
          if (out.count === 0) out.placeholder('The job printed nothing.');
        }
        return;
      }
    }
  };

  // The record every 2 s until the job is final; the output as it comes.
  let timer = null;
  const poll = async () => {
    try {
      await loadRecord();
    } catch (e) {
      if (stopped) return;
      if (e.status === 404) {
        show(h('div', { class: 'card empty' }, h('h2', {}, 'No such job'), h('p', {}, e.message),
          h('a', { href: '#/jobs' }, 'Back to the jobs')));
        stopped = true;
        aborter.abort();
        return;
      }
      fail(e, 'read the job');
    }
    if (!stopped && !(record && FINAL.has(record.state))) timer = setTimeout(poll, 2000);
  };
  poll();
  followOutput();
  return { stop() { stopped = true; clearTimeout(timer); aborter.abort(); closeModal(); } };
}

// ---------------------------------------------------------------------------------------------
// A confirmation dialog (in the page: no window.confirm, which blocks the tab)

let modalEl = null;

function closeModal() {
  if (modalEl) modalEl.remove();
  modalEl = null;
}

function modal(title, text, action, onConfirm) {
  closeModal();
  const confirm = h('button', { class: 'danger', id: 'confirm', onclick: () => { closeModal(); onConfirm(); } }, action);
  modalEl = h('div', { class: 'backdrop', onclick: (ev) => { if (ev.target === modalEl) closeModal(); } },
    h('div', { class: 'dialog card', role: 'dialog', 'aria-modal': 'true' },
      h('h3', {}, title), h('p', {}, text),
      h('div', { class: 'buttons' }, h('button', { id: 'cancel', onclick: closeModal }, 'Cancel'), confirm)));
  document.body.append(modalEl);
  confirm.focus();
}

document.addEventListener('keydown', (ev) => { if (ev.key === 'Escape') closeModal(); });

// ---------------------------------------------------------------------------------------------
// Run a command (operators)

function runPage(query) {
  const q = new URLSearchParams(query || '');
  if (!canOperate()) {
    show(h('div', { class: 'card empty' }, h('h2', {}, 'Run a command'),
      h('p', {}, `Your role (${me.role}) may not start jobs: ask an administrator for an operator account.`)));
    return null;
  }
  const radio = (name, value, label, checked) => h('label', { class: 'radio' },
    h('input', { type: 'radio', name, value, checked, id: `${name}-${value}` }), ` ${label}`);
  const agentSel = h('select', { id: 'run-agent' }, h('option', { value: '' }, 'loading agents…'));
  const gid = h('input', { id: 'run-gid', type: 'number', min: 0, value: '1', class: 'short' });
  const role = h('input', { id: 'run-role', list: 'roles', placeholder: 'web' });
  const roles = h('datalist', { id: 'roles' });
  const fanout = h('input', { id: 'run-fanout', type: 'checkbox' });
  const shell = h('textarea', { id: 'run-shell', rows: 3, spellcheck: 'false', placeholder: "uptime; df -h /" });
  const program = h('input', { id: 'run-program', placeholder: '/usr/bin/systemctl', spellcheck: 'false' });
  const args = h('textarea', { id: 'run-args', rows: 3, spellcheck: 'false', placeholder: 'one argument a line\nstatus\nnginx' });
  const domain = h('input', { id: 'run-domain', placeholder: 'ops', class: 'short' });
  const name = h('input', { id: 'run-name', placeholder: 'deploy', class: 'short' });
  const maxTime = h('input', { id: 'run-max-time', type: 'number', min: 0, placeholder: 'none', class: 'short' });
  const preview = h('pre', { class: 'preview', id: 'run-preview' });
  const submit = h('button', { type: 'submit', class: 'primary', id: 'run-submit' }, 'Run');

  const form = h('form', { class: 'card runform' },
    h('fieldset', {}, h('legend', {}, 'Target'),
      h('div', { class: 'row' }, radio('target', 'agent', 'One agent', true), agentSel),
      h('div', { class: 'row' }, radio('target', 'role', 'Role'), h('label', {}, 'group ', gid), role, roles,
        h('label', { class: 'check' }, fanout, ' every agent of the role (fanout)'))),
    h('fieldset', {}, h('legend', {}, 'Command'),
      h('div', { class: 'row' }, radio('mode', 'shell', 'Shell command (/bin/sh -c)', true), radio('mode', 'program', 'Program and arguments')),
      h('div', { class: 'mode-shell' }, shell),
      h('div', { class: 'mode-program', hidden: true }, program, args)),
    h('fieldset', {}, h('legend', {}, 'Options'),
      h('div', { class: 'row' }, h('label', {}, 'Domain ', domain), h('label', {}, 'Name ', name),
        h('label', {}, 'Time limit (s) ', maxTime))),
    h('details', {}, h('summary', {}, 'Command sent'), preview),
    h('div', { class: 'buttons' }, submit));

  const value = (n) => form.querySelector(`input[name=${n}]:checked`).value;
  const build = () => {
    const cmd = {};
    if (value('target') === 'agent') {
      const [g, n] = agentSel.value.split(':').map(Number);
      Object.assign(cmd, { gid: g, nid: n });
    } else {
      Object.assign(cmd, { gid: Number(gid.value), role: role.value.trim() });
      if (fanout.checked) cmd.fanout = true;
    }
    cmd.cmd = 'execute';
    const a = value('mode') === 'shell'
      ? { cmd: '/bin/sh', args: ['-c', shell.value] }
      : { cmd: program.value.trim(), args: args.value.split('\n').filter((x) => x !== '') };
    if (domain.value.trim()) a.domain = domain.value.trim();
    if (name.value.trim()) a.name = name.value.trim();
    if (maxTime.value) a.max_time = Number(maxTime.value);
    cmd.args = a;
    return cmd;
  };
  const refresh = () => {
    const shellMode = value('mode') === 'shell';
    form.querySelector('.mode-shell').hidden = !shellMode;
    form.querySelector('.mode-program').hidden = shellMode;
    const byAgent = value('target') === 'agent';
    agentSel.disabled = !byAgent;
    for (const el of [gid, role, fanout]) el.disabled = byAgent;
    preview.textContent = JSON.stringify(build(), null, 2);
  };
  form.addEventListener('input', refresh);
  form.addEventListener('change', refresh);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const cmd = build();
    if (value('target') === 'agent' && !agentSel.value) return say('error', 'Choose an agent.');
    if (value('target') === 'role' && !cmd.role) return say('error', 'Name a role.');
    if (!cmd.args.cmd || (value('mode') === 'shell' && !shell.value.trim())) return say('error', 'Give a command.');
    submit.disabled = true;
    try {
      const r = await api('/v1/jobs', { method: 'POST', body: cmd });
      location.hash = `#/jobs/${enc(r.id)}`;
    } catch (e) {
      fail(e, 'start this job');
      submit.disabled = false;
    }
  });
  show(h('div', { class: 'pagehead' }, h('h2', {}, 'Run a command')), form);
  refresh();
  api('/v1/agents').then((d) => {
    const agents = d.agents || [];
    agentSel.replaceChildren(...agents.map((a) => h('option', { value: a.agent },
      `${a.agent} · ${a.hostname || '?'}${a.online ? '' : ' (offline)'}`)));
    if (!agents.length) agentSel.append(h('option', { value: '' }, 'no agents'));
    const want = q.get('agent');
    agentSel.value = want && agents.some((a) => a.agent === want) ? want : (agents.find((a) => a.online) || agents[0] || {}).agent || '';
    roles.replaceChildren(...[...new Set(agents.flatMap((a) => a.roles || []))].sort().map((r) => h('option', { value: r })));
    refresh();
  }).catch((e) => fail(e, 'list the agents'));
  shell.focus();
  return null;
}

// ---------------------------------------------------------------------------------------------
// Logs

const LEVELS = { 1: 'stdout', 2: 'stderr', 3: 'user', 4: 'ops', 5: 'log', 6: 'debug', 7: 'warn', 8: 'ops error', 9: 'critical' };

function logsPage(domain, name) {
  const aborter = new AbortController();
  let stopped = false;
  const dIn = h('input', { id: 'log-domain', value: domain || '', placeholder: 'domain', required: true, class: 'short' });
  const nIn = h('input', { id: 'log-name', value: name || '', placeholder: 'name', required: true, class: 'short' });
  const followBox = h('input', { type: 'checkbox', id: 'log-follow', checked: true });
  const status = h('span', { class: 'follow-status muted small' }, '');
  const out = outputPane('logs');
  const form = h('form', { class: 'toolbar', onsubmit: (ev) => {
    ev.preventDefault();
    const target = `#/logs/${enc(dIn.value.trim())}/${enc(nIn.value.trim())}`;
    if (location.hash === target) route(); else location.hash = target;
  } }, h('label', {}, 'Domain ', dIn), h('span', { class: 'muted' }, '/'), h('label', {}, 'Name ', nIn),
  h('label', { class: 'check' }, followBox, ' follow'), h('button', { type: 'submit' }, 'Show'), status);
  show(h('div', { class: 'pagehead' }, h('h2', {}, 'Logs')), form,
    h('p', { class: 'muted small' }, 'The log messages of the jobs run with this domain and name (their command\'s args.domain and args.name), oldest first; new ones appear as they arrive.'),
    out.pane);
  if (!domain || !name) {
    out.placeholder('Give a domain and a name, e.g. ops / backup.');
    dIn.focus();
    return null;
  }
  const addMsg = (m) => {
    const f = m.fields || {};
    const level = Number(f.level);
    out.add(h('div', { class: `ln lv${level}` },
      h('span', { class: 'ts' }, fmtTime(num(f.epoch))),
      h('span', { class: 'lvl' }, LEVELS[level] || level),
      h('span', { class: 'who' }, f.gid !== undefined ? `${f.gid}:${f.nid}` : ''),
      f.jobid ? h('a', { class: 'job', href: `#/jobs/${enc(f.jobid)}`, title: f.jobid }, shortId(f.jobid)) : h('span', { class: 'job' }),
      h('span', { class: 'text' }, f.data ?? '')));
  };
  (async () => {
    try {
      const first = await api(`/v1/logs/${enc(domain)}/${enc(name)}?count=200`);
      (first.messages || []).forEach(addMsg);
      if (!first.messages || !first.messages.length) out.placeholder(`No messages in ${domain}/${name} yet.`);
      let after = first.next || '0';
      if (!followBox.checked) return;
      while (!stopped) {
        status.textContent = 'following';
        status.className = 'follow-status live small';
        try {
          await follow(`/v1/logs/${enc(domain)}/${enc(name)}?follow=1&after=${enc(after)}`, (event, data) => {
            if (event !== 'log') return;
            const m = JSON.parse(data);
            after = m.id;
            addMsg(m);
          }, aborter.signal);
        } catch (e) {
          if (stopped || e.name === 'AbortError' || e.status === 401) return;
          status.textContent = `reconnecting (${e.message})`;
          status.className = 'follow-status warn-text small';
          await sleep(3000);
        }
      }
    } catch (e) {
      if (!stopped) fail(e, `read the logs of ${domain}/${name}`);
    }
  })();
  followBox.addEventListener('change', () => {
    if (!followBox.checked) {
      stopped = true;
      aborter.abort();
      status.textContent = 'paused';
      status.className = 'follow-status muted small';
    } else {
      route();
    }
  });
  return { stop() { stopped = true; aborter.abort(); } };
}

// ---------------------------------------------------------------------------------------------

document.getElementById('signout').addEventListener('click', () => signOut('Signed out.'));
window.addEventListener('hashchange', route);
route();
