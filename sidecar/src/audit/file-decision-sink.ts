/**
 * The embedded default decision sink: one JSON event per line, appended to a local file.
 * Writes are buffered by the stream and flushed on stop; a write error turns the sink's
 * status to ERROR (and health with it) instead of being swallowed.
 *
 * Decision events hold request inputs (personal data), so the file is created 0600 and a
 * directory this sink creates 0700, as the audit log's files. An existing file keeps its
 * mode, but one readable or writable by group or others turns the status to WARN.
 */
import { createWriteStream, fstatSync, mkdirSync, type WriteStream } from 'node:fs';
import { dirname } from 'node:path';
import { describeThrown } from '../lib/errors.ts';
import { withDeadline, type ComponentStatus } from '../lib/lifecycle.ts';
import type { DecisionEventV1, DecisionSink } from './decision-event.ts';

/**
 * One NDJSON line. An event whose input or result cannot be serialised (nested past the
 * stack, for instance a hostile request body) is still logged - never dropped, never a
 * reason to fail the sink - without those fields and with the reason in `error`.
 */
export function serialise(event: DecisionEventV1): string {
  try {
    return `${JSON.stringify(event)}\n`;
  } catch (error) {
    const { input: _input, result: _result, ...rest } = event;
    return `${JSON.stringify({
      ...rest,
      error: {
        code: 'ERR_DECISION_LOG_UNSERIALISABLE',
        message: `input and result left out of the decision log: ${describeThrown(error)}`,
        ...(event.error === undefined ? {} : { cause: event.error }),
      },
    })}\n`;
  }
}

export class FileDecisionSink implements DecisionSink {
  readonly name = 'decision_log';
  readonly #path: string;
  #stream: WriteStream | undefined;
  #error: string | undefined;
  #modeWarning: string | undefined;
  #written = 0;

  constructor(path: string) {
    this.#path = path;
  }

  get path(): string {
    return this.#path;
  }

  async start(): Promise<void> {
    mkdirSync(dirname(this.#path), { recursive: true, mode: 0o700 });
    const stream = createWriteStream(this.#path, { flags: 'a', mode: 0o600 });
    stream.on('error', (error) => {
      this.#error = describeThrown(error);
    });
    const fd = await new Promise<number>((resolve, reject) => {
      stream.once('open', resolve);
      stream.once('error', reject);
    });
    const mode = process.platform === 'win32' ? 0 : fstatSync(fd).mode & 0o777;
    this.#modeWarning = (mode & 0o077) === 0
      ? undefined
      : `decision log ${this.#path} has mode ${mode.toString(8).padStart(4, '0')}: group or others can read the inputs it holds; chmod 600 it`;
    this.#stream = stream;
  }

  write(event: DecisionEventV1): void {
    if (this.#stream === undefined) return;
    this.#stream.write(serialise(event));
    this.#written++;
  }

  async stop(deadlineMs: number): Promise<void> {
    const stream = this.#stream;
    this.#stream = undefined;
    if (stream === undefined) return;
    await withDeadline(new Promise<void>((resolve) => stream.end(resolve)), deadlineMs);
  }

  status(): ComponentStatus {
    if (this.#error !== undefined) return { state: 'ERROR', message: `decision log write failed: ${this.#error}` };
    if (this.#stream === undefined) return { state: 'NOT_READY', message: 'decision log not open' };
    const details = { path: this.#path, events: this.#written };
    if (this.#modeWarning !== undefined) return { state: 'WARN', message: this.#modeWarning, details };
    return { state: 'OK', details };
  }
}

/** Discards events; for deployments that log decisions elsewhere. */
export class NullDecisionSink implements DecisionSink {
  readonly name = 'decision_log';
  async start(): Promise<void> {}
  write(): void {}
  async stop(): Promise<void> {}
  status(): ComponentStatus {
    return { state: 'OK', message: 'decision logging disabled' };
  }
}
