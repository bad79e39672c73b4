// The intake API: POST /api/v1/requests, for the school website's form webhook. Same
// validation as the form, a key instead of a CSRF token, JSON in and out.
import express, { type NextFunction, type Request, type Response, type Router } from 'express';
import { AppError, ValidationError } from '../errors';
import type { Services } from '../services';
import { RateLimitedError } from '../web/rate-limit';
import { ApiIdempotency } from './api-idempotency';
import { requireApiKey } from './api-key-auth';
import type { ApiKeyInfo } from './api-keys';
import { apiFieldName, validateRequest } from './request-form';

const IDEMPOTENCY_KEY_PATTERN = /^[\x21-\x7e]{1,100}$/;

export function intakeApiRoutes(services: Services): Router {
  const { db, config, intake } = services;
  const idempotency = new ApiIdempotency(db, intake, services.requestRepository);
  const router = express.Router();

  router.post(
    '/requests',
    requireApiKey(db, 'requests'),
    (req, _res, next) => {
      if (!req.is('application/json')) {
        throw new AppError('Send the request as JSON (Content-Type: application/json).', 415, 'unsupported_media_type');
      }
      next();
    },
    express.json({ limit: '20kb', strict: true }),
    async (req, res) => {
      const idempotencyKey = req.get('idempotency-key');
      if (idempotencyKey !== undefined && !IDEMPOTENCY_KEY_PATTERN.test(idempotencyKey)) {
        throw new ValidationError('The Idempotency-Key header must be 1 to 100 visible characters.', [
          { field: 'Idempotency-Key', message: 'Use at most 100 visible characters, such as the form entry id.' },
        ]);
      }
      const result = validateRequest(req.body, config.intake.maxChildren, apiFieldName);
      if (!result.ok) throw new ValidationError('Some fields are missing or not valid; nothing was stored.', result.problems);
      const apiKey = res.locals.apiKey as ApiKeyInfo;
      const meta = {
        source: 'api' as const,
        actor: { type: 'api' as const, id: apiKey.name },
        ip: req.ip ?? null,
        agent: req.get('user-agent') ?? null,
      };
      // An Idempotency-Key is the sending key's own: the same one from another key is a new request.
      const outcome = idempotencyKey
        ? await idempotency.submit(apiKey.id, idempotencyKey, result.data, meta)
        : await intake.submit(result.data, meta);
      res.status(outcome.outcome === 'created' ? 201 : 200).json({
        id: outcome.request.publicId,
        status: outcome.request.status,
        statusUrl: outcome.statusUrl,
        outcome: outcome.outcome,
      });
    },
  );

  router.use((error: unknown, _req: Request, res: Response, next: NextFunction) => {
    if (error instanceof RateLimitedError) res.setHeader('Retry-After', String(error.retryAfterSeconds));
    next(error);
  });

  return router;
}
