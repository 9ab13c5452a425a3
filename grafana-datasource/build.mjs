// Builds the plugin's frontend into dist/ the way @grafana/create-plugin sets
// a plugin up with its rspack bundler: one AMD module `module.js` compiled
// with SWC, whose Grafana packages, React, rxjs and the other libraries
// Grafana shares with plugins stay external (Grafana hands in its own copies
// when it loads the plugin), then plugin.json (version and date filled in),
// img/, README.md and LICENSE beside it. Files of the backend build
// (gpx_kuma_<os>_<arch>) already in dist/ are kept.
//
//   node build.mjs            production build into dist/
//   PLUGIN_VERSION=1.2.3 ...  the version written into plugin.json (default: package.json's)
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { rspack } from '@rspack/core';

const root = path.dirname(fileURLToPath(import.meta.url));
const readJson = (p) => JSON.parse(fs.readFileSync(path.join(root, p), 'utf8'));

/**
 * The modules Grafana provides to plugins (create-plugin's list); everything
 * else the plugin imports is bundled.
 */
export const EXTERNALS = [
  'lodash',
  'jquery',
  'moment',
  'slate',
  'emotion',
  '@emotion/react',
  '@emotion/css',
  'prismjs',
  'slate-plain-serializer',
  '@grafana/slate-react',
  'react',
  'react-dom',
  'react-redux',
  'redux',
  'rxjs',
  'i18next',
  'react-router',
  'react-router-dom',
  'd3',
  'angular',
  /^@grafana\/ui/i,
  /^@grafana\/runtime/i,
  /^@grafana\/data/i,
];

/** Files of the backend build that the frontend build must not delete. */
const BACKEND_FILES = /^(gpx_.*|go_plugin_build_manifest)$/;

function rspackConfig(outDir, pluginId) {
  return {
    context: path.join(root, 'src'),
    mode: 'production',
    devtool: 'source-map',
    target: 'web',
    entry: { module: './module.ts' },
    externals: EXTERNALS,
    module: {
      rules: [
        {
          test: /\.tsx?$/,
          exclude: /node_modules/,
          loader: 'builtin:swc-loader',
          options: {
            jsc: {
              parser: { syntax: 'typescript', tsx: true },
              // React.createElement, from Grafana's own React: the bundle then
              // runs on whichever React the Grafana version ships.
              transform: { react: { runtime: 'classic' } },
              target: 'es2022',
            },
          },
          type: 'javascript/auto',
        },
      ],
    },
    resolve: { extensions: ['.ts', '.tsx', '.js'] },
    output: {
      path: outDir,
      filename: '[name].js',
      library: { type: 'amd' },
      publicPath: `public/plugins/${pluginId}/`,
      uniqueName: pluginId,
      clean: { keep: (p) => BACKEND_FILES.test(path.basename(p)) },
    },
    performance: { hints: false },
  };
}

function compile(config) {
  return new Promise((resolve, reject) => {
    const compiler = rspack(config);
    compiler.run((err, stats) => {
      compiler.close(() => {
        if (err) {
          reject(err);
        } else if (stats.hasErrors()) {
          reject(new Error(stats.toString({ all: false, errors: true })));
        } else {
          resolve(stats);
        }
      });
    });
  });
}

/** Builds into outDir; returns the paths written, relative to it. */
export async function build({
  outDir = path.join(root, 'dist'),
  version = process.env.PLUGIN_VERSION || readJson('package.json').version,
  today = new Date().toISOString().slice(0, 10),
} = {}) {
  const pluginJsonText = fs.readFileSync(path.join(root, 'src/plugin.json'), 'utf8');
  const { id } = JSON.parse(pluginJsonText);
  await compile(rspackConfig(outDir, id));
  fs.writeFileSync(
    path.join(outDir, 'plugin.json'),
    pluginJsonText.replaceAll('%VERSION%', version).replaceAll('%TODAY%', today)
  );
  fs.cpSync(path.join(root, 'src/img'), path.join(outDir, 'img'), { recursive: true });
  for (const f of ['README.md', 'LICENSE', 'CHANGELOG.md']) {
    if (fs.existsSync(path.join(root, f))) {
      fs.copyFileSync(path.join(root, f), path.join(outDir, f));
    }
  }
  return fs.readdirSync(outDir, { recursive: true }).map(String).sort();
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  build().then(
    (files) => console.log(`dist/: ${files.join(' ')}`),
    (e) => {
      console.error(e instanceof Error ? e.message : e);
      process.exit(1);
    }
  );
}
