// Which addresses a delivery may connect to: only global unicast ones
// (SSRF defence). IPv4, IPv6, and IPv4 embedded in IPv6 (mapped, compatible,
// NAT64, 6to4) are classified by the IPv4 address they carry.
import { BlockList, isIP } from "node:net";

const v4Blocked = new BlockList();
for (const [net, prefix, why] of [
  ["0.0.0.0", 8, "unspecified"],
  ["10.0.0.0", 8, "private"],
  ["100.64.0.0", 10, "shared (CGNAT)"],
  ["127.0.0.0", 8, "loopback"],
  ["169.254.0.0", 16, "link-local"],
  ["172.16.0.0", 12, "private"],
  ["192.0.0.0", 24, "IETF protocol assignment"],
  ["192.0.2.0", 24, "documentation"],
  ["192.88.99.0", 24, "6to4 relay"],
  ["192.168.0.0", 16, "private"],
  ["198.18.0.0", 15, "benchmarking"],
  ["198.51.100.0", 24, "documentation"],
  ["203.0.113.0", 24, "documentation"],
  ["224.0.0.0", 4, "multicast"],
  ["240.0.0.0", 4, "reserved"],
] as const) {
  v4Blocked.addSubnet(net, prefix, "ipv4");
  void why;
}

const V4_KIND: Array<[string, number, string]> = [
  ["0.0.0.0", 8, "unspecified"],
  ["127.0.0.0", 8, "loopback"],
  ["169.254.0.0", 16, "link-local"],
  ["224.0.0.0", 4, "multicast"],
  ["10.0.0.0", 8, "private"],
  ["172.16.0.0", 12, "private"],
  ["192.168.0.0", 16, "private"],
  ["100.64.0.0", 10, "shared"],
];

function v4ToInt(a: string): number {
  return a.split(".").reduce((n, o) => n * 256 + Number(o), 0);
}

function v4Reason(a: string): string | null {
  if (!v4Blocked.check(a, "ipv4")) return null;
  const n = v4ToInt(a);
  for (const [net, prefix, kind] of V4_KIND) {
    const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
    if (((n & mask) >>> 0) === ((v4ToInt(net) & mask) >>> 0)) return kind;
  }
  return "reserved";
}

/** The 8 16-bit groups of an IPv6 address (zone id dropped), or null. */
export function parseV6(addr: string): number[] | null {
  let a = addr.toLowerCase();
  const zone = a.indexOf("%");
  if (zone >= 0) a = a.slice(0, zone);
  if (a.startsWith("[") && a.endsWith("]")) a = a.slice(1, -1);
  if (isIP(a) !== 6) return null;
  const lastColon = a.lastIndexOf(":");
  const last = a.slice(lastColon + 1);
  if (last.includes(".")) {
    const n = v4ToInt(last);
    a = a.slice(0, lastColon + 1) + ((n >>> 16) & 0xffff).toString(16) + ":" + (n & 0xffff).toString(16);
  }
  let groups: number[];
  if (a.includes("::")) {
    const [l, r] = a.split("::");
    const left = l ? l.split(":").map((g) => parseInt(g, 16)) : [];
    const right = r ? r.split(":").map((g) => parseInt(g, 16)) : [];
    groups = [...left, ...new Array(8 - left.length - right.length).fill(0), ...right];
  } else {
    groups = a.split(":").map((g) => parseInt(g, 16));
  }
  return groups.length === 8 && groups.every((g) => Number.isInteger(g) && g >= 0 && g <= 0xffff) ? groups : null;
}

function v4From(hi: number, lo: number): string {
  return [hi >> 8, hi & 0xff, lo >> 8, lo & 0xff].join(".");
}

/** Why `addr` is not a global unicast address ("loopback", "private", …), or null when it is. */
export function refusedReason(addr: string): string | null {
  const kind = isIP(addr.replace(/^\[|\]$/g, "").split("%")[0]);
  if (kind === 4) return v4Reason(addr);
  const g = parseV6(addr);
  if (!g) return "not an IP address";
  const zeroPrefix = (n: number) => g.slice(0, n).every((x) => x === 0);
  if (g.every((x) => x === 0)) return "unspecified";
  if (zeroPrefix(7) && g[7] === 1) return "loopback";
  // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, deprecated).
  if (zeroPrefix(5) && g[5] === 0xffff) return v4Reason(v4From(g[6], g[7]));
  if (zeroPrefix(6)) return "IPv4-compatible (deprecated)";
  // ::ffff:0:a.b.c.d (SIIT translated).
  if (zeroPrefix(4) && g[4] === 0xffff && g[5] === 0) return v4Reason(v4From(g[6], g[7]));
  // 64:ff9b::/96 (NAT64): the IPv4 address it reaches.
  if (g[0] === 0x64 && g[1] === 0xff9b && g.slice(2, 6).every((x) => x === 0)) return v4Reason(v4From(g[6], g[7]));
  if (g[0] === 0x64 && g[1] === 0xff9b && g[2] === 1) return "NAT64 local-use";
  // 2002::/16 (6to4): the IPv4 address it carries.
  if (g[0] === 0x2002) return v4Reason(v4From(g[1], g[2])) ?? null;
  if ((g[0] & 0xff00) === 0xff00) return "multicast";
  if ((g[0] & 0xffc0) === 0xfe80) return "link-local";
  if ((g[0] & 0xffc0) === 0xfec0) return "site-local";
  if ((g[0] & 0xfe00) === 0xfc00) return "unique-local";
  if (g[0] === 0x2001 && g[1] === 0x0db8) return "documentation";
  if (g[0] === 0x3fff && g[1] <= 0x0fff) return "documentation";
  if (g[0] === 0x2001 && g[1] === 0) return "Teredo";
  if (g[0] === 0x2001 && g[1] < 0x200) return "IETF protocol assignment";
  if (g[0] === 0x0100 && g.slice(1, 4).every((x) => x === 0)) return "discard-only";
  if ((g[0] & 0xe000) !== 0x2000) return "not global unicast";
  return null;
}

export function isGlobal(addr: string): boolean {
  return refusedReason(addr) === null;
}

/** The host of a URL as it would be connected to ("[::1]" → "::1"). */
export function hostOf(u: URL): string {
  return u.hostname.replace(/^\[|\]$/g, "");
}

/** Why an endpoint URL is refused at creation (scheme, credentials, literal
 *  private address, localhost), or null. DNS names are checked at delivery. */
export function urlProblem(raw: string, allowHttp: boolean, allowPrivate: boolean): string | null {
  if (raw.length > 2048) return "must be at most 2048 characters";
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    return "must be an absolute URL";
  }
  if (u.protocol !== "https:" && !(allowHttp && u.protocol === "http:")) {
    return allowHttp ? "must be an http or https URL" : "must be an https URL";
  }
  if (!u.hostname) return "must have a host";
  if (u.username || u.password) return "must not hold credentials";
  if (u.hash) return "must not have a fragment";
  if (!allowPrivate) {
    const host = hostOf(u).toLowerCase();
    if (host === "localhost" || host.endsWith(".localhost") || host === "localhost.") {
      return "must not point at localhost";
    }
    if (isIP(host)) {
      const why = refusedReason(host);
      if (why) return `must not point at a ${why} address`;
    }
  }
  return null;
}
