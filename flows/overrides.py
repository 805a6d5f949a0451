"""What-if overrides of policy parameters (issue 8): PATH=VALUE, type-checked, applied to one year.

A PATH names a parameter as it appears in `policies/`: `<region>.<scheme>.<topic>.<name>`, then,
inside a mapping or a list of bands, the key or index of one value, e.g.

    suizhou.resident.inpatient.deductible_in_city.3          (policies/suizhou/resident/inpatient.yaml,
                                                             deductible_in_city, level 3)
    suizhou.resident.critical_illness.bands.others.0.rate    (the first band of ordinary residents)

The spelling of MissingParameter (`suizhou/resident/inpatient.deductible_in_city[3]`) is accepted too.
VALUE is read by the parameter's `unit` (policies/README.md "Units"): yuan with at most 2 decimals
(`"none"` only where the parameter already has an explicit no-limit), a rate with its percent sign
(`75%`, whole basis points), a non-negative count, a boolean, a list (`[a, b]` or `a,b`) or a date.
Formulas, rules and codes are the code's reading of the source, not values: they cannot be set here.

An override holds for every date of the simulated year and for nothing else: the value in force
on 1 January is replaced from that date, values dated inside the year are replaced too, and the
value in force on 1 January of the next year takes over again then.

Pure functions over `Policies`; only `read_policy_file` reads a file.
"""

from __future__ import annotations

import copy
import datetime as dt
import difflib
import hashlib
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from flows.policies import DatedValue, Parameter, Policies
from transforms.money import BP, rate_to_bp, yuan_text_to_fen
from transforms.params import UNLIMITED


class OverrideError(ValueError):
    """An override that cannot be applied; the message is one line for the user."""


@dataclass(frozen=True)
class Override:
    path: str  # canonical: region.scheme.topic.name[.key…]
    value: Any  # in the form of the YAML files (int yuan or "12.50", "75%", lists, booleans)
    previous: Any  # the value in force on 1 January of the year (None when missing)

    def as_dict(self) -> dict:
        return {"path": self.path, "value": self.value, "previous": self.previous}


# ---------------------------------------------------------------- paths

def _param_path(p: Parameter) -> str:
    return f"{p.region}.{p.scheme}.{p.name}"


def _walk(value: Any, prefix: tuple[str, ...], out: set[tuple[str, ...]]) -> None:
    """Every key path inside a value: mapping keys, and indexes of lists of mappings (bands)."""
    if isinstance(value, dict):
        for k, v in value.items():
            out.add((*prefix, str(k)))
            _walk(v, (*prefix, str(k)), out)
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for i, v in enumerate(value):
            out.add((*prefix, str(i)))
            _walk(v, (*prefix, str(i)), out)


def valid_paths(policies: Policies) -> list[str]:
    """Every path an override may name: each parameter and each key inside its values."""
    out: list[str] = []
    for p in policies.params.values():
        keys: set[tuple[str, ...]] = set()
        for dv in p.values:
            _walk(dv.value, (), keys)
        base = _param_path(p)
        out.append(base)
        out += [".".join((base, *k)) for k in sorted(keys)]
    return sorted(out)


def _normalise_path(path: str) -> str:
    s = path.strip().replace("/", ".")
    s = re.sub(r"\[([^\]]*)\]", r".\1", s)
    return s.strip(".")


def resolve(policies: Policies, path: str) -> tuple[Parameter, tuple[str, ...]]:
    """(parameter, keys inside its value) of a path, or OverrideError naming the nearest valid paths."""
    s = _normalise_path(path)
    parts = s.split(".")
    if len(parts) >= 4:
        region, scheme, name = parts[0], parts[1], f"{parts[2]}.{parts[3]}"
        p = policies.params.get((region, scheme, name))
        if p is not None:
            keys = tuple(parts[4:])
            if not keys or any(_has_keys(dv.value, keys) for dv in p.values):
                return p, keys
    paths = valid_paths(policies)
    near = difflib.get_close_matches(s, paths, n=5, cutoff=0.6)
    if not near:  # a path without its region and scheme, or with a typo in it: compare the same number of parts
        near = [q for q in paths if q.endswith("." + s)][:5] or difflib.get_close_matches(
            s, {".".join(q.split(".")[-len(parts):]): q for q in paths}, n=5, cutoff=0.6)
        near = [q if q in paths else _by_tail(paths, q) for q in near]
    hint = f"; nearest valid: {', '.join(near)}" if near else "; see `yibao whatif paths`"
    raise OverrideError(f"unknown parameter path {path!r}{hint}")


def _by_tail(paths: list[str], tail: str) -> str:
    return next(q for q in paths if q.endswith("." + tail) or q == tail)


def _has_keys(value: Any, keys: tuple[str, ...]) -> bool:
    for k in keys:
        if isinstance(value, dict):
            match = [v for kk, v in value.items() if str(kk) == k]
            if not match:
                return False
            value = match[0]
        elif isinstance(value, list) and k.isdigit() and int(k) < len(value):
            value = value[int(k)]
        else:
            return False
    return True


def _get(value: Any, keys: tuple[str, ...]) -> Any:
    for k in keys:
        if isinstance(value, dict):
            value = next((v for kk, v in value.items() if str(kk) == k), None)
        elif isinstance(value, list) and k.isdigit() and int(k) < len(value):
            value = value[int(k)]
        else:
            return None
    return value


def _set(value: Any, keys: tuple[str, ...], new: Any) -> Any:
    """A copy of value with the part at keys replaced (the whole value when keys is empty)."""
    if not keys:
        return copy.deepcopy(new)
    out = copy.deepcopy(value)
    node = out
    for i, k in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(node, dict):
            real = next(kk for kk in node if str(kk) == k)
            if last:
                node[real] = copy.deepcopy(new)
            else:
                node = node[real]
        else:
            if last:
                node[int(k)] = copy.deepcopy(new)
            else:
                node = node[int(k)]
    return out


# ---------------------------------------------------------------- values

# Kinds of value by the parameter's unit (policies/README.md "Units"). Units not listed here (formula,
# rule, parameter name, ledger and offsite codes, month-days, ICD ranges) are the code's reading of
# the source: they are not what-if knobs.
_KIND_BY_UNIT_START = [("formula", None), ("bands", "band"), ("rate of own base, or yuan", "rate_or_yuan"),
                       ("rate", "rate"), ("yuan", "yuan"), ("bool", "bool"), ("count", "count"),
                       ("months", "count"), ("years", "count"), ("days", "count"), ("day of month", "count"),
                       ("class", "count"), ("list", "list"), ("date", "date")]


def kind_of(p: Parameter, keys: tuple[str, ...]) -> str | None:
    unit = (p.unit or "").strip().lower()
    kind = next((k for start, k in _KIND_BY_UNIT_START if unit.startswith(start)), None)
    if unit.startswith(("months of year", "month-day")):
        kind = None
    if kind == "band":  # a band is {from, to, rate}: yuan bounds and a rate
        last = keys[-1] if keys else ""
        kind = "rate" if last == "rate" else "yuan" if last in ("from", "to") else "band"
    return kind


def _allows_unlimited(p: Parameter) -> bool:
    found: list[bool] = []

    def look(v: Any) -> None:
        if v == UNLIMITED:
            found.append(True)
        elif isinstance(v, dict):
            for x in v.values():
                look(x)
        elif isinstance(v, list):
            for x in v:
                look(x)
    for dv in p.values:
        look(dv.value)
    return bool(found)


def _list_elements_are_ints(p: Parameter, keys: tuple[str, ...]) -> bool:
    elems = [e for dv in p.values for e in (_get(dv.value, keys) or []) if isinstance(_get(dv.value, keys), list)]
    return bool(elems) and all(isinstance(e, int) and not isinstance(e, bool) for e in elems)


def parse_value(p: Parameter, keys: tuple[str, ...], raw: Any, path: str) -> Any:
    """The override value in the form of the YAML files, checked against the parameter's unit."""
    kind = kind_of(p, keys)
    where = f"{path} (unit {p.unit!r})"
    if kind is None:
        raise OverrideError(f"{where} cannot be set in a what-if: it is the code's reading of the source, not a "
                            f"value (change policies/ instead)")
    if isinstance(raw, dict):
        raise OverrideError(f"{where}: give one value, or name its keys in the path")
    text = raw if isinstance(raw, str) else ("true" if raw is True else "false" if raw is False else str(raw))
    text = text.strip()
    if kind == "band":
        raise OverrideError(f"{where}: set one band's bound or rate, e.g. {path}.0.rate=65%")
    if text == UNLIMITED and kind in ("yuan", "rate", "rate_or_yuan"):
        if not _allows_unlimited(p):
            raise OverrideError(f"{where}: \"none\" (no limit) is not a value this parameter takes")
        return UNLIMITED
    if kind == "yuan" or (kind == "rate_or_yuan" and not text.endswith("%")):
        try:
            fen = yuan_text_to_fen(text)
        except ValueError:
            fen = None
        if fen is None or fen < 0:
            raise OverrideError(f"{where}: {text!r} is not an amount of yuan ≥ 0 with at most 2 decimals")
        return fen // 100 if fen % 100 == 0 else f"{fen // 100}.{fen % 100:02d}"
    if kind in ("rate", "rate_or_yuan"):
        if not text.endswith("%"):
            raise OverrideError(f"{where}: a rate is written with its percent sign, e.g. 75%")
        try:
            bp = rate_to_bp(text)
        except (ValueError, ArithmeticError):
            raise OverrideError(f"{where}: {text!r} is not a rate in whole basis points (e.g. 72.5%)") from None
        if not 0 <= bp <= BP:
            raise OverrideError(f"{where}: {text!r} is not between 0% and 100%")
        return f"{bp // 100}%" if bp % 100 == 0 else f"{bp // 100}.{bp % 100:02d}".rstrip("0") + "%"
    if kind == "count":
        if not re.fullmatch(r"[0-9]+", text):
            raise OverrideError(f"{where}: {text!r} is not a whole number ≥ 0")
        return int(text)
    if kind == "bool":
        low = text.lower()
        if low not in ("true", "false", "yes", "no"):
            raise OverrideError(f"{where}: {text!r} is not true or false")
        return low in ("true", "yes")
    if kind == "date":
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            raise OverrideError(f"{where}: {text!r} is not a date YYYY-MM-DD") from None
    # list
    items = raw if isinstance(raw, list) else (yaml.safe_load(text) if text.startswith("[") else
                                               [x.strip() for x in text.split(",") if x.strip()])
    if not isinstance(items, list) or any(isinstance(x, dict | list) for x in items):
        raise OverrideError(f"{where}: {text!r} is not a list of codes, e.g. [inpatient, day_surgery]")
    if _list_elements_are_ints(p, keys):
        if not all(re.fullmatch(r"[0-9]+", str(x)) for x in items):
            raise OverrideError(f"{where}: {text!r} is not a list of whole numbers")
        return [int(x) for x in items]
    return [str(x) for x in items]


def describe(o: Override | dict) -> str:
    """`path: previous → value` of an override, for people."""
    o = o.as_dict() if isinstance(o, Override) else o

    def text(v: Any) -> str:
        return json.dumps(v, ensure_ascii=False) if isinstance(v, list | dict) else str(v)
    return f"{o['path']}: {text(o.get('previous'))} → {text(o['value'])}"


def _as_json(v: Any) -> Any:
    return v.isoformat() if isinstance(v, dt.date) else v


# ---------------------------------------------------------------- reading overrides

def _flatten(prefix: str, value: Any) -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        out: list[tuple[str, Any]] = []
        for k, v in value.items():
            out += _flatten(f"{prefix}.{k}" if prefix else str(k), v)
        return out
    return [(prefix, value)]


def overrides_from(policies: Policies, year: int, sets: list[str] = (), policy_file: Path | str | None = None
                   ) -> list[Override]:
    """The overrides of `--policy-file FILE` (a YAML mapping of paths to values, flat or nested), then of
    each `--set PATH=VALUE` (later ones win), checked and in canonical form."""
    pairs: list[tuple[str, Any, str]] = []
    if policy_file is not None:
        pf = Path(policy_file)
        try:
            doc = yaml.safe_load(pf.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as e:
            raise OverrideError(f"{pf}: cannot read the override file ({' '.join(str(e).split())})") from None
        if not isinstance(doc, dict) or not doc:
            raise OverrideError(f"{pf}: expected a mapping of parameter paths to values")
        pairs += [(path, v, f"{pf}") for path, v in _flatten("", doc)]
    for s in sets:
        if "=" not in s:
            raise OverrideError(f"--set {s!r}: expected PATH=VALUE")
        path, text = s.split("=", 1)
        text = text.strip()
        mapping = yaml.safe_load(text) if text.startswith("{") else None
        if isinstance(mapping, dict):  # PATH={key: value, …}: one override per key
            pairs += [(q, x, "--set") for q, x in _flatten(path.strip(), mapping)]
        else:
            pairs.append((path.strip(), text, "--set"))
    on = dt.date(year, 1, 1)
    found: dict[str, Override] = {}
    for path, raw, _ in pairs:
        p, keys = resolve(policies, path)
        canonical = ".".join((_param_path(p), *keys))
        value = parse_value(p, keys, raw, canonical)
        current = next((dv for dv in reversed(p.values) if dv.since <= on), None)
        found.pop(canonical, None)
        found[canonical] = Override(canonical, _as_json(value),
                                    _as_json(_get(current.value, keys)) if current else None)
    if not found:
        raise OverrideError("no override given: use --set PATH=VALUE or --policy-file FILE")
    return list(found.values())


# ---------------------------------------------------------------- applying

def _override_parameter(p: Parameter, keys: tuple[str, ...], value: Any, year: int, note: str) -> Parameter:
    start, end = dt.date(year, 1, 1), dt.date(year + 1, 1, 1)
    before = [v for v in p.values if v.since < start]
    inside = [v for v in p.values if start <= v.since < end]
    after = [v for v in p.values if v.since >= end]
    segments = list(inside)
    if not segments or segments[0].since != start:
        in_force = before[-1] if before else DatedValue(start, None, "", "", None)
        segments.insert(0, replace(in_force, since=start))
    changed = [replace(s, value=_set(s.value, keys, value), source=note) for s in segments]
    restore = []
    if (before or inside) and not (after and after[0].since == end):
        restore = [replace((before + inside)[-1], since=end)]
    return replace(p, values=before + changed + restore + after)


def apply_overrides(policies: Policies, overrides: list[Override | dict], year: int, note: str = "what-if"
                    ) -> Policies:
    """A copy of the policies where each override holds for every date of `year` (and nothing else changes)."""
    params = dict(policies.params)
    done = []
    for o in overrides:
        o = o if isinstance(o, Override) else Override(o["path"], o["value"], o.get("previous"))
        p, keys = resolve(Policies(params=params, digest=policies.digest), o.path)
        value = dt.date.fromisoformat(o.value) if kind_of(p, keys) == "date" else o.value
        params[(p.region, p.scheme, p.name)] = _override_parameter(p, keys, value, year,
                                                                   f"{note}: {o.path} = {o.value}")
        done.append(o.as_dict())
    digest = hashlib.sha256((policies.digest + json.dumps({"year": year, "overrides": done}, sort_keys=True,
                                                          ensure_ascii=False)).encode()).hexdigest()
    return Policies(params=params, digest=digest, files=list(policies.files))


def current_values(policies: Policies, year: int) -> list[tuple[str, Any]]:
    """Every settable leaf (path, value in force on 1 January of the year), skipping missing values:
    what `yibao whatif paths` lists, and an override file that changes nothing."""
    on = dt.date(year, 1, 1)
    out: list[tuple[str, Any]] = []
    for p in policies.params.values():
        dv = next((v for v in reversed(p.values) if v.since <= on), None)
        if dv is None or dv.value is None:
            continue
        for keys, leaf in _leaves(dv.value, ()):
            if leaf is None or kind_of(p, keys) in (None, "band"):
                continue
            out.append((".".join((_param_path(p), *keys)), _as_json(leaf)))
    return sorted(out)


def _leaves(value: Any, prefix: tuple[str, ...]):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, (*prefix, str(k)))
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for i, v in enumerate(value):
            yield from _leaves(v, (*prefix, str(i)))
    else:
        yield prefix, value
