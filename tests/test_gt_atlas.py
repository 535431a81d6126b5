"""Brain-tissue labels by ANTs SyN registration of an atlas; the deterministic phantom atlas (group 557)."""

import numpy as np
import pytest

from cadsflow.gt.atlas import (
    AtlasError,
    RegistrationSettings,
    known_deformation,
    make_phantom_atlas,
    register_atlas_labels,
)
from cadsflow.labels import load_label_space

SHAPE, SPACING = (48, 48, 48), 4.0  # a head-sized field of view (192 mm) on a small grid


def _mean_dice(a, b, ids):
    scores = []
    for c in ids:
        x, y = a == c, b == c
        scores.append(2.0 * (x & y).sum() / (x.sum() + y.sum()))
    return float(np.mean(scores))


@pytest.fixture(scope="module")
def registered():
    atlas = make_phantom_atlas(SHAPE, SPACING, seed=0)
    target = make_phantom_atlas(SHAPE, SPACING, warp=known_deformation(), seed=1)  # truth: target.labels
    warped = register_atlas_labels(target.image, target.affine, atlas, RegistrationSettings(random_seed=7))
    return atlas, target, warped


def test_phantom_atlas_labels_are_exactly_the_nine_brain_group_structures():
    ids = load_label_space().group_label_map(557)
    atlas = make_phantom_atlas(SHAPE, SPACING)
    assert set(np.unique(atlas.labels)) == {0, *ids.values()}


def test_phantom_atlas_is_deterministic():
    a, b = make_phantom_atlas(SHAPE, SPACING, seed=3), make_phantom_atlas(SHAPE, SPACING, seed=3)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)


def test_registration_raises_dice_with_the_known_deformation_well_above_unregistered(registered):
    atlas, target, warped = registered
    ids = sorted(load_label_space().group_label_map(557).values())
    before = _mean_dice(atlas.labels, target.labels, ids)  # atlas labels placed unregistered on the target grid
    after = _mean_dice(warped, target.labels, ids)
    assert after > before + 0.2 and after > 0.75


def test_warped_labels_hold_exactly_the_atlas_label_values(registered):
    atlas, _, warped = registered
    assert set(np.unique(warped)) == set(np.unique(atlas.labels))  # nothing blended in, no structure lost


def test_a_blending_interpolator_for_labels_is_refused():
    with pytest.raises(AtlasError, match="linear"):
        RegistrationSettings(interpolator="linear")


def test_a_registration_that_cannot_match_the_ct_is_retried_then_refused_naming_the_volume():
    """A CT unlike any head (noise): the warped atlas cannot correlate >= 0.9 with it, so after the second seed the
    volume is refused with the correlation, never given brain labels."""
    atlas = make_phantom_atlas((24, 24, 24), 8.0, seed=0)
    noise = np.random.default_rng(3).normal(0.0, 300.0, (24, 24, 24)).astype(np.float32)
    with pytest.raises(AtlasError, match=r"vol_x: atlas registration did not converge \(warped atlas vs\. CT "
                                         r"correlation -?0\.\d+ < 0\.9 after 2 attempts\)"):
        register_atlas_labels(noise, atlas.affine, atlas, RegistrationSettings(random_seed=7), where="vol_x")
