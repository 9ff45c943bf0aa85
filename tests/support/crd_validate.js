// Validates the custom resources of rendered manifests (stdin: a multi-document YAML) against the
// CRDs' published schemas, as compiled by @kubernetes-models (npm; installed by
// deploy/local/tools.sh under $TRACESIFT_NODE_MODULES). Prints `ok KIND NAME` or
// `FAIL KIND NAME errors` per resource and `skip KIND` for kinds it has no schema for; exits 1 on
// any failure.
const path = require('path');
const fs = require('fs');
const root = process.env.TRACESIFT_NODE_MODULES;
if (!root) {
  console.error('TRACESIFT_NODE_MODULES is not set (deploy/local/tools.sh sets it)');
  process.exit(2);
}
const yaml = require(path.join(root, 'js-yaml'));
const schemas = {
  'keda.sh/v1alpha1/ScaledObject': '@kubernetes-models/keda/_schemas/KedaShV1alpha1ScaledObject.js',
  'keda.sh/v1alpha1/TriggerAuthentication': '@kubernetes-models/keda/_schemas/KedaShV1alpha1TriggerAuthentication.js',
  'monitoring.coreos.com/v1/PodMonitor':
    '@kubernetes-models/prometheus-operator/_schemas/ComGithubPrometheusOperatorPrometheusOperatorPkgApisMonitoringV1PodMonitor.js',
  'monitoring.coreos.com/v1/ServiceMonitor':
    '@kubernetes-models/prometheus-operator/_schemas/ComGithubPrometheusOperatorPrometheusOperatorPkgApisMonitoringV1ServiceMonitor.js',
};
let failed = 0;
for (const d of yaml.loadAll(fs.readFileSync(0, 'utf8'))) {
  if (!d) continue;
  const key = `${d.apiVersion}/${d.kind}`;
  if (!schemas[key]) {
    console.log('skip', d.kind);
    continue;
  }
  const validate = require(path.join(root, schemas[key])).validate;
  if (validate(d)) {
    console.log('ok', d.kind, d.metadata.name);
  } else {
    failed++;
    console.log('FAIL', d.kind, d.metadata.name, JSON.stringify(validate.errors));
  }
}
process.exit(failed ? 1 : 0);
