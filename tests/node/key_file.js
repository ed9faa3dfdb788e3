// Node's google-auth-library with a service-account key file (argv[2]): an access token, and an
// ID token for the audience argv[3], printed as JSON for the caller to check. The library posts
// its JWT-bearer grant to https://oauth2.googleapis.com/token whatever the file's token_uri, so
// the caller makes that name reach wid (and NODE_EXTRA_CA_CERTS trust its certificate).
const { GoogleAuth } = require('google-auth-library');

(async () => {
  const auth = new GoogleAuth({
    keyFile: process.argv[2],
    scopes: ['https://www.googleapis.com/auth/cloud-platform'],
  });
  const client = await auth.getClient();
  const { token } = await client.getAccessToken();
  const idClient = await auth.getIdTokenClient(process.argv[3]);
  const idToken = await idClient.idTokenProvider.fetchIdToken(process.argv[3]);
  console.log(JSON.stringify({ token, idToken }));
})().catch((e) => {
  console.error(`FAIL ${e.message} ${JSON.stringify(e.response && e.response.data)}`);
  process.exit(1);
});
