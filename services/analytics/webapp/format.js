// How the pages show times and read them back from their inputs.

const DAY = 86400e3;

// A time from the APIs in the reader's locale; nothing for none.
export const when = t => (t ? new Date(t).toLocaleString() : "");

// An ISO time as a datetime-local input's value (local time, to the minute).
export function localTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return new Date(d.getTime() - d.getTimezoneOffset() * 60e3).toISOString().slice(0, 16);
}

// A datetime-local input's value as an ISO time; null for an empty one.
export const isoTime = local => (local ? new Date(local).toISOString() : null);

// The ISO time ``days`` days ago.
export const daysAgo = days => new Date(Date.now() - days * DAY).toISOString();

// An ISO time (or day) as the seconds the charts plot.
export const seconds = t => Date.parse(t) / 1000;
