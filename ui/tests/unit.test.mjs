// The UI's own logic, with Node's test runner (`node --test`): the query
// the search form writes, tag parsing, the waterfall's order, histogram
// binning, windows, durations and API URLs.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { apiUrl } from '../src/api.js';
import { formatNanos, parseDuration, rangeSeconds, windowOf } from '../src/format.js';
import { bin } from '../src/histogram.js';
import { buildQuery, parseTags } from '../src/search.js';
import { waterfallRows } from '../src/trace.js';

test('the form writes TraceQL from every field', () => {
  const fields = { service: 'shop', operation: 'GET /cart', tags: 'customer=gold retries=3 cached=true', min: '10ms', max: '5s', status: 'error' };
  assert.equal(
    buildQuery('traceql', fields),
    '{ resource.service.name = "shop" && name = "GET /cart" && .customer = "gold" && .retries = 3 && .cached = true && duration >= 10ms && duration <= 5s && status = error }',
  );
  assert.equal(buildQuery('traceql', { tags: '', min: '', max: '' }), '{}');
});

test('the form writes an X-Ray filter from every field', () => {
  const fields = { service: 'shop', operation: 'GET /cart', tags: 'customer=gold', min: '250ms', max: '2s', status: 'fault' };
  assert.equal(
    buildQuery('xray', fields),
    'service("shop") AND name = "GET /cart" AND annotation.customer = "gold" AND duration >= 0.25 AND duration <= 2 AND fault',
  );
  assert.equal(buildQuery('xray', {}), '');
  // A duration that does not parse is left out rather than sent.
  assert.equal(buildQuery('xray', { min: 'soon' }), '');
});

test('tags keep quoted values whole and escape quotes', () => {
  assert.deepEqual(parseTags('http.route="/orders/{id}" note="say \\"hi\\"" code=500'), [
    ['http.route', '"/orders/{id}"'],
    ['note', '"say \\"hi\\""'],
    ['code', '500'],
  ]);
  assert.deepEqual(parseTags('name=O"Brien'), [['name', '"O\\"Brien"']]);
  assert.deepEqual(parseTags(''), []);
});

const span = (id, parent, start) => ({ span_id: id, parent_span_id: parent, start_unix_nano: String(start) });

test('the waterfall nests children under parents, by start', () => {
  const rows = waterfallRows([span('c', 'a', 30), span('a', null, 10), span('b', 'a', 20), span('d', 'b', 25)]);
  assert.deepEqual(rows.map((row) => [row.span.span_id, row.depth]), [['a', 0], ['b', 1], ['d', 2], ['c', 1]]);
  assert.equal(rows[0].children, 2);
});

test('spans whose parent is missing or themselves are roots, each once', () => {
  const rows = waterfallRows([span('x', 'gone', 5), span('y', 'y', 1), span('z', 'x', 6)]);
  assert.deepEqual(rows.map((row) => [row.span.span_id, row.depth]), [['y', 0], ['x', 0], ['z', 1]]);
});

test('binning keeps every count and spans the values', () => {
  const distribution = [{ value: 0.001, count: 5 }, { value: 0.01, count: 3 }, { value: 1, count: 1 }, { value: 0, count: 9 }];
  const { bins, low, high } = bin(distribution);
  assert.equal(bins.reduce((sum, entry) => sum + entry.count, 0), 9, 'values of 0 s cannot sit on a log axis');
  assert.ok(low < Math.log10(0.001) && high > Math.log10(1));
  assert.deepEqual(bin([]).bins, []);
  // One value alone still gets a visible range.
  const single = bin([{ value: 0.05, count: 2 }]);
  assert.ok(single.high - single.low >= 0.5);
});

test('windows: pinned start/end, or a range back from now', () => {
  assert.deepEqual(windowOf(new URLSearchParams('start=100&end=200')), { start: 100, end: 200, pinned: true });
  const relative = windowOf(new URLSearchParams('range=15m'));
  assert.equal(relative.end - relative.start, 900);
  assert.equal(relative.pinned, false);
  assert.equal(windowOf(new URLSearchParams('range=bogus')).end - windowOf(new URLSearchParams('range=bogus')).start, 3600);
  assert.equal(rangeSeconds('2d'), 172800);
});

test('durations read and print as people write them', () => {
  assert.equal(parseDuration('1.5s'), 1.5);
  assert.equal(parseDuration('250ms'), 0.25);
  assert.equal(parseDuration('800us'), 0.0008);
  assert.equal(parseDuration('fast'), null);
  assert.equal(formatNanos(1_500_000_000), '1.50 s');
  assert.equal(formatNanos(93_700_000), '93.7 ms');
  assert.equal(formatNanos(4_200), '4.2 µs');
  assert.equal(formatNanos(12), '12 ns');
});

test('API URLs fill and encode path parameters and drop empty query values', () => {
  assert.equal(apiUrl('/v1/traces/{trace_id}/xray', { trace_id: 'a/b' }), '/v1/traces/a%2Fb/xray');
  assert.equal(apiUrl('/v1/search', {}, { q: 'service("a")', page: '', limit: 20 }), '/v1/search?q=service%28%22a%22%29&limit=20');
});
