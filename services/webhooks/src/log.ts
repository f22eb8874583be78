// JSON lines on stderr: ts, service, level, logger, msg, request_id (docs/operations.md "Logs").
import type { LogLevel } from "./settings.ts";

const ORDER: Record<LogLevel, number> = { DEBUG: 10, INFO: 20, WARNING: 30, ERROR: 40 };
let threshold = ORDER.INFO;
let sink: (line: string) => void = (line) => process.stderr.write(line + "\n");

export function setLogLevel(level: LogLevel): void {
  threshold = ORDER[level];
}

/** Tests capture lines with this. */
export function setLogSink(fn: (line: string) => void): void {
  sink = fn;
}

export type Fields = Record<string, unknown> & { request_id?: string | null };

export class Logger {
  readonly name: string;
  constructor(name: string) {
    this.name = name;
  }
  log(level: LogLevel, msg: string, fields: Fields = {}): void {
    if (ORDER[level] < threshold) return;
    const line: Record<string, unknown> = {
      // As the Python services write them: +00:00, and the level in lower case.
      ts: new Date().toISOString().replace("Z", "+00:00"),
      service: "webhooks",
      level: level.toLowerCase(),
      logger: `webhooks.${this.name}`,
      msg,
    };
    for (const [k, v] of Object.entries(fields)) {
      if (v === undefined || (k === "request_id" && v === null)) continue;
      line[k] = v instanceof Error ? v.message : v;
    }
    sink(JSON.stringify(line));
  }
  debug(msg: string, f?: Fields): void { this.log("DEBUG", msg, f); }
  info(msg: string, f?: Fields): void { this.log("INFO", msg, f); }
  warn(msg: string, f?: Fields): void { this.log("WARNING", msg, f); }
  error(msg: string, f?: Fields): void { this.log("ERROR", msg, f); }
}

export function logger(name: string): Logger {
  return new Logger(name);
}
