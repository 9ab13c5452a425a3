// The editor of a template variable's query: meshes, zones, or the services
// of a mesh (or of every mesh). metricFindQuery turns the answer into values.
import React, { useEffect } from 'react';

import { Alert, InlineField, InlineFieldRow, RadioButtonGroup } from '@grafana/ui';

import { type KumaDataSource, type KumaVariableQuery, VARIABLE_QUERY_TYPES, parseVariableQuery } from './datasource';
import { MeshSelect, useMeshes } from './MeshSelect';
import { QUERY_TYPES, type QueryType } from './types';

interface Props {
  datasource: KumaDataSource;
  /** The saved query: the object this editor writes, or a dashboard's text form. */
  query: KumaVariableQuery | string | undefined;
  onChange: (query: KumaVariableQuery, definition: string) => void;
}

const LABEL_WIDTH = 14;

const TYPE_OPTIONS = QUERY_TYPES.filter((t) => VARIABLE_QUERY_TYPES.includes(t.value)).map((t) => ({
  value: t.value,
  label: t.label,
  description: t.description,
}));

/** The text Grafana shows for the variable's query in the variables list. */
export function variableDefinition(q: KumaVariableQuery): string {
  return q.mesh ? `${q.queryType} ${q.mesh}` : q.queryType;
}

const DEFAULT_VARIABLE_QUERY: KumaVariableQuery = { queryType: 'meshes' };

/** The saved query read back, or why it cannot be (a hand-written text form, say). */
function current(query: Props['query']): { q: KumaVariableQuery; error?: string } {
  if (query === undefined || query === '') {
    return { q: DEFAULT_VARIABLE_QUERY };
  }
  try {
    return { q: parseVariableQuery(query) };
  } catch (e) {
    return { q: DEFAULT_VARIABLE_QUERY, error: e instanceof Error ? e.message : String(e) };
  }
}

export function VariableQueryEditor({ datasource, query, onChange }: Props) {
  const meshes = useMeshes(datasource);
  const { q, error } = current(query);
  const change = (next: KumaVariableQuery) => onChange(next, variableDefinition(next));
  const empty = query === undefined || query === '';
  useEffect(() => {
    // A new variable: save the query shown, so that it runs as shown.
    if (empty) {
      onChange(DEFAULT_VARIABLE_QUERY, variableDefinition(DEFAULT_VARIABLE_QUERY));
    }
  }, [empty, onChange]);
  return (
    <>
      {error && (
        <Alert severity="warning" title="The saved query is not understood">
          {error}. Choose a query type to replace it.
        </Alert>
      )}
      <InlineFieldRow>
        <InlineField label="Query type" labelWidth={LABEL_WIDTH}>
          <RadioButtonGroup<QueryType>
            options={TYPE_OPTIONS}
            value={q.queryType}
            onChange={(queryType) => change(queryType === 'services' && q.mesh ? { queryType, mesh: q.mesh } : { queryType })}
          />
        </InlineField>
      </InlineFieldRow>
      {q.queryType === 'services' && (
        <InlineFieldRow>
          <MeshSelect
            datasource={datasource}
            list={meshes}
            value={q.mesh}
            required={false}
            labelWidth={LABEL_WIDTH}
            onChange={(mesh) => change(mesh ? { queryType: 'services', mesh } : { queryType: 'services' })}
          />
        </InlineFieldRow>
      )}
    </>
  );
}
