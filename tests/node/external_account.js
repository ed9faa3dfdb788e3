// Node's google-auth-library with an external_account credential file (argv[2]): refresh an
// access token through STS and impersonation, then print it as JSON for the caller to check.
const { GoogleAuth } = require('google-auth-library');

(async () => {
  const auth = new GoogleAuth({
    keyFile: process.argv[2],
    scopes: ['https://www.googleapis.com/auth/cloud-platform'],
  });
  const client = await auth.getClient();
  const { token } = await client.getAccessToken();
  console.log(JSON.stringify({ token }));
})().catch((e) => {
  console.error(`FAIL ${e.message} ${JSON.stringify(e.response && e.response.data)}`);
  process.exit(1);
});
