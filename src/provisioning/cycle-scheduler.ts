// Runs a provisioning cycle on the CYCLE_SCHEDULE cron expression (node-cron). A tick while a
// cycle is running (here or on another instance) is skipped, not queued.
import cron, { type ScheduledTask } from 'node-cron';
import type { Logger } from '../logger';
import { CycleAlreadyRunningError, CycleStoppingError, type ProvisioningCycle } from './provisioning-cycle';

export class CycleScheduler {
  private task: ScheduledTask | undefined;
  private tick: Promise<void> | undefined;

  constructor(
    private readonly cycle: ProvisioningCycle,
    private readonly schedule: string | undefined,
    private readonly logger: Logger,
  ) {}

  start(): boolean {
    if (!this.schedule || this.task) return false;
    this.task = cron.schedule(this.schedule, () => {
      if (this.tick) return;
      this.tick = this.runOnce().finally(() => {
        this.tick = undefined;
      });
    }, { noOverlap: true, name: 'provisioning-cycle' });
    this.logger.info({ schedule: this.schedule }, 'provisioning cycles scheduled');
    return true;
  }

  async runOnce(): Promise<void> {
    try {
      const summary = await this.cycle.run('schedule', null);
      this.logger.info({ cycleId: summary.cycleId, state: summary.state }, 'scheduled cycle finished');
    } catch (error) {
      if (error instanceof CycleAlreadyRunningError) {
        this.logger.info({ cycleId: error.cycleId }, 'scheduled cycle skipped: one is already running');
        return;
      }
      if (error instanceof CycleStoppingError) return;
      this.logger.error({ err: error }, 'scheduled cycle could not start');
    }
  }

  /** Stops scheduling and waits for a cycle this scheduler started to finish. */
  async stop(): Promise<void> {
    await this.task?.stop();
    this.task = undefined;
    await this.tick;
  }
}
