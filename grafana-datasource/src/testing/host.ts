// What Grafana's application provides to a plugin at run time, for the tests:
// Grafana's server cannot run here (its code is AGPL and not installable), so
// the HTTP API the plugin's code calls through getBackendSrv() is answered by
// GrafanaApi below, in the wire format of Grafana's /api/ds/query and
// /api/datasources/uid/<uid>/resources/<path> (frames as DataFrameJSON, the
// JSON the plugin SDK writes; errors thrown as FetchError like Grafana's
// BackendSrv does for a non-2xx answer), and template variables by
// VariablesTemplateSrv. Everything on the plugin's side of that line (the
// DataSourceWithBackend request building, the response parsing, the
// components of @grafana/ui) is the real code of the npm packages.
import { type Observable, defer, of, throwError } from 'rxjs';

import {
  type DataFrameJSON,
  type DataSourceInstanceSettings,
  type FieldType,
  type ScopedVars,
  type TypedVariableModel,
  escapeStringForRegex,
} from '@grafana/data';
import type {
  BackendSrv,
  BackendSrvRequest,
  FetchError,
  FetchResponse,
  TemplateSrv,
} from '@grafana/runtime';

import type { KumaOptions } from '../types';

/** One answer of the fake Grafana API: an HTTP status and a JSON body. */
export interface Answer {
  status: number;
  data: unknown;
}

type Route = (req: BackendSrvRequest) => Answer;

/** A recorded request. */
export interface Recorded {
  method: string;
  url: string;
  params?: Record<string, unknown>;
  data?: unknown;
}

/** Grafana's HTTP API as the plugin's code sees it through getBackendSrv(). */
export class GrafanaApi implements BackendSrv {
  readonly requests: Recorded[] = [];
  private readonly routes = new Map<string, Route>();

  /** Answers `METHOD path` (path without the query string). */
  on(method: string, path: string, route: Route): this {
    this.routes.set(`${method} ${path}`, route);
    return this;
  }

  fetch<T>(options: BackendSrvRequest): Observable<FetchResponse<T>> {
    return defer(() => {
      const method = (options.method ?? 'GET').toUpperCase();
      const path = options.url.split('?')[0];
      this.requests.push({ method, url: options.url, params: options.params, data: options.data });
      const route = this.routes.get(`${method} ${path}`);
      const answer: Answer = route ? route(options) : { status: 404, data: { message: 'Not found' } };
      if (answer.status >= 300) {
        const err: FetchError = { status: answer.status, statusText: 'error', data: answer.data, config: options };
        return throwError(() => err);
      }
      const rsp: FetchResponse<T> = {
        data: answer.data as T,
        status: answer.status,
        statusText: 'OK',
        ok: true,
        headers: new Headers({ 'content-type': 'application/json' }),
        redirected: false,
        type: 'basic',
        url: options.url,
        config: options,
      };
      return of(rsp);
    });
  }

  async request<T>(options: BackendSrvRequest): Promise<T> {
    return new Promise<T>((resolve, reject) =>
      this.fetch<T>(options).subscribe({ next: (r) => resolve(r.data), error: reject })
    );
  }
  get<T>(url: string, params?: Record<string, unknown>): Promise<T> {
    return this.request<T>({ url, params, method: 'GET' });
  }
  post<T>(url: string, data?: unknown): Promise<T> {
    return this.request<T>({ url, data, method: 'POST' });
  }
  put<T>(url: string, data?: unknown): Promise<T> {
    return this.request<T>({ url, data, method: 'PUT' });
  }
  patch<T>(url: string, data?: unknown): Promise<T> {
    return this.request<T>({ url, data, method: 'PATCH' });
  }
  delete<T>(url: string, data?: unknown): Promise<T> {
    return this.request<T>({ url, data, method: 'DELETE' });
  }
  datasourceRequest<T>(options: BackendSrvRequest): Promise<FetchResponse<T>> {
    return new Promise((resolve, reject) => this.fetch<T>(options).subscribe({ next: resolve, error: reject }));
  }
  chunked(): Observable<FetchResponse<Uint8Array | undefined>> {
    return throwError(() => new Error('chunked requests are not used by this plugin'));
  }
}

/** The JSON body of /api/ds/query: per refId either frames or an error. */
export function queryAnswer(results: Record<string, { frames?: DataFrameJSON[]; error?: string; status?: number }>): Answer {
  const failed = Object.values(results).some((r) => r.error);
  return {
    status: failed ? 400 : 200,
    data: {
      results: Object.fromEntries(
        Object.entries(results).map(([refId, r]) => [refId, { status: r.status ?? (r.error ? 400 : 200), ...r }])
      ),
    },
  };
}

/** A frame in the wire format, from field names, types and values. */
export function wireFrame(
  name: string,
  fields: Array<{ name: string; type: FieldType | `${FieldType}`; values: unknown[] }>,
  meta?: Record<string, unknown>
): DataFrameJSON {
  return {
    schema: {
      name,
      meta,
      fields: fields.map((f) => ({ name: f.name, type: f.type as FieldType })),
    },
    data: { values: fields.map((f) => f.values) },
  };
}

/**
 * Template variables the way Grafana's TemplateSrv fills them in: `$name`,
 * `${name}`, `${name:format}` and `[[name]]`; scoped variables first; a
 * multi-value variable as `{a,b}` by default and as `(a|b)` of escaped values
 * in the `regex` format.
 */
export class VariablesTemplateSrv implements TemplateSrv {
  constructor(private readonly vars: Record<string, string | string[]> = {}) {}

  getVariables(): TypedVariableModel[] {
    return Object.keys(this.vars).map((name) => ({ name, type: 'custom' }) as unknown as TypedVariableModel);
  }

  containsTemplate(target?: string): boolean {
    return !!target && /\$\w+|\$\{\w+(:\w+)?\}|\[\[\w+\]\]/.test(target);
  }

  replace(target?: string, scopedVars?: ScopedVars, format?: string | Function): string {
    if (!target) {
      return target ?? '';
    }
    return target.replace(/\$(\w+)|\$\{(\w+)(?::(\w+))?\}|\[\[(\w+)\]\]/g, (match, a, b, fmt, c) => {
      const name: string = a ?? b ?? c;
      const scoped = scopedVars?.[name]?.value;
      const value = scoped !== undefined ? (scoped as string | string[]) : this.vars[name];
      if (value === undefined) {
        return match;
      }
      return this.format(value, typeof format === 'string' ? (fmt ?? format) : fmt);
    });
  }

  updateTimeRange(): void {}

  private format(value: string | string[], format: string | undefined): string {
    const values = Array.isArray(value) ? value : [value];
    if (format === 'regex') {
      const escaped = values.map(escapeStringForRegex);
      return escaped.length === 1 ? escaped[0] : `(${escaped.join('|')})`;
    }
    return values.length === 1 ? values[0] : `{${values.join(',')}}`;
  }
}

/** The instance settings Grafana hands to the datasource's constructor. */
export function instanceSettings(jsonData: KumaOptions = {}): DataSourceInstanceSettings<KumaOptions> {
  return {
    id: 7,
    uid: 'kuma',
    type: 'kumahq-kuma-datasource',
    name: 'Kuma',
    access: 'proxy',
    readOnly: false,
    jsonData,
    meta: {
      id: 'kumahq-kuma-datasource',
      name: 'Kuma',
      type: 'datasource',
      module: 'public/plugins/kumahq-kuma-datasource/module.js',
      baseUrl: 'public/plugins/kumahq-kuma-datasource',
      backend: true,
      info: {
        author: { name: 'kuma-metrics' },
        description: '',
        links: [],
        logos: { small: '', large: '' },
        screenshots: [],
        updated: '',
        version: '',
      },
    },
  } as DataSourceInstanceSettings<KumaOptions>;
}
