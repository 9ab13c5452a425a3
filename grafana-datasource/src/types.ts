// The query model and the settings of the Kuma datasource, as CONTRACT.md
// (beside this folder) fixes them between these editors and the Go backend.
import type { DataQuery, DataSourceJsonData } from '@grafana/data';

/** The query types the backend answers. */
export type QueryType = 'mesh-graph' | 'meshes' | 'zones' | 'services';

export const QUERY_TYPES: ReadonlyArray<{ value: QueryType; label: string; description: string }> = [
  { value: 'mesh-graph', label: 'MeshGraph', description: 'services and the traffic between them, for the node graph panel' },
  { value: 'meshes', label: 'Meshes', description: 'the meshes of the control plane' },
  { value: 'zones', label: 'Zones', description: 'the zones of the control plane' },
  { value: 'services', label: 'Services', description: 'the services of a mesh with their dataplanes online/offline' },
];

export function isQueryType(v: unknown): v is QueryType {
  return QUERY_TYPES.some((t) => t.value === v);
}

/** The roll-up regex the backend applies when a query has none: folds `backend_ns_svc_3001` into `backend_ns`. */
export const DEFAULT_ROLLUP = '(.*)(_svc(_[0-9]+)?)';

/** The zone regex the backend applies when a query has none (every zone, and proxies without one). */
export const DEFAULT_ZONE = '.*';

/**
 * One query. `rollup` absent means DEFAULT_ROLLUP, `""` means no roll-up;
 * `zone` absent means DEFAULT_ZONE.
 */
export interface KumaQuery extends DataQuery {
  queryType?: QueryType;
  mesh?: string;
  zone?: string;
  rollup?: string;
}

/** How the backend reaches Prometheus: by URL, or through a Prometheus datasource of this Grafana. */
export type PrometheusSource = 'url' | 'datasource';

/** The datasource's plain settings (`jsonData`); the URL of the control plane is the datasource's `url`. */
export interface KumaOptions extends DataSourceJsonData {
  prometheusUrl?: string;
  prometheusBasicAuthUser?: string;
  prometheusTlsSkipVerify?: boolean;
  prometheusDatasourceUid?: string;
  grafanaUrl?: string;
  tlsSkipVerify?: boolean;
  tlsAuthWithCACert?: boolean;
  tlsAuth?: boolean;
  serverName?: string;
  timeout?: number;
}

/** The write-only settings (`secureJsonData`): Grafana never sends them back to the browser. */
export interface KumaSecureOptions {
  controlPlaneToken?: string;
  tlsCACert?: string;
  tlsClientCert?: string;
  tlsClientKey?: string;
  prometheusBasicAuthPassword?: string;
  prometheusBearerToken?: string;
  prometheusTlsCACert?: string;
  grafanaToken?: string;
}

/** An item of the `/resources/meshes` and `/resources/zones` answers. */
export interface NamedItem {
  name: string;
}
