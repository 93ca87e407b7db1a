"""docs/widget-identity.md's signing snippets sign what the gateway verifies: the Python one in
process, the Node.js one under `node` (on every machine of this project's kind; a machine without
it fails this test rather than skip it)."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from gateway.auth import AuthError, customer_signature, verify_customer_signature

DOC = Path(__file__).parent.parent / "docs" / "widget-identity.md"
CASES = [("shop-secret-" + "x" * 32, "tmall-shop", "u-10086"), ("秘密-secret", "jd-shop", "顾客-42 Ünïcode 👋")]


def block(lang: str) -> str:
    found = re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert len(found) == 1, f"expected one ```{lang} block in {DOC.name}"
    return found[0]


def function_name(code: str, pattern: str) -> str:
    return re.search(pattern, code).group(1)


@pytest.mark.parametrize("secret,merchant,customer", CASES)
def test_python_snippet(secret, merchant, customer):
    code = block("python")
    scope: dict = {}
    exec(code, scope)
    signed = scope[function_name(code, r"def (\w+)\(")](secret, merchant, customer)
    assert set(signed) == {"merchant", "customer_id", "ts", "signature"}
    verify_customer_signature(secret, merchant, customer, signed["ts"], signed["signature"], now=signed["ts"])


@pytest.mark.parametrize("secret,merchant,customer", CASES)
def test_nodejs_snippet(secret, merchant, customer, tmp_path):
    code = block("js")
    name = function_name(code, r"function (\w+)\(")
    script = tmp_path / "sign.js"
    script.write_text(code + f"\nprocess.stdout.write(JSON.stringify({name}(...JSON.parse(process.argv[2]))));\n",
                      encoding="utf-8")
    out = subprocess.run(["node", str(script), json.dumps([secret, merchant, customer])],
                         capture_output=True, text=True, timeout=30, check=True)
    signed = json.loads(out.stdout)
    assert set(signed) == {"merchant", "customer_id", "ts", "signature"}
    assert signed["customer_id"] == customer and isinstance(signed["ts"], int)
    assert signed["signature"] == customer_signature(secret, merchant, customer, signed["ts"])
    verify_customer_signature(secret, merchant, customer, signed["ts"], signed["signature"], now=signed["ts"])
    with pytest.raises(AuthError):
        verify_customer_signature(secret, merchant, customer + "x", signed["ts"], signed["signature"],
                                  now=signed["ts"])
