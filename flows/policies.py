"""Load the dated parameter files of `policies/` (POLICY §1.5, DEVELOPERS non-negotiable 3).

Shape of a file (OpenFisca-like, see DESIGN.md): `policies/<region>/<scheme>/<topic>.yaml`
holds parameters; each parameter has `description`, `unit`, `policy` (§), `source`
(document + §) and optionally `assumption` (A-n), and `values:` keyed by the date each
value takes effect. A value may be a mapping `{value: ..., assumption: A-n, source: ...}`
when one dated value carries its own note. A parameter is addressed as
`<topic>.<name>`, e.g. `inpatient.deductible_per_stay`.

This module only reads files; the lookups are pure (frames are built in transforms/).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

POLICY_ROOT = Path(os.environ.get("YIBAO_POLICIES") or Path(__file__).resolve().parent.parent / "policies")


class MissingParameter(LookupError):
    """A parameter (or its value on a date) that the lines need is not in policies/."""

    def __init__(self, region: str, scheme: str, name: str, on: dt.date | None = None, why: str = ""):
        self.region, self.scheme, self.name, self.on = region, scheme, name, on
        at = f" in force on {on.isoformat()}" if on else ""
        super().__init__(
            f"missing parameter {region}/{scheme}/{name}{at}" + (f" ({why})" if why else "")
            + " — add it to policies/ with its source"
        )


@dataclass(frozen=True)
class DatedValue:
    since: dt.date
    value: Any
    source: str
    policy: str
    assumption: str | None


@dataclass
class Parameter:
    region: str
    scheme: str
    name: str
    description: str
    unit: str | None
    values: list[DatedValue]  # sorted by `since`

    def at(self, on: dt.date) -> DatedValue:
        found = None
        for v in self.values:
            if v.since <= on:
                found = v
        if found is None or found.value is None:
            raise MissingParameter(self.region, self.scheme, self.name, on,
                                   "no value takes effect by this date" if found is None else "value is missing")
        return found


@dataclass
class Policies:
    params: dict[tuple[str, str, str], Parameter]
    digest: str
    files: list[str] = field(default_factory=list)

    def parameter(self, region: str, scheme: str, name: str) -> Parameter:
        try:
            return self.params[(region, scheme, name)]
        except KeyError:
            raise MissingParameter(region, scheme, name) from None

    def at(self, region: str, scheme: str, name: str, on: dt.date) -> DatedValue:
        return self.parameter(region, scheme, name).at(on)

    def value(self, region: str, scheme: str, name: str, on: dt.date) -> Any:
        return self.at(region, scheme, name, on).value

    def has(self, region: str, scheme: str, name: str) -> bool:
        return (region, scheme, name) in self.params


def _to_date(k: Any) -> dt.date:
    if isinstance(k, dt.date):
        return k
    return dt.date.fromisoformat(str(k))


_LOADED: dict[tuple[str, str], Policies] = {}


def load_policies(root: Path | str = POLICY_ROOT) -> Policies:
    """The parameters of every policy file under `root`. Parsed once per content: a month's run asks for them
    in every task and connection (parsing is ~0.3 s); an edited file changes the digest and is parsed again."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"policy folder not found: {root}")
    h = hashlib.sha256()
    files = sorted(root.rglob("*.yaml"))
    raws = {}
    for path in files:
        rel = path.relative_to(root)
        if len(rel.parts) != 3:
            raise ValueError(f"{rel}: policy files live at <region>/<scheme>/<topic>.yaml")
        raws[rel] = path.read_bytes()
        h.update(str(rel).encode() + b"\0" + raws[rel] + b"\0")
    key = (str(root.resolve()), h.hexdigest())
    if key not in _LOADED:
        _LOADED.clear()  # one version kept: a long-lived process that sees edits does not grow
        _LOADED[key] = _parse_policies(raws, h.hexdigest())
    cached = _LOADED[key]
    return Policies(params=dict(cached.params), digest=cached.digest, files=list(cached.files))


def _parse_policies(raws: dict[Path, bytes], digest: str) -> Policies:
    params: dict[tuple[str, str, str], Parameter] = {}
    for rel, raw in raws.items():
        region, scheme, topic = rel.parts[0], rel.parts[1], rel.stem
        doc = yaml.safe_load(raw) or {}
        for pname, spec in doc.items():
            if not isinstance(spec, dict) or "values" not in spec:
                raise ValueError(f"{rel}: parameter {pname!r} has no values:")
            values = []
            for since, v in (spec["values"] or {}).items():
                note = v if isinstance(v, dict) and "value" in v else {"value": v}
                values.append(DatedValue(
                    since=_to_date(since),
                    value=note["value"],
                    source=str(note.get("source", spec.get("source", ""))),
                    policy=str(note.get("policy", spec.get("policy", ""))),
                    assumption=note.get("assumption", spec.get("assumption")),
                ))
            values.sort(key=lambda d: d.since)
            name = f"{topic}.{pname}"
            params[(region, scheme, name)] = Parameter(region, scheme, name, str(spec.get("description", "")),
                                                       spec.get("unit"), values)
    return Policies(params=params, digest=digest, files=[str(rel) for rel in raws])


def _assumption_key(a: str) -> tuple[int, str]:
    num = a[2:] if a.startswith("A-") else ""
    return (int(num), a) if num.isdigit() else (10**9, a)


def assumptions_in(policies: Policies) -> dict[str, list[str]]:
    """Map each assumption id (POLICY §9, `A-n`) to the parameters that carry it, for the run record.

    A parameter carries an assumption when any of its dated values does (set on the parameter or on
    the value). Names are `region/scheme/topic.name` as in MissingParameter; ids are in numeric order,
    names sorted.
    """
    found: dict[str, set[str]] = {}
    for (region, scheme, name), p in policies.params.items():
        for v in p.values:
            if v.assumption:
                found.setdefault(str(v.assumption), set()).add(f"{region}/{scheme}/{name}")
    return {a: sorted(found[a]) for a in sorted(found, key=_assumption_key)}
