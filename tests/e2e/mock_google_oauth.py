"""A mock Google OAuth2 token endpoint for service accounts: it takes the JWT-bearer grant,
verifies the assertion's RS256 signature against the service account's public key and its
claims (issuer, audience = this token URI, the cloud-platform scope, a live iat/exp), and
issues an opaque access token that lives ``lifetime`` seconds; ``valid(token)`` tells the
platform mock whether a token was issued and has not expired.

It is also the GCE/GKE metadata server (``GET /computeMetadata/v1/instance/service-accounts/
default/token``, GKE Workload Identity): it wants ``Metadata-Flavor: Google`` (a 403 as the real
server answers otherwise) and refuses a request that was forwarded (``X-Forwarded-For``). With
``outage`` set, both answer 503."""

from __future__ import annotations

import base64
import json
import secrets
import time
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from loopback import LoopbackServer, QuietHandler

GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"


def b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class MockOAuth(LoopbackServer):
    def __init__(self, client_email: str, lifetime: int = 3600) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.client_email = client_email
        self.key_id = secrets.token_hex(8)
        self.lifetime = lifetime
        self.issued: dict[str, float] = {}  # token -> expiry (monotonic)
        self.assertions: list[dict] = []
        self.refusals: list[str] = []
        self.metadata_calls: list[dict[str, str]] = []
        self.outage = False
        super().__init__(self._handler())

    @property
    def token_uri(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/token"

    def service_account_json(self) -> str:
        pem = self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        return json.dumps({
            "type": "service_account", "project_id": "e2e-project", "private_key_id": self.key_id,
            "private_key": pem.decode(), "client_email": self.client_email, "client_id": "1234567890",
            "token_uri": self.token_uri,
        })

    def valid(self, token: str) -> bool:
        with self.lock:
            expiry = self.issued.get(token)
        return expiry is not None and time.monotonic() < expiry

    def check(self, assertion: str) -> str | None:
        """Why Google would refuse the assertion, or None."""
        try:
            header_b64, claims_b64, signature_b64 = assertion.split(".")
            header, claims = json.loads(b64url(header_b64)), json.loads(b64url(claims_b64))
            self.key.public_key().verify(b64url(signature_b64), f"{header_b64}.{claims_b64}".encode(), padding.PKCS1v15(), hashes.SHA256())
        except Exception as e:  # noqa: BLE001 - any failure is Google's invalid_grant
            return f"Invalid JWT Signature. ({type(e).__name__})"
        now = time.time()
        if header.get("alg") != "RS256" or header.get("kid") not in (None, self.key_id):
            return "Invalid JWT header."
        if claims.get("iss") != self.client_email or claims.get("aud") != self.token_uri or claims.get("scope") != SCOPE:
            return f"Invalid JWT claims: {claims}"
        if not (claims["iat"] - 60 <= now <= claims["exp"]) or claims["exp"] - claims["iat"] > 3600:
            return "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe."
        with self.lock:
            self.assertions.append(claims)
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        mock = self

        class Handler(QuietHandler):

            def do_GET(self) -> None:  # noqa: N802
                headers = {k.lower(): v for k, v in self.headers.items()}
                with mock.lock:
                    mock.metadata_calls.append({"path": self.path, **headers})
                if not self.path.startswith("/computeMetadata/v1/instance/service-accounts/default/token"):
                    return self.send(404, {"error": "not found"})
                if headers.get("metadata-flavor") != "Google" or "x-forwarded-for" in headers:
                    return self.text(403, "Missing Metadata-Flavor:Google header.")
                if mock.outage:
                    return self.text(503, "The metadata server is unavailable.")
                token = "ya29.gke-" + secrets.token_urlsafe(24)
                with mock.lock:
                    mock.issued[token] = time.monotonic() + mock.lifetime
                self.send(200, {"access_token": token, "expires_in": mock.lifetime, "token_type": "Bearer"})

            def text(self, status: int, text: str) -> None:
                data = text.encode()
                self.send_response(status)
                self.send_header("content-type", "text/plain")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802
                if mock.outage:
                    self.rfile.read(int(self.headers.get("content-length", "0")))
                    return self.send(503, {"error": "temporarily_unavailable", "error_description": "The token service is unavailable."})
                form = parse_qs(self.rfile.read(int(self.headers.get("content-length", "0"))).decode())
                problem = None
                if self.path != "/token" or self.headers.get("content-type") != "application/x-www-form-urlencoded":
                    problem = "unsupported request"
                elif form.get("grant_type") != [GRANT] or len(form.get("assertion", [])) != 1:
                    problem = "Invalid grant_type"
                else:
                    problem = mock.check(form["assertion"][0])
                if problem:
                    with mock.lock:
                        mock.refusals.append(problem)
                    return self.send(400, {"error": "invalid_grant", "error_description": problem})
                token = "ya29.e2e-" + secrets.token_urlsafe(24)
                with mock.lock:
                    mock.issued[token] = time.monotonic() + mock.lifetime
                self.send(200, {"access_token": token, "expires_in": mock.lifetime, "token_type": "Bearer"})

            def send(self, status: int, obj: dict) -> None:
                self.reply(status, json.dumps(obj).encode(), "application/json; charset=utf-8")

        return Handler
