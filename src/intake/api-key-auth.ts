// The check in front of every API route: a genuine, unrevoked key with the route's scope. It runs
// before anything else is read, so an unknown caller learns nothing more.
import type { NextFunction, Request, Response } from 'express';
import type { Database } from '../db/database';
import { AppError } from '../errors';
import type { ApiKeyScope } from './api-key-repository';
import { verifyApiKey } from './api-keys';

function presentedKey(req: Request): string | undefined {
  const authorization = req.get('authorization');
  const bearer = authorization ? /^Bearer\s+(\S+)\s*$/i.exec(authorization) : null;
  if (bearer) return bearer[1];
  return req.get('x-api-key')?.trim() || undefined;
}

/** Puts the key's record in res.locals.apiKey; 401 without a valid key, 403 for a key without the scope. */
export function requireApiKey(db: Database, scope: ApiKeyScope) {
  return async (req: Request, res: Response, next: NextFunction) => {
    const raw = presentedKey(req);
    const apiKey = raw ? await verifyApiKey(db, raw) : undefined;
    if (!apiKey) {
      res.setHeader('WWW-Authenticate', 'Bearer');
      throw new AppError('A valid API key is required.', 401, 'unauthorized', {
        help: 'Send "Authorization: Bearer <key>" with a key from "npm run cli -- api-keys create <name>".',
      });
    }
    if (!apiKey.scopes.includes(scope)) {
      throw new AppError(`This API key may not be used for ${scope === 'requests' ? 'sending requests' : 'guardian records'}.`, 403, 'scope', {
        help: `Create a key for it with "npm run cli -- api-keys create <name> --scope ${scope}".`,
      });
    }
    res.locals.apiKey = apiKey;
    next();
  };
}
