"""core.segmentation.postprocess: small islands and the false bassanite rim around celestite, on tiny synthetic slices."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from core.errors import ReactomoError
from core.phases import DEFAULT_PHASES, Phase, PhaseTable
from core.segmentation.postprocess import PostprocessConfig, clean_rim, default_postprocess, postprocess, remove_islands

GYP, BAS, PORE, CEL = 1, 2, 3, 4


def _disc(shape, centre, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


# -- islands -----------------------------------------------------------------------------------------------------
def test_small_islands_take_the_surrounding_label_and_big_ones_stay():
    a = np.full((20, 20), GYP, np.uint8)
    a[2:4, 2:4] = BAS  # 4 px: below 5, goes
    a[10:15, 10] = BAS  # 5 px: exactly the min size, stays
    a[15:20, 0:5] = PORE  # big pore region
    a[17, 2] = BAS  # 1 px inside the pore: becomes pore
    out = remove_islands(a, {BAS: 5})
    assert (out[2:4, 2:4] == GYP).all()
    assert (out[10:15, 10] == BAS).all()
    assert out[17, 2] == PORE
    assert out.dtype == np.uint8 and out.shape == a.shape
    assert np.count_nonzero(out != a) == 5


def test_island_surrounded_by_two_labels_takes_the_majority():
    a = np.full((9, 9), GYP, np.uint8)
    a[:, 5:] = PORE
    a[3:6, 4] = BAS  # ring: 5 gypsum in column 3 + 2 gypsum above/below, 5 pore in column 5 -> gypsum
    assert (remove_islands(a, {BAS: 10})[3:6, 4] == GYP).all()
    b = np.full((9, 9), GYP, np.uint8)
    b[:, 4:] = PORE
    b[3:6, 4] = BAS  # ring: 5 gypsum in column 3, 5 pore in column 5 + 2 pore above/below -> pore
    assert (remove_islands(b, {BAS: 10})[3:6, 4] == PORE).all()
    c = np.full((9, 9), PORE, np.uint8)
    c[:, :4] = GYP
    c[2, 4] = GYP
    c[3:6, 4] = BAS  # a tie: 6 gypsum (column 3 and above), 6 pore (column 5 and below) -> the lowest code
    ring = ndimage.binary_dilation(c == BAS, structure=np.ones((3, 3))) & (c != BAS)
    assert np.count_nonzero(c[ring] == GYP) == np.count_nonzero(c[ring] == PORE) == 6
    assert (remove_islands(c, {BAS: 10})[3:6, 4] == GYP).all()


def test_island_touching_only_unlabelled_stays_and_zero_does_not_vote():
    a = np.zeros((7, 7), np.uint8)
    a[3, 3] = BAS
    np.testing.assert_array_equal(remove_islands(a, {BAS: 5}), a)
    a[3, 6] = GYP  # not touching: still stays
    assert remove_islands(a, {BAS: 5})[3, 3] == BAS
    a[2, 2] = GYP  # one labelled diagonal neighbour among seven zeros wins
    assert remove_islands(a, {BAS: 5})[3, 3] == GYP


def test_2d_and_3d_connectivity_differ():
    # a 3-slice column of single bassanite pixels: 1 px per slice in 2d, one 3-voxel component in 3d
    a = np.full((3, 8, 8), GYP, np.uint8)
    a[:, 4, 4] = BAS
    a[1, 5, 5] = BAS  # diagonal in-plane neighbour: slice 1 has a 2-px component
    out2 = remove_islands(a, {BAS: 2}, connectivity="2d")
    assert out2[0, 4, 4] == GYP and out2[2, 4, 4] == GYP and out2[1, 4, 4] == BAS and out2[1, 5, 5] == BAS
    out3 = remove_islands(a, {BAS: 2}, connectivity="3d")
    np.testing.assert_array_equal(out3, a)  # one 4-voxel component in 3d
    assert (remove_islands(a, {BAS: 5}, connectivity="3d") == GYP).all()


def test_islands_in_a_volume_match_a_per_island_reference():
    rng = np.random.default_rng(0)
    a = rng.choice([GYP, BAS, PORE], size=(2, 24, 24), p=[0.6, 0.25, 0.15]).astype(np.uint8)
    out = remove_islands(a, {BAS: 6, PORE: 3})
    # slow reference, one island at a time (bassanite first, then pores on the result)
    ref = a.copy()
    for code, size in ((BAS, 6), (PORE, 3)):
        for z in range(ref.shape[0]):
            comp, n = ndimage.label(ref[z] == code, structure=np.ones((3, 3)))
            sl = ref[z].copy()
            for i in range(1, n + 1):
                m = comp == i
                if m.sum() >= size:
                    continue
                ring = ndimage.binary_dilation(m, structure=np.ones((3, 3))) & ~m
                votes = np.bincount(sl[ring], minlength=256)
                votes[[0, code]] = 0
                if votes.any():
                    ref[z][m] = np.argmax(votes)
    np.testing.assert_array_equal(out, ref)


def test_remove_islands_does_not_modify_its_input():
    a = np.full((6, 6), GYP, np.uint8)
    a[2, 2] = BAS
    keep = a.copy()
    remove_islands(a, {BAS: 3})
    np.testing.assert_array_equal(a, keep)


# -- rim ---------------------------------------------------------------------------------------------------------
def _rim_scene(width):
    """Gypsum slice; a celestite disc with a bassanite rim of ``width`` px, and a second disc touched by a big grain."""
    a = np.full((64, 64), GYP, np.uint8)
    d1 = _disc(a.shape, (16, 16), 7)
    ring = (ndimage.distance_transform_edt(~d1) <= width) & ~d1
    a[ring] = BAS
    a[d1] = CEL
    d2 = _disc(a.shape, (44, 40), 7)
    a[d2] = CEL
    grain = np.zeros_like(d2)
    grain[36:60, 48:62] = True  # 24 x 14 grain whose left edge touches the second disc
    grain &= ~d2
    a[grain] = BAS
    return a, ring, grain


@pytest.mark.parametrize("width", [1, 2])
def test_rim_around_celestite_becomes_gypsum_and_a_big_grain_stays(width):
    a, ring, grain = _rim_scene(width)
    assert (ndimage.binary_dilation(grain) & (a == CEL)).any()  # the grain does touch celestite
    out = clean_rim(a, rim_phase=BAS, around=CEL, width_px=2)
    assert (out[ring] == GYP).all()
    assert np.count_nonzero(out[grain] == BAS) >= 0.95 * grain.sum()
    assert (out[a == CEL] == CEL).all()
    np.testing.assert_array_equal(out[~ring], a[~ring])


def test_rim_in_a_volume_and_in_3d():
    a, ring, grain = _rim_scene(2)
    vol = np.stack([a, a, a])
    out = clean_rim(vol, rim_phase=BAS, around=CEL, width_px=2)
    assert (out[:, ring] == GYP).all() and (out[:, grain] == BAS).all()
    out3 = clean_rim(vol, rim_phase=BAS, around=CEL, width_px=2, connectivity="3d")
    assert (out3[:, ring] == GYP).all() and (out3[:, grain] == BAS).all()


def test_rim_takes_the_nearest_other_label_and_width_zero_is_off():
    a, ring, _ = _rim_scene(2)
    a[:, :16] = np.where(a[:, :16] == GYP, PORE, a[:, :16])  # left half of the first disc's surroundings is pore
    out = clean_rim(a, rim_phase=BAS, around=CEL, width_px=2)
    left, right = ring.copy(), ring.copy()
    left[:, 14:] = False
    right[:, :19] = False
    assert (out[left] == PORE).all() and (out[right] == GYP).all()
    np.testing.assert_array_equal(clean_rim(a, rim_phase=BAS, around=CEL, width_px=0), a)


# -- postprocess -------------------------------------------------------------------------------------------------
def test_postprocess_report_matches_bincount_before_and_after():
    a, ring, grain = _rim_scene(2)
    a[5, 50] = PORE
    a[30:32, 5:7] = BAS
    vol = np.stack([a, a])
    keep = vol.copy()
    out, report = postprocess(vol, PostprocessConfig(), codes=DEFAULT_PHASES.codes)
    np.testing.assert_array_equal(vol, keep)  # input untouched
    before, after = np.bincount(vol.ravel(), minlength=5), np.bincount(out.ravel(), minlength=5)
    assert report["before"] == {c: int(before[c]) for c in (1, 2, 3, 4)}
    assert report["after"] == {c: int(after[c]) for c in (1, 2, 3, 4)}
    assert report["changed"] == np.count_nonzero(out != vol) == 2 * (ring.sum() + 1 + 4)
    assert (out[:, grain] == BAS).all()
    assert report["config"] == PostprocessConfig().to_dict()
    json.dumps(report)


def test_postprocess_disabled_returns_a_copy_and_a_single_slice_works():
    a, _, _ = _rim_scene(2)
    out, report = postprocess(a, PostprocessConfig(enabled=False), codes=[1, 2, 3, 4])
    np.testing.assert_array_equal(out, a)
    assert out is not a and report["changed"] == 0 and report["before"] == report["after"]
    out, report = postprocess(a, PostprocessConfig(), codes=[1, 2, 3, 4])
    assert out.shape == a.shape and report["changed"] > 0


# -- config ------------------------------------------------------------------------------------------------------
def test_default_postprocess_finds_codes_by_name():
    cfg = default_postprocess(DEFAULT_PHASES)
    assert cfg.min_sizes == {2: 100, 3: 8} and cfg.rim_phase == 2 and cfg.rim_around == 4
    assert cfg == PostprocessConfig()
    custom = PhaseTable(
        (Phase(7, "Celestite"), Phase(3, "gypsum"), Phase(9, "Pore"), Phase(1, "KCl"))
    )
    cfg = default_postprocess(custom)
    assert cfg.min_sizes == {9: 8} and cfg.rim_phase is None and cfg.rim_around is None
    renamed = PhaseTable((Phase(5, "bassanite"), Phase(6, "celestite"), Phase(1, "gypsum")))
    cfg = default_postprocess(renamed)
    assert cfg.min_sizes == {5: 100} and (cfg.rim_phase, cfg.rim_around) == (5, 6)


def test_config_round_trips_through_json_and_hashes():
    cfg = PostprocessConfig(min_sizes={3: 8, 2: 50}, connectivity="3d", rim_px=1)
    again = PostprocessConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and hash(again) == hash(cfg)
    assert list(again.min_sizes) == [2, 3]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"min_sizes": {2: -1}}, "minimum size"),
        ({"min_sizes": {0: 5}}, "1 to 255"),
        ({"min_sizes": [2, 100]}, "min_sizes must map"),
        ({"connectivity": "4"}, "connectivity"),
        ({"rim_px": 21}, "rim_px"),
        ({"rim_px": -1}, "rim_px"),
        ({"rim_phase": 4, "rim_around": 4}, "different phase"),
        ({"rim_phase": None}, "go together"),
        ({"enabled": "yes"}, "enabled"),
    ],
)
def test_bad_configs_raise_one_sentence_errors(kwargs, match):
    with pytest.raises(ReactomoError, match=match) as err:
        PostprocessConfig(**kwargs)
    assert str(err.value).endswith(".") and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: remove_islands(np.zeros((4, 4), np.uint16), {2: 3}), "uint8"),
        (lambda: remove_islands(np.zeros((2, 4, 4, 1), np.uint8), {2: 3}), "shape"),
        (lambda: remove_islands(np.zeros((4, 4), np.uint8), {2: 3}, connectivity="3d"), "single slice"),
        (lambda: clean_rim(np.zeros((4, 4), np.uint8), rim_phase=2, around=2, width_px=1), "different phase"),
        (lambda: clean_rim(np.zeros((4, 4), np.uint8), rim_phase=2, around=4, width_px=30), "width_px"),
        (lambda: postprocess(np.zeros((4, 4), np.uint8), PostprocessConfig(), codes=[1, 2, 3]), "not phase codes"),
        (lambda: postprocess(np.zeros((4, 4), np.uint8), {"rim_px": 2}, codes=[1, 2, 3, 4]), "PostprocessConfig"),
        (lambda: PostprocessConfig.from_dict({"rim": 2}), "Unknown"),
    ],
)
def test_bad_inputs_raise_one_sentence_errors(call, match):
    with pytest.raises(ReactomoError, match=match):
        call()


# -- the cleaning chosen without looking at the answer -------------------------------------------------------------
def _slices_with_specks(seed: int = 0):
    """Reference: gypsum with bassanite laths 3 px thick and pores; prediction: the same plus 1-3 px specks."""
    rng = np.random.default_rng(seed)
    ref = np.ones((3, 64, 64), np.uint8)
    ref[:, 10:13, 5:40] = 2
    ref[:, 30:33, 20:60] = 2
    ref[:, 50:56, 50:56] = 3
    ref[:, 40:44, 5:9] = 4
    pred = ref.copy()
    for z in range(3):
        for _ in range(12):  # false bassanite specks in gypsum
            y, x = rng.integers(16, 28), rng.integers(2, 62)
            pred[z, y, x:x + rng.integers(1, 3)] = 2
    return pred, ref


def test_choose_cleaning_removes_specks_and_keeps_thin_laths():
    from core.segmentation.postprocess import choose_cleaning

    pred, ref = _slices_with_specks()
    choice = choose_cleaning(pred, ref, phases=DEFAULT_PHASES)
    cleaned, _ = postprocess(pred, choice.config, codes=DEFAULT_PHASES.codes)
    assert choice.agreement > choice.uncleaned
    assert np.array_equal(cleaned, ref)  # every speck gone, every lath (3 x 35 px and 3 x 40 px) kept
    assert 0 < choice.config.min_sizes[2] <= 100 and choice.config.min_sizes[2] <= 3 * 35
    # the least cleaning that reaches the best agreement: no pore rule (there are no pore specks), no rim
    assert 3 not in choice.config.min_sizes and choice.config.rim_px == 0
    assert "internal standard" in choice.method and "not looked at" in choice.method
    d = choice.to_dict(DEFAULT_PHASES)
    assert d["min_sizes"]["bassanite"] == choice.config.min_sizes[2] and len(d["candidates"]) == len(choice.table) > 20


def test_choose_cleaning_keeps_everything_when_cleaning_does_not_help():
    from core.segmentation.postprocess import choose_cleaning

    _, ref = _slices_with_specks()
    choice = choose_cleaning(ref.copy(), ref, phases=DEFAULT_PHASES)
    assert choice.config.min_sizes == {} and choice.config.rim_px == 0 and choice.agreement == 1.0


def test_choose_cleaning_depends_only_on_the_labelled_slices():
    """Nothing but the prediction and the reference of the labelled slices enters the choice: no volume, no step,
    no check of the reaction. The same slices give the same choice, whatever the rest of the experiment does."""
    import inspect

    from core.segmentation.postprocess import choose_cleaning

    params = set(inspect.signature(choose_cleaning).parameters)
    assert params == {"prediction", "reference", "phases", "sizes", "rims", "tolerance", "where"}
    pred, ref = _slices_with_specks(1)
    a = choose_cleaning(pred, ref, phases=DEFAULT_PHASES)
    b = choose_cleaning(pred.copy(), ref.copy(), phases=DEFAULT_PHASES)
    assert a.config == b.config and a.table == b.table


def test_cleaning_for_takes_the_models_own_cleaning_and_says_so():
    from core.segmentation.postprocess import cleaning_for

    stored = {"config": PostprocessConfig(min_sizes={2: 9}, rim_px=1).to_dict()}
    post, why = cleaning_for("auto", DEFAULT_PHASES, {"cleaning": stored})
    assert post.min_sizes == {2: 9} and post.rim_px == 1 and "chosen when it was trained" in why
    post, why = cleaning_for("auto", DEFAULT_PHASES, {})  # an older model without one: the study's, said plainly
    assert post.min_sizes == {2: 100, 3: 8} and "saved without a cleaning" in why
    post, _ = cleaning_for("study", DEFAULT_PHASES, {"cleaning": stored}, min_sizes=[("bassanite", 0)], rim_px=3)
    assert post.min_sizes == {3: 8} and post.rim_px == 3
    assert cleaning_for("off", DEFAULT_PHASES)[0] is None
    with pytest.raises(ReactomoError, match="cleaning mode"):
        cleaning_for("best", DEFAULT_PHASES)
    with pytest.raises(ReactomoError, match="no phase called"):
        cleaning_for("auto", DEFAULT_PHASES, min_sizes=[("anhydrite", 3)])
    with pytest.raises(ReactomoError, match="not in this phase table"):
        cleaning_for("auto", DEFAULT_PHASES, {"cleaning": {"config": PostprocessConfig(min_sizes={9: 3}, rim_phase=None, rim_around=None).to_dict()}})
