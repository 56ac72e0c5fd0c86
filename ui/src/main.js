// tracelake's web UI: a single page routed on the URL fragment, so every
// view (map, search, trace, histogram) is a link to share.
//
//   #/map?range=1h                       service map (or start=&end= unix seconds)
//   #/search?q=...&lang=traceql|xray     trace search, page= for later pages
//   #/trace/{trace id}                   waterfall of one trace
//   #/histogram?service=&operation=      latency histogram (client=&server= for an edge)
//   #/metrics?q=...&step=                TraceQL metrics chart

import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { html } from './html.js';
import { loadSettings, saveSettings } from './api.js';
import { link, navigate, parseHash, windowParams } from './route.js';
import { RANGES, formatUnixSeconds, windowOf } from './format.js';
import { MapView } from './map.js';
import { SearchView } from './search.js';
import { TraceView } from './trace.js';
import { HistogramView } from './histogram.js';
import { MetricsView } from './metrics.js';
import './style.css';

/** `datetime-local` text for unix seconds, in local time. */
function localInput(seconds) {
  const date = new Date(seconds * 1000);
  const pad = (n) => String(n).padStart(2, '0');
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

function WindowPicker({ route }) {
  const { params, view, arg } = route;
  const pinned = params.get('start') && params.get('end');
  const current = pinned ? 'pinned' : params.get('range') || '1h';
  const [custom, setCustom] = useState(null);
  const go = (window_) => {
    const next = Object.fromEntries(params);
    for (const name of ['start', 'end', 'range', 'page', 'n']) delete next[name];
    navigate(view, { ...next, ...window_ }, arg);
  };
  const choose = (event) => {
    if (event.target.value === 'custom') {
      const { start, end } = windowOf(params);
      setCustom({ from: localInput(start), to: localInput(end) });
    } else if (event.target.value !== 'pinned') {
      setCustom(null);
      go({ range: event.target.value });
    }
  };
  const apply = (event) => {
    event.preventDefault();
    const start = Math.floor(new Date(custom.from).getTime() / 1000);
    const end = Math.ceil(new Date(custom.to).getTime() / 1000);
    if (!Number.isFinite(start) || !Number.isFinite(end) || start > end) return;
    setCustom(null);
    go({ start, end });
  };
  return html`<form class="window" onSubmit=${apply}>
    <label>window
      <select onChange=${choose} aria-label="time window">
        ${RANGES.map((range) => html`<option value=${range} selected=${!custom && current === range}>last ${range}</option>`)}
        ${pinned &&
        html`<option value="pinned" selected=${!custom && current === 'pinned'}>
          ${formatUnixSeconds(Number(params.get('start')))} – ${formatUnixSeconds(Number(params.get('end')))}
        </option>`}
        <option value="custom" selected=${Boolean(custom)}>custom…</option>
      </select>
    </label>
    ${custom &&
    html`<input type="datetime-local" step="1" aria-label="from" value=${custom.from}
        onInput=${(event) => setCustom({ ...custom, from: event.target.value })} />
      <input type="datetime-local" step="1" aria-label="to" value=${custom.to}
        onInput=${(event) => setCustom({ ...custom, to: event.target.value })} />
      <button type="submit">apply</button>`}
  </form>`;
}

function Settings({ onClose }) {
  const [settings, setSettings] = useState(loadSettings());
  const save = (event) => {
    event.preventDefault();
    saveSettings(settings);
    onClose();
    window.dispatchEvent(new HashChangeEvent('hashchange'));
  };
  return html`<div class="overlay" role="dialog" aria-label="settings">
    <form class="dialog" onSubmit=${save}>
      <h2>Connection</h2>
      <p>Only needed when the server has API keys (<code>[[auth.keys]]</code>) or several tenants. Kept in this browser.</p>
      <label>API key (query permission)
        <input type="password" value=${settings.key} autocomplete="off"
          onInput=${(event) => setSettings({ ...settings, key: event.target.value })} />
      </label>
      <label>Tenant (X-Scope-OrgID)
        <input value=${settings.tenant} placeholder="single-tenant"
          onInput=${(event) => setSettings({ ...settings, tenant: event.target.value })} />
      </label>
      <div class="buttons">
        <button type="button" onClick=${onClose}>Cancel</button>
        <button type="submit" class="primary">Save</button>
      </div>
    </form>
  </div>`;
}

const KEYS = [
  ['m', 'service map'],
  ['s', 'trace search'],
  ['h', 'latency histogram'],
  ['t', 'TraceQL metrics'],
  ['/', 'focus the search box'],
  ['j / k', 'next / previous row (results, spans)'],
  ['Enter', 'open the selected row'],
  ['[ / ]', 'previous / next page of results'],
  ['r', 'reload the view'],
  ['Esc', 'close a panel or dialog'],
  ['?', 'this help'],
];

function Help({ onClose }) {
  return html`<div class="overlay" role="dialog" aria-label="keyboard shortcuts" onClick=${onClose}>
    <div class="dialog">
      <h2>Keyboard</h2>
      <table>${KEYS.map(([key, what]) => html`<tr><td><kbd>${key}</kbd></td><td>${what}</td></tr>`)}</table>
    </div>
  </div>`;
}

function App() {
  const [route, setRoute] = useState(parseHash());
  const [reload, setReload] = useState(0);
  const [dialog, setDialog] = useState(null);
  useEffect(() => {
    const onHash = () => setRoute(parseHash());
    window.addEventListener('hashchange', onHash);
    return () => window.removeEventListener('hashchange', onHash);
  }, []);
  useEffect(() => {
    const onKey = (event) => {
      const typing = /^(INPUT|TEXTAREA|SELECT)$/.test(event.target.tagName);
      if (event.key === 'Escape') {
        setDialog(null);
        if (typing) event.target.blur();
        return;
      }
      if (typing || event.ctrlKey || event.metaKey || event.altKey) return;
      const window_ = windowParams(parseHash().params);
      const actions = {
        m: () => navigate('map', window_),
        s: () => navigate('search', window_),
        h: () => navigate('histogram', window_),
        t: () => navigate('metrics', window_),
        r: () => setReload((n) => n + 1),
        '?': () => setDialog('help'),
        '/': () => document.querySelector('#query')?.focus(),
      };
      const action = actions[event.key];
      if (action) {
        event.preventDefault();
        if (event.key === '/' && !document.querySelector('#query')) navigate('search', window_);
        action();
      }
    };
    window.addEventListener('keydown', onKey);
    return () => window.removeEventListener('keydown', onKey);
  }, []);
  useEffect(() => {
    if ((route.view === 'search' || route.view === 'metrics') && document.activeElement === document.body) {
      // `/` from another view lands in the search box.
      setTimeout(() => document.querySelector('#query')?.focus(), 0);
    }
  }, [route.view]);

  const views = { map: MapView, search: SearchView, trace: TraceView, histogram: HistogramView, metrics: MetricsView };
  const View = views[route.view];
  const window_ = windowParams(route.params);
  const tab = (view, label, key) =>
    html`<a href=${link(view, window_)} class=${route.view === view ? 'active' : ''}
      aria-current=${route.view === view ? 'page' : undefined} title=${`${label} (${key})`}>${label}</a>`;
  return html`<header>
      <a class="brand" href="#/map">tracelake</a>
      <nav>${tab('map', 'Service map', 'm')}${tab('search', 'Traces', 's')}${tab('histogram', 'Latency', 'h')}${tab('metrics', 'Metrics', 't')}</nav>
      ${route.view !== 'trace' && html`<${WindowPicker} route=${route} />`}
      <button class="icon" title="refresh (r)" aria-label="refresh" onClick=${() => setReload((n) => n + 1)}>⟳</button>
      <button class="icon" title="keyboard (?)" aria-label="keyboard shortcuts" onClick=${() => setDialog('help')}>?</button>
      <button class="icon" title="API key and tenant" aria-label="settings" onClick=${() => setDialog('settings')}>⚙</button>
    </header>
    <main>
      ${View
        ? html`<${View} key=${`${route.view}/${route.arg}?${route.params}#${reload}`} route=${route} />`
        : html`<p class="error">No view "${route.view}". <a href="#/map">Service map</a></p>`}
    </main>
    ${dialog === 'settings' && html`<${Settings} onClose=${() => setDialog(null)} />`}
    ${dialog === 'help' && html`<${Help} onClose=${() => setDialog(null)} />`}`;
}

render(html`<${App} />`, document.getElementById('app'));
