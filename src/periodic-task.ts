// Background work repeated on a timer inside the service (sending queued mail, erasing expired
// requests): never two rounds at once in this process, a failed round logged and retried at the
// next tick, and stop() waiting for a round in progress so shutdown never cuts one short.

export class PeriodicTask {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;

  constructor(
    private readonly round: () => Promise<unknown>,
    private readonly onError: (error: unknown) => void,
  ) {}

  /** Runs a round now and then every intervalMs until stop(); a second start() does nothing. */
  start(intervalMs: number): void {
    if (this.timer) return;
    const tick = () => {
      if (this.running) return;
      this.running = this.round()
        .catch(this.onError)
        .finally(() => {
          this.running = undefined;
        });
    };
    this.timer = setInterval(tick, intervalMs);
    this.timer.unref();
    tick();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }
}
