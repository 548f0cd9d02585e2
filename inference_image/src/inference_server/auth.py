"""JWT bearer authentication for /v1/* (PyJWT does the verifying)."""

from __future__ import annotations

from dataclasses import dataclass

import jwt


class AuthError(Exception):
    """The request's credentials are missing or not acceptable; str() says why."""


@dataclass(frozen=True)
class JwtVerifier:
    """HS256 with a shared secret, or RS256 with a public key; audience, issuer and expiry required."""

    key: str
    algorithm: str
    audience: str
    issuer: str
    leeway_seconds: int = 30

    def __post_init__(self) -> None:
        if self.algorithm not in ("HS256", "RS256"):
            raise ValueError(f"unsupported JWT algorithm {self.algorithm!r} (HS256 or RS256)")
        if not self.key:
            raise ValueError("a JWT key is required (HS256 secret or RS256 public key)")

    def verify(self, authorization: str | None) -> dict:
        if not authorization:
            raise AuthError("missing Authorization header (expected 'Bearer <JWT>')")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise AuthError("Authorization must be 'Bearer <JWT>'")
        try:
            return jwt.decode(
                token.strip(),
                self.key,
                algorithms=[self.algorithm],  # never taken from the token itself
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_seconds,
                options={"require": ["exp", "aud", "iss"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("token expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise AuthError("token audience is not accepted") from exc
        except jwt.InvalidIssuerError as exc:
            raise AuthError("token issuer is not accepted") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"token lacks the {exc.claim!r} claim") from exc
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"invalid token ({type(exc).__name__})") from exc
