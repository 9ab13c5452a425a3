// Checks of the zone and roll-up regular expressions before they leave the
// editor. The backend compiles them with Go's RE2, anchored; JavaScript's
// RegExp accepts constructs RE2 refuses (look-around, back-references, \u
// and \c escapes): those are caught here too; the RE2 syntax JavaScript
// lacks (`(?P<name>`, `(?i)`) is accepted. Messages start with the field's
// name, like the backend's.

/** What RE2 does not have, with what to say about it. */
const RE2_UNSUPPORTED: ReadonlyArray<[RegExp, string]> = [
  [/\(\?<?[=!]/, 'look-ahead and look-behind are not supported (RE2 syntax)'],
  [/\\[1-9]/, 'back-references are not supported (RE2 syntax)'],
  [/\\k</, 'named back-references are not supported (RE2 syntax)'],
  [/\\u/, 'write a code point as \\x{263a}, not \\u263a (RE2 syntax)'],
  [/\\c/, 'control escapes (\\cX) are not supported (RE2 syntax)'],
];

/**
 * RE2 syntax JavaScript lacks, rewritten to an equivalent for the syntax
 * check: `(?P<name>` named groups and `(?i)`-style flag groups.
 */
function toJavaScript(re: string): string {
  return re
    .replace(/\(\?P</g, '(?<')
    .replace(/\(\?[imsU-]+\)/g, '')
    .replace(/\(\?[imsU-]+:/g, '(?:');
}

/**
 * Replaces escaped characters (but the escapes checked above) and character
 * classes by placeholders, so that the RE2 checks see structure only.
 */
function structureOnly(re: string): string {
  return re.replace(/\\(.)/g, (m, c: string) => (/[1-9kuc]/.test(c) ? m : 'e')).replace(/\[[^\]]*\]/g, 'e');
}

/** The number of capturing groups of a regex that compiles. */
function captureGroups(re: RegExp): number {
  // An alternative that matches the empty string makes exec() return one
  // slot per group.
  const m = new RegExp(`${re.source}|`).exec('');
  return m ? m.length - 1 : 0;
}

/**
 * Checks a regex for the field `field` ("zone" or "rollup"); returns the
 * message to show, or undefined when it is fine. `minGroups` is the number of
 * capture groups it needs (the roll-up needs one: the name it folds to).
 */
export function checkRegex(field: string, value: string, minGroups = 0): string | undefined {
  let re: RegExp;
  try {
    re = new RegExp(toJavaScript(value));
  } catch (e) {
    // V8 says "Invalid regular expression: /<source>/<flags>: <why>": keep the why.
    const why = e instanceof Error ? e.message.replace(/^Invalid regular expression: \/.*\/\w*: /s, '') : String(e);
    return `${field}: invalid regular expression: ${why}`;
  }
  const structure = structureOnly(value);
  for (const [pattern, why] of RE2_UNSUPPORTED) {
    if (pattern.test(structure)) {
      return `${field}: invalid regular expression: ${why}`;
    }
  }
  if (captureGroups(re) < minGroups) {
    return `${field}: needs a capture group for the service name, e.g. (.*)_svc_[0-9]+`;
  }
  return undefined;
}
