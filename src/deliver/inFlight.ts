import assert from 'node:assert/strict';

/** Attempts under way in one lane, from memory and from the store: both count against its concurrency. */
export class InFlight {
  private attempts = 0;

  get count(): number {
    return this.attempts;
  }

  started(): void {
    this.attempts++;
  }

  ended(): void {
    assert.ok(this.attempts > 0, 'an attempt ends once, after it started');
    this.attempts--;
  }
}
