// Trace search: a form (service, operation, tags, duration range, status)
// that writes a TraceQL query or an X-Ray filter expression into the query
// box, where it can be edited or replaced by one typed in; /v1/search runs
// it. Results come newest first, a page at a time; every search is a URL.

import { useEffect, useState } from 'preact/hooks';
import { html } from './html.js';
import { PATHS, getJson, getText } from './api.js';
import { isMetricsQuery } from './metrics.js';
import { formatInstant, formatNanos, parseDuration, serviceColor, windowOf } from './format.js';
import { link, navigate, windowParams } from './route.js';

const STATUSES = {
  traceql: ['ok', 'error', 'unset'],
  xray: ['ok', 'error', 'fault', 'throttle'],
};

const FIELDS = ['service', 'operation', 'tags', 'min', 'max', 'status'];

const quote = (text) => `"${String(text).replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;

/** `key=value` pairs (values may be quoted) as [key, literal] pairs. */
export function parseTags(text) {
  const tags = [];
  const pattern = /([\w.\-:/]+)\s*=\s*("((?:[^"\\]|\\.)*)"|\S+)/g;
  for (const match of (text || '').matchAll(pattern)) {
    const raw = match[3] !== undefined ? match[3].replace(/\\(.)/g, '$1') : match[2];
    const literal =
      match[3] === undefined && /^(-?\d+(\.\d+)?|true|false)$/.test(raw) ? raw : quote(raw);
    tags.push([match[1], literal]);
  }
  return tags;
}

/** The expression the form's fields stand for, in `lang`. */
export function buildQuery(lang, fields) {
  const tags = parseTags(fields.tags);
  if (lang === 'xray') {
    const terms = [];
    if (fields.service) terms.push(`service(${quote(fields.service)})`);
    if (fields.operation) terms.push(`name = ${quote(fields.operation)}`);
    for (const [key, literal] of tags) terms.push(`annotation.${key} = ${literal}`);
    const min = parseDuration(fields.min);
    const max = parseDuration(fields.max);
    if (min !== null) terms.push(`duration >= ${min}`);
    if (max !== null) terms.push(`duration <= ${max}`);
    if (fields.status) terms.push(fields.status);
    return terms.join(' AND ');
  }
  const conditions = [];
  if (fields.service) conditions.push(`resource.service.name = ${quote(fields.service)}`);
  if (fields.operation) conditions.push(`name = ${quote(fields.operation)}`);
  for (const [key, literal] of tags) conditions.push(`.${key} = ${literal}`);
  if (parseDuration(fields.min) !== null) conditions.push(`duration >= ${fields.min.trim()}`);
  if (parseDuration(fields.max) !== null) conditions.push(`duration <= ${fields.max.trim()}`);
  if (fields.status) conditions.push(`status = ${fields.status}`);
  return conditions.length ? `{ ${conditions.join(' && ')} }` : '{}';
}

function Outcomes({ trace }) {
  return html`<span class="outcomes">
    ${trace.faults > 0 && html`<span class="badge fault" title="spans with faults (5xx)">${trace.faults} fault</span>`}
    ${trace.errors > 0 && html`<span class="badge error" title="spans with errors (4xx)">${trace.errors} error</span>`}
    ${trace.throttles > 0 && html`<span class="badge throttle" title="throttled spans (429)">${trace.throttles} throttle</span>`}
    ${trace.in_progress && html`<span class="badge partial" title="some span is still in progress">partial</span>`}
  </span>`;
}

function Results({ answer, params, selected }) {
  if (answer.traces.length === 0) {
    return html`<p class="empty" data-testid="search-empty" data-lang=${answer.language} data-q=${params.get('q') ?? ''}>No trace matches in this window.</p>`;
  }
  const longest = Math.max(...answer.traces.map((trace) => trace.duration_ns), 1);
  return html`<table class="list results" data-testid="search-results" data-lang=${answer.language} data-q=${params.get('q') ?? ''}>
    <thead><tr><th>started</th><th>root</th><th>duration</th><th>spans</th><th>services</th><th></th></tr></thead>
    <tbody>
      ${answer.traces.map(
        (trace, index) => html`<tr data-testid="search-result" data-trace-id=${trace.trace_id}
            class=${index === selected ? 'selected' : ''}
            onClick=${() => navigate('trace', windowParams(params), trace.trace_id)}>
          <td class="nowrap">${formatInstant(trace.start_unix_nano)}</td>
          <td>
            <a href=${link('trace', {}, trace.trace_id)} onClick=${(event) => event.stopPropagation()}>
              <i class="swatch" style=${`background:${serviceColor(trace.root_service)}`}></i>
              ${trace.root_service}: ${trace.root_name}</a>
            <div class="muted mono">${trace.trace_id}</div>
          </td>
          <td class="nowrap">
            <span class="duration-bar" style=${`width:${Math.max(2, (trace.duration_ns / longest) * 80)}px`}></span>
            ${formatNanos(trace.duration_ns)}
          </td>
          <td data-testid="span-count">${trace.span_count}</td>
          <td>${trace.services.map((name) => html`<span class="service-tag" style=${`border-color:${serviceColor(name)}`}>${name}</span>`)}</td>
          <td><${Outcomes} trace=${trace} /></td>
        </tr>`,
      )}
    </tbody>
  </table>`;
}

export function SearchView({ route }) {
  const { params } = route;
  const span = windowOf(params);
  const lang = params.get('lang') === 'xray' ? 'xray' : 'traceql';
  const initialFields = Object.fromEntries(FIELDS.map((name) => [name, params.get(name) || '']));
  const [form, setForm] = useState({ lang, fields: initialFields, query: params.get('q') ?? '' });
  const [services, setServices] = useState([]);
  const [answer, setAnswer] = useState(null);
  const [error, setError] = useState(null);
  const [selected, setSelected] = useState(-1);
  const [plan, setPlan] = useState(null);
  const page = Number(params.get('n') || 1);

  useEffect(() => {
    getJson(PATHS.services, {}, { start: span.start, end: span.end })
      .then((found) => setServices(found.services))
      .catch(() => setServices([]));
    const abort = new AbortController();
    getJson(
      PATHS.search,
      {},
      { q: params.get('q') ?? '', lang, start: span.start, end: span.end, limit: params.get('limit'), page: params.get('page') },
      abort.signal,
    )
      .then(setAnswer)
      .catch((failure) => abort.signal.aborted || setError(failure.message));
    return () => abort.abort();
  }, []);

  // j/k/Enter move through the results; ] is the next page, [ goes back.
  useEffect(() => {
    const onKey = (event) => {
      if (/^(INPUT|TEXTAREA|SELECT)$/.test(event.target.tagName) || !answer) return;
      const count = answer.traces.length;
      if (event.key === 'j') setSelected((index) => Math.min(count - 1, index + 1));
      else if (event.key === 'k') setSelected((index) => Math.max(0, index - 1));
      else if (event.key === 'Enter' && selected >= 0 && answer.traces[selected]) {
        navigate('trace', windowParams(params), answer.traces[selected].trace_id);
      } else if (event.key === ']' && answer.next_page) older();
      else if (event.key === '[' && page > 1) history.back();
    };
    window.addEventListener('keydown', onKey);
    return () => window.removeEventListener('keydown', onKey);
  }, [answer, selected]);

  const setField = (name, value) => {
    const fields = { ...form.fields, [name]: value };
    if (name === 'service') fields.operation = '';
    setForm({ ...form, fields, query: buildQuery(form.lang, fields) });
  };
  const setLang = (next) => {
    const status = STATUSES[next].includes(form.fields.status) ? form.fields.status : '';
    const fields = { ...form.fields, status };
    setForm({ lang: next, fields, query: buildQuery(next, fields) });
  };
  // A search pins the window's end, so its pages hold still while new
  // traces arrive.
  const pinned = () => (span.pinned ? { start: params.get('start'), end: params.get('end') } : { start: span.start, end: span.end });
  const submit = (event) => {
    event.preventDefault();
    // A metrics query (`{...} | rate()`) is drawn, not listed.
    if (form.lang === 'traceql' && isMetricsQuery(form.query)) {
      navigate('metrics', { ...windowParams(params), q: form.query });
      return;
    }
    navigate('search', { ...windowParams(params), limit: params.get('limit'), lang: form.lang, q: form.query, ...form.fields });
  };
  const older = () => {
    const next = Object.fromEntries(params);
    delete next.range;
    navigate('search', { ...next, ...pinned(), page: answer.next_page, n: page + 1 });
  };
  const operations = services.find((entry) => entry.name === form.fields.service)?.operations ?? [];
  const field = (name, label, placeholder) => html`<label>${label}
    <input name=${name} value=${form.fields[name]} placeholder=${placeholder}
      onInput=${(event) => setField(name, event.target.value)} /></label>`;

  return html`<section class="search-view">
    <form class="search-form" onSubmit=${submit} data-testid="search-form">
      <div class="row">
        <label>service
          <select name="service" onChange=${(event) => setField('service', event.target.value)}>
            <option value="" selected=${!form.fields.service}>any</option>
            ${services.map((entry) => html`<option value=${entry.name} selected=${entry.name === form.fields.service}>${entry.name}</option>`)}
            ${form.fields.service && !services.some((entry) => entry.name === form.fields.service) &&
            html`<option value=${form.fields.service} selected>${form.fields.service}</option>`}
          </select>
        </label>
        <label>operation
          <select name="operation" disabled=${!form.fields.service}
            onChange=${(event) => setField('operation', event.target.value)}>
            <option value="" selected=${!form.fields.operation}>any</option>
            ${operations.map((name) => html`<option value=${name} selected=${name === form.fields.operation}>${name}</option>`)}
          </select>
        </label>
        ${field('tags', form.lang === 'xray' ? 'annotations' : 'tags', form.lang === 'xray' ? 'customer=gold' : 'http.route="/orders"')}
        ${field('min', 'min duration', '100ms')}
        ${field('max', 'max duration', '5s')}
        <label>status
          <select name="status" onChange=${(event) => setField('status', event.target.value)}>
            <option value="" selected=${!form.fields.status}>any</option>
            ${STATUSES[form.lang].map((status) => html`<option value=${status} selected=${status === form.fields.status}>${status}</option>`)}
          </select>
        </label>
      </div>
      <div class="row query-row">
        <div class="lang" role="radiogroup" aria-label="query language">
          ${[['traceql', 'TraceQL'], ['xray', 'X-Ray filter']].map(
            ([value, label]) => html`<label class=${form.lang === value ? 'on' : ''}>
              <input type="radio" name="lang" value=${value} checked=${form.lang === value}
                onChange=${() => setLang(value)} />${label}</label>`,
          )}
        </div>
        <input id="query" name="q" class="query mono" value=${form.query} aria-label="query"
          placeholder=${form.lang === 'xray' ? 'service("orders") AND fault' : '{ resource.service.name = "orders" && status = error }'}
          onInput=${(event) => setForm({ ...form, query: event.target.value })} />
        <button type="submit" class="primary">Search</button>
        ${form.lang === 'traceql' &&
        html`<button type="button" data-testid="explain-button" title="how the query runs: the plan DataFusion prunes with"
          onClick=${() =>
            getText(PATHS.explain, {}, { q: form.query, start: span.start, end: span.end })
              .then(setPlan)
              .catch((failure) => setPlan(failure.message))}>Explain</button>`}
      </div>
    </form>
    ${plan && html`<pre class="plan mono" data-testid="explain">${plan}</pre>`}
    ${error && html`<p class="error" data-testid="search-error">${error}</p>`}
    ${!error && !answer && html`<p class="loading">Searching…</p>`}
    ${answer &&
    html`<div class="result-bar">
        <span>${answer.traces.length} traces${page > 1 ? ` · page ${page}` : ''} · ${answer.inspected_traces} inspected</span>
        <span class="pager">
          ${page > 1 && html`<button onClick=${() => history.back()} title="previous page ([)">← newer</button>`}
          ${answer.next_page && html`<button onClick=${older} data-testid="next-page" title="next page (])">older →</button>`}
        </span>
      </div>
      <${Results} answer=${answer} params=${params} selected=${selected} />`}
  </section>`;
}
