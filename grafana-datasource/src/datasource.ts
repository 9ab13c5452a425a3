// The Kuma datasource in the browser: every query goes to the Go backend
// (DataSourceWithBackend), which computes the MeshGraph and the lists; this
// class only fills in template variables, supplies the default query, turns
// the list queries into template variable values and fetches the editors'
// drop-downs from the backend's resources.
import { lastValueFrom } from 'rxjs';

import {
  CoreApp,
  type DataFrame,
  type DataQueryRequest,
  type DataSourceInstanceSettings,
  type LegacyMetricFindQueryOptions,
  type MetricFindValue,
  type ScopedVars,
  getDefaultTimeRange,
} from '@grafana/data';
import { DataSourceWithBackend, type TemplateSrv, getTemplateSrv } from '@grafana/runtime';

import {
  DEFAULT_ROLLUP,
  DEFAULT_ZONE,
  type KumaOptions,
  type KumaQuery,
  type NamedItem,
  type QueryType,
  isQueryType,
} from './types';

/** The query types a template variable can use: the ones answering a list of names. */
export const VARIABLE_QUERY_TYPES: readonly QueryType[] = ['meshes', 'zones', 'services'];

/** A template variable's query: the object the variable editor saves. */
export interface KumaVariableQuery {
  queryType: QueryType;
  mesh?: string;
}

/**
 * Reads a variable query: the editor's object, or the text form a dashboard
 * may carry (`meshes`, `zones`, `services`, `services <mesh>`).
 */
export function parseVariableQuery(query: unknown): KumaVariableQuery {
  let queryType: unknown;
  let mesh: string | undefined;
  if (typeof query === 'string') {
    const [first, second, ...rest] = query.trim().split(/\s+/);
    if (rest.length > 0) {
      throw new Error(`variable query "${query}": expected "<query type> [mesh]"`);
    }
    queryType = first;
    mesh = second;
  } else if (query !== null && typeof query === 'object') {
    const q = query as Record<string, unknown>;
    queryType = q.queryType;
    if (q.mesh !== undefined && typeof q.mesh !== 'string') {
      throw new Error(`variable query: mesh must be a string, got ${typeof q.mesh}`);
    }
    mesh = q.mesh;
  }
  if (!isQueryType(queryType) || !VARIABLE_QUERY_TYPES.includes(queryType)) {
    throw new Error(
      `variable query: queryType ${JSON.stringify(queryType ?? '')} is not one of ${VARIABLE_QUERY_TYPES.join(', ')}`
    );
  }
  return mesh ? { queryType, mesh } : { queryType };
}

/** The message of an error thrown by Grafana's fetch (`{status, data: {message}}`) or of any other error. */
export function errorMessage(e: unknown): string {
  if (e !== null && typeof e === 'object') {
    const data = (e as { data?: unknown }).data;
    if (data !== null && typeof data === 'object' && typeof (data as { message?: unknown }).message === 'string') {
      return (data as { message: string }).message;
    }
    if (typeof (e as { message?: unknown }).message === 'string') {
      return (e as { message: string }).message;
    }
    const status = (e as { status?: unknown }).status;
    if (typeof status === 'number') {
      return `HTTP ${status}`;
    }
  }
  return String(e);
}

/** The values of a list frame: its `name` field (the contract puts it first), else its first field. */
function frameNames(frame: DataFrame): string[] {
  const field = frame.fields.find((f) => f.name === 'name') ?? frame.fields[0];
  if (!field) {
    return [];
  }
  return Array.from(field.values as ArrayLike<unknown>, (v) => String(v));
}

export class KumaDataSource extends DataSourceWithBackend<KumaQuery, KumaOptions> {
  constructor(
    instanceSettings: DataSourceInstanceSettings<KumaOptions>,
    private readonly templateSrv: TemplateSrv = getTemplateSrv()
  ) {
    super(instanceSettings);
  }

  override getDefaultQuery(_app: CoreApp): Partial<KumaQuery> {
    return { queryType: 'mesh-graph', zone: DEFAULT_ZONE, rollup: DEFAULT_ROLLUP };
  }

  /** Queries without a known type are not sent (a new query whose type is not chosen yet). */
  override filterQuery(query: KumaQuery): boolean {
    return !query.hide && isQueryType(query.queryType);
  }

  /**
   * Fills in template variables before a query leaves the browser: `mesh` as
   * text, `zone` and `rollup` in regex form (a multi-value variable becomes
   * an alternation of escaped values).
   */
  override applyTemplateVariables(query: KumaQuery, scopedVars: ScopedVars): KumaQuery {
    const out: KumaQuery = { ...query };
    if (query.mesh !== undefined) {
      out.mesh = this.templateSrv.replace(query.mesh, scopedVars);
    }
    if (query.zone !== undefined) {
      out.zone = this.templateSrv.replace(query.zone, scopedVars, 'regex');
    }
    if (query.rollup !== undefined) {
      out.rollup = this.templateSrv.replace(query.rollup, scopedVars, 'regex');
    }
    return out;
  }

  /** The values of a template variable: the names a `meshes`, `zones` or `services` query answers. */
  override async metricFindQuery(query: unknown, options?: LegacyMetricFindQueryOptions): Promise<MetricFindValue[]> {
    const vq = parseVariableQuery(query);
    const target: KumaQuery = { refId: 'variable', queryType: vq.queryType };
    if (vq.mesh) {
      target.mesh = vq.mesh;
    }
    const request: DataQueryRequest<KumaQuery> = {
      requestId: `kuma-variable-${options?.variable?.name ?? vq.queryType}`,
      app: CoreApp.Dashboard,
      interval: '1m',
      intervalMs: 60_000,
      range: options?.range ?? getDefaultTimeRange(),
      scopedVars: options?.scopedVars ?? {},
      targets: [target],
      timezone: 'browser',
      startTime: Date.now(),
    };
    const rsp = await lastValueFrom(this.query(request));
    const err = rsp.errors?.[0] ?? rsp.error;
    if (err) {
      throw new Error(err.message ?? `${vq.queryType} query failed`);
    }
    const seen = new Set<string>();
    const values: MetricFindValue[] = [];
    for (const frame of rsp.data as DataFrame[]) {
      for (const name of frameNames(frame)) {
        if (!seen.has(name)) {
          seen.add(name);
          values.push({ text: name, value: name });
        }
      }
    }
    return values;
  }

  /** The meshes of the control plane (the backend's `/resources/meshes`). */
  async listMeshes(): Promise<string[]> {
    const items = await this.getResource<NamedItem[]>('meshes');
    return items.map((i) => i.name);
  }

  /** The dashboard's template variables, as `$name`, offered in the editors' drop-downs. */
  variableNames(): string[] {
    return this.templateSrv.getVariables().map((v) => `$${v.name}`);
  }

  /** Whether a value carries a template variable (then it is checked once filled in, when the query runs). */
  hasTemplateVariable(value: string): boolean {
    return this.templateSrv.containsTemplate(value);
  }
}
