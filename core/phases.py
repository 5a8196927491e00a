"""The phase table and the reaction: configuration, not code.

Label codes are the same everywhere (files, arrays, CLI): ``0`` is unlabelled / outside the region, ``1..N`` are
phases. The defaults are the study's dehydration of gypsum (SPEC.md); another reaction (KBr-KCl replacement,
carbonation of olivine) is another :class:`PhaseTable` and :class:`Reaction`, built from a dict or JSON.

Moles of a phase in a volume: ``n = V * rho / M`` (``V`` in m3, ``rho`` in kg/m3, ``M`` in kg/mol).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from core.errors import ReactomoError

__all__ = [
    "UNLABELLED",
    "Phase",
    "PhaseTable",
    "Reaction",
    "DEFAULT_PHASES",
    "DEFAULT_REACTION",
    "GYPSUM",
    "BASSANITE",
    "PORE",
    "CELESTITE",
    "pretty_formula",
]

UNLABELLED = 0
_SUB = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")


def pretty_formula(formula: str | None) -> str:
    """A formula with its atom counts as subscripts, for display: ``CaSO4·0.5H2O`` -> ``CaSO₄·0.5H₂O``.

    A digit is a count when it follows an element symbol, a closing bracket or another count; the coefficient of a
    hydrate (``·0.5H2O``, ``·2H2O``) stays on the line. Text in round brackets that is not a formula is kept as is."""
    if not formula:
        return ""
    out, prev_count = [], False
    for i, ch in enumerate(formula):
        before = formula[i - 1] if i else ""
        if ch.isdigit() and (before.isalpha() or before == ")" or prev_count):
            out.append(ch.translate(_SUB))
            prev_count = True
        else:
            out.append(ch)
            prev_count = False
    return "".join(out)

GYPSUM, BASSANITE, PORE, CELESTITE = 1, 2, 3, 4

Role = Literal["reactant", "product", "pore", "inert", "other"]
_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")


@dataclass(frozen=True)
class Phase:
    """One phase: its label code, name and physical constants.

    Attributes
    ----------
    code : int
        Label value in every array and file (1..255; 0 is reserved for unlabelled).
    name : str
        Name shown to users, e.g. ``"gypsum"``.
    formula : str
        Chemical formula for display.
    density_kg_m3, molar_mass_g_mol, molar_volume_cm3_mol : float or None
        Physical constants; ``None`` for phases without moles (pores).
    colour : str
        ``#rrggbb`` colour used for overlays and charts (fully opaque, so brushed pixels map back exactly).
    role : {"reactant", "product", "pore", "inert", "other"}
        The phase's part in the reaction.
    """

    code: int
    name: str
    formula: str = ""
    density_kg_m3: float | None = None
    molar_mass_g_mol: float | None = None
    molar_volume_cm3_mol: float | None = None
    colour: str = "#888888"
    role: Role = "other"

    @property
    def mol_per_m3(self) -> float | None:
        """Moles per cubic metre of this phase, ``rho / M`` (``None`` when either is unknown)."""
        if self.density_kg_m3 is None or self.molar_mass_g_mol is None:
            return None
        return self.density_kg_m3 / (self.molar_mass_g_mol / 1000.0)


@dataclass(frozen=True)
class PhaseTable:
    """An ordered, validated set of phases with unique codes and names."""

    phases: tuple[Phase, ...]

    def __post_init__(self) -> None:
        if not self.phases:
            raise ReactomoError("The phase table is empty; give at least two phases.")
        codes = [p.code for p in self.phases]
        names = [p.name.strip().lower() for p in self.phases]
        for p in self.phases:
            if not isinstance(p.code, int) or not 1 <= p.code <= 255:
                raise ReactomoError(f"Phase code {p.code!r} of '{p.name}' is invalid; use an integer from 1 to 255 (0 means unlabelled).")
            if not p.name.strip():
                raise ReactomoError(f"Phase with code {p.code} has no name; give every phase a name.")
            if not _HEX.match(p.colour):
                raise ReactomoError(f"Colour {p.colour!r} of phase '{p.name}' is invalid; use #rrggbb, e.g. #4c78a8.")
            for attr in ("density_kg_m3", "molar_mass_g_mol", "molar_volume_cm3_mol"):
                v = getattr(p, attr)
                if v is not None and not v > 0:
                    raise ReactomoError(f"{attr} of phase '{p.name}' is {v!r}; it must be a positive number or empty.")
        if len(set(codes)) != len(codes):
            raise ReactomoError(f"Phase codes must be unique; got {codes}.")
        if len(set(names)) != len(names):
            raise ReactomoError(f"Phase names must be unique; got {[p.name for p in self.phases]}.")

    # -- lookups ---------------------------------------------------------------------------------------------
    @property
    def codes(self) -> tuple[int, ...]:
        return tuple(p.code for p in self.phases)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.phases)

    def __len__(self) -> int:
        return len(self.phases)

    def __iter__(self):
        return iter(self.phases)

    def by_code(self, code: int) -> Phase:
        for p in self.phases:
            if p.code == code:
                return p
        raise ReactomoError(f"No phase has code {code}; the phase table has codes {list(self.codes)}.")

    def by_name(self, name: str) -> Phase:
        key = name.strip().lower()
        for p in self.phases:
            if p.name.lower() == key:
                return p
        raise ReactomoError(f"No phase is called '{name}'; the phase table has {list(self.names)}.")

    def by_role(self, role: Role) -> list[Phase]:
        return [p for p in self.phases if p.role == role]

    def colour_lut(self) -> list[tuple[int, int, int]]:
        """RGB colour per code from 0 to max code (unknown codes and 0 are black)."""
        lut = [(0, 0, 0)] * (max(self.codes) + 1)
        for p in self.phases:
            lut[p.code] = tuple(int(p.colour[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[assignment]
        return lut

    # -- (de)serialisation -----------------------------------------------------------------------------------
    def to_dict(self) -> list[dict[str, Any]]:
        return [asdict(p) for p in self.phases]

    @classmethod
    def from_dict(cls, rows: list[dict[str, Any]]) -> "PhaseTable":
        if not isinstance(rows, list):
            raise ReactomoError(f"A phase table is a list of phases; got {type(rows).__name__}.")
        allowed = set(Phase.__dataclass_fields__)
        phases = []
        for row in rows:
            unknown = set(row) - allowed
            if unknown:
                raise ReactomoError(f"Unknown phase field(s) {sorted(unknown)}; allowed fields are {sorted(allowed)}.")
            try:
                phases.append(Phase(**{**row, "code": int(row["code"])}))
            except KeyError as exc:
                raise ReactomoError(f"A phase is missing its {exc.args[0]!r}; every phase needs a code and a name.") from None
        return cls(tuple(phases))


@dataclass(frozen=True)
class Reaction:
    """A replacement reaction ``reactant -> product + fluid`` with a fixed molar ratio.

    Attributes
    ----------
    name : str
        Human-readable equation.
    reactant, product, pore : int
        Phase codes of the consumed solid, the new solid and the pore space.
    inert : tuple of int
        Codes of phases that must not change (a third check: their volume stays constant).
    product_per_reactant : float
        Moles of product formed per mole of reactant consumed (1 for gypsum -> bassanite).
    """

    name: str = "CaSO4·2H2O → CaSO4·0.5H2O + 1.5 H2O"
    reactant: int = GYPSUM
    product: int = BASSANITE
    pore: int = PORE
    inert: tuple[int, ...] = field(default=(CELESTITE,))
    product_per_reactant: float = 1.0

    def check_against(self, phases: PhaseTable) -> None:
        """Raise :class:`ReactomoError` unless every code of the reaction is in ``phases`` with the constants it needs."""
        for role, code in (("reactant", self.reactant), ("product", self.product), ("pore", self.pore)):
            if code not in phases.codes:
                raise ReactomoError(f"The reaction's {role} code {code} is not in the phase table (codes {list(phases.codes)}).")
        for role, code in (("reactant", self.reactant), ("product", self.product)):
            p = phases.by_code(code)
            if p.mol_per_m3 is None or p.molar_volume_cm3_mol is None:
                raise ReactomoError(f"The {role} '{p.name}' needs a density, a molar mass and a molar volume for the internal standard.")
        for code in self.inert:
            phases.by_code(code)
        if not self.product_per_reactant > 0:
            raise ReactomoError(f"product_per_reactant is {self.product_per_reactant!r}; it must be positive.")

    def product_volume_ratio(self, phases: PhaseTable) -> float:
        """Volume of product formed per volume of reactant consumed (53.15/74.53 = 0.713 for R1)."""
        self.check_against(phases)
        r, p = phases.by_code(self.reactant), phases.by_code(self.product)
        return self.product_per_reactant * p.molar_volume_cm3_mol / r.molar_volume_cm3_mol  # type: ignore[operator]

    def pore_volume_ratio(self, phases: PhaseTable) -> float:
        """New pore volume per volume of reactant consumed, with no compaction (0.287 for R1)."""
        return 1.0 - self.product_volume_ratio(phases)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["inert"] = list(self.inert)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Reaction":
        allowed = set(cls.__dataclass_fields__)
        unknown = set(d) - allowed
        if unknown:
            raise ReactomoError(f"Unknown reaction field(s) {sorted(unknown)}; allowed fields are {sorted(allowed)}.")
        d = dict(d)
        if "inert" in d:
            d["inert"] = tuple(int(c) for c in d["inert"])
        return cls(**d)


DEFAULT_PHASES = PhaseTable(
    (
        Phase(GYPSUM, "gypsum", "CaSO4·2H2O", 2310.0, 172.17, 74.53, "#4c78a8", "reactant"),
        Phase(BASSANITE, "bassanite", "CaSO4·0.5H2O", 2731.0, 145.15, 53.15, "#f58518", "product"),
        Phase(PORE, "pore", "(water escapes)", None, None, None, "#e45756", "pore"),
        Phase(CELESTITE, "celestite", "SrSO4", 3960.0, 183.68, 46.38, "#54a24b", "inert"),
    )
)
DEFAULT_REACTION = Reaction()
