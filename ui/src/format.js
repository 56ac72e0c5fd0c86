// Time windows, durations and colours shared by the views.

/** The relative windows the picker offers. */
export const RANGES = ['5m', '15m', '1h', '3h', '6h', '12h', '24h'];

const UNIT_SECONDS = { s: 1, m: 60, h: 3600, d: 86400 };

/** Seconds of a range like `15m`; null when it is not one. */
export function rangeSeconds(range) {
  const match = /^(\d+)([smhd])$/.exec(range || '');
  return match ? Number(match[1]) * UNIT_SECONDS[match[2]] : null;
}

/** The window a view's URL names: `start`/`end` (unix seconds) pinned, or
 * `range` back from now (default 1h). */
export function windowOf(params) {
  const start = Number(params.get('start'));
  const end = Number(params.get('end'));
  if (params.get('start') && params.get('end') && Number.isFinite(start) && Number.isFinite(end)) {
    return { start, end, pinned: true };
  }
  const now = Math.floor(Date.now() / 1000);
  return { start: now - (rangeSeconds(params.get('range')) ?? 3600), end: now, pinned: false };
}

/** A duration in nanoseconds as people read it. */
export function formatNanos(ns) {
  const value = Number(ns);
  if (!Number.isFinite(value)) return '';
  if (value >= 1e9) return `${(value / 1e9).toFixed(value >= 1e10 ? 1 : 2)} s`;
  if (value >= 1e6) return `${(value / 1e6).toFixed(value >= 1e7 ? 1 : 2)} ms`;
  if (value >= 1e3) return `${(value / 1e3).toFixed(1)} µs`;
  return `${value} ns`;
}

export const formatSeconds = (seconds) => formatNanos(seconds * 1e9);

/** Unix nanoseconds (a string, exact) as a local date and time. */
export function formatInstant(unixNano) {
  const millis = Number(BigInt(unixNano) / 1000000n);
  const date = new Date(millis);
  const pad = (n, width = 2) => String(n).padStart(width, '0');
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
}

/** Unix seconds as a local time for the window picker. */
export function formatUnixSeconds(seconds) {
  return formatInstant(String(BigInt(Math.round(seconds)) * 1000000000n)).slice(0, 19);
}

/** Parses `250ms`, `1.5s`, `2m`, `800us` to seconds; null when it is not a duration. */
export function parseDuration(text) {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s|m|h)\s*$/.exec(text || '');
  if (!match) return null;
  // Divide for the small units, so 800us is exactly 0.0008.
  const per = { ns: 1e9, us: 1e6, µs: 1e6, ms: 1e3, s: 1 }[match[2]];
  return per ? Number(match[1]) / per : Number(match[1]) * { m: 60, h: 3600 }[match[2]];
}

const PALETTE = [
  '#2b6cb0', '#2f855a', '#b7791f', '#6b46c1', '#c05621', '#2c7a7b',
  '#b83280', '#4a5568', '#276749', '#9c4221', '#553c9a', '#285e61',
];

/** A stable colour per service name. */
export function serviceColor(name) {
  let hash = 0;
  for (const char of name || '') hash = (hash * 31 + char.codePointAt(0)) >>> 0;
  return PALETTE[hash % PALETTE.length];
}

/** Outcome colours, as X-Ray's console uses them. */
export const OUTCOME_COLORS = {
  ok: '#38a169',
  errors: '#dd6b20',
  throttles: '#805ad5',
  faults: '#e53e3e',
};
