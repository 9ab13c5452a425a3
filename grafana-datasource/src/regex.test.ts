import { describe, expect, it } from 'vitest';

import { checkRegex } from './regex';
import { DEFAULT_ROLLUP, DEFAULT_ZONE } from './types';

describe('checkRegex', () => {
  it.each([
    ['the default zone', DEFAULT_ZONE, 0],
    ['the default roll-up', DEFAULT_ROLLUP, 1],
    ['an RE2 named group', '(?P<svc>.*)_svc_[0-9]+', 1],
    ['an RE2 flag group', '(?i)EU-.*', 0],
    ['a scoped RE2 flag group', '(?i:eu)-(west|east)', 1],
    ['a parenthesis in a class', '[(]eu', 0],
    ['an escaped backslash before a digit', 'eu\\\\1', 0],
    ['an escaped plus', 'a\\++', 0],
    ['a non-capturing group and a capture group', '(?:x)(y)', 1],
  ])('accepts %s', (_what, re, groups) => {
    expect(checkRegex('rollup', re, groups)).toBeUndefined();
  });

  it.each([
    ['an unclosed group', '(eu', 0, 'zone: invalid regular expression: Unterminated group'],
    ['a nothing to repeat', '*eu', 0, 'zone: invalid regular expression: Nothing to repeat'],
    ['a look-ahead', 'eu(?=-west)', 0, 'zone: invalid regular expression: look-ahead and look-behind are not supported (RE2 syntax)'],
    ['a look-behind', '(?<!x)eu', 0, 'zone: invalid regular expression: look-ahead and look-behind are not supported (RE2 syntax)'],
    ['a back-reference', '(a)\\1', 0, 'zone: invalid regular expression: back-references are not supported (RE2 syntax)'],
    ['a possessive quantifier', 'a++', 0, 'zone: invalid regular expression: Nothing to repeat'],
    ['an atomic group', '(?>a)', 0, 'zone: invalid regular expression: Invalid group'],
    ['a \\u escape', '\\u00e9', 0, 'zone: invalid regular expression: write a code point as \\x{263a}, not \\u263a (RE2 syntax)'],
    ['no capture group where one is needed', '.*_svc', 1, 'zone: needs a capture group for the service name, e.g. (.*)_svc_[0-9]+'],
    ['only a non-capturing group', '(?:.*)_svc', 1, 'zone: needs a capture group for the service name, e.g. (.*)_svc_[0-9]+'],
  ])('refuses %s', (_what, re, groups, message) => {
    expect(checkRegex('zone', re, groups)).toBe(message);
  });
});
