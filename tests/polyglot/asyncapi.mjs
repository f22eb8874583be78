// shared/asyncapi.yaml read by the official AsyncAPI parser, as a tool in
// another language's ecosystem (a generator, a doc site) reads it.
//
//   node asyncapi.mjs ASYNCAPI.yaml
//
// Prints {"diagnostics": [{severity, code, message, path}],
//         "messages": {name: {"schemaFormat", "payload"}}}: every diagnostic
// (severity 0 is an error), and each message's payload as the parser
// resolved it (its file's $refs followed; the parser's own x-parser-* marks
// are left in for the caller to strip).
import { Parser, fromFile } from '@asyncapi/parser';

const { document, diagnostics } = await fromFile(new Parser(), process.argv[2]).parse();

const messages = {};
for (const message of document ? document.allMessages() : []) {
  const payload = message.payload();
  const raw = payload.json();
  // A Multi Format Schema Object carries the schema under "schema".
  const schema = typeof raw.schema === 'object' ? raw.schema : raw;
  messages[message.name() ?? message.id()] = { schemaFormat: payload.schemaFormat(), payload: schema };
}

process.stdout.write(
  JSON.stringify({
    diagnostics: diagnostics.map((d) => ({
      severity: d.severity,
      code: d.code,
      message: d.message,
      path: d.path,
    })),
    messages,
  }),
);
