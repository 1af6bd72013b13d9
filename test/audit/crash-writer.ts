/**
 * Child process for the crash-safety test: opens the audit log in argv[2] with the key in
 * argv[3], prints its recovery report, then appends decisions as fast as it can (32 in
 * flight) and prints "ack <decision id>" for each acknowledged one, until it is killed.
 * stdout is a pipe, which Node writes synchronously on Linux, so a printed ack was
 * acknowledged before the kill.
 */
import { SoftwareSigner } from '../../sidecar/src/audit/log/index.ts';
import { decisionEvent, openLog } from './fixtures.ts';

const [directory, keyFile] = process.argv.slice(2);
if (directory === undefined || keyFile === undefined) throw new Error('usage: crash-writer <dir> <key file>');
const log = await openLog(directory, SoftwareSigner.loadOrCreate(keyFile), { checkpointEveryEvents: 50, fsync: 'always' });
process.stdout.write(`recovery ${JSON.stringify(log.recovery)}\n`);
let n = 0;
const worker = async (): Promise<void> => {
  for (;;) {
    const event = decisionEvent(n++, { decision_id: `${process.pid}-${n}` });
    const receipt = await log.append(event);
    process.stdout.write(`ack ${receipt.decision_id} ${receipt.leaf_index}\n`);
  }
};
await Promise.all(Array.from({ length: 32 }, () => worker()));
