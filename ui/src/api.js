// The JSON APIs the UI reads. Every path here is documented in
// /v1/openapi.json (query/tests/openapi.rs checks this file against it);
// the UI has no other way to the server.

/** The documented paths, with `{name}` path parameters. */
export const PATHS = {
  serviceMap: '/v1/service-map',
  histogram: '/v1/histogram',
  services: '/v1/services',
  search: '/v1/search',
  explain: '/v1/search/explain',
  queryRange: '/v1/traceql/query_range',
  trace: '/v1/traces/{trace_id}',
  traceXray: '/v1/traces/{trace_id}/xray',
};

const KEY = 'tracelake.apiKey';
const TENANT = 'tracelake.tenant';

/** The API key and tenant kept in this browser (both optional). */
export function loadSettings() {
  return {
    key: localStorage.getItem(KEY) || '',
    tenant: localStorage.getItem(TENANT) || '',
  };
}

export function saveSettings({ key, tenant }) {
  for (const [name, value] of [
    [KEY, key],
    [TENANT, tenant],
  ]) {
    if (value) localStorage.setItem(name, value);
    else localStorage.removeItem(name);
  }
}

/** `path` with its `{name}` parameters filled and `query` appended
 * (empty values left out). */
export function apiUrl(path, params = {}, query = {}) {
  const filled = path.replace(/\{(\w+)\}/g, (_, name) => encodeURIComponent(params[name] ?? ''));
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== '') search.set(name, String(value));
  }
  const text = search.toString();
  return text ? `${filled}?${text}` : filled;
}

function headers() {
  const { key, tenant } = loadSettings();
  const out = { Accept: 'application/json' };
  if (key) out.Authorization = `Bearer ${key}`;
  if (tenant) out['X-Scope-OrgID'] = tenant;
  return out;
}

/** An answer other than 2xx: the status and the server's message. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** GETs a documented path; throws ApiError with the server's message. */
export async function getJson(path, params = {}, query = {}, signal) {
  const response = await fetch(apiUrl(path, params, query), { headers: headers(), signal });
  if (!response.ok) {
    const text = (await response.text()).trim();
    const hint =
      response.status === 401
        ? ' (set an API key with the gear button)'
        : '';
    throw new ApiError(response.status, `${response.status}: ${text || response.statusText}${hint}`);
  }
  return response.json();
}

/** GETs a documented path answered as text (plans). */
export async function getText(path, params = {}, query = {}, signal) {
  const response = await fetch(apiUrl(path, params, query), { headers: { ...headers(), Accept: 'text/plain' }, signal });
  const text = await response.text();
  if (!response.ok) throw new ApiError(response.status, `${response.status}: ${text.trim() || response.statusText}`);
  return text;
}

/** Opens a documented JSON path in a new tab: a plain link without an API
 * key, otherwise fetched with the key and shown from memory. */
export async function openJson(event, path, params, query = {}) {
  if (!loadSettings().key) return; // the link's own href works
  event.preventDefault();
  const body = await getJson(path, params, query);
  const blob = new Blob([JSON.stringify(body, null, 2)], { type: 'application/json' });
  window.open(URL.createObjectURL(blob), '_blank', 'noopener');
}
