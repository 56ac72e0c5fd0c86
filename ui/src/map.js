// The service map of a window: /v1/service-map drawn with cytoscape and a
// dagre layout (callers left, callees right). A node's pie shows its
// ok/error/throttle/fault shares, its border the worst of them; an edge is
// labelled with its request rate and p50/p99. Clicking a node or edge (or
// its row in the tables under the map) opens its latency histogram and a
// link to its traces.

import cytoscape from 'cytoscape';
import dagre from 'cytoscape-dagre';
import { useEffect, useRef, useState } from 'preact/hooks';
import { html } from './html.js';
import { PATHS, getJson } from './api.js';
import { OUTCOME_COLORS, formatSeconds, windowOf } from './format.js';
import { Histogram } from './histogram.js';
import { link, windowParams } from './route.js';

cytoscape.use(dagre);

/** Shares of a stats object: ok, errors (not throttles), throttles, faults. */
export function shares(stats) {
  if (!stats || stats.total === 0) return null;
  const errors = Math.max(0, stats.errors - stats.throttles);
  return {
    ok: stats.ok / stats.total,
    errors: errors / stats.total,
    throttles: stats.throttles / stats.total,
    faults: stats.faults / stats.total,
  };
}

function worst(stats) {
  if (!stats) return '#a0aec0';
  if (stats.faults > 0) return OUTCOME_COLORS.faults;
  if (stats.throttles > 0) return OUTCOME_COLORS.throttles;
  if (stats.errors > 0) return OUTCOME_COLORS.errors;
  return OUTCOME_COLORS.ok;
}

function perMinute(count, span) {
  const minutes = Math.max(1 / 60, (span.end - span.start) / 60);
  const rate = count / minutes;
  return rate >= 10 ? rate.toFixed(0) : rate.toFixed(rate >= 1 ? 1 : 2);
}

function edgeLabel(edge, span) {
  const latency = edge.stats.latency;
  return `${perMinute(edge.stats.total, span)}/min · p50 ${formatSeconds(latency.p50)} · p99 ${formatSeconds(latency.p99)}`;
}

function elements(map, span) {
  const nodes = map.nodes.map((node) => {
    const share = shares(node.stats);
    return {
      group: 'nodes',
      data: {
        id: `n${node.id}`,
        label: node.type && node.type !== 'client' ? `${node.name}\n${node.type}` : node.name,
        ok: (share?.ok ?? 0) * 100,
        errors: (share?.errors ?? 0) * 100,
        throttles: (share?.throttles ?? 0) * 100,
        faults: (share?.faults ?? 0) * 100,
        border: worst(node.stats),
        empty: share ? 0 : 1,
      },
      classes: [node.type === 'client' ? 'client' : '', node.instrumented ? '' : 'inferred'].join(' '),
    };
  });
  const edges = map.edges.map((edge, index) => ({
    group: 'edges',
    data: {
      id: `e${index}`,
      source: `n${edge.source}`,
      target: `n${edge.target}`,
      label: edgeLabel(edge, span),
      color: edge.stats.faults > 0 ? OUTCOME_COLORS.faults : edge.stats.errors > 0 ? OUTCOME_COLORS.errors : '#718096',
    },
    classes: edge.connection_type === 'messaging_system' ? 'messaging' : '',
  }));
  return [...nodes, ...edges];
}

const STYLE = [
  {
    selector: 'node',
    style: {
      shape: 'ellipse',
      width: 46,
      height: 46,
      'background-color': '#edf2f7',
      'border-width': 4,
      'border-color': 'data(border)',
      label: 'data(label)',
      'text-wrap': 'wrap',
      'text-valign': 'bottom',
      'text-margin-y': 6,
      'font-size': 13,
      color: '#1a202c',
      'pie-size': '100%',
      'pie-1-background-color': OUTCOME_COLORS.ok,
      'pie-1-background-size': 'data(ok)',
      'pie-2-background-color': OUTCOME_COLORS.errors,
      'pie-2-background-size': 'data(errors)',
      'pie-3-background-color': OUTCOME_COLORS.throttles,
      'pie-3-background-size': 'data(throttles)',
      'pie-4-background-color': OUTCOME_COLORS.faults,
      'pie-4-background-size': 'data(faults)',
    },
  },
  { selector: 'node.client', style: { shape: 'round-rectangle', 'background-color': '#cbd5e0', width: 36, height: 36 } },
  { selector: 'node.inferred', style: { 'border-style': 'dashed' } },
  { selector: 'node:selected', style: { 'overlay-color': '#2b6cb0', 'overlay-opacity': 0.2, 'overlay-padding': 8 } },
  {
    selector: 'edge',
    style: {
      width: 2,
      'curve-style': 'bezier',
      'line-color': 'data(color)',
      'target-arrow-color': 'data(color)',
      'target-arrow-shape': 'triangle',
      label: 'data(label)',
      'font-size': 10,
      color: '#4a5568',
      'text-background-color': '#ffffff',
      'text-background-opacity': 0.85,
      'text-background-padding': 2,
      'text-rotation': 'autorotate',
    },
  },
  { selector: 'edge.messaging', style: { 'line-style': 'dashed' } },
  { selector: 'edge:selected', style: { width: 4, 'line-color': '#2b6cb0', 'target-arrow-color': '#2b6cb0' } },
];

function StatsTable({ stats, span }) {
  if (!stats) return html`<p class="empty">The client: requests start here.</p>`;
  const share = shares(stats);
  const percent = (value) => `${((value ?? 0) * 100).toFixed(1)}%`;
  return html`<table class="stats">
    <tr><th>requests</th><td>${stats.total} (${perMinute(stats.total, span)}/min)</td></tr>
    <tr><th>ok</th><td style=${`color:${OUTCOME_COLORS.ok}`}>${stats.ok} · ${percent(share?.ok)}</td></tr>
    <tr><th>errors (4xx)</th><td style=${`color:${OUTCOME_COLORS.errors}`}>${stats.errors - stats.throttles} · ${percent(share?.errors)}</td></tr>
    <tr><th>throttles (429)</th><td style=${`color:${OUTCOME_COLORS.throttles}`}>${stats.throttles} · ${percent(share?.throttles)}</td></tr>
    <tr><th>faults (5xx)</th><td style=${`color:${OUTCOME_COLORS.faults}`}>${stats.faults} · ${percent(share?.faults)}</td></tr>
    <tr><th>latency</th><td>p50 ${formatSeconds(stats.latency.p50)} · p90 ${formatSeconds(stats.latency.p90)} · p99 ${formatSeconds(stats.latency.p99)}</td></tr>
  </table>`;
}

function Details({ selected, map, span, params, onClose }) {
  const windowLinks = windowParams(params);
  if (selected.kind === 'node') {
    const node = map.nodes[selected.index];
    const traces = link('search', { ...windowLinks, lang: 'xray', q: `service("${node.name}")` });
    return html`<aside class="details" data-testid="map-details">
      <button class="close" aria-label="close" onClick=${onClose}>×</button>
      <h2>${node.name}</h2>
      <p class="muted">${node.type || 'service'}${node.instrumented ? '' : ' · inferred from its callers'}${node.root ? ' · root' : ''}</p>
      <${StatsTable} stats=${node.stats} span=${span} />
      ${node.stats &&
      html`<${Histogram} of=${node.instrumented ? { service: node.name } : { server: node.name }}
          window=${span} />`}
      ${node.type !== 'client' &&
      html`<p class="links"><a href=${traces} data-testid="node-traces">Traces through ${node.name}</a>
        <a href=${link('histogram', { ...windowLinks, service: node.name })}>Latency by operation</a></p>`}
    </aside>`;
  }
  const edge = map.edges[selected.index];
  const traces = link('search', { ...windowLinks, lang: 'xray', q: `edge("${edge.client}", "${edge.server}")` });
  return html`<aside class="details" data-testid="map-details">
    <button class="close" aria-label="close" onClick=${onClose}>×</button>
    <h2>${edge.client} → ${edge.server}</h2>
    <p class="muted">${edge.connection_type || 'request'} · as the caller timed it</p>
    <${StatsTable} stats=${edge.stats} span=${span} />
    <${Histogram} of=${{ client: edge.client, server: edge.server }} window=${span} />
    <p class="links"><a href=${traces} data-testid="edge-traces">Traces over this edge</a></p>
  </aside>`;
}

export function MapView({ route }) {
  const { params } = route;
  const span = windowOf(params);
  const [map, setMap] = useState(null);
  const [error, setError] = useState(null);
  const [selected, setSelected] = useState(null);
  const container = useRef(null);
  const graph = useRef(null);

  useEffect(() => {
    const abort = new AbortController();
    getJson(PATHS.serviceMap, {}, { start: span.start, end: span.end }, abort.signal)
      .then(setMap)
      .catch((failure) => abort.signal.aborted || setError(failure.message));
    return () => abort.abort();
  }, []);

  useEffect(() => {
    if (!map || !container.current || map.nodes.length === 0) return undefined;
    const cy = cytoscape({
      container: container.current,
      elements: elements(map, span),
      style: STYLE,
      layout: { name: 'dagre', rankDir: 'LR', nodeSep: 18, rankSep: 240, edgeSep: 12 },
      wheelSensitivity: 0.3,
      minZoom: 0.2,
      maxZoom: 3,
    });
    cy.on('tap', 'node', (event) => setSelected({ kind: 'node', index: Number(event.target.id().slice(1)) }));
    cy.on('tap', 'edge', (event) => setSelected({ kind: 'edge', index: Number(event.target.id().slice(1)) }));
    cy.on('tap', (event) => event.target === cy && setSelected(null));
    graph.current = cy;
    // For scripts and tests: the drawn graph.
    window.tracelakeMap = cy;
    return () => cy.destroy();
  }, [map]);

  useEffect(() => {
    const cy = graph.current;
    if (!cy) return;
    cy.elements().unselect();
    if (selected) cy.getElementById(`${selected.kind === 'node' ? 'n' : 'e'}${selected.index}`).select();
  }, [selected]);

  if (error) return html`<p class="error">${error}</p>`;
  if (!map) return html`<p class="loading">Loading the service map…</p>`;
  if (map.nodes.length === 0) {
    return html`<p class="empty" data-testid="map-empty">No traffic in this window. Send spans (X-Ray SDK, OTel SDK) or run <code>tracelake demo</code>, then refresh.</p>`;
  }
  const row = (kind, index) => ({
    class: selected && selected.kind === kind && selected.index === index ? 'selected' : '',
    onClick: () => setSelected({ kind, index }),
    onKeyDown: (event) => event.key === 'Enter' && setSelected({ kind, index }),
    tabIndex: 0,
  });
  return html`<section class="map-view">
    <div class="map-layout">
      <div class="map" ref=${container} data-testid="service-map" aria-label="service map"></div>
      ${selected && html`<${Details} selected=${selected} map=${map} span=${span} params=${params} onClose=${() => setSelected(null)} />`}
    </div>
    <div class="legend">
      ${Object.entries(OUTCOME_COLORS).map(([name, color]) => html`<span><i style=${`background:${color}`}></i>${name}</span>`)}
      <span>dashed node: inferred · dashed edge: queue</span>
    </div>
    <div class="tables">
      <table class="list" data-testid="map-nodes">
        <thead><tr><th>node</th><th>type</th><th>requests</th><th>faults</th><th>p50</th><th>p99</th></tr></thead>
        <tbody>
          ${map.nodes.map(
            (node, index) => html`<tr ...${row('node', index)} data-testid="map-node" data-name=${node.name} data-type=${node.type}>
              <td>${node.name}</td><td>${node.type}</td><td>${node.stats?.total ?? ''}</td>
              <td>${node.stats?.faults ?? ''}</td>
              <td>${node.stats ? formatSeconds(node.stats.latency.p50) : ''}</td>
              <td>${node.stats ? formatSeconds(node.stats.latency.p99) : ''}</td></tr>`,
          )}
        </tbody>
      </table>
      <table class="list" data-testid="map-edges">
        <thead><tr><th>edge</th><th>requests/min</th><th>faults</th><th>p50</th><th>p99</th></tr></thead>
        <tbody>
          ${map.edges.map(
            (edge, index) => html`<tr ...${row('edge', index)} data-testid="map-edge" data-client=${edge.client} data-server=${edge.server}>
              <td>${edge.client} → ${edge.server}</td><td>${perMinute(edge.stats.total, span)}</td>
              <td>${edge.stats.faults}</td><td>${formatSeconds(edge.stats.latency.p50)}</td>
              <td>${formatSeconds(edge.stats.latency.p99)}</td></tr>`,
          )}
        </tbody>
      </table>
    </div>
  </section>`;
}
