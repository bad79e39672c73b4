// Security headers through helmet: a content security policy that allows no inline script and
// nothing from another origin, and HSTS only when the service is served over https.
import helmet from 'helmet';
import type { Config } from '../config';

/**
 * `embedOrigins` is given only for the pages a school's site may frame (the parents' form):
 * they may be framed by those origins. Every other page, the staff dashboard above all, may
 * not be framed at all, so no page can be overlaid for clickjacking.
 */
export function securityHeaders(config: Pick<Config, 'baseUrl'>, embedOrigins?: readonly string[]) {
  const https = config.baseUrl.startsWith('https://');
  return helmet({
    contentSecurityPolicy: {
      useDefaults: false,
      directives: {
        defaultSrc: ["'self'"],
        scriptSrc: ["'self'"],
        styleSrc: ["'self'"],
        imgSrc: ["'self'", 'data:'],
        fontSrc: ["'self'"],
        formAction: ["'self'"],
        frameAncestors: embedOrigins === undefined ? ["'none'"] : ["'self'", ...embedOrigins],
        objectSrc: ["'none'"],
        baseUri: ["'self'"],
        ...(https ? { upgradeInsecureRequests: [] } : {}),
      },
    },
    strictTransportSecurity: https ? { maxAge: 31_536_000, includeSubDomains: true } : false,
    // frame-ancestors governs framing in current browsers. X-Frame-Options (for older ones) can
    // only say "nobody", so it is sent only where the CSP says the same.
    xFrameOptions: embedOrigins === undefined ? { action: 'deny' } : false,
    referrerPolicy: { policy: 'same-origin' },
  });
}
