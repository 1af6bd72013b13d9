/**
 * `multipart/form-data` bodies as opa-envoy-plugin parses them (Go's `mime.ParseMediaType`
 * and `mime/multipart`): `{name: [value, ...]}` where a part whose own Content-Type contains
 * `application/json` contributes its parsed JSON and any other part its text; parts that are
 * not `form-data` or have no name are skipped; a missing `boundary` parameter means no
 * parsed body; a malformed body is an error (upstream answers those with a 400).
 *
 * Limits: `Content-Transfer-Encoding: quoted-printable` parts (which Go decodes) are taken
 * as they are; only the structure Go's reader accepts for well-formed bodies is reproduced,
 * and error messages differ from Go's.
 */
import { ErrorCodes, PavilionError } from '../lib/errors.ts';

function invalid(message: string): PavilionError {
  return new PavilionError(ErrorCodes.EXTAUTHZ_REQUEST_INVALID, message);
}

export interface MediaType {
  readonly type: string;
  readonly params: Readonly<Record<string, string>>;
}

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+/;

/** `mime.ParseMediaType`: a lower-cased type and lower-cased parameter names. */
export function parseMediaType(value: string): MediaType {
  const semi = value.indexOf(';');
  const type = (semi === -1 ? value : value.slice(0, semi)).trim().toLowerCase();
  if (type === '') throw invalid('mime: no media type');
  const params: Record<string, string> = Object.create(null) as Record<string, string>;
  let rest = semi === -1 ? '' : value.slice(semi);
  while (rest.trim() !== '') {
    rest = rest.replace(/^\s*;\s*/, '');
    if (rest === '') break;
    const key = TOKEN.exec(rest)?.[0];
    if (key === undefined || rest[key.length] !== '=') throw invalid('mime: invalid media parameter');
    rest = rest.slice(key.length + 1);
    let paramValue: string;
    if (rest.startsWith('"')) {
      let i = 1;
      let text = '';
      for (; i < rest.length && rest[i] !== '"'; i++) {
        if (rest[i] === '\\' && i + 1 < rest.length) i++;
        text += rest[i];
      }
      if (i >= rest.length) throw invalid('mime: invalid media parameter');
      paramValue = text;
      rest = rest.slice(i + 1);
    } else {
      const token = TOKEN.exec(rest)?.[0];
      if (token === undefined) throw invalid('mime: invalid media parameter');
      paramValue = token;
      rest = rest.slice(token.length);
    }
    const name = key.toLowerCase();
    if (name in params && params[name] !== paramValue) throw invalid('mime: duplicate parameter name');
    params[name] = paramValue;
    if (rest.trim() !== '' && !/^\s*;/.test(rest)) throw invalid('mime: invalid media parameter');
  }
  return { type, params };
}

function lineEnd(text: string, from: number): number {
  const nl = text.indexOf('\n', from);
  return nl === -1 ? text.length : nl;
}

/** After a `--boundary` at `at`: 'final', 'next' (with where the next line starts), or undefined. */
function delimiterAt(text: string, at: number, dash: string): { kind: 'final' | 'next'; next: number; crlf: boolean } | undefined {
  if (!text.startsWith(dash, at)) return undefined;
  const after = at + dash.length;
  if (text.startsWith('--', after)) return { kind: 'final', next: text.length, crlf: false };
  const end = lineEnd(text, after);
  if (end === text.length) return undefined;
  const rest = text.slice(after, end);
  const crlf = rest.endsWith('\r');
  if (!/^[ \t]*$/.test(crlf ? rest.slice(0, -1) : rest)) return undefined;
  return { kind: 'next', next: end + 1, crlf };
}

export function parseMultipartForm(payload: string, boundary: string): Record<string, unknown[]> {
  const dash = `--${boundary}`;
  const values: Record<string, unknown[]> = Object.create(null) as Record<string, unknown[]>;
  // preamble: skip lines until the first delimiter line
  let pos = 0;
  let delimiter: ReturnType<typeof delimiterAt>;
  for (;;) {
    delimiter = delimiterAt(payload, pos, dash);
    if (delimiter !== undefined) break;
    const end = lineEnd(payload, pos);
    if (end >= payload.length) throw invalid('multipart: NextPart: EOF');
    pos = end + 1;
  }
  const nl = delimiter.crlf ? '\r\n' : '\n';
  while (delimiter.kind === 'next') {
    // part headers, up to an empty line
    pos = delimiter.next;
    const headers: Record<string, string> = Object.create(null) as Record<string, string>;
    for (;;) {
      const end = lineEnd(payload, pos);
      if (end >= payload.length) throw invalid('multipart: NextPart: unexpected EOF in part headers');
      const line = payload.slice(pos, end).replace(/\r$/, '');
      pos = end + 1;
      if (line === '') break;
      const colon = line.indexOf(':');
      if (colon <= 0) throw invalid(`malformed MIME header line: ${line.slice(0, 64)}`);
      const name = line.slice(0, colon).trim().toLowerCase();
      headers[name] ??= line.slice(colon + 1).trim();
    }
    // part body, up to the next delimiter (which may open the body when it is empty)
    const bodyStart = pos;
    let bodyEnd: number;
    let next = delimiterAt(payload, bodyStart, dash);
    if (next !== undefined) {
      bodyEnd = bodyStart;
    } else {
      let search = bodyStart;
      for (;;) {
        const at = payload.indexOf(`${nl}${dash}`, search);
        if (at === -1) throw invalid('multipart: unexpected EOF in part body');
        next = delimiterAt(payload, at + nl.length, dash);
        if (next !== undefined) {
          bodyEnd = at;
          break;
        }
        search = at + 1;
      }
    }
    const disposition = headers['content-disposition'];
    if (disposition !== undefined) {
      const parsed = parseMediaType(disposition);
      const name = parsed.type === 'form-data' ? parsed.params['name'] : undefined;
      if (name !== undefined && name !== '') {
        const text = payload.slice(bodyStart, bodyEnd);
        let value: unknown = text;
        if ((headers['content-type'] ?? '').includes('application/json')) {
          try {
            value = JSON.parse(text);
          } catch (error) {
            throw invalid(`multipart part ${JSON.stringify(name)}: ${(error as Error).message}`);
          }
        }
        (values[name] ??= []).push(value);
      }
    }
    delimiter = next;
  }
  return values;
}
