// Latency histograms: a log-scale bar chart of /v1/histogram's
// distribution with p50/p90/p99 marked, and the view that picks what to
// chart (a service, one of its operations, or a service-map edge).

import { useEffect, useState } from 'preact/hooks';
import { html } from './html.js';
import { PATHS, getJson } from './api.js';
import { OUTCOME_COLORS, formatSeconds, windowOf } from './format.js';
import { link, navigate, windowParams } from './route.js';

const BINS = 40;
const WIDTH = 640;
const HEIGHT = 200;
const PAD = { left: 44, right: 16, top: 46, bottom: 34 };

/** Sums `distribution` ([{value, count}], seconds) into log-spaced bins. */
export function bin(distribution) {
  const values = distribution.filter((point) => point.count > 0 && point.value > 0);
  if (values.length === 0) return { bins: [], low: 0, high: 0 };
  let low = Math.log10(values[0].value);
  let high = Math.log10(values[values.length - 1].value);
  if (high - low < 0.5) {
    low -= 0.25;
    high += 0.25;
  }
  // A margin on both sides, so the extremes and their marks stay inside.
  const margin = (high - low) * 0.04;
  low -= margin;
  high += margin;
  const step = (high - low) / BINS;
  const bins = Array.from({ length: BINS }, (_, index) => ({
    from: 10 ** (low + index * step),
    to: 10 ** (low + (index + 1) * step),
    count: 0,
  }));
  for (const point of values) {
    const index = Math.min(BINS - 1, Math.max(0, Math.floor((Math.log10(point.value) - low) / step)));
    bins[index].count += point.count;
  }
  return { bins, low, high };
}

/** The chart of one /v1/histogram answer. */
export function HistogramChart({ answer }) {
  const { bins, low, high } = bin(answer.distribution);
  if (answer.count === 0 || bins.length === 0) {
    return html`<p class="empty" data-testid="histogram-empty">No requests in this window.</p>`;
  }
  const plotWidth = WIDTH - PAD.left - PAD.right;
  const plotHeight = HEIGHT - PAD.top - PAD.bottom;
  const x = (seconds) => PAD.left + ((Math.log10(seconds) - low) / (high - low)) * plotWidth;
  // Counts on a log scale: one slow request stays visible next to
  // thousands of fast ones.
  const most = Math.max(...bins.map((entry) => entry.count));
  const y = (count) => PAD.top + plotHeight - (Math.log10(1 + count) / Math.log10(1 + most)) * plotHeight;
  const ticks = [];
  for (let power = Math.ceil(low); power <= Math.floor(high); power += 1) ticks.push(10 ** power);
  const marks = [
    ['p50', answer.quantiles.p50, '#2b6cb0'],
    ['p90', answer.quantiles.p90, '#b7791f'],
    ['p99', answer.quantiles.p99, '#c53030'],
  ].filter(([, value]) => value > 0);
  return html`<figure class="histogram" data-testid="histogram">
    <svg viewBox="0 0 ${WIDTH} ${HEIGHT}" role="img"
      aria-label=${`latency histogram of ${answer.count} requests, p50 ${formatSeconds(answer.quantiles.p50)}, p99 ${formatSeconds(answer.quantiles.p99)}`}>
      ${bins.map(
        (entry) =>
          entry.count > 0 &&
          html`<rect class="bar" data-testid="histogram-bar" x=${x(entry.from) + 0.5}
            width=${Math.max(1, x(entry.to) - x(entry.from) - 1)} y=${y(entry.count)}
            height=${Math.max(1, PAD.top + plotHeight - y(entry.count))}>
            <title>${formatSeconds(entry.from)} – ${formatSeconds(entry.to)}: ${entry.count}</title>
          </rect>`,
      )}
      <line x1=${PAD.left} x2=${WIDTH - PAD.right} y1=${PAD.top + plotHeight} y2=${PAD.top + plotHeight} class="axis" />
      ${ticks.map(
        (tick) => html`<g>
          <line x1=${x(tick)} x2=${x(tick)} y1=${PAD.top + plotHeight} y2=${PAD.top + plotHeight + 4} class="axis" />
          <text x=${x(tick)} y=${HEIGHT - 16} text-anchor="middle">${formatSeconds(tick)}</text>
        </g>`,
      )}
      <text x=${PAD.left - 6} y=${PAD.top + 4} text-anchor="end">${most}</text>
      <text x=${PAD.left - 6} y=${PAD.top + plotHeight} text-anchor="end">1</text>
      ${marks.map(
        ([label, value, color], index) => html`<g class="mark" data-testid=${`mark-${label}`}>
          <line x1=${x(value)} x2=${x(value)} y1=${8 + index * 13} y2=${PAD.top + plotHeight} stroke=${color} stroke-dasharray="4 3" />
          <text x=${x(value) + (x(value) > WIDTH * 0.8 ? -3 : 3)} y=${14 + index * 13} fill=${color}
            text-anchor=${x(value) > WIDTH * 0.8 ? 'end' : 'start'}>${label} ${formatSeconds(value)}</text>
        </g>`,
      )}
    </svg>
    <figcaption>
      <span>${answer.count} requests</span>
      ${marks.map(([label, value, color]) => html`<span style=${`color:${color}`}>${label} ${formatSeconds(value)}</span>`)}
      <span>max ${formatSeconds(answer.quantiles.max)}</span>
      ${Object.entries(answer.outcomes || {})
        .filter(([name, count]) => name !== 'ok' && count > 0)
        .map(([name, count]) => html`<span style=${`color:${OUTCOME_COLORS[name]}`}>${count} ${name}</span>`)}
    </figcaption>
  </figure>`;
}

/** Fetches and charts the histogram of `of` ({service, operation} or
 * {client, server}) over `window`. */
export function Histogram({ of, window: span }) {
  const [state, setState] = useState({ loading: true });
  const key = JSON.stringify([of, span]);
  useEffect(() => {
    const abort = new AbortController();
    setState({ loading: true });
    getJson(PATHS.histogram, {}, { ...of, start: span.start, end: span.end }, abort.signal)
      .then((answer) => setState({ answer }))
      .catch((error) => abort.signal.aborted || setState({ error: error.message }));
    return () => abort.abort();
  }, [key]);
  if (state.error) return html`<p class="error">${state.error}</p>`;
  if (state.loading) return html`<p class="loading">Loading histogram…</p>`;
  return html`<${HistogramChart} answer=${state.answer} />`;
}

/** `#/histogram`: choose a service and operation (or arrive from an edge). */
export function HistogramView({ route }) {
  const { params } = route;
  const span = windowOf(params);
  const [services, setServices] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    getJson(PATHS.services, {}, { start: span.start, end: span.end })
      .then((answer) => setServices(answer.services))
      .catch((failure) => setError(failure.message));
  }, []);
  const client = params.get('client');
  const server = params.get('server');
  const service = params.get('service') || '';
  const operation = params.get('operation') || '';
  const edge = Boolean(server);
  const of = edge ? { client, server } : service ? { service, operation } : null;
  const edgeName = client ? `${client} → ${server}` : `calls into ${server}`;
  const tracesQuery = edge
    ? client
      ? `edge("${client}", "${server}")`
      : `service("${server}")`
    : `service("${service}")`;
  const go = (next) => navigate('histogram', { ...windowParams(params), ...next });
  const operations = services?.find((entry) => entry.name === service)?.operations ?? [];
  return html`<section class="histogram-view">
    <h1>Latency</h1>
    ${error && html`<p class="error">${error}</p>`}
    <form class="row" onSubmit=${(event) => event.preventDefault()}>
      <label>service
        <select aria-label="service" onChange=${(event) => go({ service: event.target.value })}>
          <option value="" selected=${edge || !service}>${edge ? edgeName : 'choose a service'}</option>
          ${(services || []).map((entry) => html`<option value=${entry.name} selected=${!edge && entry.name === service}>${entry.name}</option>`)}
        </select>
      </label>
      <label>operation
        <select aria-label="operation" disabled=${!service}
          onChange=${(event) => go({ service, operation: event.target.value })}>
          <option value="" selected=${!operation}>entry spans (requests it served)</option>
          ${operations.map((name) => html`<option value=${name} selected=${name === operation}>${name}</option>`)}
        </select>
      </label>
    </form>
    ${of
      ? html`<h2>${edge ? edgeName : operation ? `${service}: ${operation}` : service}</h2>
          <${Histogram} of=${of} window=${span} />
          <p><a href=${link('search', { ...windowParams(params), lang: 'xray', q: tracesQuery })}>
            Traces of ${edge && client ? 'this edge' : 'this service'}</a></p>`
      : html`<p class="empty">Choose a service, or click a node or edge on the <a href=${link('map', windowParams(params))}>service map</a>.</p>`}
  </section>`;
}
