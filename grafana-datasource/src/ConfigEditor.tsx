// The datasource's settings page: the control plane's API (the datasource's
// URL, its TLS and token) and how the backend reaches Prometheus (a URL with
// basic auth or a bearer token, or a Prometheus datasource of this Grafana).
// Secrets go to secureJsonData only: Grafana encrypts them and never sends
// them back, so a stored one shows as "configured" with a Reset button.
import React, { useState } from 'react';

import type { DataSourcePluginOptionsEditorProps, DataSourceSettings } from '@grafana/data';
import { DataSourcePicker } from '@grafana/runtime';
import { Field, FieldSet, Input, RadioButtonGroup, SecretInput, SecretTextArea, Switch } from '@grafana/ui';

import type { KumaOptions, KumaSecureOptions, PrometheusSource } from './types';

type Props = DataSourcePluginOptionsEditorProps<KumaOptions, KumaSecureOptions>;
type Settings = DataSourceSettings<KumaOptions, KumaSecureOptions>;
type SecretKey = keyof KumaSecureOptions;

/** How the backend authenticates to Prometheus by URL. */
export type PrometheusAuth = 'none' | 'basic' | 'bearer';

/** Sets (or, for undefined, removes) plain settings. */
function withJson(s: Settings, patch: Partial<KumaOptions>): Settings {
  const jsonData: KumaOptions = { ...s.jsonData, ...patch };
  for (const k of Object.keys(patch) as Array<keyof KumaOptions>) {
    if (patch[k] === undefined) {
      delete jsonData[k];
    }
  }
  return { ...s, jsonData };
}

/** Sets a secret: it goes to secureJsonData, which Grafana stores encrypted and never returns. */
function withSecret(s: Settings, key: SecretKey, value: string): Settings {
  return { ...s, secureJsonData: { ...s.secureJsonData, [key]: value } };
}

/** Removes stored or typed secrets (Grafana's reset: empty value, field no longer configured). */
function withSecretsReset(s: Settings, keys: SecretKey[]): Settings {
  const present = keys.filter((k) => s.secureJsonFields?.[k] || s.secureJsonData?.[k]);
  if (present.length === 0) {
    return s;
  }
  const secureJsonData: KumaSecureOptions = { ...s.secureJsonData };
  const secureJsonFields = { ...s.secureJsonFields };
  for (const k of present) {
    secureJsonData[k] = '';
    secureJsonFields[k] = false;
  }
  return { ...s, secureJsonData, secureJsonFields };
}

function configured(s: Settings, key: SecretKey): boolean {
  return Boolean(s.secureJsonFields?.[key]);
}

/** The Prometheus authentication the stored settings describe. */
export function prometheusAuth(s: Settings): PrometheusAuth {
  if (s.jsonData.prometheusBasicAuthUser || configured(s, 'prometheusBasicAuthPassword')) {
    return 'basic';
  }
  if (configured(s, 'prometheusBearerToken')) {
    return 'bearer';
  }
  return 'none';
}

/** Where the stored settings say Prometheus is. */
export function prometheusSource(s: Settings): PrometheusSource {
  return s.jsonData.prometheusDatasourceUid ? 'datasource' : 'url';
}

/** Switches the Prometheus authentication, dropping the other kind's user and secrets. */
export function switchPrometheusAuth(s: Settings, auth: PrometheusAuth): Settings {
  switch (auth) {
    case 'none':
      return withSecretsReset(withJson(s, { prometheusBasicAuthUser: undefined }), [
        'prometheusBasicAuthPassword',
        'prometheusBearerToken',
      ]);
    case 'basic':
      return withSecretsReset(s, ['prometheusBearerToken']);
    case 'bearer':
      return withSecretsReset(withJson(s, { prometheusBasicAuthUser: undefined }), ['prometheusBasicAuthPassword']);
  }
}

/** Switches between Prometheus by URL and a Prometheus datasource, dropping the other way's settings. */
export function switchPrometheusSource(s: Settings, source: PrometheusSource): Settings {
  if (source === 'url') {
    return withSecretsReset(withJson(s, { prometheusDatasourceUid: undefined, grafanaUrl: undefined }), [
      'grafanaToken',
    ]);
  }
  return withSecretsReset(
    withJson(s, { prometheusUrl: undefined, prometheusBasicAuthUser: undefined, prometheusTlsSkipVerify: undefined }),
    ['prometheusBasicAuthPassword', 'prometheusBearerToken', 'prometheusTlsCACert']
  );
}

/** Why an http(s) URL setting is not one, or undefined. */
export function checkUrl(value: string | undefined, required: boolean): string | undefined {
  if (!value) {
    return required ? 'Required' : undefined;
  }
  let u: URL;
  try {
    u = new URL(value);
  } catch {
    return 'Must be an http:// or https:// URL';
  }
  if ((u.protocol !== 'http:' && u.protocol !== 'https:') || !u.host) {
    return 'Must be an http:// or https:// URL';
  }
  return undefined;
}

/** Why a timeout setting is not a positive number of seconds, or undefined. */
function checkTimeout(value: number | undefined): string | undefined {
  return value === undefined || (Number.isFinite(value) && value > 0) ? undefined : 'Must be a positive number of seconds';
}

const AUTH_OPTIONS = [
  { value: 'none' as const, label: 'No authentication' },
  { value: 'basic' as const, label: 'Basic auth' },
  { value: 'bearer' as const, label: 'Bearer token' },
];

const SOURCE_OPTIONS = [
  { value: 'url' as const, label: 'Direct URL' },
  { value: 'datasource' as const, label: 'Prometheus datasource' },
];

export function ConfigEditor({ options, onOptionsChange }: Props) {
  const [auth, setAuth] = useState<PrometheusAuth>(() => prometheusAuth(options));
  const [source, setSource] = useState<PrometheusSource>(() => prometheusSource(options));
  const json = options.jsonData;
  const set = (patch: Partial<KumaOptions>) => onOptionsChange(withJson(options, patch));
  const text = (key: keyof KumaOptions) => (e: React.FormEvent<HTMLInputElement>) =>
    set({ [key]: e.currentTarget.value || undefined });
  const toggle = (key: keyof KumaOptions) => (e: React.FormEvent<HTMLInputElement>) =>
    set({ [key]: e.currentTarget.checked || undefined });

  const secret = (key: SecretKey, id: string, placeholder: string) => (
    <SecretInput
      id={id}
      width={60}
      placeholder={placeholder}
      isConfigured={configured(options, key)}
      value={options.secureJsonData?.[key] ?? ''}
      onChange={(e: React.FormEvent<HTMLInputElement>) => onOptionsChange(withSecret(options, key, e.currentTarget.value))}
      onReset={() => onOptionsChange(withSecretsReset(options, [key]))}
    />
  );
  const pem = (key: SecretKey, id: string, placeholder: string) => (
    <SecretTextArea
      id={id}
      cols={60}
      rows={6}
      placeholder={placeholder}
      isConfigured={configured(options, key)}
      value={options.secureJsonData?.[key] ?? ''}
      onChange={(e: React.FormEvent<HTMLTextAreaElement>) =>
        onOptionsChange(withSecret(options, key, e.currentTarget.value))
      }
      onReset={() => onOptionsChange(withSecretsReset(options, [key]))}
    />
  );

  const urlError = checkUrl(options.url, true);
  const promUrlError = checkUrl(json.prometheusUrl, source === 'url');
  const grafanaUrlError = checkUrl(json.grafanaUrl, false);
  const timeoutError = checkTimeout(json.timeout);

  return (
    <>
      <FieldSet label="Control plane">
        <Field
          label="URL"
          description="The control plane's API: http://<cp>:5681, or https://<cp>:5682 (its HTTPS port)"
          invalid={!!urlError}
          error={urlError}
          required
        >
          <Input
            id="kuma-cp-url"
            width={60}
            placeholder="http://127.0.0.1:5681"
            value={options.url ?? ''}
            onChange={(e: React.FormEvent<HTMLInputElement>) => onOptionsChange({ ...options, url: e.currentTarget.value })}
          />
        </Field>
        <Field
          label="User token"
          description="A user token of the control plane (kumactl generate user-token), sent as Authorization: Bearer; over http:// only to a loopback host"
        >
          {secret('controlPlaneToken', 'kuma-cp-token', 'Bearer token of a control plane user')}
        </Field>
        <Field label="Skip TLS certificate verification" description="Do not verify the control plane's certificate">
          <Switch id="kuma-cp-tls-skip-verify" value={!!json.tlsSkipVerify} onChange={toggle('tlsSkipVerify')} />
        </Field>
        <Field label="With CA certificate" description="Verify the control plane with a CA of its own, e.g. its api-server-ca.pem">
          <Switch id="kuma-cp-with-ca" value={!!json.tlsAuthWithCACert} onChange={toggle('tlsAuthWithCACert')} />
        </Field>
        {json.tlsAuthWithCACert && (
          <Field label="CA certificate">{pem('tlsCACert', 'kuma-cp-ca', 'Begins with -----BEGIN CERTIFICATE-----')}</Field>
        )}
        <Field label="TLS client authentication" description="Present an admin client certificate of the control plane">
          <Switch id="kuma-cp-tls-auth" value={!!json.tlsAuth} onChange={toggle('tlsAuth')} />
        </Field>
        {json.tlsAuth && (
          <>
            <Field label="Client certificate">
              {pem('tlsClientCert', 'kuma-cp-client-cert', 'Begins with -----BEGIN CERTIFICATE-----')}
            </Field>
            <Field label="Client key">{pem('tlsClientKey', 'kuma-cp-client-key', 'Begins with -----BEGIN PRIVATE KEY-----')}</Field>
          </>
        )}
        <Field label="Server name" description="The name to verify the control plane's certificate against (empty: the URL's host)">
          <Input id="kuma-cp-server-name" width={60} value={json.serverName ?? ''} onChange={text('serverName')} />
        </Field>
        <Field
          label="Timeout"
          description="Seconds for each call to the control plane or Prometheus (empty: 30)"
          invalid={!!timeoutError}
          error={timeoutError}
        >
          <Input
            id="kuma-timeout"
            type="number"
            width={12}
            placeholder="30"
            value={json.timeout ?? ''}
            onChange={(e: React.FormEvent<HTMLInputElement>) => {
              const v = e.currentTarget.value;
              set({ timeout: v === '' ? undefined : Number(v) });
            }}
          />
        </Field>
      </FieldSet>

      <FieldSet label="Prometheus">
        <Field label="Prometheus is reached by">
          <RadioButtonGroup<PrometheusSource>
            options={SOURCE_OPTIONS}
            value={source}
            onChange={(v) => {
              setSource(v);
              onOptionsChange(switchPrometheusSource(options, v));
            }}
          />
        </Field>
        {source === 'url' && (
          <>
            <Field
              label="Prometheus URL"
              description="Prometheus' base URL; the backend queries <URL>/api/v1/query"
              invalid={!!promUrlError}
              error={promUrlError}
              required
            >
              <Input
                id="kuma-prom-url"
                width={60}
                placeholder="http://127.0.0.1:9090"
                value={json.prometheusUrl ?? ''}
                onChange={text('prometheusUrl')}
              />
            </Field>
            <Field label="Authentication">
              <RadioButtonGroup<PrometheusAuth>
                options={AUTH_OPTIONS}
                value={auth}
                onChange={(v) => {
                  setAuth(v);
                  onOptionsChange(switchPrometheusAuth(options, v));
                }}
              />
            </Field>
            {auth === 'basic' && (
              <>
                <Field label="User">
                  <Input
                    id="kuma-prom-user"
                    width={60}
                    value={json.prometheusBasicAuthUser ?? ''}
                    onChange={text('prometheusBasicAuthUser')}
                  />
                </Field>
                <Field label="Password">{secret('prometheusBasicAuthPassword', 'kuma-prom-password', 'Password')}</Field>
              </>
            )}
            {auth === 'bearer' && (
              <Field label="Token">{secret('prometheusBearerToken', 'kuma-prom-token', 'Token')}</Field>
            )}
            <Field label="Skip TLS certificate verification" description="Do not verify Prometheus' certificate (https only)">
              <Switch
                id="kuma-prom-tls-skip-verify"
                value={!!json.prometheusTlsSkipVerify}
                onChange={toggle('prometheusTlsSkipVerify')}
              />
            </Field>
            <Field label="CA certificate" description="PEM bundle that verifies an https:// Prometheus URL (optional)">
              {pem('prometheusTlsCACert', 'kuma-prom-ca', 'Begins with -----BEGIN CERTIFICATE-----')}
            </Field>
          </>
        )}
        {source === 'datasource' && (
          <>
            <Field
              label="Prometheus datasource"
              description="Queried through this Grafana's datasource proxy"
              invalid={!json.prometheusDatasourceUid}
              error={json.prometheusDatasourceUid ? undefined : 'Required'}
              required
            >
              <DataSourcePicker
                inputId="kuma-prom-ds"
                type="prometheus"
                noDefault
                width={60}
                current={json.prometheusDatasourceUid ?? null}
                onChange={(ds) => set({ prometheusDatasourceUid: ds.uid })}
              />
            </Field>
            <Field
              label="Grafana token"
              description="A service-account token of this Grafana allowed to query that datasource (role Viewer)"
            >
              {secret('grafanaToken', 'kuma-grafana-token', 'Service account token')}
            </Field>
            <Field
              label="Grafana URL"
              description="Where the backend reaches this Grafana (empty: Grafana's root_url)"
              invalid={!!grafanaUrlError}
              error={grafanaUrlError}
            >
              <Input
                id="kuma-grafana-url"
                width={60}
                placeholder="http://127.0.0.1:3000"
                value={json.grafanaUrl ?? ''}
                onChange={text('grafanaUrl')}
              />
            </Field>
          </>
        )}
      </FieldSet>
    </>
  );
}
