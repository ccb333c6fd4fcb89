"""Drive ``wrk`` (Debian's package) and read its results as JSON."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

LUA = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
%(headers)s
bodies = {%(bodies)s}
sent = 0
request = function()
  sent = sent + 1
  return wrk.format(nil, nil, nil, bodies[(sent %% #bodies) + 1])
end
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
               + summary.errors.status + summary.errors.timeout
  io.write(string.format(
    'WRK_JSON {"requests": %%d, "duration_us": %%d, "errors": %%d, "non_2xx": %%d, ' ..
    '"p50_us": %%d, "p95_us": %%d, "p99_us": %%d, "mean_us": %%f}\n',
    summary.requests, summary.duration, errors, summary.errors.status,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.mean))
end
"""


@dataclass
class WrkResult:
    name: str
    connections: int
    requests: int
    errors: int
    requests_per_s: float
    predictions_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float

    def as_dict(self) -> dict:
        return asdict(self)


def ensure_wrk() -> str:
    """The wrk binary; installs Debian's package when missing (the machine is ours to set up)."""
    found = shutil.which("wrk")
    if found:
        return found
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
    return shutil.which("wrk") or "wrk"


def run_wrk(name: str, url: str, body: bytes | list[bytes], *, connections: int, duration_s: int,
            rows_per_request: int = 1, headers: dict[str, str] | None = None, threads: int = 1) -> WrkResult:
    """Load ``url`` with ``body``, or with each of a list of bodies in turn (different entities and routing keys)."""
    header_lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in (headers or {}).items())
    bodies = ", ".join(f"[==[{b.decode()}]==]" for b in ([body] if isinstance(body, bytes) else body))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(LUA % {"bodies": bodies, "headers": header_lines})
    try:
        argv = [ensure_wrk(), "-t", str(threads), "-c", str(connections), "-d", f"{duration_s}s", "-s", script.name, url]
        out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=duration_s + 60).stdout
    finally:
        Path(script.name).unlink(missing_ok=True)
    line = next(line for line in out.splitlines() if line.startswith("WRK_JSON "))
    raw = json.loads(line[len("WRK_JSON "):])
    seconds = raw["duration_us"] / 1e6
    rps = raw["requests"] / seconds
    return WrkResult(
        name=name, connections=connections, requests=raw["requests"], errors=raw["errors"],
        requests_per_s=rps, predictions_per_s=rps * rows_per_request,
        p50_ms=raw["p50_us"] / 1000, p95_ms=raw["p95_us"] / 1000, p99_ms=raw["p99_us"] / 1000,
        mean_ms=raw["mean_us"] / 1000,
    )
