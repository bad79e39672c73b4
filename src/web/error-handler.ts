// The one final error handler: plain words for people, JSON for API clients, a 503 "try again
// shortly" when the database is unreachable, and never a stack trace on a page.
import type { NextFunction, Request, Response } from 'express';
import { isConnectionError } from '../db/database';
import { AppError, NotFoundError, ServiceUnavailableError, ValidationError } from '../errors';

function wantsJson(req: Request): boolean {
  return req.path.startsWith('/api/') || (req.accepts(['html', 'json']) === 'json');
}

export function notFoundHandler(req: Request, _res: Response, next: NextFunction) {
  next(new NotFoundError('There is no page at this address.'));
}

export function errorHandler(showDetails: boolean) {
  return (error: unknown, req: Request, res: Response, next: NextFunction) => {
    if (res.headersSent) return next(error);
    let appError: AppError;
    const status = (error as { status?: number; type?: string }).status;
    if (error instanceof AppError) appError = error;
    else if (isConnectionError(error)) appError = new ServiceUnavailableError();
    else if ((error as { type?: string }).type === 'entity.too.large') appError = new AppError('What was sent is too large.', 413, 'too_large');
    // A file upload (the CSV import) over its limits: the uploader's mistake, said plainly.
    else if ((error as { name?: string }).name === 'MulterError')
      appError =
        (error as { code?: string }).code === 'LIMIT_FILE_SIZE'
          ? new AppError('The file is too large: it can be at most 2 MB.', 413, 'too_large', { help: 'Split the file into smaller files and import them one after another.' })
          : new AppError('The upload could not be read: send one CSV file with the form.', 400, 'bad_upload');
    else if ((error as { type?: string }).type === 'entity.parse.failed') appError = new AppError('What was sent could not be read.', 400, 'bad_request');
    else if (typeof status === 'number' && status >= 400 && status < 500) appError = new AppError('The request could not be understood.', status, 'bad_request');
    else appError = new AppError('Something went wrong on our side. Please try again; if it keeps happening, tell the school office.', 500, 'internal');

    const log = req.log ?? console;
    if (appError.status >= 500) log.error({ err: error, status: appError.status }, 'request failed');
    else log.info({ status: appError.status, code: appError.code }, 'request refused');

    if (appError.status === 503) res.setHeader('Retry-After', '30');
    res.status(appError.status);
    const fields = appError instanceof ValidationError ? appError.fields : undefined;
    if (wantsJson(req)) {
      res.json({ error: { code: appError.code, message: appError.message, ...(appError.help ? { help: appError.help } : {}), ...(fields ? { fields } : {}) } });
      return;
    }
    res.render('error', {
      title: appError.status === 404 ? 'Page not found' : appError.status === 503 ? 'Please try again shortly' : 'Something went wrong',
      status: appError.status,
      message: appError.message,
      help: appError.help,
      sending: req.method !== 'GET' && req.method !== 'HEAD',
      // Only for our own faults: a refused request or an unreachable database is not a bug to debug.
      detail: showDetails && appError.status === 500 && !(error instanceof AppError) ? String((error as Error)?.stack ?? error) : undefined,
    });
  };
}
