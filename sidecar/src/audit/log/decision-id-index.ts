/**
 * The decision id of every leaf of a log, and the leaf of every decision id, packed outside
 * the JavaScript heap. Pure.
 *
 * A log keeps both for as long as it runs: the forwarder names each streamed event by its
 * id, and a proof is asked for by id. Kept as a string per leaf and a Map entry per id, they
 * were the only per-leaf objects of a log (the tree and the offsets are packed already): about
 * 100 bytes each, all on the heap the garbage collector traces, and a Map holds at most 2^24
 * entries (the 16,777,217th decision of a log without rotation would have failed). Here:
 *
 * - the ids' UTF-8 bytes follow one another in one growing buffer, with a start and a length
 *   per leaf (a length of -1: the leaf's event carries no id);
 * - an open-addressing hash table (linear probing, at most half full) maps an id to the leaf
 *   that carries it, compared byte for byte, so a lookup never answers for another id. Like
 *   Map.set, a later leaf with the same id takes it over.
 *
 * About 65 bytes per leaf for a UUID (36 for its bytes, 12 for where they are, 4 for its hash,
 * 8 to 16 for the table, which doubles), none of it traced by the garbage collector: at 10^6
 * UUIDs 61 MB resident and a 4 ms full collection, where the strings and Map took 137 MB and
 * 64 ms. The id buffer grows up to the largest Buffer the runtime allows (2^32 bytes on Node
 * 20, some 10^8 UUIDs); the log refuses leaves past 2^26 (MAX_LEAVES_PER_LOG), before it or
 * the tree's leaf level would stop growing, and asks `prepare` before it queues a frame, so
 * that an allocation refused here refuses the decision (ERR_AUDIT_LOG_FULL) instead of
 * failing after its frame is queued.
 */
import { randomInt } from 'node:crypto';
import { ErrorCodes, PavilionError } from '../../lib/errors.ts';
import { withRoom } from '../../lib/with-room.ts';

const NO_ID = -1;
/** Slots of the hash table hold leaf index + 1; 0 is an empty slot. */
const EMPTY = 0;

export class DecisionIdIndex {
  #bytes = Buffer.alloc(64 * 1024);
  #used = 0;
  #starts = new Float64Array(1024);
  #lengths = new Int32Array(1024);
  /** Each leaf's hash, so that growing the table or a rewind never hashes an id again. */
  #hashes = new Uint32Array(1024);
  #count = 0;
  #slots = new Uint32Array(2048);
  #filled = 0;
  /** Leaves whose id an earlier leaf also carries (then a rewind rebuilds the table). */
  #repeats = 0;
  #scratch = Buffer.alloc(256);
  /** Per process, so that which ids share a probe sequence cannot be known in advance. */
  readonly #seed = randomInt(0x7fffffff);

  /** Number of leaves. */
  get size(): number {
    return this.#count;
  }

  /**
   * Make room for one more leaf with `id`, so that the `push` after it cannot fail: a log calls
   * this before it queues the leaf's frame. Throws (an allocation the runtime refuses) only here.
   */
  prepare(id: string | undefined): void {
    const leaves = this.#count + 1;
    this.#starts = withRoom(this.#starts, leaves, this.#count, (length) => new Float64Array(length));
    this.#lengths = withRoom(this.#lengths, leaves, this.#count, (length) => new Int32Array(length));
    this.#hashes = withRoom(this.#hashes, leaves, this.#count, (length) => new Uint32Array(length));
    if (id === undefined) return;
    this.#bytes = withRoom(this.#bytes, this.#used + Buffer.byteLength(id, 'utf8'), this.#used, (length) => Buffer.alloc(length));
    if ((this.#filled + 1) * 2 > this.#slots.length) this.#rebuild(this.#slots.length * 2);
  }

  /** Add the next leaf, with its event's decision id (undefined: it has none). */
  push(id: string | undefined): void {
    this.prepare(id);
    const leaf = this.#count++;
    this.#starts[leaf] = this.#used;
    if (id === undefined) {
      this.#lengths[leaf] = NO_ID;
      return;
    }
    const length = this.#bytes.write(id, this.#used, 'utf8');
    this.#lengths[leaf] = length;
    this.#hashes[leaf] = this.#hash(this.#bytes, this.#used, length);
    this.#used += length;
    this.#insert(leaf);
  }

  /** The decision id of leaf `index`, or undefined when its event has none; ERR_AUDIT_MERKLE_RANGE past the leaves. */
  at(index: number): string | undefined {
    if (!Number.isSafeInteger(index) || index < 0 || index >= this.#count) {
      throw new PavilionError(ErrorCodes.AUDIT_MERKLE_RANGE, `no leaf ${index}`, { details: { leafIndex: index } });
    }
    const length = this.#lengths[index]!;
    if (length === NO_ID) return undefined;
    const start = this.#starts[index]!;
    return this.#bytes.toString('utf8', start, start + length);
  }

  /** The last leaf whose event carries `id`, or undefined. */
  indexOf(id: string): number | undefined {
    const length = Buffer.byteLength(id, 'utf8');
    if (length > this.#scratch.length) this.#scratch = Buffer.alloc(Math.max(length, this.#scratch.length * 2));
    this.#scratch.write(id, 0, length, 'utf8');
    const hash = this.#hash(this.#scratch, 0, length);
    const mask = this.#slots.length - 1;
    for (let slot = hash & mask; ; slot = (slot + 1) & mask) {
      const held = this.#slots[slot]!;
      if (held === EMPTY) return undefined;
      if (this.#carries(held - 1, hash, this.#scratch, 0, length)) return held - 1;
    }
  }

  /**
   * Forget the leaves from `count` on (a rewind): each one's slot is emptied, newest first, so
   * the work is the leaves removed, not the log (#remove). An id that was logged more than once is found
   * at an earlier leaf again: while the log holds such a repeat, the table is rebuilt instead.
   */
  truncate(count: number): void {
    const keep = Math.max(0, count);
    if (keep >= this.#count) return;
    if (this.#repeats > 0) {
      this.#count = keep;
      this.#used = this.#starts[keep]!;
      this.#rebuild(this.#slots.length);
      return;
    }
    for (let leaf = this.#count - 1; leaf >= keep; leaf--) if (this.#lengths[leaf] !== NO_ID) this.#remove(leaf);
    this.#count = keep;
    this.#used = this.#starts[keep]!;
  }

  /**
   * Empty the slot of `leaf`, the newest leaf left. Entries are removed newest first, so this
   * undoes its insert: a probe run only ever went past entries inserted before it (a rebuild
   * inserts in leaf order too), so no newer entry sits beyond this slot, and none has to move.
   */
  #remove(leaf: number): void {
    const mask = this.#slots.length - 1;
    for (let slot = this.#hashes[leaf]! & mask; ; slot = (slot + 1) & mask) {
      const held = this.#slots[slot];
      if (held === EMPTY) return; // not in the table (cannot happen without repeats): nothing to empty
      if (held !== leaf + 1) continue;
      this.#slots[slot] = EMPTY;
      this.#filled--;
      return;
    }
  }

  #insert(leaf: number): void {
    const start = this.#starts[leaf]!;
    const length = this.#lengths[leaf]!;
    const hash = this.#hashes[leaf]!;
    const mask = this.#slots.length - 1;
    for (let slot = hash & mask; ; slot = (slot + 1) & mask) {
      const held = this.#slots[slot]!;
      if (held === EMPTY) {
        this.#slots[slot] = leaf + 1;
        this.#filled++;
        return;
      }
      if (this.#carries(held - 1, hash, this.#bytes, start, length)) {
        this.#slots[slot] = leaf + 1; // the same id again: the later leaf, as Map.set
        this.#repeats++;
        return;
      }
    }
  }

  /** Whether `leaf` carries the id of `length` bytes at `start` in `bytes`, whose hash is `hash`. */
  #carries(leaf: number, hash: number, bytes: Buffer, start: number, length: number): boolean {
    if (this.#hashes[leaf] !== hash || this.#lengths[leaf] !== length) return false;
    const at = this.#starts[leaf]!;
    return bytes.compare(this.#bytes, at, at + length, start, start + length) === 0;
  }

  /** A table of `capacity` slots holding every leaf below `#count` (later leaves win a shared id). */
  #rebuild(capacity: number): void {
    this.#slots = new Uint32Array(capacity);
    this.#filled = 0;
    this.#repeats = 0;
    for (let leaf = 0; leaf < this.#count; leaf++) if (this.#lengths[leaf] !== NO_ID) this.#insert(leaf);
  }

  /** FNV-1a over the bytes, seeded, with a final avalanche so that low bits index well. */
  #hash(bytes: Buffer, start: number, length: number): number {
    let h = (0x811c9dc5 ^ this.#seed) >>> 0;
    for (let i = start; i < start + length; i++) h = Math.imul(h ^ bytes[i]!, 0x01000193);
    h ^= h >>> 16;
    h = Math.imul(h, 0x85ebca6b);
    h ^= h >>> 13;
    return h >>> 0;
  }
}
