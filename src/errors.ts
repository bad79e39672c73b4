// The service's error hierarchy: every error that can reach a person carries a message
// safe to show (plain words) and a `help` line saying what to do about it.

export interface AppErrorOptions {
  help?: string;
  cause?: unknown;
  details?: Record<string, unknown>;
}

export class AppError extends Error {
  readonly status: number;
  readonly help: string | undefined;
  readonly details: Record<string, unknown> | undefined;
  /** A short machine-readable code for API answers and tests. */
  readonly code: string;

  constructor(message: string, status = 500, code = 'error', options: AppErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.status = status;
    this.code = code;
    this.help = options.help;
    this.details = options.details;
  }
}

export class NotFoundError extends AppError {
  constructor(message = 'That could not be found.', options: AppErrorOptions = {}) {
    super(message, 404, 'not_found', options);
  }
}

export interface FieldProblem {
  field: string;
  message: string;
}

export class ValidationError extends AppError {
  readonly fields: FieldProblem[];
  constructor(message: string, fields: FieldProblem[] = [], options: AppErrorOptions = {}) {
    super(message, 400, 'invalid', options);
    this.fields = fields;
  }
}

/** A request that conflicts with the current state: a refused transition, a stale version, a duplicate. */
export class ConflictError extends AppError {
  constructor(message: string, code = 'conflict', options: AppErrorOptions = {}) {
    super(message, 409, code, options);
  }
}

export class ConfigError extends AppError {
  readonly problems: string[];
  constructor(problems: string[]) {
    super(
      `The configuration has ${problems.length === 1 ? 'a problem' : `${problems.length} problems`}:\n` +
        problems.map((p) => `  - ${p}`).join('\n'),
      500,
      'config',
      { help: 'Fix the environment variables (or the .env file) named above; .env.example lists every variable.' },
    );
    this.problems = problems;
  }
}

/** The database could not be reached: shown to parents as "try again shortly". */
export class ServiceUnavailableError extends AppError {
  constructor(message = 'The service is busy or briefly unavailable. Please try again in a few minutes.', options: AppErrorOptions = {}) {
    super(message, 503, 'unavailable', options);
  }
}
