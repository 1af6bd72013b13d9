/**
 * The audit log's on-disk format (version 1). Pure: no I/O.
 *
 *   file   = header frame*
 *   header = "PAVAUDIT" (8 bytes) u32be version (= 1) u32be crc32(the 12 bytes before)
 *   frame  = u32be payloadLength  u8 type  u32be indexHigh  u32be indexLow  payload  u32be crc32
 *
 * The CRC-32 (node:zlib, ISO-HDLC, as gzip's) covers every byte of the frame before it, so a
 * frame cut short, zero-filled or flipped anywhere is detected. `type` 1 is a leaf (payload:
 * the decision event's canonical JSON, `index` its leaf index = sequence number); type 2 is
 * a signed checkpoint (payload: its JSON, `index` the tree size it covers); type 3 an anchor
 * record (payload: its JSON, `index` the tree size of the checkpoint it anchors). The CRC detects
 * accidents, not attacks: tampering is caught by the Merkle tree and the signed checkpoints.
 */
import { crc32 } from 'node:zlib';

export const FILE_MAGIC = Buffer.from('PAVAUDIT', 'latin1');
export const FORMAT_VERSION = 1;
export const FILE_HEADER_BYTES = 16;
export const FRAME_OVERHEAD_BYTES = 17;
/** No record is larger; a length field above it is corruption, not a reason to allocate. */
export const MAX_PAYLOAD_BYTES = 64 * 1024 * 1024;

export const RecordType = { LEAF: 1, CHECKPOINT: 2, ANCHOR: 3 } as const;
export type RecordType = (typeof RecordType)[keyof typeof RecordType];

export interface LogRecord {
  readonly type: RecordType;
  readonly index: number;
  readonly payload: Buffer;
  /** Byte offset of the frame in the file. */
  readonly offset: number;
  /** Number of the record in the file, from 0 (leaves and checkpoints together). */
  readonly recordNumber: number;
}

export type FrameFailure = 'short_header' | 'short_frame' | 'length_invalid' | 'type_unknown' | 'crc_mismatch';

export interface FrameDamage {
  readonly reason: FrameFailure;
  /** Where the first bad frame starts. */
  readonly offset: number;
  readonly recordNumber: number;
}

export function fileHeader(): Buffer {
  const header = Buffer.alloc(FILE_HEADER_BYTES);
  FILE_MAGIC.copy(header, 0);
  header.writeUInt32BE(FORMAT_VERSION, 8);
  header.writeUInt32BE(crc32(header.subarray(0, 12)), 12);
  return header;
}

/** Why a header is not ours, or undefined when it is. */
export function checkFileHeader(bytes: Buffer): string | undefined {
  if (bytes.length < FILE_HEADER_BYTES) return `the file is ${bytes.length} bytes, shorter than the ${FILE_HEADER_BYTES}-byte header`;
  if (!bytes.subarray(0, 8).equals(FILE_MAGIC)) return 'the file does not start with the audit log magic "PAVAUDIT"';
  if (bytes.readUInt32BE(12) !== crc32(bytes.subarray(0, 12))) return 'the file header checksum does not match';
  const version = bytes.readUInt32BE(8);
  if (version !== FORMAT_VERSION) return `format version ${version} is not supported (this build reads ${FORMAT_VERSION})`;
  return undefined;
}

export function encodeFrame(type: RecordType, index: number, payload: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(FRAME_OVERHEAD_BYTES + payload.length);
  frame.writeUInt32BE(payload.length, 0);
  frame.writeUInt8(type, 4);
  frame.writeUInt32BE(Math.floor(index / 2 ** 32), 5);
  frame.writeUInt32BE(index % 2 ** 32, 9);
  frame.set(payload, 13);
  frame.writeUInt32BE(crc32(frame.subarray(0, 13 + payload.length)), 13 + payload.length);
  return frame;
}

/**
 * Incremental frame decoder: feed file bytes in order (after the header) with `push`, take
 * the complete frames; `finish` says whether the input ended cleanly. After the first bad
 * frame it stops decoding (everything from there on is reported, never guessed at).
 */
export class FrameDecoder {
  #buffered: Buffer = Buffer.alloc(0);
  #offset: number;
  #records = 0;
  #damage: FrameDamage | undefined;

  readonly #copyPayloads: boolean;

  /**
   * `copyPayloads` false: each record's payload is a view of the chunk it came in, for a
   * caller that pushes chunks it does not reuse and keeps no payload for long (a start that
   * reads a whole log: a copy per record was a tenth of its time). Default true: a payload
   * kept does not hold its whole chunk in memory.
   */
  constructor(startOffset: number = FILE_HEADER_BYTES, { copyPayloads = true }: { copyPayloads?: boolean } = {}) {
    this.#offset = startOffset;
    this.#copyPayloads = copyPayloads;
  }

  /** Offset just past the last good frame. */
  get goodEnd(): number {
    return this.#offset;
  }

  get damage(): FrameDamage | undefined {
    return this.#damage;
  }

  push(chunk: Buffer): LogRecord[] {
    if (this.#damage !== undefined) return [];
    this.#buffered = this.#buffered.length === 0 ? chunk : Buffer.concat([this.#buffered, chunk]);
    const out: LogRecord[] = [];
    let at = 0;
    const buf = this.#buffered;
    while (buf.length - at >= FRAME_OVERHEAD_BYTES) {
      const length = buf.readUInt32BE(at);
      const type = buf.readUInt8(at + 4);
      if (length > MAX_PAYLOAD_BYTES) {
        this.#damage = { reason: 'length_invalid', offset: this.#offset, recordNumber: this.#records };
        break;
      }
      if (buf.length - at < FRAME_OVERHEAD_BYTES + length) break;
      const crc = buf.readUInt32BE(at + 13 + length);
      if (crc !== crc32(buf.subarray(at, at + 13 + length))) {
        this.#damage = { reason: 'crc_mismatch', offset: this.#offset, recordNumber: this.#records };
        break;
      }
      if (type !== RecordType.LEAF && type !== RecordType.CHECKPOINT && type !== RecordType.ANCHOR) {
        this.#damage = { reason: 'type_unknown', offset: this.#offset, recordNumber: this.#records };
        break;
      }
      const index = buf.readUInt32BE(at + 5) * 2 ** 32 + buf.readUInt32BE(at + 9);
      out.push({
        type,
        index,
        payload: this.#copyPayloads ? Buffer.from(buf.subarray(at + 13, at + 13 + length)) : buf.subarray(at + 13, at + 13 + length),
        offset: this.#offset,
        recordNumber: this.#records,
      });
      this.#records++;
      this.#offset += FRAME_OVERHEAD_BYTES + length;
      at += FRAME_OVERHEAD_BYTES + length;
    }
    this.#buffered = this.#damage === undefined ? buf.subarray(at) : Buffer.alloc(0);
    return out;
  }

  /** The damage at the end of the input, if any (an incomplete frame counts). */
  finish(): FrameDamage | undefined {
    if (this.#damage === undefined && this.#buffered.length > 0) {
      this.#damage = {
        reason: this.#buffered.length < FRAME_OVERHEAD_BYTES ? 'short_header' : 'short_frame',
        offset: this.#offset,
        recordNumber: this.#records,
      };
    }
    return this.#damage;
  }
}
