import { lastValueFrom } from 'rxjs';
import { beforeEach, describe, expect, it } from 'vitest';

import { CoreApp, type DataFrame, type DataQueryRequest, FieldType, getDefaultTimeRange } from '@grafana/data';
import { setBackendSrv } from '@grafana/runtime';

import { KumaDataSource, parseVariableQuery } from './datasource';
import { GrafanaApi, VariablesTemplateSrv, instanceSettings, queryAnswer, wireFrame } from './testing/host';
import { DEFAULT_ROLLUP, type KumaQuery } from './types';

interface QueryBody {
  queries: Array<KumaQuery & { datasource: { type: string; uid: string } }>;
}

let api: GrafanaApi;

beforeEach(() => {
  api = new GrafanaApi();
  setBackendSrv(api);
});

function datasource(vars: Record<string, string | string[]> = {}) {
  return new KumaDataSource(instanceSettings(), new VariablesTemplateSrv(vars));
}

/** The queries of the last /api/ds/query request. */
function sentQueries(): QueryBody['queries'] {
  const req = api.requests.filter((r) => r.url.startsWith('/api/ds/query')).at(-1);
  expect(req, 'a request to /api/ds/query').toBeDefined();
  return (req!.data as QueryBody).queries;
}

const meshesFrame = wireFrame('meshes', [
  { name: 'name', type: FieldType.string, values: ['default', 'payments'] },
  { name: 'mtls', type: FieldType.string, values: ['builtin/ca-1', 'off'] },
  { name: 'metrics', type: FieldType.string, values: ['prometheus/prometheus-1', 'off'] },
]);

describe('metricFindQuery', () => {
  it('sends a meshes query to the backend and takes the names as the values', async () => {
    api.on('POST', '/api/ds/query', () => queryAnswer({ variable: { frames: [meshesFrame] } }));

    const values = await datasource().metricFindQuery('meshes');

    expect(values).toEqual([
      { text: 'default', value: 'default' },
      { text: 'payments', value: 'payments' },
    ]);
    const [q] = sentQueries();
    expect(q.queryType).toBe('meshes');
    expect(q.mesh).toBeUndefined();
    expect(q.datasource).toMatchObject({ type: 'kumahq-kuma-datasource', uid: 'kuma' });
  });

  it('fills the mesh of a services query from a template variable and drops repeated names', async () => {
    api.on('POST', '/api/ds/query', () =>
      queryAnswer({
        variable: {
          frames: [
            wireFrame('services', [
              { name: 'name', type: FieldType.string, values: ['backend', 'web', 'backend'] },
              { name: 'mesh', type: FieldType.string, values: ['default', 'default', 'other'] },
              { name: 'status', type: FieldType.string, values: ['online', 'offline', 'online'] },
              { name: 'online', type: FieldType.number, values: [2, 0, 1] },
              { name: 'offline', type: FieldType.number, values: [0, 1, 0] },
              { name: 'total', type: FieldType.number, values: [2, 1, 1] },
            ]),
          ],
        },
      })
    );

    const values = await datasource({ mesh: 'default' }).metricFindQuery({ queryType: 'services', mesh: '$mesh' });

    expect(values.map((v) => v.text)).toEqual(['backend', 'web']);
    expect(sentQueries()[0]).toMatchObject({ queryType: 'services', mesh: 'default' });
  });

  it('reads the text form "services <mesh>"', async () => {
    api.on('POST', '/api/ds/query', () => queryAnswer({ variable: { frames: [] } }));

    expect(await datasource().metricFindQuery('services payments')).toEqual([]);

    expect(sentQueries()[0]).toMatchObject({ queryType: 'services', mesh: 'payments' });
  });

  it('rejects with the backend error of the query', async () => {
    api.on('POST', '/api/ds/query', () =>
      queryAnswer({ variable: { error: 'services: control plane http://127.0.0.1:5681: connection refused', status: 500 } })
    );

    await expect(datasource().metricFindQuery('services')).rejects.toThrow(
      'services: control plane http://127.0.0.1:5681: connection refused'
    );
  });

  it('refuses a query type that answers no list, naming the field', () => {
    expect(() => parseVariableQuery({ queryType: 'mesh-graph', mesh: 'default' })).toThrow(
      'variable query: queryType "mesh-graph" is not one of meshes, zones, services'
    );
    expect(() => parseVariableQuery('graph')).toThrow('queryType "graph" is not one of');
    expect(() => parseVariableQuery({ queryType: 'services', mesh: 3 })).toThrow('mesh must be a string, got number');
    expect(() => parseVariableQuery('services a b')).toThrow('expected "<query type> [mesh]"');
  });
});

describe('queries', () => {
  function request(targets: KumaQuery[]): DataQueryRequest<KumaQuery> {
    return {
      requestId: 'Q1',
      app: CoreApp.Dashboard,
      interval: '30s',
      intervalMs: 30_000,
      range: getDefaultTimeRange(),
      scopedVars: { zone: { text: 'eu', value: 'eu' } },
      targets,
      timezone: 'browser',
      startTime: 0,
    };
  }

  it('fills in template variables: the mesh as text, the zone and roll-up as regexes', async () => {
    const nodes = wireFrame('nodes', [{ name: 'id', type: FieldType.string, values: ['web'] }], {
      preferredVisualisationType: 'nodeGraph',
    });
    const edges = wireFrame('edges', [{ name: 'id', type: FieldType.string, values: [] }], {
      preferredVisualisationType: 'nodeGraph',
    });
    api.on('POST', '/api/ds/query', () => queryAnswer({ A: { frames: [nodes, edges] }, B: { frames: [] } }));
    const ds = datasource({ mesh: 'default', svc: ['web.1', 'api'] });

    const rsp = await lastValueFrom(
      ds.query(
        request([
          { refId: 'A', queryType: 'mesh-graph', mesh: '$mesh', zone: '${zone}', rollup: '(${svc})_svc' },
          { refId: 'B', queryType: 'mesh-graph', mesh: 'payments' },
        ])
      )
    );

    const [a, b] = sentQueries();
    expect(a).toMatchObject({ queryType: 'mesh-graph', mesh: 'default', zone: 'eu', rollup: '((web\\.1|api))_svc' });
    expect(b).toMatchObject({ queryType: 'mesh-graph', mesh: 'payments' });
    expect('zone' in b).toBe(false);
    expect('rollup' in b).toBe(false);
    const frames = rsp.data as DataFrame[];
    expect(frames.map((f) => [f.name, f.refId, f.meta?.preferredVisualisationType])).toEqual([
      ['nodes', 'A', 'nodeGraph'],
      ['edges', 'A', 'nodeGraph'],
    ]);
  });

  it('starts a new query as a MeshGraph with the default zone and roll-up', () => {
    expect(datasource().getDefaultQuery(CoreApp.PanelEditor)).toEqual({
      queryType: 'mesh-graph',
      zone: '.*',
      rollup: DEFAULT_ROLLUP,
    });
  });

  it('sends no hidden query and none without a query type', () => {
    const ds = datasource();
    expect(ds.filterQuery({ refId: 'A', queryType: 'meshes' })).toBe(true);
    expect(ds.filterQuery({ refId: 'A', queryType: 'meshes', hide: true })).toBe(false);
    expect(ds.filterQuery({ refId: 'A' })).toBe(false);
  });
});

describe('resources', () => {
  it('lists the meshes from the backend resource', async () => {
    api.on('GET', '/api/datasources/uid/kuma/resources/meshes', () => ({
      status: 200,
      data: [{ name: 'default' }, { name: 'payments' }],
    }));

    expect(await datasource().listMeshes()).toEqual(['default', 'payments']);
  });
});
