"""Rule packs shipped with Qianshao (``services/risk/domain/packs/*.json``) and how they become
a station's rules.

A pack is JSON: ``{id, title, documents, mapping, rules}``. ``documents`` names every source once;
each criterion's ``source.document`` refers to them by key (``"cma16"`` or ``"cma16 + gbt28591"``)
and carries the clause and the value as the document writes it. ``mapping`` says, in words, how the
pack's criteria map to the four colours.

A pack rule is a template:

- ``applies_to``: ``kinds`` (station kinds), ``attrs`` (attributes that must equal a value, e.g. a
  methane sensor's ``position``), ``has_attr`` (an attribute that must exist);
- a number may be ``{"attr": "warning_level"}`` — the station's attribute (dotted paths reach into
  objects), optionally ``"times": k`` or ``"minus_attr": "restore_margin"``. A level whose attribute
  the station lacks is left out; a rule left with no level does not apply.

Overrides (:func:`apply_overrides`): a bureau may make a level stricter for a region or a station,
never looser. ``{"cma.rainstorm": {"red": 80}}`` lowers the red trigger; a value past the official
one is refused with an error that cites the clause it would loosen.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from services.risk.domain.rules import Criterion, Rule, RuleConfigError, parse_rule
from services.risk.domain.thresholds import threshold_rules_from_attributes

PACKS_DIR = Path(__file__).parent / "packs"

_MISSING = object()


@dataclass(frozen=True)
class Pack:
    id: str
    title: str
    mapping: str
    documents: Mapping[str, str]
    rules: tuple[Mapping[str, Any], ...] = field(repr=False)

    def rule(self, rule_id: str) -> Mapping[str, Any] | None:
        for r in self.rules:
            if r.get("id") == rule_id:
                return r
        return None


def load_pack(path: Path) -> Pack:
    raw = json.loads(path.read_text(encoding="utf-8"))
    pack = Pack(
        id=raw["id"],
        title=raw.get("title", ""),
        mapping=raw.get("mapping", ""),
        documents=dict(raw.get("documents") or {}),
        rules=tuple(raw["rules"]),
    )
    # every template must parse once resolved with placeholder attributes
    for r in pack.rules:
        parse_rule(resolve_rule(r, pack, Placeholder()), pack=pack.id, path=f"{pack.id}.{r['id']}")
    return pack


@cache
def shipped_packs(directory: Path = PACKS_DIR) -> dict[str, Pack]:
    """The packs in ``directory``, validated, keyed by id."""
    packs = [load_pack(p) for p in sorted(directory.glob("*.json"))]
    return {p.id: p for p in packs}


class Placeholder(dict[str, Any]):
    """Attributes for validating templates: every attribute exists and grows with the level."""

    def get(self, key: str, default: Any = None) -> Any:
        return 1.0


def _attr(attributes: Mapping[str, Any], path: str) -> Any:
    cur: Any = attributes
    for part in path.split("."):
        if isinstance(cur, Placeholder):
            return _placeholder_value(path)
        if not isinstance(cur, Mapping) or part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


_LEVEL_ORDER = {"blue": 1.0, "yellow": 2.0, "orange": 3.0, "red": 4.0}


def _placeholder_value(path: str) -> float:
    for name, v in _LEVEL_ORDER.items():
        if name in path:
            return v
    return 1.0


def _number(spec: Any, attributes: Mapping[str, Any], where: str) -> Any:
    if not (isinstance(spec, Mapping) and "attr" in spec):
        return spec
    base = _attr(attributes, str(spec["attr"]))
    if base is _MISSING or base is None:
        return _MISSING
    if isinstance(base, bool) or not isinstance(base, int | float):
        raise RuleConfigError(f"{where}: attribute {spec['attr']} must be a number")
    value = float(base) * float(spec.get("times", 1.0))
    if "minus_attr" in spec:
        minus = _attr(attributes, str(spec["minus_attr"]))
        if isinstance(minus, int | float) and not isinstance(minus, bool):
            value -= float(minus)
    return value


def resolve_rule(
    rule: Mapping[str, Any], pack: Pack, attributes: Mapping[str, Any]
) -> dict[str, Any]:
    """A pack rule with the station's attributes filled in and document keys spelled out."""
    out = copy.deepcopy(dict(rule))
    out.pop("applies_to", None)
    levels = out.get("levels") or {}
    kept = {}
    for name, spec in levels.items():
        resolved = _resolve_node(spec, pack, attributes, f"{pack.id}.{rule['id']}.{name}")
        if resolved is not _MISSING:
            kept[name] = resolved
    if levels:
        out["levels"] = kept
    if "when" in out:
        when = _resolve_node(out["when"], pack, attributes, f"{pack.id}.{rule['id']}.when")
        out["when"] = when
    return out


def _resolve_node(node: Any, pack: Pack, attributes: Mapping[str, Any], where: str) -> Any:
    if isinstance(node, list):
        items = [_resolve_node(n, pack, attributes, where) for n in node]
        return _MISSING if any(i is _MISSING for i in items) else items
    if not isinstance(node, Mapping):
        return node
    out: dict[str, Any] = {}
    for k, v in node.items():
        if k in ("value", "restore"):
            v = _number(v, attributes, f"{where}.{k}")
            if v is _MISSING:
                if k == "value":
                    return _MISSING
                continue
        elif k == "source" and isinstance(v, Mapping):
            keys = [d.strip() for d in str(v.get("document", "")).split("+")]
            v = {**v, "document": " + ".join(pack.documents.get(d, d) for d in keys)}
        elif isinstance(v, Mapping | list):
            v = _resolve_node(v, pack, attributes, where)
            if v is _MISSING:
                return _MISSING
        out[k] = v
    return out


def applies(rule: Mapping[str, Any], kind: str, attributes: Mapping[str, Any]) -> bool:
    a = rule.get("applies_to") or {}
    if "kinds" in a and kind not in a["kinds"]:
        return False
    for k, v in (a.get("attrs") or {}).items():
        if attributes.get(k) != v:
            return False
    has = a.get("has_attr")
    return not (has and _attr(attributes, has) is _MISSING)


def apply_overrides(
    rule_raw: dict[str, Any], official: Rule, overrides: Mapping[str, Any], *, who: str
) -> dict[str, Any]:
    """Make levels of a resolved rule stricter. ``overrides`` maps a level name to a number.

    A level the rule has: the new value must not be looser than the official one (for ``>=``,
    not higher; for ``<=``, not lower). A level the rule lacks (a pre-alarm a bureau adds): only
    on a rule whose levels all read one signal, and it must not be looser than the next level up.
    """
    out = copy.deepcopy(rule_raw)
    levels = out.setdefault("levels", {})
    for name, value in overrides.items():
        where = f"override {who} {official.rule_id}.{name}"
        if name not in ("blue", "yellow", "orange", "red"):
            raise RuleConfigError(f"{where}: unknown level")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RuleConfigError(f"{where}: a number is required")
        crit = _single_criterion(official, name)
        if crit is not None:
            looser = value > crit.value if crit.op == ">=" else value < crit.value
            if looser:
                cite = crit.source.cite() if crit.source else "the official value"
                raise RuleConfigError(
                    f"{where}: {value:g} is looser than {crit.value:g} "
                    f"({crit.op} {crit.value:g}, {cite}); only stricter values may be set"
                )
            spec = levels[name]
            target = spec if "value" in spec else spec.get("when", spec)
            target["value"] = float(value)
            if target.get("restore") is not None and (
                target["restore"] > value if crit.op == ">=" else target["restore"] < value
            ):
                target["restore"] = float(value)
            target["source"] = {
                "document": f"override by {who}",
                "clause": crit.source.cite() if crit.source else "",
                "value": f"{crit.op} {value:g} (official {crit.value:g})",
            }
            continue
        if name in levels:
            raise RuleConfigError(
                f"{where}: the level has several criteria; it cannot be overridden"
            )
        template = _sole_signal_template(official)
        if template is None:
            raise RuleConfigError(
                f"{where}: the rule has no level {name} and reads several signals"
            )
        sig, op = template
        levels[name] = {
            "signal": sig,
            "op": op,
            "value": float(value),
            "source": {"document": f"override by {who}", "value": f"{op} {value:g} (added level)"},
        }
    return out


def _single_criterion(rule: Rule, level_name: str) -> Criterion | None:
    for spec in rule.levels:
        if spec.level.name == level_name:
            atoms = list(spec.when.atoms())
            if len(atoms) == 1 and isinstance(atoms[0], Criterion):
                return atoms[0]
    return None


def _sole_signal_template(rule: Rule) -> tuple[dict[str, Any], str] | None:
    crits = [c for _lvl, c in rule.criteria()]
    if not crits or len({c.signal.key for c in crits}) != 1 or len({c.op for c in crits}) != 1:
        return None
    s = crits[0].signal
    sig: dict[str, Any] = {"metric": s.metric, "agg": s.agg, "kind": s.kind}
    if s.agg == "days_running_min":
        sig["days"] = int(s.window_s)
    elif s.agg != "last":
        sig["window"] = s.window_s
    if s.agg == "rate":
        sig["per"] = s.per_s
    return sig, crits[0].op


@dataclass(frozen=True)
class StationRuleSet:
    rules: tuple[Rule, ...]
    problems: tuple[str, ...] = ()  # rules left out, and why (logged, shown by the API)


def rules_for_station(
    packs: Iterable[Pack],
    kind: str,
    attributes: Mapping[str, Any],
    region_overrides: Iterable[tuple[str, Mapping[str, Mapping[str, Any]]]] = (),
) -> StationRuleSet:
    """The rules of a station: every pack rule that applies to its kind and attributes, with the
    region overrides (broadest prefix first) and the station's own ``attributes.overrides``
    applied, then the station's own ``attributes.thresholds``.

    A rule that cannot be built (a bad attribute, a looser override) is left out and named in
    ``problems``: one bad setting must not silence the station's other rules.
    """
    rules: list[Rule] = []
    problems: list[str] = []
    station_over = attributes.get("overrides") or {}
    region_over = sorted(region_overrides, key=lambda x: len(x[0]))
    for pack in packs:
        for raw in pack.rules:
            if not applies(raw, kind, attributes):
                continue
            rid = str(raw["id"])
            try:
                resolved = resolve_rule(raw, pack, attributes)
                if raw.get("levels") and not resolved.get("levels"):
                    continue  # no attribute for any level: the rule does not apply
                official = parse_rule(resolved, pack=pack.id, path=rid)
                rule_raw = resolved
                for prefix, over in region_over:
                    if rid in over:
                        rule_raw = apply_overrides(rule_raw, official, over[rid], who=prefix)
                if isinstance(station_over, Mapping) and rid in station_over:
                    rule_raw = apply_overrides(rule_raw, official, station_over[rid], who="station")
                rules.append(parse_rule(rule_raw, pack=pack.id, path=rid))
            except RuleConfigError as exc:
                problems.append(f"{rid}: {exc}")
    try:
        rules.extend(threshold_rules_from_attributes(attributes))
    except RuleConfigError as exc:
        problems.append(f"thresholds: {exc}")
    return StationRuleSet(tuple(rules), tuple(problems))
