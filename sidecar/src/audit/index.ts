/** Audit: decision events and where they go. */
export type { DecisionEventV1, DecisionSink } from './decision-event.ts';
export { FileDecisionSink, NullDecisionSink } from './file-decision-sink.ts';
