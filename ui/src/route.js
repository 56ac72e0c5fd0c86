// Routes live in the URL fragment: `#/{view}/{arg}?{params}`.

/** The current route: view name, path argument and query parameters. */
export function parseHash() {
  const hash = location.hash.replace(/^#\/?/, '');
  const [path, query = ''] = hash.split('?');
  const [view, ...rest] = path.split('/');
  return {
    view: view || 'map',
    arg: decodeURIComponent(rest.join('/')),
    params: new URLSearchParams(query),
  };
}

/** Goes to `view` with `params` (a plain object; empty values dropped). */
export function navigate(view, params = {}, arg = '') {
  location.hash = link(view, params, arg);
}

/** The fragment of a view. */
export function link(view, params = {}, arg = '') {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') search.set(name, String(value));
  }
  const query = search.toString();
  return `#/${view}${arg ? `/${encodeURIComponent(arg)}` : ''}${query ? `?${query}` : ''}`;
}

/** The window parameters of a route, to carry into links. */
export function windowParams(params) {
  const out = {};
  for (const name of ['range', 'start', 'end']) if (params.get(name)) out[name] = params.get(name);
  return out;
}
