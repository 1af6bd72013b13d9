/**
 * A start's pass over the log file, apart from the tree: decode the frames (each CRC
 * checked), hash each leaf (RFC 9162) and read its decision id. The log then only puts the
 * results in order into its tree and indexes. Both halves are most of a restart's CPU, so a
 * large file is scanned on a worker thread (./log-scan-worker.ts) while the event loop builds
 * the tree from the batches already scanned; a small one on the calling thread, where a
 * thread's start would cost more than it saves. Either way the batches are the same.
 */
import { Worker } from 'node:worker_threads';
import { hashLeaf, HASH_BYTES } from '../merkle/hashing.ts';
import { decisionIdOf } from './event-encoding.ts';
import { FILE_HEADER_BYTES, FrameDecoder, RecordType, type FrameDamage, type LogRecord } from './record-format.ts';

/** The records of one chunk of the file, in file order, as a start needs them. */
export interface ScannedRecords {
  /** Each record's type. */
  readonly types: Uint8Array;
  /** Each record's index (a leaf's index; the tree size a checkpoint or anchor covers). */
  readonly indexes: Float64Array;
  /** Each record's byte offset in the file. */
  readonly offsets: Float64Array;
  /** The number of the first record in the file (the others follow on). */
  readonly firstRecordNumber: number;
  /** Each leaf's RFC 9162 leaf hash, HASH_BYTES each, in leaf order. */
  readonly leafHashes: Uint8Array;
  /** Each leaf's decision id (decisionIdOf), in leaf order. */
  readonly leafIds: ReadonlyArray<string | undefined>;
  /** The payload of each record that is not a leaf (a checkpoint, an anchor record), in order. */
  readonly otherPayloads: readonly Uint8Array[];
}

/** How the pass ended: where the last good frame ends, and the damage after it, if any. */
export interface ScanEnd {
  readonly goodEnd: number;
  readonly damage: FrameDamage | undefined;
}

/** A chunk's records as a start needs them: hashes and ids computed, payloads of leaves let go. */
export function scanRecords(records: readonly LogRecord[]): ScannedRecords {
  const count = records.length;
  const types = new Uint8Array(count);
  const indexes = new Float64Array(count);
  const offsets = new Float64Array(count);
  let leaves = 0;
  for (const record of records) if (record.type === RecordType.LEAF) leaves++;
  const leafHashes = new Uint8Array(leaves * HASH_BYTES);
  const leafIds: Array<string | undefined> = new Array<string | undefined>(leaves);
  const otherPayloads: Uint8Array[] = [];
  let leaf = 0;
  for (let k = 0; k < count; k++) {
    const record = records[k] as LogRecord;
    types[k] = record.type;
    indexes[k] = record.index;
    offsets[k] = record.offset;
    if (record.type === RecordType.LEAF) {
      leafHashes.set(hashLeaf(record.payload), leaf * HASH_BYTES);
      leafIds[leaf] = decisionIdOf(record.payload);
      leaf++;
    } else {
      // its own copy (a buffer of its own, which can be moved to another thread): the
      // payload may be a view of the whole chunk
      otherPayloads.push(new Uint8Array(record.payload));
    }
  }
  return { types, indexes, offsets, firstRecordNumber: records[0]?.recordNumber ?? 0, leafHashes, leafIds, otherPayloads };
}

/** The buffers a batch can hand to another thread instead of copying them. */
export function transferables(batch: ScannedRecords): ArrayBuffer[] {
  return [batch.types.buffer, batch.indexes.buffer, batch.offsets.buffer, batch.leafHashes.buffer, ...batch.otherPayloads.map((p) => p.buffer)] as ArrayBuffer[];
}

/** Reads into `buffer` from the file's byte `position`, resolving with the bytes read (a file handle's read, or fs.read on a descriptor). */
export type ReadAt = (buffer: Buffer, position: number) => Promise<number>;

export const READ_CHUNK_BYTES = 4 * 1024 * 1024;

/**
 * Scan the file from its first frame to `size`, a chunk at a time, handing each chunk's
 * records to `batch` (which may throw to stop the pass, or hold it back until it settles).
 * Stops at the first damaged frame.
 */
export async function scanFile(read: ReadAt, size: number, batch: (records: ScannedRecords) => void | Promise<void>): Promise<ScanEnd> {
  // each chunk read is new, so the records can be views of it (scanRecords keeps no leaf's payload)
  const decoder = new FrameDecoder(FILE_HEADER_BYTES, { copyPayloads: false });
  let position = FILE_HEADER_BYTES;
  while (position < size) {
    const chunk = Buffer.allocUnsafe(Math.min(READ_CHUNK_BYTES, size - position));
    const bytesRead = await read(chunk, position);
    if (bytesRead === 0) break;
    position += bytesRead;
    const records = decoder.push(chunk.subarray(0, bytesRead));
    if (records.length > 0) await batch(scanRecords(records));
    if (decoder.damage !== undefined) break;
  }
  const damage = decoder.finish();
  return { goodEnd: decoder.goodEnd, damage };
}

/** Files from this size on are scanned on a worker thread (see the header); smaller ones on the calling thread. */
export const SCAN_ON_THREAD_MIN_BYTES = 32 * 1024 * 1024;

const workerUrl = import.meta.url.endsWith('.ts')
  ? new URL('./log-scan-worker-entry.mjs', import.meta.url)
  : new URL('./log-scan-worker.js', import.meta.url);

/**
 * Batches the scanning thread posts before it waits for the first of them to be applied: it
 * stays at most this far ahead of the tree (a few chunks' hashes and ids in memory), never a
 * whole file's.
 */
export const SCAN_BATCHES_AHEAD = 4;

/** What the scanning thread posts: batches in file order, then how the pass ended (or why it failed). */
export type ScanMessage =
  | { readonly batch: ScannedRecords }
  | { readonly end: ScanEnd }
  | { readonly error: { readonly message: string; readonly code?: string; readonly errno?: number; readonly syscall?: string } };

/** What the caller answers for each batch once it is applied. */
export const BATCH_APPLIED = 'applied';

/**
 * `scanFile` on a worker thread, reading the open descriptor `fd` (the caller's, so the very
 * file it holds); `batch` runs on the calling thread as each chunk's records arrive, while
 * the thread scans the next. A `batch` that throws stops the pass with its error. The thread
 * is gone when the promise settles.
 */
export function scanFileOnThread(fd: number, size: number, batch: (records: ScannedRecords) => void): Promise<ScanEnd> {
  return new Promise<ScanEnd>((resolve, reject) => {
    const worker = new Worker(workerUrl, { workerData: { fd, size } });
    let settled = false;
    // settled once the thread has stopped, so it never reads the descriptor after the caller
    // goes on (and may close it)
    const settle = (outcome: () => void): void => {
      if (settled) return;
      settled = true;
      worker.terminate().then(outcome, outcome);
    };
    worker.on('message', (message: ScanMessage) => {
      if (settled) return;
      if ('batch' in message) {
        try {
          batch(message.batch);
          worker.postMessage(BATCH_APPLIED);
        } catch (error) {
          settle(() => reject(error));
        }
      } else if ('end' in message) {
        settle(() => resolve(message.end));
      } else {
        // as the calling thread's pass would fail, with the system error's fields kept
        const { message: text, ...fields } = message.error;
        settle(() => reject(Object.assign(new Error(`scanning the log file on a worker thread: ${text}`), fields)));
      }
    });
    worker.on('error', (error) => settle(() => reject(error)));
    worker.on('exit', (code) => settle(() => reject(new Error(`the thread reading the log file stopped (exit code ${code}) before it finished`))));
  });
}
