import type { Logger } from '../log.js';
import type { Subscriber } from '../route/types.js';
import { nextRetryDelayMs } from './backoff.js';
import type { EndpointBreaker } from './endpointBreaker.js';
import { signRequest } from './sign.js';
import type { AttemptOutcome, DeliveryObserver, HttpSender, LaneSettings } from './types.js';

/** What one attempt sends: an event's bytes, and how many attempts it had before. */
export interface AttemptRequest {
  eventId: string;
  body: string;
  eventName: string;
  commitTime: Date;
  previousAttempts: number;
}

/**
 * Signs and sends one attempt and reports it: to the endpoint breaker, the metrics observer and the
 * log. Knows nothing of queues, modes or the store.
 */
export class AttemptRunner {
  constructor(
    private readonly sender: HttpSender,
    private readonly settings: Pick<LaneSettings, 'userAgent' | 'retryScheduleS'>,
    private readonly observer: DeliveryObserver,
    private readonly breaker: EndpointBreaker,
    private readonly log: Logger,
    private readonly random: () => number,
  ) {}

  /** One HTTP attempt, signed afresh (new timestamp and nonce per attempt). */
  async run(webhook: Subscriber, request: AttemptRequest): Promise<AttemptOutcome> {
    const { eventId, body, eventName, commitTime, previousAttempts } = request;
    const headers = signRequest(body, webhook.secret, eventId, Date.now(), this.settings.userAgent);
    const outcome = await this.sender.send(webhook.targetUrl, body, headers);
    if (outcome.ok) {
      this.breaker.succeeded();
      this.observer.attempt(webhook.id, outcome, 'success', { name: eventName, commitTime });
      return outcome;
    }
    this.breaker.failed(outcome, Date.now(), () =>
      nextRetryDelayMs(Math.max(1, previousAttempts + 1), this.settings.retryScheduleS, this.random, outcome.retryAfterMs),
    );
    const label = outcome.reason === 'blocked_address' ? 'refused' : 'retry';
    this.observer.attempt(webhook.id, outcome, label, { name: eventName, commitTime });
    // webhookId comes with the lane's child logger.
    this.log.info(
      { eventId, attempt: previousAttempts + 1, reason: outcome.reason, statusCode: outcome.statusCode, error: outcome.message },
      'delivery attempt failed',
    );
    return outcome;
  }
}
