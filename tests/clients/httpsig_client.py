"""Signs requests with PyPI's http-message-signatures (an RFC 9421 implementation no one in this
project wrote) and sends them with requests through Envoy; prints one JSON line per case:
{"case": ..., "status": ..., "code": ...}.

Usage: httpsig_client.py BASE_URL SEED_HEX KEYID
"""

import datetime
import json
import sys
import uuid

import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from http_message_signatures import HTTPMessageSigner, HTTPSignatureKeyResolver, algorithms

base, seed_hex, keyid = sys.argv[1], sys.argv[2], sys.argv[3]
key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seed_hex))


class Keys(HTTPSignatureKeyResolver):
    def resolve_private_key(self, key_id):
        return key

    def resolve_public_key(self, key_id):
        return key.public_key()


signer = HTTPMessageSigner(signature_algorithm=algorithms.ED25519, key_resolver=Keys())
session = requests.Session()
now = datetime.datetime.now(datetime.timezone.utc)
COVERED = ("@method", "@authority", "@path", "@query", "content-digest")


def signed(method="POST", path="/signed/orders?limit=5", body=b'{"item": "widget"}', created=None):
    request = requests.Request(method, base + path, data=body,
                               headers={"content-type": "application/json"}).prepare()
    # Content-Digest is computed by the library over the body it is given.
    signer.sign(request, key_id=keyid, created=created or now, nonce=uuid.uuid4().hex,
                covered_component_ids=COVERED, body=body, label="sig1")
    return request


def send(case, request):
    response = session.send(request)
    code = ""
    if response.status_code != 200:
        try:
            code = response.json()["error"]["code"]
        except ValueError:
            code = response.text[:80]
    print(json.dumps({"case": case, "status": response.status_code, "code": code}), flush=True)


fresh = signed()
send("fresh", fresh)
send("replayed", fresh)

request = signed()
request.body = b'{"item": "gold"}'
request.headers["content-length"] = str(len(request.body))
send("changed body", request)

request = signed()
request.method = "PUT"
send("changed method", request)

request = signed()
request.url = base + "/signed/admin?limit=5"
send("changed path", request)

request = signed()
request.headers["host"] = "evil.example.com"
send("changed authority", request)

send("expired created", signed(created=now - datetime.timedelta(minutes=10)))
send("future created", signed(created=now + datetime.timedelta(minutes=10)))
send("get without body", signed(method="GET", path="/signed/orders?limit=1", body=b""))
