import React, { useState } from 'react';
import { beforeEach, describe, expect, it } from 'vitest';

import { render, screen, waitFor } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { setBackendSrv } from '@grafana/runtime';

import { KumaDataSource } from './datasource';
import { QueryEditor } from './QueryEditor';
import { GrafanaApi, VariablesTemplateSrv, instanceSettings } from './testing/host';
import { DEFAULT_ROLLUP, type KumaQuery } from './types';

let api: GrafanaApi;

beforeEach(() => {
  api = new GrafanaApi().on('GET', '/api/datasources/uid/kuma/resources/meshes', () => ({
    status: 200,
    data: [{ name: 'payments' }, { name: 'default' }],
  }));
  setBackendSrv(api);
});

/**
 * The editor inside a panel: the query is state that onChange replaces, as
 * Grafana's query editor row does; every saved query and every run is recorded.
 */
function renderEditor(initial: KumaQuery) {
  const ds = new KumaDataSource(instanceSettings(), new VariablesTemplateSrv({ mesh: 'default' }));
  const saved: KumaQuery[] = [];
  const runs: KumaQuery[] = [];
  let current = initial;
  function Panel() {
    const [query, setQuery] = useState(initial);
    return (
      <QueryEditor
        datasource={ds}
        query={query}
        onChange={(q) => {
          current = q;
          saved.push(q);
          setQuery(q);
        }}
        onRunQuery={() => runs.push(current)}
      />
    );
  }
  render(<Panel />);
  return { saved, runs, last: () => saved.at(-1) };
}

describe('QueryEditor', () => {
  it('offers the meshes of the backend resource and the dashboard variables', async () => {
    const { last, runs } = renderEditor({ refId: 'A', queryType: 'services' });

    await userEvent.click(screen.getByLabelText('Mesh'));

    expect(await screen.findByText('payments')).toBeTruthy();
    expect(screen.getByText('default')).toBeTruthy();
    expect(screen.getByText('$mesh')).toBeTruthy();
    await userEvent.click(screen.getByText('payments'));
    expect(last()).toEqual({ refId: 'A', queryType: 'services', mesh: 'payments' });
    expect(runs.at(-1)).toEqual(last());
    expect(api.requests.filter((r) => r.url === '/api/datasources/uid/kuma/resources/meshes')).toHaveLength(1);
  });

  it('picks the mesh "default" for a MeshGraph that has none', async () => {
    const { last, runs } = renderEditor({ refId: 'A', queryType: 'mesh-graph', rollup: DEFAULT_ROLLUP });

    await waitFor(() => expect(last()).toEqual({ refId: 'A', queryType: 'mesh-graph', mesh: 'default', rollup: DEFAULT_ROLLUP }));
    expect(runs).toHaveLength(1);
  });

  it('says why the meshes cannot be listed', async () => {
    api.on('GET', '/api/datasources/uid/kuma/resources/meshes', () => ({
      status: 502,
      data: { message: 'control plane http://127.0.0.1:5681: connection refused' },
    }));
    renderEditor({ refId: 'A', queryType: 'mesh-graph', mesh: 'default' });

    expect(
      await screen.findByText('Could not load the meshes: control plane http://127.0.0.1:5681: connection refused')
    ).toBeTruthy();
  });

  it('reports a bad zone regex as it is typed, saves it on blur and does not run it', async () => {
    const { last, runs } = renderEditor({ refId: 'A', queryType: 'mesh-graph', mesh: 'default' });
    const zone = screen.getByLabelText('Zone');

    await userEvent.type(zone, '(eu|us');
    expect(screen.getByText('zone: invalid regular expression: Unterminated group')).toBeTruthy();
    await userEvent.tab();

    expect(last()).toEqual({ refId: 'A', queryType: 'mesh-graph', mesh: 'default', zone: '(eu|us' });
    expect(runs).toHaveLength(0);

    await userEvent.type(zone, ')');
    expect(screen.queryByText(/zone: invalid regular expression/)).toBeNull();
    await userEvent.tab();
    expect(last()?.zone).toBe('(eu|us)');
    expect(runs).toHaveLength(1);
  });

  it('refuses what RE2 has not, and a roll-up without a capture group', async () => {
    renderEditor({ refId: 'A', queryType: 'mesh-graph', mesh: 'default' });
    const zone = screen.getByLabelText('Zone');
    const rollup = screen.getByLabelText('Roll-up') as HTMLInputElement;
    expect(rollup.value).toBe(DEFAULT_ROLLUP);

    await userEvent.type(zone, 'eu(?!-west)');
    expect(
      screen.getByText('zone: invalid regular expression: look-ahead and look-behind are not supported (RE2 syntax)')
    ).toBeTruthy();

    await userEvent.clear(rollup);
    await userEvent.type(rollup, '.*_svc');
    expect(
      screen.getByText('rollup: needs a capture group for the service name, e.g. (.*)_svc_[0-9]+')
    ).toBeTruthy();
  });

  it('keeps an emptied roll-up as "" (no roll-up) and runs it', async () => {
    const { last, runs } = renderEditor({ refId: 'A', queryType: 'mesh-graph', mesh: 'default', rollup: DEFAULT_ROLLUP });

    await userEvent.clear(screen.getByLabelText('Roll-up'));
    await userEvent.tab();

    expect(last()).toEqual({ refId: 'A', queryType: 'mesh-graph', mesh: 'default', rollup: '' });
    expect(runs).toHaveLength(1);
  });

  it('accepts a regex with a template variable, checked once filled in', async () => {
    renderEditor({ refId: 'A', queryType: 'mesh-graph', mesh: 'default' });

    await userEvent.type(screen.getByLabelText('Zone'), '${{zone}');

    expect(screen.queryByText(/zone: /)).toBeNull();
  });

  it('switches the query type and runs the query', async () => {
    const { last, runs } = renderEditor({ refId: 'A', queryType: 'mesh-graph', mesh: 'default' });

    await userEvent.click(screen.getByLabelText('Zones'));

    expect(last()).toEqual({ refId: 'A', queryType: 'zones', mesh: 'default' });
    expect(runs).toHaveLength(1);
    expect(screen.queryByLabelText('Mesh')).toBeNull();
  });
});
