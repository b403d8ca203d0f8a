import { isIP } from 'node:net';
import ipaddr from 'ipaddr.js';
import { ConfigError } from '../errors.js';

/**
 * Which target addresses a delivery may connect to By default only global unicast
 * addresses pass: loopback, private, link-local (cloud metadata included), unique-local, CGNAT,
 * multicast, unspecified, broadcast, documentation and other reserved ranges are refused.
 */
export interface AddressPolicy {
  /** The single dev switch: every address passes. */
  allowPrivateTargets: boolean;
  /** Ranges that pass although they are not global unicast, e.g. `10.1.0.0/16`, `fd00::/8`, `127.0.0.1`. */
  allowedCidrs: string[];
}

export type AddressVerdict = { allowed: true } | { allowed: false; reason: string };

export type AddressCheck = (ip: string) => AddressVerdict;

type Address = ipaddr.IPv4 | ipaddr.IPv6;
type Cidr = [Address, number];

const ALLOWED: AddressVerdict = Object.freeze({ allowed: true }) as AddressVerdict;

/** Readable names for ipaddr.js range names, for refusal reasons. */
const RANGE_NAMES: Record<string, string> = {
  unspecified: 'an unspecified address',
  broadcast: 'a broadcast address',
  multicast: 'a multicast address',
  linkLocal: 'a link-local address (this includes cloud metadata endpoints)',
  loopback: 'a loopback address',
  carrierGradeNat: 'a carrier-grade NAT (100.64.0.0/10) address',
  private: 'a private (RFC 1918) address',
  reserved: 'a reserved address',
  uniqueLocal: 'a unique-local (fc00::/7) address',
  deprecatedSiteLocal: 'a site-local (fec0::/10) address',
  benchmarking: 'a benchmarking address',
  discard: 'a discard-only address',
};

/**
 * Compiles the policy once (CIDRs parsed and validated here, not per request) into a check for one
 * IP address in its canonical text form (what DNS or `socket.remoteAddress` give). Anything that is
 * not a plain IP address is refused. IPv4-mapped IPv6 (`::ffff:127.0.0.1`) is judged as the IPv4
 * address it carries; NAT64 (64:ff9b::/96), 6to4 (2002::/16) and Teredo (2001::/32) addresses are
 * judged by the IPv4 addresses they embed.
 *
 * @throws ConfigError (code `ERR_CONFIG`) naming every CIDR that does not parse.
 */
export function compileAddressPolicy(policy: AddressPolicy): AddressCheck {
  const cidrs = parseCidrs(policy.allowedCidrs ?? []);
  const allowAll = policy.allowPrivateTargets === true;
  const v4Cidrs = cidrs.filter((c) => c[0].kind() === 'ipv4');
  const v6Cidrs = cidrs.filter((c) => c[0].kind() === 'ipv6');

  const inAllowlist = (addr: Address): boolean => {
    const list = addr.kind() === 'ipv4' ? v4Cidrs : v6Cidrs;
    for (const cidr of list) {
      if (addr.match(cidr)) return true;
    }
    return false;
  };

  const judgeV4 = (addr: ipaddr.IPv4, shown: string): AddressVerdict => {
    if (inAllowlist(addr)) return ALLOWED;
    const range = addr.range();
    if (range === 'unicast') return ALLOWED;
    return refuse(shown, range);
  };

  return (ip: string): AddressVerdict => {
    if (typeof ip !== 'string' || isIP(ip) === 0) {
      return { allowed: false, reason: 'target is not an IP address' };
    }
    let addr: Address;
    try {
      addr = ipaddr.parse(ip);
    } catch {
      return { allowed: false, reason: 'target is not an IP address' };
    }
    if (allowAll) return ALLOWED;

    if (addr.kind() === 'ipv4') return judgeV4(addr as ipaddr.IPv4, ip);

    const v6 = addr as ipaddr.IPv6;
    const range = v6.range() as string;
    // ::ffff:a.b.c.d and ::ffff:0:a.b.c.d reach the IPv4 host itself.
    if (range === 'ipv4Mapped' || range === 'rfc6145') return judgeV4(lastV4(v6), ip);
    if (inAllowlist(v6)) return ALLOWED;
    if (range === 'unicast') {
      // ipaddr.js calls ::/96 (deprecated IPv4-compatible, e.g. ::127.0.0.1) unicast; it is not.
      const p = v6.parts;
      if (p[0] === 0 && p[1] === 0 && p[2] === 0 && p[3] === 0 && p[4] === 0 && p[5] === 0) {
        return { allowed: false, reason: `${ip} is a deprecated IPv4-compatible address` };
      }
      return ALLOWED;
    }

    const embedded = embeddedV4(v6, range);
    if (embedded) {
      for (const v4 of embedded) {
        const verdict = judgeV4(v4, `${ip} (embeds ${v4.toString()})`);
        if (!verdict.allowed) return verdict;
      }
      return ALLOWED;
    }
    // 64:ff9b:1::/48 (local-use NAT64) and every other special range.
    return refuse(ip, range);
  };
}

function refuse(shown: string, range: string): AddressVerdict {
  const what = RANGE_NAMES[range] ?? `not a global unicast address (${range})`;
  return { allowed: false, reason: `${shown} is ${what}` };
}

function lastV4(v6: ipaddr.IPv6): ipaddr.IPv4 {
  const p = v6.parts;
  return new ipaddr.IPv4([p[6]! >> 8, p[6]! & 0xff, p[7]! >> 8, p[7]! & 0xff]);
}

/** The IPv4 addresses a transition address leads to, or undefined when it embeds none we can judge. */
function embeddedV4(v6: ipaddr.IPv6, range: string): ipaddr.IPv4[] | undefined {
  const p = v6.parts;
  switch (range) {
    case 'rfc6052':
      // Well-known NAT64 prefix 64:ff9b::/96 carries the IPv4 address in the last 32 bits; the
      // local-use prefix 64:ff9b:1::/48 places it by a site-chosen length, so it is refused whole.
      if (p[0] === 0x64 && p[1] === 0xff9b && p[2] === 0 && p[3] === 0 && p[4] === 0 && p[5] === 0) {
        return [lastV4(v6)];
      }
      return undefined;
    case '6to4':
      // 2002:AABB:CCDD::/48 routes to AA.BB.CC.DD.
      return [new ipaddr.IPv4([p[1]! >> 8, p[1]! & 0xff, p[2]! >> 8, p[2]! & 0xff])];
    case 'teredo': {
      // 2001:0:SSSS:SSSS:flags:port:CCCC:CCCC: server in clear, client obfuscated (bits inverted).
      const server = new ipaddr.IPv4([p[2]! >> 8, p[2]! & 0xff, p[3]! >> 8, p[3]! & 0xff]);
      const c6 = p[6]! ^ 0xffff;
      const c7 = p[7]! ^ 0xffff;
      const client = new ipaddr.IPv4([c6 >> 8, c6 & 0xff, c7 >> 8, c7 & 0xff]);
      return [server, client];
    }
    default:
      return undefined;
  }
}

/** Parses `addr/len` (or a bare address, one host); IPv4-mapped IPv6 ranges become IPv4 ranges. */
function parseCidrs(list: readonly string[]): Cidr[] {
  const problems: string[] = [];
  const out: Cidr[] = [];
  for (const raw of list) {
    const cidr = parseCidr(raw);
    if (cidr) out.push(cidr);
    else {
      problems.push(
        `delivery.allowedCidrs: ${JSON.stringify(raw)} is not a CIDR range; expected an address with an optional prefix length, such as "192.0.2.0/24" or "2001:db8::/32"`,
      );
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return out;
}

function parseCidr(raw: unknown): Cidr | undefined {
  if (typeof raw !== 'string') return undefined;
  const text = raw.trim();
  const slash = text.indexOf('/');
  const addrText = slash === -1 ? text : text.slice(0, slash);
  const lenText = slash === -1 ? undefined : text.slice(slash + 1);
  const family = isIP(addrText);
  if (family === 0) return undefined;
  const max = family === 4 ? 32 : 128;
  let len = max;
  if (lenText !== undefined) {
    if (!/^\d{1,3}$/.test(lenText)) return undefined;
    len = Number(lenText);
    if (len > max) return undefined;
  }
  let addr: Address;
  try {
    addr = ipaddr.parse(addrText);
  } catch {
    return undefined;
  }
  if (addr.kind() === 'ipv6' && len >= 96 && (addr as ipaddr.IPv6).isIPv4MappedAddress()) {
    return [(addr as ipaddr.IPv6).toIPv4Address(), len - 96];
  }
  return [addr, len];
}
