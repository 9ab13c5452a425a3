// The query editor: the query type, the mesh (from the backend's list), and
// for the MeshGraph the zone and roll-up regexes, checked as they are typed.
import React, { useEffect, useState } from 'react';

import type { QueryEditorProps } from '@grafana/data';
import { InlineField, InlineFieldRow, Input, RadioButtonGroup } from '@grafana/ui';

import type { KumaDataSource } from './datasource';
import { MeshSelect, useMeshes } from './MeshSelect';
import { checkRegex } from './regex';
import { DEFAULT_ROLLUP, DEFAULT_ZONE, type KumaOptions, type KumaQuery, QUERY_TYPES, type QueryType } from './types';

type Props = QueryEditorProps<KumaDataSource, KumaQuery, KumaOptions>;

const LABEL_WIDTH = 14;

const TYPE_OPTIONS = QUERY_TYPES.map((t) => ({ value: t.value, label: t.label, description: t.description }));

/** The mesh to pick when a MeshGraph has none: `default` when the control plane has it, else the first. */
function defaultMesh(meshes: string[]): string | undefined {
  return meshes.includes('default') ? 'default' : meshes[0];
}

export function QueryEditor({ query, onChange, onRunQuery, datasource }: Props) {
  const meshes = useMeshes(datasource);
  const queryType = query.queryType;

  useEffect(() => {
    if (queryType === 'mesh-graph' && !query.mesh) {
      const mesh = defaultMesh(meshes.meshes);
      if (mesh) {
        onChange({ ...query, mesh });
        onRunQuery();
      }
    }
    // Only when the list arrives or the type changes, not on every edit.
  }, [meshes.meshes, queryType]);

  const change = (patch: Partial<KumaQuery>, run: boolean) => {
    const next: KumaQuery = { ...query, ...patch };
    for (const k of Object.keys(patch) as Array<keyof KumaQuery>) {
      if (patch[k] === undefined) {
        delete next[k];
      }
    }
    onChange(next);
    if (run) {
      onRunQuery();
    }
  };

  return (
    <>
      <InlineFieldRow>
        <InlineField label="Query type" labelWidth={LABEL_WIDTH}>
          <RadioButtonGroup<QueryType>
            options={TYPE_OPTIONS}
            value={queryType}
            onChange={(t) => change({ queryType: t }, true)}
          />
        </InlineField>
      </InlineFieldRow>
      {(queryType === 'mesh-graph' || queryType === 'services') && (
        <InlineFieldRow>
          <MeshSelect
            datasource={datasource}
            list={meshes}
            value={query.mesh}
            required={queryType === 'mesh-graph'}
            labelWidth={LABEL_WIDTH}
            onChange={(mesh) => change({ mesh }, true)}
          />
        </InlineFieldRow>
      )}
      {queryType === 'mesh-graph' && (
        <InlineFieldRow>
          <RegexField
            id="kuma-zone"
            field="zone"
            label="Zone"
            tooltip={`Only traffic scraped from proxies whose zone matches (anchored RE2 regex). Empty: ${DEFAULT_ZONE}`}
            placeholder={DEFAULT_ZONE}
            committed={query.zone ?? ''}
            minGroups={0}
            datasource={datasource}
            onCommit={(v, valid) => change({ zone: v === '' ? undefined : v }, valid)}
          />
          <RegexField
            id="kuma-rollup"
            field="rollup"
            label="Roll-up"
            tooltip={`Services whose name matches are drawn as one node named after the first capture group, e.g. backend_ns_svc_3001 and backend_ns_svc_3002 as backend_ns. Empty: no roll-up. Default: ${DEFAULT_ROLLUP}`}
            placeholder="no roll-up"
            committed={query.rollup ?? DEFAULT_ROLLUP}
            minGroups={1}
            datasource={datasource}
            onCommit={(v, valid) => change({ rollup: v }, valid)}
          />
        </InlineFieldRow>
      )}
    </>
  );
}

interface RegexFieldProps {
  id: string;
  field: string;
  label: string;
  tooltip: string;
  placeholder: string;
  committed: string;
  minGroups: number;
  datasource: KumaDataSource;
  /** Called on blur with the text and whether it is valid (only a valid one is run). */
  onCommit: (value: string, valid: boolean) => void;
}

/**
 * A regex input checked as it is typed and saved on blur (also when invalid,
 * so nothing typed is lost, but then not run); a value with a template
 * variable is checked by the backend once filled in.
 */
function RegexField({ id, field, label, tooltip, placeholder, committed, minGroups, datasource, onCommit }: RegexFieldProps) {
  const [text, setText] = useState(committed);
  useEffect(() => setText(committed), [committed]);
  // Empty is allowed: the default zone, or no roll-up.
  const error = text === '' || datasource.hasTemplateVariable(text) ? undefined : checkRegex(field, text, minGroups);
  return (
    <InlineField label={label} labelWidth={LABEL_WIDTH} tooltip={tooltip} htmlFor={id} invalid={!!error} error={error}>
      <Input
        id={id}
        width={32}
        value={text}
        placeholder={placeholder}
        onChange={(e: React.FormEvent<HTMLInputElement>) => setText(e.currentTarget.value)}
        onBlur={() => {
          if (text !== committed) {
            onCommit(text, error === undefined);
          }
        }}
      />
    </InlineField>
  );
}
