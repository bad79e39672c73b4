// The Moodle client's HTTP round trip over node:http and node:https, shaped like fetch (what the
// client and its tests expect). The global fetch parses HTTP with undici's llhttp compiled to
// WebAssembly; after a few dozen calls V8 recompiles that with its optimising compiler on a
// background thread, which took 20-30 MiB of native memory at once (heaptrack: V8's WebAssembly
// TurboFan pipeline) and was the peak of a 5,000-row import's preview. node:http parses with the
// llhttp built into Node, in C. Only what the client uses is supported: a string body, manual
// redirects (node:http never follows one), an abort signal, and the answer read whole.
import http from 'node:http';
import https from 'node:https';

/** Statuses whose answer has no body: a Response refuses one. */
const NULL_BODY_STATUSES = new Set([101, 103, 204, 205, 304]);

function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException('This operation was aborted', 'AbortError');
}

/**
 * A fetch for the Moodle client. Like fetch it rejects with the signal's reason when aborted (a
 * TimeoutError from AbortSignal.timeout), and with TypeError('fetch failed') whose cause is the
 * network error (ECONNREFUSED, ENOTFOUND, a certificate problem) otherwise. The answer's body is
 * read before it resolves, so the signal covers the whole round trip, as it does fetch's and text()'s.
 */
export const nodeHttpFetch: typeof fetch = (input, init = {}) => {
  const url = new URL(input instanceof Request ? input.url : String(input));
  const body = init.body === undefined || init.body === null ? undefined : String(init.body);
  const headers: Record<string, string> = {};
  new Headers(init.headers).forEach((value, name) => {
    headers[name] = value;
  });
  if (body !== undefined) headers['content-length'] = String(Buffer.byteLength(body));
  // What the global fetch sent, so Moodle (and anything in front of it) sees the same client.
  headers['user-agent'] ??= 'node';
  const signal = init.signal ?? undefined;

  return new Promise<Response>((resolve, reject) => {
    if (signal?.aborted) {
      reject(abortReason(signal));
      return;
    }
    let settled = false;
    const finish = (settle: () => void) => {
      if (settled) return;
      settled = true;
      signal?.removeEventListener('abort', onAbort);
      settle();
    };
    const transport = url.protocol === 'https:' ? https : http;
    const request = transport.request(url, { method: init.method ?? 'GET', headers }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('error', (error) => finish(() => reject(new TypeError('fetch failed', { cause: error }))));
      response.on('aborted', () => finish(() => reject(new TypeError('fetch failed', { cause: new Error('the connection closed before the answer was complete') }))));
      response.on('end', () => {
        const status = response.statusCode ?? 0;
        const answerHeaders = new Headers();
        for (const [name, value] of Object.entries(response.headers)) {
          if (value === undefined) continue;
          for (const one of Array.isArray(value) ? value : [value]) answerHeaders.append(name, one);
        }
        const text = Buffer.concat(chunks).toString('utf8');
        finish(() => {
          try {
            resolve(new Response(NULL_BODY_STATUSES.has(status) ? null : text, { status, statusText: response.statusMessage ?? '', headers: answerHeaders }));
          } catch (error) {
            // A status a Response cannot carry (below 200 or above 599) is a broken answer.
            reject(new TypeError('fetch failed', { cause: error }));
          }
        });
      });
    });
    function onAbort() {
      finish(() => reject(abortReason(signal as AbortSignal)));
      request.destroy();
    }
    signal?.addEventListener('abort', onAbort, { once: true });
    request.on('error', (error) => finish(() => reject(new TypeError('fetch failed', { cause: error }))));
    request.end(body);
  });
};
