// Runs a provisioning cycle on the CYCLE_SCHEDULE cron expression (node-cron), and a reconcile run
// on RECONCILE_SCHEDULE the same way. A tick while a run holds the lock (here or on another
// instance) is skipped, not queued.
import cron, { type ScheduledTask } from 'node-cron';
import type { Logger } from '../logger';
import { CycleAlreadyRunningError, CycleStoppingError } from './provisioning-cycle';

/** Work run on a schedule: the provisioning cycle, or the reconcile run. */
export interface ScheduledWork {
  run(trigger: 'schedule', triggeredBy: null): Promise<{ state: string }>;
}

export class CycleScheduler {
  private task: ScheduledTask | undefined;
  private tick: Promise<void> | undefined;

  constructor(
    private readonly work: ScheduledWork,
    private readonly schedule: string | undefined,
    private readonly logger: Logger,
    /** Names the work in the log and to node-cron. */
    private readonly name = 'provisioning-cycle',
  ) {}

  start(): boolean {
    if (!this.schedule || this.task) return false;
    this.task = cron.schedule(this.schedule, () => {
      if (this.tick) return;
      this.tick = this.runOnce().finally(() => {
        this.tick = undefined;
      });
    }, { noOverlap: true, name: this.name });
    this.logger.info({ schedule: this.schedule, work: this.name }, 'scheduled');
    return true;
  }

  async runOnce(): Promise<void> {
    try {
      const summary = await this.work.run('schedule', null);
      this.logger.info({ work: this.name, state: summary.state, ...('cycleId' in summary ? { cycleId: summary.cycleId } : {}) }, 'scheduled run finished');
    } catch (error) {
      if (error instanceof CycleAlreadyRunningError) {
        this.logger.info({ work: this.name, cycleId: error.cycleId }, 'scheduled run skipped: the cycle lock is held');
        return;
      }
      if (error instanceof CycleStoppingError) return;
      this.logger.error({ err: error, work: this.name }, 'scheduled run could not start');
    }
  }

  /** Stops scheduling and waits for a run this scheduler started to finish. */
  async stop(): Promise<void> {
    await this.task?.stop();
    this.task = undefined;
    await this.tick;
  }
}
