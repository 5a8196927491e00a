import json

import pytest

from core.errors import ReactomoError
from core.phases import BASSANITE, DEFAULT_PHASES, DEFAULT_REACTION, GYPSUM, Phase, PhaseTable, Reaction


def test_default_table_matches_the_spec():
    assert DEFAULT_PHASES.codes == (1, 2, 3, 4)
    assert DEFAULT_PHASES.names == ("gypsum", "bassanite", "pore", "celestite")
    g = DEFAULT_PHASES.by_code(GYPSUM)
    assert (g.density_kg_m3, g.molar_mass_g_mol, g.molar_volume_cm3_mol) == (2310.0, 172.17, 74.53)
    # rho / M and 1 / V_m describe the same moles per volume to 0.01 %.
    for p in DEFAULT_PHASES:
        if p.mol_per_m3 is not None:
            assert p.mol_per_m3 == pytest.approx(1e6 / p.molar_volume_cm3_mol, rel=2e-4)


def test_reaction_volume_ratios_are_the_studys():
    assert DEFAULT_REACTION.product_volume_ratio(DEFAULT_PHASES) == pytest.approx(53.15 / 74.53)
    assert DEFAULT_REACTION.pore_volume_ratio(DEFAULT_PHASES) == pytest.approx(0.287, abs=5e-4)


def test_round_trip_through_json():
    table = PhaseTable.from_dict(json.loads(json.dumps(DEFAULT_PHASES.to_dict())))
    assert table == DEFAULT_PHASES
    assert Reaction.from_dict(json.loads(json.dumps(DEFAULT_REACTION.to_dict()))) == DEFAULT_REACTION


def test_another_reaction_is_configuration():
    kbr = PhaseTable((
        Phase(1, "KBr", "KBr", 2740, 119.0, 43.3, "#336699", "reactant"),
        Phase(2, "KCl", "KCl", 1980, 74.55, 37.5, "#cc6633", "product"),
        Phase(3, "pore", colour="#aa0000", role="pore"),
    ))
    r = Reaction(name="KBr + Cl- -> KCl + Br-", reactant=1, product=2, pore=3, inert=())
    assert r.pore_volume_ratio(kbr) == pytest.approx(1 - 37.5 / 43.3)


@pytest.mark.parametrize(
    "rows, match",
    [
        ([{"code": 0, "name": "x"}], "0 means unlabelled"),
        ([{"code": 1, "name": "a"}, {"code": 1, "name": "b"}], "unique"),
        ([{"code": 1, "name": "a"}, {"code": 2, "name": "A"}], "unique"),
        ([{"code": 1, "name": "a", "colour": "red"}], "#rrggbb"),
        ([{"code": 1, "name": "a", "density_kg_m3": -1}], "positive"),
        ([{"code": 1, "name": "a", "hardness": 2}], "Unknown phase field"),
        ([{"name": "a"}], "missing its 'code'"),
        ([], "empty"),
    ],
)
def test_bad_tables_are_refused_with_a_sentence(rows, match):
    with pytest.raises(ReactomoError, match=match):
        PhaseTable.from_dict(rows)


def test_reaction_checks_its_codes_against_the_table():
    with pytest.raises(ReactomoError, match="product code 9"):
        Reaction(product=9).check_against(DEFAULT_PHASES)
    no_constants = PhaseTable(tuple(Phase(p.code, p.name, colour=p.colour) for p in DEFAULT_PHASES))
    with pytest.raises(ReactomoError, match="density"):
        DEFAULT_REACTION.check_against(no_constants)
    assert DEFAULT_PHASES.by_name("Bassanite").code == BASSANITE
    with pytest.raises(ReactomoError, match="No phase is called"):
        DEFAULT_PHASES.by_name("quartz")
