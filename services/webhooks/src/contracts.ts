// The bus contracts: ajv (JSON Schema 2020-12) over ../../shared/schemas.
import { readFileSync, existsSync } from "node:fs";
import { join } from "node:path";
import { Ajv2020 } from "ajv/dist/2020.js";
import type { ValidateFunction } from "ajv";
import addFormatsModule from "ajv-formats";

const addFormats = addFormatsModule as unknown as (ajv: Ajv2020) => Ajv2020;

export const SCHEMA_DIR = process.env.LINKFLOW_SCHEMA_DIR || join(import.meta.dirname, "..", "..", "..", "shared", "schemas");

export type EventType = "link.created" | "link.updated" | "link.deleted" | "link.clicked";
export const EVENT_TYPES: readonly EventType[] = ["link.created", "link.updated", "link.deleted", "link.clicked"];

export interface Validator {
  (data: unknown): boolean;
  errorsText(): string;
}

const ajv = new Ajv2020({ strict: false, allErrors: false });
addFormats(ajv);

function load(name: string): Validator | null {
  const path = join(SCHEMA_DIR, `${name}.json`);
  if (!existsSync(path)) return null;
  const schema = JSON.parse(readFileSync(path, "utf8"));
  const fn: ValidateFunction = ajv.getSchema(schema.$id ?? name) ?? ajv.compile(schema);
  const v = ((data: unknown) => fn(data)) as Validator;
  v.errorsText = () => ajv.errorsText(fn.errors, { separator: "; " });
  return v;
}

function must(name: string): Validator {
  const v = load(name);
  if (!v) throw new Error(`schema ${name}.json not found in ${SCHEMA_DIR}`);
  return v;
}

export const validators = {
  "link.created": must("LinkCreated"),
  "link.updated": must("LinkUpdated"),
  "link.deleted": must("LinkDeleted"),
  "link.clicked": must("Click"),
} satisfies Record<EventType, Validator>;

export const linkEntry = must("LinkEntry");
/** `redirects.busy`: a gateway near its capacity (src/busy.ts). */
export const redirectsBusy = must("RedirectsBusy");
/** ApiKey.json may not exist yet: then key records are checked by hand. */
export const apiKey: Validator | null = load("ApiKey");

/** The event type of a bus subject, or null for a subject not ours. */
export function eventTypeOf(subject: string): EventType | null {
  if (subject === "links.created") return "link.created";
  if (subject === "links.updated") return "link.updated";
  if (subject === "links.deleted") return "link.deleted";
  if (subject.startsWith("clicks.") && subject.length > 7) return "link.clicked";
  return null;
}

/** What an endpoint filter looks at in a payload. */
export interface EventFacts {
  code: string | null;
  domain: string | null; // null: the default domain
  tags: string[] | null; // null: unknown from the payload (clicks)
}

export function factsOf(payload: Record<string, unknown>): EventFacts {
  const code = typeof payload.code === "string" ? payload.code : null;
  const domain = typeof payload.domain === "string" && payload.domain !== "" ? payload.domain.toLowerCase() : null;
  const tags = Array.isArray(payload.tags) ? payload.tags.filter((t): t is string => typeof t === "string") : null;
  return { code, domain, tags };
}
