// Node's gcp-metadata and google-auth-library against the metadata server named by
// GCE_METADATA_HOST: detection, project, access token, ID token, account email.
const { GoogleAuth } = require('google-auth-library');
const gcpMetadata = require('gcp-metadata');

(async () => {
  const out = {};
  out.available = await gcpMetadata.isAvailable();
  const auth = new GoogleAuth({ scopes: ['https://www.googleapis.com/auth/cloud-platform'] });
  out.project = await auth.getProjectId();
  out.token = await auth.getAccessToken();
  const client = await auth.getClient();
  out.idToken = await client.fetchIdToken('https://svc.example.com');
  out.email = (await auth.getCredentials()).client_email;
  console.log(JSON.stringify(out));
})().catch((e) => {
  console.error(`FAIL ${e.message}`);
  process.exit(1);
});
