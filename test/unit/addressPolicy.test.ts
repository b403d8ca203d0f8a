import { describe, expect, it } from 'vitest';
import { compileAddressPolicy } from '../../src/deliver/addressPolicy.js';
import { BridgeError } from '../../src/errors.js';

const guarded = compileAddressPolicy({ allowPrivateTargets: false, allowedCidrs: [] });

// [address, why it is refused]
const REFUSED: Array<[string, string]> = [
  ['127.0.0.1', 'loopback'],
  ['127.255.255.254', 'loopback'],
  ['::1', 'loopback'],
  ['10.0.0.1', 'private'],
  ['172.16.5.4', 'private'],
  ['172.31.255.255', 'private'],
  ['192.168.1.1', 'private'],
  ['169.254.169.254', 'link-local'], // cloud metadata
  ['169.254.0.1', 'link-local'],
  ['fe80::1', 'link-local'],
  ['fe80::1%eth0', 'link-local'],
  ['fc00::1', 'unique-local'],
  ['fd12:3456:789a::1', 'unique-local'],
  ['fd00:ec2::254', 'unique-local'], // AWS IMDS over IPv6
  ['100.64.0.1', 'carrier-grade NAT'],
  ['100.127.255.254', 'carrier-grade NAT'],
  ['224.0.0.1', 'multicast'],
  ['239.255.255.250', 'multicast'],
  ['ff02::1', 'multicast'],
  ['0.0.0.0', 'unspecified'],
  ['0.1.2.3', 'unspecified'],
  ['::', 'unspecified'],
  ['255.255.255.255', 'broadcast'],
  ['192.0.2.1', 'reserved'],
  ['198.51.100.7', 'reserved'],
  ['203.0.113.9', 'reserved'],
  ['240.0.0.1', 'reserved'],
  ['198.18.0.1', 'reserved'],
  ['2001:db8::1', 'reserved'],
  ['fec0::1', 'site-local'],
  // IPv4-mapped and -translated IPv6: judged as the IPv4 address they carry.
  ['::ffff:127.0.0.1', 'loopback'],
  ['::ffff:7f00:1', 'loopback'],
  ['::ffff:10.1.2.3', 'private'],
  ['::ffff:169.254.169.254', 'link-local'],
  ['::ffff:0:127.0.0.1', 'loopback'],
  ['::127.0.0.1', 'loopback'], // ipaddr.js reads the dotted tail as IPv4-mapped
  ['::7f00:1', 'IPv4-compatible'],
  // NAT64, 6to4, Teredo embedding private IPv4 addresses.
  ['64:ff9b::127.0.0.1', 'loopback'],
  ['64:ff9b::a9fe:a9fe', 'link-local'],
  ['64:ff9b:1::a00:1', 'rfc6052'],
  ['2002:7f00:1::', 'loopback'],
  ['2002:c0a8:101::1', 'private'],
  ['2001:0:4136:e378:8000:63bf:f5ff:fffe', 'private'], // Teredo, client 10.0.0.1 (inverted)
  ['2001:0:a00:1::1', 'private'], // Teredo, server 10.0.0.1
  // Not plain IP addresses at all.
  ['localhost', 'not an IP address'],
  ['2130706433', 'not an IP address'],
  ['0x7f.1', 'not an IP address'],
  ['', 'not an IP address'],
];

const ALLOWED = [
  '93.184.215.14',
  '8.8.8.8',
  '1.1.1.1',
  '172.32.0.1',
  '100.128.0.1',
  '2606:4700:4700::1111',
  '2a00:1450:4001:80b::200e',
  '::ffff:8.8.8.8',
  '64:ff9b::808:808', // NAT64 of 8.8.8.8
  '2002:808:808::1', // 6to4 of 8.8.8.8
];

describe('compileAddressPolicy (guard on)', () => {
  it.each(REFUSED)('refuses %s (%s)', (ip, why) => {
    const verdict = guarded(ip);
    expect(verdict.allowed).toBe(false);
    expect(verdict).toMatchObject({ reason: expect.stringContaining(why) });
  });

  it.each(ALLOWED)('allows global unicast %s', (ip) => {
    expect(guarded(ip)).toEqual({ allowed: true });
  });
});

describe('compileAddressPolicy allowlist', () => {
  const check = compileAddressPolicy({
    allowPrivateTargets: false,
    allowedCidrs: ['127.0.0.0/8', '10.20.0.0/16', 'fd00:1::/32', '::ffff:192.168.7.0/120', '169.254.1.1'],
  });

  it.each(['127.0.0.1', '::ffff:127.0.0.1', '64:ff9b::7f00:1', '10.20.30.40', 'fd00:1:2::3', '192.168.7.200', '::ffff:192.168.7.1', '169.254.1.1', '8.8.8.8'])(
    'allows %s',
    (ip) => {
      expect(check(ip)).toEqual({ allowed: true });
    },
  );

  it.each(['10.21.0.1', '192.168.8.1', '::1', 'fd00:2::1', '169.254.169.254', '169.254.1.2', 'fc00::1'])('still refuses %s', (ip) => {
    expect(check(ip).allowed).toBe(false);
  });

  it('refuses malformed CIDRs at compile time, naming each of them', () => {
    let error: unknown;
    try {
      compileAddressPolicy({
        allowPrivateTargets: false,
        allowedCidrs: ['10.0.0.0/8', '10.0.0.0/33', 'not-a-cidr', '::1/129', '10.0.0/8', '1.2.3.4/x'],
      });
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(BridgeError);
    expect((error as BridgeError).code).toBe('ERR_CONFIG');
    const message = (error as Error).message;
    for (const bad of ['10.0.0.0/33', 'not-a-cidr', '::1/129', '10.0.0/8', '1.2.3.4/x']) {
      expect(message).toContain(bad);
    }
    expect(message).not.toContain('"10.0.0.0/8"');
  });
});

describe('compileAddressPolicy allowPrivateTargets', () => {
  const open = compileAddressPolicy({ allowPrivateTargets: true, allowedCidrs: [] });

  it.each(['127.0.0.1', '::1', '10.0.0.1', '169.254.169.254', 'fd00::1', '::ffff:127.0.0.1', '8.8.8.8'])('allows %s', (ip) => {
    expect(open(ip)).toEqual({ allowed: true });
  });

  it('still refuses what is not an IP address', () => {
    expect(open('localhost').allowed).toBe(false);
  });
});
