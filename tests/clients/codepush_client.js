#!/usr/bin/env node
// Drives the real CodePush acquisition SDK (npm `code-push`) against a BuildHub server, as
// react-native-code-push does, with a small fetch adapter as its HTTP requester.
//
//   node codepush_client.js CONFIG_JSON
//
// CONFIG_JSON: {"serverUrl", "deploymentKey", "appVersion", "clientUniqueId",
//               "current": {"appVersion", "packageHash", "label"} or null,
//               "report": true to report the download and the deploy of what it got}
// Prints one JSON line: {"remotePackage": ..., "packageBytes": size downloaded, "reports": [...]}.
'use strict';

const {AcquisitionManager, AcquisitionStatus} = require('code-push/script/acquisition-sdk');

const VERBS = {0: 'GET', 1: 'HEAD', 2: 'POST', 3: 'PUT', 4: 'DELETE', 8: 'PATCH'};

const fetchRequester = {
  request(verb, url, body, callback) {
    if (typeof body === 'function') {
      callback = body;
      body = undefined;
    }
    const init = {method: VERBS[verb]};
    if (body !== undefined && body !== null) {
      init.body = body;
      init.headers = {'Content-Type': 'application/json'};
    }
    fetch(url, init)
      .then(async response => callback(null, {statusCode: response.status, body: await response.text()}))
      .catch(error => callback(error, null));
  },
};

function promised(fn) {
  return new Promise((resolve, reject) => fn((error, result) => (error ? reject(error) : resolve(result))));
}

async function main() {
  const config = JSON.parse(process.argv[2]);
  const manager = new AcquisitionManager(fetchRequester, {
    serverUrl: config.serverUrl,
    deploymentKey: config.deploymentKey,
    appVersion: config.appVersion,
    clientUniqueId: config.clientUniqueId,
    ignoreAppVersion: false,
  });
  const current = config.current || {appVersion: config.appVersion};
  const remotePackage = await promised(cb => manager.queryUpdateWithCurrentPackage(current, cb));
  const result = {remotePackage: remotePackage || null, packageBytes: null, reports: []};
  if (remotePackage && remotePackage.downloadUrl) {
    const response = await fetch(remotePackage.downloadUrl);
    result.packageBytes = (await response.arrayBuffer()).byteLength;
    if (config.report) {
      await promised(cb => manager.reportStatusDownload(remotePackage, cb));
      result.reports.push('download');
      await promised(cb =>
        manager.reportStatusDeploy(remotePackage, AcquisitionStatus.DeploymentSucceeded, config.appVersion, null, cb),
      );
      result.reports.push('deploy');
    }
  }
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

main().catch(error => {
  process.stderr.write(`${error.stack || error}\n`);
  process.exit(1);
});
