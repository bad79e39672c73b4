// Security headers through helmet: a content security policy that allows no inline script and
// nothing from another origin, and HSTS only when the service is served over https.
import helmet from 'helmet';
import type { Config } from '../config';

export function securityHeaders(config: Pick<Config, 'baseUrl'>, frameAncestors: string[] = []) {
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
        frameAncestors: frameAncestors.length > 0 ? ["'self'", ...frameAncestors] : ["'self'"],
        objectSrc: ["'none'"],
        baseUri: ["'self'"],
        ...(https ? { upgradeInsecureRequests: [] } : {}),
      },
    },
    strictTransportSecurity: https ? { maxAge: 31_536_000, includeSubDomains: true } : false,
    // frame-ancestors in the CSP governs framing; X-Frame-Options would block embedding outright.
    xFrameOptions: false,
    referrerPolicy: { policy: 'same-origin' },
  });
}
