// The mesh drop-down of the query and variable editors: the meshes the
// backend lists (its /resources/meshes), the dashboard's template variables,
// and any name typed in.
import React, { useEffect, useState } from 'react';

import type { SelectableValue } from '@grafana/data';
import { InlineField, Select } from '@grafana/ui';

import { type KumaDataSource, errorMessage } from './datasource';

interface MeshList {
  meshes: string[];
  loading: boolean;
  error?: string;
}

/** Loads the meshes once per datasource. */
export function useMeshes(datasource: KumaDataSource): MeshList {
  const [state, setState] = useState<MeshList>({ meshes: [], loading: true });
  useEffect(() => {
    let live = true;
    setState({ meshes: [], loading: true });
    datasource.listMeshes().then(
      (meshes) => live && setState({ meshes, loading: false }),
      (e: unknown) => live && setState({ meshes: [], loading: false, error: errorMessage(e) })
    );
    return () => {
      live = false;
    };
  }, [datasource]);
  return state;
}

interface Props {
  datasource: KumaDataSource;
  list: MeshList;
  value: string | undefined;
  /** Called with the chosen mesh, or undefined when cleared. */
  onChange: (mesh: string | undefined) => void;
  /** Whether the query needs a mesh (the MeshGraph) or may go without (services of every mesh). */
  required: boolean;
  labelWidth: number;
}

export function MeshSelect({ datasource, list, value, onChange, required, labelWidth }: Props) {
  const names = [...list.meshes, ...datasource.variableNames()];
  if (value && !names.includes(value)) {
    names.push(value);
  }
  const options: Array<SelectableValue<string>> = names.map((n) => ({ label: n, value: n }));
  const error = list.error
    ? `Could not load the meshes: ${list.error}`
    : required && !value && !list.loading
      ? 'Choose a mesh'
      : undefined;
  return (
    <InlineField
      label="Mesh"
      labelWidth={labelWidth}
      htmlFor="kuma-mesh"
      tooltip={required ? 'The mesh whose services are drawn' : 'Empty: the services of every mesh'}
      invalid={error !== undefined}
      error={error}
    >
      <Select<string>
        inputId="kuma-mesh"
        width={32}
        options={options}
        value={value ?? null}
        isLoading={list.loading}
        allowCustomValue
        isClearable={!required}
        placeholder={required ? 'Choose a mesh' : 'every mesh'}
        onChange={(v: SelectableValue<string> | null) => onChange(v?.value || undefined)}
      />
    </InlineField>
  );
}
