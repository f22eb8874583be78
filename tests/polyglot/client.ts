/**
 * A client of linkflow written against types generated from the served
 * OpenAPI documents, as a TypeScript user would write it: create a link,
 * follow it, read its stats. tests/polyglot/test_clients.py generates the
 * types fresh (never committed), type-checks this file with them
 * (`tsc --noEmit`) and runs it against the services; a document that stops
 * describing the API breaks one or the other.
 *
 * By hand, with the services up:
 *
 *   npx openapi-typescript http://127.0.0.1:8000/api/openapi.json -o generated/gateway.d.ts
 *   npx openapi-typescript http://127.0.0.1:8001/api/openapi.json -o generated/analytics.d.ts
 *   npx tsc -p tsconfig.json
 *   LINKFLOW_API_KEY=… node client.ts http://127.0.0.1:8000 http://127.0.0.1:8001
 *
 * Arguments (or environment): the gateway's base URL (LINKFLOW_GATEWAY_URL),
 * the analytics service's (LINKFLOW_ANALYTICS_URL); the API key comes from
 * LINKFLOW_API_KEY. Prints a JSON summary; exits non-zero on any failure.
 */

import createClient from "openapi-fetch";

import type { components as Analytics, paths as AnalyticsPaths } from "./generated/analytics.d.ts";
import type { components as Gateway, paths as GatewayPaths } from "./generated/gateway.d.ts";

type Link = Gateway["schemas"]["Link"];
type LinkStats = Analytics["schemas"]["LinkStats"];

/** A browser's agent: a click from an agent that looks like a bot is not counted. */
const BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 linkflow-polyglot";
const STATS_DEADLINE_MS = 20_000;

function setting(position: number, name: string): string {
  const value = process.argv[position] ?? process.env[name];
  if (!value) {
    throw new Error(`missing ${name} (argument ${position - 1})`);
  }
  return value.replace(/\/+$/, "");
}

function check(condition: boolean, message: string): asserts condition {
  if (!condition) {
    throw new Error(message);
  }
}

async function main(): Promise<void> {
  const gatewayUrl = setting(2, "LINKFLOW_GATEWAY_URL");
  const analyticsUrl = setting(3, "LINKFLOW_ANALYTICS_URL");
  const key = process.env["LINKFLOW_API_KEY"];
  check(key !== undefined && key !== "", "missing LINKFLOW_API_KEY");
  const headers = { Authorization: `Bearer ${key}` };

  const gateway = createClient<GatewayPaths>({ baseUrl: gatewayUrl, headers });
  const analytics = createClient<AnalyticsPaths>({ baseUrl: analyticsUrl, headers });

  // Create.
  const target = `https://example.com/polyglot/typescript?at=${Date.now()}`;
  const created = await gateway.POST("/api/links", {
    body: { url: target, tags: ["polyglot"] },
  });
  if (created.data === undefined) {
    throw new Error(`create_link: ${created.response.status} ${JSON.stringify(created.error)}`);
  }
  const link: Link = created.data;
  check(created.response.status === 201, `create_link answered ${created.response.status}`);
  check(link.url === target, `create_link stored ${link.url}, not ${target}`);
  check(link.short_url.endsWith(`/${link.code}`), `short_url ${link.short_url} does not end in the code`);

  // Read it back.
  const read = await gateway.GET("/api/links/{code}", { params: { path: { code: link.code } } });
  if (read.data === undefined) {
    throw new Error(`get_link: ${read.response.status} ${JSON.stringify(read.error)}`);
  }
  check(read.data.code === link.code && read.data.version === link.version, "get_link differs");

  // An unknown code: a problem, typed by the document.
  const unknown = await gateway.GET("/api/links/{code}", {
    params: { path: { code: `${link.code}-missing` } },
  });
  check(unknown.data === undefined && unknown.error !== undefined, "get_link of an unknown code succeeded");
  const problem = unknown.error;
  check(unknown.response.status === 404, `get_link of an unknown code answered ${unknown.response.status}`);
  check(problem.status === 404, `the problem says status ${problem.status}`);
  check(
    (unknown.response.headers.get("content-type") ?? "").startsWith("application/problem+json"),
    "the problem is not application/problem+json",
  );

  // An invalid field: a problem naming it.
  const invalid = await gateway.POST("/api/links", { body: { url: "not a url" } });
  check(invalid.data === undefined && invalid.error !== undefined, "create_link of a bad URL succeeded");
  check(invalid.response.status === 422, `create_link of a bad URL answered ${invalid.response.status}`);
  const fields = (invalid.error.errors ?? []).map((error) => error.field);
  check(invalid.error.status === 422 && fields.length > 0, `the problem names no field: ${JSON.stringify(invalid.error)}`);

  // Follow it (the served address: the short URL's host is the public one).
  const follow = await fetch(`${gatewayUrl}/${encodeURIComponent(link.code)}`, {
    redirect: "manual",
    headers: { "user-agent": BROWSER },
  });
  const location = follow.headers.get("location");
  check(follow.status === 302, `following ${link.code} answered ${follow.status}`);
  check(location === link.url, `following ${link.code} went to ${location}, not ${link.url}`);

  // Its stats, once analytics has counted the click.
  const deadline = Date.now() + STATS_DEADLINE_MS;
  let stats: LinkStats | undefined;
  for (;;) {
    const answer = await analytics.GET("/api/stats/links/{code}", {
      params: { path: { code: link.code } },
    });
    if (answer.data === undefined) {
      throw new Error(`link_stats: ${answer.response.status} ${JSON.stringify(answer.error)}`);
    }
    stats = answer.data;
    if (stats.total >= 1 || Date.now() > deadline) {
      break;
    }
    await new Promise((resolve) => setTimeout(resolve, 100)); // polling interval of a deadline wait
  }
  check(stats.total >= 1, `no click counted within ${STATS_DEADLINE_MS} ms: ${JSON.stringify(stats)}`);
  check(stats.code === link.code, `stats of ${stats.code}, not ${link.code}`);
  const counted = stats.series.reduce((sum, bucket) => sum + bucket.count, 0);

  console.log(
    JSON.stringify({
      link: { code: link.code, url: link.url, short_url: link.short_url, version: link.version },
      unknown: { status: unknown.response.status, problem_status: problem.status, title: problem.title },
      invalid: { status: invalid.response.status, fields },
      follow: { status: follow.status, location },
      stats: { code: stats.code, total: stats.total, visitors: stats.visitors, series_count: counted },
    }),
  );
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? (error.stack ?? error.message) : String(error));
  process.exitCode = 1;
});
