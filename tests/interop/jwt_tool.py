"""Keys and tokens for tests/auth.rs, made with libraries nobody here wrote: PyJWT and
`cryptography` from PyPI (scripts/test.sh installs them).

    python3 jwt_tool.py keys DIR
        writes DIR/{ec,rsa,ed}_{private,public}.pem (P-256, RSA 2048, Ed25519)
    python3 jwt_tool.py mint ALG KEY CLAIMS_JSON
        prints a token; KEY is the HS256 secret for HS256, else a private key file;
        in CLAIMS_JSON, "exp" and "nbf" given as {"in": SECONDS} are made absolute
"""

import json
import sys
import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa


def keys(directory: str) -> None:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    pairs = {
        "ec": ec.generate_private_key(ec.SECP256R1()),
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ed": ed25519.Ed25519PrivateKey.generate(),
    }
    for name, key in pairs.items():
        (d / f"{name}_private.pem").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        (d / f"{name}_public.pem").write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM,
                serialization.PublicFormat.SubjectPublicKeyInfo,
            )
        )
    print("ok")


def mint(alg: str, key: str, claims_json: str) -> None:
    claims = json.loads(claims_json)
    now = int(time.time())
    for field in ("exp", "nbf", "iat"):
        if isinstance(claims.get(field), dict):
            claims[field] = now + int(claims[field]["in"])
    secret = key if alg == "HS256" else Path(key).read_bytes()
    print(jwt.encode(claims, secret, algorithm=alg))


if __name__ == "__main__":
    if sys.argv[1] == "keys":
        keys(sys.argv[2])
    elif sys.argv[1] == "mint":
        mint(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit(f"unknown command {sys.argv[1]}")
