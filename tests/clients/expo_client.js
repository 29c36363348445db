#!/usr/bin/env node
// Reads an Expo Updates answer as the expo-updates client does, with Expo's own libraries.
//
//   node expo_client.js CAPTURE.json
//
// CAPTURE.json: {"contentType": ..., "body": base64, "headers": {name: value},
//                "certificate": PEM or null, "assets": {url: base64 of the bytes served}}
// Prints one JSON line: the parts with their headers, the manifest, whether each signature
// verifies with the certificate, and whether each asset's hash matches the bytes served.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const {parseMultipartMixedResponseAsync} = require('@expo/multipart-body-parser');
const {parseDictionary} = require('structured-headers');

function signatureOf(header, body, certificate) {
  if (!header) {
    return null;
  }
  const fields = parseDictionary(header);
  const get = name => (fields.get(name) || [null])[0];
  const sig = get('sig');
  const result = {keyid: get('keyid'), alg: get('alg'), valid: false};
  if (certificate && typeof sig === 'string') {
    const verifier = crypto.createVerify('RSA-SHA256');
    verifier.update(body, 'utf8');
    result.valid = verifier.verify(new crypto.X509Certificate(certificate).publicKey, sig, 'base64');
  }
  return result;
}

function hashOf(bytes) {
  return crypto.createHash('sha256').update(bytes).digest('base64url');
}

async function main() {
  const capture = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  const body = Buffer.from(capture.body, 'base64');
  const report = {parts: {}, manifest: null, assets: {}};
  if (capture.contentType.startsWith('multipart/mixed')) {
    const parts = await parseMultipartMixedResponseAsync(capture.contentType, body);
    for (const part of parts) {
      report.parts[part.name] = {
        contentDisposition: part.contentDisposition,
        contentType: part.headers.get('content-type'),
        signature: signatureOf(part.headers.get('expo-signature'), part.body, capture.certificate),
        body: JSON.parse(part.body),
      };
    }
    report.manifest = report.parts.manifest ? report.parts.manifest.body : null;
  } else {
    const text = body.toString('utf8');
    report.manifest = JSON.parse(text);
    report.parts.manifest = {
      signature: signatureOf(capture.headers['expo-signature'], text, capture.certificate),
    };
  }
  const manifest = report.manifest || {};
  for (const asset of [manifest.launchAsset, ...(manifest.assets || [])].filter(Boolean)) {
    const served = capture.assets[asset.url];
    report.assets[asset.url] = served !== undefined && hashOf(Buffer.from(served, 'base64')) === asset.hash;
  }
  process.stdout.write(`${JSON.stringify(report)}\n`);
}

main().catch(error => {
  process.stderr.write(`${error.stack || error}\n`);
  process.exit(1);
});
