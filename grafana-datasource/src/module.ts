// The plugin's entry point: Grafana loads dist/module.js (built from this
// file) and reads the export `plugin`.
import { DataSourcePlugin } from '@grafana/data';

import { ConfigEditor } from './ConfigEditor';
import { KumaDataSource } from './datasource';
import { QueryEditor } from './QueryEditor';
import type { KumaOptions, KumaQuery, KumaSecureOptions } from './types';
import { VariableQueryEditor } from './VariableQueryEditor';

export const plugin = new DataSourcePlugin<KumaDataSource, KumaQuery, KumaOptions, KumaSecureOptions>(KumaDataSource)
  .setConfigEditor(ConfigEditor)
  .setQueryEditor(QueryEditor)
  .setVariableQueryEditor(VariableQueryEditor);
