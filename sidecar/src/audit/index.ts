/** Audit: decision events and where they go. */
export type { DecisionEventV1, DecisionSink } from './decision-event.ts';
export { DecisionEvents, type DecisionRecord } from './decision-events.ts';
export { FileDecisionSink, NullDecisionSink, serialise } from './file-decision-sink.ts';
