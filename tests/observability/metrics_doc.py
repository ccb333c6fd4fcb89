"""The metric tables of docs/metrics.md: the contract that services, dashboards and alert rules keep to."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
ROW = re.compile(r"^\| `(?P<name>[a-z_:]+)` \| (?P<type>\w+) \|(?P<labels>[a-z_, ]*)\|")


def documented() -> dict[str, dict[str, tuple[str, frozenset[str]]]]:
    """Section (service) → family name (counters without ``_total``) → (type, labels), for sections with a table."""
    sections: dict[str, dict[str, tuple[str, frozenset[str]]]] = {}
    current = None
    for line in DOC.read_text().splitlines():
        if line.startswith("## "):
            current = line[3:].split()[0]
        elif current and (row := ROW.match(line)):
            name = row["name"].removesuffix("_total") if row["type"] == "counter" else row["name"]
            labels = frozenset(label.strip() for label in row["labels"].split(",") if label.strip())
            sections.setdefault(current, {})[name] = (row["type"], labels)
    return sections
