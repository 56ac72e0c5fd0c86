// One trace: a waterfall of its spans (children under their parents, bars
// on the trace's timeline, a colour per service, faults, errors and
// throttles marked) and the details of the chosen span. Links to the same
// trace as X-Ray segment documents.

import { useEffect, useState } from 'preact/hooks';
import { html } from './html.js';
import { PATHS, apiUrl, getJson, openJson } from './api.js';
import { formatInstant, formatNanos, serviceColor } from './format.js';
import { link } from './route.js';

/** Spans in waterfall order: depth first, children by start; a span whose
 * parent is missing is a root. Each entry is `{span, depth, children}`. */
export function waterfallRows(spans) {
  const ids = new Set(spans.map((span) => span.span_id));
  const children = new Map();
  const roots = [];
  for (const span of spans) {
    if (span.parent_span_id && ids.has(span.parent_span_id) && span.parent_span_id !== span.span_id) {
      if (!children.has(span.parent_span_id)) children.set(span.parent_span_id, []);
      children.get(span.parent_span_id).push(span);
    } else {
      roots.push(span);
    }
  }
  const byStart = (a, b) => (BigInt(a.start_unix_nano) < BigInt(b.start_unix_nano) ? -1 : BigInt(a.start_unix_nano) > BigInt(b.start_unix_nano) ? 1 : 0);
  const rows = [];
  const seen = new Set();
  const walk = (span, depth) => {
    if (seen.has(span.span_id)) return;
    seen.add(span.span_id);
    const own = (children.get(span.span_id) || []).sort(byStart);
    rows.push({ span, depth, children: own.length });
    for (const child of own) walk(child, depth + 1);
  };
  for (const root of roots.sort(byStart)) walk(root, 0);
  return rows;
}

function outcome(span) {
  if (span.fault) return 'fault';
  if (span.throttle) return 'throttle';
  if (span.error) return 'error';
  if (span.status.code === 'error') return 'fault';
  return '';
}

function Value({ value }) {
  if (value !== null && typeof value === 'object') {
    return html`<pre class="json">${JSON.stringify(value, null, 2)}</pre>`;
  }
  return html`<span class="mono">${String(value)}</span>`;
}

function KeyValues({ title, values }) {
  const entries = Object.entries(values || {});
  if (entries.length === 0) return null;
  return html`<section>
    <h3>${title}</h3>
    <table class="kv">
      ${entries.sort(([a], [b]) => a.localeCompare(b)).map(([key, value]) => html`<tr><th>${key}</th><td><${Value} value=${value} /></td></tr>`)}
    </table>
  </section>`;
}

function SpanDetails({ span, traceStart, onClose }) {
  const offset = BigInt(span.start_unix_nano) - traceStart;
  const exceptions = span.events.filter((event) => event.name === 'exception');
  const events = span.events.filter((event) => event.name !== 'exception');
  return html`<aside class="details span-details" data-testid="span-details">
    <button class="close" aria-label="close" onClick=${onClose}>×</button>
    <h2><i class="swatch" style=${`background:${serviceColor(span.service)}`}></i>${span.service}: ${span.name}</h2>
    <table class="kv">
      <tr><th>span id</th><td class="mono">${span.span_id}</td></tr>
      <tr><th>parent</th><td class="mono">${span.parent_span_id || '(root)'}</td></tr>
      <tr><th>kind</th><td>${span.kind}</td></tr>
      <tr><th>start</th><td>${formatInstant(span.start_unix_nano)} (+${formatNanos(offset)})</td></tr>
      <tr><th>duration</th><td>${formatNanos(span.duration_ns)}${span.in_progress ? ' (in progress)' : ''}</td></tr>
      <tr><th>status</th><td>${span.status.code}${span.status.message ? `: ${span.status.message}` : ''}
        ${['fault', 'error', 'throttle'].filter((flag) => span[flag]).map((flag) => html` <span class=${`badge ${flag}`}>${flag}</span>`)}</td></tr>
      ${span.service_type && html`<tr><th>origin</th><td>${span.service_type}</td></tr>`}
    </table>
    ${span.http && html`<${KeyValues} title="HTTP" values=${span.http} />`}
    ${exceptions.length > 0 &&
    html`<section>
      <h3>Exceptions</h3>
      ${exceptions.map(
        (event) => html`<div class="exception" data-testid="exception">
          <strong>${event.attributes['exception.type'] || 'exception'}</strong>: ${event.attributes['exception.message'] || ''}
          ${event.attributes['exception.stacktrace'] && html`<pre>${event.attributes['exception.stacktrace']}</pre>`}
        </div>`,
      )}
    </section>`}
    <${KeyValues} title="Annotations" values=${span.annotations} />
    <${KeyValues} title="Metadata" values=${span.metadata} />
    <${KeyValues} title="Attributes" values=${span.attributes} />
    ${events.length > 0 &&
    html`<section>
      <h3>Events</h3>
      ${events.map(
        (event) => html`<div class="event"><strong>${event.name}</strong>
          <span class="muted"> +${formatNanos(BigInt(event.time_unix_nano) - traceStart)}</span>
          <${KeyValues} title="" values=${event.attributes} /></div>`,
      )}
    </section>`}
    ${span.links.length > 0 &&
    html`<section>
      <h3>Links</h3>
      ${span.links.map((spanLink) => html`<div><a class="mono" href=${link('trace', {}, spanLink.trace_id)}>${spanLink.trace_id}</a> span ${spanLink.span_id}</div>`)}
    </section>`}
    <${KeyValues} title="Resource" values=${span.resource} />
  </aside>`;
}

function Ticks({ duration }) {
  const ticks = [0, 0.25, 0.5, 0.75, 1];
  return html`<div class="ticks">
    ${ticks.map((at) => html`<span style=${`left:${at * 100}%`}>${formatNanos(Math.round(Number(duration) * at))}</span>`)}
  </div>`;
}

export function TraceView({ route }) {
  const traceId = route.arg;
  const [trace, setTrace] = useState(null);
  const [error, setError] = useState(null);
  const [selected, setSelected] = useState(0);
  const [open, setOpen] = useState(null);
  const [collapsed, setCollapsed] = useState(new Set());

  useEffect(() => {
    const abort = new AbortController();
    getJson(PATHS.trace, { trace_id: traceId }, {}, abort.signal)
      .then(setTrace)
      .catch((failure) => abort.signal.aborted || setError(failure.message));
    return () => abort.abort();
  }, [traceId]);

  const all = trace ? waterfallRows(trace.spans) : [];
  // Rows under a collapsed span are hidden.
  const rows = [];
  let hideBelow = null;
  for (const row of all) {
    if (hideBelow !== null && row.depth > hideBelow) continue;
    hideBelow = collapsed.has(row.span.span_id) ? row.depth : null;
    rows.push(row);
  }

  useEffect(() => {
    const onKey = (event) => {
      if (/^(INPUT|TEXTAREA|SELECT)$/.test(event.target.tagName)) return;
      if (event.key === 'j') setSelected((index) => Math.min(rows.length - 1, index + 1));
      else if (event.key === 'k') setSelected((index) => Math.max(0, index - 1));
      else if (event.key === 'Enter' && rows[selected]) setOpen(rows[selected].span.span_id);
      else if (event.key === 'Escape') setOpen(null);
    };
    window.addEventListener('keydown', onKey);
    return () => window.removeEventListener('keydown', onKey);
  }, [rows.length, selected]);

  if (error) return html`<p class="error" data-testid="trace-error">${error}</p>`;
  if (!trace) return html`<p class="loading">Loading trace ${traceId}…</p>`;
  const traceStart = BigInt(trace.start_unix_nano);
  const duration = BigInt(Math.max(1, trace.duration_ns));
  const percent = (ns) => Number((ns * 100000n) / duration) / 1000;
  const toggle = (spanId) => {
    const next = new Set(collapsed);
    if (next.has(spanId)) next.delete(spanId);
    else next.add(spanId);
    setCollapsed(next);
  };
  const openSpan = trace.spans.find((span) => span.span_id === open);
  const xrayHref = apiUrl(PATHS.traceXray, { trace_id: trace.trace_id });
  return html`<section class="trace-view">
    <div class="trace-head">
      <h1>${all[0] ? `${all[0].span.service}: ${all[0].span.name}` : trace.trace_id}</h1>
      <div class="facts">
        <span class="mono" data-testid="trace-id">${trace.trace_id}</span>
        <span class="mono muted">${trace.xray_trace_id}</span>
        <span>${formatInstant(trace.start_unix_nano)}</span>
        <span>${formatNanos(trace.duration_ns)}</span>
        <span data-testid="trace-span-count">${trace.span_count} spans</span>
        <span>${trace.services.length} services</span>
        <a href=${xrayHref} target="_blank" rel="noopener" data-testid="xray-link"
          onClick=${(event) => openJson(event, PATHS.traceXray, { trace_id: trace.trace_id })}>X-Ray segment documents</a>
      </div>
      <div class="services">
        ${trace.services.map((service) => html`<span class="service-tag" style=${`border-color:${serviceColor(service.name)}`}>${service.name}</span>`)}
      </div>
    </div>
    <div class="waterfall-layout">
      <div class="waterfall" data-testid="waterfall" role="tree" aria-label="spans">
        <div class="waterfall-head"><span class="name-col">span</span><span class="bar-col"><${Ticks} duration=${duration} /></span></div>
        ${rows.map((row, index) => {
          const span = row.span;
          const offset = BigInt(span.start_unix_nano) - traceStart;
          const mark = outcome(span);
          return html`<div role="treeitem" aria-level=${row.depth + 1} aria-selected=${index === selected}
              class=${`span-row ${index === selected ? 'selected' : ''} ${open === span.span_id ? 'open' : ''}`}
              data-testid="span-row" data-span-id=${span.span_id}
              onClick=${() => {
                setSelected(index);
                setOpen(span.span_id);
              }}>
            <span class="name-col" style=${`padding-left:${row.depth * 14 + 4}px`}>
              ${row.children > 0
                ? html`<button class="caret" aria-label=${collapsed.has(span.span_id) ? 'expand' : 'collapse'}
                    onClick=${(event) => {
                      event.stopPropagation();
                      toggle(span.span_id);
                    }}>${collapsed.has(span.span_id) ? '▸' : '▾'}</button>`
                : html`<span class="caret"></span>`}
              <i class="swatch" style=${`background:${serviceColor(span.service)}`}></i>
              <span class="service">${span.service}</span>
              <span class="op">${span.name}</span>
              ${mark && html`<span class=${`badge ${mark}`} data-testid="span-mark">${mark}</span>`}
            </span>
            <span class="bar-col">
              <span class=${`bar ${mark} ${span.in_progress ? 'in-progress' : ''}`}
                style=${`left:${percent(offset)}%;width:${Math.max(0.2, percent(BigInt(span.duration_ns)))}%;background:${serviceColor(span.service)}`}
                title=${`${formatNanos(span.duration_ns)} at +${formatNanos(offset)}`}></span>
              ${(() => {
                // The duration after the bar; near the right edge, before the
                // bar, or inside its end when the bar spans the timeline.
                const start = percent(offset);
                const end = start + percent(BigInt(span.duration_ns));
                let place = `left:${end}%`;
                let inside = false;
                if (end > 85 && start >= 15) place = `right:${100 - start}%;padding-right:4px`;
                else if (end > 85) {
                  place = `right:${Math.max(0, 100 - end)}%;padding-right:4px`;
                  inside = true;
                }
                return html`<span class=${`bar-label ${inside ? 'inside' : ''}`} style=${place}>${formatNanos(span.duration_ns)}</span>`;
              })()}
            </span>
          </div>`;
        })}
      </div>
      ${openSpan && html`<${SpanDetails} span=${openSpan} traceStart=${traceStart} onClose=${() => setOpen(null)} />`}
    </div>
  </section>`;
}
