"""Redrawing a phase's edge by linear unmixing, against analytic cases of known area (not the family it was chosen
on): blurred disks in a noisy background, a halo like the forest's, and a dark phase."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from core.errors import ReactomoError
from core.labelling.partial_volume import default_codes, redraw_partial_volume, resolve_codes
from core.phases import DEFAULT_PHASES, Phase, PhaseTable

BG, OBJ = 1, 4


def _scene(radii, *, bright=40000.0, background=24000.0, sigma=1.0, noise=300.0, seed=0, size=96):
    """Disks of known radius on a flat background, blurred (σ px) and noisy, on 3 slices; the exact area too."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] + 0.5
    truth = np.zeros((size, size), bool)
    fine = np.zeros((size * 8, size * 8), np.float64)  # 8x supersampled: the scanner integrates each pixel
    fy, fx = (np.mgrid[: size * 8, : size * 8] + 0.5) / 8
    centres = [(20 + 28 * (i % 3), 20 + 28 * (i // 3)) for i in range(len(radii))]
    area = 0.0
    for (cy, cx), r in zip(centres, radii):
        fine[(fy - cy) ** 2 + (fx - cx) ** 2 <= r * r] = 1.0
        truth |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        area += np.pi * r * r
    frac = fine.reshape(size, 8, size, 8).mean(axis=(1, 3))
    grey = background + (bright - background) * ndi.gaussian_filter(frac, sigma)
    image = np.stack([grey + rng.normal(0, noise, grey.shape) for _ in range(3)])
    return image, truth, area


def _halo(truth, px=1):
    """A labelling like the forest's: the object one pixel too large all round."""
    lab = np.where(ndi.binary_dilation(truth, iterations=px), OBJ, BG).astype(np.uint8)
    return np.stack([lab] * 3)


@pytest.mark.parametrize("radii", [(4, 6, 9, 12), (3, 3, 5, 5, 7, 7)])
def test_a_haloed_labelling_gets_back_the_true_area(radii):
    image, truth, area = _scene(radii)
    labels = _halo(truth)
    assert (labels[0] == OBJ).sum() > 1.2 * area  # the halo: over 20 % too large
    fixed, info = redraw_partial_volume(image, labels, OBJ)
    assert info["applied"] and info["before"] == 3 * (labels[0] == OBJ).sum()
    for z in range(3):
        got = (fixed[z] == OBJ).sum()
        assert abs(got / area - 1) < 0.03, (got, area)  # within 3 % of the analytic area, from > 20 % off
        dice_before = 2 * ((labels[z] == OBJ) & truth).sum() / ((labels[z] == OBJ).sum() + truth.sum())
        dice_after = 2 * ((fixed[z] == OBJ) & truth).sum() / ((fixed[z] == OBJ).sum() + truth.sum())
        assert dice_after > dice_before + 0.05
    assert set(np.unique(fixed)) <= {BG, OBJ}  # removed pixels take the neighbour's label


def test_a_labelling_too_small_grows_back_and_a_dark_phase_works_too():
    image, truth, area = _scene((5, 8, 11), bright=12000.0, background=24000.0)  # a pore: darker than its host
    labels = np.stack([np.where(ndi.binary_erosion(truth), OBJ, BG).astype(np.uint8)] * 3)
    assert (labels[0] == OBJ).sum() < 0.85 * area
    fixed, info = redraw_partial_volume(image, labels, OBJ)
    assert abs((fixed[1] == OBJ).sum() / area - 1) < 0.03


def test_only_the_given_slices_and_labelled_pixels_change():
    image, truth, _ = _scene((6, 9))
    labels = _halo(truth)
    labels[2] = 0  # an unlabelled slice
    labels[0, :, :4] = 0  # an unlabelled strip
    fixed, info = redraw_partial_volume(image, labels, OBJ, slices=[0])
    assert np.array_equal(fixed[1], labels[1]) and np.array_equal(fixed[2], labels[2])
    assert np.array_equal(fixed[0] == 0, labels[0] == 0)  # no unlabelled pixel gains a label, none loses it
    assert info["before"] == (labels[0] == OBJ).sum() and info["after"] == (fixed[0] == OBJ).sum()


def test_too_few_interior_pixels_leave_the_labelling_alone_and_say_why():
    image, truth, _ = _scene((2,))
    labels = _halo(truth)
    fixed, info = redraw_partial_volume(image, labels, OBJ)
    assert not info["applied"] and "interior pixels" in info["reason"] and np.array_equal(fixed, labels)


def test_bad_shapes_and_slices_are_one_sentence():
    image, truth, _ = _scene((6,))
    with pytest.raises(ReactomoError, match=r"^The scan is \(3, 96, 96\) and its labels \(96, 96\); they must match\.$"):
        redraw_partial_volume(image, truth.astype(np.uint8), OBJ)
    with pytest.raises(ReactomoError, match=r"^Slice 7 is outside the volume's 0 to 2\.$"):
        redraw_partial_volume(image, _halo(truth), OBJ, slices=[7])


def test_the_default_redraws_the_pores_first_then_the_inert_phases_and_names_and_roles_resolve():
    """The default order (pores, then inert phases: a grain beside a pore is redrawn against the pore's final edge),
    phase names in the order given without repeats, the role words, and one sentence for an unknown name."""
    assert default_codes(DEFAULT_PHASES) == [3, 4] == resolve_codes(DEFAULT_PHASES, None)
    assert resolve_codes(DEFAULT_PHASES, ()) == []
    assert resolve_codes(DEFAULT_PHASES, ("inert",)) == [4]
    assert resolve_codes(DEFAULT_PHASES, (" Celestite", "pore", "celestite")) == [4, 3]
    other = PhaseTable((Phase(1, "KBr", role="reactant"), Phase(2, "KCl", role="product"), Phase(5, "void", role="pore"),
                        Phase(7, "spinel", role="inert"), Phase(8, "rutile", role="inert")))
    assert default_codes(other) == [5, 7, 8] and resolve_codes(other, ("pore",)) == [5]  # role words read by role
    assert resolve_codes(other, ("rutile", "inert")) == [8, 7]
    with pytest.raises(ReactomoError, match=r"No phase is called 'celestine'; the phase table has .*pore or inert"):
        resolve_codes(DEFAULT_PHASES, ("celestine",))
    bare = PhaseTable((Phase(1, "KBr", role="reactant"), Phase(2, "KCl", role="product")))
    assert default_codes(bare) == []
    with pytest.raises(ReactomoError, match=r"has no phase of role inert, so there is nothing to redraw"):
        resolve_codes(bare, ("inert",))
    with pytest.raises(ReactomoError, match=r"'auto' stands alone"):
        resolve_codes(DEFAULT_PHASES, ("auto", "celestite"))


GYP, BAS, PORE = 1, 2, 3


def _ring(obj, px=1):
    return ndi.binary_dilation(obj, iterations=px) & ~obj


@pytest.mark.parametrize("bright", [40000.0, 12000.0])  # a bright grain (celestite) and a dark one (a pore)
def test_the_band_reads_the_phase_around_from_beyond_it(bright):
    """A grain's blurred rim looks like another matrix phase (celestite's rim in gypsum like the brighter bassanite, a
    pore's rim in bassanite like the darker gypsum): with ``matrix`` the rim takes the phase found beyond the band,
    a real lath that touches the grain and runs on past the band keeps its label, other phases are never touched,
    and without ``matrix`` the classifier's rim is kept."""
    image, truth, _ = _scene((6, 9), bright=bright)
    host, rim_as = (GYP, BAS) if bright > 24000 else (BAS, GYP)
    lab = np.where(truth, OBJ, host).astype(np.uint8)
    rim = _ring(truth)
    lab[rim] = rim_as  # the classifier's halo, read as the other matrix phase
    lath = np.zeros_like(truth)
    lath[16:20, 26:48] = True  # 4 px wide, from the first disk (centre 20, 20; radius 6) out beyond the band
    lath &= ~truth
    lab[lath] = rim_as
    lab[70:74, 70:74] = 5  # a phase outside the matrix, inside no band: untouched
    far_pore = np.zeros_like(truth)
    far_pore[47:49, 30:32] = True  # beside the second disk (centre 48, 20; radius 9), inside its band
    lab[far_pore] = 5
    labels = np.stack([lab] * 3)
    kept, info_kept = redraw_partial_volume(image, labels, OBJ)
    fixed, info = redraw_partial_volume(image, labels, OBJ, matrix=(GYP, BAS))
    assert info_kept["matrix"] == [] and info_kept["matrix_relabelled"] == 0
    assert info["matrix"] == [GYP, BAS] and info["matrix_relabelled"] > 0
    # the grain itself is redrawn the same way either way
    assert np.array_equal(fixed == OBJ, kept == OBJ)
    for z in range(3):
        halo = rim & ~lath & (kept[z] == rim_as)
        assert halo.sum() > 20 and np.mean(kept[z][halo] == rim_as) == 1.0  # the halo stays without matrix
        assert np.mean(fixed[z][halo] == host) > 0.95  # ... and is read from beyond it with matrix
        assert np.mean(fixed[z][lath] == rim_as) > 0.9  # the real lath keeps its phase
        assert np.array_equal(fixed[z] == 5, kept[z] == 5)  # phases outside the matrix are never touched
    changed = (fixed != kept)
    assert info["matrix_relabelled"] == int(changed.sum())
    assert np.all(np.isin(fixed[changed], (GYP, BAS))) and np.all(np.isin(kept[changed], (GYP, BAS)))


def test_the_matrix_is_the_reaction_s_reactant_and_products_and_a_bad_mode_is_one_sentence():
    from core.labelling.partial_volume import EDGE_BACKGROUND, EDGE_BACKGROUNDS, matrix_codes

    assert EDGE_BACKGROUND in EDGE_BACKGROUNDS
    assert matrix_codes(DEFAULT_PHASES, "beyond") == [GYP, BAS] and matrix_codes(DEFAULT_PHASES, "nearest") == []
    assert matrix_codes(DEFAULT_PHASES) == matrix_codes(DEFAULT_PHASES, EDGE_BACKGROUND)
    other = PhaseTable((Phase(1, "KBr", role="reactant"), Phase(2, "KCl", role="product"), Phase(6, "KI", role="product"),
                        Phase(5, "void", role="pore")))
    assert matrix_codes(other, "beyond") == [1, 2, 6]
    with pytest.raises(ReactomoError, match=r"^The edge background must be one of beyond, nearest; got 'sideways'\.$"):
        matrix_codes(DEFAULT_PHASES, "sideways")


def test_the_band_in_3d_reaches_the_slices_above_and_below_a_grain():
    """A voxel just above a grain's top is a blend too, yet in no slice's band: the 3D band re-reads it from beyond,
    keeps a lath that runs on past the band, and never touches unlabelled voxels or phases outside the matrix."""
    from core.labelling.partial_volume import matrix_from_beyond_3d

    zz, yy, xx = np.mgrid[:16, :40, :40]
    grain = (zz - 8) ** 2 + (yy - 20) ** 2 + (xx - 20) ** 2 <= 16  # radius 4
    lab = np.full(grain.shape, GYP, np.uint8)
    lab[grain] = OBJ
    cap = ndi.binary_dilation(grain, ndi.generate_binary_structure(3, 1)) & ~grain
    lab[cap] = BAS  # the 3D halo read as the product
    lath = (np.abs(yy - 20) <= 1) & (xx >= 24) & (zz >= 7) & (zz <= 9) & ~grain
    lab[lath] = BAS  # a real lath touching the grain and running on to the edge of the block
    lab[0, :4, :4] = 0  # unlabelled
    lab[15, 30:34, 30:34] = PORE  # another phase, far away
    out, changed = matrix_from_beyond_3d(lab, [OBJ], [GYP, BAS])
    halo = cap & ~lath
    top = np.zeros_like(grain)
    top[3] = cap[3]  # the slice above the grain's top: in no slice's band, since the grain is absent there
    assert top.any() and not grain[3].any() and np.all(out[top] == GYP)
    assert np.mean(out[halo] == GYP) > 0.95 and np.mean(out[lath] == BAS) > 0.9
    assert np.all(out[0, :4, :4] == 0) and np.all(out[15, 30:34, 30:34] == PORE) and np.all(out[grain] == OBJ)
    assert changed == int((out != lab).sum()) > 0
    none, zero = matrix_from_beyond_3d(lab, [OBJ], [])
    assert zero == 0 and np.array_equal(none, lab)
    with pytest.raises(ReactomoError, match=r"^The labels must be a \(z, y, x\) block; got 2 dimensions\.$"):
        matrix_from_beyond_3d(lab[0], [OBJ], [GYP, BAS])
