/**
 * A strict reader for the POSIX ustar / PAX tar archives that `opa build` writes.
 *
 * Bundles arrive from the network, so the reader trusts nothing: every header checksum is
 * verified, sizes are bounded by the decompressed buffer, only regular files (and the PAX
 * headers that describe them) are accepted, and names are normalised and refused when they
 * could escape the bundle (`..`, NUL, backslashes). It reads an already-decompressed buffer
 * (decompression with its own size limit happens in `archive.ts`).
 */
import { ErrorCodes, PavilionError } from '../lib/errors.ts';

export interface TarEntry {
  /** Normalised path, always starting with '/', e.g. '/.manifest', '/bank/data.json'. */
  readonly name: string;
  readonly data: Buffer;
}

const BLOCK = 512;

function corrupt(message: string): PavilionError {
  return new PavilionError(ErrorCodes.BUNDLE_CORRUPT, `bundle archive is corrupt: ${message}`);
}

function readString(block: Buffer, offset: number, length: number): string {
  const field = block.subarray(offset, offset + length);
  const nul = field.indexOf(0);
  return field.subarray(0, nul === -1 ? length : nul).toString('utf8');
}

function readOctal(block: Buffer, offset: number, length: number, what: string): number {
  const field = block.subarray(offset, offset + length);
  // GNU base-256 encoding for large values: refuse, bundles never need files > 8 GiB.
  if (((field[0] ?? 0) & 0x80) !== 0) throw corrupt(`${what} uses base-256 encoding`);
  const text = readString(block, offset, length).trim();
  if (text === '') return 0;
  if (!/^[0-7]+$/.test(text)) throw corrupt(`${what} is not an octal number`);
  return Number.parseInt(text, 8);
}

function verifyChecksum(block: Buffer): void {
  const stored = readOctal(block, 148, 8, 'header checksum');
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : (block[i] ?? 0);
  if (sum !== stored) throw corrupt('header checksum mismatch');
}

/** Parse PAX extended header records ("<len> key=value\n"). */
function parsePax(data: Buffer): Map<string, string> {
  const records = new Map<string, string>();
  let offset = 0;
  while (offset < data.length) {
    const space = data.indexOf(0x20, offset);
    if (space === -1) throw corrupt('malformed PAX record');
    const length = Number.parseInt(data.subarray(offset, space).toString('ascii'), 10);
    if (!Number.isSafeInteger(length) || length <= 0 || offset + length > data.length) {
      throw corrupt('malformed PAX record length');
    }
    const record = data.subarray(space + 1, offset + length - 1).toString('utf8');
    const eq = record.indexOf('=');
    if (eq === -1) throw corrupt('malformed PAX record');
    records.set(record.slice(0, eq), record.slice(eq + 1));
    offset += length;
  }
  return records;
}

/**
 * Normalise an archive path to '/a/b'. Refuses anything that could leave the bundle.
 * Returns undefined for directory-like names ('', '/', './').
 */
export function normaliseEntryName(raw: string): string | undefined {
  if (raw.includes('\0') || raw.includes('\\')) {
    throw new PavilionError(ErrorCodes.BUNDLE_PATH_TRAVERSAL, `bundle entry name ${JSON.stringify(raw)} is not allowed`);
  }
  const parts: string[] = [];
  for (const part of raw.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      throw new PavilionError(
        ErrorCodes.BUNDLE_PATH_TRAVERSAL,
        `bundle entry ${JSON.stringify(raw)} tries to leave the bundle`,
      );
    }
    parts.push(part);
  }
  return parts.length === 0 ? undefined : `/${parts.join('/')}`;
}

const USTAR_MAGIC = Buffer.from('ustar\0', 'latin1');

export function readTar(archive: Buffer): TarEntry[] {
  const entries: TarEntry[] = [];
  const seen = new Set<string>();
  let offset = 0;
  let paxName: string | undefined;
  let paxSize: number | undefined;
  let longName: string | undefined;

  while (offset + BLOCK <= archive.length) {
    const header = archive.subarray(offset, offset + BLOCK);
    if (header.every((byte) => byte === 0)) break; // end-of-archive marker
    verifyChecksum(header);

    const type = String.fromCharCode(header[156] ?? 0);
    let size = readOctal(header, 124, 12, 'entry size');
    if (paxSize !== undefined && (type === '0' || type === '\0')) size = paxSize;
    const dataStart = offset + BLOCK;
    const dataEnd = dataStart + size;
    if (dataEnd > archive.length) throw corrupt('entry extends past the end of the archive');
    const data = archive.subarray(dataStart, dataEnd);
    offset = dataStart + Math.ceil(size / BLOCK) * BLOCK;

    // POSIX ustar ("ustar\0" "00") has a name prefix at 345; the old GNU format ("ustar  \0")
    // keeps times there, which must not be read as a path
    const posix = header.subarray(257, 263).equals(USTAR_MAGIC);
    const prefix = posix ? readString(header, 345, 155) : '';
    const headerName = prefix === '' ? readString(header, 0, 100) : `${prefix}/${readString(header, 0, 100)}`;

    switch (type) {
      case 'x': {
        const pax = parsePax(data);
        paxName = pax.get('path');
        const sizeText = pax.get('size');
        if (sizeText !== undefined && !/^\d{1,15}$/.test(sizeText)) throw corrupt(`PAX size ${JSON.stringify(sizeText)} is not a decimal byte count`);
        paxSize = sizeText === undefined ? undefined : Number(sizeText);
        continue;
      }
      case 'g':
        continue; // global PAX header: nothing in it concerns us
      case 'L':
        longName = readString(data, 0, data.length);
        continue;
      case '5':
        paxName = undefined;
        paxSize = undefined;
        longName = undefined;
        continue; // directories carry no content
      case '0':
      case '\0': {
        const raw = paxName ?? longName ?? headerName;
        paxName = undefined;
        paxSize = undefined;
        longName = undefined;
        const name = normaliseEntryName(raw);
        if (name === undefined) throw corrupt(`regular file with an empty name`);
        if (seen.has(name)) throw corrupt(`duplicate entry ${name}`);
        seen.add(name);
        entries.push({ name, data: Buffer.from(data) });
        continue;
      }
      default:
        throw new PavilionError(
          ErrorCodes.BUNDLE_UNEXPECTED_ENTRY,
          `bundle entry ${JSON.stringify(headerName)} has type '${type}'; only regular files are allowed (no links or devices)`,
        );
    }
  }
  if (entries.length === 0) throw corrupt('archive contains no files');
  return entries;
}

function octalField(value: number, length: number): string {
  return `${value.toString(8).padStart(length - 1, '0')}\0`;
}

/**
 * Write regular files as a ustar archive (what `pavilion bundle sign` repacks). Names keep
 * their leading '/', as `opa build` writes them (OPA's loader matches the manifest's
 * `/policy.wasm` against them); names over 100 bytes use the ustar prefix field, and names
 * that fit neither are refused.
 */
export function writeTar(entries: readonly TarEntry[]): Buffer {
  const blocks: Buffer[] = [];
  for (const entry of entries) {
    const name = entry.name.startsWith('/') ? entry.name : `/${entry.name}`;
    const header = Buffer.alloc(BLOCK);
    let prefix = '';
    let base = name;
    if (Buffer.byteLength(name) > 100) {
      const cut = name.lastIndexOf('/', name.length - 1);
      prefix = cut > 0 ? name.slice(0, cut) : '';
      base = cut > 0 ? name.slice(cut + 1) : name;
      if (Buffer.byteLength(prefix) > 155 || Buffer.byteLength(base) > 100 || prefix === '') {
        throw new PavilionError(ErrorCodes.BUNDLE_CORRUPT, `file name too long for a tar archive: ${name}`);
      }
    }
    header.write(base, 0, 100, 'utf8');
    header.write(octalField(0o644, 8), 100);
    header.write(octalField(0, 8), 108);
    header.write(octalField(0, 8), 116);
    header.write(octalField(entry.data.length, 12), 124);
    header.write(octalField(0, 12), 136);
    header.write('        ', 148);
    header.write('0', 156);
    header.write('ustar\0', 257);
    header.write('00', 263);
    header.write(prefix, 345, 155, 'utf8');
    let sum = 0;
    for (const byte of header) sum += byte;
    header.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
    blocks.push(header, entry.data, Buffer.alloc((BLOCK - (entry.data.length % BLOCK)) % BLOCK));
  }
  blocks.push(Buffer.alloc(2 * BLOCK));
  return Buffer.concat(blocks);
}
