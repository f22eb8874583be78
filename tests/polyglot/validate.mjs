// linkflow's JSON Schemas as a Node service would use them: ajv's JSON Schema
// 2020-12 build, ajv-formats for "date-time", strict mode.
//
//   node validate.mjs CASES.json
//
// CASES.json: {"schemas": DIR, "cases": [{"schema": "LinkUpdated.json", "message": ...}, ...]}.
// Every *.json in DIR is compiled (one Ajv instance, as a service would
// load them all); each case's message is validated against its schema.
// Prints {"compiled": {file: null | error}, "verdicts": [{"valid", "errors"}, ...]},
// one verdict per case, in order (valid null: its schema did not compile).
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import Ajv2020 from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';

const { schemas, cases } = JSON.parse(readFileSync(process.argv[2], 'utf8'));

// strict: unknown keywords, formats and ignored type combinations are
// errors, not silently passed (ajv's default only warns about some).
const ajv = new Ajv2020({ strict: true, allErrors: true });
addFormats(ajv);

const compiled = {};
const validators = {};
for (const file of readdirSync(schemas).filter((f) => f.endsWith('.json')).sort()) {
  try {
    validators[file] = ajv.compile(JSON.parse(readFileSync(join(schemas, file), 'utf8')));
    compiled[file] = null;
  } catch (err) {
    compiled[file] = String(err.message ?? err);
  }
}

const verdicts = cases.map(({ schema, message }) => {
  const validate = validators[schema];
  if (!validate) return { valid: null, errors: [`${schema} did not compile`] };
  const valid = validate(message);
  const errors = valid ? [] : validate.errors.map((e) => `${e.instancePath || '/'} ${e.message}`);
  return { valid, errors };
});

process.stdout.write(JSON.stringify({ compiled, verdicts }));
