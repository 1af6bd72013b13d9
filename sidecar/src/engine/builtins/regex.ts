/**
 * regex.* builtins provided by the host, following OPA's v1/topdown/regex.go on top of Go's
 * regexp package: regex.replace (Regexp.ReplaceAllString, with `$1`, `${name}` and `$$`
 * templates), regex.find_n (Regexp.FindAllString; n < 0 means all) and regex.template_match
 * (OPA's regex_template.go: text between single-character delimiters is a pattern, the rest
 * is literal, and the whole value must match). Patterns use Go's RE2 syntax, translated to
 * JavaScript by re2.ts.
 *
 * regex.match, regex.is_valid and regex.find_all_string_submatch_n are compiled into Wasm by
 * OPA; regex.split is supplied by opa-wasm itself.
 *
 * Known limits: see re2.ts — a pattern that cannot be translated (mid-pattern flags, (?U),
 * flag groups, non-identifier capture names, \C) makes the call undefined, as an invalid
 * pattern does in OPA. regex.globs_match is not provided.
 */
import { type BuiltinFamily, intOperand, isString } from './common.ts';
import { compileGoRegexp, findAll, replaceAll } from './re2.ts';

/** Go's regexp.QuoteMeta. */
function quoteMeta(text: string): string {
  return text.replace(/[\\.+*?()|[\]{}^$]/g, (c) => `\\${c}`);
}

/** OPA's generateRegexTemplate: the template as one anchored pattern, or undefined. */
function templatePattern(template: string, start: string, end: string): string | undefined {
  const spans: Array<[number, number]> = [];
  let level = 0;
  let open = 0;
  for (let i = 0; i < template.length; i++) {
    const c = template[i];
    if (c === start) {
      level++;
      if (level === 1) open = i;
    } else if (c === end) {
      level--;
      if (level === 0) spans.push([open, i + 1]);
      else if (level < 0) return undefined;
    }
  }
  if (level !== 0) return undefined;
  let pattern = '^';
  let last = 0;
  for (const [from, to] of spans) {
    const inner = template.slice(from + 1, to - 1);
    if (compileGoRegexp(`^${inner}$`) === undefined) return undefined;
    pattern += `${quoteMeta(template.slice(last, from))}(${inner})`;
    last = to;
  }
  return `${pattern}${quoteMeta(template.slice(last))}$`;
}

function isSingleByte(value: string): boolean {
  return value.length === 1 && value.charCodeAt(0) < 0x80;
}

export function regexBuiltins(): BuiltinFamily {
  return {
    'regex.replace': (base, pattern, value) => {
      if (!isString(base) || !isString(pattern) || !isString(value)) return undefined;
      const re = compileGoRegexp(pattern);
      return re === undefined ? undefined : replaceAll(re, base, value);
    },
    'regex.find_n': (pattern, value, n) => {
      const limit = intOperand(n);
      if (!isString(pattern) || !isString(value) || limit === undefined) return undefined;
      const re = compileGoRegexp(pattern);
      if (re === undefined) return undefined;
      return findAll(re, value, limit).map((match) => value.slice(match[0], match[1]));
    },
    'regex.template_match': (template, value, start, end) => {
      if (!isString(template) || !isString(value) || !isString(start) || !isString(end)) return undefined;
      if (!isSingleByte(start) || !isSingleByte(end)) return undefined;
      const pattern = templatePattern(template, start, end);
      const re = pattern === undefined ? undefined : compileGoRegexp(pattern);
      return re === undefined ? undefined : findAll(re, value, 1).length > 0;
    },
  };
}
