// Drives the web UI in headless Chromium (playwright-core, Debian's
// chromium) against a running tracelake whose data the caller knows:
// the service map shows the expected nodes and edges, a node's and an
// edge's histograms render, searching (TraceQL and X-Ray filter) finds a
// known trace, its waterfall has as many rows as the trace has spans
// (counted from the Tempo API, not the UI's own), the X-Ray link answers
// segment documents, the latency view renders with p50/p90/p99 marks, and
// the keyboard moves between views. Screenshots go to the artifacts dir.
//
// Input: the JSON in TRACELAKE_UI_TEST:
//   {"url", "nodes": [[name, type]], "edges": [[client, server]],
//    "trace_id", "trace_start": unix seconds, "search_service",
//    "fault_trace_id" (a trace with a fault and its exception), "artifacts": dir}
// Chromium: TRACELAKE_TEST_CHROMIUM, default /usr/bin/chromium.
// Exit status 0 when every check held; a failure names the check.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const test = JSON.parse(process.env.TRACELAKE_UI_TEST || '{}');
const executablePath = process.env.TRACELAKE_TEST_CHROMIUM || '/usr/bin/chromium';
const base = test.url.replace(/\/$/, '');
mkdirSync(test.artifacts, { recursive: true });

/** Prints how long a step took (figures for the README, not a check). */
function timing(what, since) {
  console.log(`timing - ${what}: ${Math.round(performance.now() - since)} ms`);
}

function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
  console.log(`ok - ${message}`);
}

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--disable-dev-shm-usage',
  ],
});
const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
const pageErrors = [];
page.on('pageerror', (error) => pageErrors.push(String(error)));
page.on('console', (message) => {
  if (message.type() === 'error') pageErrors.push(message.text());
});
const shot = (name, fullPage = true) => page.screenshot({ path: join(test.artifacts, `${name}.png`), fullPage });

/** Waits for the search's results and pages on (older) until the known
 * trace is listed: a busy window may hold more than one page. */
async function findKnown(lang, q) {
  const known = `[data-testid=search-result][data-trace-id="${test.trace_id}"]`;
  for (let pages = 0; pages < 10; pages += 1) {
    // The answer to this search, not the one before it.
    await page.waitForFunction(
      ([lang, q]) => {
        const shown = document.querySelector('[data-testid=search-results], [data-testid=search-empty], [data-testid=search-error]');
        return shown && (shown.dataset.testid === 'search-error' || (shown.dataset.lang === lang && shown.dataset.q === q));
      },
      [lang, q],
      { timeout: 30000 },
    );
    if (await page.$(known)) return;
    if (!(await page.isVisible('[data-testid=next-page]'))) break;
    const first = await page.getAttribute('[data-testid=search-result]', 'data-trace-id');
    await page.click('[data-testid=next-page]');
    await page.waitForFunction(
      (id) => document.querySelector('[data-testid=search-result]')?.dataset.traceId !== id,
      first,
      { timeout: 30000 },
    );
  }
  throw new Error(`check failed: the search never lists ${test.trace_id}`);
}

try {
  // --- service map -------------------------------------------------------
  let since = performance.now();
  await page.goto(`${base}/#/map?range=15m`);
  await page.waitForSelector('[data-testid=map-node]', { timeout: 30000 });
  await page.waitForFunction(() => window.tracelakeMap && window.tracelakeMap.nodes().length > 0);
  timing('page load to service map drawn (15 min window)', since);
  const rows = await page.$$eval('[data-testid=map-node]', (nodes) =>
    nodes.map((node) => [node.dataset.name, node.dataset.type]),
  );
  for (const [name, type] of test.nodes) {
    check(rows.some(([n, t]) => n === name && t === type), `the map lists node ${name} (${type})`);
  }
  const edgeRows = await page.$$eval('[data-testid=map-edge]', (edges) =>
    edges.map((edge) => [edge.dataset.client, edge.dataset.server]),
  );
  for (const [client, server] of test.edges) {
    check(edgeRows.some(([c, s]) => c === client && s === server), `the map lists edge ${client} -> ${server}`);
  }
  const drawn = await page.evaluate(() => ({
    nodes: window.tracelakeMap.nodes().map((node) => node.data('label').split('\n')[0]),
    edges: window.tracelakeMap.edges().length,
  }));
  check(drawn.nodes.length === rows.length, `the graph draws every node (${drawn.nodes.length})`);
  check(drawn.edges === edgeRows.length, `the graph draws every edge (${drawn.edges})`);
  for (const [name] of test.nodes) check(drawn.nodes.includes(name), `the graph draws ${name}`);
  await shot('map');

  // Click a node on the canvas: its details and histogram open.
  const target = test.nodes.find(([, type]) => type === 'AWS::Lambda::Function')[0];
  const position = await page.evaluate((name) => {
    const node = window.tracelakeMap.nodes().filter((each) => each.data('label').split('\n')[0] === name)[0];
    const box = window.tracelakeMap.container().getBoundingClientRect();
    const at = node.renderedPosition();
    return { x: box.left + at.x, y: box.top + at.y };
  }, target);
  await page.mouse.click(position.x, position.y);
  await page.waitForSelector('[data-testid=map-details] h2');
  check((await page.textContent('[data-testid=map-details] h2')) === target, `clicking ${target} opens its details`);
  await page.waitForSelector('[data-testid=map-details] [data-testid=histogram-bar]', { timeout: 20000 });
  for (const mark of ['p50', 'p90', 'p99']) {
    check(await page.isVisible(`[data-testid=map-details] [data-testid=mark-${mark}]`), `the node histogram marks ${mark}`);
  }
  const nodeTraces = await page.getAttribute('[data-testid=node-traces]', 'href');
  check(nodeTraces.includes('service') && nodeTraces.includes(encodeURIComponent(target)), 'the node links to its traces');
  await shot('map-node');

  // An edge, from its row: details, its histogram and a traces link.
  const [edgeClient, edgeServer] = test.edges.find(([client]) => client !== 'client');
  await page.click(`[data-testid=map-edge][data-client="${edgeClient}"][data-server="${edgeServer}"]`);
  await page.waitForSelector('[data-testid=edge-traces]');
  await page.waitForSelector('[data-testid=map-details] [data-testid=histogram-bar]', { timeout: 20000 });
  check(
    (await page.textContent('[data-testid=map-details] h2')) === `${edgeClient} → ${edgeServer}`,
    'clicking an edge row opens the edge',
  );
  const selectedEdges = await page.evaluate(() => window.tracelakeMap.edges(':selected').length);
  check(selectedEdges === 1, 'the edge is selected on the graph too');
  await shot('map-edge');

  // --- search ----------------------------------------------------------
  const window_ = `start=${Math.floor(test.trace_start) - 2}&end=${Math.ceil(test.trace_start) + 2}`;
  const around = `${window_}&limit=100`;
  await page.goto(`${base}/#/search?${around}`);
  await page.waitForSelector('[data-testid=search-results], [data-testid=search-empty]');
  await page.waitForFunction(() => document.querySelectorAll('select[name=service] option').length > 1);
  const service = test.search_service;
  await page.selectOption('select[name=service]', service);
  const traceql = await page.inputValue('#query');
  check(traceql === `{ resource.service.name = "${service}" }`, `the form writes TraceQL: ${traceql}`);
  since = performance.now();
  await page.click('button[type=submit]');
  await page.waitForFunction(() => location.hash.includes('q='));
  const known = `[data-testid=search-result][data-trace-id="${test.trace_id}"]`;
  await findKnown('traceql', traceql);
  timing('TraceQL search to results', since);
  check(true, `TraceQL search finds trace ${test.trace_id}`);
  const listed = await page.$$eval('[data-testid=search-result]', (rows) => rows.map((row) => row.textContent));
  check(listed.every((text) => text.includes(service)), `all ${listed.length} results pass through ${service}`);
  await shot('search-traceql', false);

  await page.click('text=X-Ray filter');
  const xray = await page.inputValue('#query');
  check(xray === `service("${service}")`, `the form writes an X-Ray filter: ${xray}`);
  const typed = `${xray} AND duration >= 0`;
  await page.fill('#query', typed);
  await page.click('button[type=submit]');
  await findKnown('xray', typed);
  check(true, 'an X-Ray filter typed in finds the same trace');
  const searchUrl = page.url();
  const searchPage = await page.evaluate(() => new URLSearchParams(location.hash.split('?')[1]).get('n') || '1');

  // Deep link: the same URL in a fresh page answers the same search.
  const second = await browser.newPage();
  await second.goto(searchUrl);
  await second.waitForSelector(known, { timeout: 30000 });
  check(true, `the search URL (page ${searchPage}) is a deep link`);
  await second.close();

  // Paging: one trace a page, the next page is another trace.
  await page.goto(`${base}/#/search?${window_}&limit=1`);
  await page.waitForSelector('[data-testid=search-result]');
  const first = await page.getAttribute('[data-testid=search-result]', 'data-trace-id');
  if (await page.isVisible('[data-testid=next-page]')) {
    await page.click('[data-testid=next-page]');
    await page.waitForFunction(
      (id) => {
        const row = document.querySelector('[data-testid=search-result]');
        return row && row.dataset.traceId !== id;
      },
      first,
      { timeout: 30000 },
    );
    check(true, 'the next page holds the next trace');
  }

  // --- trace view ------------------------------------------------------
  await page.goto(`${base}/#/search?${around}&lang=xray&q=${encodeURIComponent(`service("${service}")`)}`);
  await findKnown('xray', `service("${service}")`);
  since = performance.now();
  await page.click(known);
  await page.waitForSelector('[data-testid=span-row]');
  timing('result click to waterfall', since);
  check(page.url().includes(`#/trace/${test.trace_id}`), 'a result opens its trace at its own URL');
  const tempo = await page.evaluate(async (id) => {
    const response = await fetch(`/api/v2/traces/${id}`);
    const body = await response.json();
    const ids = new Set();
    for (const resource of body.trace.resourceSpans) {
      for (const scope of resource.scopeSpans) for (const span of scope.spans) ids.add(span.spanId);
    }
    return ids.size;
  }, test.trace_id);
  const spanRows = await page.$$eval('[data-testid=span-row]', (all) => all.length);
  check(spanRows === tempo, `the waterfall shows all ${tempo} spans the Tempo API holds (${spanRows})`);
  const depths = await page.$$eval('[data-testid=span-row]', (all) => all.map((row) => Number(row.getAttribute('aria-level'))));
  check(Math.max(...depths) >= 3, `spans nest (deepest level ${Math.max(...depths)})`);
  await page.click('[data-testid=span-row] >> nth=1');
  await page.waitForSelector('[data-testid=span-details]');
  check((await page.textContent('[data-testid=span-details]')).includes('span id'), 'a span opens its details');
  const xrayHref = await page.getAttribute('[data-testid=xray-link]', 'href');
  const segments = await page.evaluate(async (href) => (await (await fetch(href)).json()).Segments.length, xrayHref);
  check(segments > 0, `the X-Ray link answers ${segments} segment documents`);
  await shot('trace');

  // A failed trace: faults marked in the waterfall, the exception shown.
  await page.goto(`${base}/#/trace/${test.fault_trace_id}`);
  await page.waitForSelector('[data-testid=span-row]');
  const marks = await page.$$('[data-testid=span-mark]');
  check(marks.length > 0, `the failed trace marks ${marks.length} spans`);
  await page.click('[data-testid=span-row]:has([data-testid=span-mark]:text("fault")) >> nth=-1');
  await page.waitForSelector('[data-testid=span-details] [data-testid=exception]');
  const exception = await page.textContent('[data-testid=exception]');
  const recorded = await page.evaluate(async (id) => {
    const trace = await (await fetch(`/v1/traces/${id}`)).json();
    return trace.spans.flatMap((span) => span.events.filter((event) => event.name === 'exception'))
      .map((event) => `${event.attributes['exception.type']}: ${event.attributes['exception.message']}`);
  }, test.fault_trace_id);
  check(recorded.some((text) => exception.includes(text)), `the exception is shown: ${exception.trim()}`);
  await shot('trace-fault', false);

  // Keyboard: j moves the selection, Escape closes details, m goes to the map.
  await page.keyboard.press('Escape');
  await page.keyboard.press('j');
  await page.keyboard.press('m');
  await page.waitForFunction(() => location.hash.startsWith('#/map'));
  check(true, 'the m key opens the map');
  await page.keyboard.press('/');
  await page.waitForFunction(() => location.hash.startsWith('#/search') && document.activeElement?.id === 'query');
  check(true, 'the / key focuses the search box');

  // --- latency histogram ------------------------------------------------
  await page.goto(`${base}/#/histogram?range=15m&service=${encodeURIComponent(target)}`);
  await page.waitForSelector('[data-testid=histogram] [data-testid=histogram-bar]', { timeout: 20000 });
  for (const mark of ['p50', 'p90', 'p99']) {
    check(await page.isVisible(`[data-testid=histogram] [data-testid=mark-${mark}]`), `the latency view marks ${mark}`);
  }
  const bars = await page.$$eval('[data-testid=histogram-bar]', (all) => all.length);
  check(bars > 1, `the histogram draws ${bars} bars`);
  await shot('histogram');

  // A custom window: the picker's from/to pin start and end in the URL.
  await page.selectOption('select[aria-label="time window"]', 'custom');
  await page.click('form.window button[type=submit]');
  await page.waitForFunction(() => /start=\d+&end=\d+/.test(location.hash) || (location.hash.includes('start=') && location.hash.includes('end=')));
  await page.waitForSelector('[data-testid=histogram] [data-testid=histogram-bar]', { timeout: 20000 });
  check(!page.url().includes('range='), 'a custom window pins start and end in the URL');

  // --- TraceQL metrics --------------------------------------------------
  // A metrics query typed in the search box is drawn, one line per series
  // as the Tempo API answers it; an exemplar opens its trace.
  await page.goto(`${base}/#/search?${window_}`);
  const rate = '{} | rate() by (resource.service.name)';
  await page.fill('#query', rate);
  await page.click('[data-testid=explain-button]');
  await page.waitForSelector('[data-testid=explain]');
  check((await page.textContent('[data-testid=explain]')).includes('one scan of spans'), 'Explain shows how the query runs');
  since = performance.now();
  await page.click('button[type=submit].primary');
  await page.waitForSelector('[data-testid=metrics-series]', { timeout: 20000 });
  timing('metrics query to chart', since);
  check(page.url().includes('#/metrics'), 'a metrics query opens the metrics view');
  const lines = await page.$$eval('[data-testid=metrics-series]', (all) => all.map((one) => one.dataset.name));
  const answered = await page.evaluate(async ([q, params]) => {
    const search = new URLSearchParams(params);
    const response = await fetch(`/api/metrics/query_range?q=${encodeURIComponent(q)}&start=${search.get('start')}&end=${search.get('end')}`);
    return (await response.json()).series.length;
  }, [rate, window_]);
  check(lines.length === answered && lines.length > 1, `the chart draws the ${answered} series Tempo's API answers (${lines.join('; ')})`);
  await shot('metrics');
  await page.click('[data-testid=exemplar] >> nth=-1', { force: true });
  await page.waitForSelector('[data-testid=span-row]');
  check(page.url().includes('#/trace/'), 'an exemplar opens its trace');

  check(pageErrors.length === 0, `no errors in the page${pageErrors.length ? `: ${pageErrors.join('; ')}` : ''}`);
  // Last: the browser logs the 400 as an error.
  await page.goto(`${base}/#/metrics?${window_}&q=${encodeURIComponent('{ } | rate( by')}`);
  await page.waitForSelector('[data-testid=metrics-error]');
  check((await page.textContent('[data-testid=metrics-error]')).includes('400'), 'a malformed metrics query shows the server\'s 400');

} catch (error) {
  await shot('failure').catch(() => {});
  console.error(String(error.stack || error));
  process.exitCode = 1;
} finally {
  await browser.close();
}
