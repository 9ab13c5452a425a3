import React, { useState } from 'react';
import { describe, expect, it } from 'vitest';

import { render, screen } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import type { DataSourceSettings } from '@grafana/data';

import { ConfigEditor } from './ConfigEditor';
import type { KumaOptions, KumaSecureOptions } from './types';

type Settings = DataSourceSettings<KumaOptions, KumaSecureOptions>;

/**
 * A field's label: its name, then " *" when required, then its description
 * (a sentence, in the same <label>) or nothing.
 */
function label(name: string): RegExp {
  return new RegExp(`^${name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}( \\*)?(?![ a-z])`);
}

/** The settings as Grafana hands them to the page: secrets only as `secureJsonFields` flags. */
function stored(jsonData: KumaOptions, secureJsonFields: Record<string, boolean> = {}, url = ''): Settings {
  return {
    id: 7,
    uid: 'kuma',
    orgId: 1,
    name: 'Kuma',
    typeLogoUrl: '',
    type: 'kumahq-kuma-datasource',
    typeName: 'Kuma',
    access: 'proxy',
    url,
    user: '',
    database: '',
    basicAuth: false,
    basicAuthUser: '',
    isDefault: false,
    jsonData,
    secureJsonFields,
    readOnly: false,
    withCredentials: false,
  };
}

/** The settings page: the options are state that onOptionsChange replaces, as Grafana's page does. */
function renderEditor(initial: Settings) {
  const changes: Settings[] = [];
  function Page() {
    const [options, setOptions] = useState(initial);
    return (
      <ConfigEditor
        options={options}
        onOptionsChange={(o) => {
          changes.push(o);
          setOptions(o);
        }}
      />
    );
  }
  render(<Page />);
  return { last: () => changes.at(-1)! };
}

describe('ConfigEditor', () => {
  it('saves the control plane URL, TLS settings and certificates where the backend reads them', async () => {
    const { last } = renderEditor(stored({}));

    await userEvent.type(screen.getByLabelText(label('URL')), 'https://cp.example:5682');
    await userEvent.click(screen.getByLabelText(label('Skip TLS certificate verification'), { selector: '#kuma-cp-tls-skip-verify' }));
    await userEvent.click(screen.getByLabelText(label('With CA certificate')));
    await userEvent.type(screen.getByLabelText(label('CA certificate'), { selector: '#kuma-cp-ca' }), 'CA PEM');
    await userEvent.click(screen.getByLabelText(label('TLS client authentication')));
    await userEvent.type(screen.getByLabelText(label('Client certificate')), 'CERT PEM');
    await userEvent.type(screen.getByLabelText(label('Client key')), 'KEY PEM');
    await userEvent.type(screen.getByLabelText(label('Server name')), 'kuma-control-plane');
    await userEvent.type(screen.getByLabelText(label('Timeout')), '10');

    const s = last();
    expect(s.url).toBe('https://cp.example:5682');
    expect(s.jsonData).toEqual({
      tlsSkipVerify: true,
      tlsAuthWithCACert: true,
      tlsAuth: true,
      serverName: 'kuma-control-plane',
      timeout: 10,
    });
    expect(s.secureJsonData).toEqual({ tlsCACert: 'CA PEM', tlsClientCert: 'CERT PEM', tlsClientKey: 'KEY PEM' });
  });

  it('keeps the tokens in the secure settings only, and shows stored ones as configured without their value', async () => {
    const { last } = renderEditor(
      stored({ prometheusUrl: 'http://127.0.0.1:9090' }, { controlPlaneToken: true, prometheusBearerToken: true }, 'http://127.0.0.1:5681')
    );

    const cpToken = screen.getByLabelText(label('User token')) as HTMLInputElement;
    expect(cpToken.value).toBe('configured');
    expect(cpToken.disabled).toBe(true);
    const promToken = screen.getByLabelText(label('Token')) as HTMLInputElement;
    expect(promToken.value).toBe('configured');

    // Replacing the control plane's token: reset, then type the new one.
    const resets = screen.getAllByRole('button', { name: 'Reset' });
    await userEvent.click(resets[0]);
    expect(last().secureJsonFields.controlPlaneToken).toBe(false);
    expect(last().secureJsonData?.controlPlaneToken).toBe('');
    const typed = screen.getByLabelText(label('User token')) as HTMLInputElement;
    expect(typed.type).toBe('password');
    await userEvent.type(typed, 'new-token');

    const s = last();
    expect(s.secureJsonData).toEqual({ controlPlaneToken: 'new-token' });
    expect(JSON.stringify(s.jsonData)).not.toContain('new-token');
    expect(s.secureJsonFields.prometheusBearerToken).toBe(true);
  });

  it('saves basic auth for Prometheus, and switching to a bearer token drops the user and the password', async () => {
    const { last } = renderEditor(stored({}));

    await userEvent.type(screen.getByLabelText(label('Prometheus URL')), 'https://prom.example:9090');
    await userEvent.click(screen.getByLabelText(label('Basic auth')));
    await userEvent.type(screen.getByLabelText(label('User')), 'grafana');
    await userEvent.type(screen.getByLabelText(label('Password')), 'pw');
    expect(last().jsonData).toEqual({ prometheusUrl: 'https://prom.example:9090', prometheusBasicAuthUser: 'grafana' });
    expect(last().secureJsonData).toEqual({ prometheusBasicAuthPassword: 'pw' });

    await userEvent.click(screen.getByLabelText(label('Bearer token')));
    await userEvent.type(screen.getByLabelText(label('Token')), 'tok');

    const s = last();
    expect(s.jsonData).toEqual({ prometheusUrl: 'https://prom.example:9090' });
    expect(s.secureJsonData).toEqual({ prometheusBasicAuthPassword: '', prometheusBearerToken: 'tok' });
    expect(s.secureJsonFields.prometheusBasicAuthPassword).toBe(false);
  });

  it('resets a stored password when the authentication is switched off', async () => {
    const { last } = renderEditor(
      stored({ prometheusUrl: 'http://127.0.0.1:9090', prometheusBasicAuthUser: 'grafana' }, { prometheusBasicAuthPassword: true })
    );
    expect((screen.getByLabelText(label('Password')) as HTMLInputElement).value).toBe('configured');

    await userEvent.click(screen.getByLabelText(label('No authentication')));

    expect(last().jsonData).toEqual({ prometheusUrl: 'http://127.0.0.1:9090' });
    expect(last().secureJsonData).toEqual({ prometheusBasicAuthPassword: '' });
    expect(last().secureJsonFields).toEqual({ prometheusBasicAuthPassword: false });
  });

  it('says what is wrong with a URL or the timeout', async () => {
    renderEditor(stored({}));

    expect(screen.getAllByText('Required')).toHaveLength(2);
    await userEvent.type(screen.getByLabelText(label('URL')), 'cp:5681');
    await userEvent.type(screen.getByLabelText(label('Prometheus URL')), 'ftp://prom');
    await userEvent.type(screen.getByLabelText(label('Timeout')), '-1');

    expect(screen.getAllByText('Must be an http:// or https:// URL')).toHaveLength(2);
    expect(screen.getByText('Must be a positive number of seconds')).toBeTruthy();
  });
});
