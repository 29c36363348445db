#!/usr/bin/env node
// OTA build steps that need Node: the Metro bundle and the sourcemap composition.
//
//   node ota.js bundle  --app DIR --entry FILE --platform P --bundle-out F --map-out F --cache DIR
//   node ota.js compose --app DIR --metro-map F --hermes-map F --out F
//
// Metro and metro-source-map are taken from the app's own node_modules when it has them (as a
// React Native app does), else from this tool chain's. Every line of output is plain text; a
// failure ends with one line `OTA_ERROR {json}` (type, message, file, line, column), exit 1.
'use strict';

const fs = require('fs');
const path = require('path');

const CONFIG_FILES = [
  'metro.config.js',
  'metro.config.cjs',
  'metro.config.mjs',
  'metro.config.json',
  '.config/metro.js',
  '.config/metro.cjs',
];

function parseArgs(argv) {
  const options = {};
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith('--') || argv[i + 1] === undefined) {
      throw new Error(`bad argument ${argv[i]}`);
    }
    options[argv[i].slice(2)] = argv[i + 1];
  }
  return options;
}

// The app's copy of a package when it has one, else this tool chain's; with where it came from.
function locate(name, appDir) {
  for (const [origin, base] of [
    ['app', appDir],
    ['toolchain', __dirname],
  ]) {
    try {
      const manifest = require.resolve(`${name}/package.json`, {paths: [base]});
      const {version} = JSON.parse(fs.readFileSync(manifest, 'utf8'));
      const main = require.resolve(name, {paths: [base]});
      return {dir: path.dirname(manifest), main, version, origin};
    } catch (error) {
      if (error.code !== 'MODULE_NOT_FOUND' && error.code !== 'ERR_PACKAGE_PATH_NOT_EXPORTED') {
        throw error;
      }
    }
  }
  const failure = new Error(
    `${name} is neither in the app's dependencies nor in the BuildHub tool chain ` +
      '(run `make toolchain`)',
  );
  failure.type = 'MissingToolchain';
  throw failure;
}

function stripAnsi(text) {
  // eslint-disable-next-line no-control-regex
  return String(text).replace(/\u001b\[[0-9;?]*[ -/]*[@-~]/g, '');
}

let appRoot = null;

// Paths as the customer knows them: relative to the app's root.
function relative(text) {
  if (!appRoot || text == null) {
    return text;
  }
  return String(text).split(appRoot + path.sep).join('');
}

function fail(error) {
  const message = relative(stripAnsi(error.message || String(error))).trim();
  // Metro's resolution errors carry the location only in their code frame: `> 3 | ...`.
  const frame = /^> (\d+) \|/m.exec(message);
  const report = {
    type: error.type || error.name || 'Error',
    message,
    file: relative(error.filename || error.originModulePath || null),
    line: error.lineNumber ?? error.loc?.start?.line ?? (frame ? Number(frame[1]) : null),
    column: error.column ?? error.loc?.start?.column ?? null,
  };
  process.stdout.write(`${message}\n`);
  process.stdout.write(`OTA_ERROR ${JSON.stringify(report)}\n`);
  process.exit(1);
}

// Metro's events as plain log lines; transform progress as `PROGRESS done/total`.
function plainReporter() {
  let lastShare = -1;
  return {
    update(event) {
      if (event.type === 'bundle_transform_progressed') {
        const {transformedFileCount: done, totalFileCount: total} = event;
        const share = total ? Math.floor((10 * done) / total) : 0;
        if (share !== lastShare) {
          lastShare = share;
          console.log(`PROGRESS ${done}/${total}`);
        }
      } else if (event.type === 'bundle_save_log') {
        console.log(stripAnsi(event.message));
      } else if (event.type === 'worker_stdout_chunk' || event.type === 'worker_stderr_chunk') {
        process.stdout.write(stripAnsi(event.chunk));
      }
    },
  };
}

async function loadMetroConfig(metro, appDir) {
  const own = CONFIG_FILES.find(name => fs.existsSync(path.join(appDir, name)));
  if (own) {
    console.log(`metro config: ${own} (the app's)`);
    return metro.loadConfig({cwd: appDir});
  }
  // No config of its own: the React Native defaults, as a template app would have them.
  const rnConfig = locate('@react-native/metro-config', appDir);
  console.log(`metro config: @react-native/metro-config ${rnConfig.version} defaults`);
  const {getDefaultConfig} = require(rnConfig.main);
  const defaults = getDefaultConfig(appDir);
  let initializeCore = [];
  try {
    initializeCore = [
      require.resolve('react-native/Libraries/Core/InitializeCore', {paths: [appDir]}),
    ];
  } catch {
    // not a react-native app: nothing runs before its entry module
  }
  return metro.mergeConfig(defaults, {
    serializer: {getModulesRunBeforeMainModule: () => initializeCore},
    // Metro sees only these folders; the polyfills may come from this tool chain's.
    watchFolders: [appDir, ...(rnConfig.origin === 'toolchain' ? [__dirname] : [])],
  });
}

async function bundle(options) {
  const appDir = path.resolve(options.app);
  const located = locate('metro', appDir);
  console.log(`metro ${located.version} from the ${located.origin}`);
  const metro = require(located.main);
  const {FileStore} = require(require.resolve('metro-cache', {paths: [located.dir]}));
  const base = await loadMetroConfig(metro, appDir);
  const config = metro.mergeConfig(base, {
    cacheStores: [new FileStore({root: path.resolve(options.cache)})],
    resetCache: false,
    reporter: plainReporter(),
    resolver: {useWatchman: false},
    watch: false,
  });
  fs.mkdirSync(path.dirname(path.resolve(options['bundle-out'])), {recursive: true});
  await metro.runBuild(config, {
    entry: path.resolve(appDir, options.entry),
    platform: options.platform,
    dev: false,
    minify: true,
    sourceMap: true,
    sourceMapUrl: path.basename(options['map-out']),
    bundleOut: path.resolve(options['bundle-out']),
    sourceMapOut: path.resolve(options['map-out']),
  });
  console.log(`METRO_VERSION ${located.version} ${located.origin}`);
}

function compose(options) {
  const appDir = path.resolve(options.app);
  const located = locate('metro-source-map', appDir);
  const {composeSourceMaps} = require(located.main);
  const read = file => JSON.parse(fs.readFileSync(file, 'utf8'));
  const composed = composeSourceMaps([read(options['metro-map']), read(options['hermes-map'])]);
  composed.sources = (composed.sources || []).map(source =>
    path.isAbsolute(source) ? path.relative(appDir, source) : source,
  );
  fs.writeFileSync(options.out, JSON.stringify(composed));
  const sources = (composed.sources || []).filter(source => !source.includes('node_modules'));
  console.log(
    `composed sourcemap (metro-source-map ${located.version} from the ${located.origin}): ` +
      `${(composed.sources || []).length} sources, ${sources.length} of the app`,
  );
}

async function main() {
  const [command, ...rest] = process.argv.slice(2);
  const options = parseArgs(rest);
  appRoot = options.app ? path.resolve(options.app) : null;
  if (command === 'bundle') {
    await bundle(options);
  } else if (command === 'compose') {
    compose(options);
  } else {
    throw new Error(`unknown command ${command}: use bundle or compose`);
  }
  // Metro may leave worker handles open; the work is written, so end now.
  process.exit(0);
}

main().catch(fail);
