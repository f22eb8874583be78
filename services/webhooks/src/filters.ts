// Which endpoints an event goes to.
import type { EventFacts } from "./contracts.ts";

export interface Filter {
  events: string[];
  codes: string[];
  tags: string[];
  domains: string[];
}

/** `tags`: the link's tags (from the payload, or looked up for a click); null when unknown.
 *  Empty filter lists match anything; `tags` matches when the link has any of them. */
export function matches(f: Filter, type: string, facts: EventFacts, tags: string[] | null, defaultDomain: string): boolean {
  if (!f.events.includes(type)) return false;
  if (f.codes.length > 0 && (facts.code === null || !f.codes.includes(facts.code))) return false;
  if (f.domains.length > 0) {
    const domain = (facts.domain ?? defaultDomain).toLowerCase();
    if (!f.domains.some((d) => d.toLowerCase() === domain)) return false;
  }
  if (f.tags.length > 0) {
    if (tags === null || !f.tags.some((t) => tags.includes(t))) return false;
  }
  return true;
}
