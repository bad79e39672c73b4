// The one final error handler: plain words for people, JSON for API clients, a 503 "try again
// shortly" when the database is unreachable, and a request id to quote to the school office.
// A stack trace, an SQL statement or a driver's message never reaches a page or an API answer
// unless SHOW_ERROR_DETAILS is on (whatever NODE_ENV says): the log has them, by request id.
import type { NextFunction, Request, Response } from 'express';
import { isConnectionError } from '../db/database';
import { AppError, NotFoundError, ServiceUnavailableError, ValidationError } from '../errors';

function wantsJson(req: Request): boolean {
  return req.path.startsWith('/api/') || (req.accepts(['html', 'json']) === 'json');
}

export function notFoundHandler(req: Request, _res: Response, next: NextFunction) {
  next(new NotFoundError('There is no page at this address.'));
}

const escapeHtml = (text: string) =>
  text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] as string);

/** The last resort when error.ejs itself cannot be rendered: still plain words and the request id, nothing else. */
function fallbackPage(title: string, message: string, requestId: string | undefined): string {
  return (
    `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head><body>` +
    `<h1>${escapeHtml(title)}</h1><p>${escapeHtml(message)}</p>` +
    (requestId ? `<p>If you tell the school office about this, quote this reference: <code>${escapeHtml(requestId)}</code></p>` : '') +
    '<p><a href="/">Back to the start</a></p></body></html>'
  );
}

/** What went wrong, as a refusal or fault safe to show: never the text of an error we did not write. */
export function toAppError(error: unknown): AppError {
  const status = (error as { status?: number }).status;
  const type = (error as { type?: string }).type;
  if (error instanceof AppError) return error;
  if (isConnectionError(error)) return new ServiceUnavailableError();
  if (type === 'entity.too.large' || type === 'parameters.too.many') return new AppError('What was sent is too large.', 413, 'too_large');
  // A file upload (the CSV import) over its limits: the uploader's mistake, said plainly.
  if ((error as { name?: string }).name === 'MulterError')
    return (error as { code?: string }).code === 'LIMIT_FILE_SIZE'
      ? new AppError('The file is too large: it can be at most 2 MB.', 413, 'too_large', { help: 'Split the file into smaller files and import them one after another.' })
      : new AppError('The upload could not be read: send one CSV file with the form.', 400, 'bad_upload');
  if (type === 'entity.parse.failed') return new AppError('What was sent could not be read.', 400, 'bad_request');
  if (typeof status === 'number' && status >= 400 && status < 500) return new AppError('The request could not be understood.', status, 'bad_request');
  return new AppError('Something went wrong on our side. Please try again; if it keeps happening, tell the school office.', 500, 'internal');
}

export function errorHandler(showDetails: boolean) {
  return (error: unknown, req: Request, res: Response, next: NextFunction) => {
    // Part of a page already went out: all that can be done is to end it (Express closes the connection).
    if (res.headersSent) return next(error);
    try {
      answer(showDetails, error, req, res);
    } catch (failure) {
      // Never on to Express's own handler, which shows the stack outside production.
      (req.log ?? console).error({ err: failure }, 'the error answer could not be sent');
      if (res.headersSent) return next(error);
      res.status(500).type('html').send(fallbackPage('Something went wrong', 'Something went wrong on our side. Please try again; if it keeps happening, tell the school office.', req.id));
    }
  };
}

function answer(showDetails: boolean, error: unknown, req: Request, res: Response): void {
  const appError = toAppError(error);
  const requestId = typeof req.id === 'string' ? req.id : undefined;

  const log = req.log ?? console;
  if (appError.status >= 500) log.error({ err: error, status: appError.status }, 'request failed');
  else log.info({ status: appError.status, code: appError.code }, 'request refused');

  if (appError.status === 503) res.setHeader('Retry-After', '30');
  res.status(appError.status);
  const fields = appError instanceof ValidationError ? appError.fields : undefined;
  // Only for our own faults, and only when asked for: a refused request is not a bug to debug.
  const detail = showDetails && appError.status === 500 && !(error instanceof AppError) ? String((error as Error)?.stack ?? error) : undefined;
  if (wantsJson(req)) {
    res.json({
      error: {
        code: appError.code,
        message: appError.message,
        ...(appError.help ? { help: appError.help } : {}),
        ...(fields ? { fields } : {}),
        ...(requestId ? { requestId } : {}),
        ...(detail ? { detail } : {}),
      },
    });
    return;
  }
  const title = appError.status === 404 ? 'Page not found' : appError.status === 503 ? 'Please try again shortly' : 'Something went wrong';
  res.render(
    'error',
    {
      title,
      status: appError.status,
      message: appError.message,
      help: appError.help,
      sending: req.method !== 'GET' && req.method !== 'HEAD',
      // A reference only where there is something to report: not on a missing page or a refusal.
      requestId: appError.status >= 500 ? requestId : undefined,
      detail,
    },
    (renderError: Error | null, html?: string) => {
      if (renderError) {
        // Without this callback a broken page would go to Express's own handler, which shows the stack outside production.
        log.error({ err: renderError }, 'the error page could not be rendered');
        res.type('html').send(fallbackPage(title, appError.message, requestId));
        return;
      }
      res.send(html);
    },
  );
}
