"""Microsoft's own SDKs against keyvault-sim: azure-identity gets the token
(client credentials through the authority's discovery document, and managed
identity through the instance metadata endpoint), azure-keyvault-secrets
follows Key Vault's 401 challenge, sets, gets and pages. Prints "SDK OK".

    check_sdk.py <base_url> <tenant> <client_id> <client_secret> <ca.pem>
"""

import os
import sys

base_url, tenant, client_id, client_secret, ca = sys.argv[1:6]
# Both SDKs ride on requests, which trusts this bundle; the managed-identity
# credential reads the metadata service's address from this variable.
os.environ["REQUESTS_CA_BUNDLE"] = ca
os.environ["AZURE_POD_IDENTITY_AUTHORITY_HOST"] = base_url

from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from azure.identity import ClientSecretCredential, ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient

# The challenge names the public cloud's resource, which a loopback
# address cannot be a subdomain of.
client_options = dict(verify_challenge_resource=False, connection_verify=ca)

credential = ClientSecretCredential(
    tenant, client_id, client_secret, authority=base_url, disable_instance_discovery=True, connection_verify=ca
)
client = SecretClient(base_url, credential, **client_options)

first = client.set_secret("gemini-key-1", "first-secret", content_type="text/plain", tags={"owner": "sdk"})
assert first.value == "first-secret", first
assert first.properties.content_type == "text/plain", first.properties.content_type
assert first.properties.tags == {"owner": "sdk"}, first.properties.tags
second = client.set_secret("gemini-key-1", "second-secret")
assert client.get_secret("gemini-key-1").value == "second-secret"
assert client.get_secret("gemini-key-1", first.properties.version).value == "first-secret"
assert first.properties.version != second.properties.version
assert first.properties.enabled is True and first.properties.created_on is not None

try:
    client.get_secret("no-such-key")
    raise AssertionError("a missing secret was found")
except ResourceNotFoundError as err:
    assert err.error.code == "SecretNotFound", err.error.code

try:
    client.get_secret("bad_name")
    raise AssertionError("an invalid name was accepted")
except HttpResponseError as err:
    assert err.status_code == 400 and err.error.code == "BadParameter", (err.status_code, err.error)

for n in range(2, 31):
    client.set_secret(f"gemini-key-{n}", f"secret-{n}")
pages = list(client.list_properties_of_secrets(max_page_size=7).by_page())
names = sorted(p.name for page in pages for p in page)
assert len(names) == 30 and len(set(names)) == 30, names
assert len(pages) == 5, len(pages)

denied = ClientSecretCredential(
    tenant, client_id, "not-the-secret", authority=base_url, disable_instance_discovery=True, connection_verify=ca
)
try:
    SecretClient(base_url, denied, **client_options).get_secret("gemini-key-1")
    raise AssertionError("a wrong client secret was accepted")
except ClientAuthenticationError as err:
    assert "AADSTS7000215" in str(err), str(err)

managed = ManagedIdentityCredential(connection_verify=ca)
token = managed.get_token("https://vault.azure.net/.default")
assert token.token and token.expires_on > 0
assert SecretClient(base_url, managed, **client_options).get_secret("gemini-key-2").value == "secret-2"

print("SDK OK")
