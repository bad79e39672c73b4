// Decides which email each request lifecycle event causes, and queues it in the event's own
// transaction: a transition that rolls back sends nothing, one that commits cannot lose its mail.
import type { Knex } from 'knex';
import type { LifecycleEvent, LifecycleListener, RequestLifecycle } from '../requests/request-lifecycle';
import type { MailMessages } from './mail-messages';
import type { MailOutbox } from './mail-outbox';
import type { MailLogger } from './mail-transport';

export interface MailNotificationOptions {
  requireEmailVerification: boolean;
  /** Moodle's login page, e.g. https://moodle.example.org/login/index.php, for the "account ready" mail. */
  moodleLoginUrl?: string;
  /** Staff addresses told about requests waiting for review; empty means nobody is told. */
  staffNotify: readonly string[];
  logger?: MailLogger;
}

/** Adds the listener to the lifecycle. Returns the listener, for tests that call it directly. */
export function registerMailNotifications(
  lifecycle: Pick<RequestLifecycle, 'addListener'>,
  outbox: Pick<MailOutbox, 'enqueue' | 'enqueueMany'>,
  messages: MailMessages,
  options: MailNotificationOptions,
): LifecycleListener {
  const staff = [...options.staffNotify];

  async function notifyStaff(trx: Knex.Transaction, event: LifecycleEvent): Promise<void> {
    if (staff.length === 0) return;
    await outbox.enqueue(trx, messages.staffNewRequestMessage(event.request, event.children, staff), {
      kind: 'staff_new_request',
      requestId: event.request.id,
    });
  }

  async function sendVerification(trx: Knex.Transaction, event: LifecycleEvent): Promise<void> {
    // Only the hash of the token is stored, so the link can be built only from the raw token the
    // intake passes along with the event. Without it there is nothing to send.
    const token = event.details.verificationToken;
    if (typeof token !== 'string' || token === '') {
      if (options.requireEmailVerification) {
        options.logger?.warn(
          { requestId: event.request.id, event: event.type },
          'No confirmation email queued: the event carried no verification token',
        );
      }
      return;
    }
    await outbox.enqueue(trx, messages.verificationMessage(event.request, token), { kind: 'verification', requestId: event.request.id });
  }

  const provisionedMail = (event: LifecycleEvent) => ({
    message: messages.provisionedMessage(event.request, event.children, options.moodleLoginUrl, event.details.alreadyHadAccount === true),
    options: { kind: 'provisioned' as const, requestId: event.request.id },
  });

  const listener: LifecycleListener = async (trx: Knex.Transaction, event: LifecycleEvent): Promise<void> => {
    const { request } = event;
    const parentMail = { requestId: request.id };
    switch (event.type) {
      case 'submitted':
        if (request.status === 'unverified') {
          await sendVerification(trx, event);
        } else if (request.status === 'pending' && request.source !== 'import') {
          // A staff bulk import: the parent did not ask, and the office already knows.
          await outbox.enqueue(trx, messages.requestReceivedMessage(request, event.children), { kind: 'request_received', ...parentMail });
          await notifyStaff(trx, event);
        }
        return;
      case 'verification_resent':
        await sendVerification(trx, event);
        return;
      case 'email_verified':
        await notifyStaff(trx, event);
        return;
      case 'details_held': {
        const token = event.details.heldDetailsToken;
        const expiresAt = event.details.heldDetailsExpiresAt;
        if (typeof token !== 'string' || token === '' || typeof expiresAt !== 'number') return;
        const sent = {
          children: typeof event.details.children === 'number' ? event.details.children : 0,
          commentAdded: event.details.commentAdded === true,
        };
        await outbox.enqueue(trx, messages.heldDetailsMessage(request, token, expiresAt, sent), { kind: 'held_details', ...parentMail });
        return;
      }
      case 'extended': {
        const added = typeof event.details.addedChildren === 'number' ? event.details.addedChildren : 0;
        await outbox.enqueue(trx, messages.requestExtendedMessage(request, added), { kind: 'request_extended', ...parentMail });
        return;
      }
      case 'denied':
        await outbox.enqueue(trx, messages.deniedMessage(request), { kind: 'denied', ...parentMail });
        return;
      case 'provisioned': {
        const mail = provisionedMail(event);
        await outbox.enqueue(trx, mail.message, mail.options);
        return;
      }
      case 'revoked':
        await outbox.enqueue(trx, messages.revokedMessage(request), { kind: 'revoked', ...parentMail });
        return;
      default:
        // marked_duplicate and marked_bogus: no mail (the other request goes on; a bogus one
        // gets no answer). approved: the parent hears when the account is actually ready.
        return;
    }
  };
  // A cycle's outcomes: every "account ready" mail of the batch in a few multi-row inserts.
  listener.many = async (trx, events) => {
    for (const event of events) if (event.type !== 'provisioned') await listener(trx, event);
    // Rendered one insert's worth at a time, as the outbox takes them.
    function* provisionedMails() {
      for (const event of events) if (event.type === 'provisioned') yield provisionedMail(event);
    }
    if (events.some((e) => e.type === 'provisioned')) await outbox.enqueueMany(trx, provisionedMails());
  };
  lifecycle.addListener(listener);
  return listener;
}
