// What a browser has and jsdom lacks, for @grafana/ui's components (the same
// additions @grafana/create-plugin's Jest setup makes).
import { afterEach } from 'vitest';

import { cleanup } from '@testing-library/react';

if (!window.matchMedia) {
  // A screen that matches no media query (no dark-mode preference, no reduced motion).
  window.matchMedia = (query: string): MediaQueryList =>
    ({
      matches: false,
      media: query,
      onchange: null,
      addListener: () => {},
      removeListener: () => {},
      addEventListener: () => {},
      removeEventListener: () => {},
      dispatchEvent: () => false,
    }) as MediaQueryList;
}

if (!window.IntersectionObserver) {
  // Nothing ever scrolls into view in jsdom (no layout): an observer that reports nothing.
  window.IntersectionObserver = class {
    readonly root = null;
    readonly rootMargin = '0px';
    readonly thresholds = [0];
    observe() {}
    unobserve() {}
    disconnect() {}
    takeRecords() {
      return [];
    }
  } as unknown as typeof IntersectionObserver;
}

afterEach(() => cleanup());
