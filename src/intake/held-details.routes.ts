// The link mailed when the form is sent again for an address with an open request: opening it
// shows a page with a button (mail scanners follow links, but do not press buttons), and the
// button adds the held details to the request. Added to the intake's router, under its CSRF check.
import type { Request, Response, Router } from 'express';
import type { Services } from '../services';

const INVALID = {
  title: 'This link does not work',
  message: 'This link is not valid, or it has already been used.',
  help: 'If you have already added these details, there is nothing more to do. Otherwise use the link in the most recent email we sent you, or send the form again.',
  backPath: '/request',
  backText: 'Go to the request form',
};

const EXPIRED = {
  title: 'This link has expired',
  message: 'This link has expired, so the details you sent were not added to your request.',
  help: 'If you still want to add them, send the form again and use the link in the new email.',
  backPath: '/request',
  backText: 'Go to the form',
};

/** privatePage: the intake's headers for pages behind secret links. */
export function addHeldDetailsRoutes(router: Router, services: Services, privatePage: (res: Response) => void): void {
  const { intake, csrf } = services;

  router.get('/details/:token', async (req: Request<{ token: string }>, res: Response) => {
    privatePage(res);
    const link = await intake.heldDetailsLink(req.params.token);
    if (link === 'invalid') return res.status(404).render('intake/problem', INVALID);
    if (link === 'expired') return res.status(410).render('intake/problem', EXPIRED);
    res.render('intake/held-details', {
      title: 'Add the new details to your request',
      confirmPath: `/request/details/${encodeURIComponent(req.params.token)}`,
      csrfToken: csrf.token(req, res),
    });
  });

  router.post('/details/:token', async (req: Request<{ token: string }>, res: Response) => {
    privatePage(res);
    const result = await intake.confirmHeldDetails(req.params.token);
    switch (result.kind) {
      case 'added':
        return res.render('intake/details-added', {
          title: 'Your request has been updated',
          statusPath: `/request/status/${result.request.publicId}`,
          requestNumber: result.request.id,
        });
      case 'expired':
        return res.status(410).render('intake/problem', EXPIRED);
      case 'closed':
        return res.status(409).render('intake/problem', {
          title: 'These details were not added',
          message: 'The school has already dealt with your request, so nothing more can be added to it.',
          help: 'If you still need something, send the form again or contact the school office.',
          backPath: '/request',
          backText: 'Go to the form',
        });
      case 'too-much':
        return res.status(409).render('intake/problem', {
          title: 'These details were not added',
          message: result.message,
          help: 'Your request is as it was. If you need to add more, contact the school office.',
        });
      default:
        return res.status(404).render('intake/problem', INVALID);
    }
  });
}
