/**
 * Translation of Go regexp (RE2) syntax into an equivalent JavaScript RegExp (`u` mode), and
 * Go's match iteration and replacement-template semantics on top of it.
 *
 * Handled: the flags s, m and U anywhere (`(?s)`, `(?m:...)`, ...) and i when the pattern
 * starts with it; `.`, `^`, `$` with Go's newline-only semantics; \A and \z; Go's ASCII \s;
 * \Q...\E; \x{...}, octal and \a escapes; escaped ASCII punctuation; \pN, \p{Greek}
 * (scripts), \p{^X}; POSIX classes [[:alpha:]] and [[:^alpha:]]; Perl and negated classes
 * inside brackets; (?P<name>...) groups; literal braces and brackets where RE2 treats them
 * literally; the repeat-count limit of 1000. Patterns RE2 rejects (look-around,
 * backreferences, ...) are rejected here too.
 *
 * Known limits (the pattern is refused, so the builtin is undefined): turning case folding on
 * or off anywhere but with a leading `(?i)` or a `(?i:...)` spanning the whole pattern (so
 * `a(?i)b` and `(?i:a)b` are refused), capture names that are not JavaScript identifiers, \C.
 * Matching itself is backtracking rather than RE2's linear-time automaton, so results agree
 * (both are leftmost-first) but pathological patterns can be slow; with (?i), \w and \b also
 * fold U+017F and U+212A as JavaScript does.
 */

import { builtinFailure } from './common.ts';

export interface GoRegexp {
  readonly regexp: RegExp;
  /** Capture group names by group number (index 0 is the whole match; '' for unnamed). */
  readonly groupNames: readonly string[];
}

function reject(): never {
  throw builtinFailure('unsupported regular expression');
}

type CodeRange = readonly [number, number];

const MAX_CODE_POINT = 0x10ffff;

const PERL_CLASSES: Readonly<Record<string, readonly CodeRange[]>> = {
  d: [[0x30, 0x39]],
  s: [
    [0x09, 0x0a],
    [0x0c, 0x0d],
    [0x20, 0x20],
  ],
  w: [
    [0x30, 0x39],
    [0x41, 0x5a],
    [0x5f, 0x5f],
    [0x61, 0x7a],
  ],
};

const POSIX_CLASSES: Readonly<Record<string, readonly CodeRange[]>> = {
  alnum: [
    [0x30, 0x39],
    [0x41, 0x5a],
    [0x61, 0x7a],
  ],
  alpha: [
    [0x41, 0x5a],
    [0x61, 0x7a],
  ],
  ascii: [[0x00, 0x7f]],
  blank: [
    [0x09, 0x09],
    [0x20, 0x20],
  ],
  cntrl: [
    [0x00, 0x1f],
    [0x7f, 0x7f],
  ],
  digit: [[0x30, 0x39]],
  graph: [[0x21, 0x7e]],
  lower: [[0x61, 0x7a]],
  print: [[0x20, 0x7e]],
  punct: [
    [0x21, 0x2f],
    [0x3a, 0x40],
    [0x5b, 0x60],
    [0x7b, 0x7e],
  ],
  space: [
    [0x09, 0x0d],
    [0x20, 0x20],
  ],
  upper: [[0x41, 0x5a]],
  word: [
    [0x30, 0x39],
    [0x41, 0x5a],
    [0x5f, 0x5f],
    [0x61, 0x7a],
  ],
  xdigit: [
    [0x30, 0x39],
    [0x41, 0x46],
    [0x61, 0x66],
  ],
};

const GENERAL_CATEGORIES = new Set([
  'C', 'Cc', 'Cf', 'Co', 'Cs', 'L', 'Ll', 'Lm', 'Lo', 'Lt', 'Lu', 'M', 'Mc', 'Me', 'Mn', 'N', 'Nd', 'Nl', 'No',
  'P', 'Pc', 'Pd', 'Pe', 'Pf', 'Pi', 'Po', 'Ps', 'S', 'Sc', 'Sk', 'Sm', 'So', 'Z', 'Zl', 'Zp', 'Zs', 'Any',
]);

function complement(ranges: readonly CodeRange[]): CodeRange[] {
  const out: CodeRange[] = [];
  let next = 0;
  for (const [lo, hi] of ranges) {
    if (lo > next) out.push([next, lo - 1]);
    next = hi + 1;
  }
  if (next <= MAX_CODE_POINT) out.push([next, MAX_CODE_POINT]);
  return out;
}

function classChar(cp: number): string {
  return `\\u{${cp.toString(16)}}`;
}

function rangesText(ranges: readonly CodeRange[]): string {
  return ranges.map(([lo, hi]) => (lo === hi ? classChar(lo) : `${classChar(lo)}-${classChar(hi)}`)).join('');
}

const JS_SYNTAX = new Set(['^', '$', '\\', '.', '*', '+', '?', '(', ')', '[', ']', '{', '}', '|', '/']);

function literal(ch: string): string {
  return JS_SYNTAX.has(ch) ? `\\${ch}` : ch;
}

function isAsciiAlnum(ch: string): boolean {
  return /^[0-9A-Za-z]$/.test(ch);
}

interface Flags {
  /** (?s): `.` matches \n. */
  dotAll: boolean;
  /** (?m): `^` and `$` match at line breaks. */
  multiLine: boolean;
  /** (?U): quantifiers are lazy unless followed by `?`. */
  ungreedy: boolean;
}

class Translator {
  private readonly src: string[];
  private pos = 0;
  private caseInsensitive = false;
  private flags: Flags = { dotAll: false, multiLine: false, ungreedy: false };
  private readonly saved: Flags[] = [];
  /** Depth of a leading `(?i:...)` group, which may only end at the end of the pattern. */
  private caseGroupDepth = -1;
  readonly groupNames: string[] = [''];

  constructor(pattern: string) {
    this.src = Array.from(pattern);
  }

  get jsFlags(): string {
    return this.caseInsensitive ? 'iu' : 'u';
  }

  private peek(offset = 0): string | undefined {
    return this.src[this.pos + offset];
  }

  private rest(): string {
    return this.src.slice(this.pos).join('');
  }

  translate(): string {
    // A leading (?i) becomes the JavaScript `i` flag; (?i) anywhere else cannot be expressed.
    // So does a leading (?i:...) group that spans the whole pattern.
    const leading = /^\(\?([imsU]*)(?:-[msU]*)?([):])/.exec(this.rest());
    if (leading !== null && (leading[1] ?? '').includes('i')) {
      this.caseInsensitive = true;
      if (leading[2] === ':') this.caseGroupDepth = 1;
    }
    let out = '';
    while (this.pos < this.src.length) out += this.atom();
    if (this.saved.length !== 0) reject();
    return out;
  }

  /** Apply a flag string like `is-m`; returns false when it needs an unsupported change. */
  private applyFlags(text: string): void {
    let negate = false;
    for (const flag of text) {
      if (flag === '-') {
        if (negate) reject();
        negate = true;
        continue;
      }
      const value = !negate;
      if (flag === 'i') {
        if (value !== this.caseInsensitive) reject();
      } else if (flag === 's') this.flags.dotAll = value;
      else if (flag === 'm') this.flags.multiLine = value;
      else if (flag === 'U') this.flags.ungreedy = value;
      else reject();
    }
    if (negate && text.endsWith('-')) reject();
  }

  /** The lazy marker for a quantifier just emitted, honouring (?U). */
  private quantifierSuffix(): string {
    let lazy = false;
    if (this.peek() === '?') {
      lazy = true;
      this.pos++;
    }
    return lazy !== this.flags.ungreedy ? '?' : '';
  }

  private atom(): string {
    const ch = this.peek() as string;
    this.pos++;
    switch (ch) {
      case '\\':
        return this.escape(false);
      case '[':
        return this.charClass();
      case '(':
        return this.group();
      case ')':
        if (this.saved.length === 0) reject();
        if (this.saved.length === this.caseGroupDepth && this.pos !== this.src.length) reject();
        this.flags = this.saved.pop() as Flags;
        return ')';
      case '.':
        return this.flags.dotAll ? '[\\s\\S]' : '[^\\n]';
      case '^':
        return this.flags.multiLine ? '(?:^|(?<=\\n))' : '^';
      case '$':
        return this.flags.multiLine ? '(?=\\n|$)' : '$';
      case '{':
        return this.brace();
      case '}':
        return '\\}';
      case ']':
        return '\\]';
      case '*':
      case '+':
      case '?':
        return ch + this.quantifierSuffix();
      default:
        return ch;
    }
  }

  private brace(): string {
    const match = /^(\d+)(?:(,)(\d*))?\}/.exec(this.rest());
    if (match === null) return '\\{';
    const min = Number(match[1]);
    const max = match[3] === undefined || match[3] === '' ? undefined : Number(match[3]);
    if (min > 1000 || (max !== undefined && max > 1000)) reject();
    this.pos += match[0].length;
    return `{${match[0]}${this.quantifierSuffix()}`;
  }

  private group(): string {
    if (this.peek() !== '?') {
      this.saved.push({ ...this.flags });
      this.groupNames.push('');
      return '(';
    }
    const rest = this.rest();
    const named = /^\?P?<([^>]*)>/.exec(rest);
    if (named !== null) {
      const name = named[1] ?? '';
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) reject();
      this.saved.push({ ...this.flags });
      this.groupNames.push(name);
      this.pos += named[0].length;
      return `(?<${name}>`;
    }
    const flagGroup = /^\?([imsU-]*)([:)])/.exec(rest);
    if (flagGroup === null) return reject();
    this.pos += Array.from(flagGroup[0]).length;
    if (flagGroup[2] === ')') {
      // (?flags): changes the flags until the end of the enclosing group.
      this.applyFlags(flagGroup[1] ?? '');
      return '';
    }
    this.saved.push({ ...this.flags });
    this.applyFlags(flagGroup[1] ?? '');
    return '(?:';
  }

  private escape(inClass: boolean): string {
    const ch = this.peek();
    if (ch === undefined) return reject();
    this.pos++;
    switch (ch) {
      case 'A':
        if (inClass) reject();
        return '(?<![\\s\\S])';
      case 'z':
        if (inClass) reject();
        return '(?![\\s\\S])';
      case 'b':
      case 'B':
        if (inClass) reject();
        return `\\${ch}`;
      case 'd':
      case 'w':
        return inClass ? rangesText(PERL_CLASSES[ch] as CodeRange[]) : `\\${ch}`;
      case 'D':
      case 'W':
        return inClass ? rangesText(complement(PERL_CLASSES[ch.toLowerCase()] as CodeRange[])) : `\\${ch}`;
      case 's':
        return inClass ? rangesText(PERL_CLASSES['s'] as CodeRange[]) : `[${rangesText(PERL_CLASSES['s'] as CodeRange[])}]`;
      case 'S': {
        const text = rangesText(complement(PERL_CLASSES['s'] as CodeRange[]));
        return inClass ? text : `[${text}]`;
      }
      case 'p':
      case 'P':
        return this.unicodeClass(ch === 'P');
      case 'Q': {
        let stop = this.pos;
        while (stop < this.src.length && !(this.src[stop] === '\\' && this.src[stop + 1] === 'E')) stop++;
        const text = this.src.slice(this.pos, stop);
        this.pos = stop < this.src.length ? stop + 2 : stop;
        return text.map((c) => (inClass ? classLiteral(c) : literal(c))).join('');
      }
      case 'x': {
        if (this.peek() === '{') {
          const close = this.src.indexOf('}', this.pos);
          if (close < 0) reject();
          const hex = this.src.slice(this.pos + 1, close).join('');
          if (!/^[0-9A-Fa-f]{1,8}$/.test(hex)) reject();
          const cp = parseInt(hex, 16);
          if (cp > MAX_CODE_POINT) reject();
          this.pos = close + 1;
          return classChar(cp);
        }
        const hex = this.src.slice(this.pos, this.pos + 2).join('');
        if (!/^[0-9A-Fa-f]{2}$/.test(hex)) reject();
        this.pos += 2;
        return classChar(parseInt(hex, 16));
      }
      case 'a':
        return classChar(7);
      case 'f':
      case 't':
      case 'n':
      case 'r':
      case 'v':
        return `\\${ch}`;
      case '0':
      case '1':
      case '2':
      case '3':
      case '4':
      case '5':
      case '6':
      case '7': {
        // RE2: \0 and \1-\7 followed by a digit start an octal escape; a lone \1-\9 is a
        // backreference, which RE2 does not support.
        if (ch !== '0' && !/[0-7]/.test(this.peek() ?? '')) reject();
        let digits = ch;
        while (digits.length < 3 && /[0-7]/.test(this.peek() ?? '')) {
          digits += this.peek();
          this.pos++;
        }
        return classChar(parseInt(digits, 8));
      }
      default:
        if (ch.length === 1 && ch.charCodeAt(0) < 0x80 && !isAsciiAlnum(ch)) {
          return inClass ? classLiteral(ch) : literal(ch);
        }
        return reject();
    }
  }

  private unicodeClass(negated: boolean): string {
    let name: string;
    if (this.peek() === '{') {
      const close = this.src.indexOf('}', this.pos);
      if (close < 0) reject();
      name = this.src.slice(this.pos + 1, close).join('');
      this.pos = close + 1;
    } else {
      const ch = this.peek();
      if (ch === undefined) reject();
      name = ch;
      this.pos++;
    }
    let negate = negated;
    if (name.startsWith('^')) {
      negate = !negate;
      name = name.slice(1);
    }
    if (!/^[A-Za-z_]+$/.test(name)) reject();
    const property = GENERAL_CATEGORIES.has(name) ? name : `Script=${name}`;
    return `\\${negate ? 'P' : 'p'}{${property}}`;
  }

  private charClass(): string {
    let out = '[';
    if (this.peek() === '^') {
      out += '^';
      this.pos++;
    }
    let first = true;
    for (;;) {
      const ch = this.peek();
      if (ch === undefined) return reject();
      if (ch === ']' && !first) {
        this.pos++;
        return `${out}]`;
      }
      first = false;
      if (ch === '[' && this.peek(1) === ':') {
        const match = /^\[:(\^?)([a-z]+):\]/.exec(this.rest());
        if (match !== null) {
          const ranges = POSIX_CLASSES[match[2] ?? ''];
          if (ranges === undefined) reject();
          out += rangesText(match[1] === '^' ? complement(ranges) : ranges);
          this.pos += match[0].length;
          continue;
        }
      }
      this.pos++;
      if (ch === '\\') out += this.escape(true);
      else out += classLiteral(ch);
    }
  }
}

function classLiteral(ch: string): string {
  return ch === ']' || ch === '\\' || ch === '[' || ch === '^' ? `\\${ch}` : ch;
}

const compiled = new Map<string, GoRegexp | null>();
const CACHE_LIMIT = 1000;

/** Compile a Go (RE2) pattern; undefined when it is invalid in Go or not translatable. */
export function compileGoRegexp(pattern: string): GoRegexp | undefined {
  const cached = compiled.get(pattern);
  if (cached !== undefined) return cached ?? undefined;
  let result: GoRegexp | null = null;
  try {
    const translator = new Translator(pattern);
    const source = translator.translate();
    result = { regexp: new RegExp(source, `${translator.jsFlags}dg`), groupNames: translator.groupNames };
  } catch {
    result = null;
  }
  if (compiled.size >= CACHE_LIMIT) compiled.clear();
  compiled.set(pattern, result);
  return result ?? undefined;
}

/** One match: [start, end] of the whole match and of each group (-1 when the group did not take part). */
export type MatchIndices = readonly number[];

function execAt(re: GoRegexp, input: string, position: number): MatchIndices | undefined {
  const regexp = re.regexp;
  regexp.lastIndex = position;
  const match = regexp.exec(input);
  if (match === null || match.indices === undefined) return undefined;
  const out: number[] = [];
  for (const pair of match.indices) {
    if (pair === undefined) out.push(-1, -1);
    else out.push(pair[0], pair[1]);
  }
  return out;
}

function runeWidth(input: string, position: number): number {
  if (position >= input.length) return 0;
  const cp = input.codePointAt(position) ?? 0;
  return cp > 0xffff ? 2 : 1;
}

/** Go's Regexp.FindAll iteration (empty matches right after a match are skipped). */
export function findAll(re: GoRegexp, input: string, limit: number): MatchIndices[] {
  const out: MatchIndices[] = [];
  const n = limit < 0 ? input.length + 1 : limit;
  let pos = 0;
  let prevMatchEnd = -1;
  while (out.length < n && pos <= input.length) {
    const match = execAt(re, input, pos);
    if (match === undefined) break;
    const start = match[0] as number;
    const end = match[1] as number;
    let accept = true;
    if (end === pos) {
      if (start === prevMatchEnd) accept = false;
      pos += Math.max(runeWidth(input, pos), 1);
    } else {
      pos = end;
    }
    prevMatchEnd = end;
    if (accept) out.push(match);
  }
  return out;
}

/** Go's Regexp.Expand of a `$1` / `${name}` template for one match. */
function expand(re: GoRegexp, template: string, input: string, match: MatchIndices): string {
  let out = '';
  let rest = template;
  for (;;) {
    const dollar = rest.indexOf('$');
    if (dollar < 0) break;
    out += rest.slice(0, dollar);
    rest = rest.slice(dollar + 1);
    if (rest.startsWith('$')) {
      out += '$';
      rest = rest.slice(1);
      continue;
    }
    const ref = /^(\{)?([\p{L}\p{Nd}_]+)/u.exec(rest);
    if (ref === null || (ref[1] === '{' && rest[ref[0].length] !== '}')) {
      out += '$';
      continue;
    }
    const name = ref[2] ?? '';
    rest = rest.slice(ref[0].length + (ref[1] === '{' ? 1 : 0));
    let group = -1;
    if (/^\d+$/.test(name) && !(name.length > 1 && name[0] === '0') && name.length <= 9) {
      group = Number(name);
    } else {
      group = re.groupNames.indexOf(name);
      if (name === '' || /^\d+$/.test(name)) group = -1;
    }
    if (group >= 0 && 2 * group + 1 < match.length) {
      const start = match[2 * group] as number;
      const end = match[2 * group + 1] as number;
      if (start >= 0) out += input.slice(start, end);
    }
  }
  return out + rest;
}

/** Go's Regexp.ReplaceAllString. */
export function replaceAll(re: GoRegexp, input: string, template: string): string {
  let out = '';
  let lastMatchEnd = 0;
  let searchPos = 0;
  while (searchPos <= input.length) {
    const match = execAt(re, input, searchPos);
    if (match === undefined) break;
    const start = match[0] as number;
    const end = match[1] as number;
    out += input.slice(lastMatchEnd, start);
    if (end > lastMatchEnd || start === 0) out += expand(re, template, input, match);
    lastMatchEnd = end;
    const width = runeWidth(input, searchPos);
    if (searchPos + width > end) searchPos += width;
    else if (searchPos + 1 > end) searchPos++;
    else searchPos = end;
  }
  return out + input.slice(lastMatchEnd);
}
