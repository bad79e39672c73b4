// A worker that loads nothing: its peak RSS is what Node and the TypeScript loader (tsx) take
// in every worker, the floor under the figures of the processes under test.
import { peakRssBytes, serveWorker } from '../support/worker';

serveWorker({ memory: () => ({ peakRssBytes: peakRssBytes() }) });
