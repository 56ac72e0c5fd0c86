// TraceQL metrics: a query (`{status=error} | rate() by (resource.service.name)`)
// drawn as a time series chart, one line per series, with exemplars as
// dots that open their trace. /v1/traceql/query_range answers it as
// Tempo's /api/metrics/query_range does.

import { useEffect, useState } from 'preact/hooks';
import { html } from './html.js';
import { PATHS, getJson } from './api.js';
import { formatUnixSeconds, serviceColor, windowOf } from './format.js';
import { navigate, windowParams } from './route.js';

/** Queries a click away: rate, errors and latency quantiles by service. */
export const PRESETS = [
  ['rate', '{} | rate() by (resource.service.name)'],
  ['errors', '{ status = error } | rate() by (resource.service.name)'],
  ['error ratio', '({ status = error } | count_over_time()) / ({} | count_over_time())'],
  ['p50 / p90 / p99', '{ kind = server } | quantile_over_time(duration, .5, .9, .99)'],
];

/** Whether `query` is a metrics query (Grafana's own test). */
export const isMetricsQuery = (query) =>
  /\|\s*(rate|count_over_time|avg_over_time|sum_over_time|max_over_time|min_over_time|quantile_over_time|histogram_over_time|compare)\s*\(/.test(
    query || '',
  );

/** A label value as text. */
function labelText(value) {
  if (!value) return '';
  for (const kind of ['stringValue', 'intValue', 'doubleValue', 'boolValue']) {
    if (kind in value) return String(value[kind]);
  }
  return '';
}

/** A series' name: its labels, `__name__` alone when it has no others. */
export function seriesName(series) {
  const labels = series.labels || [];
  const named = labels.filter((label) => label.key !== '__name__');
  const shown = named.length ? named : labels;
  return shown.map((label) => (label.key === '__name__' ? labelText(label.value) : `${label.key}=${labelText(label.value)}`)).join(', ');
}

/** Samples as [seconds, value] (Tempo leaves zero values out). */
export const points = (series) =>
  (series.samples || []).map((sample) => [Number(sample.timestampMs) / 1000, Number(sample.value ?? 0)]);

const WIDTH = 900;
const HEIGHT = 260;
const PAD = { left: 56, right: 12, top: 12, bottom: 28 };

function Chart({ answer, params }) {
  const series = answer.series || [];
  const all = series.flatMap(points);
  if (all.length === 0) return html`<p class="empty" data-testid="metrics-empty">No spans match in this window.</p>`;
  const xs = all.map(([x]) => x);
  const [minX, maxX] = [Math.min(...xs), Math.max(...xs)];
  const maxY = Math.max(...all.map(([, y]) => y), ...series.flatMap((one) => (one.exemplars || []).map((e) => Number(e.value ?? 0))), 1e-12);
  const x = (seconds) => PAD.left + ((seconds - minX) / Math.max(maxX - minX, 1)) * (WIDTH - PAD.left - PAD.right);
  const y = (value) => HEIGHT - PAD.bottom - (value / maxY) * (HEIGHT - PAD.top - PAD.bottom);
  const ticks = [0, 0.5, 1].map((fraction) => fraction * maxY);
  const open = (exemplar) => {
    const trace = (exemplar.labels || []).find((label) => label.key === 'trace:id');
    if (trace) navigate('trace', windowParams(params), labelText(trace.value));
  };
  return html`<div class="metrics-chart">
    <svg viewBox=${`0 0 ${WIDTH} ${HEIGHT}`} role="img" aria-label="metrics chart" data-testid="metrics-chart">
      ${ticks.map(
        (tick) => html`<g><line x1=${PAD.left} x2=${WIDTH - PAD.right} y1=${y(tick)} y2=${y(tick)} class="grid" />
          <text x=${PAD.left - 6} y=${y(tick) + 4} text-anchor="end" class="axis">${Number(tick.toPrecision(3))}</text></g>`,
      )}
      <text x=${PAD.left} y=${HEIGHT - 8} class="axis">${formatUnixSeconds(minX)}</text>
      <text x=${WIDTH - PAD.right} y=${HEIGHT - 8} text-anchor="end" class="axis">${formatUnixSeconds(maxX)}</text>
      ${series.map((one) => {
        const color = serviceColor(seriesName(one));
        const line = points(one).map(([px, py]) => `${x(px).toFixed(1)},${y(py).toFixed(1)}`).join(' ');
        return html`<g data-testid="metrics-series" data-name=${seriesName(one)}>
          <polyline points=${line} fill="none" stroke=${color} stroke-width="1.5" />
          ${(one.exemplars || []).map(
            (exemplar) => html`<circle data-testid="exemplar" cx=${x(Number(exemplar.timestampMs) / 1000)} cy=${y(Number(exemplar.value ?? 0))}
              r="4" fill=${color} class="exemplar" onClick=${() => open(exemplar)}>
              <title>exemplar: open the trace</title></circle>`,
          )}
        </g>`;
      })}
    </svg>
    <ul class="legend">
      ${series.map((one) => html`<li><i class="swatch" style=${`background:${serviceColor(seriesName(one))}`}></i>${seriesName(one)}</li>`)}
    </ul>
  </div>`;
}

export function MetricsView({ route }) {
  const { params } = route;
  const span = windowOf(params);
  const [query, setQuery] = useState(params.get('q') || PRESETS[0][1]);
  const [step, setStep] = useState(params.get('step') || '');
  const [answer, setAnswer] = useState(null);
  const [error, setError] = useState(null);

  useEffect(() => {
    const abort = new AbortController();
    getJson(
      PATHS.queryRange,
      {},
      { q: params.get('q') || PRESETS[0][1], start: span.start, end: span.end, step: params.get('step') },
      abort.signal,
    )
      .then(setAnswer)
      .catch((failure) => abort.signal.aborted || setError(failure.message));
    return () => abort.abort();
  }, []);

  const run = (text) => navigate('metrics', { ...windowParams(params), q: text, step });
  const submit = (event) => {
    event.preventDefault();
    run(query);
  };
  return html`<section class="metrics-view">
    <form class="search-form" onSubmit=${submit} data-testid="metrics-form">
      <div class="row">
        ${PRESETS.map(([label, text]) => html`<button type="button" onClick=${() => run(text)}>${label}</button>`)}
      </div>
      <div class="row query-row">
        <input id="query" name="q" class="query mono" value=${query} aria-label="metrics query"
          onInput=${(event) => setQuery(event.target.value)} />
        <label>step <input name="step" value=${step} placeholder="auto" size="6"
          onInput=${(event) => setStep(event.target.value)} /></label>
        <button type="submit" class="primary">Run</button>
      </div>
    </form>
    ${error && html`<p class="error" data-testid="metrics-error">${error}</p>`}
    ${!error && !answer && html`<p class="loading">Computing…</p>`}
    ${answer && html`<${Chart} answer=${answer} params=${params} />`}
  </section>`;
}
