"""`peakdesk report`: the main reports in a terminal, for operators without the web UI — a
client of the REST API (`/api/v1/reports/...`) that prints aligned tables (Chinese characters
count two columns), CSV or JSON."""
from __future__ import annotations

import json
import unicodedata
import urllib.error
import urllib.parse
import urllib.request


class ReportClientError(RuntimeError):
    """The server could not be reached or refused; the message says which and why."""


def _call(url: str, token: str, api_key: bool) -> bytes:
    headers = {"X-Api-Key": token} if api_key else {"Authorization": f"Bearer {token}"}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60) as resp:
            return resp.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            message = json.loads(body).get("message", body.decode(errors="replace"))
        except ValueError:
            message = body.decode(errors="replace")[:300]
        raise ReportClientError(f"{exc.code}: {message}") from None
    except OSError as exc:
        raise ReportClientError(f"cannot reach {url.split('/api/')[0]}: {exc}") from None


def login(base: str, merchant: str, username: str, password: str) -> str:
    req = urllib.request.Request(f"{base}/api/v1/auth/login", method="POST", headers={"Content-Type": "application/json"},
                                 data=json.dumps({"merchant": merchant, "username": username,
                                                  "password": password}).encode())
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())["token"]
    except urllib.error.HTTPError as exc:
        raise ReportClientError(f"login refused: {exc.code} {exc.read()[:200]!r}") from None
    except OSError as exc:
        raise ReportClientError(f"cannot reach {base}: {exc}") from None


def fetch(base: str, token: str, name: str, query: dict, api_key: bool = False) -> dict:
    qs = urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
    return json.loads(_call(f"{base}/api/v1/reports/{urllib.parse.quote(name)}?{qs}", token, api_key))


def names(base: str, token: str, api_key: bool = False) -> list[dict]:
    return json.loads(_call(f"{base}/api/v1/reports", token, api_key))["items"]


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in ("W", "F") else 1 for c in text)


def _cell(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1 else f"{v:,.2f}".rstrip("0").rstrip(".")
    if isinstance(v, int):
        return f"{v:,}"
    return str(v).replace("\n", " ")


def table(columns: list[str], rows: list[list]) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([_width(c)] + [_width(r[i]) for r in cells]) for i, c in enumerate(columns)]

    def line(values: list[str]) -> str:
        out = []
        for i, v in enumerate(values):
            pad = " " * (widths[i] - _width(v))
            numeric = i > 0 and (v[:1].isdigit() or v[:1] == "-" and v[1:2].isdigit() or v == "—")
            out.append(pad + v if numeric else v + pad)
        return "  ".join(out).rstrip()
    return "\n".join([line(columns), line(["-" * w for w in widths]), *(line(r) for r in cells)])
