import { describe, expect, it } from 'vitest';
import type { LoggedEvent } from '../../src/route/loggedEvent.js';
import { comparePositions, decodeSegment, encodeSegment, positionOf } from '../../src/store/eventLog.js';

const TABLES_EVENT: LoggedEvent = {
  commitLsn: 0x16b3a28n,
  changeIndex: 0,
  commitTime: new Date('2026-02-10T15:30:50.123Z'),
  object: 'person',
  action: 'updated',
  recordKey: 'person:p1',
  workspaceId: null,
  // Quotes, backslashes, a line break and text beyond the BMP travel through the segment's JSON unchanged.
  body: '{"event":"person.updated","data":{"id":"p1","note":"say \\"hi\\"\\n\\\\ 🚀"},"updatedFields":["note"]}',
  bodyParts: null,
  payloadKey: 'data',
};

const TWENTY_EVENT: LoggedEvent = {
  commitLsn: 0x1_0000_0000n + 0x20n,
  changeIndex: 41,
  commitTime: new Date('2026-02-10T15:30:51.000Z'),
  object: 'person',
  action: 'created',
  recordKey: 'person:a0000000-0000-4000-8000-000000000001',
  workspaceId: '3be9d202-5461-4881-a6de-4c1f96e4b02d',
  body: '',
  bodyParts: [
    ',"eventName":"person.created","objectMetadata":{"id":"x","nameSingular":"person"},"workspaceId":"3be9","webhookId":',
    ',"eventDate":"2026-02-10T15:30:51.000Z","record":{"id":"a"}}',
  ],
  payloadKey: 'record',
};

describe('event log segments', () => {
  it('decodeSegment(encodeSegment(events)) gives the events back, Twenty body parts and a null workspace included', () => {
    const events = [TABLES_EVENT, TWENTY_EVENT];
    const decoded = decodeSegment(encodeSegment(events));
    expect(decoded).toEqual(events);
    expect(decoded[0]!.commitLsn).toBe(0x16b3a28n);
    expect(decoded[0]!.workspaceId).toBeNull();
    expect(decoded[0]!.bodyParts).toBeNull();
    expect(decoded[1]!.bodyParts).toEqual(TWENTY_EVENT.bodyParts);
    expect(decoded[1]!.commitTime.toISOString()).toBe('2026-02-10T15:30:51.000Z');
  });

  it('an empty segment round-trips to no events', () => {
    expect(decodeSegment(encodeSegment([]))).toEqual([]);
  });
});

describe('log positions', () => {
  it('compares by commit LSN, then by index in the transaction', () => {
    const p = (lsn: bigint, index: number) => ({ lsn, index });
    expect(comparePositions(p(0x100n, 0), p(0x200n, 0))).toBeLessThan(0);
    expect(comparePositions(p(0x200n, 0), p(0x100n, 5))).toBeGreaterThan(0);
    expect(comparePositions(p(0x100n, 1), p(0x100n, 2))).toBeLessThan(0);
    expect(comparePositions(p(0x100n, 3), p(0x100n, 3))).toBe(0);
    // LSNs past 32 bits compare as numbers, not as text.
    expect(comparePositions(p(0x1_0000_0000n, 0), p(0xffff_ffffn, 9))).toBeGreaterThan(0);
    // The position before a transaction's first change (a reader's "just before") sorts first.
    expect(comparePositions(p(0x100n, -1), p(0x100n, 0))).toBeLessThan(0);
  });

  it('positionOf() is an event’s commit LSN and index', () => {
    expect(positionOf(TWENTY_EVENT)).toEqual({ lsn: 0x1_0000_0020n, index: 41 });
  });
});
